/* test_busy_poll.c - busy polling, the opt-in wait without sleep: a pool's
 * busy_poll (the daemon's loop and its workers poll for what comes next)
 * and th_client_set_busy_poll() (the client polls for its answers), end to
 * end through taskhostd. Tasks one at a time are answered right; cancel,
 * task timeouts, worker crashes, clients that leave and restarts work as
 * without it; every task gets exactly one answer; an idle daemon and its
 * workers stop polling and use no CPU; the key is checked and reloads live.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness.h"
#include "taskhost_host.h"

/* Windows long enough that a poll, not a wake-up, catches the next event
 * even on a slow machine, which is what these tests are about. */
#define POOL_POLL "\"2ms\""
#define CLIENT_POLL 0.002

static const char pools[] =
    "plugins = (\n"
    "  { name = \"echo\"; path = \"" PLUGINS "/echo.so\"; },\n"
    "  { name = \"sleep\"; path = \"" PLUGINS "/sleep.so\"; },\n"
    "  { name = \"crash\"; path = \"" PLUGINS "/crash.so\"; }\n"
    ");\n"
    "pools = (\n"
    "  { name = \"echo\"; plugin = \"echo\"; min_workers = 2;"
    "    max_workers = 2; busy_poll = " POOL_POLL "; },\n"
    "  { name = \"sleep\"; plugin = \"sleep\"; min_workers = 1;"
    "    max_workers = 1; task_timeout = 0.3; kill_grace = 0.2;"
    "    busy_poll = " POOL_POLL "; },\n"
    "  { name = \"crash\"; plugin = \"crash\"; min_workers = 1;"
    "    max_workers = 1; busy_poll = " POOL_POLL "; }\n"
    ");\n";

