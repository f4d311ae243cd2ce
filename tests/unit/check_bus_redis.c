/*
 * check_bus_redis.c - the Redis bus (bus_redis.c) and cache (cache.c)
 * against a real Redis: two buses in one process act as two nodes.
 *
 * Needs CHATD_TEST_REDIS_URL (tests/servers.sh starts a throwaway
 * redis-server); without it the program exits 77, which automake reports
 * as SKIP and scripts/test.sh counts as a failure. It uses database 14
 * of that server and flushes it before each test.
 *
 * What it checks: an event published on one node is delivered once on
 * that node (not again when it comes back from Redis) and on the other
 * node with its targets, frame bytes and except_user intact and the
 * origin's connection id cleared; presence is decided cluster-wide (the
 * first session anywhere announces, a second one on another node does
 * not but tells both nodes the user is on two, the last one leaving
 * announces offline); a node that stops without
 * leaving (as with SIGKILL) has its sessions expire and the other node's
 * janitor announces the user offline; /ready's status text; the cache's
 * session and member entries, their deletion and their metrics.
 */
#include <check.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "cache.h"
#include "metrics.h"
#include "redis_conn.h"
#include "util.h"

#define MAXEV 64

struct node_log {
    int n;
    enum bus_kind kinds[MAXEV];
    int64_t targets[MAXEV][4];
    size_t ntargets[MAXEV];
    int64_t subject[MAXEV];
    int64_t except_user[MAXEV];
    uint64_t except_conn[MAXEV];
    int remote[MAXEV];
    char frames[MAXEV][128];
    size_t lens[MAXEV];
};

static const char *redis_url;

static void node_deliver(void *arg, const struct bus_event *ev)
{
    struct node_log *l = arg;
    int i = l->n++;
    size_t k;

    ck_assert_int_lt(i, MAXEV);
    l->kinds[i] = ev->kind;
    l->ntargets[i] = ev->ntargets;
    for (k = 0; k < ev->ntargets && k < 4; k++)
        l->targets[i][k] = ev->targets[k];
    l->subject[i] = ev->subject;
    l->except_user[i] = ev->except_user;
    l->except_conn[i] = ev->except_conn;
    l->remote[i] = ev->remote;
    ck_assert_uint_lt(ev->len, sizeof l->frames[i]);
    memcpy(l->frames[i], ev->frame, ev->len);
    l->lens[i] = ev->len;
}

static void flush_redis(void)
{
    struct redis_url u;
    char err[256];
    redisContext *c;
    redisReply *r;

    ck_assert_int_eq(redis_url_parse(redis_url, &u, err, sizeof err), 0);
    c = redis_connect(&u, 2000, err, sizeof err);
    ck_assert_msg(c != NULL, "redis: %s", err);
    r = redisCommand(c, "FLUSHDB");
    ck_assert_ptr_nonnull(r);
    freeReplyObject(r);
    redisFree(c);
}

static struct bus *node(const char *id, struct node_log *l, int ttl_ms)
{
    struct bus_redis_config cfg = { redis_url, id, ttl_ms };
    char err[256];
    struct bus *b = bus_redis_create(&cfg, node_deliver, l, NULL, NULL, err,
                                     sizeof err);

    ck_assert_msg(b != NULL, "bus_redis_create: %s", err);
    return b;
}

/* Waits until the bus is connected both ways. */
static void wait_up(struct bus *b)
{
    char st[256];
    int i;

    for (i = 0; i < 500; i++) {
        if (bus_status(b, st, sizeof st))
            return;
        usleep(10000);
    }
    ck_abort_msg("bus not up after 5 s: %s", st);
}

/* Polls both nodes until each has at least want events (or timeout_ms). */
static void pump(struct bus *a, struct node_log *la, int want_a,
                 struct bus *b, struct node_log *lb, int want_b,
                 int timeout_ms)
{
    int64_t end = util_now_ms() + timeout_ms;

    while (util_now_ms() < end) {
        if (a)
            bus_poll(a);
        if (b)
            bus_poll(b);
        if ((a == NULL || la->n >= want_a) && (b == NULL || lb->n >= want_b))
            return;
        usleep(5000);
    }
}

