/* test_security.c - what hostile plugins and clients must not be able to
 * do, end to end with the real daemon: forge log lines, leave processes
 * behind, keep rights a reload took away, see other workers' data, run
 * code in the daemon, make the daemon hold unbounded memory.
 *
 * The cases that switch users need root; run as anyone else they skip
 * and say why.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/mman.h>
#include <sys/resource.h>

#include "harness.h"
#include "raw_client.h"
#include "fdpass.h"

#define HOSTILE TEST_PLUGINS "/hostile.so"

/* AddressSanitizer's shadow takes terabytes of address space. */
#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif

static int setup(void **state)
{
    struct hx *t = malloc(sizeof *t);

    assert_non_null(t);
    td_init(t, "test_security");
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    td_cleanup(*state);
    free(*state);
    return 0;
}

/* "nobody" (or a user made for the tests); NULL when not root. */
static const struct passwd *other_user(void)
{
    static struct passwd pw;
    static char name[64];
    struct passwd *p;

    if (geteuid() != 0)
        return NULL;
    if (name[0] != '\0')
        return &pw;
    p = getpwnam("nobody");
    if (p == NULL) {
        (void)!system("useradd --system --no-create-home --shell /bin/false "
                      "th-priv-test 2>/dev/null");
        p = getpwnam("th-priv-test");
    }
    if (p == NULL)
        return NULL;
    pw = *p;
    snprintf(name, sizeof name, "%s", p->pw_name);
    pw.pw_name = name;
    return &pw;
}

#define NEED_ROOT()                                                            \
    do {                                                                       \
        if (other_user() == NULL) {                                            \
            print_message("skipped: needs root (to switch users); running "    \
                          "as uid %u\n", (unsigned)geteuid());                 \
            skip();                                                            \
        }                                                                      \
    } while (0)

/* Writes a config with the hostile and echo plugins and `pools`. */
static void write_conf(struct hx *t, const char *host_extra, const char *pools)
{
    char rest[4096];

    snprintf(rest, sizeof rest,
             "plugins = ( { name = \"hostile\"; path = \"" HOSTILE "\"; },\n"
             "            { name = \"echo\"; path = \"" PLUGINS
             "/echo.so\"; } );\n"
             "pools = ( %s );\n",
             pools);
    td_write_conf(t, host_extra, rest);
}

/* Runs task `task` of `pool` with `in` and returns its output (static);
 * fails the test unless it is ok. */
static const char *ask(const struct hx *t, const char *pool, const char *task,
                       const char *in, size_t len)
{
    static char out[4096];
    th_client *c = td_connect(t);
    th_result r;

    assert_int_equal(th_client_call(c, pool, task, in, len, NULL, &r), 0);
    if (r.state != TH_STATE_OK) {
        hx_show_log(t, 200);
        fail_msg("%s/%s: %s: %s", pool, task, th_state_name(r.state),
                 (const char *)r.data);
    }
    snprintf(out, sizeof out, "%.*s", (int)r.len, (const char *)r.data);
    th_client_result_free(&r);
    th_client_close(c);
    return out;
}

/* Whether process pid exists and is not a zombie. */
static int alive(pid_t pid)
{
    char path[64], buf[512];
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren != NULL && paren[1] == ' ' && paren[2] != 'Z' &&
           paren[2] != 'X';
}

/* Polls until pid is gone (reaping it if it became our child); fails
 * the test, killing it, if it is still there after the deadline. */
static void assert_gone(pid_t pid, const char *what)
{
    double end = hx_now() + DEADLINE;

    while (alive(pid) && hx_now() < end) {
        waitpid(pid, NULL, WNOHANG);
        hx_pause_ms(10);
    }
    if (alive(pid)) {
        kill(pid, SIGKILL);
        fail_msg("%s (pid %d) outlived what should have ended it", what,
                 (int)pid);
    }
    waitpid(pid, NULL, WNOHANG);
}

/* The pid of the one worker of `pool`, from the stats, once it is in
 * `state` ("idle", "busy"). */
