/* cluster.c - shared pools: ingress, claims, answers, leases (cluster.h).
 *
 * Connections (each a struct rconn on the host's loop):
 * - cmd: every function call (submit, finish, touch, reclaim, cancel,
 *   give back, join, stats), pipelined;
 * - per shared pool, blk: XREADGROUP BLOCK, claiming new tasks, and rep:
 *   XREAD BLOCK on this host's reply stream. Both block for at most
 *   BLOCK_MS, so a deleted key or a lost wake-up never hangs them.
 *
 * A job (struct cjob) is this host's record of one task in the cluster:
 * an ingress job for a task submitted here (the task waits, mapped, for
 * its answer from the reply stream), or an exec job for a task claimed
 * here (run as a local task of the pool whose done-callback posts the
 * answer). A job can outlive its task while a command about it waits for
 * Redis: `refs` counts those, and the job is freed when both are gone.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "cluster.h"
#include "cluster_lua.h"
#include "cluster_redis.h"
#include "config.h"
#include "host.h"
#include "log.h"
#include "plugin.h"
#include "pool.h"
#include "queue.h"

#define BLOCK_MS "1000"
#define BLOCK_STALL 6.0   /* seconds: a blocking read stalled */
#define CMD_STALL 5.0     /* seconds: the command connection stalled */
#define REPLY_BATCH "512" /* reply entries read per XREAD */
#define FULL_RETRY 0.005  /* seconds: overflow = block, retry entering */
#define SINCE_MARGIN_MS 2000 /* a resubmit looks this far before the first */
#define BATCH_MAX 64 /* tasks per th2_submit_many / th2_finish_many */
#define PREFETCH 1        /* tasks claimed beyond what workers can start */
#define PREFETCH_MAX 64   /* ... when they are short (prefetch()) */
#define HOST_GONE 600.0   /* seconds without heartbeat before a host's
                           * consumer is removed */

enum { J_INGRESS = 1, J_EXEC };
enum { IN_WAIT = 1, IN_SENT, IN_QUEUED };

struct cpool;

struct cjob {
    struct cjob *next, *prev; /* on one list of its pool, or none */
    struct cjob **list;       /* head of that list */
    struct cpool *cp;
    struct task *t;           /* NULL once answered */
    int kind;
    int state;                /* ingress: IN_* */
    int refs;                 /* commands waiting that name this job */
    int cancel;               /* ingress: cancel once its submit returns */
    int stop;                 /* exec: lost its claim or answered elsewhere */
    int give;                 /* exec: given back, no answer to post */
    int inref;                /* exec: the input was read from in:<tid>,
                               * which the answer deletes */
    char eid[48];             /* entry id in the queue stream, "<p>/<id>"
                               * in the band of priority p != 0 */
    char tid[48];             /* "<ingress host id>-<local task id>" */
    int64_t sent_ms;          /* ingress: Redis time of the first submit
                               * sent, 0 before: a later one may find the
                               * task entered already */
    int retry;                /* ingress: this submit is not the first */
    th_timer *timer;          /* ingress: queue_timeout, or retry */
    char *rt;                 /* exec: reply stream of the ingress */
    char *task;               /* exec: task name */
    long tto, qto;            /* exec: limits in ms from the entry */
    int fin_state, fin_code;  /* exec: the answer to post */
    uint64_t run_us;
    char *data;
    size_t len;
};

/* Commands of many tasks sent as one function call. A job is sent at
 * once when no batch of its kind is on its way (one task at a time waits
 * for nothing); else it joins the next batch, sent when the one on its
 * way comes back, or once BATCH_MAX are gathered. */
struct batch {
    int n;
    int flying; /* batches sent and not answered */
    struct cjob *job[BATCH_MAX];
};

/* A batch on its way: the private data of its reply's callback. */
struct sent {
    struct cpool *cp;
    double at; /* when sent */
    int n;
    struct cjob *job[];
};

struct cpool {
    struct cluster *cl;
    struct cpool *next;
    char *name;
    char *q, *pre, *rep; /* keys */
    char *desc;          /* what this host runs: plugin, version, tasks */
    struct rconn blk, rep_conn;
    int joined, refused, joining;
    char *refusal;
    int claiming, reading;
    int nbands;           /* priority bands in use (cluster_lua.h), */
    int band[256];        /* ... highest first, 0 left out */
    int wait;             /* bands in use and none had a task: the next
                           * claim blocks on all of them */
    int resubmit;         /* Redis lost its data: submit the tasks taken
                           * in here again once joined */
    char last[48];        /* last reply entry read */
    long held;            /* exec jobs holding a task here */
    struct cjob *exec;    /* exec jobs */
    struct cjob *ingress; /* ingress jobs */
    struct cjob *waiting; /* ingress jobs waiting to enter */
    long nwaiting;
    struct cjob *unsent;  /* exec jobs whose answer waits for Redis */
    long nunsent;
    double rtt_avg;       /* seconds, a batch of answers to Redis and back */
    double run_avg;       /* seconds a claimed task runs, on average */
    struct batch subs;    /* ingress jobs to submit */
    struct batch fins;    /* exec jobs whose answers to post */
    /* this host */
    uint64_t submitted, claimed, reclaimed, finished, lost_claims, given;
    /* the cluster, as of the last heartbeat */
    long long c_queued, c_claimed, c_dead, c_redelivered, c_dead_total;
    char *c_hosts; /* "id:claimed id:claimed ..." */
};

struct cluster {
    struct th_host *h;
    char *redis, *name, *password;
    double lease, heartbeat, result_ttl;
    int max_attempts;
    struct rconn cmd;
    th_timer *beat;
    int flush_due;        /* batches gathered: cluster_after() sends */
    long long hostid;     /* 0 until th2_hello answered */
    char me[32];          /* hostid as text: the consumer name */
    char epoch[64];       /* of the data set in Redis, "" before hello */
    int greeted, greeting; /* th2_hello answered on this connection, sent */
    int64_t clock_skew;   /* Redis ms minus local ms */
    double up_at;         /* when the command connection last came up */
    int loaded;           /* functions loaded on this connection */
    int closing;          /* 0, 1 graceful, 2 forced */
    long inflight;        /* finish and give-back commands waiting */
    struct cpool *pools;
};

static void claim(struct cpool *cp);
static void read_replies(struct cpool *cp);
static void send_submit(struct cjob *j);
static void send_finish(struct cjob *j);
static void join(struct cpool *cp);
static void hello(struct cluster *cl);
static void load_functions(struct cluster *cl);

/* ---- small helpers ---- */

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An average that follows the recent samples. */
static void ewma(double *avg, double sample)
{
    *avg = *avg > 0 ? 0.8 * *avg + 0.2 * sample : sample;
}

