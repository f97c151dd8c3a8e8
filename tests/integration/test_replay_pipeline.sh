#!/usr/bin/env bash
# The replay through the real pipeline: a generated handbook-format file -> fraudshield-replay ->
# ingest (batch + outcome endpoints, API key) -> raw_payments / payment_outcomes -> scorer ->
# PostgreSQL. Checks every payment decided and every label stored with its delayed known_at, the
# end-to-end latency measured on processed_payments, and that fraudshield-train learns from the
# features the scorer stored.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup replay_pipeline
fs_pg_start
fs_broker_start 6

secret="$FS_TEST_DIR/pii.secret"
fs_pii_secret "$secret"
"$BUILD/bin/fraudshield-ingest" keys create --keys-file "$FS_TEST_DIR/api-keys" --id replay \
    --scopes payments:write,outcomes:write 2>/dev/null >"$FS_TEST_DIR/api.key"
port=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=scorer-1 "$BUILD/bin/fraudshield-scorer"
fs_bg ingest env FS_LISTEN_PORT="$port" FS_PII_SECRET_FILE="$secret" \
    FS_KEYS_FILE="$FS_TEST_DIR/api-keys" "$BUILD/bin/fraudshield-ingest"
fs_wait_for 30 curl -sf "http://127.0.0.1:$port/ready"
fs_wait_for 60 '(( $(fs_psql "SELECT count(*) FROM schema_migrations") > 0 ))'

# 1,500 transactions over 10 days (one every 576 s), 60 customers, 40 terminals; fraud = the
# amounts over 220 (the handbook's first scenario) and every transaction of terminal 7.
csv="$FS_TEST_DIR/tx.csv"
awk 'BEGIN {
    srand(7)
    print "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO"
    for (i = 0; i < 1500; i++) {
        s = i * 576; d = int(s / 86400); r = s % 86400
        amount = (i % 25 == 0) ? 250 + i % 100 : 5 + (i * 37) % 120
        term = (i * 13) % 40
        fraud = (amount > 220 || term == 7)
        printf "%d,2018-04-%02d %02d:%02d:%02d,%d,%d,%.2f,%d,%d,%d,%d\n", i, 1 + d, int(r / 3600),
               int(r % 3600 / 60), r % 60, (i * 7) % 60, term, amount, s, d, fraud, fraud
    }
}' >"$csv"
frauds=$(awk -F, 'NR > 1 && $8 == 1' "$csv" | wc -l)

out=$("$BUILD/bin/fraudshield-replay" --input "$csv" --url "http://127.0.0.1:$port" \
      --api-key-file "$FS_TEST_DIR/api.key" --delay-days 1 --batch-size 50 --connections 4 --max-undecided 200 \
      --brokers "$FS_BROKERS" --drain-timeout-s 60 --progress off --log-level warn)
echo "$out"
last=$(tail -1 <<<"$out")
[[ $last == "replay sent=1500 accepted=1500 rejected=0 failed=0 labels=1500 labels_failed=0 "* ]] ||
    fs_fail "summary: $last"
[[ $last == *" decided=1500 "* ]] || fs_fail "not every decision was seen: $last"
[[ $last =~ p99_ms=([0-9.]+) ]] && awk -v p="${BASH_REMATCH[1]}" 'BEGIN { exit !(p > 0) }' ||
    fs_fail "no latency measured: $last"

fs_assert_eq 1500 "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM payments WHERE user_id NOT LIKE 'cust-%' OR merchant_id NOT LIKE 'term-%' OR currency <> 'EUR'")" "mapping"
fs_assert_eq "2018-04-01 00:00:00+00" "$(fs_psql "SET timezone = 'UTC'; SELECT min(event_time) FROM payments")" "event time"
fs_assert_eq 1500 "$(fs_topic_count payment_outcomes)" "labels on payment_outcomes"
# ... and stored by the scorer's outcome consumer
fs_wait_for 60 '(( $(fs_psql "SELECT count(*) FROM outcomes") >= 1500 ))'
fs_assert_eq "$frauds" "$(fs_psql "SELECT count(*) FROM outcomes WHERE outcome = 'confirmed_fraud'")" "fraud labels"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM outcomes o JOIN payments p USING (payment_id) WHERE o.known_at <> p.event_time + interval '1 day'")" "known_at = event time + delay"
# the payments' countries follow the customers (a stable country each)
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM (SELECT user_id FROM payments GROUP BY user_id HAVING count(DISTINCT country) > 1) x")" "one country per customer"

# train on the scorer's stored features: days 2..8, labels known by day 10
train=$("$BUILD/bin/fraudshield-train" --period 2018-04-02:2018-04-08 --labels-known-by 2018-04-10 \
        --rounds 30 --threads 1 --output "$FS_TEST_DIR/model.json" --log-level warn)
echo "$train"
[[ $(tail -1 <<<"$train") == "train rows="* ]] || fs_fail "training failed"
grep -q '"fs_features":"[a-z0-9_,]*amount_minor' "$FS_TEST_DIR/model.json" || fs_fail "features"
echo "ok"
