/*
 * check_migrate.c - unit tests for migrate.c: up, down, status, verify,
 * check, force-clean and the command line, against a fresh database and a
 * copy of the migrations directory per test (so a test may add, break or
 * edit files). They form a contract suite: every case runs on SQLite (a
 * new file per test) and, when $CHATD_TEST_PG_URL is set, again on
 * Postgres (a new database per test, created and dropped through the
 * server's maintenance database `postgres`). Postgres-only cases prove
 * the advisory lock (a second migrator waits, two at once apply once),
 * an identical catalog after up -> down -> up, and files that must run
 * outside a transaction (CREATE INDEX CONCURRENTLY).
 *
 * The real migrations come from $CHATD_TEST_DATA_DIR/migrations/<kind>,
 * or from the source tree found by a relative path when that is unset.
 *
 * Runs under Check, each test in its own forked process unless CK_FORK=no;
 * the lock tests start threads of their own.
 */
#include <check.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate.h"
#include "store.h"
#include "util.h"

#define WIDGETS_UP \
    "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n" \
    "CREATE INDEX widgets_name ON widgets (name);\n"
#define WIDGETS_DOWN "DROP TABLE widgets;\n"

static const char *check_migrate_kind; /* "sqlite" or "postgres" */
static const char *check_migrate_pg_url; /* $CHATD_TEST_PG_URL */
static char check_migrate_tmp[1024];   /* holds every test's files */
static char check_migrate_data[1024];  /* the source tree */
static char check_migrate_src[1100];   /* the real migrations of the kind */
static char check_migrate_dir[1200];   /* this test's migrations copy */
static char check_migrate_db[1200];    /* this test's database file */
static char check_migrate_url[1400];   /* this test's database */
static char check_migrate_pgdb[64];    /* this test's Postgres database */
static struct store *st;

/* What a command printed: out and its text after check_migrate_text(). */
static char *check_migrate_buf;
static size_t check_migrate_len;
static size_t check_migrate_seen;      /* how much of it was looked at */
static FILE *out;

/* --- helpers --- */

static void check_migrate_write(const char *dir, const char *fname,
                                const char *text)
{
    char path[1400];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, fname);
    f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static void check_migrate_copy(const char *fname)
{
    char path[1400];
    FILE *f;
    char *text;
    struct util_buf b = { 0 };
    char chunk[4096];
    size_t n;

    snprintf(path, sizeof path, "%s/%s", check_migrate_src, fname);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        util_buf_append(&b, chunk, n);
    fclose(f);
    text = util_buf_steal(&b);
    check_migrate_write(check_migrate_dir, fname, text);
    free(text);
}

static void check_migrate_remove(const char *fname)
{
    char path[1400];

    snprintf(path, sizeof path, "%s/%s", check_migrate_dir, fname);
    ck_assert_int_eq(unlink(path), 0);
}

static int check_migrate_pg(void)
{
    return strcmp(check_migrate_kind, "postgres") == 0;
}

/* url with its database name replaced by db (the rest kept as is). */
static void check_migrate_pg_db_url(const char *url, const char *db,
                                    char *buf, size_t len)
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

/* Runs one statement on the maintenance database (CREATE/DROP DATABASE
 * cannot be parameters; the names are ours, made of [a-z0-9_]). */
static void check_migrate_pg_admin(const char *sql)
{
    char url[1400];
    PGconn *c;
    PGresult *r;

    check_migrate_pg_db_url(check_migrate_pg_url, "postgres", url,
                            sizeof url);
    c = PQconnectdb(url);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "maintenance db: %s",
                  PQerrorMessage(c));
    r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

/* A raw connection to this test's database, for looking inside. */
static PGconn *check_migrate_pg_raw(void)
{
    PGconn *c = PQconnectdb(check_migrate_url);

    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    return c;
}

/* Runs sql with up to one text parameter on c; returns the result. */
static PGresult *check_migrate_pg_query(PGconn *c, const char *sql,
                                        const char *arg)
{
    PGresult *r = PQexecParams(c, sql, arg ? 1 : 0, NULL, &arg, NULL, NULL,
                               0);

    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK ||
                  PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    return r;
}

static void check_migrate_setup(void)
{
    static unsigned counter;
    char base[1100], sql[160], err[256] = "";

    snprintf(base, sizeof base, "%s/tXXXXXX", check_migrate_tmp);
    ck_assert_ptr_nonnull(mkdtemp(base));
    snprintf(check_migrate_dir, sizeof check_migrate_dir, "%s/m", base);
    ck_assert_int_eq(mkdir(check_migrate_dir, 0700), 0);
    snprintf(check_migrate_db, sizeof check_migrate_db, "%s/chatd.db", base);
    check_migrate_copy("0001_initial.up.sql");
    check_migrate_copy("0001_initial.down.sql");
    if (check_migrate_pg()) {
        snprintf(check_migrate_pgdb, sizeof check_migrate_pgdb,
                 "chatd_ckm_%d_%u", (int)getpid(), counter++);
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", check_migrate_pgdb);
        check_migrate_pg_admin(sql);
        check_migrate_pg_db_url(check_migrate_pg_url, check_migrate_pgdb,
                                check_migrate_url, sizeof check_migrate_url);
    } else {
        check_migrate_pgdb[0] = '\0';
        snprintf(check_migrate_url, sizeof check_migrate_url, "sqlite:%s",
                 check_migrate_db);
    }
    st = store_open(check_migrate_url, err, sizeof err);
    ck_assert_msg(st != NULL, "store_open: %s", err);
    check_migrate_seen = 0;
    out = open_memstream(&check_migrate_buf, &check_migrate_len);
    ck_assert_ptr_nonnull(out);
}

