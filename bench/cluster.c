/* cluster.c - shared pools through one Redis: 1, 2 and 3 hosts.
 *
 * A redis-server on a Unix socket in the scratch directory (no
 * persistence), and 1 to 3 taskhostd whose pools `echo` (2 workers each)
 * and `hash` (1 worker each, rounds calibrated to about TASK_MS per task)
 * are shared. The load enters through the first host. Per row: echo at
 * 256 in flight (tasks/s, p50, p99), the Redis commands per task (INFO
 * commandstats before and after), and on 1 host the latency added to a
 * local pool's at 1 in flight. The 5 ms hash tasks on 2 hosts x 1 worker
 * are set against 1 host x 1 worker and against the machine's own 2-vs-1
 * ceiling (the cpu suite's machine row).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "bench.h"
#include "taskhost_client.h"

#define HOSTS_MAX 3
#define TASK_MS 5.0
#define ECHO_256_COUNT 40000
#define ECHO_1_COUNT 2000
#define HASH_TASKS 200

static const char *const cluster_figs[] = {
    "cl1_256_tps", "cl1_256_p50_us", "cl1_256_p99_us", "cl1_cmds",
    "cl2_256_tps", "cl2_256_p50_us", "cl2_256_p99_us", "cl2_cmds",
    "cl3_256_tps", "cl3_256_p50_us", "cl3_256_p99_us", "cl3_cmds",
    "cl1_redis_us", "cl_redis_cap_tps", "cl1_1_p50_us", "cl_added_p50_us",
    "cl_hash_1_tps", "cl_hash_2_tps", "cl_hash_3_tps", "cl_hash_1_p50_us",
    "cl_hash_1_p99_us", "cl_hash_2_p50_us", "cl_hash_2_p99_us",
    "cl_hash_3_p50_us", "cl_hash_3_p99_us", "cl_hash_eff_pct", NULL,
};

static void all_na(const char *why)
{
    for (const char *const *k = cluster_figs; *k != NULL; k++)
        fig_na(*k, why);
}

struct redis {
    pid_t pid;
    char sock[4200];
};

static int redis_up(struct redis *r)
{
    snprintf(r->sock, sizeof r->sock, "%s/redis.sock", scratch_dir());
    r->pid = fork();
    if (r->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket",
               r->sock, "--save", "", "--appendonly", "no", "--logfile",
               "/dev/null", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        redisContext *c = redisConnectUnix(r->sock);
        int ok = c != NULL && !c->err;
        redisFree(c);
        if (ok)
            return 0;
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid)
            return -1;
        usleep(10000);
    }
    return -1;
}

static void redis_down(struct redis *r)
{
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0);
}

/* What Redis did so far: calls of every command (INFO commandstats) and
 * CPU seconds (INFO cpu). */
struct redis_work {
    double calls, cpu_s;
};

/* The value after `key` in an INFO text, 0 if absent. */
static double info_num(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : 0;
}

static struct redis_work redis_work(const struct redis *r)
{
    struct redis_work w = {-1, -1};
    redisContext *c = redisConnectUnix(r->sock);
    if (c == NULL || c->err) {
        redisFree(c);
        return w;
    }
    redisReply *rep = redisCommand(c, "INFO commandstats");
    if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
        w.calls = 0;
        for (const char *p = rep->str; (p = strstr(p, "calls=")) != NULL; p++)
            w.calls += strtod(p + 6, NULL);
    }
    freeReplyObject(rep);
    rep = redisCommand(c, "INFO cpu");
    if (rep != NULL && rep->type == REDIS_REPLY_STRING)
        w.cpu_s = info_num(rep->str, "used_cpu_sys:") +
                  info_num(rep->str, "used_cpu_user:");
    freeReplyObject(rep);
    redisFree(c);
    return w;
}

/* With TH_BENCH_REDIS_PROFILE set: Redis's own µs per task for each
 * command between two INFO commandstats texts, and the hosts' CPU, on
 * stderr, to see where a cluster task's cost goes. */
static char *commandstats(const struct redis *r)
{
    redisContext *c = redisConnectUnix(r->sock);
    char *s = NULL;
    if (c != NULL && !c->err) {
        redisReply *rep = redisCommand(c, "INFO commandstats");
        if (rep != NULL && rep->type == REDIS_REPLY_STRING)
            s = strdup(rep->str);
        freeReplyObject(rep);
    }
    redisFree(c);
    return s;
}

static double stat_after(const char *text, const char *name, const char *key)
{
    const char *p = text ? strstr(text, name) : NULL;
    const char *k = p ? strstr(p, key) : NULL;
    return k ? strtod(k + strlen(key), NULL) : 0;
}

static void profile(const char *before, const char *after, double tasks)
{
    for (const char *p = after; p && (p = strstr(p, "cmdstat_")) != NULL;
         p++) {
        char name[64];
        if (sscanf(p, "%63[^:]:", name) != 1)
            continue;
        char key[80];
        snprintf(key, sizeof key, "%s:", name);
        double us = stat_after(after, key, "usec=") -
                    stat_after(before, key, "usec=");
        double n = stat_after(after, key, "calls=") -
                   stat_after(before, key, "calls=");
        if (n > 0)
            fprintf(stderr, "  %-28s %8.3f calls/task %8.3f us/task\n",
                    name + 8, n / tasks, us / tasks);
    }
}