static pid_t worker_pid(const struct hx *t, const char *pool,
                        const char *state)
{
    th_client *c = td_connect(t);
    char *json = NULL, want[64];
    pid_t pid = 0;
    double end = hx_now() + DEADLINE;

    snprintf(want, sizeof want, "\"%s\":1", state);
    while (pid == 0 && hx_now() < end) {
        assert_int_equal(th_client_stats(c, pool, TH_STATS_JSON, &json), 0);
        const char *at = strstr(json, "\"pid\":");
        if (at != NULL && strstr(json, want) != NULL)
            pid = (pid_t)atoi(at + 6);
        free(json);
        if (pid == 0)
            hx_pause_ms(10);
    }
    th_client_close(c);
    assert_true(pid > 0);
    return pid;
}

/* ---- the log ---- */

static void plugin_log_text_is_escaped_one_line_per_call(void **state)
{
    struct hx *t = *state;
    const char evil[] = "first\n2026-01-01 00:00:00.000 error [1] forged"
                        "\x1b[31m red\\";

    write_conf(t, NULL,
               "{ name = \"h\"; plugin = \"hostile\"; min_workers = 1; }");
    td_start(t);
    assert_string_equal(ask(t, "h", "log", evil, strlen(evil)), "logged");
    td_wait_log(t, "first\\n2026-01-01");
    const char *log = hx_read_file(t->log);
    assert_non_null(strstr(log, "first\\n2026-01-01 00:00:00.000 error [1] "
                                "forged\\x1b[31m red\\\\\n"));
    assert_null(strstr(log, "\n2026-01-01 00:00:00.000 error [1] forged"));
    assert_null(strchr(log, '\x1b'));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- processes ---- */

static void ignore(const th_result *r, void *arg)
{
    (void)r, (void)arg;
}

static void worker_of_another_user_dies_with_the_daemon(void **state)
{
    struct hx *t = *state;
    char pools[256];

    NEED_ROOT();
    snprintf(pools, sizeof pools,
             "{ name = \"h\"; plugin = \"hostile\"; min_workers = 1;"
             " max_workers = 1; user = \"%s\"; }",
             other_user()->pw_name);
    write_conf(t, NULL, pools);
    td_start(t);
    /* busy, so that only the kernel can end it: an idle worker would see
     * its socket close */
    th_client *c = td_connect(t);
    uint64_t tag;
    assert_int_equal(th_client_submit(c, "h", "hold", "600000", 6, NULL,
                                      ignore, NULL, &tag),
                     0);
    assert_int_equal(th_client_step(c, 0), 0);
    pid_t w = worker_pid(t, "h", "busy");
    assert_true(alive(w));
    kill(t->pid, SIGKILL);
    waitpid(t->pid, NULL, 0);
    t->pid = 0;
    assert_gone(w, "a busy worker running as another user");
    th_client_close(c);
}

static void what_a_task_detaches_dies_with_its_worker(void **state)
{
    struct hx *t = *state;

    write_conf(t, NULL,
               "{ name = \"h\"; plugin = \"hostile\"; min_workers = 1;"
               " max_workers = 1; }");
    td_start(t);
    pid_t g = (pid_t)atoi(ask(t, "h", "detach", NULL, 0));
    assert_true(g > 0);
    assert_true(alive(g));
    th_client *c = td_connect(t);
    assert_int_equal(th_client_restart(c, "h", 1), 0);
    th_client_close(c);
    assert_gone(g, "a process a task detached with setsid and double fork");
    assert_true(alive(t->pid));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void what_a_task_detaches_dies_with_the_daemon(void **state)
{
    struct hx *t = *state;

    write_conf(t, NULL,
               "{ name = \"h\"; plugin = \"hostile\"; min_workers = 1;"
               " max_workers = 1; }");
    td_start(t);
    pid_t g = (pid_t)atoi(ask(t, "h", "detach", NULL, 0));
    assert_true(g > 0 && alive(g));
    assert_int_equal(td_stop(t, SIGTERM), 0);
    assert_gone(g, "a process a task detached, after a clean shutdown");
}

/* ---- rights follow the current config ---- */

/* What the client as the second user does between the steps. */
enum step_kind { SUBMIT, RESTART };

/* Runs in a child as the second user: one request of `kind` on a
 * connection, which must succeed; a byte to the parent; waits for the
 * parent's byte (the reload is done); the same request on the same
 * connection, which must now be refused. Exits 0 when both held. */
static int rights_child(const struct hx *t, enum step_kind kind, int to_parent,
                        int from_parent)
{
    th_client *c;
    th_result r;
    char b = 0;

    if (th_client_connect(&c, t->sock, NULL, 0) < 0)
        return 10;
    if (kind == SUBMIT) {
        if (th_client_call(c, "echo", "echo", "hi", 2, NULL, &r) != 0 ||
            r.state != TH_STATE_OK)
            return 11;
        th_client_result_free(&r);
    } else if (th_client_restart(c, "echo", 0) != 0) {
        return 12;
    }
    if (write(to_parent, "1", 1) != 1 || read(from_parent, &b, 1) != 1)
        return 13;
    if (kind == SUBMIT) {
        int rc = th_client_call(c, "echo", "echo", "hi", 2, NULL, &r);
        if (rc == 0 && r.state == TH_STATE_OK)
            return 14;
        if (rc == 0)
            th_client_result_free(&r);
    } else if (th_client_restart(c, "echo", 0) != TH_EPERM) {
        return 15;
    }
    th_client_close(c);
    return 0;
}

static void rights_removed_by_reload(struct hx *t, enum step_kind kind)
{
    const char *list = kind == SUBMIT ? "submit_users" : "admin_users";
    const char *pools = "{ name = \"echo\"; plugin = \"echo\"; min_workers = 1; }";
    char host[256];
    int up[2], down[2];
    char b;

    NEED_ROOT();
    snprintf(host, sizeof host, "socket_mode = \"0666\"; %s = [ 0, %u ];",
             list, (unsigned)other_user()->pw_uid);
    write_conf(t, host, pools);
    td_start(t);
    assert_int_equal(chmod(t->dir, 0755), 0);
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    pid_t pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        const struct passwd *pw = other_user();
        if (setgroups(0, NULL) == -1 || setgid(pw->pw_gid) == -1 ||
            setuid(pw->pw_uid) == -1)
            _exit(2);
        _exit(rights_child(t, kind, up[1], down[0]));
    }
    if (read(up[0], &b, 1) != 1) {
        int status = td_wait_exit(pid);
        fail_msg("client as the second user failed before the reload: %d",
                 WEXITSTATUS(status));
    }
    snprintf(host, sizeof host, "socket_mode = \"0666\"; %s = [ 0 ];", list);
    write_conf(t, host, pools);
    kill(t->pid, SIGHUP);
    td_wait_log(t, "reloaded");
    assert_int_equal(write(down[1], "1", 1), 1);
    int status = td_wait_exit(pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0) {
        hx_show_log(t, 200);
        fail_msg("client as the second user: check failed with %d",
                 WEXITSTATUS(status));
    }
    close(up[0]), close(up[1]), close(down[0]), close(down[1]);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void submit_right_removed_by_reload_ends_on_an_open_connection(
    void **state)
{
    rights_removed_by_reload(*state, SUBMIT);
}

static void admin_right_removed_by_reload_ends_on_an_open_connection(
    void **state)
{
    rights_removed_by_reload(*state, RESTART);
}


/* ---- a worker sees nothing of other workers or clients ---- */

static void on_held(const th_result *r, void *arg)
{
    th_result *out = arg;
    *out = *r;
    char *copy = malloc(r->len + 1);
    memcpy(copy, r->data, r->len);
    copy[r->len] = '\0';
    out->data = copy;
}

/* A root pool's task holds an input with a secret (in its worker's arena
 * and, queued, in the daemon) while a worker of another pool, started
 * after it, searches its own memory for the secret: it must find nothing,
 * and the first task's output must come back as it went in. */
static void worker_holds_nothing_of_other_workers_or_clients(void **state)
{
    struct hx *t = *state;
    char pools[512], secret[64], reversed[64];
    const struct passwd *pw = other_user();

    snprintf(pools, sizeof pools,
             "{ name = \"victim\"; plugin = \"hostile\"; min_workers = 1;"
             " max_workers = 1; task_timeout = 0.0; },\n"
             "{ name = \"other\"; plugin = \"hostile\"; min_workers = 0;"
             " max_workers = 1; task_timeout = 0.0; %s%s%s }",
             pw ? "user = \"" : "", pw ? pw->pw_name : "", pw ? "\";" : "");
    write_conf(t, NULL, pools);
    td_start(t);
    snprintf(secret, sizeof secret, "SECRET-%d-%ld-%d", (int)getpid(),
             (long)time(NULL), rand());
    size_t n = strlen(secret);
    for (size_t i = 0; i < n; i++)
        reversed[i] = secret[n - 1 - i];
    size_t len = 64 * 1024;
    char *input = malloc(len);
    memset(input, '.', len);
    memcpy(input, "3000\n", 5);
    memcpy(input + 1000, secret, n);
    memcpy(input + 40000, secret, n);

    th_client *c = td_connect(t);
    th_result held = {0};
    uint64_t tag;
    assert_int_equal(th_client_submit(c, "victim", "hold", input, len, NULL,
                                      on_held, &held, &tag),
                     0);
    assert_int_equal(th_client_step(c, 0), 0);
    worker_pid(t, "victim", "busy");
    const char *seen = ask(t, "other", "scan", reversed, n);
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    assert_int_equal(held.state, TH_STATE_OK);
    assert_int_equal(held.len, len);
    assert_memory_equal(held.data, input, len);
    free((void *)held.data);
    if (strcmp(seen, "clean") != 0)
        fail_msg("a worker of another pool found the secret: %s", seen);
    th_client_close(c);
    free(input);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- plugin code never runs in the daemon ---- */

/* taskhostd --check-config on t->conf: its exit status; stderr in *err. */
static int check_config(const struct hx *t, const char **err)
{
    char *argv[] = {DAEMON, "--check-config", "-c", (char *)t->conf, NULL};
    char path[160];

    snprintf(path, sizeof path, "%s/check.err", t->dir);
    unlink(path);
    int status = td_wait_exit(td_spawn(argv, t->out, path));
    *err = hx_read_file(path);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

struct bad_plugin {
    const char *file; /* in TEST_PLUGINS */
    const char *says; /* in the one line naming it */
};

static const struct bad_plugin bad_plugins[] = {
    {"ctorsegv.so", "crashed while loading (killed by signal 11, SIGSEGV)"},
    {"ctorexit.so", "exited with status 3 while loading"},
    {"badtable.so", "crashed while loading"},
    {"ctorhang.so", "did not finish loading within 1 s"},
};

/* A config with the echo pool and, if bad is not NULL, a pool on it. */
static void write_bad_conf(struct hx *t, const struct bad_plugin *bad)
{
    char rest[2048];

    snprintf(rest, sizeof rest,
             "plugins = ( { name = \"echo\"; path = \"" PLUGINS "/echo.so\"; }"
             "%s%s%s );\n"
             "pools = ( { name = \"echo\"; plugin = \"echo\"; min_workers = 1; }"
             "%s );\n",
             bad ? ", { name = \"bad\"; path = \"" TEST_PLUGINS "/" : "",
             bad ? bad->file : "", bad ? "\"; }" : "",
             bad ? ", { name = \"bad\"; plugin = \"bad\"; }" : "");
    td_write_conf(t, "plugin_load_timeout = 1.0;", rest);
}

static void check_config_names_a_plugin_that_crashes_exits_or_hangs(
    void **state)
{
    struct hx *t = *state;
    const char *err;

    for (size_t i = 0; i < sizeof bad_plugins / sizeof bad_plugins[0]; i++) {
        write_bad_conf(t, &bad_plugins[i]);
        assert_int_equal(check_config(t, &err), 1);
        if (!strstr(err, bad_plugins[i].file) ||
            !strstr(err, bad_plugins[i].says))
            fail_msg("%s: got: %s", bad_plugins[i].file, err);
        assert_non_null(strstr(err, "plugins[1].path"));
    }
}

static void reload_with_a_plugin_that_fails_loading_is_refused_and_serving_goes_on(
    void **state)
{
    struct hx *t = *state;

    write_bad_conf(t, NULL);
    td_start(t);
    for (size_t i = 0; i < sizeof bad_plugins / sizeof bad_plugins[0]; i++) {
        char needle[256];
        write_bad_conf(t, &bad_plugins[i]);
        kill(t->pid, SIGHUP);
        snprintf(needle, sizeof needle, "%s: the plugin %s", bad_plugins[i].file,
                 bad_plugins[i].says);
        td_wait_log(t, needle);
        assert_non_null(strstr(hx_read_file(t->log), "reload refused"));
        assert_string_equal(ask(t, "echo", "echo", "hi", 2), "hi");
    }
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* Copies src over dst without a new inode, as `cp` onto a live file does. */
static void overwrite_in_place(const char *src, const char *dst)
{
    char buf[65536];
    int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_TRUNC);
    ssize_t n;

    assert_true(in >= 0 && out >= 0);
    while ((n = read(in, buf, sizeof buf)) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
}

static void plugin_file_overwritten_in_place_crashes_nothing(void **state)
{
    struct hx *t = *state;
    char dir[128], path[200], cmd[512], rest[1024];

    snprintf(dir, sizeof dir, "%s/sub", t->dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/live.so", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", HOSTILE, path);
    assert_int_equal(system(cmd), 0);
    snprintf(rest, sizeof rest,
             "plugins = ( { name = \"live\"; path = \"%s\"; },\n"
             "            { name = \"echo\"; path = \"" PLUGINS "/echo.so\"; } );\n"
             "pools = ( { name = \"live\"; plugin = \"live\"; min_workers = 1; },\n"
             "          { name = \"echo\"; plugin = \"echo\"; min_workers = 1; } );\n",
             path);
    td_write_conf(t, NULL, rest);
    td_start(t);
    assert_string_equal(ask(t, "live", "log", "x", 1), "logged");
    overwrite_in_place(PLUGINS "/crash.so", path);
    /* whatever the task's answer, the daemon must be there to give it */
    th_client *c = td_connect(t);
    th_result r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(th_client_call(c, "live", "log", "x", 1, NULL, &r), 0);
        th_client_result_free(&r);
    }
    th_client_close(c);
    assert_true(alive(t->pid));
    assert_string_equal(ask(t, "echo", "echo", "hi", 2), "hi");
    kill(t->pid, SIGHUP);
    td_wait_log(t, "reloaded");
    assert_string_equal(ask(t, "echo", "echo", "hi", 2), "hi");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- memory a client can make the daemon hold ---- */

/* A field of /proc/PID/status in KiB ("VmRSS", "VmSize"). */
static long proc_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    long v = -1;
    size_t n = strlen(field);

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    fclose(f);
    assert_true(v >= 0);
    return v;
}

/* Outside a sanitizer build (whose shadow maps terabytes), also caps the
 * daemon's address space `extra` bytes above what it has now: what it
 * maps beyond that fails instead of eating the machine's memory. */
static void limit_daemon(const struct hx *t, uint64_t extra)
{
#ifdef ASAN_BUILD
    (void)t, (void)extra;
#else
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max =
        (rlim_t)proc_kib(t->pid, "VmSize") * 1024 + (rlim_t)extra;
    assert_int_equal(prlimit(t->pid, RLIMIT_AS, &rl, NULL), 0);
#endif
}

/* Sends frame b on sock, with descriptor fd (-1: none). */
static void send_raw(int sock, const struct buf *b, int fd)
{
    struct fdpass_queue q = {0};
    size_t done = 0;

    if (fd >= 0)
        assert_int_equal(fdpass_push(&q, fd, 0, 0, 0), 0);
    while (done < b->len) {
        ssize_t n = fdpass_send(sock, b->data + done, b->len - done, &q, done);
        assert_true(n > 0);
        done += (size_t)n;
    }
    fdpass_clear(&q);
}

/* The state and body of the RESULT of a raw submit, read from sock. */
static int read_result(int sock, char *body, size_t cap)
{
    uint8_t buf[65536];
    struct proto_frame f;
    struct proto_result r;

    long n = td_read_frame(sock, buf, sizeof buf, &f);
    assert_true(n > 0);
    if (f.type != PROTO_RESULT) {
        snprintf(body, cap, "frame type 0x%x: %.*s", f.type, (int)f.len,
                 (const char *)f.body);
        return -1;
    }
    assert_int_equal(proto_parse_result(&f, &r), 0);
    snprintf(body, cap, "%.*s", (int)r.len, (const char *)r.data);
    return r.state;
}

static void memfd_is_mapped_only_as_far_as_the_frame_claims(void **state)
{
    struct hx *t = *state;
    const size_t sparse = (size_t)512 << 20;
    char body[256];

    write_conf(t, NULL, "{ name = \"echo\"; plugin = \"echo\"; min_workers = 1; }");
    td_start(t);
    assert_string_equal(ask(t, "echo", "echo", "hi", 2), "hi");
    limit_daemon(t, (uint64_t)256 << 20);
    long rss0 = proc_kib(t->pid, "VmRSS");
    int fd = memfd_create("sparse", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)sparse), 0);
    assert_int_equal(pwrite(fd, "abc", 3, 0), 3);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
    struct buf b = BUF_INIT;
    struct proto_submit sub = {.pool = "echo", .pool_len = 4, .task = "echo",
                               .task_len = 4, .input_len = 3};
    assert_int_equal(proto_put_submit(&b, 1, PROTO_F_IN_FD, &sub), 0);
    int sock = td_raw_connect(t);
    send_raw(sock, &b, fd);
    int st = read_result(sock, body, sizeof body);
    long grew = proc_kib(t->pid, "VmRSS") - rss0;
    close(fd);
    close(sock);
    buf_free(&b);
    if (st != TH_STATE_OK || strcmp(body, "abc") != 0)
        fail_msg("a 3-byte input in a 512 MiB memfd: %d %s", st, body);
    if (grew > 64 * 1024)
        fail_msg("the daemon grew by %ld KiB for a 3-byte input", grew);
    assert_true(alive(t->pid));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

struct answers {
    int n, ok, rejected;
    char why[256];
};

static void count_answer(const th_result *r, void *arg)
{
    struct answers *a = arg;
    a->n++;
    a->ok += r->state == TH_STATE_OK;
    if (r->state == TH_STATE_REJECTED) {
        a->rejected++;
        snprintf(a->why, sizeof a->why, "%.*s", (int)r->len,
                 (const char *)r->data);
    }
}

/* Holds the one worker of pool h, then submits `count` tasks of 8 MiB
 * (in memfds) on one connection, of which `refused` are to be rejected at
 * once; returns how the daemon's RSS grew while the others wait (KiB),
 * and counts every answer in *a. */
static long queue_large_inputs(struct hx *t, int count, int refused,
                               struct answers *a)
{
    const size_t len = (size_t)8 << 20;
    char *input = malloc(len);
    uint64_t hold_tag;
    struct answers held = {0};

    memset(input, 'x', len);
    memcpy(input, "0\n", 2);
    th_client *c = td_connect(t);
    th_result r;
    /* the first large input has the client ask whether the daemon takes
     * memfds (it goes inline while the question is out) */
    assert_int_equal(th_client_call(c, "h", "hold", input, 65536, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    th_client_result_free(&r);
    assert_int_equal(th_client_submit(c, "h", "hold", "60000", 5, NULL,
                                      count_answer, &held, &hold_tag), 0);
    assert_int_equal(th_client_step(c, 0), 0);
    worker_pid(t, "h", "busy");
    long rss0 = proc_kib(t->pid, "VmRSS");
    for (int i = 0; i < count; i++)
        assert_int_equal(th_client_submit(c, "h", "hold", input, len, NULL,
                                          count_answer, a, NULL), 0);
    /* a connection's requests are handled in order: once the last
     * rejection came, every input before it reached the daemon */
    double end = hx_now() + DEADLINE;
    while (a->rejected < refused && hx_now() < end)
        assert_int_equal(th_client_step(c, 50), 0);
    assert_int_equal(a->rejected, refused);
    long grew = proc_kib(t->pid, "VmRSS") - rss0;
    assert_int_equal(th_client_cancel(c, hold_tag), 0);
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    th_client_close(c);
    free(input);
    return grew;
}

static void queued_inputs_in_memfds_are_not_copied_and_max_queue_bytes_bounds_them(
    void **state)
{
    struct hx *t = *state;
    struct answers a = {0};

    write_conf(t, NULL,
               "{ name = \"h\"; plugin = \"hostile\"; min_workers = 1;"
               " max_workers = 1; task_timeout = 0.0; max_queue_bytes = \"40M\"; }");
    td_start(t);
    limit_daemon(t, (uint64_t)512 << 20);
    long grew = queue_large_inputs(t, 8, 3, &a);
    if (grew > 20 * 1024)
        fail_msg("the daemon grew by %ld KiB with 40 MiB of input queued",
                 grew);
    assert_int_equal(a.n, 8);
    assert_int_equal(a.ok, 5);
    assert_int_equal(a.rejected, 3);
    assert_non_null(strstr(a.why, "max_queue_bytes"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void one_connection_has_at_most_max_connection_bytes_in_flight(
    void **state)
{
    struct hx *t = *state;
    struct answers a = {0};

    write_conf(t, "max_connection_bytes = \"20M\";",
               "{ name = \"h\"; plugin = \"hostile\"; min_workers = 1;"
               " max_workers = 1; task_timeout = 0.0; }");
    td_start(t);
    queue_large_inputs(t, 4, 2, &a);
    assert_int_equal(a.n, 4);
    assert_int_equal(a.ok, 2);
    assert_int_equal(a.rejected, 2);
    assert_non_null(strstr(a.why, "max_connection_bytes"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void announced_frames_reserve_nothing_before_their_bytes_come(
    void **state)
{
    struct hx *t = *state;
    int socks[16];
    uint8_t head[PROTO_HEADER_SIZE + 64] = {0};
    uint32_t len = 60u << 20;

    write_conf(t, NULL, "{ name = \"echo\"; plugin = \"echo\"; min_workers = 1; }");
    td_start(t);
    long vm0 = proc_kib(t->pid, "VmSize");
    memcpy(head, &len, 4); /* little-endian hosts only, as the daemon */
    head[4] = PROTO_VERSION;
    head[5] = PROTO_SUBMIT;
    head[8] = 1;
    for (int i = 0; i < 16; i++) {
        socks[i] = td_raw_connect(t);
        assert_int_equal(write(socks[i], head, sizeof head),
                         (ssize_t)sizeof head);
    }
    /* a round trip on one more connection: the daemon has read them all */
    assert_string_equal(ask(t, "echo", "echo", "hi", 2), "hi");
    assert_string_equal(ask(t, "echo", "echo", "hi", 2), "hi");
    long grew = proc_kib(t->pid, "VmSize") - vm0;
    for (int i = 0; i < 16; i++)
        close(socks[i]);
    if (grew > 64 * 1024)
        fail_msg("16 announced 60 MiB frames grew the daemon by %ld KiB", grew);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* Opens connections until one is refused; returns how many were served
 * and that one's error in why. */
static int connections_until_refused(struct hx *t, char *why, size_t n)
{
    th_client *c[64];
    char v[64];
    int served = 0;

    for (; served < 64; served++) {
        assert_int_equal(th_client_connect(&c[served], t->sock, NULL, 0), 0);
        if (th_client_ping(c[served], v, sizeof v) != 0) {
            snprintf(why, n, "%s", th_client_error(c[served]));
            th_client_close(c[served]);
            break;
        }
    }
    for (int i = 0; i < served; i++)
        th_client_close(c[i]);
    return served;
}

static void connections_past_max_connections_are_refused(void **state)
{
    struct hx *t = *state;
    char why[256] = "";

    write_conf(t, "max_connections = 5; max_connections_per_uid = 0;",
               "{ name = \"echo\"; plugin = \"echo\"; }");
    td_start(t);
    assert_int_equal(connections_until_refused(t, why, sizeof why), 5);
    assert_non_null(strstr(why, "max_connections"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void connections_of_one_user_past_their_cap_are_refused(void **state)
{
    struct hx *t = *state;
    char why[256] = "";

    write_conf(t, "max_connections = 100; max_connections_per_uid = 3;",
               "{ name = \"echo\"; plugin = \"echo\"; }");
    td_start(t);
    assert_int_equal(connections_until_refused(t, why, sizeof why), 3);
    assert_non_null(strstr(why, "max_connections_per_uid"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(plugin_log_text_is_escaped_one_line_per_call),
        T(worker_of_another_user_dies_with_the_daemon),
        T(what_a_task_detaches_dies_with_its_worker),
        T(what_a_task_detaches_dies_with_the_daemon),
        T(submit_right_removed_by_reload_ends_on_an_open_connection),
        T(admin_right_removed_by_reload_ends_on_an_open_connection),
        T(worker_holds_nothing_of_other_workers_or_clients),
        T(check_config_names_a_plugin_that_crashes_exits_or_hangs),
        T(reload_with_a_plugin_that_fails_loading_is_refused_and_serving_goes_on),
        T(plugin_file_overwritten_in_place_crashes_nothing),
        T(memfd_is_mapped_only_as_far_as_the_frame_claims),
        T(queued_inputs_in_memfds_are_not_copied_and_max_queue_bytes_bounds_them),
        T(one_connection_has_at_most_max_connection_bytes_in_flight),
        T(announced_frames_reserve_nothing_before_their_bytes_come),
        T(connections_past_max_connections_are_refused),
        T(connections_of_one_user_past_their_cap_are_refused),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
