/* config.h - the configuration file: loading, validation, defaults.
 *
 * config_load() reads a libconfig file into a struct config that owns copies
 * of every string (libconfig's die with config_destroy). Validation faults
 * are reported as one line: "FILE:LINE: KEY: reason", e.g.
 *   taskhost.conf:14: pools[0].max_workers: must be >= min_workers (2 < 4)
 * Plugin files are only checked to exist here; plugin.c validates them.
 */
#ifndef TH_CONFIG_H
#define TH_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct th_settings;

enum overflow { OVERFLOW_REJECT = 0, OVERFLOW_DROP_OLDEST, OVERFLOW_BLOCK };

/* A list of uids or gids (names are resolved at load). */
struct id_list {
    unsigned *ids;
    size_t n;
};

struct host_cfg {
    char *socket;            /* absolute path */
    unsigned socket_mode;    /* e.g. 0660 */
    char *socket_group;      /* NULL: the daemon's group */
    char *log;               /* "stderr" | "syslog" | absolute file path */
    int log_level;           /* TH_LOG_* */
    double shutdown_timeout; /* seconds */
    uint64_t max_payload;    /* bytes, frame size cap on the socket */
    int strict_permissions;  /* refuse group/world-writable plugins */
    struct id_list submit_uids, submit_gids; /* empty: own uid and root */
    struct id_list admin_uids, admin_gids;   /* empty: own uid and root */
};

struct plugin_cfg {
    char *name;
    char *path; /* absolute */
    int line;   /* line of the `path` key, for messages */
};

struct pool_cfg {
    char *name;
    char *plugin;
    int line;                     /* line of the pool's group */
    int min_workers;              /* default 1 */
    int max_workers;              /* default: online CPUs (in a file, at
                                     least min_workers) */
    double idle_timeout;          /* default 30 s */
    long max_queue;               /* default 1024 */
    int overflow;                 /* enum overflow, default reject */
    double queue_timeout;         /* 0: none */
    double task_timeout;          /* default 10 s, 0: none */
    double kill_grace;            /* default 1 s */
    double init_timeout;          /* default 30 s: a worker's init() */
    uint64_t memory_soft_limit;   /* bytes, 0: none */
    uint64_t memory_hard_limit;   /* bytes, 0: none */
    uint64_t memory_budget;       /* bytes, sum of RSS, 0: none */
    double memory_check_interval; /* default 1 s */
    uint64_t address_space_limit; /* RLIMIT_AS bytes, 0: none */
    long max_tasks_per_worker;    /* 0: never */
    double max_worker_age;        /* seconds, 0: never */
    char *user;                   /* NULL: the daemon's */
    char *group;                  /* NULL: the daemon's */
    long rlimit_nofile;           /* 0: inherit */
    long rlimit_core;             /* -1: inherit */
    struct th_settings *settings; /* never NULL (may be empty) */
};

struct config {
    char *path; /* as given */
    char *dir;  /* directory of the file, for relative paths */
    struct host_cfg host;
    struct plugin_cfg *plugins;
    size_t nplugins;
    struct pool_cfg *pools;
    size_t npools;
};

/* Loads and validates `path`. On success returns 0 and a config in *out
 * (free with config_free()); on failure returns TH_ECONFIG (or TH_ENOENT /
 * TH_EIO) and one line in err. */
int config_load(const char *path, struct config **out, char *err,
                size_t errlen);

/* Frees a config and everything it owns. NULL is allowed. */
void config_free(struct config *cfg);

/* Fills a pool_cfg with defaults (strings NULL, settings empty). */
void pool_cfg_defaults(struct pool_cfg *p);

/* Frees what a pool_cfg owns (not the struct itself). */
void pool_cfg_clear(struct pool_cfg *p);

/* Checks value ranges and min <= max. `where` prefixes the message
 * ("FILE:LINE: pools[0]" or "pool 'x'"): "WHERE.KEY: reason" when `where`
 * ends with ']', else "WHERE: KEY: reason". Returns 0 or TH_ECONFIG. */
int pool_cfg_check(const struct pool_cfg *p, const char *where, char *err,
                   size_t errlen);

/* Parses a size: an integer number of bytes, or a string of digits with an
 * optional K, M, G or T suffix (powers of 1024, "B"/"iB" allowed after,
 * case-insensitive): "64K", "256M", "2G". Returns 0 or TH_EINVAL. */
int config_parse_size(const char *text, uint64_t *out);

/* Parses a duration in seconds: "1.5", or with a unit "250ms", "30s", "5m",
 * "1h". Returns 0 or TH_EINVAL (negative, NaN, garbage). */
int config_parse_duration(const char *text, double *out);

/* Parses an overflow mode name; returns the enum or -1. */
int config_parse_overflow(const char *text);

/* Parses a log level name ("error", "warn", "info", "debug") or -1. */
int config_parse_log_level(const char *text);

#endif /* TH_CONFIG_H */