static int is_str(const redisReply *r)
{
    return r != NULL &&
           (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static int is_arr(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ARRAY;
}

static const char *err_of(const redisReply *r)
{
    if (r == NULL)
        return "the connection to the broker was lost";
    if (r->type == REDIS_REPLY_ERROR)
        return r->str;
    return NULL;
}

static long long num(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (is_str(r))
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* The value of field `name` among the pairs [from, to) of f. */
static const redisReply *field_in(const redisReply *f, size_t from, size_t to,
                                  const char *name)
{
    for (size_t i = from; i + 1 < to; i += 2)
        if (is_str(f->element[i]) && strcmp(f->element[i]->str, name) == 0)
            return f->element[i + 1];
    return NULL;
}

/* The same in a whole stream entry's flat field array. */
static const redisReply *field(const redisReply *f, const char *name)
{
    return is_arr(f) ? field_in(f, 0, f->elements, name) : NULL;
}

static th_state state_of(const char *name)
{
    for (int s = TH_STATE_OK; s < TH_STATE_COUNT; s++)
        if (strcmp(th_state_name((th_state)s), name) == 0)
            return (th_state)s;
    return TH_STATE_ERROR;
}

static struct pool *pool_of(const struct cpool *cp)
{
    return host_find_pool(cp->cl->h, cp->name);
}

static struct cpool *cpool_find(const struct cluster *cl, const char *name)
{
    for (struct cpool *cp = cl->pools; cp != NULL; cp = cp->next)
        if (strcmp(cp->name, name) == 0)
            return cp;
    return NULL;
}

/* An FCALL of function `fn` on the pool's queue key with n more args. */
/* Adds priority band p (not 0) to those cp knows of, highest first. */
static void band_add(struct cpool *cp, int p)
{
    int i = 0;
    if (p == 0 || p < -128 || p > 127)
        return;
    while (i < cp->nbands && cp->band[i] > p)
        i++;
    if ((i < cp->nbands && cp->band[i] == p) || cp->nbands == 256)
        return;
    memmove(&cp->band[i + 1], &cp->band[i],
            (size_t)(cp->nbands - i) * sizeof cp->band[0]);
    cp->band[i] = p;
    cp->nbands++;
}

/* Sets the bands in use from a reply's list of them. */
static void bands_set(struct cpool *cp, const redisReply *list)
{
    if (!is_arr(list))
        return;
    cp->nbands = 0;
    for (size_t i = 0; i < list->elements; i++)
        band_add(cp, (int)num(list->element[i]));
}

static int fcall(struct cpool *cp, rconn_reply_fn cb, void *priv,
                 const char *fn, int n, const char **args, const size_t *lens)
{
    const char *argv[32];
    size_t alen[32];
    if (n + 4 > 32)
        return TH_EINVAL;
    argv[0] = "FCALL";
    argv[1] = fn;
    argv[2] = "1";
    argv[3] = cp->q;
    for (int i = 0; i < 4; i++)
        alen[i] = strlen(argv[i]);
    for (int i = 0; i < n; i++) {
        argv[4 + i] = args[i];
        alen[4 + i] = lens ? lens[i] : strlen(args[i]);
    }
    return rconn_cmd(&cp->cl->cmd, cb, priv, n + 4, argv, alen);
}

/* ---- jobs ---- */

static void list_add(struct cjob **head, struct cjob *j)
{
    j->prev = NULL;
    j->next = *head;
    if (*head != NULL)
        (*head)->prev = j;
    *head = j;
    j->list = head;
}

static void list_del(struct cjob *j)
{
    if (j->list == NULL)
        return;
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        *j->list = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    j->next = j->prev = NULL;
    j->list = NULL;
}

static struct cjob *job_new(struct cpool *cp, int kind)
{
    struct cjob *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->cp = cp;
    j->kind = kind;
    return j;
}

/* Frees j once neither its task nor a waiting command refers to it. */
static void job_release(struct cjob *j)
{
    if (j->t != NULL || j->refs > 0 || j->list != NULL)
        return;
    th_timer_free(j->timer);
    free(j->rt);
    free(j->task);
    free(j->data);
    free(j);
}

static void job_unref(struct cjob *j)
{
    j->refs--;
    job_release(j);
}

/* ---- ingress: answering the caller ---- */

/* Gives the ingress task of j its final answer now (inside the loop). */
static void ingress_answer(struct cjob *j, th_state st, int code,
                           const void *data, size_t len, double run_s)
{
    struct task *t = j->t;
    if (t == NULL)
        return;
    struct th_host *h = j->cp->cl->h;
    j->t = NULL;
    t->cluster = NULL;
    th_timer_stop(j->timer);
    list_del(j);
    if (j->state == IN_WAIT && j->cp->nwaiting > 0)
        j->cp->nwaiting--;
    double at = th_host_now(h);
    if (run_s > 0 && at - run_s > t->submitted)
        t->started = at - run_s;
    host_answer(h, t, st, code, data, len);
    job_release(j);
}

static void ingress_answerf(struct cjob *j, th_state st, int code,
                            const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void ingress_answerf(struct cjob *j, th_state st, int code,
                            const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    ingress_answer(j, st, code, msg, (size_t)n, 0);
}

static void reject_unreachable(struct cjob *j)
{
    struct cluster *cl = j->cp->cl;
    ingress_answerf(j, TH_STATE_REJECTED, TH_EIO,
                    "shared pool '%s': the cluster's broker redis %s is "
                    "unreachable%s%s",
                    j->cp->name, cl->redis, cl->cmd.err[0] ? ": " : "",
                    cl->cmd.err);
}

/* ---- ingress: entering the queue ---- */

static void wait_to_enter(struct cjob *j)
{
    j->state = IN_WAIT;
    if (j->list != &j->cp->waiting) {
        list_del(j);
        list_add(&j->cp->waiting, j);
        j->cp->nwaiting++;
    }
}

static void on_cancelled(struct rconn *c, void *r, void *priv);

static void send_cancel(struct cjob *j, const char *state, int code, int mode)
{
    struct cpool *cp = j->cp;
    char ttl[32], cs[16], ms[4];
    snprintf(ttl, sizeof ttl, "%.0f", cp->cl->result_ttl * 1000);
    snprintf(cs, sizeof cs, "%d", code);
    snprintf(ms, sizeof ms, "%d", mode);
    const char *a[] = {cp->pre, j->eid, j->tid, state, cs, ttl, ms};
    if (fcall(cp, on_cancelled, j, "th2_cancel", 7, a, NULL) == 0) {
        j->refs++;
        return;
    }
    if (mode == 1) /* broker down: the caller hears now */
        ingress_answerf(j, TH_STATE_CANCELLED, TH_ECANCELED, "cancelled");
}

static void on_cancelled(struct rconn *c, void *r, void *priv)
{
    struct cjob *j = priv;
    redisReply *reply = r;
    (void)c;
    if (reply == NULL && j->t != NULL && j->cancel == 1)
        ingress_answerf(j, TH_STATE_CANCELLED, TH_ECANCELED, "cancelled");
    else if (reply != NULL && num(reply) == 1 && j->cancel == 1)
        ingress_answerf(j, TH_STATE_CANCELLED, TH_ECANCELED, "cancelled");
    else if (reply != NULL && num(reply) == 1)
        ingress_answerf(j, TH_STATE_TIMEOUT, TH_ETIMEDOUT,
                        "waited longer than queue_timeout (%.3g s) for a "
                        "worker of the cluster",
                        j->t ? j->t->queue_timeout : 0.0);
    job_unref(j);
}

/* queue_timeout of an ingress task: one that never entered is rejected
 * (the broker stayed away); one in the queue is expired if no host has
 * claimed it yet (the claiming host applies what is left otherwise). */
static void on_queue_timeout(th_timer *tm, void *arg)
{
    struct cjob *j = arg;
    (void)tm;
    if (j->t == NULL)
        return;
    if (j->state == IN_WAIT) {
        if (!j->cp->cl->cmd.up)
            reject_unreachable(j);
        else
            ingress_answerf(j, TH_STATE_TIMEOUT, TH_ETIMEDOUT,
                            "waited longer than queue_timeout (%.3g s) to "
                            "enter the full queue of shared pool '%s'",
                            j->t->queue_timeout, j->cp->name);
        return;
    }
    if (j->state == IN_QUEUED)
        send_cancel(j, "timeout", TH_ETIMEDOUT, 2);
}

static void on_retry_enter(th_timer *tm, void *arg)
{
    struct cjob *j = arg;
    (void)tm;
    if (j->t != NULL && j->state == IN_WAIT && j->cp->cl->cmd.up)
        send_submit(j);
}

static void arm_queue_timeout(struct cjob *j)
{
    struct task *t = j->t;
    if (t->queue_timeout <= 0)
        return;
    th_timer_start(j->timer, t->submitted + t->queue_timeout -
                                 th_host_now(j->cp->cl->h), 0);
}

/* The reply to the submit of j (NULL: lost with the connection). */
/* The queue of the shared pool was full when j came: it waits and tries
 * again (overflow = block), or is told. */
static void refused_full(struct cjob *j, long long queued)
{
    struct cpool *cp = j->cp;
    struct pool *p = pool_of(cp);
    if (p == NULL || p->cfg.overflow != OVERFLOW_BLOCK) {
        ingress_answerf(j, TH_STATE_REJECTED, TH_EFULL,
                        "queue of shared pool '%s' is full (%lld tasks in "
                        "the cluster)",
                        cp->name, queued);
        return;
    }
    wait_to_enter(j);
    th_timer_stop(j->timer);
    th_timer_free(j->timer);
    j->timer = NULL;
    if (th_timer_new(cp->cl->h, on_retry_enter, j, &j->timer) == 0)
        th_timer_start(j->timer, FULL_RETRY, 0);
}

static void submitted(struct cjob *j, const redisReply *reply)
{
    struct cpool *cp = j->cp;
    j->refs--;
    if (j->t == NULL) {
        job_release(j);
        return;
    }
    if (reply == NULL) {
        /* It may or may not have entered. Waiting tasks try again with the
         * same tid; the others are told now. */
        if (j->t->queue_timeout > 0)
            wait_to_enter(j);
        else
            reject_unreachable(j);
        return;
    }
    if (err_of(reply) || !is_arr(reply) || reply->elements < 2 ||
        !is_str(reply->element[0])) {
        ingress_answerf(j, TH_STATE_REJECTED, TH_EIO,
                        "shared pool '%s': the broker refused the task: %s",
                        cp->name, err_of(reply) ? err_of(reply) : "bad reply");
        return;
    }
    if (strcmp(reply->element[0]->str, "full") == 0) {
        refused_full(j, num(reply->element[1]));
        return;
    }
    snprintf(j->eid, sizeof j->eid, "%s", reply->element[1]->str);
    if (strchr(j->eid, '/') != NULL)
        band_add(cp, atoi(j->eid));
    j->state = IN_QUEUED;
    list_del(j);
    list_add(&cp->ingress, j);
    cp->submitted++;
    if (j->cancel) {
        send_cancel(j, "cancelled", TH_ECANCELED, 1);
        return;
    }
    th_timer_free(j->timer);
    j->timer = NULL;
    if (th_timer_new(cp->cl->h, on_queue_timeout, j, &j->timer) == 0)
        arm_queue_timeout(j);
}

static void flush_submits(struct cpool *cp);

static void on_submitted(struct rconn *c, void *r, void *priv)
{
    struct sent *b = priv;
    struct cpool *cp = b->cp;
    const redisReply *reply = r;
    (void)c;
    cp->subs.flying--;
    for (int i = 0; i < b->n; i++) {
        const redisReply *e = reply;
        if (is_arr(reply))
            e = (size_t)i < reply->elements ? reply->element[i] : NULL;
        submitted(b->job[i], e);
    }
    free(b);
    if (reply != NULL)
        flush_submits(cp);
}

static struct sent *sent_new(struct cpool *cp, struct batch *bt)
{
    struct sent *b = malloc(sizeof *b + (size_t)bt->n * sizeof b->job[0]);
    if (b == NULL)
        return NULL;
    b->cp = cp;
    b->at = th_host_now(cp->cl->h);
    b->n = bt->n;
    memcpy(b->job, bt->job, (size_t)bt->n * sizeof b->job[0]);
    bt->n = 0;
    return b;
}

/* The text arguments of one job's submit or finish. */
struct jtext {
    char a[4][32];
};

/* The arguments of a call of th2_submit_many or th2_finish_many: FCALL,
 * its name, the key, the count, then each job's. */
struct call {
    const char **argv;
    size_t *alen;
    struct jtext *tx;
    int argc;
};

static int call_new(struct call *c, const struct cpool *cp, const char *fn,
                    int nshared, const char *const *shared, int per_job,
                    int n, char *count, size_t countlen)
{
    c->argc = 5 + nshared + per_job * n;
    c->argv = malloc((size_t)c->argc * sizeof *c->argv);
    c->alen = malloc((size_t)c->argc * sizeof *c->alen);
    c->tx = malloc((size_t)n * sizeof *c->tx + 1);
    if (c->argv == NULL || c->alen == NULL || c->tx == NULL)
        return -1;
    snprintf(count, countlen, "%d", n);
    const char *head[] = {"FCALL", fn, "1", cp->q, count};
    for (int k = 0; k < 5 + nshared; k++) {
        c->argv[k] = k < 5 ? head[k] : shared[k - 5];
        c->alen[k] = strlen(c->argv[k]);
    }
    return 0;
}

static void call_free(struct call *c)
{
    free(c->argv);
    free(c->alen);
    free(c->tx);
}

/* Sends call c of batch b (when `ok`: its arguments were built) with
 * reply callback cb; if it cannot go, each job hears `lost` with no reply.
 * Frees b and c either way. */
static void send_call(struct cpool *cp, struct batch *bt, struct sent *b,
                      struct call *c, int ok, rconn_reply_fn cb,
                      void (*lost)(struct cjob *, const redisReply *))
{
    if (ok && rconn_cmd(&cp->cl->cmd, cb, b, c->argc, c->argv, c->alen) == 0) {
        bt->flying++;
        b = NULL;
    }
    for (int i = 0; b != NULL && i < b->n; i++)
        lost(b->job[i], NULL);
    free(b);
    call_free(c);
}

/* Puts the arguments of job i's submit (th2_submit's, after the shared
 * ones) into c. */
static void submit_args(struct call *c, int i, struct cjob *j)
{
    struct cpool *cp = j->cp;
    struct pool *p = pool_of(cp);
    struct task *t = j->t;
    struct jtext *x = &c->tx[i];
    snprintf(x->a[0], sizeof x->a[0], "%.0f", t ? t->task_timeout * 1000 : 0);
    snprintf(x->a[1], sizeof x->a[1], "%.0f", t ? t->queue_timeout * 1000 : 0);
    /* A submit whose reply was lost may have entered: the next one names
     * the time to look from (a margin for clock steps), so that the task
     * does not enter twice. */
    x->a[2][0] = '\0';
    if (j->retry)
        snprintf(x->a[2], sizeof x->a[2], "%" PRId64,
                 j->sent_ms - SINCE_MARGIN_MS);
    x->a[3][0] = '\0';
    if (t && t->priority != 0)
        snprintf(x->a[3], sizeof x->a[3], "%d", t->priority);
    const char *v[] = {j->tid, t && p ? p->plugin->tasks[t->index].name : "",
                       cp->rep, x->a[0], x->a[1], t ? task_data(t) : "",
                       x->a[2], x->a[3]};
    for (int m = 0, k = 5 + 4 + 8 * i; m < 8; m++, k++) {
        c->argv[k] = v[m] ? v[m] : "";
        c->alen[k] = m == 5 && t ? task_len(t) : strlen(c->argv[k]);
    }
}

/* Sends the gathered submits as one th2_submit_many. */
static void flush_submits(struct cpool *cp)
{
    struct cluster *cl = cp->cl;
    struct pool *p = pool_of(cp);
    if (cp->subs.n == 0)
        return;
    struct sent *b = sent_new(cp, &cp->subs);
    struct call c = {0};
    char n[16], maxq[32], ovf[8], ttl[32];
    snprintf(maxq, sizeof maxq, "%ld", p ? p->cfg.max_queue : 0);
    snprintf(ovf, sizeof ovf, "%d", p ? p->cfg.overflow : 0);
    snprintf(ttl, sizeof ttl, "%.0f", cl->result_ttl * 1000);
    const char *const shared[4] = {cp->pre, maxq, ovf, ttl};
    int ok = b != NULL && call_new(&c, cp, "th2_submit_many", 4, shared, 8,
                                   b->n, n, sizeof n) == 0;
    for (int i = 0; ok && i < b->n; i++)
        submit_args(&c, i, b->job[i]);
    send_call(cp, &cp->subs, b, &c, ok, on_submitted, submitted);
}

/* Has the batches sent at the end of this turn of the loop. */
static void arm_flush(struct cluster *cl)
{
    if (!cl->flush_due) {
        cl->flush_due = 1;
        loop_wake(cl->h->loop);
    }
}

static void send_submit(struct cjob *j)
{
    struct cpool *cp = j->cp;
    struct cluster *cl = cp->cl;
    struct task *t = j->t;
    snprintf(j->tid, sizeof j->tid, "%lld-%" PRIu64, cl->hostid, t->id);
    list_del(j);
    if (j->state == IN_WAIT && cp->nwaiting > 0)
        cp->nwaiting--;
    list_add(&cp->ingress, j);
    j->state = IN_SENT;
    j->refs++;
    j->retry = j->sent_ms > 0;
    if (j->sent_ms == 0)
        j->sent_ms = wall_ms() + cl->clock_skew;
    cp->subs.job[cp->subs.n++] = j;
    if (cp->subs.flying == 0 || cp->subs.n == BATCH_MAX)
        flush_submits(cp);
    else
        arm_flush(cl);
}

/* Defers an answer given inside th_host_submit(): callbacks never nest in
 * API calls. */
static void reject_now(struct th_host *h, struct task *t, int code,
                       const char *why)
{
    host_answerf(h, t, TH_STATE_REJECTED, code, "%s", why);
}

int cluster_submit(struct cluster *cl, struct pool *p, struct task *t)
{
    struct cpool *cp = cpool_find(cl, p->cfg.name);
    t->pool = p;
    t->state = TH_QUEUED;
    if (cp == NULL || cp->refused) {
        reject_now(cl->h, t, TH_ECONFIG,
                   cp && cp->refusal ? cp->refusal
                                     : "the shared pool is not in the cluster");
        return 0;
    }
    if (p->cfg.overflow == OVERFLOW_BLOCK && cp->nwaiting > 0 && cl->cmd.up)
        return TH_EBUSY;
    struct cjob *j = job_new(cp, J_INGRESS);
    if (j == NULL || th_timer_new(cl->h, on_queue_timeout, j, &j->timer) < 0) {
        free(j);
        reject_now(cl->h, t, TH_ENOMEM, "out of memory");
        return 0;
    }
    j->t = t;
    t->cluster = j;
    if (cl->cmd.up && cl->hostid != 0 && cp->joined) {
        send_submit(j);
        return 0;
    }
    if (t->queue_timeout <= 0) {
        char why[400];
        snprintf(why, sizeof why,
                 "shared pool '%s': the cluster's broker redis %s is "
                 "unreachable%s%s",
                 cp->name, cl->redis, cl->cmd.err[0] ? ": " : "", cl->cmd.err);
        t->cluster = NULL;
        j->t = NULL;
        job_release(j);
        reject_now(cl->h, t, TH_EIO, why);
        return 0;
    }
    wait_to_enter(j);
    arm_queue_timeout(j);
    return 0;
}

int cluster_cancel(struct cluster *cl, struct task *t)
{
    struct cjob *j = t->cluster;
    (void)cl;
    if (j == NULL || j->kind != J_INGRESS)
        return TH_ENOENT;
    if (j->cancel)
        return 0;
    j->cancel = 1;
    if (j->state == IN_WAIT) {
        struct th_host *h = j->cp->cl->h;
        list_del(j);
        if (j->cp->nwaiting > 0)
            j->cp->nwaiting--;
        th_timer_stop(j->timer);
        j->t = NULL;
        t->cluster = NULL;
        job_release(j);
        host_answerf(h, t, TH_STATE_CANCELLED, TH_ECANCELED,
                          "cancelled");
        return 0;
    }
    if (j->state == IN_QUEUED)
        send_cancel(j, "cancelled", TH_ECANCELED, 1);
    return 0; /* IN_SENT: cancelled once its submit returns */
}

/* ---- ingress: the reply stream ---- */

static void ignore_reply(struct rconn *c, void *r, void *priv)
{
    (void)c, (void)r, (void)priv;
}

struct outref {
    struct cjob *j;
    th_state st;
    int code;
    double run_s;
    char *key;
};

static void on_outref(struct rconn *c, void *r, void *priv)
{
    struct outref *o = priv;
    redisReply *reply = r;
    if (is_str(reply))
        ingress_answer(o->j, o->st, o->code, reply->str, reply->len, o->run_s);
    else if (reply != NULL)
        ingress_answerf(o->j, TH_STATE_ERROR, TH_EIO,
                        "the task's output expired in the broker");
    if (reply != NULL) {
        const char *argv[] = {"DEL", o->key};
        rconn_cmd(c, ignore_reply, NULL, 2, argv, NULL);
    }
    job_unref(o->j);
    free(o->key);
    free(o);
}

/* Takes the answer in the fields [from, to) of a reply entry. */
static void take_reply(struct cpool *cp, const redisReply *f, size_t from,
                       size_t to)
{
    struct cluster *cl = cp->cl;
    const redisReply *tid = field_in(f, from, to, "tid");
    const redisReply *st = field_in(f, from, to, "st");
    if (!is_str(tid) || !is_str(st))
        return;
    char *dash;
    long long host = strtoll(tid->str, &dash, 10);
    if (host != cl->hostid || *dash != '-')
        return;
    struct task *t = task_map_find(&cl->h->tasks, strtoull(dash + 1, NULL, 10));
    struct cjob *j = t ? t->cluster : NULL;
    if (j == NULL || j->kind != J_INGRESS || strcmp(j->tid, tid->str) != 0) {
        log_debug("cluster: pool %s: answer of task %s dropped: %s",
                  cp->name, tid->str,
                  t == NULL ? "no such task" : "answered already");
        return; /* answered already (cancelled, or a duplicate) */
    }
    th_state state = state_of(st->str);
    int code = (int)num(field_in(f, from, to, "code"));
    double run_s = (double)num(field_in(f, from, to, "run")) / 1e6;
    const redisReply *d = field_in(f, from, to, "d");
    if (field_in(f, from, to, "outref") == NULL) {
        ingress_answer(j, state, code, is_str(d) ? d->str : "",
                       is_str(d) ? d->len : 0, run_s);
        return;
    }
    struct outref *o = calloc(1, sizeof *o);
    if (o == NULL)
        return;
    *o = (struct outref){j, state, code, run_s,
                         xasprintf("%sout:%s", cp->pre, tid->str)};
    const char *argv[] = {"GET", o->key};
    if (o->key == NULL || rconn_cmd(&cl->cmd, on_outref, o, 2, argv, NULL) < 0) {
        free(o->key);
        free(o);
        ingress_answerf(j, TH_STATE_ERROR, TH_EIO,
                        "the task's output could not be fetched from the "
                        "broker");
        return;
    }
    j->refs++;
}

/* Takes the answers of one reply entry, each from its "tid" on. */
static void take_replies(struct cpool *cp, const redisReply *f)
{
    size_t from = 0;
    if (!is_arr(f))
        return;
    for (size_t i = 2; i + 1 < f->elements; i += 2) {
        if (is_str(f->element[i]) && strcmp(f->element[i]->str, "tid") == 0) {
            take_reply(cp, f, from, i);
            from = i;
        }
    }
    take_reply(cp, f, from, f->elements);
}

/* Removes the answers read up to entry `last` from this host's reply
 * stream: a trim from its head walks the stream once, where deleting
 * each entry would seek it in its node. Stream ids only grow, so all
 * before `last` was read. */
static void trim_replies(struct cpool *cp, struct rconn *c, const char *last)
{
    unsigned long long ms, seq;
    char min[48];
    if (sscanf(last, "%llu-%llu", &ms, &seq) != 2)
        return;
    snprintf(min, sizeof min, "%llu-%llu", ms, seq + 1);
    const char *argv[] = {"XTRIM", cp->rep, "MINID", min};
    rconn_cmd(c, ignore_reply, NULL, 4, argv, NULL);
}

static void on_replies(struct rconn *c, void *r, void *priv)
{
    struct cpool *cp = priv;
    redisReply *reply = r;
    cp->reading = 0;
    if (reply == NULL)
        return; /* lost: read again once it is back */
    if (is_arr(reply) && reply->elements > 0 && is_arr(reply->element[0]) &&
        reply->element[0]->elements == 2) {
        const redisReply *ents = reply->element[0]->element[1];
        const char *last = NULL;
        for (size_t i = 0; is_arr(ents) && i < ents->elements; i++) {
            const redisReply *e = ents->element[i];
            if (!is_arr(e) || e->elements != 2 || !is_str(e->element[0]))
                continue;
            snprintf(cp->last, sizeof cp->last, "%s", e->element[0]->str);
            take_replies(cp, e->element[1]);
            last = e->element[0]->str;
        }
        if (last != NULL)
            trim_replies(cp, c, last);
    }
    read_replies(cp);
}

static void read_replies(struct cpool *cp)
{
    if (cp->reading || !cp->rep_conn.up || !cp->joined || cp->refused)
        return;
    const char *argv[] = {"XREAD", "COUNT", REPLY_BATCH, "BLOCK", BLOCK_MS,
                          "STREAMS", cp->rep, cp->last};
    if (rconn_cmd(&cp->rep_conn, on_replies, cp, 8, argv, NULL) == 0)
        cp->reading = 1;
}

/* ---- exec: running claimed tasks ---- */

/* Tasks this host may claim now: what its workers can start (a short
 * task travels several to a worker), less what it holds, plus one. */
/* Tasks claimed beyond what the workers can start now: what they finish
 * while a claim travels to Redis and back, so that short tasks do not
 * leave workers idle between claims; at least PREFETCH (tasks of a
 * millisecond or more), at most PREFETCH_MAX. */
static long prefetch(const struct cpool *cp, const struct pool *p)
{
    if (cp->run_avg <= 0 || cp->rtt_avg <= 0)
        return PREFETCH;
    double n = (double)p->cfg.max_workers * cp->rtt_avg / cp->run_avg;
    return n < PREFETCH ? PREFETCH : n > PREFETCH_MAX ? PREFETCH_MAX
                                                      : (long)n + ((long)n < n);
}

static long free_slots(const struct cpool *cp)
{
    const struct pool *p = pool_of(cp);
    if (p == NULL || p->failed || p->draining || cp->cl->closing)
        return 0;
    long cap = (long)p->cfg.max_workers * (long)pool_depth(p);
    return cap + prefetch(cp, p) - cp->held;
}

static void exec_post(struct cjob *j, th_state st, int code, const void *data,
                      size_t len, uint64_t run_us)
{
    j->fin_state = st;
    j->fin_code = code;
    j->run_us = run_us;
    j->data = malloc(len + 1);
    if (j->data != NULL) {
        memcpy(j->data, data, len);
        j->data[len] = '\0';
        j->len = len;
    }
    send_finish(j);
}

static void exec_postf(struct cjob *j, th_state st, int code, const char *msg)
{
    exec_post(j, st, code, msg, strlen(msg), 0);
}

static void on_given(struct rconn *c, void *r, void *priv)
{
    struct cluster *cl = priv;
    (void)c, (void)r;
    cl->inflight--;
}

/* Gives claimed entries back at once (shutdown, or a pool gone). */
static void give_back(struct cpool *cp, const char **ids, int n)
{
    struct cluster *cl = cp->cl;
    char lease[32];
    snprintf(lease, sizeof lease, "%.0f", cl->lease * 1000);
    const char *a[28];
    int k = 0;
    a[k++] = lease;
    for (int i = 0; i < n; i++) {
        a[k++] = ids[i];
        if (k == 28 || i == n - 1) {
            if (fcall(cp, on_given, cl, "th2_giveback", k, a, NULL) == 0)
                cl->inflight++;
            cp->given += (uint64_t)(k - 1);
            k = 1;
        }
    }
}

static void on_exec_done(const th_result *r, void *arg)
{
    struct cjob *j = arg;
    struct cpool *cp = j->cp;
    struct cluster *cl = cp->cl;
    j->t = NULL;
    list_del(j);
    cp->held--;
    if (!j->give && cl->closing == 2 && r->state == TH_STATE_CANCELLED &&
        !j->stop) {
        /* Killed by a forced shutdown, not by its caller: another host
         * runs it. */
        const char *id = j->eid;
        give_back(cp, &id, 1);
        j->give = 1;
    }
    if (j->give) {
        job_release(j);
        return;
    }
    if (r->state == TH_STATE_OK || r->state == TH_STATE_ERROR)
        ewma(&cp->run_avg, r->run_time > 1e-6 ? r->run_time : 1e-6);
    exec_post(j, r->state, r->code, r->data, r->len,
              (uint64_t)(r->run_time * 1e6));
    claim(cp);
}

/* The time an entry entered, from its id. */
static int64_t entry_ms(const char *eid)
{
    const char *slash = strchr(eid, '/');
    return strtoll(slash ? slash + 1 : eid, NULL, 10);
}

/* The priority of a task from its entry id (band_name()). */
static int entry_priority(const char *eid)
{
    return strchr(eid, '/') != NULL ? atoi(eid) : 0;
}

/* Runs the task of exec job j as a local task of the pool. */
static void exec_run(struct cjob *j, const char *input, size_t len)
{
    struct cpool *cp = j->cp;
    struct cluster *cl = cp->cl;
    struct th_host *h = cl->h;
    struct pool *p = pool_of(cp);
    int idx = p ? plugin_find_task(p->plugin, j->task) : -1;
    if (idx < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "shared pool '%s' on host %s has no task '%s'",
                 cp->name, cl->me, j->task);
        exec_postf(j, TH_STATE_REJECTED, TH_ENOENT, msg);
        return;
    }
    double left = 0;
    if (j->qto > 0) {
        int64_t age = wall_ms() + cl->clock_skew - entry_ms(j->eid);
        left = (double)(j->qto - age) / 1000.0;
        if (left <= 0) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "waited longer than queue_timeout (%.3g s) for a worker "
                     "of the cluster",
                     (double)j->qto / 1000.0);
            exec_postf(j, TH_STATE_TIMEOUT, TH_ETIMEDOUT, msg);
            return;
        }
    }
    struct task *t = task_new(&h->tasks, input, len);
    if (t == NULL || (t->id = ++h->next_id, task_map_add(&h->tasks, t) < 0)) {
        if (t != NULL)
            task_free(&h->tasks, t);
        exec_postf(j, TH_STATE_REJECTED, TH_ENOMEM, "out of memory");
        return;
    }
    h->pending++;
    t->done = on_exec_done;
    t->arg = j;
    t->cluster = j;
    t->index = (uint16_t)idx;
    t->priority = (int8_t)entry_priority(j->eid);
    t->submitted = th_host_now(h);
    t->task_timeout = (double)j->tto / 1000.0;
    t->queue_timeout = left;
    j->t = t;
    list_add(&cp->exec, j);
    cp->held++;
    pool_take(p, t);
}

static void on_inref(struct rconn *c, void *r, void *priv)
{
    struct cjob *j = priv;
    redisReply *reply = r;
    (void)c;
    j->refs--;
    j->cp->held--;
    if (is_str(reply))
        exec_run(j, reply->str, reply->len);
    else if (reply != NULL)
        exec_postf(j, TH_STATE_ERROR, TH_EIO,
                   "the task's input expired in the broker");
    else
        job_release(j); /* the claim lapses; another host takes it */
}

/* Starts the task of one claimed entry (id, flat fields). */
static void exec_start(struct cpool *cp, const char *id, const redisReply *f)
{
    struct cluster *cl = cp->cl;
    const redisReply *tid = field(f, "tid"), *task = field(f, "task");
    const redisReply *rt = field(f, "rt"), *in = field(f, "in");
    if (!is_str(tid) || !is_str(task) || !is_str(rt))
        return; /* deleted meanwhile, or not ours: the lease sorts it out */
    struct cjob *j = job_new(cp, J_EXEC);
    if (j == NULL)
        return;
    snprintf(j->eid, sizeof j->eid, "%s", id);
    snprintf(j->tid, sizeof j->tid, "%s", tid->str);
    j->rt = strdup(rt->str);
    j->task = strdup(task->str);
    j->tto = (long)num(field(f, "tto"));
    j->qto = (long)num(field(f, "qto"));
    cp->claimed++;
    if (j->rt == NULL || j->task == NULL) {
        job_release(j);
        return;
    }
    if (cl->closing) {
        give_back(cp, &id, 1);
        job_release(j);
        return;
    }
    if (field(f, "inref") == NULL) {
        exec_run(j, is_str(in) ? in->str : "", is_str(in) ? in->len : 0);
        return;
    }
    j->inref = 1;
    char *key = xasprintf("%sin:%s", cp->pre, j->tid);
    const char *argv[] = {"GET", key};
    if (key != NULL && rconn_cmd(&cl->cmd, on_inref, j, 2, argv, NULL) == 0) {
        j->refs++;
        cp->held++;
    } else {
        job_release(j);
    }
    free(key);
}

/* ---- exec: posting answers ---- */

/* The reply to the answer of j (NULL: lost with the connection). */
static void finished(struct cjob *j, const redisReply *r)
{
    struct cpool *cp = j->cp;
    j->refs--;
    cp->cl->inflight--;
    if (r == NULL) { /* lost on the way: again once Redis is back */
        list_add(&cp->unsent, j);
        cp->nunsent++;
        return;
    }
    if (err_of(r))
        log_warn("cluster: pool %s: answer of task %s refused by the "
                 "broker: %s",
                 cp->name, j->tid, err_of(r));
    else if (num(r) == 1)
        cp->finished++;
    else
        cp->lost_claims++;
    job_release(j);
}

static void flush_finishes(struct cpool *cp);

static void on_finished(struct rconn *c, void *r, void *priv)
{
    struct sent *b = priv;
    struct cpool *cp = b->cp;
    const redisReply *reply = r;
    (void)c;
    cp->fins.flying--;
    if (reply != NULL)
        ewma(&cp->rtt_avg, th_host_now(cp->cl->h) - b->at);
    for (int i = 0; i < b->n; i++) {
        const redisReply *e = reply;
        if (is_arr(reply))
            e = (size_t)i < reply->elements ? reply->element[i] : NULL;
        finished(b->job[i], e);
    }
    free(b);
    if (reply != NULL)
        flush_finishes(cp);
}

/* Puts the arguments of job i's answer (th2_finish's, after the shared
 * ones) into c. */
static void finish_args(struct call *c, int i, struct cjob *j)
{
    struct jtext *x = &c->tx[i];
    snprintf(x->a[0], sizeof x->a[0], "%d", j->fin_code);
    snprintf(x->a[1], sizeof x->a[1], "%" PRIu64, j->run_us);
    const char *v[] = {j->eid, j->tid, j->rt,
                       th_state_name((th_state)j->fin_state), x->a[0],
                       x->a[1], j->data ? j->data : "", j->inref ? "1" : ""};
    for (int m = 0, k = 5 + 3 + 8 * i; m < 8; m++, k++) {
        c->argv[k] = v[m];
        c->alen[k] = m == 6 ? (j->data ? j->len : 0) : strlen(v[m]);
    }
}

/* Sends the gathered answers as one th2_finish_many. */
static void flush_finishes(struct cpool *cp)
{
    struct cluster *cl = cp->cl;
    if (cp->fins.n == 0)
        return;
    struct sent *b = sent_new(cp, &cp->fins);
    struct call c = {0};
    char n[16], ttl[32];
    snprintf(ttl, sizeof ttl, "%.0f", cl->result_ttl * 1000);
    const char *const shared[3] = {cp->pre, ttl, cl->me};
    int ok = b != NULL && call_new(&c, cp, "th2_finish_many", 3, shared, 8,
                                   b->n, n, sizeof n) == 0;
    for (int i = 0; ok && i < b->n; i++)
        finish_args(&c, i, b->job[i]);
    send_call(cp, &cp->fins, b, &c, ok, on_finished, finished);
}

static void send_finish(struct cjob *j)
{
    struct cpool *cp = j->cp;
    j->refs++;
    cp->cl->inflight++;
    cp->fins.job[cp->fins.n++] = j;
    if (cp->fins.flying == 0 || cp->fins.n == BATCH_MAX)
        flush_finishes(cp);
    else
        arm_flush(cp->cl);
}

void cluster_after(struct cluster *cl)
{
    if (!cl->flush_due)
        return;
    cl->flush_due = 0;
    for (struct cpool *cp = cl->pools; cp != NULL; cp = cp->next) {
        flush_submits(cp);
        flush_finishes(cp);
    }
}

static void flush_unsent(struct cpool *cp)
{
    /* At most once each: a batch that cannot be sent puts them back. */
    for (long n = cp->nunsent; n > 0 && cp->unsent != NULL && cp->cl->cmd.up;
         n--) {
        struct cjob *j = cp->unsent;
        list_del(j);
        cp->nunsent--;
        send_finish(j);
        if (j->list == &cp->unsent)
            break; /* could not send: the connection is going */
    }
}

/* ---- claiming ----
 *
 * While no task of a priority other than 0 is in the pool's queue, a
 * host claims with one blocking XREADGROUP on the queue. Once it knows of
 * bands (from its own submits, th2_claim or the heartbeat's stats), it
 * claims with th2_claim, highest priority first, and when that finds
 * nothing, blocks on every band's stream at once for one task each. */

/* Starts the claimed entries of one stream (band: its priority, or NULL
 * for the queue itself). */
static void take_entries(struct cpool *cp, const redisReply *ents,
                         const char *band)
{
    for (size_t i = 0; is_arr(ents) && i < ents->elements; i++) {
        const redisReply *e = ents->element[i];
        if (!is_arr(e) || e->elements < 2 || !is_str(e->element[0]))
            continue;
        char id[48];
        snprintf(id, sizeof id, "%s%s%s", band ? band : "", band ? "/" : "",
                 e->element[0]->str);
        exec_start(cp, id, e->element[1]);
    }
}

/* The band of a stream key read back from XREADGROUP: the text after
 * "<q>:", or NULL for the queue itself. */
static const char *band_of_key(const struct cpool *cp, const char *key)
{
    size_t n = strlen(cp->q);
    if (strncmp(key, cp->q, n) != 0 || key[n] != ':')
        return NULL;
    return key + n + 1;
}

static void on_claimed(struct rconn *c, void *r, void *priv)
{
    struct cpool *cp = priv;
    redisReply *reply = r;
    (void)c;
    cp->claiming = 0;
    if (reply == NULL)
        return;
    if (err_of(reply)) {
        /* A band removed while this host waited on it: th2_claim learns
         * the bands again at the next heartbeat. */
        if (cp->nbands == 0)
            log_warn("cluster: pool %s: claiming failed: %s", cp->name,
                     err_of(reply));
        cp->wait = 0;
        return; /* the heartbeat tries again */
    }
    for (size_t i = 0; is_arr(reply) && i < reply->elements; i++) {
        const redisReply *st = reply->element[i];
        if (!is_arr(st) || st->elements != 2 || !is_str(st->element[0]))
            continue;
        take_entries(cp, st->element[1], band_of_key(cp, st->element[0]->str));
        cp->wait = 0;
    }
    claim(cp);
}

static void on_band_claimed(struct rconn *c, void *r, void *priv)
{
    struct cpool *cp = priv;
    redisReply *reply = r;
    (void)c;
    cp->claiming = 0;
    if (!is_arr(reply) || reply->elements != 2) {
        if (reply != NULL)
            log_warn("cluster: pool %s: claiming failed: %s", cp->name,
                     err_of(reply) ? err_of(reply) : "bad reply");
        return; /* the heartbeat tries again */
    }
    const redisReply *got = reply->element[0];
    bands_set(cp, reply->element[1]);
    for (size_t i = 0; is_arr(got) && i < got->elements; i++) {
        const redisReply *e = got->element[i];
        if (is_arr(e) && e->elements >= 2 && is_str(e->element[0]))
            exec_start(cp, e->element[0]->str, e->element[1]);
    }
    cp->wait = !is_arr(got) || got->elements == 0;
    claim(cp);
}

/* One blocking XREADGROUP on the queue and every band: n tasks from the
 * queue alone, else one from each stream that has one. */
static void claim_blocking(struct cpool *cp, long n)
{
    struct cluster *cl = cp->cl;
    int ns = 1 + cp->nbands, argc = 9 + 2 * ns, ok = 1;
    const char *argv[9 + 2 * (1 + 256)];
    char *keys[256];
    char count[24];
    snprintf(count, sizeof count, "%ld", cp->nbands > 0 ? 1 : n);
    const char *head[] = {"XREADGROUP", "GROUP", "w", cl->me, "COUNT",
                          count, "BLOCK", BLOCK_MS, "STREAMS"};
    memcpy(argv, head, sizeof head);
    argv[9] = cp->q;
    for (int i = 0; i < cp->nbands; i++) {
        keys[i] = ok ? xasprintf("%s:%d", cp->q, cp->band[i]) : NULL;
        ok = ok && keys[i] != NULL;
        argv[10 + i] = keys[i];
    }
    for (int i = 0; i < ns; i++)
        argv[9 + ns + i] = ">";
    if (ok && rconn_cmd(&cp->blk, on_claimed, cp, argc, argv, NULL) == 0)
        cp->claiming = 1;
    for (int i = 0; i < cp->nbands; i++)
        free(keys[i]);
}

static void claim(struct cpool *cp)
{
    struct cluster *cl = cp->cl;
    if (cp->claiming || !cp->blk.up || !cp->joined || cp->refused)
        return;
    long n = free_slots(cp);
    if (n <= 0)
        return;
    if (cp->nbands == 0 || cp->wait) {
        claim_blocking(cp, n);
        return;
    }
    char count[24];
    snprintf(count, sizeof count, "%ld", n);
    const char *argv[] = {"FCALL", "th2_claim", "1", cp->q,
                          cp->pre, cl->me, count};
    if (rconn_cmd(&cp->blk, on_band_claimed, cp, 7, argv, NULL) == 0)
        cp->claiming = 1;
}

/* ---- the heartbeat: renew, take over, stats ---- */

static void on_touched(struct rconn *c, void *r, void *priv)
{
    struct cpool *cp = priv;
    redisReply *reply = r;
    (void)c;
    if (!is_arr(reply))
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        if (!is_str(reply->element[i]))
            continue;
        for (struct cjob *j = cp->exec; j != NULL; j = j->next) {
            if (strcmp(j->eid, reply->element[i]->str) != 0 || j->t == NULL ||
                j->stop)
                continue;
            j->stop = 1;
            log_info("cluster: pool %s: task %s was answered or taken over "
                     "elsewhere: stopping it here",
                     cp->name, j->tid);
            pool_cancel(j->t->pool, j->t);
            break;
        }
    }
}

