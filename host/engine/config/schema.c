/* schema.c - what the key lists derive: the loader's tables, defaults,
 * copies, range checks, the reload's split of live and restarting keys,
 * and the copies to and from th_pool_opts.
 *
 * Every per-key statement here is generated from pool_keys.def,
 * host_keys.def or plugin_keys.def through a macro chosen by the key's
 * kind (the *_<KIND> macros below): a new key needs no code here unless it
 * brings a new kind.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "schema.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../config.h"
#include "settings.h"
#include "taskhost.h"
#include "taskhost_host.h"

/* ---- the loader's tables ---- */

const struct config_field config_host_fields[] = {
#define HOST_KEY(key, field, kind, def, shown, doc)                            \
    {#key, K_##kind, offsetof(struct host_cfg, field)},
#include "host_keys.def"
#undef HOST_KEY
    {NULL, K_NAME, 0},
};

const struct config_field config_http_fields[] = {
#define HTTP_KEY(key, kind, def, shown, doc)                                   \
    {#key, K_##kind, offsetof(struct http_cfg, key)},
#include "http_keys.def"
#undef HTTP_KEY
    {NULL, K_NAME, 0},
};

const struct config_field config_cluster_fields[] = {
#define CLUSTER_KEY(key, kind, def, shown, doc)                                \
    {#key, K_##kind, offsetof(struct cluster_cfg, key)},
#include "cluster_keys.def"
#undef CLUSTER_KEY
    {NULL, K_NAME, 0},
};

const struct config_field config_plugin_fields[] = {
#define PLUGIN_KEY(key, kind, doc)                                             \
    {#key, K_##kind, offsetof(struct plugin_cfg, key)},
#include "plugin_keys.def"
#undef PLUGIN_KEY
    {NULL, K_NAME, 0},
};

const struct config_field config_pool_fields[] = {
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)               \
    {#name, K_##kind, offsetof(struct pool_cfg, name)},
#include "pool_keys.def"
#undef POOL_KEY
    {NULL, K_NAME, 0},
};

const struct config_field config_root_fields[] = {
    {"host", K_HOST, offsetof(struct config, host)},
    {"http", K_HTTP, offsetof(struct config, http)},
    {"cluster", K_CLUSTER, offsetof(struct config, cluster)},
    {"plugins", K_PLUGINS, 0},
    {"pools", K_POOLS, 0},
    {NULL, K_NAME, 0},
};

/* The field of `fields` named `name`, or NULL. */
const struct config_field *config_field_find(const struct config_field *fields,
                                             const char *name)
{
    for (; fields->name != NULL; fields++) {
        if (strcmp(fields->name, name) == 0)
            return fields;
    }
    return NULL;
}

/* ---- freeing, by kind ---- */

#define FREE_NAME(x) (free(x), (x) = NULL)
#define FREE_STRING(x) FREE_NAME(x)
#define FREE_PATH(x) FREE_NAME(x)
#define FREE_LOG(x) FREE_NAME(x)
#define FREE_USER(x) FREE_NAME(x)
#define FREE_GROUP(x) FREE_NAME(x)
#define FREE_UIDS(x) (free((x).ids), (x).ids = NULL, (x).n = 0)
#define FREE_GIDS(x) FREE_UIDS(x)
#define FREE_SETTINGS(x) (settings_free(x), (x) = NULL)
#define FREE_INT(x) (void)0
#define FREE_LONG(x) (void)0
#define FREE_BOOL(x) (void)0
#define FREE_DURATION(x) (void)0
#define FREE_SIZE(x) (void)0
#define FREE_LEVEL(x) (void)0
#define FREE_MODE(x) (void)0
#define FREE_OVERFLOW(x) (void)0

/* ---- pools ---- */

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : n > INT_MAX ? INT_MAX : (int)n;
}

/* Fills `p` with the defaults of pool_keys.def; see config.h. */
void pool_cfg_defaults(struct pool_cfg *p)
{
    memset(p, 0, sizeof(*p));
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc) p->name = def;
#include "pool_keys.def"
#undef POOL_KEY
}

/* Frees the strings and settings `p` owns, leaving NULLs behind. */
void pool_cfg_clear(struct pool_cfg *p)
{
    if (p == NULL)
        return;
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)               \
    FREE_##kind(p->name);
#include "pool_keys.def"
#undef POOL_KEY
}

static int dup_string(char **dst, const char *src)
{
    *dst = NULL;
    if (src != NULL && (*dst = strdup(src)) == NULL)
        return TH_ENOMEM;
    return 0;
}

static int dup_settings(struct th_settings **dst, const struct th_settings *src)
{
    *dst = settings_copy(src);
    return *dst != NULL ? 0 : TH_ENOMEM;
}

#define DUP_NAME(d, s) dup_string(&(d), s)
#define DUP_STRING(d, s) dup_string(&(d), s)
#define DUP_USER(d, s) dup_string(&(d), s)
#define DUP_GROUP(d, s) dup_string(&(d), s)
#define DUP_SETTINGS(d, s) dup_settings(&(d), s)
#define DUP_INT(d, s) ((d) = (s), 0)
#define DUP_LONG(d, s) ((d) = (s), 0)
#define DUP_DURATION(d, s) ((d) = (s), 0)
#define DUP_SIZE(d, s) ((d) = (s), 0)
#define DUP_OVERFLOW(d, s) ((d) = (s), 0)
#define DUP_BOOL(d, s) ((d) = (s), 0)

/* Makes `dst` a deep copy of `src`; see config.h. */
int pool_cfg_copy(struct pool_cfg *dst, const struct pool_cfg *src)
{
    int rc = 0;

    memset(dst, 0, sizeof(*dst));
    dst->line = src->line;
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)               \
    if (rc == 0)                                                               \
        rc = DUP_##kind(dst->name, src->name);
#include "pool_keys.def"
#undef POOL_KEY
    return rc;
}

