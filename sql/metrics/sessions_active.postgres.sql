-- metric: chat_sessions_active
-- type: gauge
-- help: Login sessions that have not expired or been logged out.
SELECT count(*) FROM sessions WHERE expires_at > now();
