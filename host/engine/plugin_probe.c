/* plugin_probe.c - checking a plugin without running its code here.
 *
 * dlopen() runs a plugin's constructors, and reading its descriptor
 * trusts its memory: a plugin that crashes, exits or hangs there would
 * take the host with it. So the host never loads a plugin: a spawner in
 * probe mode (spawner.h) loads and checks it in a process of its own,
 * reports its name, version and task names, and exits. A crash, an exit
 * or a hang (bounded by the timeout) there is one line naming the plugin;
 * the host goes on. A plugin's own check() of a pool's settings runs the
 * same way (plugin_probe_check()), as the pool's user.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "plugin.h"
#include "spawner.h"
#include "taskhost.h"

/* Runs p's check() of a pool's settings in a probe; see spawner.h. */
int plugin_probe_check(const struct plugin *p, const char *pool,
                       const struct th_settings *settings, int uid, int gid,
                       int strict, double timeout, char *err, size_t errlen)
{
    struct spawner_opts o = {
        .probe = 1,
        .check = 1,
        .strict = strict,
        .path = p->path,
        .pool = pool,
        .settings = settings,
        .uid = uid,
        .gid = gid,
        .rlimit_core = -1,
        .timeout = timeout,
    };
    struct spawner *sp;
    int rc = spawner_start(NULL, &o, p->name, &sp, NULL, err, errlen);
    if (rc < 0)
        return rc;
    spawner_close(sp);
    return 0;
}

int plugin_probe(const char *name, const char *path, int strict,
                 double timeout, struct plugin **out, char *err,
                 size_t errlen)
{
    char abs[PATH_MAX], cwd[PATH_MAX];
    if (path[0] != '/' && getcwd(cwd, sizeof cwd) != NULL &&
        (size_t)snprintf(abs, sizeof abs, "%s/%s", cwd, path) < sizeof abs)
        path = abs;
    struct spawner_opts o = {
        .probe = 1,
        .strict = strict,
        .path = path,
        .pool = "",
        .uid = -1,
        .gid = -1,
        .rlimit_core = -1,
        .timeout = timeout,
    };
    struct spawner *sp;
    int rc = spawner_start(NULL, &o, name, &sp, out, err, errlen);
    if (rc < 0)
        return rc;
    spawner_close(sp);
    return 0;
}
