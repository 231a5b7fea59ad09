/* harness.c - the daemon fixture, its cmocka forms and the counted load
 * of harness.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__)
#define HX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HX_SANITIZED 1
#endif
#endif
#ifndef HX_SANITIZED
#define HX_SANITIZED 0
#endif

#define START_DEADLINE 30.0

static int set_why(struct hx *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int set_why(struct hx *h, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(h->why, sizeof h->why, fmt, ap);
    va_end(ap);
    return -1;
}

double hx_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void hx_pause_ms(int ms)
{
    poll(NULL, 0, ms);
}

double hx_scale(void)
{
    const char *s = getenv("TASKHOST_LOAD_SCALE");
    double v;

    if (s != NULL && *s != '\0') {
        v = strtod(s, NULL);
        if (v > 0)
            return v;
    }
    return HX_SANITIZED ? 1.0 / 3.0 : 1.0;
}

long hx_scaled(long n, long min)
{
    long v = (long)((double)n * hx_scale() + 0.5);

    return v < min ? min : v;
}

void hx_become_reaper(void)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- the daemon ---- */

int hx_init(struct hx *h, const char *name)
{
    memset(h, 0, sizeof *h);
    snprintf(h->dir, sizeof h->dir, "/tmp/th-%.20s.XXXXXX", name);
    if (mkdtemp(h->dir) == NULL)
        return set_why(h, "mkdtemp: %s", strerror(errno));
    snprintf(h->conf, sizeof h->conf, "%s/taskhost.conf", h->dir);
    snprintf(h->sock, sizeof h->sock, "%s/taskhost.sock", h->dir);
    snprintf(h->log, sizeof h->log, "%s/taskhost.log", h->dir);
    snprintf(h->out, sizeof h->out, "%s/daemon.out", h->dir);
    snprintf(h->err, sizeof h->err, "%s/daemon.err", h->dir);
    return 0;
}

int hx_write_host_conf(struct hx *h, const char *host_extra,
                       const char *rest)
{
    const char *extra = host_extra ? host_extra : "";
    char tmp[160];
    FILE *f;

    snprintf(tmp, sizeof tmp, "%s.new", h->conf);
    f = fopen(tmp, "w");
    if (f == NULL)
        return set_why(h, "%s: %s", tmp, strerror(errno));
    fprintf(f,
            "host: { socket = \"%s\"; log = \"%s\"; log_level = \"info\";\n"
            "        %s%s };\n%s",
            h->sock, h->log,
            strstr(extra, "shutdown_timeout") ? "" : "shutdown_timeout = 10.0; ",
            extra, rest);
    if (fclose(f) != 0 || rename(tmp, h->conf) == -1)
        return set_why(h, "%s: %s", h->conf, strerror(errno));
    return 0;
}

int hx_write_conf(struct hx *h, const char *host_extra, const char *pools)
{
    char host[1024], rest[8192];

    snprintf(host, sizeof host, "%s%s",
             host_extra && strstr(host_extra, "shutdown_timeout")
                 ? ""
                 : "shutdown_timeout = 20.0; ",
             host_extra ? host_extra : "");
    if ((size_t)snprintf(
            rest, sizeof rest,
            "plugins = (\n"
            "  { name = \"echo\"; path = \"" PLUGINS "/echo.so\"; },\n"
            "  { name = \"hash\"; path = \"" PLUGINS "/hash.so\"; },\n"
            "  { name = \"sleep\"; path = \"" PLUGINS "/sleep.so\"; },\n"
            "  { name = \"crash\"; path = \"" PLUGINS "/crash.so\"; },\n"
            "  { name = \"leak\"; path = \"" PLUGINS "/leak.so\"; },\n"
            "  { name = \"faulty\"; path = \"" TEST_PLUGINS "/faulty.so\"; },\n"
            "  { name = \"badinit\"; path = \"" TEST_PLUGINS
            "/badinit.so\"; },\n"
            "  { name = \"inithang\"; path = \"" TEST_PLUGINS
            "/inithang.so\"; }\n"
            ");\n"
            "pools = (\n%s\n);\n",
            pools) >= sizeof rest)
        return set_why(h, "the pools of the config are too long");
    return hx_write_host_conf(h, host, rest);
}

