/* th-demo - runs a few tasks on every pool of a config through the
 * embedding API and prints the answers and the pools' stats: the smallest
 * complete program built on taskhost_host.h.
 *
 *   th-demo [CONFIG]      (default: etc/taskhost.conf)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "taskhost_host.h"

struct job {
    const char *pool, *task, *input;
};

static const struct job jobs[] = {
    {"default", "echo", "hello, taskhost"},
    {"hash", "sha256", "abc"},
    {"sleep", "sleep", "50"},
    {"crash", "segv", ""},
    {"crash", "abort", ""},
    {"leak", "leak", "8"},
    {"default", "nosuch", "x"},
};

static void show(const struct job *j, const th_result *r)
{
    printf("%-8s %-7s %-18s -> %-8s %.*s\n", j->pool, j->task, j->input,
           th_state_name(r->state), (int)r->len, (const char *)r->data);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "etc/taskhost.conf";
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: th-demo [CONFIG]\n");
        return 0;
    }
    th_host *h;
    char err[1024];
    if (th_host_open(&h, path, err, sizeof err) < 0) {
        fprintf(stderr, "th-demo: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        th_result r;
        const struct job *j = &jobs[i];
        if (th_host_call(h, j->pool, j->task, j->input, strlen(j->input), NULL,
                         &r) < 0)
            continue;
        show(j, &r);
        th_result_free(&r);
    }
    char *stats;
    if (th_host_stats(h, NULL, TH_STATS_TEXT, &stats) == 0) {
        fputs(stats, stdout);
        free(stats);
    }
    th_host_close(h, TH_CLOSE_GRACEFUL);
    return 0;
}
