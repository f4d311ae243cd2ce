/*
 * migrate.c - schema migrations (see migrate.h): reads a migrations
 * directory, compares it with what the database recorded in
 * schema_migrations, and applies or reverts files through the store's
 * migration primitives, so the same code serves SQLite and Postgres.
 *
 * Design: every command first reads and validates the whole directory
 * (names, no gaps, every up with its down, checksums) and the applied
 * list, and refuses to change anything while the database has a dirty
 * version, a version this directory does not know, or an applied file
 * whose bytes changed. A changed file is never re-run silently: the
 * recorded checksum is what proves the schema is what the files say.
 *
 * Threads: runs on the thread that owns the store, normally main() of
 * `chatd migrate` or the start-up check before the server runs.
 */
#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MIGRATE_NAME_MAX 100
#define MIGRATE_NO_TX_LINE "-- chatd:no-transaction"

/* One version as found in the directory. */
struct migrate_file {
    int version;
    char name[MIGRATE_NAME_MAX + 1];  /* "initial" */
    char stem[MIGRATE_NAME_MAX + 32]; /* "0001_initial", digits as written */
    char *up_path;                    /* owned; NULL until found */
    char *down_path;                  /* owned; NULL until found */
    char checksum[65];                /* hex SHA-256 of the up file */
};

/* A directory and a database, read at the start of a command. */
struct migrate_ctx {
    struct migrate_file *files;       /* sorted by version: 1, 2, ... */
    size_t nfiles;
    struct store_migration *applied;  /* sorted by version */
    size_t napplied;
    int began;                        /* store_mig_begin succeeded */
};

static void migrate_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void migrate_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A progress line; out may be NULL for none. */
static void migrate_say(FILE *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void migrate_say(FILE *out, const char *fmt, ...)
{
    va_list ap;

    if (out == NULL)
        return;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fflush(out);
}

/* Reads a whole file into a NUL-terminated heap buffer (caller frees). */
static char *migrate_read_file(const char *path, size_t *len, char *err,
                               size_t errlen)
{
    struct util_buf b = { 0 };
    char chunk[8192];
    size_t got;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        migrate_err(err, errlen, "cannot read %s: %s", path,
                    strerror(errno));
        return NULL;
    }
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        util_buf_append(&b, chunk, got);
    if (ferror(f)) {
        migrate_err(err, errlen, "cannot read %s: %s", path,
                    strerror(errno));
        fclose(f);
        util_buf_free(&b);
        return NULL;
    }
    fclose(f);
    if (len != NULL)
        *len = b.len;
    return util_buf_steal(&b);
}

static int migrate_sha256_hex(const char *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != 32)
        return -1;
    util_hex(md, mdlen, out);
    return 0;
}

/* Whether a file's first line asks to run outside a transaction. */
static int migrate_no_transaction(const char *sql)
{
    size_t n = strlen(MIGRATE_NO_TX_LINE);
    const char *p = sql + n;

    if (strncmp(sql, MIGRATE_NO_TX_LINE, n) != 0)
        return 0;
    while (*p == ' ' || *p == '\t' || *p == '\r')
        p++;
    return *p == '\n' || *p == '\0';
}

/* Splits "0001_initial.up.sql" into version 1, name "initial", stem
 * "0001_initial" and up = 1. Returns -1 if it is not a migration name. */
