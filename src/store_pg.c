/*
 * store_pg.c - the Postgres (libpq) backend of the storage interface, the
 * production store that any number of chatd nodes share.
 *
 * Design: one struct store_pg is one PGconn, owned by the thread that
 * opened it (store.h). Every statement is prepared once per connection,
 * on first use (the schema may not exist yet when the connection opens,
 * as for `chatd migrate up`), and prepared again after a reconnect; every
 * value is bound as a parameter, none is spliced into SQL. Times cross
 * the interface as milliseconds since the epoch and are timestamptz in
 * the database; the SQL converts both ways (SP_TS, SP_MS).
 *
 * A batch of sends is one transaction in five round trips whatever its
 * size: the duplicate and membership look-up for every send at once, one
 * UPDATE that bumps each conversation's last_seq by its count of new sends
 * (rows locked in id order, so two nodes never deadlock on them), one
 * INSERT ... SELECT FROM unnest(...) that also moves the senders' read
 * markers, and COMMIT. A duplicate client_msg_id committed meanwhile by
 * another node fails the INSERT; the batch is then rolled back (leaving no
 * seq gap) and run again, when the first step finds the duplicate.
 *
 * Every session runs with synchronous_commit=on (an ack follows a durable
 * COMMIT) and statement, lock and idle-in-transaction timeouts, so a stuck
 * database makes calls fail instead of hang. When the connection breaks,
 * the next call reconnects; while the server stays away, attempts are
 * spaced by a jittered back-off (100 ms doubling to 5 s) and the calls in
 * between fail at once with "database unavailable", so no caller ever
 * waits longer than one connect_timeout (2 s).
 *
 * Threads: every function runs on the thread that opened the connection.
 * The one process-wide state is the flag that the fsync check ran.
 */
#include "store.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define STORE_PG_BODY_MAX 16384
#define STORE_PG_CONNECT_TIMEOUT "2"        /* seconds, per attempt */
#define STORE_PG_BACKOFF_MIN_MS 100
#define STORE_PG_BACKOFF_MAX_MS 5000
#define STORE_PG_SEND_TRIES 3               /* runs of a batch that races */
#define STORE_PG_CONV_TRIES 3               /* runs of a racing conv_create */

/* Set on every connection, in one round trip after it opens. The values
 * are documented in docs/operations.md; a DBA may rely on them. */
#define STORE_PG_SESSION_SQL \
    "SET synchronous_commit = on; " \
    "SET statement_timeout = '5s'; " \
    "SET lock_timeout = '2s'; " \
    "SET idle_in_transaction_session_timeout = '10s'"

/* A send batch's transaction. Every statement of a batch reaches its rows
 * by a key (unnest of the batch, then the primary key or the unique
 * (sender_id, client_msg_id)), so no table is ever read whole. The
 * statements are prepared once per connection and their generic plans are
 * kept: without this, a plan made while a table was small (a fresh
 * database, statistics from an empty table) scans the whole of `messages`
 * for every batch until an ANALYZE replans it. Only sequential scans are
 * ruled out: with hash joins off too, joining a batch's 1,000 rows to the
 * rows it locked became quadratic (pgingest, chatd mode, batches of
 * 1,000: 9,800 rows/s against 21,700). LOCAL: nothing else on the
 * connection is affected. */
#define STORE_PG_SEND_BEGIN "BEGIN; SET LOCAL enable_seqscan = off"

/* The migrator may wait for the advisory lock and run long DDL. */
#define STORE_PG_MIGRATE_SQL \
    "SET statement_timeout = 0; SET lock_timeout = 0"
#define STORE_PG_SERVE_SQL \
    "SET statement_timeout = '5s'; SET lock_timeout = '2s'"

/* pg_advisory_lock key of the migration lock: the first 8 bytes of
 * SHA-256("chatd.migrate") as a signed 64-bit integer. Fixed forever, so
 * every chatd version excludes every other. */
#define STORE_PG_MIGRATE_LOCK "5544924037791511789"

/* ms since the epoch <-> timestamptz, exactly (numeric, no float). */
#define SP_TS(p) "(timestamptz 'epoch' + (" p ")::bigint * interval '1 millisecond')"
#define SP_MS(c) "(extract(epoch FROM " c ") * 1000)::bigint"

enum store_pg_sid {
    SP_PING,
    SP_USER_INSERT,
    SP_USER_BY_KEY,
    SP_USERS_BY_KEYS,
    SP_USER_THROTTLE,
    SP_USERS_RANGE,
    SP_USERS_FROM,
    SP_SESSION_INSERT,
    SP_SESSION_LOOKUP,
    SP_SESSION_DELETE,
    SP_CONV_BY_DIRECT_KEY,
    SP_CONV_INSERT,
    SP_MEMBERS_INSERT,
    SP_CONV_ONE,
    SP_CONV_OF_USER,
    SP_MEMBERS_ONE,
    SP_MEMBERS_OF_USER,
    SP_CONV_MEMBER,
    SP_MEMBER_IDS,
    SP_CONTACTS,
    SP_HISTORY_BACK,
    SP_HISTORY_ON,
    SP_SEND_LOOKUP,
    SP_SEND_BUMP,
    SP_SEND_INSERT,
    SP_READ_ADVANCE,
    SP_READ_GET,
    SP_EVENT_INSERT,
    SP_MIG_EXISTS,
    SP_MIG_LOCK,
    SP_MIG_UNLOCK,
    SP_MIG_LIST,
    SP_MIG_FIND,
    SP_MIG_RECORD,
    SP_MIG_DELETE,
    SP_MIG_MARK_DIRTY,
    SP_MIG_CLEAR_UP,
    SP_MIG_CLEAR_DOWN,
    SP__COUNT
};

/* The columns of a message, in the order store_pg_msg_read() reads. */
#define SP_MSG_COLS \
    "m.id, m.conversation_id, m.seq, m.sender_id, u.username, " \
    "m.client_msg_id, m.body, " SP_MS("m.created_at")

/* A conversation row with its last message (NULLs when none), in the
 * order store_pg_conv_read() reads. */
#define SP_CONV_COLS \
    "c.id, c.kind, c.title, c.last_seq, " SP_MS("c.last_activity") ", " \
    "COALESCE(m.read_seq, 0), lm.id, lm.seq, lm.sender_id, lu.username, " \
    "lm.client_msg_id, lm.body, " SP_MS("lm.created_at")
#define SP_CONV_LAST \
    "LEFT JOIN messages lm ON lm.conversation_id = c.id " \
    "AND lm.seq = c.last_seq LEFT JOIN users lu ON lu.id = lm.sender_id "