static void check_migrate_teardown(void)
{
    char sql[160];

    fclose(out);
    free(check_migrate_buf);
    check_migrate_buf = NULL;
    store_close(st);
    st = NULL;
    if (check_migrate_pgdb[0] != '\0') {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)",
                 check_migrate_pgdb);
        check_migrate_pg_admin(sql);
        check_migrate_pgdb[0] = '\0';
    }
}

/* What was printed since the last call. */
static const char *check_migrate_text(void)
{
    static char *last;
    size_t seen = check_migrate_seen;

    fflush(out);
    free(last);
    last = xstrndup(check_migrate_buf ? check_migrate_buf + seen : "",
                    check_migrate_buf ? check_migrate_len - seen : 0);
    check_migrate_seen = check_migrate_len;
    return last;
}

static sqlite3 *check_migrate_raw(void)
{
    sqlite3 *db = NULL;

    ck_assert_int_eq(sqlite3_open_v2(check_migrate_db, &db,
                                     SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    return db;
}

/* Everything that makes a Postgres schema, in a stable order and
 * without oids: tables, columns (type, default, nullability, identity,
 * generation, collation), constraints, indexes, sequences and comments.
 * Two schemas built by the same files print the same text. */
static const char check_migrate_pg_catalog[] =
    "SELECT 'table ' || c.relname || ' ' || c.relkind::text || ' ' || "
    "  coalesce(obj_description(c.oid, 'pg_class'), '-') "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind IN ('r','v','S','i') "
    "  AND c.relname NOT LIKE 'schema_migrations%' "
    "UNION ALL "
    "SELECT 'column ' || c.relname || '.' || a.attname || ' ' || "
    "  format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' ' "
    "  || a.attidentity::text || a.attgenerated::text || ' ' || "
    "  coalesce(pg_get_expr(d.adbin, d.adrelid), '-') || ' ' || "
    "  coalesce(co.collname, '-') || ' ' || "
    "  coalesce(col_description(c.oid, a.attnum), '-') "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
    "  AND a.attcollation <> 100 "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
    "  AND a.attnum > 0 AND NOT a.attisdropped "
    "  AND c.relname <> 'schema_migrations' "
    "UNION ALL "
    "SELECT 'constraint ' || c.relname || ' ' || k.conname || ' ' || "
    "  pg_get_constraintdef(k.oid) "
    "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() "
    "  AND c.relname <> 'schema_migrations' "
    "UNION ALL "
    "SELECT 'index ' || pg_get_indexdef(i.indexrelid) "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() "
    "  AND c.relname <> 'schema_migrations' "
    "ORDER BY 1";

/* Every schema object, by name: what two schemas compare by. */
static char *check_migrate_schema(void)
{
    struct util_buf b = { 0 };
    sqlite3 *db;
    sqlite3_stmt *s;

    if (check_migrate_pg()) {
        PGconn *c = check_migrate_pg_raw();
        PGresult *r = check_migrate_pg_query(c, check_migrate_pg_catalog,
                                             NULL);
        int i;

        for (i = 0; i < PQntuples(r); i++)
            util_buf_printf(&b, "%s\n", PQgetvalue(r, i, 0));
        PQclear(r);
        PQfinish(c);
        if (b.data == NULL)
            util_buf_puts(&b, "");
        return util_buf_steal(&b);
    }
    db = check_migrate_raw();

    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT type, name, sql FROM "
                     "sqlite_master WHERE name <> 'schema_migrations' "
                     "ORDER BY name", -1, &s, NULL), SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW)
        util_buf_printf(&b, "%s %s %s\n", sqlite3_column_text(s, 0),
                        sqlite3_column_text(s, 1),
                        sqlite3_column_text(s, 2) ?
                        (const char *)sqlite3_column_text(s, 2) : "-");
    sqlite3_finalize(s);
    sqlite3_close(db);
    return util_buf_steal(&b);
}

static int check_migrate_has_table(const char *name)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int found;

    if (check_migrate_pg()) {
        PGconn *c = check_migrate_pg_raw();
        PGresult *r = check_migrate_pg_query(c, "SELECT 1 FROM pg_tables "
                                             "WHERE schemaname = "
                                             "current_schema() AND "
                                             "tablename = $1", name);

        found = PQntuples(r) > 0;
        PQclear(r);
        PQfinish(c);
        return found;
    }
    db = check_migrate_raw();
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master "
                     "WHERE type = 'table' AND name = ?", -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    sqlite3_close(db);
    return found;
}

/* The recorded state of version (0 if not recorded): 1 + its dirty mark,
 * i.e. 1 clean, 2 dirty after a failed up, 3 after a failed down. */
static int check_migrate_recorded(int version)
{
    struct store_migration *v;
    size_t n, i;
    int state = 0;

    ck_assert_int_eq(store_mig_begin(st), STORE_OK);
    ck_assert_int_eq(store_mig_applied(st, &v, &n), STORE_OK);
    for (i = 0; i < n; i++)
        if (v[i].version == version)
            state = 1 + v[i].dirty;
    free(v);
    store_mig_end(st);
    return state;
}

static void check_migrate_up_ok(int steps)
{
    char err[1024] = "";

    ck_assert_msg(migrate_up(st, check_migrate_dir, steps, 0, out, err,
                             sizeof err) == 0, "migrate_up: %s", err);
}

static void check_migrate_add_widgets(void)
{
    check_migrate_write(check_migrate_dir, "0002_widgets.up.sql", WIDGETS_UP);
    check_migrate_write(check_migrate_dir, "0002_widgets.down.sql",
                        WIDGETS_DOWN);
}

