/* daemon.c - figures of taskhostd through its client library.
 *
 * Starts host/taskhostd of the build tree on a config in the scratch
 * directory, drives it with taskhost_client.h, and stops it. Memory is
 * measured on freshly started daemons (one per run: a daemon that served
 * tasks keeps their buffers); then one daemon serves echo latency and
 * throughput (1 in flight, 1 client x 256, 8 client processes x 64),
 * payloads, and throughput while /metrics of its HTTP endpoint (a unix
 * socket here) is scraped every 100 ms.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "taskhost_client.h"

#define ECHO_WARMUP 20000
#define ECHO_256_COUNT 200000
#define CLIENTS 8
#define CLIENT_INFLIGHT 64
#define CLIENT_COUNT 25000
#define KIB64_COUNT 3000
#define MIB1_COUNT 300
#define PAYLOAD_INFLIGHT 8
#define SCRAPE_COUNT 200000 /* tasks per run: about half a second */
#define SCRAPE_PAIRS 10
#define SCRAPE_EVERY_US 100000

static const char *const echo_figs[] = {
    "daemon_256_tps",   "daemon_256_p50_us",  "daemon_256_p99_us",
    "daemon_scrape_tps", "daemon_scrape_pct",
    "daemon_8x64_tps",  "daemon_8x64_p50_us", "daemon_8x64_p99_us",
    "daemon_64k_mbps",  "daemon_1m_mbps",     "daemon_worker_private_kib",
    "daemon_rss_0_kib", "daemon_rss_1000_kib", NULL,
};

static void all_na(const char *why)
{
    for (const char *const *k = echo_figs; *k != NULL; k++)
        fig_na(*k, why);
}

static int write_config(struct daemon *d)
{
    const char *dir = scratch_dir();
    snprintf(d->conf, sizeof d->conf, "%s/taskhost.conf", dir);
    snprintf(d->sock, sizeof d->sock, "%s/taskhost.sock", dir);
    snprintf(d->http, sizeof d->http, "%s/http.sock", dir);
    FILE *f = fopen(d->conf, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "host: { socket = \"%s\"; log = \"%s/daemon.log\";\n"
               "  log_level = \"warn\"; shutdown_timeout = 5.0; };\n",
            d->sock, dir);
    if (d->with_http)
        fprintf(f, "http: { listen = \"%s\"; };\n", d->http);
    fprintf(f, "plugins = ( { name = \"echo\"; path = \"%s\"; },\n",
            plugin_path("echo"));
    fprintf(f, "  { name = \"sleep\"; path = \"%s\"; } );\n",
            plugin_path("sleep"));
    fprintf(f, "pools = (\n"
               "  { name = \"echo\"; plugin = \"echo\"; min_workers = 2;\n"
               "    max_workers = 2; max_queue = 4096; },\n"
               "  { name = \"idle\"; plugin = \"echo\"; min_workers = 1;\n"
               "    max_workers = 1; },\n"
               "  { name = \"sleep\"; plugin = \"sleep\"; min_workers = 1;\n"
               "    max_workers = 1; max_queue = 4096; task_timeout = 0.0; }"
               "%s%s\n);\n", d->pools ? ",\n" : "", d->pools ? d->pools : "");
    return fclose(f) == 0 ? 0 : -1;
}

int start_daemon(struct daemon *d)
{
    const char *exe = build_path("host/taskhostd");
    if (access(exe, X_OK) != 0 || write_config(d) < 0)
        return -1;
    d->pid = fork();
    if (d->pid == 0) {
        execl(exe, "taskhostd", "-f", "-c", d->conf, (char *)NULL);
        _exit(127);
    }
    return d->pid > 0 ? 0 : -1;
}

th_client *connect_to(const struct daemon *d, double limit)
{
    double end = now_s() + limit;
    char err[256] = "";
    do {
        th_client *c;
        if (th_client_connect(&c, d->sock, err, sizeof err) == 0)
            return c;
        usleep(2000);
    } while (now_s() < end && waitpid(d->pid, NULL, WNOHANG) == 0);
    note("cannot connect to taskhostd at %s: %s", d->sock, err);
    return NULL;
}

