/*
 * check_config.c - unit tests for config.c: the defaults, every flag, the
 * CHATD_* environment defaults and the flags that override them, the
 * one-line errors a mistyped setting gives, the subcommands, the origins
 * config_finish derives from the port, and config_parse_listen.
 *
 * Runs single-threaded under Check (each test in its own forked process
 * unless CK_FORK=no). Every test starts and ends with no CHATD_* variable
 * set, so the developer's own environment cannot change a result.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

#define CHECK_CONFIG_MAX_ARGS 40
#define CHECK_CONFIG_ARG_LEN 512

/* A NULL-terminated argument list with "chatd" as argv[0]. */
#define CHECK_CONFIG_ARGV(...) \
    ((const char *const []){ "chatd", ##__VA_ARGS__, NULL })

static const char *const check_config_env_names[] = {
    "CHATD_LISTEN", "CHATD_DATABASE", "CHATD_REDIS", "CHATD_ALLOWED_ORIGINS",
    "CHATD_LOG_LEVEL", "CHATD_DATA_DIR", "CHATD_SESSION_TTL", "CHATD_WORKERS",
    "CHATD_SLOW_QUERY_MS", "CHATD_STORE_QUEUE",
};

/* getopt permutes argv and config keeps pointers into it (cmd_argv), so
 * the arguments live in writable arrays that outlast the call. */
static char check_config_argbuf[CHECK_CONFIG_MAX_ARGS][CHECK_CONFIG_ARG_LEN];
static char *check_config_argv[CHECK_CONFIG_MAX_ARGS + 1];

static struct config check_config_cfg;
static char check_config_err[CONFIG_ERRLEN];

static void check_config_clear_env(void)
{
    size_t i;

    for (i = 0; i < sizeof check_config_env_names /
                    sizeof check_config_env_names[0]; i++)
        unsetenv(check_config_env_names[i]);
}

static void check_config_setup(void)
{
    check_config_clear_env();
    memset(&check_config_cfg, 0, sizeof check_config_cfg);
    check_config_err[0] = '\0';
}

static void check_config_teardown(void)
{
    config_free(&check_config_cfg);
    check_config_clear_env();
}

/* Copies args into writable storage and parses them into check_config_cfg.
 * Returns what config_parse returns; the reason is in check_config_err. */
static int check_config_parse(const char *const *args)
{
    int argc = 0;

    config_free(&check_config_cfg);
    check_config_err[0] = '\0';
    for (; args[argc] != NULL; argc++) {
        ck_assert_int_lt(argc, CHECK_CONFIG_MAX_ARGS);
        ck_assert_uint_lt(strlen(args[argc]), CHECK_CONFIG_ARG_LEN);
        strcpy(check_config_argbuf[argc], args[argc]);
        check_config_argv[argc] = check_config_argbuf[argc];
    }
    check_config_argv[argc] = NULL;
    return config_parse(&check_config_cfg, argc, check_config_argv,
                        check_config_err, sizeof check_config_err);
}

/* Asserts that args are refused with one line of error naming name. */
static void check_config_refused(const char *const *args, const char *name)
{
    ck_assert_int_eq(check_config_parse(args), -1);
    ck_assert_msg(check_config_err[0] != '\0', "empty error for %s", name);
    ck_assert_msg(strchr(check_config_err, '\n') == NULL,
                  "error is more than one line: %s", check_config_err);
    ck_assert_msg(strstr(check_config_err, name) != NULL,
                  "error '%s' does not name %s", check_config_err, name);
}

/* --- defaults --- */

START_TEST(test_defaults_without_flags_or_environment)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV()), 0);
    ck_assert_str_eq(c->listen_host, "127.0.0.1");
    ck_assert_int_eq(c->listen_port, 8080);
    ck_assert_str_eq(c->database, "sqlite:chatd.db");
    ck_assert_ptr_null(c->redis);
    ck_assert_uint_eq(c->norigins, 0);
    ck_assert_int_eq(c->log_level, LOG_INFO);
    ck_assert_ptr_null(c->data_dir);
    ck_assert_int_eq(c->session_ttl, 604800);
    ck_assert_int_eq(c->workers, 2);
    ck_assert_int_eq(c->slow_query_ms, 100);
    ck_assert_int_eq(c->store_queue, 65536);
    ck_assert_int_eq(c->cmd, CONFIG_CMD_SERVE);
    ck_assert_int_eq(c->cmd_argc, 0);
}
END_TEST

