/* test_memfd.c - large payloads in memfds between taskhostd and its
 * clients (docs/protocol.md, "Payloads in memfds"): round trips through the
 * client library, malformed descriptors from a raw socket, and the
 * daemon's descriptors after many large tasks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "harness.h"
#include "raw_client.h"
#include "fdpass.h"

static const char pools[] =
    "plugins = ( { name = \"echo\"; path = \"" PLUGINS "/echo.so\"; } );\n"
    "pools = ( { name = \"echo\"; plugin = \"echo\"; min_workers = 2;\n"
    "            max_workers = 2; max_queue = 4096; } );\n";

static int setup(void **state)
{
    struct hx *t = calloc(1, sizeof *t);

    td_init(t, "th-memfd");
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

/* Bytes that differ per task and per offset. */
static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 12));
}

/* Descriptors of process pid, or only those whose link holds `name`. */
static int count_fds(pid_t pid, const char *name)
{
    char dir[64], path[400], link[256];
    struct dirent *e;
    int n = 0;
    DIR *d;

    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    d = opendir(dir);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t k = readlink(path, link, sizeof link - 1);
        if (k < 0)
            continue;
        link[k] = '\0';
        if (name == NULL || strstr(link, name))
            n++;
    }
    closedir(d);
    return n - (name == NULL); /* not the directory's own */
}

