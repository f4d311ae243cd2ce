#!/usr/bin/env python3
"""Fills an empty chatd database with many users, conversations, messages,
sessions and events, fast, for the benchmarks that need a big database
(bench/metrics.sh) or many accounts (bench/idle.sh).

    bench/bulkload.py --database URL --users N [--messages M]
                      [--group-size G] [--sessions S] [--accounts FILE]
                      [--prefix P] [--days D]

URL is sqlite:PATH or postgresql://...; the database must already be
migrated (`chatd migrate up`) and hold no users. Postgres is loaded with
set-based SQL (generate_series) through psql; SQLite with recursive CTEs
through Python's sqlite3 module.

What it makes, all consistent with what chatd itself would have written:

- users P_0 .. P_{N-1} (ids 1..N), password "bench-password" (a
  sha512-crypt hash, which chatd accepts; chatd itself writes yescrypt);
- N/2 direct conversations (users 2d-1 and 2d) and, with G > 1, N/G groups
  of G (users jG+1 .. jG+G): every user is in one of each;
- M messages dealt round-robin over the conversations, so that each has
  seq 1, 2, 3, ... without gaps and last_seq equal to its count; each from
  a member, created over the last D days (oldest first), 64-byte bodies;
- a read marker per member spread over every unread range (about half the
  members have read everything);
- a session for each of the first S users (default: all) whose token is
  written to FILE as "USERNAME TOKEN" lines, for `chatload --accounts`;
- events: a registration per user, a login per session, and M/20
  message_read events, spread over the same D days.

Foreign keys are not checked during the load (Postgres:
session_replication_role = replica; SQLite: foreign_keys off, as chatd
leaves it): the rows are consistent by construction, and checking 10
million of them would triple the load time.
"""

import argparse
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
import warnings

with warnings.catch_warnings():
    # deprecated since 3.11, still in Debian 12's Python
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

CHUNK = 1_000_000  # messages per statement (progress and memory)


def token_of(g):
    """User g's session token: 43 base64url characters, like chatd's."""
    return "bench%038d" % g


def password_hash():
    return crypt.crypt("bench-password", crypt.mksalt(crypt.METHOD_SHA512))


def say(msg):
    print("bulkload: " + msg, file=sys.stderr, flush=True)


def shape(args):
    n, g = args.users, args.group_size
    direct = n // 2
    groups = n // g if g > 1 else 0
    return direct, groups, direct + groups


# ---- Postgres ---------------------------------------------------------------


def pg_run(url, sql):
    subprocess.run(["psql", "-X", "-q", "-o", "/dev/null", "-v", "ON_ERROR_STOP=1", url],
                   input=sql, text=True, check=True)


def pg_scalar(url, sql):
    out = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          url, "-c", sql], text=True, check=True,
                         capture_output=True).stdout
    return out.strip()


