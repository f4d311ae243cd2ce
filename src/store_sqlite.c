/*
 * store_sqlite.c - the SQLite backend of the storage interface, the
 * embedded default: one database file, no server to run.
 *
 * Design: one struct store_sqlite is one sqlite3 connection, opened with
 * SQLITE_OPEN_NOMUTEX because exactly one thread owns it (store.h). The
 * file runs in WAL mode so the reader threads' connections never wait for
 * the writer, with synchronous=FULL because an ack promises durability:
 * a COMMIT that returned is on disk. Every statement is prepared once per
 * connection, on first use (the schema may not exist yet when the
 * connection opens, as for `chatd migrate up`), and reused with
 * sqlite3_reset; every value is bound, none is spliced into SQL. Writes
 * take BEGIN IMMEDIATE so that a transaction never has to upgrade a read
 * lock halfway (which in WAL mode fails with SQLITE_BUSY at once instead
 * of waiting out busy_timeout).
 *
 * Threads: every function runs on the thread that opened the connection.
 */
#include "store.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"

#define STORE_SQLITE_BUSY_MS 5000
/* WAL pages before a checkpoint (SQLite's default is 1000, 4 MB). Under a
 * steady stream of sends the index pages every batch dirties are spread
 * over the whole file; checkpointing ten times less often writes a page
 * dirtied by many batches back once instead of many times. The store
 * thread's connection leaves checkpoints to a thread of its own (see
 * "The checkpointer"); the other connections keep SQLite's automatic
 * checkpoint at this size, as a backstop. */
#define STORE_SQLITE_CHECKPOINT_PAGES 10000
/* After a checkpoint that could copy nothing new (readers still need the
 * frames), the checkpointer waits this long before it tries again. */
#define STORE_SQLITE_CHECKPOINT_GAP_MS 20
#define STORE_SQLITE_STR2(x) #x
#define STORE_SQLITE_STR(x) STORE_SQLITE_STR2(x)
/* The page cache of the connection that stores messages, in KiB (SQLite's
 * default is 2 MiB): the index pages new messages go to stay in memory
 * instead of being read again for every batch. Only the store thread's
 * connection gets it. */
#define STORE_SQLITE_WRITER_CACHE_KIB 65536
#define STORE_SQLITE_BODY_MAX 16384

/* The statements of a connection, prepared on first use. */
enum store_sqlite_sid {
    SS_BEGIN,
    SS_BEGIN_READ,
    SS_COMMIT,
    SS_PING,
    SS_USER_INSERT,
    SS_USER_BY_KEY,
    SS_USER_BRIEF_BY_KEY,
    SS_USER_THROTTLE,
    SS_USERS_RANGE,
    SS_USERS_FROM,
    SS_SESSION_INSERT,
    SS_SESSION_LOOKUP,
    SS_SESSION_DELETE,
    SS_CONV_BY_DIRECT_KEY,
    SS_CONV_INSERT,
    SS_MEMBER_INSERT,
    SS_CONV_GET,
    SS_CONV_MEMBERS,
    SS_CONV_LIST,
    SS_MSG_BY_SEQ,
    SS_CONV_MEMBER,
    SS_MEMBER_IDS,
    SS_CONTACTS,
    SS_HISTORY_BACK,
    SS_HISTORY_ON,
    SS_MSG_BY_CLIENT_ID,
    SS_SEND_CHECK,
    SS_CONV_BUMP,
    SS_MSG_INSERT,
    SS_READ_ADVANCE,
    SS_READ_GET,
    SS_EVENT_INSERT,
    SS_MIG_LIST,
    SS_MIG_FIND,
    SS_MIG_RECORD,
    SS_MIG_DELETE,
    SS_MIG_MARK_DIRTY,
    SS_MIG_CLEAR_UP,
    SS_MIG_CLEAR_DOWN,
    SS__COUNT
};

/* The columns of a message, in the order store_sqlite_msg_read() reads. */
#define SS_MSG_COLS \
    "m.id, m.conversation_id, m.seq, m.sender_id, u.username, " \
    "m.client_msg_id, m.body, m.created_at"

static const char *const store_sqlite_sql[SS__COUNT] = {
    [SS_BEGIN] = "BEGIN IMMEDIATE",
    /* A deferred transaction: one consistent snapshot for a multi-query
     * read, without taking the write lock. */
    [SS_BEGIN_READ] = "BEGIN",
    [SS_COMMIT] = "COMMIT",
    [SS_PING] = "SELECT 1",

    [SS_USER_INSERT] =
        "INSERT INTO users (username, username_key, password_hash, "
        "failed_logins, locked_until, created_at) "
        "VALUES (?1, ?2, ?3, 0, 0, ?4)",
    [SS_USER_BY_KEY] =
        "SELECT id, username, password_hash, failed_logins, locked_until "
        "FROM users WHERE username_key = ?1",
    [SS_USER_BRIEF_BY_KEY] =
        "SELECT id, username FROM users WHERE username_key = ?1",
    [SS_USER_THROTTLE] =
        "UPDATE users SET failed_logins = ?2, locked_until = ?3 "
        "WHERE id = ?1",
    /* Prefix search as a key range, so it walks the UNIQUE index instead
     * of scanning (LIKE would not use it). */
    [SS_USERS_RANGE] =
        "SELECT id, username FROM users "
        "WHERE username_key >= ?1 AND username_key < ?2 "
        "ORDER BY username_key LIMIT ?3",
    [SS_USERS_FROM] =
        "SELECT id, username FROM users WHERE username_key >= ?1 "
        "ORDER BY username_key LIMIT ?2",

    [SS_SESSION_INSERT] =
        "INSERT INTO sessions (user_id, token_hash, created_at, expires_at) "
        "VALUES (?1, ?2, ?3, ?4)",
    [SS_SESSION_LOOKUP] =
        "SELECT s.id, s.user_id, u.username, s.expires_at "
        "FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token_hash = ?1 AND s.expires_at > ?2",
    [SS_SESSION_DELETE] =
        "DELETE FROM sessions WHERE id = ?1 RETURNING user_id",

    [SS_CONV_BY_DIRECT_KEY] =
        "SELECT id FROM conversations WHERE direct_key = ?1",
    [SS_CONV_INSERT] =
        "INSERT INTO conversations (kind, title, direct_key, created_by, "
        "created_at, last_seq, last_activity) "
        "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5) RETURNING id",
    [SS_MEMBER_INSERT] =
        "INSERT INTO conversation_members (conversation_id, user_id, "
        "read_seq, joined_at) VALUES (?1, ?2, 0, ?3)",
    [SS_CONV_GET] =
        "SELECT c.kind, c.title, c.last_seq, c.last_activity, m.read_seq "
        "FROM conversations c LEFT JOIN conversation_members m "
        "ON m.conversation_id = c.id AND m.user_id = ?2 WHERE c.id = ?1",
    [SS_CONV_MEMBERS] =
        "SELECT u.id, u.username FROM conversation_members m "
        "JOIN users u ON u.id = m.user_id "
        "WHERE m.conversation_id = ?1 ORDER BY m.user_id",
    [SS_CONV_LIST] =
        "SELECT c.id, c.kind, c.title, c.last_seq, c.last_activity, "
        "m.read_seq FROM conversation_members m "
        "JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.user_id = ?1 ORDER BY c.last_activity DESC, c.id DESC",
    [SS_MSG_BY_SEQ] =
        "SELECT " SS_MSG_COLS " FROM messages m "
        "JOIN users u ON u.id = m.sender_id "
        "WHERE m.conversation_id = ?1 AND m.seq = ?2",
    [SS_CONV_MEMBER] =
        "SELECT c.last_seq, m.user_id FROM conversations c "
        "LEFT JOIN conversation_members m "
        "ON m.conversation_id = c.id AND m.user_id = ?2 WHERE c.id = ?1",
    [SS_MEMBER_IDS] =
        "SELECT user_id FROM conversation_members "
        "WHERE conversation_id = ?1 ORDER BY user_id",
    /* Everyone in a conversation with the user: the user's memberships by
     * (user_id, conversation_id), then each one's members by the key. */
    [SS_CONTACTS] =
        "SELECT DISTINCT o.user_id FROM conversation_members m "
        "JOIN conversation_members o ON o.conversation_id = m.conversation_id "
        "WHERE m.user_id = ?1 AND o.user_id <> ?1 ORDER BY o.user_id",
    /* History pages on UNIQUE (conversation_id, seq). Paging back reads
     * newest first and the page is reversed in C; one row past the limit
     * tells whether there is more. */
    [SS_HISTORY_BACK] =
        "SELECT " SS_MSG_COLS " FROM messages m "
        "JOIN users u ON u.id = m.sender_id "
        "WHERE m.conversation_id = ?1 AND m.seq > ?2 AND m.seq < ?3 "
        "ORDER BY m.seq DESC LIMIT ?4",
    [SS_HISTORY_ON] =
        "SELECT " SS_MSG_COLS " FROM messages m "
        "JOIN users u ON u.id = m.sender_id "
        "WHERE m.conversation_id = ?1 AND m.seq > ?2 AND m.seq < ?3 "
        "ORDER BY m.seq ASC LIMIT ?4",

    [SS_MSG_BY_CLIENT_ID] =
        "SELECT " SS_MSG_COLS " FROM messages m "
        "JOIN users u ON u.id = m.sender_id "
        "WHERE m.sender_id = ?1 AND m.client_msg_id = ?2",
    /* Existence, membership and the sender's name in one look-up. */
    [SS_SEND_CHECK] =
        "SELECT u.username FROM conversations c "
        "LEFT JOIN conversation_members m "
        "ON m.conversation_id = c.id AND m.user_id = ?2 "
        "LEFT JOIN users u ON u.id = m.user_id WHERE c.id = ?1",
    /* The per-conversation counter: the write lock held by BEGIN
     * IMMEDIATE makes the bump and the insert one step, so seqs have no
     * gaps. last_activity never moves back if a clock does. */
    [SS_CONV_BUMP] =
        "UPDATE conversations SET last_seq = last_seq + 1, "
        "last_activity = max(last_activity, ?2) WHERE id = ?1 "
        "RETURNING last_seq",
    [SS_MSG_INSERT] =
        "INSERT INTO messages (conversation_id, seq, sender_id, "
        "client_msg_id, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
        "RETURNING id",
    [SS_READ_ADVANCE] =
        "UPDATE conversation_members SET read_seq = ?3 "
        "WHERE conversation_id = ?1 AND user_id = ?2 AND read_seq < ?3",
    [SS_READ_GET] =
        "SELECT read_seq FROM conversation_members "
        "WHERE conversation_id = ?1 AND user_id = ?2",

    [SS_EVENT_INSERT] =
        "INSERT INTO events (created_at, type, user_id, detail) "
        "VALUES (?1, ?2, ?3, ?4)",

    [SS_MIG_LIST] =
        "SELECT version, name, checksum, applied_at, dirty "
        "FROM schema_migrations ORDER BY version",
    [SS_MIG_FIND] =
        "SELECT dirty FROM schema_migrations WHERE version = ?1",
    [SS_MIG_RECORD] =
        "INSERT INTO schema_migrations (version, name, checksum, "
        "applied_at, dirty) VALUES (?1, ?2, ?3, ?4, 0)",
    [SS_MIG_DELETE] =
        "DELETE FROM schema_migrations WHERE version = ?1",
    /* dirty = 1: an up that failed (the version is not applied);
     * dirty = 2: a down that failed (the version is still applied). */
    [SS_MIG_MARK_DIRTY] =
        "INSERT INTO schema_migrations (version, name, checksum, "
        "applied_at, dirty) VALUES (?1, ?2, ?3, ?4, ?5) "
        "ON CONFLICT (version) DO UPDATE SET dirty = excluded.dirty",
    [SS_MIG_CLEAR_UP] =
        "DELETE FROM schema_migrations WHERE version = ?1 AND dirty = 1",
    [SS_MIG_CLEAR_DOWN] =
        "UPDATE schema_migrations SET dirty = 0 "
        "WHERE version = ?1 AND dirty = 2",
};

