/* taskhost_client.h - talk to a running taskhostd over its local socket.
 *
 * Build and link with $(pkg-config --cflags --libs taskhost-client): the
 * client library stands alone (th_strerror() and th_state_name() are in
 * it too), the engine is not needed. One th_client is one
 * connection; it is single-threaded: use it from one thread at a time.
 *
 *   th_client *c;
 *   char err[256];
 *   if (th_client_connect(&c, NULL, err, sizeof err) < 0) { ... }
 *   th_result r;
 *   if (th_client_call(c, "default", "sha256", "abc", 3, NULL, &r) == 0)
 *       printf("%s %.*s\n", th_state_name(r.state), (int)r.len,
 *              (const char *)r.data);
 *   th_client_result_free(&r);
 *   th_client_close(c);
 *
 * Many tasks at once: th_client_submit() queues a task and returns at
 * once; its th_done_fn is called with the final answer from inside a later
 * th_client_step() (or th_client_wait(), th_client_call(), or a control
 * call). Requests are sent in batches when the loop runs, so submitting
 * thousands of tasks costs a few system calls. To plug into your own poll
 * loop, wait for th_client_fd() to be readable (and writable while
 * th_client_want_write() is true) and call th_client_step(c, 0).
 *
 * Every submitted task gets exactly one answer. A task the daemon refuses
 * to read (its input is over the daemon's max_payload) is answered
 * TH_STATE_REJECTED with code TH_ETOOBIG; the daemon then closes the
 * connection. If the connection is lost, the tasks still waiting are
 * answered TH_STATE_CANCELLED with code TH_EIO and the reason as message. Results carry, in `id`, the tag that
 * th_client_submit() returned, not the daemon's task id.
 *
 * Inputs of 64 KiB and more travel in memfds passed over the socket, not
 * through it, once the daemon said it takes them (docs/protocol.md); a
 * connection keeps up to 64 of them (64 MiB) mapped for reuse, and large
 * outputs come back through the same memfds.
 *
 * Functions return 0 or a negative TH_E* code (see th_strerror()).
 */
#ifndef TASKHOST_CLIENT_H
#define TASKHOST_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "taskhost_host.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct th_client th_client;

/* The socket used when none is given: $TASKHOST_SOCKET if set, else the
 * socket the installed daemon listens on (/run/taskhost/taskhost.sock
 * unless taskhost was configured --with-socket=PATH). */
TH_EXPORT const char *th_client_default_socket(void);

/* Connects to the daemon listening at `path` (NULL: the default above).
 * On failure returns TH_ENOENT (no such socket), TH_EPERM, or TH_EIO and
 * writes a line into err (if given). A daemon that refuses this user
 * answers the first request with TH_EPERM. */
TH_EXPORT int th_client_connect(th_client **client, const char *path,
                                char *err, size_t errlen);

/* Closes the connection. Tasks still waiting get no answer. Must not be
 * called from a callback. NULL is allowed. */
TH_EXPORT void th_client_close(th_client *client);

/* Queues task `task` of pool `pool` with a copy of `len` input bytes.
 * `opts` may be NULL (the pool's limits). Returns 0 and the task's tag in
 * *tag (may be NULL): `done` will then be called exactly once with its
 * answer, never from inside this call. Returns TH_EINVAL (a name longer
 * than 255 bytes), TH_ETOOBIG (over 4 GiB) or TH_EIO (connection lost). */
TH_EXPORT int th_client_submit(th_client *client, const char *pool,
                               const char *task, const void *input,
                               size_t len, const th_submit_opts *opts,
                               th_done_fn done, void *arg, uint64_t *tag);

/* Called when the daemon accepted a task, with the daemon's task id (for
 * th_client_cancel_task() from anywhere, or taskhostctl cancel). */
typedef void (*th_accept_fn)(uint64_t tag, uint64_t task_id, void *arg);

/* Asks for th_accept_fn notices for the tasks submitted from now on (fn
 * NULL: stop). Costs one small frame per task. */
TH_EXPORT void th_client_on_accept(th_client *client, th_accept_fn fn,
                                   void *arg);

/* Asks for the progress reports of the tasks submitted from now on (fn
 * NULL: stop): fn gets the task's tag as `id`, `done` of `total` and a
 * message, from inside the loop like th_done_fn, never after the task's
 * answer. Reports are coalesced (latest wins, at most one per task every
 * TH_PROGRESS_INTERVAL_MS); the daemon drops some while this client lets
 * answers pile up. Tasks submitted without it cost nothing more. */
