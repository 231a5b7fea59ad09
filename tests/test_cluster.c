/* test_cluster.c - pools shared by several daemons through a real Redis.
 *
 * Each test starts its own redis-server on a Unix socket in a temporary
 * directory (no TCP port, nothing saved) and real taskhostd daemons whose
 * shared pool `sh` runs the xlog test plugin: every run of a task appends
 * its input to that daemon's execution log, so a test sees which host ran
 * what, and how often. Lease 1 s, heartbeat 200 ms.
 *
 * Without redis-server the tests are skipped, except under CI=true, where
 * they fail.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "taskhost_host.h"

#define OK HX_STATE_BIT(TH_STATE_OK)
#define CRASHED HX_STATE_BIT(TH_STATE_CRASHED)
#define LOAD_DEADLINE 240.0
#define Q "th:t:{sh}:q"
#define PRE "th:t:{sh}:"

/* ---- what a test started, stopped by its teardown even on failure ----
 * Copies, not pointers: a failed test's stack frame is gone by then. */

#define MAX_STARTED 16
static struct started {
    pid_t pid;
    char dir[64];
} started[MAX_STARTED];

static void remember(pid_t pid, const char *dir)
{
    for (int i = 0; i < MAX_STARTED; i++)
        if (started[i].pid == 0) {
            started[i].pid = pid;
            snprintf(started[i].dir, sizeof started[i].dir, "%s", dir);
            return;
        }
}

static void forget(pid_t pid)
{
    for (int i = 0; i < MAX_STARTED; i++)
        if (started[i].pid == pid)
            started[i].pid = 0;
}

/* ---- redis-server ---- */

struct redis {
    char dir[64];
    char sock[128];
    int aof;
    pid_t pid;
};

static int have_redis(void)
{
    return system("command -v redis-server >/dev/null 2>&1") == 0;
}

/* Skips the test without redis-server, or fails under CI=true. */
static void need_redis(void)
{
    if (have_redis())
        return;
    const char *ci = getenv("CI");
    if (ci != NULL && strcmp(ci, "true") == 0)
        fail_msg("redis-server is not installed (CI=true: not skipping)");
    skip();
}

static redisContext *rconnect(const struct redis *r)
{
    redisContext *c = redisConnectUnix(r->sock);
    if (c != NULL && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static void redis_start(struct redis *r)
{
    char log[160];
    snprintf(r->sock, sizeof r->sock, "%s/r.sock", r->dir);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    r->pid = fork();
    assert_true(r->pid >= 0);
    if (r->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket",
               r->sock, "--unixsocketperm", "700", "--save", "", "--dir",
               r->dir, "--logfile", log, "--appendonly",
               r->aof ? "yes" : "no", "--appendfsync", "always",
               (char *)NULL);
        _exit(127);
    }
    remember(r->pid, r->dir);
    double end = hx_now() + 20;
    for (;;) {
        redisContext *c = rconnect(r);
        if (c != NULL) {
            redisReply *rep = redisCommand(c, "PING");
            int ok = rep && rep->type == REDIS_REPLY_STATUS;
            freeReplyObject(rep);
            redisFree(c);
            if (ok)
                return;
        }
        assert_true(hx_now() < end);
        hx_pause_ms(10);
    }
}

static void redis_init(struct redis *r, int aof)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "/tmp/th-redis.XXXXXX");
    assert_non_null(mkdtemp(r->dir));
    r->aof = aof;
    redis_start(r);
}

static void redis_stop(struct redis *r)
{
    if (r->pid <= 0)
        return;
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0);
    forget(r->pid);
    r->pid = 0;
}

static void redis_cleanup(struct redis *r)
{
    char cmd[128];
    redis_stop(r);
    if (r->dir[0] == '\0' || getenv("TH_CLUSTER_KEEP") != NULL)
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", r->dir);
}

