/* test_stats.c - the fixed-memory latency histograms, the windows of
 * recent seconds and the ring of worker events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "stats.h"

static void test_empty_histogram_reports_zero(void **state)
{
    struct hist h = {0};
    assert_int_equal(hist_percentile(&h, 0.5), 0);
}

static void test_small_values_are_exact(void **state)
{
    struct hist h = {0};
    for (uint64_t v = 0; v < 8; v++)
        hist_add(&h, v);
    assert_int_equal(hist_percentile(&h, 0.5), 3);
    assert_int_equal(hist_percentile(&h, 1.0), 7);
}

static void test_percentiles_are_within_an_eighth(void **state)
{
    struct hist h = {0};
    for (uint64_t v = 1; v <= 100000; v++)
        hist_add(&h, v);
    const double qs[] = {0.5, 0.9, 0.99};
    for (int i = 0; i < 3; i++) {
        double want = qs[i] * 100000;
        double got = (double)hist_percentile(&h, qs[i]);
        assert_true(got >= want);
        assert_true(got <= want * 1.125 + 1);
    }
}

static void test_huge_values_land_in_the_last_bucket(void **state)
{
    struct hist h = {0};
    hist_add(&h, UINT64_MAX);
    hist_add(&h, (uint64_t)1 << 62);
    assert_int_equal(h.count, 2);
    assert_true(hist_percentile(&h, 1.0) >= (uint64_t)1 << 62);
}

static void test_reason_names_are_stable(void **state)
{
    assert_string_equal(retire_reason_name(RETIRE_MEMORY_SOFT), "memory_soft");
    assert_string_equal(retire_reason_name(RETIRE_CRASH), "crash");
    assert_string_equal(retire_reason_name(RETIRE_KILLED), "timeout_cancel");
    assert_string_equal(retire_reason_name(99), "unknown");
}

static void test_fixed_buckets_hold_each_value_once(void **state)
{
    struct hist h = {0};
    const uint64_t *b = hist_bounds_us();
    hist_add(&h, 0);
    hist_add(&h, b[0]);     /* le is inclusive */
    hist_add(&h, b[0] + 1);
    hist_add(&h, b[HIST_FIXED - 1] + 1);
    assert_int_equal(h.fixed[0], 2);
    assert_int_equal(h.fixed[1], 1);
    assert_int_equal(h.fixed[HIST_FIXED], 1);
    for (int i = 1; i < HIST_FIXED; i++)
        assert_true(b[i] > b[i - 1]);
}

static void test_negative_spans_count_as_zero(void **state)
{
    assert_int_equal(stats_us(-0.000002), 0);
    assert_int_equal(stats_us(0.0000015), 1);
    assert_int_equal(stats_us(2.0), 2000000);
}

static struct pool_stats *new_stats(void)
{
    struct pool_stats *s = calloc(1, sizeof *s);
    assert_non_null(s);
    return s;
}

static void test_window_quantiles_cover_the_last_minute(void **state)
{
    struct pool_stats *s = new_stats();
    struct window_view *v = malloc(sizeof *v);
    double t0 = 1000.25;
    for (int i = 0; i < 100; i++)
        stats_run(s, t0, 5000); /* slow, long ago */
    for (int i = 0; i < 100; i++)
        stats_run(s, t0 + 70, (uint64_t)i);
    stats_window(s, t0 + 70.5, v);
    assert_int_equal(v->ran, 100);
    assert_int_equal(v->run.count, 100);
    assert_true(hist_percentile(&v->run, 0.99) < 128);
    assert_true(v->seconds > 59 && v->seconds <= 60);
    /* The lifetime histogram still has them all. */
    assert_int_equal(s->run.count, 200);
    free(v);
    stats_free(s);
    free(s);
}

static void test_a_young_window_rates_over_its_own_age(void **state)
{
    struct pool_stats *s = new_stats();
    struct window_view *v = malloc(sizeof *v);
    stats_depth(s, 500.0, 0);
    for (int i = 0; i < 30; i++)
        stats_run(s, 500.0 + i * 0.1, 0);
    stats_window(s, 503.0, v);
    assert_int_equal(v->ran, 30);
    assert_true(v->seconds > 2.9 && v->seconds < 3.1);
    /* A task answered in zero microseconds is a zero, not "none". */
    assert_int_equal(v->run.count, 30);
    assert_int_equal(hist_percentile(&v->run, 0.5), 0);
    free(v);
    stats_free(s);
    free(s);
}

