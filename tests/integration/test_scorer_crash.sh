#!/usr/bin/env bash
# Crash: two scorers consume a stream of N payments produced while they run; one is killed with
# SIGKILL mid-stream (no commit, no leave), the other takes over its partitions, the killed one is
# restarted. Just before the kill every offset commit fails (the dev broker's commit fault), so the
# killed worker leaves batches it persisted but never committed: they are redelivered, and the
# test checks that they were. In the end: exactly N rows in payments and decisions with exactly
# the produced ids (none missing, none twice), exactly one velocity event per (entity, payment),
# every feature bucket series and the vault's times_seen summing to N (a redelivered payment is
# never counted twice: those are additive upserts, not keyed rows), every payment on
# processed_payments (duplicates allowed there: at-least-once with stable ids), nothing on the DLQ.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_crash
fs_pg_start
fs_broker_start 6
gen="$REPO/tests/integration/gen_raw_payments.sh"
run=$((RANDOM + 1000))
n=${FS_CRASH_N:-5000}
# The dev broker's coordinator holds each rebalance for the session timeout, and a killed member is
# only noticed after it: keep it short so the takeover happens within seconds.
export KAFKA_SESSION_TIMEOUT_MS=6000 KAFKA_HEARTBEAT_INTERVAL_MS=500
export FS_RULES_FILE="$REPO/schemas/rules/default.json"


fs_bg scorer1 env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
fs_bg scorer2 env FS_SCORER_ID=scorer-2 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer1.log"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer2.log"

# The stream: N payments over a few seconds, produced while the scorers consume.
GEN_DIGESTS=1 bash "$gen" "$run" "$n" 1000 >"$FS_TEST_DIR/payments.txt"
(
    split -l 100 "$FS_TEST_DIR/payments.txt" "$FS_TEST_DIR/chunk."
    for f in "$FS_TEST_DIR"/chunk.*; do
        cat "$f"
        sleep 0.1
    done
) | kcat -b "$FS_BROKERS" -P -t raw_payments -K: &
producer=$!
FS_ALL_PIDS+=("$producer") # stopped by the cleanup if the test fails first

