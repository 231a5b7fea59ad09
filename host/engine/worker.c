/* worker.c - a worker process as the engine sees it (engine layer):
 * having its pool's spawner fork it, talking to it, noticing it die.
 *
 * The process and its I/O only: the pool (pool.c) owns the worker's state
 * and every decision (when to start, stop, kill, and with which limits),
 * passing what this file needs as parameters; this file reads no pool.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "worker_process.h"
#include "worker_wire.h"
#include "host.h"
#include "log.h"
#include "plugin.h"
#include "pool.h"
#include "spawner.h"
#include "worker.h"

#define container_of(p, type, member) \
    ((type *)((char *)(p) - offsetof(type, member)))


static void on_sock(struct loop_io *io, uint32_t events);
static void on_kill_timer(struct loop_timer *t);

static struct loop *loop_of(const struct worker *w)
{
    return w->host->loop;
}

/* Bytes a worker's buffer keeps once empty: a buffer that grew for a
 * large payload is given back, so one big output does not stay held
 * until the worker leaves. */
#define BUF_KEEP (256 * 1024)

static void trim(struct buf *b)
{
    if (buf_avail(b) == 0 && b->cap > BUF_KEEP)
        buf_free(b);
}

static int watch(struct worker *w, int sock, int pidfd)
{
    w->sock.fd = sock;
    w->sock.cb = on_sock;
    w->pidfd.fd = pidfd;
    return loop_add(loop_of(w), &w->sock, LOOP_READ);
}

/* Has the pool's spawner fork the worker, and maps its arena (NULL when
 * it has none: payloads then all travel through the socket). Returns the
 * pid, or -1 after logging why. */
static pid_t fork_child(struct spawner *sp, struct worker *w, int *sock,
                        int *pidfd)
{
    struct spawned s;
    char err[512];
    if (spawner_spawn(sp, &s, err, sizeof err) < 0) {
        log_error("pool %s: cannot start a worker: %s", w->name, err);
        return -1;
    }
    if (s.arena >= 0) {
        void *a = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                       s.arena, 0);
        w->arena = a == MAP_FAILED ? NULL : a;
        close(s.arena);
    }
    *sock = s.sock;
    *pidfd = s.pidfd;
    w->serial = s.serial;
    return s.pid;
}

/* Signals the worker through its pidfd: its pid may name another process
 * once its spawner reaped it. */
static void signal_worker(const struct worker *w, int sig)
{
    if (w->pidfd.fd >= 0)
        syscall(SYS_pidfd_send_signal, w->pidfd.fd, sig, NULL, 0);
}

/* Takes down a worker the host cannot watch. */
static void abandon(struct worker *w, int sock, int pidfd)
{
    log_error("pool %s: cannot watch worker %d: %s", w->name,
              w->pid, strerror(errno));
    w->pidfd.fd = pidfd;
    signal_worker(w, SIGKILL); /* its spawner reaps it */
    close(sock);
    worker_free(w);
}

struct worker *worker_spawn(const struct worker_start *ws)
{
    struct worker *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->pool = ws->owner;
    w->host = ws->host;
    w->name = ws->name;
    w->pidfd.fd = -1;
    int sock = -1, pidfd = -1;
    w->pid = fork_child(ws->spawner, w, &sock, &pidfd);
    if (w->pid == -1) {
        worker_free(w);
        return NULL;
    }
    w->started = loop_now(loop_of(w));
    fcntl(sock, F_SETFL, O_NONBLOCK);
    if (watch(w, sock, pidfd) < 0) {
        abandon(w, sock, pidfd);
        return NULL;
    }
    w->kill_timer.cb = on_kill_timer;
    loop_timer_start(loop_of(w), &w->kill_timer, ws->init_limit);
    log_info("pool %s: worker %d started", w->name, w->pid);
    return w;
}

/* Queues a frame for the worker; returns its header in w->out (valid
 * until the next frame), or NULL when out of memory. */
