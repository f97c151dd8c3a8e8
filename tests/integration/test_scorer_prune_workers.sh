#!/usr/bin/env bash
# Pruning shared by several workers (scorer/prune.h). Workers share velocity_events and
# feature_buckets but own different partitions, so a worker far ahead in event time must not prune
# what a lagging worker still needs, and a worker that comes back after its watermark aged out must
# count the payments whose windows reach below what was pruned as too late, not score them silently
# with incomplete windows.
#   1. a row in scorer_watermarks stands in for a live lagging worker (needs events from 4 h ago):
#      a worker pruning after every batch with no lateness leaves the old exact events in place;
#   1b. another session holds the prune lock: the worker's sync gives up (lock timeout), scoring
#      goes on;
#   2. the row ages out (updated_at older than velocity-watermark-liveness-s): the next prune
#      deletes them and records its cutoff in prune_horizons; the worker's row goes at a clean stop;
#   3. a fresh worker (no watermark of its own) gets payments from below the horizon: counted late.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_prune_workers
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
export KAFKA_SESSION_TIMEOUT_MS=6000 KAFKA_HEARTBEAT_INTERVAL_MS=500
export FS_RULES_FILE="$REPO/schemas/rules/default.json"
export FS_VELOCITY_PRUNE_EVERY=1 FS_VELOCITY_PRUNE_MIN_INTERVAL_MS=0 FS_VELOCITY_LATENESS_S=0 FS_LOG_LEVEL=debug

# every batch of worker NAME is followed by its prune (velocity-prune-every 1), or by a failed
# sync (no prune): wait for them
pruned_all() {
    local log="$FS_TEST_DIR/$1.log"
    (($(grep -c '"event":"batch_done"' "$log") > 0)) &&
        (($(grep -c '"event":"velocity_pruned"\|"event":"watermark_sync_failed"' "$log") >=
          $(grep -c '"event":"batch_done"' "$log")))
}
old_exact() { fs_psql "SELECT count(*) FROM velocity_events WHERE event_time < to_timestamp($old_s + 3600)"; }

old_at=$(date -u -d '4 hours ago' +%Y-%m-%dT%H):00  # the lagging worker's hour
now_at=$(date -u -d '1 hour ago' +%Y-%m-%dT%H):00   # current traffic
old_s=$(date -u -d "${old_at}:00Z" +%s)
now_s=$(date -u -d "${now_at}:00Z" +%s)

# 1. A lagging worker, live: it needs complete windows from 10 minutes after old_at on.
admin=$(fs_free_port)
fs_bg fast env FS_SCORER_ID=fast FS_ADMIN_PORT="$admin" "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"db_ready"' "$FS_TEST_DIR/fast.log"
fs_psql "INSERT INTO scorer_watermarks (scorer_id, watermark, needed_from, updated_at)
         VALUES ('lagging', to_timestamp($old_s + 600), to_timestamp($old_s + 600), now())" >/dev/null
fs_produce_at "$run" 20 0 "$old_at"              # the events the lagging worker's windows need
fs_wait_for 60 fs_rows_at_least decisions 20
fs_produce_at $((run + 1)) 20 0 "$now_at"        # the fast worker's own partitions, 4 h ahead
fs_wait_for 60 fs_rows_at_least decisions 40
fs_wait_for 30 pruned_all fast
n_old=$(old_exact)
((n_old > 0)) || fs_fail "the fast worker pruned the exact events a live lagging worker needs"
echo "ok: $n_old old exact events kept for the lagging worker"
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM scorer_watermarks WHERE scorer_id = 'fast'
    AND watermark >= to_timestamp($now_s) AND needed_from = watermark")" "the fast worker's published watermark"
grep '"event":"velocity_pruned"' "$FS_TEST_DIR/fast.log" | tail -n 1 | grep -q '"held_back_ms":[1-9]' ||
    fs_fail "the last prune does not say it was held back"
held=$(curl -fsS "http://127.0.0.1:$admin/metrics" | sed -n 's/^fs_scorer_prune_held_back_seconds //p')
[[ "$held" =~ ^[0-9.e+]+$ ]] && awk -v h="$held" 'BEGIN { exit !(h > 3600) }' ||
    fs_fail "fs_scorer_prune_held_back_seconds is '$held', not the ~3 h the lagging worker holds back"

# 1b. Another session holds the prune lock (a worker stalled inside its sync): this worker's sync
# gives up after the lock timeout and it goes on scoring instead of blocking its main loop.
fs_psql "SELECT pg_advisory_lock($((0x4653505255))), pg_sleep(12)" >/dev/null &
holder=$!
sleep 1
fs_produce_at $((run + 5)) 5 0 "$now_at"
fs_wait_for 30 grep -q '"event":"watermark_sync_failed".*lock timeout' "$FS_TEST_DIR/fast.log"
fs_wait_for 30 fs_rows_at_least decisions 45
wait "$holder"
echo "ok: a held prune lock fails the sync, scoring goes on"

# 2. The lagging worker's row ages out (default liveness: 10 minutes): the next prune deletes the old
# events and records its cutoff as the horizon.
fs_psql "UPDATE scorer_watermarks SET updated_at = now() - interval '11 minutes' WHERE scorer_id = 'lagging'" >/dev/null
fs_produce_at $((run + 2)) 30 25 "$now_at"       # 00:25 .. 00:29, after everything so far
fs_wait_for 60 fs_rows_at_least decisions 50
fs_wait_for 30 pruned_all fast
fs_assert_eq 0 "$(old_exact)" "old exact events once the lagging worker's row is stale"
horizon=$(fs_psql "SELECT extract(epoch FROM horizon)::bigint FROM prune_horizons WHERE pruned = 'velocity_events'")
((horizon > old_s + 3600)) || fs_fail "velocity_events horizon $horizon not above the old events ($old_s)"
fs_assert_eq 3 "$(fs_rows prune_horizons)" "horizons recorded (exact events, hour and day buckets)"
fs_kill fast TERM
fs_wait_exit fast 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "fast worker exit status"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM scorer_watermarks WHERE scorer_id = 'fast'")" "the stopped worker's watermark row"

# 3. A worker without a watermark of its own gets 10 payments from below the horizon (late: their
# windows miss pruned events), then 3 current ones (after the horizon: on time).
fs_bg late env FS_SCORER_ID=late "$BUILD/bin/fraudshield-scorer"
fs_produce_at $((run + 3)) 10 0 "$(date -u -d "@$((old_s + 1800))" +%Y-%m-%dT%H:%M)"
fs_wait_for 60 fs_rows_at_least decisions 60
fs_produce_at $((run + 4)) 43 40 "$now_at"       # 00:40 .. 00:42
fs_wait_for 60 fs_rows_at_least decisions 63
fs_kill late TERM
fs_wait_exit late 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "late worker exit status"
stopped=$(grep '"event":"stopped"' "$FS_TEST_DIR/late.log" | tail -n 1)
[[ "$stopped" == *'"late_events":10}'* || "$stopped" == *'"late_events":10,'* ]] ||
    fs_fail "payments below the prune horizon not counted late: $stopped"
echo "scorer prune workers ok"
