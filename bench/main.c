/* main.c - th-bench: run the suites, print the table and the JSON lines.
 *
 *   th-bench [-r RUNS] [-s raw,latency,embed,cpu,daemon,cluster,payload,idle]
 *            [-o FILE]
 *
 * -s picks suites; `payload` runs only the payload rows (memcpy, embedded
 * and daemon echo of 64 KiB and 1 MiB), which the embed and daemon suites
 * also measure, so that they can be measured alone on a busy machine;
 * `raw,latency` the one-at-a-time figures, Piscina's and their reference.
 * Figures of suites not run are left out.
 * Results go to stdout: the machine, then a Markdown table (median and
 * min-max of RUNS runs, the ratio to the raw reference, the target), then
 * one JSON line per figure. -o also writes the table to FILE. Progress and
 * failures go to stderr; the engine's own log goes to a file in the
 * scratch directory, so that it does not mix with them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

int bench_runs = 5;

/* What a figure is compared with: nothing, the raw round trip, the raw
 * message rate, or the same run's memcpy (payload rates). */
enum ratio { R_NONE, R_LAT, R_TPUT, R_MEMCPY };
/* G_MAX_RAW: at most target x the raw round trip; G_MAX_PEER: at most
 * target x Piscina's p50, one task at a time, of the same run. */
enum goal { G_NONE, G_MIN, G_MAX, G_MAX_RAW, G_MAX_PEER };

struct figure {
    const char *key, *label, *unit;
    enum ratio ratio; /* compared with the raw round trip or message rate */
    enum goal goal;
    double target;
};

/* What was measured for a figure: its runs, or why it could not be. */
struct measured {
    double v[BENCH_RUNS_MAX];
    int n;
    char na[120];
};

#define RAW_RTT "raw_rtt_p50_us"
#define RAW_MSGS "raw_msgs_per_s"
#define MEMCPY_1M "memcpy_1m_mbps"
#define PEER_P50 "piscina_1_p50_us"

