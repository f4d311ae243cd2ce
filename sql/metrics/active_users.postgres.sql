-- metric: chat_active_users
-- type: gauge
-- help: Distinct users who sent a message, logged in or read in the last 5 minutes.
SELECT count(*) FROM (
    SELECT sender_id AS user_id FROM messages
    WHERE created_at > now() - interval '5 minutes'
    UNION
    SELECT user_id FROM events
    WHERE created_at > now() - interval '5 minutes' AND user_id IS NOT NULL
      AND type IN ('user_login', 'message_read')
) AS active;
