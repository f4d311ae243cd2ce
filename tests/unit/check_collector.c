/*
 * check_collector.c - unit tests for collector.c: the query file header
 * (what is accepted, what is refused and why), the exposition text one
 * result renders to (escaping, skipped NULLs, number formats, errors),
 * files that declare several families (rows sorted to their family, the
 * refusals), a running collector on a real SQLite database (good and
 * failing queries, its own metrics, a failure dropping stale samples, a
 * multi-family file on the page, a prompt stop), the start-up refusals (a
 * malformed file, two files for one metric), and the
 * real query files of sql/metrics run against a migrated database, their
 * page checked by `promtool check metrics`.
 *
 * The database tests use a fresh SQLite file in a mkdtemp directory,
 * migrated with migrate_up from $CHATD_TEST_DATA_DIR/migrations/sqlite
 * (else the source tree, found by a relative path), filled through the
 * store API. The registry is set up once (metrics_init) before the tests
 * fork; it is never reset, as the collector registers its own families
 * once per process.
 *
 * Each test runs in its own forked process under Check (unless
 * CK_FORK=no); the collector runs its own thread.
 */
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collector.h"
#include "metrics.h"
#include "migrate.h"
#include "store.h"
#include "util.h"

#define HASH "$y$j9T$0123456789abcdef$ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijk"
#define WAIT_MS 10000             /* generous: sanitizer builds are slow */

static char check_collector_data[1024];
static char check_collector_tmp[1024];
static char check_collector_dir[1100];  /* this test's directory */
static char check_collector_sql[1200];  /* its query files */
static char check_collector_db[1200];
static char check_collector_url[1300];
static struct store *st;

/* --- helpers --- */

/* Parses text as file name; NULL (err set) when refused. */
static struct collector_query *check_collector_parse(const char *text,
                                                     char *err, size_t errlen)
{
    err[0] = '\0';
    return collector_query_parse("q.sql", text, err, errlen);
}

/* Asserts that text is refused with a reason containing why. */
static void check_collector_refused(const char *text, const char *why)
{
    char err[256];
    struct collector_query *q = check_collector_parse(text, err, sizeof err);

    ck_assert_msg(q == NULL, "accepted:\n%s", text);
    ck_assert_msg(strstr(err, why) != NULL, "reason '%s' lacks '%s'", err,
                  why);
    ck_assert_msg(strstr(err, "q.sql") != NULL, "reason '%s' names no file",
                  err);
}

/* Renders cells (nrows x ncols, row-major) through q; returns the text
 * (caller frees) or NULL with err set. */
static char *check_collector_render(const struct collector_query *q,
                                    const char *const *cells, size_t nrows,
                                    size_t ncols, char *err, size_t errlen)
{
    struct store_rows rows = { nrows, ncols, (char **)cells };
    struct util_buf b = { 0 };

    err[0] = '\0';
    if (collector_render(q, &rows, &b, err, errlen) != 0) {
        util_buf_free(&b);
        return NULL;
    }
    return b.data ? util_buf_steal(&b) : xstrdup("");
}

/* The value of the sample whose name and labels are exactly series, or
 * NAN if the text has none. */
static double check_collector_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *p = text;

    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p++;
    }
    return NAN;
}

/* 1 if some sample line of text belongs to family name. */
static int check_collector_has_samples(const char *text, const char *name)
{
    size_t n = strlen(name);
    const char *p = text;

    while ((p = strstr(p, name)) != NULL) {
        if ((p == text || p[-1] == '\n') && (p[n] == ' ' || p[n] == '{'))
            return 1;
        p++;
    }
    return 0;
}

static int check_collector_has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
        p++;
    }
    return 0;
}

