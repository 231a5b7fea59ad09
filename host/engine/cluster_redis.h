/* cluster_redis.h - one connection to Redis, driven by the host's loop.
 *
 * hiredis's asynchronous context is plugged into the loop through the
 * public watch API: its addRead/delRead/addWrite/delWrite hooks set the
 * bits of one th_watch, its cleanup hook stops the watch. No thread.
 * A connection that breaks (or makes no progress for `stall` seconds
 * while commands wait) is dropped and made again with a back-off; the
 * owner hears of each change through `on_state`.
 */
#ifndef TH_CLUSTER_REDIS_H
#define TH_CLUSTER_REDIS_H

#include <stddef.h>

#include "taskhost_host.h"

struct redisAsyncContext;
struct rconn;

/* up: 1 when the connection is ready for commands (after AUTH), 0 when
 * it was lost. */
typedef void (*rconn_state_fn)(struct rconn *c, int up, void *arg);

/* Called with the reply (NULL when the connection was lost before it
 * came) of a command; the reply is freed after the call. */
typedef void (*rconn_reply_fn)(struct rconn *c, void *reply, void *priv);

struct rconn {
    th_host *host;
    const char *addr;     /* "unix:/path" or "host:port" (not owned) */
    const char *password; /* NULL: no AUTH (not owned) */
    const char *name;     /* for the log */
    rconn_state_fn on_state;
    void *arg;
    struct redisAsyncContext *ac;
    th_watch *watch;
    th_timer *retry;      /* reconnect after back-off */
    double backoff;       /* seconds, doubled per failure */
    int up;               /* connected and ready */
    int closed;           /* rconn_close() called: no reconnect */
    long waiting;         /* commands sent and not answered */
    double progress;      /* loop time of the last reply or first send */
    double stall;         /* seconds without a reply before dropping */
    char err[128];        /* the last connection error */
};

/* Prepares c (zeroed by the caller) and starts connecting. Returns 0, or
 * TH_ENOMEM. Failures to connect are retried, never returned. */
int rconn_open(struct rconn *c, th_host *host, const char *addr,
               const char *password, const char *name, rconn_state_fn fn,
               void *arg);

/* Sends one command. Returns 0, or TH_EIO when the connection is not up
 * (then fn is never called). */
int rconn_cmd(struct rconn *c, rconn_reply_fn fn, void *priv, int argc,
              const char **argv, const size_t *lens);

/* Drops a connection that stalled: commands waiting longer than
 * c->stall seconds without any reply. Call now and then. */
void rconn_check(struct rconn *c);

/* Drops the connection (callbacks get NULL replies) and reconnects
 * after the back-off. */
void rconn_drop(struct rconn *c, const char *why);

/* Closes for good: waiting commands get NULL replies. */
void rconn_close(struct rconn *c);

#endif /* TH_CLUSTER_REDIS_H */
