/* test_pending.c - the client library's table of waiting requests
 * (client/pending.h): lookup by tag, growth, removal that keeps every
 * probe run whole, and the callback fields carried as stored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pending.h"

/* Every tag in [first, last] is found, with its own entry. */
static void assert_all_found(const struct pend_table *t, uint64_t first,
                             uint64_t last)
{
    for (uint64_t tag = first; tag <= last; tag++) {
        struct pend *p = pend_find(t, tag);
        assert_non_null(p);
        assert_true(p->tag == tag);
        assert_ptr_equal(p->arg, (void *)(uintptr_t)tag);
    }
}

static void an_added_tag_is_found_and_an_unknown_one_is_not(void **state)
{
    struct pend_table t;

    (void)state;
    assert_int_equal(pend_init(&t), 0);
    struct pend *p = pend_add(&t, 7);
    assert_non_null(p);
    assert_true(p->tag == 7);
    assert_null(p->done);
    assert_null(p->ctl);
    assert_null(p->m);
    p->arg = &t;
    assert_ptr_equal(pend_find(&t, 7), p);
    assert_ptr_equal(pend_find(&t, 7)->arg, &t);
    assert_null(pend_find(&t, 8));
    assert_null(pend_find(&t, 7 + PEND_MIN)); /* same home slot */
    assert_null(pend_find(&t, 0)); /* a peer's tag 0 is nobody's */
    assert_int_equal(t.used, 1);
    pend_free(&t);
}

static void the_table_grows_and_stays_at_most_half_full(void **state)
{
    struct pend_table t;
    enum { N = 10000 };

    (void)state;
    assert_int_equal(pend_init(&t), 0);
    assert_int_equal(t.mask + 1, PEND_MIN);
    for (uint64_t tag = 1; tag <= N; tag++) {
        pend_add(&t, tag)->arg = (void *)(uintptr_t)tag;
        assert_true(t.used * 2 <= t.mask + 1);
    }
    assert_int_equal(t.used, N);
    assert_true(t.mask + 1 >= 2 * N);
    assert_all_found(&t, 1, N);
    pend_free(&t);
}

/* Tags a table-size apart share a home slot: deleting from the middle of
 * their probe run must leave every other one findable. */
static void removal_in_a_collision_run_keeps_the_rest_findable(void **state)
{
    struct pend_table t;
    uint64_t tags[6];

    (void)state;
    assert_int_equal(pend_init(&t), 0);
    for (int i = 0; i < 6; i++) {
        tags[i] = 5 + (uint64_t)i * PEND_MIN;
        pend_add(&t, tags[i])->arg = (void *)(uintptr_t)tags[i];
    }
    pend_add(&t, 6)->arg = (void *)(uintptr_t)6; /* homed inside the run */
    pend_del(&t, pend_find(&t, tags[1]));
    pend_del(&t, pend_find(&t, tags[4]));
    assert_null(pend_find(&t, tags[1]));
    assert_null(pend_find(&t, tags[4]));
    for (int i = 0; i < 6; i++)
        if (i != 1 && i != 4)
            assert_ptr_equal(pend_find(&t, tags[i])->arg,
                             (void *)(uintptr_t)tags[i]);
    assert_ptr_equal(pend_find(&t, 6)->arg, (void *)(uintptr_t)6);
    assert_int_equal(t.used, 5);
    pend_free(&t);
}

/* The run wraps past the last slot back to the first. */
static void removal_across_the_end_of_the_table_wraps(void **state)
{
    struct pend_table t;
    uint64_t last = PEND_MIN - 1;

    (void)state;
    assert_int_equal(pend_init(&t), 0);
    for (uint64_t k = 0; k < 4; k++)
        pend_add(&t, last + k * PEND_MIN)->arg =
            (void *)(uintptr_t)(last + k * PEND_MIN);
    pend_add(&t, PEND_MIN)->arg = (void *)(uintptr_t)PEND_MIN; /* home 0 */
    pend_del(&t, pend_find(&t, last));
    for (uint64_t k = 1; k < 4; k++)
        assert_non_null(pend_find(&t, last + k * PEND_MIN));
    assert_non_null(pend_find(&t, PEND_MIN));
    assert_null(pend_find(&t, last));
    pend_free(&t);
}

/* Sequential tags answered out of order, as a busy connection sees them:
 * after any mix of adds and removals, exactly the live tags are found. */
static void interleaved_adds_and_removals_find_exactly_the_live(void **state)
{
    struct pend_table t;
    enum { N = 20000 };
    unsigned char *live = calloc(N + 1, 1);
    uint64_t next = 1;
    unsigned seed = 12345;

    (void)state;
    assert_non_null(live);
    assert_int_equal(pend_init(&t), 0);
    for (int round = 0; round < 4 * N; round++) {
        seed = seed * 1103515245u + 12345u;
        if (next <= N && (seed >> 16) % 3 != 0) {
            pend_add(&t, next)->arg = (void *)(uintptr_t)next;
            live[next++] = 1;
        } else if (next > 1) {
            uint64_t tag = 1 + (seed >> 8) % (next - 1);
            struct pend *p = pend_find(&t, tag);
            assert_true((p != NULL) == (live[tag] != 0));
            if (p != NULL) {
                pend_del(&t, p);
                live[tag] = 0;
            }
        }
    }
    size_t n = 0;
    for (uint64_t tag = 1; tag < next; tag++) {
        struct pend *p = pend_find(&t, tag);
        assert_true((p != NULL) == (live[tag] != 0));
        n += live[tag];
    }
    assert_int_equal(t.used, n);
    pend_free(&t);
    free(live);
}

/* The invariants are assert()s, and this build keeps them on (CI builds
 * with the same flags as this test): removing an empty slot aborts. */
static void a_broken_invariant_aborts_asserts_are_on(void **state)
{
    struct pend_table t;
    int status;

    (void)state;
    assert_int_equal(pend_init(&t), 0);
    pid_t pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        pend_del(&t, &t.slot[3]); /* tag 0: nothing to remove */
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    pend_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_added_tag_is_found_and_an_unknown_one_is_not),
        cmocka_unit_test(the_table_grows_and_stays_at_most_half_full),
        cmocka_unit_test(removal_in_a_collision_run_keeps_the_rest_findable),
        cmocka_unit_test(removal_across_the_end_of_the_table_wraps),
        cmocka_unit_test(
            interleaved_adds_and_removals_find_exactly_the_live),
        cmocka_unit_test(a_broken_invariant_aborts_asserts_are_on),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
