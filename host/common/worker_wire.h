/* worker_wire.h - the frames between the host and its workers (common
 * layer: the engine and the worker process both include it).
 *
 * Both ends are the same binary on the same machine, so frames are in
 * native byte order: a fixed 32-byte header, then `len` payload bytes. The
 * stream is a SOCK_STREAM socketpair, which lets either end put many frames
 * into one write and take many out of one read: the host sends a batch of
 * tasks at once when the queue is deep and tasks are short, and a worker
 * answers a batch with one write.
 *
 * host -> worker: FRAME_TASK (id, aux = task index, payload = input),
 *                 FRAME_STOP (finish, run fini, exit 0).
 * worker -> host: FRAME_READY (init done; rss_kib), FRAME_INIT_FAILED
 *                 (payload = message), FRAME_RESULT (id; code 0 with
 *                 payload = output, or code < 0 with payload = message;
 *                 run_us; rss_kib when the pool watches memory, else 0),
 *                 FRAME_PROGRESS (id; payload = struct frame_progress and
 *                 up to TH_PROGRESS_MSG_MAX bytes of message): sent while
 *                 the task runs, at most one per TH_PROGRESS_INTERVAL_MS,
 *                 written at once, so possibly ahead of results of earlier
 *                 tasks still held for a batch.
 * Every payload is followed by zero padding up to a multiple of 8 bytes.
 * A worker runs its tasks strictly in the order received. It may hold
 * finished results for a short while to answer a batch with one write, so
 * the oldest unanswered task is not always the running one: the worker
 * names the task it runs in the arena's header (`running`), and keeps a
 * copy of the results it holds there too (the staging area), so that the
 * host, when the worker dies, still gets every finished result and knows
 * which task was running.
 */
#ifndef TH_FRAME_H
#define TH_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum frame_type {
    FRAME_TASK = 1,
    FRAME_STOP = 2,
    FRAME_READY = 3,
    FRAME_INIT_FAILED = 4,
    FRAME_RESULT = 5,
    FRAME_PROGRESS = 6,
};

/* The start of a FRAME_PROGRESS payload; the message follows. */
struct frame_progress {
    uint64_t done;
    uint64_t total;
};

struct frame {
    uint64_t id;
    uint32_t len;     /* payload bytes after the header */
    uint16_t type;    /* enum frame_type */
    uint16_t aux;     /* FRAME_TASK: task index */
    int32_t code;     /* FRAME_RESULT: 0 or a negative code */
    uint32_t run_us;  /* FRAME_RESULT: run time, saturated; FRAME_TASK:
                       * the pool's busy_poll in µs: after answering, the
                       * worker polls this long for its next task before
                       * it sleeps (0: it sleeps at once) */
    uint32_t rss_kib; /* FRAME_RESULT, FRAME_READY: RSS, 0 if not measured;
                       * the arena's pages are not counted */
    uint32_t arena_kib; /* FRAME_RESULT: arena pages the worker touched */
};

_Static_assert(sizeof(struct frame) == 32, "frame header is 32 bytes");

/* Large payloads do not travel through the socket: each worker shares
 * an arena (a memfd mapped by both processes before fork) holding two
 * rings, one for inputs (written by the host, freed when the task's
 * result arrives) and one for outputs (written by the worker, freed when
 * the host has delivered the result, which it tells through the arena's
 * header). A frame whose payload is in a ring carries FRAME_F_SHM (in
 * `code` for FRAME_TASK, in `aux` for FRAME_RESULT) and, as its payload,
 * a struct frame_shm. Positions grow without bound; a ring offset is the
 * position modulo SHM_RING. A payload never wraps: it starts at the ring's
 * start instead, and the skipped tail counts as used. */
#define FRAME_F_SHM 1
#define SHM_MIN (32 * 1024)          /* smaller payloads use the socket */
#define SHM_RING (16u * 1024 * 1024) /* bytes per ring */
#define SHM_STAGE_OFF 4096           /* staging area: after the header page */
#define SHM_STAGE_SIZE (64 * 1024)   /* held results beyond this are sent */
#define SHM_HEADER (SHM_STAGE_OFF + SHM_STAGE_SIZE)
#define SHM_SIZE (SHM_HEADER + 2 * (size_t)SHM_RING)
#define SHM_ALIGN(n) (((uint64_t)(n) + 63) & ~(uint64_t)63)

struct frame_shm {
    uint64_t pos; /* position of the payload's first byte in its ring */
    uint64_t len;
};