static void touch(struct cpool *cp)
{
    struct cluster *cl = cp->cl;
    const char *a[30];
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%.0f", cl->lease * 3000);
    struct cjob *j = cp->exec;
    do {
        int n = 0;
        a[n++] = cp->pre;
        a[n++] = cl->me;
        a[n++] = cp->desc;
        a[n++] = ttl;
        for (; j != NULL && n + 2 <= 30; j = j->next) {
            if (j->t == NULL || j->stop)
                continue;
            a[n++] = j->eid;
            a[n++] = j->tid;
        }
        fcall(cp, on_touched, cp, "th2_touch", n, a, NULL);
    } while (j != NULL);
}

static void on_reclaimed(struct rconn *c, void *r, void *priv)
{
    struct cpool *cp = priv;
    redisReply *reply = r;
    (void)c;
    if (!is_arr(reply))
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (!is_arr(e) || e->elements < 3 || !is_str(e->element[0]))
            continue;
        cp->reclaimed++;
        exec_start(cp, e->element[0]->str, e->element[1]);
    }
}

static void reclaim(struct cpool *cp)
{
    struct cluster *cl = cp->cl;
    char lease[32], maxa[16], count[24], ttl[32];
    long n = free_slots(cp);
    snprintf(lease, sizeof lease, "%.0f", cl->lease * 1000);
    snprintf(maxa, sizeof maxa, "%d", cl->max_attempts);
    snprintf(count, sizeof count, "%ld", n > 0 ? n : 0);
    snprintf(ttl, sizeof ttl, "%.0f", cl->result_ttl * 1000);
    const char *a[] = {cp->pre, cl->me, lease, maxa, count, ttl};
    fcall(cp, on_reclaimed, cp, "th2_reclaim", 6, a, NULL);
}

