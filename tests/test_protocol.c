/* test_protocol.c - the wire format: round trips, limits, hostile bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client_wire.h"

static struct proto_submit sample_submit(void)
{
    struct proto_submit s = {.pool = "default", .pool_len = 7,
                             .task = "sha256", .task_len = 6,
                             .input = "abc", .input_len = 3,
                             .task_timeout_ms = 1500, .queue_timeout_ms = 7,
                             .priority = -5};
    return s;
}

static long decode_all(const struct buf *b, struct proto_frame *f)
{
    size_t need = 0;

    return proto_decode(b->data, b->len, PROTO_DEFAULT_MAX, f, &need);
}

static void submit_round_trips(void **state)
{
    struct buf b = {0};
    struct proto_submit in = sample_submit(), out;
    struct proto_frame f;

    assert_int_equal(proto_put_submit(&b, 42, PROTO_F_ACK, &in), 0);
    assert_int_equal(decode_all(&b, &f), (long)b.len);
    assert_int_equal(f.type, PROTO_SUBMIT);
    assert_int_equal(f.tag, 42);
    assert_int_equal(f.flags, PROTO_F_ACK);
    assert_int_equal(proto_parse_submit(&f, &out), 0);
    assert_string_equal(out.pool, "default");
    assert_string_equal(out.task, "sha256");
    assert_int_equal(out.input_len, 3);
    assert_memory_equal(out.input, "abc", 3);
    assert_int_equal(out.task_timeout_ms, 1500);
    assert_int_equal(out.queue_timeout_ms, 7);
    assert_int_equal(out.priority, -5);
    buf_free(&b);
}

static void result_round_trips(void **state)
{
    struct buf b = {0};
    struct proto_result in = {.task_id = 1ull << 40, .state = TH_STATE_CRASHED,
                              .code = TH_EIO, .wait_us = 12, .run_us = 34,
                              .data = "killed by SIGSEGV", .len = 17},
                        out;
    struct proto_frame f;

    assert_int_equal(proto_put_result(&b, 7, &in), 0);
    assert_int_equal(decode_all(&b, &f), (long)b.len);
    assert_int_equal(proto_parse_result(&f, &out), 0);
    assert_true(out.task_id == 1ull << 40);
    assert_int_equal(out.state, TH_STATE_CRASHED);
    assert_int_equal(out.code, TH_EIO);
    assert_int_equal(out.wait_us, 12);
    assert_int_equal(out.run_us, 34);
    assert_int_equal(out.len, 17);
    assert_memory_equal(out.data, "killed by SIGSEGV", 17);
    buf_free(&b);
}

static void control_frames_round_trip(void **state)
{
    struct buf b = {0};
    struct proto_frame f;
    struct proto_control c;
    struct proto_reply r;
    long n;
    size_t pos = 0, need;
    uint64_t id;

    assert_int_equal(proto_put_stats(&b, 1, TH_STATS_JSON, "hash"), 0);
    assert_int_equal(proto_put_restart(&b, 2, PROTO_F_FORCE, NULL), 0);
    assert_int_equal(proto_put_cancel(&b, 3, PROTO_F_TASK_ID, 99), 0);
    assert_int_equal(proto_put_reply(&b, PROTO_REPLY, 4, TH_ENOENT, "no", 2),
                     0);
    assert_int_equal(proto_put_accepted(&b, 5, 77), 0);

    n = proto_decode(b.data, b.len, 1024, &f, &need);
    assert_true(n > 0);
    assert_int_equal(proto_parse_control(&f, &c), 0);
    assert_int_equal(c.format, TH_STATS_JSON);
    assert_string_equal(c.pool, "hash");
    pos += (size_t)n;

    n = proto_decode(b.data + pos, b.len - pos, 1024, &f, &need);
    assert_int_equal(proto_parse_control(&f, &c), 0);
    assert_int_equal(f.flags, PROTO_F_FORCE);
    assert_int_equal(c.pool_len, 0);
    pos += (size_t)n;

    n = proto_decode(b.data + pos, b.len - pos, 1024, &f, &need);
    assert_int_equal(proto_parse_control(&f, &c), 0);
    assert_int_equal(c.target, 99);
    pos += (size_t)n;

    n = proto_decode(b.data + pos, b.len - pos, 1024, &f, &need);
    assert_int_equal(proto_parse_reply(&f, &r), 0);
    assert_int_equal(r.code, TH_ENOENT);
    assert_int_equal(r.len, 2);
    pos += (size_t)n;

    n = proto_decode(b.data + pos, b.len - pos, 1024, &f, &need);
    assert_int_equal(proto_parse_accepted(&f, &id), 0);
    assert_int_equal(id, 77);
    pos += (size_t)n;
    assert_int_equal(pos, b.len);
    buf_free(&b);
}

static void progress_round_trips_and_caps_its_message(void **state)
{
    struct buf b = {0};
    struct proto_frame f;
    struct proto_progress p = {.done = 3, .total = 1ull << 40, .msg = "half",
                               .msg_len = 4}, q;
    char longmsg[400];
    size_t need;
    long n;

    (void)state;
    assert_int_equal(proto_put_progress(&b, 9, &p), 0);
    n = proto_decode(b.data, b.len, 1024, &f, &need);
    assert_int_equal(n, 16 + 16 + 4);
    assert_int_equal(f.type, PROTO_PROGRESS);
    assert_int_equal(f.tag, 9);
    assert_int_equal(proto_parse_progress(&f, &q), 0);
    assert_int_equal(q.done, 3);
    assert_int_equal(q.total, 1ull << 40);
    assert_int_equal(q.msg_len, 4);
    assert_memory_equal(q.msg, "half", 4);
    buf_consume(&b, (size_t)n);

    memset(longmsg, 'x', sizeof longmsg);
    p.msg = longmsg;
    p.msg_len = sizeof longmsg;
    assert_int_equal(proto_put_progress(&b, 9, &p), 0);
    n = proto_decode(b.data, b.len, 1024, &f, &need);
    assert_int_equal(proto_parse_progress(&f, &q), 0);
    assert_int_equal(q.msg_len, PROTO_PROGRESS_MSG_MAX);
    f.len = 15; /* shorter than done and total */
    assert_int_equal(proto_parse_progress(&f, &q), TH_EPROTO);
    buf_free(&b);
}

