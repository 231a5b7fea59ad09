/* xlog.c - tasks that leave an execution log, for the cluster tests: each
 * run appends its input and a newline to the file named by the pool's
 * `log` setting (O_APPEND, one write), before doing its work. A task run
 * twice shows up twice.
 *
 *   echo   returns its input
 *   nap    sleeps 2 ms, returns its input
 *   segv   dies of SIGSEGV after 1 s: a worker that lived that long is
 *          not taken for one failing to start, so its pool does not
 *          back off
 *   hold   input "MS:TAG": sleeps MS milliseconds in slices, stopping
 *          early when cancelled; returns its input
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <taskhost.h>

struct xlog {
    int fd;
};

static int xlog_init(const th_settings *settings, void **state)
{
    const char *path = th_setting_string(settings, "log", NULL);
    struct xlog *x = calloc(1, sizeof *x);
    if (x == NULL)
        return TH_ENOMEM;
    x->fd = -1;
    if (path != NULL)
        x->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    *state = x;
    return 0;
}

static void xlog_fini(void *state)
{
    struct xlog *x = state;
    if (x->fd != -1)
        close(x->fd);
    free(x);
}

static void note(const struct xlog *x, const void *input, size_t len)
{
    char line[256];
    if (x->fd == -1 || len >= sizeof line)
        return;
    memcpy(line, input, len);
    line[len] = '\n';
    if (write(x->fd, line, len + 1) < 0)
        return;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int x_echo(void *state, th_task *task, const void *input, size_t len)
{
    note(state, input, len);
    return th_task_write(task, input, len);
}

static int x_nap(void *state, th_task *task, const void *input, size_t len)
{
    note(state, input, len);
    nap_ms(2);
    return th_task_write(task, input, len);
}

static int x_segv(void *state, th_task *task, const void *input, size_t len)
{
    (void)task;
    note(state, input, len);
    nap_ms(1000);
    raise(SIGSEGV);
    return 0;
}

static int x_hold(void *state, th_task *task, const void *input, size_t len)
{
    char buf[64];
    if (len >= sizeof buf)
        return th_task_fail(task, TH_EINVAL, "hold: input too long");
    memcpy(buf, input, len);
    buf[len] = '\0';
    note(state, input, len);
    long ms = strtol(buf, NULL, 10);
    for (long done = 0; done < ms; done += 10) {
        if (th_task_cancelled(task))
            return th_task_fail(task, TH_ECANCELED, "hold: cancelled");
        nap_ms(10);
    }
    return th_task_write(task, input, len);
}

static const th_task_def tasks[] = {
    {"echo", x_echo},
    {"nap", x_nap},
    {"segv", x_segv},
    {"hold", x_hold},
    {NULL, NULL},
};

TH_PLUGIN("xlog", "1.0", xlog_init, xlog_fini, tasks);
