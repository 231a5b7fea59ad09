/* util.c - timing, percentiles, /proc readers and build-tree paths. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#ifndef TOP_BUILDDIR
#error "TOP_BUILDDIR must name the build tree"
#endif

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double percentile(double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)n);
    return v[i >= n ? n - 1 : i];
}

double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Sums the values (kB) of lines starting with any of `keys` in a /proc
 * file; -1 when it cannot be read or no key matched. */
static long proc_sum_kib(const char *path, const char *const *keys)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    char line[256];
    long sum = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        for (const char *const *k = keys; *k != NULL; k++) {
            size_t n = strlen(*k);
            if (strncmp(line, *k, n) == 0)
                sum = (sum < 0 ? 0 : sum) + atol(line + n);
        }
    }
    fclose(f);
    return sum;
}

long proc_private_kib(pid_t pid)
{
    static const char *const keys[] = {"Private_Clean:", "Private_Dirty:",
                                       NULL};
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    return proc_sum_kib(path, keys);
}

long proc_rss_kib(pid_t pid)
{
    static const char *const keys[] = {"VmRSS:", NULL};
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    return proc_sum_kib(path, keys);
}

/* The JSON object of pool `pool` in a stats text: a pointer to its name. */
static const char *pool_json(const char *json, const char *pool)
{
    char needle[128];
    snprintf(needle, sizeof needle, "{\"name\":\"%s\"", pool);
    return json ? strstr(json, needle) : NULL;
}

pid_t stats_worker_pid(const char *json, const char *pool)
{
    const char *p = pool_json(json, pool);
    if (p != NULL)
        p = strstr(p, "\"worker_list\":[{\"pid\":");
    return p ? (pid_t)atol(p + strlen("\"worker_list\":[{\"pid\":")) : -1;
}

long stats_queue_depth(const char *json, const char *pool)
{
    const char *p = pool_json(json, pool);
    if (p != NULL)
        p = strstr(p, "\"queue\":{\"depth\":");
    return p ? atol(p + strlen("\"queue\":{\"depth\":")) : -1;
}

const char *plugin_path(const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/plugins/.libs/%s.so", TOP_BUILDDIR, name);
    return path;
}

const char *build_path(const char *rel)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", TOP_BUILDDIR, rel);
    return path;
}

const char *scratch_dir(void)
{
    static char dir[] = "/tmp/th-bench.XXXXXX";
    static int made;
    if (!made && mkdtemp(dir) != NULL)
        made = 1;
    return dir;
}
