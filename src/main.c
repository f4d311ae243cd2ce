/*
 * main.c - chatd's entry point, and nothing else: everything it calls
 * lives in libchatd so the tests link the same code.
 *
 * Start order: settings, logs, the schema check (the embedded SQLite
 * database migrates itself), the worker pools (each opens its own
 * connection), the HTTP routes, the listening socket; then the service
 * loop runs on this thread until SIGTERM or SIGINT.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "collector.h"
#include "config.h"
#include "http_api.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "server.h"
#include "store.h"
#include "worker.h"
#include "ws_chat.h"

#define MAIN_SEND_BATCH 1024

static struct server *main_server;

static void main_on_signal(int sig)
{
    (void)sig;
    if (main_server)
        server_stop(main_server);
}

static int main_fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "chatd: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

/* The migrations directory for the database URL's kind. */
static void main_migrations_dir(const struct config *cfg, char *out,
                                size_t outlen)
{
    const char *kind = store_kind(cfg->database);
    snprintf(out, outlen, "%s/migrations/%s", cfg->data_dir,
             kind && strcmp(kind, "postgres") == 0 ? "postgres" : "sqlite");
}

/* Opens the database once on this thread: SQLite migrates itself, any
 * database must then be exactly at this chatd's schema. */
static int main_check_schema(const struct config *cfg)
{
    char err[512], dir[4096];
    struct store *s = store_open(cfg->database, err, sizeof err);
    const char *kind = store_kind(cfg->database);
    int rc = 0;

    if (s == NULL)
        return main_fail("cannot open the database: %s%s", err, "");
    main_migrations_dir(cfg, dir, sizeof dir);
    if (kind && strcmp(kind, "sqlite") == 0 &&
        migrate_up(s, dir, 0, 0, NULL, err, sizeof err) != 0)
        rc = main_fail("cannot migrate the database: %s%s", err, "");
    else if (migrate_check(s, dir, err, sizeof err) != 0)
        rc = main_fail("%s%s", err, "");
    store_close(s);
    return rc;
}

static int main_migrate(const struct config *cfg)
{
    char err[512], dir[4096];
    struct store *s = store_open(cfg->database, err, sizeof err);
    int rc;

    if (s == NULL)
        return main_fail("cannot open the database: %s%s", err, "");
    main_migrations_dir(cfg, dir, sizeof dir);
    rc = migrate_main(s, dir, cfg->cmd_argc, cfg->cmd_argv, stdout, stderr);
    store_close(s);
    return rc;
}

