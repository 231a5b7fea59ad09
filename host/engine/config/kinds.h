/* kinds.h - the kinds of value a config key holds.
 *
 * A kind fixes a key's C type in the config structs, how the loader parses
 * it, and how the reference docs name it. CONFIG_KINDS(X) calls
 * X(ID, C type, type for the docs, unit for the docs) once per kind; the
 * key lists (pool_keys.def, host_keys.def, http_keys.def,
 * cluster_keys.def, plugin_keys.def) name a kind by its ID. Plain C, no libconfig: the doc generator includes it too.
 */
#ifndef TH_CONFIG_KINDS_H
#define TH_CONFIG_KINDS_H

#include <stddef.h>
#include <stdint.h>

struct th_settings;

/* A list of uids or gids (names are resolved at load). */
struct id_list {
    unsigned *ids;
    size_t n;
};

/* An empty id_list, as a default in host_keys.def. */
#define CONFIG_NO_IDS ((struct id_list){NULL, 0})

#define CONFIG_KINDS(X)                                                        \
    X(NAME, char *, "name", "")                                                \
    X(STRING, char *, "string", "")                                            \
    X(INT, int, "integer", "")                                                 \
    X(LONG, long, "integer", "")                                               \
    X(BOOL, int, "boolean", "")                                                \
    X(DURATION, double, "duration", "seconds")                                 \
    X(SIZE, uint64_t, "size", "bytes")                                         \
    X(PATH, char *, "path", "")                                                \
    X(LOG, char *, "log target", "")                                           \
    X(LEVEL, int, "log level", "")                                             \
    X(MODE, unsigned, "octal mode", "")                                        \
    X(OVERFLOW, int, "overflow mode", "")                                      \
    X(USER, char *, "user", "")                                                \
    X(GROUP, char *, "group", "")                                              \
    X(UIDS, struct id_list, "users", "")                                       \
    X(GIDS, struct id_list, "groups", "")                                      \
    X(SETTINGS, struct th_settings *, "group", "")

/* K_NAME, K_STRING, ...; then the kinds that are whole groups of the file,
 * which only the loader's root table uses. */
enum config_kind {
#define CONFIG_KIND_ENUM(id, ctype, type, unit) K_##id,
    CONFIG_KINDS(CONFIG_KIND_ENUM)
#undef CONFIG_KIND_ENUM
        K_HOST,
    K_HTTP,
    K_CLUSTER,
    K_PLUGINS,
    K_POOLS
};

/* CONFIG_CTYPE(ID): the C type of kind ID, for struct fields. */
#define CONFIG_CTYPE_NAME char *
#define CONFIG_CTYPE_STRING char *
#define CONFIG_CTYPE_INT int
#define CONFIG_CTYPE_LONG long
#define CONFIG_CTYPE_BOOL int
#define CONFIG_CTYPE_DURATION double
#define CONFIG_CTYPE_SIZE uint64_t
#define CONFIG_CTYPE_PATH char *
#define CONFIG_CTYPE_LOG char *
#define CONFIG_CTYPE_LEVEL int
#define CONFIG_CTYPE_MODE unsigned
#define CONFIG_CTYPE_OVERFLOW int
#define CONFIG_CTYPE_USER char *
#define CONFIG_CTYPE_GROUP char *
#define CONFIG_CTYPE_UIDS struct id_list
#define CONFIG_CTYPE_GIDS struct id_list
#define CONFIG_CTYPE_SETTINGS struct th_settings *
#define CONFIG_CTYPE(id) CONFIG_CTYPE_##id

#endif /* TH_CONFIG_KINDS_H */