static void check_collector_write(const char *dir, const char *name,
                                  const char *text)
{
    char path[1400];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static double check_collector_metric(const char *family, const char *query)
{
    char series[640];
    char *text = metrics_render(NULL);
    double v;

    snprintf(series, sizeof series, "%.200s{query=\"%.300s\"}", family,
             query);
    v = check_collector_value(text, series);
    free(text);
    return v;
}

static void check_collector_sql_exec(const char *sql)
{
    sqlite3 *db;
    char *msg = NULL;

    ck_assert_int_eq(sqlite3_open(check_collector_db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK,
                  "%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

static struct collector *check_collector_start(const char *sql_dir,
                                               char *err, size_t errlen)
{
    struct collector_config cfg = {
        .db_url = check_collector_url,
        .sql_dir = sql_dir,
        .interval_ms = 100,
        .timeout_ms = 2000,
    };

    err[0] = '\0';
    return collector_start(&cfg, err, errlen);
}

/* --- fixture: a migrated database and an empty query directory --- */

static void check_collector_setup(void)
{
    char dir[1200], err[512];

    snprintf(check_collector_dir, sizeof check_collector_dir, "%s/tXXXXXX",
             check_collector_tmp);
    ck_assert_ptr_nonnull(mkdtemp(check_collector_dir));
    snprintf(check_collector_sql, sizeof check_collector_sql, "%s/sql",
             check_collector_dir);
    ck_assert_int_eq(mkdir(check_collector_sql, 0700), 0);
    snprintf(check_collector_db, sizeof check_collector_db, "%s/chatd.db",
             check_collector_dir);
    snprintf(check_collector_url, sizeof check_collector_url, "sqlite:%s",
             check_collector_db);
    st = store_open(check_collector_url, err, sizeof err);
    ck_assert_msg(st != NULL, "store_open: %s", err);
    snprintf(dir, sizeof dir, "%s/migrations/sqlite", check_collector_data);
    ck_assert_msg(migrate_up(st, dir, 0, 0, NULL, err, sizeof err) == 0,
                  "migrate_up: %s", err);
}

static int check_collector_rm(const char *path, const struct stat *sb,
                              int flag, struct FTW *ftw)
{
    return remove(path);
}

static void check_collector_teardown(void)
{
    store_close(st);
    st = NULL;
    nftw(check_collector_dir, check_collector_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- the header --- */

START_TEST(test_parse_accepts_good_header)
{
    static const char *const cells[] = { "a", "b", "7" };
    char err[256], *text;
    struct collector_query *q = check_collector_parse(
        "-- metric: chat_things\n"
        "-- type: gauge\n"
        "-- help: Things, by colour and size.\n"
        "-- labels: colour, size\n"
        "SELECT 'a', 'b', 7;\n", err, sizeof err);

    ck_assert_msg(q != NULL, "refused: %s", err);
    text = check_collector_render(q, cells, 1, 3, err, sizeof err);
    ck_assert_msg(text != NULL, "render: %s", err);
    ck_assert_str_eq(text, "chat_things{colour=\"a\",size=\"b\"} 7\n");
    free(text);
    collector_query_free(q);
    collector_query_free(NULL);

    /* A counter, no labels, spaces and CRLF around the values. */
    q = check_collector_parse("--metric:chat_done_total  \r\n"
                              "--  type :  counter\r\n"
                              "-- help: Done.\r\n"
                              "-- some other note: ignored\r\n"
                              "\r\n  SELECT 1", err, sizeof err);
    ck_assert_msg(q != NULL, "refused: %s", err);
    text = check_collector_render(q, cells + 2, 1, 1, err, sizeof err);
    ck_assert_msg(text != NULL, "render: %s", err);
    ck_assert_str_eq(text, "chat_done_total 7\n");
    free(text);
    collector_query_free(q);
}
END_TEST

START_TEST(test_parse_refuses_bad_headers)
{
    check_collector_refused("-- type: gauge\n-- help: H.\nSELECT 1;\n",
                            "metric");
    check_collector_refused("SELECT 1;\n", "metric");
    check_collector_refused("-- metric: 9lives\n-- type: gauge\n"
                            "-- help: H.\nSELECT 1;\n", "metric");
    check_collector_refused("-- metric: chat-users\n-- type: gauge\n"
                            "-- help: H.\nSELECT 1;\n", "metric");
    check_collector_refused("-- metric: chat users\n-- type: gauge\n"
                            "-- help: H.\nSELECT 1;\n", "metric");
    check_collector_refused("-- metric: chat_x\n-- type: histogram\n"
                            "-- help: H.\nSELECT 1;\n", "type");
    check_collector_refused("-- metric: chat_x\n-- help: H.\nSELECT 1;\n",
                            "type");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "SELECT 1;\n", "help");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "-- help:   \nSELECT 1;\n", "help");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "-- help: H.\n-- labels: a b\nSELECT 1;\n",
                            "label");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "-- help: H.\n-- labels: 1a\nSELECT 1;\n",
                            "label");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "-- help: H.\n-- labels: a, -b\nSELECT 1;\n",
                            "label");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "-- help: H.\n-- labels: a, b, c, d, e\n"
                            "SELECT 1;\n", "label");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "-- help: H.\n", "query");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "-- help: H.", "query");
    check_collector_refused("-- metric: chat_x\n-- type: gauge\n"
                            "-- help: H.\n\n  \r\n\t\n", "query");
    check_collector_refused("", "metric");
}
END_TEST

/* --- files with several families --- */

static const char check_collector_multi[] =
    "-- metric: chat_test_total\n"
    "-- type: gauge\n"
    "-- help: A total.\n"
    "-- metric: chat_test_split\n"
    "-- type: gauge\n"
    "-- help: The same, split.\n"
    "-- labels: part, side\n"
    "-- metric: chat_test_done_total\n"
    "-- type: counter\n"
    "-- help: Done.\n"
    "SELECT 1;\n";

START_TEST(test_parse_several_families)
{
    /* Rows in any order, each to its family; NULL padding where a family
     * has fewer labels than the widest; a NULL value gives no sample. */
    static const char *const cells[] = {
        "chat_test_split", "a", "l", "3",
        "chat_test_total", NULL, NULL, "7",
        "chat_test_done_total", NULL, NULL, "2",
        "chat_test_split", "b", "r", "4",
        "chat_test_split", "c", "r", NULL,
    };
    char err[256], *text;
    struct collector_query *q = check_collector_parse(check_collector_multi,
                                                      err, sizeof err);

    ck_assert_msg(q != NULL, "refused: %s", err);
    text = check_collector_render(q, cells, 5, 4, err, sizeof err);
    ck_assert_msg(text != NULL, "render: %s", err);
    ck_assert_str_eq(text, "chat_test_total 7\n"
                           "chat_test_split{part=\"a\",side=\"l\"} 3\n"
                           "chat_test_split{part=\"b\",side=\"r\"} 4\n"
                           "chat_test_done_total 2\n");
    free(text);
    /* No rows: no samples, no error. */
    text = check_collector_render(q, NULL, 0, 4, err, sizeof err);
    ck_assert_str_eq(text, "");
    free(text);
    collector_query_free(q);
}
END_TEST

