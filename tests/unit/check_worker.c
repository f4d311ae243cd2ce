/*
 * check_worker.c - unit tests for worker.c on a real SQLite store: a pool
 * runs jobs on its threads and hands them to the sink with its notify
 * callback; a full queue refuses and accepts again once drained; the
 * store thread's batch pool commits many sends in few transactions with
 * gapless seqs and the conversation's members on each job, and a failed
 * transaction fails every send of its batch with nothing stored;
 * worker_pool_stop() runs what is queued first; a job handed on to another
 * pool reaches only that pool's sink, and is not touched by the first pool
 * once handed on.
 *
 * Each test gets a fresh SQLite file in a mkdtemp directory, migrated with
 * migrate_up from $CHATD_TEST_DATA_DIR/migrations/sqlite (else the source
 * tree, found by a relative path), with three users and two conversations
 * made through the store API. Jobs that must stay queued are held by a
 * gate: a job (or the batch callback) that enters it waits until the test
 * opens it, so the queue is filled while the pool's one thread is busy.
 *
 * Each test runs in its own forked process under Check (unless
 * CK_FORK=no); the pools start their own threads, which never assert: they
 * record, and the test thread checks.
 */
#include <check.h>
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "migrate.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define HASH "$y$j9T$0123456789abcdef$ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijk"
#define WAIT_MS 20000            /* generous: sanitizer builds are slow */

static char check_worker_data[1024];
static char check_worker_tmp[1024];
static char check_worker_dir[1100];
static char check_worker_db[1200];
static char check_worker_url[1300];
static struct store *st;          /* the test thread's own connection */
static int64_t check_worker_alice, check_worker_bob, check_worker_carol;
static int64_t check_worker_group;  /* alice, bob, carol */
static int64_t check_worker_direct; /* alice, bob */

/* --- the gate --- */

static pthread_mutex_t check_worker_gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t check_worker_gate_cond = PTHREAD_COND_INITIALIZER;
static int check_worker_gate_closed;   /* guarded by gate_lock */
static int check_worker_gate_entered;  /* guarded by gate_lock */

static void check_worker_gate_close(void)
{
    pthread_mutex_lock(&check_worker_gate_lock);
    check_worker_gate_closed = 1;
    check_worker_gate_entered = 0;
    pthread_mutex_unlock(&check_worker_gate_lock);
}

static void check_worker_gate_open(void)
{
    pthread_mutex_lock(&check_worker_gate_lock);
    check_worker_gate_closed = 0;
    pthread_cond_broadcast(&check_worker_gate_cond);
    pthread_mutex_unlock(&check_worker_gate_lock);
}

/* Called on a pool thread: counts itself, then waits while closed. */
static void check_worker_gate_enter(void)
{
    pthread_mutex_lock(&check_worker_gate_lock);
    check_worker_gate_entered++;
    pthread_cond_broadcast(&check_worker_gate_cond);
    while (check_worker_gate_closed)
        pthread_cond_wait(&check_worker_gate_cond, &check_worker_gate_lock);
    pthread_mutex_unlock(&check_worker_gate_lock);
}

/* Waits until n threads have entered the gate; 0, or -1 on timeout. */
static int check_worker_gate_wait(int n)
{
    struct timespec ts;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&check_worker_gate_lock);
    while (check_worker_gate_entered < n && rc == 0)
        rc = pthread_cond_timedwait(&check_worker_gate_cond,
                                    &check_worker_gate_lock, &ts);
    rc = check_worker_gate_entered >= n ? 0 : -1;
    pthread_mutex_unlock(&check_worker_gate_lock);
    return rc;
}

/* --- jobs --- */

struct check_worker_job {
    struct job job;               /* first: a struct job * is one of these */
    int id;
    int block;                    /* enter the gate when run */
    int stage;                    /* 0 before the first pool, then 1 */
    struct worker_pool *next_pool;/* hand on to this pool at stage 0 */
    int handoff_gate;             /* after handing on, enter the gate */
    int ran;                      /* times run */
    int submit_rc;                /* worker_submit to next_pool */
    int ping_rc;                  /* the thread's connection worked */
    struct store_send send;
    char cid[32];
    char body[32];
};