static struct frame *put_frame(struct worker *w, uint16_t type, uint64_t id,
                               uint16_t aux, const void *data, size_t len)
{
    /* one reservation per frame, the header written in place: a task's
     * frame is queued for every task (a header built on the stack and
     * copied cost a stalled 16-byte load each time) */
    char *p = buf_extend(&w->out, sizeof(struct frame) + FRAME_PAD(len));
    host_mark_worker(w->host, w);
    if (p == NULL)
        return NULL;
    struct frame *f = (struct frame *)p;
    f->id = id;
    f->len = (uint32_t)len;
    f->type = type;
    f->aux = aux;
    f->code = 0;
    f->run_us = 0;
    f->rss_kib = 0;
    f->arena_kib = 0;
    if (len > 0)
        memcpy(p + sizeof *f, data, len);
    memset(p + sizeof *f + len, 0, FRAME_PAD(len) - len);
    return f;
}

/* Reserves `len` bytes of a ring whose positions [tail, head) are in use;
 * returns the position, or UINT64_MAX when it does not fit now. */
static uint64_t ring_alloc(uint64_t head, uint64_t tail, uint64_t len)
{
    uint64_t start = head;
    uint64_t off = start % SHM_RING;
    if (off + len > SHM_RING)
        start += SHM_RING - off; /* no wrapping inside a payload */
    if (start + len - tail > SHM_RING)
        return UINT64_MAX;
    return start;
}

/* The worker's slot for memfd st, spanning `span` bytes: *attach is 0
 * when the worker holds it already, else the memfd must go with the
 * frame and takes the place of the least recently named one. */
static uint32_t fd_slot(const struct worker *w, const struct stat *st,
                        size_t span, int *attach)
{
    const struct fd_slot *old = NULL;
    *attach = 1;
    if (span > FD_SLOT_MAX_BYTES)
        return FD_SLOT_TEMP;
    for (size_t i = 0; i < FD_SLOTS; i++) {
        const struct fd_slot *s = &w->slots[i];
        if (s->ino == st->st_ino && s->dev == st->st_dev && s->ino != 0) {
            *attach = 0;
            return (uint32_t)i;
        }
        if (old == NULL || s->used < old->used)
            old = s;
    }
    return (uint32_t)(old - w->slots);
}

/* Sends a large input that is in a memfd as that memfd, or as the slot of
 * the worker that holds it: the worker maps it and reads the input in
 * place (worker_wire.h, FRAME_F_FD). Returns 0, or -1 when it cannot (the
 * ring or the socket carries it then). */
static int send_fd(struct worker *w, struct task *t)
{
    struct payload *pl = t->payload;
    if (pl == NULL || pl->in_fd < 0 || pl->len < PAYLOAD_FD_MIN ||
        pl->len > FRAME_MAX_PAYLOAD)
        return -1; /* before st, whose zeroing would cost every small task */
    struct stat st = {.st_dev = pl->in_dev, .st_ino = pl->in_ino};
    int attach;
    if (pl->in_ino == 0 && fstat(pl->in_fd, &st) == -1)
        return -1;
    struct frame_fd ref = {.len = (uint32_t)pl->len};
    if (pl->out_in_fd)
        ref.out_off = (uint32_t)payload_out_off(pl->len);
    ref.slot = fd_slot(w, &st, fd_span(ref.len, ref.out_off), &attach);
    ref.attached = (uint32_t)attach;
    if (attach) {
        int fd = fcntl(pl->in_fd, F_DUPFD_CLOEXEC, 0);
        if (fd == -1)
            return -1;
        if (fdpass_push(&w->ofds, fd, 1, w->sent + buf_avail(&w->out), 0) <
            0) {
            close(fd);
            return -1;
        }
    }
    if (ref.slot != FD_SLOT_TEMP) {
        struct fd_slot *s = &w->slots[ref.slot];
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->used = ++w->slot_clock;
    }
    pl->out_off = ref.out_off;
    struct frame *f = put_frame(w, FRAME_TASK, t->id, t->index, &ref,
                                sizeof ref);
    if (f != NULL)
        f->code = FRAME_F_FD;
    return 0;
}

