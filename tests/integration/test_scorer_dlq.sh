#!/usr/bin/env bash
# Scorer dead-letter path: valid events, then a malformed one (not JSON), an invalid one
# (amount_minor 0) and one PostgreSQL refuses (a test-only CHECK constraint: the batch fails, is
# retried, then persisted row by row), then more valid events, all produced straight to
# raw_payments on one key (one partition, in order). The three bad ones must be on raw_payments.dlq
# (reasons undecodable, invalid_payment, db_rejected) with their original bytes and
# headers plus dlq_reason/dlq_error/source_topic/source_partition/source_offset/dlq_time; every
# valid one must be in payments and decisions and on processed_payments (the stream goes on after
# the bad ones); a restarted scorer must not process anything again (the offsets were committed).
# The valid events carry a pii_key_id header that changes half-way, then flaps: one pii_key_changed
# line and fs_scorer_pii_key_info showing the last key.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_dlq
fs_pg_start
fs_broker_start 3
gen="$REPO/tests/integration/gen_raw_payments.sh"
run=$((RANDOM + 1000))
# The dev broker's group coordinator holds every rebalance after the first for the session timeout
# (librdkafka 2.0.2 mock): a short one keeps the restart below quick.
export KAFKA_SESSION_TIMEOUT_MS=6000 KAFKA_HEARTBEAT_INTERVAL_MS=500

# The scorer starts first (a new group begins at the earliest offset either way).
admin=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=scorer-dlq FS_RULES_FILE="$REPO/schemas/rules/default.json" \
    FS_ADMIN_PORT="$admin" "$BUILD/bin/fraudshield-scorer"

bash "$gen" "$run" 40 1000 DE >"$FS_TEST_DIR/valid.txt"
# A payment valid on the wire that the database refuses: merchant m-reject.
fs_wait_for 60 grep -q '"event":"started"' "$FS_TEST_DIR/scorer.log" # tables exist
fs_psql "ALTER TABLE payments ADD CONSTRAINT test_reject CHECK (merchant_id <> 'm-reject')"
# The valid ones carry ingest's pseudonymization key id: key A for the first 21, then key B (a
# rotation, or two ingest instances with different secrets); one bad one a malformed id.
key_a=aaaaaaaaaaaaaaaa key_b=0123456789abcdef
# the first payment twice (a producer retry): one row, never counted twice
{ head -n 20 "$FS_TEST_DIR/valid.txt"; head -n 1 "$FS_TEST_DIR/valid.txt"; } |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H pii_key_id=$key_a
printf 'DE:this is not json {\n' |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H origin=dlq-test -H ingest_ts=1 -H pii_key_id=NOT-A-KEY-ID-XYZ
head -n 1 "$FS_TEST_DIR/valid.txt" |
    sed -e 's/"amount_minor":[0-9]*/"amount_minor":0/' -e 's/-8000-0000/-8000-9999/' |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H origin=dlq-test
head -n 1 "$FS_TEST_DIR/valid.txt" |
    sed -e 's/"merchant_id":"[^"]*"/"merchant_id":"m-reject"/' -e 's/-8000-0000/-8000-8888/' |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H origin=dlq-test
# raw personal data where a digest belongs (not made by ingest): dead-lettered without its value
head -n 1 "$FS_TEST_DIR/valid.txt" |
    sed -e 's/"user_id"/"email":"bob@example.com","user_id"/' -e 's/-8000-0000/-8000-7777/' |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H origin=dlq-test
# key B for 10, then A and B alternating (instances with different keys): one pii_key_changed line
# (A -> B), the flapping only counted (at most one line a minute), B last.
tail -n 20 "$FS_TEST_DIR/valid.txt" | sed -n 1,10p | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H pii_key_id=$key_b
i=0
tail -n 10 "$FS_TEST_DIR/valid.txt" | while IFS= read -r line; do
    i=$((i + 1))
    k=$key_b
    ((i % 2 == 0)) || k=$key_a
    printf '%s\n' "$line" | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H pii_key_id=$k
done
n=40

# (a function: fs_wait_for re-runs it; a $(...) argument would be evaluated only once)
fs_wait_for 60 fs_rows_at_least decisions "$n"
fs_wait_for 30 fs_topic_has raw_payments.dlq 4
fs_wait_for 30 fs_topic_has processed_payments "$n"
sleep 1 # anything extra (a duplicate, a third dead letter) would show by now

fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM payments')" "payments rows"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions rows"
expected=$(sed 's/.*"payment_id":"\([^"]*\)".*/\1/' "$FS_TEST_DIR/valid.txt" | sort)
[[ "$expected" == "$(fs_psql 'SELECT payment_id FROM payments ORDER BY 1')" ]] ||
    fs_fail "the persisted payment ids differ from the valid ones produced"
