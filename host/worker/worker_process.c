/* worker_process.c - what runs inside a worker process (worker layer):
 * init once, run tasks in order, fini.
 *
 * Output is written by the plugin straight into the outgoing buffer, behind
 * a reserved frame header, so a result is never copied inside the worker.
 * Results are sent in batches: the worker flushes when it has no further
 * task already read, when the batch is large, or when it has held results
 * for a while, so a deep pipeline costs one write per batch and a lone
 * task is answered at once. What it holds is also copied to the arena's
 * staging area, and the task it runs is named in the arena's header, so
 * that nothing is lost or misattributed if a task kills it (worker_wire.h).
 *
 * A large input may come in a memfd (FRAME_F_FD): the plugin reads it in
 * place, and its output is written into the same memfd, after the input,
 * where the task's owner reads it. The memfds stay mapped for later tasks
 * (a bounded cache), so that their pages are mapped once, not per task.
 */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "fdpass.h"
#include "worker_process.h"
#include "worker_wire.h"
#include "log.h"
#include "plugin.h"
#include "settings.h"
#include "taskhost.h"

#define CHILD_FD 3
#define CHILD_LOG_FD 4
#define FLUSH_BYTES (256 * 1024)
#define FLUSH_AFTER 0.0005 /* seconds results may wait for a batch */

/* The task handle of the SDK. Output goes to the socket buffer behind the
 * result's header, or, once it is large, to the arena's output ring.
 * bench/cpu.c builds handles of its own with the first four fields and
 * zeroes after them: new fields go at the end, zero meaning unused. */
struct th_task {
    struct buf *out;
    size_t header; /* offset of this result's frame header in out */
    int failed;
    const char *name;
    int in_arena;   /* output is in the ring at apos */
    int spill_tried;
    uint64_t apos;  /* ring position of the output */
    size_t acap;    /* contiguous room there */
    size_t alen;    /* output bytes there */
    uint64_t id;    /* the task's id, for progress reports; 0: none */
    int seq;        /* this run's number, for the SIGTERM handler; 0: none */
    struct pmap *pm; /* the input's memfd, or NULL */
    int in_pm;       /* output goes into pm at pm_off */
    size_t pm_off;
    size_t pm_len;   /* output bytes there */
};

/* ---- payload memfds (FRAME_F_FD) ---- */

/* The memfds the host gave, one per slot (the host chooses the slot and
 * when to replace what it holds: worker_wire.h), each with its
 * descriptor, so that it can be mapped again, longer. */
struct pmap {
    int fd; /* -1: an empty slot */
    int writable;
    int temp; /* in no slot: unmapped after its task */
    char *map;
    size_t size;
};

static struct {
    struct pmap v[FD_SLOTS];
    size_t bytes; /* mapped by the slots */
} pmaps;

/* Unmaps e and closes its memfd. */
static void pmap_drop(struct pmap *e)
{
    if (e->map != NULL)
        munmap(e->map, e->size);
    if (e->fd != -1)
        close(e->fd);
    if (!e->temp)
        pmaps.bytes -= e->size;
    e->map = NULL;
    e->size = 0;
    e->fd = -1;
}

/* Maps e's memfd afresh: its first `need` bytes at least, and `want` if
 * the memfd has or can grow to them (room for an output), never more (a
 * client's memfd may be huge, or sparse). Read-write if it allows. */
static int pmap_map(struct pmap *e, size_t need, size_t want)
{
    struct stat st;
    if (fstat(e->fd, &st) == -1)
        return -1;
    size_t size = (size_t)st.st_size;
    if (size < want && ftruncate(e->fd, (off_t)want) == 0)
        size = want;
    if (size > want)
        size = want;
    if (size < need || size == 0)
        return -1;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, e->fd, 0);
    int writable = p != MAP_FAILED;
    if (p == MAP_FAILED)
        p = mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, e->fd, 0);
    if (p == MAP_FAILED)
        return -1;
    if (e->map != NULL)
        munmap(e->map, e->size);
    if (!e->temp)
        pmaps.bytes += size - e->size;
    e->writable = writable;
    e->map = p;
    e->size = size;
    return 0;
}

