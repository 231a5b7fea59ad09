/* test_privilege.c - least privilege, end to end with the real daemon:
 * workers as the pool's user with no new privileges, no inherited
 * descriptors and the pool's rlimits; plugin files nobody else can change;
 * the socket's mode and the submitter/admin lists against a second uid.
 *
 * Switching users needs root: run as anyone else, those tests skip and
 * say why. The second uid is "nobody", or a user made with useradd when
 * root has none.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "harness.h"

#define WHOAMI TEST_PLUGINS "/whoami.so"

/* AddressSanitizer maps terabytes of shadow memory before a worker forks:
 * an address space limit below that would starve the sanitized worker. */
#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif
#ifdef ASAN_BUILD
#define AS_LIMIT "100T"
#define AS_LIMIT_BYTES "109951162777600"
#else
#define AS_LIMIT "4G"
#define AS_LIMIT_BYTES "4294967296"
#endif
#define OTHER_USER "th-priv-test"

static int setup(void **state)
{
    struct hx *t = malloc(sizeof *t);

    assert_non_null(t);
    td_init(t, "test_privilege");
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    td_cleanup(*state);
    free(*state);
    return 0;
}

/* The second user: nobody, else one created for the tests. NULL when not
 * root (and so unable to act as anyone else). */
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
                      OTHER_USER " 2>/dev/null");
        p = getpwnam(OTHER_USER);
    }
    if (p == NULL)
        return NULL;
    pw = *p;
    snprintf(name, sizeof name, "%s", p->pw_name);
    pw.pw_name = name;
    return &pw;
}

/* Skips the current test unless root, saying why. */
#define NEED_ROOT()                                                            \
    do {                                                                       \
        if (other_user() == NULL) {                                            \
            print_message("skipped: needs root (to switch users and make a "   \
                          "second uid); running as uid %u\n",                  \
                          (unsigned)geteuid());                                \
            skip();                                                            \
        }                                                                      \
    } while (0)

/* Writes a config with the whoami plugin at `path` and one pool "who"
 * with `pool_extra`. */
static void write_whoami_conf(struct hx *t, const char *host_extra,
                              const char *path, const char *pool_extra)
{
    char rest[1024];

    snprintf(rest, sizeof rest,
             "plugins = ( { name = \"whoami\"; path = \"%s\"; },\n"
             "            { name = \"echo\"; path = \"" PLUGINS
             "/echo.so\"; },\n"
             "            { name = \"sleep\"; path = \"" PLUGINS
             "/sleep.so\"; } );\n"
             "pools = ( { name = \"who\"; plugin = \"whoami\";"
             " min_workers = 1; max_workers = 1; %s },\n"
             "          { name = \"echo\"; plugin = \"echo\";"
             " min_workers = 1; max_workers = 1; },\n"
             "          { name = \"sleep\"; plugin = \"sleep\";"
             " min_workers = 1; max_workers = 1; task_timeout = 0.0; } );\n",
             path, pool_extra ? pool_extra : "");
    td_write_conf(t, host_extra, rest);
}

/* Runs task `task` of pool "who" and returns its output (static). */
static const char *ask(const struct hx *t, const char *task)
{
    static char out[4096];
    th_client *c = td_connect(t);
    th_result r;

    assert_int_equal(th_client_call(c, "who", task, NULL, 0, NULL, &r), 0);
    if (r.state != TH_STATE_OK)
        fail_msg("%s: %s: %s", task, th_state_name(r.state),
                 (const char *)r.data);
    snprintf(out, sizeof out, "%s", (const char *)r.data);
    th_client_result_free(&r);
    th_client_close(c);
    return out;
}

/* ---- the worker process ---- */

