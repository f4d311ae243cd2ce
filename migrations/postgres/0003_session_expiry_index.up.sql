-- chatd:no-transaction
-- 0003_session_expiry_index: the live sessions, by when they expire.
--
-- chat_sessions_active counts the sessions that have not expired: with
-- this index it reads only those entries (an index-only scan) instead of
-- every session ever opened, expired ones included, which stay until
-- their user logs out. Sessions are written at login and logout, never
-- when a message is sent. Built CONCURRENTLY so that logins are not
-- blocked while it builds (hence no transaction).
CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_expires_at
    ON sessions (expires_at);