/* The mapping of the memfd of a task frame: `fd` (taken over; -1 when
 * none came: the slot's) in slot `slot` (FD_SLOT_TEMP: none), with its
 * first `need` bytes and, if it can, `want`. NULL when it cannot be. */
static struct pmap *pmap_get(uint32_t slot, int fd, size_t need, size_t want)
{
    struct pmap *e;
    if (slot == FD_SLOT_TEMP) {
        if (fd == -1 || (e = calloc(1, sizeof *e)) == NULL) {
            if (fd != -1)
                close(fd);
            return NULL;
        }
        e->temp = 1;
    } else {
        e = &pmaps.v[slot];
        if (fd != -1) /* a memfd in place of the one it held */
            pmap_drop(e);
    }
    if (fd != -1)
        e->fd = fd;
    if (e->fd == -1)
        _exit(73); /* cannot happen from our host */
    if (e->map != NULL &&
        (e->size >= want || (e->size >= need && !e->writable)))
        return e;
    if (pmap_map(e, need, want) == 0)
        return e;
    if (e->temp) {
        pmap_drop(e);
        free(e);
    }
    return NULL;
}

/* Ends a task's use of e: one in no slot goes. */
static void pmap_done(struct pmap *e)
{
    if (e != NULL && e->temp) {
        pmap_drop(e);
        free(e);
    }
}

/* Grows e's memfd and its mapping, in place, to `need` bytes at least.
 * Returns 0, or -1 when it cannot (sealed, no address room). */
static int pmap_grow(struct pmap *e, size_t need)
{
    size_t size = e->size * 2 > need ? e->size * 2 : need;
    size = (size + PAYLOAD_FD_MIN - 1) / PAYLOAD_FD_MIN * PAYLOAD_FD_MIN;
    struct stat st;
    if (!e->writable || fstat(e->fd, &st) == -1)
        return -1;
    if ((size_t)st.st_size < size && ftruncate(e->fd, (off_t)size) == -1)
        return -1;
    void *p = mremap(e->map, e->size, size, 0);
    if (p == MAP_FAILED)
        return -1;
    if (!e->temp)
        pmaps.bytes += size - e->size;
    e->size = size;
    return 0;
}

/* Bytes the kept memfds map: shared payload pages, not the worker's own
 * memory. */
static uint64_t pmap_bytes(void)
{
    return pmaps.bytes;
}

/* The worker's side of the arena (worker_wire.h). */
static struct {
    char *base;           /* NULL: no arena */
    uint64_t out_head;    /* next free output position */
    uint64_t in_touched;  /* high-water offsets: pages the worker has */
    uint64_t out_touched; /* mapped, not counted as its own memory */
    uint64_t stage_touched;
} arena;

static uint32_t arena_kib(void)
{
    if (arena.in_touched == 0 && arena.out_touched == 0 &&
        arena.stage_touched == 0)
        return (uint32_t)(pmap_bytes() / 1024);
    uint64_t page = 4096;
    uint64_t bytes = pmap_bytes() + SHM_STAGE_OFF +
                     (arena.stage_touched + page - 1) / page * page +
                     (arena.in_touched + page - 1) / page * page +
                     (arena.out_touched + page - 1) / page * page;
    return (uint32_t)(bytes / 1024);
}

/* Moves the `used` output bytes written so far into the output ring, with
 * room for at least `want`. Returns 0, or -1 when the ring is too full. */
static int to_arena(th_task *task, size_t used, size_t want)
{
    struct shm_header *h = (struct shm_header *)arena.base;
    uint64_t consumed =
        atomic_load_explicit(&h->out_consumed, memory_order_acquire);
    uint64_t start = arena.out_head;
    uint64_t off = start % SHM_RING;
    if (SHM_RING - off < want)
        start += SHM_RING - off; /* a payload never wraps */
    if (start - consumed >= SHM_RING)
        return -1;
    uint64_t room = SHM_RING - (start - consumed);
    uint64_t contig = SHM_RING - start % SHM_RING;
    uint64_t cap = room < contig ? room : contig;
    if (cap < want)
        return -1;
    char *dst = SHM_OUT(arena.base) + start % SHM_RING;
    memcpy(dst, task->out->data + task->header + sizeof(struct frame), used);
    task->out->len = task->header + sizeof(struct frame);
    task->in_arena = 1;
    task->apos = start;
    task->acap = (size_t)cap;
    task->alen = used;
    return 0;
}

