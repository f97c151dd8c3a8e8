#!/usr/bin/env bash
# Start-up migrations never hang a process (common/db.c db_migrate): every wait is bounded and ends
# in an error that names the cause and what to do. With the old code each case below waited for
# ever (the scorer never exited: fs_wait_exit fails).
#   - the migration lock (advisory) held by another session: waited for at most
#     db-migrate-timeout-ms, then exit 1 naming the holder's pid; the scorer and the alerter's
#     operator commands alike. A holder that lets go in time is still waited for.
#   - a table lock a pending migration needs, held by an open transaction: given up after
#     db-migrate-lock-timeout-ms, nothing applied, the session named; applied once it is gone.
#   - without a lock timeout, the migration statement is cancelled at db-migrate-timeout-ms
#     (statement_timeout, or the client's cancel request, whichever comes first).
#   - a server that stops answering mid-migration (a TCP proxy in front of it holds back every reply
#     once the migration's SQL has passed): given up by the client at db-migrate-timeout-ms + 2 s
#     (what its cancel request causes never gets back to it).
#   - a migration whose statements each stay under db-migrate-timeout-ms but not their sum: the
#     client cancels it at the limit; nothing applied, no server session left at work.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup migrate_deadline
fs_pg_start

KEY=$((0x46534D4947)) # DB_MIGRATION_LOCK in common/db.c
n=$(ls "$REPO"/schemas/sql/*.sql | wc -l)
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# hold NAME SQL: a psql session (application_name NAME) that runs SQL, then sleeps in it; its
# server pid into $pid
hold() {
    fs_bg "$1" psql -X -q -d "$FS_DATABASE_URL?application_name=$1" -c "$2; SELECT pg_sleep(600)"
    fs_wait_for 10 "[[ \$(fs_psql \"SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1' AND query LIKE '%pg_sleep%'\") == 1 ]]"
    pid=$(fs_psql "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'")
}
release() { fs_psql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '$1'" >/dev/null; }
# scorer NAME [ENV=VALUE...]: a scorer that migrates, then gives up on an unreachable broker
scorer() {
    local name=$1
    shift
    fs_bg "$name" env FS_BROKERS=127.0.0.1:1 FS_STARTUP_TIMEOUT_MS=1500 "$@" "$BUILD/bin/fraudshield-scorer"
}
# failed_within NAME MIN_MS MAX_MS T0: NAME exited 1, between MIN and MAX ms after T0, without db_ready
failed_within() {
    fs_wait_exit "$1" 60
    local ms=$(($(now_ms) - $4))
    fs_assert_eq 1 "$FS_EXIT_STATUS" "$1: exit status"
    ((ms >= $2 && ms <= $3)) || fs_fail "$1 exited after $ms ms, expected $2..$3"
    echo "ok: $1 failed after $ms ms"
    ! grep -q '"event":"db_ready"' "$FS_TEST_DIR/$1.log" || fs_fail "$1 went on without its migrations"
}
expect_log() { grep -qF -- "$2" "$FS_TEST_DIR/$1.log" || fs_fail "$1: no '$2' in: $(grep -v '"level":"info"' "$FS_TEST_DIR/$1.log" | tail -3)"; }

# every migration applied once (the operator commands migrate too, and need no broker)
"$BUILD/bin/fraudshield-alerter" subscriptions list >/dev/null
fs_assert_eq "$n" "$(fs_psql "SELECT count(*) FROM schema_migrations")" "migrations applied"

echo "--- the migration lock held by another session"
hold lockholder "SELECT pg_advisory_lock($KEY)"
t0=$(now_ms)
scorer s_lock FS_DB_MIGRATE_TIMEOUT_MS=2000
failed_within s_lock 2000 12000 "$t0"
expect_log s_lock '"event":"migration_lock_wait"'
expect_log s_lock "another process has held the migration lock for longer than db-migrate-timeout-ms (2000 ms): pid $pid (lockholder"
expect_log s_lock 'pg_terminate_backend'
t0=$(now_ms)
rc=0
err=$(FS_DB_MIGRATE_TIMEOUT_MS=2000 timeout 60 "$BUILD/bin/fraudshield-alerter" subscriptions list 2>&1) || rc=$?
fs_assert_eq 1 "$rc" "alerter command's exit status behind the migration lock"
ms=$(($(now_ms) - t0))
((ms >= 2000 && ms <= 12000)) || fs_fail "the alerter command failed after $ms ms"
grep -qF "held the migration lock for longer than db-migrate-timeout-ms (2000 ms): pid $pid" <<<"$err" ||
    fs_fail "alerter command: $err"
# SIGTERM while waiting for the lock (or for the brokers): a clean stop at once, exit 0 (it waited
# out db-migrate-timeout-ms, then exit 1 as a start-up failure)
for proc in scorer alerter; do
    fs_bg "t_$proc" env FS_BROKERS=127.0.0.1:1 FS_ADMIN_PORT=-1 FS_DB_MIGRATE_TIMEOUT_MS=60000 \
        "$BUILD/bin/fraudshield-$proc"
    fs_wait_for 20 grep -q '"event":"migration_lock_wait"' "$FS_TEST_DIR/t_$proc.log"
    t0=$(now_ms)
    fs_kill "t_$proc" TERM
    fs_wait_exit "t_$proc" 20
    fs_assert_eq 0 "$FS_EXIT_STATUS" "$proc stopped behind the migration lock: exit status"
    (($(now_ms) - t0 <= 5000)) || fs_fail "$proc took $(($(now_ms) - t0)) ms to stop behind the migration lock"
    expect_log "t_$proc" '"event":"stopped_during_startup"'
done
release lockholder
fs_bg t_brokers env FS_BROKERS=127.0.0.1:1 FS_ADMIN_PORT=-1 FS_STARTUP_TIMEOUT_MS=60000 \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_for 20 grep -q '"event":"db_ready"' "$FS_TEST_DIR/t_brokers.log"
sleep 1 # in the wait for the brokers
t0=$(now_ms)
fs_kill t_brokers TERM
fs_wait_exit t_brokers 20
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer stopped while waiting for the brokers: exit status"
(($(now_ms) - t0 <= 5000)) || fs_fail "the scorer took $(($(now_ms) - t0)) ms to stop while waiting for the brokers"
expect_log t_brokers '"event":"stopped_during_startup"'
hold lockholder "SELECT pg_advisory_lock($KEY)"
# a holder that lets go within the bound: waited for, then the start-up goes on. The wait is
# logged at info at once (processes starting together wait for each other: not a problem), as a
# warning once it lasts 10 s.
scorer s_wait FS_DB_MIGRATE_TIMEOUT_MS=60000
fs_wait_for 20 grep -q '"event":"migration_lock_wait"' "$FS_TEST_DIR/s_wait.log"
grep '"event":"migration_lock_wait"' "$FS_TEST_DIR/s_wait.log" | head -1 | grep -q '"level":"info"' ||
    fs_fail "the first migration_lock_wait is not at info level"
fs_wait_for 20 grep -q '"level":"warn".*"event":"migration_lock_wait"' "$FS_TEST_DIR/s_wait.log"
release lockholder
fs_wait_for 20 grep -q '"event":"db_ready"' "$FS_TEST_DIR/s_wait.log"
fs_wait_exit s_wait 30

echo "--- a table lock a pending migration needs, held by an open transaction"
undo_006() { # 006 pending again (what it did undone)
    fs_psql "DROP INDEX alert_events_created_idx, outbox_produced_idx;
             DELETE FROM schema_migrations WHERE name = '006_alerter_retention'" >/dev/null
}
undo_006
# ROW EXCLUSIVE: what a transaction that wrote to alert_events and did not commit holds; the
# migration's CREATE INDEX needs SHARE, which conflicts with it
hold txholder "BEGIN; LOCK TABLE alert_events IN ROW EXCLUSIVE MODE"
t0=$(now_ms)
scorer s_table FS_DB_MIGRATE_LOCK_TIMEOUT_MS=1000
failed_within s_table 1000 10000 "$t0"
expect_log s_table "migration 006_alerter_retention: waited longer than db-migrate-lock-timeout-ms (1000 ms) for a lock another session holds"
expect_log s_table "nothing of it was applied"
expect_log s_table "pid $pid (txholder, active"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM schema_migrations WHERE name = '006_alerter_retention'")" "006 not recorded"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM pg_indexes WHERE indexname = 'alert_events_created_idx'")" "006's index not built"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")" "the migration lock released"

echo "--- no lock timeout: the statement is cancelled at db-migrate-timeout-ms"
t0=$(now_ms)
scorer s_stmt FS_DB_MIGRATE_LOCK_TIMEOUT_MS=0 FS_DB_MIGRATE_TIMEOUT_MS=1500
failed_within s_stmt 1500 9000 "$t0"
expect_log s_stmt "migration 006_alerter_retention ran longer than db-migrate-timeout-ms (1500 ms): cancelled and rolled back"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM schema_migrations WHERE name = '006_alerter_retention'")" "006 still not recorded"

echo "--- a server that stops answering mid-migration"
# the proxy passes 006 on and holds back every reply after it: its cancellation (and the error
# that would follow it) never gets through
pport=$(fs_free_port)
fs_bg proxy python3 "$REPO/tests/integration/tcp_proxy.py" "$pport" "$FS_PG_PORT" alert_events_created_idx
fs_wait_for 10 grep -q listening "$FS_TEST_DIR/proxy.log"
t0=$(now_ms)
scorer s_hang FS_DATABASE_URL="${FS_DATABASE_URL/:$FS_PG_PORT\//:$pport/}" \
    FS_DB_MIGRATE_LOCK_TIMEOUT_MS=0 FS_DB_MIGRATE_TIMEOUT_MS=4000
failed_within s_hang 6000 16000 "$t0"
grep -q "holding replies" "$FS_TEST_DIR/proxy.log" || fs_fail "the proxy never held 006's reply"
expect_log s_hang "migration 006_alerter_retention: PostgreSQL did not answer within 6000 ms (db-migrate-timeout-ms + 2000 ms): connection dropped"
expect_log s_hang '"event":"db_timeout"'

echo "--- the lock gone: applied"
release txholder
scorer s_ok
fs_wait_exit s_ok 60
expect_log s_ok '"event":"db_ready"'
expect_log s_ok 'applied migration 006_alerter_retention'
fs_assert_eq "$n" "$(fs_psql "SELECT count(*) FROM schema_migrations")" "every migration applied"

echo "--- a migration of several statements, none over the limit alone, longer than it in total"
# 006's two CREATE INDEX statements wait for a table lock each (alert_events, then outbox), held
# until 3.5 s and 7 s after the start: about 3.5 s per statement, under db-migrate-timeout-ms
# (4 s), so statement_timeout (per statement) never fires; the client cancels the migration at
# 4 s. Before, the client dropped the connection at 6 s ("did not answer") while the server
# session went on waiting, holding the migration lock.
undo_006
hold h_events "BEGIN; LOCK TABLE alert_events IN ROW EXCLUSIVE MODE"
hold h_outbox "BEGIN; LOCK TABLE outbox IN ROW EXCLUSIVE MODE"
release_both() { sleep 3.5; release h_events; sleep 3.5; release h_outbox; }
t0=$(now_ms)
scorer s_total FS_DB_MIGRATE_LOCK_TIMEOUT_MS=0 FS_DB_MIGRATE_TIMEOUT_MS=4000
fs_bg releaser release_both
failed_within s_total 4000 5800 "$t0"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'fraudshield-scorer%' AND state <> 'idle'")" "a scorer session still at work after its exit"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")" "the migration lock released"
expect_log s_total "migration 006_alerter_retention ran longer than db-migrate-timeout-ms (4000 ms): cancelled and rolled back; raise db-migrate-timeout-ms (0: no limit) and start again"
! grep -q '"event":"db_timeout"' "$FS_TEST_DIR/s_total.log" || fs_fail "s_total: the connection was dropped, not the migration cancelled"
! grep -q 'no transaction in progress' "$FS_TEST_DIR/s_total.log" || fs_fail "s_total: rolled back twice"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM schema_migrations WHERE name = '006_alerter_retention'")" "006 not recorded"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM pg_indexes WHERE indexname = 'alert_events_created_idx'")" "006's first index rolled back"
fs_wait_exit releaser 20
scorer s_ok2
fs_wait_exit s_ok2 60
expect_log s_ok2 'applied migration 006_alerter_retention'
fs_assert_eq "$n" "$(fs_psql "SELECT count(*) FROM schema_migrations")" "every migration applied"
echo "migrate deadlines ok"