START_TEST(test_several_families_refusals)
{
    static const char *const unknown[] = { "chat_test_other", NULL, NULL,
                                           "1" };
    static const char *const null_name[] = { NULL, NULL, NULL, "1" };
    static const char *const padded[] = { "chat_test_total", "x", NULL,
                                          "1" };
    static const char *const narrow[] = { "chat_test_total", "1" };
    char err[256];
    struct collector_query *q = check_collector_parse(check_collector_multi,
                                                      err, sizeof err);

    ck_assert_msg(q != NULL, "refused: %s", err);
    ck_assert_ptr_null(check_collector_render(q, unknown, 1, 4, err,
                                              sizeof err));
    ck_assert_msg(strstr(err, "chat_test_other") != NULL, "err: %s", err);
    ck_assert_ptr_null(check_collector_render(q, null_name, 1, 4, err,
                                              sizeof err));
    ck_assert_ptr_null(check_collector_render(q, padded, 1, 4, err,
                                              sizeof err));
    ck_assert_msg(strstr(err, "NULL") != NULL, "err: %s", err);
    ck_assert_ptr_null(check_collector_render(q, narrow, 1, 2, err,
                                              sizeof err));
    ck_assert_msg(strstr(err, "columns") != NULL, "err: %s", err);
    collector_query_free(q);

    /* Each family needs its own type and help; no name twice. */
    check_collector_refused("-- metric: chat_a\n-- type: gauge\n"
                            "-- help: A.\n-- metric: chat_b\n"
                            "-- help: B.\nSELECT 1;\n", "type");
    check_collector_refused("-- metric: chat_a\n-- type: gauge\n"
                            "-- help: A.\n-- metric: chat_b\n"
                            "-- type: gauge\nSELECT 1;\n", "help");
    check_collector_refused("-- metric: chat_a\n-- type: gauge\n"
                            "-- help: A.\n-- metric: chat_b\n"
                            "-- type: gauge\n-- help: B.\n"
                            "-- labels: x y\nSELECT 1;\n", "label");
    check_collector_refused("-- metric: chat_a\n-- type: gauge\n"
                            "-- help: A.\n-- metric: chat_a\n"
                            "-- type: gauge\n-- help: A.\nSELECT 1;\n",
                            "twice");
    check_collector_refused("-- metric: chat_a\n-- type: gauge\n"
                            "-- help: A.\n-- metric: 2b\n"
                            "-- type: gauge\n-- help: B.\nSELECT 1;\n",
                            "metric");
}
END_TEST

/* --- rendering --- */

static struct collector_query *check_collector_query(const char *labels)
{
    char text[512], err[256];
    struct collector_query *q;

    snprintf(text, sizeof text,
             "-- metric: chat_test\n-- type: gauge\n-- help: Test.\n"
             "%s%s%sSELECT 1;\n", labels ? "-- labels: " : "",
             labels ? labels : "", labels ? "\n" : "");
    q = check_collector_parse(text, err, sizeof err);
    ck_assert_msg(q != NULL, "refused: %s", err);
    return q;
}

START_TEST(test_render_without_labels)
{
    static const char *const one[] = { "42" };
    static const char *const none[] = { NULL };
    struct collector_query *q = check_collector_query(NULL);
    char err[256], *text;

    text = check_collector_render(q, one, 1, 1, err, sizeof err);
    ck_assert_str_eq(text, "chat_test 42\n");
    free(text);
    /* No rows and a NULL value both give no sample, and no error. */
    text = check_collector_render(q, NULL, 0, 1, err, sizeof err);
    ck_assert_str_eq(text, "");
    free(text);
    text = check_collector_render(q, none, 1, 1, err, sizeof err);
    ck_assert_str_eq(text, "");
    free(text);
    collector_query_free(q);
}
END_TEST

START_TEST(test_render_with_labels)
{
    static const char *const cells[] = {
        "direct", "x", "3",
        "group", NULL, "10",
        "none", "y", NULL,        /* skipped */
        "big", "z", "-4",
    };
    struct collector_query *q = check_collector_query("kind,other");
    char err[256], *text;

    text = check_collector_render(q, cells, 4, 3, err, sizeof err);
    ck_assert_msg(text != NULL, "render: %s", err);
    ck_assert_str_eq(text,
                     "chat_test{kind=\"direct\",other=\"x\"} 3\n"
                     "chat_test{kind=\"group\",other=\"\"} 10\n"
                     "chat_test{kind=\"big\",other=\"z\"} -4\n");
    free(text);
    collector_query_free(q);
}
END_TEST

START_TEST(test_render_escapes_label_values)
{
    static const char *const cells[] = { "a\\b\"c\nd", "1" };
    struct collector_query *q = check_collector_query("v");
    char err[256], *text;

    text = check_collector_render(q, cells, 1, 2, err, sizeof err);
    ck_assert_msg(text != NULL, "render: %s", err);
    ck_assert_str_eq(text, "chat_test{v=\"a\\\\b\\\"c\\nd\"} 1\n");
    free(text);
    collector_query_free(q);
}
END_TEST

