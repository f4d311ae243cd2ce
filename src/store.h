/*
 * store.h - the storage interface: everything chatd keeps, behind one
 * vtable with two backends (store_sqlite.c, store_pg.c), the way SQLite's
 * VFS or hiredis's adapters do it.
 *
 * Threads and ownership: a struct store is one database connection and
 * belongs to the thread that opened it; it is never shared. Each thread that
 * needs the database (the store thread that writes messages, each worker,
 * the collector) opens its own with store_open().
 *
 * Errors: functions return STORE_OK (0) on success, a positive STORE_* code
 * for an expected outcome the caller answers to the client (not found,
 * conflict, not a member), and STORE_ERR (-1) when the database failed; the
 * reason is then in store_errstr(). Times are milliseconds since the epoch.
 *
 * Results that are arrays are allocated by the store and released by the
 * caller with the matching *_free() function. Strings passed in are borrowed
 * for the duration of the call.
 */
#ifndef CHATD_STORE_H
#define CHATD_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_ERRLEN 256
#define STORE_USERNAME_MAX 32     /* bytes, protocol limit */
#define STORE_HASH_MAX 160        /* a crypt(3) string */
#define STORE_CLIENT_MSG_ID_MAX 64
#define STORE_TOKEN_HASH_LEN 32   /* SHA-256 of the session token */

enum store_rc {
    STORE_ERR = -1,
    STORE_OK = 0,
    STORE_NOTFOUND = 1,   /* no such row (user, session, conversation) */
    STORE_CONFLICT = 2,   /* unique name taken */
    STORE_FORBIDDEN = 3,  /* the conversation exists; the user is not in it */
    STORE_DUPLICATE = 4,  /* a send whose client_msg_id was stored before */
};

struct store;

struct store_user {
    int64_t id;
    char username[STORE_USERNAME_MAX + 1];
    char password_hash[STORE_HASH_MAX];
    int failed_logins;       /* failed attempts in a row */
    int64_t locked_until;    /* ms; 0 when not throttled */
};

struct store_user_brief {
    int64_t id;
    char username[STORE_USERNAME_MAX + 1];
};

struct store_session {
    int64_t session_id;
    int64_t user_id;
    char username[STORE_USERNAME_MAX + 1];
    int64_t expires_at;
};

struct store_msg {
    int64_t message_id;
    int64_t conversation_id;
    int64_t seq;
    int64_t sender_id;
    char sender[STORE_USERNAME_MAX + 1];
    char client_msg_id[4 * STORE_CLIENT_MSG_ID_MAX + 1]; /* 64 chars of UTF-8 */
    char *body;              /* owned, NUL-terminated */
    int64_t created_at;
};

struct store_conv {
    int64_t id;
    char kind[8];            /* "direct" or "group" */
    char *title;             /* owned; NULL when none */
    struct store_user_brief *members; /* owned, ordered by user id */
    size_t nmembers;
    int64_t last_seq;
    int64_t read_seq;        /* the asking user's, in lists */
    int64_t last_activity;   /* last message time, or creation time */
    int has_last;            /* last_message below is set */
    struct store_msg last_message;
};

/* One send in a batch. The caller fills the input fields; the store fills
 * rc and msg. rc is STORE_OK for a new message, STORE_DUPLICATE when the
 * sender stored this client_msg_id before (msg is then the message first
 * stored, whatever conversation or body this retry named), STORE_NOTFOUND
 * for an unknown conversation, STORE_FORBIDDEN for a non-member. */
struct store_send {
    int64_t conversation_id;
    int64_t sender_id;
    const char *client_msg_id;
    const char *body;
    size_t body_len;
    int64_t now;
    int rc;
    struct store_msg msg;    /* msg.body is owned by the store_send after */
};

struct store_migration {
    int version;
    char name[128];
    char checksum[65];       /* hex SHA-256 of the .up.sql text */
    int64_t applied_at;
    int dirty;               /* a failed run left it half applied */
    int no_transaction;      /* the file asks to run outside a transaction
                                (first line "-- chatd:no-transaction") */
};

/* Rows of text cells from a read-only query (the collector's). */
struct store_rows {
    size_t nrows, ncols;
    char **cells;            /* nrows * ncols, row-major; NULL for SQL NULL */
};

struct store_ops {
    const char *name;
    void (*close)(struct store *);
    int (*ping)(struct store *);

