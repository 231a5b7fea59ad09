/* queue.c - a pool's priority FIFO over a sorted task list (engine
 * layer). */
#include "queue.h"

void queue_push(struct queue *q, struct task *t)
{
    struct task *at = q->list.tail;
    while (at != NULL && at->priority < t->priority)
        at = at->prev;
    task_list_insert_before(&q->list, at ? at->next : q->list.head, t);
    q->bytes += task_len(t);
}

void queue_push_front(struct queue *q, struct task *t)
{
    struct task *at = q->list.head;
    while (at != NULL && at->priority > t->priority)
        at = at->next;
    task_list_insert_before(&q->list, at, t);
    q->bytes += task_len(t);
}

struct task *queue_pop(struct queue *q)
{
    struct task *t = task_list_pop(&q->list);
    if (t != NULL)
        q->bytes -= task_len(t);
    return t;
}

void queue_remove(struct queue *q, struct task *t)
{
    task_list_remove(&q->list, t);
    q->bytes -= task_len(t);
}

struct task *queue_oldest_lowest(const struct queue *q)
{
    struct task *t = q->list.tail;
    while (t != NULL && t->prev != NULL && t->prev->priority == t->priority)
        t = t->prev;
    return t;
}

void queue_move(struct queue *to, struct queue *from)
{
    struct task *t;
    while ((t = queue_pop(from)) != NULL)
        queue_push(to, t);
}
