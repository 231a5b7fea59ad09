/* cluster_redis.c - a hiredis asynchronous context on the host's loop.
 *
 * hiredis 0.14 specifics this relies on:
 * - redisAsyncSetConnectCallback() calls addWrite at once, so the hooks
 *   are installed before it;
 * - the context frees itself inside redisAsyncHandleRead/Write on errors,
 *   calling the cleanup hook (which forgets it here) and then, if it had
 *   connected, the disconnect callback;
 * - commands still waiting get a NULL reply when it goes;
 * - its socket is not close-on-exec: workers forked later must not
 *   inherit it, so FD_CLOEXEC is set here;
 * - it has no command timeout: a connection that stops answering is
 *   dropped by rconn_check().
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster_redis.h"
#include "log.h"

#define BACKOFF_FIRST 0.05 /* seconds */
#define BACKOFF_MAX 2.0

struct pending_cmd {
    struct rconn *c;
    rconn_reply_fn fn;
    void *priv;
};

static void start(struct rconn *c);

/* The connection is gone (or never came): tell the owner once, and try
 * again after the back-off. Safe to call more than once. */
static void lost(struct rconn *c, const char *why)
{
    if (c->closed) {
        c->up = 0;
        return;
    }
    if (why != NULL && strcmp(c->err, why) != 0) {
        snprintf(c->err, sizeof c->err, "%s", why);
        log_warn("cluster: redis %s (%s): %s", c->addr, c->name, why);
    }
    c->waiting = 0;
    if (c->up) {
        c->up = 0;
        if (c->on_state != NULL)
            c->on_state(c, 0, c->arg);
    }
    if (c->closed || c->retry == NULL || th_timer_armed(c->retry))
        return;
    th_timer_start(c->retry, c->backoff, 0);
    c->backoff = c->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : c->backoff * 2;
}

static void ready(struct rconn *c)
{
    c->up = 1;
    c->backoff = BACKOFF_FIRST;
    c->err[0] = '\0';
    if (c->on_state != NULL)
        c->on_state(c, 1, c->arg);
}

/* ---- the event hooks ---- */

static void set_bits(struct rconn *c, unsigned on, unsigned off)
{
    if (c->watch == NULL)
        return;
    unsigned ev = (th_watch_events(c->watch) | on) & ~off;
    th_watch_set(c->watch, ev);
}

static void ev_add_read(void *d) { set_bits(d, TH_WATCH_READ, 0); }
static void ev_del_read(void *d) { set_bits(d, 0, TH_WATCH_READ); }
static void ev_add_write(void *d) { set_bits(d, TH_WATCH_WRITE, 0); }
static void ev_del_write(void *d) { set_bits(d, 0, TH_WATCH_WRITE); }

static void ev_cleanup(void *d)
{
    struct rconn *c = d;
    th_watch_stop(c->watch);
    c->watch = NULL;
    c->ac = NULL;
}

static void on_io(th_watch *w, int fd, unsigned events, void *arg)
{
    struct rconn *c = arg;
    (void)w, (void)fd;
    if (c->ac != NULL && (events & TH_WATCH_READ))
        redisAsyncHandleRead(c->ac);
    if (c->ac != NULL && (events & TH_WATCH_WRITE))
        redisAsyncHandleWrite(c->ac);
}

/* ---- connecting ---- */

static void on_auth(redisAsyncContext *ac, void *r, void *priv)
{
    struct rconn *c = priv;
    redisReply *reply = r;
    (void)ac;
    if (reply == NULL)
        return; /* the connection went: lost() follows */
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[160];
        snprintf(why, sizeof why, "AUTH refused: %.120s", reply->str);
        rconn_drop(c, why);
        return;
    }
    ready(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        lost(c, ac->errstr);
        return;
    }
    if (c->password == NULL) {
        ready(c);
        return;
    }
    const char *argv[] = {"AUTH", c->password};
    redisAsyncCommandArgv(c->ac, on_auth, c, 2, argv, NULL);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rconn *c = ac->data;
    lost(c, status == REDIS_OK ? "connection closed" : ac->errstr);
}

static redisAsyncContext *dial(const char *addr)
{
    if (strncmp(addr, "unix:", 5) == 0)
        return redisAsyncConnectUnix(addr + 5);
    char host[256];
    const char *colon = strrchr(addr, ':');
    size_t n = (size_t)(colon - addr);
    if (n >= sizeof host)
        n = sizeof host - 1;
    memcpy(host, addr, n);
    host[n] = '\0';
    return redisAsyncConnect(host, atoi(colon + 1));
}

static void start(struct rconn *c)
{
    redisAsyncContext *ac = dial(c->addr);
    if (ac == NULL) {
        lost(c, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac);
        lost(c, why);
        return;
    }
    /* Keep the reader's buffer between replies: freeing it after each
     * large one made every read allocate it anew. */
    if (ac->c.reader != NULL)
        ac->c.reader->maxbuf = 0;
    int fd = ac->c.fd;
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    if (th_watch_start(c->host, fd, 0, on_io, c, &c->watch) < 0) {
        redisAsyncFree(ac);
        lost(c, "cannot watch its socket");
        return;
    }
    c->ac = ac;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_retry(th_timer *t, void *arg)
{
    struct rconn *c = arg;
    (void)t;
    if (!c->closed && c->ac == NULL)
        start(c);
}

int rconn_open(struct rconn *c, th_host *host, const char *addr,
               const char *password, const char *name, rconn_state_fn fn,
               void *arg)
{
    c->host = host;
    c->addr = addr;
    c->password = password;
    c->name = name;
    c->on_state = fn;
    c->arg = arg;
    c->backoff = BACKOFF_FIRST;
    if (c->stall <= 0)
        c->stall = 5.0;
    if (th_timer_new(host, on_retry, c, &c->retry) < 0)
        return TH_ENOMEM;
    start(c);
    return 0;
}

/* ---- commands ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct pending_cmd *p = priv;
    struct rconn *c = p->c;
    (void)ac;
    if (reply != NULL) {
        if (c->waiting > 0)
            c->waiting--;
        c->progress = th_host_now(c->host);
    }
    p->fn(c, reply, p->priv);
    free(p);
}

int rconn_cmd(struct rconn *c, rconn_reply_fn fn, void *priv, int argc,
              const char **argv, const size_t *lens)
{
    if (!c->up || c->ac == NULL)
        return TH_EIO;
    struct pending_cmd *p = malloc(sizeof *p);
    if (p == NULL)
        return TH_ENOMEM;
    *p = (struct pending_cmd){c, fn, priv};
    if (redisAsyncCommandArgv(c->ac, on_reply, p, argc, argv, lens) !=
        REDIS_OK) {
        free(p);
        return TH_EIO;
    }
    if (c->waiting++ == 0)
        c->progress = th_host_now(c->host);
    return 0;
}

void rconn_check(struct rconn *c)
{
    if (c->ac == NULL || c->waiting == 0)
        return;
    if (th_host_now(c->host) - c->progress > c->stall)
        rconn_drop(c, "no reply in time: dropping the connection");
}

void rconn_drop(struct rconn *c, const char *why)
{
    if (c->ac != NULL)
        redisAsyncFree(c->ac); /* deferred when inside its callback */
    lost(c, why);
}

void rconn_close(struct rconn *c)
{
    c->closed = 1;
    c->on_state = NULL;
    if (c->ac != NULL)
        redisAsyncFree(c->ac);
    c->up = 0;
    th_timer_free(c->retry);
    c->retry = NULL;
}
