/* pool.c - the pool (engine layer): dispatch, sizing, retirement, worker
 * states, and the answers of hard cases.
 *
 * Invariants:
 * - A task is in exactly one place: the queue, a worker's in-flight list,
 *   or answered. When the host kills a worker, the task it is running
 *   (worker_running(), not always the oldest: results may be held) is
 *   answered there and then, and stays on the list, answered, until the
 *   worker is gone. When a worker is gone, its in-flight tasks are
 *   settled: results it held are delivered first (worker.c), then the task
 *   it died running is answered crashed, and the ones it never started go
 *   back to the head of the queue, to run once, elsewhere.
 * - Only IDLE and BUSY workers take tasks; STARTING ones once READY;
 *   STOPPING ones never.
 * - Every answer goes through the host's answer queue (host_answer()):
 *   callbacks run later, from the after-hook, so no state change here is
 *   ever interrupted by user code, and none needs to guard against it.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "account.h"
#include "worker_wire.h"
#include "host.h"
#include "log.h"
#include "plugin.h"
#include "pool.h"
#include "settings.h"
#include "spawner.h"

#define container_of(p, type, member) \
    ((type *)((char *)(p) - offsetof(type, member)))

/* Seconds a worker's init() may take before the worker is killed, when
 * the pool's init_timeout is 0. */
#define INIT_TIMEOUT_DEFAULT 30.0

#ifdef NDEBUG
#warning "built with NDEBUG: the pool's invariants are not checked"
#endif
#define START_FAILURES_MAX 5  /* failed starts in a row before failing */
#define EARLY_DEATH 1.0       /* seconds: dying sooner counts as early */
#define EARLY_DEATHS_FREE 3   /* early deaths in a row before backing off */
#define BACKOFF_FIRST 0.1     /* seconds, doubled per failure */
#define BACKOFF_MAX 10.0
#define PIPELINE_MAX 64       /* tasks in flight per worker, short tasks */
#define MEM_FAST 0.01         /* seconds between samples while one grows */
#define MEM_CALM 0.1          /* at most, while busy (or the interval) */
#define MEM_GROWTH 1024       /* KiB since the last sample: growing */

static void on_idle_timer(struct loop_timer *t);
static void on_run_timer(struct loop_timer *t);
static void on_queue_timer(struct loop_timer *t);
static void on_backoff(struct loop_timer *t);
static void on_mem_timer(struct loop_timer *t);
static void back_off(struct pool *p, int step, int count, const char *what);
static void answer_crashed(struct pool *p, struct worker *w, struct task *t,
                           const char *how);

static struct loop *loop_of(const struct pool *p)
{
    return p->host->loop;
}

static double mib(uint64_t kib)
{
    return (double)kib / 1024.0;
}

/* ---- creation ---- */

/* Resolves the pool's user/group; -1 keeps the host's. A user brings its
 * primary group; a uid without a passwd entry, the group of the same
 * number, so that a worker never keeps the host's group by accident. */
/* A user or group that vanished since the config was checked: the pool
 * must not run its workers as the host's (often root) instead. */
static void fail_closed(struct pool *p, const char *what, const char *name)
{
    char why[256];
    snprintf(why, sizeof why, "pool '%s' failed: its %s '%s' does not exist",
             p->cfg.name, what, name);
    log_error("%s", why);
    free(p->fail_reason);
    p->fail_reason = strdup(why);
    p->failed = 1;
}

static void resolve_ids(struct pool *p)
{
    unsigned uid, gid;

    p->uid = p->gid = -1;
    if (p->cfg.user != NULL) {
        if (account_user(p->cfg.user, &uid, &gid) == 0) {
            p->uid = (int)uid;
            p->gid = (int)gid;
        } else {
            fail_closed(p, "user", p->cfg.user);
        }
    }
    if (p->cfg.group != NULL) {
        if (account_group(p->cfg.group, &gid) == 0)
            p->gid = (int)gid;
        else
            fail_closed(p, "group", p->cfg.group);
    }
    /* Only root can switch; as anyone else the ids stay, and the operator
     * is told that the workers do not run as the config says. */
    if (geteuid() == 0)
        return;
    if ((p->uid >= 0 && (uid_t)p->uid != geteuid()) ||
        (p->gid >= 0 && (gid_t)p->gid != getegid()))
        log_warn("pool %s: workers run as uid %u gid %u, not as the "
                 "configured user/group: taskhostd is not root",
                 p->cfg.name, (unsigned)geteuid(), (unsigned)getegid());
    p->uid = p->gid = -1;
}

struct pool *pool_new(struct th_host *host, const struct pool_cfg *cfg,
                      struct plugin *plugin)
{
    struct pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    if (pool_cfg_copy(&p->cfg, cfg) < 0) {
        pool_cfg_clear(&p->cfg);
        free(p);
        return NULL;
    }
    p->host = host;
    p->plugin = plugin;
    plugin_ref(plugin);
    p->backoff.cb = on_backoff;
    p->mem_timer.cb = on_mem_timer;
    p->avg_run_us = 1e6; /* unknown: assume slow, do not pipeline yet */
    p->seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    resolve_ids(p);
    host_mark_pool(host, p);
    return p;
}

void pool_free(struct pool *p)
{
    if (p == NULL)
        return;
    loop_timer_stop(loop_of(p), &p->backoff);
    loop_timer_stop(loop_of(p), &p->mem_timer);
    spawner_close(p->spawner);
    stats_free(&p->stats);
    plugin_unref(p->plugin);
    pool_cfg_clear(&p->cfg);
    free(p->fail_reason);
    free(p->init_error);
    free(p);
}

/* ---- worker states ---- */

static int *count_of(struct pool *p, int state)
{
    switch (state) {
    case W_STARTING:
        return &p->nstarting;
    case W_IDLE:
        return &p->nidle;
    case W_BUSY:
        return &p->nbusy;
    default:
        return &p->nstopping;
    }
}

static void idle_push(struct pool *p, struct worker *w)
{
    w->iprev = NULL;
    w->inext = p->idle;
    if (p->idle != NULL)
        p->idle->iprev = w;
    p->idle = w;
}