static long long rint_(const struct redis *r, const char *fmt, ...)
{
    redisContext *c = rconnect(r);
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    long long v = -1;
    if (rep && rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    else if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
             rep->element[0]->type == REDIS_REPLY_INTEGER)
        v = rep->element[0]->integer; /* XPENDING summary */
    else if (rep && rep->type == REDIS_REPLY_ARRAY)
        v = (long long)rep->elements;
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

/* Runs a command that must not fail. */
static void rok(const struct redis *r, const char *fmt, ...)
{
    redisContext *c = rconnect(r);
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    if (rep->type == REDIS_REPLY_ERROR)
        fail_msg("%s: %s", fmt, rep->str);
    freeReplyObject(rep);
    redisFree(c);
}

/* Tasks in stream `key` that no host claimed yet: answered entries stay
 * in it, counted in <key>:done, until trimmed. */
static long long unclaimed(const struct redis *r, const char *key)
{
    redisContext *c = rconnect(r);
    assert_non_null(c);
    redisReply *rep = redisCommand(c, "GET %s:done", key);
    long long done = rep && rep->type == REDIS_REPLY_STRING
                         ? strtoll(rep->str, NULL, 10)
                         : 0;
    freeReplyObject(rep);
    redisFree(c);
    return rint_(r, "XLEN %s", key) - rint_(r, "XPENDING %s w", key) - done;
}

/* Nothing queued, nothing claimed, no payload left, no dead letter. The
 * answered entries left in the streams go at a heartbeat. */
static void assert_redis_clean(const struct redis *r)
{
    double end = hx_now() + 10;
    while ((rint_(r, "XLEN " Q) != 0 || rint_(r, "XLEN th:t:{sx}:q") != 0) &&
           hx_now() < end)
        hx_pause_ms(20);
    assert_int_equal(rint_(r, "XLEN th:t:{sx}:q"), 0);
    assert_int_equal(rint_(r, "XPENDING th:t:{sx}:q w"), 0);
    assert_int_equal(rint_(r, "XLEN " Q), 0);
    assert_int_equal(rint_(r, "XPENDING " Q " w"), 0);
    assert_int_equal(rint_(r, "KEYS " PRE "in:*"), 0);
    assert_int_equal(rint_(r, "KEYS " PRE "out:*"), 0);
    assert_int_equal(rint_(r, "XLEN " PRE "dead"), 0);
}

/* ---- daemons ---- */

struct node {
    struct hx h;
    char xlog[160];
};

static void node_conf(struct node *n, const struct redis *r,
                      const char *pool_extra)
{
    FILE *f = fopen(n->h.conf, "w");
    assert_non_null(f);
    fprintf(f,
            "host: { socket = \"%s\"; log = \"%s\"; log_level = \"info\";\n"
            "        shutdown_timeout = 10.0; };\n"
            "plugins = ( { name = \"xlog\"; path = \"" TEST_PLUGINS
            "/xlog.so\"; } );\n"
            "pools = ( { name = \"sh\"; plugin = \"xlog\"; shared = true;\n"
            "  task_timeout = 30.0; %s %s\n"
            "  settings = { log = \"%s\"; }; },\n"
            "  { name = \"sx\"; plugin = \"xlog\"; shared = true;\n"
            "  max_workers = 4; max_queue = 1000000;\n"
            "  settings = { log = \"%s\"; }; } );\n"
            "cluster: { redis = \"unix:%s\"; name = \"t\"; lease = 1.0;\n"
            "  heartbeat = 0.2; max_attempts = 3; };\n",
            n->h.sock, n->h.log, pool_extra ? pool_extra : "",
            pool_extra && strstr(pool_extra, "max_queue")
                ? ""
                : "max_queue = 1000000;",
            n->xlog, n->xlog,
            r->sock);
    assert_int_equal(fclose(f), 0);
}

static int joined(struct node *n)
{
    char *js = hx_stats_json(&n->h, "sh");
    int ok = js != NULL && strstr(js, "\"joined\":true") != NULL;
    free(js);
    return ok;
}

/* Starts n's daemon without waiting for it to join the cluster. */
static void node_launch(struct node *n, const char *name,
                        const struct redis *r, const char *pool_extra)
{
    memset(n, 0, sizeof *n);
    assert_int_equal(hx_init(&n->h, name), 0);
    snprintf(n->xlog, sizeof n->xlog, "%s/exec.log", n->h.dir);
    node_conf(n, r, pool_extra);
    int rc = hx_start(&n->h);
    if (n->h.pid > 0)
        remember(n->h.pid, n->h.dir);
    if (rc < 0)
        fail_msg("%s: %s", name, n->h.why);
}

static void node_start(struct node *n, const char *name,
                       const struct redis *r, const char *pool_extra)
{
    node_launch(n, name, r, pool_extra);
    double end = hx_now() + 20;
    while (!joined(n)) {
        assert_true(hx_now() < end);
        hx_pause_ms(20);
    }
}

/* Waits until a line of n's log holds a (and b, unless NULL). */
static void wait_logged(const struct node *n, const char *a, const char *b)
{
    double end = hx_now() + 10;
    while ((b ? hx_log_count2(&n->h, a, b) : hx_log_count(&n->h, a)) == 0) {
        assert_true(hx_now() < end);
        hx_pause_ms(20);
    }
}

static void node_kill(struct node *n)
{
    if (n->h.pid > 0) {
        kill(n->h.pid, SIGKILL);
        waitpid(n->h.pid, NULL, 0);
        forget(n->h.pid);
        n->h.pid = 0;
    }
}

static void node_cleanup(struct node *n)
{
    if (getenv("TH_CLUSTER_KEEP") != NULL) {
        node_kill(n);
        fprintf(stderr, "kept %s\n", n->h.dir);
        return;
    }
    forget(n->h.pid);
    hx_cleanup(&n->h);
}

/* Stops what the test started and left running (it failed midway). */
static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_STARTED; i++) {
        if (started[i].pid <= 0)
            continue;
        char cmd[128];
        kill(started[i].pid, SIGKILL);
        waitpid(started[i].pid, NULL, 0);
        started[i].pid = 0;
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", started[i].dir);
        if (getenv("TH_CLUSTER_KEEP") == NULL && system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", started[i].dir);
    }
    return 0;
}

/* How many times `line` is in the execution log of n. */
static int runs_of(const struct node *n, const char *line)
{
    FILE *f = fopen(n->xlog, "r");
    char buf[256];
    int k = 0;
    if (f == NULL)
        return 0;
    while (fgets(buf, sizeof buf, f) != NULL) {
        buf[strcspn(buf, "\n")] = '\0';
        k += strcmp(buf, line) == 0;
    }
    fclose(f);
    return k;
}

static long stat_of(struct node *n, const char *key)
{
    char *js = hx_stats_json(&n->h, "sh");
    long v = js ? (long)hx_json_num(js, key) : -1;
    free(js);
    return v;
}

/* ---- one task at a time, through the client library ---- */

struct one {
    int done;
    th_state state;
    char out[512];
};

static void on_one(const th_result *r, void *arg)
{
    struct one *o = arg;
    o->done = 1;
    o->state = r->state;
    snprintf(o->out, sizeof o->out, "%.*s", (int)r->len, (const char *)r->data);
}

static uint64_t submit(th_client *c, const char *task, const char *in,
                       struct one *o)
{
    uint64_t tag = 0;
    memset(o, 0, sizeof *o);
    assert_int_equal(th_client_submit(c, "sh", task, in, strlen(in), NULL,
                                      on_one, o, &tag),
                     0);
    return tag;
}

/* submit() at priority prio. */
static uint64_t submit_at(th_client *c, int prio, const char *in,
                          struct one *o)
{
    th_submit_opts so = TH_SUBMIT_OPTS_INIT;
    uint64_t tag = 0;
    so.priority = prio;
    memset(o, 0, sizeof *o);
    assert_int_equal(th_client_submit(c, "sh", "hold", in, strlen(in), &so,
                                      on_one, o, &tag),
                     0);
    return tag;
}

/* Steps c until o is answered or `limit` seconds pass; returns seconds. */
static double await(th_client *c, struct one *o, double limit)
{
    double t0 = hx_now();
    while (!o->done && hx_now() - t0 < limit)
        assert_true(th_client_step(c, 20) >= 0);
    return hx_now() - t0;
}

/* Waits until `line` ran k times on n, stepping client c (may be NULL). */
static void wait_runs(const struct node *n, th_client *c, const char *line,
                      int k)
{
    double end = hx_now() + 20;
    while (runs_of(n, line) < k) {
        assert_true(hx_now() < end);
        if (c != NULL)
            assert_true(th_client_step(c, 10) >= 0);
        else
            hx_pause_ms(10);
    }
}

/* Runs of `line` on any of the n nodes. */
static int runs_on(const struct node *nodes, int n, const char *line)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += runs_of(&nodes[i], line);
    return k;
}

/* The line of n's execution log that comes k-th (0-based) among those
 * starting with `prefix`, into out; "" when there are fewer. */
static void nth_run(const struct node *n, const char *prefix, int k,
                    char *out, size_t len)
{
    FILE *f = fopen(n->xlog, "r");
    char buf[256];
    out[0] = '\0';
    while (f != NULL && fgets(buf, sizeof buf, f) != NULL) {
        buf[strcspn(buf, "\n")] = '\0';
        if (strncmp(buf, prefix, strlen(prefix)) == 0 && k-- == 0) {
            snprintf(out, len, "%.*s", (int)len - 1, buf);
            break;
        }
    }
    if (f != NULL)
        fclose(f);
}

