/* stats.c - latency histograms, recent windows, worker events, and the
 * stats of pools as text, JSON and Prometheus exposition (engine layer).
 * The JSON layout is documented in docs/stats.md and only ever grows.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "cluster.h"
#include "host.h"
#include "loop.h"
#include "plugin.h"
#include "pool.h"
#include "stats.h"
#include "taskhost_version.h"

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

/* Decimal bounds, as Prometheus users expect: 100 us to one minute. */
static const uint64_t fixed_bounds[HIST_FIXED] = {
    100,     250,     500,     1000,    2500,     5000,
    10000,   25000,   50000,   100000,  250000,   500000,
    1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};

const uint64_t *hist_bounds_us(void)
{
    return fixed_bounds;
}

void hist_add(struct hist *h, uint64_t us)
{
    unsigned b = bucket_of(us);
    if (b >= HIST_BUCKETS)
        b = HIST_BUCKETS - 1;
    h->buckets[b]++;
    h->count++;
    h->sum += us;
    unsigned f = 0;
    while (f < HIST_FIXED && us > fixed_bounds[f])
        f++;
    h->fixed[f]++;
}

uint64_t hist_percentile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    double exact = q * (double)h->count;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact)
        rank++; /* the nearest rank: rounded up */
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

/* ---- windows ---- */

static int64_t second_of(double now)
{
    /* floor(), without libm: truncation, one less below zero */
    int64_t s = (int64_t)now;
    return (double)s > now ? s - 1 : s;
}

static size_t ring_at(int64_t sec, size_t n)
{
    return (size_t)(sec % (int64_t)n);
}

/* Moves the newest slot of w to the second of `now`, clearing the slots
 * in between (queue depth carries over: it did not change meanwhile). */
static void win_advance(struct window *w, double now)
{
    int64_t sec = second_of(now);
    if (w->first == 0) {
        w->first = sec > 0 ? sec : 1;
        w->sec = sec - 1;
    }
    if (sec <= w->sec)
        return;
    int64_t from = w->sec + 1;
    if (from < sec - HISTORY_SECONDS + 1)
        from = sec - HISTORY_SECONDS + 1;
    for (int64_t x = from; x <= sec; x++) {
        w->ran[ring_at(x, HISTORY_SECONDS)] = 0;
        w->depth[ring_at(x, HISTORY_SECONDS)] = w->last_depth;
    }
    if (from < sec - WIN_SECONDS + 1)
        from = sec - WIN_SECONDS + 1;
    for (int64_t x = from; x <= sec; x++)
        memset(&w->slots[ring_at(x, WIN_SECONDS)], 0, sizeof w->slots[0]);
    w->sec = sec;
    w->until = (double)(sec + 1);
    w->slot = &w->slots[ring_at(sec, WIN_SECONDS)];
    w->ran_now = &w->ran[ring_at(sec, HISTORY_SECONDS)];
    w->depth_now = &w->depth[ring_at(sec, HISTORY_SECONDS)];
}

static unsigned win_bucket(uint64_t us)
{
    unsigned b = bucket_of(us);
    return b < WIN_HIST ? b : WIN_HIST - 1;
}

uint64_t stats_us(double seconds)
{
    if (!(seconds > 0))
        return 0; /* also NaN */
    /* A year at most: any bigger value is a clock mix-up, and the cast of
     * a double beyond 2^64 would be undefined. */
    return seconds < 3.2e7 ? (uint64_t)(seconds * 1e6) : 32000000000000ull;
}

/* The window of s, advanced to `now`; NULL when it cannot be mapped (the
 * lifetime histograms still count). A minute of histograms is 120 KiB:
 * mapped rather than allocated, so that a pool that never ran a task
 * holds none of it and a young or quiet one only the pages of the
 * seconds it saw work. */
