/* load.c - a closed load loop: keep N tasks pending, time every answer.
 *
 * The same loop drives the embedding API and the client library through
 * struct target, so both are measured the same way: a task's latency runs
 * from just before its submit call to the start of its callback, and a new
 * task is submitted from the callback of the one that finished.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define STALL_LIMIT 10.0 /* seconds without an answer: give up */

struct run;

struct slot {
    struct run *run;
    double t0;
};

struct run {
    const struct target *t;
    const char *pool, *task;
    char *input;
    size_t len;
    long ntasks, sent, answered, failed;
    int echo; /* the answer must equal the input */
    int error;
    double *lat;
};

static void on_done(const th_result *r, void *arg);

static int submit_one(struct run *run, struct slot *s)
{
    s->t0 = now_s();
    int r = run->t->submit(run->t->ctx, run->pool, run->task, run->input,
                           run->len, on_done, s);
    if (r < 0) {
        note("submit to %s/%s failed: %s", run->pool, run->task,
             th_strerror(r));
        run->error = r;
        return r;
    }
    run->sent++;
    return 0;
}

/* An echo must give back the input: its length and both ends are
 * compared (all of it would put a second copy into the figures). */
static int same_ends(const struct run *run, const th_result *r)
{
    size_t n = r->len < 16 ? r->len : 16;
    const char *out = r->data;
    return r->len == run->len && memcmp(out, run->input, n) == 0 &&
           memcmp(out + r->len - n, run->input + r->len - n, n) == 0;
}

static void on_done(const th_result *r, void *arg)
{
    struct slot *s = arg;
    struct run *run = s->run;
    double t = now_s();
    if (r->state != TH_STATE_OK) {
        if (run->failed++ == 0)
            note("%s/%s answered %s: %.*s", run->pool, run->task,
                 th_state_name(r->state), (int)r->len, (const char *)r->data);
    } else if (run->echo && !same_ends(run, r)) {
        if (run->failed++ == 0)
            note("%s/%s: the echo differs from the input (%zu bytes of %zu)",
                 run->pool, run->task, r->len, run->len);
    } else {
        run->lat[run->answered - run->failed] = t - s->t0;
    }
    run->answered++;
    if (run->sent < run->ntasks && run->error == 0)
        submit_one(run, s);
}

static char *make_input(size_t len)
{
    char *in = malloc(len ? len : 1);
    if (in == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++)
        in[i] = "0123456789abcdef"[i % 16];
    return in;
}

static void fill_result(const struct run *run, double start, double seconds,
                        struct load_result *out)
{
    long ok = run->answered - run->failed;
    memset(out, 0, sizeof *out);
    out->tasks = ok;
    out->failed = run->failed;
    out->seconds = seconds;
    out->tps = seconds > 0 ? (double)ok / seconds : 0;
    out->mbps = out->tps * (double)run->len / 1e6;
    out->start = start;
    out->end = start + seconds;
    out->p50_us = percentile(run->lat, (size_t)ok, 0.50) * 1e6;
    out->p99_us = percentile(run->lat, (size_t)ok, 0.99) * 1e6;
}

/* Runs the loop until every task is answered; returns 0 or -1. */
static int drive(struct run *run)
{
    double last = now_s();
    long seen = 0;
    while (run->answered < run->ntasks && run->error == 0) {
        if (run->t->step(run->t->ctx, 1000) < 0) {
            note("%s/%s: the loop failed", run->pool, run->task);
            return -1;
        }
        double t = now_s();
        if (run->answered != seen) {
            seen = run->answered;
            last = t;
        } else if (t - last > STALL_LIMIT) {
            note("%s/%s: no answer for %.0f s", run->pool, run->task,
                 STALL_LIMIT);
            return -1;
        }
    }
    return run->error == 0 && run->failed == 0 ? 0 : -1;
}

int load_run(const struct target *t, const char *pool, const char *task,
             size_t len, int inflight, long ntasks, struct load_result *out)
{
    double *lat = malloc((size_t)ntasks * sizeof *lat);
    int rc = lat ? load_run_keep(t, pool, task, len, inflight, ntasks, out,
                                 lat)
                 : -1;
    free(lat);
    return rc;
}

int load_run_keep(const struct target *t, const char *pool, const char *task,
                  size_t len, int inflight, long ntasks,
                  struct load_result *out, double *lat)
{
    struct run run = {.t = t, .pool = pool, .task = task, .len = len,
                      .ntasks = ntasks, .lat = lat,
                      .echo = strcmp(task, "echo") == 0};
    struct slot *slots = calloc((size_t)inflight, sizeof *slots);
    run.input = make_input(len);
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (slots == NULL || run.input == NULL)
        goto out;
    double start = now_s();
    for (int i = 0; i < inflight && run.sent < ntasks; i++) {
        slots[i].run = &run;
        if (submit_one(&run, &slots[i]) < 0)
            goto out;
    }
    rc = drive(&run);
    fill_result(&run, start, now_s() - start, out);
out:
    free(slots);
    free(run.input);
    return rc;
}

/* ---- the embedding API as a target ---- */

static int host_submit(void *ctx, const char *pool, const char *task,
                       const void *input, size_t len, th_done_fn done,
                       void *arg)
{
    return th_host_submit(ctx, pool, task, input, len, NULL, done, arg, NULL);
}

static int host_step(void *ctx, int timeout_ms)
{
    return th_host_step(ctx, timeout_ms);
}

struct target target_host(th_host *h)
{
    struct target t = {h, host_submit, host_step};
    return t;
}