int hx_ping(const struct hx *h)
{
    th_client *c;
    char v[64];
    int rc;

    if (th_client_connect(&c, h->sock, NULL, 0) < 0)
        return -1;
    rc = th_client_ping(c, v, sizeof v);
    th_client_close(c);
    return rc;
}

/* In the child of hx_spawn(): opens path onto fd `to`. */
static int redirect(const char *path, int flags, int to)
{
    int fd = open(path ? path : "/dev/null", flags, 0644);

    return fd == -1 || dup2(fd, to) == -1 ? -1 : 0;
}

pid_t hx_spawn(struct hx *h, char *const argv[], const struct hx_proc *p)
{
    static const struct hx_proc defaults;
    pid_t pid;

    if (p == NULL)
        p = &defaults;
    pid = fork();
    if (pid == -1 && h != NULL)
        set_why(h, "fork: %s", strerror(errno));
    if (pid != 0)
        return pid;
    if (p->as_user && (setgroups(0, NULL) == -1 || setgid(p->gid) == -1 ||
                       setuid(p->uid) == -1))
        _exit(125);
    if (redirect(p->in, O_RDONLY, 0) == -1 ||
        redirect(p->out, O_WRONLY | O_CREAT | O_TRUNC, 1) == -1 ||
        redirect(p->err, O_WRONLY | O_CREAT | O_APPEND, 2) == -1)
        _exit(126);
    if (p->nofile != NULL && setrlimit(RLIMIT_NOFILE, p->nofile) == -1)
        _exit(125);
    if (p->env != NULL)
        execve(argv[0], argv, p->env);
    else
        execv(argv[0], argv);
    _exit(127);
}

int hx_wait_pid(pid_t pid, double limit, int *status)
{
    double end = hx_now() + limit;
    pid_t r;

    while ((r = waitpid(pid, status, WNOHANG)) == 0 && hx_now() < end)
        hx_pause_ms(5);
    if (r != 0)
        return 0;
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return -1;
}

int hx_alive(struct hx *h)
{
    if (h->pid <= 0)
        return 0;
    if (waitpid(h->pid, &h->status, WNOHANG) == h->pid) {
        h->pid = 0;
        return 0;
    }
    return kill(h->pid, 0) == 0;
}

int hx_start_proc(struct hx *h, const struct hx_proc *p)
{
    char *argv[] = {DAEMON, "-c", h->conf, "-f", NULL};
    struct hx_proc proc = p ? *p : (struct hx_proc){0};
    double end = hx_now() + START_DEADLINE;

    proc.out = proc.out ? proc.out : h->out;
    proc.err = proc.err ? proc.err : h->err;
    h->pid = hx_spawn(h, argv, &proc);
    if (h->pid == -1) {
        h->pid = 0;
        return -1;
    }
    while (hx_ping(h) != 0) {
        if (!hx_alive(h))
            return set_why(h, "taskhostd exited before it was ready");
        if (hx_now() > end)
            return set_why(h, "taskhostd not ready in %.0f s", START_DEADLINE);
        hx_pause_ms(5);
    }
    return 0;
}

int hx_start(struct hx *h)
{
    return hx_start_proc(h, NULL);
}

th_client *hx_connect(struct hx *h)
{
    th_client *c;
    char err[256];

    if (th_client_connect(&c, h->sock, err, sizeof err) < 0) {
        set_why(h, "connect: %s", err);
        return NULL;
    }
    return c;
}