static void header_is_little_endian(void **state)
{
    struct buf b = {0};
    static const uint8_t want[16] = {4, 0, 0, 0, PROTO_VERSION, PROTO_REPLY,
                                     0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0};

    assert_int_equal(proto_put_reply(&b, PROTO_REPLY, 0x0102, 0, NULL, 0), 0);
    assert_int_equal(b.len, 20);
    assert_memory_equal(b.data, want, 16);
    buf_free(&b);
}

static void partial_frame_asks_for_more(void **state)
{
    struct buf b = {0};
    struct proto_submit s = sample_submit();
    struct proto_frame f;
    size_t need = 0;

    assert_int_equal(proto_put_submit(&b, 1, 0, &s), 0);
    assert_int_equal(proto_decode(b.data, 5, 1024, &f, &need), 0);
    assert_int_equal(need, PROTO_HEADER_SIZE);
    assert_int_equal(proto_decode(b.data, b.len - 1, 1024, &f, &need), 0);
    assert_int_equal(need, b.len);
    buf_free(&b);
}

static void oversized_frame_is_refused_from_its_header(void **state)
{
    struct buf b = {0};
    struct proto_frame f;
    size_t need = 0;

    assert_int_equal(proto_put_reply(&b, PROTO_REPLY, 9, 0, "0123456789", 10),
                     0);
    /* only the header is there: the length alone decides */
    assert_int_equal(proto_decode(b.data, PROTO_HEADER_SIZE, 13, &f, &need),
                     TH_ETOOBIG);
    assert_int_equal(f.tag, 9);
    buf_free(&b);
}

