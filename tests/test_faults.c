/* test_faults.c - faults injected into the real daemon under load.
 *
 * Each scenario starts taskhostd on a temporary config, runs a pipelined
 * load of echo tasks from several clients (thousands in flight), and
 * injects one fault: workers that crash, are killed from outside, hang,
 * run away with memory, scribble on their fds or fork; a pool whose init
 * fails or hangs; signal storms; clients that vanish or read slowly. The
 * last scenario injects several at once. Each then checks the promises:
 *
 *  - every task submitted got exactly one answer, in a state its kind
 *    allows, with its own output (counted by id; the counts are printed);
 *  - the daemon is still up and serves a fresh echo task, and its engine
 *    holds no task any more;
 *  - it shuts down cleanly, and no worker, grandchild or zombie is left
 *    (the test process reaps orphans, so it sees them);
 *  - the log names each fault once.
 *
 * Loads scale with $TASKHOST_LOAD_SCALE (smaller in sanitizer builds).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "client_wire.h"

#define NCLIENTS 4
#define WINDOW 1000         /* tasks in flight per client */
#define LOAD_DEADLINE 120.0 /* seconds a load may take to be answered */
#define STOP_DEADLINE 30.0

#define OK HX_STATE_BIT(TH_STATE_OK)
#define CRASHED HX_STATE_BIT(TH_STATE_CRASHED)
#define TIMEOUT HX_STATE_BIT(TH_STATE_TIMEOUT)
#define MEMORY HX_STATE_BIT(TH_STATE_MEMORY)
#define REJECTED HX_STATE_BIT(TH_STATE_REJECTED)
#define ERROR HX_STATE_BIT(TH_STATE_ERROR)

struct fx {
    struct hx h;
    struct hx_load l;
};

static const char echo_pool[] =
    "  { name = \"echo\"; plugin = \"echo\"; min_workers = 2;"
    " max_workers = 2; max_queue = 1000000; task_timeout = 30.0; }";

/* Tasks each client submits: 4 clients of 2,500 make 10,000 per run. */
static long per_client(void)
{
    return hx_scaled(2500, 250);
}

static const struct hx_kind echo_kind = {"echo", "echo", "echo", NULL,
                                         OK,     0,      1};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);

    if (f == NULL || hx_init(&f->h, "faults") < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    hx_load_free(&f->l);
    hx_cleanup(&f->h);
    free(f);
    return 0;
}

static void die(struct fx *f, const char *what)
{
    hx_show_log(&f->h, 40);
    fail_msg("%s: %s", what, f->h.why);
}

/* Starts the daemon with the echo pool and `pools` (NULL: none more),
 * then connects the load's clients; nothing is submitted yet. */
static void start(struct fx *f, const char *pools, const struct hx_kind *kinds,
                  int nkinds)
{
    char text[4096];

    snprintf(text, sizeof text, "%s%s%s", echo_pool, pools ? ",\n" : "",
             pools ? pools : "");
    if (hx_write_conf(&f->h, NULL, text) < 0)
        die(f, "config");
    if (hx_start(&f->h) < 0)
        die(f, "start");
    if (hx_load_start(&f->l, &f->h, NCLIENTS, per_client(), WINDOW, kinds,
                      nkinds) < 0)
        die(f, "clients");
}

/* Runs the load while calling `inject` every interval_ms until it has
 * reported `steps` steps done (it returns 1 for a step done, 0 to be
 * called again at the next turn). The load keeps submitting meanwhile. */
static void inject_during_load(struct fx *f, int interval_ms, int steps,
                               int (*inject)(struct fx *, int))
{
    double end = hx_now() + LOAD_DEADLINE, next;
    int step = 0;

    f->l.keep_going = 1;
    while (f->l.answered < f->l.window && hx_now() < end)
        if (hx_load_pump(&f->l, 10) < 0)
            die(f, "load before the fault");
    next = hx_now();
    while (step < steps) {
        if (hx_now() > end)
            fail_msg("injection not done in %.0f s (%d of %d steps)",
                     LOAD_DEADLINE, step, steps);
        if (hx_load_pump(&f->l, 2) < 0)
            die(f, "load during the fault");
        if (hx_now() >= next) {
            step += inject(f, step) > 0;
            next = hx_now() + interval_ms / 1000.0;
        }
    }
    f->l.keep_going = 0;
}

