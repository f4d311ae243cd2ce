/*
 * cache.c - the Redis cache. See cache.h.
 *
 * Values are plain strings: a session is "SESSION USER EXPIRES USERNAME",
 * members are "ID,ID,...". Membership never changes once a conversation
 * exists (the protocol has no way to join or leave one), so members are
 * written once and only expire; sessions are deleted on logout.
 */
#include "cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "redis_conn.h"
#include "util.h"

#define CACHE_TIMEOUT_MS 250
#define CACHE_PENDING_MAX 10000

struct cache_tl {
    redisContext *ctx;
    int attempt;
    int64_t next_try_ms;
};

static struct redis_url cache_url;
static atomic_int cache_on;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;

/* Session deletions that did not reach Redis yet. */
static pthread_mutex_t cache_pending_lock = PTHREAD_MUTEX_INITIALIZER;
static char (*cache_pending)[2 * STORE_TOKEN_HASH_LEN + 1];
static size_t cache_npending;
static atomic_int cache_has_pending;

static void cache_tl_free(void *p)
{
    struct cache_tl *tl = p;

    if (tl->ctx)
        redisFree(tl->ctx);
    free(tl);
}

static void cache_key_init(void)
{
    pthread_key_create(&cache_key, cache_tl_free);
}

int cache_init(const char *url, char *err, size_t errlen)
{
    if (url == NULL) {
        atomic_store(&cache_on, 0);
        return 0;
    }
    if (redis_url_parse(url, &cache_url, err, errlen) != 0)
        return -1;
    pthread_once(&cache_key_once, cache_key_init);
    atomic_store(&cache_on, 1);
    return 0;
}

void cache_shutdown(void)
{
    atomic_store(&cache_on, 0);
    pthread_mutex_lock(&cache_pending_lock);
    free(cache_pending);
    cache_pending = NULL;
    cache_npending = 0;
    atomic_store(&cache_has_pending, 0);
    pthread_mutex_unlock(&cache_pending_lock);
}

int cache_enabled(void)
{
    return atomic_load(&cache_on);
}

static void cache_pending_add(const char *hex)
{
    pthread_mutex_lock(&cache_pending_lock);
    if (cache_npending < CACHE_PENDING_MAX) {
        cache_pending = xrealloc(cache_pending,
                                 (cache_npending + 1) * sizeof *cache_pending);
        memcpy(cache_pending[cache_npending++], hex,
               sizeof cache_pending[0]);
        atomic_store(&cache_has_pending, 1);
    }
    pthread_mutex_unlock(&cache_pending_lock);
}

static void cache_drop(struct cache_tl *tl, const char *why)
{
    log_event(LOG_WARN, "redis_error", NULL, LOG_STR("connection", "cache"),
              LOG_STR("error", why), LF_END);
    redisFree(tl->ctx);
    tl->ctx = NULL;
    tl->next_try_ms = util_now_ms() + redis_backoff_ms(tl->attempt++);
}

static void cache_flush_pending(struct cache_tl *tl);

/* This thread's connection, or NULL (bypass). */
static redisContext *cache_ctx(void)
{
    struct cache_tl *tl;
    char err[REDIS_CONN_ERRLEN];

    if (!atomic_load(&cache_on))
        return NULL;
    tl = pthread_getspecific(cache_key);
    if (tl == NULL) {
        tl = xcalloc(1, sizeof *tl);
        pthread_setspecific(cache_key, tl);
    }
    if (tl->ctx == NULL) {
        if (util_now_ms() < tl->next_try_ms)
            return NULL;
        tl->ctx = redis_connect(&cache_url, CACHE_TIMEOUT_MS, err, sizeof err);
        if (tl->ctx == NULL) {
            if (tl->attempt == 0)
                log_event(LOG_WARN, "redis_error", NULL,
                          LOG_STR("connection", "cache"),
                          LOG_STR("error", err), LF_END);
            tl->next_try_ms = util_now_ms() + redis_backoff_ms(tl->attempt++);
            return NULL;
        }
        tl->attempt = 0;
    }
    if (atomic_load(&cache_has_pending))
        cache_flush_pending(tl);
    return tl->ctx;
}

/* Runs one command; NULL on failure (the connection is dropped). */
static redisReply *cache_run(int argc, const char **argv, const size_t *lens)
{
    redisContext *c = cache_ctx();
    redisReply *r;
    struct cache_tl *tl;

    if (c == NULL)
        return NULL;
    r = redisCommandArgv(c, argc, argv, lens);
    if (r != NULL && r->type != REDIS_REPLY_ERROR)
        return r;
    tl = pthread_getspecific(cache_key);
    if (r) {
        char why[REDIS_CONN_ERRLEN];
        snprintf(why, sizeof why, "%s: %.*s", argv[0], (int)r->len, r->str);
        freeReplyObject(r);
        cache_drop(tl, why);
    } else {
        cache_drop(tl, c->errstr[0] ? c->errstr : "no reply");
    }
    return NULL;
}

