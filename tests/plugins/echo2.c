/* echo2.c - a second build of the echo plugin, version "2.0", with a task
 * that tells which build is serving: reload tests put it in place of echo
 * and expect the new version to answer. */
#include <string.h>

#include <taskhost.h>

#define ECHO2_VERSION "2.0"

static int echo2_echo(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}

static int echo2_version(void *state, th_task *task, const void *in, size_t len)
{
    (void)state, (void)in, (void)len;
    return th_task_write(task, ECHO2_VERSION, strlen(ECHO2_VERSION));
}

static const th_task_def tasks[] = {
    {"echo", echo2_echo},
    {"version", echo2_version},
    {NULL, NULL},
};

TH_PLUGIN("echo", ECHO2_VERSION, NULL, NULL, tasks);