/* Appends to an output in the ring; falls back to the socket buffer when
 * the ring has no more room. */
static int write_arena(th_task *task, const void *data, size_t len)
{
    char *at = SHM_OUT(arena.base) + task->apos % SHM_RING;
    if (len <= task->acap - task->alen) {
        memcpy(at + task->alen, data, len);
        task->alen += len;
        return 0;
    }
    task->in_arena = 0;
    if (buf_append(task->out, at, task->alen) < 0)
        return TH_ENOMEM;
    return buf_append(task->out, data, len);
}

/* Appends to an output in the task's memfd, growing it when needed; falls
 * back to the usual way (socket buffer or ring) when it cannot grow. */
static int write_pm(th_task *task, const void *data, size_t len)
{
    struct pmap *e = task->pm;
    size_t end = task->pm_off + task->pm_len;
    if (len > FRAME_MAX_PAYLOAD - task->pm_len)
        return TH_ETOOBIG;
    if ((end > e->size || len > e->size - end) &&
        pmap_grow(e, end + len) < 0) {
        task->in_pm = 0;
        int r = th_task_write(task, e->map + task->pm_off, task->pm_len);
        return r < 0 ? r : th_task_write(task, data, len);
    }
    memcpy(e->map + end, data, len);
    task->pm_len += len;
    return 0;
}

static volatile sig_atomic_t child_term;
/* The run number of the task running now (0: none), and of the one that
 * was running when SIGTERM came: the host stops a worker by SIGTERM to
 * stop its running task, and only that task is cancelled. */
static volatile sig_atomic_t running_seq, term_seq;

/* The progress of the running task: the latest report, and when one last
 * left. One task runs at a time, so this lives outside th_task and the
 * fast path only resets two fields per task. */
static struct {
    int held;       /* a report waits: it came too soon after the last */
    double sent;    /* when the last report left, 0: none yet */
    struct frame_progress p;
    size_t len;
    char msg[TH_PROGRESS_MSG_MAX];
} progress;

/* Writes the latest report of task `id` to the host now, blocking: it
 * goes ahead of the results held for the next batch (the host finds the
 * task by id). Exits when the host is gone. */
static void progress_send(uint64_t id)
{
    char frame[sizeof(struct frame) + sizeof progress.p +
               FRAME_PAD(TH_PROGRESS_MSG_MAX)];
    struct frame f = {.id = id, .type = FRAME_PROGRESS,
                      .len = (uint32_t)(sizeof progress.p + progress.len)};
    size_t total = sizeof f + FRAME_PAD(f.len);

    memset(frame, 0, total);
    memcpy(frame, &f, sizeof f);
    memcpy(frame + sizeof f, &progress.p, sizeof progress.p);
    memcpy(frame + sizeof f + sizeof progress.p, progress.msg, progress.len);
    for (size_t off = 0; off < total;) {
        ssize_t n = write(CHILD_FD, frame + off, total - off);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0); /* the host closed our socket: nobody to answer */
        off += (size_t)n;
    }
    progress.held = 0;
}

static void on_sigterm(int sig)
{
    (void)sig;
    child_term = 1;
    if (running_seq != 0)
        term_seq = running_seq;
}

TH_EXPORT int th_task_write(th_task *task, const void *data, size_t len)
{
    if (task == NULL || (data == NULL && len > 0))
        return TH_EINVAL;
    if (task->failed)
        return TH_EINVAL; /* its answer is its failure message */
    if (task->in_pm)
        return write_pm(task, data, len);
    if (task->in_arena)
        return write_arena(task, data, len);
    size_t used = task->out->len - task->header - sizeof(struct frame);
    if (len > FRAME_MAX_PAYLOAD - used)
        return TH_ETOOBIG;
    if (arena.base != NULL && !task->spill_tried && used + len >= SHM_MIN) {
        task->spill_tried = 1;
        if (to_arena(task, used, used + len) == 0)
            return write_arena(task, data, len);
    }
    return buf_append(task->out, data, len);
}