static void idle_remove(struct pool *p, struct worker *w)
{
    if (w->iprev != NULL)
        w->iprev->inext = w->inext;
    else
        p->idle = w->inext;
    if (w->inext != NULL)
        w->inext->iprev = w->iprev;
    w->inext = w->iprev = NULL;
}

/* Whether a worker may go from state `from` to `to`: STARTING to IDLE
 * (ready), IDLE and BUSY to each other, any to STOPPING, never back. */
static int legal_move(int from, int to)
{
    switch (from) {
    case W_STARTING:
        return to == W_IDLE || to == W_STOPPING;
    case W_IDLE:
        return to == W_BUSY || to == W_STOPPING;
    case W_BUSY:
        return to == W_IDLE || to == W_STOPPING;
    default:
        return 0;
    }
}

/* The counts add up to the workers listed. */
static int counts_ok(const struct pool *p)
{
    return p->nstarting + p->nidle + p->nbusy + p->nstopping == p->nworkers;
}

/* The one place a worker's state changes, keeping the pool's counts and
 * idle stack: a worker is on the idle stack exactly when IDLE. */
static void set_state(struct worker *w, int state)
{
    struct pool *p = w->pool;
    if (w->state == state)
        return;
    assert(legal_move(w->state, state));
    assert((w->state == W_IDLE) == (p->idle == w || w->iprev != NULL));
    (*count_of(p, w->state))--;
    (*count_of(p, state))++;
    if (w->state == W_IDLE) {
        idle_remove(p, w);
        loop_timer_stop(loop_of(p), &w->idle_timer);
    }
    w->state = state;
    assert(counts_ok(p));
    if (state != W_IDLE)
        return;
    idle_push(p, w);
    w->idle_since = loop_now(loop_of(p));
    if (p->cfg.idle_timeout > 0) {
        w->idle_timer.cb = on_idle_timer;
        loop_timer_start(loop_of(p), &w->idle_timer, p->cfg.idle_timeout);
    }
}

/* Asks w to leave after what it holds. fini() gets a bounded time; a busy
 * worker first finishes its task, which its own run timer bounds (without
 * a task_timeout its wait is unbounded, until a shutdown hurries it). */
static void stop_worker(struct pool *p, struct worker *w, int reason)
{
    if (w->state == W_STOPPING)
        return;
    set_state(w, W_STOPPING);
    double limit = 0;
    if (w->inflight.n == 0 || p->cfg.task_timeout > 0) {
        double grace = p->cfg.kill_grace > 2.0 ? p->cfg.kill_grace : 2.0;
        limit = (w->inflight.n ? p->cfg.task_timeout : 0) + grace + 3.0;
    }
    worker_stop(w, reason, limit);
}

/* Signals w (SIGTERM, then SIGKILL after kill_grace; or SIGKILL). Its
 * task's run timer stops: what it runs now is settled by the kill. */
static void kill_worker(struct pool *p, struct worker *w, int reason, int sig)
{
    set_state(w, W_STOPPING);
    loop_timer_stop(loop_of(p), &w->run_timer);
    worker_kill(w, reason, sig, p->cfg.kill_grace);
}

void pool_worker_overdue(struct worker *w)
{
    struct pool *p = w->pool;
    if (w->state == W_STARTING) {
        log_warn("pool %s: worker %d did not finish init in time",
                 p->cfg.name, w->pid);
        kill_worker(p, w, RETIRE_INIT, SIGKILL);
        return;
    }
    log_warn("pool %s: worker %d did not exit in time, killing it",
             p->cfg.name, w->pid);
    kill_worker(p, w, w->reason, SIGKILL);
}

void pool_worker_broken(struct worker *w)
{
    kill_worker(w->pool, w, RETIRE_CRASH, SIGKILL);
}

static int live_workers(const struct pool *p)
{
    return p->nstarting + p->nidle + p->nbusy;
}

static void link_worker(struct pool *p, struct worker *w)
{
    assert(w->prev == NULL && w->next == NULL && p->workers != w);
    w->state = W_STARTING;
    w->next = p->workers;
    w->prev = NULL;
    if (p->workers != NULL)
        p->workers->prev = w;
    p->workers = w;
    p->nworkers++;
    p->nstarting++;
}

static void unlink_worker(struct pool *p, struct worker *w)
{
    if (w->state == W_IDLE)
        idle_remove(p, w);
    (*count_of(p, w->state))--;
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        p->workers = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    p->nworkers--;
}

static void set_max_tasks(struct pool *p, struct worker *w)
{
    long n = p->cfg.max_tasks_per_worker;
    if (n <= 0)
        return;
    /* Up to 10% more, so that a pool's workers do not all leave at once. */
    long spread = n / 10;
    w->max_tasks = (uint64_t)n;
    if (spread > 0)
        w->max_tasks += (uint64_t)(rand_r(&p->seed) % (spread + 1));
}

int pool_owns_pid(const struct pool *p, pid_t pid)
{
    if (p->spawner != NULL && p->spawner->pid == pid)
        return 1;
    for (const struct worker *w = p->workers; w != NULL; w = w->next)
        if (w->pid == pid && !w->reaped)
            return 1;
    return 0;
}

/* Starts a worker. Returns 0, or -1 when the system refused (no process
 * or descriptor to spare, logged): the pool then retries after a back-off,
 * however long resources take to return, without failing. */
static int spawn(struct pool *p)
{
    struct spawner *sp = pool_spawner(p);
    struct worker_start ws = {
        .owner = p,
        .host = p->host,
        .spawner = sp,
        .name = p->cfg.name,
        .init_limit = p->cfg.init_timeout > 0 ? p->cfg.init_timeout
                                              : INIT_TIMEOUT_DEFAULT,
    };
    struct worker *w = sp != NULL ? worker_spawn(&ws) : NULL;
    if (w == NULL) {
        p->spawn_errors++;
        back_off(p, p->spawn_errors, p->spawn_errors,
                 "worker starts refused by the system");
        return -1;
    }
    p->spawn_errors = 0;
    link_worker(p, w);
    set_max_tasks(p, w);
    p->stats.spawned++;
    stats_worker_started(&p->host->events, p->cfg.name, (int)w->pid);
    return 0;
}

/* Starts workers: min_workers always (unless draining), and more, up to
 * max_workers, while tasks wait that no idle or starting worker covers. */
