/* taskhostctl.c - the command line of taskhostd, over the client library
 * (client layer).
 *
 * Exit status: 0 only when the request succeeded (for submit: the task's
 * answer is `ok`); 1 when the daemon could not be reached or refused the
 * request; 2 for a usage error; 3..8 for a task answered error, timeout,
 * cancelled, rejected, crashed or memory. Errors go to stderr as one line
 * that says what to do, naming the program "taskhostctl" whatever argv[0]
 * is (a libtool wrapper's path in the build tree).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "taskhost_client.h"
#include "taskhost_version.h"
#include "top.h"

enum { EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_STATE_BASE = 3 };

#ifndef TH_CTL_SOCKET
#define TH_CTL_SOCKET "/run/taskhost/taskhost.sock"
#endif

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
    "  top [POOL] [-d S] [-n N]\n"
    "                       the statistics, refreshed in place (q quits)\n"
    "  restart POOL|--all [--force]\n"
    "                       restart one or every pool's workers\n"
    "  reload               reload the daemon's config file\n"
    "  cancel TASK_ID       cancel a task (ids are shown by submit -v)\n"
    "  shutdown [--force]   stop the daemon (gracefully by default)\n"
    "  help [COMMAND]       this help, or a command's\n\n"
    "Options:\n"
    "  -s, --socket SOCKET  the daemon's socket, before or after the command\n"
    "                       (default: $TASKHOST_SOCKET, else " TH_CTL_SOCKET
    ")\n"
    "  -h, --help           this help (also after a command)\n"
    "      --version        print the version\n\n"
    "Exit status: 0 success (submit: the task's answer is ok); 1 the daemon\n"
    "could not be reached or refused; 2 usage error; for submit 3 error,\n"
    "4 timeout, 5 cancelled, 6 rejected, 7 crashed, 8 memory.\n"
    "See taskhostctl(1).\n";

/* Reports a usage error as one line: what is wrong and where the help is;
 * returns EXIT_USAGE. */
static int usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "taskhostctl%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'taskhostctl help%s%s')\n", cmd ? " " : "",
            cmd ? cmd : "");
    return EXIT_USAGE;
}

/* Connects, or exits 1 with the socket tried and how to choose another. */
static th_client *connect_or_die(void)
{
    const char *path = socket_path ? socket_path : th_client_default_socket();
    const char *how = socket_path ? "-s" : getenv("TASKHOST_SOCKET") &&
                      *getenv("TASKHOST_SOCKET") ? "$TASKHOST_SOCKET"
                                                 : "the default";
    th_client *c;
    char err[512];
    int rc = th_client_connect(&c, path, err, sizeof err);

    if (rc == 0)
        return c;
    if (rc == TH_EPERM)
        fprintf(stderr, "taskhostctl: cannot connect to %s (from %s): "
                "permission denied; the socket's group (socket_group in "
                "taskhost.conf) may use it\n", path, how);
    else
        fprintf(stderr, "taskhostctl: cannot connect to %s (from %s): %s; "
                "is taskhostd running? Choose its socket with -s SOCKET or "
                "TASKHOST_SOCKET=SOCKET\n", path, how,
                strstr(err, ": ") ? strstr(err, ": ") + 2 : err);
    exit(EXIT_FAIL);
}

/* Reports a failed control request; returns the exit status. */
static int fail(th_client *c, const char *what, int rc)
{
    const char *msg = th_client_error(c);

    fprintf(stderr, "taskhostctl: %s failed: %s\n", what,
            msg[0] ? msg : th_strerror(rc));
    return EXIT_FAIL;
}

static const char *cur_cmd; /* the command being parsed, for messages */

/* Reports the option getopt refused: unknown, or its argument missing
 * (then optopt is its val). */
