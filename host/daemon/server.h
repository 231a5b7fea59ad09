/* server.h - taskhostd's listening socket and its client connections
 * (daemon layer).
 *
 * The server speaks the protocol of client_wire.h on a Unix stream socket.
 * Its descriptors are watched in the engine's one loop through the public
 * th_watch API; the daemon calls server_flush() after every th_host_step(),
 * which writes each connection's batched answers with one send().
 *
 * Tasks go to the engine through th_host_submit(); answers come back
 * through its callbacks, from inside th_host_step(), and are queued on the
 * connection that asked. A connection that goes away has its queued tasks
 * cancelled and the answers of its running ones discarded.
 */
#ifndef TH_SERVER_H
#define TH_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "taskhost_host.h"

struct host_cfg;
struct server;

/* What the server asks of the daemon. */
struct server_ops {
    /* Reloads the config; returns 0 or a code with the reason in err. */
    int (*reload)(void *arg, char *err, size_t errlen);
    /* Begins a shutdown (TH_CLOSE_GRACEFUL or TH_CLOSE_FORCE). */
    void (*shutdown)(void *arg, int how);
    void *arg;
};

/* Counters, for the log line at exit and for tests. */
struct server_counts {
    uint64_t accepted;  /* connections */
    uint64_t refused;   /* connections refused by uid/gid */
    uint64_t submitted; /* tasks handed to the engine */
    uint64_t dropped;   /* queued tasks cancelled when their client left */
    uint64_t discarded; /* answers thrown away because their client left */
    uint64_t faults;    /* connections closed for a protocol fault */
};

/* Binds and listens on the socket cfg->socket (mode, group from cfg). A
 * socket file left by a dead daemon is replaced; one a live daemon answers
 * on is refused. Returns 0 and the server in *out, or a negative code with
 * one line in err. The server keeps `ops`. Connections wait in the backlog
 * until the engine exists and server_set_host() watches the socket. */
int server_open(struct server **out, const struct host_cfg *cfg,
                const struct server_ops *ops, char *err, size_t errlen);

/* Gives the server the engine its requests go to and watches the
 * listening socket in the engine's loop (th_watch_start()): from then on
 * every descriptor of the server is served by th_host_step(). Returns 0
 * or a negative TH_E* code. */
int server_set_host(struct server *s, th_host *host);

/* Stops watching the listening socket and every connection: call before
 * th_host_close(), which frees the loop the watches live in. Answers the
 * engine still gives are buffered and sent by server_close(). */
void server_unwatch(struct server *s);

/* Takes the limits and uid/gid lists of cfg (after a reload). The socket
 * itself is not moved. Returns 0 or TH_ENOMEM (the old ones then stay). */
int server_configure(struct server *s, const struct host_cfg *cfg);

/* From now on, answers new submits `rejected` ("shutting down"). Control
 * requests are still served. */
void server_stop_accepting(struct server *s);

/* Writes every connection's pending answers (one send() each). */
void server_flush(struct server *s);

/* Gives the most of `ms` milliseconds to writing what is still buffered,
 * so that final answers reach clients before the daemon exits. */
void server_drain(struct server *s, int ms);

/* Returns the counters. */
const struct server_counts *server_counts(const struct server *s);

/* Closes every connection and the socket, removes the socket file (if it
 * is still ours) and frees the server. Call after th_host_close(): the
 * tasks' callbacks must have run. NULL is allowed. */
void server_close(struct server *s);

#endif /* TH_SERVER_H */
