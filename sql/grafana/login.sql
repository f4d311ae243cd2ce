-- login.sql: the role Grafana logs in as, a member of chatd_grafana.
--
-- Run as a role with CREATEROLE, with the name and password as psql
-- variables (the password never lands in a file of this repository):
--   psql -v ON_ERROR_STOP=1 -d chatd -v user=grafana_reader \
--        -v password="$GRAFANA_DB_PASSWORD" -f sql/grafana/login.sql
-- Running it again for an existing role sets its password and limits anew.
--
-- The limits are set on this role itself (a member does not get its group
-- role's settings): every transaction is read only, a statement runs at
-- most 10 s (a dashboard refresh must not hold a connection for minutes),
-- an idle transaction is ended after 30 s, and at most 5 connections.
SELECT format('CREATE ROLE %I LOGIN', :'user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT
    NOREPLICATION CONNECTION LIMIT 5 PASSWORD :'password';
GRANT chatd_grafana TO :"user";
ALTER ROLE :"user" SET default_transaction_read_only = on;
ALTER ROLE :"user" SET statement_timeout = '10s';
ALTER ROLE :"user" SET idle_in_transaction_session_timeout = '30s';
ALTER ROLE :"user" SET search_path = grafana;