static void bad_option(const char *arg, const struct option *opts)
{
    for (; optopt && opts->name; opts++) {
        if (opts->val == optopt && opts->has_arg == required_argument) {
            usage_error(cur_cmd, "option '%s' wants an argument", arg);
            return;
        }
    }
    if (optopt && arg[0] == '-' && arg[1] != '-')
        usage_error(cur_cmd, "unknown option '-%c'", optopt);
    else
        usage_error(cur_cmd, "unknown option '%s'", arg);
}

/* Parses the options of the command cur_cmd (NULL before one): only
 * --help/--version and those in `opts` (NULL-terminated, after the common
 * ones). Returns the option's val, -1 at the end, -2 after printing help or
 * version (exit 0), or -3 after reporting a bad option (exit 2). getopt's
 * own messages are off: they would name argv[0]. */
static int next_opt(int argc, char **argv, const char *shortopts,
                    const struct option *opts, const char *help)
{
    int c;

    opterr = 0;
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
    if (c == '?') {
        bad_option(argv[optind - 1], opts);
        return -3;
    }
    return c;
}

#define COMMON_OPTS                                                         \
    {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},  \
        {"socket", required_argument, NULL, 's'}

/* ---- each command's help (also `taskhostctl help COMMAND`) ---- */

static const char submit_help[] =
    "Usage: taskhostctl submit POOL TASK [-i FILE] [--timeout S] [-v] "
    "[-p]\n"
    "Runs TASK in POOL with the input from FILE (default: stdin) and\n"
    "writes its output to stdout. --timeout S caps its run time (it can\n"
    "only lower the pool's task_timeout). -v prints the task id to\n"
    "stderr once it is accepted, for taskhostctl cancel. -p, --progress\n"
    "prints the task's progress reports to stderr as they come.\n";

static const char stats_help[] =
    "Usage: taskhostctl stats [POOL] [--json|--prometheus]\n"
    "Prints the statistics of POOL (default: every pool): a readable\n"
    "table, or JSON, or the Prometheus text format.\n";

static const char top_help[] =
    "Usage: taskhostctl top [POOL] [-d SECONDS] [-n COUNT]\n"
    "Shows the statistics of POOL (default: every pool) refreshed in\n"
    "place every SECONDS (default 1): workers, throughput and latency\n"
    "over the last minute, the last five minutes as charts, recent\n"
    "worker events. q, Esc or Ctrl-C quits. Without a terminal, or with\n"
    "-n, prints COUNT frames one after the other.\n";

static const char restart_help[] =
    "Usage: taskhostctl restart POOL|--all [--force]\n"
    "Replaces the workers of POOL (or of every pool). Graceful by\n"
    "default: each worker is replaced after its current task. --force\n"
    "kills running tasks (answered cancelled); queued ones stay.\n";

static const char reload_help[] =
    "Usage: taskhostctl reload\n"
    "Makes taskhostd reload its config file, as SIGHUP does. A config\n"
    "that does not validate is refused, with the reason, and the\n"
    "running one stays.\n";

static const char cancel_help[] =
    "Usage: taskhostctl cancel TASK_ID\n"
    "Cancels a task: a queued one is removed, a running one's worker is\n"
    "killed. Either is answered cancelled.\n";

static const char shutdown_help[] =
    "Usage: taskhostctl shutdown [--force]\n"
    "Stops taskhostd: gracefully (running and queued tasks finish within\n"
    "shutdown_timeout), or with --force (queued tasks are cancelled,\n"
    "running ones killed).\n";

