/*
 * collector.c - SQL-driven gauges on a thread of their own. See
 * collector.h.
 *
 * A query file looks like:
 *
 *   -- metric: chat_unread_messages
 *   -- type: gauge
 *   -- help: Unread messages summed over every member of every conversation.
 *   -- labels: range
 *   SELECT ...;
 *
 * The query returns one column per label, then the value. A file may
 * declare several families (each `-- metric:` line starts the next one),
 * so that one pass over the tables feeds them all: then every row starts
 * with the name of the family it belongs to, then that family's labels,
 * padded with NULLs to the most labels any of the file's families has,
 * then the value. The query is named after its first family (the `query`
 * label of the collector's own metrics). Files named NAME.sqlite.sql or
 * NAME.postgres.sql are for that backend only; NAME.sql is for both. Each
 * family keeps its last rendered text; after every run the thread joins
 * them into one snapshot, ordered by family name, and swaps it in whole.
 *
 * Thread: the collector thread owns its store connection and the query
 * list; collector_start/stop run on the main thread.
 */
#include "collector.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "redis_conn.h"
#include "store.h"
#include "util.h"

#define COLLECTOR_MAX_LABELS 4
#define COLLECTOR_MAX_FAMILIES 8      /* per query file */
#define COLLECTOR_MAX_QUERIES 64

struct collector_family {
    char name[128];
    char type[16];                /* gauge or counter */
    char help[256];
    char labels[COLLECTOR_MAX_LABELS][64];
    int nlabels;
    char *text;                   /* the last rendered samples, or NULL */
};

struct collector_query {
    char file[128];
    /* fam[0] names the query; a file declares at least one family */
    struct collector_family fam[COLLECTOR_MAX_FAMILIES];
    int nfam;
    char *sql;
    int redis;                    /* a built-in Redis query (COLLECTOR_R_*) */
    int64_t next_ns;              /* when it runs next (monotonic) */
    struct metrics_child *m_duration, *m_errors, *m_last_success;
};

struct collector {
    struct collector_config cfg;
    char *db_url;
    struct redis_url rurl;
    int has_redis;
    redisContext *rctx;           /* the collector thread's */
    int64_t rnext_ms;             /* next connect attempt */
    int rattempt;
    struct collector_query *q[COLLECTOR_MAX_QUERIES];
    int nq;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stopping;                 /* guarded by lock */
};

static struct metrics_family *collector_m_duration, *collector_m_errors,
    *collector_m_last_success;

void collector_query_free(struct collector_query *q)
{
    int i;

    if (q == NULL)
        return;
    free(q->sql);
    for (i = 0; i < q->nfam; i++)
        free(q->fam[i].text);
    free(q);
}

static int collector_valid_name(const char *s)
{
    size_t i;

    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
          s[0] == '_'))
        return 0;
    for (i = 1; s[i]; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return i < 128;
}

/* Copies the trimmed value of a "-- key: value" line. */
static void collector_trim_copy(char *dst, size_t dstlen, const char *v,
                                size_t n)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r'))
        n--;
    if (n >= dstlen)
        n = dstlen - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

