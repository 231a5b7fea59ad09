/* client.c - the client library of taskhostd (client layer;
 * taskhost_client.h).
 *
 * Requests are encoded into one output buffer and written when the loop
 * runs; answers are read in large chunks and decoded in place. Waiting
 * requests are found by tag in the table of pending.h. Nothing here
 * allocates per task once the buffers and that table have grown.
 *
 * Inputs of FDPASS_MIN bytes and more go in memfds once a ping showed
 * that the daemon takes them (fdpass.h): each connection keeps a few
 * memfds mapped for good, copies an input into one and sends its
 * descriptor with the frame, into a slot of the connection when the
 * daemon takes slots: later tasks on the same memfd name its slot alone,
 * so that they cost no descriptor passing (which ends the daemon's reads
 * at each frame that carries one) and no check of the file; the worker
 * reads the input in place and writes its output into the same memfd,
 * after the input, where the callback reads it. A memfd returns to the pool when its task's answer
 * was handed out, so its pages are faulted in once; it is reused for
 * tasks of the same pool only (a worker may keep a memfd it was given
 * mapped), and not after an answer the worker did not give (a task that
 * timed out or was cancelled: its worker may still be writing).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "taskhost_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "fdpass.h"
#include "client_wire.h"
#include "pending.h"

#define MFD_MAX 64            /* input memfds of one connection */
#define MFD_KEEP (64u << 20)  /* bytes of them kept for reuse */

_Static_assert(MFD_MAX <= PROTO_SLOTS && PROTO_SLOTS <= 64,
               "every input memfd has a slot number, a bit of slots_used");

/* What the daemon said about payloads in memfds. */
enum { FD_UNKNOWN, FD_PROBING, FD_YES, FD_NO };

/* An input memfd, mapped read-write for as long as it lives. */
struct mfd {
    int fd;
    uint8_t *map;
    size_t size;
    int slot;         /* its slot on the connection (IN_SLOT), or -1 */
    int passed;       /* the daemon holds it in that slot */
    char *pool;       /* the pool of its tasks, malloc'd */
    struct mfd *next; /* on the free list */
};

/* A control request waiting for its REPLY. */
struct ctl_wait {
    int done;
    int code;
    char *text; /* malloc'd, NUL-terminated */
    size_t len;
};

struct th_client {
    int dead;
    int dispatching;
    uint64_t next_tag;
    struct conn io; /* the socket, its buffers and descriptor queues */
    struct pend_table pend; /* requests waiting for their answer */
    size_t ntasks;          /* of which tasks */
    th_accept_fn accept;
    void *accept_arg;
    th_progress_fn progress;
    void *progress_arg;
    int fd_mode;                    /* FD_* */
    int fd_at;                      /* the daemon takes OUT_AT */
    int fd_slot;                    /* ... and IN_SLOT */
    uint64_t slots_used;            /* slot numbers of the memfds */
    int broken;                     /* an answer broke the protocol */
    double busy_poll;               /* seconds; 0: sleep at once */
    struct mfd *mfds[MFD_MAX];      /* every input memfd */
    size_t nmfd;
    size_t mfd_bytes;               /* their sizes */
    struct mfd *mfd_free;
    char err[256];
};

#ifndef TH_DEFAULT_SOCKET
#define TH_DEFAULT_SOCKET "/run/taskhost/taskhost.sock"
#endif

/* $TASKHOST_SOCKET, else the socket of the installed config (configure's
 * --with-socket). */
const char *th_client_default_socket(void)
{
    const char *s = getenv("TASKHOST_SOCKET");

    return s && *s ? s : TH_DEFAULT_SOCKET;
}

/* ---- input memfds ---- */

/* Maps m at `size` bytes at least (rounded up), creating the memfd first
 * and growing it when `grow`, else failing when it is shorter (an output
 * the daemon wrote into it cannot be). Returns 0 or -1. */
