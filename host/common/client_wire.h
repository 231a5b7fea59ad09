/* client_wire.h - the wire format between taskhostd and its clients
 * (common layer: the daemon and the client library both use it).
 *
 * Shared by the daemon (daemon/session.c, daemon/requests.c) and the
 * client library (client/client.c), through conn.h;
 * docs/protocol.md is the reference. Every frame is a 16-byte header and a
 * body of `len` bytes, all integers little-endian:
 *
 *   u32 len | u8 version | u8 type | u16 flags | u64 tag | body[len]
 *
 * Decoding never allocates and never reads outside the bytes it is given:
 * a decoded frame and the strings and payloads parsed out of it point into
 * the caller's buffer, and are valid as long as that buffer is. Names
 * (pool, task) travel with a terminating NUL so that they can be used in
 * place as C strings.
 */
#ifndef TH_PROTOCOL_H
#define TH_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "taskhost_host.h"

#define PROTO_VERSION 1
#define PROTO_HEADER_SIZE 16
#define PROTO_NAME_MAX 255           /* bytes of a pool or task name */
#define PROTO_DEFAULT_MAX (64u << 20) /* body cap when none is configured */
#define PROTO_SLOTS 64 /* memfd slots of one connection (IN_SLOT) */
#define PROTO_NO_SLOT UINT32_MAX

/* Frame types. Requests have the high bit clear, answers set. */
enum proto_type {
    PROTO_SUBMIT = 0x01,
    PROTO_CANCEL = 0x02,
    PROTO_STATS = 0x03,
    PROTO_RESTART = 0x04,
    PROTO_RELOAD = 0x05,
    PROTO_SHUTDOWN = 0x06,
    PROTO_PING = 0x07,
    PROTO_RESULT = 0x81,
    PROTO_ACCEPTED = 0x82,
    PROTO_REPLY = 0x83,
    PROTO_PROGRESS = 0x84,
    PROTO_ERROR = 0xff
};

/* Flag bits, meaningful per type; undefined bits must be zero. */
enum {
    PROTO_F_ACK = 0x1,     /* SUBMIT: answer ACCEPTED with the task id */
    PROTO_F_IN_FD = 0x2,   /* SUBMIT: the input is in the attached memfd */
    PROTO_F_OUT_FD = 0x4,  /* SUBMIT: the output may come in a memfd */
    PROTO_F_PROGRESS = 0x8, /* SUBMIT: send PROGRESS frames of the task */
    PROTO_F_OUT_AT = 0x10, /* SUBMIT (with IN_FD or IN_SLOT): the output may
                              be written into the input memfd, after the
                              input */
    PROTO_F_IN_SLOT = 0x20, /* SUBMIT: the input is in the memfd of a slot
                               of the connection; with IN_FD the attached
                               memfd goes into that slot first */
    PROTO_F_TASK_ID = 0x1, /* CANCEL: target is a task id, not a tag */
    PROTO_F_FORCE = 0x1,   /* RESTART, SHUTDOWN: forced */
    PROTO_F_FD_OK = 0x1,   /* REPLY to PING: the daemon speaks memfds */
    PROTO_F_AT_OK = 0x2,   /* REPLY to PING: ... and takes OUT_AT */
    PROTO_F_SLOT_OK = 0x4, /* REPLY to PING: ... and takes IN_SLOT */
    PROTO_F_RES_FD = 0x1,  /* RESULT: the output is in the attached memfd */
    PROTO_F_RES_IN_FD = 0x2, /* RESULT: the output is in the submit's own
                               input memfd, nothing attached */
    PROTO_F_RES_AT = 0x4   /* RESULT: the output is in the submit's own
                              input memfd at the offset the body gives */
};

/* A decoded header; body points into the decoded buffer. */
struct proto_frame {
    uint32_t len;
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint64_t tag;
    const uint8_t *body;
};

/* SUBMIT body, as sent or as parsed. Times are milliseconds, 0 meaning
 * the pool's own value. With PROTO_F_IN_FD or PROTO_F_IN_SLOT the input
 * is not in the body: input is NULL and input_len is the length announced
 * for the memfd; with PROTO_F_IN_SLOT, slot names the connection's memfd
 * slot (any value: the daemon checks it against PROTO_SLOTS). */
