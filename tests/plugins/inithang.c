/* inithang.c - a plugin whose init() takes `init_ms` milliseconds (a
 * setting; never returns by default). The host kills a worker whose init
 * runs longer than its pool's init_timeout, and gives up on the pool after
 * repeated failed starts, answering its tasks; an init that is slow but
 * within init_timeout is left alone, whatever task_timeout says. */
#define _POSIX_C_SOURCE 200809L
#include <time.h>
#include <unistd.h>

#include <taskhost.h>

static int inithang_init(const th_settings *settings, void **state)
{
    (void)state;
    int64_t ms = th_setting_int(settings, "init_ms", -1);
    if (ms >= 0) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0)
            ; /* SIGTERM interrupts: sleep the rest */
        return 0;
    }
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