/* --- every flag --- */

START_TEST(test_every_flag_parses)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--listen", "0.0.0.0:9001",
        "--database", "postgresql://chat@db.example/chat",
        "--redis", "redis://cache.example:6379/2",
        "--allowed-origin", "https://chat.example",
        "--log-level", "debug",
        "--data-dir", "share/chatd",
        "--session-ttl", "3600",
        "--workers", "8",
        "--slow-query-ms", "250",
        "--store-queue", "1024")), 0);
    ck_assert_str_eq(c->listen_host, "0.0.0.0");
    ck_assert_int_eq(c->listen_port, 9001);
    ck_assert_str_eq(c->database, "postgresql://chat@db.example/chat");
    ck_assert_str_eq(c->redis, "redis://cache.example:6379/2");
    ck_assert_uint_eq(c->norigins, 1);
    ck_assert_str_eq(c->origins[0], "https://chat.example");
    ck_assert_int_eq(c->log_level, LOG_DEBUG);
    ck_assert_str_eq(c->data_dir, "share/chatd");
    ck_assert_int_eq(c->session_ttl, 3600);
    ck_assert_int_eq(c->workers, 8);
    ck_assert_int_eq(c->slow_query_ms, 250);
    ck_assert_int_eq(c->store_queue, 1024);
    ck_assert_int_eq(c->cmd, CONFIG_CMD_SERVE);
}
END_TEST

START_TEST(test_flags_accept_equals_form)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--listen=10.0.0.1:81", "--workers=3", "--log-level=warn")), 0);
    ck_assert_str_eq(c->listen_host, "10.0.0.1");
    ck_assert_int_eq(c->listen_port, 81);
    ck_assert_int_eq(c->workers, 3);
    ck_assert_int_eq(c->log_level, LOG_WARN);
}
END_TEST

START_TEST(test_database_sqlite_and_postgres_schemes)
{
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--database", "sqlite:/var/lib/chatd/chat.db")), 0);
    ck_assert_str_eq(check_config_cfg.database,
                     "sqlite:/var/lib/chatd/chat.db");
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--database", "postgres://u:p@h:5432/d")), 0);
    ck_assert_str_eq(check_config_cfg.database, "postgres://u:p@h:5432/d");
}
END_TEST

START_TEST(test_allowed_origin_repeats)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--allowed-origin", "https://a.example",
        "--allowed-origin", "http://b.example:8080")), 0);
    ck_assert_uint_eq(c->norigins, 2);
    ck_assert_str_eq(c->origins[0], "https://a.example");
    ck_assert_str_eq(c->origins[1], "http://b.example:8080");
}
END_TEST

START_TEST(test_log_levels_by_name)
{
    static const struct { const char *name; int level; } levels[] = {
        { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "warn", LOG_WARN },
        { "warning", LOG_WARN }, { "error", LOG_ERROR }, { "ERROR", LOG_ERROR },
    };
    size_t i;

    for (i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
            "--log-level", levels[i].name)), 0);
        ck_assert_int_eq(check_config_cfg.log_level, levels[i].level);
    }
}
END_TEST

START_TEST(test_numeric_limits_inclusive)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--session-ttl", "60", "--workers", "1", "--slow-query-ms", "0",
        "--store-queue", "16")), 0);
    ck_assert_int_eq(c->session_ttl, 60);
    ck_assert_int_eq(c->workers, 1);
    ck_assert_int_eq(c->slow_query_ms, 0);
    ck_assert_int_eq(c->store_queue, 16);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--session-ttl", "31536000", "--workers", "64",
        "--store-queue", "4194304")), 0);
    ck_assert_int_eq(c->session_ttl, 31536000);
    ck_assert_int_eq(c->workers, 64);
    ck_assert_int_eq(c->store_queue, 4194304);
}
END_TEST

START_TEST(test_empty_redis_means_local_bus)
{
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--redis", "redis://h:6379", "--redis", "")), 0);
    ck_assert_ptr_null(check_config_cfg.redis);
}
END_TEST

