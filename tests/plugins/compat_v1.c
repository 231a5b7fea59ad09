/* compat_v1.c - a plugin built against the SDK header of plugin ABI 1, as
 * it was before the descriptor could grow (tests/compat/taskhost-v1.h, a
 * verbatim copy of that include/taskhost.h). It must keep loading and
 * running in every later host: test_plugin loads it, test_host runs its
 * tasks. It uses every SDK call of that header. */
#include "../compat/taskhost-v1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct state {
    char greeting[64];
    long calls;
};

static int v1_init(const th_settings *settings, void **state)
{
    struct state *s = calloc(1, sizeof *s);

    if (s == NULL)
        return TH_ENOMEM;
    snprintf(s->greeting, sizeof s->greeting, "%s",
             th_setting_string(settings, "greeting", "hello"));
    if (th_setting_int(settings, "fail_init", 0) != 0 ||
        th_setting_bool(settings, "fail_init_bool", 0) ||
        th_setting_float(settings, "fail_init_float", 0) != 0) {
        th_log(TH_LOG_ERROR, "compat_v1: told to fail");
        free(s);
        return TH_EINVAL;
    }
    *state = s;
    return 0;
}

static void v1_fini(void *state)
{
    free(state);
}

static int v1_echo(void *state, th_task *task, const void *in, size_t len)
{
    ((struct state *)state)->calls++;
    return th_task_write(task, in, len);
}

/* "GREETING, INPUT (call N)": the state lives across tasks. */
static int v1_greet(void *state, th_task *task, const void *in, size_t len)
{
    struct state *s = state;
    char out[256];
    int n = snprintf(out, sizeof out, "%s, %.*s (call %ld)", s->greeting,
                     (int)len, (const char *)in, ++s->calls);

    return th_task_write(task, out, (size_t)n);
}

static int v1_fail(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    th_task_write(task, "dropped", 7);
    return th_task_fail(task, TH_EINVAL, "no good: %.*s", (int)len,
                        (const char *)in);
}

/* The task's name and whether it was cancelled: "v1_name 0". */
static int v1_name(void *state, th_task *task, const void *in, size_t len)
{
    char out[128];
    int n = snprintf(out, sizeof out, "%s %d", th_task_name(task),
                     th_task_cancelled(task) != 0);

    (void)state;
    (void)in;
    (void)len;
    th_log(TH_LOG_DEBUG, "compat_v1: %s", th_strerror(TH_EINVAL));
    return th_task_write(task, out, (size_t)n);
}

static const th_task_def tasks[] = {
    {"echo", v1_echo},    {"greet", v1_greet}, {"fail", v1_fail},
    {"v1_name", v1_name}, {NULL, NULL},
};

TH_PLUGIN("compat_v1", "1.0", v1_init, v1_fini, tasks);
