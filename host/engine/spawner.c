/* spawner.c - starting a pool's spawner and talking to it (spawner.h,
 * spawn_wire.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "plugin.h"
#include "settings.h"
#include "spawn_wire.h"
#include "spawner.h"
#include "taskhost.h"

#ifndef SPAWNER_PATH
#define SPAWNER_PATH "/usr/local/libexec/taskhost/taskhost-spawner"
#endif
#define SPAWNER_NAME "taskhost-spawner"
#define CLOSE_WAIT_MS 1000 /* for a spawner to exit once told to */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Whether `dir`/taskhost-spawner is executable; if so it is put in out. */
static int try_dir(const char *dir, size_t dirlen, char *out, size_t len)
{
    if ((size_t)snprintf(out, len, "%.*s/" SPAWNER_NAME, (int)dirlen, dir) >=
        len)
        return 0;
    return access(out, X_OK) == 0;
}

/* The spawner program: $TASKHOST_SPAWNER; else next to this program (or
 * one directory up, for libtool's .libs), which finds the one of a build
 * tree; else the installed one. */
const char *spawner_program(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("TASKHOST_SPAWNER");
    if (env != NULL && *env)
        return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL && try_dir(exe, (size_t)(slash - exe), path,
                                     sizeof path))
            return path;
        *slash = '\0';
        slash = strrchr(exe, '/');
        if (slash != NULL && try_dir(exe, (size_t)(slash - exe), path,
                                     sizeof path))
            return path;
    }
    return SPAWNER_PATH;
}

/* The spawner's descriptors, in the child: high[i] (above 4, or -1)
 * becomes 3 + i, stdin reads /dev/null, everything from `first` on is
 * closed. Returns 0 or an errno value. */
static int spawn_actions(posix_spawn_file_actions_t *fa, const int high[2],
                         int first)
{
    int rc = 0;

    for (int i = 0; i < 2 && rc == 0; i++)
        if (high[i] >= 0)
            rc = posix_spawn_file_actions_adddup2(fa, high[i], SPW_FD_REQ + i);
    if (rc == 0)
        rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_addclosefrom_np(fa, first);
    return rc;
}

/* Starts the spawner program at `path` with `req` and `ev` as its
 * descriptors 3 and 4, stdin on /dev/null, nothing else open, no signal
 * blocked (the log's descriptor comes with SPW_HELLO, so that a spawner
 * started ahead of need logs where the host logs when it is given its
 * pool, not where it logged at the start). posix_spawn() runs it
 * from a child that shares this process's memory until the exec (vfork
 * semantics): no page table of the host is copied nor torn down, so a
 * start costs the same whatever the host's size (a fork of a 50 MB
 * process alone takes about 1.5 ms). Returns 0 or an errno value. */
static int spawn_program(const char *path, int req, int ev, pid_t *pid)
{
    int fds[2] = {req, ev}, high[2] = {-1, -1}, rc = 0;
    char *argv[] = {(char *)SPAWNER_NAME, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none;

    /* above 3-4 first, so that no dup2 overwrites another's source */
    for (int i = 0; i < 2 && rc == 0; i++)
        if ((high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10)) == -1)
            rc = errno;
    sigemptyset(&none);
    if (rc == 0 && (rc = posix_spawn_file_actions_init(&fa)) == 0) {
        if ((rc = posix_spawnattr_init(&attr)) == 0) {
            rc = spawn_actions(&fa, high, SPW_FD_EVENTS + 1);
            if (rc == 0)
                rc = posix_spawnattr_setsigmask(&attr, &none);
            if (rc == 0)
                rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
            if (rc == 0)
                rc = posix_spawn(pid, path, &fa, &attr, argv, environ);
            posix_spawnattr_destroy(&attr);
        }
        posix_spawn_file_actions_destroy(&fa);
    }
    for (int i = 0; i < 2; i++)
        if (high[i] >= 0)
            close(high[i]);
    return rc;
}

