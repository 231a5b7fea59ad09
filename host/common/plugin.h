/* plugin.h - loading and validating plugin shared objects.
 *
 * plugin_load() dlopen()s a plugin: only a pool's spawner does that
 * (host/worker/spawner.c), never the host, so a plugin's constructors
 * and its descriptor never run in, nor are mapped by, the host; workers
 * inherit the spawner's mapping. Loading checks the file (it exists, is a
 * regular file, and, with strict permissions, is not writable by group
 * or others nor owned by another non-root user, nor is its directory),
 * the exported TH_PLUGIN_SYMBOL, its ABI version and its task table. The
 * host knows a plugin by what a spawner reported of it
 * (plugin_new_probed()): names and the file's identity, copied.
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
    /* A plugin known from a spawner's report (plugin_probe()) is not
     * loaded here: dl is NULL, desc's name and version are these copies,
     * and tasks holds copied names with NULL run functions. */
    char *meta_name, *meta_version;
    int has_check;   /* it has a check() (a probed one: as reported) */
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

/* Makes a plugin that is not loaded in this process, from what a
 * spawner reported of it: its descriptor's name and version, its ntasks
 * task names, and the identity of its file. NULL when out of memory. */
struct plugin *plugin_new_probed(const char *name, const char *path,
                                 const char *desc_name, const char *version,
                                 char **tasks, size_t ntasks, dev_t dev,
                                 ino_t ino, struct timespec mtime);

/* Non-zero when a and b have the same task names in the same order. */
int plugin_same_tasks(const struct plugin *a, const struct plugin *b);

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
