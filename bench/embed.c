/* embed.c - figures of the embedding API (taskhost_host.h).
 *
 * The bench process is the host: its pools' workers are forked from it.
 * Each lifecycle figure (start, respawn, cancel) uses a fresh host, so that
 * one run's dead workers do not count as early deaths in the next; the
 * memory figures come from a fresh process (--probe-memory), so that the
 * bench's own buffers are not in them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define ECHO_WARMUP 20000
#define ECHO_256_COUNT 200000
#define ECHO_SETTLE 0.5 /* seconds of quiet before each 256-in-flight run */
#define KIB64_COUNT 3000
#define MIB1_COUNT 300
#define PAYLOAD_INFLIGHT 8

/* A host with the echo and sleep plugins loaded; NULL on failure. */
static th_host *open_host(void)
{
    th_host *h;
    char err[512];
    if (th_host_new(&h) < 0)
        return NULL;
    const char *names[] = {"echo", "sleep"};
    for (size_t i = 0; i < 2; i++) {
        if (th_host_add_plugin(h, names[i], plugin_path(names[i]), err,
                               sizeof err) < 0) {
            note("cannot load %s: %s", plugin_path(names[i]), err);
            th_host_close(h, TH_CLOSE_FORCE);
            return NULL;
        }
    }
    return h;
}

/* Adds pool `name` of `plugin` with exactly `workers` workers. */
static int add_pool(th_host *h, const char *name, const char *plugin,
                    int workers)
{
    th_pool_opts o;
    char err[512];
    th_pool_opts_init(&o);
    o.name = name;
    o.plugin = plugin;
    o.min_workers = o.max_workers = workers;
    o.max_queue = 4096;
    int r = th_host_add_pool(h, &o, err, sizeof err);
    if (r < 0)
        note("cannot add pool %s: %s", name, err);
    return r;
}

/* One synchronous task; returns 0 when it was answered ok. */
static int call_ok(th_host *h, const char *pool, const char *task,
                   const char *input)
{
    th_result r;
    if (th_host_call(h, pool, task, input, strlen(input), NULL, &r) < 0)
        return -1;
    int ok = r.state == TH_STATE_OK;
    th_result_free(&r);
    return ok ? 0 : -1;
}

/* ---- echo: latency, throughput, payloads ---- */

static int payload_run(const struct target *t)
{
    struct load_result r;
    if (load_run(t, "echo", "echo", 64 << 10, PAYLOAD_INFLIGHT, KIB64_COUNT,
                 &r) < 0)
        return -1;
    fig_put("embed_64k_mbps", r.mbps);
    if (load_run(t, "echo", "echo", 1 << 20, PAYLOAD_INFLIGHT, MIB1_COUNT,
                 &r) < 0)
        return -1;
    fig_put("embed_1m_mbps", r.mbps);
    return 0;
}

/* Lets the host idle for `seconds`, its loop running. */
static void settle(const struct target *t, double seconds)
{
    double end = now_s() + seconds;
    while (now_s() < end)
        t->step(t->ctx, 10);
}

static int echo_run(const struct target *t)
{
    struct load_result r;
    /* Each run starts from a quiet machine, as in the runs of 2026-11-23,
     * where a one-in-flight run (half a second of near idleness) came
     * before each. Run straight after other load, the scheduler keeps the
     * host and both workers on one CPU for the whole run (their socket
     * wake-ups are "sync": the woken runs where the waker ran) and the
     * figure is a one-CPU figure (README, "How to read it"). */
    settle(t, ECHO_SETTLE);
    if (load_run(t, "echo", "echo", 16, 256, ECHO_256_COUNT, &r) < 0)
        return -1;
    fig_put("embed_256_tps", r.tps);
    fig_put("embed_256_p50_us", r.p50_us);
    fig_put("embed_256_p99_us", r.p99_us);
    return payload_run(t);
}

