/* hash.c - a plugin with per-worker state, a setting and its own library.
 *
 * Shows check(), init() and fini(): check refuses a bad `rounds` before
 * any worker starts; init reads the `rounds` setting of the pool once per
 * worker and keeps it (with a reusable digest context) in the worker's
 * state; every task then uses that state. It links libcrypto, to show that
 * a plugin may bring its own dependencies.
 *
 *   task "sha256": the lowercase hex SHA-256 of the input. With rounds = N,
 *   round 1 hashes the input and every further round hashes the previous
 *   32-byte digest; the output is the hex of the last one (64 characters).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <taskhost.h>

struct hash_state {
    int64_t rounds;
    EVP_MD_CTX *ctx;
};

/* Runs before any worker starts (at start, reload and --check-config):
 * a pool with rounds = 0 is refused with this line, instead of failing
 * in each worker's init(). */
static int hash_check(const th_settings *settings, char *err, size_t errlen)
{
    int64_t rounds = th_setting_int(settings, "rounds", 1);
    if (rounds < 1) {
        snprintf(err, errlen, "rounds must be >= 1, got %lld",
                 (long long)rounds);
        return TH_EINVAL;
    }
    return 0;
}

static int hash_init(const th_settings *settings, void **state)
{
    int64_t rounds = th_setting_int(settings, "rounds", 1);
    if (rounds < 1) {
        th_log(TH_LOG_ERROR, "hash: rounds must be >= 1, got %lld",
               (long long)rounds);
        return TH_EINVAL;
    }
    struct hash_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return TH_ENOMEM;
    st->ctx = EVP_MD_CTX_new();
    if (st->ctx == NULL) {
        free(st);
        return TH_ENOMEM;
    }
    st->rounds = rounds;
    *state = st;
    return 0;
}

static void hash_fini(void *state)
{
    struct hash_state *st = state;
    EVP_MD_CTX_free(st->ctx);
    free(st);
}

/* Hashes len bytes of data into md (32 bytes). Returns 0 or -1. */
static int sha256(EVP_MD_CTX *ctx, const void *data, size_t len,
                  unsigned char *md)
{
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(ctx, md, NULL) != 1)
        return -1;
    return 0;
}

static int hash_sha256(void *state, th_task *task, const void *input,
                       size_t len)
{
    static const char hexdigits[] = "0123456789abcdef";
    struct hash_state *st = state;
    unsigned char md[32];
    char hex[64];

    if (sha256(st->ctx, input, len, md) == -1)
        return th_task_fail(task, TH_EIO, "libcrypto: SHA-256 failed");
    for (int64_t r = 1; r < st->rounds; r++)
        if (sha256(st->ctx, md, sizeof md, md) == -1)
            return th_task_fail(task, TH_EIO, "libcrypto: SHA-256 failed");
    for (size_t i = 0; i < sizeof md; i++) {
        hex[2 * i] = hexdigits[md[i] >> 4];
        hex[2 * i + 1] = hexdigits[md[i] & 0x0f];
    }
    return th_task_write(task, hex, sizeof hex);
}

static const th_task_def tasks[] = {
    {"sha256", hash_sha256},
    {NULL, NULL},
};

TH_PLUGIN_DESC(.name = "hash", .version = "1.0", .init = hash_init,
               .fini = hash_fini, .tasks = tasks, .check = hash_check);
