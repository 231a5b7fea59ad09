/* top.h - `taskhostctl top`: the daemon's stats, refreshed in place. */
#ifndef TH_TOP_H
#define TH_TOP_H

#include "taskhost_client.h"

/* Shows the stats of `pool` (NULL: every pool) through c every `delay`
 * seconds, `count` times (0: until the user quits: q, Ctrl-C, or SIGINT,
 * SIGTERM, SIGHUP). On a terminal it draws in place on the alternate
 * screen and gives the terminal back as it found it. `sock` is shown in
 * the title. Returns 0, or the negative code of a failed request. */
int top_run(th_client *c, const char *sock, const char *pool, double delay,
            long count);

#endif /* TH_TOP_H */
