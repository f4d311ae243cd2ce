-- views.sql: what Grafana's PostgreSQL datasource may read, and nothing more.
--
-- Run as the owner of chatd's tables (the role that runs `chatd migrate`),
-- after role.sql and after every `chatd migrate up`:
--   psql -v ON_ERROR_STOP=1 -d chatd -f sql/grafana/views.sql
-- Safe to run again: the schema is created if missing, every view is
-- replaced.
--
-- The views live in their own schema, `grafana`, so that the read-only
-- role needs no right at all in `public`. They run with their owner's
-- rights (not security_invoker), which is what lets chatd_grafana read
-- them without a grant on the tables. No view exposes messages.body,
-- messages.client_msg_id, conversations.title, users.password_hash,
-- sessions.token_hash or events.detail (it may hold addresses): only
-- times, ids, kinds and counts.
--
-- Time-series views return rows with their timestamp column untouched, so
-- that Grafana's $__timeFilter(created_at) becomes a range on an indexed
-- column (messages_created_at, events_created_at) and a dashboard reads
-- only the rows of its time range.
CREATE SCHEMA IF NOT EXISTS grafana;
COMMENT ON SCHEMA grafana IS
    'Views for dashboards (sql/grafana/views.sql): no message bodies, password hashes or tokens.';

-- One row per message, without its contents. Messages per minute:
--   SELECT $__timeGroupAlias(created_at, '1m'), count(*) AS messages
--   FROM grafana.message_activity WHERE $__timeFilter(created_at) GROUP BY 1 ORDER BY 1
CREATE OR REPLACE VIEW grafana.message_activity AS
SELECT m.id AS message_id, m.conversation_id, c.kind, m.seq, m.sender_id,
       m.created_at
FROM messages m
JOIN conversations c ON c.id = m.conversation_id;
COMMENT ON VIEW grafana.message_activity IS
    'One row per message: ids, conversation kind, time. Never the body.';

-- Messages per minute over the last 24 hours, ready to chart as it is.
CREATE OR REPLACE VIEW grafana.messages_per_minute AS
SELECT date_trunc('minute', created_at) AS minute, count(*) AS messages
FROM messages
WHERE created_at >= now() - interval '24 hours'
GROUP BY 1;
COMMENT ON VIEW grafana.messages_per_minute IS
    'Messages stored per minute, last 24 hours.';

-- What happened, by type and time, without the detail (which may hold a
-- remote address). Registrations and logins over time come from here.
CREATE OR REPLACE VIEW grafana.events AS
SELECT id AS event_id, created_at, type, user_id
FROM events;
COMMENT ON VIEW grafana.events IS
    'The events table without its detail column: time, type, user id.';

-- Registrations, logins and logouts per hour over the last 30 days.
CREATE OR REPLACE VIEW grafana.account_activity_hourly AS
SELECT date_trunc('hour', created_at) AS hour,
       count(*) FILTER (WHERE type = 'user_registration') AS registrations,
       count(*) FILTER (WHERE type = 'user_login') AS logins,
       count(*) FILTER (WHERE type = 'user_logout') AS logouts
FROM events
WHERE created_at >= now() - interval '30 days'
  AND type IN ('user_registration', 'user_login', 'user_logout')
GROUP BY 1;
COMMENT ON VIEW grafana.account_activity_hourly IS
    'Registrations, logins and logouts per hour, last 30 days.';

-- Conversations by size and activity, never their title or messages.
-- last_seq is the number of messages: seqs are 1, 2, 3, ... without gaps.
CREATE OR REPLACE VIEW grafana.conversation_stats AS
SELECT c.id AS conversation_id, c.kind, c.created_at, c.last_activity,
       c.last_seq AS messages,
       (SELECT count(*) FROM conversation_members cm
        WHERE cm.conversation_id = c.id) AS members
FROM conversations c;
COMMENT ON VIEW grafana.conversation_stats IS
    'Per conversation: kind, member count, message count, last activity. No title, no contents.';

-- Who did something when: a message sent, or a login or read (events).
-- Active users in a window: count(DISTINCT user_id) over its rows.
CREATE OR REPLACE VIEW grafana.user_activity AS
SELECT created_at, sender_id AS user_id, 'message_sent'::text AS activity
FROM messages
UNION ALL
SELECT created_at, user_id, type
FROM events
WHERE user_id IS NOT NULL
  AND type IN ('user_login', 'message_read', 'user_registration');
COMMENT ON VIEW grafana.user_activity IS
    'One row per thing a user did (message sent, login, read), with its time.';

-- Distinct active users in the last 5 minutes, hour and day, as
-- chat_active_users counts them (5 minutes) and over longer windows.
CREATE OR REPLACE VIEW grafana.active_users AS
SELECT count(DISTINCT user_id) FILTER (WHERE created_at >= now() - interval '5 minutes') AS last_5_minutes,
       count(DISTINCT user_id) FILTER (WHERE created_at >= now() - interval '1 hour') AS last_hour,
       count(DISTINCT user_id) AS last_day
FROM grafana.user_activity
WHERE created_at >= now() - interval '24 hours';
COMMENT ON VIEW grafana.active_users IS
    'Distinct users active in the last 5 minutes, hour and day.';

-- Registered users and how many have at least one live session, without
-- names or hashes.
CREATE OR REPLACE VIEW grafana.user_totals AS
SELECT (SELECT count(*) FROM users) AS users,
       (SELECT count(DISTINCT user_id) FROM sessions
        WHERE expires_at > now()) AS users_with_session;
COMMENT ON VIEW grafana.user_totals IS
    'Registered users, and users with an unexpired session.';

GRANT USAGE ON SCHEMA grafana TO chatd_grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA grafana TO chatd_grafana;