#define ck_assert_contains(hay, needle) \
    ck_assert_msg(strstr((hay), (needle)) != NULL, \
                  "expected \"%s\" in: %s", (needle), (hay))

/* --- up, down, status --- */

START_TEST(test_up_applies_all_and_status_lists_them)
{
    char err[1024] = "";
    const char *text;

    check_migrate_add_widgets();
    check_migrate_up_ok(0);
    text = check_migrate_text();
    ck_assert_contains(text, "0001_initial.up.sql");
    ck_assert_contains(text, "0002_widgets.up.sql");
    ck_assert_contains(text, "at version 2");
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
    ck_assert_int_eq(check_migrate_has_table("messages"), 1);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 1);
    ck_assert_int_eq(check_migrate_recorded(1), 1);
    ck_assert_int_eq(check_migrate_recorded(2), 1);

    ck_assert_int_eq(migrate_status(st, check_migrate_dir, out, err,
                                    sizeof err), 0);
    text = check_migrate_text();
    ck_assert_contains(text, "initial");
    ck_assert_contains(text, "widgets");
    ck_assert_ptr_null(strstr(text, "pending"));
    ck_assert_contains(text, "applied");
    ck_assert_contains(text, "at version 2");

    /* A second up has nothing to do. */
    check_migrate_up_ok(0);
    ck_assert_contains(check_migrate_text(), "up to date at version 2");
    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     0);
}
END_TEST

START_TEST(test_status_shows_pending_before_up)
{
    char err[1024] = "";
    const char *text;

    ck_assert_int_eq(migrate_status(st, check_migrate_dir, out, err,
                                    sizeof err), 0);
    text = check_migrate_text();
    ck_assert_contains(text, "initial");
    ck_assert_contains(text, "pending");
    ck_assert_contains(text, "at version 0");
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
}
END_TEST

START_TEST(test_null_out_runs_silently)
{
    char err[1024] = "";

    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, NULL, err,
                                sizeof err), 0);
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
    ck_assert_int_eq(migrate_status(st, check_migrate_dir, NULL, err,
                                    sizeof err), 0);
    ck_assert_int_eq(migrate_verify(st, check_migrate_dir, NULL, err,
                                    sizeof err), 0);
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, NULL, err,
                                  sizeof err), 0);
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
    ck_assert_str_eq(check_migrate_text(), "");
}
END_TEST

START_TEST(test_up_takes_steps)
{
    check_migrate_add_widgets();
    check_migrate_up_ok(1);
    ck_assert_int_eq(check_migrate_recorded(1), 1);
    ck_assert_int_eq(check_migrate_recorded(2), 0);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 0);
    check_migrate_up_ok(5);
    ck_assert_int_eq(check_migrate_recorded(2), 1);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 1);
}
END_TEST

START_TEST(test_down_then_up_gives_an_identical_schema)
{
    char err[1024] = "";
    char *before, *after;

    check_migrate_add_widgets();
    check_migrate_up_ok(0);
    before = check_migrate_schema();

    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), 0);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 0);
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), 0);
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
    ck_assert_int_eq(check_migrate_recorded(1), 0);
    ck_assert_contains(check_migrate_text(), "0001_initial.down.sql");

    check_migrate_up_ok(0);
    after = check_migrate_schema();
    ck_assert_str_eq(after, before);
    free(after);

    /* Down more steps than applied reverts everything, no more. */
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 9, 0, out, err,
                                  sizeof err), 0);
    after = check_migrate_schema();
    /* What may be left of a round trip is SQLite's own bookkeeping table
     * for AUTOINCREMENT, which a schema cannot drop. */
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 0);
    ck_assert_ptr_null(strstr(after, "CREATE TABLE users"));
    ck_assert_ptr_null(strstr(after, "table users"));
    ck_assert_ptr_null(strstr(after, "column users"));
    free(after);
    free(before);
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), 0);
    ck_assert_contains(check_migrate_text(), "nothing to revert");
}
END_TEST

START_TEST(test_down_refuses_zero_steps)
{
    char err[1024] = "";

    check_migrate_up_ok(0);
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 0, 0, out, err,
                                  sizeof err), -1);
    ck_assert_contains(err, ">= 1");
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
}
END_TEST

/* --- refusing to go on --- */

START_TEST(test_tampered_applied_file_is_refused_by_up_and_verify)
{
    char err[1024] = "", path[1400];
    const char *text;
    FILE *f;

    check_migrate_up_ok(0);
    ck_assert_int_eq(migrate_verify(st, check_migrate_dir, out, err,
                                    sizeof err), 0);
    ck_assert_contains(check_migrate_text(), "ok");

    snprintf(path, sizeof path, "%s/0001_initial.up.sql", check_migrate_dir);
    f = fopen(path, "a");
    ck_assert_ptr_nonnull(f);
    fputs("-- an edit after the fact\n", f);
    fclose(f);
    check_migrate_add_widgets();

    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, out, err,
                                sizeof err), -1);
    ck_assert_contains(err, "0001_initial.up.sql");
    ck_assert_contains(err, "changed");
    ck_assert_int_eq(check_migrate_has_table("widgets"), 0);

    err[0] = '\0';
    ck_assert_int_eq(migrate_verify(st, check_migrate_dir, out, err,
                                    sizeof err), -1);
    ck_assert_contains(err, "0001_initial.up.sql");
    text = check_migrate_text();
    ck_assert_contains(text, "FAILED");

    err[0] = '\0';
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), -1);
    ck_assert_contains(err, "changed");
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     -1);
    ck_assert_contains(err, "changed");

    ck_assert_int_eq(migrate_status(st, check_migrate_dir, out, err,
                                    sizeof err), 0);
    ck_assert_contains(check_migrate_text(), "file changed");

    /* Restoring the file as applied makes it whole again. */
    check_migrate_copy("0001_initial.up.sql");
    ck_assert_int_eq(migrate_verify(st, check_migrate_dir, out, err,
                                    sizeof err), 0);
    check_migrate_up_ok(0);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 1);
}
END_TEST

