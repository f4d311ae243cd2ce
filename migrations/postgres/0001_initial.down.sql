-- 0001_initial, undone: drops what 0001_initial.up.sql created, children
-- before the tables they reference (indexes, constraints, comments and
-- identity sequences go with their tables).
-- This deletes every account, conversation and message.
DROP TABLE events;
DROP TABLE messages;
DROP TABLE conversation_members;
DROP TABLE conversations;
DROP TABLE sessions;
DROP TABLE users;