int hx_echo_ok(struct hx *h)
{
    th_client *c = hx_connect(h);
    th_result r;
    int ok;

    if (c == NULL)
        return -1;
    if (th_client_call(c, "echo", "echo", "still here", 10, NULL, &r) < 0) {
        th_client_close(c);
        return set_why(h, "echo call failed: %s", th_client_error(c));
    }
    ok = r.state == TH_STATE_OK && r.len == 10 &&
         memcmp(r.data, "still here", 10) == 0;
    if (!ok)
        set_why(h, "fresh echo answered %s: %.*s", th_state_name(r.state),
             (int)r.len, (const char *)r.data);
    th_client_result_free(&r);
    th_client_close(c);
    return ok ? 0 : -1;
}

int hx_stop(struct hx *h, int sig, double deadline)
{
    pid_t pid = h->pid;

    if (pid <= 0)
        return set_why(h, "taskhostd is not running");
    kill(pid, sig);
    h->pid = 0;
    if (hx_wait_pid(pid, deadline, &h->status) < 0)
        return set_why(h, "taskhostd did not exit within %.0f s of signal %d",
                    deadline, sig);
    if (!WIFEXITED(h->status))
        return set_why(h, "taskhostd died of signal %d", WTERMSIG(h->status));
    return WEXITSTATUS(h->status);
}

void hx_cleanup(struct hx *h)
{
    char cmd[160];

    if (h->pid > 0) {
        kill(h->pid, SIGKILL);
        waitpid(h->pid, NULL, 0);
        h->pid = 0;
    }
    if (getenv("TASKHOST_KEEP") != NULL) {
        fprintf(stderr, "kept %s\n", h->dir);
        return;
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->dir);
    (void)!system(cmd);
}

/* ---- stats ---- */

char *hx_stats_json(struct hx *h, const char *pool)
{
    th_client *c = hx_connect(h);
    char *out = NULL;
    int rc;

    if (c == NULL)
        return NULL;
    rc = th_client_stats(c, pool, TH_STATS_JSON, &out);
    if (rc < 0)
        set_why(h, "stats: %s", th_strerror(rc));
    th_client_close(c);
    return rc < 0 ? NULL : out;
}

long long hx_json_num(const char *json, const char *key)
{
    char pat[80];
    const char *p;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = json ? strstr(json, pat) : NULL;
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

int hx_worker_pids(struct hx *h, const char *pool, const char *state,
                   pid_t *pids, int max)
{
    char *json = hx_stats_json(h, pool), want[48];
    const char *p;
    int n = 0;

    if (json == NULL)
        return 0;
    snprintf(want, sizeof want, "\"state\":\"%s\"", state ? state : "");
    p = strstr(json, "\"worker_list\":[");
    while (p && n < max && (p = strstr(p, "{\"pid\":")) != NULL) {
        long pid = strtol(p + 7, NULL, 10);
        const char *st = strstr(p, "\"state\":");
        p += 7;
        if (st && (state == NULL || strncmp(st, want, strlen(want)) == 0))
            pids[n++] = (pid_t)pid;
    }
    free(json);
    return n;
}

int hx_wait_idle(struct hx *h, double deadline)
{
    double end = hx_now() + deadline;
    long long pending = -1;

    for (;;) {
        char *json = hx_stats_json(h, NULL);
        pending = hx_json_num(json, "pending");
        free(json);
        if (pending == 0)
            return 0;
        if (hx_now() > end)
            return set_why(h, "the engine still holds %lld tasks", pending);
        hx_pause_ms(10);
    }
}

/* ---- processes ---- */

/* Reads the parent and state of pid from /proc; 0 or -1. */
static int proc_stat(pid_t pid, pid_t *ppid, char *state, char *comm,
                     size_t commlen)
{
    char path[64], buf[512];
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *open_paren = strchr(buf, '(');
    char *close_paren = strrchr(buf, ')');
    if (open_paren == NULL || close_paren == NULL)
        return -1;
    *close_paren = '\0';
    snprintf(comm, commlen, "%s", open_paren + 1);
    long pp;
    if (sscanf(close_paren + 1, " %c %ld", state, &pp) != 2)
        return -1;
    *ppid = (pid_t)pp;
    return 0;
}

/* Lists into `out` the children of `parent` (zombies only, or living
 * ones only); returns how many. */
static int children(pid_t parent, int zombies, char *out, size_t len)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    size_t used = 0;
    int n = 0;

    if (d == NULL)
        return 0;
    if (len)
        out[0] = '\0';
    while ((e = readdir(d)) != NULL) {
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10), ppid;
        char state, comm[64];
        if (pid <= 0 || proc_stat(pid, &ppid, &state, comm, sizeof comm) < 0)
            continue;
        if (ppid != parent || (state == 'Z') != (zombies != 0))
            continue;
        n++;
        if (used < len)
            used += (size_t)snprintf(out + used, len - used, " %d:%s:%c",
                                     (int)pid, comm, state);
    }
    closedir(d);
    return n;
}

