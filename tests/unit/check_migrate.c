/*
 * check_migrate.c - unit tests for migrate.c on the SQLite backend: up,
 * down, status, verify, check, force-clean and the command line, against
 * a fresh database file and a copy of the migrations directory per test
 * (so a test may add, break or edit files). The real migrations come from
 * $CHATD_TEST_DATA_DIR/migrations/sqlite, or from the source tree found
 * by a relative path when that is unset.
 *
 * Runs single-threaded under Check, each test in its own forked process
 * unless CK_FORK=no.
 */
#include <check.h>
#include <ftw.h>
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

static char check_migrate_tmp[1024];   /* holds every test's files */
static char check_migrate_src[1024];   /* the real migrations */
static char check_migrate_dir[1200];   /* this test's migrations copy */
static char check_migrate_db[1200];    /* this test's database file */
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

static void check_migrate_setup(void)
{
    char base[1100], url[1300], err[256] = "";

    snprintf(base, sizeof base, "%s/tXXXXXX", check_migrate_tmp);
    ck_assert_ptr_nonnull(mkdtemp(base));
    snprintf(check_migrate_dir, sizeof check_migrate_dir, "%s/m", base);
    ck_assert_int_eq(mkdir(check_migrate_dir, 0700), 0);
    snprintf(check_migrate_db, sizeof check_migrate_db, "%s/chatd.db", base);
    check_migrate_copy("0001_initial.up.sql");
    check_migrate_copy("0001_initial.down.sql");
    snprintf(url, sizeof url, "sqlite:%s", check_migrate_db);
    st = store_open(url, err, sizeof err);
    ck_assert_msg(st != NULL, "store_open: %s", err);
    check_migrate_seen = 0;
    out = open_memstream(&check_migrate_buf, &check_migrate_len);
    ck_assert_ptr_nonnull(out);
}

static void check_migrate_teardown(void)
{
    fclose(out);
    free(check_migrate_buf);
    check_migrate_buf = NULL;
    store_close(st);
    st = NULL;
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

/* Every schema object, by name: what two schemas compare by. */
static char *check_migrate_schema(void)
{
    struct util_buf b = { 0 };
    sqlite3 *db = check_migrate_raw();
    sqlite3_stmt *s;

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
    sqlite3 *db = check_migrate_raw();
    sqlite3_stmt *s;
    int found;

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
    /* What is left of a round trip is SQLite's own bookkeeping table for
     * AUTOINCREMENT, which a schema cannot drop. */
    ck_assert_int_eq(check_migrate_has_table("users"), 0);
    ck_assert_int_eq(check_migrate_has_table("widgets"), 0);
    ck_assert_ptr_null(strstr(after, "CREATE TABLE users"));
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

static Suite *check_migrate_suite(void)
{
    Suite *s = suite_create("migrate");
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
    return s;
}

/* The real migrations: $CHATD_TEST_DATA_DIR, else the source tree, found
 * from the usual working directories of a test run. */
static int check_migrate_find_src(void)
{
    static const char *const guesses[] = { ".", "..", "../.." };
    const char *env = getenv("CHATD_TEST_DATA_DIR");
    char probe[1200];
    size_t i;

    if (env != NULL && *env != '\0') {
        snprintf(check_migrate_src, sizeof check_migrate_src,
                 "%s/migrations/sqlite", env);
        return 0;
    }
    for (i = 0; i < sizeof guesses / sizeof guesses[0]; i++) {
        snprintf(probe, sizeof probe,
                 "%s/migrations/sqlite/0001_initial.up.sql", guesses[i]);
        if (access(probe, R_OK) == 0) {
            snprintf(check_migrate_src, sizeof check_migrate_src,
                     "%s/migrations/sqlite", guesses[i]);
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

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    SRunner *sr;
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
    sr = srunner_create(check_migrate_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(check_migrate_tmp, check_migrate_rm, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