struct store_sqlite {
    struct store base;          /* first: a struct store * points here */
    sqlite3 *db;
    sqlite3_stmt *stmt[SS__COUNT]; /* prepared on first use, else NULL */
    int ext;                    /* extended code of the last failure */
    int writer;                 /* has stored messages: the large cache is set */
    struct store_sqlite_ckpt *ckpt; /* the writer's checkpointer, or NULL */
};

/* ---- the checkpointer --------------------------------------------------
 *
 * In WAL mode a commit that finds the WAL over the threshold copies it back
 * into the database file (and fsyncs it) before it returns: the send batch
 * that happens to commit then waits for the whole checkpoint, and so do
 * the acks of every send queued behind it. The connection that stores
 * messages hands checkpoints to a thread with a connection of its own
 * instead: its commits only signal (the WAL hook), and the thread runs
 * PASSIVE checkpoints, which never block a writer.
 *
 * The WAL starts over only at a write that finds all of it copied, which
 * a background checkpoint never achieves while sends keep coming: each
 * pass copies what was there when it began. So once the thread has copied
 * all but the last STORE_SQLITE_CATCHUP_PAGES (plus two commits' worth, as
 * a pass cannot copy the commit being written), the writer copies that
 * small rest itself, after its commit, and its next transaction starts the
 * WAL over. If the thread falls behind anyway, the writer checkpoints
 * whatever the WAL holds at STORE_SQLITE_WAL_MAX_PAGES: the WAL is bounded
 * whatever the load. */
#define STORE_SQLITE_CATCHUP_PAGES 256
#define STORE_SQLITE_WAL_MAX_PAGES (STORE_SQLITE_CHECKPOINT_PAGES * 4)

struct store_sqlite_ckpt {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending;                /* the WAL passed the threshold */
    int stop;
    int log, copied;            /* the last pass: WAL frames, frames copied */
    int last_pages;             /* the WAL at the writer's previous commit */
    sqlite3 *db;
};

static void *store_sqlite_ckpt_main(void *arg)
{
    struct store_sqlite_ckpt *k = arg;

    pthread_mutex_lock(&k->lock);
    for (;;) {
        int rc, wal = 0, copied = 0, progress;

        while (!k->pending && !k->stop)
            pthread_cond_wait(&k->cond, &k->lock);
        if (k->stop)
            break;
        k->pending = 0;
        pthread_mutex_unlock(&k->lock);
        rc = sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                       &wal, &copied);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            log_event(LOG_WARN, "db_checkpoint_failed", NULL,
                      LOG_STR("error", sqlite3_errmsg(k->db)), LF_END);
        pthread_mutex_lock(&k->lock);
        /* Passes follow each other at once while they make progress: the
         * less each leaves behind, the less the writer copies itself. */
        progress = rc == SQLITE_OK && wal >= k->log && copied > k->copied;
        k->log = rc == SQLITE_OK ? wal : 0;
        k->copied = rc == SQLITE_OK ? copied : 0;
        if (!progress) {
            pthread_mutex_unlock(&k->lock);
            nanosleep(&(struct timespec){ 0, STORE_SQLITE_CHECKPOINT_GAP_MS *
                                                 1000000L }, NULL);
            pthread_mutex_lock(&k->lock);
        }
    }
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

/* After each commit of the writer, with the WAL's size in pages. */
static int store_sqlite_wal_hook(void *arg, sqlite3 *db, const char *name,
                                 int pages)
{
    struct store_sqlite_ckpt *k = arg;
    int catch_up, commit;

    /* the frames this commit added (the WAL may have started over) */
    commit = pages > k->last_pages ? pages - k->last_pages : pages;
    k->last_pages = pages;
    if (pages < STORE_SQLITE_CHECKPOINT_PAGES)
        return SQLITE_OK;
    pthread_mutex_lock(&k->lock);
    /* A pass of this WAL (not of one before it started over) that left
     * little behind; or a WAL that grew too large. */
    catch_up = (k->log > 0 && k->log <= pages &&
                pages - k->copied <= STORE_SQLITE_CATCHUP_PAGES + 2 * commit) ||
               pages >= STORE_SQLITE_WAL_MAX_PAGES;
    if (catch_up) {
        k->log = k->copied = 0;
    } else if (!k->pending) {
        k->pending = 1;
        pthread_cond_signal(&k->cond);
    }
    pthread_mutex_unlock(&k->lock);
    if (catch_up)
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL,
                                  NULL);
    return SQLITE_OK;
}