START_TEST(test_last_flag_wins)
{
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--workers", "3", "--workers", "5",
        "--database", "sqlite:a.db", "--database", "sqlite:b.db")), 0);
    ck_assert_int_eq(check_config_cfg.workers, 5);
    ck_assert_str_eq(check_config_cfg.database, "sqlite:b.db");
}
END_TEST

/* --- the environment --- */

START_TEST(test_env_sets_every_default)
{
    struct config *c = &check_config_cfg;

    setenv("CHATD_LISTEN", "0.0.0.0:7000", 1);
    setenv("CHATD_DATABASE", "postgresql://localhost/chat", 1);
    setenv("CHATD_REDIS", "redis://127.0.0.1:6379/0", 1);
    setenv("CHATD_ALLOWED_ORIGINS", "https://env.example", 1);
    setenv("CHATD_LOG_LEVEL", "error", 1);
    setenv("CHATD_DATA_DIR", "envdata", 1);
    setenv("CHATD_SESSION_TTL", "7200", 1);
    setenv("CHATD_WORKERS", "6", 1);
    setenv("CHATD_SLOW_QUERY_MS", "5", 1);
    setenv("CHATD_STORE_QUEUE", "128", 1);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV()), 0);
    ck_assert_str_eq(c->listen_host, "0.0.0.0");
    ck_assert_int_eq(c->listen_port, 7000);
    ck_assert_str_eq(c->database, "postgresql://localhost/chat");
    ck_assert_str_eq(c->redis, "redis://127.0.0.1:6379/0");
    ck_assert_uint_eq(c->norigins, 1);
    ck_assert_str_eq(c->origins[0], "https://env.example");
    ck_assert_int_eq(c->log_level, LOG_ERROR);
    ck_assert_str_eq(c->data_dir, "envdata");
    ck_assert_int_eq(c->session_ttl, 7200);
    ck_assert_int_eq(c->workers, 6);
    ck_assert_int_eq(c->slow_query_ms, 5);
    ck_assert_int_eq(c->store_queue, 128);
}
END_TEST

START_TEST(test_flag_overrides_env)
{
    struct config *c = &check_config_cfg;

    setenv("CHATD_LISTEN", "0.0.0.0:7000", 1);
    setenv("CHATD_DATABASE", "sqlite:env.db", 1);
    setenv("CHATD_REDIS", "redis://env:6379", 1);
    setenv("CHATD_LOG_LEVEL", "error", 1);
    setenv("CHATD_DATA_DIR", "envdata", 1);
    setenv("CHATD_SESSION_TTL", "7200", 1);
    setenv("CHATD_WORKERS", "6", 1);
    setenv("CHATD_SLOW_QUERY_MS", "5", 1);
    setenv("CHATD_STORE_QUEUE", "128", 1);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--listen", "127.0.0.2:7001", "--database", "sqlite:flag.db",
        "--redis", "redis://flag:6380", "--log-level", "debug",
        "--data-dir", "flagdata", "--session-ttl", "120", "--workers", "4",
        "--slow-query-ms", "50", "--store-queue", "256")), 0);
    ck_assert_str_eq(c->listen_host, "127.0.0.2");
    ck_assert_int_eq(c->listen_port, 7001);
    ck_assert_str_eq(c->database, "sqlite:flag.db");
    ck_assert_str_eq(c->redis, "redis://flag:6380");
    ck_assert_int_eq(c->log_level, LOG_DEBUG);
    ck_assert_str_eq(c->data_dir, "flagdata");
    ck_assert_int_eq(c->session_ttl, 120);
    ck_assert_int_eq(c->workers, 4);
    ck_assert_int_eq(c->slow_query_ms, 50);
    ck_assert_int_eq(c->store_queue, 256);
}
END_TEST

START_TEST(test_env_origins_comma_list_with_spaces)
{
    struct config *c = &check_config_cfg;

    setenv("CHATD_ALLOWED_ORIGINS",
           " https://a.example ,http://b.example:8080,  ,http://c.example  ",
           1);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV()), 0);
    ck_assert_uint_eq(c->norigins, 3);
    ck_assert_str_eq(c->origins[0], "https://a.example");
    ck_assert_str_eq(c->origins[1], "http://b.example:8080");
    ck_assert_str_eq(c->origins[2], "http://c.example");
}
END_TEST