def load_postgres(args):
    url = args.database
    n, g, m, p = args.users, args.group_size, args.messages, args.prefix
    d, gc, c = shape(args)
    s = args.sessions
    span = args.days * 86400000  # ms
    if pg_scalar(url, "SELECT count(*) FROM users") != "0":
        sys.exit("bulkload: the database has users already; load an empty one")
    pre = ("SET synchronous_commit = off; SET session_replication_role = replica; "
           "SET statement_timeout = 0;\n")
    # t0: the load's "now", in ms since the epoch, so every row agrees.
    t0 = int(time.time() * 1000)
    ts = lambda ms_expr: ("(timestamptz 'epoch' + (%s)::bigint * interval '1 millisecond')"
                          % ms_expr)
    last_seq = "(CASE WHEN c <= %d THEN (%d - c) / %d + 1 ELSE 0 END)" % (m, m, c)
    # the time of message k
    msg_ms = "(%d - (%d::bigint - k) * %d / greatest(%d, 1))" % (t0, m, span, m)
    t = time.time()
    say("postgres: %d users, %d direct + %d group conversations" % (n, d, gc))
    pg_run(url, pre + f"""
BEGIN;
INSERT INTO users (id, username, password_hash, created_at) OVERRIDING SYSTEM VALUE
SELECT g, '{p}_' || (g - 1), '{password_hash()}', {ts(t0 - span - 86400000)}
FROM generate_series(1, {n}) g;
SELECT setval(pg_get_serial_sequence('users', 'id'), {n});
INSERT INTO conversations (id, kind, title, direct_key, created_by, created_at,
                           last_seq, last_activity) OVERRIDING SYSTEM VALUE
SELECT c, CASE WHEN c <= {d} THEN 'direct' ELSE 'group' END,
       CASE WHEN c > {d} THEN 'group ' || (c - {d}) END,
       CASE WHEN c <= {d} THEN (2 * c - 1) || ':' || (2 * c) END,
       CASE WHEN c <= {d} THEN 2 * c - 1 ELSE (c - {d} - 1) * {g} + 1 END,
       {ts(t0 - span - 86400000)}, {last_seq},
       CASE WHEN {last_seq} = 0 THEN {ts(t0 - span - 86400000)}
            ELSE {ts(msg_ms.replace("k", "((%s - 1) * %d + c)" % (last_seq, c)))} END
FROM generate_series(1, {c}) c;
SELECT setval(pg_get_serial_sequence('conversations', 'id'), {c});
INSERT INTO conversation_members (conversation_id, user_id, read_seq, joined_at)
SELECT c, u, greatest(0, ls - CASE WHEN h < 500 THEN 0 WHEN h < 800 THEN h % 10
                                   WHEN h < 950 THEN h % 100 ELSE h % 1000 END),
       {ts(t0 - span - 86400000)}
FROM (SELECT c, u, {last_seq} AS ls, ((u::bigint * 7919 + c::bigint * 104729) % 1000) AS h
      FROM (SELECT c, 2 * c - 1 + r AS u FROM generate_series(1, {d}) c,
                   generate_series(0, 1) r
            UNION ALL
            SELECT c, (c - {d} - 1) * {g} + 1 + r FROM generate_series({d} + 1, {c}) c,
                   generate_series(0, {max(g, 1) - 1}) r) cm) x;
COMMIT;
""")
    for lo in range(1, m + 1, CHUNK):
        hi = min(m, lo + CHUNK - 1)
        pg_run(url, pre + f"""
INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, body,
                      created_at) OVERRIDING SYSTEM VALUE
SELECT k, c, sq,
       CASE WHEN c <= {d} THEN 2 * c - 1 + sq % 2 ELSE (c - {d} - 1) * {g} + 1 + sq % {max(g, 1)} END,
       'b' || k, rpad('message ' || k || ' ', 64, 'x'), {ts(msg_ms)}
FROM (SELECT k, (k - 1) % {c} + 1 AS c, (k - 1) / {c} + 1 AS sq
      FROM generate_series({lo}::bigint, {hi}) k) x;
""")
        say("postgres: %d of %d messages (%.0f s)" % (hi, m, time.time() - t))
    pg_run(url, pre + f"""
SELECT setval(pg_get_serial_sequence('messages', 'id'), greatest({m}, 1));
INSERT INTO sessions (user_id, token_hash, created_at, expires_at)
SELECT g, sha256(convert_to('bench' || lpad(g::text, 38, '0'), 'UTF8')),
       {ts(t0)}, {ts(t0)} + interval '7 days'
FROM generate_series(1, {s}) g;
INSERT INTO events (created_at, type, user_id)
SELECT {ts(t0 - span - 86400000)}, 'user_registration', g FROM generate_series(1, {n}) g;
INSERT INTO events (created_at, type, user_id)
SELECT {ts(f"{t0} - (g * 7919) % {span}")}, 'user_login', g FROM generate_series(1, {s}) g;
INSERT INTO events (created_at, type, user_id, detail)
SELECT {ts(f"{t0} - ({m // 20}::bigint - e) * {span} / greatest({m // 20}, 1)")},
       'message_read', (e * 31) % {n} + 1, NULL
FROM generate_series(1, {m // 20}) e;
""")
    say("postgres: VACUUM ANALYZE (%.0f s so far)" % (time.time() - t))
    # and a checkpoint now, so that writing out the load does not land in
    # the first measurement made on the database
    # An empty messages table is left unanalyzed, as on a freshly migrated
    # database: statistics that say "empty" would give the plans chatd
    # prepares in the first minute (history, unread counts) sequential
    # scans of messages until autovacuum analyzes it again.
    tables = "" if m else (" users, sessions, conversations, "
                           "conversation_members, events")
    pg_run(url, "VACUUM ANALYZE%s;\nCHECKPOINT;" % tables)
    say("postgres: done in %.0f s" % (time.time() - t))


# ---- SQLite -----------------------------------------------------------------


def series(lo, hi, name="k"):
    return (f"WITH RECURSIVE s({name}) AS (SELECT {lo} UNION ALL "
            f"SELECT {name} + 1 FROM s WHERE {name} < {hi})")