/* Starts the checkpointer of a file database; NULL (SQLite's automatic
 * checkpoint stays) for an in-memory one or when it cannot start. */
static struct store_sqlite_ckpt *store_sqlite_ckpt_start(sqlite3 *writer)
{
    const char *path = sqlite3_db_filename(writer, "main");
    struct store_sqlite_ckpt *k;

    if (path == NULL || path[0] == '\0')
        return NULL;
    k = xcalloc(1, sizeof *k);
    if (sqlite3_open_v2(path, &k->db, SQLITE_OPEN_READWRITE |
                                          SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK ||
        /* a connection that has not read the file yet has no WAL open */
        sqlite3_exec(k->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) !=
            SQLITE_OK) {
        sqlite3_close(k->db);
        free(k);
        return NULL;
    }
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    if (pthread_create(&k->thread, NULL, store_sqlite_ckpt_main, k) != 0) {
        pthread_mutex_destroy(&k->lock);
        pthread_cond_destroy(&k->cond);
        sqlite3_close(k->db);
        free(k);
        return NULL;
    }
    sqlite3_wal_hook(writer, store_sqlite_wal_hook, k);
    return k;
}

static void store_sqlite_ckpt_stop(sqlite3 *writer,
                                   struct store_sqlite_ckpt *k)
{
    if (k == NULL)
        return;
    sqlite3_wal_hook(writer, NULL, NULL);
    pthread_mutex_lock(&k->lock);
    k->stop = 1;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->lock);
    pthread_join(k->thread, NULL);
    pthread_mutex_destroy(&k->lock);
    pthread_cond_destroy(&k->cond);
    sqlite3_close(k->db);
    free(k);
}

static struct store_sqlite *store_sqlite_of(struct store *s)
{
    return (struct store_sqlite *)s;
}

/* Copies the connection's error at once: the next call overwrites it. */
static int store_sqlite_fail(struct store_sqlite *ss, const char *what)
{
    ss->ext = sqlite3_extended_errcode(ss->db);
    store_set_error(&ss->base, "sqlite: %s: %s", what, sqlite3_errmsg(ss->db));
    return STORE_ERR;
}

/* The cached statement sid, reset with no bindings, ready to bind; NULL
 * (errstr set) when it cannot be prepared, for instance because the
 * schema has not been migrated yet. */
static sqlite3_stmt *store_sqlite_stmt(struct store_sqlite *ss,
                                       enum store_sqlite_sid sid)
{
    sqlite3_stmt *st = ss->stmt[sid];

    if (st == NULL) {
        if (sqlite3_prepare_v3(ss->db, store_sqlite_sql[sid], -1,
                               SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
            SQLITE_OK) {
            store_sqlite_fail(ss, "prepare");
            return NULL;
        }
        ss->stmt[sid] = st;
        return st;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Runs a statement that returns no rows (or whose rows are not needed).
 * Resets it after, so it holds no lock. */
static int store_sqlite_exec(struct store_sqlite *ss, sqlite3_stmt *st,
                             const char *what)
{
    int rc = sqlite3_step(st);

    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        store_sqlite_fail(ss, what);
        sqlite3_reset(st);
        return STORE_ERR;
    }
    sqlite3_reset(st);
    return STORE_OK;
}

/* Steps a statement expected to give at most one row: STORE_OK with the
 * row current, STORE_NOTFOUND (reset) when none, STORE_ERR on failure.
 * The caller resets after reading the row. */
static int store_sqlite_row(struct store_sqlite *ss, sqlite3_stmt *st,
                            const char *what)
{
    int rc = sqlite3_step(st);

    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return STORE_NOTFOUND;
    }
    store_sqlite_fail(ss, what);
    sqlite3_reset(st);
    return STORE_ERR;
}

static int store_sqlite_simple(struct store_sqlite *ss,
                               enum store_sqlite_sid sid, const char *what)
{
    sqlite3_stmt *st = store_sqlite_stmt(ss, sid);

    if (st == NULL)
        return STORE_ERR;
    return store_sqlite_exec(ss, st, what);
}

static int store_sqlite_begin(struct store_sqlite *ss)
{
    return store_sqlite_simple(ss, SS_BEGIN, "begin");
}

static int store_sqlite_begin_read(struct store_sqlite *ss)
{
    return store_sqlite_simple(ss, SS_BEGIN_READ, "begin");
}

/* Ends a transaction without its changes. The error that led here is
 * already in errstr; the rare path needs no cached statement. */
static void store_sqlite_rollback(struct store_sqlite *ss)
{
    if (!sqlite3_get_autocommit(ss->db))  /* SQLite may have done it */
        sqlite3_exec(ss->db, "ROLLBACK", NULL, NULL, NULL);
}

static int store_sqlite_commit(struct store_sqlite *ss)
{
    if (store_sqlite_simple(ss, SS_COMMIT, "commit") == STORE_OK)
        return STORE_OK;
    /* A COMMIT that failed (SQLITE_BUSY) leaves the transaction open. */
    store_sqlite_rollback(ss);
    return STORE_ERR;
}

/* Copies a text column into a fixed buffer of size cap (NUL-terminated,
 * cut if longer: the schema's CHECKs keep stored values within it). */
static void store_sqlite_col_copy(sqlite3_stmt *st, int col, char *out,
                                  size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t len = (size_t)sqlite3_column_bytes(st, col);

    if (t == NULL)
        len = 0;
    if (len >= cap)
        len = cap - 1;
    if (len > 0)
        memcpy(out, t, len);
    out[len] = '\0';
}

/* A heap copy of a text column, or NULL for SQL NULL. */
static char *store_sqlite_col_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *t;

    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return NULL;
    t = sqlite3_column_text(st, col);
    return xstrndup(t ? (const char *)t : "",
                    (size_t)sqlite3_column_bytes(st, col));
}

/* Reads SS_MSG_COLS from the current row, starting at column 0. */
static void store_sqlite_msg_read(sqlite3_stmt *st, struct store_msg *m)
{
    m->message_id = sqlite3_column_int64(st, 0);
    m->conversation_id = sqlite3_column_int64(st, 1);
    m->seq = sqlite3_column_int64(st, 2);
    m->sender_id = sqlite3_column_int64(st, 3);
    store_sqlite_col_copy(st, 4, m->sender, sizeof m->sender);
    store_sqlite_col_copy(st, 5, m->client_msg_id, sizeof m->client_msg_id);
    m->body = store_sqlite_col_dup(st, 6);
    if (m->body == NULL)
        m->body = xstrdup("");
    m->created_at = sqlite3_column_int64(st, 7);
}

/* The case-insensitive key of a username (ASCII is enough: usernames are
 * A-Z a-z 0-9 _ . -). Returns -1 when name is too long to be one. */
