/*
 * check_store.c - the store contract suite: what store.h promises, checked
 * through the store.h API only, so one suite runs against every backend.
 *
 * It runs on a fresh SQLite file per test (in a mkdtemp directory,
 * migrated with migrate_up from $CHATD_TEST_DATA_DIR/migrations/sqlite,
 * or from the source tree found by a relative path when that is unset),
 * and once more on Postgres when $CHATD_TEST_PG_URL is set: on a database
 * of its own, created for the run through the server's maintenance
 * database `postgres` and dropped after. Names carry a per-test tag, so
 * the tests hold on a database that is not emptied between them. A few
 * backend-only cases look inside with the backend's own client (the
 * events table, what a session row keeps) or inject a failure with a
 * trigger. The Postgres-only cases also race two connections (seqs stay
 * gapless, a duplicate sent from two nodes at once is stored once) and
 * restart a private Postgres under the store (tests/servers.sh) to prove
 * it reconnects.
 *
 * Runs under Check, each test in its own forked process unless
 * CK_FORK=no; the race tests start threads of their own.
 */
#include <check.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate.h"
#include "store.h"

/* No bound, in store_history(). */
#define U STORE_UNBOUNDED
#include "util.h"

#define T0 1795521600000LL      /* 2026-11-24T12:00:00Z */
#define HASH "$y$j9T$0123456789abcdef$ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijk"

static const char *check_store_kind;   /* "sqlite" or "postgres" */
static const char *check_store_pg_url;
static char check_store_tmp[1024];    /* holds every test's database */
static char check_store_data[1024];
static char check_store_db_path[1200]; /* this test's SQLite file */
static char check_store_url[1300];     /* this test's database */
static char check_store_tag[24];       /* this test's name prefix */
static unsigned check_store_counter;
static struct store *st;

/* --- fixture and helpers --- */

static void check_store_setup(void)
{
    char *url = check_store_url, dir[1100], err[512];
    size_t urllen = sizeof check_store_url;
    FILE *devnull;

    /* Unique across processes and runs, so names never collide on a
     * shared database. */
    snprintf(check_store_tag, sizeof check_store_tag, "u%llx%04x",
             (unsigned long long)(util_now_ms() % 0xffffffffffLL),
             (unsigned)((getpid() * 31u + check_store_counter++) & 0xffff));
    if (strcmp(check_store_kind, "sqlite") == 0) {
        snprintf(dir, sizeof dir, "%s/tXXXXXX", check_store_tmp);
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(check_store_db_path, sizeof check_store_db_path,
                 "%s/chatd.db", dir);
        snprintf(url, urllen, "sqlite:%s", check_store_db_path);
    } else {
        snprintf(url, urllen, "%s", check_store_pg_url);
    }
    err[0] = '\0';
    st = store_open(url, err, sizeof err);
    ck_assert_msg(st != NULL, "store_open: %s", err);
    snprintf(dir, sizeof dir, "%s/migrations/%s", check_store_data,
             check_store_kind);
    devnull = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(devnull);
    ck_assert_msg(migrate_up(st, dir, 0, 0, devnull, err, sizeof err) == 0,
                  "migrate_up: %s", err);
    fclose(devnull);
}

static void check_store_teardown(void)
{
    store_close(st);
    st = NULL;
}

/* "<tag>_<role>": a username of this test. */
static const char *check_store_name(const char *role, char *out, size_t len)
{
    snprintf(out, len, "%s_%s", check_store_tag, role);
    return out;
}

static void check_store_upper(char *s)
{
    for (; *s; s++)
        if (*s >= 'a' && *s <= 'z')
            *s = (char)(*s - 'a' + 'A');
}

static int64_t check_store_user(const char *role)
{
    char name[64];
    int64_t id = 0;
    int rc;

    rc = store_user_create(st, check_store_name(role, name, sizeof name),
                           HASH, T0, &id);
    ck_assert_msg(rc == STORE_OK, "user_create %s: %d %s", name, rc,
                  store_errstr(st));
    ck_assert_int_gt(id, 0);
    return id;
}

static int64_t check_store_conv(int64_t creator, const int64_t *others,
                                size_t n, const char *title, int64_t now)
{
    struct store_conv c;
    int created = -1;
    int64_t id;
    int rc;

    rc = store_conv_create(st, creator, others, n, title, now, &c, &created);
    ck_assert_msg(rc == STORE_OK, "conv_create: %d %s", rc,
                  store_errstr(st));
    id = c.id;
    ck_assert_int_gt(id, 0);
    store_conv_clear(&c);
    return id;
}

/* One send, alone in its batch; returns its rc, msg filled. */
static int check_store_send(int64_t conv, int64_t sender, const char *cid,
                            const char *body, int64_t now,
                            struct store_msg *msg)
{
    struct store_send sd;

    memset(&sd, 0, sizeof sd);
    sd.conversation_id = conv;
    sd.sender_id = sender;
    sd.client_msg_id = cid;
    sd.body = body;
    sd.body_len = strlen(body);
    sd.now = now;
    ck_assert_msg(store_send_batch(st, &sd, 1) == STORE_OK, "send_batch: %s",
                  store_errstr(st));
    *msg = sd.msg;
    return sd.rc;
}

static void check_store_fill(struct store_send *sd, int64_t conv,
                             int64_t sender, const char *cid,
                             const char *body, int64_t now)
{
    memset(sd, 0, sizeof *sd);
    sd->conversation_id = conv;
    sd->sender_id = sender;
    sd->client_msg_id = cid;
    sd->body = body;
    sd->body_len = strlen(body);
    sd->now = now;
}

static void check_store_sends_clear(struct store_send *sd, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        store_msg_clear(&sd[i].msg);
}

static int64_t check_store_last_seq(int64_t conv, int64_t member)
{
    int64_t last = -1;

    ck_assert_int_eq(store_conv_member(st, conv, member, &last), STORE_OK);
    return last;
}

/* The conversation conv as user sees it in their list (must be there). */
static struct store_conv *check_store_find(struct store_conv *v, size_t n,
                                           int64_t conv)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (v[i].id == conv)
            return &v[i];
    ck_abort_msg("conversation %lld not in the list", (long long)conv);
    return NULL;
}

static int64_t check_store_read_seq(int64_t user, int64_t conv)
{
    struct store_conv *v;
    size_t n;
    int64_t r;

    ck_assert_int_eq(store_conv_list(st, user, &v, &n), STORE_OK);
    r = check_store_find(v, n, conv)->read_seq;
    store_convs_free(v, n);
    return r;
}

/* --- URLs --- */

START_TEST(test_url_picks_backend_by_scheme)
{
    ck_assert_str_eq(store_kind("sqlite:/var/lib/chatd/chatd.db"), "sqlite");
    ck_assert_str_eq(store_kind("postgresql://chatd@db/chatd"), "postgres");
    ck_assert_str_eq(store_kind("postgres://chatd@db/chatd"), "postgres");
    ck_assert_ptr_null(store_kind("mysql://db/chatd"));
    ck_assert_ptr_null(store_kind("chatd.db"));
    ck_assert_ptr_null(store_kind(NULL));
}
END_TEST

START_TEST(test_open_refuses_unknown_url_without_echoing_it)
{
    char err[256] = "";

    ck_assert_ptr_null(store_open("mysql://root:secret@db/chatd", err,
                                  sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "sqlite:"));
    ck_assert_ptr_null(strstr(err, "secret"));
    err[0] = '\0';
    ck_assert_ptr_null(store_open("sqlite:", err, sizeof err));
    ck_assert_int_gt(strlen(err), 0);
    store_close(NULL);
}
END_TEST

START_TEST(test_open_reports_unopenable_sqlite_file)
{
    char err[256] = "", url[1100];

    snprintf(url, sizeof url, "sqlite:%s/no/such/dir/chatd.db",
             check_store_tmp);
    ck_assert_ptr_null(store_open(url, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "cannot open"));
}
END_TEST

/* --- users --- */

START_TEST(test_ping_answers)
{
    ck_assert_int_eq(store_ping(st), STORE_OK);
}
END_TEST

START_TEST(test_register_conflicts_case_insensitively)
{
    char name[64], other[64];
    int64_t id = 0, id2 = 0;

    check_store_name("Alice", name, sizeof name);
    ck_assert_int_eq(store_user_create(st, name, HASH, T0, &id), STORE_OK);
    ck_assert_int_gt(id, 0);
    ck_assert_int_eq(store_user_create(st, name, HASH, T0, &id2),
                     STORE_CONFLICT);
    check_store_name("alice", other, sizeof other);
    ck_assert_int_eq(store_user_create(st, other, HASH, T0, &id2),
                     STORE_CONFLICT);
    check_store_upper(other);
    ck_assert_int_eq(store_user_create(st, other, HASH, T0, &id2),
                     STORE_CONFLICT);
    check_store_name("alice2", other, sizeof other);
    ck_assert_int_eq(store_user_create(st, other, HASH, T0, &id2), STORE_OK);
    ck_assert_int_ne(id2, id);
}
END_TEST

START_TEST(test_lookup_by_name_in_any_case_keeps_registered_spelling)
{
    char name[64], probe[64];
    struct store_user u;
    int64_t id = check_store_user("MixedCase");

    check_store_name("MixedCase", name, sizeof name);
    check_store_name("mixedcase", probe, sizeof probe);
    ck_assert_int_eq(store_user_by_name(st, probe, &u), STORE_OK);
    ck_assert_int_eq(u.id, id);
    ck_assert_str_eq(u.username, name);
    ck_assert_str_eq(u.password_hash, HASH);
    ck_assert_int_eq(u.failed_logins, 0);
    ck_assert_int_eq(u.locked_until, 0);
    check_store_upper(probe);
    ck_assert_int_eq(store_user_by_name(st, probe, &u), STORE_OK);
    ck_assert_int_eq(u.id, id);

    check_store_name("nobody", probe, sizeof probe);
    ck_assert_int_eq(store_user_by_name(st, probe, &u), STORE_NOTFOUND);
    ck_assert_int_eq(store_user_by_name(st,
                     "a_name_much_longer_than_thirty_two_bytes", &u),
                     STORE_NOTFOUND);
}
END_TEST

