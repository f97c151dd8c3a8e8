#!/usr/bin/env bash
# A batch whose outputs cannot be delivered after its database commit (the dev broker fails every
# produce request: --hup-fault=produce, toggled by SIGHUP) is produced again until every output is
# delivered, and only then committed:
#   1. the fault clears: the worker's retry delivers every output (processed_payments, fraud_alerts)
#      and commits; a worker started after it consumes nothing again (sentinels);
#   2. the worker is killed while its outputs keep failing: it must not have committed, so the next
#      worker gets the batch again (redelivered: the decisions stored the first time) and produces
#      its outputs. A worker that committed before its outputs were delivered loses them here.
# Timing without sleeps: a transaction holding payments' lock stops the batch inside its database
# transaction while the fault is switched on; the lock is released, the batch commits and produces.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_produce_retry
fs_pg_start
FS_HUP_FAULT=produce fs_broker_start 1
n=40 # 5 users: 8 payments each within a minute, so the velocity rules flag some (alerts)
export FS_RULES_FILE="$REPO/schemas/rules/default.json"
declare -A admin
start() {
    admin[$1]=$(fs_free_port)
    fs_bg "$1" env FS_SCORER_ID="$1" FS_ADMIN_PORT="${admin[$1]}" "$BUILD/bin/fraudshield-scorer"
    fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/$1.log"
}
messages() { curl -s "http://127.0.0.1:${admin[$1]}/metrics" | awk '$1 == "fs_scorer_messages_total" { print $2 }'; }
retries() { grep -c '"event":"produce_retry"' "$FS_TEST_DIR/$1.log" || true; }
# stall NAME: n new payments reach NAME's batch transaction, the produce fault goes on, the batch
# commits in PostgreSQL and its outputs fail (NAME logs produce_retry)
stall() {
    local name=$1 before
    before=$(retries "$name")
    fs_bg locker psql "$FS_DATABASE_URL" -X -q -c \
        "BEGIN; LOCK TABLE payments IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600) /* fs locker */; COMMIT;"
    fs_wait_for 10 "[[ \$(fs_psql \"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
        WHERE c.relname = 'payments' AND l.mode = 'AccessExclusiveLock' AND l.granted\") == 1 ]]"
    bash "$REPO/tests/integration/gen_raw_payments.sh" $((RANDOM + 1000)) "$n" 5 |
        kcat -b "$FS_BROKERS" -P -t raw_payments -K:
    fs_wait_for 60 "[[ \$(fs_psql \"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
        AND application_name LIKE 'fraudshield-scorer%'\") -ge 1 ]]"
    fs_commit_fault # on: every produce request fails
    fs_psql "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%/* fs locker */%' AND pid <> pg_backend_pid()" >/dev/null
    fs_wait_exit locker 10
    fs_wait_for 30 "(( \$(retries $name) > $before ))"
    echo "$name: a batch is in PostgreSQL, its outputs fail"
}
flagged() { fs_psql "SELECT count(*) FROM decisions WHERE decision <> 'allow'"; }

echo "-- 1. the fault clears: retried, delivered, committed"
start scorer1
stall scorer1
grep -q '"event":"delivery_failed"' "$FS_TEST_DIR/scorer1.log" || fs_fail "no delivery_failed logged"
fs_commit_fault # off
fs_wait_for 60 "[[ \$(fs_psql 'SELECT count(*) FROM decisions') == $n ]]"
fs_wait_for 60 fs_topic_has processed_payments "$n"
keys=$(timeout 60 kcat -b "$FS_BROKERS" -C -t processed_payments -o beginning -e -q -f '%k\n' | sort -u | wc -l)
fs_assert_eq "$n" "$keys" "distinct payments on processed_payments"
((flagged1 = $(flagged))) || fs_fail "no flagged payments: the alert path was not exercised"
fs_wait_for 60 fs_topic_has fraud_alerts "$flagged1"
fs_kill scorer1 TERM
fs_wait_exit scorer1 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer1 exit status"
start scorer2
fs_sentinels 1 >/dev/null
fs_assert_eq 1 "$(messages scorer2)" "messages scorer2 consumed (the sentinel only: scorer1 committed)"

echo "-- 2. killed while its outputs fail: nothing committed, the next worker produces them"
stall scorer2
stored=$(($(fs_psql "SELECT count(*) FROM decisions WHERE scorer_id = 'scorer2'") - 1)) # less its sentinel
fs_kill scorer2 KILL
fs_wait_exit scorer2 10
fs_commit_fault # off
start scorer3
total=$((2 * n + 1))
fs_wait_for 60 "[[ \$(fs_psql 'SELECT count(*) FROM decisions') == $total ]]"
fs_wait_for 60 "[[ \$(timeout 30 kcat -b \"$FS_BROKERS\" -C -t processed_payments -o beginning -e -q -f '%k\n' | sort -u | wc -l) == $total ]]"
fs_wait_for 60 fs_topic_has fraud_alerts "$(flagged)"
fs_kill scorer3 TERM
fs_wait_exit scorer3 30
redelivered=$(grep '"event":"stopped"' "$FS_TEST_DIR/scorer3.log" | jq .payments_redelivered)
((redelivered == stored)) ||
    fs_fail "scorer3 got $redelivered of the $stored payments scorer2 stored without committing"
echo "ok: $redelivered of scorer2's $stored uncommitted payments came again and were produced"
echo "scorer produce retry ok"