static void maintain(struct pool *p)
{
    if (p->failed || loop_timer_armed(&p->backoff))
        return;
    int live = live_workers(p);
    int want = p->draining ? 0 : p->cfg.min_workers;
    long waiting = (long)queue_len(&p->queue) - p->nidle - p->nstarting;
    if (waiting > 0) {
        long more = live + waiting;
        want = (int)(more > p->cfg.max_workers ? p->cfg.max_workers : more);
        if (want < 1)
            want = 1;
    }
    for (int i = live; i < want; i++)
        if (spawn(p) < 0)
            break;
}

/* ---- dispatch ---- */

/* How many tasks a worker may hold: short tasks travel in batches, which
 * saves a round trip per task; long ones go one at a time, so that no task
 * waits behind another while a worker is free. */
static size_t pipeline_depth(const struct pool *p)
{
    if (p->avg_run_us < 50)
        return PIPELINE_MAX;
    if (p->avg_run_us < 500)
        return 8;
    return 1;
}

static void arm_run_timer(struct pool *p, struct worker *w)
{
    struct task *t = w->inflight.head;
    w->head_since = loop_now(loop_of(p));
    if (t == NULL || t->task_timeout <= 0) {
        loop_timer_stop(loop_of(p), &w->run_timer);
        return;
    }
    if (!t->answered) /* an answer's times are fixed (task.h) */
        t->started = w->head_since;
    w->run_timer.cb = on_run_timer;
    loop_timer_start(loop_of(p), &w->run_timer, t->task_timeout);
}

/* Samples the busy workers' memory: MEM_FAST after work starts and while
 * a worker grows, then less often, up to MEM_CALM or memory_check_interval
 * when smaller. A worker allocating fast is thus seen within MEM_FAST of
 * passing the hard limit once its growth is noticed (docs/config.md). */
static void arm_mem_timer(struct pool *p)
{
    double most = p->cfg.memory_check_interval;
    if (loop_timer_armed(&p->mem_timer) || most <= 0)
        return;
    if (p->cfg.memory_hard_limit == 0 && p->cfg.memory_budget == 0)
        return;
    if (most > MEM_CALM)
        most = MEM_CALM;
    double period = p->mem_period > 0 ? p->mem_period : MEM_FAST;
    loop_timer_start(loop_of(p), &p->mem_timer, period < most ? period : most);
}

/* With busy_poll, the host polls for what comes next instead of going
 * to sleep: a worker's answer after a task was sent, a client's next
 * task after an answer. */
static void poll_briefly(struct pool *p)
{
    if (p->cfg.busy_poll > 0)
        loop_poll_until(loop_of(p), loop_clock() + p->cfg.busy_poll);
}

static void start_task(struct pool *p, struct worker *w, struct task *t)
{
    /* Off the queue, on no worker, not answered: in one place only. */
    assert(t->worker == NULL && !t->answered && t->pool == p);
    double now = loop_now(loop_of(p));
    loop_timer_stop(loop_of(p), &t->qtimer);
    stats_wait(&p->stats, now, stats_us(now - t->submitted));
    int first = w->inflight.n == 0;
    t->state = TH_RUNNING;
    t->started = now;
    worker_send(w, t, (uint32_t)(p->cfg.busy_poll * 1e6));
    poll_briefly(p);
    if (first)
        arm_run_timer(p, w);
    if (w->state == W_IDLE)
        set_state(w, W_BUSY);
    arm_mem_timer(p);
}

static int too_old(const struct pool *p, const struct worker *w)
{
    return p->cfg.max_worker_age > 0 &&
           loop_now(loop_of(p)) - w->started >= p->cfg.max_worker_age;
}

/* The worker for the next task: the most recently idle one, else the
 * least loaded busy one that may take more. NULL when none. */
static struct worker *pick(struct pool *p, size_t depth)
{
    while (p->idle != NULL) {
        struct worker *w = p->idle;
        if (!too_old(p, w))
            return w;
        stop_worker(p, w, RETIRE_MAX_AGE);
    }
    if (depth <= 1)
        return NULL;
    struct worker *best = NULL;
    for (struct worker *w = p->workers; w != NULL; w = w->next) {
        if (w->state != W_BUSY || w->inflight.n >= depth)
            continue;
        if (best == NULL || w->inflight.n < best->inflight.n)
            best = w;
    }
    return best;
}

void pool_dispatch(struct pool *p)
{
    size_t depth = pipeline_depth(p);
    while (queue_len(&p->queue) > 0) {
        struct worker *w = pick(p, depth);
        if (w == NULL)
            break;
        size_t ready = (size_t)(p->nidle + p->nbusy);
        size_t share = (queue_len(&p->queue) + ready - 1) / ready;
        if (share > depth)
            share = depth;
        if (share > depth - w->inflight.n)
            share = depth - w->inflight.n;
        for (size_t i = 0; i < share && queue_len(&p->queue) > 0; i++)
            start_task(p, w, queue_pop(&p->queue));
    }
    stats_depth(&p->stats, loop_now(loop_of(p)), queue_len(&p->queue));
    maintain(p);
}

/* ---- submit, cancel ---- */

static void reject_later(struct pool *p, struct task *t, int code,
                         const char *why)
{
    p->stats.finished[TH_STATE_REJECTED]++;
    host_answerf(p->host, t, TH_STATE_REJECTED, code, "%s", why);
}

/* Whether one more task of `len` input bytes overflows the queue. */
static int queue_full(const struct pool *p, size_t len)
{
    if (p->cfg.max_queue > 0 && queue_len(&p->queue) >= (size_t)p->cfg.max_queue)
        return 1;
    return p->cfg.max_queue_bytes > 0 &&
           p->queue.bytes + len > p->cfg.max_queue_bytes;
}

