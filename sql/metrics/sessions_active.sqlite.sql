-- metric: chat_sessions_active
-- type: gauge
-- help: Login sessions that have not expired or been logged out.
SELECT count(*) FROM sessions
WHERE expires_at > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER);
