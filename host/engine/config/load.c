/* load.c - the configuration file: reading it and storing its keys.
 *
 * The file is read through libconfig into a struct config that owns copies
 * of every value. Each group's keys come from a table (config/schema.h,
 * built from the key lists), so one loop per group finds unknown keys,
 * checks types and stores values through one getter per kind. Each fault
 * is reported once, where it is found, as "FILE:LINE: KEY: reason"; the
 * loader then unwinds and frees what it built.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "../config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include "schema.h"
#include "settings.h"
#include "taskhost.h"

#define KEY_MAX 256

/* ---- small helpers ---- */

static void vput_err(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err != NULL && errlen > 0)
        vsnprintf(err, errlen, fmt, ap);
}

static void put_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vput_err(err, errlen, fmt, ap);
    va_end(ap);
}

/* libconfig's CONFIG_TRUE/CONFIG_FALSE, converted here and nowhere else. */
static int lc_true(int v)
{
    return v != CONFIG_FALSE;
}

static int is_int(const config_setting_t *s)
{
    int t = config_setting_type(s);

    return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
}

static int is_string(const config_setting_t *s)
{
    return config_setting_type(s) == CONFIG_TYPE_STRING;
}

static const char *type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    default:
        return "nothing";
    }
}

/* Writes "prefix.name" (or just name) into key[KEY_MAX], marking a cut. */
static void make_key(char *key, const char *prefix, const char *name)
{
    int n =
        snprintf(key, KEY_MAX, "%s%s%s", prefix, prefix[0] ? "." : "", name);

    if (n < 0 || n >= KEY_MAX)
        memcpy(key + KEY_MAX - 4, "...", 4);
}

/* Returns the absolute directory of the file `path`, or NULL. Symbolic
 * links are not followed: paths are relative to the file as named. */
static char *absolute_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 0;
    char cwd[PATH_MAX];
    char *dir = NULL;

    if (slash == path)
        return strdup("/");
    if (path[0] == '/')
        return strndup(path, len);
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return NULL;
    if (slash == NULL || (len == 1 && path[0] == '.'))
        return strdup(cwd);
    if (asprintf(&dir, "%s/%.*s", cwd, (int)len, path) < 0)
        return NULL;
    return dir;
}

/* ---- the loader ---- */

/* Where each plugin and pool entry was read: parallel to the config's
 * plugins[] and pools[], so that the cross-checks made once every file is
 * read point at the right file and line. The libconfig trees they live in
 * stay alive until then. */
struct sources {
    const config_setting_t **plugins, **pools;
    config_t *trees; /* one per drop-in file read */
    size_t ntrees;
};

struct loader {
    const char *file; /* the file being read, as named in messages */
    const char *dir;  /* absolute directory of the main file */
    char *err;
    size_t errlen;
    struct sources *src;
};

/* A drop-in file adds plugins and pools; the host group is the main
 * file's alone. */
static const struct config_field dropin_fields[] = {
    {"plugins", K_PLUGINS, 0},
    {"pools", K_POOLS, 0},
    {NULL, K_NAME, 0},
};

static const char *file_of(const struct loader *ld, const config_setting_t *s)
{
    const char *f = s ? config_setting_source_file(s) : NULL;

    return f ? f : ld->file;
}

/* Copies `src` into dst[0..n) with control characters written as "\n",
 * "\t" or "\xNN": values from the file are quoted in messages, which must
 * stay one line. */
static void copy_escaped(char *dst, size_t n, const char *src)
{
    size_t j = 0;

    for (; *src != '\0' && j + 1 < n; src++) {
        unsigned char ch = (unsigned char)*src;
        char esc[8];
        size_t k;

        if (ch >= 0x20 && ch != 0x7f) {
            dst[j++] = (char)ch;
            continue;
        }
        if (ch == '\n' || ch == '\t')
            snprintf(esc, sizeof esc, "\\%c", ch == '\n' ? 'n' : 't');
        else
            snprintf(esc, sizeof esc, "\\x%02x", ch);
        k = strlen(esc);
        if (j + k + 1 > n)
            break;
        memcpy(dst + j, esc, k);
        j += k;
    }
    dst[j] = '\0';
}

