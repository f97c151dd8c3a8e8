#!/usr/bin/env bash
# What consumers of processed_payments and fraud_alerts get for a payment seen twice.
#   1. A redelivery (the same payment again, here with a later event_time, ingest_time and ingest_ts
#      header, as a client's retry under the same Idempotency-Key whose body set no timestamp, and
#      another country) is
#      produced again byte for byte as the first time: the stored decision, with its reasons in the
#      contract's key order (jsonb reordered them), and the stored payment's times and ingest_ts.
#      The old code sent the stored decision with the new message's data and times.
#   2. Another payment under a payment_id already stored (another amount) is dead-lettered
#      (payment_conflict); the stored payment stands and nothing is produced for it. The old code
#      published it (9000 USD as "allow", score 0) with the first payment's decision.
#   3. In one batch, such a payment followed by the true redelivery of the stored one: the first is
#      dead-lettered and the redelivery's outputs are produced again. The old code dead-lettered
#      both (the second as a conflict with the first of the batch) and produced nothing.
#   4. The events carry their source (the client ingest authenticated): the stored payment keeps
#      its own, and a conflicting payment from another client is logged as payment_id_collision
#      (an error, naming both), since it is how one client could take another's ids.
#   5. The same payment from other clients is taken as a redelivery (a resend under a new API key)
#      with a payment_id_shared warning naming both clients (it was silent); 6. not when the
#      payment it copies is itself a conflict (dead-lettered: nothing of it stands).
#   7. A stored payment whose decision row is missing is decided when redelivered, in one batch with
#      a new payment (the two take different insert paths: store_insert_decisions).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_redelivery
# the dev broker holds a rebalance for the session timeout: a short one keeps the restart quick
export KAFKA_SESSION_TIMEOUT_MS=6000 KAFKA_HEARTBEAT_INTERVAL_MS=500
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
fs_bg scorer env FS_SCORER_ID=scorer-re FS_RULES_FILE="$REPO/schemas/rules/default.json" \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer.log"

# 6,000.00 EUR: HIGH_VALUE and VERY_HIGH_VALUE, an alert with two reasons
first=$(bash "$REPO/tests/integration/gen_raw_payments.sh" "$run" 2 1000 DE | head -n 1 |
        sed -e 's/"amount_minor":[0-9]*/"amount_minor":600000/' -e 's/}$/,"source":"svc-a"}/')
id=$(grep -o '"payment_id":"[^"]*"' <<<"$first" | cut -d'"' -f4)
later=$(sed -E -e 's/"(event|ingest)_time":"[^"]*"/"\1_time":"2031-01-01T00:00:00.000Z"/g' \
    -e 's/"country":"DE"/"country":"FR"/' <<<"$first") # also another country: the stored one stands