START_TEST(test_failed_up_marks_dirty_and_blocks_until_force_clean)
{
    char err[1024] = "";

    check_migrate_write(check_migrate_dir, "0002_widgets.up.sql",
                        "CREATE TABLE widgets (id INTEGER PRIMARY KEY);\n"
                        "INSERT INTO no_such_table VALUES (1);\n");
    check_migrate_write(check_migrate_dir, "0002_widgets.down.sql",
                        WIDGETS_DOWN);
    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, out, err,
                                sizeof err), -1);
    ck_assert_contains(err, "0002_widgets.up.sql");
    ck_assert_contains(err, "no_such_table");
    ck_assert_contains(err, "force-clean 2");
    /* 0001 went in; 0002 is rolled back whole and marked. */
    ck_assert_int_eq(check_migrate_recorded(1), 1);
    ck_assert_int_eq(check_migrate_recorded(2), 2);
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 0);

    ck_assert_int_eq(migrate_status(st, check_migrate_dir, out, err,
                                    sizeof err), 0);
    ck_assert_contains(check_migrate_text(), "dirty (up failed)");
    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     -1);
    ck_assert_contains(err, "dirty");

    /* Fixing the file is not enough: a person must clear the mark. */
    check_migrate_add_widgets();
    err[0] = '\0';
    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, out, err,
                                sizeof err), -1);
    ck_assert_contains(err, "migration 2");
    ck_assert_contains(err, "dirty");
    ck_assert_contains(err, "force-clean 2");
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), -1);
    ck_assert_contains(err, "dirty");
    ck_assert_int_eq(check_migrate_has_table("widgets"), 0);
    ck_assert_int_eq(check_migrate_has_table("users"), 1);

    ck_assert_int_eq(migrate_force_clean(st, 2, out, err, sizeof err), 0);
    ck_assert_int_eq(check_migrate_recorded(2), 0);
    check_migrate_up_ok(0);
    ck_assert_int_eq(check_migrate_recorded(2), 1);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 1);
    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     0);
    ck_assert_int_eq(migrate_force_clean(st, 2, out, err, sizeof err), -1);
    ck_assert_contains(err, "not marked dirty");
}
END_TEST

START_TEST(test_failed_down_marks_dirty_and_force_clean_keeps_it_applied)
{
    char err[1024] = "";

    check_migrate_write(check_migrate_dir, "0002_widgets.up.sql", WIDGETS_UP);
    check_migrate_write(check_migrate_dir, "0002_widgets.down.sql",
                        "DROP TABLE widgets;\nDROP TABLE no_such_table;\n");
    check_migrate_up_ok(0);
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), -1);
    ck_assert_contains(err, "0002_widgets.down.sql");
    ck_assert_int_eq(check_migrate_recorded(2), 3);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 1);
    ck_assert_int_eq(migrate_status(st, check_migrate_dir, out, err,
                                    sizeof err), 0);
    ck_assert_contains(check_migrate_text(), "dirty (down failed)");
    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, out, err,
                                sizeof err), -1);
    ck_assert_contains(err, "dirty");

    ck_assert_int_eq(migrate_force_clean(st, 2, out, err, sizeof err), 0);
    ck_assert_int_eq(check_migrate_recorded(2), 1);
    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     0);
    /* With the down file repaired (it is not checksummed) it runs. */
    check_migrate_write(check_migrate_dir, "0002_widgets.down.sql",
                        WIDGETS_DOWN);
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), 0);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 0);
    ck_assert_int_eq(check_migrate_recorded(2), 0);
}
END_TEST

START_TEST(test_dry_run_changes_nothing)
{
    char err[1024] = "";
    char *before;
    const char *text;

    check_migrate_add_widgets();
    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 1, out, err,
                                sizeof err), 0);
    text = check_migrate_text();
    ck_assert_contains(text, "would run 0001_initial.up.sql");
    ck_assert_contains(text, "would run 0002_widgets.up.sql");
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
    ck_assert_int_eq(check_migrate_recorded(1), 0);

    check_migrate_up_ok(0);
    before = check_migrate_schema();
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 2, 1, out, err,
                                  sizeof err), 0);
    text = check_migrate_text();
    ck_assert_contains(text, "would run 0002_widgets.down.sql");
    ck_assert_contains(text, "would run 0001_initial.down.sql");
    ck_assert_int_eq(check_migrate_recorded(1), 1);
    ck_assert_int_eq(check_migrate_recorded(2), 1);
    {
        char *after = check_migrate_schema();
        ck_assert_str_eq(after, before);
        free(after);
    }
    free(before);
}
END_TEST

