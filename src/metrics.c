/*
 * metrics.c - the Prometheus registry and its text exposition (format
 * 0.0.4). See metrics.h for the contract.
 *
 * Any thread updates metrics; the service thread renders them for
 * GET /metrics; the collector thread swaps in its snapshot text.
 *
 * Design. Families form an append-only singly linked list, and so do the
 * children of each family. A new node is fully built, then published by a
 * release store into its predecessor's next pointer; readers walk the list
 * with acquire loads and so see only complete nodes. Nothing is unlinked
 * before metrics_reset_for_tests(), which is why lookups and renders need
 * no lock and a cached child pointer stays valid. Appending is serialised
 * by the registry mutex (families) or the family's mutex (children); the
 * lookup is repeated under the mutex so two threads asking for the same new
 * label set get the same child.
 *
 * Values are 64-bit atomics updated with relaxed order: counters are
 * integers; gauges and histogram sums are doubles stored as their bits and
 * added with a compare-and-swap loop (an integer of nanoseconds would not
 * fit every unit a histogram may carry, e.g. batch sizes). A histogram
 * counts each observation in its own bucket only; the render accumulates
 * them, and _count is that total, so +Inf always equals _count within one
 * scrape even while writers run.
 *
 * The snapshot block is refcounted: a render takes a reference under
 * metrics_snap_lock (held for a pointer copy and an increment, never for
 * I/O or formatting), and whichever of the render or the swap drops the
 * last reference frees it.
 */
#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct metrics_child {
    _Atomic(struct metrics_child *) next;  /* published with release */
    struct metrics_family *family;
    char **values;                          /* nlabels strings, immutable */
    char *labels;                           /* rendered 'a="x",b="y"' or "" */
    _Atomic uint64_t value;                 /* counter count; gauge bits */
    _Atomic uint64_t sum;                   /* histogram: bits of the sum */
    _Atomic uint64_t buckets[];             /* histogram: nbounds + 1 (+Inf) */
};

struct metrics_family {
    _Atomic(struct metrics_family *) next;  /* published with release */
    char *name;
    char *help;
    enum metrics_type type;
    size_t nlabels;
    char **label_names;
    size_t nbounds;
    double *bounds;                         /* histograms, ascending */
    metrics_value_cb fn;                    /* func families, else NULL */
    void *fn_arg;
    pthread_mutex_t lock;                   /* serialises child creation */
    size_t max_series;                      /* lock */
    size_t nchildren;                       /* lock */
    struct metrics_child *tail;             /* lock */
    _Atomic(struct metrics_child *) children;
};

struct metrics_snapshot {
    char *text;
    size_t len;
    int refs;                               /* metrics_snap_lock */
};

const double metrics_latency_buckets[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
const size_t metrics_latency_nbuckets =
    sizeof metrics_latency_buckets / sizeof metrics_latency_buckets[0];

static const double metrics_batch_buckets[] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
};

static pthread_mutex_t metrics_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct metrics_family *) metrics_families;
static struct metrics_family *metrics_families_tail;  /* metrics_reg_lock */
static int metrics_initialised;                      /* metrics_reg_lock */
static atomic_int metrics_process_on;
static _Atomic uint64_t metrics_dropped;

static pthread_mutex_t metrics_snap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_snapshot *metrics_snap;        /* metrics_snap_lock */

struct metrics_family *metrics_http_requests;
struct metrics_family *metrics_http_request_duration;
struct metrics_family *metrics_errors;
struct metrics_family *metrics_cache_requests;
struct metrics_family *metrics_cache_hits;
struct metrics_family *metrics_cache_misses;
struct metrics_family *metrics_cache_duration;
struct metrics_family *metrics_db_queries;
struct metrics_family *metrics_db_query_duration;
struct metrics_family *metrics_ws_frames_rejected;

struct metrics_child *metrics_messages_created;
struct metrics_child *metrics_users_registered;
struct metrics_child *metrics_users_logged_in;
struct metrics_child *metrics_conversations_created;
struct metrics_child *metrics_messages_delivered;
struct metrics_child *metrics_log_lines_dropped;
struct metrics_child *metrics_db_connections_active;
struct metrics_child *metrics_ws_connections;
struct metrics_child *metrics_store_queue_depth;
struct metrics_child *metrics_store_batch_size;
struct metrics_child *metrics_bus_published;
struct metrics_child *metrics_bus_received;
struct metrics_child *metrics_bus_dropped;
struct metrics_child *metrics_bus_late;
struct metrics_child *metrics_redis_up;