    int (*user_create)(struct store *, const char *username,
                       const char *password_hash, int64_t now, int64_t *id);
    int (*user_by_name)(struct store *, const char *username,
                        struct store_user *out);
    int (*user_set_throttle)(struct store *, int64_t user_id, int failed,
                             int64_t locked_until);
    int (*users_by_prefix)(struct store *, const char *prefix, size_t limit,
                           struct store_user_brief **out, size_t *n);
    int (*users_by_names)(struct store *, const char *const *names, size_t n,
                          struct store_user_brief *out, size_t *missing);

    int (*session_create)(struct store *, int64_t user_id,
                          const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                          int64_t now, int64_t expires_at, int64_t *id);
    int (*session_lookup)(struct store *,
                          const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                          int64_t now, struct store_session *out);
    int (*session_delete)(struct store *, int64_t session_id, int64_t now);

    int (*conv_create)(struct store *, int64_t creator_id,
                       const int64_t *member_ids, size_t n, const char *title,
                       int64_t now, struct store_conv *out, int *created);
    int (*conv_list)(struct store *, int64_t user_id, struct store_conv **out,
                     size_t *n);
    int (*conv_member)(struct store *, int64_t conv_id, int64_t user_id,
                       int64_t *last_seq);
    int (*conv_member_ids)(struct store *, int64_t conv_id, int64_t **ids,
                           size_t *n);
    int (*user_contacts)(struct store *, int64_t user_id, int64_t **ids,
                         size_t *n);
    int (*history)(struct store *, int64_t conv_id, int64_t before_seq,
                   int64_t after_seq, size_t limit, struct store_msg **out,
                   size_t *n, int *has_more);
    int (*send_batch)(struct store *, struct store_send *sends, size_t n);
    int (*read_marker)(struct store *, int64_t user_id, int64_t conv_id,
                       int64_t seq, int64_t now, int64_t *read_seq);

    int (*event_add)(struct store *, const char *type, int64_t user_id,
                     const char *detail_json, int64_t now);
    int (*query_rows)(struct store *, const char *sql, int timeout_ms,
                      struct store_rows *out);

    int (*mig_begin)(struct store *);
    int (*mig_applied)(struct store *, struct store_migration **out,
                       size_t *n);
    int (*mig_apply)(struct store *, const struct store_migration *m,
                     const char *sql, int up);
    int (*mig_clear_dirty)(struct store *, int version);
    void (*mig_end)(struct store *);
};

/* Every backend embeds this first (SQLite's sqlite3_file pattern). */
struct store {
    const struct store_ops *ops;
    char errstr[STORE_ERRLEN];
};

/* Opens a connection for the URL "sqlite:PATH" or "postgresql://...". On
 * failure returns NULL with a one-line reason in err. */
