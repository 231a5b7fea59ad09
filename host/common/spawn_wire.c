/* spawn_wire.c - messages between the host and a pool's spawner. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "spawn_wire.h"

void spw_begin(struct buf *b, uint32_t type)
{
    b->len = 0;
    b->off = 0;
    buf_append(b, &type, sizeof type);
}

int spw_put(struct buf *b, const void *data, size_t len)
{
    return buf_append(b, data, len);
}

int spw_put_str(struct buf *b, const char *s)
{
    uint32_t n = s ? (uint32_t)strlen(s) : 0;
    if (buf_append(b, &n, sizeof n) < 0)
        return -1;
    return buf_append(b, s, n);
}

int spw_put_i64(struct buf *b, int64_t v)
{
    return buf_append(b, &v, sizeof v);
}

int spw_send(int sock, const struct buf *b, const int *fds, int nfds)
{
    if (b->len > SPW_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    struct iovec iov = {.iov_base = b->data, .iov_len = b->len};
    union {
        char buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&u, 0, sizeof u);
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &m, MSG_NOSIGNAL);
    } while (n == -1 && errno == EINTR);
    return n == (ssize_t)b->len ? 0 : -1;
}

/* Keeps the descriptors of a received message that fit in fds. */
static void take_fds(struct msghdr *m, int *fds, int *nfds)
{
    int max = nfds ? *nfds : 0, got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (got < max)
                fds[got++] = fd;
            else
                close(fd);
        }
    }
    if (nfds)
        *nfds = got;
}

int spw_recv(int sock, struct buf *b, int timeout_ms, int *fds, int *nfds)
{
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    int r;
    do {
        r = poll(&pfd, 1, timeout_ms);
    } while (r == -1 && errno == EINTR);
    if (r == 0)
        errno = ETIMEDOUT;
    if (r <= 0)
        return -1;
    b->len = 0;
    b->off = 0;
    if (buf_reserve(b, SPW_MAX) < 0)
        return -1;
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = b->data, .iov_len = SPW_MAX};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    ssize_t n;
    do {
        n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    } while (n == -1 && errno == EINTR);
    take_fds(&m, fds, nfds);
    if (n == 0)
        return 0;
    if (n < 0)
        return -1;
    if ((m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n < 4) {
        errno = EMSGSIZE;
        return -1;
    }
    b->len = (size_t)n;
    uint32_t type;
    memcpy(&type, b->data, sizeof type);
    return (int)type;
}

void spw_reader_init(struct spw_reader *r, const struct buf *b)
{
    r->p = b->data + sizeof(uint32_t);
    r->end = b->data + b->len;
    r->bad = b->len < sizeof(uint32_t);
}

void spw_get(struct spw_reader *r, void *out, size_t len)
{
    if (r->bad || (size_t)(r->end - r->p) < len) {
        r->bad = 1;
        memset(out, 0, len);
        return;
    }
    memcpy(out, r->p, len);
    r->p += len;
}

int64_t spw_get_i64(struct spw_reader *r)
{
    int64_t v;
    spw_get(r, &v, sizeof v);
    return v;
}

char *spw_get_str(struct spw_reader *r)
{
    uint32_t n;
    spw_get(r, &n, sizeof n);
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s == NULL) {
        r->bad = 1;
        return NULL;
    }
    memcpy(s, r->p, n);
    s[n] = '\0';
    r->p += n;
    return s;
}
