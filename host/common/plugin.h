/* plugin.h - loading and validating plugin shared objects.
 *
 * A plugin is dlopen()ed once, in the host process, before any worker is
 * forked; workers inherit the mapping. Loading checks the file (it exists,
 * is a regular file, and, with strict permissions, is not writable by group
 * or others nor owned by another non-root user, nor is its directory), the
 * exported TH_PLUGIN_SYMBOL, its ABI version and its task table.
 */
#ifndef TH_PLUGIN_H
#define TH_PLUGIN_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "taskhost.h"

struct plugin {
    char *name;      /* the config's name for it */
    char *path;      /* absolute path as loaded */
    void *dl;        /* dlopen handle */
    th_plugin desc;  /* copy of the descriptor, zero-extended; the fields
                        of ABIs after the plugin's own are zero */
    th_task_info *tasks; /* the tasks, whichever form the plugin used,
                            each entry zero-extended */
    size_t ntasks;   /* entries in tasks */
    dev_t dev;       /* identity of the file when loaded, to notice a */
    ino_t ino;       /* rebuilt .so at reload */
    struct timespec mtime;
    int refs;        /* pools using it, plus the host's table */
};

/* Loads plugin `path` as `name`. `strict` enables the permission checks.
 * On failure returns TH_ENOENT (missing file), TH_EPERM (permissions),
 * TH_EABI (an ABI outside TH_ABI_VERSION_MIN..TH_ABI_VERSION, or an SDK
 * function this host lacks) or TH_EINVAL (no symbol, bad descriptor,
 * dlopen error) and writes one line into err, naming the path and the
 * reason, e.g.
 *   "/x/hash.so: built for plugin ABI 3, this host supports ABI 1 to 2".
 * The caller prefixes the config location. refs starts at 1. */
int plugin_load(const char *name, const char *path, int strict,
                struct plugin **out, char *err, size_t errlen);

/* Returns the index of task `name` in the descriptor's table, or -1. */
int plugin_find_task(const struct plugin *p, const char *name);

/* Returns non-zero when the file at p->path is no longer the file that
 * was loaded (another inode or mtime, or gone). */
int plugin_file_changed(const struct plugin *p);

/* Takes a reference. */
void plugin_ref(struct plugin *p);

/* Drops a reference; at zero dlcloses and frees. NULL is allowed. */
void plugin_unref(struct plugin *p);

#endif /* TH_PLUGIN_H */
