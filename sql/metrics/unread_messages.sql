-- metric: chat_unread_messages
-- type: gauge
-- help: Unread messages summed over every member of every conversation (the monitoring guide's chat_unread_messages_total).
-- metric: chat_users_by_unread_messages
-- type: gauge
-- help: Registered users by how many unread messages they have, in fixed ranges.
-- labels: range
--
-- One query for both families: both need every membership joined to its
-- conversation, which is most of the work. Only memberships with
-- something unread are summed by user (one that has read everything adds
-- 0 to its user's sum). The ranges count users whose sum is at least 1,
-- 10, 100 and 1000; range "0" is every user but those whose sum is not 0,
-- users in no conversation included (a membership's user exists: foreign
-- key). A sum below 0 (a read marker past last_seq, which chatd never
-- writes) is in no range.
--
-- CAST AS integer keeps the per-user sums in machine integers on Postgres
-- (a bigint sum is numeric there, and slower); it would fail only for a
-- single membership more than 2^31 - 1 messages behind. CROSS JOIN makes
-- SQLite read conversations in order and each one's members by primary
-- key; Postgres plans it as any other join.
WITH per_user AS (
    SELECT sum(CAST(c.last_seq - m.read_seq AS integer)) AS unread
    FROM conversations c
    CROSS JOIN conversation_members m
    WHERE m.conversation_id = c.id AND m.read_seq <> c.last_seq
    GROUP BY m.user_id
),
totals AS MATERIALIZED (
    SELECT COALESCE(sum(unread), 0) AS unread,
           (SELECT count(*) FROM users) AS users,
           count(*) FILTER (WHERE unread <> 0) AS nonzero,
           count(*) FILTER (WHERE unread >= 1) AS ge1,
           count(*) FILTER (WHERE unread >= 10) AS ge10,
           count(*) FILTER (WHERE unread >= 100) AS ge100,
           count(*) FILTER (WHERE unread >= 1000) AS ge1000
    FROM per_user
)
SELECT metric, label, value FROM (
    SELECT 0 AS pos, 'chat_unread_messages' AS metric, NULL AS label,
           unread AS value FROM totals
    UNION ALL
    SELECT 1, 'chat_users_by_unread_messages', '0', users - nonzero
    FROM totals
    UNION ALL
    SELECT 2, 'chat_users_by_unread_messages', '1-9', ge1 - ge10 FROM totals
    UNION ALL
    SELECT 3, 'chat_users_by_unread_messages', '10-99', ge10 - ge100
    FROM totals
    UNION ALL
    SELECT 4, 'chat_users_by_unread_messages', '100-999', ge100 - ge1000
    FROM totals
    UNION ALL
    SELECT 5, 'chat_users_by_unread_messages', '1000+', ge1000 FROM totals
) AS samples
ORDER BY pos;