struct store *store_open(const char *url, char *err, size_t errlen);
/* Which backend a URL names ("sqlite", "postgres") or NULL if neither. */
const char *store_kind(const char *url);
void store_close(struct store *s);     /* store_close(NULL) does nothing */
const char *store_errstr(const struct store *s);
void store_set_error(struct store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

int store_ping(struct store *s);

/* Creates a user; STORE_CONFLICT when the name is taken, compared
 * case-insensitively. Records a user_registration event. */
int store_user_create(struct store *s, const char *username,
                      const char *password_hash, int64_t now, int64_t *id);
/* Case-insensitive lookup. STORE_NOTFOUND if none. */
int store_user_by_name(struct store *s, const char *username,
                       struct store_user *out);
/* Sets the failed-login count and the throttle end (0: none). */
int store_user_set_throttle(struct store *s, int64_t user_id, int failed,
                            int64_t locked_until);
/* Users whose name starts with prefix (case-insensitive, "" matches all),
 * ordered by name, at most limit. */
int store_users_by_prefix(struct store *s, const char *prefix, size_t limit,
                          struct store_user_brief **out, size_t *n);
/* Resolves n names to users, out[i] for names[i]. STORE_NOTFOUND when one
 * is unknown; *missing is then its index. */
int store_users_by_names(struct store *s, const char *const *names, size_t n,
                         struct store_user_brief *out, size_t *missing);

/* Stores a session under the SHA-256 of its token; records user_login. */
int store_session_create(struct store *s, int64_t user_id,
                         const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                         int64_t now, int64_t expires_at, int64_t *id);
/* STORE_NOTFOUND for an unknown or expired session. */
int store_session_lookup(struct store *s,
                         const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                         int64_t now, struct store_session *out);
/* Ends one session; records user_logout. */
int store_session_delete(struct store *s, int64_t session_id, int64_t now);

/* Creates a conversation of the creator and member_ids (others, distinct,
 * creator not among them). With one other member it is direct: an existing
 * direct conversation of the pair is returned instead, with *created = 0. */
int store_conv_create(struct store *s, int64_t creator_id,
                      const int64_t *member_ids, size_t n, const char *title,
                      int64_t now, struct store_conv *out, int *created);
/* The user's conversations, most recent activity first, with members, last
 * message and the user's read_seq. */
int store_conv_list(struct store *s, int64_t user_id, struct store_conv **out,
                    size_t *n);
/* STORE_OK if the user is a member (last_seq set), STORE_FORBIDDEN if the
 * conversation exists without them, STORE_NOTFOUND if it does not exist. */
int store_conv_member(struct store *s, int64_t conv_id, int64_t user_id,
                      int64_t *last_seq);
/* The user ids of a conversation's members (caller frees *ids). */
int store_conv_member_ids(struct store *s, int64_t conv_id, int64_t **ids,
                          size_t *n);
#define STORE_UNBOUNDED (-1)
/* The users who share at least one conversation with user_id, without
 * that user, ascending (caller frees *ids; none: *ids NULL, *n 0). */
int store_user_contacts(struct store *s, int64_t user_id, int64_t **ids,
                        size_t *n);
/* A page of messages in ascending seq order. Bounds are exclusive;
 * STORE_UNBOUNDED (any negative value) means none (so after_seq 0 pages
 * from the start and before_seq 0 is an empty page). Without before_seq/after_seq: the newest limit. With only
 * after_seq: the oldest limit after it. has_more: more exist beyond the page
 * in the direction paged (older when paging back, newer when paging on). */
int store_history(struct store *s, int64_t conv_id, int64_t before_seq,
                  int64_t after_seq, size_t limit, struct store_msg **out,
                  size_t *n, int *has_more);
/* Stores a batch of sends in one transaction, seq per conversation gapless,
 * and moves each sender's read marker to the new seq. Returns STORE_ERR if
 * the transaction failed (then nothing of it is stored). */
int store_send_batch(struct store *s, struct store_send *sends, size_t n);
/* Moves the member's read marker forward to min(seq, last_seq); never back.
 * *read_seq is the marker after. Returns STORE_OK when the marker moved,
 * STORE_DUPLICATE when it stayed where it was, STORE_FORBIDDEN /
 * STORE_NOTFOUND as store_conv_member. Records message_read when it
 * moved. */
int store_read_marker(struct store *s, int64_t user_id, int64_t conv_id,
                      int64_t seq, int64_t now, int64_t *read_seq);
/* Appends to the events table (user_id 0: none; detail_json may be NULL). */
int store_event_add(struct store *s, const char *type, int64_t user_id,
                    const char *detail_json, int64_t now);

/* Runs one read-only statement (a statement that would write is refused)
 * with a time limit, and returns every row as text. Used by the metrics
 * collector on its own connection. */
int store_query_rows(struct store *s, const char *sql, int timeout_ms,
                     struct store_rows *out);
void store_rows_clear(struct store_rows *r);

/* Migration primitives, used by migrate.c only. mig_begin takes the
 * migration lock (Postgres advisory lock) and creates schema_migrations if
 * missing; mig_apply runs sql and records (up) or deletes (down) the row in
 * one transaction, and on failure marks the version dirty. */
int store_mig_begin(struct store *s);
int store_mig_applied(struct store *s, struct store_migration **out,
                      size_t *n);
int store_mig_apply(struct store *s, const struct store_migration *m,
                    const char *sql, int up);
int store_mig_clear_dirty(struct store *s, int version);
void store_mig_end(struct store *s);

void store_msg_clear(struct store_msg *m);
void store_msgs_free(struct store_msg *m, size_t n);
void store_conv_clear(struct store_conv *c);
void store_convs_free(struct store_conv *c, size_t n);

/* Backend constructors, called by store_open(). */
struct store *store_sqlite_open(const char *path, char *err, size_t errlen);
struct store *store_pg_open(const char *conninfo, char *err, size_t errlen);

#endif
