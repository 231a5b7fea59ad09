/* orphans.c - ending what is left behind below the host (engine layer).
 *
 * A task may start processes that leave its worker's process group
 * (setsid(), a double fork). Each worker is the child subreaper of its
 * own descendants and each spawner of its workers' trees (spawner.c), so
 * what a task orphans comes back to its spawner, which ends it. Should a
 * spawner die, its workers (killed by their parent-death signal) and what
 * they left go to the next subreaper up: the host, once
 * host_adopt_orphans() made it one. Then every child of the host that is
 * not one of its spawners (the spare among them) is such a leftover, and
 * is killed and reaped.
 * Only a process that owns all of its children may do this (taskhostd
 * does; an embedding program with children of its own does not call it).
 */
#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "children.h"
#include "host.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "spawner.h"
#include "worker.h"

#define RETRY_AFTER 0.5 /* seconds before a killed orphan is looked at again */

/* Whether pid is a worker, a worker's spawner or the spare spawner the
 * host knows. */
static int known(void *arg, pid_t pid)
{
    const struct th_host *h = arg;
    const struct pool *lists[2] = {h->pools, h->retired};
    if (h->spare.sp != NULL && h->spare.sp->pid == pid)
        return 1;
    for (int i = 0; i < 2; i++)
        for (const struct pool *p = lists[i]; p != NULL; p = p->next) {
            if (pool_owns_pid(p, pid))
                return 1;
        }
    return 0;
}

static void on_retry(struct loop_timer *t)
{
    struct th_host *h =
        (struct th_host *)((char *)t - offsetof(struct th_host, orphan_timer));
    host_reap_orphans(h);
}

/* One pass over the children; returns how many orphans it saw. */
static int sweep(struct th_host *h)
{
    struct children_known k = {known, h};
    return children_sweep(&k);
}

/* An orphan killed now may not be reaped yet, and may have orphans of
 * its own that reach the host only when it dies: while a pass saw any,
 * another one follows. */
void host_reap_orphans(struct th_host *h)
{
    if (!h->adopts_orphans)
        return;
    if (sweep(h) > 0 && !loop_timer_armed(&h->orphan_timer)) {
        h->orphan_timer.cb = on_retry;
        loop_timer_start(h->loop, &h->orphan_timer, RETRY_AFTER);
    }
}

void host_end_orphans(struct th_host *h, double limit)
{
    if (!h->adopts_orphans)
        return;
    double end = loop_clock() + limit;
    while (sweep(h) > 0 && loop_clock() < end)
        usleep(5000); /* a SIGKILLed process takes a moment to go */
}

int host_adopt_orphans(struct th_host *h)
{
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == -1) {
        log_warn("cannot become the reaper of what workers leave behind: %s",
                 strerror(errno));
        return -1;
    }
    h->adopts_orphans = 1;
    return 0;
}
