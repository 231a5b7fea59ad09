/* test_progress.c - progress reports end to end: a plugin's
 * th_task_progress() through its worker, the engine and taskhostd to the
 * client library and taskhostctl, coalesced on the way, and only to
 * clients that asked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness.h"

#define CHATTY TEST_PLUGINS "/chatty.so"

/* What a client saw of one task. */
struct seen {
    int out_of_order; /* a report not after the one before */
    int reports;
    uint64_t last_done, last_total;
    char first_msg[64], last_msg[64];
    int after_result; /* reports that came after the answer */
    int done;
    th_result r;
    char out[64];
};

static void on_report(uint64_t tag, uint64_t done, uint64_t total,
                      const char *msg, void *arg)
{
    struct seen *s = arg;

    (void)tag;
    if (s->done)
        s->after_result++;
    if (s->reports > 0 && done <= s->last_done)
        s->out_of_order++;
    if (s->reports++ == 0)
        snprintf(s->first_msg, sizeof s->first_msg, "%s", msg);
    snprintf(s->last_msg, sizeof s->last_msg, "%s", msg);
    s->last_done = done;
    s->last_total = total;
}

static void on_answer(const th_result *r, void *arg)
{
    struct seen *s = arg;

    s->done = 1;
    s->r = *r;
    snprintf(s->out, sizeof s->out, "%.*s", (int)r->len, (const char *)r->data);
}

static int setup(void **state)
{
    struct hx *t = malloc(sizeof *t);

    td_init(t, "test_progress");
    td_write_conf(t, NULL,
                  "plugins = (\n"
                  "  { name = \"chatty\"; path = \"" CHATTY "\"; },\n"
                  "  { name = \"sleep\"; path = \"" PLUGINS "/sleep.so\"; }\n"
                  ");\n"
                  "pools = (\n"
                  "  { name = \"chatty\"; plugin = \"chatty\"; min_workers = 2;"
                  "    max_workers = 2; },\n"
                  "  { name = \"sleep\"; plugin = \"sleep\"; min_workers = 1;"
                  "    max_workers = 1; }\n"
                  ");\n");
    td_start(t);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct hx *t = *state;

    td_cleanup(t);
    free(t);
    return 0;
}

/* Submits pool/task with `input` and runs the loop until its answer. */
static void run_task(th_client *c, const char *pool, const char *task,
                     const char *input, struct seen *s)
{
    assert_int_equal(th_client_submit(c, pool, task, input, strlen(input),
                                      NULL, on_answer, s, NULL),
                     0);
    while (!s->done)
        assert_int_equal(th_client_step(c, (int)(DEADLINE * 1000)), 0);
    th_client_step(c, 0); /* a report behind the answer would show now */
}

static void reports_reach_a_client_that_asked_in_order(void **state)
{
    struct hx *t = *state;
    th_client *c = td_connect(t);
    struct seen s = {0};

    th_client_on_progress(c, on_report, &s);
    run_task(c, "chatty", "steps", "4", &s);
    assert_int_equal(s.r.state, TH_STATE_OK);
    assert_string_equal(s.out, "done");
    /* Reports leave 60 ms apart, but a loaded host may read two at once
     * and keep the latest: at least one, in order, the last one last. */
    assert_in_range(s.reports, 1, 4);
    assert_int_equal(s.out_of_order, 0);
    assert_string_equal(s.last_msg, "step 4");
    assert_int_equal(s.last_done, 4);
    assert_int_equal(s.last_total, 4);
    assert_int_equal(s.after_result, 0);
    th_client_close(c);
}

static void a_client_that_did_not_ask_gets_no_reports(void **state)
{
    struct hx *t = *state;
    th_client *c = td_connect(t);
    struct seen s = {0};

    assert_int_equal(th_client_submit(c, "chatty", "steps", "3", 1, NULL,
                                      on_answer, &s, NULL),
                     0);
    /* Listening from now on: the task above was submitted without. */
    th_client_on_progress(c, on_report, &s);
    while (!s.done)
        assert_int_equal(th_client_step(c, (int)(DEADLINE * 1000)), 0);
    assert_int_equal(s.r.state, TH_STATE_OK);
    assert_int_equal(s.reports, 0);
    th_client_close(c);
}

/* A plugin reporting in a tight loop for 500 ms: the worker lets at most
 * one report per 50 ms through (plus the one held at the end), and the
 * plugin keeps its pace: no system call per report. */
static void a_chatty_plugin_is_coalesced(void **state)
{
    struct hx *t = *state;
    th_client *c = td_connect(t);
    struct seen s = {0};
    double start = hx_now(), took;
    unsigned long long calls;

    th_client_on_progress(c, on_report, &s);
    run_task(c, "chatty", "chatty", "500", &s);
    took = hx_now() - start;
    assert_int_equal(s.r.state, TH_STATE_OK);
    calls = strtoull(s.out, NULL, 10);
    fprintf(stderr, "chatty: %llu reports in %.0f ms (%.1f M/s), %d passed on\n",
            calls, s.r.run_time * 1e3, calls / s.r.run_time / 1e6, s.reports);
    assert_true(s.reports >= 2);
    assert_true(s.reports <= (int)(took / 0.050) + 2);
    assert_true(calls > 100000);
    assert_int_equal(s.last_done, calls - 1); /* the latest won */
    assert_int_equal(s.after_result, 0);
    th_client_close(c);
}

/* Reports of many chatty tasks at once do not hold up anything else. */
static void chatty_tasks_do_not_flood_other_clients(void **state)
{
    struct hx *t = *state;
    th_client *c = td_connect(t), *other = td_connect(t);
    struct seen s[2] = {{0}};
    th_result r;
    char v[64];

    th_client_on_progress(c, on_report, &s[0]);
    for (int i = 0; i < 2; i++)
        assert_int_equal(th_client_submit(c, "chatty", "chatty", "300", 3,
                                          NULL, on_answer, &s[i], NULL),
                         0);
    th_client_step(c, 0);
    assert_int_equal(th_client_ping(other, v, sizeof v), 0);
    assert_int_equal(th_client_call(other, "sleep", "sleep", "1", 1, NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_OK);
    th_client_result_free(&r);
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    assert_true(s[0].reports <= 2 * (300 / 50 + 2) + 2);
    th_client_close(other);
    th_client_close(c);
}

static void taskhostctl_submit_progress_prints_lines(void **state)
{
    struct hx *t = *state;
    char out[160], err[160], in[160];
    char *argv[] = {CTL, "-s", t->sock, "submit", "sleep", "sleep",
                    "--progress", "-i", in, NULL};
    FILE *f;
    int status;

    snprintf(out, sizeof out, "%s/ctl.out", t->dir);
    snprintf(err, sizeof err, "%s/ctl.err", t->dir);
    snprintf(in, sizeof in, "%s/ctl.in", t->dir);
    f = fopen(in, "w");
    assert_non_null(f);
    fputs("300", f);
    fclose(f);
    status = td_wait_exit(td_spawn(argv, out, err));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_string_equal(hx_read_file(out), "slept 300");
    const char *e = hx_read_file(err);
    assert_non_null(strstr(e, "taskhostctl: progress 0/300 (0%) sleeping\n"));
    assert_true(strstr(e, "taskhostctl: progress 2") != NULL ||
                strstr(e, "taskhostctl: progress 1") != NULL);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(reports_reach_a_client_that_asked_in_order),
        T(a_client_that_did_not_ask_gets_no_reports),
        T(a_chatty_plugin_is_coalesced),
        T(chatty_tasks_do_not_flood_other_clients),
        T(taskhostctl_submit_progress_prints_lines),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
