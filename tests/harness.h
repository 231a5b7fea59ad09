/* harness.h - the tests' one way to run the real taskhostd: a temporary
 * directory with a config, the daemon started, pinged until ready,
 * signalled and reaped; other programs (taskhostctl, a second daemon,
 * --check-config) run the same way; and a pipelined load through the
 * client library that counts every answer by id.
 *
 * Two faces of the same helpers. hx_* never fail a test: they return 0
 * (or a pid, a status) or -1 with the reason in h->why, so that the soak
 * (no cmocka) and the fault scenarios decide what a failure means.
 * td_* are their cmocka forms: they end the running test with the
 * reason (and the daemon's log) instead of returning a failure.
 *
 * Every wait polls with a deadline; nothing sleeps to synchronise.
 */
#ifndef TH_TEST_HARNESS_H
#define TH_TEST_HARNESS_H

/* What the end-to-end tests use around it, so that each includes one
 * header (and cmocka's) for a daemon and the processes around it. */
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "taskhost_client.h"

#define DAEMON TOP_BUILDDIR "/host/taskhostd"
#define CTL TOP_BUILDDIR "/host/taskhostctl"
#define PLUGINS TOP_BUILDDIR "/plugins"
#define TEST_PLUGINS TOP_BUILDDIR "/tests/plugins/.libs"
#define DEADLINE 20.0 /* seconds any single td_ wait may take */

/* A daemon in a temporary directory: its config, socket, log (a file of
 * its own), stdout (daemon.out) and stderr (daemon.err after hx_init(),
 * the log itself after td_init(): what workers write there lands there). */
struct hx {
    char dir[64];
    char conf[128];
    char sock[128];
    char log[128];
    char out[128];
    char err[128];
    pid_t pid;     /* 0 when not running */
    int status;    /* wait status once it exited */
    char why[512]; /* the reason of the last failure */
};

/* How hx_spawn() runs a program; a zeroed one: as we are, stdin from
 * /dev/null, stdout and stderr to /dev/null. */
struct hx_proc {
    const char *in;  /* stdin (NULL: /dev/null) */
    const char *out; /* stdout, truncated first (NULL: /dev/null) */
    const char *err; /* stderr, appended to (NULL: /dev/null) */
    int as_user;     /* when set: setgroups(0), then gid, then uid */
    uid_t uid;
    gid_t gid;
    char *const *env;            /* the environment (NULL: ours) */
    const struct rlimit *nofile; /* RLIMIT_NOFILE to set (NULL: ours) */
};

/* Seconds on the monotonic clock. */
double hx_now(void);

/* Waits ms milliseconds (load shaping only, never to synchronise). */
void hx_pause_ms(int ms);

/* The load multiplier: $TASKHOST_LOAD_SCALE if set, else 1, or 1/3 in a
 * sanitizer build, where everything runs about three times slower. */
double hx_scale(void);

/* n scaled by hx_scale(), at least `min`. */
long hx_scaled(long n, long min);

/* Makes the calling process the reaper of orphaned descendants, so that
 * hx_leftovers() sees what a dead daemon left behind. Call once. */
void hx_become_reaper(void);

/* Creates a temporary directory /tmp/th-NAME.XXXXXX and names the files
 * in it (stderr: daemon.err). Returns 0 or -1. */
int hx_init(struct hx *h, const char *name);

/* Writes the config: the host group (socket, log, log_level info,
 * shutdown_timeout 10 s unless `host_extra` sets it, then `host_extra`,
 * may be NULL) and then `rest` as is. Written aside and renamed, so that
 * a reload never reads half a file. Returns 0 or -1. */
int hx_write_host_conf(struct hx *h, const char *host_extra,
                       const char *rest);

/* Writes the config: the host group with shutdown_timeout 20 s and
 * `host_extra` (may be NULL), every example plugin and the test plugins
 * faulty, badinit, inithang, and `pools` (the body of the pools list).
 * Returns 0 or -1. */
int hx_write_conf(struct hx *h, const char *host_extra, const char *pools);

/* Runs argv (argv[0] a path) as `p` says (NULL: all defaults). Returns
 * the child's pid, or -1 (reason in h->why when h is not NULL). */
pid_t hx_spawn(struct hx *h, char *const argv[], const struct hx_proc *p);

/* Waits up to `limit` seconds for pid to exit and stores its wait status
 * in *status. Returns 0, or -1 when it did not exit in time (it is then
 * SIGKILLed and reaped). */
int hx_wait_pid(pid_t pid, double limit, int *status);

/* Starts the daemon in the foreground on h->conf, as `p` says (NULL, or
 * any of its out and err left NULL: h->out, h->err), and polls until it
 * answers a ping. Returns 0, or -1 with the reason in h->why. */
int hx_start_proc(struct hx *h, const struct hx_proc *p);

/* hx_start_proc(h, NULL). */
int hx_start(struct hx *h);

/* One ping on a fresh connection: 0 when the daemon answered. */
int hx_ping(const struct hx *h);

/* Whether the daemon process is still there and not a zombie. */
int hx_alive(struct hx *h);

/* Connects a client; NULL on failure (reason in h->why). */
th_client *hx_connect(struct hx *h);

/* Runs one echo task on a fresh connection; 0 when it came back ok. */
int hx_echo_ok(struct hx *h);

/* Signals the daemon, waits for it to exit within `deadline` seconds
 * (then SIGKILLs it) and returns its exit status, or -1 if it was killed
 * by a signal or did not exit in time. */
int hx_stop(struct hx *h, int sig, double deadline);

/* Kills a daemon still running and removes the directory. */
void hx_cleanup(struct hx *h);