START_TEST(test_publish_reaches_both_nodes_once)
{
    struct node_log la = { 0 }, lb = { 0 };
    struct bus *a, *b;
    int64_t t[3] = { 11, 12, 13 };
    const char frame[] = "{\"type\":\"message\",\"body\":\"a\\nb \xc3\xa9\"}";
    struct bus_event *ev;

    flush_redis();
    a = node("n1", &la, 30000);
    b = node("n2", &lb, 30000);
    wait_up(a);
    wait_up(b);
    ev = bus_event_new(BUS_MESSAGE, t, 3, frame, strlen(frame));
    ev->except_user = 12;
    ev->except_conn = 42;
    ck_assert_int_eq(bus_publish(a, ev), 0);
    pump(a, &la, 1, b, &lb, 1, 5000);
    /* Give an echo time to arrive, then check there was none. */
    usleep(200000);
    pump(a, &la, 2, b, &lb, 2, 100);
    ck_assert_int_eq(la.n, 1);
    ck_assert_int_eq(lb.n, 1);
    ck_assert_int_eq(la.remote[0], 0);
    ck_assert_uint_eq(la.except_conn[0], 42);
    ck_assert_int_eq(lb.remote[0], 1);
    ck_assert_int_eq(lb.kinds[0], BUS_MESSAGE);
    ck_assert_uint_eq(lb.ntargets[0], 3);
    ck_assert_int_eq(lb.targets[0][0], 11);
    ck_assert_int_eq(lb.targets[0][2], 13);
    ck_assert_int_eq(lb.except_user[0], 12);
    /* A connection id means nothing on another node. */
    ck_assert_uint_eq(lb.except_conn[0], 0);
    ck_assert_uint_eq(lb.lens[0], strlen(frame));
    ck_assert_int_eq(memcmp(lb.frames[0], frame, strlen(frame)), 0);
    bus_close(a);
    bus_close(b);
}
END_TEST

START_TEST(test_presence_is_cluster_wide)
{
    struct node_log la = { 0 }, lb = { 0 };
    struct bus *a, *b;
    int64_t contacts[2] = { 8, 9 };

    flush_redis();
    a = node("n1", &la, 30000);
    b = node("n2", &lb, 30000);
    wait_up(a);
    wait_up(b);
    /* User 7's first session anywhere: both nodes hear "online". */
    bus_session(a, 7, 1, 1, 1, contacts, 2);
    pump(a, &la, 1, b, &lb, 1, 5000);
    ck_assert_int_eq(la.n, 1);
    ck_assert_int_eq(lb.n, 1);
    ck_assert_int_eq(lb.kinds[0], BUS_PRESENCE);
    ck_assert_uint_eq(lb.ntargets[0], 2);
    ck_assert_int_eq(lb.targets[0][0], 8);
    ck_assert_str_eq(lb.frames[0],
                     "{\"type\":\"presence\",\"user_id\":7,\"online\":true}");
    /* A second session, on the other node (its first there): no
     * presence, but both nodes learn that user 7 is on two nodes now (each
     * enforces half of the rate limit). */
    bus_session(b, 7, 1, 1, 1, contacts, 2);
    pump(a, &la, 2, b, &lb, 2, 5000);
    ck_assert_int_eq(la.n, 2);
    ck_assert_int_eq(lb.n, 2);
    ck_assert_int_eq(la.kinds[1], BUS_SPREAD);
    ck_assert_uint_eq(la.ntargets[1], 1);
    ck_assert_int_eq(la.targets[1][0], 7);
    ck_assert_int_eq(la.subject[1], 2);
    /* The first leaves (its node's last): still online on n2: no
     * presence; one node again. */
    bus_session(a, 7, 1, 0, 1, contacts, 2);
    pump(a, &la, 3, b, &lb, 3, 5000);
    ck_assert_int_eq(lb.kinds[2], BUS_SPREAD);
    ck_assert_int_eq(lb.subject[2], 1);
    usleep(300000);
    pump(a, &la, 4, b, &lb, 4, 100);
    ck_assert_int_eq(la.n, 3);
    ck_assert_int_eq(lb.n, 3);
    /* The last session in the cluster leaves: offline, everywhere. */
    bus_session(b, 7, 1, 0, 1, contacts, 2);
    pump(a, &la, 4, b, &lb, 4, 5000);
    ck_assert_int_eq(la.n, 4);
    ck_assert_int_eq(lb.n, 4);
    ck_assert_int_eq(la.kinds[3], BUS_PRESENCE);
    ck_assert_str_eq(la.frames[3],
                     "{\"type\":\"presence\",\"user_id\":7,\"online\":false}");
    bus_close(a);
    bus_close(b);
}
END_TEST

