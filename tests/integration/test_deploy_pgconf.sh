#!/usr/bin/env bash
# deploy/postgres/fraudshield.conf (the PostgreSQL settings compose and make bench-scorer use)
# is valid for this PostgreSQL: a cluster including it starts, and every setting in the file is
# applied (pg_file_settings: no error, applied); deploy/postgres/initdb-tuning.sh adds the include
# line once however often it runs; docker-compose.yml mounts the file where that line points and
# runs the script at initialization.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup deploy_pgconf
conf="$REPO/deploy/postgres/fraudshield.conf"
script="$REPO/deploy/postgres/initdb-tuning.sh"

echo "--- the init script"
mkdir -p "$FS_TEST_DIR/vol"
echo "# initdb's file" >"$FS_TEST_DIR/vol/postgresql.conf"
PGDATA="$FS_TEST_DIR/vol" sh "$script"
PGDATA="$FS_TEST_DIR/vol" sh "$script" # a second run (a volume set up by hand before) adds nothing
line=$(grep -E '^include' "$FS_TEST_DIR/vol/postgresql.conf")
fs_assert_eq 1 "$(grep -c '^include' "$FS_TEST_DIR/vol/postgresql.conf")" "include lines after two runs"
target=$(sed -E "s/^include(_if_exists)? '([^']*)'.*/\\2/" <<<"$line")

echo "--- compose mounts the file there and runs the script"
grep -qE "^ *- \./deploy/postgres/fraudshield\.conf:$target:ro\$" "$REPO/docker-compose.yml" ||
    fs_fail "docker-compose.yml does not mount fraudshield.conf at $target"
grep -qE '^ *- \./deploy/postgres/initdb-tuning\.sh:/docker-entrypoint-initdb\.d/[^:]+\.sh:ro$' \
    "$REPO/docker-compose.yml" || fs_fail "docker-compose.yml does not run initdb-tuning.sh"

echo "--- PostgreSQL takes every setting"
FS_PG_CONF="include '$conf'" fs_pg_start
want=$(grep -cE '^[a-z_]+ *=' "$conf")
((want >= 5)) || fs_fail "only $want settings in $conf"
bad=$(fs_psql "SELECT string_agg(name || ': ' || coalesce(error, 'not applied'), ', ') FROM pg_file_settings WHERE sourcefile = '$conf' AND (error IS NOT NULL OR NOT applied)")
[[ -z "$bad" ]] || fs_fail "settings of fraudshield.conf not applied: $bad"
fs_assert_eq "$want" "$(fs_psql "SELECT count(*) FROM pg_file_settings WHERE sourcefile = '$conf'")" "settings read from the file"
fs_assert_eq "$(sed -nE 's/^shared_buffers *= *([^ #]+).*/\1/p' "$conf")" "$(fs_psql 'SHOW shared_buffers')" "shared_buffers in effect"
# durability is left at PostgreSQL's defaults (the scorers commit offsets after the commit returns)
! grep -qE '^(fsync|synchronous_commit|full_page_writes) *=' "$conf" || fs_fail "fraudshield.conf changes durability settings"
echo "ok: $want settings applied"