static int store_sqlite_key(const char *name, char *key, size_t cap)
{
    size_t i, len = strlen(name);

    if (len >= cap)
        return -1;
    for (i = 0; i < len; i++) {
        char c = name[i];
        key[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    key[len] = '\0';
    return 0;
}

/* A client_msg_id the store can keep: 1 to STORE_CLIENT_MSG_ID_MAX
 * characters (counted as UTF-8 lead bytes), at most 4 bytes each, which
 * is what struct store_msg has room for. Sets *len to its bytes. */
static int store_sqlite_cid_ok(const char *cid, size_t *len)
{
    size_t i, chars = 0;

    *len = cid ? strlen(cid) : 0;
    if (*len < 1 || *len > 4 * STORE_CLIENT_MSG_ID_MAX)
        return 0;
    for (i = 0; i < *len; i++)
        if (((unsigned char)cid[i] & 0xc0) != 0x80)
            chars++;
    return chars >= 1 && chars <= STORE_CLIENT_MSG_ID_MAX;
}

/* SQLite's LIMIT takes a signed 64-bit value; a size_t might not fit. */
static sqlite3_int64 store_sqlite_limit(size_t limit)
{
    if (limit >= (size_t)INT64_MAX)
        return INT64_MAX - 1;
    return (sqlite3_int64)limit;
}

/* Appends an event inside the caller's transaction (or on its own). */
static int store_sqlite_event(struct store_sqlite *ss, const char *type,
                              int64_t user_id, const char *detail,
                              int64_t now)
{
    sqlite3_stmt *st = store_sqlite_stmt(ss, SS_EVENT_INSERT);

    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    if (user_id != 0)
        sqlite3_bind_int64(st, 3, user_id);
    else
        sqlite3_bind_null(st, 3);
    if (detail != NULL)
        sqlite3_bind_text(st, 4, detail, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 4);
    return store_sqlite_exec(ss, st, "event");
}

static void store_sqlite_close(struct store *s)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    size_t i;

    store_sqlite_rollback(ss);
    store_sqlite_ckpt_stop(ss->db, ss->ckpt);
    for (i = 0; i < SS__COUNT; i++)
        sqlite3_finalize(ss->stmt[i]);
    sqlite3_close(ss->db);
    free(ss);
}

static int store_sqlite_ping(struct store *s)
{
    struct store_sqlite *ss = store_sqlite_of(s);

    return store_sqlite_simple(ss, SS_PING, "ping");
}

static int store_sqlite_user_create(struct store *s, const char *username,
                                    const char *password_hash, int64_t now,
                                    int64_t *id)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    char key[STORE_USERNAME_MAX + 1];
    struct util_buf detail = { 0 };
    sqlite3_stmt *st;
    int rc;

    if (store_sqlite_key(username, key, sizeof key) < 0 ||
        strlen(password_hash) >= STORE_HASH_MAX) {
        store_set_error(s, "user_create: username or hash too long");
        return STORE_ERR;
    }
    if (store_sqlite_begin(ss) != STORE_OK)
        return STORE_ERR;
    st = store_sqlite_stmt(ss, SS_USER_INSERT);
    if (st == NULL)
        goto fail;
    sqlite3_bind_text(st, 1, username, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, password_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    if (store_sqlite_exec(ss, st, "user_create") != STORE_OK) {
        store_sqlite_rollback(ss);
        return ss->ext == SQLITE_CONSTRAINT_UNIQUE ? STORE_CONFLICT
                                                   : STORE_ERR;
    }
    *id = sqlite3_last_insert_rowid(ss->db);

    util_buf_puts(&detail, "{\"username\":");
    util_buf_json_str(&detail, username);
    util_buf_puts(&detail, "}");
    rc = store_sqlite_event(ss, "user_registration", *id, detail.data, now);
    util_buf_free(&detail);
    if (rc != STORE_OK)
        goto fail;
    return store_sqlite_commit(ss);
fail:
    store_sqlite_rollback(ss);
    return STORE_ERR;
}

static int store_sqlite_user_by_name(struct store *s, const char *username,
                                     struct store_user *out)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    char key[STORE_USERNAME_MAX + 1];
    sqlite3_stmt *st;
    int rc;

    memset(out, 0, sizeof *out);
    if (store_sqlite_key(username, key, sizeof key) < 0)
        return STORE_NOTFOUND;  /* longer than any name that exists */
    st = store_sqlite_stmt(ss, SS_USER_BY_KEY);
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = store_sqlite_row(ss, st, "user_by_name");
    if (rc != STORE_OK)
        return rc;
    out->id = sqlite3_column_int64(st, 0);
    store_sqlite_col_copy(st, 1, out->username, sizeof out->username);
    store_sqlite_col_copy(st, 2, out->password_hash,
                          sizeof out->password_hash);
    out->failed_logins = sqlite3_column_int(st, 3);
    out->locked_until = sqlite3_column_int64(st, 4);
    sqlite3_reset(st);
    return STORE_OK;
}

static int store_sqlite_user_set_throttle(struct store *s, int64_t user_id,
                                          int failed, int64_t locked_until)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    sqlite3_stmt *st = store_sqlite_stmt(ss, SS_USER_THROTTLE);

    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_int(st, 2, failed);
    sqlite3_bind_int64(st, 3, locked_until);
    if (store_sqlite_exec(ss, st, "user_set_throttle") != STORE_OK)
        return STORE_ERR;
    return sqlite3_changes(ss->db) > 0 ? STORE_OK : STORE_NOTFOUND;
}

/* The smallest string greater than every string that starts with key:
 * key with its last byte below 0xff incremented and what follows dropped.
 * Returns 0, or -1 when there is none (key is all 0xff bytes). */
static int store_sqlite_key_upper(const char *key, char *upper, size_t cap)
{
    size_t len = strlen(key);

    if (len >= cap)
        return -1;
    memcpy(upper, key, len + 1);
    while (len > 0) {
        unsigned char c = (unsigned char)upper[len - 1];
        if (c < 0xff) {
            upper[len - 1] = (char)(c + 1);
            upper[len] = '\0';
            return 0;
        }
        len--;
    }
    return -1;
}

static int store_sqlite_users_by_prefix(struct store *s, const char *prefix,
                                        size_t limit,
                                        struct store_user_brief **out,
                                        size_t *n)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    char key[STORE_USERNAME_MAX + 1], upper[STORE_USERNAME_MAX + 1];
    struct store_user_brief *v = NULL;
    size_t cnt = 0, cap = 0;
    sqlite3_stmt *st;
    int rc;

    *out = NULL;
    *n = 0;
    if (limit == 0 || store_sqlite_key(prefix, key, sizeof key) < 0)
        return STORE_OK;    /* no name is longer than the maximum */
    if (key[0] != '\0' &&
        store_sqlite_key_upper(key, upper, sizeof upper) == 0) {
        st = store_sqlite_stmt(ss, SS_USERS_RANGE);
        if (st == NULL)
            return STORE_ERR;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, upper, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, store_sqlite_limit(limit));
    } else {
        st = store_sqlite_stmt(ss, SS_USERS_FROM);
        if (st == NULL)
            return STORE_ERR;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, store_sqlite_limit(limit));
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[cnt].id = sqlite3_column_int64(st, 0);
        store_sqlite_col_copy(st, 1, v[cnt].username,
                              sizeof v[cnt].username);
        cnt++;
    }
    if (rc != SQLITE_DONE) {
        store_sqlite_fail(ss, "users_by_prefix");
        sqlite3_reset(st);
        free(v);
        return STORE_ERR;
    }
    sqlite3_reset(st);
    *out = v;
    *n = cnt;
    return STORE_OK;
}

static int store_sqlite_users_by_names(struct store *s,
                                       const char *const *names, size_t n,
                                       struct store_user_brief *out,
                                       size_t *missing)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    char key[STORE_USERNAME_MAX + 1];
    size_t i;
    int rc;

    for (i = 0; i < n; i++) {
        sqlite3_stmt *st;

        memset(&out[i], 0, sizeof out[i]);
        if (store_sqlite_key(names[i], key, sizeof key) < 0) {
            *missing = i;
            return STORE_NOTFOUND;
        }
        st = store_sqlite_stmt(ss, SS_USER_BRIEF_BY_KEY);
        if (st == NULL)
            return STORE_ERR;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        rc = store_sqlite_row(ss, st, "users_by_names");
        if (rc == STORE_NOTFOUND)
            *missing = i;
        if (rc != STORE_OK)
            return rc;
        out[i].id = sqlite3_column_int64(st, 0);
        store_sqlite_col_copy(st, 1, out[i].username,
                              sizeof out[i].username);
        sqlite3_reset(st);
    }
    return STORE_OK;
}

static int store_sqlite_session_create(struct store *s, int64_t user_id,
                                       const uint8_t *token_hash, int64_t now,
                                       int64_t expires_at, int64_t *id)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    char detail[64];
    sqlite3_stmt *st;

    if (store_sqlite_begin(ss) != STORE_OK)
        return STORE_ERR;
    st = store_sqlite_stmt(ss, SS_SESSION_INSERT);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_blob(st, 2, token_hash, STORE_TOKEN_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int64(st, 4, expires_at);
    if (store_sqlite_exec(ss, st, "session_create") != STORE_OK) {
        store_sqlite_rollback(ss);
        if (ss->ext == SQLITE_CONSTRAINT_FOREIGNKEY)
            return STORE_NOTFOUND;  /* no such user */
        if (ss->ext == SQLITE_CONSTRAINT_UNIQUE)
            return STORE_CONFLICT;  /* the same token twice */
        return STORE_ERR;
    }
    *id = sqlite3_last_insert_rowid(ss->db);
    snprintf(detail, sizeof detail, "{\"session_id\":%" PRId64 "}", *id);
    if (store_sqlite_event(ss, "user_login", user_id, detail, now) != STORE_OK)
        goto fail;
    return store_sqlite_commit(ss);
fail:
    store_sqlite_rollback(ss);
    return STORE_ERR;
}

