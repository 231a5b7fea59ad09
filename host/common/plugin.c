/* plugin.c - loading and validating plugin shared objects (common
 * layer: the engine and the worker process use it).
 *
 * The order of the checks matters: the file is looked at (existence, type,
 * permissions) before dlopen(), because dlopen() runs the object's
 * constructors in the loading process (a spawner, never the host). Then the descriptor is checked field by
 * field and copied into a zeroed struct, so that a plugin built against an
 * older, shorter th_plugin reads as if its missing fields were NULL. Every
 * ABI from TH_ABI_VERSION_MIN to TH_ABI_VERSION loads; the tasks, in the
 * fixed ABI 1 table or the growable th_task_info table, are copied into
 * one array of th_task_info that the rest of the host uses.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plugin.h"

/* Plugins resolve the SDK functions against the host process when they are
 * dlopen()ed. Naming them here makes every program that loads plugins
 * carry them, also when it links the engine as a static archive. */
static const struct {
    int (*write)(th_task *, const void *, size_t);
    int (*fail)(th_task *, int, const char *, ...);
    int (*cancelled)(const th_task *);
    const char *(*name)(const th_task *);
    void (*log)(int, const char *, ...);
    const char *(*string)(const th_settings *, const char *, const char *);
    int64_t (*integer)(const th_settings *, const char *, int64_t);
    double (*real)(const th_settings *, const char *, double);
    int (*boolean)(const th_settings *, const char *, int);
    const char *(*strerror)(int);
} sdk_functions __attribute__((used)) = {
    th_task_write,   th_task_fail,      th_task_cancelled, th_task_name,
    th_log,          th_setting_string, th_setting_int,    th_setting_float,
    th_setting_bool, th_strerror,
};

/* A task table longer than this is taken for one missing its terminator. */
#define PLUGIN_MAX_TASKS 4096

/* The descriptor must reach at least to the end of `tasks` (ABI 1). */
#define PLUGIN_MIN_SIZE (offsetof(th_plugin, tasks) + sizeof(void *))

/* The dynamic loader knows an object by the name it was opened with before
 * it looks at the file: dlopen() of a path naming a rebuilt file, while the
 * old build is still loaded under that path (reload builds the new state
 * before it drops the old), would return the old build. So every live
 * plugin is listed here with the name it was opened by, and a file not
 * loaded yet is opened under a name no live plugin uses: its path, or the
 * path with "./" inserted before the file name as many times as needed.
 * Only the host's main thread loads plugins. */
struct loaded {
    struct plugin *p;
    char *dlname;
    struct loaded *next;
};
static struct loaded *loaded_list;

/* Formats "PATH: reason" into err and returns code. */
#if defined(__GNUC__)
__attribute__((format(printf, 5, 6)))
#endif
static int
fail(char *err, size_t errlen, int code, const char *path, const char *fmt, ...)
{
    va_list ap;
    int n = 0;

    if (err == NULL || errlen == 0)
        return code;
    n = snprintf(err, errlen, "%s: ", path);
    if (n < 0 || (size_t)n >= errlen)
        return code;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

/* Returns a malloc()ed absolute form of path (not resolving symlinks, so
 * that a symlink swapped to a new build is noticed), or NULL. */
static char *absolute_path(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL)
        return NULL;
    size_t len = strlen(cwd) + 1 + strlen(path) + 1;
    char *abs = malloc(len);
    if (abs != NULL)
        snprintf(abs, len, "%s/%s", cwd, path);
    return abs;
}

/* Returns a malloc()ed copy of the directory part of path, or NULL. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* The owner check shared by the file and its directory: root or us. */
static int owner_ok(const struct stat *st)
{
    return st->st_uid == 0 || st->st_uid == geteuid();
}

/* Checks the directory `dir` holding plugin `path`: owned by root or us,
 * and not writable by group or others unless sticky (like /tmp). */
static int check_dir(const char *path, const char *dir, char *err,
                     size_t errlen)
{
    struct stat st;

    if (stat(dir, &st) == -1)
        return fail(err, errlen, TH_EPERM, path,
                    "cannot check directory %s: %s", dir, strerror(errno));
    if (!owner_ok(&st))
        return fail(err, errlen, TH_EPERM, path,
                    "directory %s is owned by uid %ld, not by root or the "
                    "host's user",
                    dir, (long)st.st_uid);
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
        return fail(err, errlen, TH_EPERM, path,
                    "directory %s is writable by group or others (mode %04o)",
                    dir, (unsigned)(st.st_mode & 07777));
    return 0;
}

