/* taskhost_host.h - embed the taskhost engine in a C program.
 *
 * A th_host owns plugins, pools of worker processes, their queues and one
 * event loop. It is single-threaded: call every function from one thread.
 *
 *   th_host *h;
 *   char err[256];
 *   if (th_host_open(&h, "taskhost.conf", err, sizeof err) < 0) { ... }
 *   th_result r;
 *   th_host_call(h, "default", "sha256", "abc", 3, NULL, &r);
 *   printf("%s %.*s\n", th_state_name(r.state), (int)r.len, (char *)r.data);
 *   th_result_free(&r);
 *   th_host_close(h, TH_CLOSE_GRACEFUL);
 *
 * The loop runs inside th_host_call() and th_host_wait(), or, to plug into
 * the caller's own loop, poll th_host_fd() for reading and call
 * th_host_step(h, 0) whenever it is readable.
 */
#ifndef TASKHOST_HOST_H
#define TASKHOST_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "taskhost.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct th_host th_host;

/* Task states. QUEUED and RUNNING are transient; the others are final, and
 * every accepted task gets exactly one final answer. */
typedef enum th_state {
    TH_QUEUED = 0,
    TH_RUNNING,
    TH_STATE_OK,        /* the plugin returned output */
    TH_STATE_ERROR,     /* the plugin reported failure */
    TH_STATE_TIMEOUT,   /* queue_timeout or task_timeout passed */
    TH_STATE_CANCELLED, /* cancelled, or dropped at a forced close */
    TH_STATE_REJECTED,  /* queue full, unknown pool or task, too large */
    TH_STATE_CRASHED,   /* the worker died: signal or exit named */
    TH_STATE_MEMORY     /* the worker passed memory_hard_limit */
} th_state;

#define TH_STATE_COUNT 9

/* "queued", "running", "ok", "error", "timeout", "cancelled", "rejected",
 * "crashed", "memory"; NULL for other values. */
TH_EXPORT const char *th_state_name(th_state state);

/* A final answer. For TH_STATE_OK, data/len are the output; for the other
 * states data is a NUL-terminated message for a human (len excludes the
 * NUL) and code a TH_E* code (the plugin's own code for TH_STATE_ERROR). */
typedef struct th_result {
    size_t size; /* bytes of this struct that hold fields: the host's
                    sizeof(th_result), or less when the caller's is smaller;
                    a field past it is absent (see TH_HAS_FIELD) */
    uint64_t id;
    th_state state;
    int code;
    const void *data;
    size_t len;
    double wait_time; /* seconds queued */
    double run_time;  /* seconds running */
} th_result;

/* Called once per accepted task with its final answer. It runs from
 * th_host_step(), in the loop's answer phase (after events and timers,
 * before new work is handed out), never from inside another th_host_*
 * call nor in the middle of a change of the host's state. `result` and
 * its data live only during the call.
 *
 * A callback may call every function that does not run the loop:
 * th_host_submit(), th_host_cancel(), th_host_task_state(),
 * th_host_restart(), th_host_reload(), th_host_stats(), th_host_pending(),
 * th_host_shutdown() and the th_watch and th_timer functions; what they
 * answer is delivered in the same phase or a later one. It must not run
 * the loop: th_host_step(), th_host_wait() and th_host_call() return
 * TH_EBUSY there, and th_host_close() only begins a shutdown (close the
 * host once th_host_step() has returned). */
typedef void (*th_done_fn)(const th_result *result, void *arg);

/* Per-task options; zero means "the pool's value". Start from
 * TH_SUBMIT_OPTS_INIT (or all zero: a size of 0 stands for the fields up
 * to `priority`, so `{.priority = 5}` keeps working); fields are only
 * ever appended, and the host reads only those within `size`. */
typedef struct th_submit_opts {
    size_t size;          /* sizeof(th_submit_opts), or 0 (see above) */
    double task_timeout;  /* seconds; only smaller than the pool's applies */
    double queue_timeout; /* seconds; likewise */
    int priority;         /* -128..127, higher first, FIFO within one */
} th_submit_opts;

#define TH_SUBMIT_OPTS_INIT {sizeof(th_submit_opts), 0, 0, 0}