static void workers_run_as_the_pool_user(void **state)
{
    struct hx *t = *state;
    const struct passwd *pw;
    char pool[128], want[64];

    NEED_ROOT();
    pw = other_user();
    snprintf(pool, sizeof pool, "user = \"%s\";", pw->pw_name);
    write_whoami_conf(t, NULL, WHOAMI, pool);
    td_start(t);
    snprintf(want, sizeof want, "%u %u 1 0", (unsigned)pw->pw_uid,
             (unsigned)pw->pw_gid);
    assert_string_equal(ask(t, "id"), want);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void workers_run_as_a_user_given_by_number(void **state)
{
    struct hx *t = *state;
    const struct passwd *pw;
    char pool[128], want[64];

    NEED_ROOT();
    pw = other_user();
    snprintf(pool, sizeof pool, "user = %u;", (unsigned)pw->pw_uid);
    write_whoami_conf(t, NULL, WHOAMI, pool);
    td_start(t);
    snprintf(want, sizeof want, "%u %u 1 0", (unsigned)pw->pw_uid,
             (unsigned)pw->pw_gid);
    assert_string_equal(ask(t, "id"), want);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void workers_run_as_the_pool_group(void **state)
{
    struct hx *t = *state;
    const struct passwd *pw;
    char pool[160], want[64];

    NEED_ROOT();
    pw = other_user();
    /* the user's own group overridden by a group given by number */
    snprintf(pool, sizeof pool, "user = \"%s\"; group = \"%u\";",
             pw->pw_name, (unsigned)pw->pw_gid + 1);
    write_whoami_conf(t, NULL, WHOAMI, pool);
    td_start(t);
    snprintf(want, sizeof want, "%u %u 1 0", (unsigned)pw->pw_uid,
             (unsigned)pw->pw_gid + 1);
    assert_string_equal(ask(t, "id"), want);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void pool_user_is_ignored_with_a_warning_when_not_root(void **state)
{
    struct hx *t = *state;
    const struct passwd *pw;
    char want[64];

    NEED_ROOT();
    pw = other_user();
    /* the daemon runs as the second user, in a directory of its own */
    assert_int_equal(chown(t->dir, pw->pw_uid, pw->pw_gid), 0);
    write_whoami_conf(t, NULL, WHOAMI, "user = \"root\"; group = \"root\";");
    td_start_proc(t, &(struct hx_proc){.as_user = 1, .uid = pw->pw_uid,
                                        .gid = pw->pw_gid});
    snprintf(want, sizeof want, "%u %u 1 0", (unsigned)pw->pw_uid,
             (unsigned)pw->pw_gid);
    assert_string_equal(ask(t, "id"), want);
    td_wait_log(t, "pool who: workers run as uid");
    assert_non_null(strstr(hx_read_file(t->log), "taskhostd is not root"));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void workers_have_no_new_privs(void **state)
{
    struct hx *t = *state;
    char want[64];

    write_whoami_conf(t, NULL, WHOAMI, NULL);
    td_start(t);
    snprintf(want, sizeof want, "%u %u 1 ", (unsigned)getuid(),
             (unsigned)getgid());
    assert_memory_equal(ask(t, "id"), want, strlen(want));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* Checks that the fds listing holds exactly 0, 1, 2, the socket as 3 and,
 * if `log` is set, that file as 4. */
static void assert_worker_fds(const char *list, const char *log)
{
    char want[512];
    const char *p = list;
    int fd, n, i = 0;
    char target[256];

    while (sscanf(p, "%d %255s%n", &fd, target, &n) == 2) {
        assert_int_equal(fd, i);
        if (fd == 3)
            assert_memory_equal(target, "socket:", 7);
        if (fd == 4) {
            snprintf(want, sizeof want, "%s", log ? log : "(no fd 4)");
            assert_string_equal(target, want);
        }
        p += n;
        i++;
    }
    if (i != (log ? 5 : 4))
        fail_msg("worker descriptors:\n%s", list);
}

static void workers_hold_only_their_socket_and_the_log(void **state)
{
    struct hx *t = *state;

    write_whoami_conf(t, NULL, WHOAMI, NULL);
    td_start(t);
    assert_worker_fds(ask(t, "fds"), t->log);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void workers_hold_only_their_socket_without_a_log_file(void **state)
{
    struct hx *t = *state;
    char rest[1024];
    FILE *f = fopen(t->conf, "w");

    assert_non_null(f);
    snprintf(rest, sizeof rest,
             "host: { socket = \"%s\"; log = \"stderr\"; };\n"
             "plugins = ( { name = \"whoami\"; path = \"" WHOAMI "\"; } );\n"
             "pools = ( { name = \"who\"; plugin = \"whoami\";"
             " min_workers = 1; max_workers = 1; } );\n",
             t->sock);
    fputs(rest, f);
    fclose(f);
    td_start(t);
    assert_worker_fds(ask(t, "fds"), NULL);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void pool_rlimits_are_applied(void **state)
{
    struct hx *t = *state;

    write_whoami_conf(t, NULL, WHOAMI,
                      "rlimit_nofile = 64; rlimit_core = 0;"
                      " address_space_limit = \"" AS_LIMIT "\";");
    td_start(t);
    assert_string_equal(ask(t, "limits"), "64 64 0 0 " AS_LIMIT_BYTES " "
                                          AS_LIMIT_BYTES);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* The soft and hard limit named `what` in /proc/PID/limits, as whoami
 * prints them ("inf" for unlimited). */
static void proc_limit(pid_t pid, const char *what, char *out, size_t n)
{
    char path[64], line[256], soft[32], hard[32];
    size_t len = strlen(what);
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
    f = fopen(path, "r");
    assert_non_null(f);
    out[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, what, len) == 0 &&
            sscanf(line + len, "%31s %31s", soft, hard) == 2) {
            snprintf(out, n, "%s %s",
                     strcmp(soft, "unlimited") == 0 ? "inf" : soft,
                     strcmp(hard, "unlimited") == 0 ? "inf" : hard);
        }
    }
    fclose(f);
    assert_true(out[0] != '\0');
}

static void rlimits_left_unset_are_the_daemons(void **state)
{
    struct hx *t = *state;
    char nofile[80], core[80], as[80], want[256];

    write_whoami_conf(t, NULL, WHOAMI, NULL);
    td_start(t);
    proc_limit(t->pid, "Max open files", nofile, sizeof nofile);
    proc_limit(t->pid, "Max core file size", core, sizeof core);
    proc_limit(t->pid, "Max address space", as, sizeof as);
    snprintf(want, sizeof want, "%s %s %s", nofile, core, as);
    assert_string_equal(ask(t, "limits"), want);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- plugin file permissions, through the config ---- */

/* Copies the whoami plugin into t->dir/sub (made with `dir_mode`) with
 * `mode`; returns its path (static). */
static const char *plugin_copy(const struct hx *t, mode_t dir_mode,
                               mode_t mode)
{
    static char path[256];
    char dir[200], cmd[600];

    snprintf(dir, sizeof dir, "%s/sub", t->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, dir_mode), 0);
    snprintf(path, sizeof path, "%s/whoami.so", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", WHOAMI, path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

/* taskhostd --check-config on t->conf: exit status; stderr in *err. */
static int check_config(const struct hx *t, const char **err)
{
    char *argv[] = {DAEMON, "--check-config", "-c", (char *)t->conf, NULL};
    char path[160];
    int status;

    snprintf(path, sizeof path, "%s/check.err", t->dir);
    unlink(path);
    status = td_wait_exit(td_spawn(argv, t->out, path));
    *err = hx_read_file(path);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void group_writable_plugin_is_refused(void **state)
{
    struct hx *t = *state;
    const char *path = plugin_copy(t, 0755, 0775), *err;

    write_whoami_conf(t, NULL, path, NULL);
    assert_int_equal(check_config(t, &err), 1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "writable by group or others"));
}

static void group_writable_plugin_loads_without_strict_permissions(
    void **state)
{
    struct hx *t = *state;
    const char *path = plugin_copy(t, 0755, 0775), *err;

    write_whoami_conf(t, "strict_permissions = false;", path, NULL);
    assert_int_equal(check_config(t, &err), 0);
    td_start(t);
    assert_non_null(strstr(ask(t, "id"), " 1 "));
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void plugin_in_a_world_writable_directory_is_refused(void **state)
{
    struct hx *t = *state;
    const char *path = plugin_copy(t, 0777, 0755), *err;

    write_whoami_conf(t, NULL, path, NULL);
    assert_int_equal(check_config(t, &err), 1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "directory"));
    assert_non_null(strstr(err, "writable by group or others"));
}

static void plugin_in_a_sticky_world_writable_directory_loads(void **state)
{
    struct hx *t = *state;
    const char *path = plugin_copy(t, 01777, 0755), *err;

    write_whoami_conf(t, NULL, path, NULL);
    assert_int_equal(check_config(t, &err), 0);
}

static void daemon_does_not_start_with_a_refused_plugin(void **state)
{
    struct hx *t = *state;
    const char *path = plugin_copy(t, 0777, 0755);
    char *argv[] = {DAEMON, "-c", t->conf, "-f", NULL};
    int status;

    write_whoami_conf(t, NULL, path, NULL);
    status = td_wait_exit(td_spawn(argv, t->out, t->log));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_non_null(strstr(hx_read_file(t->log), path));
    assert_non_null(strstr(hx_read_file(t->log), "writable by group"));
    assert_int_equal(access(t->sock, F_OK), -1);
}

static void plugin_owned_by_another_user_is_refused(void **state)
{
    struct hx *t = *state;
    const struct passwd *pw;
    const char *path, *err;
    char want[64];

    NEED_ROOT();
    pw = other_user();
    path = plugin_copy(t, 0755, 0755);
    assert_int_equal(chown(path, pw->pw_uid, pw->pw_gid), 0);
    write_whoami_conf(t, NULL, path, NULL);
    assert_int_equal(check_config(t, &err), 1);
    snprintf(want, sizeof want, "owned by uid %u", (unsigned)pw->pw_uid);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, want));
    write_whoami_conf(t, "strict_permissions = false;", path, NULL);
    assert_int_equal(check_config(t, &err), 0);
}

/* ---- the socket and the uid lists ---- */

static void socket_gets_the_configured_mode(void **state)
{
    struct hx *t = *state;
    struct stat st;

    write_whoami_conf(t, "socket_mode = \"0640\";", WHOAMI, NULL);
    td_start(t);
    assert_int_equal(stat(t->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void socket_gets_the_configured_group(void **state)
{
    struct hx *t = *state;
    const struct passwd *pw;
    struct group *gr;
    char host[160];
    struct stat st;

    NEED_ROOT();
    pw = other_user();
    gr = getgrgid(pw->pw_gid);
    assert_non_null(gr);
    snprintf(host, sizeof host, "socket_group = \"%s\";", gr->gr_name);
    write_whoami_conf(t, host, WHOAMI, NULL);
    td_start(t);
    assert_int_equal(stat(t->sock, &st), 0);
    assert_int_equal(st.st_gid, pw->pw_gid);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* What a client running as the second user checks; each returns 0 when
 * it saw what it should. */
enum as_other {
    CONNECT_REFUSED,
    SUBMIT_OK_ADMIN_REFUSED,
    ADMIN_OK,
    PEER_REFUSED,
    CANCEL_OF_ROOTS_TASK_REFUSED,
};

static int other_checks(const struct hx *t, enum as_other what, uint64_t id)
{
    th_client *c;
    th_result r;
    char v[64];
    int rc;

    rc = th_client_connect(&c, t->sock, NULL, 0);
    if (what == CONNECT_REFUSED)
        return rc == TH_EPERM ? 0 : 10;
    if (rc < 0)
        return 11;
    switch (what) {
    case SUBMIT_OK_ADMIN_REFUSED:
        if (th_client_call(c, "echo", "echo", "hi", 2, NULL, &r) != 0 ||
            r.state != TH_STATE_OK)
            return 12;
        th_client_result_free(&r);
        if (th_client_restart(c, "echo", 0) != TH_EPERM)
            return 13;
        if (th_client_reload(c, NULL, 0) != TH_EPERM)
            return 14;
        if (th_client_shutdown(c, TH_CLOSE_GRACEFUL) != TH_EPERM)
            return 15;
        break;
    case ADMIN_OK:
        if (th_client_restart(c, "echo", 0) != 0)
            return 16;
        break;
    case PEER_REFUSED:
        rc = th_client_ping(c, v, sizeof v);
        if (rc != TH_EIO || !strstr(th_client_error(c), "permission denied"))
            return 17;
        break;
    case CANCEL_OF_ROOTS_TASK_REFUSED:
        if (th_client_cancel_task(c, id) != TH_EPERM)
            return 18;
        break;
    default:
        return 19;
    }
    th_client_close(c);
    return 0;
}

/* Runs other_checks() in a child switched to the second user; fails the
 * test with the child's code. */
/* A supplementary group the other user's client holds, or -1: none. */
static long other_extra_gid = -1;

static void as_other(const struct hx *t, enum as_other what, uint64_t id)
{
    const struct passwd *pw = other_user();
    gid_t extra = (gid_t)other_extra_gid;
    pid_t pid;
    int status;

    assert_int_equal(chmod(t->dir, 0755), 0); /* let it reach the socket */
    pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        if (setgroups(other_extra_gid < 0 ? 0 : 1, &extra) == -1 ||
            setgid(pw->pw_gid) == -1 || setuid(pw->pw_uid) == -1)
            _exit(2);
        _exit(other_checks(t, what, id));
    }
    status = td_wait_exit(pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0) {
        hx_show_log(t, 200);
        fail_msg("client as uid %u: check %d failed with %d",
                 (unsigned)pw->pw_uid, what, WEXITSTATUS(status));
    }
}

static void socket_mode_keeps_other_users_out(void **state)
{
    struct hx *t = *state;

    NEED_ROOT();
    write_whoami_conf(t, "socket_mode = \"0600\";", WHOAMI, NULL);
    td_start(t);
    as_other(t, CONNECT_REFUSED, 0);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void unlisted_uid_is_refused_by_the_daemon(void **state)
{
    struct hx *t = *state;

    NEED_ROOT();
    write_whoami_conf(t, "socket_mode = \"0666\";", WHOAMI, NULL);
    td_start(t);
    as_other(t, PEER_REFUSED, 0);
    td_wait_log(t, "may not use this daemon");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void listed_submitter_submits_but_cannot_administer(void **state)
{
    struct hx *t = *state;
    char host[160];

    NEED_ROOT();
    snprintf(host, sizeof host,
             "socket_mode = \"0666\"; submit_users = [ %u ];",
             (unsigned)other_user()->pw_uid);
    write_whoami_conf(t, host, WHOAMI, NULL);
    td_start(t);
    as_other(t, SUBMIT_OK_ADMIN_REFUSED, 0);
    td_wait_log(t, "refused: not an admin");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void submitter_group_lets_its_members_submit(void **state)
{
    struct hx *t = *state;
    char host[160];

    NEED_ROOT();
    snprintf(host, sizeof host,
             "socket_mode = \"0666\"; submit_groups = [ %u ];",
             (unsigned)other_user()->pw_gid);
    write_whoami_conf(t, host, WHOAMI, NULL);
    td_start(t);
    as_other(t, SUBMIT_OK_ADMIN_REFUSED, 0);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void submitter_group_admits_its_supplementary_members(void **state)
{
    struct hx *t = *state;
    char host[160];

    NEED_ROOT();
    /* a group that is not the user's primary one: as usermod -aG gives */
    snprintf(host, sizeof host,
             "socket_mode = \"0666\"; submit_groups = [ %u ];",
             (unsigned)other_user()->pw_gid + 4321);
    write_whoami_conf(t, host, WHOAMI, NULL);
    td_start(t);
    as_other(t, PEER_REFUSED, 0); /* without the group */
    other_extra_gid = (long)other_user()->pw_gid + 4321;
    as_other(t, SUBMIT_OK_ADMIN_REFUSED, 0);
    other_extra_gid = -1;
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void listed_admin_may_restart_a_pool(void **state)
{
    struct hx *t = *state;
    char host[160];

    NEED_ROOT();
    snprintf(host, sizeof host, "socket_mode = \"0666\"; admin_users = \"%s\";",
             other_user()->pw_name);
    write_whoami_conf(t, host, WHOAMI, NULL);
    td_start(t);
    as_other(t, ADMIN_OK, 0);
    td_wait_log(t, "restart of echo requested by uid");
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void on_accepted(uint64_t tag, uint64_t id, void *arg)
{
    (void)tag;
    *(uint64_t *)arg = id;
}

static void on_done(const th_result *r, void *arg)
{
    *(int *)arg = r->state;
}

static void submitter_cannot_cancel_another_users_task(void **state)
{
    struct hx *t = *state;
    char host[200];
    uint64_t id = 0, tag = 0;
    int done = -1;
    th_client *c;
    double end;

    NEED_ROOT();
    snprintf(host, sizeof host,
             "socket_mode = \"0666\"; submit_users = [ 0, %u ];"
             " admin_users = [ 0 ];",
             (unsigned)other_user()->pw_uid);
    write_whoami_conf(t, host, WHOAMI, NULL);
    td_start(t);
    c = td_connect(t);
    th_client_on_accept(c, on_accepted, &id);
    assert_int_equal(th_client_submit(c, "sleep", "sleep", "60000", 5, NULL,
                                      on_done, &done, &tag),
                     0);
    end = hx_now() + DEADLINE;
    while (id == 0 && hx_now() < end)
        th_client_step(c, 10);
    assert_true(id != 0);
    as_other(t, CANCEL_OF_ROOTS_TASK_REFUSED, id);
    assert_int_equal(done, -1); /* still running */
    assert_int_equal(th_client_cancel(c, tag), 0);
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    assert_int_equal(done, TH_STATE_CANCELLED);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(workers_run_as_the_pool_user),
        T(workers_run_as_a_user_given_by_number),
        T(workers_run_as_the_pool_group),
        T(pool_user_is_ignored_with_a_warning_when_not_root),
        T(workers_have_no_new_privs),
        T(workers_hold_only_their_socket_and_the_log),
        T(workers_hold_only_their_socket_without_a_log_file),
        T(pool_rlimits_are_applied),
        T(rlimits_left_unset_are_the_daemons),
        T(group_writable_plugin_is_refused),
        T(group_writable_plugin_loads_without_strict_permissions),
        T(plugin_in_a_world_writable_directory_is_refused),
        T(plugin_in_a_sticky_world_writable_directory_loads),
        T(daemon_does_not_start_with_a_refused_plugin),
        T(plugin_owned_by_another_user_is_refused),
        T(socket_gets_the_configured_mode),
        T(socket_gets_the_configured_group),
        T(socket_mode_keeps_other_users_out),
        T(unlisted_uid_is_refused_by_the_daemon),
        T(listed_submitter_submits_but_cannot_administer),
        T(submitter_group_lets_its_members_submit),
        T(submitter_group_admits_its_supplementary_members),
        T(listed_admin_may_restart_a_pool),
        T(submitter_cannot_cancel_another_users_task),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