static atomic_int check_worker_notified;
static atomic_int check_worker_notified_b;

static void check_worker_notify(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static int check_worker_run(struct job *j, struct store *s)
{
    struct check_worker_job *tj = (struct check_worker_job *)j;

    tj->ran++;
    tj->ping_rc = store_ping(s);
    if (tj->block)
        check_worker_gate_enter();
    if (tj->next_pool != NULL && tj->stage == 0) {
        int gate = tj->handoff_gate;
        tj->stage = 1;
        tj->submit_rc = worker_submit(tj->next_pool, j);
        if (tj->submit_rc != 0)
            return WORKER_DONE;
        /* The job is no longer ours: not a field of it is read now. */
        if (gate)
            check_worker_gate_enter();
        return WORKER_HANDED_ON;
    }
    return WORKER_DONE;
}

static struct check_worker_job *check_worker_job_new(int id)
{
    struct check_worker_job *tj = xcalloc(1, sizeof *tj);

    tj->id = id;
    tj->job.run = check_worker_run;
    tj->job.op = "check_job";
    return tj;
}

/* A send job for the batch pool. */
static struct check_worker_job *check_worker_send_new(int id, int64_t conv,
                                                      int64_t sender,
                                                      const char *body)
{
    struct check_worker_job *tj = xcalloc(1, sizeof *tj);

    tj->id = id;
    tj->job.op = "send";
    snprintf(tj->cid, sizeof tj->cid, "cid-%d", id);
    snprintf(tj->body, sizeof tj->body, "%s", body);
    tj->send.conversation_id = conv;
    tj->send.sender_id = sender;
    tj->send.client_msg_id = tj->cid;
    tj->send.body = tj->body;
    tj->send.body_len = strlen(tj->body);
    tj->send.now = util_now_ms();
    tj->job.send = &tj->send;
    return tj;
}

static void check_worker_job_free(struct check_worker_job *tj)
{
    if (tj == NULL)
        return;
    free(tj->job.members);
    store_msg_clear(&tj->send.msg);
    free(tj);
}

/* Takes finished jobs from k into out (in sink order) until want have
 * come or the wait ends; returns how many came. */
static size_t check_worker_collect(struct worker_sink *k,
                                   struct check_worker_job **out, size_t want)
{
    int64_t deadline = util_mono_ns() + (int64_t)WAIT_MS * 1000000;
    size_t got = 0;

    while (got < want && util_mono_ns() < deadline) {
        struct job *j = worker_sink_take(k), *next;
        if (j == NULL) {
            usleep(2000);
            continue;
        }
        for (; j; j = next) {
            next = j->next;
            if (got < want)
                out[got] = (struct check_worker_job *)j;
            got++;
        }
    }
    return got;
}

/* --- the batch callback, counted --- */

static atomic_int check_worker_batches;
static atomic_int check_worker_batch_gate; /* the next batch enters the gate */
static size_t check_worker_batch_sizes[1024];

static void check_worker_batch(struct job **jobs, size_t n, struct store *s)
{
    int b = atomic_fetch_add(&check_worker_batches, 1);

    if (b < 1024)
        check_worker_batch_sizes[b] = n;
    if (atomic_exchange(&check_worker_batch_gate, 0))
        check_worker_gate_enter();
    worker_batch_sends(jobs, n, s);
}

/* --- fixture --- */

static void check_worker_setup(void)
{
    char dir[1200], err[512];
    struct store_conv conv;
    int created;
    int64_t now = util_now_ms(), others[2];

    metrics_reset_for_tests();
    ck_assert_int_eq(metrics_init("test"), 0);
    atomic_store(&check_worker_notified, 0);
    atomic_store(&check_worker_notified_b, 0);
    atomic_store(&check_worker_batches, 0);
    atomic_store(&check_worker_batch_gate, 0);
    check_worker_gate_open();

    snprintf(check_worker_dir, sizeof check_worker_dir, "%s/tXXXXXX",
             check_worker_tmp);
    ck_assert_ptr_nonnull(mkdtemp(check_worker_dir));
    snprintf(check_worker_db, sizeof check_worker_db, "%s/chatd.db",
             check_worker_dir);
    snprintf(check_worker_url, sizeof check_worker_url, "sqlite:%s",
             check_worker_db);
    err[0] = '\0';
    st = store_open(check_worker_url, err, sizeof err);
    ck_assert_msg(st != NULL, "store_open: %s", err);
    snprintf(dir, sizeof dir, "%s/migrations/sqlite", check_worker_data);
    ck_assert_msg(migrate_up(st, dir, 0, 0, NULL, err, sizeof err) == 0,
                  "migrate_up: %s", err);

    ck_assert_int_eq(store_user_create(st, "alice", HASH, now,
                                       &check_worker_alice), STORE_OK);
    ck_assert_int_eq(store_user_create(st, "bob", HASH, now,
                                       &check_worker_bob), STORE_OK);
    ck_assert_int_eq(store_user_create(st, "carol", HASH, now,
                                       &check_worker_carol), STORE_OK);
    others[0] = check_worker_bob;
    others[1] = check_worker_carol;
    ck_assert_int_eq(store_conv_create(st, check_worker_alice, others, 2,
                                       "group", now, &conv, &created),
                     STORE_OK);
    check_worker_group = conv.id;
    store_conv_clear(&conv);
    ck_assert_int_eq(store_conv_create(st, check_worker_alice, others, 1,
                                       NULL, now, &conv, &created),
                     STORE_OK);
    check_worker_direct = conv.id;
    store_conv_clear(&conv);
    ck_assert_int_ne(check_worker_group, check_worker_direct);
}

static int check_worker_rm(const char *path, const struct stat *sb, int flag,
                           struct FTW *ftw)
{
    return remove(path);
}

static void check_worker_teardown(void)
{
    store_close(st);
    st = NULL;
    nftw(check_worker_dir, check_worker_rm, 16, FTW_DEPTH | FTW_PHYS);
    metrics_reset_for_tests();
}

static struct worker_pool *check_worker_pool(const char *name, int nthreads,
                                             size_t queue_max,
                                             size_t batch_max,
                                             job_batch_cb batch,
                                             struct worker_sink *k)
{
    char err[512] = "";
    struct worker_pool *p = worker_pool_start(name, check_worker_url,
                                              nthreads, queue_max, batch_max,
                                              batch, k, 60000, err,
                                              sizeof err);

    ck_assert_msg(p != NULL, "worker_pool_start: %s", err);
    return p;
}

/* The conversation's last seq, read on the test's own connection. */
static int64_t check_worker_last_seq(int64_t conv)
{
    int64_t last = -1;

    ck_assert_int_eq(store_conv_member(st, conv, check_worker_alice, &last),
                     STORE_OK);
    return last;
}

static size_t check_worker_history_count(int64_t conv)
{
    struct store_msg *msgs = NULL;
    size_t n = 0;
    int more = 0;

    ck_assert_int_eq(store_history(st, conv, STORE_UNBOUNDED,
                                   STORE_UNBOUNDED, 1000, &msgs, &n, &more),
                     STORE_OK);
    store_msgs_free(msgs, n);
    return n;
}

static int check_worker_cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* --- tests --- */

START_TEST(test_pool_runs_jobs_into_sink)
{
    enum { N = 60 };
    struct worker_sink *k = worker_sink_create(check_worker_notify,
                                               &check_worker_notified);
    struct worker_pool *p = check_worker_pool("t", 3, 100, 0, NULL, k);
    struct check_worker_job *jobs[N], *out[N];
    int seen[N] = { 0 };
    int i;

    for (i = 0; i < N; i++) {
        jobs[i] = check_worker_job_new(i);
        ck_assert_int_eq(worker_submit(p, &jobs[i]->job), 0);
    }
    ck_assert_uint_eq(check_worker_collect(k, out, N), N);
    ck_assert_int_ge(atomic_load(&check_worker_notified), 1);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(out[i]->ran, 1);
        ck_assert_int_eq(out[i]->ping_rc, STORE_OK);
        ck_assert_int_eq(seen[out[i]->id]++, 0);
    }
    worker_pool_stop(p);
    /* Nothing more arrives after the stop. */
    ck_assert_ptr_null(worker_sink_take(k));
    for (i = 0; i < N; i++)
        check_worker_job_free(jobs[i]);
    worker_sink_free(k);
}
END_TEST

