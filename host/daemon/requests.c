/* requests.c - what each client request does (daemon layer): submit,
 * cancel, stats, restart, reload, shutdown, ping, and the answers the
 * engine gives back to a session.
 *
 * Large payloads may travel in memfds instead (fdpass.h): an input memfd
 * is checked and mapped once (the client sends the same few again and
 * again, each into a slot of the connection that later submits name
 * alone, or attached again, found by its file) and handed to the engine, which passes it on to the worker: the
 * plugin reads the input in place and, when the client allows (OUT_AT),
 * writes its output into the same memfd after the input, where the client
 * reads it. Otherwise the output is written back at the memfd's start, or
 * into a new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host.h"
#include "log.h"
#include "session.h"
#include "taskhost_version.h"

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
    uint64_t input_len = sl->input_bytes;
    struct proto_result r;

    if (c == NULL) { /* its client left */
        if (res->state != TH_STATE_CANCELLED)
            s->counts.discarded++;
        if (sl->map != NULL)
            fdpass_map_put(NULL, sl->map);
        sl->map = NULL;
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
    r.offset = 0;
    if (res->data == NULL) { /* the worker wrote it into the memfd */
        r.flags = PROTO_F_RES_AT;
        r.offset = host_fd_out_at(input_len);
    } else {
        output_to_fd(c, sl, &r);
    }
    if (proto_put_result(&c->io.out, sl->tag, &r) < 0) {
        log_error("out of memory answering client pid %d", (int)c->pid);
        if (r.flags == PROTO_F_RES_FD)
            close(conn_unpush_fd(&c->io));
    }
    slot_drop_fd(c, sl);
    session_mark(c);
    slot_put(s, sl);
}

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
    session_answer(c, tag, TH_STATE_REJECTED, TH_EINVAL, msg);
    return 0;
}

/* Fails the session over a submit whose input memfd cannot be taken;
 * returns -1. */
static int input_fault(struct session *c, const struct proto_frame *f,
                       int code, const char *what, const char *why)
{
    session_fail(c, f->tag, code, "%s %s", what, why);
    return -1;
}

/* The checks every input memfd passes: one came, and the length is
 * within max_payload. Returns the descriptor, or -1 once the connection
 * failed. */
static int input_fd(struct session *c, const struct proto_frame *f,
                    const struct proto_submit *sub)
{
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
    return fd;
}

/* Puts memfd fd into slot n of c, checked for len bytes and mapped, in
 * place of what the slot held (tasks in flight keep that until their
 * answer). A slot filled for the first time counts against the memfds
 * the connection may keep mapped (its cache of memfds passed with each
 * task gives way). Returns the new entry, or NULL with fd still the
 * caller's and the reason in why. */
static struct fdpass_map *slot_fill(struct session *c, uint32_t n, int fd,
                                    uint64_t len, char *why, size_t cap)
{
    int fresh = c->mfd_slots[n] == NULL;
    struct fdpass_map *e;

    if (fresh && fdpass_maps_hold(&c->maps) < 0) {
        snprintf(why, cap, "cannot be kept: %d memfds of this connection "
                 "are in use", FDPASS_MAPS);
        return NULL;
    }
    e = fdpass_map_new(fd, len, c->srv->max_payload, why, cap);
    if (e == NULL) {
        c->maps.held -= fresh; /* the slot stays empty */
        return NULL;
    }
    if (c->mfd_slots[n] != NULL)
        fdpass_map_put(NULL, c->mfd_slots[n]);
    c->mfd_slots[n] = e;
    return e;
}

/* Slot n's memfd, mapped anew as far as it reaches now, for an input of
 * len bytes beyond its mapping: the memfd may have grown since it was
 * passed. Returns the new entry, or NULL with the reason in why. */
static struct fdpass_map *slot_regrow(struct session *c, uint32_t n,
                                      uint64_t len, char *why, size_t cap)
{
    struct fdpass_map *e;
    int fd = fcntl(c->mfd_slots[n]->fd, F_DUPFD_CLOEXEC, 0);

    if (fd == -1) {
        snprintf(why, cap, "cannot be mapped again: %s", strerror(errno));
        return NULL;
    }
    if ((e = slot_fill(c, n, fd, len, why, cap)) == NULL)
        close(fd);
    return e;
}

