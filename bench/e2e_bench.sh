#!/usr/bin/env bash
# bench/e2e_bench.sh: the whole pipeline end to end (`make bench-e2e`; results in BENCHMARKS.md).
#
# ingest + the dev broker + two scorers + PostgreSQL on this machine (tests/lib.sh), driven by
# fraudshield-replay with the handbook's transactions (DATA):
#   A. sustained: the whole file as fast as the pipeline takes it: --rate 0 with --max-undecided (a
#      closed loop on the decisions, which keeps the broker's backlog inside its 5 MiB-per-partition
#      retention); payments/s from the first send to the last decision persisted in PostgreSQL.
#      Fraud labels go back with a 7-day delay (--outcomes fraud), as in `make eval`.
#   B. latency at a fixed RATE (default 5,000/s, open loop) for B_N payments (default 100,000: ~20 s;
#      more would outgrow the broker's retention when the scorers cannot keep up), then
#   C. a ladder of open-loop rates below A's sustained one (C_PCTS, default "75 50 25" percent of
#      it), C_SECONDS (40) each: the highest rate kept up with (decisions at >= 97 % of the sent rate,
#      backlog never above 2 s of traffic) is the one this machine sustains open loop, and its
#      latency is quoted (`bench-e2e-sustainable`).
#   B and C replay the first rows of DATA again moved 153 days later, with new transaction ids (new
#   payments on top of A's history, so the features see the state a live system would).
# Every second a sampler records the decisions persisted (the scorers' fs_scorer_payments_total),
# the consumer lag (fs_scorer_consumer_lag_assigned, librdkafka statistics every second) and the CPU
# time of each process (ingest, each scorer, the broker, PostgreSQL's processes, the replay) into
# $BENCH_DIR/samples.tsv; gnuplot draws docs/bench-e2e.png from it (when installed).
# Every phase checks that nothing was lost (rows in PostgreSQL = payments accepted, no offset out of
# range). Last line: `bench-e2e sustained_pps=… p99_ms_at_5k=… max_lag=…`.
# Env: BUILD, DATA (../shared/datasets/handbook/dev.csv.gz; absent: skipped), BENCH_DIR (.eval/bench-e2e),
# RATE, B_N, C_PCTS, C_SECONDS, MAX_UNDECIDED (20000), PARTITIONS (12), LIMIT (A's rows; 0: all), PLOT
# (docs/bench-e2e.png; "": none).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DATA=${DATA:-../shared/datasets/handbook/dev.csv.gz}
if [[ ! -f "$DATA" ]]; then
    echo "bench-e2e: $DATA not found (the handbook data set, see docs/detection.md): skipped"
    exit 0
fi
BENCH_DIR=${BENCH_DIR:-$REPO/.eval/bench-e2e}
RATE=${RATE:-5000}
B_N=${B_N:-100000}
PLOT=${PLOT-$REPO/docs/bench-e2e.png}
source "$REPO/tests/lib.sh"
log() { echo "[bench-e2e] $*" >&2; }

mkdir -p "$BENCH_DIR"
exec 8>"$BENCH_DIR/lock"
flock -n 8 || { echo "bench-e2e: another run uses $BENCH_DIR" >&2; exit 1; }
if [[ -f "$BENCH_DIR/pg/PG_VERSION" ]] && fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$BENCH_DIR/pg" status >/dev/null 2>&1; then
    fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$BENCH_DIR/pg" -m fast -w stop >/dev/null # left by a killed run
