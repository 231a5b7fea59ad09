/* host.c - the embedding API (engine layer): a host of plugins and pools
 * on one loop.
 *
 * Each loop iteration: events (worker frames, spawners' reports of worker
 * exits, embedders' watches),
 * due timers, then the after-hook here: deliver the queued answers (the
 * only place a task's callback runs), dispatch the pools that have work,
 * write what is queued for workers (one write per worker per iteration),
 * and free workers reaped in the iteration.
 */
#include <assert.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "config.h"
#include "host.h"
#include "log.h"
#include "loop.h"
#include "plugin.h"
#include "pool.h"
#include "settings.h"
#include "spare.h"
#include "spawner.h"
#include "worker_wire.h"

#define SHUTDOWN_TIMEOUT_DEFAULT 30.0

static void host_after(void *arg);

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const struct config *host_config(const th_host *h)
{
    return h->cfg;
}

double host_plugin_timeout(const struct config *cfg)
{
    if (cfg == NULL || cfg->host.plugin_load_timeout <= 0)
        return PLUGIN_LOAD_TIMEOUT;
    return cfg->host.plugin_load_timeout;
}

/* ---- answers ----
 *
 * Every final answer goes the same way: host_answer() (or its variants)
 * records it in the task and appends the task to the answer queue; the
 * after-hook delivers the queue (deliver_answers()) before anything else.
 * So a task's callback never runs inside a state change of the pool or a
 * worker, nor inside an API call: it may call the engine freely.
 */

static void finish(struct th_host *h, struct task *t)
{
    t->delivered = 1;
    h->pending--;
    if (t->worker == NULL)
        task_free(&h->tasks, t);
}

/* Marks t answered with `state` and `code`, stamps the time and queues it
 * for delivery: it leaves the id map, being no longer pending for the
 * API, and waits on the answer queue through the map's link (task.h).
 * Its data is set by the caller. */
static void enqueue(struct th_host *h, struct task *t, th_state state, int code)
{
    assert(!t->answered);
    assert(t->mapped);
    task_map_del(&h->tasks, t);
    t->answered = 1;
    t->state = (uint8_t)state;
    t->code = state == TH_STATE_OK ? 0 : code;
    t->answered_at = loop_now(h->loop);
    t->anext = NULL;
    if (h->answers_tail != NULL)
        h->answers_tail->anext = t;
    else
        h->answers = t;
    h->answers_tail = t;
    loop_wake(h->loop);
}

void host_answer(struct th_host *h, struct task *t, th_state state, int code,
                 const void *data, size_t len)
{
    enqueue(h, t, state, code);
    if (task_set_output(&h->tasks, t, data, len, state != TH_STATE_OK) < 0)
        log_error("task %llu: out of memory keeping its answer's %zu bytes",
                  (unsigned long long)t->id, len);
}

void host_answer_ref(struct th_host *h, struct task *t, th_state state,
                     int code, const void *data, size_t len)
{
    enqueue(h, t, state, code);
    if (task_ref_output(&h->tasks, t, data, len) < 0)
        log_error("task %llu: out of memory keeping its answer's %zu bytes",
                  (unsigned long long)t->id, len);
}

void host_answer_fd(struct th_host *h, struct task *t, th_state state,
                    int code, size_t len)
{
    struct payload *pl = t->payload;
    if (pl->pm != NULL && task_pmfd_cover(t, len) < 0) {
        host_answerf(h, t, TH_STATE_ERROR, TH_ENOMEM,
                     "cannot map the task's output (%zu bytes)", len);
        return;
    }
    enqueue(h, t, state, code);
    pl->data = pl->pm != NULL ? pl->pm->map + pl->out_off : NULL;
    pl->len = len;
}

uint64_t host_fd_out_at(size_t len)
{
    return payload_out_off(len);
}

void host_answerf(struct th_host *h, struct task *t, th_state state, int code,
                  const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    host_answer(h, t, state, code, msg, (size_t)n);
}

static void deliver_answers(struct th_host *h)
{
    while (h->answers != NULL) {
        struct task *t = h->answers;
        h->answers = t->anext;
        if (h->answers == NULL)
            h->answers_tail = NULL;
        double start = t->started > 0 ? t->started : t->answered_at;
        th_result r = {
            .size = sizeof r,
            .id = t->id,
            .state = (th_state)t->state,
            .code = t->code,
            /* NULL for an output left in its submitter's memfd */
            .data = task_data(t),
            .len = task_len(t),
            .wait_time = start - t->submitted,
            .run_time = t->answered_at - start,
        };
        h->in_callback++;
        t->done(&r, t->arg);
        h->in_callback--;
        finish(h, t);
    }
}

