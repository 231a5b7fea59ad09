/* top.c - `taskhostctl top`: the daemon's stats, refreshed in place.
 *
 * Each refresh asks the daemon for its stats as text (the same windows,
 * charts, worker list and events as `taskhostctl stats` and the HTTP
 * status page) and redraws the screen over the old one. On a terminal it
 * switches to the alternate screen with the cursor hidden and the input in
 * raw mode, so that one key acts at once: `q` (or Ctrl-C, Esc) quits.
 * Whatever ends it (a key, SIGINT, SIGTERM, SIGHUP, a lost daemon), the
 * terminal is given back as it was. Without a terminal it prints
 * each frame after the other (with -n, a fixed number of them).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "top.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_signal; /* the signal that asks to quit */
static volatile sig_atomic_t resized;

static struct termios saved;
static int raw_on;   /* the terminal is ours: raw input, alternate screen */

static void on_quit(int sig)
{
    got_signal = sig;
}

static void on_winch(int sig)
{
    (void)sig;
    resized = 1;
}

static void put(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, s, n);
        if (w <= 0) {
            if (w == -1 && errno == EINTR)
                continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Gives the terminal back: cooked input, the cursor, the main screen. */
static void restore(void)
{
    if (!raw_on)
        return;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    put("\033[?25h\033[?1049l");
    raw_on = 0;
}

/* Takes the terminal: no echo, no line editing, keys as bytes (Ctrl-C
 * too: it is read as a key, so that the terminal is restored before the
 * exit, whatever the moment). */
static int take_terminal(void)
{
    struct termios raw;

    if (tcgetattr(STDIN_FILENO, &saved) == -1)
        return -1;
    raw = saved;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ISIG | IEXTEN);
    raw.c_iflag &= ~(tcflag_t)(IXON | ICRNL);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == -1)
        return -1;
    raw_on = 1;
    atexit(restore);
    put("\033[?1049h\033[?25l\033[H\033[2J");
    return 0;
}

static void catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_quit;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
}

static void term_size(int *rows, int *cols)
{
    struct winsize ws;

    *rows = 24;
    *cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
        *rows = ws.ws_row;
        *cols = ws.ws_col;
    }
}

/* Appends line [s, e) to f, cut at `cols` characters (UTF-8 aware). */
static void put_line(FILE *f, const char *s, const char *e, int cols)
{
    int shown = 0;
    for (; s < e; s++) {
        int starts = ((unsigned char)*s & 0xC0) != 0x80;
        if (starts && shown == cols)
            break;
        shown += starts;
        fputc(*s, f);
    }
}

/* One screen: a title line, then the stats, each line cut to the width
 * and cleared to its end, the rest of the screen cleared. */
static void draw(const char *sock, const char *stats, int tty)
{
    char *frame = NULL, when[16];
    size_t len = 0;
    FILE *f = open_memstream(&frame, &len);
    int rows = 0, cols = 0, row = 1;
    time_t now = time(NULL);
    struct tm tm;

    if (f == NULL)
        return;
    localtime_r(&now, &tm);
    strftime(when, sizeof when, "%H:%M:%S", &tm);
    if (tty) {
        term_size(&rows, &cols);
        fputs("\033[H", f);
    } else {
        cols = 1 << 20;
        rows = 1 << 20;
    }
    fprintf(f, "taskhost top  %s  %s%s", sock, when,
            tty ? "  (q to quit)" : "");
    fputs(tty ? "\033[K\r\n" : "\n", f);
    for (const char *s = stats; *s && row < rows; row++) {
        const char *e = strchr(s, '\n');
        if (e == NULL)
            e = s + strlen(s);
        put_line(f, s, e, cols);
        fputs(tty ? "\033[K\r\n" : "\n", f);
        s = *e ? e + 1 : e;
    }
    if (tty)
        fputs("\033[J", f);
    else
        fputs("\n", f);
    fclose(f);
    put(frame);
    free(frame);
}

/* Waits up to `ms` for a key; returns 1 when it asks to quit. */
static int wait_key(int ms, int tty)
{
    struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
    char keys[32];
    ssize_t n;

    if (!tty) {
        poll(NULL, 0, ms);
        return 0;
    }
    if (poll(&p, 1, ms) <= 0)
        return 0;
    n = read(STDIN_FILENO, keys, sizeof keys);
    if (n == 0)
        return 1; /* the terminal is gone */
    for (ssize_t i = 0; i < n; i++) {
        if (keys[i] == 'q' || keys[i] == 'Q' || keys[i] == 3 ||
            keys[i] == 4 || (keys[i] == 27 && n == 1))
            return 1;
    }
    return 0;
}

int top_run(th_client *c, const char *sock, const char *pool, double delay,
            long count)
{
    int tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    int ms = (int)(delay * 1000.0 + 0.5);
    int rc = 0;

    catch_signals();
    if (tty && take_terminal() == -1)
        tty = 0;
    for (long i = 0; count <= 0 || i < count; i++) {
        char *text = NULL;
        rc = th_client_stats(c, pool, TH_STATS_TEXT, &text);
        if (rc < 0)
            break;
        if (resized) {
            resized = 0;
            put("\033[2J");
        }
        draw(sock, text, tty);
        free(text);
        if ((count > 0 && i + 1 == count) || got_signal)
            break;
        if (wait_key(ms, tty) || got_signal)
            break;
    }
    restore();
    return rc;
}