/* Inputs sent by reference are over TASK_INLINE bytes: they have a
 * payload record (task.h) to note where they went. */
_Static_assert(SHM_MIN > TASK_INLINE && PAYLOAD_FD_MIN > TASK_INLINE,
               "an input in the ring or a memfd has a payload record");

/* Puts a large input into the worker's input ring. Returns 0, or -1 when
 * it does not fit (the socket carries it then). */
static int send_shm(struct worker *w, struct task *t)
{
    struct payload *pl = t->payload;
    if (w->arena == NULL || task_len(t) < SHM_MIN)
        return -1; /* so pl is not NULL: SHM_MIN > TASK_INLINE */
    uint64_t pos = ring_alloc(w->in_head, w->in_tail, pl->len);
    if (pos == UINT64_MAX)
        return -1;
    memcpy(SHM_IN(w->arena) + pos % SHM_RING, pl->data, pl->len);
    w->in_head = SHM_ALIGN(pos + pl->len);
    pl->shm_end = w->in_head;
    struct frame_shm ref = {.pos = pos, .len = pl->len};
    struct frame *f = put_frame(w, FRAME_TASK, t->id, t->index, &ref,
                                sizeof ref);
    /* put_frame() left code 0; mark the frame as a reference. */
    if (f != NULL)
        f->code = FRAME_F_SHM;
    return 0;
}

void worker_send(struct worker *w, struct task *t, uint32_t poll_us)
{
    assert(t->worker == NULL && w->state != W_STOPPING);
    t->worker = w;
    if (t->payload != NULL)
        t->payload->shm_end = 0;
    task_list_push(&w->inflight, t);
    /* frame_fd and frame_shm are of one size */
    size_t len = sizeof(struct frame_shm);
    if (send_fd(w, t) < 0 && send_shm(w, t) < 0) {
        len = task_len(t);
        put_frame(w, FRAME_TASK, t->id, t->index, task_data(t), len);
    }
    /* The frame just queued carries the polling window (worker_wire.h). */
    if (buf_avail(&w->out) >= FRAME_PAD(len) + sizeof(struct frame)) {
        struct frame *f = (struct frame *)(w->out.data + w->out.len -
                                           FRAME_PAD(len) - sizeof *f);
        f->run_us = poll_us;
    }
}

/* Gives the worker back the output ring up to what was delivered. */
static void release_outputs(struct worker *w)
{
    if (w->arena == NULL || w->out_consumed == w->out_released)
        return;
    struct shm_header *h = (struct shm_header *)w->arena;
    atomic_store_explicit(&h->out_consumed, w->out_consumed,
                          memory_order_release);
    w->out_released = w->out_consumed;
}

/* Drops what is queued for the worker, memfds included. */
static void drop_out(struct worker *w)
{
    buf_free(&w->out);
    fdpass_clear(&w->ofds);
}

/* Writes what is queued, each memfd with its frame. Returns 0 when all
 * went, 1 when the socket is full, -1 on error. */
static int send_out(struct worker *w)
{
    while (buf_avail(&w->out) > 0) {
        size_t avail = buf_avail(&w->out);
        ssize_t n = fdpass_send(w->sock.fd, buf_head(&w->out), avail,
                                &w->ofds, w->sent);
        if (n == -1)
            return -1;
        buf_consume(&w->out, (size_t)n);
        w->sent += (uint64_t)n;
        if ((size_t)n < avail)
            return 1;
    }
    return 0;
}

/* Writes what is queued for the worker and sets the socket's events. */
static void write_out(struct worker *w)
{
    if (w->reaped || w->killed) {
        drop_out(w);
        return;
    }
    int r = send_out(w);
    if (r == -1) {
        /* The worker is going away; its spawner will say how. */
        drop_out(w);
        r = 0;
    }
    trim(&w->out);
    loop_mod(loop_of(w), &w->sock, r == 1 ? LOOP_READ | LOOP_WRITE : LOOP_READ);
}