static const char *const store_pg_sql[SP__COUNT] = {
    [SP_PING] = "SELECT 1",

    [SP_USER_INSERT] =
        "INSERT INTO users (username, password_hash, failed_logins, "
        "locked_until, created_at) VALUES ($1::text, $2::text, 0, NULL, "
        SP_TS("$3") ") RETURNING id",
    /* username_key is lower(username), computed by the table. */
    [SP_USER_BY_KEY] =
        "SELECT id, username, password_hash, failed_logins, "
        "COALESCE(" SP_MS("locked_until") ", 0) "
        "FROM users WHERE username_key = $1::text",
    /* Every name of a list in one round trip; ord keeps the order. */
    [SP_USERS_BY_KEYS] =
        "SELECT v.ord, u.id, u.username "
        "FROM unnest($1::text[]) WITH ORDINALITY AS v(key, ord) "
        "LEFT JOIN users u ON u.username_key = v.key ORDER BY v.ord",
    [SP_USER_THROTTLE] =
        "UPDATE users SET failed_logins = $2::int, "
        "locked_until = " SP_TS("NULLIF($3::bigint, 0)") " WHERE id = $1",
    /* Prefix search as a key range, so it walks the UNIQUE index (the
     * key is in "C" collation: byte order). */
    [SP_USERS_RANGE] =
        "SELECT id, username FROM users "
        "WHERE username_key >= $1::text AND username_key < $2::text "
        "ORDER BY username_key LIMIT $3::bigint",
    [SP_USERS_FROM] =
        "SELECT id, username FROM users WHERE username_key >= $1::text "
        "ORDER BY username_key LIMIT $2::bigint",

    [SP_SESSION_INSERT] =
        "INSERT INTO sessions (user_id, token_hash, created_at, expires_at) "
        "VALUES ($1::bigint, $2::bytea, " SP_TS("$3") ", " SP_TS("$4") ") "
        "RETURNING id",
    [SP_SESSION_LOOKUP] =
        "SELECT s.id, s.user_id, u.username, " SP_MS("s.expires_at") " "
        "FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token_hash = $1::bytea AND s.expires_at > " SP_TS("$2"),
    [SP_SESSION_DELETE] =
        "DELETE FROM sessions WHERE id = $1::bigint RETURNING user_id",

    [SP_CONV_BY_DIRECT_KEY] =
        "SELECT id FROM conversations WHERE direct_key = $1::text",
    [SP_CONV_INSERT] =
        "INSERT INTO conversations (kind, title, direct_key, created_by, "
        "created_at, last_seq, last_activity) VALUES ($1::text, $2::text, "
        "$3::text, $4::bigint, " SP_TS("$5") ", 0, " SP_TS("$5") ") "
        "RETURNING id",
    [SP_MEMBERS_INSERT] =
        "INSERT INTO conversation_members (conversation_id, user_id, "
        "read_seq, joined_at) SELECT $1::bigint, u, 0, " SP_TS("$3") " "
        "FROM unnest($2::bigint[]) AS u",
    [SP_CONV_ONE] =
        "SELECT " SP_CONV_COLS " FROM conversations c "
        "LEFT JOIN conversation_members m "
        "ON m.conversation_id = c.id AND m.user_id = $2::bigint "
        SP_CONV_LAST "WHERE c.id = $1::bigint",
    /* A user's list: conversation_members_user, then each conversation
     * and its last message by primary key and (conversation_id, seq). */
    [SP_CONV_OF_USER] =
        "SELECT " SP_CONV_COLS " FROM conversation_members m "
        "JOIN conversations c ON c.id = m.conversation_id "
        SP_CONV_LAST "WHERE m.user_id = $1::bigint "
        "ORDER BY c.last_activity DESC, c.id DESC",
    [SP_MEMBERS_ONE] =
        "SELECT m.conversation_id, u.id, u.username "
        "FROM conversation_members m JOIN users u ON u.id = m.user_id "
        "WHERE m.conversation_id = $1::bigint ORDER BY m.user_id",
    [SP_MEMBERS_OF_USER] =
        "SELECT m.conversation_id, u.id, u.username "
        "FROM conversation_members mine "
        "JOIN conversation_members m "
        "ON m.conversation_id = mine.conversation_id "
        "JOIN users u ON u.id = m.user_id WHERE mine.user_id = $1::bigint "
        "ORDER BY m.conversation_id, m.user_id",
    [SP_CONV_MEMBER] =
        "SELECT c.last_seq, m.user_id FROM conversations c "
        "LEFT JOIN conversation_members m "
        "ON m.conversation_id = c.id AND m.user_id = $2::bigint "
        "WHERE c.id = $1::bigint",
    [SP_MEMBER_IDS] =
        "SELECT user_id FROM conversation_members "
        "WHERE conversation_id = $1::bigint ORDER BY user_id",
    /* Everyone in a conversation with the user: the user's memberships by
     * conversation_members_user, then each one's members by the key. */
    [SP_CONTACTS] =
        "SELECT DISTINCT o.user_id FROM conversation_members m "
        "JOIN conversation_members o "
        "ON o.conversation_id = m.conversation_id "
        "WHERE m.user_id = $1::bigint AND o.user_id <> $1::bigint "
        "ORDER BY o.user_id",
    /* History pages on UNIQUE (conversation_id, seq). Paging back reads
     * newest first and the page is reversed in C; one row past the limit
     * tells whether there is more. */
    [SP_HISTORY_BACK] =
        "SELECT " SP_MSG_COLS " FROM messages m "
        "JOIN users u ON u.id = m.sender_id "
        "WHERE m.conversation_id = $1::bigint AND m.seq > $2::bigint "
        "AND m.seq < $3::bigint ORDER BY m.seq DESC LIMIT $4::bigint",
    [SP_HISTORY_ON] =
        "SELECT " SP_MSG_COLS " FROM messages m "
        "JOIN users u ON u.id = m.sender_id "
        "WHERE m.conversation_id = $1::bigint AND m.seq > $2::bigint "
        "AND m.seq < $3::bigint ORDER BY m.seq ASC LIMIT $4::bigint",

    /* Step 1 of a batch, per send (ord): the message already stored under
     * its client_msg_id (NULL id if none; a NULL key looks nothing up),
     * whether the conversation exists, and the sender's name when a
     * member. */
    [SP_SEND_LOOKUP] =
        "SELECT v.ord, " SP_MSG_COLS ", c.id IS NOT NULL, su.username "
        "FROM unnest($1::bigint[], $2::bigint[], $3::text[]) "
        "WITH ORDINALITY AS v(conv, sender, cid, ord) "
        "LEFT JOIN messages m "
        "ON m.sender_id = v.sender AND m.client_msg_id = v.cid "
        "LEFT JOIN users u ON u.id = m.sender_id "
        "LEFT JOIN conversations c ON c.id = v.conv "
        "LEFT JOIN conversation_members cm "
        "ON cm.conversation_id = c.id AND cm.user_id = v.sender "
        "LEFT JOIN users su ON su.id = cm.user_id ORDER BY v.ord",
    /* Step 2: each conversation's counter moves once by its number of new
     * sends. The rows are locked in id order first, so two nodes whose
     * batches share conversations wait for each other instead of
     * deadlocking; last_activity never moves back if a clock does. */
    [SP_SEND_BUMP] =
        "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], "
        "$3::bigint[]) AS v(id, n, t)), "
        "locked AS MATERIALIZED (SELECT c.id FROM conversations c "
        "WHERE c.id IN (SELECT id FROM v) ORDER BY c.id FOR UPDATE) "
        "UPDATE conversations c SET last_seq = c.last_seq + v.n, "
        "last_activity = greatest(c.last_activity, " SP_TS("v.t") ") "
        "FROM v WHERE c.id = v.id AND c.id IN (SELECT id FROM locked) "
        "RETURNING c.id, c.last_seq",
    /* Step 3: every new message, and each sender's read marker moved to
     * their newest (your own messages are never unread). */
    [SP_SEND_INSERT] =
        "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], "
        "$3::bigint[], $4::text[], $5::text[], $6::bigint[]) "
        "AS v(conv, seq, sender, cid, body, t)), "
        "ins AS (INSERT INTO messages (conversation_id, seq, sender_id, "
        "client_msg_id, body, created_at) SELECT conv, seq, sender, cid, "
        "body, " SP_TS("t") " FROM v RETURNING id, conversation_id, seq), "
        "rd AS (UPDATE conversation_members cm SET read_seq = r.seq "
        "FROM (SELECT conv, sender, max(seq) AS seq FROM v "
        "GROUP BY conv, sender) r WHERE cm.conversation_id = r.conv "
        "AND cm.user_id = r.sender AND cm.read_seq < r.seq) "
        "SELECT id, conversation_id, seq FROM ins",
    [SP_READ_ADVANCE] =
        "UPDATE conversation_members SET read_seq = $3::bigint "
        "WHERE conversation_id = $1::bigint AND user_id = $2::bigint "
        "AND read_seq < $3::bigint",
    [SP_READ_GET] =
        "SELECT read_seq FROM conversation_members "
        "WHERE conversation_id = $1::bigint AND user_id = $2::bigint",

    [SP_EVENT_INSERT] =
        "INSERT INTO events (created_at, type, user_id, detail) "
        "VALUES (" SP_TS("$1") ", $2::text, $3::bigint, $4::jsonb)",

    [SP_MIG_EXISTS] =
        "SELECT to_regclass('schema_migrations') IS NOT NULL",
    [SP_MIG_LOCK] = "SELECT pg_advisory_lock(" STORE_PG_MIGRATE_LOCK ")",
    [SP_MIG_UNLOCK] = "SELECT pg_advisory_unlock(" STORE_PG_MIGRATE_LOCK ")",
    [SP_MIG_LIST] =
        "SELECT version, name, checksum, " SP_MS("applied_at") ", dirty "
        "FROM schema_migrations ORDER BY version",
    [SP_MIG_FIND] =
        "SELECT dirty FROM schema_migrations WHERE version = $1::int",
    [SP_MIG_RECORD] =
        "INSERT INTO schema_migrations (version, name, checksum, "
        "applied_at, dirty) VALUES ($1::int, $2::text, $3::text, "
        SP_TS("$4") ", 0)",
    [SP_MIG_DELETE] =
        "DELETE FROM schema_migrations WHERE version = $1::int",
    /* dirty = 1: an up that failed (the version is not applied);
     * dirty = 2: a down that failed (the version is still applied). */
    [SP_MIG_MARK_DIRTY] =
        "INSERT INTO schema_migrations (version, name, checksum, "
        "applied_at, dirty) VALUES ($1::int, $2::text, $3::text, "
        SP_TS("$4") ", $5::smallint) "
        "ON CONFLICT (version) DO UPDATE SET dirty = excluded.dirty",
    [SP_MIG_CLEAR_UP] =
        "DELETE FROM schema_migrations WHERE version = $1::int AND dirty = 1",
    [SP_MIG_CLEAR_DOWN] =
        "UPDATE schema_migrations SET dirty = 0 "
        "WHERE version = $1::int AND dirty = 2",
};

/* schema_migrations, created by mig_begin (not by a migration file, so
 * that the first file is recorded like every other). */
static const char store_pg_mig_table[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now(),"
    " dirty smallint NOT NULL DEFAULT 0 CHECK (dirty IN (0, 1, 2)));"
    "COMMENT ON TABLE schema_migrations IS 'The migrations chatd applied: "
    "version, file name, SHA-256 of the .up.sql, time; dirty 1 = an up "
    "failed, 2 = a down failed (run chatd migrate force-clean after "
    "repairing)'";

#define STORE_PG_MAX_PARAMS 8

/* The parameters of one statement, text format unless binary is set. */
struct store_pg_params {
    int n;
    const char *val[STORE_PG_MAX_PARAMS];
    int len[STORE_PG_MAX_PARAMS];
    int fmt[STORE_PG_MAX_PARAMS];
    char num[STORE_PG_MAX_PARAMS][24];   /* room for integers */
};

struct store_pg {
    struct store base;          /* first: a struct store * points here */
    PGconn *conn;               /* NULL while disconnected */
    char *conninfo;             /* owned; may hold a password: never shown */
    unsigned char prepared[SP__COUNT]; /* on this connection */
    int64_t next_attempt_ns;    /* monotonic; no reconnect before it */
    int backoff_ms;             /* current back-off; 0 after a success */
    char down_reason[STORE_ERRLEN]; /* why the last connect failed */
    uint64_t rng;               /* jitter */
    char sqlstate[6];           /* of the last failed statement */
};

/* The fsync check runs once per process, on its first connection. */
static atomic_int store_pg_fsync_checked;

static struct store_pg *store_pg_of(struct store *s)
{
    return (struct store_pg *)s;
}

/* ---- parameters and arrays --------------------------------------------- */

static void store_pg_p_int(struct store_pg_params *p, int64_t v)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%" PRId64, v);
    p->val[p->n] = p->num[p->n];
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

/* s must stay valid and NUL-terminated until the statement has run. */
static void store_pg_p_text(struct store_pg_params *p, const char *s)
{
    p->val[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

static void store_pg_p_null(struct store_pg_params *p)
{
    store_pg_p_text(p, NULL);
}

static void store_pg_p_bytes(struct store_pg_params *p, const void *b,
                             int len)
{
    p->val[p->n] = (const char *)b;
    p->len[p->n] = len;
    p->fmt[p->n] = 1;
    p->n++;
}

/* Array literals ("{1,2}", "{\"a\",NULL}") for unnest($1::bigint[]). */
static void store_pg_arr_int(struct util_buf *b, int64_t v, int first)
{
    util_buf_printf(b, "%s%" PRId64, first ? "{" : ",", v);
}

static void store_pg_arr_text(struct util_buf *b, const char *s, size_t len,
                              int first)
{
    size_t i, run = 0;

    util_buf_puts(b, first ? "{" : ",");
    if (s == NULL) {
        util_buf_puts(b, "NULL");
        return;
    }
    util_buf_append(b, "\"", 1);
    for (i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            util_buf_append(b, s + run, i - run);
            util_buf_append(b, "\\", 1);
            run = i;
        }
    }
    util_buf_append(b, s + run, len - run);
    util_buf_append(b, "\"", 1);
}

static void store_pg_arr_end(struct util_buf *b, int empty)
{
    util_buf_puts(b, empty ? "{}" : "}");
}

/* ---- validation that keeps one bad send from failing a whole batch ---- */

/* Whether s[0..len) is UTF-8 the server accepts: well formed, no NUL. */
static int store_pg_utf8_ok(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t n, k;
        uint32_t cp;

        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + n > len)
            return 0;
        for (k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n;
    }
    return 1;
}

/* A client_msg_id the store can keep: 1 to STORE_CLIENT_MSG_ID_MAX
 * characters of UTF-8 (at most 4 bytes each, the room struct store_msg
 * has). Sets *len to its bytes. */
static int store_pg_cid_ok(const char *cid, size_t *len)
{
    size_t i, chars = 0;

    *len = cid ? strlen(cid) : 0;
    if (*len < 1 || *len > 4 * STORE_CLIENT_MSG_ID_MAX ||
        !store_pg_utf8_ok(cid, *len))
        return 0;
    for (i = 0; i < *len; i++)
        if (((unsigned char)cid[i] & 0xc0) != 0x80)
            chars++;
    return chars >= 1 && chars <= STORE_CLIENT_MSG_ID_MAX;
}

/* The case-insensitive key of a username, or -1 when name cannot be one
 * (too long, or a byte outside A-Z a-z 0-9 _ . -): no stored name can
 * match it, and the server is never handed bytes it would refuse. */
static int store_pg_key(const char *name, char *key, size_t cap)
{
    size_t i, len = strlen(name);

    if (len >= cap)
        return -1;
    for (i = 0; i < len; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '.' || c == '-'))
            return -1;
        key[i] = c;
    }
    key[len] = '\0';
    return 0;
}

/* ---- errors ------------------------------------------------------------ */

/* Copies a driver message as one line: newlines become "; ", and any
 * password=... a connection string might echo is cut out. */