START_TEST(test_check_says_behind_ahead_or_ok)
{
    char err[1024] = "";

    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     -1);
    ck_assert_str_eq(err, "database schema is at version 0, this chatd "
                     "needs 1: run 'chatd migrate up'");
    check_migrate_up_ok(0);
    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     0);

    /* A newer chatd applied 0002; this one only knows 0001. */
    check_migrate_add_widgets();
    check_migrate_up_ok(0);
    check_migrate_remove("0002_widgets.up.sql");
    check_migrate_remove("0002_widgets.down.sql");
    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     -1);
    ck_assert_contains(err, "ahead (version 2 > 1)");
    ck_assert_contains(err, "upgrade chatd");
    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, out, err,
                                sizeof err), -1);
    ck_assert_contains(err, "ahead");
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), -1);
    ck_assert_contains(err, "ahead");
    ck_assert_int_eq(check_migrate_has_table("widgets"), 1);
    ck_assert_int_eq(migrate_verify(st, check_migrate_dir, out, err,
                                    sizeof err), -1);
    ck_assert_int_eq(migrate_status(st, check_migrate_dir, out, err,
                                    sizeof err), 0);
    ck_assert_contains(check_migrate_text(), "applied, no file");
}
END_TEST

START_TEST(test_no_transaction_file_runs_outside_a_transaction)
{
    char err[1024] = "";

    /* VACUUM fails inside a transaction, so this passes only if the
     * first line is honoured. */
    check_migrate_write(check_migrate_dir, "0002_compact.up.sql",
                        "-- chatd:no-transaction\nVACUUM;\n");
    check_migrate_write(check_migrate_dir, "0002_compact.down.sql",
                        "-- chatd:no-transaction\nVACUUM;\n");
    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 1, out, err,
                                sizeof err), 0);
    ck_assert_contains(check_migrate_text(), "outside a transaction");
    check_migrate_up_ok(0);
    ck_assert_int_eq(check_migrate_recorded(2), 1);
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), 0);
    ck_assert_int_eq(check_migrate_recorded(2), 0);

    /* The same file without the line fails, and says why. */
    check_migrate_write(check_migrate_dir, "0002_compact.up.sql",
                        "VACUUM;\n");
    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, out, err,
                                sizeof err), -1);
    ck_assert_contains(err, "VACUUM");
}
END_TEST

/* --- the directory --- */

static void check_migrate_refused(const char *needle)
{
    char err[1024] = "";

    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, out, err,
                                sizeof err), -1);
    ck_assert_contains(err, needle);
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
    err[0] = '\0';
    ck_assert_int_eq(migrate_check(st, check_migrate_dir, err, sizeof err),
                     -1);
    ck_assert_contains(err, needle);
}

START_TEST(test_gap_in_versions_is_refused)
{
    check_migrate_write(check_migrate_dir, "0003_later.up.sql", WIDGETS_UP);
    check_migrate_write(check_migrate_dir, "0003_later.down.sql",
                        WIDGETS_DOWN);
    check_migrate_refused("version 2 is missing");
}
END_TEST

START_TEST(test_up_without_down_is_refused)
{
    check_migrate_write(check_migrate_dir, "0002_widgets.up.sql", WIDGETS_UP);
    check_migrate_refused("0002_widgets.down.sql");
}
END_TEST

START_TEST(test_down_without_up_is_refused)
{
    check_migrate_write(check_migrate_dir, "0002_widgets.down.sql",
                        WIDGETS_DOWN);
    check_migrate_refused("0002_widgets.up.sql");
}
END_TEST

START_TEST(test_duplicate_version_is_refused)
{
    check_migrate_add_widgets();
    check_migrate_write(check_migrate_dir, "0002_gadgets.up.sql", WIDGETS_UP);
    check_migrate_write(check_migrate_dir, "0002_gadgets.down.sql",
                        WIDGETS_DOWN);
    check_migrate_refused("duplicate migration version 2");
}
END_TEST

START_TEST(test_misnamed_sql_file_is_refused)
{
    check_migrate_write(check_migrate_dir, "0002-Widgets.up.sql",
                        WIDGETS_UP);
    check_migrate_refused("0002-Widgets.up.sql");
}
END_TEST

START_TEST(test_other_files_are_ignored)
{
    check_migrate_write(check_migrate_dir, "README", "notes\n");
    check_migrate_up_ok(0);
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
}
END_TEST

START_TEST(test_missing_directory_is_refused)
{
    char err[1024] = "", dir[1300];

    snprintf(dir, sizeof dir, "%s/absent", check_migrate_dir);
    ck_assert_int_eq(migrate_up(st, dir, 0, 0, out, err, sizeof err), -1);
    ck_assert_contains(err, "cannot read migrations directory");
}
END_TEST

/* --- the command line --- */

static int check_migrate_main(char *err_text, size_t len, int argc, ...)
{
    char *argv[8];
    char *buf = NULL;
    size_t blen = 0;
    FILE *eo = open_memstream(&buf, &blen);
    va_list ap;
    int i, rc;

    ck_assert_ptr_nonnull(eo);
    va_start(ap, argc);
    for (i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;
    rc = migrate_main(st, check_migrate_dir, argc, argv, out, eo);
    fclose(eo);
    snprintf(err_text, len, "%s", buf ? buf : "");
    free(buf);
    return rc;
}

START_TEST(test_main_exit_codes_and_usage)
{
    char e[1024];

    ck_assert_int_eq(check_migrate_main(e, sizeof e, 0), 2);
    ck_assert_contains(e, "usage");
    ck_assert_int_eq(strncmp(e, "chatd: ", 7), 0);
    ck_assert_ptr_eq(strchr(e, '\n'), e + strlen(e) - 1);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 1, "sideways"), 2);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 2, "up", "many"), 2);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 2, "down", "0"), 2);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 3, "up", "1", "2"), 2);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 2, "status", "1"), 2);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 2, "verify",
                                        "--dry-run"), 2);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 1, "force-clean"), 2);
    ck_assert_int_eq(check_migrate_has_table("users"), 0);

    ck_assert_int_eq(check_migrate_main(e, sizeof e, 2, "up", "--dry-run"),
                     0);
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 1, "up"), 0);
    ck_assert_str_eq(e, "");
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 1, "status"), 0);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 1, "verify"), 0);

    ck_assert_int_eq(check_migrate_main(e, sizeof e, 2, "force-clean", "1"),
                     1);
    ck_assert_str_eq(e, "chatd: migrate force-clean: migration 1 is not "
                     "marked dirty\n");

    ck_assert_int_eq(check_migrate_main(e, sizeof e, 1, "down"), 0);
    ck_assert_int_eq(check_migrate_has_table("users"), 0);

    /* A failure is one line on the error stream, exit code 1. */
    check_migrate_write(check_migrate_dir, "0002_widgets.up.sql", WIDGETS_UP);
    ck_assert_int_eq(check_migrate_main(e, sizeof e, 1, "up"), 1);
    ck_assert_contains(e, "chatd: migrate up: ");
    ck_assert_ptr_eq(strchr(e, '\n'), e + strlen(e) - 1);
}
END_TEST

