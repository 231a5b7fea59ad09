/* task.h - a task as the host holds it, from submit to its final answer.
 *
 * Tasks come from a free list and keep small inputs inline, so the hot
 * path does not call malloc per task. A task holds one payload at a time:
 * its input, then its answer in its place (the input is no longer needed
 * once the task is answered). A task is on at most one list at a
 * time (a pool's queue or a worker's in-flight list), linked through
 * next/prev. It is in the id map from its submit until it is answered,
 * then on the host's queue of answers to deliver: one after the other,
 * through the same link (hnext, then anext).
 */
#ifndef TH_TASK_H
#define TH_TASK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "loop.h"
#include "taskhost_host.h"

#define TASK_INLINE 192

struct pool;
struct worker;

/* A memfd of the host's own that holds a large input, mapped for good;
 * its worker reads the input in place and writes the output after it
 * (worker_wire.h, FRAME_F_FD). Kept for reuse by tasks of the same pool
 * only: a worker may keep a memfd it was given mapped. */
struct pmfd {
    int fd;
    char *map;
    size_t size;       /* mapped */
    const void *owner; /* the pool it serves */
    dev_t dev;         /* its file */
    ino_t ino;
    struct pmfd *next; /* free list */
};

/* A task's payload when it is not inline: an input over TASK_INLINE
 * bytes, then the answer in its place; or an answer that is not inline
 * (over TASK_INLINE bytes, or not ours). Where it lives: in a buffer of
 * the task table's, in the submitter's memory (borrowed), at the start
 * of a memfd its worker reads in place, in a malloc'd buffer of the
 * answer's, or in a worker's arena. Only such tasks have one, from the
 * table's free list: small tasks do not pay for what large ones need. */
struct payload {
    char *data;        /* the input: in buf, the submitter's or in_fd's
                        * mapping. Once answered, the answer's: in the
                        * task's inline_input, buf, malloc'd (own) or not
                        * ours (host_answer_ref()); NULL: left in the
                        * submitter's memfd (host_answer_fd()) */
    size_t len;        /* of data */
    char *buf;         /* the table's buffer holding the input, NULL: the
                        * input is not ours (borrowed, or a memfd's) */
    size_t cap;        /* buf's size */
    uint64_t shm_end;  /* end of the input in its worker's arena, 0: none */
    int in_fd;         /* a memfd whose start is the input (data maps
                        * it), not owned; -1: none */
    uint8_t out_in_fd; /* the worker may write the output into in_fd */
    uint8_t own;       /* data is a malloc'd answer, freed with it */
    uint64_t out_off;  /* where, asked of the worker at send; 0: not */
    dev_t in_dev;      /* in_fd's file, to know it again; in_ino 0: */
    ino_t in_ino;      /* not known */
    struct pmfd *pm;   /* the host's memfd holding in_fd, or NULL */
};

/* Who gets a task's progress reports (th_host_on_progress()). Few tasks
 * have one: it is kept apart, from the task table's free list. */
struct progress_hook {
    th_progress_fn fn;
    void *arg;
};

struct task {
    uint64_t id;
    struct task *next, *prev; /* queue or in-flight list */
    union {
        struct task *hnext; /* id map chain, while mapped */
        struct task *anext; /* host's answers to deliver, once answered */
    };
    struct pool *pool;        /* NULL when rejected before a pool */
    struct worker *worker;    /* while sent to a worker */
    void *cluster;            /* a shared pool's task: its record in
                               * cluster.c, NULL otherwise */
    th_done_fn done;
    void *arg;
    struct progress_hook *progress; /* NULL: nobody asked for reports */
    uint16_t index;   /* task index in the plugin's table */
    int8_t priority;
    uint8_t state;    /* th_state */
    uint8_t answered; /* final answer given (or queued for delivery); a
                       * task is freed once delivered and off its worker */
    uint8_t delivered; /* its callback ran */
    uint8_t mapped;   /* in the id map */
    int code;         /* of the answer */
    uint16_t ilen;    /* of the data in inline_input, without a payload */
    double submitted, started, answered_at; /* loop times; started 0:
                               * never. Fixed once answered: the answer's
                               * wait and run times derive from them */
    double task_timeout, queue_timeout; /* effective, 0: none */
    struct loop_timer qtimer;           /* queue_timeout */
    struct payload *payload; /* NULL: the data is inline, ilen bytes */
    char inline_input[TASK_INLINE];
};