/* Answers the load, checks every answer, the daemon's health, a clean
 * shutdown and that nothing is left behind. */
static void finish(struct fx *f, const char *name)
{
    int rc;

    if (hx_load_finish(&f->l, LOAD_DEADLINE) < 0)
        die(f, "load");
    hx_load_report(&f->l, name, stdout);
    if (hx_load_check(&f->l) < 0)
        die(f, "answers");
    if (!hx_alive(&f->h))
        die(f, "taskhostd died");
    if (hx_echo_ok(&f->h) < 0)
        die(f, "fresh echo");
    if (hx_wait_idle(&f->h, LOAD_DEADLINE) < 0)
        die(f, "engine");
    if (hx_no_zombies(&f->h, 10.0) < 0)
        die(f, "reaping");
    hx_load_free(&f->l);
    rc = hx_stop(&f->h, SIGTERM, STOP_DEADLINE);
    if (rc != 0) {
        if (rc > 0)
            snprintf(f->h.why, sizeof f->h.why, "exit status %d", rc);
        die(f, "shutdown");
    }
    if (hx_leftovers(&f->h, 10.0) < 0)
        die(f, "leftovers");
}

/* The log must hold exactly n lines with `needle` (and `also`). */
static void expect_log(struct fx *f, const char *needle, const char *also,
                       int n)
{
    int got =
        also ? hx_log_count2(&f->h, needle, also) : hx_log_count(&f->h, needle);

    printf("    log: '%s'%s%s%s x%d\n", needle, also ? " with '" : "",
           also ? also : "", also ? "'" : "", got);
    if (got != n) {
        hx_show_log(&f->h, 60);
        fail_msg("log has %d lines with '%s', expected %d", got, needle, n);
    }
}

static void expect_log_between(struct fx *f, const char *needle, int lo, int hi)
{
    int got = hx_log_count(&f->h, needle);

    printf("    log: '%s' x%d\n", needle, got);
    if (got < lo || got > hi) {
        hx_show_log(&f->h, 60);
        fail_msg("log has %d lines with '%s', expected %d to %d", got, needle,
                 lo, hi);
    }
}

/* Polls until the log holds at least n lines with both needles (also
 * may be NULL): the daemon has then seen what was done to it. */
static void wait_log(struct fx *f, const char *needle, const char *also, int n)
{
    double end = hx_now() + LOAD_DEADLINE;

    while ((also ? hx_log_count2(&f->h, needle, also)
                 : hx_log_count(&f->h, needle)) < n) {
        if (hx_now() > end) {
            hx_show_log(&f->h, 60);
            fail_msg("the log never had %d lines with '%s'", n, needle);
        }
        hx_pause_ms(10);
    }
}

/* Tasks of kind k answered in state s. */
static long answered(const struct fx *f, int k, th_state s)
{
    return f->l.by_kind[k][s];
}

/* ---- workers that crash: a few crash tasks mixed into the load ---- */

static const char crash_pool[] =
    "  { name = \"crash\"; plugin = \"crash\"; min_workers = 1;"
    " max_workers = 2; task_timeout = 30.0; }";

static void crash_scenario(void **state, const char *task, long count,
                           const char *needle, const char *name)
{
    struct fx *f = *state;
    const struct hx_kind kinds[] = {
        echo_kind,
        {task, "crash", task, "x", CRASHED, count, 0},
    };

    start(f, crash_pool, kinds, 2);
    finish(f, name);
    assert_int_equal(answered(f, 1, TH_STATE_CRASHED), count);
    expect_log(f, needle, NULL, (int)count);
}

static void worker_sigsegv(void **state)
{
    crash_scenario(state, "segv", 6, "(SIGSEGV)", "worker_sigsegv");
}

static void worker_abort(void **state)
{
    crash_scenario(state, "abort", 6, "(SIGABRT)", "worker_abort");
}