/* Non-zero when the struct at `ptr` (of a type with a leading `size`)
 * holds `field`: for reading a result filled by a host library that may
 * be older than the header a program was built with. */
#define TH_HAS_FIELD(ptr, type, field)                                       \
    (offsetof(type, field) + sizeof(((type *)0)->field) <= (ptr)->size)

/* Opens the config file at `path`, loads and validates its plugins and
 * starts its pools. On failure returns a negative code and writes one line
 * naming file, line and key into err (if given). */
TH_EXPORT int th_host_open(th_host **host, const char *path, char *err,
                           size_t errlen);

/* Creates a host with no pools, to be built in code (below). */
TH_EXPORT int th_host_new(th_host **host);

/* Loads plugin `path` under `name`. Validates as the config does. */
TH_EXPORT int th_host_add_plugin(th_host *host, const char *name,
                                 const char *path, char *err, size_t errlen);

/* Pool options for th_host_add_pool(); fill with th_pool_opts_init()
 * first, which sets `size`. Fields are only ever appended: a program
 * built against an older header passes a smaller struct, and the host
 * takes the defaults for the fields it lacks. Every pool key of the
 * config file is here, under the same name (docs/config.md). */
typedef struct th_pool_opts {
    size_t size; /* set by th_pool_opts_init() */
    const char *name;
    const char *plugin;
    int min_workers;
    int max_workers;           /* 0: the number of online CPUs */
    double idle_timeout;       /* seconds */
    int max_queue;
    const char *overflow;      /* "reject" | "drop-oldest" | "block" */
    double queue_timeout;      /* seconds, 0: none */
    double task_timeout;       /* seconds, 0: none */
    double kill_grace;         /* seconds from SIGTERM to SIGKILL */
    uint64_t memory_soft_limit; /* bytes, 0: none */
    uint64_t memory_hard_limit; /* bytes, 0: none */
    long max_tasks_per_worker; /* 0: never */
    const char *settings;      /* libconfig text, e.g. "rounds = 3;" */
    double init_timeout;       /* seconds a worker's init() may take */
    uint64_t memory_budget;    /* bytes, sum of the workers' RSS, 0: none */
    double memory_check_interval; /* seconds between RSS samples */
    uint64_t address_space_limit; /* RLIMIT_AS of workers, 0: none */
    double max_worker_age;     /* seconds, 0: never */
    const char *user;          /* workers' user, name or uid; NULL: ours */
    const char *group;         /* workers' group, name or gid; NULL: the
                                  user's primary group, else ours */
    long rlimit_nofile;        /* workers' RLIMIT_NOFILE, 0: inherited */
    long rlimit_core;          /* workers' RLIMIT_CORE bytes, -1: inherited */
    int shared;                /* non-zero: the pool's queue is in the
                                  cluster of the host's config (opened by
                                  th_host_open() with a `cluster` group),
                                  and every host with the pool runs its
                                  tasks (docs/cluster.md) */
    double busy_poll;          /* seconds of polling before sleeping, 0: off */
} th_pool_opts;

/* Fills `opts` with the defaults the config file uses, and its size. */
#define th_pool_opts_init(opts) th_pool_opts_init_sized((opts), sizeof(*(opts)))
TH_EXPORT void th_pool_opts_init_sized(th_pool_opts *opts, size_t size);

/* Adds and starts a pool. Returns TH_EINVAL (with a line in err) for
 * options not filled by th_pool_opts_init(). */
TH_EXPORT int th_host_add_pool(th_host *host, const th_pool_opts *opts,
                               char *err, size_t errlen);

/* Submits a task. The input is copied. Returns 0 and the task's id in *id
 * (may be NULL): `done` will then be called exactly once, from a later
 * th_host_step(), never from inside this call. A task the host cannot take
 * (unknown pool or task, queue full, pool failed) is accepted too and
 * answered TH_STATE_REJECTED. Returns TH_EINVAL for NULL arguments and
 * TH_ECLOSED once the host is closing; then `done` is never called. */
TH_EXPORT int th_host_submit(th_host *host, const char *pool, const char *task,
                             const void *input, size_t len,
                             const th_submit_opts *opts, th_done_fn done,
                             void *arg, uint64_t *id);