void host_task_release(struct th_host *h, struct task *t)
{
    /* Answered already; an answer still queued frees it later. */
    assert(t->answered);
    if (!t->delivered)
        return;
    task_free(&h->tasks, t);
}

void host_mark_pool(struct th_host *h, struct pool *p)
{
    if (p->dirty)
        return;
    p->dirty = 1;
    p->dnext = h->dispatch;
    h->dispatch = p;
    loop_wake(h->loop);
}

void host_mark_worker(struct th_host *h, struct worker *w)
{
    if (w->dirty)
        return;
    w->dirty = 1;
    w->dnext = h->flush;
    h->flush = w;
}

void host_bury_worker(struct th_host *h, struct worker *w)
{
    /* It may sit on the flush list: freed only after that is walked. */
    w->gnext = h->graveyard;
    h->graveyard = w;
}

/* ---- the after-hook ---- */

static void dispatch_pools(struct th_host *h)
{
    while (h->dispatch != NULL) {
        struct pool *p = h->dispatch;
        h->dispatch = p->dnext;
        p->dirty = 0;
        pool_dispatch(p);
    }
}

static void flush_workers(struct th_host *h)
{
    while (h->flush != NULL) {
        struct worker *w = h->flush;
        h->flush = w->dnext;
        w->dirty = 0;
        worker_flush(w);
    }
}

static void bury_workers(struct th_host *h)
{
    while (h->graveyard != NULL) {
        struct worker *w = h->graveyard;
        h->graveyard = w->gnext;
        worker_free(w);
    }
}

static int all_done(const struct th_host *h)
{
    for (struct pool *p = h->pools; p != NULL; p = p->next)
        if (!pool_done(p))
            return 0;
    for (struct pool *p = h->retired; p != NULL; p = p->next)
        if (!pool_done(p))
            return 0;
    if (h->cluster != NULL && !cluster_done(h->cluster))
        return 0;
    return h->answers == NULL && h->pending == 0;
}

/* Frees retired pools whose last worker is gone (after reload/restart). */
static void free_retired(struct th_host *h)
{
    struct pool **pp = &h->retired;
    while (*pp != NULL) {
        struct pool *p = *pp;
        if (pool_done(p) && !p->dirty) {
            pool_list_remove(pp, p);
            log_info("pool %s: retired pool released", p->cfg.name);
            pool_free(p);
        } else {
            pp = &p->next;
        }
    }
}

static void host_after(void *arg)
{
    struct th_host *h = arg;
    deliver_answers(h);
    dispatch_pools(h);
    deliver_answers(h);
    dispatch_pools(h);
    if (h->cluster != NULL)
        cluster_after(h->cluster);
    flush_workers(h);
    bury_workers(h);
    if (h->retired != NULL && h->closing == 0)
        free_retired(h);
    if (h->closing && !h->stopped && all_done(h)) {
        h->stopped = 1;
        loop_timer_stop(h->loop, &h->shutdown_timer);
    }
}

/* ---- creation ---- */

TH_EXPORT int th_host_new(th_host **out)
{
    struct th_host *h = calloc(1, sizeof *h);
    if (h == NULL)
        return TH_ENOMEM;
    int r = loop_new(&h->loop);
    if (r < 0) {
        free(h);
        return r;
    }
    loop_set_after(h->loop, host_after, h);
    h->shutdown_timeout = SHUTDOWN_TIMEOUT_DEFAULT;
    *out = h;
    return 0;
}

static struct plugin *find_plugin(const struct th_host *h, const char *name)
{
    for (size_t i = 0; i < h->nplugins; i++)
        if (strcmp(h->plugins[i]->name, name) == 0)
            return h->plugins[i];
    return NULL;
}

static struct pool *find_pool(const struct th_host *h, const char *name)
{
    for (struct pool *p = h->pools; p != NULL; p = p->next)
        if (strcmp(p->cfg.name, name) == 0)
            return p;
    return NULL;
}

struct pool *host_find_pool(const struct th_host *h, const char *name)
{
    return find_pool(h, name);
}

