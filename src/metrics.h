/*
 * metrics.h - the process-global Prometheus registry: counters, gauges and
 * histograms, rendered as text exposition format 0.0.4 for GET /metrics.
 *
 * A family (name, help, fixed label names) is registered once, normally at
 * start; a child is one label-value tuple of a family. Updating a child is
 * lock-free (C11 atomics, relaxed order), and so is finding an existing
 * child by its label values, so any thread may count on its hot path and
 * may cache the child pointer for the life of the process. Creating a child
 * takes the family's mutex once. Each family holds at most max_series
 * children, a guard against label explosion: past it metrics_child()
 * returns NULL, counts chat_metrics_dropped_series_total, and every update
 * function accepts NULL and does nothing.
 *
 * Rendering reads the same atomics and never blocks writers. Besides the
 * registered families it renders the process_* metrics (read from
 * /proc/self at scrape time) and the snapshot text block that the collector
 * swaps in whole with metrics_set_snapshot().
 *
 * Errors: registration returns NULL for an invalid or duplicate name.
 * Ownership: families and children live until metrics_reset_for_tests();
 * metrics_render() returns a string the caller frees.
 * Threads: everything may be called from any thread, except
 * metrics_reset_for_tests(), which needs every other user stopped.
 */
#ifndef CHATD_METRICS_H
#define CHATD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Children a family holds unless metrics_set_max_series() says otherwise. */
#define METRICS_DEFAULT_MAX_SERIES 1000
/* Label names a family may have. */
#define METRICS_MAX_LABELS 8

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics_family;
struct metrics_child;

/* Computes a value at render time (func families); arg as registered. */
typedef double (*metrics_value_cb)(void *arg);

/* Request latency buckets in seconds, 0.0005 .. 10. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_nbuckets;

/*
 * Registration. name must match [a-zA-Z_:][a-zA-Z0-9_:]* and be new;
 * labels is a NULL-terminated list of label names ([a-zA-Z_][a-zA-Z0-9_]*,
 * not starting with "__", no duplicates, "le" not on histograms), or NULL
 * for none. The strings are copied. A label-less family gets its one child
 * at once, so it renders a 0 before anything counts.
 * Histogram bounds must be finite and strictly increasing; +Inf is implied.
 * bounds NULL means metrics_latency_buckets. Returns NULL on bad arguments.
 */
struct metrics_family *metrics_counter_new(const char *name, const char *help,
                                           const char *const labels[]);
struct metrics_family *metrics_gauge_new(const char *name, const char *help,
                                         const char *const labels[]);
struct metrics_family *metrics_histogram_new(const char *name,
                                             const char *help,
                                             const char *const labels[],
                                             const double *bounds,
                                             size_t nbounds);

/* Label-less families whose value fn(arg) computes at render time (queue
 * depths, process figures). fn runs on the rendering thread and must be
 * quick and thread-safe. Returns NULL on a bad or duplicate name. */
struct metrics_family *metrics_gauge_func(const char *name, const char *help,
                                          metrics_value_cb fn, void *arg);
struct metrics_family *metrics_counter_func(const char *name,
                                            const char *help,
                                            metrics_value_cb fn, void *arg);

/* Caps the children of a family (at least 1). Children already created are
 * kept. */
void metrics_set_max_series(struct metrics_family *f, size_t max);

/* The registered family called name, or NULL. */
struct metrics_family *metrics_find(const char *name);

/*
 * The child for values, an array of exactly as many strings as the family
 * has label names (NULL for a label-less family; a NULL entry reads as "").
 * Lock-free when the child exists; created otherwise. Returns NULL when f
 * is NULL, is a func family, or is at its series cap (counted in
 * chat_metrics_dropped_series_total). The pointer stays valid for the life
 * of the registry.
 */
struct metrics_child *metrics_child(struct metrics_family *f,
                                    const char *const values[]);

/* Updates. All accept NULL and do nothing; a call on a child of another
 * type does nothing too. Gauges and histogram sums are doubles kept as
 * their bits in a 64-bit atomic, added with a compare-and-swap loop. A NaN
 * observation is ignored. */