START_TEST(test_origin_flags_replace_env_list)
{
    struct config *c = &check_config_cfg;

    setenv("CHATD_ALLOWED_ORIGINS", "https://a.example,https://b.example", 1);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--allowed-origin", "https://flag1.example",
        "--allowed-origin", "https://flag2.example")), 0);
    ck_assert_uint_eq(c->norigins, 2);
    ck_assert_str_eq(c->origins[0], "https://flag1.example");
    ck_assert_str_eq(c->origins[1], "https://flag2.example");
}
END_TEST

START_TEST(test_empty_env_values_keep_defaults)
{
    setenv("CHATD_LISTEN", "", 1);
    setenv("CHATD_WORKERS", "", 1);
    setenv("CHATD_REDIS", "", 1);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV()), 0);
    ck_assert_int_eq(check_config_cfg.listen_port, 8080);
    ck_assert_int_eq(check_config_cfg.workers, 2);
    ck_assert_ptr_null(check_config_cfg.redis);
}
END_TEST

START_TEST(test_bad_env_value_names_the_variable)
{
    setenv("CHATD_WORKERS", "zero", 1);
    check_config_refused(CHECK_CONFIG_ARGV(), "CHATD_WORKERS");
    unsetenv("CHATD_WORKERS");
    setenv("CHATD_LISTEN", "8080", 1);
    check_config_refused(CHECK_CONFIG_ARGV(), "CHATD_LISTEN");
    unsetenv("CHATD_LISTEN");
    setenv("CHATD_DATABASE", "mysql://db/chat", 1);
    check_config_refused(CHECK_CONFIG_ARGV(), "CHATD_DATABASE");
}
END_TEST

/* --- bad values --- */

START_TEST(test_bad_listen_refused)
{
    static const char *const bad[] = {
        "127.0.0.1:http", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:80x", "127.0.0.1:", "8080", ":8080", "[::1]8080",
        "[::1:8080",
    };
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check_config_refused(CHECK_CONFIG_ARGV("--listen", bad[i]),
                             "--listen");
}
END_TEST

START_TEST(test_listen_ipv6_brackets_ok)
{
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--listen", "[::1]:8080")), 0);
    ck_assert_str_eq(check_config_cfg.listen_host, "::1");
    ck_assert_int_eq(check_config_cfg.listen_port, 8080);
}
END_TEST

START_TEST(test_bad_log_level_refused)
{
    check_config_refused(CHECK_CONFIG_ARGV("--log-level", "verbose"),
                         "--log-level");
    check_config_refused(CHECK_CONFIG_ARGV("--log-level", ""), "--log-level");
}
END_TEST

START_TEST(test_bad_numbers_refused)
{
    check_config_refused(CHECK_CONFIG_ARGV("--workers", "0"), "--workers");
    check_config_refused(CHECK_CONFIG_ARGV("--workers", "65"), "--workers");
    check_config_refused(CHECK_CONFIG_ARGV("--workers", "two"), "--workers");
    check_config_refused(CHECK_CONFIG_ARGV("--workers", "2.5"), "--workers");
    check_config_refused(CHECK_CONFIG_ARGV("--session-ttl", "59"),
                         "--session-ttl");
    check_config_refused(CHECK_CONFIG_ARGV("--session-ttl", "31536001"),
                         "--session-ttl");
    check_config_refused(CHECK_CONFIG_ARGV("--session-ttl",
                                           "99999999999999999999"),
                         "--session-ttl");
    check_config_refused(CHECK_CONFIG_ARGV("--slow-query-ms", "-1"),
                         "--slow-query-ms");
    check_config_refused(CHECK_CONFIG_ARGV("--store-queue", "15"),
                         "--store-queue");
    check_config_refused(CHECK_CONFIG_ARGV("--store-queue", "4194305"),
                         "--store-queue");
}
END_TEST

START_TEST(test_database_other_scheme_refused)
{
    check_config_refused(CHECK_CONFIG_ARGV("--database", "mysql://db/chat"),
                         "--database");
    check_config_refused(CHECK_CONFIG_ARGV("--database", "chat.db"),
                         "--database");
    check_config_refused(CHECK_CONFIG_ARGV("--database", "sqlite:"),
                         "--database");
}
END_TEST