struct proto_submit {
    const char *pool;
    size_t pool_len;
    const char *task;
    size_t task_len;
    const void *input;
    size_t input_len;
    uint32_t slot; /* with PROTO_F_IN_SLOT, else PROTO_NO_SLOT */
    uint32_t task_timeout_ms;
    uint32_t queue_timeout_ms;
    int priority; /* -128..127 */
};

/* RESULT body, as sent or as parsed. Times are microseconds. flags is 0
 * or one of PROTO_F_RES_FD, PROTO_F_RES_IN_FD, PROTO_F_RES_AT: the output
 * is then in a memfd, data is NULL and len is its length (at `offset`
 * with PROTO_F_RES_AT, else at the start). */
struct proto_result {
    uint16_t flags;
    uint64_t offset;
    uint64_t task_id;
    int state; /* a final th_state */
    int32_t code;
    uint64_t wait_us;
    uint64_t run_us;
    const void *data;
    size_t len;
};

/* PROGRESS body: u64 done, u64 total, then the message (no NUL), at
 * most PROTO_PROGRESS_MSG_MAX bytes. */
#define PROTO_PROGRESS_MSG_MAX 255
struct proto_progress {
    uint64_t done;
    uint64_t total;
    const char *msg;
    size_t msg_len;
};

/* Body of CANCEL (target), STATS (format, pool), RESTART (pool); an empty
 * pool means every pool. */
struct proto_control {
    uint64_t target;
    int format;
    const char *pool;
    size_t pool_len;
};

/* REPLY and ERROR body: a code and a text. */
struct proto_reply {
    int32_t code;
    const char *text;
    size_t len;
};

/* Decodes the frame at the start of buf[0..avail). Returns the frame's
 * total size (> 0) and fills *f when it is whole; 0 when more bytes are
 * needed, with the total size in *need once the header is known
 * (PROTO_HEADER_SIZE before); TH_ETOOBIG when the body exceeds max_body;
 * TH_EPROTO for another version. The header is then still in *f. */
long proto_decode(const void *buf, size_t avail, uint64_t max_body,
                  struct proto_frame *f, size_t *need);

/* Typed parsers of a decoded frame's body. Each returns 0, or TH_EPROTO
 * when the body is short, a name is not NUL-terminated, a reserved field
 * is not zero or a value is out of range. */
int proto_parse_submit(const struct proto_frame *f, struct proto_submit *s);
int proto_parse_result(const struct proto_frame *f, struct proto_result *r);
int proto_parse_control(const struct proto_frame *f, struct proto_control *c);
int proto_parse_reply(const struct proto_frame *f, struct proto_reply *r);
int proto_parse_accepted(const struct proto_frame *f, uint64_t *task_id);
int proto_parse_progress(const struct proto_frame *f,
                         struct proto_progress *p);

/* Encoders append one frame to b and return 0, TH_ENOMEM, or TH_EINVAL
 * (a name over PROTO_NAME_MAX, or a body over 4 GiB). */
int proto_put_submit(struct buf *b, uint64_t tag, uint16_t flags,
                     const struct proto_submit *s);
int proto_put_result(struct buf *b, uint64_t tag,
                     const struct proto_result *r);
int proto_put_accepted(struct buf *b, uint64_t tag, uint64_t task_id);
int proto_put_progress(struct buf *b, uint64_t tag,
                       const struct proto_progress *p);
int proto_put_cancel(struct buf *b, uint64_t tag, uint16_t flags,
                     uint64_t target);
int proto_put_stats(struct buf *b, uint64_t tag, int format,
                    const char *pool);
int proto_put_restart(struct buf *b, uint64_t tag, uint16_t flags,
                      const char *pool);
/* RELOAD, SHUTDOWN, PING: no body. */
int proto_put_empty(struct buf *b, uint8_t type, uint64_t tag,
                    uint16_t flags);
/* REPLY or ERROR. */
int proto_put_reply(struct buf *b, uint8_t type, uint64_t tag,
                    int32_t code, const void *text, size_t len);
/* The same with flag bits (PROTO_F_FD_OK). */
int proto_put_reply_flags(struct buf *b, uint8_t type, uint64_t tag,
                          uint16_t flags, int32_t code, const void *text,
                          size_t len);

/* A short name of a frame type for messages ("submit"), or NULL. */
const char *proto_type_name(int type);

#endif /* TH_PROTOCOL_H */
