-- metric: chat_active_users
-- type: gauge
-- help: Distinct users who sent a message, logged in or read in the last 5 minutes.
SELECT count(*) FROM (
    SELECT sender_id AS user_id FROM messages
    WHERE created_at > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - 300000
    UNION
    SELECT user_id FROM events
    WHERE created_at > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - 300000
      AND user_id IS NOT NULL
      AND type IN ('user_login', 'message_read')
);
