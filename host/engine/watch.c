/* watch.c - th_watch and th_timer: an embedder's own descriptors and
 * timers, driven by the host's loop (taskhost_host.h).
 *
 * Each handle wraps one of the loop's own registrations (struct loop_io,
 * struct loop_timer), so the loop stays the only code that touches epoll.
 * Engine layer.
 * A handle stopped from a callback is marked dead at once, so that an
 * event for it still pending in the same batch is dropped, and is freed
 * by the loop when the batch ends (loop_free_later()).
 */
#include <stdlib.h>

#include "host.h"
#include "loop.h"
#include "taskhost_host.h"

struct th_watch {
    struct loop_io io; /* first: the loop hands us back &io */
    struct loop *loop;
    th_watch_fn fn;    /* NULL once stopped */
    void *arg;
    unsigned events;   /* TH_WATCH_READ | TH_WATCH_WRITE asked for */
    int registered;    /* in the loop's set (not while paused) */
};

struct th_timer {
    struct loop_timer t; /* first: the loop hands us back &t */
    struct loop *loop;
    th_timer_fn fn;
    void *arg;
    double repeat;
    int dead;
};

static uint32_t loop_mask(unsigned events)
{
    uint32_t m = 0;
    if (events & TH_WATCH_READ)
        m |= LOOP_READ | LOOP_RDHUP;
    if (events & TH_WATCH_WRITE)
        m |= LOOP_WRITE;
    return m;
}

static void watch_dispatch(struct loop_io *io, uint32_t ev)
{
    th_watch *w = (th_watch *)io;
    if (w->fn == NULL)
        return; /* stopped earlier in this batch */
    unsigned ready = 0;
    if (ev & (LOOP_READ | LOOP_RDHUP))
        ready |= TH_WATCH_READ;
    if (ev & LOOP_WRITE)
        ready |= TH_WATCH_WRITE;
    if (ev & LOOP_HUP)
        ready |= TH_WATCH_ERROR | w->events;
    ready &= w->events | TH_WATCH_ERROR;
    if (ready != 0)
        w->fn(w, io->fd, ready, w->arg);
}

TH_EXPORT int th_watch_start(th_host *h, int fd, unsigned events,
                             th_watch_fn fn, void *arg, th_watch **out)
{
    if (h == NULL || fd < 0 || fn == NULL || out == NULL ||
        (events & ~(unsigned)(TH_WATCH_READ | TH_WATCH_WRITE)) != 0)
        return TH_EINVAL;
    th_watch *w = calloc(1, sizeof *w);
    if (w == NULL)
        return TH_ENOMEM;
    w->io.fd = fd;
    w->io.cb = watch_dispatch;
    w->loop = h->loop;
    w->fn = fn;
    w->arg = arg;
    w->events = events;
    if (events != 0) {
        if (loop_add(w->loop, &w->io, loop_mask(events)) < 0) {
            free(w);
            return TH_EIO;
        }
        w->registered = 1;
    }
    *out = w;
    return 0;
}

TH_EXPORT int th_watch_set(th_watch *w, unsigned events)
{
    if (w == NULL || w->fn == NULL ||
        (events & ~(unsigned)(TH_WATCH_READ | TH_WATCH_WRITE)) != 0)
        return TH_EINVAL;
    if (events == w->events)
        return 0;
    int r = 0;
    if (events == 0) {
        loop_del(w->loop, &w->io);
        w->registered = 0;
    } else if (!w->registered) {
        r = loop_add(w->loop, &w->io, loop_mask(events));
        w->registered = r == 0;
    } else {
        r = loop_mod(w->loop, &w->io, loop_mask(events));
    }
    if (r == 0)
        w->events = events;
    return r;
}

TH_EXPORT unsigned th_watch_events(const th_watch *w)
{
    return w == NULL ? 0 : w->events;
}

TH_EXPORT void th_watch_stop(th_watch *w)
{
    if (w == NULL || w->fn == NULL)
        return;
    if (w->registered)
        loop_del(w->loop, &w->io);
    w->fn = NULL;
    loop_free_later(w->loop, w);
}

/* A due timer is off the heap when its callback runs; a repeating one is
 * re-armed afterwards unless the callback re-armed, stopped or freed it. */
static void timer_dispatch(struct loop_timer *lt)
{
    th_timer *t = (th_timer *)lt;
    double repeat = t->repeat;
    t->fn(t, t->arg);
    if (t->dead || repeat <= 0 || t->repeat != repeat || loop_timer_armed(lt))
        return;
    loop_timer_start(t->loop, lt, repeat);
}

TH_EXPORT int th_timer_new(th_host *h, th_timer_fn fn, void *arg,
                           th_timer **out)
{
    if (h == NULL || fn == NULL || out == NULL)
        return TH_EINVAL;
    th_timer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return TH_ENOMEM;
    t->t.cb = timer_dispatch;
    t->loop = h->loop;
    t->fn = fn;
    t->arg = arg;
    *out = t;
    return 0;
}

TH_EXPORT void th_timer_start(th_timer *t, double delay, double repeat)
{
    if (t == NULL || t->dead)
        return;
    t->repeat = repeat > 0 ? repeat : 0;
    loop_timer_start(t->loop, &t->t, delay > 0 ? delay : 0);
}

TH_EXPORT void th_timer_stop(th_timer *t)
{
    if (t == NULL)
        return;
    t->repeat = 0;
    loop_timer_stop(t->loop, &t->t);
}

TH_EXPORT int th_timer_armed(const th_timer *t)
{
    return t != NULL && loop_timer_armed(&t->t);
}

TH_EXPORT void th_timer_free(th_timer *t)
{
    if (t == NULL || t->dead)
        return;
    th_timer_stop(t);
    t->dead = 1;
    loop_free_later(t->loop, t);
}

TH_EXPORT double th_host_now(const th_host *h)
{
    return loop_now(h->loop);
}
