/* taskinfo.c - a plugin whose tasks are a growable th_task_info table
 * whose entries are larger than this host's th_task_info, as a plugin of
 * a later ABI's entries would be: the loader walks them struct_size bytes
 * apart and keeps the fields it knows. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <taskhost.h>

static int ti_echo(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}

static int ti_upper(void *state, th_task *task, const void *in, size_t len)
{
    char *out = malloc(len + 1);
    int rc;

    (void)state;
    if (out == NULL)
        return TH_ENOMEM;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)toupper(((const unsigned char *)in)[i]);
    rc = th_task_write(task, out, len);
    free(out);
    return rc;
}

/* th_task_info with two fields appended. */
struct later_task_info {
    uint32_t struct_size;
    const char *name;
    th_run_fn run;
    const char *summary;
    uint64_t flags;
};

#define LATER(name, run, summary)                                              \
    {                                                                          \
        sizeof(struct later_task_info), (name), (run), (summary), 42           \
    }

static const struct later_task_info tasks[] = {
    LATER("echo", ti_echo, "its input"),
    LATER("upper", ti_upper, "its input in capitals"),
    LATER(NULL, NULL, NULL),
};

TH_PLUGIN_DESC(.name = "taskinfo", .version = "2.0",
               .task_info = (const th_task_info *)(const void *)tasks);