static struct window *win_at(struct pool_stats *s, double now)
{
    if (s->win != NULL && now < s->win->until)
        return s->win; /* within its newest second: the common case */
    if (s->win == NULL) {
        void *m = mmap(NULL, sizeof *s->win, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        s->win = m;
    }
    win_advance(s->win, now);
    return s->win;
}

void stats_free(struct pool_stats *s)
{
    if (s->win != NULL)
        munmap(s->win, sizeof *s->win);
    s->win = NULL;
}

void stats_wait(struct pool_stats *s, double now, uint64_t us)
{
    hist_add(&s->wait, us);
    struct window *w = win_at(s, now);
    if (w == NULL)
        return;
    w->slot->wait[win_bucket(us)]++;
    w->slot->nwait++;
}

void stats_run(struct pool_stats *s, double now, uint64_t us)
{
    hist_add(&s->run, us);
    struct window *w = win_at(s, now);
    if (w == NULL)
        return;
    w->slot->run[win_bucket(us)]++;
    w->slot->nrun++;
    (*w->ran_now)++;
}

void stats_depth(struct pool_stats *s, double now, size_t depth)
{
    uint32_t d = depth > UINT32_MAX ? UINT32_MAX : (uint32_t)depth;
    struct window *w = win_at(s, now);
    if (w == NULL)
        return;
    if (d > *w->depth_now)
        *w->depth_now = d;
    w->last_depth = d;
}

/* Tasks run in second x and the queue depth then, as of second `now`;
 * -1 when x is before the window's first second or after `now`. */
static int64_t history_at(const struct window *w, int64_t x, int64_t now,
                          int depth)
{
    if (w == NULL || w->first == 0 || x < w->first || x > now)
        return -1;
    if (x > w->sec)
        return depth ? w->last_depth : 0;
    if (x <= w->sec - HISTORY_SECONDS)
        return -1;
    size_t k = ring_at(x, HISTORY_SECONDS);
    return depth ? w->depth[k] : w->ran[k];
}

void stats_window(const struct pool_stats *s, double now,
                  struct window_view *v)
{
    const struct window *w = s->win;
    int64_t sec = second_of(now);
    memset(v, 0, sizeof *v);
    if (w == NULL || w->first == 0)
        return;
    int64_t from = sec - WIN_SECONDS + 1;
    double start = from > w->first ? (double)from : (double)w->first;
    v->seconds = now - start;
    for (int64_t x = from; x <= sec && x <= w->sec; x++) {
        if (x <= w->sec - WIN_SECONDS || x < w->first)
            continue;
        const struct win_slot *slot = &w->slots[ring_at(x, WIN_SECONDS)];
        for (unsigned b = 0; b < WIN_HIST; b++) {
            v->wait.buckets[b] += slot->wait[b];
            v->run.buckets[b] += slot->run[b];
        }
        v->wait.count += slot->nwait;
        v->run.count += slot->nrun;
        v->ran += w->ran[ring_at(x, HISTORY_SECONDS)];
    }
}

/* ---- worker events ---- */

static void event_push(struct event_ring *r, const char *pool, int pid,
                       int kind, int reason, const char *detail)
{
    struct worker_event *e = &r->ev[r->total % EVENTS_MAX];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    e->pid = pid;
    e->kind = kind;
    e->reason = reason;
    snprintf(e->pool, sizeof e->pool, "%s", pool);
    snprintf(e->detail, sizeof e->detail, "%s", detail ? detail : "");
    r->total++;
}

void stats_worker_started(struct event_ring *r, const char *pool, int pid)
{
    event_push(r, pool, pid, EV_STARTED, RETIRE_NONE, "");
}

void stats_worker_exited(struct event_ring *r, const char *pool, int pid,
                         int reason, int crashed, const char *how)
{
    int kind = EV_RECYCLED;
    if (crashed || reason == RETIRE_INIT || reason == RETIRE_CRASH)
        kind = EV_CRASHED;
    else if (reason == RETIRE_MEMORY_HARD || reason == RETIRE_KILLED)
        kind = EV_KILLED;
    else if (reason == RETIRE_NONE || reason == RETIRE_IDLE ||
             reason == RETIRE_SHUTDOWN)
        kind = EV_STOPPED;
    event_push(r, pool, pid, kind, reason, how);
}

const char *stats_event_name(int kind)
{
    static const char *const names[] = {"started", "stopped", "recycled",
                                        "crashed", "killed"};
    return kind >= 0 && kind <= EV_KILLED ? names[kind] : "unknown";
}

/* ---- health ---- */

/* "ok", "draining", "failed", or "backoff" after failed starts. */
static const char *pool_health(const struct pool *p)
{
    if (p->failed)
        return "failed";
    if (p->draining)
        return "draining";
    if (loop_timer_armed(&p->backoff))
        return "backoff";
    return "ok";
}

int stats_health(const struct th_host *h, char *why, size_t len)
{
    if (h->closing) {
        snprintf(why, len, "shutting down");
        return -1;
    }
    for (const struct pool *p = h->pools; p != NULL; p = p->next) {
        const char *health = pool_health(p);
        if (strcmp(health, "failed") == 0) {
            snprintf(why, len, "%s", p->fail_reason ? p->fail_reason
                                                    : "a pool failed");
            return -1;
        }
        if (strcmp(health, "backoff") == 0) {
            snprintf(why, len,
                     "pool '%s' is backing off after its workers failed "
                     "to start or died young",
                     p->cfg.name);
            return -1;
        }
    }
    snprintf(why, len, "ok");
    return 0;
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

/* A percentile of a window, or null when it saw no task: a task answered
 * in zero microseconds is 0, a quiet minute is null. */
static void json_quantile(FILE *f, const char *name, const struct hist *h,
                          double q)
{
    if (h->count == 0)
        fprintf(f, "\"%s\":null", name);
    else
        fprintf(f, "\"%s\":%llu", name,
                (unsigned long long)hist_percentile(h, q));
}

static void json_window_hist(FILE *f, const char *name, const struct hist *h)
{
    fprintf(f, "\"%s\":{\"count\":%llu,", name, (unsigned long long)h->count);
    json_quantile(f, "p50", h, 0.50);
    fputc(',', f);
    json_quantile(f, "p90", h, 0.90);
    fputc(',', f);
    json_quantile(f, "p99", h, 0.99);
    fputc('}', f);
}

static double window_rate(const struct window_view *v)
{
    return v->seconds > 0 ? (double)v->ran / v->seconds : 0.0;
}

static void json_window(FILE *f, const struct pool *p, double now)
{
    struct window_view *v = malloc(sizeof *v);
    if (v == NULL) {
        fprintf(f, "\"window\":null");
        return;
    }
    stats_window(&p->stats, now, v);
    fprintf(f, "\"window\":{\"seconds\":%.3f,\"ran\":%llu,\"per_s\":%.3f,",
            v->seconds, (unsigned long long)v->ran, window_rate(v));
    json_window_hist(f, "wait_us", &v->wait);
    fputc(',', f);
    json_window_hist(f, "run_us", &v->run);
    fputc('}', f);
    free(v);
}

/* The last HISTORY_SECONDS whole seconds (fewer for a young pool), oldest
 * first: tasks run in each, and the largest queue depth of each. */
static void json_history(FILE *f, const struct pool *p, double now)
{
    const struct window *w = p->stats.win;
    int64_t sec = second_of(now);
    for (int depth = 0; depth < 2; depth++) {
        fprintf(f, depth ? ",\"queue_depth\":[" : "\"history\":{\"step_s\":1,"
                                                  "\"ran\":[");
        int first = 1;
        for (int64_t x = sec - HISTORY_SECONDS; x < sec; x++) {
            int64_t n = history_at(w, x, sec, depth);
            if (n < 0)
                continue;
            fprintf(f, "%s%lld", first ? "" : ",", (long long)n);
            first = 0;
        }
        fputc(']', f);
    }
    fputc('}', f);
}

static uint64_t pool_rss_bytes(const struct pool *p)
{
    uint64_t kib = 0;
    for (const struct worker *w = p->workers; w != NULL; w = w->next)
        kib += w->rss_kib;
    return kib * 1024;
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
    fprintf(f, ",\"state\":\"%s\",\"health\":\"%s\",\"failure\":",
            pool_state(p), pool_health(p));
    if (p->fail_reason)
        json_string(f, p->fail_reason);
    else
        fprintf(f, "null");
    fprintf(f, ",\"workers\":{\"total\":%d,\"busy\":%d,\"idle\":%d,"
               "\"starting\":%d,\"stopping\":%d,\"min\":%d,\"max\":%d}",
            p->nworkers, p->nbusy, p->nidle, p->nstarting, p->nstopping,
            p->cfg.min_workers, p->cfg.max_workers);
    fprintf(f, ",\"rss_bytes\":%llu",
            (unsigned long long)pool_rss_bytes(p));
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
    json_window(f, p, now);
    fprintf(f, ",");
    json_history(f, p, now);
    fprintf(f, ",");
    json_workers(f, p, now);
    cluster_stats_json(f, p->host->cluster, p->cfg.name);
    fprintf(f, "}");
}

static int pool_selected(const char *pool, const char *name)
{
    return pool == NULL || strcmp(pool, name) == 0;
}

/* The newest events last; those of other pools left out when one pool
 * is asked for. */
static void json_events(FILE *f, const struct event_ring *r, const char *pool)
{
    uint64_t from = r->total > EVENTS_MAX ? r->total - EVENTS_MAX : 0;
    int first = 1;
    fprintf(f, ",\"events\":[");
    for (uint64_t i = from; i < r->total; i++) {
        const struct worker_event *e = &r->ev[i % EVENTS_MAX];
        if (!pool_selected(pool, e->pool))
            continue;
        fprintf(f, "%s{\"time\":%.3f,\"pool\":", first ? "" : ",", e->time);
        json_string(f, e->pool);
        fprintf(f, ",\"pid\":%d,\"event\":\"%s\",\"reason\":\"%s\","
                   "\"detail\":",
                e->pid, stats_event_name(e->kind),
                retire_reason_name(e->reason));
        json_string(f, e->detail);
        fputc('}', f);
        first = 0;
    }
    fputc(']', f);
}

/* "12 us", "3.4 ms", "1.25 s", or "-" for an empty window. */
static void text_us(FILE *f, const struct hist *h, double q)
{
    if (h->count == 0) {
        fputc('-', f);
        return;
    }
    uint64_t us = hist_percentile(h, q);
    if (us < 1000)
        fprintf(f, "%llu us", (unsigned long long)us);
    else if (us < 1000000)
        fprintf(f, "%.3g ms", (double)us / 1e3);
    else
        fprintf(f, "%.3g s", (double)us / 1e6);
}

static void text_window(FILE *f, const struct pool *p, double now)
{
    struct window_view *v = malloc(sizeof *v);
    if (v == NULL)
        return;
    stats_window(&p->stats, now, v);
    fprintf(f, "  last %.0f s  %.1f tasks/s; wait p50 ", v->seconds,
            window_rate(v));
    text_us(f, &v->wait, 0.5);
    fprintf(f, ", p99 ");
    text_us(f, &v->wait, 0.99);
    fprintf(f, "; run p50 ");
    text_us(f, &v->run, 0.5);
    fprintf(f, ", p99 ");
    text_us(f, &v->run, 0.99);
    fputc('\n', f);
    free(v);
}

/* One line of 60 cells over the last five minutes (5 s a cell), in
 * eighth blocks scaled to the largest cell. */
static void text_spark(FILE *f, const struct pool *p, double now, int depth)
{
    static const char *const bars[] = {" ", "▁", "▂", "▃", "▄",
                                       "▅", "▆", "▇", "█"};
    enum { CELLS = 60, PER = HISTORY_SECONDS / CELLS };
    int64_t sec = second_of(now), cell[CELLS], top = 0;
    for (int c = 0; c < CELLS; c++) {
        cell[c] = 0;
        for (int i = 0; i < PER; i++) {
            int64_t n = history_at(p->stats.win,
                                   sec - HISTORY_SECONDS + c * PER + i, sec,
                                   depth);
            if (n > 0)
                cell[c] = depth ? (n > cell[c] ? n : cell[c]) : cell[c] + n;
        }
        if (!depth)
            cell[c] = (cell[c] + PER - 1) / PER;
        if (cell[c] > top)
            top = cell[c];
    }
    fprintf(f, "  %-8s %s|", depth ? "queue" : "tasks/s", "5 min ");
    for (int c = 0; c < CELLS; c++)
        fputs(bars[top ? (cell[c] * 8 + top - 1) / top : 0], f);
    fprintf(f, "| max %lld\n", (long long)top);
}

static void text_pool(FILE *f, const struct pool *p, double now)
{
    const struct pool_stats *s = &p->stats;
    fprintf(f, "pool %s (plugin %s %s): %s\n", p->cfg.name, p->plugin->name,
            p->plugin->desc.version, pool_state(p));
    if (p->fail_reason)
        fprintf(f, "  failure: %s\n", p->fail_reason);
    fprintf(f, "  workers  %d total: %d busy, %d idle, %d starting, "
               "%d stopping (min %d, max %d), RSS %.1f MiB\n",
            p->nworkers, p->nbusy, p->nidle, p->nstarting, p->nstopping,
            p->cfg.min_workers, p->cfg.max_workers,
            (double)pool_rss_bytes(p) / 1048576.0);
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
    cluster_stats_text(f, p->host->cluster, p->cfg.name);
    text_window(f, p, now);
    text_spark(f, p, now, 0);
    text_spark(f, p, now, 1);
    fprintf(f, "  %8s  %-8s  %10s  %10s  %9s\n", "PID", "STATE", "RSS KiB",
            "TASKS", "AGE s");
    for (const struct worker *w = p->workers; w != NULL; w = w->next)
        fprintf(f, "  %8d  %-8s  %10u  %10llu  %9.1f\n", (int)w->pid,
                worker_state_name(w->state), w->rss_kib,
                (unsigned long long)w->tasks_done, now - w->started);
}

/* The newest `max` events, newest first. */
static void text_events(FILE *f, const struct event_ring *r, const char *pool,
                        int max)
{
    int shown = 0;
    for (uint64_t i = r->total; i > 0 && shown < max; i--) {
        if (r->total - i >= EVENTS_MAX)
            break;
        const struct worker_event *e = &r->ev[(i - 1) % EVENTS_MAX];
        if (!pool_selected(pool, e->pool))
            continue;
        if (shown++ == 0)
            fprintf(f, "recent worker events\n");
        time_t t = (time_t)e->time;
        struct tm tm;
        char when[16];
        localtime_r(&t, &tm);
        strftime(when, sizeof when, "%H:%M:%S", &tm);
        fprintf(f, "  %s  %-10s %8d  %-8s", when, e->pool, e->pid,
                stats_event_name(e->kind));
        if (e->kind != EV_STARTED)
            fprintf(f, "  %s", retire_reason_name(e->reason));
        if (e->detail[0])
            fprintf(f, ": %s", e->detail);
        fputc('\n', f);
    }
}

/* ---- Prometheus exposition ----
 *
 * Each metric family is written whole, once, over every pool: the format
 * wants a family's samples together. No label takes per-process values. */

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

/* name{pool="P" — the start of a sample line; the caller closes it. */
static void prom_start(FILE *f, const char *metric, const char *pool)
{
    fprintf(f, "%s{pool=\"", metric);
    prom_label(f, pool);
    fputc('"', f);
}

static void prom_family(FILE *f, const char *name, const char *type,
                        const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

typedef void prom_fn(FILE *f, const char *name, const struct pool *p);

static void prom_workers(FILE *f, const char *name, const struct pool *p)
{
    const char *states[] = {"busy", "idle", "starting", "stopping"};
    int counts[] = {p->nbusy, p->nidle, p->nstarting, p->nstopping};
    for (int i = 0; i < 4; i++) {
        prom_start(f, name, p->cfg.name);
        fprintf(f, ",state=\"%s\"} %d\n", states[i], counts[i]);
    }
}

static void prom_workers_min(FILE *f, const char *name, const struct pool *p)
{
    prom_start(f, name, p->cfg.name);
    fprintf(f, "} %d\n", p->cfg.min_workers);
}

static void prom_workers_max(FILE *f, const char *name, const struct pool *p)
{
    prom_start(f, name, p->cfg.name);
    fprintf(f, "} %d\n", p->cfg.max_workers);
}

static void prom_up(FILE *f, const char *name, const struct pool *p)
{
    prom_start(f, name, p->cfg.name);
    fprintf(f, "} %d\n", strcmp(pool_health(p), "ok") == 0);
}

static void prom_depth(FILE *f, const char *name, const struct pool *p)
{
    prom_start(f, name, p->cfg.name);
    fprintf(f, "} %zu\n", queue_len(&p->queue));
}

static void prom_limit(FILE *f, const char *name, const struct pool *p)
{
    prom_start(f, name, p->cfg.name);
    fprintf(f, "} %ld\n", p->cfg.max_queue);
}

static void prom_rss(FILE *f, const char *name, const struct pool *p)
{
    prom_start(f, name, p->cfg.name);
    fprintf(f, "} %llu\n", (unsigned long long)pool_rss_bytes(p));
}

static void prom_submitted(FILE *f, const char *name, const struct pool *p)
{
    prom_start(f, name, p->cfg.name);
    fprintf(f, "} %llu\n", (unsigned long long)p->stats.submitted);
}

static void prom_tasks(FILE *f, const char *name, const struct pool *p)
{
    for (int st = TH_STATE_OK; st < TH_STATE_COUNT; st++) {
        prom_start(f, name, p->cfg.name);
        fprintf(f, ",state=\"%s\"} %llu\n", th_state_name((th_state)st),
                (unsigned long long)p->stats.finished[st]);
    }
}

static void prom_spawned(FILE *f, const char *name, const struct pool *p)
{
    prom_start(f, name, p->cfg.name);
    fprintf(f, "} %llu\n", (unsigned long long)p->stats.spawned);
}

static void prom_restarts(FILE *f, const char *name, const struct pool *p)
{
    for (int r = 1; r < RETIRE_COUNT; r++) {
        prom_start(f, name, p->cfg.name);
        fprintf(f, ",reason=\"%s\"} %llu\n", reason_names[r],
                (unsigned long long)p->stats.restarts[r]);
    }
}

/* A cumulative histogram in seconds: _bucket{le}, _sum, _count. */
static void prom_hist(FILE *f, const char *name, const char *pool,
                      const struct hist *h)
{
    char metric[96];
    uint64_t seen = 0;
    snprintf(metric, sizeof metric, "%s_bucket", name);
    for (int i = 0; i <= HIST_FIXED; i++) {
        seen += h->fixed[i];
        prom_start(f, metric, pool);
        if (i < HIST_FIXED)
            fprintf(f, ",le=\"%g\"} %llu\n", (double)fixed_bounds[i] / 1e6,
                    (unsigned long long)seen);
        else
            fprintf(f, ",le=\"+Inf\"} %llu\n", (unsigned long long)seen);
    }
    snprintf(metric, sizeof metric, "%s_sum", name);
    prom_start(f, metric, pool);
    fprintf(f, "} %.6f\n", (double)h->sum / 1e6);
    snprintf(metric, sizeof metric, "%s_count", name);
    prom_start(f, metric, pool);
    fprintf(f, "} %llu\n", (unsigned long long)h->count);
}

static void prom_wait(FILE *f, const char *name, const struct pool *p)
{
    prom_hist(f, name, p->cfg.name, &p->stats.wait);
}

static void prom_run(FILE *f, const char *name, const struct pool *p)
{
    prom_hist(f, name, p->cfg.name, &p->stats.run);
}

static const struct prom_metric {
    const char *name, *type, *help;
    prom_fn *fn;
} prom_metrics[] = {
    {"taskhost_pool_up", "gauge",
     "1 when the pool serves; 0 when it failed, backs off or drains.",
     prom_up},
    {"taskhost_workers", "gauge", "Worker processes by state.", prom_workers},
    {"taskhost_workers_min", "gauge", "min_workers of the pool.",
     prom_workers_min},
    {"taskhost_workers_max", "gauge", "max_workers of the pool.",
     prom_workers_max},
    {"taskhost_queue_depth", "gauge", "Tasks waiting for a worker.",
     prom_depth},
    {"taskhost_queue_limit", "gauge", "max_queue of the pool (0: none).",
     prom_limit},
    {"taskhost_pool_rss_bytes", "gauge",
     "Resident memory of the pool's workers, summed.", prom_rss},
    {"taskhost_tasks_submitted_total", "counter",
     "Tasks taken into the pool's queue.", prom_submitted},
    {"taskhost_tasks_total", "counter", "Tasks answered, by final state.",
     prom_tasks},
    {"taskhost_workers_started_total", "counter", "Worker processes started.",
     prom_spawned},
    {"taskhost_worker_restarts_total", "counter",
     "Worker processes gone, by reason.", prom_restarts},
    {"taskhost_task_wait_seconds", "histogram",
     "Time tasks waited in the queue.", prom_wait},
    {"taskhost_task_run_seconds", "histogram", "Time tasks ran in a worker.",
     prom_run},
};

/* ---- the cluster's families, for shared pools ---- */

typedef long long cluster_get(const struct cluster_numbers *n);

static long long cl_connected(const struct cluster_numbers *n)
{
    return n->connected && n->joined;
}
static long long cl_queued(const struct cluster_numbers *n)
{
    return n->queued;
}
static long long cl_dead(const struct cluster_numbers *n)
{
    return n->dead_letters;
}
static long long cl_redelivered(const struct cluster_numbers *n)
{
    return n->redelivered_all;
}
static long long cl_submitted(const struct cluster_numbers *n)
{
    return (long long)n->submitted;
}
static long long cl_claims(const struct cluster_numbers *n)
{
    return (long long)n->claimed;
}
static long long cl_answered(const struct cluster_numbers *n)
{
    return (long long)n->answered;
}
static long long cl_held(const struct cluster_numbers *n)
{
    return n->held;
}
static long long cl_unsent(const struct cluster_numbers *n)
{
    return n->unsent;
}

static const struct prom_cluster_metric {
    const char *name, *type, *help;
    cluster_get *get;
} prom_cluster_metrics[] = {
    {"taskhost_cluster_up", "gauge",
     "1 when this host is connected to the cluster's Redis and joined the "
     "shared pool.", cl_connected},
    {"taskhost_cluster_queue_depth", "gauge",
     "Tasks in the cluster's queue of the shared pool that no host claimed "
     "yet (as of the last heartbeat).", cl_queued},
    {"taskhost_cluster_dead_letters", "gauge",
     "Tasks in the shared pool's dead-letter stream.", cl_dead},
    {"taskhost_cluster_redelivered_total", "counter",
     "Tasks taken over from a host that died or stalled, cluster-wide.",
     cl_redelivered},
    {"taskhost_cluster_submitted_total", "counter",
     "Tasks this host put into the cluster's queue.", cl_submitted},
    {"taskhost_cluster_claims_total", "counter",
     "Tasks this host claimed from the cluster's queue.", cl_claims},
    {"taskhost_cluster_answered_total", "counter",
     "Answers this host posted for tasks it ran.", cl_answered},
    {"taskhost_cluster_held", "gauge",
     "Tasks this host holds a claim on (running or about to start).",
     cl_held},
    {"taskhost_cluster_unsent", "gauge",
     "Answers waiting on this host for Redis to come back.", cl_unsent},
};

/* taskhost_cluster_claimed{pool,host}: claims by host, from "h:n h:n". */
static void prom_claimed_by_host(FILE *f, const char *pool, const char *s)
{
    char host[32];
    long long n;
    while (*s && (s = cluster_next_claims(s, host, sizeof host, &n)) != NULL) {
        prom_start(f, "taskhost_cluster_claimed", pool);
        fprintf(f, ",host=\"");
        prom_label(f, host);
        fprintf(f, "\"} %lld\n", n);
    }
}

static void prom_cluster(FILE *f, const struct th_host *h, const char *pool)
{
    struct cluster_numbers n;
    if (h->cluster == NULL)
        return;
    for (size_t i = 0;
         i < sizeof prom_cluster_metrics / sizeof prom_cluster_metrics[0];
         i++) {
        const struct prom_cluster_metric *m = &prom_cluster_metrics[i];
        prom_family(f, m->name, m->type, m->help);
        for (const struct pool *p = h->pools; p != NULL; p = p->next)
            if (pool_selected(pool, p->cfg.name) &&
                cluster_numbers(h->cluster, p->cfg.name, &n) == 0) {
                prom_start(f, m->name, p->cfg.name);
                fprintf(f, "} %lld\n", m->get(&n));
            }
    }
    prom_family(f, "taskhost_cluster_claimed", "gauge",
                "Tasks of the shared pool claimed and not yet answered, by "
                "host (as of the last heartbeat).");
    for (const struct pool *p = h->pools; p != NULL; p = p->next)
        if (pool_selected(pool, p->cfg.name) &&
            cluster_numbers(h->cluster, p->cfg.name, &n) == 0)
            prom_claimed_by_host(f, p->cfg.name, n.claimed_by_host);
}

static void prom_render(FILE *f, const struct th_host *h, const char *pool)
{
    prom_family(f, "taskhost_build_info", "gauge",
                "The version of taskhost serving, as a label.");
    fprintf(f, "taskhost_build_info{version=\"%s\"} 1\n", TH_VERSION_STRING);
    prom_family(f, "taskhost_tasks_pending", "gauge",
                "Tasks accepted and not yet answered, over every pool.");
    fprintf(f, "taskhost_tasks_pending %zu\n", h->pending);
    for (size_t i = 0; i < sizeof prom_metrics / sizeof prom_metrics[0]; i++) {
        const struct prom_metric *m = &prom_metrics[i];
        prom_family(f, m->name, m->type, m->help);
        for (const struct pool *p = h->pools; p != NULL; p = p->next)
            if (pool_selected(pool, p->cfg.name))
                m->fn(f, m->name, p);
    }
    prom_cluster(f, h, pool);
}

static void render(FILE *f, const struct th_host *h, const char *pool,
                   int format)
{
    double now = loop_clock();
    int first = 1;
    if (format == TH_STATS_PROMETHEUS) {
        prom_render(f, h, pool);
        return;
    }
    if (format == TH_STATS_JSON)
        fprintf(f, "{\"version\":1,\"pending\":%zu,\"pools\":[", h->pending);
    for (const struct pool *p = h->pools; p != NULL; p = p->next) {
        if (!pool_selected(pool, p->cfg.name))
            continue;
        if (format == TH_STATS_JSON) {
            fprintf(f, first ? "" : ",");
            json_pool(f, p, now);
        } else {
            text_pool(f, p, now);
        }
        first = 0;
    }
    if (format == TH_STATS_JSON) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        fprintf(f, "]");
        json_events(f, &h->events, pool);
        fprintf(f, ",\"time\":%.3f,\"taskhost_version\":\"%s\"}\n",
                (double)ts.tv_sec + (double)ts.tv_nsec / 1e9,
                TH_VERSION_STRING);
    } else {
        text_events(f, &h->events, pool, 10);
    }
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

void stats_summary(const struct th_host *h, struct stats_summary *out)
{
    memset(out, 0, sizeof *out);
    for (const struct pool *p = h->pools; p != NULL; p = p->next) {
        out->pools++;
        out->workers += (size_t)p->nworkers;
        out->busy += (size_t)p->nbusy;
        out->queued += queue_len(&p->queue);
        for (int s = TH_STATE_OK; s < TH_STATE_COUNT; s++)
            out->finished += p->stats.finished[s];
    }
}
