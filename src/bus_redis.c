/*
 * bus_redis.c - the bus for many nodes: fan-out through one Redis
 * PUBLISH/SUBSCRIBE channel, presence as per-session entries with a TTL.
 *
 * Fan-out. Every node subscribes to one channel, RK_CHANNEL":DB" (pub/sub
 * is not scoped by database, the name is), and every
 * event goes out on it once, whatever the number of its targets; each node
 * delivers to the targets it has sessions for and ignores the rest. The
 * origin node delivers its own events at once, without the round trip,
 * and skips them when they come back. One channel rather than one per
 * user or per conversation: subscriptions never change as users come and
 * go (no SUBSCRIBE on the connect path, no window in which a new session's
 * channel is not yet subscribed), a group message is one PUBLISH, and
 * presence, which goes to contacts rather than to a conversation, needs
 * no channel of its own. The cost is that every node reads every event:
 * fine for a handful of nodes; docs/design.md says when to change it.
 * Redis pub/sub is the fast path only: Postgres is the truth, and a
 * client that missed frames (a node or Redis restarting) gets them back
 * with `sync`.
 *
 * Message on the channel: a header line, then the frame as is:
 *   C1 ORIGIN KIND EXCEPT_USER EXCEPT_CONN SUBJECT CONV SEQ N T1 ... TN\n FRAME
 * ORIGIN is the publishing node's id, or "-" for events every node
 * delivers, its origin included (presence decided in Redis).
 *
 * Presence. Each ready session is a member "NODE:CONN" of the sorted set
 * RK_PRESENCE<user>, scored with its expiry (Redis's clock, in ms); the
 * set RK_ONLINE indexes users by their latest expiry. The node refreshes
 * its sessions every TTL/3 (heartbeat). Joining and leaving are Lua
 * scripts, so "was this the user's first session in the cluster" and
 * "was it the last" are decided atomically, and the script itself
 * publishes `presence`. A node killed with SIGKILL stops refreshing: every
 * node runs a janitor every TTL/3 that removes expired sessions and
 * publishes `presence` offline for users left with none (to all of their
 * contacts, "subject" mode: each node finds them among its own users).
 *
 * Redis down: events are still delivered on this node; presence is
 * decided by this node alone; both connections reconnect with back-off,
 * and once back the heartbeat re-registers every session here at once.
 *
 * Threads: publish/poll/session run on the service thread; one thread
 * (the "ops" thread) owns the connection that publishes, runs the scripts
 * and keeps the mirror of this node's sessions; one thread owns the
 * subscribing connection. They hand over under `lock`.
 */
#include "bus.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hmap.h"
#include "log.h"
#include "metrics.h"
#include "redis_conn.h"
#include "util.h"

#define BR_OUT_MAX 200000         /* queued for Redis before dropping */
#define BR_IN_MAX 1000000         /* received, not yet delivered */
#define BR_TIMEOUT_MS 2000        /* each Redis command's time limit */
#define BR_JANITOR_LIMIT 500      /* expired users handled per run */
#define BR_NODE_MAX 64

enum br_item_kind { BRI_PUBLISH = 1, BRI_JOIN, BRI_LEAVE };

/* Work for the ops thread. */
struct br_item {
    struct br_item *next;
    enum br_item_kind kind;
    char *payload;                /* PUBLISH: the message; JOIN/LEAVE: the
                                     presence message, if any */
    size_t len;
    int64_t user_id;
    uint64_t conn_id;
    int edge;
    int64_t *contacts;
    size_t ncontacts;
};

/* The ops thread's mirror of this node's sessions, by user. */
struct br_user {
    int64_t user_id;
    uint64_t *conns;
    size_t nconns;
    int64_t *contacts;
    size_t ncontacts;
};

struct bus_redis {
    struct bus base;
    struct redis_url url;
    char node[BR_NODE_MAX];
    char channel[64];             /* RK_CHANNEL ":" db */
    int ttl_ms;

    /* service thread only: this node's own events */
    struct bus_event *lhead, *ltail;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct bus_event *ihead, *itail;    /* received or fallen back */
    size_t ilen;
    struct br_item *ohead, *otail;      /* for the ops thread */
    size_t olen;
    int stopping;
    char ops_err[REDIS_CONN_ERRLEN];    /* "" when up */
    char sub_err[REDIS_CONN_ERRLEN];
    atomic_int ops_up, sub_up;

    pthread_t ops_thread, sub_thread;
    int threads;

    /* ops thread only */
    redisContext *ctx;
    char sha_join[41], sha_leave[41], sha_janitor[41];
    struct hmap mirror;                 /* user id -> struct br_user */
};

/* ---- the scripts ---------------------------------------------------------- */

/* Now, in ms, on Redis's clock (one clock for every node). */
#define BR_LUA_NOW \
    "local t = redis.call('TIME')\n" \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* How many nodes hold the sessions in sorted set k (members NODE:CONN). */