static void worker_exit(void **state)
{
    crash_scenario(state, "exit", 6, "exited with status 3", "worker_exit");
}

/* ---- SIGKILL from outside, at a worker taken from the stats ---- */

#define KILLS 5

static pid_t killed[KILLS * 4];
static int nkilled;

static int was_killed(pid_t pid)
{
    for (int i = 0; i < nkilled; i++)
        if (killed[i] == pid)
            return 1;
    return 0;
}

/* Kills one worker of pool `pool` that is busy (else idle) and was not
 * killed before. Returns 1 when it did. */
static int kill_a_worker(struct fx *f, const char *pool)
{
    pid_t pids[16];
    int n = hx_worker_pids(&f->h, pool, "busy", pids, 16);

    if (n == 0)
        n = hx_worker_pids(&f->h, pool, "idle", pids, 16);
    for (int i = 0; i < n; i++) {
        if (was_killed(pids[i]) ||
            nkilled == (int)(sizeof killed / sizeof killed[0]))
            continue;
        if (kill(pids[i], SIGKILL) == 0) {
            killed[nkilled++] = pids[i];
            return 1;
        }
    }
    return 0;
}

static int kill_echo_worker(struct fx *f, int step)
{
    (void)step;
    return kill_a_worker(f, "echo");
}

static void worker_sigkill_from_outside(void **state)
{
    struct fx *f = *state;
    const struct hx_kind kinds[] = {
        {"echo", "echo", "echo", NULL, OK | CRASHED, 0, 1},
    };

    nkilled = 0;
    start(f, NULL, kinds, 1);
    inject_during_load(f, 100, KILLS, kill_echo_worker);
    /* a fresh task must not go to a worker not yet known dead */
    wait_log(f, "killed by signal 9 (SIGKILL)", NULL, KILLS);
    finish(f, "worker_sigkill_from_outside");
    /* only a worker killed mid-task takes a task with it */
    assert_true(answered(f, 0, TH_STATE_CRASHED) <= KILLS);
    expect_log(f, "killed by signal 9 (SIGKILL)", NULL, KILLS);
}

/* ---- hangs: a busy loop and a sleep, past task_timeout ---- */

static const char faulty_pool[] =
    "  { name = \"faulty\"; plugin = \"faulty\"; min_workers = 1;"
    " max_workers = 2; task_timeout = 0.3; kill_grace = 0.2; }";

static void faulty_scenario(void **state, const char *task, long count,
                            unsigned expect, const char *name)
{
    struct fx *f = *state;
    const struct hx_kind kinds[] = {
        echo_kind,
        {task, "faulty", task, "x", expect, count, 0},
    };

    start(f, faulty_pool, kinds, 2);
    finish(f, name);
    for (int s = 0; s < TH_STATE_COUNT; s++)
        if (expect == HX_STATE_BIT(s))
            assert_int_equal(answered(f, 1, (th_state)s), count);
}

static void hang_in_busy_loop(void **state)
{
    struct fx *f = *state;

    faulty_scenario(state, "spin", 4, TIMEOUT, "hang_in_busy_loop");
    expect_log(f, "ran longer than", NULL, 4);
    /* it ignores SIGTERM: SIGKILL after kill_grace */
    expect_log(f, "did not exit in time", NULL, 4);
}

static void hang_in_sleep(void **state)
{
    struct fx *f = *state;

    faulty_scenario(state, "block", 4, TIMEOUT, "hang_in_sleep");
    expect_log(f, "ran longer than", NULL, 4);
}

static int send_sigusr1(struct fx *f, int step);

/* ---- runaway memory: past memory_hard_limit mid-task ---- */

static const char leak_pool[] =
    "  { name = \"leak\"; plugin = \"leak\"; min_workers = 1;"
    " max_workers = 2; memory_hard_limit = \"256M\";"
    " memory_check_interval = 0.01; }";

