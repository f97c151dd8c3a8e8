#!/usr/bin/env bash
# Schema migrations: applied once with the SHA-256 of their text; rows recorded before checksums
# adopt the current one; an applied migration whose text no longer matches stops the start-up
# with an error naming it (instead of a schema that differs from what the code expects).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup db_migrations
fs_pg_start
# A scorer migrates first and then gives up on an unreachable broker: enough to exercise db_migrate.
migrate() { # migrate NAME: runs it to the end; its log is $FS_TEST_DIR/NAME.log
    fs_bg "$1" env FS_BROKERS=127.0.0.1:1 FS_STARTUP_TIMEOUT_MS=1500 "$BUILD/bin/fraudshield-scorer"
    fs_wait_exit "$1" 60
}
n=$(ls "$REPO"/schemas/sql/*.sql | wc -l)

migrate first
grep -q '"event":"db_ready"' "$FS_TEST_DIR/first.log" || fs_fail "the first start did not migrate"
fs_assert_eq "$n" "$(fs_psql "SELECT count(*) FROM schema_migrations WHERE sha256 ~ '^[0-9a-f]{64}\$'")" "migrations recorded with a checksum"
sum=$(sha256sum "$REPO/schemas/sql/001_init.sql" | cut -c1-64)
fs_assert_eq "$sum" "$(fs_psql "SELECT sha256 FROM schema_migrations WHERE name = '001_init'")" "checksum of 001_init = sha256 of the file"

# A database migrated before checksums existed: the current text is adopted.
fs_psql "UPDATE schema_migrations SET sha256 = NULL WHERE name = '002_alerter'" >/dev/null
migrate second
grep -q '"event":"db_ready"' "$FS_TEST_DIR/second.log" || fs_fail "a row without checksum stopped the start-up"
fs_assert_eq "$(sha256sum "$REPO/schemas/sql/002_alerter.sql" | cut -c1-64)" "$(fs_psql "SELECT sha256 FROM schema_migrations WHERE name = '002_alerter'")" "checksum adopted"

# A migration edited after it was applied: refused, named, nothing else done.
fs_psql "UPDATE schema_migrations SET sha256 = repeat('0', 64) WHERE name = '003_features'" >/dev/null
migrate third
fs_assert_eq 1 "$FS_EXIT_STATUS" "exit status with a changed migration"
grep -q 'migration 003_features was changed after this database applied it' "$FS_TEST_DIR/third.log" ||
    fs_fail "no error naming the changed migration: $(tail -3 "$FS_TEST_DIR/third.log")"
! grep -q '"event":"db_ready"' "$FS_TEST_DIR/third.log" || fs_fail "the scorer went on with a changed migration"
echo "db migrations ok"
