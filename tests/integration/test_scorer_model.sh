#!/usr/bin/env bash
# The model in the live scorer: a configured but missing or invalid model file stops the start-up
# with an error naming it; a loaded model scores every payment once per batch, its probability is
# blended into the score (blend.model_weight of the default rules) and stored with the evidence,
# and its version is recorded with every decision and on processed_payments; SIGHUP loads a new
# model file (later decisions carry its version), and a corrupt one is rejected: the active model
# stays and the failure is counted. A model whose header names its columns otherwise than its
# trees (fs_features against XGBoost's feature names) does not load either. Rules and model
# stay independent: the windows the model reads are computed whatever the rules enable
# (RAPID_USER disabled by a reload: its user_count_300s still reaches the model), rules that do
# not fit the model with them (too many windows) are refused as reload_failed, and the offline
# check with --model-file refuses them too.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_model
scorer="$BUILD/bin/fraudshield-scorer"
model="$FS_TEST_DIR/model.json"
rules="$FS_TEST_DIR/rules.json"
cp "$REPO/schemas/rules/default.json" "$rules"
weight=$(sed -n 's/.*"blend": *{"model_weight": *\([0-9]*\)}.*/\1/p' "$rules")
[[ -n "$weight" && "$weight" -gt 0 ]] || fs_fail "the default rules have no model blend"

# train VERSION SEED OUT: a small model from a synthetic export of the training query (psql text
# format: features, label): fraud = amounts above 120.00, 2 % of the labels flipped (the payments
# of gen_raw_payments.sh below are 1.00 .. 222.63). Prints the
# loaded version ("<VERSION>+<hash of the file>"). user_count_300s is RAPID_USER's window and
# merchant_count_60s a window no rule asks for: the scorer computes both for the model.
# user_count_5400s is a window no rule can have (not whole hours): the scorer warns that it is
# always missing, and counts it in fs_scorer_model_features_unbound.
# FEATURES (optional 4th argument) replaces the feature list.
train() {
    awk -v seed="$2" 'BEGIN { srand(seed); for (i = 0; i < 3000; i++) {
        a = 100 + int(rand() * 30000); c = 1 + int(rand() * 20); s = c * (100 + int(rand() * 30000))
        l = a > 12000 ? 1 : 0; if (rand() < 0.02) l = 1 - l
        printf "{\"amount_minor\":%d,\"user_count_86400s\":%d,\"user_sum_minor_86400s\":%d,", a, c, s
        printf "\"vault_card_seen\":%d,\"merchant_count_60s\":%d,", int(rand() * 3), int(rand() * 5)
        printf "\"user_count_300s\":%d,\"user_count_5400s\":%d,", int(rand() * 3), int(rand() * 4)
        printf "\"card_count_120s\":%d}\t%d\n", int(rand() * 2), l } }' \
        >"$FS_TEST_DIR/rows-$2.tsv"
    "$BUILD/bin/fraudshield-train" --input "$FS_TEST_DIR/rows-$2.tsv" --holdout-pct 0 --rounds 30 \
        --eta 0.3 --threads 1 \
        --features "${4:-amount_minor,user_count_86400s,user_avg_minor_86400s,vault_card_seen,merchant_count_60s,user_count_300s,user_count_5400s}" \
        --version "$1" --output "$3" --log-level warn | sed -n 's/.* version=\([^ ]*\)$/\1/p'
}

# 1. start-up: a configured model file that is missing, or not a model, is an error naming it
st=0
out=$(FS_RULES_FILE="$rules" timeout 30 "$scorer" --model-file "$FS_TEST_DIR/absent.json" 2>&1) || st=$?
((st != 0)) || fs_fail "a missing model file must stop the scorer"
grep '"event":"startup_failed"' <<<"$out" | grep -qF "model-file: $FS_TEST_DIR/absent.json: No such file or directory" ||
    fs_fail "missing model: $out"
