#!/usr/bin/env bash
# The alerter's start-up waits (PostgreSQL, the migrations, the brokers) with its admin endpoint
# already open, as the scorer's does: /health 200 (the process is alive: the kubelet's liveness
# probe leaves it alone), /ready 503 naming what it waits for, /metrics served. The old code
# opened the port only once PostgreSQL, the migrations and the topics were there: nothing answered
# (curl: connection refused), and in Kubernetes a PostgreSQL outage or a migration longer than the
# liveness budget (6 x 10 s) restarted it in a loop, rolling back the migration each time.
#   1. PostgreSQL down at start: /health 200, /ready 503 (starting: waiting for PostgreSQL ...),
#      /metrics with fs_alerter_ready 0, for as long as it waits.
#   2. SIGTERM while it waits for PostgreSQL, admin endpoint open: exit 0 within 5 s
#      (stopped_during_startup).
#   3. PostgreSQL back: the waiting alerter migrates, joins the group, /ready 200, fs_alerter_ready 1.
#   4. SIGTERM while it waits for the brokers: /ready 503 (waiting for the Kafka brokers ...), then
#      exit 0 within 5 s.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_startup
fs_pg_start
fs_broker_start 3
fs_pg_stop # the alerter starts while PostgreSQL is down; fs_pg_restart brings it back on its port

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# code NAME PATH: the HTTP status of the alerter's admin PATH (000: nothing answered)
code() { curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${AL_ADMIN[$1]}/$2" || true; }
ready_reason() { curl -s -m 5 "http://127.0.0.1:${AL_ADMIN[$1]}/ready" || true; }
expect_log() { grep -qF -- "$2" "$FS_TEST_DIR/$1.log" || fs_fail "$1: no '$2' in its log"; }
# stop_promptly NAME WHAT: SIGTERM, then exit 0 within 5 s, logged as a stop during start-up
stop_promptly() {
    local t0
    t0=$(now_ms)
    fs_kill "$1" TERM
    fs_wait_exit "$1" 20
    fs_assert_eq 0 "$FS_EXIT_STATUS" "$1: exit status after SIGTERM while waiting for $2"
    (($(now_ms) - t0 <= 5000)) || fs_fail "$1 took $(($(now_ms) - t0)) ms to stop while waiting for $2"
    expect_log "$1" '"event":"stopped_during_startup"'
}

echo "--- 1. PostgreSQL down at start"
al_start a1 FS_STARTUP_TIMEOUT_MS=300000
fs_wait_for 20 "(( \$(grep -c '\"event\":\"db_unavailable\"' '$FS_TEST_DIR/a1.log') >= 3 ))"
fs_assert_eq 200 "$(code a1 health)" "/health while PostgreSQL is down"
fs_assert_eq 503 "$(code a1 ready)" "/ready while PostgreSQL is down"
reason=$(ready_reason a1)
echo "/ready: $reason"
grep -qF '"reason":"starting: waiting for PostgreSQL' <<<"$reason" || fs_fail "/ready does not say it waits for PostgreSQL"
metrics=$(curl -fsS -m 5 "http://127.0.0.1:${AL_ADMIN[a1]}/metrics")
grep -qx 'fs_alerter_ready 0' <<<"$metrics" || fs_fail "/metrics has no fs_alerter_ready 0 while starting"
grep -q '^fs_alerter_db_errors_total{side="consume"} 0$' <<<"$metrics" || fs_fail "/metrics: no fs_alerter_db_errors_total"
sleep 3 # still answering a while later
fs_assert_eq 200 "$(code a1 health)" "/health 3 s later"
fs_assert_eq 503 "$(code a1 ready)" "/ready 3 s later"

echo "--- 2. SIGTERM while waiting for PostgreSQL"
al_start a2 FS_STARTUP_TIMEOUT_MS=300000
fs_wait_for 20 grep -q '"event":"db_unavailable"' "$FS_TEST_DIR/a2.log"
fs_assert_eq 200 "$(code a2 health)" "a2: /health while PostgreSQL is down"
stop_promptly a2 PostgreSQL

echo "--- 3. PostgreSQL back"
fs_pg_restart
al_wait_assigned a1
expect_log a1 '"event":"db_ready"'
fs_assert_eq "$(ls "$REPO"/schemas/sql/*.sql | wc -l)" "$(fs_psql 'SELECT count(*) FROM schema_migrations')" "migrations applied"
fs_assert_eq 200 "$(code a1 ready)" "/ready once started"
fs_assert_eq 1 "$(al_metric a1 fs_alerter_ready)" "fs_alerter_ready once started"

echo "--- 4. SIGTERM while waiting for the brokers"
al_start a3 FS_BROKERS="127.0.0.1:$(fs_free_port)" FS_STARTUP_TIMEOUT_MS=300000
fs_wait_for 30 "ready_reason a3 | grep -qF 'starting: waiting for the Kafka brokers'"
fs_assert_eq 200 "$(code a3 health)" "a3: /health while the brokers are away"
stop_promptly a3 'the brokers'

fs_kill a1 TERM
fs_wait_exit a1 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "a1: exit status"
echo PASS
