/* sdkcheck.c - a plugin for the host-side check() hook and the SDK's
 * promises about a task.
 *
 * check() does what the setting `mode` says: "ok" (or absent) passes,
 * "refuse" fails naming the pid it ran in (which must not be the host's),
 * "crash" raises SIGSEGV, "exit" calls _exit(3), "hang" never returns.
 *
 *   task "fail_then_write": fails, then writes; fails again with the
 *        code th_task_write() gave ("write after fail: -1").
 *   task "cancelled_now": "0" or "1", th_task_cancelled() now.
 *   task "wait_cancel": input PATH; blocks SIGTERM, creates PATH.started,
 *        polls th_task_cancelled() for up to 10 s and creates PATH.seen
 *        when it turns true; the task's own cancellation must reach it
 *        without the signal.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <taskhost.h>

static int sdk_check(const th_settings *settings, char *err, size_t errlen)
{
    const char *mode = th_setting_string(settings, "mode", "ok");

    if (strcmp(mode, "refuse") == 0) {
        snprintf(err, errlen, "refused by pid %d", (int)getpid());
        return TH_EINVAL;
    }
    if (strcmp(mode, "crash") == 0)
        raise(SIGSEGV);
    if (strcmp(mode, "exit") == 0)
        _exit(3);
    while (strcmp(mode, "hang") == 0)
        pause();
    return 0;
}

static int fail_then_write(void *state, th_task *task, const void *in,
                           size_t len)
{
    (void)state;
    (void)in;
    (void)len;
    th_task_fail(task, TH_EINVAL, "first");
    int rc = th_task_write(task, "x", 1);
    return th_task_fail(task, TH_EINVAL, "write after fail: %d", rc);
}

static int cancelled_now(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    (void)in;
    (void)len;
    return th_task_write(task, th_task_cancelled(task) ? "1" : "0", 1);
}

static void touch(const char *path, size_t len, const char *suffix)
{
    char name[512];
    snprintf(name, sizeof name, "%.*s%s", (int)len, path, suffix);
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd != -1)
        close(fd);
}

static int wait_cancel(void *state, th_task *task, const void *in, size_t len)
{
    sigset_t term, old;
    struct timespec pause_10ms = {0, 10 * 1000 * 1000};

    (void)state;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &old);
    touch(in, len, ".started");
    for (int i = 0; i < 1000 && !th_task_cancelled(task); i++)
        nanosleep(&pause_10ms, NULL);
    if (th_task_cancelled(task))
        touch(in, len, ".seen");
    sigprocmask(SIG_SETMASK, &old, NULL);
    return 0;
}

static const th_task_info tasks[] = {
    TH_TASK("fail_then_write", fail_then_write),
    TH_TASK("cancelled_now", cancelled_now),
    TH_TASK("wait_cancel", wait_cancel),
    TH_TASK_END,
};

TH_PLUGIN_DESC(.name = "sdkcheck", .version = "1.0", .task_info = tasks,
               .check = sdk_check);
