/*
 * collector.h - the collector thread: turns SQL into gauges.
 *
 * At start it loads the queries in sql/metrics/ (one file per metric
 * family, or per group of families that one query feeds; each family's
 * name, type, help and labels in a header comment; a file per dialect
 * where Postgres and SQLite differ). Then, on its own
 * thread and its own database connection, it runs each query on its
 * interval with a time limit, never two at once and never at scrape time,
 * and swaps a whole new text snapshot into the metrics module, which
 * /metrics serves with the live counters. A query that fails drops its
 * samples (no stale values) and counts an error.
 *
 * collector_start and collector_stop run on the main thread.
 */
#ifndef CHATD_COLLECTOR_H
#define CHATD_COLLECTOR_H

#include <stddef.h>

struct collector;

struct collector_config {
    const char *db_url;
    const char *sql_dir;          /* DATA/sql/metrics */
    int interval_ms;              /* each query's period */
    int timeout_ms;               /* each query's time limit */
    const char *redis_url;        /* NULL: no Redis queries */
};

/* Loads the queries and starts the thread. NULL with err set when a query
 * file is malformed or the database cannot be opened. */
struct collector *collector_start(const struct collector_config *cfg,
                                  char *err, size_t errlen);
/* Stops and joins the thread (at most one query's time limit). */
void collector_stop(struct collector *c);

/* For the tests: parses one query file's header. NULL with err set when
 * the file is refused. */
struct collector_query;
struct collector_query *collector_query_parse(const char *file,
                                              const char *text, char *err,
                                              size_t errlen);
void collector_query_free(struct collector_query *q);
/* Renders one result (rows: label values..., value; with several
 * families: family name, label values padded with NULLs, value) of q into
 * b as exposition text, family by family in the order the file declares
 * them. */
struct store_rows;
struct util_buf;
int collector_render(const struct collector_query *q,
                     const struct store_rows *rows, struct util_buf *b,
                     char *err, size_t errlen);

#endif