static int migrate_parse_name(const char *fname, int *version, char *name,
                              char *stem, size_t stemlen, int *up)
{
    size_t len = strlen(fname), digits = 0, base, i;
    long v = 0;

    if (len > 7 && strcmp(fname + len - 7, ".up.sql") == 0) {
        *up = 1;
        base = len - 7;
    } else if (len > 9 && strcmp(fname + len - 9, ".down.sql") == 0) {
        *up = 0;
        base = len - 9;
    } else {
        return -1;
    }
    while (digits < base && fname[digits] >= '0' && fname[digits] <= '9') {
        v = v * 10 + (fname[digits] - '0');
        if (v > INT_MAX)
            return -1;
        digits++;
    }
    if (digits < 4 || digits >= base || fname[digits] != '_')
        return -1;
    if (base - digits - 1 < 1 || base - digits - 1 > MIGRATE_NAME_MAX ||
        base >= stemlen)
        return -1;
    for (i = digits + 1; i < base; i++) {
        char c = fname[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return -1;
    }
    *version = (int)v;
    memcpy(name, fname + digits + 1, base - digits - 1);
    name[base - digits - 1] = '\0';
    memcpy(stem, fname, base);
    stem[base] = '\0';
    return 0;
}

static int migrate_file_cmp(const void *a, const void *b)
{
    const struct migrate_file *x = a, *y = b;

    return (x->version > y->version) - (x->version < y->version);
}

static void migrate_files_free(struct migrate_file *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(v[i].up_path);
        free(v[i].down_path);
    }
    free(v);
}

static char *migrate_join(const char *dir, const char *fname)
{
    struct util_buf b = { 0 };

    util_buf_printf(&b, "%s/%s", dir, fname);
    return util_buf_steal(&b);
}

/* Reads and validates dir: names, pairs, no gaps, checksums. */
static int migrate_scan(const char *dir, struct migrate_ctx *ctx, char *err,
                        size_t errlen)
{
    struct migrate_file *v = NULL;
    size_t n = 0, cap = 0, i;
    struct dirent *de;
    DIR *d = opendir(dir);

    if (d == NULL) {
        migrate_err(err, errlen, "cannot read migrations directory %s: %s",
                    dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        char name[MIGRATE_NAME_MAX + 1], stem[MIGRATE_NAME_MAX + 32];
        size_t flen = strlen(de->d_name);
        struct migrate_file *f = NULL;
        int version, up;

        if (de->d_name[0] == '.')
            continue;
        /* Other files (a README) may live here; a .sql file that is not
         * named as a migration is a mistake that must not be skipped. */
        if (flen < 4 || strcmp(de->d_name + flen - 4, ".sql") != 0)
            continue;
        if (migrate_parse_name(de->d_name, &version, name, stem, sizeof stem,
                               &up) < 0) {
            migrate_err(err, errlen, "%s/%s is not named as a migration "
                        "(NNNN_name.up.sql or NNNN_name.down.sql, name of "
                        "a-z 0-9 _)", dir, de->d_name);
            goto fail;
        }
        if (version == 0) {
            migrate_err(err, errlen, "%s/%s: versions start at 1", dir,
                        de->d_name);
            goto fail;
        }
        for (i = 0; i < n; i++)
            if (v[i].version == version)
                f = &v[i];
        if (f != NULL && strcmp(f->stem, stem) != 0) {
            migrate_err(err, errlen, "duplicate migration version %d in %s: "
                        "%s and %s", version, dir, f->stem, stem);
            goto fail;
        }
        if (f == NULL) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                v = xrealloc(v, cap * sizeof *v);
            }
            f = &v[n++];
            memset(f, 0, sizeof *f);
            f->version = version;
            snprintf(f->name, sizeof f->name, "%s", name);
            snprintf(f->stem, sizeof f->stem, "%s", stem);
        }
        if (up)
            f->up_path = migrate_join(dir, de->d_name);
        else
            f->down_path = migrate_join(dir, de->d_name);
    }
    closedir(d);
    d = NULL;

    if (n > 0)
        qsort(v, n, sizeof *v, migrate_file_cmp);
    for (i = 0; i < n; i++) {
        char *sql;
        size_t len;

        if (v[i].up_path == NULL || v[i].down_path == NULL) {
            migrate_err(err, errlen, "migration %s in %s has no %s file "
                        "(%s.%s.sql)", v[i].stem, dir,
                        v[i].up_path ? "down" : "up", v[i].stem,
                        v[i].up_path ? "down" : "up");
            goto fail;
        }
        if (v[i].version != (int)i + 1) {
            if (i == 0)
                migrate_err(err, errlen, "migrations in %s start at version "
                            "%d, not 1", dir, v[i].version);
            else
                migrate_err(err, errlen, "gap in migrations in %s: version "
                            "%d is missing between %s and %s", dir, (int)i + 1,
                            v[i - 1].stem, v[i].stem);
            goto fail;
        }
        sql = migrate_read_file(v[i].up_path, &len, err, errlen);
        if (sql == NULL)
            goto fail;
        if (migrate_sha256_hex(sql, len, v[i].checksum) < 0) {
            migrate_err(err, errlen, "cannot compute the SHA-256 of %s",
                        v[i].up_path);
            free(sql);
            goto fail;
        }
        free(sql);
    }
    ctx->files = v;
    ctx->nfiles = n;
    return 0;
