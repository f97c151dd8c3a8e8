#!/usr/bin/env bash
# scripts/eval.sh: the handbook's evaluation protocol through the real pipeline (`make eval`,
# `make eval-rolling`, `make eval-ablation`; docs/detection.md section 7, results in BENCHMARKS.md).
#
#   1. replay: a persistent PostgreSQL in $EVAL_DIR/pg, the dev broker, two scorers and ingest
#      (tests/lib.sh); fraudshield-replay posts DATA from its first day through the last TEST day,
#      with each fraud label posted DELAY days (event time) after its payment, as fast as the
#      pipeline decides (--max-undecided keeps the broker's backlog bounded); then waits until every
#      accepted payment is in PostgreSQL with its decision and every label is stored, and checks
#      that nothing was lost. REUSE=1 skips this step and uses the database of an earlier replay
#      (its parameters are in $EVAL_DIR/replay.env), so re-training / re-evaluating is cheap.
#   2. MODE=protocol (default): fraudshield-train on TRAIN with the labels known when TEST starts,
#      fraudshield-eval --rules-file RULES_FILE on TEST: the rules only (the stored points: the
#      replay's scorers had no model), the model, the blend the scorer with the model scores (the
#      rules file's model_covered rules add 0), the handbook rows. Last line:
#      `eval auc=… ap=… cp100=…`: the blend of the scorer with the model, ranked by score, then by
#      the model's probability (a review queue's order).
#      MODE=rolling: for every test week T of the replayed days whose two training weeks have full
#      feature history (30-day windows + DELAY): train on [T-21, T-8], test on [T, T+6]; a table per
#      fold and the mean / standard deviation. Last line: `eval-rolling folds=… auc=… ap=… cp100=…`
#      (means of the blend).
#      MODE=ablation: the protocol once per feature set (handbook only, + vault, + ...).
#
# Env: DATA (default ../shared/datasets/handbook/dev.csv.gz; absent: skipped), TRAIN
# (2018-07-25:2018-07-31), TEST (2018-08-08:2018-08-14), DELAY (7), REUSE (0; 1: use the replayed
# database; auto: reuse it when it covers TEST, else replay), MODE, EVAL_DIR (.eval), BUILD
# (build/release), RULES_FILE (the rules of the evaluated blend: its model_covered rules and
# blend.model_weight; default schemas/rules/default.json, the replay's scorers' rules), MODEL_WEIGHT
# (blend weight; default: the rules file's), TRAIN_ARGS (extra fraudshield-train options),
# MAX_UNDECIDED (20000), PARTITIONS (12), SCORER_ARGS (extra scorer options for the replay).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DATA=${DATA:-../shared/datasets/handbook/dev.csv.gz}
TRAIN=${TRAIN:-2018-07-25:2018-07-31}
TEST=${TEST:-2018-08-08:2018-08-14}
DELAY=${DELAY:-7}
REUSE=${REUSE:-0}
MODE=${MODE:-protocol}
EVAL_DIR=${EVAL_DIR:-$REPO/.eval}
MODEL_WEIGHT=${MODEL_WEIGHT:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
# The replay's scorers decide without a model (it is trained afterwards), so the stored reasons
# count every rule's weight. With the model, the scorer adds 0 points for the rules the rules file
# marks model_covered (their signal is a model input): fraudshield-eval reads them from this file
# and leaves their stored points out of the blend (not out of the rules-only score).
RULES_FILE=${RULES_FILE:-$REPO/schemas/rules/default.json}
WARMUP_DAYS=30 # the longest feature window; DELAY days more for the delayed terminal windows

if [[ ! -f "$DATA" ]]; then
    echo "eval: $DATA not found (the handbook data set, see docs/detection.md): skipped"
    exit 0
fi
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
case $EVAL_DIR in /*) ;; *) EVAL_DIR="$REPO/$EVAL_DIR" ;; esac
source "$REPO/tests/lib.sh"

say() { echo "[eval] $*" >&2; }
day() { date -u -d "$1" +%F; }                       # normalizes YYYY-MM-DD [+/- N days]
period_ok() { [[ $1 =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}:[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]]; }
period_ok "$TRAIN" && period_ok "$TEST" || { echo "eval: TRAIN and TEST are FROM:TO days" >&2; exit 2; }
[[ $DELAY =~ ^[0-9]+$ ]] || { echo "eval: DELAY is a number of days" >&2; exit 2; }
TEST_FROM=${TEST%%:*} TEST_TO=${TEST##*:}
# the first day of the file: its first data row (the CSV is in event-time order)
FIRST=$(gzip -cdf "$DATA" | sed -n 2p | cut -d, -f2 | cut -c1-10)
[[ $FIRST =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || { echo "eval: $DATA: no TX_DATETIME in its first row" >&2; exit 2; }

mkdir -p "$EVAL_DIR"
exec 8>"$EVAL_DIR/lock"
flock -n 8 || { echo "eval: another eval runs on $EVAL_DIR" >&2; exit 1; }
fs_setup eval "$EVAL_DIR"

# ---- 1. the replay ----------------------------------------------------------------------------------

# The replayed database covers DATA from its first day through TEST's last with the same delay.
replayed_covers() {
    [[ -f "$EVAL_DIR/replay.env" && -f "$EVAL_DIR/pg/PG_VERSION" ]] || return 1
    local R_DATA R_FROM R_TO R_DELAY
    # shellcheck disable=SC1091
    source <(grep -E '^R_(DATA|FROM|TO|DELAY)=' "$EVAL_DIR/replay.env")
    [[ "$R_DATA" == "$DATA" && "$R_DELAY" == "$DELAY" && ! "$R_TO" < "$TEST_TO" ]]
}

scorer_metric_sum() { # NAME: the sum of a counter over the scorers' /metrics
    local p sum=0 v
    for p in "${FS_SCORER_ADMIN_PORTS[@]}"; do
        v=$(curl -sf "http://127.0.0.1:$p/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }')
        sum=$(awk -v a="$sum" -v b="${v:-0}" 'BEGIN { print a + b }')
    done
    echo "$sum"
}

# Waits until PostgreSQL holds want rows in table (no progress for 300 s: failure).
wait_rows() {
    local table=$1 want=$2 n last=-1 since=$SECONDS
    while n=$(fs_psql "SELECT count(*) FROM $table") && ((n < want)); do
        ((n != last)) && { last=$n; since=$SECONDS; }
        ((SECONDS - since < 300)) || fs_fail "$table: $n of $want rows, no progress for 300 s"
        for name in scorer-1 scorer-2; do fs_alive "$name" || fs_fail "$name died (see $EVAL_DIR/$name.log)"; done
        sleep 2
    done
    say "$table: $n rows"
}

replay() {
    say "replaying $DATA $FIRST..$TEST_TO (delay $DELAY days) through ingest, two scorers, PostgreSQL in $EVAL_DIR"
    if [[ -f "$EVAL_DIR/pg/PG_VERSION" ]] && fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$EVAL_DIR/pg" status >/dev/null 2>&1; then
        fs__pg_as "$FS_PG_BIN/pg_ctl" -D "$EVAL_DIR/pg" -m fast -w stop >/dev/null # left by a killed run
    fi
    rm -rf "$EVAL_DIR/pg" "$EVAL_DIR/replay.env" "$EVAL_DIR"/*.log
    fs_pg_start "$EVAL_DIR/pg"
    # Scorers: the default rules and feature windows; batches of 2000 (as bench-scorer); a lateness of
    # 3 days: the two workers' partitions advance at different speeds and neither may prune what the
    # other still needs. Statistics every second: the lag in /metrics.
    FS_SCORER_ARGS="--batch-max=2000 --batch-max-ms=100 --velocity-lateness-s=259200 --stats-interval-ms=1000 ${SCORER_ARGS:-}" \
        fs_pipeline_start 2 "${PARTITIONS:-12}"
    local t0=$SECONDS out
    # --outcomes fraud: the frauds are the labels that change features (terminal fraud ratio, the
    # vault); a genuine label changes nothing, and posting them would double the requests. Training
    # and evaluation count payments without a label as genuine (--unlabelled legit).
    "$BUILD/bin/fraudshield-replay" --input "$DATA" --period "$FIRST:$TEST_TO" --delay-days "$DELAY" \
        --outcomes fraud --url "$FS_INGEST_URL" --api-key-file "$FS_API_KEY_FILE" \
        --brokers "$FS_BROKERS" --max-undecided "${MAX_UNDECIDED:-20000}" --drain-timeout-s 600 \
        --log-level warn 2>>"$EVAL_DIR/replay.log" | tee "$EVAL_DIR/replay.out" >&2 ||
        fs_fail "the replay failed (see $EVAL_DIR/replay.out, replay.log)"
    out=$(tail -1 "$EVAL_DIR/replay.out")
    local accepted labels
    accepted=$(sed -n 's/.* accepted=\([0-9]*\) .*/\1/p' <<<"$out")
    labels=$(sed -n 's/.* labels=\([0-9]*\) .*/\1/p' <<<"$out")
    wait_rows payments "$accepted"
    wait_rows decisions "$accepted"
    wait_rows outcomes "$labels"
    local lost
    lost=$(scorer_metric_sum fs_scorer_messages_lost_total)
    local np nd
    np=$(fs_psql "SELECT count(*) FROM payments")
    nd=$(fs_psql "SELECT count(*) FROM decisions")
    [[ "$np" == "$accepted" && "$nd" == "$accepted" && "$lost" == 0 ]] ||
        fs_fail "lost payments: accepted $accepted, payments $np, decisions $nd, lost by the broker $lost"
    fs_pipeline_stop
    cat >"$EVAL_DIR/replay.env" <<EOF
R_DATA=$DATA
R_FROM=$FIRST
R_TO=$TEST_TO
R_DELAY=$DELAY
R_ACCEPTED=$accepted
R_LABELS=$labels
R_SECONDS=$((SECONDS - t0))
R_DONE=$(date -u +%FT%TZ)
EOF
    say "replayed: $accepted payments, $labels labels in $((SECONDS - t0)) s; nothing lost"
}

