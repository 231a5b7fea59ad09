/* inithang.c - a plugin whose init() never returns. The host must kill a
 * worker whose init runs longer than its pool's task_timeout, and give up
 * on the pool after repeated failed starts, answering its tasks. */
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

#include <taskhost.h>

static int inithang_init(const th_settings *settings, void **state)
{
    (void)settings, (void)state;
    for (;;)
        sleep(1000); /* SIGTERM only interrupts the sleep: sleep again */
    return 0;
}

static int inithang_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}

static const th_task_def tasks[] = {{"echo", inithang_run}, {NULL, NULL}};

TH_PLUGIN("inithang", "1.0", inithang_init, NULL, tasks);
