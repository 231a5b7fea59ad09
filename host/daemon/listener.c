/* listener.c - taskhostd's listening socket (daemon layer): binding it
 * (a stale socket file replaced, a live daemon's refused), accepting
 * clients into sessions, pausing when out of descriptors, and the
 * server's life: open, watch in the engine's loop, flush, drain, close.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "account.h"
#include "log.h"
#include "session.h"
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

/* Refuses c, with the reason, when it is one connection too many, in all
 * (max_connections) or of its user (max_connections_per_uid). Each
 * connection may make the daemon hold up to max_payload bytes of a frame
 * being received, so these caps bound that memory too. */
static int over_limits(struct server *s, struct session *c)
{
    int mine = 0;
    if (s->max_conns_per_uid > 0)
        for (const struct session *o = s->conns; o; o = o->next)
            mine += o->uid == c->uid && !o->closing;
    if (s->max_conns > 0 && s->nconns > s->max_conns) {
        s->counts.refused++;
        session_fail(c, 0, TH_EBUSY, "too many connections (max_connections "
                     "= %d)", s->max_conns);
        return 1;
    }
    if (s->max_conns_per_uid > 0 && mine > s->max_conns_per_uid) {
        s->counts.refused++;
        session_fail(c, 0, TH_EBUSY, "too many connections of uid %u "
                     "(max_connections_per_uid = %d)",
                     (unsigned)c->uid, s->max_conns_per_uid);
        return 1;
    }
    return 0;
}

static void accept_one(struct server *s, int fd)
{
    struct session *c = session_new(s, fd);

    if (c == NULL || session_register(s, c) < 0) {
        if (c)
            free(c->groups);
        free(c);
        close(fd);
        return;
    }
    s->counts.accepted++;
    s->nconns++;
    if (!access_may_submit(c)) {
        access_refuse(c, 0);
        return;
    }
    if (over_limits(s, c))
        return;
    log_debug("client pid %d uid %u connected%s", (int)c->pid,
              (unsigned)c->uid, access_is_admin(c) ? " (admin)" : "");
}

static size_t count_conns(const struct server *s)
{
    size_t n = 0;
    for (const struct session *c = s->conns; c; c = c->next)
        n++;
    return n;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_resume(th_timer *t, void *arg)
{
    struct server *s = arg;

    (void)t;
    if (s->w != NULL)
        th_watch_set(s->w, TH_WATCH_READ);
}

/* Out of descriptors (or kernel memory): the pending connection stays in
 * the backlog, and the listener would wake the loop again at once. Stop
 * watching it for ACCEPT_PAUSE, serving the connections there are, and
 * say so once per ACCEPT_REPORT with how often it happened. */
static void pause_accepting(struct server *s, int err)
{
    double now = mono_now();

    s->fd_pauses++;
    if (s->fd_reported == 0 || now - s->fd_reported >= ACCEPT_REPORT) {
        log_warn("accept on %s: %s: not accepting for %.1f s (%llu time%s "
                 "since the last report); %zu connections open",
                 s->path, strerror(err), ACCEPT_PAUSE,
                 (unsigned long long)s->fd_pauses, s->fd_pauses > 1 ? "s" : "",
                 count_conns(s));
        s->fd_reported = now;
        s->fd_pauses = 0;
    }
    if (s->resume == NULL &&
        th_timer_new(s->host, on_resume, s, &s->resume) < 0)
        return; /* no timer: keep trying at the loop's pace */
    th_watch_set(s->w, 0);
    th_timer_start(s->resume, ACCEPT_PAUSE, 0);
}

static void server_event(th_watch *w, int lfd, unsigned events, void *arg)
{
    struct server *s = arg;

    for (int i = 0; i < ACCEPT_BURST; i++) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            int err = errno;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS ||
                err == ENOMEM)
                pause_accepting(s, err);
            else if (err != EAGAIN && err != EINTR && err != ECONNABORTED)
                log_warn("accept on %s: %s", s->path, strerror(err));
            return;
        }
        accept_one(s, fd);
    }
}

static int fill_addr(struct sockaddr_un *sa, const char *path, char *err,
                     size_t errlen)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path) {
        snprintf(err, errlen, "%s: socket path too long (max %zu bytes)",
                 path, sizeof sa->sun_path - 1);
        return TH_EINVAL;
    }
    strcpy(sa->sun_path, path);
    return 0;
}

/* Removes a socket file that no daemon answers on; refuses a live one. */
static int clear_stale(const struct sockaddr_un *sa, char *err, size_t errlen)
{
    struct stat st;
    int fd, rc;

    if (lstat(sa->sun_path, &st) == -1)
        return errno == ENOENT ? 0 : TH_EIO;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s: exists and is not a socket", sa->sun_path);
        return TH_EINVAL;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return TH_EIO;
    rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    close(fd);
    if (rc == 0) {
        snprintf(err, errlen, "%s: another taskhostd is listening there",
                 sa->sun_path);
        return TH_EBUSY;
    }
    if (errno != ECONNREFUSED) {
        snprintf(err, errlen, "%s: %s", sa->sun_path, strerror(errno));
        return TH_EIO;
    }
    if (unlink(sa->sun_path) == -1 && errno != ENOENT) {
        snprintf(err, errlen, "%s: cannot remove stale socket: %s",
                 sa->sun_path, strerror(errno));
        return TH_EIO;
    }
    log_info("removed stale socket %s", sa->sun_path);
    return 0;
}

