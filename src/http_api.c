/*
 * http_api.c - the HTTP routes: a const route table, the handlers that run
 * on worker threads with their own store connection, and the in-memory
 * browser client.
 *
 * Threads: http_api_handle() and http_api_finish() run on the service
 * thread and never touch the database; every http_api_run_* function runs
 * on a worker thread (job run callbacks). A send is handed from the worker
 * (which authenticated it) to the store thread, which commits it in a batch
 * with the others; its answer is built on the service thread.
 */
#include "http_api.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "log.h"
#include "metrics.h"
#include "proto.h"
#include "ws_chat.h"

#define HTTP_USERS_LIMIT 50
#define HTTP_HISTORY_DEFAULT 50
#define HTTP_HISTORY_MAX 200

typedef int (*http_handler_cb)(struct http_req *r, struct store *s);

struct http_route {
    enum http_method method;
    const char *path;             /* exact path, or the prefix of an {id} */
    const char *suffix;           /* after {id}; NULL: no id */
    const char *name;             /* template for logs and metrics */
    int auth;                     /* needs a session */
    http_handler_cb handler;      /* NULL: answered on the service thread */
    const char *op;               /* the operation, for database metrics */
};

struct http_static {
    const char *path;
    const char *file;
    const char *type;
    char *data;
    size_t len;
    char etag[24];
};

struct http_api {
    struct http_api_config cfg;
    struct worker_pool *workers;
    struct worker_pool *store_pool;
    struct http_static statics[3];
    struct ws_chat *chat;
};

void http_api_set_chat(struct http_api *api, struct ws_chat *chat)
{
    api->chat = chat;
}

static int http_api_register(struct http_req *r, struct store *s);
static int http_api_login(struct http_req *r, struct store *s);
static int http_api_logout(struct http_req *r, struct store *s);
static int http_api_me(struct http_req *r, struct store *s);
static int http_api_users(struct http_req *r, struct store *s);
static int http_api_conv_create(struct http_req *r, struct store *s);
static int http_api_conv_list(struct http_req *r, struct store *s);
static int http_api_history(struct http_req *r, struct store *s);
static int http_api_send(struct http_req *r, struct store *s);
static int http_api_read(struct http_req *r, struct store *s);
static int http_api_ready(struct http_req *r, struct store *s);

static const struct http_route http_routes[] = {
    { HTTP_POST, "/api/register", NULL, "/api/register", 0,
      http_api_register, "register" },
    { HTTP_POST, "/api/login", NULL, "/api/login", 0, http_api_login,
      "login" },
    { HTTP_POST, "/api/logout", NULL, "/api/logout", 1, http_api_logout,
      "logout" },
    { HTTP_GET, "/api/me", NULL, "/api/me", 1, http_api_me, "me" },
    { HTTP_GET, "/api/users", NULL, "/api/users", 1, http_api_users,
      "users_by_prefix" },
    { HTTP_POST, "/api/conversations", NULL, "/api/conversations", 1,
      http_api_conv_create, "conv_create" },
    { HTTP_GET, "/api/conversations", NULL, "/api/conversations", 1,
      http_api_conv_list, "conv_list" },
    { HTTP_GET, "/api/conversations/", "/messages",
      "/api/conversations/{id}/messages", 1, http_api_history, "history" },
    { HTTP_POST, "/api/conversations/", "/messages",
      "/api/conversations/{id}/messages", 1, http_api_send, "send_auth" },
    { HTTP_POST, "/api/conversations/", "/read",
      "/api/conversations/{id}/read", 1, http_api_read, "read_marker" },
    { HTTP_GET, "/health", NULL, "/health", 0, NULL, NULL },
    { HTTP_GET, "/ready", NULL, "/ready", 0, http_api_ready, "ping" },
    { HTTP_GET, "/metrics", NULL, "/metrics", 0, NULL, NULL },
    { HTTP_GET, "/", NULL, "/", 0, NULL, NULL },
    { HTTP_GET, "/app.js", NULL, "/app.js", 0, NULL, NULL },
    { HTTP_GET, "/app.css", NULL, "/app.css", 0, NULL, NULL },
};
#define HTTP_NROUTES (sizeof http_routes / sizeof http_routes[0])

static const char *const http_method_names[] = {
    "OTHER", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD",
};

/* ---- responses ---------------------------------------------------------- */

void http_req_header(struct http_req *r, const char *name, const char *fmt,
                     ...)
{
    va_list ap;

    if (r->nhdr == HTTP_MAX_HEADERS)
        return;
    snprintf(r->hdr_name[r->nhdr], sizeof r->hdr_name[0], "%s", name);
    va_start(ap, fmt);
    vsnprintf(r->hdr_value[r->nhdr], sizeof r->hdr_value[0], fmt, ap);
    va_end(ap);
    r->nhdr++;
}

void http_req_json(struct http_req *r, int status, struct util_buf *b)
{
    free(r->resp);
    r->status = status;
    r->content_type = "application/json";
    r->resp_len = b->len;
    r->resp = util_buf_steal(b);
    r->resp_static = NULL;
}

