/* payload.c - a test plugin for large payloads: outputs larger and
 * smaller than the input, failures and deaths after part of an output,
 * and a task that runs until it is stopped.
 *
 *   "echo":   the input
 *   "triple": the input three times, in pieces of 1000 bytes
 *   "head":   the first 10 bytes of the input
 *   "fail":   writes the input, then fails with "failed after output"
 *   "die":    writes half the input, then kills its own process
 *   "stall":  writes half the input, reports progress, then waits until
 *             cancelled (2 s at most)
 *   "pid":    the worker's pid, in decimal
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <taskhost.h>

static int p_echo(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}

static int p_triple(void *state, th_task *task, const void *in, size_t len)
{
    const char *p = in;
    (void)state;
    for (int k = 0; k < 3; k++)
        for (size_t off = 0; off < len; off += 1000) {
            size_t n = len - off < 1000 ? len - off : 1000;
            int r = th_task_write(task, p + off, n);
            if (r < 0)
                return r;
        }
    return 0;
}

static int p_head(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len < 10 ? len : 10);
}

static int p_fail(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    th_task_write(task, in, len);
    return th_task_fail(task, TH_EPLUGIN, "failed after output");
}

static int p_die(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    th_task_write(task, in, len / 2);
    raise(SIGKILL);
    return 0;
}

static int p_stall(void *state, th_task *task, const void *in, size_t len)
{
    struct timespec ms = {0, 1000000};
    (void)state;
    th_task_write(task, in, len / 2);
    th_task_progress(task, 1, 2, "half written");
    for (int i = 0; i < 2000 && !th_task_cancelled(task); i++)
        nanosleep(&ms, NULL);
    return TH_ECANCELED;
}

static int p_pid(void *state, th_task *task, const void *in, size_t len)
{
    char buf[32];
    (void)state, (void)in, (void)len;
    int n = snprintf(buf, sizeof buf, "%ld", (long)getpid());
    return th_task_write(task, buf, (size_t)n);
}

static const th_task_def tasks[] = {
    {"echo", p_echo},   {"triple", p_triple}, {"head", p_head},
    {"fail", p_fail},   {"die", p_die},       {"stall", p_stall},
    {"pid", p_pid},     {NULL, NULL},
};

TH_PLUGIN("payload", "1.0", NULL, NULL, tasks);
