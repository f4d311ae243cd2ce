/*
 * store.c - the backend-independent half of the storage interface: picking
 * a backend from the database URL, the error string every backend reports
 * through, the store_* wrappers that call through the vtable (so no caller
 * ever writes s->ops->, as SQLite's sqlite3OsRead wraps its VFS), and the
 * helpers that release results.
 *
 * Threads: each function runs on the thread that owns the struct store it
 * is given (see store.h); store_kind() and the helpers that clear and free
 * results touch no shared state and may run anywhere.
 */
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "util.h"

#define STORE_SQLITE_PREFIX "sqlite:"

const char *store_kind(const char *url)
{
    if (url == NULL)
        return NULL;
    if (strncmp(url, STORE_SQLITE_PREFIX, strlen(STORE_SQLITE_PREFIX)) == 0)
        return "sqlite";
    if (strncmp(url, "postgresql://", 13) == 0 ||
        strncmp(url, "postgres://", 11) == 0)
        return "postgres";
    return NULL;
}

struct store *store_open(const char *url, char *err, size_t errlen)
{
    const char *kind = store_kind(url);

    if (kind == NULL) {
        /* The URL may hold a password, so it is not echoed back. */
        snprintf(err, errlen, "unsupported database URL: expected "
                 "sqlite:PATH or postgresql://...");
        return NULL;
    }
    if (strcmp(kind, "sqlite") == 0) {
        const char *path = url + strlen(STORE_SQLITE_PREFIX);
        if (*path == '\0') {
            snprintf(err, errlen, "database URL sqlite: names no file");
            return NULL;
        }
        return store_sqlite_open(path, err, errlen);
    }
    /* libpq takes the URL itself as its conninfo. */
    return store_pg_open(url, err, errlen);
}

void store_close(struct store *s)
{
    if (s != NULL)
        s->ops->close(s);
}

const char *store_errstr(const struct store *s)
{
    return s->errstr;
}

void store_set_error(struct store *s, const char *fmt, ...)
{
    va_list ap;
    size_t len;

    va_start(ap, fmt);
    vsnprintf(s->errstr, sizeof s->errstr, fmt, ap);
    va_end(ap);
    /* Driver messages sometimes end in a newline; errstr is one line. */
    len = strlen(s->errstr);
    while (len > 0 &&
           (s->errstr[len - 1] == '\n' || s->errstr[len - 1] == '\r'))
        s->errstr[--len] = '\0';
}

int store_ping(struct store *s)
{
    return s->ops->ping(s);
}

int store_user_create(struct store *s, const char *username,
                      const char *password_hash, int64_t now, int64_t *id)
{
    return s->ops->user_create(s, username, password_hash, now, id);
}

int store_user_by_name(struct store *s, const char *username,
                       struct store_user *out)
{
    return s->ops->user_by_name(s, username, out);
}

int store_user_set_throttle(struct store *s, int64_t user_id, int failed,
                            int64_t locked_until)
{
    return s->ops->user_set_throttle(s, user_id, failed, locked_until);
}

int store_users_by_prefix(struct store *s, const char *prefix, size_t limit,
                          struct store_user_brief **out, size_t *n)
{
    return s->ops->users_by_prefix(s, prefix, limit, out, n);
}

int store_users_by_names(struct store *s, const char *const *names, size_t n,
                         struct store_user_brief *out, size_t *missing)
{
    return s->ops->users_by_names(s, names, n, out, missing);
}

int store_session_create(struct store *s, int64_t user_id,
                         const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                         int64_t now, int64_t expires_at, int64_t *id)
{
    return s->ops->session_create(s, user_id, token_hash, now, expires_at,
                                  id);
}

int store_session_lookup(struct store *s,
                         const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                         int64_t now, struct store_session *out)
{
    int rc;

    /* Redis first when configured (cache.h); the database is the truth. */
    if (cache_session_get(token_hash, now, out) == 1)
        return STORE_OK;
    rc = s->ops->session_lookup(s, token_hash, now, out);
    if (rc == STORE_OK)
        cache_session_put(token_hash, out, now);
    return rc;
}

