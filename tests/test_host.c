/* test_host.c - the embedding API: round trips of every example plugin,
 * many tasks in flight, crash isolation, init failures, closing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "taskhost_host.h"

#define PLUGIN(name) TOP_BUILDDIR "/plugins/.libs/" name ".so"
#define TEST_PLUGIN(name) TOP_BUILDDIR "/tests/plugins/.libs/" name ".so"

/* A host with plugin `plugin` from `path` and one pool "p" on it. */
static th_host *host_with(const char *plugin, const char *path, int min,
                          int max, const char *settings)
{
    th_host *h;
    char err[512] = "";
    assert_int_equal(th_host_new(&h), 0);
    int r = th_host_add_plugin(h, plugin, path, err, sizeof err);
    if (r < 0)
        fail_msg("add_plugin: %s", err);
    th_pool_opts o;
    th_pool_opts_init(&o);
    o.name = "p";
    o.plugin = plugin;
    o.min_workers = min;
    o.max_workers = max;
    o.max_queue = 0; /* unbounded */
    o.settings = settings;
    r = th_host_add_pool(h, &o, err, sizeof err);
    if (r < 0)
        fail_msg("add_pool: %s", err);
    return h;
}

/* Runs one task synchronously; returns the state, output in out. */
static th_state call(th_host *h, const char *task, const char *input,
                     char *out, size_t outlen)
{
    th_result r;
    assert_int_equal(th_host_call(h, "p", task, input, strlen(input), NULL, &r),
                     0);
    snprintf(out, outlen, "%.*s", (int)r.len, (const char *)r.data);
    th_state st = r.state;
    th_result_free(&r);
    return st;
}