void stop_daemon(struct daemon *d, th_client *c)
{
    if (c != NULL)
        th_client_shutdown(c, TH_CLOSE_FORCE);
    th_client_close(c);
    for (int i = 0; i < 500; i++) {
        if (waitpid(d->pid, NULL, WNOHANG) == d->pid)
            return;
        usleep(10000);
    }
    note("taskhostd did not stop in 5 s: killing it");
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
}

/* ---- the client as a load target ---- */

static int client_submit(void *ctx, const char *pool, const char *task,
                         const void *input, size_t len, th_done_fn done,
                         void *arg)
{
    return th_client_submit(ctx, pool, task, input, len, NULL, done, arg,
                            NULL);
}

static int client_step(void *ctx, int timeout_ms)
{
    return th_client_step(ctx, timeout_ms);
}

struct target target_client(th_client *c)
{
    struct target t = {c, client_submit, client_step};
    return t;
}

/* ---- memory ---- */

static void count_answer(const th_result *r, void *arg)
{
    (void)r;
    (*(long *)arg)++;
}

static long queue_depth(th_client *c, const char *pool)
{
    char *json = NULL;
    if (th_client_stats(c, pool, TH_STATS_JSON, &json) < 0)
        return -1;
    long n = stats_queue_depth(json, pool);
    free(json);
    return n;
}

/* RSS of the daemon with 1,000 tasks queued behind a long one. */
static long rss_1000(const struct daemon *d)
{
    th_client *c = connect_to(d, 1.0);
    long answered = 0, rss = -1;
    uint64_t blocker;
    if (c == NULL || th_client_submit(c, "sleep", "sleep", "10000", 5, NULL,
                                      count_answer, &answered, &blocker) < 0)
        goto out;
    for (int i = 0; i < 1000; i++)
        th_client_submit(c, "sleep", "sleep", "0", 1, NULL, count_answer,
                         &answered, NULL);
    double end = now_s() + 5.0;
    long depth;
    while ((depth = queue_depth(c, "sleep")) < 1000 && now_s() < end)
        th_client_step(c, 1);
    if (depth >= 1000)
        rss = proc_rss_kib(d->pid);
    else
        note("daemon: only %ld tasks queued (%ld answered)", depth, answered);
    th_client_cancel(c, blocker);
    th_client_wait(c, 10.0);
out:
    th_client_close(c);
    return rss;
}

static void memory_run(const struct daemon *d, th_client *c)
{
    char *json = NULL;
    if (th_client_stats(c, "idle", TH_STATS_JSON, &json) == 0) {
        long priv = proc_private_kib(stats_worker_pid(json, "idle"));
        if (priv > 0)
            fig_put("daemon_worker_private_kib", (double)priv);
    }
    free(json);
    fig_put("daemon_rss_0_kib", (double)proc_rss_kib(d->pid));
    long rss = rss_1000(d);
    if (rss > 0)
        fig_put("daemon_rss_1000_kib", (double)rss);
}

/* ---- echo ---- */

static int payload_run(const struct target *t)
{
    struct load_result r;
    if (load_run(t, "echo", "echo", 64 << 10, PAYLOAD_INFLIGHT, KIB64_COUNT,
                 &r) < 0)
        return -1;
    fig_put("daemon_64k_mbps", r.mbps);
    if (load_run(t, "echo", "echo", 1 << 20, PAYLOAD_INFLIGHT, MIB1_COUNT,
                 &r) < 0)
        return -1;
    fig_put("daemon_1m_mbps", r.mbps);
    return 0;
}

static int echo_run(const struct target *t)
{
    struct load_result r;
    if (load_run(t, "echo", "echo", 16, 256, ECHO_256_COUNT, &r) < 0)
        return -1;
    fig_put("daemon_256_tps", r.tps);
    fig_put("daemon_256_p50_us", r.p50_us);
    fig_put("daemon_256_p99_us", r.p99_us);
    return payload_run(t);
}

