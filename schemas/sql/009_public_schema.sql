-- FraudShield schema: only the schema's owner creates objects in schema public (docs/upgrading.md
-- "009").
--
-- A database created by PostgreSQL 14 or older keeps, after an upgrade, the old default that every
-- role may CREATE in public. The read-only roles (analyst, reviewer) and the ingest login could
-- then create tables there, and, worse, functions: one whose argument types match closer than a
-- built-in's (public.to_json(text) against pg_catalog.to_json(anyelement)) is chosen by every
-- unqualified call, whatever the search_path order, and runs with the caller's privileges. The
-- alert workflow trigger (002) calls to_json while reviewer_resolve (007, SECURITY DEFINER) runs
-- as the schema's owner: an analyst's function would have run as the owner (test_db_analyst).
-- PostgreSQL 15 creates databases without that grant; this removes it from older ones. A login
-- that does not own the schema cannot revoke it: then a warning, never a failed start-up, and
-- deploy/postgres/roles.sql does it as an administrator.
DO $$
BEGIN
    IF has_schema_privilege('public', 'public', 'CREATE') THEN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC; -- a non-owner gets a warning, not an error
        IF has_schema_privilege('public', 'public', 'CREATE') THEN
            RAISE WARNING 'every role may still create objects in schema public (this login does '
                          'not own it): run deploy/postgres/roles.sql as an administrator';
        END IF;
    END IF;
END
$$;