struct collector_query *collector_query_parse(const char *file,
                                              const char *text, char *err,
                                              size_t errlen)
{
    struct collector_query *q = xcalloc(1, sizeof *q);
    struct collector_family *f = &q->fam[0];
    const char *p = text;
    char labels[COLLECTOR_MAX_FAMILIES][256];
    int i, j;

    memset(labels, 0, sizeof labels);
    snprintf(q->file, sizeof q->file, "%s", file);
    q->nfam = 1;
    /* The header: leading "-- key: value" lines. A metric line after the
     * first starts the next family; the other keys describe the family of
     * the metric line above them (or the first). */
    while (strncmp(p, "--", 2) == 0) {
        const char *eol = strchr(p, '\n');
        const char *line = p + 2, *colon;
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        colon = memchr(line, ':', n);
        if (colon) {
            char key[32];
            size_t vl = n - (size_t)(colon + 1 - line);
            collector_trim_copy(key, sizeof key, line, (size_t)(colon - line));
            if (strcmp(key, "metric") == 0) {
                if (f->name[0] != '\0') {
                    if (q->nfam == COLLECTOR_MAX_FAMILIES) {
                        snprintf(err, errlen, "%s: more than %d metric "
                                 "families", file, COLLECTOR_MAX_FAMILIES);
                        goto fail;
                    }
                    f = &q->fam[q->nfam++];
                }
                collector_trim_copy(f->name, sizeof f->name, colon + 1, vl);
            } else if (strcmp(key, "type") == 0)
                collector_trim_copy(f->type, sizeof f->type, colon + 1, vl);
            else if (strcmp(key, "help") == 0)
                collector_trim_copy(f->help, sizeof f->help, colon + 1, vl);
            else if (strcmp(key, "labels") == 0)
                collector_trim_copy(labels[f - q->fam], sizeof labels[0],
                                    colon + 1, vl);
        }
        if (eol == NULL) {
            p += strlen(p);
            break;
        }
        p = eol + 1;
    }
    for (i = 0; i < q->nfam; i++) {
        f = &q->fam[i];
        if (!collector_valid_name(f->name)) {
            snprintf(err, errlen, "%s: needs a '-- metric: NAME' line with a "
                     "valid metric name", file);
            goto fail;
        }
        for (j = 0; j < i; j++)
            if (strcmp(q->fam[j].name, f->name) == 0) {
                snprintf(err, errlen, "%s: declares metric %s twice", file,
                         f->name);
                goto fail;
            }
        if (strcmp(f->type, "gauge") != 0 && strcmp(f->type, "counter") != 0) {
            snprintf(err, errlen, "%s: '-- type:' of %s must be gauge or "
                     "counter", file, f->name);
            goto fail;
        }
        if (f->help[0] == '\0') {
            snprintf(err, errlen, "%s: needs a '-- help:' line for %s", file,
                     f->name);
            goto fail;
        }
        if (labels[i][0]) {
            char *save = NULL, *tok;
            for (tok = strtok_r(labels[i], ",", &save); tok;
                 tok = strtok_r(NULL, ",", &save)) {
                char name[64];
                collector_trim_copy(name, sizeof name, tok, strlen(tok));
                if (!collector_valid_name(name) || f->nlabels ==
                    COLLECTOR_MAX_LABELS) {
                    snprintf(err, errlen, "%s: bad label list for %s", file,
                             f->name);
                    goto fail;
                }
                snprintf(f->labels[f->nlabels++], sizeof f->labels[0], "%s",
                         name);
            }
        }
    }
    while (*p == '\n' || *p == ' ' || *p == '\r' || *p == '\t')
        p++;
    if (*p == '\0') {
        snprintf(err, errlen, "%s: no query after the header", file);
        goto fail;
    }
    q->sql = xstrdup(p);
    return q;
fail:
    collector_query_free(q);
    return NULL;
}

/* Escapes a label value for the exposition format. */
static void collector_label_value(struct util_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            util_buf_puts(b, "\\\\");
        else if (*v == '"')
            util_buf_puts(b, "\\\"");
        else if (*v == '\n')
            util_buf_puts(b, "\\n");
        else
            util_buf_append(b, v, 1);
    }
}