START_TEST(test_database_error_hides_postgres_password)
{
    check_config_refused(CHECK_CONFIG_ARGV("--database",
                                           "postgresq://u:s3cret@h/d"),
                         "--database");
    ck_assert_ptr_null(strstr(check_config_err, "s3cret"));
}
END_TEST

START_TEST(test_redis_without_scheme_refused)
{
    check_config_refused(CHECK_CONFIG_ARGV("--redis", "localhost:6379"),
                         "--redis");
    check_config_refused(CHECK_CONFIG_ARGV("--redis", "redis://"), "--redis");
}
END_TEST

START_TEST(test_origin_with_path_refused)
{
    check_config_refused(CHECK_CONFIG_ARGV("--allowed-origin",
                                           "https://chat.example/app"),
                         "--allowed-origin");
}
END_TEST

START_TEST(test_origin_without_scheme_refused)
{
    check_config_refused(CHECK_CONFIG_ARGV("--allowed-origin",
                                           "chat.example"),
                         "chat.example");
    check_config_refused(CHECK_CONFIG_ARGV("--allowed-origin",
                                           "ftp://chat.example"),
                         "ftp://chat.example");
    check_config_refused(CHECK_CONFIG_ARGV("--allowed-origin", "https://"),
                         "https://");
}
END_TEST

START_TEST(test_too_many_origins_refused)
{
    char list[CHECK_CONFIG_ARG_LEN * 2] = "";
    int i;

    for (i = 0; i <= CONFIG_MAX_ORIGINS; i++) {
        char one[64];
        snprintf(one, sizeof one, "%shttp://h%d.example", i ? "," : "", i);
        strcat(list, one);
    }
    setenv("CHATD_ALLOWED_ORIGINS", list, 1);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV()), -1);
    ck_assert_ptr_nonnull(strstr(check_config_err, "origins"));
}
END_TEST

/* --- usage errors --- */

START_TEST(test_unknown_flag_is_usage_error)
{
    check_config_refused(CHECK_CONFIG_ARGV("--bogus"), "--bogus");
    check_config_refused(CHECK_CONFIG_ARGV("-x"), "-x");
}
END_TEST

/* A flag given last without its value: the error must say which flag
 * lacks a value, not call a known flag unknown. */
START_TEST(test_missing_value_is_usage_error)
{
    check_config_refused(CHECK_CONFIG_ARGV("--listen"), "--listen");
    ck_assert_msg(strstr(check_config_err, "value") != NULL,
                  "error '%s' does not say a value is missing",
                  check_config_err);
    check_config_refused(CHECK_CONFIG_ARGV("--workers", "3", "--database"),
                         "--database");
}
END_TEST

START_TEST(test_missing_value_is_refused)
{
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV("--listen")), -1);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--session-ttl")), -1);
}
END_TEST

/* --- commands --- */

START_TEST(test_help_and_version_set_the_command)
{
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV("--help")), 0);
    ck_assert_int_eq(check_config_cfg.cmd, CONFIG_CMD_HELP);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV("-h")), 0);
    ck_assert_int_eq(check_config_cfg.cmd, CONFIG_CMD_HELP);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV("--version")), 0);
    ck_assert_int_eq(check_config_cfg.cmd, CONFIG_CMD_VERSION);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV("-V")), 0);
    ck_assert_int_eq(check_config_cfg.cmd, CONFIG_CMD_VERSION);
    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--workers", "3", "--help")), 0);
    ck_assert_int_eq(check_config_cfg.cmd, CONFIG_CMD_HELP);
}
END_TEST

START_TEST(test_migrate_keeps_its_arguments)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "migrate", "up", "2", "--dry-run")), 0);
    ck_assert_int_eq(c->cmd, CONFIG_CMD_MIGRATE);
    ck_assert_int_eq(c->cmd_argc, 3);
    ck_assert_str_eq(c->cmd_argv[0], "up");
    ck_assert_str_eq(c->cmd_argv[1], "2");
    ck_assert_str_eq(c->cmd_argv[2], "--dry-run");
    ck_assert_ptr_null(c->cmd_argv[3]);
}
END_TEST

