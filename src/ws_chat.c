/*
 * ws_chat.c - the chat.v1 WebSocket protocol. See ws_chat.h.
 *
 * Life of a socket: the handshake is checked against the Origin
 * allow-list; the socket then waits (5 s at most) for an auth frame or
 * uses the session cookie of its handshake; a worker looks the token up
 * and the socket becomes ready: it joins the hub, and if it is its user's
 * first, the user's contacts get `presence`.
 *
 * Frames from a ready socket are parsed here (cheap) and turned into jobs:
 * a send goes straight to the store thread, whose batch commits it with
 * every other pending send and looks up the conversation's members; the
 * ack and the fan-out happen when the job comes back. Fan-out goes through
 * the bus, which delivers on a later loop turn: each frame is built once
 * and shared (refcounted) by every socket it goes to.
 *
 * Each socket's outgoing queue is bounded; a socket that does not read is
 * closed rather than allowed to grow the server's memory. Each WRITEABLE
 * callback does one write: a lone frame as a text frame, several queued
 * frames framed together into one buffer (see ws_writeable), so that a
 * socket that gets nine messages at once costs one send(), not nine.
 *
 * Thread: the service thread only (job run callbacks excepted, which run
 * on workers and touch only their job).
 */
#include "ws_chat.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hub.h"
#include "log.h"
#include "metrics.h"
#include "proto.h"

struct ws_chat {
    const struct config *cfg;
    struct worker_pool *workers;
    struct worker_pool *store_pool;
    struct hub hub;
    struct bus *bus;
    size_t nconns;                /* open sockets */
    size_t inflight;              /* jobs in pools */
    int closing;                  /* shutting down: no new sockets */
    int redis;                    /* the bus is Redis */
    struct lws_context *context;  /* for the order timer */
    struct hmap order;            /* conversation id -> struct ws_order */
    size_t nheld;                 /* conversations with held messages */
    lws_sorted_usec_list_t sul_order;
    int order_armed;
    int close_code;
    unsigned char *wbuf;          /* LWS_PRE + WS_WRITE_MAX: ws_writeable's */
};

/* The most bytes of queued frames (headers included) one write takes. */
#define WS_WRITE_MAX (64 * 1024)

enum ws_job_kind { WSJ_AUTH = 1, WSJ_SEND, WSJ_READ, WSJ_MEMBERS, WSJ_SYNC };

struct ws_sync_item {
    int64_t conv_id;
    int64_t seq;
};

/* A sync in progress: worked through in chunks so that one request never
 * queues more than about WS_SYNC_CHUNK bytes at a time. */
struct ws_sync {
    struct ws_sync_item *items;
    size_t n, next;
    int inflight;                 /* a job holds it */
    int64_t *truncated;
    size_t ntruncated;
};
#define WS_SYNC_CHUNK (1 << 20)

struct ws_job {
    struct job job;               /* first */
    struct ws_chat *wc;
    enum ws_job_kind kind;
    uint64_t conn_id;
    int64_t user_id;
    int rc;
    char errstr[128];
    /* auth */
    uint8_t token_hash[AUTH_SHA256_LEN];
    int token_ok;
    struct store_session session;
    int64_t *contacts;
    size_t ncontacts;
    /* send */
    struct store_send send;
    char *strings;                /* client_msg_id \0 body, owned */
    /* read, members, typing */
    int64_t conv_id;
    int64_t seq;
    int64_t *members;
    size_t nmembers;
    /* sync: the socket's state, borrowed while the job runs */
    struct ws_sync *sync;
    char **frames;                /* built JSON frames, owned */
    size_t nframes;
    struct util_buf errors;       /* error frames, '\n' separated */
};

static void ws_chat_job_done(struct job *j);

/* Users with a ready socket on this node, read by /metrics on any thread. */
static atomic_size_t ws_chat_online;

static double ws_chat_online_metric(void *arg)
{
    (void)arg;
    return (double)atomic_load_explicit(&ws_chat_online,
                                        memory_order_relaxed);
}
static void ws_conn_close(struct ws_conn *c, int code, const char *reason);

/* ---- frames and the outgoing queue --------------------------------------- */

static struct ws_frame *ws_frame_new(const char *json, size_t len)
{
    struct ws_frame *f = xmalloc(sizeof *f + LWS_PRE + len + 1);

    f->refs = 0;
    f->asked = 0;
    f->len = len;
    memcpy(f->data + LWS_PRE, json, len);
    f->data[LWS_PRE + len] = '\0';
    return f;
}

static void ws_frame_unref(struct ws_frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}