echo "ok: missing model file -> exit $st, error names the file"
st=0
out=$(FS_RULES_FILE="$rules" timeout 30 "$scorer" --model-file "$rules" 2>&1) || st=$?
((st != 0)) || fs_fail "an invalid model file must stop the scorer"
grep '"event":"startup_failed"' <<<"$out" | grep -qF "model-file: $rules: not an XGBoost model" ||
    fs_fail "invalid model: $out"
echo "ok: invalid model file -> exit $st, error names the file"
# a header whose fs_features are not XGBoost's own feature names (reordered: the scorer would feed
# amount_minor into the column the trees learnt as another feature) stops the start-up, naming the
# first column that differs
train test-order 3 "$FS_TEST_DIR/ordered.json" >/dev/null
# (sed, not jq: jq writes 0.0 as 0, which XGBoost does not read as a number)
sed 's/"fs_features":"amount_minor,user_count_86400s,/"fs_features":"user_count_86400s,amount_minor,/' \
    "$FS_TEST_DIR/ordered.json" >"$FS_TEST_DIR/reordered.json"
! cmp -s "$FS_TEST_DIR/ordered.json" "$FS_TEST_DIR/reordered.json" || fs_fail "fs_features not rewritten"
st=0
out=$(FS_RULES_FILE="$rules" timeout 30 "$scorer" --model-file "$FS_TEST_DIR/reordered.json" 2>&1) || st=$?
((st != 0)) || fs_fail "a model whose fs_features differ from its feature names must stop the scorer"
grep '"event":"startup_failed"' <<<"$out" | jq -r .msg | grep -qF "$FS_TEST_DIR/reordered.json: fs_features does not match XGBoost's feature_names: column 1 is \"user_count_86400s\" in fs_features, \"amount_minor\" in feature_names" ||
    fs_fail "reordered fs_features: $out"
echo "ok: fs_features reordered against XGBoost's feature names -> exit $st, first mismatch named"

fs_pg_start
fs_broker_start 6
va=$(train test-a 1 "$model")
[[ $va == test-a+* ]] || fs_fail "training model a: $va"
admin=$(fs_free_port)
# nine more feature windows: 47 with the 32 of a full rules file (step 6), 49 with the model's two
windows="user:1d,7d,30d ip:2h,3h,4h,5h,6h,7h,8h,9h,10h"
fs_bg scorer env FS_SCORER_ID=scorer-model FS_RULES_FILE="$rules" FS_MODEL_FILE="$model" \
    FS_ADMIN_PORT="$admin" FS_FEATURE_WINDOWS="$windows" "$scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer.log"
grep '"event":"model_loaded"' "$FS_TEST_DIR/scorer.log" | grep -qF "\"version\":\"$va\"" ||
    fs_fail "model_loaded with $va"
grep '"event":"model_features_missing"' "$FS_TEST_DIR/scorer.log" | grep -F '"count":1,' |
    grep -q '"features":"user_count_5400s"' ||
    fs_fail "the warning names the one feature the scorer cannot compute (and only it)"
unbound() { curl -s "http://127.0.0.1:$admin/metrics" | sed -n 's/^fs_scorer_model_features_unbound \([0-9]*\)$/\1/p'; }
fs_assert_eq 1 "$(unbound)" "fs_scorer_model_features_unbound"

decisions() { fs_psql 'SELECT count(*) FROM decisions'; }
produce() { # RUN N
    bash "$REPO/tests/integration/gen_raw_payments.sh" "$1" "$2" 50 | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
}
version_count() { fs_psql "SELECT count(*) FROM decisions WHERE model_version IS NOT DISTINCT FROM $1"; }

# 2. every decision scored by model a, the blend exact, the version on the decision and the topic
produce 101 600
fs_wait_for 90 '(( $(decisions) >= 600 ))'
fs_assert_eq 600 "$(version_count "'$va'")" "decisions with model_version $va"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions WHERE NOT features::jsonb ? 'model_score'")" \
    "decisions without model_score in their evidence"