/* --- Postgres only: the advisory lock, the catalog, CONCURRENTLY --- */

#define CHECK_MIGRATE_LOCK_KEY "5544924037791511789"

/* A migrate_up on a connection of its own, in a thread. */
struct check_migrate_runner {
    pthread_t thread;
    struct store *s;
    int rc;
    char err[1024];
    char *text;             /* what it printed */
    size_t len;
    int64_t done_ns;        /* when it returned */
};

static void *check_migrate_runner_main(void *arg)
{
    struct check_migrate_runner *r = arg;
    FILE *o = open_memstream(&r->text, &r->len);

    r->rc = migrate_up(r->s, check_migrate_dir, 0, 0, o, r->err,
                       sizeof r->err);
    fclose(o);
    r->done_ns = util_mono_ns();
    return NULL;
}

static void check_migrate_runner_start(struct check_migrate_runner *r)
{
    char err[256] = "";

    memset(r, 0, sizeof *r);
    r->s = store_open(check_migrate_url, err, sizeof err);
    ck_assert_msg(r->s != NULL, "store_open: %s", err);
    ck_assert_int_eq(pthread_create(&r->thread, NULL,
                                    check_migrate_runner_main, r), 0);
}

static void check_migrate_runner_join(struct check_migrate_runner *r)
{
    ck_assert_int_eq(pthread_join(r->thread, NULL), 0);
    store_close(r->s);
    r->s = NULL;
}

/* The versions recorded, as "1:0 2:0" (version:dirty). */
static char *check_migrate_pg_rows(void)
{
    PGconn *c = check_migrate_pg_raw();
    PGresult *r = check_migrate_pg_query(c, "SELECT string_agg(version || "
                                         "':' || dirty, ' ' ORDER BY "
                                         "version) FROM schema_migrations",
                                         NULL);
    char *v = xstrdup(PQgetvalue(r, 0, 0));

    PQclear(r);
    PQfinish(c);
    return v;
}

START_TEST(test_pg_second_migrator_waits_for_the_lock)
{
    struct check_migrate_runner r;
    PGconn *holder = check_migrate_pg_raw();
    PGresult *res;
    int64_t released;
    char *rows;

    /* Someone else is migrating: they hold the lock. */
    res = check_migrate_pg_query(holder, "SELECT pg_advisory_lock("
                                 CHECK_MIGRATE_LOCK_KEY ")", NULL);
    PQclear(res);
    check_migrate_runner_start(&r);
    usleep(700 * 1000);
    /* Well past the 2 s lock_timeout of a serving session it would be
     * refused; a migrator waits instead, having done nothing yet. */
    usleep(1800 * 1000);
    ck_assert_int_eq(r.done_ns, 0);
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
    released = util_mono_ns();
    res = check_migrate_pg_query(holder, "SELECT pg_advisory_unlock("
                                 CHECK_MIGRATE_LOCK_KEY ")", NULL);
    PQclear(res);
    check_migrate_runner_join(&r);
    ck_assert_msg(r.rc == 0, "migrate_up: %s", r.err);
    ck_assert_int_ge(r.done_ns, released);
    ck_assert_contains(r.text, "at version 1");
    free(r.text);
    ck_assert_int_eq(check_migrate_has_table("users"), 1);
    rows = check_migrate_pg_rows();
    ck_assert_str_eq(rows, "1:0");
    free(rows);
    PQfinish(holder);
}
END_TEST

START_TEST(test_pg_two_migrators_at_once_apply_each_version_once)
{
    struct check_migrate_runner a, b;
    char *rows;

    /* A slow second migration keeps the first migrator busy while the
     * other one arrives. */
    check_migrate_write(check_migrate_dir, "0002_widgets.up.sql",
                        "SELECT pg_sleep(1);\n" WIDGETS_UP);
    check_migrate_write(check_migrate_dir, "0002_widgets.down.sql",
                        WIDGETS_DOWN);
    check_migrate_runner_start(&a);
    check_migrate_runner_start(&b);
    check_migrate_runner_join(&a);
    check_migrate_runner_join(&b);
    ck_assert_msg(a.rc == 0, "first migrator: %s", a.err);
    ck_assert_msg(b.rc == 0, "second migrator: %s", b.err);
    /* One ran both files, the other found nothing left to do. */
    ck_assert_msg((strstr(a.text, "running 0002") != NULL) !=
                  (strstr(b.text, "running 0002") != NULL),
                  "both or neither ran 0002:\n%s\n--\n%s", a.text, b.text);
    ck_assert_msg(strstr(a.text, "up to date at version 2") != NULL ||
                  strstr(b.text, "up to date at version 2") != NULL,
                  "neither waited:\n%s\n--\n%s", a.text, b.text);
    free(a.text);
    free(b.text);
    rows = check_migrate_pg_rows();
    ck_assert_str_eq(rows, "1:0 2:0");
    free(rows);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 1);
}
END_TEST