static void store_pg_clean(const char *msg, char *out, size_t cap)
{
    size_t o = 0;
    const char *p = msg ? msg : "";

    while (*p != '\0' && o + 1 < cap) {
        if (strncmp(p, "password=", 9) == 0) {
            const char *stars = "password=***";
            while (*stars && o + 1 < cap)
                out[o++] = *stars++;
            p += 9;
            while (*p && *p != ' ' && *p != '&' && *p != '\n')
                p++;
            continue;
        }
        if (*p == '\n' || *p == '\r') {
            while (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ')
                p++;
            if (*p != '\0' && o + 2 < cap) {
                out[o++] = ';';
                out[o++] = ' ';
            }
            continue;
        }
        out[o++] = *p == '\t' ? ' ' : *p;
        p++;
    }
    out[o] = '\0';
}

/* Records why a statement failed: its SQLSTATE and its message, at once
 * (the result and the connection's buffer belong to libpq). */
static int store_pg_fail(struct store_pg *sp, const char *what,
                         const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
                            : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                          : NULL;
    char clean[STORE_ERRLEN];

    snprintf(sp->sqlstate, sizeof sp->sqlstate, "%s", state ? state : "");
    if (msg == NULL && res != NULL && *PQresultErrorMessage(res) != '\0')
        msg = PQresultErrorMessage(res);
    if (msg == NULL)
        msg = sp->conn ? PQerrorMessage(sp->conn) : "no connection";
    store_pg_clean(msg, clean, sizeof clean);
    store_set_error(&sp->base, "postgres: %s: %s", what, clean);
    return STORE_ERR;
}

/* Whether the last failure means the connection is gone (rather than the
 * statement being refused). */
static int store_pg_conn_lost(const struct store_pg *sp)
{
    if (sp->conn == NULL || PQstatus(sp->conn) != CONNECTION_OK)
        return 1;
    /* 08: connection exception; 57P01-03: the server is shutting down
     * or cannot accept connections now. */
    return strncmp(sp->sqlstate, "08", 2) == 0 ||
           strncmp(sp->sqlstate, "57P0", 4) == 0;
}

/* ---- connecting -------------------------------------------------------- */

static uint64_t store_pg_rand(struct store_pg *sp)
{
    sp->rng ^= sp->rng << 13;
    sp->rng ^= sp->rng >> 7;
    sp->rng ^= sp->rng << 17;
    return sp->rng;
}

/* Loud, once per process: acks promise durability that fsync=off voids. */
static void store_pg_check_fsync(PGconn *conn)
{
    PGresult *res;

    if (atomic_exchange(&store_pg_fsync_checked, 1))
        return;
    res = PQexec(conn, "SHOW fsync");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 0), "off") == 0) {
        static const char msg[] =
            "the Postgres server runs with fsync=off: a crash of its "
            "machine can lose messages chatd has already acknowledged; "
            "never run production like this";
        log_event(LOG_ERROR, "database_warning", NULL,
                  LOG_STR("setting", "fsync"), LOG_STR("value", "off"),
                  LOG_STR("message", msg), LF_END);
        fprintf(stderr, "chatd: WARNING: %s\n", msg);
    }
    PQclear(res);
}

/* Server notices (a DROP ... IF EXISTS that found nothing, say) would go
 * to stderr by default; they are only worth a debug line. */
static void store_pg_notice(void *arg, const char *message)
{
    char clean[STORE_ERRLEN];

    store_pg_clean(message, clean, sizeof clean);
    log_event(LOG_DEBUG, "database_notice", NULL,
              LOG_STR("message", clean), LF_END);
}

/* Opens a connection with chatd's session settings. Returns NULL with a
 * one-line reason (no password in it) in err. */
static PGconn *store_pg_connect(const char *conninfo, char *err,
                                size_t errlen)
{
    /* Keepalives first, so the URL may override them; the connect
     * timeout and the name last, so it cannot: no call may wait on a
     * connect longer than that. */
    const char *const keys[] = {
        "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "dbname", "connect_timeout",
        "application_name", NULL
    };
    const char *const vals[] = {
        "1", "10", "5", "3", conninfo, STORE_PG_CONNECT_TIMEOUT, "chatd",
        NULL
    };
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    PGresult *res;

    if (conn == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        store_pg_clean(PQerrorMessage(conn), err, errlen);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, store_pg_notice, NULL);
    res = PQexec(conn, STORE_PG_SESSION_SQL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        store_pg_clean(PQresultErrorMessage(res), err, errlen);
        PQclear(res);
        PQfinish(conn);
        return NULL;
    }
    PQclear(res);
    store_pg_check_fsync(conn);
    return conn;
}

/* Drops a broken connection; the next call may reconnect at once. */
static void store_pg_drop(struct store_pg *sp)
{
    if (sp->conn != NULL)
        PQfinish(sp->conn);
    sp->conn = NULL;
    memset(sp->prepared, 0, sizeof sp->prepared);
}

/* Makes sure there is a connection: STORE_OK, or STORE_ERR with
 * "database unavailable: ..." when it cannot be had now. Reconnects when
 * the back-off deadline has passed, otherwise fails at once. */
static int store_pg_ready(struct store_pg *sp)
{
    char err[STORE_ERRLEN];
    int64_t now;
    int wait;

    if (sp->conn != NULL && PQstatus(sp->conn) == CONNECTION_OK)
        return STORE_OK;
    store_pg_drop(sp);
    now = util_mono_ns();
    if (now < sp->next_attempt_ns) {
        store_set_error(&sp->base, "database unavailable: %s",
                        sp->down_reason);
        return STORE_ERR;
    }
    sp->conn = store_pg_connect(sp->conninfo, err, sizeof err);
    if (sp->conn != NULL) {
        sp->backoff_ms = 0;
        sp->next_attempt_ns = 0;
        sp->down_reason[0] = '\0';
        return STORE_OK;
    }
    /* Jittered exponential back-off: many nodes and threads that lost
     * the server together do not all come back in the same instant. */
    sp->backoff_ms = sp->backoff_ms == 0 ? STORE_PG_BACKOFF_MIN_MS
                                         : sp->backoff_ms * 2;
    if (sp->backoff_ms > STORE_PG_BACKOFF_MAX_MS)
        sp->backoff_ms = STORE_PG_BACKOFF_MAX_MS;
    wait = sp->backoff_ms / 2 +
           (int)(store_pg_rand(sp) % (uint64_t)(sp->backoff_ms / 2 + 1));
    sp->next_attempt_ns = util_mono_ns() + (int64_t)wait * 1000000;
    snprintf(sp->down_reason, sizeof sp->down_reason, "%s", err);
    store_set_error(&sp->base, "database unavailable: %s", err);
    return STORE_ERR;
}

/* ---- running statements ------------------------------------------------ */

/* Prepares statement sid on this connection if it is not yet. */
static int store_pg_prepare(struct store_pg *sp, enum store_pg_sid sid,
                            const char *what)
{
    char name[16];
    PGresult *res;

    if (sp->prepared[sid])
        return STORE_OK;
    snprintf(name, sizeof name, "chatd_%d", (int)sid);
    res = PQprepare(sp->conn, name, store_pg_sql[sid], 0, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        store_pg_fail(sp, what, res);
        PQclear(res);
        return STORE_ERR;
    }
    PQclear(res);
    sp->prepared[sid] = 1;
    return STORE_OK;
}

/* Runs prepared statement sid. Returns its result (the caller PQclears
 * it) or NULL with errstr set. retry: the statement may run again on a
 * fresh connection if the connection turns out to be broken, because
 * running it twice is harmless (a read, or BEGIN) - after a server
 * restart the first call then succeeds instead of failing. */
static PGresult *store_pg_run(struct store_pg *sp, enum store_pg_sid sid,
                              const struct store_pg_params *p,
                              const char *what, int retry)
{
    char name[16];
    PGresult *res;
    int tries = retry ? 2 : 1;

    sp->sqlstate[0] = '\0';
    while (tries-- > 0) {
        if (store_pg_ready(sp) != STORE_OK)
            return NULL;
        if (store_pg_prepare(sp, sid, what) == STORE_OK) {
            snprintf(name, sizeof name, "chatd_%d", (int)sid);
            res = PQexecPrepared(sp->conn, name, p ? p->n : 0,
                                 p ? p->val : NULL, p ? p->len : NULL,
                                 p ? p->fmt : NULL, 0);
            if (PQresultStatus(res) == PGRES_COMMAND_OK ||
                PQresultStatus(res) == PGRES_TUPLES_OK)
                return res;
            store_pg_fail(sp, what, res);
            PQclear(res);
        }
        if (!store_pg_conn_lost(sp))
            return NULL;
        store_pg_drop(sp);
    }
    return NULL;
}

/* Runs a statement for its effect only. */
static int store_pg_do(struct store_pg *sp, enum store_pg_sid sid,
                       const struct store_pg_params *p, const char *what)
{
    PGresult *res = store_pg_run(sp, sid, p, what, 0);

    if (res == NULL)
        return STORE_ERR;
    PQclear(res);
    return STORE_OK;
}

/* Runs a fixed command without parameters (BEGIN, COMMIT, SET ...). */
static int store_pg_cmd(struct store_pg *sp, const char *sql,
                        const char *what, int retry)
{
    int tries = retry ? 2 : 1;
    PGresult *res;

    sp->sqlstate[0] = '\0';
    while (tries-- > 0) {
        if (store_pg_ready(sp) != STORE_OK)
            return STORE_ERR;
        res = PQexec(sp->conn, sql);
        if (PQresultStatus(res) == PGRES_COMMAND_OK ||
            PQresultStatus(res) == PGRES_TUPLES_OK) {
            PQclear(res);
            return STORE_OK;
        }
        store_pg_fail(sp, what, res);
        PQclear(res);
        if (!store_pg_conn_lost(sp))
            return STORE_ERR;
        store_pg_drop(sp);
    }
    return STORE_ERR;
}

/* BEGIN may be retried on a new connection: nothing ran yet. */
static int store_pg_begin(struct store_pg *sp)
{
    return store_pg_cmd(sp, "BEGIN", "begin", 1);
}

/* Ends a transaction without its changes; the error that led here is
 * already in errstr, so this one's own error is not kept. */
static void store_pg_rollback(struct store_pg *sp)
{
    PGresult *res;

    if (sp->conn == NULL || PQstatus(sp->conn) != CONNECTION_OK ||
        PQtransactionStatus(sp->conn) == PQTRANS_IDLE)
        return;
    res = PQexec(sp->conn, "ROLLBACK");
    PQclear(res);
}

static int store_pg_commit(struct store_pg *sp)
{
    if (store_pg_cmd(sp, "COMMIT", "commit", 0) == STORE_OK)
        return STORE_OK;
    store_pg_rollback(sp);
    return STORE_ERR;
}

/* ---- reading results --------------------------------------------------- */

static int64_t store_pg_int(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static int store_pg_isnull(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col);
}

/* Copies a text column into a fixed buffer of size cap (cut if longer:
 * the schema's CHECKs keep stored values within it). */
static void store_pg_copy(const PGresult *res, int row, int col, char *out,
                          size_t cap)
{
    size_t len = (size_t)PQgetlength(res, row, col);

    if (PQgetisnull(res, row, col))
        len = 0;
    if (len >= cap)
        len = cap - 1;
    if (len > 0)
        memcpy(out, PQgetvalue(res, row, col), len);
    out[len] = '\0';
}

/* A heap copy of a text column, or NULL for SQL NULL. */
static char *store_pg_dup(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    return xstrndup(PQgetvalue(res, row, col),
                    (size_t)PQgetlength(res, row, col));
}

/* Reads SP_MSG_COLS of a row, starting at column col. */
static void store_pg_msg_read(const PGresult *res, int row, int col,
                              struct store_msg *m)
{
    m->message_id = store_pg_int(res, row, col);
    m->conversation_id = store_pg_int(res, row, col + 1);
    m->seq = store_pg_int(res, row, col + 2);
    m->sender_id = store_pg_int(res, row, col + 3);
    store_pg_copy(res, row, col + 4, m->sender, sizeof m->sender);
    store_pg_copy(res, row, col + 5, m->client_msg_id,
                  sizeof m->client_msg_id);
    m->body = store_pg_dup(res, row, col + 6);
    if (m->body == NULL)
        m->body = xstrdup("");
    m->created_at = store_pg_int(res, row, col + 7);
}