static int send_hello(struct spawner *sp, const struct spawner_opts *o)
{
    struct spw_hello h = {
        .version = SPW_VERSION,
        .probe = o->probe,
        .strict = o->strict,
        .uid = o->uid,
        .gid = o->gid,
        .host_pid = (int32_t)getpid(),
        .measure_rss = o->measure_rss,
        .log_kind = log_kind(),
        .log_level = log_level(),
        .rlimit_nofile = o->rlimit_nofile,
        .rlimit_core = o->rlimit_core,
        .address_space_limit = o->address_space_limit,
        .check = o->check,
    };
    spw_begin(&sp->msg, SPW_HELLO);
    if (spw_put(&sp->msg, &h, sizeof h) < 0 ||
        spw_put_str(&sp->msg, o->path) < 0 ||
        spw_put_str(&sp->msg, o->pool ? o->pool : "") < 0 ||
        settings_pack(o->settings, &sp->msg) < 0)
        return -1;
    /* where the host logs now: its log file, or its stderr */
    int log = log_kind() == 2 ? log_file_fd() : log_kind() == 0 ? 2 : -1;
    return spw_send(sp->req, &sp->msg, &log, log >= 0);
}

/* Starts the spawner program. Returns 0 or -1 (err set). */
static int launch(struct spawner *sp, char *err, size_t errlen)
{
    int req[2], ev[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, req) == -1) {
        set_err(err, errlen, "socketpair: %s", strerror(errno));
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ev) == -1) {
        set_err(err, errlen, "socketpair: %s", strerror(errno));
        close(req[0]), close(req[1]);
        return -1;
    }
    const char *path = spawner_program();
    int rc = spawn_program(path, req[1], ev[1], &sp->pid);
    close(req[1]);
    close(ev[1]);
    sp->req = req[0];
    sp->events.fd = ev[0];
    if (rc != 0) {
        sp->pid = -1;
        set_err(err, errlen, "cannot run the spawner program %s: %s", path,
                strerror(rc));
        return -1;
    }
    sp->pidfd = (int)syscall(SYS_pidfd_open, sp->pid, 0);
    return 0;
}

/* Waits for the spawner to exit, at most ms milliseconds; returns its
 * wait status, or -1 when it did not exit (it is then killed and
 * reaped, and *hung set). */
static int wait_exit(struct spawner *sp, int ms, int *hung)
{
    if (sp->pid <= 0)
        return -1;
    if (sp->pidfd >= 0) {
        struct pollfd pfd = {.fd = sp->pidfd, .events = POLLIN};
        while (poll(&pfd, 1, ms) == -1 && errno == EINTR)
            ;
    }
    int status = 0;
    pid_t r = waitpid(sp->pid, &status, WNOHANG);
    if (r == 0) {
        if (hung)
            *hung = 1;
        kill(sp->pid, SIGKILL);
        waitpid(sp->pid, &status, 0);
        status = -1;
    }
    sp->pid = -1;
    return r == -1 ? -1 : status;
}

/* One line on how a spawner ended while loading the plugin. */
static void describe_death(struct spawner *sp, const char *path, int hung,
                           int status, double timeout, char *err,
                           size_t errlen)
{
    if (hung)
        set_err(err, errlen, "%s: the plugin did not finish loading within "
                             "%.3g s (its constructors hang?)", path, timeout);
    else if (status != -1 && WIFSIGNALED(status))
        set_err(err, errlen, "%s: the plugin crashed while loading (killed "
                             "by signal %d, SIG%s)",
                path, WTERMSIG(status),
                sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status))
                                               : "?");
    else if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 127)
        set_err(err, errlen, "%s: cannot run the spawner program %s",
                path, spawner_program());
    else if (status != -1 && WIFEXITED(status))
        set_err(err, errlen, "%s: the plugin exited with status %d while "
                             "loading",
                path, WEXITSTATUS(status));
    else
        set_err(err, errlen, "%s: the plugin's loader went away", path);
    (void)sp;
}

