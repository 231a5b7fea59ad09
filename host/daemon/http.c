/* http.c - the daemon's HTTP endpoint on libmicrohttpd, in the engine's
 * loop (see http.h).
 *
 * libmicrohttpd runs in its "external epoll" mode: it keeps its listening
 * socket and connections in an epoll set of its own, whose descriptor is
 * watched for reading here; MHD_run() is called when it is readable and
 * when the timeout MHD_get_timeout() asks for passes.
 *
 * libmicrohttpd is loaded (dlopen) only when the endpoint is configured:
 * it brings a TLS library along, whose memory a daemon without the
 * endpoint, and each of its forked workers, would otherwise carry.
 *
 * Clients are bounded by libmicrohttpd's limits (connections in all, per
 * address, memory per connection for the request and its headers, idle
 * time) and, for the loop's sake, by a duty cycle: after MHD_run() took
 * t seconds, HTTP waits t * (1 / HTTP_DUTY - 1) seconds before it runs
 * again, so that whatever clients do, HTTP takes at most about HTTP_DUTY
 * of the loop, and tasks the rest.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "host.h"
#include "log.h"

#define HTTP_MEMORY (16 * 1024) /* per connection: request line, headers */
#define HTTP_DUTY 0.02          /* share of the loop HTTP may take */
#define HTTP_PAUSE_MIN 0.002    /* seconds: shorter debts are carried */

static struct http {
    th_host *host;
    struct MHD_Daemon *mhd;
    th_watch *watch;
    th_timer *timer;
    char *token;         /* NULL: no token asked */
    char *listen;        /* as configured */
    char unix_path[108]; /* a unix socket we made, removed at close */
    char where[160];     /* as bound, for the log */
    double debt;         /* seconds HTTP must wait before it runs again */
    double last;         /* monotonic time of the end of the last run */
    int paused;
} http;

/* The libmicrohttpd functions used, found by name once it is loaded. */
#define MHD_FUNCTIONS(X)                                                       \
    X(lookup_connection_value) X(create_response_from_buffer)                  \
    X(add_response_header) X(queue_response) X(destroy_response) X(run)        \
    X(get_timeout) X(start_daemon) X(get_daemon_info) X(stop_daemon)

static struct {
    void *lib;
#define MHD_POINTER(name) __typeof__(MHD_##name) *name;
    MHD_FUNCTIONS(MHD_POINTER)
#undef MHD_POINTER
} mhd;

/* Loads libmicrohttpd (the runtime library of the version built
 * against, else any). Returns 0, or -1 with the reason in err. */
