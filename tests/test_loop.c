/* test_loop.c - the event loop: timers in order, re-arming, stopping,
 * wake-ups, and fd readiness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <sys/wait.h>
#include <time.h>
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

/* CPU seconds this thread has used. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Something that comes while the loop polls is handled as when it sleeps:
 * a child writes to a pipe a little later. */
static void test_busy_poll_window_sees_events(void **state)
{
    struct loop *l = new_loop();
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct pipe_io p = {.io = {.fd = fds[0], .cb = on_readable}};
    assert_int_equal(loop_add(l, &p.io, LOOP_READ), 0);
    pid_t pid = fork();
    if (pid == 0) {
        poll(NULL, 0, 5);
        _exit(write(fds[1], "x", 1) == 1 ? 0 : 1);
    }
    loop_poll_until(l, loop_clock() + 5.0);
    run_until(l, &p.reads, 5.0);
    assert_int_equal(p.reads, 1);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    loop_del(l, &p.io);
    close(fds[0]);
    close(fds[1]);
    loop_free(l);
}

/* A wait's timeout ends it even inside a longer window. */
static void test_busy_poll_keeps_the_timeout(void **state)
{
    struct loop *l = new_loop();
    loop_poll_until(l, loop_clock() + 5.0);
    double t0 = loop_clock();
    assert_int_equal(loop_run_once(l, 20), 0);
    double took = loop_clock() - t0;
    assert_true(took >= 0.015 && took < 1.0);
    loop_free(l);
}

/* Once the window has passed, the loop sleeps again: next to no CPU.
 * (How much it gets while polling depends on what else runs: polls
 * yield the CPU.) */
static void test_busy_poll_window_ends_by_itself(void **state)
{
    struct loop *l = new_loop();
    loop_poll_until(l, loop_clock() + 0.030);
    assert_int_equal(loop_run_once(l, 60), 0);
    double c0 = cpu_s();
    assert_int_equal(loop_run_once(l, 100), 0);
    assert_true(cpu_s() - c0 < 0.005);
    /* A window already over is no window. */
    loop_poll_until(l, loop_clock() - 1.0);
    c0 = cpu_s();
    assert_int_equal(loop_run_once(l, 50), 0);
    assert_true(cpu_s() - c0 < 0.005);
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
        cmocka_unit_test(test_busy_poll_window_sees_events),
        cmocka_unit_test(test_busy_poll_keeps_the_timeout),
        cmocka_unit_test(test_busy_poll_window_ends_by_itself),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