/* A task's data: its input, then its answer (see struct payload). */
static inline char *task_data(struct task *t)
{
    return t->payload != NULL ? t->payload->data : t->inline_input;
}

static inline size_t task_len(const struct task *t)
{
    return t->payload != NULL ? t->payload->len : t->ilen;
}

#define TASK_BIG_CACHE 8

/* Dead records kept for reuse, of one kind: each one's first bytes hold
 * the link to the next (task.c). */
struct keep {
    void *head;
    size_t n;
};

/* The table of pending tasks by id, the free lists, and a few large input
 * buffers kept for reuse: large payloads arrive in runs, and a fresh
 * buffer costs a page fault per page. */
struct task_table {
    struct task **buckets;
    size_t nbuckets, count;
    struct keep tasks_kept;
    char *big[TASK_BIG_CACHE];
    size_t bigcap[TASK_BIG_CACHE];
    size_t nbig, bigbytes;
    struct pmfd *pm_free; /* memfds kept for reuse */
    size_t pm_bytes;
    struct keep payloads_kept;
    struct keep hooks_kept;
};

/* Takes a task from the free list (or allocates one), copies `len` input
 * bytes in and gives it a fresh state. Returns NULL when out of memory. */
struct task *task_new(struct task_table *tt, const void *input, size_t len);

/* Like task_new(), but a large input is not copied: the task's data is
 * `input`, which the caller keeps valid until the task is answered. */
struct task *task_new_borrowed(struct task_table *tt, const void *input,
                               size_t len);

/* Like task_new(), but the input is copied into a memfd of the host's,
 * kept for tasks of `owner` (a pool) only, whose worker reads it in place
 * and writes the output after it. Falls back to task_new(). */
struct task *task_new_pmfd(struct task_table *tt, const void *owner,
                           const void *input, size_t len);

/* Maps t's memfd far enough to read the output its worker wrote at
 * out_off (it may have grown the memfd). Returns 0 or -1. */
int task_pmfd_cover(struct task *t, size_t len);

/* Keeps a copy of an answer's `len` data bytes in t, in place of its
 * input (task_data()): in its own buffers when they are large enough
 * (its input is no longer needed once it is answered), else in a fresh
 * one. NUL-terminated when there is room, and
 * always with `nul` (a message). Returns 0 or TH_ENOMEM (the answer then
 * has no data). */
int task_set_output(struct task_table *tt, struct task *t, const void *data,
                    size_t len, int nul);

/* Makes t's answer the `len` bytes at `data`, which stay the caller's
 * (host_answer_ref()). Returns 0 or TH_ENOMEM (the answer then has no
 * data). */
int task_ref_output(struct task_table *tt, struct task *t, const void *data,
                    size_t len);

/* Sends t's progress reports to fn with arg (fn NULL: to nobody).
 * Returns 0 or TH_ENOMEM. */
int task_on_progress(struct task_table *tt, struct task *t, th_progress_fn fn,
                     void *arg);

/* Returns a task to the free list, freeing an out-of-line input and
 * answer. It must not be mapped or linked. */
void task_free(struct task_table *tt, struct task *t);

/* Adds t to the id map. Returns 0 or TH_ENOMEM. */
int task_map_add(struct task_table *tt, struct task *t);

/* Removes t from the id map (no-op if not mapped). */
void task_map_del(struct task_table *tt, struct task *t);

/* Finds a mapped task by id, or NULL. */
struct task *task_map_find(const struct task_table *tt, uint64_t id);

/* Frees the free list and the map's memory (tasks must be gone). */
void task_table_free(struct task_table *tt);

/* A doubly linked list of tasks. */
struct task_list {
    struct task *head, *tail;
    size_t n;
};

void task_list_push(struct task_list *l, struct task *t);
void task_list_push_front(struct task_list *l, struct task *t);
struct task *task_list_pop(struct task_list *l);
void task_list_remove(struct task_list *l, struct task *t);
/* Inserts t before `at` (at NULL: at the tail). */
void task_list_insert_before(struct task_list *l, struct task *at,
                             struct task *t);

#endif /* TH_TASK_H */
