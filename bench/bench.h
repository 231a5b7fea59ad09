/* bench.h - the benchmark suite of taskhost: figures, timing, load loops.
 *
 * One program (th-bench) measures every figure several times (BENCH_RUNS)
 * and prints, per figure, the median and the min-max of the runs, its ratio
 * to the raw socketpair reference, and the target it is held to. Suites
 * record one value per run with fig_put(); a figure that cannot be
 * measured gets fig_na() with the reason, never a made-up value.
 */
#ifndef TH_BENCH_H
#define TH_BENCH_H

#include <stddef.h>
#include <sys/types.h>

#include "taskhost_host.h"

#define BENCH_RUNS_MAX 16

/* Repetitions of every figure (-r; default 5). */
extern int bench_runs;

/* ---- figures (main.c) ---- */

/* Adds one run's value to figure `key` (a key of the table in main.c). */
void fig_put(const char *key, double value);

/* Marks figure `key` as not measurable, with a short reason. */
void fig_na(const char *key, const char *why);

/* The median of figure `key` so far, or 0 when it has none. */
double fig_median(const char *key);

/* Prints a progress line to the terminal (stderr of the driver). */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- util.c ---- */

/* Monotonic seconds. */
double now_s(void);

/* Sorts v[0..n) and returns its q-quantile (0..1), nearest rank. */
double percentile(double *v, size_t n, double q);

/* The median of v[0..n) (sorts v). */
double median(double *v, size_t n);

/* Private_Clean + Private_Dirty of `pid` in KiB, from smaps_rollup; -1. */
long proc_private_kib(pid_t pid);

/* VmRSS of `pid` in KiB; -1. */
long proc_rss_kib(pid_t pid);

/* The pid of the first worker of `pool` in a JSON stats text, or -1. */
pid_t stats_worker_pid(const char *json, const char *pool);

/* The queue depth of `pool` in a JSON stats text, or -1. */
long stats_queue_depth(const char *json, const char *pool);

/* Path of example plugin `name` in the build tree (static buffer). */
const char *plugin_path(const char *name);

/* Path of a file under the build tree (static buffer). */
const char *build_path(const char *rel);

/* A private scratch directory, made on first use. */
const char *scratch_dir(void);

/* ---- load.c: the same load loops over the embedding API and a client ---- */

/* Something tasks can be submitted to: a th_host or a th_client. */
struct target {
    void *ctx;
    int (*submit)(void *ctx, const char *pool, const char *task,
                  const void *input, size_t len, th_done_fn done, void *arg);
    int (*step)(void *ctx, int timeout_ms);
};

struct target target_host(th_host *h);

/* What one closed-loop run measured. */
struct load_result {
    long tasks;      /* answered ok */
    long failed;     /* answered otherwise */
    double seconds;  /* first submit to last answer */
    double tps;      /* tasks per second */
    double p50_us, p99_us;
    double mbps;     /* input bytes per second / 1e6 */
    double start, end; /* now_s() of the first submit and the last answer */
};

/* Keeps `inflight` tasks of `len` input bytes pending on `pool`/`task`
 * until `ntasks` were answered. Returns 0, or -1 (with a note) when a
 * task failed or the target broke. */
int load_run(const struct target *t, const char *pool, const char *task,
             size_t len, int inflight, long ntasks, struct load_result *out);

/* load_run() that leaves the latencies (seconds, sorted) of the tasks
 * answered ok in lat[0..out->tasks), which must hold `ntasks`. */
int load_run_keep(const struct target *t, const char *pool, const char *task,
                  size_t len, int inflight, long ntasks,
                  struct load_result *out, double *lat);

/* ---- daemon.c: taskhostd of the build tree, driven through a client ---- */

struct th_client;

struct daemon {
    pid_t pid;
    int with_http;     /* the HTTP endpoint, on a unix socket */
    const char *pools; /* more pool groups for its config, or NULL */
    char conf[4200], sock[4200], http[4200];
};

/* Writes the config (pools echo: 2 workers, idle, sleep; then d->pools)
 * in the scratch directory and starts the daemon. Returns 0 or -1. */
int start_daemon(struct daemon *d);

/* Connects, retrying while the daemon starts, for up to `limit` s. */
struct th_client *connect_to(const struct daemon *d, double limit);

/* Shuts the daemon down through c (closed, may be NULL) and waits. */
void stop_daemon(struct daemon *d, struct th_client *c);

struct target target_client(struct th_client *c);

/* ---- suites ---- */
void suite_raw(void);
void suite_memcpy(void);
/* Only the payload rows of the embed and daemon suites (-s payload). */
void suite_embed_payload(void);
void suite_daemon_payload(void);
void suite_embed(const char *self);
void suite_cpu(void);
void suite_daemon(void);
void suite_cluster(void);
void suite_latency(void);
void suite_idle(void);

/* The --probe-memory mode: a fresh process measures the embedding host's
 * memory and prints "worker_private rss0 rss1000" in KiB. */
int probe_memory(void);

#endif /* TH_BENCH_H */
