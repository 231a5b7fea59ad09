/* stats.h - per-pool counters and fixed-memory latency histograms.
 *
 * Histograms are log-linear (HDR-style): each power of two of microseconds
 * is split into 8 linear sub-buckets, so any percentile is within 12.5%
 * of the true value, in 4 KiB per histogram, whatever the task count.
 */
#ifndef TH_STATS_H
#define TH_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "taskhost_host.h"

struct th_host;

#define HIST_SUB 8
#define HIST_BUCKETS (64 * HIST_SUB)

/* Fixed bounds for the Prometheus histograms (hist_bounds_us()). */
#define HIST_FIXED 18

struct hist {
    uint64_t count;
    uint64_t sum; /* microseconds */
    uint64_t buckets[HIST_BUCKETS];
    uint64_t fixed[HIST_FIXED + 1]; /* per fixed bound, then above them */
};

/* ---- windows: the last minute and the last five minutes ----
 *
 * A ring of one-second slots, advanced lazily by the calls that record
 * into it (nothing runs while nothing happens). The minute's slots hold
 * small latency histograms (the buckets of struct hist, up to about 4.7
 * hours, in 32 bits); the five minutes hold counts and queue depths. */
#define WIN_SECONDS 60
#define HISTORY_SECONDS 300
#define WIN_HIST 256

struct win_slot {
    uint32_t nwait, nrun;
    uint32_t wait[WIN_HIST];
    uint32_t run[WIN_HIST];
};

struct window {
    int64_t sec;      /* the second of the newest slot */
    int64_t first;    /* the first second recorded, 0: none yet */
    double until;     /* the end of second `sec`: until then, records go */
    struct win_slot *slot; /* here, */
    uint32_t *ran_now, *depth_now; /* and here, with nothing to advance */
    uint32_t last_depth;
    struct win_slot slots[WIN_SECONDS];
    uint32_t ran[HISTORY_SECONDS];   /* tasks run to an answer */
    uint32_t depth[HISTORY_SECONDS]; /* largest queue depth seen */
};

/* Figures over the last WIN_SECONDS, for the renderers. */
struct window_view {
    double seconds;  /* span covered: up to WIN_SECONDS */
    uint64_t ran;    /* tasks run to an answer in it */
    struct hist wait, run; /* count and buckets only */
};

/* Why a worker left: the restart reasons of the stats. */
enum retire_reason {
    RETIRE_NONE = 0,
    RETIRE_MEMORY_SOFT,
    RETIRE_MEMORY_HARD,
    RETIRE_MEMORY_BUDGET,
    RETIRE_IDLE,
    RETIRE_MAX_TASKS,
    RETIRE_MAX_AGE,
    RETIRE_CRASH,
    RETIRE_KILLED, /* timeout or cancel of its task */
    RETIRE_SIGNAL, /* restart asked: SIGUSR1, taskhostctl restart */
    RETIRE_RELOAD,
    RETIRE_INIT,   /* init failed or never finished */
    RETIRE_SHUTDOWN,
    RETIRE_COUNT
};

/* "memory_soft", "memory_hard", ...: the names used in stats output. */
const char *retire_reason_name(int reason);

struct pool_stats {
    uint64_t submitted;               /* accepted into the queue */
    uint64_t finished[TH_STATE_COUNT]; /* by final state */
    uint64_t restarts[RETIRE_COUNT];  /* workers gone, by reason */
    uint64_t spawned;                 /* workers started */
    uint64_t dropped;                 /* queued tasks of vanished clients */
    struct hist wait;                 /* queue wait, microseconds */
    struct hist run;                  /* run time, microseconds */
    struct window *win;               /* the same, over recent seconds:
                                       * mapped at the first record, its
                                       * pages touched a second at a time */
};

/* Releases what s holds beyond itself (its window). */
void stats_free(struct pool_stats *s);

/* A worker's life events, newest kept: started, stopped, recycled,
 * crashed, killed. */
enum { EV_STARTED, EV_STOPPED, EV_RECYCLED, EV_CRASHED, EV_KILLED };
#define EVENTS_MAX 50

struct worker_event {
    double time;    /* wall clock, seconds since the epoch */
    int pid;
    int kind;       /* EV_* */
    int reason;     /* enum retire_reason */
    char pool[64];
    char detail[96];
};

struct event_ring {
    struct worker_event ev[EVENTS_MAX];
    uint64_t total; /* events ever recorded; the newest is total - 1 */
};

/* Records `us` microseconds. */
void hist_add(struct hist *h, uint64_t us);

/* The fixed bucket bounds, in microseconds, ascending (HIST_FIXED). */
const uint64_t *hist_bounds_us(void);

/* Seconds as whole microseconds; 0 for a negative span (a task submitted
 * and started within one step of the loop, whose clock is read once). */
uint64_t stats_us(double seconds);

/* Records a task's queue wait or run time (microseconds) at loop time
 * `now` (seconds), in the lifetime histogram and the window. A run counts
 * as one task run to an answer. */
void stats_wait(struct pool_stats *s, double now, uint64_t us);
void stats_run(struct pool_stats *s, double now, uint64_t us);

/* Notes the pool's queue depth at `now`, for the depth history. */
void stats_depth(struct pool_stats *s, double now, size_t depth);

/* Sums the last WIN_SECONDS as of `now` into *v. */
void stats_window(const struct pool_stats *s, double now,
                  struct window_view *v);

/* Records that worker `pid` of `pool` started. */
void stats_worker_started(struct event_ring *r, const char *pool, int pid);

/* Records that worker `pid` of `pool` left for `reason`; `crashed` when
 * it died on its own, `how` as the reaper described the exit. */
void stats_worker_exited(struct event_ring *r, const char *pool, int pid,
                         int reason, int crashed, const char *how);

/* "started", "stopped", "recycled", "crashed", "killed". */
const char *stats_event_name(int kind);

/* Whether every pool of `h` serves: 0, or -1 with the first reason (a
 * pool failed, or backs off after failed starts) in `why`. */
int stats_health(const struct th_host *h, char *why, size_t len);

/* The value below which fraction `q` (0..1) of samples fall, in
 * microseconds (an upper bucket bound); 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double q);

/* The host at a glance, for a status line (systemd's STATUS=). */
struct stats_summary {
    size_t pools;
    size_t workers, busy;
    size_t queued;      /* tasks waiting in queues */
    uint64_t finished;  /* tasks answered so far, every pool */
};

/* Fills `out` from the serving pools of `host`. */
void stats_summary(const struct th_host *host, struct stats_summary *out);

#endif /* TH_STATS_H */
