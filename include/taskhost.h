/* taskhost.h - the plugin SDK of taskhost.
 *
 * A plugin is a shared object that exports exactly one symbol, made by the
 * TH_PLUGIN() or TH_PLUGIN_DESC() macro below. The host checks its
 * settings with check(), forks worker processes, calls the plugin's init()
 * once in each worker, then runs tasks in that worker one at a time until
 * the worker is retired, and finally calls fini().
 *
 *   #include <taskhost.h>
 *
 *   static int echo(void *state, th_task *task, const void *in, size_t len)
 *   {
 *       (void)state;
 *       return th_task_write(task, in, len);
 *   }
 *   static const th_task_def tasks[] = { { "echo", echo }, { NULL, NULL } };
 *   TH_PLUGIN("echo", "1.0", NULL, NULL, tasks);
 *
 * Build: cc -shared -fPIC $(pkg-config --cflags taskhost) echo.c -o echo.so
 *
 * Every function below returns 0 on success or a negative TH_E* code.
 *
 * What runs where, and as whom
 *   constructors  Run wherever the object is loaded, never in the daemon:
 *                 in the short-lived processes that load and validate the
 *                 plugin (at start, at reload, for --check-config) and run
 *                 check(), and in each pool's spawner, the process its
 *                 workers are forked from, as the pool's user. Keep them
 *                 free of side effects.
 *   check()       Once per pool, at start, at reload and for
 *                 --check-config, before any worker of the pool is
 *                 forked: in a short-lived process that loads the plugin
 *                 for this only (never in the daemon's own process), as
 *                 the pool's user and group when the daemon runs as root.
 *                 It has plugin_load_timeout (10 s) to load and return; a
 *                 crash, an exit or a hang there refuses the pool like a
 *                 failed check. Reads the settings only; keep no state.
 *   init()        Once in each worker process (forked from the pool's
 *                 spawner, so already the pool's user, group and
 *                 rlimits), within the pool's init_timeout.
 *   tasks         In the worker, one at a time, in the thread that called
 *                 init(), each within the pool's task_timeout.
 *   fini()        Once when the worker is retired gracefully (not when it
 *                 is killed: a crash, a timeout, a memory limit, a forced
 *                 stop), with what init() stored.
 *
 * Threads. A plugin may start threads in init() or in a task (a worker is
 * a whole process of its own). th_task_*() calls take the task handle of
 * the task being run and only from the thread that runs it, and only until
 * the task returns; th_log() and th_setting_*() (within init() and check())
 * may be called from any thread. The host runs no thread of its own in a
 * worker. Threads are gone when the worker exits: join them in fini().
 *
 * Signals. The host owns SIGTERM (a stop: the worker exits after the
 * running task, which sees th_task_cancelled() turn true when it is the
 * one being stopped), SIGKILL (after kill_grace), and the signals a worker
 * ignores so that only the host hears the operator: SIGPIPE, SIGHUP,
 * SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTTOU and SIGTTIN. A plugin must
 * not change their handling, nor block SIGTERM. Other signals, and the
 * signal mask of threads it starts, are the plugin's.
 *
 * Sizes. An input and an output are each at most 1 GiB between host and
 * worker (th_task_write() returns TH_ETOOBIG past it); the daemon's
 * max_payload (64 MiB by default) bounds what its clients send and get. A th_task_fail() message is cut to 1023 bytes, a th_log() line to
 * about 2 KiB, a th_task_progress() message to TH_PROGRESS_MSG_MAX bytes,
 * a check() message to its errlen (at least 256 bytes).
 *
 * Cancellation. A task cancelled by its submitter or past its
 * task_timeout sees th_task_cancelled(task) turn true; it should return
 * soon (its answer is already given, and what it writes is dropped). If
 * it has not returned kill_grace seconds later, its worker is killed and
 * replaced; so is a worker whose task is cancelled and that did return.
 */
#ifndef TASKHOST_H
#define TASKHOST_H

#include <stddef.h>
#include <stdint.h>

#include "taskhost_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The plugin ABI. A plugin's descriptor names the ABI it was built for;
 * the host loads every plugin from TH_ABI_VERSION_MIN to its own
 * TH_ABI_VERSION and refuses any other with one line naming both. Fields
 * of th_plugin and th_task_info are only ever appended, and each is read
 * only from a plugin whose ABI has it (and whose struct_size covers it);
 * TH_ABI_VERSION goes up by one whenever a field is appended.
 *   1  name, version, init, fini, tasks
 *   2  task_info: tasks described by growable entries; check
 * A new SDK function does not change the ABI: a plugin that calls one on
 * an older host is refused with a line naming the function. */