void http_req_error(struct http_req *r, int status, const char *code,
                    const char *fmt, ...)
{
    struct util_buf b = { 0 };
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    proto_json_error(&b, code, msg);
    http_req_json(r, status, &b);
    r->error_code = code;
}

static void http_req_empty(struct http_req *r, int status)
{
    free(r->resp);
    r->resp = NULL;
    r->resp_len = 0;
    r->resp_static = NULL;
    r->status = status;
    r->content_type = NULL;
}

const char *http_req_arg(const struct http_req *r, const char *key)
{
    size_t kl = strlen(key);
    int i;

    for (i = 0; i < r->nargs; i++)
        if (strncmp(r->args[i], key, kl) == 0 && r->args[i][kl] == '=')
            return r->args[i] + kl + 1;
    return NULL;
}

void http_req_free(struct http_req *r)
{
    if (r == NULL)
        return;
    util_buf_free(&r->body);
    free(r->resp);
    store_msg_clear(&r->send.msg);
    store_conv_clear(&r->conv);
    free(r->users);
    free(r->online);
    free(r->job.members);
    free(r);
}

static void http_api_db_error(struct http_req *r, struct store *s,
                              const char *op)
{
    log_event(LOG_ERROR, "database_error", r->trace_id, LOG_STR("operation", op),
              LOG_STR("error", store_errstr(s)), LF_END);
    http_req_error(r, 503, "unavailable",
                   "the database is unavailable; try again");
    http_req_header(r, "Retry-After", "1");
}

/* Parses the body as a JSON object; answers 400 and returns NULL if it is
 * not one. */
static json_object *http_api_body(struct http_req *r)
{
    const char *why;
    json_object *o = proto_parse_object(r->body.data ? r->body.data : "",
                                        r->body.len, &why);
    if (o == NULL)
        http_req_error(r, 400, "invalid_json", "%s", why);
    return o;
}

static int http_api_field_error(struct http_req *r, json_object *o,
                                const char *field, const char *want)
{
    json_object_put(o);
    http_req_error(r, 400, "invalid_field", "'%s' must be %s", field, want);
    return WORKER_DONE;
}

/* ---- accounts ----------------------------------------------------------- */

static int http_api_register(struct http_req *r, struct store *s)
{
    json_object *o = http_api_body(r);
    const char *name, *pw;
    size_t nlen, plen;
    char hash[AUTH_HASH_MAX];
    struct util_buf b = { 0 };
    int64_t id;
    int rc;

    if (o == NULL)
        return WORKER_DONE;
    if (proto_get_string(o, "username", &name, &nlen) != 0)
        return http_api_field_error(r, o, "username", "a string");
    if (proto_get_string(o, "password", &pw, &plen) != 0)
        return http_api_field_error(r, o, "password", "a string");
    if (!proto_valid_username(name, nlen)) {
        json_object_put(o);
        http_req_error(r, 400, "invalid_username", "a username is 3 to 32 "
                       "characters of A-Z a-z 0-9 _ . -");
        return WORKER_DONE;
    }
    if (!proto_valid_password(pw, plen)) {
        json_object_put(o);
        http_req_error(r, 400, "weak_password",
                       "a password is 8 to 256 bytes of UTF-8");
        return WORKER_DONE;
    }
    if (auth_hash_password(pw, hash, sizeof hash) != 0) {
        json_object_put(o);
        http_req_error(r, 500, "internal_error", "could not hash the password");
        return WORKER_DONE;
    }
    rc = store_user_create(s, name, hash, util_now_ms(), &id);
    if (rc == STORE_CONFLICT) {
        http_req_error(r, 409, "username_taken", "that username is taken");
    } else if (rc != STORE_OK) {
        http_api_db_error(r, s, "user_create");
    } else {
        struct store_user_brief u = { .id = id };
        snprintf(u.username, sizeof u.username, "%s", name);
        proto_json_user(&b, &u);
        http_req_json(r, 201, &b);
        metrics_counter_inc(metrics_users_registered);
        log_event(LOG_INFO, "user_registration", r->trace_id,
                  LOG_INT("user_id", id), LOG_STR("username", name),
                  LOG_STR("remote", r->remote), LF_END);
    }
    explicit_bzero(hash, sizeof hash);
    json_object_put(o);
    return WORKER_DONE;
}

static void http_api_security(struct http_req *r, const char *kind,
                              const char *username, int failures)
{
    log_event(LOG_WARN, "security_event", r->trace_id, LOG_STR("kind", kind),
              LOG_STR("username", username), LOG_STR("remote", r->remote),
              LOG_INT("failures", failures), LF_END);
}

static void http_api_retry_after(struct http_req *r, int64_t until,
                                 int64_t now)
{
    int64_t secs = (until - now + 999) / 1000;
    http_req_error(r, 429, "too_many_attempts",
                   "too many failed logins; try again in %lld s",
                   (long long)(secs > 0 ? secs : 1));
    http_req_header(r, "Retry-After", "%lld", (long long)(secs > 0 ? secs : 1));
}