static void runaway_memory(void **state)
{
    struct fx *f = *state;
    const struct hx_kind kinds[] = {
        echo_kind,
        {"leak", "leak", "leak", "2048", MEMORY, 3, 0},
    };

    start(f, leak_pool, kinds, 2);
    finish(f, "runaway_memory");
    assert_int_equal(answered(f, 1, TH_STATE_MEMORY), 3);
    expect_log(f, "above memory_hard_limit", NULL, 3);
}

static void runaway_memory_during_restarts(void **state)
{
    struct fx *f = *state;
    const struct hx_kind kinds[] = {
        echo_kind,
        {"leak", "leak", "leak", "2048", MEMORY, 6, 0},
    };

    start(f, leak_pool, kinds, 2);
    inject_during_load(f, 10, 100, send_sigusr1);
    finish(f, "runaway_memory_during_restarts");
    assert_int_equal(answered(f, 1, TH_STATE_MEMORY), 6);
    expect_log(f, "above memory_hard_limit", NULL, 6);
}

/* ---- plugins that scribble on their fds, close them, fork ---- */

static long file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Whether the file holds only printable text, tabs and newlines. */
static int is_text(const char *path)
{
    FILE *fp = fopen(path, "rb");
    int c, ok = 1;

    if (fp == NULL)
        return 0;
    while ((c = fgetc(fp)) != EOF)
        if ((c < 0x20 && c != '\n' && c != '\t') || c > 0x7e)
            ok = 0;
    fclose(fp);
    return ok;
}

static void garbage_on_stdout_and_stderr(void **state)
{
    struct fx *f = *state;

    faulty_scenario(state, "garbage", 6, OK, "garbage_on_stdout_and_stderr");
    /* 64 KiB on each: it lands where the daemon's own streams go, and
     * the log stays a log */
    assert_true(file_size(f->h.out) >= 6 * 65536);
    assert_true(file_size(f->h.err) >= 6 * 65536);
    assert_true(is_text(f->h.log));
}

static void closes_its_fds_and_parent_socket(void **state)
{
    struct fx *f = *state;

    /* The task ran to its end: its output, kept in the arena, is its
     * answer; the worker could not go on and exits. */
    faulty_scenario(state, "closefds", 4, OK,
                    "closes_its_fds_and_parent_socket");
    expect_log(f, "exited with status 0", "error", 4);
}

static void garbage_on_parent_socket(void **state)
{
    struct fx *f = *state;

    faulty_scenario(state, "scribble", 4, CRASHED, "garbage_on_parent_socket");
    expect_log(f, "answered a task it was not running", NULL, 4);
}

static void forks_a_child_and_exits(void **state)
{
    /* finish() fails if a forked child outlives the daemon */
    faulty_scenario(state, "fork", 6, OK, "forks_a_child_and_exits");
}

/* ---- init that fails or hangs: the pool fails, its tasks answered ---- */

static void init_scenario(void **state, const char *pool, const char *needle,
                          const char *also, const char *name)
{
    struct fx *f = *state;
    char text[256];
    const struct hx_kind kinds[] = {
        echo_kind,
        {pool, pool, "echo", "x", REJECTED, 5, 0},
    };

    snprintf(text, sizeof text,
             "  { name = \"%s\"; plugin = \"%s\"; min_workers = 1;"
             " max_workers = 1; init_timeout = 0.3; }",
             pool, pool);
    start(f, text, kinds, 2);
    finish(f, name);
    assert_int_equal(answered(f, 1, TH_STATE_REJECTED), 5);
    /* five failed starts in a row, then the pool gives up once */
    expect_log(f, needle, also, 5);
    expect_log(f, "did not start 5 times in a row", NULL, 1);
}

static void init_fails(void **state)
{
    /* the worker's own line, not the pool's failure that quotes it */
    init_scenario(state, "badinit", "init fails on purpose", "[badinit ",
                  "init_fails");
}

static void init_hangs(void **state)
{
    init_scenario(state, "inithang", "did not finish init in time", NULL,
                  "init_hangs");
}

/* ---- signal storms: 100 signals in a second ---- */