static struct figure figs[] = {
    {RAW_RTT, "raw: socketpair round trip, p50", "µs", R_NONE, G_NONE, 0},
    {RAW_MSGS, "raw: pipelined 16 B messages, 2 processes", "msg/s", R_NONE,
     G_NONE, 0},
    {"embed_1_tps", "embed: echo, 1 in flight", "tasks/s", R_TPUT, G_NONE, 0},
    {"embed_1_p50_us", "embed: echo, 1 in flight, p50", "µs", R_LAT,
     G_MAX_RAW, 1.3},
    {"embed_1_p99_us", "embed: echo, 1 in flight, p99", "µs", R_LAT, G_NONE,
     0},
    {"embed_1_poll_p50_us", "embed: echo, 1 in flight, busy_poll, p50", "µs",
     R_LAT, G_MAX_PEER, 0.8},
    {"embed_1_poll_p99_us", "embed: echo, 1 in flight, busy_poll, p99", "µs",
     R_LAT, G_NONE, 0},
    {"embed_256_tps", "embed: echo, 256 in flight", "tasks/s", R_TPUT, G_MIN,
     400000},
    {"embed_256_p50_us", "embed: echo, 256 in flight, p50", "µs", R_LAT,
     G_NONE, 0},
    {"embed_256_p99_us", "embed: echo, 256 in flight, p99", "µs", R_LAT,
     G_NONE, 0},
    {"daemon_1_tps", "daemon: echo, 1 in flight", "tasks/s", R_TPUT, G_NONE,
     0},
    {"daemon_1_p50_us", "daemon: echo, 1 in flight, p50", "µs", R_LAT,
     G_MAX_RAW, 2.5},
    {"daemon_1_p99_us", "daemon: echo, 1 in flight, p99", "µs", R_LAT, G_NONE,
     0},
    {"daemon_1_ppoll_p50_us",
     "daemon: echo, 1 in flight, busy_poll (pool only), p50", "µs", R_LAT,
     G_MAX_PEER, 1.0},
    {"daemon_1_ppoll_p99_us",
     "daemon: echo, 1 in flight, busy_poll (pool only), p99", "µs", R_LAT,
     G_NONE, 0},
    {"daemon_1_poll_p50_us",
     "daemon: echo, 1 in flight, busy_poll (pool and client), p50", "µs",
     R_LAT, G_MAX_PEER, 1.0},
    {"daemon_1_poll_p99_us",
     "daemon: echo, 1 in flight, busy_poll (pool and client), p99", "µs",
     R_LAT, G_NONE, 0},
    {PEER_P50, "piscina: no-op, 1 in flight, 2 threads, p50", "µs", R_LAT,
     G_NONE, 0},
    {"piscina_1_p99_us", "piscina: no-op, 1 in flight, 2 threads, p99", "µs",
     R_LAT, G_NONE, 0},
    {"daemon_256_tps", "daemon: echo, 1 client x 256 in flight", "tasks/s",
     R_TPUT, G_MIN, 250000},
    {"daemon_256_p50_us", "daemon: echo, 1 client x 256, p50", "µs", R_LAT,
     G_NONE, 0},
    {"daemon_256_p99_us", "daemon: echo, 1 client x 256, p99", "µs", R_LAT,
     G_NONE, 0},
    {"daemon_8x64_tps", "daemon: echo, 8 clients x 64 in flight", "tasks/s",
     R_TPUT, G_NONE, 0},
    {"daemon_8x64_p50_us", "daemon: echo, 8 clients x 64, p50", "µs", R_LAT,
     G_NONE, 0},
    {"daemon_8x64_p99_us", "daemon: echo, 8 clients x 64, p99", "µs", R_LAT,
     G_NONE, 0},
    {"daemon_scrape_tps",
     "daemon: echo, 256 in flight, /metrics scraped every 100 ms", "tasks/s",
     R_TPUT, G_NONE, 0},
    {"daemon_scrape_pct", "daemon: throughput while scraped, vs not", "%",
     R_NONE, G_MIN, 98},
    {MEMCPY_1M, "raw: memcpy of 1 MiB, one process (ceiling)", "MB/s",
     R_NONE, G_NONE, 0},
    {"embed_64k_mbps", "embed: echo 64 KiB inputs, 8 in flight", "MB/s",
     R_MEMCPY, G_NONE, 0},
    {"embed_1m_mbps", "embed: echo 1 MiB inputs, 8 in flight", "MB/s",
     R_MEMCPY, G_MIN, 12000},
    {"daemon_64k_mbps", "daemon: echo 64 KiB inputs, 8 in flight", "MB/s",
     R_MEMCPY, G_MIN, 4000},
    {"daemon_1m_mbps", "daemon: echo 1 MiB inputs, 8 in flight", "MB/s",
     R_MEMCPY, G_MIN, 8000},
    {"cpu_inline_ms", "cpu: hash task called inline", "ms/task", R_NONE,
     G_NONE, 0},
    {"cpu_1w_tps", "cpu: hash pool, 1 worker", "tasks/s", R_NONE, G_NONE, 0},
    {"cpu_2w_tps", "cpu: hash pool, 2 workers", "tasks/s", R_NONE, G_NONE, 0},
    {"cpu_scaling_x", "cpu: 2 workers vs 1", "×", R_NONE, G_MIN, 1.95},
    {"cpu_machine_x", "cpu: bare integer loop, 2 processes vs 1 (machine)",
     "×", R_NONE, G_NONE, 0},
    {"cpu_overhead_pct", "cpu: 1 worker vs inline, overhead", "%", R_NONE,
     G_MAX, 2},
    {"pool_start_ms", "embed: pool start to first result", "ms", R_NONE,
     G_MAX, 5},
    {"respawn_ms", "embed: SIGKILL of the worker to next result", "ms",
     R_NONE, G_NONE, 0},
    {"cancel_next_ms", "embed: cancel running task to next served, 1 worker",
     "ms", R_NONE, G_MAX, 5},
    {"embed_worker_private_kib", "embed: idle echo worker, private memory",
     "KiB", R_NONE, G_MAX, 1024},
    {"embed_rss_0_kib", "embed: host process RSS, 0 queued", "KiB", R_NONE,
     G_NONE, 0},
    {"embed_rss_1000_kib", "embed: host process RSS, 1,000 queued", "KiB",
     R_NONE, G_NONE, 0},
    {"daemon_worker_private_kib", "daemon: idle echo worker, private memory",
     "KiB", R_NONE, G_MAX, 1024},
    {"daemon_rss_0_kib", "daemon: RSS, 0 queued", "KiB", R_NONE, G_NONE, 0},
    {"daemon_rss_1000_kib", "daemon: RSS, 1,000 queued", "KiB", R_NONE,
     G_NONE, 0},
    {"cl1_256_tps", "cluster: echo, 1 host on one Redis, 256 in flight",
     "tasks/s", R_NONE, G_MIN, 50000},
    {"cl1_256_p50_us", "cluster: echo, 1 host, 256 in flight, p50", "µs",
     R_NONE, G_NONE, 0},
    {"cl1_256_p99_us", "cluster: echo, 1 host, 256 in flight, p99", "µs",
     R_NONE, G_NONE, 0},
    {"cl1_cmds", "cluster: 1 host, Redis commands per task", "cmd",
     R_NONE, G_NONE, 0},
    {"cl2_256_tps", "cluster: echo, 2 hosts on one Redis, 256 in flight",
     "tasks/s", R_NONE, G_NONE, 0},
    {"cl2_256_p50_us", "cluster: echo, 2 hosts, 256 in flight, p50", "µs",
     R_NONE, G_NONE, 0},
    {"cl2_256_p99_us", "cluster: echo, 2 hosts, 256 in flight, p99", "µs",
     R_NONE, G_NONE, 0},
    {"cl2_cmds", "cluster: 2 hosts, Redis commands per task", "cmd",
     R_NONE, G_NONE, 0},
    {"cl3_256_tps", "cluster: echo, 3 hosts on one Redis, 256 in flight",
     "tasks/s", R_NONE, G_NONE, 0},
    {"cl3_256_p50_us", "cluster: echo, 3 hosts, 256 in flight, p50", "µs",
     R_NONE, G_NONE, 0},
    {"cl3_256_p99_us", "cluster: echo, 3 hosts, 256 in flight, p99", "µs",
     R_NONE, G_NONE, 0},
    {"cl3_cmds", "cluster: 3 hosts, Redis commands per task", "cmd",
     R_NONE, G_NONE, 0},
    {"cl1_redis_us", "cluster: 1 host, Redis CPU per task", "µs", R_NONE,
     G_NONE, 0},
    {"cl_redis_cap_tps",
     "cluster: what one Redis carries, its CPU full (1 / CPU per task)",
     "tasks/s", R_NONE, G_NONE, 0},
    {"cl1_1_p50_us", "cluster: echo, 1 host, 1 in flight, p50", "µs", R_NONE,
     G_NONE, 0},
    {"cl_added_p50_us", "cluster: p50 added to a local pool's, 1 in flight",
     "µs", R_NONE, G_MAX, 250},
    {"cl_hash_1_tps", "cluster: 5 ms hash, 1 host x 1 worker", "tasks/s",
     R_NONE, G_NONE, 0},
    {"cl_hash_2_tps", "cluster: 5 ms hash, 2 hosts x 1 worker", "tasks/s",
     R_NONE, G_NONE, 0},
    {"cl_hash_3_tps", "cluster: 5 ms hash, 3 hosts x 1 worker (2 CPUs)",
     "tasks/s", R_NONE, G_NONE, 0},
    {"cl_hash_1_p50_us", "cluster: 5 ms hash, 1 host, p50", "µs", R_NONE,
     G_NONE, 0},
    {"cl_hash_1_p99_us", "cluster: 5 ms hash, 1 host, p99", "µs", R_NONE,
     G_NONE, 0},
    {"cl_hash_2_p50_us", "cluster: 5 ms hash, 2 hosts, p50", "µs", R_NONE,
     G_NONE, 0},
    {"cl_hash_2_p99_us", "cluster: 5 ms hash, 2 hosts, p99", "µs", R_NONE,
     G_NONE, 0},
    {"cl_hash_3_p50_us", "cluster: 5 ms hash, 3 hosts, p50", "µs", R_NONE,
     G_NONE, 0},
    {"cl_hash_3_p99_us", "cluster: 5 ms hash, 3 hosts, p99", "µs", R_NONE,
     G_NONE, 0},
    {"cl_hash_eff_pct", "cluster: 2 hosts vs 1, share of the machine's 2 vs 1",
     "%", R_NONE, G_MIN, 90},
    {"idle_cpu_ms",
     "idle: CPU of daemon, spawners, workers (busy_poll) over 10 idle s",
     "ms", R_NONE, G_MAX, 5},
};

