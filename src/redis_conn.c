/*
 * redis_conn.c - Redis URL parsing and connecting. See redis_conn.h.
 */
#include "redis_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static void redis_err(char *err, size_t errlen, const char *fmt,
                      const char *arg)
{
    snprintf(err, errlen, fmt, arg);
}

int redis_url_parse(const char *url, struct redis_url *out, char *err,
                    size_t errlen)
{
    const char *p, *at, *slash, *colon, *hend;
    char *end;
    long v;

    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(url, "redis://", 8) != 0) {
        redis_err(err, errlen, "%s", "expected redis://HOST[:PORT][/DB]");
        return -1;
    }
    p = url + 8;
    slash = strchr(p, '/');
    at = memchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));
    if (at) {
        /* [user]:password@ ; only the password matters to Redis 5/6 AUTH */
        const char *pc = memchr(p, ':', (size_t)(at - p));
        const char *pw = pc ? pc + 1 : p;
        size_t n = (size_t)(at - pw);
        if (n >= sizeof out->password) {
            redis_err(err, errlen, "%s", "redis password too long");
            return -1;
        }
        memcpy(out->password, pw, n);
        out->password[n] = '\0';
        p = at + 1;
    }
    hend = slash ? slash : p + strlen(p);
    colon = NULL;
    if (*p == '[') {                          /* [v6]:port */
        const char *rb = memchr(p, ']', (size_t)(hend - p));
        if (rb == NULL) {
            redis_err(err, errlen, "%s", "bad IPv6 address in redis URL");
            return -1;
        }
        if (rb + 1 < hend && rb[1] == ':')
            colon = rb + 1;
        else if (rb + 1 != hend) {
            redis_err(err, errlen, "%s", "bad redis URL after ']'");
            return -1;
        }
        if ((size_t)(rb - p - 1) >= sizeof out->host || rb - p - 1 == 0) {
            redis_err(err, errlen, "%s", "bad host in redis URL");
            return -1;
        }
        memcpy(out->host, p + 1, (size_t)(rb - p - 1));
    } else {
        colon = memchr(p, ':', (size_t)(hend - p));
        size_t n = (size_t)((colon ? colon : hend) - p);
        if (n == 0 || n >= sizeof out->host) {
            redis_err(err, errlen, "%s", "expected redis://HOST[:PORT][/DB]");
            return -1;
        }
        memcpy(out->host, p, n);
    }
    if (colon) {
        char port[8];
        size_t n = (size_t)(hend - colon - 1);
        if (n == 0 || n >= sizeof port) {
            redis_err(err, errlen, "%s", "bad port in redis URL");
            return -1;
        }
        memcpy(port, colon + 1, n);
        port[n] = '\0';
        v = strtol(port, &end, 10);
        if (*end || v < 1 || v > 65535) {
            redis_err(err, errlen, "%s", "bad port in redis URL");
            return -1;
        }
        out->port = (int)v;
    }
    if (slash && slash[1]) {
        v = strtol(slash + 1, &end, 10);
        if (*end || v < 0 || v > 65535) {
            redis_err(err, errlen, "%s", "bad database number in redis URL");
            return -1;
        }
        out->db = (int)v;
    }
    return 0;
}

void redis_url_redacted(const char *url, char *out, size_t outlen)
{
    const char *p = strncmp(url, "redis://", 8) == 0 ? url + 8 : url;
    const char *slash = strchr(p, '/');
    const char *at = memchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));

    if (at)
        snprintf(out, outlen, "redis://***@%s", at + 1);
    else
        snprintf(out, outlen, "%s", url);
}

static int redis_simple(redisContext *c, char *err, size_t errlen,
                        int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);

    if (r == NULL) {
        redis_err(err, errlen, "%s", c->errstr[0] ? c->errstr : "no reply");
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %.*s", argv[0], (int)r->len, r->str);
        freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

redisContext *redis_connect(const struct redis_url *u, int timeout_ms,
                            char *err, size_t errlen)
{
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);

    if (c == NULL) {
        redis_err(err, errlen, "%s", "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, errlen, "connect %s:%d: %s", u->host, u->port,
                 c->errstr);
        redisFree(c);
        return NULL;
    }
    if (timeout_ms > 0)
        redisSetTimeout(c, tv);
    redisEnableKeepAlive(c);
    if (u->password[0]) {
        const char *argv[] = { "AUTH", u->password };
        if (redis_simple(c, err, errlen, 2, argv) != 0) {
            /* The reply text never holds the password. */
            redisFree(c);
            return NULL;
        }
    }
    if (u->db) {
        char db[16];
        const char *argv[] = { "SELECT", db };
        snprintf(db, sizeof db, "%d", u->db);
        if (redis_simple(c, err, errlen, 2, argv) != 0) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

int64_t redis_backoff_ms(int attempt)
{
    int64_t ms = 100;

    while (attempt-- > 0 && ms < 2000)
        ms *= 2;
    if (ms > 2000)
        ms = 2000;
    /* +-25% so that many nodes do not reconnect in step. */
    return ms * 3 / 4 + (int64_t)(random() % (ms / 2 + 1));
}
