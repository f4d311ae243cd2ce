/*
 * server.c - the service thread: one libwebsockets context serving HTTP
 * (and, through its own protocol, WebSocket) on one port.
 *
 * The loop is libuv's (epoll): lws on its default poll() loop hands the
 * kernel every socket on every wakeup, which with thousands of sockets
 * costs more than the traffic (docs/benchmarks.md). The loop is ours,
 * lent to lws, and run one turn at a time so that the drain logic can
 * look at the state between turns.
 *
 * Design: the lws loop never blocks. An HTTP request is read into a struct
 * http_req (headers at LWS_CALLBACK_HTTP, body chunks after), handed to
 * http_api_handle(), and either answered at once or queued on a worker
 * pool. Workers put finished jobs in a sink and call lws_cancel_service();
 * the loop picks them up in LWS_CALLBACK_EVENT_WAIT_CANCELLED and asks for
 * WRITEABLE on their connection. Each WRITEABLE callback does one lws_write:
 * the headers first, then the body in chunks.
 *
 * A connection that closes while its request is in a pool leaves the
 * request orphaned (conn = NULL); it is freed when the job comes back.
 *
 * Thread: everything here runs on the service thread, except
 * server_notify() and server_stop(), which any thread (or a signal
 * handler) may call.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libwebsockets.h>
#include <uv.h>

#include "auth.h"
#include "http_api.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "ws_chat.h"

#define SERVER_CHUNK 65536
#define SERVER_DRAIN_NS (8LL * 1000000000)
/* A body over HTTP_BODY_MAX but not over this is read (and dropped)
 * before the 413. */
#define SERVER_DRAIN_BODY_MAX (1024 * 1024)

enum server_phase { SERVER_READING = 0, SERVER_WAITING, SERVER_HEADERS,
                    SERVER_BODY };

/* Per HTTP connection; lws owns the memory (never freed here). */
struct server_conn {
    struct lws *wsi;
    struct http_req *req;         /* the request being served, or NULL */
    enum server_phase phase;
    size_t sent;                  /* body bytes written */
};

struct server {
    struct lws_context *context;
    struct http_api *api;
    struct ws_chat *chat;
    struct lws_protocols protocols[3];
    struct worker_sink *sink;
    const struct config *cfg;
    atomic_int stopping;
    int64_t stop_ns;              /* when the stop began */
    size_t inflight;              /* requests in a pool */
    size_t pending;               /* requests not yet answered in full */
    struct lws_sorted_usec_list sul_drain;
    uv_loop_t loop;               /* lent to lws */
};

static _Atomic(struct lws_context *) server_context;
static struct server *server_self;    /* the service thread's server */
static unsigned char server_chunk[LWS_PRE + SERVER_CHUNK];

void server_notify(void *arg)
{
    struct lws_context *c = atomic_load(&server_context);
    (void)arg;
    if (c)
        lws_cancel_service(c);
}

void server_stop(struct server *srv)
{
    atomic_store(&srv->stopping, 1);
    server_notify(NULL);
}

static void server_new_trace_id(char *out)
{
    uint8_t raw[16];

    if (auth_random(raw, sizeof raw) != 0)
        memset(raw, 0, sizeof raw);
    util_hex(raw, sizeof raw, out);
}

/* Takes the client's X-Request-Id if it is 1..64 of [A-Za-z0-9._-]. */
static void server_trace_id(struct lws *wsi, char out[72])
{
    char v[80];
    int n = lws_hdr_custom_length(wsi, "x-request-id:", 13);

    if (n > 0 && n <= 64 &&
        lws_hdr_custom_copy(wsi, v, sizeof v, "x-request-id:", 13) == n &&
        strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
               "0123456789._-") == (size_t)n) {
        memcpy(out, v, (size_t)n + 1);
        return;
    }
    server_new_trace_id(out);
}

static void server_http_job_done(struct job *j);