static void cache_flush_pending(struct cache_tl *tl)
{
    char (*list)[2 * STORE_TOKEN_HASH_LEN + 1];
    size_t n, i;

    pthread_mutex_lock(&cache_pending_lock);
    list = cache_pending;
    n = cache_npending;
    cache_pending = NULL;
    cache_npending = 0;
    atomic_store(&cache_has_pending, 0);
    pthread_mutex_unlock(&cache_pending_lock);
    for (i = 0; i < n; i++) {
        redisReply *r;
        if (tl->ctx == NULL) {
            cache_pending_add(list[i]);
            continue;
        }
        r = redisCommand(tl->ctx, "DEL " RK_SESSION "%s", list[i]);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            cache_pending_add(list[i]);
            if (r)
                freeReplyObject(r);
            cache_drop(tl, tl->ctx->errstr[0] ? tl->ctx->errstr : "DEL failed");
            continue;
        }
        freeReplyObject(r);
    }
    free(list);
}

/* Counting. */
struct cache_op {
    const char *name;
    int64_t t0;
};

static struct cache_op cache_begin(const char *name)
{
    struct cache_op op = { name, util_mono_ns() };
    return op;
}

/* result: 1 hit, 0 miss, -1 failed (neither), 2 a write */
static void cache_end(struct cache_op op, int result)
{
    const char *v[] = { op.name };

    metrics_counter_inc(metrics_child(metrics_cache_requests, v));
    metrics_histogram_observe(metrics_child(metrics_cache_duration, v),
                              (double)(util_mono_ns() - op.t0) / 1e9);
    if (result == 1)
        metrics_counter_inc(metrics_child(metrics_cache_hits, v));
    else if (result == 0)
        metrics_counter_inc(metrics_child(metrics_cache_misses, v));
}

static void cache_session_key(const uint8_t *hash, char *key, size_t keylen)
{
    char hex[2 * STORE_TOKEN_HASH_LEN + 1];

    util_hex(hash, STORE_TOKEN_HASH_LEN, hex);
    snprintf(key, keylen, RK_SESSION "%s", hex);
}

int cache_session_get(const uint8_t hash[STORE_TOKEN_HASH_LEN], int64_t now,
                      struct store_session *out)
{
    char key[128];
    const char *argv[2] = { "GET", key };
    struct cache_op op;
    redisReply *r;
    long long sid, uid, exp;
    int used = 0, rc = 0;

    if (cache_ctx() == NULL)
        return -1;
    op = cache_begin("session_get");
    cache_session_key(hash, key, sizeof key);
    r = cache_run(2, argv, NULL);
    if (r == NULL) {
        cache_end(op, -1);
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING &&
        sscanf(r->str, "%lld %lld %lld %n", &sid, &uid, &exp, &used) == 3 &&
        used > 0 && (size_t)used < r->len &&
        r->len - (size_t)used <= STORE_USERNAME_MAX && exp > now) {
        memset(out, 0, sizeof *out);
        out->session_id = sid;
        out->user_id = uid;
        out->expires_at = exp;
        memcpy(out->username, r->str + used, r->len - (size_t)used);
        rc = 1;
    }
    freeReplyObject(r);
    cache_end(op, rc);
    return rc;
}

void cache_session_put(const uint8_t hash[STORE_TOKEN_HASH_LEN],
                       const struct store_session *s, int64_t now)
{
    char key[128], val[64 + STORE_USERNAME_MAX], px[24];
    const char *argv[5] = { "SET", key, val, "PX", px };
    int64_t ttl = s->expires_at - now;
    struct cache_op op;
    redisReply *r;

    if (ttl <= 0 || cache_ctx() == NULL)
        return;
    if (ttl > CACHE_SESSION_TTL_MS)
        ttl = CACHE_SESSION_TTL_MS;
    op = cache_begin("session_set");
    cache_session_key(hash, key, sizeof key);
    snprintf(val, sizeof val, "%lld %lld %lld %s", (long long)s->session_id,
             (long long)s->user_id, (long long)s->expires_at, s->username);
    snprintf(px, sizeof px, "%lld", (long long)ttl);
    r = cache_run(5, argv, NULL);
    if (r)
        freeReplyObject(r);
    cache_end(op, r ? 2 : -1);
}