fail:
    if (d != NULL)
        closedir(d);
    migrate_files_free(v, n);
    return -1;
}

static void migrate_unload(struct store *s, struct migrate_ctx *ctx)
{
    if (ctx->began)
        store_mig_end(s);
    migrate_files_free(ctx->files, ctx->nfiles);
    free(ctx->applied);
    memset(ctx, 0, sizeof *ctx);
}

/* Scans dir, takes the migration lock and reads the applied list. */
static int migrate_load(struct store *s, const char *dir,
                        struct migrate_ctx *ctx, char *err, size_t errlen)
{
    memset(ctx, 0, sizeof *ctx);
    if (migrate_scan(dir, ctx, err, errlen) < 0)
        return -1;
    if (store_mig_begin(s) != STORE_OK) {
        migrate_err(err, errlen, "cannot prepare schema_migrations: %s",
                    store_errstr(s));
        migrate_unload(s, ctx);
        return -1;
    }
    ctx->began = 1;
    if (store_mig_applied(s, &ctx->applied, &ctx->napplied) != STORE_OK) {
        migrate_err(err, errlen, "cannot read schema_migrations: %s",
                    store_errstr(s));
        migrate_unload(s, ctx);
        return -1;
    }
    return 0;
}

static const struct migrate_file *migrate_file_of(const struct migrate_ctx *ctx,
                                                  int version)
{
    if (version < 1 || (size_t)version > ctx->nfiles)
        return NULL;
    return &ctx->files[version - 1];
}

/* The newest applied version (a failed up is not applied). */
static int migrate_current(const struct migrate_ctx *ctx)
{
    size_t i;
    int cur = 0;

    for (i = 0; i < ctx->napplied; i++)
        if (ctx->applied[i].dirty != 1 && ctx->applied[i].version > cur)
            cur = ctx->applied[i].version;
    return cur;
}

static const char *migrate_dirty_what(int dirty)
{
    return dirty == 1 ? "up" : dirty == 2 ? "down" : "run";
}

/* What is wrong with one applied row, or NULL. */
static const char *migrate_row_problem(const struct migrate_ctx *ctx,
                                       const struct store_migration *m,
                                       char *buf, size_t len)
{
    const struct migrate_file *f = migrate_file_of(ctx, m->version);

    if (m->dirty) {
        snprintf(buf, len, "migration %d (%s) is dirty: its last %s failed "
                 "and may have left the schema half changed; an operator "
                 "must repair the schema by hand, then run 'chatd migrate "
                 "force-clean %d'", m->version, m->name,
                 migrate_dirty_what(m->dirty), m->version);
        return buf;
    }
    if (f == NULL) {
        snprintf(buf, len, "database schema is ahead (version %d > %d): "
                 "upgrade chatd", m->version, (int)ctx->nfiles);
        return buf;
    }
    if (strcmp(f->checksum, m->checksum) != 0) {
        snprintf(buf, len, "migration file %s.up.sql was changed after it "
                 "was applied (checksum %.12s... recorded, %.12s... now): "
                 "restore the file as it was applied", f->stem, m->checksum,
                 f->checksum);
        return buf;
    }
    return NULL;
}

/* The first reason not to run anything: a dirty version, a version newer
 * than the directory knows, a changed file, a hole in the applied list. */