/* --- doubles as bits --- */

static uint64_t metrics_d2u(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof u);
    return u;
}

static double metrics_u2d(uint64_t u)
{
    double d;

    memcpy(&d, &u, sizeof d);
    return d;
}

/* Adds v to the double whose bits live in *a; lock-free. */
static void metrics_atomic_add_double(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);

    while (!atomic_compare_exchange_weak_explicit(
        a, &old, metrics_d2u(metrics_u2d(old) + v), memory_order_relaxed,
        memory_order_relaxed))
        ;
}

/* --- names --- */

static int metrics_valid_name(const char *s, int colon_ok)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (size_t i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 c == '_' || (colon_ok && c == ':') ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* Walks the published families; the caller may hold metrics_reg_lock. */
struct metrics_family *metrics_find(const char *name)
{
    struct metrics_family *f =
        atomic_load_explicit(&metrics_families, memory_order_acquire);

    for (; f != NULL; f = atomic_load_explicit(&f->next, memory_order_acquire))
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static int metrics_valid_labels(const char *const labels[], size_t n,
                                enum metrics_type type)
{
    for (size_t i = 0; i < n; i++) {
        if (!metrics_valid_name(labels[i], 0))
            return 0;
        if (strncmp(labels[i], "__", 2) == 0)
            return 0;
        if (type == METRICS_HISTOGRAM && strcmp(labels[i], "le") == 0)
            return 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0)
                return 0;
    }
    return 1;
}

/* --- text escaping and numbers --- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t metrics_utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/*
 * Appends s escaped for the exposition: backslash and newline always,
 * the double quote too when quote is set (label values). Bytes that are not
 * UTF-8 become U+FFFD, since the format is UTF-8 and a scraper would refuse
 * the whole page for one bad byte that reached a label.
 */
static void metrics_escape(struct util_buf *b, const char *s, int quote)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p != '\0') {
        size_t n = metrics_utf8_len(p);

        if (n == 0) {
            util_buf_puts(b, "\xef\xbf\xbd");
            p++;
        } else if (*p == '\\') {
            util_buf_puts(b, "\\\\");
            p++;
        } else if (*p == '\n') {
            util_buf_puts(b, "\\n");
            p++;
        } else if (*p == '"' && quote) {
            util_buf_puts(b, "\\\"");
            p++;
        } else {
            util_buf_append(b, p, n);
            p += n;
        }
    }
}

/*
 * Appends v as Prometheus parses it: NaN, +Inf, -Inf; whole numbers below
 * 2^53 without a fraction or exponent; anything else in the shortest %g
 * form that reads back as the same double.
 */
static void metrics_put_double(struct util_buf *b, double v)
{
    char tmp[40];

    if (isnan(v)) {
        util_buf_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        util_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        util_buf_printf(b, "%.0f", v);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (prec == 17 || strtod(tmp, NULL) == v)
            break;
    }
    util_buf_puts(b, tmp);
}

/* --- families --- */

static struct metrics_family *metrics_family_alloc(
    const char *name, const char *help, enum metrics_type type,
    const char *const labels[], const double *bounds, size_t nbounds)
{
    struct metrics_family *f = xcalloc(1, sizeof *f);
    size_t n = 0;

    while (labels != NULL && labels[n] != NULL)
        n++;
    f->name = xstrdup(name);
    f->help = xstrdup(help != NULL ? help : "");
    f->type = type;
    f->nlabels = n;
    f->label_names = xcalloc(n ? n : 1, sizeof *f->label_names);
    for (size_t i = 0; i < n; i++)
        f->label_names[i] = xstrdup(labels[i]);
    if (type == METRICS_HISTOGRAM) {
        f->nbounds = nbounds;
        f->bounds = xcalloc(nbounds ? nbounds : 1, sizeof *f->bounds);
        memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
    }
    pthread_mutex_init(&f->lock, NULL);
    f->max_series = METRICS_DEFAULT_MAX_SERIES;
    atomic_init(&f->next, NULL);
    atomic_init(&f->children, NULL);
    return f;
}

