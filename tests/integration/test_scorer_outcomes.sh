#!/usr/bin/env bash
# The risk vault and outcome feedback: payments sharing a card fingerprint (and email, device)
# build the vault; a confirmed_fraud label on payment A (payment_outcomes, the scorer's own consumer
# group) is stored once and applied to the vault and the outcome links of A's identifiers and
# merchant; a later payment with the same card whose event time is AFTER the label became known is
# decided differently (CARD_LINKED_TO_FRAUD), one BEFORE it is not (delayed feedback); the same
# label delivered twice counts once; a label that arrives before its payment is applied once the
# payment is persisted; an invalid outcome message is counted and dead-lettered with its reason,
# in fs_scorer_dead_letters_total by reason under topic="payment_outcomes" (an undecodable or
# db_rejected label is not counted as raw_payments' dead letter of that reason).
# An outcome_id names one label: a retry through ingest under the same Idempotency-Key with another
# outcome, a message reusing an outcome_id for another payment or outcome (in one batch: the first
# one stands; also on the row-by-row path) is dead-lettered as outcome_conflict, logged and
# counted, while an identical retry (or one with another reason) is absorbed silently.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_outcomes
fs_pg_start
fs_broker_start 6
admin=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=vault FS_ADMIN_PORT="$admin" FS_STATS_INTERVAL_MS=500 "$BUILD/bin/fraudshield-scorer"

h() { printf '%064x' "$1"; } # a 64-hex digest
T=1793613600000              # 2026-11-02T10:00:00Z
iso() { date -u -d "@$(($1 / 1000))" +%Y-%m-%dT%H:%M:%S.000Z; }
# event ID USER CARD EMAIL DEVICE T_MS
event() {
    printf 'DE:{"schema_version":1,"payment_id":"%s","user_id":"%s","merchant_id":"term-9","amount_minor":2500,"currency":"EUR","payment_method":"card","card_fingerprint_digest":"%s","email_digest":"%s","device_id_digest":"%s","country":"DE","event_time":"%s","ingest_time":"%s"}\n' \
        "$1" "$2" "$(h "$3")" "$(h "$4")" "$(h "$5")" "$(iso "$6")" "$(iso "$6")"
}
outcome() { # outcome PAYMENT_ID OUTCOME KNOWN_MS [OUTCOME_ID]
    printf '%s:{"schema_version":1,%s"payment_id":"%s","outcome":"%s","reason":"test","known_at":"%s","source":"test"}\n' \
        "$1" "${4:+\"outcome_id\":\"$4\",}" "$1" "$2" "$(iso "$3")"
}
A=aaaaaaaa-0000-4000-8000-000000000001
B=bbbbbbbb-0000-4000-8000-000000000002
C=cccccccc-0000-4000-8000-000000000003
E=eeeeeeee-0000-4000-8000-000000000005
P=dddddddd-0000-4000-8000-000000000004
at_least() { (($(fs_psql "$1") >= $2)); }
# dead_letters ADMIN_PORT REASON TOPIC: that series of fs_scorer_dead_letters_total ("" if none)
dead_letters() {
    curl -s "http://127.0.0.1:$1/metrics" |
        awk -v s="fs_scorer_dead_letters_total{reason=\"$2\",topic=\"$3\"}" '$1 == s { print $2 }'
}

# 1. A: the card's first payment; then its label: confirmed fraud, known 1 hour later.
event "$A" ua 1 11 21 "$T" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM decisions" 1
outcome "$A" confirmed_fraud $((T + 3600000)) 0f0f0f0f-0000-4000-8000-00000000000a |
    kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE applied_at IS NOT NULL" 1
fs_assert_eq "1|0|1" "$(fs_psql "SELECT fraud_count, chargeback_count, times_seen FROM risk_vault WHERE entity_kind = 'card'")" "vault: card fraud count"
fs_assert_eq "card,device,email,merchant" "$(fs_psql "SELECT string_agg(entity_kind, ',' ORDER BY entity_kind) FROM outcome_links WHERE payment_id = '$A'")" "outcome links of A"

# 2. B at T+30 min (label not known yet at its event time), C at T+2 h (known): same card.
{ event "$B" ub 1 12 22 $((T + 1800000)); event "$C" uc 1 13 23 $((T + 7200000)); } |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM decisions" 3
reasons() { fs_psql "SELECT decision || ':' || coalesce((SELECT string_agg(r->>'code', ',') FROM jsonb_array_elements(reasons) r), '') FROM decisions WHERE payment_id = '$1'"; }
fs_assert_eq "allow:" "$(reasons "$B")" "B: the label was not known at its event time"
fs_assert_eq "review:CARD_LINKED_TO_FRAUD" "$(reasons "$C")" "C: decided differently after the feedback"
fs_assert_eq "2|1|0" "$(fs_psql "SELECT (features->>'vault_card_seen') || '|' || (features->>'vault_card_fraud') || '|' || (features->>'vault_email_seen') FROM decisions WHERE payment_id = '$C'")" "C's vault evidence"

