/* schema.h - the config's keys as tables, for the loader.
 *
 * Each group of the file has a table of its keys (name, kind, offset in
 * the group's struct), built from the key lists (pool_keys.def,
 * host_keys.def, http_keys.def, cluster_keys.def, plugin_keys.def); a
 * NULL name ends it.
 */
#ifndef TH_CONFIG_SCHEMA_H
#define TH_CONFIG_SCHEMA_H

#include <stddef.h>

#include "kinds.h"

struct config_field {
    const char *name;
    enum config_kind kind;
    size_t off;
};

extern const struct config_field config_host_fields[];
extern const struct config_field config_http_fields[];
extern const struct config_field config_cluster_fields[];
extern const struct config_field config_plugin_fields[];
extern const struct config_field config_pool_fields[];
extern const struct config_field config_root_fields[];

/* The field of `fields` named `name`, or NULL. */
const struct config_field *config_field_find(const struct config_field *fields,
                                             const char *name);

#endif /* TH_CONFIG_SCHEMA_H */
