#!/usr/bin/env bash
# A fatal consumer error (here: a heartbeat answered FENCED_INSTANCE_ID, "another member took this
# one's place") leaves that consumer unusable for good. Each long-running consumer must then stop
# with exit status 1 instead of running on without input while /ready says yes:
#   1. the scorer's outcome consumer (its own group, coordinated by broker 2, which fences it);
#   2. the scorer's payment consumer (its group on broker 1, fenced there); a restarted worker
#      then stores and produces every payment (none lost with the fenced one);
#   3. the alerter's consumer.
# The dev broker pins each group to a broker (--coordinators) so that --fence-broker hits one
# group alone; the fault answers only the first heartbeat there.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup kafka_consumer_fatal
fs_pg_start
export FS_RULES_FILE="$REPO/schemas/rules/default.json"
export FS_COORDINATORS=fraudshield-scorer=1,fraudshield-outcomes=2,fraudshield-alerter=3
n=20

# $1: the broker whose first heartbeat is fenced. A new dev broker: empty topics, fresh fault.
broker_with_fence() {
    if fs_alive devbroker; then
        fs_kill devbroker TERM
        fs_wait_exit devbroker 30
    fi
    FS_FENCE_BROKER=$1 fs_broker_start 1
}

# $1: log name; $2: what the log must name. The consumer is gone, so the process must be too.
expect_fatal_exit() {
    fs_wait_exit "$1" 60 # the old code: still running, its consumer dead
    fs_assert_eq 1 "$FS_EXIT_STATUS" "$1 exit status after the fatal consumer error"
    grep '"event":"consumer_fatal"' "$FS_TEST_DIR/$1.log" | grep -q "$2" ||
        fs_fail "$1: no consumer_fatal naming '$2' logged"
}

echo "-- 1. the outcome consumer"
broker_with_fence 2
fs_bg scorer1 env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
expect_fatal_exit scorer1 "fatal outcome consumer error"

echo "-- 2. the payment consumer"
broker_with_fence 1
bash "$REPO/tests/integration/gen_raw_payments.sh" $((RANDOM + 1000)) "$n" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_bg scorer2 env FS_SCORER_ID=scorer-2 "$BUILD/bin/fraudshield-scorer"
expect_fatal_exit scorer2 "fatal consumer error"
fs_bg scorer3 env FS_SCORER_ID=scorer-3 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 fs_topic_has processed_payments "$n"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM payments')" "payments"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions"
fs_kill scorer3 TERM
fs_wait_exit scorer3 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "the restarted worker's exit status"

echo "-- 3. the alerter's consumer"
broker_with_fence 3
al_start alerter1
expect_fatal_exit alerter1 "fatal consumer error"
echo "kafka consumer fatal ok"
