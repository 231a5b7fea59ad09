/* server.c - the listening socket and the client connections of taskhostd
 * (daemon layer).
 *
 * Hot path: a readable connection is read in one large chunk, every whole
 * frame in it is decoded in place and submitted to the engine; answers are
 * encoded into the connection's output buffer as the engine calls back, and
 * server_flush() sends each buffer once per loop iteration. Nothing on that
 * path allocates per task: buffers grow and are reused, and the per-task
 * records (struct slot) come from slabs with a free list.
 *
 * Large payloads may travel in memfds instead (fdpass.h): an input memfd
 * is mapped (once: the client sends the same few again and again) and
 * handed to the engine, which copies it; the task's output is written back
 * into it, where the client finds it in the mapping it wrote the input
 * through.
 */
#include "server.h"

#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "fdpass.h"
#include "log.h"
#include "client_wire.h"
#include "taskhost_version.h"

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
    int out_fd;             /* the client takes an output in a memfd */
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
    struct slot tasks; /* list head of the tasks in flight */
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

static void session_close(struct session *c);
static int session_flush(struct session *c);
static unsigned session_want(const struct session *c);

/* ---- per-task slots ---- */

static struct slot *slot_get(struct server *s)
{
    struct slot *sl = s->free_slots;

    if (sl == NULL) {
        struct slab *sb = malloc(sizeof *sb);
        if (sb == NULL)
            return NULL;
        sb->next = s->slabs;
        s->slabs = sb;
        for (size_t i = 0; i < SLAB_SLOTS; i++) {
            sb->slots[i].next = s->free_slots;
            s->free_slots = &sb->slots[i];
        }
        sl = s->free_slots;
    }
    s->free_slots = sl->next;
    sl->srv = s;
    sl->map = NULL;
    sl->out_fd = 0;
    return sl;
}

static void slot_put(struct server *s, struct slot *sl)
{
    sl->conn = NULL;
    sl->next = s->free_slots;
    s->free_slots = sl;
}

static void slot_link(struct session *c, struct slot *sl)
{
    sl->conn = c;
    sl->next = c->tasks.next;
    sl->prev = &c->tasks;
    c->tasks.next->prev = sl;
    c->tasks.next = sl;
    c->ntasks++;
}

static void slot_unlink(struct slot *sl)
{
    sl->prev->next = sl->next;
    sl->next->prev = sl->prev;
    sl->conn->ntasks--;
}

/* Ends the task's use of its input memfd, if any. */
static void slot_drop_fd(struct session *c, struct slot *sl)
{
    if (sl->map == NULL)
        return;
    fdpass_map_put(&c->maps, sl->map);
    sl->map = NULL;
}

/* ---- permissions ---- */

static int id_in(const struct id_list *l, unsigned id)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->ids[i] == id)
            return 1;
    return 0;
}

/* Reads the peer's supplementary groups (as at connect time) into c:
 * `usermod -aG taskhost alice` is how a user joins a group, and
 * SO_PEERCRED carries only the primary one. Returns 0 or -1 (errno). */
static int peer_groups(struct session *c)
{
    socklen_t len = 0;

    if (getsockopt(c->io.fd, SOL_SOCKET, SO_PEERGROUPS, NULL, &len) == -1 &&
        errno != ERANGE)
        return -1;
    if (len == 0)
        return 0;
    c->groups = malloc(len);
    if (c->groups == NULL)
        return -1;
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &len) == -1)
        return -1;
    c->ngroups = len / sizeof *c->groups;
    return 0;
}

/* Whether connection c is in the uid/gid lists, by its uid, its primary
 * group or a supplementary one; empty lists mean the daemon's own uid and
 * root. */
static int peer_allowed(const struct id_list *uids, const struct id_list *gids,
                        const struct session *c)
{
    if (uids->n == 0 && gids->n == 0)
        return c->uid == 0 || c->uid == geteuid();
    if (id_in(uids, c->uid) || id_in(gids, c->gid))
        return 1;
    for (size_t i = 0; i < c->ngroups; i++)
        if (id_in(gids, c->groups[i]))
            return 1;
    return 0;
}

/* Rights are looked up on every request, against the lists of the config
 * running now: a reload that takes a user out of them takes effect on
 * that user's open connections too. */
static int session_is_admin(const struct session *c)
{
    const struct server *s = c->srv;
    return peer_allowed(&s->admin_uids, &s->admin_gids, c);
}

