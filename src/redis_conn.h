/*
 * redis_conn.h - what every Redis user in chatd shares: the parsed
 * redis://[:PASSWORD@]HOST[:PORT][/DB] URL, a blocking connect that does
 * AUTH and SELECT with time limits, and the key names.
 *
 * A redisContext belongs to the thread that made it (DESIGN.md). The
 * password is never logged: redis_url_redacted() gives a URL without it.
 */
#ifndef CHATD_REDIS_CONN_H
#define CHATD_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define REDIS_CONN_ERRLEN 256

struct redis_url {
    char host[256];
    int port;
    int db;
    char password[256];
};

/* Key names. One prefix for everything chatd writes, so that an operator
 * can tell its keys apart on a shared Redis. */
#define RK_PREFIX "chatd:"
#define RK_CHANNEL RK_PREFIX "bus"              /* the fan-out channel */
#define RK_PRESENCE RK_PREFIX "p:"             /* + user id: ZSET of sessions */
#define RK_ONLINE RK_PREFIX "online"           /* ZSET user id -> expiry ms */
#define RK_SESSION RK_PREFIX "s:"              /* + token hash hex */
#define RK_MEMBERS RK_PREFIX "m:"              /* + conversation id */

/* 0, or -1 with err set. */
int redis_url_parse(const char *url, struct redis_url *out, char *err,
                    size_t errlen);
/* The URL with any password replaced by "***" (for logs). */
void redis_url_redacted(const char *url, char *out, size_t outlen);

/* Connects, authenticates and selects the database, each within
 * timeout_ms; the context keeps timeout_ms as its read/write timeout
 * (0: blocking). NULL with err set. */
redisContext *redis_connect(const struct redis_url *u, int timeout_ms,
                            char *err, size_t errlen);

/* Back-off for reconnecting: the wait (ms) before attempt n (0-based),
 * doubling from 100 ms to 2 s with jitter. */
int64_t redis_backoff_ms(int attempt);

#endif
