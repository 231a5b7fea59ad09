/* test_spare.c - the spawner a host starts ahead of need: taken by a pool
 * start and followed by another, not taken when started under other
 * conditions, replaced after a back-off when it dies, logging where the
 * host logs when it is taken, gone with the host. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "host.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "spawner.h"
#include "taskhost_host.h"

#define PLUGIN(name) TOP_BUILDDIR "/plugins/.libs/" name ".so"
#define TEST_PLUGIN(name) TOP_BUILDDIR "/tests/plugins/.libs/" name ".so"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static th_host *host_with_plugin(const char *name, const char *path)
{
    th_host *h;
    char err[512] = "";
    assert_int_equal(th_host_new(&h), 0);
    if (th_host_add_plugin(h, name, path, err, sizeof err) < 0)
        fail_msg("add_plugin: %s", err);
    return h;
}

static void add_pool(th_host *h, const char *plugin)
{
    th_pool_opts o;
    char err[512] = "";
    th_pool_opts_init(&o);
    o.name = "p";
    o.plugin = plugin;
    o.min_workers = o.max_workers = 1;
    if (th_host_add_pool(h, &o, err, sizeof err) < 0)
        fail_msg("add_pool: %s", err);
}

static th_state call(th_host *h, const char *task, char *out, size_t len)
{
    th_result r;
    assert_int_equal(th_host_call(h, "p", task, "x", 1, NULL, &r), 0);
    snprintf(out, len, "%.*s", (int)r.len, (const char *)r.data);
    th_state st = r.state;
    th_result_free(&r);
    return st;
}

static pid_t spare_pid(const th_host *h)
{
    return h->spare.sp != NULL ? h->spare.sp->pid : -1;
}

static pid_t pool_spawner_pid(const th_host *h)
{
    struct pool *p = host_find_pool(h, "p");
    return p != NULL && p->spawner != NULL ? p->spawner->pid : -1;
}

/* Steps the host until it has a spare other than `not`, at most `limit`
 * seconds; returns its pid or -1. */
static pid_t await_spare(th_host *h, pid_t not, double limit)
{
    double end = now_s() + limit;
    while (now_s() < end) {
        pid_t pid = spare_pid(h);
        if (pid > 0 && pid != not)
            return pid;
        th_host_step(h, 10);
    }
    return -1;
}

/* Children of this process, zombies too. */
static int children(void)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    char path[64], line[512];
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        int pid = atoi(e->d_name);
        if (pid <= 0)
            continue;
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        char *paren = fgets(line, sizeof line, f) ? strrchr(line, ')') : NULL;
        int ppid = 0;
        if (paren != NULL && sscanf(paren + 2, "%*c %d", &ppid) == 1 &&
            ppid == (int)getpid())
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