/* Writes "FILE:LINE: KEY: reason" about setting `s`; returns TH_ECONFIG. */
static int fault(const struct loader *ld, const config_setting_t *s,
                 const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fault(const struct loader *ld, const config_setting_t *s,
                 const char *key, const char *fmt, ...)
{
    va_list ap;
    unsigned line = s ? config_setting_source_line(s) : 0;
    char why[512];
    int n;

    if (ld->err == NULL || ld->errlen == 0)
        return TH_ECONFIG;
    n = snprintf(ld->err, ld->errlen, "%s:%u: %s: ", file_of(ld, s), line, key);
    if (n < 0 || (size_t)n >= ld->errlen)
        return TH_ECONFIG;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    copy_escaped(ld->err + n, ld->errlen - (size_t)n, why);
    return TH_ECONFIG;
}

static int oom(const struct loader *ld)
{
    put_err(ld->err, ld->errlen, "%s: out of memory", ld->file);
    return TH_ENOMEM;
}

static int wrong_type(const struct loader *ld, const config_setting_t *s,
                      const char *key, const char *want)
{
    return fault(ld, s, key, "must be %s (got %s)", want, type_name(s));
}

/* Replaces *dst by a copy of `v` (NULL `v`: by NULL). */
static int set_string(const struct loader *ld, char **dst, const char *v)
{
    char *copy = NULL;

    if (v != NULL && (copy = strdup(v)) == NULL)
        return oom(ld);
    free(*dst);
    *dst = copy;
    return 0;
}

/* Makes room for `more` zeroed elements of `size` bytes after the `n` of
 * the array *v. Returns 0 or TH_ENOMEM (the array is left as it was). */
static int grow(void **v, size_t n, size_t more, size_t size)
{
    char *nv;

    if (more > (SIZE_MAX / size) - n - 1)
        return TH_ENOMEM;
    nv = realloc(*v, (n + more + 1) * size);
    if (nv == NULL)
        return TH_ENOMEM;
    memset(nv + n * size, 0, (more + 1) * size);
    *v = nv;
    return 0;
}

/* ---- getters, one per kind of value; each stores through `dst` ---- */

static int get_i64(const struct loader *ld, const config_setting_t *s,
                   const char *key, long long lo, long long hi, long long *out)
{
    long long v;

    if (!is_int(s))
        return wrong_type(ld, s, key, "an integer");
    v = config_setting_get_int64(s);
    if (v < lo || v > hi)
        return fault(ld, s, key, "out of range (%lld)", v);
    *out = v;
    return 0;
}

static int get_int(const struct loader *ld, const config_setting_t *s,
                   const char *key, void *dst)
{
    long long v = 0;
    int rc = get_i64(ld, s, key, INT_MIN, INT_MAX, &v);

    if (rc == 0)
        *(int *)dst = (int)v;
    return rc;
}

static int get_long(const struct loader *ld, const config_setting_t *s,
                    const char *key, void *dst)
{
    long long v = 0;
    int rc = get_i64(ld, s, key, LONG_MIN, LONG_MAX, &v);

    if (rc == 0)
        *(long *)dst = (long)v;
    return rc;
}

static int get_bool(const struct loader *ld, const config_setting_t *s,
                    const char *key, void *dst)
{
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return wrong_type(ld, s, key, "true or false");
    *(int *)dst = lc_true(config_setting_get_bool(s));
    return 0;
}

/* Durations: seconds as an integer or a float, or a string with a unit. */
static int get_duration(const struct loader *ld, const config_setting_t *s,
                        const char *key, void *dst)
{
    double v;

    if (is_int(s)) {
        v = (double)config_setting_get_int64(s);
    } else if (config_setting_type(s) == CONFIG_TYPE_FLOAT) {
        v = config_setting_get_float(s);
    } else if (is_string(s)) {
        const char *t = config_setting_get_string(s);

        if (config_parse_duration(t, &v) != 0)
            return fault(ld, s, key,
                         "not a duration: \"%s\" (use seconds, or a string "
                         "like \"50us\", \"250ms\", \"30s\", \"5m\", \"1h\")",
                         t);
    } else {
        return wrong_type(ld, s, key, "a duration in seconds");
    }
    if (!isfinite(v) || v < 0)
        return fault(ld, s, key, "must be >= 0 seconds (got %g)", v);
    *(double *)dst = v;
    return 0;
}

/* Sizes: bytes as an integer, or a string like "256M". (libconfig 1.5
 * silently wraps a plain integer above 2^31-1 unless it ends in L, so the
 * messages steer users to strings.) */
static int get_size(const struct loader *ld, const config_setting_t *s,
                    const char *key, void *dst)
{
    const char *t;

    if (is_int(s)) {
        long long v = config_setting_get_int64(s);

        if (v < 0)
            return fault(ld, s, key, "must be >= 0 bytes (got %lld)", v);
        *(uint64_t *)dst = (uint64_t)v;
        return 0;
    }
    if (!is_string(s))
        return wrong_type(ld, s, key, "a size in bytes");
    t = config_setting_get_string(s);
    if (config_parse_size(t, dst) != 0)
        return fault(ld, s, key,
                     "not a size: \"%s\" (use bytes, or a string like "
                     "\"64K\", \"256M\", \"2G\")",
                     t);
    return 0;
}

static int get_string(const struct loader *ld, const config_setting_t *s,
                      const char *key, void *dst)
{
    if (!is_string(s))
        return wrong_type(ld, s, key, "a string");
    return set_string(ld, dst, config_setting_get_string(s));
}

static int get_name(const struct loader *ld, const config_setting_t *s,
                    const char *key, void *dst)
{
    if (!is_string(s))
        return wrong_type(ld, s, key, "a string");
    if (!config_valid_name(config_setting_get_string(s)))
        return fault(ld, s, key,
                     "must be 1 to %d letters, digits, '_', '.' or '-' "
                     "(got \"%s\")",
                     CONFIG_NAME_MAX, config_setting_get_string(s));
    return set_string(ld, dst, config_setting_get_string(s));
}

/* Paths: relative ones are resolved against the config's directory. */
static int get_path(const struct loader *ld, const config_setting_t *s,
                    const char *key, void *dst)
{
    const char *t;
    char *abs;

    if (!is_string(s))
        return wrong_type(ld, s, key, "a path");
    t = config_setting_get_string(s);
    if (t[0] == '\0')
        return fault(ld, s, key, "must not be empty");
    abs = config_resolve_path(ld->dir, t);
    if (abs == NULL)
        return oom(ld);
    free(*(char **)dst);
    *(char **)dst = abs;
    return 0;
}

/* host.log: "stderr", "syslog", or a file path. */
static int get_log(const struct loader *ld, const config_setting_t *s,
                   const char *key, void *dst)
{
    if (is_string(s) && (strcmp(config_setting_get_string(s), "stderr") == 0 ||
                         strcmp(config_setting_get_string(s), "syslog") == 0))
        return set_string(ld, dst, config_setting_get_string(s));
    return get_path(ld, s, key, dst);
}

static int get_level(const struct loader *ld, const config_setting_t *s,
                     const char *key, void *dst)
{
    int v;

    if (!is_string(s))
        return wrong_type(ld, s, key, "a string");
    v = config_parse_log_level(config_setting_get_string(s));
    if (v < 0)
        return fault(ld, s, key,
                     "must be \"error\", \"warn\", \"info\" or \"debug\" "
                     "(got \"%s\")",
                     config_setting_get_string(s));
    *(int *)dst = v;
    return 0;
}

static int get_overflow(const struct loader *ld, const config_setting_t *s,
                        const char *key, void *dst)
{
    int v;

    if (!is_string(s))
        return wrong_type(ld, s, key, "a string");
    v = config_parse_overflow(config_setting_get_string(s));
    if (v < 0)
        return fault(ld, s, key,
                     "must be \"reject\", \"drop-oldest\" or \"block\" "
                     "(got \"%s\")",
                     config_setting_get_string(s));
    *(int *)dst = v;
    return 0;
}

/* socket_mode: a string of octal digits ("0660"). libconfig reads the
 * integer 0660 as decimal 660, so a decimal integer is taken as the digits
 * the user typed; a hexadecimal one as its value. */
static int get_mode(const struct loader *ld, const config_setting_t *s,
                    const char *key, void *dst)
{
    char digits[32];
    const char *t;

    if (is_int(s) && config_setting_get_format(s) == CONFIG_FORMAT_HEX &&
        config_setting_get_int64(s) >= 0) {
        snprintf(digits, sizeof(digits), "%llo",
                 (unsigned long long)config_setting_get_int64(s));
        t = digits;
    } else if (is_int(s)) {
        snprintf(digits, sizeof(digits), "%lld", config_setting_get_int64(s));
        t = digits;
    } else if (is_string(s)) {
        t = config_setting_get_string(s);
    } else {
        return wrong_type(ld, s, key, "an octal mode string like \"0660\"");
    }
    if (config_parse_mode(t, dst) != 0)
        return fault(ld, s, key,
                     "not an octal mode <= 0777: \"%s\" (write it like "
                     "\"0660\")",
                     t);
    return 0;
}

/* One user or group, as a name or a numeric id, into *id. */
static int get_one_id(const struct loader *ld, const config_setting_t *s,
                      const char *key, int is_group, unsigned *id)
{
    const char *what = is_group ? "group" : "user";

    if (is_int(s)) {
        long long v = config_setting_get_int64(s);

        if (v < 0 || v >= UINT_MAX)
            return fault(ld, s, key, "not a valid %s id (%lld)", what, v);
        *id = (unsigned)v;
        return 0;
    }
    if (!is_string(s))
        return fault(ld, s, key, "must be a %s name or id (got %s)", what,
                     type_name(s));
    if (config_lookup_id(config_setting_get_string(s), is_group, id) != 0)
        return fault(ld, s, key, "unknown %s \"%s\"", what,
                     config_setting_get_string(s));
    return 0;
}

/* pool.user / pool.group / host.socket_group: checked to exist now, kept
 * as the string given (an integer id is kept as its decimal text). */
static int get_account(const struct loader *ld, const config_setting_t *s,
                       const char *key, int is_group, void *dst)
{
    char text[32];
    unsigned id;
    int rc = get_one_id(ld, s, key, is_group, &id);

    if (rc != 0)
        return rc;
    if (is_string(s))
        return set_string(ld, dst, config_setting_get_string(s));
    snprintf(text, sizeof(text), "%u", id);
    return set_string(ld, dst, text);
}

/* submit_users & co: a list or array of names or ids (or just one). */
static int get_ids(const struct loader *ld, const config_setting_t *s,
                   const char *key, int is_group, struct id_list *out)
{
    int n = config_setting_is_aggregate(s) ? config_setting_length(s) : 1;
    unsigned *ids;
    char ekey[KEY_MAX + 16];

    if (config_setting_is_group(s))
        return wrong_type(ld, s, key, "a list of names or ids");
    ids = calloc(n > 0 ? (size_t)n : 1, sizeof(*ids));
    if (ids == NULL)
        return oom(ld);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e =
            config_setting_is_aggregate(s) ? config_setting_get_elem(s, i) : s;
        int rc;

        snprintf(ekey, sizeof(ekey), "%s[%d]", key, i);
        rc = get_one_id(ld, e, config_setting_is_aggregate(s) ? ekey : key,
                        is_group, &ids[i]);
        if (rc != 0) {
            free(ids);
            return rc;
        }
    }
    free(out->ids);
    out->ids = ids;
    out->n = (size_t)n;
    return 0;
}

