-- metric: chat_unread_messages
-- type: gauge
-- help: Unread messages summed over every member of every conversation (the monitoring guide's chat_unread_messages_total).
SELECT COALESCE(sum(c.last_seq - m.read_seq), 0)
FROM conversation_members m
JOIN conversations c ON c.id = m.conversation_id;
