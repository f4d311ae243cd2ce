-- postgres-monitor.sql: the role prometheus-postgres-exporter logs in as.
--
-- Run as a role with CREATEROLE, the name and password as psql variables:
--   psql -v ON_ERROR_STOP=1 -d chatd -v user=chatd_monitor \
--        -v password="$POSTGRES_EXPORTER_PASSWORD" -f exporters/postgres-monitor.sql
-- Safe to run again (it sets the password and limits anew).
--
-- pg_monitor (built into Postgres 10 and later) lets it read the
-- statistics views (pg_stat_database, pg_stat_activity, pg_settings, ...)
-- and nothing of chatd's tables: the exporter never sees a message, a
-- name or a hash. Its sessions are read only and time-limited, so a stuck
-- statistics query cannot pile up, and it holds at most 3 connections.
SELECT format('CREATE ROLE %I LOGIN', :'user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT
    NOREPLICATION CONNECTION LIMIT 3 PASSWORD :'password';
GRANT pg_monitor TO :"user";
ALTER ROLE :"user" SET default_transaction_read_only = on;
ALTER ROLE :"user" SET statement_timeout = '5s';
ALTER ROLE :"user" SET lock_timeout = '1s';
