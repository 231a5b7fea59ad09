/* newer_sdk.c - a plugin built against a newer SDK that calls a function
 * this host does not have. dlopen() alone would fail with "undefined
 * symbol"; the loader must still say which ABI the plugin wants (when
 * NEWER_SDK_SAME_ABI is not defined) or which function is missing. */
#include <taskhost.h>

/* A function of some later SDK. */
extern int th_task_teleport(th_task *task, const char *where);

static int newer_run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    (void)in;
    (void)len;
    return th_task_teleport(task, "elsewhere");
}

static const th_task_def tasks[] = {{"go", newer_run}, {NULL, NULL}};

#ifdef NEWER_SDK_SAME_ABI
#define NEWER_ABI TH_ABI_VERSION
#else
#define NEWER_ABI (TH_ABI_VERSION + 1)
#endif

TH_EXPORT extern const th_plugin taskhost_plugin;
const th_plugin taskhost_plugin = {
    NEWER_ABI, sizeof(th_plugin), "newer", "1.0", NULL, NULL, tasks, NULL, NULL,
};