/* Waits until host n holds k claimed tasks, stepping client c. */
static void wait_held(struct node *n, th_client *c, long k)
{
    double end = hx_now() + 10;
    while (stat_of(n, "held") < k) {
        assert_true(hx_now() < end);
        th_client_step(c, 10);
    }
}

/* On a host of one worker: task `run` runs and `held` waits claimed
 * behind it, so that what is submitted next waits in Redis. */
static void run_and_hold(struct node *n, th_client *c, const char *run,
                         struct one *o_run, const char *held,
                         struct one *o_held)
{
    submit(c, "hold", run, o_run);
    wait_runs(n, c, run, 1);
    submit(c, "hold", held, o_held);
    wait_held(n, c, 2);
}

/* Nothing left in the priority bands' streams either. */
static void assert_bands_clean(const struct redis *r)
{
    redisContext *x = rconnect(r);
    redisReply *bands = redisCommand(x, "ZRANGE " PRE "bands 0 -1");
    assert_non_null(bands);
    assert_true(bands->elements > 0);
    for (size_t i = 0; i < bands->elements; i++) {
        const char *b = bands->element[i]->str;
        assert_int_equal(rint_(r, "XLEN " Q ":%s", b), 0);
        assert_int_equal(rint_(r, "XPENDING " Q ":%s w", b), 0);
    }
    freeReplyObject(bands);
    redisFree(x);
}

/* ---- tests ---- */

static void test_tasks_of_one_host_run_on_another(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a, b;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    node_start(&b, "cl-b", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    struct one o[4];
    /* Three long tasks: one host with a single worker claims at most two
     * (what it can start, plus a prefetch of one). */
    const char *in[] = {"400:x1", "400:x2", "400:x3"};
    for (int i = 0; i < 3; i++)
        submit(c, "hold", in[i], &o[i]);
    submit(c, "echo", "hello", &o[3]);
    for (int i = 0; i < 4; i++)
        await(c, &o[i], 20);
    for (int i = 0; i < 4; i++)
        assert_int_equal(o[i].state, TH_STATE_OK);
    assert_string_equal(o[3].out, "hello");
    int on_b = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(runs_of(&a, in[i]) + runs_of(&b, in[i]), 1);
        on_b += runs_of(&b, in[i]);
    }
    assert_true(on_b >= 1);
    th_client_close(c);
    assert_redis_clean(&r);
    node_cleanup(&a);
    node_cleanup(&b);
    redis_cleanup(&r);
}

/* A pipe reading the inputs that the execution logs of
 * nodes[0..n) hold more than once. */
static FILE *open_duplicates(struct node *nodes, int n)
{
    char cmd[1024];
    int len = snprintf(cmd, sizeof cmd, "cat");
    for (int i = 0; i < n; i++)
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " '%s'",
                        nodes[i].xlog);
    snprintf(cmd + len, sizeof cmd - (size_t)len, " | sort | uniq -d");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    return p;
}

/* How many inputs ran more than once on nodes[0..n). */
static long duplicates(struct node *nodes, int n)
{
    FILE *p = open_duplicates(nodes, n);
    char line[256];
    long dups = 0;
    while (fgets(line, sizeof line, p) != NULL) {
        if (dups < 10)
            fprintf(stderr, "ran twice: %s", line);
        dups++;
    }
    pclose(p);
    return dups;
}

/* The inputs that ran twice though not on nodes[killed]. */
static long duplicates_outside(struct node *nodes, int n, int killed)
{
    FILE *p = open_duplicates(nodes, n);
    char line[256];
    long dups = 0, outside = 0;
    while (fgets(line, sizeof line, p) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        dups++;
        if (runs_of(&nodes[killed], line) == 0) {
            outside++;
            fprintf(stderr, "ran twice, not on the killed host: %s\n", line);
        }
    }
    pclose(p);
    fprintf(stderr, "cluster: %ld tasks ran twice, all among the killed "
                    "host's\n",
            dups);
    return outside;
}

static long mixed_tasks(void)
{
    const char *e = getenv("TASKHOST_CLUSTER_TASKS");
    if (e != NULL && atol(e) > 0)
        return atol(e);
    return hx_scaled(100000, 3000);
}

static void test_three_hosts_kill9_every_task_answered_once(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node n[3];
    long total = mixed_tasks();
    const struct hx_kind kinds[] = {
        {"echo", "sh", "echo", NULL, OK, 0, 90},
        {"nap", "sh", "nap", NULL, OK, 0, 9},
        {"segv", "sx", "segv", NULL, CRASHED, total / 200, 0},
    };
    struct hx_load la, lc;
    redis_init(&r, 0);
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "cl-%c", 'a' + i);
        node_start(&n[i], name, &r, "max_workers = 2;");
    }
    assert_int_equal(hx_load_start(&la, &n[0].h, 4, total / 8, 64, kinds, 3),
                     0);
    assert_int_equal(hx_load_start(&lc, &n[2].h, 4, total / 8, 64, kinds, 3),
                     0);
    hx_load_number_from(&lc, 100);
    double t0 = hx_now();
    int killed = 0, busy = 1;
    while (busy && hx_now() - t0 < LOAD_DEADLINE) {
        int ba = hx_load_pump(&la, 5);
        int bc = hx_load_pump(&lc, 5);
        assert_true(ba >= 0 && bc >= 0);
        busy = ba || bc;
        if (!killed && la.answered + lc.answered >= total * 3 / 10) {
            node_kill(&n[1]);
            killed = 1;
        }
    }
    double took = hx_now() - t0;
    hx_load_report(&la, "cluster via a", stderr);
    hx_load_report(&lc, "cluster via c", stderr);
    fprintf(stderr, "cluster: %ld tasks through 3 hosts, one killed, in "
                    "%.1f s (%.0f tasks/s)\n",
            la.answered + lc.answered, took,
            (double)(la.answered + lc.answered) / took);
    assert_true(killed);
    assert_false(busy);
    if (hx_load_check(&la) < 0)
        fail_msg("via a: %s", n[0].h.why);
    if (hx_load_check(&lc) < 0)
        fail_msg("via c: %s", n[2].h.why);
    assert_int_equal(la.submitted + lc.submitted, 8 * (total / 8));
    assert_int_equal(duplicates_outside(n, 3, 1), 0);
    hx_load_free(&la);
    hx_load_free(&lc);
    assert_redis_clean(&r);
    for (int i = 0; i < 3; i++)
        node_cleanup(&n[i]);
    redis_cleanup(&r);
}

