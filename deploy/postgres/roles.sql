-- The group roles of FraudShield's schema, for a PostgreSQL where the service login may not create
-- or grant roles (a managed PostgreSQL). Run as an administrator, before the first start and again
-- after upgrades (idempotent):
--
--   psql -v ON_ERROR_STOP=1 -d fraudshield -f deploy/postgres/roles.sql
--
-- fraudshield_analyst: read-only (each migration grants it what it may read; docs/analyst.md).
-- fraudshield_reviewer: the analyst's reads plus reviewer_acknowledge / reviewer_resolve
-- (migration 007). Where the service login may create roles, the migrations do all of this
-- themselves; without that right migration 007 warns and leaves the reviewer part to this file.
SELECT 'CREATE ROLE fraudshield_analyst NOLOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraudshield_analyst') \gexec
SELECT 'CREATE ROLE fraudshield_reviewer NOLOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraudshield_reviewer') \gexec
GRANT fraudshield_analyst TO fraudshield_reviewer;
-- once migration 007 has created the functions (before it, nothing to grant yet)
SELECT 'GRANT EXECUTE ON FUNCTION reviewer_acknowledge(uuid), reviewer_resolve(uuid, text, text) '
       'TO fraudshield_reviewer'
WHERE to_regprocedure('reviewer_acknowledge(uuid)') IS NOT NULL \gexec
-- Databases created by PostgreSQL 14 or older let every role create objects in schema public
-- (migration 009 explains the danger; it revokes this itself where the service login owns the
-- schema). The service login (the owner of the schema's tables) keeps the right by its own grant:
-- later migrations create tables. Before the first start (no tables yet) nothing changes here:
-- run this file again after it.
SELECT format('GRANT CREATE ON SCHEMA public TO %I', pg_get_userbyid(relowner))
FROM pg_class WHERE oid = to_regclass('public.payments') \gexec
SELECT 'REVOKE CREATE ON SCHEMA public FROM PUBLIC'
WHERE to_regclass('public.payments') IS NOT NULL \gexec
