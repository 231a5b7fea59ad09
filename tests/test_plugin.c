/* test_plugin.c - the plugin loader: the example plugins load, bad shared
 * objects are refused with the right code and a message naming the path and
 * the reason, a rebuilt file is noticed, and strict permissions hold. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "plugin.h"

#define PLUGINS TOP_BUILDDIR "/plugins/.libs/"
#define TEST_PLUGINS TOP_BUILDDIR "/tests/plugins/.libs/"

/* A scratch directory for copies of plugins, removed after each test. */
struct scratch {
    char dir[64];
    char path[128]; /* dir "/p.so" */
};

static int scratch_setup(void **state)
{
    struct scratch *s = calloc(1, sizeof *s);
    assert_non_null(s);
    strcpy(s->dir, "/tmp/th-test-plugin.XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->path, sizeof s->path, "%s/p.so", s->dir);
    *state = s;
    return 0;
}

static int scratch_teardown(void **state)
{
    struct scratch *s = *state;
    chmod(s->dir, 0700);
    unlink(s->path);
    rmdir(s->dir);
    free(s);
    return 0;
}

/* Copies file `from` to `to` with mode 0644. */
static void copy_file(const char *from, const char *to)
{
    char buf[65536];
    size_t n;
    FILE *in = fopen(from, "rb");
    assert_non_null(in);
    FILE *out = fopen(to, "wb");
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(chmod(to, 0644), 0);
}

/* Loads `path` expecting success, and returns the plugin. */
static struct plugin *load_ok(const char *path, int strict)
{
    struct plugin *p = NULL;
    char err[512];
    int rc = plugin_load("t", path, strict, &p, err, sizeof err);
    if (rc != 0)
        fail_msg("%s (%s)", err, th_strerror(rc));
    assert_non_null(p);
    return p;
}

/* Loads `path` expecting code `want`, and checks the message names `path`
 * once and contains `needle`. */
static void load_fails(const char *path, int strict, int want,
                       const char *needle)
{
    struct plugin *p = NULL;
    char err[512];
    int rc = plugin_load("t", path, strict, &p, err, sizeof err);
    assert_int_equal(rc, want);
    assert_null(p);
    assert_non_null(strstr(err, path));
    assert_null(strstr(strstr(err, path) + 1, path));
    if (strstr(err, needle) == NULL)
        fail_msg("'%s' not in message: %s", needle, err);
    assert_null(strchr(err, '\n'));
}

static void echo_loads_with_its_descriptor(void **state)
{
    struct plugin *p = load_ok(PLUGINS "echo.so", 1);
    (void)state;
    assert_string_equal(p->name, "t");
    assert_string_equal(p->path, PLUGINS "echo.so");
    assert_string_equal(p->desc.name, "echo");
    assert_string_equal(p->desc.version, "1.0");
    assert_int_equal(p->desc.abi_version, TH_ABI_VERSION);
    assert_null(p->desc.init);
    assert_null(p->desc.fini);
    assert_int_equal(p->ntasks, 1);
    assert_string_equal(p->desc.tasks[0].name, "echo");
    assert_int_equal(p->refs, 1);
    plugin_unref(p);
}

static void hash_has_init_and_fini(void **state)
{
    struct plugin *p = load_ok(PLUGINS "hash.so", 1);
    (void)state;
    assert_string_equal(p->desc.name, "hash");
    assert_non_null(p->desc.init);
    assert_non_null(p->desc.fini);
    assert_int_equal(p->ntasks, 1);
    assert_int_equal(plugin_find_task(p, "sha256"), 0);
    plugin_unref(p);
}

static void every_example_loads(void **state)
{
    static const struct {
        const char *file, *name, *tasks[4];
    } ex[] = {
        {"echo.so", "echo", {"echo"}},
        {"hash.so", "hash", {"sha256"}},
        {"sleep.so", "sleep", {"sleep"}},
        {"crash.so", "crash", {"segv", "abort", "exit"}},
        {"leak.so", "leak", {"leak"}},
    };
    (void)state;
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s%s", PLUGINS, ex[i].file);
        struct plugin *p = load_ok(path, 1);
        assert_string_equal(p->desc.name, ex[i].name);
        size_t n = 0;
        for (; n < 4 && ex[i].tasks[n] != NULL; n++)
            assert_int_equal(plugin_find_task(p, ex[i].tasks[n]), (int)n);
        assert_int_equal(p->ntasks, n);
        plugin_unref(p);
    }
}