START_TEST(test_render_number_formats)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "0", "0" },
        { "-42", "-42" },
        { "1000000", "1000000" },
        { "12345678", "12345678" },
        { "1000000000000000", "1000000000000000" },
        { "5.0", "5" },
        { "1e6", "1000000" },
        { "0.25", "0.25" },
        { "-1.5", "-1.5" },
        { "NaN", "NaN" },
        { "nan", "NaN" },
        { "inf", "+Inf" },
        { "Infinity", "+Inf" },
        { "-inf", "-Inf" },
    };
    struct collector_query *q = check_collector_query(NULL);
    char err[256], want[64], *text;
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *cells[1] = { cases[i].in };
        text = check_collector_render(q, cells, 1, 1, err, sizeof err);
        ck_assert_msg(text != NULL, "'%s': %s", cases[i].in, err);
        snprintf(want, sizeof want, "chat_test %s\n", cases[i].out);
        ck_assert_msg(strcmp(text, want) == 0, "'%s' rendered as '%s'",
                      cases[i].in, text);
        free(text);
    }
    /* Other fractions: whatever the digits, they read back exactly. */
    for (i = 0; i < 3; i++) {
        static const char *const fr[] = { "0.1", "3.14159", "-2.5e-7" };
        const char *cells[1] = { fr[i] };
        text = check_collector_render(q, cells, 1, 1, err, sizeof err);
        ck_assert_msg(text != NULL, "'%s': %s", fr[i], err);
        ck_assert_msg(strncmp(text, "chat_test ", 10) == 0, "%s", text);
        ck_assert_msg(strtod(text + 10, NULL) == strtod(fr[i], NULL),
                      "'%s' rendered as '%s'", fr[i], text);
        free(text);
    }
    collector_query_free(q);
}
END_TEST

START_TEST(test_render_refuses_bad_values_and_shapes)
{
    static const char *const word[] = { "many" };
    static const char *const trailing[] = { "12abc" };
    static const char *const empty[] = { "" };
    static const char *const huge[] = { "1e999" };
    static const char *const two[] = { "a", "1" };
    static const char *const good_then_bad[] = { "a", "1", "b", "x" };
    struct collector_query *q = check_collector_query(NULL);
    struct collector_query *ql = check_collector_query("k");
    char err[256];

    ck_assert_ptr_null(check_collector_render(q, word, 1, 1, err,
                                              sizeof err));
    ck_assert_msg(strstr(err, "not a number") != NULL, "err: %s", err);
    ck_assert_ptr_null(check_collector_render(q, trailing, 1, 1, err,
                                              sizeof err));
    ck_assert_ptr_null(check_collector_render(q, empty, 1, 1, err,
                                              sizeof err));
    ck_assert_ptr_null(check_collector_render(q, huge, 1, 1, err,
                                              sizeof err));
    /* Wrong column count either way. */
    ck_assert_ptr_null(check_collector_render(q, two, 1, 2, err,
                                              sizeof err));
    ck_assert_msg(strstr(err, "columns") != NULL, "err: %s", err);
    ck_assert_ptr_null(check_collector_render(ql, word, 1, 1, err,
                                              sizeof err));
    ck_assert_msg(strstr(err, "columns") != NULL, "err: %s", err);
    /* A bad row fails the whole result, however good the rows before. */
    ck_assert_ptr_null(check_collector_render(ql, good_then_bad, 2, 2, err,
                                              sizeof err));
    collector_query_free(q);
    collector_query_free(ql);
}
END_TEST

/* --- a running collector --- */

static const char check_collector_good[] =
    "-- metric: chat_test_users\n"
    "-- type: gauge\n"
    "-- help: Test users by name, valued by name length.\n"
    "-- labels: name\n"
    "SELECT username, length(username) FROM users ORDER BY username;\n";

static const char check_collector_broken[] =
    "-- metric: chat_test_broken\n"
    "-- type: gauge\n"
    "-- help: A query over a table that does not exist.\n"
    "SELECT count(*) FROM no_such_table;\n";