TH_EXPORT int th_task_fail(th_task *task, int code, const char *fmt, ...)
{
    if (code >= 0)
        code = TH_EPLUGIN;
    if (task == NULL)
        return code;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt ? fmt : "", ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    /* Drop any output written so far: the payload becomes the message. */
    task->out->len = task->header + sizeof(struct frame);
    task->in_arena = 0;
    task->in_pm = 0;
    buf_append(task->out, msg, (size_t)n);
    task->failed = 1;
    return code;
}

static int skipped(uint64_t id);

/* Whether this task was cancelled or timed out: the host names it in the
 * arena's cancel slots, and SIGTERM came while it ran. */
TH_EXPORT int th_task_cancelled(const th_task *task)
{
    if (task == NULL)
        return 0;
    return (term_seq != 0 && term_seq == task->seq) || skipped(task->id);
}

TH_EXPORT const char *th_task_name(const th_task *task)
{
    return task ? task->name : NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Keeps the latest report; sends it when the last one left at least
 * TH_PROGRESS_INTERVAL_MS ago, so a plugin calling this in a tight loop
 * costs a clock read and a copy per call and a frame per interval. */
TH_EXPORT int th_task_progress(th_task *task, uint64_t done, uint64_t total,
                               const char *msg)
{
    if (task == NULL || task->id == 0)
        return TH_EINVAL;
    progress.p.done = done;
    progress.p.total = total;
    progress.len = msg ? strnlen(msg, TH_PROGRESS_MSG_MAX) : 0;
    memcpy(progress.msg, msg ? msg : "", progress.len);
    double now = now_s();
    if (progress.sent > 0 &&
        now - progress.sent < TH_PROGRESS_INTERVAL_MS / 1000.0) {
        progress.held = 1;
        return 0;
    }
    progress.sent = now;
    progress_send(task->id);
    return 0;
}

/* ---- process setup ---- */

static void reset_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &sa, NULL); /* fails harmlessly for KILL/STOP */
    /* The operator's signals are for the host, also when they reach the
     * whole process group (Ctrl-C in a terminal, kill -HUP 0); and a worker,
     * in a process group of its own, must not be stopped for writing to
     * the host's terminal. */
    sa.sa_handler = SIG_IGN;
    const int ignored[] = {SIGPIPE, SIGHUP,  SIGINT,  SIGQUIT,
                           SIGUSR1, SIGUSR2, SIGTTOU, SIGTTIN};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
        sigaction(ignored[i], &sa, NULL);
    /* No SA_RESTART: SIGTERM interrupts a blocking read, and we exit. */
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Keeps 0-2, the socket (as CHILD_FD) and the log; closes the rest, so a
 * worker holds no other worker's socket nor the host's listening socket. */
static void setup_fds(int fd)
{
    if (fd != CHILD_FD) {
        if (dup2(fd, CHILD_FD) == -1)
            _exit(70);
        close(fd);
    }
    int keep = CHILD_FD;
    if (log_file_fd() >= 0) {
        log_move_fd(CHILD_LOG_FD);
        keep = CHILD_LOG_FD;
    }
    if (syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0) == -1) {
        for (int i = keep + 1; i < 1024; i++)
            close(i);
    }
    int null = open("/dev/null", O_RDONLY);
    if (null != -1 && null != 0) {
        dup2(null, 0);
        close(null);
    }
}

static void set_limit(int resource, long value)
{
    struct rlimit rl = {(rlim_t)value, (rlim_t)value};
    if (setrlimit(resource, &rl) == -1)
        log_warn("cannot set resource limit %d to %ld: %s", resource, value,
                 strerror(errno));
}