static int http_api_login(struct http_req *r, struct store *s)
{
    json_object *o = http_api_body(r);
    const char *name, *pw;
    size_t nlen, plen;
    struct store_user u;
    char token[AUTH_TOKEN_LEN + 1], ts[UTIL_TIME_LEN];
    uint8_t hash[AUTH_SHA256_LEN];
    struct util_buf b = { 0 };
    int64_t now = util_now_ms(), expires, sid;
    int rc;

    if (o == NULL)
        return WORKER_DONE;
    if (proto_get_string(o, "username", &name, &nlen) != 0)
        return http_api_field_error(r, o, "username", "a string");
    if (proto_get_string(o, "password", &pw, &plen) != 0)
        return http_api_field_error(r, o, "password", "a string");

    rc = proto_valid_username(name, nlen) ? store_user_by_name(s, name, &u)
                                          : STORE_NOTFOUND;
    if (rc == STORE_ERR) {
        json_object_put(o);
        http_api_db_error(r, s, "user_by_name");
        return WORKER_DONE;
    }
    if (rc == STORE_NOTFOUND) {
        /* The same work and the same answer as a wrong password. */
        auth_verify_dummy(pw);
        char shown[65];
        /* What was tried, cut to 64 bytes; the logger escapes it. */
        snprintf(shown, sizeof shown, "%s", name);
        http_api_security(r, "login_failed", shown, 0);
        http_req_error(r, 401, "invalid_credentials",
                       "wrong username or password");
        json_object_put(o);
        return WORKER_DONE;
    }
    if (u.locked_until > now) {
        http_api_security(r, "login_throttled", u.username, u.failed_logins);
        http_api_retry_after(r, u.locked_until, now);
        json_object_put(o);
        return WORKER_DONE;
    }
    if (!auth_verify_password(pw, u.password_hash)) {
        int failures = u.failed_logins + 1;
        int64_t until = auth_throttle_until(failures, now);
        if (store_user_set_throttle(s, u.id, failures, until) != STORE_OK) {
            json_object_put(o);
            http_api_db_error(r, s, "user_set_throttle");
            return WORKER_DONE;
        }
        http_api_security(r, "login_failed", u.username, failures);
        http_req_error(r, 401, "invalid_credentials",
                       "wrong username or password");
        json_object_put(o);
        return WORKER_DONE;
    }
    json_object_put(o);
    if (u.failed_logins != 0 &&
        store_user_set_throttle(s, u.id, 0, 0) != STORE_OK) {
        http_api_db_error(r, s, "user_set_throttle");
        return WORKER_DONE;
    }
    if (auth_token_new(token, hash) != 0) {
        http_req_error(r, 500, "internal_error", "no randomness available");
        return WORKER_DONE;
    }
    expires = now + (int64_t)r->api->cfg.session_ttl * 1000;
    if (store_session_create(s, u.id, hash, now, expires, &sid) != STORE_OK) {
        http_api_db_error(r, s, "session_create");
        explicit_bzero(token, sizeof token);
        return WORKER_DONE;
    }
    util_buf_puts(&b, "{\"token\":");
    util_buf_json_str(&b, token);
    util_buf_printf(&b, ",\"user_id\":%lld,\"username\":", (long long)u.id);
    util_buf_json_str(&b, u.username);
    util_buf_printf(&b, ",\"expires_at\":\"%s\"}",
                    util_format_time(expires, ts));
    http_req_json(r, 200, &b);
    http_req_header(r, "Set-Cookie",
                    "chat_session=%s; Path=/; Max-Age=%d; HttpOnly; "
                    "SameSite=Strict", token, r->api->cfg.session_ttl);
    explicit_bzero(token, sizeof token);
    metrics_counter_inc(metrics_users_logged_in);
    log_event(LOG_INFO, "user_login", r->trace_id, LOG_INT("user_id", u.id),
              LOG_STR("username", u.username), LOG_INT("session_id", sid),
              LOG_STR("remote", r->remote), LF_END);
    return WORKER_DONE;
}

static int http_api_logout(struct http_req *r, struct store *s)
{
    uint8_t hash[AUTH_SHA256_LEN];

    if (store_session_delete(s, r->session.session_id, util_now_ms()) ==
        STORE_ERR) {
        http_api_db_error(r, s, "session_delete");
        return WORKER_DONE;
    }
    /* The token reached here authenticated, so it hashes. */
    if (auth_token_hash(r->token, hash) == 0)
        cache_session_delete(hash);
    http_req_empty(r, 204);
    r->fin = HTTP_FIN_LOGOUT;
    http_req_header(r, "Set-Cookie", "chat_session=; Path=/; Max-Age=0; "
                    "HttpOnly; SameSite=Strict");
    log_event(LOG_INFO, "user_logout", r->trace_id,
              LOG_INT("user_id", r->session.user_id),
              LOG_INT("session_id", r->session.session_id), LF_END);
    return WORKER_DONE;
}