static int overflow(struct pool *p, struct task *t)
{
    char why[200];
    if (p->cfg.max_queue_bytes > 0 &&
        p->queue.bytes + task_len(t) > p->cfg.max_queue_bytes)
        snprintf(why, sizeof why, "queue of pool '%s' is full (%llu of "
                 "max_queue_bytes %llu input bytes)", p->cfg.name,
                 (unsigned long long)p->queue.bytes,
                 (unsigned long long)p->cfg.max_queue_bytes);
    else
        snprintf(why, sizeof why, "queue of pool '%s' is full (%ld tasks)",
                 p->cfg.name, p->cfg.max_queue);
    if (p->cfg.overflow == OVERFLOW_BLOCK)
        return TH_EBUSY;
    if (p->cfg.overflow == OVERFLOW_REJECT) {
        reject_later(p, t, TH_EFULL, why);
        return 1;
    }
    struct task *old = queue_oldest_lowest(&p->queue);
    queue_remove(&p->queue, old);
    loop_timer_stop(loop_of(p), &old->qtimer);
    char dropped[256];
    snprintf(dropped, sizeof dropped, "dropped for a newer task: %s", why);
    reject_later(p, old, TH_EFULL, dropped);
    return 0;
}

int pool_submit(struct pool *p, struct task *t)
{
    t->pool = p;
    if (p->failed) {
        reject_later(p, t, TH_EFAILED, p->fail_reason);
        return 0;
    }
    if (p->draining) {
        reject_later(p, t, TH_ECLOSED, "the pool is shutting down");
        return 0;
    }
    /* drop-oldest may have to drop several to make room in bytes */
    while (queue_full(p, task_len(t))) {
        if (queue_len(&p->queue) == 0) {
            char why[160];
            snprintf(why, sizeof why, "input of %zu bytes is over the "
                     "max_queue_bytes of pool '%s'", task_len(t),
                     p->cfg.name);
            reject_later(p, t, TH_ETOOBIG, why);
            return 0;
        }
        int r = overflow(p, t);
        if (r != 0)
            return r < 0 ? r : 0;
    }
    t->state = TH_QUEUED;
    queue_push(&p->queue, t);
    p->stats.submitted++;
    stats_depth(&p->stats, loop_now(loop_of(p)), queue_len(&p->queue));
    if (t->queue_timeout > 0) {
        t->qtimer.cb = on_queue_timer;
        loop_timer_at(loop_of(p), &t->qtimer, t->submitted + t->queue_timeout);
    }
    host_mark_pool(p->host, p);
    return 0;
}

void pool_take(struct pool *p, struct task *t)
{
    t->pool = p;
    t->state = TH_QUEUED;
    queue_push(&p->queue, t);
    p->stats.submitted++;
    if (t->queue_timeout > 0) {
        t->qtimer.cb = on_queue_timer;
        loop_timer_at(loop_of(p), &t->qtimer, t->submitted + t->queue_timeout);
    }
    host_mark_pool(p->host, p);
}

size_t pool_depth(const struct pool *p)
{
    return pipeline_depth(p);
}

/* Takes every task off a worker that is gone: answered ones are released,
 * `culprit` (what it died running) is returned if unanswered, for the
 * caller to answer; the others never started and go back to the queue's
 * head, in order (or are cancelled, the pool being stopped by force). */
static struct task *settle_worker(struct pool *p, struct worker *w,
                                  struct task *culprit)
{
    struct task *t, *ret = NULL;
    while ((t = w->inflight.tail) != NULL) {
        task_list_remove(&w->inflight, t);
        t->worker = NULL;
        if (t->answered) {
            host_task_release(p->host, t);
        } else if (t == culprit) {
            ret = t;
        } else if (p->forced) {
            static const char why[] = "cancelled: the pool was stopped by force";
            p->stats.finished[TH_STATE_CANCELLED]++;
            host_answer(p->host, t, TH_STATE_CANCELLED, TH_ECANCELED, why,
                        sizeof why - 1);
        } else {
            t->state = TH_QUEUED;
            queue_push_front(&p->queue, t);
        }
    }
    return ret;
}

/* Kills w (SIGTERM, or SIGKILL) and returns `culprit`, the task it runs,
 * if still unanswered, for the caller to answer. The worker's other tasks
 * are settled when it is gone. */
static struct task *abort_worker(struct pool *p, struct worker *w,
                                 struct task *culprit, int reason, int sig)
{
    /* A task given time to stop (SIGTERM) is also named in the worker's
     * cancel slots: th_task_cancelled() answers for that task only. */
    if (sig == SIGTERM && culprit != NULL)
        worker_skip(w, culprit->id);
    kill_worker(p, w, reason, sig);
    host_mark_pool(p->host, p);
    return culprit != NULL && !culprit->answered ? culprit : NULL;
}

void pool_cancel(struct pool *p, struct task *t)
{
    p->stats.finished[TH_STATE_CANCELLED]++;
    struct worker *w = t->worker;
    if (w == NULL) {
        queue_remove(&p->queue, t);
        loop_timer_stop(loop_of(p), &t->qtimer);
    } else if (worker_running(w) == t) {
        log_info("pool %s: task %llu cancelled, stopping worker %d",
                 p->cfg.name, (unsigned long long)t->id, w->pid);
        abort_worker(p, w, t, RETIRE_KILLED, SIGTERM);
    } else {
        worker_skip(w, t->id);
    }
    /* A task sent but not started stays with its worker, which skips it
     * if it has not started it yet; its result is dropped either way,
     * since it is answered now. */
    host_answerf(p->host, t, TH_STATE_CANCELLED, TH_ECANCELED,
                      "cancelled");
}

/* ---- timers ---- */

static void on_queue_timer(struct loop_timer *timer)
{
    struct task *t = container_of(timer, struct task, qtimer);
    struct pool *p = t->pool;
    queue_remove(&p->queue, t);
    p->stats.finished[TH_STATE_TIMEOUT]++;
    char msg[128];
    int n = snprintf(msg, sizeof msg,
                     "waited longer than queue_timeout (%.3g s) for a worker",
                     t->queue_timeout);
    host_answer(p->host, t, TH_STATE_TIMEOUT, TH_ETIMEDOUT, msg, (size_t)n);
}