static void apply_limits(const struct child_params *p)
{
    if (p->address_space_limit > 0)
        set_limit(RLIMIT_AS, (long)p->address_space_limit);
    if (p->rlimit_nofile > 0)
        set_limit(RLIMIT_NOFILE, p->rlimit_nofile);
    if (p->rlimit_core >= 0)
        set_limit(RLIMIT_CORE, p->rlimit_core);
    if (p->gid >= 0 && (setgroups(0, NULL) == -1 || setgid((gid_t)p->gid) == -1)) {
        log_error("cannot switch to gid %d: %s", p->gid, strerror(errno));
        _exit(71);
    }
    if (p->uid >= 0 && setuid((uid_t)p->uid) == -1) {
        log_error("cannot switch to uid %d: %s", p->uid, strerror(errno));
        _exit(71);
    }
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* ---- frames ---- */

uint32_t child_statm_kib(int statm)
{
    if (statm < 0)
        return 0;
    char text[128];
    ssize_t n = pread(statm, text, sizeof text - 1, 0);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    unsigned long size, resident;
    if (sscanf(text, "%lu %lu", &size, &resident) != 2)
        return 0;
    return (uint32_t)(resident * (unsigned long)sysconf(_SC_PAGESIZE) / 1024);
}

static void put_frame(struct buf *out, uint16_t type, uint64_t id, int code,
                      uint32_t rss, const void *data, size_t len)
{
    struct frame f = {.id = id, .len = (uint32_t)len, .type = type,
                      .code = code, .rss_kib = rss};
    static const char zeros[8];
    buf_append(out, &f, sizeof f);
    buf_append(out, data, len);
    buf_append(out, zeros, FRAME_PAD(len) - len);
}

/* Writes out everything, blocking. Exits when the host is gone. */
static void flush_all(struct buf *out, int fd)
{
    while (buf_avail(out) > 0) {
        ssize_t n = write(fd, buf_head(out), buf_avail(out));
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0); /* the host closed our socket: nobody to answer */
        buf_consume(out, (size_t)n);
    }
}

struct child {
    const struct child_params *p;
    void *state;
    struct buf in, out;
    struct fdpass_queue fds; /* memfds come with their tasks' frames */
    uint64_t in_pos;         /* stream offset of the head of `in` */
    int statm;
    double last_flush;
    double clock; /* the latest clock reading, 0 once stale: it is taken
                   * again after anything that may wait (a read, a
                   * flush), so one reading per task serves as the end
                   * of one task and the start of the next */
    size_t last_result; /* offset of the newest result header + 1, or 0 */
    size_t staged;      /* bytes of `out` copied to the staging area */
    int must_flush;     /* a result could not be staged: send it now */
    uint32_t poll_us;   /* busy_poll of the last task (worker_wire.h) */
};

static struct shm_header *arena_header(void)
{
    return (struct shm_header *)arena.base;
}

/* Names the task the worker runs (0: none) for the host to read. */
static void announce(uint64_t id)
{
    if (arena.base != NULL)
        atomic_store_explicit(&arena_header()->running, id,
                              memory_order_release);
}

/* Copies the result just finished, out[header..len), to the staging area,
 * where the host finds it should the worker die before sending it. A
 * result that does not fit, or a worker without an arena, sends at once. */
static void stage_result(struct child *c, size_t header)
{
    size_t n = c->out.len - header;
    if (arena.base == NULL || c->staged + n > SHM_STAGE_SIZE) {
        c->must_flush = 1;
        return;
    }
    memcpy(SHM_STAGE(arena.base) + c->staged, c->out.data + header, n);
    c->staged += n;
    if (c->staged > arena.stage_touched)
        arena.stage_touched = c->staged;
    atomic_store_explicit(&arena_header()->staged, (uint32_t)c->staged,
                          memory_order_release);
}

/* Bytes a buffer keeps once empty: one grown for a large payload is given
 * back, so that it does not count as the worker's memory from then on. */
#define BUF_KEEP (256 * 1024)

static void trim(struct buf *b)
{
    if (buf_avail(b) == 0 && b->cap > BUF_KEEP)
        buf_free(b);
}

