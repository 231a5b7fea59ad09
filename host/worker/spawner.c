/* spawner.c - taskhost-spawner: the process a pool's workers are forked
 * from (spawn_wire.h gives the messages).
 *
 * The host starts it with posix_spawn() (an exec), so it begins with
 * nothing of the host's memory: no client's input, no other worker's
 * arena. It may be started ahead of need, as the host's spare (spare.h),
 * and wait idle for its pool. It then
 *   1. reads who to be, what to load and where to log (SPW_HELLO, with
 *      the host's log descriptor),
 *   2. applies the pool's resource limits, takes the pool's group and
 *      user, sets its parent-death signal (after the switch, which would
 *      clear it) and no-new-privileges,
 *   3. loads the plugin (dlopen: the plugin's constructors run here, as
 *      the pool's user, never in the host) and reports its tasks,
 *   4. forks a worker for each SPW_SPAWN, hands the host the worker's
 *      socket, arena and pidfd, and reports each worker's exit.
 * A worker therefore holds its own socket and arena and nothing else of
 * the host's. The spawner is the child subreaper of its workers' trees:
 * what a task detaches comes back here when its worker exits, and is
 * killed. When the host closes the request socket the spawner ends what
 * is left and exits; when the host dies, the spawner and, through their
 * own parent-death signal, its workers die with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "children.h"
#include "log.h"
#include "plugin.h"
#include "settings.h"
#include "spawn_wire.h"
#include "worker_process.h"
#include "worker_wire.h"

#define MAX_WORKERS_TRACKED 4096

static struct {
    struct spw_hello hello;
    char *path, *pool;
    struct th_settings *settings;
    struct plugin *plugin;
    struct buf msg;
    pid_t workers[MAX_WORKERS_TRACKED];
    uint64_t serials[MAX_WORKERS_TRACKED];
    uint64_t next_serial;
    int nworkers;
    int sigfd;
    pid_t self;
} s = {.sigfd = -1};

static void fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Answers SPW_FAILED with one line and exits. */
static void fail(int code, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    spw_begin(&s.msg, SPW_FAILED);
    int32_t c = code;
    spw_put(&s.msg, &c, sizeof c);
    spw_put_str(&s.msg, line);
    spw_send(SPW_FD_REQ, &s.msg, NULL, 0);
    _exit(1);
}

/* Puts the host's log descriptor, which came with SPW_HELLO, where this
 * process and its workers log: SPW_FD_LOG for a file, 2 for stderr. */
static void take_log(int fd, int kind)
{
    int to = kind == 2 ? SPW_FD_LOG : kind == 0 ? 2 : -1;
    if (fd < 0)
        return;
    if (fd == to)
        fcntl(fd, F_SETFD, 0);
    else if (to >= 0)
        dup2(fd, to); /* without close-on-exec, as the workers' own */
    if (fd != to)
        close(fd);
}

/* Waits for SPW_HELLO: a spawner may be started long before it is given
 * its pool, and waits here, idle, until then. */
static void read_hello(void)
{
    int log = -1, nfds = 1;
    int type = spw_recv(SPW_FD_REQ, &s.msg, -1, &log, &nfds);
    if (type != SPW_HELLO)
        _exit(2);
    struct spw_reader r;
    spw_reader_init(&r, &s.msg);
    spw_get(&r, &s.hello, sizeof s.hello);
    s.path = spw_get_str(&r);
    s.pool = spw_get_str(&r);
    s.settings = settings_unpack(&r);
    if (r.bad || s.hello.version != SPW_VERSION)
        fail(TH_EINVAL, "taskhost-spawner: a host of another version (%d, "
                        "this spawner speaks %d)",
             s.hello.version, SPW_VERSION);
    take_log(nfds == 1 ? log : -1, s.hello.log_kind);
    log_inherit(s.hello.log_kind, nfds == 1 ? SPW_FD_LOG : -1,
                s.hello.log_level);
    if (s.pool[0])
        log_set_tag(s.pool);
}

static void set_limit(int resource, int64_t value)
{
    struct rlimit rl = {(rlim_t)value, (rlim_t)value};
    if (setrlimit(resource, &rl) == -1)
        log_warn("cannot set resource limit %d to %lld: %s", resource,
                 (long long)value, strerror(errno));
}

/* The pool's limits, then its group and user; then what a change of
 * user would have cleared: the parent-death signal. */
