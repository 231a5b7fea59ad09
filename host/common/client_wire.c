/* client_wire.c - encoding and decoding of the client protocol's frames
 * (common layer; docs/protocol.md).
 *
 * The decoder trusts nothing: every length is checked against the bytes
 * actually present before it is used, so any input yields a frame, a
 * request for more bytes, or an error. Integers are assembled byte by byte
 * (little-endian), which also sidesteps alignment.
 */
#include "client_wire.h"

#include <stdlib.h>
#include <string.h>

#define SUBMIT_FIXED 12
#define RESULT_FIXED 32
#define CONTROL_FIXED 4
#define REPLY_FIXED 4
#define FD_LEN 8 /* a payload in a memfd: its u64 length in the body */
#define SLOT_LEN 16 /* ... in a slot's memfd: u64 length, u32 slot, u32 0 */

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

long proto_decode(const void *buf, size_t avail, uint64_t max_body,
                  struct proto_frame *f, size_t *need)
{
    const uint8_t *p = buf;

    if (avail < PROTO_HEADER_SIZE) {
        *need = PROTO_HEADER_SIZE;
        return 0;
    }
    f->len = get32(p);
    f->version = p[4];
    f->type = p[5];
    f->flags = get16(p + 6);
    f->tag = get64(p + 8);
    f->body = p + PROTO_HEADER_SIZE;
    if (f->version != PROTO_VERSION)
        return TH_EPROTO;
    if (f->len > max_body)
        return TH_ETOOBIG;
    *need = PROTO_HEADER_SIZE + (size_t)f->len;
    if (avail < *need)
        return 0;
    return (long)*need;
}

/* Checks that a name of n bytes at p is followed by a NUL within `end`
 * and holds no NUL itself. */
static int name_ok(const uint8_t *p, size_t n, const uint8_t *end)
{
    if (n >= (size_t)(end - p) || p[n] != '\0')
        return 0;
    return memchr(p, '\0', n) == NULL;
}

int proto_parse_submit(const struct proto_frame *f, struct proto_submit *s)
{
    const uint8_t *p = f->body, *end = f->body + f->len;

    if (f->type != PROTO_SUBMIT || f->len < SUBMIT_FIXED || p[11] != 0)
        return TH_EPROTO;
    s->task_timeout_ms = get32(p);
    s->queue_timeout_ms = get32(p + 4);
    s->priority = (int8_t)p[8];
    s->pool_len = p[9];
    s->task_len = p[10];
    p += SUBMIT_FIXED;
    if (s->pool_len == 0 || s->task_len == 0 || !name_ok(p, s->pool_len, end))
        return TH_EPROTO;
    s->pool = (const char *)p;
    p += s->pool_len + 1;
    if (!name_ok(p, s->task_len, end))
        return TH_EPROTO;
    s->task = (const char *)p;
    p += s->task_len + 1;
    s->slot = PROTO_NO_SLOT;
    if (f->flags & PROTO_F_IN_SLOT) {
        if (end - p != SLOT_LEN || get64(p) > UINT32_MAX || get32(p + 12))
            return TH_EPROTO;
        s->input = NULL;
        s->input_len = (size_t)get64(p);
        s->slot = get32(p + 8);
        return 0;
    }
    if (f->flags & PROTO_F_IN_FD) {
        if (end - p != FD_LEN || get64(p) > UINT32_MAX)
            return TH_EPROTO;
        s->input = NULL;
        s->input_len = (size_t)get64(p);
        return 0;
    }
    s->input = p;
    s->input_len = (size_t)(end - p);
    return 0;
}

int proto_parse_result(const struct proto_frame *f, struct proto_result *r)
{
    const uint8_t *p = f->body;

    if (f->type != PROTO_RESULT || f->len < RESULT_FIXED)
        return TH_EPROTO;
    if (p[8] < TH_STATE_OK || p[8] >= TH_STATE_COUNT || p[9] || p[10] ||
        p[11])
        return TH_EPROTO;
    r->task_id = get64(p);
    r->state = p[8];
    r->code = (int32_t)get32(p + 12);
    r->wait_us = get64(p + 16);
    r->run_us = get64(p + 24);
    r->flags = f->flags;
    if (f->flags == 0) {
        r->data = p + RESULT_FIXED;
        r->len = f->len - RESULT_FIXED;
        return 0;
    }
    r->offset = 0;
    if (f->flags == PROTO_F_RES_AT) {
        if (f->len != RESULT_FIXED + 2 * FD_LEN ||
            get64(p + RESULT_FIXED) > UINT32_MAX ||
            get64(p + RESULT_FIXED + FD_LEN) > UINT32_MAX)
            return TH_EPROTO;
        r->offset = get64(p + RESULT_FIXED + FD_LEN);
    } else if ((f->flags != PROTO_F_RES_FD && f->flags != PROTO_F_RES_IN_FD) ||
               f->len != RESULT_FIXED + FD_LEN ||
               get64(p + RESULT_FIXED) > UINT32_MAX) {
        return TH_EPROTO;
    }
    r->data = NULL;
    r->len = (size_t)get64(p + RESULT_FIXED);
    return 0;
}

