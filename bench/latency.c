/* latency.c - one task at a time: the embedding API, the daemon and
 * Piscina, taking turns.
 *
 * Every run measures, one after the other: echo through the embedding API
 * with a pool's defaults and with busy_poll on; echo through taskhostd
 * likewise, busy_poll on the pool only (as the Python and Node.js clients
 * have it) and on the pool and the client; and a no-op task in
 * Piscina (bench/peers/piscina_latency.js, 2 worker threads) when node and
 * Piscina are there. The contestants take turns within each run, so that
 * the rest of the machine's load moves them alike; the busy_poll rows are
 * held to Piscina's p50 of the same runs.
 *
 * Then, the idle figure: a daemon whose pool polls, left alone for
 * IDLE_SECONDS after serving tasks, and the CPU time it and its processes
 * (spawners, workers) used meanwhile.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "taskhost_client.h"

#ifndef NODE_PATH
#define NODE_PATH ""
#endif
#ifndef TOP_SRCDIR
#error "TOP_SRCDIR must name the source tree"
#endif

#define WARMUP 20000
#define COUNT 10000        /* tasks per figure and run */
#define BUSY_POLL 50e-6    /* the pools' and the client's busy_poll */
#define IDLE_SECONDS 10.0

/* The busy_poll pool, added to the daemon's config. */
static const char poll_pool[] =
    "  { name = \"echo_poll\"; plugin = \"echo\"; min_workers = 2;\n"
    "    max_workers = 2; max_queue = 4096; busy_poll = \"50us\"; }";

/* ---- Piscina, in a node process that runs a round per line read ---- */

struct peer {
    pid_t pid;
    FILE *to, *from;
};

/* Why Piscina cannot run here, or NULL when it can. */
static const char *peer_missing(void)
{
    struct stat st;
    if (NODE_PATH[0] == '\0')
        return "no node";
    if (stat(build_path("bench/node/node_modules/piscina"), &st) != 0)
        return "no Piscina in bench/node: make bench installs it with npm";
    return NULL;
}

static void peer_stop(struct peer *p)
{
    if (p->to != NULL)
        fclose(p->to); /* EOF: it destroys its pool and exits */
    if (p->from != NULL)
        fclose(p->from);
    if (p->pid > 0)
        waitpid(p->pid, NULL, 0);
    memset(p, 0, sizeof *p);
}