static int mfd_map(th_client *c, struct mfd *m, size_t size, int grow)
{
    struct stat st;
    void *p;

    if (m->fd == -1) {
        m->fd = memfd_create("taskhost-input", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (m->fd == -1 || fcntl(m->fd, F_ADD_SEALS, F_SEAL_SHRINK) == -1)
            return -1;
    }
    if (fstat(m->fd, &st) == -1)
        return -1;
    if ((size_t)st.st_size < size) {
        size = (size + FDPASS_MIN - 1) / FDPASS_MIN * FDPASS_MIN;
        if (!grow || ftruncate(m->fd, (off_t)size) == -1)
            return -1;
    } else {
        size = (size_t)st.st_size;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
             m->fd, 0);
    if (p == MAP_FAILED)
        return -1;
    if (m->map)
        munmap(m->map, m->size);
    c->mfd_bytes += size - m->size;
    m->map = p;
    m->size = size;
    return 0;
}

static void mfd_destroy(th_client *c, struct mfd *m)
{
    for (size_t i = 0; i < c->nmfd; i++) {
        if (c->mfds[i] == m) {
            c->mfds[i] = c->mfds[--c->nmfd];
            break;
        }
    }
    c->mfd_bytes -= m->size;
    if (m->slot >= 0)
        c->slots_used &= ~(UINT64_C(1) << m->slot);
    if (m->map)
        munmap(m->map, m->size);
    if (m->fd != -1)
        close(m->fd);
    free(m->pool);
    free(m);
}

/* Gives m back to the pool, or frees it when the pool holds enough. */
static void mfd_put(th_client *c, struct mfd *m)
{
    if (m == NULL)
        return;
    if (c->mfd_bytes > MFD_KEEP || m->map == NULL) {
        mfd_destroy(c, m);
        return;
    }
    m->next = c->mfd_free;
    c->mfd_free = m;
}

/* Takes a free memfd of `pool` off the free list, or NULL. */
static struct mfd *mfd_take(th_client *c, const char *pool)
{
    for (struct mfd **mp = &c->mfd_free; *mp != NULL; mp = &(*mp)->next) {
        struct mfd *m = *mp;
        if (strcmp(m->pool, pool) == 0) {
            *mp = m->next;
            return m;
        }
    }
    return NULL;
}

/* A mapped memfd of `pool` holding a copy of input[0..len), or NULL: the
 * input then travels in the frame. */
static struct mfd *mfd_get(th_client *c, const char *pool, const void *input,
                           size_t len)
{
    struct mfd *m = mfd_take(c, pool);

    if (m == NULL && c->nmfd == MFD_MAX && c->mfd_free != NULL) {
        m = c->mfd_free; /* another pool's: make room */
        c->mfd_free = m->next;
        mfd_destroy(c, m);
        m = NULL;
    }
    if (m == NULL) {
        if (c->nmfd == MFD_MAX || (m = calloc(1, sizeof *m)) == NULL)
            return NULL;
        m->fd = -1;
        m->slot = -1;
        m->pool = strdup(pool);
        c->mfds[c->nmfd++] = m;
        if (m->pool == NULL) {
            mfd_destroy(c, m);
            return NULL;
        }
    }
    if (m->size < len && mfd_map(c, m, len, 1) < 0) {
        mfd_destroy(c, m);
        return NULL;
    }
    memcpy(m->map, input, len);
    return m;
}

/* ---- connection ---- */

static int set_err(char *err, size_t errlen, int code, const char *fmt,
                   const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
    return code;
}

int th_client_connect(th_client **out, const char *path, char *err,
                      size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    th_client *c;
    int fd, e;

    *out = NULL;
    if (path == NULL)
        path = th_client_default_socket();
    if (strlen(path) >= sizeof sa.sun_path)
        return set_err(err, errlen, TH_EINVAL, "%s: %s", path,
                       "socket path too long");
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return set_err(err, errlen, TH_EIO, "socket: %s%s", strerror(errno),
                       "");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1) {
        e = errno;
        close(fd);
        return set_err(err, errlen,
                       e == ENOENT || e == ECONNREFUSED ? TH_ENOENT
                       : e == EACCES                    ? TH_EPERM
                                                        : TH_EIO,
                       "%s: %s", path, strerror(e));
    }
    c = calloc(1, sizeof *c);
    if (c == NULL || pend_init(&c->pend) < 0) {
        free(c);
        close(fd);
        return set_err(err, errlen, TH_ENOMEM, "%s%s", "out of memory", "");
    }
    conn_init(&c->io, fd);
    c->next_tag = 1;
    *out = c;
    return 0;
}