static int migrate_refuse(const struct migrate_ctx *ctx, char *err,
                          size_t errlen)
{
    char buf[512];
    size_t i;

    /* Dirty first: it is the one that needs a person. */
    for (i = 0; i < ctx->napplied; i++)
        if (ctx->applied[i].dirty) {
            migrate_err(err, errlen, "%s",
                        migrate_row_problem(ctx, &ctx->applied[i], buf,
                                            sizeof buf));
            return -1;
        }
    for (i = 0; i < ctx->napplied; i++) {
        const char *why = migrate_row_problem(ctx, &ctx->applied[i], buf,
                                              sizeof buf);
        if (why != NULL) {
            migrate_err(err, errlen, "%s", why);
            return -1;
        }
    }
    for (i = 0; i < ctx->napplied; i++)
        if (ctx->applied[i].version != (int)i + 1) {
            migrate_err(err, errlen, "schema_migrations has a hole: version "
                        "%d is not applied but %d is; repair it by hand",
                        (int)i + 1, ctx->applied[i].version);
            return -1;
        }
    return 0;
}

/* The store_migration describing file f run in one direction. */
static void migrate_describe(const struct migrate_file *f, const char *sql,
                             struct store_migration *m)
{
    memset(m, 0, sizeof *m);
    m->version = f->version;
    snprintf(m->name, sizeof m->name, "%s", f->name);
    memcpy(m->checksum, f->checksum, sizeof m->checksum);
    m->no_transaction = migrate_no_transaction(sql);
}

/* Runs file f up or down (or only says so on a dry run). */
static int migrate_run(struct store *s, const struct migrate_file *f, int up,
                       int dry_run, FILE *out, char *err, size_t errlen)
{
    const char *path = up ? f->up_path : f->down_path;
    const char *dir = up ? "up" : "down";
    struct store_migration m;
    int64_t t0;
    char *sql;
    int rc;

    sql = migrate_read_file(path, NULL, err, errlen);
    if (sql == NULL)
        return -1;
    migrate_describe(f, sql, &m);
    if (dry_run) {
        migrate_say(out, "would run %s.%s.sql%s\n", f->stem, dir,
                    m.no_transaction ? " (outside a transaction)" : "");
        free(sql);
        return 0;
    }
    migrate_say(out, "running %s.%s.sql\n", f->stem, dir);
    t0 = util_mono_ns();
    rc = store_mig_apply(s, &m, sql, up);
    free(sql);
    if (rc == STORE_CONFLICT || rc == STORE_NOTFOUND) {
        migrate_err(err, errlen, "%s.%s.sql not run: %s", f->stem, dir,
                    store_errstr(s));
        return -1;
    }
    if (rc != STORE_OK) {
        migrate_err(err, errlen, "%s.%s.sql failed: %s; migration %d is now "
                    "marked dirty: repair the schema, then run 'chatd "
                    "migrate force-clean %d'", f->stem, dir, store_errstr(s),
                    f->version, f->version);
        return -1;
    }
    migrate_say(out, "done %s.%s.sql in %lld ms\n", f->stem, dir,
                (long long)((util_mono_ns() - t0) / 1000000));
    return 0;
}

int migrate_up(struct store *s, const char *dir, int steps, int dry_run,
               FILE *out, char *err, size_t errlen)
{
    struct migrate_ctx ctx;
    int cur, last, v, rc = 0;

    if (steps < 0) {
        migrate_err(err, errlen, "up takes a number of steps >= 1");
        return -1;
    }
    if (migrate_load(s, dir, &ctx, err, errlen) < 0)
        return -1;
    if (migrate_refuse(&ctx, err, errlen) < 0) {
        migrate_unload(s, &ctx);
        return -1;
    }
    cur = migrate_current(&ctx);
    last = (int)ctx.nfiles;
    if (steps > 0 && cur + steps < last)
        last = cur + steps;
    if (cur >= last) {
        migrate_say(out, "database schema is up to date at version %d\n",
                    cur);
        migrate_unload(s, &ctx);
        return 0;
    }
    for (v = cur + 1; v <= last && rc == 0; v++)
        rc = migrate_run(s, migrate_file_of(&ctx, v), 1, dry_run, out, err,
                         errlen);
    if (rc == 0)
        migrate_say(out, "database schema %s at version %d\n",
                    dry_run ? "would be" : "is", last);
    migrate_unload(s, &ctx);
    return rc;
}

