/*
 * config.c - flags and CHATD_* environment defaults. See config.h.
 *
 * Runs once on the main thread before any other thread starts.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "redis_conn.h"
#include "util.h"

#ifndef CHATD_PKGDATADIR
#define CHATD_PKGDATADIR "/usr/local/share/chatd"
#endif

enum {
    OPT_LISTEN = 256, OPT_DATABASE, OPT_REDIS, OPT_ORIGIN, OPT_LOG_LEVEL,
    OPT_DATA_DIR, OPT_SESSION_TTL, OPT_WORKERS, OPT_SLOW_QUERY,
    OPT_STORE_QUEUE, OPT_COLLECT_INTERVAL, OPT_COLLECT_TIMEOUT,
    OPT_METRICS_SQL_DIR, OPT_DRY_RUN, OPT_NODE_ID, OPT_PRESENCE_TTL,
};

static const struct option config_options[] = {
    { "listen", required_argument, NULL, OPT_LISTEN },
    { "database", required_argument, NULL, OPT_DATABASE },
    { "redis", required_argument, NULL, OPT_REDIS },
    { "allowed-origin", required_argument, NULL, OPT_ORIGIN },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "data-dir", required_argument, NULL, OPT_DATA_DIR },
    { "session-ttl", required_argument, NULL, OPT_SESSION_TTL },
    { "workers", required_argument, NULL, OPT_WORKERS },
    { "slow-query-ms", required_argument, NULL, OPT_SLOW_QUERY },
    { "store-queue", required_argument, NULL, OPT_STORE_QUEUE },
    { "collect-interval-ms", required_argument, NULL, OPT_COLLECT_INTERVAL },
    { "collect-timeout-ms", required_argument, NULL, OPT_COLLECT_TIMEOUT },
    { "metrics-sql-dir", required_argument, NULL, OPT_METRICS_SQL_DIR },
    { "dry-run", no_argument, NULL, OPT_DRY_RUN },
    { "node-id", required_argument, NULL, OPT_NODE_ID },
    { "presence-ttl", required_argument, NULL, OPT_PRESENCE_TTL },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
};

void config_usage(FILE *out)
{
    fputs(
"Usage: chatd [OPTION]...            serve chat over HTTP and WebSocket\n"
"       chatd migrate up [N] | down [N] | status | verify | force-clean V\n"
"                    [--dry-run] [OPTION]...\n"
"\n"
"Options (each defaults to the environment variable named):\n"
"  --listen HOST:PORT       address to serve on (CHATD_LISTEN, 127.0.0.1:8080)\n"
"  --database URL           sqlite:PATH or postgresql://... (CHATD_DATABASE,\n"
"                           sqlite:chatd.db)\n"
"  --redis URL              redis://HOST:PORT/DB for presence and fan-out\n"
"                           across nodes (CHATD_REDIS; none: in-process);\n"
"                           redis://:PASSWORD@HOST:PORT/DB with a password\n"
"  --node-id ID             this node's name among the nodes sharing Redis\n"
"                           (CHATD_NODE_ID; default HOSTNAME-RANDOM)\n"
"  --presence-ttl SECONDS   a session counts as online this long after its\n"
"                           node's last heartbeat (CHATD_PRESENCE_TTL, 30;\n"
"                           3 to 3600)\n"
"  --allowed-origin ORIGIN  a browser Origin allowed to open WebSockets;\n"
"                           repeatable (CHATD_ALLOWED_ORIGINS, comma-separated;\n"
"                           default: the server's own http://localhost:PORT)\n"
"  --log-level LEVEL        debug, info, warn or error (CHATD_LOG_LEVEL, info)\n"
"  --data-dir DIR           where migrations/, sql/ and web/ are\n"
"                           (CHATD_DATA_DIR, the installed data directory)\n"
"  --session-ttl SECONDS    login session lifetime (CHATD_SESSION_TTL, 604800)\n"
"  --workers N              threads for reads and logins (CHATD_WORKERS, 2)\n"
"  --slow-query-ms MS       log queries slower than this (CHATD_SLOW_QUERY_MS,\n"
"                           100)\n"
"  --store-queue N          sends waiting for the database before new ones get\n"
"                           'busy' (CHATD_STORE_QUEUE, 65536)\n"
"  --collect-interval-ms MS how often the collector runs each SQL metric\n"
"                           query (CHATD_COLLECT_INTERVAL_MS, 15000)\n"
"  --collect-timeout-ms MS  the time limit of each collector query\n"
"                           (CHATD_COLLECT_TIMEOUT_MS, 5000)\n"
"  --metrics-sql-dir DIR    the collector's query files (CHATD_METRICS_SQL_DIR;\n"
"                           default DATA-DIR/sql/metrics)\n"
"  -h, --help               show this help\n"
"  -V, --version            show the version\n", out);
}

static void config_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void config_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parses a decimal integer in [lo, hi]; 0 or -1. */
static int config_parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int config_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    size_t hl;

    if (s == NULL)
        return -1;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        hl = (size_t)(close - s - 1);
        s++;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen)
        return -1;
    if (config_parse_int(colon + 1, 1, 65535, port) != 0)
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (strcmp(host, "localhost") == 0)
        snprintf(host, hostlen, "127.0.0.1");
    return 0;
}