/* A host with plugins will start pools: from now on it keeps a spawner
 * started ahead of need (spare.h). */
static void keep_spare(struct th_host *h)
{
    if (h->nplugins > 0 && !h->closing)
        spare_start(&h->spare, h->loop);
}

static int add_loaded_plugin(struct th_host *h, struct plugin *pl)
{
    struct plugin **v = realloc(h->plugins, (h->nplugins + 1) * sizeof *v);
    if (v == NULL) {
        plugin_unref(pl);
        return TH_ENOMEM;
    }
    h->plugins = v;
    h->plugins[h->nplugins++] = pl;
    return 0;
}

TH_EXPORT int th_host_add_plugin(th_host *h, const char *name,
                                 const char *path, char *err, size_t errlen)
{
    if (h == NULL || name == NULL || path == NULL)
        return TH_EINVAL;
    if (find_plugin(h, name) != NULL) {
        set_err(err, errlen, "plugin '%s' is already loaded", name);
        return TH_EINVAL;
    }
    struct plugin *pl;
    int strict = h->cfg ? h->cfg->host.strict_permissions : 1;
    int r = plugin_probe(name, path, strict, host_plugin_timeout(h->cfg), &pl,
                         err, errlen);
    if (r < 0)
        return r;
    log_info("plugin %s %s loaded from %s", pl->desc.name,
             pl->desc.version, path);
    r = add_loaded_plugin(h, pl);
    keep_spare(h);
    return r;
}

/* Runs the plugin's check() of the pool's settings; see host.h. A pool
 * user that is gone fails here too, rather than run check() as root. */
int host_check_pool(const struct pool_cfg *c, const struct plugin *pl,
                    int strict, double timeout, char *err, size_t errlen)
{
    int uid = -1, gid = -1;
    char why[768];

    if (!pl->has_check)
        return 0;
    if (geteuid() == 0 &&
        config_account_ids(c->user, c->group, &uid, &gid) != 0) {
        set_err(err, errlen, "pool '%s': its user or group does not exist",
                c->name);
        return TH_ECONFIG;
    }
    int r = plugin_probe_check(pl, c->name, c->settings, uid, gid, strict,
                               timeout, why, sizeof why);
    if (r == TH_ECONFIG)
        set_err(err, errlen, "plugin '%s' (%s) refused the settings of pool "
                             "'%s': %s", pl->name, pl->path, c->name, why);
    else if (r < 0)
        set_err(err, errlen, "plugin '%s' could not check the settings of "
                             "pool '%s': %s", pl->name, c->name, why);
    return r;
}

/* Starts a pool from a checked cfg. */
static int start_pool(struct th_host *h, const struct pool_cfg *cfg,
                      char *err, size_t errlen)
{
    struct plugin *pl = find_plugin(h, cfg->plugin);
    if (pl == NULL) {
        set_err(err, errlen, "pool '%s': no plugin named '%s'", cfg->name,
                cfg->plugin);
        return TH_ENOENT;
    }
    if (find_pool(h, cfg->name) != NULL) {
        set_err(err, errlen, "pool '%s' exists already", cfg->name);
        return TH_EINVAL;
    }
    int strict = h->cfg ? h->cfg->host.strict_permissions : 1;
    int r = host_check_pool(cfg, pl, strict, host_plugin_timeout(h->cfg), err,
                            errlen);
    if (r < 0)
        return r;
    struct pool *p = pool_new(h, cfg, pl);
    if (p == NULL)
        return TH_ENOMEM;
    pool_list_append(&h->pools, p);
    return 0;
}

/* Fills the first `size` bytes of the caller's th_pool_opts (its header's
 * sizeof) with the defaults; see taskhost_host.h. */
TH_EXPORT void th_pool_opts_init_sized(th_pool_opts *o, size_t size)
{
    th_pool_opts full;

    if (o == NULL || size < sizeof full.size)
        return;
    pool_opts_defaults(&full);
    full.size = size < sizeof full ? size : sizeof full;
    memcpy(o, &full, full.size);
}

/* The caller's options over the defaults: a program built against an
 * older header passes fewer fields. Returns 0 or TH_EINVAL. */
