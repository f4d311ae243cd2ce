-- chatd:no-transaction
-- 0002_activity_indexes: what the metrics collector and dashboards read.
--
-- chat_active_users counts the senders of recent messages: without this
-- index that query would read every message ever sent. Built
-- CONCURRENTLY so that a live messages table is not locked against
-- writes while it builds (hence no transaction).
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_created_at
    ON messages (created_at);
