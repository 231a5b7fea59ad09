/* test_badinput.c - what the real daemon does with bad input: payloads
 * over max_payload or empty, unknown pool and task names, names that are
 * not valid UTF-8 or hold control bytes, and a config path that is not a
 * file. Each gets a clear answer, and the daemon goes on serving.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness.h"
#include "raw_client.h"

static const char conf_rest[] =
    "plugins = ( { name = \"echo\"; path = \"" PLUGINS "/echo.so\"; } );\n"
    "pools = ( { name = \"echo\"; plugin = \"echo\"; min_workers = 1;"
    " max_workers = 1; } );\n";

static int setup(void **state)
{
    struct hx *t = malloc(sizeof *t);

    assert_non_null(t);
    td_init(t, "test_badinput");
    td_write_conf(t, "max_payload = \"1K\";", conf_rest);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    td_cleanup(*state);
    free(*state);
    return 0;
}

/* Submits one task with raw names on `fd` and reads its RESULT (data
 * NUL-terminated in buf). Returns the state. */
static int raw_submit(int fd, const char *pool, size_t pool_len,
                      const char *task, size_t task_len, const void *in,
                      size_t len, uint8_t *buf, size_t cap,
                      struct proto_result *r)
{
    struct proto_submit s = {.pool = pool, .pool_len = pool_len,
                             .task = task, .task_len = task_len,
                             .input = in, .input_len = len};
    struct buf b = {0};
    struct proto_frame f;

    assert_int_equal(proto_put_submit(&b, 7, 0, &s), 0);
    assert_int_equal(send(fd, b.data, b.len, MSG_NOSIGNAL), (ssize_t)b.len);
    buf_free(&b);
    assert_true(td_read_frame(fd, buf, cap - 1, &f) > 0);
    assert_int_equal(f.type, PROTO_RESULT);
    assert_int_equal(f.tag, 7);
    assert_int_equal(proto_parse_result(&f, r), 0);
    ((uint8_t *)r->data)[r->len] = '\0';
    return r->state;
}

