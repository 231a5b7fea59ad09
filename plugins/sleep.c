/* sleep.c - a cooperative long task.
 *
 * Shows th_task_cancelled(): the task sleeps in short slices and stops early
 * once the host has cancelled it or its time limit passed, so that the
 * worker can end cleanly instead of being killed. Shows th_task_progress()
 * too: each slice reports the milliseconds slept of those asked (the
 * worker passes on at most one report per 50 ms). Also shows how a task
 * reads a number from its input (decimal text) and rejects bad input with
 * th_task_fail().
 *
 *   task "sleep": input N (milliseconds, 0 to 86400000); returns "slept N".
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <taskhost.h>

#define SLEEP_MAX_MS 86400000LL /* one day */
#define SLEEP_SLICE_MS 10

/* Parses decimal text, allowing surrounding white space (a trailing newline
 * from `echo`). Returns 0 and sets *out, or -1 if not a number <= max. */
static int parse_uint(const char *s, size_t len, long long max, long long *out)
{
    size_t i = 0;
    long long v = 0;

    while (i < len &&
           (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    size_t first = i;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        v = v * 10 + (s[i] - '0');
        if (v > max)
            return -1;
    }
    if (i == first)
        return -1;
    while (i < len &&
           (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    if (i != len)
        return -1;
    *out = v;
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sleep_run(void *state, th_task *task, const void *input, size_t len)
{
    long long ms;
    (void)state;

    if (parse_uint(input, len, SLEEP_MAX_MS, &ms) == -1)
        return th_task_fail(task, TH_EINVAL,
                            "sleep: input must be milliseconds, 0 to %lld, "
                            "in decimal: '%.*s'",
                            SLEEP_MAX_MS, len > 32 ? 32 : (int)len,
                            (const char *)input);
    long long end = now_ms() + ms;
    for (long long left = ms; left > 0; left = end - now_ms()) {
        if (th_task_cancelled(task))
            return th_task_fail(task, TH_ECANCELED,
                                "sleep: cancelled with %lld ms left", left);
        th_task_progress(task, (uint64_t)(ms - left), (uint64_t)ms, "sleeping");
        long long slice = left < SLEEP_SLICE_MS ? left : SLEEP_SLICE_MS;
        struct timespec ts = {0, (long)(slice * 1000000)};
        nanosleep(&ts, NULL); /* EINTR just ends this slice early */
    }
    char out[32];
    int n = snprintf(out, sizeof out, "slept %lld", ms);
    return th_task_write(task, out, (size_t)n);
}

static const th_task_def tasks[] = {
    {"sleep", sleep_run},
    {NULL, NULL},
};

TH_PLUGIN("sleep", "1.0", NULL, NULL, tasks);