/* Renders one result of q, each family's samples into out[family]. */
static int collector_render_split(const struct collector_query *q,
                                  const struct store_rows *rows,
                                  struct util_buf *out, char *err,
                                  size_t errlen)
{
    int multi = q->nfam > 1, maxl = 0, fi, i;
    size_t r;

    for (fi = 0; fi < q->nfam; fi++)
        if (q->fam[fi].nlabels > maxl)
            maxl = q->fam[fi].nlabels;
    if (rows->nrows > 0 && rows->ncols != (size_t)(multi + maxl + 1)) {
        if (multi)
            snprintf(err, errlen, "%s: the query returns %zu columns, "
                     "expected a family name, %d labels and a value",
                     q->file, rows->ncols, maxl);
        else
            snprintf(err, errlen, "%s: the query returns %zu columns, "
                     "expected %d labels and a value", q->file, rows->ncols,
                     maxl);
        return -1;
    }
    for (r = 0; r < rows->nrows; r++) {
        char *const *cell = rows->cells + r * rows->ncols;
        const struct collector_family *f = &q->fam[0];
        struct util_buf *b = &out[0];
        const char *v;
        char *end;
        double d;

        if (multi) {
            for (fi = 0; fi < q->nfam; fi++)
                if (cell[0] && strcmp(cell[0], q->fam[fi].name) == 0)
                    break;
            if (fi == q->nfam) {
                snprintf(err, errlen, "%s: a row names '%.40s', not one of "
                         "the file's metrics", q->file,
                         cell[0] ? cell[0] : "(null)");
                return -1;
            }
            f = &q->fam[fi];
            b = &out[fi];
            cell++;
            for (i = f->nlabels; i < maxl; i++)
                if (cell[i] != NULL) {
                    snprintf(err, errlen, "%s: %s has %d labels, so its "
                             "label column %d must be NULL", q->file,
                             f->name, f->nlabels, i + 1);
                    return -1;
                }
        }
        v = cell[maxl];
        if (v == NULL)
            continue;             /* no value: no sample */
        errno = 0;
        d = strtod(v, &end);
        if (end == v || *end != '\0' || errno != 0) {
            snprintf(err, errlen, "%s: value '%.40s' is not a number",
                     q->file, v);
            return -1;
        }
        util_buf_puts(b, f->name);
        if (f->nlabels) {
            util_buf_puts(b, "{");
            for (i = 0; i < f->nlabels; i++) {
                util_buf_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
                collector_label_value(b, cell[i] ? cell[i] : "");
                util_buf_puts(b, "\"");
            }
            util_buf_puts(b, "}");
        }
        if (isnan(d))
            util_buf_puts(b, " NaN\n");
        else if (isinf(d))
            util_buf_puts(b, d > 0 ? " +Inf\n" : " -Inf\n");
        else if (d == floor(d) && fabs(d) < 1e19)
            util_buf_printf(b, " %.0f\n", d);
        else {
            /* The shortest form that reads back as the same double. */
            char num[40];
            snprintf(num, sizeof num, "%.15g", d);
            if (strtod(num, NULL) != d)
                snprintf(num, sizeof num, "%.17g", d);
            util_buf_printf(b, " %s\n", num);
        }
    }
    return 0;
}

int collector_render(const struct collector_query *q,
                     const struct store_rows *rows, struct util_buf *b,
                     char *err, size_t errlen)
{
    struct util_buf out[COLLECTOR_MAX_FAMILIES];
    int i, rc;

    memset(out, 0, sizeof out);
    rc = collector_render_split(q, rows, out, err, errlen);
    for (i = 0; i < q->nfam; i++) {
        if (rc == 0 && out[i].data)
            util_buf_append(b, out[i].data, out[i].len);
        util_buf_free(&out[i]);
    }
    return rc;
}

static int collector_cmp_query(const void *a, const void *b)
{
    const struct collector_query *x = *(struct collector_query *const *)a;
    const struct collector_query *y = *(struct collector_query *const *)b;
    return strcmp(x->fam[0].name, y->fam[0].name);
}

static int collector_cmp_family(const void *a, const void *b)
{
    const struct collector_family *x = *(struct collector_family *const *)a;
    const struct collector_family *y = *(struct collector_family *const *)b;
    return strcmp(x->name, y->name);
}

/* Reads the queries for this dialect from dir. */
static int collector_load(struct collector *c, const char *dialect, char *err,
                          size_t errlen)
{
    DIR *d = opendir(c->cfg.sql_dir);
    struct dirent *e;
    int i, j, k, l;

    if (d == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", c->cfg.sql_dir,
                 strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name, *ext;
        char path[4096];
        struct util_buf text = { 0 };
        FILE *f;
        size_t len = strlen(n), got;
        char chunk[4096];

        if (len < 5 || strcmp(n + len - 4, ".sql") != 0 || n[0] == '.')
            continue;
        /* NAME.sql, NAME.sqlite.sql or NAME.postgres.sql */
        ext = memchr(n, '.', len - 4);
        if (ext && (size_t)(ext - n) < len - 4) {
            size_t dl = len - 4 - (size_t)(ext + 1 - n);
            if (strlen(dialect) != dl || strncmp(ext + 1, dialect, dl) != 0)
                continue;
        }
        if (c->nq == COLLECTOR_MAX_QUERIES) {
            snprintf(err, errlen, "too many query files in %s",
                     c->cfg.sql_dir);
            closedir(d);
            return -1;
        }
        snprintf(path, sizeof path, "%s/%s", c->cfg.sql_dir, n);
        f = fopen(path, "r");
        if (f == NULL) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            closedir(d);
            return -1;
        }
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
            util_buf_append(&text, chunk, got);
        fclose(f);
        c->q[c->nq] = collector_query_parse(n, text.data ? text.data : "",
                                            err, errlen);
        util_buf_free(&text);
        if (c->q[c->nq] == NULL) {
            closedir(d);
            return -1;
        }
        c->nq++;
    }
    closedir(d);
    qsort(c->q, (size_t)c->nq, sizeof c->q[0], collector_cmp_query);
    for (i = 0; i < c->nq; i++)
        for (j = i + 1; j < c->nq; j++)
            for (k = 0; k < c->q[i]->nfam; k++)
                for (l = 0; l < c->q[j]->nfam; l++)
                    if (strcmp(c->q[i]->fam[k].name,
                               c->q[j]->fam[l].name) == 0) {
                        snprintf(err, errlen, "%s and %s both define %s",
                                 c->q[i]->file, c->q[j]->file,
                                 c->q[i]->fam[k].name);
                        return -1;
                    }
    return 0;
}

