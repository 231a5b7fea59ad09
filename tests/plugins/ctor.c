/* ctor.c - plugins that misbehave as soon as they are loaded, built once
 * per CTOR_MODE: a constructor that crashes (ctorsegv), exits (ctorexit)
 * or never returns (ctorhang), or a descriptor whose task table points
 * at garbage (badtable). None of this may touch the host process.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <taskhost.h>

#define SEGV 1
#define EXIT 2
#define HANG 3
#define BADTABLE 4

static int run(void *state, th_task *task, const void *in, size_t len)
{
    (void)state;
    return th_task_write(task, in, len);
}

#if CTOR_MODE != BADTABLE
__attribute__((constructor)) static void misbehave(void)
{
#if CTOR_MODE == SEGV
    raise(SIGSEGV); /* as a stray pointer would, sanitizers or not */
#elif CTOR_MODE == EXIT
    _exit(3);
#else
    for (;;)
        pause();
#endif
}

static const th_task_def tasks[] = {{"run", run}, {NULL, NULL}};
TH_PLUGIN("ctor", "1.0", NULL, NULL, tasks);
#else
/* what a plugin built against another header's struct layout, or with a
 * corrupted table, looks like: the table address points nowhere */
static const th_task_def *const garbage = (const th_task_def *)(uintptr_t)16;
TH_PLUGIN("badtable", "1.0", NULL, NULL, garbage);
void *ctor_keep(void);
void *ctor_keep(void)
{
    return (void *)run;
}
#endif
