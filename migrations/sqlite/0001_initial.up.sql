-- 0001_initial: the first schema of chatd on SQLite.
--
-- Conventions: every time is INTEGER milliseconds since the Unix epoch;
-- ids are SQLite rowids. `chatd migrate up` runs this file in one
-- transaction and records it in schema_migrations (which it creates
-- itself, so it is not here). Every query chatd runs has an index below;
-- the comment on each index names the query it serves.

-- Accounts. username is kept as registered; username_key is its ASCII
-- lower-case form (usernames are A-Z a-z 0-9 _ . -), so `Alice` and
-- `alice` are one name and lookups and prefix searches use one index.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL
                  CHECK (length(CAST(username AS BLOB)) BETWEEN 1 AND 32),
    username_key  TEXT    NOT NULL UNIQUE  -- login, lookups, prefix search
                  CHECK (username_key = lower(username)),
    password_hash TEXT    NOT NULL,        -- a crypt(3) string, never a bare hash
    failed_logins INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until  INTEGER NOT NULL DEFAULT 0, -- 0: not throttled
    created_at    INTEGER NOT NULL
);

-- Login sessions. Only the SHA-256 of the token is kept, so a copy of the
-- database cannot be used to log in. AUTOINCREMENT keeps the id of a
-- session that logged out from ever naming a later one.
CREATE TABLE sessions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BLOB    NOT NULL UNIQUE     -- session lookup on every request
               CHECK (length(token_hash) = 32),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
-- A user's sessions (logout everywhere, account removal).
CREATE INDEX sessions_user_id ON sessions (user_id);

-- Conversations. last_seq is the seq of the newest message: each send
-- bumps it in the transaction that stores the message, so seqs are
-- 1, 2, 3, ... without gaps and unread is last_seq - read_seq.
-- direct_key is "<lower user id>:<higher user id>" for a two-person
-- conversation (NULL for groups); its UNIQUE index keeps one per pair.
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('direct', 'group')),
    title         TEXT,
    direct_key    TEXT    UNIQUE,
    created_by    INTEGER NOT NULL REFERENCES users (id),
    created_at    INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    last_activity INTEGER NOT NULL,        -- newest message, else creation
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);
-- Ordering conversation lists by recent activity.
CREATE INDEX conversations_last_activity ON conversations (last_activity);

-- Who is in which conversation, and how far each member has read.
-- The primary key serves "members of a conversation" and membership
-- checks; WITHOUT ROWID stores the rows in that key's b-tree.
CREATE TABLE conversation_members (
    conversation_id INTEGER NOT NULL
                    REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    read_seq        INTEGER NOT NULL DEFAULT 0 CHECK (read_seq >= 0),
    joined_at       INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;
-- "The conversations of a user" (conversation lists).
CREATE INDEX conversation_members_user
    ON conversation_members (user_id, conversation_id);

-- Messages. UNIQUE (conversation_id, seq) is also the index history pages
-- by; UNIQUE (sender_id, client_msg_id) makes a retried send idempotent
-- and is the index the retry is found by. client_msg_id is 1 to 64
-- characters (length() counts characters), the body 1 to 16384 bytes.
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    sender_id       INTEGER NOT NULL REFERENCES users (id),
    client_msg_id   TEXT    NOT NULL
                    CHECK (length(client_msg_id) BETWEEN 1 AND 64
                           AND length(CAST(client_msg_id AS BLOB)) <= 256),
    body            TEXT    NOT NULL
                    CHECK (length(CAST(body AS BLOB)) BETWEEN 1 AND 16384),
    created_at      INTEGER NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender_id, client_msg_id)
);

-- What happened, append-only: user_registration, user_login, user_logout,
-- message_read, conversation_created and security events. Dashboards read
-- it by time and by type over time. detail is a small JSON object or NULL.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    user_id    INTEGER,                    -- NULL when no user is involved
    detail     TEXT
);
CREATE INDEX events_created_at ON events (created_at);
CREATE INDEX events_type_created_at ON events (type, created_at);
