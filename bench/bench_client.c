/* bench_client.c - throughput of taskhostd through its socket.
 *
 *   bench_client [-s SOCKET] [-p POOL] [-t TASK] [-n INFLIGHT] [-d SECONDS]
 *                [-b BYTES]
 *
 * Keeps INFLIGHT tasks (default 256) in flight on one connection for
 * SECONDS (default 5) and prints the rate of answers and their states.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "taskhost_client.h"

struct bench {
    th_client *c;
    const char *pool, *task;
    char *input;
    size_t len;
    unsigned long answered, ok;
    int refill;
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_done(const th_result *r, void *arg);

static int submit(struct bench *b)
{
    return th_client_submit(b->c, b->pool, b->task, b->input, b->len, NULL,
                            on_done, b, NULL);
}

static void on_done(const th_result *r, void *arg)
{
    struct bench *b = arg;

    b->answered++;
    b->ok += r->state == TH_STATE_OK;
    if (b->refill && submit(b) < 0)
        b->refill = 0;
}

int main(int argc, char **argv)
{
    struct bench b = {.pool = "echo", .task = "echo", .refill = 1};
    const char *sock = NULL;
    double secs = 5, start, end;
    int inflight = 256, c;
    unsigned long counted;
    char err[256];

    b.len = 16;
    while ((c = getopt(argc, argv, "s:p:t:n:d:b:")) != -1) {
        switch (c) {
        case 's': sock = optarg; break;
        case 'p': b.pool = optarg; break;
        case 't': b.task = optarg; break;
        case 'n': inflight = atoi(optarg); break;
        case 'd': secs = atof(optarg); break;
        case 'b': b.len = (size_t)atol(optarg); break;
        default:
            fprintf(stderr, "usage: bench_client [-s SOCKET] [-p POOL] "
                            "[-t TASK] [-n INFLIGHT] [-d SECONDS] [-b BYTES]\n");
            return 2;
        }
    }
    b.input = malloc(b.len ? b.len : 1);
    memset(b.input, 'x', b.len);
    if (th_client_connect(&b.c, sock, err, sizeof err) < 0) {
        fprintf(stderr, "bench_client: %s\n", err);
        return 1;
    }
    start = now();
    for (int i = 0; i < inflight; i++)
        submit(&b);
    while ((end = now()) - start < secs)
        if (th_client_step(b.c, 100) < 0)
            break;
    b.refill = 0;
    end = now();
    counted = b.answered;
    th_client_wait(b.c, 30);
    printf("%lu answers in %.2f s: %.0f tasks/s (%lu ok of %lu, %d in "
           "flight, %zu-byte input)\n",
           counted, end - start, counted / (end - start), b.ok, b.answered,
           inflight, b.len);
    th_client_close(b.c);
    free(b.input);
    return b.ok == b.answered ? 0 : 1;
}
