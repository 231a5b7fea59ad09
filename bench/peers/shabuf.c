/* shabuf.c - the CPU-bound task of bench/peers: SHA-256 over a buffer of
 * `size` bytes (a pool setting) held by each worker, then over the input.
 * The Piscina, ProcessPoolExecutor and multiprocessing sides hash a buffer
 * of the same size with their OpenSSL bindings, so every side does the
 * same work in the same library, whatever its language costs per call.
 *
 *   task "sha256": the lowercase hex digest (64 characters).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <taskhost.h>

struct shabuf {
    unsigned char *buf;
    size_t size;
    EVP_MD_CTX *ctx;
};

static int shabuf_init(const th_settings *settings, void **state)
{
    int64_t size = th_setting_int(settings, "size", 4 << 20);
    struct shabuf *s = calloc(1, sizeof *s);

    if (s == NULL || size < 1 || size > (1 << 30)) {
        th_log(TH_LOG_ERROR, "shabuf: size must be 1 byte to 1 GiB");
        free(s);
        return TH_EINVAL;
    }
    s->size = (size_t)size;
    s->buf = malloc(s->size);
    s->ctx = EVP_MD_CTX_new();
    if (s->buf == NULL || s->ctx == NULL) {
        free(s->buf);
        EVP_MD_CTX_free(s->ctx);
        free(s);
        return TH_ENOMEM;
    }
    memset(s->buf, 't', s->size); /* the peers hash the same bytes */
    *state = s;
    return 0;
}

static void shabuf_fini(void *state)
{
    struct shabuf *s = state;

    EVP_MD_CTX_free(s->ctx);
    free(s->buf);
    free(s);
}

static int shabuf_run(void *state, th_task *task, const void *in, size_t len)
{
    static const char hexdigits[] = "0123456789abcdef";
    struct shabuf *s = state;
    unsigned char md[32];
    char hex[64];

    if (EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(s->ctx, s->buf, s->size) != 1 ||
        EVP_DigestUpdate(s->ctx, in, len) != 1 ||
        EVP_DigestFinal_ex(s->ctx, md, NULL) != 1)
        return th_task_fail(task, TH_EIO, "libcrypto: SHA-256 failed");
    for (size_t i = 0; i < sizeof md; i++) {
        hex[2 * i] = hexdigits[md[i] >> 4];
        hex[2 * i + 1] = hexdigits[md[i] & 0x0f];
    }
    return th_task_write(task, hex, sizeof hex);
}

static const th_task_def tasks[] = {
    {"sha256", shabuf_run},
    {NULL, NULL},
};

TH_PLUGIN("shabuf", "1.0", shabuf_init, shabuf_fini, tasks);