echo "ok: the persisted payment ids are exactly the valid ones produced"
distinct_processed() {
    timeout 60 kcat -b "$FS_BROKERS" -C -t processed_payments -o beginning -e -q -f '%k\n' | sort -u | wc -l
}
fs_assert_eq "$n" "$(distinct_processed)" "payments on processed_payments"
fs_assert_eq "$((2 * n))" "$(fs_psql 'SELECT count(*) FROM velocity_events')" "velocity events (user + card, once each)"
fs_assert_eq 4 "$(fs_topic_count raw_payments.dlq)" "dead letters"

# Where the bad messages were: partition and offset on raw_payments.
fs_topic_dump raw_payments >"$FS_TEST_DIR/raw.tsv"
fs_topic_dump raw_payments.dlq >"$FS_TEST_DIR/dlq.tsv"
bad_json=$(grep -P '\tthis is not json \{$' "$FS_TEST_DIR/raw.tsv" | cut -f1,2)
bad_amount=$(grep -F '"amount_minor":0' "$FS_TEST_DIR/raw.tsv" | cut -f1,2)
bad_db=$(grep -F '"merchant_id":"m-reject"' "$FS_TEST_DIR/raw.tsv" | cut -f1,2)
bad_pii=$(grep -F '"email":"bob@example.com"' "$FS_TEST_DIR/raw.tsv" | cut -f1,2)
[[ -n "$bad_json" && -n "$bad_amount" && -n "$bad_db" ]] || fs_fail "the bad messages are not on raw_payments"