/* Sends every held result; the staging area is empty after. */
static void send_held(struct child *c)
{
    flush_all(&c->out, CHILD_FD);
    trim(&c->out);
    c->staged = 0;
    c->must_flush = 0;
    if (arena.base != NULL) {
        atomic_store_explicit(&arena_header()->staged, 0,
                              memory_order_release);
        announce(0);
    }
}

/* Offsets into `out` stay valid between flushes: nothing is consumed from
 * it until flush_all() empties it. */
static void stamp_rss(struct child *c);

static void child_exit(struct child *c)
{
    stamp_rss(c);
    send_held(c);
    if (c->p->plugin->desc.fini != NULL)
        c->p->plugin->desc.fini(c->state);
    fflush(NULL);
    _exit(0);
}

/* Ends an output left in the ring: the frame carries a reference. */
static void seal_arena(struct child *c, th_task *task)
{
    struct frame_shm ref = {.pos = task->apos, .len = task->alen};
    buf_append(&c->out, &ref, sizeof ref);
    arena.out_head = SHM_ALIGN(task->apos + task->alen);
    uint64_t end = task->apos % SHM_RING + task->alen;
    if (end > arena.out_touched)
        arena.out_touched = end;
}

/* Whether the host cancelled task `id` before it started. */
static int skipped(uint64_t id)
{
    if (arena.base == NULL)
        return 0;
    struct shm_header *h = (struct shm_header *)arena.base;
    if (atomic_load_explicit(&h->cancel_next, memory_order_acquire) == 0)
        return 0; /* no task of this worker was ever cancelled */
    for (int i = 0; i < SHM_CANCEL_SLOTS; i++)
        if (atomic_load_explicit(&h->cancelled[i], memory_order_acquire) == id)
            return 1;
    return 0;
}

/* The time now, or the latest reading while nothing waited since. */
static double clock_of(const struct child *c)
{
    return c->clock > 0 ? c->clock : now_s();
}

static void run_task(struct child *c, const struct frame *f, const char *input,
                     size_t len, struct pmap *pm, size_t out_off)
{
    const struct plugin *pl = c->p->plugin;
    size_t header = c->out.len;
    struct frame *hdr = buf_extend(&c->out, sizeof *hdr);
    if (hdr == NULL)
        _exit(72);
    static int seq;
    seq = seq == INT_MAX ? 1 : seq + 1;
    struct th_task task = {
        .id = f->id, .seq = seq, .out = &c->out, .header = header, .pm = pm,
        .in_pm = pm != NULL && pm->writable && out_off > 0,
        .pm_off = out_off};
    int code;
    double start = clock_of(c);
    progress.held = 0;
    progress.sent = 0;
    if (input == NULL) {
        code = th_task_fail(&task, TH_ENOMEM,
                            "the task's input memfd cannot be mapped");
    } else if (f->aux >= pl->ntasks) {
        code = th_task_fail(&task, TH_ENOENT, "no task number %u", f->aux);
    } else if (skipped(f->id)) {
        code = th_task_fail(&task, TH_ECANCELED, "cancelled before it started");
    } else {
        const th_task_info *def = &pl->tasks[f->aux];
        task.name = def->name;
        running_seq = task.seq;
        code = def->run(c->state, &task, input, len);
        running_seq = 0;
        if (code >= 0)
            code = 0;
        else if (!task.failed)
            th_task_fail(&task, code, "%s", th_strerror(code));
    }
    c->clock = now_s();
    double run = c->clock - start;
    if (progress.held) /* the latest report, ahead of the result */
        progress_send(f->id);
    int shm = task.in_arena;
    if (shm)
        seal_arena(c, &task);
    if (task.in_pm) { /* the output is in the memfd: say where */
        struct frame_shm ref = {.pos = task.pm_off, .len = task.pm_len};
        buf_append(&c->out, &ref, sizeof ref);
    }
    /* The buffer may have moved while the plugin wrote: find it again. */
    hdr = (struct frame *)(c->out.data + header);
    memset(hdr, 0, sizeof *hdr);
    hdr->aux = shm ? FRAME_F_SHM : task.in_pm ? FRAME_F_FD : 0;
    hdr->id = f->id;
    hdr->type = FRAME_RESULT;
    hdr->code = code;
    hdr->len = (uint32_t)(c->out.len - header - sizeof *hdr);
    static const char zeros[8];
    buf_append(&c->out, zeros, FRAME_PAD(hdr->len) - hdr->len);
    hdr = (struct frame *)(c->out.data + header);
    hdr->run_us = run >= 4000.0 ? UINT32_MAX : (uint32_t)(run * 1e6);
    c->last_result = header + 1;
}

