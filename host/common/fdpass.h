/* fdpass.h - large payloads in memfds, and descriptors passed along a
 * stream socket in the order of its frames (docs/protocol.md, "Payloads in
 * memfds"). Shared by the daemon (daemon/requests.c) and the client
 * library (client/client.c); conn.h keeps the queues.
 *
 * A descriptor travels attached (SCM_RIGHTS) to the sendmsg() whose first
 * byte is the first byte of the frame that carries it. The kernel hands
 * it to the reader together with the bytes of that sendmsg, so the reader
 * keeps the descriptors in arrival order, each with the stream range of
 * the read that brought it: the frame that starts at stream offset X
 * takes the oldest one, which must have come with a read covering X. A
 * descriptor whose read ended before the next frame begins was attached to
 * no frame (a stray), which is a protocol fault.
 *
 * Stream offsets count every byte sent or received on the socket since it
 * was opened, so they survive the consuming of buffers.
 */
#ifndef TH_FDPASS_H
#define TH_FDPASS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FDPASS_MIN (64u << 10) /* smaller payloads stay in the frame */
#define FDPASS_QUEUE_MAX 64    /* descriptors waiting in one queue */

struct fdpass_item {
    int fd;
    int own;     /* close it once sent (or dropped) */
    uint64_t lo; /* received: first stream byte of the read that brought
                    it; to send: stream offset of its frame */
    uint64_t hi; /* received: one past the last byte of that read */
};

/* A FIFO of descriptors. Zero-initialise; release with fdpass_clear(). */
struct fdpass_queue {
    struct fdpass_item *v;
    size_t head, n, cap; /* items v[head..n) */
};

/* Appends a descriptor. Returns 0, or TH_ENOMEM / TH_EBUSY (the queue
 * holds FDPASS_QUEUE_MAX already); fd is then not taken. */
int fdpass_push(struct fdpass_queue *q, int fd, int own, uint64_t lo,
                uint64_t hi);

/* Removes the newest item (a frame taken back) and returns its
 * descriptor, not closed; -1 when q is empty. */
int fdpass_unpush(struct fdpass_queue *q);

/* Number of descriptors waiting. */
size_t fdpass_len(const struct fdpass_queue *q);

/* Takes the descriptor of the frame that starts at stream offset pos:
 * returns it (the caller owns it now), or -1 when none came with the
 * frame's first byte. */
int fdpass_take(struct fdpass_queue *q, uint64_t pos);

/* Whether a received descriptor came before stream offset pos without a
 * frame to take it. */
int fdpass_stray(const struct fdpass_queue *q, uint64_t pos);

/* Closes the descriptors it owns and frees the queue. */
void fdpass_clear(struct fdpass_queue *q);

/* recv() of up to len bytes that also collects the descriptors attached
 * to them into q, with the stream range [pos, pos + n). Returns n (0 at
 * end of file), or -1 with errno; EPROTO when descriptors were lost (the
 * control data was cut short, or q is full), which breaks the stream. */
ssize_t fdpass_recv(int sock, void *buf, size_t len, struct fdpass_queue *q,
                    uint64_t pos);

/* fdpass_recv() with recvmsg() flags of the caller's choosing (0: block
 * on a blocking socket). */
ssize_t fdpass_recv_flags(int sock, void *buf, size_t len,
                          struct fdpass_queue *q, uint64_t pos, int flags);

/* Sends buf[0..len), the stream bytes from offset pos on, in as many
 * calls as needed, attaching each descriptor of q to a sendmsg() starting
 * at its frame; a descriptor sent is dropped from q (and closed if owned).
 * Stops when the socket is full. Returns the bytes sent, or -1 with errno
 * when nothing could be sent for another reason than EAGAIN. */
ssize_t fdpass_send(int sock, const void *buf, size_t len,
                    struct fdpass_queue *q, uint64_t pos);

/* A new memfd (close-on-exec) holding a copy of data[0..len), sealed
 * against shrinking. Returns it, or -1 with errno. */
int fdpass_memfd(const void *data, size_t len);