START_TEST(test_collector_runs_queries)
{
    char err[512], *text = NULL;
    struct collector *c;
    int64_t id, t0, deadline;
    double now_s = (double)util_now_ms() / 1000.0, v;

    ck_assert_int_eq(store_user_create(st, "alice", HASH, util_now_ms(), &id),
                     STORE_OK);
    ck_assert_int_eq(store_user_create(st, "bo", HASH, util_now_ms(), &id),
                     STORE_OK);
    check_collector_write(check_collector_sql, "users.sql",
                          check_collector_good);
    check_collector_write(check_collector_sql, "broken.sql",
                          check_collector_broken);
    /* Another backend's file is not loaded: this one would fail here. */
    check_collector_write(check_collector_sql, "pg_only.postgres.sql",
                          "-- metric: chat_test_pg\n-- type: gauge\n"
                          "-- help: Postgres only.\n"
                          "SELECT count(*) FROM pg_stat_activity;\n");
    check_collector_write(check_collector_sql, "README.txt", "not a query");

    c = check_collector_start(check_collector_sql, err, sizeof err);
    ck_assert_msg(c != NULL, "collector_start: %s", err);
    usleep(500000);
    /* Sanitizer builds may need longer for the first runs. */
    deadline = util_mono_ns() + (int64_t)WAIT_MS * 1000000;
    for (;;) {
        free(text);
        text = metrics_render(NULL);
        if ((check_collector_value(
                 text, "chat_collector_query_errors_total"
                       "{query=\"chat_test_broken\"}") >= 1 &&
             check_collector_has_samples(text, "chat_test_users")) ||
            util_mono_ns() > deadline)
            break;
        usleep(50000);
    }

    ck_assert_msg(check_collector_has_line(text,
                                           "# TYPE chat_test_users gauge"),
                  "page:\n%.1500s", text);
    ck_assert_msg(check_collector_has_line(
                      text, "# HELP chat_test_users Test users by name, "
                            "valued by name length."),
                  "page:\n%.1500s", text);
    ck_assert_double_eq(check_collector_value(
                            text, "chat_test_users{name=\"alice\"}"), 5);
    ck_assert_double_eq(check_collector_value(
                            text, "chat_test_users{name=\"bo\"}"), 2);

    ck_assert(check_collector_has_line(text,
                                       "# TYPE chat_test_broken gauge"));
    ck_assert(check_collector_has_line(
        text, "# HELP chat_test_broken A query over a table that does not "
              "exist."));
    ck_assert_msg(!check_collector_has_samples(text, "chat_test_broken"),
                  "page:\n%.1500s", text);
    ck_assert_msg(!strstr(text, "chat_test_pg"), "page:\n%.1500s", text);

    v = check_collector_value(text, "chat_collector_query_errors_total"
                                    "{query=\"chat_test_broken\"}");
    ck_assert_msg(v >= 1, "errors %g\n%.1500s", v, text);
    ck_assert_double_eq(check_collector_value(
                            text, "chat_collector_query_errors_total"
                                  "{query=\"chat_test_users\"}"), 0);
    v = check_collector_value(text,
                              "chat_collector_last_success_timestamp_seconds"
                              "{query=\"chat_test_users\"}");
    ck_assert_msg(v >= now_s - 1 && v <= now_s + 60, "last success %f",
                  v);
    ck_assert_double_eq(
        check_collector_value(text,
                              "chat_collector_last_success_timestamp_seconds"
                              "{query=\"chat_test_broken\"}"), 0);
    v = check_collector_value(text, "chat_collector_query_duration_seconds"
                                    "{query=\"chat_test_users\"}");
    ck_assert_msg(v >= 0 && v < 2, "duration %g", v);
    free(text);

    t0 = util_mono_ns();
    collector_stop(c);
    ck_assert_msg(util_mono_ns() - t0 < 1000000000LL,
                  "collector_stop took %lld ms",
                  (long long)((util_mono_ns() - t0) / 1000000));
}
END_TEST

/* A query that worked and then fails shows no stale samples, and shows
 * them again once it works. */
START_TEST(test_failing_query_drops_stale_samples)
{
    char err[512], *text = NULL;
    struct collector *c;
    int64_t deadline;
    double errors0;

    check_collector_sql_exec("CREATE TABLE check_t (v INTEGER);"
                             "INSERT INTO check_t VALUES (41), (1);");
    check_collector_write(check_collector_sql, "t.sql",
                          "-- metric: chat_test_sum\n-- type: gauge\n"
                          "-- help: Sum.\nSELECT sum(v) FROM check_t;\n");
    c = check_collector_start(check_collector_sql, err, sizeof err);
    ck_assert_msg(c != NULL, "collector_start: %s", err);

    deadline = util_mono_ns() + (int64_t)WAIT_MS * 1000000;
    do {
        free(text);
        usleep(50000);
        text = metrics_render(NULL);
    } while (isnan(check_collector_value(text, "chat_test_sum")) &&
             util_mono_ns() < deadline);
    ck_assert_double_eq(check_collector_value(text, "chat_test_sum"), 42);
    errors0 = check_collector_metric("chat_collector_query_errors_total",
                                     "chat_test_sum");
    ck_assert_double_eq(errors0, 0);

    check_collector_sql_exec("DROP TABLE check_t;");
    deadline = util_mono_ns() + (int64_t)WAIT_MS * 1000000;
    do {
        free(text);
        usleep(50000);
        text = metrics_render(NULL);
    } while (!isnan(check_collector_value(text, "chat_test_sum")) &&
             util_mono_ns() < deadline);
    ck_assert_msg(isnan(check_collector_value(text, "chat_test_sum")),
                  "stale sample kept:\n%.1500s", text);
    ck_assert(check_collector_has_line(text, "# TYPE chat_test_sum gauge"));
    ck_assert_double_ge(check_collector_metric(
                            "chat_collector_query_errors_total",
                            "chat_test_sum"), 1);

    check_collector_sql_exec("CREATE TABLE check_t (v INTEGER);"
                             "INSERT INTO check_t VALUES (7);");
    deadline = util_mono_ns() + (int64_t)WAIT_MS * 1000000;
    do {
        free(text);
        usleep(50000);
        text = metrics_render(NULL);
    } while (isnan(check_collector_value(text, "chat_test_sum")) &&
             util_mono_ns() < deadline);
    ck_assert_double_eq(check_collector_value(text, "chat_test_sum"), 7);
    free(text);
    collector_stop(c);
}
END_TEST

/* A file with several families: one run feeds them all, each family
 * is on the page under its own HELP and TYPE in name order among the
 * other files' families, and the collector's own figures are under the
 * file's first family. A failure drops every family of the file. */
