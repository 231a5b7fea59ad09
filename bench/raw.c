/* raw.c - the floor: two processes on a socketpair, no engine at all.
 *
 * A child echoes 16-byte messages, one read() and one write() each. The
 * round trip is a blocking write+read pair in the parent; the message rate
 * keeps 256 messages in flight, still one system call per message on both
 * sides (unbatched), which is what a per-task hop costs without batching.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MSG 16
#define RTT_COUNT 20000
#define MSG_COUNT 200000
#define MSG_WINDOW 256

static int read_full(int fd, char *buf, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, buf, n);
        if (r <= 0)
            return -1;
        buf += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_msg(int fd, const char *buf)
{
    return write(fd, buf, MSG) == MSG ? 0 : -1;
}

static pid_t start_echo(int sv[2])
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    close(sv[0]);
    char buf[MSG];
    while (read_full(sv[1], buf, MSG) == 0 && write_msg(sv[1], buf) == 0)
        ;
    _exit(0);
}

static double rtt_p50_us(int fd)
{
    static double lat[RTT_COUNT];
    char buf[MSG] = "ping ping ping!";
    for (int i = 0; i < 1000; i++)
        if (write_msg(fd, buf) < 0 || read_full(fd, buf, MSG) < 0)
            return -1;
    for (int i = 0; i < RTT_COUNT; i++) {
        double t0 = now_s();
        if (write_msg(fd, buf) < 0 || read_full(fd, buf, MSG) < 0)
            return -1;
        lat[i] = now_s() - t0;
    }
    return percentile(lat, RTT_COUNT, 0.5) * 1e6;
}

static double msgs_per_s(int fd)
{
    char buf[MSG] = "ping ping ping!";
    long sent = 0, got = 0;
    double t0 = now_s();
    for (; sent < MSG_WINDOW; sent++)
        if (write_msg(fd, buf) < 0)
            return -1;
    while (got < MSG_COUNT) {
        if (read_full(fd, buf, MSG) < 0)
            return -1;
        got++;
        if (sent < MSG_COUNT && write_msg(fd, buf) == 0)
            sent++;
    }
    return (double)MSG_COUNT / (now_s() - t0);
}

static int one_run(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
        return -1;
    pid_t pid = start_echo(sv);
    close(sv[1]);
    double rtt = pid > 0 ? rtt_p50_us(sv[0]) : -1;
    double rate = pid > 0 ? msgs_per_s(sv[0]) : -1;
    close(sv[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    if (rtt < 0 || rate < 0)
        return -1;
    fig_put("raw_rtt_p50_us", rtt);
    fig_put("raw_msgs_per_s", rate);
    return 0;
}

void suite_raw(void)
{
    note("raw reference: socketpair round trip and message rate");
    for (int r = 0; r < bench_runs; r++)
        if (one_run() < 0) {
            fig_na("raw_rtt_p50_us", "socketpair failed");
            fig_na("raw_msgs_per_s", "socketpair failed");
            return;
        }
}

/* ---- the ceiling of payload rates: memcpy in one process ---- */

#define MEMCPY_LEN (1u << 20)
#define MEMCPY_ROUNDS 2000

/* MB/s of memcpy of 1 MiB between two buffers touched before timing
 * (pages present, as the payload paths' reused buffers are). */
static double memcpy_mbps(void)
{
    char *a = malloc(MEMCPY_LEN), *b = malloc(MEMCPY_LEN);
    double mbps = -1;
    if (a != NULL && b != NULL) {
        memset(a, 'a', MEMCPY_LEN);
        memset(b, 'b', MEMCPY_LEN);
        double t0 = now_s();
        for (int i = 0; i < MEMCPY_ROUNDS; i++) {
            memcpy(i % 2 ? a : b, i % 2 ? b : a, MEMCPY_LEN);
            /* keeps the copies from being optimised away */
            __asm__ __volatile__("" : : "r"(a), "r"(b) : "memory");
        }
        mbps = (double)MEMCPY_LEN * MEMCPY_ROUNDS / (now_s() - t0) / 1e6;
    }
    free(a);
    free(b);
    return mbps;
}

void suite_memcpy(void)
{
    note("raw reference: memcpy of 1 MiB");
    for (int r = 0; r < bench_runs; r++)
        fig_put("memcpy_1m_mbps", memcpy_mbps());
}