static void on_stats(struct rconn *c, void *r, void *priv)
{
    struct cpool *cp = priv;
    redisReply *reply = r;
    (void)c;
    if (!is_arr(reply) || reply->elements < 6)
        return;
    cp->c_queued = num(reply->element[0]);
    cp->c_claimed = num(reply->element[1]);
    cp->c_dead = num(reply->element[2]);
    cp->c_redelivered = num(reply->element[3]);
    cp->c_dead_total = num(reply->element[4]);
    if (reply->elements >= 7)
        bands_set(cp, reply->element[6]);
    const redisReply *per = reply->element[5];
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (f == NULL)
        return;
    for (size_t i = 0; is_arr(per) && i + 1 < per->elements; i += 2)
        fprintf(f, "%s%s:%lld", i ? " " : "",
                is_str(per->element[i]) ? per->element[i]->str : "?",
                num(per->element[i + 1]));
    if (fclose(f) == 0) {
        free(cp->c_hosts);
        cp->c_hosts = s;
    }
}

static void stats(struct cpool *cp)
{
    struct cluster *cl = cp->cl;
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%.0f", HOST_GONE * 1000);
    const char *a[] = {cp->pre, cl->me, ttl, cp->rep};
    fcall(cp, on_stats, cp, "th2_stats", 4, a, NULL);
}