/* Reads SP_CONV_COLS of a row (members are filled separately). */
static void store_pg_conv_read(const PGresult *res, int row,
                               struct store_conv *c)
{
    memset(c, 0, sizeof *c);
    c->id = store_pg_int(res, row, 0);
    store_pg_copy(res, row, 1, c->kind, sizeof c->kind);
    c->title = store_pg_dup(res, row, 2);
    c->last_seq = store_pg_int(res, row, 3);
    c->last_activity = store_pg_int(res, row, 4);
    c->read_seq = store_pg_int(res, row, 5);
    if (!store_pg_isnull(res, row, 6)) {
        struct store_msg *m = &c->last_message;

        m->message_id = store_pg_int(res, row, 6);
        m->conversation_id = c->id;
        m->seq = store_pg_int(res, row, 7);
        m->sender_id = store_pg_int(res, row, 8);
        store_pg_copy(res, row, 9, m->sender, sizeof m->sender);
        store_pg_copy(res, row, 10, m->client_msg_id,
                      sizeof m->client_msg_id);
        m->body = store_pg_dup(res, row, 11);
        if (m->body == NULL)
            m->body = xstrdup("");
        m->created_at = store_pg_int(res, row, 12);
        c->has_last = 1;
    }
}

/* Appends member row r (conversation_id, id, username) to c. */
static void store_pg_member_add(struct store_conv *c, const PGresult *res,
                                int r)
{
    struct store_user_brief *u;

    c->members = xrealloc(c->members, (c->nmembers + 1) * sizeof *u);
    u = &c->members[c->nmembers++];
    u->id = store_pg_int(res, r, 1);
    store_pg_copy(res, r, 2, u->username, sizeof u->username);
}

/* ---- the operations ---------------------------------------------------- */

static void store_pg_close(struct store *s)
{
    struct store_pg *sp = store_pg_of(s);

    store_pg_drop(sp);
    free(sp->conninfo);
    free(sp);
}

/* Reconnects at once if the connection broke, so /ready answers what is
 * true now; fails fast while the back-off deadline has not passed. */
static int store_pg_ping(struct store *s)
{
    PGresult *res = store_pg_run(store_pg_of(s), SP_PING, NULL, "ping", 1);

    if (res == NULL)
        return STORE_ERR;
    PQclear(res);
    return STORE_OK;
}

/* Appends an event inside the caller's transaction (or on its own). */
static int store_pg_event(struct store_pg *sp, const char *type,
                          int64_t user_id, const char *detail, int64_t now)
{
    struct store_pg_params p = { 0 };

    store_pg_p_int(&p, now);
    store_pg_p_text(&p, type);
    if (user_id != 0)
        store_pg_p_int(&p, user_id);
    else
        store_pg_p_null(&p);
    store_pg_p_text(&p, detail);
    return store_pg_do(sp, SP_EVENT_INSERT, &p, "event");
}

static int store_pg_user_create(struct store *s, const char *username,
                                const char *password_hash, int64_t now,
                                int64_t *id)
{
    struct store_pg *sp = store_pg_of(s);
    char key[STORE_USERNAME_MAX + 1];
    struct store_pg_params p = { 0 };
    struct util_buf detail = { 0 };
    PGresult *res;
    int rc;

    if (store_pg_key(username, key, sizeof key) < 0 ||
        strlen(password_hash) >= STORE_HASH_MAX ||
        !store_pg_utf8_ok(password_hash, strlen(password_hash))) {
        store_set_error(s, "user_create: not a valid username or hash");
        return STORE_ERR;
    }
    if (store_pg_begin(sp) != STORE_OK)
        return STORE_ERR;
    store_pg_p_text(&p, username);
    store_pg_p_text(&p, password_hash);
    store_pg_p_int(&p, now);
    res = store_pg_run(sp, SP_USER_INSERT, &p, "user_create", 0);
    if (res == NULL) {
        store_pg_rollback(sp);
        return strcmp(sp->sqlstate, "23505") == 0 ? STORE_CONFLICT
                                                  : STORE_ERR;
    }
    *id = store_pg_int(res, 0, 0);
    PQclear(res);

    util_buf_puts(&detail, "{\"username\":");
    util_buf_json_str(&detail, username);
    util_buf_puts(&detail, "}");
    rc = store_pg_event(sp, "user_registration", *id, detail.data, now);
    util_buf_free(&detail);
    if (rc != STORE_OK) {
        store_pg_rollback(sp);
        return STORE_ERR;
    }
    return store_pg_commit(sp);
}

static int store_pg_user_by_name(struct store *s, const char *username,
                                 struct store_user *out)
{
    struct store_pg *sp = store_pg_of(s);
    char key[STORE_USERNAME_MAX + 1];
    struct store_pg_params p = { 0 };
    PGresult *res;

    memset(out, 0, sizeof *out);
    if (store_pg_key(username, key, sizeof key) < 0)
        return STORE_NOTFOUND;  /* no stored name looks like that */
    store_pg_p_text(&p, key);
    res = store_pg_run(sp, SP_USER_BY_KEY, &p, "user_by_name", 1);
    if (res == NULL)
        return STORE_ERR;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return STORE_NOTFOUND;
    }
    out->id = store_pg_int(res, 0, 0);
    store_pg_copy(res, 0, 1, out->username, sizeof out->username);
    store_pg_copy(res, 0, 2, out->password_hash, sizeof out->password_hash);
    out->failed_logins = (int)store_pg_int(res, 0, 3);
    out->locked_until = store_pg_int(res, 0, 4);
    PQclear(res);
    return STORE_OK;
}

static int store_pg_user_set_throttle(struct store *s, int64_t user_id,
                                      int failed, int64_t locked_until)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_params p = { 0 };
    PGresult *res;
    int changed;

    store_pg_p_int(&p, user_id);
    store_pg_p_int(&p, failed);
    store_pg_p_int(&p, locked_until);
    /* Setting the same values twice is harmless: it may be retried. */
    res = store_pg_run(sp, SP_USER_THROTTLE, &p, "user_set_throttle", 1);
    if (res == NULL)
        return STORE_ERR;
    changed = atoi(PQcmdTuples(res)) > 0;
    PQclear(res);
    return changed ? STORE_OK : STORE_NOTFOUND;
}

/* The smallest key greater than every key that starts with key: its last
 * byte incremented. Keys are of A-Z a-z 0-9 _ . - (store_pg_key), so the
 * result is ASCII too. */
static void store_pg_key_upper(const char *key, char *upper, size_t cap)
{
    size_t len = strlen(key);

    snprintf(upper, cap, "%s", key);
    upper[len - 1] = (char)(upper[len - 1] + 1);
}

static int store_pg_users_by_prefix(struct store *s, const char *prefix,
                                    size_t limit,
                                    struct store_user_brief **out, size_t *n)
{
    struct store_pg *sp = store_pg_of(s);
    char key[STORE_USERNAME_MAX + 1], upper[STORE_USERNAME_MAX + 1];
    struct store_pg_params p = { 0 };
    struct store_user_brief *v;
    PGresult *res;
    int i, rows;

    *out = NULL;
    *n = 0;
    if (limit == 0 || store_pg_key(prefix, key, sizeof key) < 0)
        return STORE_OK;    /* no stored name starts like that */
    store_pg_p_text(&p, key);
    if (key[0] != '\0') {
        store_pg_key_upper(key, upper, sizeof upper);
        store_pg_p_text(&p, upper);
    }
    store_pg_p_int(&p, limit > (size_t)INT64_MAX ? INT64_MAX
                                                 : (int64_t)limit);
    res = store_pg_run(sp, key[0] != '\0' ? SP_USERS_RANGE : SP_USERS_FROM,
                       &p, "users_by_prefix", 1);
    if (res == NULL)
        return STORE_ERR;
    rows = PQntuples(res);
    v = xcalloc(rows > 0 ? (size_t)rows : 1, sizeof *v);
    for (i = 0; i < rows; i++) {
        v[i].id = store_pg_int(res, i, 0);
        store_pg_copy(res, i, 1, v[i].username, sizeof v[i].username);
    }
    PQclear(res);
    *out = v;
    *n = (size_t)rows;
    return STORE_OK;
}

static int store_pg_users_by_names(struct store *s, const char *const *names,
                                   size_t n, struct store_user_brief *out,
                                   size_t *missing)
{
    struct store_pg *sp = store_pg_of(s);
    char key[STORE_USERNAME_MAX + 1];
    struct store_pg_params p = { 0 };
    struct util_buf arr = { 0 };
    PGresult *res;
    size_t i;

    for (i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        if (store_pg_key(names[i], key, sizeof key) < 0) {
            *missing = i;
            util_buf_free(&arr);
            return STORE_NOTFOUND;
        }
        store_pg_arr_text(&arr, key, strlen(key), i == 0);
    }
    if (n == 0)
        return STORE_OK;
    store_pg_arr_end(&arr, 0);
    store_pg_p_text(&p, arr.data);
    res = store_pg_run(sp, SP_USERS_BY_KEYS, &p, "users_by_names", 1);
    util_buf_free(&arr);
    if (res == NULL)
        return STORE_ERR;
    if ((size_t)PQntuples(res) != n) {
        store_set_error(s, "users_by_names: %zu names, %d rows", n,
                        PQntuples(res));
        PQclear(res);
        return STORE_ERR;
    }
    for (i = 0; i < n; i++) {
        if (store_pg_isnull(res, (int)i, 1)) {
            *missing = i;
            PQclear(res);
            return STORE_NOTFOUND;
        }
        out[i].id = store_pg_int(res, (int)i, 1);
        store_pg_copy(res, (int)i, 2, out[i].username,
                      sizeof out[i].username);
    }
    PQclear(res);
    return STORE_OK;
}

static int store_pg_session_create(struct store *s, int64_t user_id,
                                   const uint8_t *token_hash, int64_t now,
                                   int64_t expires_at, int64_t *id)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_params p = { 0 };
    char detail[64];
    PGresult *res;

    if (store_pg_begin(sp) != STORE_OK)
        return STORE_ERR;
    store_pg_p_int(&p, user_id);
    store_pg_p_bytes(&p, token_hash, STORE_TOKEN_HASH_LEN);
    store_pg_p_int(&p, now);
    store_pg_p_int(&p, expires_at);
    res = store_pg_run(sp, SP_SESSION_INSERT, &p, "session_create", 0);
    if (res == NULL) {
        store_pg_rollback(sp);
        if (strcmp(sp->sqlstate, "23503") == 0)
            return STORE_NOTFOUND;  /* no such user */
        if (strcmp(sp->sqlstate, "23505") == 0)
            return STORE_CONFLICT;  /* the same token twice */
        return STORE_ERR;
    }
    *id = store_pg_int(res, 0, 0);
    PQclear(res);
    snprintf(detail, sizeof detail, "{\"session_id\":%" PRId64 "}", *id);
    if (store_pg_event(sp, "user_login", user_id, detail, now) != STORE_OK) {
        store_pg_rollback(sp);
        return STORE_ERR;
    }
    return store_pg_commit(sp);
}