static int setup(void **state)
{
    struct hx *t = malloc(sizeof *t);

    td_init(t, "test_busy_poll");
    td_write_conf(t, NULL, pools);
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

static th_client *poll_client(const struct hx *t)
{
    th_client *c = td_connect(t);

    assert_int_equal(th_client_set_busy_poll(c, CLIENT_POLL), 0);
    return c;
}

/* Calls pool/task once; returns the state and leaves the output in out. */
static th_state call(th_client *c, const char *pool, const char *task,
                     const char *in, char *out, size_t outlen)
{
    th_result r;

    assert_int_equal(th_client_call(c, pool, task, in, strlen(in), NULL, &r),
                     0);
    if (out != NULL)
        snprintf(out, outlen, "%s", (const char *)r.data);
    th_client_result_free(&r);
    return r.state;
}

/* What the callbacks saw of a batch of tasks, by tag. */
#define MANY 400

struct tally {
    int calls[MANY + 64];
    th_state state[MANY + 64];
    uint64_t first_tag;
};

struct one {
    struct tally *tally;
    int i;
};

static void count(const th_result *r, void *arg)
{
    struct one *o = arg;

    o->tally->calls[o->i]++;
    o->tally->state[o->i] = r->state;
}

/* ---- answers ---- */

static void one_at_a_time_answers_right(void **state)
{
    th_client *c = poll_client(*state);
    char in[32], out[64];

    for (int i = 0; i < 2000; i++) {
        snprintf(in, sizeof in, "task %d", i);
        assert_int_equal(call(c, "echo", "echo", in, out, sizeof out),
                         TH_STATE_OK);
        assert_string_equal(out, in);
    }
    th_client_close(c);
}

/* A client that does not poll is served by polling pools as ever, and a
 * polling client by pools that do not (the sleep pool's 0 ms tasks). */
static void polling_and_sleeping_sides_mix(void **state)
{
    th_client *plain = td_connect(*state), *polling = poll_client(*state);
    char out[64];

    for (int i = 0; i < 200; i++) {
        assert_int_equal(call(plain, "echo", "echo", "a", out, sizeof out),
                         TH_STATE_OK);
        assert_int_equal(call(polling, "echo", "echo", "b", out, sizeof out),
                         TH_STATE_OK);
        assert_string_equal(out, "b");
    }
    th_client_close(plain);
    th_client_close(polling);
}

/* ---- the paths that end a task otherwise ---- */

static void cancel_of_a_running_task_is_answered_once(void **state)
{
    th_client *c = poll_client(*state);
    struct tally *tl = calloc(1, sizeof *tl);
    struct one o[2] = {{tl, 0}, {tl, 1}};
    uint64_t tag;
    char out[64];

    /* The worker polled after its last task; this one reaches it then. */
    assert_int_equal(call(c, "sleep", "sleep", "0", out, sizeof out),
                     TH_STATE_OK);
    assert_int_equal(th_client_submit(c, "sleep", "sleep", "5000", 4, NULL,
                                      count, &o[0], &tag),
                     0);
    assert_int_equal(th_client_submit(c, "sleep", "sleep", "0", 1, NULL,
                                      count, &o[1], NULL),
                     0);
    th_client_step(c, 50);
    double t0 = hx_now();
    assert_int_equal(th_client_cancel(c, tag), 0);
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    assert_true(hx_now() - t0 < 4.0);
    assert_int_equal(tl->calls[0], 1);
    assert_int_equal(tl->state[0], TH_STATE_CANCELLED);
    assert_int_equal(tl->calls[1], 1);
    assert_int_equal(tl->state[1], TH_STATE_OK);
    assert_int_equal(call(c, "sleep", "sleep", "0", out, sizeof out),
                     TH_STATE_OK);
    th_client_close(c);
    free(tl);
}

static void task_timeout_is_answered_once(void **state)
{
    th_client *c = poll_client(*state);
    struct tally *tl = calloc(1, sizeof *tl);
    struct one o = {tl, 0};
    char out[64];

    assert_int_equal(th_client_submit(c, "sleep", "sleep", "5000", 4, NULL,
                                      count, &o, NULL),
                     0);
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    assert_int_equal(tl->calls[0], 1);
    assert_int_equal(tl->state[0], TH_STATE_TIMEOUT);
    for (int i = 0; i < 50; i++)
        assert_int_equal(call(c, "sleep", "sleep", "0", out, sizeof out),
                         TH_STATE_OK);
    th_client_close(c);
    free(tl);
}

static void worker_crash_is_answered_once(void **state)
{
    th_client *c = poll_client(*state);
    struct tally *tl = calloc(1, sizeof *tl);
    struct one o[3] = {{tl, 0}, {tl, 1}, {tl, 2}};

    /* Twice in a row: the second goes to the worker started after the
     * first crash, the third to the one after that. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(th_client_submit(c, "crash", "segv", "", 0, NULL,
                                          count, &o[i], NULL),
                         0);
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl->calls[i], 1);
        assert_int_equal(tl->state[i], TH_STATE_CRASHED);
    }
    char out[64];
    for (int i = 0; i < 50; i++)
        assert_int_equal(call(c, "echo", "echo", "x", out, sizeof out),
                         TH_STATE_OK);
    th_client_close(c);
    free(tl);
}

/* A client that leaves with a task running on a polling pool: the task is
 * stopped, and the next client is served as soon as the worker is back. */
static void client_that_leaves_frees_the_worker(void **state)
{
    th_client *gone = poll_client(*state), *next = poll_client(*state);
    char out[64];

    assert_int_equal(th_client_submit(gone, "sleep", "sleep", "60000", 5, NULL,
                                      NULL, NULL, NULL),
                     0);
    th_client_step(gone, 50);
    th_client_close(gone);
    double t0 = hx_now();
    assert_int_equal(call(next, "sleep", "sleep", "0", out, sizeof out),
                     TH_STATE_OK);
    assert_true(hx_now() - t0 < 10.0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(call(next, "echo", "echo", "y", out, sizeof out),
                         TH_STATE_OK);
    th_client_close(next);
}

/* Many tasks of every ending, some in flight together, some one at a
 * time: each callback runs once. */
static void every_task_gets_one_answer(void **state)
{
    th_client *c = poll_client(*state);
    struct tally *tl = calloc(1, sizeof *tl);
    struct one *o = calloc(MANY, sizeof *o);
    uint64_t tag = 0;

    for (int i = 0; i < MANY; i++) {
        const char *pool = i % 50 == 7 ? "crash" : i % 3 ? "echo" : "sleep";
        const char *task = i % 50 == 7 ? "segv" : i % 3 ? "echo" : "sleep";
        const char *in = i % 100 == 30 ? "5000" : "0";
        o[i] = (struct one){tl, i};
        assert_int_equal(th_client_submit(c, pool, task, in, strlen(in), NULL,
                                          count, &o[i], &tag),
                         0);
        if (i % 100 == 30) /* cancelled, running or still queued */
            assert_int_equal(th_client_cancel(c, tag), 0);
        if (i % 4 == 0) /* one at a time for a while */
            assert_int_equal(th_client_wait(c, DEADLINE), 0);
    }
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(tl->calls[i], 1);
        if (i % 100 == 30)
            assert_int_equal(tl->state[i], TH_STATE_CANCELLED);
        else if (i % 50 == 7)
            assert_int_equal(tl->state[i], TH_STATE_CRASHED);
        else
            assert_int_equal(tl->state[i], TH_STATE_OK);
    }
    th_client_close(c);
    free(o);
    free(tl);
}

/* A restart stops workers that poll for their next task: by the STOP
 * frame when graceful, by SIGTERM when forced; both promptly. */
static void restart_stops_polling_workers(void **state)
{
    th_client *c = poll_client(*state);
    char out[64];

    for (int force = 0; force < 2; force++) {
        assert_int_equal(call(c, "echo", "echo", "z", out, sizeof out),
                         TH_STATE_OK);
        double t0 = hx_now();
        assert_int_equal(th_client_restart(c, "echo", force), 0);
        assert_int_equal(call(c, "echo", "echo", "z", out, sizeof out),
                         TH_STATE_OK);
        assert_true(hx_now() - t0 < 5.0);
    }
    th_client_close(c);
}

/* ---- idle ---- */

/* Nanoseconds `pid` ran (/proc/PID/schedstat), 0 when gone. */
static long long cpu_ns(pid_t pid)
{
    char path[64];
    long long ns = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    if (fscanf(f, "%lld", &ns) != 1)
        ns = 0;
    fclose(f);
    return ns;
}

static pid_t parent_of(pid_t pid)
{
    char path[64], line[512];
    int ppid = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    char *paren = got ? strrchr(line, ')') : NULL;
    if (paren == NULL || sscanf(paren + 2, "%*c %d", &ppid) != 1)
        return -1;
    return (pid_t)ppid;
}

/* CPU nanoseconds of the daemon and every process below it (spawners,
 * workers); *n: how many. */
static long long daemon_cpu_ns(pid_t root, int *n)
{
    long long sum = cpu_ns(root);
    DIR *d = opendir("/proc");
    struct dirent *e;

    *n = 1;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 1 || pid == root)
            continue;
        for (pid_t p = parent_of(pid); p > 1; p = parent_of(p)) {
            if (p == root) {
                sum += cpu_ns(pid);
                (*n)++;
                break;
            }
        }
    }
    closedir(d);
    return sum;
}