int proto_parse_control(const struct proto_frame *f, struct proto_control *c)
{
    const uint8_t *p = f->body, *end = f->body + f->len;

    memset(c, 0, sizeof *c);
    c->pool = "";
    if (f->type == PROTO_CANCEL) {
        if (f->len != 8)
            return TH_EPROTO;
        c->target = get64(p);
        return 0;
    }
    if (f->type != PROTO_STATS && f->type != PROTO_RESTART)
        return TH_EPROTO;
    if (f->len < CONTROL_FIXED || p[2] || p[3])
        return TH_EPROTO;
    c->format = p[0];
    c->pool_len = p[1];
    if (f->len != CONTROL_FIXED + c->pool_len + 1 ||
        !name_ok(p + CONTROL_FIXED, c->pool_len, end))
        return TH_EPROTO;
    if (f->type == PROTO_STATS && c->format > TH_STATS_PROMETHEUS)
        return TH_EPROTO;
    if (f->type == PROTO_RESTART && c->format != 0)
        return TH_EPROTO;
    c->pool = (const char *)p + CONTROL_FIXED;
    return 0;
}

int proto_parse_reply(const struct proto_frame *f, struct proto_reply *r)
{
    if ((f->type != PROTO_REPLY && f->type != PROTO_ERROR) ||
        f->len < REPLY_FIXED)
        return TH_EPROTO;
    r->code = (int32_t)get32(f->body);
    r->text = (const char *)f->body + REPLY_FIXED;
    r->len = f->len - REPLY_FIXED;
    return 0;
}

int proto_parse_progress(const struct proto_frame *f,
                         struct proto_progress *p)
{
    if (f->type != PROTO_PROGRESS || f->len < 16 ||
        f->len > 16 + PROTO_PROGRESS_MSG_MAX)
        return TH_EPROTO;
    p->done = get64(f->body);
    p->total = get64(f->body + 8);
    p->msg = (const char *)f->body + 16;
    p->msg_len = f->len - 16;
    return 0;
}

int proto_parse_accepted(const struct proto_frame *f, uint64_t *task_id)
{
    if (f->type != PROTO_ACCEPTED || f->len != 8)
        return TH_EPROTO;
    *task_id = get64(f->body);
    return 0;
}

/* Reserves a whole frame of `body` bytes, writes its header and returns
 * where the body goes; the frame is committed at once (b grows). */
static uint8_t *frame_start(struct buf *b, uint8_t type, uint64_t tag,
                            uint16_t flags, size_t body)
{
    uint8_t *p;

    if (body > UINT32_MAX)
        return NULL;
    p = buf_extend(b, PROTO_HEADER_SIZE + body);
    if (p == NULL)
        return NULL;
    put32(p, (uint32_t)body);
    p[4] = PROTO_VERSION;
    p[5] = type;
    put16(p + 6, flags);
    put64(p + 8, tag);
    return p + PROTO_HEADER_SIZE;
}

static uint8_t *put_name(uint8_t *p, const char *name, size_t n)
{
    memcpy(p, name, n);
    p[n] = '\0';
    return p + n + 1;
}

int proto_put_submit(struct buf *b, uint64_t tag, uint16_t flags,
                     const struct proto_submit *s)
{
    size_t body;
    uint8_t *p;

    if (s->pool_len == 0 || s->pool_len > PROTO_NAME_MAX ||
        s->task_len == 0 || s->task_len > PROTO_NAME_MAX ||
        s->priority < -128 || s->priority > 127)
        return TH_EINVAL;
    body = SUBMIT_FIXED + s->pool_len + 1 + s->task_len + 1 +
           ((flags & PROTO_F_IN_SLOT) ? SLOT_LEN
            : (flags & PROTO_F_IN_FD) ? FD_LEN
                                      : s->input_len);
    if (body > UINT32_MAX)
        return TH_EINVAL;
    p = frame_start(b, PROTO_SUBMIT, tag, flags, body);
    if (p == NULL)
        return TH_ENOMEM;
    put32(p, s->task_timeout_ms);
    put32(p + 4, s->queue_timeout_ms);
    p[8] = (uint8_t)(int8_t)s->priority;
    p[9] = (uint8_t)s->pool_len;
    p[10] = (uint8_t)s->task_len;
    p[11] = 0;
    p = put_name(p + SUBMIT_FIXED, s->pool, s->pool_len);
    p = put_name(p, s->task, s->task_len);
    if (flags & PROTO_F_IN_SLOT) {
        put64(p, s->input_len);
        put32(p + 8, s->slot);
        put32(p + 12, 0);
    } else if (flags & PROTO_F_IN_FD) {
        put64(p, s->input_len);
    } else if (s->input_len)
        memcpy(p, s->input, s->input_len);
    return 0;
}