static int get_settings(const struct loader *ld, const config_setting_t *s,
                        const char *key, void *dst)
{
    const struct config_setting_t *bad = NULL;
    struct th_settings *set;
    char why[KEY_MAX + 128];
    int rc;

    if (!config_setting_is_group(s))
        return wrong_type(ld, s, key, "a group");
    rc = settings_from_config_at(s, &set, &bad, why, sizeof(why));
    if (rc == TH_ENOMEM)
        return oom(ld);
    if (rc != 0) {
        put_err(ld->err, ld->errlen, "%s:%u: %s.%s", file_of(ld, bad),
                config_setting_source_line(bad), key, why);
        return rc;
    }
    settings_free(*(struct th_settings **)dst);
    *(struct th_settings **)dst = set;
    return 0;
}

/* Levenshtein distance of two short strings (longer ones count as far). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[KEY_MAX];

    if (la >= KEY_MAX || lb >= KEY_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);

            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static int unknown_key(const struct loader *ld, const config_setting_t *s,
                       const char *key, const struct config_field *fields)
{
    const char *best = NULL;
    size_t best_d = 3; /* suggest only near misses */

    for (; fields->name != NULL; fields++) {
        size_t d = edit_distance(config_setting_name(s), fields->name);

        if (d < best_d) {
            best_d = d;
            best = fields->name;
        }
    }
    if (best != NULL)
        return fault(ld, s, key, "unknown key (did you mean \"%s\"?)", best);
    return fault(ld, s, key, "unknown key");
}

