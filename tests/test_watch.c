/* test_watch.c - an embedder's own descriptors and timers in the host's
 * loop (th_watch_*, th_timer_*): readiness, pausing, level triggering,
 * stopping and freeing from inside callbacks, and th_host_fd() waking
 * for foreign work. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "taskhost_host.h"

struct seen {
    int calls;
    unsigned last;
    int stop_self;   /* th_watch_stop() from inside the callback */
    th_watch *other; /* stopped from inside the callback, if set */
    th_watch *self;
};

static void on_ready(th_watch *w, int fd, unsigned events, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    s->last = events;
    if (s->other != NULL) {
        th_watch_stop(s->other);
        s->other = NULL;
    }
    if (s->stop_self) {
        th_watch_stop(w);
        s->self = NULL;
    }
}

static th_host *new_host(void)
{
    th_host *h;
    assert_int_equal(th_host_new(&h), 0);
    return h;
}

/* Steps until *flag or `seconds` pass. */
static void step_until(th_host *h, const int *flag, double seconds)
{
    double end = th_host_now(h) + seconds;
    while (!*flag && th_host_now(h) < end)
        assert_int_equal(th_host_step(h, 20), 0);
}

static void test_watch_reports_a_readable_pipe(void **state)
{
    th_host *h = new_host();
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    th_watch *w;
    assert_int_equal(th_watch_start(h, p[0], TH_WATCH_READ, on_ready, &s, &w),
                     0);
    assert_int_equal(write(p[1], "x", 1), 1);
    step_until(h, &s.calls, 5.0);
    assert_int_equal(s.calls, 1);
    assert_true(s.last & TH_WATCH_READ);
    th_watch_stop(w);
    th_host_close(h, TH_CLOSE_FORCE);
    close(p[0]);
    close(p[1]);
}

static void test_watch_is_level_triggered(void **state)
{
    th_host *h = new_host();
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    th_watch *w;
    assert_int_equal(th_watch_start(h, p[0], TH_WATCH_READ, on_ready, &s, &w),
                     0);
    assert_int_equal(write(p[1], "x", 1), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_host_step(h, 1000), 0);
    assert_int_equal(s.calls, 3); /* nothing read: ready every step */
    th_watch_stop(w);
    th_host_close(h, TH_CLOSE_FORCE);
    close(p[0]);
    close(p[1]);
}

static void test_paused_watch_is_not_called_and_resumes(void **state)
{
    th_host *h = new_host();
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    th_watch *w;
    assert_int_equal(th_watch_start(h, p[0], 0, on_ready, &s, &w), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    close(p[1]); /* a hang-up too: a paused watch must not spin */
    assert_int_equal(th_host_step(h, 50), 0);
    assert_int_equal(s.calls, 0);
    assert_int_equal(th_watch_events(w), 0);
    assert_int_equal(th_watch_set(w, TH_WATCH_READ), 0);
    step_until(h, &s.calls, 5.0);
    assert_int_equal(s.calls, 1);
    th_watch_stop(w);
    th_host_close(h, TH_CLOSE_FORCE);
    close(p[0]);
}

static void test_watch_write_interest_toggles(void **state)
{
    th_host *h = new_host();
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    th_watch *w;
    assert_int_equal(th_watch_start(h, p[1], TH_WATCH_WRITE, on_ready, &s, &w),
                     0);
    step_until(h, &s.calls, 5.0);
    assert_true(s.last & TH_WATCH_WRITE);
    assert_int_equal(th_watch_set(w, 0), 0);
    int before = s.calls;
    assert_int_equal(th_host_step(h, 30), 0);
    assert_int_equal(s.calls, before);
    th_watch_stop(w);
    th_host_close(h, TH_CLOSE_FORCE);
    close(p[0]);
    close(p[1]);
}

static void test_watch_stopped_inside_its_callback_is_not_called_again(
    void **state)
{
    th_host *h = new_host();
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {.stop_self = 1};
    assert_int_equal(
        th_watch_start(h, p[0], TH_WATCH_READ, on_ready, &s, &s.self), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_host_step(h, 30), 0);
    assert_int_equal(s.calls, 1);
    th_host_close(h, TH_CLOSE_FORCE);
    close(p[0]);
    close(p[1]);
}

/* Two descriptors ready in the same batch: the first callback stops the
 * second watch, whose event is already pending, and it must be dropped. */
static void test_watch_stopped_by_another_in_the_same_batch_is_dropped(
    void **state)
{
    th_host *h = new_host();
    int a[2], b[2];
    assert_int_equal(pipe(a), 0);
    assert_int_equal(pipe(b), 0);
    struct seen sa = {0}, sb = {0};
    th_watch *wa, *wb;
    assert_int_equal(th_watch_start(h, a[0], TH_WATCH_READ, on_ready, &sa, &wa),
                     0);
    assert_int_equal(th_watch_start(h, b[0], TH_WATCH_READ, on_ready, &sb, &wb),
                     0);
    sa.other = wb;
    sb.other = wa;
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "x", 1), 1);
    assert_int_equal(th_host_step(h, 1000), 0);
    assert_int_equal(sa.calls + sb.calls, 1);
    th_watch_stop(sa.calls ? wa : wb);
    th_host_close(h, TH_CLOSE_FORCE);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}