START_TEST(test_pool_start_fails_on_bad_database)
{
    char err[512] = "";
    struct worker_sink *k = worker_sink_create(NULL, NULL);
    char url[1400];

    snprintf(url, sizeof url, "sqlite:%s/no/such/dir/x.db", check_worker_dir);
    ck_assert_ptr_null(worker_pool_start("t", url, 2, 10, 0, NULL, k, 1000,
                                         err, sizeof err));
    ck_assert_msg(err[0] != '\0', "no reason given");
    worker_sink_free(k);
}
END_TEST

START_TEST(test_submit_refuses_when_queue_full)
{
    struct worker_sink *k = worker_sink_create(check_worker_notify,
                                               &check_worker_notified);
    struct worker_pool *p = check_worker_pool("t", 1, 2, 0, NULL, k);
    struct check_worker_job *blocker = check_worker_job_new(0);
    struct check_worker_job *a = check_worker_job_new(1);
    struct check_worker_job *b = check_worker_job_new(2);
    struct check_worker_job *c = check_worker_job_new(3);
    struct check_worker_job *out[4];

    blocker->block = 1;
    check_worker_gate_close();
    ck_assert_int_eq(worker_submit(p, &blocker->job), 0);
    ck_assert_int_eq(check_worker_gate_wait(1), 0);
    /* The thread holds the blocker: the queue itself is empty. */
    ck_assert_uint_eq(worker_queue_depth(p), 0);
    ck_assert_int_eq(worker_submit(p, &a->job), 0);
    ck_assert_int_eq(worker_submit(p, &b->job), 0);
    ck_assert_uint_eq(worker_queue_depth(p), 2);
    ck_assert_int_eq(worker_submit(p, &c->job), -1);
    ck_assert_uint_eq(worker_queue_depth(p), 2);
    ck_assert_int_eq(c->ran, 0);

    check_worker_gate_open();
    ck_assert_uint_eq(check_worker_collect(k, out, 3), 3);
    ck_assert_int_eq(out[0]->id, 0);
    ck_assert_int_eq(out[1]->id, 1);
    ck_assert_int_eq(out[2]->id, 2);
    ck_assert_uint_eq(worker_queue_depth(p), 0);
    /* Drained: accepted again. */
    ck_assert_int_eq(worker_submit(p, &c->job), 0);
    ck_assert_uint_eq(check_worker_collect(k, out, 1), 1);
    ck_assert_ptr_eq(out[0], c);
    ck_assert_int_eq(c->ran, 1);
    worker_pool_stop(p);
    check_worker_job_free(blocker);
    check_worker_job_free(a);
    check_worker_job_free(b);
    check_worker_job_free(c);
    worker_sink_free(k);
}
END_TEST