# check_dead_letter REASON PARTITION<TAB>OFFSET
check_dead_letter() {
    local reason=$1 part=${2%%$'\t'*} off=${2##*$'\t'} line hdrs
    line=$(grep -F "dlq_reason=$reason," "$FS_TEST_DIR/dlq.tsv") ||
        fs_fail "no dead letter with dlq_reason=$reason"
    hdrs=$(cut -f4 <<<"$line")
    for h in "source_topic=raw_payments" "source_partition=$part" "source_offset=$off" \
        "origin=dlq-test" "dlq_time=20" "dlq_error="; do
        [[ ",$hdrs," == *",$h"* ]] || fs_fail "dead letter $reason: header $h missing in: $hdrs"
    done
    fs_assert_eq DE "$(cut -f3 <<<"$line")" "dead letter $reason keeps the original key"
    echo "ok: dead letter $reason from partition $part offset $off"
}
check_dead_letter undecodable "$bad_json"
check_dead_letter invalid_payment "$bad_amount"
check_dead_letter db_rejected "$bad_db"
check_dead_letter raw_personal_data "$bad_pii"
# Each dead letter's headers (column 4) name the cause; its payload (column 5) is the original.
dl_field() { grep -F "dlq_reason=$1," "$FS_TEST_DIR/dlq.tsv" | cut -f"$2"; }
dl_field db_rejected 4 | grep -qF 'dlq_error=' || fs_fail "the db_rejected dead letter has no dlq_error"
dl_field db_rejected 4 | grep -qF 'test_reject' ||
    fs_fail "the db_rejected dead letter does not carry the database's error"
grep -q '"event":"db_retry"' "$FS_TEST_DIR/scorer.log" || fs_fail "the refused batch was not retried"
fs_assert_eq 'this is not json {' "$(dl_field undecodable 5)" "the undecodable dead letter's payload (the original bytes)"
fs_assert_eq "" "$(dl_field raw_personal_data 5)" "the raw_personal_data dead letter's payload (left out)"
dl_field raw_personal_data 4 | grep -qF 'dlq_value_omitted=' || fs_fail "no dlq_value_omitted on the raw_personal_data dead letter"
if grep -q 'bob@example.com' "$FS_TEST_DIR/dlq.tsv" "$FS_TEST_DIR/scorer.log"; then fs_fail "the raw email was copied"; fi
dl_field invalid_payment 4 | grep -qF 'dlq_error=amount_minor: must be > 0' ||
    fs_fail "the invalid_payment dead letter does not name the field: $(dl_field invalid_payment 4)"
grep -q '"event":"dead_letter"' "$FS_TEST_DIR/scorer.log" || fs_fail "no dead_letter log line"

# The key id change: logged once (warn, both ids), and the info gauge shows the last key only.
grep -q "\"event\":\"pii_key_seen\".*\"pii_key_id\":\"$key_a\"" "$FS_TEST_DIR/scorer.log" ||
    fs_fail "no pii_key_seen line for the first key"
fs_assert_eq 1 "$(grep -c '"event":"pii_key_changed"' "$FS_TEST_DIR/scorer.log")" "pii_key_changed lines"
grep '"event":"pii_key_changed"' "$FS_TEST_DIR/scorer.log" |
    grep "\"level\":\"warn\"" | grep "\"old_pii_key_id\":\"$key_a\"" | grep -q "\"new_pii_key_id\":\"$key_b\"" ||
    fs_fail "pii_key_changed: $(grep '"event":"pii_key_changed"' "$FS_TEST_DIR/scorer.log")"
fs_assert_eq "fs_scorer_pii_key_info{key_id=\"$key_b\"} 1" \
    "$(curl -fsS "http://127.0.0.1:$admin/metrics" | grep '^fs_scorer_pii_key_info{' || true)" \
    "the key id series (the last key only; a malformed id ignored)"

# Output contract: key = payment_id, headers schema_version/payment_id/ingest_ts, JSON v1.
fs_topic_dump processed_payments >"$FS_TEST_DIR/processed.tsv"
first=$(head -n 1 "$FS_TEST_DIR/processed.tsv")
key=$(cut -f3 <<<"$first")
[[ "$(cut -f4 <<<"$first")" == *"payment_id=$key"* ]] || fs_fail "processed header payment_id != key"
[[ "$(cut -f4 <<<"$first")" == *"ingest_ts="* ]] || fs_fail "processed message without ingest_ts"
for field in '"schema_version":1' "\"payment_id\":\"$key\"" '"decision":"' '"reasons":[' \
    '"rules_version":"' '"decided_at":"'; do
    [[ "$(cut -f5 <<<"$first")" == *"$field"* ]] || fs_fail "processed message lacks $field"
done

# A clean stop commits; a restarted scorer finds nothing to redo.
fs_kill scorer TERM
fs_wait_exit scorer 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer exit status on SIGTERM"
grep -q '"event":"stopped"' "$FS_TEST_DIR/scorer.log" || fs_fail "no clean stop logged"
cp "$REPO/schemas/rules/default.json" "$FS_TEST_DIR/rules.json"
fs_bg scorer2 env FS_SCORER_ID=scorer-dlq-2 "$BUILD/bin/fraudshield-scorer" \
    --rules-file "$FS_TEST_DIR/rules.json"
fs_wait_for 30 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer2.log"
before=$(fs_topic_count processed_payments)
fs_sentinels 3 >/dev/null
fs_wait_for 30 fs_topic_has processed_payments $((before + 3))
sleep 1 # anything else on processed_payments would have been produced with the sentinels
fs_assert_eq $((before + 3)) "$(fs_topic_count processed_payments)" "processed_payments after a restart (the 3 sentinels only)"
fs_assert_eq 4 "$(fs_topic_count raw_payments.dlq)" "dead letters after a restart"

# SIGHUP: an invalid rules file is refused (the old rules stay), a valid one replaces them.
echo '{"version": "broken"' >"$FS_TEST_DIR/rules.json"
fs_kill scorer2 HUP
fs_wait_for 10 grep -q '"event":"rules_reload_failed"' "$FS_TEST_DIR/scorer2.log"
sed 's/"version": "[^"]*"/"version": "reloaded-1"/' "$REPO/schemas/rules/default.json" >"$FS_TEST_DIR/rules.json"
fs_kill scorer2 HUP
fs_wait_for 10 grep -q '"event":"rules_reloaded".*"version":"reloaded-1+' "$FS_TEST_DIR/scorer2.log"
fs_alive scorer2 || fs_fail "the scorer died on a rules reload"
echo "ok: rules reload (bad file refused, good file active)"

# A message just under message.max.bytes that is not a payment: its dead letter (the same bytes plus
# the dlq_* headers) is over the limit. It must not stall the worker (every retry would fail the
# same way): the dead letter goes without its value, marked dlq_value_omitted, and the payment
# behind it on the same partition is scored.
head -c 999800 /dev/zero | tr '\0' x >"$FS_TEST_DIR/big"
kcat -b "$FS_BROKERS" -P -t raw_payments -k DE "$FS_TEST_DIR/big"
bash "$gen" "$((run + 1))" 1 1000 DE | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
after_big=$(bash "$gen" "$((run + 1))" 1 1000 DE | sed 's/.*"payment_id":"\([^"]*\)".*/\1/')
decided() { [[ $(fs_psql "SELECT count(*) FROM decisions WHERE payment_id = '$after_big'") == 1 ]]; }
fs_wait_for 60 decided
fs_wait_for 30 fs_topic_has raw_payments.dlq 4
big_dl=$(fs_topic_dump raw_payments.dlq | grep 'dlq_value_omitted=' || true)
[[ "$big_dl" == *dlq_value_omitted=999800* && "$big_dl" == *dlq_reason=undecodable* ]] ||
    fs_fail "the oversized dead letter: $(cut -c1-300 <<<"$big_dl")"
fs_assert_eq "" "$(cut -f5 <<<"$big_dl")" "the oversized dead letter's value"
grep -q '"event":"dead_letter_value_omitted"' "$FS_TEST_DIR/scorer2.log" || fs_fail "no dead_letter_value_omitted line"
echo "ok: an oversized dead letter goes without its value; the partition goes on"
echo "scorer dlq ok"
