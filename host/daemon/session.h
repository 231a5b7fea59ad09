/* session.h - the inside of taskhostd's server (daemon layer): what its
 * listener (listener.c), its client sessions (session.c), their request
 * handlers (requests.c) and access control (access.c) share. server.h is
 * what the rest of the daemon sees.
 */
#ifndef TH_SESSION_H
#define TH_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "client_wire.h"
#include "config.h"
#include "conn.h"
#include "fdpass.h"
#include "server.h"
#include "taskhost_host.h"

#define OUT_HIGH (8u << 20)       /* stop reading a client above this */
#define OUT_LOW (1u << 20)        /* and resume below this */
#define BUF_KEEP (1u << 20)       /* idle buffers above this are freed */
#define SLAB_SLOTS 1024
#define ACCEPT_BURST 64
#define ACCEPT_PAUSE 0.1     /* seconds without accepting, out of fds */
#define ACCEPT_REPORT 10.0   /* seconds between two reports of that */

struct session;

/* One task in flight for a connection; conn is NULL once it left. */
struct slot {
    struct server *srv;
    struct session *conn;
    uint64_t tag;
    uint64_t id;
    struct fdpass_map *map; /* the input memfd, for the output too */
    uint32_t input_bytes;   /* counted in its session's input_bytes; an
                               input is within max_payload, < 4 GiB */
    uint8_t out_fd;         /* the client takes an output in a memfd */
    struct slot *prev, *next;
};

struct slab {
    struct slab *next;
    struct slot slots[SLAB_SLOTS];
};

struct session {
    th_watch *w;
    struct server *srv;
    struct conn io;  /* the socket, its buffers and descriptor queues */
    uid_t uid;
    gid_t gid;
    gid_t *groups;   /* supplementary groups, from SO_PEERGROUPS */
    size_t ngroups;
    pid_t pid;
    int closing;     /* an error frame was queued: flush, then close */
    int eof;         /* the client shut down its writing side: answer what
                        it asked, then close */
    int dirty;       /* on the server's dirty list */
    unsigned events; /* what the watch waits for now (TH_WATCH_*) */
    struct fdpass_maps maps; /* the client's input memfds, mapped */
    struct fdpass_map *mfd_slots[PROTO_SLOTS]; /* memfds it named by slot
                                                  (IN_SLOT), or NULL */
    struct slot tasks; /* list head of the tasks in flight */
    uint64_t input_bytes; /* input of the tasks in flight */
    size_t ntasks;
    struct session *prev, *next;  /* all connections */
    struct session *next_dirty;
};

struct server {
    th_watch *w;     /* the listening socket, once the engine runs */
    th_host *host;
    struct server_ops ops;
    int fd;
    char *path;
    dev_t dev;
    ino_t ino;
    int stopping;
    uint64_t max_payload;
    uint64_t max_conn_bytes; /* input in flight per session, 0: none */
    int max_conns, max_conns_per_uid; /* 0: no limit */
    int nconns;
    struct id_list submit_uids, submit_gids, admin_uids, admin_gids;
    struct session *conns;
    struct session *dirty;
    struct slab *slabs;
    struct slot *free_slots;
    struct server_counts counts;
    th_timer *resume;      /* accepting again after a pause, or NULL */
    uint64_t fd_pauses;    /* pauses for want of fds since the last report */
    double fd_reported;    /* monotonic time of that report, 0: never */
};

/* ---- session.c: one client's connection ---- */

/* A slot for a task of a session, from the server's slabs; NULL when out
 * of memory. */
struct slot *slot_get(struct server *s);

/* Returns a slot to the server's free list. */
void slot_put(struct server *s, struct slot *sl);

/* Puts a slot on (takes it off) its session's list of tasks in flight. */
void slot_link(struct session *c, struct slot *sl);
void slot_unlink(struct slot *sl);

/* Ends the slot's use of its input memfd, if any. */
void slot_drop_fd(struct session *c, struct slot *sl);

/* Puts the session on the server's list of those to flush. */
void session_mark(struct session *c);

/* Queues an ERROR frame, logs why and closes the session once the frame
 * is sent. Reading stops at once. */
void session_fail(struct session *c, uint64_t tag, int code, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

/* Queues a REPLY frame with `code` and `text` (NULL: none). */
void session_reply(struct session *c, uint64_t tag, int code,
                   const char *text);

/* Queues the RESULT of a task the engine never took. */
void session_answer(struct session *c, uint64_t tag, th_state state, int code,
                    const char *text);

/* What the session's watch should wait for now (TH_WATCH_*). */
unsigned session_want(const struct session *c);

/* Sends what is buffered, once, and sets the watch to match. Returns -1
 * when the session was closed (and freed). */
int session_flush(struct session *c);

/* Closes the session and frees it; its queued tasks are cancelled, the
 * answers of its running ones will be discarded. */
void session_close(struct session *c);

/* A session for accepted socket `fd`, with its peer's credentials; NULL
 * (logged) on failure. session_register() then watches it. */
struct session *session_new(struct server *s, int fd);
int session_register(struct server *s, struct session *c);

/* ---- access.c: who may do what ---- */

/* Reads the peer's supplementary groups into c. Returns 0 or -1 (errno). */
int access_peer_groups(struct session *c);

/* Whether the peer may administer / submit, by the running config. */
int access_is_admin(const struct session *c);
int access_may_submit(const struct session *c);

/* Answers a request the peer may not make, and logs it. */
void access_refuse(struct session *c, uint64_t tag);

/* Whether the peer is an admin; if not, refuses frame f and returns 0. */
int access_need_admin(struct session *c, const struct proto_frame *f);

/* ---- requests.c: what each frame asks ---- */

/* Handles one decoded request frame of session c. */
void requests_handle(struct session *c, const struct proto_frame *f);

#endif /* TH_SESSION_H */