# 2b. F: another card, but A's email and device, after the label: both vault rules, block.
F=ffffffff-0000-4000-8000-000000000006
event "$F" uf 4 11 21 $((T + 3 * 3600000)) | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM decisions WHERE payment_id = '$F'" 1
fs_assert_eq "block:DEVICE_LINKED_TO_FRAUD,EMAIL_LINKED_TO_FRAUD" "$(reasons "$F")" "F: device and email linked to fraud"

# 3. The same label again (a redelivery), a second label for A, an invalid message: A counts once.
{ outcome "$A" confirmed_fraud $((T + 3600000)) 0f0f0f0f-0000-4000-8000-00000000000a
  outcome "$A" chargeback $((T + 86400000))
  echo 'x:{"schema_version":1,"payment_id":"not-a-uuid","outcome":"confirmed_fraud"}'; } |
    kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE applied_at IS NOT NULL" 2
fs_assert_eq 2 "$(fs_rows outcomes)" "outcome rows (the duplicate stored once)"
fs_assert_eq "1|1" "$(fs_psql "SELECT fraud_count, chargeback_count FROM risk_vault WHERE entity_kind = 'card' AND digest = '$(h 1)'")" "vault counts after a redelivery"
fs_wait_for 20 "curl -s http://127.0.0.1:$admin/metrics | grep -q 'fs_scorer_outcomes_total{result=\"invalid\"} 1'"
fs_wait_for 20 '[[ $(dead_letters $admin invalid_outcome payment_outcomes) == 1 ]]'
# the outcomes consumer's lag is exported beside raw_payments' (every label consumed: 0)
fs_wait_for 20 "curl -s http://127.0.0.1:$admin/metrics | grep -q '^fs_scorer_consumer_lag{topic=\"payment_outcomes\",partition=\"[0-9]*\"} 0'"
# ... and the invalid message is on payment_outcomes.dlq, unchanged, with its reason
fs_wait_for 30 fs_topic_has payment_outcomes.dlq 1
sleep 1
fs_assert_eq 1 "$(fs_topic_count payment_outcomes.dlq)" "dead letters of the invalid outcome"
dl=$(fs_topic_dump payment_outcomes.dlq)
[[ "$dl" == *'"payment_id":"not-a-uuid"'* && "$dl" == *dlq_reason=invalid_outcome* && "$dl" == *'payment_id: must be a UUID'* ]] ||
    fs_fail "dead letter of the invalid outcome: $dl"
echo "ok: the invalid outcome was dead-lettered with its reason"

# 4. A label before its payment: pending, then applied when the payment is persisted.
outcome "$P" confirmed_fraud $((T + 60000)) | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id = '$P'" 1
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM outcome_links WHERE payment_id = '$P'")" "no links while the payment is unknown"
event "$P" up 2 14 24 "$T" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcome_links WHERE payment_id = '$P'" 4
fs_assert_eq 1 "$(fs_psql "SELECT fraud_count FROM risk_vault WHERE entity_kind = 'card' AND digest = '$(h 2)'")" "late label applied"

# 5. Merchant risk: E, a payment at the same terminal 8 days later, sees the fraud of A in its
#    delayed (t-14d, t-7d] window: A, B, C, F, P on day T; frauds A and P, known at its time.
event "$E" ue 3 15 25 $((T + 8 * 86400000)) | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM decisions WHERE payment_id = '$E'" 1
fs_assert_eq "2|5" "$(fs_psql "SELECT (features->>'merchant_frauds_7d_delay_7d') || '|' || (features->>'merchant_count_604800s_delay_604800s') FROM decisions WHERE payment_id = '$E'")" "merchant risk: frauds and payments of the delayed window"
fs_assert_eq t "$(fs_psql "SELECT (features->>'merchant_risk_7d_delay_7d')::float = 0.4 FROM decisions WHERE payment_id = '$E'")" "merchant risk ratio"