#define NFIGS (sizeof figs / sizeof figs[0])

static struct measured meas[NFIGS];

static struct measured *m_of(const struct figure *f)
{
    return &meas[f - figs];
}

static FILE *term; /* the terminal: progress and failures */

void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(term, "  ");
    vfprintf(term, fmt, ap);
    fprintf(term, "\n");
    va_end(ap);
}

static struct figure *find(const char *key)
{
    for (size_t i = 0; i < NFIGS; i++)
        if (strcmp(figs[i].key, key) == 0)
            return &figs[i];
    fprintf(term, "th-bench: no figure '%s'\n", key);
    abort();
}

void fig_put(const char *key, double value)
{
    struct measured *m = m_of(find(key));
    if (m->n < BENCH_RUNS_MAX)
        m->v[m->n++] = value;
}

void fig_na(const char *key, const char *why)
{
    struct measured *m = m_of(find(key));
    if (m->na[0] == '\0')
        snprintf(m->na, sizeof m->na, "%s", why);
}

/* Copies the runs of `f`, sorted, into v; returns their median. */
static double sorted_runs(const struct figure *f, double *v)
{
    const struct measured *m = m_of(f);
    memcpy(v, m->v, sizeof m->v);
    return median(v, (size_t)m->n);
}

double fig_median(const char *key)
{
    double v[BENCH_RUNS_MAX];
    return sorted_runs(find(key), v);
}

