/* loop.c - the engine's event loop: epoll, a timer heap behind a timerfd,
 * and a wake-up eventfd. The only file that touches epoll (loop.h). */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "taskhost.h"

#define LOOP_EVENTS 256

struct loop {
    int epfd;
    struct loop_io timer_io; /* timerfd: makes due timers visible */
    struct loop_io wake_io;  /* eventfd: loop_wake() */
    int woken;
    int in_events;           /* handling fds and timers: the hook follows */
    int in_turn;             /* from the wake-up to the hook's end */
    double armed;            /* deadline the timerfd is set to, 0: none */
    double poll_until;       /* busy polling until then, 0: none */
    struct loop_timer **heap;
    size_t nheap, capheap;
    double now;
    void (*after)(void *);
    void *after_arg;
    void **later;            /* freed when the batch of events ends */
    size_t nlater, caplater;
};

double loop_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double loop_now(const struct loop *l)
{
    return l->now;
}

void loop_update_time(struct loop *l)
{
    l->now = loop_clock();
}

void loop_touch_time(struct loop *l)
{
    if (!l->in_turn)
        l->now = loop_clock();
}

static void drain_fd(int fd)
{
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    (void)n;
}

static void on_timerfd(struct loop_io *io, uint32_t events)
{
    struct loop *l = (struct loop *)((char *)io - offsetof(struct loop, timer_io));
    drain_fd(io->fd);
    l->armed = 0;
}

/* The eventfd is edge-triggered: each write is one event, so its count
 * need not be read back (loop_wake() drains it in the unlikely case that
 * it fills up). */
static void on_wake(struct loop_io *io, uint32_t events)
{
    struct loop *l = (struct loop *)((char *)io - offsetof(struct loop, wake_io));
    l->woken = 0;
}

int loop_new(struct loop **out)
{
    struct loop *l = calloc(1, sizeof *l);
    if (l == NULL)
        return TH_ENOMEM;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->timer_io.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    l->wake_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->timer_io.cb = on_timerfd;
    l->wake_io.cb = on_wake;
    if (l->epfd == -1 || l->timer_io.fd == -1 || l->wake_io.fd == -1 ||
        loop_add(l, &l->timer_io, LOOP_READ) < 0 ||
        loop_add(l, &l->wake_io, LOOP_READ | LOOP_EDGE) < 0) {
        loop_free(l);
        return TH_EIO;
    }
    l->now = loop_clock();
    *out = l;
    return 0;
}

static void free_later_now(struct loop *l)
{
    for (size_t i = 0; i < l->nlater; i++)
        free(l->later[i]);
    l->nlater = 0;
}

void loop_free_later(struct loop *l, void *p)
{
    if (!l->in_events) {
        free(p);
        return;
    }
    if (l->nlater == l->caplater) {
        size_t cap = l->caplater ? l->caplater * 2 : 16;
        void **v = realloc(l->later, cap * sizeof *v);
        if (v == NULL)
            return; /* leaked rather than freed under a pending event */
        l->later = v;
        l->caplater = cap;
    }
    l->later[l->nlater++] = p;
}

void loop_free(struct loop *l)
{
    if (l == NULL)
        return;
    if (l->epfd != -1)
        close(l->epfd);
    if (l->timer_io.fd > 0)
        close(l->timer_io.fd);
    if (l->wake_io.fd > 0)
        close(l->wake_io.fd);
    free_later_now(l);
    free(l->later);
    free(l->heap);
    free(l);
}

int loop_fd(const struct loop *l)
{
    return l->epfd;
}

static uint32_t to_epoll(uint32_t events)
{
    uint32_t m = 0;
    if (events & LOOP_READ)
        m |= EPOLLIN;
    if (events & LOOP_WRITE)
        m |= EPOLLOUT;
    if (events & LOOP_RDHUP)
        m |= EPOLLRDHUP;
    if (events & LOOP_EDGE)
        m |= EPOLLET;
    return m;
}

static uint32_t from_epoll(uint32_t ev)
{
    uint32_t m = 0;
    if (ev & (EPOLLIN | EPOLLPRI))
        m |= LOOP_READ;
    if (ev & EPOLLOUT)
        m |= LOOP_WRITE;
    if (ev & EPOLLRDHUP)
        m |= LOOP_RDHUP;
    if (ev & (EPOLLERR | EPOLLHUP))
        m |= LOOP_HUP;
    return m;
}

int loop_add(struct loop *l, struct loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev) == -1)
        return TH_EIO;
    io->events = events;
    return 0;
}

int loop_mod(struct loop *l, struct loop_io *io, uint32_t events)
{
    if (io->events == events)
        return 0;
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) == -1)
        return TH_EIO;
    io->events = events;
    return 0;
}

void loop_del(struct loop *l, struct loop_io *io)
{
    if (io->fd >= 0)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

/* ---- the timer heap: a binary min-heap on `when` ---- */

static void heap_set(struct loop *l, size_t i, struct loop_timer *t)
{
    l->heap[i] = t;
    t->slot = i + 1;
}

static void heap_up(struct loop *l, size_t i)
{
    struct loop_timer *t = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->when <= t->when)
            break;
        heap_set(l, i, l->heap[parent]);
        i = parent;
    }
    heap_set(l, i, t);
}

static void heap_down(struct loop *l, size_t i)
{
    struct loop_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1]->when < l->heap[c]->when)
            c++;
        if (t->when <= l->heap[c]->when)
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