void th_client_close(th_client *c)
{
    if (c == NULL)
        return;
    close(c->io.fd);
    while (c->nmfd)
        mfd_destroy(c, c->mfds[0]);
    conn_clear(&c->io);
    pend_free(&c->pend);
    free(c);
}

int th_client_fd(const th_client *c)
{
    return c->io.fd;
}

int th_client_want_write(const th_client *c)
{
    return buf_avail(&c->io.out) > 0;
}

size_t th_client_pending(const th_client *c)
{
    return c->ntasks;
}

const char *th_client_error(const th_client *c)
{
    return c->err;
}

/* Answers every waiting request after the connection was lost. */
static void fail_all(th_client *c, const char *why)
{
    th_result r = {
        .size = sizeof r, .state = TH_STATE_CANCELLED, .code = TH_EIO};
    char msg[320];

    c->dead = 1;
    if (c->err[0] == '\0')
        snprintf(c->err, sizeof c->err, "%s", why);
    snprintf(msg, sizeof msg, "connection to taskhostd lost: %s", c->err);
    r.data = msg;
    r.len = strlen(msg);
    fdpass_clear(&c->io.sfds); /* nothing more is sent */
    for (size_t i = 0; i <= c->pend.mask; i++) {
        struct pend p = c->pend.slot[i];
        if (p.tag == 0)
            continue;
        c->pend.slot[i].tag = 0;
        mfd_put(c, p.m);
        if (p.ctl) {
            p.ctl->done = 1;
            p.ctl->code = TH_EIO;
            continue;
        }
        r.id = p.tag;
        if (p.done)
            p.done(&r, p.arg);
    }
    c->pend.used = c->ntasks = 0;
}

/* ---- answers ---- */

/* Points pr->data at an output that came in a memfd: the task's own
 * input memfd m, or fd attached to the frame, mapped into *map. Returns
 * 0, or -1 when the daemon's answer cannot be right. */
static int output_map(th_client *c, struct mfd *m, int fd,
                      struct proto_result *pr, void **map)
{
    char why[96];

