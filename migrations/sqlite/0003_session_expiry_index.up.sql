-- 0003_session_expiry_index: the live sessions, by when they expire.
--
-- chat_sessions_active counts the sessions that have not expired: with
-- this index it reads only those entries instead of every session ever
-- opened, expired ones included. Sessions are written at login and
-- logout, never when a message is sent.
CREATE INDEX sessions_expires_at ON sessions (expires_at);
