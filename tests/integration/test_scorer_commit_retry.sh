#!/usr/bin/env bash
# A failed offset commit is retried, not forgotten. The dev broker fails the first offset commits
# with REBALANCE_IN_PROGRESS (what a commit racing a rebalance gets); one scorer persists a batch of
# N payments, its commit fails, and no further payment arrives to carry a later commit. The scorer
# must still commit the stored offsets: a second scorer of the same group started after it consumes
# nothing. (Before the retry existed, the second scorer consumed the whole batch again.)
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_commit_retry
fs_pg_start
FS_COMMIT_ERRORS=3 fs_broker_start 3
gen="$REPO/tests/integration/gen_raw_payments.sh"
n=50
export FS_RULES_FILE="$REPO/schemas/rules/default.json"

fs_bg scorer1 env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer1.log"
bash "$gen" $((RANDOM + 1000)) "$n" 1000 | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 '(( $(fs_psql "SELECT count(*) FROM decisions") == '"$n"' ))'
fs_wait_for 30 grep -q '"event":"commit_retried"' "$FS_TEST_DIR/scorer1.log"
grep -q '"event":"commit_failed"' "$FS_TEST_DIR/scorer1.log" || fs_fail "no commit failed: the fault was not injected"
echo "ok: the failed commit was retried: $(grep -o '"event":"commit_retried"[^}]*' "$FS_TEST_DIR/scorer1.log" | head -1)"
fs_kill scorer1 TERM
fs_wait_exit scorer1 30

# The same group again: the committed position is past the batch.
fs_bg scorer2 env FS_SCORER_ID=scorer-2 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer2.log"
sleep 3
fs_kill scorer2 TERM
fs_wait_exit scorer2 30
stopped=$(grep '"event":"stopped"' "$FS_TEST_DIR/scorer2.log")
fs_assert_eq 0 "$(echo "$stopped" | jq -r .messages)" "messages the second scorer consumed again"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM payments')" "payments rows"
echo "scorer commit retry ok"