# score = min(100, round(p x weight) + the weights of the rules that hit), as rules.h says
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions d WHERE d.score <> least(100,
    floor((d.features->>'model_score')::float8 * $weight + 0.5)::int
    + coalesce((SELECT sum((x->>'weight')::int) FROM jsonb_array_elements(d.reasons) x), 0))")" \
    "decisions whose score is not the blend"
fs_assert_eq t "$(fs_psql "SELECT bool_and(d.score >= round((d.features->>'model_score')::float8 * $weight))
    FROM decisions d")" "score >= round(model_score x weight)"
# the model learnt amounts > 120.00: it must tell them apart in the live scorer too
fs_assert_eq t "$(fs_psql "SELECT avg((d.features->>'model_score')::float8) FILTER (WHERE p.amount_minor > 14000)
    > 0.8 AND avg((d.features->>'model_score')::float8) FILTER (WHERE p.amount_minor < 10000) < 0.2
    FROM decisions d JOIN payments p USING (payment_id)")" "the live model separates large amounts"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions WHERE NOT features::jsonb ?& array['user_count_300s',
    'merchant_count_60s']")" "decisions without the model's windows user_count_300s and merchant_count_60s"
fs_wait_for 30 "(( \$(fs_topic_dump processed_payments | grep -cF '\"model_version\":\"$va\"') >= 600 ))"
echo "ok: processed_payments carry model_version $va"
metrics=$(curl -s "http://127.0.0.1:$admin/metrics")
grep -qF "fs_scorer_model_info{version=\"$va\"} 1" <<<"$metrics" || fs_fail "model info metric"
predictions=$(sed -n 's/^fs_scorer_model_seconds_count \([0-9]*\)$/\1/p' <<<"$metrics")
batches=$(sed -n 's/^fs_scorer_batch_size_count \([0-9]*\)$/\1/p' <<<"$metrics")
((predictions >= 1 && predictions <= batches && predictions < 600)) ||
    fs_fail "one prediction per batch: $predictions predictions, $batches batches, 600 payments"
echo "ok: $predictions predictions for $batches batches of 600 payments"

# 3. Rules and model independent: a reload disabling RAPID_USER takes no input from the model. Its
# window user_count_300s is still computed (the model reads it), RAPID_USER no longer hits.
v1=$(sed -n 's/.*"rules \([^ ]*\) from.*/\1/p' "$FS_TEST_DIR/scorer.log" | head -1)
fs_assert_eq t "$(fs_psql "SELECT count(*) > 0 FROM decisions WHERE reasons @> '[{\"code\":\"RAPID_USER\"}]'")" \
    "RAPID_USER hits before it is disabled"
sed -e 's/"version": "[^"]*"/"version": "rapid-off"/' \
    -e 's/"code": "RAPID_USER",/"code": "RAPID_USER", "enabled": false,/' "$rules" >"$rules.tmp"
grep -qF '"code": "RAPID_USER", "enabled": false,' "$rules.tmp" || fs_fail "RAPID_USER not disabled"
mv "$rules.tmp" "$rules"
fs_kill scorer HUP
fs_wait_for 30 grep -q '"event":"rules_reloaded"' "$FS_TEST_DIR/scorer.log"
v2=$(sed -n 's/.*"event":"rules_reloaded".*"version":"\([^"]*\)".*/\1/p' "$FS_TEST_DIR/scorer.log")
[[ $v2 == rapid-off+* ]] || fs_fail "reloaded rules version: $v2"
produce 104 300
fs_wait_for 90 '(( $(decisions) >= 900 ))'
fs_assert_eq 300 "$(fs_psql "SELECT count(*) FROM decisions WHERE rules_version = '$v2'")" "decisions with $v2"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions WHERE rules_version = '$v2'
    AND NOT features::jsonb ? 'user_count_300s'")" "decisions after the reload without user_count_300s"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions WHERE rules_version = '$v2'
    AND reasons @> '[{\"code\":\"RAPID_USER\"}]'")" "RAPID_USER hits after it was disabled"
fs_assert_eq t "$(fs_psql "SELECT count(*) > 0 FROM decisions WHERE rules_version = '$v2'
    AND (features->>'user_count_300s')::int >= 4")" "payments RAPID_USER would have flagged"