fi
rm -rf "$BENCH_DIR/pg" "$BENCH_DIR"/*.log "$BENCH_DIR"/*.out "$BENCH_DIR"/*.tsv
fs_setup bench_e2e "$BENCH_DIR"
# The dev broker (librdkafka's mock cluster) answers a fetch that finds no data only after the
# consumer's fetch.wait.max.ms (500 ms by default), even when data arrives meanwhile; real Kafka
# answers as soon as data arrives. A short wait keeps that artifact (up to 0.5 s per consumer hop:
# the scorers' and the replay's) out of the end-to-end latency. Producers ignore the property.
export KAFKA_FETCH_WAIT_MAX_MS=${KAFKA_FETCH_WAIT_MAX_MS:-10}
# PostgreSQL as deploy/postgres/fraudshield.conf sizes it, as in bench-scorer (BENCH_PG_CONF= :
# PostgreSQL's defaults)
FS_PG_CONF=${BENCH_PG_CONF-"include '$REPO/deploy/postgres/fraudshield.conf'"} fs_pg_start "$BENCH_DIR/pg"
# Scorers: batches of up to 2000 (as bench-scorer), closed 50 ms after their first message (the
# default); lateness as in make eval (scripts/eval.sh); statistics (the lag) every second.
FS_SCORER_ARGS="--batch-max=2000 --velocity-lateness-s=259200 --stats-interval-ms=1000 ${SCORER_ARGS:-}" \
    fs_pipeline_start 2 "${PARTITIONS:-12}"
log "pipeline up: ingest $FS_INGEST_URL, scorers (admin ports ${FS_SCORER_ADMIN_PORTS[*]}), PostgreSQL $FS_PG_PORT; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- the sampler ----------------------------------------------------------------------------------

# CPU time (utime + stime, clock ticks) of a process, all threads; 0 when gone.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# PostgreSQL: the postmaster and its children (the backends of the scorers, ingest, checkpointer...).
pg_ticks() {
    local pm sum=0 c
    pm=$(head -1 "$FS_PG_DATA/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    sum=$(ticks "$pm")
    for c in $(cat "/proc/$pm/task/$pm/children" 2>/dev/null); do sum=$((sum + $(ticks "$c"))); done
    echo "$sum"
}

metric_sum() { # NAME: the sum of a metric over the scorers' /metrics
    local p
    for p in "${FS_SCORER_ADMIN_PORTS[@]}"; do curl -sf --max-time 1 "http://127.0.0.1:$p/metrics" || true; done |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

# One line a second: t phase decided lag ticks(ingest scorer-1 scorer-2 devbroker postgres replay)
sampler() {
    local t0=$1 next now replay_pid
    echo -e "t\tphase\tdecided\tlag\tingest\tscorer1\tscorer2\tbroker\tpostgres\treplay"
    next=$(date +%s.%N)
    while :; do
        replay_pid=$(cat "$BENCH_DIR/replay.pid" 2>/dev/null || echo 0)
        now=$(date +%s.%N)
        printf '%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(echo "$now - $t0" | bc)" \
            "$(cat "$BENCH_DIR/phase" 2>/dev/null)" "$(metric_sum fs_scorer_payments_total)" \
            "$(metric_sum fs_scorer_consumer_lag_assigned)" "$(ticks "$(fs_pid ingest)")" \
            "$(ticks "$(fs_pid scorer-1)")" "$(ticks "$(fs_pid scorer-2)")" "$(ticks "$(fs_pid devbroker)")" \
            "$(pg_ticks)" "$(ticks "$replay_pid")"
        next=$(echo "$next + 1" | bc)
        sleep "$(echo "x = $next - $(date +%s.%N); if (x < 0) x = 0; x" | bc)"
    done
}

T0=$(date +%s.%N)
echo A >"$BENCH_DIR/phase"
sampler "$T0" >"$BENCH_DIR/samples.tsv" &
SAMPLER=$!
FS_ALL_PIDS+=("$SAMPLER")

# ---- phases -------------------------------------------------------------------------------------------

# replay NAME ARGS...: one replay run (its summary in NAME.out); sets ACCEPTED, P50, P99, PPS.
replay() {
    local name=$1 out
    shift
    "$BUILD/bin/fraudshield-replay" --url "$FS_INGEST_URL" --api-key-file "$FS_API_KEY_FILE" \
        --brokers "$FS_BROKERS" --delay-days 7 --outcomes fraud --drain-timeout-s 900 \
        --log-level warn "$@" >"$BENCH_DIR/$name.out" 2>>"$BENCH_DIR/replay.log" &
    echo $! >"$BENCH_DIR/replay.pid"
    wait $! || fs_fail "replay $name failed (see $BENCH_DIR/$name.out, replay.log)"
    rm -f "$BENCH_DIR/replay.pid"
    out=$(tail -1 "$BENCH_DIR/$name.out")
    ACCEPTED=$(sed -n 's/.* accepted=\([0-9]*\) .*/\1/p' <<<"$out")
    P50=$(sed -n 's/.* p50_ms=\([0-9.]*\) .*/\1/p' <<<"$out")
    P99=$(sed -n 's/.* p99_ms=\([0-9.]*\) .*/\1/p' <<<"$out")
    PPS=$(sed -n 's/.* pps=\([0-9]*\) .*/\1/p' <<<"$out")
    sed -n '/end-to-end/p; /throughput/p' "$BENCH_DIR/$name.out" >&2
}