/* The strict permission checks, in the spirit of sshd's StrictModes: the
 * host runs whatever code the file holds, so nobody but root or the host's
 * user may be able to change the file, or replace it in its directory.
 * Both the directory named and, through symlinks, the real one count. */
static int check_perms(const char *path, const struct stat *st, char *err,
                       size_t errlen)
{
    if (!owner_ok(st))
        return fail(err, errlen, TH_EPERM, path,
                    "owned by uid %ld, not by root or the host's user",
                    (long)st->st_uid);
    if (st->st_mode & (S_IWGRP | S_IWOTH))
        return fail(err, errlen, TH_EPERM, path,
                    "writable by group or others (mode %04o)",
                    (unsigned)(st->st_mode & 07777));
    char *real = realpath(path, NULL);
    if (real == NULL)
        return fail(err, errlen, TH_EPERM, path, "cannot resolve: %s",
                    strerror(errno));
    char *dir = dir_of(path);
    char *realdir = dir_of(real);
    int rc;
    if (dir == NULL || realdir == NULL)
        rc = fail(err, errlen, TH_ENOMEM, path, "out of memory");
    else
        rc = check_dir(path, dir, err, errlen);
    if (rc == 0 && strcmp(dir, realdir) != 0)
        rc = check_dir(path, realdir, err, errlen);
    free(real);
    free(dir);
    free(realdir);
    return rc;
}

/* Looks at the file before it is opened: it exists, is a regular file and,
 * if strict, passes check_perms(). Fills *st. */
static int check_file(const char *path, int strict, struct stat *st, char *err,
                      size_t errlen)
{
    if (stat(path, st) == -1) {
        if (errno == ENOENT || errno == ENOTDIR)
            return fail(err, errlen, TH_ENOENT, path, "no such file");
        if (errno == EACCES)
            return fail(err, errlen, TH_EPERM, path, "permission denied");
        return fail(err, errlen, TH_EINVAL, path, "%s", strerror(errno));
    }
    if (!S_ISREG(st->st_mode))
        return fail(err, errlen, TH_EINVAL, path, "not a regular file");
    if (strict)
        return check_perms(path, st, err, errlen);
    return 0;
}

/* dlerror() texts usually start with the name opened, which our message
 * already does: returns the text without it. */
static const char *dl_reason(const char *dlname)
{
    const char *msg = dlerror();
    size_t n = strlen(dlname);

    if (msg == NULL)
        return "unknown dynamic loader error";
    if (strncmp(msg, dlname, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
        return msg + n + 2;
    return msg;
}

/* Returns the live plugin opened as `dlname`, or NULL. */
static struct loaded *loaded_by_name(const char *dlname)
{
    for (struct loaded *l = loaded_list; l != NULL; l = l->next)
        if (strcmp(l->dlname, dlname) == 0)
            return l;
    return NULL;
}

/* Returns a live plugin loaded from the file `st`, or NULL. */
static struct loaded *loaded_by_file(const struct stat *st)
{
    for (struct loaded *l = loaded_list; l != NULL; l = l->next)
        if (l->p->dev == st->st_dev && l->p->ino == st->st_ino)
            return l;
    return NULL;
}

/* Returns a malloc()ed name under which dlopen() gives the object of the
 * file `st` at the absolute `path` (see struct loaded), or NULL. */
static char *choose_dlname(const char *path, const struct stat *st)
{
    struct loaded *same = loaded_by_file(st);
    if (same != NULL)
        return strdup(same->dlname);
    const char *base = strrchr(path, '/') + 1;
    size_t dirlen = (size_t)(base - path);
    for (size_t k = 0;; k++) {
        char *name = malloc(strlen(path) + 2 * k + 1);
        if (name == NULL)
            return NULL;
        memcpy(name, path, dirlen);
        for (size_t i = 0; i < k; i++)
            memcpy(name + dirlen + 2 * i, "./", 2);
        strcpy(name + dirlen + 2 * k, base);
        if (loaded_by_name(name) == NULL)
            return name;
        free(name);
    }
}

/* Lists p, opened as dlname (taken over), in loaded_list. */
static int loaded_add(struct plugin *p, char *dlname)
{
    struct loaded *l = malloc(sizeof *l);
    if (l == NULL) {
        free(dlname);
        return TH_ENOMEM;
    }
    l->p = p;
    l->dlname = dlname;
    l->next = loaded_list;
    loaded_list = l;
    return 0;
}

/* Removes p from loaded_list, if there. */
static void loaded_remove(const struct plugin *p)
{
    for (struct loaded **lp = &loaded_list; *lp != NULL; lp = &(*lp)->next) {
        struct loaded *l = *lp;
        if (l->p == p) {
            *lp = l->next;
            free(l->dlname);
            free(l);
            return;
        }
    }
}

/* Checks the task names and functions of p->tasks[0..n). */
static int check_task_entries(const struct plugin *p, size_t n, char *err,
                              size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const th_task_info *t = &p->tasks[i];
        if (t->name[0] == '\0')
            return fail(err, errlen, TH_EINVAL, p->path,
                        "task %zu has an empty name", i + 1);
        if (t->run == NULL)
            return fail(err, errlen, TH_EINVAL, p->path,
                        "task '%s' has no run function", t->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->tasks[j].name, t->name) == 0)
                return fail(err, errlen, TH_EINVAL, p->path,
                            "task '%s' is defined twice", t->name);
    }
    return 0;
}

