/* crash.c - a plugin that dies, to show that a crash takes down only its
 * worker: the host answers the task `crashed`, naming the signal or the exit
 * status, and replaces the worker.
 *
 *   task "segv":  writes through a NULL pointer (SIGSEGV)
 *   task "abort": calls abort() (SIGABRT)
 *   task "exit":  calls exit(3) in the middle of the task
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdlib.h>

#include <taskhost.h>

/* The sanitizers would turn the invalid write into a report and an exit
 * status; this task is about a real SIGSEGV, so it opts out of their null
 * check and restores the default action of the signal. */
#if defined(__GNUC__) && (__GNUC__ >= 8 || defined(__clang__))
__attribute__((no_sanitize("undefined")))
#endif
static int
crash_segv(void *state, th_task *task, const void *input, size_t len)
{
    volatile int *volatile p = NULL;
    (void)state, (void)task, (void)input, (void)len;

    signal(SIGSEGV, SIG_DFL);
    *p = 1;
    return 0;
}

static int crash_abort(void *state, th_task *task, const void *input,
                       size_t len)
{
    (void)state, (void)task, (void)input, (void)len;
    abort();
}

static int crash_exit(void *state, th_task *task, const void *input, size_t len)
{
    (void)state, (void)input, (void)len;
    th_task_write(task, "partial", 7); /* never delivered */
    exit(3);
}

static const th_task_def tasks[] = {
    {"segv", crash_segv},
    {"abort", crash_abort},
    {"exit", crash_exit},
    {NULL, NULL},
};

TH_PLUGIN("crash", "1.0", NULL, NULL, tasks);