/* Measures RSS once per batch, into the batch's newest result: the host
 * checks the soft limit on it, after the task that grew the worker. */
static void stamp_rss(struct child *c)
{
    if (c->statm < 0 || c->last_result == 0)
        return;
    struct frame *hdr = (struct frame *)(c->out.data + c->last_result - 1);
    uint32_t rss = child_statm_kib(c->statm), shared = arena_kib();
    hdr->rss_kib = rss > shared ? rss - shared : 1;
    hdr->arena_kib = shared;
}

/* Runs a task whose input is in a memfd: one that came with its frame,
 * or one the worker was given before (worker_wire.h). */
static void start_fd_task(struct child *c, const struct frame *f,
                          const char *payload)
{
    struct frame_fd ref;
    if (f->len != sizeof ref)
        _exit(73); /* cannot happen from our host */
    memcpy(&ref, payload, sizeof ref);
    int fd = ref.attached ? fdpass_take(&c->fds, c->in_pos) : -1;
    if ((ref.attached && fd == -1) || ref.len > FRAME_MAX_PAYLOAD ||
        (ref.slot >= FD_SLOTS && ref.slot != FD_SLOT_TEMP) ||
        (ref.out_off > 0 && ref.out_off < ref.len))
        _exit(73);
    size_t want = fd_span(ref.len, ref.out_off);
    struct pmap *pm = pmap_get(ref.slot, fd, ref.len, want);
    if (pm == NULL) {
        run_task(c, f, NULL, 0, NULL, 0); /* answered failed */
        return;
    }
    run_task(c, f, ref.len ? pm->map : "", ref.len, pm, ref.out_off);
    pmap_done(pm);
}

/* Runs a task whose input is in the frame or, by reference, in the ring
 * or in a memfd. */
static void start_task(struct child *c, const struct frame *f,
                       const char *payload)
{
    if (f->code & FRAME_F_FD) {
        start_fd_task(c, f, payload);
        return;
    }
    if (!(f->code & FRAME_F_SHM)) {
        run_task(c, f, payload, f->len, NULL, 0);
        return;
    }
    struct frame_shm ref;
    memcpy(&ref, payload, sizeof ref);
    uint64_t off = ref.pos % SHM_RING;
    if (arena.base == NULL || f->len != sizeof ref || ref.len > SHM_RING ||
        off + ref.len > SHM_RING)
        _exit(73); /* cannot happen from our host */
    if (off + ref.len > arena.in_touched)
        arena.in_touched = off + ref.len;
    run_task(c, f, SHM_IN(arena.base) + off, (size_t)ref.len, NULL, 0);
}

/* Returns the next complete frame in c->in, or NULL. */
static const struct frame *next_frame(struct child *c)
{
    if (buf_avail(&c->in) < sizeof(struct frame))
        return NULL;
    const struct frame *f = (const struct frame *)buf_head(&c->in);
    if (f->len > FRAME_MAX_PAYLOAD)
        _exit(73); /* cannot happen from our host */
    if (buf_avail(&c->in) < sizeof *f + FRAME_PAD(f->len))
        return NULL;
    return f;
}

static void maybe_flush(struct child *c)
{
    double now = clock_of(c);
    if (c->must_flush || next_frame(c) == NULL ||
        buf_avail(&c->out) >= FLUSH_BYTES ||
        now - c->last_flush >= FLUSH_AFTER) {
        stamp_rss(c);
        c->last_result = 0;
        send_held(c);
        c->last_flush = now;
        c->clock = 0;
    }
}

