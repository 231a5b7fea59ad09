/* settings.c - a pool's `settings` group, copied out of libconfig
 * (common layer: the engine fills it, plugins read it in the worker).
 *
 * The group is flattened into an array of typed scalars: nested groups give
 * dotted keys ("cache.size"). Settings groups are small, so lookups are a
 * linear scan and the array grows one item at a time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "settings.h"
#include "spawn_wire.h"

#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "taskhost.h"

static void put_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* libconfig's CONFIG_TRUE/CONFIG_FALSE, converted here and nowhere else. */
static int lc_true(int v)
{
    return v != CONFIG_FALSE;
}

/* Returns a new empty settings, or NULL when out of memory. */
struct th_settings *settings_new(void)
{
    return calloc(1, sizeof(struct th_settings));
}

/* Frees `s` and every key and string it holds. NULL is allowed. */
void settings_free(struct th_settings *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].key);
        free(s->items[i].s);
    }
    free(s->items);
    free(s);
}

/* Appends a zeroed item owning a copy of `key`; NULL when out of memory. */
static struct setting *append(struct th_settings *s, const char *key)
{
    struct setting *items;
    char *copy = strdup(key);

    if (copy == NULL)
        return NULL;
    items = realloc(s->items, (s->n + 1) * sizeof(*items));
    if (items == NULL) {
        free(copy);
        return NULL;
    }
    s->items = items;
    memset(&items[s->n], 0, sizeof(items[s->n]));
    items[s->n].key = copy;
    return &items[s->n++];
}

/* Copies one scalar libconfig value under `key`. */
static int add_scalar(struct th_settings *out, const config_setting_t *e,
                      const char *key, char *err, size_t errlen)
{
    struct setting *it = append(out, key);

    if (it == NULL) {
        put_err(err, errlen, "%s: out of memory", key);
        return TH_ENOMEM;
    }
    switch (config_setting_type(e)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        it->type = SETTING_INT;
        it->i = config_setting_get_int64(e);
        return 0;
    case CONFIG_TYPE_FLOAT:
        it->type = SETTING_FLOAT;
        it->f = config_setting_get_float(e);
        return 0;
    case CONFIG_TYPE_BOOL:
        it->type = SETTING_BOOL;
        it->i = lc_true(config_setting_get_bool(e));
        return 0;
    default:
        it->type = SETTING_STRING;
        it->s = strdup(config_setting_get_string(e));
        if (it->s != NULL)
            return 0;
        put_err(err, errlen, "%s: out of memory", key);
        return TH_ENOMEM;
    }
}

/* Returns "prefix.name" (or a copy of name without a prefix), or NULL. */
static char *join_key(const char *prefix, const char *name)
{
    char *key = NULL;

    if (prefix == NULL)
        return strdup(name);
    if (asprintf(&key, "%s.%s", prefix, name) < 0)
        return NULL;
    return key;
}

static int flatten(const config_setting_t *group, const char *prefix,
                   struct th_settings *out, const struct config_setting_t **bad,
                   char *err, size_t errlen);

/* Copies one member of a settings group: recurses into groups, refuses
 * arrays and lists (the getters have no way to reach them). */
static int add_member(const config_setting_t *e, const char *key,
                      struct th_settings *out,
                      const struct config_setting_t **bad, char *err,
                      size_t errlen)
{
    if (config_setting_is_group(e))
        return flatten(e, key, out, bad, err, errlen);
    if (config_setting_is_scalar(e))
        return add_scalar(out, e, key, err, errlen);
    *bad = e;
    put_err(err, errlen,
            "%s: arrays and lists are not allowed in settings (use one key "
            "per value, or a string)",
            key);
    return TH_ECONFIG;
}

static int flatten(const config_setting_t *group, const char *prefix,
                   struct th_settings *out, const struct config_setting_t **bad,
                   char *err, size_t errlen)
{
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(group, i);
        char *key = join_key(prefix, config_setting_name(e));
        int rc;

        if (key == NULL) {
            put_err(err, errlen, "out of memory");
            return TH_ENOMEM;
        }
        rc = add_member(e, key, out, bad, err, errlen);
        free(key);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Copies the libconfig group `group` into a new settings in *out. On failure
 * returns TH_ECONFIG (an array or a list: "KEY: reason" in err, with *bad
 * set to that setting so that the caller can name its line) or TH_ENOMEM. */
int settings_from_config_at(const struct config_setting_t *group,
                            struct th_settings **out,
                            const struct config_setting_t **bad, char *err,
                            size_t errlen)
{
    struct th_settings *s = settings_new();
    const struct config_setting_t *ignored = NULL;
    int rc;

    *out = NULL;
    if (bad == NULL)
        bad = &ignored;
    *bad = group;
    if (s == NULL) {
        put_err(err, errlen, "out of memory");
        return TH_ENOMEM;
    }
    rc = flatten(group, NULL, s, bad, err, errlen);
    if (rc != 0) {
        settings_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* Copies a libconfig group into *out; see settings.h. */
int settings_from_config(const struct config_setting_t *group,
                         struct th_settings **out, char *err, size_t errlen)
{
    return settings_from_config_at(group, out, NULL, err, errlen);
}

/* Parses libconfig text into *out (NULL or "" gives empty settings). On a
 * syntax error returns TH_ECONFIG with "line N: reason" in err. */
int settings_from_text(const char *text, struct th_settings **out, char *err,
                       size_t errlen)
{
    config_t lc;
    int rc;

    *out = NULL;
    config_init(&lc);
    if (!lc_true(config_read_string(&lc, text ? text : ""))) {
        put_err(err, errlen, "line %d: %s", config_error_line(&lc),
                config_error_text(&lc));
        config_destroy(&lc);
        return TH_ECONFIG;
    }
    rc = settings_from_config(config_root_setting(&lc), out, err, errlen);
    config_destroy(&lc);
    return rc;
}

static const struct setting *find(const struct th_settings *s, const char *key)
{
    if (s == NULL || key == NULL)
        return NULL;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->items[i].key, key) == 0)
            return &s->items[i];
    }
    return NULL;
}

