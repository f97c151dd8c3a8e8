#!/usr/bin/env bash
# A batch whose outputs cannot be delivered (the brokers go down between the database commit and
# the produce; librdkafka times the messages out after message.timeout.ms) is produced again until
# every output is delivered, and only then committed:
#   - the worker logs produce_retry and does not commit meanwhile (a second worker started after it
#     stops finds nothing uncommitted: no redelivered payment);
#   - once the brokers are back every payment is on processed_payments and every alert on
#     fraud_alerts: none given up (the guarantee: persist, produce, then commit).
# Timing without sleeps: a transaction holding payments' lock stops the batch inside its database
# transaction; the brokers go down; the lock is released, so the batch commits and produces into
# brokers that are down.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_produce_retry
fs_pg_start
fs_broker_start 1
n=40 # 5 users: 8 payments each within a minute, so the velocity rules flag some (alerts)
export FS_RULES_FILE="$REPO/schemas/rules/default.json"
export KAFKA_MESSAGE_TIMEOUT_MS=2000 # for the producer; the consumers ignore it (a warning)

fs_bg scorer1 env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer1.log"

# The lock holder: keeps payments locked until the test cancels it.
fs_bg locker psql "$FS_DATABASE_URL" -X -q -v ON_ERROR_STOP=0 -c \
    "BEGIN; LOCK TABLE payments IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600) /* fs locker */; COMMIT;"
fs_wait_for 10 "[[ \$(fs_psql \"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
    WHERE c.relname = 'payments' AND l.mode = 'AccessExclusiveLock' AND l.granted\") == 1 ]]"
bash "$REPO/tests/integration/gen_raw_payments.sh" $((RANDOM + 1000)) "$n" 5 | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
# the worker waits on the lock inside its batch transaction
fs_wait_for 60 "[[ \$(fs_psql \"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
    AND application_name LIKE 'fraudshield-scorer%'\") -ge 1 ]]"
fs_broker_down
fs_psql "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%/* fs locker */%' AND pid <> pg_backend_pid()" >/dev/null
fs_wait_exit locker 10
fs_wait_for 30 "[[ \$(fs_psql 'SELECT count(*) FROM decisions') == $n ]]"
echo "the batch is in PostgreSQL; its outputs go to brokers that are down"
fs_wait_for 30 grep -q '"event":"produce_retry"' "$FS_TEST_DIR/scorer1.log" # the old code: committed anyway?
grep -q '"event":"delivery_failed"' "$FS_TEST_DIR/scorer1.log" || fs_fail "no delivery_failed logged"
fs_broker_up

flagged=$(fs_psql "SELECT count(*) FROM decisions WHERE decision <> 'allow'")
((flagged > 0)) || fs_fail "no flagged payments: the alert path was not exercised"
fs_wait_for 60 fs_topic_has processed_payments "$n"
keys=$(timeout 60 kcat -b "$FS_BROKERS" -C -t processed_payments -o beginning -e -q -f '%k\n' | sort -u | wc -l)
fs_assert_eq "$n" "$keys" "distinct payments on processed_payments"
fs_wait_for 60 fs_topic_has fraud_alerts "$flagged"
# committed once delivered: the worker stops, a second one finds nothing left to redo
fs_kill scorer1 TERM
fs_wait_exit scorer1 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status"
fs_bg scorer2 env FS_SCORER_ID=scorer-2 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer2.log"
sleep 2 # a redelivery would reach scorer-2 within its first fetch
fs_kill scorer2 TERM
fs_wait_exit scorer2 30
fs_assert_eq 0 "$(grep '"event":"stopped"' "$FS_TEST_DIR/scorer2.log" | jq .messages)" "messages redelivered to scorer-2"
fs_assert_eq "$n|$n" "$(fs_psql 'SELECT count(*), count(DISTINCT payment_id) FROM payments')" "payments"
echo "scorer produce retry ok"
