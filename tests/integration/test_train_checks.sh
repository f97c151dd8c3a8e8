#!/usr/bin/env bash
# fraudshield-train refuses what can only give a useless or mislabelled model (no services: rows
# from files): labelled rows of one class (all fraud: the same p for every payment, every payment
# blocked), one class in the training part or in the holdout, --features names that fill no
# column, --features auto with no column that has a value in some row (the empty ones are left
# out), a --features list naming a column with no value in any row (unless
# --allow-empty-features: then a warning), and --labels-known-by with --input (the file's labels
# are the export's). A model it does write carries XGBoost's feature names equal to fs_features
# (what the scorer's loader compares) and fs_labels_known_by "file" when trained from a file.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup train_checks
train="$BUILD/bin/fraudshield-train"
model="$FS_TEST_DIR/m.json"

# rows FILE N LABEL_EXPR: N rows one second apart; LABEL_EXPR (awk, of i) prints the label
# (1, 0 or \N); fraud rows have large amounts.
rows() {
    awk -v n="$2" 'BEGIN { for (i = 0; i < n; i++) { l = '"$3"'; a = l == "1" ? 20000 + i : 100 + i
        printf "{\"amount_minor\":%d,\"currency\":\"EUR\",\"night\":%d,\"user_count_300s\":%d,", a, i % 2, 1 + i % 3
        printf "\"user_sum_minor_300s\":%d}\t%s\t%d\tu%d\n", a * (1 + i % 3), l, 1532476800000 + i * 1000, i % 7 } }' \
        >"$1"
}
# fails TEST_NAME WANT ARGS...: training must fail, log WANT, and write no model
fails() {
    local name=$1 want=$2 out msg st=0
    shift 2
    rm -f "$model"
    out=$("$train" --output "$model" --rounds 3 --parallel-trees 1 --threads 1 --log-level error "$@" 2>&1) ||
        st=$?
    ((st != 0)) || fs_fail "$name: exit 0"
    msg=$(grep '"event":"train_failed"' <<<"$out" | jq -r .msg) # the message, unescaped
    grep -qF -- "$want" <<<"$msg" || fs_fail "$name: $out"
    [[ ! -e "$model" ]] || fs_fail "$name: a model was written"
    echo "ok: $name -> exit $st"
}
ok() {
    "$train" --output "$model" --rounds 3 --parallel-trees 1 --threads 1 --log-level error "$@" >/dev/null ||
        fs_fail "training failed: $*"
}

# 1. one class: all fraud (a replay that posted only fraud outcomes, the rest unlabelled), all legit
rows "$FS_TEST_DIR/fraud_only.tsv" 60 'i % 3 == 0 ? "1" : "\\N"'
fails "only fraud labelled, unlabelled skipped" \
    'the 20 labelled rows have 20 fraud and 0 legitimate (40 unlabelled skipped); the unlabelled rows were skipped (--unlabelled skip): a replay that posted only fraud outcomes' \
    --input "$FS_TEST_DIR/fraud_only.tsv"
grep -q 'train with --unlabelled legit' <<<"$("$train" --input "$FS_TEST_DIR/fraud_only.tsv" \
    --output "$model" --log-level error 2>&1)" || fs_fail "the hint names --unlabelled legit"
rows "$FS_TEST_DIR/all1.tsv" 30 '"1"'
fails "every row fraud" '30 fraud and 0 legitimate (0 unlabelled skipped); record legitimate outcomes' \
    --input "$FS_TEST_DIR/all1.tsv"
rows "$FS_TEST_DIR/all0.tsv" 30 '"0"'
fails "every row legitimate" '0 fraud and 30 legitimate (0 unlabelled skipped); no fraud is known' \
    --input "$FS_TEST_DIR/all0.tsv"
# the same rows with the unlabelled counted as genuine: both classes, a model
ok --input "$FS_TEST_DIR/fraud_only.tsv" --unlabelled legit
echo "ok: --unlabelled legit trains"

# 2. both classes overall, one in a part: frauds only in the latest 20 % (the holdout), or none there
rows "$FS_TEST_DIR/late.tsv" 50 'i >= 45 ? "1" : "0"'
fails "no fraud in the training part" 'the training rows (the first 40 of 50 in event time, before the --holdout-pct 20 holdout) have 0 fraud and 40 legitimate' \
    --input "$FS_TEST_DIR/late.tsv"
rows "$FS_TEST_DIR/early.tsv" 50 'i < 40 && i % 4 == 0 ? "1" : "0"'
fails "no fraud in the holdout" 'the holdout rows (the latest 10 of 50 in event time, --holdout-pct 20) have 0 fraud and 10 legitimate' \
    --input "$FS_TEST_DIR/early.tsv"
ok --input "$FS_TEST_DIR/early.tsv" --holdout-pct 0
echo "ok: --holdout-pct 0 trains"

