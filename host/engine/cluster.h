/* cluster.h - pools shared by several hosts through Redis Streams.
 *
 * A pool with `shared = true` has its queue in Redis (cluster_lua.h has
 * the data model). A task submitted to it on any host (its ingress host)
 * is added to that queue; every host that has the pool claims from the
 * queue as many tasks as its workers can start now, runs them as local
 * tasks of the pool, and posts each answer (first answer wins) to the
 * ingress host's reply stream, from which the ingress answers its caller.
 *
 * Claims are leases: a heartbeat renews those of the tasks a host holds,
 * and every host takes over the claims not renewed for a lease. So a task
 * runs again only when its host died or stalled longer than the lease; a
 * worker that crashes or passes its memory limit is answered, not re-run.
 */
#ifndef TH_CLUSTER_H
#define TH_CLUSTER_H

#include <stdint.h>
#include <stdio.h>

struct cluster;
struct cluster_cfg;
struct pool;
struct task;
struct th_host;

/* Starts the cluster of host h on `cfg` (copied): connects to Redis, with
 * retries, and joins every shared pool of h. Returns 0 or TH_ENOMEM. */
int cluster_new(struct th_host *h, const struct cluster_cfg *cfg,
                struct cluster **out);

/* Sends the submits and answers gathered during this turn of the loop,
 * each pool's as one call: run by the host at the end of every turn. */
void cluster_after(struct cluster *cl);

/* Joins the shared pools a reload added. */
void cluster_sync_pools(struct cluster *cl);

/* Takes task t (mapped, counted pending) of shared pool p into the
 * cluster's queue. Its answer comes later, through the host's answers.
 * Returns 0, or TH_EBUSY when the pool's overflow is `block` and tasks
 * wait to enter already (t is not taken). */
int cluster_submit(struct cluster *cl, struct pool *p, struct task *t);

/* Cancels a task this host took in for the cluster. Returns 0 (the task
 * is answered later: cancelled, or its result if that came first). */
int cluster_cancel(struct cluster *cl, struct task *t);

/* Begins the host's shutdown: no more claims; claimed tasks not started
 * yet are given back to the cluster at once. With `force`, running ones
 * too, and tasks taken in and not answered are answered cancelled. */
void cluster_shutdown(struct cluster *cl, int force);

/* Non-zero when a shutting-down cluster owes Redis nothing more. */
int cluster_done(const struct cluster *cl);

/* Closes the connections and frees cl (NULL is a no-op). */
void cluster_free(struct cluster *cl);

/* What shared pool `pool` counts: on this host, and in the whole cluster
 * as of the last heartbeat. */
struct cluster_numbers {
    int connected, joined;
    /* this host */
    uint64_t submitted, claimed, redelivered, answered;
    long waiting, held, unsent;
    /* the cluster */
    long long queued, claimed_all, dead_letters, redelivered_all;
    const char *claimed_by_host; /* "host:n host:n ...", valid until the
                                    next heartbeat */
};

/* Steps through a claimed_by_host list: copies the next host id into
 * host (hostlen bytes) and its claims into *n, and returns the rest of
 * the list, or NULL at its end. */
const char *cluster_next_claims(const char *list, char *host, size_t hostlen,
                                long long *n);

/* Fills *out for pool `pool`. Returns 0, or -1 for a pool not shared. */
int cluster_numbers(const struct cluster *cl, const char *pool,
                    struct cluster_numbers *out);

/* The cluster part of pool `pool`'s stats, as a JSON member
 * (",\"cluster\":{...}") or text lines; nothing for a pool not shared. */
void cluster_stats_json(FILE *f, const struct cluster *cl, const char *pool);
void cluster_stats_text(FILE *f, const struct cluster *cl, const char *pool);

#endif /* TH_CLUSTER_H */
