/* spare.c - a spawner started ahead of need (spare.h). */
#include <limits.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spare.h"
#include "spawner.h"

#define SPARE_NEXT 0.1          /* seconds from a take to the next spare */
#define SPARE_BACKOFF_FIRST 1.0 /* after a spare that failed */
#define SPARE_BACKOFF_MAX 60.0

extern char **environ;

static uint64_t mix(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211u; /* FNV-1a */
    return h;
}

static uint64_t mix_str(uint64_t h, const char *s)
{
    return mix(h, s, strlen(s) + 1);
}

/* What a spawner inherits at its exec from this process, and SPW_HELLO
 * does not set: its program, environment, working directory, ids,
 * groups, resource limits, stdout and stderr. */
static uint64_t conditions(void)
{
    uint64_t h = mix_str(14695981039346656037u, spawner_program());
    for (char **e = environ; e != NULL && *e != NULL; e++)
        h = mix_str(h, *e);
    char cwd[PATH_MAX];
    h = mix_str(h, getcwd(cwd, sizeof cwd) ? cwd : "");
    unsigned ids[4] = {getuid(), geteuid(), getgid(), getegid()};
    h = mix(h, ids, sizeof ids);
    gid_t groups[64];
    int n = getgroups(64, groups);
    h = mix(h, groups, n > 0 ? (size_t)n * sizeof groups[0] : 0);
    for (int r = 0; r < RLIM_NLIMITS; r++) {
        struct rlimit rl = {0, 0};
        getrlimit(r, &rl);
        h = mix(h, &rl, sizeof rl);
    }
    for (int fd = 1; fd <= 2; fd++) {
        struct stat st;
        dev_t dev = 0;
        ino_t ino = 0;
        if (fstat(fd, &st) == 0)
            dev = st.st_dev, ino = st.st_ino;
        h = mix(h, &dev, sizeof dev);
        h = mix(h, &ino, sizeof ino);
    }
    return h;
}

static void schedule(struct spare *s, double delay)
{
    if (s->on && s->sp == NULL && !loop_timer_armed(&s->timer))
        loop_timer_start(s->loop, &s->timer, delay);
}

static double backoff(int failures)
{
    double d = SPARE_BACKOFF_FIRST;
    for (int i = 1; i < failures && d < SPARE_BACKOFF_MAX; i++)
        d *= 2;
    return d < SPARE_BACKOFF_MAX ? d : SPARE_BACKOFF_MAX;
}

/* The spare's event socket closed: it died idle. */
static void on_death(void *arg, uint64_t serial, int status)
{
    struct spare *s = arg;
    (void)status;
    if (serial != 0 || s->sp == NULL)
        return;
    log_info("the spare spawner (pid %d) died idle", (int)s->sp->pid);
    spawner_close(s->sp);
    s->sp = NULL;
    s->failures++;
    schedule(s, backoff(s->failures));
}

static void launch(struct spare *s)
{
    char err[512];
    uint64_t c = conditions();
    struct spawner *sp = spawner_launch(err, sizeof err);
    if (sp != NULL && spawner_watch(sp, s->loop, on_death, s) < 0) {
        spawner_close(sp);
        sp = NULL;
        snprintf(err, sizeof err, "cannot watch its socket");
    }
    if (sp == NULL) {
        /* Not worth a warning: a pool start then starts its own spawner,
         * and says why when that fails too. */
        s->failures++;
        log_debug("cannot start a spare spawner: %s", err);
        schedule(s, backoff(s->failures));
        return;
    }
    s->sp = sp;
    s->conditions = c;
}

static void on_timer(struct loop_timer *t)
{
    struct spare *s =
        (struct spare *)((char *)t - offsetof(struct spare, timer));
    if (s->on && s->sp == NULL)
        launch(s);
}

void spare_start(struct spare *s, struct loop *loop)
{
    if (s->on)
        return;
    s->on = 1;
    s->loop = loop;
    s->timer.cb = on_timer;
    launch(s);
}

/* Lets go of the spare: it is no longer watched as the spare. */
static struct spawner *detach(struct spare *s)
{
    struct spawner *sp = s->sp;
    s->sp = NULL;
    if (sp != NULL && sp->loop != NULL) {
        loop_del(sp->loop, &sp->events);
        sp->loop = NULL;
    }
    return sp;
}

struct spawner *spare_take(struct spare *s)
{
    if (s->sp == NULL)
        return NULL;
    struct spawner *sp = detach(s);
    if (s->conditions != conditions()) {
        log_info("the spare spawner was started under other conditions "
                 "(environment, directory, ids or limits): not used");
        spawner_close(sp);
        sp = NULL;
    } else {
        s->failures = 0;
    }
    schedule(s, SPARE_NEXT);
    return sp;
}

void spare_stop(struct spare *s)
{
    s->on = 0;
    if (s->loop != NULL)
        loop_timer_stop(s->loop, &s->timer);
    spawner_close(detach(s));
}
