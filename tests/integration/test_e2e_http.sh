#!/usr/bin/env bash
# End to end on the embedded default: N payments posted over HTTP to ingest -> raw_payments ->
# two scorers -> PostgreSQL + processed_payments + fraud_alerts. Checks exactly N rows, N processed
# messages, the expected alerts, an empty DLQ, and that no raw personal data reached Kafka or
# PostgreSQL.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup e2e_http
fs_pg_start
fs_broker_start 6

secret="$FS_TEST_DIR/pii.secret"
fs_pii_secret "$secret"
# Posting needs an API key (payments:write), as in production.
KEY=$("$BUILD/bin/fraudshield-ingest" keys create --keys-file "$FS_TEST_DIR/api-keys" --id e2e \
    --scopes payments:write 2>/dev/null)
port=$(fs_free_port)
for i in 1 2; do
    fs_bg "scorer$i" env FS_SCORER_ID="scorer-$i" "$BUILD/bin/fraudshield-scorer"
done
fs_bg ingest env FS_LISTEN_PORT="$port" FS_PII_SECRET_FILE="$secret" FS_KEYS_FILE="$FS_TEST_DIR/api-keys" \
    "$BUILD/bin/fraudshield-ingest"
fs_wait_for 30 curl -sf "http://127.0.0.1:$port/ready"