static void other_version_is_refused(void **state)
{
    struct buf b = {0};
    struct proto_frame f;
    size_t need;

    assert_int_equal(proto_put_empty(&b, PROTO_PING, 1, 0), 0);
    b.data[4] = 2;
    assert_int_equal(proto_decode(b.data, b.len, 1024, &f, &need),
                     TH_EPROTO);
    buf_free(&b);
}

static void submit_without_nul_is_malformed(void **state)
{
    struct buf b = {0};
    struct proto_submit s = sample_submit();
    struct proto_frame f;

    assert_int_equal(proto_put_submit(&b, 1, 0, &s), 0);
    b.data[PROTO_HEADER_SIZE + 12 + 7] = 'x'; /* the pool's NUL */
    assert_true(decode_all(&b, &f) > 0);
    assert_int_equal(proto_parse_submit(&f, &s), TH_EPROTO);
    buf_free(&b);
}

static void submit_names_past_the_body_are_malformed(void **state)
{
    struct buf b = {0};
    struct proto_submit s = sample_submit();
    struct proto_frame f;

    s.input_len = 0;
    assert_int_equal(proto_put_submit(&b, 1, 0, &s), 0);
    b.data[PROTO_HEADER_SIZE + 10] = 200; /* task_len beyond the body */
    assert_true(decode_all(&b, &f) > 0);
    assert_int_equal(proto_parse_submit(&f, &s), TH_EPROTO);
    buf_free(&b);
}

static void result_with_transient_state_is_malformed(void **state)
{
    struct buf b = {0};
    struct proto_result r = {.state = TH_STATE_OK};
    struct proto_frame f;

    assert_int_equal(proto_put_result(&b, 1, &r), 0);
    b.data[PROTO_HEADER_SIZE + 8] = TH_RUNNING;
    assert_true(decode_all(&b, &f) > 0);
    assert_int_equal(proto_parse_result(&f, &r), TH_EPROTO);
    buf_free(&b);
}

static void long_names_are_refused_by_the_encoder(void **state)
{
    struct buf b = {0};
    struct proto_submit s = sample_submit();
    char name[300];

    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    s.pool = name;
    s.pool_len = strlen(name);
    assert_int_equal(proto_put_submit(&b, 1, 0, &s), TH_EINVAL);
    assert_int_equal(proto_put_stats(&b, 1, 0, name), TH_EINVAL);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

/* Every parser on every frame decoded out of random bytes: none may read
 * outside the buffer (ASan watches) or crash. */
static void random_bytes_never_crash_the_decoder(void **state)
{
    struct proto_frame f;
    struct proto_submit s;
    struct proto_result r;
    struct proto_control c;
    struct proto_reply rep;
    uint64_t id;
    size_t need;
    int decoded = 0;

    srand(12345);
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(rand() % 64);
        uint8_t *buf = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rand();
        if (len >= PROTO_HEADER_SIZE) {
            buf[4] = PROTO_VERSION; /* get past the header often */
            buf[0] = (uint8_t)(len - PROTO_HEADER_SIZE - (rand() % 3 == 0));
            buf[1] = buf[2] = buf[3] = 0;
        }
        if (proto_decode(buf, len, 1 << 20, &f, &need) > 0) {
            decoded++;
            if (proto_parse_submit(&f, &s) == 0) {
                assert_ptr_equal((const uint8_t *)s.input + s.input_len,
                                 f.body + f.len);
                assert_int_equal(strlen(s.pool), s.pool_len);
            }
            proto_parse_result(&f, &r);
            proto_parse_control(&f, &c);
            proto_parse_reply(&f, &rep);
            proto_parse_accepted(&f, &id);
        }
        free(buf);
    }
    assert_true(decoded > 1000); /* the bytes did reach the parsers */
}

