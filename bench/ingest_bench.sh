#!/usr/bin/env bash
# bench/ingest_bench.sh: what `make bench-ingest` runs. Not a test: it measures and prints.
#
#   (a) bench/bare_http.c, a libevent server that only answers 202         wrk -t1 -c64
#   (b) POST /api/v1/payments, realistic bodies, API key auth on           wrk -t1 -c64
#       (a) and (b) alternate in BENCH_ROUNDS rounds; the ratio is the median of the rounds' b/a,
#       so that a noisy moment of the shared machine weighs on one round, not on the figure
#   (c) POST /api/v1/payments/batch, 100 payments per request             wrk -t1 -c16
#       (BENCH_ROUNDS rounds, the median)
#   (d) (b) at a fixed rate of half its maximum, open loop (bench/openloop.c): p50 / p99
#   (e) the batch again with one payment in 100 (then 1000) carrying a never-seen email: what
#       digest-cache misses (Argon2 on the worker threads) do to throughput
# Ingest's peak RSS (VmHWM) over the whole run is reported. Bodies come from a fixed population of
# BENCH_CUSTOMERS customers (bench/payments.lua), whose identifiers are digested once in a warm-up.
#
# Env: BUILD (default build/release), BENCH_SECONDS (default 10), BENCH_ROUNDS (default 3; (a) and (b)
# run BENCH_SECONDS/2, at least 3 s, per round), BENCH_CUSTOMERS (default 500),
# BENCH_PARTITIONS (default 6), BENCH_INGEST_ARGS (extra ingest options, e.g. "-X linger.ms=5", to compare settings),
# BENCH_INGEST_ENV (NAME=value pairs for ingest alone, e.g. an LD_PRELOAD'ed allocator).
# The last line is: bench-ingest baseline_rps=... single_rps=... ratio=... batch_pps=... p99_ms=... rss_mb=...
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BUILD=${BUILD:-build/release}
case $BUILD in /*) ;; *) BUILD="$REPO/$BUILD" ;; esac
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
ROUND_SECS=$(( SECS / 2 > 3 ? SECS / 2 : 3 ))
export BENCH_DIR="$REPO/bench" BENCH_CUSTOMERS=${BENCH_CUSTOMERS:-500}
WORK="$BUILD/bench-ingest.$$"
mkdir -p "$WORK"
PIDS=()

cleanup() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '%s\n' "bench-ingest: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}
wait_http() { for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
# wrk_rps OUTPUT -> requests/s
wrk_rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$1"; }
non_2xx() { sed -n 's/^non_2xx=\([0-9]*\).*/\1/p' <<<"$1"; }

for b in fraudshield-ingest fraudshield-devbroker bare_http openloop; do
    [[ -x "$BUILD/bin/$b" ]] || die "missing $BUILD/bin/$b (make BUILD=... bench-ingest builds it)"
done
command -v wrk >/dev/null || die "wrk is not installed (make deps)"

# --- services ------------------------------------------------------------------------------------
# The project's default of 6 partitions. Nothing consumes here, so the dev broker dropping all but
# the newest 5 MiB of each partition costs nothing. More partitions are worse for ingest: each
# partition is its own batch (compressed alone, its own idempotence sequence), so batches are
# smaller and requests more numerous: 24 partitions measured a p99 at half load 2-3x higher.
FS_PARTITIONS=${BENCH_PARTITIONS:-6} FS_BOOTSTRAP_FILE="$WORK/bootstrap" "$BUILD/bin/fraudshield-devbroker" >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do [[ -s "$WORK/bootstrap" ]] && break; sleep 0.1; done
[[ -s "$WORK/bootstrap" ]] || die "the dev broker did not start"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/pii.secret"
BENCH_KEY=$("$BUILD/bin/fraudshield-ingest" keys create --keys-file "$WORK/keys" --id bench \
    --scopes payments:write 2>/dev/null)