# post BODY -> prints "STATUS PAYMENT_ID" (the answer recorded for fs_check_answers)
post() {
    local status
    status=$(curl -s -o "$FS_TEST_DIR/post.body" -w '%{http_code}' -H 'Content-Type: application/json' \
        -H "X-API-Key: $KEY" --data-binary "$1" "http://127.0.0.1:$port/api/v1/payments") || status=000
    fs_record_answer POST /api/v1/payments "$status" "$FS_TEST_DIR/post.body"
    printf '%s %s\n' "$status" "$(sed -n 's/.*"payment_id": *"\([^"]*\)".*/\1/p' "$FS_TEST_DIR/post.body")"
}

n=0
flagged=0
countries=(US DE FR GB NL ES)
for i in $(seq 1 30); do
    c=${countries[$((i % 6))]}
    body=$(printf '{"user_id":"user-%d","merchant_id":"m-%d","amount":"%d.%02d","currency":"EUR","payment_method":"card","country":"%s","email":"person%d@example.com","ip_address":"198.51.100.%d","card_fingerprint":"fp-secret-%d","device_info":{"device_id":"dev-secret-%d","os":"linux"},"card_last_four":"%04d"}' \
        "$i" "$((i % 4))" "$((10 + i))" "$i" "$c" "$i" "$i" "$i" "$i" "$i")
    read -r status pid <<<"$(post "$body")"
    fs_assert_eq 202 "$status" "payment $i accepted"
    [[ -n "$pid" ]] || fs_fail "no payment_id in the 202 body"
    n=$((n + 1))
done
# Flagged ones: very high value (block) and a high-risk country (review).
read -r status _ <<<"$(post '{"user_id":"big-spender","merchant_id":"m-1","amount":6000,"currency":"EUR","payment_method":"card","country":"DE"}')"
fs_assert_eq 202 "$status" "very high value accepted"
read -r status _ <<<"$(post '{"user_id":"risky","merchant_id":"m-2","amount":"50.00","currency":"USD","payment_method":"card","country":"KP"}')"
fs_assert_eq 202 "$status" "high-risk country accepted"
n=$((n + 2))
flagged=2

decisions_at_least() { (($(fs_psql 'SELECT count(*) FROM decisions') >= $1)); }
# 60 s: the two scorers join while the payments arrive, and the dev broker settles a group only on
# session timeouts; on a loaded machine that has taken over 30 s (a flake seen once in CI).
fs_wait_for 60 decisions_at_least "$n"
sleep 1 # anything extra (a duplicate) would show up now
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM payments')" "payments rows"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions rows"
fs_assert_eq "e2e $n" "$(fs_psql 'SELECT source, count(*) FROM payments GROUP BY source' | tr '|' ' ')" "payments.source: the API key id of every payment"
fs_assert_eq "$flagged" "$(fs_psql "SELECT count(*) FROM alerts")" "alerts rows"
fs_assert_eq block "$(fs_psql "SELECT d.decision FROM decisions d JOIN payments p USING (payment_id) WHERE p.user_id='big-spender'")" "very high value blocked"
fs_assert_eq "HIGH_RISK_COUNTRY" "$(fs_psql "SELECT r->>'code' FROM decisions d JOIN payments p USING (payment_id), jsonb_array_elements(d.reasons) r WHERE p.user_id='risky'")" "high-risk country reason"
fs_wait_for 20 fs_topic_has processed_payments "$n"
# Topics are at-least-once with stable keys (a rebalance may redeliver an uncommitted batch):
# every payment is there, and duplicates carry the same key so consumers can drop them.
distinct_keys() { fs_topic_dump "$1" | cut -f3 | sort -u | wc -l; }
fs_assert_eq "$n" "$(distinct_keys processed_payments)" "distinct payments on processed_payments"
fs_assert_eq "$flagged" "$(distinct_keys fraud_alerts)" "distinct payments on fraud_alerts"
fs_assert_eq 0 "$(fs_topic_count raw_payments.dlq)" "dead letters"

# No raw personal data anywhere: not in the topics, not in the database, not in the logs.
dump="$FS_TEST_DIR/everything.txt"
for t in raw_payments processed_payments fraud_alerts; do fs_topic_dump "$t" >>"$dump"; done
pg_dump -h 127.0.0.1 -p "$FS_PG_PORT" -U postgres fraudshield >>"$dump"
cat "$FS_TEST_DIR"/scorer*.log "$FS_TEST_DIR"/ingest.log >>"$dump"
for raw in person7@example.com 198.51.100.7 fp-secret-7 dev-secret-7; do
    if grep -qF "$raw" "$dump"; then fs_fail "raw personal value $raw leaked"; fi
done
fs_assert_eq 1 "$(fs_psql "SELECT count(DISTINCT email_digest) FROM payments WHERE user_id='user-7'")" "email stored as digest"
fs_assert_eq 64 "$(fs_psql "SELECT length(email_digest) FROM payments WHERE user_id='user-7'")" "digest length"
# Every message on the four topics is what its schema says (schemas/json): fields, types, key
# order, headers and keys (docs/topics.md). An outcome first, for payment_outcomes.
OKEY=$("$BUILD/bin/fraudshield-ingest" keys create --keys-file "$FS_TEST_DIR/api-keys" --id e2e-outcomes \
    --scopes outcomes:write 2>/dev/null)
fs_kill ingest HUP # the new key
fs_wait_for 10 "grep -q '\"event\":\"reloaded\"' '$FS_TEST_DIR/ingest.log'"
big=$(fs_psql "SELECT payment_id FROM payments WHERE user_id = 'big-spender'")
code=$(curl -s -o "$FS_TEST_DIR/outcome.body" -w '%{http_code}' -H "X-API-Key: $OKEY" \
    -H 'Content-Type: application/json' --data-binary '{"outcome":"confirmed_fraud","reason":"card reported stolen"}' \
    "http://127.0.0.1:$port/api/v1/payments/$big/outcome")
fs_assert_eq 202 "$code" "outcome accepted"
fs_record_answer POST "/api/v1/payments/$big/outcome" "$code" "$FS_TEST_DIR/outcome.body"
fs_wait_for 20 fs_topic_has payment_outcomes 1
for t in raw_payments processed_payments fraud_alerts payment_outcomes; do fs_topic_dump "$t" >"$FS_TEST_DIR/$t.tsv"; done
# :6 = the partitions of each topic (fs_broker_start 6): every message on its key's murmur2 partition
fs_validate_topics "raw-payment.v1.json:$FS_TEST_DIR/raw_payments.tsv:country:6" \
    "processed-payment.v1.json:$FS_TEST_DIR/processed_payments.tsv:payment_id:6" \
    "fraud-alert.v1.json:$FS_TEST_DIR/fraud_alerts.tsv:payment_id:6" \
    "payment-outcome.v1.json:$FS_TEST_DIR/payment_outcomes.tsv:payment_id:6" ||
    fs_fail "a message does not match its schema"
# ... and every answer ingest gave is what its schema says (schemas/json).
fs_check_answers payment-accepted.v1.json outcome-accepted.v1.json
echo "e2e ok: $n payments"