/* Reads SPW_LOADED into a plugin description named `name`. */
static struct plugin *read_loaded(struct spawner *sp, const char *name,
                                  const char *path)
{
    struct spw_reader r;
    spw_reader_init(&r, &sp->msg);
    dev_t dev = (dev_t)spw_get_i64(&r);
    ino_t ino = (ino_t)spw_get_i64(&r);
    struct timespec mtime;
    mtime.tv_sec = (time_t)spw_get_i64(&r);
    mtime.tv_nsec = (long)spw_get_i64(&r);
    char *desc_name = spw_get_str(&r), *version = spw_get_str(&r);
    int64_t n = spw_get_i64(&r);
    char **tasks = NULL;
    struct plugin *p = NULL;
    if (!r.bad && n >= 0 && n <= 65536)
        tasks = calloc((size_t)n + 1, sizeof *tasks);
    for (int64_t i = 0; tasks && i < n && !r.bad; i++)
        tasks[i] = spw_get_str(&r);
    int64_t has_check = spw_get_i64(&r);
    if (tasks != NULL && !r.bad)
        p = plugin_new_probed(name, path, desc_name, version, tasks,
                              (size_t)n, dev, ino, mtime);
    if (p != NULL)
        p->has_check = has_check != 0;
    for (int64_t i = 0; tasks && i < n; i++)
        free(tasks[i]);
    free(tasks);
    free(desc_name);
    free(version);
    return p;
}

/* Waits for the answer to SPW_HELLO. Returns 0, or a code with err set. */
static int await_loaded(struct spawner *sp, const struct spawner_opts *o,
                        const char *name, struct plugin **meta, char *err,
                        size_t errlen)
{
    int type = spw_recv(sp->req, &sp->msg, (int)(o->timeout * 1000), NULL,
                        NULL);
    if (type == SPW_FAILED) {
        struct spw_reader r;
        spw_reader_init(&r, &sp->msg);
        int32_t code;
        spw_get(&r, &code, sizeof code);
        char *line = spw_get_str(&r);
        set_err(err, errlen, "%s", line ? line : "cannot load the plugin");
        free(line);
        return code < 0 ? code : TH_EINVAL;
    }
    if (type != SPW_LOADED) {
        int hung = type == -1 && errno == ETIMEDOUT;
        int status = wait_exit(sp, hung ? 0 : 2000, &hung);
        describe_death(sp, o->path, hung, status, o->timeout, err, errlen);
        return TH_EINVAL;
    }
    if (meta == NULL)
        return 0;
    *meta = read_loaded(sp, name, o->path);
    if (*meta == NULL) {
        set_err(err, errlen, "%s: malformed report from the spawner", o->path);
        return TH_EINVAL;
    }
    return 0;
}

static struct spawner *spawner_alloc(void)
{
    struct spawner *sp = calloc(1, sizeof *sp);
    if (sp == NULL)
        return NULL;
    sp->pid = -1;
    sp->pidfd = -1;
    sp->req = -1;
    sp->events.fd = -1;
    sp->timeout = PLUGIN_LOAD_TIMEOUT;
    return sp;
}

struct spawner *spawner_launch(char *err, size_t errlen)
{
    struct spawner *sp = spawner_alloc();
    if (sp == NULL) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    if (launch(sp, err, errlen) < 0) {
        spawner_close(sp);
        return NULL;
    }
    return sp;
}

int spawner_start(struct spawner *spare, const struct spawner_opts *o,
                  const char *name, struct spawner **out,
                  struct plugin **meta, char *err, size_t errlen)
{
    struct spawner *sp = spare;
    int sent = 0, rc = TH_EIO;

