/* buf.h - a growable byte buffer with a read offset, for framed I/O
 * (common layer): the one buffer type of the engine's worker links and of
 * both ends of a client connection (conn.h).
 *
 * Bytes are appended at the tail and consumed from the head; consumed space
 * is reclaimed lazily (when the buffer empties, or by a compaction that
 * moves no more than was consumed), so steady traffic does not allocate
 * and pointers into the buffer stay valid until the next reserve.
 */
#ifndef TH_BUF_H
#define TH_BUF_H

#include <stddef.h>
#include <sys/types.h>

struct buf {
    char *data;
    size_t off; /* start of unconsumed bytes */
    size_t len; /* end of bytes */
    size_t cap;
};

#define BUF_INIT {NULL, 0, 0, 0}

/* Unconsumed bytes. */
static inline size_t buf_avail(const struct buf *b)
{
    return b->len - b->off;
}

/* Pointer to the first unconsumed byte. */
static inline char *buf_head(const struct buf *b)
{
    return b->data + b->off;
}

/* Makes room for `extra` more bytes at the tail. Returns 0 or TH_ENOMEM. */
int buf_reserve(struct buf *b, size_t extra);

/* Reserves `n` bytes at the tail and returns them (len grows by n), or
 * NULL when out of memory. */
void *buf_extend(struct buf *b, size_t n);

/* Appends `n` bytes. Returns 0 or TH_ENOMEM. */
int buf_append(struct buf *b, const void *data, size_t n);

/* Drops `n` bytes from the head. */
void buf_consume(struct buf *b, size_t n);

/* Reads once from non-blocking `fd` into the tail, reserving at least
 * `room` bytes first. Returns bytes read, 0 at EOF, -1 with errno. */
ssize_t buf_read(struct buf *b, int fd, size_t room);

/* Writes unconsumed bytes to `fd` until done or EAGAIN, consuming what was
 * written. Returns 0 when everything went, 1 when some is left (EAGAIN),
 * -1 with errno on error. */
int buf_flush(struct buf *b, int fd);

/* Drops bytes from the tail so that `avail` unconsumed bytes remain (no-op
 * when fewer are there): takes back what was appended since
 * buf_avail() was `avail`. */
void buf_truncate(struct buf *b, size_t avail);

/* Frees the memory; the buffer is empty and reusable after. */
void buf_free(struct buf *b);

#endif /* TH_BUF_H */