static void metrics_child_free(struct metrics_child *c, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(c->values[i]);
    free(c->values);
    free(c->labels);
    free(c);
}

static void metrics_family_free(struct metrics_family *f)
{
    struct metrics_child *c, *next;

    if (f == NULL)
        return;
    for (c = atomic_load_explicit(&f->children, memory_order_acquire);
         c != NULL; c = next) {
        next = atomic_load_explicit(&c->next, memory_order_acquire);
        metrics_child_free(c, f->nlabels);
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->label_names[i]);
    free(f->label_names);
    free(f->bounds);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/*
 * Validates, builds and publishes a family. Label-less families that hold
 * values get their one child before they are published, so every render
 * shows them. Returns NULL on a bad argument or a taken name.
 */
static struct metrics_family *metrics_register(
    const char *name, const char *help, enum metrics_type type,
    const char *const labels[], const double *bounds, size_t nbounds,
    metrics_value_cb fn, void *arg)
{
    struct metrics_family *f;
    size_t n = 0;

    while (labels != NULL && labels[n] != NULL)
        n++;
    if (!metrics_valid_name(name, 1) || n > METRICS_MAX_LABELS ||
        !metrics_valid_labels(labels, n, type))
        return NULL;
    if (type == METRICS_HISTOGRAM) {
        if (bounds == NULL) {
            bounds = metrics_latency_buckets;
            nbounds = metrics_latency_nbuckets;
        }
        for (size_t i = 0; i < nbounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
                return NULL;
    }

    f = metrics_family_alloc(name, help, type, labels, bounds, nbounds);
    f->fn = fn;
    f->fn_arg = arg;
    if (n == 0 && fn == NULL)
        (void)metrics_child(f, NULL);

    pthread_mutex_lock(&metrics_reg_lock);
    if (metrics_find(name) != NULL) {
        pthread_mutex_unlock(&metrics_reg_lock);
        metrics_family_free(f);
        return NULL;
    }
    if (metrics_families_tail == NULL)
        atomic_store_explicit(&metrics_families, f, memory_order_release);
    else
        atomic_store_explicit(&metrics_families_tail->next, f,
                              memory_order_release);
    metrics_families_tail = f;
    pthread_mutex_unlock(&metrics_reg_lock);
    return f;
}

struct metrics_family *metrics_counter_new(const char *name, const char *help,
                                           const char *const labels[])
{
    return metrics_register(name, help, METRICS_COUNTER, labels, NULL, 0,
                            NULL, NULL);
}

struct metrics_family *metrics_gauge_new(const char *name, const char *help,
                                         const char *const labels[])
{
    return metrics_register(name, help, METRICS_GAUGE, labels, NULL, 0, NULL,
                            NULL);
}

struct metrics_family *metrics_histogram_new(const char *name,
                                             const char *help,
                                             const char *const labels[],
                                             const double *bounds,
                                             size_t nbounds)
{
    return metrics_register(name, help, METRICS_HISTOGRAM, labels, bounds,
                            nbounds, NULL, NULL);
}

struct metrics_family *metrics_gauge_func(const char *name, const char *help,
                                          metrics_value_cb fn, void *arg)
{
    if (fn == NULL)
        return NULL;
    return metrics_register(name, help, METRICS_GAUGE, NULL, NULL, 0, fn,
                            arg);
}

struct metrics_family *metrics_counter_func(const char *name,
                                            const char *help,
                                            metrics_value_cb fn, void *arg)
{
    if (fn == NULL)
        return NULL;
    return metrics_register(name, help, METRICS_COUNTER, NULL, NULL, 0, fn,
                            arg);
}

void metrics_set_max_series(struct metrics_family *f, size_t max)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    f->max_series = max > 0 ? max : 1;
    pthread_mutex_unlock(&f->lock);
}

/* --- children --- */

static int metrics_child_matches(const struct metrics_child *c, size_t n,
                                 const char *const values[])
{
    for (size_t i = 0; i < n; i++) {
        const char *v = values[i] != NULL ? values[i] : "";
        if (strcmp(c->values[i], v) != 0)
            return 0;
    }
    return 1;
}

static struct metrics_child *metrics_child_lookup(struct metrics_family *f,
                                                  const char *const values[])
{
    struct metrics_child *c =
        atomic_load_explicit(&f->children, memory_order_acquire);

    for (; c != NULL; c = atomic_load_explicit(&c->next, memory_order_acquire))
        if (metrics_child_matches(c, f->nlabels, values))
            return c;
    return NULL;
}

/* Builds a child with its label text rendered once, so scrapes only copy. */
static struct metrics_child *metrics_child_alloc(struct metrics_family *f,
                                                 const char *const values[])
{
    size_t nb = f->type == METRICS_HISTOGRAM ? f->nbounds + 1 : 0;
    struct metrics_child *c =
        xcalloc(1, sizeof *c + nb * sizeof c->buckets[0]);
    struct util_buf lb = { 0 };

    c->family = f;
    c->values = xcalloc(f->nlabels ? f->nlabels : 1, sizeof *c->values);
    for (size_t i = 0; i < f->nlabels; i++) {
        c->values[i] = xstrdup(values[i] != NULL ? values[i] : "");
        util_buf_printf(&lb, "%s%s=\"", i > 0 ? "," : "", f->label_names[i]);
        metrics_escape(&lb, c->values[i], 1);
        util_buf_puts(&lb, "\"");
    }
    c->labels = util_buf_steal(&lb);
    atomic_init(&c->next, NULL);
    atomic_init(&c->value, f->type == METRICS_GAUGE ? metrics_d2u(0.0) : 0);
    atomic_init(&c->sum, metrics_d2u(0.0));
    for (size_t i = 0; i < nb; i++)
        atomic_init(&c->buckets[i], 0);
    return c;
}

struct metrics_child *metrics_child(struct metrics_family *f,
                                    const char *const values[])
{
    static const char *const metrics_no_values[1] = { NULL };
    struct metrics_child *c;

    if (f == NULL || f->fn != NULL)
        return NULL;
    if (values == NULL) {
        if (f->nlabels > 0)
            return NULL;
        values = metrics_no_values;
    }
    c = metrics_child_lookup(f, values);
    if (c != NULL)
        return c;

    pthread_mutex_lock(&f->lock);
    c = metrics_child_lookup(f, values);
    if (c == NULL && f->nchildren < f->max_series) {
        c = metrics_child_alloc(f, values);
        if (f->tail == NULL)
            atomic_store_explicit(&f->children, c, memory_order_release);
        else
            atomic_store_explicit(&f->tail->next, c, memory_order_release);
        f->tail = c;
        f->nchildren++;
    } else if (c == NULL) {
        atomic_fetch_add_explicit(&metrics_dropped, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&f->lock);
    return c;
}

uint64_t metrics_dropped_series(void)
{
    return atomic_load_explicit(&metrics_dropped, memory_order_relaxed);
}

/* --- updates --- */

void metrics_counter_add(struct metrics_child *c, uint64_t n)
{
    if (c == NULL || c->family->type != METRICS_COUNTER)
        return;
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void metrics_counter_inc(struct metrics_child *c)
{
    metrics_counter_add(c, 1);
}

void metrics_gauge_set(struct metrics_child *c, double v)
{
    if (c == NULL || c->family->type != METRICS_GAUGE)
        return;
    atomic_store_explicit(&c->value, metrics_d2u(v), memory_order_relaxed);
}

void metrics_gauge_add(struct metrics_child *c, double v)
{
    if (c == NULL || c->family->type != METRICS_GAUGE)
        return;
    metrics_atomic_add_double(&c->value, v);
}

void metrics_histogram_observe(struct metrics_child *c, double v)
{
    const struct metrics_family *f;
    size_t lo = 0, hi;

    if (c == NULL || c->family->type != METRICS_HISTOGRAM || isnan(v))
        return;
    f = c->family;
    /* The first bound >= v; nbounds means the +Inf bucket. */
    hi = f->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&c->buckets[lo], 1, memory_order_relaxed);
    metrics_atomic_add_double(&c->sum, v);
}

uint64_t metrics_counter_value(const struct metrics_child *c)
{
    if (c == NULL || c->family->type != METRICS_COUNTER)
        return 0;
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

double metrics_gauge_value(const struct metrics_child *c)
{
    if (c == NULL || c->family->type != METRICS_GAUGE)
        return 0;
    return metrics_u2d(atomic_load_explicit(&c->value, memory_order_relaxed));
}

uint64_t metrics_histogram_count(const struct metrics_child *c)
{
    uint64_t total = 0;

    if (c == NULL || c->family->type != METRICS_HISTOGRAM)
        return 0;
    for (size_t i = 0; i <= c->family->nbounds; i++)
        total += atomic_load_explicit(&c->buckets[i], memory_order_relaxed);
    return total;
}

double metrics_histogram_sum(const struct metrics_child *c)
{
    if (c == NULL || c->family->type != METRICS_HISTOGRAM)
        return 0;
    return metrics_u2d(atomic_load_explicit(&c->sum, memory_order_relaxed));
}

/* --- rendering --- */

static const char *metrics_type_name(enum metrics_type t)
{
    switch (t) {
    case METRICS_COUNTER:
        return "counter";
    case METRICS_GAUGE:
        return "gauge";
    case METRICS_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

/* "name{labels}" or "name" when there are none. */
static void metrics_put_series(struct util_buf *b, const char *name,
                               const char *suffix, const char *labels)
{
    util_buf_puts(b, name);
    util_buf_puts(b, suffix);
    if (labels[0] != '\0') {
        util_buf_puts(b, "{");
        util_buf_puts(b, labels);
        util_buf_puts(b, "}");
    }
}

static void metrics_put_header(struct util_buf *b, const char *name,
                               const char *help, const char *type)
{
    util_buf_printf(b, "# HELP %s ", name);
    metrics_escape(b, help, 0);
    util_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

static void metrics_render_histogram(struct util_buf *b,
                                     const struct metrics_family *f,
                                     const struct metrics_child *c)
{
    const char *sep = c->labels[0] != '\0' ? "," : "";
    uint64_t cum = 0;

    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += atomic_load_explicit(&c->buckets[i], memory_order_relaxed);
        util_buf_printf(b, "%s_bucket{%s%sle=\"", f->name, c->labels, sep);
        if (i < f->nbounds)
            metrics_put_double(b, f->bounds[i]);
        else
            util_buf_puts(b, "+Inf");
        util_buf_printf(b, "\"} %" PRIu64 "\n", cum);
    }
    metrics_put_series(b, f->name, "_sum", c->labels);
    util_buf_puts(b, " ");
    metrics_put_double(
        b, metrics_u2d(atomic_load_explicit(&c->sum, memory_order_relaxed)));
    util_buf_puts(b, "\n");
    metrics_put_series(b, f->name, "_count", c->labels);
    util_buf_printf(b, " %" PRIu64 "\n", cum);
}

static void metrics_render_family(struct util_buf *b,
                                  const struct metrics_family *f)
{
    const struct metrics_child *c;

    metrics_put_header(b, f->name, f->help, metrics_type_name(f->type));
    if (f->fn != NULL) {
        util_buf_printf(b, "%s ", f->name);
        metrics_put_double(b, f->fn(f->fn_arg));
        util_buf_puts(b, "\n");
        return;
    }
    for (c = atomic_load_explicit(&f->children, memory_order_acquire);
         c != NULL; c = atomic_load_explicit(&c->next, memory_order_acquire)) {
        uint64_t v;

        if (f->type == METRICS_HISTOGRAM) {
            metrics_render_histogram(b, f, c);
            continue;
        }
        v = atomic_load_explicit(&c->value, memory_order_relaxed);
        metrics_put_series(b, f->name, "", c->labels);
        util_buf_puts(b, " ");
        if (f->type == METRICS_COUNTER)
            util_buf_printf(b, "%" PRIu64, v);
        else
            metrics_put_double(b, metrics_u2d(v));
        util_buf_puts(b, "\n");
    }
}

static void metrics_put_sample(struct util_buf *b, const char *name,
                               const char *help, const char *type, double v)
{
    metrics_put_header(b, name, help, type);
    util_buf_printf(b, "%s ", name);
    metrics_put_double(b, v);
    util_buf_puts(b, "\n");
}

/* Open descriptors, not counting the one this count itself opens. */
static int metrics_count_fds(double *out)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    double n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (e->d_name[0] == '.' || *end != '\0' || fd == dirfd(d))
            continue;
        n++;
    }
    closedir(d);
    *out = n;
    return 0;
}

/* Seconds since the epoch at which the system booted ("btime" in
 * /proc/stat); -1 if unknown. */
static double metrics_boot_time(void)
{
    FILE *fp = fopen("/proc/stat", "r");
    char line[256];
    double btime = -1;

    if (fp == NULL)
        return -1;
    while (fgets(line, sizeof line, fp) != NULL) {
        unsigned long long v;
        if (sscanf(line, "btime %llu", &v) == 1) {
            btime = (double)v;
            break;
        }
    }
    fclose(fp);
    return btime;
}

int metrics_render_process(struct util_buf *b)
{
    char buf[1024];
    FILE *fp = fopen("/proc/self/stat", "r");
    size_t n;
    const char *p;
    unsigned long long utime, stime, start, vsize;
    long long rss;
    double ticks = (double)sysconf(_SC_CLK_TCK);
    double page = (double)sysconf(_SC_PAGESIZE);
    double boot, fds;
    struct rlimit rl;

    if (fp == NULL)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields are counted
     * from the last ')'. utime is field 14 of the line, so the 12th after
     * the state field. */
    p = strrchr(buf, ')');
    if (p == NULL || ticks <= 0 ||
        sscanf(p + 1,
               " %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu"
               " %*s %*s %*s %*s %*s %*s %llu %llu %lld",
               &utime, &stime, &start, &vsize, &rss) != 5)
        return -1;

    metrics_put_sample(b, "process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds.",
                       "counter", (double)(utime + stime) / ticks);
    metrics_put_sample(b, "process_virtual_memory_bytes",
                       "Virtual memory size in bytes.", "gauge",
                       (double)vsize);
    metrics_put_sample(b, "process_resident_memory_bytes",
                       "Resident memory size in bytes.", "gauge",
                       (double)rss * page);
    boot = metrics_boot_time();
    if (boot >= 0)
        metrics_put_sample(b, "process_start_time_seconds",
                           "Start time of the process since unix epoch in "
                           "seconds.",
                           "gauge", boot + (double)start / ticks);
    if (metrics_count_fds(&fds) == 0)
        metrics_put_sample(b, "process_open_fds",
                           "Number of open file descriptors.", "gauge", fds);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metrics_put_sample(b, "process_max_fds",
                           "Maximum number of open file descriptors.",
                           "gauge",
                           rl.rlim_cur == RLIM_INFINITY ? INFINITY
                                                        : (double)rl.rlim_cur);
    return 0;
}

/* --- the snapshot block --- */

static void metrics_snapshot_unref(struct metrics_snapshot *s)
{
    int last;

    if (s == NULL)
        return;
    pthread_mutex_lock(&metrics_snap_lock);
    last = --s->refs == 0;
    pthread_mutex_unlock(&metrics_snap_lock);
    if (last) {
        free(s->text);
        free(s);
    }
}

void metrics_set_snapshot(char *text)
{
    struct metrics_snapshot *s = NULL, *old;

    if (text != NULL) {
        s = xmalloc(sizeof *s);
        s->text = text;
        s->len = strlen(text);
        s->refs = 1;
    }
    pthread_mutex_lock(&metrics_snap_lock);
    old = metrics_snap;
    metrics_snap = s;
    pthread_mutex_unlock(&metrics_snap_lock);
    metrics_snapshot_unref(old);
}

static void metrics_render_snapshot(struct util_buf *b)
{
    struct metrics_snapshot *s;

    pthread_mutex_lock(&metrics_snap_lock);
    s = metrics_snap;
    if (s != NULL)
        s->refs++;
    pthread_mutex_unlock(&metrics_snap_lock);
    if (s == NULL)
        return;
    util_buf_append(b, s->text, s->len);
    if (s->len > 0 && s->text[s->len - 1] != '\n')
        util_buf_puts(b, "\n");
    metrics_snapshot_unref(s);
}

/* --- the whole page --- */

void metrics_render_buf(struct util_buf *b)
{
    const struct metrics_family *f;

    for (f = atomic_load_explicit(&metrics_families, memory_order_acquire);
         f != NULL; f = atomic_load_explicit(&f->next, memory_order_acquire))
        metrics_render_family(b, f);
    if (atomic_load_explicit(&metrics_process_on, memory_order_relaxed))
        (void)metrics_render_process(b);
    metrics_render_snapshot(b);
}

char *metrics_render(size_t *len)
{
    struct util_buf b = { 0 };

    metrics_render_buf(&b);
    if (len != NULL)
        *len = b.len;
    return util_buf_steal(&b);
}

/* --- the families chatd exposes --- */

static double metrics_dropped_value(void *arg)
{
    return (double)metrics_dropped_series();
}

void metrics_observe_http(const char *method, const char *route, int status,
                          double seconds)
{
    char code[16];
    const char *rv[3] = { method, route, code };

    snprintf(code, sizeof code, "%d", status);
    metrics_counter_inc(metrics_child(metrics_http_requests, rv));
    metrics_histogram_observe(metrics_child(metrics_http_request_duration, rv),
                              seconds);
}

/* Registers one standard family; a NULL result marks the init failed. */
static struct metrics_family *metrics_std(int *ok, struct metrics_family *f)
{
    if (f == NULL)
        *ok = 0;
    return f;
}

int metrics_init(const char *version)
{
    static const char *const mr[] = { "method", "route", NULL };
    static const char *const mrs[] = { "method", "route", "status", NULL };
    static const char *const tr[] = { "type", "route", NULL };
    static const char *const op[] = { "operation", NULL };
    static const char *const reason[] = { "reason", NULL };
    static const char *const ver[] = { "version", NULL };
    const size_t nbatch =
        sizeof metrics_batch_buckets / sizeof metrics_batch_buckets[0];
    const char *vv[1] = { version != NULL ? version : "unknown" };
    int ok = 1;

    pthread_mutex_lock(&metrics_reg_lock);
    if (metrics_initialised) {
        pthread_mutex_unlock(&metrics_reg_lock);
        return 0;
    }
    metrics_initialised = 1;
    pthread_mutex_unlock(&metrics_reg_lock);

    metrics_http_requests = metrics_std(&ok, metrics_counter_new(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status.",
        mrs));
    metrics_http_request_duration = metrics_std(&ok, metrics_histogram_new(
        "http_request_duration_seconds",
        "Time from request to response, by method and route template.", mr,
        NULL, 0));
    metrics_errors = metrics_std(&ok, metrics_counter_new(
        "chat_errors_total", "Errors answered, by error type and route.", tr));
    metrics_messages_created = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_messages_created_total",
                            "Messages stored.", NULL)), NULL);
    metrics_users_registered = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_users_registered_total",
                            "Accounts registered.", NULL)), NULL);
    metrics_users_logged_in = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_users_logged_in_total",
                            "Successful logins.", NULL)), NULL);
    metrics_conversations_created = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_conversations_created_total",
                            "Conversations created.", NULL)), NULL);
    metrics_cache_requests = metrics_std(&ok, metrics_counter_new(
        "chat_cache_requests_total", "Cache lookups, by operation.", op));
    metrics_cache_hits = metrics_std(&ok, metrics_counter_new(
        "chat_cache_hits_total", "Cache lookups that found the entry.", op));
    metrics_cache_misses = metrics_std(&ok, metrics_counter_new(
        "chat_cache_misses_total", "Cache lookups that missed.", op));
    metrics_cache_duration = metrics_std(&ok, metrics_histogram_new(
        "chat_cache_operations_duration_seconds",
        "Time spent in cache operations, by operation.", op, NULL, 0));
    metrics_db_queries = metrics_std(&ok, metrics_counter_new(
        "chat_database_queries_total", "Database queries, by operation.", op));
    metrics_db_query_duration = metrics_std(&ok, metrics_histogram_new(
        "chat_database_query_duration_seconds",
        "Time spent in database queries, by operation.", op, NULL, 0));
    metrics_db_connections_active = metrics_child(metrics_std(&ok,
        metrics_gauge_new("chat_database_connections_active",
                          "Open database connections.", NULL)), NULL);
    metrics_ws_connections = metrics_child(metrics_std(&ok,
        metrics_gauge_new("chat_ws_connections",
                          "Open WebSocket connections.", NULL)), NULL);
    metrics_messages_delivered = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_messages_delivered_total",
                            "Messages written to WebSocket clients.", NULL)),
        NULL);
    metrics_ws_frames_rejected = metrics_std(&ok, metrics_counter_new(
        "chat_ws_frames_rejected_total",
        "WebSocket frames refused, by reason.", reason));
    metrics_store_queue_depth = metrics_child(metrics_std(&ok,
        metrics_gauge_new("chat_store_queue_depth",
                          "Writes waiting for the store thread.", NULL)),
        NULL);
    metrics_store_batch_size = metrics_child(metrics_std(&ok,
        metrics_histogram_new("chat_store_batch_size",
                              "Messages written per store transaction.", NULL,
                              metrics_batch_buckets, nbatch)), NULL);
    metrics_bus_published = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_bus_published_total",
                            "Events published to the other nodes (Redis).",
                            NULL)), NULL);
    metrics_bus_received = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_bus_received_total",
                            "Events received from other nodes or decided in "
                            "Redis (presence), delivered here.", NULL)), NULL);
    metrics_bus_dropped = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_bus_dropped_total",
                            "Events that did not reach the other nodes "
                            "(Redis down or behind); clients recover them "
                            "with sync.", NULL)), NULL);
    metrics_bus_late = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_bus_late_messages_total",
                            "Messages from other nodes that arrived after a "
                            "later one of their conversation had gone out "
                            "here; clients fill such gaps.", NULL)), NULL);
    metrics_log_lines_dropped = metrics_child(metrics_std(&ok,
        metrics_counter_new("chat_log_lines_dropped_total",
                            "Log lines dropped because the log queue was "
                            "full.", NULL)), NULL);
    (void)metrics_std(&ok, metrics_counter_func(
        "chat_metrics_dropped_series_total",
        "Label sets refused because their metric family was at its series "
        "cap.", metrics_dropped_value, NULL));
    metrics_gauge_set(metrics_child(metrics_std(&ok, metrics_gauge_new(
        "chatd_build_info", "Always 1; the version label says which chatd "
        "runs.", ver)), vv), 1);

    atomic_store_explicit(&metrics_process_on, 1, memory_order_relaxed);
    return ok ? 0 : -1;
}

