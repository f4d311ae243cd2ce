/*
 * cache.h - the Redis cache of the hot reads: session token -> session
 * (every authenticated request and WebSocket auth) and conversation ->
 * members (every send, read and typing), plus the cluster-wide "is this
 * user online" lookup. store.c consults it around the two store reads, so
 * every caller gets it; the logout path invalidates a session.
 *
 * Each thread uses a Redis connection of its own (thread-local, opened on
 * first use, closed when the thread ends). Redis down or slow (each call
 * has a short time limit): the cache is bypassed and the database
 * answers; the connection is retried with back-off. A session deletion
 * that could not reach Redis is kept and retried by the next thread that
 * reaches it, so a logout is never forgotten while chatd runs.
 *
 * Every call counts chat_cache_requests_total{operation} and observes
 * chat_cache_operations_duration_seconds{operation}; lookups count a hit
 * or a miss (requests that failed count neither).
 */
#ifndef CHATD_CACHE_H
#define CHATD_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define CACHE_SESSION_TTL_MS 300000     /* at most; never past expiry */
#define CACHE_MEMBERS_TTL_MS 3600000

/* Turns the cache on (url NULL: off). 0, or -1 with err set (bad URL). */
int cache_init(const char *url, char *err, size_t errlen);
void cache_shutdown(void);
int cache_enabled(void);

/* 1 hit (out filled), 0 miss, -1 not available. */
int cache_session_get(const uint8_t hash[STORE_TOKEN_HASH_LEN], int64_t now,
                      struct store_session *out);
void cache_session_put(const uint8_t hash[STORE_TOKEN_HASH_LEN],
                       const struct store_session *s, int64_t now);
void cache_session_delete(const uint8_t hash[STORE_TOKEN_HASH_LEN]);

/* 1 hit (*ids owned by the caller), 0 miss, -1 not available. */
int cache_members_get(int64_t conv_id, int64_t **ids, size_t *n);
void cache_members_put(int64_t conv_id, const int64_t *ids, size_t n);

/* Cluster-wide presence from the bus's keys: online[i] = 1 when users[i]
 * has a live session on any node. 0, or -1 when Redis cannot say. */
int cache_online(const int64_t *users, size_t n, int *online);

#endif
