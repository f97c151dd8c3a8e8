#!/usr/bin/env bash
# When a scorer closes its batch (scorer.c scorer_poll_batch): at batch-max messages, batch-max-ms
# after the first one, or batch-linger-ms (5 by default) after the last one.
#   1. light load: batch-max-ms 30 s, the default linger: three payments are decided within 10 s
#      (the code without the linger holds them for the 30 s of batch-max-ms);
#   2. batch-linger-ms >= batch-max-ms keeps the old behaviour: batch-max-ms 3 s, linger 60 s: a
#      payment is not decided 1 s after it is consumed, and is within 10 s;
#   3. a backlog still fills batches with linger 0 (close as soon as none is queued): 3000 payments
#      waiting, batch-max 500: at most 20 batches, 150 payments on average (6 when all are full;
#      the first few can be small while librdkafka's first fetches come in).
#   4. a backlog the consumer fetches in small pieces (librdkafka told to prefetch only 5 messages,
#      4 KB per partition and fetch) still fills batches with linger 0: the batch is closed early only when the
#      worker has caught up with the partitions' high watermarks (scorer_caught_up); 1000
#      payments, batch-max 500: at most 10 batches (without the check: one per fetch, ~100s).
# The scorers run one after the other in one group; each checks its own payments' rows.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_batching
fs_pg_start
fs_broker_start 3
gen="$REPO/tests/integration/gen_raw_payments.sh"
export KAFKA_SESSION_TIMEOUT_MS=6000 KAFKA_HEARTBEAT_INTERVAL_MS=500 # quick rebalances (the mock)
run=$((RANDOM + 1000))
bash "$gen" "$run" 4004 1000 DE >"$FS_TEST_DIR/events.txt"
decided() { fs_psql "SELECT count(*) FROM decisions"; }
# scorer NAME ENV...: started, and assigned its partitions (so that what is produced next is consumed)
scorer() {
    local name=$1
    shift
    fs_bg "$name" env FS_SCORER_ID="$name" FS_ADMIN_PORT=-1 "$@" "$BUILD/bin/fraudshield-scorer"
    fs_wait_for 60 grep -q '"event":"partitions_assigned".*"partitions":\[[0-9]' "$FS_TEST_DIR/$name.log"
}
stop() {
    fs_kill "$1" TERM
    fs_wait_exit "$1" 30
    fs_assert_eq 0 "$FS_EXIT_STATUS" "$1: exit status"
}

# 1. Light load: the linger closes the batch, not batch-max-ms.
scorer light FS_BATCH_MAX_MS=30000
sed -n 1,3p "$FS_TEST_DIR/events.txt" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 10 '(( $(decided) == 3 ))' # without the linger: 30 s
echo "ok: three payments decided without waiting for batch-max-ms"
stop light

# 2. A linger longer than batch-max-ms: batch-max-ms decides.
scorer wait FS_BATCH_MAX_MS=3000 FS_BATCH_LINGER_MS=60000
sed -n 4p "$FS_TEST_DIR/events.txt" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
sleep 1 # it was consumed after it was produced: its batch closes 3 s after that
fs_assert_eq 3 "$(decided)" "decisions 1 s after the fourth payment (batch-max-ms 3 s, linger 60 s)"
fs_wait_for 10 '(( $(decided) == 4 ))'
echo "ok: batch-linger-ms >= batch-max-ms waits for batch-max-ms"
stop wait

# 3. A backlog fills batches even with linger 0.
sed -n '5,$p' "$FS_TEST_DIR/events.txt" | sed -n 1,3000p | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
scorer backlog FS_BATCH_MAX=500 FS_BATCH_LINGER_MS=0
fs_wait_for 60 '(( $(decided) == 3004 ))'
stop backlog
batches=$(grep '"event":"stopped"' "$FS_TEST_DIR/backlog.log" | grep -o '"batches":[0-9]*' | cut -d: -f2)
echo "3000 payments in $batches batches of at most 500"
((batches >= 6 && batches <= 20)) || fs_fail "3000 payments in $batches batches (6..20 expected)"

# 4. A backlog fetched in small pieces: the batches wait for what the brokers still hold.
sed -n '3005,4004p' "$FS_TEST_DIR/events.txt" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
scorer trickle FS_BATCH_MAX=500 FS_BATCH_MAX_MS=20000 FS_BATCH_LINGER_MS=0 KAFKA_QUEUED_MIN_MESSAGES=5 \
    KAFKA_MAX_PARTITION_FETCH_BYTES=4096
fs_wait_for 120 '(( $(decided) == 4004 ))'
stop trickle
batches=$(grep '"event":"stopped"' "$FS_TEST_DIR/trickle.log" | grep -o '"batches":[0-9]*' | cut -d: -f2)
echo "1000 payments fetched in small pieces: $batches batches of at most 500"
((batches >= 2 && batches <= 10)) || fs_fail "1000 payments in $batches batches (2..10 expected)"
echo PASS