/* The memfd of a PROTO_F_IN_SLOT submit: the one attached (with IN_FD),
 * checked, mapped and put into the slot; else the one the slot holds,
 * mapped when it was passed. Neither a system call nor a check of the
 * file per task, unless an input reaches beyond the mapping: its seal
 * keeps the memfd from shrinking, and the daemon never reads what it
 * holds. Returns the entry, busy once more, or NULL once the connection
 * failed. */
static struct fdpass_map *slot_input(struct session *c,
                                     const struct proto_frame *f,
                                     const struct proto_submit *sub)
{
    struct fdpass_map *e;
    char why[96];
    int fd;

    if (sub->slot >= PROTO_SLOTS) {
        snprintf(why, sizeof why, "%u of %u", sub->slot, PROTO_SLOTS);
        input_fault(c, f, TH_EPROTO, "submit names memfd slot", why);
        return NULL;
    }
    if (f->flags & PROTO_F_IN_FD) {
        if ((fd = input_fd(c, f, sub)) == -1)
            return NULL;
        e = slot_fill(c, sub->slot, fd, sub->input_len, why, sizeof why);
        if (e == NULL) {
            close(fd);
            input_fault(c, f, TH_EPROTO, "input descriptor", why);
            return NULL;
        }
    } else if ((e = c->mfd_slots[sub->slot]) == NULL) {
        snprintf(why, sizeof why, "%u, which holds none", sub->slot);
        input_fault(c, f, TH_EPROTO, "submit names memfd slot", why);
        return NULL;
    } else if (sub->input_len > c->srv->max_payload) {
        snprintf(why, sizeof why, "of %zu bytes over max_payload (%llu)",
                 sub->input_len, (unsigned long long)c->srv->max_payload);
        input_fault(c, f, TH_ETOOBIG, "input in a memfd slot", why);
        return NULL;
    } else if (sub->input_len > e->size &&
               (e = slot_regrow(c, sub->slot, sub->input_len, why,
                                sizeof why)) == NULL) {
        input_fault(c, f, TH_EPROTO, "memfd of the slot", why);
        return NULL;
    }
    e->busy++;
    return e;
}

/* Maps the input memfd of a PROTO_F_IN_FD or PROTO_F_IN_SLOT submit into
 * *map and points sub->input at it. Returns 0, or -1 once the connection
 * failed. */
static int input_map(struct session *c, const struct proto_frame *f,
                     struct proto_submit *sub, struct fdpass_map **map)
{
    char why[96];
    int fd;

    if (f->flags & PROTO_F_IN_SLOT) {
        if ((*map = slot_input(c, f, sub)) == NULL)
            return -1;
    } else {
        if ((fd = input_fd(c, f, sub)) == -1)
            return -1;
        *map = fdpass_map_get(&c->maps, fd, sub->input_len, why, sizeof why);
        if (*map == NULL) {
            close(fd);
            return input_fault(c, f, TH_EPROTO, "input descriptor", why);
        }
    }
    sub->input = sub->input_len ? (const void *)(*map)->map : "";
    return 0;
}

/* Hands a parsed submit to the engine, with its input memfd `map` if it
 * came in one; returns its slot, or NULL when it was answered at once. */
static struct slot *submit_task(struct session *c, const struct proto_frame *f,
                                const struct proto_submit *sub,
                                struct fdpass_map *map)
{
    struct server *s = c->srv;
    th_submit_opts opts = {0};
    struct slot *sl;
    int rc;