static int config_valid_url(const char *kind, const char *url)
{
    if (strcmp(kind, "database") == 0)
        return (strncmp(url, "sqlite:", 7) == 0 && url[7] != '\0') ||
               strncmp(url, "postgresql://", 13) == 0 ||
               strncmp(url, "postgres://", 11) == 0;
    return strncmp(url, "redis://", 8) == 0 && url[8] != '\0';
}

static int config_valid_origin(const char *o)
{
    const char *p;

    if (strncmp(o, "http://", 7) == 0)
        p = o + 7;
    else if (strncmp(o, "https://", 8) == 0)
        p = o + 8;
    else
        return 0;
    if (*p == '\0' || strchr(p, '/') != NULL || strlen(o) > 255)
        return 0;
    for (; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return 0;
    return 1;
}

static int config_add_origins(struct config *cfg, const char *name,
                              const char *list, char *err, size_t errlen)
{
    char *copy = xstrdup(list), *save = NULL, *tok;
    int rc = 0;

    for (tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t n = strlen(tok);
        while (n > 0 && tok[n - 1] == ' ')
            tok[--n] = '\0';
        if (n == 0)
            continue;
        if (!config_valid_origin(tok)) {
            config_error(err, errlen, "invalid %s '%s': expected "
                         "http(s)://host[:port] with no path", name, tok);
            rc = -1;
            break;
        }
        if (cfg->norigins == CONFIG_MAX_ORIGINS) {
            config_error(err, errlen, "too many allowed origins (max %d)",
                         CONFIG_MAX_ORIGINS);
            rc = -1;
            break;
        }
        cfg->origins[cfg->norigins++] = xstrdup(tok);
    }
    free(copy);
    return rc;
}

static int config_valid_node_id(const char *v)
{
    size_t n = strlen(v), i;

    if (n == 0 || n > 63 || strcmp(v, "-") == 0)
        return 0;
    for (i = 0; i < n; i++)
        if (!isalnum((unsigned char)v[i]) && v[i] != '.' && v[i] != '_' &&
            v[i] != '-')
            return 0;
    return 1;
}

static void config_set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = v ? xstrdup(v) : NULL;
}