static void echo_call(th_client *c, size_t len, unsigned seed)
{
    uint8_t *in = malloc(len);
    th_result r;

    assert_non_null(in);
    fill(in, len, seed);
    assert_int_equal(th_client_call(c, "echo", "echo", in, len, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_int_equal(r.len, len);
    assert_memory_equal(r.data, in, len);
    th_client_result_free(&r);
    free(in);
}

static void payloads_around_the_threshold_come_back_whole(void **state)
{
    const size_t sizes[] = {FDPASS_MIN - 1, FDPASS_MIN, FDPASS_MIN + 1,
                            1u << 20, 3 * (1u << 20) + 5, 100, 200000};
    th_client *c = td_connect(*state);

    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        echo_call(c, sizes[i], (unsigned)i);
    /* the large ones went through the library's memfds */
    assert_true(count_fds(getpid(), "memfd:taskhost-input") > 0);
    th_client_close(c);
    assert_int_equal(count_fds(getpid(), "memfd:taskhost"), 0);
}

static void input_that_grows_past_its_memfd_comes_back_whole(void **state)
{
    th_client *c = td_connect(*state);

    /* one memfd is reused, and grows, for each of these in turn */
    echo_call(c, FDPASS_MIN, 1);
    echo_call(c, 2u << 20, 2);
    echo_call(c, FDPASS_MIN + 7, 3);
    echo_call(c, 4u << 20, 4);
    th_client_close(c);
}

struct many {
    uint8_t **inputs;
    size_t len;
    uint64_t first; /* tag of inputs[0] */
    int done, good;
};

static void on_many(const th_result *r, void *arg)
{
    struct many *m = arg;

    m->done++;
    if (r->state == TH_STATE_OK && r->len == m->len &&
        memcmp(r->data, m->inputs[r->id - m->first], m->len) == 0)
        m->good++;
}

static void many_pipelined_large_tasks_are_all_answered_right(void **state)
{
    enum { N = 150 };
    struct many m = {.len = 256u << 10, .first = 2};
    th_client *c = td_connect(*state);
    uint64_t tag;

    /* tag 1 is the ping that asks about memfds, the tasks are 2.. */
    m.inputs = calloc(N, sizeof *m.inputs);
    for (int i = 0; i < N; i++) {
        m.inputs[i] = malloc(m.len);
        fill(m.inputs[i], m.len, (unsigned)i + 100);
        /* more than the library's memfds: the rest go in frames */
        assert_int_equal(th_client_submit(c, "echo", "echo", m.inputs[i],
                                          m.len, NULL, on_many, &m, &tag),
                         0);
        assert_int_equal(tag, (uint64_t)i + 2);
    }
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    assert_int_equal(m.done, N);
    assert_int_equal(m.good, N);
    /* and again, now that the library knows the daemon takes memfds */
    m.done = m.good = 0;
    m.first = N + 2;
    for (int i = 0; i < N; i++) {
        assert_int_equal(th_client_submit(c, "echo", "echo", m.inputs[i],
                                          m.len, NULL, on_many, &m, &tag),
                         0);
        assert_int_equal(tag, m.first + (uint64_t)i);
    }
    assert_int_equal(th_client_wait(c, DEADLINE), 0);
    assert_int_equal(m.good, N);
    for (int i = 0; i < N; i++)
        free(m.inputs[i]);
    free(m.inputs);
    th_client_close(c);
}

/* ---- raw frames ---- */

/* Sends the frames in b, with fd attached to the first when fd >= 0. */
static void send_frame(int sock, const struct buf *b, int fd)
{
    struct fdpass_queue q = {0};
    size_t done = 0;

    if (fd >= 0)
        assert_int_equal(fdpass_push(&q, fd, 0, 0, 0), 0);
    while (done < b->len) {
        struct pollfd p = {.fd = sock, .events = POLLOUT};
        ssize_t n = fdpass_send(sock, b->data + done, b->len - done, &q, done);
        assert_true(n >= 0);
        done += (size_t)n;
        if (done < b->len)
            assert_int_equal(poll(&p, 1, (int)(DEADLINE * 1000)), 1);
    }
    assert_int_equal(fdpass_len(&q), 0);
    fdpass_clear(&q);
}

static void put_fd_submit(struct buf *b, uint64_t len, uint16_t flags)
{
    struct proto_submit s = {.pool = "echo", .pool_len = 4, .task = "echo",
                             .task_len = 4, .input_len = len};

    assert_int_equal(proto_put_submit(b, 5, PROTO_F_IN_FD | flags, &s), 0);
}

/* A memfd of `size` bytes (sealed against shrinking when `seal`). */
static int make_memfd(size_t size, int seal)
{
    int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    if (seal)
        assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
    return fd;
}

/* Sends a frame (and fd) on sock, expects an ERROR with `code` whose
 * text holds `why`, then end of file; and that other clients are still
 * served. Closes sock. */
static void expect_error_on(struct hx *t, int sock, const struct buf *b,
                            int fd, int code, const char *why)
{
    static uint8_t buf[4096];
    struct proto_frame f;
    struct proto_reply r;

    send_frame(sock, b, fd);
    assert_true(td_read_frame(sock, buf, sizeof buf, &f) > 0);
    assert_int_equal(f.type, PROTO_ERROR);
    assert_int_equal(proto_parse_reply(&f, &r), 0);
    assert_int_equal(r.code, code);
    if (memmem(r.text, r.len, why, strlen(why)) == NULL)
        fail_msg("error '%.*s' does not say '%s'", (int)r.len, r.text, why);
    assert_int_equal(read(sock, buf, sizeof buf), 0); /* closed */
    close(sock);
    assert_int_equal(hx_ping(t), 0);
}

/* expect_error_on() a connection of its own. */
static void expect_error(struct hx *t, const struct buf *b, int fd,
                         int code, const char *why)
{
    expect_error_on(t, td_raw_connect(t), b, fd, code, why);
}

static void submit_flagged_with_an_fd_but_without_one_gets_an_error(
    void **state)
{
    struct buf b = {0};

    put_fd_submit(&b, 100000, 0);
    expect_error(*state, &b, -1, TH_EPROTO, "came without one");
    buf_free(&b);
}

static void memfd_shorter_than_announced_gets_an_error(void **state)
{
    struct buf b = {0};
    int fd = make_memfd(1000, 1);

    put_fd_submit(&b, 100000, 0);
    expect_error(*state, &b, fd, TH_EPROTO, "fewer than the 100000");
    close(fd);
    buf_free(&b);
}

static void pipe_instead_of_a_memfd_gets_an_error(void **state)
{
    struct buf b = {0};
    int p[2];

    assert_int_equal(pipe(p), 0);
    put_fd_submit(&b, 100000, 0);
    expect_error(*state, &b, p[0], TH_EPROTO, "is not a memfd");
    close(p[0]);
    close(p[1]);
    buf_free(&b);
}

static void memfd_not_sealed_against_shrinking_gets_an_error(void **state)
{
    struct buf b = {0};
    int fd = make_memfd(100000, 0);

    put_fd_submit(&b, 100000, 0);
    expect_error(*state, &b, fd, TH_EPROTO, "not sealed against shrinking");
    close(fd);
    buf_free(&b);
}

static void memfd_over_max_payload_gets_too_big(void **state)
{
    struct buf b = {0};
    int fd = make_memfd(5u << 20, 1); /* max_payload is 4 MiB */

    put_fd_submit(&b, 5u << 20, 0);
    expect_error(*state, &b, fd, TH_ETOOBIG, "over max_payload");
    close(fd);
    buf_free(&b);
}

static void descriptor_on_a_frame_that_takes_none_gets_an_error(void **state)
{
    struct buf b = {0}, b2 = {0};
    uint8_t buf[256];
    struct proto_frame f;
    int fd = make_memfd(100, 1), sock = td_raw_connect(*state);

    /* a ping carrying a descriptor is answered (the daemon cannot tell
     * yet that no later frame of the same send takes it); the next
     * frame, sent apart, finds it stray */
    assert_int_equal(proto_put_empty(&b, PROTO_PING, 1, 0), 0);
    assert_int_equal(proto_put_empty(&b2, PROTO_PING, 2, 0), 0);
    send_frame(sock, &b, fd);
    send_frame(sock, &b2, -1);
    assert_true(td_read_frame(sock, buf, sizeof buf, &f) > 0);
    assert_int_equal(f.type, PROTO_REPLY);
    assert_true(td_read_frame(sock, buf, sizeof buf, &f) > 0);
    assert_int_equal(f.type, PROTO_ERROR);
    assert_int_equal(f.tag, 2);
    assert_int_equal(read(sock, buf, sizeof buf), 0); /* closed */
    close(sock);
    assert_int_equal(hx_ping(*state), 0);
    close(fd);
    buf_free(&b);
    buf_free(&b2);
}

/* ---- memfd slots (IN_SLOT) ---- */

#define SLOT_LEN 100000

static void put_slot_submit(struct buf *b, uint64_t tag, uint64_t len,
                            uint32_t slot, uint16_t flags)
{
    struct proto_submit s = {.pool = "echo", .pool_len = 4, .task = "echo",
                             .task_len = 4, .input_len = len, .slot = slot};

    assert_int_equal(
        proto_put_submit(b, tag, PROTO_F_IN_SLOT | flags, &s), 0);
}

/* A sealed memfd of `size` bytes, mapped read-write into *map. */
static int slot_memfd(size_t size, uint8_t **map)
{
    int fd = make_memfd(size, 1);

    *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(*map != MAP_FAILED);
    return fd;
}

/* Sends an echo of the first len bytes of slot `slot` (with fd attached,
 * into that slot, when fd >= 0) and expects them back, inline. */
static void slot_echo(int sock, uint64_t tag, int fd, uint32_t slot,
                      const uint8_t *in, size_t len)
{
    static uint8_t buf[PROTO_HEADER_SIZE + 32 + 2 * SLOT_LEN];
    struct buf b = {0};
    struct proto_frame f;
    struct proto_result r;

    put_slot_submit(&b, tag, len, slot, fd >= 0 ? PROTO_F_IN_FD : 0);
    send_frame(sock, &b, fd);
    buf_free(&b);
    assert_true(td_read_frame(sock, buf, sizeof buf, &f) > 0);
    assert_int_equal(f.type, PROTO_RESULT);
    assert_int_equal(f.tag, tag);
    assert_int_equal(proto_parse_result(&f, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_int_equal(r.flags, 0);
    assert_int_equal(r.len, len);
    assert_memory_equal(r.data, in, len);
}

static void ping_says_the_daemon_takes_memfd_slots(void **state)
{
    uint8_t buf[256];
    struct buf b = {0};
    struct proto_frame f;
    int sock = td_raw_connect(*state);

    assert_int_equal(proto_put_empty(&b, PROTO_PING, 1, 0), 0);
    send_frame(sock, &b, -1);
    assert_true(td_read_frame(sock, buf, sizeof buf, &f) > 0);
    assert_int_equal(f.type, PROTO_REPLY);
    assert_true(f.flags & PROTO_F_SLOT_OK);
    close(sock);
    buf_free(&b);
}

static void memfd_passed_once_serves_every_task_of_its_slot(void **state)
{
    uint8_t *m5, *m63;
    int fd5 = slot_memfd(SLOT_LEN, &m5), fd63 = slot_memfd(SLOT_LEN, &m63);
    int sock = td_raw_connect(*state);

    fill(m5, SLOT_LEN, 1);
    slot_echo(sock, 1, fd5, 5, m5, SLOT_LEN);
    fill(m63, SLOT_LEN, 2);
    slot_echo(sock, 2, fd63, PROTO_SLOTS - 1, m63, SLOT_LEN);
    close(fd5); /* the daemon holds its own descriptors of them */
    close(fd63);
    for (unsigned i = 0; i < 200; i++) {
        uint8_t *m = i % 2 ? m63 : m5;
        size_t len = FDPASS_MIN + i * 100;
        fill(m, len, i + 3);
        slot_echo(sock, i + 3, -1, i % 2 ? PROTO_SLOTS - 1 : 5, m, len);
    }
    close(sock);
    munmap(m5, SLOT_LEN);
    munmap(m63, SLOT_LEN);
}

static void memfd_into_a_slot_replaces_what_it_held(void **state)
{
    uint8_t *a, *b;
    int fa = slot_memfd(SLOT_LEN, &a), fb = slot_memfd(SLOT_LEN, &b);
    int sock = td_raw_connect(*state);

    fill(a, SLOT_LEN, 1);
    fill(b, SLOT_LEN, 2);
    slot_echo(sock, 1, fa, 7, a, SLOT_LEN);
    slot_echo(sock, 2, fb, 7, b, SLOT_LEN);
    slot_echo(sock, 3, -1, 7, b, SLOT_LEN);
    close(sock);
    close(fa);
    close(fb);
    munmap(a, SLOT_LEN);
    munmap(b, SLOT_LEN);
}

static void slot_that_holds_no_memfd_gets_an_error(void **state)
{
    struct buf b = {0};

    put_slot_submit(&b, 5, SLOT_LEN, 3, 0);
    expect_error(*state, &b, -1, TH_EPROTO, "slot 3, which holds none");
    buf_free(&b);
}

static void slot_number_out_of_range_gets_an_error(void **state)
{
    struct buf b = {0};
    int fd = make_memfd(SLOT_LEN, 1);

    put_slot_submit(&b, 5, SLOT_LEN, PROTO_SLOTS, PROTO_F_IN_FD);
    expect_error(*state, &b, fd, TH_EPROTO, "slot 64 of 64");
    buf_free(&b);
    put_slot_submit(&b, 5, SLOT_LEN, UINT32_MAX, 0);
    expect_error(*state, &b, -1, TH_EPROTO, "slot 4294967295 of 64");
    buf_free(&b);
    close(fd);
}

static void slot_of_another_connection_holds_nothing_here(void **state)
{
    struct hx *t = *state;
    struct buf b = {0};
    uint8_t *m;
    int fd = slot_memfd(SLOT_LEN, &m), mine = td_raw_connect(t);

    fill(m, SLOT_LEN, 4);
    slot_echo(mine, 1, fd, 0, m, SLOT_LEN);
    put_slot_submit(&b, 5, SLOT_LEN, 0, 0);
    expect_error(t, &b, -1, TH_EPROTO, "slot 0, which holds none");
    slot_echo(mine, 2, -1, 0, m, SLOT_LEN); /* the owner's still serves */
    close(mine);
    close(fd);
    munmap(m, SLOT_LEN);
    buf_free(&b);
}

static void slot_memfd_that_grew_serves_longer_inputs(void **state)
{
    uint8_t *m, *big;
    int fd = slot_memfd(SLOT_LEN / 2, &m), sock = td_raw_connect(*state);

    fill(m, SLOT_LEN / 2, 5);
    slot_echo(sock, 1, fd, 2, m, SLOT_LEN / 2);
    assert_int_equal(ftruncate(fd, SLOT_LEN), 0);
    big = mmap(NULL, SLOT_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(big != MAP_FAILED);
    fill(big, SLOT_LEN, 6);
    slot_echo(sock, 2, -1, 2, big, SLOT_LEN);
    slot_echo(sock, 3, -1, 2, big, SLOT_LEN / 2);
    close(sock);
    close(fd);
    munmap(m, SLOT_LEN / 2);
    munmap(big, SLOT_LEN);
}

static void input_longer_than_its_slot_memfd_gets_an_error(void **state)
{
    struct buf b = {0};
    uint8_t *m;
    int fd = slot_memfd(SLOT_LEN, &m), sock = td_raw_connect(*state);

    fill(m, SLOT_LEN, 5);
    slot_echo(sock, 1, fd, 2, m, SLOT_LEN);
    put_slot_submit(&b, 2, SLOT_LEN + 1, 2, 0);
    expect_error_on(*state, sock, &b, -1, TH_EPROTO, "fewer than the 100001");
    close(fd);
    munmap(m, SLOT_LEN);
    buf_free(&b);
}

static void slot_input_over_max_payload_gets_too_big(void **state)
{
    struct buf b = {0};
    uint8_t *m;
    int fd = slot_memfd(SLOT_LEN, &m), sock = td_raw_connect(*state);

    fill(m, SLOT_LEN, 6);
    slot_echo(sock, 1, fd, 2, m, SLOT_LEN);
    put_slot_submit(&b, 2, 5u << 20, 2, 0); /* max_payload is 4 MiB */
    expect_error_on(*state, sock, &b, -1, TH_ETOOBIG, "over max_payload");
    close(fd);
    munmap(m, SLOT_LEN);
    buf_free(&b);
}

static void unsealed_memfd_into_a_slot_gets_an_error(void **state)
{
    struct buf b = {0};
    int fd = make_memfd(SLOT_LEN, 0);

    put_slot_submit(&b, 5, SLOT_LEN, 1, PROTO_F_IN_FD);
    expect_error(*state, &b, fd, TH_EPROTO, "not sealed against shrinking");
    close(fd);
    buf_free(&b);
}

/* An echo of the first len bytes of memfd fd, passed with the task (no
 * slot), expected back whole (zeros). */
static void fd_echo(int sock, int fd, size_t len)
{
    static uint8_t buf[PROTO_HEADER_SIZE + 32 + SLOT_LEN];
    static const uint8_t zeros[SLOT_LEN];
    struct proto_frame f;
    struct proto_result r;
    struct buf b = {0};

    put_fd_submit(&b, len, 0);
    send_frame(sock, &b, fd);
    buf_free(&b);
    assert_true(td_read_frame(sock, buf, sizeof buf, &f) > 0);
    assert_int_equal(proto_parse_result(&f, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_int_equal(r.len, len);
    assert_memory_equal(r.data, zeros, len);
}

/* Memfds passed with each task are cached, memfds in slots kept: of one
 * connection, the daemon maps at most 64 of both together (and those of
 * tasks in flight). */
static void connection_maps_at_most_64_memfds_cached_and_in_slots(
    void **state)
{
    static const uint8_t zeros[SLOT_LEN];
    struct hx *t = *state;
    int sock = td_raw_connect(t), fd;

    for (int i = 0; i < 10; i++) { /* cached */
        fd = make_memfd(SLOT_LEN, 1);
        fd_echo(sock, fd, SLOT_LEN);
        close(fd);
    }
    assert_int_equal(count_fds(t->pid, "memfd:test"), 10);
    for (uint32_t i = 0; i < PROTO_SLOTS; i++) { /* the cache gives way */
        fd = make_memfd(SLOT_LEN, 1);
        slot_echo(sock, i, fd, i, zeros, SLOT_LEN);
        close(fd);
    }
    assert_int_equal(count_fds(t->pid, "memfd:test"), PROTO_SLOTS);
    fd = make_memfd(SLOT_LEN, 1); /* mapped for its task only */
    fd_echo(sock, fd, SLOT_LEN);
    close(fd);
    assert_int_equal(count_fds(t->pid, "memfd:test"), PROTO_SLOTS);
    slot_echo(sock, 99, -1, 0, zeros, SLOT_LEN);
    close(sock);
    assert_int_equal(hx_ping(t), 0);
}

/* A client that rewrites its slot's memfd while the tasks on it run, and
 * tries to shrink it, gets answers (of whatever the worker read) and
 * the daemon serves on. */
static void slot_rewritten_while_its_tasks_run_harms_only_them(void **state)
{
    enum { N = 40 };
    static uint8_t buf[PROTO_HEADER_SIZE + 32 + 2 * SLOT_LEN];
    struct proto_frame f;
    struct buf b = {0};
    uint8_t *m;
    int fd = slot_memfd(SLOT_LEN, &m), sock = td_raw_connect(*state);

    fill(m, SLOT_LEN, 7);
    slot_echo(sock, 1, fd, 4, m, SLOT_LEN);
    for (unsigned i = 0; i < N; i++)
        put_slot_submit(&b, 100 + i, SLOT_LEN, 4, 0);
    send_frame(sock, &b, -1);
    for (unsigned i = 0; i < 50; i++)
        fill(m, SLOT_LEN, i);
    assert_int_equal(ftruncate(fd, 10), -1); /* the seal holds */
    assert_int_equal(errno, EPERM);
    for (unsigned i = 0; i < N; i++) {
        assert_true(td_read_frame(sock, buf, sizeof buf, &f) > 0);
        assert_int_equal(f.type, PROTO_RESULT);
    }
    fill(m, SLOT_LEN, 8);
    slot_echo(sock, 2, -1, 4, m, SLOT_LEN);
    close(sock);
    assert_int_equal(hx_ping(*state), 0);
    close(fd);
    munmap(m, SLOT_LEN);
    buf_free(&b);
}

/* Reads frames until the one tagged `tag`, collecting descriptors. */
static long read_result(int sock, uint8_t *buf, size_t cap,
                        struct fdpass_queue *q, uint64_t *pos,
                        struct proto_frame *f)
{
    size_t got = 0, need = PROTO_HEADER_SIZE;
    long n;

    while ((n = proto_decode(buf, got, cap, f, &need)) == 0) {
        assert_true(need <= cap);
        ssize_t r = fdpass_recv(sock, buf + got, need - got, q, *pos);
        if (r == -1 && errno == EAGAIN) {
            struct pollfd p = {.fd = sock, .events = POLLIN};
            assert_int_equal(poll(&p, 1, (int)(DEADLINE * 1000)), 1);
            continue;
        }
        assert_true(r > 0);
        got += (size_t)r;
        *pos += (uint64_t)r;
    }
    return n;
}

/* ---- the library against a daemon of the test's own ---- */

/* A listening socket in t's directory, its path in `path`. */
static int fake_listen(const struct hx *t, char *path, size_t cap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    snprintf(path, cap, "%s/fake.sock", t->dir);
    assert_true(fd != -1 && strlen(path) < sizeof sa.sun_path);
    strcpy(sa.sun_path, path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    return fd;
}

static void on_flag(const th_result *r, void *arg)
{
    assert_int_equal(r->state, TH_STATE_OK);
    *(int *)arg = 1;
}

/* Plays the daemon for one submit of c: answers a PING first, if one
 * comes, with ping_flags; answers the SUBMIT ok, empty, and steps
 * c until *done. Returns the submit's flags; *fds counts the descriptors
 * that came with it. */
static uint16_t fake_serve(th_client *c, int sock, struct fdpass_queue *q,
                           uint64_t *pos, int *fds, const int *done,
                           uint16_t ping_flags)
{
    static uint8_t buf[1u << 19]; /* the first input comes inline */
    struct proto_result res = {.state = TH_STATE_OK, .data = ""};
    struct proto_frame f;
    struct buf out = {0};
    uint16_t flags;

    while (th_client_want_write(c))
        assert_true(th_client_step(c, 0) >= 0);
    for (;;) {
        assert_true(read_result(sock, buf, sizeof buf, q, pos, &f) > 0);
        if (f.type != PROTO_PING)
            break;
        assert_int_equal(proto_put_reply_flags(&out, PROTO_REPLY, f.tag,
                                               ping_flags, 0, "fake", 4),
                         0);
    }
    assert_int_equal(f.type, PROTO_SUBMIT);
    flags = f.flags;
    *fds += (int)fdpass_len(q);
    fdpass_clear(q);
    assert_int_equal(proto_put_result(&out, f.tag, &res), 0);
    send_frame(sock, &out, -1);
    buf_free(&out);
    while (!*done)
        assert_true(th_client_step(c, 100) >= 0);
    return flags;
}

/* Runs 30 large submits of c against a fake daemon whose PING answer
 * has ping_flags; the first 20 of LEN bytes, the others 4 * LEN (the
 * memfd grows). Checks each submit's memfd flags against want(i); returns
 * the descriptors that came. */
#define LEN 100000
static int fake_run(struct hx *t, uint16_t ping_flags,
                    uint16_t (*want)(int i))
{
    static uint8_t in[4 * LEN];
    struct fdpass_queue q = {0};
    uint64_t pos = 0;
    char path[128];
    int lsock = fake_listen(t, path, sizeof path), fds = 0, sock, done;
    th_client *c;

    assert_int_equal(th_client_connect(&c, path, NULL, 0), 0);
    assert_true((sock = accept(lsock, NULL, NULL)) >= 0);
    for (int i = 0; i < 30; i++) {
        size_t len = i < 20 ? LEN : 4 * LEN;
        done = 0;
        assert_int_equal(th_client_submit(c, "echo", "echo", in, len, NULL,
                                          on_flag, &done, NULL),
                         0);
        uint16_t got =
            fake_serve(c, sock, &q, &pos, &fds, &done, ping_flags);
        assert_int_equal(got & (PROTO_F_IN_FD | PROTO_F_IN_SLOT), want(i));
    }
    th_client_close(c);
    close(sock);
    close(lsock);
    unlink(path);
    return fds;
}
#undef LEN

static uint16_t slot_once(int i)
{
    return i == 0   ? 0 /* inline until the ping's answer */
           : i == 1 ? PROTO_F_IN_FD | PROTO_F_IN_SLOT
                    : PROTO_F_IN_SLOT;
}

static void library_passes_each_memfd_once_into_its_slot(void **state)
{
    assert_int_equal(fake_run(*state,
                              PROTO_F_FD_OK | PROTO_F_AT_OK | PROTO_F_SLOT_OK,
                              slot_once),
                     1);
}

static uint16_t fd_each(int i)
{
    return i == 0 ? 0 : PROTO_F_IN_FD;
}

static void library_passes_memfds_per_task_to_a_daemon_without_slots(
    void **state)
{
    assert_int_equal(
        fake_run(*state, PROTO_F_FD_OK | PROTO_F_AT_OK, fd_each), 29);
}

static void large_output_of_an_inline_input_comes_in_an_attached_memfd(
    void **state)
{
    enum { N = 3, LEN = 300000 };
    struct buf b = {0};
    struct fdpass_queue q = {0};
    uint8_t *in = malloc(LEN), hdr[4096];
    uint64_t pos = 0;
    int sock = td_raw_connect(*state);

    fill(in, LEN, 9);
    for (int i = 0; i < N; i++) {
        struct proto_submit s = {.pool = "echo", .pool_len = 4,
                                 .task = "echo", .task_len = 4,
                                 .input = in, .input_len = LEN};
        assert_int_equal(proto_put_submit(&b, (uint64_t)i + 1, PROTO_F_OUT_FD,
                                          &s),
                         0);
    }
    send_frame(sock, &b, -1);
    for (int i = 0; i < N; i++) {
        struct proto_frame f;
        struct proto_result r;
        uint64_t at = pos;
        assert_true(read_result(sock, hdr, sizeof hdr, &q, &pos, &f) > 0);
        assert_int_equal(proto_parse_result(&f, &r), 0);
        assert_int_equal(r.state, TH_STATE_OK);
        assert_int_equal(r.flags, PROTO_F_RES_FD);
        assert_int_equal(r.len, LEN);
        int fd = fdpass_take(&q, at);
        assert_true(fd >= 0);
        uint8_t *m = mmap(NULL, LEN, PROT_READ, MAP_SHARED, fd, 0);
        assert_true(m != MAP_FAILED);
        assert_memory_equal(m, in, LEN);
        munmap(m, LEN);
        close(fd);
    }
    assert_int_equal(fdpass_len(&q), 0); /* one descriptor per result */
    close(sock);
    fdpass_clear(&q);
    buf_free(&b);
    free(in);
}

/* Descriptors of the daemon that are not sockets: its log, epoll,
 * arenas, workers; they change only when payload memfds leak. */
/* The daemon's descriptors other than sockets and pidfds: the pidfds
 * come and go with its workers, not with its clients. */
/* ...and but the few memfds its engine keeps for reuse (bounded:
 * counted apart). */
static int daemon_files(const struct hx *t)
{
    return count_fds(t->pid, NULL) - count_fds(t->pid, "socket:") -
           count_fds(t->pid, "[pidfd]") -
           count_fds(t->pid, "memfd:taskhost-task");
}

/* Prints the daemon's descriptors, to explain a count that is off. */
static void show_fds(const struct hx *t)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ls -l /proc/%d/fd >&2", (int)t->pid);
    (void)!system(cmd);
}

/* Polls until count(t) is `want` (the daemon lets go of a connection
 * after the client closed it); returns the last count. */
static int wait_count(const struct hx *t, int (*count)(const struct hx *),
                      int want)
{
    double end = hx_now() + DEADLINE;
    int n;

    while ((n = count(t)) != want && hx_now() < end)
        hx_pause_ms(5);
    return n;
}

/* Polls until count(t) is `most` or fewer; returns the last count. */
static int wait_at_most(const struct hx *t, int (*count)(const struct hx *),
                        int most)
{
    double end = hx_now() + DEADLINE;
    int n;

    while ((n = count(t)) > most && hx_now() < end)
        hx_pause_ms(5);
    return n;
}

static int daemon_sockets(const struct hx *t)
{
    return count_fds(t->pid, "socket:");
}

/* A client that sends a large task and leaves before its answer. */
static void leave_with_a_task_in_flight(struct hx *t)
{
    struct buf b = {0};
    int fd = make_memfd(1u << 20, 1), sock = td_raw_connect(t);

    put_fd_submit(&b, 1u << 20, PROTO_F_OUT_FD);
    send_frame(sock, &b, fd);
    close(fd);
    close(sock);
    buf_free(&b);
}

/* The same with the memfd in a slot, named again by a second task. */
static void leave_with_slot_tasks_in_flight(struct hx *t)
{
    struct buf b = {0};
    int fd = make_memfd(1u << 20, 1), sock = td_raw_connect(t);

    put_slot_submit(&b, 1, 1u << 20, 9, PROTO_F_IN_FD | PROTO_F_OUT_AT);
    put_slot_submit(&b, 2, 1u << 20, 9, 0);
    send_frame(sock, &b, fd);
    close(fd);
    close(sock);
    buf_free(&b);
}

static void daemon_leaks_no_descriptor_after_many_large_tasks(void **state)
{
    struct hx *t = *state;
    int files = daemon_files(t);

    for (int k = 0; k < 3; k++) {
        th_client *c = td_connect(t);
        for (int i = 0; i < 20; i++)
            echo_call(c, i % 2 ? 1u << 20 : 100000, (unsigned)i);
        th_client_close(c);
        leave_with_a_task_in_flight(t);
        leave_with_slot_tasks_in_flight(t);
    }
    memfd_passed_once_serves_every_task_of_its_slot(state);
    slot_rewritten_while_its_tasks_run_harms_only_them(state);
    many_pipelined_large_tasks_are_all_answered_right(state);
    large_output_of_an_inline_input_comes_in_an_attached_memfd(state);
    pipe_instead_of_a_memfd_gets_an_error(state);
    /* the listening socket, one socketpair end per worker (2), and the
     * request and event sockets (2) of the pool's spawner and of the
     * spare spawner (spare.h) */
    int sockets = wait_count(t, daemon_sockets, 7);
    /* No more than before: a payload memfd of the test before may still
     * have been on its way out when `files` was counted. */
    int now = wait_at_most(t, daemon_files, files);
    if (sockets != 7 || now > files)
        show_fds(t);
    assert_int_equal(sockets, 7);
    assert_true(now <= files);
    assert_int_equal(count_fds(t->pid, "memfd:taskhost-input"), 0);
    assert_int_equal(count_fds(t->pid, "memfd:taskhost-payload"), 0);
    /* the engine keeps up to 16 of its own for inputs that came inline */
    assert_in_range(count_fds(t->pid, "memfd:taskhost-task"), 0, 16);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(payloads_around_the_threshold_come_back_whole),
        T(input_that_grows_past_its_memfd_comes_back_whole),
        T(many_pipelined_large_tasks_are_all_answered_right),
        T(submit_flagged_with_an_fd_but_without_one_gets_an_error),
        T(memfd_shorter_than_announced_gets_an_error),
        T(pipe_instead_of_a_memfd_gets_an_error),
        T(memfd_not_sealed_against_shrinking_gets_an_error),
        T(memfd_over_max_payload_gets_too_big),
        T(descriptor_on_a_frame_that_takes_none_gets_an_error),
        T(ping_says_the_daemon_takes_memfd_slots),
        T(memfd_passed_once_serves_every_task_of_its_slot),
        T(memfd_into_a_slot_replaces_what_it_held),
        T(slot_that_holds_no_memfd_gets_an_error),
        T(slot_number_out_of_range_gets_an_error),
        T(slot_of_another_connection_holds_nothing_here),
        T(slot_memfd_that_grew_serves_longer_inputs),
        T(input_longer_than_its_slot_memfd_gets_an_error),
        T(slot_input_over_max_payload_gets_too_big),
        T(unsealed_memfd_into_a_slot_gets_an_error),
        T(slot_rewritten_while_its_tasks_run_harms_only_them),
        T(connection_maps_at_most_64_memfds_cached_and_in_slots),
        T(library_passes_each_memfd_once_into_its_slot),
        T(library_passes_memfds_per_task_to_a_daemon_without_slots),
        T(large_output_of_an_inline_input_comes_in_an_attached_memfd),
        T(daemon_leaks_no_descriptor_after_many_large_tasks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