static void missing_file_is_enoent(void **state)
{
    (void)state;
    load_fails("/nonexistent/dir/nothing.so", 0, TH_ENOENT, "no such file");
    load_fails(PLUGINS "nothing.so", 1, TH_ENOENT, "no such file");
}

static void directory_is_refused(void **state)
{
    (void)state;
    load_fails(PLUGINS, 0, TH_EINVAL, "not a regular file");
}

static void non_elf_file_is_refused_with_dlerror(void **state)
{
    struct scratch *s = *state;
    FILE *f = fopen(s->path, "w");
    assert_non_null(f);
    fputs("this is not a shared object\n", f);
    fclose(f);
    load_fails(s->path, 1, TH_EINVAL, "cannot load: ");
}

static void missing_symbol_is_einval_naming_it(void **state)
{
    (void)state;
    load_fails(TEST_PLUGINS "nosym.so", 1, TH_EINVAL, "'taskhost_plugin'");
}

static void abi_mismatch_names_both_versions(void **state)
{
    (void)state;
    load_fails(TEST_PLUGINS "badabi.so", 1, TH_EABI,
               "built for plugin ABI 999, this host supports ABI 1");
}

static void empty_task_table_is_refused(void **state)
{
    (void)state;
    load_fails(TEST_PLUGINS "notasks.so", 1, TH_EINVAL, "no tasks");
}

static void failing_init_still_loads(void **state)
{
    /* init() runs in workers, not at load. */
    struct plugin *p = load_ok(TEST_PLUGINS "badinit.so", 1);
    (void)state;
    assert_non_null(p->desc.init);
    plugin_unref(p);
}

static void find_task_by_name(void **state)
{
    struct plugin *p = load_ok(TEST_PLUGINS "echo2.so", 1);
    (void)state;
    assert_string_equal(p->desc.version, "2.0");
    assert_int_equal(p->ntasks, 2);
    assert_int_equal(plugin_find_task(p, "echo"), 0);
    assert_int_equal(plugin_find_task(p, "version"), 1);
    assert_int_equal(plugin_find_task(p, "nope"), -1);
    assert_int_equal(plugin_find_task(p, ""), -1);
    assert_int_equal(plugin_find_task(p, NULL), -1);
    plugin_unref(p);
}

static void faulty_loads(void **state)
{
    struct plugin *p = load_ok(TEST_PLUGINS "faulty.so", 1);
    (void)state;
    assert_int_equal(p->ntasks, 6);
    assert_int_equal(plugin_find_task(p, "closefds"), 4);
    assert_int_equal(plugin_find_task(p, "scribble"), 5);
    plugin_unref(p);
}

static void relative_path_is_made_absolute(void **state)
{
    char cwd[4096];
    (void)state;
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(TOP_BUILDDIR), 0);
    struct plugin *p = load_ok("plugins/.libs/echo.so", 1);
    assert_int_equal(chdir(cwd), 0);
    assert_string_equal(p->path, TOP_BUILDDIR "/plugins/.libs/echo.so");
    plugin_unref(p);
}

static void references_are_counted(void **state)
{
    struct plugin *p = load_ok(PLUGINS "echo.so", 1);
    (void)state;
    plugin_ref(p);
    assert_int_equal(p->refs, 2);
    plugin_unref(p);
    assert_int_equal(p->refs, 1);
    plugin_unref(p);
    plugin_unref(NULL);
}

static void changed_file_is_noticed(void **state)
{
    struct scratch *s = *state;
    copy_file(PLUGINS "echo.so", s->path);
    struct plugin *p = load_ok(s->path, 1);
    assert_int_equal(plugin_file_changed(p), 0);

    struct timespec later[2] = {{0, UTIME_OMIT}, p->mtime};
    later[1].tv_sec += 10;
    assert_int_equal(utimensat(AT_FDCWD, s->path, later, 0), 0);
    assert_int_equal(plugin_file_changed(p), 1);

    struct timespec same[2] = {{0, UTIME_OMIT}, p->mtime};
    assert_int_equal(utimensat(AT_FDCWD, s->path, same, 0), 0);
    assert_int_equal(plugin_file_changed(p), 0);

    assert_int_equal(unlink(s->path), 0);
    assert_int_equal(plugin_file_changed(p), 1);
    copy_file(TEST_PLUGINS "echo2.so", s->path); /* a new inode */
    assert_int_equal(plugin_file_changed(p), 1);
    plugin_unref(p);
}

