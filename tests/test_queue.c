/* test_queue.c - the pool queue's order (priority, then FIFO), requeueing
 * at the head, drop-oldest's choice, and the task id map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "queue.h"

static struct task_table tt;

static struct task *mk(uint64_t id, int prio)
{
    struct task *t = task_new(&tt, "in", 2);
    assert_non_null(t);
    t->id = id;
    t->priority = (int8_t)prio;
    return t;
}

static void drain_expect(struct queue *q, const uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct task *t = queue_pop(q);
        assert_non_null(t);
        assert_int_equal(t->id, ids[i]);
        task_free(&tt, t);
    }
    assert_null(queue_pop(q));
}

static void test_same_priority_is_fifo(void **state)
{
    struct queue q = {{0}, 0};
    for (uint64_t i = 1; i <= 5; i++)
        queue_push(&q, mk(i, 0));
    assert_int_equal(queue_len(&q), 5);
    const uint64_t want[] = {1, 2, 3, 4, 5};
    drain_expect(&q, want, 5);
}

static void test_higher_priority_goes_first_fifo_within(void **state)
{
    struct queue q = {{0}, 0};
    queue_push(&q, mk(1, 0));
    queue_push(&q, mk(2, 5));
    queue_push(&q, mk(3, -3));
    queue_push(&q, mk(4, 5));
    queue_push(&q, mk(5, 0));
    const uint64_t want[] = {2, 4, 1, 5, 3};
    drain_expect(&q, want, 5);
}

static void test_push_front_goes_ahead_of_its_priority(void **state)
{
    struct queue q = {{0}, 0};
    queue_push(&q, mk(1, 9));
    queue_push(&q, mk(2, 0));
    queue_push(&q, mk(3, 0));
    queue_push_front(&q, mk(4, 0));
    const uint64_t want[] = {1, 4, 2, 3};
    drain_expect(&q, want, 4);
}

static void test_drop_oldest_picks_oldest_of_lowest_priority(void **state)
{
    struct queue q = {{0}, 0};
    queue_push(&q, mk(1, 0));
    queue_push(&q, mk(2, -1));
    queue_push(&q, mk(3, 0));
    queue_push(&q, mk(4, -1));
    struct task *victim = queue_oldest_lowest(&q);
    assert_int_equal(victim->id, 2);
    queue_remove(&q, victim);
    task_free(&tt, victim);
    const uint64_t want[] = {1, 3, 4};
    drain_expect(&q, want, 3);
}

static void test_move_keeps_the_order(void **state)
{
    struct queue a = {{0}, 0}, b = {{0}, 0};
    queue_push(&b, mk(1, 0));
    for (uint64_t i = 2; i <= 4; i++)
        queue_push(&a, mk(i, 0));
    queue_move(&b, &a);
    assert_int_equal(queue_len(&a), 0);
    const uint64_t want[] = {1, 2, 3, 4};
    drain_expect(&b, want, 4);
}

static void test_id_map_finds_and_forgets_tasks(void **state)
{
    enum { N = 5000 };
    struct task **v = calloc(N, sizeof *v);
    for (size_t i = 0; i < N; i++) {
        v[i] = mk(i + 1, 0);
        assert_int_equal(task_map_add(&tt, v[i]), 0);
    }
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(task_map_find(&tt, i + 1), v[i]);
    assert_null(task_map_find(&tt, N + 1));
    for (size_t i = 0; i < N; i += 2)
        task_map_del(&tt, v[i]);
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(task_map_find(&tt, i + 1), i % 2 ? v[i] : NULL);
    for (size_t i = 0; i < N; i++) {
        task_map_del(&tt, v[i]);
        task_free(&tt, v[i]);
    }
    assert_int_equal(tt.count, 0);
    free(v);
}

static void test_large_input_is_copied_out_of_line(void **state)
{
    size_t n = TASK_INLINE * 4;
    char *in = malloc(n);
    memset(in, 'z', n);
    struct task *t = task_new(&tt, in, n);
    assert_true(task_data(t) != t->inline_input);
    memset(in, 0, n);
    assert_int_equal(task_data(t)[n - 1], 'z');
    task_free(&tt, t);
    free(in);
}

static int teardown(void **state)
{
    task_table_free(&tt);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_priority_is_fifo),
        cmocka_unit_test(test_higher_priority_goes_first_fifo_within),
        cmocka_unit_test(test_push_front_goes_ahead_of_its_priority),
        cmocka_unit_test(test_drop_oldest_picks_oldest_of_lowest_priority),
        cmocka_unit_test(test_move_keeps_the_order),
        cmocka_unit_test(test_id_map_finds_and_forgets_tasks),
        cmocka_unit_test(test_large_input_is_copied_out_of_line),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
