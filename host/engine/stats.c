/* stats.c - latency histograms, and the stats of pools as text, JSON and
 * Prometheus exposition. The JSON layout is documented in docs/stats.md
 * and only ever grows.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "loop.h"
#include "plugin.h"
#include "pool.h"
#include "stats.h"

static const char *const reason_names[RETIRE_COUNT] = {
    "none",     "memory_soft", "memory_hard", "memory_budget", "idle",
    "max_tasks", "max_age",    "crash",       "timeout_cancel", "signal",
    "reload",   "init",        "shutdown",
};

const char *retire_reason_name(int reason)
{
    if (reason < 0 || reason >= RETIRE_COUNT)
        return "unknown";
    return reason_names[reason];
}

/* ---- histograms ---- */

static unsigned bucket_of(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned log2 = 63u - (unsigned)__builtin_clzll(v); /* >= 3 */
    unsigned sub = (unsigned)(v >> (log2 - 3)) & (HIST_SUB - 1);
    return (log2 - 2) * HIST_SUB + sub;
}

/* The largest value that falls in bucket b. */
static uint64_t bucket_top(unsigned b)
{
    if (b < HIST_SUB)
        return b;
    unsigned log2 = b / HIST_SUB + 2;
    uint64_t sub = b % HIST_SUB;
    uint64_t base = (HIST_SUB + sub) << (log2 - 3);
    return base + (1ull << (log2 - 3)) - 1;
}

void hist_add(struct hist *h, uint64_t us)
{
    unsigned b = bucket_of(us);
    if (b >= HIST_BUCKETS)
        b = HIST_BUCKETS - 1;
    h->buckets[b]++;
    h->count++;
    h->sum += us;
}

uint64_t hist_percentile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen >= rank)
            return bucket_top(b);
    }
    return bucket_top(HIST_BUCKETS - 1);
}

/* ---- rendering ---- */

static const char *worker_state_name(int s)
{
    static const char *const names[] = {"starting", "idle", "busy", "stopping"};
    return (s >= 0 && s <= W_STOPPING) ? names[s] : "unknown";
}