static int load_host(const struct loader *ld, const config_setting_t *s,
                     const char *key, struct host_cfg *host);
static int load_http(const struct loader *ld, const config_setting_t *s,
                     const char *key, struct http_cfg *http);
static int load_cluster(const struct loader *ld, const config_setting_t *s,
                        const char *key, struct cluster_cfg *c);
static int load_plugins(const struct loader *ld, const config_setting_t *s,
                        const char *key, struct config *cfg);
static int load_pools(const struct loader *ld, const config_setting_t *s,
                      const char *key, struct config *cfg);

static int set_field(const struct loader *ld, const config_setting_t *s,
                     const char *key, const struct config_field *f, void *base)
{
    void *dst = (char *)base + f->off;

    switch (f->kind) {
    case K_NAME:
        return get_name(ld, s, key, dst);
    case K_STRING:
        return get_string(ld, s, key, dst);
    case K_INT:
        return get_int(ld, s, key, dst);
    case K_LONG:
        return get_long(ld, s, key, dst);
    case K_BOOL:
        return get_bool(ld, s, key, dst);
    case K_DURATION:
        return get_duration(ld, s, key, dst);
    case K_SIZE:
        return get_size(ld, s, key, dst);
    case K_PATH:
        return get_path(ld, s, key, dst);
    case K_LOG:
        return get_log(ld, s, key, dst);
    case K_LEVEL:
        return get_level(ld, s, key, dst);
    case K_MODE:
        return get_mode(ld, s, key, dst);
    case K_OVERFLOW:
        return get_overflow(ld, s, key, dst);
    case K_USER:
        return get_account(ld, s, key, 0, dst);
    case K_GROUP:
        return get_account(ld, s, key, 1, dst);
    case K_UIDS:
        return get_ids(ld, s, key, 0, dst);
    case K_GIDS:
        return get_ids(ld, s, key, 1, dst);
    case K_SETTINGS:
        return get_settings(ld, s, key, dst);
    case K_HOST:
        return load_host(ld, s, key, dst);
    case K_HTTP:
        return load_http(ld, s, key, dst);
    case K_CLUSTER:
        return load_cluster(ld, s, key, dst);
    case K_PLUGINS:
        return load_plugins(ld, s, key, base);
    case K_POOLS:
        return load_pools(ld, s, key, base);
    }
    return TH_EINVAL;
}

/* Stores every member of `group` through `fields` into `base`. `prefix`
 * names the group in messages ("" for the root). */
static int load_group(const struct loader *ld, const config_setting_t *group,
                      const char *prefix, const struct config_field *fields,
                      void *base)
{
    int n = config_setting_length(group);
    char key[KEY_MAX];

    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, i);
        const struct config_field *f =
            config_field_find(fields, config_setting_name(s));
        int rc;

        make_key(key, prefix, config_setting_name(s));
        if (f == NULL && fields == dropin_fields)
            return fault(ld, s, key, "not allowed in a drop-in file (only "
                         "plugins and pools; the host group belongs in the "
                         "main file)");
        if (f == NULL)
            return unknown_key(ld, s, key, fields);
        rc = set_field(ld, s, key, f, base);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The member `name` of `group` if present, else `group`: the setting whose
 * line a message about `name` should carry. */
static const config_setting_t *member_or(const config_setting_t *group,
                                         const char *name)
{
    const config_setting_t *m = config_setting_get_member(group, name);

    return m ? m : group;
}

static int missing(const struct loader *ld, const config_setting_t *group,
                   const char *prefix, const char *name)
{
    char key[KEY_MAX];

    make_key(key, prefix, name);
    return fault(ld, group, key, "missing (required)");
}

/* ---- host ---- */

static int load_host(const struct loader *ld, const config_setting_t *s,
                     const char *key, struct host_cfg *host)
{
    size_t max_socket = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    int rc;

    if (!config_setting_is_group(s))
        return wrong_type(ld, s, key, "a group");
    rc = load_group(ld, s, key, config_host_fields, host);
    if (rc != 0)
        return rc;
    if (strlen(host->socket) > max_socket)
        return fault(ld, member_or(s, "socket"), "host.socket",
                     "too long for a unix socket (%zu > %zu bytes): %s",
                     strlen(host->socket), max_socket, host->socket);
    if (host->max_payload == 0)
        return fault(ld, member_or(s, "max_payload"), "host.max_payload",
                     "must be > 0");
    return 0;
}

