/*
 * worker.c - database threads with bounded queues. See worker.h.
 *
 * Each pool thread owns one store connection for its whole life. The queue
 * is a singly linked FIFO under one mutex; the sink is another. Neither
 * ever blocks the producer: submit refuses when full, the sink only takes a
 * lock for a pointer swap.
 */
#include "worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

struct worker_sink {
    pthread_mutex_t lock;
    struct job *head, *tail;         /* finished jobs; guarded by lock */
    worker_notify_cb notify;
    void *arg;
};

struct worker_pool {
    char name[32];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail;         /* guarded by lock */
    size_t depth;                    /* guarded by lock */
    size_t queue_max;
    size_t batch_max;
    int stopping;                    /* guarded by lock */
    job_batch_cb batch;
    struct worker_sink *sink;
    int slow_query_ms;
    int nthreads;
    pthread_t *threads;
    struct store **stores;           /* one per thread, owned by it */
};

struct worker_sink *worker_sink_create(worker_notify_cb notify, void *arg)
{
    struct worker_sink *k = xcalloc(1, sizeof *k);
    pthread_mutex_init(&k->lock, NULL);
    k->notify = notify;
    k->arg = arg;
    return k;
}

void worker_sink_free(struct worker_sink *k)
{
    if (k == NULL)
        return;
    pthread_mutex_destroy(&k->lock);
    free(k);
}

static void worker_sink_put(struct worker_sink *k, struct job *first,
                            struct job *last)
{
    last->next = NULL;
    pthread_mutex_lock(&k->lock);
    if (k->tail)
        k->tail->next = first;
    else
        k->head = first;
    k->tail = last;
    pthread_mutex_unlock(&k->lock);
    if (k->notify)
        k->notify(k->arg);
}

struct job *worker_sink_take(struct worker_sink *k)
{
    struct job *j;

    pthread_mutex_lock(&k->lock);
    j = k->head;
    k->head = k->tail = NULL;
    pthread_mutex_unlock(&k->lock);
    return j;
}

