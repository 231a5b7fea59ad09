/* orphans.c - ending what a task left behind when its worker is gone
 * (engine layer).
 *
 * A task may start processes that leave the worker's process group
 * (setsid(), a double fork). Each worker is the child subreaper of its
 * own descendants, so while it lives what it orphans stays below it;
 * when it exits they are handed to the next subreaper up: the host,
 * once host_adopt_orphans() made it one. Then every child of the host
 * that is not one of its workers is such a leftover, and is killed and
 * reaped. Only a process that owns all of its children may do this
 * (taskhostd does; an embedding program with children of its own does
 * not call it).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "worker.h"

#define RETRY_AFTER 0.5 /* seconds before a killed orphan is looked at again */

/* Whether pid is a worker (or a worker's spawner) the host knows. */
static int known(const struct th_host *h, pid_t pid)
{
    const struct pool *lists[2] = {h->pools, h->retired};
    for (int i = 0; i < 2; i++)
        for (const struct pool *p = lists[i]; p != NULL; p = p->next) {
            if (pool_owns_pid(p, pid))
                return 1;
        }
    return 0;
}

/* Kills and reaps child pid if the host does not know it. Returns 1 when
 * it was an orphan (killed, perhaps not reaped yet), else 0. */
static int end_orphan(struct th_host *h, pid_t pid)
{
    if (pid <= 0 || known(h, pid))
        return 0;
    kill(pid, SIGKILL);
    pid_t r;
    do {
        r = waitpid(pid, NULL, WNOHANG);
    } while (r == -1 && errno == EINTR);
    if (r == pid)
        log_info("ended process %d, left behind by a worker", (int)pid);
    return 1;
}

/* Calls end_orphan() for each pid listed in the text of a children file. */
static int sweep_list(struct th_host *h, const char *text)
{
    int left = 0;
    for (const char *p = text; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        left += end_orphan(h, (pid_t)pid);
        p = end;
    }
    return left;
}

/* The children through /proc/self/task/TID/children. Returns how many
 * orphans it saw, or -1 when the kernel does not offer those files. */
static int sweep_children_files(struct th_host *h)
{
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return -1;
    int left = 0, seen = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], text[8192];
        snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
        seen = 1;
        left += sweep_list(h, text);
    }
    closedir(d);
    return seen ? left : -1;
}

/* The children by their parent pid in /proc/PID/stat, for kernels
 * without the children files. */
static int sweep_proc(struct th_host *h)
{
    DIR *d = opendir("/proc");
    if (d == NULL)
        return 0;
    int left = 0;
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], text[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
        const char *paren = strrchr(text, ')');
        int ppid;
        if (paren != NULL && sscanf(paren + 2, "%*c %d", &ppid) == 1 &&
            ppid == self)
            left += end_orphan(h, (pid_t)atoi(e->d_name));
    }
    closedir(d);
    return left;
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
    int seen = sweep_children_files(h);
    return seen >= 0 ? seen : sweep_proc(h);
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