static const char hash_pool_fmt[] =
    "  { name = \"hash\"; plugin = \"hash\"; min_workers = 1;"
    " max_workers = 2; max_queue = 1000000; settings = { rounds = %d; }; }";

static int send_sighup(struct fx *f, int step)
{
    /* every tenth signal comes with a changed config: the echo pool is
     * resized and the hash pool restarted for new settings */
    if (step % 10 == 9) {
        char pools[1024], hash[256];
        int odd = (step / 10) % 2;
        snprintf(hash, sizeof hash, hash_pool_fmt, 1 + odd);
        snprintf(pools, sizeof pools,
                 "  { name = \"echo\"; plugin = \"echo\"; min_workers = 2;"
                 " max_workers = %d; max_queue = 1000000;"
                 " task_timeout = 30.0; },\n%s",
                 2 + odd, hash);
        if (hx_write_conf(&f->h, NULL, pools) < 0)
            fail_msg("config: %s", f->h.why);
    }
    return kill(f->h.pid, SIGHUP) == 0;
}

static void sighup_storm(void **state)
{
    struct fx *f = *state;
    char hash[256];
    const struct hx_kind kinds[] = {
        echo_kind,
        {"hash", "hash", "sha256", "abc", OK, 0, 1},
    };

    snprintf(hash, sizeof hash, hash_pool_fmt, 1);
    start(f, hash, kinds, 2);
    inject_during_load(f, 10, 100, send_sighup);
    finish(f, "sighup_storm");
    /* signals that arrive while one is pending merge into it */
    expect_log_between(f, "reloaded:", 1, 100);
    expect_log(f, "reload refused", NULL, 0);
}

static int send_sigusr1(struct fx *f, int step)
{
    (void)step;
    return kill(f->h.pid, SIGUSR1) == 0;
}

static void sigusr1_storm(void **state)
{
    struct fx *f = *state;
    char hash[256];
    const struct hx_kind kinds[] = {
        echo_kind,
        {"hash", "hash", "sha256", "abc", OK, 0, 1},
    };

    snprintf(hash, sizeof hash, hash_pool_fmt, 1);
    start(f, hash, kinds, 2);
    inject_during_load(f, 10, 100, send_sigusr1);
    finish(f, "sigusr1_storm");
    expect_log_between(f, "rolling restart of every pool", 1, 100);
}

/* ---- clients that vanish mid-stream ---- */

static const char sleep_pool[] =
    "  { name = \"sleep\"; plugin = \"sleep\"; min_workers = 1;"
    " max_workers = 2; max_queue = 100000; }";

#define VANISHING 5
#define VANISH_TASKS 1000

/* Connects, pipelines 1,000 sleep tasks, and closes once they are all
 * written, without reading a single answer. */
static int vanish(struct fx *f, int step)
{
    th_client *c = hx_connect(&f->h);
    double end = hx_now() + 30.0;

    (void)step;
    if (c == NULL)
        fail_msg("connect: %s", f->h.why);
    for (int i = 0; i < VANISH_TASKS; i++)
        if (th_client_submit(c, "sleep", "sleep", "20", 2, NULL, NULL, NULL,
                             NULL) < 0)
            fail_msg("submit failed");
    while (th_client_want_write(c) && hx_now() < end) {
        struct pollfd p = {.fd = th_client_fd(c), .events = POLLOUT};
        poll(&p, 1, 10);
        if (th_client_step(c, 0) < 0)
            break;
    }
    th_client_close(c);
    return 1;
}

/* Sum of the queued tasks the log says were dropped with their clients. */
static long dropped_in_log(const struct hx *h)
{
    FILE *fp = fopen(h->log, "r");
    char line[2048];
    long sum = 0, n;

    if (fp == NULL)
        return 0;
    while (fgets(line, sizeof line, fp)) {
        const char *p = strstr(line, "in flight: ");
        if (p && sscanf(p, "in flight: %ld queued dropped", &n) == 1)
            sum += n;
    }
    fclose(fp);
    return sum;
}