    *map = NULL;
    if (pr->flags == PROTO_F_RES_AT) {
        size_t end = (size_t)pr->offset + pr->len;
        if (m == NULL || (end > m->size && mfd_map(c, m, end, 0) < 0))
            return -1;
        pr->data = m->map + pr->offset;
        return 0;
    }
    if (pr->flags == PROTO_F_RES_IN_FD) {
        if (m == NULL || (pr->len > m->size && mfd_map(c, m, pr->len, 0) < 0))
            return -1;
        pr->data = m->map;
        return 0;
    }
    if (fdpass_check(fd, pr->len, why, sizeof why) != NULL)
        return -1;
    if (pr->len == 0)
        return 0;
    *map = mmap(NULL, pr->len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (*map == MAP_FAILED) {
        *map = NULL;
        return -1;
    }
    pr->data = *map;
    return 0;
}

static void on_result(th_client *c, const struct proto_frame *f)
{
    struct proto_result pr;
    struct pend *p, copy;
    th_result r;
    void *map = NULL;
    int fd = -1;

    if (proto_parse_result(f, &pr) < 0) {
        /* Dropping it would leave its task unanswered for ever. */
        c->broken = 1;
        return;
    }
    if (pr.flags == PROTO_F_RES_FD &&
        (fd = conn_take_fd(&c->io)) == -1) {
        c->broken = 1;
        return;
    }
    p = pend_find(&c->pend, f->tag);
    if (p == NULL || p->ctl || p->probe) {
        if (fd != -1)
            close(fd);
        return;
    }
    copy = *p;
    pend_del(&c->pend, p);
    c->ntasks--;
    if (pr.flags && output_map(c, copy.m, fd, &pr, &map) < 0) {
        c->broken = 1;
        pr.state = TH_STATE_CANCELLED; /* as every task of a lost link */
        pr.code = TH_EIO;
        pr.data = "connection to taskhostd lost: bad output memfd";
        pr.len = strlen(pr.data);
    }
    r.size = sizeof r;
    r.id = f->tag;
    r.state = (th_state)pr.state;
    r.code = pr.code;
    r.data = pr.data;
    r.len = pr.len;
    r.wait_time = pr.wait_us / 1e6;
    r.run_time = pr.run_us / 1e6;
    if (copy.done)
        copy.done(&r, copy.arg);
    if (map)
        munmap(map, pr.len);
    if (fd != -1)
        close(fd);
    /* A worker may still write into the memfd of a task it did not
     * answer itself (timed out, cancelled while running, killed). */
    if (copy.m != NULL && r.state != TH_STATE_OK && r.state != TH_STATE_ERROR)
        mfd_destroy(c, copy.m);
    else
        mfd_put(c, copy.m);
}

/* Answers task p `rejected` with the daemon's reason (an oversized or
 * malformed submit, which also costs the connection). */
static void reject_task(th_client *c, struct pend *p,
                        const struct proto_reply *pr)
{
    struct pend copy = *p;
    th_result r = {.size = sizeof r, .id = p->tag, .state = TH_STATE_REJECTED,
                   .code = pr->code, .data = c->err,
                   .len = strlen(c->err)};

    pend_del(&c->pend, p);
    c->ntasks--;
    if (copy.done)
        copy.done(&r, copy.arg);
    mfd_put(c, copy.m);
}

static void on_reply(th_client *c, const struct proto_frame *f)
{
    struct proto_reply pr;
    struct pend *p;
    struct ctl_wait *w;

    if (proto_parse_reply(f, &pr) < 0)
        return;
    if (f->type == PROTO_ERROR || pr.code < 0)
        snprintf(c->err, sizeof c->err, "%.*s", (int)pr.len, pr.text);
    p = pend_find(&c->pend, f->tag);
    if (p == NULL)
        return;
    if (p->probe) {
        c->fd_mode = f->type == PROTO_REPLY && (f->flags & PROTO_F_FD_OK)
                         ? FD_YES
                         : FD_NO;
        c->fd_at = f->type == PROTO_REPLY && (f->flags & PROTO_F_AT_OK);
        c->fd_slot = f->type == PROTO_REPLY && (f->flags & PROTO_F_SLOT_OK);
        pend_del(&c->pend, p);
        return;
    }
    if (p->ctl == NULL) {
        if (f->type == PROTO_ERROR) /* the daemon refused this very task */
            reject_task(c, p, &pr);
        return;
    }
    w = p->ctl;
    pend_del(&c->pend, p);
    w->done = 1;
    w->code = pr.code;
    w->text = malloc(pr.len + 1);
    if (w->text) {
        memcpy(w->text, pr.text, pr.len);
        w->text[pr.len] = '\0';
        w->len = pr.len;
    }
}

static void on_progress(th_client *c, const struct proto_frame *f)
{
    struct proto_progress pr;
    struct pend *p;
    char msg[PROTO_PROGRESS_MSG_MAX + 1];

    if (c->progress == NULL || proto_parse_progress(f, &pr) < 0)
        return;
    p = pend_find(&c->pend, f->tag);
    if (p == NULL || p->ctl || p->probe)
        return;
    memcpy(msg, pr.msg, pr.msg_len);
    msg[pr.msg_len] = '\0';
    c->progress(f->tag, pr.done, pr.total, msg, c->progress_arg);
}

static void on_frame(th_client *c, const struct proto_frame *f)
{
    uint64_t id;

    switch (f->type) {
    case PROTO_RESULT: on_result(c, f); break;
    case PROTO_REPLY:
    case PROTO_ERROR: on_reply(c, f); break;
    case PROTO_PROGRESS: on_progress(c, f); break;
    case PROTO_ACCEPTED:
        if (c->accept && proto_parse_accepted(f, &id) == 0)
            c->accept(f->tag, id, c->accept_arg);
        break;
    default: break;
    }
}

/* Decodes every whole frame read so far. */
static int dispatch(th_client *c)
{
    struct proto_frame f;
    int n;

    c->dispatching = 1;
    while ((n = conn_next(&c->io, UINT32_MAX, &f)) == CONN_FRAME) {
        on_frame(c, &f);
        if (c->broken)
            break;
    }
    c->dispatching = 0;
    if (n == CONN_NOMEM) {
        fail_all(c, "out of memory");
        return TH_EIO;
    }
    if (n < 0 || c->broken) {
        fail_all(c, "malformed answer from the daemon");
        return TH_EIO;
    }
    return 0;
}

/* The daemon closed while we were writing: what it said before (an ERROR
 * frame, answers) may still wait to be read. Take it, then give up. */
static void fail_after_write(th_client *c, int err)
{
    while (conn_read(&c->io) > 0)
        if (dispatch(c) < 0)
            return;
    fail_all(c, strerror(err));
}

static int do_write(th_client *c)
{
    if (conn_send(&c->io) == -1) {
        fail_after_write(c, errno);
        return TH_EIO;
    }
    return 0;
}

static int do_read(th_client *c)
{
    ssize_t n = conn_read(&c->io);

    if (n == -1) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        fail_all(c, errno == EPROTO   ? "descriptors from the daemon lost"
                    : errno == ENOMEM ? "out of memory"
                                      : strerror(errno));
        return TH_EIO;
    }
    if (n == 0) {
        fail_all(c, "closed by the daemon");
        return TH_EIO;
    }
    return dispatch(c);
}