/* The payload rows alone, on a host of their own (-s payload). */
void suite_embed_payload(void)
{
    note("embedding API: payloads");
    th_host *h = open_host();
    if (h == NULL || add_pool(h, "echo", "echo", 2) < 0) {
        th_host_close(h, TH_CLOSE_FORCE);
        return;
    }
    struct target t = target_host(h);
    struct load_result r;
    load_run(&t, "echo", "echo", 16, 64, ECHO_WARMUP, &r);
    for (int i = 0; i < bench_runs; i++)
        if (payload_run(&t) < 0)
            break;
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void echo_figures(void)
{
    th_host *h = open_host();
    if (h == NULL || add_pool(h, "echo", "echo", 2) < 0) {
        th_host_close(h, TH_CLOSE_FORCE);
        return;
    }
    struct target t = target_host(h);
    struct load_result r;
    /* Warm up: workers started, the pool has seen that tasks are short. */
    load_run(&t, "echo", "echo", 16, 64, ECHO_WARMUP, &r);
    for (int i = 0; i < bench_runs; i++)
        if (echo_run(&t) < 0)
            break;
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- pool start, respawn, cancel ---- */

static double pool_start_ms(void)
{
    th_host *h = open_host();
    if (h == NULL)
        return -1;
    double t0 = now_s();
    int r = add_pool(h, "echo", "echo", 1);
    if (r == 0)
        r = call_ok(h, "echo", "echo", "0123456789abcdef");
    double ms = (now_s() - t0) * 1e3;
    th_host_close(h, TH_CLOSE_GRACEFUL);
    return r == 0 ? ms : -1;
}

static pid_t first_worker(th_host *h, const char *pool)
{
    char *json = NULL;
    if (th_host_stats(h, pool, TH_STATS_JSON, &json) < 0)
        return -1;
    pid_t pid = stats_worker_pid(json, pool);
    free(json);
    return pid;
}

/* SIGKILLs the only worker of a warm pool; times until a task is ok. */
static double respawn_ms(void)
{
    th_host *h = open_host();
    if (h == NULL)
        return -1;
    double ms = -1;
    if (add_pool(h, "echo", "echo", 1) == 0 &&
        call_ok(h, "echo", "echo", "warm") == 0) {
        pid_t pid = first_worker(h, "echo");
        double t0 = now_s();
        if (pid > 0 && kill(pid, SIGKILL) == 0) {
            int tries = 0;
            while (call_ok(h, "echo", "echo", "again") < 0 && ++tries < 100)
                ;
            ms = tries < 100 ? (now_s() - t0) * 1e3 : -1;
        }
    }
    th_host_close(h, TH_CLOSE_FORCE);
    return ms;
}

struct answer {
    int done;
    th_state state;
    double at;
};

static void on_answer(const th_result *r, void *arg)
{
    struct answer *a = arg;
    a->done = 1;
    a->state = r->state;
    a->at = now_s();
}

static int step_until(th_host *h, const struct answer *a, double limit)
{
    double end = now_s() + limit;
    while (!a->done && now_s() < end)
        th_host_step(h, 10);
    return a->done ? 0 : -1;
}

/* Cancels a running sleep on a 1-worker pool; times until the next task
 * (a sleep of 0 ms) is answered ok. */
static double cancel_next_ms(void)
{
    th_host *h = open_host();
    if (h == NULL)
        return -1;
    struct answer slow = {0}, next = {0};
    uint64_t id;
    double ms = -1;
    if (add_pool(h, "sleep", "sleep", 1) == 0 &&
        call_ok(h, "sleep", "sleep", "0") == 0 &&
        th_host_submit(h, "sleep", "sleep", "10000", 5, NULL, on_answer, &slow,
                       &id) == 0) {
        double settle = now_s() + 0.02; /* let the worker start sleeping */
        while (now_s() < settle)
            th_host_step(h, 5);
        double t0 = now_s();
        if (th_host_cancel(h, id) == 0 &&
            th_host_submit(h, "sleep", "sleep", "0", 1, NULL, on_answer, &next,
                           NULL) == 0 &&
            step_until(h, &next, 5.0) == 0 && next.state == TH_STATE_OK &&
            slow.state == TH_STATE_CANCELLED)
            ms = (next.at - t0) * 1e3;
    }
    th_host_close(h, TH_CLOSE_FORCE);
    return ms;
}

static void lifecycle_figures(void)
{
    for (int i = 0; i < bench_runs; i++) {
        double v = pool_start_ms();
        if (v >= 0)
            fig_put("pool_start_ms", v);
        v = respawn_ms();
        if (v >= 0)
            fig_put("respawn_ms", v);
        v = cancel_next_ms();
        if (v >= 0)
            fig_put("cancel_next_ms", v);
    }
}

/* ---- memory ---- */

static void count_answer(const th_result *r, void *arg)
{
    (void)r;
    (*(long *)arg)++;
}

/* Queues 1,000 tasks behind a long one on the 1-worker sleep pool. */
static int queue_1000(th_host *h, long *answered)
{
    struct answer blocker = {0};
    uint64_t id;
    if (th_host_submit(h, "sleep", "sleep", "10000", 5, NULL, on_answer,
                       &blocker, &id) < 0)
        return -1;
    while (th_host_task_state(h, id) != TH_RUNNING)
        th_host_step(h, 1);
    for (int i = 0; i < 1000; i++)
        if (th_host_submit(h, "sleep", "sleep", "0", 1, NULL, count_answer,
                           answered, NULL) < 0)
            return -1;
    for (int i = 0; i < 10; i++)
        th_host_step(h, 1);
    return 0;
}

int probe_memory(void)
{
    long answered = 0;
    th_host *h = open_host();
    if (h == NULL || add_pool(h, "idle", "echo", 1) < 0 ||
        add_pool(h, "sleep", "sleep", 1) < 0 ||
        call_ok(h, "idle", "echo", "0123456789abcdef") < 0 ||
        call_ok(h, "sleep", "sleep", "0") < 0)
        return 1;
    double settle = now_s() + 0.05;
    while (now_s() < settle)
        th_host_step(h, 10);
    long priv = proc_private_kib(first_worker(h, "idle"));
    long rss0 = proc_rss_kib(getpid());
    if (queue_1000(h, &answered) < 0)
        return 1;
    long rss1000 = proc_rss_kib(getpid());
    printf("%ld %ld %ld\n", priv, rss0, rss1000);
    fflush(stdout);
    th_host_close(h, TH_CLOSE_FORCE);
    return 0;
}

/* Runs `self --probe-memory` and reads its three figures. */
static int run_probe(const char *self, long v[3])
{
    int fd[2];
    if (pipe(fd) == -1)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl("/proc/self/exe", self, "--probe-memory", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    int n = f ? fscanf(f, "%ld %ld %ld", &v[0], &v[1], &v[2]) : 0;
    if (f != NULL)
        fclose(f);
    int status = 0;
    if (pid > 0)
        waitpid(pid, &status, 0);
    return n == 3 && v[0] > 0 ? 0 : -1;
}

static void memory_figures(const char *self)
{
    for (int i = 0; i < bench_runs; i++) {
        long v[3];
        if (run_probe(self, v) < 0) {
            fig_na("embed_worker_private_kib", "probe failed");
            return;
        }
        fig_put("embed_worker_private_kib", (double)v[0]);
        fig_put("embed_rss_0_kib", (double)v[1]);
        fig_put("embed_rss_1000_kib", (double)v[2]);
    }
}

void suite_embed(const char *self)
{
    note("embedding API: echo latency, throughput and payloads");
    echo_figures();
    note("embedding API: pool start, respawn, cancel");
    lifecycle_figures();
    note("embedding API: memory");
    memory_figures(self);
}
