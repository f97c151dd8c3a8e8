#!/usr/bin/env bash
# The consumer lag of partitions whose group has committed nothing. librdkafka reports
# consumer_lag -1 for them (committed offset -1001): a new group, or one whose commits keep failing.
# The scorer exported 0 there, so the lag alerts could not see a backlog that no commit ever
# reduced. Every commit fails here (the dev broker's commit fault) while a new scorer decides N
# payments: the lag of raw_payments must show them all (everything the broker holds), and drop to 0
# once a commit succeeds.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_lag_uncommitted
fs_pg_start
fs_broker_start 3
fs_commit_fault # every commit fails from now
n=40
export FS_RULES_FILE="$REPO/schemas/rules/default.json"
admin=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=scorer-1 FS_ADMIN_PORT="$admin" FS_STATS_INTERVAL_MS=500 \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer.log"
bash "$REPO/tests/integration/gen_raw_payments.sh" $((RANDOM + 1000)) "$n" 1000 |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 '(( $(fs_psql "SELECT count(*) FROM decisions") == '"$n"' ))'
# the commit follows the decisions (and the outputs' delivery)
fs_wait_for 30 grep -q '"event":"commit_failed"' "$FS_TEST_DIR/scorer.log"
lag_total() {
    curl -sf "http://127.0.0.1:$admin/metrics" | awk '$1 == "fs_scorer_consumer_lag_assigned" { print $2; exit }'
}
fs_wait_for 20 '[[ $(lag_total) == '"$n"' ]]'
echo "ok: lag $n while nothing is committed"
fs_commit_fault # commits succeed again: the scorer's retry commits, the lag goes to 0
fs_wait_for 60 '[[ $(lag_total) == 0 ]]'
echo "ok: lag 0 once committed"
fs_kill scorer TERM
fs_wait_exit scorer 30
echo PASS