/* ---- 8 clients ---- */

struct shared {
    struct load_result r[CLIENTS];
    int ok[CLIENTS];
    double lat[CLIENTS][CLIENT_COUNT];
};

/* One client process: connect, say ready, wait for go, run. */
static void client_proc(const struct daemon *d, struct shared *sh, int i,
                        int ready, int go)
{
    th_client *c = connect_to(d, 1.0);
    char b = 1;
    if (write(ready, &b, 1) != 1 || read(go, &b, 1) != 1 || c == NULL)
        _exit(1);
    struct target t = target_client(c);
    sh->ok[i] = load_run_keep(&t, "echo", "echo", 16, CLIENT_INFLIGHT,
                              CLIENT_COUNT, &sh->r[i], sh->lat[i]) == 0;
    th_client_close(c);
    _exit(0);
}

static void clients_figures(struct shared *sh)
{
    double start = 1e300, end = 0;
    long tasks = 0;
    for (int i = 0; i < CLIENTS; i++) {
        if (!sh->ok[i]) {
            note("client %d failed", i);
            return;
        }
        start = sh->r[i].start < start ? sh->r[i].start : start;
        end = sh->r[i].end > end ? sh->r[i].end : end;
        tasks += sh->r[i].tasks;
    }
    double *all = &sh->lat[0][0];
    fig_put("daemon_8x64_tps", (double)tasks / (end - start));
    fig_put("daemon_8x64_p50_us", percentile(all, (size_t)tasks, 0.5) * 1e6);
    fig_put("daemon_8x64_p99_us", percentile(all, (size_t)tasks, 0.99) * 1e6);
}

static int clients_run(const struct daemon *d)
{
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int ready[2], go[2];
    if (sh == MAP_FAILED || pipe(ready) == -1 || pipe(go) == -1)
        return -1;
    pid_t pids[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            client_proc(d, sh, i, ready[1], go[0]);
    }
    char b[CLIENTS];
    size_t got = 0;
    for (ssize_t n; got < CLIENTS && (n = read(ready[0], b, CLIENTS - got)) > 0;)
        got += (size_t)n;
    if (write(go[1], b, CLIENTS) != CLIENTS)
        note("cannot start the clients");
    for (int i = 0; i < CLIENTS; i++)
        waitpid(pids[i], NULL, 0);
    clients_figures(sh);
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
    munmap(sh, sizeof *sh);
    return 0;
}

/* ---- throughput while scraped ---- */

/* One GET /metrics on the endpoint's unix socket; 1 when answered 200. */
static int scrape_once(const char *path)
{
    static const char req[] =
        "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char buf[16384];
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok = 0;
    ssize_t n;
    if (fd == -1)
        return 0;
    if (strlen(path) >= sizeof sa.sun_path) {
        close(fd);
        return 0;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        write(fd, req, sizeof req - 1) == (ssize_t)sizeof req - 1 &&
        (n = read(fd, buf, sizeof buf - 1)) > 12) {
        buf[n] = '\0';
        ok = strncmp(buf + 9, "200", 3) == 0;
        while (read(fd, buf, sizeof buf) > 0)
            ;
    }
    close(fd);
    return ok;
}

/* A child that scrapes every SCRAPE_EVERY_US until killed, counting the
 * answers in *count (shared memory). */
static pid_t start_scraper(const struct daemon *d, long *count)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    double every = SCRAPE_EVERY_US / 1e6;
    for (double next = now_s();; next += every) {
        *count += scrape_once(d->http);
        /* Ticks missed while stopped are skipped, not caught up. */
        while (next + every < now_s())
            next += every;
        double wait = next + every - now_s();
        if (wait > 0)
            usleep((useconds_t)(wait * 1e6));
    }
}

/* Echo throughput with 256 in flight without and with the scraper, in
 * SCRAPE_PAIRS pairs of runs close in time (the scraper is stopped and
 * continued, SIGSTOP/SIGCONT, between them; the order alternates), so
 * that the load of the rest of the machine moves both runs of a pair
 * alike. One figure per call: the median of the pairs' ratios. */
