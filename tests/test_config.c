/* test_config.c - loading and validating taskhost.conf, and settings.
 *
 * Each test writes its config into a fresh mkdtemp directory that also
 * holds an empty "hash.so" (config.c only checks that plugin files exist).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libconfig.h>

#include "../host/engine/config.h" /* not the build tree's autoconf config.h */
#include "settings.h"
#include "taskhost.h"
#include "taskhost_host.h"

static char tmp[PATH_MAX];       /* the test's directory (no symlinks) */
static char conf[PATH_MAX + 32]; /* tmp/taskhost.conf */
static char err[1024];
static struct config *cfg;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static char *in_tmp(const char *name)
{
    static char path[PATH_MAX + 64];

    snprintf(path, sizeof(path), "%s/%s", tmp, name);
    return path;
}

static int setup(void **state)
{
    char templ[] = "/tmp/test_config.XXXXXX";

    (void)state;
    if (mkdtemp(templ) == NULL || realpath(templ, tmp) == NULL)
        return -1;
    snprintf(conf, sizeof(conf), "%s/taskhost.conf", tmp);
    write_file(in_tmp("hash.so"), "");
    err[0] = '\0';
    cfg = NULL;
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    (void)state;
    config_free(cfg);
    cfg = NULL;
    return nftw(tmp, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* Writes `text` as the config and loads it. */
static int load(const char *text)
{
    write_file(conf, text);
    return config_load(conf, &cfg, err, sizeof(err));
}

/* Asserts that the load failed with TH_ECONFIG and a message that starts
 * with "CONF:LINE: KEY:" and contains `reason`. */
static void assert_fault(int rc, int line, const char *key, const char *reason)
{
    char want[PATH_MAX + 300];

    snprintf(want, sizeof(want), "%s:%d: %s: ", conf, line, key);
    if (rc != TH_ECONFIG || strncmp(err, want, strlen(want)) != 0 ||
        strstr(err, reason) == NULL)
        fail_msg("rc %d, message \"%s\", want \"%s...%s\"", rc, err, want,
                 reason);
    assert_null(cfg);
    assert_null(strchr(err, '\n'));
}

#define PLUGIN "plugins = ( { name = \"hash\"; path = \"hash.so\"; } );\n"

/* A config whose pools[0] group opens on line 2 and holds `keys` on
 * line 3. */
static int load_pool(const char *keys)
{
    char text[2048];

    snprintf(text, sizeof(text),
             PLUGIN "pools = ( { name = \"p\"; plugin = \"hash\";\n"
                    "  %s\n"
                    "} );\n",
             keys);
    return load(text);
}

/* ---- the spec's example and defaults ---- */

static const char spec_example[] =
    "host: {\n"
    "  socket = \"taskhost.sock\";\n"
    "  socket_mode = \"0660\";\n"
    "  log = \"stderr\";\n"
    "  log_level = \"info\";\n"
    "  shutdown_timeout = 30.0;\n"
    "};\n"
    "plugins = ( { name = \"hash\"; path = \"plugins/hash.so\"; } );\n"
    "pools = (\n"
    "  { name = \"default\"; plugin = \"hash\";\n"
    "    min_workers = 1;  max_workers = 4;\n"
    "    idle_timeout = 30.0;\n"
    "    max_queue = 1024;  overflow = \"reject\";\n"
    "    queue_timeout = 0.0;\n"
    "    task_timeout = 10.0;\n"
    "    memory_soft_limit = \"256M\";\n"
    "    memory_hard_limit = \"512M\";\n"
    "    max_tasks_per_worker = 0;\n"
    "    settings = { };\n"
    "  }\n"
    ");\n";

static void test_spec_example_loads_with_expected_values(void **state)
{
    (void)state;
    assert_int_equal(mkdir(in_tmp("plugins"), 0755), 0);
    write_file(in_tmp("plugins/hash.so"), "");
    assert_int_equal(load(spec_example), 0);
    assert_string_equal(cfg->path, conf);
    assert_string_equal(cfg->dir, tmp);
    assert_string_equal(cfg->host.socket, in_tmp("taskhost.sock"));
    assert_int_equal(cfg->host.socket_mode, 0660);
    assert_string_equal(cfg->host.log, "stderr");
    assert_int_equal(cfg->host.log_level, TH_LOG_INFO);
    assert_true(cfg->host.shutdown_timeout == 30.0);
    assert_int_equal(cfg->nplugins, 1);
    assert_string_equal(cfg->plugins[0].name, "hash");
    assert_string_equal(cfg->plugins[0].path, in_tmp("plugins/hash.so"));
    assert_int_equal(cfg->plugins[0].line, 8);
    assert_int_equal(cfg->npools, 1);

    const struct pool_cfg *p = &cfg->pools[0];

    assert_string_equal(p->name, "default");
    assert_string_equal(p->plugin, "hash");
    assert_int_equal(p->line, 10);
    assert_int_equal(p->min_workers, 1);
    assert_int_equal(p->max_workers, 4);
    assert_true(p->idle_timeout == 30.0);
    assert_int_equal(p->max_queue, 1024);
    assert_int_equal(p->overflow, OVERFLOW_REJECT);
    assert_true(p->queue_timeout == 0.0);
    assert_true(p->task_timeout == 10.0);
    assert_int_equal(p->memory_soft_limit, 256u << 20);
    assert_int_equal(p->memory_hard_limit, 512u << 20);
    assert_int_equal(p->max_tasks_per_worker, 0);
    assert_non_null(p->settings);
    assert_int_equal(p->settings->n, 0);
}

static void test_unset_keys_get_documented_defaults(void **state)
{
    (void)state;
    assert_int_equal(load_pool(""), 0);
    assert_string_equal(cfg->host.socket, in_tmp("taskhost.sock"));
    assert_int_equal(cfg->host.socket_mode, 0660);
    assert_null(cfg->host.socket_group);
    assert_string_equal(cfg->host.log, "stderr");
    assert_int_equal(cfg->host.log_level, TH_LOG_INFO);
    assert_true(cfg->host.shutdown_timeout == 30.0);
    assert_int_equal(cfg->host.max_payload, 64u << 20);
    assert_int_equal(cfg->host.strict_permissions, 1);
    assert_int_equal(cfg->host.submit_uids.n, 0);
    assert_int_equal(cfg->host.admin_gids.n, 0);

    const struct pool_cfg *p = &cfg->pools[0];

    assert_int_equal(p->min_workers, 1);
    assert_int_equal(p->max_workers, sysconf(_SC_NPROCESSORS_ONLN));
    assert_true(p->idle_timeout == 30.0);
    assert_int_equal(p->max_queue, 1024);
    assert_true(p->task_timeout == 10.0);
    assert_true(p->kill_grace == 1.0);
    assert_true(p->memory_check_interval == 1.0);
    assert_int_equal(p->memory_soft_limit, 0);
    assert_int_equal(p->memory_hard_limit, 0);
    assert_int_equal(p->rlimit_nofile, 0);
    assert_int_equal(p->rlimit_core, -1);
    assert_null(p->user);
    assert_null(p->group);
    assert_non_null(p->settings);
}

static void test_empty_file_is_a_valid_config(void **state)
{
    (void)state;
    assert_int_equal(load(""), 0);
    assert_int_equal(cfg->nplugins, 0);
    assert_int_equal(cfg->npools, 0);
    assert_string_equal(cfg->host.socket, in_tmp("taskhost.sock"));
}

static void test_min_workers_above_cpu_count_raises_default_max(void **state)
{
    (void)state;
    assert_int_equal(load_pool("min_workers = 4096;"), 0);
    assert_int_equal(cfg->pools[0].max_workers, 4096);
}

static void test_every_pool_key_is_read(void **state)
{
    char line[256];
    gid_t gid = getgid();

    (void)state;
    snprintf(line, sizeof(line),
             "kill_grace = 2; memory_budget = \"1G\"; "
             "memory_check_interval = \"500ms\"; address_space_limit = "
             "\"4G\"; max_worker_age = \"1h\"; user = \"%u\"; group = %u; "
             "rlimit_nofile = 256; rlimit_core = 0; overflow = \"block\";",
             (unsigned)getuid(), (unsigned)gid);
    assert_int_equal(load_pool(line), 0);

    const struct pool_cfg *p = &cfg->pools[0];

    assert_true(p->kill_grace == 2.0);
    assert_int_equal(p->memory_budget, 1u << 30);
    assert_true(p->memory_check_interval == 0.5);
    assert_int_equal(p->address_space_limit, (uint64_t)4 << 30);
    assert_true(p->max_worker_age == 3600.0);
    assert_int_equal(strtoul(p->user, NULL, 10), getuid());
    assert_int_equal(strtoul(p->group, NULL, 10), gid);
    assert_int_equal(p->rlimit_nofile, 256);
    assert_int_equal(p->rlimit_core, 0);
    assert_int_equal(p->overflow, OVERFLOW_BLOCK);
}

/* ---- faults: one line naming file, line and key ---- */

static void test_syntax_error_names_file_and_line(void **state)
{
    char want[PATH_MAX + 64];

    (void)state;
    assert_int_equal(load("host = {\n  socket = \"x\";\n  log = ;\n};\n"),
                     TH_ECONFIG);
    snprintf(want, sizeof(want), "%s:3: ", conf);
    assert_true(strncmp(err, want, strlen(want)) == 0);
    assert_non_null(strstr(err, "syntax error"));
    assert_null(cfg);
}

static void test_unknown_top_key_names_file_line_and_key(void **state)
{
    (void)state;
    assert_fault(load("host = {};\n\nhsot = 1;\n"), 3, "hsot", "unknown key");
}

static void test_unknown_host_key_suggests_the_near_one(void **state)
{
    (void)state;
    assert_fault(load("host = {\n  log_levle = \"info\";\n};\n"), 2,
                 "host.log_levle", "did you mean \"log_level\"");
}

static void test_unknown_plugin_key_names_file_line_and_key(void **state)
{
    (void)state;
    assert_fault(load("plugins = (\n  { name = \"hash\";\n"
                      "    path = \"hash.so\";\n    flavour = 1; }\n);\n"),
                 4, "plugins[0].flavour", "unknown key");
}

static void test_unknown_pool_key_names_file_line_and_key(void **state)
{
    (void)state;
    assert_fault(load_pool("workers = 3;"), 3, "pools[0].workers",
                 "unknown key");
}

static void test_wrong_type_names_file_line_and_key(void **state)
{
    (void)state;
    assert_fault(load_pool("max_workers = \"four\";"), 3,
                 "pools[0].max_workers", "must be an integer (got a string)");
}

static void test_wrong_type_of_group_is_refused(void **state)
{
    (void)state;
    assert_fault(load("\nhost = 3;\n"), 2, "host", "must be a group");
    config_free(cfg);
    cfg = NULL;
    assert_fault(load("pools = { name = \"p\"; };\n"), 1, "pools",
                 "must be a list");
}

static void test_wrong_type_of_bool_is_refused(void **state)
{
    (void)state;
    assert_fault(load("host = {\n strict_permissions = 1;\n};\n"), 2,
                 "host.strict_permissions", "must be true or false");
}

static void test_negative_count_is_refused(void **state)
{
    (void)state;
    assert_fault(load_pool("min_workers = -1;"), 3, "pools[0].min_workers",
                 "must be >= 0 (got -1)");
}

static void test_max_workers_below_one_is_refused(void **state)
{
    (void)state;
    assert_fault(load_pool("min_workers = 0; max_workers = 0;"), 3,
                 "pools[0].max_workers", "must be >= 1 (got 0)");
}

static void test_negative_timeout_is_refused(void **state)
{
    (void)state;
    assert_fault(load_pool("task_timeout = -1.5;"), 3, "pools[0].task_timeout",
                 "must be >= 0 seconds");
}

static void test_zero_memory_check_interval_is_refused(void **state)
{
    (void)state;
    assert_fault(load_pool("memory_check_interval = 0;"), 3,
                 "pools[0].memory_check_interval", "must be > 0");
}

static void test_min_workers_above_max_names_max_workers(void **state)
{
    char want[PATH_MAX + 160];

    (void)state;
    assert_fault(load_pool("min_workers = 4;\n  max_workers = 2;"), 4,
                 "pools[0].max_workers", "must be >= min_workers");
    snprintf(want, sizeof(want),
             "%s:4: pools[0].max_workers: must be >= min_workers (2 < 4)",
             conf);
    assert_string_equal(err, want);
}

static void test_soft_above_hard_memory_limit_is_refused(void **state)
{
    (void)state;
    assert_fault(load_pool("memory_soft_limit = \"512M\";\n"
                           "  memory_hard_limit = \"256M\";"),
                 4, "pools[0].memory_hard_limit",
                 "must be >= memory_soft_limit (256M < 512M)");
}

static void test_soft_limit_alone_is_accepted(void **state)
{
    (void)state;
    assert_int_equal(load_pool("memory_soft_limit = \"512M\";"), 0);
    assert_int_equal(cfg->pools[0].memory_hard_limit, 0);
}

static void test_duplicate_plugin_names_are_refused(void **state)
{
    (void)state;
    assert_fault(load("plugins = (\n"
                      "  { name = \"hash\"; path = \"hash.so\"; },\n"
                      "  { name = \"hash\"; path = \"hash.so\"; }\n);\n"),
                 3, "plugins[1].name", "duplicate plugin name \"hash\"");
}

static void test_duplicate_pool_names_are_refused(void **state)
{
    (void)state;
    assert_fault(load(PLUGIN "pools = (\n"
                             "  { name = \"p\"; plugin = \"hash\"; },\n"
                             "  { name = \"q\"; plugin = \"hash\"; },\n"
                             "  { name = \"p\"; plugin = \"hash\"; }\n);\n"),
                 5, "pools[2].name", "duplicate pool name \"p\"");
}

static void test_pool_with_unknown_plugin_is_refused(void **state)
{
    (void)state;
    assert_fault(load(PLUGIN "pools = ( {\n  name = \"p\";\n"
                             "  plugin = \"hsah\";\n} );\n"),
                 4, "pools[0].plugin", "unknown plugin \"hsah\"");
}

static void test_cluster_group_is_read_with_defaults(void **state)
{
    (void)state;
    assert_int_equal(load(PLUGIN "pools = ( { name = \"p\"; plugin = \"hash\";"
                                 " shared = true; } );\n"
                                 "cluster = { redis = \"127.0.0.1:6379\";"
                                 " lease = \"2s\"; };\n"),
                     0);
    assert_true(cfg->pools[0].shared);
    assert_string_equal(cfg->cluster.redis, "127.0.0.1:6379");
    assert_string_equal(cfg->cluster.name, "taskhost");
    assert_true(cfg->cluster.lease == 2.0);
    assert_true(cfg->cluster.heartbeat == 1.0);
    assert_int_equal(cfg->cluster.max_attempts, 3);
    assert_true(cfg->cluster.result_ttl == 3600.0);
}

static void test_shared_pool_without_cluster_is_refused(void **state)
{
    (void)state;
    assert_fault(load(PLUGIN "pools = ( {\n  name = \"p\"; plugin = \"hash\";\n"
                             "  shared = true;\n} );\n"),
                 4, "pools[0].shared", "needs a cluster group");
}

static void test_cluster_bad_redis_and_heartbeat_are_refused(void **state)
{
    (void)state;
    assert_fault(load("cluster = {\n  redis = \"localhost\";\n};\n"), 2,
                 "cluster.redis", "\"unix:/absolute/path\" or \"host:port\"");
    assert_fault(load("cluster = {\n  redis = \"unix:/r.sock\";\n"
                      "  lease = 1.0;\n  heartbeat = 0.8;\n};\n"),
                 4, "cluster.heartbeat", "at most half the lease");
    assert_fault(load("cluster = {\n  redis = \"unix:/r.sock\";\n"
                      "  max_attempts = 0;\n};\n"),
                 3, "cluster.max_attempts", "must be 1 to 1000");
}

static void test_pools_may_come_before_plugins(void **state)
{
    (void)state;
    assert_int_equal(
        load("pools = ( { name = \"p\"; plugin = \"hash\"; } );\n" PLUGIN), 0);
    assert_int_equal(cfg->npools, 1);
}

static void test_missing_plugin_file_says_no_such_file(void **state)
{
    (void)state;
    assert_fault(load("plugins = ( {\n  name = \"hash\";\n"
                      "  path = \"nothere.so\";\n} );\n"),
                 3, "plugins[0].path", "no such file");
    assert_non_null(strstr(err, in_tmp("nothere.so")));
}

static void test_missing_required_keys_are_refused(void **state)
{
    (void)state;
    assert_fault(load("plugins = (\n  { name = \"hash\"; }\n);\n"), 2,
                 "plugins[0].path", "missing");
    assert_fault(load(PLUGIN "pools = (\n  { plugin = \"hash\"; }\n);\n"), 3,
                 "pools[0].name", "missing");
    assert_fault(load(PLUGIN "pools = (\n  { name = \"p\"; }\n);\n"), 3,
                 "pools[0].plugin", "missing");
}

static void test_bad_names_are_refused(void **state)
{
    (void)state;
    assert_fault(load_pool("\n} , { name = \"a b\"; plugin = \"hash\";"), 4,
                 "pools[1].name", "must be 1 to 64 letters");
}

static void test_overflow_modes_parse_and_garbage_is_refused(void **state)
{
    (void)state;
    assert_int_equal(config_parse_overflow("reject"), OVERFLOW_REJECT);
    assert_int_equal(config_parse_overflow("drop-oldest"),
                     OVERFLOW_DROP_OLDEST);
    assert_int_equal(config_parse_overflow("block"), OVERFLOW_BLOCK);
    assert_int_equal(config_parse_overflow("Block"), -1);
    assert_int_equal(config_parse_overflow(NULL), -1);
    assert_fault(load_pool("overflow = \"spill\";"), 3, "pools[0].overflow",
                 "must be \"reject\", \"drop-oldest\" or \"block\"");
}

static void test_log_levels_parse_and_garbage_is_refused(void **state)
{
    (void)state;
    assert_int_equal(config_parse_log_level("error"), TH_LOG_ERROR);
    assert_int_equal(config_parse_log_level("warn"), TH_LOG_WARN);
    assert_int_equal(config_parse_log_level("info"), TH_LOG_INFO);
    assert_int_equal(config_parse_log_level("debug"), TH_LOG_DEBUG);
    assert_int_equal(config_parse_log_level("loud"), -1);
    assert_fault(load("host = {\n  log_level = \"loud\";\n};\n"), 2,
                 "host.log_level", "\"loud\"");
}

static void test_socket_mode_must_be_octal(void **state)
{
    (void)state;
    assert_fault(load("host = {\n  socket_mode = \"0680\";\n};\n"), 2,
                 "host.socket_mode", "not an octal mode");
    assert_fault(load("host = {\n  socket_mode = \"rw\";\n};\n"), 2,
                 "host.socket_mode", "not an octal mode");
    assert_fault(load("host = {\n  socket_mode = \"01777\";\n};\n"), 2,
                 "host.socket_mode", "not an octal mode");
}

static void test_socket_mode_integer_is_read_as_typed(void **state)
{
    (void)state;
    assert_int_equal(load("host = { socket_mode = 0600; };\n"), 0);
    assert_int_equal(cfg->host.socket_mode, 0600);
    config_free(cfg);
    cfg = NULL;
    assert_int_equal(load("host = { socket_mode = 0x1B0; };\n"), 0);
    assert_int_equal(cfg->host.socket_mode, 0660);
}

static void test_socket_path_too_long_is_refused(void **state)
{
    char text[512];

    (void)state;
    snprintf(text, sizeof(text), "host = {\n  socket = \"/%0200d\";\n};\n", 0);
    assert_fault(load(text), 2, "host.socket", "too long for a unix socket");
}

/* ---- sizes and durations ---- */

static void test_sizes_parse_with_1024_based_suffixes(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(config_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(config_parse_size("123", &v), 0);
    assert_int_equal(v, 123);
    assert_int_equal(config_parse_size("64K", &v), 0);
    assert_int_equal(v, 64 * 1024);
    assert_int_equal(config_parse_size("256m", &v), 0);
    assert_int_equal(v, 256u << 20);
    assert_int_equal(config_parse_size("2G", &v), 0);
    assert_int_equal(v, (uint64_t)2 << 30);
    assert_int_equal(config_parse_size("1T", &v), 0);
    assert_int_equal(v, (uint64_t)1 << 40);
    assert_int_equal(config_parse_size("8MiB", &v), 0);
    assert_int_equal(v, 8u << 20);
    assert_int_equal(config_parse_size("8kb", &v), 0);
    assert_int_equal(v, 8192);
    assert_int_equal(config_parse_size("100B", &v), 0);
    assert_int_equal(v, 100);
}

static void test_size_garbage_negative_and_overflow_are_refused(void **state)
{
    static const char *bad[] = {"",
                                "M",
                                "-1",
                                "-1K",
                                " 5",
                                "5 M",
                                "1.5G",
                                "12Q",
                                "5KK",
                                "0x10",
                                "99999999999999999999",
                                "17179869184G",
                                NULL};
    uint64_t v = 7;

    (void)state;
    for (int i = 0; bad[i] != NULL; i++) {
        if (config_parse_size(bad[i], &v) != TH_EINVAL)
            fail_msg("size \"%s\" was accepted", bad[i]);
    }
    assert_int_equal(config_parse_size(NULL, &v), TH_EINVAL);
    assert_int_equal(v, 7);
}

static void test_durations_parse_with_units(void **state)
{
    double v;

    (void)state;
    assert_int_equal(config_parse_duration("1.5", &v), 0);
    assert_true(v == 1.5);
    assert_int_equal(config_parse_duration("250ms", &v), 0);
    assert_true(v == 0.25);
    assert_int_equal(config_parse_duration("30s", &v), 0);
    assert_true(v == 30.0);
    assert_int_equal(config_parse_duration("5m", &v), 0);
    assert_true(v == 300.0);
    assert_int_equal(config_parse_duration("1h", &v), 0);
    assert_true(v == 3600.0);
    assert_int_equal(config_parse_duration("0", &v), 0);
    assert_true(v == 0.0);
}

static void test_duration_garbage_and_negative_are_refused(void **state)
{
    static const char *bad[] = {"",      "s",       "-1",  "-5s",
                                "fast",  "5 years", "nan", "inf",
                                "1e400", "5mss",    NULL};
    double v = 7;

    (void)state;
    for (int i = 0; bad[i] != NULL; i++) {
        if (config_parse_duration(bad[i], &v) != TH_EINVAL)
            fail_msg("duration \"%s\" was accepted", bad[i]);
    }
    assert_int_equal(config_parse_duration(NULL, &v), TH_EINVAL);
    assert_true(v == 7);
}

static void test_config_accepts_sizes_and_durations_in_any_form(void **state)
{
    (void)state;
    assert_int_equal(load_pool("memory_soft_limit = 1048576; "
                               "memory_hard_limit = \"2G\"; "
                               "idle_timeout = \"250ms\"; queue_timeout = 2; "
                               "task_timeout = 0.5;"),
                     0);
    assert_int_equal(cfg->pools[0].memory_soft_limit, 1048576);
    assert_int_equal(cfg->pools[0].memory_hard_limit, (uint64_t)2 << 30);
    assert_true(cfg->pools[0].idle_timeout == 0.25);
    assert_true(cfg->pools[0].queue_timeout == 2.0);
    assert_true(cfg->pools[0].task_timeout == 0.5);
}

static void test_config_refuses_bad_sizes_and_durations(void **state)
{
    (void)state;
    assert_fault(load_pool("memory_budget = -1;"), 3, "pools[0].memory_budget",
                 "must be >= 0 bytes");
    assert_fault(load_pool("memory_budget = \"lots\";"), 3,
                 "pools[0].memory_budget", "not a size: \"lots\"");
    assert_fault(load_pool("memory_budget = 1.5;"), 3, "pools[0].memory_budget",
                 "must be a size");
    assert_fault(load_pool("idle_timeout = \"soon\";"), 3,
                 "pools[0].idle_timeout", "not a duration: \"soon\"");
    assert_fault(load("host = {\n  shutdown_timeout = -1;\n};\n"), 2,
                 "host.shutdown_timeout", "must be >= 0 seconds");
    assert_fault(load("host = {\n  max_payload = 0;\n};\n"), 2,
                 "host.max_payload", "must be > 0");
}

/* ---- paths ---- */

static void test_relative_paths_resolve_against_config_dir(void **state)
{
    char cwd[PATH_MAX], sub[PATH_MAX + 64];

    (void)state;
    snprintf(sub, sizeof(sub), "%s", in_tmp("etc"));
    assert_int_equal(mkdir(sub, 0755), 0);
    write_file(in_tmp("etc/hash.so"), "");
    write_file(in_tmp("etc/taskhost.conf"),
               "host = { socket = \"run/th.sock\"; log = \"./th.log\"; };\n"
               "plugins = ( { name = \"hash\"; path = \"hash.so\"; } );\n");
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(tmp), 0);
    int rc = config_load("etc/taskhost.conf", &cfg, err, sizeof(err));

    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg->path, "etc/taskhost.conf");
    assert_string_equal(cfg->dir, sub);
    assert_string_equal(cfg->host.socket, in_tmp("etc/run/th.sock"));
    assert_string_equal(cfg->host.log, in_tmp("etc/th.log"));
    assert_string_equal(cfg->plugins[0].path, in_tmp("etc/hash.so"));
}

static void test_absolute_paths_and_log_names_are_kept(void **state)
{
    char text[PATH_MAX + 256];

    (void)state;
    snprintf(text, sizeof(text),
             "host = { socket = \"/run/th.sock\"; log = \"syslog\"; };\n"
             "plugins = ( { name = \"hash\"; path = \"%s\"; } );\n",
             in_tmp("hash.so"));
    assert_int_equal(load(text), 0);
    assert_string_equal(cfg->host.socket, "/run/th.sock");
    assert_string_equal(cfg->host.log, "syslog");
    assert_string_equal(cfg->plugins[0].path, in_tmp("hash.so"));
}

/* ---- users and groups ---- */

static void test_user_and_group_lists_resolve_names_and_ids(void **state)
{
    struct group *gr = getgrgid(0);
    char text[512];

    (void)state;
    assert_non_null(gr);
    snprintf(text, sizeof(text),
             "host = { submit_users = [\"root\", \"1234\"];\n"
             "  submit_groups = (\"%s\", 55);\n"
             "  admin_users = [ 0 ]; admin_groups = \"%s\"; };\n",
             gr->gr_name, gr->gr_name);
    assert_int_equal(load(text), 0);
    assert_int_equal(cfg->host.submit_uids.n, 2);
    assert_int_equal(cfg->host.submit_uids.ids[0], 0);
    assert_int_equal(cfg->host.submit_uids.ids[1], 1234);
    assert_int_equal(cfg->host.submit_gids.n, 2);
    assert_int_equal(cfg->host.submit_gids.ids[0], 0);
    assert_int_equal(cfg->host.submit_gids.ids[1], 55);
    assert_int_equal(cfg->host.admin_uids.n, 1);
    assert_int_equal(cfg->host.admin_gids.n, 1);
}

static void test_unknown_user_or_group_is_refused(void **state)
{
    (void)state;
    assert_fault(load("host = {\n  submit_users = [\"root\",\n"
                      "    \"no-such-user-th\"];\n};\n"),
                 3, "host.submit_users[1]", "unknown user \"no-such-user-th\"");
    assert_fault(load("host = {\n  socket_group = \"no-such-group-th\";\n};\n"),
                 2, "host.socket_group", "unknown group");
    assert_fault(load_pool("user = \"no-such-user-th\";"), 3, "pools[0].user",
                 "unknown user");
}

/* ---- settings ---- */

static void test_settings_group_is_copied_with_dotted_keys(void **state)
{
    const th_settings *s;

    (void)state;
    assert_int_equal(load_pool("settings = { rounds = 3; name = \"x\"; "
                               "ratio = 0.5; fast = true; big = 5000000000L;"
                               " cache = { size = 64; dir = { path = \"/c\";"
                               " }; }; };"),
                     0);
    s = cfg->pools[0].settings;
    assert_int_equal(th_setting_int(s, "rounds", 1), 3);
    assert_string_equal(th_setting_string(s, "name", "d"), "x");
    assert_true(th_setting_float(s, "ratio", 0) == 0.5);
    assert_int_equal(th_setting_bool(s, "fast", 0), 1);
    assert_int_equal(th_setting_int(s, "big", 0), 5000000000LL);
    assert_int_equal(th_setting_int(s, "cache.size", 0), 64);
    assert_string_equal(th_setting_string(s, "cache.dir.path", NULL), "/c");
    assert_int_equal(th_setting_int(s, "cache", 9), 9);
}

static void test_settings_list_is_refused_with_key_and_line(void **state)
{
    (void)state;
    assert_fault(load_pool("settings = {\n    a = 1;\n"
                           "    cache = { sizes = [1, 2]; }; };"),
                 5, "pools[0].settings.cache.sizes",
                 "arrays and lists are not allowed");
    assert_fault(load_pool("settings = 3;"), 3, "pools[0].settings",
                 "must be a group");
}

static void test_setting_getters_return_defaults_and_check_types(void **state)
{
    struct th_settings *s = NULL;

    (void)state;
    assert_int_equal(settings_from_text("n = 3; f = 2.5; s = \"str\"; "
                                        "b = false;",
                                        &s, err, sizeof(err)),
                     0);
    assert_int_equal(th_setting_int(s, "missing", 42), 42);
    assert_string_equal(th_setting_string(s, "missing", "dflt"), "dflt");
    assert_true(th_setting_float(s, "missing", 1.25) == 1.25);
    assert_int_equal(th_setting_bool(s, "missing", 1), 1);
    /* another type: the default */
    assert_int_equal(th_setting_int(s, "s", 42), 42);
    assert_int_equal(th_setting_int(s, "f", 42), 42);
    assert_string_equal(th_setting_string(s, "n", "dflt"), "dflt");
    assert_int_equal(th_setting_bool(s, "n", 1), 1);
    assert_int_equal(th_setting_bool(s, "b", 1), 0);
    /* integers are accepted as floats */
    assert_true(th_setting_float(s, "n", 0) == 3.0);
    assert_true(th_setting_float(s, "f", 0) == 2.5);
    /* NULL settings or key */
    assert_int_equal(th_setting_int(NULL, "n", 7), 7);
    assert_int_equal(th_setting_int(s, NULL, 7), 7);
    settings_free(s);
}

static void test_settings_from_text_reports_syntax_errors(void **state)
{
    struct th_settings *s = (struct th_settings *)&s;

    (void)state;
    assert_int_equal(settings_from_text("rounds = ;", &s, err, sizeof(err)),
                     TH_ECONFIG);
    assert_null(s);
    assert_non_null(strstr(err, "line 1"));
    assert_int_equal(settings_from_text("a = (1, 2);", &s, err, sizeof(err)),
                     TH_ECONFIG);
    assert_non_null(strstr(err, "a: arrays and lists"));
    assert_int_equal(settings_from_text(NULL, &s, err, sizeof(err)), 0);
    assert_int_equal(s->n, 0);
    settings_free(s);
}

static void test_settings_equal_ignores_order_and_compares_types(void **state)
{
    struct th_settings *a, *b, *c, *d, *e;

    (void)state;
    assert_int_equal(settings_from_text("x = 1; y = \"s\"; g = { z = 1.5; };",
                                        &a, err, sizeof(err)),
                     0);
    assert_int_equal(settings_from_text("g = { z = 1.5; }; y = \"s\"; x = 1;",
                                        &b, err, sizeof(err)),
                     0);
    assert_int_equal(settings_from_text("x = 1.0; y = \"s\"; g = { z = 1.5; };",
                                        &c, err, sizeof(err)),
                     0);
    assert_int_equal(settings_from_text("x = 1; y = \"t\"; g = { z = 1.5; };",
                                        &d, err, sizeof(err)),
                     0);
    assert_int_equal(
        settings_from_text("x = 1; y = \"s\";", &e, err, sizeof(err)), 0);
    assert_true(settings_equal(a, b));
    assert_false(settings_equal(a, c)); /* int vs float */
    assert_false(settings_equal(a, d)); /* string value */
    assert_false(settings_equal(a, e)); /* a key fewer */
    assert_false(settings_equal(e, a));
    assert_true(settings_equal(NULL, NULL));
    settings_free(a);
    settings_free(b);
    settings_free(c);
    settings_free(d);
    settings_free(e);
}

/* ---- the config path itself ---- */

static void test_missing_config_returns_enoent(void **state)
{
    (void)state;
    assert_int_equal(config_load(in_tmp("nope.conf"), &cfg, err, sizeof(err)),
                     TH_ENOENT);
    assert_non_null(strstr(err, "nope.conf: no such file"));
    assert_null(cfg);
}

static void test_directory_as_config_is_refused(void **state)
{
    (void)state;
    assert_int_equal(config_load(tmp, &cfg, err, sizeof(err)), TH_EIO);
    assert_non_null(strstr(err, tmp));
    assert_non_null(strstr(err, "a directory"));
    assert_null(cfg);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "config_load() hung on a FIFO\n";

    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(2);
    _exit(1);
}

static void test_fifo_as_config_is_refused_without_hanging(void **state)
{
    char *fifo = in_tmp("fifo.conf");
    struct timespec t0, t1;

    (void)state;
    assert_int_equal(mkfifo(fifo, 0600), 0);
    signal(SIGALRM, on_alarm);
    alarm(5);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(config_load(fifo, &cfg, err, sizeof(err)), TH_EIO);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    assert_true(t1.tv_sec - t0.tv_sec < 2);
    assert_non_null(strstr(err, "a FIFO"));
    assert_null(cfg);
}

/* ---- pools built in code ---- */

static void test_pool_cfg_check_names_a_code_pool(void **state)
{
    struct pool_cfg p;

    (void)state;
    pool_cfg_defaults(&p);
    p.name = strdup("x");
    assert_int_equal(pool_cfg_check(&p, "pool 'x'", err, sizeof(err)), 0);
    p.min_workers = 3;
    p.max_workers = 2;
    assert_int_equal(pool_cfg_check(&p, "pool 'x'", err, sizeof(err)),
                     TH_ECONFIG);
    assert_string_equal(err, "pool 'x': max_workers: must be >= min_workers "
                             "(2 < 3)");
    p.max_workers = 3;
    p.kill_grace = -1;
    assert_int_equal(pool_cfg_check(&p, "f.conf:9: pools[1]", err, sizeof(err)),
                     TH_ECONFIG);
    assert_string_equal(err, "f.conf:9: pools[1].kill_grace: must be >= 0 "
                             "seconds (got -1)");
    pool_cfg_clear(&p);
    assert_null(p.name);
    assert_null(p.settings);
}

/* th_pool_opts_init() gives what a pool group without keys gives. */
static void test_pool_opts_defaults_are_the_config_defaults(void **state)
{
    struct pool_cfg c;
    th_pool_opts o;

    (void)state;
    pool_cfg_defaults(&c);
    th_pool_opts_init(&o);
    assert_int_equal(o.min_workers, c.min_workers);
    assert_int_equal(o.max_workers, c.max_workers);
    assert_int_equal(o.max_queue, c.max_queue);
    assert_string_equal(o.overflow, "reject");
    assert_true(o.task_timeout == c.task_timeout);
    assert_true(o.init_timeout == c.init_timeout);
    assert_true(o.memory_check_interval == c.memory_check_interval);
    assert_null(o.user);
    assert_null(o.group);
    assert_int_equal(o.rlimit_nofile, 0);
    assert_int_equal(o.rlimit_core, -1);
    pool_cfg_clear(&c);
}

/* user, group and the rlimits reach a pool built in code. */
static void test_pool_opts_carry_user_group_and_rlimits(void **state)
{
    struct pool_cfg c;
    th_pool_opts o;

    (void)state;
    th_pool_opts_init(&o);
    o.name = "p";
    o.plugin = "x";
    o.user = "0";
    o.group = "0";
    o.rlimit_nofile = 64;
    o.rlimit_core = 0;
    assert_int_equal(pool_cfg_from_opts(&c, &o, err, sizeof(err)), 0);
    assert_string_equal(c.user, "0");
    assert_string_equal(c.group, "0");
    assert_int_equal(c.rlimit_nofile, 64);
    assert_int_equal(c.rlimit_core, 0);
    pool_cfg_clear(&c);
}

static void test_pool_opts_unknown_user_is_refused(void **state)
{
    struct pool_cfg c;
    th_pool_opts o;

    (void)state;
    th_pool_opts_init(&o);
    o.name = "p";
    o.plugin = "x";
    o.user = "no-such-user-th";
    assert_int_equal(pool_cfg_from_opts(&c, &o, err, sizeof(err)),
                     TH_ECONFIG);
    assert_string_equal(err, "pool 'p': user: unknown user \"no-such-user-th\"");
    pool_cfg_clear(&c);
}

/* A reload applies LIVE keys in place and restarts for RESTART keys. */
static void test_reload_splits_live_and_restarting_keys(void **state)
{
    struct pool_cfg a, b;

    (void)state;
    pool_cfg_defaults(&a);
    pool_cfg_defaults(&b);
    b.max_queue = 7;
    b.task_timeout = 2;
    assert_false(pool_cfg_needs_restart(&a, &b));
    pool_cfg_update_live(&a, &b);
    assert_int_equal(a.max_queue, 7);
    assert_true(a.task_timeout == 2);
    b.rlimit_core = 0;
    assert_true(pool_cfg_needs_restart(&a, &b));
    pool_cfg_clear(&a);
    pool_cfg_clear(&b);
}

/* A deep copy owns its strings and settings. */
static void test_pool_cfg_copy_is_deep(void **state)
{
    struct pool_cfg a, b;

    (void)state;
    pool_cfg_defaults(&a);
    a.name = strdup("p");
    a.user = strdup("0");
    assert_int_equal(pool_cfg_copy(&b, &a), 0);
    assert_ptr_not_equal(b.name, a.name);
    assert_string_equal(b.user, "0");
    assert_ptr_not_equal(b.settings, a.settings);
    assert_false(pool_cfg_needs_restart(&a, &b));
    pool_cfg_clear(&a);
    pool_cfg_clear(&b);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

/* ---- drop-in files (host.include) ---- */

#define INCLUDE "host: { include = \"conf.d/*.conf\"; };\n"

/* Writes conf.d/NAME with `text`. */
static void write_dropin(const char *name, const char *text)
{
    char path[PATH_MAX + 80];

    mkdir(in_tmp("conf.d"), 0755);
    snprintf(path, sizeof(path), "%s/conf.d/%s", tmp, name);
    write_file(path, text);
}

static void test_dropins_add_plugins_and_pools_in_name_order(void **state)
{
    (void)state;
    write_dropin("20-b.conf", "pools = ( { name = \"b\"; plugin = \"x\"; } );\n");
    write_dropin("10-a.conf",
                 "plugins = ( { name = \"x\"; path = \"hash.so\"; } );\n"
                 "pools = ( { name = \"a\"; plugin = \"hash\"; } );\n");
    write_dropin("30-c.conf.disabled", "garbage");
    if (load(INCLUDE PLUGIN
             "pools = ( { name = \"main\"; plugin = \"x\"; } );\n") != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg->nplugins, 2);
    assert_string_equal(cfg->plugins[1].name, "x");
    assert_string_equal(cfg->plugins[1].path, in_tmp("hash.so"));
    assert_int_equal(cfg->npools, 3);
    assert_string_equal(cfg->pools[0].name, "main");
    assert_string_equal(cfg->pools[1].name, "a");
    assert_string_equal(cfg->pools[2].name, "b");
    assert_string_equal(cfg->pools[2].file, in_tmp("conf.d/20-b.conf"));
    assert_int_equal(cfg->pools[2].index, 0);
}

static void test_include_matching_nothing_adds_nothing(void **state)
{
    (void)state;
    if (load(INCLUDE PLUGIN) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg->nplugins, 1);
    assert_int_equal(cfg->npools, 0);
}

/* Asserts a fault in the drop-in conf.d/NAME. */
static void assert_dropin_fault(int rc, const char *name, int line,
                                const char *key, const char *reason)
{
    char want[PATH_MAX + 300];

    snprintf(want, sizeof(want), "%s/conf.d/%s:%d: %s: ", tmp, name, line,
             key);
    if (rc != TH_ECONFIG || strncmp(err, want, strlen(want)) != 0 ||
        strstr(err, reason) == NULL)
        fail_msg("rc %d, message \"%s\", want \"%s...%s\"", rc, err, want,
                 reason);
    assert_null(cfg);
}

static void test_dropin_fault_names_its_file_line_and_key(void **state)
{
    (void)state;
    write_dropin("app.conf", "pools = (\n"
                             "  { name = \"app\"; plugin = \"hash\";\n"
                             "    max_wrokers = 2; }\n);\n");
    assert_dropin_fault(load(INCLUDE PLUGIN), "app.conf", 3,
                        "pools[0].max_wrokers",
                        "unknown key (did you mean \"max_workers\"?)");
}

static void test_dropin_pool_with_unknown_plugin_names_the_dropin(void **state)
{
    (void)state;
    write_dropin("app.conf", "pools = (\n"
                             "  { name = \"app\"; plugin = \"nosuch\"; }\n);\n");
    assert_dropin_fault(load(INCLUDE PLUGIN), "app.conf", 2, "pools[0].plugin",
                        "unknown plugin \"nosuch\"");
}

static void test_dropin_duplicate_pool_names_both_places(void **state)
{
    char also[PATH_MAX + 64];

    (void)state;
    write_dropin("app.conf", "pools = ( { name = \"p\"; plugin = \"hash\"; } );\n");
    assert_dropin_fault(load(INCLUDE PLUGIN
                             "pools = ( { name = \"p\"; plugin = \"hash\"; } );\n"),
                        "app.conf", 1, "pools[0].name",
                        "duplicate pool name \"p\"");
    snprintf(also, sizeof(also), "also at %s:3", conf);
    assert_non_null(strstr(err, also));
}

static void test_dropin_may_not_set_the_host_group(void **state)
{
    (void)state;
    write_dropin("app.conf", "host: { log_level = \"debug\"; };\n");
    assert_dropin_fault(load(INCLUDE PLUGIN), "app.conf", 1, "host",
                        "not allowed in a drop-in file");
}

static void test_dropin_syntax_error_names_the_dropin(void **state)
{
    char want[PATH_MAX + 64];

    (void)state;
    write_dropin("app.conf", "pools = (\n  { name = \"p\" plugin };\n");
    assert_int_equal(load(INCLUDE PLUGIN), TH_ECONFIG);
    snprintf(want, sizeof(want), "%s/conf.d/app.conf:2: syntax error", tmp);
    assert_string_equal(err, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_spec_example_loads_with_expected_values),
        T(test_unset_keys_get_documented_defaults),
        T(test_empty_file_is_a_valid_config),
        T(test_min_workers_above_cpu_count_raises_default_max),
        T(test_every_pool_key_is_read),
        T(test_syntax_error_names_file_and_line),
        T(test_unknown_top_key_names_file_line_and_key),
        T(test_unknown_host_key_suggests_the_near_one),
        T(test_unknown_plugin_key_names_file_line_and_key),
        T(test_unknown_pool_key_names_file_line_and_key),
        T(test_wrong_type_names_file_line_and_key),
        T(test_wrong_type_of_group_is_refused),
        T(test_wrong_type_of_bool_is_refused),
        T(test_negative_count_is_refused),
        T(test_max_workers_below_one_is_refused),
        T(test_negative_timeout_is_refused),
        T(test_zero_memory_check_interval_is_refused),
        T(test_min_workers_above_max_names_max_workers),
        T(test_soft_above_hard_memory_limit_is_refused),
        T(test_soft_limit_alone_is_accepted),
        T(test_duplicate_plugin_names_are_refused),
        T(test_duplicate_pool_names_are_refused),
        T(test_pool_with_unknown_plugin_is_refused),
        T(test_pools_may_come_before_plugins),
        T(test_missing_plugin_file_says_no_such_file),
        T(test_cluster_group_is_read_with_defaults),
        T(test_shared_pool_without_cluster_is_refused),
        T(test_cluster_bad_redis_and_heartbeat_are_refused),
        T(test_missing_required_keys_are_refused),
        T(test_bad_names_are_refused),
        T(test_overflow_modes_parse_and_garbage_is_refused),
        T(test_log_levels_parse_and_garbage_is_refused),
        T(test_socket_mode_must_be_octal),
        T(test_socket_mode_integer_is_read_as_typed),
        T(test_socket_path_too_long_is_refused),
        T(test_sizes_parse_with_1024_based_suffixes),
        T(test_size_garbage_negative_and_overflow_are_refused),
        T(test_durations_parse_with_units),
        T(test_duration_garbage_and_negative_are_refused),
        T(test_config_accepts_sizes_and_durations_in_any_form),
        T(test_config_refuses_bad_sizes_and_durations),
        T(test_relative_paths_resolve_against_config_dir),
        T(test_absolute_paths_and_log_names_are_kept),
        T(test_user_and_group_lists_resolve_names_and_ids),
        T(test_unknown_user_or_group_is_refused),
        T(test_settings_group_is_copied_with_dotted_keys),
        T(test_settings_list_is_refused_with_key_and_line),
        T(test_setting_getters_return_defaults_and_check_types),
        T(test_settings_from_text_reports_syntax_errors),
        T(test_settings_equal_ignores_order_and_compares_types),
        T(test_missing_config_returns_enoent),
        T(test_directory_as_config_is_refused),
        T(test_fifo_as_config_is_refused_without_hanging),
        T(test_pool_cfg_check_names_a_code_pool),
        T(test_pool_opts_defaults_are_the_config_defaults),
        T(test_pool_opts_carry_user_group_and_rlimits),
        T(test_pool_opts_unknown_user_is_refused),
        T(test_reload_splits_live_and_restarting_keys),
        T(test_pool_cfg_copy_is_deep),
        T(test_dropins_add_plugins_and_pools_in_name_order),
        T(test_include_matching_nothing_adds_nothing),
        T(test_dropin_fault_names_its_file_line_and_key),
        T(test_dropin_pool_with_unknown_plugin_names_the_dropin),
        T(test_dropin_duplicate_pool_names_both_places),
        T(test_dropin_may_not_set_the_host_group),
        T(test_dropin_syntax_error_names_the_dropin),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