/* Puts a copy of `from` at s->path as a new file (new inode), the way a
 * build or an installer replaces a plugin. */
static void replace_file(struct scratch *s, const char *from)
{
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s/new.so", s->dir);
    copy_file(from, tmp);
    assert_int_equal(rename(tmp, s->path), 0);
}

static void same_file_twice_shares_the_object(void **state)
{
    struct scratch *s = *state;
    copy_file(PLUGINS "echo.so", s->path);
    struct plugin *a = load_ok(s->path, 1);
    struct plugin *b = load_ok(s->path, 1);
    assert_ptr_equal(a->dl, b->dl);
    assert_ptr_equal(a->desc.tasks, b->desc.tasks);
    plugin_unref(a);
    assert_string_equal(b->desc.tasks[0].name, "echo");
    plugin_unref(b);
}

static void rebuilt_file_is_loaded_while_old_build_lives(void **state)
{
    struct scratch *s = *state;
    copy_file(PLUGINS "echo.so", s->path);
    struct plugin *old = load_ok(s->path, 1);
    replace_file(s, TEST_PLUGINS "echo2.so");
    assert_int_equal(plugin_file_changed(old), 1);

    struct plugin *new = load_ok(s->path, 1);
    assert_ptr_not_equal(new->dl, old->dl);
    assert_string_equal(new->desc.version, "2.0");
    assert_int_equal(plugin_find_task(new, "version"), 1);
    assert_string_equal(new->path, s->path);
    assert_string_equal(old->desc.version, "1.0");
    assert_int_equal(plugin_find_task(old, "version"), -1);

    /* And once more, the old build gone: back to echo 1.0. */
    plugin_unref(old);
    replace_file(s, PLUGINS "echo.so");
    struct plugin *third = load_ok(s->path, 1);
    assert_string_equal(third->desc.version, "1.0");
    assert_string_equal(new->desc.version, "2.0");
    plugin_unref(new);
    plugin_unref(third);
}

static void group_writable_file_is_refused(void **state)
{
    struct scratch *s = *state;
    copy_file(PLUGINS "echo.so", s->path);
    assert_int_equal(chmod(s->path, 0664), 0);
    load_fails(s->path, 1, TH_EPERM, "writable by group or others (mode 0664)");
    plugin_unref(load_ok(s->path, 0)); /* only when strict */
}

static void file_of_another_user_is_refused(void **state)
{
    struct scratch *s = *state;
    if (geteuid() != 0)
        skip();
    copy_file(PLUGINS "echo.so", s->path);
    assert_int_equal(chown(s->path, 4242, (gid_t)-1), 0);
    load_fails(s->path, 1, TH_EPERM, "owned by uid 4242");
}

static void open_directory_is_refused(void **state)
{
    struct scratch *s = *state;
    copy_file(PLUGINS "echo.so", s->path);
    assert_int_equal(chmod(s->dir, 0777), 0);
    load_fails(s->path, 1, TH_EPERM, "is writable by group or others");
    plugin_unref(load_ok(s->path, 0));
}

static void sticky_directory_is_accepted(void **state)
{
    struct scratch *s = *state;
    copy_file(PLUGINS "echo.so", s->path);
    assert_int_equal(chmod(s->dir, 01777), 0);
    plugin_unref(load_ok(s->path, 1));
}

static void symlink_from_open_directory_is_refused(void **state)
{
    struct scratch *s = *state;
    char link[160];
    assert_int_equal(chmod(s->dir, 0777), 0);
    snprintf(link, sizeof link, "%s/link.so", s->dir);
    assert_int_equal(symlink(PLUGINS "echo.so", link), 0);
    load_fails(link, 1, TH_EPERM, "writable by group or others");
    unlink(link);
}