static void test_watching_a_bad_descriptor_fails(void **state)
{
    th_host *h = new_host();
    struct seen s = {0};
    th_watch *w = NULL;
    assert_int_equal(th_watch_start(h, 1000000, TH_WATCH_READ, on_ready, &s, &w),
                     TH_EIO);
    assert_null(w);
    assert_int_equal(th_watch_start(h, 0, 8, on_ready, &s, &w), TH_EINVAL);
    th_host_close(h, TH_CLOSE_FORCE);
}

struct ticks {
    int n;
    int free_at;    /* th_timer_free() from the callback at this count */
    int stop_at;    /* th_timer_stop() from the callback at this count */
};

static void on_tick(th_timer *t, void *arg)
{
    struct ticks *k = arg;
    k->n++;
    if (k->n == k->free_at)
        th_timer_free(t);
    else if (k->n == k->stop_at)
        th_timer_stop(t);
}

static void test_timer_fires_once(void **state)
{
    th_host *h = new_host();
    struct ticks k = {0};
    th_timer *t;
    assert_int_equal(th_timer_new(h, on_tick, &k, &t), 0);
    th_timer_start(t, 0.01, 0);
    assert_true(th_timer_armed(t));
    step_until(h, &k.n, 5.0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_host_step(h, 20), 0);
    assert_int_equal(k.n, 1);
    assert_false(th_timer_armed(t));
    th_timer_free(t);
    th_host_close(h, TH_CLOSE_FORCE);
}

static void test_repeating_timer_stops_from_its_callback(void **state)
{
    th_host *h = new_host();
    struct ticks k = {.stop_at = 3};
    th_timer *t;
    assert_int_equal(th_timer_new(h, on_tick, &k, &t), 0);
    th_timer_start(t, 0, 0.005);
    double end = th_host_now(h) + 5.0;
    while (k.n < 3 && th_host_now(h) < end)
        assert_int_equal(th_host_step(h, 20), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_host_step(h, 20), 0);
    assert_int_equal(k.n, 3);
    assert_false(th_timer_armed(t));
    th_timer_free(t);
    th_host_close(h, TH_CLOSE_FORCE);
}

static void test_timer_freed_inside_its_callback(void **state)
{
    th_host *h = new_host();
    struct ticks k = {.free_at = 2};
    th_timer *t;
    assert_int_equal(th_timer_new(h, on_tick, &k, &t), 0);
    th_timer_start(t, 0, 0.005);
    double end = th_host_now(h) + 5.0;
    while (k.n < 2 && th_host_now(h) < end)
        assert_int_equal(th_host_step(h, 20), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_host_step(h, 20), 0);
    assert_int_equal(k.n, 2);
    th_host_close(h, TH_CLOSE_FORCE);
}

/* An embedder that polls th_host_fd() sees its foreign descriptor too. */
static void test_host_fd_is_readable_for_a_watched_descriptor(void **state)
{
    th_host *h = new_host();
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct seen s = {0};
    th_watch *w;
    assert_int_equal(th_watch_start(h, p[0], TH_WATCH_READ, on_ready, &s, &w),
                     0);
    assert_int_equal(write(p[1], "x", 1), 1);
    struct pollfd pfd = {.fd = th_host_fd(h), .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    assert_int_equal(th_host_step(h, 0), 0);
    assert_int_equal(s.calls, 1);
    th_watch_stop(w);
    th_host_close(h, TH_CLOSE_FORCE);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watch_reports_a_readable_pipe),
        cmocka_unit_test(test_watch_is_level_triggered),
        cmocka_unit_test(test_paused_watch_is_not_called_and_resumes),
        cmocka_unit_test(test_watch_write_interest_toggles),
        cmocka_unit_test(
            test_watch_stopped_inside_its_callback_is_not_called_again),
        cmocka_unit_test(
            test_watch_stopped_by_another_in_the_same_batch_is_dropped),
        cmocka_unit_test(test_watching_a_bad_descriptor_fails),
        cmocka_unit_test(test_timer_fires_once),
        cmocka_unit_test(test_repeating_timer_stops_from_its_callback),
        cmocka_unit_test(test_timer_freed_inside_its_callback),
        cmocka_unit_test(test_host_fd_is_readable_for_a_watched_descriptor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
