/* cpu.c - CPU-bound scaling: the hash plugin with many rounds.
 *
 * The reference is the plugin's own task function called inline (dlopen +
 * its descriptor) in a process forked for the purpose, with the output
 * going through libtaskhost's th_task_write() as in a worker; a fork, so
 * that a task handle that no longer matches the engine's cannot take the
 * whole suite down. The rounds are calibrated
 * so that one task takes about TASK_MS; then 1 and 2 workers each run
 * queues of such tasks, and the three take turns in short chunks so that
 * drift on a noisy machine hits them alike.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "buf.h"
#include "settings.h"

#define TASK_MS 5.0
#define TASKS_PER_RUN 60
#define CHUNK_TASKS 20
#define SPIN_ITERS 100000000UL
#define CALIBRATE_ROUNDS 2000

/* The worker-side task handle of the SDK, as host/worker/worker_process.c defines it: the
 * output is appended to `out` behind a frame header at `header`; the
 * fields after these are zero when unused (no shared-memory arena here).
 * Checked after every call through the output length. */
struct th_task {
    struct buf *out;
    size_t header;
    int failed;
    const char *name;
    char unused[256];
};

#define FRAME_HEADER 32

struct inline_hash {
    void *dl;
    const th_plugin *desc;
    void *state;
    struct buf out;
};

static int hash_init(struct inline_hash *ih, long rounds)
{
    struct setting item = {.key = "rounds", .type = SETTING_INT, .i = rounds};
    struct th_settings s = {&item, 1};
    if (ih->state != NULL)
        ih->desc->fini(ih->state);
    ih->state = NULL;
    return ih->desc->init(&s, &ih->state);
}

static int hash_open(struct inline_hash *ih)
{
    memset(ih, 0, sizeof *ih);
    ih->dl = dlopen(plugin_path("hash"), RTLD_NOW | RTLD_LOCAL);
    if (ih->dl == NULL) {
        note("dlopen: %s", dlerror());
        return -1;
    }
    ih->desc = dlsym(ih->dl, TH_PLUGIN_SYMBOL);
    return ih->desc != NULL && ih->desc->init != NULL ? 0 : -1;
}

static void hash_close(struct inline_hash *ih)
{
    if (ih->state != NULL)
        ih->desc->fini(ih->state);
    if (ih->dl != NULL)
        dlclose(ih->dl);
    free(ih->out.data);
}

/* Gives `out` room for a result, as a worker's buffer has. */
static int out_ready(struct buf *out)
{
    if (out->data != NULL)
        return 0;
    out->data = malloc(4096);
    out->cap = out->data ? 4096 : 0;
    return out->data ? 0 : -1;
}

/* Runs the task `n` times; returns seconds per task, or -1. */
static double run_inline(struct inline_hash *ih, int n)
{
    if (out_ready(&ih->out) < 0)
        return -1;
    th_run_fn run = ih->desc->tasks[0].run;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        struct th_task task = {.out = &ih->out, .name = "sha256"};
        ih->out.off = 0;
        ih->out.len = FRAME_HEADER;
        if (run(ih->state, &task, "0123456789abcdef", 16) < 0 ||
            ih->out.len != FRAME_HEADER + 64)
            return -1;
    }
    return (now_s() - t0) / n;
}

/* In a forked process: init with `rounds`, run the task twice to warm
 * up, then `n` times. Returns seconds per task, or -1. */
static double hash_inline(struct inline_hash *ih, long rounds, int n)
{
    int fd[2];
    double per = -1;
    if (pipe(fd) == -1)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        if (hash_init(ih, rounds) == 0 && run_inline(ih, 2) > 0)
            per = run_inline(ih, n);
        _exit(write(fd[1], &per, sizeof per) == sizeof per ? 0 : 1);
    }
    close(fd[1]);
    int status = 0;
    if (pid == -1 || read(fd[0], &per, sizeof per) != sizeof per)
        per = -1;
    close(fd[0]);
    if (pid > 0 && waitpid(pid, &status, 0) == pid && status != 0)
        note("the inline call of the hash task failed (status %#x)", status);
    return per;
}

/* Picks the rounds that make one task last about TASK_MS. */
static long calibrate(struct inline_hash *ih)
{
    double per = 1e9;
    for (int i = 0; i < 3; i++) { /* the fastest: the least disturbed */
        double v = hash_inline(ih, CALIBRATE_ROUNDS, 10);
        if (v <= 0)
            return -1;
        per = v < per ? v : per;
    }
    long rounds = (long)(CALIBRATE_ROUNDS * (TASK_MS / 1e3) / per);
    return rounds > 0 ? rounds : 1;
}