/* ---- http ---- */

static int parse_port(const char *t, unsigned short *port)
{
    char *end;
    long v;

    if (!isdigit((unsigned char)*t))
        return -1;
    errno = 0;
    v = strtol(t, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *port = (unsigned short)v;
    return 0;
}

/* "127.0.0.1:9464", "[::1]:9464" or "localhost:9464" into h->addr;
 * port 0 lets the kernel choose. Returns 0 or -1. */
static int parse_inet(const char *t, struct http_cfg *h)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(t, ':');
    size_t n = colon ? (size_t)(colon - t) : 0;
    unsigned short port;

    if (colon == NULL || n == 0 || n >= sizeof host ||
        parse_port(colon + 1, &port) < 0)
        return -1;
    memcpy(host, t, n);
    host[n] = '\0';
    if (host[0] == '[' && host[n - 1] == ']') {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&h->addr;
        host[n - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
            return -1;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        h->addrlen = sizeof *a;
        h->loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
                      (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) &&
                       a->sin6_addr.s6_addr[12] == 127);
        return 0;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)&h->addr;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return -1;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    h->addrlen = sizeof *a;
    h->loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    return 0;
}

/* http.listen: an address with a port, or a unix socket path (absolute,
 * or relative to the config file). */
static int check_listen(const struct loader *ld, const config_setting_t *s,
                        struct http_cfg *h)
{
    const char *t = h->listen;
    struct sockaddr_un *un = (struct sockaddr_un *)&h->addr;

    memset(&h->addr, 0, sizeof h->addr);
    if (t[0] != '/' && t[0] != '.' && strchr(t, ':') != NULL) {
        if (parse_inet(t, h) < 0)
            return fault(ld, s, "http.listen",
                         "not an address and port (\"127.0.0.1:9464\", "
                         "\"[::1]:9464\") nor a unix socket path: %s", t);
        return 0;
    }
    char *abs = config_resolve_path(ld->dir, t);
    if (abs == NULL)
        return oom(ld);
    if (strlen(abs) >= sizeof un->sun_path) {
        free(abs);
        return fault(ld, s, "http.listen",
                     "too long for a unix socket (%zu bytes at most): %s",
                     sizeof un->sun_path - 1, t);
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, abs, strlen(abs) + 1);
    h->addrlen = (socklen_t)sizeof *un;
    h->loopback = 1;
    free(abs);
    return 0;
}

/* Reads the token: the file's first line, without surrounding blanks. */
static int read_token(const struct loader *ld, const config_setting_t *s,
                      struct http_cfg *h)
{
    char buf[1024];
    FILE *f = fopen(h->auth_token_file, "re");
    size_t n;

    if (f == NULL)
        return fault(ld, s, "http.auth_token_file", "%s: %s",
                     h->auth_token_file, strerror(errno));
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    char *b = buf, *e = buf + strlen(buf);
    while (*b == ' ' || *b == '\t')
        b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    if (strlen(b) < 16)
        return fault(ld, s, "http.auth_token_file",
                     "%s: the token (its first line) must have 16 characters "
                     "at least", h->auth_token_file);
    return set_string(ld, &h->auth_token, b);
}

static int load_http(const struct loader *ld, const config_setting_t *s,
                     const char *key, struct http_cfg *h)
{
    int rc;

    if (!config_setting_is_group(s))
        return wrong_type(ld, s, key, "a group");
    rc = load_group(ld, s, key, config_http_fields, h);
    if (rc != 0)
        return rc;
    if (h->listen == NULL)
        return missing(ld, s, key, "listen");
    if (h->max_connections < 1 || h->max_connections > 10000)
        return fault(ld, member_or(s, "max_connections"),
                     "http.max_connections", "must be 1 to 10000 (got %d)",
                     h->max_connections);
    if (h->idle_timeout < 1)
        return fault(ld, member_or(s, "idle_timeout"), "http.idle_timeout",
                     "must be 1 s at least (got %g)", h->idle_timeout);
    rc = check_listen(ld, member_or(s, "listen"), h);
    if (rc == 0 && h->auth_token_file != NULL)
        rc = read_token(ld, member_or(s, "auth_token_file"), h);
    if (rc != 0)
        return rc;
    if (!h->loopback && h->auth_token == NULL)
        return fault(ld, member_or(s, "listen"), "http.listen",
                     "%s is not a loopback address: set "
                     "http.auth_token_file (a Bearer token), or listen on "
                     "127.0.0.1, [::1] or a unix socket path",
                     h->listen);
    return 0;
}

/* ---- plugins ---- */

static int check_plugin_file(const struct loader *ld, const config_setting_t *s,
                             const char *key, const char *path)
{
    struct stat st;

    if (stat(path, &st) == -1) {
        if (errno == ENOENT || errno == ENOTDIR)
            return fault(ld, s, key, "no such file: %s", path);
        return fault(ld, s, key, "%s: %s", strerror(errno), path);
    }
    if (!S_ISREG(st.st_mode))
        return fault(ld, s, key, "not a regular file: %s", path);
    return 0;
}