START_TEST(test_throttle_fields_round_trip)
{
    char name[64];
    struct store_user u;
    int64_t id = check_store_user("carol");

    check_store_name("carol", name, sizeof name);
    ck_assert_int_eq(store_user_set_throttle(st, id, 5, T0 + 30000),
                     STORE_OK);
    ck_assert_int_eq(store_user_by_name(st, name, &u), STORE_OK);
    ck_assert_int_eq(u.failed_logins, 5);
    ck_assert_int_eq(u.locked_until, T0 + 30000);
    ck_assert_int_eq(store_user_set_throttle(st, id, 0, 0), STORE_OK);
    ck_assert_int_eq(store_user_by_name(st, name, &u), STORE_OK);
    ck_assert_int_eq(u.failed_logins, 0);
    ck_assert_int_eq(u.locked_until, 0);
    ck_assert_int_eq(store_user_set_throttle(st, id + 1000000, 1, 0),
                     STORE_NOTFOUND);
}
END_TEST

START_TEST(test_prefix_search_is_ordered_case_insensitive_and_limited)
{
    struct store_user_brief *v;
    char prefix[64], name[64];
    size_t n;

    check_store_user("pre_b");
    check_store_user("pre_A");
    check_store_user("pre_c");
    check_store_user("pre_ab");
    check_store_user("other");

    check_store_name("PRE_", prefix, sizeof prefix);
    check_store_upper(prefix);
    ck_assert_int_eq(store_users_by_prefix(st, prefix, 10, &v, &n), STORE_OK);
    ck_assert_uint_eq(n, 4);
    ck_assert_str_eq(v[0].username, check_store_name("pre_A", name,
                                                     sizeof name));
    ck_assert_str_eq(v[1].username, check_store_name("pre_ab", name,
                                                     sizeof name));
    ck_assert_str_eq(v[2].username, check_store_name("pre_b", name,
                                                     sizeof name));
    ck_assert_str_eq(v[3].username, check_store_name("pre_c", name,
                                                     sizeof name));
    free(v);

    ck_assert_int_eq(store_users_by_prefix(st, prefix, 2, &v, &n), STORE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(v[1].username, check_store_name("pre_ab", name,
                                                     sizeof name));
    free(v);

    check_store_name("pre_x", prefix, sizeof prefix);
    ck_assert_int_eq(store_users_by_prefix(st, prefix, 10, &v, &n), STORE_OK);
    ck_assert_uint_eq(n, 0);
    free(v);

    /* The empty prefix matches everyone, still limited and ordered. */
    ck_assert_int_eq(store_users_by_prefix(st, "", 3, &v, &n), STORE_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_lt(strcasecmp(v[0].username, v[1].username), 0);
    ck_assert_int_lt(strcasecmp(v[1].username, v[2].username), 0);
    free(v);
}
END_TEST

START_TEST(test_users_by_names_resolves_or_names_the_missing_index)
{
    struct store_user_brief out[3];
    char a[64], b[64], unknown[64], ua[64], ub[64];
    const char *names[3];
    int64_t ida = check_store_user("ann");
    int64_t idb = check_store_user("Ben");
    size_t missing = 99;

    check_store_name("ann", a, sizeof a);
    check_store_name("Ben", b, sizeof b);
    check_store_name("ghost", unknown, sizeof unknown);
    snprintf(ub, sizeof ub, "%s", b);
    check_store_upper(ub);
    snprintf(ua, sizeof ua, "%s", a);
    check_store_upper(ua);

    names[0] = ub;
    names[1] = ua;
    ck_assert_int_eq(store_users_by_names(st, names, 2, out, &missing),
                     STORE_OK);
    ck_assert_int_eq(out[0].id, idb);
    ck_assert_str_eq(out[0].username, b);
    ck_assert_int_eq(out[1].id, ida);
    ck_assert_str_eq(out[1].username, a);

    names[0] = a;
    names[1] = unknown;
    names[2] = b;
    ck_assert_int_eq(store_users_by_names(st, names, 3, out, &missing),
                     STORE_NOTFOUND);
    ck_assert_uint_eq(missing, 1);
}
END_TEST

/* --- sessions --- */

/* A token hash of this test: the SHA-256 of its tag and a seed, so that
 * no two tests (nor two runs on a shared database) share one. */
static void check_store_token(uint8_t h[STORE_TOKEN_HASH_LEN], int seed)
{
    char in[64];
    unsigned int len = 0;
    int n = snprintf(in, sizeof in, "%s/%d", check_store_tag, seed);

    ck_assert_int_eq(EVP_Digest(in, (size_t)n, h, &len, EVP_sha256(), NULL),
                     1);
    ck_assert_uint_eq(len, STORE_TOKEN_HASH_LEN);
}

START_TEST(test_session_is_found_until_it_expires)
{
    uint8_t h[STORE_TOKEN_HASH_LEN];
    struct store_session ses;
    char name[64];
    int64_t uid = check_store_user("dora"), sid = 0;

    check_store_token(h, 1);
    ck_assert_int_eq(store_session_create(st, uid, h, T0, T0 + 60000, &sid),
                     STORE_OK);
    ck_assert_int_gt(sid, 0);
    ck_assert_int_eq(store_session_lookup(st, h, T0 + 59999, &ses), STORE_OK);
    ck_assert_int_eq(ses.session_id, sid);
    ck_assert_int_eq(ses.user_id, uid);
    ck_assert_str_eq(ses.username, check_store_name("dora", name,
                                                    sizeof name));
    ck_assert_int_eq(ses.expires_at, T0 + 60000);
    ck_assert_int_eq(store_session_lookup(st, h, T0 + 60000, &ses),
                     STORE_NOTFOUND);
    ck_assert_int_eq(store_session_lookup(st, h, T0 + 999999, &ses),
                     STORE_NOTFOUND);
}
END_TEST

START_TEST(test_session_unknown_token_is_not_found)
{
    uint8_t h[STORE_TOKEN_HASH_LEN], other[STORE_TOKEN_HASH_LEN];
    struct store_session ses;
    int64_t uid = check_store_user("ed"), sid;

    check_store_token(h, 2);
    check_store_token(other, 3);
    ck_assert_int_eq(store_session_create(st, uid, h, T0, T0 + 60000, &sid),
                     STORE_OK);
    ck_assert_int_eq(store_session_lookup(st, other, T0, &ses),
                     STORE_NOTFOUND);
}
END_TEST

START_TEST(test_session_delete_ends_only_that_session)
{
    uint8_t h1[STORE_TOKEN_HASH_LEN], h2[STORE_TOKEN_HASH_LEN];
    struct store_session ses;
    int64_t uid = check_store_user("fay"), s1, s2;

    check_store_token(h1, 4);
    check_store_token(h2, 5);
    ck_assert_int_eq(store_session_create(st, uid, h1, T0, T0 + 60000, &s1),
                     STORE_OK);
    ck_assert_int_eq(store_session_create(st, uid, h2, T0, T0 + 60000, &s2),
                     STORE_OK);
    ck_assert_int_ne(s1, s2);
    ck_assert_int_eq(store_session_delete(st, s1, T0 + 1), STORE_OK);
    ck_assert_int_eq(store_session_lookup(st, h1, T0 + 2, &ses),
                     STORE_NOTFOUND);
    ck_assert_int_eq(store_session_lookup(st, h2, T0 + 2, &ses), STORE_OK);
    ck_assert_int_eq(ses.session_id, s2);
    ck_assert_int_eq(store_session_delete(st, s1, T0 + 3), STORE_NOTFOUND);
}
END_TEST

START_TEST(test_session_for_unknown_user_is_refused)
{
    uint8_t h[STORE_TOKEN_HASH_LEN];
    int64_t uid = check_store_user("gus"), sid;

    check_store_token(h, 6);
    ck_assert_int_ne(store_session_create(st, uid + 1000000, h, T0,
                                          T0 + 60000, &sid), STORE_OK);
}
END_TEST

/* --- conversations --- */

START_TEST(test_direct_is_deduplicated_for_either_member)
{
    int64_t a = check_store_user("a"), b = check_store_user("b");
    struct store_conv c1, c2, c3;
    char na[64], nb[64];
    int created = -1;

    ck_assert_int_eq(store_conv_create(st, a, &b, 1, NULL, T0, &c1, &created),
                     STORE_OK);
    ck_assert_int_eq(created, 1);
    ck_assert_str_eq(c1.kind, "direct");
    ck_assert_ptr_null(c1.title);
    ck_assert_uint_eq(c1.nmembers, 2);
    ck_assert_int_eq(c1.members[0].id, a < b ? a : b);
    ck_assert_int_eq(c1.members[1].id, a < b ? b : a);
    check_store_name("a", na, sizeof na);
    check_store_name("b", nb, sizeof nb);
    ck_assert_str_eq(c1.members[a < b ? 0 : 1].username, na);
    ck_assert_str_eq(c1.members[a < b ? 1 : 0].username, nb);
    ck_assert_int_eq(c1.last_seq, 0);
    ck_assert_int_eq(c1.has_last, 0);

    ck_assert_int_eq(store_conv_create(st, b, &a, 1, NULL, T0 + 5, &c2,
                                       &created), STORE_OK);
    ck_assert_int_eq(created, 0);
    ck_assert_int_eq(c2.id, c1.id);
    ck_assert_uint_eq(c2.nmembers, 2);

    ck_assert_int_eq(store_conv_create(st, a, &b, 1, NULL, T0 + 9, &c3,
                                       &created), STORE_OK);
    ck_assert_int_eq(created, 0);
    ck_assert_int_eq(c3.id, c1.id);
    store_conv_clear(&c1);
    store_conv_clear(&c2);
    store_conv_clear(&c3);
}
END_TEST

START_TEST(test_group_is_created_each_time_with_members_by_id)
{
    int64_t a = check_store_user("ga"), b = check_store_user("gb");
    int64_t c = check_store_user("gc");
    int64_t others[2] = { c, b };
    struct store_conv g1, g2;
    int created = -1;
    size_t i;

    ck_assert_int_eq(store_conv_create(st, a, others, 2, "Team", T0, &g1,
                                       &created), STORE_OK);
    ck_assert_int_eq(created, 1);
    ck_assert_str_eq(g1.kind, "group");
    ck_assert_str_eq(g1.title, "Team");
    ck_assert_uint_eq(g1.nmembers, 3);
    for (i = 1; i < g1.nmembers; i++)
        ck_assert_int_lt(g1.members[i - 1].id, g1.members[i].id);
    ck_assert_int_eq(g1.last_activity, T0);

    ck_assert_int_eq(store_conv_create(st, a, others, 2, "Team", T0, &g2,
                                       &created), STORE_OK);
    ck_assert_int_eq(created, 1);
    ck_assert_int_ne(g2.id, g1.id);
    store_conv_clear(&g1);
    store_conv_clear(&g2);
}
END_TEST

START_TEST(test_conv_with_unknown_member_is_not_found_and_not_created)
{
    int64_t a = check_store_user("ua"), b = check_store_user("ub");
    int64_t others[2] = { b, b + 1000000 };
    struct store_conv c, *v;
    int created = -1;
    size_t n;

    ck_assert_int_eq(store_conv_create(st, a, others, 2, NULL, T0, &c,
                                       &created), STORE_NOTFOUND);
    ck_assert_int_eq(store_conv_list(st, a, &v, &n), STORE_OK);
    ck_assert_uint_eq(n, 0);
    store_convs_free(v, n);
}
END_TEST

START_TEST(test_conv_list_orders_by_activity_with_unread_inputs)
{
    int64_t a = check_store_user("la"), b = check_store_user("lb");
    int64_t c = check_store_user("lc");
    int64_t pair[2] = { b, c };
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    int64_t ac = check_store_conv(a, &c, 1, NULL, T0 + 1);
    int64_t grp = check_store_conv(a, pair, 2, "g", T0 + 2);
    int64_t bc = check_store_conv(b, &c, 1, NULL, T0 + 3);
    struct store_conv *v;
    struct store_msg m;
    char nb[64];
    size_t n;

    ck_assert_int_eq(check_store_send(ab, b, "m1", "hi a", T0 + 100, &m),
                     STORE_OK);
    store_msg_clear(&m);
    ck_assert_int_eq(check_store_send(ab, b, "m2", "are you there", T0 + 110,
                                      &m), STORE_OK);
    store_msg_clear(&m);
    ck_assert_int_eq(check_store_send(ac, a, "m3", "hi c", T0 + 200, &m),
                     STORE_OK);
    store_msg_clear(&m);

    ck_assert_int_eq(store_conv_list(st, a, &v, &n), STORE_OK);
    ck_assert_uint_eq(n, 3);    /* not bc: a is not in it */
    ck_assert_int_eq(v[0].id, ac);
    ck_assert_int_eq(v[1].id, ab);
    ck_assert_int_eq(v[2].id, grp);

    ck_assert_int_eq(v[0].last_seq, 1);
    ck_assert_int_eq(v[0].read_seq, 1);     /* a sent it */
    ck_assert_int_eq(v[0].last_activity, T0 + 200);
    ck_assert_int_eq(v[1].last_seq, 2);
    ck_assert_int_eq(v[1].read_seq, 0);     /* two unread */
    ck_assert_int_eq(v[1].has_last, 1);
    ck_assert_int_eq(v[1].last_message.seq, 2);
    ck_assert_str_eq(v[1].last_message.body, "are you there");
    ck_assert_str_eq(v[1].last_message.sender,
                     check_store_name("lb", nb, sizeof nb));
    ck_assert_str_eq(v[1].last_message.client_msg_id, "m2");
    ck_assert_uint_eq(v[1].nmembers, 2);
    ck_assert_int_eq(v[2].has_last, 0);
    ck_assert_int_eq(v[2].last_seq, 0);
    ck_assert_uint_eq(v[2].nmembers, 3);
    ck_assert_str_eq(v[2].title, "g");
    ck_assert_int_eq(v[2].last_activity, T0 + 2);
    store_convs_free(v, n);

    /* b's view of the same conversation: b wrote both, nothing unread. */
    ck_assert_int_eq(check_store_read_seq(b, ab), 2);
    (void)bc;
}
END_TEST

START_TEST(test_conv_member_is_ok_forbidden_or_not_found)
{
    int64_t a = check_store_user("ma"), b = check_store_user("mb");
    int64_t c = check_store_user("mc");
    int64_t conv = check_store_conv(a, &b, 1, NULL, T0);
    int64_t last = -1, *ids;
    struct store_msg m;
    size_t n;

    ck_assert_int_eq(store_conv_member(st, conv, a, &last), STORE_OK);
    ck_assert_int_eq(last, 0);
    ck_assert_int_eq(check_store_send(conv, a, "x1", "one", T0 + 1, &m),
                     STORE_OK);
    store_msg_clear(&m);
    ck_assert_int_eq(store_conv_member(st, conv, b, &last), STORE_OK);
    ck_assert_int_eq(last, 1);
    ck_assert_int_eq(store_conv_member(st, conv, c, &last), STORE_FORBIDDEN);
    ck_assert_int_eq(store_conv_member(st, conv + 1000000, a, &last),
                     STORE_NOTFOUND);

    ck_assert_int_eq(store_conv_member_ids(st, conv, &ids, &n), STORE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], a < b ? a : b);
    ck_assert_int_eq(ids[1], a < b ? b : a);
    free(ids);
    ck_assert_int_eq(store_conv_member_ids(st, conv + 1000000, &ids, &n),
                     STORE_NOTFOUND);
}
END_TEST

/* --- sending --- */

START_TEST(test_batch_assigns_gapless_seqs_across_conversations)
{
    int64_t a = check_store_user("sa"), b = check_store_user("sb");
    int64_t c = check_store_user("sc");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    int64_t ac = check_store_conv(a, &c, 1, NULL, T0);
    struct store_send sd[5];
    static const int64_t want[5] = { 1, 1, 2, 2, 3 };
    char na[64], nb[64], cid[16];
    size_t i;

    check_store_fill(&sd[0], ab, a, "c0", "to b 1", T0 + 10);
    check_store_fill(&sd[1], ac, a, "c1", "to c 1", T0 + 11);
    check_store_fill(&sd[2], ab, b, "c2", "to a 2", T0 + 12);
    check_store_fill(&sd[3], ac, c, "c3", "to a 2 from c", T0 + 13);
    check_store_fill(&sd[4], ab, a, "c4", "to b 3", T0 + 14);
    ck_assert_int_eq(store_send_batch(st, sd, 5), STORE_OK);
    for (i = 0; i < 5; i++) {
        snprintf(cid, sizeof cid, "c%zu", i);
        ck_assert_int_eq(sd[i].rc, STORE_OK);
        ck_assert_int_eq(sd[i].msg.seq, want[i]);
        ck_assert_int_gt(sd[i].msg.message_id, 0);
        ck_assert_int_eq(sd[i].msg.conversation_id, sd[i].conversation_id);
        ck_assert_int_eq(sd[i].msg.sender_id, sd[i].sender_id);
        ck_assert_str_eq(sd[i].msg.client_msg_id, cid);
        ck_assert_str_eq(sd[i].msg.body, sd[i].body);
        ck_assert_int_eq(sd[i].msg.created_at, sd[i].now);
        if (i > 0)
            ck_assert_int_ne(sd[i].msg.message_id, sd[i - 1].msg.message_id);
    }
    ck_assert_str_eq(sd[0].msg.sender, check_store_name("sa", na, sizeof na));
    ck_assert_str_eq(sd[2].msg.sender, check_store_name("sb", nb, sizeof nb));
    check_store_sends_clear(sd, 5);

    /* The next batch goes on where this one stopped. */
    check_store_fill(&sd[0], ac, c, "c5", "again", T0 + 20);
    check_store_fill(&sd[1], ab, b, "c6", "again", T0 + 21);
    ck_assert_int_eq(store_send_batch(st, sd, 2), STORE_OK);
    ck_assert_int_eq(sd[0].msg.seq, 3);
    ck_assert_int_eq(sd[1].msg.seq, 4);
    check_store_sends_clear(sd, 2);
    ck_assert_int_eq(check_store_last_seq(ab, a), 4);
    ck_assert_int_eq(check_store_last_seq(ac, a), 3);
}
END_TEST

START_TEST(test_duplicate_within_a_batch_returns_the_first_message)
{
    int64_t a = check_store_user("da"), b = check_store_user("db");
    int64_t c = check_store_user("dc");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    int64_t ac = check_store_conv(a, &c, 1, NULL, T0);
    struct store_send sd[3];
    struct store_msg *h;
    size_t n;
    int more;

    check_store_fill(&sd[0], ab, a, "same", "first", T0 + 1);
    check_store_fill(&sd[1], ac, a, "same", "second, elsewhere", T0 + 2);
    check_store_fill(&sd[2], ab, a, "same", "third", T0 + 3);
    ck_assert_int_eq(store_send_batch(st, sd, 3), STORE_OK);
    ck_assert_int_eq(sd[0].rc, STORE_OK);
    ck_assert_int_eq(sd[1].rc, STORE_DUPLICATE);
    ck_assert_int_eq(sd[2].rc, STORE_DUPLICATE);
    ck_assert_int_eq(sd[1].msg.message_id, sd[0].msg.message_id);
    ck_assert_int_eq(sd[1].msg.conversation_id, ab);
    ck_assert_int_eq(sd[1].msg.seq, 1);
    ck_assert_str_eq(sd[1].msg.body, "first");
    ck_assert_int_eq(sd[1].msg.created_at, T0 + 1);
    ck_assert_int_eq(sd[2].msg.message_id, sd[0].msg.message_id);
    check_store_sends_clear(sd, 3);

    ck_assert_int_eq(store_history(st, ab, U, U, 50, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 1);
    store_msgs_free(h, n);
    ck_assert_int_eq(store_history(st, ac, U, U, 50, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 0);
    store_msgs_free(h, n);
    ck_assert_int_eq(check_store_last_seq(ac, a), 0);
}
END_TEST

START_TEST(test_duplicate_across_batches_returns_the_stored_message)
{
    int64_t a = check_store_user("xa"), b = check_store_user("xb");
    int64_t c = check_store_user("xc");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    int64_t ac = check_store_conv(a, &c, 1, NULL, T0);
    struct store_msg m1, m2;

    ck_assert_int_eq(check_store_send(ab, a, "retry-1", "hello", T0 + 1, &m1),
                     STORE_OK);
    ck_assert_int_eq(check_store_send(ac, a, "retry-1", "changed", T0 + 50,
                                      &m2), STORE_DUPLICATE);
    ck_assert_int_eq(m2.message_id, m1.message_id);
    ck_assert_int_eq(m2.conversation_id, ab);
    ck_assert_int_eq(m2.seq, m1.seq);
    ck_assert_str_eq(m2.body, "hello");
    ck_assert_str_eq(m2.sender, m1.sender);
    ck_assert_int_eq(m2.created_at, T0 + 1);
    store_msg_clear(&m1);
    store_msg_clear(&m2);
    ck_assert_int_eq(check_store_last_seq(ab, a), 1);
    ck_assert_int_eq(check_store_last_seq(ac, a), 0);

    /* client_msg_id is unique per sender: b may use the same one. */
    ck_assert_int_eq(check_store_send(ab, b, "retry-1", "mine", T0 + 60, &m1),
                     STORE_OK);
    ck_assert_int_eq(m1.seq, 2);
    store_msg_clear(&m1);
}
END_TEST

START_TEST(test_refused_sends_do_not_affect_the_rest_of_the_batch)
{
    int64_t a = check_store_user("ra"), b = check_store_user("rb");
    int64_t c = check_store_user("rc");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    struct store_send sd[5];

    check_store_fill(&sd[0], ab, a, "r0", "one", T0 + 1);
    check_store_fill(&sd[1], ab, c, "r1", "intruder", T0 + 2);
    check_store_fill(&sd[2], ab + 1000000, a, "r2", "nowhere", T0 + 3);
    check_store_fill(&sd[3], ab, b, "r3", "", T0 + 4);   /* empty body */
    check_store_fill(&sd[4], ab, b, "r4", "two", T0 + 5);
    ck_assert_int_eq(store_send_batch(st, sd, 5), STORE_OK);
    ck_assert_int_eq(sd[0].rc, STORE_OK);
    ck_assert_int_eq(sd[1].rc, STORE_FORBIDDEN);
    ck_assert_int_eq(sd[2].rc, STORE_NOTFOUND);
    ck_assert_int_eq(sd[3].rc, STORE_ERR);
    ck_assert_ptr_null(sd[3].msg.body);
    ck_assert_int_eq(sd[4].rc, STORE_OK);
    ck_assert_int_eq(sd[0].msg.seq, 1);
    ck_assert_int_eq(sd[4].msg.seq, 2);
    check_store_sends_clear(sd, 5);
    ck_assert_int_eq(check_store_last_seq(ab, a), 2);

    /* The refused client_msg_ids were not used up. */
    check_store_fill(&sd[0], ab, a, "r2", "now here", T0 + 6);
    ck_assert_int_eq(store_send_batch(st, sd, 1), STORE_OK);
    ck_assert_int_eq(sd[0].rc, STORE_OK);
    ck_assert_int_eq(sd[0].msg.seq, 3);
    check_store_sends_clear(sd, 1);
}
END_TEST

START_TEST(test_sending_moves_the_senders_read_marker_only)
{
    int64_t a = check_store_user("wa"), b = check_store_user("wb");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    struct store_msg m;
    int i;

    for (i = 0; i < 3; i++) {
        char cid[8];
        snprintf(cid, sizeof cid, "w%d", i);
        ck_assert_int_eq(check_store_send(ab, a, cid, "text", T0 + i, &m),
                         STORE_OK);
        store_msg_clear(&m);
    }
    ck_assert_int_eq(check_store_read_seq(a, ab), 3);
    ck_assert_int_eq(check_store_read_seq(b, ab), 0);
}
END_TEST

START_TEST(test_body_keeps_every_byte)
{
    int64_t a = check_store_user("ba"), b = check_store_user("bb");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    char *big = xmalloc(16385);
    struct store_msg *h;
    struct store_msg m;
    size_t n;
    int more;

    memset(big, 'z', 16384);
    big[16384] = '\0';
    ck_assert_int_eq(check_store_send(ab, a, "u1",
                                      "caf\xc3\xa9 \xf0\x9f\x98\x80"
                                      " 'quoted' \"dq\" ; DROP TABLE users;",
                                      T0, &m), STORE_OK);
    store_msg_clear(&m);
    ck_assert_int_eq(check_store_send(ab, a, "u2", big, T0, &m), STORE_OK);
    store_msg_clear(&m);
    ck_assert_int_eq(store_history(st, ab, U, U, 10, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(h[0].seq, 1);
    ck_assert_int_eq(h[1].seq, 2);
    ck_assert_str_eq(h[0].body, "caf\xc3\xa9 \xf0\x9f\x98\x80"
                     " 'quoted' \"dq\" ; DROP TABLE users;");
    ck_assert_uint_eq(strlen(h[1].body), 16384);
    ck_assert_int_eq(memcmp(h[1].body, big, 16384), 0);
    store_msgs_free(h, n);
    free(big);
}
END_TEST

START_TEST(test_client_msg_id_is_up_to_64_characters_of_utf8)
{
    int64_t a = check_store_user("ia"), b = check_store_user("ib");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    char accents[2 * 64 + 1], emoji[4 * 64 + 1], long_ascii[66];
    struct store_send sd[3];
    struct store_msg *h;
    size_t n;
    int i, more;

    for (i = 0; i < 64; i++) {
        memcpy(accents + 2 * i, "\xc3\xa9", 2);       /* U+00E9 */
        memcpy(emoji + 4 * i, "\xf0\x9f\x98\x80", 4); /* U+1F600 */
    }
    accents[2 * 64] = '\0';
    emoji[4 * 64] = '\0';
    memset(long_ascii, 'k', 65);
    long_ascii[65] = '\0';
    check_store_fill(&sd[0], ab, a, accents, "one", T0 + 1);
    check_store_fill(&sd[1], ab, a, emoji, "two", T0 + 2);
    check_store_fill(&sd[2], ab, a, long_ascii, "three", T0 + 3);
    ck_assert_int_eq(store_send_batch(st, sd, 3), STORE_OK);
    ck_assert_int_eq(sd[0].rc, STORE_OK);
    ck_assert_str_eq(sd[0].msg.client_msg_id, accents);
    ck_assert_int_eq(sd[1].rc, STORE_OK);
    ck_assert_str_eq(sd[1].msg.client_msg_id, emoji);
    ck_assert_int_eq(sd[2].rc, STORE_ERR);   /* 65 characters */
    check_store_sends_clear(sd, 3);

    ck_assert_int_eq(store_history(st, ab, U, U, 10, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(h[0].client_msg_id, accents);
    ck_assert_str_eq(h[1].client_msg_id, emoji);
    store_msgs_free(h, n);

    /* And the retry finds them. */
    check_store_fill(&sd[0], ab, a, emoji, "again", T0 + 4);
    ck_assert_int_eq(store_send_batch(st, sd, 1), STORE_OK);
    ck_assert_int_eq(sd[0].rc, STORE_DUPLICATE);
    ck_assert_int_eq(sd[0].msg.seq, 2);
    check_store_sends_clear(sd, 1);
}
END_TEST

START_TEST(test_committed_send_is_seen_by_another_connection_at_once)
{
    int64_t a = check_store_user("oa"), b = check_store_user("ob");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    struct store *reader;
    struct store_msg m, *h;
    char err[256] = "";
    size_t n;
    int more;

    /* The reader opens first and has read before, as a worker thread's
     * connection would have. */
    reader = store_open(check_store_url, err, sizeof err);
    ck_assert_msg(reader != NULL, "%s", err);
    ck_assert_int_eq(store_history(reader, ab, U, U, 10, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 0);
    store_msgs_free(h, n);

    ck_assert_int_eq(check_store_send(ab, a, "o1", "acked", T0 + 1, &m),
                     STORE_OK);
    ck_assert_int_eq(store_history(reader, ab, U, U, 10, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(h[0].message_id, m.message_id);
    ck_assert_int_eq(h[0].seq, m.seq);
    ck_assert_str_eq(h[0].body, "acked");
    store_msgs_free(h, n);
    store_msg_clear(&m);
    store_close(reader);
}
END_TEST

START_TEST(test_conv_create_refuses_malformed_member_lists)
{
    int64_t a = check_store_user("na"), b = check_store_user("nb");
    int64_t self[1] = { a }, twice[2] = { b, b };
    struct store_conv c, *v;
    int created = -1;
    size_t n;

    ck_assert_int_eq(store_conv_create(st, a, NULL, 0, NULL, T0, &c,
                                       &created), STORE_ERR);
    ck_assert_int_eq(store_conv_create(st, a, self, 1, NULL, T0, &c,
                                       &created), STORE_ERR);
    ck_assert_int_eq(store_conv_create(st, a, twice, 2, NULL, T0, &c,
                                       &created), STORE_ERR);
    ck_assert_int_gt(strlen(store_errstr(st)), 0);
    ck_assert_int_eq(store_conv_list(st, a, &v, &n), STORE_OK);
    ck_assert_uint_eq(n, 0);
    store_convs_free(v, n);
}
END_TEST

/* --- history --- */

/* A conversation of a and b holding seqs 1..10, sent by a. */
static int64_t check_store_ten(void)
{
    int64_t a = check_store_user("ha"), b = check_store_user("hb");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    struct store_send sd[10];
    char cids[10][8], bodies[10][16];
    int i;

    for (i = 0; i < 10; i++) {
        snprintf(cids[i], sizeof cids[i], "h%d", i + 1);
        snprintf(bodies[i], sizeof bodies[i], "body %d", i + 1);
        check_store_fill(&sd[i], ab, a, cids[i], bodies[i], T0 + i);
    }
    ck_assert_int_eq(store_send_batch(st, sd, 10), STORE_OK);
    check_store_sends_clear(sd, 10);
    return ab;
}

/* Asserts one page: seqs first..first+count-1 in order, and has_more. */
static void check_store_page(int64_t conv, int64_t before, int64_t after,
                             size_t limit, int64_t first, size_t count,
                             int more)
{
    struct store_msg *h;
    char body[16];
    int has_more = -1;
    size_t n, i;

    ck_assert_int_eq(store_history(st, conv, before, after, limit, &h, &n,
                                   &has_more), STORE_OK);
    ck_assert_msg(n == count, "before %lld after %lld limit %zu: %zu "
                  "messages, expected %zu", (long long)before,
                  (long long)after, limit, n, count);
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(h[i].seq, first + (int64_t)i);
        ck_assert_int_eq(h[i].conversation_id, conv);
        snprintf(body, sizeof body, "body %lld", (long long)h[i].seq);
        ck_assert_str_eq(h[i].body, body);
    }
    ck_assert_msg(has_more == more, "before %lld after %lld limit %zu: "
                  "has_more %d, expected %d", (long long)before,
                  (long long)after, limit, has_more, more);
    store_msgs_free(h, n);
}

START_TEST(test_history_newest_page_by_default)
{
    int64_t conv = check_store_ten();

    check_store_page(conv, U, U, 3, 8, 3, 1);
    check_store_page(conv, U, U, 10, 1, 10, 0);
    check_store_page(conv, U, U, 50, 1, 10, 0);
}
END_TEST

START_TEST(test_history_pages_back_before_seq)
{
    int64_t conv = check_store_ten();

    check_store_page(conv, 8, U, 3, 5, 3, 1);
    check_store_page(conv, 5, U, 3, 2, 3, 1);
    check_store_page(conv, 4, U, 3, 1, 3, 0);
    check_store_page(conv, 2, U, 3, 1, 1, 0);
    check_store_page(conv, 1, U, 3, 1, 0, 0);
    /* Nothing lies before seq 0. */
    check_store_page(conv, 0, U, 3, 1, 0, 0);
}
END_TEST

START_TEST(test_history_pages_on_after_seq)
{
    int64_t conv = check_store_ten();

    check_store_page(conv, U, 2, 3, 3, 3, 1);
    check_store_page(conv, U, 7, 3, 8, 3, 0);
    check_store_page(conv, U, 9, 3, 10, 1, 0);
    check_store_page(conv, U, 10, 3, 1, 0, 0);
    /* after_seq 0 pages from the very start. */
    check_store_page(conv, U, 0, 3, 1, 3, 1);
}
END_TEST

START_TEST(test_history_both_bounds_page_back_within_the_range)
{
    int64_t conv = check_store_ten();

    /* Between 2 and 9 exclusive lie 3..8: the newest three, more older. */
    check_store_page(conv, 9, 2, 3, 6, 3, 1);
    check_store_page(conv, 9, 5, 3, 6, 3, 0);
    check_store_page(conv, 9, 2, 10, 3, 6, 0);
    check_store_page(conv, 4, 3, 10, 1, 0, 0);
}
END_TEST

START_TEST(test_history_of_empty_conversation_is_empty)
{
    int64_t a = check_store_user("ea"), b = check_store_user("eb");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);

    check_store_page(ab, U, U, 50, 1, 0, 0);
}
END_TEST

/* --- read markers --- */

START_TEST(test_contacts_are_everyone_sharing_a_conversation)
{
    int64_t a = check_store_user("ka"), b = check_store_user("kb");
    int64_t c = check_store_user("kc"), d = check_store_user("kd");
    int64_t e = check_store_user("ke");
    int64_t bc[2] = { b, c }, *ids = NULL;
    size_t n = 9;

    check_store_conv(a, &b, 1, NULL, T0);
    check_store_conv(a, bc, 2, "g", T0);
    check_store_conv(d, &b, 1, NULL, T0);
    ck_assert_int_eq(store_user_contacts(st, a, &ids, &n), STORE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], b < c ? b : c);
    ck_assert_int_eq(ids[1], b < c ? c : b);
    free(ids);
    ck_assert_int_eq(store_user_contacts(st, b, &ids, &n), STORE_OK);
    ck_assert_uint_eq(n, 3);            /* a, c and d, each once */
    free(ids);
    ck_assert_int_eq(store_user_contacts(st, e, &ids, &n), STORE_OK);
    ck_assert_uint_eq(n, 0);
    free(ids);
}
END_TEST

START_TEST(test_read_marker_moves_forward_only_and_is_clamped)
{
    int64_t conv = check_store_ten();
    int64_t b, c = check_store_user("rc"), r = -1;
    struct store_user u;
    char name[64];

    ck_assert_int_eq(store_user_by_name(st, check_store_name("hb", name,
                                        sizeof name), &u), STORE_OK);
    b = u.id;
    ck_assert_int_eq(store_read_marker(st, b, conv, 3, T0 + 100, &r),
                     STORE_OK);
    ck_assert_int_eq(r, 3);
    /* Backwards: stays, and says so. */
    ck_assert_int_eq(store_read_marker(st, b, conv, 2, T0 + 101, &r),
                     STORE_DUPLICATE);
    ck_assert_int_eq(r, 3);
    ck_assert_int_eq(store_read_marker(st, b, conv, 7, T0 + 102, &r),
                     STORE_OK);
    ck_assert_int_eq(r, 7);
    ck_assert_int_eq(store_read_marker(st, b, conv, 1000, T0 + 103, &r),
                     STORE_OK);
    ck_assert_int_eq(r, 10);
    ck_assert_int_eq(store_read_marker(st, b, conv, 1000, T0 + 104, &r),
                     STORE_DUPLICATE);
    ck_assert_int_eq(check_store_read_seq(b, conv), 10);

    ck_assert_int_eq(store_read_marker(st, c, conv, 1, T0, &r),
                     STORE_FORBIDDEN);
    ck_assert_int_eq(store_read_marker(st, b, conv + 1000000, 1, T0, &r),
                     STORE_NOTFOUND);
}
END_TEST

/* --- SQLite only: what the file holds --- */

static sqlite3 *check_store_raw(void)
{
    sqlite3 *db = NULL;

    ck_assert_int_eq(sqlite3_open_v2(check_store_db_path, &db,
                                     SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int check_store_count(sqlite3 *db, const char *sql, const char *arg)
{
    sqlite3_stmt *s;
    int n;

    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (arg != NULL)
        sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
    ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
    n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return n;
}

static int check_store_events(sqlite3 *db, const char *type)
{
    return check_store_count(db, "SELECT count(*) FROM events WHERE type = ?",
                             type);
}

START_TEST(test_events_are_recorded_with_their_changes)
{
    int64_t a = check_store_user("va"), b = check_store_user("vb");
    uint8_t h[STORE_TOKEN_HASH_LEN];
    struct store_msg m;
    int64_t sid, r, conv;
    char id[32];
    sqlite3 *db;

    check_store_token(h, 7);
    ck_assert_int_eq(store_session_create(st, a, h, T0, T0 + 1000, &sid),
                     STORE_OK);
    ck_assert_int_eq(store_session_delete(st, sid, T0 + 1), STORE_OK);
    conv = check_store_conv(a, &b, 1, NULL, T0 + 2);
    check_store_conv(b, &a, 1, NULL, T0 + 3);   /* the same: no event */
    ck_assert_int_eq(check_store_send(conv, a, "e1", "x", T0 + 4, &m),
                     STORE_OK);
    store_msg_clear(&m);
    ck_assert_int_eq(store_read_marker(st, b, conv, 1, T0 + 5, &r), STORE_OK);
    ck_assert_int_eq(store_read_marker(st, b, conv, 1, T0 + 6, &r),
                     STORE_DUPLICATE);
    ck_assert_int_eq(store_event_add(st, "security_test", 0,
                                     "{\"reason\":\"probe\"}", T0 + 7),
                     STORE_OK);

    db = check_store_raw();
    ck_assert_int_eq(check_store_events(db, "user_registration"), 2);
    ck_assert_int_eq(check_store_events(db, "user_login"), 1);
    ck_assert_int_eq(check_store_events(db, "user_logout"), 1);
    ck_assert_int_eq(check_store_events(db, "conversation_created"), 1);
    ck_assert_int_eq(check_store_events(db, "message_read"), 1);
    ck_assert_int_eq(check_store_count(db, "SELECT count(*) FROM events "
                     "WHERE type = 'security_test' AND user_id IS NULL AND "
                     "detail = ? AND created_at = 1795521600007",
                     "{\"reason\":\"probe\"}"), 1);
    snprintf(id, sizeof id, "%lld", (long long)a);
    ck_assert_int_eq(check_store_count(db, "SELECT count(*) FROM events "
                     "WHERE type IN ('user_login', 'user_logout') "
                     "AND user_id = ?", id), 2);
    snprintf(id, sizeof id, "%lld", (long long)b);
    ck_assert_int_eq(check_store_count(db, "SELECT count(*) FROM events "
                     "WHERE type = 'message_read' AND user_id = ? AND "
                     "created_at = 1795521600005", id), 1);
    sqlite3_close(db);
}
END_TEST

START_TEST(test_session_token_is_stored_only_as_its_hash)
{
    int64_t a = check_store_user("ka");
    uint8_t h[STORE_TOKEN_HASH_LEN];
    int64_t sid;
    sqlite3 *db;

    check_store_token(h, 8);
    ck_assert_int_eq(store_session_create(st, a, h, T0, T0 + 1000, &sid),
                     STORE_OK);
    db = check_store_raw();
    ck_assert_int_eq(check_store_count(db, "SELECT count(*) FROM sessions "
                     "WHERE length(token_hash) = 32", NULL), 1);
    sqlite3_close(db);
}
END_TEST

/* Bytes of a file, 0 if it is not there. */
static long long check_store_file_size(const char *path)
{
    struct stat sb;

    return stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
}

/* Sends 40 batches of 100 messages of 16 KiB: about 66 MB of WAL. */
static void check_store_send_lots(int64_t conv, int64_t sender, int round)
{
    static char body[16385];
    struct store_send sd[100];
    char cids[100][32];
    int b, i;

    memset(body, 'w', 16384);
    for (b = 0; b < 40; b++) {
        for (i = 0; i < 100; i++) {
            snprintf(cids[i], sizeof cids[i], "r%d-%d-%d", round, b, i);
            check_store_fill(&sd[i], conv, sender, cids[i], body, T0 + b);
        }
        ck_assert_msg(store_send_batch(st, sd, 100) == STORE_OK,
                      "send_batch: %s", store_errstr(st));
        for (i = 0; i < 100; i++)
            ck_assert_int_eq(sd[i].rc, STORE_OK);
        check_store_sends_clear(sd, 100);
    }
}

/* The WAL is copied back into the database file while sends go on (by
 * the store's checkpointer), and so it does not grow without bound. */
START_TEST(test_wal_is_checkpointed_while_sends_go_on)
{
    int64_t a = check_store_user("wa"), b = check_store_user("wb");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    char wal[1300];
    long long db_size = 0, wal_size;
    int round, i;

    snprintf(wal, sizeof wal, "%s-wal", check_store_db_path);
    for (round = 0; round < 3; round++)
        check_store_send_lots(ab, a, round);
    /* 3 x 66 MB sent: without checkpoints the WAL would hold all of it. */
    for (i = 0; i < 100; i++) {
        db_size = check_store_file_size(check_store_db_path);
        if (db_size > 100LL * 1000 * 1000)
            break;
        usleep(50 * 1000);
    }
    wal_size = check_store_file_size(wal);
    ck_assert_msg(db_size > 100LL * 1000 * 1000,
                  "the database file holds %lld bytes after 198 MB of "
                  "sends: the WAL was not copied back", db_size);
    ck_assert_msg(wal_size < 150LL * 1000 * 1000,
                  "the WAL holds %lld bytes after 198 MB of sends",
                  wal_size);
    ck_assert_int_eq(check_store_last_seq(ab, a), 12000);
}
END_TEST

START_TEST(test_failed_batch_stores_nothing)
{
    int64_t a = check_store_user("fa"), b = check_store_user("fb");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    struct store_send sd[3];
    struct store_msg *h;
    sqlite3 *db;
    size_t n, i;
    int more;

    /* Another connection adds a trigger that fails one insert, the way a
     * full disk or a broken connection would fail it mid-transaction. */
    db = check_store_raw();
    ck_assert_int_eq(sqlite3_exec(db, "CREATE TRIGGER check_store_boom "
                     "BEFORE INSERT ON messages WHEN NEW.body = 'boom' "
                     "BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
                     NULL, NULL, NULL), SQLITE_OK);
    check_store_fill(&sd[0], ab, a, "f0", "fine", T0 + 1);
    check_store_fill(&sd[1], ab, b, "f1", "also fine", T0 + 2);
    check_store_fill(&sd[2], ab, a, "f2", "boom", T0 + 3);
    ck_assert_int_eq(store_send_batch(st, sd, 3), STORE_ERR);
    ck_assert_ptr_nonnull(strstr(store_errstr(st), "injected failure"));
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(sd[i].rc, STORE_ERR);
        ck_assert_ptr_null(sd[i].msg.body);
        ck_assert_int_eq(sd[i].msg.message_id, 0);
    }
    ck_assert_int_eq(store_history(st, ab, U, U, 10, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 0);
    store_msgs_free(h, n);
    ck_assert_int_eq(check_store_last_seq(ab, a), 0);
    ck_assert_int_eq(check_store_read_seq(a, ab), 0);

    ck_assert_int_eq(sqlite3_exec(db, "DROP TRIGGER check_store_boom", NULL,
                                  NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    /* The same sends again: seqs start at 1, the ids were not used up. */
    ck_assert_int_eq(store_send_batch(st, sd, 3), STORE_OK);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(sd[i].rc, STORE_OK);
        ck_assert_int_eq(sd[i].msg.seq, (int64_t)i + 1);
    }
    check_store_sends_clear(sd, 3);
}
END_TEST

/* --- Postgres only --- */

static PGconn *check_store_pg_raw(void)
{
    PGconn *c = PQconnectdb(check_store_url);

    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    return c;
}

/* Runs sql with up to two text parameters; returns the result. */
static PGresult *check_store_pg_exec(PGconn *c, const char *sql,
                                     const char *a1, const char *a2)
{
    const char *params[2] = { a1, a2 };
    int n = a2 ? 2 : a1 ? 1 : 0;
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);

    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK ||
                  PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    return r;
}

/* The single integer a query returns. */
static long long check_store_pg_count(PGconn *c, const char *sql,
                                      const char *a1, const char *a2)
{
    PGresult *r = check_store_pg_exec(c, sql, a1, a2);
    long long v;

    ck_assert_int_eq(PQntuples(r), 1);
    v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

START_TEST(test_pg_events_are_recorded_with_their_changes)
{
    int64_t a = check_store_user("va"), b = check_store_user("vb");
    uint8_t h[STORE_TOKEN_HASH_LEN];
    struct store_msg m;
    int64_t sid, r, conv;
    char ida[32], idb[32], detail[96];
    PGconn *c;

    check_store_token(h, 7);
    ck_assert_int_eq(store_session_create(st, a, h, T0, T0 + 1000, &sid),
                     STORE_OK);
    ck_assert_int_eq(store_session_delete(st, sid, T0 + 1), STORE_OK);
    conv = check_store_conv(a, &b, 1, NULL, T0 + 2);
    check_store_conv(b, &a, 1, NULL, T0 + 3);   /* the same: no event */
    ck_assert_int_eq(check_store_send(conv, a, "e1", "x", T0 + 4, &m),
                     STORE_OK);
    store_msg_clear(&m);
    ck_assert_int_eq(store_read_marker(st, b, conv, 1, T0 + 5, &r), STORE_OK);
    ck_assert_int_eq(store_read_marker(st, b, conv, 1, T0 + 6, &r),
                     STORE_DUPLICATE);
    snprintf(detail, sizeof detail, "{\"reason\":\"%s\"}", check_store_tag);
    ck_assert_int_eq(store_event_add(st, "security_test", 0, detail, T0 + 7),
                     STORE_OK);

    c = check_store_pg_raw();
    snprintf(ida, sizeof ida, "%lld", (long long)a);
    snprintf(idb, sizeof idb, "%lld", (long long)b);
#define EV(type) \
    check_store_pg_count(c, "SELECT count(*) FROM events WHERE type = '" \
                         type "' AND user_id IN ($1, $2)", ida, idb)
    ck_assert_int_eq(EV("user_registration"), 2);
    ck_assert_int_eq(EV("user_login"), 1);
    ck_assert_int_eq(EV("user_logout"), 1);
    ck_assert_int_eq(EV("conversation_created"), 1);
    ck_assert_int_eq(EV("message_read"), 1);
#undef EV
    /* Times are timestamptz, to the millisecond; detail is jsonb. */
    ck_assert_int_eq(check_store_pg_count(c, "SELECT count(*) FROM events "
                     "WHERE type = 'security_test' AND user_id IS NULL AND "
                     "detail->>'reason' = $1 AND created_at = "
                     "'2026-11-24T12:00:00.007Z'", check_store_tag, NULL),
                     1);
    ck_assert_int_eq(check_store_pg_count(c, "SELECT count(*) FROM events "
                     "WHERE type = 'message_read' AND user_id = $1 AND "
                     "created_at = '2026-11-24T12:00:00.005Z' AND "
                     "(detail->>'seq')::int = 1", idb, NULL), 1);
    ck_assert_int_eq(check_store_pg_count(c, "SELECT count(*) FROM messages "
                     "WHERE sender_id = $1 AND created_at = "
                     "'2026-11-24T12:00:00.004Z'", ida, NULL), 1);
    PQfinish(c);
}
END_TEST

START_TEST(test_pg_session_token_is_stored_only_as_its_hash)
{
    int64_t a = check_store_user("ka");
    uint8_t h[STORE_TOKEN_HASH_LEN];
    char id[32], hex[2 * STORE_TOKEN_HASH_LEN + 1];
    int64_t sid;
    PGconn *c;

    check_store_token(h, 8);
    ck_assert_int_eq(store_session_create(st, a, h, T0, T0 + 1000, &sid),
                     STORE_OK);
    c = check_store_pg_raw();
    snprintf(id, sizeof id, "%lld", (long long)a);
    util_hex(h, sizeof h, hex);
    ck_assert_int_eq(check_store_pg_count(c, "SELECT count(*) FROM sessions "
                     "WHERE user_id = $1 AND token_hash = decode($2, 'hex')",
                     id, hex), 1);
    ck_assert_int_eq(check_store_pg_count(c, "SELECT count(*) FROM sessions "
                     "WHERE user_id = $1 AND octet_length(token_hash) = 32",
                     id, NULL), 1);
    PQfinish(c);
}
END_TEST

START_TEST(test_pg_failed_batch_stores_nothing)
{
    int64_t a = check_store_user("fa"), b = check_store_user("fb");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    struct store_send sd[3];
    struct store_msg *h;
    char boom[64];
    PGconn *c;
    size_t n, i;
    int more;

    /* Another connection adds a trigger that fails one insert, the way a
     * full disk or a broken connection would fail it mid-transaction. */
    snprintf(boom, sizeof boom, "%s boom", check_store_tag);
    c = check_store_pg_raw();
    PQclear(check_store_pg_exec(c, "CREATE FUNCTION check_store_boom() "
            "RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.body LIKE '% boom' THEN "
            "RAISE EXCEPTION 'injected failure'; END IF; "
            "RETURN NEW; END $$", NULL, NULL));
    PQclear(check_store_pg_exec(c, "CREATE TRIGGER check_store_boom BEFORE "
            "INSERT ON messages FOR EACH ROW EXECUTE FUNCTION "
            "check_store_boom()", NULL, NULL));
    check_store_fill(&sd[0], ab, a, "f0", "fine", T0 + 1);
    check_store_fill(&sd[1], ab, b, "f1", "also fine", T0 + 2);
    check_store_fill(&sd[2], ab, a, "f2", boom, T0 + 3);
    ck_assert_int_eq(store_send_batch(st, sd, 3), STORE_ERR);
    ck_assert_ptr_nonnull(strstr(store_errstr(st), "injected failure"));
    ck_assert_ptr_null(strchr(store_errstr(st), '\n'));
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(sd[i].rc, STORE_ERR);
        ck_assert_ptr_null(sd[i].msg.body);
        ck_assert_int_eq(sd[i].msg.message_id, 0);
    }
    ck_assert_int_eq(store_history(st, ab, U, U, 10, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 0);
    store_msgs_free(h, n);
    ck_assert_int_eq(check_store_last_seq(ab, a), 0);
    ck_assert_int_eq(check_store_read_seq(a, ab), 0);

    PQclear(check_store_pg_exec(c, "DROP TRIGGER check_store_boom ON "
                                "messages", NULL, NULL));
    PQclear(check_store_pg_exec(c, "DROP FUNCTION check_store_boom()",
                                NULL, NULL));
    PQfinish(c);
    /* The same sends again: seqs start at 1, nothing was used up. */
    ck_assert_int_eq(store_send_batch(st, sd, 3), STORE_OK);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(sd[i].rc, STORE_OK);
        ck_assert_int_eq(sd[i].msg.seq, (int64_t)i + 1);
    }
    check_store_sends_clear(sd, 3);
}
END_TEST

/* One node: a connection of its own sending batches in a thread. */
#define CHECK_STORE_ROUNDS 25
#define CHECK_STORE_PER 10

struct check_store_node {
    pthread_t thread;
    struct store *s;
    int id;
    int64_t sender, convs[2];
    int failures;           /* batches or sends that did not store */
    char err[STORE_ERRLEN];
    const char *cid;        /* the duplicate race: one send of this id */
    struct store_send one;
};

static void *check_store_node_batches(void *arg)
{
    struct check_store_node *nd = arg;
    struct store_send sd[CHECK_STORE_PER];
    char cids[CHECK_STORE_PER][32];
    int r, i;

    for (r = 0; r < CHECK_STORE_ROUNDS; r++) {
        for (i = 0; i < CHECK_STORE_PER; i++) {
            /* The nodes name the conversations in opposite orders, so
             * a store that locked them in batch order would deadlock. */
            int64_t conv = nd->convs[(i < CHECK_STORE_PER / 2) ^ nd->id];

            snprintf(cids[i], sizeof cids[i], "n%d-%d-%d", nd->id, r, i);
            check_store_fill(&sd[i], conv, nd->sender, cids[i], cids[i],
                             T0 + r);
        }
        if (store_send_batch(nd->s, sd, CHECK_STORE_PER) != STORE_OK) {
            snprintf(nd->err, sizeof nd->err, "%s", store_errstr(nd->s));
            nd->failures++;
            continue;
        }
        for (i = 0; i < CHECK_STORE_PER; i++)
            if (sd[i].rc != STORE_OK)
                nd->failures++;
        check_store_sends_clear(sd, CHECK_STORE_PER);
    }
    return NULL;
}

static void *check_store_node_one(void *arg)
{
    struct check_store_node *nd = arg;

    check_store_fill(&nd->one, nd->convs[0], nd->sender, nd->cid,
                     nd->id ? "from node 1" : "from node 0", T0 + nd->id);
    if (store_send_batch(nd->s, &nd->one, 1) != STORE_OK) {
        snprintf(nd->err, sizeof nd->err, "%s", store_errstr(nd->s));
        nd->failures++;
    }
    return NULL;
}

static void check_store_node_start(struct check_store_node *nd,
                                   void *(*fn)(void *))
{
    char err[256] = "";

    nd->s = store_open(check_store_url, err, sizeof err);
    ck_assert_msg(nd->s != NULL, "store_open: %s", err);
    ck_assert_int_eq(pthread_create(&nd->thread, NULL, fn, nd), 0);
}

static void check_store_node_join(struct check_store_node *nd)
{
    ck_assert_int_eq(pthread_join(nd->thread, NULL), 0);
    store_close(nd->s);
    nd->s = NULL;
    ck_assert_msg(nd->failures == 0, "node %d: %d failures, last: %s",
                  nd->id, nd->failures, nd->err);
}

/* Asserts that conv holds seqs 1..count, each once. */
static void check_store_gapless(int64_t conv, int64_t member, size_t count)
{
    struct store_msg *h;
    size_t n, i;
    int more;

    ck_assert_int_eq(store_history(st, conv, U, U, count + 10, &h, &n,
                                   &more), STORE_OK);
    ck_assert_uint_eq(n, count);
    for (i = 0; i < n; i++)
        ck_assert_int_eq(h[i].seq, (int64_t)i + 1);
    store_msgs_free(h, n);
    ck_assert_int_eq(check_store_last_seq(conv, member), (int64_t)count);
}

START_TEST(test_pg_concurrent_batches_keep_seqs_gapless_and_unique)
{
    int64_t a = check_store_user("ga"), b = check_store_user("gb");
    int64_t c = check_store_user("gc"), bc[2] = { b, c };
    struct check_store_node nd[2];
    int i;

    memset(nd, 0, sizeof nd);
    for (i = 0; i < 2; i++) {
        nd[i].id = i;
        nd[i].sender = i ? b : c;
        nd[i].convs[0] = check_store_conv(a, bc, 2, "one", T0);
        nd[i].convs[1] = 0;
    }
    /* Both nodes write into the same two conversations. */
    nd[1].convs[0] = nd[0].convs[0];
    nd[0].convs[1] = nd[1].convs[1] = check_store_conv(a, bc, 2, "two", T0);
    for (i = 0; i < 2; i++)
        check_store_node_start(&nd[i], check_store_node_batches);
    for (i = 0; i < 2; i++)
        check_store_node_join(&nd[i]);
    check_store_gapless(nd[0].convs[0], a,
                        2 * CHECK_STORE_ROUNDS * CHECK_STORE_PER / 2);
    check_store_gapless(nd[0].convs[1], a,
                        2 * CHECK_STORE_ROUNDS * CHECK_STORE_PER / 2);
}
END_TEST

START_TEST(test_pg_duplicate_sent_from_two_nodes_at_once_is_stored_once)
{
    int64_t a = check_store_user("ra"), b = check_store_user("rb");
    int64_t ab = check_store_conv(a, &b, 1, NULL, T0);
    struct check_store_node nd[2];
    struct store_msg m;
    char conv[32];
    PGconn *holder;
    int i, ok = -1;

    /* A third session holds the conversation's row, so both nodes pass
     * the duplicate look-up before either stores: the loser of the race
     * then meets the other's committed row in the unique index. */
    holder = check_store_pg_raw();
    snprintf(conv, sizeof conv, "%lld", (long long)ab);
    PQclear(check_store_pg_exec(holder, "BEGIN", NULL, NULL));
    PQclear(check_store_pg_exec(holder, "SELECT 1 FROM conversations "
                                "WHERE id = $1 FOR UPDATE", conv, NULL));
    memset(nd, 0, sizeof nd);
    for (i = 0; i < 2; i++) {
        nd[i].id = i;
        nd[i].sender = a;
        nd[i].convs[0] = ab;
        nd[i].cid = "sent-twice";
        check_store_node_start(&nd[i], check_store_node_one);
    }
    usleep(400 * 1000);
    PQclear(check_store_pg_exec(holder, "COMMIT", NULL, NULL));
    PQfinish(holder);
    for (i = 0; i < 2; i++)
        check_store_node_join(&nd[i]);

    /* One stored it, the other got that very message back. */
    ck_assert_msg((nd[0].one.rc == STORE_OK && nd[1].one.rc ==
                   STORE_DUPLICATE) || (nd[0].one.rc == STORE_DUPLICATE &&
                                        nd[1].one.rc == STORE_OK),
                  "outcomes %d and %d", nd[0].one.rc, nd[1].one.rc);
    ok = nd[0].one.rc == STORE_OK ? 0 : 1;
    ck_assert_int_eq(nd[1 - ok].one.msg.message_id, nd[ok].one.msg.message_id);
    ck_assert_int_eq(nd[1 - ok].one.msg.seq, 1);
    ck_assert_str_eq(nd[1 - ok].one.msg.body, nd[ok].one.msg.body);
    for (i = 0; i < 2; i++)
        store_msg_clear(&nd[i].one.msg);
    /* No seq was used up by the loser. */
    check_store_gapless(ab, a, 1);
    ck_assert_int_eq(check_store_send(ab, b, "next", "next", T0 + 9, &m),
                     STORE_OK);
    ck_assert_int_eq(m.seq, 2);
    store_msg_clear(&m);
}
END_TEST

START_TEST(test_pg_open_fails_fast_and_never_shows_the_password)
{
    char err[512] = "";
    int64_t t0 = util_mono_ns();
    struct store *s;

    /* Nothing listens on port 1. */
    s = store_open("postgresql://chatd:Sekr1tPass@127.0.0.1:1/chatd?"
                   "password=Sekr1tPass", err, sizeof err);
    ck_assert_ptr_null(s);
    ck_assert_int_gt(strlen(err), 0);
    ck_assert_ptr_null(strstr(err, "Sekr1tPass"));
    ck_assert_ptr_null(strchr(err, '\n'));
    ck_assert_int_lt((util_mono_ns() - t0) / 1000000, 3000);
}
END_TEST

/* A private Postgres for the restart test, so that stopping it does not
 * disturb the other test programs running at the same time. */
static char check_store_srv[1100];

static int check_store_servers(const char *cmd, const char *extra,
                               char *url, size_t urllen)
{
    char line[2600];
    FILE *p;
    int rc;

    snprintf(line, sizeof line, "'%s/tests/servers.sh' %s '%s' %s 2>&1",
             check_store_data, cmd, check_store_srv, extra ? extra : "");
    p = popen(line, "r");
    if (p == NULL)
        return -1;
    while (fgets(line, sizeof line, p) != NULL) {
        const char *k = "export CHATD_TEST_PG_URL=";
        if (url != NULL && strncmp(line, k, strlen(k)) == 0) {
            snprintf(url, urllen, "%s", line + strlen(k));
            url[strcspn(url, "\n")] = '\0';
        } else if (strstr(line, "export ") != line) {
            fputs(line, stderr);
        }
    }
    rc = pclose(p);
    return rc == 0 ? 0 : -1;
}

static int check_store_srv_rm(const char *path, const struct stat *sb,
                              int flag, struct FTW *ftw)
{
    return remove(path);
}

static void check_store_srv_cleanup(void)
{
    if (check_store_srv[0] == '\0')
        return;
    check_store_servers("stop", NULL, NULL, 0);
    nftw(check_store_srv, check_store_srv_rm, 16, FTW_DEPTH | FTW_PHYS);
    check_store_srv[0] = '\0';
}

START_TEST(test_pg_reconnects_after_the_server_restarts)
{
    const char *tmp = getenv("TMPDIR");
    char url[2600] = "", err[512] = "", dir[1100];
    struct store *s;
    struct store_send sd;
    struct store_msg *h;
    int64_t a, b, ab, t0, ms;
    struct store_conv cv;
    FILE *devnull;
    int created, more, rc = STORE_ERR;
    size_t n;

    snprintf(check_store_srv, sizeof check_store_srv, "%s/chatd-pg.XXXXXX",
             tmp && *tmp ? tmp : P_tmpdir);
    ck_assert_ptr_nonnull(mkdtemp(check_store_srv));
    atexit(check_store_srv_cleanup);
    ck_assert_msg(check_store_servers("start", NULL, url, sizeof url) == 0,
                  "tests/servers.sh start failed");
    ck_assert_int_gt(strlen(url), 0);

    s = store_open(url, err, sizeof err);
    ck_assert_msg(s != NULL, "%s", err);
    snprintf(dir, sizeof dir, "%s/migrations/postgres", check_store_data);
    devnull = fopen("/dev/null", "w");
    ck_assert_int_eq(migrate_up(s, dir, 0, 0, devnull, err, sizeof err), 0);
    fclose(devnull);
    ck_assert_int_eq(store_user_create(s, "restart_a", HASH, T0, &a),
                     STORE_OK);
    ck_assert_int_eq(store_user_create(s, "restart_b", HASH, T0, &b),
                     STORE_OK);
    ck_assert_int_eq(store_conv_create(s, a, &b, 1, NULL, T0, &cv, &created),
                     STORE_OK);
    ab = cv.id;
    store_conv_clear(&cv);
    check_store_fill(&sd, ab, a, "before", "acked before", T0 + 1);
    ck_assert_int_eq(store_send_batch(s, &sd, 1), STORE_OK);
    ck_assert_int_eq(sd.rc, STORE_OK);
    store_msg_clear(&sd.msg);

    /* The server dies as in a crash. */
    ck_assert_int_eq(check_store_servers("pg-stop", "immediate", NULL, 0), 0);
    t0 = util_mono_ns();
    ck_assert_int_eq(store_ping(s), STORE_ERR);
    ms = (util_mono_ns() - t0) / 1000000;
    ck_assert_int_lt(ms, 3000);
    ck_assert_int_gt(strlen(store_errstr(s)), 0);
    /* No ack while it is away: the send fails whole, quickly. */
    check_store_fill(&sd, ab, a, "during", "never acked", T0 + 2);
    t0 = util_mono_ns();
    ck_assert_int_eq(store_send_batch(s, &sd, 1), STORE_ERR);
    ck_assert_int_lt((util_mono_ns() - t0) / 1000000, 3000);
    ck_assert_int_eq(sd.rc, STORE_ERR);
    ck_assert_int_eq(sd.msg.message_id, 0);
    ck_assert_ptr_nonnull(strstr(store_errstr(s), "unavailable"));

    /* Back again: the same store serves without being reopened, within
     * the longest back-off. */
    ck_assert_int_eq(check_store_servers("pg-start", NULL, NULL, 0), 0);
    t0 = util_mono_ns();
    while ((util_mono_ns() - t0) / 1000000 < 10000) {
        rc = store_ping(s);
        if (rc == STORE_OK)
            break;
        usleep(100 * 1000);
    }
    ck_assert_msg(rc == STORE_OK, "no reconnect within 10 s: %s",
                  store_errstr(s));
    check_store_fill(&sd, ab, a, "after", "acked after", T0 + 3);
    ck_assert_int_eq(store_send_batch(s, &sd, 1), STORE_OK);
    ck_assert_int_eq(sd.rc, STORE_OK);
    ck_assert_int_eq(sd.msg.seq, 2);
    store_msg_clear(&sd.msg);
    ck_assert_int_eq(store_history(s, ab, U, U, 10, &h, &n, &more),
                     STORE_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(h[0].body, "acked before");
    ck_assert_str_eq(h[1].body, "acked after");
    store_msgs_free(h, n);
    store_close(s);
    check_store_srv_cleanup();
}
END_TEST

static Suite *check_store_suite(const char *kind)
{
    Suite *s = suite_create(kind);
    TCase *tc;

    tc = tcase_create("users");
    tcase_add_checked_fixture(tc, check_store_setup, check_store_teardown);
    tcase_add_test(tc, test_ping_answers);
    tcase_add_test(tc, test_register_conflicts_case_insensitively);
    tcase_add_test(tc,
                   test_lookup_by_name_in_any_case_keeps_registered_spelling);
    tcase_add_test(tc, test_throttle_fields_round_trip);
    tcase_add_test(tc,
                   test_prefix_search_is_ordered_case_insensitive_and_limited);
    tcase_add_test(tc,
                   test_users_by_names_resolves_or_names_the_missing_index);
    suite_add_tcase(s, tc);

    tc = tcase_create("sessions");
    tcase_add_checked_fixture(tc, check_store_setup, check_store_teardown);
    tcase_add_test(tc, test_session_is_found_until_it_expires);
    tcase_add_test(tc, test_session_unknown_token_is_not_found);
    tcase_add_test(tc, test_session_delete_ends_only_that_session);
    tcase_add_test(tc, test_session_for_unknown_user_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("conversations");
    tcase_add_checked_fixture(tc, check_store_setup, check_store_teardown);
    tcase_add_test(tc, test_direct_is_deduplicated_for_either_member);
    tcase_add_test(tc, test_group_is_created_each_time_with_members_by_id);
    tcase_add_test(tc,
                   test_conv_with_unknown_member_is_not_found_and_not_created);
    tcase_add_test(tc, test_conv_list_orders_by_activity_with_unread_inputs);
    tcase_add_test(tc, test_conv_member_is_ok_forbidden_or_not_found);
    tcase_add_test(tc, test_conv_create_refuses_malformed_member_lists);
    suite_add_tcase(s, tc);

    tc = tcase_create("send_batch");
    tcase_add_checked_fixture(tc, check_store_setup, check_store_teardown);
    tcase_add_test(tc, test_batch_assigns_gapless_seqs_across_conversations);
    tcase_add_test(tc, test_duplicate_within_a_batch_returns_the_first_message);
    tcase_add_test(tc,
                   test_duplicate_across_batches_returns_the_stored_message);
    tcase_add_test(tc,
                   test_refused_sends_do_not_affect_the_rest_of_the_batch);
    tcase_add_test(tc, test_sending_moves_the_senders_read_marker_only);
    tcase_add_test(tc, test_body_keeps_every_byte);
    tcase_add_test(tc, test_client_msg_id_is_up_to_64_characters_of_utf8);
    tcase_add_test(tc,
                   test_committed_send_is_seen_by_another_connection_at_once);
    suite_add_tcase(s, tc);

    tc = tcase_create("history");
    tcase_add_checked_fixture(tc, check_store_setup, check_store_teardown);
    tcase_add_test(tc, test_history_newest_page_by_default);
    tcase_add_test(tc, test_history_pages_back_before_seq);
    tcase_add_test(tc, test_history_pages_on_after_seq);
    tcase_add_test(tc, test_history_both_bounds_page_back_within_the_range);
    tcase_add_test(tc, test_history_of_empty_conversation_is_empty);
    suite_add_tcase(s, tc);

    tc = tcase_create("read_marker");
    tcase_add_checked_fixture(tc, check_store_setup, check_store_teardown);
    tcase_add_test(tc, test_read_marker_moves_forward_only_and_is_clamped);
    tcase_add_test(tc, test_contacts_are_everyone_sharing_a_conversation);
    suite_add_tcase(s, tc);

    if (strcmp(kind, "sqlite") == 0) {
        tc = tcase_create("urls");
        tcase_add_test(tc, test_url_picks_backend_by_scheme);
        tcase_add_test(tc, test_open_refuses_unknown_url_without_echoing_it);
        tcase_add_test(tc, test_open_reports_unopenable_sqlite_file);
        suite_add_tcase(s, tc);

        tc = tcase_create("sqlite_file");
        tcase_add_checked_fixture(tc, check_store_setup,
                                  check_store_teardown);
        tcase_set_timeout(tc, 120);   /* the WAL case writes 200 MB */
        tcase_add_test(tc, test_events_are_recorded_with_their_changes);
        tcase_add_test(tc, test_session_token_is_stored_only_as_its_hash);
        tcase_add_test(tc, test_failed_batch_stores_nothing);
        tcase_add_test(tc, test_wal_is_checkpointed_while_sends_go_on);
        suite_add_tcase(s, tc);
    } else {
        tc = tcase_create("postgres");
        tcase_add_checked_fixture(tc, check_store_setup,
                                  check_store_teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_pg_events_are_recorded_with_their_changes);
        tcase_add_test(tc, test_pg_session_token_is_stored_only_as_its_hash);
        tcase_add_test(tc, test_pg_failed_batch_stores_nothing);
        tcase_add_test(tc,
                       test_pg_concurrent_batches_keep_seqs_gapless_and_unique);
        tcase_add_test(
            tc, test_pg_duplicate_sent_from_two_nodes_at_once_is_stored_once);
        tcase_add_test(tc, test_pg_open_fails_fast_and_never_shows_the_password);
        tcase_add_test(tc, test_pg_reconnects_after_the_server_restarts);
        suite_add_tcase(s, tc);
    }
    return s;
}

/* The data directory: $CHATD_TEST_DATA_DIR, else the source tree, found
 * from the usual working directories of a test run. */
static int check_store_find_data(void)
{
    static const char *const guesses[] = { ".", "..", "../.." };
    const char *env = getenv("CHATD_TEST_DATA_DIR");
    char probe[1100];
    size_t i;

    if (env != NULL && *env != '\0') {
        snprintf(check_store_data, sizeof check_store_data, "%s", env);
        return 0;
    }
    for (i = 0; i < sizeof guesses / sizeof guesses[0]; i++) {
        snprintf(probe, sizeof probe,
                 "%s/migrations/sqlite/0001_initial.up.sql", guesses[i]);
        if (access(probe, R_OK) == 0) {
            snprintf(check_store_data, sizeof check_store_data, "%s",
                     guesses[i]);
            return 0;
        }
    }
    return -1;
}

static int check_store_rm(const char *path, const struct stat *sb, int flag,
                          struct FTW *ftw)
{
    return remove(path);
}

static int check_store_run(const char *kind)
{
    SRunner *sr;
    int failed;

    check_store_kind = kind;
    sr = srunner_create(check_store_suite(kind));
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

/* url with its database name replaced by db (the rest kept as is). */
static void check_store_pg_db_url(const char *url, const char *db, char *buf,
                                  size_t len)
{
    const char *host = strstr(url, "://");
    const char *slash, *query;

    host = host ? host + 3 : url;
    slash = strchr(host, '/');
    query = strchr(host, '?');
    if (slash == NULL || (query != NULL && query < slash))
        slash = query ? query : host + strlen(host);
    snprintf(buf, len, "%.*s/%s%s", (int)(slash - url), url, db,
             query ? query : "");
}

/* One statement on the maintenance database; 0 or -1 (printed). */
static int check_store_pg_admin(const char *base_url, const char *sql)
{
    char url[1400];
    PGconn *c;
    PGresult *r;
    int ok;

    check_store_pg_db_url(base_url, "postgres", url, sizeof url);
    c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "check_store: maintenance database: %s",
                PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    r = PQexec(c, sql);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "check_store: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

/* The Postgres run, on a database of its own, dropped after. */
static int check_store_run_pg(const char *base_url)
{
    static char url[1400];
    char db[64], sql[160];
    int failed;

    snprintf(db, sizeof db, "chatd_cks_%d", (int)getpid());
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    if (check_store_pg_admin(base_url, sql) < 0)
        return 1;
    check_store_pg_db_url(base_url, db, url, sizeof url);
    check_store_pg_url = url;
    failed = check_store_run("postgres");
    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", db);
    if (check_store_pg_admin(base_url, sql) < 0)
        failed++;
    return failed;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    int failed;

    if (check_store_find_data() < 0) {
        fprintf(stderr, "check_store: migrations not found: set "
                "CHATD_TEST_DATA_DIR to the source tree\n");
        return EXIT_FAILURE;
    }
    snprintf(check_store_tmp, sizeof check_store_tmp, "%s/check_store.XXXXXX",
             tmp && *tmp ? tmp : P_tmpdir);
    if (mkdtemp(check_store_tmp) == NULL) {
        perror("check_store: mkdtemp");
        return EXIT_FAILURE;
    }

    failed = check_store_run("sqlite");
    check_store_pg_url = getenv("CHATD_TEST_PG_URL");
    if (check_store_pg_url != NULL && *check_store_pg_url != '\0')
        failed += check_store_run_pg(check_store_pg_url);
    else
        printf("check_store: CHATD_TEST_PG_URL is not set; the Postgres "
               "run is not part of this build\n");

    nftw(check_store_tmp, check_store_rm, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