# 6. A restart consumes nothing again: the outcome offsets (the invalid message's included) were
#    committed after its dead letter was delivered, so it is neither stored nor dead-lettered twice.
#    And a label stored before the restart whose payment comes after it (Q) is applied by the
#    new worker once Q is persisted, before any new label arrives (it knows of no pending one in
#    memory: it must ask PostgreSQL).
Q=dddddddd-0000-4000-8000-0000000000aa
outcome "$Q" confirmed_fraud $((T + 60000)) | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id = '$Q'" 1
fs_kill scorer TERM
fs_wait_exit scorer 30
admin2=$(fs_free_port)
fs_bg scorer2 env FS_SCORER_ID=vault-2 FS_ADMIN_PORT="$admin2" "$BUILD/bin/fraudshield-scorer"
event "$Q" uq 7 17 27 "$T" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 90 at_least "SELECT count(*) FROM decisions WHERE payment_id = '$Q'" 1
fs_wait_for 30 at_least "SELECT count(*) FROM outcome_links WHERE payment_id = '$Q'" 4
fs_assert_eq 1 "$(fs_psql "SELECT fraud_count FROM risk_vault WHERE entity_kind = 'card' AND digest = '$(h 7)'")" "a pending label applied after a restart"
echo "ok: a label pending across a restart is applied once its payment is persisted"
# a new label after the restart: once it is stored, everything before it was seen by scorer2
before=$(fs_rows outcomes)
outcome "$E" legitimate $((T + 9 * 86400000)) | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 90 at_least "SELECT count(*) FROM outcomes" $((before + 1))
fs_assert_eq 1 "$(fs_topic_count payment_outcomes.dlq)" "dead letters after a restart"
fs_assert_eq 0 "$(grep -c '"event":"outcome_invalid"' "$FS_TEST_DIR/scorer2.log" || true)" "invalid outcomes seen again after the restart"

# 7. An outcome PostgreSQL refuses as data (here: a CHECK constraint the test adds) is dead-lettered
#    alone as db_rejected, with the error; the valid label sent with it is still stored, and the
#    outcome stream goes on (no endless retry of the whole set).
fs_psql "ALTER TABLE outcomes ADD CONSTRAINT test_refuse CHECK (reason IS DISTINCT FROM 'refuse-me')" >/dev/null
before=$(fs_rows outcomes)
{ printf '%s:{"schema_version":1,"payment_id":"%s","outcome":"chargeback","reason":"refuse-me","known_at":"%s","source":"test"}\n' \
      "$B" "$B" "$(iso $((T + 86400000)))"
  outcome "$C" false_positive $((T + 86400000)); } | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes" $((before + 1))
fs_wait_for 30 fs_topic_has payment_outcomes.dlq 2
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM outcomes WHERE payment_id = '$C' AND outcome = 'false_positive'")" "the valid label beside the refused one"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM outcomes WHERE reason = 'refuse-me'")" "the refused label stored"
dl=$(fs_topic_dump payment_outcomes.dlq | grep refuse-me || true)
[[ "$dl" == *refuse-me* && "$dl" == *dlq_reason=db_rejected* && "$dl" == *test_refuse* ]] ||
    fs_fail "dead letter of the refused outcome: $dl"
# dlq_error names the constraint, never the row's values (PostgreSQL's DETAIL quotes the row)
hdrs=$(cut -f4 <<<"$dl")
[[ "$hdrs" == *"constraint test_refuse"* && "$hdrs" != *refuse-me* ]] ||
    fs_fail "dlq_error must name the constraint without quoting the row: $hdrs"
! grep -q 'refuse-me' "$FS_TEST_DIR"/scorer*.log || fs_fail "a log line quotes the refused row"
fs_wait_for 20 '[[ $(dead_letters $admin2 db_rejected payment_outcomes) == 1 ]]'
fs_assert_eq 0 "$(dead_letters "$admin2" db_rejected raw_payments)" "raw_payments' db_rejected dead letters"
echo "ok: the refused outcome was dead-lettered as db_rejected"

# 8. Through ingest: a retry under the same Idempotency-Key with another outcome gets the same
#    outcome_id (the key, not the body, names it) and is dead-lettered as outcome_conflict: the
#    first label stands, alone in outcomes. Identical retries (their known_at, defaulted to each
#    request's time, differs), and one with another reason, are absorbed without a dead letter.
INGEST="$BUILD/bin/fraudshield-ingest"
fs_pii_secret "$FS_TEST_DIR/pii.secret"
KEY=$("$INGEST" keys create --keys-file "$FS_TEST_DIR/api-keys" --id labels --scopes outcomes:write 2>/dev/null)
port=$(fs_free_port)
fs_bg ingest "$INGEST" --listen-port="$port" --pii-secret-file="$FS_TEST_DIR/pii.secret" \
    --keys-file="$FS_TEST_DIR/api-keys"