static void consume_keeps_the_rest(void **state)
{
    struct buf b = {0};

    assert_int_equal(buf_append(&b, "abcdef", 6), 0);
    buf_consume(&b, 2);
    assert_int_equal(buf_avail(&b), 4);
    assert_memory_equal(buf_head(&b), "cdef", 4);
    buf_consume(&b, 10);
    assert_int_equal(buf_avail(&b), 0);
    buf_free(&b);
}

static void submit_with_input_fd_carries_only_the_length(void **state)
{
    struct buf b = {0};
    struct proto_submit in = sample_submit(), out;
    struct proto_frame f;

    in.input = NULL;
    in.input_len = 1u << 20;
    assert_int_equal(
        proto_put_submit(&b, 3, PROTO_F_IN_FD | PROTO_F_OUT_FD, &in), 0);
    assert_int_equal(decode_all(&b, &f), (long)b.len);
    assert_int_equal(f.len, 12 + 8 + 7 + 8); /* fixed, names, u64 length */
    assert_int_equal(f.flags, PROTO_F_IN_FD | PROTO_F_OUT_FD);
    assert_int_equal(proto_parse_submit(&f, &out), 0);
    assert_null(out.input);
    assert_int_equal(out.input_len, 1u << 20);
    assert_string_equal(out.task, "sha256");
    buf_free(&b);
}

static void submit_with_input_fd_and_a_wrong_tail_is_malformed(void **state)
{
    struct buf b = {0};
    struct proto_submit in = sample_submit(), out;
    struct proto_frame f;

    /* "abc" inline is 3 bytes where the length of the memfd takes 8 */
    assert_int_equal(proto_put_submit(&b, 3, 0, &in), 0);
    assert_int_equal(decode_all(&b, &f), (long)b.len);
    f.flags = PROTO_F_IN_FD;
    assert_int_equal(proto_parse_submit(&f, &out), TH_EPROTO);
    buf_free(&b);
}

static void submit_with_a_memfd_slot_carries_length_and_slot(void **state)
{
    static const uint16_t flags[] = {PROTO_F_IN_SLOT,
                                     PROTO_F_IN_SLOT | PROTO_F_IN_FD};

    for (size_t i = 0; i < 2; i++) {
        struct buf b = {0};
        struct proto_submit in = sample_submit(), out;
        struct proto_frame f;

        in.input_len = 3u << 20;
        in.slot = 63;
        assert_int_equal(proto_put_submit(&b, 8, flags[i], &in), 0);
        assert_int_equal(decode_all(&b, &f), (long)b.len);
        assert_int_equal(f.len, 12 + 8 + 7 + 16);
        assert_int_equal(proto_parse_submit(&f, &out), 0);
        assert_null(out.input);
        assert_int_equal(out.input_len, 3u << 20);
        assert_int_equal(out.slot, 63);
        /* the u32 after the slot is reserved */
        b.data[b.len - 1] = 1;
        assert_int_equal(decode_all(&b, &f), (long)b.len);
        assert_int_equal(proto_parse_submit(&f, &out), TH_EPROTO);
        buf_free(&b);
    }
}

static void submit_without_a_slot_says_so(void **state)
{
    struct buf b = {0};
    struct proto_submit in = sample_submit(), out;
    struct proto_frame f;

    assert_int_equal(proto_put_submit(&b, 8, 0, &in), 0);
    assert_int_equal(decode_all(&b, &f), (long)b.len);
    assert_int_equal(proto_parse_submit(&f, &out), 0);
    assert_int_equal(out.slot, PROTO_NO_SLOT);
    /* three bytes inline are not the 16 of a slot's tail */
    f.flags = PROTO_F_IN_SLOT;
    assert_int_equal(proto_parse_submit(&f, &out), TH_EPROTO);
    buf_free(&b);
}

