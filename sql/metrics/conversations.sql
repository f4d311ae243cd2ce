-- metric: chat_conversations
-- type: gauge
-- help: Conversations, by kind.
-- labels: kind
--
-- One pass over the table for both kinds (the CHECK on kind allows no
-- other), and a row for each kind even when it has no conversation.
WITH counts AS MATERIALIZED (
    SELECT count(*) FILTER (WHERE kind = 'direct') AS direct,
           count(*) FILTER (WHERE kind = 'group') AS grp
    FROM conversations
)
SELECT 'direct', direct FROM counts
UNION ALL
SELECT 'group', grp FROM counts;
