/* test_payload.c - large payloads read in place by the workers: inputs
 * in memfds that the worker maps (the host's own through the embedding
 * API, the client's through the daemon) and outputs written into them
 * after the input (worker_wire.h, FRAME_F_FD; docs/protocol.md, OUT_AT).
 *
 * Sizes around each threshold (the arena, the memfd, the page of the
 * output's offset, max_payload); outputs larger and smaller than the
 * room kept for them; a memfd that cannot grow; and the task ending
 * otherwise than by its worker's answer while its memfd is in use: cancel,
 * timeout, the worker's death, the client leaving.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "raw_client.h"
#include "fdpass.h"
#include "taskhost_host.h"
#include "worker_wire.h"

#define MAX_PAYLOAD (4u << 20)
#define PAYLOAD_SO TEST_PLUGINS "/payload.so"

/* Sizes around every threshold a payload crosses. */
static const size_t sizes[] = {
    SHM_MIN - 1,        SHM_MIN,            SHM_MIN + 1,
    PAYLOAD_FD_MIN - 1, PAYLOAD_FD_MIN,     PAYLOAD_FD_MIN + 1,
    PAYLOAD_FD_MIN + PAYLOAD_OUT_ALIGN - 1, PAYLOAD_FD_MIN + PAYLOAD_OUT_ALIGN,
    PAYLOAD_FD_MIN + PAYLOAD_OUT_ALIGN + 1, 1u << 20,
    (1u << 20) + 1,     MAX_PAYLOAD,
};
#define NSIZES (sizeof sizes / sizeof *sizes)

/* Bytes that differ per task and per offset. */
static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 12));
}

/* Whether out[0..olen) is what `task` makes of in[0..len). */
static void check_output(const char *task, const uint8_t *in, size_t len,
                         const void *out, size_t olen)
{
    if (strcmp(task, "echo") == 0) {
        assert_int_equal(olen, len);
        assert_memory_equal(out, in, len);
    } else if (strcmp(task, "triple") == 0) {
        assert_int_equal(olen, 3 * len);
        for (int k = 0; k < 3; k++)
            assert_memory_equal((const uint8_t *)out + k * len, in, len);
    } else {
        assert_int_equal(olen, len < 10 ? len : 10);
        assert_memory_equal(out, in, olen);
    }
}

/* Descriptors of process pid whose link holds `name`. */
static int count_fds(pid_t pid, const char *name)
{
    char dir[64], path[400], link[256];
    struct dirent *e;
    int n = 0;
    DIR *d;

    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    d = opendir(dir);
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t k = readlink(path, link, sizeof link - 1);
        if (k < 0)
            continue;
        link[k] = '\0';
        if (strstr(link, name))
            n++;
    }
    closedir(d);
    return n;
}

/* Inodes of the memfds named `name` that process pid maps, into v[0..);
 * returns how many. */
static int mapped_inodes(pid_t pid, const char *name, unsigned long *v,
                         int cap)
{
    char path[64], line[512];
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL && n < cap) {
        unsigned long ino;
        if (strstr(line, name) == NULL ||
            sscanf(line, "%*s %*s %*s %*s %lu", &ino) != 1)
            continue;
        v[n++] = ino;
    }
    fclose(f);
    return n;
}

static int shares_an_inode(const unsigned long *a, int na,
                           const unsigned long *b, int nb)
{
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            if (a[i] == b[j])
                return 1;
    return 0;
}

/* ---- the embedding API: the host's own memfds ---- */

static th_host *host_with(int pools)
{
    th_host *h;
    th_pool_opts o;
    char err[512];
    const char *names[] = {"a", "b"};

    assert_int_equal(th_host_new(&h), 0);
    if (th_host_add_plugin(h, "payload", PAYLOAD_SO, err, sizeof err) < 0)
        fail_msg("add_plugin: %s", err);
    for (int i = 0; i < pools; i++) {
        th_pool_opts_init(&o);
        o.name = names[i];
        o.plugin = "payload";
        o.min_workers = o.max_workers = 1;
        if (th_host_add_pool(h, &o, err, sizeof err) < 0)
            fail_msg("add_pool: %s", err);
    }
    return h;
}

static void host_check(th_host *h, const char *pool, const char *task,
                       size_t len, unsigned seed)
{
    uint8_t *in = malloc(len);
    th_result r;

    assert_non_null(in);
    fill(in, len, seed);
    assert_int_equal(th_host_call(h, pool, task, in, len, NULL, &r), 0);
    if (r.state != TH_STATE_OK)
        fail_msg("%s of %zu bytes: %s: %s", task, len,
                 th_state_name(r.state), (const char *)r.data);
    check_output(task, in, len, r.data, r.len);
    th_result_free(&r);
    free(in);
}