static int too_many_tasks(const struct plugin *p, char *err, size_t errlen)
{
    return fail(err, errlen, TH_EINVAL, p->path,
                "more than %d tasks (is the table's terminator missing?)",
                PLUGIN_MAX_TASKS);
}

/* Counts the entries of the ABI 1 table desc.tasks and copies them into
 * p->tasks. */
static int copy_task_defs(struct plugin *p, char *err, size_t errlen)
{
    const th_task_def *defs = p->desc.tasks;
    size_t n = 0;

    while (defs[n].name != NULL) {
        if (++n > PLUGIN_MAX_TASKS)
            return too_many_tasks(p, err, errlen);
    }
    p->tasks = calloc(n + 1, sizeof *p->tasks);
    if (p->tasks == NULL)
        return fail(err, errlen, TH_ENOMEM, p->path, "out of memory");
    for (size_t i = 0; i < n; i++) {
        p->tasks[i].struct_size = sizeof p->tasks[i];
        p->tasks[i].name = defs[i].name;
        p->tasks[i].run = defs[i].run;
    }
    p->ntasks = n;
    return 0;
}

/* The size of one task_info entry must cover name and run, keep them
 * aligned, and be sane. */
#define TASK_INFO_MIN (offsetof(th_task_info, run) + sizeof(th_run_fn))
#define TASK_INFO_MAX 4096

/* Walks the growable table desc.task_info, entries struct_size bytes
 * apart, and copies min(sizeof, struct_size) of each into a zeroed
 * p->tasks entry. */
static int copy_task_info(struct plugin *p, char *err, size_t errlen)
{
    const char *base = (const char *)p->desc.task_info;
    size_t step = p->desc.task_info[0].struct_size;
    size_t keep = step < sizeof *p->tasks ? step : sizeof *p->tasks;
    size_t n = 0;

    if (step < TASK_INFO_MIN || step > TASK_INFO_MAX ||
        step % _Alignof(th_task_info) != 0)
        return fail(err, errlen, TH_EINVAL, p->path,
                    "task_info entries are %zu bytes: not a th_task_info "
                    "table (use TH_TASK())",
                    step);
    while (((const th_task_info *)(base + n * step))->name != NULL) {
        if (++n > PLUGIN_MAX_TASKS)
            return too_many_tasks(p, err, errlen);
    }
    p->tasks = calloc(n + 1, sizeof *p->tasks);
    if (p->tasks == NULL)
        return fail(err, errlen, TH_ENOMEM, p->path, "out of memory");
    for (size_t i = 0; i < n; i++)
        memcpy(&p->tasks[i], base + i * step, keep);
    p->ntasks = n;
    return 0;
}

/* Copies the plugin's tasks, in whichever form it gave them, into
 * p->tasks, and checks them. */
static int load_tasks(struct plugin *p, char *err, size_t errlen)
{
    const th_plugin *d = &p->desc;
    int rc;

    if (d->tasks != NULL && d->task_info != NULL)
        return fail(err, errlen, TH_EINVAL, p->path,
                    "plugin '%s' sets both tasks and task_info", d->name);
    if (d->tasks != NULL)
        rc = copy_task_defs(p, err, errlen);
    else if (d->task_info != NULL)
        rc = copy_task_info(p, err, errlen);
    else
        rc = 0;
    if (rc == 0 && p->ntasks == 0)
        return fail(err, errlen, TH_EINVAL, p->path, "plugin '%s' has no tasks",
                    d->name);
    return rc != 0 ? rc : check_task_entries(p, p->ntasks, err, errlen);
}

/* How many bytes of a descriptor of ABI `abi` and size `size` this host
 * reads: fields of a later ABI than the plugin's stay zero. */
