#!/usr/bin/env bash
# A fatal producer error (here: the dev broker answers the idempotent producer's InitProducerId with
# INVALID_PRODUCER_EPOCH, "fenced") leaves the producer unusable: every later produce fails. The old
# scorer retried the batch's outputs every few seconds for ever, stopped polling, and stayed "up"
# until someone restarted it by hand. Now it stops with exit status 1 (producer_fatal), commits
# nothing of the batch in hand, and a restarted worker (a new producer) finishes it: every payment
# stored once and on processed_payments.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_producer_fatal
fs_pg_start
FS_PID_ERRORS=1 fs_broker_start 1 # only the first producer id request fails: the first scorer's
n=20
export FS_RULES_FILE="$REPO/schemas/rules/default.json"
bash "$REPO/tests/integration/gen_raw_payments.sh" $((RANDOM + 1000)) "$n" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:

fs_bg scorer1 env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
fs_wait_exit scorer1 60 # the old code: still retrying its outputs after 60 s
fs_assert_eq 1 "$FS_EXIT_STATUS" "exit status after the fatal producer error"
grep -q '"event":"producer_fatal"' "$FS_TEST_DIR/scorer1.log" || fs_fail "no producer_fatal logged"
fs_assert_eq 0 "$(fs_topic_count processed_payments)" "processed_payments before the restart"

fs_bg scorer2 env FS_SCORER_ID=scorer-2 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 fs_topic_has processed_payments "$n"
fs_assert_eq "$n|$n" "$(fs_psql 'SELECT count(*), count(DISTINCT payment_id) FROM payments')" "payments (each once)"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions"
fs_kill scorer2 TERM
fs_wait_exit scorer2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "second worker's exit status"
echo "scorer producer fatal ok"