static void test_cancel_queued_and_running_across_hosts(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node n[2];
    redis_init(&r, 0);
    node_start(&n[0], "cl-a", &r, "max_workers = 1;");
    node_start(&n[1], "cl-b", &r, "max_workers = 1;");
    th_client *c = hx_connect(&n[0].h);
    struct one o[6];
    uint64_t tag[6];
    char in[6][32];
    for (int i = 0; i < 6; i++) {
        snprintf(in[i], sizeof in[i], "20000:c%d", i);
        tag[i] = submit(c, "hold", in[i], &o[i]);
    }
    /* One runs on each host, each host holds one more, two wait in
     * Redis. */
    double end = hx_now() + 20;
    int running = 0;
    while (running < 2) {
        assert_true(hx_now() < end);
        assert_true(th_client_step(c, 10) >= 0);
        running = 0;
        for (int i = 0; i < 6; i++)
            running += runs_on(n, 2, in[i]);
    }
    assert_int_equal(th_client_cancel(c, tag[5]), 0);
    assert_true(await(c, &o[5], 5) < 1.0);
    assert_int_equal(o[5].state, TH_STATE_CANCELLED);
    /* The one running on the other host. */
    int x = -1;
    for (int i = 0; i < 5; i++)
        if (runs_of(&n[1], in[i]) > 0)
            x = i;
    assert_true(x >= 0);
    assert_int_equal(th_client_cancel(c, tag[x]), 0);
    assert_true(await(c, &o[x], 5) < 2.0);
    assert_int_equal(o[x].state, TH_STATE_CANCELLED);
    for (int i = 0; i < 5; i++)
        if (!o[i].done)
            th_client_cancel(c, tag[i]);
    for (int i = 0; i < 5; i++) {
        await(c, &o[i], 10);
        assert_true(o[i].done);
        assert_int_equal(o[i].state, TH_STATE_CANCELLED);
    }
    /* What waited in Redis never ran; the killed run ran once. */
    assert_int_equal(runs_on(n, 2, in[5]), 0);
    assert_int_equal(runs_on(n, 2, in[x]), 1);
    th_client_close(c);
    end = hx_now() + 10;
    while (rint_(&r, "XPENDING " Q " w") != 0 && hx_now() < end)
        hx_pause_ms(20);
    assert_redis_clean(&r);
    node_cleanup(&n[0]);
    node_cleanup(&n[1]);
    redis_cleanup(&r);
}

static void test_queue_timeout_in_the_cluster(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1; queue_timeout = 0.3;");
    th_client *c = hx_connect(&a.h);
    struct one o[4];
    char in[32];
    for (int i = 0; i < 4; i++) {
        snprintf(in, sizeof in, "1500:q%d", i);
        submit(c, "hold", in, &o[i]);
    }
    await(c, &o[3], 5);
    await(c, &o[2], 5);
    assert_int_equal(o[2].state, TH_STATE_TIMEOUT);
    assert_int_equal(o[3].state, TH_STATE_TIMEOUT);
    assert_non_null(strstr(o[3].out, "queue_timeout"));
    await(c, &o[0], 5);
    await(c, &o[1], 5);
    assert_int_equal(o[0].state, TH_STATE_OK);
    assert_int_equal(o[1].state, TH_STATE_TIMEOUT);
    assert_int_equal(runs_of(&a, "1500:q3"), 0);
    th_client_close(c);
    assert_redis_clean(&r);
    node_cleanup(&a);
    redis_cleanup(&r);
}

/* One worker, prefetch one: 2 tasks held, then max_queue = 2 in Redis. */
static void overflow_case(const char *mode, th_state fifth, th_state third)
{
    need_redis();
    struct redis r;
    struct node a;
    char extra[128];
    redis_init(&r, 0);
    snprintf(extra, sizeof extra,
             "max_workers = 1; max_queue = 2; overflow = \"%s\";", mode);
    node_start(&a, "cl-a", &r, extra);
    th_client *c = hx_connect(&a.h);
    struct one o[5];
    char in[32];
    /* Claimed first, so that what follows waits in Redis. */
    run_and_hold(&a, c, "600:o0", &o[0], "600:o1", &o[1]);
    for (int i = 2; i < 5; i++) {
        snprintf(in, sizeof in, "600:o%d", i);
        submit(c, "hold", in, &o[i]);
        th_client_step(c, 30);
    }
    for (int i = 0; i < 5; i++)
        await(c, &o[i], 20);
    assert_int_equal(o[4].state, fifth);
    assert_int_equal(o[2].state, third);
    th_client_close(c);
    assert_redis_clean(&r);
    node_cleanup(&a);
    redis_cleanup(&r);
}

static void test_overflow_reject_in_the_cluster(void **state)
{
    (void)state;
    overflow_case("reject",
                  TH_STATE_REJECTED, TH_STATE_OK);
}

static void test_overflow_drop_oldest_in_the_cluster(void **state)
{
    (void)state;
    overflow_case("drop-oldest",
                  TH_STATE_OK, TH_STATE_REJECTED);
}

static void test_overflow_block_in_the_cluster(void **state)
{
    (void)state;
    overflow_case("block", TH_STATE_OK,
                  TH_STATE_OK);
}

static void test_priority_orders_the_shared_queue(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    struct one first, held, o[6];
    /* One runs and one more is held, so that the rest wait in Redis. */
    run_and_hold(&a, c, "700:p-run", &first, "20:p-held", &held);
    const int prio[] = {0, -5, 5, 10, 5, 0};
    const char *in[] = {"20:p0a", "20:pm5", "20:p5a", "20:p10", "20:p5b",
                        "20:p0b"};
    for (int i = 0; i < 6; i++)
        submit_at(c, prio[i], in[i], &o[i]);
    for (int i = 0; i < 6; i++) {
        await(c, &o[i], 20);
        assert_int_equal(o[i].state, TH_STATE_OK);
    }
    const char *want[] = {"20:p-held", "20:p10", "20:p5a", "20:p5b",
                          "20:p0a", "20:p0b", "20:pm5"};
    for (int k = 0; k < 7; k++) {
        char line[64];
        nth_run(&a, "20:p", k, line, sizeof line);
        assert_string_equal(line, want[k]);
    }
    await(c, &first, 20);
    th_client_close(c);
    assert_redis_clean(&r);
    assert_bands_clean(&r);
    node_cleanup(&a);
    redis_cleanup(&r);
}

static void test_priority_task_reaches_an_idle_host(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a, b;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    struct one busy[2], o;
    uint64_t tag[2];
    tag[0] = submit(c, "hold", "20000:i0", &busy[0]);
    tag[1] = submit(c, "hold", "20000:i1", &busy[1]);
    wait_held(&a, c, 2);
    /* b comes idle and waits on the queue alone: it learns of the band
     * from the heartbeat, not from a submit of its own. */
    node_start(&b, "cl-b", &r, "max_workers = 1;");
    submit_at(c, 7, "20:urgent", &o);
    assert_true(await(c, &o, 20) < 5.0);
    assert_int_equal(o.state, TH_STATE_OK);
    assert_int_equal(runs_of(&b, "20:urgent"), 1);
    assert_int_equal(runs_of(&a, "20:urgent"), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(th_client_cancel(c, tag[i]), 0);
        await(c, &busy[i], 10);
        assert_int_equal(busy[i].state, TH_STATE_CANCELLED);
    }
    th_client_close(c);
    double end = hx_now() + 10;
    while (rint_(&r, "XPENDING " Q " w") != 0 && hx_now() < end)
        hx_pause_ms(20);
    assert_redis_clean(&r);
    assert_bands_clean(&r);
    node_cleanup(&a);
    node_cleanup(&b);
    redis_cleanup(&r);
}