/* 500 sends queued while the store thread is held go through in
 * ceil(500 / batch_max) transactions, each conversation's seqs 1, 2, 3 ...
 * in submission order, each job with its conversation's members. */
START_TEST(test_batch_pool_group_commits_sends)
{
    enum { N = 500, BATCH_MAX = 128 };
    struct worker_sink *k = worker_sink_create(check_worker_notify,
                                               &check_worker_notified);
    struct worker_pool *p = check_worker_pool("store", 1, 1000, BATCH_MAX,
                                              check_worker_batch, k);
    struct check_worker_job **jobs = xcalloc(N + 1, sizeof *jobs);
    struct check_worker_job **out = xcalloc(N + 1, sizeof *out);
    int64_t group[3] = { check_worker_alice, check_worker_bob,
                         check_worker_carol };
    int64_t direct[2] = { check_worker_alice, check_worker_bob };
    int64_t next_seq[2] = { 1, 1 }, senders[3];
    int i, nb;

    qsort(group, 3, sizeof group[0], check_worker_cmp_id);
    qsort(direct, 2, sizeof direct[0], check_worker_cmp_id);
    senders[0] = check_worker_alice;
    senders[1] = check_worker_bob;
    senders[2] = check_worker_carol;

    /* Job 0 holds the store thread in the batch callback. */
    atomic_store(&check_worker_batch_gate, 1);
    check_worker_gate_close();
    jobs[0] = check_worker_send_new(0, check_worker_group, senders[0], "b0");
    ck_assert_int_eq(worker_submit(p, &jobs[0]->job), 0);
    ck_assert_int_eq(check_worker_gate_wait(1), 0);
    for (i = 1; i <= N; i++) {
        char body[32];
        int direct_conv = i % 2;
        snprintf(body, sizeof body, "body %d", i);
        jobs[i] = check_worker_send_new(
            i, direct_conv ? check_worker_direct : check_worker_group,
            senders[direct_conv ? i % 2 : i % 3], body);
        ck_assert_int_eq(worker_submit(p, &jobs[i]->job), 0);
    }
    ck_assert_uint_eq(worker_queue_depth(p), N);
    check_worker_gate_open();

    ck_assert_uint_eq(check_worker_collect(k, out, N + 1), N + 1);
    nb = atomic_load(&check_worker_batches);
    ck_assert_int_eq(nb, 1 + (N + BATCH_MAX - 1) / BATCH_MAX);
    ck_assert_uint_eq(check_worker_batch_sizes[0], 1);
    for (i = 1; i < nb; i++)
        ck_assert_uint_le(check_worker_batch_sizes[i], BATCH_MAX);
    ck_assert_uint_eq(metrics_histogram_count(metrics_store_batch_size),
                      (uint64_t)nb);
    ck_assert_double_eq(metrics_histogram_sum(metrics_store_batch_size),
                        N + 1);
    ck_assert_int_ge(atomic_load(&check_worker_notified), nb);

    for (i = 0; i <= N; i++) {
        struct check_worker_job *tj = out[i];
        int d = tj->send.conversation_id == check_worker_direct;
        const int64_t *want = d ? direct : group;
        size_t nwant = d ? 2 : 3, m;

        /* FIFO: the sink gives them back in submission order. */
        ck_assert_int_eq(tj->id, i);
        ck_assert_msg(tj->send.rc == STORE_OK, "send %d: rc %d", i,
                      tj->send.rc);
        ck_assert_int_eq(tj->send.msg.conversation_id,
                         tj->send.conversation_id);
        ck_assert_int_eq(tj->send.msg.seq, next_seq[d]++);
        ck_assert_int_gt(tj->send.msg.message_id, 0);
        ck_assert_int_eq(tj->send.msg.sender_id, tj->send.sender_id);
        ck_assert_ptr_nonnull(tj->send.msg.body);
        ck_assert_str_eq(tj->send.msg.body, tj->body);
        ck_assert_ptr_nonnull(tj->job.members);
        ck_assert_uint_eq(tj->job.nmembers, nwant);
        qsort(tj->job.members, tj->job.nmembers, sizeof *tj->job.members,
              check_worker_cmp_id);
        for (m = 0; m < nwant; m++)
            ck_assert_int_eq(tj->job.members[m], want[m]);
    }
    ck_assert_int_eq(check_worker_last_seq(check_worker_group),
                     next_seq[0] - 1);
    ck_assert_int_eq(check_worker_last_seq(check_worker_direct),
                     next_seq[1] - 1);
    ck_assert_int_eq(next_seq[0] - 1 + next_seq[1] - 1, N + 1);
    worker_pool_stop(p);
    for (i = 0; i <= N; i++)
        check_worker_job_free(jobs[i]);
    free(jobs);
    free(out);
    worker_sink_free(k);
}
END_TEST

