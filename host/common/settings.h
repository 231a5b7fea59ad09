/* settings.h - a pool's `settings` group, copied out of libconfig.
 *
 * Plugins read it through the th_setting_*() getters of taskhost.h in their
 * init(). It is a flat list of scalar values; nested groups get dotted keys
 * ("cache.size"). Arrays and lists are refused at load.
 */
#ifndef TH_SETTINGS_H
#define TH_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

/* libconfig's setting type, forward-declared to keep libconfig.h out. */
struct config_setting_t;

enum setting_type { SETTING_INT, SETTING_FLOAT, SETTING_BOOL, SETTING_STRING };

struct setting {
    char *key;
    int type; /* enum setting_type */
    int64_t i;    /* INT and BOOL */
    double f;     /* FLOAT */
    char *s;      /* STRING */
};

/* th_settings of the SDK is this struct. */
struct th_settings {
    struct setting *items;
    size_t n;
};

/* Returns a new empty settings (never NULL unless out of memory). */
struct th_settings *settings_new(void);

/* Copies a libconfig group into *out. On an array/list value returns
 * TH_ECONFIG with "KEY: reason" in err. */
int settings_from_config(const struct config_setting_t *group,
                         struct th_settings **out, char *err, size_t errlen);

/* Like settings_from_config(); on failure also sets *bad (if not NULL) to
 * the offending setting, so that the config loader can name its line. */
int settings_from_config_at(const struct config_setting_t *group,
                            struct th_settings **out,
                            const struct config_setting_t **bad, char *err,
                            size_t errlen);

/* Parses libconfig text ("rounds = 3; name = \"x\";") into *out. */
int settings_from_text(const char *text, struct th_settings **out, char *err,
                       size_t errlen);

/* Returns a deep copy of `src` (NULL: a new empty set), or NULL when out
 * of memory. */
struct th_settings *settings_copy(const struct th_settings *src);

/* Returns non-zero when both hold the same keys, types and values. */
int settings_equal(const struct th_settings *a, const struct th_settings *b);

struct buf;
struct spw_reader;

/* Appends s (NULL: empty) to a spawner message. Returns 0 or TH_ENOMEM. */
int settings_pack(const struct th_settings *s, struct buf *b);

/* Reads settings packed by settings_pack(); NULL (r->bad set) when the
 * message is malformed or memory is short. */
struct th_settings *settings_unpack(struct spw_reader *r);

/* Frees. NULL is allowed. */
void settings_free(struct th_settings *s);

#endif /* TH_SETTINGS_H */
