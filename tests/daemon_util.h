/* daemon_util.h - the real taskhostd on a temporary config, for end-to-end
 * tests (the approach of test_daemon.c, shared by test_badinput.c and
 * test_privilege.c). Every wait polls with a deadline; nothing sleeps to
 * synchronise. Include after <cmocka.h>.
 */
#ifndef TH_TESTS_DAEMON_UTIL_H
#define TH_TESTS_DAEMON_UTIL_H

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_wire.h"
#include "taskhost_client.h"

#define DAEMON TOP_BUILDDIR "/host/taskhostd"
#define CTL TOP_BUILDDIR "/host/taskhostctl"
#define PLUGINS TOP_BUILDDIR "/plugins"
#define TEST_PLUGINS TOP_BUILDDIR "/tests/plugins/.libs"
#define DEADLINE 20.0 /* seconds any single wait may take */

struct td {
    char dir[64];
    char conf[128];
    char sock[128];
    char log[128];
    char out[128]; /* the daemon's stdout */
    pid_t pid;
};

static inline double td_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void td_pause_ms(int ms)
{
    poll(NULL, 0, ms);
}

/* Makes a fresh directory /tmp/NAME.XXXXXX and the paths in it. */
static inline void td_init(struct td *t, const char *name)
{
    memset(t, 0, sizeof *t);
    snprintf(t->dir, sizeof t->dir, "/tmp/%s.XXXXXX", name);
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->conf, sizeof t->conf, "%s/taskhost.conf", t->dir);
    snprintf(t->sock, sizeof t->sock, "%s/taskhost.sock", t->dir);
    snprintf(t->log, sizeof t->log, "%s/taskhost.log", t->dir);
    snprintf(t->out, sizeof t->out, "%s/daemon.out", t->dir);
}

/* Writes t->conf: a host group (socket, log file, `host_extra`), then
 * `rest` (plugins and pools). */
static inline void td_write_conf(const struct td *t, const char *host_extra,
                                 const char *rest)
{
    FILE *f = fopen(t->conf, "w");

    assert_non_null(f);
    fprintf(f,
            "host: { socket = \"%s\"; log = \"%s\"; log_level = \"info\";\n"
            "        shutdown_timeout = 10.0; %s };\n%s",
            t->sock, t->log, host_extra ? host_extra : "", rest);
    fclose(f);
}

/* Runs argv as uid/gid (-1: as we are) with stdin from /dev/null, stdout
 * into `out` and stderr appended to `err`; returns the child's pid. */
static inline pid_t td_spawn_as(char *const argv[], const char *out,
                                const char *err, uid_t uid, gid_t gid)
{
    pid_t pid = fork();

    assert_true(pid != -1);
    if (pid == 0) {
        if (uid != (uid_t)-1 && (setgroups(0, NULL) == -1 ||
                                 setgid(gid) == -1 || setuid(uid) == -1))
            _exit(125);
        int fi = open("/dev/null", O_RDONLY);
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fi == -1 || fo == -1 || fe == -1)
            _exit(126);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static inline pid_t td_spawn(char *const argv[], const char *out,
                             const char *err)
{
    return td_spawn_as(argv, out, err, (uid_t)-1, (gid_t)-1);
}

/* Waits up to `limit` seconds for pid to exit; returns its wait status. */
static inline int td_wait_exit_within(pid_t pid, double limit)
{
    double end = td_now() + limit;
    int status;
    pid_t r;

    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && td_now() < end)
        td_pause_ms(5);
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("process %d did not exit within %.0f s", (int)pid, limit);
    }
    return status;
}

static inline int td_wait_exit(pid_t pid)
{
    return td_wait_exit_within(pid, DEADLINE);
}

/* Reads a file (at most 64 KiB) into a static buffer; "" if missing. */
static inline const char *td_read_file(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    size_t n = 0;

    if (f != NULL) {
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static inline void td_show_log(const struct td *t)
{
    fprintf(stderr, "---- %s\n%s----\n", t->log, td_read_file(t->log));
}

static inline int td_ping(const struct td *t)
{
    th_client *c;
    char v[64];
    int rc;

    if (th_client_connect(&c, t->sock, NULL, 0) < 0)
        return -1;
    rc = th_client_ping(c, v, sizeof v);
    th_client_close(c);
    return rc;
}

/* Starts the daemon on t->conf as uid/gid (-1: as we are) and polls
 * until it answers a ping. */
static inline void td_start_as(struct td *t, uid_t uid, gid_t gid)
{
    char *argv[] = {DAEMON, "-c", t->conf, "-f", NULL};
    double end = td_now() + DEADLINE;
    int status;

    t->pid = td_spawn_as(argv, t->out, t->log, uid, gid);
    while (td_ping(t) != 0) {
        if (waitpid(t->pid, &status, WNOHANG) == t->pid) {
            td_show_log(t);
            t->pid = 0;
            fail_msg("taskhostd exited before it was ready");
        }
        if (td_now() > end) {
            td_show_log(t);
            fail_msg("taskhostd not ready in time");
        }
        td_pause_ms(5);
    }
}

static inline void td_start(struct td *t)
{
    td_start_as(t, (uid_t)-1, (gid_t)-1);
}

/* Signals the daemon; returns its exit status, -1 if it died of a signal. */
static inline int td_stop(struct td *t, int sig)
{
    int status;

    if (t->pid <= 0)
        return -1;
    kill(t->pid, sig);
    status = td_wait_exit(t->pid);
    t->pid = 0;
    if (!WIFEXITED(status)) {
        td_show_log(t);
        return -1;
    }
    return WEXITSTATUS(status);
}

/* Stops a daemon still running and removes the directory. */
static inline void td_cleanup(struct td *t)
{
    char cmd[160];

    if (t->pid > 0 && td_stop(t, SIGQUIT) != 0)
        fprintf(stderr, "taskhostd did not exit cleanly\n");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    (void)!system(cmd);
}

/* Polls until the daemon's log holds `needle`. */
static inline void td_wait_log(const struct td *t, const char *needle)
{
    double end = td_now() + DEADLINE;

    while (strstr(td_read_file(t->log), needle) == NULL) {
        if (td_now() > end) {
            td_show_log(t);
            fail_msg("no '%s' in the log", needle);
        }
        td_pause_ms(5);
    }
}

static inline th_client *td_connect(const struct td *t)
{
    th_client *c;
    char err[256];

    if (th_client_connect(&c, t->sock, err, sizeof err) < 0)
        fail_msg("connect: %s", err);
    return c;
}

static inline int td_raw_connect(const struct td *t)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    struct timeval tv = {.tv_sec = (time_t)DEADLINE};

    assert_true(fd != -1);
    /* a read that gets nothing in time fails instead of hanging */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    strcpy(sa.sun_path, t->sock);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Reads from fd until one whole frame is in buf (cap bytes) or the peer
 * closes; returns its size, 0 on EOF before a frame. */
static inline long td_read_frame(int fd, uint8_t *buf, size_t cap,
                                 struct proto_frame *f)
{
    size_t got = 0, need = PROTO_HEADER_SIZE;
    long n = 0;

    for (;;) {
        n = proto_decode(buf, got, cap, f, &need);
        if (n != 0)
            return n;
        assert_true(need <= cap);
        ssize_t r = read(fd, buf + got, need - got);
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
}

#endif /* TH_TESTS_DAEMON_UTIL_H */