/* Starts node on piscina_latency.js and waits until it is warm. */
static int peer_start(struct peer *p)
{
    int in[2], out[2];
    char count[32], line[64];
    memset(p, 0, sizeof *p);
    if (pipe2(in, O_CLOEXEC) == -1)
        return -1;
    if (pipe2(out, O_CLOEXEC) == -1) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    snprintf(count, sizeof count, "%d", COUNT);
    p->pid = fork();
    if (p->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl(NODE_PATH, "node", TOP_SRCDIR "/bench/peers/piscina_latency.js",
              build_path("bench/node"), count, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->to = fdopen(in[1], "w");
    p->from = fdopen(out[0], "r");
    if (p->pid < 0 || p->to == NULL || p->from == NULL ||
        fgets(line, sizeof line, p->from) == NULL ||
        strncmp(line, "ready", 5) != 0) {
        peer_stop(p);
        return -1;
    }
    setvbuf(p->to, NULL, _IOLBF, 0);
    return 0;
}

/* One round of COUNT tasks: its p50 and p99 in µs. */
static int peer_round(struct peer *p, double *p50, double *p99)
{
    char line[128];
    double rate;
    if (fputs("go\n", p->to) == EOF || fflush(p->to) == EOF ||
        fgets(line, sizeof line, p->from) == NULL ||
        sscanf(line, "%lf %lf %lf", p50, p99, &rate) != 3)
        return -1;
    return 0;
}

/* ---- the embedding API ---- */

static th_host *open_host(void)
{
    th_host *h;
    char err[512];
    if (th_host_new(&h) < 0)
        return NULL;
    if (th_host_add_plugin(h, "echo", plugin_path("echo"), err, sizeof err) <
        0) {
        note("cannot load %s: %s", plugin_path("echo"), err);
        th_host_close(h, TH_CLOSE_FORCE);
        return NULL;
    }
    const char *names[] = {"echo", "echo_poll"};
    for (int i = 0; i < 2; i++) {
        th_pool_opts o;
        th_pool_opts_init(&o);
        o.name = names[i];
        o.plugin = "echo";
        o.min_workers = o.max_workers = 2;
        o.busy_poll = i == 1 ? BUSY_POLL : 0;
        if (th_host_add_pool(h, &o, err, sizeof err) < 0) {
            note("cannot add pool %s: %s", names[i], err);
            th_host_close(h, TH_CLOSE_FORCE);
            return NULL;
        }
    }
    return h;
}

/* ---- the runs ---- */

struct contestants {
    th_host *host;
    struct target embed;
    struct daemon d;
    th_client *c, *c_poll; /* the second one polls */
    struct target daemon, daemon_poll;
    struct peer peer;
    int have_peer;
};

/* One figure's run: COUNT tasks one at a time on `pool`. */
static int one(const struct target *t, const char *pool, const char *fig)
{
    struct load_result r;
    char key[64];
    if (load_run(t, pool, "echo", 16, 1, COUNT, &r) < 0)
        return -1;
    snprintf(key, sizeof key, "%s_tps", fig);
    if (strstr(fig, "poll") == NULL)
        fig_put(key, r.tps);
    snprintf(key, sizeof key, "%s_p50_us", fig);
    fig_put(key, r.p50_us);
    snprintf(key, sizeof key, "%s_p99_us", fig);
    fig_put(key, r.p99_us);
    return 0;
}

static int run_once(struct contestants *k)
{
    double p50, p99;
    if (k->host != NULL && (one(&k->embed, "echo", "embed_1") < 0 ||
                            one(&k->embed, "echo_poll", "embed_1_poll") < 0))
        return -1;
    if (k->c != NULL && (one(&k->daemon, "echo", "daemon_1") < 0 ||
                         one(&k->daemon, "echo_poll", "daemon_1_ppoll") < 0 ||
                         one(&k->daemon_poll, "echo_poll", "daemon_1_poll") <
                             0))
        return -1;
    if (k->have_peer) {
        if (peer_round(&k->peer, &p50, &p99) < 0) {
            note("Piscina stopped answering");
            peer_stop(&k->peer);
            k->have_peer = 0;
            fig_na("piscina_1_p50_us", "node failed");
            return 0;
        }
        fig_put("piscina_1_p50_us", p50);
        fig_put("piscina_1_p99_us", p99);
    }
    return 0;
}

static void warm(struct contestants *k)
{
    struct load_result r;
    const char *pools[] = {"echo", "echo_poll"};
    for (int i = 0; i < 2; i++) {
        if (k->host != NULL)
            load_run(&k->embed, pools[i], "echo", 16, 64, WARMUP, &r);
        if (k->c != NULL)
            load_run(i ? &k->daemon_poll : &k->daemon, pools[i], "echo", 16,
                     64, WARMUP, &r);
    }
}

static void open_all(struct contestants *k)
{
    const char *missing = peer_missing();
    if ((k->host = open_host()) != NULL)
        k->embed = target_host(k->host);
    k->d.pools = poll_pool;
    if (start_daemon(&k->d) == 0 && (k->c = connect_to(&k->d, 5.0)) != NULL &&
        (k->c_poll = connect_to(&k->d, 1.0)) != NULL) {
        th_client_set_busy_poll(k->c_poll, BUSY_POLL);
        k->daemon = target_client(k->c);
        k->daemon_poll = target_client(k->c_poll);
    } else if (k->d.pid > 0) {
        th_client_close(k->c_poll);
        stop_daemon(&k->d, k->c);
        k->c = k->c_poll = NULL;
    }
    if (missing == NULL && peer_start(&k->peer) == 0)
        k->have_peer = 1;
    else if (missing == NULL)
        missing = "node could not run Piscina";
    if (missing != NULL) {
        fig_na("piscina_1_p50_us", missing);
        fig_na("piscina_1_p99_us", missing);
    }
}

void suite_latency(void)
{
    struct contestants k;
    memset(&k, 0, sizeof k);
    note("latency: one task at a time, embedded, daemon and Piscina in turn");
    open_all(&k);
    warm(&k);
    for (int i = 0; i < bench_runs; i++)
        if (run_once(&k) < 0) {
            note("latency run failed");
            break;
        }
    if (k.have_peer)
        peer_stop(&k.peer);
    if (k.c != NULL) {
        th_client_close(k.c_poll);
        stop_daemon(&k.d, k.c);
    }
    if (k.host != NULL)
        th_host_close(k.host, TH_CLOSE_GRACEFUL);
}

/* ---- idle ---- */

/* Nanoseconds `pid` ran on a CPU (/proc/PID/schedstat); -1. */
static long long cpu_ns(pid_t pid)
{
    char path[64];
    long long ns = -1;
    snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%lld", &ns) != 1)
        ns = -1;
    fclose(f);
    return ns;
}

/* The parent of `pid`, or -1. */
static pid_t parent_of(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    char *paren = got ? strrchr(line, ')') : NULL;
    int ppid;
    if (paren == NULL || sscanf(paren + 2, "%*c %d", &ppid) != 1)
        return -1;
    return (pid_t)ppid;
}

/* CPU nanoseconds of `root` and every process below it, and their count. */
static long long tree_cpu_ns(pid_t root, int *procs)
{
    long long sum = cpu_ns(root);
    DIR *d = opendir("/proc");
    struct dirent *e;
    *procs = sum >= 0;
    while (d != NULL && (e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0 || pid == root)
            continue;
        for (pid_t p = parent_of(pid); p > 1; p = parent_of(p)) {
            if (p == root) {
                long long ns = cpu_ns(pid);
                sum += ns > 0 ? ns : 0;
                (*procs)++;
                break;
            }
        }
    }
    if (d != NULL)
        closedir(d);
    return sum;
}

void suite_idle(void)
{
    struct daemon d = {.pools = poll_pool};
    struct load_result r;
    th_client *c;
    int before_n, after_n;
    note("idle: CPU of a daemon whose pool polls, %.0f s left alone",
         IDLE_SECONDS);
    if (start_daemon(&d) < 0 || (c = connect_to(&d, 5.0)) == NULL) {
        fig_na("idle_cpu_ms", "taskhostd did not start");
        if (d.pid > 0)
            stop_daemon(&d, NULL);
        return;
    }
    th_client_set_busy_poll(c, BUSY_POLL);
    struct target t = target_client(c);
    load_run(&t, "echo_poll", "echo", 16, 1, COUNT, &r);
    long long before = tree_cpu_ns(d.pid, &before_n);
    usleep((useconds_t)(IDLE_SECONDS * 1e6));
    long long after = tree_cpu_ns(d.pid, &after_n);
    if (before < 0 || after < 0 || before_n != after_n)
        fig_na("idle_cpu_ms", "processes came or went");
    else
        fig_put("idle_cpu_ms", (double)(after - before) / 1e6);
    note("idle: %d processes", after_n);
    stop_daemon(&d, c);
}