#define BR_LUA_NODES \
    "local function nodes(k)\n" \
    "  local seen, n = {}, 0\n" \
    "  for _, m in ipairs(redis.call('ZRANGE', k, 0, -1)) do\n" \
    "    local nd = string.match(m, '^(.*):[^:]*$')\n" \
    "    if nd and not seen[nd] then seen[nd] = true; n = n + 1 end\n" \
    "  end\n" \
    "  return n\n" \
    "end\n" \
    "local function spread(ch, user, n)\n" \
    "  redis.call('PUBLISH', ch, 'C1 - 7 0 0 ' .. n .. ' 0 0 1 ' .. user .." \
    " '\\n')\n" \
    "end\n"

/* KEYS: presence set, online index, channel. ARGV: ttl ms, key ttl ms,
 * user id, presence message ("" for none), members... Returns how many
 * live sessions the user had before. Publishes SPREAD when the number of
 * nodes holding the user's sessions changed (a node that died counts
 * until its sessions expire). */
static const char br_lua_join[] =
    BR_LUA_NOW
    BR_LUA_NODES
    "local exp = string.format('%.0f', now + tonumber(ARGV[1]))\n"
    "local n0 = nodes(KEYS[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "local before = redis.call('ZCARD', KEYS[1])\n"
    "for i = 5, #ARGV do redis.call('ZADD', KEYS[1], exp, ARGV[i]) end\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "redis.call('ZADD', KEYS[2], 'GT', exp, ARGV[3])\n"
    "if before == 0 and ARGV[4] ~= '' then\n"
    "  redis.call('PUBLISH', KEYS[3], ARGV[4])\n"
    "end\n"
    "local n1 = nodes(KEYS[1])\n"
    "if n1 ~= n0 and (n0 > 0 or n1 > 1) then spread(KEYS[3], ARGV[3], n1) end\n"
    "return before\n";

/* KEYS: presence set, online index, channel. ARGV: member, user id,
 * presence message. Publishes when this call took the user's last
 * sessions away (not when a janitor already had). */
static const char br_lua_leave[] =
    BR_LUA_NOW
    BR_LUA_NODES
    "local n0 = nodes(KEYS[1])\n"
    "local removed = redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "removed = removed + redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "if redis.call('ZCARD', KEYS[1]) > 0 then\n"
    "  local n1 = nodes(KEYS[1])\n"
    "  if n1 ~= n0 then spread(KEYS[3], ARGV[2], n1) end\n"
    "  return 0\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('ZREM', KEYS[2], ARGV[2])\n"
    "if removed > 0 and ARGV[3] ~= '' then\n"
    "  redis.call('PUBLISH', KEYS[3], ARGV[3])\n"
    "end\n"
    "return removed > 0 and 1 or 0\n";

/* KEYS: online index, channel. ARGV: presence key prefix, limit. For the
 * users whose sessions all expired: offline to their contacts. */
static const char br_lua_janitor[] =
    BR_LUA_NOW
    "local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now,"
    " 'LIMIT', 0, tonumber(ARGV[2]))\n"
    "local n = 0\n"
    "for _, u in ipairs(users) do\n"
    "  local k = ARGV[1] .. u\n"
    "  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)\n"
    "  local top = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')\n"
    "  if #top == 0 then\n"
    "    redis.call('DEL', k)\n"
    "    redis.call('ZREM', KEYS[1], u)\n"
    "    redis.call('PUBLISH', KEYS[2], 'C1 - 4 0 0 ' .. u .. ' 0 0 0\\n'"
    " .. '{\"type\":\"presence\",\"user_id\":' .. u .. ',\"online\":false}')\n"
    "    n = n + 1\n"
    "  else\n"
    "    redis.call('ZADD', KEYS[1], top[2], u)\n"
    "  end\n"
    "end\n"
    "return n\n";

/* ---- messages on the channel ---------------------------------------------- */

/* The channel message for ev; origin NULL means "-". */
static char *br_encode(const char *origin, const struct bus_event *ev,
                       size_t *len)
{
    struct util_buf b = { 0 };
    size_t i;

    util_buf_printf(&b, "C1 %s %d %lld %llu %lld %lld %lld %zu",
                    origin ? origin : "-", (int)ev->kind,
                    (long long)ev->except_user,
                    (unsigned long long)ev->except_conn,
                    (long long)ev->subject, (long long)ev->conv_id,
                    (long long)ev->seq, ev->ntargets);
    for (i = 0; i < ev->ntargets; i++)
        util_buf_printf(&b, " %lld", (long long)ev->targets[i]);
    util_buf_puts(&b, "\n");
    util_buf_append(&b, ev->frame, ev->len);
    *len = b.len;
    return util_buf_steal(&b);
}