void metrics_counter_add(struct metrics_child *c, uint64_t n);
void metrics_counter_inc(struct metrics_child *c);
void metrics_gauge_set(struct metrics_child *c, double v);
void metrics_gauge_add(struct metrics_child *c, double v);
void metrics_histogram_observe(struct metrics_child *c, double v);

/* Current values, for tests and for modules that read their own figures;
 * 0 for NULL or the wrong type. */
uint64_t metrics_counter_value(const struct metrics_child *c);
double metrics_gauge_value(const struct metrics_child *c);
uint64_t metrics_histogram_count(const struct metrics_child *c);
double metrics_histogram_sum(const struct metrics_child *c);

/* Label sets refused because their family was at its cap, one per refused
 * metrics_child() call. */
uint64_t metrics_dropped_series(void);

/*
 * Replaces the block of text appended to every render (the collector's
 * SQL-derived gauges, already in exposition format) and takes ownership of
 * text (malloc'd; NULL removes the block). The old block is freed once no
 * render still uses it: renders take a reference under a mutex held only
 * for the pointer copy and the count, so neither side waits on the other's
 * work.
 */
void metrics_set_snapshot(char *text);

/* Appends the whole exposition to b: registered families in registration
 * order with children in creation order, then the process metrics (after
 * metrics_init()), then the snapshot block. */
void metrics_render_buf(struct util_buf *b);
/* The same as a malloc'd NUL-terminated string the caller frees; *len (if
 * not NULL) gets its length. */
char *metrics_render(size_t *len);
/* Appends process_* metrics read from /proc/self now. Returns 0, or -1 if
 * /proc/self/stat could not be read (then nothing is appended). */
int metrics_render_process(struct util_buf *b);

/*
 * Registers the families chatd exposes (below) and turns on the process
 * metrics. version labels chatd_build_info (NULL reads "unknown"). Calling
 * it again does nothing. Returns 0, or -1 if a name was already taken.
 */
int metrics_init(const char *version);

/* Frees every family, child and the snapshot, and forgets metrics_init()
 * so it can run again. No other thread may use the registry meanwhile;
 * pointers obtained before are dangling afterwards. */
void metrics_reset_for_tests(void);

/* Counts one HTTP request: http_requests_total{method,route,status} and
 * http_request_duration_seconds{method,route}. route is the template. */
void metrics_observe_http(const char *method, const char *route, int status,
                          double seconds);

/*
 * The families metrics_init() registers; NULL before it (updates through a
 * NULL child do nothing, so modules need not check). metrics_init() sets
 * them before other threads start; they are read-only afterwards. Labelled
 * families are used through metrics_child(); label-less ones are exported
 * as their one child.
 *
 * Labels: method, route, status / method, route / type, route.
 */
extern struct metrics_family *metrics_http_requests;
extern struct metrics_family *metrics_http_request_duration;
extern struct metrics_family *metrics_errors;
/* Label: operation. */
extern struct metrics_family *metrics_cache_requests;
extern struct metrics_family *metrics_cache_hits;
extern struct metrics_family *metrics_cache_misses;
extern struct metrics_family *metrics_cache_duration;
extern struct metrics_family *metrics_db_queries;
extern struct metrics_family *metrics_db_query_duration;
/* Label: reason. */
extern struct metrics_family *metrics_ws_frames_rejected;

extern struct metrics_child *metrics_messages_created;
extern struct metrics_child *metrics_users_registered;
extern struct metrics_child *metrics_users_logged_in;
extern struct metrics_child *metrics_conversations_created;
extern struct metrics_child *metrics_messages_delivered;
extern struct metrics_child *metrics_log_lines_dropped;
extern struct metrics_child *metrics_db_connections_active;   /* gauge */
extern struct metrics_child *metrics_ws_connections;          /* gauge */
extern struct metrics_child *metrics_store_queue_depth;       /* gauge */
extern struct metrics_child *metrics_store_batch_size;        /* histogram */
extern struct metrics_child *metrics_bus_published;
extern struct metrics_child *metrics_bus_received;
extern struct metrics_child *metrics_bus_dropped;
extern struct metrics_child *metrics_bus_late;
/* Registered by the Redis bus only (no sample without Redis). */
extern struct metrics_child *metrics_redis_up;                /* gauge */

#endif