export BENCH_KEY
port=$(free_port)
env ${BENCH_INGEST_ENV:-} "$BUILD/bin/fraudshield-ingest" --brokers="$(head -n 1 "$WORK/bootstrap")" --listen-port="$port" \
    --pii-secret-file="$WORK/pii.secret" --keys-file="$WORK/keys" --log-level=warn \
    ${BENCH_INGEST_ARGS:-} >"$WORK/ingest.log" 2>&1 &
ingest_pid=$!
PIDS+=("$ingest_pid")
wait_http "http://127.0.0.1:$port/ready" || { tail -20 "$WORK/ingest.log" >&2; die "ingest did not start"; }
bare_port=$(free_port)
"$BUILD/bin/bare_http" "$bare_port" &
PIDS+=($!)
wait_http "http://127.0.0.1:$bare_port/" || die "bare_http did not start"
metric() { curl -s "http://127.0.0.1:$port/metrics" | sed -n "s/^$1 \([0-9.e+]*\)$/\1/p"; }
# over5ms BEFORE AFTER FAMILY [LABELS]: the share of observations above 5 ms between two /metrics
# snapshots (the histogram buckets' differences): which part of a request the tail comes from.
over5ms() {
    awk -v fam="$3" -v lab="${4:-}" '
        FNR == 1 { f++ }
        index($0, fam "_bucket{" lab) == 1 && /le="(0.005|\+Inf)"/ {
            k = ($0 ~ /Inf/) ? "all" : "le5"; v[f, k] = $2 }
        END { n = v[2, "all"] - v[1, "all"]; if (n <= 0) { print "n/a"; exit }
              printf "%.2f%% of %d", 100 * (n - (v[2, "le5"] - v[1, "le5"])) / n, n }' "$1" "$2"
}

# --- warm-up: every identifier of the population digested once (Argon2 on the workers) -----------
say "warm-up: digesting the population's identifiers (~$((BENCH_CUSTOMERS * 5)) Argon2 runs)"
prev=-1
for _ in $(seq 1 30); do
    wrk -t1 -c4 -d3s --timeout 30s -s bench/batch.lua "http://127.0.0.1:$port/api/v1/payments/batch" >/dev/null
    misses=$(metric fs_ingest_digest_cache_misses_total)
    [[ "$misses" == "$prev" ]] && break
    prev=$misses
done
say "warm-up done: $(metric fs_ingest_digest_cache_misses_total) misses (distinct identifiers)"

# --- (a) the baseline and (b) single payments, alternately ------------------------------------------
# median of the values on stdin (one a line)
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rounds="" single_bad=0
for r in $(seq 1 "$ROUNDS"); do
    say "round $r/$ROUNDS: (a) bare libevent server, then (b) POST /api/v1/payments, ${ROUND_SECS}s each"
    out=$(wrk -t1 -c64 -d"${ROUND_SECS}s" -s bench/single.lua "http://127.0.0.1:$bare_port/api/v1/payments")
    a=$(wrk_rps "$out")
    out=$(BENCH_WRITE_BODIES="$WORK/bodies.txt" wrk -t1 -c64 -d"${ROUND_SECS}s" -s bench/single.lua \
        "http://127.0.0.1:$port/api/v1/payments")
    b=$(wrk_rps "$out")
    nb=$(non_2xx "$out")
    single_bad=$((single_bad + ${nb:-0}))
    rounds+="$a $b $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')"$'\n'
done
baseline=$(awk 'NF { print $1 }' <<<"$rounds" | median)
single=$(awk 'NF { print $2 }' <<<"$rounds" | median)
ratio=$(awk 'NF { print $3 }' <<<"$rounds" | median)
ratio=$(awk -v r="$ratio" 'BEGIN { printf "%.2f", r }')
round_lines=$(awk 'NF { printf "    round %d: (a) %s req/s, (b) %s req/s, b/a %s\n", NR, $1, $2, $3 }' <<<"$rounds")

