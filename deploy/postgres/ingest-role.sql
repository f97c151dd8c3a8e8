-- The login of ingest's read API (GET /api/v1/payments/{id}): fraudshield_ingest, read-only as a
-- member of fraudshield_analyst (SELECT on what each migration grants it, payments and decisions
-- among them, and nothing else; docs/analyst.md). Ingest only reads payments and decisions; it never needs the service
-- role, which owns the schema and writes everything.
--
--   psql -v ON_ERROR_STOP=1 -v pw="$INGEST_PGPASSWORD" -f deploy/postgres/ingest-role.sql
--
-- Run it as a role that may create roles (the service role of docker-compose.yml is one; on a
-- managed PostgreSQL, its administrator). Before or after the migrations: it creates
-- fraudshield_analyst itself when missing (003_features then only grants to it). Idempotent;
-- running it again with another pw changes the password.
SELECT 'CREATE ROLE fraudshield_analyst NOLOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraudshield_analyst') \gexec
SELECT 'CREATE ROLE fraudshield_ingest LOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraudshield_ingest') \gexec
ALTER ROLE fraudshield_ingest LOGIN PASSWORD :'pw';
GRANT fraudshield_analyst TO fraudshield_ingest;
