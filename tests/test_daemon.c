/* test_daemon.c - taskhostd end to end: the real daemon binary on a
 * temporary config, driven through the client library, taskhostctl, raw
 * frames and signals. Readiness and every wait are polled with a deadline;
 * nothing sleeps to synchronise.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "raw_client.h"

#define ECHO2 TOP_BUILDDIR "/tests/plugins/.libs/echo2.so"

static const char default_pools[] =
    "pools = (\n"
    "  { name = \"echo\"; plugin = \"echo\"; min_workers = 2; max_workers = 2;"
    "    max_queue = 100000; },\n"
    "  { name = \"sleep\"; plugin = \"sleep\"; min_workers = 1;"
    "    max_workers = 1; max_queue = 100; task_timeout = 0.0; }\n"
    ");\n";

/* Writes t->conf: a host group with `host_extra`, the example plugins and
 * `pools` (default_pools when NULL). */
static void write_conf(struct hx *t, const char *host_extra, const char *pools,
                       const char *echo_path)
{
    FILE *f = fopen(t->conf, "w");

    assert_non_null(f);
    fprintf(f,
            "host: { socket = \"%s\"; log = \"%s\"; log_level = \"info\";\n"
            "        %s %s };\n"
            "plugins = (\n"
            "  { name = \"echo\"; path = \"%s\"; },\n"
            "  { name = \"sleep\"; path = \"" PLUGINS "/sleep.so\"; }\n"
            ");\n%s",
            t->sock, t->log,
            host_extra && strstr(host_extra, "shutdown_timeout")
                ? ""
                : "shutdown_timeout = 10.0;",
            host_extra ? host_extra : "",
            echo_path ? echo_path : PLUGINS "/echo.so",
            pools ? pools : default_pools);
    fclose(f);
}

/* When set, the RLIMIT_NOFILE of the processes spawn() starts. */
static const struct rlimit *spawn_nofile;

/* Runs argv with stdin from `in` (NULL: /dev/null), stdout and stderr
 * into files of t->dir; returns the child's pid. */
static pid_t spawn(struct hx *t, char *const argv[], const char *in,
                   const char *out, const char *err, char *const env[])
{
    (void)t;
    return td_spawn_proc(argv, &(struct hx_proc){.in = in,
                                                 .out = out,
                                                 .err = err,
                                                 .env = env,
                                                 .nofile = spawn_nofile});
}

/* Starts the daemon with extra environment `env` (NULL: ours) and polls
 * until it answers a ping. */
static void td_start_env(struct hx *t, char *const env[])
{
    td_start_proc(t, &(struct hx_proc){.env = env, .nofile = spawn_nofile});
}