/* Large payloads may also live in a memfd that the worker maps itself
 * (FRAME_F_FD, in `code` for FRAME_TASK, in `aux` for FRAME_RESULT): the
 * client's own input memfd, or one of the host's. The frame's payload is
 * a struct frame_fd. The worker keeps the memfds it was given mapped, in
 * FD_SLOTS slots that the host manages: a memfd the worker holds already
 * is named by its slot alone; a new one travels attached (SCM_RIGHTS) to
 * the write that starts the task's frame, as on the client socket
 * (fdpass.h), and takes the place of what its slot held (FD_SLOT_TEMP: no
 * slot, unmapped after the task). Owners reuse a memfd for tasks of one
 * pool only, so a worker holds only memfds of its own pool's tasks.
 * The input is the first `len` bytes of the memfd, read in place. With
 * `out_off` non-zero the worker writes the output there, growing the
 * memfd when needed (it maps fd_span() bytes of it), and its result frame
 * says where: a struct frame_shm, pos = out_off, len = the output's
 * length. */
#define FRAME_F_FD 2
#define PAYLOAD_FD_MIN (64 * 1024) /* inputs from which a memfd is used */
#define PAYLOAD_OUT_ALIGN 4096     /* out_off: the input, rounded up */
#define FD_SLOTS 16
#define FD_SLOT_TEMP UINT32_MAX
#define FD_SLOT_MAX_BYTES (64u << 20) /* larger memfds go in no slot */

struct frame_fd {
    uint32_t len;      /* input bytes */
    uint32_t out_off;  /* where the output goes; 0: not into the memfd */
    uint32_t slot;     /* the worker's slot for the memfd, or FD_SLOT_TEMP */
    uint32_t attached; /* 1: the memfd comes with this frame */
};

/* Where the output goes in the memfd of an input of len bytes, when it
 * goes there (frame_fd.out_off): after the input, rounded up to
 * PAYLOAD_OUT_ALIGN. */
static inline size_t payload_out_off(size_t len)
{
    return (len + PAYLOAD_OUT_ALIGN - 1) / PAYLOAD_OUT_ALIGN *
           PAYLOAD_OUT_ALIGN;
}

/* The bytes of a memfd a worker maps for an input of len bytes with its
 * output at out_off: the input, and as much room for the output. */
static inline size_t fd_span(size_t len, size_t out_off)
{
    if (out_off == 0)
        return len;
    return out_off + (len > PAYLOAD_FD_MIN ? len : PAYLOAD_FD_MIN);
}

_Static_assert(sizeof(struct frame_fd) == sizeof(struct frame_shm),
               "a task frame's reference is of one size");

#define SHM_CANCEL_SLOTS 64

/* The arena's first page. */
struct shm_header {
    _Atomic uint64_t out_consumed; /* host: outputs delivered up to here */
    /* Ids of tasks cancelled after they were sent but before they ran:
     * written by the host round-robin, looked up by the worker before it
     * starts each task, which it then skips. */
    _Atomic uint64_t cancelled[SHM_CANCEL_SLOTS];
    /* Slots written so far (the next is this modulo SHM_CANCEL_SLOTS),
     * counted up by the host after each: while it is 0 the worker has
     * no slot to look through, which spares every task that scan. */
    _Atomic uint64_t cancel_next;
    /* Written by the worker only. `running`: the id of the task it runs,
     * set before the task starts and cleared once its result is staged or
     * sent; 0 between tasks. `staged`: bytes of complete result frames in
     * the staging area that may not have reached the socket yet (a copy
     * of what the worker holds; reset once they are written). The host
     * reads both when the worker is gone, and `running` at any time. */
    _Atomic uint64_t running;
    _Atomic uint32_t staged;
};

_Static_assert(sizeof(struct shm_header) <= SHM_STAGE_OFF,
               "the arena's header fits its page");

/* Ring bases inside an arena. */
#define SHM_IN(arena) ((char *)(arena) + SHM_HEADER)
#define SHM_OUT(arena) ((char *)(arena) + SHM_HEADER + SHM_RING)
#define SHM_STAGE(arena) ((char *)(arena) + SHM_STAGE_OFF)

/* Payloads are padded to 8 bytes so that every header is aligned. */
#define FRAME_PAD(len) (((size_t)(len) + 7) & ~(size_t)7)

/* Largest payload a worker frame may carry. */
#define FRAME_MAX_PAYLOAD (1u << 30)

#endif /* TH_FRAME_H */
