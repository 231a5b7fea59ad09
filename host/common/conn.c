/* conn.c - one end of a client connection (common layer): buffering,
 * framing, stream offsets and descriptor queues (conn.h). */
#include <errno.h>
#include <string.h>

#include "conn.h"

void conn_init(struct conn *c, int fd)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
}

ssize_t conn_read(struct conn *c)
{
    if (buf_reserve(&c->in, CONN_READ_CHUNK) < 0) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t n = fdpass_recv(c->fd, c->in.data + c->in.len,
                            c->in.cap - c->in.len, &c->rfds, c->in_pos);
    if (n > 0) {
        c->in.len += (size_t)n;
        c->in_pos += (uint64_t)n;
    }
    return n;
}

int conn_next(struct conn *c, uint64_t max_body, struct proto_frame *f)
{
    size_t need = 0;
    size_t avail = buf_avail(&c->in);
    long n = proto_decode(buf_head(&c->in), avail, max_body, f, &need);
    if (n == TH_ETOOBIG)
        return CONN_TOOBIG;
    if (n < 0)
        return CONN_VERSION;
    if (n == 0) {
        /* Room for the rest of the frame comes as its bytes do, at most
         * CONN_READ_CHUNK ahead (conn_read()): a peer that announces a
         * large frame and stalls makes this end hold only what it sent. */
        (void)need;
        return CONN_MORE;
    }
    uint64_t pos = c->in_pos - avail; /* stream offset of the head */
    if (fdpass_stray(&c->rfds, pos))
        return CONN_STRAY;
    c->frame_pos = pos;
    /* Consuming moves no byte: f->body stays valid until a reserve. */
    buf_consume(&c->in, (size_t)n);
    return CONN_FRAME;
}

int conn_take_fd(struct conn *c)
{
    return fdpass_take(&c->rfds, c->frame_pos);
}

int conn_push_fd(struct conn *c, int fd, int own)
{
    uint64_t at = c->out_pos + buf_avail(&c->out);
    return fdpass_push(&c->sfds, fd, own, at, 0) < 0 ? TH_EFULL : 0;
}

int conn_unpush_fd(struct conn *c)
{
    return fdpass_unpush(&c->sfds);
}

ssize_t conn_send(struct conn *c)
{
    size_t avail = buf_avail(&c->out);
    if (avail == 0)
        return 0;
    ssize_t n = fdpass_send(c->fd, buf_head(&c->out), avail, &c->sfds,
                            c->out_pos);
    if (n > 0) {
        buf_consume(&c->out, (size_t)n);
        c->out_pos += (uint64_t)n;
    }
    return n;
}

void conn_trim(struct conn *c, size_t keep)
{
    if (buf_avail(&c->in) == 0 && c->in.cap > keep)
        buf_free(&c->in);
    if (buf_avail(&c->out) == 0 && c->out.cap > keep)
        buf_free(&c->out);
}

void conn_clear(struct conn *c)
{
    buf_free(&c->in);
    buf_free(&c->out);
    fdpass_clear(&c->rfds);
    fdpass_clear(&c->sfds);
}