/* After tasks that set every poll going (daemon, workers), the windows
 * lapse: over an idle second the daemon and its processes use next to no
 * CPU. A process left polling would use most of a CPU: the bound is
 * generous for slow and sanitized builds, and far below that. */
static void idle_daemon_and_workers_use_no_cpu(void **state)
{
    struct hx *t = *state;
    th_client *c = poll_client(t);
    char out[64];
    int before_n, after_n;

    for (int i = 0; i < 500; i++)
        assert_int_equal(call(c, i % 2 ? "echo" : "sleep", i % 2 ? "echo" : "sleep",
                              "0", out, sizeof out),
                         TH_STATE_OK);
    th_client_close(c);
    hx_pause_ms(100); /* the windows are 2 ms */
    long long before = daemon_cpu_ns(t->pid, &before_n);
    hx_pause_ms(1000);
    long long after = daemon_cpu_ns(t->pid, &after_n);
    assert_true(before_n >= 5); /* daemon, 3 spawners, 4 workers */
    assert_int_equal(before_n, after_n);
    double ms = (double)(after - before) / 1e6;
    if (ms > 30.0)
        fail_msg("%d processes used %.1f ms of CPU in an idle second",
                 after_n, ms);
}

/* ---- the settings ---- */

static void client_busy_poll_is_bounded(void **state)
{
    th_client *c = td_connect(*state);

    assert_int_equal(th_client_set_busy_poll(c, -1), TH_EINVAL);
    assert_int_equal(th_client_set_busy_poll(c, 0.5), TH_EINVAL);
    assert_int_equal(th_client_set_busy_poll(c, 0.01), 0);
    assert_int_equal(th_client_set_busy_poll(c, 0), 0);
    th_client_close(c);
}