other=$(sed -e 's/"amount_minor":600000/"amount_minor":900000/' -e 's/"source":"svc-a"/"source":"svc-b"/' <<<"$first")
sentinel=$(bash "$REPO/tests/integration/gen_raw_payments.sh" "$run" 2 1000 DE | tail -n 1)
# ingest puts its receive time in both the event's ingest_time and the ingest_ts header
it0=$(date -u -d "$(grep -o '"ingest_time":"[^"]*"' <<<"$first" | cut -d'"' -f4)" +%s%3N)
printf '%s\n' "$first" | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H ingest_ts="$it0"
fs_wait_for 60 fs_topic_has fraud_alerts 1
printf '%s\n' "$later" | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H ingest_ts=2222
fs_wait_for 60 fs_topic_has fraud_alerts 2
# against the stored payment (alone in its batch), then within a batch (after the same payment)
printf '%s\n' "$other" "$sentinel" | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H ingest_ts=3333
fs_wait_for 60 '(( $(fs_psql "SELECT count(*) FROM decisions") == 2 ))'
fs_wait_for 30 fs_topic_has raw_payments.dlq 1
# one_batch STOP START DLQ ALERTS MESSAGE...: the messages produced while no scorer runs (scorer STOP
# stopped), so that the first poll of scorer START takes them all; then DLQ dead letters and ALERTS
# alerts in all
one_batch() {
    local stop=$1 start=$2 dlq=$3 alerts=$4
    shift 4
    fs_kill "$stop" TERM
    fs_wait_exit "$stop" 30
    printf '%s\n' "$@" | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H ingest_ts="$it0"
    fs_bg "$start" env FS_SCORER_ID=scorer-re FS_RULES_FILE="$REPO/schemas/rules/default.json" \
        "$BUILD/bin/fraudshield-scorer"
    fs_wait_for 60 fs_topic_has raw_payments.dlq "$dlq"
    fs_wait_for 60 fs_topic_has fraud_alerts "$alerts"
}
# within one batch: after the same payment, then the conflicting one first
one_batch scorer scorer2 2 3 "$first" "$(sed 's/"amount_minor":600000/"amount_minor":800000/' <<<"$first")"
one_batch scorer2 scorer3 3 4 "$(sed -e 's/"amount_minor":600000/"amount_minor":700000/' \
    -e 's/"source":"svc-a"/"source":"svc-c"/' <<<"$first")" "$first"

# 1. every message about the payment, twice, the same bytes and the first ingest_ts
for topic in processed_payments fraud_alerts; do
    fs_topic_dump "$topic" | awk -F'\t' -v id="$id" '$3 == id' >"$FS_TEST_DIR/$topic.txt"
    fs_assert_eq 4 "$(wc -l <"$FS_TEST_DIR/$topic.txt")" "$topic messages of the payment"
    fs_assert_eq 1 "$(cut -f5 "$FS_TEST_DIR/$topic.txt" | sort -u | wc -l)" "$topic: distinct bodies"
    grep -q '"VERY_HIGH_VALUE"' "$FS_TEST_DIR/$topic.txt" || fs_fail "$topic: not the alerting decision"
    fs_assert_eq 0 "$(cut -f4 "$FS_TEST_DIR/$topic.txt" | tr ',' '\n' | grep '^ingest_ts=' | grep -vc "ingest_ts=$it0\$" || true)" "$topic: headers with another ingest_ts"
done
grep -q '"code":"[A-Z_]*","severity":"[a-z]*","weight":[0-9]*,"message":' "$FS_TEST_DIR/processed_payments.txt" ||
    fs_fail "reasons not in the contract's key order: $(head -c 400 "$FS_TEST_DIR/processed_payments.txt")"
echo "ok: the redelivery's outputs are the first ones, byte for byte"

# 2. the conflicting one: dead-lettered, nothing else changed
fs_topic_dump raw_payments.dlq >"$FS_TEST_DIR/dlq.txt"
fs_assert_eq 3 "$(grep -c 'dlq_reason=payment_conflict' "$FS_TEST_DIR/dlq.txt")" "payment_conflict dead letters"
grep -q '"amount_minor":900000' "$FS_TEST_DIR/dlq.txt" || fs_fail "no dead letter for the conflict with the stored payment"
grep '"amount_minor":800000' "$FS_TEST_DIR/dlq.txt" | grep -q 'came earlier in the batch' ||
    fs_fail "no dead letter for the conflict within a batch: $(grep '"amount_minor":800000' "$FS_TEST_DIR/dlq.txt" | cut -f4)"
grep '"amount_minor":700000' "$FS_TEST_DIR/dlq.txt" | grep -q 'was stored before with another amount' ||
    fs_fail "no dead letter for the conflict ahead of the redelivery: $(grep '"amount_minor":700000' "$FS_TEST_DIR/dlq.txt" | cut -f4)"
if grep -q '"amount_minor":600000' "$FS_TEST_DIR/dlq.txt"; then fs_fail "the true redelivery was dead-lettered"; fi
fs_assert_eq 600000 "$(fs_psql "SELECT amount_minor FROM payments WHERE payment_id = '$id'")" "the stored payment"
fs_assert_eq svc-a "$(fs_psql "SELECT source FROM payments WHERE payment_id = '$id'")" "the stored payment's source"
# 4. the 900000 one (svc-b) and the 700000 one (svc-c, ahead of the redelivery in its batch) came
# from other clients than the stored payment's (svc-a); the 800000 one is svc-a's own
fs_assert_eq 2 "$(cat "$FS_TEST_DIR"/scorer*.log | grep -c '"event":"payment_id_collision"')" "payment_id_collision lines"
for who in svc-b:scorer svc-c:scorer3; do
    grep '"event":"payment_id_collision"' "$FS_TEST_DIR/${who#*:}.log" | grep '"level":"error"' |
        grep '"source":"'"${who%%:*}"'"' | grep -q '"first_source":"svc-a"' ||
        fs_fail "no error naming ${who%%:*} and svc-a: $(grep payment_id_collision "$FS_TEST_DIR"/scorer*.log)"
done
if fs_topic_dump processed_payments | grep -qE '"amount_minor":(9|8|7)00000'; then fs_fail "a conflicting payment was published"; fi
echo "ok: conflicting payments from other clients: dead-lettered, logged as payment_id_collision"

# 5. the same payment from two other clients (svc-d, svc-e): taken as redeliveries, as a retry after
# an API key rotation would be, but said (a warning naming both clients): it is also what a client
# replaying another's payment under its id looks like. In one batch or two, each is one warning.
printf '%s\n' "$(sed 's/"source":"svc-a"/"source":"svc-d"/' <<<"$first")" \
    "$(sed 's/"source":"svc-a"/"source":"svc-e"/' <<<"$first")" |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H ingest_ts="$it0"
fs_wait_for 60 '(( $(grep -c "\"event\":\"payment_id_shared\"" "$FS_TEST_DIR/scorer3.log") == 2 ))'
shared=$(grep '"event":"payment_id_shared"' "$FS_TEST_DIR/scorer3.log")
for who in svc-d svc-e; do # the payment that stands is svc-a's, also for a copy in one batch
    grep '"source":"'$who'"' <<<"$shared" | grep '"first_source":"svc-a"' | grep -q '"level":"warn"' ||
        fs_fail "no warning naming $who and svc-a: $shared"
done
fs_assert_eq 3 "$(fs_topic_dump raw_payments.dlq | grep -c 'dlq_reason=payment_conflict')" "payment_conflict dead letters after the shared ones"
fs_assert_eq 2 "$(cat "$FS_TEST_DIR"/scorer*.log | grep -c '"event":"payment_id_collision"')" "payment_id_collision lines after the shared ones"
fs_assert_eq svc-a "$(fs_psql "SELECT source FROM payments WHERE payment_id = '$id'")" "the stored payment's source after the shared ones"
echo "ok: the same payment from other clients: a redelivery, with a payment_id_shared warning"

# 6. In one batch, a conflicting payment (svc-h) and its copy from yet another client (svc-i): the
# row is dead-lettered as a conflict, copy included; nothing of it stands, so no payment_id_shared
# (the copy used to be called shared with svc-h at decoding, before the conflict was known), and
# both messages are collisions with the stored payment (the copy used to go unsaid).
conflicting=$(sed -e 's/"amount_minor":600000/"amount_minor":500000/' -e 's/"source":"svc-a"/"source":"svc-h"/' <<<"$first")
one_batch scorer3 scorer4 5 "$(fs_topic_count fraud_alerts)" "$conflicting" "$(sed 's/"source":"svc-h"/"source":"svc-i"/' <<<"$conflicting")"
fs_assert_eq 0 "$(grep -c '"event":"payment_id_shared"' "$FS_TEST_DIR/scorer4.log" || true)" "payment_id_shared lines for a conflicting row"
for who in svc-h svc-i; do # each message of the row is a collision with the stored payment
    grep '"event":"payment_id_collision"' "$FS_TEST_DIR/scorer4.log" | grep '"source":"'$who'"' | grep -q '"first_source":"svc-a"' ||
        fs_fail "no payment_id_collision naming $who and svc-a: $(grep payment_id "$FS_TEST_DIR/scorer4.log")"
done
echo "ok: a conflicting row's copy from another client is a collision, no shared payment"

# 7. A stored payment without its decision (one transaction writes both, so only an operator's hand
# makes one: here a deleted row) is decided when it comes again, in the same batch as a new payment
# (whose decision takes the direct COPY): both rows are there afterwards, once each.
sid=$(grep -o '"payment_id":"[^"]*"' <<<"$sentinel" | cut -d'"' -f4)
fresh=$(bash "$REPO/tests/integration/gen_raw_payments.sh" $((run + 1)) 1 1000 DE)
fid=$(grep -o '"payment_id":"[^"]*"' <<<"$fresh" | cut -d'"' -f4)
fs_psql "DELETE FROM decisions WHERE payment_id = '$sid'" >/dev/null
one_batch scorer4 scorer5 5 "$(fs_topic_count fraud_alerts)" "$sentinel" "$fresh"
fs_wait_for 60 '(( $(fs_psql "SELECT count(*) FROM decisions WHERE payment_id IN ('"'$sid', '$fid'"')") == 2 ))'
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM payments WHERE payment_id = '$sid'")" "payments rows of the re-decided payment"
fs_wait_for 60 "fs_topic_dump processed_payments | grep -q '\"payment_id\":\"$fid\"'"
fs_kill scorer5 TERM
fs_wait_exit scorer5 30
# one batch held both (scorer5 consumed nothing else): one store_insert_decisions call, both paths
grep '"event":"stopped"' "$FS_TEST_DIR/scorer5.log" | grep '"batches":1,' | grep '"payments_new":1,' |
    grep -q '"payments_redelivered":1,' || fs_fail "not one batch of a new and a redelivered payment: $(grep '"event":"stopped"' "$FS_TEST_DIR/scorer5.log")"
echo "ok: a stored payment without a decision is decided again, in one batch with a new one"
echo PASS