/* Busy polling (the pool's busy_poll): once results are sent, polls the
 * socket without sleeping, yielding the CPU between polls, until the next
 * task comes or poll_us have passed since the flush; the read that
 * follows sleeps as usual. A SIGTERM ends it at once. */
static void poll_input(const struct child *c)
{
    if (c->poll_us == 0 || buf_avail(&c->out) > 0)
        return;
    double end = c->last_flush + c->poll_us / 1e6;
    struct pollfd p = {.fd = CHILD_FD, .events = POLLIN};
    while (!child_term && now_s() < end && poll(&p, 1, 0) == 0)
        sched_yield();
}

static void read_more(struct child *c)
{
    size_t room = 64 * 1024;
    if (buf_avail(&c->in) >= sizeof(struct frame)) {
        const struct frame *f = (const struct frame *)buf_head(&c->in);
        size_t need = sizeof *f + FRAME_PAD(f->len) - buf_avail(&c->in);
        if (need > room)
            room = need;
    }
    c->clock = 0;
    poll_input(c);
    if (buf_reserve(&c->in, room) < 0)
        _exit(72);
    ssize_t n = fdpass_recv_flags(CHILD_FD, c->in.data + c->in.len,
                                  c->in.cap - c->in.len, &c->fds,
                                  c->in_pos + buf_avail(&c->in), 0);
    if (n > 0)
        c->in.len += (size_t)n;
    if (n == 0)
        child_exit(c); /* the host closed our socket: stop */
    if (n == -1 && errno != EINTR && errno != EAGAIN)
        child_exit(c);
}

__attribute__((noreturn)) static void serve(struct child *c)
{
    for (;;) {
        if (child_term)
            child_exit(c);
        const struct frame *f = next_frame(c);
        if (f == NULL) {
            read_more(c);
            continue;
        }
        struct frame copy = *f;
        const char *input = buf_head(&c->in) + sizeof *f;
        if (copy.type == FRAME_STOP)
            child_exit(c);
        if (copy.type == FRAME_TASK) {
            size_t header = c->out.len;
            c->poll_us = copy.run_us;
            announce(copy.id);
            start_task(c, &copy, input);
            stage_result(c, header);
            /* Unstaged, it is still running as far as a crash goes, until
             * the result is sent. */
            if (!c->must_flush)
                announce(0);
        }
        buf_consume(&c->in, sizeof copy + FRAME_PAD(copy.len));
        c->in_pos += sizeof copy + FRAME_PAD(copy.len);
        trim(&c->in);
        maybe_flush(c);
    }
}

void child_main(const struct child_params *p)
{
    reset_signals();
    /* A name of its own, so that `pkill taskhostd` means the host only. */
    char name[16];
    snprintf(name, sizeof name, "th:%s", p->pool);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    setup_fds(p->fd);
    log_set_tag(p->pool);
    apply_limits(p);
    /* Only now: a change of user or group clears the parent-death signal.
     * A host that died before it was set is noticed by the parent pid. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != p->host_pid)
        _exit(0);
    /* What a task orphans (setsid, double fork) stays below this worker
     * while it lives, and goes to the host, which ends it, when it exits. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    struct child c = {.p = p, .statm = -1};
    for (size_t i = 0; i < FD_SLOTS; i++)
        pmaps.v[i].fd = -1;
    arena.base = p->arena;
    if (p->measure_rss)
        c.statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    int code = 0;
    if (p->plugin->desc.init != NULL)
        code = p->plugin->desc.init(p->settings, &c.state);
    if (code < 0) {
        const char *why = log_last_error();
        char msg[768];
        snprintf(msg, sizeof msg, "init failed: %s%s%s", th_strerror(code),
                 *why ? ": " : "", why);
        put_frame(&c.out, FRAME_INIT_FAILED, 0, code, 0, msg, strlen(msg));
        flush_all(&c.out, CHILD_FD);
        _exit(1);
    }
    int statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    put_frame(&c.out, FRAME_READY, 0, 0, child_statm_kib(statm), NULL, 0);
    if (statm != c.statm && statm >= 0)
        close(statm);
    flush_all(&c.out, CHILD_FD);
    c.last_flush = now_s();
    serve(&c);
}
