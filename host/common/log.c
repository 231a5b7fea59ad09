/* log.c - the log of every process (common layer): stderr, syslog or a
 * file, with levels.
 *
 * One process-wide sink. A spawner is handed the host's (log_kind(),
 * log_file_fd()); workers inherit their spawner's through fork and tag
 * their lines with their pool and pid; a file sink is opened O_APPEND so lines
 * from the host and its workers interleave whole.
 *
 * When stderr is systemd's journal ($JOURNAL_STREAM names its device and
 * inode), lines carry a "<N>" syslog priority prefix instead of our own
 * time and level, so that `journalctl -p err` selects exactly the errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "taskhost.h"

enum sink { SINK_STDERR, SINK_SYSLOG, SINK_FILE };

static int log_sink = SINK_STDERR;
static int log_fd = 2;
static int log_lvl = TH_LOG_INFO;
static const char *log_tag;
static char log_path[4096];
static char log_last[512];
static int log_journal = -1; /* stderr is the journal: 1, no: 0, unknown */

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int log_open(const char *target, int level, char *err, size_t errlen)
{
    log_close();
    log_lvl = level;
    log_journal = -1;
    if (target == NULL || strcmp(target, "stderr") == 0)
        return 0;
    if (strcmp(target, "syslog") == 0) {
        openlog("taskhostd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        log_sink = SINK_SYSLOG;
        return 0;
    }
    int fd = open_file(target);
    if (fd == -1) {
        snprintf(err, errlen, "%s: cannot open log file: %s", target,
                 strerror(errno));
        return TH_EIO;
    }
    snprintf(log_path, sizeof log_path, "%s", target);
    log_fd = fd;
    log_sink = SINK_FILE;
    return 0;
}

int log_reopen(void)
{
    if (log_sink != SINK_FILE)
        return 0;
    int fd = open_file(log_path);
    if (fd == -1) {
        log_error("cannot reopen log file %s: %s", log_path, strerror(errno));
        return TH_EIO;
    }
    /* dup2 keeps the descriptor number, which workers inherited. */
    if (dup2(fd, log_fd) == -1) {
        close(fd);
        return TH_EIO;
    }
    close(fd);
    return 0;
}

void log_set_level(int level)
{
    log_lvl = level;
}

int log_level(void)
{
    return log_lvl;
}

void log_set_tag(const char *tag)
{
    log_tag = tag;
}

int log_file_fd(void)
{
    return log_sink == SINK_FILE ? log_fd : -1;
}

void log_move_fd(int fd)
{
    if (log_sink != SINK_FILE || log_fd == fd)
        return;
    if (dup2(log_fd, fd) == -1)
        return;
    close(log_fd);
    log_fd = fd;
}

int log_kind(void)
{
    return log_sink;
}

void log_inherit(int kind, int fd, int level)
{
    log_lvl = level;
    if (kind == SINK_SYSLOG) {
        openlog("taskhostd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
        log_sink = SINK_SYSLOG;
    } else if (kind == SINK_FILE && fd >= 0) {
        log_sink = SINK_FILE;
        log_fd = fd;
    }
}

const char *log_last_error(void)
{
    return log_last;
}

void log_close(void)
{
    if (log_sink == SINK_FILE && log_fd > 2)
        close(log_fd);
    if (log_sink == SINK_SYSLOG)
        closelog();
    log_sink = SINK_STDERR;
    log_fd = 2;
}

/* Copies text into out (room for len bytes with the terminator),
 * showing what could forge or garble a log line: a backslash as "\\",
 * newline, carriage return and tab as "\n", "\r", "\t", and every other
 * control byte (ESC, DEL, ...) as "\xHH". Stops before an escape that
 * would not fit. Returns the length written. */
size_t log_escape(char *out, size_t len, const char *text)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    if (len == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        char esc[5];
        size_t k = 0;
        if (*p == '\\' || *p == '\n' || *p == '\r' || *p == '\t') {
            esc[k++] = '\\';
            esc[k++] = *p == '\n' ? 'n' : *p == '\r' ? 'r'
                     : *p == '\t' ? 't' : '\\';
        } else if (*p < 0x20 || *p == 0x7f) {
            esc[k++] = '\\';
            esc[k++] = 'x';
            esc[k++] = hex[*p >> 4];
            esc[k++] = hex[*p & 15];
        } else {
            esc[k++] = (char)*p;
        }
        if (n + k >= len)
            break;
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n] = '\0';
    return n;
}

/* Whether fd 2 is the stream systemd's journal gave us: $JOURNAL_STREAM
 * is "DEVICE:INODE" of it, and stays set in children whose stderr went
 * elsewhere, hence the comparison. */
static int stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char end;

    if (e == NULL || sscanf(e, "%llu:%llu%c", &dev, &ino, &end) != 2)
        return 0;
    if (fstat(2, &st) == -1)
        return 0;
    return (unsigned long long)st.st_dev == dev &&
           (unsigned long long)st.st_ino == ino;
}

/* Formats "[tag pid] " into buf; returns its length. */
static int format_origin(char *buf, size_t len)
{
    if (log_tag != NULL)
        return snprintf(buf, len, "[%s %d] ", log_tag, (int)getpid());
    return snprintf(buf, len, "[%d] ", (int)getpid());
}

static int format_time(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
    return (int)n + snprintf(buf + n, len - n, ".%03ld ",
                             ts.tv_nsec / 1000000);
}

void log_vmsg(int level, const char *fmt, va_list ap)
{
    if (level > log_lvl)
        return;
    if (level < TH_LOG_ERROR)
        level = TH_LOG_ERROR;
    if (level > TH_LOG_DEBUG)
        level = TH_LOG_DEBUG;
    char line[2048];
    size_t n = 0;
    if (log_sink == SINK_STDERR && log_journal < 0)
        log_journal = stderr_is_journal();
    if (log_sink == SINK_STDERR && log_journal) {
        n += (size_t)snprintf(line, sizeof line, "<%d>", syslog_prio[level]);
    } else if (log_sink != SINK_SYSLOG) {
        n += (size_t)format_time(line, sizeof line);
        n += (size_t)snprintf(line + n, sizeof line - n, "%-5s ",
                              level_names[level]);
    }
    n += (size_t)format_origin(line + n, sizeof line - n);
    char raw[2048];
    if (vsnprintf(raw, sizeof raw, fmt, ap) < 0)
        raw[0] = '\0';
    size_t m = log_escape(line + n, sizeof line - n - 1, raw);
    if (level <= TH_LOG_WARN)
        snprintf(log_last, sizeof log_last, "%s", line + n);
    n += m;
    if (log_sink == SINK_SYSLOG) {
        syslog(syslog_prio[level], "%.*s", (int)n, line);
        return;
    }
    line[n++] = '\n';
    /* One write per line, so concurrent writers do not interleave. */
    ssize_t w = write(log_fd, line, n);
    (void)w;
}

void log_msg(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

TH_EXPORT void th_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}