START_TEST(test_dead_node_sessions_expire)
{
    struct node_log la = { 0 }, lb = { 0 };
    struct bus *a, *b;
    int64_t contacts[1] = { 21 };
    int64_t t0;

    flush_redis();
    a = node("n1", &la, 3000);
    b = node("n2", &lb, 3000);
    wait_up(a);
    wait_up(b);
    bus_session(a, 20, 5, 1, 1, contacts, 1);
    pump(a, &la, 1, b, &lb, 1, 5000);
    ck_assert_int_eq(lb.n, 1);
    /* n1 stops without a word (its threads end; nothing is removed):
     * n2's janitor must find the session expired. */
    bus_close(a);
    t0 = util_now_ms();
    pump(NULL, NULL, 0, b, &lb, 2, 8000);
    ck_assert_int_eq(lb.n, 2);
    ck_assert_int_lt(util_now_ms() - t0, 3000 + 1000 + 1500);
    ck_assert_int_eq(lb.kinds[1], BUS_PRESENCE);
    /* No target list: to whoever shares a conversation with user 20. */
    ck_assert_uint_eq(lb.ntargets[1], 0);
    ck_assert_int_eq(lb.subject[1], 20);
    ck_assert_str_eq(lb.frames[1],
                     "{\"type\":\"presence\",\"user_id\":20,\"online\":false}");
    bus_close(b);
}
END_TEST

START_TEST(test_heartbeat_keeps_sessions_alive)
{
    struct node_log la = { 0 }, lb = { 0 };
    struct bus *a, *b;
    int64_t contacts[1] = { 31 };

    flush_redis();
    a = node("n1", &la, 3000);
    b = node("n2", &lb, 3000);
    wait_up(a);
    wait_up(b);
    bus_session(a, 30, 5, 1, 1, contacts, 1);
    pump(a, &la, 1, b, &lb, 1, 5000);
    /* Three TTLs later, still no offline: n1 refreshes. */
    pump(a, &la, 2, b, &lb, 2, 9000);
    ck_assert_int_eq(la.n, 1);
    ck_assert_int_eq(lb.n, 1);
    bus_close(a);
    bus_close(b);
}
END_TEST

START_TEST(test_status_reports_unreachable_redis)
{
    struct node_log l = { 0 };
    struct bus_redis_config cfg = { "redis://127.0.0.1:1/0", "n1", 30000 };
    char err[256], st[256];
    struct bus *b = bus_redis_create(&cfg, node_deliver, &l, NULL, NULL, err,
                                     sizeof err);
    int64_t t[1] = { 1 };

    ck_assert_ptr_nonnull(b);
    usleep(300000);
    ck_assert_int_eq(bus_status(b, st, sizeof st), 0);
    ck_assert_msg(strstr(st, "127.0.0.1:1") != NULL, "status: %s", st);
    /* Still delivers on this node. */
    ck_assert_int_eq(bus_publish(b, bus_event_new(BUS_TYPING, t, 1, "x", 1)),
                     0);
    ck_assert_uint_eq(bus_poll(b), 1);
    ck_assert_int_eq(l.n, 1);
    /* Alone, presence is this node's to decide. */
    bus_session(b, 3, 1, 1, 1, t, 1);
    pump(b, &l, 2, NULL, NULL, 0, 3000);
    ck_assert_int_eq(l.n, 2);
    ck_assert_int_eq(l.kinds[1], BUS_PRESENCE);
    bus_close(b);
}
END_TEST

START_TEST(test_bad_config_refused)
{
    struct node_log l = { 0 };
    char err[256];
    struct bus_redis_config c1 = { "http://x", "n1", 1000 };
    struct bus_redis_config c2 = { "redis://127.0.0.1:6379", "a b", 1000 };
    struct bus_redis_config c3 = { "redis://127.0.0.1:6379", "-", 1000 };

    ck_assert_ptr_null(bus_redis_create(&c1, node_deliver, &l, NULL, NULL,
                                        err, sizeof err));
    ck_assert_ptr_null(bus_redis_create(&c2, node_deliver, &l, NULL, NULL,
                                        err, sizeof err));
    ck_assert_ptr_null(bus_redis_create(&c3, node_deliver, &l, NULL, NULL,
                                        err, sizeof err));
}
END_TEST

static uint64_t op_count(struct metrics_family *f, const char *op)
{
    const char *v[] = { op };
    return metrics_counter_value(metrics_child(f, v));
}

