/* worker.h - a worker process as the engine sees it (engine layer).
 *
 * The pool's spawner (spawner.h) forks each worker; the engine talks to
 * it over a socketpair and a shared arena (worker_wire.h), and its pidfd
 * is kept for signals; the spawner reports its exit. This module is the
 * process and its I/O; the pool (pool.c) owns its state and every
 * decision, and is told of each event through pool_worker_*(). The states,
 * changed by the pool only (pool.c set_state(), which asserts each move):
 *
 *   STARTING --READY--> IDLE <--last result-- BUSY <--task sent-- IDLE
 *   any --stop/kill--> STOPPING --exit reported--> reaped (freed after the
 *   loop iteration, since other events of the same iteration may name it)
 *
 * A STOPPING worker is never given a task, and counts for nothing in the
 * pool's capacity. A killed worker's results still count until it is
 * gone (they are of tasks it finished); its other tasks are settled then.
 */
#ifndef TH_WORKER_H
#define TH_WORKER_H

#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "fdpass.h"
#include "loop.h"
#include "task.h"
#include "worker_wire.h"

/* What a worker holds in one of its memfd slots (worker_wire.h). */
struct fd_slot {
    dev_t dev;
    ino_t ino;     /* 0: nothing */
    uint64_t used; /* when last named, for replacement */
};

struct pool;

enum worker_state { W_STARTING, W_IDLE, W_BUSY, W_STOPPING };

struct worker {
    struct pool *pool;     /* the owner, told of events; never read here */
    struct th_host *host;  /* for the loop and the host's flush list */
    const char *name;      /* the pool's name, for log lines */
    pid_t pid;
    struct loop_io sock;
    struct loop_io pidfd;   /* only .fd: for signals, never reused */
    int state;             /* enum worker_state; written by the pool only */
    int reason;            /* enum retire_reason, once stopping */
    int killed;            /* signalled by the host */
    int reaped;
    int left_unasked;      /* closed its socket before it was asked to stop */
    uint64_t serial;       /* its spawner's number for it */
    int dirty;             /* on the host's flush list */
    struct task_list inflight; /* sent, in order; the head is running */
    struct buf in, out;
    struct fdpass_queue ofds; /* memfds to send with their tasks' frames */
    uint64_t sent;            /* bytes ever written to the socket */
    struct fd_slot slots[FD_SLOTS]; /* the memfds the worker holds */
    uint64_t slot_clock;
    struct worker *next, *prev;   /* pool's worker list */
    struct worker *inext, *iprev; /* pool's idle stack */
    struct worker *dnext;         /* host's flush list */
    struct worker *gnext;         /* host's graveyard */
    double started, idle_since, head_since;
    uint64_t tasks_done;
    uint64_t max_tasks;    /* recycle after this many, with jitter; 0 never */
    uint32_t rss_kib;
    uint32_t arena_kib;    /* arena pages the worker has touched */
    char *arena;           /* shared with the worker (worker_wire.h), or NULL */
    uint64_t in_head;      /* input ring: next free position */
    uint64_t in_tail;      /* input ring: oldest position still in use */
    uint64_t out_consumed; /* output ring: read up to here */
    uint64_t out_released; /* output ring: given back up to here */
    struct loop_timer idle_timer;  /* the pool's: idle_timeout */
    struct loop_timer run_timer;   /* the pool's: task_timeout of the head */
    struct loop_timer kill_timer;  /* this module's: SIGKILL after the grace,
                                    * the init timeout; the pool decides */
};

/* What a worker is started with: the worker module reads no pool. */
struct worker_start {
    struct pool *owner;      /* gets the worker's events (pool_worker_*) */
    struct th_host *host;
    struct spawner *spawner; /* forks the process */
    const char *name;        /* the pool's name; outlives the worker */
    double init_limit;       /* seconds init() may take */
};

/* Starts a worker. Returns it in STARTING state, or NULL after logging
 * why. */
struct worker *worker_spawn(const struct worker_start *ws);

/* Queues task t to the worker (appended to its in-flight list); the bytes
 * go out when the host flushes. After answering it, the worker polls for
 * its next task for up to poll_us microseconds before it sleeps (0: it
 * sleeps at once). */
void worker_send(struct worker *w, struct task *t, uint32_t poll_us);

/* From the host's after-hook, once answers are delivered: gives back the
 * arena's output ring up to the last result read, and writes what is
 * queued for the worker. */
void worker_flush(struct worker *w);

/* Asks the worker to finish what it holds, run fini() and exit; it is
 * killed if it has not exited `limit` seconds from now (0: no bound).
 * The pool has moved it to STOPPING. */
void worker_stop(struct worker *w, int reason, double limit);

/* Makes sure a stopping worker is killed if it has not exited within
 * `limit` seconds. */
void worker_hurry(struct worker *w, double limit);

/* Signals the worker with `sig` (SIGTERM then SIGKILL `grace` seconds
 * later, or SIGKILL at once). Its results stop counting. The pool has
 * moved it to STOPPING. */
void worker_kill(struct worker *w, int reason, int sig, double grace);

/* Tells the worker to skip task `id`, sent to it but perhaps not started
 * (it was cancelled): best effort, through the arena. */
void worker_skip(struct worker *w, uint64_t id);

/* The task the worker is running now (one of its in-flight tasks), or
 * NULL between tasks. The oldest in-flight task may have finished already,
 * its result held by the worker for a batch (worker_wire.h). */
struct task *worker_running(const struct worker *w);

/* The worker exited with wait status `status` (its spawner reaped it):
 * reads what it wrote last, closes its descriptors, and tells the pool. */
void worker_reaped(struct worker *w, int status);

/* Releases a reaped worker's memory; it must be unlinked from its pool. */
void worker_free(struct worker *w);

/* Reads the worker's RSS from /proc (0 if gone). */
uint32_t worker_read_rss(const struct worker *w);

#endif /* TH_WORKER_H */