int worker_submit(struct worker_pool *p, struct job *j)
{
    int rc = -1;

    j->next = NULL;
    j->queued_ns = util_mono_ns();
    pthread_mutex_lock(&p->lock);
    if (!p->stopping && p->depth < p->queue_max) {
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
        p->depth++;
        if (p->batch)
            metrics_gauge_set(metrics_store_queue_depth, (double)p->depth);
        rc = 0;
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

size_t worker_queue_depth(struct worker_pool *p)
{
    size_t d;

    pthread_mutex_lock(&p->lock);
    d = p->depth;
    pthread_mutex_unlock(&p->lock);
    return d;
}

/* Counts the work as database queries by operation, and logs it when it
 * was slow. */
static void worker_log_slow(struct worker_pool *p, const struct job *j,
                            int64_t ns, size_t n)
{
    const char *op = j->op ? j->op : "unknown";

    metrics_counter_add(metrics_child(metrics_db_queries,
                                      (const char *[]){ op }), n);
    metrics_histogram_observe(metrics_child(metrics_db_query_duration,
                                            (const char *[]){ op }),
                              (double)ns / 1e9);
    if (ns / 1000000 < p->slow_query_ms)
        return;
    log_event(LOG_WARN, "database_query", j->trace_id[0] ? j->trace_id : NULL,
              LOG_STR("operation", j->op ? j->op : "unknown"),
              LOG_STR("pool", p->name),
              LOG_DBL("duration_ms", (double)ns / 1e6),
              LOG_INT("batch", n), LF_END);
}

static void worker_members_clear(void);

struct worker_thread_arg {
    struct worker_pool *pool;
    struct store *store;
};

static void *worker_thread_main(void *arg)
{
    struct worker_thread_arg *a = arg;
    struct worker_pool *p = a->pool;
    struct store *s = a->store;
    struct job **batch = xcalloc(p->batch_max ? p->batch_max : 1,
                                 sizeof *batch);

    free(a);
    for (;;) {
        struct job *first, *last, *j;
        size_t n = 0, max = p->batch ? p->batch_max : 1;
        int64_t t0;

        pthread_mutex_lock(&p->lock);
        while (p->head == NULL && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->head == NULL) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        first = p->head;
        last = first;
        n = 1;
        while (n < max && last->next) {
            last = last->next;
            n++;
        }
        p->head = last->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->depth -= n;
        if (p->batch)
            metrics_gauge_set(metrics_store_queue_depth, (double)p->depth);
        pthread_mutex_unlock(&p->lock);
        last->next = NULL;

        t0 = util_mono_ns();
        if (p->batch) {
            size_t i = 0;
            for (j = first; j; j = j->next)
                batch[i++] = j;
            p->batch(batch, n, s);
            worker_log_slow(p, first, util_mono_ns() - t0, n);
            worker_sink_put(p->sink, first, last);
        } else {
            /* A job handed on belongs to another pool the moment run
             * returns: account for it with a copy of its fields. */
            struct job copy = *first;
            int rc = first->run(first, s);
            worker_log_slow(p, &copy, util_mono_ns() - t0, n);
            if (rc == WORKER_DONE)
                worker_sink_put(p->sink, first, first);
        }
    }
    free(batch);
    worker_members_clear();
    return NULL;
}

struct worker_pool *worker_pool_start(const char *name, const char *db_url,
                                      int nthreads, size_t queue_max,
                                      size_t batch_max, job_batch_cb batch,
                                      struct worker_sink *sink,
                                      int slow_query_ms, char *err,
                                      size_t errlen)
{
    struct worker_pool *p = xcalloc(1, sizeof *p);
    int i;

    snprintf(p->name, sizeof p->name, "%s", name);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->queue_max = queue_max;
    p->batch_max = batch_max ? batch_max : 1;
    p->batch = batch;
    p->sink = sink;
    p->slow_query_ms = slow_query_ms;
    p->threads = xcalloc((size_t)nthreads, sizeof *p->threads);
    p->stores = xcalloc((size_t)nthreads, sizeof *p->stores);

    /* Open every connection first, so a bad database fails the start
     * before any thread runs. */
    for (i = 0; i < nthreads; i++) {
        p->stores[i] = store_open(db_url, err, errlen);
        if (p->stores[i] == NULL) {
            while (i-- > 0)
                store_close(p->stores[i]);
            free(p->stores);
            free(p->threads);
            free(p);
            return NULL;
        }
    }
    metrics_gauge_add(metrics_db_connections_active, nthreads);
    for (i = 0; i < nthreads; i++) {
        struct worker_thread_arg *a = xmalloc(sizeof *a);
        a->pool = p;
        a->store = p->stores[i];
        if (pthread_create(&p->threads[i], NULL, worker_thread_main, a) != 0) {
            fprintf(stderr, "chatd: cannot start a thread\n");
            abort();
        }
        p->nthreads++;
    }
    return p;
}

/* The store thread's cache of conversation members: conversation id ->
 * { count, ids... }. Members never change once a conversation exists. */
static __thread struct hmap worker_members;
#define WORKER_MEMBERS_MAX 100000

static void worker_members_clear(void)
{
    size_t i = 0;
    uint64_t k;
    void *v;

    while (hmap_next(&worker_members, &i, &k, &v))
        free(v);
    hmap_free(&worker_members);
}

/* Sets j->members for a newly stored message. */
static void worker_fill_members(struct job *j, struct store *s)
{
    int64_t conv = j->send->msg.conversation_id, *ids = NULL, *cached;
    size_t n = 0;

    cached = hmap_get(&worker_members, (uint64_t)conv);
    if (cached == NULL) {
        if (store_conv_member_ids(s, conv, &ids, &n) != STORE_OK)
            return;             /* no fan-out; the message is stored */
        if (worker_members.len >= WORKER_MEMBERS_MAX)
            worker_members_clear();
        cached = xmalloc((n + 1) * sizeof *cached);
        cached[0] = (int64_t)n;
        memcpy(cached + 1, ids, n * sizeof *ids);
        hmap_put(&worker_members, (uint64_t)conv, cached);
        free(ids);
    }
    j->nmembers = (size_t)cached[0];
    j->members = xmalloc((j->nmembers + 1) * sizeof *j->members);
    memcpy(j->members, cached + 1, j->nmembers * sizeof *j->members);
}

void worker_batch_sends(struct job **jobs, size_t n, struct store *s)
{
    struct store_send *sends = xcalloc(n, sizeof *sends);
    size_t i;
    int rc;

    metrics_histogram_observe(metrics_store_batch_size, (double)n);

    for (i = 0; i < n; i++)
        sends[i] = *jobs[i]->send;
    rc = store_send_batch(s, sends, n);
    for (i = 0; i < n; i++) {
        if (rc == STORE_ERR) {
            store_msg_clear(&sends[i].msg);
            sends[i].rc = STORE_ERR;
        }
        *jobs[i]->send = sends[i];
        if (sends[i].rc == STORE_OK)
            worker_fill_members(jobs[i], s);
    }
    if (rc == STORE_ERR)
        log_event(LOG_ERROR, "database_error", jobs[0]->trace_id,
                  LOG_STR("operation", "send_batch"),
                  LOG_STR("error", store_errstr(s)), LOG_INT("batch", n),
                  LF_END);
    free(sends);
}

void worker_pool_stop(struct worker_pool *p)
{
    int i;

    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (i = 0; i < p->nthreads; i++) {
        pthread_join(p->threads[i], NULL);
        store_close(p->stores[i]);
    }
    metrics_gauge_add(metrics_db_connections_active, -p->nthreads);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p->threads);
    free(p->stores);
    free(p);
}