static void embedded_payloads_around_each_threshold_come_back_whole(
    void **state)
{
    const char *tasks[] = {"echo", "triple", "head"};
    th_host *h = host_with(1);

    (void)state;
    for (size_t i = 0; i < NSIZES; i++)
        for (size_t k = 0; k < 3; k++)
            host_check(h, "a", tasks[k], sizes[i], (unsigned)(i * 3 + k));
    /* larger than an arena's ring */
    host_check(h, "a", "echo", SHM_RING + 1, 99);
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

static void embedded_failure_after_output_answers_its_message(void **state)
{
    th_host *h = host_with(1);
    uint8_t *in = malloc(1u << 20);
    th_result r;

    (void)state;
    fill(in, 1u << 20, 5);
    assert_int_equal(th_host_call(h, "a", "fail", in, 1u << 20, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_ERROR);
    assert_string_equal(r.data, "failed after output");
    th_result_free(&r);
    host_check(h, "a", "echo", 1u << 20, 6);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    free(in);
}

static pid_t host_worker_pid(th_host *h, const char *pool)
{
    th_result r;
    long pid;

    assert_int_equal(th_host_call(h, pool, "pid", "", 0, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    pid = strtol(r.data, NULL, 10);
    th_result_free(&r);
    return (pid_t)pid;
}

static void embedded_pools_never_share_a_payload_memfd(void **state)
{
    unsigned long ia[64], ib[64];
    th_host *h = host_with(2);

    (void)state;
    for (int i = 0; i < 12; i++)
        host_check(h, i % 2 ? "a" : "b", "echo",
                   i % 3 ? 1u << 20 : PAYLOAD_FD_MIN, (unsigned)i);
    int na = mapped_inodes(host_worker_pid(h, "a"), "memfd:taskhost-task",
                           ia, 64);
    int nb = mapped_inodes(host_worker_pid(h, "b"), "memfd:taskhost-task",
                           ib, 64);
    assert_in_range(na, 1, FD_SLOTS);
    assert_in_range(nb, 1, FD_SLOTS);
    assert_false(shares_an_inode(ia, na, ib, nb));
    /* and the host keeps a few for reuse, not one per task */
    assert_in_range(count_fds(getpid(), "memfd:taskhost-task"), 1, 8);
    th_host_close(h, TH_CLOSE_GRACEFUL);
    assert_int_equal(count_fds(getpid(), "memfd:taskhost-task"), 0);
}

struct many {
    uint8_t *in[64];
    size_t len[64];
    int done, good;
};

struct many_one {
    struct many *m;
    int i;
};

static void on_many(const th_result *r, void *arg)
{
    struct many_one *o = arg;
    struct many *m = o->m;
    m->done++;
    if (r->state == TH_STATE_OK && r->len == m->len[o->i] &&
        memcmp(r->data, m->in[o->i], r->len) == 0)
        m->good++;
}

/* More memfds in flight than a worker has slots: the host names some
 * by slot, sends others, and the worker's slots take turns. */
static void embedded_more_memfds_in_flight_than_slots_come_back_whole(
    void **state)
{
    enum { N = 4 * FD_SLOTS };
    th_host *h = host_with(1);
    struct many m = {0};
    struct many_one o[N];

    (void)state;
    for (int round = 0; round < 2; round++) {
        m.done = m.good = 0;
        for (int i = 0; i < N; i++) {
            m.len[i] = PAYLOAD_FD_MIN + (size_t)i * 4097;
            m.in[i] = malloc(m.len[i]);
            fill(m.in[i], m.len[i], (unsigned)(i + round * N));
            o[i] = (struct many_one){&m, i};
            assert_int_equal(th_host_submit(h, "a", "echo", m.in[i], m.len[i],
                                            NULL, on_many, &o[i], NULL),
                             0);
        }
        double end = hx_now() + DEADLINE;
        while (m.done < N && hx_now() < end)
            th_host_step(h, 100);
        assert_int_equal(m.good, N);
        for (int i = 0; i < N; i++)
            free(m.in[i]);
    }
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* A closed loop of large echo tasks, 8 in flight, each answer submitting
 * the next, as a steady stream of them does. */
struct stream {
    th_host *h;
    uint8_t *in;
    size_t len;
    int left, done, good;
};

static void on_stream(const th_result *r, void *arg)
{
    struct stream *s = arg;

    s->done++;
    if (r->state == TH_STATE_OK && r->len == s->len &&
        memcmp(r->data, s->in, s->len) == 0)
        s->good++;
    if (s->left > 0) {
        s->left--;
        assert_int_equal(th_host_submit(s->h, "a", "echo", s->in, s->len,
                                        NULL, on_stream, s, NULL),
                         0);
    }
}

static void stream_run(th_host *h, size_t len, int n)
{
    struct stream s = {.h = h, .len = len, .left = n - 8};
    double end = hx_now() + DEADLINE;

    s.in = malloc(len);
    fill(s.in, len, (unsigned)len);
    for (int i = 0; i < 8; i++)
        assert_int_equal(th_host_submit(h, "a", "echo", s.in, len, NULL,
                                        on_stream, &s, NULL),
                         0);
    while (s.done < n && hx_now() < end)
        th_host_step(h, 100);
    assert_int_equal(s.good, n);
    free(s.in);
}

/* Rounds of large tasks of two sizes reuse the memfds of the first round:
 * no new memfd, so no page of one to fault in. */
static void embedded_rounds_of_large_tasks_create_no_new_memfds(void **state)
{
    unsigned long first[64], now[64];
    th_host *h = host_with(1);
    int nfirst = 0;

    (void)state;
    for (int round = 0; round < 3; round++) {
        stream_run(h, PAYLOAD_FD_MIN, 40);
        stream_run(h, 1u << 20, 40);
        int n = mapped_inodes(getpid(), "memfd:taskhost-task", now, 64);
        if (round == 0) {
            memcpy(first, now, sizeof now);
            nfirst = n;
            continue;
        }
        for (int i = 0; i < n; i++)
            if (!shares_an_inode(&now[i], 1, first, nfirst))
                fail_msg("round %d: memfd %lu is new", round, now[i]);
    }
    th_host_close(h, TH_CLOSE_GRACEFUL);
}

/* ---- through the daemon: the client's memfds ---- */

static const char pools[] =
    "plugins = ( { name = \"payload\"; path = \"" PAYLOAD_SO "\"; } );\n"
    "pools = ( { name = \"a\"; plugin = \"payload\"; min_workers = 2;\n"
    "            max_workers = 2; max_queue = 4096; },\n"
    "          { name = \"b\"; plugin = \"payload\"; min_workers = 1;\n"
    "            max_workers = 1; } );\n";

static int setup(void **state)
{
    struct hx *t = calloc(1, sizeof *t);

    td_init(t, "th-payload");
    td_write_conf(t, "max_payload = 4194304;", pools);
    td_start(t);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct hx *t = *state;

    td_cleanup(t);
    free(t);
    return 0;
}

/* One call of `task` on an input of len bytes, checked. */
static void call_check(th_client *c, const char *pool, const char *task,
                       size_t len, unsigned seed)
{
    uint8_t *in = malloc(len);
    th_result r;

    assert_non_null(in);
    fill(in, len, seed);
    assert_int_equal(th_client_call(c, pool, task, in, len, NULL, &r), 0);
    if (r.state != TH_STATE_OK)
        fail_msg("%s of %zu bytes: %s: %s", task, len,
                 th_state_name(r.state), (const char *)r.data);
    check_output(task, in, len, r.data, r.len);
    th_client_result_free(&r);
    free(in);
}

static void daemon_payloads_around_each_threshold_come_back_whole(
    void **state)
{
    const char *tasks[] = {"echo", "triple", "head"};
    th_client *c = td_connect(*state);

    for (size_t i = 0; i < NSIZES; i++)
        for (size_t k = 0; k < 3; k++)
            call_check(c, "a", tasks[k], sizes[i], (unsigned)(i * 3 + k));
    th_client_close(c);
}

static void daemon_input_one_over_max_payload_is_refused(void **state)
{
    th_client *c = td_connect(*state);
    uint8_t *in = calloc(1, MAX_PAYLOAD + 1);
    th_result r;

    assert_int_equal(
        th_client_call(c, "a", "echo", in, MAX_PAYLOAD + 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_int_equal(r.code, TH_ETOOBIG);
    th_client_result_free(&r);
    th_client_close(c);
    free(in);
    assert_int_equal(hx_ping(*state), 0);
}

static void daemon_failure_after_output_answers_its_message(void **state)
{
    th_client *c = td_connect(*state);
    uint8_t *in = malloc(1u << 20);
    th_result r;

    fill(in, 1u << 20, 3);
    assert_int_equal(th_client_call(c, "a", "fail", in, 1u << 20, NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_ERROR);
    assert_int_equal(r.len, strlen("failed after output"));
    assert_memory_equal(r.data, "failed after output", r.len);
    th_client_result_free(&r);
    call_check(c, "a", "echo", 1u << 20, 4);
    th_client_close(c);
    free(in);
}

static pid_t daemon_worker_pid(th_client *c, const char *pool)
{
    th_result r;
    long pid;

    assert_int_equal(th_client_call(c, pool, "pid", "", 0, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    pid = strtol(r.data, NULL, 10);
    th_client_result_free(&r);
    return (pid_t)pid;
}

static void daemon_pools_never_share_a_client_memfd(void **state)
{
    unsigned long ia[128], ib[128];
    th_client *c = td_connect(*state);
    pid_t wa[2];

    for (int i = 0; i < 12; i++)
        call_check(c, i % 2 ? "a" : "b", "echo", 1u << 20, (unsigned)i);
    wa[0] = daemon_worker_pid(c, "a");
    int na = mapped_inodes(wa[0], "memfd:taskhost-input", ia, 64);
    /* pool a has two workers: take the other's too if it answers */
    for (int i = 0; i < 8; i++) {
        wa[1] = daemon_worker_pid(c, "a");
        if (wa[1] != wa[0]) {
            na += mapped_inodes(wa[1], "memfd:taskhost-input", ia + na, 64);
            break;
        }
    }
    int nb = mapped_inodes(daemon_worker_pid(c, "b"), "memfd:taskhost-input",
                           ib, 64);
    assert_true(na > 0);
    assert_true(nb > 0);
    assert_false(shares_an_inode(ia, na, ib, nb));
    th_client_close(c);
}

/* ---- a task that ends otherwise than by its worker's answer ---- */

struct one {
    int done, progress;
    th_result r;
};

static void on_one(const th_result *r, void *arg)
{
    struct one *o = arg;
    o->done = 1;
    o->r = *r;
    o->r.data = NULL;
}

static void on_started(uint64_t tag, uint64_t done, uint64_t total,
                       const char *msg, void *arg)
{
    (void)tag, (void)done, (void)total, (void)msg;
    ((struct one *)arg)->progress = 1;
}

/* Steps c until *flag is set, within DEADLINE. */
static void step_until(th_client *c, const int *flag)
{
    double end = hx_now() + DEADLINE;

    while (!*flag && hx_now() < end)
        assert_true(th_client_step(c, 100) >= 0);
    assert_true(*flag);
}

/* Submits "stall" on 1 MiB to pool b (one worker); it writes half its
 * output into the memfd, reports progress and waits to be stopped. */
static uint64_t start_stall(th_client *c, struct one *o, double timeout)
{
    static uint8_t in[1u << 20];
    th_submit_opts opts = {.task_timeout = timeout};
    uint64_t tag;

    fill(in, sizeof in, 8);
    memset(o, 0, sizeof *o);
    assert_int_equal(th_client_submit(c, "b", "stall", in, sizeof in, &opts,
                                      on_one, o, &tag),
                     0);
    return tag;
}

/* The next tasks on the same connection (and so on memfds of the same
 * client) come back whole, in both pools. */
static void next_ones_are_whole(th_client *c)
{
    for (int i = 0; i < 6; i++)
        call_check(c, i % 2 ? "a" : "b", i % 3 ? "echo" : "triple",
                   (1u << 20) + (size_t)i, (unsigned)(40 + i));
}

static void daemon_cancel_of_a_large_running_task(void **state)
{
    th_client *c = td_connect(*state);
    struct one o;

    th_client_on_progress(c, on_started, &o);
    uint64_t tag = start_stall(c, &o, 0);
    step_until(c, &o.progress); /* running, half its output written */
    assert_int_equal(th_client_cancel(c, tag), 0);
    step_until(c, &o.done);
    assert_int_equal(o.r.state, TH_STATE_CANCELLED);
    th_client_on_progress(c, NULL, NULL);
    next_ones_are_whole(c);
    th_client_close(c);
}

static void daemon_timeout_of_a_large_task(void **state)
{
    th_client *c = td_connect(*state);
    struct one o;

    start_stall(c, &o, 0.2);
    step_until(c, &o.done);
    assert_int_equal(o.r.state, TH_STATE_TIMEOUT);
    next_ones_are_whole(c);
    th_client_close(c);
}

static void daemon_worker_death_in_the_middle_of_an_output(void **state)
{
    th_client *c = td_connect(*state);
    uint8_t *in = malloc(1u << 20);
    th_result r;

    fill(in, 1u << 20, 11);
    assert_int_equal(th_client_call(c, "b", "die", in, 1u << 20, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_CRASHED);
    th_client_result_free(&r);
    next_ones_are_whole(c);
    th_client_close(c);
    free(in);
}

static void daemon_client_leaving_with_large_tasks_in_flight(void **state)
{
    struct hx *t = *state;
    static uint8_t in[1u << 20];
    struct one o[4];
    th_client *c = td_connect(t);

    fill(in, sizeof in, 12);
    for (int i = 0; i < 4; i++) {
        memset(&o[i], 0, sizeof o[i]);
        assert_int_equal(th_client_submit(c, i % 2 ? "a" : "b", "stall", in,
                                          sizeof in, NULL, on_one, &o[i],
                                          NULL),
                         0);
    }
    assert_true(th_client_step(c, 50) >= 0); /* sent */
    th_client_close(c);
    c = td_connect(t);
    next_ones_are_whole(c);
    th_client_close(c);
    /* the daemon let go of the first client's memfds once its tasks
     * ended (the workers may keep theirs mapped, bounded) */
    double end = hx_now() + DEADLINE;
    while (count_fds(t->pid, "memfd:taskhost-input") > 0 && hx_now() < end)
        hx_pause_ms(20);
    assert_int_equal(count_fds(t->pid, "memfd:taskhost-input"), 0);
    assert_int_equal(hx_ping(t), 0);
}

/* ---- memfd slots (IN_SLOT) while a task still uses the old memfd ---- */

/* A sealed memfd named `name` of len bytes, filled with `seed`. */
static int named_memfd(const char *name, size_t len, unsigned seed)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    uint8_t *m;

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
    m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(m != MAP_FAILED);
    fill(m, len, seed);
    munmap(m, len);
    return fd;
}

static void send_slot_submit(int sock, uint64_t tag, const char *pool,
                             const char *task, size_t len, uint16_t flags,
                             int fd)
{
    struct proto_submit s = {.pool = pool, .pool_len = strlen(pool),
                             .task = task, .task_len = strlen(task),
                             .input_len = len, .slot = 0};
    struct fdpass_queue q = {0};
    struct buf b = {0};

    assert_int_equal(
        proto_put_submit(&b, tag, PROTO_F_IN_SLOT | flags, &s), 0);
    if (fd >= 0)
        assert_int_equal(fdpass_push(&q, fd, 0, 0, 0), 0);
    assert_int_equal(fdpass_send(sock, b.data, b.len, &q, 0), (ssize_t)b.len);
    fdpass_clear(&q);
    buf_free(&b);
}

/* Reads frames until one of type `type` tagged `tag`, and parses it as a
 * RESULT into *r unless r is NULL. */
static void read_until(int sock, uint8_t type, uint64_t tag,
                       struct proto_result *r)
{
    static uint8_t buf[1u << 18];
    struct proto_frame f;

    do
        assert_true(td_read_frame(sock, buf, sizeof buf, &f) > 0);
    while (f.type != type || f.tag != tag);
    if (r != NULL)
        assert_int_equal(proto_parse_result(&f, r), 0);
}

static void echo_of_slot(int sock, uint64_t tag, int fd, unsigned seed)
{
    uint8_t want[100000];
    struct proto_result r;

    fill(want, sizeof want, seed);
    send_slot_submit(sock, tag, "a", "echo", sizeof want,
                     fd >= 0 ? PROTO_F_IN_FD : 0, fd);
    read_until(sock, PROTO_RESULT, tag, &r);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_int_equal(r.len, sizeof want);
    assert_memory_equal(r.data, want, sizeof want);
}

/* A slot given a new memfd while a task runs on its old one: the new one
 * serves at once, the old one lives on until its task is answered, and
 * the daemon keeps neither once the client is gone. */
static void daemon_slot_refilled_while_its_old_memfd_is_in_use(void **state)
{
    struct hx *t = *state;
    int sock = td_raw_connect(t);
    int a = named_memfd("slot-old", 1u << 20, 1);
    int b = named_memfd("slot-new", 100000, 2);
    struct proto_result r;
    struct buf c = {0};

    send_slot_submit(sock, 1, "b", "stall", 1u << 20,
                     PROTO_F_IN_FD | PROTO_F_OUT_AT | PROTO_F_PROGRESS, a);
    read_until(sock, PROTO_PROGRESS, 1, NULL); /* running */
    echo_of_slot(sock, 2, b, 2);
    echo_of_slot(sock, 3, -1, 2);
    assert_int_equal(proto_put_cancel(&c, 4, 0, 1), 0);
    assert_int_equal(write(sock, c.data, c.len), (ssize_t)c.len);
    read_until(sock, PROTO_RESULT, 1, &r);
    assert_int_equal(r.state, TH_STATE_CANCELLED);
    echo_of_slot(sock, 5, -1, 2);
    close(sock);
    close(a);
    close(b);
    buf_free(&c);
    double end = hx_now() + DEADLINE;
    while (count_fds(t->pid, "memfd:slot-") > 0 && hx_now() < end)
        hx_pause_ms(20);
    assert_int_equal(count_fds(t->pid, "memfd:slot-"), 0);
    assert_int_equal(hx_ping(t), 0);
}

/* A memfd sealed against growing: the worker cannot put the output after
 * the input, and the daemon sends it in a memfd of its own. */
static void daemon_memfd_that_cannot_grow_gets_its_output_otherwise(
    void **state)
{
    enum { LEN = 100000 };
    struct proto_submit s = {.pool = "a", .pool_len = 1, .task = "triple",
                             .task_len = 6, .input_len = LEN};
    struct fdpass_queue q = {0};
    struct buf b = {0};
    uint8_t hdr[4096], *in;
    struct proto_frame f;
    struct proto_result r;
    uint64_t pos = 0;
    size_t got = 0, need = PROTO_HEADER_SIZE;
    int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int sock = td_raw_connect(*state);

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, LEN), 0);
    in = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(in != MAP_FAILED);
    fill(in, LEN, 13);
    assert_int_equal(
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    assert_int_equal(proto_put_submit(&b, 1,
                                      PROTO_F_IN_FD | PROTO_F_OUT_FD |
                                          PROTO_F_OUT_AT,
                                      &s),
                     0);
    assert_int_equal(fdpass_push(&q, fd, 0, 0, 0), 0);
    assert_int_equal(fdpass_send(sock, b.data, b.len, &q, 0), (ssize_t)b.len);
    long n;
    while ((n = proto_decode(hdr, got, sizeof hdr, &f, &need)) == 0) {
        ssize_t k = fdpass_recv(sock, hdr + got, need - got, &q, pos);
        if (k == -1 && errno == EAGAIN) {
            struct pollfd p = {.fd = sock, .events = POLLIN};
            assert_int_equal(poll(&p, 1, (int)(DEADLINE * 1000)), 1);
            continue;
        }
        assert_true(k > 0);
        got += (size_t)k;
        pos += (uint64_t)k;
    }
    assert_true(n > 0);
    assert_int_equal(proto_parse_result(&f, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_int_equal(r.flags, PROTO_F_RES_FD);
    assert_int_equal(r.len, 3 * LEN);
    int out = fdpass_take(&q, 0);
    assert_true(out >= 0);
    uint8_t *m = mmap(NULL, 3 * LEN, PROT_READ, MAP_SHARED, out, 0);
    assert_true(m != MAP_FAILED);
    check_output("triple", in, LEN, m, 3 * LEN);
    munmap(m, 3 * LEN);
    munmap(in, LEN);
    close(out);
    close(fd);
    close(sock);
    fdpass_clear(&q);
    buf_free(&b);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            embedded_payloads_around_each_threshold_come_back_whole),
        cmocka_unit_test(embedded_failure_after_output_answers_its_message),
        cmocka_unit_test(embedded_pools_never_share_a_payload_memfd),
        cmocka_unit_test(embedded_rounds_of_large_tasks_create_no_new_memfds),
        cmocka_unit_test(
            embedded_more_memfds_in_flight_than_slots_come_back_whole),
        T(daemon_payloads_around_each_threshold_come_back_whole),
        T(daemon_input_one_over_max_payload_is_refused),
        T(daemon_failure_after_output_answers_its_message),
        T(daemon_pools_never_share_a_client_memfd),
        T(daemon_cancel_of_a_large_running_task),
        T(daemon_timeout_of_a_large_task),
        T(daemon_worker_death_in_the_middle_of_an_output),
        T(daemon_client_leaving_with_large_tasks_in_flight),
        T(daemon_slot_refilled_while_its_old_memfd_is_in_use),
        T(daemon_memfd_that_cannot_grow_gets_its_output_otherwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