static enum http_method server_method(struct lws *wsi)
{
    static const struct {
        enum lws_token_indexes tok;
        enum http_method m;
    } map[] = {
        { WSI_TOKEN_GET_URI, HTTP_GET }, { WSI_TOKEN_POST_URI, HTTP_POST },
        { WSI_TOKEN_PUT_URI, HTTP_PUT }, { WSI_TOKEN_PATCH_URI, HTTP_PATCH },
        { WSI_TOKEN_DELETE_URI, HTTP_DELETE },
        { WSI_TOKEN_OPTIONS_URI, HTTP_OPTIONS },
        { WSI_TOKEN_HEAD_URI, HTTP_HEAD },
    };
    size_t i;

    for (i = 0; i < sizeof map / sizeof map[0]; i++)
        if (lws_hdr_total_length(wsi, map[i].tok) > 0)
            return map[i].m;
    return HTTP_OTHER;
}

/* The credential: "Authorization: Bearer T", else the chat_session cookie.
 * Only a well-formed token is kept; anything else counts as none. */
static void server_credential(struct lws *wsi, struct http_req *r)
{
    char v[512];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);

    r->token[0] = '\0';
    if (n > 0 && n < (int)sizeof v &&
        lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_AUTHORIZATION) > 0) {
        if (strncasecmp(v, "Bearer ", 7) == 0) {
            const char *t = v + 7;
            while (*t == ' ')
                t++;
            if (strlen(t) < sizeof r->token)
                snprintf(r->token, sizeof r->token, "%s", t);
        }
        /* A bad Authorization header is not overridden by a cookie. */
        if (r->token[0] == '\0')
            snprintf(r->token, sizeof r->token, "-");
        return;
    }
    n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_COOKIE);
    if (n > 0 && n < (int)sizeof v &&
        lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_COOKIE) > 0) {
        char *save = NULL, *c;
        for (c = strtok_r(v, ";", &save); c; c = strtok_r(NULL, ";", &save)) {
            while (*c == ' ')
                c++;
            if (strncmp(c, "chat_session=", 13) == 0 &&
                strlen(c + 13) < sizeof r->token) {
                snprintf(r->token, sizeof r->token, "%s", c + 13);
                r->token_from_cookie = 1;
                break;
            }
        }
    }
}