static void client_vanishes_mid_stream(void **state)
{
    struct fx *f = *state;
    long dropped;

    start(f, sleep_pool, &echo_kind, 1);
    inject_during_load(f, 50, VANISHING, vanish);
    finish(f, "client_vanishes_mid_stream");
    expect_log(f, "left with", NULL, VANISHING);
    /* two workers run a few 20 ms sleeps; the rest went with their
     * clients (and finish() saw the engine empty) */
    dropped = dropped_in_log(&f->h);
    printf("    queued tasks dropped with their clients: %ld of %d\n", dropped,
           VANISHING * VANISH_TASKS);
    assert_true(dropped >= VANISHING * (VANISH_TASKS - 100));
}

/* ---- a client that reads its answers very slowly ---- */

#define SLOW_TASKS 4096
#define SLOW_INPUT 4096 /* 16 MiB of answers: past the daemon's 8 MiB cap */

struct slow {
    int fd;
    struct buf out, in;
    size_t sent_before_reading, total;
    uint8_t got[SLOW_TASKS + 1];
    long answers, dup, bad;
};

static void slow_input(char *buf, uint64_t tag)
{
    memset(buf, 'a' + (int)(tag % 26), SLOW_INPUT);
    snprintf(buf, 17, "%016llu", (unsigned long long)tag);
    buf[16] = '.';
}

static int slow_connect(struct fx *f)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    strcpy(sa.sun_path, f->h.sock);
    if (fd == -1 || connect(fd, (struct sockaddr *)&sa, sizeof sa) == -1)
        return -1;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void slow_send(struct slow *s)
{
    ssize_t n;

    if (buf_avail(&s->out) == 0)
        return;
    n = send(s->fd, buf_head(&s->out), buf_avail(&s->out), MSG_NOSIGNAL);
    if (n > 0)
        buf_consume(&s->out, (size_t)n);
}

/* Handles the answers read so far. */
static void slow_parse(struct slow *s)
{
    struct proto_frame fr;
    struct proto_result r;
    size_t pos = 0, need;
    long n;
    char want[SLOW_INPUT];

    while ((n = proto_decode(buf_head(&s->in) + pos, buf_avail(&s->in) - pos,
                             UINT32_MAX, &fr, &need)) > 0) {
        pos += (size_t)n;
        if (fr.type != PROTO_RESULT || fr.tag == 0 || fr.tag > SLOW_TASKS ||
            proto_parse_result(&fr, &r) < 0) {
            s->bad++;
            continue;
        }
        if (s->got[fr.tag]++) {
            s->dup++;
            continue;
        }
        s->answers++;
        slow_input(want, fr.tag);
        if (r.state != TH_STATE_OK || r.len != SLOW_INPUT ||
            memcmp(r.data, want, SLOW_INPUT) != 0)
            s->bad++;
    }
    buf_consume(&s->in, pos);
}

/* Reads at most `max` bytes of answers. Returns -1 at EOF. */
static int slow_read(struct slow *s, size_t max)
{
    ssize_t n;

    if (buf_reserve(&s->in, max) < 0)
        return -1;
    n = recv(s->fd, s->in.data + s->in.len, max, 0);
    if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
        return -1;
    if (n > 0) {
        s->in.len += (size_t)n;
        slow_parse(s);
    }
    return 0;
}

/* Phase 1 of the slow client: sends what the daemon takes, reading
 * nothing, until all is sent or the daemon took nothing for 300 ms; then
 * says so on `ready` and waits for `go` to close. */
static void slow_stall(struct slow *s, int go, int ready, double end)
{
    int said = 0;

    for (;;) {
        struct pollfd p[2] = {{.fd = go, .events = POLLIN},
                              {.fd = s->fd, .events = POLLOUT}};
        int n = poll(p, buf_avail(&s->out) ? 2 : 1, 300);
        if (p[0].revents || hx_now() > end)
            return;
        if (p[1].revents & POLLOUT)
            slow_send(s);
        if (!said && (n == 0 || buf_avail(&s->out) == 0)) {
            said = write(ready, "r", 1) == 1;
            s->sent_before_reading = s->total - buf_avail(&s->out);
        }
    }
}