static int store_pg_session_lookup(struct store *s, const uint8_t *token_hash,
                                   int64_t now, struct store_session *out)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_params p = { 0 };
    PGresult *res;

    memset(out, 0, sizeof *out);
    store_pg_p_bytes(&p, token_hash, STORE_TOKEN_HASH_LEN);
    store_pg_p_int(&p, now);
    res = store_pg_run(sp, SP_SESSION_LOOKUP, &p, "session_lookup", 1);
    if (res == NULL)
        return STORE_ERR;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return STORE_NOTFOUND;
    }
    out->session_id = store_pg_int(res, 0, 0);
    out->user_id = store_pg_int(res, 0, 1);
    store_pg_copy(res, 0, 2, out->username, sizeof out->username);
    out->expires_at = store_pg_int(res, 0, 3);
    PQclear(res);
    return STORE_OK;
}

static int store_pg_session_delete(struct store *s, int64_t session_id,
                                   int64_t now)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_params p = { 0 };
    char detail[64];
    int64_t user_id;
    PGresult *res;

    if (store_pg_begin(sp) != STORE_OK)
        return STORE_ERR;
    store_pg_p_int(&p, session_id);
    res = store_pg_run(sp, SP_SESSION_DELETE, &p, "session_delete", 0);
    if (res == NULL) {
        store_pg_rollback(sp);
        return STORE_ERR;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        store_pg_rollback(sp);
        return STORE_NOTFOUND;
    }
    user_id = store_pg_int(res, 0, 0);
    PQclear(res);
    snprintf(detail, sizeof detail, "{\"session_id\":%" PRId64 "}",
             session_id);
    if (store_pg_event(sp, "user_logout", user_id, detail, now) !=
        STORE_OK) {
        store_pg_rollback(sp);
        return STORE_ERR;
    }
    return store_pg_commit(sp);
}

/* Fills c with conversation conv_id as user_id sees it: members, last
 * message, read_seq (0 if user_id is not a member). STORE_NOTFOUND if
 * there is no such conversation. */
static int store_pg_conv_load(struct store_pg *sp, int64_t conv_id,
                              int64_t user_id, struct store_conv *c)
{
    struct store_pg_params p = { 0 };
    PGresult *res;
    int i;

    memset(c, 0, sizeof *c);
    store_pg_p_int(&p, conv_id);
    store_pg_p_int(&p, user_id);
    res = store_pg_run(sp, SP_CONV_ONE, &p, "conversation", 0);
    if (res == NULL)
        return STORE_ERR;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return STORE_NOTFOUND;
    }
    store_pg_conv_read(res, 0, c);
    PQclear(res);

    p.n = 1;
    res = store_pg_run(sp, SP_MEMBERS_ONE, &p, "conversation members", 0);
    if (res == NULL) {
        store_conv_clear(c);
        return STORE_ERR;
    }
    for (i = 0; i < PQntuples(res); i++)
        store_pg_member_add(c, res, i);
    PQclear(res);
    return STORE_OK;
}

/* Members are the creator and the others, distinct. */
static int store_pg_members_valid(int64_t creator_id,
                                  const int64_t *member_ids, size_t n)
{
    size_t i, j;

    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        if (member_ids[i] == creator_id)
            return 0;
        for (j = 0; j < i; j++)
            if (member_ids[j] == member_ids[i])
                return 0;
    }
    return 1;
}

/* One run of conv_create in its own transaction. STORE_CONFLICT means a
 * concurrent creator made the same direct conversation first: run again
 * and it is found. */
static int store_pg_conv_create_once(struct store_pg *sp, int64_t creator_id,
                                     const int64_t *member_ids, size_t n,
                                     const char *title, int64_t now,
                                     struct store_conv *out, int *created)
{
    const char *kind = n == 1 ? "direct" : "group";
    char direct_key[48], detail[128];
    struct store_pg_params p = { 0 };
    struct util_buf ids = { 0 };
    PGresult *res;
    int64_t conv_id;
    size_t i;
    int rc;

    if (store_pg_begin(sp) != STORE_OK)
        return STORE_ERR;
    if (n == 1) {
        int64_t lo = creator_id < member_ids[0] ? creator_id : member_ids[0];
        int64_t hi = creator_id < member_ids[0] ? member_ids[0] : creator_id;

        snprintf(direct_key, sizeof direct_key, "%" PRId64 ":%" PRId64, lo,
                 hi);
        store_pg_p_text(&p, direct_key);
        res = store_pg_run(sp, SP_CONV_BY_DIRECT_KEY, &p, "conv_create", 0);
        if (res == NULL)
            goto fail;
        if (PQntuples(res) == 1) {
            conv_id = store_pg_int(res, 0, 0);
            PQclear(res);
            if (store_pg_conv_load(sp, conv_id, creator_id, out) != STORE_OK)
                goto fail;
            if (store_pg_commit(sp) != STORE_OK) {
                store_conv_clear(out);
                return STORE_ERR;
            }
            return STORE_OK;
        }
        PQclear(res);
    }

    memset(&p, 0, sizeof p);
    store_pg_p_text(&p, kind);
    store_pg_p_text(&p, title);
    store_pg_p_text(&p, n == 1 ? direct_key : NULL);
    store_pg_p_int(&p, creator_id);
    store_pg_p_int(&p, now);
    res = store_pg_run(sp, SP_CONV_INSERT, &p, "conv_create", 0);
    if (res == NULL) {
        store_pg_rollback(sp);
        if (strcmp(sp->sqlstate, "23505") == 0)
            return STORE_CONFLICT;
        /* An unknown creator fails the foreign key. */
        return strcmp(sp->sqlstate, "23503") == 0 ? STORE_NOTFOUND
                                                  : STORE_ERR;
    }
    conv_id = store_pg_int(res, 0, 0);
    PQclear(res);

    store_pg_arr_int(&ids, creator_id, 1);
    for (i = 0; i < n; i++)
        store_pg_arr_int(&ids, member_ids[i], 0);
    store_pg_arr_end(&ids, 0);
    memset(&p, 0, sizeof p);
    store_pg_p_int(&p, conv_id);
    store_pg_p_text(&p, ids.data);
    store_pg_p_int(&p, now);
    res = store_pg_run(sp, SP_MEMBERS_INSERT, &p, "conversation members", 0);
    util_buf_free(&ids);
    if (res == NULL) {
        store_pg_rollback(sp);
        /* An unknown user id fails the foreign key. */
        return strcmp(sp->sqlstate, "23503") == 0 ? STORE_NOTFOUND
                                                  : STORE_ERR;
    }
    PQclear(res);
    snprintf(detail, sizeof detail,
             "{\"conversation_id\":%" PRId64 ",\"kind\":\"%s\","
             "\"members\":%zu}", conv_id, kind, n + 1);
    if (store_pg_event(sp, "conversation_created", creator_id, detail,
                       now) != STORE_OK)
        goto fail;
    rc = store_pg_conv_load(sp, conv_id, creator_id, out);
    if (rc != STORE_OK)
        goto fail;
    if (store_pg_commit(sp) != STORE_OK) {
        store_conv_clear(out);
        return STORE_ERR;
    }
    *created = 1;
    return STORE_OK;
fail:
    store_pg_rollback(sp);
    return STORE_ERR;
}

static int store_pg_conv_create(struct store *s, int64_t creator_id,
                                const int64_t *member_ids, size_t n,
                                const char *title, int64_t now,
                                struct store_conv *out, int *created)
{
    struct store_pg *sp = store_pg_of(s);
    int rc = STORE_CONFLICT, tries;

    memset(out, 0, sizeof *out);
    *created = 0;
    if (!store_pg_members_valid(creator_id, member_ids, n)) {
        store_set_error(s, "conv_create: members must be distinct others "
                        "than the creator, at least one");
        return STORE_ERR;
    }
    if (title != NULL && !store_pg_utf8_ok(title, strlen(title))) {
        store_set_error(s, "conv_create: the title is not UTF-8");
        return STORE_ERR;
    }
    for (tries = 0; rc == STORE_CONFLICT && tries < STORE_PG_CONV_TRIES;
         tries++)
        rc = store_pg_conv_create_once(sp, creator_id, member_ids, n, title,
                                       now, out, created);
    if (rc == STORE_CONFLICT) {
        store_set_error(s, "conv_create: the direct conversation kept "
                        "being created concurrently");
        return STORE_ERR;
    }
    return rc;
}

/* Orders conversation indexes by id, for matching member rows. */
struct store_pg_idx {
    int64_t id;
    size_t at;
};

static int store_pg_idx_cmp(const void *a, const void *b)
{
    const struct store_pg_idx *x = a, *y = b;

    return (x->id > y->id) - (x->id < y->id);
}

static int store_pg_conv_list(struct store *s, int64_t user_id,
                              struct store_conv **out, size_t *n)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_params p = { 0 };
    struct store_pg_idx *idx, key, *hit;
    struct store_conv *v;
    PGresult *res;
    size_t cnt, i;
    int r;

    *out = NULL;
    *n = 0;
    /* Two statements, whatever the number of conversations. A
     * conversation created between them has members but no row here and
     * is left for the next list. */
    store_pg_p_int(&p, user_id);
    res = store_pg_run(sp, SP_CONV_OF_USER, &p, "conv_list", 1);
    if (res == NULL)
        return STORE_ERR;
    cnt = (size_t)PQntuples(res);
    v = xcalloc(cnt ? cnt : 1, sizeof *v);
    idx = xcalloc(cnt ? cnt : 1, sizeof *idx);
    for (i = 0; i < cnt; i++) {
        store_pg_conv_read(res, (int)i, &v[i]);
        idx[i].id = v[i].id;
        idx[i].at = i;
    }
    PQclear(res);
    qsort(idx, cnt, sizeof *idx, store_pg_idx_cmp);

    res = cnt ? store_pg_run(sp, SP_MEMBERS_OF_USER, &p, "conv_list", 1)
              : NULL;
    if (cnt && res == NULL) {
        free(idx);
        store_convs_free(v, cnt);
        return STORE_ERR;
    }
    for (r = 0; cnt && r < PQntuples(res); r++) {
        key.id = store_pg_int(res, r, 0);
        hit = bsearch(&key, idx, cnt, sizeof *idx, store_pg_idx_cmp);
        if (hit != NULL)
            store_pg_member_add(&v[hit->at], res, r);
    }
    PQclear(res);
    free(idx);
    *out = v;
    *n = cnt;
    return STORE_OK;
}

static int store_pg_conv_member(struct store *s, int64_t conv_id,
                                int64_t user_id, int64_t *last_seq)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_params p = { 0 };
    PGresult *res;
    int member;

    store_pg_p_int(&p, conv_id);
    store_pg_p_int(&p, user_id);
    /* Retried on a new connection only outside a transaction. */
    res = store_pg_run(sp, SP_CONV_MEMBER, &p, "conv_member",
                       sp->conn == NULL ||
                           PQtransactionStatus(sp->conn) == PQTRANS_IDLE);
    if (res == NULL)
        return STORE_ERR;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return STORE_NOTFOUND;
    }
    member = !store_pg_isnull(res, 0, 1);
    if (member && last_seq != NULL)
        *last_seq = store_pg_int(res, 0, 0);
    PQclear(res);
    return member ? STORE_OK : STORE_FORBIDDEN;
}

/* Runs statement sid with one id bound and collects the first column of
 * every row (caller frees *ids). */
static int store_pg_ids(struct store_pg *sp, enum store_pg_sid sid, int64_t id,
                        const char *what, int64_t **ids, size_t *n)
{
    struct store_pg_params p = { 0 };
    PGresult *res;
    size_t cnt, i;
    int64_t *v;

    *ids = NULL;
    *n = 0;
    store_pg_p_int(&p, id);
    res = store_pg_run(sp, sid, &p, what, 1);
    if (res == NULL)
        return STORE_ERR;
    cnt = (size_t)PQntuples(res);
    if (cnt > 0) {
        v = xcalloc(cnt, sizeof *v);
        for (i = 0; i < cnt; i++)
            v[i] = store_pg_int(res, (int)i, 0);
        *ids = v;
        *n = cnt;
    }
    PQclear(res);
    return STORE_OK;
}