/* Applies one setting, from a flag or an environment variable. */
static int config_apply(struct config *cfg, int opt, const char *name,
                        const char *v, char *err, size_t errlen)
{
    int lvl;

    switch (opt) {
    case OPT_LISTEN:
        if (config_parse_listen(v, cfg->listen_host, sizeof cfg->listen_host,
                                &cfg->listen_port) != 0) {
            config_error(err, errlen, "invalid %s '%s': expected HOST:PORT",
                         name, v);
            return -1;
        }
        return 0;
    case OPT_DATABASE:
        if (!config_valid_url("database", v)) {
            config_error(err, errlen, "invalid %s '%s': expected sqlite:PATH "
                         "or postgresql://...", name,
                         strncmp(v, "postgres", 8) == 0 ? "postgres URL" : v);
            return -1;
        }
        config_set_str(&cfg->database, v);
        return 0;
    case OPT_REDIS:
        if (*v == '\0') {
            config_set_str(&cfg->redis, NULL);
            return 0;
        }
        {
            struct redis_url u;
            char why[128];
            if (!config_valid_url("redis", v) ||
                redis_url_parse(v, &u, why, sizeof why) != 0) {
                /* Not the value: it may hold a password. */
                config_error(err, errlen, "invalid %s: expected "
                             "redis://[:PASSWORD@]HOST[:PORT][/DB]", name);
                return -1;
            }
        }
        config_set_str(&cfg->redis, v);
        return 0;
    case OPT_ORIGIN:
        return config_add_origins(cfg, name, v, err, errlen);
    case OPT_LOG_LEVEL:
        lvl = log_level_parse(v);
        if (lvl < 0) {
            config_error(err, errlen, "invalid %s '%s': expected debug, info, "
                         "warn or error", name, v);
            return -1;
        }
        cfg->log_level = lvl;
        return 0;
    case OPT_DATA_DIR:
        config_set_str(&cfg->data_dir, v);
        return 0;
    case OPT_SESSION_TTL:
        if (config_parse_int(v, 60, 365L * 86400, &cfg->session_ttl) == 0)
            return 0;
        config_error(err, errlen, "invalid %s '%s': expected seconds from 60 "
                     "to 31536000", name, v);
        return -1;
    case OPT_WORKERS:
        if (config_parse_int(v, 1, 64, &cfg->workers) == 0)
            return 0;
        config_error(err, errlen, "invalid %s '%s': expected 1 to 64", name, v);
        return -1;
    case OPT_SLOW_QUERY:
        if (config_parse_int(v, 0, 3600000, &cfg->slow_query_ms) == 0)
            return 0;
        config_error(err, errlen, "invalid %s '%s': expected milliseconds",
                     name, v);
        return -1;
    case OPT_STORE_QUEUE:
        if (config_parse_int(v, 16, 1 << 22, &cfg->store_queue) == 0)
            return 0;
        config_error(err, errlen, "invalid %s '%s': expected 16 to 4194304",
                     name, v);
        return -1;
    case OPT_METRICS_SQL_DIR:
        config_set_str(&cfg->metrics_sql_dir, v);
        return 0;
    case OPT_NODE_ID:
        if (!config_valid_node_id(v)) {
            config_error(err, errlen, "invalid %s '%s': expected 1 to 63 "
                         "letters, digits, '.', '_' or '-'", name, v);
            return -1;
        }
        config_set_str(&cfg->node_id, v);
        return 0;
    case OPT_PRESENCE_TTL:
        if (config_parse_int(v, 3, 3600, &cfg->presence_ttl) == 0)
            return 0;
        config_error(err, errlen, "invalid %s '%s': expected seconds from 3 "
                     "to 3600", name, v);
        return -1;
    case OPT_COLLECT_INTERVAL:
        if (config_parse_int(v, 100, 3600000, &cfg->collect_interval_ms) == 0)
            return 0;
        config_error(err, errlen, "invalid %s '%s': expected 100 to 3600000 "
                     "milliseconds", name, v);
        return -1;
    case OPT_COLLECT_TIMEOUT:
        if (config_parse_int(v, 10, 600000, &cfg->collect_timeout_ms) == 0)
            return 0;
        config_error(err, errlen, "invalid %s '%s': expected 10 to 600000 "
                     "milliseconds", name, v);
        return -1;
    }
    return 0;
}