fs_assert_eq 1 "$(unbound)" "fs_scorer_model_features_unbound after the rules reload"
! grep '"event":"reload_failed"' "$FS_TEST_DIR/scorer.log" || fs_fail "a reload was refused"
echo "ok: RAPID_USER disabled ($v1 -> $v2), the model's user_count_300s still computed"

# 4. SIGHUP with a new model file (renamed over the configured path, as fraudshield-train does).
# Model b reads card_count_120s instead of merchant_count_60s (no rule reads either), and comes
# while the rules file is broken (the active rules stay): its decisions no longer carry
# merchant_count_60s (the reload fits the rules as loaded to the new model, not the set fitted to
# the old one, whose windows would pile up model after model).
vb=$(train test-b 2 "$FS_TEST_DIR/model-b.json" amount_minor,user_count_86400s,user_avg_minor_86400s,vault_card_seen,user_count_300s,card_count_120s)
[[ $vb == test-b+* && $vb != "$va" ]] || fs_fail "training model b: $vb"
cp "$FS_TEST_DIR/model-b.json" "$model.tmp" && mv "$model.tmp" "$model"
cp "$rules" "$rules.good" && echo '{"version": "broken"' >"$rules"
fs_kill scorer HUP
fs_wait_for 30 grep -q '"event":"rules_reload_failed"' "$FS_TEST_DIR/scorer.log"
# (step 3's SIGHUP read the model file again too: model_reloaded from $va to $va)
fs_wait_for 30 "grep '\"event\":\"model_reloaded\"' '$FS_TEST_DIR/scorer.log' | grep -qF '\"version\":\"$vb\"'"
grep '"event":"model_reloaded"' "$FS_TEST_DIR/scorer.log" | grep -F "\"previous\":\"$va\"" |
    grep -qF "\"version\":\"$vb\"" || fs_fail "model_reloaded $va -> $vb"
produce 102 300
fs_wait_for 90 '(( $(decisions) >= 1200 ))'
fs_assert_eq 300 "$(version_count "'$vb'")" "decisions after the reload with model_version $vb"
fs_assert_eq 900 "$(version_count "'$va'")" "decisions before it keep $va"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions WHERE model_version = '$vb'
    AND features::jsonb ? 'merchant_count_60s'")" "decisions of $vb with model a's window merchant_count_60s"
fs_assert_eq 0 "$(unbound)" "fs_scorer_model_features_unbound with model b"
mv "$rules.good" "$rules"

# 5. SIGHUP with a corrupt model file: rejected, the active model stays, the failure is counted
head -c 200 "$FS_TEST_DIR/model-b.json" >"$model"
fs_kill scorer HUP
fs_wait_for 30 grep -q '"event":"model_reload_failed"' "$FS_TEST_DIR/scorer.log"
grep '"event":"model_reload_failed"' "$FS_TEST_DIR/scorer.log" | grep -F "\"file\":\"$model\"" |
    grep -qF "\"active\":\"$vb\"" || fs_fail "model_reload_failed names the file and the active model"
produce 103 200
fs_wait_for 90 '(( $(decisions) >= 1400 ))'
fs_assert_eq 500 "$(version_count "'$vb'")" "decisions after the failed reload keep $vb"
fs_assert_eq 0 "$(version_count NULL)" "decisions without a model"
metrics=$(curl -s "http://127.0.0.1:$admin/metrics")
grep -qF 'fs_scorer_model_reloads_total{result="ok"} 2' <<<"$metrics" || fs_fail "model reloads (ok: steps 3 and 4)"
grep -qF 'fs_scorer_model_reloads_total{result="failed"} 1' <<<"$metrics" || fs_fail "model reloads (failed)"
grep -qF "fs_scorer_model_info{version=\"$vb\"} 1" <<<"$metrics" || fs_fail "model info: $vb in use"
! grep -qF "fs_scorer_model_info{version=\"$va\"}" <<<"$metrics" || fs_fail "model info: replaced $va still exported"
! grep -qE '^fs_scorer_model_failures_total [1-9]' <<<"$metrics" || fs_fail "prediction failures"