/* A plugin built against the ABI 1 header of the SDK loads as it was. */
static void abi_1_plugin_loads_with_its_tasks(void **state)
{
    struct plugin *p = load_ok(TEST_PLUGINS "compat_v1.so", 1);
    (void)state;
    assert_int_equal(p->desc.abi_version, 1);
    assert_int_equal(p->desc.struct_size, offsetof(th_plugin, tasks) +
                                              sizeof(void *));
    assert_string_equal(p->desc.name, "compat_v1");
    assert_non_null(p->desc.init);
    assert_non_null(p->desc.fini);
    assert_null(p->desc.task_info);
    assert_int_equal(p->ntasks, 4);
    assert_string_equal(p->tasks[1].name, "greet");
    assert_int_equal(plugin_find_task(p, "v1_name"), 3);
    plugin_unref(p);
}

/* The line a refused newer plugin gets names its ABI and the host's. */
static void want_newer_abi_line(char *buf, size_t n)
{
    snprintf(buf, n, "built for plugin ABI %d, this host supports ABI %d to %d",
             TH_ABI_VERSION + 1, TH_ABI_VERSION_MIN, TH_ABI_VERSION);
}

static void future_abi_is_refused_naming_both_versions(void **state)
{
    char want[128];
    (void)state;
    want_newer_abi_line(want, sizeof want);
    load_fails(TEST_PLUGINS "future_abi.so", 1, TH_EABI, want);
}

/* A newer plugin that calls an SDK function this host lacks cannot be
 * dlopen()ed whole; its ABI is still read and named. */
static void newer_sdk_plugin_is_refused_by_abi_not_dlerror(void **state)
{
    char want[128];
    (void)state;
    want_newer_abi_line(want, sizeof want);
    load_fails(TEST_PLUGINS "newer_sdk.so", 1, TH_EABI, want);
}

static void missing_sdk_function_is_named(void **state)
{
    (void)state;
    load_fails(TEST_PLUGINS "newer_sdk_same_abi.so", 1, TH_EABI,
               "needs th_task_teleport, which this host");
}

/* Entries larger than this host's th_task_info are walked by their own
 * size; the fields the host knows are kept. */
static void growable_task_table_with_larger_entries_loads(void **state)
{
    struct plugin *p = load_ok(TEST_PLUGINS "taskinfo.so", 1);
    (void)state;
    assert_int_equal(p->desc.abi_version, TH_ABI_VERSION);
    assert_null(p->desc.tasks);
    assert_int_equal(p->ntasks, 2);
    assert_string_equal(p->tasks[0].name, "echo");
    assert_string_equal(p->tasks[1].name, "upper");
    assert_non_null(p->tasks[1].run);
    assert_int_equal(p->tasks[1].struct_size, sizeof(th_task_info) + 16);
    plugin_unref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(echo_loads_with_its_descriptor),
        cmocka_unit_test(hash_has_init_and_fini),
        cmocka_unit_test(every_example_loads),
        cmocka_unit_test(missing_file_is_enoent),
        cmocka_unit_test(directory_is_refused),
        cmocka_unit_test_setup_teardown(non_elf_file_is_refused_with_dlerror,
                                        scratch_setup, scratch_teardown),
        cmocka_unit_test(missing_symbol_is_einval_naming_it),
        cmocka_unit_test(abi_mismatch_names_both_versions),
        cmocka_unit_test(abi_1_plugin_loads_with_its_tasks),
        cmocka_unit_test(future_abi_is_refused_naming_both_versions),
        cmocka_unit_test(newer_sdk_plugin_is_refused_by_abi_not_dlerror),
        cmocka_unit_test(missing_sdk_function_is_named),
        cmocka_unit_test(growable_task_table_with_larger_entries_loads),
        cmocka_unit_test(empty_task_table_is_refused),
        cmocka_unit_test(failing_init_still_loads),
        cmocka_unit_test(find_task_by_name),
        cmocka_unit_test(faulty_loads),
        cmocka_unit_test(relative_path_is_made_absolute),
        cmocka_unit_test(references_are_counted),
        cmocka_unit_test_setup_teardown(changed_file_is_noticed, scratch_setup,
                                        scratch_teardown),
        cmocka_unit_test_setup_teardown(same_file_twice_shares_the_object,
                                        scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(
            rebuilt_file_is_loaded_while_old_build_lives, scratch_setup,
            scratch_teardown),
        cmocka_unit_test_setup_teardown(group_writable_file_is_refused,
                                        scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(file_of_another_user_is_refused,
                                        scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(open_directory_is_refused,
                                        scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(sticky_directory_is_accepted,
                                        scratch_setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(symlink_from_open_directory_is_refused,
                                        scratch_setup, scratch_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