void worker_flush(struct worker *w)
{
    release_outputs(w);
    write_out(w);
}

void worker_stop(struct worker *w, int reason, double limit)
{
    assert(w->state == W_STOPPING);
    w->reason = reason;
    put_frame(w, FRAME_STOP, 0, 0, NULL, 0);
    if (limit > 0)
        loop_timer_start(loop_of(w), &w->kill_timer, limit);
}

void worker_hurry(struct worker *w, double limit)
{
    struct loop *l = loop_of(w);
    if (w->reaped || w->killed)
        return;
    if (loop_timer_armed(&w->kill_timer) &&
        w->kill_timer.when <= loop_now(l) + limit)
        return;
    loop_timer_start(l, &w->kill_timer, limit);
}

void worker_kill(struct worker *w, int reason, int sig, double grace)
{
    assert(w->state == W_STOPPING);
    if (!w->killed)
        w->reason = reason;
    w->killed = 1;
    drop_out(w);
    if (w->reaped)
        return;
    signal_worker(w, sig);
    if (sig != SIGKILL)
        loop_timer_start(loop_of(w), &w->kill_timer, grace);
    else
        loop_timer_stop(loop_of(w), &w->kill_timer);
}

static void on_kill_timer(struct loop_timer *t)
{
    struct worker *w = container_of(t, struct worker, kill_timer);
    if (w->reaped)
        return;
    pool_worker_overdue(w); /* init or exit took too long: the pool acts */
}

/* RSS of the worker from /proc, without the arena pages it has touched
 * (payload buffers shared with the host, not the worker's own memory). */
uint32_t worker_read_rss(const struct worker *w)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)w->pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return 0;
    uint32_t kib = child_statm_kib(fd);
    close(fd);
    return kib > w->arena_kib ? kib - w->arena_kib : 0;
}

/* ---- reading frames ---- */

/* Handles a result whose output the worker wrote into its task's memfd,
 * where it was asked to. */
static int fd_result(struct worker *w, const struct frame *f,
                     const char *payload)
{
    struct task *head = w->inflight.head;
    struct frame_shm ref;
    if (f->len != sizeof ref)
        return -1;
    memcpy(&ref, payload, sizeof ref);
    if (head == NULL || head->id != f->id || head->payload == NULL ||
        head->payload->out_off == 0 || ref.pos != head->payload->out_off ||
        ref.len > FRAME_MAX_PAYLOAD)
        return -1;
    struct frame copy = *f;
    copy.len = (uint32_t)ref.len;
    pool_worker_result(w, &copy, NULL, RESULT_FD);
    return 0;
}

/* Handles a result: frees the task's input in the ring, finds an output
 * left in the output ring, and releases that once delivered. */
static int handle_result(struct worker *w, const struct frame *f,
                         const char *payload)
{
    struct task *head = w->inflight.head;
    if (head != NULL && head->id == f->id && head->payload != NULL &&
        head->payload->shm_end != 0)
        w->in_tail = head->payload->shm_end;
    if (f->rss_kib != 0)
        w->arena_kib = f->arena_kib;
    if (f->aux & FRAME_F_FD)
        return fd_result(w, f, payload);
    if (!(f->aux & FRAME_F_SHM)) {
        pool_worker_result(w, f, payload, RESULT_INLINE);
        return 0;
    }
    struct frame_shm ref;
    if (w->arena == NULL || f->len != sizeof ref)
        return -1;
    memcpy(&ref, payload, sizeof ref);
    if (ref.len > SHM_RING || ref.pos % SHM_RING + ref.len > SHM_RING)
        return -1;
    struct frame copy = *f;
    copy.len = (uint32_t)ref.len;
    pool_worker_result(w, &copy, SHM_OUT(w->arena) + ref.pos % SHM_RING,
                       RESULT_ARENA);
    /* The answer may point into the ring until it is delivered: the ring
     * is released when the worker is flushed, after the delivery. */
    w->out_consumed = SHM_ALIGN(ref.pos + ref.len);
    host_mark_worker(w->host, w);
    return 0;
}