static int setup(void **state)
{
    struct hx *t = malloc(sizeof *t);

    td_init(t, "test_daemon");
    write_conf(t, NULL, NULL, NULL);
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

static int file_contains(const char *path, const char *needle)
{
    return strstr(hx_read_file(path), needle) != NULL;
}

/* ---- --check-config ---- */

static int run_check(struct hx *t)
{
    char *argv[] = {DAEMON, "--check-config", "-c", t->conf, NULL};
    char out[160];
    int status;

    snprintf(out, sizeof out, "%s/check.out", t->dir);
    status = td_wait_exit(spawn(t, argv, NULL, out, t->log, NULL));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void check_config_accepts_a_good_config(void **state)
{
    struct hx *t = *state;

    assert_int_equal(run_check(t), 0);
    assert_false(access(t->sock, F_OK) == 0); /* nothing was started */
}

static void check_config_refuses_an_unknown_key(void **state)
{
    struct hx *t = *state;

    write_conf(t, "no_such_key = 1;", NULL, NULL);
    assert_int_equal(run_check(t), 1);
    assert_true(file_contains(t->log, "no_such_key"));
}

static void check_config_refuses_a_plugin_without_the_symbol(void **state)
{
    struct hx *t = *state;

    write_conf(t, NULL, NULL, TOP_BUILDDIR "/tests/plugins/.libs/nosym.so");
    assert_int_equal(run_check(t), 1);
    assert_true(file_contains(t->log, "nosym.so"));
}

/* The plugin's own check() of a pool's settings runs for --check-config:
 * the line names the file, the pool, the plugin and the plugin's reason. */
static void check_config_runs_the_plugins_check_of_settings(void **state)
{
    struct hx *t = *state;

    write_conf(t, NULL,
               "pools = ( { name = \"h\"; plugin = \"echo\";\n"
               "  settings = { rounds = 0; }; } );\n",
               PLUGINS "/hash.so");
    assert_int_equal(run_check(t), 1);
    assert_true(file_contains(t->log, "pools[0]: plugin 'echo'"));
    assert_true(file_contains(t->log, "hash.so"));
    assert_true(file_contains(t->log, "pool 'h': rounds must be >= 1, got 0"));
    assert_true(file_contains(t->log, t->conf));
}

/* ---- submitting ---- */

static void library_call_returns_the_output(void **state)
{
    struct hx *t = *state;
    th_client *c;
    th_result r;

    td_start(t);
    c = td_connect(t);
    assert_int_equal(th_client_call(c, "echo", "echo", "hello", 5, NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_int_equal(r.len, 5);
    assert_memory_equal(r.data, "hello", 5);
    th_client_result_free(&r);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* Runs taskhostctl with args; stdin from `in`; returns its exit status
 * and leaves its stdout and stderr in t->dir/ctl.out and ctl.err. */
static int run_ctl(struct hx *t, const char *in, const char *a1,
                   const char *a2, const char *a3, const char *a4)
{
    char *argv[] = {CTL, "-s", t->sock, (char *)a1, (char *)a2, (char *)a3,
                    (char *)a4, NULL};
    char out[160], err[160];
    int status;

    snprintf(out, sizeof out, "%s/ctl.out", t->dir);
    snprintf(err, sizeof err, "%s/ctl.err", t->dir);
    unlink(err);
    status = td_wait_exit(spawn(t, argv, in, out, err, NULL));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *dir_file(const struct hx *t, const char *name)
{
    static char path[160];

    snprintf(path, sizeof path, "%s/%s", t->dir, name);
    return path;
}

static void taskhostctl_submit_prints_the_output(void **state)
{
    struct hx *t = *state;
    char in[160];
    FILE *f;

    snprintf(in, sizeof in, "%s/in.txt", t->dir);
    f = fopen(in, "w");
    fputs("payload 123", f);
    fclose(f);
    td_start(t);
    assert_int_equal(run_ctl(t, in, "submit", "echo", "echo", NULL), 0);
    assert_true(file_contains(dir_file(t, "ctl.out"), "payload 123"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* Whether file `path` holds exactly one line. */
static int one_line(const char *path)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;

    if (f)
        fclose(f);
    buf[n] = '\0';
    return n > 0 && strchr(buf, '\n') == buf + n - 1;
}

static void taskhostctl_unknown_command_suggests_the_near_one(void **state)
{
    struct hx *t = *state;

    assert_int_equal(run_ctl(t, NULL, "stat", NULL, NULL, NULL), 2);
    assert_true(file_contains(dir_file(t, "ctl.err"),
                              "taskhostctl: unknown command 'stat' (did you "
                              "mean 'stats'?)\n"));
    assert_true(one_line(dir_file(t, "ctl.err")));
    assert_int_equal(run_ctl(t, NULL, "submit", "--bogus", NULL, NULL), 2);
    assert_true(file_contains(dir_file(t, "ctl.err"),
                              "taskhostctl submit: unknown option '--bogus'"));
    assert_true(one_line(dir_file(t, "ctl.err")));
}

static void taskhostctl_help_prints_a_commands_help(void **state)
{
    struct hx *t = *state;

    assert_int_equal(run_ctl(t, NULL, "help", "submit", NULL, NULL), 0);
    assert_true(file_contains(dir_file(t, "ctl.out"),
                              "Usage: taskhostctl submit POOL TASK"));
    assert_int_equal(run_ctl(t, NULL, "help", NULL, NULL, NULL), 0);
    assert_true(file_contains(dir_file(t, "ctl.out"), "Exit status:"));
}

static void taskhostctl_without_daemon_names_the_socket_and_the_fix(void **state)
{
    struct hx *t = *state;
    char want[200];

    assert_int_equal(run_ctl(t, NULL, "stats", NULL, NULL, NULL), 1);
    snprintf(want, sizeof want, "cannot connect to %s (from -s)", t->sock);
    assert_true(file_contains(dir_file(t, "ctl.err"), want));
    assert_true(file_contains(dir_file(t, "ctl.err"), "TASKHOST_SOCKET"));
    assert_true(one_line(dir_file(t, "ctl.err")));
}

static void taskhostctl_finds_the_socket_in_the_environment(void **state)
{
    struct hx *t = *state;
    char env[200], path[4096];
    char *envp[] = {env, path, NULL};
    char *argv[] = {CTL, "submit", "echo", "echo", NULL};

    snprintf(env, sizeof env, "TASKHOST_SOCKET=%s", t->sock);
    snprintf(path, sizeof path, "PATH=%s",
             getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    td_start(t);
    assert_int_equal(td_wait_exit(spawn(t, argv, NULL, dir_file(t, "ctl.out"),
                                        dir_file(t, "ctl.err"), envp)),
                     0);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void journal_stderr_gets_priorities_and_no_timestamps(void **state)
{
    struct hx *t = *state;
    char env[160], buf[4096];
    char *envp[] = {env, NULL};
    struct stat st;
    FILE *f = fopen(t->conf, "w");
    size_t n;

    assert_non_null(f);
    fprintf(f, "host: { socket = \"%s\"; log = \"stderr\"; };\n"
               "plugins = ( { name = \"echo\"; path = \"" PLUGINS
               "/echo.so\"; } );\n"
               "pools = ( { name = \"echo\"; plugin = \"echo\"; "
               "min_workers = 1; } );\n", t->sock);
    fclose(f);
    fclose(fopen(t->log, "w")); /* the daemon's stderr, made here */
    assert_int_equal(stat(t->log, &st), 0);
    snprintf(env, sizeof env, "JOURNAL_STREAM=%llu:%llu",
             (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    td_start_env(t, envp);
    assert_int_equal(run_ctl(t, NULL, "submit", "echo", "nosuch", NULL), 6);
    assert_int_equal(td_stop(t, SIGTERM), 0);
    f = fopen(t->log, "r");
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* every line starts with a priority, none with a date */
    for (char *line = buf; *line; line = strchr(line, '\n') + 1) {
        assert_true(line[0] == '<' && line[2] == '>');
        assert_null(strchr(line, '\n') == NULL ? line : NULL);
    }
    assert_non_null(strstr(buf, "<6>["));
    assert_null(strstr(buf, " info "));
}

static void taskhostctl_names_the_state_of_a_failed_task(void **state)
{
    struct hx *t = *state;

    td_start(t);
    assert_int_equal(run_ctl(t, NULL, "submit", "nosuchpool", "echo", NULL),
                     6);
    assert_true(file_contains(dir_file(t, "ctl.err"), "rejected"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void taskhostctl_timeout_caps_the_run_time(void **state)
{
    struct hx *t = *state;
    char in[160];
    FILE *f;

    snprintf(in, sizeof in, "%s/in.txt", t->dir);
    f = fopen(in, "w");
    fputs("10000", f); /* ms */
    fclose(f);
    td_start(t);
    assert_int_equal(run_ctl(t, in, "submit", "sleep", "sleep", "--timeout"),
                     2); /* --timeout wants its value */
    assert_int_equal(run_ctl(t, in, "submit", "sleep", "sleep",
                             "--timeout=0.2"),
                     4);
    assert_true(file_contains(dir_file(t, "ctl.err"), "timeout"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void taskhostctl_stats_prints_every_format(void **state)
{
    struct hx *t = *state;

    td_start(t);
    assert_int_equal(run_ctl(t, NULL, "stats", NULL, NULL, NULL), 0);
    assert_true(file_contains(dir_file(t, "ctl.out"), "echo"));
    assert_int_equal(run_ctl(t, NULL, "stats", "echo", "--json", NULL), 0);
    assert_true(file_contains(dir_file(t, "ctl.out"), "{"));
    assert_int_equal(run_ctl(t, NULL, "stats", "--prometheus", NULL, NULL),
                     0);
    assert_true(file_contains(dir_file(t, "ctl.out"), "taskhost_"));
    assert_int_equal(run_ctl(t, NULL, "stats", "nosuchpool", NULL, NULL), 1);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void taskhostctl_control_commands_report_success_and_failure(
    void **state)
{
    struct hx *t = *state;

    td_start(t);
    assert_int_equal(run_ctl(t, NULL, "restart", "echo", NULL, NULL), 0);
    assert_int_equal(run_ctl(t, NULL, "restart", "--all", "--force", NULL),
                     0);
    assert_int_equal(run_ctl(t, NULL, "restart", "nosuchpool", NULL, NULL), 1);
    assert_true(file_contains(dir_file(t, "ctl.err"), "no such pool"));
    assert_int_equal(run_ctl(t, NULL, "reload", NULL, NULL, NULL), 0);
    assert_int_equal(run_ctl(t, NULL, "cancel", "123456", NULL, NULL), 1);
    assert_true(file_contains(dir_file(t, "ctl.err"), "cancel failed"));
    assert_int_equal(run_ctl(t, NULL, "cancel", "abc", NULL, NULL), 2);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void taskhostctl_help_works_for_every_command(void **state)
{
    struct hx *t = *state;
    const char *cmds[] = {"submit", "stats", "restart", "reload", "cancel",
                          "shutdown"};

    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        assert_int_equal(run_ctl(t, NULL, cmds[i], "--help", NULL, NULL), 0);
        assert_true(file_contains(dir_file(t, "ctl.out"), "Usage:"));
    }
    assert_int_equal(run_ctl(t, NULL, "--version", NULL, NULL, NULL), 0);
    assert_int_equal(run_ctl(t, NULL, "frobnicate", NULL, NULL, NULL), 2);
}

/* ---- many clients ---- */

#define NCLIENTS 64
#define NTASKS 1000

/* Inputs are "client:tag": each answer must carry its own request's. */
struct client_state {
    int index;
    int answered;
    int wrong;
};

static void on_echo(const th_result *r, void *arg)
{
    struct client_state *cs = arg;
    char want[32];
    int n = snprintf(want, sizeof want, "%d:%llu", cs->index,
                     (unsigned long long)r->id);

    cs->answered++;
    if (r->state != TH_STATE_OK || r->len != (size_t)n ||
        memcmp(r->data, want, (size_t)n) != 0)
        cs->wrong++;
}

static void many_clients_get_every_answer_matched(void **state)
{
    struct hx *t = *state;
    static th_client *cl[NCLIENTS];
    static struct client_state cs[NCLIENTS];
    struct pollfd pf[NCLIENTS];
    double end;
    int total = 0;

    td_start(t);
    for (int i = 0; i < NCLIENTS; i++) {
        cl[i] = td_connect(t);
        cs[i] = (struct client_state){.index = i};
        for (int k = 1; k <= NTASKS; k++) {
            char in[32];
            int n = snprintf(in, sizeof in, "%d:%d", i, k);
            uint64_t tag;
            assert_int_equal(th_client_submit(cl[i], "echo", "echo", in,
                                              (size_t)n, NULL, on_echo,
                                              &cs[i], &tag),
                             0);
            assert_int_equal(tag, (uint64_t)k);
        }
    }
    end = hx_now() + DEADLINE * 3;
    while (total < NCLIENTS * NTASKS && hx_now() < end) {
        for (int i = 0; i < NCLIENTS; i++) {
            pf[i].fd = th_client_fd(cl[i]);
            pf[i].events = POLLIN | (th_client_want_write(cl[i]) ? POLLOUT : 0);
        }
        poll(pf, NCLIENTS, 100);
        total = 0;
        for (int i = 0; i < NCLIENTS; i++) {
            if (pf[i].revents || th_client_want_write(cl[i]))
                assert_int_equal(th_client_step(cl[i], 0), 0);
            total += cs[i].answered;
        }
    }
    for (int i = 0; i < NCLIENTS; i++) {
        assert_int_equal(cs[i].answered, NTASKS);
        assert_int_equal(cs[i].wrong, 0);
        assert_int_equal(th_client_pending(cl[i]), 0);
        th_client_close(cl[i]);
    }
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- reload ---- */

/* Polls the text stats of `pool` until they hold `needle`. */
static void wait_stats(const struct hx *t, const char *pool,
                       const char *needle)
{
    double end = hx_now() + DEADLINE;
    th_client *c = td_connect(t);
    char *text = NULL;

    for (;;) {
        assert_int_equal(th_client_stats(c, pool, TH_STATS_TEXT, &text), 0);
        if (strstr(text, needle))
            break;
        if (hx_now() > end)
            fail_msg("stats never showed '%s':\n%s", needle, text);
        free(text);
        hx_pause_ms(10);
    }
    free(text);
    th_client_close(c);
}

static const char pools_min3[] =
    "pools = (\n"
    "  { name = \"echo\"; plugin = \"echo\"; min_workers = 3; max_workers = 3;"
    "    max_queue = 100000; },\n"
    "  { name = \"sleep\"; plugin = \"sleep\"; min_workers = 1;"
    "    max_workers = 1; max_queue = 100; task_timeout = 0.0; }\n"
    ");\n";

static void sighup_resizes_a_pool(void **state)
{
    struct hx *t = *state;

    td_start(t);
    wait_stats(t, "echo", "min 2, max 2");
    write_conf(t, NULL, pools_min3, NULL);
    kill(t->pid, SIGHUP);
    wait_stats(t, "echo", "min 3, max 3");
    wait_stats(t, "echo", "3 total");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void copy_file(const char *from, const char *to)
{
    char tmp[200], buf[65536];
    FILE *in = fopen(from, "rb"), *out;
    size_t n;

    assert_non_null(in);
    snprintf(tmp, sizeof tmp, "%s.new", to);
    out = fopen(tmp, "wb");
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
    assert_int_equal(rename(tmp, to), 0); /* a new inode, as an install */
}

static th_state call_state(const struct hx *t, const char *pool,
                           const char *task, const char *in, char *out,
                           size_t outlen)
{
    th_client *c = td_connect(t);
    th_result r;
    th_state s;

    assert_int_equal(th_client_call(c, pool, task, in, strlen(in), NULL, &r),
                     0);
    s = r.state;
    if (out)
        snprintf(out, outlen, "%.*s", (int)r.len, (const char *)r.data);
    th_client_result_free(&r);
    th_client_close(c);
    return s;
}

static void sighup_serves_a_rebuilt_plugin(void **state)
{
    struct hx *t = *state;
    char so[160], out[64] = "";
    double end = hx_now() + DEADLINE;

    snprintf(so, sizeof so, "%s/echo.so", t->dir);
    copy_file(PLUGINS "/echo.so", so);
    write_conf(t, NULL, NULL, so);
    td_start(t);
    assert_int_equal(call_state(t, "echo", "version", "", NULL, 0),
                     TH_STATE_REJECTED); /* 1.0 has no such task */
    copy_file(ECHO2, so);
    kill(t->pid, SIGHUP);
    while (call_state(t, "echo", "version", "", out, sizeof out) !=
           TH_STATE_OK) {
        if (hx_now() > end) {
            hx_show_log(t, 200);
            fail_msg("the rebuilt plugin never served");
        }
        hx_pause_ms(10);
    }
    assert_string_equal(out, "2.0");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void sighup_with_a_broken_config_keeps_serving(void **state)
{
    struct hx *t = *state;
    FILE *f;

    td_start(t);
    f = fopen(t->conf, "w");
    fputs("host: { socket = ; this is not a config\n", f);
    fclose(f);
    kill(t->pid, SIGHUP);
    td_wait_log(t, "reload refused");
    assert_int_equal(call_state(t, "echo", "echo", "still", NULL, 0),
                     TH_STATE_OK);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void reload_request_reports_why_it_was_refused(void **state)
{
    struct hx *t = *state;
    th_client *c;
    char err[512] = "";
    FILE *f;

    td_start(t);
    f = fopen(t->conf, "w");
    fputs("bogus = 1;\n", f);
    fclose(f);
    c = td_connect(t);
    assert_true(th_client_reload(c, err, sizeof err) < 0);
    assert_true(strlen(err) > 0);
    th_client_close(c);
    assert_int_equal(call_state(t, "echo", "echo", "x", NULL, 0), TH_STATE_OK);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- restarts and shutdowns under load ---- */

struct tally {
    int answered;
    int by_state[TH_STATE_COUNT];
    int accepted;
    uint64_t last_id; /* the daemon's id of the last accepted task */
};

static void on_tally(const th_result *r, void *arg)
{
    struct tally *ty = arg;

    ty->answered++;
    if ((unsigned)r->state < TH_STATE_COUNT)
        ty->by_state[r->state]++;
}

static void on_accepted(uint64_t tag, uint64_t id, void *arg)
{
    ((struct tally *)arg)->accepted++;
    ((struct tally *)arg)->last_id = id;
}

/* Steps c until `cond` holds or the deadline passes. */
#define STEP_UNTIL(c, cond)                                                 \
    do {                                                                    \
        double end_ = hx_now() + DEADLINE;                                     \
        while (!(cond) && hx_now() < end_)                                     \
            if (th_client_step((c), 50) < 0)                                \
                break;                                                      \
        assert_true(cond);                                                  \
    } while (0)

static void sigusr1_during_load_loses_no_task(void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    th_client *c;
    int n = 20000;

    td_start(t);
    c = td_connect(t);
    for (int i = 0; i < n; i++)
        assert_int_equal(th_client_submit(c, "echo", "echo", "x", 1, NULL,
                                          on_tally, &ty, NULL),
                         0);
    STEP_UNTIL(c, ty.answered >= 100);
    kill(t->pid, SIGUSR1);
    STEP_UNTIL(c, ty.answered == n);
    assert_int_equal(ty.by_state[TH_STATE_OK], n);
    th_client_close(c);
    td_wait_log(t, "restart");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* Submits k sleep tasks of ms each and steps until all were accepted. */
static th_client *queue_sleeps(const struct hx *t, struct tally *ty, int k,
                               const char *ms)
{
    th_client *c = td_connect(t);

    th_client_on_accept(c, on_accepted, ty);
    for (int i = 0; i < k; i++)
        assert_int_equal(th_client_submit(c, "sleep", "sleep", ms, strlen(ms),
                                          NULL, on_tally, ty, NULL),
                         0);
    STEP_UNTIL(c, ty->accepted == k);
    return c;
}

static void sigterm_answers_every_queued_task(void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    th_client *c;

    td_start(t);
    c = queue_sleeps(t, &ty, 5, "50");
    kill(t->pid, SIGTERM);
    STEP_UNTIL(c, ty.answered == 5);
    assert_int_equal(ty.by_state[TH_STATE_OK], 5);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
    assert_int_not_equal(access(t->sock, F_OK), 0); /* socket removed */
}

static void sigterm_rejects_new_submits(void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    th_client *c;
    th_result r;

    td_start(t);
    c = queue_sleeps(t, &ty, 1, "500");
    kill(t->pid, SIGTERM);
    td_wait_log(t, "graceful shutdown");
    assert_int_equal(th_client_call(c, "echo", "echo", "late", 4, NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_string_equal(r.data, "shutting down");
    th_client_result_free(&r);
    STEP_UNTIL(c, ty.answered == 1);
    assert_int_equal(ty.by_state[TH_STATE_OK], 1);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void sigquit_cancels_queued_tasks(void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    th_client *c;

    td_start(t);
    c = queue_sleeps(t, &ty, 5, "10000");
    kill(t->pid, SIGQUIT);
    STEP_UNTIL(c, ty.answered == 5);
    assert_int_equal(ty.by_state[TH_STATE_CANCELLED], 5);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGQUIT), 0);
}

static void killed_client_has_its_queued_tasks_dropped(void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    char out[32];
    pid_t pid;
    int status;

    td_start(t);
    pid = fork();
    assert_true(pid != -1);
    if (pid == 0) { /* no cmocka asserts in the child */
        th_client *c;
        double end = hx_now() + DEADLINE;
        if (th_client_connect(&c, t->sock, NULL, 0) < 0)
            _exit(2);
        th_client_on_accept(c, on_accepted, &ty);
        for (int i = 0; i < 20; i++)
            th_client_submit(c, "sleep", "sleep", "1000", 4, NULL, on_tally,
                             &ty, NULL);
        while (ty.accepted < 20 && hx_now() < end && th_client_step(c, 50) == 0)
            ;
        _exit(ty.accepted == 20 ? 0 : 1); /* leaves without closing */
    }
    status = td_wait_exit(pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    td_wait_log(t, "queued dropped");
    /* the one worker is free again well before 20 x 1 s */
    assert_int_equal(call_state(t, "sleep", "sleep", "1", out, sizeof out),
                     TH_STATE_OK);
    assert_string_equal(out, "slept 1");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- faults on the wire ---- */

static int raw_connect(const struct hx *t)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    strcpy(sa.sun_path, t->sock);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Sends bytes on a fresh connection and returns the code of the ERROR
 * frame the daemon answers before it closes. */
static int send_fault(const struct hx *t, const void *bytes, size_t len)
{
    uint8_t buf[4096];
    size_t got = 0, need;
    struct proto_frame f;
    struct proto_reply r;
    ssize_t n;
    int fd = raw_connect(t);

    assert_int_equal(send(fd, bytes, len, MSG_NOSIGNAL), (ssize_t)len);
    while ((n = read(fd, buf + got, sizeof buf - got)) > 0)
        got += (size_t)n;
    close(fd); /* reaching here means the daemon closed its end */
    assert_true(proto_decode(buf, got, sizeof buf, &f, &need) > 0);
    assert_int_equal(f.type, PROTO_ERROR);
    assert_int_equal(proto_parse_reply(&f, &r), 0);
    return r.code;
}

/* Sends `bytes` on one connection while another is open: the first gets
 * an ERROR frame with `code` and is closed, the other is still served. */
static void fault_case(struct hx *t, const void *bytes, size_t len, int code)
{
    th_client *other;
    th_result r;

    write_conf(t, "max_payload = \"1K\";", NULL, NULL);
    td_start(t);
    other = td_connect(t);
    assert_int_equal(send_fault(t, bytes, len), code);
    assert_int_equal(th_client_call(other, "echo", "echo", "ok", 2, NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_OK);
    th_client_result_free(&r);
    th_client_close(other);
    td_wait_log(t, "closing the connection");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void truncated_frame_gets_an_error(void **state)
{
    struct buf b = {0};

    /* a whole frame whose submit body is cut short */
    proto_put_empty(&b, PROTO_SUBMIT, 1, 0);
    fault_case(*state, b.data, b.len, TH_EPROTO);
    buf_free(&b);
}

static void oversized_frame_gets_an_error(void **state)
{
    struct buf b = {0};

    proto_put_empty(&b, PROTO_PING, 2, 0);
    b.data[1] = 0x10; /* a header announcing 4096 bytes, over 1K */
    fault_case(*state, b.data, b.len, TH_ETOOBIG);
    buf_free(&b);
}

static void unknown_frame_type_gets_an_error(void **state)
{
    struct buf b = {0};

    proto_put_empty(&b, 0x42, 3, 0);
    fault_case(*state, b.data, b.len, TH_EPROTO);
    buf_free(&b);
}

static void garbage_bytes_get_an_error(void **state)
{
    uint8_t garbage[64];

    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)(i * 37 + 11);
    fault_case(*state, garbage, sizeof garbage, TH_EPROTO);
}

static void oversized_submit_from_the_library_is_refused(void **state)
{
    struct hx *t = *state;
    static char big[4096];
    th_client *c;
    th_result r;

    write_conf(t, "max_payload = \"1K\";", NULL, NULL);
    td_start(t);
    c = td_connect(t);
    assert_int_equal(th_client_call(c, "echo", "echo", big, sizeof big, NULL,
                                    &r),
                     0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_int_equal(r.code, TH_ETOOBIG);
    assert_non_null(strstr(r.data, "max_payload"));
    th_client_result_free(&r);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* A client that submits without ever reading its answers is no longer
 * read from once its answers pile up: what it can push into the daemon
 * stays bounded, and other clients are served meanwhile. */
static void client_that_never_reads_is_throttled(void **state)
{
    struct hx *t = *state;
    static char input[4096];
    struct proto_submit sub = {.pool = "echo", .pool_len = 4, .task = "echo",
                               .task_len = 4, .input = input,
                               .input_len = sizeof input};
    struct buf b = {0};
    size_t sent = 0, off = 0, limit = 256u << 20;
    double end = hx_now() + DEADLINE;
    int fd;

    td_start(t);
    fd = raw_connect(t);
    for (int i = 0; i < 64; i++) /* a 256 KiB burst to send over and over */
        assert_int_equal(proto_put_submit(&b, (uint64_t)i + 1, 0, &sub), 0);
    while (sent < limit && hx_now() < end) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        /* the stream is the burst over and over, so frames stay whole */
        ssize_t n = send(fd, b.data + off, b.len - off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            off = (off + (size_t)n) % b.len;
            continue;
        }
        if (poll(&p, 1, 300) == 0)
            break; /* the daemon stopped reading us */
    }
    assert_true(sent < limit);
    assert_true(hx_now() < end);
    assert_int_equal(call_state(t, "echo", "echo", "served", NULL, 0),
                     TH_STATE_OK);
    close(fd);
    buf_free(&b);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* A client may send its requests, shut down its writing side, and read
 * the answers: that is not a disconnect. */
static void half_closed_client_still_gets_its_answers(void **state)
{
    struct hx *t = *state;
    struct proto_submit sub = {.pool = "sleep", .pool_len = 5,
                               .task = "sleep", .task_len = 5, .input = "20",
                               .input_len = 2};
    struct buf b = {0};
    struct proto_frame f;
    struct proto_result r;
    uint8_t buf[4096];
    size_t got = 0, pos = 0, need;
    ssize_t n;
    long k;
    int fd, answers = 0;

    td_start(t);
    fd = raw_connect(t);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(proto_put_submit(&b, (uint64_t)i, 0, &sub), 0);
    assert_int_equal(send(fd, b.data, b.len, MSG_NOSIGNAL), (ssize_t)b.len);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    while ((n = read(fd, buf + got, sizeof buf - got)) > 0)
        got += (size_t)n;
    while ((k = proto_decode(buf + pos, got - pos, sizeof buf, &f, &need)) >
           0) {
        assert_int_equal(proto_parse_result(&f, &r), 0);
        assert_int_equal(r.state, TH_STATE_OK);
        answers++;
        pos += (size_t)k;
    }
    assert_int_equal(answers, 3);
    close(fd);
    buf_free(&b);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void socket_gets_the_configured_mode(void **state)
{
    struct hx *t = *state;
    struct stat st;

    write_conf(t, "socket_mode = \"0600\";", NULL, NULL);
    td_start(t);
    assert_int_equal(stat(t->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- permissions, socket, pidfile, systemd ---- */

static void refused_peer_uid_gets_permission_denied(void **state)
{
    struct hx *t = *state;
    struct passwd *pw = getpwnam("nobody");
    pid_t pid;
    int status;

    if (geteuid() != 0 || pw == NULL) {
        skip(); /* needs root to run a client under another uid */
        return;
    }
    write_conf(t, "socket_mode = \"0666\";", NULL, NULL);
    chmod(t->dir, 0755);
    td_start(t);
    pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        th_client *c;
        char v[64];
        if (setgid(pw->pw_gid) == -1 || setuid(pw->pw_uid) == -1)
            _exit(2);
        if (th_client_connect(&c, t->sock, NULL, 0) < 0)
            _exit(3);
        int rc = th_client_ping(c, v, sizeof v);
        _exit(rc == TH_EIO && strstr(th_client_error(c), "permission")
                  ? 0
                  : 1);
    }
    status = td_wait_exit(pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    td_wait_log(t, "permission denied");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void stale_socket_file_is_replaced(void **state)
{
    struct hx *t = *state;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    strcpy(sa.sun_path, t->sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd); /* the file stays, nobody listens */
    td_start(t);
    td_wait_log(t, "removed stale socket");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void live_socket_is_refused(void **state)
{
    struct hx *t = *state;
    char *argv[] = {DAEMON, "-c", t->conf, "-f", NULL};
    char err[160];
    int status;

    td_start(t);
    snprintf(err, sizeof err, "%s/second.err", t->dir);
    status = td_wait_exit(spawn(t, argv, NULL, dir_file(t, "second.out"), err,
                             NULL));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_true(file_contains(t->log, "another taskhostd"));
    assert_int_equal(hx_ping(t), 0); /* the first one still serves */
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void pidfile_is_written_and_removed(void **state)
{
    struct hx *t = *state;
    char pidfile[160], *argv[] = {DAEMON, "-c", t->conf, "-f", "--pidfile",
                                  pidfile, NULL};
    char want[32];
    double end = hx_now() + DEADLINE;

    snprintf(pidfile, sizeof pidfile, "%s/taskhostd.pid", t->dir);
    t->pid = spawn(t, argv, NULL, dir_file(t, "daemon.out"), t->log, NULL);
    while (hx_ping(t) != 0 && hx_now() < end)
        hx_pause_ms(5);
    snprintf(want, sizeof want, "%d\n", (int)t->pid);
    assert_true(file_contains(pidfile, want));
    assert_int_equal(td_stop(t, SIGTERM), 0);
    assert_int_not_equal(access(pidfile, F_OK), 0);
}

/* Reads one datagram from fd within the deadline into buf. */
static void read_datagram(int fd, char *buf, size_t len)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    assert_int_equal(poll(&p, 1, (int)(DEADLINE * 1000)), 1);
    n = recv(fd, buf, len - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
}

/* Reads the next state change from fd into buf, past the periodic
 * STATUS= lines. */
static void read_notify(int fd, char *buf, size_t len)
{
    do
        read_datagram(fd, buf, len);
    while (strncmp(buf, "STATUS=", 7) == 0);
}

/* Binds a datagram socket in t->dir for NOTIFY_SOCKET; env gets the
 * variable. */
static int notify_listen(struct hx *t, char *env, size_t envlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify", t->dir);
    snprintf(env, envlen, "NOTIFY_SOCKET=%s", sa.sun_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void watchdog_is_pinged_with_a_status_line(void **state)
{
    struct hx *t = *state;
    char env[160], buf[512];
    char *envp[] = {env, "WATCHDOG_USEC=200000", NULL};
    int fd = notify_listen(t, env, sizeof env);
    int pings = 0;

    td_start_env(t, envp);
    read_datagram(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "READY=1"));
    assert_int_equal(run_ctl(t, NULL, "submit", "echo", "echo", NULL), 0);
    /* every 0.1 s: three pings within the deadline prove the timer */
    while (pings < 3) {
        read_datagram(fd, buf, sizeof buf);
        if (strstr(buf, "WATCHDOG=1") == NULL)
            continue;
        assert_non_null(strstr(buf, "STATUS=2 pools, "));
        assert_non_null(strstr(buf, " tasks/s"));
        pings++;
    }
    assert_int_equal(td_stop(t, SIGTERM), 0);
    close(fd);
}

static void status_line_without_watchdog_has_no_ping(void **state)
{
    struct hx *t = *state;
    char env[160], buf[512];
    char *envp[] = {env, NULL};
    int fd = notify_listen(t, env, sizeof env);

    td_start_env(t, envp);
    read_datagram(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "READY=1"));
    read_datagram(fd, buf, sizeof buf); /* the first status, at once */
    assert_non_null(strstr(buf, "STATUS=2 pools, "));
    assert_null(strstr(buf, "WATCHDOG=1"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
    close(fd);
}

static void notify_socket(struct hx *t, int abstract)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char path[128], env[160], buf[256];
    char *envp[] = {env, NULL};
    socklen_t len;
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

    snprintf(path, sizeof path, "%s/notify", t->dir);
    if (abstract) {
        snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "td-%d-notify",
                 (int)getpid());
        snprintf(env, sizeof env, "NOTIFY_SOCKET=@%s", sa.sun_path + 1);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                          strlen(sa.sun_path + 1));
    } else {
        strcpy(sa.sun_path, path);
        snprintf(env, sizeof env, "NOTIFY_SOCKET=%s", path);
        len = sizeof sa;
    }
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    td_start_env(t, envp);
    read_notify(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "READY=1"));
    kill(t->pid, SIGHUP);
    read_notify(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "RELOADING=1"));
    read_notify(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "READY=1"));
    kill(t->pid, SIGTERM);
    read_notify(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "STOPPING=1"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
    close(fd);
}

static void systemd_is_notified_on_a_path_socket(void **state)
{
    notify_socket(*state, 0);
}

static void systemd_is_notified_on_an_abstract_socket(void **state)
{
    notify_socket(*state, 1);
}

static void shutdown_request_stops_the_daemon(void **state)
{
    struct hx *t = *state;

    td_start(t);
    assert_int_equal(run_ctl(t, NULL, "shutdown", NULL, NULL, NULL), 0);
    assert_int_equal(td_wait_exit(t->pid), 0);
    t->pid = 0;
    assert_int_not_equal(access(t->sock, F_OK), 0);
}

static void cancel_by_task_id_cancels_a_running_task(void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    th_client *c, *admin;

    td_start(t);
    c = queue_sleeps(t, &ty, 1, "10000");
    admin = td_connect(t);
    assert_int_equal(th_client_cancel_task(admin, ty.last_id), 0);
    assert_int_equal(th_client_cancel_task(admin, 999999), TH_ENOENT);
    STEP_UNTIL(c, ty.answered == 1);
    assert_int_equal(ty.by_state[TH_STATE_CANCELLED], 1);
    th_client_close(admin);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void submitter_who_is_not_admin_cannot_restart(void **state)
{
    struct hx *t = *state;
    char host[128];
    th_client *c;
    th_result r;

    /* we may submit; only uid 4242 (nobody we are) may administer */
    snprintf(host, sizeof host, "submit_users = [ %u ]; admin_users = [ 4242 ];",
             (unsigned)geteuid());
    write_conf(t, host, NULL, NULL);
    td_start(t);
    c = td_connect(t);
    assert_int_equal(th_client_call(c, "echo", "echo", "x", 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    th_client_result_free(&r);
    assert_int_equal(th_client_restart(c, NULL, 0), TH_EPERM);
    assert_non_null(strstr(th_client_error(c), "admin"));
    assert_int_equal(th_client_shutdown(c, TH_CLOSE_GRACEFUL), TH_EPERM);
    th_client_close(c);
    assert_int_equal(run_ctl(t, NULL, "reload", NULL, NULL, NULL), 1);
    assert_int_equal(hx_ping(t), 0); /* still up */
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void sigusr2_reopens_the_log(void **state)
{
    struct hx *t = *state;
    char moved[160];
    th_client *c;

    td_start(t);
    snprintf(moved, sizeof moved, "%s.1", t->log);
    assert_int_equal(rename(t->log, moved), 0); /* as logrotate does */
    kill(t->pid, SIGUSR2);
    /* a request the daemon logs, once the reopen was handled */
    c = td_connect(t);
    for (double end = hx_now() + DEADLINE; !file_contains(t->log, "restart of");) {
        assert_int_equal(th_client_restart(c, "echo", 0), 0);
        assert_true(hx_now() < end);
        hx_pause_ms(10);
    }
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

/* An optional argument selects tests by name ("sighup_*"). */
/* A sleep pool whose tasks have no time limit, and a short kill_grace. */
static const char pools_endless[] =
    "pools = (\n"
    "  { name = \"sleep\"; plugin = \"sleep\"; min_workers = 1;"
    "    max_workers = 1; task_timeout = 0.0; kill_grace = 0.5; }\n"
    ");\n";

/* Starts a task that sleeps for an hour, and waits until it runs. */
static th_client *start_endless(struct hx *t, struct tally *ty)
{
    th_client *c = queue_sleeps(t, ty, 1, "3600000");
    double end = hx_now() + DEADLINE;
    int busy = 0;
    while (!busy && hx_now() < end) {
        char *j = NULL;
        th_client_step(c, 20);
        if (th_client_stats(c, "sleep", TH_STATS_JSON, &j) == 0 && j != NULL)
            busy = strstr(j, "\"busy\":1") != NULL;
        free(j);
    }
    assert_true(busy);
    return c;
}

/* Waits for the daemon to exit; returns the seconds it took since t0. */
static double exit_time(struct hx *t, double t0)
{
    int status = td_wait_exit_within(t->pid, DEADLINE);
    double took = hx_now() - t0;
    t->pid = 0;
    assert_true(WIFEXITED(status));
    return took;
}

static void sigterm_after_a_rolling_restart_ends_within_the_timeouts(
    void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    write_conf(t, "shutdown_timeout = 0.5;", pools_endless, NULL);
    td_start(t);
    th_client *c = start_endless(t, &ty);
    /* The worker now stops after its task, which never ends. */
    kill(t->pid, SIGUSR1);
    td_wait_log(t, "rolling restart");
    double t0 = hx_now();
    kill(t->pid, SIGTERM);
    double took = exit_time(t, t0);
    /* shutdown_timeout + kill_grace, with time to spare for a slow box */
    if (took > 0.5 + 0.5 + 2.0)
        fail_msg("the daemon took %.2f s to stop", took);
    STEP_UNTIL(c, ty.answered == 1);
    assert_int_equal(ty.by_state[TH_STATE_CANCELLED], 1);
    th_client_close(c);
}

static void sigquit_after_a_rolling_restart_ends_at_once(void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    write_conf(t, NULL, pools_endless, NULL);
    td_start(t);
    th_client *c = start_endless(t, &ty);
    kill(t->pid, SIGUSR1);
    td_wait_log(t, "rolling restart");
    double t0 = hx_now();
    kill(t->pid, SIGQUIT);
    double took = exit_time(t, t0);
    if (took > 0.5 + 2.0)
        fail_msg("the daemon took %.2f s to stop", took);
    STEP_UNTIL(c, ty.answered == 1);
    assert_int_equal(ty.by_state[TH_STATE_CANCELLED], 1);
    th_client_close(c);
}

static void second_sigterm_forces_the_shutdown(void **state)
{
    struct hx *t = *state;
    struct tally ty = {0};
    /* 0: no limit; only a second SIGTERM (or SIGQUIT) ends the wait. */
    write_conf(t, "shutdown_timeout = 0;", pools_endless, NULL);
    td_start(t);
    th_client *c = start_endless(t, &ty);
    kill(t->pid, SIGTERM);
    td_wait_log(t, "graceful shutdown");
    double t0 = hx_now();
    kill(t->pid, SIGTERM);
    double took = exit_time(t, t0);
    if (took > 0.5 + 2.0)
        fail_msg("the daemon took %.2f s to stop", took);
    STEP_UNTIL(c, ty.answered == 1);
    assert_int_equal(ty.by_state[TH_STATE_CANCELLED], 1);
    th_client_close(c);
}

/* RLIMIT_NOFILE of the daemon's process from /proc: soft and hard. */
static void fd_limits(pid_t pid, long long *soft, long long *hard)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    *soft = *hard = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "Max open files", 14) == 0)
            sscanf(line + 14, "%lld %lld", soft, hard);
    fclose(f);
}

/* User and system CPU time of process pid, in seconds. */
static double cpu_seconds(pid_t pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *p = strrchr(text, ')');
    assert_non_null(p);
    unsigned long long ut = 0, st = 0;
    /* after "pid (comm)": state and 10 fields, then utime and stime */
    int k = sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                   &ut, &st);
    assert_int_equal(k, 2);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void daemon_raises_its_fd_soft_limit_to_the_hard_limit(void **state)
{
    struct hx *t = *state;
    struct rlimit rl = {256, 512};
    long long soft, hard;
    spawn_nofile = &rl;
    td_start_env(t, NULL);
    spawn_nofile = NULL;
    fd_limits(t->pid, &soft, &hard);
    assert_int_equal(hard, 512);
    assert_int_equal(soft, 512);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void out_of_fds_the_daemon_pauses_accepting_and_serves_its_clients(
    void **state)
{
    struct hx *t = *state;
    struct rlimit rl = {48, 48};
    enum { EXTRA = 64 };
    int fds[EXTRA];
    th_result r;
    spawn_nofile = &rl;
    td_start_env(t, NULL);
    spawn_nofile = NULL;
    th_client *c = td_connect(t);
    assert_int_equal(th_client_call(c, "echo", "echo", "a", 1, NULL, &r), 0);
    th_client_result_free(&r);
    for (int i = 0; i < EXTRA; i++)
        fds[i] = td_raw_connect(t);
    td_wait_log(t, "Too many open files");
    /* Over a second of being out of descriptors: no busy loop, one line
     * in the log, and the client it has is served. */
    double cpu0 = cpu_seconds(t->pid);
    double end = hx_now() + 1.0;
    while (hx_now() < end) {
        assert_int_equal(th_client_call(c, "echo", "echo", "b", 1, NULL, &r),
                         0);
        assert_int_equal(r.state, TH_STATE_OK);
        th_client_result_free(&r);
        hx_pause_ms(50);
    }
    double cpu = cpu_seconds(t->pid) - cpu0;
    int lines = 0;
    const char *log = hx_read_file(t->log);
    for (const char *p = log; (p = strstr(p, "Too many open files")) != NULL;
         p++)
        lines++;
    if (lines > 1 || cpu > 0.5)
        fail_msg("out of fds: %d log lines, %.2f s of CPU in 1 s", lines, cpu);
    /* Room again: new clients get in. */
    for (int i = 0; i < EXTRA; i++)
        close(fds[i]);
    th_client *late = td_connect(t);
    assert_int_equal(th_client_call(late, "echo", "echo", "c", 1, NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_OK);
    th_client_result_free(&r);
    th_client_close(late);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* A notify socket nobody reads fills up after a few datagrams: the daemon
 * drops its status lines then, and goes on serving and stops when told. */
static void notify_reader_that_falls_behind_never_blocks_the_daemon(
    void **state)
{
    struct hx *t = *state;
    char env[160];
    char *envp[] = {env, "WATCHDOG_USEC=20000", NULL};
    int fd = notify_listen(t, env, sizeof env);

    td_start_env(t, envp);
    /* 50 pings and more, every 10 ms, none read */
    double end = hx_now() + 0.5;
    while (hx_now() < end)
        hx_pause_ms(20);
    assert_int_equal(hx_ping(t), 0);
    assert_int_equal(td_stop(t, SIGTERM), 0);
    close(fd);
}

/* The pid of an idle worker of pool `pool` other than `not`, or 0. */
static int idle_worker_other_than(th_client *c, const char *pool, int not)
{
    char *j = NULL;
    int found = 0;
    if (th_client_stats(c, pool, TH_STATS_JSON, &j) == 0 && j != NULL) {
        for (const char *p = j; (p = strstr(p, "{\"pid\":")) != NULL; p++) {
            int pid = atoi(p + 7);
            if (pid != not && strstr(p, "\"state\":\"idle\"") ==
                                  strchr(p, ',') + 1) {
                found = pid;
                break;
            }
        }
    }
    free(j);
    return found;
}

/* Workers that reached READY and died soon after, idle, are not failed
 * starts: the back-off says what happened. */
static void early_deaths_of_started_workers_are_not_called_failed_starts(
    void **state)
{
    struct hx *t = *state;
    td_start_env(t, NULL);
    th_client *c = td_connect(t);
    int last = 0;
    for (int i = 0; i < 3; i++) {
        double end = hx_now() + DEADLINE;
        int pid;
        while ((pid = idle_worker_other_than(c, "sleep", last)) == 0 &&
               hx_now() < end)
            hx_pause_ms(5);
        assert_true(pid > 0);
        kill(pid, SIGKILL);
        last = pid;
    }
    td_wait_log(t, "died within a second");
    assert_false(file_contains(t->log, "failed worker starts"));
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* A SIGHUP that brings a large config (seconds to parse its settings;
 * refused in the end, for a pool on a plugin it does not have): the
 * daemon goes on answering while it parses. */
static void sighup_with_a_large_config_keeps_serving(void **state)
{
    struct hx *t = *state;
    enum { KEYS = 7000 };
    size_t cap = (size_t)KEYS * 40 + 1024, len = 0;
    char *pools = malloc(cap);
    assert_non_null(pools);
    len += (size_t)snprintf(pools + len, cap - len,
                            "pools = (\n  { name = \"echo\"; plugin = \"echo\";"
                            " min_workers = 1; max_workers = 1;\n"
                            "    settings = {\n");
    for (int i = 0; i < KEYS; i++)
        len += (size_t)snprintf(pools + len, cap - len,
                                "      key_%d = \"value %d\";\n", i, i);
    snprintf(pools + len, cap - len,
             "    }; },\n  { name = \"other\"; plugin = \"nosuch\"; }\n);\n");
    td_start_env(t, NULL);
    write_conf(t, NULL, pools, NULL);
    free(pools);
    double t0 = hx_now(), slowest = 0;
    kill(t->pid, SIGHUP);
    while (!file_contains(t->log, "reload refused") && hx_now() < t0 + 60) {
        double p0 = hx_now();
        assert_int_equal(hx_ping(t), 0);
        if (hx_now() - p0 > slowest)
            slowest = hx_now() - p0;
        hx_pause_ms(20);
    }
    print_message("reload took %.2f s, slowest ping %.3f s\n", hx_now() - t0,
                  slowest);
    assert_true(file_contains(t->log, "nosuch"));
    if (slowest > 0.5)
        fail_msg("a ping waited %.2f s during the reload", slowest);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        T(check_config_accepts_a_good_config),
        T(check_config_refuses_an_unknown_key),
        T(check_config_refuses_a_plugin_without_the_symbol),
        T(check_config_runs_the_plugins_check_of_settings),
        T(library_call_returns_the_output),
        T(taskhostctl_submit_prints_the_output),
        T(taskhostctl_names_the_state_of_a_failed_task),
        T(taskhostctl_timeout_caps_the_run_time),
        T(taskhostctl_stats_prints_every_format),
        T(taskhostctl_control_commands_report_success_and_failure),
        T(taskhostctl_help_works_for_every_command),
        T(many_clients_get_every_answer_matched),
        T(sighup_resizes_a_pool),
        T(sighup_serves_a_rebuilt_plugin),
        T(sighup_with_a_broken_config_keeps_serving),
        T(reload_request_reports_why_it_was_refused),
        T(sigusr1_during_load_loses_no_task),
        T(sigterm_answers_every_queued_task),
        T(sigterm_rejects_new_submits),
        T(sigquit_cancels_queued_tasks),
        T(killed_client_has_its_queued_tasks_dropped),
        T(truncated_frame_gets_an_error),
        T(oversized_frame_gets_an_error),
        T(unknown_frame_type_gets_an_error),
        T(garbage_bytes_get_an_error),
        T(oversized_submit_from_the_library_is_refused),
        T(client_that_never_reads_is_throttled),
        T(half_closed_client_still_gets_its_answers),
        T(socket_gets_the_configured_mode),
        T(refused_peer_uid_gets_permission_denied),
        T(stale_socket_file_is_replaced),
        T(live_socket_is_refused),
        T(pidfile_is_written_and_removed),
        T(systemd_is_notified_on_a_path_socket),
        T(systemd_is_notified_on_an_abstract_socket),
        T(watchdog_is_pinged_with_a_status_line),
        T(journal_stderr_gets_priorities_and_no_timestamps),
        T(taskhostctl_unknown_command_suggests_the_near_one),
        T(taskhostctl_help_prints_a_commands_help),
        T(taskhostctl_without_daemon_names_the_socket_and_the_fix),
        T(taskhostctl_finds_the_socket_in_the_environment),
        T(status_line_without_watchdog_has_no_ping),
        T(shutdown_request_stops_the_daemon),
        T(cancel_by_task_id_cancels_a_running_task),
        T(submitter_who_is_not_admin_cannot_restart),
        T(sigusr2_reopens_the_log),
        T(sigterm_after_a_rolling_restart_ends_within_the_timeouts),
        T(sigquit_after_a_rolling_restart_ends_at_once),
        T(second_sigterm_forces_the_shutdown),
        T(daemon_raises_its_fd_soft_limit_to_the_hard_limit),
        T(out_of_fds_the_daemon_pauses_accepting_and_serves_its_clients),
        T(notify_reader_that_falls_behind_never_blocks_the_daemon),
        T(early_deaths_of_started_workers_are_not_called_failed_starts),
        T(sighup_with_a_large_config_keeps_serving),
    };
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