static int str_eq(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

#define EQ_NAME(a, b) str_eq(a, b)
#define EQ_STRING(a, b) str_eq(a, b)
#define EQ_USER(a, b) str_eq(a, b)
#define EQ_GROUP(a, b) str_eq(a, b)
#define EQ_SETTINGS(a, b) settings_equal(a, b)
#define EQ_INT(a, b) ((a) == (b))
#define EQ_LONG(a, b) ((a) == (b))
#define EQ_DURATION(a, b) ((a) == (b))
#define EQ_SIZE(a, b) ((a) == (b))
#define EQ_OVERFLOW(a, b) ((a) == (b))
#define EQ_BOOL(a, b) ((a) == (b))

/* A key marked RESTART that differs means new workers; LIVE keys (plain
 * values only) are copied onto the running pool. The pool's name is its
 * identity, so it never differs here. */
#define RESTART_DIFFERS(kind, name) !EQ_##kind(a->name, b->name) ||
#define LIVE_DIFFERS(kind, name)
#define RESTART_COPY(name)
#define LIVE_COPY(name) dst->name = src->name;

/* Non-zero when a RESTART key differs; see config.h. */
int pool_cfg_needs_restart(const struct pool_cfg *a, const struct pool_cfg *b)
{
    return
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)               \
    reload##_DIFFERS(kind, name)
#include "pool_keys.def"
#undef POOL_KEY
        0;
}

/* Copies the LIVE keys; see config.h. */
void pool_cfg_update_live(struct pool_cfg *dst, const struct pool_cfg *src)
{
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)               \
    reload##_COPY(name)
#include "pool_keys.def"
#undef POOL_KEY
}

/* ---- pool checks ---- */

/* Sets *key and `why` for a count that must be >= `min`. */
static int below(const char **key, const char *name, long v, long min,
                 char *why, size_t n)
{
    *key = name;
    snprintf(why, n, "must be >= %ld (got %ld)", min, v);
    return TH_ECONFIG;
}

static int check_seconds(const char **key, const char *name, double v,
                         char *why, size_t n)
{
    if (isfinite(v) && v >= 0)
        return 0;
    *key = name;
    snprintf(why, n, "must be >= 0 seconds (got %g)", v);
    return TH_ECONFIG;
}

static int check_overflow(const char **key, int v, char *why, size_t n)
{
    if (config_overflow_name(v) != NULL)
        return 0;
    *key = "overflow";
    snprintf(why, n, "unknown overflow mode %d", v);
    return TH_ECONFIG;
}