static int br_next_int(const char **p, const char *end, long long *out)
{
    const char *s = *p;
    long long v = 0;
    int neg = 0, digits = 0;

    while (s < end && *s == ' ')
        s++;
    if (s < end && *s == '-') {
        neg = 1;
        s++;
    }
    for (; s < end && *s >= '0' && *s <= '9'; s++, digits++) {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    if (!digits)
        return -1;
    *out = neg ? -v : v;
    *p = s;
    return 0;
}

/* Parses a channel message. NULL when it is malformed or our own. */
static struct bus_event *br_decode(const struct bus_redis *br,
                                   const char *msg, size_t len)
{
    const char *end = msg + len, *p, *nl = memchr(msg, '\n', len);
    const char *origin, *oend;
    long long kind, except_user, except_conn, subject, conv, seq, n, t;
    struct bus_event *ev;
    size_t i;

    if (nl == NULL || len < 3 || memcmp(msg, "C1 ", 3) != 0)
        return NULL;
    origin = msg + 3;
    oend = memchr(origin, ' ', (size_t)(nl - origin));
    if (oend == NULL)
        return NULL;
    if ((size_t)(oend - origin) == strlen(br->node) &&
        memcmp(origin, br->node, (size_t)(oend - origin)) == 0)
        return NULL;              /* delivered here when published */
    p = oend;
    if (br_next_int(&p, nl, &kind) || br_next_int(&p, nl, &except_user) ||
        br_next_int(&p, nl, &except_conn) || br_next_int(&p, nl, &subject) ||
        br_next_int(&p, nl, &conv) || br_next_int(&p, nl, &seq) ||
        br_next_int(&p, nl, &n))
        return NULL;
    if (kind < BUS_MESSAGE || kind > BUS_SPREAD || n < 0 || n > 1000000)
        return NULL;
    ev = bus_event_new((enum bus_kind)kind, NULL, 0, nl + 1,
                       (size_t)(end - nl - 1));
    ev->targets = xrealloc(ev->targets, ((size_t)n + 1) * sizeof *ev->targets);
    for (i = 0; i < (size_t)n; i++) {
        if (br_next_int(&p, nl, &t)) {
            bus_event_free(ev);
            return NULL;
        }
        ev->targets[i] = t;
    }
    ev->ntargets = (size_t)n;
    ev->except_user = except_user;
    /* A connection id means something on its own node only. */
    ev->except_conn = 0;
    ev->subject = subject;
    ev->conv_id = conv;
    ev->seq = seq;
    ev->remote = origin[0] != '-' || oend - origin != 1;
    return ev;
}

/* ---- hand-over between threads ------------------------------------------- */

/* Queues ev for delivery by the service thread (any thread; lock not
 * held). */
static void br_inbound(struct bus_redis *br, struct bus_event *ev)
{
    int wake;

    pthread_mutex_lock(&br->lock);
    if (br->ilen >= BR_IN_MAX) {
        pthread_mutex_unlock(&br->lock);
        bus_event_free(ev);
        metrics_counter_inc(metrics_bus_dropped);
        return;
    }
    ev->next = NULL;
    wake = br->ihead == NULL;
    if (br->itail)
        br->itail->next = ev;
    else
        br->ihead = ev;
    br->itail = ev;
    br->ilen++;
    pthread_mutex_unlock(&br->lock);
    if (wake && br->base.wake)
        br->base.wake(br->base.wake_arg);
}

static void br_item_free(struct br_item *it)
{
    free(it->payload);
    free(it->contacts);
    free(it);
}

/* Hands an item to the ops thread. Publishes are dropped while Redis is
 * down or the queue is full (this node has delivered them already);
 * sessions are always queued (the mirror must follow them). */
static void br_outbound(struct bus_redis *br, struct br_item *it)
{
    pthread_mutex_lock(&br->lock);
    if (it->kind == BRI_PUBLISH &&
        (br->olen >= BR_OUT_MAX || !atomic_load(&br->ops_up))) {
        pthread_mutex_unlock(&br->lock);
        br_item_free(it);
        metrics_counter_inc(metrics_bus_dropped);
        return;
    }
    it->next = NULL;
    if (br->otail)
        br->otail->next = it;
    else
        br->ohead = it;
    br->otail = it;
    br->olen++;
    if (br->olen == 1)
        pthread_cond_signal(&br->cond);
    pthread_mutex_unlock(&br->lock);
}

/* ---- the service thread's side -------------------------------------------- */

static int br_publish(struct bus *b, struct bus_event *ev)
{
    struct bus_redis *br = (struct bus_redis *)b;
    struct br_item *it = xcalloc(1, sizeof *it);
    int was_empty = br->lhead == NULL;

    it->kind = BRI_PUBLISH;
    it->payload = br_encode(br->node, ev, &it->len);
    br_outbound(br, it);
    ev->next = NULL;
    if (br->ltail)
        br->ltail->next = ev;
    else
        br->lhead = ev;
    br->ltail = ev;
    if (was_empty && b->wake)
        b->wake(b->wake_arg);
    return 0;
}

static size_t br_deliver_list(struct bus *b, struct bus_event *ev)
{
    struct bus_event *next;
    size_t n = 0;

    for (; ev; ev = next) {
        next = ev->next;
        b->deliver(b->arg, ev);
        bus_event_free(ev);
        n++;
    }
    return n;
}

static size_t br_poll(struct bus *b)
{
    struct bus_redis *br = (struct bus_redis *)b;
    struct bus_event *local = br->lhead, *in;
    size_t n, nin;

    br->lhead = br->ltail = NULL;
    n = br_deliver_list(b, local);
    pthread_mutex_lock(&br->lock);
    in = br->ihead;
    nin = br->ilen;
    br->ihead = br->itail = NULL;
    br->ilen = 0;
    pthread_mutex_unlock(&br->lock);
    if (nin)
        metrics_counter_add(metrics_bus_received, nin);
    return n + br_deliver_list(b, in);
}

static void br_session(struct bus *b, int64_t user_id, uint64_t conn_id,
                       int online, int edge, const int64_t *contacts,
                       size_t n)
{
    struct bus_redis *br = (struct bus_redis *)b;
    struct br_item *it = xcalloc(1, sizeof *it);

    it->kind = online ? BRI_JOIN : BRI_LEAVE;
    it->user_id = user_id;
    it->conn_id = conn_id;
    it->edge = edge;
    if (n) {
        it->contacts = xmalloc(n * sizeof *contacts);
        memcpy(it->contacts, contacts, n * sizeof *contacts);
        it->ncontacts = n;
    }
    br_outbound(br, it);
}

static int br_status(struct bus *b, char *out, size_t outlen)
{
    struct bus_redis *br = (struct bus_redis *)b;
    int ok;

    pthread_mutex_lock(&br->lock);
    ok = atomic_load(&br->ops_up) && atomic_load(&br->sub_up);
    if (ok)
        snprintf(out, outlen, "ok");
    else
        snprintf(out, outlen, "%s", br->ops_err[0] ? br->ops_err :
                 br->sub_err[0] ? br->sub_err : "connecting");
    pthread_mutex_unlock(&br->lock);
    return ok;
}

/* ---- the ops thread ------------------------------------------------------- */

static void br_set_up(struct bus_redis *br, atomic_int *flag, char *errbuf,
                      const char *err)
{
    pthread_mutex_lock(&br->lock);
    snprintf(errbuf, REDIS_CONN_ERRLEN, "%s", err ? err : "");
    atomic_store(flag, err == NULL);
    pthread_mutex_unlock(&br->lock);
    metrics_gauge_set(metrics_redis_up,
                      atomic_load(&br->ops_up) && atomic_load(&br->sub_up));
}

/* The mirror: */
static void br_mirror_join(struct bus_redis *br, const struct br_item *it)
{
    struct br_user *u = hmap_get(&br->mirror, (uint64_t)it->user_id);

    if (u == NULL) {
        u = xcalloc(1, sizeof *u);
        u->user_id = it->user_id;
        hmap_put(&br->mirror, (uint64_t)it->user_id, u);
    }
    u->conns = xrealloc(u->conns, (u->nconns + 1) * sizeof *u->conns);
    u->conns[u->nconns++] = it->conn_id;
    /* The newest contacts win (conversations only add contacts). */
    if (it->ncontacts >= u->ncontacts) {
        free(u->contacts);
        u->contacts = NULL;
        u->ncontacts = it->ncontacts;
        if (it->ncontacts) {
            u->contacts = xmalloc(it->ncontacts * sizeof *u->contacts);
            memcpy(u->contacts, it->contacts,
                   it->ncontacts * sizeof *u->contacts);
        }
    }
}

static void br_user_free(struct br_user *u)
{
    free(u->conns);
    free(u->contacts);
    free(u);
}

static void br_mirror_leave(struct bus_redis *br, const struct br_item *it)
{
    struct br_user *u = hmap_get(&br->mirror, (uint64_t)it->user_id);
    size_t i;

    if (u == NULL)
        return;
    for (i = 0; i < u->nconns; i++)
        if (u->conns[i] == it->conn_id) {
            u->conns[i] = u->conns[--u->nconns];
            break;
        }
    if (u->nconns == 0) {
        hmap_del(&br->mirror, (uint64_t)u->user_id);
        br_user_free(u);
    }
}

static char *br_presence_msg(int64_t user_id, int online,
                             const int64_t *contacts, size_t n, size_t *len)
{
    struct bus_event *ev;
    char *msg;

    if (n == 0) {
        *len = 0;
        return xstrdup("");
    }
    ev = bus_presence_event(user_id, online, contacts, n);
    msg = br_encode(NULL, ev, len);
    bus_event_free(ev);
    return msg;
}

static void br_disconnect(struct bus_redis *br, const char *why)
{
    char err[REDIS_CONN_ERRLEN];

    snprintf(err, sizeof err, "%s", why && *why ? why : "connection lost");
    if (br->ctx) {
        redisFree(br->ctx);
        br->ctx = NULL;
        log_event(LOG_ERROR, "redis_error", NULL,
                  LOG_STR("connection", "ops"), LOG_STR("error", err),
                  LF_END);
    }
    br_set_up(br, &br->ops_up, br->ops_err, err);
}

static int br_load_script(redisContext *c, const char *lua, char *sha,
                          char *err, size_t errlen)
{
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", lua);

    if (r == NULL) {
        snprintf(err, errlen, "%s", c->errstr);
        return -1;
    }
    if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        snprintf(err, errlen, "SCRIPT LOAD: %.*s", (int)r->len,
                 r->str ? r->str : "");
        freeReplyObject(r);
        return -1;
    }
    memcpy(sha, r->str, 40);
    sha[40] = '\0';
    freeReplyObject(r);
    return 0;
}

