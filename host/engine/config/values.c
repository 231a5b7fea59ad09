/* values.c - parsers for the values a config key can hold; see values.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "account.h"
#include "values.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../config.h"
#include "taskhost.h"

/* Parses a size; see values.h. Refuses signs, fractions and overflow. */
int config_parse_size(const char *text, uint64_t *out)
{
    char *end;
    unsigned long long v;
    int shift = 0;

    if (text == NULL || !isdigit((unsigned char)text[0]))
        return TH_EINVAL;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0)
        return TH_EINVAL;
    const char *u = strchr("kmgt", tolower((unsigned char)*end));

    if (*end != '\0' && u != NULL) {
        shift = 10 * (int)(u - "kmgt" + 1);
        end++;
        if (tolower((unsigned char)end[0]) == 'i' &&
            tolower((unsigned char)end[1]) == 'b')
            end += 2;
    }
    if (tolower((unsigned char)*end) == 'b')
        end++;
    if (*end != '\0' || (shift > 0 && v > (UINT64_MAX >> shift)))
        return TH_EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

/* Returns the number of seconds in one `unit`, or 0 for an unknown unit. */
static double unit_seconds(const char *unit)
{
    if (*unit == '\0' || strcmp(unit, "s") == 0)
        return 1;
    if (strcmp(unit, "ms") == 0)
        return 0.001;
    if (strcmp(unit, "us") == 0)
        return 0.000001;
    if (strcmp(unit, "m") == 0 || strcmp(unit, "min") == 0)
        return 60;
    if (strcmp(unit, "h") == 0)
        return 3600;
    return 0;
}

/* Parses a duration in seconds; see values.h. */
int config_parse_duration(const char *text, double *out)
{
    char *end;
    double v, unit;

    if (text == NULL || !(isdigit((unsigned char)text[0]) || text[0] == '.'))
        return TH_EINVAL;
    errno = 0;
    v = strtod(text, &end);
    if (errno != 0 || end == text)
        return TH_EINVAL;
    while (*end == ' ')
        end++;
    unit = unit_seconds(end);
    if (unit == 0 || !isfinite(v * unit))
        return TH_EINVAL;
    *out = v * unit;
    return 0;
}

static const char *const overflow_names[] = {
    [OVERFLOW_REJECT] = "reject",
    [OVERFLOW_DROP_OLDEST] = "drop-oldest",
    [OVERFLOW_BLOCK] = "block",
};

/* Parses an overflow mode name; returns the enum or -1. */
int config_parse_overflow(const char *text)
{
    if (text == NULL)
        return -1;
    for (int i = 0; i <= OVERFLOW_BLOCK; i++) {
        if (strcmp(text, overflow_names[i]) == 0)
            return i;
    }
    return -1;
}

/* The name of an overflow mode, or NULL. */
const char *config_overflow_name(int mode)
{
    return mode >= 0 && mode <= OVERFLOW_BLOCK ? overflow_names[mode] : NULL;
}

/* Parses a log level name; returns TH_LOG_* or -1. */
int config_parse_log_level(const char *text)
{
    if (text == NULL)
        return -1;
    if (strcmp(text, "error") == 0)
        return TH_LOG_ERROR;
    if (strcmp(text, "warn") == 0 || strcmp(text, "warning") == 0)
        return TH_LOG_WARN;
    if (strcmp(text, "info") == 0)
        return TH_LOG_INFO;
    if (strcmp(text, "debug") == 0)
        return TH_LOG_DEBUG;
    return -1;
}

/* Parses up to 4 octal digits into a mode <= 0777; see values.h. */
int config_parse_mode(const char *t, unsigned *mode)
{
    size_t n = strlen(t);
    unsigned long v;

    if (n == 0 || n > 4 || strspn(t, "01234567") != n)
        return TH_EINVAL;
    v = strtoul(t, NULL, 8);
    if (v > 0777)
        return TH_EINVAL;
    *mode = (unsigned)v;
    return 0;
}

/* Plugin and pool names appear in logs, stats and the protocol. */
int config_valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > CONFIG_NAME_MAX)
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789_.-") == n;
}

/* Looks up a user or group name, or a string of digits; see values.h. */
int config_lookup_id(const char *name, int is_group, unsigned *id)
{
    unsigned gid;

    if (is_group)
        return account_group(name, id) == 0 ? 0 : TH_EINVAL;
    return account_user(name, id, &gid) == 0 ? 0 : TH_EINVAL;
}

/* Returns `p` made absolute against `dir`; see values.h. */
char *config_resolve_path(const char *dir, const char *p)
{
    char *abs = NULL;

    if (p[0] == '/')
        return strdup(p);
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    if (asprintf(&abs, "%s/%s", dir, p) < 0)
        return NULL;
    return abs;
}

/* The ids of a pool's user and group; see values.h. */
int config_account_ids(const char *user, const char *group, int *uid,
                       int *gid)
{
    unsigned id, primary;

    *uid = *gid = -1;
    if (user != NULL) {
        if (account_user(user, &id, &primary) != 0)
            return TH_ENOENT;
        *uid = (int)id;
        *gid = (int)primary;
    }
    if (group != NULL) {
        if (account_group(group, &id) != 0)
            return TH_ENOENT;
        *gid = (int)id;
    }
    return 0;
}

/* Formats a byte count the way a user would write it ("256M"). */
void config_format_size(uint64_t v, char *buf, size_t n)
{
    static const char units[] = "KMGT";
    int u = -1;

    while (v != 0 && v % 1024 == 0 && u < 3) {
        v /= 1024;
        u++;
    }
    if (u < 0)
        snprintf(buf, n, "%llu", (unsigned long long)v);
    else
        snprintf(buf, n, "%llu%c", (unsigned long long)v, units[u]);
}
