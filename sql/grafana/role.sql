-- role.sql: the group role Grafana's PostgreSQL datasource reads through.
--
-- Run once per database server, as a role with CREATEROLE (psql -f):
--   psql -v ON_ERROR_STOP=1 -d chatd -f sql/grafana/role.sql
-- then views.sql (as the owner of chatd's tables), then login.sql for the
-- role Grafana logs in as. Safe to run again.
--
-- chatd_grafana cannot log in. It is granted USAGE on the schema
-- `grafana` and SELECT on its views (views.sql), and nothing in `public`:
-- the tables themselves, and with them messages.body,
-- users.password_hash and sessions.token_hash, stay out of its reach.
-- The session limits (read only, statement_timeout) are set on the login
-- role by login.sql, because Postgres applies the settings of the role
-- that logs in, not those of the roles it is a member of.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chatd_grafana') THEN
        CREATE ROLE chatd_grafana NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOINHERIT NOREPLICATION;
    END IF;
END
$$;
COMMENT ON ROLE chatd_grafana IS
    'Read-only dashboards: SELECT on the views of schema grafana only (sql/grafana/).';