static const char help_help[] =
    "Usage: taskhostctl help [COMMAND]\n"
    "Prints the help of COMMAND, or the list of commands.\n";

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
    static const struct option opts[] = {
        COMMON_OPTS, {"input", required_argument, NULL, 'i'},
        {"timeout", required_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},
        {"progress", no_argument, NULL, 'p'}, {NULL, 0, NULL, 0}};
    char *end;
    int c;

    while ((c = next_opt(argc, argv, "hs:i:vp", opts, submit_help)) >= 0) {
        if (c == 'i')
            a->file = optarg;
        else if (c == 'v')
            a->verbose = 1;
        else if (c == 'p')
            a->progress = 1;
        else if (c == 't') {
            a->opts.task_timeout = strtod(optarg, &end);
            if (*end || !(a->opts.task_timeout > 0))
                return usage_error("submit", "--timeout wants seconds > 0, "
                                   "not '%s'", optarg);
        }
    }
    if (c == -2 || c == -3)
        return c == -2 ? 0 : EXIT_USAGE;
    if (argc - optind != 2)
        return usage_error("submit", "wants POOL and TASK, got %d "
                           "argument%s", argc - optind,
                           argc - optind == 1 ? "" : "s");
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
    static const struct option opts[] = {
        COMMON_OPTS, {"json", no_argument, NULL, 'j'},
        {"prometheus", no_argument, NULL, 'p'}, {NULL, 0, NULL, 0}};
    int c, format = TH_STATS_TEXT, rc;
    th_client *cl;
    char *text;

    while ((c = next_opt(argc, argv, "hs:", opts, stats_help)) >= 0)
        format = c == 'j' ? TH_STATS_JSON : TH_STATS_PROMETHEUS;
    if (c == -2 || c == -3)
        return c == -2 ? 0 : EXIT_USAGE;
    if (argc - optind > 1)
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

static int cmd_top(int argc, char **argv)
{
    static const struct option opts[] = {
        COMMON_OPTS, {"delay", required_argument, NULL, 'd'},
        {"iterations", required_argument, NULL, 'n'}, {NULL, 0, NULL, 0}};
    double delay = 1.0;
    long count = 0;
    char *end;
    int c, rc;
    th_client *cl;

    while ((c = next_opt(argc, argv, "hs:d:n:", opts, top_help)) >= 0) {
        if (c == 'd') {
            delay = strtod(optarg, &end);
            if (*end || end == optarg || !(delay >= 0.1 && delay <= 3600))
                return usage_error("top", "-d wants 0.1 to 3600 seconds, "
                                          "not '%s'", optarg);
        } else {
            count = strtol(optarg, &end, 10);
            if (*end || end == optarg || count < 1)
                return usage_error("top", "-n wants a count >= 1, not '%s'",
                                   optarg);
        }
    }
    if (c == -2 || c == -3)
        return c == -2 ? 0 : EXIT_USAGE;
    if (argc - optind > 1)
        return usage_error("top", "wants at most one POOL");
    cl = connect_or_die();
    rc = top_run(cl, socket_path ? socket_path : th_client_default_socket(),
                 optind < argc ? argv[optind] : NULL, delay, count);
    if (rc < 0)
        rc = fail(cl, "top", rc);
    th_client_close(cl);
    return rc;
}

/* ---- restart, reload, cancel, shutdown ---- */

