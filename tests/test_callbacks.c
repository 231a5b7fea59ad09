/* test_callbacks.c - a task's callback runs from the loop's answer phase,
 * so it may call the engine freely: cancel, submit, restart, reload,
 * stats, shutdown; and it cannot run the loop from inside itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "taskhost_host.h"

/* Under AddressSanitizer every round forks a worker from this process: a
 * small quarantine keeps the pages each fork copies few, which makes the
 * 10,000 rounds several times faster there (and changes nothing else). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=4";
}

#define PLUGIN(name) TOP_BUILDDIR "/plugins/.libs/" name ".so"
#define ROUNDS 10000
#define VICTIMS 2

static th_host *host_with_echo(int min, int max)
{
    th_host *h;
    char err[512] = "";
    assert_int_equal(th_host_new(&h), 0);
    if (th_host_add_plugin(h, "echo", PLUGIN("echo"), err, sizeof err) < 0)
        fail_msg("add_plugin: %s", err);
    th_pool_opts o;
    th_pool_opts_init(&o);
    o.name = "p";
    o.plugin = "echo";
    o.min_workers = min;
    o.max_workers = max;
    o.max_queue = 0; /* unbounded */
    if (th_host_add_pool(h, &o, err, sizeof err) < 0)
        fail_msg("add_pool: %s", err);
    return h;
}

/* Every task submitted, by id: how many answers it had. */
struct storm {
    th_host *h;
    unsigned char *answers; /* indexed by id */
    size_t cap;
    uint64_t victims[VICTIMS];
    int rounds;
    int submitted, answered, twice, bad, cancel_ok;
};

static void count(struct storm *s, const th_result *r)
{
    assert_true(r->id < s->cap);
    if (s->answers[r->id]++ != 0)
        s->twice++;
    s->answered++;
    if (r->state < TH_STATE_OK || r->state > TH_STATE_MEMORY)
        s->bad++;
}

static void on_victim(const th_result *r, void *arg)
{
    count(arg, r);
}

static void on_driver(const th_result *r, void *arg);

static void submit(struct storm *s, th_done_fn fn, uint64_t *id)
{
    assert_int_equal(th_host_submit(s->h, "p", "echo", "x", 1, NULL, fn, s,
                                    id),
                     0);
    s->submitted++;
}

/* One round, from inside a callback: cancel the last round's victims,
 * submit new ones and the next driver, restart the pool. */
static void on_driver(const th_result *r, void *arg)
{
    struct storm *s = arg;
    count(s, r);
    if (++s->rounds >= ROUNDS)
        return;
    for (int i = 0; i < VICTIMS; i++)
        if (th_host_cancel(s->h, s->victims[i]) == 0)
            s->cancel_ok++;
    for (int i = 0; i < VICTIMS; i++)
        submit(s, on_victim, &s->victims[i]);
    submit(s, on_driver, NULL);
    /* Rolling most of the time; forced now and then, which kills the
     * running task (perhaps the next driver: it is answered all the
     * same, and its answer drives the next round). */
    assert_int_equal(th_host_restart(s->h, "p", s->rounds % 16 == 0), 0);
}

static void test_callback_cancels_submits_and_restarts_for_ten_thousand_rounds(
    void **state)
{
    struct storm s = {.cap = (size_t)ROUNDS * (VICTIMS + 1) + 16};
    s.answers = calloc(s.cap, 1);
    assert_non_null(s.answers);
    s.h = host_with_echo(1, 2);
    submit(&s, on_driver, NULL);
    assert_int_equal(th_host_wait(s.h, 600.0), 0);
    assert_int_equal(s.rounds, ROUNDS);
    assert_int_equal(s.answered, s.submitted);
    assert_int_equal(s.twice, 0);
    assert_int_equal(s.bad, 0);
    assert_true(s.cancel_ok > 0);
    assert_int_equal(th_host_pending(s.h), 0);
    th_host_close(s.h, TH_CLOSE_GRACEFUL);
    free(s.answers);
}

struct nested {
    th_host *h;
    int step, wait, call, done;
    size_t pending;
};

static void on_try_loop(const th_result *r, void *arg)
{
    struct nested *n = arg;
    th_result out;
    n->step = th_host_step(n->h, 0);
    n->wait = th_host_wait(n->h, 0.1);
    n->call = th_host_call(n->h, "p", "echo", "y", 1, NULL, &out);
    n->pending = th_host_pending(n->h);
    n->done = 1;
}

static void test_callback_cannot_run_the_loop_from_inside_itself(void **state)
{
    struct nested n = {0};
    n.h = host_with_echo(1, 1);
    assert_int_equal(th_host_submit(n.h, "p", "echo", "x", 1, NULL,
                                    on_try_loop, &n, NULL),
                     0);
    assert_int_equal(th_host_wait(n.h, 30.0), 0);
    assert_int_equal(n.done, 1);
    assert_int_equal(n.step, TH_EBUSY);
    assert_int_equal(n.wait, TH_EBUSY);
    assert_int_equal(n.call, TH_EBUSY);
    assert_int_equal(n.pending, 1); /* itself, answered when it returns */
    th_host_close(n.h, TH_CLOSE_GRACEFUL);
}

struct closer {
    th_host *h;
    int others, shut;
};

static void on_other(const th_result *r, void *arg)
{
    struct closer *c = arg;
    c->others++;
}

static void on_shut(const th_result *r, void *arg)
{
    struct closer *c = arg;
    th_host_shutdown(c->h, TH_CLOSE_FORCE);
    c->shut = 1;
}

static void test_callback_may_shut_the_host_down(void **state)
{
    struct closer c = {0};
    c.h = host_with_echo(1, 1);
    assert_int_equal(th_host_submit(c.h, "p", "echo", "x", 1, NULL, on_shut,
                                    &c, NULL),
                     0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(th_host_submit(c.h, "p", "echo", "z", 1, NULL,
                                        on_other, &c, NULL),
                         0);
    for (int i = 0; i < 10000 && !th_host_stopped(c.h); i++)
        assert_int_equal(th_host_step(c.h, 100), 0);
    assert_true(th_host_stopped(c.h));
    assert_int_equal(c.shut, 1);
    assert_int_equal(c.others, 20); /* each answered once, run or cancelled */
    th_host_close(c.h, TH_CLOSE_FORCE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_callback_cancels_submits_and_restarts_for_ten_thousand_rounds),
        cmocka_unit_test(test_callback_cannot_run_the_loop_from_inside_itself),
        cmocka_unit_test(test_callback_may_shut_the_host_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