START_TEST(test_migrate_with_flags_around_it)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--database", "sqlite:m.db", "migrate", "status",
        "--log-level", "warn")), 0);
    ck_assert_int_eq(c->cmd, CONFIG_CMD_MIGRATE);
    ck_assert_int_eq(c->cmd_argc, 1);
    ck_assert_str_eq(c->cmd_argv[0], "status");
    ck_assert_ptr_null(c->cmd_argv[1]);
    ck_assert_str_eq(c->database, "sqlite:m.db");
    ck_assert_int_eq(c->log_level, LOG_WARN);

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV("migrate")), 0);
    ck_assert_int_eq(c->cmd, CONFIG_CMD_MIGRATE);
    ck_assert_int_eq(c->cmd_argc, 0);
    ck_assert_ptr_null(c->cmd_argv[0]);
}
END_TEST

START_TEST(test_dry_run_without_migrate_refused)
{
    check_config_refused(CHECK_CONFIG_ARGV("--dry-run"), "--dry-run");
}
END_TEST

START_TEST(test_unknown_command_refused)
{
    check_config_refused(CHECK_CONFIG_ARGV("serve"), "serve");
    check_config_refused(CHECK_CONFIG_ARGV("migrat", "up"), "migrat");
}
END_TEST

/* --- config_finish --- */

START_TEST(test_finish_adds_default_origins_from_port)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--listen", "0.0.0.0:9123")), 0);
    config_finish(c, "chatd");
    ck_assert_uint_eq(c->norigins, 2);
    ck_assert_str_eq(c->origins[0], "http://localhost:9123");
    ck_assert_str_eq(c->origins[1], "http://127.0.0.1:9123");
    ck_assert_ptr_nonnull(c->data_dir);
    ck_assert_int_gt((int)strlen(c->data_dir), 0);
}
END_TEST

START_TEST(test_finish_keeps_explicit_origins_and_data_dir)
{
    struct config *c = &check_config_cfg;

    ck_assert_int_eq(check_config_parse(CHECK_CONFIG_ARGV(
        "--allowed-origin", "https://chat.example", "--data-dir", "mine")),
        0);
    config_finish(c, "chatd");
    ck_assert_uint_eq(c->norigins, 1);
    ck_assert_str_eq(c->origins[0], "https://chat.example");
    ck_assert_str_eq(c->data_dir, "mine");
}
END_TEST

/* --- config_parse_listen --- */

START_TEST(test_parse_listen_cases)
{
    char host[64];
    int port = 0;

    ck_assert_int_eq(config_parse_listen("127.0.0.1:8080", host, sizeof host,
                                         &port), 0);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_int_eq(port, 8080);
    /* localhost means the IPv4 loopback (lws binds an address). */
    ck_assert_int_eq(config_parse_listen("localhost:1", host, sizeof host,
                                         &port), 0);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_int_eq(port, 1);
    ck_assert_int_eq(config_parse_listen("[::1]:65535", host, sizeof host,
                                         &port), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_int_eq(port, 65535);
    ck_assert_int_eq(config_parse_listen("[fe80::1]:443", host, sizeof host,
                                         &port), 0);
    ck_assert_str_eq(host, "fe80::1");
    ck_assert_int_eq(port, 443);

    ck_assert_int_eq(config_parse_listen(NULL, host, sizeof host, &port), -1);
    ck_assert_int_eq(config_parse_listen("", host, sizeof host, &port), -1);
    ck_assert_int_eq(config_parse_listen("host", host, sizeof host, &port),
                     -1);
    ck_assert_int_eq(config_parse_listen("host:0", host, sizeof host, &port),
                     -1);
    ck_assert_int_eq(config_parse_listen("host:65536", host, sizeof host,
                                         &port), -1);
    ck_assert_int_eq(config_parse_listen("host:", host, sizeof host, &port),
                     -1);
    ck_assert_int_eq(config_parse_listen(":80", host, sizeof host, &port), -1);
    ck_assert_int_eq(config_parse_listen("[]:80", host, sizeof host, &port),
                     -1);
    ck_assert_int_eq(config_parse_listen("[::1]", host, sizeof host, &port),
                     -1);
    ck_assert_int_eq(config_parse_listen("[::1]:", host, sizeof host, &port),
                     -1);
}
END_TEST

START_TEST(test_parse_listen_host_too_long)
{
    char host[8];
    int port = 0;

    ck_assert_int_eq(config_parse_listen("1234567:80", host, sizeof host,
                                         &port), 0);
    ck_assert_str_eq(host, "1234567");
    ck_assert_int_eq(config_parse_listen("12345678:80", host, sizeof host,
                                         &port), -1);
}
END_TEST

START_TEST(test_usage_names_every_flag)
{
    static const char *const flags[] = {
        "--listen", "--database", "--redis", "--allowed-origin",
        "--log-level", "--data-dir", "--session-ttl", "--workers",
        "--slow-query-ms", "--store-queue", "--help", "--version", "migrate",
        "--dry-run",
    };
    char *text = NULL;
    size_t len = 0, i;
    FILE *f = open_memstream(&text, &len);

    ck_assert_ptr_nonnull(f);
    config_usage(f);
    fclose(f);
    for (i = 0; i < sizeof flags / sizeof flags[0]; i++)
        ck_assert_msg(strstr(text, flags[i]) != NULL, "usage lacks %s",
                      flags[i]);
    free(text);
}
END_TEST

static TCase *check_config_tcase(const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, check_config_setup, check_config_teardown);
    return tc;
}

