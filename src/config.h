/*
 * config.h - chatd's settings: command-line flags, each with a CHATD_*
 * environment variable as its default (the flag wins), validated once at
 * start. The parsed struct config is read-only after config_parse() and
 * may be read by any thread.
 */
#ifndef CHATD_CONFIG_H
#define CHATD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CONFIG_MAX_ORIGINS 16
#define CONFIG_ERRLEN 256

struct config {
    char listen_host[64];          /* --listen HOST:PORT */
    int listen_port;
    char *database;                /* --database URL */
    char *redis;                   /* --redis URL, NULL: local bus */
    char *node_id;                 /* --node-id (config_finish sets one) */
    int presence_ttl;              /* --presence-ttl, seconds */
    char *origins[CONFIG_MAX_ORIGINS]; /* --allowed-origin, exact match */
    size_t norigins;
    int log_level;                 /* enum log_level */
    char *data_dir;                /* migrations/, sql/, web/ */
    int session_ttl;               /* seconds */
    int workers;                   /* worker threads (reads, auth) */
    int slow_query_ms;             /* database_query log threshold */
    int store_queue;               /* pending sends before "busy" */
    char *metrics_sql_dir;         /* collector queries; NULL: DATA/sql/metrics */
    int collect_interval_ms;       /* collector: each query's period */
    int collect_timeout_ms;        /* collector: each query's time limit */
    /* The subcommand: CONFIG_CMD_SERVE or CONFIG_CMD_MIGRATE with its
     * arguments left in cmd_argv (borrowed from argv). */
    int cmd;
    int cmd_argc;
    char **cmd_argv;
};

enum { CONFIG_CMD_SERVE = 0, CONFIG_CMD_MIGRATE, CONFIG_CMD_HELP,
       CONFIG_CMD_VERSION };

/* Parses the environment then argv into cfg. Returns 0, or -1 with a
 * one-line reason in err (a usage error: exit 2). argv may be permuted. */
int config_parse(struct config *cfg, int argc, char **argv, char *err,
                 size_t errlen);
/* Fills in what depends on other settings (the default origins from the
 * port, the data directory). argv0 is used to find the source tree. */
void config_finish(struct config *cfg, const char *argv0);
void config_free(struct config *cfg);
void config_usage(FILE *out);

/* Splits "HOST:PORT" ("[v6]:PORT" too). Returns 0 or -1. */
int config_parse_listen(const char *s, char *host, size_t hostlen, int *port);

#endif
