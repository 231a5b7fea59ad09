/* error.c - names of error codes and task states (common layer). */
#include "taskhost.h"
#include "taskhost_host.h"

/* Indexed by -code. */
static const char *const error_names[] = {
    "success",
    "invalid argument",
    "out of memory",
    "no such pool, task, plugin, file or key",
    "input/output error",
    "timed out",
    "cancelled",
    "queue full",
    "plugin ABI mismatch",
    "invalid configuration",
    "host closed",
    "pool failed",
    "payload too large",
    "plugin failed",
    "not permitted",
    "protocol error",
    "busy",
};

TH_EXPORT const char *th_strerror(int code)
{
    int n = (int)(sizeof error_names / sizeof error_names[0]);
    if (code > 0 || -code >= n)
        return "plugin-defined error";
    return error_names[-code];
}

static const char *const state_names[TH_STATE_COUNT] = {
    "queued", "running", "ok", "error", "timeout",
    "cancelled", "rejected", "crashed", "memory",
};

TH_EXPORT const char *th_state_name(th_state state)
{
    if ((int)state < 0 || (int)state >= TH_STATE_COUNT)
        return NULL;
    return state_names[state];
}