START_TEST(test_collector_runs_several_families)
{
    char err[512], *text = NULL;
    struct collector *c;
    int64_t deadline;
    const char *a, *m, *z;

    check_collector_sql_exec("CREATE TABLE check_t (k TEXT, v INTEGER);"
                             "INSERT INTO check_t VALUES ('x', 2), ('y', 3);");
    check_collector_write(check_collector_sql, "pair.sql",
                          "-- metric: chat_test_z_sum\n-- type: gauge\n"
                          "-- help: Sum.\n"
                          "-- metric: chat_test_a_by_k\n-- type: gauge\n"
                          "-- help: By k.\n-- labels: k\n"
                          "SELECT 'chat_test_z_sum', NULL, sum(v) "
                          "FROM check_t\nUNION ALL\n"
                          "SELECT 'chat_test_a_by_k', k, v FROM check_t;\n");
    check_collector_write(check_collector_sql, "m.sql",
                          "-- metric: chat_test_m\n-- type: gauge\n"
                          "-- help: M.\nSELECT 1;\n");
    c = check_collector_start(check_collector_sql, err, sizeof err);
    ck_assert_msg(c != NULL, "collector_start: %s", err);
    deadline = util_mono_ns() + (int64_t)WAIT_MS * 1000000;
    do {
        free(text);
        usleep(50000);
        text = metrics_render(NULL);
    } while ((isnan(check_collector_value(text, "chat_test_z_sum")) ||
              isnan(check_collector_value(text, "chat_test_m"))) &&
             util_mono_ns() < deadline);
    ck_assert_double_eq(check_collector_value(text, "chat_test_z_sum"), 5);
    ck_assert_double_eq(check_collector_value(
                            text, "chat_test_a_by_k{k=\"x\"}"), 2);
    ck_assert_double_eq(check_collector_value(
                            text, "chat_test_a_by_k{k=\"y\"}"), 3);
    a = strstr(text, "# HELP chat_test_a_by_k By k.\n"
                     "# TYPE chat_test_a_by_k gauge\n"
                     "chat_test_a_by_k{k=\"x\"} 2\n"
                     "chat_test_a_by_k{k=\"y\"} 3\n");
    m = strstr(text, "# HELP chat_test_m M.\n# TYPE chat_test_m gauge\n"
                     "chat_test_m 1\n");
    z = strstr(text, "# HELP chat_test_z_sum Sum.\n"
                     "# TYPE chat_test_z_sum gauge\nchat_test_z_sum 5\n");
    ck_assert_msg(a && m && z && a < m && m < z, "page:\n%.1500s", text);
    ck_assert_double_ge(check_collector_metric(
                            "chat_collector_last_success_timestamp_seconds",
                            "chat_test_z_sum"), 1);
    ck_assert_double_eq(check_collector_metric(
                            "chat_collector_query_errors_total",
                            "chat_test_z_sum"), 0);
    ck_assert(isnan(check_collector_metric(
        "chat_collector_query_duration_seconds", "chat_test_a_by_k")));

    check_collector_sql_exec("DROP TABLE check_t;");
    deadline = util_mono_ns() + (int64_t)WAIT_MS * 1000000;
    do {
        free(text);
        usleep(50000);
        text = metrics_render(NULL);
    } while (check_collector_has_samples(text, "chat_test_a_by_k") &&
             util_mono_ns() < deadline);
    ck_assert_msg(!check_collector_has_samples(text, "chat_test_a_by_k") &&
                      !check_collector_has_samples(text, "chat_test_z_sum"),
                  "stale samples kept:\n%.1500s", text);
    ck_assert(check_collector_has_line(text, "# TYPE chat_test_a_by_k gauge"));
    ck_assert_double_eq(check_collector_value(text, "chat_test_m"), 1);
    ck_assert_double_ge(check_collector_metric(
                            "chat_collector_query_errors_total",
                            "chat_test_z_sum"), 1);
    free(text);
    collector_stop(c);
}
END_TEST

START_TEST(test_start_refuses_malformed_file)
{
    char err[512];

    check_collector_write(check_collector_sql, "users.sql",
                          check_collector_good);
    check_collector_write(check_collector_sql, "bad.sql",
                          "-- metric: chat_bad\n-- type: summary\n"
                          "-- help: Bad type.\nSELECT 1;\n");
    ck_assert_ptr_null(check_collector_start(check_collector_sql, err,
                                             sizeof err));
    ck_assert_msg(strstr(err, "bad.sql") != NULL, "err: %s", err);
}
END_TEST

START_TEST(test_start_refuses_duplicate_metric)
{
    char err[512];

    check_collector_write(check_collector_sql, "a.sql", check_collector_good);
    check_collector_write(check_collector_sql, "b.sqlite.sql",
                          check_collector_good);
    ck_assert_ptr_null(check_collector_start(check_collector_sql, err,
                                             sizeof err));
    ck_assert_msg(strstr(err, "chat_test_users") != NULL, "err: %s", err);
}
END_TEST

/* A family defined by one file and also among another file's. */
START_TEST(test_start_refuses_duplicate_metric_in_a_multi_file)
{
    char err[512];

    check_collector_write(check_collector_sql, "a.sql", check_collector_good);
    check_collector_write(check_collector_sql, "b.sql",
                          "-- metric: chat_test_other\n-- type: gauge\n"
                          "-- help: O.\n"
                          "-- metric: chat_test_users\n-- type: gauge\n"
                          "-- help: U.\nSELECT 1;\n");
    ck_assert_ptr_null(check_collector_start(check_collector_sql, err,
                                             sizeof err));
    ck_assert_msg(strstr(err, "chat_test_users") != NULL, "err: %s", err);
}
END_TEST

START_TEST(test_start_refuses_missing_directory)
{
    char err[512], dir[1300];

    snprintf(dir, sizeof dir, "%s/nowhere", check_collector_dir);
    ck_assert_ptr_null(check_collector_start(dir, err, sizeof err));
    ck_assert_msg(err[0] != '\0', "no reason given");
}
END_TEST

/* --- the real query files --- */