static int store_pg_conv_member_ids(struct store *s, int64_t conv_id,
                                    int64_t **ids, size_t *n)
{
    int rc = store_pg_ids(store_pg_of(s), SP_MEMBER_IDS, conv_id,
                          "conv_member_ids", ids, n);

    /* Every conversation has members: none means it does not exist. */
    if (rc == STORE_OK && *n == 0)
        return STORE_NOTFOUND;
    return rc;
}

/* Runs sql, one read-only statement, in a READ ONLY transaction with its
 * own statement_timeout (the collector's queries). */
static int store_pg_query_rows(struct store *s, const char *sql,
                               int timeout_ms, struct store_rows *out)
{
    struct store_pg *sp = store_pg_of(s);
    char set[64];
    PGresult *res;
    size_t r, c;

    if (store_pg_ready(sp) != STORE_OK)
        return STORE_ERR;
    snprintf(set, sizeof set, "SET LOCAL statement_timeout = %d", timeout_ms);
    res = PQexec(sp->conn, "BEGIN READ ONLY");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(res);
    res = PQexec(sp->conn, set);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(res);
    /* The extended protocol runs exactly one statement. */
    res = PQexecParams(sp->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto fail;
    out->nrows = (size_t)PQntuples(res);
    out->ncols = (size_t)PQnfields(res);
    out->cells = xcalloc(out->nrows * out->ncols + 1, sizeof *out->cells);
    for (r = 0; r < out->nrows; r++)
        for (c = 0; c < out->ncols; c++)
            if (!PQgetisnull(res, (int)r, (int)c))
                out->cells[r * out->ncols + c] =
                    xstrdup(PQgetvalue(res, (int)r, (int)c));
    PQclear(res);
    res = PQexec(sp->conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(res);
    return STORE_OK;
fail:
    store_pg_fail(sp, "query_rows", res);
    PQclear(res);
    store_rows_clear(out);
    if (store_pg_conn_lost(sp))
        store_pg_drop(sp);
    else
        PQclear(PQexec(sp->conn, "ROLLBACK"));
    return STORE_ERR;
}

static int store_pg_user_contacts(struct store *s, int64_t user_id,
                                  int64_t **ids, size_t *n)
{
    return store_pg_ids(store_pg_of(s), SP_CONTACTS, user_id, "user_contacts",
                        ids, n);
}

static int store_pg_history(struct store *s, int64_t conv_id,
                            int64_t before_seq, int64_t after_seq,
                            size_t limit, struct store_msg **out, size_t *n,
                            int *has_more)
{
    struct store_pg *sp = store_pg_of(s);
    /* Only after_seq: the oldest page after it. Otherwise the newest page
     * below before_seq (and above after_seq). */
    int back = before_seq >= 0 || after_seq < 0;
    struct store_pg_params p = { 0 };
    struct store_msg *v;
    PGresult *res;
    size_t cnt, i;
    int64_t lim;

    *out = NULL;
    *n = 0;
    *has_more = 0;
    /* One row more than asked says whether there is more. */
    lim = limit >= (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit + 1;
    store_pg_p_int(&p, conv_id);
    store_pg_p_int(&p, after_seq >= 0 ? after_seq : 0);
    store_pg_p_int(&p, before_seq >= 0 ? before_seq : INT64_MAX);
    store_pg_p_int(&p, lim);
    res = store_pg_run(sp, back ? SP_HISTORY_BACK : SP_HISTORY_ON, &p,
                       "history", 1);
    if (res == NULL)
        return STORE_ERR;
    cnt = (size_t)PQntuples(res);
    if (cnt > limit) {
        *has_more = 1;
        cnt = limit;
    }
    v = xcalloc(cnt ? cnt : 1, sizeof *v);
    for (i = 0; i < cnt; i++)
        store_pg_msg_read(res, (int)(back ? cnt - 1 - i : i), 0, &v[i]);
    PQclear(res);
    *out = v;
    *n = cnt;
    return STORE_OK;
}

/* ---- send_batch -------------------------------------------------------- */

/* What the batch knows of one send while it is being written. */
struct store_pg_slot {
    int valid;              /* cid and body fit the schema */
    size_t cid_len;
    int first;              /* index of the earlier send in this batch
                               that stores the same (sender, cid); -1 */
};

/* Whether two sends carry the same (sender, client_msg_id). */
static int store_pg_same_key(const struct store_send *x,
                             const struct store_send *y)
{
    return x->sender_id == y->sender_id &&
           strcmp(x->client_msg_id, y->client_msg_id) == 0;
}

/* Orders send indexes by (sender, client_msg_id, index), so the retries
 * inside a batch sit together in batch order; arg is the sends. */
static int store_pg_key_cmp(const void *a, const void *b, void *arg)
{
    const struct store_send *sends = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const struct store_send *x = &sends[i], *y = &sends[j];
    int c;

    if (x->sender_id != y->sender_id)
        return x->sender_id < y->sender_id ? -1 : 1;
    c = strcmp(x->client_msg_id, y->client_msg_id);
    if (c != 0)
        return c;
    return (i > j) - (i < j);
}

/* A retry inside the batch: the first send of a key that is to be
 * stored wins, and every later send of that key is its duplicate (as if
 * the sends were stored one by one). slot[].first names the winner; the
 * message is copied once it is stored. A key stored before the batch
 * made every send of it a duplicate already, so it has no winner. */
static void store_pg_batch_retries(struct store_send *sends, size_t n,
                                   struct store_pg_slot *slot,
                                   const size_t *order, size_t nkeyed)
{
    size_t g = 0, e, k;

    for (k = 0; k < n; k++)
        slot[k].first = -1;
    while (g < nkeyed) {
        int winner = -1;

        for (e = g + 1; e < nkeyed &&
             store_pg_same_key(&sends[order[g]], &sends[order[e]]);
             e++)
            ;
        for (k = g; k < e; k++) {
            size_t j = order[k];

            if (winner >= 0) {
                store_msg_clear(&sends[j].msg);
                sends[j].rc = STORE_DUPLICATE;
                slot[j].first = winner;
            } else if (sends[j].rc == STORE_OK) {
                winner = (int)j;
            }
        }
        g = e;
    }
}

static void store_pg_sends_reset(struct store_send *sends, size_t n, int rc)
{
    size_t i;

    for (i = 0; i < n; i++) {
        store_msg_clear(&sends[i].msg);
        sends[i].rc = rc;
    }
}

/* Step 1: duplicates already stored, existence and membership. Sets rc
 * of each send to its outcome so far: STORE_DUPLICATE (msg filled),
 * STORE_NOTFOUND, STORE_FORBIDDEN, STORE_ERR (invalid), or STORE_OK for a
 * send to store (msg.sender filled). */
static int store_pg_send_lookup(struct store_pg *sp, struct store_send *sends,
                                size_t n, const struct store_pg_slot *slot)
{
    struct util_buf convs = { 0 }, senders = { 0 }, cids = { 0 };
    struct store_pg_params p = { 0 };
    PGresult *res;
    size_t i;

    for (i = 0; i < n; i++) {
        store_pg_arr_int(&convs, sends[i].conversation_id, i == 0);
        store_pg_arr_int(&senders, sends[i].sender_id, i == 0);
        /* An invalid id looks nothing up (and is not sent to a server
         * that would refuse its bytes). */
        store_pg_arr_text(&cids, slot[i].cid_len ? sends[i].client_msg_id
                                                 : NULL,
                          slot[i].cid_len, i == 0);
    }
    store_pg_arr_end(&convs, 0);
    store_pg_arr_end(&senders, 0);
    store_pg_arr_end(&cids, 0);
    store_pg_p_text(&p, convs.data);
    store_pg_p_text(&p, senders.data);
    store_pg_p_text(&p, cids.data);
    res = store_pg_run(sp, SP_SEND_LOOKUP, &p, "send", 0);
    util_buf_free(&convs);
    util_buf_free(&senders);
    util_buf_free(&cids);
    if (res == NULL)
        return STORE_ERR;
    if ((size_t)PQntuples(res) != n) {
        store_set_error(&sp->base, "send: %zu sends, %d look-up rows", n,
                        PQntuples(res));
        PQclear(res);
        return STORE_ERR;
    }
    for (i = 0; i < n; i++) {
        struct store_send *sd = &sends[i];
        int r = (int)i;

        if (!store_pg_isnull(res, r, 1)) {
            store_pg_msg_read(res, r, 1, &sd->msg);
            sd->rc = STORE_DUPLICATE;
        } else if (strcmp(PQgetvalue(res, r, 9), "t") != 0) {
            sd->rc = STORE_NOTFOUND;
        } else if (store_pg_isnull(res, r, 10)) {
            sd->rc = STORE_FORBIDDEN;
        } else if (!slot[i].valid) {
            sd->rc = STORE_ERR;
        } else {
            store_pg_copy(res, r, 10, sd->msg.sender, sizeof sd->msg.sender);
            sd->rc = STORE_OK;
        }
    }
    PQclear(res);
    return STORE_OK;
}

/* One conversation's share of a batch. */
struct store_pg_bump {
    int64_t id;
    int64_t n;
    int64_t t;              /* newest send time */
    int64_t next;           /* the next seq to hand out */
};

static int store_pg_bump_cmp(const void *a, const void *b)
{
    const struct store_pg_bump *x = a, *y = b;

    return (x->id > y->id) - (x->id < y->id);
}

/* One run of a batch in one transaction. Returns STORE_OK, STORE_ERR, or
 * STORE_CONFLICT when it lost a race it may win if run again (a duplicate
 * committed meanwhile by another node, a deadlock). */
static int store_pg_send_once(struct store_pg *sp, struct store_send *sends,
                              size_t n, struct store_pg_slot *slot,
                              const size_t *order, size_t nkeyed)
{
    struct util_buf a[6] = { { 0 } };
    struct store_pg_params p = { 0 };
    struct store_pg_bump *bumps = NULL, key, *hit;
    size_t i, k, nb = 0, nnew = 0;
    PGresult *res = NULL;
    int r, rc = STORE_ERR;

    /* A run before this one may have left duplicates filled in. */
    store_pg_sends_reset(sends, n, STORE_ERR);
    for (i = 0; i < n; i++)
        slot[i].first = -1;
    /* may be retried on a new connection: nothing ran yet */
    if (store_pg_cmd(sp, STORE_PG_SEND_BEGIN, "begin", 1) != STORE_OK)
        return STORE_ERR;
    if (store_pg_send_lookup(sp, sends, n, slot) != STORE_OK)
        goto out;
    store_pg_batch_retries(sends, n, slot, order, nkeyed);

    /* Step 2: count the new sends of each conversation, bump once. */
    bumps = xcalloc(n, sizeof *bumps);
    for (i = 0; i < n; i++) {
        if (sends[i].rc != STORE_OK)
            continue;
        nnew++;
        key.id = sends[i].conversation_id;
        for (k = 0; k < nb && bumps[k].id != key.id; k++)
            ;
        if (k == nb) {
            bumps[nb].id = key.id;
            bumps[nb].t = sends[i].now;
            nb++;
        }
        bumps[k].n++;
        if (sends[i].now > bumps[k].t)
            bumps[k].t = sends[i].now;
    }
    if (nnew == 0) {
        free(bumps);
        bumps = NULL;
        rc = store_pg_commit(sp);
        if (rc == STORE_OK)
            goto dups;
        return STORE_ERR;
    }
    qsort(bumps, nb, sizeof *bumps, store_pg_bump_cmp);
    for (k = 0; k < nb; k++) {
        store_pg_arr_int(&a[0], bumps[k].id, k == 0);
        store_pg_arr_int(&a[1], bumps[k].n, k == 0);
        store_pg_arr_int(&a[2], bumps[k].t, k == 0);
    }
    for (k = 0; k < 3; k++)
        store_pg_arr_end(&a[k], 0);
    for (k = 0; k < 3; k++)
        store_pg_p_text(&p, a[k].data);
    res = store_pg_run(sp, SP_SEND_BUMP, &p, "send", 0);
    for (k = 0; k < 3; k++)
        util_buf_free(&a[k]);
    if (res == NULL)
        goto fail;
    if ((size_t)PQntuples(res) != nb) {
        store_set_error(&sp->base, "send: a conversation vanished");
        goto fail;
    }
    for (r = 0; r < PQntuples(res); r++) {
        key.id = store_pg_int(res, r, 0);
        hit = bsearch(&key, bumps, nb, sizeof *bumps, store_pg_bump_cmp);
        if (hit == NULL) {
            store_set_error(&sp->base, "send: bumped an unknown "
                            "conversation");
            goto fail;
        }
        hit->next = store_pg_int(res, r, 1) - hit->n + 1;
    }
    PQclear(res);
    res = NULL;

    /* Step 3: seqs in batch order, then one INSERT for all. */
    memset(&p, 0, sizeof p);
    k = 0;
    for (i = 0; i < n; i++) {
        struct store_send *sd = &sends[i];

        if (sd->rc != STORE_OK)
            continue;
        key.id = sd->conversation_id;
        hit = bsearch(&key, bumps, nb, sizeof *bumps, store_pg_bump_cmp);
        sd->msg.seq = hit->next++;
        store_pg_arr_int(&a[0], sd->conversation_id, k == 0);
        store_pg_arr_int(&a[1], sd->msg.seq, k == 0);
        store_pg_arr_int(&a[2], sd->sender_id, k == 0);
        store_pg_arr_text(&a[3], sd->client_msg_id, slot[i].cid_len, k == 0);
        store_pg_arr_text(&a[4], sd->body, sd->body_len, k == 0);
        store_pg_arr_int(&a[5], sd->now, k == 0);
        k++;
    }
    for (k = 0; k < 6; k++) {
        store_pg_arr_end(&a[k], 0);
        store_pg_p_text(&p, a[k].data);
    }
    res = store_pg_run(sp, SP_SEND_INSERT, &p, "send", 0);
    for (k = 0; k < 6; k++)
        util_buf_free(&a[k]);
    if (res == NULL) {
        /* 23505: the same client_msg_id committed by another node since
         * step 1; 40P01: a deadlock. Both go away when run again. */
        if (strcmp(sp->sqlstate, "23505") == 0 ||
            strcmp(sp->sqlstate, "40P01") == 0 ||
            strcmp(sp->sqlstate, "40001") == 0)
            rc = STORE_CONFLICT;
        goto fail;
    }
    if ((size_t)PQntuples(res) != nnew) {
        store_set_error(&sp->base, "send: %zu messages, %d ids", nnew,
                        PQntuples(res));
        goto fail;
    }
    /* RETURNING has no promised order: match rows by (conversation, seq),
     * which is unique. */
    for (r = 0; r < PQntuples(res); r++) {
        int64_t id = store_pg_int(res, r, 0), conv = store_pg_int(res, r, 1);
        int64_t seq = store_pg_int(res, r, 2);

        for (i = 0; i < n; i++)
            if (sends[i].rc == STORE_OK && sends[i].conversation_id == conv &&
                sends[i].msg.seq == seq) {
                sends[i].msg.message_id = id;
                break;
            }
    }
    PQclear(res);
    res = NULL;
    free(bumps);
    bumps = NULL;
    if (store_pg_commit(sp) != STORE_OK) {
        if (strcmp(sp->sqlstate, "40001") == 0 ||
            strcmp(sp->sqlstate, "40P01") == 0)
            return STORE_CONFLICT;
        return STORE_ERR;
    }
    for (i = 0; i < n; i++) {
        struct store_send *sd = &sends[i];
        struct store_msg *m = &sd->msg;

        if (sd->rc != STORE_OK)
            continue;
        m->conversation_id = sd->conversation_id;
        m->sender_id = sd->sender_id;
        memcpy(m->client_msg_id, sd->client_msg_id, slot[i].cid_len);
        m->client_msg_id[slot[i].cid_len] = '\0';
        m->body = xstrndup(sd->body, sd->body_len);
        m->created_at = sd->now;
    }
dups:
    /* The retries inside the batch get the message their first stored. */
    for (i = 0; i < n; i++) {
        if (slot[i].first < 0)
            continue;
        sends[i].msg = sends[slot[i].first].msg;
        sends[i].msg.body = xstrdup(sends[slot[i].first].msg.body);
    }
    return STORE_OK;
fail:
    PQclear(res);
    free(bumps);
    for (k = 0; k < 6; k++)
        util_buf_free(&a[k]);
out:
    store_pg_rollback(sp);
    return rc;
}

static int store_pg_send_batch(struct store *s, struct store_send *sends,
                               size_t n)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_slot *slot;
    size_t *order, i, nkeyed = 0;
    int rc = STORE_CONFLICT, tries;

    /* msg is output only; whatever the caller left there is not ours. */
    for (i = 0; i < n; i++) {
        memset(&sends[i].msg, 0, sizeof sends[i].msg);
        sends[i].rc = STORE_ERR;
    }
    if (n == 0)
        return STORE_OK;
    /* The caller validates these; one it let through must not fail the
     * whole batch, so it is refused here, alone. */
    slot = xcalloc(n, sizeof *slot);
    order = xcalloc(n, sizeof *order);
    for (i = 0; i < n; i++) {
        int cid_ok = store_pg_cid_ok(sends[i].client_msg_id,
                                     &slot[i].cid_len);

        if (!cid_ok)
            slot[i].cid_len = 0;
        slot[i].valid = cid_ok && sends[i].body != NULL &&
                        sends[i].body_len >= 1 &&
                        sends[i].body_len <= STORE_PG_BODY_MAX &&
                        store_pg_utf8_ok(sends[i].body, sends[i].body_len);
        if (cid_ok)
            order[nkeyed++] = i;
    }
    qsort_r(order, nkeyed, sizeof *order, store_pg_key_cmp, sends);

    for (tries = 0; rc == STORE_CONFLICT && tries < STORE_PG_SEND_TRIES;
         tries++)
        rc = store_pg_send_once(sp, sends, n, slot, order, nkeyed);
    free(slot);
    free(order);
    if (rc != STORE_OK) {
        /* Nothing of the batch is stored: no send may look stored. */
        store_pg_sends_reset(sends, n, STORE_ERR);
        return STORE_ERR;
    }
    return STORE_OK;
}

static int store_pg_read_marker(struct store *s, int64_t user_id,
                                int64_t conv_id, int64_t seq, int64_t now,
                                int64_t *read_seq)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_params p = { 0 };
    int64_t last_seq = 0, target;
    char detail[96];
    PGresult *res;
    int rc, moved;

    if (store_pg_begin(sp) != STORE_OK)
        return STORE_ERR;
    rc = store_pg_conv_member(s, conv_id, user_id, &last_seq);
    if (rc != STORE_OK) {
        store_pg_rollback(sp);
        return rc;
    }
    target = seq < last_seq ? seq : last_seq;
    store_pg_p_int(&p, conv_id);
    store_pg_p_int(&p, user_id);
    store_pg_p_int(&p, target);
    res = store_pg_run(sp, SP_READ_ADVANCE, &p, "read_marker", 0);
    if (res == NULL)
        goto fail;
    moved = atoi(PQcmdTuples(res)) > 0;
    PQclear(res);
    if (moved) {
        snprintf(detail, sizeof detail,
                 "{\"conversation_id\":%" PRId64 ",\"seq\":%" PRId64 "}",
                 conv_id, target);
        if (store_pg_event(sp, "message_read", user_id, detail, now) !=
            STORE_OK)
            goto fail;
        if (read_seq != NULL)
            *read_seq = target;
    } else {
        p.n = 2;
        res = store_pg_run(sp, SP_READ_GET, &p, "read_marker", 0);
        if (res == NULL)
            goto fail;
        if (PQntuples(res) != 1) {
            PQclear(res);
            store_set_error(s, "read_marker: the membership vanished");
            goto fail;
        }
        if (read_seq != NULL)
            *read_seq = store_pg_int(res, 0, 0);
        PQclear(res);
    }
    if (store_pg_commit(sp) != STORE_OK)
        return STORE_ERR;
    return moved ? STORE_OK : STORE_DUPLICATE;
fail:
    store_pg_rollback(sp);
    return STORE_ERR;
}

static int store_pg_event_add(struct store *s, const char *type,
                              int64_t user_id, const char *detail_json,
                              int64_t now)
{
    return store_pg_event(store_pg_of(s), type, user_id, detail_json, now);
}

/* ---- migrations -------------------------------------------------------- */

static void store_pg_mig_end(struct store *s);

/* Takes the migration lock, waiting for another migrator to finish (the
 * session's timeouts are lifted until mig_end, since a migration may
 * rightly run for long), and creates schema_migrations if missing. */
static int store_pg_mig_begin(struct store *s)
{
    struct store_pg *sp = store_pg_of(s);
    PGresult *res;
    int exists;

    if (store_pg_cmd(sp, STORE_PG_MIGRATE_SQL, "migration session", 1) !=
        STORE_OK)
        return STORE_ERR;
    if (store_pg_do(sp, SP_MIG_LOCK, NULL, "migration lock") != STORE_OK)
        return STORE_ERR;
    /* Looked up before CREATE ... IF NOT EXISTS, which needs the CREATE
     * privilege even when the table exists: a chatd running as a role
     * without it may still check the schema. */
    res = store_pg_run(sp, SP_MIG_EXISTS, NULL, "schema_migrations", 0);
    if (res == NULL)
        goto fail;
    exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!exists && store_pg_cmd(sp, store_pg_mig_table, "schema_migrations",
                                0) != STORE_OK)
        goto fail;
    return STORE_OK;
fail:
    /* migrate.c calls mig_end only after a mig_begin that succeeded. */
    store_pg_mig_end(s);
    return STORE_ERR;
}

