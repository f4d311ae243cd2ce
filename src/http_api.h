/*
 * http_api.h - the HTTP routes of the protocol: /api/..., /health, /ready
 * and the static browser client.
 *
 * server.c owns the connection and calls http_api_handle() on the service
 * thread once a request (with its body) is in. A route either answers at
 * once (validation errors, /health, static files) or queues a job on a
 * worker pool; the job's run callback does the database work on a worker
 * thread and fills in the response, and server.c writes it when the job
 * comes back. Nothing here blocks the service thread.
 *
 * A struct http_req is owned by the service thread; while its job is in a
 * pool (inflight) only the worker touches the job and response fields.
 */
#ifndef CHATD_HTTP_API_H
#define CHATD_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define HTTP_BODY_MAX 65536
#define HTTP_MAX_HEADERS 8

enum http_method {
    HTTP_OTHER = 0, HTTP_GET, HTTP_POST, HTTP_PUT, HTTP_PATCH, HTTP_DELETE,
    HTTP_OPTIONS, HTTP_HEAD,
};

struct http_api;
struct http_route;

struct http_req {
    struct job job;               /* first: the worker's view */
    /* Request, set by server.c on the service thread. */
    void *conn;                   /* the server's connection; NULL if gone */
    enum http_method method;
    char path[512];
    char args[8][160];            /* URI args "k=v", url-decoded by lws */
    int nargs;
    char token[AUTH_TOKEN_LEN + 8]; /* bearer token or cookie, if any */
    int token_from_cookie;
    char trace_id[72];
    char remote[64];
    struct util_buf body;
    int64_t start_ns;
    int too_large;                /* the body passed HTTP_BODY_MAX */
    /* Routing. */
    const struct http_route *route;
    const char *route_name;       /* template, for logs and metrics */
    int64_t path_id;              /* {id} in the path */
    struct http_api *api;
    /* Auth and route state filled by the worker. */
    struct store_session session;
    struct store_send send;
    int awaiting_send;            /* handed to the store thread */
    /* What the service thread does when the job comes back, beyond
     * writing the response: fan-out, closing sockets, presence. */
    enum { HTTP_FIN_NONE = 0, HTTP_FIN_READ, HTTP_FIN_LOGOUT, HTTP_FIN_CONV,
           HTTP_FIN_USERS } fin;
    int64_t read_seq;
    struct store_conv conv;
    struct store_user_brief *users;
    size_t nusers;
    int *online;                  /* from Redis, or NULL */
    char if_none_match[80];       /* for the static client's ETag */
    /* Response. */
    int status;
    const char *content_type;     /* static string */
    char *resp;                   /* owned */
    size_t resp_len;
    const char *resp_static;      /* static body instead of resp */
    const char *error_code;       /* for the api_error log */
    char hdr_name[HTTP_MAX_HEADERS][32];
    char hdr_value[HTTP_MAX_HEADERS][320];
    int nhdr;
    int close_after;              /* close the connection after answering */
};

struct http_api_config {
    const char *data_dir;
    int session_ttl;
};

/* Creates the route handler; loads the browser client from data_dir/web
 * into memory (so serving it never touches the disk). NULL with err set if
 * the client files cannot be read. */
struct http_api *http_api_create(const struct http_api_config *cfg,
                                 struct worker_pool *workers,
                                 struct worker_pool *store_pool, char *err,
                                 size_t errlen);
void http_api_free(struct http_api *api);

/* Service thread: the request is complete. Returns 1 if the response is
 * ready now, 0 if a job was queued (its done callback answers). */
int http_api_handle(struct http_api *api, struct http_req *r);

/* Sets an error response {"error":{"code","message"}}. */
void http_req_error(struct http_req *r, int status, const char *code,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Sets a JSON response, taking ownership of the buffer's data. */
void http_req_json(struct http_req *r, int status, struct util_buf *b);
/* Adds a response header (name without the colon). */
void http_req_header(struct http_req *r, const char *name, const char *fmt,
                     ...) __attribute__((format(printf, 3, 4)));
/* The value of URI argument key, or NULL. */
const char *http_req_arg(const struct http_req *r, const char *key);

void http_req_free(struct http_req *r);

/* Service thread: a job of this request came back from a pool; completes
 * the response (a send's answer is built here from its result) and tells
 * the WebSocket side what must reach sockets. */
void http_api_finish(struct http_api *api, struct http_req *r);

struct ws_chat;
/* The WebSocket side that HTTP actions reach (may stay unset in tests). */
void http_api_set_chat(struct http_api *api, struct ws_chat *chat);

#endif