static int http_api_me(struct http_req *r, struct store *s)
{
    struct util_buf b = { 0 };
    struct store_user_brief u = { .id = r->session.user_id };

    snprintf(u.username, sizeof u.username, "%s", r->session.username);
    proto_json_user(&b, &u);
    http_req_json(r, 200, &b);
    return WORKER_DONE;
}

static int http_api_users(struct http_req *r, struct store *s)
{
    const char *prefix = http_req_arg(r, "prefix");
    struct store_user_brief *users = NULL;
    struct util_buf b = { 0 };
    size_t n = 0, plen;

    if (prefix == NULL)
        prefix = "";
    plen = strlen(prefix);
    /* A prefix no username can start with matches no one. */
    if (plen > PROTO_USERNAME_MAX ||
        strspn(prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
               "0123456789_.-") != plen) {
        util_buf_puts(&b, "{\"users\":[]}");
        http_req_json(r, 200, &b);
        return WORKER_DONE;
    }
    if (store_users_by_prefix(s, prefix, HTTP_USERS_LIMIT, &users, &n) !=
        STORE_OK) {
        http_api_db_error(r, s, "users_by_prefix");
        return WORKER_DONE;
    }
    /* The answer is built on the service thread, which knows who is
     * online. */
    r->users = users;
    r->nusers = n;
    /* With Redis, who is online is known cluster-wide: ask it here (a
     * worker may wait). Without it, or when it cannot answer, the service
     * thread answers from this node's sessions. */
    if (n && cache_enabled()) {
        int64_t *ids = xmalloc(n * sizeof *ids);
        size_t i;
        for (i = 0; i < n; i++)
            ids[i] = users[i].id;
        r->online = xcalloc(n, sizeof *r->online);
        if (cache_online(ids, n, r->online) != 0) {
            free(r->online);
            r->online = NULL;
        }
        free(ids);
    }
    r->fin = HTTP_FIN_USERS;
    r->status = 200;
    return WORKER_DONE;
}

static void http_api_users_answer(struct http_api *api, struct http_req *r)
{
    struct util_buf b = { 0 };
    size_t i;

    util_buf_puts(&b, "{\"users\":[");
    for (i = 0; i < r->nusers; i++) {
        int online = r->online ? r->online[i] :
                     api->chat && ws_chat_is_online(api->chat, r->users[i].id);
        if (i)
            util_buf_puts(&b, ",");
        util_buf_printf(&b, "{\"user_id\":%lld,\"username\":",
                        (long long)r->users[i].id);
        util_buf_json_str(&b, r->users[i].username);
        util_buf_printf(&b, ",\"online\":%s}", online ? "true" : "false");
    }
    util_buf_puts(&b, "]}");
    http_req_json(r, 200, &b);
}

/* ---- conversations ------------------------------------------------------ */

static int http_api_conv_create(struct http_req *r, struct store *s)
{
    json_object *o = http_api_body(r), *members, *title_obj;
    const char *title = NULL;
    const char *names[PROTO_MEMBERS_MAX];
    struct store_user_brief found[PROTO_MEMBERS_MAX];
    int64_t ids[PROTO_MEMBERS_MAX];
    struct store_conv conv;
    struct util_buf b = { 0 };
    size_t n, i, j, k = 0, missing = 0;
    int created = 0, rc;

    if (o == NULL)
        return WORKER_DONE;
    if (!json_object_object_get_ex(o, "members", &members) ||
        !json_object_is_type(members, json_type_array) ||
        (n = json_object_array_length(members)) == 0 ||
        n > PROTO_MEMBERS_MAX) {
        json_object_put(o);
        http_req_error(r, 400, "invalid_members", "'members' must be an array "
                       "of 1 to %d usernames", PROTO_MEMBERS_MAX);
        return WORKER_DONE;
    }
    if (json_object_object_get_ex(o, "title", &title_obj) &&
        !json_object_is_type(title_obj, json_type_null)) {
        if (!json_object_is_type(title_obj, json_type_string) ||
            json_object_get_string_len(title_obj) > PROTO_TITLE_MAX) {
            json_object_put(o);
            http_req_error(r, 400, "invalid_title", "'title' must be a string "
                           "of at most %d bytes", PROTO_TITLE_MAX);
            return WORKER_DONE;
        }
        title = json_object_get_string(title_obj);
        if (*title == '\0')
            title = NULL;
    }
    for (i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(members, i);
        const char *name;
        size_t len;
        if (!json_object_is_type(m, json_type_string)) {
            json_object_put(o);
            http_req_error(r, 400, "invalid_members",
                           "'members' must hold usernames (strings)");
            return WORKER_DONE;
        }
        name = json_object_get_string(m);
        len = (size_t)json_object_get_string_len(m);
        if (!proto_valid_username(name, len)) {
            http_req_error(r, 400, "invalid_username",
                           "'%.40s' is not a valid username", name);
            json_object_put(o);
            return WORKER_DONE;
        }
        if (strcasecmp(name, r->session.username) == 0)
            continue;                  /* the creator is implied */
        for (j = 0; j < k; j++)
            if (strcasecmp(names[j], name) == 0)
                break;
        if (j == k)
            names[k++] = name;
    }
    if (k == 0) {
        json_object_put(o);
        http_req_error(r, 400, "invalid_members",
                       "name at least one other user in 'members'");
        return WORKER_DONE;
    }
    rc = store_users_by_names(s, names, k, found, &missing);
    if (rc == STORE_NOTFOUND) {
        http_req_error(r, 404, "unknown_user", "no user named '%s'",
                       names[missing]);
        json_object_put(o);
        return WORKER_DONE;
    }
    if (rc != STORE_OK) {
        json_object_put(o);
        http_api_db_error(r, s, "users_by_names");
        return WORKER_DONE;
    }
    for (i = 0; i < k; i++)
        ids[i] = found[i].id;
    memset(&conv, 0, sizeof conv);
    rc = store_conv_create(s, r->session.user_id, ids, k, title, util_now_ms(),
                           &conv, &created);
    json_object_put(o);
    if (rc != STORE_OK) {
        http_api_db_error(r, s, "conv_create");
        return WORKER_DONE;
    }
    proto_json_conversation(&b, &conv, 0);
    http_req_json(r, created ? 201 : 200, &b);
    if (created) {
        log_event(LOG_INFO, "conversation_created", r->trace_id,
                  LOG_INT("conversation_id", conv.id),
                  LOG_INT("user_id", r->session.user_id),
                  LOG_STR("kind", conv.kind), LOG_INT("members", conv.nmembers),
                  LF_END);
        metrics_counter_inc(metrics_conversations_created);
        r->conv = conv;                 /* for the sockets of its members */
        r->fin = HTTP_FIN_CONV;
    } else {
        store_conv_clear(&conv);
    }
    return WORKER_DONE;
}