if [[ $REUSE == 1 ]] || { [[ $REUSE == auto ]] && replayed_covers; }; then
    replayed_covers || fs_fail "REUSE=1: no replayed database in $EVAL_DIR covering $DATA through $TEST_TO with DELAY=$DELAY (see $EVAL_DIR/replay.env); run without REUSE"
    say "reusing the replayed database in $EVAL_DIR/pg ($(grep -E '^R_(FROM|TO|ACCEPTED)=' "$EVAL_DIR/replay.env" | tr '\n' ' '))"
    fs_pg_start "$EVAL_DIR/pg"
else
    replay
fi

# ---- 2. train + evaluate --------------------------------------------------------------------------

# train_eval TRAIN TEST NAME [train options...]: the model of TRAIN (labels known when TEST
# starts), evaluated on TEST; eval's output in $EVAL_DIR/NAME.eval.
train_eval() {
    local train=$1 test=$2 name=$3
    shift 3
    # shellcheck disable=SC2086 # TRAIN_ARGS: options, split on spaces
    "$BUILD/bin/fraudshield-train" --period "$train" --labels-known-by "${test%%:*}" \
        --unlabelled legit --holdout-pct 0 --output "$EVAL_DIR/$name.model.json" \
        --log-level warn "$@" $TRAIN_ARGS >"$EVAL_DIR/$name.train" ||
        fs_fail "training failed (see $EVAL_DIR/$name.train)"
    "$BUILD/bin/fraudshield-eval" --train "$train" --test "$test" --delay-days "$DELAY" \
        --model "$EVAL_DIR/$name.model.json" --rules-file "$RULES_FILE" \
        ${MODEL_WEIGHT:+--model-weight "$MODEL_WEIGHT"} --unlabelled legit --log-level warn \
        >"$EVAL_DIR/$name.eval" || fs_fail "evaluation failed (see $EVAL_DIR/$name.eval)"
}

