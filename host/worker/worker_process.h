/* worker_process.h - what runs inside a worker process (worker layer).
 *
 * After fork the worker resets its signals, keeps only its socket to the
 * host (as fd 3), stdin on /dev/null, stdout, stderr and the log, applies
 * the pool's limits, calls the plugin's init() once, answers FRAME_READY,
 * and then runs FRAME_TASKs in order until FRAME_STOP, EOF or SIGTERM;
 * then it calls fini() and exits 0. See worker_wire.h for the frames.
 */
#ifndef TH_CHILD_H
#define TH_CHILD_H

#include <stdint.h>

struct plugin;
struct th_settings;

struct child_params {
    int fd;                             /* socket to the host */
    const struct plugin *plugin;
    const struct th_settings *settings;
    const char *pool;                   /* for the log tag */
    int measure_rss;                    /* report RSS with results */
    uint64_t address_space_limit;       /* RLIMIT_AS, 0: none */
    long rlimit_nofile;                 /* 0: inherit */
    long rlimit_core;                   /* -1: inherit */
    int uid, gid;                       /* -1: keep */
    int host_pid;                       /* to notice a host gone already */
    char *arena;                        /* shared payload rings, or NULL */
};

/* The resident set, in KiB, read from an open /proc/PID/statm (pread at
 * offset 0, so the fd can be read again); 0 when it cannot be read. */
uint32_t child_statm_kib(int statm);

/* Runs the worker. Never returns. */
void child_main(const struct child_params *p) __attribute__((noreturn));

#endif /* TH_CHILD_H */