/* Joins every family's last samples, with HELP and TYPE, into one text,
 * in the order of the family names. */
static void collector_publish(struct collector *c)
{
    struct collector_family *all[COLLECTOR_MAX_QUERIES *
                                 COLLECTOR_MAX_FAMILIES];
    struct util_buf b = { 0 };
    size_t n = 0, i;
    int k, j;

    for (k = 0; k < c->nq; k++)
        for (j = 0; j < c->q[k]->nfam; j++)
            all[n++] = &c->q[k]->fam[j];
    qsort(all, n, sizeof all[0], collector_cmp_family);
    for (i = 0; i < n; i++) {
        const struct collector_family *f = all[i];
        const char *h;
        util_buf_printf(&b, "# HELP %s ", f->name);
        for (h = f->help; *h; h++) {
            if (*h == '\\')
                util_buf_puts(&b, "\\\\");
            else
                util_buf_append(&b, h, 1);
        }
        util_buf_printf(&b, "\n# TYPE %s %s\n", f->name, f->type);
        if (f->text)
            util_buf_puts(&b, f->text);
    }
    metrics_set_snapshot(util_buf_steal(&b));
}

/* The built-in Redis queries. */
enum { COLLECTOR_R_ONLINE = 1, COLLECTOR_R_KEYS, COLLECTOR_R_MEMORY };

static const struct {
    int kind;
    const char *name, *help;
} collector_redis_queries[] = {
    { COLLECTOR_R_ONLINE, "chat_online_users",
      "Users with at least one live WebSocket session on any node (from "
      "Redis presence)." },
    { COLLECTOR_R_KEYS, "chat_redis_keys",
      "Keys in chatd's Redis database (presence, cache)." },
    { COLLECTOR_R_MEMORY, "chat_redis_memory_used_bytes",
      "Memory Redis reports in use (INFO memory used_memory)." },
};

static int collector_run_redis(struct collector *c, struct collector_query *q,
                               struct util_buf *b, char *err, size_t errlen)
{
    redisReply *r = NULL;
    long long v = -1;

    if (c->rctx == NULL) {
        if (util_now_ms() < c->rnext_ms) {
            snprintf(err, errlen, "redis: waiting to reconnect");
            return -1;
        }
        c->rctx = redis_connect(&c->rurl, c->cfg.timeout_ms, err, errlen);
        if (c->rctx == NULL) {
            c->rnext_ms = util_now_ms() + redis_backoff_ms(c->rattempt++);
            return -1;
        }
        c->rattempt = 0;
    }
    switch (q->redis) {
    case COLLECTOR_R_ONLINE:
        /* A user is online while an entry's expiry is ahead of Redis's
         * clock (bus_redis.c keeps the index). */
        r = redisCommand(c->rctx, "EVAL %s 1 %s", "local t = "
                         "redis.call('TIME') return redis.call('ZCOUNT', "
                         "KEYS[1], '(' .. (t[1] * 1000 + math.floor(t[2] / "
                         "1000)), '+inf')", RK_ONLINE);
        break;
    case COLLECTOR_R_KEYS:
        r = redisCommand(c->rctx, "DBSIZE");
        break;
    case COLLECTOR_R_MEMORY:
        r = redisCommand(c->rctx, "INFO memory");
        if (r && r->type == REDIS_REPLY_STRING) {
            const char *p = strstr(r->str, "used_memory:");
            if (p)
                v = strtoll(p + 12, NULL, 10);
        }
        break;
    }
    if (r == NULL) {
        snprintf(err, errlen, "redis: %s", c->rctx->errstr);
        redisFree(c->rctx);
        c->rctx = NULL;
        return -1;
    }
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    if (r->type == REDIS_REPLY_ERROR)
        snprintf(err, errlen, "redis: %.*s", (int)r->len, r->str);
    else if (v < 0)
        snprintf(err, errlen, "redis: unexpected reply");
    freeReplyObject(r);
    if (v < 0)
        return -1;
    util_buf_printf(b, "%s %lld\n", q->fam[0].name, v);
    return 0;
}

