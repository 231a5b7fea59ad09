/* conn.h - one end of a client connection (common layer): the stream
 * codec shared by taskhostd (daemon/session.c) and the client library
 * (client/client.c).
 *
 * A connection is a Unix stream socket carrying the frames of
 * client_wire.h, with descriptors (memfd payloads, fdpass.h) passed along
 * it in the order of its frames. The codec owns the two buffers (buf.h),
 * the stream offsets that tie each descriptor to the frame it travels
 * with, and the queues of descriptors received and to send. It never
 * blocks and never decides: what a frame means, and what to do on a
 * fault, is the caller's.
 */
#ifndef TH_CONN_H
#define TH_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "client_wire.h"
#include "fdpass.h"

#define CONN_READ_CHUNK (256u << 10) /* bytes asked of each read */

struct conn {
    int fd;
    struct buf in, out;
    uint64_t in_pos;    /* stream bytes received */
    uint64_t out_pos;   /* stream bytes sent */
    uint64_t frame_pos; /* stream offset of the frame conn_next() gave */
    struct fdpass_queue rfds, sfds; /* descriptors received, to send */
};

/* What conn_next() found. */
enum conn_next {
    CONN_FRAME = 1,    /* a whole frame */
    CONN_MORE = 0,     /* not yet: room for the rest is reserved */
    CONN_TOOBIG = -1,  /* the frame's body is over the limit */
    CONN_VERSION = -2, /* another protocol version */
    CONN_STRAY = -3,   /* a descriptor came with no frame to carry it */
    CONN_NOMEM = -4    /* no memory for the rest of the frame */
};

/* Sets c up on connected non-blocking socket `fd` (kept, not dup'd). */
void conn_init(struct conn *c, int fd);

/* Reads once into c->in, with any descriptors that come along. Returns
 * the bytes read, 0 at end of file, or -1 with errno (EPROTO: descriptors
 * were lost, more than FDPASS_QUEUE_MAX waiting or none left to us). */
ssize_t conn_read(struct conn *c);

/* Takes the next whole frame out of c->in into *f, whose body points
 * into the buffer and stays valid until the next conn_read(). Sets
 * c->frame_pos to its stream offset, which conn_take_fd() needs. Returns
 * an enum conn_next; with CONN_TOOBIG or CONN_VERSION the header is in
 * *f. `max_body` bounds a body. */
int conn_next(struct conn *c, uint64_t max_body, struct proto_frame *f);

/* The descriptor that came with the frame conn_next() gave last (the
 * caller owns it), or -1. */
int conn_take_fd(struct conn *c);

/* Queues `fd` to travel with the next frame appended to c->out; with
 * `own` it is closed once sent. Returns 0, or TH_EFULL. */
int conn_push_fd(struct conn *c, int fd, int own);

/* Takes back the last conn_push_fd() and returns its descriptor. */
int conn_unpush_fd(struct conn *c);

/* Sends what c->out holds, once, with the descriptors due. Returns the
 * bytes sent (0 when the socket is full or nothing waits), or -1 with
 * errno. */
ssize_t conn_send(struct conn *c);

/* Frees both buffers when they are empty and larger than `keep` bytes:
 * a burst of large frames does not pin its memory. */
void conn_trim(struct conn *c, size_t keep);

/* Frees the buffers and closes every queued descriptor; the socket is the
 * caller's to close. */
void conn_clear(struct conn *c);

#endif /* TH_CONN_H */