static void test_cancel_queued_task_of_a_priority_band(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    struct one run, held, o;
    run_and_hold(&a, c, "600:b-run", &run, "20:b-held", &held);
    uint64_t tag = submit_at(c, 3, "20:b-cancelled", &o);
    double end = hx_now() + 10;
    while (rint_(&r, "XLEN " Q ":3") < 1) {
        assert_true(hx_now() < end);
        th_client_step(c, 10);
    }
    assert_int_equal(th_client_cancel(c, tag), 0);
    assert_true(await(c, &o, 5) < 1.0);
    assert_int_equal(o.state, TH_STATE_CANCELLED);
    await(c, &run, 20);
    await(c, &held, 20);
    assert_int_equal(held.state, TH_STATE_OK);
    assert_int_equal(runs_of(&a, "20:b-cancelled"), 0);
    th_client_close(c);
    assert_redis_clean(&r);
    assert_bands_clean(&r);
    node_cleanup(&a);
    redis_cleanup(&r);
}

static void test_drop_oldest_drops_the_lowest_priority(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r,
               "max_workers = 1; max_queue = 2; overflow = \"drop-oldest\";");
    th_client *c = hx_connect(&a.h);
    struct one run, held, o[3];
    run_and_hold(&a, c, "400:d-run", &run, "20:d-held", &held);
    submit_at(c, 5, "20:d5", &o[0]);
    submit_at(c, 0, "20:d0", &o[1]);
    double end = hx_now() + 10;
    while (unclaimed(&r, Q) + unclaimed(&r, Q ":5") < 2) {
        assert_true(hx_now() < end);
        th_client_step(c, 10);
    }
    submit_at(c, 3, "20:d3", &o[2]);
    for (int i = 0; i < 3; i++)
        await(c, &o[i], 20);
    assert_int_equal(o[0].state, TH_STATE_OK);
    assert_int_equal(o[1].state, TH_STATE_REJECTED);
    assert_int_equal(o[2].state, TH_STATE_OK);
    assert_int_equal(runs_of(&a, "20:d0"), 0);
    await(c, &run, 20);
    await(c, &held, 20);
    th_client_close(c);
    assert_redis_clean(&r);
    assert_bands_clean(&r);
    node_cleanup(&a);
    redis_cleanup(&r);
}

static void test_band_empty_for_a_minute_is_removed(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, NULL);
    /* A band whose last entry came at the start of the epoch, long gone,
     * and one that just had an entry. */
    rok(&r, "XGROUP CREATE " Q ":9 w 0 MKSTREAM");
    rok(&r, "XADD " Q ":9 1-1 tid x");
    assert_int_equal(rint_(&r, "XDEL " Q ":9 1-1"), 1);
    rok(&r, "XGROUP CREATE " Q ":8 w 0 MKSTREAM");
    rok(&r, "XADD " Q ":8 * tid x");
    assert_int_equal(rint_(&r, "ZADD " PRE "bands 9 9 8 8"), 2);
    double end = hx_now() + 10;
    while (rint_(&r, "EXISTS " Q ":9") != 0) {
        assert_true(hx_now() < end);
        hx_pause_ms(20);
    }
    assert_int_equal(rint_(&r, "ZCARD " PRE "bands"), 1);
    assert_int_equal(rint_(&r, "EXISTS " Q ":8"), 1);
    node_cleanup(&a);
    redis_cleanup(&r);
}

struct big {
    int done;
    th_state state;
    size_t len;
    int same;
    const char *want;
};

static void on_big(const th_result *r, void *arg)
{
    struct big *b = arg;
    b->done = 1;
    b->state = r->state;
    b->len = r->len;
    b->same = r->len == strlen(b->want) && memcmp(r->data, b->want, r->len) == 0;
}

static void test_large_input_and_output_travel_by_reference(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a, b;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    node_start(&b, "cl-b", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    /* Around the 64 KiB line, and well over it. */
    const size_t sizes[] = {65535, 65536, 65537, 300000};
    struct big o[4];
    char *in[4];
    for (int i = 0; i < 4; i++) {
        in[i] = malloc(sizes[i] + 1);
        assert_non_null(in[i]);
        for (size_t k = 0; k < sizes[i]; k++)
            in[i][k] = (char)('a' + (k * 7 + (size_t)i) % 26);
        in[i][sizes[i]] = '\0';
        o[i] = (struct big){.want = in[i]};
        assert_int_equal(th_client_submit(c, "sh", "echo", in[i], sizes[i],
                                          NULL, on_big, &o[i], NULL),
                         0);
    }
    double end = hx_now() + 30;
    for (int i = 0; i < 4; i++)
        while (!o[i].done) {
            assert_true(hx_now() < end);
            assert_true(th_client_step(c, 20) >= 0);
        }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(o[i].state, TH_STATE_OK);
        assert_int_equal(o[i].len, sizes[i]);
        assert_true(o[i].same);
        free(in[i]);
    }
    th_client_close(c);
    assert_redis_clean(&r);
    node_cleanup(&a);
    node_cleanup(&b);
    redis_cleanup(&r);
}