static int read_pool_opts(th_pool_opts *full, const th_pool_opts *o,
                          char *err, size_t errlen)
{
    size_t need = offsetof(th_pool_opts, plugin) + sizeof o->plugin;

    if (o->size < need) {
        set_err(err, errlen, "pool options not filled by "
                             "th_pool_opts_init() (size %zu)", o->size);
        return TH_EINVAL;
    }
    pool_opts_defaults(full);
    memcpy(full, o, o->size < sizeof *full ? o->size : sizeof *full);
    full->size = sizeof *full;
    return 0;
}

TH_EXPORT int th_host_add_pool(th_host *h, const th_pool_opts *o, char *err,
                               size_t errlen)
{
    th_pool_opts full;
    if (h == NULL || o == NULL || read_pool_opts(&full, o, err, errlen) < 0 ||
        full.name == NULL || full.plugin == NULL)
        return TH_EINVAL;
    if (h->closing)
        return TH_ECLOSED;
    struct pool_cfg c;
    int r = pool_cfg_from_opts(&c, &full, err, errlen);
    if (r == 0 && c.shared && h->cluster == NULL) {
        set_err(err, errlen, "pool '%s': shared: a shared pool needs a host "
                             "opened on a config with a cluster group",
                c.name);
        r = TH_ECONFIG;
    }
    if (r == 0)
        r = start_pool(h, &c, err, errlen);
    if (r == 0 && c.shared)
        cluster_sync_pools(h->cluster);
    pool_cfg_clear(&c);
    return r;
}

/* Loads the plugins and starts the pools of cfg into an empty host. */
static int host_build(struct th_host *h, struct config *cfg, char *err,
                      size_t errlen)
{
    h->cfg = cfg;
    h->shutdown_timeout = cfg->host.shutdown_timeout;
    for (size_t i = 0; i < cfg->nplugins; i++) {
        const struct plugin_cfg *pc = &cfg->plugins[i];
        char why[512];
        int r = th_host_add_plugin(h, pc->name, pc->path, why, sizeof why);
        if (r < 0) {
            set_err(err, errlen, "%s:%d: plugins[%d].path: %s", pc->file,
                    pc->line, pc->index, why);
            return r;
        }
    }
    for (size_t i = 0; i < cfg->npools; i++) {
        char why[512];
        int r = start_pool(h, &cfg->pools[i], why, sizeof why);
        if (r < 0) {
            set_err(err, errlen, "%s:%d: pools[%d]: %s",
                    cfg->pools[i].file, cfg->pools[i].line,
                    cfg->pools[i].index, why);
            return r;
        }
    }
    if (cfg->cluster.redis != NULL)
        return cluster_new(h, &cfg->cluster, &h->cluster);
    return 0;
}

static void host_free(struct th_host *h);

TH_EXPORT int th_host_open(th_host **out, const char *path, char *err,
                           size_t errlen)
{
    if (out == NULL || path == NULL)
        return TH_EINVAL;
    struct config *cfg;
    int r = config_load(path, &cfg, err, errlen);
    if (r < 0)
        return r;
    struct th_host *h;
    r = th_host_new(&h);
    if (r < 0) {
        config_free(cfg);
        return r;
    }
    r = host_build(h, cfg, err, errlen);
    if (r < 0) {
        host_free(h);
        return r;
    }
    *out = h;
    return 0;
}

/* ---- tasks ---- */

static double smaller(double pool, double asked)
{
    if (asked > 0 && (pool <= 0 || asked < pool))
        return asked;
    return pool;
}

static void reject_unknown(struct th_host *h, struct task *t, const char *pool,
                           const char *task)
{
    struct pool *p = find_pool(h, pool);
    if (p == NULL)
        host_answerf(h, t, TH_STATE_REJECTED, TH_ENOENT,
                          "no pool named '%s'", pool);
    else {
        p->stats.finished[TH_STATE_REJECTED]++;
        host_answerf(h, t, TH_STATE_REJECTED, TH_ENOENT,
                          "plugin '%s' of pool '%s' has no task '%s'",
                          p->plugin->name, pool, task);
    }
}

/* A new task for an input to `p` (NULL: no such pool): a large one goes
 * into a memfd its worker reads in place (the host's own, or the
 * submitter's `hf`), unless the pool is shared through a cluster. */