static int store_pg_mig_applied(struct store *s, struct store_migration **out,
                                size_t *n)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_migration *v;
    PGresult *res;
    size_t cnt, i;

    *out = NULL;
    *n = 0;
    res = store_pg_run(sp, SP_MIG_LIST, NULL, "schema_migrations", 0);
    if (res == NULL)
        return STORE_ERR;
    cnt = (size_t)PQntuples(res);
    v = xcalloc(cnt ? cnt : 1, sizeof *v);
    for (i = 0; i < cnt; i++) {
        v[i].version = (int)store_pg_int(res, (int)i, 0);
        store_pg_copy(res, (int)i, 1, v[i].name, sizeof v[i].name);
        store_pg_copy(res, (int)i, 2, v[i].checksum, sizeof v[i].checksum);
        v[i].applied_at = store_pg_int(res, (int)i, 3);
        v[i].dirty = (int)store_pg_int(res, (int)i, 4);
    }
    PQclear(res);
    *out = v;
    *n = cnt;
    return STORE_OK;
}

/* Records or forgets version m inside the open transaction. */
static int store_pg_mig_record(struct store_pg *sp,
                               const struct store_migration *m, int up)
{
    struct store_pg_params p = { 0 };

    store_pg_p_int(&p, m->version);
    if (up) {
        store_pg_p_text(&p, m->name);
        store_pg_p_text(&p, m->checksum);
        store_pg_p_int(&p, util_now_ms());
    }
    return store_pg_do(sp, up ? SP_MIG_RECORD : SP_MIG_DELETE, &p,
                       "schema_migrations");
}