#define TH_ABI_VERSION 2
#define TH_ABI_VERSION_MIN 1

/* Marks a symbol as exported from a plugin or from the host library. */
#if defined(__GNUC__)
#define TH_EXPORT __attribute__((visibility("default")))
#else
#define TH_EXPORT
#endif

/* The name of the one symbol a plugin exports. */
#define TH_PLUGIN_SYMBOL "taskhost_plugin"

/* Error codes: 0 is success, failures are negative. */
enum {
    TH_OK = 0,
    TH_EINVAL = -1,     /* invalid argument or input */
    TH_ENOMEM = -2,     /* out of memory */
    TH_ENOENT = -3,     /* no such pool, task, plugin, file or key */
    TH_EIO = -4,        /* a system call failed */
    TH_ETIMEDOUT = -5,  /* a time limit passed */
    TH_ECANCELED = -6,  /* cancelled */
    TH_EFULL = -7,      /* a queue is full */
    TH_EABI = -8,       /* plugin built for another ABI */
    TH_ECONFIG = -9,    /* invalid configuration */
    TH_ECLOSED = -10,   /* the host is closing or closed */
    TH_EFAILED = -11,   /* the pool failed (its plugin cannot start) */
    TH_ETOOBIG = -12,   /* a payload over a size limit */
    TH_EPLUGIN = -13,   /* a plugin reported failure */
    TH_EPERM = -14,     /* not permitted */
    TH_EPROTO = -15,    /* malformed protocol data */
    TH_EBUSY = -16      /* not now: try again later */
};

/* Returns a static English description of a TH_E* code. */
TH_EXPORT const char *th_strerror(int code);

/* ---- Settings: the pool's `settings` group, read-only, for init() ---- */

/* Opaque. Valid during init(); copy what you keep. Nested groups are read
 * with dotted keys ("cache.size"). */
typedef struct th_settings th_settings;

/* Each getter returns the setting `key`, or `def` when it is absent or has
 * another type. Integers are accepted where floats are asked for. */
TH_EXPORT const char *th_setting_string(const th_settings *s, const char *key,
                                        const char *def);
TH_EXPORT int64_t th_setting_int(const th_settings *s, const char *key,
                                 int64_t def);
TH_EXPORT double th_setting_float(const th_settings *s, const char *key,
                                  double def);
TH_EXPORT int th_setting_bool(const th_settings *s, const char *key, int def);

/* ---- Tasks ---- */

/* Opaque handle of the task being run; valid only during the call. */
typedef struct th_task th_task;

/* Appends `len` bytes to the task's output. The host copies them.
 * Returns 0, TH_ETOOBIG (over the output limit), TH_ENOMEM, or TH_EINVAL:
 * also once th_task_fail() was called for the task, since a failed task's
 * answer is its message (the data is dropped). */
TH_EXPORT int th_task_write(th_task *task, const void *data, size_t len);

/* Records why the task failed and returns `code` (TH_EPLUGIN if `code` is
 * not negative), so that a task can end with
 *     return th_task_fail(task, TH_EINVAL, "not a number: '%.*s'", ...);
 * Output written before is discarded, and later writes are refused. */