static void become_pool(void)
{
    const struct spw_hello *h = &s.hello;
    if (h->address_space_limit > 0)
        set_limit(RLIMIT_AS, (int64_t)h->address_space_limit);
    if (h->rlimit_nofile > 0)
        set_limit(RLIMIT_NOFILE, h->rlimit_nofile);
    if (h->rlimit_core >= 0)
        set_limit(RLIMIT_CORE, h->rlimit_core);
    if (h->gid >= 0 && (setgroups(0, NULL) == -1 || setgid((gid_t)h->gid) == -1))
        fail(TH_EPERM, "cannot switch to gid %d: %s", h->gid, strerror(errno));
    if (h->uid >= 0 && setuid((uid_t)h->uid) == -1)
        fail(TH_EPERM, "cannot switch to uid %d: %s", h->uid, strerror(errno));
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != h->host_pid)
        _exit(0); /* the host is gone already */
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    char name[16];
    snprintf(name, sizeof name, "th-spawn:%s", s.pool);
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

static void report_loaded(void)
{
    const struct plugin *p = s.plugin;
    spw_begin(&s.msg, SPW_LOADED);
    spw_put_i64(&s.msg, (int64_t)p->dev);
    spw_put_i64(&s.msg, (int64_t)p->ino);
    spw_put_i64(&s.msg, (int64_t)p->mtime.tv_sec);
    spw_put_i64(&s.msg, (int64_t)p->mtime.tv_nsec);
    spw_put_str(&s.msg, p->desc.name);
    spw_put_str(&s.msg, p->desc.version);
    spw_put_i64(&s.msg, (int64_t)p->ntasks);
    for (size_t i = 0; i < p->ntasks; i++)
        spw_put_str(&s.msg, p->tasks[i].name);
    spw_put_i64(&s.msg, p->has_check);
    if (spw_send(SPW_FD_REQ, &s.msg, NULL, 0) < 0)
        fail(TH_EINVAL, "%s: too many or too long task names to report",
             s.path);
}

/* A plugin that crashes while loading dies of its signal, whatever
 * handlers this program was started with (a sanitizer's, say): the host
 * names the signal. */
static void default_fault_signals(void)
{
    const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], SIG_DFL);
}

/* The plugin's check() of the pool's settings, when asked: here, as the
 * pool's user, before any worker; a refusal is the plugin's own line. */
static void check_settings(void)
{
    char msg[1024] = "";
    if (!s.hello.check || s.plugin->desc.check == NULL)
        return;
    int rc = s.plugin->desc.check(s.settings, msg, sizeof msg);
    msg[sizeof msg - 1] = '\0';
    if (rc < 0)
        fail(TH_ECONFIG, "%s", msg[0] ? msg : th_strerror(rc));
}

static void load(void)
{
    char err[768];
    default_fault_signals();
    int rc = plugin_load("plugin", s.path, s.hello.strict, &s.plugin, err,
                         sizeof err);
    if (rc < 0)
        fail(rc, "%s", err);
    check_settings();
    report_loaded();
}

/* ---- workers ---- */

static int is_worker(void *arg, pid_t pid)
{
    (void)arg;
    for (int i = 0; i < s.nworkers; i++)
        if (s.workers[i] == pid)
            return 1;
    return 0;
}

/* Forgets worker pid; returns its serial. */
static uint64_t forget_worker(pid_t pid)
{
    for (int i = 0; i < s.nworkers; i++)
        if (s.workers[i] == pid) {
            uint64_t serial = s.serials[i];
            s.nworkers--;
            s.workers[i] = s.workers[s.nworkers];
            s.serials[i] = s.serials[s.nworkers];
            return serial;
        }
    return 0;
}

static void track_worker(pid_t pid)
{
    s.workers[s.nworkers] = pid;
    s.serials[s.nworkers++] = ++s.next_serial;
}

/* In the new worker: maps its arena, lets go of the spawner's own
 * descriptors, and runs the worker. Never returns. */
static void run_worker(int sock, int arena_fd)
{
    void *arena = MAP_FAILED;
    if (arena_fd >= 0) {
        arena = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                     arena_fd, 0);
        close(arena_fd);
    }
    close(SPW_FD_REQ);
    close(SPW_FD_EVENTS);
    close(s.sigfd);
    buf_free(&s.msg);
    struct child_params cp = {
        .fd = sock,
        .plugin = s.plugin,
        .settings = s.settings,
        .pool = s.pool,
        .measure_rss = s.hello.measure_rss,
        .rlimit_core = -1,
        .uid = -1,
        .gid = -1,
        .host_pid = (int)s.self,
        .arena = arena == MAP_FAILED ? NULL : arena,
    };
    setpgid(0, 0); /* a group of its own, killed with it */
    child_main(&cp);
}

