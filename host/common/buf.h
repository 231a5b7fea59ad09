/* buf.h - a growable byte buffer with a read offset, for framed I/O.
 *
 * Bytes are appended at the tail and consumed from the head; consumed space
 * is reclaimed lazily (when the buffer empties, or by compaction before a
 * growth), so steady traffic does not allocate.
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

/* Frees the memory; the buffer is empty and reusable after. */
void buf_free(struct buf *b);

#endif /* TH_BUF_H */