static struct task *new_task(struct th_host *h, const struct pool *p,
                             const void *input, size_t len, int borrow,
                             const struct host_fd *hf)
{
    int local = p != NULL && !(p->cfg.shared && h->cluster);
    if (!local || len < PAYLOAD_FD_MIN)
        return borrow ? task_new_borrowed(&h->tasks, input, len)
                      : task_new(&h->tasks, input, len);
    if (!borrow)
        return task_new_pmfd(&h->tasks, p, input, len);
    struct task *t = task_new_borrowed(&h->tasks, input, len);
    if (t != NULL && hf != NULL) {
        struct payload *pl = t->payload; /* len > TASK_INLINE */
        pl->in_fd = hf->fd;
        pl->out_in_fd = hf->out_ok != 0;
        pl->in_dev = hf->dev;
        pl->in_ino = hf->ino;
    }
    return t;
}

static int submit(th_host *h, const char *pool, const char *task,
                  const void *input, size_t len, const th_submit_opts *opts,
                  th_done_fn done, void *arg, uint64_t *id, int borrow,
                  const struct host_fd *hf)
{
    if (h == NULL || pool == NULL || task == NULL || done == NULL ||
        (input == NULL && len > 0))
        return TH_EINVAL;
    if (h->closing)
        return TH_ECLOSED;
    struct pool *p = find_pool(h, pool);
    struct task *t = new_task(h, p, input, len, borrow, hf);
    if (t == NULL)
        return TH_ENOMEM;
    t->id = ++h->next_id;
    t->done = done;
    t->arg = arg;
    /* The loop's own time: every later time the engine takes (dispatch,
     * answer) comes from the same clock, never earlier. Read afresh from
     * outside the loop; within a turn (a callback submitting the next
     * task) the turn's time serves, which saves a clock read per task. */
    loop_touch_time(h->loop);
    t->submitted = loop_now(h->loop);
    if (task_map_add(&h->tasks, t) < 0) {
        task_free(&h->tasks, t);
        return TH_ENOMEM;
    }
    h->pending++;
    if (id != NULL)
        *id = t->id;
    int idx = p ? plugin_find_task(p->plugin, task) : -1;
    if (idx < 0) {
        reject_unknown(h, t, pool, task);
        return 0;
    }
    t->index = (uint16_t)idx;
    if (opts != NULL) {
        int prio = opts->priority;
        t->priority = (int8_t)(prio > 127 ? 127 : prio < -128 ? -128 : prio);
    }
    t->task_timeout = smaller(p->cfg.task_timeout, opts ? opts->task_timeout : 0);
    t->queue_timeout = smaller(p->cfg.queue_timeout, opts ? opts->queue_timeout : 0);
    int r = p->cfg.shared && h->cluster ? cluster_submit(h->cluster, p, t)
                                        : pool_submit(p, t);
    if (r < 0) { /* overflow = block: not taken */
        task_map_del(&h->tasks, t);
        h->pending--;
        task_free(&h->tasks, t);
    }
    return r;
}

TH_EXPORT int th_host_submit(th_host *h, const char *pool, const char *task,
                             const void *input, size_t len,
                             const th_submit_opts *opts, th_done_fn done,
                             void *arg, uint64_t *id)
{
    return submit(h, pool, task, input, len, opts, done, arg, id, 0, NULL);
}

int host_submit_borrowed(th_host *h, const char *pool, const char *task,
                         const void *input, size_t len,
                         const th_submit_opts *opts, th_done_fn done,
                         void *arg, uint64_t *id)
{
    return submit(h, pool, task, input, len, opts, done, arg, id, 1, NULL);
}

int host_submit_fd(th_host *h, const char *pool, const char *task,
                   const void *input, size_t len, const th_submit_opts *opts,
                   th_done_fn done, void *arg, uint64_t *id,
                   const struct host_fd *hf)
{
    return submit(h, pool, task, input, len, opts, done, arg, id, 1, hf);
}

TH_EXPORT int th_host_cancel(th_host *h, uint64_t id)
{
    if (h == NULL)
        return TH_EINVAL;
    struct task *t = task_map_find(&h->tasks, id);
    if (t == NULL || t->answered)
        return TH_ENOENT;
    if (t->cluster != NULL && h->cluster != NULL &&
        cluster_cancel(h->cluster, t) == 0)
        return 0;
    if (t->pool == NULL || (t->state != TH_QUEUED && t->state != TH_RUNNING))
        return TH_ENOENT;
    pool_cancel(t->pool, t);
    return 0;
}