static void on_run_timer(struct loop_timer *timer)
{
    struct worker *w = container_of(timer, struct worker, run_timer);
    struct pool *p = w->pool;
    struct task *run = worker_running(w);
    if (run == NULL) {
        /* Between tasks: the head's result is on its way, and re-arms. */
        loop_timer_start(loop_of(p), &w->run_timer, 0.01);
        return;
    }
    if (run->task_timeout <= 0)
        return; /* a later task without a limit runs: no timer */
    double limit = run->task_timeout;
    if (loop_now(loop_of(p)) - w->head_since < limit) {
        /* A later task than the head runs: it gets its own full time. */
        loop_timer_at(loop_of(p), &w->run_timer, w->head_since + limit);
        return;
    }
    log_warn("pool %s: task ran longer than %.3g s, stopping worker %d",
             p->cfg.name, limit, w->pid);
    struct task *t = abort_worker(p, w, run, RETIRE_KILLED, SIGTERM);
    if (t == NULL)
        return;
    p->stats.finished[TH_STATE_TIMEOUT]++;
    stats_run(&p->stats, loop_now(loop_of(p)), stats_us(limit));
    char msg[128];
    int n = snprintf(msg, sizeof msg, "ran longer than task_timeout (%.3g s)",
                     limit);
    host_answer(p->host, t, TH_STATE_TIMEOUT, TH_ETIMEDOUT, msg, (size_t)n);
}

static void on_idle_timer(struct loop_timer *timer)
{
    struct worker *w = container_of(timer, struct worker, idle_timer);
    struct pool *p = w->pool;
    /* Only a worker that is still idle leaves: one just handed a task has
     * left the idle state, and that stopped this timer. */
    if (w->state != W_IDLE || live_workers(p) <= p->cfg.min_workers)
        return;
    log_info("pool %s: worker %d idle for %.3g s, stopping it", p->cfg.name,
             w->pid, p->cfg.idle_timeout);
    stop_worker(p, w, RETIRE_IDLE);
}

static void on_backoff(struct loop_timer *timer)
{
    struct pool *p = container_of(timer, struct pool, backoff);
    host_mark_pool(p->host, p);
}

/* Kills w, over the hard limit; `culprit`, the task that grew it (NULL:
 * none known), is answered `memory`. */
static void kill_for_memory(struct pool *p, struct worker *w,
                            struct task *culprit, uint32_t rss)
{
    log_warn("pool %s: worker %d RSS %.1f MiB above memory_hard_limit "
             "%.1f MiB, killing it",
             p->cfg.name, w->pid, mib(rss),
             (double)p->cfg.memory_hard_limit / 1048576.0);
    struct task *t = abort_worker(p, w, culprit, RETIRE_MEMORY_HARD, SIGKILL);
    if (t == NULL)
        return;
    p->stats.finished[TH_STATE_MEMORY]++;
    char msg[160];
    int n = snprintf(msg, sizeof msg,
                     "worker %d used %.1f MiB, above memory_hard_limit "
                     "(%.1f MiB)",
                     w->pid, mib(rss),
                     (double)p->cfg.memory_hard_limit / 1048576.0);
    host_answer(p->host, t, TH_STATE_MEMORY, TH_ENOMEM, msg, (size_t)n);
}

/* Recycles the largest idle worker while the pool's RSS is over budget. */
static void check_budget(struct pool *p, uint64_t total_kib)
{
    if (p->cfg.memory_budget == 0 || total_kib * 1024 <= p->cfg.memory_budget)
        return;
    /* A worker that has run no task is as small as its replacement
     * would be: recycling it gains nothing, and while a busy worker keeps
     * the pool over budget it would recycle every fresh one in turn. */
    struct worker *big = NULL;
    for (struct worker *w = p->idle; w != NULL; w = w->inext)
        if (w->tasks_done > 0 && (big == NULL || w->rss_kib > big->rss_kib))
            big = w;
    if (big == NULL)
        return;
    log_info("pool %s: RSS %.1f MiB above memory_budget, recycling worker "
             "%d (%.1f MiB)",
             p->cfg.name, mib(total_kib), big->pid, mib(big->rss_kib));
    stop_worker(p, big, RETIRE_MEMORY_BUDGET);
    host_mark_pool(p->host, p);
}

/* Whether w runs a task, so that its memory may grow: a busy worker, or
 * one stopping gracefully once its current task is done. */
static int runs_task(const struct worker *w)
{
    return w->state == W_BUSY ||
           (w->state == W_STOPPING && !w->killed && w->inflight.n > 0);
}

static void on_mem_timer(struct loop_timer *timer)
{
    struct pool *p = container_of(timer, struct pool, mem_timer);
    uint64_t total = 0;
    int running = 0, growing = 0;
    struct worker *next;
    for (struct worker *w = p->workers; w != NULL; w = next) {
        next = w->next;
        int runs = runs_task(w);
        if (!runs && w->state != W_IDLE)
            continue;
        if (runs) {
            uint32_t was = w->rss_kib;
            w->rss_kib = worker_read_rss(w);
            growing |= w->rss_kib > was + MEM_GROWTH;
            running = 1;
        }
        if (w->state != W_STOPPING)
            total += w->rss_kib;
        if (runs && p->cfg.memory_hard_limit > 0 &&
            (uint64_t)w->rss_kib * 1024 > p->cfg.memory_hard_limit)
            kill_for_memory(p, w, worker_running(w), w->rss_kib);
    }
    check_budget(p, total);
    p->mem_period = growing ? MEM_FAST : 2 * p->mem_period;
    if (running)
        arm_mem_timer(p);
    else
        p->mem_period = 0; /* idle: the next work starts at MEM_FAST */
}

/* ---- what workers tell ---- */

void pool_worker_ready(struct worker *w, uint32_t rss_kib)
{
    struct pool *p = w->pool;
    w->rss_kib = rss_kib;
    p->start_failures = 0;
    uint64_t soft = p->cfg.memory_soft_limit;
    if (soft > 0 && (uint64_t)rss_kib * 1024 > soft && !p->soft_limit_broken) {
        /* Recycling would only start another worker just as large. */
        log_error("pool %s: worker RSS after init (%.1f MiB) is already above "
                  "memory_soft_limit (%.1f MiB): the limit is ignored; raise it",
                  p->cfg.name, mib(rss_kib), (double)soft / 1048576.0);
        p->soft_limit_broken = 1;
    }
    set_state(w, W_IDLE);
    host_mark_pool(p->host, p);
    if (p->draining && queue_len(&p->queue) == 0)
        stop_worker(p, w, RETIRE_SHUTDOWN);
}

void pool_worker_init_failed(struct worker *w, const char *msg, size_t len)
{
    struct pool *p = w->pool;
    free(p->init_error);
    p->init_error = strndup(msg, len);
}