static void on_beat(th_timer *tm, void *arg)
{
    struct cluster *cl = arg;
    (void)tm;
    rconn_check(&cl->cmd);
    /* A Redis still loading its data refuses both: try again. */
    if (cl->cmd.up && !cl->loaded)
        load_functions(cl);
    if (cl->cmd.up && !cl->greeted && !cl->greeting)
        hello(cl);
    for (struct cpool *cp = cl->pools; cp != NULL; cp = cp->next) {
        rconn_check(&cp->blk);
        rconn_check(&cp->rep_conn);
        if (cl->cmd.up && cl->greeted && !cp->joined && !cp->joining)
            join(cp);
        if (!cl->cmd.up || !cp->joined || cp->refused)
            continue;
        touch(cp);
        /* No host could renew its leases while Redis was away: give them
         * a lease to do so before taking their tasks over. */
        if (!cl->closing && th_host_now(cl->h) - cl->up_at >= cl->lease)
            reclaim(cp);
        stats(cp);
        claim(cp);
        read_replies(cp);
    }
}

/* ---- joining ---- */

static char *describe(const struct pool *p)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (f == NULL)
        return NULL;
    fprintf(f, "plugin %s %s tasks", p->plugin->desc.name,
            p->plugin->desc.version);
    for (size_t i = 0; i < p->plugin->ntasks; i++)
        fprintf(f, "%s%s", i ? "," : " ", p->plugin->tasks[i].name);
    /* Hosts of another data model (its functions' library) would
     * misread each other's entries. */
    fprintf(f, " via %s", CLUSTER_LUA_LIB);
    if (fclose(f) != 0)
        return NULL;
    return s;
}

