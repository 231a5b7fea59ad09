/* spare.h - a spawner started ahead of need, so that a pool's start does
 * not wait for an exec.
 *
 * Starting a pool's spawner (spawner.h) costs an exec and the dynamic
 * loader, about half a millisecond, before the plugin loads. So the host
 * keeps one spawner started and idle, bound to no pool: it holds nothing
 * but its two sockets, waits blocked (no CPU), and learns what to be
 * (user, limits, plugin, settings, and the log's descriptor) only from
 * SPW_HELLO, as any spawner does. A pool start takes it; the next spare
 * starts from the loop a little later, off the pool start's path.
 *
 * What a spawner inherits at its exec and cannot be told later (the
 * program, the environment, the working directory, the host's ids and
 * groups, the resource limits, stdout and stderr) is recorded when the
 * spare starts: a spare started under other conditions is not taken, and
 * the pool starts a spawner of its own, as if there were no spare.
 * A spare that dies idle is replaced after a back-off (1 s, doubling to
 * 60 s), never in a loop. It ends with the host: spare_stop() closes its
 * socket, and it exits and is reaped.
 */
#ifndef TH_SPARE_H
#define TH_SPARE_H

#include <stdint.h>

#include "loop.h"

struct spawner;

struct spare {
    struct loop *loop;
    struct spawner *sp;       /* idle, bound to no pool; or NULL */
    uint64_t conditions;      /* what sp inherited at its exec */
    struct loop_timer timer;  /* starts the next one */
    int failures;             /* in a row: starts refused, deaths idle */
    int on;                   /* keep one: from spare_start() to stop */
};

/* Starts a spare in `loop` now, unless one runs already, and keeps one
 * from then on. */
void spare_start(struct spare *s, struct loop *loop);

/* The spare, taken over by the caller (spawner_start()), or NULL when
 * there is none or it was started under other conditions. */
struct spawner *spare_take(struct spare *s);

/* Ends the spare and keeps none. Idempotent; a zeroed spare is fine. */
void spare_stop(struct spare *s);

#endif /* TH_SPARE_H */
