/* raw_client.h - a client socket to the daemon of harness.h without the
 * client library, and a reader of whole frames (client_wire.h), for the
 * tests that send what the library never would. Include after <cmocka.h>
 * and "harness.h"; link host/common/client_wire.c.
 */
#ifndef TH_TESTS_RAW_CLIENT_H
#define TH_TESTS_RAW_CLIENT_H

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "client_wire.h"
#include "harness.h"

/* Connects to t's socket; reads that get nothing within DEADLINE fail
 * instead of hanging. */
static inline int td_raw_connect(const struct hx *t)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = (time_t)DEADLINE};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd != -1);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    strcpy(sa.sun_path, t->sock);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Reads from fd until one whole frame is in buf (cap bytes) or the peer
 * closes; returns its size, 0 on EOF before a frame. */
static inline long td_read_frame(int fd, uint8_t *buf, size_t cap,
                                 struct proto_frame *f)
{
    size_t got = 0, need = PROTO_HEADER_SIZE;
    long n = 0;

    for (;;) {
        n = proto_decode(buf, got, cap, f, &need);
        if (n != 0)
            return n;
        assert_true(need <= cap);
        ssize_t r = read(fd, buf + got, need - got);
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
}

#endif /* TH_TESTS_RAW_CLIENT_H */
