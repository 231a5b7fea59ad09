/* taskhost.h - the plugin SDK of taskhost.
 *
 * A plugin is a shared object that exports exactly one symbol, made by the
 * TH_PLUGIN() macro below. The host loads it, forks worker processes, calls
 * the plugin's init() once in each worker, then runs tasks in that worker
 * one at a time until the worker is retired, and finally calls fini().
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
 */
#ifndef TASKHOST_H
#define TASKHOST_H

#include <stddef.h>
#include <stdint.h>

#include "taskhost_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The plugin ABI version. A plugin whose descriptor carries another value is
 * refused at load, with a message naming both versions. Fields of
 * th_plugin are only ever appended; appending does not change this. */
#define TH_ABI_VERSION 1

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

/* Appends `len` bytes to the task's output. The host copies them. */
TH_EXPORT int th_task_write(th_task *task, const void *data, size_t len);

/* Records why the task failed and returns `code` (TH_EPLUGIN if `code` is
 * not negative), so that a task can end with
 *     return th_task_fail(task, TH_EINVAL, "not a number: '%.*s'", ...);
 * Output written before is discarded. */
TH_EXPORT int th_task_fail(th_task *task, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Returns non-zero once the task was cancelled or timed out. The worker is
 * killed after a short grace anyway; a long task that checks this can stop
 * early, and the worker then exits cleanly through fini(). */
TH_EXPORT int th_task_cancelled(const th_task *task);

/* The name of the task being run, as the client asked for it. */
TH_EXPORT const char *th_task_name(const th_task *task);

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

/* Runs one task on `len` input bytes (not NUL-terminated). Writes output
 * with th_task_write() and returns 0, or returns a negative code, ideally
 * through th_task_fail(). */
typedef int (*th_run_fn)(void *state, th_task *task, const void *input,
                         size_t len);

/* One named task. A table of them ends with { NULL, NULL }. */
typedef struct th_task_def {
    const char *name;
    th_run_fn run;
} th_task_def;

/* What TH_PLUGIN() exports. The host copies min(sizeof, struct_size) bytes
 * of it into a zeroed struct, so old plugins keep loading as fields are
 * appended. */
typedef struct th_plugin {
    uint32_t abi_version;      /* TH_ABI_VERSION when built */
    uint32_t struct_size;      /* sizeof(th_plugin) when built */
    const char *name;          /* short name, for logs */
    const char *version;       /* the plugin's own version string */
    th_init_fn init;           /* optional */
    th_fini_fn fini;           /* optional */
    const th_task_def *tasks;  /* mandatory, at least one task */
} th_plugin;

/* Declares the plugin. Use once, at file scope. */
#define TH_PLUGIN(name, version, init, fini, tasks)                         \
    TH_EXPORT extern const th_plugin taskhost_plugin;                       \
    const th_plugin taskhost_plugin = {TH_ABI_VERSION, sizeof(th_plugin),   \
                                       (name), (version), (init), (fini),   \
                                       (tasks)}

#ifdef __cplusplus
}
#endif

#endif /* TASKHOST_H */
