#!/usr/bin/env bash
# Alerts lost to retention: the alerter's group commits an offset, the alerter stops, and while it
# is away the broker drops the messages after that offset (the dev broker keeps only ~5 MiB per
# partition, like retention on a real cluster). auto.offset.reset=earliest resumes at the earliest
# offset still there; the restarted alerter must not skip silently: offset_out_of_range at error
# level with how many alerts were lost, fs_alerter_offsets_out_of_range_total and
# fs_alerter_messages_lost_total, and everything still on the broker is processed.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_offset_lost
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
al_receiver ok ok
al_cli subscriptions add --name ok --url "http://127.0.0.1:${AL_PORT[ok]}/hook" --secret "$AL_SECRET" >/dev/null

# 1. Three alerts recorded, delivered and committed (committed offset 3), then a clean stop.
al_start alerter
al_wait_assigned alerter
al_gen_alerts "$run" 3 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -p 0 -K:
fs_wait_for 30 "(( \$(al_requests ok True) >= 3 ))"
fs_assert_eq 0 "$(al_metric alerter fs_alerter_offsets_out_of_range_total)" "no loss on the first run"
fs_kill alerter TERM
fs_wait_exit alerter 30

# 2. While no alerter runs: 100 messages of ~90 KiB (invalid alerts: they become dead letters) push
# the committed offset out of the partition, then one valid alert.
big=$(head -c 90000 /dev/zero | tr '\0' y)
for i in $(seq 1 100); do printf 'k:{"schema_version":2,"pad":"%s"}\n' "$big"; done |
    kcat -b "$FS_BROKERS" -P -t fraud_alerts -K: -p 0
al_gen_alerts "$run" 1 3 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -p 0 -K:
earliest=$(timeout 30 kcat -b "$FS_BROKERS" -C -t fraud_alerts -p 0 -o beginning -c 1 -e -q -f '%o\n')
((earliest > 3)) || fs_fail "the broker kept offset 3 (earliest $earliest): nothing was lost"
echo "earliest offset still on the broker: $earliest (committed: 3)"

# 3. The alerter comes back: an error naming the loss, then everything still there is processed.
al_start alerter2
fs_wait_for 60 grep -q '"event":"offset_out_of_range"' "$FS_TEST_DIR/alerter2.log" # old code: silent
line=$(grep '"event":"offset_out_of_range"' "$FS_TEST_DIR/alerter2.log" | head -n 1)
echo "$line"
grep -q '"level":"error"' <<<"$line" || fs_fail "the loss is not logged at error level"
grep -q "\"offset\":3," <<<"$line" || fs_fail "the log line does not name the committed offset 3"
grep -q "\"earliest\":$earliest," <<<"$line" || fs_fail "the log line does not name the earliest offset $earliest"
grep -q "\"lost\":$((earliest - 3))[,}]" <<<"$line" || fs_fail "the log line does not count $((earliest - 3)) lost"
fs_wait_for 60 "(( \$(al_requests ok True) >= 4 ))"
al_wait_assigned alerter2
fs_assert_eq 1 "$(al_metric alerter2 fs_alerter_offsets_out_of_range_total)" "fs_alerter_offsets_out_of_range_total"
fs_assert_eq $((earliest - 3)) "$(al_metric alerter2 fs_alerter_messages_lost_total)" "fs_alerter_messages_lost_total"
fs_assert_eq 1 "$(grep -c '"event":"offset_out_of_range"' "$FS_TEST_DIR/alerter2.log")" "losses reported"
fs_kill alerter2 TERM
fs_wait_exit alerter2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status"

# 4. auto.offset.reset is locked to earliest: latest skipped every alert already on the topic of a
#    new group, reported nowhere (no committed offset was lost).
rc=0
FS_ADMIN_PORT=-1 FS_GROUP_ID=latest-group timeout 30 "$ALERTER" -X auto.offset.reset=latest \
    >"$FS_TEST_DIR/latest.log" 2>&1 || rc=$?
fs_assert_eq 1 "$rc" "exit status with auto.offset.reset=latest"
grep -q '"event":"startup_failed".*auto.offset.reset' "$FS_TEST_DIR/latest.log" ||
    fs_fail "no startup_failed naming auto.offset.reset: $(tail -n 2 "$FS_TEST_DIR/latest.log")"
echo PASS