static int br_connect(struct bus_redis *br, char *err, size_t errlen)
{
    redisContext *c = redis_connect(&br->url, BR_TIMEOUT_MS, err, errlen);

    if (c == NULL)
        return -1;
    if (br_load_script(c, br_lua_join, br->sha_join, err, errlen) ||
        br_load_script(c, br_lua_leave, br->sha_leave, err, errlen) ||
        br_load_script(c, br_lua_janitor, br->sha_janitor, err, errlen)) {
        redisFree(c);
        return -1;
    }
    br->ctx = c;
    return 0;
}

/* Appends the join script for one user with these members. */
static void br_append_join(struct bus_redis *br, int64_t user_id,
                           const uint64_t *conns, size_t nconns,
                           const char *msg, size_t msglen)
{
    size_t argc = 9 + nconns, i;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *lens = xmalloc(argc * sizeof *lens);
    char key[64], ttl[24], keyttl[24], uid[24];
    char *members = xmalloc(nconns * (BR_NODE_MAX + 24) + 1), *m = members;

    snprintf(key, sizeof key, RK_PRESENCE "%lld", (long long)user_id);
    snprintf(ttl, sizeof ttl, "%d", br->ttl_ms);
    snprintf(keyttl, sizeof keyttl, "%d", br->ttl_ms * 3);
    snprintf(uid, sizeof uid, "%lld", (long long)user_id);
    argv[0] = "EVALSHA"; argv[1] = br->sha_join; argv[2] = "3";
    argv[3] = key; argv[4] = RK_ONLINE; argv[5] = br->channel;
    argv[6] = ttl; argv[7] = keyttl; argv[8] = uid;
    for (i = 0; i < 9; i++)
        lens[i] = strlen(argv[i]);
    /* ARGV[4] is the message: insert it before the members. */
    argv = xrealloc(argv, (argc + 1) * sizeof *argv);
    lens = xrealloc(lens, (argc + 1) * sizeof *lens);
    argv[9] = msg;
    lens[9] = msglen;
    for (i = 0; i < nconns; i++) {
        int n = sprintf(m, "%s:%llu", br->node, (unsigned long long)conns[i]);
        argv[10 + i] = m;
        lens[10 + i] = (size_t)n;
        m += n + 1;
    }
    redisAppendCommandArgv(br->ctx, (int)argc + 1, argv, lens);
    free(argv);
    free(lens);
    free(members);
}