static void test_task_longer_than_lease_not_stolen(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a, b;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    node_start(&b, "cl-b", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    struct one o;
    submit(c, "hold", "2500:long", &o);
    await(c, &o, 10);
    assert_int_equal(o.state, TH_STATE_OK);
    assert_int_equal(runs_of(&a, "2500:long") + runs_of(&b, "2500:long"), 1);
    th_client_close(c);
    assert_redis_clean(&r);
    node_cleanup(&a);
    node_cleanup(&b);
    redis_cleanup(&r);
}

static void test_stopped_host_loses_task_late_answer_dropped(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node n[3];
    redis_init(&r, 0);
    node_start(&n[0], "cl-a", &r, "max_workers = 1;");
    node_start(&n[1], "cl-b", &r, "max_workers = 1;");
    th_client *c = hx_connect(&n[0].h);
    struct one o;
    submit(c, "hold", "1500:stop", &o);
    double end = hx_now() + 10;
    int x = -1;
    while (x < 0) {
        assert_true(hx_now() < end);
        assert_true(th_client_step(c, 10) >= 0);
        for (int i = 0; i < 2; i++)
            if (runs_of(&n[i], "1500:stop") > 0)
                x = i;
    }
    /* Its host stalls for 2.5 leases: its worker finishes meanwhile, and
     * the other host takes the task over and runs it again. */
    kill(n[x].h.pid, SIGSTOP);
    wait_runs(&n[1 - x], c, "1500:stop", 1);
    hx_pause_ms(1000);
    kill(n[x].h.pid, SIGCONT);
    await(c, &o, 10);
    assert_int_equal(o.state, TH_STATE_OK);
    /* Exactly one answer reached the client; the stalled host's late one
     * was refused by the broker. */
    for (int i = 0; i < 20; i++)
        th_client_step(c, 10);
    end = hx_now() + 5;
    while (stat_of(&n[x], "lost") < 1 && hx_now() < end)
        hx_pause_ms(20);
    assert_int_equal(stat_of(&n[x], "lost"), 1);
    assert_int_equal(runs_of(&n[0], "1500:stop") + runs_of(&n[1], "1500:stop"),
                     2);
    th_client_close(c);
    assert_redis_clean(&r);
    node_cleanup(&n[0]);
    node_cleanup(&n[1]);
    redis_cleanup(&r);
}

/* A task whose hosts die max_attempts times is a dead letter. The test
 * puts the task into the queue itself, so that it controls which hosts
 * hold it. */
static void test_dead_letter_after_max_attempts(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node n;
    redis_init(&r, 0);
    node_start(&n, "cl-a", &r, "max_workers = 1;");
    assert_true(rint_(&r, "XADD " PRE "rep:t MAXLEN 0 * j 1") == -1);
    assert_true(rint_(&r, "XADD " Q " * tid 0-1 task hold rt " PRE
                          "rep:t tto 0 qto 0 in 30000:dead") == -1);
    for (int attempt = 1; attempt <= 3; attempt++) {
        wait_runs(&n, NULL, "30000:dead", 1);
        node_kill(&n);
        node_cleanup(&n);
        node_start(&n, "cl-a", &r, "max_workers = 1;");
    }
    double end = hx_now() + 10;
    while (rint_(&r, "XLEN " PRE "rep:t") < 1) {
        assert_true(hx_now() < end);
        hx_pause_ms(20);
    }
    assert_int_equal(rint_(&r, "XLEN " PRE "dead"), 1);
    assert_int_equal(runs_of(&n, "30000:dead"), 0);
    redisContext *rc = rconnect(&r);
    redisReply *rep = redisCommand(rc, "XRANGE " PRE "rep:t - +");
    assert_true(rep->elements == 1);
    char all[1024] = "";
    redisReply *f = rep->element[0]->element[1];
    for (size_t i = 0; i < f->elements; i++)
        strncat(all, f->element[i]->str, sizeof all - strlen(all) - 2);
    assert_non_null(strstr(all, "crashed"));
    assert_non_null(strstr(all, "dead letter"));
    freeReplyObject(rep);
    redisFree(rc);
    assert_int_equal(rint_(&r, "XLEN " Q), 0);
    assert_int_equal(rint_(&r, "XPENDING " Q " w"), 0);
    node_cleanup(&n);
    redis_cleanup(&r);
}

/* Runs 4,000 tasks through a and b (a takes them in), restarting Redis
 * (with its data kept in an AOF, or lost) a third of the way through.
 * Returns the number of inputs that ran twice. */
static long restart_mid_run(int aof)
{
    struct redis r;
    struct node a, b;
    const struct hx_kind kinds[] = {
        {"echo", "sh", "echo", NULL, OK, 0, 9},
        {"nap", "sh", "nap", NULL, OK, 0, 1},
    };
    struct hx_load l;
    redis_init(&r, aof);
    node_start(&a, "cl-a", &r, "max_workers = 2; queue_timeout = 30.0;");
    node_start(&b, "cl-b", &r, "max_workers = 2; queue_timeout = 30.0;");
    long total = hx_scaled(4000, 1000);
    assert_int_equal(hx_load_start(&l, &a.h, 4, total / 4, 32, kinds, 2), 0);
    double t0 = hx_now();
    int restarted = 0, busy = 1;
    while (busy && hx_now() - t0 < LOAD_DEADLINE) {
        busy = hx_load_pump(&l, 5);
        assert_true(busy >= 0);
        if (!restarted && l.answered >= total / 3) {
            redis_stop(&r);
            hx_pause_ms(300);
            redis_start(&r);
            restarted = 1;
        }
    }
    assert_true(restarted);
    assert_false(busy);
    if (hx_load_check(&l) < 0)
        fail_msg("%s", a.h.why);
    hx_load_free(&l);
    assert_redis_clean(&r);
    struct node both[] = {a, b};
    long dups = duplicates(both, 2);
    node_cleanup(&a);
    node_cleanup(&b);
    redis_cleanup(&r);
    return dups;
}

static void test_redis_restart_with_aof_loses_no_task(void **state)
{
    (void)state;
    need_redis();
    assert_int_equal(restart_mid_run(1), 0);
}

/* Redis comes back empty: the hosts see the data set changed and submit
 * again what they took in and was not answered; each task still gets
 * exactly one answer (those in flight may run twice). */
static void test_redis_restart_without_data_answers_every_task(void **state)
{
    (void)state;
    need_redis();
    long dups = restart_mid_run(0);
    fprintf(stderr, "cluster: %ld tasks ran twice across the data loss\n",
            dups);
}

/* Tasks queued in Redis when it loses its data are submitted again by
 * the host that took them in: they run once; the one running then runs
 * again; all are answered once, ok. */
static void test_tasks_queued_when_redis_loses_data_run_once(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    struct one held, o[10];
    char in[10][16];
    submit(c, "hold", "600:lost", &held);
    wait_runs(&a, c, "600:lost", 1);
    for (int i = 0; i < 10; i++) {
        snprintf(in[i], sizeof in[i], "q%d", i);
        submit(c, "echo", in[i], &o[i]);
    }
    /* All ten wait in Redis behind the one running. */
    double end = hx_now() + 20;
    while (rint_(&r, "XLEN " Q) < 11) {
        assert_true(hx_now() < end);
        assert_true(th_client_step(c, 10) >= 0);
    }
    redis_stop(&r);
    redis_start(&r);
    assert_true(await(c, &held, 30) < 30);
    assert_int_equal(held.state, TH_STATE_OK);
    for (int i = 0; i < 10; i++) {
        await(c, &o[i], 30);
        assert_int_equal(o[i].state, TH_STATE_OK);
        assert_string_equal(o[i].out, in[i]);
        assert_int_equal(runs_of(&a, in[i]), 1);
    }
    th_client_close(c);
    assert_redis_clean(&r);
    node_cleanup(&a);
    redis_cleanup(&r);
}

static void test_redis_down_clear_answer_then_recovery(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    struct one o;
    redis_stop(&r);
    double end = hx_now() + 5;
    while (stat_of(&a, "connected") != -1 && hx_now() < end) {
        char *js = hx_stats_json(&a.h, "sh");
        int down = js && strstr(js, "\"connected\":false");
        free(js);
        if (down)
            break;
        hx_pause_ms(20);
    }
    submit(c, "echo", "down", &o);
    assert_true(await(c, &o, 5) < 1.0);
    assert_int_equal(o.state, TH_STATE_REJECTED);
    assert_non_null(strstr(o.out, "redis"));
    assert_non_null(strstr(o.out, r.sock));
    redis_start(&r);
    end = hx_now() + 10;
    for (;;) {
        submit(c, "echo", "back", &o);
        await(c, &o, 5);
        if (o.state == TH_STATE_OK)
            break;
        assert_true(hx_now() < end);
        hx_pause_ms(50);
    }
    assert_string_equal(o.out, "back");
    th_client_close(c);
    node_cleanup(&a);
    redis_cleanup(&r);
}

static void test_redis_down_waits_within_queue_timeout(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1; queue_timeout = 20.0;");
    th_client *c = hx_connect(&a.h);
    struct one o;
    redis_stop(&r);
    hx_pause_ms(200);
    submit(c, "echo", "waited", &o);
    await(c, &o, 0.5);
    assert_false(o.done);
    redis_start(&r);
    await(c, &o, 10);
    assert_int_equal(o.state, TH_STATE_OK);
    assert_string_equal(o.out, "waited");
    th_client_close(c);
    node_cleanup(&a);
    redis_cleanup(&r);
}

static void test_host_with_another_plugin_version_refused(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a, b;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, NULL);
    redisContext *rc = rconnect(&r);
    freeReplyObject(redisCommand(rc, "SET " PRE "cfg %s",
                                 "plugin xlog 0.9 tasks echo"));
    redisFree(rc);
    node_launch(&b, "cl-b", &r, NULL);
    wait_logged(&b, "refused by cluster", NULL);
    assert_int_equal(hx_log_count2(&b.h, "plugin xlog 1.0", "plugin xlog 0.9"),
                     1);
    th_client *c = hx_connect(&b.h);
    struct one o;
    submit(c, "echo", "x", &o);
    await(c, &o, 5);
    assert_int_equal(o.state, TH_STATE_REJECTED);
    assert_non_null(strstr(o.out, "refused"));
    th_client_close(c);
    node_cleanup(&a);
    node_cleanup(&b);
    redis_cleanup(&r);
}