/* The slow client, in a process of its own: stalls (above), then reads
 * a few bytes at a time with pauses. Exits 0 when every task was
 * answered once and ok; writes what it saw to `report`. */
static void slow_client(struct fx *f, int go, int ready, const char *report)
{
    static struct slow s;
    static char input[SLOW_INPUT];
    double end = hx_now() + 60.0, began;
    unsigned seed = 12345;
    FILE *fp;

    s.fd = slow_connect(f);
    if (s.fd < 0)
        _exit(2);
    for (uint64_t tag = 1; tag <= SLOW_TASKS; tag++) {
        struct proto_submit sub = {.pool = "echo",
                                   .pool_len = 4,
                                   .task = "echo",
                                   .task_len = 4,
                                   .input = input,
                                   .input_len = SLOW_INPUT};
        slow_input(input, tag);
        proto_put_submit(&s.out, tag, 0, &sub);
    }
    s.total = s.out.len;
    slow_stall(&s, go, ready, end);
    began = hx_now();
    /* phase 2: a few bytes at a time, then up to 16 KiB a millisecond */
    for (long reads = 0; s.answers < SLOW_TASKS && hx_now() < end; reads++) {
        int tiny = reads < 2048;
        size_t max = tiny ? 1 + rand_r(&seed) % 16 : 1 + rand_r(&seed) % 16384;
        slow_send(&s);
        if (slow_read(&s, max) < 0)
            break;
        if (!tiny || reads % 4 == 0)
            hx_pause_ms(1);
    }
    fp = fopen(report, "w");
    if (fp != NULL) {
        fprintf(fp,
                "slow reader: the daemon took %.1f of %.1f MiB before it "
                "read; %ld "
                "answers, %ld duplicates, %ld bad, read in %.1f s\n",
                s.sent_before_reading / 1048576.0, s.total / 1048576.0,
                s.answers, s.dup, s.bad, hx_now() - began);
        fclose(fp);
    }
    _exit(s.answers == SLOW_TASKS && s.dup == 0 && s.bad == 0 ? 0 : 1);
}

/* The daemon's resident memory in KiB, or -1. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *fp;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    fp = fopen(path, "r");
    if (fp == NULL)
        return -1;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(fp);
    return kib;
}

static void slow_reader_does_not_block_others(void **state)
{
    struct fx *f = *state;
    char report[160], line[256] = "", c;
    int go[2], ready[2], status;
    struct pollfd p;
    pid_t pid;
    FILE *fp;
    double end;

    start(f, NULL, &echo_kind, 1);
    snprintf(report, sizeof report, "%s/slow.txt", f->h.dir);
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(ready), 0);
    pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        close(go[1]);
        close(ready[0]);
        slow_client(f, go[0], ready[1], report);
    }
    close(go[0]);
    close(ready[1]);
    p = (struct pollfd){.fd = ready[0], .events = POLLIN};
    assert_int_equal(poll(&p, 1, 30000), 1);
    assert_int_equal(read(ready[0], &c, 1), 1);
    printf("    daemon RSS with a stalled client: %ld KiB\n",
           rss_kib(f->h.pid));
    /* everyone else is served while the slow client reads nothing */
    if (hx_load_finish(&f->l, LOAD_DEADLINE) < 0)
        die(f, "load beside a stalled client");
    assert_int_equal(waitpid(pid, &status, WNOHANG), 0);
    close(go[1]);
    close(ready[0]);
    end = hx_now() + 90.0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (hx_now() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("the slow client did not finish");
        }
        hx_pause_ms(10);
    }
    fp = fopen(report, "r");
    if (fp != NULL) {
        if (fgets(line, sizeof line, fp) == NULL)
            line[0] = '\0';
        fclose(fp);
    }
    printf("    %s", line);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    finish(f, "slow_reader_does_not_block_others");
}

/* ---- several at once ---- */

static int mixed_injector(struct fx *f, int step)
{
    /* 100 SIGUSR1 over a second; a SIGHUP every tenth; a worker killed
     * every 25th (the step waits for one to kill); a client vanishing at
     * the 50th */
    if (step % 25 == 0 && !kill_a_worker(f, "echo"))
        return 0;
    kill(f->h.pid, SIGUSR1);
    if (step % 10 == 5)
        kill(f->h.pid, SIGHUP);
    if (step == 50)
        vanish(f, step);
    return 1;
}