/* A library call of echo on a fresh connection: the daemon still serves. */
static void assert_serves(const struct hx *t)
{
    th_client *c = td_connect(t);
    th_result r;

    assert_int_equal(th_client_call(c, "echo", "echo", "still here", 10,
                                    NULL, &r),
                     0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_string_equal(r.data, "still here");
    th_client_result_free(&r);
    th_client_close(c);
}

/* Only printable ASCII, UTF-8 sequences and newlines: nothing that could
 * forge a log line or drive a terminal. */
static int clean_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* ---- payload sizes ---- */

static void oversized_payload_gets_an_error_and_the_next_client_is_served(
    void **state)
{
    struct hx *t = *state;
    static char big[2048];
    struct proto_submit s = {.pool = "echo", .pool_len = 4, .task = "echo",
                             .task_len = 4, .input = big,
                             .input_len = sizeof big};
    struct buf b = {0};
    struct proto_frame f;
    struct proto_reply rep;
    uint8_t buf[4096];
    int fd;

    td_start(t);
    fd = td_raw_connect(t);
    assert_int_equal(proto_put_submit(&b, 9, 0, &s), 0);
    /* the daemon may close before it took it all: a short send is fine */
    (void)!send(fd, b.data, b.len, MSG_NOSIGNAL);
    buf_free(&b);
    assert_true(td_read_frame(fd, buf, sizeof buf, &f) > 0);
    assert_int_equal(f.type, PROTO_ERROR);
    assert_int_equal(f.tag, 9);
    assert_int_equal(proto_parse_reply(&f, &rep), 0);
    assert_int_equal(rep.code, TH_ETOOBIG);
    buf[PROTO_HEADER_SIZE + f.len] = '\0';
    assert_non_null(strstr(rep.text, "max_payload"));
    assert_true(td_read_frame(fd, buf, sizeof buf, &f) == 0); /* closed */
    close(fd);
    assert_serves(t);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void payload_of_exactly_max_payload_is_served(void **state)
{
    struct hx *t = *state;
    static char in[1024 - 12 - 5 - 5]; /* body = fixed + names + input */
    static uint8_t buf[4096];
    struct proto_result r;
    int fd;

    memset(in, 'x', sizeof in);
    td_start(t);
    fd = td_raw_connect(t);
    assert_int_equal(raw_submit(fd, "echo", 4, "echo", 4, in, sizeof in, buf,
                                sizeof buf, &r),
                     TH_STATE_OK);
    assert_int_equal(r.len, sizeof in);
    assert_memory_equal(r.data, in, sizeof in);
    close(fd);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void zero_length_payload_is_a_valid_task(void **state)
{
    struct hx *t = *state;
    th_client *c;
    th_result r;

    td_start(t);
    c = td_connect(t);
    assert_int_equal(th_client_call(c, "echo", "echo", NULL, 0, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_OK);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.len, 0);
    th_client_result_free(&r);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

/* ---- names ---- */

static void unknown_pool_is_rejected_by_name(void **state)
{
    struct hx *t = *state;
    th_client *c;
    th_result r;

    td_start(t);
    c = td_connect(t);
    assert_int_equal(
        th_client_call(c, "no-such-pool", "echo", "x", 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_int_equal(r.code, TH_ENOENT);
    assert_non_null(strstr(r.data, "no-such-pool"));
    th_client_result_free(&r);
    th_client_close(c);
    assert_serves(t);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void unknown_task_is_rejected_by_name(void **state)
{
    struct hx *t = *state;
    th_client *c;
    th_result r;

    td_start(t);
    c = td_connect(t);
    assert_int_equal(
        th_client_call(c, "echo", "no-such-task", "x", 1, NULL, &r), 0);
    assert_int_equal(r.state, TH_STATE_REJECTED);
    assert_int_equal(r.code, TH_ENOENT);
    assert_non_null(strstr(r.data, "no-such-task"));
    th_client_result_free(&r);
    th_client_close(c);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void utf8_pool_name_is_rejected_by_name(void **state)
{
    struct hx *t = *state;
    static uint8_t buf[4096];
    struct proto_result r;
    int fd;

    td_start(t);
    fd = td_raw_connect(t);
    assert_int_equal(raw_submit(fd, "caf\xc3\xa9", 5, "echo", 4, "x", 1, buf,
                                sizeof buf, &r),
                     TH_STATE_REJECTED);
    assert_int_equal(r.code, TH_ENOENT);
    assert_non_null(strstr(r.data, "caf\xc3\xa9"));
    close(fd);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void invalid_utf8_pool_name_is_rejected_clearly(void **state)
{
    struct hx *t = *state;
    static uint8_t buf[4096];
    static const char *bad[] = {"\xff\xfe", "ab\xc3", "\xc0\xaf",
                                "\xed\xa0\x80", "\xf8\x88\x80\x80\x80"};
    struct proto_result r;
    int fd;

    td_start(t);
    fd = td_raw_connect(t);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(raw_submit(fd, bad[i], strlen(bad[i]), "echo", 4,
                                    "x", 1, buf, sizeof buf, &r),
                         TH_STATE_REJECTED);
        assert_int_equal(r.code, TH_EINVAL);
        assert_non_null(strstr(r.data, "pool name"));
        assert_non_null(strstr(r.data, "UTF-8"));
        assert_true(clean_text(r.data, r.len));
        assert_null(memchr(r.data, 0xff, r.len));
    }
    /* the same connection is still served */
    assert_int_equal(raw_submit(fd, "echo", 4, "echo", 4, "ok", 2, buf,
                                sizeof buf, &r),
                     TH_STATE_OK);
    close(fd);
    assert_int_equal(td_stop(t, SIGTERM), 0);
}

static void control_bytes_in_a_task_name_are_rejected_clearly(void **state)
{
    struct hx *t = *state;
    static uint8_t buf[4096];
    static const char forged[] = "echo\nERROR forged log line\x1b[2J";
    struct proto_result r;
    int fd;

    td_start(t);
    fd = td_raw_connect(t);
    assert_int_equal(raw_submit(fd, "echo", 4, forged, strlen(forged), "x", 1,
                                buf, sizeof buf, &r),
                     TH_STATE_REJECTED);
    assert_int_equal(r.code, TH_EINVAL);
    assert_non_null(strstr(r.data, "task name"));
    assert_non_null(strstr(r.data, "control"));
    assert_true(clean_text(r.data, r.len));
    close(fd);
    assert_serves(t);
    assert_int_equal(td_stop(t, SIGTERM), 0);
    assert_null(strstr(hx_read_file(t->log), "\nERROR forged"));
    assert_null(strchr(hx_read_file(t->log), '\x1b'));
}

/* ---- config paths that are not files ---- */

/* Runs taskhostd with `args` on `conf`; returns the exit status after
 * checking that it came within 5 s and that stderr holds one line
 * containing `why`. */
static int run_on_bad_config(struct hx *t, const char *mode,
                             const char *conf, const char *why)
{
    char *check[] = {DAEMON, "--check-config", "-c", (char *)conf, NULL};
    char *start[] = {DAEMON, "-c", (char *)conf, "-f", NULL};
    char err[160];
    const char *text, *nl;
    double t0 = hx_now();
    int status;

    snprintf(err, sizeof err, "%s/stderr.%s", t->dir, mode);
    status = td_wait_exit_within(
        td_spawn(strcmp(mode, "check") == 0 ? check : start, t->out, err),
        5.0);
    assert_true(hx_now() - t0 < 5.0);
    text = hx_read_file(err);
    assert_non_null(strstr(text, conf));
    assert_non_null(strstr(text, why));
    nl = strchr(text, '\n');
    assert_non_null(nl);
    assert_true(nl[1] == '\0'); /* one line */
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void check_config_refuses_a_directory(void **state)
{
    struct hx *t = *state;

    assert_int_equal(run_on_bad_config(t, "check", t->dir, "directory"), 1);
}

static void check_config_refuses_a_fifo(void **state)
{
    struct hx *t = *state;
    char fifo[160];

    snprintf(fifo, sizeof fifo, "%s/fifo.conf", t->dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(run_on_bad_config(t, "check", fifo, "FIFO"), 1);
}

static void daemon_refuses_a_directory_config(void **state)
{
    struct hx *t = *state;

    assert_int_equal(run_on_bad_config(t, "start", t->dir, "directory"), 1);
    assert_int_equal(access(t->sock, F_OK), -1);
}

static void daemon_refuses_a_fifo_config(void **state)
{
    struct hx *t = *state;
    char fifo[160];

    snprintf(fifo, sizeof fifo, "%s/fifo.conf", t->dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(run_on_bad_config(t, "start", fifo, "FIFO"), 1);
    assert_int_equal(access(t->sock, F_OK), -1);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(oversized_payload_gets_an_error_and_the_next_client_is_served),
        T(payload_of_exactly_max_payload_is_served),
        T(zero_length_payload_is_a_valid_task),
        T(unknown_pool_is_rejected_by_name),
        T(unknown_task_is_rejected_by_name),
        T(utf8_pool_name_is_rejected_by_name),
        T(invalid_utf8_pool_name_is_rejected_clearly),
        T(control_bytes_in_a_task_name_are_rejected_clearly),
        T(check_config_refuses_a_directory),
        T(check_config_refuses_a_fifo),
        T(daemon_refuses_a_directory_config),
        T(daemon_refuses_a_fifo_config),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