/* Passes a progress report to whoever asked for the task's. The worker
 * writes reports at once, ahead of results it still holds, so the task
 * is any of its in-flight ones; one answered meanwhile gets none. */
static int handle_progress(struct worker *w, const struct frame *f,
                           const char *payload)
{
    struct frame_progress p;
    char msg[TH_PROGRESS_MSG_MAX + 1];
    size_t len = f->len - sizeof p;

    if (f->len < sizeof p || len > TH_PROGRESS_MSG_MAX)
        return -1;
    struct task *t = w->inflight.head;
    while (t != NULL && t->id != f->id)
        t = t->next;
    if (t == NULL || t->answered || t->progress == NULL)
        return 0;
    memcpy(&p, payload, sizeof p);
    memcpy(msg, payload + sizeof p, len);
    msg[len] = '\0';
    t->progress->fn(t->id, p.done, p.total, msg, t->progress->arg);
    return 0;
}

/* Handles one frame. Returns 0, or -1 when the worker broke the protocol
 * (it is then killed). */
static int handle_frame(struct worker *w, const struct frame *f,
                        const char *payload)
{
    switch (f->type) {
    case FRAME_READY:
        if (w->state == W_STOPPING)
            return 0; /* stopped while starting: the STOP frame follows */
        if (w->state != W_STARTING)
            return -1;
        loop_timer_stop(loop_of(w), &w->kill_timer);
        pool_worker_ready(w, f->rss_kib);
        return 0;
    case FRAME_INIT_FAILED:
        pool_worker_init_failed(w, payload, f->len);
        return 0;
    case FRAME_RESULT:
        return handle_result(w, f, payload);
    case FRAME_PROGRESS:
        return handle_progress(w, f, payload);
    default:
        return -1;
    }
}

/* Parses every complete frame in w->in. Returns the bytes the next frame
 * still needs (at least 1 when a frame is partial), 0 when none, or -1 on
 * a protocol error. */
static long parse_frames(struct worker *w)
{
    while (buf_avail(&w->in) >= sizeof(struct frame)) {
        struct frame f;
        memcpy(&f, buf_head(&w->in), sizeof f);
        if (f.len > FRAME_MAX_PAYLOAD)
            return -1;
        size_t total = sizeof f + FRAME_PAD(f.len);
        if (buf_avail(&w->in) < total)
            return (long)(total - buf_avail(&w->in));
        if (handle_frame(w, &f, buf_head(&w->in) + sizeof f) < 0)
            return -1;
        buf_consume(&w->in, total);
    }
    return 0;
}

/* Reads what the worker sent, handling frames as they complete. Returns
 * 1 at EOF or error (stop watching the socket), else 0. */
static int read_worker(struct worker *w, int rounds)
{
    int drained = 0;
    for (int i = 0; i < rounds; i++) {
        long need = parse_frames(w);
        if (need < 0 && w->killed) {
            buf_consume(&w->in, buf_avail(&w->in));
            return 1; /* going away anyway: what it sends is ignored */
        }
        if (need < 0) {
            log_error("pool %s: worker %d sent a malformed frame; killing it",
                      w->name, w->pid);
            pool_worker_broken(w);
            return 1;
        }
        if (drained)
            return 0;
        size_t room = need > 65536 ? (size_t)need : 65536;
        ssize_t n = buf_read(&w->in, w->sock.fd, room);
        if (n == 0)
            return 1;
        if (n == -1)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : 1;
        /* A read that left room in the buffer took all there was: one
         * more would only fail with EAGAIN. */
        drained = w->in.len < w->in.cap;
    }
    return 0;
}

static void close_sock(struct worker *w)
{
    if (w->sock.fd < 0)
        return;
    loop_del(loop_of(w), &w->sock);
    close(w->sock.fd);
    w->sock.fd = -1;
}