static int load_mhd(char *err, size_t errlen)
{
    static const char *const names[] = {MHD_SONAME, "libmicrohttpd.so"};

    if (mhd.lib != NULL)
        return 0;
    for (size_t i = 0; i < 2 && mhd.lib == NULL; i++)
        mhd.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (mhd.lib == NULL) {
        snprintf(err, errlen, "http: cannot load libmicrohttpd (%s): %s",
                 MHD_SONAME, dlerror());
        return -1;
    }
#define MHD_FIND(name)                                                         \
    if ((*(void **)&mhd.name = dlsym(mhd.lib, "MHD_" #name)) == NULL) {        \
        snprintf(err, errlen, "http: libmicrohttpd has no MHD_%s", #name);     \
        return -1;                                                             \
    }
    MHD_FUNCTIONS(MHD_FIND)
#undef MHD_FIND
    return 0;
}

static double mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- requests ---- */

/* Compares in time that depends on the lengths only, not on where the
 * strings differ. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);

    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)((unsigned char)b[i] ^
                                (unsigned char)(i < la ? a[i] : 0));
    return diff == 0;
}

static int authorized(struct MHD_Connection *c)
{
    const char *h;

    if (http.token == NULL)
        return 1;
    h = mhd.lookup_connection_value(c, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION);
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    return token_equal(h, http.token);
}

static void common_headers(struct MHD_Response *r, const char *type)
{
    mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    mhd.add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    mhd.add_response_header(r, "X-Content-Type-Options", "nosniff");
}

/* Queues `body` (malloc'd, taken) with `status`. */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned status,
                             const char *type, char *body)
{
    struct MHD_Response *r = mhd.create_response_from_buffer(
        strlen(body), body, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result rc;

    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    common_headers(r, type);
    if (status == MHD_HTTP_UNAUTHORIZED)
        mhd.add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"taskhost\"");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        mhd.add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    rc = mhd.queue_response(c, status, r);
    mhd.destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status,
                                  const char *text)
{
    char *body = strdup(text);

    return body ? reply(c, status, "text/plain; charset=utf-8", body) : MHD_NO;
}

/* The page: static, and allowed to reach only its own origin. */
static enum MHD_Result reply_page(struct MHD_Connection *c)
{
    struct MHD_Response *r = mhd.create_response_from_buffer(
        strlen(http_status_html), (void *)http_status_html,
        MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc;

    if (r == NULL)
        return MHD_NO;
    common_headers(r, "text/html; charset=utf-8");
    mhd.add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; "
                            "style-src 'unsafe-inline'; connect-src 'self'; "
                            "img-src data:; frame-ancestors 'none'");
    mhd.add_response_header(r, "Referrer-Policy", "no-referrer");
    rc = mhd.queue_response(c, MHD_HTTP_OK, r);
    mhd.destroy_response(r);
    return rc;
}

static enum MHD_Result reply_stats(struct MHD_Connection *c, int format)
{
    char *out = NULL;
    int rc = th_host_stats(http.host, NULL, format, &out);

    if (rc < 0) {
        free(out);
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    return reply(c, MHD_HTTP_OK,
                 format == TH_STATS_JSON
                     ? "application/json"
                     : "text/plain; version=0.0.4; charset=utf-8",
                 out);
}

static enum MHD_Result reply_health(struct MHD_Connection *c)
{
    char why[600];
    int ok = stats_health(http.host, why, sizeof why - 1) == 0;

    strcat(why, "\n");
    return reply_text(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, why);
}

/* One request: called by libmicrohttpd once its headers are in (then
 * again for each piece of a body, which no route here wants). */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    if (*upload_size != 0)
        return MHD_NO; /* a body: not for us */
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "read-only: GET or HEAD\n");
    if (strcmp(url, "/") == 0)
        return reply_page(c);
    if (strcmp(url, "/metrics") != 0 && strcmp(url, "/status") != 0 &&
        strcmp(url, "/healthz") != 0)
        return reply_text(c, MHD_HTTP_NOT_FOUND,
                          "not found: try /, /metrics, /status, /healthz\n");
    if (!authorized(c))
        return reply_text(c, MHD_HTTP_UNAUTHORIZED,
                          "a Bearer token is needed\n");
    if (strcmp(url, "/metrics") == 0)
        return reply_stats(c, TH_STATS_PROMETHEUS);
    if (strcmp(url, "/status") == 0)
        return reply_stats(c, TH_STATS_JSON);
    return reply_health(c);
}

/* ---- the loop ---- */

static void on_timer(th_timer *t, void *arg);

/* Runs libmicrohttpd, then either pays the time it took with a pause, or
 * arms the timer for the timeout it asks for. */
static void serve(void)
{
    double start = mono(), took;
    MHD_UNSIGNED_LONG_LONG ms;

    http.debt -= start - http.last;
    if (http.debt < 0)
        http.debt = 0;
    mhd.run(http.mhd);
    http.last = mono();
    took = http.last - start;
    http.debt += took * (1.0 / HTTP_DUTY - 1.0);
    if (http.debt >= HTTP_PAUSE_MIN) {
        http.paused = 1;
        th_watch_set(http.watch, 0);
        th_timer_start(http.timer, http.debt, 0);
        return;
    }
    if (mhd.get_timeout(http.mhd, &ms) == MHD_YES)
        th_timer_start(http.timer, (double)ms / 1000.0, 0);
    else
        th_timer_stop(http.timer);
}

static void on_ready(th_watch *w, int fd, unsigned events, void *arg)
{
    serve();
}

static void on_timer(th_timer *t, void *arg)
{
    if (http.paused) {
        http.paused = 0;
        th_watch_set(http.watch, TH_WATCH_READ);
    }
    serve();
}

static void mhd_log(void *arg, const char *fmt, va_list ap)
{
    char msg[512];

    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_debug("http: %s", msg);
}

/* ---- the socket ---- */

static void describe(const struct sockaddr_storage *ss)
{
    char a[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
        snprintf(http.where, sizeof http.where, "http://%s:%u/", a,
                 ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const void *)ss;
        inet_ntop(AF_INET6, &in->sin6_addr, a, sizeof a);
        snprintf(http.where, sizeof http.where, "http://[%s]:%u/", a,
                 ntohs(in->sin6_port));
    } else {
        snprintf(http.where, sizeof http.where, "unix:%s", http.unix_path);
    }
}

/* A unix socket file left by a dead daemon is replaced; one that answers
 * is someone's. */
static int clear_unix_path(const struct sockaddr_un *un, socklen_t len)
{
    struct stat st;
    int fd, live;

    if (lstat(un->sun_path, &st) == -1)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        errno = EEXIST;
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    live = connect(fd, (const struct sockaddr *)un, len) == 0;
    close(fd);
    if (live) {
        errno = EADDRINUSE;
        return -1;
    }
    return unlink(un->sun_path);
}

static int bind_listen(const struct http_cfg *cfg, char *err, size_t errlen)
{
    int family = cfg->addr.ss_family, one = 1, fd;
    struct sockaddr_storage bound;
    socklen_t len = sizeof bound;

    if (family == AF_UNIX &&
        clear_unix_path((const void *)&cfg->addr, cfg->addrlen) == -1)
        goto fail_early;
    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        goto fail_early;
    if (family != AF_UNIX)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) == -1 ||
        listen(fd, 128) == -1 ||
        getsockname(fd, (struct sockaddr *)&bound, &len) == -1) {
        snprintf(err, errlen, "http.listen %s: %s", cfg->listen,
                 strerror(errno));
        close(fd);
        return -1;
    }
    if (family == AF_UNIX)
        snprintf(http.unix_path, sizeof http.unix_path, "%s",
                 ((const struct sockaddr_un *)&cfg->addr)->sun_path);
    describe(&bound);
    return fd;