int store_session_delete(struct store *s, int64_t session_id, int64_t now)
{
    return s->ops->session_delete(s, session_id, now);
}

int store_conv_create(struct store *s, int64_t creator_id,
                      const int64_t *member_ids, size_t n, const char *title,
                      int64_t now, struct store_conv *out, int *created)
{
    return s->ops->conv_create(s, creator_id, member_ids, n, title, now, out,
                               created);
}

int store_conv_list(struct store *s, int64_t user_id, struct store_conv **out,
                    size_t *n)
{
    return s->ops->conv_list(s, user_id, out, n);
}

int store_conv_member(struct store *s, int64_t conv_id, int64_t user_id,
                      int64_t *last_seq)
{
    return s->ops->conv_member(s, conv_id, user_id, last_seq);
}

int store_conv_member_ids(struct store *s, int64_t conv_id, int64_t **ids,
                          size_t *n)
{
    int rc;

    if (cache_members_get(conv_id, ids, n) == 1)
        return STORE_OK;
    rc = s->ops->conv_member_ids(s, conv_id, ids, n);
    if (rc == STORE_OK)
        cache_members_put(conv_id, *ids, *n);
    return rc;
}

int store_user_contacts(struct store *s, int64_t user_id, int64_t **ids,
                        size_t *n)
{
    return s->ops->user_contacts(s, user_id, ids, n);
}

int store_history(struct store *s, int64_t conv_id, int64_t before_seq,
                  int64_t after_seq, size_t limit, struct store_msg **out,
                  size_t *n, int *has_more)
{
    return s->ops->history(s, conv_id, before_seq, after_seq, limit, out, n,
                           has_more);
}

int store_send_batch(struct store *s, struct store_send *sends, size_t n)
{
    return s->ops->send_batch(s, sends, n);
}

int store_read_marker(struct store *s, int64_t user_id, int64_t conv_id,
                      int64_t seq, int64_t now, int64_t *read_seq)
{
    return s->ops->read_marker(s, user_id, conv_id, seq, now, read_seq);
}

int store_event_add(struct store *s, const char *type, int64_t user_id,
                    const char *detail_json, int64_t now)
{
    return s->ops->event_add(s, type, user_id, detail_json, now);
}

int store_mig_begin(struct store *s)
{
    return s->ops->mig_begin(s);
}

int store_mig_applied(struct store *s, struct store_migration **out,
                      size_t *n)
{
    return s->ops->mig_applied(s, out, n);
}

int store_mig_apply(struct store *s, const struct store_migration *m,
                    const char *sql, int up)
{
    return s->ops->mig_apply(s, m, sql, up);
}

int store_mig_clear_dirty(struct store *s, int version)
{
    return s->ops->mig_clear_dirty(s, version);
}

void store_mig_end(struct store *s)
{
    s->ops->mig_end(s);
}

void store_msg_clear(struct store_msg *m)
{
    if (m == NULL)
        return;
    free(m->body);
    memset(m, 0, sizeof *m);
}

void store_msgs_free(struct store_msg *m, size_t n)
{
    size_t i;

    if (m == NULL)
        return;
    for (i = 0; i < n; i++)
        store_msg_clear(&m[i]);
    free(m);
}

int store_query_rows(struct store *s, const char *sql, int timeout_ms,
                     struct store_rows *out)
{
    memset(out, 0, sizeof *out);
    if (s->ops->query_rows == NULL) {
        store_set_error(s, "query_rows: not supported by the %s backend",
                        s->ops->name);
        return STORE_ERR;
    }
    return s->ops->query_rows(s, sql, timeout_ms, out);
}

void store_rows_clear(struct store_rows *r)
{
    size_t i;

    if (r == NULL)
        return;
    for (i = 0; i < r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    memset(r, 0, sizeof *r);
}

void store_conv_clear(struct store_conv *c)
{
    if (c == NULL)
        return;
    free(c->title);
    free(c->members);
    store_msg_clear(&c->last_message);
    memset(c, 0, sizeof *c);
}

void store_convs_free(struct store_conv *c, size_t n)
{
    size_t i;

    if (c == NULL)
        return;
    for (i = 0; i < n; i++)
        store_conv_clear(&c[i]);
    free(c);
}