int th_client_set_busy_poll(th_client *c, double seconds)
{
    if (c == NULL || !(seconds >= 0 && seconds <= 0.01))
        return TH_EINVAL;
    c->busy_poll = seconds;
    return 0;
}

static double now(void);

/* poll() for up to timeout_ms (-1: no limit), but first, while requests
 * wait for answers and busy polling is on, without sleeping: yielding the
 * CPU between polls, for up to c->busy_poll. */
static int wait_fd(th_client *c, struct pollfd *p, int timeout_ms)
{
    if (timeout_ms == 0 || c->busy_poll <= 0 || c->pend.used == 0)
        return poll(p, 1, timeout_ms);
    double start = now(), end = start + c->busy_poll, t = start;
    if (timeout_ms > 0 && start + timeout_ms / 1000.0 < end)
        end = start + timeout_ms / 1000.0;
    while (t < end) {
        int rc = poll(p, 1, 0);
        if (rc != 0)
            return rc;
        sched_yield();
        t = now();
    }
    if (timeout_ms > 0) {
        timeout_ms -= (int)((t - start) * 1000.0);
        timeout_ms = timeout_ms < 0 ? 0 : timeout_ms;
    }
    return poll(p, 1, timeout_ms);
}

int th_client_step(th_client *c, int timeout_ms)
{
    struct pollfd p = {.fd = c->io.fd};
    int rc;

    if (c->dispatching)
        return TH_EBUSY;
    if (c->dead)
        return TH_EIO;
    if ((rc = do_write(c)) < 0)
        return rc;
    p.events = POLLIN | (buf_avail(&c->io.out) ? POLLOUT : 0);
    rc = wait_fd(c, &p, timeout_ms);
    if (rc == -1)
        return errno == EINTR ? 0 : TH_EIO;
    if ((p.revents & POLLOUT) && (rc = do_write(c)) < 0)
        return rc;
    if (p.revents & (POLLIN | POLLHUP | POLLERR))
        return do_read(c);
    return 0;
}