TH_EXPORT int th_host_on_progress(th_host *h, uint64_t id, th_progress_fn fn,
                                  void *arg)
{
    if (h == NULL)
        return TH_EINVAL;
    struct task *t = task_map_find(&h->tasks, id);
    if (t == NULL || t->answered)
        return TH_ENOENT;
    return task_on_progress(&h->tasks, t, fn, arg);
}

TH_EXPORT int th_host_task_state(const th_host *h, uint64_t id)
{
    if (h == NULL)
        return TH_EINVAL;
    const struct task *t = task_map_find(&h->tasks, id);
    if (t == NULL || t->answered)
        return TH_ENOENT;
    return t->state == TH_RUNNING ? TH_RUNNING : TH_QUEUED;
}

struct call {
    th_result *out;
    int done;
};

static void call_done(const th_result *r, void *arg)
{
    struct call *c = arg;
    *c->out = *r;
    void *copy = malloc(r->len + 1);
    if (copy != NULL) {
        memcpy(copy, r->data, r->len);
        ((char *)copy)[r->len] = '\0';
    }
    c->out->data = copy;
    c->done = 1;
}

/* Runs the call into a whole th_result, then hands the caller the part
 * its struct has room for. */
TH_EXPORT int th_host_call_sized(th_host *h, const char *pool,
                                 const char *task, const void *input,
                                 size_t len, const th_submit_opts *opts,
                                 th_result *result, size_t result_size)
{
    if (result == NULL || result_size < offsetof(th_result, len) + sizeof(size_t))
        return TH_EINVAL;
    if (h == NULL)
        return TH_EINVAL;
    if (h->in_callback)
        return TH_EBUSY; /* it would have to run the loop */
    th_result full;
    memset(&full, 0, sizeof full);
    struct call c = {.out = &full};
    int r;
    do {
        r = th_host_submit(h, pool, task, input, len, opts, call_done, &c, NULL);
        if (r == TH_EBUSY)
            th_host_step(h, 10);
    } while (r == TH_EBUSY);
    while (r >= 0 && !c.done)
        r = th_host_step(h, -1);
    full.size = result_size < sizeof full ? result_size : sizeof full;
    memset(result, 0, full.size);
    if (c.done)
        memcpy(result, &full, full.size);
    if (r < 0)
        return r;
    return result->data == NULL ? TH_ENOMEM : 0;
}

TH_EXPORT void th_result_free(th_result *r)
{
    if (r == NULL)
        return;
    free((void *)r->data);
    r->data = NULL;
    r->len = 0;
}

/* ---- the loop ---- */

TH_EXPORT int th_host_fd(const th_host *h)
{
    return loop_fd(h->loop);
}

TH_EXPORT int th_host_step(th_host *h, int timeout_ms)
{
    if (h == NULL)
        return TH_EINVAL;
    if (h->in_callback)
        return TH_EBUSY; /* the loop does not run inside its own callbacks */
    return loop_run_once(h->loop, timeout_ms);
}

TH_EXPORT size_t th_host_pending(const th_host *h)
{
    return h->pending;
}

TH_EXPORT int th_host_wait(th_host *h, double timeout)
{
    double end = loop_clock() + timeout;
    while (h->pending > 0) {
        int ms = -1;
        if (timeout >= 0) {
            double left = end - loop_clock();
            if (left <= 0)
                return TH_ETIMEDOUT;
            ms = (int)(left * 1000) + 1;
        }
        int r = th_host_step(h, ms);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- reload ---- */

/* The plugins of a new config: reused when the file is the one loaded,
 * loaded afresh otherwise. Nothing of the running host changes here. */
static int load_plugins_aside(struct th_host *h, const struct config *cfg,
                              struct plugin ***out, char *err, size_t errlen)
{
    struct plugin **v = calloc(cfg->nplugins + 1, sizeof *v);
    if (v == NULL)
        return TH_ENOMEM;
    for (size_t i = 0; i < cfg->nplugins; i++) {
        const struct plugin_cfg *pc = &cfg->plugins[i];
        struct plugin *old = find_plugin(h, pc->name);
        if (old != NULL && strcmp(old->path, pc->path) == 0 &&
            !plugin_file_changed(old)) {
            plugin_ref(old);
            v[i] = old;
            continue;
        }
        char why[512];
        int r = plugin_probe(pc->name, pc->path, cfg->host.strict_permissions,
                             host_plugin_timeout(cfg),
                            &v[i], why, sizeof why);
        if (r < 0) {
            set_err(err, errlen, "%s:%d: plugins[%d].path: %s", pc->file,
                    pc->line, pc->index, why);
            for (size_t j = 0; j < i; j++)
                plugin_unref(v[j]);
            free(v);
            return r;
        }
        log_info("plugin %s %s loaded from %s", v[i]->desc.name,
                 v[i]->desc.version, pc->path);
    }
    *out = v;
    return 0;
}

static struct plugin *plugin_in(struct plugin **v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i]->name, name) == 0)
            return v[i];
    return NULL;
}

