/* spawner.h - a pool's spawner, as the host sees it.
 *
 * The host never forks a worker from its own memory nor loads a plugin:
 * each pool has a spawner process (host/worker/spawner.c, started with
 * posix_spawn(): an exec, nothing of the host's memory), which runs as
 * the pool's user, loads the plugin, and forks the workers. A spawner
 * may be started before it has a pool (spawner_launch(): the host's
 * spare, spare.h) and be given one later. A spawner started with `probe`
 * only loads the plugin, reports its tasks and exits: that is how plugins
 * are checked.
 * Requests are synchronous and bounded by a timeout; worker exits come
 * back as events in the host's loop.
 */
#ifndef TH_SPAWNER_H
#define TH_SPAWNER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "loop.h"

struct plugin;
struct th_settings;

/* Seconds a plugin may take to load (its constructors) in a spawner. */
#define PLUGIN_LOAD_TIMEOUT 10.0

/* Called with each worker exit the spawner reports (its serial, as in
 * struct spawned, and wait status), and once with serial 0 when the
 * spawner itself is gone. */
typedef void (*spawner_exit_fn)(void *arg, uint64_t serial, int status);

struct spawner_opts {
    int probe;                 /* load, report, exit */
    int strict;                /* plugin file permission checks */
    const char *path;          /* the plugin */
    const char *pool;          /* for the log tag and process name */
    const struct th_settings *settings;
    int uid, gid;              /* -1: the host's */
    int measure_rss;
    int64_t rlimit_nofile;     /* 0: inherit */
    int64_t rlimit_core;       /* -1: inherit */
    uint64_t address_space_limit;
    double timeout;            /* seconds the load may take */
    int check;                 /* run the plugin's check() on settings */
};

struct spawner {
    pid_t pid;
    int pidfd;
    int req;                   /* request socket */
    struct loop_io events;     /* event socket, in the host's loop */
    struct loop *loop;         /* NULL until spawner_watch() */
    spawner_exit_fn on_exit;
    void *arg;
    struct buf msg;
    double timeout;
};

/* A worker the spawner forked. */
struct spawned {
    pid_t pid;
    uint64_t serial;           /* names it in exit reports */
    int sock;                  /* the host's end of its socket */
    int arena;                 /* its arena memfd, or -1 */
    int pidfd;
};

/* The spawner program: $TASKHOST_SPAWNER, else the one next to this
 * program (a build tree's), else the installed one. */
const char *spawner_program(void);

/* Starts the spawner program, which then waits for spawner_start() to
 * tell it what to be: a spawner started ahead of need (spare.h). Returns
 * it, or NULL with one line in err. */
struct spawner *spawner_launch(char *err, size_t errlen);

/* Has a spawner load the plugin: `spare` (from spawner_launch(), taken
 * over; one that died meanwhile is replaced) or, when NULL, one started
 * now. Returns 0 with the spawner in *out and, if meta is not NULL, what
 * it reported of the plugin (a plugin_new_probed(), named `name`) in
 * *meta; or a negative code with one line in err naming the plugin: it
 * could not be loaded, or it crashed, exited or hung while loading. A
 * probe's spawner has exited already when this returns 0: close it with
 * spawner_close(). */
int spawner_start(struct spawner *spare, const struct spawner_opts *o,
                  const char *name, struct spawner **out,
                  struct plugin **meta, char *err, size_t errlen);

/* Watches the spawner's events in `loop`, calling fn(arg, ...) for each. */
int spawner_watch(struct spawner *sp, struct loop *loop, spawner_exit_fn fn,
                  void *arg);

/* Asks for a worker. Returns 0 and fills *w (the caller owns its
 * descriptors), or -1 with one line in err. */
int spawner_spawn(struct spawner *sp, struct spawned *w, char *err,
                  size_t errlen);

/* Closes the request socket (the spawner then ends what is left and
 * exits), waits for it a short while (then kills it) and frees sp. NULL
 * is allowed. */
void spawner_close(struct spawner *sp);

/* Loads plugin `path` as `name` in a spawner that exits once it reported
 * (plugin code never runs in this process). Returns 0 with the plugin's
 * description in *out, or a negative code with one line in err. */
int plugin_probe(const char *name, const char *path, int strict,
                 double timeout, struct plugin **out, char *err,
                 size_t errlen);

/* Runs plugin p's check() on the settings of pool `pool` in a probe
 * spawner (as uid/gid when >= 0; `strict` as for plugin_probe()), before any worker of the pool exists:
 * plugin code never runs in this process. Returns 0, or TH_ECONFIG with
 * the plugin's own message in err when check() refused, or another code
 * with one line in err when it crashed, exited or hung (`timeout`). */
int plugin_probe_check(const struct plugin *p, const char *pool,
                       const struct th_settings *settings, int uid, int gid,
                       int strict, double timeout, char *err, size_t errlen);

#endif /* TH_SPAWNER_H */