int hx_no_zombies(struct hx *h, double deadline)
{
    double end = hx_now() + deadline;
    char list[256];

    while (children(h->pid, 1, list, sizeof list) > 0) {
        if (hx_now() > end)
            return set_why(h, "zombies under taskhostd %d:%s", (int)h->pid, list);
        hx_pause_ms(10);
    }
    return 0;
}

int hx_leftovers(struct hx *h, double deadline)
{
    double end = hx_now() + deadline;
    char list[256];

    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ; /* orphans that died came to us: not left behind */
        if (children(getpid(), 0, list, sizeof list) == 0)
            return 0;
        if (hx_now() > end)
            return set_why(h, "left behind after shutdown:%s", list);
        hx_pause_ms(10);
    }
}

/* ---- the log ---- */

static int count_lines(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    int n = 0;

    if (f == NULL)
        return 0;
    while (getline(&line, &cap, f) != -1)
        if (strstr(line, a) && (b == NULL || strstr(line, b)))
            n++;
    free(line);
    fclose(f);
    return n;
}

int hx_log_count(const struct hx *h, const char *needle)
{
    return count_lines(h->log, needle, NULL);
}

int hx_log_count2(const struct hx *h, const char *a, const char *b)
{
    return count_lines(h->log, a, b);
}

static void tail(const char *path, const char *label, int lines)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long size, start;
    int seen = 0;

    if (f == NULL)
        return;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    start = size > 65536 ? size - 65536 : 0;
    buf = malloc((size_t)(size - start) + 1);
    fseek(f, start, SEEK_SET);
    if (buf != NULL) {
        size_t n = fread(buf, 1, (size_t)(size - start), f);
        buf[n] = '\0';
        char *p = buf + n;
        while (p > buf && seen <= lines)
            if (*--p == '\n')
                seen++;
        fprintf(stderr, "---- %s (%s)\n%s\n", label, path,
                p == buf ? p : p + 1);
        free(buf);
    }
    fclose(f);
}

void hx_show_log(const struct hx *h, int lines)
{
    tail(h->log, "log", lines);
    if (strcmp(h->err, h->log) != 0)
        tail(h->err, "stderr", lines / 4);
}