/* ---- requests ---- */

static uint32_t to_ms(double seconds)
{
    if (!(seconds > 0))
        return 0;
    if (seconds > UINT32_MAX / 1000.0)
        return UINT32_MAX;
    double ms = seconds * 1000.0;
    return ms < 1 ? 1 : (uint32_t)(ms + 0.5);
}

/* Queues a ping whose reply tells whether the daemon takes memfds. */
static void probe_fds(th_client *c)
{
    uint64_t t = c->next_tag;
    size_t before = buf_avail(&c->io.out);
    struct pend *p;

    if (proto_put_empty(&c->io.out, PROTO_PING, t, 0) < 0)
        return;
    if ((p = pend_add(&c->pend, t)) == NULL) {
        buf_truncate(&c->io.out, before);
        return;
    }
    p->probe = 1;
    c->next_tag++;
    c->fd_mode = FD_PROBING;
}

/* The flags of a submit of len input bytes, and its input memfd (*m, or
 * NULL): large inputs go in one once the daemon is known to take them. */
static uint16_t submit_flags(th_client *c, const char *pool,
                             const void *input, size_t len, struct mfd **m)
{
    uint16_t flags = (c->accept ? PROTO_F_ACK : 0) |
                     (c->progress ? PROTO_F_PROGRESS : 0);

    *m = NULL;
    if (c->fd_mode == FD_UNKNOWN && len >= FDPASS_MIN)
        probe_fds(c);
    if (c->fd_mode != FD_YES)
        return flags;
    flags |= PROTO_F_OUT_FD;
    if (len >= FDPASS_MIN)
        *m = mfd_get(c, pool, input, len);
    return flags;
}

/* How input memfd m of a submit travels: attached (*attach set) the
 * first time, into a slot of the connection when the daemon takes slots;
 * afterwards named by its slot alone (the daemon maps it again when it
 * grew). Returns the flags of that. */
static uint16_t mfd_flags(th_client *c, struct mfd *m, int *attach)
{
    uint16_t at = c->fd_at ? PROTO_F_OUT_AT : 0;

    *attach = 1;
    if (!c->fd_slot)
        return PROTO_F_IN_FD | at;
    if (m->slot < 0) {
        m->slot = __builtin_ctzll(~c->slots_used);
        c->slots_used |= UINT64_C(1) << m->slot;
    }
    if (m->passed) {
        *attach = 0;
        return PROTO_F_IN_SLOT | at;
    }
    return PROTO_F_IN_FD | PROTO_F_IN_SLOT | at;
}

/* Takes back the last frame of the output, begun when `before` bytes were
 * waiting, and its memfd (attached to the frame when `attach`). */
static void take_back(th_client *c, size_t before, struct mfd *m, int attach)
{
    buf_truncate(&c->io.out, before);
    if (m == NULL)
        return;
    if (attach)
        conn_unpush_fd(&c->io);
    mfd_put(c, m);
}