/* The daemon's stats of `pool` (NULL: all) as JSON, malloc'd, or NULL. */
char *hx_stats_json(struct hx *h, const char *pool);

/* The first number after "key": in json, or -1. */
long long hx_json_num(const char *json, const char *key);

/* Pids of pool's workers in state `state` ("busy", "idle"; NULL: any
 * state) from the stats' worker_list. Returns how many were stored. */
int hx_worker_pids(struct hx *h, const char *pool, const char *state,
                   pid_t *pids, int max);

/* Polls the stats until the engine holds no task. Returns 0 or -1. */
int hx_wait_idle(struct hx *h, double deadline);

/* Polls until no child of the daemon is a zombie. Returns 0 or -1. */
int hx_no_zombies(struct hx *h, double deadline);

/* After the daemon exited: reaps orphans that died, and polls until no
 * descendant is left alive. Returns 0, or -1 naming what is left. */
int hx_leftovers(struct hx *h, double deadline);

/* Reads a file (at most 64 KiB) into a static buffer, overwritten by the
 * next call; "" if missing. */
const char *hx_read_file(const char *path);

/* Polls until the daemon's log holds `needle`. Returns 0 or -1. */
int hx_wait_log(struct hx *h, const char *needle, double deadline);

/* Lines of the daemon's log holding `needle`. */
int hx_log_count(const struct hx *h, const char *needle);

/* Lines of the daemon's log holding both needles. */
int hx_log_count2(const struct hx *h, const char *a, const char *b);

/* Prints the last lines of the log and of daemon.err to stderr. */
void hx_show_log(const struct hx *h, int lines);

/* ---- the same, failing the running cmocka test ---- */

/* hx_init(), with the daemon's stderr going into its log. */
void td_init(struct hx *t, const char *name);

/* hx_write_host_conf(). */
void td_write_conf(struct hx *t, const char *host_extra, const char *rest);

/* hx_spawn(); td_spawn() with only stdout and stderr given. */
pid_t td_spawn_proc(char *const argv[], const struct hx_proc *p);
pid_t td_spawn(char *const argv[], const char *out, const char *err);

/* hx_wait_pid(): the wait status; fails the test when pid did not exit
 * in time (DEADLINE for td_wait_exit()). */
int td_wait_exit_within(pid_t pid, double limit);
int td_wait_exit(pid_t pid);

/* hx_start_proc(); td_start() is td_start_proc(t, NULL). */
void td_start_proc(struct hx *t, const struct hx_proc *p);
void td_start(struct hx *t);

/* Signals the daemon and waits up to DEADLINE (failing the test past it).
 * Returns its exit status, -1 if it died of a signal or was not running. */
int td_stop(struct hx *t, int sig);

/* Stops a daemon still running with SIGQUIT (saying so when it did not
 * exit cleanly), then hx_cleanup(). */
void td_cleanup(struct hx *t);

/* hx_wait_log() within DEADLINE. */
void td_wait_log(const struct hx *t, const char *needle);

/* hx_connect(). */
th_client *td_connect(const struct hx *t);

/* ---- the load ---- */

#define HX_MAX_KINDS 16
#define HX_STATE_BIT(s) (1u << (s))

/* One kind of task in the load. */
struct hx_kind {
    const char *name; /* for the report */
    const char *pool;
    const char *task;
    const char *input; /* NULL: "CLIENT:TAG", checked to come back as is */
    unsigned expect;   /* HX_STATE_BIT()s of the states it may end in */
    long count;        /* tasks of this kind in all; 0: it fills the rest */
    int weight;        /* share of the rest, for count 0 (default 1) */
};

struct hx_client;

struct hx_load {
    struct hx *h;
    int nclients;
    struct hx_client *cl;
    int window;      /* tasks in flight per client at most */
    long per_client; /* tasks each client submits at least */
    int keep_going;  /* submit past per_client until cleared */
    const struct hx_kind *kinds;
    int nkinds;
    long by_state[TH_STATE_COUNT];
    long by_kind[HX_MAX_KINDS][TH_STATE_COUNT];
    long submitted, answered, duplicates, unexpected, wrong_output;
    long lost; /* connections lost */
    char first_problem[256];
};

/* Connects `nclients` clients, each to submit `per_client` tasks with at
 * most `window` in flight, of the kinds given (spread evenly). Nothing is
 * submitted before the first hx_load_pump(). Returns 0 or -1. */
int hx_load_start(struct hx_load *l, struct hx *h, int nclients,
                  long per_client, int window, const struct hx_kind *kinds,
                  int nkinds);

/* Numbers the load's clients from `first` on (inputs "CLIENT:TAG"), so
 * that loads on several daemons never submit the same input. Call right
 * after hx_load_start(). */
void hx_load_number_from(struct hx_load *l, int first);

/* Submits up to the windows, waits up to timeout_ms for answers and
 * handles them. Returns 1 while tasks are left to submit or answer, 0
 * when done, -1 when a connection was lost. */
int hx_load_pump(struct hx_load *l, int timeout_ms);

/* Pumps until done or `deadline` seconds passed. Returns 0 or -1. */
int hx_load_finish(struct hx_load *l, double deadline);

/* Checks that every submitted task was answered exactly once, in a state
 * its kind allows, with its own output. Returns 0, or -1 with the reason
 * in l->h->why. */
int hx_load_check(struct hx_load *l);

/* Prints "NAME: submitted N, answered N: ok N, crashed N, ..." and the
 * kinds' own counts. */
void hx_load_report(const struct hx_load *l, const char *name, FILE *f);

/* Closes the clients and frees the load. */
void hx_load_free(struct hx_load *l);

#endif /* TH_TEST_HARNESS_H */
