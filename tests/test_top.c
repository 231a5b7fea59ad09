/* test_top.c - `taskhostctl top` on a pseudo-terminal: it draws in place,
 * quits on `q`, and gives the terminal back as it found it, whether a key
 * or a signal ends it; without a terminal it prints plain frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pty.h>
#include <termios.h>

#include "harness.h"

struct fix {
    struct hx t;
    int master;
    pid_t pid;
    char out[1 << 16];
    size_t got;
};

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof *f);
    td_init(&f->t, "test_top");
    td_write_conf(&f->t, NULL,
                  "plugins: ( { name = \"echo\"; path = \"" PLUGINS
                  "/echo.so\"; } );\n"
                  "pools: ( { name = \"p\"; plugin = \"echo\"; "
                  "min_workers = 1; } );\n");
    td_start(&f->t);
    f->master = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
    }
    if (f->master != -1)
        close(f->master);
    td_cleanup(&f->t);
    free(f);
    return 0;
}

/* Starts `taskhostctl top` on a new pseudo-terminal of 30 x 100. */
static void start_top(struct fix *f)
{
    struct winsize ws = {.ws_row = 30, .ws_col = 100};
    f->pid = forkpty(&f->master, NULL, NULL, &ws);
    assert_true(f->pid != -1);
    if (f->pid == 0) {
        execl(CTL, CTL, "-s", f->t.sock, "top", "-d", "0.2", (char *)NULL);
        _exit(127);
    }
}

static int count(const struct fix *f, const char *needle)
{
    int n = 0;
    const char *s = f->out, *e = f->out + f->got;
    while ((s = memmem(s, (size_t)(e - s), needle, strlen(needle))) != NULL) {
        n++;
        s++;
    }
    return n;
}

/* Reads what top writes until `needle` is in it `times` times. */
static void read_until_n(struct fix *f, const char *needle, int times)
{
    double end = hx_now() + DEADLINE;
    while (count(f, needle) < times) {
        struct pollfd p = {.fd = f->master, .events = POLLIN};
        if (hx_now() > end)
            fail_msg("no '%s' from top in: %.*s", needle, (int)f->got, f->out);
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = read(f->master, f->out + f->got, sizeof f->out - 1 - f->got);
        if (n <= 0)
            fail_msg("top's terminal closed before '%s'", needle);
        f->got += (size_t)n;
        assert_true(f->got < sizeof f->out - 1);
    }
}

static void read_until(struct fix *f, const char *needle)
{
    read_until_n(f, needle, 1);
}

/* Waits for top to exit and collects the rest of its output. */
static int wait_top(struct fix *f)
{
    int status = td_wait_exit_within(f->pid, 5.0);
    f->pid = 0;
    for (;;) {
        struct pollfd p = {.fd = f->master, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            break;
        ssize_t n = read(f->master, f->out + f->got, sizeof f->out - 1 - f->got);
        if (n <= 0)
            break;
        f->got += (size_t)n;
    }
    return status;
}

static int has(const struct fix *f, const char *s)
{
    return memmem(f->out, f->got, s, strlen(s)) != NULL;
}

static void test_top_draws_in_place_and_quits_on_q(void **state)
{
    struct fix *f = *state;
    struct termios before, after;
    start_top(f);
    read_until(f, "pool p (plugin echo");
    assert_true(has(f, "\033[?1049h")); /* alternate screen */
    assert_true(has(f, "\033[?25l"));   /* cursor hidden */
    /* It redraws: each frame starts at the top left again. */
    read_until_n(f, "\033[Htaskhost top", 2);
    assert_true(tcgetattr(f->master, &before) == 0);
    assert_int_equal(write(f->master, "q", 1), 1);
    int status = wait_top(f);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(has(f, "\033[?1049l")); /* main screen back */
    assert_true(has(f, "\033[?25h"));   /* cursor back */
    /* The line discipline is cooked again (echo, canonical input). */
    assert_true(tcgetattr(f->master, &after) == 0);
    assert_true((after.c_lflag & (ECHO | ICANON)) == (ECHO | ICANON));
    assert_true((before.c_lflag & (ECHO | ICANON)) == 0);
}

static void test_top_gives_the_terminal_back_on_sigterm(void **state)
{
    struct fix *f = *state;
    struct termios after;
    start_top(f);
    read_until(f, "pool p (plugin echo");
    kill(f->pid, SIGTERM);
    int status = wait_top(f);
    assert_true(WIFEXITED(status));
    assert_true(has(f, "\033[?1049l"));
    assert_true(has(f, "\033[?25h"));
    assert_true(tcgetattr(f->master, &after) == 0);
    assert_true((after.c_lflag & (ECHO | ICANON)) == (ECHO | ICANON));
}

static void test_top_without_a_terminal_prints_frames(void **state)
{
    struct fix *f = *state;
    char out[192], err[192];
    char *argv[] = {CTL, "-s", f->t.sock, "top", "-n", "2", "-d", "0.1", NULL};
    snprintf(out, sizeof out, "%s/top.out", f->t.dir);
    snprintf(err, sizeof err, "%s/top.err", f->t.dir);
    int status = td_wait_exit(td_spawn(argv, out, err));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    const char *s = hx_read_file(out);
    const char *second = strstr(s, "taskhost top");
    assert_non_null(second);
    assert_non_null(strstr(second + 1, "taskhost top"));
    assert_non_null(strstr(s, "pool p (plugin echo"));
    assert_non_null(strstr(s, "tasks/s"));
    assert_null(strchr(s, '\033'));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_top_draws_in_place_and_quits_on_q),
        T(test_top_gives_the_terminal_back_on_sigterm),
        T(test_top_without_a_terminal_prints_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