static int heap_grow(struct loop *l)
{
    size_t cap = l->capheap ? l->capheap * 2 : 64;
    struct loop_timer **h = realloc(l->heap, cap * sizeof *h);
    if (h == NULL)
        return TH_ENOMEM;
    l->heap = h;
    l->capheap = cap;
    return 0;
}

/* Sets the timerfd to the earliest deadline when that is sooner than what
 * it is armed for: a later or removed head only costs a spurious wake-up,
 * which is cheaper than a syscall per timer change. */
static void arm_timerfd(struct loop *l)
{
    if (l->nheap == 0)
        return;
    double when = l->heap[0]->when;
    if (l->armed != 0 && l->armed <= when)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (when <= 0)
        when = 1e-9;
    its.it_value.tv_sec = (time_t)when;
    its.it_value.tv_nsec = (long)((when - (double)its.it_value.tv_sec) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    if (timerfd_settime(l->timer_io.fd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        l->armed = when;
}

void loop_timer_at(struct loop *l, struct loop_timer *t, double when)
{
    if (t->slot != 0) {
        double old = t->when;
        t->when = when;
        if (when < old)
            heap_up(l, t->slot - 1);
        else
            heap_down(l, t->slot - 1);
    } else {
        if (l->nheap == l->capheap && heap_grow(l) < 0)
            return; /* out of memory: the timer stays off */
        t->when = when;
        l->heap[l->nheap] = t;
        heap_up(l, l->nheap++);
    }
    arm_timerfd(l);
}

void loop_timer_start(struct loop *l, struct loop_timer *t, double delay)
{
    loop_timer_at(l, t, l->now + delay);
}

void loop_timer_stop(struct loop *l, struct loop_timer *t)
{
    if (t->slot == 0)
        return;
    size_t i = t->slot - 1;
    t->slot = 0;
    struct loop_timer *last = l->heap[--l->nheap];
    if (i == l->nheap)
        return;
    heap_set(l, i, last);
    heap_up(l, i);
    heap_down(l, last->slot - 1);
}

static void run_timers(struct loop *l)
{
    while (l->nheap > 0 && l->heap[0]->when <= l->now) {
        struct loop_timer *t = l->heap[0];
        loop_timer_stop(l, t);
        t->cb(t);
    }
    arm_timerfd(l);
}

void loop_set_after(struct loop *l, void (*fn)(void *arg), void *arg)
{
    l->after = fn;
    l->after_arg = arg;
}

void loop_wake(struct loop *l)
{
    /* From an fd or timer callback the after-hook runs anyway, later in
     * this same iteration: a wake-up would only cost a write now and a
     * spurious iteration (epoll_wait, read) next. */
    if (l->woken || l->in_events)
        return;
    uint64_t one = 1;
    if (write(l->wake_io.fd, &one, sizeof one) != sizeof one) {
        drain_fd(l->wake_io.fd); /* the count is full: empty it */
        if (write(l->wake_io.fd, &one, sizeof one) != sizeof one)
            return;
    }
    l->woken = 1;
}

static int wait_ms(struct loop *l, int timeout_ms)
{
    if (l->woken)
        return 0;
    if (l->nheap == 0)
        return timeout_ms;
    double left = (l->heap[0]->when - loop_clock()) * 1000.0;
    int ms = left <= 0 ? 0 : left >= INT_MAX ? INT_MAX : (int)left;
    if (ms < left && ms < INT_MAX)
        ms++; /* round up: waking early would only wait again */
    return (timeout_ms < 0 || ms < timeout_ms) ? ms : timeout_ms;
}

void loop_poll_until(struct loop *l, double until)
{
    if (until > l->poll_until)
        l->poll_until = until;
}

/* Waits as epoll_wait() for up to `ms` (-1: no limit), but first polls
 * without sleeping until poll_until (or the end of `ms`), yielding the CPU
 * between polls so that a process it waits for can run on it. */
static int wait_events(struct loop *l, struct epoll_event *evs, int ms)
{
    if (ms == 0 || l->poll_until == 0)
        return epoll_wait(l->epfd, evs, LOOP_EVENTS, ms);
    double start = loop_clock(), end = l->poll_until, now = start;
    if (ms > 0 && start + ms / 1000.0 < end)
        end = start + ms / 1000.0;
    while (now < end) {
        int n = epoll_wait(l->epfd, evs, LOOP_EVENTS, 0);
        if (n != 0)
            return n;
        sched_yield();
        now = loop_clock();
    }
    l->poll_until = 0;
    if (ms > 0) {
        ms -= (int)((now - start) * 1000.0);
        ms = ms < 0 ? 0 : ms;
    }
    return epoll_wait(l->epfd, evs, LOOP_EVENTS, ms);
}

int loop_run_once(struct loop *l, int timeout_ms)
{
    struct epoll_event evs[LOOP_EVENTS];
    int n = wait_events(l, evs, wait_ms(l, timeout_ms));
    if (n == -1 && errno != EINTR)
        return TH_EIO;
    l->now = loop_clock();
    int outer = l->in_events, outer_turn = l->in_turn;
    l->in_events = 1;
    l->in_turn = 1;
    for (int i = 0; i < n; i++) {
        struct loop_io *io = evs[i].data.ptr;
        io->cb(io, from_epoll(evs[i].events));
    }
    run_timers(l);
    l->in_events = outer;
    if (!outer)
        free_later_now(l);
    if (l->after != NULL)
        l->after(l->after_arg);
    l->in_turn = outer_turn;
    return 0;
}