def load_sqlite(args):
    path = args.database[len("sqlite:"):]
    if not os.path.exists(path):
        sys.exit("bulkload: %s does not exist (run chatd migrate up first)" % path)
    db = sqlite3.connect(path, isolation_level=None)
    n, g, m, p = args.users, args.group_size, args.messages, args.prefix
    d, gc, c = shape(args)
    s = args.sessions
    span = args.days * 86400000
    if db.execute("SELECT count(*) FROM users").fetchone()[0] != 0:
        sys.exit("bulkload: the database has users already; load an empty one")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("PRAGMA cache_size = -262144")  # 256 MiB for the load
    t0 = int(time.time() * 1000)
    born = t0 - span - 86400000
    last_seq = "(CASE WHEN c <= %d THEN (%d - c) / %d + 1 ELSE 0 END)" % (m, m, c)
    msg_ms = "(%d - (%d - k) * %d / max(%d, 1))" % (t0, m, span, m)
    t = time.time()
    say("sqlite: %d users, %d direct + %d group conversations" % (n, d, gc))
    db.execute("BEGIN")
    db.execute(series(1, n, "g") + f"""
INSERT INTO users (id, username, username_key, password_hash, created_at)
SELECT g, '{p}_' || (g - 1), lower('{p}_' || (g - 1)), ?, {born} FROM s""",
               (password_hash(),))
    db.execute(series(1, c, "c") + f"""
INSERT INTO conversations (id, kind, title, direct_key, created_by, created_at,
                           last_seq, last_activity)
SELECT c, CASE WHEN c <= {d} THEN 'direct' ELSE 'group' END,
       CASE WHEN c > {d} THEN 'group ' || (c - {d}) END,
       CASE WHEN c <= {d} THEN (2 * c - 1) || ':' || (2 * c) END,
       CASE WHEN c <= {d} THEN 2 * c - 1 ELSE (c - {d} - 1) * {g} + 1 END,
       {born}, {last_seq},
       CASE WHEN {last_seq} = 0 THEN {born}
            ELSE {msg_ms.replace("k", "((%s - 1) * %d + c)" % (last_seq, c))} END
FROM s""")
    db.execute(series(1, c, "c") + f""", r(r) AS (SELECT 0 UNION ALL SELECT r + 1 FROM r
                                   WHERE r < {max(g, 2) - 1})
INSERT INTO conversation_members (conversation_id, user_id, read_seq, joined_at)
SELECT c, u, max(0, ls - CASE WHEN h < 500 THEN 0 WHEN h < 800 THEN h % 10
                              WHEN h < 950 THEN h % 100 ELSE h % 1000 END), {born}
FROM (SELECT c, u, {last_seq} AS ls, ((u * 7919 + c * 104729) % 1000) AS h
      FROM (SELECT c, CASE WHEN c <= {d} THEN 2 * c - 1 + r
                           ELSE (c - {d} - 1) * {g} + 1 + r END AS u
            FROM s, r WHERE (c <= {d} AND r < 2) OR (c > {d} AND r < {g})))""")
    db.execute("COMMIT")
    for lo in range(1, m + 1, CHUNK):
        hi = min(m, lo + CHUNK - 1)
        db.execute("BEGIN")
        db.execute(series(lo, hi) + f"""
INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, body, created_at)
SELECT k, c, sq,
       CASE WHEN c <= {d} THEN 2 * c - 1 + sq % 2 ELSE (c - {d} - 1) * {g} + 1 + sq % {max(g, 1)} END,
       'b' || k, substr('message ' || k || ' ' || '{"x" * 64}', 1, 64), {msg_ms}
FROM (SELECT k, (k - 1) % {c} + 1 AS c, (k - 1) / {c} + 1 AS sq FROM s)""")
        db.execute("COMMIT")
        say("sqlite: %d of %d messages (%.0f s)" % (hi, m, time.time() - t))
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO sessions (user_id, token_hash, created_at, expires_at) "
        "VALUES (?, ?, ?, ?)",
        ((u, hashlib.sha256(token_of(u).encode()).digest(), t0, t0 + 7 * 86400000)
         for u in range(1, s + 1)))
    db.execute(series(1, n, "g") + f"""
INSERT INTO events (created_at, type, user_id) SELECT {born}, 'user_registration', g FROM s""")
    db.execute(series(1, s, "g") + f"""
INSERT INTO events (created_at, type, user_id)
SELECT {t0} - (g * 7919) % {span}, 'user_login', g FROM s""")
    e = m // 20
    if e:
        db.execute(series(1, e, "e") + f"""
INSERT INTO events (created_at, type, user_id)
SELECT {t0} - ({e} - e) * {span} / {e}, 'message_read', (e * 31) % {n} + 1 FROM s""")
    db.execute("COMMIT")
    say("sqlite: ANALYZE (%.0f s so far)" % (time.time() - t))
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    say("sqlite: done in %.0f s" % (time.time() - t))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database", required=True)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--messages", type=int, default=0)
    ap.add_argument("--group-size", type=int, default=10)
    ap.add_argument("--sessions", type=int, default=-1,
                    help="users that get a session (default: all)")
    ap.add_argument("--accounts", help='write "USERNAME TOKEN" lines here')
    ap.add_argument("--prefix", default="bk")
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args()
    if args.users < 2 or args.messages < 0 or args.days < 1:
        sys.exit("bulkload: --users must be at least 2, --messages not negative")
    if args.sessions < 0 or args.sessions > args.users:
        args.sessions = args.users
    if not all(ch.isalnum() or ch in "_.-" for ch in args.prefix) or \
            len(args.prefix) + 1 + len(str(args.users)) > 32:
        sys.exit("bulkload: --prefix must be short, of A-Z a-z 0-9 _ . -")
    if args.database.startswith("sqlite:"):
        load_sqlite(args)
    elif args.database.startswith(("postgresql://", "postgres://")):
        load_postgres(args)
    else:
        sys.exit("bulkload: --database must be sqlite:PATH or postgresql://...")
    if args.accounts:
        with open(args.accounts, "w") as f:
            for u in range(1, args.sessions + 1):
                f.write("%s_%d %s\n" % (args.prefix, u - 1, token_of(u)))


if __name__ == "__main__":
    main()
