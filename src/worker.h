/*
 * worker.h - the threads that talk to the database, so the service thread
 * never does.
 *
 * A worker pool is N threads, each with its own store connection, taking
 * jobs from one bounded queue. A pool made with a batch callback (the store
 * thread: one thread, sends) takes every pending job at once and hands them
 * to the callback together, so many sends share one transaction (group
 * commit). A finished job goes to a sink; the sink's notify callback wakes
 * the service thread (lws_cancel_service), which takes the finished jobs
 * with worker_sink_take() and answers them.
 *
 * Ownership: a submitted job belongs to the pool until it reaches the sink,
 * then to whoever takes it. worker_submit() never blocks: a full queue is
 * refused (the caller answers "busy").
 */
#ifndef CHATD_WORKER_H
#define CHATD_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct job;
struct worker_pool;
struct worker_sink;

/* Runs a job on a worker thread with that thread's connection. Returns
 * WORKER_DONE when the job is finished (it goes to the sink) or
 * WORKER_HANDED_ON when the callback submitted it to another pool (the
 * store thread, for a send) and so no longer owns it. */
enum { WORKER_DONE = 0, WORKER_HANDED_ON = 1 };
typedef int (*job_run_cb)(struct job *j, struct store *s);
/* Answers a finished job on the service thread. */
typedef void (*job_done_cb)(struct job *j);
/* Runs a batch of jobs (the store thread). */
typedef void (*job_batch_cb)(struct job **jobs, size_t n, struct store *s);
/* Wakes the thread that drains a sink. */
typedef void (*worker_notify_cb)(void *arg);

struct job {
    struct job *next;        /* queue link, owned by whoever holds the job */
    job_run_cb run;          /* NULL in a batch pool */
    job_done_cb done;        /* called by whoever drains the sink */
    struct store_send *send; /* the send, for the store thread's batches */
    int64_t *members;        /* set by the store thread for a new message:
                                its conversation's members (owned) */
    size_t nmembers;
    const char *op;          /* operation name for slow-query logs */
    char trace_id[72];       /* the request's trace id, for logs */
    int64_t queued_ns;       /* when submitted (monotonic) */
};

struct worker_sink *worker_sink_create(worker_notify_cb notify, void *arg);
void worker_sink_free(struct worker_sink *k);
/* Takes every finished job, oldest first, as a list linked by next. */
struct job *worker_sink_take(struct worker_sink *k);

/* Starts nthreads threads, each opening db_url. batch may be NULL. On
 * failure returns NULL with the reason in err. */
struct worker_pool *worker_pool_start(const char *name, const char *db_url,
                                      int nthreads, size_t queue_max,
                                      size_t batch_max, job_batch_cb batch,
                                      struct worker_sink *sink,
                                      int slow_query_ms, char *err,
                                      size_t errlen);
/* Queues a job. 0, or -1 when the queue is full or the pool stopping. */
int worker_submit(struct worker_pool *p, struct job *j);
/* Jobs waiting (not yet taken by a thread). */
size_t worker_queue_depth(struct worker_pool *p);
/* The store thread's batch callback: stores every job's send in one
 * transaction (store_send_batch); when the transaction fails each send's
 * rc is STORE_ERR and nothing of the batch is stored. For each new message
 * it also sets job->members (conversations' members never change, so the
 * thread keeps them in a cache). */
void worker_batch_sends(struct job **jobs, size_t n, struct store *s);

/* Runs what is queued, then stops and joins the threads. Jobs finished
 * after this still go to the sink. */
void worker_pool_stop(struct worker_pool *p);

#endif