# Mid-stream: commits fail, scorer-1 persists more (uncommitted), SIGKILL, commits work again;
# scorer-2 takes over scorer-1's partitions (a non-empty assignment after the kill: cooperative
# rebalances also log empty ones), then scorer-1 starts again.
fs_wait_for 60 fs_rows_at_least decisions $((n / 4))
by1() { fs_psql "SELECT count(*) FROM decisions WHERE scorer_id = 'scorer-1'"; }
assigned2=$(grep -c '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer2.log")
fs_commit_fault
before=$(by1)
fs_wait_for 60 "(( \$(by1) > $before ))"
fs_kill scorer1 KILL
fs_wait_exit scorer1 10
fs_commit_fault
killed_at=$(fs_rows decisions)
echo "killed scorer-1 with $killed_at of $n decisions persisted"
((killed_at < n)) || fs_fail "the stream was over before the kill: nothing was tested"
took_over() {
    grep '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer2.log" | tail -n +$((assigned2 + 1)) |
        grep -qv '"partitions":\[\]'
}
fs_wait_for 60 took_over # the session timeout (6 s) and the rebalance
fs_bg scorer1 env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"

wait "$producer" || fs_fail "producing the stream failed"
fs_wait_for 180 fs_rows_at_least decisions "$n"
sleep 2 # a duplicate row would show up now

fs_assert_eq "$n" "$(fs_rows payments)" "payments rows"
fs_assert_eq "$n" "$(fs_rows decisions)" "decisions rows"
expected=$(sed 's/.*"payment_id":"\([^"]*\)".*/\1/' "$FS_TEST_DIR/payments.txt" | sort)
actual=$(fs_psql 'SELECT payment_id FROM payments ORDER BY 1')
[[ "$expected" == "$actual" ]] || fs_fail "payment ids differ: $(diff <(echo "$expected") <(echo "$actual") | head -5)"
echo "ok: the persisted payment ids are exactly the produced ones"
fs_assert_eq 0 "$(fs_psql 'SELECT count(*) FROM payments p LEFT JOIN decisions d USING (payment_id) WHERE d.payment_id IS NULL')" "payments without decision"
# The default rules count per user and per card (these events have no IP): two rows per payment.
fs_assert_eq $((2 * n)) "$(fs_rows velocity_events)" "velocity events"
fs_assert_eq 0 "$(fs_psql 'SELECT count(*) FROM (SELECT 1 FROM velocity_events GROUP BY entity_kind, payment_id HAVING count(*) <> 1) x')" "(entity, payment) pairs counted other than once"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(DISTINCT payment_id) FROM velocity_events')" "payments in velocity events"
# Additive state: every bucket series (entity kind x width) and the vault's times_seen per kind
# sum to N, redeliveries included.
series=$(fs_psql "SELECT string_agg(entity_kind || '/' || width_s || '=' || s, ' ' ORDER BY entity_kind, width_s)
                  FROM (SELECT entity_kind, width_s, sum(n) s FROM feature_buckets GROUP BY 1, 2) x")
echo "feature bucket series: $series"
[[ "$series" == *"/"*" "*"/"* ]] || fs_fail "fewer than two feature bucket series: $series"
fs_assert_eq "" "$(tr ' ' '\n' <<<"$series" | grep -v "=$n\$" || true)" "bucket series not summing to $n"
fs_assert_eq "device=$n email=$n" "$(fs_psql "SELECT string_agg(entity_kind || '=' || s, ' ' ORDER BY entity_kind)
    FROM (SELECT entity_kind, sum(times_seen) s FROM risk_vault GROUP BY 1) x WHERE entity_kind IN ('device', 'email')")" \
    "risk_vault times_seen per kind"

fs_wait_for 60 fs_topic_has processed_payments "$n"
keys=$(timeout 60 kcat -b "$FS_BROKERS" -C -t processed_payments -o beginning -e -q -f '%k\n' | sort -u | wc -l)
fs_assert_eq "$n" "$keys" "distinct payments on processed_payments"
fs_assert_eq 0 "$(fs_topic_count raw_payments.dlq)" "dead letters"

# Alerts: one row per flagged decision; on the topic exactly those alert ids (a redelivered
# payment's alert, produced again, keeps its id).
flagged=$(fs_psql "SELECT count(*) FROM decisions WHERE decision <> 'allow'")
((flagged > 0)) || fs_fail "no flagged payments: the alert path was not exercised"
fs_assert_eq "$flagged" "$(fs_rows alerts)" "alerts rows"
fs_wait_for 60 fs_topic_has fraud_alerts "$flagged"
topic_ids=$(timeout 60 kcat -b "$FS_BROKERS" -C -t fraud_alerts -o beginning -e -q -f '%s\n' |
    sed 's/.*"alert_id":"\([^"]*\)".*/\1/' | sort -u)
[[ "$topic_ids" == "$(fs_psql 'SELECT alert_id FROM alerts ORDER BY 1')" ]] ||
    fs_fail "the alert ids on fraud_alerts differ from the alerts table"
echo "ok: fraud_alerts carries exactly the $flagged alert ids of the table"

# Both end cleanly; the killed worker's persisted but uncommitted payments came again (to the
# survivor or to the restarted worker).
for s in scorer1 scorer2; do
    fs_kill "$s" TERM
    fs_wait_exit "$s" 30
    fs_assert_eq 0 "$FS_EXIT_STATUS" "$s exit status"
done
grep -h '"event":"stopped"' "$FS_TEST_DIR"/scorer*.log | sed 's/.*"msg"/"msg"/'
redelivered=$(grep -h '"event":"stopped"' "$FS_TEST_DIR"/scorer*.log | jq -s 'map(.payments_redelivered) | add')
((redelivered > 0)) || fs_fail "no payment was redelivered: the crash left nothing uncommitted to test"
echo "ok: $redelivered redelivered payments absorbed"
echo "scorer crash ok: $n payments, scorer-1 killed at $killed_at"
