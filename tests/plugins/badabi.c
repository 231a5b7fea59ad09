/* badabi.c - a plugin built "for another ABI": its descriptor is written by
 * hand with abi_version 999. The loader must refuse it with TH_EABI and a
 * message naming 999 and the host's TH_ABI_VERSION. */
#include <taskhost.h>

static int badabi_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}

static const th_task_def tasks[] = {{"echo", badabi_run}, {NULL, NULL}};

TH_EXPORT extern const th_plugin taskhost_plugin;
const th_plugin taskhost_plugin = {
    999, sizeof(th_plugin), "badabi", "1.0", NULL, NULL, tasks, NULL, NULL,
};