TH_EXPORT void th_client_on_progress(th_client *client, th_progress_fn fn,
                                     void *arg);

/* Submits a task and runs the loop until its answer, which is copied into
 * *result (free with th_client_result_free()); data is NUL-terminated.
 * Returns 0 when an answer, whatever its state, was had. */
#define th_client_call(client, pool, task, input, len, opts, result)       \
    th_client_call_sized((client), (pool), (task), (input), (len), (opts),   \
                         (result), sizeof(*(result)))
/* What th_client_call() calls, with the size of the caller's th_result so
 * that a newer library never writes past an older program's struct. */
TH_EXPORT int th_client_call_sized(th_client *client, const char *pool,
                                   const char *task, const void *input,
                                   size_t len, const th_submit_opts *opts,
                                   th_result *result, size_t result_size);

/* Frees what th_client_call() copied into `result`. */
TH_EXPORT void th_client_result_free(th_result *result);

/* The descriptor to poll: readable when answers came. */
TH_EXPORT int th_client_fd(const th_client *client);

/* Non-zero while requests wait to be written (poll for writing too). */
TH_EXPORT int th_client_want_write(const th_client *client);

/* Sends queued requests, waits up to timeout_ms (-1: forever, 0: not at
 * all) for answers and calls their callbacks. Returns 0, or TH_EIO once
 * the connection is lost (the waiting tasks are then answered). */
TH_EXPORT int th_client_step(th_client *client, int timeout_ms);

/* Busy polling, opt-in, for callers that wait for one answer at a time:
 * while requests wait for their answers, th_client_step() (and so
 * th_client_wait() and th_client_call()) polls the socket without sleeping
 * for up to `seconds` (yielding the CPU between polls) before it sleeps as
 * usual. It spares the wake-up from sleep when the answer comes within
 * that time, at the cost of the CPU spent polling. The daemon's pools have
 * their own busy_poll key (taskhost.conf(5)). 0 (the default) turns it
 * off; at most 0.01. Returns 0 or TH_EINVAL. */
TH_EXPORT int th_client_set_busy_poll(th_client *client, double seconds);

/* Runs the loop until no submitted task waits, or `timeout` seconds
 * passed (negative: no limit). Returns 0, TH_ETIMEDOUT or TH_EIO. */
TH_EXPORT int th_client_wait(th_client *client, double timeout);

/* Number of submitted tasks not answered yet. */
TH_EXPORT size_t th_client_pending(const th_client *client);

/* Cancels a task of this connection by its tag: a queued one is removed,
 * a running one's worker is killed; its callback gets TH_STATE_CANCELLED.
 * Returns 0, or TH_ENOENT when it is no longer pending. Runs the loop
 * until the daemon confirms (so other callbacks may run meanwhile). */
TH_EXPORT int th_client_cancel(th_client *client, uint64_t tag);

/* Cancels any task by the daemon's task id. Returns 0, TH_ENOENT, or
 * TH_EPERM (another user's task, and this user is not an admin). */
TH_EXPORT int th_client_cancel_task(th_client *client, uint64_t task_id);

/* Fetches the stats of pool `pool` (NULL: all) as TH_STATS_TEXT, _JSON
 * or _PROMETHEUS into a malloc'd NUL-terminated *out the caller frees. */
TH_EXPORT int th_client_stats(th_client *client, const char *pool,
                              int format, char **out);

/* Restarts pool `pool` (NULL: every pool), gracefully or forced (see
 * th_host_restart()). Admins only: else TH_EPERM. */
TH_EXPORT int th_client_restart(th_client *client, const char *pool,
                                int force);

/* Makes the daemon reload its config. On refusal returns the code and
 * the reason in err. Admins only. */
TH_EXPORT int th_client_reload(th_client *client, char *err, size_t errlen);

/* Makes the daemon shut down (TH_CLOSE_GRACEFUL or TH_CLOSE_FORCE).
 * Returns once the daemon acknowledged. Admins only. */
TH_EXPORT int th_client_shutdown(th_client *client, int how);

/* Asks the daemon for its version string ("taskhostd 0.1.0"), copied into
 * buf. A cheap way to see it serves. */
TH_EXPORT int th_client_ping(th_client *client, char *buf, size_t len);

/* The last message the daemon sent with a failure (a refused control
 * request, or the error frame before it closed the connection); "" if
 * none. Valid until the next call on this client. */
TH_EXPORT const char *th_client_error(const th_client *client);

#ifdef __cplusplus
}
#endif

#endif /* TASKHOST_CLIENT_H */
