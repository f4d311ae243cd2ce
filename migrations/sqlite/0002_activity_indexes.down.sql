DROP INDEX messages_created_at;