static void test_echo_returns_its_input(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    char out[64];
    assert_int_equal(call(h, "echo", "hello world", out, sizeof out),
                     TH_STATE_OK);
    assert_string_equal(out, "hello world");
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_echo_of_empty_input_is_empty(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    char out[64] = "x";
    assert_int_equal(call(h, "echo", "", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "");
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_large_input_round_trips_intact(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    size_t n = 3 * 1024 * 1024 + 5;
    char *in = malloc(n);
    for (size_t i = 0; i < n; i++)
        in[i] = (char)(i * 7 + 3);
    th_result r;
    assert_int_equal(th_host_call(h, "p", "echo", in, n, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_int_equal(r.len, n);
    assert_memory_equal(r.data, in, n);
    th_result_free(&r);
    free(in);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

struct big {
    size_t len, answered, wrong;
};

static void big_done(const th_result *r, void *arg)
{
    struct big *b = arg;
    const unsigned char *d = r->data;
    b->answered++;
    if (r->state != TH_STATE_OK || r->len != b->len) {
        b->wrong++;
        return;
    }
    /* Each input is filled with its own first byte. */
    for (size_t i = 1; i < r->len; i++)
        if (d[i] != d[0]) {
            b->wrong++;
            return;
        }
}

static void test_many_large_payloads_wrap_the_shared_rings_intact(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 2, 2, NULL);
    struct big b = {.len = 200 * 1024};
    char *in = malloc(b.len);
    /* 300 x 200 KiB is 60 MiB each way: the 16 MiB rings wrap. */
    for (int i = 0; i < 300; i++) {
        memset(in, 'a' + i % 26, b.len);
        assert_int_equal(th_host_submit(h, "p", "echo", in, b.len, NULL,
                                        big_done, &b, NULL),
                         0);
        if (i % 40 == 39)
            assert_int_equal(th_host_wait(h, 60.0), 0);
    }
    assert_int_equal(th_host_wait(h, 60.0), 0);
    assert_int_equal(b.answered, 300);
    assert_int_equal(b.wrong, 0);
    free(in);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_payload_larger_than_a_ring_travels_by_socket(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    struct big b = {.len = 20 * 1024 * 1024};
    char *in = malloc(b.len);
    memset(in, 'q', b.len);
    assert_int_equal(th_host_submit(h, "p", "echo", in, b.len, NULL, big_done,
                                    &b, NULL),
                     0);
    assert_int_equal(th_host_wait(h, 60.0), 0);
    assert_int_equal(b.answered, 1);
    assert_int_equal(b.wrong, 0);
    free(in);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_hash_gives_sha256_hex(void **state)
{
    th_host *h = host_with("hash", PLUGIN("hash"), 1, 1, NULL);
    char out[128];
    assert_int_equal(call(h, "sha256", "abc", out, sizeof out), TH_STATE_OK);
    assert_string_equal(
        out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_hash_rounds_setting_rehashes_the_digest(void **state)
{
    th_host *h = host_with("hash", PLUGIN("hash"), 1, 1, "rounds = 2;");
    char out[128];
    assert_int_equal(call(h, "sha256", "abc", out, sizeof out), TH_STATE_OK);
    /* sha256 of the 32 raw bytes of sha256("abc") */
    assert_string_equal(
        out, "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_sleep_reports_the_time_slept(void **state)
{
    th_host *h = host_with("sleep", PLUGIN("sleep"), 1, 1, NULL);
    char out[64];
    assert_int_equal(call(h, "sleep", "20", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "slept 20");
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

struct reports {
    int n, after_answer, answered;
    uint64_t id, done, total;
    char msg[32];
};

static void on_report(uint64_t id, uint64_t done, uint64_t total,
                      const char *msg, void *arg)
{
    struct reports *r = arg;
    r->n++;
    r->after_answer += r->answered;
    r->id = id;
    r->done = done;
    r->total = total;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
}

static void on_reported_answer(const th_result *res, void *arg)
{
    struct reports *r = arg;
    assert_int_equal(res->state, TH_STATE_OK);
    r->answered = 1;
}

static void test_progress_reaches_the_embedder_until_the_answer(void **state)
{
    th_host *h = host_with("chatty", TEST_PLUGIN("chatty"), 1, 1, NULL);
    struct reports r = {0};
    uint64_t id;
    assert_int_equal(th_host_submit(h, "p", "steps", "3", 1, NULL,
                                    on_reported_answer, &r, &id),
                     0);
    assert_int_equal(th_host_on_progress(h, id, on_report, &r), 0);
    assert_int_equal(th_host_wait(h, 20), 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.id, id);
    assert_int_equal(r.done, 3);
    assert_int_equal(r.total, 3);
    assert_string_equal(r.msg, "step 3");
    assert_int_equal(r.after_answer, 0);
    assert_int_equal(th_host_on_progress(h, id, on_report, &r), TH_ENOENT);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_progress_nobody_asked_for_is_dropped_quietly(
    void **state)
{
    th_host *h = host_with("chatty", TEST_PLUGIN("chatty"), 1, 1, NULL);
    char out[64];
    assert_int_equal(call(h, "chatty", "100", out, sizeof out), TH_STATE_OK);
    assert_true(strtoull(out, NULL, 10) > 1000);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_sleep_refuses_a_non_number_as_error(void **state)
{
    th_host *h = host_with("sleep", PLUGIN("sleep"), 1, 1, NULL);
    char out[256];
    assert_int_equal(call(h, "sleep", "soon", out, sizeof out), TH_STATE_ERROR);
    assert_true(strlen(out) > 0);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_leak_reports_its_pid_and_a_grown_rss(void **state)
{
    th_host *h = host_with("leak", PLUGIN("leak"), 1, 1, NULL);
    char out[64];
    assert_int_equal(call(h, "leak", "0", out, sizeof out), TH_STATE_OK);
    long pid0, rss0, pid1, rss1;
    assert_int_equal(sscanf(out, "%ld %ld", &pid0, &rss0), 2);
    assert_int_equal(call(h, "leak", "16", out, sizeof out), TH_STATE_OK);
    assert_int_equal(sscanf(out, "%ld %ld", &pid1, &rss1), 2);
    assert_int_equal(pid0, pid1);
    assert_true(pid0 != getpid());
    assert_true(rss1 >= rss0 + 15 * 1024);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_pool_opts_init_gives_the_config_defaults(void **state)
{
    th_pool_opts o;
    memset(&o, 0xff, sizeof o);
    th_pool_opts_init(&o);
    assert_int_equal(o.min_workers, 1);
    assert_true(o.max_workers >= 1);
    assert_int_equal(o.max_queue, 1024);
    assert_string_equal(o.overflow, "reject");
    assert_true(o.task_timeout == 10.0);
    assert_true(o.kill_grace == 1.0);
    assert_true(o.init_timeout == 30.0);
    assert_true(o.memory_check_interval == 1.0);
    assert_int_equal(o.memory_soft_limit, 0);
    assert_int_equal(o.memory_budget, 0);
    assert_true(o.max_worker_age == 0.0);
    assert_null(o.settings);
}

static void test_pool_built_in_code_takes_every_policy(void **state)
{
    th_host *h;
    char err[512] = "";
    assert_int_equal(th_host_new(&h), 0);
    assert_int_equal(th_host_add_plugin(h, "echo", PLUGIN("echo"), err,
                                        sizeof err),
                     0);
    th_pool_opts o;
    th_pool_opts_init(&o);
    o.name = "p";
    o.plugin = "echo";
    o.memory_check_interval = -1; /* impossible: refused by name */
    assert_int_equal(th_host_add_pool(h, &o, err, sizeof err), TH_ECONFIG);
    assert_non_null(strstr(err, "memory_check_interval"));
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* A spawner program that cannot be run is one line naming it and why. */
static void test_a_spawner_program_that_cannot_run_is_named(void **state)
{
    const char *saved = getenv("TASKHOST_SPAWNER");
    char *keep = saved ? strdup(saved) : NULL;
    th_host *h;
    char err[512] = "";

    assert_int_equal(th_host_new(&h), 0);
    setenv("TASKHOST_SPAWNER", "/nonexistent/taskhost-spawner", 1);
    assert_true(th_host_add_plugin(h, "echo", PLUGIN("echo"), err,
                                   sizeof err) < 0);
    if (keep != NULL)
        setenv("TASKHOST_SPAWNER", keep, 1);
    else
        unsetenv("TASKHOST_SPAWNER");
    free(keep);
    assert_non_null(strstr(err, "cannot run the spawner program "
                                "/nonexistent/taskhost-spawner"));
    assert_non_null(strstr(err, strerror(ENOENT)));
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- many tasks ---- */

struct tally {
    unsigned char *seen; /* per task: answers received */
    uint64_t *ids;       /* per task: the id submit gave */
    size_t n, answered, wrong;
};

struct slot {
    struct tally *tally;
    size_t index;
};

static void tally_done(const th_result *r, void *arg)
{
    struct slot *s = arg;
    struct tally *t = s->tally;
    char expect[32];
    int n = snprintf(expect, sizeof expect, "task-%zu", s->index);
    if (r->state != TH_STATE_OK || r->len != (size_t)n ||
        memcmp(r->data, expect, (size_t)n) != 0 || r->id != t->ids[s->index])
        t->wrong++;
    t->seen[s->index]++;
    t->answered++;
}

static void test_ten_thousand_tasks_on_two_workers_each_answered_once(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 2, 2, NULL);
    struct tally t = {.n = 10000};
    t.seen = calloc(t.n, 1);
    t.ids = calloc(t.n, sizeof *t.ids);
    struct slot *slots = calloc(t.n, sizeof *slots);
    for (size_t i = 0; i < t.n; i++) {
        char in[32];
        int len = snprintf(in, sizeof in, "task-%zu", i);
        slots[i] = (struct slot){&t, i};
        assert_int_equal(th_host_submit(h, "p", "echo", in, (size_t)len, NULL,
                                        tally_done, &slots[i], &t.ids[i]),
                         0);
    }
    assert_int_equal(th_host_pending(h), t.n);
    assert_int_equal(th_host_wait(h, 60.0), 0);
    assert_int_equal(t.answered, t.n);
    assert_int_equal(t.wrong, 0);
    for (size_t i = 0; i < t.n; i++)
        assert_int_equal(t.seen[i], 1);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    free(t.seen);
    free(t.ids);
    free(slots);
}

/* ---- rejections ---- */

static void test_unknown_pool_is_answered_rejected(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    th_result r;
    assert_int_equal(th_host_call(h, "nope", "echo", "x", 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_non_null(strstr(r.data, "nope"));
    th_result_free(&r);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_unknown_task_is_answered_rejected(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    th_result r;
    assert_int_equal(th_host_call(h, "p", "reverse", "x", 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_non_null(strstr(r.data, "reverse"));
    th_result_free(&r);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_submit_after_close_began_is_refused(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    th_host_shutdown(h, TH_CLOSE_GRACEFUL);
    th_result r;
    assert_int_equal(th_host_call(h, "p", "echo", "x", 1, NULL, &r),
                     TH_ECLOSED);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- crash isolation ---- */

static void expect_crash(const char *task, const char *named)
{
    th_host *h = host_with("crash", PLUGIN("crash"), 1, 1, NULL);
    char err[512];
    assert_int_equal(th_host_add_plugin(h, "echo", PLUGIN("echo"), err,
                                        sizeof err),
                     0);
    th_pool_opts o;
    th_pool_opts_init(&o);
    o.name = "e";
    o.plugin = "echo";
    o.min_workers = o.max_workers = 1;
    assert_int_equal(th_host_add_pool(h, &o, err, sizeof err), 0);

    /* An echo task in flight on another pool is untouched by the crash. */
    th_result other, r;
    assert_int_equal(th_host_call(h, "p", task, "", 0, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_CRASHED);
    assert_non_null(strstr(r.data, named));
    th_result_free(&r);
    assert_int_equal(th_host_call(h, "e", "echo", "still", 5, NULL, &other), 0);
    assert_int_equal(other.state, TH_STATE_OK);
    th_result_free(&other);
    /* A replacement serves the next task of the crashed pool. */
    assert_int_equal(th_host_call(h, "p", "nosuch", "", 0, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    th_result_free(&r);
    assert_int_equal(th_host_call(h, "p", task, "", 0, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_CRASHED);
    th_result_free(&r);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_segv_is_answered_crashed_naming_sigsegv(void **state)
{
    expect_crash("segv", "SIGSEGV");
}

static void test_abort_is_answered_crashed_naming_sigabrt(void **state)
{
    expect_crash("abort", "SIGABRT");
}

static void test_exit_is_answered_crashed_naming_the_status(void **state)
{
    expect_crash("exit", "status 3");
}


struct states {
    size_t by[TH_STATE_COUNT];
    size_t total;
};

static void states_done(const th_result *r, void *arg)
{
    struct states *s = arg;
    s->by[r->state]++;
    s->total++;
}

static void test_crash_leaves_other_tasks_of_the_pool_answered_ok(void **state)
{
    th_host *h = host_with("crash", PLUGIN("crash"), 2, 2, NULL);
    char err[512];
    assert_int_equal(th_host_add_plugin(h, "sleep", PLUGIN("sleep"), err,
                                        sizeof err),
                     0);
    th_pool_opts o;
    th_pool_opts_init(&o);
    o.name = "s";
    o.plugin = "sleep";
    o.min_workers = o.max_workers = 2;
    assert_int_equal(th_host_add_pool(h, &o, err, sizeof err), 0);
    struct states s = {{0}, 0};
    for (int i = 0; i < 20; i++)
        th_host_submit(h, "s", "sleep", "5", 1, NULL, states_done, &s, NULL);
    for (int i = 0; i < 3; i++)
        th_host_submit(h, "p", "segv", "", 0, NULL, states_done, &s, NULL);
    assert_int_equal(th_host_wait(h, 30.0), 0);
    assert_int_equal(s.total, 23);
    assert_int_equal(s.by[TH_STATE_OK], 20);
    assert_int_equal(s.by[TH_STATE_CRASHED], 3);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- init failures ---- */

static void test_failing_init_marks_the_pool_failed_with_the_reason(void **state)
{
    th_host *h = host_with("badinit", TEST_PLUGIN("badinit"), 1, 1, NULL);
    th_result r;
    /* The task waits while starts fail with back-off, then is rejected. */
    assert_int_equal(th_host_call(h, "p", "echo", "x", 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_non_null(strstr(r.data, "failed"));
    assert_non_null(strstr(r.data, "init"));
    th_result_free(&r);
    /* Later tasks are rejected at once, with the same reason. */
    assert_int_equal(th_host_call(h, "p", "echo", "x", 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_non_null(strstr(r.data, "init"));
    th_result_free(&r);
    char *json;
    assert_int_equal(th_host_stats(h, "p", TH_STATS_JSON, &json), 0);
    assert_non_null(strstr(json, "\"state\":\"failed\""));
    /* Five starts, no more: no fork loop. */
    assert_non_null(strstr(json, "\"spawned\":5,"));
    free(json);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_slow_init_within_init_timeout_survives_a_short_task_timeout(
    void **state)
{
    char dir[] = "/tmp/th-host-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/t.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "plugins = ( { name = \"slow\"; path = \"%s\"; } );\n"
            "pools = ( { name = \"p\"; plugin = \"slow\"; min_workers = 1;\n"
            "  max_workers = 1; task_timeout = 0.1; init_timeout = 10.0;\n"
            "  settings = { init_ms = 400; }; } );\n",
            TEST_PLUGIN("inithang"));
    fclose(f);
    th_host *h;
    char err[512] = "";
    if (th_host_open(&h, path, err, sizeof err) < 0)
        fail_msg("%s", err);
    th_result r;
    assert_int_equal(th_host_call(h, "p", "echo", "up", 2, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_true(r.wait_time >= 0.3); /* it did wait for the slow init */
    th_result_free(&r);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    unlink(path);
    rmdir(dir);
}

static void test_cancelled_task_sent_behind_a_running_one_never_runs(
    void **state)
{
    th_host *h = host_with("probe", TEST_PLUGIN("probe"), 1, 1, NULL);
    /* Short tasks first, so that the pool pipelines several to a worker. */
    struct states s = {{0}, 0};
    for (int i = 0; i < 200; i++)
        th_host_submit(h, "p", "pid", "", 0, NULL, states_done, &s, NULL);
    assert_int_equal(th_host_wait(h, 30.0), 0);
    char marker[] = "/tmp/th-host-mark-XXXXXX";
    int fd = mkstemp(marker);
    assert_true(fd >= 0);
    close(fd);
    unlink(marker);
    uint64_t nap, mark, after;
    th_host_submit(h, "p", "nap", "300", 3, NULL, states_done, &s, &nap);
    th_host_submit(h, "p", "mark", marker, strlen(marker), NULL, states_done,
                   &s, &mark);
    th_host_step(h, 0); /* both go to the one worker */
    assert_int_equal(th_host_task_state(h, mark), TH_RUNNING);
    assert_int_equal(th_host_cancel(h, mark), 0);
    th_host_submit(h, "p", "pid", "", 0, NULL, states_done, &s, &after);
    assert_int_equal(th_host_wait(h, 30.0), 0);
    assert_int_equal(s.by[TH_STATE_CANCELLED], 1);
    assert_int_equal(s.by[TH_STATE_OK], 202); /* the nap and the last pid */
    assert_int_equal(access(marker, F_OK), -1);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- closing ---- */

static void test_graceful_close_finishes_queued_and_running_tasks(void **state)
{
    th_host *h = host_with("sleep", PLUGIN("sleep"), 2, 2, NULL);
    struct states s = {{0}, 0};
    for (int i = 0; i < 10; i++)
        th_host_submit(h, "p", "sleep", "20", 2, NULL, states_done, &s, NULL);
    th_host_step(h, 0);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    assert_int_equal(s.total, 10);
    assert_int_equal(s.by[TH_STATE_OK], 10);
}

static void test_forced_close_cancels_queued_and_kills_running(void **state)
{
    th_host *h = host_with("sleep", PLUGIN("sleep"), 2, 2, NULL);
    struct states s = {{0}, 0};
    for (int i = 0; i < 10; i++)
        th_host_submit(h, "p", "sleep", "10000", 5, NULL, states_done, &s,
                       NULL);
    /* Wait until both workers run a task. */
    for (int i = 0; i < 500; i++) {
        char *json;
        th_host_step(h, 10);
        th_host_stats(h, "p", TH_STATS_JSON, &json);
        int busy = strstr(json, "\"busy\":2,") != NULL;
        free(json);
        if (busy)
            break;
    }
    th_host_close(h, TH_CLOSE_FORCE);
    assert_int_equal(s.total, 10);
    assert_int_equal(s.by[TH_STATE_CANCELLED], 10);
}

static void test_close_with_no_task_stops_every_worker(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 3, 3, NULL);
    th_result r;
    assert_int_equal(th_host_call(h, "p", "echo", "x", 1, NULL, &r), 0);
    th_result_free(&r);
    th_host_shutdown(h, TH_CLOSE_GRACEFUL);
    while (!th_host_stopped(h))
        assert_int_equal(th_host_step(h, 100), 0);
    char *json;
    assert_int_equal(th_host_stats(h, NULL, TH_STATS_JSON, &json), 0);
    assert_non_null(strstr(json, "\"total\":0,"));
    assert_non_null(strstr(json, "\"shutdown\":3"));
    free(json);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- the caller's own loop ---- */

static void test_host_fd_becomes_readable_when_an_answer_is_due(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    struct states s = {{0}, 0};
    th_host_submit(h, "p", "echo", "x", 1, NULL, states_done, &s, NULL);
    int fd = th_host_fd(h);
    for (int i = 0; i < 1000 && s.total == 0; i++) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(fd, &rd);
        struct timeval tv = {5, 0};
        assert_true(select(fd + 1, &rd, NULL, NULL, &tv) > 0);
        th_host_step(h, 0);
    }
    assert_int_equal(s.by[TH_STATE_OK], 1);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- config ---- */

static void test_open_reports_a_missing_plugin_with_file_and_line(void **state)
{
    char dir[] = "/tmp/th-host-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/t.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "plugins = (\n  { name = \"x\"; path = \"nosuch.so\"; }\n);\n");
    fclose(f);
    th_host *h = NULL;
    char err[512] = "";
    assert_true(th_host_open(&h, path, err, sizeof err) < 0);
    assert_null(h);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, "path"));
    unlink(path);
    rmdir(dir);
}

static void test_open_refuses_a_plugin_of_another_abi(void **state)
{
    char dir[] = "/tmp/th-host-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/t.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "plugins = ( { name = \"x\"; path = \"%s\"; } );\n",
            TEST_PLUGIN("badabi"));
    fclose(f);
    th_host *h = NULL;
    char err[512] = "";
    assert_int_equal(th_host_open(&h, path, err, sizeof err), TH_EABI);
    assert_non_null(strstr(err, "999"));
    unlink(path);
    rmdir(dir);
}

/* A plugin built against the SDK header of plugin ABI 1 runs unchanged:
 * its settings, state across tasks, failures and SDK calls. */
static void test_abi_1_plugin_runs_its_tasks(void **state)
{
    th_host *h = host_with("v1", TEST_PLUGIN("compat_v1"), 1, 1,
                           "greeting = \"hi\";");
    char out[128];
    assert_int_equal(call(h, "echo", "abc", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "abc");
    assert_int_equal(call(h, "greet", "bob", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "hi, bob (call 2)");
    assert_int_equal(call(h, "v1_name", "", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "v1_name 0");
    th_result r;
    assert_int_equal(th_host_call(h, "p", "fail", "x", 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_ERROR);
    assert_int_equal(r.code, TH_EINVAL);
    assert_string_equal(r.data, "no good: x");
    th_result_free(&r);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* Tasks given as a growable th_task_info table run by name. */
static void test_growable_task_table_runs_by_name(void **state)
{
    th_host *h = host_with("ti", TEST_PLUGIN("taskinfo"), 1, 1, NULL);
    char out[64];
    assert_int_equal(call(h, "upper", "abc", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "ABC");
    assert_int_equal(call(h, "echo", "abc", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "abc");
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* A program built against an older, shorter th_pool_opts: init and
 * add_pool touch only its bytes, the rest of the pool gets defaults. */
static void test_shorter_pool_opts_get_defaults_for_what_they_lack(void **state)
{
    struct {
        th_pool_opts o;
        unsigned char canary[64];
    } old;
    size_t n = offsetof(th_pool_opts, user);
    memset(&old, 0xa5, sizeof old);
    th_pool_opts_init_sized(&old.o, n);
    assert_int_equal(old.o.size, n);
    for (size_t i = n; i < sizeof old; i++)
        assert_int_equal(((unsigned char *)&old)[i], 0xa5);
    old.o.name = "p";
    old.o.plugin = "echo";
    th_host *h;
    char err[256] = "";
    assert_int_equal(th_host_new(&h), 0);
    assert_int_equal(th_host_add_plugin(h, "echo", PLUGIN("echo"), err,
                                        sizeof err), 0);
    if (th_host_add_pool(h, &old.o, err, sizeof err) != 0)
        fail_msg("add_pool: %s", err);
    char out[16];
    assert_int_equal(call(h, "echo", "old", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "old");
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_pool_opts_not_from_init_are_refused(void **state)
{
    th_pool_opts o;
    memset(&o, 0, sizeof o);
    o.name = "p";
    o.plugin = "echo";
    th_host *h;
    char err[256] = "";
    assert_int_equal(th_host_new(&h), 0);
    assert_int_equal(th_host_add_pool(h, &o, err, sizeof err), TH_EINVAL);
    assert_non_null(strstr(err, "th_pool_opts_init()"));
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* An older program's shorter th_result is filled up to its size only. */
static void test_call_fills_only_the_callers_result_size(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    struct {
        th_result r;
        unsigned char canary[64];
    } old;
    size_t n = offsetof(th_result, wait_time);
    memset(&old, 0xa5, sizeof old);
    assert_int_equal(th_host_call_sized(h, "p", "echo", "ab", 2, NULL, &old.r,
                                        n), 0);
    assert_int_equal(old.r.size, n);
    assert_int_equal(old.r.state, TH_STATE_OK);
    assert_int_equal(old.r.len, 2);
    for (size_t i = n; i < sizeof old; i++)
        assert_int_equal(((unsigned char *)&old)[i], 0xa5);
    assert_false(TH_HAS_FIELD(&old.r, th_result, wait_time));
    assert_true(TH_HAS_FIELD(&old.r, th_result, len));
    th_result_free(&old.r);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void size_seen(const th_result *r, void *arg)
{
    *(size_t *)arg = r->size;
}

/* A callback's result says how much of it there is; submit options
 * from TH_SUBMIT_OPTS_INIT apply. */
static void test_callback_result_carries_its_size(void **state)
{
    th_host *h = host_with("echo", PLUGIN("echo"), 1, 1, NULL);
    th_submit_opts so = TH_SUBMIT_OPTS_INIT;
    size_t seen = 0;
    so.task_timeout = 5;
    assert_int_equal(so.size, sizeof so);
    assert_int_equal(th_host_submit(h, "p", "echo", "x", 1, &so, size_seen,
                                    &seen, NULL), 0);
    assert_int_equal(th_host_wait(h, 30), 0);
    assert_int_equal(seen, sizeof(th_result));
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- the plugin's check() of a pool's settings ---- */

/* A host with plugin sdkcheck; adds pool "p" with `settings`, returns the
 * add's code and its message in err. */
static int add_checked_pool(th_host **h, const char *settings, char *err,
                            size_t errlen)
{
    assert_int_equal(th_host_new(h), 0);
    assert_int_equal(th_host_add_plugin(*h, "sdkcheck", TEST_PLUGIN("sdkcheck"),
                                        err, errlen), 0);
    th_pool_opts o;
    th_pool_opts_init(&o);
    o.name = "p";
    o.plugin = "sdkcheck";
    o.min_workers = 1;
    o.max_workers = 1;
    o.settings = settings;
    err[0] = '\0';
    return th_host_add_pool(*h, &o, err, errlen);
}

static void test_check_refuses_a_pool_running_in_another_process(void **state)
{
    th_host *h;
    char err[512];
    assert_int_equal(add_checked_pool(&h, "mode = \"refuse\";", err,
                                      sizeof err), TH_ECONFIG);
    assert_non_null(strstr(err, "plugin 'sdkcheck'"));
    assert_non_null(strstr(err, "sdkcheck.so"));
    assert_non_null(strstr(err, "pool 'p'"));
    const char *pid = strstr(err, "refused by pid ");
    assert_non_null(pid);
    assert_int_not_equal(atoi(pid + strlen("refused by pid ")), getpid());
    assert_null(strchr(err, '\n'));
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void test_check_that_passes_lets_the_pool_run(void **state)
{
    th_host *h;
    char err[512], out[8];
    if (add_checked_pool(&h, "mode = \"ok\";", err, sizeof err) != 0)
        fail_msg("add_pool: %s", err);
    assert_int_equal(call(h, "cancelled_now", "", out, sizeof out),
                     TH_STATE_OK);
    assert_string_equal(out, "0");
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* check() that crashes or exits refuses its pool; the host goes on. */
static void test_crashing_or_exiting_check_refuses_the_pool(void **state)
{
    th_host *h;
    char err[512], out[8];
    assert_true(add_checked_pool(&h, "mode = \"crash\";", err, sizeof err) <
                0);
    assert_non_null(strstr(err, "crashed"));
    assert_non_null(strstr(err, "SIGSEGV"));
    th_host_close(h, TH_CLOSE_GRACEFUL);
    assert_true(add_checked_pool(&h, "mode = \"exit\";", err, sizeof err) <
                0);
    assert_non_null(strstr(err, "exited with status 3"));
    th_pool_opts o;
    th_pool_opts_init(&o);
    o.name = "q";
    o.plugin = "sdkcheck";
    assert_int_equal(th_host_add_pool(h, &o, err, sizeof err), 0);
    th_result r;
    assert_int_equal(th_host_call(h, "q", "cancelled_now", "", 0, NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_OK);
    th_result_free(&r);
    (void)out;
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* Writing after th_task_fail() is refused, not silently dropped. */
static void test_write_after_fail_returns_einval(void **state)
{
    th_host *h;
    char err[512];
    if (add_checked_pool(&h, NULL, err, sizeof err) != 0)
        fail_msg("add_pool: %s", err);
    th_result r;
    assert_int_equal(th_host_call(h, "p", "fail_then_write", "", 0, NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_ERROR);
    char want[64];
    snprintf(want, sizeof want, "write after fail: %d", TH_EINVAL);
    assert_string_equal(r.data, want);
    th_result_free(&r);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static int exists(const char *path, const char *suffix)
{
    char name[512];
    snprintf(name, sizeof name, "%s%s", path, suffix);
    return access(name, F_OK) == 0;
}

static void ignore_result(const th_result *r, void *arg)
{
    (void)r;
    (void)arg;
}

/* A cancelled running task learns of it through th_task_cancelled(),
 * its own flag: not through the worker's SIGTERM, which it blocks here. */
static void test_cancelled_task_sees_its_own_cancellation(void **state)
{
    th_host *h;
    char err[512], dir[] = "/tmp/th-cancel-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t", dir);
    if (add_checked_pool(&h, NULL, err, sizeof err) != 0)
        fail_msg("add_pool: %s", err);
    uint64_t id;
    assert_int_equal(th_host_submit(h, "p", "wait_cancel", path, strlen(path),
                                    NULL, ignore_result, NULL, &id), 0);
    for (int i = 0; i < 3000 && !exists(path, ".started"); i++)
        th_host_step(h, 10);
    assert_true(exists(path, ".started"));
    assert_int_equal(th_host_cancel(h, id), 0);
    for (int i = 0; i < 3000 && !exists(path, ".seen"); i++)
        th_host_step(h, 10);
    assert_true(exists(path, ".seen"));
    th_host_close(h, TH_CLOSE_GRACEFUL);
    char name[512];
    snprintf(name, sizeof name, "%s.started", path);
    unlink(name);
    snprintf(name, sizeof name, "%s.seen", path);
    unlink(name);
    rmdir(dir);
}

/* A check() that never returns is killed after plugin_load_timeout; the
 * pool is refused naming it. */
static void test_hanging_check_is_killed_after_the_timeout(void **state)
{
    char dir[] = "/tmp/th-host-XXXXXX", conf[256], err[768] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(conf, sizeof conf, "%s/t.conf", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "host: { plugin_load_timeout = 0.5; };\n"
            "plugins = ( { name = \"s\"; path = \"%s\"; } );\n"
            "pools = ( { name = \"p\"; plugin = \"s\";\n"
            "  settings = { mode = \"hang\"; }; } );\n",
            TEST_PLUGIN("sdkcheck"));
    fclose(f);
    th_host *h = NULL;
    assert_true(th_host_open(&h, conf, err, sizeof err) < 0);
    if (strstr(err, "pools[0]: plugin 's' could not check the settings of "
                    "pool 'p'") == NULL ||
        strstr(err, "within 0.5 s") == NULL)
        fail_msg("message: %s", err);
    unlink(conf);
    rmdir(dir);
}

/* Writes a config with a hash pool of `rounds` into dir/t.conf. */
static void write_hash_conf(const char *conf, int rounds)
{
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "plugins = ( { name = \"hash\"; path = \"%s\"; } );\n"
            "pools = ( { name = \"h\"; plugin = \"hash\"; min_workers = 1;\n"
            "  max_workers = 1; settings = { rounds = %d; }; } );\n",
            PLUGIN("hash"), rounds);
    fclose(f);
}

/* hash's check() refuses rounds = 0 at open, naming file, pool, plugin. */
static void test_open_refuses_settings_the_plugin_checks(void **state)
{
    char dir[] = "/tmp/th-host-XXXXXX", conf[256], err[768] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(conf, sizeof conf, "%s/t.conf", dir);
    write_hash_conf(conf, 0);
    th_host *h = NULL;
    assert_int_equal(th_host_open(&h, conf, err, sizeof err), TH_ECONFIG);
    char want[300];
    snprintf(want, sizeof want, "%s:2: pools[0]: plugin 'hash'", conf);
    if (strstr(err, want) == NULL ||
        strstr(err, "pool 'h': rounds must be >= 1, got 0") == NULL)
        fail_msg("message: %s", err);
    unlink(conf);
    rmdir(dir);
}

/* A reload whose settings the plugin refuses changes nothing. */
static void test_reload_refused_by_check_keeps_the_old_config(void **state)
{
    char dir[] = "/tmp/th-host-XXXXXX", conf[256], err[768] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(conf, sizeof conf, "%s/t.conf", dir);
    write_hash_conf(conf, 2);
    th_host *h = NULL;
    if (th_host_open(&h, conf, err, sizeof err) != 0)
        fail_msg("open: %s", err);
    write_hash_conf(conf, 0);
    assert_int_equal(th_host_reload(h, NULL, err, sizeof err), TH_ECONFIG);
    assert_non_null(strstr(err, "rounds must be >= 1, got 0"));
    th_result r;
    assert_int_equal(th_host_call(h, "h", "sha256", "abc", 3, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    /* sha256(sha256("abc")): still two rounds */
    assert_string_equal(
        r.data,
        "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
    th_result_free(&r);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    unlink(conf);
    rmdir(dir);
}

int main(void)
{
    log_set_level(TH_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_opts_init_gives_the_config_defaults),
        cmocka_unit_test(test_pool_built_in_code_takes_every_policy),
        cmocka_unit_test(test_a_spawner_program_that_cannot_run_is_named),
        cmocka_unit_test(test_echo_returns_its_input),
        cmocka_unit_test(test_echo_of_empty_input_is_empty),
        cmocka_unit_test(test_large_input_round_trips_intact),
        cmocka_unit_test(test_many_large_payloads_wrap_the_shared_rings_intact),
        cmocka_unit_test(test_payload_larger_than_a_ring_travels_by_socket),
        cmocka_unit_test(test_hash_gives_sha256_hex),
        cmocka_unit_test(test_hash_rounds_setting_rehashes_the_digest),
        cmocka_unit_test(test_sleep_reports_the_time_slept),
        cmocka_unit_test(test_progress_reaches_the_embedder_until_the_answer),
        cmocka_unit_test(test_progress_nobody_asked_for_is_dropped_quietly),
        cmocka_unit_test(test_sleep_refuses_a_non_number_as_error),
        cmocka_unit_test(test_leak_reports_its_pid_and_a_grown_rss),
        cmocka_unit_test(test_ten_thousand_tasks_on_two_workers_each_answered_once),
        cmocka_unit_test(test_unknown_pool_is_answered_rejected),
        cmocka_unit_test(test_unknown_task_is_answered_rejected),
        cmocka_unit_test(test_submit_after_close_began_is_refused),
        cmocka_unit_test(test_segv_is_answered_crashed_naming_sigsegv),
        cmocka_unit_test(test_abort_is_answered_crashed_naming_sigabrt),
        cmocka_unit_test(test_exit_is_answered_crashed_naming_the_status),
        cmocka_unit_test(test_crash_leaves_other_tasks_of_the_pool_answered_ok),
        cmocka_unit_test(test_failing_init_marks_the_pool_failed_with_the_reason),
        cmocka_unit_test(test_slow_init_within_init_timeout_survives_a_short_task_timeout),
        cmocka_unit_test(test_cancelled_task_sent_behind_a_running_one_never_runs),
        cmocka_unit_test(test_graceful_close_finishes_queued_and_running_tasks),
        cmocka_unit_test(test_forced_close_cancels_queued_and_kills_running),
        cmocka_unit_test(test_close_with_no_task_stops_every_worker),
        cmocka_unit_test(test_host_fd_becomes_readable_when_an_answer_is_due),
        cmocka_unit_test(test_open_reports_a_missing_plugin_with_file_and_line),
        cmocka_unit_test(test_open_refuses_a_plugin_of_another_abi),
        cmocka_unit_test(test_abi_1_plugin_runs_its_tasks),
        cmocka_unit_test(test_growable_task_table_runs_by_name),
        cmocka_unit_test(test_shorter_pool_opts_get_defaults_for_what_they_lack),
        cmocka_unit_test(test_pool_opts_not_from_init_are_refused),
        cmocka_unit_test(test_call_fills_only_the_callers_result_size),
        cmocka_unit_test(test_callback_result_carries_its_size),
        cmocka_unit_test(test_check_refuses_a_pool_running_in_another_process),
        cmocka_unit_test(test_check_that_passes_lets_the_pool_run),
        cmocka_unit_test(test_crashing_or_exiting_check_refuses_the_pool),
        cmocka_unit_test(test_write_after_fail_returns_einval),
        cmocka_unit_test(test_cancelled_task_sees_its_own_cancellation),
        cmocka_unit_test(test_open_refuses_settings_the_plugin_checks),
        cmocka_unit_test(test_hanging_check_is_killed_after_the_timeout),
        cmocka_unit_test(test_reload_refused_by_check_keeps_the_old_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