/* The client's poll ends with the step's own timeout: a wait shorter than
 * the window still returns in time, and one longer sleeps after it. */
static void client_poll_keeps_the_wait_timeout(void **state)
{
    th_client *c = td_connect(*state);
    char out[64];

    assert_int_equal(th_client_set_busy_poll(c, 0.01), 0);
    assert_int_equal(th_client_submit(c, "sleep", "sleep", "300", 3, NULL,
                                      NULL, NULL, NULL),
                     0);
    double t0 = hx_now();
    assert_int_equal(th_client_wait(c, 0.005), TH_ETIMEDOUT);
    assert_true(hx_now() - t0 < 0.25);
    assert_int_equal(th_client_wait(c, 0.05), TH_ETIMEDOUT);
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    assert_int_equal(call(c, "echo", "echo", "w", out, sizeof out),
                     TH_STATE_OK);
    th_client_close(c);
}

/* Runs taskhostd --check-config on a pool with busy_poll = `value`;
 * returns its exit status and leaves its output in the log file. */
static int check_config(struct hx *t, const char *value)
{
    char rest[1024], *argv[] = {DAEMON, "--check-config", "-c", t->conf, NULL};
    FILE *f = fopen(t->log, "w");

    assert_non_null(f);
    fclose(f);
    snprintf(rest, sizeof rest,
             "plugins = ( { name = \"echo\"; path = \"" PLUGINS
             "/echo.so\"; } );\n"
             "pools = ( { name = \"e\"; plugin = \"echo\"; busy_poll = %s; }"
             " );\n",
             value);
    td_write_conf(t, NULL, rest);
    int status = td_wait_exit(td_spawn(argv, t->out, t->log));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void busy_poll_key_is_checked(void **state)
{
    struct hx t;

    (void)state;
    td_init(&t, "test_busy_poll_conf");
    assert_int_equal(check_config(&t, "\"50us\""), 0);
    assert_int_equal(check_config(&t, "0.005"), 0);
    assert_int_not_equal(check_config(&t, "\"20ms\""), 0);
    assert_non_null(strstr(hx_read_file(t.log), "busy_poll"));
    assert_int_not_equal(check_config(&t, "\"50 parsecs\""), 0);
    td_cleanup(&t);
}

/* busy_poll reloads live: the workers stay, tasks carry the new window. */
static void busy_poll_reloads_without_restart(void **state)
{
    struct hx *t = *state;
    th_client *c = td_connect(t);
    char *before = NULL, *after = NULL, err[256], out[64];

    assert_int_equal(th_client_stats(c, "echo", TH_STATS_JSON, &before), 0);
    char *conf = strdup(pools), *at;
    while ((at = strstr(conf, POOL_POLL)) != NULL)
        memcpy(at, "   0 ", 5);
    td_write_conf(t, NULL, conf);
    assert_int_equal(th_client_reload(c, err, sizeof err), 0);
    assert_int_equal(call(c, "echo", "echo", "v", out, sizeof out),
                     TH_STATE_OK);
    assert_int_equal(th_client_stats(c, "echo", TH_STATS_JSON, &after), 0);
    /* Same workers: their pids are in both. */
    const char *pid = strstr(before, "\"pid\":");
    assert_non_null(pid);
    char key[32];
    snprintf(key, sizeof key, "%.*s", (int)strcspn(pid, ",}"), pid);
    assert_non_null(strstr(after, key));
    td_write_conf(t, NULL, pools);
    assert_int_equal(th_client_reload(c, err, sizeof err), 0);
    free(conf);
    free(before);
    free(after);
    th_client_close(c);
}

/* ---- the embedding API: the host's own loop polls ---- */

static void embedded_pool_polls_and_ends_tasks_once(void **state)
{
    th_host *h;
    th_pool_opts o;
    char err[256];
    th_result r;
    struct tally *tl = calloc(1, sizeof *tl);
    struct one o2[3] = {{tl, 0}, {tl, 1}, {tl, 2}};
    uint64_t id;

    (void)state;
    assert_int_equal(th_host_new(&h), 0);
    assert_int_equal(th_host_add_plugin(h, "echo", PLUGINS "/echo.so", err,
                                        sizeof err), 0);
    assert_int_equal(th_host_add_plugin(h, "sleep", PLUGINS "/sleep.so", err,
                                        sizeof err), 0);
    const char *names[] = {"echo", "sleep"};
    for (int i = 0; i < 2; i++) {
        th_pool_opts_init(&o);
        o.name = o.plugin = names[i];
        o.min_workers = o.max_workers = 1;
        o.task_timeout = 0.3;
        o.busy_poll = 0.002;
        assert_int_equal(th_host_add_pool(h, &o, err, sizeof err), 0);
    }
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(th_host_call(h, "echo", "echo", "e", 1, NULL, &r), 0);
        assert_int_equal(r.state, TH_STATE_OK);
        assert_string_equal(r.data, "e");
        th_result_free(&r);
    }
    /* cancelled while running, timed out, then served */
    assert_int_equal(th_host_submit(h, "sleep", "sleep", "5000", 4, NULL,
                                    count, &o2[0], &id), 0);
    while (th_host_task_state(h, id) != TH_RUNNING)
        assert_int_equal(th_host_step(h, 10), 0);
    assert_int_equal(th_host_cancel(h, id), 0);
    assert_int_equal(th_host_submit(h, "sleep", "sleep", "5000", 4, NULL,
                                    count, &o2[1], NULL), 0);
    assert_int_equal(th_host_submit(h, "sleep", "sleep", "0", 1, NULL,
                                    count, &o2[2], NULL), 0);
    assert_int_equal(th_host_wait(h, DEADLINE), 0);
    assert_int_equal(tl->calls[0], 1);
    assert_int_equal(tl->state[0], TH_STATE_CANCELLED);
    assert_int_equal(tl->calls[1], 1);
    assert_int_equal(tl->state[1], TH_STATE_TIMEOUT);
    assert_int_equal(tl->calls[2], 1);
    assert_int_equal(tl->state[2], TH_STATE_OK);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    free(tl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_at_a_time_answers_right),
        cmocka_unit_test(polling_and_sleeping_sides_mix),
        cmocka_unit_test(cancel_of_a_running_task_is_answered_once),
        cmocka_unit_test(task_timeout_is_answered_once),
        cmocka_unit_test(worker_crash_is_answered_once),
        cmocka_unit_test(client_that_leaves_frees_the_worker),
        cmocka_unit_test(every_task_gets_one_answer),
        cmocka_unit_test(restart_stops_polling_workers),
        cmocka_unit_test(idle_daemon_and_workers_use_no_cpu),
        cmocka_unit_test(client_busy_poll_is_bounded),
        cmocka_unit_test(client_poll_keeps_the_wait_timeout),
        cmocka_unit_test(busy_poll_reloads_without_restart),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(busy_poll_key_is_checked),
        cmocka_unit_test(embedded_pool_polls_and_ends_tasks_once),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    return failed + cmocka_run_group_tests(alone, NULL, NULL);
}
