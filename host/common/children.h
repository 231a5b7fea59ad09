/* children.h - ending the children a process does not know (leftovers a
 * subreaper inherited from the tree below it).
 */
#ifndef TH_CHILDREN_H
#define TH_CHILDREN_H

#include <sys/types.h>

struct children_known {
    int (*fn)(void *arg, pid_t pid); /* non-zero: a child of ours, keep it */
    void *arg;
};

/* Kills (SIGKILL) and reaps, if already dead, every child of this process
 * that k does not know. Returns how many such children it saw: while it
 * sees any, another pass is due (one killed now may not be reaped yet,
 * and may have left orphans of its own). */
int children_sweep(const struct children_known *k);

#endif /* TH_CHILDREN_H */