static int store_sqlite_session_lookup(struct store *s,
                                       const uint8_t *token_hash, int64_t now,
                                       struct store_session *out)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    sqlite3_stmt *st = store_sqlite_stmt(ss, SS_SESSION_LOOKUP);
    int rc;

    memset(out, 0, sizeof *out);
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_blob(st, 1, token_hash, STORE_TOKEN_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    rc = store_sqlite_row(ss, st, "session_lookup");
    if (rc != STORE_OK)
        return rc;
    out->session_id = sqlite3_column_int64(st, 0);
    out->user_id = sqlite3_column_int64(st, 1);
    store_sqlite_col_copy(st, 2, out->username, sizeof out->username);
    out->expires_at = sqlite3_column_int64(st, 3);
    sqlite3_reset(st);
    return STORE_OK;
}

static int store_sqlite_session_delete(struct store *s, int64_t session_id,
                                       int64_t now)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    char detail[64];
    sqlite3_stmt *st;
    int64_t user_id;
    int rc;

    if (store_sqlite_begin(ss) != STORE_OK)
        return STORE_ERR;
    st = store_sqlite_stmt(ss, SS_SESSION_DELETE);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, session_id);
    rc = store_sqlite_row(ss, st, "session_delete");
    if (rc != STORE_OK) {
        store_sqlite_rollback(ss);
        return rc;
    }
    user_id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    snprintf(detail, sizeof detail, "{\"session_id\":%" PRId64 "}",
             session_id);
    if (store_sqlite_event(ss, "user_logout", user_id, detail, now) !=
        STORE_OK)
        goto fail;
    return store_sqlite_commit(ss);
fail:
    store_sqlite_rollback(ss);
    return STORE_ERR;
}

/* Fills c with conversation conv_id as user_id sees it: members, last
 * message, read_seq (0 if user_id is not a member). Runs inside the
 * caller's transaction. STORE_NOTFOUND if there is no such conversation. */
static int store_sqlite_conv_load(struct store_sqlite *ss, int64_t conv_id,
                                  int64_t user_id, struct store_conv *c)
{
    sqlite3_stmt *st;
    size_t cap = 0;
    int rc;

    memset(c, 0, sizeof *c);
    st = store_sqlite_stmt(ss, SS_CONV_GET);
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, conv_id);
    sqlite3_bind_int64(st, 2, user_id);
    rc = store_sqlite_row(ss, st, "conversation");
    if (rc != STORE_OK)
        return rc;
    c->id = conv_id;
    store_sqlite_col_copy(st, 0, c->kind, sizeof c->kind);
    c->title = store_sqlite_col_dup(st, 1);
    c->last_seq = sqlite3_column_int64(st, 2);
    c->last_activity = sqlite3_column_int64(st, 3);
    c->read_seq = sqlite3_column_int64(st, 4);
    sqlite3_reset(st);

    st = store_sqlite_stmt(ss, SS_CONV_MEMBERS);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, conv_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (c->nmembers == cap) {
            cap = cap ? cap * 2 : 4;
            c->members = xrealloc(c->members, cap * sizeof *c->members);
        }
        c->members[c->nmembers].id = sqlite3_column_int64(st, 0);
        store_sqlite_col_copy(st, 1, c->members[c->nmembers].username,
                              sizeof c->members[c->nmembers].username);
        c->nmembers++;
    }
    if (rc != SQLITE_DONE) {
        store_sqlite_fail(ss, "conversation members");
        sqlite3_reset(st);
        goto fail;
    }
    sqlite3_reset(st);

    if (c->last_seq > 0) {
        st = store_sqlite_stmt(ss, SS_MSG_BY_SEQ);
        if (st == NULL)
            goto fail;
        sqlite3_bind_int64(st, 1, conv_id);
        sqlite3_bind_int64(st, 2, c->last_seq);
        rc = store_sqlite_row(ss, st, "last message");
        if (rc == STORE_ERR)
            goto fail;
        if (rc == STORE_OK) {
            store_sqlite_msg_read(st, &c->last_message);
            c->has_last = 1;
            sqlite3_reset(st);
        }
    }
    return STORE_OK;
fail:
    store_conv_clear(c);
    return STORE_ERR;
}

/* Members are the creator and the others, distinct. */
static int store_sqlite_members_valid(int64_t creator_id,
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

static int store_sqlite_member_add(struct store_sqlite *ss, int64_t conv_id,
                                   int64_t user_id, int64_t now)
{
    sqlite3_stmt *st = store_sqlite_stmt(ss, SS_MEMBER_INSERT);

    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, conv_id);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int64(st, 3, now);
    if (store_sqlite_exec(ss, st, "conversation member") != STORE_OK)
        return ss->ext == SQLITE_CONSTRAINT_FOREIGNKEY ? STORE_NOTFOUND
                                                       : STORE_ERR;
    return STORE_OK;
}

static int store_sqlite_conv_create(struct store *s, int64_t creator_id,
                                    const int64_t *member_ids, size_t n,
                                    const char *title, int64_t now,
                                    struct store_conv *out, int *created)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    const char *kind = n == 1 ? "direct" : "group";
    char direct_key[48], detail[128];
    sqlite3_stmt *st;
    int64_t conv_id;
    size_t i;
    int rc;

    memset(out, 0, sizeof *out);
    *created = 0;
    if (!store_sqlite_members_valid(creator_id, member_ids, n)) {
        store_set_error(s, "conv_create: members must be distinct others "
                        "than the creator, at least one");
        return STORE_ERR;
    }
    if (store_sqlite_begin(ss) != STORE_OK)
        return STORE_ERR;
    if (n == 1) {
        int64_t lo = creator_id < member_ids[0] ? creator_id : member_ids[0];
        int64_t hi = creator_id < member_ids[0] ? member_ids[0] : creator_id;

        snprintf(direct_key, sizeof direct_key, "%" PRId64 ":%" PRId64, lo,
                 hi);
        st = store_sqlite_stmt(ss, SS_CONV_BY_DIRECT_KEY);
        if (st == NULL)
            goto fail;
        sqlite3_bind_text(st, 1, direct_key, -1, SQLITE_STATIC);
        rc = store_sqlite_row(ss, st, "conv_create");
        if (rc == STORE_ERR)
            goto fail;
        if (rc == STORE_OK) {
            conv_id = sqlite3_column_int64(st, 0);
            sqlite3_reset(st);
            rc = store_sqlite_conv_load(ss, conv_id, creator_id, out);
            if (rc != STORE_OK)
                goto fail;
            if (store_sqlite_commit(ss) != STORE_OK) {
                store_conv_clear(out);
                return STORE_ERR;
            }
            return STORE_OK;
        }
    }

    st = store_sqlite_stmt(ss, SS_CONV_INSERT);
    if (st == NULL)
        goto fail;
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    if (title != NULL)
        sqlite3_bind_text(st, 2, title, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    if (n == 1)
        sqlite3_bind_text(st, 3, direct_key, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_int64(st, 4, creator_id);
    sqlite3_bind_int64(st, 5, now);
    rc = store_sqlite_row(ss, st, "conv_create");
    if (rc != STORE_OK) {
        store_sqlite_rollback(ss);
        if (rc == STORE_NOTFOUND) {
            store_set_error(s, "conv_create: insert returned no id");
            return STORE_ERR;
        }
        /* An unknown creator fails the foreign key. */
        return ss->ext == SQLITE_CONSTRAINT_FOREIGNKEY ? STORE_NOTFOUND
                                                       : STORE_ERR;
    }
    conv_id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);

    rc = store_sqlite_member_add(ss, conv_id, creator_id, now);
    for (i = 0; rc == STORE_OK && i < n; i++)
        rc = store_sqlite_member_add(ss, conv_id, member_ids[i], now);
    if (rc != STORE_OK) {
        store_sqlite_rollback(ss);
        return rc;          /* STORE_NOTFOUND: an unknown user id */
    }
    snprintf(detail, sizeof detail,
             "{\"conversation_id\":%" PRId64 ",\"kind\":\"%s\","
             "\"members\":%zu}", conv_id, kind, n + 1);
    if (store_sqlite_event(ss, "conversation_created", creator_id, detail,
                           now) != STORE_OK)
        goto fail;
    if (store_sqlite_conv_load(ss, conv_id, creator_id, out) != STORE_OK)
        goto fail;
    if (store_sqlite_commit(ss) != STORE_OK) {
        store_conv_clear(out);
        return STORE_ERR;
    }
    *created = 1;
    return STORE_OK;
fail:
    store_sqlite_rollback(ss);
    return STORE_ERR;
}