/* A send that fails inside the transaction (a trigger raises on its body)
 * fails the whole batch: every send STORE_ERR, no members, nothing stored.
 * The store thread carries on with the next batch. */
START_TEST(test_failed_batch_stores_nothing)
{
    enum { N = 10 };
    struct worker_sink *k = worker_sink_create(check_worker_notify,
                                               &check_worker_notified);
    struct worker_pool *p;
    struct check_worker_job *jobs[N + 2], *out[N + 2];
    sqlite3 *db;
    char *msg = NULL;
    int i;

    ck_assert_int_eq(sqlite3_open(check_worker_db, &db), SQLITE_OK);
    ck_assert_msg(sqlite3_exec(db,
                               "CREATE TRIGGER check_worker_fail BEFORE "
                               "INSERT ON messages WHEN NEW.body = 'boom' "
                               "BEGIN SELECT RAISE(ABORT, 'injected'); END",
                               NULL, NULL, &msg) == SQLITE_OK,
                  "trigger: %s", msg ? msg : "?");
    sqlite3_close(db);

    p = check_worker_pool("store", 1, 100, 64, check_worker_batch, k);
    atomic_store(&check_worker_batch_gate, 1);
    check_worker_gate_close();
    jobs[0] = check_worker_send_new(0, check_worker_group,
                                    check_worker_alice, "before");
    ck_assert_int_eq(worker_submit(p, &jobs[0]->job), 0);
    ck_assert_int_eq(check_worker_gate_wait(1), 0);
    for (i = 1; i <= N; i++) {
        jobs[i] = check_worker_send_new(i, i % 2 ? check_worker_group
                                                 : check_worker_direct,
                                        check_worker_bob,
                                        i == 7 ? "boom" : "fine");
        ck_assert_int_eq(worker_submit(p, &jobs[i]->job), 0);
    }
    check_worker_gate_open();
    ck_assert_uint_eq(check_worker_collect(k, out, N + 1), N + 1);
    ck_assert_int_eq(atomic_load(&check_worker_batches), 2);

    ck_assert_int_eq(out[0]->send.rc, STORE_OK);
    ck_assert_int_eq(out[0]->send.msg.seq, 1);
    for (i = 1; i <= N; i++) {
        struct check_worker_job *tj = out[i];
        ck_assert_int_eq(tj->id, i);
        ck_assert_msg(tj->send.rc == STORE_ERR, "send %d: rc %d", i,
                      tj->send.rc);
        ck_assert_ptr_null(tj->job.members);
        ck_assert_uint_eq(tj->job.nmembers, 0);
        ck_assert_ptr_null(tj->send.msg.body);
        ck_assert_int_eq(tj->send.msg.message_id, 0);
    }
    ck_assert_int_eq(check_worker_last_seq(check_worker_group), 1);
    ck_assert_int_eq(check_worker_last_seq(check_worker_direct), 0);
    ck_assert_uint_eq(check_worker_history_count(check_worker_group), 1);
    ck_assert_uint_eq(check_worker_history_count(check_worker_direct), 0);

    /* The next batch goes through, right after the failed one. */
    jobs[N + 1] = check_worker_send_new(N + 1, check_worker_group,
                                        check_worker_carol, "after");
    ck_assert_int_eq(worker_submit(p, &jobs[N + 1]->job), 0);
    ck_assert_uint_eq(check_worker_collect(k, out, 1), 1);
    ck_assert_int_eq(out[0]->send.rc, STORE_OK);
    ck_assert_int_eq(out[0]->send.msg.seq, 2);
    ck_assert_uint_eq(out[0]->job.nmembers, 3);
    worker_pool_stop(p);
    for (i = 0; i <= N + 1; i++)
        check_worker_job_free(jobs[i]);
    worker_sink_free(k);
}
END_TEST