/* Why a worker that finished a task should leave, or RETIRE_NONE. */
static int recycle_reason(const struct pool *p, const struct worker *w)
{
    uint64_t rss = (uint64_t)w->rss_kib * 1024;
    if (p->cfg.memory_hard_limit > 0 && rss > p->cfg.memory_hard_limit)
        return RETIRE_MEMORY_HARD;
    if (p->cfg.memory_soft_limit > 0 && rss > p->cfg.memory_soft_limit &&
        !p->soft_limit_broken)
        return RETIRE_MEMORY_SOFT;
    if (w->max_tasks > 0 && w->tasks_done >= w->max_tasks)
        return RETIRE_MAX_TASKS;
    if (too_old(p, w))
        return RETIRE_MAX_AGE;
    return RETIRE_NONE;
}

static void after_result(struct pool *p, struct worker *w, uint32_t rss)
{
    if (rss != 0)
        w->rss_kib = rss;
    if (w->state == W_STOPPING)
        return;
    int reason = recycle_reason(p, w);
    if (reason != RETIRE_NONE) {
        log_info("pool %s: recycling worker %d (%s, RSS %.1f MiB, %llu tasks)",
                 p->cfg.name, w->pid, retire_reason_name(reason),
                 mib(w->rss_kib), (unsigned long long)w->tasks_done);
        stop_worker(p, w, reason);
    } else if (w->inflight.n == 0) {
        if (p->draining && queue_len(&p->queue) == 0)
            stop_worker(p, w, RETIRE_SHUTDOWN);
        else
            set_state(w, W_IDLE);
    }
    host_mark_pool(p->host, p);
}

/* Answers t with its worker's result, counted; the output is where
 * `where` says (pool_worker_result()). An output in the arena's ring or
 * in the task's memfd is handed out in place: the ring is given back to
 * the worker only after the delivery (worker.c), the arena unmapped only
 * after that (host_bury_worker()), and the memfd is the task's. */
static void answer_result(struct pool *p, struct task *t,
                          const struct frame *f, const char *payload,
                          int where)
{
    th_state st = f->code == 0 ? TH_STATE_OK : TH_STATE_ERROR;
    p->stats.finished[st]++;
    stats_run(&p->stats, loop_now(loop_of(p)), f->run_us);
    if (where == RESULT_FD)
        host_answer_fd(p->host, t, st, f->code, f->len);
    else if (where == RESULT_ARENA)
        host_answer_ref(p->host, t, st, f->code, payload, f->len);
    else
        host_answer(p->host, t, st, f->code, payload, f->len);
}

/* A result from a worker the host killed: a task it finished before it
 * was killed still gets its own result; its worker takes no more. */
static void killed_result(struct pool *p, struct worker *w,
                          const struct frame *f, const char *payload,
                          int where)
{
    struct task *t = w->inflight.head;
    if (t == NULL || t->id != f->id)
        return;
    task_list_remove(&w->inflight, t);
    t->worker = NULL;
    if (t->answered) {
        host_task_release(p->host, t);
        return;
    }
    answer_result(p, t, f, payload, where);
}

void pool_worker_result(struct worker *w, const struct frame *f,
                        const char *payload, int where)
{
    struct pool *p = w->pool;
    struct task *t = w->inflight.head;
    if (w->killed) {
        killed_result(p, w, f, payload, where);
        return;
    }
    if (t == NULL || t->id != f->id) {
        log_error("pool %s: worker %d answered a task it was not running",
                  p->cfg.name, w->pid);
        struct task *head = abort_worker(p, w, t, RETIRE_CRASH, SIGKILL);
        /* Not requeued: the task may be what broke its worker, and would
         * break every worker it went to. */
        if (head != NULL)
            answer_crashed(p, w, head, "broke the protocol");
        return;
    }
    if (p->cfg.memory_hard_limit > 0 &&
        (uint64_t)f->rss_kib * 1024 > p->cfg.memory_hard_limit) {
        /* It passed the hard limit running this task, even if it ended
         * before a sample saw it: the task is answered `memory`. */
        w->rss_kib = f->rss_kib;
        kill_for_memory(p, w, t, f->rss_kib);
        return;
    }
    task_list_remove(&w->inflight, t);
    t->worker = NULL;
    w->tasks_done++;
    p->avg_run_us = 0.9 * p->avg_run_us + 0.1 * (double)f->run_us;
    arm_run_timer(p, w);
    if (!t->answered) {
        answer_result(p, t, f, payload, where);
        poll_briefly(p);
    } else {
        host_task_release(p->host, t);
    }
    /* The callback may have cancelled the next task, killing w. */
    if (!w->killed)
        after_result(p, w, f->rss_kib);
}

static void reject_queue(struct pool *p)
{
    struct task *t;
    while ((t = queue_pop(&p->queue)) != NULL) {
        loop_timer_stop(loop_of(p), &t->qtimer);
        p->stats.finished[TH_STATE_REJECTED]++;
        host_answer(p->host, t, TH_STATE_REJECTED, TH_EFAILED, p->fail_reason,
                    strlen(p->fail_reason));
    }
}

/* The pool's plugin cannot be loaded for its workers any more (the file
 * changed or broke since it was checked): its tasks cannot run. */
static void fail_plugin(struct pool *p, const char *why)
{
    char reason[800];
    snprintf(reason, sizeof reason, "pool '%s' failed: plugin '%s': %s",
             p->cfg.name, p->plugin->name, why);
    log_error("%s", reason);
    free(p->fail_reason);
    p->fail_reason = strdup(reason);
    p->failed = 1;
    if (p->fail_reason != NULL)
        reject_queue(p);
}

/* A worker's exit as its spawner reported it; serial 0: the spawner
 * itself is gone, and its workers with it (their parent-death signal). */
static void on_spawner_exit(void *arg, uint64_t serial, int status)
{
    struct pool *p = arg;
    struct worker *next;
    if (serial != 0) {
        for (struct worker *w = p->workers; w != NULL; w = w->next)
            if (w->serial == serial && !w->reaped) {
                worker_reaped(w, status);
                return;
            }
        return;
    }
    log_warn("pool %s: its spawner (pid %d) is gone; its workers with it",
             p->cfg.name, (int)p->spawner->pid);
    struct spawner *sp = p->spawner;
    p->spawner = NULL;
    spawner_close(sp);
    for (struct worker *w = p->workers; w != NULL; w = next) {
        next = w->next;
        if (!w->reaped)
            worker_reaped(w, SIGKILL); /* a wait status: killed by SIGKILL */
    }
    host_reap_orphans(p->host);
}

