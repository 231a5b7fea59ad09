/* notasks.c - a plugin with an empty task table, which the loader must
 * refuse: a pool of it could run nothing. */
#include <taskhost.h>

static const th_task_def tasks[] = {{NULL, NULL}};

TH_PLUGIN("notasks", "1.0", NULL, NULL, tasks);