static int store_sqlite_conv_list(struct store *s, int64_t user_id,
                                  struct store_conv **out, size_t *n)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    struct store_conv *v = NULL;
    int64_t *ids = NULL;
    size_t cnt = 0, cap = 0, i;
    sqlite3_stmt *st;
    int rc;

    *out = NULL;
    *n = 0;
    if (store_sqlite_begin_read(ss) != STORE_OK)
        return STORE_ERR;
    /* The ids first, in order; then each conversation in full. The list
     * query is not kept open while the others run. */
    st = store_sqlite_stmt(ss, SS_CONV_LIST);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, user_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            ids = xrealloc(ids, cap * sizeof *ids);
        }
        ids[cnt++] = sqlite3_column_int64(st, 0);
    }
    if (rc != SQLITE_DONE) {
        store_sqlite_fail(ss, "conv_list");
        sqlite3_reset(st);
        goto fail;
    }
    sqlite3_reset(st);

    v = xcalloc(cnt ? cnt : 1, sizeof *v);
    for (i = 0; i < cnt; i++) {
        if (store_sqlite_conv_load(ss, ids[i], user_id, &v[i]) == STORE_ERR) {
            store_convs_free(v, i);
            v = NULL;
            goto fail;
        }
    }
    free(ids);
    if (store_sqlite_commit(ss) != STORE_OK) {
        store_convs_free(v, cnt);
        return STORE_ERR;
    }
    *out = v;
    *n = cnt;
    return STORE_OK;
fail:
    free(ids);
    store_sqlite_rollback(ss);
    return STORE_ERR;
}

static int store_sqlite_conv_member(struct store *s, int64_t conv_id,
                                    int64_t user_id, int64_t *last_seq)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    sqlite3_stmt *st = store_sqlite_stmt(ss, SS_CONV_MEMBER);
    int member, rc;

    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, conv_id);
    sqlite3_bind_int64(st, 2, user_id);
    rc = store_sqlite_row(ss, st, "conv_member");
    if (rc != STORE_OK)
        return rc;
    member = sqlite3_column_type(st, 1) != SQLITE_NULL;
    if (member && last_seq != NULL)
        *last_seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return member ? STORE_OK : STORE_FORBIDDEN;
}

/* Runs statement sid with one id bound and collects the first column of
 * every row (caller frees *ids). */
static int store_sqlite_ids(struct store_sqlite *ss, enum store_sqlite_sid sid,
                            int64_t id, const char *what, int64_t **ids,
                            size_t *n)
{
    sqlite3_stmt *st = store_sqlite_stmt(ss, sid);
    int64_t *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc;

    *ids = NULL;
    *n = 0;
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[cnt++] = sqlite3_column_int64(st, 0);
    }
    if (rc != SQLITE_DONE) {
        store_sqlite_fail(ss, what);
        sqlite3_reset(st);
        free(v);
        return STORE_ERR;
    }
    sqlite3_reset(st);
    *ids = v;
    *n = cnt;
    return STORE_OK;
}

static int store_sqlite_conv_member_ids(struct store *s, int64_t conv_id,
                                        int64_t **ids, size_t *n)
{
    int rc = store_sqlite_ids(store_sqlite_of(s), SS_MEMBER_IDS, conv_id,
                              "conv_member_ids", ids, n);

    /* Every conversation has members: none means it does not exist. */
    if (rc == STORE_OK && *n == 0)
        return STORE_NOTFOUND;
    return rc;
}

static int store_sqlite_user_contacts(struct store *s, int64_t user_id,
                                      int64_t **ids, size_t *n)
{
    return store_sqlite_ids(store_sqlite_of(s), SS_CONTACTS, user_id,
                            "user_contacts", ids, n);
}

static int store_sqlite_history(struct store *s, int64_t conv_id,
                                int64_t before_seq, int64_t after_seq,
                                size_t limit, struct store_msg **out,
                                size_t *n, int *has_more)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    /* Only after_seq: the oldest page after it. Otherwise the newest page
     * below before_seq (and above after_seq). */
    int back = before_seq >= 0 || after_seq < 0;
    struct store_msg *v = NULL;
    size_t cnt = 0, cap = 0, i;
    sqlite3_stmt *st;
    int rc;

    *out = NULL;
    *n = 0;
    *has_more = 0;
    st = store_sqlite_stmt(ss, back ? SS_HISTORY_BACK : SS_HISTORY_ON);
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, conv_id);
    sqlite3_bind_int64(st, 2, after_seq >= 0 ? after_seq : 0);
    sqlite3_bind_int64(st, 3, before_seq >= 0 ? before_seq : INT64_MAX);
    /* One row more than asked says whether there is more. */
    sqlite3_bind_int64(st, 4, store_sqlite_limit(limit) + 1);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == limit) {
            *has_more = 1;
            break;
        }
        if (cnt == cap) {
            cap = cap ? cap * 2 : (limit < 64 ? limit : 64);
            v = xrealloc(v, cap * sizeof *v);
        }
        store_sqlite_msg_read(st, &v[cnt++]);
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        store_sqlite_fail(ss, "history");
        sqlite3_reset(st);
        store_msgs_free(v, cnt);
        *has_more = 0;
        return STORE_ERR;
    }
    sqlite3_reset(st);
    if (back) {
        for (i = 0; i < cnt / 2; i++) {
            struct store_msg t = v[i];
            v[i] = v[cnt - 1 - i];
            v[cnt - 1 - i] = t;
        }
    }
    *out = v;
    *n = cnt;
    return STORE_OK;
}

/* Stores one send inside the batch's transaction. Returns STORE_ERR only
 * when the database failed (the batch is then rolled back); every other
 * outcome is the send's own rc. */
static int store_sqlite_send_one(struct store_sqlite *ss,
                                 struct store_send *sd)
{
    struct store_msg *m = &sd->msg;
    size_t cid_len;
    int cid_ok = store_sqlite_cid_ok(sd->client_msg_id, &cid_len);
    sqlite3_stmt *st;
    int rc;

    /* A retry, also of a send earlier in this very batch: the message
     * first stored under this client_msg_id, whatever this one says. */
    if (cid_ok) {
        st = store_sqlite_stmt(ss, SS_MSG_BY_CLIENT_ID);
        if (st == NULL)
            return STORE_ERR;
        sqlite3_bind_int64(st, 1, sd->sender_id);
        sqlite3_bind_text(st, 2, sd->client_msg_id, (int)cid_len,
                          SQLITE_STATIC);
        rc = store_sqlite_row(ss, st, "send");
        if (rc == STORE_ERR)
            return STORE_ERR;
        if (rc == STORE_OK) {
            store_sqlite_msg_read(st, m);
            sqlite3_reset(st);
            sd->rc = STORE_DUPLICATE;
            return STORE_OK;
        }
    }