START_TEST(test_pg_schema_has_its_comments_and_indexes)
{
    char *schema;

    check_migrate_up_ok(0);
    schema = check_migrate_schema();
    /* What a DBA relies on: every table commented, every query path
     * indexed, the limits as constraints. */
    ck_assert_contains(schema, "table users r chatd accounts");
    ck_assert_contains(schema, "table sessions r Login sessions");
    ck_assert_contains(schema, "table conversations r Direct");
    ck_assert_contains(schema, "table conversation_members r Membership");
    ck_assert_contains(schema, "table messages r Every stored message");
    ck_assert_contains(schema, "table events r Append-only");
    ck_assert_contains(schema, "UNIQUE (conversation_id, seq)");
    ck_assert_contains(schema, "UNIQUE (sender_id, client_msg_id)");
    ck_assert_contains(schema, "conversation_members USING btree "
                       "(user_id, conversation_id)");
    ck_assert_contains(schema, "events USING btree (created_at)");
    ck_assert_contains(schema, "events USING btree (type, created_at)");
    ck_assert_contains(schema, "sessions USING btree (user_id)");
    ck_assert_contains(schema, "conversations USING btree "
                       "(last_activity)");
    ck_assert_contains(schema, "octet_length(token_hash) = 32");
    ck_assert_contains(schema, "column messages.created_at timestamp with "
                       "time zone");
    ck_assert_contains(schema, "column users.id bigint true a");
    free(schema);
}
END_TEST

START_TEST(test_pg_no_transaction_file_runs_statement_by_statement)
{
    char err[1024] = "";
    PGconn *c;
    PGresult *r;

    check_migrate_up_ok(0);
    /* CREATE INDEX CONCURRENTLY refuses any transaction, including the
     * implicit one of several statements sent at once; a ';' inside a
     * string or a comment does not end a statement. */
    check_migrate_write(check_migrate_dir, "0002_concurrent.up.sql",
                        "-- chatd:no-transaction\n"
                        "/* two indexes; built without blocking writes */\n"
                        "CREATE INDEX CONCURRENTLY events_user_id "
                        "ON events (user_id);\n"
                        "CREATE INDEX CONCURRENTLY messages_created_at "
                        "ON messages (created_at);\n"
                        "COMMENT ON INDEX events_user_id IS 'a; b';\n");
    check_migrate_write(check_migrate_dir, "0002_concurrent.down.sql",
                        "-- chatd:no-transaction\n"
                        "DROP INDEX CONCURRENTLY messages_created_at;\n"
                        "DROP INDEX CONCURRENTLY events_user_id;\n");
    check_migrate_up_ok(0);
    ck_assert_int_eq(check_migrate_recorded(2), 1);
    c = check_migrate_pg_raw();
    r = check_migrate_pg_query(c, "SELECT count(*) FROM pg_indexes WHERE "
                               "indexname IN ('events_user_id', "
                               "'messages_created_at')", NULL);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "2");
    PQclear(r);
    r = check_migrate_pg_query(c, "SELECT obj_description("
                               "'events_user_id'::regclass, 'pg_class')",
                               NULL);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "a; b");
    PQclear(r);
    ck_assert_int_eq(migrate_down(st, check_migrate_dir, 1, 0, out, err,
                                  sizeof err), 0);
    r = check_migrate_pg_query(c, "SELECT count(*) FROM pg_indexes WHERE "
                               "indexname IN ('events_user_id', "
                               "'messages_created_at')", NULL);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    PQfinish(c);

    /* Without the mark the same file fails, and is marked dirty. */
    check_migrate_write(check_migrate_dir, "0002_concurrent.up.sql",
                        "CREATE INDEX CONCURRENTLY events_user_id "
                        "ON events (user_id);\n"
                        "CREATE INDEX CONCURRENTLY messages_created_at "
                        "ON messages (created_at);\n");
    ck_assert_int_eq(migrate_up(st, check_migrate_dir, 0, 0, out, err,
                                sizeof err), -1);
    ck_assert_contains(err, "CONCURRENTLY");
    ck_assert_int_eq(check_migrate_recorded(2), 2);
}
END_TEST

START_TEST(test_pg_after_migrating_the_lock_is_free_and_timeouts_back)
{
    struct store_user u;
    PGresult *r;
    PGconn *c;
    int64_t t0, ms;
    int rc;

    /* The migrator lifts its session's timeouts while it works; once
     * done, the same connection serves with them again, and the lock is
     * free for the next migrator. */
    check_migrate_up_ok(0);
    c = check_migrate_pg_raw();
    r = check_migrate_pg_query(c, "SELECT pg_try_advisory_lock("
                               CHECK_MIGRATE_LOCK_KEY ")", NULL);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    PQclear(check_migrate_pg_query(c, "SELECT pg_advisory_unlock_all()",
                                   NULL));
    /* A table held by someone else: the store gives up after its
     * lock_timeout (2 s) instead of waiting for ever. */
    PQclear(check_migrate_pg_query(c, "BEGIN", NULL));
    PQclear(check_migrate_pg_query(c, "LOCK TABLE users IN ACCESS "
                                   "EXCLUSIVE MODE", NULL));
    t0 = util_mono_ns();
    rc = store_user_by_name(st, "somebody", &u);
    ms = (util_mono_ns() - t0) / 1000000;
    ck_assert_int_eq(rc, STORE_ERR);
    ck_assert_contains(store_errstr(st), "lock timeout");
    ck_assert_int_ge(ms, 1500);
    ck_assert_int_lt(ms, 4500);
    PQclear(check_migrate_pg_query(c, "ROLLBACK", NULL));
    PQfinish(c);
    ck_assert_int_eq(store_user_by_name(st, "somebody", &u), STORE_NOTFOUND);
}
END_TEST