static void br_append_leave(struct bus_redis *br, const struct br_item *it,
                            const char *msg, size_t msglen)
{
    char key[64], member[BR_NODE_MAX + 24], uid[24];
    const char *argv[9];
    size_t lens[9], i;

    snprintf(key, sizeof key, RK_PRESENCE "%lld", (long long)it->user_id);
    snprintf(member, sizeof member, "%s:%llu", br->node,
             (unsigned long long)it->conn_id);
    snprintf(uid, sizeof uid, "%lld", (long long)it->user_id);
    argv[0] = "EVALSHA"; argv[1] = br->sha_leave; argv[2] = "3";
    argv[3] = key; argv[4] = RK_ONLINE; argv[5] = br->channel;
    argv[6] = member; argv[7] = uid; argv[8] = msg;
    for (i = 0; i < 8; i++)
        lens[i] = strlen(argv[i]);
    lens[8] = msglen;
    redisAppendCommandArgv(br->ctx, 9, argv, lens);
}

/* Redis is not there: this node decides presence alone. */
static void br_fallback(struct bus_redis *br, const struct br_item *it)
{
    if ((it->kind == BRI_JOIN || it->kind == BRI_LEAVE) && it->edge &&
        it->ncontacts)
        br_inbound(br, bus_presence_event(it->user_id, it->kind == BRI_JOIN,
                                          it->contacts, it->ncontacts));
    else if (it->kind == BRI_PUBLISH)
        metrics_counter_inc(metrics_bus_dropped);
}