/* Fills the database with a little of everything the queries count:
 * three users, a group and a direct conversation, three messages from
 * alice in the group (unread by bob and carol), one live session. */
static void check_collector_fill(void)
{
    int64_t now = util_now_ms(), a, b, c, sid, others[2];
    struct store_conv conv;
    struct store_send sends[3];
    uint8_t token[STORE_TOKEN_HASH_LEN];
    int created, i;

    ck_assert_int_eq(store_user_create(st, "alice", HASH, now, &a), STORE_OK);
    ck_assert_int_eq(store_user_create(st, "bob", HASH, now, &b), STORE_OK);
    ck_assert_int_eq(store_user_create(st, "carol", HASH, now, &c), STORE_OK);
    others[0] = b;
    others[1] = c;
    ck_assert_int_eq(store_conv_create(st, a, others, 2, "g", now, &conv,
                                       &created), STORE_OK);
    memset(sends, 0, sizeof sends);
    for (i = 0; i < 3; i++) {
        static const char *const cids[] = { "m1", "m2", "m3" };
        sends[i].conversation_id = conv.id;
        sends[i].sender_id = a;
        sends[i].client_msg_id = cids[i];
        sends[i].body = "hello";
        sends[i].body_len = 5;
        sends[i].now = now;
    }
    store_conv_clear(&conv);
    ck_assert_int_eq(store_send_batch(st, sends, 3), STORE_OK);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(sends[i].rc, STORE_OK);
        store_msg_clear(&sends[i].msg);
    }
    ck_assert_int_eq(store_conv_create(st, b, &c, 1, NULL, now, &conv,
                                       &created), STORE_OK);
    store_conv_clear(&conv);
    memset(token, 0x5a, sizeof token);
    ck_assert_int_eq(store_session_create(st, a, token, now,
                                          now + 3600 * 1000, &sid),
                     STORE_OK);
}

/* Runs promtool check metrics on text; fails the test when it refuses. */
static void check_collector_promtool(const char *text)
{
    char path[1400], cmd[1500], out[4096];
    FILE *fp;
    size_t n;
    int status;

    ck_assert_msg(system("command -v promtool >/dev/null 2>&1") == 0,
                  "promtool not found on PATH: install Prometheus (Debian "
                  "package prometheus) to run this test");
    snprintf(path, sizeof path, "%s/page.txt", check_collector_dir);
    fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(text, fp);
    ck_assert_int_eq(fclose(fp), 0);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
    fp = popen(cmd, "r");
    ck_assert_ptr_nonnull(fp);
    n = fread(out, 1, sizeof out - 1, fp);
    out[n] = '\0';
    status = pclose(fp);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "promtool check metrics failed (%d):\n%.1500s\n"
                  "page:\n%.3000s", status, out, text);
}

START_TEST(test_real_queries_parse_and_run)
{
    char dir[1200], err[512], names[32][128], fams[32][128], *text = NULL;
    int nnames = 0, nfams = 0, nparsed = 0, i, all;
    struct collector *c;
    struct dirent *e;
    int64_t deadline;
    DIR *d;

    snprintf(dir, sizeof dir, "%s/sql/metrics", check_collector_data);
    d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot read %s", dir);
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        char path[1500], buf[8192];
        const char *m;
        struct collector_query *q;
        FILE *f;
        size_t got;

        if (len < 5 || strcmp(n + len - 4, ".sql") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, n);
        f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        got = fread(buf, 1, sizeof buf - 1, f);
        buf[got] = '\0';
        fclose(f);
        /* Every file parses, whichever backend it is for. */
        q = collector_query_parse(n, buf, err, sizeof err);
        ck_assert_msg(q != NULL, "%s", err);
        collector_query_free(q);
        nparsed++;
        if (strstr(n, ".postgres.sql") != NULL)
            continue;
        /* The query is named after its first family. */
        m = strstr(buf, "-- metric:");
        ck_assert_ptr_nonnull(m);
        ck_assert_int_lt(nnames, 32);
        ck_assert_int_eq(sscanf(m, "-- metric: %127s", names[nnames]), 1);
        nnames++;
        for (; m != NULL; m = strstr(m + 1, "\n-- metric:")) {
            ck_assert_int_lt(nfams, 32);
            ck_assert_int_eq(sscanf(m + (*m == '\n'), "-- metric: %127s",
                                    fams[nfams]), 1);
            nfams++;
        }
    }
    closedir(d);
    ck_assert_int_ge(nparsed, 1);
    ck_assert_int_ge(nnames, 1);

    check_collector_fill();
    c = check_collector_start(dir, err, sizeof err);
    ck_assert_msg(c != NULL, "collector_start: %s", err);
    deadline = util_mono_ns() + (int64_t)WAIT_MS * 1000000;
    do {
        usleep(100000);
        all = 1;
        for (i = 0; i < nnames; i++)
            if (!(check_collector_metric(
                      "chat_collector_last_success_timestamp_seconds",
                      names[i]) > 0))
                all = 0;
    } while (!all && util_mono_ns() < deadline);
    collector_stop(c);

    text = metrics_render(NULL);
    for (i = 0; i < nnames; i++) {
        char series[256];
        snprintf(series, sizeof series,
                 "chat_collector_last_success_timestamp_seconds"
                 "{query=\"%.127s\"}", names[i]);
        ck_assert_msg(check_collector_value(text, series) > 0,
                      "%s never succeeded:\n%.1500s", names[i], text);
        snprintf(series, sizeof series,
                 "chat_collector_query_errors_total{query=\"%.127s\"}",
                 names[i]);
        ck_assert_msg(check_collector_value(text, series) == 0,
                      "%s failed:\n%.1500s", names[i], text);
    }
    for (i = 0; i < nfams; i++)
        ck_assert_msg(check_collector_has_samples(text, fams[i]),
                      "%s has no samples:\n%.1500s", fams[i], text);
    /* What the filled database holds, where the query is known. */
    if (strstr(text, "# TYPE chat_users gauge"))
        ck_assert_double_eq(check_collector_value(text, "chat_users"), 3);
    if (strstr(text, "# TYPE chat_conversations gauge")) {
        ck_assert_double_eq(check_collector_value(
                                text, "chat_conversations{kind=\"group\"}"),
                            1);
        ck_assert_double_eq(check_collector_value(
                                text, "chat_conversations{kind=\"direct\"}"),
                            1);
    }
    if (strstr(text, "# TYPE chat_unread_messages gauge"))
        ck_assert_double_eq(check_collector_value(text,
                                                  "chat_unread_messages"), 6);
    if (strstr(text, "# TYPE chat_sessions_active gauge"))
        ck_assert_double_eq(check_collector_value(text,
                                                  "chat_sessions_active"), 1);
    /* alice sent and logged in; bob and carol only registered and started
     * conversations, which is not activity. */
    if (strstr(text, "# TYPE chat_active_users gauge"))
        ck_assert_double_eq(check_collector_value(text, "chat_active_users"),
                            1);
    if (strstr(text, "# TYPE chat_users_by_unread_messages gauge")) {
        ck_assert_double_eq(check_collector_value(
                                text,
                                "chat_users_by_unread_messages{range=\"0\"}"),
                            1);
        ck_assert_double_eq(check_collector_value(
                                text, "chat_users_by_unread_messages"
                                      "{range=\"1-9\"}"), 2);
        ck_assert_double_eq(check_collector_value(
                                text, "chat_users_by_unread_messages"
                                      "{range=\"10-99\"}"), 0);
        ck_assert_double_eq(check_collector_value(
                                text, "chat_users_by_unread_messages"
                                      "{range=\"1000+\"}"), 0);
    }
    check_collector_promtool(text);
    free(text);
}
END_TEST

