/* fdpass.c - descriptors along a stream socket, and memfd payloads
 * (fdpass.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fdpass.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "taskhost_host.h"

#define RECV_FDS 8 /* descriptors one read may bring */

int fdpass_push(struct fdpass_queue *q, int fd, int own, uint64_t lo,
                uint64_t hi)
{
    if (q->n - q->head >= FDPASS_QUEUE_MAX)
        return TH_EBUSY;
    if (q->head > 0 && q->n == q->cap) {
        memmove(q->v, q->v + q->head, (q->n - q->head) * sizeof *q->v);
        q->n -= q->head;
        q->head = 0;
    }
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 8;
        struct fdpass_item *v = realloc(q->v, cap * sizeof *v);
        if (v == NULL)
            return TH_ENOMEM;
        q->v = v;
        q->cap = cap;
    }
    q->v[q->n++] = (struct fdpass_item){fd, own, lo, hi};
    return 0;
}

int fdpass_unpush(struct fdpass_queue *q)
{
    if (q->n == q->head)
        return -1;
    return q->v[--q->n].fd;
}

size_t fdpass_len(const struct fdpass_queue *q)
{
    return q->n - q->head;
}

/* Removes the oldest item and returns its descriptor. */
static int pop(struct fdpass_queue *q)
{
    int fd = q->v[q->head++].fd;

    if (q->head == q->n)
        q->head = q->n = 0;
    return fd;
}

int fdpass_take(struct fdpass_queue *q, uint64_t pos)
{
    const struct fdpass_item *it;

    if (q->n == q->head)
        return -1;
    it = &q->v[q->head];
    if (pos < it->lo || pos >= it->hi)
        return -1;
    return pop(q);
}

int fdpass_stray(const struct fdpass_queue *q, uint64_t pos)
{
    return q->n > q->head && q->v[q->head].hi <= pos;
}

void fdpass_clear(struct fdpass_queue *q)
{
    for (size_t i = q->head; i < q->n; i++)
        if (q->v[i].own)
            close(q->v[i].fd);
    free(q->v);
    memset(q, 0, sizeof *q);
}

/* Queues the descriptors of one SCM_RIGHTS message; returns -1 when some
 * had to be closed for want of room. */
static int collect(struct cmsghdr *cm, struct fdpass_queue *q, uint64_t lo,
                   uint64_t hi)
{
    size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int lost = 0;

    for (size_t i = 0; i < n; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(cm) + i * sizeof fd, sizeof fd);
        if (lost || fdpass_push(q, fd, 1, lo, hi) < 0) {
            close(fd);
            lost = 1;
        }
    }
    return lost ? -1 : 0;
}

ssize_t fdpass_recv(int sock, void *buf, size_t len, struct fdpass_queue *q,
                    uint64_t pos)
{
    return fdpass_recv_flags(sock, buf, len, q, pos, MSG_DONTWAIT);
}

ssize_t fdpass_recv_flags(int sock, void *buf, size_t len,
                          struct fdpass_queue *q, uint64_t pos, int flags)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(RECV_FDS * sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = ctl.buf,
                        .msg_controllen = sizeof ctl.buf};
    int lost = 0;
    ssize_t n;

    n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
    if (n <= 0)
        return n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm;
         cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
            collect(cm, q, pos, pos + (uint64_t)n) < 0)
            lost = 1;
    }
    if (lost || (mh.msg_flags & MSG_CTRUNC)) {
        errno = EPROTO;
        return -1;
    }
    return n;
}

