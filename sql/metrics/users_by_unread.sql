-- metric: chat_users_by_unread_messages
-- type: gauge
-- help: Registered users by how many unread messages they have, in fixed ranges.
-- labels: range
WITH per_user AS (
    SELECT u.id AS user_id, COALESCE(sum(c.last_seq - m.read_seq), 0) AS unread
    FROM users u
    LEFT JOIN conversation_members m ON m.user_id = u.id
    LEFT JOIN conversations c ON c.id = m.conversation_id
    GROUP BY u.id
),
ranges (name, lo, hi) AS (
    VALUES ('0', 0, 0), ('1-9', 1, 9), ('10-99', 10, 99),
           ('100-999', 100, 999), ('1000+', 1000, 9223372036854775807)
)
SELECT ranges.name, count(per_user.user_id)
FROM ranges
LEFT JOIN per_user ON per_user.unread BETWEEN ranges.lo AND ranges.hi
GROUP BY ranges.name, ranges.lo
ORDER BY ranges.lo;