/* A fresh arena memfd for a worker, or -1 (payloads then all travel
 * through the socket). */
static int arena_new(void)
{
    int fd = memfd_create("taskhost-arena", MFD_CLOEXEC);
    if (fd != -1 && ftruncate(fd, (off_t)SHM_SIZE) == -1) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void answer_failed(const char *what)
{
    char line[256];
    snprintf(line, sizeof line, "%s: %s", what, strerror(errno));
    int32_t c = TH_EIO;
    spw_begin(&s.msg, SPW_FAILED);
    spw_put(&s.msg, &c, sizeof c);
    spw_put_str(&s.msg, line);
    spw_send(SPW_FD_REQ, &s.msg, NULL, 0);
}

static void spawn(void)
{
    int sv[2];
    if (s.nworkers == MAX_WORKERS_TRACKED) {
        errno = EAGAIN;
        answer_failed("too many workers");
        return;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
        answer_failed("socketpair");
        return;
    }
    int arena = arena_new();
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        run_worker(sv[1], arena);
    }
    close(sv[1]);
    int pidfd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    if (pid == -1 || pidfd == -1) {
        answer_failed(pid == -1 ? "fork" : "pidfd_open");
        if (pid > 0) {
            kill(pid, SIGKILL); /* reaped and reported as any exit */
            track_worker(pid);
        }
    } else {
        track_worker(pid);
        setpgid(pid, pid); /* whichever of the two runs first */
        int fds[3] = {sv[0], arena, pidfd};
        int32_t p32 = (int32_t)pid;
        spw_begin(&s.msg, SPW_WORKER);
        spw_put(&s.msg, &p32, sizeof p32);
        spw_put_i64(&s.msg, (int64_t)s.next_serial);
        if (arena == -1)
            fds[1] = pidfd;
        spw_send(SPW_FD_REQ, &s.msg, fds, arena == -1 ? 2 : 3);
    }
    close(sv[0]);
    if (arena != -1)
        close(arena);
    if (pidfd != -1)
        close(pidfd);
}

/* Reaps every child that ended: a worker's exit is reported (after its
 * process group is killed, while its pid still names the group); any
 * other child is something a worker left behind. */
static void reap(void)
{
    for (;;) {
        siginfo_t si = {0};
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == -1 ||
            si.si_pid == 0)
            break;
        pid_t pid = si.si_pid;
        int worker = is_worker(NULL, pid);
        if (worker)
            kill(-pid, SIGKILL);
        int status = 0;
        if (waitpid(pid, &status, 0) != pid)
            break;
        if (!worker)
            continue;
        uint64_t serial = forget_worker(pid);
        int32_t v[2] = {(int32_t)pid, (int32_t)status};
        spw_begin(&s.msg, SPW_EXITED);
        spw_put(&s.msg, v, sizeof v);
        spw_put_i64(&s.msg, (int64_t)serial);
        spw_send(SPW_FD_EVENTS, &s.msg, NULL, 0);
    }
    struct children_known k = {is_worker, NULL};
    children_sweep(&k);
}

/* The host is done with this pool: what is left goes. */
static void finish(void)
{
    struct children_known k = {is_worker, NULL};
    for (int i = 0; i < 400 && (children_sweep(&k) > 0 || s.nworkers > 0);
         i++) {
        for (int j = 0; j < s.nworkers; j++)
            kill(-s.workers[j], SIGKILL);
        usleep(5000);
        reap();
    }
    _exit(0);
}

static void serve(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    s.sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    for (;;) {
        struct pollfd pfd[2] = {{.fd = SPW_FD_REQ, .events = POLLIN},
                                {.fd = s.sigfd, .events = POLLIN}};
        if (poll(pfd, 2, -1) == -1 && errno != EINTR)
            _exit(3);
        if (pfd[1].revents) {
            struct signalfd_siginfo si;
            while (read(s.sigfd, &si, sizeof si) > 0)
                ;
            reap();
        }
        if (!pfd[0].revents)
            continue;
        int type = spw_recv(SPW_FD_REQ, &s.msg, 0, NULL, NULL);
        if (type == SPW_SPAWN)
            spawn();
        else if (type <= 0 && errno != EAGAIN)
            finish();
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    s.self = getpid();
    read_hello();
    become_pool();
    load();
    if (s.hello.probe)
        _exit(0);
    serve();
    return 0;
}
