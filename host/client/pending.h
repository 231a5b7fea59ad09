/* pending.h - the client library's table of waiting requests (client
 * layer; used by client/client.c only).
 *
 * Every request a connection sent and not yet saw answered has one entry,
 * found by its tag. Tags are sequential, so the identity hash spreads
 * them evenly over an open-addressing table; removal shifts the
 * following entries of the probe run back, so the table needs no
 * tombstones, and nothing is allocated per request once it has grown.
 * Invariants: an empty slot has tag 0; `used` counts the others; the
 * table is never more than half full.
 */
#ifndef TH_PENDING_H
#define TH_PENDING_H

#include <stddef.h>
#include <stdint.h>

#include "taskhost_client.h"

struct ctl_wait;
struct mfd;

/* One waiting request. */
struct pend {
    uint64_t tag; /* 0: empty slot */
    th_done_fn done;
    void *arg;
    struct ctl_wait *ctl; /* for control requests, else NULL */
    struct mfd *m;        /* the task's input memfd, else NULL */
    int probe;            /* the ping that asks about memfds */
};

struct pend_table {
    struct pend *slot; /* mask + 1 slots */
    size_t mask;
    size_t used; /* slots in use */
};

#define PEND_MIN 256 /* slots of a new table (a power of two) */

/* Allocates the slots of an empty table t. Returns 0 or TH_ENOMEM. */
int pend_init(struct pend_table *t);

/* Frees the slots (not what the entries point to). */
void pend_free(struct pend_table *t);

/* The entry of `tag`, or NULL; NULL for tag 0 too (a peer may send it,
 * and it is no request's). The pointer stays valid until the next
 * pend_add() or pend_del(). */
struct pend *pend_find(const struct pend_table *t, uint64_t tag);

/* Adds a zeroed entry for `tag` (non-zero, not in the table), growing the
 * table first when it would become more than half full. Returns it, or
 * NULL when out of memory (the table is unchanged). */
struct pend *pend_add(struct pend_table *t, uint64_t tag);

/* Removes entry p (from this table), shifting back the entries of its
 * probe run; pointers to other entries become invalid. */
void pend_del(struct pend_table *t, struct pend *p);

#endif /* TH_PENDING_H */