/* ---- output ---- */

static void fmt_num(char *buf, size_t len, double v)
{
    double a = fabs(v);
    if (a >= 100)
        snprintf(buf, len, "%.0f", v);
    else if (a >= 10)
        snprintf(buf, len, "%.1f", v);
    else
        snprintf(buf, len, "%.2f", v);
}

/* The value the target is checked against, in the figure's unit. */
static double goal_value(const struct figure *f)
{
    if (f->goal == G_MAX_RAW)
        return f->target * fig_median(RAW_RTT);
    if (f->goal == G_MAX_PEER)
        return f->target * fig_median(PEER_P50);
    return f->target;
}

static void fmt_target(const struct figure *f, char *buf, size_t len)
{
    char v[32];
    fmt_num(v, sizeof v, goal_value(f));
    switch (f->goal) {
    case G_MIN:
        snprintf(buf, len, "≥ %s", v);
        break;
    case G_MAX:
        snprintf(buf, len, "≤ %s", v);
        break;
    case G_MAX_RAW:
        if (goal_value(f) > 0)
            snprintf(buf, len, "≤ %.1f× raw = %s", f->target, v);
        else
            snprintf(buf, len, "≤ %.1f× raw", f->target);
        break;
    case G_MAX_PEER:
        if (goal_value(f) > 0)
            snprintf(buf, len, "≤ %.1f× Piscina = %s", f->target, v);
        else
            snprintf(buf, len, "≤ %.1f× Piscina", f->target);
        break;
    default:
        snprintf(buf, len, "—");
    }
}

/* 1 met, 0 missed, -1 no target or no value. */
static int met(const struct figure *f, double med)
{
    if (f->goal == G_NONE || m_of(f)->n == 0 || goal_value(f) <= 0)
        return -1;
    if (f->goal == G_MIN)
        return med >= goal_value(f);
    return med <= goal_value(f);
}

static double ratio(const struct figure *f, double med)
{
    const char *ref = f->ratio == R_LAT      ? RAW_RTT
                      : f->ratio == R_MEMCPY ? MEMCPY_1M
                                             : RAW_MSGS;
    double r = f->ratio == R_NONE ? 0 : fig_median(ref);
    return r > 0 ? med / r : 0;
}

static void row(FILE *out, const struct figure *f)
{
    char med_s[32], lo[32], hi[32], tgt[64], rat[32] = "—";
    const char *ok[] = {"—", "**no**", "yes"};
    double v[BENCH_RUNS_MAX];
    double med = sorted_runs(f, v);
    const struct measured *m = m_of(f);
    fmt_target(f, tgt, sizeof tgt);
    if (m->n == 0) {
        fprintf(out, "| %s | n/a (%s) | | %s | | %s | — |\n", f->label,
                m->na[0] ? m->na : "not measured", f->unit, tgt);
        return;
    }
    fmt_num(med_s, sizeof med_s, med);
    fmt_num(lo, sizeof lo, v[0]);
    fmt_num(hi, sizeof hi, v[m->n - 1]);
    if (ratio(f, med) > 0)
        snprintf(rat, sizeof rat, "%.2f×", ratio(f, med));
    fprintf(out, "| %s | %s | %s – %s | %s | %s | %s | %s |\n", f->label,
            med_s, lo, hi, f->unit, rat, tgt, ok[met(f, med) + 1]);
}

/* Whether -s chose only some suites: then figures they do not measure
 * are left out of the table and the JSON lines. */
static int subset;

static int shown(const struct figure *f)
{
    return !subset || m_of(f)->n > 0 || m_of(f)->na[0] != '\0';
}

static void print_table(FILE *out)
{
    fprintf(out, "| figure | median | min – max | unit | vs raw | target "
                 "| met |\n");
    fprintf(out, "| --- | ---: | ---: | --- | ---: | --- | --- |\n");
    for (size_t i = 0; i < NFIGS; i++)
        if (shown(&figs[i]))
            row(out, &figs[i]);
}