struct spawner *pool_spawner(struct pool *p)
{
    if (p->spawner != NULL)
        return p->spawner;
    struct spawner_opts o = {
        .strict = p->host->cfg ? p->host->cfg->host.strict_permissions : 1,
        .path = p->plugin->path,
        .pool = p->cfg.name,
        .settings = p->cfg.settings,
        .uid = p->uid,
        .gid = p->gid,
        .measure_rss = p->cfg.memory_soft_limit > 0 ||
                       p->cfg.memory_hard_limit > 0 || p->cfg.memory_budget > 0,
        .rlimit_nofile = p->cfg.rlimit_nofile,
        .rlimit_core = p->cfg.rlimit_core,
        .address_space_limit = p->cfg.address_space_limit,
        .timeout = host_plugin_timeout(p->host->cfg),
    };
    struct plugin *now = NULL;
    char err[640];
    struct spawner *sp;
    int rc = spawner_start(spare_take(&p->host->spare), &o, p->plugin->name,
                           &sp, &now, err, sizeof err);
    if (rc == TH_EIO) {
        log_error("pool %s: cannot start its spawner: %s", p->cfg.name, err);
        return NULL;
    }
    if (rc < 0) {
        fail_plugin(p, err);
        return NULL;
    }
    int same = plugin_same_tasks(now, p->plugin);
    plugin_unref(now);
    if (!same || spawner_watch(sp, loop_of(p), on_spawner_exit, p) < 0) {
        spawner_close(sp);
        if (!same)
            fail_plugin(p, "its file changed since it was checked, with "
                           "other tasks: reload the config to use it");
        return NULL;
    }
    p->spawner = sp;
    return sp;
}

static void fail_pool(struct pool *p, const char *why)
{
    char reason[800];
    snprintf(reason, sizeof reason,
             "pool '%s' failed: its workers did not start %d times in a row: %s",
             p->cfg.name, p->start_failures, why);
    log_error("%s", reason);
    free(p->fail_reason);
    p->fail_reason = strdup(reason);
    p->failed = 1;
    if (p->fail_reason != NULL)
        reject_queue(p);
}

/* Waits before starting workers again (longer at each `step`), after
 * `count` of `what` in a row ("failed worker starts", ...). */
static void back_off(struct pool *p, int step, int count, const char *what)
{
    double delay = BACKOFF_FIRST;
    for (int i = 1; i < step && delay < BACKOFF_MAX; i++)
        delay *= 2;
    if (delay > BACKOFF_MAX)
        delay = BACKOFF_MAX;
    log_warn("pool %s: %d %s in a row, waiting %.1f s", p->cfg.name, count,
             what, delay);
    loop_timer_start(loop_of(p), &p->backoff, delay);
}

/* Counts a worker that died before READY, or soon after without having
 * run a task. One that died running a task, or after tasks, is the doing
 * of a task (answered crashed, never run again): it does not slow the
 * pool. */
static void count_failure(struct pool *p, struct worker *w, const char *how,
                          const struct task *culprit)
{
    if (w->state == W_STARTING || (w->reason == RETIRE_INIT && w->killed)) {
        p->start_failures++;
        char why[600];
        snprintf(why, sizeof why, "%s",
                 p->init_error ? p->init_error : how);
        if (p->start_failures >= START_FAILURES_MAX)
            fail_pool(p, why);
        else
            back_off(p, p->start_failures, p->start_failures,
                     "failed worker starts");
        return;
    }
    if (culprit != NULL || w->tasks_done > 0)
        return;
    double lived = loop_now(loop_of(p)) - w->started;
    p->early_deaths = lived < EARLY_DEATH ? p->early_deaths + 1 : 0;
    if (p->early_deaths >= EARLY_DEATHS_FREE)
        back_off(p, p->early_deaths - EARLY_DEATHS_FREE + 1, p->early_deaths,
                 "workers that started fine died within a second, idle,");
}

static void answer_crashed(struct pool *p, struct worker *w, struct task *t,
                           const char *how)
{
    p->stats.finished[TH_STATE_CRASHED]++;
    double now = loop_now(loop_of(p));
    stats_run(&p->stats, now, stats_us(now - t->started));
    char msg[160];
    int n = snprintf(msg, sizeof msg, "worker %d %s while running the task",
                     w->pid, how);
    host_answer(p->host, t, TH_STATE_CRASHED, TH_EIO, msg, (size_t)n);
}

void pool_worker_exited(struct worker *w, const char *how, int crashed)
{
    struct pool *p = w->pool;
    int starting = w->state == W_STARTING;
    /* the pool's timers of w end with it (its own kill timer has ended) */
    loop_timer_stop(loop_of(p), &w->run_timer);
    loop_timer_stop(loop_of(p), &w->idle_timer);
    int reason = (crashed && !w->killed) ? RETIRE_CRASH : w->reason;
    /* Its held results were delivered (worker.c): what it still runs is
     * what it died of. A task the host killed it for was answered then. */
    struct task *culprit = w->killed ? NULL : worker_running(w);
    if (starting)
        reason = RETIRE_INIT;
    if (crashed && !w->killed)
        log_error("pool %s: worker %d %s%s", p->cfg.name, w->pid, how,
                  culprit ? " mid-task" : "");
    else
        log_info("pool %s: worker %d %s (%s)", p->cfg.name, w->pid, how,
                 retire_reason_name(reason));
    if ((crashed && !w->killed) || starting || reason == RETIRE_INIT)
        count_failure(p, w, how, culprit);
    struct task *head = settle_worker(p, w, culprit);
    p->stats.restarts[reason]++;
    stats_worker_exited(&p->host->events, p->cfg.name, (int)w->pid, reason,
                        crashed && !w->killed, how);
    unlink_worker(p, w);
    host_bury_worker(p->host, w);
    if (head != NULL)
        answer_crashed(p, w, head, how);
    if (p->failed && p->fail_reason != NULL)
        reject_queue(p); /* tasks requeued from it cannot run either */
    host_mark_pool(p->host, p);
}

