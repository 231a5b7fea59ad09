/* probe.c - tasks that let the policy tests see which worker ran a task and
 * keep a worker busy in a known way. The input of hold and spin is "N" or
 * "N PATH": with a PATH, the task creates that file once it is under way,
 * so that a test knows the worker really is running it.
 *
 *   pid   returns the worker's pid, in decimal
 *   hold  allocates and touches N MiB, then waits until the task is
 *         cancelled (at most 30 s); returns "PID RSS_KIB"
 *   spin  busy loop forever, never checking for cancel: only SIGKILL ends it
 *   die   abort()s mid-task
 *   nap   sleeps N milliseconds, then returns "napped"
 *   mark  creates the file named by its input: proof that it ran
 *   tally input "N PATH": appends the line "N" to PATH (one line per run,
 *         so a test can count how often each task ran), returns "N"
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <taskhost.h>

#define HOLD_MAX_S 30

/* Blocks stay reachable from here, so that a leak checker keeps quiet. */
static void *held;

struct args {
    long n;
    char path[256]; /* empty: no marker */
};

/* Parses "N" or "N PATH". Returns 0 or -1. */
static int parse(const void *in, size_t len, struct args *a)
{
    char text[300];
    if (len == 0 || len >= sizeof text)
        return -1;
    memcpy(text, in, len);
    text[len] = '\0';
    char *end;
    a->n = strtol(text, &end, 10);
    if (end == text || a->n < 0)
        return -1;
    a->path[0] = '\0';
    if (*end == ' ')
        snprintf(a->path, sizeof a->path, "%s", end + 1);
    return 0;
}

/* Creates the marker file, if any: the task is under way. */
static void mark(const struct args *a)
{
    if (a->path[0] == '\0')
        return;
    int fd = open(a->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd != -1)
        close(fd);
}

static long rss_kib(void)
{
    long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    int n = fscanf(f, "%ld %ld", &size, &resident);
    fclose(f);
    return n == 2 ? resident * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

static int probe_pid(void *state, th_task *task, const void *in, size_t len)
{
    char out[32];
    (void)state, (void)in, (void)len;
    int n = snprintf(out, sizeof out, "%ld", (long)getpid());
    return th_task_write(task, out, (size_t)n);
}

static int probe_hold(void *state, th_task *task, const void *in, size_t len)
{
    struct args a;
    (void)state;
    if (parse(in, len, &a) == -1)
        return th_task_fail(task, TH_EINVAL, "hold: input must be 'MIB [PATH]'");
    if (a.n > 0) {
        size_t size = (size_t)a.n << 20;
        void **block = malloc(size);
        if (block == NULL)
            return th_task_fail(task, TH_ENOMEM, "hold: out of memory");
        memset(block, 0x5a, size);
        block[0] = held;
        held = block;
    }
    mark(&a);
    for (int i = 0; i < HOLD_MAX_S * 100 && !th_task_cancelled(task); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    char out[64];
    int n = snprintf(out, sizeof out, "%ld %ld", (long)getpid(), rss_kib());
    return th_task_write(task, out, (size_t)n);
}

static int probe_spin(void *state, th_task *task, const void *in, size_t len)
{
    struct args a;
    volatile unsigned long n = 0;
    (void)state;
    if (parse(in, len, &a) == -1)
        return th_task_fail(task, TH_EINVAL, "spin: input must be '0 [PATH]'");
    mark(&a);
    for (;;)
        n++;
    return 0;
}

static int probe_die(void *state, th_task *task, const void *in, size_t len)
{
    (void)state, (void)task, (void)in, (void)len;
    abort();
}

static int probe_nap(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    struct args a;
    if (parse(in, len, &a) < 0)
        return th_task_fail(task, TH_EINVAL, "nap: want a number");
    struct timespec ts = {a.n / 1000, (a.n % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && !th_task_cancelled(task))
        ;
    return th_task_write(task, "napped", 6);
}

static int probe_mark(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    char path[256];
    if (len == 0 || len >= sizeof path)
        return th_task_fail(task, TH_EINVAL, "mark: want a path");
    memcpy(path, in, len);
    path[len] = '\0';
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1)
        return th_task_fail(task, TH_EIO, "mark: cannot create %s", path);
    close(fd);
    return th_task_write(task, "marked", 6);
}

static int probe_tally(void *state, th_task *task, const void *in, size_t len)
{
    struct args a;
    (void)state;
    if (parse(in, len, &a) < 0 || a.path[0] == '\0')
        return th_task_fail(task, TH_EINVAL, "tally: want 'N PATH'");
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", a.n);
    int fd = open(a.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd == -1 || write(fd, line, (size_t)n) != n) {
        if (fd != -1)
            close(fd);
        return th_task_fail(task, TH_EIO, "tally: cannot append to %s", a.path);
    }
    close(fd);
    return th_task_write(task, line, (size_t)n - 1);
}

static const th_task_def tasks[] = {
    {"pid", probe_pid},
    {"hold", probe_hold},
    {"spin", probe_spin},
    {"die", probe_die},
    {"nap", probe_nap},
    {"mark", probe_mark},
    {"tally", probe_tally},
    {NULL, NULL},
};

TH_PLUGIN("probe", "1.0", NULL, NULL, tasks);