static double proc_cpu_s(pid_t pid)
{
    char path[64];
    unsigned long ut = 0, st = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    int ok = fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
                       "%*u %lu %lu", &ut, &st) == 2;
    fclose(f);
    return ok ? (double)(ut + st) / (double)sysconf(_SC_CLK_TCK) : 0;
}

struct host {
    pid_t pid;
    char conf[4200], sock[4200];
};

static int host_up(struct host *h, int i, const struct redis *r, long rounds)
{
    const char *dir = scratch_dir();
    snprintf(h->conf, sizeof h->conf, "%s/cl%d.conf", dir, i);
    snprintf(h->sock, sizeof h->sock, "%s/cl%d.sock", dir, i);
    FILE *f = fopen(h->conf, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "host: { socket = \"%s\"; log = \"%s/cl%d.log\";\n"
               "  log_level = \"warn\"; shutdown_timeout = 5.0; };\n",
            h->sock, dir, i);
    fprintf(f, "plugins = ( { name = \"echo\"; path = \"%s\"; },\n",
            plugin_path("echo"));
    fprintf(f, "  { name = \"hash\"; path = \"%s\"; } );\n",
            plugin_path("hash"));
    fprintf(f, "pools = (\n"
               "  { name = \"echo\"; plugin = \"echo\"; shared = true;\n"
               "    min_workers = 2; max_workers = 2; max_queue = 100000; },\n"
               "  { name = \"hash\"; plugin = \"hash\"; shared = true;\n"
               "    min_workers = 1; max_workers = 1; max_queue = 100000;\n"
               "    settings = { rounds = %ld; }; }\n);\n",
            rounds);
    fprintf(f, "cluster = { redis = \"unix:%s\"; name = \"bench\"; };\n",
            r->sock);
    if (fclose(f) != 0)
        return -1;
    const char *exe = build_path("host/taskhostd");
    h->pid = fork();
    if (h->pid == 0) {
        execl(exe, "taskhostd", "-f", "-c", h->conf, (char *)NULL);
        _exit(127);
    }
    return h->pid > 0 ? 0 : -1;
}

static th_client *host_connect(const struct host *h)
{
    for (int i = 0; i < 1000; i++) {
        th_client *c;
        if (th_client_connect(&c, h->sock, NULL, 0) == 0)
            return c;
        usleep(5000);
    }
    return NULL;
}

/* Waits until both shared pools of the host behind c joined the cluster. */
static int joined(th_client *c)
{
    for (int i = 0; i < 1000; i++) {
        char *js = NULL;
        int n = 0;
        if (th_client_stats(c, NULL, TH_STATS_JSON, &js) == 0 && js != NULL)
            for (const char *p = js; (p = strstr(p, "\"joined\":true")); p++)
                n++;
        free(js);
        if (n >= 2)
            return 0;
        usleep(10000);
    }
    return -1;
}

static void host_down(struct host *h)
{
    kill(h->pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(h->pid, NULL, WNOHANG) == h->pid)
            return;
        usleep(10000);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
}

static int c_submit(void *ctx, const char *pool, const char *task,
                    const void *input, size_t len, th_done_fn done, void *arg)
{
    return th_client_submit(ctx, pool, task, input, len, NULL, done, arg,
                            NULL);
}

static int c_step(void *ctx, int timeout_ms)
{
    return th_client_step(ctx, timeout_ms);
}

/* Rounds of the hash plugin that make one task last about TASK_MS, run
 * in an embedded host. */
static long calibrate(void)
{
    long rounds = 2000;
    for (int pass = 0; pass < 2; pass++) {
        th_host *h;
        th_pool_opts o;
        char settings[64];
        if (th_host_new(&h) < 0)
            return -1;
        snprintf(settings, sizeof settings, "rounds = %ld;", rounds);
        th_pool_opts_init(&o);
        o.name = "hash";
        o.plugin = "hash";
        o.min_workers = o.max_workers = 1;
        o.settings = settings;
        if (th_host_add_plugin(h, "hash", plugin_path("hash"), NULL, 0) < 0 ||
            th_host_add_pool(h, &o, NULL, 0) < 0) {
            th_host_close(h, TH_CLOSE_FORCE);
            return -1;
        }
        th_result r;
        th_host_call(h, "hash", "sha256", "x", 1, NULL, &r);
        th_result_free(&r);
        double t0 = now_s();
        for (int i = 0; i < 10; i++) {
            th_host_call(h, "hash", "sha256", "x", 1, NULL, &r);
            th_result_free(&r);
        }
        double ms = (now_s() - t0) * 100;
        th_host_close(h, TH_CLOSE_FORCE);
        if (ms <= 0)
            return -1;
        rounds = (long)((double)rounds * TASK_MS / ms);
        if (rounds < 1)
            rounds = 1;
    }
    return rounds;
}