int proto_put_result(struct buf *b, uint64_t tag,
                     const struct proto_result *r)
{
    size_t body = RESULT_FIXED + (r->flags == PROTO_F_RES_AT ? 2 * FD_LEN
                                  : r->flags                 ? FD_LEN
                                                             : r->len);
    uint8_t *p;

    if (!r->flags && r->len > UINT32_MAX - RESULT_FIXED)
        return TH_EINVAL;
    p = frame_start(b, PROTO_RESULT, tag, r->flags, body);
    if (p == NULL)
        return TH_ENOMEM;
    put64(p, r->task_id);
    p[8] = (uint8_t)r->state;
    p[9] = p[10] = p[11] = 0;
    put32(p + 12, (uint32_t)r->code);
    put64(p + 16, r->wait_us);
    put64(p + 24, r->run_us);
    if (r->flags == PROTO_F_RES_AT)
        put64(p + RESULT_FIXED + FD_LEN, r->offset);
    if (r->flags)
        put64(p + RESULT_FIXED, r->len);
    else if (r->len)
        memcpy(p + RESULT_FIXED, r->data, r->len);
    return 0;
}

int proto_put_accepted(struct buf *b, uint64_t tag, uint64_t task_id)
{
    uint8_t *p = frame_start(b, PROTO_ACCEPTED, tag, 0, 8);

    if (p == NULL)
        return TH_ENOMEM;
    put64(p, task_id);
    return 0;
}

int proto_put_progress(struct buf *b, uint64_t tag,
                       const struct proto_progress *pr)
{
    size_t n = pr->msg_len > PROTO_PROGRESS_MSG_MAX ? PROTO_PROGRESS_MSG_MAX
                                                    : pr->msg_len;
    uint8_t *p = frame_start(b, PROTO_PROGRESS, tag, 0, 16 + (uint32_t)n);

    if (p == NULL)
        return TH_ENOMEM;
    put64(p, pr->done);
    put64(p + 8, pr->total);
    if (n)
        memcpy(p + 16, pr->msg, n);
    return 0;
}

int proto_put_cancel(struct buf *b, uint64_t tag, uint16_t flags,
                     uint64_t target)
{
    uint8_t *p = frame_start(b, PROTO_CANCEL, tag, flags, 8);

    if (p == NULL)
        return TH_ENOMEM;
    put64(p, target);
    return 0;
}

static int put_control(struct buf *b, uint8_t type, uint64_t tag,
                       uint16_t flags, int format, const char *pool)
{
    size_t n = pool ? strlen(pool) : 0;
    uint8_t *p;

    if (n > PROTO_NAME_MAX || format < 0 || format > 255)
        return TH_EINVAL;
    p = frame_start(b, type, tag, flags, CONTROL_FIXED + n + 1);
    if (p == NULL)
        return TH_ENOMEM;
    p[0] = (uint8_t)format;
    p[1] = (uint8_t)n;
    p[2] = p[3] = 0;
    put_name(p + CONTROL_FIXED, pool ? pool : "", n);
    return 0;
}

int proto_put_stats(struct buf *b, uint64_t tag, int format,
                    const char *pool)
{
    return put_control(b, PROTO_STATS, tag, 0, format, pool);
}

int proto_put_restart(struct buf *b, uint64_t tag, uint16_t flags,
                      const char *pool)
{
    return put_control(b, PROTO_RESTART, tag, flags, 0, pool);
}

int proto_put_empty(struct buf *b, uint8_t type, uint64_t tag,
                    uint16_t flags)
{
    return frame_start(b, type, tag, flags, 0) ? 0 : TH_ENOMEM;
}

int proto_put_reply(struct buf *b, uint8_t type, uint64_t tag,
                    int32_t code, const void *text, size_t len)
{
    return proto_put_reply_flags(b, type, tag, 0, code, text, len);
}

int proto_put_reply_flags(struct buf *b, uint8_t type, uint64_t tag,
                          uint16_t flags, int32_t code, const void *text,
                          size_t len)
{
    uint8_t *p;

    if (len > UINT32_MAX - REPLY_FIXED)
        return TH_EINVAL;
    p = frame_start(b, type, tag, flags, REPLY_FIXED + len);
    if (p == NULL)
        return TH_ENOMEM;
    put32(p, (uint32_t)code);
    if (len)
        memcpy(p + REPLY_FIXED, text, len);
    return 0;
}

const char *proto_type_name(int type)
{
    switch (type) {
    case PROTO_SUBMIT: return "submit";
    case PROTO_CANCEL: return "cancel";
    case PROTO_STATS: return "stats";
    case PROTO_RESTART: return "restart";
    case PROTO_RELOAD: return "reload";
    case PROTO_SHUTDOWN: return "shutdown";
    case PROTO_PING: return "ping";
    case PROTO_RESULT: return "result";
    case PROTO_ACCEPTED: return "accepted";
    case PROTO_REPLY: return "reply";
    case PROTO_PROGRESS: return "progress";
    case PROTO_ERROR: return "error";
    default: return NULL;
    }
}
