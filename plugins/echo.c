/* echo.c - the smallest plugin: one task, no state.
 *
 * Shows the minimum a plugin needs: a run function that writes its output
 * with th_task_write() and a descriptor made by TH_PLUGIN().
 *
 *   task "echo": returns its input unchanged.
 */
#include <taskhost.h>

static int echo_run(void *state, th_task *task, const void *input, size_t len)
{
    (void)state;
    return th_task_write(task, input, len);
}

static const th_task_def tasks[] = {
    {"echo", echo_run},
    {NULL, NULL},
};

TH_PLUGIN("echo", "1.0", NULL, NULL, tasks);