static void *check_worker_open_later(void *arg)
{
    usleep(200000);
    check_worker_gate_open();
    return NULL;
}

/* worker_pool_stop() called while jobs wait runs them all before it
 * returns. */
START_TEST(test_stop_runs_queued_jobs)
{
    enum { N = 20 };
    struct worker_sink *k = worker_sink_create(check_worker_notify,
                                               &check_worker_notified);
    struct worker_pool *p = check_worker_pool("t", 1, 100, 0, NULL, k);
    struct check_worker_job *jobs[N + 1], *out[N + 1];
    pthread_t opener;
    int i;

    check_worker_gate_close();
    for (i = 0; i <= N; i++) {
        jobs[i] = check_worker_job_new(i);
        jobs[i]->block = i == 0;
        ck_assert_int_eq(worker_submit(p, &jobs[i]->job), 0);
        if (i == 0)
            ck_assert_int_eq(check_worker_gate_wait(1), 0);
    }
    ck_assert_uint_eq(worker_queue_depth(p), N);
    ck_assert_int_eq(pthread_create(&opener, NULL, check_worker_open_later,
                                    NULL), 0);
    worker_pool_stop(p);
    pthread_join(opener, NULL);

    /* Everything is in the sink already: no waiting. */
    {
        struct job *j = worker_sink_take(k);
        size_t n = 0;
        for (; j; j = j->next) {
            ck_assert_uint_lt(n, N + 1);
            out[n++] = (struct check_worker_job *)j;
        }
        ck_assert_uint_eq(n, N + 1);
    }
    for (i = 0; i <= N; i++) {
        ck_assert_int_eq(out[i]->id, i);
        ck_assert_int_eq(out[i]->ran, 1);
    }
    for (i = 0; i <= N; i++)
        check_worker_job_free(jobs[i]);
    worker_sink_free(k);
}
END_TEST