static const struct {
    const char *env;
    int opt;
} config_env[] = {
    { "CHATD_LISTEN", OPT_LISTEN },
    { "CHATD_DATABASE", OPT_DATABASE },
    { "CHATD_REDIS", OPT_REDIS },
    { "CHATD_ALLOWED_ORIGINS", OPT_ORIGIN },
    { "CHATD_LOG_LEVEL", OPT_LOG_LEVEL },
    { "CHATD_DATA_DIR", OPT_DATA_DIR },
    { "CHATD_SESSION_TTL", OPT_SESSION_TTL },
    { "CHATD_WORKERS", OPT_WORKERS },
    { "CHATD_SLOW_QUERY_MS", OPT_SLOW_QUERY },
    { "CHATD_STORE_QUEUE", OPT_STORE_QUEUE },
    { "CHATD_COLLECT_INTERVAL_MS", OPT_COLLECT_INTERVAL },
    { "CHATD_COLLECT_TIMEOUT_MS", OPT_COLLECT_TIMEOUT },
    { "CHATD_METRICS_SQL_DIR", OPT_METRICS_SQL_DIR },
    { "CHATD_NODE_ID", OPT_NODE_ID },
    { "CHATD_PRESENCE_TTL", OPT_PRESENCE_TTL },
};

int config_parse(struct config *cfg, int argc, char **argv, char *err,
                 size_t errlen)
{
    int c, dry_run = 0, flag_origins = 0;
    size_t i;

    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8080;
    cfg->database = xstrdup("sqlite:chatd.db");
    cfg->log_level = LOG_INFO;
    cfg->session_ttl = 7 * 86400;
    cfg->workers = 2;
    cfg->slow_query_ms = 100;
    cfg->store_queue = 65536;
    cfg->collect_interval_ms = 15000;
    cfg->collect_timeout_ms = 5000;
    cfg->presence_ttl = 30;

    for (i = 0; i < sizeof config_env / sizeof config_env[0]; i++) {
        const char *v = getenv(config_env[i].env);
        if (v == NULL || (*v == '\0' && config_env[i].opt != OPT_REDIS))
            continue;
        if (config_apply(cfg, config_env[i].opt, config_env[i].env, v, err,
                         errlen) != 0)
            return -1;
    }

    optind = 0;     /* GNU: start over, so the tests can parse again */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hV", config_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            cfg->cmd = CONFIG_CMD_HELP;
            return 0;
        case 'V':
            cfg->cmd = CONFIG_CMD_VERSION;
            return 0;
        case OPT_DRY_RUN:
            dry_run = 1;
            break;
        case OPT_ORIGIN:
            /* Flags replace the environment's list rather than add to it. */
            if (!flag_origins) {
                for (i = 0; i < cfg->norigins; i++)
                    free(cfg->origins[i]);
                cfg->norigins = 0;
                flag_origins = 1;
            }
            /* fall through */
        case OPT_LISTEN: case OPT_DATABASE: case OPT_REDIS: case OPT_LOG_LEVEL:
        case OPT_DATA_DIR: case OPT_SESSION_TTL: case OPT_WORKERS:
        case OPT_SLOW_QUERY: case OPT_STORE_QUEUE: case OPT_COLLECT_INTERVAL:
        case OPT_COLLECT_TIMEOUT: case OPT_METRICS_SQL_DIR: case OPT_NODE_ID:
        case OPT_PRESENCE_TTL: {
            char name[64];
            snprintf(name, sizeof name, "--%s",
                     config_options[c - OPT_LISTEN].name);
            if (config_apply(cfg, c, name, optarg, err, errlen) != 0)
                return -1;
            break;
        }
        case ':':
            config_error(err, errlen, "option '%s' needs a value",
                         argv[optind - 1]);
            return -1;
        default:
            if (optopt)
                config_error(err, errlen, "unknown option '-%c' (see --help)",
                             optopt);
            else
                config_error(err, errlen, "unknown option '%s' (see --help)",
                             argv[optind - 1]);
            return -1;
        }
    }

    if (optind < argc) {
        if (strcmp(argv[optind], "migrate") != 0) {
            config_error(err, errlen, "unknown command '%s' (see --help)",
                         argv[optind]);
            return -1;
        }
        cfg->cmd = CONFIG_CMD_MIGRATE;
        cfg->cmd_argc = argc - optind - 1;
        cfg->cmd_argv = xcalloc((size_t)cfg->cmd_argc + 2, sizeof(char *));
        for (c = 0; c < cfg->cmd_argc; c++)
            cfg->cmd_argv[c] = argv[optind + 1 + c];
        if (dry_run)
            cfg->cmd_argv[cfg->cmd_argc++] = "--dry-run";
    } else if (dry_run) {
        config_error(err, errlen, "--dry-run applies only to 'chatd migrate'");
        return -1;
    }
    return 0;
}