const char *hx_read_file(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    size_t n = 0;

    if (f != NULL) {
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

/* Polls until the log at `path` holds needle; 0, or -1 past deadline. */
static int wait_in_file(const char *path, const char *needle, double deadline)
{
    double end = hx_now() + deadline;

    while (strstr(hx_read_file(path), needle) == NULL) {
        if (hx_now() > end)
            return -1;
        hx_pause_ms(5);
    }
    return 0;
}

int hx_wait_log(struct hx *h, const char *needle, double deadline)
{
    if (wait_in_file(h->log, needle, deadline) < 0)
        return set_why(h, "no '%s' in the log within %.0f s", needle, deadline);
    return 0;
}

/* ---- the cmocka forms ---- */

/* Ends the running test with h's reason, after its log. */
static void td_fail(const struct hx *h)
{
    hx_show_log(h, 200);
    fail_msg("%s", h->why);
}

void td_init(struct hx *t, const char *name)
{
    if (hx_init(t, name) < 0)
        td_fail(t);
    snprintf(t->err, sizeof t->err, "%s", t->log);
}

void td_write_conf(struct hx *t, const char *host_extra, const char *rest)
{
    if (hx_write_host_conf(t, host_extra, rest) < 0)
        td_fail(t);
}

pid_t td_spawn_proc(char *const argv[], const struct hx_proc *p)
{
    pid_t pid = hx_spawn(NULL, argv, p);

    assert_true(pid != -1);
    return pid;
}

pid_t td_spawn(char *const argv[], const char *out, const char *err)
{
    return td_spawn_proc(argv, &(struct hx_proc){.out = out, .err = err});
}

int td_wait_exit_within(pid_t pid, double limit)
{
    int status;

    if (hx_wait_pid(pid, limit, &status) < 0)
        fail_msg("process %d did not exit within %.0f s", (int)pid, limit);
    return status;
}

int td_wait_exit(pid_t pid)
{
    return td_wait_exit_within(pid, DEADLINE);
}

void td_start_proc(struct hx *t, const struct hx_proc *p)
{
    if (hx_start_proc(t, p) < 0)
        td_fail(t);
}

void td_start(struct hx *t)
{
    td_start_proc(t, NULL);
}

int td_stop(struct hx *t, int sig)
{
    pid_t pid = t->pid;
    int rc;

    if (pid <= 0)
        return -1;
    rc = hx_stop(t, sig, DEADLINE);
    if (rc < 0 && strstr(t->why, "did not exit") != NULL)
        fail_msg("process %d did not exit within %.0f s", (int)pid, DEADLINE);
    if (rc < 0)
        hx_show_log(t, 200);
    return rc;
}

void td_cleanup(struct hx *t)
{
    if (t->pid > 0 && td_stop(t, SIGQUIT) != 0)
        fprintf(stderr, "taskhostd did not exit cleanly\n");
    hx_cleanup(t);
}

void td_wait_log(const struct hx *t, const char *needle)
{
    if (wait_in_file(t->log, needle, DEADLINE) < 0) {
        hx_show_log(t, 200);
        fail_msg("no '%s' in the log", needle);
    }
}

th_client *td_connect(const struct hx *t)
{
    th_client *c;
    char err[256];

    if (th_client_connect(&c, t->sock, err, sizeof err) < 0)
        fail_msg("connect: %s", err);
    return c;
}

/* ---- the load ---- */

struct hx_client {
    struct hx_load *l;
    int index;
    th_client *c;
    long next; /* tasks submitted; the next tag is next + 1 */
    long cap;
    uint8_t *answers; /* per tag - 1 */
    uint8_t *kind;    /* per tag - 1 */
    long inflight;
    int dead;
};

static void problem(struct hx_load *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(struct hx_load *l, const char *fmt, ...)
{
    va_list ap;

    if (l->first_problem[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(l->first_problem, sizeof l->first_problem, fmt, ap);
    va_end(ap);
}

/* The kind of the n-th task of the whole load (0-based): the counted
 * kinds at evenly spread places, the others by weight in between. */
static int kind_of(const struct hx_load *l, long n)
{
    long total = l->per_client * l->nclients;
    int filler_weight = 0;

    for (int k = 0; k < l->nkinds; k++) {
        long c = l->kinds[k].count;
        if (c <= 0 || n >= total)
            continue;
        /* slot i of kind k sits at (i + 0.5) * total / c, shifted by k */
        long step = total / c;
        if (step > 0 && n % step == (step / 2 + k) % step && n / step < c)
            return k;
    }
    for (int k = 0; k < l->nkinds; k++)
        if (l->kinds[k].count <= 0)
            filler_weight += l->kinds[k].weight > 0 ? l->kinds[k].weight : 1;
    if (filler_weight == 0)
        return 0;
    unsigned long x = (unsigned long)n * 2654435761u;
    int pick = (int)((x >> 8) % (unsigned long)filler_weight);
    for (int k = 0; k < l->nkinds; k++) {
        if (l->kinds[k].count > 0)
            continue;
        pick -= l->kinds[k].weight > 0 ? l->kinds[k].weight : 1;
        if (pick < 0)
            return k;
    }
    return 0;
}

static void on_answer(const th_result *r, void *arg)
{
    struct hx_client *cl = arg;
    struct hx_load *l = cl->l;
    long i = (long)r->id - 1;

    if (i < 0 || i >= cl->next) {
        problem(l, "client %d: answer for tag %llu never submitted", cl->index,
                (unsigned long long)r->id);
        l->unexpected++;
        return;
    }
    if (cl->answers[i]++ > 0) {
        l->duplicates++;
        problem(l, "client %d: tag %ld answered twice", cl->index, i + 1);
        return;
    }
    cl->inflight--;
    l->answered++;
    int k = cl->kind[i];
    const struct hx_kind *kd = &l->kinds[k];
    unsigned st = (unsigned)r->state < TH_STATE_COUNT ? r->state : 0;
    l->by_state[st]++;
    l->by_kind[k][st]++;
    if (!(kd->expect & HX_STATE_BIT(st))) {
        l->unexpected++;
        problem(l, "client %d tag %ld (%s): %s: %.*s", cl->index, i + 1,
                kd->name, th_state_name(r->state),
                (int)(r->len > 120 ? 120 : r->len), (const char *)r->data);
    }
    if (kd->input == NULL && st == TH_STATE_OK) {
        char want[48];
        int n = snprintf(want, sizeof want, "%d:%ld", cl->index, i + 1);
        if (r->len != (size_t)n || memcmp(r->data, want, (size_t)n) != 0) {
            l->wrong_output++;
            problem(l, "client %d tag %ld: output is not its own input",
                    cl->index, i + 1);
        }
    }
}

int hx_load_start(struct hx_load *l, struct hx *h, int nclients,
                  long per_client, int window, const struct hx_kind *kinds,
                  int nkinds)
{
    memset(l, 0, sizeof *l);
    l->h = h;
    l->nclients = nclients;
    l->per_client = per_client;
    l->window = window;
    l->kinds = kinds;
    l->nkinds = nkinds > HX_MAX_KINDS ? HX_MAX_KINDS : nkinds;
    l->cl = calloc((size_t)nclients, sizeof *l->cl);
    if (l->cl == NULL)
        return set_why(h, "out of memory");
    for (int i = 0; i < nclients; i++) {
        struct hx_client *cl = &l->cl[i];
        cl->l = l;
        cl->index = i;
        cl->c = hx_connect(h);
        if (cl->c == NULL)
            return -1;
    }
    return 0;
}

void hx_load_number_from(struct hx_load *l, int first)
{
    for (int i = 0; i < l->nclients; i++)
        l->cl[i].index = first + i;
}

static int grow(struct hx_client *cl)
{
    long cap = cl->cap ? cl->cap * 2 : 4096;
    uint8_t *a = realloc(cl->answers, (size_t)cap);
    uint8_t *k;

    if (a == NULL)
        return -1;
    cl->answers = a;
    k = realloc(cl->kind, (size_t)cap);
    if (k == NULL)
        return -1;
    cl->kind = k;
    memset(cl->answers + cl->cap, 0, (size_t)(cap - cl->cap));
    cl->cap = cap;
    return 0;
}

static int submit_one(struct hx_client *cl)
{
    struct hx_load *l = cl->l;
    long n = cl->next * l->nclients + (long)(cl - l->cl);
    int k = kind_of(l, n);
    const struct hx_kind *kd = &l->kinds[k];
    char buf[48];
    const char *in = kd->input;
    uint64_t tag;

    if (cl->next >= cl->cap && grow(cl) < 0)
        return -1;
    if (in == NULL) {
        snprintf(buf, sizeof buf, "%d:%ld", cl->index, cl->next + 1);
        in = buf;
    }
    cl->kind[cl->next] = (uint8_t)k;
    cl->next++;
    if (th_client_submit(cl->c, kd->pool, kd->task, in, strlen(in), NULL,
                         on_answer, cl, &tag) < 0) {
        cl->next--;
        return -1;
    }
    if (tag != (uint64_t)cl->next)
        problem(l, "client %d: tag %llu for task %ld", cl->index,
                (unsigned long long)tag, cl->next);
    cl->inflight++;
    l->submitted++;
    return 0;
}

static int wants_more(const struct hx_client *cl)
{
    return !cl->dead && (cl->next < cl->l->per_client || cl->l->keep_going);
}

int hx_load_pump(struct hx_load *l, int timeout_ms)
{
    struct pollfd pf[l->nclients];
    int busy = 0, lost = 0;

    for (int i = 0; i < l->nclients; i++) {
        struct hx_client *cl = &l->cl[i];
        while (wants_more(cl) && cl->inflight < l->window)
            if (submit_one(cl) < 0) {
                cl->dead = 1;
                lost = 1;
            }
        pf[i].fd = cl->dead ? -1 : th_client_fd(cl->c);
        pf[i].events =
            POLLIN | (!cl->dead && th_client_want_write(cl->c) ? POLLOUT : 0);
        pf[i].revents = 0;
    }
    poll(pf, (nfds_t)l->nclients, timeout_ms);
    for (int i = 0; i < l->nclients; i++) {
        struct hx_client *cl = &l->cl[i];
        if (cl->dead)
            continue;
        if ((pf[i].revents || th_client_want_write(cl->c)) &&
            th_client_step(cl->c, 0) < 0) {
            problem(l, "client %d: connection lost: %s", i,
                    th_client_error(cl->c));
            cl->dead = 1;
            l->lost++;
            lost = 1;
            continue;
        }
        busy |= wants_more(cl) || cl->inflight > 0;
    }
    if (lost)
        return -1;
    return busy;
}

int hx_load_finish(struct hx_load *l, double deadline)
{
    double end = hx_now() + deadline;
    int rc;

    l->keep_going = 0;
    while ((rc = hx_load_pump(l, 50)) > 0)
        if (hx_now() > end)
            return set_why(l->h, "load not answered in %.0f s: %ld of %ld",
                        deadline, l->answered, l->submitted);
    return rc < 0 ? set_why(l->h, "%s", l->first_problem) : 0;
}

int hx_load_check(struct hx_load *l)
{
    long missing = 0;

    for (int i = 0; i < l->nclients; i++) {
        struct hx_client *cl = &l->cl[i];
        for (long t = 0; t < cl->next; t++)
            if (cl->answers[t] == 0) {
                missing++;
                problem(l, "client %d: tag %ld never answered", i, t + 1);
            }
    }
    if (missing || l->duplicates || l->unexpected || l->wrong_output ||
        l->lost || l->submitted != l->answered)
        return set_why(l->h,
                    "submitted %ld, answered %ld, missing %ld, duplicates "
                    "%ld, unexpected %ld, wrong output %ld, lost %ld: %s",
                    l->submitted, l->answered, missing, l->duplicates,
                    l->unexpected, l->wrong_output, l->lost, l->first_problem);
    return 0;
}

static void print_states(FILE *f, const long *by_state)
{
    for (int s = TH_STATE_OK; s < TH_STATE_COUNT; s++)
        if (by_state[s])
            fprintf(f, " %s %ld", th_state_name((th_state)s), by_state[s]);
}

void hx_load_report(const struct hx_load *l, const char *name, FILE *f)
{
    fprintf(f, "%s: submitted %ld, answered %ld:", name, l->submitted,
            l->answered);
    print_states(f, l->by_state);
    fprintf(f, "\n");
    for (int k = 0; k < l->nkinds; k++) {
        fprintf(f, "    %-10s", l->kinds[k].name);
        print_states(f, l->by_kind[k]);
        fprintf(f, "\n");
    }
    fflush(f);
}

void hx_load_free(struct hx_load *l)
{
    if (l->cl == NULL)
        return;
    for (int i = 0; i < l->nclients; i++) {
        th_client_close(l->cl[i].c);
        free(l->cl[i].answers);
        free(l->cl[i].kind);
    }
    free(l->cl);
    l->cl = NULL;
}