/* Called while task `id` runs, with a report of its plugin's
 * th_task_progress(): `done` of `total` units (total 0: unknown) and a
 * message, NUL-terminated, "" if none. Reports are coalesced in the worker
 * (latest wins, at most one per task every TH_PROGRESS_INTERVAL_MS), and
 * none comes after the task's final answer. `msg` lives only during the
 * call. The callback may submit or cancel tasks, but must not close the
 * host. */
typedef void (*th_progress_fn)(uint64_t id, uint64_t done, uint64_t total,
                               const char *msg, void *arg);

/* Passes the progress reports of pending task `id` to fn (NULL: stop),
 * with arg. Call it right after th_host_submit(), before the loop runs
 * again, to miss none. Returns 0, TH_ENOENT when no such task is
 * pending, or TH_ENOMEM. */
TH_EXPORT int th_host_on_progress(th_host *host, uint64_t id,
                                  th_progress_fn fn, void *arg);

/* Submits a task and runs the loop until its answer. Copies the answer
 * into *result: free it with th_result_free(). Returns 0 when an answer
 * (whatever its state) was had, or a negative code as th_host_submit().
 * th_host_call() passes the size of the caller's th_result, so that a
 * newer library never writes past an older program's struct. */
#define th_host_call(host, pool, task, input, len, opts, result)            \
    th_host_call_sized((host), (pool), (task), (input), (len), (opts),       \
                       (result), sizeof(*(result)))
TH_EXPORT int th_host_call_sized(th_host *host, const char *pool,
                                 const char *task, const void *input,
                                 size_t len, const th_submit_opts *opts,
                                 th_result *result, size_t result_size);

/* Frees what th_host_call() copied into `result`. */
TH_EXPORT void th_result_free(th_result *result);

/* Cancels task `id`: a queued one is removed, a running one's worker is
 * killed (and replaced); either is answered TH_STATE_CANCELLED through its
 * callback on the next step. Returns 0, or TH_ENOENT when no such task is
 * pending (it was answered already, or never was). */
TH_EXPORT int th_host_cancel(th_host *host, uint64_t id);

/* The state of pending task `id`: TH_QUEUED or TH_RUNNING (>= 0), or
 * TH_ENOENT when no such task is pending. The daemon uses it when a client
 * disconnects: its queued tasks are cancelled, its running ones are left to
 * finish (their answers are discarded). */
TH_EXPORT int th_host_task_state(const th_host *host, uint64_t id);

/* A file descriptor that is readable whenever th_host_step() has work. */
TH_EXPORT int th_host_fd(const th_host *host);

/* Runs the loop once: waits up to timeout_ms (-1: forever) for events,
 * handles them and calls the callbacks due. Returns 0 or a negative code. */
TH_EXPORT int th_host_step(th_host *host, int timeout_ms);

/* Runs the loop until no task is pending, or `timeout` seconds passed
 * (negative: no limit). Returns 0, or TH_ETIMEDOUT. */
TH_EXPORT int th_host_wait(th_host *host, double timeout);

/* Number of accepted tasks not yet answered. */
TH_EXPORT size_t th_host_pending(const th_host *host);

/* Reloads the config from `path` (NULL: the file opened): builds the new
 * state aside and swaps only when it is whole. Pools are added, removed,
 * resized; a pool whose settings or plugin file changed is restarted
 * gracefully. On failure the running state is untouched, and err gets the
 * reason. */
TH_EXPORT int th_host_reload(th_host *host, const char *path, char *err,
                             size_t errlen);

/* Restarts pool `pool` (NULL: every pool). Graceful: each worker is
 * replaced after its current task, capacity holds. Forced: running tasks
 * are killed and answered cancelled, queued ones stay queued. */
TH_EXPORT int th_host_restart(th_host *host, const char *pool, int force);

/* ---- Your own descriptors and timers in the host's loop ----
 *
 * A program that embeds the host (the daemon does, and so do the HTTP
 * endpoint and the broker connection) drives its own sockets and timers
 * from the host's one loop instead of a second one, in the manner of
 * libuv's uv_poll_t and uv_timer_t. Watches are level-triggered: the
 * callback runs on every step while the descriptor stays ready for an
 * event asked for, so a callback may read or write only part of what is
 * there. Callbacks run from inside th_host_step(), on its thread.
 *
 * A callback may start, change or stop any watch or timer, its own
 * included: a stopped handle is never called again, and its memory stays
 * valid until the current step ends. Stopping never closes the
 * descriptor; close it after th_watch_stop(). */
