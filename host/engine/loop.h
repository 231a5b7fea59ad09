/* loop.h - the one event loop (engine layer): epoll for fds, a heap of
 * timers behind a timerfd, and an eventfd to wake it.
 *
 * Everything the engine owns (worker sockets, spawners' event sockets,
 * timers) is driven from here, on one thread, so no state needs a lock;
 * code outside the engine comes in through th_watch and th_timer
 * (watch.c). loop.c is the
 * only file that touches epoll: the rest speaks LOOP_* event bits. The
 * epoll fd itself is what th_host_fd() hands to a caller's own loop: it is
 * readable whenever a registered fd, a due timer or a wake-up is pending.
 */
#ifndef TH_LOOP_H
#define TH_LOOP_H

#include <stddef.h>
#include <stdint.h>

struct loop;

/* Event bits, asked for (loop_add(), loop_mod()) and reported (the io's
 * callback). LOOP_HUP (error or hang-up) is always reported, never asked
 * for; LOOP_EDGE asks for edge-triggered reports. */
enum {
    LOOP_READ = 1,   /* readable */
    LOOP_WRITE = 2,  /* writable */
    LOOP_RDHUP = 4,  /* the peer shut down its writing side */
    LOOP_HUP = 8,    /* error or hang-up */
    LOOP_EDGE = 16   /* asked: report each change once */
};

/* A registered fd. Embed it in the owner's struct; `cb` gets the LOOP_*
 * bits that are ready. */
struct loop_io {
    int fd;
    uint32_t events;
    void (*cb)(struct loop_io *io, uint32_t events);
};

/* A one-shot timer. Embed it; zero-initialise (or loop_timer_init). */
struct loop_timer {
    double when;  /* monotonic seconds */
    size_t slot;  /* heap index + 1; 0 when not armed */
    void (*cb)(struct loop_timer *t);
};

/* Creates a loop. Returns 0 or TH_EIO/TH_ENOMEM. */
int loop_new(struct loop **out);

/* Frees the loop. Registered ios and timers are forgotten, not closed. */
void loop_free(struct loop *l);

/* The epoll fd: readable when loop_run_once() has work. */
int loop_fd(const struct loop *l);

/* Registers io->fd for `events` (LOOP_READ, ...). Returns 0 or TH_EIO. */
int loop_add(struct loop *l, struct loop_io *io, uint32_t events);

/* Frees `p` (malloc'd) once the current batch of events and timers has
 * been handled, or at once outside one: for handles that a callback may
 * stop while an event for them is still pending in the batch. */
void loop_free_later(struct loop *l, void *p);

/* Changes the events of a registered io. Skips the syscall if unchanged. */
int loop_mod(struct loop *l, struct loop_io *io, uint32_t events);

/* Unregisters io (before its fd is closed). */
void loop_del(struct loop *l, struct loop_io *io);

/* Monotonic time in seconds, read fresh. */
double loop_clock(void);

/* Monotonic time cached at the last wake-up: cheap, good enough for
 * timeouts and statistics. */
double loop_now(const struct loop *l);

/* Refreshes the cached time. */
void loop_update_time(struct loop *l);

/* Refreshes the cached time unless the loop is in a turn (handling
 * events, timers or the after-hook), whose time was read as it woke:
 * within a turn, every call sees the same time, as libuv's uv_now(). */
void loop_touch_time(struct loop *l);

/* Arms (or re-arms) `t` to fire `delay` seconds from now. */
void loop_timer_start(struct loop *l, struct loop_timer *t, double delay);

/* Arms `t` for absolute monotonic time `when`. */
void loop_timer_at(struct loop *l, struct loop_timer *t, double when);

/* Disarms `t` (no-op if not armed). */
void loop_timer_stop(struct loop *l, struct loop_timer *t);

static inline int loop_timer_armed(const struct loop_timer *t)
{
    return t->slot != 0;
}

/* Sets the function run at the end of every loop_run_once(), after events
 * and timers: where the host dispatches queued work and flushes writes. */
void loop_set_after(struct loop *l, void (*fn)(void *arg), void *arg);

/* Makes loop_fd() readable until the next loop_run_once(). Cheap when
 * already woken. */
void loop_wake(struct loop *l);

/* Busy polling, opt-in (like the kernel's busy_poll): until `until`
 * (loop_clock() seconds), loop_run_once() polls its fds without sleeping,
 * yielding the CPU between polls, and sleeps only after that. For the
 * short gap between handing work over and its answer, where a sleep and
 * a wake-up cost more than the work. A later `until` extends the window;
 * an earlier one changes nothing. The window ends by itself. */
void loop_poll_until(struct loop *l, double until);

/* Waits up to timeout_ms (-1: until something happens) and handles what
 * is ready: fds, due timers, then the after-hook. Returns 0 or TH_EIO. */
int loop_run_once(struct loop *l, int timeout_ms);

#endif /* TH_LOOP_H */
