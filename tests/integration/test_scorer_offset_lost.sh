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

rows() { fs_psql "SELECT count(*) FROM $1"; }
rows_at_least() { (($(rows "$1") >= $2)); }
first_offset() { timeout 30 kcat -b "$FS_BROKERS" -C -t raw_payments -p 0 -o beginning -c 1 -e -q -f '%o\n'; }

# 1. Ten payments processed and committed, then a clean stop.
fs_bg scorer env FS_SCORER_ID=scorer-a "$BUILD/bin/fraudshield-scorer"
bash "$gen" "$run" 10 | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 rows_at_least decisions 10
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

# 3. The scorer comes back: an error naming the loss, then everything still there is processed.
fs_bg scorer2 env FS_SCORER_ID=scorer-b FS_VELOCITY_PRUNE_EVERY=1 FS_VELOCITY_LATENESS_S=0 \
    FS_LOG_LEVEL=debug "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"offset_out_of_range"' "$FS_TEST_DIR/scorer2.log"
line=$(grep '"event":"offset_out_of_range"' "$FS_TEST_DIR/scorer2.log" | head -n 1)
echo "$line"
[[ "$line" == *'"level":"error"'* ]] || fs_fail "offset_out_of_range is not logged as an error"
[[ "$line" == *'"offset":10,'* ]] || fs_fail "the log line does not name the committed offset 10"
[[ "$line" == *"\"lost\":$((earliest - 10))"* ]] || fs_fail "the log line does not count $((earliest - 10)) lost messages"
total=$((10 + 2010 - earliest))
fs_wait_for 120 rows_at_least decisions "$total"
sleep 1
fs_assert_eq "$total" "$(rows payments)" "payments: the first ten plus everything still on the broker"
grep -q '"event":"velocity_pruned".*"deleted":[1-9]' "$FS_TEST_DIR/scorer2.log" ||
    fs_fail "no velocity events were pruned"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM velocity_events WHERE event_time < (SELECT max(event_time) FROM velocity_events) - interval '30 minutes'")" "velocity events older than the retention"
fs_kill scorer2 TERM
fs_wait_exit scorer2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer exit status"
grep '"event":"stopped"' "$FS_TEST_DIR/scorer2.log" | grep -q "\"offsets_out_of_range\":1,\"messages_lost\":$((earliest - 10))," ||
    fs_fail "the stop summary does not count the loss"
echo "scorer offset lost ok: $((earliest - 10)) messages reported lost"
