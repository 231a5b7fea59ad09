/* test_http.c - the daemon's HTTP endpoint: every route, the token, the
 * refusal of an open listener without one, and the limits that keep slow
 * or greedy clients in check. The daemon listens on a port the kernel
 * chooses (127.0.0.1:0) and logs it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>

#include "harness.h"

#define TOKEN "s3cret-token-0123456789"

struct fix {
    struct hx t;
    int port;
    char unix_path[128];
};

static const char *pools =
    "plugins: ( { name = \"echo\"; path = \"" PLUGINS "/echo.so\"; },\n"
    "           { name = \"crash\"; path = \"" PLUGINS "/crash.so\"; } );\n"
    "pools: ( { name = \"p\"; plugin = \"echo\"; min_workers = 1; },\n"
    "         { name = \"c\"; plugin = \"crash\"; min_workers = 0; } );\n";

/* Reads the port the daemon logged: "http: listening on http://H:P/". */
static int logged_port(const struct hx *t)
{
    td_wait_log(t, "http: listening on ");
    const char *s = strstr(hx_read_file(t->log), "http: listening on http://");
    const char *colon = strchr(s + strlen("http: listening on http://"), ':');
    assert_non_null(colon);
    return atoi(colon + 1);
}

static void start(struct fix *f, const char *http_extra)
{
    char rest[2048];
    snprintf(rest, sizeof rest,
             "http: { listen = \"127.0.0.1:0\"; idle_timeout = 1.0; %s };\n%s",
             http_extra ? http_extra : "", pools);
    td_write_conf(&f->t, NULL, rest);
    td_start(&f->t);
    f->port = logged_port(&f->t);
}

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof *f);
    td_init(&f->t, "test_http");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    td_cleanup(&f->t);
    free(f);
    return 0;
}

static int tcp_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {.tv_sec = (time_t)DEADLINE};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd != -1);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

/* Reads until the peer closes; returns the bytes read (at most cap - 1,
 * NUL-terminated). */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, buf + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    return got;
}

struct resp {
    int status;
    char *head; /* status line and headers */
    char *body;
    char buf[1 << 20];
};

/* One request on a fresh connection; `headers` are extra lines, each
 * ending in \r\n. Returns the response (static, overwritten by the next
 * call). */
static struct resp *request_fd(int fd, const char *method, const char *path,
                               const char *headers)
{
    static struct resp r;
    char req[1024];
    snprintf(req, sizeof req,
             "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s\r\n",
             method, path, headers ? headers : "");
    send_all(fd, req);
    read_all(fd, r.buf, sizeof r.buf);
    close(fd);
    r.status = 0;
    sscanf(r.buf, "HTTP/1.%*d %d", &r.status);
    char *sep = strstr(r.buf, "\r\n\r\n");
    r.head = r.buf;
    r.body = sep ? sep + 4 : r.buf + strlen(r.buf);
    if (sep)
        *sep = '\0';
    return &r;
}

static struct resp *request(struct fix *f, const char *method,
                            const char *path, const char *headers)
{
    return request_fd(tcp_connect(f->port), method, path, headers);
}

static struct resp *get(struct fix *f, const char *path)
{
    return request(f, "GET", path, NULL);
}

static void run_tasks(struct fix *f, int n)
{
    th_client *c = td_connect(&f->t);
    for (int i = 0; i < n; i++) {
        th_result r;
        assert_int_equal(th_client_call(c, "p", "echo", "hi", 2, NULL, &r), 0);
        th_client_result_free(&r);
    }
    th_client_close(c);
}

static int in_ci(void)
{
    const char *ci = getenv("CI");
    return ci != NULL && strcmp(ci, "true") == 0;
}

/* ---- routes ---- */

static void test_metrics_pass_promtool_and_name_no_pid(void **state)
{
    struct fix *f = *state;
    start(f, NULL);
    run_tasks(f, 20);
    struct resp *r = get(f, "/metrics");
    assert_int_equal(r->status, 200);
    assert_non_null(strstr(r->head, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(r->body, "taskhost_tasks_total{pool=\"p\",state=\"ok\"} 20\n"));
    assert_non_null(strstr(r->body, "taskhost_task_run_seconds_bucket{pool=\"p\",le=\"+Inf\"} 20\n"));
    assert_non_null(strstr(r->body, "taskhost_build_info{version=\""));
    assert_non_null(strstr(r->body, "taskhost_pool_rss_bytes{pool=\"p\"} "));
    assert_null(strstr(r->body, "pid="));

    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        if (in_ci())
            fail_msg("promtool is missing (Debian: prometheus)");
        skip();
    }
    char path[192], cmd[256];
    snprintf(path, sizeof path, "%s/metrics.txt", f->t.dir);
    FILE *out = fopen(path, "w");
    assert_non_null(out);
    fputs(r->body, out);
    fclose(out);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    char said[4096] = "";
    size_t n = fread(said, 1, sizeof said - 1, p);
    said[n] = '\0';
    int status = pclose(p);
    if (status != 0)
        fail_msg("promtool check metrics: %s", said);
}