static void collector_run_one(struct collector *c, struct store *s,
                              struct collector_query *q)
{
    struct store_rows rows;
    struct util_buf b[COLLECTOR_MAX_FAMILIES];
    char err[256];
    int64_t t0 = util_mono_ns();
    double secs;
    int rc, i;

    memset(&rows, 0, sizeof rows);
    memset(b, 0, sizeof b);
    if (q->redis)
        rc = collector_run_redis(c, q, &b[0], err, sizeof err) == 0
                 ? STORE_OK : STORE_ERR;
    else
        rc = store_query_rows(s, q->sql, c->cfg.timeout_ms, &rows);
    secs = (double)(util_mono_ns() - t0) / 1e9;
    metrics_gauge_set(q->m_duration, secs);
    if (rc == STORE_OK &&
        (q->redis ||
         collector_render_split(q, &rows, b, err, sizeof err) == 0)) {
        for (i = 0; i < q->nfam; i++) {
            free(q->fam[i].text);
            q->fam[i].text = util_buf_steal(&b[i]);
        }
        metrics_gauge_set(q->m_last_success, (double)util_now_ms() / 1000.0);
    } else {
        for (i = 0; i < q->nfam; i++) {
            util_buf_free(&b[i]);
            free(q->fam[i].text);
            q->fam[i].text = NULL;  /* a failed query shows no stale value */
        }
        metrics_counter_inc(q->m_errors);
        log_event(LOG_WARN, "collector_error", NULL,
                  LOG_STR("query", q->fam[0].name),
                  LOG_STR("error", rc == STORE_OK || q->redis ? err
                                                              : store_errstr(s)),
                  LOG_DBL("duration_ms", secs * 1000), LF_END);
    }
    store_rows_clear(&rows);
}

static void *collector_main(void *arg)
{
    struct collector *c = arg;
    char err[256];
    struct store *s = NULL;
    int64_t interval = (int64_t)c->cfg.interval_ms * 1000000;
    int i;

    for (;;) {
        int64_t now = util_mono_ns(), next = INT64_MAX;
        struct timespec ts;
        int ran = 0;

        if (s == NULL) {
            s = store_open(c->db_url, err, sizeof err);
            if (s == NULL)
                log_event(LOG_WARN, "collector_error", NULL,
                          LOG_STR("query", "connect"), LOG_STR("error", err),
                          LF_END);
        }
        for (i = 0; i < c->nq; i++) {
            struct collector_query *q = c->q[i];
            if (q->next_ns > now || (s == NULL && !q->redis))
                continue;
            collector_run_one(c, s, q);
            ran = 1;
            /* The next run is an interval after this one ended: a slow
             * query delays itself, it never overlaps or bunches up. */
            q->next_ns = util_mono_ns() + interval;
            pthread_mutex_lock(&c->lock);
            if (c->stopping) {
                pthread_mutex_unlock(&c->lock);
                goto out;
            }
            pthread_mutex_unlock(&c->lock);
        }
        if (ran)
            collector_publish(c);
        for (i = 0; i < c->nq; i++)
            if (c->q[i]->next_ns < next)
                next = c->q[i]->next_ns;
        if (s == NULL || next == INT64_MAX)
            next = util_mono_ns() + interval;
        clock_gettime(CLOCK_REALTIME, &ts);
        {
            int64_t wait = next - util_mono_ns();
            if (wait < 0)
                wait = 0;
            ts.tv_sec += wait / 1000000000;
            ts.tv_nsec += wait % 1000000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
        }
        pthread_mutex_lock(&c->lock);
        if (!c->stopping)
            pthread_cond_timedwait(&c->cond, &c->lock, &ts);
        if (c->stopping) {
            pthread_mutex_unlock(&c->lock);
            break;
        }
        pthread_mutex_unlock(&c->lock);
    }
out:
    store_close(s);
    if (c->rctx)
        redisFree(c->rctx);
    c->rctx = NULL;
    return NULL;
}