    st = store_sqlite_stmt(ss, SS_SEND_CHECK);
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, sd->conversation_id);
    sqlite3_bind_int64(st, 2, sd->sender_id);
    rc = store_sqlite_row(ss, st, "send");
    if (rc == STORE_ERR)
        return STORE_ERR;
    if (rc == STORE_NOTFOUND) {
        sd->rc = STORE_NOTFOUND;
        return STORE_OK;
    }
    if (sqlite3_column_type(st, 0) == SQLITE_NULL) {
        sqlite3_reset(st);
        sd->rc = STORE_FORBIDDEN;
        return STORE_OK;
    }
    store_sqlite_col_copy(st, 0, m->sender, sizeof m->sender);
    sqlite3_reset(st);

    /* The caller validates these; one it let through must not fail the
     * statement after last_seq moved (a gap) nor the whole batch, so it
     * is refused here, alone. */
    if (!cid_ok || sd->body == NULL || sd->body_len < 1 ||
        sd->body_len > STORE_SQLITE_BODY_MAX) {
        m->sender[0] = '\0';
        sd->rc = STORE_ERR;
        return STORE_OK;
    }

    st = store_sqlite_stmt(ss, SS_CONV_BUMP);
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, sd->conversation_id);
    sqlite3_bind_int64(st, 2, sd->now);
    rc = store_sqlite_row(ss, st, "send");
    if (rc != STORE_OK) {
        if (rc == STORE_NOTFOUND)   /* it was there a moment ago */
            store_set_error(&ss->base, "send: conversation vanished");
        return STORE_ERR;
    }
    m->seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);

    st = store_sqlite_stmt(ss, SS_MSG_INSERT);
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, sd->conversation_id);
    sqlite3_bind_int64(st, 2, m->seq);
    sqlite3_bind_int64(st, 3, sd->sender_id);
    sqlite3_bind_text(st, 4, sd->client_msg_id, (int)cid_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, sd->body, (int)sd->body_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, sd->now);
    rc = store_sqlite_row(ss, st, "send");
    if (rc != STORE_OK) {
        if (rc == STORE_NOTFOUND)
            store_set_error(&ss->base, "send: insert returned no id");
        return STORE_ERR;
    }
    m->message_id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);

    /* Your own messages are never unread. */
    st = store_sqlite_stmt(ss, SS_READ_ADVANCE);
    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int64(st, 1, sd->conversation_id);
    sqlite3_bind_int64(st, 2, sd->sender_id);
    sqlite3_bind_int64(st, 3, m->seq);
    if (store_sqlite_exec(ss, st, "send") != STORE_OK)
        return STORE_ERR;

    m->conversation_id = sd->conversation_id;
    m->sender_id = sd->sender_id;
    memcpy(m->client_msg_id, sd->client_msg_id, cid_len);
    m->client_msg_id[cid_len] = '\0';
    m->body = xstrndup(sd->body, sd->body_len);
    m->created_at = sd->now;
    sd->rc = STORE_OK;
    return STORE_OK;
}

static void store_sqlite_sends_reset(struct store_send *sends, size_t n,
                                     int rc)
{
    size_t i;

    for (i = 0; i < n; i++) {
        store_msg_clear(&sends[i].msg);
        sends[i].rc = rc;
    }
}

static int store_sqlite_send_batch(struct store *s, struct store_send *sends,
                                   size_t n)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    size_t i;

    /* msg is output only; whatever the caller left there is not ours. */
    for (i = 0; i < n; i++) {
        memset(&sends[i].msg, 0, sizeof sends[i].msg);
        sends[i].rc = STORE_ERR;
    }
    if (n == 0)
        return STORE_OK;
    if (!ss->writer) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA cache_size=-%d",
                 STORE_SQLITE_WRITER_CACHE_KIB);
        sqlite3_exec(ss->db, sql, NULL, NULL, NULL);   /* a hint only */
        ss->ckpt = store_sqlite_ckpt_start(ss->db);
        ss->writer = 1;
    }
    if (store_sqlite_begin(ss) != STORE_OK)
        return STORE_ERR;
    for (i = 0; i < n; i++)
        if (store_sqlite_send_one(ss, &sends[i]) != STORE_OK)
            goto fail;
    if (store_sqlite_commit(ss) != STORE_OK) {
        store_sqlite_sends_reset(sends, n, STORE_ERR);
        return STORE_ERR;
    }
    return STORE_OK;
fail:
    store_sqlite_rollback(ss);
    /* Nothing of the batch is stored: no send may look stored. */
    store_sqlite_sends_reset(sends, n, STORE_ERR);
    return STORE_ERR;
}

static int store_sqlite_read_marker(struct store *s, int64_t user_id,
                                    int64_t conv_id, int64_t seq, int64_t now,
                                    int64_t *read_seq)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    int64_t last_seq = 0, target;
    char detail[96];
    sqlite3_stmt *st;
    int rc, moved;

    if (store_sqlite_begin(ss) != STORE_OK)
        return STORE_ERR;
    rc = store_sqlite_conv_member(s, conv_id, user_id, &last_seq);
    if (rc != STORE_OK) {
        store_sqlite_rollback(ss);
        return rc;
    }
    target = seq < last_seq ? seq : last_seq;
    st = store_sqlite_stmt(ss, SS_READ_ADVANCE);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, conv_id);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int64(st, 3, target);
    if (store_sqlite_exec(ss, st, "read_marker") != STORE_OK)
        goto fail;
    moved = sqlite3_changes(ss->db) > 0;
    if (moved) {
        snprintf(detail, sizeof detail,
                 "{\"conversation_id\":%" PRId64 ",\"seq\":%" PRId64 "}",
                 conv_id, target);
        if (store_sqlite_event(ss, "message_read", user_id, detail, now) !=
            STORE_OK)
            goto fail;
    }
    st = store_sqlite_stmt(ss, SS_READ_GET);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int64(st, 1, conv_id);
    sqlite3_bind_int64(st, 2, user_id);
    if (store_sqlite_row(ss, st, "read_marker") != STORE_OK)
        goto fail;
    if (read_seq != NULL)
        *read_seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    rc = store_sqlite_commit(ss);
    return rc == STORE_OK && !moved ? STORE_DUPLICATE : rc;
fail:
    store_sqlite_rollback(ss);
    return STORE_ERR;
}

static int store_sqlite_event_add(struct store *s, const char *type,
                                  int64_t user_id, const char *detail_json,
                                  int64_t now)
{
    return store_sqlite_event(store_sqlite_of(s), type, user_id, detail_json,
                              now);
}

/* Aborts a statement that runs past its deadline (progress handler). */
static int store_sqlite_deadline(void *arg)
{
    return util_mono_ns() > *(int64_t *)arg;
}

static int store_sqlite_query_rows(struct store *s, const char *sql,
                                   int timeout_ms, struct store_rows *out)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    sqlite3_stmt *st = NULL;
    int64_t deadline = util_mono_ns() + (int64_t)timeout_ms * 1000000;
    size_t cap = 0, i;
    int rc;

    if (sqlite3_prepare_v2(ss->db, sql, -1, &st, NULL) != SQLITE_OK) {
        store_sqlite_fail(ss, "query_rows");
        return STORE_ERR;
    }
    if (st == NULL || !sqlite3_stmt_readonly(st)) {
        sqlite3_finalize(st);
        store_set_error(s, "query_rows: only one read-only statement runs");
        return STORE_ERR;
    }
    out->ncols = (size_t)sqlite3_column_count(st);
    sqlite3_progress_handler(ss->db, 1000, store_sqlite_deadline, &deadline);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((out->nrows + 1) * out->ncols > cap) {
            cap = cap ? cap * 2 : 16 * (out->ncols ? out->ncols : 1);
            out->cells = xrealloc(out->cells, cap * sizeof *out->cells);
        }
        for (i = 0; i < out->ncols; i++) {
            const unsigned char *t = sqlite3_column_text(st, (int)i);
            out->cells[out->nrows * out->ncols + i] =
                t ? xstrdup((const char *)t) : NULL;
        }
        out->nrows++;
    }
    sqlite3_progress_handler(ss->db, 0, NULL, NULL);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_INTERRUPT)
            store_set_error(s, "query_rows: timed out after %d ms",
                            timeout_ms);
        else
            store_sqlite_fail(ss, "query_rows");
        sqlite3_finalize(st);
        store_rows_clear(out);
        return STORE_ERR;
    }
    sqlite3_finalize(st);
    return STORE_OK;
}

/* SQLite needs no migration lock: BEGIN IMMEDIATE in each apply already
 * keeps two migrators from interleaving on the one file. */
static int store_sqlite_mig_begin(struct store *s)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    static const char create[] =
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " checksum TEXT NOT NULL,"
        " applied_at INTEGER NOT NULL,"
        " dirty INTEGER NOT NULL DEFAULT 0)";

    if (sqlite3_exec(ss->db, create, NULL, NULL, NULL) != SQLITE_OK)
        return store_sqlite_fail(ss, "schema_migrations");
    return STORE_OK;
}