static void on_sock(struct loop_io *io, uint32_t events)
{
    struct worker *w = container_of(io, struct worker, sock);
    if (w->reaped)
        return; /* reaped earlier in this loop iteration */
    if (events & LOOP_WRITE)
        write_out(w);
    if (events & (LOOP_READ | LOOP_HUP)) {
        if (read_worker(w, 4)) {
            /* EOF: its spawner says how it ended, a moment later; whether
             * it was asked to stop counts as of now. The socket leaves the
             * loop until then: epoll reports a hang-up whatever events are
             * asked for, and the loop would spin on it. */
            if (w->state != W_STOPPING)
                w->left_unasked = 1;
            loop_del(loop_of(w), &w->sock);
        }
        parse_frames(w);
        trim(&w->in);
    }
}

/* Describes how the worker ended into buf; returns non-zero when that
 * counts as a crash (anything but a clean exit after we asked it to). */
static int describe_exit(const struct worker *w, int status, char *buf,
                         size_t len)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        snprintf(buf, len, "killed by signal %d (SIG%s)", sig,
                 sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
        return 1;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    snprintf(buf, len, "exited with status %d", code);
    return code != 0 || w->state != W_STOPPING || w->left_unasked ||
           w->inflight.n > 0;
}

/* Once the worker is gone: hands over the results it held but had not
 * sent (worker_wire.h), skipping those that did reach the socket. A frame cut
 * short in the socket is whole in the staging area. */
static void harvest(struct worker *w)
{
    if (w->arena == NULL)
        return;
    struct shm_header *h = (struct shm_header *)w->arena;
    uint32_t n = atomic_load_explicit(&h->staged, memory_order_acquire);
    if (n > SHM_STAGE_SIZE)
        return;
    buf_consume(&w->in, buf_avail(&w->in));
    const char *at = SHM_STAGE(w->arena), *end = at + n;
    while ((size_t)(end - at) >= sizeof(struct frame)) {
        struct frame f;
        memcpy(&f, at, sizeof f);
        size_t total = sizeof f + FRAME_PAD(f.len);
        if (f.len > SHM_STAGE_SIZE || total > (size_t)(end - at))
            return;
        struct task *head = w->inflight.head;
        if (f.type == FRAME_RESULT && head != NULL && head->id == f.id &&
            handle_frame(w, &f, at + sizeof f) < 0)
            return;
        at += total;
    }
}

struct task *worker_running(const struct worker *w)
{
    if (w->arena == NULL)
        return w->inflight.head; /* it sends each result at once */
    const struct shm_header *h = (const struct shm_header *)w->arena;
    uint64_t id = atomic_load_explicit(&h->running, memory_order_acquire);
    if (id == 0)
        return NULL;
    for (struct task *t = w->inflight.head; t != NULL; t = t->next)
        if (t->id == id)
            return t;
    return NULL;
}

void worker_reaped(struct worker *w, int status)
{
    if (w->reaped)
        return;
    /* Results it wrote before dying still count. */
    if (w->sock.fd >= 0)
        read_worker(w, 1 << 20);
    harvest(w);
    if (w->pidfd.fd >= 0)
        close(w->pidfd.fd);
    w->pidfd.fd = -1;
    close_sock(w);
    w->reaped = 1;
    loop_timer_stop(loop_of(w), &w->kill_timer);
    char how[96];
    int crashed = describe_exit(w, status, how, sizeof how);
    pool_worker_exited(w, how, crashed);
}

void worker_skip(struct worker *w, uint64_t id)
{
    if (w->arena == NULL)
        return;
    struct shm_header *h = (struct shm_header *)w->arena;
    uint64_t n = atomic_load_explicit(&h->cancel_next, memory_order_relaxed);
    atomic_store_explicit(&h->cancelled[n % SHM_CANCEL_SLOTS], id,
                          memory_order_release);
    atomic_store_explicit(&h->cancel_next, n + 1, memory_order_release);
}

void worker_free(struct worker *w)
{
    if (w->pidfd.fd >= 0)
        close(w->pidfd.fd);
    if (w->arena != NULL)
        munmap(w->arena, SHM_SIZE);
    buf_free(&w->in);
    drop_out(w);
    free(w);
}