    if (s->stopping) {
        session_answer(c, f->tag, TH_STATE_REJECTED, TH_ECLOSED,
                     "shutting down");
        return NULL;
    }
    if (!names_ok(c, f->tag, sub))
        return NULL;
    if (s->max_conn_bytes > 0 &&
        c->input_bytes + sub->input_len > s->max_conn_bytes) {
        session_answer(c, f->tag, TH_STATE_REJECTED, TH_EFULL,
                       "this connection has too much input in flight "
                       "(max_connection_bytes)");
        return NULL;
    }
    sl = slot_get(s);
    if (sl == NULL) {
        session_answer(c, f->tag, TH_STATE_REJECTED, TH_ENOMEM,
                     "out of memory");
        return NULL;
    }
    opts.task_timeout = sub->task_timeout_ms / 1000.0;
    opts.queue_timeout = sub->queue_timeout_ms / 1000.0;
    opts.priority = sub->priority;
    sl->tag = f->tag;
    sl->out_fd = (f->flags & PROTO_F_OUT_FD) != 0;
    if (map != NULL) {
        /* The memfd is held open by sl->map until the answer. */
        struct host_fd hf = {.fd = map->fd,
                             .out_ok = (f->flags & PROTO_F_OUT_AT) != 0,
                             .dev = map->dev,
                             .ino = map->ino};
        rc = host_submit_fd(s->host, sub->pool, sub->task, sub->input,
                            sub->input_len, &opts, on_done, sl, &sl->id, &hf);
    } else {
        rc = th_host_submit(s->host, sub->pool, sub->task, sub->input,
                            sub->input_len, &opts, on_done, sl, &sl->id);
    }
    if (rc < 0) {
        slot_put(s, sl);
        session_answer(c, f->tag, TH_STATE_REJECTED, rc,
                     rc == TH_ECLOSED ? "shutting down" : th_strerror(rc));
        return NULL;
    }
    slot_link(c, sl);
    sl->input_bytes = (uint32_t)sub->input_len; /* <= max_payload */
    c->input_bytes += sl->input_bytes;
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
    if ((f->flags & (PROTO_F_IN_FD | PROTO_F_IN_SLOT)) &&
        input_map(c, f, &sub, &map) < 0)
        return;
    /* An input in a memfd is not copied: the task reads the mapping,
     * which its slot holds until the answer (and an output may go back
     * into it). */
    sl = submit_task(c, f, &sub, map);
    if (map == NULL)
        return;
    if (sl != NULL) {
        sl->map = map;
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
        if (sl && sl->conn->uid != c->uid && !access_is_admin(c)) {
            session_reply(c, f->tag, TH_EPERM, "task belongs to another user");
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
        session_reply(c, f->tag, TH_ENOENT, "no such task pending");
        return;
    }
    session_reply(c, f->tag, 0, NULL);
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
        session_reply(c, f->tag, rc,
              rc == TH_ENOENT ? "no such pool" : th_strerror(rc));
        return;
    }
    session_reply(c, f->tag, 0, text);
    free(text);
}

static void do_restart(struct session *c, const struct proto_frame *f)
{
    struct proto_control ctl;
    int rc;

    if (proto_parse_control(f, &ctl) < 0) {
        session_fail(c, f->tag, TH_EPROTO, "malformed restart frame");
        return;
    }
    if (!access_need_admin(c, f))
        return;
    rc = th_host_restart(c->srv->host, ctl.pool_len ? ctl.pool : NULL,
                         (f->flags & PROTO_F_FORCE) != 0);
    if (rc == 0)
        log_info("restart of %s requested by uid %u%s",
                 ctl.pool_len ? ctl.pool : "every pool", (unsigned)c->uid,
                 (f->flags & PROTO_F_FORCE) ? " (forced)" : "");
    session_reply(c, f->tag, rc,
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
    if (!access_need_admin(c, f))
        return;
    rc = c->srv->ops.reload(c->srv->ops.arg, err, sizeof err);
    session_reply(c, f->tag, rc, rc == 0 ? NULL : err[0] ? err : th_strerror(rc));
}

static void do_shutdown(struct session *c, const struct proto_frame *f)
{
    if (f->len != 0) {
        session_fail(c, f->tag, TH_EPROTO, "malformed shutdown frame");
        return;
    }
    if (!access_need_admin(c, f))
        return;
    log_info("shutdown requested by uid %u pid %d", (unsigned)c->uid,
             (int)c->pid);
    session_reply(c, f->tag, 0, NULL);
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
                             PROTO_F_PROGRESS | PROTO_F_OUT_AT |
                             PROTO_F_IN_SLOT)) == 0;
    case PROTO_CANCEL: return (f->flags & ~PROTO_F_TASK_ID) == 0;
    case PROTO_RESTART:
    case PROTO_SHUTDOWN: return (f->flags & ~PROTO_F_FORCE) == 0;
    default: return f->flags == 0;
    }
}

void requests_handle(struct session *c, const struct proto_frame *f)
{
    if (!access_may_submit(c)) {
        access_refuse(c, f->tag);
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
        proto_put_reply_flags(&c->io.out, PROTO_REPLY, f->tag,
                              PROTO_F_FD_OK | PROTO_F_AT_OK |
                                  PROTO_F_SLOT_OK,
                              0,
                              "taskhostd " TH_VERSION_STRING,
                              strlen("taskhostd " TH_VERSION_STRING));
        session_mark(c);
        return;
    default:
        session_fail(c, f->tag, TH_EPROTO, "unknown frame type 0x%02x",
                  f->type);
    }
}
