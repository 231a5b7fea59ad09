/* main.c - taskhostd (daemon layer): options, start-up, signals, systemd
 * notification, the pidfile, and the run loop.
 *
 * The engine's one loop drives everything: the signalfd of the signals we
 * handle and the server's socket and sessions (listener.c, session.c)
 * are watched in it through th_watch, and th_host_step() serves them with the
 * workers. The signals are blocked before the engine starts, so no worker
 * is ever forked with them deliverable to a handler of ours, and nothing
 * runs in signal context.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "host.h"
#include "http.h"
#include "log.h"
#include "plugin.h"
#include "server.h"
#include "stats.h"
#include "spawner.h"
#include "taskhost_version.h"

#ifndef TH_DEFAULT_CONFIG
#define TH_DEFAULT_CONFIG "/etc/taskhost/taskhost.conf"
#endif

struct daemon {
    char *config;   /* absolute path */
    char *pidfile;  /* absolute path, or NULL */
    int foreground;
    int check_only;
    int ready_fd;   /* pipe to the waiting parent, or -1 */
    char *notify;   /* $NOTIFY_SOCKET, or NULL */
    double watchdog; /* systemd's WatchdogSec in seconds, or 0 */
    th_timer *status_timer; /* STATUS= and WATCHDOG=1 */
    double status_at;      /* when the last STATUS= was sent */
    uint64_t status_done;  /* tasks finished by then */
    int sigfd;
    th_watch *sig_w;
    th_host *host;
    struct server *srv;
    int stopping;   /* 0, or 1 + TH_CLOSE_* */
    char socket[108];     /* as bound */
    char log_target[4096]; /* as opened */
    int pid_written;
};

static struct daemon d = {.ready_fd = -1, .sigfd = -1};

static const int handled[] = {SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT,
                              SIGQUIT};

/* ---- options ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: taskhostd [-c FILE] [options]\n"
            "Runs the pools of taskhost.conf FILE and serves tasks on its "
            "socket.\n\n"
            "  -c, --config FILE   the config file (default: "
            TH_DEFAULT_CONFIG ")\n"
            "  -f, --foreground    do not detach; log to stderr if so "
            "configured\n"
            "      --check-config  validate FILE and its plugins, then exit "
            "0 or 1\n"
            "      --pidfile F     write the daemon's pid to F\n"
            "      --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n\n"
            "Signals: HUP reload, USR1 rolling restart, USR2 reopen the log,\n"
            "TERM/INT graceful shutdown, QUIT fast shutdown.\n"
            "Exit status: 0 stopped cleanly (or --check-config: valid);\n"
            "1 refused to start (the reason is logged) or the config is\n"
            "invalid; 2 usage error. See taskhostd(8).\n");
}

static char *abs_path(const char *path)
{
    char cwd[PATH_MAX], *out;

    if (path[0] == '/')
        return strdup(path);
    if (getcwd(cwd, sizeof cwd) == NULL)
        return NULL;
    out = malloc(strlen(cwd) + strlen(path) + 2);
    if (out)
        sprintf(out, "%s/%s", cwd, path);
    return out;
}

/* Parses argv into d. Returns -1 to exit 0 (help, version), 2 for a
 * usage error, 1 when out of memory, 0 to run. */
