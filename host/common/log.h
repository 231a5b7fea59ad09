/* log.h - the host's log: stderr, syslog or a file, with levels.
 *
 * Lines look like
 *   2026-11-23 05:40:01.123 info  [default 4242] worker started
 * The tag (pool name) and pid are set in each worker after fork, so that
 * th_log() from a plugin is tagged with its pool and pid.
 */
#ifndef TH_LOG_H
#define TH_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "taskhost.h"

/* Sends the log to `target`: "stderr", "syslog" or a file path (appended
 * to, created 0640). Returns 0 or TH_EIO with the reason in err. */
int log_open(const char *target, int level, char *err, size_t errlen);

/* Reopens the log file (after rotation). No-op for stderr and syslog. */
int log_reopen(void);

/* Sets the level below which messages are dropped. */
void log_set_level(int level);

/* Returns the current level. */
int log_level(void);

/* Sets the tag printed with each line (the pool, in a worker); NULL: none.
 * The string must outlive its use (the worker's pool name does). */
void log_set_tag(const char *tag);

/* The fd of the log file, or -1 when the log is not a file. */
int log_file_fd(void);

/* Moves the log file to descriptor `fd` (dup2): a worker does this before
 * closing every other descriptor. No-op when the log is not a file. */
void log_move_fd(int fd);

/* The text of the last error or warning logged by this process (without
 * prefix), or "" : a worker sends it when its plugin's init() fails. */
const char *log_last_error(void);

/* The sink in use (0 stderr, 1 syslog, 2 file): what a process started
 * with exec needs, with the file's descriptor, to log to the same place. */
int log_kind(void);

/* Logs to the sink `kind` of another process: the file already open as
 * fd, syslog, or stderr; at `level`. */
void log_inherit(int kind, int fd, int level);

/* Closes the file or syslog; stderr stays. */
void log_close(void);

/* Logs one line at `level` (TH_LOG_*). */
void log_msg(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *fmt, va_list ap);

/* Copies text into out (len bytes with the terminator) with backslash
 * and control bytes escaped ("\\", "\n", "\x1b"), so that a message,
 * whatever a plugin or a client put in it, is one line that cannot pass
 * for another or drive a terminal. Returns the length written. */
size_t log_escape(char *out, size_t len, const char *text);

#define log_error(...) log_msg(TH_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(TH_LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(TH_LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(TH_LOG_DEBUG, __VA_ARGS__)

#endif /* TH_LOG_H */