static int scrape_run(const struct target *t, const struct daemon *d)
{
    struct load_result off, on;
    double ratio[SCRAPE_PAIRS], tps[SCRAPE_PAIRS];
    long *count = mmap(NULL, sizeof *count, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int rc = 0;
    if (count == MAP_FAILED)
        return -1;
    *count = 0;
    pid_t pid = start_scraper(d, count);
    if (pid < 0) {
        munmap(count, sizeof *count);
        return -1;
    }
    kill(pid, SIGSTOP);
    for (int i = 0; i < SCRAPE_PAIRS && rc == 0; i++) {
        for (int k = 0; k < 2 && rc == 0; k++) {
            int scraped = (k + i) % 2;
            if (scraped)
                kill(pid, SIGCONT);
            rc = load_run(t, "echo", "echo", 16, 256, SCRAPE_COUNT,
                          scraped ? &on : &off);
            if (scraped)
                kill(pid, SIGSTOP);
        }
        ratio[i] = on.tps / off.tps;
        tps[i] = on.tps;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (rc == 0 && *count == 0) {
        fig_na("daemon_scrape_tps", "no scrape answered");
        fig_na("daemon_scrape_pct", "no scrape answered");
    } else if (rc == 0) {
        fig_put("daemon_scrape_tps", median(tps, SCRAPE_PAIRS));
        fig_put("daemon_scrape_pct", 100.0 * median(ratio, SCRAPE_PAIRS));
    }
    munmap(count, sizeof *count);
    return rc;
}

/* ---- the suite ---- */

/* Every pool has served a task; with `echo_tasks`, the echo pool has
 * also seen that its tasks are short. */
static void warm(th_client *c, long echo_tasks)
{
    struct target t = target_client(c);
    struct load_result r;
    load_run(&t, "idle", "echo", 16, 1, 1, &r);
    load_run(&t, "sleep", "sleep", 1, 1, 1, &r);
    if (echo_tasks > 0)
        load_run(&t, "echo", "echo", 16, 64, echo_tasks, &r);
}

/* Starts a daemon and connects to it; NULL (figures marked) on failure. */
static th_client *open_daemon(struct daemon *d)
{
    if (start_daemon(d) < 0) {
        all_na("no taskhostd binary");
        return NULL;
    }
    th_client *c = connect_to(d, 5.0);
    if (c == NULL) {
        all_na("taskhostd did not start");
        stop_daemon(d, NULL);
    }
    return c;
}

/* The payload rows alone, on a daemon of their own (-s payload). */
void suite_daemon_payload(void)
{
    note("daemon: payloads");
    struct daemon d = {.with_http = 0};
    th_client *c = open_daemon(&d);
    if (c == NULL)
        return;
    warm(c, ECHO_WARMUP);
    struct target t = target_client(c);
    for (int i = 0; i < bench_runs; i++)
        if (payload_run(&t) < 0) {
            note("daemon run failed");
            break;
        }
    stop_daemon(&d, c);
}

void suite_daemon(void)
{
    note("daemon: memory (a fresh daemon per run)");
    struct daemon d = {.with_http = 0};
    th_client *c;
    for (int i = 0; i < bench_runs; i++) {
        if ((c = open_daemon(&d)) == NULL)
            return;
        warm(c, 0);
        memory_run(&d, c);
        stop_daemon(&d, c);
    }
    note("daemon: echo latency and throughput, payloads, while scraped");
    d.with_http = 1; /* idle but for the scraping figures */
    if ((c = open_daemon(&d)) == NULL)
        return;
    warm(c, ECHO_WARMUP);
    struct target t = target_client(c);
    for (int i = 0; i < bench_runs; i++) {
        if (echo_run(&t) < 0 || clients_run(&d) < 0 ||
            scrape_run(&t, &d) < 0) {
            note("daemon run failed");
            break;
        }
    }
    stop_daemon(&d, c);
}