static int cmd_restart(int argc, char **argv)
{
    static const struct option opts[] = {
        COMMON_OPTS, {"all", no_argument, NULL, 'a'},
        {"force", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
    int c, all = 0, force = 0, rc;
    th_client *cl;

    while ((c = next_opt(argc, argv, "hs:", opts, restart_help)) >= 0) {
        if (c == 'a')
            all = 1;
        else
            force = 1;
    }
    if (c == -2 || c == -3)
        return c == -2 ? 0 : EXIT_USAGE;
    if (argc - optind != (all ? 0 : 1))
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
    if (c == -2 || c == -3)
        return c == -2 ? 0 : EXIT_USAGE;
    if (argc - optind != nargs)
        return usage_error(cmd, nargs ? "wants one argument"
                                      : "takes no arguments");
    return -1;
}

static int cmd_reload(int argc, char **argv)
{
    char err[512];
    th_client *cl;
    int rc = simple_args(argc, argv, "reload", reload_help, 0, NULL);

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
    unsigned long long id;
    th_client *cl;
    char *end;
    int rc = simple_args(argc, argv, "cancel", cancel_help, 1, NULL);

    if (rc >= 0)
        return rc;
    errno = 0;
    id = strtoull(argv[optind], &end, 10);
    if (*end || errno || argv[optind][0] == '-' || end == argv[optind])
        return usage_error("cancel", "TASK_ID is a number, not '%s'",
                           argv[optind]);
    cl = connect_or_die();
    rc = th_client_cancel_task(cl, id);
    rc = rc < 0 ? fail(cl, "cancel", rc) : 0;
    th_client_close(cl);
    return rc;
}

static int cmd_shutdown(int argc, char **argv)
{
    int force = 0, rc = simple_args(argc, argv, "shutdown", shutdown_help, 0,
                                     &force);
    th_client *cl;

    if (rc >= 0)
        return rc;
    cl = connect_or_die();
    rc = th_client_shutdown(cl, force ? TH_CLOSE_FORCE : TH_CLOSE_GRACEFUL);
    rc = rc < 0 ? fail(cl, "shutdown", rc) : 0;
    th_client_close(cl);
    return rc;
}

/* ---- help, and main ---- */

static int cmd_help(int argc, char **argv);

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"submit", cmd_submit, submit_help},
    {"stats", cmd_stats, stats_help},
    {"top", cmd_top, top_help},
    {"restart", cmd_restart, restart_help},
    {"reload", cmd_reload, reload_help},
    {"cancel", cmd_cancel, cancel_help},
    {"shutdown", cmd_shutdown, shutdown_help},
    {"help", cmd_help, help_help},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* Levenshtein distance of two short words (longer ones count as far). */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[32];

    if (la >= 32 || lb >= 32)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);

            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    return NULL;
}

/* Reports an unknown command as one line, with the nearest command when
 * it is a likely typo (a prefix, or two edits away); returns EXIT_USAGE. */
static int unknown_command(const char *cmd, const char *name)
{
    const char *best = NULL;
    size_t best_d = 3;

    for (size_t i = 0; i < NCOMMANDS; i++) {
        size_t d = distance(name, commands[i].name);

        if (strncmp(commands[i].name, name, strlen(name)) == 0 && name[0])
            d = 1;
        if (d < best_d) {
            best_d = d;
            best = commands[i].name;
        }
    }
    if (best == NULL)
        return usage_error(cmd, "unknown command '%s'", name);
    fprintf(stderr, "taskhostctl%s%s: unknown command '%s' (did you mean "
            "'%s'?)\n", cmd ? " " : "", cmd ? cmd : "", name, best);
    return EXIT_USAGE;
}

static int cmd_help(int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    const struct command *c;
    int o;

    while ((o = next_opt(argc, argv, "hs:", opts, help_help)) >= 0)
        ;
    if (o == -2 || o == -3)
        return o == -2 ? 0 : EXIT_USAGE;
    if (argc - optind > 1)
        return usage_error("help", "wants at most one COMMAND");
    if (optind == argc) {
        fputs(main_help, stdout);
        return 0;
    }
    c = find_command(argv[optind]);
    if (c == NULL)
        return unknown_command("help", argv[optind]);
    fputs(c->help, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {COMMON_OPTS, {NULL, 0, NULL, 0}};
    const struct command *cmd;
    int c;

    while ((c = next_opt(argc, argv, "+s:h", opts, main_help)) >= 0)
        ;
    if (c == -2 || c == -3)
        return c == -2 ? 0 : EXIT_USAGE;
    if (optind >= argc)
        return usage_error(NULL, "wants a command: submit, stats, restart, "
                           "reload, cancel, shutdown or help");
    cmd = find_command(argv[optind]);
    if (cmd == NULL)
        return unknown_command(NULL, argv[optind]);
    cur_cmd = cmd->name;
    argc -= optind;
    argv += optind;
    optind = 0; /* a fresh getopt scan for the command */
    return cmd->run(argc, argv);
}