/* Reads n replies; returns how many were read before an error (n: all),
 * with the error in err. */
static size_t br_read_replies(struct bus_redis *br, size_t n, char *err,
                              size_t errlen)
{
    size_t i;

    for (i = 0; i < n; i++) {
        void *reply = NULL;
        redisReply *r;
        if (redisGetReply(br->ctx, &reply) != REDIS_OK || reply == NULL) {
            snprintf(err, errlen, "%s", br->ctx->errstr[0] ?
                     br->ctx->errstr : "no reply");
            return i;
        }
        r = reply;
        if (r->type == REDIS_REPLY_ERROR) {
            /* NOSCRIPT (a flushed script cache) and the like: start over
             * on a new connection, which loads the scripts again. */
            snprintf(err, errlen, "%.*s", (int)r->len, r->str);
            freeReplyObject(r);
            return i;
        }
        freeReplyObject(r);
    }
    return n;
}

/* Runs a batch of items in one pipeline. */
static void br_run_items(struct bus_redis *br, struct br_item *items)
{
    struct br_item *it, *next;
    char err[REDIS_CONN_ERRLEN];
    size_t n = 0, done, npub = 0, i;

    for (it = items; it; it = it->next) {
        if (it->kind == BRI_JOIN)
            br_mirror_join(br, it);
        else if (it->kind == BRI_LEAVE)
            br_mirror_leave(br, it);
    }
    if (br->ctx) {
        for (it = items; it; it = it->next, n++) {
            if (it->kind == BRI_PUBLISH) {
                redisAppendCommand(br->ctx, "PUBLISH %s %b", br->channel,
                                   it->payload, it->len);
                npub++;
            } else {
                size_t len;
                char *msg = br_presence_msg(it->user_id, it->kind == BRI_JOIN,
                                            it->contacts, it->ncontacts, &len);
                if (it->kind == BRI_JOIN)
                    br_append_join(br, it->user_id, &it->conn_id, 1, msg,
                                   len);
                else
                    br_append_leave(br, it, msg, len);
                free(msg);
            }
        }
        done = br_read_replies(br, n, err, sizeof err);
        if (done < n)
            br_disconnect(br, err);
        else
            metrics_counter_add(metrics_bus_published, npub);
    } else {
        done = 0;
    }
    for (it = items, i = 0; it; it = next, i++) {
        next = it->next;
        if (i >= done)
            br_fallback(br, it);
        br_item_free(it);
    }
}

/* Refreshes every session of this node; a user whose sessions had all
 * expired (Redis was away, or this node stalled) is announced again. */
static void br_heartbeat(struct bus_redis *br)
{
    char err[REDIS_CONN_ERRLEN];
    size_t i = 0, n = 0;
    uint64_t k;
    void *v;

    while (br->ctx && hmap_next(&br->mirror, &i, &k, &v)) {
        struct br_user *u = v;
        size_t len;
        char *msg = br_presence_msg(u->user_id, 1, u->contacts, u->ncontacts,
                                    &len);
        br_append_join(br, u->user_id, u->conns, u->nconns, msg, len);
        free(msg);
        n++;
    }
    if (n && br_read_replies(br, n, err, sizeof err) < n)
        br_disconnect(br, err);
}

static void br_janitor(struct bus_redis *br)
{
    redisReply *r;

    if (br->ctx == NULL)
        return;
    r = redisCommand(br->ctx, "EVALSHA %s 2 %s %s %s %d", br->sha_janitor,
                     RK_ONLINE, br->channel, RK_PRESENCE, BR_JANITOR_LIMIT);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        char err[REDIS_CONN_ERRLEN];
        snprintf(err, sizeof err, "%s", r ? r->str : br->ctx->errstr);
        if (r)
            freeReplyObject(r);
        br_disconnect(br, err);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        log_event(LOG_INFO, "presence_expired", NULL,
                  LOG_INT("users", r->integer), LF_END);
    freeReplyObject(r);
}