static int same_value(const struct setting *a, const struct setting *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case SETTING_FLOAT:
        return a->f == b->f;
    case SETTING_STRING:
        return strcmp(a->s, b->s) == 0;
    default:
        return a->i == b->i;
    }
}

/* Returns non-zero when `a` and `b` hold the same keys with the same types
 * and values, in any order. NULL counts as empty. Used by reload to decide
 * whether a pool must restart. */
int settings_equal(const struct th_settings *a, const struct th_settings *b)
{
    size_t na = a ? a->n : 0;
    size_t nb = b ? b->n : 0;

    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++) {
        const struct setting *other = find(b, a->items[i].key);

        if (other == NULL || !same_value(&a->items[i], other))
            return 0;
    }
    return 1;
}

/* SDK getter: the string `key`, or `def`. The string lives as long as `s`. */
TH_EXPORT const char *th_setting_string(const th_settings *s, const char *key,
                                        const char *def)
{
    const struct setting *it = find(s, key);

    return it && it->type == SETTING_STRING ? it->s : def;
}

/* SDK getter: the integer `key`, or `def`. */
TH_EXPORT int64_t th_setting_int(const th_settings *s, const char *key,
                                 int64_t def)
{
    const struct setting *it = find(s, key);

    return it && it->type == SETTING_INT ? it->i : def;
}

/* SDK getter: the number `key` (float or integer), or `def`. */
TH_EXPORT double th_setting_float(const th_settings *s, const char *key,
                                  double def)
{
    const struct setting *it = find(s, key);

    if (it && it->type == SETTING_FLOAT)
        return it->f;
    if (it && it->type == SETTING_INT)
        return (double)it->i;
    return def;
}

/* SDK getter: the boolean `key` as 1 or 0, or `def`. */
TH_EXPORT int th_setting_bool(const th_settings *s, const char *key, int def)
{
    const struct setting *it = find(s, key);

    return it && it->type == SETTING_BOOL ? (int)it->i : def;
}

/* Returns a deep copy of `src`; see settings.h. */
struct th_settings *settings_copy(const struct th_settings *src)
{
    struct th_settings *s = settings_new();

    if (s == NULL || src == NULL || src->n == 0)
        return s;
    s->items = calloc(src->n, sizeof *s->items);
    if (s->items == NULL) {
        settings_free(s);
        return NULL;
    }
    for (size_t i = 0; i < src->n; i++) {
        s->items[i] = src->items[i];
        s->items[i].key = strdup(src->items[i].key);
        s->items[i].s = src->items[i].s ? strdup(src->items[i].s) : NULL;
        s->n = i + 1;
        if (s->items[i].key == NULL ||
            (src->items[i].s != NULL && s->items[i].s == NULL)) {
            settings_free(s);
            return NULL;
        }
    }
    return s;
}

/* ---- passing settings to a spawner ---- */

int settings_pack(const struct th_settings *s, struct buf *b)
{
    int64_t n = s ? (int64_t)s->n : 0;
    int rc = spw_put_i64(b, n);
    for (int64_t i = 0; i < n && rc == 0; i++) {
        const struct setting *e = &s->items[i];
        rc = spw_put_str(b, e->key) | spw_put_i64(b, e->type) |
             spw_put_i64(b, e->i) | spw_put(b, &e->f, sizeof e->f) |
             spw_put_str(b, e->s);
    }
    return rc == 0 ? 0 : TH_ENOMEM;
}

struct th_settings *settings_unpack(struct spw_reader *r)
{
    struct th_settings *s = settings_new();
    int64_t n = spw_get_i64(r);
    if (s == NULL || n < 0 || n > 1000000)
        r->bad = 1;
    for (int64_t i = 0; i < n && !r->bad; i++) {
        char *key = spw_get_str(r);
        struct setting *e = key ? append(s, key) : NULL;
        free(key);
        if (e == NULL) {
            r->bad = 1;
            break;
        }
        e->type = (int)spw_get_i64(r);
        e->i = spw_get_i64(r);
        spw_get(r, &e->f, sizeof e->f);
        e->s = spw_get_str(r);
        if (e->type != SETTING_STRING) {
            free(e->s);
            e->s = NULL;
        }
    }
    if (r->bad) {
        settings_free(s);
        return NULL;
    }
    return s;
}
