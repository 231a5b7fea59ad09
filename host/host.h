/* host.h - internals of th_host shared with the daemon (taskhostd).
 *
 * The daemon embeds the engine through taskhost_host.h like any program;
 * these accessors give it what the public API does not need to expose.
 */
#ifndef TH_HOST_INTERNAL_H
#define TH_HOST_INTERNAL_H

#include "taskhost_host.h"

struct config;

/* The config the host runs on now (NULL for a host built in code). It is
 * replaced by a successful th_host_reload(): do not keep the pointer. */
const struct config *host_config(const th_host *host);

#endif /* TH_HOST_INTERNAL_H */