static long server_content_length(struct lws *wsi)
{
    char v[32];
    char *end;
    long n;

    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return -1;
    if (lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return -2;
    n = strtol(v, &end, 10);
    if (end == v || *end != '\0' || n < 0)
        return -2;
    return n;
}

static struct http_req *server_req_new(struct server *srv,
                                       struct server_conn *pc, const char *uri)
{
    struct http_req *r = xcalloc(1, sizeof *r);
    int i;

    r->conn = pc;
    r->start_ns = util_mono_ns();
    r->method = server_method(pc->wsi);
    snprintf(r->path, sizeof r->path, "%s", uri ? uri : "/");
    server_trace_id(pc->wsi, r->trace_id);
    lws_get_peer_simple(pc->wsi, r->remote, sizeof r->remote);
    for (i = 0; i < (int)(sizeof r->args / sizeof r->args[0]); i++) {
        if (lws_hdr_copy_fragment(pc->wsi, r->args[i], sizeof r->args[0],
                                  WSI_TOKEN_HTTP_URI_ARGS, i) <= 0)
            break;
        r->nargs++;
    }
    server_credential(pc->wsi, r);
    if (lws_hdr_total_length(pc->wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0)
        lws_hdr_copy(pc->wsi, r->if_none_match, sizeof r->if_none_match,
                     WSI_TOKEN_HTTP_IF_NONE_MATCH);
    r->job.done = server_http_job_done;
    srv->pending++;
    return r;
}

/* The response is set: write it from the next WRITEABLE callbacks. */
static void server_respond(struct server_conn *pc)
{
    pc->phase = SERVER_HEADERS;
    pc->sent = 0;
    lws_callback_on_writable(pc->wsi);
}

static void server_dispatch(struct server *srv, struct server_conn *pc)
{
    struct http_req *r = pc->req;

    if (atomic_load(&srv->stopping)) {
        http_req_error(r, 503, "shutting_down", "the server is stopping");
        r->close_after = 1;
        server_respond(pc);
        return;
    }
    if (http_api_handle(srv->api, r)) {
        server_respond(pc);
        return;
    }
    pc->phase = SERVER_WAITING;
    srv->inflight++;
}

static void server_log_request(struct http_req *r)
{
    double ms = (double)(util_mono_ns() - r->start_ns) / 1e6;
    static const char *const names[] = { "OTHER", "GET", "POST", "PUT",
                                         "PATCH", "DELETE", "OPTIONS", "HEAD" };
    const char *route = r->route_name ? r->route_name : "other";

    metrics_observe_http(names[r->method], route, r->status, ms / 1000.0);
    if (r->status >= 400)
        metrics_counter_inc(metrics_child(metrics_errors, (const char *[]){
            r->error_code ? r->error_code : "http_error", route }));

    log_event(LOG_INFO, "api_request", r->trace_id,
              LOG_STR("method", names[r->method]),
              LOG_STR("route", r->route_name ? r->route_name : "other"),
              LOG_INT("status", r->status), LOG_DBL("duration_ms", ms),
              LOG_STR("remote", r->remote), LF_END);
    if (r->status >= 400)
        log_event(r->status >= 500 ? LOG_ERROR : LOG_WARN, "api_error",
                  r->trace_id, LOG_STR("method", names[r->method]),
                  LOG_STR("route", r->route_name ? r->route_name : "other"),
                  LOG_INT("status", r->status),
                  LOG_STR("code", r->error_code ? r->error_code : ""), LF_END);
}

static int server_write_headers(struct server_conn *pc)
{
    struct http_req *r = pc->req;
    unsigned char *start = server_chunk + LWS_PRE, *p = start;
    unsigned char *end = server_chunk + sizeof server_chunk - 1;
    int i, bodyless = r->status == 204 || r->status == 304;

    if (bodyless) {
        if (lws_add_http_header_status(pc->wsi, (unsigned)r->status, &p, end))
            return -1;
    } else if (lws_add_http_common_headers(pc->wsi, (unsigned)r->status,
                                           r->content_type, r->resp_len, &p,
                                           end)) {
        return -1;
    }
    if (lws_add_http_header_by_name(pc->wsi, (const unsigned char *)
                                    "x-request-id:",
                                    (const unsigned char *)r->trace_id,
                                    (int)strlen(r->trace_id), &p, end) ||
        lws_add_http_header_by_name(pc->wsi, (const unsigned char *)
                                    "x-content-type-options:",
                                    (const unsigned char *)"nosniff", 7, &p,
                                    end))
        return -1;
    if (r->content_type && strcmp(r->content_type, "application/json") == 0 &&
        lws_add_http_header_by_name(pc->wsi, (const unsigned char *)
                                    "cache-control:",
                                    (const unsigned char *)"no-store", 8, &p,
                                    end))
        return -1;
    for (i = 0; i < r->nhdr; i++) {
        char name[40];
        snprintf(name, sizeof name, "%s:", r->hdr_name[i]);
        if (lws_add_http_header_by_name(pc->wsi, (const unsigned char *)name,
                                        (const unsigned char *)r->hdr_value[i],
                                        (int)strlen(r->hdr_value[i]), &p, end))
            return -1;
    }
    if (r->close_after &&
        lws_add_http_header_by_name(pc->wsi, (const unsigned char *)
                                    "connection:",
                                    (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_write_http_header(pc->wsi, start, &p, end))
        return -1;
    return 0;
}

/* Ends the transaction: logs it, frees the request, and says whether the
 * connection must close (-1) or may carry the next request (0). */
static int server_finish(struct server *srv, struct server_conn *pc)
{
    struct http_req *r = pc->req;
    int close_after = r->close_after;

    server_log_request(r);
    http_req_free(r);
    pc->req = NULL;
    srv->pending--;
    pc->phase = SERVER_READING;
    if (close_after)
        return -1;
    return lws_http_transaction_completed(pc->wsi) ? -1 : 0;
}

static int server_writeable(struct server *srv, struct server_conn *pc)
{
    struct http_req *r = pc->req;
    const char *body;
    size_t n;
    int final;

    if (r == NULL)
        return 0;
    if (pc->phase == SERVER_HEADERS) {
        if (server_write_headers(pc) != 0)
            return -1;
        if (r->status == 204 || r->status == 304 || r->resp_len == 0 ||
            r->method == HTTP_HEAD)
            return server_finish(srv, pc);
        pc->phase = SERVER_BODY;
        lws_callback_on_writable(pc->wsi);
        return 0;
    }
    if (pc->phase != SERVER_BODY)
        return 0;
    body = r->resp_static ? r->resp_static : r->resp;
    n = r->resp_len - pc->sent;
    if (n > SERVER_CHUNK)
        n = SERVER_CHUNK;
    final = pc->sent + n == r->resp_len;
    memcpy(server_chunk + LWS_PRE, body + pc->sent, n);
    if (lws_write(pc->wsi, server_chunk + LWS_PRE, n,
                  final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
        return -1;
    pc->sent += n;
    if (final)
        return server_finish(srv, pc);
    lws_callback_on_writable(pc->wsi);
    return 0;
}

/* An HTTP job came back from a pool: answer its request, if anyone still
 * waits. */
static void server_http_job_done(struct job *j)
{
    struct server *srv = server_self;
    struct http_req *r = (struct http_req *)j;
    struct server_conn *pc = r->conn;

    srv->inflight--;
    http_api_finish(srv->api, r);
    if (pc == NULL) {           /* the client went away meanwhile */
        http_req_free(r);
        srv->pending--;
        return;
    }
    server_respond(pc);
}

/* Answers every finished job (HTTP or WebSocket: each knows its done
 * callback), then delivers what the bus holds. */
static void server_drain_sink(struct server *srv)
{
    struct job *j = worker_sink_take(srv->sink), *next;

    for (; j; j = next) {
        next = j->next;
        j->done(j);
    }
    if (srv->chat)
        ws_chat_poll(srv->chat);
}

static int server_http_begin(struct server *srv, struct server_conn *pc,
                             const char *uri)
{
    long clen;
    int te;

    if (pc->req) {              /* a pipelined request before we answered */
        return -1;
    }
    pc->req = server_req_new(srv, pc, uri);
    pc->phase = SERVER_READING;
    te = lws_hdr_total_length(pc->wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    clen = server_content_length(pc->wsi);
    if (te || clen == -2) {
        /* Both lengths (request smuggling) or a chunked body we do not
         * read: refuse, and close so no body bytes are taken as a request. */
        http_req_error(pc->req, 400, "bad_request", te && clen >= 0
                       ? "Content-Length together with Transfer-Encoding"
                       : te ? "send a Content-Length body, not chunked"
                            : "invalid Content-Length");
        pc->req->close_after = 1;
        server_respond(pc);
        return 0;
    }
    if (clen > HTTP_BODY_MAX) {
        pc->req->too_large = 1;
        pc->req->close_after = 1;
        /* Up to SERVER_DRAIN_BODY_MAX, the body is read and dropped before
         * the 413: a proxy still writing it would otherwise meet a closed
         * socket and answer 502 instead of our 413. */
        if (clen <= SERVER_DRAIN_BODY_MAX)
            return 0;
        server_dispatch(srv, pc);
        return 0;
    }
    if (clen > 0)
        return 0;               /* the body follows */
    server_dispatch(srv, pc);
    return 0;
}

static int server_http_body(struct server *srv, struct server_conn *pc,
                            const void *in, size_t len)
{
    struct http_req *r = pc->req;

    if (r == NULL || pc->phase != SERVER_READING || r->too_large)
        return 0;               /* answered already, or to be 413: discard */
    if (r->body.len + len > HTTP_BODY_MAX) {
        r->too_large = 1;
        r->close_after = 1;
        server_dispatch(srv, pc);
        return 0;
    }
    util_buf_append(&r->body, in, len);
    return 0;
}

static void server_closed(struct server *srv, struct server_conn *pc)
{
    struct http_req *r = pc->req;

    if (r == NULL)
        return;
    pc->req = NULL;
    if (pc->phase == SERVER_WAITING) {
        r->conn = NULL;         /* freed when its job comes back */
        return;
    }
    http_req_free(r);
    srv->pending--;
}

static int server_http_cb(struct lws *wsi, enum lws_callback_reasons reason,
                          void *user, void *in, size_t len)
{
    struct server *srv = lws_context_user(lws_get_context(wsi));
    struct server_conn *pc = user;

    /* A WebSocket upgrade that did not ask for chat.v1 lands here, on the
     * default protocol: refuse it. */
    if (reason == LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION) {
        lws_return_http_status(wsi, 400, "use the chat.v1 subprotocol");
        return 1;
    }
    /* lws may refuse a malformed request (and close it) before any
     * per-connection state exists: then there is nothing of ours. */
    if (pc == NULL && reason != LWS_CALLBACK_EVENT_WAIT_CANCELLED)
        return lws_callback_http_dummy(wsi, reason, user, in, len);

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        pc->wsi = wsi;
        return server_http_begin(srv, pc, in);
    case LWS_CALLBACK_HTTP_BODY:
        return server_http_body(srv, pc, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pc->req && pc->phase == SERVER_READING)
            server_dispatch(srv, pc);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return server_writeable(srv, pc);
    case LWS_CALLBACK_CLOSED_HTTP:
        server_closed(srv, pc);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (srv)
            server_drain_sink(srv);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}


/* lws's own log lines become structured events. */
static void server_lws_log(int level, const char *line)
{
    char msg[512];
    size_t n;

    snprintf(msg, sizeof msg, "%s", line);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_event(level == LLL_ERR ? LOG_ERROR : LOG_WARN, "lws", NULL,
              LOG_STR("message", msg), LF_END);
}

/* Tries to bind host:port the way lws will, so that a busy or foreign
 * address is a clear one-line error before lws starts (lws logs its own
 * lines and fails less cleanly). 0 if the address is free. */
static int server_probe_listen(const char *host, int port, char *err,
                               size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, one = 1, rc;

    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        sl = sizeof *a;
    } else if (inet_pton(AF_INET6, host,
                         &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        sl = sizeof *a;
    } else {
        snprintf(err, errlen, "cannot listen on %s:%d: give an IP address "
                 "such as 127.0.0.1 or 0.0.0.0", host, port);
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    rc = bind(fd, (struct sockaddr *)&ss, sl);
    if (rc != 0)
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port,
                 strerror(errno));
    close(fd);
    return rc == 0 ? 0 : -1;
}

struct server *server_create(const struct config *cfg, struct http_api *api,
                             struct ws_chat *chat, struct worker_sink *sink,
                             char *err, size_t errlen)
{
    struct lws_context_creation_info info;
    struct server *srv;
    void *loops[1];

    if (server_probe_listen(cfg->listen_host, cfg->listen_port, err,
                            errlen) != 0)
        return NULL;
    srv = xcalloc(1, sizeof *srv);
    srv->cfg = cfg;
    srv->api = api;
    srv->chat = chat;
    srv->sink = sink;
    srv->protocols[0].name = "http";
    srv->protocols[0].callback = server_http_cb;
    srv->protocols[0].per_session_data_size = sizeof(struct server_conn);
    if (chat)
        ws_chat_protocol(chat, &srv->protocols[1]);
    server_self = srv;
    lws_set_log_level(LLL_ERR | LLL_WARN, server_lws_log);

    memset(&info, 0, sizeof info);
    info.port = cfg->listen_port;
    info.iface = cfg->listen_host;
    info.protocols = srv->protocols;
    info.user = srv;
    info.max_http_header_data = 8192;
    info.keepalive_timeout = 30;
    info.timeout_secs = 30;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
                   LWS_SERVER_OPTION_DISABLE_IPV6;
    if (strchr(cfg->listen_host, ':'))
        info.options &= ~(uint64_t)LWS_SERVER_OPTION_DISABLE_IPV6;
    info.options |= LWS_SERVER_OPTION_LIBUV;
    if (uv_loop_init(&srv->loop) != 0) {
        snprintf(err, errlen, "cannot start the event loop");
        free(srv);
        return NULL;
    }
    loops[0] = &srv->loop;
    info.foreign_loops = loops;
    info.pcontext = &srv->context;   /* NULLed once wholly destroyed */
    srv->context = lws_create_context(&info);
    if (srv->context == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or "
                 "not available, or libwebsockets lacks its libuv event "
                 "library)", cfg->listen_host, cfg->listen_port);
        uv_run(&srv->loop, UV_RUN_NOWAIT);   /* whatever lws opened */
        uv_loop_close(&srv->loop);
        free(srv);
        return NULL;
    }
    atomic_store(&server_context, srv->context);
    if (chat)
        ws_chat_set_context(chat, srv->context);
    return srv;
}

/* While stopping, wakes the loop every 50 ms so the drain deadline holds
 * even when nothing else happens. */
static void server_drain_tick(lws_sorted_usec_list_t *sul)
{
    struct server *srv = lws_container_of(sul, struct server, sul_drain);

    lws_sul_schedule(srv->context, 0, &srv->sul_drain, server_drain_tick,
                     50 * LWS_US_PER_MS);
}

/* Stopping, in order: new requests and sockets are refused; what is in
 * flight (HTTP requests, WebSocket sends) is answered; then every socket
 * is closed with 1001 and the loop runs until they are gone. Bounded by
 * SERVER_DRAIN_NS in all. */
int server_run(struct server *srv)
{
    int closing_sockets = 0;

    for (;;) {
        int64_t now;

        uv_run(&srv->loop, UV_RUN_ONCE);
        if (!atomic_load(&srv->stopping))
            continue;
        now = util_mono_ns();
        if (srv->stop_ns == 0) {
            srv->stop_ns = now;
            server_drain_tick(&srv->sul_drain);
            if (srv->chat)
                ws_chat_stop_accepting(srv->chat);
        }
        server_drain_sink(srv);
        if (now - srv->stop_ns > SERVER_DRAIN_NS)
            break;
        if (srv->pending > 0 || (srv->chat && ws_chat_inflight(srv->chat)))
            continue;
        if (srv->chat && !closing_sockets) {
            ws_chat_close_all(srv->chat, 1001, "server shutting down");
            closing_sockets = 1;
        }
        if (srv->chat == NULL || ws_chat_connections(srv->chat) == 0)
            break;
    }
    return 0;
}

size_t server_inflight(const struct server *srv)
{
    return srv->inflight;
}

void server_free(struct server *srv)
{
    if (srv == NULL)
        return;
    atomic_store(&server_context, NULL);
    lws_context_destroy(srv->context);
    /* lws closes its handles on our loop: let them finish, then finish
     * the destruction (a context on a foreign loop is destroyed in two
     * steps), then close the loop */
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    if (srv->context)
        lws_context_destroy(srv->context);
    uv_loop_close(&srv->loop);
    free(srv);
}
