/* pool.h - a pool: a plugin, its workers, its queue and its policies.
 *
 * The pool decides: which worker gets which task (most recently idle
 * first; short tasks are pipelined several to a worker), when to start
 * workers (min_workers always, up to max_workers while tasks wait, with a
 * back-off after failed starts), when to retire them (idle, max tasks,
 * age, memory), and what each task's final answer is when things go wrong.
 */
#ifndef TH_POOL_H
#define TH_POOL_H

#include <stdint.h>

#include "config.h"
#include "loop.h"
#include "queue.h"
#include "stats.h"
#include "worker.h"

struct th_host;
struct plugin;
struct frame;

struct pool {
    struct th_host *host;
    struct pool_cfg cfg;       /* owned copy */
    struct plugin *plugin;     /* one reference */
    struct spawner *spawner;   /* forks the workers; NULL until needed */
    struct queue queue;
    struct worker *workers;    /* every worker, any state */
    struct worker *idle;       /* idle stack: most recently idle first */
    int nworkers, nstarting, nidle, nbusy, nstopping;
    int draining;              /* closing or removed: no new workers */
    int forced;                /* stopped by force: nothing more runs */
    int failed;                /* init kept failing: tasks are rejected */
    char *fail_reason;
    int start_failures;        /* consecutive failed starts */
    int early_deaths;          /* consecutive deaths soon after start */
    int spawn_errors;          /* consecutive fork/socketpair failures */
    struct loop_timer backoff; /* no spawn until it fires */
    struct loop_timer mem_timer; /* samples memory while busy */
    double mem_period;         /* its current period, 0: not sampling */
    double avg_run_us;         /* moving average of task run time */
    int uid, gid;              /* workers' ids, -1: the host's */
    int soft_limit_broken;     /* RSS after init is above the soft limit */
    char *init_error;          /* what the last failed init said */
    unsigned seed;             /* for max_tasks jitter */
    int dirty;                 /* on the host's dispatch list */
    struct pool *next;         /* host's pool list */
    struct pool *dnext;        /* host's dispatch list */
    struct pool_stats stats;
};

/* Creates a pool from `cfg` (copied) on `plugin` (referenced) and starts
 * its min_workers. Returns NULL when out of memory. */
struct pool *pool_new(struct th_host *host, const struct pool_cfg *cfg,
                      struct plugin *plugin);

/* Frees a pool with no worker left and an empty queue. */
void pool_free(struct pool *p);

/* Takes task t (already mapped) into the queue, or answers it rejected
 * (queue full, pool failed) — through the host's deferred answers, since
 * the caller is th_host_submit(). Returns 0, or TH_EBUSY for overflow =
 * block when the queue is full (t is not taken). */
int pool_submit(struct pool *p, struct task *t);

/* Queues task t (mapped) that a shared pool claimed from the cluster:
 * the cluster admitted it already, so no max_queue or overflow here. */
void pool_take(struct pool *p, struct task *t);

/* How many tasks one worker holds at once now (short tasks are
 * pipelined): with max_workers, what the pool can start at once. */
size_t pool_depth(const struct pool *p);

/* Cancels a task of this pool, queued or running. */
void pool_cancel(struct pool *p, struct task *t);

/* Gives queued tasks to workers and starts workers as needed. Called by
 * the host once per loop iteration for pools marked dirty. */
void pool_dispatch(struct pool *p);

/* Stops taking work: queued and running tasks finish, then the workers
 * stop. With `force`, running tasks are killed and answered cancelled and
 * queued ones answered cancelled. */
void pool_drain(struct pool *p, int force);

/* Drains a pool that a reload replaced or removed: its workers finish
 * their tasks and leave with reason `reload`. */
void pool_retire(struct pool *p);

/* Replaces every worker (rolling: each after its current task, new ones
 * started first). With `force`, running tasks are killed and answered
 * cancelled. */
void pool_restart(struct pool *p, int force, int reason);

/* Non-zero when a pool on `cfg` and `plugin` needs new workers (plugin,
 * settings or process limits changed), zero when pool_update() will do. */
int pool_needs_restart(const struct pool *p, const struct pool_cfg *cfg,
                       const struct plugin *plugin);

/* Applies the sizing and policy values of `cfg` to a running pool: more
 * workers are started or idle ones over max_workers stopped. */
void pool_update(struct pool *p, const struct pool_cfg *cfg);

/* Moves the queue of `from` to `to`, mapping each task to `to`'s plugin
 * by name; a task `to` has no longer is answered rejected. */
void pool_take_queue(struct pool *to, struct pool *from);

/* The host's lists of pools (serving, retired), linked through `next`:
 * appends p at the tail, pushes it at the head, or removes it (it must be
 * on the list). */
void pool_list_append(struct pool **list, struct pool *p);
void pool_list_push(struct pool **list, struct pool *p);
void pool_list_remove(struct pool **list, struct pool *p);

/* Non-zero when a draining pool has no worker and no task left. */
int pool_done(const struct pool *p);

/* Non-zero when pid is one of the pool's processes (its spawner or a
 * worker). */
int pool_owns_pid(const struct pool *p, pid_t pid);

/* The pool's spawner, started (as the pool's user, loading the plugin)
 * on first use. NULL when it cannot start: a plugin that no longer loads
 * fails the pool, with one line naming it. */
struct spawner *pool_spawner(struct pool *p);

/* ---- called by worker.c ---- */

/* w's init or its exit took longer than its kill timer allowed. */
void pool_worker_overdue(struct worker *w);

/* w broke the protocol (a malformed frame): it is killed. */
void pool_worker_broken(struct worker *w);

void pool_worker_ready(struct worker *w, uint32_t rss_kib);
void pool_worker_init_failed(struct worker *w, const char *msg, size_t len);
/* Where a result's output is: in the worker's read buffer (copied if
 * kept); in its arena's output ring, valid until the worker is next
 * flushed (after the answers are delivered); in the task's memfd at
 * t->out_off (payload NULL). */
enum { RESULT_INLINE, RESULT_ARENA, RESULT_FD };

/* A result frame, its output where `where` says. */
void pool_worker_result(struct worker *w, const struct frame *f,
                        const char *payload, int where);
void pool_worker_exited(struct worker *w, const char *how, int crashed);

#endif /* TH_POOL_H */
