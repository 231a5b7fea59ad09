/* hostile.c - tasks that try what a hostile plugin would, for the
 * isolation tests.
 *
 *   log     th_log()s its input as is (newlines, escape codes)
 *   detach  forks, the child calls setsid() and forks again, the child
 *           exits: returns the pid of the grandchild, left sleeping
 *   hold    sleeps "MS" milliseconds (the input's first line), then
 *           returns its whole input
 *   scan    the input is a secret written backwards; searches the
 *           worker's readable memory for the secret (skipping its own
 *           copy), overwrites each place found with 'X's, and returns
 *           "found N" or "clean"
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <taskhost.h>

static int log_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    th_log(TH_LOG_WARN, "%.*s", (int)len, (const char *)in);
    return th_task_write(task, "logged", 6);
}

static int detach_run(void *state, th_task *task, const void *in, size_t len)
{
    int fds[2];
    pid_t grandchild = 0;

    (void)state, (void)in, (void)len;
    if (pipe(fds) == -1)
        return th_task_fail(task, TH_EIO, "pipe");
    pid_t child = fork();
    if (child == 0) {
        setsid();
        pid_t g = fork();
        if (g == 0) {
            close(fds[0]);
            close(fds[1]);
            for (;;)
                pause();
        }
        (void)!write(fds[1], &g, sizeof g);
        _exit(0);
    }
    close(fds[1]);
    if (child == -1 || read(fds[0], &grandchild, sizeof grandchild) !=
                           (ssize_t)sizeof grandchild) {
        close(fds[0]);
        return th_task_fail(task, TH_EIO, "fork");
    }
    close(fds[0]);
    char out[32];
    snprintf(out, sizeof out, "%d", (int)grandchild);
    return th_task_write(task, out, strlen(out));
}

static int hold_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    long ms = strtol(in, NULL, 10);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && !th_task_cancelled(task))
        ;
    return th_task_write(task, in, len);
}

/* Searches [start, end) of our memory through /proc/self/mem (a read
 * that faults only fails) for `s`, not counting `own`; overwrites what
 * it finds. Returns how many places held it. */
static int scan_range(int mem, unsigned long start, unsigned long end,
                      const char *s, size_t n, const char *own)
{
    static char chunk[1 << 16];
    int found = 0;

    for (unsigned long at = start; at < end;) {
        size_t want = end - at < sizeof chunk ? end - at : sizeof chunk;
        ssize_t got = pread(mem, chunk, want, (off_t)at);
        if (got <= 0)
            return found;
        for (size_t i = 0; i + n <= (size_t)got; i++) {
            if (memcmp(chunk + i, s, n) != 0)
                continue;
            const char *addr = (const char *)(at + i);
            if (addr == own)
                continue;
            found++;
            char xs[256];
            memset(xs, 'X', sizeof xs);
            (void)!pwrite(mem, xs, n < sizeof xs ? n : sizeof xs,
                          (off_t)(at + i));
        }
        memset(chunk, 0, (size_t)got); /* not to find our own copy later */
        /* overlap by n - 1 so that a secret across chunks is seen */
        at += (size_t)got > n ? (size_t)got - n + 1 : (size_t)got;
    }
    return found;
}

static int scan_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    if (len == 0 || len > 255)
        return th_task_fail(task, TH_EINVAL, "secret of 1 to 255 bytes");
    char *secret = malloc(len);
    for (size_t i = 0; i < len; i++)
        secret[i] = ((const char *)in)[len - 1 - i];
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); /* as another user: to read /proc */
    FILE *maps = fopen("/proc/self/maps", "r");
    int mem = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (maps == NULL || mem == -1)
        return th_task_fail(task, TH_EIO, "cannot read own memory");
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long a, b;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) != 3 || perms[0] != 'r')
            continue;
        if (strstr(line, "[vvar") || strstr(line, "[vsyscall]"))
            continue;
        if (b - a > (256ul << 20))
            continue; /* a sanitizer's shadow: nothing of ours is there */
        found += scan_range(mem, a, b, secret, len, secret);
    }
    fclose(maps);
    close(mem);
    memset(secret, 0, len);
    free(secret);
    char out[32];
    if (found)
        snprintf(out, sizeof out, "found %d", found);
    else
        snprintf(out, sizeof out, "clean");
    return th_task_write(task, out, strlen(out));
}

static const th_task_def tasks[] = {
    {"log", log_run},   {"detach", detach_run}, {"hold", hold_run},
    {"scan", scan_run}, {NULL, NULL},
};

TH_PLUGIN("hostile", "1.0", NULL, NULL, tasks);
