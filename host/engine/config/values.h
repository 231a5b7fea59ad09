/* values.h - parsers for the values a config key can hold.
 *
 * Text in, a C value out: sizes, durations, modes, names and accounts.
 * Nothing here knows about keys or files (config/schema.c and
 * config/load.c do); each parser returns 0 or TH_EINVAL and leaves its
 * output untouched on failure, so the loader can name the key and line.
 */
#ifndef TH_CONFIG_VALUES_H
#define TH_CONFIG_VALUES_H

#include <stddef.h>
#include <stdint.h>

/* Longest pool or plugin name. */
#define CONFIG_NAME_MAX 64

/* Parses a size: an integer number of bytes, or a string of digits with an
 * optional K, M, G or T suffix (powers of 1024, "B"/"iB" allowed after,
 * case-insensitive): "64K", "256M", "2G". Returns 0 or TH_EINVAL. */
int config_parse_size(const char *text, uint64_t *out);

/* Parses a duration in seconds: "1.5", or with a unit "250ms", "30s", "5m",
 * "1h". Returns 0 or TH_EINVAL (negative, NaN, garbage). */
int config_parse_duration(const char *text, double *out);

/* Parses an overflow mode name; returns the enum overflow or -1. */
int config_parse_overflow(const char *text);

/* The name of overflow mode `mode` ("reject"...), or NULL. */
const char *config_overflow_name(int mode);

/* Parses a log level name ("error", "warn", "info", "debug") or -1. */
int config_parse_log_level(const char *text);

/* Parses up to 4 octal digits ("0660") into a mode <= 0777. Returns 0 or
 * TH_EINVAL. */
int config_parse_mode(const char *text, unsigned *mode);

/* Non-zero when `s` is a valid pool or plugin name: 1 to CONFIG_NAME_MAX
 * letters, digits, '_', '.' or '-' (names appear in logs, stats and the
 * protocol). */
int config_valid_name(const char *s);

/* Looks up a user (is_group 0) or group name, or a string of decimal
 * digits taken as the id itself. Returns 0 and the id, or TH_EINVAL. */
int config_lookup_id(const char *name, int is_group, unsigned *id);

/* The ids a pool's `user` and `group` keys name (NULL: none), for a
 * process about to switch to them: a user brings its primary group (a uid
 * without a passwd entry, the gid of the same number), and a group
 * overrides it. Sets -1 for what is not named. Returns 0, or TH_ENOENT
 * when a name does not exist (any more). */
int config_account_ids(const char *user, const char *group, int *uid,
                       int *gid);

/* Returns `path` made absolute against the directory `dir` (a malloc'd
 * copy either way), or NULL when out of memory. */
char *config_resolve_path(const char *dir, const char *path);

/* Formats a byte count the way a user would write it ("256M") into buf. */
void config_format_size(uint64_t v, char *buf, size_t n);

#endif /* TH_CONFIG_VALUES_H */
