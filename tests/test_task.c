/* test_task.c - the engine's task table (task.h): inline and large
 * inputs, the id map, the free list, answers kept in the task, progress
 * hooks, lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "task.h"

static void a_small_input_is_kept_inline_and_a_large_one_apart(void **state)
{
    struct task_table tt = {0};
    struct task *s = task_new(&tt, "abc", 3);
    char *big = malloc(10000);
    memset(big, 'b', 10000);
    struct task *l = task_new(&tt, big, 10000);
    assert_ptr_equal(task_data(s), s->inline_input);
    assert_memory_equal(task_data(s), "abc", 3);
    assert_true(task_data(l) != l->inline_input);
    assert_memory_equal(task_data(l), big, 10000);
    task_free(&tt, s);
    task_free(&tt, l);
    task_table_free(&tt);
    free(big);
}

static void a_borrowed_input_is_neither_copied_nor_freed(void **state)
{
    struct task_table tt = {0};
    char *big = calloc(1, 10000);
    struct task *t = task_new_borrowed(&tt, big, 10000);
    assert_ptr_equal(task_data(t), big);
    assert_non_null(t->payload);
    task_free(&tt, t);
    struct task *s = task_new_borrowed(&tt, "abc", 3);
    assert_ptr_equal(task_data(s), s->inline_input);
    assert_null(s->payload);
    task_free(&tt, s);
    task_table_free(&tt);
    free(big); /* still ours */
}

static void the_map_finds_each_task_by_id_until_deleted(void **state)
{
    struct task_table tt = {0};
    enum { N = 5000 };
    struct task **v = calloc(N, sizeof *v);
    for (int i = 0; i < N; i++) {
        v[i] = task_new(&tt, NULL, 0);
        v[i]->id = (uint64_t)i + 1;
        assert_int_equal(task_map_add(&tt, v[i]), 0);
    }
    for (int i = 0; i < N; i++)
        assert_ptr_equal(task_map_find(&tt, (uint64_t)i + 1), v[i]);
    assert_null(task_map_find(&tt, N + 1));
    for (int i = 0; i < N; i += 2)
        task_map_del(&tt, v[i]);
    for (int i = 0; i < N; i++)
        assert_true((task_map_find(&tt, (uint64_t)i + 1) != NULL) == (i % 2));
    for (int i = 0; i < N; i++) {
        task_map_del(&tt, v[i]);
        task_free(&tt, v[i]);
    }
    task_table_free(&tt);
    free(v);
}

static void a_freed_task_is_reused_fresh(void **state)
{
    struct task_table tt = {0};
    struct task *t = task_new(&tt, "x", 1);
    t->id = 42;
    t->answered = 1;
    task_free(&tt, t);
    struct task *u = task_new(&tt, "y", 1);
    assert_ptr_equal(u, t); /* from the free list */
    assert_int_equal(u->id, 0);
    assert_int_equal(u->answered, 0);
    assert_memory_equal(task_data(u), "y", 1);
    task_free(&tt, u);
    task_table_free(&tt);
}

static void an_answer_is_kept_in_the_task_with_a_nul(void **state)
{
    struct task_table tt = {0};
    struct task *t = task_new(&tt, "in", 2);
    assert_int_equal(task_set_output(&tt, t, "message", 7, 1), 0);
    assert_int_equal(task_len(t), 7);
    assert_string_equal(task_data(t), "message");
    task_free(&tt, t);
    char *big = malloc(5000);
    memset(big, 'o', 5000);
    t = task_new(&tt, big, 5000); /* an echo: the output fills the input's */
    assert_int_equal(task_set_output(&tt, t, big, 5000, 0), 0);
    assert_memory_equal(task_data(t), big, 5000);
    task_free(&tt, t);
    t = task_new(&tt, "s", 1); /* a large output of a small input */
    assert_int_equal(task_set_output(&tt, t, big, 5000, 1), 0);
    assert_memory_equal(task_data(t), big, 5000);
    assert_int_equal(task_data(t)[5000], '\0');
    task_free(&tt, t);
    task_table_free(&tt);
    free(big);
}

static void an_answer_by_reference_is_neither_copied_nor_freed(void **state)
{
    struct task_table tt = {0};
    static const char out[1000];
    struct task *t = task_new(&tt, "in", 2);
    assert_int_equal(task_ref_output(&tt, t, out, sizeof out), 0);
    assert_ptr_equal(task_data(t), out);
    assert_int_equal(task_len(t), sizeof out);
    task_free(&tt, t);
    char *big = calloc(1, 5000);
    t = task_new(&tt, big, 5000); /* a small answer of a large input */
    assert_int_equal(task_set_output(&tt, t, "ok", 2, 0), 0);
    assert_ptr_equal(task_data(t), t->inline_input);
    assert_int_equal(task_len(t), 2);
    task_free(&tt, t);
    task_table_free(&tt);
    free(big);
}

static void report(uint64_t id, uint64_t done, uint64_t total,
                   const char *msg, void *arg)
{
    (void)id, (void)done, (void)total, (void)msg, (void)arg;
}

static void a_progress_hook_is_set_replaced_and_given_back(void **state)
{
    struct task_table tt = {0};
    int a, b;
    struct task *t = task_new(&tt, "x", 1);
    assert_null(t->progress);
    assert_int_equal(task_on_progress(&tt, t, report, &a), 0);
    struct progress_hook *hk = t->progress;
    assert_ptr_equal(hk->arg, &a);
    assert_int_equal(task_on_progress(&tt, t, report, &b), 0);
    assert_ptr_equal(t->progress, hk); /* replaced in place */
    assert_ptr_equal(hk->arg, &b);
    assert_int_equal(task_on_progress(&tt, t, NULL, NULL), 0);
    assert_null(t->progress);
    assert_int_equal(task_on_progress(&tt, t, report, &a), 0);
    assert_ptr_equal(t->progress, hk); /* from the free list */
    task_free(&tt, t); /* gives it back */
    assert_int_equal(tt.hooks_kept.n, 1);
    task_table_free(&tt);
}

static void lists_keep_order_and_remove_from_anywhere(void **state)
{
    struct task_table tt = {0};
    struct task_list l = {0};
    struct task *v[4];
    for (int i = 0; i < 4; i++) {
        v[i] = task_new(&tt, NULL, 0);
        task_list_push(&l, v[i]);
    }
    task_list_remove(&l, v[1]);
    task_list_push_front(&l, v[1]);
    assert_int_equal(l.n, 4);
    assert_ptr_equal(task_list_pop(&l), v[1]);
    assert_ptr_equal(task_list_pop(&l), v[0]);
    assert_ptr_equal(task_list_pop(&l), v[2]);
    assert_ptr_equal(task_list_pop(&l), v[3]);
    assert_null(task_list_pop(&l));
    for (int i = 0; i < 4; i++)
        task_free(&tt, v[i]);
    task_table_free(&tt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_small_input_is_kept_inline_and_a_large_one_apart),
        cmocka_unit_test(a_borrowed_input_is_neither_copied_nor_freed),
        cmocka_unit_test(the_map_finds_each_task_by_id_until_deleted),
        cmocka_unit_test(a_freed_task_is_reused_fresh),
        cmocka_unit_test(an_answer_is_kept_in_the_task_with_a_nul),
        cmocka_unit_test(an_answer_by_reference_is_neither_copied_nor_freed),
        cmocka_unit_test(a_progress_hook_is_set_replaced_and_given_back),
        cmocka_unit_test(lists_keep_order_and_remove_from_anywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
