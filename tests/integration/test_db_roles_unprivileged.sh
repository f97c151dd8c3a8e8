#!/usr/bin/env bash
# Migrations under a service login that may not create or grant roles (a managed PostgreSQL whose
# administrator created fraudshield_analyst, as deploy/postgres/ingest-role.sql describes): every
# migration applies (a role the login cannot create is a logged warning, never a failed start-up),
# and deploy/postgres/roles.sql, run afterwards as the administrator, completes the reviewer role
# and takes CREATE on schema public from PUBLIC (the service login keeps it: later migrations).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup db_roles_unprivileged
fs_pg_start

# the administrator: a plain login owning the database, and the analyst role made beforehand
fs_psql "CREATE ROLE svc LOGIN NOCREATEROLE" >/dev/null
fs_psql "CREATE DATABASE fs_svc OWNER svc" >/dev/null
fs_psql "CREATE ROLE fraudshield_analyst NOLOGIN" >/dev/null
svc_url="postgresql://svc@127.0.0.1:$FS_PG_PORT/fs_svc"
admin() { psql "postgresql://postgres@127.0.0.1:$FS_PG_PORT/fs_svc" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# a database from PostgreSQL 14 or older (or a managed one): schema public belongs to the
# administrator, and every role may create in it (svc creates its tables through that right)
admin -c "ALTER SCHEMA public OWNER TO postgres; GRANT CREATE ON SCHEMA public TO PUBLIC"

# A scorer migrates first and then gives up on an unreachable broker.
fs_bg migrate env FS_DATABASE_URL="$svc_url" FS_BROKERS=127.0.0.1:1 FS_STARTUP_TIMEOUT_MS=1500 \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_exit migrate 60
grep -q '"event":"db_ready"' "$FS_TEST_DIR/migrate.log" ||
    fs_fail "migrations failed under a login without CREATEROLE: $(grep -v '"level":"info"' "$FS_TEST_DIR/migrate.log" | tail -3)"
n=$(ls "$REPO"/schemas/sql/*.sql | wc -l)
fs_assert_eq "$n" "$(admin -c 'SELECT count(*) FROM schema_migrations')" "migrations applied as svc"
grep -q '"event":"pg_warning".*fraudshield_reviewer not created' "$FS_TEST_DIR/migrate.log" ||
    fs_fail "no warning about the reviewer role in the log"
fs_assert_eq 0 "$(admin -c "SELECT count(*) FROM pg_roles WHERE rolname = 'fraudshield_reviewer'")" "no reviewer role yet"
fs_assert_eq t "$(admin -c "SELECT has_table_privilege('fraudshield_analyst', 'payments', 'SELECT')")" "analyst reads payments"

grep -q '"event":"pg_warning".*every role may still create objects in schema public' "$FS_TEST_DIR/migrate.log" ||
    fs_fail "no warning that svc could not revoke CREATE on public (009)"

# the administrator completes it; twice (idempotent)
for run in 1 2; do admin -f "$REPO/deploy/postgres/roles.sql" >/dev/null; done
fs_assert_eq f "$(admin -c "SELECT has_schema_privilege('public', 'public', 'CREATE')")" "PUBLIC may create in public"
fs_assert_eq t "$(admin -c "SELECT has_schema_privilege('svc', 'public', 'CREATE')")" "the service login may create in public"
psql "$svc_url" -X -q -v ON_ERROR_STOP=1 -c "CREATE TABLE fs_future (k int); DROP TABLE fs_future" ||
    fs_fail "after roles.sql the service login cannot create tables (a later migration would fail)"
fs_assert_eq t "$(admin -c "SELECT pg_has_role('fraudshield_reviewer', 'fraudshield_analyst', 'MEMBER')")" "reviewer is an analyst"
fs_assert_eq t "$(admin -c "SELECT has_function_privilege('fraudshield_reviewer', 'reviewer_resolve(uuid, text, text)', 'EXECUTE')")" "reviewer may resolve"
fs_assert_eq f "$(admin -c "SELECT has_function_privilege('fraudshield_analyst', 'reviewer_resolve(uuid, text, text)', 'EXECUTE')")" "the analyst may not"

# a later start as svc (the roles now exist) goes through too
fs_bg again env FS_DATABASE_URL="$svc_url" FS_BROKERS=127.0.0.1:1 FS_STARTUP_TIMEOUT_MS=1500 \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_exit again 60
grep -q '"event":"db_ready"' "$FS_TEST_DIR/again.log" || fs_fail "the second start failed"
echo "ok: migrations under an unprivileged service login"