static void result_in_a_memfd_round_trips_its_length(void **state)
{
    static const uint16_t flags[] = {PROTO_F_RES_FD, PROTO_F_RES_IN_FD};

    for (size_t i = 0; i < 2; i++) {
        struct buf b = {0};
        struct proto_result in = {.task_id = 9, .state = TH_STATE_OK,
                                  .flags = flags[i], .len = 5u << 20},
                            out;
        struct proto_frame f;

        assert_int_equal(proto_put_result(&b, 4, &in), 0);
        assert_int_equal(decode_all(&b, &f), (long)b.len);
        assert_int_equal(f.flags, flags[i]);
        assert_int_equal(f.len, 32 + 8);
        assert_int_equal(proto_parse_result(&f, &out), 0);
        assert_int_equal(out.flags, flags[i]);
        assert_null(out.data);
        assert_int_equal(out.len, 5u << 20);
        buf_free(&b);
    }
}

static void result_with_both_memfd_flags_is_malformed(void **state)
{
    struct buf b = {0};
    struct proto_result in = {.state = TH_STATE_OK, .flags = PROTO_F_RES_FD,
                              .len = 100000},
                        out;
    struct proto_frame f;

    assert_int_equal(proto_put_result(&b, 4, &in), 0);
    assert_int_equal(decode_all(&b, &f), (long)b.len);
    f.flags = PROTO_F_RES_FD | PROTO_F_RES_IN_FD;
    assert_int_equal(proto_parse_result(&f, &out), TH_EPROTO);
    f.flags = 0x8;
    assert_int_equal(proto_parse_result(&f, &out), TH_EPROTO);
    buf_free(&b);
}

static void result_in_a_memfd_with_a_text_body_is_malformed(void **state)
{
    struct buf b = {0};
    struct proto_result in = {.state = TH_STATE_OK, .data = "0123456789",
                              .len = 10},
                        out;
    struct proto_frame f;

    assert_int_equal(proto_put_result(&b, 4, &in), 0);
    assert_int_equal(decode_all(&b, &f), (long)b.len);
    f.flags = PROTO_F_RES_FD; /* 10 bytes where a u64 length belongs */
    assert_int_equal(proto_parse_result(&f, &out), TH_EPROTO);
    buf_free(&b);
}

static void reply_carries_its_flags(void **state)
{
    struct buf b = {0};
    struct proto_reply out;
    struct proto_frame f;

    assert_int_equal(proto_put_reply_flags(&b, PROTO_REPLY, 2, PROTO_F_FD_OK,
                                           0, "taskhostd", 9),
                     0);
    assert_int_equal(decode_all(&b, &f), (long)b.len);
    assert_int_equal(f.flags, PROTO_F_FD_OK);
    assert_int_equal(proto_parse_reply(&f, &out), 0);
    assert_int_equal(out.len, 9);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(submit_round_trips),
        cmocka_unit_test(progress_round_trips_and_caps_its_message),
        cmocka_unit_test(result_round_trips),
        cmocka_unit_test(submit_with_input_fd_carries_only_the_length),
        cmocka_unit_test(submit_with_input_fd_and_a_wrong_tail_is_malformed),
        cmocka_unit_test(submit_with_a_memfd_slot_carries_length_and_slot),
        cmocka_unit_test(submit_without_a_slot_says_so),
        cmocka_unit_test(result_in_a_memfd_round_trips_its_length),
        cmocka_unit_test(result_with_both_memfd_flags_is_malformed),
        cmocka_unit_test(result_in_a_memfd_with_a_text_body_is_malformed),
        cmocka_unit_test(reply_carries_its_flags),
        cmocka_unit_test(control_frames_round_trip),
        cmocka_unit_test(header_is_little_endian),
        cmocka_unit_test(partial_frame_asks_for_more),
        cmocka_unit_test(oversized_frame_is_refused_from_its_header),
        cmocka_unit_test(other_version_is_refused),
        cmocka_unit_test(submit_without_nul_is_malformed),
        cmocka_unit_test(submit_names_past_the_body_are_malformed),
        cmocka_unit_test(result_with_transient_state_is_malformed),
        cmocka_unit_test(long_names_are_refused_by_the_encoder),
        cmocka_unit_test(random_bytes_never_crash_the_decoder),
        cmocka_unit_test(consume_keeps_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