static int socket_perms(struct server *s, const struct host_cfg *cfg,
                        char *err, size_t errlen)
{
    struct stat st;

    if (chmod(s->path, cfg->socket_mode) == -1) {
        snprintf(err, errlen, "%s: chmod: %s", s->path, strerror(errno));
        return TH_EIO;
    }
    if (cfg->socket_group) {
        unsigned gid;
        int known = account_group(cfg->socket_group, &gid) == 0;
        if (!known || chown(s->path, (uid_t)-1, (gid_t)gid) == -1) {
            snprintf(err, errlen, "%s: cannot give it to group '%s': %s",
                     s->path, cfg->socket_group,
                     known ? strerror(errno) : "no such group");
            return TH_EIO;
        }
    }
    if (stat(s->path, &st) == -1) {
        snprintf(err, errlen, "%s: %s", s->path, strerror(errno));
        return TH_EIO;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    return 0;
}

static int socket_bind(struct server *s, const struct host_cfg *cfg,
                       char *err, size_t errlen)
{
    struct sockaddr_un sa;
    mode_t old;
    int rc;

    if ((rc = fill_addr(&sa, cfg->socket, err, errlen)) < 0 ||
        (rc = clear_stale(&sa, err, errlen)) < 0)
        return rc;
    s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd == -1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return TH_EIO;
    }
    old = umask(0177); /* nobody can connect before the chmod below */
    rc = bind(s->fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc == -1) {
        snprintf(err, errlen, "%s: bind: %s", cfg->socket, strerror(errno));
        return TH_EIO;
    }
    s->path = strdup(cfg->socket);
    if (s->path == NULL)
        return TH_ENOMEM;
    if ((rc = socket_perms(s, cfg, err, errlen)) < 0)
        return rc;
    if (listen(s->fd, SOMAXCONN) == -1) {
        snprintf(err, errlen, "%s: listen: %s", cfg->socket, strerror(errno));
        return TH_EIO;
    }
    return 0;
}

int server_open(struct server **out, const struct host_cfg *cfg,
                const struct server_ops *ops, char *err, size_t errlen)
{
    struct server *s = calloc(1, sizeof *s);
    int rc;

    *out = NULL;
    if (s == NULL)
        return TH_ENOMEM;
    s->ops = *ops;
    s->fd = -1;
    if ((rc = server_configure(s, cfg)) < 0 ||
        (rc = socket_bind(s, cfg, err, errlen)) < 0) {
        server_close(s);
        return rc;
    }
    log_info("listening on %s (mode %04o)", s->path, cfg->socket_mode);
    *out = s;
    return 0;
}

int server_set_host(struct server *s, th_host *host)
{
    s->host = host;
    return th_watch_start(host, s->fd, TH_WATCH_READ, server_event, s, &s->w);
}

void server_unwatch(struct server *s)
{
    th_timer_free(s->resume);
    s->resume = NULL;
    th_watch_stop(s->w);
    s->w = NULL;
    for (struct session *c = s->conns; c; c = c->next) {
        th_watch_stop(c->w);
        c->w = NULL;
    }
}

void server_stop_accepting(struct server *s)
{
    s->stopping = 1;
}

void server_flush(struct server *s)
{
    while (s->dirty) {
        struct session *c = s->dirty;
        s->dirty = c->next_dirty;
        c->dirty = 0;
        session_flush(c);
    }
}

void server_drain(struct server *s, int ms)
{
    server_flush(s);
    if (s->host == NULL)
        return; /* no engine, no loop: nothing was ever accepted */
    for (int left = ms; left > 0; left -= 10) {
        int busy = 0;
        for (struct session *c = s->conns; c; c = c->next)
            busy |= buf_avail(&c->io.out) > 0;
        if (!busy)
            return;
        /* The engine's loop serves the connections' writes (and takes
         * any last requests, which a stopped engine refuses). */
        th_host_step(s->host, 10);
        server_flush(s);
    }
}

const struct server_counts *server_counts(const struct server *s)
{
    return &s->counts;
}

/* Removes the socket file if it is still the one this server bound. */
static void socket_remove(struct server *s)
{
    struct stat st;

    if (s->path == NULL || s->fd == -1)
        return;
    if (lstat(s->path, &st) == 0 && st.st_dev == s->dev &&
        st.st_ino == s->ino && unlink(s->path) == -1)
        log_warn("%s: unlink: %s", s->path, strerror(errno));
}

void server_close(struct server *s)
{
    if (s == NULL)
        return;
    s->host = NULL; /* closed by now: its tasks were all answered */
    while (s->conns) {
        struct session *c = s->conns;
        /* last words, if the socket takes them now */
        (void)!conn_send(&c->io);
        session_close(c);
    }
    socket_remove(s);
    if (s->fd != -1)
        close(s->fd);
    while (s->slabs) {
        struct slab *sb = s->slabs;
        s->slabs = sb->next;
        free(sb);
    }
    free(s->submit_uids.ids);
    free(s->submit_gids.ids);
    free(s->admin_uids.ids);
    free(s->admin_gids.ids);
    free(s->path);
    free(s);
}