static size_t descriptor_bytes(uint32_t abi, uint32_t size)
{
    size_t n = abi >= 2 ? sizeof(th_plugin) : PLUGIN_MIN_SIZE;

    return size < n ? size : n;
}

/* The line for a plugin built for an ABI this host does not load. */
static int abi_refused(const char *path, uint32_t abi, char *err, size_t errlen)
{
    return fail(err, errlen, TH_EABI, path,
                "built for plugin ABI %lu, this host supports ABI %d to %d%s",
                (unsigned long)abi, TH_ABI_VERSION_MIN, TH_ABI_VERSION,
                abi > TH_ABI_VERSION ? " (built against a newer taskhost "
                                       "SDK: upgrade the host)"
                                     : "");
}

/* Validates the exported descriptor `sym` and copies it into p->desc. */
static int check_descriptor(struct plugin *p, const th_plugin *sym, char *err,
                            size_t errlen)
{
    if (sym->abi_version < TH_ABI_VERSION_MIN ||
        sym->abi_version > TH_ABI_VERSION)
        return abi_refused(p->path, sym->abi_version, err, errlen);
    if (sym->struct_size < PLUGIN_MIN_SIZE)
        return fail(err, errlen, TH_EINVAL, p->path,
                    "plugin descriptor is %lu bytes, at least %zu expected",
                    (unsigned long)sym->struct_size, PLUGIN_MIN_SIZE);
    memset(&p->desc, 0, sizeof p->desc);
    memcpy(&p->desc, sym, descriptor_bytes(sym->abi_version, sym->struct_size));
    if (p->desc.name == NULL || p->desc.version == NULL)
        return fail(err, errlen, TH_EINVAL, p->path,
                    "plugin descriptor has no %s",
                    p->desc.name == NULL ? "name" : "version");
    p->has_check = p->desc.check != NULL;
    return load_tasks(p, err, errlen);
}

/* A plugin that needs an SDK function this host lacks fails dlopen()
 * with "undefined symbol: th_...". Opened lazily, its descriptor can still
 * be read: when it names a newer ABI, say so; otherwise name the missing
 * function. Returns the code, with the line in err. */
static int explain_missing_sdk(const struct plugin *p, const char *dlname,
                               const char *reason, char *err, size_t errlen)
{
    const char *sym = strstr(reason, "undefined symbol: ");
    char name[128];
    void *dl;
    int rc;

    /* dlerror()'s text dies with the next dl call: keep the name. */
    sym += strlen("undefined symbol: ");
    snprintf(name, sizeof name, "%.*s", (int)strcspn(sym, " ,("), sym);
    dl = dlopen(dlname, RTLD_LAZY | RTLD_LOCAL);
    if (dl != NULL) {
        const th_plugin *d = dlsym(dl, TH_PLUGIN_SYMBOL);
        if (d != NULL && d->abi_version > TH_ABI_VERSION) {
            rc = abi_refused(p->path, d->abi_version, err, errlen);
            dlclose(dl);
            return rc;
        }
        dlclose(dl);
    }
    return fail(err, errlen, TH_EABI, p->path,
                "needs %s, which this host (plugin ABI %d) does not have: "
                "built against a newer taskhost SDK?",
                name, TH_ABI_VERSION);
}

/* dlopen()s p->path, makes sure it is still the file that was checked
 * (`st`), and finds and checks the descriptor. */
static int open_object(struct plugin *p, const struct stat *st, char *err,
                       size_t errlen)
{
    struct stat now;
    char *dlname = choose_dlname(p->path, st);

    if (dlname == NULL)
        return fail(err, errlen, TH_ENOMEM, p->path, "out of memory");
    dlerror();
    p->dl = dlopen(dlname, RTLD_NOW | RTLD_LOCAL);
    if (p->dl == NULL) {
        const char *reason = dl_reason(dlname);
        int rc = strstr(reason, "undefined symbol: th_") != NULL
                     ? explain_missing_sdk(p, dlname, reason, err, errlen)
                     : fail(err, errlen, TH_EINVAL, p->path, "cannot load: %s",
                            reason);
        free(dlname);
        return rc;
    }
    if (loaded_add(p, dlname) != 0)
        return fail(err, errlen, TH_ENOMEM, p->path, "out of memory");
    if (stat(p->path, &now) == -1 || now.st_dev != st->st_dev ||
        now.st_ino != st->st_ino)
        return fail(err, errlen, TH_EINVAL, p->path,
                    "the file was replaced while loading; try again");
    dlerror();
    const th_plugin *sym = dlsym(p->dl, TH_PLUGIN_SYMBOL);
    if (sym == NULL)
        return fail(err, errlen, TH_EINVAL, p->path,
                    "no symbol '%s': not a taskhost plugin, or not built "
                    "with TH_PLUGIN()",
                    TH_PLUGIN_SYMBOL);
    return check_descriptor(p, sym, err, errlen);
}

