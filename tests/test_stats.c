/* test_stats.c - the fixed-memory latency histogram. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_histogram_reports_zero),
        cmocka_unit_test(test_small_values_are_exact),
        cmocka_unit_test(test_percentiles_are_within_an_eighth),
        cmocka_unit_test(test_huge_values_land_in_the_last_bucket),
        cmocka_unit_test(test_reason_names_are_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
