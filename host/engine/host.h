/* host.h - the engine's internals shared by its modules (engine layer),
 * and what the daemon (taskhostd) needs beyond the public embedding API.
 */
#ifndef TH_HOST_INTERNAL_H
#define TH_HOST_INTERNAL_H

#include <stdint.h>

#include "spare.h"
#include "stats.h"
#include "task.h"
#include "taskhost_host.h"

struct config;
struct loop;
struct plugin;
struct pool_cfg;
struct pool;
struct worker;

struct th_host {
    struct loop *loop;
    struct config *cfg;        /* NULL for a host built in code */
    struct plugin **plugins;   /* loaded plugins, by name */
    size_t nplugins;
    struct pool *pools;        /* serving pools */
    struct pool *retired;      /* pools draining after reload or removal */
    struct cluster *cluster;   /* shared pools' broker link, or NULL */
    struct task_table tasks;   /* pending tasks by id, free list */
    struct task *answers, *answers_tail; /* answers to deliver, via anext */
    int in_callback;           /* a task's callback is running */
    struct pool *dispatch;     /* pools with work to hand out */
    struct worker *flush;      /* workers with bytes to write */
    struct worker *graveyard;  /* reaped workers, freed after the step */
    uint64_t next_id;
    size_t pending;            /* accepted tasks not yet answered */
    int closing;               /* 0, or 1 + TH_CLOSE_* */
    int stopped;
    double shutdown_timeout;
    struct loop_timer shutdown_timer;
    struct event_ring events;  /* the last worker events, every pool */
    int adopts_orphans;        /* host_adopt_orphans() was called */
    struct loop_timer orphan_timer; /* looks again at orphans killed */
    struct spare spare;        /* a spawner started ahead of need */
};

/* The config the host runs on now (NULL for a host built in code). It is
 * replaced by a successful th_host_reload(): do not keep the pointer. */
const struct config *host_config(const th_host *host);

/* Like th_host_submit(), but the input is not copied: it must stay valid
 * and unchanged until `done` is called (the daemon passes a client's
 * memfd, mapped, so that large inputs are never copied onto its heap). */
int host_submit_borrowed(th_host *h, const char *pool, const char *task,
                         const void *input, size_t len,
                         const th_submit_opts *opts, th_done_fn done,
                         void *arg, uint64_t *id);

/* A submitter's memfd holding the input (host_submit_fd()). */
struct host_fd {
    int fd;           /* the memfd; input maps its start. Kept open by the
                       * submitter until `done` */
    int out_ok;       /* the worker may write the output into it, after
                       * the input (growing it), at host_fd_out_at(); the
                       * th_result of an output it wrote there has data
                       * NULL and len the output's length */
    dev_t dev;        /* the memfd's file (fstat), so that the engine */
    ino_t ino;        /* needs not ask; ino 0: not known */
};

/* Where in its memfd (struct host_fd) the output of an input of `len`
 * bytes is, when the worker wrote it there. */
uint64_t host_fd_out_at(size_t len);

/* host_submit_borrowed() of an input that is the start of memfd hf->fd:
 * a large one is passed to the worker, which reads it in place (and may
 * write the output into it), instead of being copied into its arena. */
int host_submit_fd(th_host *h, const char *pool, const char *task,
                   const void *input, size_t len, const th_submit_opts *opts,
                   th_done_fn done, void *arg, uint64_t *id,
                   const struct host_fd *hf);

/* Seconds a plugin may take to load in a spawner, under cfg (NULL: the
 * default). */
double host_plugin_timeout(const struct config *cfg);

/* Gives task t its final answer: the state, the code and a copy of the
 * data (the output, or a message for a human) are kept in the task, which
 * joins the answer queue; its callback runs when the after-hook delivers
 * the queue, never from inside the caller. The one way to answer a task:
 * safe from the loop's handlers, from API calls and from callbacks. */
void host_answer(struct th_host *h, struct task *t, th_state state, int code,
                 const void *data, size_t len);

/* host_answer() without the copy, for an output in a worker's arena: the
 * caller keeps `data` valid until the answer queue has been delivered in
 * this loop iteration (the arena's output ring is released only when
 * workers are flushed, after the delivery). */
void host_answer_ref(struct th_host *h, struct task *t, th_state state,
                     int code, const void *data, size_t len);

/* host_answer() of an output its worker wrote into the task's memfd at
 * t->out_off: mapped for the callback when the memfd is the host's own,
 * else left to its submitter, who finds it at host_fd_out_at(). */
void host_answer_fd(struct th_host *h, struct task *t, th_state state,
                    int code, size_t len);

/* host_answer() with a printf message. */
void host_answerf(struct th_host *h, struct task *t, th_state state, int code,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Runs the check() of plugin `pl` on the settings of pool `c` in a probe
 * spawner (as the pool's user when the host is root), before any worker
 * of the pool exists, within `timeout` seconds. Returns 0, or a negative
 * code with one line in err naming the plugin, its file, the pool and the
 * plugin's message. */
int host_check_pool(const struct pool_cfg *c, const struct plugin *pl,
                    int strict, double timeout, char *err, size_t errlen);

/* Frees a task that was answered and has left its worker. */
void host_task_release(struct th_host *h, struct task *t);

/* The serving pool named `name`, or NULL. */
struct pool *host_find_pool(const struct th_host *h, const char *name);

/* Marks pool p to be dispatched at the end of this loop iteration. */
void host_mark_pool(struct th_host *h, struct pool *p);

/* Marks worker w to be flushed at the end of this loop iteration. */
void host_mark_worker(struct th_host *h, struct worker *w);

/* Hands a reaped, unlinked worker to be freed after this iteration. */
void host_bury_worker(struct th_host *h, struct worker *w);

/* Makes this process the child subreaper of what its workers start
 * (orphans.c), so that what a task detaches comes back to it when its
 * worker exits, to be ended. For a process whose children are all the
 * host's (taskhostd). Returns 0, or -1 after logging why. */
int host_adopt_orphans(struct th_host *h);

/* Kills and reaps every child that is not a worker the host knows, once
 * host_adopt_orphans() was called; else does nothing. */
void host_reap_orphans(struct th_host *h);

/* At the end: sweeps until no orphan is left or `limit` seconds passed. */
void host_end_orphans(struct th_host *h, double limit);

/* th_host_reload() with a config parsed already (by config_load(),
 * perhaps on another thread: parsing a large file takes a while). Takes
 * cfg, and frees it on failure. Returns 0 or a code, the reason in err. */
int host_reload_parsed(struct th_host *h, struct config *cfg, char *err,
                       size_t errlen);

#endif /* TH_HOST_INTERNAL_H */
