#!/usr/bin/env bash
# fraudshield-train against PostgreSQL: decisions with stored features + outcomes known with a
# delay -> the training query (period, label cut-off), a model file the inference code loads, and
# the same result from a psql \copy export of the query (--print-query) as from the database.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup train_pg
fs_pg_start
for f in "$REPO"/schemas/sql/*.sql; do fs_psql "$(cat "$f")" >/dev/null; done

# 3,000 payments from 2018-07-24 to 2018-07-31 23:40, one every 230 s (the first day is outside
# the period); fraud = a large amount at night; every label becomes known 7 days after its payment.
fs_psql "
INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
                      payment_method, event_time, ingest_time, source_partition, source_offset)
SELECT md5(i::text)::uuid, 'u' || (i % 300), 'm' || (i % 50), 100 + (i * 7919) % 30000, 'EUR', 2,
       'card', timestamptz '2018-07-24 00:00:00+00' + i * interval '230 seconds', now(), 0, i
FROM generate_series(1, 3000) i;
INSERT INTO decisions (payment_id, decision, score, reasons, features, rules_version, scorer_id,
                       scoring_latency_us)
SELECT payment_id, 'allow', 0, '[{\"code\": \"X\", \"weight\": 5}]',
       jsonb_build_object('amount_minor', amount_minor, 'currency', 'EUR',
                          'night', (extract(hour FROM event_time) <= 6)::int), 'test', 't', 1
FROM payments;
INSERT INTO outcomes (payment_id, outcome, known_at)
SELECT payment_id,
       CASE WHEN amount_minor > 20000 AND extract(hour FROM event_time) <= 6
            THEN 'confirmed_fraud' ELSE 'legitimate' END,
       event_time + interval '7 days'
FROM payments;" >/dev/null

train="$BUILD/bin/fraudshield-train"
args=(--period 2018-07-25:2018-07-31 --rounds 30 --threads 1 --log-level warn)
cutoff=(--labels-known-by 2018-08-06)
out=$("$train" "${args[@]}" "${cutoff[@]}" --output "$FS_TEST_DIR/model.json") || fs_fail "training failed"
echo "$out"
last=$(tail -1 <<<"$out")
# labelled rows: in the period, and labels known by 08-06 00:00 = payments before 07-30 00:00
rows=$(fs_psql "SELECT count(*) FROM payments WHERE event_time >= '2018-07-25' AND event_time < '2018-07-30'")
[[ $last == "train rows=$rows "* ]] || fs_fail "expected $rows labelled rows: $last"
[[ $last == *"version=gbt-20180725-20180731+"* ]] || fs_fail "version: $last"
[[ $last =~ holdout_auc=([0-9.]+) ]] && awk -v a="${BASH_REMATCH[1]}" 'BEGIN { exit !(a > 0.95) }' ||
    fs_fail "the model does not separate the classes: $last"
grep -q '"fs_features":"amount_minor,night"' "$FS_TEST_DIR/model.json" || fs_fail "feature order"
grep -q '"fs_labels_known_by":"2018-08-06"' "$FS_TEST_DIR/model.json" || fs_fail "label cut-off"

# the same rows through a psql export of the printed query: the cut-off is the export's (given to
# --print-query); given with --input it would not be applied, so it is refused there
query=$("$train" "${args[@]}" "${cutoff[@]}" --print-query)
psql -X -q -d "$FS_DATABASE_URL" -c "\\copy ($query) TO '$FS_TEST_DIR/rows.tsv'"
out2=$("$train" "${args[@]}" --input "$FS_TEST_DIR/rows.tsv" --output "$FS_TEST_DIR/model2.json")
last2=$(tail -1 <<<"$out2")
fs_assert_eq "${last% model=*}" "${last2% model=*}" "metrics from the export"
grep -q '"fs_labels_known_by":"file"' "$FS_TEST_DIR/model2.json" || fs_fail "label cut-off of a file"
"$train" "${args[@]}" "${cutoff[@]}" --input "$FS_TEST_DIR/rows.tsv" --output "$FS_TEST_DIR/x.json" \
    2>/dev/null && fs_fail "labels-known-by with input must fail"

# errors: no rows in the period, bad period, missing output
"$train" --period 2017-01-01:2017-01-02 --output "$FS_TEST_DIR/x.json" --log-level error 2>/dev/null &&
    fs_fail "an empty period must fail"
"$train" --period 2018-07-31:2018-07-25 --output "$FS_TEST_DIR/x.json" 2>/dev/null &&
    fs_fail "a reversed period must fail"
"$train" --period 2018-07-25:2018-07-31 2>/dev/null && fs_fail "no output must fail"
[[ ! -e "$FS_TEST_DIR/x.json" ]] || fs_fail "a failed run wrote a model"

# fraudshield-eval: train on 07-25..07-27, test 07-30..07-31 (delay 2 days), re-scored with the model
"$train" --period 2018-07-25:2018-07-27 --rounds 30 --threads 1 --holdout-pct 0 --log-level warn \
    --output "$FS_TEST_DIR/m3.json" >/dev/null
ev=$("$BUILD/bin/fraudshield-eval" --train 2018-07-25:2018-07-27 --test 2018-07-30:2018-07-31 \
     --delay-days 2 --model "$FS_TEST_DIR/m3.json" --model-weight 100 --log-level warn)
echo "$ev"
# every rule score is the same 5 points: the rules rank nothing; the model separates the classes
grep -q '^| FraudShield rules only *|  0.5000 |' <<<"$ev" || fs_fail "rules-only AUC should be 0.5"
[[ $(tail -1 <<<"$ev") =~ ^eval\ auc=([0-9.]+)\ ap=([0-9.]+)\ cp100=([0-9.]+)$ ]] || fs_fail "last line"
awk -v a="${BASH_REMATCH[1]}" 'BEGIN { exit !(a > 0.95) }' || fs_fail "blend AUC ${BASH_REMATCH[1]}"
# cards (users) with a fraud in 07-25..07-27 are known on the test days: none of their rows count
known=$(fs_psql "SELECT count(*) FROM payments p WHERE p.event_time >= '2018-07-30' AND p.user_id IN
  (SELECT q.user_id FROM payments q JOIN outcomes o USING (payment_id) WHERE o.outcome = 'confirmed_fraud'
   AND q.event_time >= '2018-07-25' AND q.event_time < p.event_time::date - 2)")
total=$(fs_psql "SELECT count(*) FROM payments WHERE event_time >= '2018-07-30'")
grep -q "^test 2018-07-30:2018-07-31: $((total - known)) transactions" <<<"$ev" ||
    fs_fail "known-compromised filter: expected $((total - known)) of $total"
echo "ok"
