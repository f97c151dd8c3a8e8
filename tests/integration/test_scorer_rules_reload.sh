#!/usr/bin/env bash
# Rules reload on SIGHUP under load: a good file replaces the rules between batches (its version,
# with the new content hash, is recorded in the decisions that follow), a bad file is rejected with
# a precise error and the previous rules stay active; no message is dropped or decided twice.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_rules_reload
fs_pg_start
fs_broker_start 6
n=3000
rules="$FS_TEST_DIR/rules.json"
cp "$REPO/schemas/rules/default.json" "$rules"
admin=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=reload FS_RULES_FILE="$rules" FS_ADMIN_PORT="$admin" \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer.log"
v1=$(sed -n 's/.*"rules \([^ ]*\) from.*/\1/p' "$FS_TEST_DIR/scorer.log" | head -1)

bash "$REPO/tests/integration/gen_raw_payments.sh" $((RANDOM + 1000)) "$n" 500 >"$FS_TEST_DIR/payments.txt"
(
    split -l 100 "$FS_TEST_DIR/payments.txt" "$FS_TEST_DIR/chunk."
    for f in "$FS_TEST_DIR"/chunk.*; do cat "$f"; sleep 0.2; done
) | kcat -b "$FS_BROKERS" -P -t raw_payments -K: &
producer=$!
FS_ALL_PIDS+=("$producer") # stopped by the cleanup if the test fails first
decisions() { fs_psql 'SELECT count(*) FROM decisions'; }
fs_wait_for 60 '(( $(decisions) >= 500 ))'

# A good file: a new version, HIGH_VALUE at 500 instead of 1000.
sed -e 's/"version": "[^"]*"/"version": "reload-good"/' -e 's/"amount": "1000"/"amount": "500"/' \
    "$REPO/schemas/rules/default.json" >"$rules.tmp" && mv "$rules.tmp" "$rules"
fs_kill scorer HUP
fs_wait_for 30 grep -q '"event":"rules_reloaded"' "$FS_TEST_DIR/scorer.log"
v2=$(sed -n 's/.*"event":"rules_reloaded".*"version":"\([^"]*\)".*/\1/p' "$FS_TEST_DIR/scorer.log")
[[ "$v2" == reload-good+* ]] || fs_fail "reloaded version: $v2"
echo "ok: reloaded $v1 -> $v2"
at_reload=$(decisions)

# A bad file: rejected, precisely; the good rules stay.
sed 's/"weight": 30/"wieght": 30/' "$rules" >"$rules.tmp" && mv "$rules.tmp" "$rules"
fs_kill scorer HUP
fs_wait_for 30 grep -q '"event":"rules_reload_failed"' "$FS_TEST_DIR/scorer.log"
grep '"event":"rules_reload_failed"' "$FS_TEST_DIR/scorer.log" | grep -q 'rules\[0\].wieght: unknown key' ||
    fs_fail "the reload error does not name the bad key"
echo "ok: bad file rejected with its path and key"

wait "$producer"
fs_wait_for 120 '(( $(decisions) >= n ))'
sleep 1
fs_assert_eq "$n" "$(decisions)" "decisions (none lost, none twice)"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM payments')" "payments"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions WHERE rules_version NOT IN ('$v1', '$v2')")" "only the two good versions decided"
((at_reload < n)) || fs_fail "the stream was over before the reload: nothing was tested"
fs_assert_eq t "$(fs_psql "SELECT count(*) > 0 FROM decisions WHERE rules_version = '$v2'")" "decisions after the reload use the new version"
# The new HIGH_VALUE threshold applies after the reload: a 500..999.99 payment is flagged.
fs_assert_eq t "$(fs_psql "SELECT bool_and(d.reasons @> '[{\"code\":\"HIGH_VALUE\"}]') FROM decisions d JOIN payments p USING (payment_id) WHERE d.rules_version = '$v2' AND p.amount_minor BETWEEN 50000 AND 99999")" "new threshold in force"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions d JOIN payments p USING (payment_id) WHERE d.rules_version = '$v1' AND p.amount_minor < 100000 AND d.reasons @> '[{\"code\":\"HIGH_VALUE\"}]'")" "old threshold before"
metrics=$(curl -s "http://127.0.0.1:$admin/metrics")
grep -qF 'fs_scorer_rules_reloads_total{result="ok"} 1' <<<"$metrics" || fs_fail "reload metric (ok)"
grep -qF 'fs_scorer_rules_reloads_total{result="failed"} 1' <<<"$metrics" || fs_fail "reload metric (failed)"
# the rules in use, and only those (a fleet running mixed versions shows as several series)
grep -qF "fs_scorer_rules_info{version=\"$v2\"} 1" <<<"$metrics" || fs_fail "rules info: $v2 in use"
! grep -qF "fs_scorer_rules_info{version=\"$v1\"}" <<<"$metrics" || fs_fail "rules info: replaced $v1 still exported"
# end-to-end latency of every new decision (ingest_ts -> persisted and produced)
fs_assert_eq "$n" "$(awk '$1 == "fs_scorer_e2e_latency_seconds_count" { print $2 }' <<<"$metrics")" "end-to-end latency observations"
fs_alive scorer || fs_fail "the scorer died"
