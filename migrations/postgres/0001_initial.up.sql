-- 0001_initial: the first schema of chatd on Postgres.
--
-- `chatd migrate up` runs this file in one transaction, together with the
-- row that records it in schema_migrations (which chatd creates itself,
-- so it is not here). It can also be read, and run, with psql:
--   psql -v ON_ERROR_STOP=1 -1 -f 0001_initial.up.sql
-- but then nothing records it, and `chatd migrate` will not know.
--
-- Conventions: ids are bigint identity columns; times are timestamptz
-- (chatd converts to and from milliseconds since the Unix epoch); text
-- limits are CHECK constraints, measured the way the protocol measures
-- them. Every query chatd runs has an index below; the comment above each
-- index names the query it serves. This is the same logical schema as
-- migrations/sqlite/0001_initial.up.sql.

-- Accounts.
CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL
                  CONSTRAINT users_username_format
                  CHECK (username ~ '^[A-Za-z0-9_.-]{3,32}$'),
    -- The case-insensitive key: `Alice` and `alice` are one name. Byte
    -- order ("C" collation), so a prefix search is a range of this index
    -- whatever the database's locale.
    username_key  text COLLATE "C" NOT NULL
                  GENERATED ALWAYS AS (lower(username)) STORED
                  CONSTRAINT users_username_key UNIQUE,
    password_hash text NOT NULL
                  CONSTRAINT users_password_hash_length
                  CHECK (octet_length(password_hash) BETWEEN 1 AND 159),
    failed_logins integer NOT NULL DEFAULT 0
                  CONSTRAINT users_failed_logins_nonnegative
                  CHECK (failed_logins >= 0),
    locked_until  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE users IS
    'chatd accounts, one row per registered name.';
COMMENT ON COLUMN users.username IS
    'The name as registered: 3 to 32 of A-Z a-z 0-9 _ . -';
COMMENT ON COLUMN users.username_key IS
    'lower(username): unique, used by login, lookups and prefix search';
COMMENT ON COLUMN users.password_hash IS
    'A crypt(3) string (yescrypt), never a bare hash. Secret: no read-only role may read it.';
COMMENT ON COLUMN users.failed_logins IS
    'Failed login attempts in a row; reset by a successful login';
COMMENT ON COLUMN users.locked_until IS
    'Login throttled until then; NULL when not throttled';

