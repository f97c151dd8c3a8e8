#!/usr/bin/env bash
# Data lost before processing: the group commits an offset, the scorer stops, and while it is away
# the broker drops the messages after that offset (the dev broker keeps only ~5 MiB per partition,
# like retention on a real cluster). On restart the scorer must NOT skip silently: it logs
# offset_out_of_range at error level with how many messages were lost, counts it, and resumes at
# the earliest offset still available, processing everything from there.
# The restarted scorer also prunes after every batch with no lateness allowance, which exercises
# the velocity pruning: nothing older than the largest window (30 min) behind the newest event may
# remain.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_offset_lost
fs_pg_start
fs_broker_start 1
gen="$REPO/tests/integration/gen_raw_payments.sh"
run=$((RANDOM + 1000))
export KAFKA_SESSION_TIMEOUT_MS=6000 KAFKA_HEARTBEAT_INTERVAL_MS=500
export FS_RULES_FILE="$REPO/schemas/rules/default.json"

first_offset() { timeout 30 kcat -b "$FS_BROKERS" -C -t raw_payments -p 0 -o beginning -c 1 -e -q -f '%o\n'; }

# labels_committed N: the first scorer logged outcome commits covering N label messages
labels_committed() {
    (($(grep '"event":"outcomes_committed"' "$FS_TEST_DIR/scorer.log" |
        grep -o '"messages":[0-9]*' | cut -d: -f2 | awk '{ n += $1 } END { print n + 0 }') >= $1))
}

# outcome N: a label for a payment nobody sent (stored, pending), N in the id
outcome() {
    printf 'k:{"schema_version":1,"payment_id":"0000%04d-0000-4000-8000-000000000000","outcome":"chargeback","known_at":"2026-11-02T10:00:00Z","source":"test"}\n' "$1"
}

# 1. Ten payments and two labels processed and committed, then a clean stop.
fs_bg scorer env FS_SCORER_ID=scorer-a FS_LOG_LEVEL=debug "$BUILD/bin/fraudshield-scorer"
bash "$gen" "$run" 10 | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
{ outcome 1; outcome 2; } | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K: -p 0
fs_wait_for 60 fs_rows_at_least decisions 10
fs_wait_for 60 fs_rows_at_least outcomes 2
fs_wait_for 30 labels_committed 2 # their offsets are committed right after they are stored
fs_kill scorer TERM
fs_wait_exit scorer 30

# 2. While no scorer runs: ~8 MiB of payments (4 KiB each, uncompressed) push the first ones out.
pad=$(head -c 3900 /dev/zero | tr '\0' x)
bash "$gen" $((run + 1)) 2000 |
    sed "s/,\"event_time\"/,\"metadata\":{\"pad\":\"$pad\"},\"event_time\"/" |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K:
earliest=$(first_offset)
((earliest > 10)) || fs_fail "the broker kept offset 10 (earliest $earliest): nothing was lost"
echo "earliest offset still on the broker: $earliest (committed: 10)"
# ... and labels: 100 of ~90 KiB (invalid: schema_version 2, so they become dead letters), then one
# valid label; the committed outcome offset (2) is pushed out too.
big=$(head -c 90000 /dev/zero | tr '\0' y)
for i in $(seq 1 100); do printf 'k:{"schema_version":2,"pad":"%s"}\n' "$big"; done |
    kcat -b "$FS_BROKERS" -P -t payment_outcomes -K: -p 0
outcome 3 | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K: -p 0
o_earliest=$(timeout 30 kcat -b "$FS_BROKERS" -C -t payment_outcomes -p 0 -o beginning -c 1 -e -q -f '%o\n')
((o_earliest > 2)) || fs_fail "the broker kept outcome offset 2 (earliest $o_earliest): nothing was lost"

# 3. The scorer comes back: an error naming the loss, then everything still there is processed.
fs_bg scorer2 env FS_SCORER_ID=scorer-b FS_VELOCITY_PRUNE_EVERY=1 FS_VELOCITY_PRUNE_MIN_INTERVAL_MS=0 FS_VELOCITY_LATENESS_S=0 \
    FS_LOG_LEVEL=debug "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"offset_out_of_range"' "$FS_TEST_DIR/scorer2.log"
line=$(grep '"event":"offset_out_of_range"' "$FS_TEST_DIR/scorer2.log" | head -n 1)
echo "$line"
[[ "$line" == *'"level":"error"'* ]] || fs_fail "offset_out_of_range is not logged as an error"
[[ "$line" == *'"offset":10,'* ]] || fs_fail "the log line does not name the committed offset 10"
[[ "$line" == *"\"lost\":$((earliest - 10))"* ]] || fs_fail "the log line does not count $((earliest - 10)) lost messages"
# The labels' loss is reported the same way (not skipped by auto.offset.reset=earliest), and the
# labels still there are consumed.
fs_wait_for 60 grep -q '"event":"offset_out_of_range".*"topic":"payment_outcomes"' "$FS_TEST_DIR/scorer2.log"
o_line=$(grep '"event":"offset_out_of_range".*"topic":"payment_outcomes"' "$FS_TEST_DIR/scorer2.log" | head -n 1)
[[ "$o_line" == *'"offset":2,'* && "$o_line" == *"\"lost\":$((o_earliest - 2))"* ]] ||
    fs_fail "the outcomes' offset_out_of_range line: $o_line"
fs_wait_for 60 fs_rows_at_least outcomes 3
total=$((10 + 2010 - earliest))
fs_wait_for 120 fs_rows_at_least decisions "$total"
sleep 1
fs_assert_eq "$total" "$(fs_rows payments)" "payments: the first ten plus everything still on the broker"
grep -q '"event":"velocity_pruned".*"deleted":[1-9]' "$FS_TEST_DIR/scorer2.log" ||
    fs_fail "no velocity events were pruned"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM velocity_events WHERE event_time < (SELECT max(event_time) FROM velocity_events) - interval '30 minutes'")" "velocity events older than the retention"
fs_kill scorer2 TERM
fs_wait_exit scorer2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer exit status"
grep '"event":"stopped"' "$FS_TEST_DIR/scorer2.log" | grep -q "\"offsets_out_of_range\":2,\"messages_lost\":$((earliest - 10 + o_earliest - 2))," ||
    fs_fail "the stop summary does not count the loss"
echo "scorer offset lost ok: $((earliest - 10)) messages reported lost"