/* One send() or, with fd >= 0, one sendmsg() carrying fd. */
static ssize_t send_one(int sock, const void *buf, size_t len, int fd)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *cm;

    if (fd < 0)
        return send(sock, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    memset(&ctl, 0, sizeof ctl);
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof ctl.buf;
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    return sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

ssize_t fdpass_send(int sock, const void *buf, size_t len,
                    struct fdpass_queue *q, uint64_t pos)
{
    const uint8_t *p = buf;
    size_t done = 0;

    while (done < len) {
        uint64_t at = pos + done;
        size_t chunk = len - done, i = q->head;
        int fd = -1;
        ssize_t n;

        if (i < q->n && q->v[i].lo <= at) { /* its frame starts here */
            fd = q->v[i].fd;
            i++;
        }
        if (i < q->n && q->v[i].lo - at < chunk) /* stop at the next one */
            chunk = (size_t)(q->v[i].lo - at);
        n = send_one(sock, p + done, chunk, fd);
        if (n == -1) {
            if (errno == EAGAIN || errno == EINTR || done > 0)
                return (ssize_t)done;
            return -1;
        }
        if (fd >= 0) {
            int own = q->v[q->head].own;
            pop(q);
            if (own)
                close(fd);
        }
        done += (size_t)n;
        if ((size_t)n < chunk)
            break; /* the socket is full */
    }
    return (ssize_t)done;
}

int fdpass_fill(int fd, const void *data, size_t len)
{
    const char *p = data;
    struct stat st;
    size_t done = 0;

    if (fstat(fd, &st) == -1)
        return -1;
    if ((uint64_t)st.st_size < len && ftruncate(fd, (off_t)len) == -1)
        return -1;
    while (done < len) {
        ssize_t n = pwrite(fd, p + done, len - done, (off_t)done);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

int fdpass_memfd(const void *data, size_t len)
{
    int fd = memfd_create("taskhost-payload", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int e;

    if (fd == -1)
        return -1;
    if (fdpass_fill(fd, data, len) == 0 &&
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0)
        return fd;
    e = errno;
    close(fd);
    errno = e;
    return -1;
}

const char *fdpass_check(int fd, uint64_t len, char *msg, size_t msglen)
{
    struct stat st;
    int seals;

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
        (seals = fcntl(fd, F_GET_SEALS)) == -1) {
        snprintf(msg, msglen, "is not a memfd");
        return msg;
    }
    if (!(seals & F_SEAL_SHRINK)) {
        snprintf(msg, msglen, "is not sealed against shrinking");
        return msg;
    }
    if ((uint64_t)st.st_size < len) {
        snprintf(msg, msglen, "holds %lld bytes, fewer than the %llu announced",
                 (long long)st.st_size, (unsigned long long)len);
        return msg;
    }
    return NULL;
}

/* ---- the mapping cache ---- */

static void map_release(struct fdpass_map *e)
{
    if (e->map)
        munmap(e->map, e->size);
    if (e->fd != -1)
        close(e->fd);
    e->map = NULL;
    e->size = 0;
    e->fd = -1;
}

/* Maps the first `size` bytes of e->fd (what the frame announced, never
 * more: a client's memfd may be far larger, or sparse), read-write if the
 * descriptor allows. Pages are not populated: they are the client's, and
 * come in as the input is read. */
static int map_file(struct fdpass_map *e, size_t size)
{
    void *p = MAP_FAILED;

    if (size == 0)
        return 0;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, e->fd, 0);
    e->writable = p != MAP_FAILED;
    if (p == MAP_FAILED)
        p = mmap(NULL, size, PROT_READ, MAP_SHARED, e->fd, 0);
    if (p == MAP_FAILED)
        return -1;
    e->map = p;
    e->size = size;
    return 0;
}

/* Releases one idle cached entry; returns it, or NULL when none is. */
static struct fdpass_map *map_evict(struct fdpass_maps *m)
{
    for (size_t i = 0; i < m->n; i++) {
        struct fdpass_map *e = &m->v[i];
        if (e->fd != -1 && !e->busy) {
            m->bytes -= e->size;
            map_release(e);
            return e;
        }
    }
    return NULL;
}

/* Cached entries that hold a memfd. */
static size_t map_alive(const struct fdpass_maps *m)
{
    size_t n = 0;

    for (size_t i = 0; i < m->n; i++)
        n += m->v[i].fd != -1;
    return n;
}

/* A free entry for `size` more bytes, evicting idle ones; NULL if none. */
static struct fdpass_map *map_slot(struct fdpass_maps *m, size_t size)
{
    struct fdpass_map *free_e = NULL;

    for (size_t i = 0; i < FDPASS_MAPS; i++) {
        struct fdpass_map *e = &m->v[i];
        if (i >= m->n) {
            e->fd = -1;
            m->n = i + 1;
        }
        if (e->fd != -1 && !e->busy && m->bytes + size > FDPASS_MAPS_BYTES) {
            m->bytes -= e->size;
            map_release(e);
        }
        if (e->fd == -1 && free_e == NULL)
            free_e = e;
    }
    if (free_e != NULL && map_alive(m) + m->held >= FDPASS_MAPS)
        free_e = map_evict(m); /* the slots hold the rest */
    if (free_e == NULL) { /* every entry busy: evict nothing */
        return NULL;
    }
    if (m->bytes + size > FDPASS_MAPS_BYTES)
        return NULL;
    return free_e;
}

int fdpass_maps_hold(struct fdpass_maps *m)
{
    if (map_alive(m) + m->held >= FDPASS_MAPS && map_evict(m) == NULL)
        return -1;
    m->held++;
    return 0;
}

struct fdpass_map *fdpass_map_get(struct fdpass_maps *m, int fd, uint64_t len,
                                  char *msg, size_t msglen)
{
    struct fdpass_map *e;
    struct stat st;

    if (fstat(fd, &st) == -1) {
        snprintf(msg, msglen, "is not a memfd");
        return NULL;
    }
    for (size_t i = 0; i < m->n; i++) {
        e = &m->v[i];
        if (e->fd == -1 || e->dev != st.st_dev || e->ino != st.st_ino)
            continue;
        if (e->size >= len) {
            close(fd); /* the same file, mapped already */
            e->busy++;
            return e;
        }
        if (!e->busy) { /* it grew: map it again below */
            m->bytes -= e->size;
            map_release(e);
        }
    }
    if (fdpass_check(fd, len, msg, msglen) != NULL)
        return NULL;
    e = map_slot(m, (size_t)len);
    if (e == NULL && (e = calloc(1, sizeof *e)) != NULL)
        e->temp = 1;
    if (e == NULL) {
        snprintf(msg, msglen, "cannot be mapped: out of memory");
        return NULL;
    }
    e->fd = fd;
    e->moved = NULL;
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    if (map_file(e, (size_t)len) < 0) {
        snprintf(msg, msglen, "cannot be mapped: %s", strerror(errno));
        e->fd = -1;
        if (e->temp)
            free(e);
        return NULL;
    }
    if (!e->temp)
        m->bytes += e->size;
    e->busy = 1;
    return e;
}

struct fdpass_map *fdpass_map_new(int fd, uint64_t len, uint64_t cap,
                                  char *msg, size_t msglen)
{
    struct fdpass_map *e;
    struct stat st;
    uint64_t size;

    if (fdpass_check(fd, len, msg, msglen) != NULL)
        return NULL;
    if (fstat(fd, &st) == -1) {
        snprintf(msg, msglen, "is not a memfd");
        return NULL;
    }
    size = (uint64_t)st.st_size < cap ? (uint64_t)st.st_size : cap;
    size = size < len ? len : size;
    if ((e = calloc(1, sizeof *e)) == NULL) {
        snprintf(msg, msglen, "cannot be mapped: out of memory");
        return NULL;
    }
    e->fd = fd;
    e->temp = 1;
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    if (map_file(e, (size_t)size) < 0) {
        snprintf(msg, msglen, "cannot be mapped: %s", strerror(errno));
        free(e);
        return NULL;
    }
    e->busy = 1;
    return e;
}

int fdpass_map_write(struct fdpass_map *e, const void *data, size_t len)
{
    if (!e->writable || len > e->size)
        return fdpass_fill(e->fd, data, len); /* the mapping sees it too */
    memcpy(e->map, data, len);
    return 0;
}

void fdpass_map_put(struct fdpass_maps *m, struct fdpass_map *e)
{
    if (--e->busy > 0)
        return;
    if (e->temp) {
        map_release(e);
        free(e);
        return;
    }
    (void)m;
}

struct fdpass_map *fdpass_map_detach(struct fdpass_maps *m,
                                     struct fdpass_map *e)
{
    if (e->temp)
        return e;
    if (e->fd == -1)
        return e->moved;
    struct fdpass_map *copy = malloc(sizeof *copy);
    if (copy == NULL)
        return NULL;
    *copy = *e;
    copy->temp = 1;
    copy->moved = NULL;
    m->bytes -= e->size;
    e->fd = -1;
    e->map = NULL;
    e->size = 0;
    e->busy = 0;
    e->moved = copy;
    return copy;
}

void fdpass_maps_clear(struct fdpass_maps *m)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i].fd != -1)
            map_release(&m->v[i]);
    m->n = 0;
    m->bytes = 0;
    m->held = 0;
}
