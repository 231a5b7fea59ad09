/* future_abi.c - a plugin built against a newer SDK than the host's: its
 * descriptor names the plugin ABI after this host's TH_ABI_VERSION. The
 * loader must refuse it with TH_EABI and a line naming both versions. */
#include <taskhost.h>

static int future_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}

static const th_task_def tasks[] = {{"echo", future_run}, {NULL, NULL}};

TH_EXPORT extern const th_plugin taskhost_plugin;
const th_plugin taskhost_plugin = {
    TH_ABI_VERSION + 1,
    sizeof(th_plugin),
    "future",
    "1.0",
    NULL,
    NULL,
    tasks,
    NULL, NULL,
};