static void test_a_quiet_minute_empties_the_window(void **state)
{
    struct pool_stats *s = new_stats();
    struct window_view *v = malloc(sizeof *v);
    stats_wait(s, 10.0, 7);
    stats_run(s, 10.0, 7);
    stats_window(s, 200.0, v);
    assert_int_equal(v->ran, 0);
    assert_int_equal(v->wait.count, 0);
    assert_int_equal(v->run.count, 0);
    free(v);
    stats_free(s);
    free(s);
}

/* The minute's histograms are mapped at the first record: a pool that
 * ran nothing holds none, and reads as an empty window. */
static void test_a_pool_that_ran_nothing_holds_no_window(void **state)
{
    struct pool_stats *s = new_stats();
    struct window_view *v = malloc(sizeof *v);
    assert_non_null(v);
    stats_window(s, 100.0, v);
    assert_null(s->win);
    assert_int_equal(v->ran, 0);
    assert_true(v->seconds == 0);
    stats_wait(s, 100.0, 5);
    assert_non_null(s->win);
    free(v);
    stats_free(s);
    assert_null(s->win);
    free(s);
}

static void test_queue_depth_carries_over_quiet_seconds(void **state)
{
    struct pool_stats *s = new_stats();
    stats_depth(s, 100.0, 7);
    stats_depth(s, 100.5, 3);
    stats_run(s, 104.2, 1); /* advances over 101..104 */
    const struct window *w = s->win;
    assert_int_equal(w->depth[100 % HISTORY_SECONDS], 7);
    for (int x = 101; x <= 104; x++)
        assert_int_equal(w->depth[x % HISTORY_SECONDS], 3);
    assert_int_equal(w->ran[104 % HISTORY_SECONDS], 1);
    stats_free(s);
    free(s);
}

static void test_event_ring_keeps_the_newest_fifty(void **state)
{
    struct event_ring *r = calloc(1, sizeof *r);
    assert_non_null(r);
    for (int i = 0; i < 120; i++)
        stats_worker_started(r, "p", 1000 + i);
    assert_int_equal(r->total, 120);
    int oldest = 1 << 30;
    for (int i = 0; i < EVENTS_MAX; i++)
        if (r->ev[i].pid < oldest)
            oldest = r->ev[i].pid;
    assert_int_equal(oldest, 1000 + 120 - EVENTS_MAX);
    free(r);
}

static void test_worker_exits_are_named_by_what_happened(void **state)
{
    struct event_ring *r = calloc(1, sizeof *r);
    assert_non_null(r);
    stats_worker_exited(r, "p", 1, RETIRE_CRASH, 1, "killed by signal 11 (SIGSEGV)");
    stats_worker_exited(r, "p", 2, RETIRE_MEMORY_HARD, 0, "killed by signal 9 (SIGKILL)");
    stats_worker_exited(r, "p", 3, RETIRE_MAX_TASKS, 0, "exited with status 0");
    stats_worker_exited(r, "p", 4, RETIRE_IDLE, 0, "exited with status 0");
    assert_string_equal(stats_event_name(r->ev[0].kind), "crashed");
    assert_string_equal(r->ev[0].detail, "killed by signal 11 (SIGSEGV)");
    assert_string_equal(stats_event_name(r->ev[1].kind), "killed");
    assert_string_equal(stats_event_name(r->ev[2].kind), "recycled");
    assert_string_equal(retire_reason_name(r->ev[2].reason), "max_tasks");
    assert_string_equal(stats_event_name(r->ev[3].kind), "stopped");
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_histogram_reports_zero),
        cmocka_unit_test(test_small_values_are_exact),
        cmocka_unit_test(test_percentiles_are_within_an_eighth),
        cmocka_unit_test(test_huge_values_land_in_the_last_bucket),
        cmocka_unit_test(test_reason_names_are_stable),
        cmocka_unit_test(test_fixed_buckets_hold_each_value_once),
        cmocka_unit_test(test_negative_spans_count_as_zero),
        cmocka_unit_test(test_window_quantiles_cover_the_last_minute),
        cmocka_unit_test(test_a_young_window_rates_over_its_own_age),
        cmocka_unit_test(test_a_quiet_minute_empties_the_window),
        cmocka_unit_test(test_a_pool_that_ran_nothing_holds_no_window),
        cmocka_unit_test(test_queue_depth_carries_over_quiet_seconds),
        cmocka_unit_test(test_event_ring_keeps_the_newest_fifty),
        cmocka_unit_test(test_worker_exits_are_named_by_what_happened),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