fs_wait_for 30 curl -sf "http://127.0.0.1:$port/ready"
G=99999999-0000-4000-8000-000000000001
label() { # label IDEMPOTENCY_KEY BODY: prints the outcome_id of the 202
    local body
    body=$(curl -s -w '\n%{http_code}' -X POST -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: $1" --data-binary "$2" "http://127.0.0.1:$port/api/v1/payments/$G/outcome")
    [[ "${body##*$'\n'}" == 202 ]] || fs_fail "outcome post: $body"
    sed -n 's/.*"outcome_id":"\([^"]*\)".*/\1/p' <<<"${body%$'\n'*}"
}
oid=$(label case-7 '{"outcome":"confirmed_fraud","reason":"cardholder dispute"}')
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE outcome_id = '$oid'" 1
fs_assert_eq "$oid" "$(label case-7 '{"outcome":"legitimate","reason":"cardholder dispute"}')" "retry with another outcome: outcome_id"
fs_assert_eq "$oid" "$(label case-7 '{"outcome":"confirmed_fraud","reason":"cardholder dispute"}')" "identical retry: outcome_id"
label case-7 '{"outcome":"confirmed_fraud","reason":"dispute, called again"}' >/dev/null
label case-8 '{"outcome":"chargeback"}' >/dev/null # G's partition: consumed after the retries
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id = '$G' AND outcome = 'chargeback'" 1
fs_wait_for 30 "fs_topic_dump payment_outcomes.dlq | grep -q dlq_reason=outcome_conflict"
sleep 1
fs_assert_eq "confirmed_fraud|cardholder dispute|labels" "$(fs_psql "SELECT outcome || '|' || reason || '|' || source FROM outcomes WHERE outcome_id = '$oid'")" "the first label stands"
fs_assert_eq 2 "$(fs_psql "SELECT count(*) FROM outcomes WHERE payment_id = '$G'")" "G's labels (the first and the chargeback)"
dl=$(fs_topic_dump payment_outcomes.dlq | grep -F "$oid" || true)
fs_assert_eq 1 "$(grep -c . <<<"$dl")" "dead letters under the retried outcome_id (the identical retries have none)"
[[ "$dl" == *'"outcome":"legitimate"'* && "$dl" == *dlq_reason=outcome_conflict* &&
   "$dl" == *'dlq_error=outcome_id: already stands for another outcome of this payment'* &&
   "$dl" == *source_topic=payment_outcomes,source_partition=*,source_offset=*,dlq_time=* &&
   "$dl" == *outcome_id=$oid* ]] || fs_fail "dead letter of the conflicting retry: $dl"
conflict_log() { grep '"event":"outcome_conflict"' "$FS_TEST_DIR/scorer2.log" | grep '"level":"error"' | grep -F "\"outcome_id\":\"$1\""; }
line=$(conflict_log "$oid")
[[ "$line" == *'"outcome":"legitimate"'* && "$line" == *'"first_outcome":"confirmed_fraud"'* &&
   "$line" == *"\"first_payment_id\":\"$G\""* ]] || fs_fail "outcome_conflict log line: $line"
fs_wait_for 20 '[[ $(dead_letters $admin2 outcome_conflict payment_outcomes) == 1 ]]'
echo "ok: a retry with another outcome under the same Idempotency-Key was dead-lettered as outcome_conflict"

# 9. Produced directly, on one partition (in order, likely one batch): under one new outcome_id,
#    legitimate first, then confirmed_fraud (which the insert's primary key order would have
#    kept), a label of another payment, and legitimate again later (a redelivery). The first
#    stands; the second and third are conflicts. PostgreSQL logs the statements meanwhile: the
#    look-up of the standing label and the claim of the payments' pending labels get each id once
#    however many labels name it (array literals, fs_uuid_array_literal).
X2=0f0f0f0f-0000-4000-8000-0000000000b2
G3=99999999-0000-4000-8000-000000000003
G4=99999999-0000-4000-8000-000000000004
fs_psql "ALTER SYSTEM SET log_statement = 'all'" && fs_psql "SELECT pg_reload_conf()" >/dev/null
logged_from=$(($(wc -l <"$FS_PG_LOG") + 1))
{ outcome "$G3" legitimate $((T + 60000)) "$X2"
  outcome "$G3" confirmed_fraud $((T + 60000)) "$X2"
  outcome "$G4" legitimate $((T + 60000)) "$X2"
  outcome "$G3" legitimate $((T + 120000)) "$X2"; } | kcat -b "$FS_BROKERS" -P -t payment_outcomes -p 0 -K:
fs_wait_for 60 "(( \$(fs_topic_dump payment_outcomes.dlq | grep -F '$X2' | grep -c dlq_reason=outcome_conflict) >= 2 ))"
sleep 1
fs_assert_eq "$G3|legitimate" "$(fs_psql "SELECT payment_id || '|' || outcome FROM outcomes WHERE outcome_id = '$X2'")" "in one batch: the first label stands"
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM outcomes WHERE payment_id IN ('$G3', '$G4')")" "labels stored under the reused outcome_id"
dl=$(fs_topic_dump payment_outcomes.dlq | grep -F "$X2" || true)
fs_assert_eq 2 "$(grep -c . <<<"$dl")" "dead letters under the reused outcome_id"
grep -F '"outcome":"confirmed_fraud"' <<<"$dl" | grep -q 'already stands for another outcome of this payment' ||
    fs_fail "the conflicting outcome's dead letter: $dl"
grep -F "\"payment_id\":\"$G4\"" <<<"$dl" | grep -q 'already stands for a label of another payment_id' ||
    fs_fail "the other payment's dead letter: $dl"
fs_assert_eq 2 "$(conflict_log "$X2" | grep -F "\"first_payment_id\":\"$G3\"" | grep -c '"first_outcome":"legitimate"')" "outcome_conflict lines naming the first label"
fs_psql "ALTER SYSTEM RESET log_statement" && fs_psql "SELECT pg_reload_conf()" >/dev/null
arrays=$(tail -n "+$logged_from" "$FS_PG_LOG" | grep -F "parameters: \$1 = '{" || true)
for id in "$X2" "$G3"; do
    grep -qF "$id" <<<"$arrays" || fs_fail "no array parameter names $id: the check proves nothing"
    twice=$(awk -v id="$id" 'gsub(id, "&") > 1 { print; exit }' <<<"$arrays")
    [[ -z "$twice" ]] || fs_fail "an array parameter names $id more than once: $twice"