/* A job its run callback submits to a second pool finishes there: it is
 * in the second pool's sink, and the first pool's sink never sees it. */
START_TEST(test_handed_on_job_skips_first_sink)
{
    enum { N = 8 };
    struct worker_sink *ka = worker_sink_create(check_worker_notify,
                                                &check_worker_notified);
    struct worker_sink *kb = worker_sink_create(check_worker_notify,
                                                &check_worker_notified_b);
    struct worker_pool *pa = check_worker_pool("a", 2, 100, 0, NULL, ka);
    struct worker_pool *pb = check_worker_pool("b", 1, 100, 0, NULL, kb);
    struct check_worker_job *jobs[N], *out[N];
    int i;

    for (i = 0; i < N; i++) {
        jobs[i] = check_worker_job_new(i);
        jobs[i]->next_pool = pb;
        ck_assert_int_eq(worker_submit(pa, &jobs[i]->job), 0);
    }
    ck_assert_uint_eq(check_worker_collect(kb, out, N), N);
    worker_pool_stop(pa);
    worker_pool_stop(pb);
    ck_assert_ptr_null(worker_sink_take(ka));
    ck_assert_int_eq(atomic_load(&check_worker_notified), 0);
    ck_assert_int_ge(atomic_load(&check_worker_notified_b), 1);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(jobs[i]->submit_rc, 0);
        ck_assert_int_eq(jobs[i]->stage, 1);
        ck_assert_int_eq(jobs[i]->ran, 2);
        check_worker_job_free(jobs[i]);
    }
    worker_sink_free(ka);
    worker_sink_free(kb);
}
END_TEST

/* Once handed on, the job belongs to the second pool and then to whoever
 * takes it from that sink, who may reuse or free it at once. The first
 * pool's thread may be slower than all that (here it is held right after
 * the hand-off), so it must not read the job afterwards: the test reuses
 * the job with another operation name while the first pool's thread is
 * held, then lets it go; no query may be counted under the new name. */