static Suite *check_collector_suite(void)
{
    Suite *s = suite_create("collector");
    TCase *tc;

    tc = tcase_create("header");
    tcase_add_test(tc, test_parse_accepts_good_header);
    tcase_add_test(tc, test_parse_refuses_bad_headers);
    tcase_add_test(tc, test_parse_several_families);
    tcase_add_test(tc, test_several_families_refusals);
    suite_add_tcase(s, tc);

    tc = tcase_create("render");
    tcase_add_test(tc, test_render_without_labels);
    tcase_add_test(tc, test_render_with_labels);
    tcase_add_test(tc, test_render_escapes_label_values);
    tcase_add_test(tc, test_render_number_formats);
    tcase_add_test(tc, test_render_refuses_bad_values_and_shapes);
    suite_add_tcase(s, tc);

    tc = tcase_create("running");
    tcase_add_checked_fixture(tc, check_collector_setup,
                              check_collector_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_collector_runs_queries);
    tcase_add_test(tc, test_failing_query_drops_stale_samples);
    tcase_add_test(tc, test_collector_runs_several_families);
    tcase_add_test(tc, test_start_refuses_malformed_file);
    tcase_add_test(tc, test_start_refuses_duplicate_metric);
    tcase_add_test(tc, test_start_refuses_duplicate_metric_in_a_multi_file);
    tcase_add_test(tc, test_start_refuses_missing_directory);
    tcase_add_test(tc, test_real_queries_parse_and_run);
    suite_add_tcase(s, tc);
    return s;
}

/* The data directory: $CHATD_TEST_DATA_DIR, else the source tree, found
 * from the usual working directories of a test run. */
static int check_collector_find_data(void)
{
    static const char *const guesses[] = { ".", "..", "../.." };
    const char *env = getenv("CHATD_TEST_DATA_DIR");
    char probe[1100];
    size_t i;

    if (env != NULL && *env != '\0') {
        snprintf(check_collector_data, sizeof check_collector_data, "%s",
                 env);
        return 0;
    }
    for (i = 0; i < sizeof guesses / sizeof guesses[0]; i++) {
        snprintf(probe, sizeof probe,
                 "%s/migrations/sqlite/0001_initial.up.sql", guesses[i]);
        if (access(probe, R_OK) == 0) {
            snprintf(check_collector_data, sizeof check_collector_data, "%s",
                     guesses[i]);
            return 0;
        }
    }
    return -1;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    SRunner *sr;
    int failed;

    if (check_collector_find_data() < 0) {
        fprintf(stderr, "check_collector: data not found: set "
                "CHATD_TEST_DATA_DIR to the source tree\n");
        return EXIT_FAILURE;
    }
    snprintf(check_collector_tmp, sizeof check_collector_tmp,
             "%s/check_collector.XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    if (mkdtemp(check_collector_tmp) == NULL) {
        perror("check_collector: mkdtemp");
        return EXIT_FAILURE;
    }
    if (metrics_init("test") != 0) {
        fprintf(stderr, "check_collector: metrics_init failed\n");
        return EXIT_FAILURE;
    }
    sr = srunner_create(check_collector_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    metrics_reset_for_tests();
    nftw(check_collector_tmp, check_collector_rm, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
