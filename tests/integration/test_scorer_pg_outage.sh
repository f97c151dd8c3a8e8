#!/usr/bin/env bash
# PostgreSQL outage: a scorer consumes a stream of N payments; PostgreSQL is stopped for ~5 s
# mid-stream and started again on the same port. The scorer must wait and retry the same batch
# (never commit past unpersisted messages, never dead-letter because of the outage): in the end
# exactly N rows, exactly the produced ids, nothing on the DLQ, and the scorer still running.
# Then: SIGTERM during a second outage abandons the batch in hand without committing it.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_pg_outage
fs_pg_start
fs_broker_start 6
gen="$REPO/tests/integration/gen_raw_payments.sh"
run=$((RANDOM + 1000))
n=${FS_OUTAGE_N:-3000}
export KAFKA_SESSION_TIMEOUT_MS=6000 KAFKA_HEARTBEAT_INTERVAL_MS=500 # quick rejoin (dev broker)


fs_bg scorer env FS_SCORER_ID=scorer-outage FS_RULES_FILE="$REPO/schemas/rules/default.json" \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer.log"

bash "$gen" "$run" "$n" 500 >"$FS_TEST_DIR/payments.txt"
(
    split -l 100 "$FS_TEST_DIR/payments.txt" "$FS_TEST_DIR/chunk."
    for f in "$FS_TEST_DIR"/chunk.*; do
        cat "$f"
        sleep 0.2
    done
) | kcat -b "$FS_BROKERS" -P -t raw_payments -K: &
producer=$!
FS_ALL_PIDS+=("$producer") # stopped by the cleanup if the test fails first

fs_wait_for 60 fs_rows_at_least decisions $((n / 5))
fs_pg_stop fast
echo "PostgreSQL stopped"
sleep 5
fs_alive scorer || fs_fail "the scorer exited while PostgreSQL was down"
fs_pg_restart
echo "PostgreSQL started again"

wait "$producer" || fs_fail "producing the stream failed"
fs_wait_for 120 fs_rows_at_least decisions "$n"
sleep 2

fs_assert_eq "$n" "$(fs_rows payments)" "payments rows"
fs_assert_eq "$n" "$(fs_rows decisions)" "decisions rows"
expected=$(sed 's/.*"payment_id":"\([^"]*\)".*/\1/' "$FS_TEST_DIR/payments.txt" | sort)
[[ "$expected" == "$(fs_psql 'SELECT payment_id FROM payments ORDER BY 1')" ]] ||
    fs_fail "the persisted payment ids differ from the produced ones"
echo "ok: the persisted payment ids are exactly the produced ones"
fs_assert_eq $((2 * n)) "$(fs_rows velocity_events)" "velocity events (user + card per payment)"
fs_assert_eq 0 "$(fs_topic_count raw_payments.dlq)" "dead letters"
fs_wait_for 60 fs_topic_has processed_payments "$n"
grep -q '"event":"db_retry"' "$FS_TEST_DIR/scorer.log" ||
    fs_fail "the scorer never retried: the outage did not hit a batch"
fs_alive scorer || fs_fail "the scorer is not running any more"
retries=$(grep -c '"event":"db_retry"' "$FS_TEST_DIR/scorer.log")

# SIGTERM while PostgreSQL is down and a batch is in hand: the batch is abandoned, NOT committed,
# and the scorer still exits promptly and cleanly; a scorer started later processes it.
fs_pg_stop fast
bash "$gen" $((run + 1)) 100 500 | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
retried_again() { (($(grep -c '"event":"db_retry"' "$FS_TEST_DIR/scorer.log") > retries)); }
fs_wait_for 30 retried_again
fs_kill scorer TERM
fs_wait_exit scorer 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer exit status on SIGTERM with PostgreSQL down"
grep -q '"event":"batch_abandoned"' "$FS_TEST_DIR/scorer.log" || fs_fail "no batch_abandoned logged"
fs_pg_restart
fs_bg scorer2 env FS_SCORER_ID=scorer-outage-2 FS_RULES_FILE="$REPO/schemas/rules/default.json" \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_for 120 fs_rows_at_least decisions $((n + 100))
sleep 1
fs_assert_eq $((n + 100)) "$(fs_rows payments)" "payments after the abandoned batch was consumed again"
fs_assert_eq 0 "$(fs_topic_count raw_payments.dlq)" "dead letters"
fs_kill scorer2 TERM
fs_wait_exit scorer2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "second scorer exit status"
echo "scorer pg outage ok: $n + 100 payments, $retries retries during the outage"