# Waits until PostgreSQL holds want decisions (or none came for 120 s: some were lost); prints the
# time (s since T0) the last one came.
wait_decided() {
    local want=$1 n last=-1 at
    at=$(date +%s.%N)
    while n=$(fs_psql "SELECT count(*) FROM decisions") && ((n < want)); do
        for s in scorer-1 scorer-2; do fs_alive "$s" || fs_fail "$s died"; done
        if ((n != last)); then last=$n; at=$(date +%s.%N); fi
        (($(echo "$(date +%s.%N) - $at > 120" | bc))) && break
        sleep 0.25
    done
    ((n >= want)) && at=$(date +%s.%N)
    echo "$at - $T0" | bc
}

# check_lost WANT FATAL: payments in PostgreSQL = accepted, and no offset out of range.
check_lost() {
    local want=$1 np lost
    np=$(fs_psql "SELECT count(*) FROM payments")
    lost=$(metric_sum fs_scorer_messages_lost_total)
    if [[ "$np" == "$want" && "$lost" == 0 ]]; then
        log "nothing lost: $np payments in PostgreSQL = accepted"
        return 0
    fi
    [[ $2 == 1 ]] && fs_fail "lost payments: $want accepted, $np in PostgreSQL, $lost lost by the broker"
    log "LOST: $want accepted, $np in PostgreSQL, the scorers counted $lost lost by the broker"
    LOSS="$((want - np)) lost"
}
LOSS="none"

# A: the whole file, closed loop
start=$(echo "$(date +%s.%N) - $T0" | bc)
log "A: the whole of $DATA as fast as the pipeline takes it (max-undecided ${MAX_UNDECIDED:-20000})"
replay sustained --input "$DATA" --max-undecided "${MAX_UNDECIDED:-20000}" --limit "${LIMIT:-0}"
end=$(wait_decided "$ACCEPTED")
check_lost "$ACCEPTED" 1
total=$ACCEPTED
SUSTAINED=$(echo "$ACCEPTED / ($end - $start)" | bc)
A_P50=$P50 A_P99=$P99 A_END=$end
log "A: $ACCEPTED payments in $(echo "$end - $start" | bc) s: $SUSTAINED payments/s sustained (send to last decision persisted)"

# B and C: new payments after A's: the first rows of DATA 153 days later, new transaction ids,
# in consecutive slices (B, then one per C rate), so event time keeps moving forward.
C_PCTS=${C_PCTS:-75 50 25}
C_SECONDS=${C_SECONDS:-40}
C_RATES=() counts=("$B_N")
for pct in $C_PCTS; do
    r=$((SUSTAINED * pct / 100))
    ((r > 0)) || r=1
    C_RATES+=("$r")
    counts+=($((r * C_SECONDS)))
done
python3 - "$DATA" "$BENCH_DIR/slice" "${counts[@]}" <<'EOF'
import datetime, gzip, sys
path, prefix, counts = sys.argv[1], sys.argv[2], [int(c) for c in sys.argv[3:]]
with open(path, "rb") as f:
    gz = f.read(2) == b"\x1f\x8b"
