#!/usr/bin/env bash
# fraudshield-eval --rules-file: the rules file's model_covered rules count in the "rules only"
# score (a scorer without a model counts them) and add 0 to the blend (the scorer with a model),
# from PostgreSQL and from a psql export alike; a rules file that fails validation is an error.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup eval_model_covered
fs_pg_start
for f in "$REPO"/schemas/sql/*.sql; do fs_psql "$(cat "$f")" >/dev/null; done

# 2,000 payments from 2018-07-24, one every 300 s; fraud = a large amount at night, labels known 2
# days later. The decisions were stored by a scorer without a model: every fraud and one payment in
# 11 carry the covered rule (60 points); every payment carries PLAIN (5 points).
fs_psql "
INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
                      payment_method, event_time, ingest_time, source_partition, source_offset)
SELECT md5(i::text)::uuid, 'u' || (i % 400), 'm' || (i % 50), 100 + (i * 7919) % 30000, 'EUR', 2,
       'card', timestamptz '2018-07-24 00:00:00+00' + i * interval '300 seconds', now(), 0, i
FROM generate_series(1, 2000) i;
CREATE TEMP TABLE fraud AS SELECT payment_id, (amount_minor > 20000 AND
    extract(hour FROM event_time) <= 6) AS f, source_offset % 11 = 0 AS extra FROM payments;
INSERT INTO decisions (payment_id, decision, score, reasons, features, rules_version, scorer_id,
                       scoring_latency_us)
SELECT p.payment_id, 'allow', 0,
       CASE WHEN x.f OR x.extra
            THEN '[{\"code\": \"COVERED\", \"weight\": 60}, {\"code\": \"PLAIN\", \"weight\": 5}]'
            ELSE '[{\"code\": \"PLAIN\", \"weight\": 5}]' END::jsonb,
       jsonb_build_object('amount_minor', amount_minor,
                          'night', (extract(hour FROM event_time) <= 6)::int), 'test', 't', 1
FROM payments p JOIN fraud x USING (payment_id);
INSERT INTO outcomes (payment_id, outcome, known_at)
SELECT payment_id, CASE WHEN x.f THEN 'confirmed_fraud' ELSE 'legitimate' END,
       event_time + interval '2 days'
FROM payments JOIN fraud x USING (payment_id);" >/dev/null

rules_file() { # NAME COVERED(true|false)
    cat >"$FS_TEST_DIR/$1" <<EOF
{"version": "t1", "thresholds": {"review": 30, "block": 70}, "blend": {"model_weight": 100},
 "rules": [
  {"code": "COVERED", "severity": "high", "weight": 60, "message": "m", "model_covered": $2,
   "predicate": {"kind": "vault_fraud_at_least", "identifier": "card", "count": 1}},
  {"code": "PLAIN", "severity": "low", "weight": 5, "message": "m",
   "predicate": {"kind": "amount_at_least", "amount": "1"}}]}
EOF
}
rules_file covered.json true
rules_file plain.json false

"$BUILD/bin/fraudshield-train" --period 2018-07-24:2018-07-27 --labels-known-by 2018-07-30 \
    --rounds 30 --threads 1 --holdout-pct 0 --log-level warn --output "$FS_TEST_DIR/m.json" >/dev/null ||
    fs_fail "training failed"
eval_args=(--train 2018-07-24:2018-07-27 --test 2018-07-29:2018-07-30 --delay-days 1
           --model "$FS_TEST_DIR/m.json" --log-level warn)
ev() { "$BUILD/bin/fraudshield-eval" "${eval_args[@]}" "$@"; }

out=$(ev --rules-file "$FS_TEST_DIR/covered.json" --dump "$FS_TEST_DIR/covered.tsv") ||
    fs_fail "eval failed: $out"
echo "$out"
grep -qx 'model_covered rules (counted in the rules only, 0 in the blend as with a model): COVERED' <<<"$out" ||
    fs_fail "the covered codes are not printed"
grep -q '^| FraudShield blend (model_weight 100) ' <<<"$out" || fs_fail "the rules file's model weight"
[[ $(tail -1 <<<"$out") =~ ^eval\ auc=[0-9.]+\ ap=[0-9.]+\ cp100=[0-9.]+$ ]] || fs_fail "last line"
# rules only: COVERED counts (it marks every fraud): the rules rank the frauds first
[[ $out =~ \|\ FraudShield\ rules\ only\ +\|\ +([0-9.]+)\ \| ]] &&
    awk -v a="${BASH_REMATCH[1]}" 'BEGIN { exit !(a > 0.9) }' || fs_fail "rules-only AUC: the covered points do not count"

# each test row: rules = every hit's points, covered = COVERED's, blend = the scorer's with a model
check_dump() { # FILE COVERED_POINTS_IN_BLEND(0|1)
    awk -F'\t' -v inblend="$2" '
        NR == 1 { next }
        {
            n++; hits += $5 == 60
            want_rules = $5 == 60 ? 65 : 5
            pts = $4 - (inblend ? 0 : $5)
            want = int($6 * 100 + 0.5) + pts; if (want > 100) want = 100
            if ($4 != want_rules || ($5 != 60 && $5 != 0) || $7 != want) { print "row " NR ": " $0 " (blend " want ")"; bad++ }
        }
        END { if (n < 100 || hits < 10 || bad) { printf "%d rows, %d with the covered rule, %d wrong\n", n, hits, bad; exit 1 } }' "$1"
}
check_dump "$FS_TEST_DIR/covered.tsv" 0 || fs_fail "covered: the split or the blend is wrong"

# the same rules, COVERED not model_covered: it counts in the blend too
out_plain=$(ev --rules-file "$FS_TEST_DIR/plain.json" --dump "$FS_TEST_DIR/plain.tsv") || fs_fail "eval failed"
grep -q '^model_covered' <<<"$out_plain" && fs_fail "no rule is model_covered in plain.json"
awk -F'\t' 'NR > 1 && $5 != 0 { exit 1 }' "$FS_TEST_DIR/plain.tsv" || fs_fail "plain: covered points"
awk -F'\t' 'BEGIN { OFS = "\t" } NR > 1 { $5 = ($4 == 65 ? 60 : 0) } { print }' "$FS_TEST_DIR/plain.tsv" \
    >"$FS_TEST_DIR/plain.check.tsv"
check_dump "$FS_TEST_DIR/plain.check.tsv" 1 || fs_fail "plain: the blend does not count every rule"
fs_assert_eq "$(grep '^| FraudShield rules only' <<<"$out")" "$(grep '^| FraudShield rules only' <<<"$out_plain")" "rules only: the same either way"

# from a psql export of the training query: the same table
query=$("$BUILD/bin/fraudshield-train" --period 2018-07-24:2018-07-30 --print-query)
psql -X -q -d "$FS_DATABASE_URL" -c "\\copy ($query) TO '$FS_TEST_DIR/rows.tsv'"
out_file=$(ev --rules-file "$FS_TEST_DIR/covered.json" --input "$FS_TEST_DIR/rows.tsv") || fs_fail "eval --input failed"
fs_assert_eq "$out" "$out_file" "eval from the export"

# a rules file that fails validation, a missing one: errors naming it
sed 's/"weight": 60/"weight": 600/' "$FS_TEST_DIR/covered.json" >"$FS_TEST_DIR/bad.json"
for f in bad.json absent.json; do
    if err=$(ev --rules-file "$FS_TEST_DIR/$f" 2>&1); then fs_fail "$f: eval succeeded"; fi
    [[ $err == *"$f"* ]] || fs_fail "$f: the error does not name the file: $err"
done
grep -q 'weight' <<<"$(ev --rules-file "$FS_TEST_DIR/bad.json" 2>&1)" || fs_fail "bad.json: the error does not name the field"
echo "ok"