static void br_timed_wait(struct bus_redis *br, int64_t until_ms)
{
    struct timespec ts;
    int64_t wait = until_ms - util_now_ms();

    if (wait <= 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait / 1000;
    ts.tv_nsec += (wait % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&br->cond, &br->lock, &ts);
}

static void *br_ops_main(void *arg)
{
    struct bus_redis *br = arg;
    int64_t period = br->ttl_ms / 3, next_connect = 0;
    int64_t next_hb = util_now_ms() + period;
    int64_t next_janitor = util_now_ms() + period / 2 +
                           (int64_t)(random() % (period / 2 + 1));
    int attempt = 0, stopping = 0;

    for (;;) {
        struct br_item *items;
        int64_t now = util_now_ms(), due;

        if (br->ctx == NULL && now >= next_connect) {
            char err[REDIS_CONN_ERRLEN];
            if (br_connect(br, err, sizeof err) == 0) {
                attempt = 0;
                br_set_up(br, &br->ops_up, br->ops_err, NULL);
                log_event(LOG_INFO, "redis_connected", NULL,
                          LOG_STR("connection", "ops"),
                          LOG_STR("host", br->url.host),
                          LOG_INT("port", br->url.port), LF_END);
                next_hb = 0;     /* register this node's sessions now */
            } else {
                if (attempt == 0)
                    log_event(LOG_ERROR, "redis_error", NULL,
                              LOG_STR("connection", "ops"),
                              LOG_STR("error", err), LF_END);
                br_set_up(br, &br->ops_up, br->ops_err, err);
                next_connect = now + redis_backoff_ms(attempt++);
            }
        }
        pthread_mutex_lock(&br->lock);
        due = next_hb < next_janitor ? next_hb : next_janitor;
        if (br->ctx == NULL && next_connect < due)
            due = next_connect;
        if (br->ohead == NULL && !br->stopping)
            br_timed_wait(br, due);
        items = br->ohead;
        br->ohead = br->otail = NULL;
        br->olen = 0;
        stopping = br->stopping;
        pthread_mutex_unlock(&br->lock);

        if (items)
            br_run_items(br, items);
        if (stopping)
            break;
        now = util_now_ms();
        if (now >= next_hb) {
            br_heartbeat(br);
            next_hb = now + period;
        }
        if (now >= next_janitor) {
            br_janitor(br);
            next_janitor = now + period;
        }
    }
    if (br->ctx)
        redisFree(br->ctx);
    br->ctx = NULL;
    return NULL;
}

/* ---- the subscriber thread ------------------------------------------------ */

static void br_on_message(struct bus_redis *br, redisReply *r)
{
    struct bus_event *ev;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;                   /* subscribe confirmations and the like */
    ev = br_decode(br, r->element[2]->str, r->element[2]->len);
    if (ev)
        br_inbound(br, ev);
}

static int br_stopping(struct bus_redis *br)
{
    int s;

    pthread_mutex_lock(&br->lock);
    s = br->stopping;
    pthread_mutex_unlock(&br->lock);
    return s;
}

static void *br_sub_main(void *arg)
{
    struct bus_redis *br = arg;
    redisContext *c = NULL;
    int attempt = 0;
    char err[REDIS_CONN_ERRLEN];

    while (!br_stopping(br)) {
        struct pollfd pfd;
        void *reply;

        if (c == NULL) {
            c = redis_connect(&br->url, BR_TIMEOUT_MS, err, sizeof err);
            if (c) {
                redisReply *r = redisCommand(c, "SUBSCRIBE %s", br->channel);
                if (r == NULL || r->type == REDIS_REPLY_ERROR) {
                    snprintf(err, sizeof err, "SUBSCRIBE: %s",
                             r ? r->str : c->errstr);
                    redisFree(c);
                    c = NULL;
                }
                if (r)
                    freeReplyObject(r);
            }
            if (c == NULL) {
                if (attempt == 0)
                    log_event(LOG_ERROR, "redis_error", NULL,
                              LOG_STR("connection", "subscribe"),
                              LOG_STR("error", err), LF_END);
                br_set_up(br, &br->sub_up, br->sub_err, err);
                pthread_mutex_lock(&br->lock);
                if (!br->stopping)
                    br_timed_wait(br, util_now_ms() +
                                      redis_backoff_ms(attempt++));
                pthread_mutex_unlock(&br->lock);
                continue;
            }
            attempt = 0;
            br_set_up(br, &br->sub_up, br->sub_err, NULL);
            log_event(LOG_INFO, "redis_connected", NULL,
                      LOG_STR("connection", "subscribe"),
                      LOG_STR("host", br->url.host),
                      LOG_INT("port", br->url.port), LF_END);
        }
        /* Replies already buffered first, then wait for more. */
        for (;;) {
            reply = NULL;
            if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
                snprintf(err, sizeof err, "%s", c->errstr);
                goto lost;
            }
            if (reply == NULL)
                break;
            br_on_message(br, reply);
            freeReplyObject(reply);
        }
        pfd.fd = c->fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, 250) <= 0)
            continue;             /* timeout (check stopping) or EINTR */
        if (redisBufferRead(c) != REDIS_OK) {
            snprintf(err, sizeof err, "%s", c->errstr[0] ? c->errstr :
                     "connection closed");
            goto lost;
        }
        continue;
