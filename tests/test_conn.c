/* test_conn.c - the connection codec of both ends (conn.h): frames
 * through a socket pair, split reads, descriptors tied to their frames,
 * and the faults it reports. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "conn.h"

struct pair {
    struct conn a, b;
};

static int setup(void **state)
{
    static struct pair p;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == -1)
        return -1;
    conn_init(&p.a, sv[0]);
    conn_init(&p.b, sv[1]);
    *state = &p;
    return 0;
}

static int teardown(void **state)
{
    struct pair *p = *state;
    close(p->a.fd);
    close(p->b.fd);
    conn_clear(&p->a);
    conn_clear(&p->b);
    return 0;
}

static void frames_sent_arrive_whole_and_in_order(void **state)
{
    struct pair *p = *state;
    struct proto_frame f;
    assert_int_equal(proto_put_empty(&p->a.out, PROTO_PING, 1, 0), 0);
    assert_int_equal(proto_put_reply(&p->a.out, PROTO_REPLY, 2, 0, "ok", 2), 0);
    assert_true(conn_send(&p->a) > 0);
    assert_true(conn_read(&p->b) > 0);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_FRAME);
    assert_int_equal(f.type, PROTO_PING);
    assert_int_equal(f.tag, 1);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_FRAME);
    assert_int_equal(f.tag, 2);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_MORE);
    assert_int_equal(p->b.in_pos, p->a.out_pos);
}

static void a_frame_split_across_reads_waits_for_its_rest(void **state)
{
    struct pair *p = *state;
    struct proto_frame f;
    struct buf whole = BUF_INIT;
    assert_int_equal(proto_put_reply(&whole, PROTO_REPLY, 5, 0, "abcdef", 6),
                     0);
    assert_int_equal(write(p->a.fd, buf_head(&whole), 10), 10);
    assert_int_equal(conn_read(&p->b), 10);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_MORE);
    size_t rest = buf_avail(&whole) - 10;
    assert_int_equal(write(p->a.fd, buf_head(&whole) + 10, rest), (ssize_t)rest);
    assert_true(conn_read(&p->b) > 0);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_FRAME);
    assert_int_equal(f.tag, 5);
    assert_int_equal(f.len, 4 + 6);
    buf_free(&whole);
}

static void a_body_over_the_limit_is_reported(void **state)
{
    struct pair *p = *state;
    struct proto_frame f;
    assert_int_equal(proto_put_reply(&p->a.out, PROTO_REPLY, 9, 0, "0123456789",
                                     10),
                     0);
    assert_true(conn_send(&p->a) > 0);
    assert_true(conn_read(&p->b) > 0);
    assert_int_equal(conn_next(&p->b, 8, &f), CONN_TOOBIG);
    assert_int_equal(f.tag, 9);
}

static void another_version_is_reported(void **state)
{
    struct pair *p = *state;
    struct proto_frame f;
    assert_int_equal(proto_put_empty(&p->a.out, PROTO_PING, 1, 0), 0);
    p->a.out.data[p->a.out.off + 4] = PROTO_VERSION + 1;
    assert_true(conn_send(&p->a) > 0);
    assert_true(conn_read(&p->b) > 0);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_VERSION);
}

static void a_descriptor_travels_with_its_frame(void **state)
{
    struct pair *p = *state;
    struct proto_frame f;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(proto_put_empty(&p->a.out, PROTO_PING, 1, 0), 0);
    assert_int_equal(conn_push_fd(&p->a, fds[0], 1), 0);
    assert_int_equal(proto_put_empty(&p->a.out, PROTO_PING, 2, 0), 0);
    assert_true(conn_send(&p->a) > 0);
    assert_true(conn_read(&p->b) > 0);
    /* The first frame is one that carries none: it does not ask. */
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_FRAME);
    assert_int_equal(f.tag, 1);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_FRAME);
    assert_int_equal(f.tag, 2);
    int got = conn_take_fd(&p->b);
    assert_true(got >= 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    char c;
    assert_int_equal(read(got, &c, 1), 1);
    assert_int_equal(c, 'x');
    close(got);
    close(fds[1]);
}

static void a_descriptor_no_frame_takes_is_a_stray(void **state)
{
    struct pair *p = *state;
    struct proto_frame f;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(conn_push_fd(&p->a, fds[0], 1), 0);
    assert_int_equal(proto_put_empty(&p->a.out, PROTO_PING, 1, 0), 0);
    assert_true(conn_send(&p->a) > 0);
    assert_true(conn_read(&p->b) > 0);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_FRAME); /* not taken */
    assert_int_equal(proto_put_empty(&p->a.out, PROTO_PING, 2, 0), 0);
    assert_true(conn_send(&p->a) > 0);
    assert_true(conn_read(&p->b) > 0);
    assert_int_equal(conn_next(&p->b, 1024, &f), CONN_STRAY);
    close(fds[1]);
}

static void unpush_takes_a_descriptor_back(void **state)
{
    struct pair *p = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(conn_push_fd(&p->a, fds[0], 0), 0);
    assert_int_equal(conn_unpush_fd(&p->a), fds[0]);
    assert_int_equal(fdpass_len(&p->a.sfds), 0);
    close(fds[0]);
    close(fds[1]);
}

static void a_closed_peer_reads_as_end_of_file(void **state)
{
    struct pair *p = *state;
    close(p->a.fd);
    p->a.fd = open("/dev/null", O_RDONLY); /* for teardown */
    assert_int_equal(conn_read(&p->b), 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(frames_sent_arrive_whole_and_in_order),
        T(a_frame_split_across_reads_waits_for_its_rest),
        T(a_body_over_the_limit_is_reported),
        T(another_version_is_reported),
        T(a_descriptor_travels_with_its_frame),
        T(a_descriptor_no_frame_takes_is_a_stray),
        T(unpush_takes_a_descriptor_back),
        T(a_closed_peer_reads_as_end_of_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