/* Marks m dirty after a failed run, on its own (autocommit): 1 when an
 * up failed, 2 when a down failed. */
static void store_pg_mig_mark_dirty(struct store_pg *sp,
                                    const struct store_migration *m, int up)
{
    struct store_pg_params p = { 0 };
    char err[STORE_ERRLEN];
    PGresult *res;

    /* The error that got us here is what the operator must see. */
    memcpy(err, sp->base.errstr, sizeof err);
    store_pg_p_int(&p, m->version);
    store_pg_p_text(&p, m->name);
    store_pg_p_text(&p, m->checksum);
    store_pg_p_int(&p, util_now_ms());
    store_pg_p_int(&p, up ? 1 : 2);
    res = store_pg_run(sp, SP_MIG_MARK_DIRTY, &p, "schema_migrations", 0);
    PQclear(res);
    memcpy(sp->base.errstr, err, sizeof err);
}

/* Whether version is recorded (clean or dirty): 1 yes, 0 no, -1 failure. */
static int store_pg_mig_recorded(struct store_pg *sp, int version)
{
    struct store_pg_params p = { 0 };
    PGresult *res;
    int found;

    store_pg_p_int(&p, version);
    res = store_pg_run(sp, SP_MIG_FIND, &p, "schema_migrations", 0);
    if (res == NULL)
        return -1;
    found = PQntuples(res) > 0;
    PQclear(res);
    return found;
}

/* Runs a file's SQL through the simple query protocol, which takes many
 * statements at once. */
static int store_pg_mig_exec(struct store_pg *sp, const char *sql)
{
    PGresult *res;
    int ok;

    if (store_pg_ready(sp) != STORE_OK)
        return STORE_ERR;
    res = PQexec(sp->conn, sql);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK ||
         PQresultStatus(res) == PGRES_TUPLES_OK ||
         PQresultStatus(res) == PGRES_EMPTY_QUERY;
    if (!ok)
        store_pg_fail(sp, "migration", res);
    PQclear(res);
    /* PQexec returns the last result; drain any the server still sends. */
    while ((res = PQgetResult(sp->conn)) != NULL)
        PQclear(res);
    return ok ? STORE_OK : STORE_ERR;
}

/* Where the statement that starts at sql ends: past its ';' or at the
 * end. Knows quotes, quoted identifiers, E'' strings, dollar quotes and
 * both kinds of comments, so a ';' inside them does not split. */
static const char *store_pg_stmt_end(const char *sql)
{
    const char *p = sql;
    int depth;

    while (*p != '\0') {
        if (*p == ';')
            return p + 1;
        if (p[0] == '-' && p[1] == '-') {
            while (*p != '\0' && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            for (depth = 1, p += 2; *p != '\0' && depth > 0;) {
                if (p[0] == '/' && p[1] == '*') {
                    depth++;
                    p += 2;
                } else if (p[0] == '*' && p[1] == '/') {
                    depth--;
                    p += 2;
                } else {
                    p++;
                }
            }
        } else if (*p == '\'' || *p == '"') {
            char q = *p;
            int esc = q == '\'' && p > sql && (p[-1] == 'E' || p[-1] == 'e');

            for (p++; *p != '\0'; p++) {
                if (esc && *p == '\\' && p[1] != '\0') {
                    p++;
                } else if (*p == q) {
                    if (p[1] == q)
                        p++;        /* a doubled quote */
                    else
                        break;
                }
            }
            if (*p != '\0')
                p++;
        } else if (*p == '$') {
            const char *t = p + 1;
            size_t len;
            const char *close;

            while (*t == '_' || (*t >= 'a' && *t <= 'z') ||
                   (*t >= 'A' && *t <= 'Z') || (*t >= '0' && *t <= '9'))
                t++;
            if (*t != '$' || (t > p + 1 && p[1] >= '0' && p[1] <= '9')) {
                p++;                /* $1, or a $ inside a name */
                continue;
            }
            len = (size_t)(t - p + 1);  /* "$tag$" */
            close = t + 1;
            while (*close != '\0' && strncmp(close, p, len) != 0)
                close++;
            p = *close != '\0' ? close + len : close;
        } else {
            p++;
        }
    }
    return p;
}

/* Whether [s, e) holds only blanks and comments. */
static int store_pg_stmt_empty(const char *s, const char *e)
{
    while (s < e) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' ||
            *s == ';') {
            s++;
        } else if (s[0] == '-' && s + 1 < e && s[1] == '-') {
            while (s < e && *s != '\n')
                s++;
        } else if (s[0] == '/' && s + 1 < e && s[1] == '*') {
            const char *c = strstr(s + 2, "*/");
            if (c == NULL || c + 2 > e)
                return 1;
            s = c + 2;
        } else {
            return 0;
        }
    }
    return 1;
}

/* A file marked "-- chatd:no-transaction" (CREATE INDEX CONCURRENTLY,
 * VACUUM): each statement on its own, since several statements in one
 * query string would run as one implicit transaction. */
static int store_pg_mig_exec_each(struct store_pg *sp, const char *sql)
{
    const char *p = sql;

    while (*p != '\0') {
        const char *e = store_pg_stmt_end(p);

        if (!store_pg_stmt_empty(p, e)) {
            char *one = xstrndup(p, (size_t)(e - p));
            int rc = store_pg_mig_exec(sp, one);

            free(one);
            if (rc != STORE_OK)
                return STORE_ERR;
        }
        p = e;
    }
    return STORE_OK;
}

static int store_pg_mig_apply(struct store *s, const struct store_migration *m,
                              const char *sql, int up)
{
    struct store_pg *sp = store_pg_of(s);
    int recorded;

    if (m->no_transaction) {
        /* If it fails halfway only the dirty mark is left: the operator
         * sees which statements ran from the file and the server log. */
        if (store_pg_mig_exec_each(sp, sql) != STORE_OK)
            goto failed;
        if (store_pg_begin(sp) != STORE_OK)
            goto failed;
        if (store_pg_mig_record(sp, m, up) != STORE_OK) {
            store_pg_rollback(sp);
            goto failed;
        }
        if (store_pg_commit(sp) != STORE_OK)
            goto failed;
        return STORE_OK;
    }

    if (store_pg_begin(sp) != STORE_OK)
        return STORE_ERR;
    /* Under the advisory lock nobody else migrates; this guards against
     * a migrator of a chatd that predates the lock. */
    recorded = store_pg_mig_recorded(sp, m->version);
    if (recorded < 0 || recorded == up) {
        if (recorded >= 0)
            store_set_error(s, "migration %d was %s by another process "
                            "meanwhile", m->version,
                            up ? "applied" : "reverted");
        store_pg_rollback(sp);
        return recorded < 0 ? STORE_ERR : (up ? STORE_CONFLICT
                                              : STORE_NOTFOUND);
    }
    if (store_pg_mig_exec(sp, sql) != STORE_OK)
        goto failed;
    if (PQtransactionStatus(sp->conn) != PQTRANS_INTRANS) {
        store_set_error(s, "the migration file ended the transaction "
                        "itself (COMMIT or ROLLBACK in it); it must not");
        goto failed;
    }
    if (store_pg_mig_record(sp, m, up) != STORE_OK)
        goto failed;
    if (store_pg_commit(sp) != STORE_OK)
        goto failed;
    return STORE_OK;

failed:
    store_pg_rollback(sp);
    store_pg_mig_mark_dirty(sp, m, up);
    return STORE_ERR;
}

static int store_pg_mig_clear_dirty(struct store *s, int version)
{
    struct store_pg *sp = store_pg_of(s);
    struct store_pg_params p = { 0 };
    PGresult *res;
    int changed = 0;

    if (store_pg_begin(sp) != STORE_OK)
        return STORE_ERR;
    store_pg_p_int(&p, version);
    res = store_pg_run(sp, SP_MIG_CLEAR_UP, &p, "schema_migrations", 0);
    if (res == NULL)
        goto fail;
    changed += atoi(PQcmdTuples(res));
    PQclear(res);
    res = store_pg_run(sp, SP_MIG_CLEAR_DOWN, &p, "schema_migrations", 0);
    if (res == NULL)
        goto fail;
    changed += atoi(PQcmdTuples(res));
    PQclear(res);
    if (store_pg_commit(sp) != STORE_OK)
        return STORE_ERR;
    return changed > 0 ? STORE_OK : STORE_NOTFOUND;
fail:
    store_pg_rollback(sp);
    return STORE_ERR;
}

/* Releases the lock and puts the serving timeouts back. A connection
 * that broke meanwhile released the lock with it. */
static void store_pg_mig_end(struct store *s)
{
    struct store_pg *sp = store_pg_of(s);
    char err[STORE_ERRLEN];
    PGresult *res;

    memcpy(err, s->errstr, sizeof err);
    store_pg_rollback(sp);
    if (sp->conn != NULL && PQstatus(sp->conn) == CONNECTION_OK) {
        res = store_pg_run(sp, SP_MIG_UNLOCK, NULL, "migration lock", 0);
        PQclear(res);
        store_pg_cmd(sp, STORE_PG_SERVE_SQL, "session", 0);
    }
    memcpy(s->errstr, err, sizeof err);
}

static const struct store_ops store_pg_ops = {
    .name = "postgres",
    .close = store_pg_close,
    .ping = store_pg_ping,
    .user_create = store_pg_user_create,
    .user_by_name = store_pg_user_by_name,
    .user_set_throttle = store_pg_user_set_throttle,
    .users_by_prefix = store_pg_users_by_prefix,
    .users_by_names = store_pg_users_by_names,
    .session_create = store_pg_session_create,
    .session_lookup = store_pg_session_lookup,
    .session_delete = store_pg_session_delete,
    .conv_create = store_pg_conv_create,
    .conv_list = store_pg_conv_list,
    .conv_member = store_pg_conv_member,
    .conv_member_ids = store_pg_conv_member_ids,
    .user_contacts = store_pg_user_contacts,
    .query_rows = store_pg_query_rows,
    .history = store_pg_history,
    .send_batch = store_pg_send_batch,
    .read_marker = store_pg_read_marker,
    .event_add = store_pg_event_add,
    .mig_begin = store_pg_mig_begin,
    .mig_applied = store_pg_mig_applied,
    .mig_apply = store_pg_mig_apply,
    .mig_clear_dirty = store_pg_mig_clear_dirty,
    .mig_end = store_pg_mig_end,
};

struct store *store_pg_open(const char *conninfo, char *err, size_t errlen)
{
    struct store_pg *sp;
    PGconn *conn;

    conn = store_pg_connect(conninfo, err, errlen);
    if (conn == NULL)
        return NULL;
    sp = xcalloc(1, sizeof *sp);
    sp->base.ops = &store_pg_ops;
    sp->conn = conn;
    sp->conninfo = xstrdup(conninfo);
    sp->rng = (uint64_t)util_mono_ns() ^ ((uint64_t)getpid() << 32) ^
              (uint64_t)(uintptr_t)sp;
    if (sp->rng == 0)
        sp->rng = 0x9e3779b97f4a7c15ULL;
    return &sp->base;
}