static int http_api_conv_list(struct http_req *r, struct store *s)
{
    struct store_conv *convs = NULL;
    struct util_buf b = { 0 };
    size_t n = 0, i;

    if (store_conv_list(s, r->session.user_id, &convs, &n) != STORE_OK) {
        http_api_db_error(r, s, "conv_list");
        return WORKER_DONE;
    }
    util_buf_puts(&b, "{\"conversations\":[");
    for (i = 0; i < n; i++) {
        if (i)
            util_buf_puts(&b, ",");
        proto_json_conversation(&b, &convs[i], 1);
    }
    util_buf_puts(&b, "]}");
    store_convs_free(convs, n);
    http_req_json(r, 200, &b);
    return WORKER_DONE;
}

/* Answers 403/404 for a conversation the user cannot see; 0 if a member. */
static int http_api_check_member(struct http_req *r, struct store *s,
                                 int rc)
{
    if (rc == STORE_OK)
        return 0;
    if (rc == STORE_FORBIDDEN)
        http_req_error(r, 403, "not_a_member",
                       "you are not a member of this conversation");
    else if (rc == STORE_NOTFOUND)
        http_req_error(r, 404, "not_found", "no such conversation");
    else
        http_api_db_error(r, s, "conv_member");
    return -1;
}

/* Parses an optional non-negative integer URI argument. */
static int http_api_seq_arg(struct http_req *r, const char *key, int64_t lo,
                            int64_t hi, int64_t *out)
{
    const char *v = http_req_arg(r, key);
    char *end;
    long long x;

    if (v == NULL || *v == '\0')
        return 0;
    errno = 0;
    x = strtoll(v, &end, 10);
    if (!isdigit((unsigned char)*v) || *end != '\0' || errno != 0 || x < lo ||
        x > hi) {
        http_req_error(r, 400, "invalid_parameter",
                       "'%s' must be an integer from %lld to %lld", key,
                       (long long)lo, (long long)hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int http_api_history(struct http_req *r, struct store *s)
{
    int64_t before = STORE_UNBOUNDED, after = STORE_UNBOUNDED;
    int64_t limit = HTTP_HISTORY_DEFAULT, last_seq;
    struct store_msg *msgs = NULL;
    struct util_buf b = { 0 };
    size_t n = 0, i;
    int has_more = 0;

    if (http_api_seq_arg(r, "before_seq", 0, INT64_MAX / 2, &before) != 0 ||
        http_api_seq_arg(r, "after_seq", 0, INT64_MAX / 2, &after) != 0 ||
        http_api_seq_arg(r, "limit", 1, HTTP_HISTORY_MAX, &limit) != 0)
        return WORKER_DONE;
    if (http_api_check_member(r, s, store_conv_member(s, r->path_id,
                              r->session.user_id, &last_seq)) != 0)
        return WORKER_DONE;
    if (store_history(s, r->path_id, before, after, (size_t)limit, &msgs, &n,
                      &has_more) != STORE_OK) {
        http_api_db_error(r, s, "history");
        return WORKER_DONE;
    }
    util_buf_puts(&b, "{\"messages\":[");
    for (i = 0; i < n; i++) {
        if (i)
            util_buf_puts(&b, ",");
        proto_json_message(&b, &msgs[i]);
    }
    util_buf_printf(&b, "],\"has_more\":%s}", has_more ? "true" : "false");
    store_msgs_free(msgs, n);
    http_req_json(r, 200, &b);
    return WORKER_DONE;
}

static int http_api_send(struct http_req *r, struct store *s)
{
    json_object *o = http_api_body(r);
    const char *body, *cmid;
    size_t blen, clen;

    if (o == NULL)
        return WORKER_DONE;
    if (proto_get_string(o, "body", &body, &blen) != 0)
        return http_api_field_error(r, o, "body", "a string");
    if (proto_get_string(o, "client_msg_id", &cmid, &clen) != 0 ||
        !proto_valid_client_msg_id(cmid, clen)) {
        json_object_put(o);
        http_req_error(r, 400, "invalid_client_msg_id", "'client_msg_id' must "
                       "be a string of 1 to %d characters",
                       PROTO_CLIENT_MSG_ID_MAX);
        return WORKER_DONE;
    }
    if (blen == 0) {
        json_object_put(o);
        http_req_error(r, 400, "empty_message", "a message needs a body");
        return WORKER_DONE;
    }
    if (blen > PROTO_BODY_MAX) {
        json_object_put(o);
        http_req_error(r, 413, "message_too_large", "a message body is at most "
                       "%d bytes", PROTO_BODY_MAX);
        return WORKER_DONE;
    }
    /* The strings must outlive the JSON object: keep copies in the request
     * (freed with it). */
    util_buf_free(&r->body);
    util_buf_append(&r->body, cmid, clen + 1);
    util_buf_append(&r->body, body, blen);
    json_object_put(o);

    memset(&r->send, 0, sizeof r->send);
    r->send.conversation_id = r->path_id;
    r->send.sender_id = r->session.user_id;
    r->send.client_msg_id = r->body.data;
    r->send.body = r->body.data + clen + 1;
    r->send.body_len = blen;
    r->send.now = util_now_ms();
    r->job.send = &r->send;
    r->job.op = "send_batch";
    r->awaiting_send = 1;
    if (worker_submit(r->api->store_pool, &r->job) != 0) {
        r->awaiting_send = 0;
        r->job.send = NULL;
        http_req_error(r, 503, "busy", "the server is busy; try again");
        http_req_header(r, "Retry-After", "1");
        return WORKER_DONE;
    }
    return WORKER_HANDED_ON;
}

static int http_api_read(struct http_req *r, struct store *s)
{
    json_object *o = http_api_body(r);
    int64_t seq, read_seq;
    int rc;

    if (o == NULL)
        return WORKER_DONE;
    rc = proto_get_int(o, "seq", &seq);
    json_object_put(o);
    if (rc != 0 || seq < 0) {
        http_req_error(r, 400, "invalid_seq",
                       "'seq' must be a non-negative integer");
        return WORKER_DONE;
    }
    rc = store_read_marker(s, r->session.user_id, r->path_id, seq,
                           util_now_ms(), &read_seq);
    if (http_api_check_member(r, s, rc == STORE_DUPLICATE ? STORE_OK : rc))
        return WORKER_DONE;
    http_req_empty(r, 204);
    if (rc == STORE_OK) {
        log_event(LOG_INFO, "message_read", r->trace_id,
                  LOG_INT("user_id", r->session.user_id),
                  LOG_INT("conversation_id", r->path_id),
                  LOG_INT("seq", read_seq), LOG_STR("via", "http"), LF_END);
        /* The marker moved: the members' sockets hear of it. */
        if (store_conv_member_ids(s, r->path_id, &r->job.members,
                                  &r->job.nmembers) == STORE_OK) {
            r->read_seq = read_seq;
            r->fin = HTTP_FIN_READ;
        }
    }
    return WORKER_DONE;
}

static int http_api_ready(struct http_req *r, struct store *s)
{
    struct util_buf b = { 0 };
    char redis[256];
    int db_ok = store_ping(s) == STORE_OK, redis_ok = 1, with_redis;

    /* Redis is checked when the node uses it (its bus threads keep the
     * connections; their state is what counts). */
    with_redis = r->api->chat &&
                 ws_chat_redis_status(r->api->chat, redis, sizeof redis) >= 0;
    if (with_redis)
        redis_ok = strcmp(redis, "ok") == 0;
    util_buf_printf(&b, "{\"status\":\"%s\",\"checks\":{\"database\":",
                    db_ok && redis_ok ? "ok" : "unavailable");
    util_buf_json_str(&b, db_ok ? "ok" : store_errstr(s));
    if (with_redis) {
        util_buf_puts(&b, ",\"redis\":");
        util_buf_json_str(&b, redis);
    }
    util_buf_puts(&b, "}}");
    http_req_json(r, db_ok && redis_ok ? 200 : 503, &b);
    return WORKER_DONE;
}

/* ---- the worker entry --------------------------------------------------- */

/* Runs on a worker thread: authenticates, then calls the route's handler. */
static int http_api_run(struct job *j, struct store *s)
{
    struct http_req *r = (struct http_req *)j;
    uint8_t hash[AUTH_SHA256_LEN];

    if (r->route->auth) {
        int rc = STORE_NOTFOUND;
        if (r->token[0] && auth_token_hash(r->token, hash) == 0)
            rc = store_session_lookup(s, hash, util_now_ms(), &r->session);
        if (rc == STORE_ERR) {
            http_api_db_error(r, s, "session_lookup");
            return WORKER_DONE;
        }
        if (rc != STORE_OK) {
            if (r->token[0])
                http_api_security(r, "bad_token", NULL, 0);
            http_req_error(r, 401, "unauthorized", "log in first");
            http_req_header(r, "WWW-Authenticate", "Bearer");
            return WORKER_DONE;
        }
    }
    return r->route->handler(r, s);
}

void http_api_finish(struct http_api *api, struct http_req *r)
{
    struct util_buf b = { 0 };

    switch (r->fin) {
    case HTTP_FIN_USERS:
        http_api_users_answer(api, r);
        break;
    case HTTP_FIN_READ:
        if (api->chat)
            ws_chat_read_moved(api->chat, r->session.user_id, r->path_id,
                               r->read_seq, r->job.members, r->job.nmembers,
                               0);
        break;
    case HTTP_FIN_LOGOUT:
        if (api->chat)
            ws_chat_logout(api->chat, r->session.user_id,
                           r->session.session_id);
        break;
    case HTTP_FIN_CONV:
        if (api->chat)
            ws_chat_conversation_created(api->chat, &r->conv);
        break;
    case HTTP_FIN_NONE:
        break;
    }
    if (!r->awaiting_send)
        return;
    r->awaiting_send = 0;
    switch (r->send.rc) {
    case STORE_OK:
    case STORE_DUPLICATE:
        proto_json_message(&b, &r->send.msg);
        http_req_json(r, r->send.rc == STORE_OK ? 201 : 200, &b);
        if (r->send.rc == STORE_OK) {
            log_event(LOG_INFO, "message_sent", r->trace_id,
                      LOG_INT("message_id", r->send.msg.message_id),
                      LOG_INT("conversation_id", r->send.msg.conversation_id),
                      LOG_INT("seq", r->send.msg.seq),
                      LOG_INT("sender_id", r->send.msg.sender_id),
                      LOG_STR("via", "http"), LF_END);
            metrics_counter_inc(metrics_messages_created);
            /* No socket sent it: every session of every member hears. */
            if (api->chat)
                ws_chat_message_stored(api->chat, &r->send.msg,
                                       r->job.members, r->job.nmembers, 0);
        }
        break;
    case STORE_FORBIDDEN:
        http_req_error(r, 403, "not_a_member",
                       "you are not a member of this conversation");
        break;
    case STORE_NOTFOUND:
        http_req_error(r, 404, "not_found", "no such conversation");
        break;
    default:
        http_req_error(r, 503, "unavailable",
                       "the message was not stored; try again");
        http_req_header(r, "Retry-After", "1");
    }
}

/* ---- routing (service thread) ------------------------------------------- */

/* Parses a positive decimal id at p, up to the next '/' or the end. */
static int64_t http_api_parse_id(const char *p, const char **end)
{
    int64_t v = 0;
    const char *q = p;

    while (*q >= '0' && *q <= '9') {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*q - '0');
        q++;
    }
    *end = q;
    return q == p || *p == '0' ? -1 : v;
}

/* Does r->path match route t? Sets *id for {id} routes. */
static int http_api_match(const struct http_route *t, const char *path,
                          int64_t *id)
{
    size_t pl = strlen(t->path);
    const char *end;

    if (t->suffix == NULL)
        return strcmp(path, t->path) == 0;
    if (strncmp(path, t->path, pl) != 0)
        return 0;
    *id = http_api_parse_id(path + pl, &end);
    return *id > 0 && strcmp(end, t->suffix) == 0;
}

/* Is path shaped like an {id} route with a bad id (zero, letters)? */
static int http_api_bad_id(const char *path)
{
    static const char pfx[] = "/api/conversations/";
    const char *p, *slash;

    if (strncmp(path, pfx, sizeof pfx - 1) != 0)
        return 0;
    p = path + sizeof pfx - 1;
    slash = strchr(p, '/');
    return slash != NULL &&
           (strcmp(slash, "/messages") == 0 || strcmp(slash, "/read") == 0);
}

static void http_api_static(struct http_api *api, struct http_req *r)
{
    size_t i;

    for (i = 0; i < sizeof api->statics / sizeof api->statics[0]; i++) {
        struct http_static *st = &api->statics[i];
        if (strcmp(st->path, r->path) != 0)
            continue;
        http_req_header(r, "ETag", "%s", st->etag);
        http_req_header(r, "Cache-Control", "no-cache");
        http_req_header(r, "Content-Security-Policy",
                        "default-src 'self'; script-src 'self'; "
                        "style-src 'self'; img-src 'self' data:; "
                        "connect-src 'self'; frame-ancestors 'none'; "
                        "base-uri 'none'; form-action 'self'");
        http_req_header(r, "Referrer-Policy", "no-referrer");
        if (r->if_none_match[0] && strcmp(r->if_none_match, st->etag) == 0) {
            http_req_empty(r, 304);
            return;
        }
        free(r->resp);
        r->resp = NULL;
        r->status = 200;
        r->content_type = st->type;
        r->resp_static = st->data;
        r->resp_len = st->len;
        return;
    }
    http_req_error(r, 404, "not_found", "no such page");
}

int http_api_handle(struct http_api *api, struct http_req *r)
{
    const struct http_route *t = NULL;
    char allow[64] = "";
    size_t i;
    int64_t id = 0;

    r->api = api;
    r->route_name = "other";
    for (i = 0; i < HTTP_NROUTES; i++) {
        if (!http_api_match(&http_routes[i], r->path, &id))
            continue;
        r->route_name = http_routes[i].name;
        if (http_routes[i].method == r->method ||
            (r->method == HTTP_HEAD && http_routes[i].method == HTTP_GET &&
             http_routes[i].handler == NULL)) {
            t = &http_routes[i];
            break;
        }
        if (!strstr(allow, http_method_names[http_routes[i].method])) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, http_method_names[http_routes[i].method]);
        }
    }
    if (t == NULL) {
        if (allow[0]) {
            http_req_error(r, 405, "method_not_allowed",
                           "this path takes %s", allow);
            http_req_header(r, "Allow", "%s", allow);
        } else {
            if (http_api_bad_id(r->path))
                r->route_name = "/api/conversations/{id}";
            http_req_error(r, 404, "not_found", "no such resource");
        }
        return 1;
    }
    r->route = t;
    r->path_id = id;
    if (r->too_large) {
        http_req_error(r, 413, "payload_too_large",
                       "a request body is at most %d bytes", HTTP_BODY_MAX);
        r->close_after = 1;
        return 1;
    }
    if (t->handler == NULL) {
        if (strcmp(t->path, "/health") == 0) {
            r->status = 200;
            r->content_type = "application/json";
            r->resp_static = "{\"status\":\"ok\"}";
            r->resp_len = strlen(r->resp_static);
        } else if (strcmp(t->path, "/metrics") == 0) {
            /* Counters are atomics and the collector's gauges a ready
             * snapshot: rendering waits on nothing. */
            free(r->resp);
            r->resp = metrics_render(&r->resp_len);
            r->status = 200;
            r->content_type = METRICS_CONTENT_TYPE;
        } else {
            http_api_static(api, r);
        }
        return 1;
    }
    /* Without a credential an authenticated route needs no database. */
    if (t->auth && r->token[0] == '\0') {
        http_req_error(r, 401, "unauthorized", "log in first");
        http_req_header(r, "WWW-Authenticate", "Bearer");
        return 1;
    }
    r->job.run = http_api_run;
    r->job.op = t->op;
    snprintf(r->job.trace_id, sizeof r->job.trace_id, "%s", r->trace_id);
    if (worker_submit(api->workers, &r->job) != 0) {
        http_req_error(r, 503, "busy", "the server is busy; try again");
        http_req_header(r, "Retry-After", "1");
        return 1;
    }
    return 0;
}

