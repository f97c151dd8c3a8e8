#!/usr/bin/env bash
# A failed offset commit is retried, not forgotten. The dev broker fails the first offset commits
# with REBALANCE_IN_PROGRESS (what a commit racing a rebalance gets); one scorer persists a batch of
# N payments, its commit fails, and no further payment arrives to carry a later commit. The scorer
# must still commit the stored offsets: a second scorer of the same group started after it consumes
# nothing. (Before the retry existed, the second scorer consumed the whole batch again.)
#
# Then the last two chances to commit, with commits failing until the test lets them succeed
# (fs_commit_fault: the dev broker fails every commit until toggled back), at a moment chosen
# between two of the idle loop's retries (1, 2, 4, 8, 16, 30 s apart), so that the loop cannot be the
# one that commits:
#   2. the scorer is stopped: it commits while closing (nobody consumes the batch again);
#   3. a new member takes over half the partitions: the old owner commits in its revoke callback,
#      before they move (the new member consumes nothing again). The broker may refuse that commit
#      as well: librdkafka's mock answers REBALANCE_IN_PROGRESS while a rebalance round is joining
#      or syncing (real Kafka while the group awaits its members' SyncGroup), so the revoke can
#      come while the next round has begun. Then the old owner says so (commit_failed at revoke),
#      its loop retries the commit (commit_retried, not skipped) and the new owner consumes the
#      moved partition's part of the batch again, every payment found persisted (redelivered);
#   4. the scorer is stopped while every commit still fails: its commit at close fails, and so does
#      the one in the revoke callback its own close runs, each logged (commit_failed at close, at
#      revoke: the last chances); it exits cleanly (status 0). (It crashed there: the callback
#      committed on the consumer handle the close had already cleared.)
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
fs_sentinels 3 >/dev/null
fs_kill scorer2 TERM
fs_wait_exit scorer2 30
stopped=$(grep '"event":"stopped"' "$FS_TEST_DIR/scorer2.log")
fs_assert_eq 3 "$(echo "$stopped" | jq -r .messages)" "messages the second scorer consumed (the 3 sentinels only)"
fs_assert_eq $((n + 3)) "$(fs_psql 'SELECT count(*) FROM payments')" "payments rows (with the sentinels)"

# failures NAME: the failed commit attempts NAME's /metrics counts so far
declare -A admin_port
failures() {
    curl -sf "http://127.0.0.1:${admin_port[$1]}/metrics" |
        awk '$1 == "fs_scorer_commit_failures_total" { print $2; exit }'
}
# start_scorer NAME: a scorer of the group with an admin port, once it has its partitions
start_scorer() {
    admin_port[$1]=$(fs_free_port)
    fs_bg "$1" env FS_SCORER_ID="$1" FS_ADMIN_PORT="${admin_port[$1]}" "$BUILD/bin/fraudshield-scorer"
    fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/$1.log"
}
# persist_failing NAME TOTAL ATTEMPTS FAULTS: commits fail from now; a new batch of n is persisted
# by NAME (TOTAL rows then) and its commit has failed ATTEMPTS times (the batch's, then the loop's);
# then commits succeed again (the dev broker's FAULTS-th fault_cleared)
persist_failing() {
    fs_commit_fault
    bash "$gen" $((RANDOM + 1000)) "$n" 1000 | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
    fs_wait_for 60 '(( $(fs_psql "SELECT count(*) FROM decisions") == '"$2"' ))'
    fs_wait_for 60 '(( $(failures '"$1"' || echo 0) >= '"$3"' ))'
    fs_commit_fault # commits succeed again; the loop's next retry is 4 (8, 16) s away
    fs_wait_for 5 '(( $(grep -c "\"event\":\"fault_cleared\"" "$FS_TEST_DIR/devbroker.log") == '"$4"' ))'
}
# retried_at NAME: where NAME's failed commit finally went through (commit_retried's "at")
retried_at() { grep '"event":"commit_retried"' "$FS_TEST_DIR/$1.log" | tail -1 | jq -r .at; }
# consumed NAME / redelivered NAME: messages NAME consumed / payments it found persisted ("stopped")
consumed() { grep '"event":"stopped"' "$FS_TEST_DIR/$1.log" | jq -r .messages; }
redelivered() { grep '"event":"stopped"' "$FS_TEST_DIR/$1.log" | jq -r .payments_redelivered; }
# failed_at NAME AT: NAME logged a failed commit at AT (batch, loop, revoke, close)
failed_at() { grep '"event":"commit_failed"' "$FS_TEST_DIR/$1.log" | grep -q "\"at\":\"$2\""; }