static Suite *check_config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = check_config_tcase("defaults");
    tcase_add_test(tc, test_defaults_without_flags_or_environment);
    suite_add_tcase(s, tc);

    tc = check_config_tcase("flags");
    tcase_add_test(tc, test_every_flag_parses);
    tcase_add_test(tc, test_flags_accept_equals_form);
    tcase_add_test(tc, test_database_sqlite_and_postgres_schemes);
    tcase_add_test(tc, test_allowed_origin_repeats);
    tcase_add_test(tc, test_log_levels_by_name);
    tcase_add_test(tc, test_numeric_limits_inclusive);
    tcase_add_test(tc, test_empty_redis_means_local_bus);
    tcase_add_test(tc, test_last_flag_wins);
    suite_add_tcase(s, tc);

    tc = check_config_tcase("environment");
    tcase_add_test(tc, test_env_sets_every_default);
    tcase_add_test(tc, test_flag_overrides_env);
    tcase_add_test(tc, test_env_origins_comma_list_with_spaces);
    tcase_add_test(tc, test_origin_flags_replace_env_list);
    tcase_add_test(tc, test_empty_env_values_keep_defaults);
    tcase_add_test(tc, test_bad_env_value_names_the_variable);
    suite_add_tcase(s, tc);

    tc = check_config_tcase("bad_values");
    tcase_add_test(tc, test_bad_listen_refused);
    tcase_add_test(tc, test_listen_ipv6_brackets_ok);
    tcase_add_test(tc, test_bad_log_level_refused);
    tcase_add_test(tc, test_bad_numbers_refused);
    tcase_add_test(tc, test_database_other_scheme_refused);
    tcase_add_test(tc, test_database_error_hides_postgres_password);
    tcase_add_test(tc, test_redis_without_scheme_refused);
    tcase_add_test(tc, test_origin_with_path_refused);
    tcase_add_test(tc, test_origin_without_scheme_refused);
    tcase_add_test(tc, test_too_many_origins_refused);
    suite_add_tcase(s, tc);

    tc = check_config_tcase("usage_errors");
    tcase_add_test(tc, test_unknown_flag_is_usage_error);
    tcase_add_test(tc, test_missing_value_is_refused);
    tcase_add_test(tc, test_missing_value_is_usage_error);
    suite_add_tcase(s, tc);

    tc = check_config_tcase("commands");
    tcase_add_test(tc, test_help_and_version_set_the_command);
    tcase_add_test(tc, test_migrate_keeps_its_arguments);
    tcase_add_test(tc, test_migrate_with_flags_around_it);
    tcase_add_test(tc, test_dry_run_without_migrate_refused);
    tcase_add_test(tc, test_unknown_command_refused);
    tcase_add_test(tc, test_usage_names_every_flag);
    suite_add_tcase(s, tc);

    tc = check_config_tcase("finish");
    tcase_add_test(tc, test_finish_adds_default_origins_from_port);
    tcase_add_test(tc, test_finish_keeps_explicit_origins_and_data_dir);
    suite_add_tcase(s, tc);

    tc = check_config_tcase("parse_listen");
    tcase_add_test(tc, test_parse_listen_cases);
    tcase_add_test(tc, test_parse_listen_host_too_long);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(check_config_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