int th_client_submit(th_client *c, const char *pool, const char *task,
                     const void *input, size_t len, const th_submit_opts *opts,
                     th_done_fn done, void *arg, uint64_t *tag)
{
    struct proto_submit s = {.pool = pool, .task = task, .input = input,
                             .input_len = len};
    struct pend *p;
    struct mfd *m;
    size_t before;
    uint16_t flags;
    uint64_t t;
    int rc, attach = 0;

    if (pool == NULL || task == NULL || (input == NULL && len))
        return TH_EINVAL;
    if (c->dead)
        return TH_EIO;
    if (len > UINT32_MAX - 600)
        return TH_ETOOBIG;
    s.pool_len = strlen(pool);
    s.task_len = strlen(task);
    if (opts) {
        s.task_timeout_ms = to_ms(opts->task_timeout);
        s.queue_timeout_ms = to_ms(opts->queue_timeout);
        s.priority = opts->priority;
    }
    flags = submit_flags(c, pool, input, len, &m);
    t = c->next_tag;
    before = buf_avail(&c->io.out);
    if (m) {
        flags |= mfd_flags(c, m, &attach);
        s.slot = (uint32_t)m->slot;
    }
    if (attach && conn_push_fd(&c->io, m->fd, 0) < 0) {
        mfd_put(c, m); /* too many waiting to be sent: in the frame then */
        m = NULL;
        attach = 0;
        flags &= (uint16_t)~(PROTO_F_IN_FD | PROTO_F_IN_SLOT | PROTO_F_OUT_AT);
    }
    rc = proto_put_submit(&c->io.out, t, flags, &s);
    if (rc < 0) {
        take_back(c, before, m, attach);
        return rc;
    }
    if ((p = pend_add(&c->pend, t)) == NULL) {
        take_back(c, before, m, attach);
        return TH_ENOMEM;
    }
    if (flags & PROTO_F_IN_SLOT)
        m->passed = 1;
    c->next_tag++;
    p->done = done;
    p->arg = arg;
    p->m = m;
    c->ntasks++;
    if (tag)
        *tag = t;
    return 0;
}

void th_client_on_accept(th_client *c, th_accept_fn fn, void *arg)
{
    c->accept = fn;
    c->accept_arg = arg;
}