done
echo "ok: the labels' ids were sent once each"

# 10. The row-by-row path (a row PostgreSQL refuses, step 7's constraint, fails the batch as
#     data): a conflict there is dead-lettered too, beside the db_rejected one.
X3=0f0f0f0f-0000-4000-8000-0000000000b3
G5=99999999-0000-4000-8000-000000000005
{ printf '%s:{"schema_version":1,"payment_id":"%s","outcome":"chargeback","reason":"refuse-me","known_at":"%s","source":"test"}\n' \
      "$G5" "$G5" "$(iso $((T + 86400000)))"
  outcome "$G5" chargeback $((T + 60000)) "$X3"
  outcome "$G5" false_positive $((T + 60000)) "$X3"; } | kcat -b "$FS_BROKERS" -P -t payment_outcomes -p 0 -K:
fs_wait_for 60 "fs_topic_dump payment_outcomes.dlq | grep -F '$X3' | grep -q dlq_reason=outcome_conflict"
sleep 1
fs_assert_eq "chargeback" "$(fs_psql "SELECT string_agg(outcome, ',') FROM outcomes WHERE payment_id = '$G5'")" "row by row: the first label stands"
fs_assert_eq 1 "$(fs_topic_dump payment_outcomes.dlq | grep -F "$X3" | grep -c '"outcome":"false_positive"')" "row by row: the conflict's dead letter"
fs_assert_eq 2 "$(fs_topic_dump payment_outcomes.dlq | grep -c 'refuse-me')" "db_rejected dead letters (step 7's and this one)"
fs_wait_for 20 '[[ $(dead_letters $admin2 outcome_conflict payment_outcomes) == 4 ]]'
fs_assert_eq 2 "$(dead_letters "$admin2" db_rejected payment_outcomes)" "db_rejected outcome dead letters (steps 7 and 10)"
fs_assert_eq 4 "$(grep '"event":"outcome_conflict"' "$FS_TEST_DIR/scorer2.log" | grep -c '"level":"error"')" "outcome_conflict error lines"
echo "ok: outcome ids reused within a batch and on the row-by-row path were dead-lettered as outcome_conflict"

# 11. An outcome message that is not JSON: undecodable, under the outcomes topic's series; the
#     raw_payments series of that reason stays 0 (the payment alerts leave the outcomes topic out).
echo 'u:not json' | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 "fs_topic_dump payment_outcomes.dlq | grep -q dlq_reason=undecodable"
fs_wait_for 20 '[[ $(dead_letters $admin2 undecodable payment_outcomes) == 1 ]]'
fs_assert_eq 0 "$(dead_letters "$admin2" undecodable raw_payments)" "raw_payments' undecodable dead letters"
echo "ok: every outcome dead letter is counted by reason under topic=payment_outcomes"
