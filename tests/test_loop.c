/* test_loop.c - the event loop: timers in order, re-arming, stopping,
 * wake-ups, and fd readiness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"

struct tick {
    struct loop_timer t;
    int fired;
    int order;
};

static int fired_count;

static void on_tick(struct loop_timer *t)
{
    struct tick *k = (struct tick *)t;
    k->fired++;
    k->order = ++fired_count;
}

static struct loop *new_loop(void)
{
    struct loop *l;
    assert_int_equal(loop_new(&l), 0);
    fired_count = 0;
    return l;
}

static void run_until(struct loop *l, const int *flag, double seconds)
{
    double end = loop_clock() + seconds;
    while (!*flag && loop_clock() < end)
        assert_int_equal(loop_run_once(l, 50), 0);
}

static void test_timers_fire_in_deadline_order(void **state)
{
    struct loop *l = new_loop();
    struct tick a = {.t.cb = on_tick}, b = {.t.cb = on_tick},
                c = {.t.cb = on_tick};
    loop_timer_start(l, &c.t, 0.030);
    loop_timer_start(l, &a.t, 0.010);
    loop_timer_start(l, &b.t, 0.020);
    run_until(l, &c.fired, 5.0);
    assert_int_equal(a.order, 1);
    assert_int_equal(b.order, 2);
    assert_int_equal(c.order, 3);
    loop_free(l);
}

static void test_stopped_timer_never_fires(void **state)
{
    struct loop *l = new_loop();
    struct tick a = {.t.cb = on_tick}, b = {.t.cb = on_tick};
    loop_timer_start(l, &a.t, 0.005);
    loop_timer_start(l, &b.t, 0.020);
    loop_timer_stop(l, &a.t);
    assert_false(loop_timer_armed(&a.t));
    run_until(l, &b.fired, 5.0);
    assert_int_equal(a.fired, 0);
    assert_int_equal(b.fired, 1);
    loop_free(l);
}

static void test_rearmed_timer_fires_once_at_the_new_time(void **state)
{
    struct loop *l = new_loop();
    struct tick a = {.t.cb = on_tick}, b = {.t.cb = on_tick};
    loop_timer_start(l, &a.t, 0.005);
    loop_timer_start(l, &b.t, 0.015);
    loop_timer_start(l, &a.t, 0.030); /* pushed behind b */
    run_until(l, &a.fired, 5.0);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.order, 1);
    assert_int_equal(a.order, 2);
    loop_free(l);
}

static void test_many_timers_keep_heap_order(void **state)
{
    struct loop *l = new_loop();
    enum { N = 200 };
    static struct tick t[N];
    for (int i = 0; i < N; i++) {
        t[i] = (struct tick){.t.cb = on_tick};
        loop_timer_start(l, &t[i].t, 0.001 * ((i * 37) % N));
    }
    for (int i = 0; i < N; i += 3)
        loop_timer_stop(l, &t[i].t);
    int last = 0;
    run_until(l, &last, 0.5);
    double prev = -1;
    int fired = 0;
    for (int k = 1; k <= fired_count; k++)
        for (int i = 0; i < N; i++)
            if (t[i].order == k) {
                assert_true(t[i].t.when >= prev);
                prev = t[i].t.when;
                fired++;
            }
    assert_int_equal(fired, N - (N + 2) / 3);
    loop_free(l);
}

static void test_loop_fd_is_readable_after_wake(void **state)
{
    struct loop *l = new_loop();
    struct pollfd pf = {.fd = loop_fd(l), .events = POLLIN};
    assert_int_equal(poll(&pf, 1, 0), 0);
    loop_wake(l);
    assert_int_equal(poll(&pf, 1, 1000), 1);
    assert_int_equal(loop_run_once(l, 0), 0);
    assert_int_equal(poll(&pf, 1, 0), 0);
    loop_free(l);
}

static void test_loop_fd_is_readable_when_a_timer_is_due(void **state)
{
    struct loop *l = new_loop();
    struct tick a = {.t.cb = on_tick};
    loop_timer_start(l, &a.t, 0.010);
    struct pollfd pf = {.fd = loop_fd(l), .events = POLLIN};
    assert_int_equal(poll(&pf, 1, 5000), 1);
    assert_int_equal(loop_run_once(l, 0), 0);
    assert_int_equal(a.fired, 1);
    loop_free(l);
}

struct pipe_io {
    struct loop_io io;
    int reads;
};

static void on_readable(struct loop_io *io, uint32_t events)
{
    struct pipe_io *p = (struct pipe_io *)io;
    char c;
    if (read(io->fd, &c, 1) == 1)
        p->reads++;
}

static void test_registered_fd_callback_runs_when_readable(void **state)
{
    struct loop *l = new_loop();
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct pipe_io p = {.io = {.fd = fds[0], .cb = on_readable}};
    assert_int_equal(loop_add(l, &p.io, LOOP_READ), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    run_until(l, &p.reads, 5.0);
    assert_int_equal(p.reads, 1);
    loop_del(l, &p.io);
    close(fds[0]);
    close(fds[1]);
    loop_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_stopped_timer_never_fires),
        cmocka_unit_test(test_rearmed_timer_fires_once_at_the_new_time),
        cmocka_unit_test(test_many_timers_keep_heap_order),
        cmocka_unit_test(test_loop_fd_is_readable_after_wake),
        cmocka_unit_test(test_loop_fd_is_readable_when_a_timer_is_due),
        cmocka_unit_test(test_registered_fd_callback_runs_when_readable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