static void mixed_faults_at_once(void **state)
{
    struct fx *f = *state;
    const struct hx_kind kinds[] = {
        {"echo", "echo", "echo", NULL, OK | CRASHED, 0, 1},
        {"segv", "crash", "segv", "x", CRASHED, 3, 0},
        {"abort", "crash", "abort", "x", CRASHED, 3, 0},
        {"exit", "crash", "exit", "x", CRASHED, 3, 0},
        {"spin", "faulty", "spin", "x", TIMEOUT, 2, 0},
        {"block", "faulty", "block", "x", TIMEOUT, 2, 0},
        {"closefds", "faulty", "closefds", "x", OK, 2, 0},
        {"scribble", "faulty", "scribble", "x", CRASHED, 2, 0},
        {"fork", "faulty", "fork", "x", OK, 2, 0},
        {"garbage", "faulty", "garbage", "x", OK, 2, 0},
        {"leak", "leak", "leak", "2048", MEMORY, 2, 0},
        {"badinit", "badinit", "echo", "x", REJECTED, 2, 0},
    };
    char pools[2048];
    int n = (int)(sizeof kinds / sizeof kinds[0]);

    nkilled = 0;
    snprintf(pools, sizeof pools,
             "%s,\n%s,\n%s,\n%s,\n"
             "  { name = \"badinit\"; plugin = \"badinit\"; min_workers = 1;"
             " max_workers = 1; }",
             crash_pool, faulty_pool, leak_pool, sleep_pool);
    start(f, pools, kinds, n);
    inject_during_load(f, 10, 100, mixed_injector);
    wait_log(f, "pool echo: worker", "killed by signal 9 (SIGKILL)", 4);
    finish(f, "mixed_faults_at_once");
    for (int k = 1; k < n; k++) {
        long got = 0;
        for (int s = 0; s < TH_STATE_COUNT; s++)
            got += answered(f, k, (th_state)s);
        assert_int_equal(got, kinds[k].count);
    }
    expect_log(f, "(SIGSEGV)", NULL, 3);
    expect_log(f, "(SIGABRT)", NULL, 3);
    expect_log(f, "exited with status 3", NULL, 3);
    expect_log(f, "ran longer than", NULL, 4);
    expect_log(f, "above memory_hard_limit", NULL, 2);
    /* Two closefds tasks in one batch can end one worker, and a worker
     * stopping anyway (a restart of the storm) exits as asked. */
    int closed = hx_log_count2(&f->h, "exited with status 0", "error");
    printf("    log: 'exited with status 0' with 'error' x%d\n", closed);
    assert_in_range(closed, 0, 2);
    expect_log(f, "answered a task it was not running", NULL, 2);
    expect_log(f, "pool echo: worker", "killed by signal 9 (SIGKILL)", 4);
    expect_log(f, "left with", NULL, 1);
    /* a rolling restart gives a failed pool another chance */
    expect_log_between(f, "did not start 5 times in a row", 1, 100);
    expect_log_between(f, "rolling restart of every pool", 1, 100);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

/* An optional argument selects tests by name ("worker_*"). */
int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        T(worker_sigsegv),
        T(worker_abort),
        T(worker_exit),
        T(worker_sigkill_from_outside),
        T(hang_in_busy_loop),
        T(hang_in_sleep),
        T(runaway_memory),
        T(runaway_memory_during_restarts),
        T(garbage_on_stdout_and_stderr),
        T(closes_its_fds_and_parent_socket),
        T(garbage_on_parent_socket),
        T(forks_a_child_and_exits),
        T(init_fails),
        T(init_hangs),
        T(sighup_storm),
        T(sigusr1_storm),
        T(client_vanishes_mid_stream),
        T(slow_reader_does_not_block_others),
        T(mixed_faults_at_once),
    };

    hx_become_reaper();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