/* Writes data[0..len) at the start of memfd fd, growing it when shorter.
 * Returns 0 or -1 with errno. */
int fdpass_fill(int fd, const void *data, size_t len);

/* Why memfd fd cannot hold a payload of len bytes, or NULL when it can:
 * it must be a memfd sealed against shrinking (so a mapping of it cannot
 * fault) of at least len bytes. msg receives the reason. */
const char *fdpass_check(int fd, uint64_t len, char *msg, size_t msglen);

/* Mappings of the input memfds a peer sends again and again (the client
 * library reuses a few), so that each is mapped once: a memfd sealed
 * against shrinking cannot fault, and the output of the task is written
 * back through the same mapping. An entry keeps one descriptor of its
 * file; a descriptor of a file already mapped is closed. */
#define FDPASS_MAPS 64               /* entries of one cache */
#define FDPASS_MAPS_BYTES (256u << 20) /* bytes mapped by one cache */

struct fdpass_map {
    int fd;       /* -1: a free entry */
    int busy;     /* tasks using it */
    int writable; /* mapped read-write */
    int temp;     /* not cached: freed when no longer busy */
    struct fdpass_map *moved; /* a free entry: where fdpass_map_detach()
                                 moved what it held, or NULL */
    dev_t dev;
    ino_t ino;
    uint8_t *map;
    size_t size;
};

/* Zero-initialise; release with fdpass_maps_clear(). */
struct fdpass_maps {
    struct fdpass_map v[FDPASS_MAPS];
    size_t n;     /* entries v[0..n) were ever used */
    size_t bytes; /* mapped by cached entries */
    size_t held;  /* mappings the peer holds elsewhere (fdpass_map_new()
                     for its slots), counted against FDPASS_MAPS */
};

/* Makes room in m's count for one more mapping held elsewhere, so that
 * the cache and the slots of one peer map at most FDPASS_MAPS memfds
 * (but for those busy with tasks): releases an idle cached entry when
 * needed. Returns 0 (m->held counts it then), or -1 when every cached
 * entry is busy. */
int fdpass_maps_hold(struct fdpass_maps *m);

/* Maps memfd fd, which must hold len bytes (see fdpass_check()), and
 * takes fd over. Returns the entry, busy until fdpass_map_put(); or NULL
 * with a reason in msg (fd then still belongs to the caller). */
/* Takes busy entry e out of the cache m (which is about to be cleared):
 * returns an entry of its own, freed by its last fdpass_map_put(), that
 * stays mapped for the tasks still using it; e and every other pointer to
 * it lead there (call again with e). NULL when out of memory. */
struct fdpass_map *fdpass_map_detach(struct fdpass_maps *m,
                                     struct fdpass_map *e);

struct fdpass_map *fdpass_map_get(struct fdpass_maps *m, int fd, uint64_t len,
                                  char *msg, size_t msglen);

/* A mapping of memfd fd of its own, outside any cache, for a slot that
 * the peer names again and again (docs/protocol.md, IN_SLOT): checked
 * like fdpass_check() for len bytes, then mapped as far as the memfd
 * reaches now, up to `cap` bytes (at least len), so that later inputs up
 * to that size need neither a new check nor a new mapping; the seal keeps
 * the file from shrinking under it. Takes fd over. Returns the entry,
 * busy once (the slot's own use; fdpass_map_put(NULL, e) ends each use,
 * the last one unmaps and closes), or NULL with a reason in msg (fd then
 * still belongs to the caller). */
struct fdpass_map *fdpass_map_new(int fd, uint64_t len, uint64_t cap,
                                  char *msg, size_t msglen);

/* Writes an output into the entry's file (growing it when needed) and its
 * mapping. Returns 0 or -1. */
int fdpass_map_write(struct fdpass_map *e, const void *data, size_t len);

/* Ends one use of the entry. */
void fdpass_map_put(struct fdpass_maps *m, struct fdpass_map *e);

/* Unmaps and closes every entry; none may be busy. */
void fdpass_maps_clear(struct fdpass_maps *m);

#endif /* TH_FDPASS_H */