lost:
        log_event(LOG_ERROR, "redis_error", NULL,
                  LOG_STR("connection", "subscribe"), LOG_STR("error", err),
                  LF_END);
        br_set_up(br, &br->sub_up, br->sub_err, err);
        redisFree(c);
        c = NULL;
    }
    if (c)
        redisFree(c);
    return NULL;
}

/* ---- life ----------------------------------------------------------------- */

static void br_close(struct bus *b)
{
    struct bus_redis *br = (struct bus_redis *)b;
    struct bus_event *ev, *next;
    size_t i = 0;
    uint64_t k;
    void *v;

    if (br->threads) {
        pthread_mutex_lock(&br->lock);
        br->stopping = 1;
        pthread_cond_broadcast(&br->cond);
        pthread_mutex_unlock(&br->lock);
        pthread_join(br->ops_thread, NULL);
        pthread_join(br->sub_thread, NULL);
    }
    while (br->ohead) {
        struct br_item *it = br->ohead;
        br->ohead = it->next;
        br_item_free(it);
    }
    for (ev = br->lhead; ev; ev = next) {
        next = ev->next;
        bus_event_free(ev);
    }
    for (ev = br->ihead; ev; ev = next) {
        next = ev->next;
        bus_event_free(ev);
    }
    while (hmap_next(&br->mirror, &i, &k, &v))
        br_user_free(v);
    hmap_free(&br->mirror);
    pthread_mutex_destroy(&br->lock);
    pthread_cond_destroy(&br->cond);
    metrics_gauge_set(metrics_redis_up, 0);
    free(br);
}

static const struct bus_ops bus_redis_ops = {
    .name = "redis",
    .publish = br_publish,
    .poll = br_poll,
    .session = br_session,
    .status = br_status,
    .close = br_close,
};

struct bus *bus_redis_create(const struct bus_redis_config *cfg,
                             bus_deliver_cb deliver, void *arg,
                             bus_wake_cb wake, void *wake_arg, char *err,
                             size_t errlen)
{
    struct bus_redis *br = xcalloc(1, sizeof *br);
    const char *p;

    if (redis_url_parse(cfg->url, &br->url, err, errlen) != 0) {
        free(br);
        return NULL;
    }
    if (cfg->node_id == NULL || cfg->node_id[0] == '\0' ||
        strlen(cfg->node_id) >= BR_NODE_MAX) {
        snprintf(err, errlen, "node id must be 1 to %d characters",
                 BR_NODE_MAX - 1);
        free(br);
        return NULL;
    }
    for (p = cfg->node_id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' ||
              *p == '-')) {
            snprintf(err, errlen, "node id: letters, digits, '.', '_' and "
                     "'-' only");
            free(br);
            return NULL;
        }
    if (strcmp(cfg->node_id, "-") == 0) {
        snprintf(err, errlen, "node id '-' is reserved");
        free(br);
        return NULL;
    }
    snprintf(br->node, sizeof br->node, "%s", cfg->node_id);
    /* Pub/sub ignores SELECT: the database number in the channel keeps
     * clusters on different databases of one Redis apart. */
    snprintf(br->channel, sizeof br->channel, RK_CHANNEL ":%d", br->url.db);
    br->ttl_ms = cfg->presence_ttl_ms > 0 ? cfg->presence_ttl_ms : 30000;
    if (metrics_redis_up == NULL) {
        struct metrics_family *f = metrics_find("chat_redis_up");
        if (f == NULL)
            f = metrics_gauge_new("chat_redis_up", "1 while both Redis "
                                  "connections of the bus (publish, "
                                  "subscribe) are up.", NULL);
        metrics_redis_up = metrics_child(f, NULL);
    }
    br->base.ops = &bus_redis_ops;
    br->base.deliver = deliver;
    br->base.arg = arg;
    br->base.wake = wake;
    br->base.wake_arg = wake_arg;
    snprintf(br->ops_err, sizeof br->ops_err, "connecting");
    snprintf(br->sub_err, sizeof br->sub_err, "connecting");
    pthread_mutex_init(&br->lock, NULL);
    pthread_cond_init(&br->cond, NULL);
    if (pthread_create(&br->ops_thread, NULL, br_ops_main, br) != 0) {
        snprintf(err, errlen, "cannot start the Redis thread");
        br_close(&br->base);
        return NULL;
    }
    if (pthread_create(&br->sub_thread, NULL, br_sub_main, br) != 0) {
        pthread_mutex_lock(&br->lock);
        br->stopping = 1;
        pthread_cond_broadcast(&br->cond);
        pthread_mutex_unlock(&br->lock);
        pthread_join(br->ops_thread, NULL);
        snprintf(err, errlen, "cannot start the Redis subscriber thread");
        br_close(&br->base);
        return NULL;
    }
    br->threads = 1;
    return &br->base;
}
