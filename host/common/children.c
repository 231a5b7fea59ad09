/* children.c - ending the children a process does not know.
 *
 * A process that is the child subreaper of a tree (the host, a spawner)
 * inherits what that tree orphans: every child it did not start itself is
 * such a leftover, and is killed and reaped here.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "children.h"
#include "log.h"

/* Kills and reaps child pid unless k knows it. Returns 1 when
 * it was an orphan (killed, perhaps not reaped yet), else 0. */
static int end_orphan(const struct children_known *k, pid_t pid)
{
    if (pid <= 0 || k->fn(k->arg, pid))
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
static int sweep_list(const struct children_known *k, const char *text)
{
    int left = 0;
    for (const char *p = text; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        left += end_orphan(k, (pid_t)pid);
        p = end;
    }
    return left;
}

/* The children through /proc/self/task/TID/children. Returns how many
 * orphans it saw, or -1 when the kernel does not offer those files. */
static int sweep_children_files(const struct children_known *k)
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
        left += sweep_list(k, text);
    }
    closedir(d);
    return seen ? left : -1;
}

/* The children by their parent pid in /proc/PID/stat, for kernels
 * without the children files. */
static int sweep_proc(const struct children_known *k)
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
            left += end_orphan(k, (pid_t)atoi(e->d_name));
    }
    closedir(d);
    return left;
}

int children_sweep(const struct children_known *k)
{
    int seen = sweep_children_files(k);
    return seen >= 0 ? seen : sweep_proc(k);
}