static void print_json(FILE *out, const struct figure *f)
{
    double v[BENCH_RUNS_MAX];
    double med = sorted_runs(f, v);
    const struct measured *m = m_of(f);
    fprintf(out, "{\"figure\":\"%s\",\"unit\":\"%s\",\"runs\":%d", f->key,
            f->unit, m->n);
    if (m->n == 0)
        fprintf(out, ",\"median\":null,\"na\":\"%s\"", m->na);
    else
        fprintf(out, ",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g", med, v[0],
                v[m->n - 1]);
    if (ratio(f, med) > 0)
        fprintf(out, ",\"vs_raw\":%.4g", ratio(f, med));
    const char *verdict[] = {"null", "false", "true"};
    if (f->goal != G_NONE)
        fprintf(out, ",\"target\":\"%s %.6g\",\"met\":%s",
                f->goal == G_MIN ? ">=" : "<=", goal_value(f),
                verdict[met(f, med) + 1]);
    fprintf(out, "}\n");
}

static void print_machine(FILE *out)
{
    char model[256] = "unknown", line[512];
    FILE *f = fopen("/proc/cpuinfo", "re");
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
            snprintf(model, sizeof model, "%s", colon + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    struct utsname u;
    uname(&u);
    char date[64];
    time_t t = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&t));
    fprintf(out, "Machine: %ld CPUs (%s), Linux %s %s; %s; load average "
                 "%.2f; %d runs per figure.\n\n",
            sysconf(_SC_NPROCESSORS_ONLN), model, u.release, u.machine, date,
            load[0], bench_runs);
}

/* ---- the driver ---- */

static int wanted(const char *suites, const char *name)
{
    if (suites == NULL)
        return 1;
    size_t n = strlen(name);
    for (const char *p = suites; (p = strstr(p, name)) != NULL; p += n)
        if ((p == suites || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    return 0;
}

/* Keeps the terminal for notes and sends fd 2 (the engine's log) to a
 * file in the scratch directory. */
static void redirect_log(void)
{
    term = fdopen(dup(2), "w");
    setvbuf(term, NULL, _IONBF, 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/engine.log", scratch_dir());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd != -1) {
        dup2(fd, 2);
        close(fd);
    }
}

/* Removes the scratch directory, unless a figure could not be measured:
 * then its logs are kept for a look. */
static void clean_scratch(void)
{
    const char *names[] = {"engine.log", "daemon.log", "taskhost.conf",
                           "taskhost.sock"};
    for (size_t i = 0; i < NFIGS; i++) {
        if (meas[i].na[0] != '\0') {
            fprintf(term, "th-bench: logs kept in %s\n", scratch_dir());
            return;
        }
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", scratch_dir(), names[i]);
        unlink(path);
    }
    rmdir(scratch_dir());
}

static void write_table(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return;
    }
    print_machine(f);
    print_table(f);
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--probe-memory") == 0)
        return probe_memory();
    const char *suites = NULL, *outfile = NULL;
    int c;
    while ((c = getopt(argc, argv, "r:s:o:")) != -1) {
        if (c == 'r')
            bench_runs = atoi(optarg);
        else if (c == 's')
            suites = optarg, subset = 1;
        else if (c == 'o')
            outfile = optarg;
        else
            return 2;
    }
    if (bench_runs < 1 || bench_runs > BENCH_RUNS_MAX)
        bench_runs = 5;
    signal(SIGPIPE, SIG_IGN);
    /* The build tree's spawner, so that th-bench also runs by hand, not
     * only through `make bench` (which sets the same). */
    setenv("TASKHOST_SPAWNER", TOP_BUILDDIR "/host/taskhost-spawner", 0);
    redirect_log();
    print_machine(stdout);
    fflush(stdout);
    double t0 = now_s();
    if (wanted(suites, "raw"))
        suite_raw();
    if (wanted(suites, "raw") || wanted(suites, "payload"))
        suite_memcpy();
    if (wanted(suites, "payload") && !wanted(suites, "embed"))
        suite_embed_payload();
    if (wanted(suites, "payload") && !wanted(suites, "daemon"))
        suite_daemon_payload();
    if (wanted(suites, "latency"))
        suite_latency();
    if (wanted(suites, "embed"))
        suite_embed(argv[0]);
    if (wanted(suites, "cpu"))
        suite_cpu();
    if (wanted(suites, "daemon"))
        suite_daemon();
    if (wanted(suites, "cluster"))
        suite_cluster();
    if (wanted(suites, "idle"))
        suite_idle();
    print_table(stdout);
    printf("\n");
    for (size_t i = 0; i < NFIGS; i++)
        if (shown(&figs[i]))
            print_json(stdout, &figs[i]);
    fprintf(term, "th-bench: %.0f s\n", now_s() - t0);
    if (outfile != NULL)
        write_table(outfile);
    clean_scratch();
    return 0;
}