static void a_host_with_a_plugin_keeps_an_idle_spare(void **state)
{
    (void)state;
    th_host *h = host_with_plugin("echo", PLUGIN("echo"));
    pid_t pid = spare_pid(h);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, 0), 0);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void a_pool_start_takes_the_spare_and_another_follows(void **state)
{
    (void)state;
    char out[64];
    th_host *h = host_with_plugin("echo", PLUGIN("echo"));
    pid_t spare = spare_pid(h);
    add_pool(h, "echo");
    assert_int_equal(call(h, "echo", out, sizeof out), TH_STATE_OK);
    assert_string_equal(out, "x");
    assert_int_equal(pool_spawner_pid(h), spare);
    pid_t next = await_spare(h, spare, 5.0);
    assert_true(next > 0);
    assert_int_not_equal(next, spare);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* The environment is what a spawner inherits at its exec: a spare
 * started before it changed is not taken, and is reaped. */
static void a_spare_from_before_a_change_of_environment_is_not_taken(
    void **state)
{
    (void)state;
    char out[64];
    th_host *h = host_with_plugin("echo", PLUGIN("echo"));
    pid_t spare = spare_pid(h);
    assert_true(spare > 0);
    setenv("TASKHOST_TEST_SPARE", "1", 1);
    add_pool(h, "echo");
    th_state st = call(h, "echo", out, sizeof out);
    unsetenv("TASKHOST_TEST_SPARE");
    assert_int_equal(st, TH_STATE_OK);
    assert_true(pool_spawner_pid(h) > 0);
    assert_int_not_equal(pool_spawner_pid(h), spare);
    errno = 0;
    assert_int_equal(waitpid(spare, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* Kills the spare; returns the delay before the next one starts. */
static double kill_spare(th_host *h)
{
    pid_t pid = spare_pid(h);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    double end = now_s() + 5.0;
    while (spare_pid(h) == pid && now_s() < end)
        th_host_step(h, 10);
    assert_int_equal(spare_pid(h), -1);
    assert_true(loop_timer_armed(&h->spare.timer));
    return h->spare.timer.when - loop_now(h->loop);
}

static void a_spare_that_dies_is_replaced_after_a_growing_back_off(
    void **state)
{
    (void)state;
    th_host *h = host_with_plugin("echo", PLUGIN("echo"));
    double first = kill_spare(h);
    assert_true(first > 0.9 && first <= 1.0);
    assert_true(await_spare(h, -1, 5.0) > 0);
    double second = kill_spare(h);
    assert_true(second > 1.9 && second <= 2.0);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* The log's descriptor comes with the pool, not with the exec: a spare
 * started before the log file was reopened (rotation) logs into the new
 * file once taken, as the workers do. */
static void a_taken_spare_logs_into_the_log_file_of_the_moment(void **state)
{
    (void)state;
    char dir[] = "/tmp/th-spare-XXXXXX", log[64], old[64], out[4096];
    char err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(log, sizeof log, "%s/host.log", dir);
    snprintf(old, sizeof old, "%s/host.log.1", dir);
    assert_int_equal(log_open(log, TH_LOG_INFO, err, sizeof err), 0);
    th_host *h = host_with_plugin("whoami", TEST_PLUGIN("whoami"));
    assert_true(spare_pid(h) > 0);
    assert_int_equal(rename(log, old), 0);
    assert_int_equal(log_reopen(), 0);
    add_pool(h, "whoami");
    th_state st = call(h, "fds", out, sizeof out);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    log_close();
    unlink(log);
    unlink(old);
    rmdir(dir);
    assert_int_equal(st, TH_STATE_OK);
    assert_non_null(strstr(out, log));
    assert_null(strstr(out, old));
}

/* A host that ends orphans (taskhostd) kills every child it does not
 * know when a spawner dies: the spare is one it knows, and the pool
 * starts again on it. */
static void a_pool_whose_spawner_died_starts_again_on_the_spare(void **state)
{
    (void)state;
    char out[64];
    th_host *h = host_with_plugin("echo", PLUGIN("echo"));
    assert_int_equal(host_adopt_orphans(h), 0);
    add_pool(h, "echo");
    assert_int_equal(call(h, "echo", out, sizeof out), TH_STATE_OK);
    pid_t spawner = pool_spawner_pid(h);
    pid_t spare = await_spare(h, spawner, 5.0);
    assert_true(spare > 0);
    assert_int_equal(kill(spawner, SIGKILL), 0);
    double end = now_s() + 5.0;
    while (pool_spawner_pid(h) == spawner && now_s() < end)
        th_host_step(h, 10);
    assert_int_equal(call(h, "echo", out, sizeof out), TH_STATE_OK);
    assert_int_equal(pool_spawner_pid(h), spare);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void closing_the_host_leaves_no_spare_behind(void **state)
{
    (void)state;
    th_host *h = host_with_plugin("echo", PLUGIN("echo"));
    assert_true(spare_pid(h) > 0);
    assert_int_equal(children(), 1);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    assert_int_equal(children(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_host_with_a_plugin_keeps_an_idle_spare),
        cmocka_unit_test(a_pool_start_takes_the_spare_and_another_follows),
        cmocka_unit_test(
            a_spare_from_before_a_change_of_environment_is_not_taken),
        cmocka_unit_test(
            a_spare_that_dies_is_replaced_after_a_growing_back_off),
        cmocka_unit_test(a_taken_spare_logs_into_the_log_file_of_the_moment),
        cmocka_unit_test(
            a_pool_whose_spawner_died_starts_again_on_the_spare),
        cmocka_unit_test(closing_the_host_leaves_no_spare_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