static int session_may_submit(const struct session *c)
{
    const struct server *s = c->srv;
    return session_is_admin(c) ||
           peer_allowed(&s->submit_uids, &s->submit_gids, c);
}

static int id_list_copy(struct id_list *dst, const struct id_list *src)
{
    unsigned *ids = NULL;

    if (src->n) {
        ids = malloc(src->n * sizeof *ids);
        if (ids == NULL)
            return TH_ENOMEM;
        memcpy(ids, src->ids, src->n * sizeof *ids);
    }
    free(dst->ids);
    dst->ids = ids;
    dst->n = src->n;
    return 0;
}

int server_configure(struct server *s, const struct host_cfg *cfg)
{
    struct id_list l[4] = {{0}};
    const struct id_list *src[4] = {&cfg->submit_uids, &cfg->submit_gids,
                                    &cfg->admin_uids, &cfg->admin_gids};
    struct id_list *dst[4] = {&s->submit_uids, &s->submit_gids,
                              &s->admin_uids, &s->admin_gids};

    for (int i = 0; i < 4; i++) {
        if (id_list_copy(&l[i], src[i]) < 0) {
            while (i-- > 0)
                free(l[i].ids);
            return TH_ENOMEM;
        }
    }
    for (int i = 0; i < 4; i++) {
        free(dst[i]->ids);
        *dst[i] = l[i];
    }
    s->max_payload = cfg->max_payload ? cfg->max_payload : PROTO_DEFAULT_MAX;
    if (s->max_payload > UINT32_MAX)
        s->max_payload = UINT32_MAX;
    return 0;
}

/* ---- output ---- */

static void session_events(struct session *c, unsigned events)
{
    if (events == c->events || c->w == NULL)
        return;
    if (th_watch_set(c->w, events) < 0) {
        log_warn("watch(client pid %d): %s", (int)c->pid, strerror(errno));
        return;
    }
    c->events = events;
}

static void session_mark(struct session *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->next_dirty = c->srv->dirty;
    c->srv->dirty = c;
}

/* Queues an ERROR frame, logs why and closes the connection once the
 * frame is sent. Reading stops at once. */