/* The source tree when chatd runs from it: the binary's directory holds
 * migrations/ beside it. NULL otherwise. */
static char *config_tree_dir(const char *argv0)
{
    char exe[PATH_MAX], probe[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash;
    const char *subdirs[] = { "", "/.." };
    size_t i;

    (void)argv0;
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash == NULL)
        return NULL;
    *slash = '\0';
    for (i = 0; i < 2; i++) {
        snprintf(probe, sizeof probe, "%s%s/migrations/sqlite", exe,
                 subdirs[i]);
        if (access(probe, R_OK) == 0) {
            snprintf(probe, sizeof probe, "%s%s", exe, subdirs[i]);
            return xstrdup(probe);
        }
    }
    return NULL;
}

void config_finish(struct config *cfg, const char *argv0)
{
    if (cfg->norigins == 0) {
        char o[128];
        snprintf(o, sizeof o, "http://localhost:%d", cfg->listen_port);
        cfg->origins[cfg->norigins++] = xstrdup(o);
        snprintf(o, sizeof o, "http://127.0.0.1:%d", cfg->listen_port);
        cfg->origins[cfg->norigins++] = xstrdup(o);
    }
    /* A binary in a source tree uses that tree's data; an installed one
     * the installed data directory. */
    if (cfg->data_dir == NULL && (cfg->data_dir = config_tree_dir(argv0)) == NULL)
        cfg->data_dir = xstrdup(CHATD_PKGDATADIR);
    if (cfg->node_id == NULL) {
        /* HOSTNAME-RANDOM: unique even where every container's hostname
         * or pid is the same. */
        char host[40] = "", id[64];
        unsigned char r[4] = { 0 };
        size_t i;
        FILE *f = fopen("/dev/urandom", "rb");
        if (f) {
            if (fread(r, 1, sizeof r, f) != sizeof r)
                memset(r, 0, sizeof r);
            fclose(f);
        }
        gethostname(host, sizeof host - 1);
        for (i = 0; host[i]; i++)
            if (!isalnum((unsigned char)host[i]) && host[i] != '.' &&
                host[i] != '_' && host[i] != '-')
                host[i] = '_';
        snprintf(id, sizeof id, "%s-%02x%02x%02x%02x",
                 host[0] && host[0] != '-' ? host : "node", r[0], r[1], r[2],
                 r[3]);
        cfg->node_id = xstrdup(id);
    }
}

void config_free(struct config *cfg)
{
    size_t i;

    free(cfg->database);
    free(cfg->redis);
    free(cfg->data_dir);
    free(cfg->metrics_sql_dir);
    free(cfg->node_id);
    for (i = 0; i < cfg->norigins; i++)
        free(cfg->origins[i]);
    free(cfg->cmd_argv);
    memset(cfg, 0, sizeof *cfg);
}