/* Redis lost the queue: every task taken in here and not answered waits
 * to enter again, as a fresh submit. */
static void resubmit_all(struct cpool *cp)
{
    long n = 0;
    cp->resubmit = 0;
    struct cjob *next;
    for (struct cjob *j = cp->ingress; j != NULL; j = next) {
        next = j->next;
        if (j->state != IN_QUEUED)
            continue; /* sent on this connection: it enters there */
        j->sent_ms = 0;
        j->eid[0] = '\0';
        wait_to_enter(j);
        n++;
    }
    if (n > 0)
        log_warn("cluster: pool %s: %ld tasks submitted again", cp->name, n);
}

static void on_joined(struct rconn *c, void *r, void *priv)
{
    struct cpool *cp = priv;
    redisReply *reply = r;
    (void)c;
    cp->joining = 0;
    if (reply == NULL)
        return;
    if (err_of(reply) || !is_arr(reply) || reply->elements < 1) {
        log_error("cluster: pool %s: joining failed: %s", cp->name,
                  err_of(reply) ? err_of(reply) : "bad reply");
        return;
    }
    if (strcmp(reply->element[0]->str, "differs") == 0 &&
        reply->elements >= 2) {
        free(cp->refusal);
        cp->refusal = xasprintf(
            "shared pool '%s' refused by cluster '%s': this host runs "
            "\"%s\", the cluster runs \"%s\"",
            cp->name, cp->cl->name, cp->desc, reply->element[1]->str);
        log_error("%s", cp->refusal ? cp->refusal : "refused");
        cp->refused = 1;
        return;
    }
    if (!cp->joined)
        log_info("cluster: pool %s joined cluster %s as host %s", cp->name,
                 cp->cl->name, cp->cl->me);
    cp->joined = 1;
    cp->refused = 0;
    if (cp->resubmit)
        resubmit_all(cp);
    /* Tasks that waited for the broker enter now, in order. */
    while (cp->waiting != NULL && cp->cl->cmd.up) {
        struct cjob *j = cp->waiting;
        while (j->next != NULL)
            j = j->next; /* the oldest */
        send_submit(j);
        if (j->state == IN_WAIT)
            break;
    }
    flush_unsent(cp);
    claim(cp);
    read_replies(cp);
}