static int load_plugin(const struct loader *ld, const config_setting_t *g,
                       const char *prefix, struct config *cfg)
{
    struct plugin_cfg *p = &cfg->plugins[cfg->nplugins];
    char key[KEY_MAX];
    int rc;

    ld->src->plugins[cfg->nplugins++] = g;
    p->file = cfg->files[cfg->nfiles - 1];
    p->index = config_setting_index(g);
    if (!config_setting_is_group(g))
        return wrong_type(ld, g, prefix, "a group { name = ...; path = ...; }");
    rc = load_group(ld, g, prefix, config_plugin_fields, p);
    if (rc != 0)
        return rc;
    if (p->name == NULL)
        return missing(ld, g, prefix, "name");
    if (p->path == NULL)
        return missing(ld, g, prefix, "path");
    p->line = (int)config_setting_source_line(member_or(g, "path"));
    make_key(key, prefix, "name");
    for (size_t j = 0; j + 1 < cfg->nplugins; j++) {
        if (strcmp(cfg->plugins[j].name, p->name) == 0)
            return fault(ld, member_or(g, "name"), key,
                         "duplicate plugin name \"%s\" (also at %s:%d)",
                         p->name, cfg->plugins[j].file,
                         cfg->plugins[j].line);
    }
    make_key(key, prefix, "path");
    return check_plugin_file(ld, member_or(g, "path"), key, p->path);
}

