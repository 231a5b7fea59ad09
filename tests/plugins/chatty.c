/* chatty.c - a plugin that reports progress as fast as it can, to show
 * that the worker coalesces: whatever the rate of th_task_progress(), at
 * most one report per task leaves the worker every 50 ms.
 *
 *   task "chatty": input N (milliseconds, decimal): calls th_task_progress()
 *                  in a tight loop for N ms, then returns the number of
 *                  calls, in decimal.
 *   task "steps":  input N: reports 1..N of N with messages "step I",
 *                  sleeping 60 ms between reports (each one leaves), then
 *                  returns "done".
 *   task "fill":   input N: returns N bytes of 'x' (a large output for a
 *                  small input, which a client may take in a memfd).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <taskhost.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long parse(const void *in, size_t len)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, in, len);
    buf[len] = '\0';
    return strtol(buf, NULL, 10);
}

static int chatty_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    long ms = parse(in, len);
    if (ms < 0)
        return th_task_fail(task, TH_EINVAL, "chatty: input must be ms");
    double end = now_s() + ms / 1000.0;
    unsigned long long calls = 0;
    do {
        for (int i = 0; i < 1000; i++, calls++)
            th_task_progress(task, calls, 0, "chatty");
    } while (now_s() < end);
    char out[32];
    int n = snprintf(out, sizeof out, "%llu", calls);
    return th_task_write(task, out, (size_t)n);
}

static int steps_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    long n = parse(in, len);
    if (n < 0)
        return th_task_fail(task, TH_EINVAL, "steps: input must be a count");
    for (long i = 1; i <= n; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "step %ld", i);
        th_task_progress(task, (uint64_t)i, (uint64_t)n, msg);
        struct timespec ts = {0, 60 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return th_task_write(task, "done", 4);
}

static int fill_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    long n = parse(in, len);
    char chunk[4096];
    if (n < 0)
        return th_task_fail(task, TH_EINVAL, "fill: input must be a count");
    memset(chunk, 'x', sizeof chunk);
    for (long left = n; left > 0; left -= (long)sizeof chunk) {
        int rc = th_task_write(task, chunk,
                               left < (long)sizeof chunk ? (size_t)left
                                                         : sizeof chunk);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static const th_task_def tasks[] = {
    {"chatty", chatty_run},
    {"steps", steps_run},
    {"fill", fill_run},
    {NULL, NULL},
};

TH_PLUGIN("chatty", "1.0", NULL, NULL, tasks);
