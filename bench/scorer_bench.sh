#!/usr/bin/env bash
# bench/scorer_bench.sh: the scorer's benchmark (`make bench-scorer`; results in BENCHMARKS.md).
#
#  1. generates N realistic payments (scripts/gen-payments.sh: many customers, terminals, cards,
#     30 days of event time) and pre-fills raw_payments on the dev broker: P partitions and zstd
#     compression keep the backlog inside the broker's 5 MiB-per-partition retention, and a count of
#     the topic checks that nothing was dropped;
#  2. the ceiling: a plain COPY of the same N rows into an empty copy of the payments table;
#  3. one scorer (all features and the default rules) from its first message until all N are
#     persisted and produced to processed_payments (its commit comes after both), then checks
#     N rows in payments, decisions and on processed_payments; its peak RSS;
#  4. the same backlog again (a new consumer group, emptied tables) with two scorers.
# The last line is `bench-scorer copy_rps=... scorer_pps=... ratio=... two_workers_pps=... rss_mb=...`.
# Also (BENCH_BULK=1, the default) bench/bulk_insert.c: the three idempotent bulk-insert methods.
# PostgreSQL runs with deploy/postgres/fraudshield.conf (the settings compose uses: shared_buffers,
# WAL pacing) and the test clusters' fsync=off.
# Env: BUILD (default build/release), BENCH_N (500000), BENCH_PARTITIONS (64), BENCH_BATCH_MAX
# (2000), BENCH_PG_CONF (postgresql.conf lines instead of that include; empty: PostgreSQL's
# defaults), BENCH_PROFILE=1 records `perf` profiles of the scorer and its PostgreSQL backend into
# the work dir (kept with FS_KEEP=1).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/tests/lib.sh"
n=${BENCH_N:-500000}
parts=${BENCH_PARTITIONS:-64}
batch=${BENCH_BATCH_MAX:-2000}
fs_setup bench_scorer
# PostgreSQL as deploy/postgres/fraudshield.conf sizes it (BENCH_PG_CONF= : PostgreSQL's defaults)
FS_PG_CONF=${BENCH_PG_CONF-"include '$REPO/deploy/postgres/fraudshield.conf'"} fs_pg_start
fs_broker_start "$parts"
export FS_ADMIN_PORT=-1 FS_BATCH_MAX="$batch" FS_BATCH_MAX_MS=100
log() { echo "[bench] $*" >&2; }

# --- 1. the backlog ---------------------------------------------------------------------------
events="$FS_TEST_DIR/payments.txt"
bash "$REPO/scripts/gen-payments.sh" "$n" 7 30 50000 10000 >"$events"
log "generated $n payments ($(($(wc -c <"$events") / 1048576)) MiB of JSON)"
t0=$(date +%s.%N)
kcat -b "$FS_BROKERS" -P -t raw_payments -K: -z zstd -X linger.ms=50 -X batch.size=1000000 <"$events"
log "produced in $(echo "$(date +%s.%N) - $t0" | bc) s"
on_topic=$(timeout 300 kcat -b "$FS_BROKERS" -C -t raw_payments -o beginning -e -q -f '%p\n' | wc -l)
[[ "$on_topic" == "$n" ]] || fs_fail "raw_payments holds $on_topic of $n messages: the dev broker dropped some (more partitions?)"
log "raw_payments holds all $n messages over $parts partitions"

# --- 2. the ceiling: COPY -------------------------------------------------------------------------
csv="$FS_TEST_DIR/payments.csv"
cut -d: -f2- "$events" | jq -r '[.payment_id, .user_id, .merchant_id, .amount_minor, .currency, 2,
    .payment_method, .card_last_four, .card_fingerprint_digest, .ip_digest, .email_digest,
    .device_id_digest, .country, .billing_country, .shipping_country, .event_time, .ingest_time,
    0, input_line_number] | @csv' >"$csv"
# the schema: a scorer migrates PostgreSQL first, then gives up on an unreachable broker
fs_bg migrate env FS_BROKERS=127.0.0.1:1 FS_STARTUP_TIMEOUT_MS=2000 "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 '[[ $(fs_psql "SELECT count(*) FROM pg_tables WHERE tablename = '"'"'feature_buckets'"'"'") == 1 ]]'
fs_wait_exit migrate 30
if [[ -n "${BENCH_PG_LOG_MS:-}" ]]; then # statement durations in postgres.log (diagnosis)
    fs_psql "ALTER SYSTEM SET log_min_duration_statement = ${BENCH_PG_LOG_MS}" >/dev/null
    fs_psql "SELECT pg_reload_conf()" >/dev/null
fi
fs_psql "CREATE TABLE payments_copy (LIKE payments INCLUDING ALL)"
cols="payment_id, user_id, merchant_id, amount_minor, currency, currency_exp, payment_method, card_last_four, card_fingerprint_digest, ip_digest, email_digest, device_id_digest, country, billing_country, shipping_country, event_time, ingest_time, source_partition, source_offset"
t0=$(date +%s.%N)
fs_psql "\\copy payments_copy ($cols) FROM '$csv' WITH (FORMAT csv)" >/dev/null
copy_s=$(echo "$(date +%s.%N) - $t0" | bc)
copy_rps=$(echo "$n / $copy_s" | bc)
log "COPY of $n rows: ${copy_s} s, $copy_rps rows/s"
fs_psql "DROP TABLE payments_copy"

# --- the bulk-insert methods (BENCH_BULK=0 skips): jsonb_to_recordset vs unnest vs COPY to temp ---
if [[ "${BENCH_BULK:-1}" == 1 ]]; then
    cc -O2 -std=c11 -D_GNU_SOURCE $(pkg-config --cflags libpq jansson) -o "$FS_TEST_DIR/bulk_insert" \
        "$REPO/bench/bulk_insert.c" $(pkg-config --libs libpq jansson)
    "$FS_TEST_DIR/bulk_insert" "$FS_DATABASE_URL" "${BENCH_BULK_ROWS:-200000}" "$batch" | tee "$FS_TEST_DIR/bulk.txt" >&2