# 6. Rules that do not fit the model: 32 windows of their own, with the 12 feature windows and the 3
# merchant-risk windows 47, and model b's two (user_count_300s, card_count_120s) 49 > 48. The
# offline check with the model refuses the file (without the model it loads), and so does a reload:
# reload_failed naming the column, the active rules and model stay.
full="$FS_TEST_DIR/rules-full.json"
{
    printf '{"version": "full", "thresholds": {"review": 30, "block": 70}, "rules": ['
    for i in $(seq 0 31); do
        ((i == 0)) || printf ','
        printf '{"code": "IP%d", "severity": "low", "weight": 1, "message": "m", "predicate": ' "$i"
        printf '{"kind": "count_at_least", "entity": "ip", "window_seconds": %d, "count": 9}}' $((61 + i))
    done
    printf ']}\n'
} >"$full"
cp "$FS_TEST_DIR/model-b.json" "$model.tmp" && mv "$model.tmp" "$model"
FS_FEATURE_WINDOWS="$windows" "$scorer" --rules-file "$full" --offline /dev/null --log-level warn ||
    fs_fail "the full rules file alone must load"
st=0
out=$(FS_FEATURE_WINDOWS="$windows" "$scorer" --rules-file "$full" --model-file "$model" --offline /dev/null 2>&1) || st=$?
((st == 1)) || fs_fail "offline check with the model: exit $st"
grep '"event":"offline_failed"' <<<"$out" | grep -q 'model: column [a-z0-9_]*: more than 48 feature windows' ||
    fs_fail "offline check with the model: $out"
echo "ok: the offline check with --model-file refuses rules that do not fit the model"
# ... and so does a start with them, before it connects anywhere: nothing listens at the database
# and broker addresses given, yet the error is the misfit, at once (it came after PostgreSQL's).
st=0
out=$(FS_FEATURE_WINDOWS="$windows" FS_DATABASE_URL="postgresql://127.0.0.1:$(fs_free_port)/x" \
    FS_BROKERS="127.0.0.1:$(fs_free_port)" FS_ADMIN_PORT=-1 timeout 20 "$scorer" --rules-file "$full" \
    --model-file "$model" 2>&1) || st=$?
((st == 1)) || fs_fail "start with rules that do not fit the model: exit $st: $out"
grep '"event":"startup_failed"' <<<"$out" | grep -q 'more than 48 feature windows' ||
    fs_fail "start with rules that do not fit the model: $out"
echo "ok: a start with rules that do not fit the model fails on that, before connecting"
cp "$full" "$rules.tmp" && mv "$rules.tmp" "$rules"
fs_kill scorer HUP
fs_wait_for 30 grep -q '"event":"reload_failed"' "$FS_TEST_DIR/scorer.log"
grep '"event":"reload_failed"' "$FS_TEST_DIR/scorer.log" | grep 'more than 48 feature windows' |
    grep -qF "\"model\":\"$vb\"" || fs_fail "reload_failed names the column and the model"
produce 105 100 # payment_ids 00000069-...
fs_wait_for 90 '(( $(decisions) >= 1500 ))'
fs_assert_eq 100 "$(fs_psql "SELECT count(*) FROM decisions WHERE payment_id::text LIKE '00000069-%'
    AND rules_version = '$v2' AND model_version = '$vb'")" "decisions after the refused reload (rules $v2, model $vb)"
metrics=$(curl -s "http://127.0.0.1:$admin/metrics")
grep -qF 'fs_scorer_rules_reloads_total{result="failed"} 2' <<<"$metrics" || fs_fail "rules reloads (failed: steps 4 and 6)"
grep -qF "fs_scorer_rules_info{version=\"$v2\"} 1" <<<"$metrics" || fs_fail "rules info: $v2 still in use"
fs_alive scorer || fs_fail "the scorer died"
echo "ok"
