/* leak.c - a plugin whose workers grow, to show the memory limits of a
 * pool: memory_soft_limit recycles a worker after the task that took it
 * over, memory_hard_limit kills it at once.
 *
 *   task "leak": input N (MiB, 0 to 1048576); allocates N MiB, touches every
 *   page so it counts in the RSS, never frees it, and returns "PID RSS_KIB":
 *   the worker's pid and its resident set size in KiB afterwards.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <taskhost.h>

#define LEAK_MAX_MIB 1048576LL /* 1 TiB: keeps N << 20 far from overflow */

/* The leaked blocks stay linked from here: the memory is never freed, but
 * it stays reachable, so a leak checker in a sanitizer build keeps quiet. */
static void *leaked;

/* Parses decimal text, allowing surrounding white space. Returns 0 and
 * sets *out, or -1 if not a number <= max. */
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

/* Returns the resident set size in KiB, or -1. */
static long long rss_kib(void)
{
    long long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    int n = fscanf(f, "%lld %lld", &size, &resident);
    fclose(f);
    if (n != 2)
        return -1;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int leak_run(void *state, th_task *task, const void *input, size_t len)
{
    long long mib;
    (void)state;

    if (parse_uint(input, len, LEAK_MAX_MIB, &mib) == -1)
        return th_task_fail(task, TH_EINVAL,
                            "leak: input must be MiB, 0 to %lld, in decimal: "
                            "'%.*s'",
                            LEAK_MAX_MIB, len > 32 ? 32 : (int)len,
                            (const char *)input);
    if (mib > 0) {
        size_t size = (size_t)mib << 20;
        void **block = malloc(size);
        if (block == NULL)
            return th_task_fail(task, TH_ENOMEM,
                                "leak: cannot allocate %lld MiB", mib);
        memset(block, 0xa5, size);
        block[0] = leaked;
        leaked = block;
    }
    long long rss = rss_kib();
    if (rss < 0)
        return th_task_fail(task, TH_EIO, "leak: cannot read /proc/self/statm");
    char out[64];
    int n = snprintf(out, sizeof out, "%ld %lld", (long)getpid(), rss);
    return th_task_write(task, out, (size_t)n);
}

static const th_task_def tasks[] = {
    {"leak", leak_run},
    {NULL, NULL},
};

TH_PLUGIN("leak", "1.0", NULL, NULL, tasks);