fi

# --- 3./4. scorers ---------------------------------------------------------------------------------
# run_scorers GROUP WORKERS: starts them, waits until every payment is committed; prints pps.
run_scorers() {
    local group=$1 workers=$2 i start end total pids=()
    for ((i = 1; i <= workers; i++)); do
        fs_bg "$group-$i" env FS_SCORER_ID="$group-$i" FS_GROUP_ID="$group" FS_LOG_LEVEL="${BENCH_LOG_LEVEL:-info}" \
            "$BUILD/bin/fraudshield-scorer"
        pids+=("$(fs_pid "$group-$i")")
    done
    # the clock starts at the first persisted payment (the group join is not scoring time)
    fs_wait_for 120 '(( $(fs_psql "SELECT count(*) FROM (SELECT 1 FROM payments LIMIT 1) x") > 0 ))'
    start=$(date +%s.%N)
    if [[ "${BENCH_PROFILE:-0}" == 1 && $workers == 1 ]]; then profile "${pids[0]}" & fi
    until total=$(fs_psql "SELECT count(*) FROM decisions") && ((total >= n)); do
        sleep 0.5
        for ((i = 1; i <= workers; i++)); do fs_alive "$group-$i" || fs_fail "$group-$i died"; done
    done
    end=$(date +%s.%N)
    rss=0
    for p in "${pids[@]}"; do
        r=$(awk '/VmHWM/ {print $2}' "/proc/$p/status")
        ((r > rss)) && rss=$r
    done
    for ((i = 1; i <= workers; i++)); do fs_kill "$group-$i" TERM; done
    for ((i = 1; i <= workers; i++)); do fs_wait_exit "$group-$i" 60; done
    echo "$(echo "$n / ($end - $start)" | bc) $((rss / 1024))"
}

profile() { # perf over 20 s of the single worker and of PostgreSQL, for BENCHMARKS.md
    local pid=$1 be
    command -v perf >/dev/null || { log "perf not installed: no profile"; return; }
    sleep 5
    be=$(fs_psql "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'fraudshield-scorer%' LIMIT 1")
    # dwarf call graphs: the binaries keep no frame pointers (-O2), so -g alone loses the callers
    perf record -F 499 --call-graph dwarf,16384 -o "$FS_TEST_DIR/perf-scorer.data" -p "$pid" -- sleep 20 >/dev/null 2>&1 &
    perf record -F 499 -g -o "$FS_TEST_DIR/perf-pg.data" -p "$be" -- sleep 20 >/dev/null 2>&1
    wait
    perf report -i "$FS_TEST_DIR/perf-scorer.data" --no-children --percent-limit 1.5 --stdio 2>/dev/null |
        grep -E '^ +[0-9]' >"$FS_TEST_DIR/profile-scorer.txt" || true
    # inclusive time of the scorer's own functions: which step the library time above belongs to
    perf report -i "$FS_TEST_DIR/perf-scorer.data" --children --percent-limit 1 --stdio 2>/dev/null |
        grep -E '^ +[0-9].*fraudshield-scorer +\[\.\]' >"$FS_TEST_DIR/profile-scorer-inclusive.txt" || true
    perf report -i "$FS_TEST_DIR/perf-pg.data" --no-children --percent-limit 1.5 --stdio 2>/dev/null |
        grep -E '^ +[0-9]' >"$FS_TEST_DIR/profile-pg.txt" || true
    log "profiles: $FS_TEST_DIR/profile-scorer.txt, profile-pg.txt"
}

check_outputs() {
    fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM payments')" "payments rows" >&2
    fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions rows" >&2
}

read -r one_pps rss_mb <<<"$(run_scorers bench-one 1)"
check_outputs
processed=$(timeout 300 kcat -b "$FS_BROKERS" -C -t processed_payments -o beginning -e -q -f '%k\n' | sort -u | wc -l)
fs_assert_eq "$n" "$processed" "distinct payments on processed_payments" >&2
log "one scorer: $one_pps payments/s, peak RSS $rss_mb MB"
log "state: $(fs_psql "SELECT (SELECT count(*) FROM feature_buckets) || ' buckets, ' || (SELECT count(*) FROM risk_vault) || ' vault rows, ' || (SELECT count(*) FROM velocity_events) || ' exact events, ' || (SELECT count(*) FROM alerts) || ' alerts'")"

# how the state tables were written: inserts, updates, and how many updates were HOT (no index
# entry, the new version on the same page)
log "writes: $(fs_psql "SELECT string_agg(relname || ' ins ' || n_tup_ins || ' upd ' || n_tup_upd || ' hot ' || n_tup_hot_upd || ' del ' || n_tup_del, '; ' ORDER BY relname) FROM pg_stat_user_tables WHERE relname IN ('feature_buckets', 'risk_vault', 'velocity_events', 'payments', 'decisions')")"
fs_psql "TRUNCATE payments, decisions, alerts, velocity_events, feature_buckets, risk_vault, outcome_links CASCADE" >/dev/null
read -r two_pps rss2 <<<"$(run_scorers bench-two 2)"
check_outputs
log "two scorers: $two_pps payments/s (peak RSS per worker $rss2 MB)"

ratio=$(echo "scale=3; $one_pps / $copy_rps" | bc)
echo "bench-scorer copy_rps=$copy_rps scorer_pps=$one_pps ratio=$ratio two_workers_pps=$two_pps rss_mb=$rss_mb"
