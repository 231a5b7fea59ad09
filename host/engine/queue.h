/* queue.h - a pool's queue: highest priority first, FIFO within one.
 *
 * Kept as one list sorted by priority, so that the common case (every task
 * at the same priority) pushes and pops in O(1).
 */
#ifndef TH_QUEUE_H
#define TH_QUEUE_H

#include <stdint.h>

#include "task.h"

struct queue {
    struct task_list list;
    uint64_t bytes; /* input bytes of the tasks in it */
};

static inline size_t queue_len(const struct queue *q)
{
    return q->list.n;
}

/* Appends t behind every task of its priority or higher. */
void queue_push(struct queue *q, struct task *t);

/* Puts t back ahead of every task of its priority or lower: for a task
 * that was sent to a worker that left before starting it. */
void queue_push_front(struct queue *q, struct task *t);

/* Takes the next task, or NULL. */
struct task *queue_pop(struct queue *q);

/* Removes t from the queue. */
void queue_remove(struct queue *q, struct task *t);

/* The task drop-oldest gives up: the oldest of the lowest priority. */
struct task *queue_oldest_lowest(const struct queue *q);

/* Moves every task of `from` to the tail of `to`, keeping the order. */
void queue_move(struct queue *to, struct queue *from);

#endif /* TH_QUEUE_H */
