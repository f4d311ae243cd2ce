/*
 * migrate.h - schema migrations: the numbered SQL files of a migrations
 * directory applied to a database, recorded in its schema_migrations
 * table with the SHA-256 of each file, so that a file changed after it ran
 * is noticed and refused.
 *
 * Files are NNNN_name.up.sql and NNNN_name.down.sql (a version of 4 or
 * more digits, from 1 without gaps; a name of [a-z0-9_]); each up has its
 * down. A file whose first line is "-- chatd:no-transaction" runs outside
 * a transaction; every other file runs in one, with the row that records
 * it. A run that fails leaves its version marked dirty, and nothing runs
 * until an operator has repaired the schema and cleared the mark
 * (migrate_force_clean, `chatd migrate force-clean N`).
 *
 * Everything works through the store_mig_* primitives of store.h, so it
 * is the same for every backend. The functions run on the thread that
 * owns the store, and each takes the migration lock for its duration
 * (store_mig_begin / store_mig_end). dir is the migrations directory of
 * the store's kind, e.g. DATA/migrations/sqlite. Functions return 0 or -1
 * with a one-line reason in err; progress lines go to out (NULL: none).
 */
#ifndef CHATD_MIGRATE_H
#define CHATD_MIGRATE_H

#include <stddef.h>
#include <stdio.h>

#include "store.h"

/* Applies the next steps pending migrations (0: all). */
int migrate_up(struct store *s, const char *dir, int steps, int dry_run,
               FILE *out, char *err, size_t errlen);
/* Reverts the newest steps (>= 1) applied migrations. */
int migrate_down(struct store *s, const char *dir, int steps, int dry_run,
                 FILE *out, char *err, size_t errlen);
/* Prints every migration known to the directory or the database with its
 * state: applied, pending, dirty, changed or missing its file. */
int migrate_status(struct store *s, const char *dir, FILE *out, char *err,
                   size_t errlen);
/* 0 when every applied version is clean, its file exists and its checksum
 * matches; otherwise -1, err naming the first problem (all are printed). */
int migrate_verify(struct store *s, const char *dir, FILE *out, char *err,
                   size_t errlen);
/* 0 when the database is exactly at the newest migration in dir, clean,
 * checksums matching; else -1 and err says what is wrong and what to run,
 * e.g. "database schema is at version 0, this chatd needs 1: run 'chatd
 * migrate up'". */
int migrate_check(struct store *s, const char *dir, char *err,
                  size_t errlen);
/* Clears the dirty mark of version: after a failed up the version counts
 * as not applied (the next up runs it again), after a failed down as
 * still applied. The operator must first have made the schema match. */
int migrate_force_clean(struct store *s, int version, FILE *out, char *err,
                        size_t errlen);
/* The command line `chatd migrate up [N] | down [N] | status | verify |
 * force-clean N`, up and down also with --dry-run: argv[0] is the
 * subcommand. Returns the process exit code (0 ok, 1 failure, 2 usage)
 * and prints an error as one line on err_out, "chatd: migrate ...". */
int migrate_main(struct store *s, const char *dir, int argc, char **argv,
                 FILE *out, FILE *err_out);

#endif