/* ---- setup -------------------------------------------------------------- */

static int http_api_load(struct http_api *api, struct http_static *st,
                         char *err, size_t errlen)
{
    char path[4096];
    uint8_t digest[AUTH_SHA256_LEN];
    char hex[17];
    FILE *f;
    long len;

    snprintf(path, sizeof path, "%s/web/%s", api->cfg.data_dir, st->file);
    f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read the browser client %s: %s "
                 "(set --data-dir)", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    st->data = xmalloc((size_t)(len > 0 ? len : 0) + 1);
    st->len = len > 0 ? fread(st->data, 1, (size_t)len, f) : 0;
    st->data[st->len] = '\0';
    fclose(f);
    auth_sha256(st->data, st->len, digest);
    util_hex(digest, 8, hex);
    snprintf(st->etag, sizeof st->etag, "\"%s\"", hex);
    return 0;
}

struct http_api *http_api_create(const struct http_api_config *cfg,
                                 struct worker_pool *workers,
                                 struct worker_pool *store_pool, char *err,
                                 size_t errlen)
{
    static const struct http_static statics[] = {
        { "/", "index.html", "text/html; charset=utf-8", NULL, 0, "" },
        { "/app.js", "app.js", "text/javascript; charset=utf-8", NULL, 0, "" },
        { "/app.css", "app.css", "text/css; charset=utf-8", NULL, 0, "" },
    };
    struct http_api *api = xcalloc(1, sizeof *api);
    size_t i;

    api->cfg = *cfg;
    api->workers = workers;
    api->store_pool = store_pool;
    memcpy(api->statics, statics, sizeof statics);
    for (i = 0; i < sizeof statics / sizeof statics[0]; i++)
        if (http_api_load(api, &api->statics[i], err, errlen) != 0) {
            http_api_free(api);
            return NULL;
        }
    return api;
}

void http_api_free(struct http_api *api)
{
    size_t i;

    if (api == NULL)
        return;
    for (i = 0; i < sizeof api->statics / sizeof api->statics[0]; i++)
        free(api->statics[i].data);
    free(api);
}