static void test_host_of_another_data_model_refused(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a, b;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, NULL);
    /* What a's pool runs, as a host of the older functions would say it. */
    redisContext *rc = rconnect(&r);
    redisReply *cfg = redisCommand(rc, "GET " PRE "cfg");
    assert_non_null(cfg);
    assert_int_equal(cfg->type, REDIS_REPLY_STRING);
    char *via = strstr(cfg->str, " via taskhost_2");
    assert_non_null(via);
    char old[512];
    snprintf(old, sizeof old, "%.*s via taskhost_1", (int)(via - cfg->str),
             cfg->str);
    freeReplyObject(cfg);
    freeReplyObject(redisCommand(rc, "SET " PRE "cfg %s", old));
    redisFree(rc);
    node_launch(&b, "cl-b", &r, NULL);
    wait_logged(&b, "refused by cluster", "via taskhost_1");
    node_cleanup(&a);
    node_cleanup(&b);
    redis_cleanup(&r);
}

static void test_graceful_stop_gives_back_claimed_tasks(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a, b;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    struct one o[2];
    submit(c, "hold", "800:g0", &o[0]);
    submit(c, "hold", "800:g1", &o[1]);
    wait_runs(&a, c, "800:g0", 1);
    double end = hx_now() + 10;
    while (stat_of(&a, "held") < 2) {
        assert_true(hx_now() < end);
        th_client_step(c, 10);
    }
    /* The second, claimed but not started, goes back at the stop, and
     * the stopping host waits for its answer from the other one. */
    node_start(&b, "cl-b", &r, "max_workers = 1;");
    kill(a.h.pid, SIGTERM);
    await(c, &o[0], 10);
    await(c, &o[1], 10);
    assert_int_equal(o[0].state, TH_STATE_OK);
    assert_int_equal(o[1].state, TH_STATE_OK);
    assert_int_equal(runs_of(&b, "800:g1"), 1);
    th_client_close(c);
    pid_t pid = a.h.pid;
    assert_int_equal(hx_stop(&a.h, SIGTERM, 20), 0);
    forget(pid);
    assert_int_equal(runs_of(&a, "800:g1"), 0);
    end = hx_now() + 10;
    while (rint_(&r, "XLEN " Q) != 0 && hx_now() < end)
        hx_pause_ms(20);
    assert_redis_clean(&r);
    node_cleanup(&a);
    node_cleanup(&b);
    redis_cleanup(&r);
}

/* An embedding program opens a config with the cluster group and adds a
 * shared pool in code: its tasks go through the cluster's queue, and a
 * host without a cluster refuses such a pool with a line saying why. */