void th_client_on_progress(th_client *c, th_progress_fn fn, void *arg)
{
    c->progress = fn;
    c->progress_arg = arg;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int th_client_wait(th_client *c, double timeout)
{
    double end = timeout >= 0 ? now() + timeout : 0;
    int rc, ms = -1;

    if (c->dispatching)
        return TH_EBUSY;
    while (c->ntasks) {
        if (timeout >= 0) {
            double left = end - now();
            if (left <= 0)
                return TH_ETIMEDOUT;
            ms = (int)(left * 1000) + 1;
        }
        if ((rc = th_client_step(c, ms)) < 0)
            return rc; /* lost: every task was answered cancelled */
    }
    return 0;
}

struct call_wait {
    int done;
    th_result *result;
};

static void call_done(const th_result *r, void *arg)
{
    struct call_wait *w = arg;
    char *copy = malloc(r->len + 1);

    w->done = 1;
    *w->result = *r;
    w->result->data = copy;
    if (copy == NULL) {
        w->result->len = 0;
        return;
    }
    if (r->len)
        memcpy(copy, r->data, r->len);
    copy[r->len] = '\0';
}

/* Runs the call into a whole th_result, then hands the caller the part
 * its struct has room for. */
int th_client_call_sized(th_client *c, const char *pool, const char *task,
                         const void *input, size_t len,
                         const th_submit_opts *opts, th_result *result,
                         size_t result_size)
{
    th_result full;
    struct call_wait w = {0, &full};
    int rc;

    if (result == NULL ||
        result_size < offsetof(th_result, len) + sizeof(size_t))
        return TH_EINVAL;
    memset(&full, 0, sizeof full);
    full.size = result_size < sizeof full ? result_size : sizeof full;
    memset(result, 0, full.size);
    if (c->dispatching)
        return TH_EBUSY;
    rc = th_client_submit(c, pool, task, input, len, opts, call_done, &w,
                          NULL);
    while (rc == 0 && !w.done)
        rc = th_client_step(c, -1);
    if (!w.done)
        return rc;
    full.size = result_size < sizeof full ? result_size : sizeof full;
    memcpy(result, &full, full.size);
    return 0;
}

void th_client_result_free(th_result *r)
{
    free((void *)r->data);
    r->data = NULL;
    r->len = 0;
}

/* Sends a control request already encoded under tag t, and runs the loop
 * until its reply. On success *w holds the code and text. */
static int ctl_run(th_client *c, uint64_t t, struct ctl_wait *w)
{
    struct pend *p;
    int rc = 0;

    memset(w, 0, sizeof *w);
    if ((p = pend_add(&c->pend, t)) == NULL)
        return TH_ENOMEM;
    p->done = NULL;
    p->arg = NULL;
    p->ctl = w;
    while (!w->done && rc == 0)
        rc = th_client_step(c, -1);
    if (!w->done) {
        p = pend_find(&c->pend, t);
        if (p)
            pend_del(&c->pend, p);
        return rc;
    }
    return w->code;
}

/* Starts a control request: checks the state, takes a tag. */
static int ctl_begin(th_client *c, uint64_t *t)
{
    if (c->dispatching)
        return TH_EBUSY;
    if (c->dead)
        return TH_EIO;
    c->err[0] = '\0';
    *t = c->next_tag++;
    return 0;
}

/* Runs a control request and keeps only its code. */
static int ctl_simple(th_client *c, uint64_t t, int rc)
{
    struct ctl_wait w;

    if (rc < 0)
        return rc;
    rc = ctl_run(c, t, &w);
    free(w.text);
    return rc;
}

int th_client_cancel(th_client *c, uint64_t tag)
{
    uint64_t t;
    int rc = ctl_begin(c, &t);

    if (rc < 0)
        return rc;
    return ctl_simple(c, t, proto_put_cancel(&c->io.out, t, 0, tag));
}

int th_client_cancel_task(th_client *c, uint64_t task_id)
{
    uint64_t t;
    int rc = ctl_begin(c, &t);

    if (rc < 0)
        return rc;
    return ctl_simple(c, t,
                      proto_put_cancel(&c->io.out, t, PROTO_F_TASK_ID, task_id));
}

int th_client_restart(th_client *c, const char *pool, int force)
{
    uint64_t t;
    int rc = ctl_begin(c, &t);

    if (rc < 0)
        return rc;
    return ctl_simple(c, t, proto_put_restart(&c->io.out, t,
                                              force ? PROTO_F_FORCE : 0, pool));
}

int th_client_shutdown(th_client *c, int how)
{
    uint64_t t;
    int rc = ctl_begin(c, &t);

    if (rc < 0)
        return rc;
    return ctl_simple(c, t, proto_put_empty(&c->io.out, PROTO_SHUTDOWN, t,
                                            how == TH_CLOSE_FORCE
                                                ? PROTO_F_FORCE
                                                : 0));
}

/* Runs a control request and hands back its text too. */
static int ctl_text(th_client *c, uint64_t t, int rc, char **text)
{
    struct ctl_wait w;

    *text = NULL;
    if (rc < 0)
        return rc;
    rc = ctl_run(c, t, &w);
    *text = w.text;
    if (rc == 0 && w.text == NULL)
        return TH_ENOMEM;
    return rc;
}

int th_client_stats(th_client *c, const char *pool, int format, char **out)
{
    uint64_t t;
    int rc = ctl_begin(c, &t);

    *out = NULL;
    if (rc < 0)
        return rc;
    rc = ctl_text(c, t, proto_put_stats(&c->io.out, t, format, pool), out);
    if (rc < 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

static int text_out(int rc, char *text, char *buf, size_t len)
{
    if (buf && len)
        snprintf(buf, len, "%s", text ? text : "");
    free(text);
    return rc;
}

int th_client_reload(th_client *c, char *err, size_t errlen)
{
    uint64_t t;
    char *text;
    int rc = ctl_begin(c, &t);

    if (rc < 0)
        return rc;
    rc = ctl_text(c, t, proto_put_empty(&c->io.out, PROTO_RELOAD, t, 0), &text);
    return text_out(rc, text, err, errlen);
}

int th_client_ping(th_client *c, char *buf, size_t len)
{
    uint64_t t;
    char *text;
    int rc = ctl_begin(c, &t);

    if (rc < 0)
        return rc;
    rc = ctl_text(c, t, proto_put_empty(&c->io.out, PROTO_PING, t, 0), &text);
    return text_out(rc, text, buf, len);
}
