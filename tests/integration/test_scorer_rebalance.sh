#!/usr/bin/env bash
# Scale out and back under load: one scorer consumes a stream; two more join (the group rebalances
# cooperatively onto three workers); then those two stop (SIGTERM: each finishes and commits its
# batch before releasing its partitions) and the first takes everything back. At the end: exactly
# N payments and decisions, every (entity, payment) counted once in the exact windows and in every
# bucket series (exactly-once feature state across rebalances), every payment on processed_payments.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_rebalance
fs_pg_start
fs_broker_start 6
n=${FS_REBALANCE_N:-12000}
export FS_ADMIN_PORT=-1
assigned() { grep -c '"event":"partitions_assigned"' "$FS_TEST_DIR/$1.log"; }

fs_bg scorer1 env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer1.log"
bash "$REPO/tests/integration/gen_raw_payments.sh" $((RANDOM + 1000)) "$n" 2000 >"$FS_TEST_DIR/payments.txt"
(
    split -l 200 "$FS_TEST_DIR/payments.txt" "$FS_TEST_DIR/chunk."
    for f in "$FS_TEST_DIR"/chunk.*; do cat "$f"; sleep 0.4; done
) | kcat -b "$FS_BROKERS" -P -t raw_payments -K: &
producer=$!
FS_ALL_PIDS+=("$producer") # stopped by the cleanup if the test fails first

fs_wait_for 60 '(( $(fs_rows decisions) >= 1000 ))'
fs_bg scorer2 env FS_SCORER_ID=scorer-2 "$BUILD/bin/fraudshield-scorer"
fs_bg scorer3 env FS_SCORER_ID=scorer-3 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 90 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer2.log"
fs_wait_for 90 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer3.log"
at3=$(fs_rows decisions)
echo "three workers at $at3 of $n decisions"
fs_wait_for 90 "(( \$(fs_rows decisions) >= $at3 + 1000 ))"
fs_kill scorer2 TERM
fs_kill scorer3 TERM
fs_wait_exit scorer2 60
fs_wait_exit scorer3 60
at1=$(fs_rows decisions)
echo "back to one worker at $at1 of $n decisions"
((at1 < n)) || fs_fail "the stream was over before scaling back in: nothing was tested"

wait "$producer" || fs_fail "producing failed"
fs_wait_for 180 '(( $(fs_rows decisions) >= n ))'
sleep 2
fs_assert_eq "$n" "$(fs_rows payments)" "payments"
fs_assert_eq "$n" "$(fs_rows decisions)" "decisions"
for w in scorer-2 scorer-3; do
    fs_assert_eq t "$(fs_psql "SELECT count(*) > 0 FROM decisions WHERE scorer_id = '$w'")" "$w decided some"
done
fs_assert_eq $((2 * n)) "$(fs_rows velocity_events)" "exact-window events (user, card)"
fs_assert_eq "$n|$n|$n" "$(fs_psql "SELECT string_agg(s::text, '|' ORDER BY k) FROM (SELECT entity_kind || width_s AS k, sum(n) AS s FROM feature_buckets GROUP BY 1) x")" "bucket series: merchant day, user hour, user day"
fs_wait_for 60 fs_topic_has processed_payments "$n"
keys=$(timeout 60 kcat -b "$FS_BROKERS" -C -t processed_payments -o beginning -e -q -f '%k\n' | sort -u | wc -l)
fs_assert_eq "$n" "$keys" "distinct payments on processed_payments"
fs_assert_eq 0 "$(fs_topic_count raw_payments.dlq)" "dead letters"