# 2. stopped while its commit fails: the commit at close goes through.
start_scorer scorer3
persist_failing scorer3 $((2 * n + 3)) 3 1
fs_kill scorer3 TERM
fs_wait_exit scorer3 30
at=$(retried_at scorer3)
[[ $at == close || $at == revoke ]] || fs_fail "scorer3's failed commit went through at '$at', not while closing"
echo "ok: stopped with a failing commit, committed while closing ($at)"

# 3. partitions move while the commit fails: the old owner commits in its revoke callback (or, if
#    the broker refuses that one too, retries it from its loop, every 30 s by now).
start_scorer scorer4
persist_failing scorer4 $((3 * n + 3)) 6 2 # the loop's next retry is 30 s away: time for a rebalance, even on a busy machine
start_scorer scorer5
fs_wait_for 30 'grep -q "\"event\":\"commit_retried\"" "$FS_TEST_DIR/scorer4.log" || failed_at scorer4 revoke'
refused=0
if failed_at scorer4 revoke; then
    refused=1
    fs_wait_for 45 grep -q '"event":"commit_retried"' "$FS_TEST_DIR/scorer4.log"
    echo "note: the broker refused scorer4's commit in the revoke callback; it went through at $(retried_at scorer4)"
else
    fs_assert_eq revoke "$(retried_at scorer4)" "where scorer4's failed commit went through"
fi
# scorer5 holds a partition (cooperative: usually its second assignment, the first one empty while
# scorer4 gives the partition up; under load the first can already carry it)
fs_wait_for 30 'grep "\"event\":\"partitions_assigned\"" "$FS_TEST_DIR/scorer5.log" | grep -qv "\"partitions\":\[\]"'
sentinels=$(fs_sentinels 3)
for name in scorer5 scorer4; do
    fs_kill "$name" TERM
    fs_wait_exit "$name" 30
done
# the new member consumed its sentinels, and again (found persisted) only what the old owner
# could not commit: nothing, unless the broker refused the commit at revoke
again=$(redelivered scorer5)
((refused ? again <= n : again == 0)) || fs_fail "the new member consumed $again payments again (commit at revoke refused: $refused)"
fs_assert_eq $(($(fs_psql "SELECT count(*) FROM decisions WHERE scorer_id = 'scorer5' AND payment_id::text LIKE '$sentinels%'") + again)) \
    "$(consumed scorer5)" "messages the new member consumed (its sentinels, and $again again)"
fs_assert_eq $((n + $(fs_psql "SELECT count(*) FROM decisions WHERE scorer_id = 'scorer4' AND payment_id::text LIKE '$sentinels%'"))) \
    "$(consumed scorer4)" "messages scorer4 consumed (its batch and its sentinels)"
fs_assert_eq $((3 * n + 6)) "$(fs_psql 'SELECT count(*) FROM payments')" "payments rows (with the sentinels)"
echo "ok: partitions moved with a failing commit, committed $( ((refused)) && echo "by the loop after the revoke callback's was refused" || echo "in the revoke callback")"

# 4. stopped while commits keep failing: both last chances fail, and it still exits cleanly.
start_scorer scorer6
fs_commit_fault
fs_wait_for 5 '(( $(grep -c "\"event\":\"fault_injected\"" "$FS_TEST_DIR/devbroker.log") == 4 ))'
bash "$gen" $((RANDOM + 1000)) "$n" 1000 | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 '(( $(fs_psql "SELECT count(*) FROM decisions") == '"$((4 * n + 6))"' ))'
fs_wait_for 60 '(( $(failures scorer6 || echo 0) >= 1 ))' # so it commits at close, then in the revoke
fs_kill scorer6 TERM
fs_wait_exit scorer6 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer6's exit status (commits failing at close and revoke)"
failed_at scorer6 close && failed_at scorer6 revoke || fs_fail "scorer6 did not log both last failed commits (at close, at revoke)"
fs_commit_fault
echo "ok: stopped while every commit fails: exited cleanly"
echo "scorer commit retry ok"
