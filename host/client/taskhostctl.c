/* taskhostctl.c - the command line of taskhostd, over the client library.
 *
 * Exit status: 0 only when the request succeeded (for submit: the task's
 * answer is `ok`); 1 when the daemon could not be reached or refused the
 * request; 2 for a usage error; 3..8 for a task answered error, timeout,
 * cancelled, rejected, crashed or memory. Errors go to stderr, naming the
 * task's final state.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "taskhost_client.h"
#include "taskhost_version.h"

enum { EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_STATE_BASE = 3 };

static const char *socket_path;

static const char main_help[] =
    "Usage: taskhostctl [-s SOCKET] COMMAND [ARGS]\n"
    "Talks to a running taskhostd.\n\n"
    "Commands:\n"
    "  submit POOL TASK [-i FILE] [--timeout S] [-v] [-p]\n"
    "                       run one task; input from stdin or FILE, output "
    "to stdout\n"
    "  stats [POOL] [--json|--prometheus]\n"
    "                       pool statistics (a table by default)\n"
    "  restart POOL|--all [--force]\n"
    "                       restart one or every pool's workers\n"
    "  reload               reload the daemon's config file\n"
    "  cancel TASK_ID       cancel a task (ids are shown by submit -v)\n"
    "  shutdown [--force]   stop the daemon (gracefully by default)\n\n"
    "Options:\n"
    "  -s, --socket SOCKET  the daemon's socket, before or after the command\n"
    "                       (default: $TASKHOST_SOCKET, else ./taskhost.sock)\n"
    "  -h, --help           this help (also after a command)\n"
    "      --version        print the version\n\n"
    "Exit status: 0 success (submit: the task's answer is ok); 1 the daemon\n"
    "could not be reached or refused; 2 usage error; for submit 3 error,\n"
    "4 timeout, 5 cancelled, 6 rejected, 7 crashed, 8 memory.\n";

static int usage_error(const char *cmd, const char *msg)
{
    const char *sp = cmd ? " " : "";

    cmd = cmd ? cmd : "";
    fprintf(stderr, "taskhostctl%s%s: %s\nTry 'taskhostctl%s%s --help'.\n",
            sp, cmd, msg, sp, cmd);
    return EXIT_USAGE;
}

static th_client *connect_or_die(void)
{
    th_client *c;
    char err[512];

    if (th_client_connect(&c, socket_path, err, sizeof err) < 0) {
        fprintf(stderr, "taskhostctl: cannot reach taskhostd: %s\n", err);
        exit(EXIT_FAIL);
    }
    return c;
}

/* Reports a failed control request; returns the exit status. */
static int fail(th_client *c, const char *what, int rc)
{
    const char *msg = th_client_error(c);

    fprintf(stderr, "taskhostctl: %s failed: %s\n", what,
            msg[0] ? msg : th_strerror(rc));
    return EXIT_FAIL;
}

/* Parses the options of a command: only --help/--version and those in
 * `opts` (NULL-terminated, after the common ones). Returns the option's
 * val, -1 at the end, or -2 after printing help or version (exit 0), -3 on
 * an unknown option (exit 2). */
static int next_opt(int argc, char **argv, const char *shortopts,
                    const struct option *opts, const char *help)
{
    int c;

    while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) == 's')
        socket_path = optarg; /* -s is taken after the command too */
    if (c == 'h') {
        fputs(help, stdout);
        return -2;
    }
    if (c == 'V') {
        printf("taskhostctl %s\n", TH_VERSION_STRING);
        return -2;
    }
    if (c == '?')
        return -3;
    return c;
}

#define COMMON_OPTS                                                         \
    {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},  \
        {"socket", required_argument, NULL, 's'}