    if (sp != NULL) {
        sent = send_hello(sp, o) == 0;
        if (!sent) { /* a spare that died unnoticed: as if none */
            spawner_close(sp);
            sp = NULL;
        }
    }
    if (sp == NULL && (sp = spawner_launch(err, errlen)) == NULL)
        return TH_EIO;
    sp->timeout = o->timeout;
    if (!sent && send_hello(sp, o) < 0) {
        int hung = 0, status = wait_exit(sp, 2000, &hung);
        describe_death(sp, o->path, hung, status, o->timeout, err, errlen);
    } else {
        rc = await_loaded(sp, o, name, meta, err, errlen);
    }
    if (rc == 0 && o->probe)
        wait_exit(sp, (int)(o->timeout * 1000), NULL);
    if (rc < 0) {
        spawner_close(sp);
        return rc;
    }
    *out = sp;
    return 0;
}

static void on_events(struct loop_io *io, uint32_t events)
{
    struct spawner *sp =
        (struct spawner *)((char *)io - offsetof(struct spawner, events));
    (void)events;
    for (;;) {
        int type = spw_recv(sp->events.fd, &sp->msg, 0, NULL, NULL);
        if (type == -1 && (errno == ETIMEDOUT || errno == EAGAIN))
            return;
        if (type <= 0) {
            loop_del(sp->loop, &sp->events);
            sp->loop = NULL;
            sp->on_exit(sp->arg, 0, 0);
            return;
        }
        if (type != SPW_EXITED)
            continue;
        struct spw_reader r;
        spw_reader_init(&r, &sp->msg);
        int32_t v[2];
        spw_get(&r, v, sizeof v);
        uint64_t serial = (uint64_t)spw_get_i64(&r);
        if (!r.bad && serial != 0)
            sp->on_exit(sp->arg, serial, (int)v[1]);
    }
}

int spawner_watch(struct spawner *sp, struct loop *loop, spawner_exit_fn fn,
                  void *arg)
{
    sp->on_exit = fn;
    sp->arg = arg;
    sp->events.cb = on_events;
    fcntl(sp->events.fd, F_SETFL, O_NONBLOCK);
    if (loop_add(loop, &sp->events, LOOP_READ) < 0)
        return -1;
    sp->loop = loop;
    return 0;
}

int spawner_spawn(struct spawner *sp, struct spawned *w, char *err,
                  size_t errlen)
{
    spw_begin(&sp->msg, SPW_SPAWN);
    if (spw_send(sp->req, &sp->msg, NULL, 0) < 0) {
        set_err(err, errlen, "the spawner is gone: %s", strerror(errno));
        return -1;
    }
    int fds[3] = {-1, -1, -1}, nfds = 3;
    int type = spw_recv(sp->req, &sp->msg, (int)(sp->timeout * 1000), fds,
                        &nfds);
    struct spw_reader r;
    spw_reader_init(&r, &sp->msg);
    if (type == SPW_WORKER && (nfds == 3 || nfds == 2)) {
        int32_t pid;
        spw_get(&r, &pid, sizeof pid);
        w->pid = pid;
        w->serial = (uint64_t)spw_get_i64(&r);
        w->sock = fds[0];
        w->arena = nfds == 3 ? fds[1] : -1;
        w->pidfd = fds[nfds - 1];
        return 0;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (type == SPW_FAILED) {
        int32_t code;
        spw_get(&r, &code, sizeof code);
        char *line = spw_get_str(&r);
        set_err(err, errlen, "%s", line ? line : "spawn failed");
        free(line);
    } else if (type == -1 && errno == ETIMEDOUT) {
        set_err(err, errlen, "the spawner did not answer within %.3g s",
                sp->timeout);
    } else {
        set_err(err, errlen, "the spawner is gone");
    }
    return -1;
}

void spawner_close(struct spawner *sp)
{
    if (sp == NULL)
        return;
    if (sp->loop != NULL)
        loop_del(sp->loop, &sp->events);
    if (sp->req >= 0)
        close(sp->req);
    if (sp->events.fd >= 0)
        close(sp->events.fd);
    wait_exit(sp, CLOSE_WAIT_MS, NULL);
    if (sp->pidfd >= 0)
        close(sp->pidfd);
    buf_free(&sp->msg);
    free(sp);
}