#define RANGE_INT(name, min)                                                   \
    (p->name < (min) ? below(key, #name, p->name, min, why, n) : 0)
#define RANGE_LONG(name, min) RANGE_INT(name, min)
#define RANGE_DURATION(name, min) check_seconds(key, #name, p->name, why, n)
#define RANGE_OVERFLOW(name, min) check_overflow(key, p->name, why, n)
#define RANGE_NAME(name, min) 0
#define RANGE_STRING(name, min) 0
#define RANGE_USER(name, min) 0
#define RANGE_GROUP(name, min) 0
#define RANGE_SIZE(name, min) 0
#define RANGE_SETTINGS(name, min) 0
#define RANGE_BOOL(name, min) 0

/* Each key's own range, in the order of pool_keys.def. */
static int check_ranges(const struct pool_cfg *p, const char **key, char *why,
                        size_t n)
{
    int rc = 0;

#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)               \
    if (rc == 0)                                                               \
        rc = RANGE_##kind(name, min);
#include "pool_keys.def"
#undef POOL_KEY
    return rc;
}

/* What one key cannot say alone: min <= max, soft <= hard. */
static int check_pairs(const struct pool_cfg *p, const char **key, char *why,
                       size_t n)
{
    char soft[32], hard[32];

    if (p->min_workers > p->max_workers) {
        *key = "max_workers";
        snprintf(why, n, "must be >= min_workers (%d < %d)", p->max_workers,
                 p->min_workers);
        return TH_ECONFIG;
    }
    if (p->memory_check_interval <= 0) {
        *key = "memory_check_interval";
        snprintf(why, n, "must be > 0 seconds (got %g)",
                 p->memory_check_interval);
        return TH_ECONFIG;
    }
    if (p->busy_poll > BUSY_POLL_MAX) {
        *key = "busy_poll";
        snprintf(why, n, "must be <= %g seconds (got %g)", BUSY_POLL_MAX,
                 p->busy_poll);
        return TH_ECONFIG;
    }
    if (p->memory_soft_limit == 0 || p->memory_hard_limit == 0 ||
        p->memory_soft_limit <= p->memory_hard_limit)
        return 0;
    config_format_size(p->memory_soft_limit, soft, sizeof(soft));
    config_format_size(p->memory_hard_limit, hard, sizeof(hard));
    *key = "memory_hard_limit";
    snprintf(why, n, "must be >= memory_soft_limit (%s < %s)", hard, soft);
    return TH_ECONFIG;
}

/* Checks `p`; on a fault returns TH_ECONFIG, the key in *key and the
 * reason in `why`. */
static int pool_check(const struct pool_cfg *p, const char **key, char *why,
                      size_t n)
{
    if (p->name == NULL || !config_valid_name(p->name)) {
        *key = "name";
        snprintf(why, n, "must be 1 to %d letters, digits, '_', '.' or '-'",
                 CONFIG_NAME_MAX);
        return TH_ECONFIG;
    }
    if (check_ranges(p, key, why, n) != 0)
        return TH_ECONFIG;
    return check_pairs(p, key, why, n);
}

/* Checks `p`, naming the key at fault; see config.h. */
int pool_cfg_fault(const struct pool_cfg *p, const char **key, char *why,
                   size_t n)
{
    return pool_check(p, key, why, n);
}

/* Checks value ranges and min <= max; see config.h. */
int pool_cfg_check(const struct pool_cfg *p, const char *where, char *err,
                   size_t errlen)
{
    const char *key = NULL;
    char why[160];
    size_t n = where ? strlen(where) : 0;

    if (pool_check(p, &key, why, sizeof(why)) == 0)
        return 0;
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s%s%s: %s", where ? where : "pool",
                 n > 0 && where[n - 1] == ']' ? "." : ": ", key, why);
    return TH_ECONFIG;
}

/* ---- th_pool_opts ---- */

/* Keys with opts Y exist in th_pool_opts under the same name. */
#define OPTS_Y(x) x
#define OPTS_N(x)

#define TO_OPTS_NAME(name) (void)0
#define TO_OPTS_STRING(name) (void)0
#define TO_OPTS_USER(name) (void)0
#define TO_OPTS_GROUP(name) (void)0
#define TO_OPTS_SETTINGS(name) (void)0
#define TO_OPTS_BOOL(name) o->name = c.name
#define TO_OPTS_INT(name) o->name = c.name
#define TO_OPTS_LONG(name) o->name = c.name
#define TO_OPTS_DURATION(name) o->name = c.name
#define TO_OPTS_SIZE(name) o->name = c.name
#define TO_OPTS_OVERFLOW(name) o->name = config_overflow_name(c.name)

/* Fills `o` with the defaults the config file uses; see config.h. */
void pool_opts_defaults(struct th_pool_opts *o)
{
    struct pool_cfg c;

    pool_cfg_defaults(&c);
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)               \
    OPTS_##opts(TO_OPTS_##kind(name);)
#include "pool_keys.def"
#undef POOL_KEY
    pool_cfg_clear(&c);
}

