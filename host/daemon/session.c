/* session.c - one client's connection to taskhostd (daemon layer): its
 * watch in the engine's loop, reading and decoding frames (conn.h),
 * batched answers sent once per loop iteration, back-pressure, faults,
 * and what happens to its tasks when it leaves.
 *
 * Hot path: a readable connection is read in one large chunk, every whole
 * frame in it is decoded in place and handled (requests.c); answers are
 * encoded into the connection's output buffer as the engine calls back,
 * and server_flush() sends each buffer once per loop iteration. Nothing
 * on that path allocates per task: buffers grow and are reused, and the
 * per-task records (struct slot) come from slabs with a free list.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "session.h"
#include <sys/socket.h>

struct slot *slot_get(struct server *s)
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

void slot_put(struct server *s, struct slot *sl)
{
    sl->conn = NULL;
    sl->next = s->free_slots;
    s->free_slots = sl;
}

void slot_link(struct session *c, struct slot *sl)
{
    sl->conn = c;
    sl->next = c->tasks.next;
    sl->prev = &c->tasks;
    c->tasks.next->prev = sl;
    c->tasks.next = sl;
    c->ntasks++;
}

void slot_unlink(struct slot *sl)
{
    sl->prev->next = sl->next;
    sl->next->prev = sl->prev;
    sl->conn->ntasks--;
    sl->conn->input_bytes -= sl->input_bytes;
    sl->input_bytes = 0;
}

/* Ends the task's use of its input memfd, if any. */
void slot_drop_fd(struct session *c, struct slot *sl)
{
    if (sl->map == NULL)
        return;
    fdpass_map_put(&c->maps, sl->map);
    sl->map = NULL;
}

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

void session_mark(struct session *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->next_dirty = c->srv->dirty;
    c->srv->dirty = c;
}

void session_fail(struct session *c, uint64_t tag, int code, const char *fmt,
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

void session_reply(struct session *c, uint64_t tag, int code, const char *text)
{
    size_t n = text ? strlen(text) : 0;

    if (proto_put_reply(&c->io.out, PROTO_REPLY, tag, code, text, n) < 0)
        log_error("out of memory answering client pid %d", (int)c->pid);
    session_mark(c);
}

/* Answers a task the engine never took. */
void session_answer(struct session *c, uint64_t tag, th_state state,
                         int code, const char *text)
{
    struct proto_result r = {.state = state, .code = code, .data = text,
                             .len = strlen(text)};

    if (proto_put_result(&c->io.out, tag, &r) < 0)
        log_error("out of memory answering client pid %d", (int)c->pid);
    session_mark(c);
}

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
            requests_handle(c, &f);
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
unsigned session_want(const struct session *c)
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
int session_flush(struct session *c)
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
        /* The engine may still read its input from the mapping until the
         * task is answered: keep that alive past the connection. */
        if (sl->map != NULL)
            sl->map = fdpass_map_detach(&c->maps, sl->map);
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

    s->nconns--;
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
void session_close(struct session *c)
{
    session_orphan_tasks(c);
    session_unlist(c);
    th_watch_stop(c->w); /* safe from its own callback */
    c->w = NULL;
    close(c->io.fd);
    conn_clear(&c->io);
    fdpass_maps_clear(&c->maps); /* its tasks let go in session_orphan_tasks */
    for (size_t i = 0; i < PROTO_SLOTS; i++)
        if (c->mfd_slots[i] != NULL) /* tasks in flight keep theirs */
            fdpass_map_put(NULL, c->mfd_slots[i]);
    log_debug("client pid %d uid %u disconnected", (int)c->pid,
              (unsigned)c->uid);
    free(c->groups);
    free(c);
}

struct session *session_new(struct server *s, int fd)
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
    if (access_peer_groups(c) < 0) {
        log_warn("SO_PEERGROUPS: %s", strerror(errno));
        free(c->groups);
        free(c);
        return NULL;
    }
    return c;
}

int session_register(struct server *s, struct session *c)
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
