/* test_regress.c - the fuzz targets' kept inputs, replayed in `make check`.
 *
 * Every input under fuzz/regress/TARGET/ once crashed a fuzz target, or
 * broke what it checks; every input under fuzz/corpus/TARGET/ is a seed.
 * Each goes through the very function the fuzzer calls (fuzz/fuzz.h),
 * which aborts when something that must hold does not. In the sanitizer
 * build the replay also catches the memory errors the fuzzer found.
 * Each case asserts that its directory held inputs: a corpus that went
 * missing fails instead of passing on nothing.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "fuzz.h"

#define FUZZ_DIR TOP_SRCDIR "/fuzz"

typedef int (*fuzz_fn)(const uint8_t *, size_t);

/* Reads a whole file into a malloc'd buffer; NULL for what is not a
 * regular file. */
static uint8_t *slurp(const char *path, size_t *len)
{
    struct stat st;
    uint8_t *buf;
    FILE *f;

    if (stat(path, &st) == -1 || !S_ISREG(st.st_mode))
        return NULL;
    f = fopen(path, "rb");
    assert_non_null(f);
    buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    *len = fread(buf, 1, (size_t)st.st_size, f);
    assert_int_equal(*len, (size_t)st.st_size);
    fclose(f);
    return buf;
}

/* Runs every file of FUZZ_DIR/kind/target through fn; returns how many
 * (0 when the directory does not exist). */
static size_t replay(const char *kind, const char *target, fuzz_fn fn)
{
    char dir[512], path[1024];
    struct dirent *e;
    size_t n = 0, len;
    DIR *d;

    snprintf(dir, sizeof dir, "%s/%s/%s", FUZZ_DIR, kind, target);
    d = opendir(dir);
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        uint8_t *buf;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        buf = slurp(path, &len);
        if (buf == NULL)
            continue;
        print_message("replaying %s\n", path);
        assert_int_equal(fn(buf, len), 0);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void protocol_seeds_replay_cleanly(void **state)
{
    assert_true(replay("corpus", "protocol", fuzz_protocol) > 0);
}

static void protocol_regressions_replay_cleanly(void **state)
{
    assert_true(replay("regress", "protocol", fuzz_protocol) > 0);
}

static void config_seeds_replay_cleanly(void **state)
{
    assert_true(replay("corpus", "config", fuzz_config) > 0);
}

static void config_regressions_replay_cleanly(void **state)
{
    assert_true(replay("regress", "config", fuzz_config) > 0);
}

static void size_seeds_replay_cleanly(void **state)
{
    assert_true(replay("corpus", "size", fuzz_size) > 0);
}

static void size_regressions_replay_cleanly(void **state)
{
    assert_true(replay("regress", "size", fuzz_size) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(protocol_seeds_replay_cleanly),
        cmocka_unit_test(protocol_regressions_replay_cleanly),
        cmocka_unit_test(config_seeds_replay_cleanly),
        cmocka_unit_test(config_regressions_replay_cleanly),
        cmocka_unit_test(size_seeds_replay_cleanly),
        cmocka_unit_test(size_regressions_replay_cleanly),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
