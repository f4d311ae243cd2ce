-- metric: chat_users
-- type: gauge
-- help: Registered users.
SELECT count(*) FROM users;