static void test_status_is_the_stats_json(void **state)
{
    struct fix *f = *state;
    start(f, NULL);
    run_tasks(f, 3);
    struct resp *r = get(f, "/status");
    assert_int_equal(r->status, 200);
    assert_non_null(strstr(r->head, "Content-Type: application/json"));
    assert_true(strncmp(r->body, "{\"version\":1,", 13) == 0);
    assert_non_null(strstr(r->body, "\"name\":\"p\""));
    assert_non_null(strstr(r->body, "\"window\":{"));
    assert_non_null(strstr(r->body, "\"events\":[{"));
    assert_non_null(strstr(r->body, "\"ok\":3,"));
}

static void test_healthz_is_ok_while_every_pool_serves(void **state)
{
    struct fix *f = *state;
    start(f, NULL);
    struct resp *r = get(f, "/healthz");
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "ok\n");
}

static void test_healthz_is_503_with_why_when_a_pool_backs_off(void **state)
{
    struct fix *f = *state;
    char rest[1024];
    snprintf(rest, sizeof rest,
             "http: { listen = \"127.0.0.1:0\"; };\n"
             "plugins: ( { name = \"bad\"; path = \"" TEST_PLUGINS
             "/badinit.so\"; } );\n"
             "pools: ( { name = \"b\"; plugin = \"bad\"; min_workers = 1; } );\n");
    td_write_conf(&f->t, NULL, rest);
    td_start(&f->t);
    f->port = logged_port(&f->t);
    td_wait_log(&f->t, "failed worker starts in a row");
    struct resp *r = get(f, "/healthz");
    assert_int_equal(r->status, 503);
    assert_non_null(strstr(r->body, "pool 'b'"));
}

static void test_page_is_self_contained_html(void **state)
{
    struct fix *f = *state;
    start(f, NULL);
    struct resp *r = get(f, "/");
    assert_int_equal(r->status, 200);
    assert_non_null(strstr(r->head, "Content-Type: text/html"));
    assert_non_null(strstr(r->head, "Content-Security-Policy: default-src 'none'"));
    assert_non_null(strstr(r->body, "<!DOCTYPE html>"));
    /* No external asset: nothing is fetched from another origin. */
    assert_null(strstr(r->body, "src=\"http"));
    assert_null(strstr(r->body, "href=\"http"));
    assert_null(strstr(r->body, "//cdn"));
}

static void test_head_has_no_body(void **state)
{
    struct fix *f = *state;
    start(f, NULL);
    struct resp *r = request(f, "HEAD", "/metrics", NULL);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "");
}

static void test_unknown_path_is_404_and_writes_are_405(void **state)
{
    struct fix *f = *state;
    start(f, NULL);
    assert_int_equal(get(f, "/admin")->status, 404);
    struct resp *r = request(f, "POST", "/status", "Content-Length: 0\r\n");
    assert_int_equal(r->status, 405);
    assert_non_null(strstr(r->head, "Allow: GET, HEAD"));
    assert_int_equal(request(f, "DELETE", "/", NULL)->status, 405);
}

/* ---- the token ---- */

static void write_token(struct fix *f, const char *token)
{
    char path[192];
    snprintf(path, sizeof path, "%s/token", f->t.dir);
    FILE *t = fopen(path, "w");
    assert_non_null(t);
    fprintf(t, "%s\n", token);
    fclose(t);
}

static void test_token_is_asked_and_checked(void **state)
{
    struct fix *f = *state;
    write_token(f, TOKEN);
    start(f, "auth_token_file = \"token\";");
    const char *routes[] = {"/metrics", "/status", "/healthz"};
    for (int i = 0; i < 3; i++) {
        struct resp *r = get(f, routes[i]);
        assert_int_equal(r->status, 401);
        assert_non_null(strstr(r->head, "WWW-Authenticate: Bearer"));
        r = request(f, "GET", routes[i],
                    "Authorization: Bearer s3cret-token-0123456780\r\n");
        assert_int_equal(r->status, 401);
        r = request(f, "GET", routes[i],
                    "Authorization: Bearer s3cret-token-012345678\r\n");
        assert_int_equal(r->status, 401);
        r = request(f, "GET", routes[i], "Authorization: Basic Zm9vOmJhcg==\r\n");
        assert_int_equal(r->status, 401);
        r = request(f, "GET", routes[i], "Authorization: Bearer " TOKEN "\r\n");
        assert_int_equal(r->status, 200);
    }
    /* The page holds no data: it is served, and asks for the token. */
    assert_int_equal(get(f, "/")->status, 200);
}