static int set_keys(struct cpool *cp)
{
    struct cluster *cl = cp->cl;
    free(cp->q);
    free(cp->pre);
    free(cp->rep);
    cp->pre = xasprintf("th:%s:{%s}:", cl->name, cp->name);
    cp->q = xasprintf("th:%s:{%s}:q", cl->name, cp->name);
    cp->rep = xasprintf("th:%s:{%s}:rep:%s", cl->name, cp->name, cl->me);
    return cp->pre && cp->q && cp->rep ? 0 : TH_ENOMEM;
}

static void join(struct cpool *cp)
{
    struct cluster *cl = cp->cl;
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%.0f", cl->lease * 3000);
    if (set_keys(cp) < 0)
        return;
    const char *a[] = {cp->pre, cp->desc, ttl, cp->rep};
    if (fcall(cp, on_joined, cp, "th2_join", 4, a, NULL) == 0)
        cp->joining = 1;
}

static void on_time(struct rconn *c, void *r, void *priv)
{
    struct cluster *cl = priv;
    redisReply *reply = r;
    (void)c;
    if (!is_arr(reply) || reply->elements != 2)
        return;
    int64_t ms = num(reply->element[0]) * 1000 + num(reply->element[1]) / 1000;
    cl->clock_skew = ms - wall_ms();
}

static void on_hello(struct rconn *c, void *r, void *priv)
{
    struct cluster *cl = priv;
    redisReply *reply = r;
    (void)c;
    cl->greeting = 0;
    if (reply == NULL)
        return;
    if (err_of(reply) || !is_arr(reply) || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        !is_str(reply->element[1])) {
        log_error("cluster: cannot get a host id: %s",
                  err_of(reply) ? err_of(reply) : "bad reply");
        return; /* the heartbeat tries again */
    }
    const char *epoch = reply->element[1]->str;
    if (cl->epoch[0] != '\0' && strcmp(cl->epoch, epoch) != 0) {
        log_warn("cluster: redis %s lost the cluster's data: the tasks "
                 "taken in here and not answered are submitted again",
                 cl->redis);
        for (struct cpool *cp = cl->pools; cp != NULL; cp = cp->next)
            cp->resubmit = 1;
    }
    snprintf(cl->epoch, sizeof cl->epoch, "%s", epoch);
    cl->hostid = reply->element[0]->integer;
    snprintf(cl->me, sizeof cl->me, "%lld", cl->hostid);
    cl->greeted = 1;
    for (struct cpool *cp = cl->pools; cp != NULL; cp = cp->next)
        join(cp);
}

/* Gets a host id (or keeps ours) and the data set's epoch, then joins. */
static void hello(struct cluster *cl)
{
    char *seq = xasprintf("th:%s:{hosts}:seq", cl->name);
    char *ep = xasprintf("th:%s:{hosts}:epoch", cl->name);
    char fresh[64], id[32];
    snprintf(fresh, sizeof fresh, "%" PRId64 "-%ld-%lld", wall_ms(),
             (long)getpid(), cl->hostid);
    snprintf(id, sizeof id, "%lld", cl->hostid);
    const char *argv[] = {"FCALL", "th2_hello", "2", seq, ep, fresh, id};
    if (seq != NULL && ep != NULL &&
        rconn_cmd(&cl->cmd, on_hello, cl, 7, argv, NULL) == 0)
        cl->greeting = 1;
    free(seq);
    free(ep);
}

static void on_loaded(struct rconn *c, void *r, void *priv)
{
    struct cluster *cl = priv;
    (void)c;
    if (r == NULL)
        return;
    if (err_of(r) == NULL) {
        cl->loaded = 1;
        return;
    }
    log_error("cluster: loading the functions into redis %s failed: %s",
              cl->redis, err_of(r));
}

static void load_functions(struct cluster *cl)
{
    const char *load[] = {"FUNCTION", "LOAD", "REPLACE", cluster_lua};
    size_t ll[] = {8, 4, 7, sizeof cluster_lua - 1};
    rconn_cmd(&cl->cmd, on_loaded, cl, 4, load, ll);
}

static void on_cmd_state(struct rconn *c, int up, void *arg)
{
    struct cluster *cl = arg;
    if (!up) {
        cl->greeted = cl->greeting = 0;
        for (struct cpool *cp = cl->pools; cp != NULL; cp = cp->next)
            cp->joined = cp->joining = 0;
        return;
    }
    log_info("cluster: connected to redis %s", cl->redis);
    cl->up_at = th_host_now(cl->h);
    cl->loaded = 0;
    load_functions(cl);
    const char *tm[] = {"TIME"};
    rconn_cmd(c, on_time, cl, 1, tm, NULL);
    hello(cl);
}

static void on_pool_conn(struct rconn *c, int up, void *arg)
{
    struct cpool *cp = arg;
    if (c == &cp->blk)
        cp->claiming = 0;
    else
        cp->reading = 0;
    if (up) {
        claim(cp);
        read_replies(cp);
    }
}

/* ---- creation ---- */

static struct cpool *cpool_new(struct cluster *cl, struct pool *p)
{
    struct cpool *cp = calloc(1, sizeof *cp);
    if (cp == NULL)
        return NULL;
    cp->cl = cl;
    cp->name = strdup(p->cfg.name);
    cp->desc = describe(p);
    snprintf(cp->last, sizeof cp->last, "0-0");
    if (cp->name == NULL || cp->desc == NULL || set_keys(cp) < 0) {
        free(cp->name);
        free(cp->desc);
        free(cp);
        return NULL;
    }
    cp->blk.stall = BLOCK_STALL;
    cp->rep_conn.stall = BLOCK_STALL;
    rconn_open(&cp->blk, cl->h, cl->redis, cl->password, "claims",
               on_pool_conn, cp);
    rconn_open(&cp->rep_conn, cl->h, cl->redis, cl->password, "replies",
               on_pool_conn, cp);
    cp->next = cl->pools;
    cl->pools = cp;
    if (cl->cmd.up && cl->greeted)
        join(cp);
    return cp;
}

void cluster_sync_pools(struct cluster *cl)
{
    for (struct pool *p = cl->h->pools; p != NULL; p = p->next)
        if (p->cfg.shared && cpool_find(cl, p->cfg.name) == NULL)
            cpool_new(cl, p);
}

