/* buf.c - a growable byte buffer with a read offset (common layer). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "taskhost.h"

int buf_reserve(struct buf *b, size_t extra)
{
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= extra)
        return 0;
    size_t avail = b->len - b->off;
    /* Slide back only when what moves is no more than what was consumed:
     * a large buffer sent in small pieces is not moved again and again,
     * and appending costs amortized O(1) per byte however it is split. */
    if (b->off > 0 && b->off >= avail && b->cap - avail >= extra) {
        memmove(b->data, b->data + b->off, avail);
        b->off = 0;
        b->len = avail;
        return 0;
    }
    size_t cap = b->cap ? 2 * b->cap : 4096;
    while (cap - avail < extra) {
        if (cap > SIZE_MAX / 2)
            return TH_ENOMEM;
        cap *= 2;
    }
    char *d = malloc(cap);
    if (d == NULL)
        return TH_ENOMEM;
    if (avail > 0)
        memcpy(d, b->data + b->off, avail);
    free(b->data);
    b->data = d;
    b->off = 0;
    b->len = avail;
    b->cap = cap;
    return 0;
}

void *buf_extend(struct buf *b, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return NULL;
    void *p = b->data + b->len;
    b->len += n;
    return p;
}

int buf_append(struct buf *b, const void *data, size_t n)
{
    void *p = buf_extend(b, n);
    if (p == NULL)
        return TH_ENOMEM;
    if (n > 0)
        memcpy(p, data, n);
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

ssize_t buf_read(struct buf *b, int fd, size_t room)
{
    if (buf_reserve(b, room) < 0) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t n;
    do {
        n = read(fd, b->data + b->len, b->cap - b->len);
    } while (n == -1 && errno == EINTR);
    if (n > 0)
        b->len += (size_t)n;
    return n;
}

int buf_flush(struct buf *b, int fd)
{
    while (buf_avail(b) > 0) {
        ssize_t n = send(fd, buf_head(b), buf_avail(b), MSG_NOSIGNAL);
        if (n == -1 && errno == ENOTSOCK)
            n = write(fd, buf_head(b), buf_avail(b));
        if (n == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            return -1;
        }
        buf_consume(b, (size_t)n);
    }
    return 0;
}

void buf_truncate(struct buf *b, size_t avail)
{
    if (avail < buf_avail(b))
        b->len = b->off + avail;
    if (b->off == b->len)
        b->off = b->len = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}
