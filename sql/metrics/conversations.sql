-- metric: chat_conversations
-- type: gauge
-- help: Conversations, by kind.
-- labels: kind
WITH kinds (kind) AS (VALUES ('direct'), ('group'))
SELECT kinds.kind, count(c.id)
FROM kinds
LEFT JOIN conversations c ON c.kind = kinds.kind
GROUP BY kinds.kind
ORDER BY kinds.kind;