/* ---- drain, restart ---- */

static void cancel_running(struct pool *p, struct worker *w, int reason)
{
    struct task *t = abort_worker(p, w, worker_running(w), reason, SIGKILL);
    if (t == NULL)
        return;
    p->stats.finished[TH_STATE_CANCELLED]++;
    host_answerf(p->host, t, TH_STATE_CANCELLED, TH_ECANCELED,
                      "cancelled: the pool was stopped by force");
}

/* Stops every worker: gracefully (after its tasks; a worker stopping
 * already goes on as it was), or by force: whatever a worker does, also
 * one stopping already, it is gone within kill_grace, its running task
 * answered cancelled. */
static void stop_all(struct pool *p, int force, int reason)
{
    struct worker *next;
    for (struct worker *w = p->workers; w != NULL; w = next) {
        next = w->next;
        if (w->killed || (w->state == W_STOPPING && !force))
            continue;
        if (force && (w->inflight.n > 0 || w->state == W_STARTING))
            cancel_running(p, w, reason);
        else
            stop_worker(p, w, reason);
        if (force && !w->killed)
            worker_hurry(w, p->cfg.kill_grace);
    }
}

void pool_drain(struct pool *p, int force)
{
    p->draining = 1;
    p->forced |= force;
    loop_timer_stop(loop_of(p), &p->backoff);
    if (force) {
        /* Workers first: what they had not started goes back to the queue,
         * and is cancelled with the rest of it. */
        stop_all(p, 1, RETIRE_SHUTDOWN);
        struct task *t;
        while ((t = queue_pop(&p->queue)) != NULL) {
            loop_timer_stop(loop_of(p), &t->qtimer);
            p->stats.finished[TH_STATE_CANCELLED]++;
            host_answerf(p->host, t, TH_STATE_CANCELLED, TH_ECANCELED,
                              "cancelled: the host was shut down");
        }
    } else {
        /* Idle workers leave now when nothing waits; busy ones once the
         * queue is empty and their task is done (after_result). */
        struct worker *next;
        for (struct worker *w = p->idle; w != NULL; w = next) {
            next = w->inext;
            if (queue_len(&p->queue) == 0)
                stop_worker(p, w, RETIRE_SHUTDOWN);
        }
        for (struct worker *w = p->workers; w != NULL; w = w->next)
            if (w->state == W_STARTING && queue_len(&p->queue) == 0)
                stop_worker(p, w, RETIRE_SHUTDOWN);
    }
    host_mark_pool(p->host, p);
}

void pool_restart(struct pool *p, int force, int reason)
{
    p->failed = 0;
    p->start_failures = 0;
    p->spawn_errors = 0;
    p->early_deaths = 0;
    p->soft_limit_broken = 0;
    loop_timer_stop(loop_of(p), &p->backoff);
    log_info("pool %s: %s restart of %d workers", p->cfg.name,
             force ? "forced" : "rolling", live_workers(p));
    stop_all(p, force, reason);
    /* Replacements start at once (maintain), while the old workers finish
     * their current task: capacity holds. */
    host_mark_pool(p->host, p);
}

void pool_retire(struct pool *p)
{
    p->draining = 1;
    loop_timer_stop(loop_of(p), &p->backoff);
    stop_all(p, 0, RETIRE_RELOAD);
    host_mark_pool(p->host, p);
}

int pool_needs_restart(const struct pool *p, const struct pool_cfg *c,
                       const struct plugin *plugin)
{
    return p->plugin != plugin || pool_cfg_needs_restart(&p->cfg, c);
}

void pool_update(struct pool *p, const struct pool_cfg *c)
{
    struct pool_cfg *o = &p->cfg;
    pool_cfg_update_live(o, c);
    /* Shrink: idle workers over max leave now, busy ones after their task
     * (the least recently idle go first). */
    while (live_workers(p) > o->max_workers && p->idle != NULL) {
        struct worker *w = p->idle;
        while (w->inext != NULL)
            w = w->inext;
        stop_worker(p, w, RETIRE_RELOAD);
    }
    for (struct worker *w = p->workers; w != NULL; w = w->next)
        if (live_workers(p) > o->max_workers && w->state == W_BUSY)
            stop_worker(p, w, RETIRE_RELOAD);
    /* An idle timer that fired at the old min_workers was not re-armed:
     * give every idle worker a fresh one, so spares above a lower min (or
     * a new idle_timeout) do leave. */
    for (struct worker *w = p->idle; w != NULL; w = w->inext) {
        loop_timer_stop(loop_of(p), &w->idle_timer);
        if (o->idle_timeout > 0) {
            w->idle_timer.cb = on_idle_timer;
            loop_timer_start(loop_of(p), &w->idle_timer, o->idle_timeout);
        }
    }
    host_mark_pool(p->host, p);
}

void pool_take_queue(struct pool *to, struct pool *from)
{
    struct task *t;
    while ((t = queue_pop(&from->queue)) != NULL) {
        const char *name = from->plugin->tasks[t->index].name;
        int idx = plugin_find_task(to->plugin, name);
        if (idx < 0) {
            loop_timer_stop(loop_of(from), &t->qtimer);
            from->stats.finished[TH_STATE_REJECTED]++;
            host_answerf(to->host, t, TH_STATE_REJECTED, TH_ENOENT,
                              "task '%s' is gone from pool '%s' after reload",
                              name, to->cfg.name);
            continue;
        }
        t->index = (uint16_t)idx;
        t->pool = to;
        queue_push(&to->queue, t);
        to->stats.submitted++;
    }
    host_mark_pool(to->host, to);
}

void pool_list_append(struct pool **list, struct pool *p)
{
    while (*list != NULL)
        list = &(*list)->next;
    p->next = NULL;
    *list = p;
}

void pool_list_push(struct pool **list, struct pool *p)
{
    p->next = *list;
    *list = p;
}

void pool_list_remove(struct pool **list, struct pool *p)
{
    while (*list != NULL && *list != p)
        list = &(*list)->next;
    assert(*list == p); /* a pool is on the list it is removed from */
    *list = p->next;
    p->next = NULL;
}

int pool_done(const struct pool *p)
{
    return p->draining && p->nworkers == 0 && queue_len(&p->queue) == 0;
}