static int parse_args(int argc, char **argv)
{
    enum { OPT_CHECK = 256, OPT_PIDFILE, OPT_VERSION };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"foreground", no_argument, NULL, 'f'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"pidfile", required_argument, NULL, OPT_PIDFILE},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *config = TH_DEFAULT_CONFIG, *pidfile = NULL;
    int c;

    while ((c = getopt_long(argc, argv, "c:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'f': d.foreground = 1; break;
        case OPT_CHECK: d.check_only = 1; break;
        case OPT_PIDFILE: pidfile = optarg; break;
        case OPT_VERSION: printf("taskhostd %s\n", TH_VERSION_STRING); return -1;
        case 'h': usage(stdout); return -1;
        default:
            fprintf(stderr, "Try 'taskhostd --help'.\n");
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "taskhostd: unexpected argument '%s' (the config "
                        "is given with -c FILE)\nTry 'taskhostd --help'.\n",
                argv[optind]);
        return 2;
    }
    d.config = abs_path(config);
    d.pidfile = pidfile ? abs_path(pidfile) : NULL;
    if (d.config == NULL || (pidfile && d.pidfile == NULL)) {
        fprintf(stderr, "taskhostd: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* ---- --check-config ---- */

/* Runs every pool's check() of its settings, with the plugins loaded in
 * v (in the order of cfg->plugins). Returns 0 or prints the fault. */
static int check_pools(const struct config *cfg, struct plugin **v)
{
    char why[768];

    for (size_t i = 0; i < cfg->npools; i++) {
        const struct pool_cfg *c = &cfg->pools[i];
        const struct plugin *pl = NULL;
        for (size_t j = 0; j < cfg->nplugins && pl == NULL; j++)
            if (strcmp(cfg->plugins[j].name, c->plugin) == 0)
                pl = v[j];
        if (host_check_pool(c, pl, cfg->host.strict_permissions,
                            host_plugin_timeout(cfg), why, sizeof why) < 0) {
            fprintf(stderr, "%s:%d: pools[%d]: %s\n", c->file, c->line,
                    c->index, why);
            return -1;
        }
    }
    return 0;
}

/* Loads the config and every plugin it names, as a start would, runs the
 * plugins' check() of each pool's settings, and reports the first fault.
 * Returns the exit status. */
static int check_config(void)
{
    struct config *cfg;
    struct plugin **v;
    char err[512];
    int rc = 0;

    if (config_load(d.config, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    v = calloc(cfg->nplugins + 1, sizeof *v);
    for (size_t i = 0; v != NULL && i < cfg->nplugins && rc == 0; i++) {
        const struct plugin_cfg *pc = &cfg->plugins[i];
        if (plugin_probe(pc->name, pc->path, cfg->host.strict_permissions,
                         host_plugin_timeout(cfg), &v[i], err,
                         sizeof err) < 0) {
            fprintf(stderr, "%s:%d: plugins[%d].path: %s\n", pc->file,
                    pc->line, pc->index, err);
            rc = 1;
        }
    }
    if (v == NULL) {
        fprintf(stderr, "taskhostd: out of memory\n");
        rc = 1;
    } else if (rc == 0 && check_pools(cfg, v) < 0) {
        rc = 1;
    }
    for (size_t i = 0; v != NULL && i < cfg->nplugins; i++)
        plugin_unref(v[i]);
    free(v);
    if (rc == 0)
        printf("%s: ok (%zu plugins, %zu pools)\n", d.config, cfg->nplugins,
               cfg->npools);
    config_free(cfg);
    return rc;
}

/* ---- systemd notification and the pidfile ---- */

/* Sends one state line to $NOTIFY_SOCKET, if systemd gave one. A leading
 * '@' names an abstract socket. Failures are only logged: the daemon
 * serves on regardless. */
static void notify(const char *state)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n;
    int fd;

    if (d.notify == NULL)
        return;
    n = strlen(d.notify);
    if (n >= sizeof sa.sun_path)
        return;
    memcpy(sa.sun_path, d.notify, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return;
    /* Never blocking: a reader that falls behind (its queue holds a few
     * datagrams only) must not stop the loop; that line is dropped. */
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT,
               (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) == -1)
        log_msg(errno == EAGAIN ? TH_LOG_DEBUG : TH_LOG_WARN,
                "notify %s: %s", d.notify, strerror(errno));
    close(fd);
}

/* Every STATUS_PERIOD seconds (and every half watchdog interval, if
 * shorter) the loop tells systemd it is alive (WATCHDOG=1) and how it
 * fares, for `systemctl status`. A loop that hangs stops the pings, and
 * systemd restarts the service. */
#define STATUS_PERIOD 5.0

static double status_period(void)
{
    if (d.watchdog > 0 && d.watchdog / 2 < STATUS_PERIOD)
        return d.watchdog / 2;
    return STATUS_PERIOD;
}

static void status_tick(th_timer *t, void *arg)
{
    struct stats_summary sum;
    double now = th_host_now(d.host), rate = 0;
    char msg[256];

    stats_summary(d.host, &sum);
    if (sum.finished >= d.status_done && now > d.status_at)
        rate = (double)(sum.finished - d.status_done) / (now - d.status_at);
    d.status_at = now;
    d.status_done = sum.finished;
    snprintf(msg, sizeof msg,
             "STATUS=%s%zu pools, %zu workers (%zu busy), %zu queued, "
             "%.1f tasks/s%s",
             d.stopping ? "stopping: " : "", sum.pools, sum.workers,
             sum.busy, sum.queued, rate, d.watchdog > 0 ? "\nWATCHDOG=1" : "");
    notify(msg);
}

/* Starts the status line and the watchdog pings, when under systemd. */
static void status_start(void)
{
    if (d.notify == NULL)
        return;
    if (th_timer_new(d.host, status_tick, NULL, &d.status_timer) < 0) {
        log_warn("no status for systemd: out of memory");
        return;
    }
    d.status_at = th_host_now(d.host);
    th_timer_start(d.status_timer, 0, status_period());
}

static int pidfile_write(void)
{
    char buf[32];
    int fd, n;

    if (d.pidfile == NULL)
        return 0;
    fd = open(d.pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1) {
        log_error("%s: %s", d.pidfile, strerror(errno));
        return -1;
    }
    n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n) {
        log_error("%s: write: %s", d.pidfile, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    d.pid_written = 1;
    return 0;
}

/* ---- detaching ---- */

/* Forks into the background. The parent waits on a pipe until the child
 * reports ready (exit 0) or fails (exit 1, the reason already on stderr). */
static int detach(void)
{
    int fds[2];
    pid_t pid;
    char c;

    if (pipe2(fds, O_CLOEXEC) == -1)
        return -1;
    pid = fork();
    if (pid == -1)
        return -1;
    if (pid > 0) {
        close(fds[1]);
        while (read(fds[0], &c, 1) == -1 && errno == EINTR)
            ;
        _exit(c == 'R' ? 0 : 1);
    }
    close(fds[0]);
    d.ready_fd = fds[1];
    if (setsid() == -1)
        return -1;
    pid = fork(); /* not a session leader: can never regain a terminal */
    if (pid == -1)
        return -1;
    if (pid > 0)
        _exit(0);
    return chdir("/") == -1 ? -1 : 0;
}

/* Tells the waiting parent we serve, and lets go of the terminal. */
static void detach_done(void)
{
    int null;

    if (d.ready_fd == -1)
        return;
    (void)!write(d.ready_fd, "R", 1);
    close(d.ready_fd);
    d.ready_fd = -1;
    null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null == -1)
        return;
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    close(null);
}

/* ---- signals and control ---- */

static void begin_shutdown(int how)
{
    if (d.stopping && (how == TH_CLOSE_GRACEFUL || d.stopping == 1 + how))
        return;
    log_info("%s shutdown", how == TH_CLOSE_FORCE ? "fast" : "graceful");
    if (!d.stopping)
        notify("STOPPING=1");
    d.stopping = 1 + how;
    server_stop_accepting(d.srv);
    /* Called from inside the engine's loop (a signal, a client's request):
     * the same iteration goes on to drain, so the loop is not re-entered. */
    th_host_shutdown(d.host, how);
}

/* Applies what can change of the host group at a reload: the limits and
 * uid lists of the socket, the log level. The socket and the log target
 * stay as they are until a restart. */
static void reload_host_group(const struct host_cfg *h)
{
    if (server_configure(d.srv, h) < 0)
        log_error("reload: out of memory; socket limits unchanged");
    log_set_level(h->log_level);
    if (strcmp(h->socket, d.socket) != 0)
        log_warn("reload: the socket stays %s until a restart", d.socket);
    if (strcmp(h->log ? h->log : "stderr", d.log_target) != 0)
        log_warn("reload: the log stays %s until a restart", d.log_target);
}

/* Reloads the config; the socket stays where it is. Returns 0 or a code
 * with the reason in err (also logged). */
/* Logs how a reload went and applies the host group of a new config. */
static void reload_done(int rc, const char *err)
{
    const struct config *cfg;

    if (rc < 0) {
        log_error("reload refused, the running config stays: %s", err);
    } else {
        cfg = host_config(d.host);
        if (cfg) {
            reload_host_group(&cfg->host);
            http_reload(&cfg->http);
        }
        log_info("config %s reloaded", d.config);
    }
    notify("READY=1");
}

static int do_reload(char *err, size_t errlen)
{
    notify("RELOADING=1");
    int rc = th_host_reload(d.host, NULL, err, errlen);
    reload_done(rc, err);
    return rc;
}

/* SIGHUP: the new config is parsed on a thread of its own, since a large
 * file takes seconds, and the loop serves meanwhile; the thread touches
 * nothing of the daemon's. The loop applies the result (loading plugins
 * and swapping pools) when the thread says it is done. A SIGHUP during a
 * parse asks for one more once it ends. */
static struct {
    pthread_t thread;
    int efd;        /* eventfd: the thread is done */
    th_watch *w;
    int busy, again;
    struct config *cfg;
    int rc;
    char err[512];
} rl = {.efd = -1};

static void *parse_config(void *arg)
{
    uint64_t one = 1;

    (void)arg;
    rl.rc = config_load(d.config, &rl.cfg, rl.err, sizeof rl.err);
    if (write(rl.efd, &one, sizeof one) == -1)
        abort(); /* an eventfd write cannot fail short of a bug */
    return NULL;
}

/* Joins the parsing thread, if any, and lets go of its resources. */
static void reload_join(void)
{
    if (!rl.busy)
        return;
    pthread_join(rl.thread, NULL);
    th_watch_stop(rl.w);
    rl.w = NULL;
    close(rl.efd);
    rl.efd = -1;
    rl.busy = 0;
}

static void start_reload(void);

static void on_parsed(th_watch *w, int fd, unsigned events, void *arg)
{
    char err[512];
    int rc;

    reload_join();
    if (d.stopping) {
        /* A SIGHUP that raced a shutdown: nothing left to reload. */
        config_free(rl.cfg);
        rl.cfg = NULL;
        log_info("reload skipped: the daemon is stopping");
        return;
    }
    if (rl.rc == 0) {
        rc = host_reload_parsed(d.host, rl.cfg, err, sizeof err);
    } else {
        rc = rl.rc;
        snprintf(err, sizeof err, "%s", rl.err);
    }
    rl.cfg = NULL;
    reload_done(rc, err);
    if (rl.again && !d.stopping) {
        rl.again = 0;
        start_reload();
    }
}

static void start_reload(void)
{
    char err[512];

    if (rl.busy) {
        rl.again = 1;
        return;
    }
    notify("RELOADING=1");
    rl.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (rl.efd != -1 &&
        th_watch_start(d.host, rl.efd, TH_WATCH_READ, on_parsed, NULL,
                       &rl.w) == 0 &&
        pthread_create(&rl.thread, NULL, parse_config, NULL) == 0) {
        rl.busy = 1;
        return;
    }
    log_warn("reload: cannot parse the config aside (%s); parsing it now",
             strerror(errno));
    th_watch_stop(rl.w);
    rl.w = NULL;
    if (rl.efd != -1)
        close(rl.efd);
    rl.efd = -1;
    do_reload(err, sizeof err);
}

static int ops_reload(void *arg, char *err, size_t errlen)
{
    return do_reload(err, errlen);
}

static void ops_shutdown(void *arg, int how)
{
    begin_shutdown(how);
}

static void on_signal(int sig)
{
    switch (sig) {
    case SIGHUP:
        if (d.stopping)
            log_info("SIGHUP ignored: the daemon is stopping");
        else
            start_reload();
        break;
    case SIGUSR1:
        log_info("rolling restart of every pool");
        th_host_restart(d.host, NULL, 0);
        break;
    case SIGUSR2:
        if (log_reopen() < 0)
            log_error("cannot reopen the log");
        break;
    case SIGTERM:
    case SIGINT:
        /* A second one means: do not wait for the tasks. */
        begin_shutdown(d.stopping ? TH_CLOSE_FORCE : TH_CLOSE_GRACEFUL);
        break;
    case SIGQUIT: begin_shutdown(TH_CLOSE_FORCE); break;
    }
}

static void sig_event(th_watch *w, int fd, unsigned events, void *arg)
{
    struct signalfd_siginfo si[8];
    ssize_t n;

    n = read(d.sigfd, si, sizeof si);
    if (n == -1) {
        if (errno != EAGAIN && errno != EINTR)
            log_error("signalfd: %s", strerror(errno));
        return;
    }
    for (size_t i = 0; i < (size_t)n / sizeof si[0]; i++)
        on_signal((int)si[i].ssi_signo);
}


/* ---- start and stop ---- */

static int block_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    for (size_t i = 0; i < sizeof handled / sizeof handled[0]; i++)
        sigaddset(&set, handled[i]);
    if (sigprocmask(SIG_BLOCK, &set, NULL) == -1)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    d.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return d.sigfd == -1 ? -1 : 0;
}

/* Takes $NOTIFY_SOCKET and the watchdog interval (when meant for this
 * process) for ourselves, so that workers do not inherit them. */
static void take_notify_socket(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    const char *us = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    char *end;

    if (s && *s)
        d.notify = strdup(s);
    if (d.notify && us && (pid == NULL || atol(pid) == (long)getpid())) {
        double v = strtod(us, &end);
        if (*end == '\0' && v > 0)
            d.watchdog = v / 1e6;
    }
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

/* Logs why the start failed, and tells the user at the terminal too when
 * the log goes elsewhere. */
static void report(const char *msg)
{
    log_error("%s", msg);
    if (d.log_target[0] && strcmp(d.log_target, "stderr") != 0)
        fprintf(stderr, "taskhostd: %s\n", msg);
}

/* Opens the log the config names. It must be open before the engine
 * starts: workers inherit the log as it is when they are forked. */
static int open_log(const struct config *cfg, char *err, size_t errlen)
{
    snprintf(d.log_target, sizeof d.log_target, "%s",
             cfg->host.log ? cfg->host.log : "stderr");
    return log_open(cfg->host.log, cfg->host.log_level, err, errlen);
}

/* Binds the socket before the engine starts, so that a second daemon on
 * the same socket is refused before it runs any plugin's init().
 * Clients wait in the backlog until the engine's loop watches it. */
static int open_socket(const struct config *cfg, char *err, size_t errlen)
{
    static const struct server_ops ops = {ops_reload, ops_shutdown, NULL};

    snprintf(d.socket, sizeof d.socket, "%s", cfg->host.socket);
    return server_open(&d.srv, &cfg->host, &ops, err, errlen);
}

/* Watches the signalfd and the server's socket in the engine's loop.
 * Signals that came since they were blocked wait in the signalfd. */
static int watch_all(char *err, size_t errlen)
{
    int rc = th_watch_start(d.host, d.sigfd, TH_WATCH_READ, sig_event, NULL,
                            &d.sig_w);

    if (rc == 0)
        rc = server_set_host(d.srv, d.host);
    if (rc < 0)
        snprintf(err, errlen, "cannot watch the daemon's descriptors: %s",
                 th_strerror(rc));
    return rc;
}

/* Takes every descriptor the hard limit allows: each client holds one,
 * and systemd's default soft limit (1,024) is soon reached. Workers
 * inherit it unless their pool sets rlimit_nofile. */
static void raise_fd_limit(void)
{
    struct rlimit lim;

    if (getrlimit(RLIMIT_NOFILE, &lim) == -1 || lim.rlim_cur >= lim.rlim_max)
        return;
    unsigned long long was = (unsigned long long)lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) == -1)
        log_warn("cannot raise the descriptor limit from %llu: %s", was,
                 strerror(errno));
    else
        log_info("descriptor limit raised from %llu to %llu", was,
                 (unsigned long long)lim.rlim_cur);
}

/* Opens the log, the socket, the engine. Returns 0 or -1 (reported). */
static int start(void)
{
    struct config *cfg = NULL;
    char err[512];
    int rc;

    if ((rc = config_load(d.config, &cfg, err, sizeof err)) == 0 &&
        (rc = open_log(cfg, err, sizeof err)) == 0 &&
        (raise_fd_limit(), rc = open_socket(cfg, err, sizeof err)) == 0 &&
        (rc = th_host_open(&d.host, d.config, err, sizeof err)) == 0 &&
        (rc = watch_all(err, sizeof err)) == 0)
        rc = http_open(d.host, &cfg->http, err, sizeof err);
    config_free(cfg);
    if (rc < 0) {
        report(err);
        return -1;
    }
    host_adopt_orphans(d.host);
    return pidfile_write();
}

/* One loop for everything: the engine's. Each step reads clients and
 * workers, hands new tasks to workers in the same pass, and then the
 * answers go out, one send per client. */
static int run(void)
{
    while (!(d.stopping && th_host_stopped(d.host))) {
        int rc = th_host_step(d.host, -1);
        if (rc < 0) {
            log_error("engine: %s", th_strerror(rc));
            return -1;
        }
        server_flush(d.srv);
    }
    return 0;
}

static void stop(void)
{
    const struct server_counts *sc;

    if (d.srv) {
        server_drain(d.srv, 1000);
        sc = server_counts(d.srv);
        log_info("served %llu connections, %llu tasks (%llu dropped, "
                 "%llu discarded with their clients)",
                 (unsigned long long)sc->accepted,
                 (unsigned long long)sc->submitted,
                 (unsigned long long)sc->dropped,
                 (unsigned long long)sc->discarded);
    }
    /* The watches live in the engine's loop: let go of them before it
     * closes. The answers it still gives are sent by server_close(). */
    reload_join();
    config_free(rl.cfg);
    rl.cfg = NULL;
    th_watch_stop(d.sig_w);
    th_timer_free(d.status_timer);
    d.status_timer = NULL;
    http_close();
    if (d.srv)
        server_unwatch(d.srv);
    if (d.host)
        th_host_close(d.host, d.stopping ? d.stopping - 1 : TH_CLOSE_FORCE);
    server_close(d.srv);
    if (d.pid_written && unlink(d.pidfile) == -1)
        log_warn("%s: %s", d.pidfile, strerror(errno));
    if (d.sigfd != -1)
        close(d.sigfd);
    free(d.config);
    free(d.pidfile);
    free(d.notify);
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);

    if (rc)
        return rc < 0 ? 0 : rc;
    if (d.check_only) {
        rc = check_config();
        free(d.config);
        free(d.pidfile);
        return rc;
    }
    if (block_signals() == -1 || (!d.foreground && detach() == -1)) {
        fprintf(stderr, "taskhostd: %s\n", strerror(errno));
        return 1;
    }
    take_notify_socket();
    if (start() < 0) {
        stop();
        return 1;
    }
    log_info("taskhostd %s ready (pid %d)", TH_VERSION_STRING, (int)getpid());
    notify("READY=1");
    status_start();
    detach_done();
    rc = run();
    stop();
    log_info("taskhostd stopped");
    log_close();
    return rc < 0 ? 1 : 0;
}