src = gzip.open(path, "rt") if gz else open(path)
head = src.readline()
for k, n in enumerate(counts):
    with open(f"{prefix}{k}.csv", "w") as out:
        out.write(head)
        for _ in range(n):
            f = src.readline().split(",")
            if len(f) < 2:
                break
            f[0] = str(int(f[0]) + 100000000)
            t = datetime.datetime.strptime(f[1], "%Y-%m-%d %H:%M:%S") + datetime.timedelta(days=153)
            f[1] = t.strftime("%Y-%m-%d %H:%M:%S")
            out.write(",".join(f))
EOF

# open_loop PHASE NAME FILE RATE: one open-loop run; sets DECIDED_PPS and MAXLAG (of the phase)
open_loop() {
    local phase=$1 name=$2 file=$3 rate=$4 start end
    total=$(fs_psql "SELECT count(*) FROM payments") # what an earlier phase lost is not waited for
    echo "$phase" >"$BENCH_DIR/phase"
    start=$(echo "$(date +%s.%N) - $T0" | bc)
    # open loop: sent at its rate whatever is outstanding, so a customer's next payment is not held
    # for the previous one's answer (--customer-order, the replay's default, capped B at ~2,200/s)
    replay "$name" --input "$file" --rate "$rate" --customer-order=false
    end=$(wait_decided $((total + ACCEPTED)))
    check_lost $((total + ACCEPTED)) 0
    DECIDED_PPS=$(echo "$ACCEPTED / ($end - $start)" | bc)
    MAXLAG=$(awk -F'\t' -v p="$phase" '$2 == p && $4 > m { m = $4 } END { print m + 0 }' "$BENCH_DIR/samples.tsv")
    log "$phase: $ACCEPTED payments sent at $PPS/s, decided at $DECIDED_PPS/s; end to end p50 $P50 ms, p99 $P99 ms; max lag $MAXLAG"
}

log "B: $B_N payments at $RATE/s (open loop)"
open_loop B fixed "$BENCH_DIR/slice0.csv" "$RATE"
B_PPS=$PPS B_P50=$P50 B_P99=$P99 B_DECIDED_PPS=$DECIDED_PPS