# 3. --features: a name that fills no column, twice, model_score
rows "$FS_TEST_DIR/mixed.tsv" 50 'i % 4 == 0 ? "1" : "0"'
fails "a typo" "\"user_count_300\" is in none of the 50 rows' features: a typo?" \
    --input "$FS_TEST_DIR/mixed.tsv" --features amount_minor,user_count_300
fails "a string feature" '"currency" is never a number' \
    --input "$FS_TEST_DIR/mixed.tsv" --features amount_minor,currency
fails "a name twice" '"night" is named twice (columns 1 and 3)' \
    --input "$FS_TEST_DIR/mixed.tsv" --features night,amount_minor,night
fails "model_score" "model_score is the scorer's model output" \
    --input "$FS_TEST_DIR/mixed.tsv" --features amount_minor,model_score

# 3b. --features auto leaves out a column with no value in any row: ip_avg_minor_600s when every
# ip_count_600s is 0 (a replay without IP addresses); the output names it. Nothing left: refused.
awk 'BEGIN { for (i = 0; i < 50; i++) { l = i % 4 == 0 ? "1" : "0"
    printf "{\"amount_minor\":%d,\"ip_count_600s\":0,\"ip_sum_minor_600s\":0}\t%s\t%d\tu%d\n", 100 + i * (l == "1" ? 200 : 1), l, 1532476800000 + i * 1000, i % 7 } }' \
    >"$FS_TEST_DIR/noip.tsv"
rm -f "$model"
out=$("$train" --output "$model" --rounds 3 --parallel-trees 1 --threads 1 --log-level error \
    --input "$FS_TEST_DIR/noip.tsv") || fs_fail "auto with an empty column: $out"
fs_assert_eq 'amount_minor,ip_count_600s,ip_sum_minor_600s' \
    "$(jq -r '.learner.attributes.fs_features' "$model")" "auto features without the empty column"
grep -qx 'features left out (no value in any of the 50 rows): ip_avg_minor_600s' <<<"$out" ||
    fs_fail "the output names the column left out: $out"
echo "ok: auto leaves out ip_avg_minor_600s"
fails "auto, every column empty" \
    'no feature column has a value in any of the 50 rows (left out: ip_avg_minor_600s)' \
    --input "$FS_TEST_DIR/noip.tsv" --exclude amount,ip_count,ip_sum

# 3c. a list given by hand with that column: refused, naming it and the rows checked, unless
# --allow-empty-features (one list for several periods): then kept, with a warning naming it.
fails "a listed column with no value" \
    'features: no value in any of the 50 rows: ip_avg_minor_600s (' \
    --input "$FS_TEST_DIR/noip.tsv" --features amount_minor,ip_avg_minor_600s
rm -f "$model"
out=$("$train" --output "$model" --rounds 3 --parallel-trees 1 --threads 1 --log-level warn \
    --input "$FS_TEST_DIR/noip.tsv" --features amount_minor,ip_avg_minor_600s \
    --allow-empty-features 2>&1 >/dev/null) || fs_fail "allowed empty column: $out"
fs_assert_eq 'amount_minor,ip_avg_minor_600s' \
    "$(jq -r '.learner.attributes.fs_features' "$model")" "the list, empty column kept"
fs_assert_eq 'kept with --allow-empty-features, though no value in any of the 50 rows (the trees cannot split on them): ip_avg_minor_600s' \
    "$(jq -r 'select(.event == "features_empty" and .level == "warn") | .msg' <<<"$out")" \
    "the warning names the empty column"
echo "ok: --allow-empty-features keeps it, with a warning"
fails "allowed empty column, and a typo" "\"ip_count_60s\" is in none of the 50 rows' features" \
    --input "$FS_TEST_DIR/noip.tsv" --features ip_avg_minor_600s,ip_count_60s --allow-empty-features

# 4. --labels-known-by with --input: refused (the file's labels are the export's)
fails "labels-known-by with input" 'labels-known-by applies to the database query, not to --input' \
    --input "$FS_TEST_DIR/mixed.tsv" --labels-known-by 2018-08-01

# 5. what a model trained from a file records: XGBoost's names = fs_features, labels "file"
ok --input "$FS_TEST_DIR/mixed.tsv" --features user_avg_minor_300s,amount_minor,night
fs_assert_eq 'user_avg_minor_300s,amount_minor,night' \
    "$(jq -r '.learner.feature_names | join(",")' "$model")" "XGBoost's feature names"
fs_assert_eq 'user_avg_minor_300s,amount_minor,night' \
    "$(jq -r '.learner.attributes.fs_features' "$model")" "fs_features"
fs_assert_eq file "$(jq -r '.learner.attributes.fs_labels_known_by' "$model")" "fs_labels_known_by"
echo "ok"