static void test_pool_added_in_code_can_be_shared(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    char dir[] = "/tmp/th-emb.XXXXXX", conf[96], err[512];
    assert_non_null(mkdtemp(dir));
    snprintf(conf, sizeof conf, "%s/embed.conf", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "plugins = ( { name = \"xlog\"; path = \"" TEST_PLUGINS
            "/xlog.so\"; } );\n"
            "pools = ( { name = \"local\"; plugin = \"xlog\"; "
            "min_workers = 0; settings = { log = \"%s/exec.log\"; }; } );\n"
            "cluster: { redis = \"unix:%s\"; name = \"t\"; lease = 1.0;\n"
            "  heartbeat = 0.2; };\n",
            dir, r.sock);
    assert_int_equal(fclose(f), 0);
    th_host *h;
    if (th_host_open(&h, conf, err, sizeof err) != 0)
        fail_msg("%s", err);
    th_pool_opts o;
    th_pool_opts_init(&o);
    char settings[128];
    snprintf(settings, sizeof settings, "log = \"%s/exec.log\";", dir);
    o.name = "sh";
    o.plugin = "xlog";
    o.max_workers = 1;
    o.settings = settings;
    o.shared = 1;
    assert_int_equal(th_host_add_pool(h, &o, err, sizeof err), 0);
    for (int i = 0; i < 20; i++) {
        char in[16];
        int n = snprintf(in, sizeof in, "emb:%d", i);
        th_submit_opts so = TH_SUBMIT_OPTS_INIT;
        so.queue_timeout = 30;
        th_result res;
        assert_int_equal(th_host_call(h, "sh", "echo", in, (size_t)n, &so,
                                      &res), 0);
        assert_int_equal(res.state, TH_STATE_OK);
        assert_int_equal(res.len, (size_t)n);
        assert_memory_equal(res.data, in, (size_t)n);
        th_result_free(&res);
    }
    /* All 20 went through the cluster's queue. */
    redisContext *rc = rconnect(&r);
    assert_non_null(rc);
    redisReply *rep = redisCommand(rc, "XINFO STREAM %s", Q);
    assert_non_null(rep);
    long long added = -1;
    for (size_t i = 0; i + 1 < rep->elements; i += 2)
        if (strcmp(rep->element[i]->str, "entries-added") == 0)
            added = rep->element[i + 1]->integer;
    freeReplyObject(rep);
    redisFree(rc);
    assert_true(added >= 20);
    th_host_close(h, TH_CLOSE_GRACEFUL);

    assert_int_equal(th_host_new(&h), 0);
    snprintf(settings, sizeof settings, "%s/xlog.so", TEST_PLUGINS);
    assert_int_equal(th_host_add_plugin(h, "xlog", settings, err, sizeof err),
                     0);
    snprintf(settings, sizeof settings, "log = \"%s/exec.log\";", dir);
    err[0] = '\0';
    assert_int_equal(th_host_add_pool(h, &o, err, sizeof err), TH_ECONFIG);
    assert_non_null(strstr(err, "pool 'sh': shared"));
    assert_non_null(strstr(err, "cluster"));
    th_host_close(h, TH_CLOSE_GRACEFUL);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    node_cleanup(&a);
    redis_cleanup(&r);
}

/* /metrics and `stats --prometheus` carry the cluster's rows of a shared
 * pool, in a form promtool accepts. */
static void test_prometheus_shows_cluster_rows(void **state)
{
    (void)state;
    need_redis();
    struct redis r;
    struct node a;
    redis_init(&r, 0);
    node_start(&a, "cl-a", &r, "max_workers = 1;");
    th_client *c = hx_connect(&a.h);
    for (int i = 0; i < 5; i++) {
        struct one o;
        submit(c, "echo", "p", &o);
        await(c, &o, 30);
        assert_int_equal(o.state, TH_STATE_OK);
    }
    char *text = NULL;
    double end = hx_now() + 30;
    /* The cluster-wide rows come with the next heartbeat. */
    for (;;) {
        free(text);
        text = NULL;
        assert_int_equal(th_client_stats(c, NULL, TH_STATS_PROMETHEUS, &text),
                         0);
        if (strstr(text, "taskhost_cluster_claimed{pool=\"sh\",host=\"1\"}"))
            break;
        assert_true(hx_now() < end);
        hx_pause_ms(50);
    }
    th_client_close(c);
    assert_non_null(strstr(text, "taskhost_cluster_up{pool=\"sh\"} 1\n"));
    assert_non_null(strstr(text, "taskhost_cluster_submitted_total{pool=\"sh\"} 5\n"));
    assert_non_null(strstr(text, "taskhost_cluster_answered_total{pool=\"sh\"} 5\n"));
    assert_non_null(strstr(text, "taskhost_cluster_queue_depth{pool=\"sh\"} 0\n"));
    assert_non_null(strstr(text, "taskhost_cluster_dead_letters{pool=\"sh\"} 0\n"));
    assert_non_null(strstr(text, "# TYPE taskhost_cluster_redelivered_total counter\n"));
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        free(text);
        node_cleanup(&a);
        redis_cleanup(&r);
        if (getenv("CI") != NULL && strcmp(getenv("CI"), "true") == 0)
            fail_msg("promtool is missing (Debian: prometheus)");
        skip();
    }
    char path[192], cmd[256];
    snprintf(path, sizeof path, "%s/metrics.txt", a.h.dir);
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fputs(text, out);
    assert_int_equal(fclose(out), 0);
    free(text);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char said[4096] = "";
    size_t n = fread(said, 1, sizeof said - 1, p);
    said[n] = '\0';
    if (pclose(p) != 0)
        fail_msg("promtool check metrics: %s", said);
    node_cleanup(&a);
    redis_cleanup(&r);
}

/* `test_cluster [PATTERN]` runs the tests whose names match PATTERN. */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_tasks_of_one_host_run_on_another, teardown),
        cmocka_unit_test_teardown(test_three_hosts_kill9_every_task_answered_once, teardown),
        cmocka_unit_test_teardown(test_cancel_queued_and_running_across_hosts, teardown),
        cmocka_unit_test_teardown(test_queue_timeout_in_the_cluster, teardown),
        cmocka_unit_test_teardown(test_overflow_reject_in_the_cluster, teardown),
        cmocka_unit_test_teardown(test_overflow_drop_oldest_in_the_cluster, teardown),
        cmocka_unit_test_teardown(test_overflow_block_in_the_cluster, teardown),
        cmocka_unit_test_teardown(test_priority_orders_the_shared_queue, teardown),
        cmocka_unit_test_teardown(test_priority_task_reaches_an_idle_host, teardown),
        cmocka_unit_test_teardown(test_cancel_queued_task_of_a_priority_band, teardown),
        cmocka_unit_test_teardown(test_drop_oldest_drops_the_lowest_priority, teardown),
        cmocka_unit_test_teardown(test_band_empty_for_a_minute_is_removed, teardown),
        cmocka_unit_test_teardown(test_large_input_and_output_travel_by_reference, teardown),
        cmocka_unit_test_teardown(test_task_longer_than_lease_not_stolen, teardown),
        cmocka_unit_test_teardown(test_stopped_host_loses_task_late_answer_dropped, teardown),
        cmocka_unit_test_teardown(test_dead_letter_after_max_attempts, teardown),
        cmocka_unit_test_teardown(test_redis_restart_with_aof_loses_no_task, teardown),
        cmocka_unit_test_teardown(test_redis_restart_without_data_answers_every_task, teardown),
        cmocka_unit_test_teardown(test_tasks_queued_when_redis_loses_data_run_once, teardown),
        cmocka_unit_test_teardown(test_redis_down_clear_answer_then_recovery, teardown),
        cmocka_unit_test_teardown(test_redis_down_waits_within_queue_timeout, teardown),
        cmocka_unit_test_teardown(test_host_with_another_plugin_version_refused, teardown),
        cmocka_unit_test_teardown(test_host_of_another_data_model_refused, teardown),
        cmocka_unit_test_teardown(test_graceful_stop_gives_back_claimed_tasks, teardown),
        cmocka_unit_test_teardown(test_pool_added_in_code_can_be_shared, teardown),
        cmocka_unit_test_teardown(test_prometheus_shows_cluster_rows, teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    hx_become_reaper();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