/* Drops the plugins of a config that was not swapped in. */
static void release_plugins(struct plugin **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        plugin_unref(v[i]);
    free(v);
}

/* Runs every pool's check() of the new config, before anything changes:
 * a refused pool refuses the whole reload. */
static int check_pools_aside(struct th_host *h, const struct config *cfg,
                             struct plugin **v, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->npools; i++) {
        const struct pool_cfg *c = &cfg->pools[i];
        struct plugin *pl = plugin_in(v, cfg->nplugins, c->plugin);
        struct pool *old = find_pool(h, c->name);
        char why[768];
        /* A running pool whose plugin and settings (and user) stay was
         * checked with them already: a reload costs no probe for it. */
        if (old != NULL && !pool_needs_restart(old, c, pl))
            continue;
        int r = host_check_pool(c, pl, cfg->host.strict_permissions,
                                host_plugin_timeout(cfg), why, sizeof why);
        if (r < 0) {
            set_err(err, errlen, "%s:%d: pools[%d]: %s", c->file, c->line,
                    c->index, why);
            return r;
        }
    }
    return 0;
}

static void retire_pool(struct th_host *h, struct pool *p)
{
    pool_list_remove(&h->pools, p);
    pool_retire(p);
    pool_list_push(&h->retired, p);
}

/* Applies one pool of the new config; returns 1 when it was restarted, 2
 * when added, 0 when updated in place (or on error, logged). */
static int apply_pool(struct th_host *h, const struct pool_cfg *c,
                      struct plugin *pl)
{
    struct pool *old = find_pool(h, c->name);
    if (old != NULL && !pool_needs_restart(old, c, pl)) {
        pool_update(old, c);
        return 0;
    }
    struct pool *p = pool_new(h, c, pl);
    if (p == NULL) {
        log_error("pool %s: out of memory at reload; keeping the old one",
                  c->name);
        return 0;
    }
    if (old != NULL) {
        log_info("pool %s: plugin or settings changed: restarting it",
                 c->name);
        pool_take_queue(p, old);
        retire_pool(h, old);
    }
    pool_list_append(&h->pools, p);
    return old != NULL ? 1 : 2;
}

static int in_config(const struct config *cfg, const char *pool)
{
    for (size_t i = 0; i < cfg->npools; i++)
        if (strcmp(cfg->pools[i].name, pool) == 0)
            return 1;
    return 0;
}

/* Swaps in a whole new config: nothing can fail from here but memory. */
static void swap_config(struct th_host *h, struct config *cfg,
                        struct plugin **v)
{
    int counts[3] = {0, 0, 0}, removed = 0;
    struct pool *next;
    for (struct pool *p = h->pools; p != NULL; p = next) {
        next = p->next;
        if (!in_config(cfg, p->cfg.name)) {
            log_info("pool %s: removed from the config: draining it",
                     p->cfg.name);
            retire_pool(h, p);
            removed++;
        }
    }
    for (size_t i = 0; i < cfg->npools; i++) {
        const struct pool_cfg *c = &cfg->pools[i];
        counts[apply_pool(h, c, plugin_in(v, cfg->nplugins, c->plugin))]++;
    }
    for (size_t i = 0; i < h->nplugins; i++)
        plugin_unref(h->plugins[i]);
    free(h->plugins);
    h->plugins = v;
    h->nplugins = cfg->nplugins;
    config_free(h->cfg);
    h->cfg = cfg;
    h->shutdown_timeout = cfg->host.shutdown_timeout;
    if (h->cluster != NULL)
        cluster_sync_pools(h->cluster);
    keep_spare(h);
    log_info("config %s reloaded: %zu pools (%d added, %d restarted, "
             "%d removed, %d kept or resized)",
             cfg->path, cfg->npools, counts[2], counts[1], removed, counts[0]);
}