int migrate_down(struct store *s, const char *dir, int steps, int dry_run,
                 FILE *out, char *err, size_t errlen)
{
    struct migrate_ctx ctx;
    int cur, last, v, rc = 0;

    if (steps < 1) {
        migrate_err(err, errlen, "down takes a number of steps >= 1");
        return -1;
    }
    if (migrate_load(s, dir, &ctx, err, errlen) < 0)
        return -1;
    if (migrate_refuse(&ctx, err, errlen) < 0) {
        migrate_unload(s, &ctx);
        return -1;
    }
    cur = migrate_current(&ctx);
    if (cur == 0) {
        migrate_say(out, "no migration is applied: nothing to revert\n");
        migrate_unload(s, &ctx);
        return 0;
    }
    last = steps >= cur ? 0 : cur - steps;  /* the version left */
    for (v = cur; v > last && rc == 0; v--)
        rc = migrate_run(s, migrate_file_of(&ctx, v), 0, dry_run, out, err,
                         errlen);
    if (rc == 0)
        migrate_say(out, "database schema %s at version %d\n",
                    dry_run ? "would be" : "is", last);
    migrate_unload(s, &ctx);
    return rc;
}

static const struct store_migration *migrate_applied_of(
    const struct migrate_ctx *ctx, int version)
{
    size_t i;

    for (i = 0; i < ctx->napplied; i++)
        if (ctx->applied[i].version == version)
            return &ctx->applied[i];
    return NULL;
}

int migrate_status(struct store *s, const char *dir, FILE *out, char *err,
                   size_t errlen)
{
    struct migrate_ctx ctx;
    int v, top;

    if (migrate_load(s, dir, &ctx, err, errlen) < 0)
        return -1;
    top = (int)ctx.nfiles;
    if (ctx.napplied > 0 && ctx.applied[ctx.napplied - 1].version > top)
        top = ctx.applied[ctx.napplied - 1].version;
    migrate_say(out, "%-8s %-32s %-22s %s\n", "version", "name", "state",
                "applied at");
    for (v = 1; v <= top; v++) {
        const struct migrate_file *f = migrate_file_of(&ctx, v);
        const struct store_migration *m = migrate_applied_of(&ctx, v);
        char when[UTIL_TIME_LEN] = "";
        const char *state;

        if (m == NULL)
            state = "pending";
        else if (m->dirty == 1)
            state = "dirty (up failed)";
        else if (m->dirty)
            state = "dirty (down failed)";
        else if (f == NULL)
            state = "applied, no file";
        else if (strcmp(f->checksum, m->checksum) != 0)
            state = "applied, file changed";
        else
            state = "applied";
        if (m != NULL)
            util_format_time(m->applied_at, when);
        migrate_say(out, "%-8d %-32s %-22s %s\n", v,
                    f ? f->name : m ? m->name : "?", state, when);
    }
    migrate_say(out, "database schema is at version %d; the newest "
                "migration is %d\n", migrate_current(&ctx), (int)ctx.nfiles);
    migrate_unload(s, &ctx);
    return 0;
}

int migrate_verify(struct store *s, const char *dir, FILE *out, char *err,
                   size_t errlen)
{
    struct migrate_ctx ctx;
    char buf[512];
    size_t i;
    int bad = 0;

    if (migrate_load(s, dir, &ctx, err, errlen) < 0)
        return -1;
    for (i = 0; i < ctx.napplied; i++) {
        const struct store_migration *m = &ctx.applied[i];
        const char *why = migrate_row_problem(&ctx, m, buf, sizeof buf);

        if (why == NULL) {
            migrate_say(out, "ok      %04d_%s\n", m->version, m->name);
            continue;
        }
        migrate_say(out, "FAILED  %04d_%s: %s\n", m->version, m->name, why);
        if (!bad)
            migrate_err(err, errlen, "%s", why);
        bad = 1;
    }
    if (!bad)
        migrate_say(out, "%zu applied migration(s) verified\n",
                    ctx.napplied);
    migrate_unload(s, &ctx);
    return bad ? -1 : 0;
}