# --- (c) batches of 100 ---------------------------------------------------------------------------
# as many rounds (the median), for the same reason
batch_all="" batch_bad=0
for r in $(seq 1 "$ROUNDS"); do
    say "(c) POST /api/v1/payments/batch x100, round $r/$ROUNDS, ${ROUND_SECS}s"
    out=$(wrk -t1 -c16 -d"${ROUND_SECS}s" --timeout 10s -s bench/batch.lua "http://127.0.0.1:$port/api/v1/payments/batch")
    batch_all+="$(wrk_rps "$out")"$'\n'
    nb=$(non_2xx "$out")
    batch_bad=$((batch_bad + ${nb:-0}))
done
batch_rps=$(awk 'NF' <<<"$batch_all" | median)
batch_pps=$(awk -v r="$batch_rps" 'BEGIN { printf "%.0f", r * 100 }')
batch_rounds=$(awk 'NF { printf "%s%.0f", (NR > 1 ? ", " : ""), $1 * 100 }' <<<"$batch_all")

# --- (d) latency at half of (b)'s maximum, open loop -----------------------------------------------
half=$(awk -v r="$single" 'BEGIN { printf "%.0f", r / 2 }')
say "(d) open loop at $half req/s, ${SECS}s"
curl -s "http://127.0.0.1:$port/metrics" >"$WORK/metrics.before"
lat=$("$BUILD/bin/openloop" 127.0.0.1 "$port" /api/v1/payments "$WORK/bodies.txt" "$half" "$SECS" 64 \
    "Content-Type: application/json" "X-API-Key: $BENCH_KEY") || true
curl -s "http://127.0.0.1:$port/metrics" >"$WORK/metrics.after"
slow_req=$(over5ms "$WORK/metrics.before" "$WORK/metrics.after" fs_ingest_request_duration_seconds 'route="payments",')
slow_dr=$(over5ms "$WORK/metrics.before" "$WORK/metrics.after" fs_ingest_delivery_duration_seconds)
p50=$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$lat")
p99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$lat")

# --- (e) digest-cache misses -----------------------------------------------------------------------
miss_secs=$(( SECS / 2 > 3 ? SECS / 2 : 3 ))
say "(e) batch with 1 payment in 100 / 1000 carrying a new email, ${miss_secs}s each"
out=$(BENCH_FRESH_EVERY=100 wrk -t1 -c16 -d"${miss_secs}s" --timeout 30s -s bench/batch.lua "http://127.0.0.1:$port/api/v1/payments/batch")
miss100_pps=$(awk -v r="$(wrk_rps "$out")" 'BEGIN { printf "%.0f", r * 100 }')
out=$(BENCH_FRESH_EVERY=1000 wrk -t1 -c16 -d"${miss_secs}s" --timeout 30s -s bench/batch.lua "http://127.0.0.1:$port/api/v1/payments/batch")
miss1000_pps=$(awk -v r="$(wrk_rps "$out")" 'BEGIN { printf "%.0f", r * 100 }')

rss_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$ingest_pid/status")
rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
ratio_hit=$(metric fs_ingest_digest_cache_hit_ratio)

cat <<EOF

machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1); wrk, ingest, dev broker on the same machine
(a) bare libevent 202           ${baseline} req/s (median of ${ROUNDS} rounds)
(b) POST /api/v1/payments       ${single} req/s = payments/s (median; non-2xx: ${single_bad:-?})   ratio b/a ${ratio} (median of the rounds' ratios)
${round_lines}
(c) batch of 100                ${batch_rps} req/s = ${batch_pps} payments/s (median; rounds: ${batch_rounds}; non-2xx: ${batch_bad:-?})
(d) (b) at ${half} req/s open loop   p50 ${p50} ms, p99 ${p99} ms   [${lat}]
    over 5 ms: ${slow_req} requests (ingest's own clock), ${slow_dr} deliveries (produce -> broker ack)
(e) batch, 1% new emails        ${miss100_pps} payments/s;  0.1% new emails: ${miss1000_pps} payments/s
    digest cache hit ratio over the run: ${ratio_hit}
ingest peak RSS                 ${rss_mb} MB
EOF
echo "bench-ingest baseline_rps=${baseline} single_rps=${single} ratio=${ratio} batch_pps=${batch_pps} p99_ms=${p99} rss_mb=${rss_mb}"
