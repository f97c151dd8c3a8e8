#!/usr/bin/env bash
# Pruning follows a worker's slowest active partition (scorer/prune.h prune_watermark), not its
# newest event: one worker owns a partition with a backlog 4 h behind (partition 0) and one with
# current traffic (partition 1). Pruning after every batch with no lateness, it keeps the exact
# events the backlog's windows need, and the backlog's later payments are scored on time (not
# counted too late). Before, the current partition's events drove the prune: the backlog's events
# were deleted and its payments counted late.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_prune_partitions
fs_pg_start
fs_broker_start 2
run=$((RANDOM + 1000))
export FS_RULES_FILE="$REPO/schemas/rules/default.json"
export FS_VELOCITY_PRUNE_EVERY=1 FS_VELOCITY_PRUNE_MIN_INTERVAL_MS=0 FS_VELOCITY_LATENESS_S=0 FS_LOG_LEVEL=debug

pruned_all() { # every batch followed by its prune
    local log="$FS_TEST_DIR/w.log"
    (($(grep -c '"event":"batch_done"' "$log") > 0)) &&
        (($(grep -c '"event":"velocity_pruned"' "$log") >= $(grep -c '"event":"batch_done"' "$log")))
}

old_at=$(date -u -d '4 hours ago' +%Y-%m-%dT%H):00 # the backlog's hour
now_at=$(date -u -d '1 hour ago' +%Y-%m-%dT%H):00  # current traffic
old_s=$(date -u -d "${old_at}:00Z" +%s)
old_exact() { fs_psql "SELECT count(*) FROM velocity_events WHERE event_time < to_timestamp($old_s + 3600)"; }

fs_bg w env FS_SCORER_ID=w "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"db_ready"' "$FS_TEST_DIR/w.log"
fs_produce_at "$run" 20 0 "$old_at" 0
fs_wait_for 60 fs_rows_at_least decisions 20
fs_produce_at $((run + 1)) 20 0 "$now_at" 1
fs_wait_for 60 fs_rows_at_least decisions 40
fs_wait_for 30 pruned_all
n_old=$(old_exact)
((n_old > 0)) || fs_fail "the current partition's prune deleted the exact events of the backlog partition"
echo "ok: $n_old exact events of the backlog kept"

# the backlog goes on (00:30 .. 00:39 of its hour): on time, its windows complete
fs_produce_at $((run + 2)) 40 30 "$old_at" 0
fs_wait_for 60 fs_rows_at_least decisions 50
fs_wait_for 30 pruned_all
fs_kill w TERM
fs_wait_exit w 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "worker exit status"
stopped=$(grep '"event":"stopped"' "$FS_TEST_DIR/w.log" | tail -n 1)
[[ "$stopped" == *'"late_events":0'* ]] || fs_fail "backlog payments counted late: $stopped"
echo "scorer prune partitions ok"