void cache_session_delete(const uint8_t hash[STORE_TOKEN_HASH_LEN])
{
    char key[128], hex[2 * STORE_TOKEN_HASH_LEN + 1];
    const char *argv[2] = { "DEL", key };
    struct cache_op op;
    redisReply *r;

    if (!atomic_load(&cache_on))
        return;
    util_hex(hash, STORE_TOKEN_HASH_LEN, hex);
    if (cache_ctx() == NULL) {
        cache_pending_add(hex);
        return;
    }
    op = cache_begin("session_delete");
    snprintf(key, sizeof key, RK_SESSION "%s", hex);
    r = cache_run(2, argv, NULL);
    if (r)
        freeReplyObject(r);
    else
        cache_pending_add(hex);
    cache_end(op, r ? 2 : -1);
}

int cache_members_get(int64_t conv_id, int64_t **ids, size_t *n)
{
    char key[64];
    const char *argv[2] = { "GET", key };
    struct cache_op op;
    redisReply *r;
    int rc = 0;

    if (cache_ctx() == NULL)
        return -1;
    op = cache_begin("members_get");
    snprintf(key, sizeof key, RK_MEMBERS "%lld", (long long)conv_id);
    r = cache_run(2, argv, NULL);
    if (r == NULL) {
        cache_end(op, -1);
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING && r->len > 0) {
        size_t cap = 1, k = 0, i;
        int64_t *v;
        const char *p = r->str;
        char *end;
        for (i = 0; i < r->len; i++)
            cap += r->str[i] == ',';
        v = xmalloc(cap * sizeof *v);
        for (;;) {
            long long x = strtoll(p, &end, 10);
            if (end == p || x <= 0 || k == cap)
                break;
            v[k++] = x;
            if (*end != ',')
                break;
            p = end + 1;
        }
        if (*end == '\0' && k == cap) {
            *ids = v;
            *n = k;
            rc = 1;
        } else {
            free(v);             /* not ours, or damaged: a miss */
        }
    }
    freeReplyObject(r);
    cache_end(op, rc);
    return rc;
}

void cache_members_put(int64_t conv_id, const int64_t *ids, size_t n)
{
    char key[64], px[24];
    struct util_buf val = { 0 };
    const char *argv[5] = { "SET", key, NULL, "PX", px };
    size_t lens[5], i;
    struct cache_op op;
    redisReply *r;

    if (n == 0 || cache_ctx() == NULL)
        return;
    op = cache_begin("members_set");
    snprintf(key, sizeof key, RK_MEMBERS "%lld", (long long)conv_id);
    snprintf(px, sizeof px, "%d", CACHE_MEMBERS_TTL_MS);
    for (i = 0; i < n; i++)
        util_buf_printf(&val, i ? ",%lld" : "%lld", (long long)ids[i]);
    argv[2] = val.data;
    for (i = 0; i < 5; i++)
        lens[i] = strlen(argv[i]);
    r = cache_run(5, argv, lens);
    if (r)
        freeReplyObject(r);
    cache_end(op, r ? 2 : -1);
    util_buf_free(&val);
}

int cache_online(const int64_t *users, size_t n, int *online)
{
    redisContext *c = cache_ctx();
    struct cache_op op;
    size_t i;
    int rc = 0;

    if (c == NULL)
        return -1;
    if (n == 0)
        return 0;
    op = cache_begin("online_get");
    /* A session is live while its expiry (Redis's clock) is ahead. */
    for (i = 0; i < n; i++)
        redisAppendCommand(c, "EVAL %s 1 " RK_PRESENCE "%lld",
                           "local t = redis.call('TIME') "
                           "return redis.call('ZCOUNT', KEYS[1], "
                           "'(' .. (t[1] * 1000 + math.floor(t[2] / 1000)),"
                           " '+inf')", (long long)users[i]);
    for (i = 0; i < n; i++) {
        void *reply = NULL;
        redisReply *r;
        if (redisGetReply(c, &reply) != REDIS_OK || reply == NULL) {
            cache_drop(pthread_getspecific(cache_key),
                       c->errstr[0] ? c->errstr : "no reply");
            rc = -1;
            break;
        }
        r = reply;
        if (r->type == REDIS_REPLY_ERROR) {
            char why[REDIS_CONN_ERRLEN];
            snprintf(why, sizeof why, "%.*s", (int)r->len, r->str);
            freeReplyObject(r);
            /* The other replies are still due: read them, then drop. */
            while (++i < n && redisGetReply(c, &reply) == REDIS_OK && reply)
                freeReplyObject(reply);
            cache_drop(pthread_getspecific(cache_key), why);
            rc = -1;
            break;
        }
        online[i] = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
        freeReplyObject(r);
    }
    cache_end(op, rc == 0 ? 2 : -1);
    return rc;
}