/* Loads and validates the plugin at `path`; see plugin.h. The result holds
 * copies of name and path and one reference, dropped with plugin_unref(). */
int plugin_load(const char *name, const char *path, int strict,
                struct plugin **out, char *err, size_t errlen)
{
    struct stat st;
    struct plugin *p = calloc(1, sizeof *p);

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (p == NULL)
        return fail(err, errlen, TH_ENOMEM, path, "out of memory");
    p->refs = 1;
    p->name = strdup(name);
    p->path = absolute_path(path);
    if (p->name == NULL || p->path == NULL) {
        plugin_unref(p);
        return fail(err, errlen, TH_ENOMEM, path, "out of memory");
    }
    int rc = check_file(p->path, strict, &st, err, errlen);
    if (rc == 0) {
        p->dev = st.st_dev;
        p->ino = st.st_ino;
        p->mtime = st.st_mtim;
        rc = open_object(p, &st, err, errlen);
    }
    if (rc != 0) {
        plugin_unref(p);
        return rc;
    }
    *out = p;
    return 0;
}

struct plugin *plugin_new_probed(const char *name, const char *path,
                                 const char *desc_name, const char *version,
                                 char **tasks, size_t ntasks, dev_t dev,
                                 ino_t ino, struct timespec mtime)
{
    struct plugin *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->refs = 1;
    p->name = strdup(name);
    p->path = strdup(path);
    p->meta_name = strdup(desc_name);
    p->meta_version = strdup(version);
    p->tasks = calloc(ntasks + 1, sizeof *p->tasks);
    int ok = p->name && p->path && p->meta_name && p->meta_version &&
             p->tasks;
    for (size_t i = 0; ok && i < ntasks; i++) {
        p->tasks[i].struct_size = sizeof p->tasks[i];
        p->tasks[i].name = strdup(tasks[i]);
        ok = p->tasks[i].name != NULL;
        p->ntasks = i + 1;
    }
    p->desc.abi_version = TH_ABI_VERSION;
    p->desc.struct_size = sizeof p->desc;
    p->desc.name = p->meta_name;
    p->desc.version = p->meta_version;
    p->dev = dev;
    p->ino = ino;
    p->mtime = mtime;
    if (!ok) {
        plugin_unref(p);
        return NULL;
    }
    return p;
}

int plugin_same_tasks(const struct plugin *a, const struct plugin *b)
{
    if (a->ntasks != b->ntasks)
        return 0;
    for (size_t i = 0; i < a->ntasks; i++)
        if (strcmp(a->tasks[i].name, b->tasks[i].name) != 0)
            return 0;
    return 1;
}

/* Returns the index of task `name` in p's table, or -1. */
int plugin_find_task(const struct plugin *p, const char *name)
{
    if (p == NULL || name == NULL)
        return -1;
    for (size_t i = 0; i < p->ntasks; i++)
        if (strcmp(p->tasks[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Returns non-zero when p->path now names another file, or the same file
 * modified since load, or nothing. Reload uses it to restart the pools of
 * a rebuilt plugin. */
int plugin_file_changed(const struct plugin *p)
{
    struct stat st;

    if (stat(p->path, &st) == -1)
        return 1;
    return st.st_dev != p->dev || st.st_ino != p->ino ||
           st.st_mtim.tv_sec != p->mtime.tv_sec ||
           st.st_mtim.tv_nsec != p->mtime.tv_nsec;
}

/* Takes a reference: one per pool using the plugin. */
void plugin_ref(struct plugin *p)
{
    p->refs++;
}

/* Drops a reference; the last one dlcloses the object and frees p. The
 * descriptor's strings and functions die with the dlclose(). */
void plugin_unref(struct plugin *p)
{
    if (p == NULL || --p->refs > 0)
        return;
    loaded_remove(p);
    if (p->dl != NULL)
        dlclose(p->dl);
    if (p->meta_name != NULL && p->tasks != NULL)
        for (size_t i = 0; i < p->ntasks; i++)
            free((char *)p->tasks[i].name);
    free(p->tasks);
    free(p->meta_name);
    free(p->meta_version);
    free(p->name);
    free(p->path);
    free(p);
}