static void ws_conn_drop_queue(struct ws_conn *c)
{
    while (c->qlen) {
        ws_frame_unref(c->q[c->qhead]);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    free(c->q);
    c->q = NULL;
    c->qcap = c->qhead = 0;
    c->qbytes = 0;
    c->qasked = c->qasked_bytes = 0;
}

/* Queues a frame for the socket. A live frame over the bounds means the
 * client does not read: it is closed. Frames the client asked for (sync)
 * are not held to the bound; sync sends them in chunks instead. */
static void ws_conn_push(struct ws_conn *c, struct ws_frame *f, int live)
{
    if (c->state == WS_CLOSING) {
        if (f->refs == 0)
            free(f);
        return;
    }
    /* Only live frames count: a sync in progress must not make a client
     * that reads look slow. */
    if (live && (c->qlen - c->qasked >= WS_QUEUE_FRAMES ||
                 c->qbytes - c->qasked_bytes + f->len > WS_QUEUE_BYTES)) {
        if (f->refs == 0)
            free(f);
        metrics_counter_inc(metrics_child(metrics_ws_frames_rejected,
                                          (const char *[]){ "slow_consumer" }));
        log_event(LOG_WARN, "ws_slow_consumer", NULL,
                  LOG_INT("user_id", c->user_id), LOG_INT("queued", c->qlen),
                  LOG_INT("queued_bytes", c->qbytes), LF_END);
        ws_conn_drop_queue(c);     /* it would never be read anyway */
        ws_conn_close(c, 1008, "too slow: not reading");
        /* A client that never reads never makes the socket writable for
         * the close frame either: kill it if it has not gone in 2 s. */
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 2);
        return;
    }
    if (c->qlen == c->qcap) {
        size_t ncap = c->qcap ? c->qcap * 2 : 16, i;
        struct ws_frame **nq = xmalloc(ncap * sizeof *nq);
        for (i = 0; i < c->qlen; i++)
            nq[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = nq;
        c->qcap = ncap;
        c->qhead = 0;
    }
    f->refs++;
    if (!live) {
        f->asked = 1;             /* a sync frame is this socket's alone */
        c->qasked++;
        c->qasked_bytes += f->len;
    }
    c->q[(c->qhead + c->qlen) % c->qcap] = f;
    c->qlen++;
    c->qbytes += f->len;
    lws_callback_on_writable(c->wsi);
}

static void ws_conn_send_json(struct ws_conn *c, const char *json, size_t len)
{
    ws_conn_push(c, ws_frame_new(json, len), 1);
}

static void ws_conn_send_buf(struct ws_conn *c, struct util_buf *b)
{
    ws_conn_send_json(c, b->data, b->len);
    util_buf_free(b);
}

static void ws_conn_error(struct ws_conn *c, const char *code,
                          const char *ref, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void ws_conn_error(struct ws_conn *c, const char *code,
                          const char *ref, const char *fmt, ...)
{
    struct util_buf b = { 0 };
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    util_buf_puts(&b, "{\"type\":\"error\",\"code\":");
    util_buf_json_str(&b, code);
    util_buf_puts(&b, ",\"message\":");
    util_buf_json_str(&b, msg);
    util_buf_puts(&b, ",\"ref\":");
    util_buf_json_str(&b, ref);
    util_buf_puts(&b, "}");
    ws_conn_send_buf(c, &b);
}

/* Queues a close: what is already queued (acks, errors) is written
 * first, then the close frame. Frames after this are dropped, and what the
 * client still sends is read and discarded, so the close frame is not lost
 * to a reset. */
static void ws_conn_close(struct ws_conn *c, int code, const char *reason)
{
    if (c->state == WS_CLOSING)
        return;
    c->state = WS_CLOSING;
    c->close_code = code;
    snprintf(c->close_reason, sizeof c->close_reason, "%s", reason);
    lws_callback_on_writable(c->wsi);
    /* A client that reads nothing holds up the flush: not for long. */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 5);
}

/* ---- fan-out ------------------------------------------------------------- */

/* Hands a frame to the bus. conv_id, seq and subject go with it (see
 * struct bus_event); 0 when they do not apply. */
static void ws_chat_publish(struct ws_chat *wc, enum bus_kind kind,
                            const int64_t *targets, size_t n,
                            int64_t except_user, uint64_t except_conn,
                            int64_t conv_id, int64_t seq, int64_t subject,
                            struct util_buf *frame)
{
    struct bus_event *ev;

    if (n == 0) {
        util_buf_free(frame);
        return;
    }
    ev = bus_event_new(kind, targets, n, frame->data, frame->len);
    ev->except_user = except_user;
    ev->except_conn = except_conn;
    ev->conv_id = conv_id;
    ev->seq = seq;
    ev->subject = subject;
    util_buf_free(frame);
    bus_publish(wc->bus, ev);
}

/* ---- message order across nodes ---------------------------------------- *
 *
 * With Redis, a node delivers its own messages at once and the other
 * nodes' a moment later, so two messages of one conversation committed on
 * two nodes could reach a socket out of seq order. Each conversation's
 * next expected seq is kept: a message ahead of it is held (at most
 * WS_ORDER_HOLD_MS) until the ones before it arrive. A conversation this
 * node has not seen yet has no known next seq: its first messages (unless
 * seq 1) are held for that time and then go out in order. A message that
 * arrives after a later one went out (held that long and more: a node or
 * Redis stalled) is dropped: the clients, seeing the gap, fetch it (the
 * protocol's gap rule), as for any frame Redis lost. */

#define WS_ORDER_HOLD_MS 200
#define WS_ORDER_MAX 100000      /* conversations tracked before a prune */

struct ws_order {
    int64_t next;                /* the seq expected next; 0: not known */
    struct bus_event *held;      /* ahead of next, ascending seq */
    int64_t deadline_ms;         /* when held ones go out anyway */
};

static void ws_chat_deliver_frame(struct ws_chat *wc,
                                  const struct bus_event *ev);

static struct bus_event *ws_order_copy(const struct bus_event *ev)
{
    struct bus_event *c = bus_event_new(ev->kind, ev->targets, ev->ntargets,
                                        ev->frame, ev->len);

    c->except_user = ev->except_user;
    c->except_conn = ev->except_conn;
    c->subject = ev->subject;
    c->conv_id = ev->conv_id;
    c->seq = ev->seq;
    c->remote = ev->remote;
    return c;
}

/* Delivers the held messages that are next in line (all of them, gaps
 * and all, when force is set). */
static void ws_order_release(struct ws_chat *wc, struct ws_order *o,
                             int force)
{
    while (o->held && (force || o->held->seq == o->next)) {
        struct bus_event *ev = o->held;
        o->held = ev->next;
        if (ev->seq >= o->next) {
            ws_chat_deliver_frame(wc, ev);
            o->next = ev->seq + 1;
        }
        bus_event_free(ev);
    }
    if (o->held == NULL && o->deadline_ms) {
        o->deadline_ms = 0;
        wc->nheld--;
    }
}

static void ws_order_tick(lws_sorted_usec_list_t *sul)
{
    struct ws_chat *wc = lws_container_of(sul, struct ws_chat, sul_order);
    int64_t now = util_now_ms();
    size_t i = 0;
    uint64_t k;
    void *v;

    wc->order_armed = 0;
    while (wc->nheld && hmap_next(&wc->order, &i, &k, &v)) {
        struct ws_order *o = v;
        if (o->held && o->deadline_ms <= now)
            ws_order_release(wc, o, 1);
    }
    if (wc->nheld && wc->context) {
        wc->order_armed = 1;
        lws_sul_schedule(wc->context, 0, &wc->sul_order, ws_order_tick,
                         WS_ORDER_HOLD_MS / 5 * LWS_US_PER_MS);
    }
}

/* Forgets every conversation with nothing held (the map's size cap). */
static void ws_order_prune(struct ws_chat *wc)
{
    struct hmap keep = { 0 };
    size_t i = 0;
    uint64_t k;
    void *v;

    while (hmap_next(&wc->order, &i, &k, &v)) {
        struct ws_order *o = v;
        if (o->held)
            hmap_put(&keep, k, o);
        else
            free(o);
    }
    hmap_free(&wc->order);
    wc->order = keep;
}

static void ws_order_free_all(struct ws_chat *wc)
{
    size_t i = 0;
    uint64_t k;
    void *v;

    while (hmap_next(&wc->order, &i, &k, &v)) {
        struct ws_order *o = v;
        while (o->held) {
            struct bus_event *ev = o->held;
            o->held = ev->next;
            bus_event_free(ev);
        }
        free(o);
    }
    hmap_free(&wc->order);
}

/* A message event: delivered now, held, or dropped (see above). */
static void ws_order_message(struct ws_chat *wc, const struct bus_event *ev)
{
    struct ws_order *o = hmap_get(&wc->order, (uint64_t)ev->conv_id);
    struct bus_event **pp, *copy;

    if (o == NULL) {
        if (wc->order.len >= WS_ORDER_MAX)
            ws_order_prune(wc);
        o = xcalloc(1, sizeof *o);
        o->next = ev->seq == 1 ? 1 : 0;
        hmap_put(&wc->order, (uint64_t)ev->conv_id, o);
    }
    if (o->next && ev->seq < o->next) {
        metrics_counter_inc(metrics_bus_late);
        return;
    }
    if (o->next && ev->seq == o->next) {
        ws_chat_deliver_frame(wc, ev);
        o->next++;
        ws_order_release(wc, o, 0);
        return;
    }
    for (pp = &o->held; *pp && (*pp)->seq < ev->seq; pp = &(*pp)->next)
        ;
    if (*pp && (*pp)->seq == ev->seq)
        return;                  /* already held */
    copy = ws_order_copy(ev);
    copy->next = *pp;
    *pp = copy;
    if (o->deadline_ms == 0) {
        o->deadline_ms = util_now_ms() + WS_ORDER_HOLD_MS;
        wc->nheld++;
    }
    if (!wc->order_armed && wc->context) {
        wc->order_armed = 1;
        lws_sul_schedule(wc->context, 0, &wc->sul_order, ws_order_tick,
                         WS_ORDER_HOLD_MS / 5 * LWS_US_PER_MS);
    }
}

void ws_chat_set_context(struct ws_chat *wc, struct lws_context *context)
{
    wc->context = context;
}

/* Presence about a user to the users of this node who share a
 * conversation with them (an event with no target list). */
static void ws_chat_deliver_subject(struct ws_chat *wc,
                                    const struct bus_event *ev)
{
    size_t i = 0;
    uint64_t k;
    void *v;
    struct ws_frame *f = NULL;

    while (hmap_next(&wc->hub.users, &i, &k, &v)) {
        struct hub_user *u = v;
        struct ws_conn *c, *next;
        if (!hub_user_has_contact(u, ev->subject))
            continue;
        for (c = u->conns; c; c = next) {
            next = c->next_of_user;
            if (c->state != WS_READY)
                continue;
            if (f == NULL) {
                f = ws_frame_new(ev->frame, ev->len);
                f->refs = 1;
            }
            ws_conn_push(c, f, 1);
        }
    }
    ws_frame_unref(f);
}

/* Events that are not frames: a logout closes that session's sockets; a
 * new conversation makes its online members contacts. */
static void ws_chat_deliver_control(struct ws_chat *wc,
                                    const struct bus_event *ev)
{
    size_t i;

    if (ev->kind == BUS_LOGOUT && ev->ntargets == 1) {
        struct hub_user *u = hub_user(&wc->hub, ev->targets[0]);
        struct ws_conn *c, *next;
        for (c = u ? u->conns : NULL; c; c = next) {
            next = c->next_of_user;
            if (c->session_id == ev->subject)
                ws_conn_close(c, 1008, "logged out");
        }
        return;
    }
    if (ev->kind == BUS_SPREAD && ev->ntargets == 1) {
        struct hub_user *u = hub_user(&wc->hub, ev->targets[0]);
        if (u)
            u->spread = ev->subject < 1 ? 1 : ev->subject > 64 ? 64
                                                              : (int)ev->subject;
        return;
    }
    if (ev->kind != BUS_CONTACTS)
        return;
    for (i = 0; i < ev->ntargets; i++) {
        struct hub_user *u = hub_user(&wc->hub, ev->targets[i]);
        if (u)
            hub_user_add_contacts(u, ev->targets, ev->ntargets);
    }
}

/* The bus hands over an event: queue its frame on every local socket of
 * its targets. The frame is built once and shared. */
static void ws_chat_deliver(void *arg, const struct bus_event *ev)
{
    struct ws_chat *wc = arg;

    if (ev->kind == BUS_LOGOUT || ev->kind == BUS_CONTACTS ||
        ev->kind == BUS_SPREAD) {
        ws_chat_deliver_control(wc, ev);
        return;
    }
    if (ev->kind == BUS_TYPING && ev->remote && ev->subject) {
        /* The typer's sessions here count it toward their throttle. */
        struct hub_user *u = hub_user(&wc->hub, ev->subject);
        if (u)
            hub_typing_seen(u, ev->conv_id, util_now_ms());
    }
    if (ev->kind == BUS_MESSAGE && wc->redis && ev->seq > 0 &&
        ev->conv_id > 0) {
        ws_order_message(wc, ev);
        return;
    }
    ws_chat_deliver_frame(wc, ev);
}

/* Queues ev's frame on every ready local socket of its targets. */
static void ws_chat_deliver_frame(struct ws_chat *wc,
                                  const struct bus_event *ev)
{
    struct ws_frame *f = NULL;
    size_t i, n = 0;
    int debug = ev->kind == BUS_MESSAGE && log_enabled(LOG_DEBUG);

    if (ev->kind == BUS_PRESENCE && ev->ntargets == 0) {
        ws_chat_deliver_subject(wc, ev);
        return;
    }
    for (i = 0; i < ev->ntargets; i++) {
        struct hub_user *u;
        struct ws_conn *c, *next;
        if (ev->targets[i] == ev->except_user)
            continue;
        u = hub_user(&wc->hub, ev->targets[i]);
        if (u == NULL)
            continue;
        for (c = u->conns; c; c = next) {
            next = c->next_of_user;  /* a push may close c, not unlink it */
            if (c->id == ev->except_conn || c->state != WS_READY)
                continue;
            if (f == NULL) {
                f = ws_frame_new(ev->frame, ev->len);
                f->refs = 1;     /* held by this loop until the end */
            }
            ws_conn_push(c, f, 1);
            n++;
            if (debug)
                log_event(LOG_DEBUG, "message_received", NULL,
                          LOG_INT("user_id", c->user_id),
                          LOG_INT("conn", (int64_t)c->id), LF_END);
        }
    }
    if (ev->kind == BUS_MESSAGE)
        metrics_counter_add(metrics_messages_delivered, (double)n);
    ws_frame_unref(f);
}

void ws_chat_message_stored(struct ws_chat *wc, const struct store_msg *m,
                            const int64_t *members, size_t n,
                            uint64_t except_conn)
{
    struct util_buf b = { 0 };

    hub_members_put(&wc->hub, m->conversation_id, members, n);
    util_buf_puts(&b, "{\"type\":\"message\",\"message\":");
    proto_json_message(&b, m);
    util_buf_puts(&b, "}");
    ws_chat_publish(wc, BUS_MESSAGE, members, n, 0, except_conn,
                    m->conversation_id, m->seq, m->sender_id, &b);
}

void ws_chat_read_moved(struct ws_chat *wc, int64_t user_id, int64_t conv_id,
                        int64_t seq, const int64_t *members, size_t n,
                        uint64_t except_conn)
{
    struct util_buf b = { 0 };

    util_buf_printf(&b, "{\"type\":\"read\",\"conversation_id\":%lld,"
                    "\"user_id\":%lld,\"seq\":%lld}", (long long)conv_id,
                    (long long)user_id, (long long)seq);
    ws_chat_publish(wc, BUS_READ, members, n, 0, except_conn, conv_id, 0,
                    user_id, &b);
}

void ws_chat_logout(struct ws_chat *wc, int64_t user_id, int64_t session_id)
{
    /* Through the bus: the session may have sockets on other nodes. */
    struct bus_event *ev = bus_event_new(BUS_LOGOUT, &user_id, 1, "", 0);

    ev->subject = session_id;
    bus_publish(wc->bus, ev);
}

void ws_chat_conversation_created(struct ws_chat *wc,
                                  const struct store_conv *conv)
{
    size_t i;
    int64_t *ids = xmalloc((conv->nmembers + 1) * sizeof *ids);

    for (i = 0; i < conv->nmembers; i++)
        ids[i] = conv->members[i].id;
    hub_members_put(&wc->hub, conv->id, ids, conv->nmembers);
    /* Online members now share a conversation: they are contacts, on
     * whichever node they are. */
    if (conv->nmembers)
        bus_publish(wc->bus, bus_event_new(BUS_CONTACTS, ids, conv->nmembers,
                                           "", 0));
    free(ids);
}

int ws_chat_is_online(const struct ws_chat *wc, int64_t user_id)
{
    return hub_user(&wc->hub, user_id) != NULL;
}

/* ---- jobs ---------------------------------------------------------------- */

static struct ws_job *ws_job_new(struct ws_chat *wc, struct ws_conn *c,
                                 enum ws_job_kind kind, const char *op)
{
    struct ws_job *j = xcalloc(1, sizeof *j);

    j->wc = wc;
    j->kind = kind;
    j->conn_id = c->id;
    j->user_id = c->user_id;
    j->job.done = ws_chat_job_done;
    j->job.op = op;
    return j;
}

static void ws_job_free(struct ws_job *j)
{
    size_t i;

    free(j->contacts);
    free(j->strings);
    free(j->members);
    store_msg_clear(&j->send.msg);
    for (i = 0; i < j->nframes; i++)
        free(j->frames[i]);
    free(j->frames);
    util_buf_free(&j->errors);
    free(j);
}

/* Queues a job; answers `busy` on the socket when the pool is full. */
static int ws_chat_submit(struct ws_chat *wc, struct ws_conn *c,
                          struct ws_job *j, struct worker_pool *pool,
                          const char *ref)
{
    if (worker_submit(pool, &j->job) != 0) {
        ws_conn_error(c, "busy", ref, "the server is busy; try again");
        ws_job_free(j);
        return -1;
    }
    wc->inflight++;
    return 0;
}

/* Worker: checks the token, then loads the user's contacts. */
static int ws_job_run_auth(struct job *job, struct store *s)
{
    struct ws_job *j = (struct ws_job *)job;

    j->rc = store_session_lookup(s, j->token_hash, util_now_ms(), &j->session);
    if (j->rc == STORE_OK)
        j->rc = store_user_contacts(s, j->session.user_id, &j->contacts,
                                    &j->ncontacts);
    if (j->rc == STORE_ERR)
        snprintf(j->errstr, sizeof j->errstr, "%s", store_errstr(s));
    return WORKER_DONE;
}

static int ws_job_run_read(struct job *job, struct store *s)
{
    struct ws_job *j = (struct ws_job *)job;
    int64_t read_seq = 0;

    j->rc = store_read_marker(s, j->user_id, j->conv_id, j->seq, util_now_ms(),
                              &read_seq);
    j->seq = read_seq;
    if (j->rc == STORE_OK &&
        store_conv_member_ids(s, j->conv_id, &j->members, &j->nmembers) !=
            STORE_OK)
        j->rc = STORE_ERR;
    if (j->rc == STORE_ERR)
        snprintf(j->errstr, sizeof j->errstr, "%s", store_errstr(s));
    return WORKER_DONE;
}

static int ws_job_run_members(struct job *job, struct store *s)
{
    struct ws_job *j = (struct ws_job *)job;

    j->rc = store_conv_member_ids(s, j->conv_id, &j->members, &j->nmembers);
    return WORKER_DONE;
}

static void ws_sync_frame(struct ws_job *j, struct util_buf *b)
{
    j->frames = xrealloc(j->frames, (j->nframes + 1) * sizeof *j->frames);
    j->frames[j->nframes++] = util_buf_steal(b);
}

static void ws_sync_error(struct ws_job *j, const char *code,
                          int64_t conv_id)
{
    struct util_buf b = { 0 };

    util_buf_puts(&b, "{\"type\":\"error\",\"code\":");
    util_buf_json_str(&b, code);
    util_buf_printf(&b, ",\"message\":\"conversation %lld: %s\","
                    "\"ref\":\"sync\",\"conversation_id\":%lld}",
                    (long long)conv_id,
                    strcmp(code, "not_found") == 0 ? "no such conversation"
                                                   : "not a member",
                    (long long)conv_id);
    ws_sync_frame(j, &b);
}

/* Worker: the next chunk of a sync, conversation by conversation, until
 * about WS_SYNC_CHUNK bytes of frames are built. */
static int ws_job_run_sync(struct job *job, struct store *s)
{
    struct ws_job *j = (struct ws_job *)job;
    struct ws_sync *sy = j->sync;
    size_t bytes = 0;

    j->rc = STORE_OK;
    while (sy->next < sy->n && bytes < WS_SYNC_CHUNK) {
        struct ws_sync_item *it = &sy->items[sy->next];
        struct store_msg *msgs = NULL;
        int64_t last_seq = 0, after = it->seq;
        size_t n = 0, i;
        int more = 0, rc;

        rc = store_conv_member(s, it->conv_id, j->user_id, &last_seq);
        if (rc == STORE_ERR) {
            j->rc = STORE_ERR;
            snprintf(j->errstr, sizeof j->errstr, "%s", store_errstr(s));
            return WORKER_DONE;
        }
        if (rc != STORE_OK) {
            ws_sync_error(j, rc == STORE_NOTFOUND ? "not_found" : "not_a_member",
                          it->conv_id);
            sy->next++;
            continue;
        }
        if (last_seq - after > WS_SYNC_PER_CONV) {
            after = last_seq - WS_SYNC_PER_CONV;
            sy->truncated = xrealloc(sy->truncated, (sy->ntruncated + 1) *
                                     sizeof *sy->truncated);
            sy->truncated[sy->ntruncated++] = it->conv_id;
        }
        if (after < last_seq) {
            if (store_history(s, it->conv_id, STORE_UNBOUNDED, after,
                              WS_SYNC_PER_CONV, &msgs, &n, &more) != STORE_OK) {
                j->rc = STORE_ERR;
                snprintf(j->errstr, sizeof j->errstr, "%s", store_errstr(s));
                return WORKER_DONE;
            }
            for (i = 0; i < n; i++) {
                struct util_buf b = { 0 };
                util_buf_puts(&b, "{\"type\":\"message\",\"message\":");
                proto_json_message(&b, &msgs[i]);
                util_buf_puts(&b, "}");
                bytes += b.len;
                ws_sync_frame(j, &b);
            }
            store_msgs_free(msgs, n);
        }
        sy->next++;
    }
    return WORKER_DONE;
}

static void ws_sync_free(struct ws_sync *sy)
{
    if (sy == NULL)
        return;
    free(sy->items);
    free(sy->truncated);
    free(sy);
}

static void ws_chat_sync_next(struct ws_chat *wc, struct ws_conn *c)
{
    struct ws_job *j = ws_job_new(wc, c, WSJ_SYNC, "sync");

    j->job.run = ws_job_run_sync;
    j->sync = c->sync;
    if (ws_chat_submit(wc, c, j, wc->workers, "sync") != 0) {
        ws_sync_free(c->sync);
        c->sync = NULL;
        return;
    }
    j->sync->inflight = 1;
}

/* ---- job completions (service thread) ------------------------------------ */

static void ws_done_auth(struct ws_chat *wc, struct ws_conn *c,
                         struct ws_job *j)
{
    struct util_buf b = { 0 };
    struct hub_user *u;
    int first;

    if (j->rc != STORE_OK) {
        if (j->rc == STORE_ERR) {
            log_event(LOG_ERROR, "database_error", NULL,
                      LOG_STR("operation", "ws_auth"),
                      LOG_STR("error", j->errstr), LF_END);
            ws_conn_close(c, 1011, "database unavailable; retry");
        } else {
            log_event(LOG_WARN, "security_event", NULL,
                      LOG_STR("kind", "bad_token"),
                      LOG_STR("remote", c->remote), LOG_STR("via", "ws"),
                      LF_END);
            ws_conn_close(c, 4401, "authentication failed");
        }
        return;
    }
    c->user_id = j->session.user_id;
    c->session_id = j->session.session_id;
    snprintf(c->username, sizeof c->username, "%s", j->session.username);
    c->state = WS_READY;
    lws_set_timer_usecs(c->wsi, LWS_SET_TIMER_USEC_CANCEL);
    util_buf_printf(&b, "{\"type\":\"ready\",\"user_id\":%lld,"
                    "\"session_id\":%lld}", (long long)c->user_id,
                    (long long)c->session_id);
    ws_conn_send_buf(c, &b);
    log_event(LOG_INFO, "ws_connect", NULL, LOG_INT("user_id", c->user_id),
              LOG_INT("session_id", c->session_id),
              LOG_INT("conn", (int64_t)c->id), LOG_STR("remote", c->remote),
              LF_END);
    first = hub_conn_ready(&wc->hub, c, j->contacts, j->ncontacts);
    u = hub_user(&wc->hub, c->user_id);
    bus_session(wc->bus, c->user_id, c->id, 1, first, u->contacts,
                u->ncontacts);
    atomic_store_explicit(&ws_chat_online, wc->hub.users.len,
                          memory_order_relaxed);
}

static void ws_done_send(struct ws_chat *wc, struct ws_conn *c,
                         struct ws_job *j)
{
    struct store_send *sd = &j->send;
    char ts[UTIL_TIME_LEN];
    const char *ref = j->strings;       /* the client_msg_id */

    if (sd->rc == STORE_OK) {
        metrics_counter_inc(metrics_messages_created);
        log_event(LOG_INFO, "message_sent", NULL,
                  LOG_INT("message_id", sd->msg.message_id),
                  LOG_INT("conversation_id", sd->msg.conversation_id),
                  LOG_INT("seq", sd->msg.seq),
                  LOG_INT("sender_id", sd->msg.sender_id),
                  LOG_STR("via", "ws"), LF_END);
        ws_chat_message_stored(wc, &sd->msg, j->job.members,
                               j->job.nmembers, j->conn_id);
    }
    if (c == NULL)
        return;
    switch (sd->rc) {
    case STORE_OK:
    case STORE_DUPLICATE: {
        struct util_buf b = { 0 };
        util_buf_puts(&b, "{\"type\":\"ack\",\"client_msg_id\":");
        util_buf_json_str(&b, sd->msg.client_msg_id);
        util_buf_printf(&b, ",\"message_id\":%lld,\"conversation_id\":%lld,"
                        "\"seq\":%lld,\"created_at\":\"%s\"}",
                        (long long)sd->msg.message_id,
                        (long long)sd->msg.conversation_id,
                        (long long)sd->msg.seq,
                        util_format_time(sd->msg.created_at, ts));
        ws_conn_send_buf(c, &b);
        break;
    }
    case STORE_FORBIDDEN:
        ws_conn_error(c, "not_a_member", ref,
                      "you are not a member of this conversation");
        break;
    case STORE_NOTFOUND:
        ws_conn_error(c, "not_found", ref, "no such conversation");
        break;
    default:
        ws_conn_error(c, "unavailable", ref,
                      "the message was not stored; send it again");
    }
}

static void ws_done_read(struct ws_chat *wc, struct ws_conn *c,
                         struct ws_job *j)
{
    if (j->rc == STORE_OK) {
        log_event(LOG_INFO, "message_read", NULL,
                  LOG_INT("user_id", j->user_id),
                  LOG_INT("conversation_id", j->conv_id),
                  LOG_INT("seq", j->seq), LOG_STR("via", "ws"), LF_END);
        hub_members_put(&wc->hub, j->conv_id, j->members, j->nmembers);
        ws_chat_read_moved(wc, j->user_id, j->conv_id, j->seq, j->members,
                           j->nmembers, j->conn_id);
        return;
    }
    if (c == NULL || j->rc == STORE_DUPLICATE)
        return;
    if (j->rc == STORE_FORBIDDEN)
        ws_conn_error(c, "not_a_member", "read",
                      "you are not a member of this conversation");
    else if (j->rc == STORE_NOTFOUND)
        ws_conn_error(c, "not_found", "read", "no such conversation");
    else
        ws_conn_error(c, "unavailable", "read",
                      "the read marker was not stored; try again");
}

static void ws_chat_typing_deliver(struct ws_chat *wc, struct ws_conn *c,
                                   int64_t conv_id,
                                   const struct hub_members *m)
{
    struct util_buf b = { 0 };

    if (!hub_members_has(m, c->user_id)) {
        ws_conn_error(c, "not_a_member", "typing",
                      "you are not a member of this conversation");
        return;
    }
    util_buf_printf(&b, "{\"type\":\"typing\",\"conversation_id\":%lld,"
                    "\"user_id\":%lld}", (long long)conv_id,
                    (long long)c->user_id);
    ws_chat_publish(wc, BUS_TYPING, m->ids, m->n, c->user_id, 0, conv_id, 0,
                    c->user_id, &b);
}

static void ws_done_members(struct ws_chat *wc, struct ws_conn *c,
                            struct ws_job *j)
{
    const struct hub_members *m;

    if (j->rc == STORE_OK)
        hub_members_put(&wc->hub, j->conv_id, j->members, j->nmembers);
    if (c == NULL || c->state != WS_READY)
        return;
    if (j->rc == STORE_NOTFOUND) {
        ws_conn_error(c, "not_found", "typing", "no such conversation");
        return;
    }
    m = hub_members(&wc->hub, j->conv_id);
    if (m == NULL) {
        ws_conn_error(c, "unavailable", "typing", "try again");
        return;
    }
    ws_chat_typing_deliver(wc, c, j->conv_id, m);
}

static void ws_done_sync(struct ws_chat *wc, struct ws_conn *c,
                         struct ws_job *j)
{
    struct ws_sync *sy = j->sync;
    size_t i;

    sy->inflight = 0;
    if (c == NULL || c->sync != sy) {
        ws_sync_free(sy);           /* the socket is gone */
        return;
    }
    if (j->rc != STORE_OK) {
        ws_conn_error(c, "unavailable", "sync", "sync failed; try again");
        ws_sync_free(sy);
        c->sync = NULL;
        return;
    }
    for (i = 0; i < j->nframes; i++)
        ws_conn_push(c, ws_frame_new(j->frames[i], strlen(j->frames[i])), 0);
    if (sy->next < sy->n) {
        if (c->qlen == 0)
            ws_chat_sync_next(wc, c);
        return;                     /* else the rest when the queue drains */
    }
    {
        struct util_buf b = { 0 };
        util_buf_puts(&b, "{\"type\":\"synced\",\"truncated\":[");
        for (i = 0; i < sy->ntruncated; i++)
            util_buf_printf(&b, "%s%lld", i ? "," : "",
                            (long long)sy->truncated[i]);
        util_buf_puts(&b, "]}");
        ws_conn_push(c, ws_frame_new(b.data, b.len), 0);
        util_buf_free(&b);
    }
    ws_sync_free(sy);
    c->sync = NULL;
}

static void ws_chat_job_done(struct job *job)
{
    struct ws_job *j = (struct ws_job *)job;
    struct ws_chat *wc = j->wc;
    struct ws_conn *c = hub_conn(&wc->hub, j->conn_id);

    wc->inflight--;
    if (c && c->state == WS_CLOSING && j->kind != WSJ_SEND &&
        j->kind != WSJ_SYNC && j->kind != WSJ_READ)
        c = NULL;
    switch (j->kind) {
    case WSJ_AUTH:
        if (c && c->state == WS_AUTHING)
            ws_done_auth(wc, c, j);
        break;
    case WSJ_SEND:
        ws_done_send(wc, c && c->state == WS_READY ? c : NULL, j);
        break;
    case WSJ_READ:
        ws_done_read(wc, c && c->state == WS_READY ? c : NULL, j);
        break;
    case WSJ_MEMBERS:
        ws_done_members(wc, c, j);
        break;
    case WSJ_SYNC:
        ws_done_sync(wc, c, j);
        j->sync = NULL;
        break;
    }
    free(j->job.members);
    j->job.members = NULL;
    ws_job_free(j);
}

/* ---- client frames ------------------------------------------------------- */

typedef void (*ws_frame_cb)(struct ws_chat *wc, struct ws_conn *c,
                            json_object *o);

static void ws_start_auth(struct ws_chat *wc, struct ws_conn *c,
                          const char *token)
{
    struct ws_job *j = ws_job_new(wc, c, WSJ_AUTH, "ws_auth");

    j->job.run = ws_job_run_auth;
    if (auth_token_hash(token, j->token_hash) != 0) {
        ws_job_free(j);
        log_event(LOG_WARN, "security_event", NULL, LOG_STR("kind", "bad_token"),
                  LOG_STR("remote", c->remote), LOG_STR("via", "ws"), LF_END);
        ws_conn_close(c, 4401, "authentication failed");
        return;
    }
    c->state = WS_AUTHING;
    if (ws_chat_submit(wc, c, j, wc->workers, "auth") != 0)
        c->state = WS_AUTH_WAIT;
}

static void ws_on_auth(struct ws_chat *wc, struct ws_conn *c, json_object *o)
{
    const char *token;

    if (c->state == WS_READY) {
        ws_conn_error(c, "already_authenticated", "auth",
                      "this socket is authenticated already");
        return;
    }
    if (c->state == WS_AUTHING)
        return;                       /* one is being checked */
    if (proto_get_string(o, "token", &token, NULL) != 0) {
        ws_conn_close(c, 4401, "authentication failed");
        return;
    }
    ws_start_auth(wc, c, token);
}

/* Reads "conversation_id"; answers an error frame and returns -1 if bad. */
static int ws_conv_id(struct ws_conn *c, json_object *o, const char *ref,
                      int64_t *id)
{
    if (proto_get_int(o, "conversation_id", id) != 0 || *id <= 0) {
        ws_conn_error(c, "invalid_field", ref,
                      "'conversation_id' must be a positive integer");
        return -1;
    }
    return 0;
}

static void ws_on_send(struct ws_chat *wc, struct ws_conn *c, json_object *o)
{
    const char *body, *cmid;
    size_t blen, clen;
    int64_t conv;
    struct ws_job *j;

    if (proto_get_string(o, "client_msg_id", &cmid, &clen) != 0 ||
        !proto_valid_client_msg_id(cmid, clen)) {
        ws_conn_error(c, "invalid_client_msg_id", "send", "'client_msg_id' "
                      "must be a string of 1 to 64 characters");
        return;
    }
    if (proto_get_int(o, "conversation_id", &conv) != 0 || conv <= 0) {
        ws_conn_error(c, "invalid_field", cmid,
                      "'conversation_id' must be a positive integer");
        return;
    }
    if (proto_get_string(o, "body", &body, &blen) != 0) {
        ws_conn_error(c, "invalid_field", cmid, "'body' must be a string");
        return;
    }
    if (blen == 0) {
        ws_conn_error(c, "empty_message", cmid, "a message needs a body");
        return;
    }
    if (blen > PROTO_BODY_MAX) {
        ws_conn_error(c, "message_too_large", cmid,
                      "a message body is at most %d bytes", PROTO_BODY_MAX);
        return;
    }
    j = ws_job_new(wc, c, WSJ_SEND, "send_batch");
    j->strings = xmalloc(clen + 1 + blen + 1);
    memcpy(j->strings, cmid, clen + 1);
    memcpy(j->strings + clen + 1, body, blen + 1);
    j->send.conversation_id = conv;
    j->send.sender_id = c->user_id;
    j->send.client_msg_id = j->strings;
    j->send.body = j->strings + clen + 1;
    j->send.body_len = blen;
    j->send.now = util_now_ms();
    j->job.send = &j->send;
    ws_chat_submit(wc, c, j, wc->store_pool, j->strings);
}

static void ws_on_read(struct ws_chat *wc, struct ws_conn *c, json_object *o)
{
    int64_t conv, seq;
    struct ws_job *j;

    if (ws_conv_id(c, o, "read", &conv) != 0)
        return;
    if (proto_get_int(o, "seq", &seq) != 0 || seq < 0) {
        ws_conn_error(c, "invalid_seq", "read",
                      "'seq' must be a non-negative integer");
        return;
    }
    j = ws_job_new(wc, c, WSJ_READ, "read_marker");
    j->job.run = ws_job_run_read;
    j->conv_id = conv;
    j->seq = seq;
    ws_chat_submit(wc, c, j, wc->workers, "read");
}

static void ws_on_typing(struct ws_chat *wc, struct ws_conn *c,
                         json_object *o)
{
    struct hub_user *u = hub_user(&wc->hub, c->user_id);
    const struct hub_members *m;
    int64_t conv;
    struct ws_job *j;

    if (ws_conv_id(c, o, "typing", &conv) != 0 || u == NULL)
        return;
    m = hub_members(&wc->hub, conv);
    if (m && !hub_members_has(m, c->user_id)) {
        ws_conn_error(c, "not_a_member", "typing",
                      "you are not a member of this conversation");
        return;
    }
    if (!hub_typing_allowed(u, conv, util_now_ms()))
        return;                        /* at most one per 2 s */
    if (m) {
        ws_chat_typing_deliver(wc, c, conv, m);
        return;
    }
    j = ws_job_new(wc, c, WSJ_MEMBERS, "conv_member_ids");
    j->job.run = ws_job_run_members;
    j->conv_id = conv;
    ws_chat_submit(wc, c, j, wc->workers, "typing");
}

static void ws_on_sync(struct ws_chat *wc, struct ws_conn *c, json_object *o)
{
    json_object *since;
    struct ws_sync *sy;
    size_t n;

    if (!json_object_object_get_ex(o, "since", &since) ||
        !json_object_is_type(since, json_type_object)) {
        ws_conn_error(c, "invalid_field", "sync", "'since' must be an object "
                      "of conversation ids to seqs");
        return;
    }
    n = (size_t)json_object_object_length(since);
    if (n > WS_SYNC_MAX) {
        ws_conn_error(c, "too_many_conversations", "sync",
                      "sync at most %d conversations at once", WS_SYNC_MAX);
        return;
    }
    if (c->sync) {
        ws_conn_error(c, "busy", "sync", "a sync is already running");
        return;
    }
    sy = xcalloc(1, sizeof *sy);
    sy->items = xcalloc(n ? n : 1, sizeof *sy->items);
    {
        json_object_object_foreach(since, key, val) {
            char *end;
            long long id = strtoll(key, &end, 10);
            int64_t seq;
            if (*key == '\0' || *end != '\0' || id <= 0 ||
                !json_object_is_type(val, json_type_int) ||
                (seq = json_object_get_int64(val)) < 0 || seq == INT64_MAX) {
                ws_conn_error(c, "invalid_field", "sync", "'since' maps "
                              "conversation ids to non-negative seqs");
                ws_sync_free(sy);
                return;
            }
            sy->items[sy->n].conv_id = id;
            sy->items[sy->n].seq = seq;
            sy->n++;
        }
    }
    c->sync = sy;
    ws_chat_sync_next(wc, c);
}

static void ws_on_ping(struct ws_chat *wc, struct ws_conn *c, json_object *o)
{
    static const char pong[] = "{\"type\":\"pong\"}";
    ws_conn_send_json(c, pong, sizeof pong - 1);
}

static const struct {
    const char *type;
    ws_frame_cb cb;
    int needs_ready;
} ws_frame_table[] = {
    { "auth", ws_on_auth, 0 },
    { "send", ws_on_send, 1 },
    { "read", ws_on_read, 1 },
    { "typing", ws_on_typing, 1 },
    { "sync", ws_on_sync, 1 },
    { "ping", ws_on_ping, 1 },
};

/* A frame that is not JSON or has no known type: an error frame each
 * time, and the connection closes at the WS_BAD_FRAMES_MAX-th. */
static void ws_bad_frame(struct ws_conn *c, const char *code, const char *ref,
                         const char *why)
{
    metrics_counter_inc(metrics_child(metrics_ws_frames_rejected,
                                      (const char *[]){ code }));
    if (++c->bad_frames >= WS_BAD_FRAMES_MAX) {
        ws_conn_close(c, 1008, "too many invalid frames");
        return;
    }
    ws_conn_error(c, code, ref, "%s", why);
}

/* Answers a frame refused for the rate limit, naming it (its
 * client_msg_id, else its type) so that the client knows what to resend. */
static void ws_rate_limited(struct ws_conn *c, const char *text, size_t len)
{
    const char *why, *ref = "frame", *v;
    json_object *o = proto_parse_object(text, len, &why);
    char copy[4 * PROTO_CLIENT_MSG_ID_MAX + 1];

    if (o && proto_get_string(o, "client_msg_id", &v, NULL) == 0)
        ref = v;
    else if (o && proto_get_string(o, "type", &v, NULL) == 0)
        ref = v;
    snprintf(copy, sizeof copy, "%s", ref);
    json_object_put(o);
    ws_conn_error(c, "rate_limited", copy, "too many frames; slow down");
}

/* Token bucket: the user's once authenticated, else the socket's own. */
static int ws_rate_ok(struct ws_chat *wc, struct ws_conn *c)
{
    struct hub_user *u = c->state == WS_READY ? hub_user(&wc->hub, c->user_id)
                                              : NULL;
    int64_t now = util_now_ms();

    if (u)
        return hub_rate_take(u, now);
    if (c->tokens_ms == 0) {
        c->tokens = HUB_RATE_BURST;
        c->tokens_ms = now;
    }
    c->tokens += (double)(now - c->tokens_ms) / 1000.0 * HUB_RATE_PER_S;
    if (c->tokens > HUB_RATE_BURST)
        c->tokens = HUB_RATE_BURST;
    c->tokens_ms = now;
    if (c->tokens < 1.0)
        return 0;
    c->tokens -= 1.0;
    return 1;
}

static void ws_on_message(struct ws_chat *wc, struct ws_conn *c,
                          const char *text, size_t len)
{
    json_object *o;
    const char *why, *type;
    size_t i;

    if (c->state == WS_CLOSING)
        return;
    if (!ws_rate_ok(wc, c)) {
        metrics_counter_inc(metrics_child(metrics_ws_frames_rejected,
                                          (const char *[]){ "rate_limited" }));
        if (++c->limited >= WS_LIMITED_MAX) {
            ws_conn_close(c, 1008, "rate limit exceeded");
            return;
        }
        ws_rate_limited(c, text, len);
        return;
    }
    c->limited = 0;
    o = proto_parse_object(text, len, &why);
    if (o == NULL) {
        ws_bad_frame(c, "invalid_json", "frame", why);
        return;
    }
    if (proto_get_string(o, "type", &type, NULL) != 0) {
        ws_bad_frame(c, "unknown_type", "frame", "a frame needs a 'type'");
        json_object_put(o);
        return;
    }
    for (i = 0; i < sizeof ws_frame_table / sizeof ws_frame_table[0]; i++) {
        if (strcmp(ws_frame_table[i].type, type) != 0)
            continue;
        if (ws_frame_table[i].needs_ready && c->state != WS_READY)
            ws_conn_error(c, "unauthorized", type,
                          "authenticate first: send an auth frame");
        else
            ws_frame_table[i].cb(wc, c, o);
        json_object_put(o);
        return;
    }
    {
        char ref[40];
        snprintf(ref, sizeof ref, "%s", type);
        json_object_put(o);
        ws_bad_frame(c, "unknown_type", ref, "unknown frame type");
    }
}

/* ---- the lws protocol ---------------------------------------------------- */

static int ws_origin_allowed(const struct ws_chat *wc, struct lws *wsi)
{
    char origin[300];
    size_t i;
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);

    if (n <= 0)
        return 1;                 /* not a browser: no Origin to check */
    if (n >= (int)sizeof origin ||
        lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0)
        return 0;
    for (i = 0; i < wc->cfg->norigins; i++)
        if (strcmp(origin, wc->cfg->origins[i]) == 0)
            return 1;
    return 0;
}