void metrics_reset_for_tests(void)
{
    struct metrics_family *f, *next;

    pthread_mutex_lock(&metrics_reg_lock);
    f = atomic_load_explicit(&metrics_families, memory_order_acquire);
    atomic_store_explicit(&metrics_families, NULL, memory_order_release);
    metrics_families_tail = NULL;
    metrics_initialised = 0;
    pthread_mutex_unlock(&metrics_reg_lock);
    for (; f != NULL; f = next) {
        next = atomic_load_explicit(&f->next, memory_order_acquire);
        metrics_family_free(f);
    }
    metrics_set_snapshot(NULL);
    atomic_store_explicit(&metrics_process_on, 0, memory_order_relaxed);
    atomic_store_explicit(&metrics_dropped, 0, memory_order_relaxed);

    metrics_http_requests = NULL;
    metrics_http_request_duration = NULL;
    metrics_errors = NULL;
    metrics_cache_requests = NULL;
    metrics_cache_hits = NULL;
    metrics_cache_misses = NULL;
    metrics_cache_duration = NULL;
    metrics_db_queries = NULL;
    metrics_db_query_duration = NULL;
    metrics_ws_frames_rejected = NULL;
    metrics_messages_created = NULL;
    metrics_users_registered = NULL;
    metrics_users_logged_in = NULL;
    metrics_conversations_created = NULL;
    metrics_messages_delivered = NULL;
    metrics_log_lines_dropped = NULL;
    metrics_db_connections_active = NULL;
    metrics_ws_connections = NULL;
    metrics_store_queue_depth = NULL;
    metrics_store_batch_size = NULL;
    metrics_bus_published = NULL;
    metrics_bus_received = NULL;
    metrics_bus_dropped = NULL;
    metrics_bus_late = NULL;
    metrics_redis_up = NULL;
}