static void opts_fault(char *err, size_t errlen, const char *pool,
                       const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes "pool 'NAME': ..." into err. */
static void opts_fault(char *err, size_t errlen, const char *pool,
                       const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return;
    n = snprintf(err, errlen, "pool '%s': ", pool ? pool : "?");
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static int account_from_opts(char **dst, const char *v, int is_group,
                             const char *pool, char *err, size_t errlen)
{
    unsigned id;

    if (v == NULL)
        return 0;
    if (config_lookup_id(v, is_group, &id) != 0) {
        opts_fault(err, errlen, pool, "%s: unknown %s \"%s\"",
                   is_group ? "group" : "user", is_group ? "group" : "user", v);
        return TH_ECONFIG;
    }
    free(*dst);
    return dup_string(dst, v);
}

static int overflow_from_opts(int *dst, const char *v, const char *pool,
                              char *err, size_t errlen)
{
    int mode = config_parse_overflow(v ? v : "reject");

    if (mode < 0) {
        opts_fault(err, errlen, pool, "overflow: unknown mode '%s'", v);
        return TH_ECONFIG;
    }
    *dst = mode;
    return 0;
}

static int settings_from_opts(struct th_settings **dst, const char *text,
                              char *err, size_t errlen)
{
    struct th_settings *s = NULL;
    int rc;

    if (text == NULL)
        return 0;
    rc = settings_from_text(text, &s, err, errlen);
    if (rc != 0)
        return rc;
    settings_free(*dst);
    *dst = s;
    return 0;
}

static int string_from_opts(char **dst, const char *v)
{
    free(*dst);
    return dup_string(dst, v);
}

/* `pool` is the pool's name, for messages. */
#define FROM_OPTS_NAME(f) string_from_opts(&c->f, o->f)
#define FROM_OPTS_STRING(f) string_from_opts(&c->f, o->f)
#define FROM_OPTS_USER(f) account_from_opts(&c->f, o->f, 0, pool, err, errlen)
#define FROM_OPTS_GROUP(f) account_from_opts(&c->f, o->f, 1, pool, err, errlen)
#define FROM_OPTS_SETTINGS(f) settings_from_opts(&c->f, o->f, err, errlen)
#define FROM_OPTS_OVERFLOW(f) overflow_from_opts(&c->f, o->f, pool, err, errlen)
#define FROM_OPTS_BOOL(f) (c->f = o->f != 0, 0)
#define FROM_OPTS_INT(f) (c->f = o->f, 0)
#define FROM_OPTS_LONG(f) (c->f = o->f, 0)
#define FROM_OPTS_DURATION(f) (c->f = o->f, 0)
#define FROM_OPTS_SIZE(f) (c->f = o->f, 0)

/* Builds a checked pool_cfg from th_pool_opts; see config.h. */
int pool_cfg_from_opts(struct pool_cfg *c, const struct th_pool_opts *o,
                       char *err, size_t errlen)
{
    const char *pool = o->name;
    char where[128];
    int rc = 0;

    pool_cfg_defaults(c);
    if (c->settings == NULL)
        return TH_ENOMEM;
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)               \
    OPTS_##opts(if (rc == 0) rc = FROM_OPTS_##kind(name);)
#include "pool_keys.def"
#undef POOL_KEY
    if (rc != 0)
        return rc;
    /* th_pool_opts says 0 (or less) for "the number of online CPUs". */
    if (c->max_workers <= 0)
        c->max_workers = online_cpus();
    snprintf(where, sizeof where, "pool '%s'", o->name);
    return pool_cfg_check(c, where, err, errlen);
}

/* ---- host ---- */

/* Fills `h` with the defaults of host_keys.def; see config.h. */
int host_cfg_defaults(struct host_cfg *h, const char *dir)
{
    memset(h, 0, sizeof(*h));
#define HOST_KEY(key, field, kind, def, shown, doc) h->field = def;
#include "host_keys.def"
#undef HOST_KEY
    return h->socket && h->log ? 0 : TH_ENOMEM;
}

/* Frees what `h` owns; see config.h. */
void host_cfg_clear(struct host_cfg *h)
{
#define HOST_KEY(key, field, kind, def, shown, doc) FREE_##kind(h->field);
#include "host_keys.def"
#undef HOST_KEY
}

/* ---- http ---- */

void http_cfg_defaults(struct http_cfg *h)
{
    memset(h, 0, sizeof(*h));
#define HTTP_KEY(key, kind, def, shown, doc) h->key = def;
#include "http_keys.def"
#undef HTTP_KEY
}

void http_cfg_clear(struct http_cfg *h)
{
#define HTTP_KEY(key, kind, def, shown, doc) FREE_##kind(h->key);
#include "http_keys.def"
#undef HTTP_KEY
    if (h->auth_token != NULL)
        explicit_bzero(h->auth_token, strlen(h->auth_token));
    free(h->auth_token);
    h->auth_token = NULL;
}

/* ---- cluster ---- */

void cluster_cfg_defaults(struct cluster_cfg *c)
{
    memset(c, 0, sizeof(*c));
#define CLUSTER_KEY(key, kind, def, shown, doc) c->key = def;
#include "cluster_keys.def"
#undef CLUSTER_KEY
}

void cluster_cfg_clear(struct cluster_cfg *c)
{
#define CLUSTER_KEY(key, kind, def, shown, doc) FREE_##kind(c->key);
#include "cluster_keys.def"
#undef CLUSTER_KEY
    if (c->password != NULL)
        explicit_bzero(c->password, strlen(c->password));
    free(c->password);
    c->password = NULL;
}