# row NAME FILE: "auc ap cp" of a table row of fraudshield-eval's output
row() { awk -F'|' -v n="$1" '$2 ~ n { gsub(/ /, ""); print $3, $4, $5; exit }' "$2"; }

protocol() {
    train_eval "$TRAIN" "$TEST" protocol
    tail -1 "$EVAL_DIR/protocol.train" >&2
    cat "$EVAL_DIR/protocol.eval"
}

rolling() {
    local last first_train t0 k=0 out="$EVAL_DIR/rolling.tsv"
    last=$(fs_psql "SELECT (max(event_time) AT TIME ZONE 'UTC')::date FROM payments")
    first_train=$(day "$FIRST + $((WARMUP_DAYS + DELAY)) days")
    # test weeks aligned on TEST's first day, the latest one ending by the last replayed day
    t0=$TEST_FROM
    while [[ ! $(day "$t0 + 13 days") > "$last" ]]; do t0=$(day "$t0 + 7 days"); done
    while [[ $(day "$t0 + 6 days") > "$last" ]]; do t0=$(day "$t0 - 7 days"); done
    : >"$out"
    while [[ ! $(day "$t0 - 21 days") < "$first_train" ]]; do
        local train test
        train="$(day "$t0 - 21 days"):$(day "$t0 - 8 days")"
        test="$t0:$(day "$t0 + 6 days")"
        say "fold: train $train, test $test"
        train_eval "$train" "$test" "fold-$t0"
        local f="$EVAL_DIR/fold-$t0.eval"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$train" "$test" "$(row 'rules only' "$f")" \
            "$(row 'FraudShield model' "$f")" "$(row 'FraudShield blend \\(' "$f")" \
            "$(row 'ties by model' "$f")" \
            "$(sed -n 's/^test [^:]*:[^:]*: \([0-9]*\) transactions, \([0-9]*\) frauds.*/\1 \2/p' "$f")" >>"$out"
        t0=$(day "$t0 - 7 days")
        k=$((k + 1))
    done
    ((k > 0)) || fs_fail "no fold: the replayed days ($FIRST..$last) are too few"
    sort -o "$out" "$out"
    awk -F'\t' '
        function cell(s, i,   a) { split(s, a, " "); return a[i] }
        function add(c, i,   v) { v = cell($c, i); printf " | %s", v; s[c, i] += v; q[c, i] += v * v }
        function stat(c, i, sd,   m, v) {
            m = s[c, i] / n; v = n > 1 ? (q[c, i] - n * m * m) / (n - 1) : 0
            printf " | %.3f", sd ? sqrt(v > 0 ? v : 0) : m
        }
        BEGIN {
            print "| train | test | test rows | frauds | rules AUC | model AUC | model AP | model CP@100 | blend AUC | blend AP | blend CP@100 | ties AUC | ties AP | ties CP@100 |"
            print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        }
        {
            printf "| %s | %s | %s | %s", $1, $2, cell($7, 1), cell($7, 2)
            add(3, 1); for (c = 4; c <= 6; c++) for (i = 1; i <= 3; i++) add(c, i)
            printf " |\n"; n++
        }
        END {
            for (sd = 0; sd <= 1; sd++) {
                printf "| **%s** (%d folds) | | |", sd ? "sd" : "mean", n
                stat(3, 1, sd); for (c = 4; c <= 6; c++) for (i = 1; i <= 3; i++) stat(c, i, sd)
                printf " |\n"
            }
            printf "\nrules: the stored points (the replay had no model); blend: the scorer with the model (model_covered rules add 0) by the integer score; ties: the same blend, equal scores by the model (the last line, as in protocol mode)\n"
            c = 6
            printf "eval-rolling folds=%d auc=%.4f ap=%.4f cp100=%.4f\n", n, s[c, 1] / n, s[c, 2] / n, s[c, 3] / n
        }' "$out"
}