typedef struct th_watch th_watch;
typedef struct th_timer th_timer;

enum {
    TH_WATCH_READ = 1,  /* readable, or at end of file */
    TH_WATCH_WRITE = 2, /* writable */
    TH_WATCH_ERROR = 4  /* error or hang-up: reported, never asked for */
};

/* `events` holds what is ready (TH_WATCH_*); TH_WATCH_ERROR comes with
 * the interest bits set at the time, so that a reader sees its EOF. */
typedef void (*th_watch_fn)(th_watch *watch, int fd, unsigned events,
                            void *arg);
typedef void (*th_timer_fn)(th_timer *timer, void *arg);

/* Watches `fd` for `events` (TH_WATCH_READ | TH_WATCH_WRITE, or 0 to add
 * it paused). On success *watch is the handle, freed by th_watch_stop().
 * Returns 0, TH_EINVAL, TH_ENOMEM, or TH_EIO (fd cannot be watched, or is
 * watched already). */
TH_EXPORT int th_watch_start(th_host *host, int fd, unsigned events,
                             th_watch_fn fn, void *arg, th_watch **watch);

/* Changes what `watch` waits for. Cheap: no system call when unchanged,
 * and a paused watch (0) is out of the kernel's set, so a hung-up
 * descriptor does not spin the loop. Returns 0 or TH_EIO. */
TH_EXPORT int th_watch_set(th_watch *watch, unsigned events);

/* What `watch` waits for now. */
TH_EXPORT unsigned th_watch_events(const th_watch *watch);

/* Stops and frees `watch` (NULL is a no-op). Safe from any callback,
 * its own included. */
TH_EXPORT void th_watch_stop(th_watch *watch);

/* Creates a timer, not yet armed. Free it with th_timer_free(). Returns 0,
 * TH_EINVAL or TH_ENOMEM. */
TH_EXPORT int th_timer_new(th_host *host, th_timer_fn fn, void *arg,
                           th_timer **timer);

/* Arms `timer` to fire `delay` seconds from now (0: on the next step),
 * then every `repeat` seconds if repeat > 0. Re-arming an armed timer
 * moves it. */
TH_EXPORT void th_timer_start(th_timer *timer, double delay, double repeat);

/* Disarms `timer`; it can be armed again. */
TH_EXPORT void th_timer_stop(th_timer *timer);

/* Non-zero while `timer` is armed. */
TH_EXPORT int th_timer_armed(const th_timer *timer);

/* Disarms and frees `timer` (NULL is a no-op). Safe from any callback,
 * its own included. */
TH_EXPORT void th_timer_free(th_timer *timer);

/* The loop's monotonic clock, in seconds, as of the current step. */
TH_EXPORT double th_host_now(const th_host *host);

enum { TH_STATS_TEXT = 0, TH_STATS_JSON = 1, TH_STATS_PROMETHEUS = 2 };

/* Renders the stats of pool `pool` (NULL: all) in `format` into a
 * malloc'd NUL-terminated string *out, which the caller frees. */
TH_EXPORT int th_host_stats(th_host *host, const char *pool, int format,
                            char **out);

enum {
    TH_CLOSE_GRACEFUL = 0, /* finish queued and running tasks first */
    TH_CLOSE_FORCE = 1     /* kill running, answer queued cancelled */
};

/* Closes the host: stops taking tasks, finishes (graceful, bounded by the
 * config's shutdown_timeout, then forced) or cancels (forced) pending ones,
 * retires every worker through fini(), reaps them, dlcloses every plugin
 * and frees everything. Every pending task is answered before it returns. */
TH_EXPORT void th_host_close(th_host *host, int how);

/* Begins closing as th_host_close() does, without blocking: keep calling
 * th_host_step() until th_host_stopped() is true, then th_host_close(). */
TH_EXPORT void th_host_shutdown(th_host *host, int how);

/* Non-zero once a shutdown finished: no worker left, every task answered. */
TH_EXPORT int th_host_stopped(const th_host *host);

#ifdef __cplusplus
}
#endif

#endif /* TASKHOST_HOST_H */