START_TEST(test_handed_on_job_not_touched_by_first_pool)
{
    static const char *const reused[] = { "reused_after_handoff" };
    struct worker_sink *ka = worker_sink_create(NULL, NULL);
    struct worker_sink *kb = worker_sink_create(NULL, NULL);
    struct worker_pool *pa = check_worker_pool("a", 1, 10, 0, NULL, ka);
    struct worker_pool *pb = check_worker_pool("b", 1, 10, 0, NULL, kb);
    struct check_worker_job *tj = check_worker_job_new(1), *out[1];
    struct job *in_a;
    uint64_t counted;

    tj->next_pool = pb;
    tj->handoff_gate = 1;
    check_worker_gate_close();
    ck_assert_int_eq(worker_submit(pa, &tj->job), 0);
    ck_assert_uint_eq(check_worker_collect(kb, out, 1), 1);
    ck_assert_int_eq(check_worker_gate_wait(1), 0);
    /* Ours now: reuse it. */
    ck_assert_ptr_eq(out[0], tj);
    tj->job.op = reused[0];
    check_worker_gate_open();
    worker_pool_stop(pa);
    worker_pool_stop(pb);
    in_a = worker_sink_take(ka);
    counted = metrics_counter_value(metrics_child(metrics_db_queries,
                                                  reused));
    check_worker_job_free(tj);
    worker_sink_free(ka);
    worker_sink_free(kb);
    ck_assert_ptr_null(in_a);
    ck_assert_msg(counted == 0,
                  "the first pool read the job after handing it on "
                  "(counted a query under the name it was given later)");
}
END_TEST

static Suite *check_worker_suite(void)
{
    Suite *s = suite_create("worker");
    TCase *tc;

    tc = tcase_create("pool");
    tcase_add_checked_fixture(tc, check_worker_setup, check_worker_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pool_runs_jobs_into_sink);
    tcase_add_test(tc, test_pool_start_fails_on_bad_database);
    tcase_add_test(tc, test_submit_refuses_when_queue_full);
    tcase_add_test(tc, test_stop_runs_queued_jobs);
    tcase_add_test(tc, test_handed_on_job_skips_first_sink);
    tcase_add_test(tc, test_handed_on_job_not_touched_by_first_pool);
    suite_add_tcase(s, tc);

    tc = tcase_create("store_thread_batches");
    tcase_add_checked_fixture(tc, check_worker_setup, check_worker_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_batch_pool_group_commits_sends);
    tcase_add_test(tc, test_failed_batch_stores_nothing);
    suite_add_tcase(s, tc);
    return s;
}

/* The data directory: $CHATD_TEST_DATA_DIR, else the source tree, found
 * from the usual working directories of a test run. */
static int check_worker_find_data(void)
{
    static const char *const guesses[] = { ".", "..", "../.." };
    const char *env = getenv("CHATD_TEST_DATA_DIR");
    char probe[1100];
    size_t i;

    if (env != NULL && *env != '\0') {
        snprintf(check_worker_data, sizeof check_worker_data, "%s", env);
        return 0;
    }
    for (i = 0; i < sizeof guesses / sizeof guesses[0]; i++) {
        snprintf(probe, sizeof probe,
                 "%s/migrations/sqlite/0001_initial.up.sql", guesses[i]);
        if (access(probe, R_OK) == 0) {
            snprintf(check_worker_data, sizeof check_worker_data, "%s",
                     guesses[i]);
            return 0;
        }
    }
    return -1;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    SRunner *sr;
    int failed;

    if (check_worker_find_data() < 0) {
        fprintf(stderr, "check_worker: migrations not found: set "
                "CHATD_TEST_DATA_DIR to the source tree\n");
        return EXIT_FAILURE;
    }
    snprintf(check_worker_tmp, sizeof check_worker_tmp,
             "%s/check_worker.XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    if (mkdtemp(check_worker_tmp) == NULL) {
        perror("check_worker: mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(check_worker_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(check_worker_tmp, check_worker_rm, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
