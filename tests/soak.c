/* soak.c - load without loss: many clients, a million tasks of mixed
 * plugins, workers recycled all along (max_tasks_per_worker, a memory
 * soft limit), occasional crashes, and a rolling restart every few
 * seconds. Every task must get exactly one answer: it prints submitted
 * and answered by state, and fails on any mismatch, duplicate or missing
 * id, or a task that ended in a state its kind does not allow.
 *
 *   soak [-c CLIENTS] [-n TASKS] [-w WINDOW] [-r SECONDS]
 *
 * Defaults: $TASKHOST_SOAK_CLIENTS or 64 clients, $TASKHOST_SOAK_TASKS or
 * 1,000,000 tasks (times $TASKHOST_LOAD_SCALE when set), 64 tasks in
 * flight per client, a SIGUSR1 every 3 s (and at least one per run).
 * `make soak` runs it at full size; `make check` a short run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define OK HX_STATE_BIT(TH_STATE_OK)
#define CRASHED HX_STATE_BIT(TH_STATE_CRASHED)
#define DEADLINE_PER_TASK 0.001 /* seconds: generous, for a stuck run */

static const char pools[] =
    "  { name = \"echo\"; plugin = \"echo\"; min_workers = 2;"
    " max_workers = 2; max_queue = 1000000; max_tasks_per_worker = 20000; },\n"
    "  { name = \"hash\"; plugin = \"hash\"; min_workers = 1;"
    " max_workers = 2; max_queue = 1000000; max_tasks_per_worker = 5000;"
    " settings = { rounds = 2; }; },\n"
    "  { name = \"sleep\"; plugin = \"sleep\"; min_workers = 2;"
    " max_workers = 8; max_queue = 1000000; },\n"
    "  { name = \"leak\"; plugin = \"leak\"; min_workers = 1;"
    " max_workers = 2; max_queue = 1000000; memory_soft_limit = \"160M\";"
    " memory_hard_limit = \"1G\"; },\n"
    "  { name = \"crash\"; plugin = \"crash\"; min_workers = 1;"
    " max_workers = 2; max_queue = 1000000; }";

static const char *const pool_names[] = {"echo", "hash", "sleep", "leak",
                                         "crash"};

struct opts {
    int clients;
    long tasks;
    int window;
    double restart_every;
};

static long env_long(const char *name, long dflt)
{
    const char *s = getenv(name);

    return s && *s ? strtol(s, NULL, 10) : dflt;
}

static int parse(int argc, char **argv, struct opts *o)
{
    int c;

    o->clients = (int)env_long("TASKHOST_SOAK_CLIENTS", 64);
    o->tasks = env_long("TASKHOST_SOAK_TASKS", 1000000);
    o->window = 64;
    o->restart_every = 3.0;
    while ((c = getopt(argc, argv, "c:n:w:r:h")) != -1) {
        switch (c) {
        case 'c':
            o->clients = atoi(optarg);
            break;
        case 'n':
            o->tasks = atol(optarg);
            break;
        case 'w':
            o->window = atoi(optarg);
            break;
        case 'r':
            o->restart_every = atof(optarg);
            break;
        default:
            fprintf(stderr, "Usage: soak [-c CLIENTS] [-n TASKS] "
                            "[-w WINDOW] [-r SECONDS]\n");
            return -1;
        }
    }
    if (getenv("TASKHOST_LOAD_SCALE") != NULL)
        o->tasks = (long)((double)o->tasks * hx_scale());
    if (o->clients < 1 || o->tasks < o->clients || o->window < 1 ||
        o->restart_every <= 0) {
        fprintf(stderr, "soak: bad size\n");
        return -1;
    }
    return 0;
}

/* Prints the reasons with a count in a stats "restarts":{...} object. */
static void print_reasons(const char *r, const char *end)
{
    while (r < end && (r = strchr(r, '"')) != NULL && r < end) {
        const char *q = strchr(r + 1, '"');
        long long n = q ? strtoll(q + 2, NULL, 10) : 0;
        if (q == NULL)
            return;
        if (n > 0)
            printf(" %.*s %lld", (int)(q - r - 1), r + 1, n);
        r = q + 1;
        while (r < end && *r != ',')
            r++;
    }
}