TH_EXPORT int th_task_fail(th_task *task, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Returns non-zero once this task was cancelled or passed its
 * task_timeout (never because of another task). A long task that checks
 * it can stop early, before its worker is killed after kill_grace. */
TH_EXPORT int th_task_cancelled(const th_task *task);

/* The name of the task being run, as the client asked for it. */
TH_EXPORT const char *th_task_name(const th_task *task);

/* Reports progress of the running task: `done` of `total` units (total 0:
 * unknown) and an optional short message (NULL or text; at most
 * TH_PROGRESS_MSG_MAX bytes are kept). Cheap enough to call in a tight
 * loop: reports are coalesced in the worker, latest wins, and at most one
 * per task leaves it every TH_PROGRESS_INTERVAL_MS milliseconds; a report
 * held back when the task returns is sent just before its result. They
 * reach the submitter only if it asked for them (th_host_on_progress(),
 * th_client_on_progress(), taskhostctl submit --progress); otherwise they
 * cost the worker a clock read and a copy. Returns 0 or TH_EINVAL. */
#define TH_PROGRESS_MSG_MAX 255
#define TH_PROGRESS_INTERVAL_MS 50
TH_EXPORT int th_task_progress(th_task *task, uint64_t done, uint64_t total,
                               const char *msg);

/* ---- Logging, tagged with the pool and the worker's pid ---- */

enum { TH_LOG_ERROR = 0, TH_LOG_WARN = 1, TH_LOG_INFO = 2, TH_LOG_DEBUG = 3 };

TH_EXPORT void th_log(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- The plugin descriptor ---- */

/* Called once in each worker before its first task. Stores the per-worker
 * state in *state (it persists between tasks: caches are why workers live
 * long). Returns 0, or a TH_E* code after th_log()ging why. Optional. */
typedef int (*th_init_fn)(const th_settings *settings, void **state);

/* Called once when a worker is retired, with what init() stored. Optional. */
typedef void (*th_fini_fn)(void *state);

/* Checks a pool's settings before any of its workers starts: at start, at
 * reload and for taskhostd --check-config (see "What runs where" above).
 * Returns 0, or a negative TH_E* code with one line in err[0..errlen) that
 * says what is wrong ("rounds must be >= 1, got 0"); the host refuses the
 * pool (at reload: the whole new config) with that line, naming the file,
 * the pool and the plugin. Optional (ABI 2). */
typedef int (*th_check_fn)(const th_settings *settings, char *err,
                           size_t errlen);

/* Runs one task on `len` input bytes (not NUL-terminated). Writes output
 * with th_task_write() and returns 0, or returns a negative code, ideally
 * through th_task_fail(). */
typedef int (*th_run_fn)(void *state, th_task *task, const void *input,
                         size_t len);

/* One named task. A table of them ends with { NULL, NULL }. This is the
 * ABI 1 form of a task table and it never changes; th_task_info below is
 * the form that can grow. */
typedef struct th_task_def {
    const char *name;
    th_run_fn run;
} th_task_def;

/* One named task, as an entry that can grow: struct_size tells the host
 * how far apart the entries of a table are and which fields they have.
 * Write entries with TH_TASK() and end the table with TH_TASK_END:
 *   static const th_task_info tasks[] = {TH_TASK("echo", echo),
 *                                        TH_TASK_END};
 * and name the table as the descriptor's task_info (TH_PLUGIN_DESC). */
typedef struct th_task_info {
    uint32_t struct_size; /* sizeof(th_task_info) when built */
    const char *name;
    th_run_fn run;
} th_task_info;

#define TH_TASK(name, run) {sizeof(th_task_info), (name), (run)}
#define TH_TASK_END {sizeof(th_task_info), NULL, NULL}

/* What the plugin exports. The host copies min(sizeof, struct_size) bytes
 * of it into a zeroed struct, so old plugins keep loading as fields are
 * appended; a NULL optional field means the default. */
typedef struct th_plugin {
    uint32_t abi_version;      /* TH_ABI_VERSION when built */
    uint32_t struct_size;      /* sizeof(th_plugin) when built */
    const char *name;          /* short name, for logs */
    const char *version;       /* the plugin's own version string */
    th_init_fn init;           /* optional */
    th_fini_fn fini;           /* optional */
    const th_task_def *tasks;  /* the tasks, ABI 1 form; or NULL and: */
    /* ABI 2 */
    const th_task_info *task_info; /* the tasks, growable form */
    th_check_fn check;             /* optional */
} th_plugin;

/* Declares the plugin. Use once, at file scope. (Every later field is
 * given as NULL, so that -Wextra stays quiet, in C++ too.) */
#define TH_PLUGIN(name, version, init, fini, tasks)                         \
    TH_EXPORT extern const th_plugin taskhost_plugin;                       \
    const th_plugin taskhost_plugin = {TH_ABI_VERSION, sizeof(th_plugin),   \
                                       (name), (version), (init), (fini),   \
                                       (tasks), NULL, NULL}

/* Declares the plugin by field names (C99 designated initializers), for
 * the fields TH_PLUGIN() has no place for. Use once, at file scope:
 *   TH_PLUGIN_DESC(.name = "hash", .version = "1.0", .init = hash_init,
 *                  .task_info = tasks); */
#define TH_PLUGIN_DESC(...)                                                 \
    TH_EXPORT extern const th_plugin taskhost_plugin;                       \
    const th_plugin taskhost_plugin = {.abi_version = TH_ABI_VERSION,       \
                                       .struct_size = sizeof(th_plugin),    \
                                       __VA_ARGS__}

#ifdef __cplusplus
}
#endif

#endif /* TASKHOST_H */
