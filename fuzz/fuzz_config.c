/* fuzz_config.c - the config loader on arbitrary file contents.
 *
 * The input is written to a memfd and loaded through its /proc/self/fd
 * path, so no file is left behind and nothing touches the disk. A load
 * either succeeds with a whole config or fails with a one-line message;
 * both are checked, and everything is freed (LeakSanitizer sees the rest).
 * Inputs with libconfig's @include are skipped: they would read other
 * files of the machine (even a FIFO or /dev/zero), which tests the machine
 * rather than the loader.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "settings.h"

#define check(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

/* What every loaded config holds, whatever the file said. */
static void check_config(const struct config *cfg)
{
    check(cfg->host.socket != NULL && cfg->host.socket[0] == '/');
    check(cfg->host.log != NULL && cfg->host.max_payload > 0);
    for (size_t i = 0; i < cfg->nplugins; i++)
        check(cfg->plugins[i].name && cfg->plugins[i].path &&
              cfg->plugins[i].path[0] == '/');
    for (size_t i = 0; i < cfg->npools; i++) {
        const struct pool_cfg *p = &cfg->pools[i];
        check(p->name && p->plugin && p->settings);
        check(p->min_workers <= p->max_workers);
        check(pool_cfg_check(p, "pool", NULL, 0) == 0);
    }
}

int fuzz_config(const uint8_t *data, size_t size)
{
    char path[64], err[512];
    struct config *cfg = NULL;
    int fd, rc;

    if (memmem(data, size, "@include", 8) != NULL)
        return 0;
    fd = memfd_create("fuzz.conf", MFD_CLOEXEC);
    check(fd != -1);
    check(write(fd, data, size) == (ssize_t)size);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    err[0] = '\0';
    rc = config_load(path, &cfg, err, sizeof err);
    if (rc == 0) {
        check(cfg != NULL);
        check_config(cfg);
    } else {
        check(cfg == NULL && rc < 0);
        check(err[0] != '\0' && strchr(err, '\n') == NULL);
    }
    config_free(cfg);
    close(fd);
    return 0;
}

#ifdef FUZZ_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_config(data, size);
}
#endif
