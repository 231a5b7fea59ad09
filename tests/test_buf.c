/* test_buf.c - the byte buffer both ends and the engine use (buf.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"

static void consume_keeps_the_rest(void **state)
{
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append(&b, "abcdef", 6), 0);
    buf_consume(&b, 2);
    assert_int_equal(buf_avail(&b), 4);
    assert_memory_equal(buf_head(&b), "cdef", 4);
    buf_consume(&b, 10);
    assert_int_equal(buf_avail(&b), 0);
    buf_free(&b);
}

static void appending_in_small_pieces_keeps_every_byte_in_order(void **state)
{
    struct buf b = BUF_INIT;
    size_t got = 0;
    for (unsigned i = 0; i < 100000; i++) {
        unsigned char c = (unsigned char)i;
        assert_int_equal(buf_append(&b, &c, 1), 0);
        if (i % 7 == 6) { /* consume some as a sender would */
            assert_int_equal((unsigned char)buf_head(&b)[0], (unsigned char)got);
            buf_consume(&b, 1);
            got++;
        }
    }
    assert_int_equal(buf_avail(&b), 100000 - got);
    for (size_t i = 0; i < buf_avail(&b); i++)
        assert_int_equal((unsigned char)buf_head(&b)[i],
                         (unsigned char)(got + i));
    buf_free(&b);
}

static void a_consumed_head_is_reclaimed_before_growing(void **state)
{
    struct buf b = BUF_INIT;
    char block[1000];
    memset(block, 'x', sizeof block);
    assert_int_equal(buf_reserve(&b, 4000), 0);
    size_t cap = b.cap;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(buf_append(&b, block, sizeof block), 0);
        buf_consume(&b, sizeof block);
    }
    assert_int_equal(b.cap, cap); /* steady traffic does not grow it */
    buf_free(&b);
}

static void truncate_takes_back_what_was_appended(void **state)
{
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append(&b, "keep", 4), 0);
    buf_consume(&b, 1);
    size_t before = buf_avail(&b);
    assert_int_equal(buf_append(&b, "drop me", 7), 0);
    buf_truncate(&b, before);
    assert_int_equal(buf_avail(&b), 3);
    assert_memory_equal(buf_head(&b), "eep", 3);
    buf_free(&b);
}

static void extend_commits_the_bytes_it_returns(void **state)
{
    struct buf b = BUF_INIT;
    char *p = buf_extend(&b, 5);
    assert_non_null(p);
    memcpy(p, "hello", 5);
    assert_int_equal(buf_avail(&b), 5);
    assert_memory_equal(buf_head(&b), "hello", 5);
    buf_free(&b);
}

static void flush_and_read_move_bytes_through_a_socket(void **state)
{
    int sv[2];
    struct buf out = BUF_INIT, in = BUF_INIT;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(buf_append(&out, "ping", 4), 0);
    assert_int_equal(buf_flush(&out, sv[0]), 0);
    assert_int_equal(buf_avail(&out), 0);
    assert_int_equal(buf_read(&in, sv[1], 64), 4);
    assert_memory_equal(buf_head(&in), "ping", 4);
    close(sv[0]);
    assert_int_equal(buf_read(&in, sv[1], 64), 0); /* end of file */
    close(sv[1]);
    buf_free(&out);
    buf_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(consume_keeps_the_rest),
        cmocka_unit_test(appending_in_small_pieces_keeps_every_byte_in_order),
        cmocka_unit_test(a_consumed_head_is_reclaimed_before_growing),
        cmocka_unit_test(truncate_takes_back_what_was_appended),
        cmocka_unit_test(extend_commits_the_bytes_it_returns),
        cmocka_unit_test(flush_and_read_move_bytes_through_a_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