static const char *pool_state(const struct pool *p)
{
    if (p->failed)
        return "failed";
    if (p->draining)
        return "draining";
    return "running";
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s != NULL && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_hist(FILE *f, const char *name, const struct hist *h)
{
    fprintf(f, "\"%s\":{\"count\":%llu,\"p50\":%llu,\"p90\":%llu,\"p99\":%llu}",
            name, (unsigned long long)h->count,
            (unsigned long long)hist_percentile(h, 0.50),
            (unsigned long long)hist_percentile(h, 0.90),
            (unsigned long long)hist_percentile(h, 0.99));
}

static void json_workers(FILE *f, const struct pool *p, double now)
{
    fprintf(f, "\"worker_list\":[");
    for (const struct worker *w = p->workers; w != NULL; w = w->next) {
        fprintf(f, "%s{\"pid\":%d,\"state\":\"%s\",\"rss_kib\":%u,"
                   "\"tasks\":%llu,\"age_s\":%.3f}",
                w == p->workers ? "" : ",", (int)w->pid,
                worker_state_name(w->state), w->rss_kib,
                (unsigned long long)w->tasks_done, now - w->started);
    }
    fprintf(f, "]");
}

static void json_pool(FILE *f, const struct pool *p, double now)
{
    const struct pool_stats *s = &p->stats;
    fprintf(f, "{\"name\":");
    json_string(f, p->cfg.name);
    fprintf(f, ",\"plugin\":");
    json_string(f, p->plugin->name);
    fprintf(f, ",\"plugin_version\":");
    json_string(f, p->plugin->desc.version);
    fprintf(f, ",\"state\":\"%s\",\"failure\":", pool_state(p));
    if (p->fail_reason)
        json_string(f, p->fail_reason);
    else
        fprintf(f, "null");
    fprintf(f, ",\"workers\":{\"total\":%d,\"busy\":%d,\"idle\":%d,"
               "\"starting\":%d,\"stopping\":%d,\"min\":%d,\"max\":%d}",
            p->nworkers, p->nbusy, p->nidle, p->nstarting, p->nstopping,
            p->cfg.min_workers, p->cfg.max_workers);
    fprintf(f, ",\"queue\":{\"depth\":%zu,\"limit\":%ld}",
            queue_len(&p->queue), p->cfg.max_queue);
    fprintf(f, ",\"tasks\":{\"submitted\":%llu,\"dropped\":%llu",
            (unsigned long long)s->submitted, (unsigned long long)s->dropped);
    for (int st = TH_STATE_OK; st < TH_STATE_COUNT; st++)
        fprintf(f, ",\"%s\":%llu", th_state_name((th_state)st),
                (unsigned long long)s->finished[st]);
    fprintf(f, "},\"restarts\":{\"spawned\":%llu",
            (unsigned long long)s->spawned);
    for (int r = 1; r < RETIRE_COUNT; r++)
        fprintf(f, ",\"%s\":%llu", reason_names[r],
                (unsigned long long)s->restarts[r]);
    fprintf(f, "},");
    json_hist(f, "wait_us", &s->wait);
    fprintf(f, ",");
    json_hist(f, "run_us", &s->run);
    fprintf(f, ",");
    json_workers(f, p, now);
    fprintf(f, "}");
}

static void text_pool(FILE *f, const struct pool *p, double now)
{
    const struct pool_stats *s = &p->stats;
    fprintf(f, "pool %s (plugin %s %s): %s\n", p->cfg.name, p->plugin->name,
            p->plugin->desc.version, pool_state(p));
    if (p->fail_reason)
        fprintf(f, "  failure: %s\n", p->fail_reason);
    fprintf(f, "  workers  %d total: %d busy, %d idle, %d starting, "
               "%d stopping (min %d, max %d)\n",
            p->nworkers, p->nbusy, p->nidle, p->nstarting, p->nstopping,
            p->cfg.min_workers, p->cfg.max_workers);
    fprintf(f, "  queue    %zu / %ld\n", queue_len(&p->queue), p->cfg.max_queue);
    fprintf(f, "  tasks    submitted %llu", (unsigned long long)s->submitted);
    for (int st = TH_STATE_OK; st < TH_STATE_COUNT; st++)
        fprintf(f, ", %s %llu", th_state_name((th_state)st),
                (unsigned long long)s->finished[st]);
    fprintf(f, "\n  restarts");
    for (int r = 1; r < RETIRE_COUNT; r++)
        fprintf(f, "%s %s %llu", r == 1 ? "" : ",", reason_names[r],
                (unsigned long long)s->restarts[r]);
    fprintf(f, "\n  wait     p50 %llu us, p90 %llu us, p99 %llu us\n",
            (unsigned long long)hist_percentile(&s->wait, 0.5),
            (unsigned long long)hist_percentile(&s->wait, 0.9),
            (unsigned long long)hist_percentile(&s->wait, 0.99));
    fprintf(f, "  run      p50 %llu us, p90 %llu us, p99 %llu us\n",
            (unsigned long long)hist_percentile(&s->run, 0.5),
            (unsigned long long)hist_percentile(&s->run, 0.9),
            (unsigned long long)hist_percentile(&s->run, 0.99));
    fprintf(f, "  %8s  %-8s  %10s  %10s  %9s\n", "PID", "STATE", "RSS KiB",
            "TASKS", "AGE s");
    for (const struct worker *w = p->workers; w != NULL; w = w->next)
        fprintf(f, "  %8d  %-8s  %10u  %10llu  %9.1f\n", (int)w->pid,
                worker_state_name(w->state), w->rss_kib,
                (unsigned long long)w->tasks_done, now - w->started);
}

/* Writes a label value escaped as the exposition format wants. */
static void prom_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(f, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

/* name{pool="P"<extra>} — the start of a sample line. */
static void prom_start(FILE *f, const char *metric, const char *pool)
{
    fprintf(f, "%s{pool=\"", metric);
    prom_label(f, pool);
    fputc('"', f);
}

static void prom_summary(FILE *f, const char *metric, const char *pool,
                         const struct hist *h)
{
    const double qs[] = {0.5, 0.9, 0.99};
    for (int i = 0; i < 3; i++) {
        prom_start(f, metric, pool);
        fprintf(f, ",quantile=\"%g\"} %.6f\n", qs[i],
                (double)hist_percentile(h, qs[i]) / 1e6);
    }
    char name[96];
    snprintf(name, sizeof name, "%s_sum", metric);
    prom_start(f, name, pool);
    fprintf(f, "} %.6f\n", (double)h->sum / 1e6);
    snprintf(name, sizeof name, "%s_count", metric);
    prom_start(f, name, pool);
    fprintf(f, "} %llu\n", (unsigned long long)h->count);
}

static void prom_pool(FILE *f, const struct pool *p)
{
    const struct pool_stats *s = &p->stats;
    const char *n = p->cfg.name;
    const char *states[] = {"busy", "idle", "starting", "stopping"};
    int counts[] = {p->nbusy, p->nidle, p->nstarting, p->nstopping};
    for (int i = 0; i < 4; i++) {
        prom_start(f, "taskhost_workers", n);
        fprintf(f, ",state=\"%s\"} %d\n", states[i], counts[i]);
    }
    prom_start(f, "taskhost_queue_depth", n);
    fprintf(f, "} %zu\n", queue_len(&p->queue));
    prom_start(f, "taskhost_queue_limit", n);
    fprintf(f, "} %ld\n", p->cfg.max_queue);
    for (int st = TH_STATE_OK; st < TH_STATE_COUNT; st++) {
        prom_start(f, "taskhost_tasks_total", n);
        fprintf(f, ",state=\"%s\"} %llu\n", th_state_name((th_state)st),
                (unsigned long long)s->finished[st]);
    }
    for (int r = 1; r < RETIRE_COUNT; r++) {
        prom_start(f, "taskhost_worker_restarts_total", n);
        fprintf(f, ",reason=\"%s\"} %llu\n", reason_names[r],
                (unsigned long long)s->restarts[r]);
    }
    prom_summary(f, "taskhost_task_wait_seconds", n, &s->wait);
    prom_summary(f, "taskhost_task_run_seconds", n, &s->run);
    for (const struct worker *w = p->workers; w != NULL; w = w->next) {
        prom_start(f, "taskhost_worker_rss_bytes", n);
        fprintf(f, ",pid=\"%d\"} %llu\n", (int)w->pid,
                (unsigned long long)w->rss_kib * 1024);
    }
}

static void prom_header(FILE *f)
{
    fprintf(f, "# HELP taskhost_workers Workers by state.\n"
               "# TYPE taskhost_workers gauge\n"
               "# HELP taskhost_queue_depth Tasks waiting for a worker.\n"
               "# TYPE taskhost_queue_depth gauge\n"
               "# HELP taskhost_queue_limit max_queue of the pool.\n"
               "# TYPE taskhost_queue_limit gauge\n"
               "# HELP taskhost_tasks_total Tasks answered, by final state.\n"
               "# TYPE taskhost_tasks_total counter\n"
               "# HELP taskhost_worker_restarts_total Workers gone, by reason.\n"
               "# TYPE taskhost_worker_restarts_total counter\n"
               "# HELP taskhost_task_wait_seconds Time queued.\n"
               "# TYPE taskhost_task_wait_seconds summary\n"
               "# HELP taskhost_task_run_seconds Time running.\n"
               "# TYPE taskhost_task_run_seconds summary\n"
               "# HELP taskhost_worker_rss_bytes Resident memory per worker.\n"
               "# TYPE taskhost_worker_rss_bytes gauge\n");
}

static void render(FILE *f, const struct th_host *h, const char *pool,
                   int format)
{
    double now = loop_clock();
    int first = 1;
    if (format == TH_STATS_JSON)
        fprintf(f, "{\"version\":1,\"pending\":%zu,\"pools\":[", h->pending);
    if (format == TH_STATS_PROMETHEUS)
        prom_header(f);
    for (const struct pool *p = h->pools; p != NULL; p = p->next) {
        if (pool != NULL && strcmp(pool, p->cfg.name) != 0)
            continue;
        if (format == TH_STATS_JSON) {
            fprintf(f, first ? "" : ",");
            json_pool(f, p, now);
        } else if (format == TH_STATS_PROMETHEUS) {
            prom_pool(f, p);
        } else {
            text_pool(f, p, now);
        }
        first = 0;
    }
    if (format == TH_STATS_JSON)
        fprintf(f, "]}\n");
}

TH_EXPORT int th_host_stats(th_host *h, const char *pool, int format,
                            char **out)
{
    if (h == NULL || out == NULL)
        return TH_EINVAL;
    if (pool != NULL) {
        const struct pool *p = h->pools;
        while (p != NULL && strcmp(p->cfg.name, pool) != 0)
            p = p->next;
        if (p == NULL)
            return TH_ENOENT;
    }
    size_t len;
    FILE *f = open_memstream(out, &len);
    if (f == NULL)
        return TH_ENOMEM;
    render(f, h, pool, format);
    if (fclose(f) != 0)
        return TH_ENOMEM;
    return 0;
}