/* ---- submit ---- */

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536, n = 0, got;
    char *buf = malloc(cap), *nb;

    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            nb = realloc(buf, cap *= 2);
            if (nb == NULL) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
    }
    if (buf && ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void show_accept(uint64_t tag, uint64_t id, void *arg)
{
    fprintf(stderr, "taskhostctl: task %llu accepted\n",
            (unsigned long long)id);
}

/* One line per report: "taskhostctl: progress 40/100 (40%) message". */
static void show_progress(uint64_t tag, uint64_t done, uint64_t total,
                          const char *msg, void *arg)
{
    (void)tag;
    (void)arg;
    if (total > 0)
        fprintf(stderr, "taskhostctl: progress %llu/%llu (%.0f%%)%s%s\n",
                (unsigned long long)done, (unsigned long long)total,
                100.0 * (double)done / (double)total, *msg ? " " : "", msg);
    else
        fprintf(stderr, "taskhostctl: progress %llu%s%s\n",
                (unsigned long long)done, *msg ? " " : "", msg);
}

static char *read_input(const char *file, size_t *len)
{
    FILE *f = file && strcmp(file, "-") ? fopen(file, "rb") : stdin;
    char *in;

    if (f == NULL) {
        fprintf(stderr, "taskhostctl: %s: %s\n", file, strerror(errno));
        return NULL;
    }
    in = read_all(f, len);
    if (in == NULL)
        fprintf(stderr, "taskhostctl: reading %s: %s\n",
                f == stdin ? "stdin" : file, strerror(errno));
    if (f != stdin)
        fclose(f);
    return in;
}

/* Prints the task's answer; returns the exit status for its state. */
static int show_result(const th_result *r)
{
    const char *state = th_state_name(r->state);

    if (r->state == TH_STATE_OK) {
        if (fwrite(r->data, 1, r->len, stdout) != r->len || fflush(stdout)) {
            fprintf(stderr, "taskhostctl: writing output: %s\n",
                    strerror(errno));
            return EXIT_FAIL;
        }
        return 0;
    }
    fprintf(stderr, "taskhostctl: task %s: %.*s\n", state ? state : "?",
            (int)r->len, (const char *)r->data);
    return EXIT_STATE_BASE + (int)r->state - TH_STATE_ERROR;
}

struct submit_args {
    th_submit_opts opts;
    const char *file;
    int verbose;
    int progress;
};

/* Parses submit's options. Returns -1 to go on, else the exit status. */
static int submit_parse(int argc, char **argv, struct submit_args *a)
{
    static const char help[] =
        "Usage: taskhostctl submit POOL TASK [-i FILE] [--timeout S] [-v] "
        "[-p]\n"
        "Runs TASK in POOL with the input from FILE (default: stdin) and\n"
        "writes its output to stdout. --timeout S caps its run time (it can\n"
        "only lower the pool's task_timeout). -v prints the task id to\n"
        "stderr once it is accepted, for taskhostctl cancel. -p, --progress\n"
        "prints the task's progress reports to stderr as they come.\n";
    static const struct option opts[] = {
        COMMON_OPTS, {"input", required_argument, NULL, 'i'},
        {"timeout", required_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},
        {"progress", no_argument, NULL, 'p'}, {NULL, 0, NULL, 0}};
    char *end;
    int c;

    while ((c = next_opt(argc, argv, "hs:i:vp", opts, help)) >= 0) {
        if (c == 'i')
            a->file = optarg;
        else if (c == 'v')
            a->verbose = 1;
        else if (c == 'p')
            a->progress = 1;
        else if (c == 't') {
            a->opts.task_timeout = strtod(optarg, &end);
            if (*end || !(a->opts.task_timeout > 0))
                return usage_error("submit", "--timeout wants seconds > 0");
        }
    }
    if (c == -2)
        return 0;
    if (c == -3 || argc - optind != 2)
        return usage_error("submit", c == -3 ? "bad option"
                                             : "wants POOL and TASK");
    return -1;
}

static int cmd_submit(int argc, char **argv)
{
    struct submit_args a = {{0}, NULL, 0, 0};
    int rc = submit_parse(argc, argv, &a);
    th_client *cl;
    th_result r;
    size_t len;
    char *in;

    if (rc >= 0)
        return rc;
    if ((in = read_input(a.file, &len)) == NULL)
        return EXIT_FAIL;
    cl = connect_or_die();
    if (a.verbose)
        th_client_on_accept(cl, show_accept, NULL);
    if (a.progress)
        th_client_on_progress(cl, show_progress, NULL);
    rc = th_client_call(cl, argv[optind], argv[optind + 1], in, len, &a.opts,
                        &r);
    free(in);
    if (rc < 0) {
        rc = fail(cl, "submit", rc);
    } else {
        rc = show_result(&r);
        th_client_result_free(&r);
    }
    th_client_close(cl);
    return rc;
}

/* ---- stats ---- */

static int cmd_stats(int argc, char **argv)
{
    static const char help[] =
        "Usage: taskhostctl stats [POOL] [--json|--prometheus]\n"
        "Prints the statistics of POOL (default: every pool): a readable\n"
        "table, or JSON, or the Prometheus text format.\n";
    static const struct option opts[] = {
        COMMON_OPTS, {"json", no_argument, NULL, 'j'},
        {"prometheus", no_argument, NULL, 'p'}, {NULL, 0, NULL, 0}};
    int c, format = TH_STATS_TEXT, rc;
    th_client *cl;
    char *text;

    while ((c = next_opt(argc, argv, "hs:", opts, help)) >= 0)
        format = c == 'j' ? TH_STATS_JSON : TH_STATS_PROMETHEUS;
    if (c == -2)
        return 0;
    if (c == -3 || argc - optind > 1)
        return usage_error("stats", "wants at most one POOL");
    cl = connect_or_die();
    rc = th_client_stats(cl, optind < argc ? argv[optind] : NULL, format,
                         &text);
    if (rc < 0) {
        rc = fail(cl, "stats", rc);
    } else {
        fputs(text, stdout);
        if (text[0] && text[strlen(text) - 1] != '\n')
            putchar('\n');
        free(text);
    }
    th_client_close(cl);
    return rc;
}

/* ---- restart, reload, cancel, shutdown ---- */

static int cmd_restart(int argc, char **argv)
{
    static const char help[] =
        "Usage: taskhostctl restart POOL|--all [--force]\n"
        "Replaces the workers of POOL (or of every pool). Graceful by\n"
        "default: each worker is replaced after its current task. --force\n"
        "kills running tasks (answered cancelled); queued ones stay.\n";
    static const struct option opts[] = {
        COMMON_OPTS, {"all", no_argument, NULL, 'a'},
        {"force", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
    int c, all = 0, force = 0, rc;
    th_client *cl;

    while ((c = next_opt(argc, argv, "hs:", opts, help)) >= 0) {
        if (c == 'a')
            all = 1;
        else
            force = 1;
    }
    if (c == -2)
        return 0;
    if (c == -3 || argc - optind != (all ? 0 : 1))
        return usage_error("restart", "wants POOL or --all");
    cl = connect_or_die();
    rc = th_client_restart(cl, all ? NULL : argv[optind], force);
    rc = rc < 0 ? fail(cl, "restart", rc) : 0;
    th_client_close(cl);
    return rc;
}

/* Parses a command that takes no options but the common ones and
 * `nargs` arguments. Returns -1 to go on, else the exit status. */
static int simple_args(int argc, char **argv, const char *cmd,
                       const char *help, int nargs, int *force)
{
    static const struct option opts[] = {
        COMMON_OPTS, {"force", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
    int c;

    while ((c = next_opt(argc, argv, "hs:", opts, help)) >= 0) {
        if (force == NULL)
            return usage_error(cmd, "takes no --force");
        *force = 1;
    }
    if (c == -2)
        return 0;
    if (c == -3 || argc - optind != nargs)
        return usage_error(cmd, nargs ? "wants one argument" : "takes no "
                                                               "arguments");
    return -1;
}

static int cmd_reload(int argc, char **argv)
{
    static const char help[] =
        "Usage: taskhostctl reload\n"
        "Makes taskhostd reload its config file, as SIGHUP does. A config\n"
        "that does not validate is refused, with the reason, and the\n"
        "running one stays.\n";
    char err[512];
    th_client *cl;
    int rc = simple_args(argc, argv, "reload", help, 0, NULL);

    if (rc >= 0)
        return rc;
    cl = connect_or_die();
    rc = th_client_reload(cl, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "taskhostctl: reload refused: %s\n",
                err[0] ? err : th_strerror(rc));
    th_client_close(cl);
    return rc < 0 ? EXIT_FAIL : 0;
}

static int cmd_cancel(int argc, char **argv)
{
    static const char help[] =
        "Usage: taskhostctl cancel TASK_ID\n"
        "Cancels a task: a queued one is removed, a running one's worker is\n"
        "killed. Either is answered cancelled.\n";
    unsigned long long id;
    th_client *cl;
    char *end;
    int rc = simple_args(argc, argv, "cancel", help, 1, NULL);

    if (rc >= 0)
        return rc;
    errno = 0;
    id = strtoull(argv[optind], &end, 10);
    if (*end || errno || argv[optind][0] == '-' || end == argv[optind])
        return usage_error("cancel", "TASK_ID is a number");
    cl = connect_or_die();
    rc = th_client_cancel_task(cl, id);
    rc = rc < 0 ? fail(cl, "cancel", rc) : 0;
    th_client_close(cl);
    return rc;
}

static int cmd_shutdown(int argc, char **argv)
{
    static const char help[] =
        "Usage: taskhostctl shutdown [--force]\n"
        "Stops taskhostd: gracefully (running and queued tasks finish within\n"
        "shutdown_timeout), or with --force (queued tasks are cancelled,\n"
        "running ones killed).\n";
    int force = 0, rc = simple_args(argc, argv, "shutdown", help, 0, &force);
    th_client *cl;

    if (rc >= 0)
        return rc;
    cl = connect_or_die();
    rc = th_client_shutdown(cl, force ? TH_CLOSE_FORCE : TH_CLOSE_GRACEFUL);
    rc = rc < 0 ? fail(cl, "shutdown", rc) : 0;
    th_client_close(cl);
    return rc;
}

/* ---- main ---- */

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"submit", cmd_submit},   {"stats", cmd_stats},   {"restart", cmd_restart},
    {"reload", cmd_reload},   {"cancel", cmd_cancel}, {"shutdown", cmd_shutdown},
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        COMMON_OPTS, {NULL, 0, NULL, 0}};
    int c;

    while ((c = next_opt(argc, argv, "+s:h", opts, main_help)) >= 0)
        ;
    if (c == -2)
        return 0;
    if (c == -3)
        return usage_error(NULL, "bad option");
    if (optind >= argc)
        return usage_error(NULL, "wants a command");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[optind], commands[i].name) == 0) {
            argc -= optind;
            argv += optind;
            optind = 0; /* a fresh getopt scan for the command */
            return commands[i].run(argc, argv);
        }
    }
    fprintf(stderr, "taskhostctl: unknown command '%s'\n", argv[optind]);
    return usage_error(NULL, "see the commands below --help");
}