static int store_sqlite_mig_applied(struct store *s,
                                    struct store_migration **out, size_t *n)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    sqlite3_stmt *st = store_sqlite_stmt(ss, SS_MIG_LIST);
    struct store_migration *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc;

    *out = NULL;
    *n = 0;
    if (st == NULL)
        return STORE_ERR;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_migration *m;

        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            v = xrealloc(v, cap * sizeof *v);
        }
        m = &v[cnt++];
        memset(m, 0, sizeof *m);
        m->version = sqlite3_column_int(st, 0);
        store_sqlite_col_copy(st, 1, m->name, sizeof m->name);
        store_sqlite_col_copy(st, 2, m->checksum, sizeof m->checksum);
        m->applied_at = sqlite3_column_int64(st, 3);
        m->dirty = sqlite3_column_int(st, 4);
    }
    if (rc != SQLITE_DONE) {
        store_sqlite_fail(ss, "schema_migrations");
        sqlite3_reset(st);
        free(v);
        return STORE_ERR;
    }
    sqlite3_reset(st);
    *out = v;
    *n = cnt;
    return STORE_OK;
}

/* Records or forgets version m inside the open transaction. */
static int store_sqlite_mig_record(struct store_sqlite *ss,
                                   const struct store_migration *m, int up)
{
    sqlite3_stmt *st = store_sqlite_stmt(ss, up ? SS_MIG_RECORD
                                                : SS_MIG_DELETE);

    if (st == NULL)
        return STORE_ERR;
    sqlite3_bind_int(st, 1, m->version);
    if (up) {
        sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, m->checksum, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, util_now_ms());
    }
    return store_sqlite_exec(ss, st, "schema_migrations");
}

/* Marks m dirty after a failed run, in a transaction of its own: 1 when
 * an up failed, 2 when a down failed, so that clearing the mark knows
 * whether the version counts as applied. */
static void store_sqlite_mig_mark_dirty(struct store_sqlite *ss,
                                        const struct store_migration *m,
                                        int up)
{
    sqlite3_stmt *st = store_sqlite_stmt(ss, SS_MIG_MARK_DIRTY);

    if (st == NULL)
        return;
    sqlite3_bind_int(st, 1, m->version);
    sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, m->checksum, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, util_now_ms());
    sqlite3_bind_int(st, 5, up ? 1 : 2);
    sqlite3_step(st);
    sqlite3_reset(st);
}

/* Whether version is recorded (clean or dirty) inside the open
 * transaction: 1 yes, 0 no, -1 failure. */
static int store_sqlite_mig_recorded(struct store_sqlite *ss, int version)
{
    sqlite3_stmt *st = store_sqlite_stmt(ss, SS_MIG_FIND);
    int rc;

    if (st == NULL)
        return -1;
    sqlite3_bind_int(st, 1, version);
    rc = store_sqlite_row(ss, st, "schema_migrations");
    if (rc == STORE_ERR)
        return -1;
    sqlite3_reset(st);
    return rc == STORE_OK;
}

static int store_sqlite_mig_apply(struct store *s,
                                  const struct store_migration *m,
                                  const char *sql, int up)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    char *msg = NULL;
    int recorded;

    if (m->no_transaction) {
        /* The file cannot run inside a transaction (VACUUM, some
         * PRAGMAs); if it fails halfway only the dirty mark is left. */
        if (sqlite3_exec(ss->db, sql, NULL, NULL, &msg) != SQLITE_OK)
            goto failed;
        if (store_sqlite_begin(ss) != STORE_OK)
            goto failed_kept;
        if (store_sqlite_mig_record(ss, m, up) != STORE_OK) {
            store_sqlite_rollback(ss);
            goto failed_kept;
        }
        if (store_sqlite_commit(ss) != STORE_OK)
            goto failed_kept;
        return STORE_OK;
    }

    if (store_sqlite_begin(ss) != STORE_OK)
        return STORE_ERR;
    /* Another migrator may have run this version since the caller read
     * the list: then nothing is run and nothing is marked. */
    recorded = store_sqlite_mig_recorded(ss, m->version);
    if (recorded < 0 || recorded == up) {
        if (recorded >= 0)
            store_set_error(s, "migration %d was %s by another process "
                            "meanwhile", m->version,
                            up ? "applied" : "reverted");
        store_sqlite_rollback(ss);
        return recorded < 0 ? STORE_ERR : (up ? STORE_CONFLICT
                                              : STORE_NOTFOUND);
    }
    if (sqlite3_exec(ss->db, sql, NULL, NULL, &msg) != SQLITE_OK)
        goto failed;
    if (store_sqlite_mig_record(ss, m, up) != STORE_OK)
        goto failed_kept;
    if (store_sqlite_commit(ss) != STORE_OK)
        goto failed_kept;
    return STORE_OK;

failed:
    store_set_error(s, "%s", msg ? msg : sqlite3_errmsg(ss->db));
    sqlite3_free(msg);
failed_kept:
    store_sqlite_rollback(ss);
    store_sqlite_mig_mark_dirty(ss, m, up);
    return STORE_ERR;
}

static int store_sqlite_mig_clear_dirty(struct store *s, int version)
{
    struct store_sqlite *ss = store_sqlite_of(s);
    sqlite3_stmt *st;
    int changed = 0;

    if (store_sqlite_begin(ss) != STORE_OK)
        return STORE_ERR;
    st = store_sqlite_stmt(ss, SS_MIG_CLEAR_UP);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int(st, 1, version);
    if (store_sqlite_exec(ss, st, "schema_migrations") != STORE_OK)
        goto fail;
    changed += sqlite3_changes(ss->db);
    st = store_sqlite_stmt(ss, SS_MIG_CLEAR_DOWN);
    if (st == NULL)
        goto fail;
    sqlite3_bind_int(st, 1, version);
    if (store_sqlite_exec(ss, st, "schema_migrations") != STORE_OK)
        goto fail;
    changed += sqlite3_changes(ss->db);
    if (store_sqlite_commit(ss) != STORE_OK)
        return STORE_ERR;
    return changed > 0 ? STORE_OK : STORE_NOTFOUND;
fail:
    store_sqlite_rollback(ss);
    return STORE_ERR;
}

static void store_sqlite_mig_end(struct store *s)
{
    store_sqlite_rollback(store_sqlite_of(s));
}

static const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .close = store_sqlite_close,
    .ping = store_sqlite_ping,
    .user_create = store_sqlite_user_create,
    .user_by_name = store_sqlite_user_by_name,
    .user_set_throttle = store_sqlite_user_set_throttle,
    .users_by_prefix = store_sqlite_users_by_prefix,
    .users_by_names = store_sqlite_users_by_names,
    .session_create = store_sqlite_session_create,
    .session_lookup = store_sqlite_session_lookup,
    .session_delete = store_sqlite_session_delete,
    .conv_create = store_sqlite_conv_create,
    .conv_list = store_sqlite_conv_list,
    .conv_member = store_sqlite_conv_member,
    .conv_member_ids = store_sqlite_conv_member_ids,
    .user_contacts = store_sqlite_user_contacts,
    .query_rows = store_sqlite_query_rows,
    .history = store_sqlite_history,
    .send_batch = store_sqlite_send_batch,
    .read_marker = store_sqlite_read_marker,
    .event_add = store_sqlite_event_add,
    .mig_begin = store_sqlite_mig_begin,
    .mig_applied = store_sqlite_mig_applied,
    .mig_apply = store_sqlite_mig_apply,
    .mig_clear_dirty = store_sqlite_mig_clear_dirty,
    .mig_end = store_sqlite_mig_end,
};

/* Runs a PRAGMA that must take effect; errstr-free, reports into err. */
static int store_sqlite_pragma(sqlite3 *db, const char *sql, char *err,
                               size_t errlen)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "sqlite: %s: %s", sql,
             msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

struct store *store_sqlite_open(const char *path, char *err, size_t errlen)
{
    struct store_sqlite *ss;
    sqlite3 *db = NULL;
    int rc;

    rc = sqlite3_open_v2(path, &db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX,
                         NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, STORE_SQLITE_BUSY_MS);
    if (store_sqlite_pragma(db, "PRAGMA journal_mode=WAL", err, errlen) < 0 ||
        store_sqlite_pragma(db, "PRAGMA synchronous=FULL", err, errlen) < 0 ||
        store_sqlite_pragma(db, "PRAGMA foreign_keys=ON", err, errlen) < 0 ||
        store_sqlite_pragma(db, "PRAGMA wal_autocheckpoint="
                            STORE_SQLITE_STR(STORE_SQLITE_CHECKPOINT_PAGES),
                            err, errlen) < 0) {
        sqlite3_close(db);
        return NULL;
    }
    ss = xcalloc(1, sizeof *ss);
    ss->base.ops = &store_sqlite_ops;
    ss->db = db;
    return &ss->base;
}