static void session_fail(struct session *c, uint64_t tag, int code, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
static void session_fail(struct session *c, uint64_t tag, int code, const char *fmt,
                      ...)
{
    char msg[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    log_warn("client pid %d uid %u: %s; closing the connection", (int)c->pid,
             (unsigned)c->uid, msg);
    c->srv->counts.faults++;
    proto_put_reply(&c->io.out, PROTO_ERROR, tag, code, msg, (size_t)n);
    c->closing = 1;
    session_events(c, TH_WATCH_WRITE);
    session_mark(c);
}

/* Ends a connection whose peer may not use the daemon (any more). */
static void session_refuse(struct session *c, uint64_t tag)
{
    c->srv->counts.refused++;
    session_fail(c, tag, TH_EPERM, "permission denied: uid %u gid %u may not "
              "use this daemon", (unsigned)c->uid, (unsigned)c->gid);
}

static void reply(struct session *c, uint64_t tag, int code, const char *text)
{
    size_t n = text ? strlen(text) : 0;

    if (proto_put_reply(&c->io.out, PROTO_REPLY, tag, code, text, n) < 0)
        log_error("out of memory answering client pid %d", (int)c->pid);
    session_mark(c);
}

/* Answers a task the engine never took. */
static void answer_local(struct session *c, uint64_t tag, th_state state,
                         int code, const char *text)
{
    struct proto_result r = {.state = state, .code = code, .data = text,
                             .len = strlen(text)};

    if (proto_put_result(&c->io.out, tag, &r) < 0)
        log_error("out of memory answering client pid %d", (int)c->pid);
    session_mark(c);
}

static uint64_t to_us(double seconds)
{
    return seconds > 0 ? (uint64_t)(seconds * 1e6 + 0.5) : 0;
}

/* Moves a large output of a client that takes outputs in memfds out of
 * the frame: into the task's own input memfd when it kept one (the client
 * has it mapped already), else into a new memfd queued to travel with the
 * frame. Sets r->flags, or leaves r alone to answer inline. */
static void output_to_fd(struct session *c, struct slot *sl,
                         struct proto_result *r)
{
    int fd;

    if (!sl->out_fd || r->state != TH_STATE_OK || r->len < FDPASS_MIN)
        return;
    if (sl->map && fdpass_map_write(sl->map, r->data, r->len) == 0) {
        r->flags = PROTO_F_RES_IN_FD;
        return;
    }
    fd = fdpass_memfd(r->data, r->len);
    if (fd == -1) {
        log_debug("client pid %d: output memfd: %s", (int)c->pid,
                  strerror(errno));
        return;
    }
    if (conn_push_fd(&c->io, fd, 1) < 0) {
        close(fd);
        return;
    }
    r->flags = PROTO_F_RES_FD;
}

/* The engine's callback: a progress report of a task whose client asked
 * for them. Reports are coalesced by the worker already; one that finds
 * its client's answers piling up (see session_want()) is dropped, as a newer
 * one supersedes it anyway. */
static void on_progress(uint64_t id, uint64_t done, uint64_t total,
                        const char *msg, void *arg)
{
    struct slot *sl = arg;
    struct session *c = sl->conn;
    struct proto_progress p = {.done = done, .total = total, .msg = msg,
                               .msg_len = strlen(msg)};

    (void)id;
    if (c == NULL || buf_avail(&c->io.out) >= OUT_LOW)
        return;
    if (proto_put_progress(&c->io.out, sl->tag, &p) == 0)
        session_mark(c);
}

/* The engine's callback: the final answer of one task. */
static void on_done(const th_result *res, void *arg)
{
    struct slot *sl = arg;
    struct session *c = sl->conn;
    struct server *s = sl->srv;
    struct proto_result r;

    if (c == NULL) { /* its client left */
        if (res->state != TH_STATE_CANCELLED)
            s->counts.discarded++;
        slot_put(s, sl);
        return;
    }
    slot_unlink(sl);
    r.task_id = res->id;
    r.state = res->state;
    r.code = res->code;
    r.wait_us = to_us(res->wait_time);
    r.run_us = to_us(res->run_time);
    r.data = res->data;
    r.len = res->len;
    r.flags = 0;
    output_to_fd(c, sl, &r);
    if (proto_put_result(&c->io.out, sl->tag, &r) < 0) {
        log_error("out of memory answering client pid %d", (int)c->pid);
        if (r.flags == PROTO_F_RES_FD)
            close(conn_unpush_fd(&c->io));
    }
    slot_drop_fd(c, sl);
    session_mark(c);
    slot_put(s, sl);
}

/* ---- requests ---- */

/* Why a pool or task name from a client cannot be a name, or NULL; *at is
 * the offset of the first bad byte. Names come back in answers and may
 * reach the log: bytes that are not UTF-8 (overlong forms and surrogates
 * included) or control characters would garble them or forge lines. */
static const char *name_fault(const char *name, size_t n, size_t *at)
{
    static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    const unsigned char *p = (const unsigned char *)name;

    for (size_t i = 0; i < n;) {
        unsigned b = p[i];
        size_t len = b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2
                   : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 0;
        uint32_t cp = len > 1 ? b & (0x7fu >> len) : b;

        *at = i;
        if (len == 0 || n - i < len)
            return "is not valid UTF-8";
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return "is not valid UTF-8";
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if (cp < least[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return "is not valid UTF-8";
        if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
            return "holds a control character";
        i += len;
    }
    return NULL;
}

/* Answers `rejected` when a name of the submit cannot be one; returns
 * whether the names are fit to look up. */
static int names_ok(struct session *c, uint64_t tag, const struct proto_submit *sub)
{
    const char *what = "pool", *why;
    char msg[80];
    size_t at = 0;

    why = name_fault(sub->pool, sub->pool_len, &at);
    if (why == NULL) {
        what = "task";
        why = name_fault(sub->task, sub->task_len, &at);
    }
    if (why == NULL)
        return 1;
    snprintf(msg, sizeof msg, "%s name %s (byte %zu)", what, why, at + 1);
    answer_local(c, tag, TH_STATE_REJECTED, TH_EINVAL, msg);
    return 0;
}

/* Maps the input memfd of a PROTO_F_IN_FD submit into *map and points
 * sub->input at it. Returns 0, or -1 once the connection failed. */
static int input_map(struct session *c, const struct proto_frame *f,
                     struct proto_submit *sub, struct fdpass_map **map)
{
    char why[96];
    int fd = conn_take_fd(&c->io);

    if (fd == -1) {
        session_fail(c, f->tag, TH_EPROTO,
                  "submit with its input in a memfd came without one");
        return -1;
    }
    if (sub->input_len > c->srv->max_payload) {
        close(fd);
        session_fail(c, f->tag, TH_ETOOBIG,
                  "input memfd of %zu bytes over max_payload (%llu)",
                  sub->input_len, (unsigned long long)c->srv->max_payload);
        return -1;
    }
    *map = fdpass_map_get(&c->maps, fd, sub->input_len, why, sizeof why);
    if (*map == NULL) {
        close(fd);
        session_fail(c, f->tag, TH_EPROTO, "input descriptor %s", why);
        return -1;
    }
    sub->input = sub->input_len ? (const void *)(*map)->map : "";
    return 0;
}

/* Hands a parsed submit to the engine; returns its slot, or NULL when it
 * was answered at once. */
static struct slot *submit_task(struct session *c, const struct proto_frame *f,
                                const struct proto_submit *sub)
{
    struct server *s = c->srv;
    th_submit_opts opts = {0};
    struct slot *sl;
    int rc;

    if (s->stopping) {
        answer_local(c, f->tag, TH_STATE_REJECTED, TH_ECLOSED,
                     "shutting down");
        return NULL;
    }
    if (!names_ok(c, f->tag, sub))
        return NULL;
    sl = slot_get(s);
    if (sl == NULL) {
        answer_local(c, f->tag, TH_STATE_REJECTED, TH_ENOMEM,
                     "out of memory");
        return NULL;
    }
    opts.task_timeout = sub->task_timeout_ms / 1000.0;
    opts.queue_timeout = sub->queue_timeout_ms / 1000.0;
    opts.priority = sub->priority;
    sl->tag = f->tag;
    sl->out_fd = (f->flags & PROTO_F_OUT_FD) != 0;
    rc = th_host_submit(s->host, sub->pool, sub->task, sub->input,
                        sub->input_len, &opts, on_done, sl, &sl->id);
    if (rc < 0) {
        slot_put(s, sl);
        answer_local(c, f->tag, TH_STATE_REJECTED, rc,
                     rc == TH_ECLOSED ? "shutting down" : th_strerror(rc));
        return NULL;
    }
    slot_link(c, sl);
    s->counts.submitted++;
    if (f->flags & PROTO_F_PROGRESS)
        th_host_on_progress(s->host, sl->id, on_progress, sl);
    if (f->flags & PROTO_F_ACK) {
        proto_put_accepted(&c->io.out, f->tag, sl->id);
        session_mark(c);
    }
    return sl;
}

static void do_submit(struct session *c, const struct proto_frame *f)
{
    struct proto_submit sub;
    struct fdpass_map *map = NULL;
    struct slot *sl;

    if (proto_parse_submit(f, &sub) < 0) {
        session_fail(c, f->tag, TH_EPROTO, "malformed submit frame");
        return;
    }
    if ((f->flags & PROTO_F_IN_FD) && input_map(c, f, &sub, &map) < 0)
        return;
    sl = submit_task(c, f, &sub); /* the engine copied the input */
    if (map == NULL)
        return;
    if (sl != NULL && sl->out_fd) {
        sl->map = map; /* the output goes back in it */
        return;
    }
    fdpass_map_put(&c->maps, map);
}

/* Finds the slot of task `id` among every connection's tasks. */
static struct slot *slot_find(struct server *s, uint64_t id)
{
    for (struct session *c = s->conns; c; c = c->next)
        for (struct slot *sl = c->tasks.next; sl != &c->tasks; sl = sl->next)
            if (sl->id == id)
                return sl;
    return NULL;
}

static void do_cancel(struct session *c, const struct proto_frame *f)
{
    struct proto_control ctl;
    struct slot *sl = NULL;

    if (proto_parse_control(f, &ctl) < 0) {
        session_fail(c, f->tag, TH_EPROTO, "malformed cancel frame");
        return;
    }
    if (f->flags & PROTO_F_TASK_ID) {
        sl = slot_find(c->srv, ctl.target);
        if (sl && sl->conn->uid != c->uid && !session_is_admin(c)) {
            reply(c, f->tag, TH_EPERM, "task belongs to another user");
            return;
        }
    } else {
        for (sl = c->tasks.next; sl != &c->tasks; sl = sl->next)
            if (sl->tag == ctl.target)
                break;
        if (sl == &c->tasks)
            sl = NULL;
    }
    if (sl == NULL || th_host_cancel(c->srv->host, sl->id) < 0) {
        reply(c, f->tag, TH_ENOENT, "no such task pending");
        return;
    }
    reply(c, f->tag, 0, NULL);
}

static void do_stats(struct session *c, const struct proto_frame *f)
{
    struct proto_control ctl;
    char *text = NULL;
    int rc;

    if (proto_parse_control(f, &ctl) < 0) {
        session_fail(c, f->tag, TH_EPROTO, "malformed stats frame");
        return;
    }
    rc = th_host_stats(c->srv->host, ctl.pool_len ? ctl.pool : NULL,
                       ctl.format, &text);
    if (rc < 0) {
        reply(c, f->tag, rc,
              rc == TH_ENOENT ? "no such pool" : th_strerror(rc));
        return;
    }
    reply(c, f->tag, 0, text);
    free(text);
}

static int need_admin(struct session *c, const struct proto_frame *f)
{
    if (session_is_admin(c))
        return 1;
    log_warn("client pid %d uid %u: %s refused: not an admin", (int)c->pid,
             (unsigned)c->uid, proto_type_name(f->type));
    reply(c, f->tag, TH_EPERM, "permission denied: not an admin");
    return 0;
}

static void do_restart(struct session *c, const struct proto_frame *f)
{
    struct proto_control ctl;
    int rc;

    if (proto_parse_control(f, &ctl) < 0) {
        session_fail(c, f->tag, TH_EPROTO, "malformed restart frame");
        return;
    }
    if (!need_admin(c, f))
        return;
    rc = th_host_restart(c->srv->host, ctl.pool_len ? ctl.pool : NULL,
                         (f->flags & PROTO_F_FORCE) != 0);
    if (rc == 0)
        log_info("restart of %s requested by uid %u%s",
                 ctl.pool_len ? ctl.pool : "every pool", (unsigned)c->uid,
                 (f->flags & PROTO_F_FORCE) ? " (forced)" : "");
    reply(c, f->tag, rc,
          rc == 0 ? NULL : rc == TH_ENOENT ? "no such pool" : th_strerror(rc));
}

static void do_reload(struct session *c, const struct proto_frame *f)
{
    char err[512] = "";
    int rc;

    if (f->len != 0) {
        session_fail(c, f->tag, TH_EPROTO, "malformed reload frame");
        return;
    }
    if (!need_admin(c, f))
        return;
    rc = c->srv->ops.reload(c->srv->ops.arg, err, sizeof err);
    reply(c, f->tag, rc, rc == 0 ? NULL : err[0] ? err : th_strerror(rc));
}

static void do_shutdown(struct session *c, const struct proto_frame *f)
{
    if (f->len != 0) {
        session_fail(c, f->tag, TH_EPROTO, "malformed shutdown frame");
        return;
    }
    if (!need_admin(c, f))
        return;
    log_info("shutdown requested by uid %u pid %d", (unsigned)c->uid,
             (int)c->pid);
    reply(c, f->tag, 0, NULL);
    c->srv->ops.shutdown(c->srv->ops.arg, (f->flags & PROTO_F_FORCE)
                                              ? TH_CLOSE_FORCE
                                              : TH_CLOSE_GRACEFUL);
}

/* The flag bits each request type may carry. */
static int flags_ok(const struct proto_frame *f)
{
    switch (f->type) {
    case PROTO_SUBMIT:
        return (f->flags & ~(PROTO_F_ACK | PROTO_F_IN_FD | PROTO_F_OUT_FD |
                             PROTO_F_PROGRESS)) == 0;
    case PROTO_CANCEL: return (f->flags & ~PROTO_F_TASK_ID) == 0;
    case PROTO_RESTART:
    case PROTO_SHUTDOWN: return (f->flags & ~PROTO_F_FORCE) == 0;
    default: return f->flags == 0;
    }
}

static void session_frame(struct session *c, const struct proto_frame *f)
{
    if (!session_may_submit(c)) {
        session_refuse(c, f->tag);
        return;
    }
    if (!flags_ok(f)) {
        session_fail(c, f->tag, TH_EPROTO, "unknown flags 0x%x on a %s frame",
                  f->flags, proto_type_name(f->type));
        return;
    }
    switch (f->type) {
    case PROTO_SUBMIT: do_submit(c, f); return;
    case PROTO_CANCEL: do_cancel(c, f); return;
    case PROTO_STATS: do_stats(c, f); return;
    case PROTO_RESTART: do_restart(c, f); return;
    case PROTO_RELOAD: do_reload(c, f); return;
    case PROTO_SHUTDOWN: do_shutdown(c, f); return;
    case PROTO_PING:
        if (f->len != 0) {
            session_fail(c, f->tag, TH_EPROTO, "malformed ping frame");
            return;
        }
        proto_put_reply_flags(&c->io.out, PROTO_REPLY, f->tag, PROTO_F_FD_OK, 0,
                              "taskhostd " TH_VERSION_STRING,
                              strlen("taskhostd " TH_VERSION_STRING));
        session_mark(c);
        return;
    default:
        session_fail(c, f->tag, TH_EPROTO, "unknown frame type 0x%02x",
                  f->type);
    }
}

/* ---- input ---- */

/* Decodes and handles every whole frame read. Returns -1 once the
 * connection failed. */
static int session_parse(struct session *c)
{
    struct server *s = c->srv;
    struct proto_frame f;
    int n;

    while (!c->closing) {
        n = conn_next(&c->io, s->max_payload, &f);
        if (n == CONN_FRAME) {
            session_frame(c, &f);
            continue;
        }
        if (n == CONN_MORE)
            break;
        if (n == CONN_TOOBIG)
            session_fail(c, f.tag, TH_ETOOBIG,
                         "frame of %u bytes over max_payload (%llu)", f.len,
                         (unsigned long long)s->max_payload);
        else if (n == CONN_VERSION)
            session_fail(c, f.tag, TH_EPROTO,
                         "unsupported protocol version %u (this daemon "
                         "speaks %d)", f.version, PROTO_VERSION);
        else if (n == CONN_STRAY)
            session_fail(c, f.tag, TH_EPROTO,
                         "a descriptor came with no frame to carry it");
        else
            session_fail(c, 0, TH_ENOMEM, "out of memory for a frame");
        return -1;
    }
    if (buf_avail(&c->io.in) == 0 && c->io.in.cap > BUF_KEEP)
        buf_free(&c->io.in);
    return c->closing ? -1 : 0;
}

/* The client will send no more (shutdown(SHUT_WR)) but may still read:
 * its tasks are answered, then the connection closes. */
static void session_half_closed(struct session *c)
{
    c->eof = 1;
    if (c->ntasks == 0 && buf_avail(&c->io.out) == 0) {
        session_close(c);
        return;
    }
    session_events(c, session_want(c));
}

static void session_read(struct session *c, unsigned events)
{
    ssize_t n = conn_read(&c->io);

    if (n == -1) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        if (errno == ENOMEM) {
            session_fail(c, 0, TH_ENOMEM, "out of memory reading");
            return;
        }
        if (errno == EPROTO) {
            session_fail(c, 0, TH_EPROTO, "descriptors lost: more than %d "
                      "waiting, or none left to this daemon",
                      FDPASS_QUEUE_MAX);
            return;
        }
        log_debug("client pid %d: read: %s", (int)c->pid, strerror(errno));
        session_close(c);
        return;
    }
    if (n == 0) {
        if (events & TH_WATCH_ERROR)
            session_close(c); /* gone both ways */
        else
            session_half_closed(c);
        return;
    }
    session_parse(c);
}

static void session_event(th_watch *w, int fd, unsigned events, void *arg)
{
    struct session *c = arg;

    if ((events & TH_WATCH_WRITE) && session_flush(c) < 0)
        return;
    if ((c->closing || c->eof) && (events & TH_WATCH_ERROR)) {
        session_close(c); /* nobody left to answer */
        return;
    }
    if ((events & TH_WATCH_READ) && !c->closing && !c->eof)
        session_read(c, events);
}

/* What a connection waits for: no reading while closing, nor while its
 * client lets answers pile up (resumed below OUT_LOW). */
static unsigned session_want(const struct session *c)
{
    unsigned want = TH_WATCH_READ;
    size_t out = buf_avail(&c->io.out);

    if (c->closing || c->eof || out >= OUT_HIGH ||
        (!(c->events & TH_WATCH_READ) && out > OUT_LOW))
        want = 0;
    return out ? want | TH_WATCH_WRITE : want;
}

/* Sends what is buffered, once; then sets the watch to match.
 * Returns -1 when the connection was closed (and freed). */
static int session_flush(struct session *c)
{
    if (conn_send(&c->io) == -1) {
        log_debug("client pid %d: send: %s", (int)c->pid, strerror(errno));
        session_close(c);
        return -1;
    }
    conn_trim(&c->io, BUF_KEEP);
    if ((c->closing || (c->eof && c->ntasks == 0)) &&
        buf_avail(&c->io.out) == 0) {
        session_close(c);
        return -1;
    }
    session_events(c, session_want(c));
    return 0;
}

/* Leaves the connection's tasks to the server: queued ones are cancelled,
 * running ones finish and their answers are dropped in on_done(). */
static void session_orphan_tasks(struct session *c)
{
    struct server *s = c->srv;
    size_t queued = 0, running = 0;

    while (c->tasks.next != &c->tasks) {
        struct slot *sl = c->tasks.next;
        slot_drop_fd(c, sl);
        slot_unlink(sl);
        sl->conn = NULL;
        if (s->host && th_host_task_state(s->host, sl->id) == TH_QUEUED &&
            th_host_cancel(s->host, sl->id) == 0) {
            queued++;
            continue;
        }
        running++;
    }
    s->counts.dropped += queued;
    if (queued || running)
        log_info("client pid %d uid %u left with %zu tasks in flight: %zu "
                 "queued dropped, %zu running discarded",
                 (int)c->pid, (unsigned)c->uid, queued + running, queued,
                 running);
}

static void session_unlist(struct session *c)
{
    struct server *s = c->srv;

    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (!c->dirty)
        return;
    for (struct session **p = &s->dirty; *p; p = &(*p)->next_dirty) {
        if (*p == c) {
            *p = c->next_dirty;
            break;
        }
    }
}

/* Closes the connection and frees it; its tasks are orphaned. */
static void session_close(struct session *c)
{
    session_orphan_tasks(c);
    session_unlist(c);
    th_watch_stop(c->w); /* safe from its own callback */
    c->w = NULL;
    close(c->io.fd);
    conn_clear(&c->io);
    fdpass_maps_clear(&c->maps); /* its tasks let go in session_orphan_tasks */
    log_debug("client pid %d uid %u disconnected", (int)c->pid,
              (unsigned)c->uid);
    free(c->groups);
    free(c);
}

/* ---- accepting ---- */

static struct session *session_new(struct server *s, int fd)
{
    struct session *c = calloc(1, sizeof *c);
    struct ucred cred;
    socklen_t len = sizeof cred;

    if (c == NULL)
        return NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
        log_warn("SO_PEERCRED: %s", strerror(errno));
        free(c);
        return NULL;
    }
    c->srv = s;
    conn_init(&c->io, fd);
    c->uid = cred.uid;
    c->gid = cred.gid;
    c->pid = cred.pid;
    c->tasks.next = c->tasks.prev = &c->tasks;
    if (peer_groups(c) < 0) {
        log_warn("SO_PEERGROUPS: %s", strerror(errno));
        free(c->groups);
        free(c);
        return NULL;
    }
    return c;
}

static int session_register(struct server *s, struct session *c)
{
    int rc = th_watch_start(s->host, c->io.fd, TH_WATCH_READ, session_event, c,
                            &c->w);

    if (rc < 0) {
        log_warn("cannot watch client pid %d: %s", (int)c->pid,
                 th_strerror(rc));
        return -1;
    }
    c->events = TH_WATCH_READ;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
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
    if (session_may_submit(c)) {
        log_debug("client pid %d uid %u connected%s", (int)c->pid,
                  (unsigned)c->uid, session_is_admin(c) ? " (admin)" : "");
        return;
    }
    session_refuse(c, 0);
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

/* ---- the socket ---- */

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
        struct group *g = getgrnam(cfg->socket_group);
        if (g == NULL || chown(s->path, (uid_t)-1, g->gr_gid) == -1) {
            snprintf(err, errlen, "%s: cannot give it to group '%s': %s",
                     s->path, cfg->socket_group,
                     g ? strerror(errno) : "no such group");
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
