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

#define HIST_SUB 8
#define HIST_BUCKETS (64 * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t sum; /* microseconds */
    uint64_t buckets[HIST_BUCKETS];
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
};

/* Records `us` microseconds. */
void hist_add(struct hist *h, uint64_t us);

/* The value below which fraction `q` (0..1) of samples fall, in
 * microseconds (an upper bucket bound); 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double q);

#endif /* TH_STATS_H */
