-- 0002_activity_indexes: what the metrics collector and dashboards read.
--
-- chat_active_users counts the senders of recent messages: without this
-- index that query would read every message ever sent.
CREATE INDEX messages_created_at ON messages (created_at);
