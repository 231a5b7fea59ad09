/* badinit.c - a plugin that loads but whose init() always fails, after
 * logging why: its pool can never start a worker. */
#include <taskhost.h>

static int badinit_init(const th_settings *settings, void **state)
{
    (void)settings, (void)state;
    th_log(TH_LOG_ERROR, "badinit: init fails on purpose");
    return TH_EINVAL;
}

static int badinit_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}

static const th_task_def tasks[] = {{"echo", badinit_run}, {NULL, NULL}};

TH_PLUGIN("badinit", "1.0", badinit_init, NULL, tasks);