static Suite *check_migrate_suite(const char *kind)
{
    Suite *s = suite_create(kind);
    TCase *tc;

    tc = tcase_create("up_down_status");
    tcase_add_checked_fixture(tc, check_migrate_setup,
                              check_migrate_teardown);
    tcase_add_test(tc, test_up_applies_all_and_status_lists_them);
    tcase_add_test(tc, test_status_shows_pending_before_up);
    tcase_add_test(tc, test_up_takes_steps);
    tcase_add_test(tc, test_null_out_runs_silently);
    tcase_add_test(tc, test_down_then_up_gives_an_identical_schema);
    tcase_add_test(tc, test_down_refuses_zero_steps);
    tcase_add_test(tc, test_dry_run_changes_nothing);
    tcase_add_test(tc, test_no_transaction_file_runs_outside_a_transaction);
    suite_add_tcase(s, tc);

    tc = tcase_create("refusals");
    tcase_add_checked_fixture(tc, check_migrate_setup,
                              check_migrate_teardown);
    tcase_add_test(tc, test_tampered_applied_file_is_refused_by_up_and_verify);
    tcase_add_test(tc,
                   test_failed_up_marks_dirty_and_blocks_until_force_clean);
    tcase_add_test(
        tc, test_failed_down_marks_dirty_and_force_clean_keeps_it_applied);
    tcase_add_test(tc, test_check_says_behind_ahead_or_ok);
    suite_add_tcase(s, tc);

    tc = tcase_create("directory");
    tcase_add_checked_fixture(tc, check_migrate_setup,
                              check_migrate_teardown);
    tcase_add_test(tc, test_gap_in_versions_is_refused);
    tcase_add_test(tc, test_up_without_down_is_refused);
    tcase_add_test(tc, test_down_without_up_is_refused);
    tcase_add_test(tc, test_duplicate_version_is_refused);
    tcase_add_test(tc, test_misnamed_sql_file_is_refused);
    tcase_add_test(tc, test_other_files_are_ignored);
    tcase_add_test(tc, test_missing_directory_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("command_line");
    tcase_add_checked_fixture(tc, check_migrate_setup,
                              check_migrate_teardown);
    tcase_add_test(tc, test_main_exit_codes_and_usage);
    suite_add_tcase(s, tc);

    if (strcmp(kind, "postgres") == 0) {
        tc = tcase_create("postgres");
        tcase_add_checked_fixture(tc, check_migrate_setup,
                                  check_migrate_teardown);
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_pg_second_migrator_waits_for_the_lock);
        tcase_add_test(tc,
                       test_pg_two_migrators_at_once_apply_each_version_once);
        tcase_add_test(tc, test_pg_schema_has_its_comments_and_indexes);
        tcase_add_test(tc,
                       test_pg_no_transaction_file_runs_statement_by_statement);
        tcase_add_test(
            tc, test_pg_after_migrating_the_lock_is_free_and_timeouts_back);
        suite_add_tcase(s, tc);
    }
    return s;
}

/* The source tree: $CHATD_TEST_DATA_DIR, else found from the usual
 * working directories of a test run. */
static int check_migrate_find_src(void)
{
    static const char *const guesses[] = { ".", "..", "../.." };
    const char *env = getenv("CHATD_TEST_DATA_DIR");
    char probe[1200];
    size_t i;

    if (env != NULL && *env != '\0') {
        snprintf(check_migrate_data, sizeof check_migrate_data, "%s", env);
        return 0;
    }
    for (i = 0; i < sizeof guesses / sizeof guesses[0]; i++) {
        snprintf(probe, sizeof probe,
                 "%s/migrations/sqlite/0001_initial.up.sql", guesses[i]);
        if (access(probe, R_OK) == 0) {
            snprintf(check_migrate_data, sizeof check_migrate_data, "%s",
                     guesses[i]);
            return 0;
        }
    }
    return -1;
}

static int check_migrate_rm(const char *path, const struct stat *sb,
                            int flag, struct FTW *ftw)
{
    return remove(path);
}

static int check_migrate_run(const char *kind)
{
    SRunner *sr;
    int failed;

    check_migrate_kind = kind;
    snprintf(check_migrate_src, sizeof check_migrate_src, "%s/migrations/%s",
             check_migrate_data, kind);
    sr = srunner_create(check_migrate_suite(kind));
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    int failed;

    if (check_migrate_find_src() < 0) {
        fprintf(stderr, "check_migrate: migrations not found: set "
                "CHATD_TEST_DATA_DIR to the source tree\n");
        return EXIT_FAILURE;
    }
    snprintf(check_migrate_tmp, sizeof check_migrate_tmp,
             "%s/check_migrate.XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    if (mkdtemp(check_migrate_tmp) == NULL) {
        perror("check_migrate: mkdtemp");
        return EXIT_FAILURE;
    }
    failed = check_migrate_run("sqlite");
    check_migrate_pg_url = getenv("CHATD_TEST_PG_URL");
    if (check_migrate_pg_url != NULL && *check_migrate_pg_url != '\0')
        failed += check_migrate_run("postgres");
    else
        printf("check_migrate: CHATD_TEST_PG_URL is not set; the Postgres "
               "run is not part of this build\n");
    nftw(check_migrate_tmp, check_migrate_rm, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
