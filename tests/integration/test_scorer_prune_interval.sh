#!/usr/bin/env bash
# Under light load the linger closes a batch per payment or two, so velocity-prune-every batches
# pass in moments; velocity-prune-min-interval-ms keeps prunes (a sync transaction and three
# deletes) at most one per interval. Pruning after every batch (velocity-prune-every 1) with a
# 4-second minimum interval: twelve small batches in ~3 s are followed by one or two prunes, not
# twelve; once the interval has passed, the next batch is pruned after again.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_prune_interval
fs_pg_start
fs_broker_start 2
run=$((RANDOM + 1000))
export FS_RULES_FILE="$REPO/schemas/rules/default.json"
export FS_VELOCITY_PRUNE_EVERY=1 FS_VELOCITY_PRUNE_MIN_INTERVAL_MS=4000 FS_LOG_LEVEL=debug
log="$FS_TEST_DIR/w.log"
count() { grep -c "\"event\":\"$1\"" "$log" || true; }

fs_bg w env FS_SCORER_ID=w "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"db_ready"' "$log"
at=$(date -u -d '1 hour ago' +%Y-%m-%dT%H:%M)
fs_produce_at "$run" 2 0 "$at" 0 # the first batch and its prune start the interval
fs_wait_for 60 fs_rows_at_least decisions 2
fs_wait_for 30 '(($(count velocity_pruned) >= 1))'
start=$SECONDS
for i in $(seq 1 12); do # each its own batch: the previous one is decided first
    fs_produce_at "$run" $((2 + 2 * i)) $((2 * i)) "$at" 0
    fs_wait_for 30 fs_rows_at_least decisions $((2 + 2 * i))
done
elapsed=$((SECONDS - start))
batches=$(count batch_done)
prunes=$(count velocity_pruned)
echo "batches=$batches prunes=$prunes in ${elapsed}s"
((batches >= 10)) || fs_fail "expected at least 10 batches, got $batches"
# the first prune, then at most one per 4 s of the loop (and one more for a boundary)
((prunes <= 2 + elapsed / 4)) || fs_fail "$prunes prunes for $batches batches in ${elapsed}s"

sleep 4.5 # the interval has passed: the next batch is followed by a prune
before=$prunes
fs_produce_at "$run" 28 26 "$at" 0
fs_wait_for 30 fs_rows_at_least decisions 28
fs_wait_for 30 "((\$(count velocity_pruned) > $before))"
fs_kill w TERM
fs_wait_exit w 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "worker exit status"
echo "scorer prune interval ok"