static int main_serve(const struct config *cfg)
{
    char err[512];
    struct worker_sink *sink;
    struct worker_pool *workers, *store_pool;
    struct http_api *api;
    struct http_api_config acfg;
    struct ws_chat *chat;
    struct collector *collector;
    struct collector_config ccfg;
    char sql_dir[4096];
    struct sigaction sa;

    if (main_check_schema(cfg) != 0)
        return 1;
    if (cache_init(cfg->redis, err, sizeof err) != 0)
        return main_fail("redis: %s%s", err, "");
    sink = worker_sink_create(server_notify, NULL);
    workers = worker_pool_start("workers", cfg->database, cfg->workers, 4096,
                                1, NULL, sink, cfg->slow_query_ms, err,
                                sizeof err);
    if (workers == NULL) {
        worker_sink_free(sink);
        return main_fail("cannot open the database: %s%s", err, "");
    }
    store_pool = worker_pool_start("store", cfg->database, 1,
                                   (size_t)cfg->store_queue, MAIN_SEND_BATCH,
                                   worker_batch_sends, sink,
                                   cfg->slow_query_ms, err, sizeof err);
    if (store_pool == NULL) {
        worker_pool_stop(workers);
        worker_sink_free(sink);
        return main_fail("cannot open the database: %s%s", err, "");
    }
    memset(&acfg, 0, sizeof acfg);
    acfg.data_dir = cfg->data_dir;
    acfg.session_ttl = cfg->session_ttl;
    api = http_api_create(&acfg, workers, store_pool, err, sizeof err);
    if (api == NULL) {
        worker_pool_stop(store_pool);
        worker_pool_stop(workers);
        worker_sink_free(sink);
        return main_fail("%s%s", err, "");
    }
    if (cfg->metrics_sql_dir)
        snprintf(sql_dir, sizeof sql_dir, "%s", cfg->metrics_sql_dir);
    else
        snprintf(sql_dir, sizeof sql_dir, "%s/sql/metrics", cfg->data_dir);
    memset(&ccfg, 0, sizeof ccfg);
    ccfg.db_url = cfg->database;
    ccfg.sql_dir = sql_dir;
    ccfg.interval_ms = cfg->collect_interval_ms;
    ccfg.timeout_ms = cfg->collect_timeout_ms;
    ccfg.redis_url = cfg->redis;
    collector = collector_start(&ccfg, err, sizeof err);
    if (collector == NULL) {
        http_api_free(api);
        worker_pool_stop(store_pool);
        worker_pool_stop(workers);
        worker_sink_free(sink);
        return main_fail("metrics collector: %s%s", err, "");
    }
    chat = ws_chat_create(cfg, workers, store_pool, server_notify, err,
                          sizeof err);
    if (chat == NULL) {
        collector_stop(collector);
        http_api_free(api);
        worker_pool_stop(store_pool);
        worker_pool_stop(workers);
        worker_sink_free(sink);
        return main_fail("redis: %s%s", err, "");
    }
    http_api_set_chat(api, chat);
    main_server = server_create(cfg, api, chat, sink, err, sizeof err);
    if (main_server == NULL) {
        collector_stop(collector);
        ws_chat_free(chat);
        http_api_free(api);
        worker_pool_stop(store_pool);
        worker_pool_stop(workers);
        worker_sink_free(sink);
        return main_fail("%s%s", err, "");
    }

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = main_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    log_event(LOG_INFO, "server_start", NULL,
              LOG_STR("listen", cfg->listen_host),
              LOG_INT("port", cfg->listen_port),
              LOG_STR("database", store_kind(cfg->database)),
              LOG_STR("bus", cfg->redis ? "redis" : "local"),
              LOG_STR("node", cfg->node_id),
              LOG_STR("version", PACKAGE_VERSION), LF_END);
    fprintf(stderr, "chatd: serving http://%s:%d/ (database %s)\n",
            strcmp(cfg->listen_host, "0.0.0.0") == 0 ? "localhost"
                                                     : cfg->listen_host,
            cfg->listen_port,
            strcmp(store_kind(cfg->database), "sqlite") == 0
                ? cfg->database : "postgresql");

    server_run(main_server);

    log_event(LOG_INFO, "server_stop", NULL, LF_END);
    collector_stop(collector);
    /* The pools finish what they hold; then the loop is gone. */
    worker_pool_stop(store_pool);
    worker_pool_stop(workers);
    /* What finished meanwhile is answered while the loop's context still
     * exists (its sockets are closed with it just after). */
    {
        struct job *j = worker_sink_take(sink), *next;
        for (; j; j = next) {
            next = j->next;
            j->done(j);
        }
    }
    server_free(main_server);
    main_server = NULL;
    ws_chat_free(chat);
    http_api_free(api);
    worker_sink_free(sink);
    cache_shutdown();
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg;
    char err[CONFIG_ERRLEN];
    int rc;

    if (config_parse(&cfg, argc, argv, err, sizeof err) != 0) {
        fprintf(stderr, "chatd: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    if (cfg.cmd == CONFIG_CMD_HELP) {
        config_usage(stdout);
        config_free(&cfg);
        return 0;
    }
    if (cfg.cmd == CONFIG_CMD_VERSION) {
        printf("chatd %s\n", PACKAGE_VERSION);
        config_free(&cfg);
        return 0;
    }
    config_finish(&cfg, argv[0]);
    metrics_init(PACKAGE_VERSION);
    log_init(stdout, (enum log_level)cfg.log_level);
    if (cfg.cmd == CONFIG_CMD_MIGRATE)
        rc = main_migrate(&cfg);
    else
        rc = main_serve(&cfg);
    log_shutdown();
    config_free(&cfg);
    return rc;
}