fail_early:
    snprintf(err, errlen, "http.listen %s: %s", cfg->listen, strerror(errno));
    return -1;
}

/* Connections at once come from http.max_connections, half of them at
 * most from one address; idle time from http.idle_timeout. */
static struct MHD_Daemon *start_mhd(const struct http_cfg *cfg, int fd)
{
    unsigned per_address = (unsigned)(cfg->max_connections + 1) / 2;

    unsigned flags = MHD_USE_EPOLL | MHD_USE_TURBO | MHD_USE_ERROR_LOG;

#ifdef MHD_USE_NO_THREAD_SAFETY
    flags |= MHD_USE_NO_THREAD_SAFETY;
#endif
    return mhd.start_daemon(
        flags, 0, NULL, NULL, on_request, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_address,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MEMORY,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(cfg->idle_timeout + 0.5),
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_END);
}

static int set_token(const char *token)
{
    char *copy = token ? strdup(token) : NULL;

    if (token && copy == NULL)
        return -1;
    if (http.token != NULL) {
        explicit_bzero(http.token, strlen(http.token));
        free(http.token);
    }
    http.token = copy;
    return 0;
}

int http_open(th_host *host, const struct http_cfg *cfg, char *err,
              size_t errlen)
{
    const union MHD_DaemonInfo *info;
    int fd;

    if (cfg->listen == NULL)
        return 0;
    if (load_mhd(err, errlen) < 0)
        return TH_EIO;
    http.host = host;
    http.listen = strdup(cfg->listen);
    if (http.listen == NULL || set_token(cfg->auth_token) < 0) {
        snprintf(err, errlen, "http: out of memory");
        http_close();
        return TH_ENOMEM;
    }
    fd = bind_listen(cfg, err, errlen);
    if (fd < 0) {
        http_close();
        return TH_EIO;
    }
    http.mhd = start_mhd(cfg, fd);
    if (http.mhd == NULL) {
        close(fd);
        snprintf(err, errlen, "http: libmicrohttpd did not start on %s",
                 http.where);
        http_close();
        return TH_EIO;
    }
    info = mhd.get_daemon_info(http.mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL ||
        th_timer_new(host, on_timer, NULL, &http.timer) < 0 ||
        th_watch_start(host, info->epoll_fd, TH_WATCH_READ, on_ready, NULL,
                       &http.watch) < 0) {
        snprintf(err, errlen, "http: cannot watch its descriptors");
        http_close();
        return TH_EIO;
    }
    http.last = mono();
    log_info("http: listening on %s%s", http.where,
             http.token ? " (Bearer token required)" : "");
    return 0;
}

void http_reload(const struct http_cfg *cfg)
{
    if (http.mhd == NULL) {
        if (cfg->listen != NULL)
            log_warn("reload: http.listen %s takes effect at a restart",
                     cfg->listen);
        return;
    }
    if (cfg->listen == NULL || strcmp(cfg->listen, http.listen) != 0)
        log_warn("reload: http stays on %s until a restart", http.where);
    if (set_token(cfg->auth_token) < 0)
        log_error("reload: out of memory; the http token is unchanged");
}

void http_close(void)
{
    th_watch_stop(http.watch);
    th_timer_free(http.timer);
    if (http.mhd != NULL)
        mhd.stop_daemon(http.mhd); /* closes the listening socket too */
    if (http.unix_path[0] != '\0')
        unlink(http.unix_path);
    set_token(NULL);
    free(http.listen);
    memset(&http, 0, sizeof http);
}