# C: a ladder of rates below A's sustained one; the highest that is kept up with (below) is the
# rate this machine sustains open loop, and its latency is the one to quote.
echo "| rate /s | sent /s | decided /s | p50 ms | p90 ms | p99 ms | max lag |" >"$BENCH_DIR/ladder.md"
echo "|---|---|---|---|---|---|---|" >>"$BENCH_DIR/ladder.md"
C_RATE=0 C_P50=- C_P99=-
for ((k = 0; k < ${#C_RATES[@]}; k++)); do
    r=${C_RATES[$k]}
    log "C$((k + 1)): $((r * C_SECONDS)) payments at $r/s (open loop)"
    open_loop "C$((k + 1))" "ladder-$r" "$BENCH_DIR/slice$((k + 1)).csv" "$r"
    p90=$(sed -n 's/.* p90_ms=\([0-9.]*\) .*/\1/p' "$BENCH_DIR/ladder-$r.out")
    echo "| $r | $PPS | $DECIDED_PPS | $P50 | $p90 | $P99 | $MAXLAG |" >>"$BENCH_DIR/ladder.md"
    # kept up: decided at >= 97 % of the sent rate, and the backlog never above 2 s of traffic
    if ((C_RATE == 0 && MAXLAG < r * 2 && DECIDED_PPS * 100 >= PPS * 97)); then
        C_RATE=$r C_P50=$P50 C_P99=$P99
    fi
done
cat "$BENCH_DIR/ladder.md" >&2
echo done >"$BENCH_DIR/phase"
sleep 2
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true

# ---- report -------------------------------------------------------------------------------------------

hz=$(getconf CLK_TCK)
# per phase: mean decisions/s, max lag, CPU share (% of one core) per process
awk -F'\t' -v hz="$hz" '
    NR == 1 { for (i = 1; i <= NF; i++) col[i] = $i; next }
    NR > 2 && $2 == prev_phase {
        dt = $1 - pt
        if (dt > 0) for (i = 5; i <= 10; i++) if ($i >= pv[i]) { cpu[$2, i] += ($i - pv[i]) / hz; }
        span[$2] += dt
    }
    { if ($4 > maxlag[$2]) maxlag[$2] = $4; if ($4 > maxlag["all"]) maxlag["all"] = $4
      pt = $1; prev_phase = $2; for (i = 5; i <= 10; i++) pv[i] = $i; phases[$2] = 1 }
    END {
        printf "| phase | seconds | max lag |"
        for (i = 5; i <= 10; i++) printf " %s CPU %% |", col[i]
        printf "\n|---|---|---|---|---|---|---|---|---|\n"
        n = split("A B C1 C2 C3 C4 C5", ph, " ")
        for (k = 1; k <= n; k++) { p = ph[k]; if (!(p in phases) || span[p] <= 0) continue
            printf "| %s | %.0f | %d |", p, span[p], maxlag[p]
            for (i = 5; i <= 10; i++) printf " %.0f |", 100 * cpu[p, i] / span[p]
            printf "\n" }
        printf "MAXLAG %d\n", maxlag["all"]
    }' "$BENCH_DIR/samples.tsv" >"$BENCH_DIR/cpu.md"
max_lag=$(sed -n 's/^MAXLAG //p' "$BENCH_DIR/cpu.md")
sed -i '/^MAXLAG /d' "$BENCH_DIR/cpu.md"
cat "$BENCH_DIR/cpu.md" >&2

if [[ -n "$PLOT" ]] && command -v gnuplot >/dev/null; then
    # decisions/s over 5-second steps (the counters move per batch of up to 2000)
    awk -F'\t' 'NR > 1 { t[NR] = $1; d[NR] = $3; l[NR] = $4; n = NR }
        END { for (i = 7; i <= n; i++) printf "%.1f\t%.1f\t%d\n", t[i], (d[i] - d[i-5]) / (t[i] - t[i-5]), l[i] }' \
        "$BENCH_DIR/samples.tsv" >"$BENCH_DIR/plot.tsv"
    gnuplot <<EOF
set terminal pngcairo size 1100,640 font ",10"
set output "$PLOT"
set multiplot layout 2,1 title "FraudShield end to end: ingest + dev broker + 2 scorers + PostgreSQL, 2 vCPU (make bench-e2e)"
set grid
set xlabel "seconds since the first send"
set ylabel "decisions persisted / s"
set arrow from $A_END, graph 0 to $A_END, graph 1 nohead dt 2
set label "A: closed loop, whole dev set | B: ${RATE}/s | C: ${C_RATES[*]} /s" at graph 0.01, graph 0.93
plot "$BENCH_DIR/plot.tsv" using 1:2 with lines lw 1.5 title "throughput (5 s steps)"
unset label
set ylabel "consumer lag (messages)"
plot "$BENCH_DIR/plot.tsv" using 1:3 with lines lw 1.5 lc rgb "#c03030" title "raw\\\\_payments lag, both scorers"
unset multiplot
EOF
    log "plot: $PLOT"
fi

log "A sustained: $SUSTAINED payments/s (replay p50 $A_P50 ms, p99 $A_P99 ms with up to ${MAX_UNDECIDED:-20000} undecided)"
log "B at $RATE/s: sent $B_PPS/s, decided $B_DECIDED_PPS/s, p50 $B_P50 ms, p99 $B_P99 ms"
log "C: the highest rate kept up with: ${C_RATE}/s, p50 $C_P50 ms, p99 $C_P99 ms; load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "payments lost: $LOSS"
echo "bench-e2e-sustainable rate=$C_RATE p50_ms=$C_P50 p99_ms=$C_P99"
echo "bench-e2e sustained_pps=$SUSTAINED p99_ms_at_5k=$B_P99 max_lag=$max_lag"
