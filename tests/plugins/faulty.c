/* faulty.c - tasks that misbehave in the ways a worker must survive or be
 * put down for: they are the fixtures of the fault tests.
 *
 *   spin      busy loop forever, never checking for cancel
 *   block     sleep(1000), ignoring cancel
 *   garbage   writes random bytes to fd 1 and 2, then returns "ok"
 *   fork      forks a child that sleeps 30 s, then returns "ok"
 *   closefds  closes fds 0 to 1023, then returns "ok"
 *   scribble  writes on its parent socket an answer to a task it was never
 *             given, then random bytes, then returns "ok"
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <taskhost.h>

#include "worker_wire.h"

static int faulty_spin(void *state, th_task *task, const void *in, size_t len)
{
    volatile unsigned long n = 0;
    (void)state, (void)task, (void)in, (void)len;
    for (;;)
        n++;
    return 0;
}

static int faulty_block(void *state, th_task *task, const void *in, size_t len)
{
    (void)state, (void)in, (void)len;
    sleep(1000);
    return th_task_write(task, "ok", 2);
}

/* Writes n pseudo-random bytes to fd, ignoring errors. */
static void scribble(int fd, size_t n)
{
    unsigned char buf[4096];
    unsigned int seed =
        (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)fd;

    for (size_t i = 0; i < sizeof buf; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (unsigned char)(seed >> 16);
    }
    while (n > 0) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        if (write(fd, buf, k) <= 0)
            return;
        n -= k;
    }
}

static int faulty_garbage(void *state, th_task *task, const void *in,
                          size_t len)
{
    (void)state, (void)in, (void)len;
    scribble(1, 65536);
    scribble(2, 65536);
    return th_task_write(task, "ok", 2);
}

static int faulty_fork(void *state, th_task *task, const void *in, size_t len)
{
    (void)state, (void)in, (void)len;
    pid_t pid = fork();
    if (pid == -1)
        return th_task_fail(task, TH_EIO, "fork failed");
    if (pid == 0) {
        sleep(30);
        _exit(0);
    }
    return th_task_write(task, "ok", 2);
}

static int faulty_closefds(void *state, th_task *task, const void *in,
                           size_t len)
{
    (void)state, (void)in, (void)len;
    for (int fd = 0; fd < 1024; fd++)
        close(fd);
    return th_task_write(task, "ok", 2);
}

/* The worker's socket to its host: the one socket among its fds. */
static int parent_socket(void)
{
    struct stat st;

    for (int fd = 3; fd < 1024; fd++)
        if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
            return fd;
    return -1;
}

static int faulty_scribble(void *state, th_task *task, const void *in,
                           size_t len)
{
    struct frame f;
    int fd = parent_socket();
    (void)state, (void)in, (void)len;

    if (fd < 0)
        return th_task_fail(task, TH_EIO, "no parent socket");
    memset(&f, 0, sizeof f);
    f.id = ~(uint64_t)0; /* no task has this id */
    f.type = FRAME_RESULT;
    if (write(fd, &f, sizeof f) != (ssize_t)sizeof f)
        return th_task_fail(task, TH_EIO, "write failed");
    scribble(fd, 4096);
    return th_task_write(task, "ok", 2);
}

static const th_task_def tasks[] = {
    {"spin", faulty_spin},
    {"block", faulty_block},
    {"garbage", faulty_garbage},
    {"fork", faulty_fork},
    {"closefds", faulty_closefds},
    {"scribble", faulty_scribble},
    {NULL, NULL},
};

TH_PLUGIN("faulty", "1.0", NULL, NULL, tasks);