START_TEST(test_cache_sessions_and_members)
{
    char err[256];
    uint8_t hash[STORE_TOKEN_HASH_LEN];
    struct store_session s = { 5, 9, "alice", 0 }, out;
    int64_t now = util_now_ms(), members[3] = { 4, 9, 12 }, *ids = NULL;
    size_t n = 0;

    flush_redis();
    ck_assert_int_eq(metrics_init("test"), 0);
    ck_assert_int_eq(cache_init(redis_url, err, sizeof err), 0);
    memset(hash, 0xab, sizeof hash);
    s.expires_at = now + 60000;
    ck_assert_int_eq(cache_session_get(hash, now, &out), 0);
    cache_session_put(hash, &s, now);
    ck_assert_int_eq(cache_session_get(hash, now, &out), 1);
    ck_assert_int_eq(out.session_id, 5);
    ck_assert_int_eq(out.user_id, 9);
    ck_assert_str_eq(out.username, "alice");
    ck_assert_int_eq(out.expires_at, s.expires_at);
    /* Past its expiry a cached session is not a session. */
    ck_assert_int_eq(cache_session_get(hash, s.expires_at + 1, &out), 0);
    cache_session_delete(hash);
    ck_assert_int_eq(cache_session_get(hash, now, &out), 0);
    ck_assert_uint_eq(op_count(metrics_cache_requests, "session_get"), 4);
    ck_assert_uint_eq(op_count(metrics_cache_hits, "session_get"), 1);
    ck_assert_uint_eq(op_count(metrics_cache_misses, "session_get"), 3);

    ck_assert_int_eq(cache_members_get(77, &ids, &n), 0);
    cache_members_put(77, members, 3);
    ck_assert_int_eq(cache_members_get(77, &ids, &n), 1);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[0], 4);
    ck_assert_int_eq(ids[2], 12);
    free(ids);
    ck_assert_uint_eq(op_count(metrics_cache_hits, "members_get"), 1);
    ck_assert_uint_eq(op_count(metrics_cache_misses, "members_get"), 1);
    cache_shutdown();
    ck_assert_int_eq(cache_session_get(hash, now, &out), -1);
}
END_TEST

START_TEST(test_cache_online_follows_presence)
{
    struct node_log la = { 0 };
    struct bus *a;
    char err[256];
    int64_t users[2] = { 40, 41 }, c[1] = { 41 };
    int online[2] = { -1, -1 };

    flush_redis();
    ck_assert_int_eq(cache_init(redis_url, err, sizeof err), 0);
    a = node("n1", &la, 30000);
    wait_up(a);
    bus_session(a, 40, 1, 1, 1, c, 1);
    pump(a, &la, 1, NULL, NULL, 0, 5000);
    ck_assert_int_eq(cache_online(users, 2, online), 0);
    ck_assert_int_eq(online[0], 1);
    ck_assert_int_eq(online[1], 0);
    bus_session(a, 40, 1, 0, 1, c, 1);
    pump(a, &la, 2, NULL, NULL, 0, 5000);
    ck_assert_int_eq(cache_online(users, 2, online), 0);
    ck_assert_int_eq(online[0], 0);
    bus_close(a);
    cache_shutdown();
}
END_TEST

START_TEST(test_cache_bypassed_when_redis_is_down)
{
    char err[256];
    uint8_t hash[STORE_TOKEN_HASH_LEN] = { 1 };
    struct store_session out;
    int64_t *ids;
    size_t n;

    ck_assert_int_eq(cache_init("redis://127.0.0.1:1/0", err, sizeof err), 0);
    ck_assert_int_eq(cache_session_get(hash, util_now_ms(), &out), -1);
    ck_assert_int_eq(cache_members_get(1, &ids, &n), -1);
    cache_shutdown();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bus_redis");
    TCase *tc = tcase_create("redis");
    SRunner *sr;
    int failed;

    const char *env = getenv("CHATD_TEST_REDIS_URL");
    static char url[512];
    char *slash;

    if (env == NULL || *env == '\0') {
        fprintf(stderr, "check_bus_redis: CHATD_TEST_REDIS_URL is not set "
                "(tests/servers.sh start gives one)\n");
        return 77;
    }
    /* Database 14: the integration suite, which may run at the same time,
     * uses others, and this program flushes its own. */
    snprintf(url, sizeof url, "%s", env);
    slash = strrchr(url + 8, '/');
    if (slash)
        *slash = '\0';
    strncat(url, "/14", sizeof url - strlen(url) - 1);
    redis_url = url;
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_publish_reaches_both_nodes_once);
    tcase_add_test(tc, test_presence_is_cluster_wide);
    tcase_add_test(tc, test_dead_node_sessions_expire);
    tcase_add_test(tc, test_heartbeat_keeps_sessions_alive);
    tcase_add_test(tc, test_status_reports_unreachable_redis);
    tcase_add_test(tc, test_bad_config_refused);
    tcase_add_test(tc, test_cache_sessions_and_members);
    tcase_add_test(tc, test_cache_online_follows_presence);
    tcase_add_test(tc, test_cache_bypassed_when_redis_is_down);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