int migrate_check(struct store *s, const char *dir, char *err, size_t errlen)
{
    struct migrate_ctx ctx;
    int cur, rc = 0;

    if (migrate_load(s, dir, &ctx, err, errlen) < 0)
        return -1;
    if (migrate_refuse(&ctx, err, errlen) < 0) {
        rc = -1;
    } else {
        cur = migrate_current(&ctx);
        if (cur < (int)ctx.nfiles) {
            migrate_err(err, errlen, "database schema is at version %d, "
                        "this chatd needs %d: run 'chatd migrate up'", cur,
                        (int)ctx.nfiles);
            rc = -1;
        }
    }
    migrate_unload(s, &ctx);
    return rc;
}

int migrate_force_clean(struct store *s, int version, FILE *out, char *err,
                        size_t errlen)
{
    int rc;

    if (store_mig_begin(s) != STORE_OK) {
        migrate_err(err, errlen, "cannot prepare schema_migrations: %s",
                    store_errstr(s));
        return -1;
    }
    rc = store_mig_clear_dirty(s, version);
    store_mig_end(s);
    if (rc == STORE_NOTFOUND) {
        migrate_err(err, errlen, "migration %d is not marked dirty",
                    version);
        return -1;
    }
    if (rc != STORE_OK) {
        migrate_err(err, errlen, "cannot clear the dirty mark of migration "
                    "%d: %s", version, store_errstr(s));
        return -1;
    }
    migrate_say(out, "cleared the dirty mark of migration %d\n", version);
    return 0;
}

/* A positive count from the command line; -1 if arg is not one. */
static int migrate_parse_count(const char *arg)
{
    long v = 0;
    const char *p;

    if (*arg == '\0')
        return -1;
    for (p = arg; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
        if (v > INT_MAX)
            return -1;
    }
    return v >= 1 ? (int)v : -1;
}

static int migrate_usage(FILE *err_out, const char *why)
{
    fprintf(err_out, "chatd: migrate: %s; usage: chatd migrate up [N] "
            "[--dry-run] | down [N] [--dry-run] | status | verify | "
            "force-clean N\n", why);
    return 2;
}

int migrate_main(struct store *s, const char *dir, int argc, char **argv,
                 FILE *out, FILE *err_out)
{
    char err[1024] = "";
    const char *cmd;
    int i, count = 0, have_count = 0, dry_run = 0, rc;
    int moves, needs_count;

    if (argc < 1)
        return migrate_usage(err_out, "no subcommand");
    cmd = argv[0];
    moves = strcmp(cmd, "up") == 0 || strcmp(cmd, "down") == 0;
    needs_count = strcmp(cmd, "force-clean") == 0;
    if (!moves && !needs_count && strcmp(cmd, "status") != 0 &&
        strcmp(cmd, "verify") != 0)
        return migrate_usage(err_out, "unknown subcommand");
    for (i = 1; i < argc; i++) {
        if (moves && strcmp(argv[i], "--dry-run") == 0) {
            dry_run = 1;
        } else if ((moves || needs_count) && !have_count &&
                   (count = migrate_parse_count(argv[i])) > 0) {
            have_count = 1;
        } else {
            return migrate_usage(err_out, "unexpected argument");
        }
    }
    if (needs_count && !have_count)
        return migrate_usage(err_out, "force-clean needs a version");

    if (strcmp(cmd, "up") == 0)
        rc = migrate_up(s, dir, have_count ? count : 0, dry_run, out, err,
                        sizeof err);
    else if (strcmp(cmd, "down") == 0)
        rc = migrate_down(s, dir, have_count ? count : 1, dry_run, out, err,
                          sizeof err);
    else if (strcmp(cmd, "status") == 0)
        rc = migrate_status(s, dir, out, err, sizeof err);
    else if (strcmp(cmd, "verify") == 0)
        rc = migrate_verify(s, dir, out, err, sizeof err);
    else
        rc = migrate_force_clean(s, count, out, err, sizeof err);
    if (rc == 0)
        return 0;
    fprintf(err_out, "chatd: migrate %s: %s\n", cmd, err);
    return 1;
}