# What each group of stored features is worth: the protocol with the handbook's features, then
# each group added on top of the previous set (fraudshield-train --features), then every feature.
HANDBOOK_FEATURES=amount_minor,weekend,night,user_count_86400s,user_count_604800s,user_count_2592000s
HANDBOOK_FEATURES+=,user_avg_minor_86400s,user_avg_minor_604800s,user_avg_minor_2592000s
HANDBOOK_FEATURES+=,merchant_count_86400s_delay_604800s,merchant_count_604800s_delay_604800s
HANDBOOK_FEATURES+=,merchant_count_2592000s_delay_604800s,merchant_risk_1d_delay_7d
HANDBOOK_FEATURES+=,merchant_risk_7d_delay_7d,merchant_risk_30d_delay_7d
ablation() {
    local set=$HANDBOOK_FEATURES name label i
    local -a steps=(
        "handbook features only (15)|"
        "+ terminal fraud counts (merchant_frauds_*)|merchant_frauds_1d_delay_7d,merchant_frauds_7d_delay_7d,merchant_frauds_30d_delay_7d"
        "+ amount ratio to the customer's average (user_amount_ratio_*)|user_amount_ratio_86400s,user_amount_ratio_604800s,user_amount_ratio_2592000s"
        "+ card vault (vault_card_*: seen, age, known frauds)|vault_card_seen,vault_card_age_s,vault_card_fraud,vault_card_chargebacks"
        "+ short velocity windows (user 5 min, card 30 min, ip 10 min)|user_count_300s,user_avg_minor_300s,user_amount_ratio_300s,card_count_1800s,card_avg_minor_1800s,card_distinct_users_1800s,ip_count_600s,ip_avg_minor_600s,ip_distinct_users_600s"
        "every stored feature (auto: + sums, distinct counts)|auto"
    )
    echo "| features (cumulative) | n | model AUC | model AP | model CP@100 | blend AUC | blend AP | blend CP@100 |"
    echo "|---|---|---|---|---|---|---|---|"
    for ((i = 0; i < ${#steps[@]}; i++)); do
        label=${steps[$i]%%|*}
        if [[ ${steps[$i]#*|} == auto ]]; then set=auto
        elif [[ -n ${steps[$i]#*|} ]]; then set+=,${steps[$i]#*|}; fi
        name="ablation-$i"
        say "ablation: $label"
        train_eval "$TRAIN" "$TEST" "$name" --features "$set"
        printf '| %s | %s | %s | %s |\n' "$label" \
            "$(sed -n 's/.* features=\([0-9]*\) .*/\1/p' "$EVAL_DIR/$name.train")" \
            "$(row 'FraudShield model' "$EVAL_DIR/$name.eval" | tr ' ' '|' | sed 's/|/ | /g')" \
            "$(row 'blend' "$EVAL_DIR/$name.eval" | tr ' ' '|' | sed 's/|/ | /g')"
    done
}

case $MODE in
protocol) protocol ;;
rolling) rolling ;;
ablation) ablation ;;
*) fs_fail "MODE: protocol, rolling or ablation" ;;
esac