/* Prints each pool's task counts and worker restarts by reason. */
static void print_pools(struct hx *h)
{
    for (size_t i = 0; i < sizeof pool_names / sizeof pool_names[0]; i++) {
        char *json = hx_stats_json(h, pool_names[i]);
        const char *r = json ? strstr(json, "\"restarts\":{") : NULL;
        const char *e = r ? strchr(r, '}') : NULL;
        if (e != NULL) {
            printf("soak: pool %-5s workers:", pool_names[i]);
            print_reasons(r + 12, e);
            printf("\n");
        }
        free(json);
    }
}

/* Runs the load to the end, sending SIGUSR1 every o->restart_every s and
 * once at least, when half the tasks are answered. Returns the number
 * of restarts sent, or -1. */
static int run(struct hx *h, struct hx_load *l, const struct opts *o)
{
    double end = hx_now() + 60.0 + (double)o->tasks * DEADLINE_PER_TASK;
    double next = hx_now() + o->restart_every;
    int restarts = 0, rc;

    while ((rc = hx_load_pump(l, 20)) > 0) {
        if (hx_now() > end) {
            fprintf(stderr, "soak: stuck: %ld of %ld answered\n", l->answered,
                    l->submitted);
            return -1;
        }
        if (hx_now() >= next ||
            (restarts == 0 && l->answered * 2 >= o->tasks)) {
            if (kill(h->pid, SIGUSR1) == 0)
                restarts++;
            next = hx_now() + o->restart_every;
        }
    }
    if (rc < 0) {
        fprintf(stderr, "soak: %s\n", l->first_problem);
        return -1;
    }
    return restarts;
}

/* Checks the daemon after the load, stops it and looks for leftovers. */
static int shut_down(struct hx *h)
{
    int rc;

    if (hx_echo_ok(h) < 0 || hx_wait_idle(h, 60.0) < 0 ||
        hx_no_zombies(h, 10.0) < 0)
        return -1;
    print_pools(h);
    rc = hx_stop(h, SIGTERM, 60.0);
    if (rc != 0) {
        if (rc > 0)
            snprintf(h->why, sizeof h->why, "taskhostd exit status %d", rc);
        return -1;
    }
    return hx_leftovers(h, 10.0);
}

int main(int argc, char **argv)
{
    struct opts o;
    struct hx h;
    struct hx_load l;
    int restarts, ok = 0;
    double began, took;

    if (parse(argc, argv, &o) < 0)
        return 2;
    long crashes = o.tasks / 20000 > 0 ? o.tasks / 20000 : 1;
    const struct hx_kind kinds[] = {
        {"echo", "echo", "echo", NULL, OK, 0, 60},
        {"hash", "hash", "sha256", "soak", OK, 0, 25},
        {"sleep0", "sleep", "sleep", "0", OK, 0, 4},
        {"sleep1", "sleep", "sleep", "1", OK, 0, 4},
        {"leak", "leak", "leak", "1", OK, 0, 3},
        {"segv", "crash", "segv", "x", CRASHED, crashes, 0},
    };

    hx_become_reaper();
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&l, 0, sizeof l);
    if (hx_init(&h, "soak") < 0 || hx_write_conf(&h, NULL, pools) < 0 ||
        hx_start(&h) < 0 ||
        hx_load_start(&l, &h, o.clients, o.tasks / o.clients, o.window, kinds,
                      (int)(sizeof kinds / sizeof kinds[0])) < 0)
        goto out;
    printf("soak: %d clients, %ld tasks, %d in flight per client, a rolling "
           "restart every %.1f s\n",
           o.clients, o.tasks / o.clients * o.clients, o.window,
           o.restart_every);
    began = hx_now();
    restarts = run(&h, &l, &o);
    took = hx_now() - began;
    hx_load_report(&l, "soak", stdout);
    printf("soak: %.1f s, %.0f tasks/s, %d rolling restarts sent\n", took,
           (double)l.answered / took, restarts);
    if (restarts < 0 || hx_load_check(&l) < 0) {
        if (h.why[0] == '\0')
            snprintf(h.why, sizeof h.why, "the load failed");
        goto out;
    }
    hx_load_free(&l);
    if (shut_down(&h) < 0)
        goto out;
    printf("soak: log: %d rolling restarts, %d workers recycled, %d "
           "crashes\n",
           hx_log_count(&h, "rolling restart of every pool"),
           hx_log_count(&h, "recycling worker"), hx_log_count(&h, "(SIGSEGV)"));
    ok = 1;
out:
    if (!ok) {
        fprintf(stderr, "soak: FAILED: %s\n", h.why);
        hx_show_log(&h, 40);
    } else {
        printf("soak: ok\n");
    }
    hx_load_free(&l);
    hx_cleanup(&h);
    return ok ? 0 : 1;
}