static void put3(const char *fmt, int n, const char *what, double v)
{
    char key[64];
    snprintf(key, sizeof key, fmt, n, what);
    fig_put(key, v);
}

/* One row: n hosts up, load through the first. */
static int row(const struct redis *r, int n, long rounds, double *hash_tps)
{
    struct host h[HOSTS_MAX];
    th_client *c = NULL;
    int up = 0, rc = -1;
    for (; up < n; up++)
        if (host_up(&h[up], up, r, rounds) < 0)
            goto out;
    for (int i = 0; i < n; i++) {
        th_client *x = host_connect(&h[i]);
        if (x == NULL || joined(x) < 0) {
            th_client_close(x);
            goto out;
        }
        if (i > 0)
            th_client_close(x);
        else
            c = x;
    }
    struct target t = {c, c_submit, c_step};
    struct load_result lr;
    /* Joined and warm: the first tasks wait for the hosts to join. */
    if (load_run(&t, "echo", "echo", 16, 64, 4000, &lr) < 0)
        goto out;
    const char *prof = getenv("TH_BENCH_REDIS_PROFILE");
    char *stats0 = prof ? commandstats(r) : NULL;
    double host0 = prof ? proc_cpu_s(h[0].pid) : 0;
    struct redis_work before = redis_work(r);
    if (load_run(&t, "echo", "echo", 16, 256, ECHO_256_COUNT, &lr) < 0)
        goto out;
    struct redis_work after = redis_work(r);
    if (prof) {
        char *stats1 = commandstats(r);
        fprintf(stderr, "cluster, %d host(s), %.0f tasks/s: Redis %.1f us/task, "
                        "host 1 %.1f us/task\n", n, lr.tps,
                (after.cpu_s - before.cpu_s) * 1e6 / (double)lr.tasks,
                (proc_cpu_s(h[0].pid) - host0) * 1e6 / (double)lr.tasks);
        profile(stats0, stats1, (double)lr.tasks);
        free(stats1);
    }
    free(stats0);
    put3("cl%d_%s", n, "256_tps", lr.tps);
    put3("cl%d_%s", n, "256_p50_us", lr.p50_us);
    put3("cl%d_%s", n, "256_p99_us", lr.p99_us);
    put3("cl%d_%s", n, "cmds", (after.calls - before.calls) / (double)lr.tasks);
    double cpu_us = (after.cpu_s - before.cpu_s) * 1e6 / (double)lr.tasks;
    if (n == 1 && before.cpu_s >= 0 && after.cpu_s >= 0 && cpu_us > 0) {
        fig_put("cl1_redis_us", cpu_us);
        fig_put("cl_redis_cap_tps", 1e6 / cpu_us);
    }
    if (n == 1) {
        if (load_run(&t, "echo", "echo", 16, 1, ECHO_1_COUNT, &lr) < 0)
            goto out;
        fig_put("cl1_1_p50_us", lr.p50_us);
        double local = fig_median("daemon_1_p50_us");
        if (local > 0)
            fig_put("cl_added_p50_us", lr.p50_us - local);
        else
            fig_na("cl_added_p50_us", "no local daemon row (-s daemon)");
    }
    /* One worker per host, two tasks in flight per host: one runs, one
     * waits claimed. */
    if (load_run(&t, "hash", "sha256", 1, 2 * n, HASH_TASKS, &lr) < 0)
        goto out;
    *hash_tps = lr.tps;
    put3("cl_hash_%d_%s", n, "p50_us", lr.p50_us);
    put3("cl_hash_%d_%s", n, "p99_us", lr.p99_us);
    rc = 0;
out:
    th_client_close(c);
    for (int i = 0; i < up; i++)
        host_down(&h[i]);
    return rc;
}

void suite_cluster(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        all_na("redis-server not installed");
        return;
    }
    note("cluster: shared pools on 1, 2, 3 hosts through one Redis");
    long rounds = calibrate();
    if (rounds < 0) {
        note("cluster: hash rounds not calibrated (the embedded host could "
             "not run the plugin): using 2000");
        rounds = 2000;
    }
    for (int run = 0; run < bench_runs; run++) {
        struct redis r;
        double tps[HOSTS_MAX + 1] = {0};
        if (redis_up(&r) < 0) {
            all_na("redis-server did not start");
            return;
        }
        for (int n = 1; n <= HOSTS_MAX; n++)
            if (row(&r, n, rounds, &tps[n]) < 0)
                note("cluster: the %d-host run failed", n);
        redis_down(&r);
        if (tps[1] > 0 && tps[2] > 0) {
            fig_put("cl_hash_1_tps", tps[1]);
            fig_put("cl_hash_2_tps", tps[2]);
            if (tps[3] > 0)
                fig_put("cl_hash_3_tps", tps[3]);
            double machine = fig_median("cpu_machine_x");
            if (machine > 0)
                fig_put("cl_hash_eff_pct",
                        tps[2] / tps[1] / machine * 100.0);
            else
                fig_na("cl_hash_eff_pct", "no machine row (-s cpu)");
        }
    }
}