static void collector_register(struct collector *c)
{
    int i;

    /* Looked up each time: the registry may have been reset (tests). */
    collector_m_duration = metrics_find("chat_collector_query_duration_seconds");
    if (collector_m_duration == NULL) {
        static const char *const lq[] = { "query", NULL };
        collector_m_duration = metrics_gauge_new(
            "chat_collector_query_duration_seconds",
            "How long the collector's last run of each query took.", lq);
        collector_m_errors = metrics_counter_new(
            "chat_collector_query_errors_total",
            "Collector query runs that failed (their samples are dropped).",
            lq);
        collector_m_last_success = metrics_gauge_new(
            "chat_collector_last_success_timestamp_seconds",
            "When each collector query last succeeded (Unix time).", lq);
    } else {
        collector_m_errors = metrics_find("chat_collector_query_errors_total");
        collector_m_last_success =
            metrics_find("chat_collector_last_success_timestamp_seconds");
    }
    for (i = 0; i < c->nq; i++) {
        const char *v[] = { c->q[i]->fam[0].name };
        c->q[i]->m_duration = metrics_child(collector_m_duration, v);
        c->q[i]->m_errors = metrics_child(collector_m_errors, v);
        c->q[i]->m_last_success = metrics_child(collector_m_last_success, v);
    }
}

struct collector *collector_start(const struct collector_config *cfg,
                                  char *err, size_t errlen)
{
    struct collector *c = xcalloc(1, sizeof *c);
    const char *kind = store_kind(cfg->db_url);
    int64_t now = util_mono_ns(), interval;
    int i;

    c->cfg = *cfg;
    c->db_url = xstrdup(cfg->db_url);
    if (collector_load(c, kind ? kind : "sqlite", err, errlen) != 0) {
        collector_stop(c);
        return NULL;
    }
    if (cfg->redis_url) {
        size_t k;
        if (redis_url_parse(cfg->redis_url, &c->rurl, err, errlen) != 0) {
            collector_stop(c);
            return NULL;
        }
        c->has_redis = 1;
        for (k = 0; k < sizeof collector_redis_queries /
                        sizeof collector_redis_queries[0]; k++) {
            struct collector_query *q;
            if (c->nq == COLLECTOR_MAX_QUERIES)
                break;
            q = xcalloc(1, sizeof *q);
            q->redis = collector_redis_queries[k].kind;
            q->nfam = 1;
            snprintf(q->file, sizeof q->file, "(redis)");
            snprintf(q->fam[0].name, sizeof q->fam[0].name, "%s",
                     collector_redis_queries[k].name);
            snprintf(q->fam[0].type, sizeof q->fam[0].type, "gauge");
            snprintf(q->fam[0].help, sizeof q->fam[0].help, "%s",
                     collector_redis_queries[k].help);
            c->q[c->nq++] = q;
        }
    }
    collector_register(c);
    /* First runs spread over the first interval, so that start-up does
     * not send every query to the database at once. */
    interval = (int64_t)cfg->interval_ms * 1000000;
    for (i = 0; i < c->nq; i++)
        c->q[i]->next_ns = now + (c->nq > 1 ? interval / 4 * i / c->nq : 0);
    collector_publish(c);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (pthread_create(&c->thread, NULL, collector_main, c) != 0) {
        snprintf(err, errlen, "cannot start the collector thread");
        collector_stop(c);
        return NULL;
    }
    c->cfg.db_url = c->db_url;
    return c;
}

void collector_stop(struct collector *c)
{
    int i;

    if (c == NULL)
        return;
    if (c->thread) {
        pthread_mutex_lock(&c->lock);
        c->stopping = 1;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->thread, NULL);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
    }
    for (i = 0; i < c->nq; i++)
        collector_query_free(c->q[i]);
    free(c->db_url);
    free(c);
}