static void ws_read_cookie(struct ws_conn *c)
{
    char v[1024];
    char *save = NULL, *tok;
    int n = lws_hdr_total_length(c->wsi, WSI_TOKEN_HTTP_COOKIE);

    if (n <= 0 || n >= (int)sizeof v ||
        lws_hdr_copy(c->wsi, v, sizeof v, WSI_TOKEN_HTTP_COOKIE) <= 0)
        return;
    for (tok = strtok_r(v, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        while (*tok == ' ')
            tok++;
        if (strncmp(tok, "chat_session=", 13) == 0 &&
            strlen(tok + 13) < sizeof c->cookie) {
            snprintf(c->cookie, sizeof c->cookie, "%s", tok + 13);
            return;
        }
    }
}

static int ws_established(struct ws_chat *wc, struct ws_conn *c,
                          struct lws *wsi)
{
    memset(c, 0, sizeof *c);
    c->wsi = wsi;
    hub_conn_add(&wc->hub, c);
    wc->nconns++;
    metrics_gauge_set(metrics_ws_connections, (double)wc->nconns);
    lws_get_peer_simple(wsi, c->remote, sizeof c->remote);
    ws_read_cookie(c);
    if (wc->closing) {
        ws_conn_close(c, wc->close_code, "server shutting down");
        return 0;
    }
    lws_set_timer_usecs(wsi, WS_AUTH_TIMEOUT_US);
    if (c->cookie[0])
        ws_start_auth(wc, c, c->cookie);
    return 0;
}

static void ws_closed(struct ws_chat *wc, struct ws_conn *c)
{
    int64_t *contacts = NULL;
    size_t ncontacts = 0;
    int last;
    /* user_id is set only as the socket joins the hub. */
    int was_ready = c->state == WS_READY ||
                    (c->state == WS_CLOSING && c->user_id != 0);

    if (c->id == 0)
        return;
    if (was_ready) {
        /* The contacts, whether or not this is the user's last socket
         * here: with Redis, the cluster decides if the user went offline. */
        struct hub_user *u = hub_user(&wc->hub, c->user_id);
        if (u && u->ncontacts) {
            ncontacts = u->ncontacts;
            contacts = xmalloc(ncontacts * sizeof *contacts);
            memcpy(contacts, u->contacts, ncontacts * sizeof *contacts);
        }
    }
    last = hub_conn_remove(&wc->hub, c);
    if (was_ready)
        bus_session(wc->bus, c->user_id, c->id, 0, last, contacts, ncontacts);
    atomic_store_explicit(&ws_chat_online, wc->hub.users.len,
                          memory_order_relaxed);
    free(contacts);
    if (was_ready)
        log_event(LOG_INFO, "ws_close", NULL, LOG_INT("user_id", c->user_id),
                  LOG_INT("conn", (int64_t)c->id),
                  LOG_INT("code", c->close_code), LF_END);
    ws_conn_drop_queue(c);
    util_buf_free(&c->rx);
    if (c->sync) {
        /* A sync job that still holds it frees it when it comes back and
         * does not find the socket. */
        if (!c->sync->inflight)
            ws_sync_free(c->sync);
        c->sync = NULL;
    }
    c->id = 0;
    wc->nconns--;
    metrics_gauge_set(metrics_ws_connections, (double)wc->nconns);
}

static int ws_receive(struct ws_chat *wc, struct ws_conn *c, void *in,
                      size_t len)
{
    struct lws *wsi = c->wsi;
    int first = lws_is_first_fragment(wsi), final = lws_is_final_fragment(wsi);

    if (c->state == WS_CLOSING)
        return 0;                 /* closing: read and discard */
    if (first)
        c->rx.len = 0;
    if (c->rx.len + len > WS_MSG_MAX) {
        metrics_counter_inc(metrics_child(metrics_ws_frames_rejected,
                                          (const char *[]){ "too_large" }));
        util_buf_free(&c->rx);
        ws_conn_close(c, 1009, "message too large");
        return 0;
    }
    util_buf_append(&c->rx, in, len);
    if (!final || lws_remaining_packet_payload(wsi) > 0)
        return 0;
    if (lws_frame_is_binary(wsi)) {
        c->rx.len = 0;
        ws_bad_frame(c, "invalid_json", "frame", "frames are JSON text");
        return 0;
    }
    ws_on_message(wc, c, c->rx.data, c->rx.len);
    c->rx.len = 0;
    if (c->rx.cap > 4 * 4096)
        util_buf_free(&c->rx);   /* do not keep a large buffer per socket */
    return 0;
}

/* Takes the frame at the head of the socket's queue. */
static struct ws_frame *ws_conn_pop(struct ws_conn *c)
{
    struct ws_frame *f = c->q[c->qhead];

    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    c->qbytes -= f->len;
    if (f->asked) {
        c->qasked--;
        c->qasked_bytes -= f->len;
    }
    return f;
}

/* A frame's bytes in a coalesced write: its header and payload. Only
 * frames of at most 0xffff bytes are coalesced (larger ones go alone), so
 * the header is 2 or 4 bytes. */
static size_t ws_frame_wire_len(const struct ws_frame *f)
{
    return (f->len < 126 ? 2 : 4) + f->len;
}

/* How many frames at the head of the queue fit in one write. */
static size_t ws_coalesce_count(const struct ws_conn *c)
{
    size_t n, used = 0;

    for (n = 0; n < c->qlen; n++) {
        const struct ws_frame *f = c->q[(c->qhead + n) % c->qcap];

        if (f->len > 0xffff || used + ws_frame_wire_len(f) > WS_WRITE_MAX)
            break;
        used += ws_frame_wire_len(f);
    }
    return n;
}

/* Frames the queue's n head frames into wc->wbuf (n from
 * ws_coalesce_count) and returns the bytes to write. chatd negotiates no
 * extension, so a server frame is exactly an unmasked final text frame's
 * header (RFC 6455 5.2) and the payload: what lws would write. */
static size_t ws_coalesce(struct ws_chat *wc, struct ws_conn *c, size_t n)
{
    unsigned char *out = wc->wbuf + LWS_PRE;
    size_t used = 0;

    while (n-- > 0) {
        struct ws_frame *f = ws_conn_pop(c);

        out[used++] = 0x81;                  /* FIN, opcode 1 (text) */
        if (f->len < 126) {
            out[used++] = (unsigned char)f->len;
        } else {
            out[used++] = 126;
            out[used++] = (unsigned char)(f->len >> 8);
            out[used++] = (unsigned char)f->len;
        }
        memcpy(out + used, f->data + LWS_PRE, f->len);
        used += f->len;
        ws_frame_unref(f);
    }
    return used;
}

static int ws_writeable(struct ws_chat *wc, struct ws_conn *c)
{
    struct ws_frame *f;
    size_t nf;
    int n;

    if (c->state == WS_CLOSING && c->close_code && c->qlen == 0) {
        /* Everything queued is written: close from the timer callback.
         * libwebsockets 4.1 on libuv, built with _DEBUG as distributions
         * ship it, drops the close frame of a socket closed from its
         * WRITEABLE callback (the client would see 1006); from the timer
         * it sends it and does the closing handshake. */
        lws_set_timer_usecs(c->wsi, 1);
        return 0;
    }
    if (c->qlen == 0)
        return 0;
    /* lws keeps what the socket did not take and writes it before the next
     * WRITEABLE, so a short count is not an error; a negative one is. A
     * frame is always written whole in one lws_write, so lws's own frames
     * (pong, close) never land inside one of ours. */
    nf = ws_coalesce_count(c);
    if (nf > 1) {
        size_t len = ws_coalesce(wc, c, nf);
        n = lws_write(c->wsi, wc->wbuf + LWS_PRE, len, LWS_WRITE_RAW);
    } else {
        f = ws_conn_pop(c);
        n = lws_write(c->wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT);
        ws_frame_unref(f);
    }
    if (n < 0)
        return -1;
    if (c->qlen || c->state == WS_CLOSING)
        lws_callback_on_writable(c->wsi);
    else if (c->sync && !c->sync->inflight && c->sync->next < c->sync->n)
        ws_chat_sync_next(wc, c);   /* the next chunk, now the queue is empty */
    return 0;
}

static int ws_chat_cb(struct lws *wsi, enum lws_callback_reasons reason,
                      void *user, void *in, size_t len)
{
    struct ws_chat *wc = (struct ws_chat *)lws_get_protocol(wsi)->user;
    struct ws_conn *c = user;

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (wc->closing) {
            lws_return_http_status(wsi, 503, "shutting down");
            return 1;
        }
        if (!ws_origin_allowed(wc, wsi)) {
            char origin[128] = "";
            lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
            log_event(LOG_WARN, "security_event", NULL,
                      LOG_STR("kind", "origin_refused"),
                      LOG_STR("origin", origin), LF_END);
            lws_return_http_status(wsi, 403, "origin not allowed");
            return 1;
        }
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        return ws_established(wc, c, wsi);
    case LWS_CALLBACK_RECEIVE:
        if (c == NULL || c->id == 0)
            return -1;
        return ws_receive(wc, c, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (c == NULL || c->id == 0)
            return 0;
        return ws_writeable(wc, c);
    case LWS_CALLBACK_TIMER:
        if (c && c->id && c->state == WS_CLOSING && c->close_code &&
            c->qlen == 0) {
            lws_close_reason(wsi, (enum lws_close_status)c->close_code,
                             (unsigned char *)c->close_reason,
                             strlen(c->close_reason));
            return -1;
        }
        if (c && c->id && c->state != WS_READY && c->state != WS_CLOSING)
            ws_conn_close(c, 4401, "authentication timeout");
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (c && c->close_code == 0 && len >= 2)
            c->close_code = ((unsigned char *)in)[0] << 8 |
                            ((unsigned char *)in)[1];
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (c)
            ws_closed(wc, c);
        return 0;
    default:
        return 0;
    }
}

void ws_chat_protocol(struct ws_chat *wc, struct lws_protocols *out)
{
    memset(out, 0, sizeof *out);
    out->name = "chat.v1";
    out->callback = ws_chat_cb;
    out->per_session_data_size = sizeof(struct ws_conn);
    /* lws's receive buffer, allocated per socket: a frame larger than it
     * arrives in pieces, which ws_receive reassembles (up to WS_MSG_MAX).
     * 4 KiB holds a typical chat frame whole. (An idle socket's memory
     * did not move from 16 KiB to 4 KiB: only the touched pages count;
     * docs/benchmarks.md, "Idle sockets".) */
    out->rx_buffer_size = 4096;
    out->user = wc;
}

/* ---- setup and shutdown -------------------------------------------------- */

struct ws_chat *ws_chat_create(const struct config *cfg,
                               struct worker_pool *workers,
                               struct worker_pool *store_pool,
                               bus_wake_cb wake, char *err, size_t errlen)
{
    struct ws_chat *wc = xcalloc(1, sizeof *wc);

    wc->cfg = cfg;
    wc->workers = workers;
    wc->store_pool = store_pool;
    wc->wbuf = xmalloc(LWS_PRE + WS_WRITE_MAX);
    hub_init(&wc->hub);
    if (cfg->redis) {
        struct bus_redis_config bc = {
            .url = cfg->redis,
            .node_id = cfg->node_id,
            .presence_ttl_ms = cfg->presence_ttl * 1000,
        };
        wc->bus = bus_redis_create(&bc, ws_chat_deliver, wc, wake, NULL, err,
                                   errlen);
        wc->redis = 1;
    } else {
        wc->bus = bus_local_create(ws_chat_deliver, wc, wake, NULL);
    }
    if (wc->bus == NULL) {
        hub_free(&wc->hub);
        free(wc->wbuf);
        free(wc);
        return NULL;
    }
    if (metrics_find("chat_node_online_users") == NULL)
        metrics_gauge_func("chat_node_online_users", "Users with at least "
                           "one authenticated WebSocket session on this node.",
                           ws_chat_online_metric, NULL);
    /* With Redis, the collector counts the whole cluster's. */
    if (!wc->redis && metrics_find("chat_online_users") == NULL)
        metrics_gauge_func("chat_online_users", "Users with at least one "
                           "authenticated WebSocket session.",
                           ws_chat_online_metric, NULL);
    return wc;
}

int ws_chat_redis_status(const struct ws_chat *wc, char *out, size_t outlen)
{
    if (!wc->redis)
        return -1;
    return bus_status(wc->bus, out, outlen);
}

void ws_chat_free(struct ws_chat *wc)
{
    if (wc == NULL)
        return;
    bus_close(wc->bus);
    ws_order_free_all(wc);
    hub_free(&wc->hub);
    free(wc->wbuf);
    free(wc);
}

void ws_chat_poll(struct ws_chat *wc)
{
    bus_poll(wc->bus);
}

size_t ws_chat_connections(const struct ws_chat *wc)
{
    return wc->nconns;
}

size_t ws_chat_inflight(const struct ws_chat *wc)
{
    return wc->inflight;
}

void ws_chat_stop_accepting(struct ws_chat *wc)
{
    wc->closing = 1;
    wc->close_code = 1001;
}

void ws_chat_close_all(struct ws_chat *wc, int code, const char *reason)
{
    size_t i = 0;
    uint64_t k;
    void *v;

    wc->closing = 1;
    wc->close_code = code;
    while (hmap_next(&wc->hub.conns, &i, &k, &v))
        ws_conn_close(v, code, reason);
}
