/* fuzz_protocol.c - the wire decoder, fed the way server.c feeds it.
 *
 * The input's first byte picks the size of the reads (1 to 256 bytes, or
 * everything at once); the rest is the byte stream of one connection. Each
 * chunk is appended to a buf, every whole frame in it is decoded and
 * parsed by the parser of its type, and the consumed bytes are dropped, as
 * conn_parse() does. A parsed SUBMIT is encoded again and must decode to
 * the same fields. Any fault the decoder reports ends the stream, as it
 * ends a connection.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "client_wire.h"

#define MAX_BODY 4096

#define check(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

/* Reads every byte of a name the parser handed out, NUL included. */
static void touch_name(const char *s, size_t n)
{
    check(strlen(s) == n);
}

static void resubmit(const struct proto_frame *f, const struct proto_submit *s)
{
    struct buf b = {0};
    struct proto_frame g;
    struct proto_submit t;
    size_t need = 0;

    check(proto_put_submit(&b, f->tag, f->flags, s) == 0);
    check(proto_decode(b.data, b.len, MAX_BODY, &g, &need) == (long)b.len);
    check(g.len == f->len && g.tag == f->tag && g.flags == f->flags);
    check(proto_parse_submit(&g, &t) == 0);
    check(t.pool_len == s->pool_len && t.task_len == s->task_len);
    check(strcmp(t.pool, s->pool) == 0 && strcmp(t.task, s->task) == 0);
    check(t.input_len == s->input_len);
    check(t.slot == s->slot);
    check((f->flags & (PROTO_F_IN_FD | PROTO_F_IN_SLOT))
              ? t.input == NULL
              : memcmp(t.input, s->input, s->input_len) == 0);
    check(t.priority == s->priority &&
          t.task_timeout_ms == s->task_timeout_ms &&
          t.queue_timeout_ms == s->queue_timeout_ms);
    buf_free(&b);
}

/* Parses one whole frame with the parser of its type. */
static void parse_frame(const struct proto_frame *f)
{
    struct proto_submit s;
    struct proto_result r;
    struct proto_control c;
    struct proto_reply rep;
    uint64_t id;

    if (proto_parse_submit(f, &s) == 0) {
        touch_name(s.pool, s.pool_len);
        touch_name(s.task, s.task_len);
        /* an input in a memfd is only its announced length */
        check((f->flags & (PROTO_F_IN_FD | PROTO_F_IN_SLOT))
                  ? s.input == NULL
                  : (const uint8_t *)s.input + s.input_len ==
                        f->body + f->len);
        resubmit(f, &s);
    }
    if (proto_parse_control(f, &c) == 0)
        touch_name(c.pool, c.pool_len);
    if (proto_parse_result(f, &r) == 0)
        check(r.flags ? r.data == NULL
                      : (const uint8_t *)r.data + r.len == f->body + f->len);
    if (proto_parse_reply(f, &rep) == 0)
        check((const uint8_t *)rep.text + rep.len == f->body + f->len);
    (void)proto_parse_accepted(f, &id);
    (void)proto_type_name(f->type);
}

/* Decodes and parses every whole frame in `in`; returns -1 on a fault. */
static int drain(struct buf *in)
{
    struct proto_frame f;
    size_t pos = 0, need = 0;
    long n;

    for (;;) {
        n = proto_decode(buf_head(in) + pos, buf_avail(in) - pos, MAX_BODY, &f,
                         &need);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        check(n >= 16 && (size_t)n <= buf_avail(in) - pos);
        parse_frame(&f);
        pos += (size_t)n;
    }
    check(need > buf_avail(in) - pos);
    buf_consume(in, pos);
    check(buf_reserve(in, need - buf_avail(in)) == 0);
    return 0;
}

int fuzz_protocol(const uint8_t *data, size_t size)
{
    struct buf in = {0};
    size_t chunk, off = 1;
    uint8_t *p;

    if (size == 0)
        return 0;
    chunk = data[0] == 0 ? size : data[0];
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;

        p = buf_extend(&in, n);
        check(p != NULL);
        memcpy(p, data + off, n);
        off += n;
        if (drain(&in) < 0)
            break;
    }
    buf_free(&in);
    return 0;
}

#ifdef FUZZ_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_protocol(data, size);
}
#endif