int cluster_new(struct th_host *h, const struct cluster_cfg *cfg,
                struct cluster **out)
{
    struct cluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL)
        return TH_ENOMEM;
    cl->h = h;
    cl->redis = strdup(cfg->redis);
    cl->name = strdup(cfg->name);
    cl->password = cfg->password ? strdup(cfg->password) : NULL;
    cl->lease = cfg->lease;
    cl->heartbeat = cfg->heartbeat;
    cl->result_ttl = cfg->result_ttl;
    cl->max_attempts = cfg->max_attempts;
    cl->cmd.stall = CMD_STALL;
    if (cl->redis == NULL || cl->name == NULL ||
        (cfg->password && cl->password == NULL) ||
        th_timer_new(h, on_beat, cl, &cl->beat) < 0) {
        cluster_free(cl);
        return TH_ENOMEM;
    }
    *out = cl;
    cluster_sync_pools(cl);
    rconn_open(&cl->cmd, h, cl->redis, cl->password, "commands",
               on_cmd_state, cl);
    th_timer_start(cl->beat, cl->heartbeat, cl->heartbeat);
    return 0;
}

/* ---- shutdown ---- */

/* Takes the claimed tasks the pool has not started out of its queue and
 * gives them back to the cluster. */
static void give_back_unstarted(struct cpool *cp)
{
    struct th_host *h = cp->cl->h;
    struct cjob *next;
    for (struct cjob *j = cp->exec; j != NULL; j = next) {
        next = j->next;
        struct task *t = j->t;
        if (t == NULL || t->worker != NULL || t->state != TH_QUEUED)
            continue;
        queue_remove(&t->pool->queue, t);
        loop_timer_stop(h->loop, &t->qtimer);
        j->give = 1;
        const char *id = j->eid;
        give_back(cp, &id, 1);
        host_answer(h, t, TH_STATE_CANCELLED, TH_ECLOSED, "given back", 10);
    }
}

void cluster_shutdown(struct cluster *cl, int force)
{
    if (cl->closing > force)
        return;
    cl->closing = 1 + (force != 0);
    for (struct cpool *cp = cl->pools; cp != NULL; cp = cp->next) {
        if (cl->cmd.up)
            give_back_unstarted(cp);
        if (!force)
            continue;
        struct cjob *next;
        for (struct cjob *j = cp->ingress; j != NULL; j = next) {
            next = j->next;
            if (j->t == NULL)
                continue;
            struct task *t = j->t;
            j->t = NULL;
            t->cluster = NULL;
            list_del(j);
            job_release(j);
            host_answerf(cl->h, t, TH_STATE_CANCELLED, TH_ECANCELED,
                              "cancelled: the host was shut down");
        }
        for (struct cjob *j = cp->waiting; j != NULL; j = next) {
            next = j->next;
            struct task *t = j->t;
            j->t = NULL;
            t->cluster = NULL;
            list_del(j);
            job_release(j);
            host_answerf(cl->h, t, TH_STATE_CANCELLED, TH_ECANCELED,
                              "cancelled: the host was shut down");
        }
        cp->nwaiting = 0;
    }
}

int cluster_done(const struct cluster *cl)
{
    if (cl->closing == 2)
        return 1;
    if (cl->inflight > 0)
        return 0;
    for (const struct cpool *cp = cl->pools; cp != NULL; cp = cp->next)
        if (cp->claiming || cp->unsent != NULL)
            return 0;
    return 1;
}

static void free_list(struct cjob **head)
{
    while (*head != NULL) {
        struct cjob *j = *head;
        list_del(j);
        j->t = NULL;
        j->refs = 0;
        job_release(j);
    }
}

void cluster_free(struct cluster *cl)
{
    if (cl == NULL)
        return;
    /* Batches first, then connections: their waiting commands are called
     * back (with NULL replies) while the jobs they name still exist. */
    cl->flush_due = 1;
    cluster_after(cl);
    rconn_close(&cl->cmd);
    for (struct cpool *cp = cl->pools; cp != NULL; cp = cp->next) {
        rconn_close(&cp->blk);
        rconn_close(&cp->rep_conn);
    }
    while (cl->pools != NULL) {
        struct cpool *cp = cl->pools;
        cl->pools = cp->next;
        if (cp->nunsent > 0)
            log_warn("cluster: pool %s: %ld answers not delivered to the "
                     "broker: their tasks run again elsewhere after the lease",
                     cp->name, cp->nunsent);
        free_list(&cp->exec);
        free_list(&cp->ingress);
        free_list(&cp->waiting);
        free_list(&cp->unsent);
        free(cp->name);
        free(cp->q);
        free(cp->pre);
        free(cp->rep);
        free(cp->desc);
        free(cp->refusal);
        free(cp->c_hosts);
        free(cp);
    }
    th_timer_free(cl->beat);
    free(cl->redis);
    free(cl->name);
    if (cl->password != NULL)
        explicit_bzero(cl->password, strlen(cl->password));
    free(cl->password);
    free(cl);
}

/* ---- stats ---- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

const char *cluster_next_claims(const char *list, char *host, size_t hostlen,
                                long long *n)
{
    const char *colon = strchr(list, ':');
    if (colon == NULL || hostlen == 0)
        return NULL;
    size_t len = (size_t)(colon - list);
    if (len >= hostlen)
        len = hostlen - 1;
    memcpy(host, list, len);
    host[len] = '\0';
    char *end;
    *n = strtoll(colon + 1, &end, 10);
    return *end == ' ' ? end + 1 : end;
}

int cluster_numbers(const struct cluster *cl, const char *pool,
                    struct cluster_numbers *out)
{
    const struct cpool *cp = cl ? cpool_find(cl, pool) : NULL;
    if (cp == NULL)
        return -1;
    *out = (struct cluster_numbers){
        .connected = cl->cmd.up,
        .joined = cp->joined,
        .submitted = cp->submitted,
        .claimed = cp->claimed,
        .redelivered = cp->reclaimed,
        .answered = cp->finished,
        .waiting = cp->nwaiting,
        .held = cp->held,
        .unsent = cp->nunsent,
        .queued = cp->c_queued,
        .claimed_all = cp->c_claimed,
        .dead_letters = cp->c_dead,
        .redelivered_all = cp->c_redelivered,
        .claimed_by_host = cp->c_hosts ? cp->c_hosts : "",
    };
    return 0;
}

void cluster_stats_json(FILE *f, const struct cluster *cl, const char *pool)
{
    const struct cpool *cp = cl ? cpool_find(cl, pool) : NULL;
    if (cp == NULL)
        return;
    fprintf(f, ",\"cluster\":{\"name\":");
    json_str(f, cl->name);
    fprintf(f, ",\"host\":%lld,\"connected\":%s,\"joined\":%s,\"refused\":",
            cl->hostid, cl->cmd.up ? "true" : "false",
            cp->joined ? "true" : "false");
    if (cp->refused)
        json_str(f, cp->refusal);
    else
        fprintf(f, "null");
    fprintf(f,
            ",\"here\":{\"submitted\":%llu,\"waiting\":%ld,\"held\":%ld,"
            "\"claimed\":%llu,\"redelivered\":%llu,\"answered\":%llu,"
            "\"lost\":%llu,\"given_back\":%llu,\"unsent\":%ld}",
            (unsigned long long)cp->submitted, cp->nwaiting, cp->held,
            (unsigned long long)cp->claimed, (unsigned long long)cp->reclaimed,
            (unsigned long long)cp->finished,
            (unsigned long long)cp->lost_claims, (unsigned long long)cp->given,
            cp->nunsent);
    fprintf(f,
            ",\"all\":{\"queued\":%lld,\"claimed\":%lld,\"dead_letters\":%lld,"
            "\"redelivered\":%lld,\"dead_total\":%lld,\"claimed_by_host\":{",
            cp->c_queued, cp->c_claimed, cp->c_dead, cp->c_redelivered,
            cp->c_dead_total);
    const char *s = cp->c_hosts ? cp->c_hosts : "";
    char host[32];
    long long n;
    for (int first = 1; *s && (s = cluster_next_claims(s, host, sizeof host,
                                                      &n)) != NULL;
         first = 0)
        fprintf(f, "%s\"%s\":%lld", first ? "" : ",", host, n);
    fprintf(f, "}}}");
}

void cluster_stats_text(FILE *f, const struct cluster *cl, const char *pool)
{
    const struct cpool *cp = cl ? cpool_find(cl, pool) : NULL;
    if (cp == NULL)
        return;
    fprintf(f, "  cluster  %s via redis %s: host %lld, %s%s\n", cl->name,
            cl->redis, cl->hostid, cl->cmd.up ? "connected" : "disconnected",
            cp->refused ? ", REFUSED" : "");
    if (cp->refused)
        fprintf(f, "           %s\n", cp->refusal);
    fprintf(f,
            "  here     submitted %llu, waiting %ld, held %ld, claimed %llu, "
            "redelivered %llu, answered %llu, lost %llu, given back %llu, "
            "unsent %ld\n",
            (unsigned long long)cp->submitted, cp->nwaiting, cp->held,
            (unsigned long long)cp->claimed, (unsigned long long)cp->reclaimed,
            (unsigned long long)cp->finished,
            (unsigned long long)cp->lost_claims, (unsigned long long)cp->given,
            cp->nunsent);
    fprintf(f,
            "  all      queued %lld, claimed %lld, dead letters %lld, "
            "redelivered %lld, dead total %lld\n",
            cp->c_queued, cp->c_claimed, cp->c_dead, cp->c_redelivered,
            cp->c_dead_total);
    fprintf(f, "  claimed by host  %s\n", cp->c_hosts ? cp->c_hosts : "");
}