static int load_plugins(const struct loader *ld, const config_setting_t *s,
                        const char *key, struct config *cfg)
{
    int n = config_setting_length(s);
    char prefix[KEY_MAX];

    if (!config_setting_is_list(s))
        return wrong_type(ld, s, key, "a list ( { name = ...; path = ...; } )");
    if (grow((void **)&cfg->plugins, cfg->nplugins, (size_t)n,
             sizeof(*cfg->plugins)) != 0 ||
        grow((void **)&ld->src->plugins, cfg->nplugins, (size_t)n,
             sizeof(*ld->src->plugins)) != 0)
        return oom(ld);
    for (int i = 0; i < n; i++) {
        int rc;

        snprintf(prefix, sizeof(prefix), "plugins[%d]", i);
        rc = load_plugin(ld, config_setting_get_elem(s, i), prefix, cfg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- pools ---- */

static int load_pool(const struct loader *ld, const config_setting_t *g,
                     const char *prefix, struct pool_cfg *p)
{
    const char *bad = NULL;
    char why[160], key[KEY_MAX];
    int rc;

    if (!config_setting_is_group(g))
        return wrong_type(ld, g, prefix, "a group { name = ...; ... }");
    p->line = (int)config_setting_source_line(g);
    p->index = config_setting_index(g);
    rc = load_group(ld, g, prefix, config_pool_fields, p);
    if (rc != 0)
        return rc;
    if (p->name == NULL)
        return missing(ld, g, prefix, "name");
    if (p->plugin == NULL)
        return missing(ld, g, prefix, "plugin");
    if (p->settings == NULL)
        return oom(ld);
    /* The CPU count is only a default: a larger min_workers raises it. */
    if (config_setting_get_member(g, "max_workers") == NULL &&
        p->min_workers > p->max_workers)
        p->max_workers = p->min_workers;
    if (pool_cfg_fault(p, &bad, why, sizeof(why)) == 0)
        return 0;
    make_key(key, prefix, bad);
    return fault(ld, member_or(g, bad), key, "%s", why);
}

/* Checks the names of pools[i] against the pools before it and the
 * plugins. */
static int link_pool(const struct loader *ld, const config_setting_t *g,
                     const char *prefix, const struct config *cfg, size_t i)
{
    const struct pool_cfg *p = &cfg->pools[i];
    char key[KEY_MAX];

    for (size_t j = 0; j < i; j++) {
        if (strcmp(cfg->pools[j].name, p->name) == 0) {
            make_key(key, prefix, "name");
            return fault(ld, member_or(g, "name"), key,
                         "duplicate pool name \"%s\" (also at %s:%d)",
                         p->name, cfg->pools[j].file, cfg->pools[j].line);
        }
    }
    for (size_t j = 0; j < cfg->nplugins; j++) {
        if (strcmp(cfg->plugins[j].name, p->plugin) == 0)
            return 0;
    }
    make_key(key, prefix, "plugin");
    return fault(ld, member_or(g, "plugin"), key,
                 "unknown plugin \"%s\" (not in plugins)", p->plugin);
}

static int load_pools(const struct loader *ld, const config_setting_t *s,
                      const char *key, struct config *cfg)
{
    int n = config_setting_length(s);
    char prefix[KEY_MAX];

    if (!config_setting_is_list(s))
        return wrong_type(ld, s, key, "a list ( { name = ...; ... } )");
    if (grow((void **)&cfg->pools, cfg->npools, (size_t)n,
             sizeof(*cfg->pools)) != 0 ||
        grow((void **)&ld->src->pools, cfg->npools, (size_t)n,
             sizeof(*ld->src->pools)) != 0)
        return oom(ld);
    for (int i = 0; i < n; i++) {
        struct pool_cfg *p = &cfg->pools[cfg->npools];
        int rc;

        snprintf(prefix, sizeof(prefix), "pools[%d]", i);
        pool_cfg_defaults(p);
        p->file = cfg->files[cfg->nfiles - 1];
        ld->src->pools[cfg->npools++] = config_setting_get_elem(s, i);
        rc = load_pool(ld, config_setting_get_elem(s, i), prefix, p);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- cluster ---- */

/* "unix:/absolute/path" or "host:port" (port 1..65535). */
static int valid_redis_address(const char *a)
{
    if (strncmp(a, "unix:", 5) == 0)
        return a[5] == '/' && strlen(a + 5) < 108;
    const char *colon = strrchr(a, ':');
    if (colon == NULL || colon == a)
        return 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return colon[1] != '\0' && *end == '\0' && port > 0 && port < 65536;
}

/* Reads the first line of the password file, which must not be readable
 * by others: the password then lives only in memory. */
static int read_password(const struct loader *ld, const config_setting_t *s,
                         struct cluster_cfg *c)
{
    struct stat st;
    char buf[512];
    FILE *f = fopen(c->password_file, "re");

    if (f == NULL)
        return fault(ld, s, "cluster.password_file", "%s: %s",
                     c->password_file, strerror(errno));
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0007) != 0) {
        fclose(f);
        return fault(ld, s, "cluster.password_file",
                     "%s is readable by others (mode %03o): chmod o-rwx it",
                     c->password_file, (unsigned)(st.st_mode & 0777));
    }
    if (fgets(buf, sizeof buf, f) == NULL)
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    if (buf[0] == '\0')
        return fault(ld, s, "cluster.password_file", "%s is empty",
                     c->password_file);
    int rc = set_string(ld, &c->password, buf);
    explicit_bzero(buf, sizeof buf);
    return rc;
}

static int load_cluster(const struct loader *ld, const config_setting_t *s,
                        const char *key, struct cluster_cfg *c)
{
    int rc;

    if (!config_setting_is_group(s))
        return wrong_type(ld, s, key, "a group { redis = ...; ... }");
    rc = load_group(ld, s, key, config_cluster_fields, c);
    if (rc != 0)
        return rc;
    if (c->redis == NULL)
        return missing(ld, s, key, "redis");
    if (c->name == NULL && set_string(ld, &c->name, "taskhost") != 0)
        return TH_ENOMEM;
    if (!valid_redis_address(c->redis))
        return fault(ld, member_or(s, "redis"), "cluster.redis",
                     "must be \"unix:/absolute/path\" or \"host:port\" "
                     "(got \"%s\")",
                     c->redis);
    if (c->lease < 0.1)
        return fault(ld, member_or(s, "lease"), "cluster.lease",
                     "must be >= 0.1 seconds (got %g)", c->lease);
    if (c->heartbeat <= 0 || c->heartbeat * 2 > c->lease)
        return fault(ld, member_or(s, "heartbeat"), "cluster.heartbeat",
                     "must be > 0 and at most half the lease (%g s > %g s / 2)",
                     c->heartbeat, c->lease);
    if (c->max_attempts < 1 || c->max_attempts > 1000)
        return fault(ld, member_or(s, "max_attempts"), "cluster.max_attempts",
                     "must be 1 to 1000 (got %d)", c->max_attempts);
    if (c->result_ttl < 1)
        return fault(ld, member_or(s, "result_ttl"), "cluster.result_ttl",
                     "must be >= 1 second (got %g)", c->result_ttl);
    if (c->password_file != NULL)
        return read_password(ld, member_or(s, "password_file"), c);
    return 0;
}

/* Every shared pool needs the cluster group. */
static int link_shared(const struct loader *ld, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->npools; i++) {
        if (!cfg->pools[i].shared || cfg->cluster.redis != NULL)
            continue;
        struct loader at = *ld;
        char key[KEY_MAX];
        at.file = cfg->pools[i].file;
        snprintf(key, sizeof key, "pools[%d].shared", cfg->pools[i].index);
        return fault(&at, member_or(ld->src->pools[i], "shared"), key,
                     "a shared pool needs a cluster group with redis = "
                     "\"unix:/path\" or \"host:port\"");
    }
    return 0;
}

/* Cross-checks pools against plugins, once every file is loaded (the
 * order of the lists, and of the files, does not matter). */
static int link_pools(const struct loader *ld, const struct config *cfg)
{
    char prefix[KEY_MAX];

    for (size_t i = 0; i < cfg->npools; i++) {
        struct loader at = *ld;
        int rc;

        at.file = cfg->pools[i].file;
        snprintf(prefix, sizeof(prefix), "pools[%d]", cfg->pools[i].index);
        rc = link_pool(&at, ld->src->pools[i], prefix, cfg, i);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- the file ---- */

static const char *file_kind(mode_t m)
{
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m) || S_ISBLK(m))
        return "a device";
    return "a special file";
}

/* Opens `path` for reading without blocking on a FIFO, and refuses what is
 * not a regular file. */
static int open_config(const char *path, FILE **fp, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    int e;

    if (fd == -1) {
        e = errno;
        put_err(err, errlen, "%s: %s", path,
                e == ENOENT ? "no such file" : strerror(e));
        return e == ENOENT ? TH_ENOENT : TH_EIO;
    }
    if (fstat(fd, &st) == -1) {
        put_err(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return TH_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        put_err(err, errlen, "%s: %s, not a config file", path,
                file_kind(st.st_mode));
        close(fd);
        return TH_EIO;
    }
    *fp = fdopen(fd, "r");
    if (*fp == NULL) {
        put_err(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return TH_EIO;
    }
    return 0;
}

static int read_config(const struct loader *ld, config_t *lc, FILE *fp)
{
    const char *file;

    if (lc_true(config_read(lc, fp)))
        return 0;
    file = config_error_file(lc) ? config_error_file(lc) : ld->file;
    if (config_error_type(lc) == CONFIG_ERR_FILE_IO)
        put_err(ld->err, ld->errlen, "%s: %s", file, config_error_text(lc));
    else
        put_err(ld->err, ld->errlen, "%s:%d: %s", file, config_error_line(lc),
                config_error_text(lc));
    return TH_ECONFIG;
}

/* Returns a config holding only the defaults for the file `path`. */
static struct config *config_new(const char *path)
{
    struct config *cfg = calloc(1, sizeof(*cfg));

    if (cfg == NULL)
        return NULL;
    http_cfg_defaults(&cfg->http);
    cluster_cfg_defaults(&cfg->cluster);
    cfg->path = strdup(path);
    cfg->dir = absolute_dir(path);
    if (cfg->path == NULL || cfg->dir == NULL ||
        host_cfg_defaults(&cfg->host, cfg->dir) != 0) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Adds a copy of `name` to cfg->files: the file read next. */
static int add_file(const struct loader *ld, struct config *cfg,
                    const char *name)
{
    char *copy = strdup(name);

    if (copy == NULL || grow((void **)&cfg->files, cfg->nfiles, 1,
                             sizeof(*cfg->files)) != 0) {
        free(copy);
        return oom(ld);
    }
    cfg->files[cfg->nfiles++] = copy;
    return 0;
}

/* Reads the file `path` into the tree `lc` (initialised here; the caller
 * destroys it) and stores its members through `fields` into cfg. A
 * directory, FIFO or device is refused without reading it. */
static int load_file(struct loader *ld, config_t *lc, const char *path,
                     const struct config_field *fields, struct config *cfg)
{
    FILE *fp = NULL;
    int rc;

    config_init(lc);
    config_set_include_dir(lc, cfg->dir);
    rc = add_file(ld, cfg, path);
    if (rc == 0)
        rc = open_config(path, &fp, ld->err, ld->errlen);
    if (rc != 0)
        return rc;
    ld->file = cfg->files[cfg->nfiles - 1];
    rc = read_config(ld, lc, fp);
    fclose(fp);
    if (rc == 0)
        rc = load_group(ld, config_root_setting(lc), "", fields, cfg);
    return rc;
}

/* The first directory glob() could not read, other than a missing one. */
static _Thread_local char glob_fault[PATH_MAX + 64];

static int glob_error(const char *path, int e)
{
    if (e == ENOENT || e == ENOTDIR)
        return 0;
    snprintf(glob_fault, sizeof glob_fault, "%s: %s", path, strerror(e));
    return 1;
}

/* Reads the drop-in files that host.include matches, in name order. A
 * pattern that matches nothing adds nothing (an empty or missing conf.d);
 * a directory that cannot be read is an error, not silence. */
static int load_dropins(struct loader *ld, struct config *cfg)
{
    const char *main_file = ld->file;
    char *pattern;
    glob_t g;
    int rc = 0, grc;

    if (cfg->host.include == NULL)
        return 0;
    pattern = config_resolve_path(cfg->dir, cfg->host.include);
    if (pattern == NULL)
        return oom(ld);
    glob_fault[0] = '\0';
    grc = glob(pattern, 0, glob_error, &g);
    free(pattern);
    if (grc == GLOB_NOMATCH)
        return 0;
    if (grc != 0) {
        globfree(&g);
        put_err(ld->err, ld->errlen, "%s: host.include \"%s\": %s", main_file,
                cfg->host.include,
                glob_fault[0] ? glob_fault : "out of memory");
        return grc == GLOB_NOSPACE ? TH_ENOMEM : TH_EIO;
    }
    ld->src->trees = calloc(g.gl_pathc, sizeof(*ld->src->trees));
    if (ld->src->trees == NULL)
        rc = oom(ld);
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++)
        rc = load_file(ld, &ld->src->trees[ld->src->ntrees++], g.gl_pathv[i],
                       dropin_fields, cfg);
    globfree(&g);
    ld->file = main_file;
    return rc;
}

static void sources_free(struct sources *src)
{
    for (size_t i = 0; i < src->ntrees; i++)
        config_destroy(&src->trees[i]);
    free(src->trees);
    free(src->plugins);
    free(src->pools);
}

/* Loads and validates `path` and its drop-ins; see config.h. */
int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
    struct sources src = {NULL, NULL, NULL, 0};
    struct loader ld = {path, NULL, err, errlen, &src};
    struct config *cfg;
    config_t lc;
    int rc;

    *out = NULL;
    cfg = config_new(path);
    if (cfg == NULL)
        return oom(&ld);
    ld.dir = cfg->dir;
    rc = load_file(&ld, &lc, path, config_root_fields, cfg);
    if (rc == 0)
        rc = load_dropins(&ld, cfg);
    if (rc == 0)
        rc = link_pools(&ld, cfg);
    if (rc == 0)
        rc = link_shared(&ld, cfg);
    config_destroy(&lc);
    sources_free(&src);
    if (rc != 0) {
        config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

/* Frees `cfg` and everything it owns. NULL is allowed. */
void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    host_cfg_clear(&cfg->host);
    http_cfg_clear(&cfg->http);
    cluster_cfg_clear(&cfg->cluster);
    for (size_t i = 0; i < cfg->nplugins; i++) {
#define PLUGIN_KEY(key, kind, doc) free(cfg->plugins[i].key);
#include "plugin_keys.def"
#undef PLUGIN_KEY
    }
    free(cfg->plugins);
    for (size_t i = 0; i < cfg->npools; i++)
        pool_cfg_clear(&cfg->pools[i]);
    free(cfg->pools);
    for (size_t i = 0; i < cfg->nfiles; i++)
        free(cfg->files[i]);
    free(cfg->files);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}
