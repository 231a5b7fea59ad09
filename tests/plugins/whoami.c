/* whoami.c - tasks that report what a worker process may do, for the
 * least-privilege tests.
 *
 *   id      "UID GID NO_NEW_PRIVS NGROUPS": real ids, PR_GET_NO_NEW_PRIVS
 *           and the number of supplementary groups
 *   fds     one line per open descriptor, "FD TARGET", in order (the
 *           directory listing itself left out)
 *   limits  "NOFILE_SOFT NOFILE_HARD CORE_SOFT CORE_HARD AS_SOFT AS_HARD",
 *           each a number or "inf"
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <taskhost.h>

static int write_text(th_task *task, const char *text)
{
    return th_task_write(task, text, strlen(text));
}

static int id_run(void *state, th_task *task, const void *in, size_t len)
{
    char out[128];

    (void)state, (void)in, (void)len;
    snprintf(out, sizeof out, "%u %u %d %d", (unsigned)getuid(),
             (unsigned)getgid(), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
             getgroups(0, NULL));
    return write_text(task, out);
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

static int fds_run(void *state, th_task *task, const void *in, size_t len)
{
    char path[64], target[256], line[320];
    int fds[256], n = 0, rc = 0;
    struct dirent *e;
    DIR *d = opendir("/proc/self/fd");

    (void)state, (void)in, (void)len;
    if (d == NULL)
        return th_task_fail(task, TH_EIO, "cannot list /proc/self/fd");
    while ((e = readdir(d)) != NULL && n < 256) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != dirfd(d))
            fds[n++] = fd;
    }
    closedir(d);
    qsort(fds, (size_t)n, sizeof fds[0], cmp_int);
    for (int i = 0; i < n && rc == 0; i++) {
        ssize_t k;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fds[i]);
        k = readlink(path, target, sizeof target - 1);
        target[k > 0 ? k : 0] = '\0';
        snprintf(line, sizeof line, "%d %s\n", fds[i], target);
        rc = write_text(task, line);
    }
    return rc;
}

static void put_limit(char *out, size_t n, rlim_t v)
{
    size_t used = strlen(out);

    if (v == RLIM_INFINITY)
        snprintf(out + used, n - used, "%sinf", used ? " " : "");
    else
        snprintf(out + used, n - used, "%s%llu", used ? " " : "",
                 (unsigned long long)v);
}

static int limits_run(void *state, th_task *task, const void *in, size_t len)
{
    static const int res[] = {RLIMIT_NOFILE, RLIMIT_CORE, RLIMIT_AS};
    char out[256] = "";
    struct rlimit rl;

    (void)state, (void)in, (void)len;
    for (size_t i = 0; i < sizeof res / sizeof res[0]; i++) {
        if (getrlimit(res[i], &rl) == -1)
            return th_task_fail(task, TH_EIO, "getrlimit failed");
        put_limit(out, sizeof out, rl.rlim_cur);
        put_limit(out, sizeof out, rl.rlim_max);
    }
    return write_text(task, out);
}

static const th_task_def tasks[] = {
    {"id", id_run},
    {"fds", fds_run},
    {"limits", limits_run},
    {NULL, NULL},
};

TH_PLUGIN("whoami", "1.0", NULL, NULL, tasks);