static th_host *hash_host(long rounds)
{
    th_host *h;
    char err[512], settings[64];
    if (th_host_new(&h) < 0)
        return NULL;
    if (th_host_add_plugin(h, "hash", plugin_path("hash"), err, sizeof err) <
        0) {
        note("cannot load hash: %s", err);
        th_host_close(h, TH_CLOSE_FORCE);
        return NULL;
    }
    snprintf(settings, sizeof settings, "rounds = %ld;", rounds);
    for (int workers = 1; workers <= 2; workers++) {
        th_pool_opts o;
        th_pool_opts_init(&o);
        o.name = workers == 1 ? "hash1" : "hash2";
        o.plugin = "hash";
        o.min_workers = o.max_workers = workers;
        o.settings = settings;
        if (th_host_add_pool(h, &o, err, sizeof err) < 0) {
            note("cannot add pool %s: %s", o.name, err);
            th_host_close(h, TH_CLOSE_FORCE);
            return NULL;
        }
    }
    return h;
}

/* A deep queue of `n` tasks on `pool`; returns tasks per second or -1. */
static double pool_tps(const struct target *t, const char *pool, int n)
{
    struct load_result r;
    if (load_run(t, pool, "sha256", 16, n, n, &r) < 0)
        return -1;
    return r.tps;
}

/* One run: inline, 1 worker and 2 workers take turns in chunks of
 * CHUNK_TASKS, so that the machine's drift (other processes, frequency)
 * weighs on the three alike. Seconds per task inline, tasks/s of each
 * pool. Returns 0 or -1. */
static int interleaved(struct inline_hash *ih, long rounds,
                       const struct target *t, double v[3])
{
    double secs[3] = {0, 0, 0};
    for (int k = 0; k < TASKS_PER_RUN / CHUNK_TASKS; k++) {
        double per = hash_inline(ih, rounds, CHUNK_TASKS);
        double one = pool_tps(t, "hash1", CHUNK_TASKS);
        double two = pool_tps(t, "hash2", 2 * CHUNK_TASKS);
        if (per <= 0 || one <= 0 || two <= 0)
            return -1;
        secs[0] += per * CHUNK_TASKS;
        secs[1] += CHUNK_TASKS / one;
        secs[2] += 2 * CHUNK_TASKS / two;
    }
    v[0] = secs[0] / TASKS_PER_RUN;
    v[1] = TASKS_PER_RUN / secs[1];
    v[2] = 2 * TASKS_PER_RUN / secs[2];
    return 0;
}

static void spin(void)
{
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < SPIN_ITERS; i++)
        x += i * i;
}

/* What the machine gives: a pure CPU loop in 2 processes at once vs 1
 * (1.0 when the second CPU is busy elsewhere), or -1. */
static double spin_scaling(void)
{
    double t0 = now_s();
    spin();
    double one = now_s() - t0;
    t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        spin();
        _exit(0);
    }
    spin();
    if (pid == -1 || waitpid(pid, NULL, 0) != pid)
        return -1;
    return 2 * one / (now_s() - t0);
}

static int one_run(struct inline_hash *ih, long rounds,
                   const struct target *t)
{
    double spun = spin_scaling();
    if (spun > 0)
        fig_put("cpu_machine_x", spun);
    double v[3];
    if (interleaved(ih, rounds, t, v) < 0)
        return -1;
    double per = v[0], one = v[1], two = v[2];
    fig_put("cpu_inline_ms", per * 1e3);
    fig_put("cpu_1w_tps", one);
    fig_put("cpu_2w_tps", two);
    fig_put("cpu_scaling_x", two / one);
    fig_put("cpu_overhead_pct", ((1.0 / one) / per - 1.0) * 100.0);
    return 0;
}

void suite_cpu(void)
{
    note("cpu-bound: hash, inline vs 1 and 2 workers");
    struct inline_hash ih;
    long rounds = hash_open(&ih) == 0 ? calibrate(&ih) : -1;
    th_host *h = rounds > 0 ? hash_host(rounds) : NULL;
    if (h == NULL) {
        fig_na("cpu_scaling_x", "hash plugin unusable");
        hash_close(&ih);
        th_host_close(h, TH_CLOSE_FORCE);
        return;
    }
    note("hash rounds = %ld (about %.0f ms per task)", rounds, TASK_MS);
    struct target t = target_host(h);
    pool_tps(&t, "hash1", 4); /* warm up: workers started */
    pool_tps(&t, "hash2", 4);
    for (int i = 0; i < bench_runs; i++)
        if (one_run(&ih, rounds, &t) < 0) {
            note("cpu-bound run failed");
            break;
        }
    th_host_close(h, TH_CLOSE_FORCE);
    hash_close(&ih);
}