static void test_open_listen_without_token_is_refused(void **state)
{
    struct fix *f = *state;
    char *argv[] = {DAEMON, "-c", f->t.conf, "--check-config", NULL};
    char out[192], err[192];
    snprintf(out, sizeof out, "%s/check.out", f->t.dir);
    snprintf(err, sizeof err, "%s/check.err", f->t.dir);
    td_write_conf(&f->t, NULL,
                  "http: {\n  listen = \"0.0.0.0:9464\";\n};\n");
    int status = td_wait_exit(td_spawn(argv, out, err));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    const char *said = hx_read_file(err);
    char want[256];
    snprintf(want, sizeof want,
             "%s:4: http.listen: 0.0.0.0:9464 is not a loopback address",
             f->t.conf);
    if (strstr(said, want) == NULL)
        fail_msg("got: %s", said);
    /* One line. */
    assert_int_equal(strchr(said, '\n') - said + 1, (long)strlen(said));

    /* The same with a token is taken. */
    write_token(f, TOKEN);
    td_write_conf(&f->t, NULL,
                  "http: { listen = \"0.0.0.0:9464\"; "
                  "auth_token_file = \"token\"; };\n");
    status = td_wait_exit(td_spawn(argv, out, err));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_unix_socket_listen_serves(void **state)
{
    struct fix *f = *state;
    char rest[2048];
    snprintf(f->unix_path, sizeof f->unix_path, "%s/http.sock", f->t.dir);
    snprintf(rest, sizeof rest, "http: { listen = \"%s\"; };\n%s",
             f->unix_path, pools);
    td_write_conf(&f->t, NULL, rest);
    td_start(&f->t);
    td_wait_log(&f->t, "http: listening on unix:");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    strcpy(sa.sun_path, f->unix_path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct resp *r = request_fd(fd, "GET", "/healthz", NULL);
    assert_int_equal(r->status, 200);
    assert_int_equal(td_stop(&f->t, SIGTERM), 0);
    assert_int_equal(access(f->unix_path, F_OK), -1);
}

/* ---- limits ---- */

static void test_silent_connection_is_closed_after_idle_timeout(void **state)
{
    struct fix *f = *state;
    start(f, NULL); /* idle_timeout = 1.0 */
    int fd = tcp_connect(f->port);
    send_all(fd, "GET /healthz HTTP/1.1\r\n"); /* and nothing more */
    double t0 = hx_now();
    char buf[256];
    read_all(fd, buf, sizeof buf); /* returns when the daemon closes */
    double took = hx_now() - t0;
    close(fd);
    assert_true(took >= 0.5);
    assert_true(took < 5.0);
}

static void test_oversized_headers_are_refused(void **state)
{
    struct fix *f = *state;
    start(f, NULL);
    char *big = malloc(40000);
    strcpy(big, "X-Big: ");
    memset(big + 7, 'a', 39000);
    strcpy(big + 7 + 39000, "\r\n");
    int fd = tcp_connect(f->port);
    struct resp *r = request_fd(fd, "GET", "/healthz", big);
    free(big);
    /* 431 (or 413/400), or a closed connection: never 200. */
    assert_true(r->status != 200);
    /* And the endpoint still serves. */
    assert_int_equal(get(f, "/healthz")->status, 200);
}

static void test_connections_over_the_limit_wait_or_are_closed(void **state)
{
    struct fix *f = *state;
    start(f, "max_connections = 4;");
    int held[8];
    for (int i = 0; i < 8; i++)
        held[i] = tcp_connect(f->port);
    /* Tasks still flow while the endpoint is full. */
    run_tasks(f, 10);
    for (int i = 0; i < 8; i++)
        close(held[i]);
    /* Freed slots serve again. */
    double end = hx_now() + DEADLINE;
    int status = 0;
    while ((status = get(f, "/healthz")->status) != 200 && hx_now() < end)
        hx_pause_ms(50);
    assert_int_equal(status, 200);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_metrics_pass_promtool_and_name_no_pid),
        T(test_status_is_the_stats_json),
        T(test_healthz_is_ok_while_every_pool_serves),
        T(test_healthz_is_503_with_why_when_a_pool_backs_off),
        T(test_page_is_self_contained_html),
        T(test_head_has_no_body),
        T(test_unknown_path_is_404_and_writes_are_405),
        T(test_token_is_asked_and_checked),
        T(test_open_listen_without_token_is_refused),
        T(test_unix_socket_listen_serves),
        T(test_silent_connection_is_closed_after_idle_timeout),
        T(test_oversized_headers_are_refused),
        T(test_connections_over_the_limit_wait_or_are_closed),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