TH_EXPORT int th_host_reload(th_host *h, const char *path, char *err,
                             size_t errlen)
{
    if (h == NULL || (path == NULL && h->cfg == NULL))
        return TH_EINVAL;
    if (h->closing)
        return TH_ECLOSED;
    char *own = strdup(path ? path : h->cfg->path);
    if (own == NULL)
        return TH_ENOMEM;
    struct config *cfg;
    int r = config_load(own, &cfg, err, errlen);
    free(own);
    if (r < 0)
        return r;
    return host_reload_parsed(h, cfg, err, errlen);
}

int host_reload_parsed(struct th_host *h, struct config *cfg, char *err,
                       size_t errlen)
{
    if (h->closing) {
        config_free(cfg);
        set_err(err, errlen, "the host is shutting down");
        return TH_ECLOSED;
    }
    struct plugin **v = NULL;
    int r = load_plugins_aside(h, cfg, &v, err, errlen);
    if (r == 0 && (r = check_pools_aside(h, cfg, v, err, errlen)) < 0)
        release_plugins(v, cfg->nplugins);
    if (r < 0) {
        config_free(cfg);
        return r;
    }
    swap_config(h, cfg, v);
    loop_wake(h->loop);
    return 0;
}

/* ---- restart ---- */

TH_EXPORT int th_host_restart(th_host *h, const char *pool, int force)
{
    if (h == NULL)
        return TH_EINVAL;
    if (h->closing)
        return TH_ECLOSED;
    if (pool != NULL) {
        struct pool *p = find_pool(h, pool);
        if (p == NULL)
            return TH_ENOENT;
        pool_restart(p, force, RETIRE_SIGNAL);
        return 0;
    }
    for (struct pool *p = h->pools; p != NULL; p = p->next)
        pool_restart(p, force, RETIRE_SIGNAL);
    return 0;
}

/* ---- closing ---- */

static void on_shutdown_timer(struct loop_timer *t)
{
    struct th_host *h =
        (struct th_host *)((char *)t - offsetof(struct th_host, shutdown_timer));
    log_warn("shutdown_timeout (%.3g s) passed: stopping by force",
             h->shutdown_timeout);
    th_host_shutdown(h, TH_CLOSE_FORCE);
}

TH_EXPORT void th_host_shutdown(th_host *h, int how)
{
    if (h == NULL)
        return;
    int force = how == TH_CLOSE_FORCE;
    if (h->closing && (h->closing - 1 == TH_CLOSE_FORCE || !force))
        return;
    h->closing = 1 + (force ? TH_CLOSE_FORCE : TH_CLOSE_GRACEFUL);
    spare_stop(&h->spare);
    if (h->cluster != NULL)
        cluster_shutdown(h->cluster, force);
    for (struct pool *p = h->pools; p != NULL; p = p->next)
        pool_drain(p, force);
    for (struct pool *p = h->retired; p != NULL; p = p->next)
        pool_drain(p, force);
    if (!force && h->shutdown_timeout > 0) {
        h->shutdown_timer.cb = on_shutdown_timer;
        loop_timer_start(h->loop, &h->shutdown_timer, h->shutdown_timeout);
    }
    loop_wake(h->loop);
}

TH_EXPORT int th_host_stopped(const th_host *h)
{
    return h != NULL && h->stopped;
}

static void free_pools(struct pool *p)
{
    while (p != NULL) {
        struct pool *next = p->next;
        pool_free(p);
        p = next;
    }
}

static void host_free(struct th_host *h)
{
    spare_stop(&h->spare);
    cluster_free(h->cluster);
    h->cluster = NULL;
    free_pools(h->pools);
    free_pools(h->retired);
    for (size_t i = 0; i < h->nplugins; i++)
        plugin_unref(h->plugins[i]);
    free(h->plugins);
    bury_workers(h);
    task_table_free(&h->tasks);
    loop_free(h->loop);
    config_free(h->cfg);
    free(h);
}

TH_EXPORT void th_host_close(th_host *h, int how)
{
    if (h == NULL)
        return;
    if (h->in_callback) {
        log_error("th_host_close() called from a task's callback: only "
                  "shutting down; close the host after th_host_step()");
        th_host_shutdown(h, how);
        return;
    }
    th_host_shutdown(h, how);
    while (!h->stopped)
        if (th_host_step(h, 100) < 0)
            break;
    host_end_orphans(h, 2.0);
    host_free(h);
}