-- Login sessions. Only the SHA-256 of the token is kept, so a copy of the
-- database cannot be used to log in.
CREATE TABLE sessions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL
               REFERENCES users (id) ON DELETE CASCADE,
    -- Session lookup on every authenticated request.
    token_hash bytea NOT NULL
               CONSTRAINT sessions_token_hash_key UNIQUE
               CONSTRAINT sessions_token_hash_length
               CHECK (octet_length(token_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
-- A user's sessions (logout everywhere, account removal, the foreign key).
CREATE INDEX sessions_user_id ON sessions (user_id);
COMMENT ON TABLE sessions IS
    'Login sessions; a session ends at logout (row deleted) or at expires_at.';
COMMENT ON COLUMN sessions.token_hash IS
    'SHA-256 of the session token (the token itself is never stored). Secret.';

-- Conversations. last_seq is the seq of the newest message: each send
-- bumps it in the transaction that stores the message, so seqs are
-- 1, 2, 3, ... without gaps and unread is last_seq - read_seq.
CREATE TABLE conversations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL
                  CONSTRAINT conversations_kind
                  CHECK (kind IN ('direct', 'group')),
    title         text
                  CONSTRAINT conversations_title_length
                  CHECK (octet_length(title) <= 200),
    -- One direct conversation per pair: its UNIQUE index finds it.
    direct_key    text
                  CONSTRAINT conversations_direct_key UNIQUE,
    -- RESTRICT: an account that started conversations is not deleted
    -- silently from under them.
    created_by    bigint NOT NULL
                  REFERENCES users (id) ON DELETE RESTRICT,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seq      bigint NOT NULL DEFAULT 0
                  CONSTRAINT conversations_last_seq_nonnegative
                  CHECK (last_seq >= 0),
    last_activity timestamptz NOT NULL,
    CONSTRAINT conversations_direct_has_key
        CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);
-- Ordering conversation lists by recent activity.
CREATE INDEX conversations_last_activity ON conversations (last_activity);
CREATE INDEX conversations_created_by ON conversations (created_by);
COMMENT ON TABLE conversations IS
    'Direct (two people) and group conversations, with their message counter.';
COMMENT ON COLUMN conversations.direct_key IS
    '"<lower user id>:<higher user id>" for a direct conversation, NULL for a group';
COMMENT ON COLUMN conversations.last_seq IS
    'seq of the newest message (0: none); bumped in the transaction that stores it';
COMMENT ON COLUMN conversations.last_activity IS
    'Time of the newest message, else of creation; orders conversation lists';

-- Who is in which conversation, and how far each member has read. The
-- primary key serves "the members of a conversation" and membership checks.
CREATE TABLE conversation_members (
    conversation_id bigint NOT NULL
                    REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL
                    REFERENCES users (id) ON DELETE CASCADE,
    read_seq        bigint NOT NULL DEFAULT 0
                    CONSTRAINT conversation_members_read_seq_nonnegative
                    CHECK (read_seq >= 0),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
-- "The conversations of a user" (conversation lists).
CREATE INDEX conversation_members_user
    ON conversation_members (user_id, conversation_id);
COMMENT ON TABLE conversation_members IS
    'Membership of users in conversations, with each member''s read marker.';
COMMENT ON COLUMN conversation_members.read_seq IS
    'The member has read up to this seq; unread = conversations.last_seq - read_seq';

-- Messages. UNIQUE (conversation_id, seq) is also the index history pages
-- by; UNIQUE (sender_id, client_msg_id) makes a retried send idempotent,
-- across reconnects and nodes, and is the index the retry is found by.
CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- A conversation that is deleted takes its messages with it.
    conversation_id bigint NOT NULL
                    REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint NOT NULL
                    CONSTRAINT messages_seq_positive CHECK (seq >= 1),
    -- RESTRICT: history is not rewritten by deleting an account.
    sender_id       bigint NOT NULL
                    REFERENCES users (id) ON DELETE RESTRICT,
    client_msg_id   text NOT NULL
                    CONSTRAINT messages_client_msg_id_length
                    CHECK (char_length(client_msg_id) BETWEEN 1 AND 64),
    body            text NOT NULL
                    CONSTRAINT messages_body_length
                    CHECK (octet_length(body) BETWEEN 1 AND 16384),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_conversation_seq UNIQUE (conversation_id, seq),
    CONSTRAINT messages_sender_client_msg_id UNIQUE (sender_id, client_msg_id)
);
COMMENT ON TABLE messages IS
    'Every stored message; seq numbers each conversation 1, 2, 3, ... without gaps.';
COMMENT ON COLUMN messages.seq IS
    'Position in its conversation, assigned in the commit that stores it';
COMMENT ON COLUMN messages.client_msg_id IS
    'The sender''s id for the send (1 to 64 characters): a retry returns the stored message';
COMMENT ON COLUMN messages.body IS
    'The message text, 1 to 16384 bytes of UTF-8. Private: no read-only role may read it.';

-- What happened, append-only: user_registration, user_login, user_logout,
-- message_read, conversation_created and security events. Dashboards read
-- it by time and by type over time. user_id has no foreign key on
-- purpose: the record of what happened outlives the account.
CREATE TABLE events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    type       text NOT NULL
               CONSTRAINT events_type_length
               CHECK (octet_length(type) BETWEEN 1 AND 64),
    user_id    bigint,
    detail     jsonb
);
CREATE INDEX events_created_at ON events (created_at);
CREATE INDEX events_type_created_at ON events (type, created_at);
COMMENT ON TABLE events IS
    'Append-only record of what happened (registrations, logins, reads, security events), for dashboards and audits.';
COMMENT ON COLUMN events.type IS
    'What happened: user_registration, user_login, user_logout, message_read, conversation_created, ...';
COMMENT ON COLUMN events.user_id IS
    'The user it concerns, NULL when none; deliberately not a foreign key';
COMMENT ON COLUMN events.detail IS
    'A small JSON object with the particulars, or NULL';
