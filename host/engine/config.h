/* config.h - the configuration file: loading, validation, defaults.
 *
 * Every key is described once, in config/pool_keys.def, host_keys.def,
 * http_keys.def, cluster_keys.def and plugin_keys.def (type, default,
 * doc); the structs below, the loader's tables, the defaults, copies and
 * checks (config/schema.c) and docs/config.md (config/gen_doc.c) are
 * derived from those lists. The
 * value parsers are in config/values.c, the file loader in config/load.c.
 *
 * config_load() reads a libconfig file into a struct config that owns copies
 * of every string (libconfig's die with config_destroy). Validation faults
 * are reported as one line: "FILE:LINE: KEY: reason", e.g.
 *   taskhost.conf:14: pools[0].max_workers: must be >= min_workers (2 < 4)
 * Plugin files are only checked to exist here; plugin.c validates them.
 *
 * host.include names drop-in files by a glob pattern relative to the main
 * file (the shipped config: every conf.d/NAME.conf), read in name order
 * after the main file. Each holds only `plugins` and `pools` lists, added
 * to the main file's. A drop-in's faults name it and the index in its list.
 */
#ifndef TH_CONFIG_H
#define TH_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config/kinds.h"
#include "config/values.h"

struct th_pool_opts;

enum overflow { OVERFLOW_REJECT = 0, OVERFLOW_DROP_OLDEST, OVERFLOW_BLOCK };

/* The `host` group: one field per line of config/host_keys.def. */
struct host_cfg {
#define HOST_KEY(key, field, kind, def, shown, doc) CONFIG_CTYPE(kind) field;
#include "config/host_keys.def"
#undef HOST_KEY
};

/* The `http` group, the daemon's optional HTTP endpoint: one field per
 * line of config/http_keys.def, then what the loader derives. */
struct http_cfg {
#define HTTP_KEY(key, kind, def, shown, doc) CONFIG_CTYPE(kind) key;
#include "config/http_keys.def"
#undef HTTP_KEY
    struct sockaddr_storage addr; /* listen, parsed (a unix path resolved) */
    socklen_t addrlen;
    int loopback;     /* 127.0.0.0/8, ::1 or a unix socket */
    char *auth_token; /* auth_token_file's first line, or NULL: none */
};

/* The `cluster` group: pools marked `shared` take their tasks from a
 * queue in Redis that every host of the cluster serves (cluster.h). One
 * field per line of config/cluster_keys.def, then what the loader
 * derives. */
struct cluster_cfg {
#define CLUSTER_KEY(key, kind, def, shown, doc) CONFIG_CTYPE(kind) key;
#include "config/cluster_keys.def"
#undef CLUSTER_KEY
    char *password; /* password_file's first line, or NULL: no AUTH */
};

struct plugin_cfg {
#define PLUGIN_KEY(key, kind, doc) CONFIG_CTYPE(kind) key;
#include "config/plugin_keys.def"
#undef PLUGIN_KEY
    const char *file; /* the file it is in (the config's files[]) */
    int index;        /* its index in that file's plugins list */
    int line;         /* line of the `path` key, for messages */
};

/* The longest busy_poll a pool may have, in seconds: polling is for the
 * gap between a task and the next one, not a way to never sleep. */
#define BUSY_POLL_MAX 0.01

/* A pool: one field per line of config/pool_keys.def (defaults, units and
 * meaning are there). */
struct pool_cfg {
#define POOL_KEY(name, kind, min, def, shown, opts, reload, doc)              \
    CONFIG_CTYPE(kind) name;
#include "config/pool_keys.def"
#undef POOL_KEY
    const char *file; /* the file it is in (the config's files[]); NULL in
                         a copy (pool_cfg_copy) and a pool built in code */
    int index;        /* its index in that file's pools list */
    int line;         /* line of the pool's group */
};

struct config {
    char *path; /* as given */
    char *dir;  /* directory of the file, for relative paths */
    struct host_cfg host;
    struct http_cfg http;
    struct cluster_cfg cluster;
    struct plugin_cfg *plugins;
    size_t nplugins;
    struct pool_cfg *pools;
    size_t npools;
    char **files; /* files[0] is `path`, then the drop-ins read */
    size_t nfiles;
};

/* Loads and validates `path`. On success returns 0 and a config in *out
 * (free with config_free()); on failure returns TH_ECONFIG (or TH_ENOENT /
 * TH_EIO) and one line in err. */
int config_load(const char *path, struct config **out, char *err,
                size_t errlen);

/* Frees a config and everything it owns. NULL is allowed. */
void config_free(struct config *cfg);

/* ---- config/schema.c: what the key lists derive ---- */

/* Fills a pool_cfg with the defaults of pool_keys.def (strings NULL,
 * settings a new empty set, NULL only when out of memory). */
void pool_cfg_defaults(struct pool_cfg *p);

/* Frees what a pool_cfg owns (not the struct itself), leaving NULLs. */
void pool_cfg_clear(struct pool_cfg *p);

/* Makes `dst` a deep copy of `src`. Returns 0 or TH_ENOMEM (then `dst`
 * holds what was copied so far: pool_cfg_clear() it). */
int pool_cfg_copy(struct pool_cfg *dst, const struct pool_cfg *src);

/* Non-zero when going from `a` to `b` changes a key marked RESTART. */
int pool_cfg_needs_restart(const struct pool_cfg *a, const struct pool_cfg *b);

/* Copies the keys marked LIVE from `src` into `dst`. */
void pool_cfg_update_live(struct pool_cfg *dst, const struct pool_cfg *src);

/* Checks value ranges and min <= max. On a fault returns TH_ECONFIG, the
 * key at fault in *key and the reason in why[0..n), for the loader to
 * name the key's own line. */
int pool_cfg_fault(const struct pool_cfg *p, const char **key, char *why,
                   size_t n);

/* Checks value ranges and min <= max. `where` prefixes the message
 * ("FILE:LINE: pools[0]" or "pool 'x'"): "WHERE.KEY: reason" when `where`
 * ends with ']', else "WHERE: KEY: reason". Returns 0 or TH_ECONFIG. */
int pool_cfg_check(const struct pool_cfg *p, const char *where, char *err,
                   size_t errlen);

/* Fills th_pool_opts with the defaults of pool_keys.def (see
 * th_pool_opts_init()). */
void pool_opts_defaults(struct th_pool_opts *o);

/* Builds a checked pool_cfg from th_pool_opts: defaults, then every key
 * the caller's struct holds. Returns 0, or TH_ECONFIG / TH_ENOMEM with one
 * line in err; either way pool_cfg_clear() `c` after. */
int pool_cfg_from_opts(struct pool_cfg *c, const struct th_pool_opts *o,
                       char *err, size_t errlen);

/* Fills a host_cfg with the defaults of host_keys.def, relative paths
 * against `dir`. Returns 0 or TH_ENOMEM. */
int host_cfg_defaults(struct host_cfg *h, const char *dir);

/* Frees what a host_cfg owns. */
void host_cfg_clear(struct host_cfg *h);

/* Fills `h` with the defaults of http_keys.def (listen NULL: off). */
void http_cfg_defaults(struct http_cfg *h);

/* Frees what an http_cfg owns (the token is wiped first). */
void http_cfg_clear(struct http_cfg *h);

/* Fills `c` with the defaults of cluster_keys.def (redis NULL: off). */
void cluster_cfg_defaults(struct cluster_cfg *c);

/* Frees what a cluster_cfg owns (the password is wiped first). */
void cluster_cfg_clear(struct cluster_cfg *c);

#endif /* TH_CONFIG_H */
