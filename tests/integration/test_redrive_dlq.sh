#!/usr/bin/env bash
# fraudshield-redrive end to end. While a scorer runs, PostgreSQL refuses some valid payments as
# data (a test-only CHECK constraint: merchant m-3): they land on raw_payments.dlq as db_rejected,
# beside two invalid_payment dead letters (amount_minor 0). Then the fix (the constraint dropped):
# - a --dry-run --reason db_rejected reports them and changes nothing;
# - a run whose deliveries fail (-X message.timeout.ms=1) exits 1 and commits nothing;
# - --reason db_rejected re-drives the four: every payment is then stored exactly once; the
#   invalid_payment ones are left alone; the re-driven messages carry the original key, value and
#   headers (no dlq_*/source_* headers), redrive_count=1 and redriven_at, on the partition of their
#   original (same partitioner as ingest);
# - a second run produces nothing (the DLQ offsets were committed);
# - a dead letter re-driven max-redrives times already is not produced again, and one without a
#   source_topic is skipped as no_source; neither value appears in the logs.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup redrive
fs_pg_start
fs_broker_start 3
gen="$REPO/tests/integration/gen_raw_payments.sh"
run=$((RANDOM + 1000))
raw() { fs_topic_count raw_payments; }

# redrive NAME ARGS...: one run of the tool; stdout in NAME.out, logs in NAME.log, status in $rc.
redrive() {
    local name=$1
    shift
    rc=0
    timeout 120 "$BUILD/bin/fraudshield-redrive" "$@" >"$FS_TEST_DIR/$name.out" \
        2>"$FS_TEST_DIR/$name.log" || rc=$?
}
summary() { grep '^redrive read=' "$FS_TEST_DIR/$1.out" || true; }

fs_bg scorer env FS_SCORER_ID=scorer-redrive "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"started"' "$FS_TEST_DIR/scorer.log" # tables exist
fs_psql "ALTER TABLE payments ADD CONSTRAINT test_redrive CHECK (merchant_id <> 'm-3')"

# 60 valid payments (4 of merchant m-3), produced like ingest does (key = country, murmur2), with
# an extra header that must survive the round trip; two invalid ones.
n=60
bash "$gen" "$run" "$n" 1000 >"$FS_TEST_DIR/valid.txt"
grep -F '"merchant_id":"m-3"' "$FS_TEST_DIR/valid.txt" >"$FS_TEST_DIR/refused.txt"
refused=$(wc -l <"$FS_TEST_DIR/refused.txt")
fs_assert_eq 4 "$refused" "payments the constraint refuses"
kcat -b "$FS_BROKERS" -P -t raw_payments -K: -X partitioner=murmur2_random \
    -H origin=redrive-test -H schema_version=1 <"$FS_TEST_DIR/valid.txt"
head -n 2 "$FS_TEST_DIR/valid.txt" |
    sed -e 's/"amount_minor":[0-9]*/"amount_minor":0/' -e 's/-8000-0000/-8000-9999/' |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K: -H origin=redrive-test
fs_wait_for 90 fs_rows_at_least decisions $((n - refused))
fs_wait_for 60 fs_topic_has raw_payments.dlq $((refused + 2))
sleep 1
fs_assert_eq $((n - refused)) "$(fs_psql 'SELECT count(*) FROM payments')" "payments stored before the fix"
fs_assert_eq $((refused + 2)) "$(fs_topic_count raw_payments.dlq)" "dead letters"
fs_assert_eq "$refused" "$(fs_topic_dump raw_payments.dlq | grep -c 'dlq_reason=db_rejected,')" "db_rejected dead letters"
raw0=$(raw)
fs_assert_eq $((n + 2)) "$raw0" "raw_payments before the re-drive"

# The fix.
fs_psql "ALTER TABLE payments DROP CONSTRAINT test_redrive"

# 1. A dry run shows what would go, and changes nothing.
redrive dry --dry-run --reason db_rejected
fs_assert_eq 0 "$rc" "dry run exit status"
fs_assert_eq "redrive read=6 produced=0 skipped=2 would_produce=4 filtered=2 no_source=0 max_redrives=0 no_value=0 reason:db_rejected=4 reason:invalid_payment=2 dry_run=true" \
    "$(summary dry)" "dry run summary"
grep -qE '^db_rejected +raw_payments +would_produce +4$' "$FS_TEST_DIR/dry.out" ||
    fs_fail "dry run: no 'db_rejected raw_payments would_produce 4' row in: $(cat "$FS_TEST_DIR/dry.out")"
grep -qE '^invalid_payment +raw_payments +filtered +2$' "$FS_TEST_DIR/dry.out" ||
    fs_fail "dry run: no 'invalid_payment raw_payments filtered 2' row"
sleep 2
fs_assert_eq "$raw0" "$(raw)" "raw_payments after the dry run"
fs_assert_eq $((n - refused)) "$(fs_psql 'SELECT count(*) FROM payments')" "payments after the dry run"

# 2. Deliveries that fail (every message times out): exit 1, and no DLQ offset is committed (the
#    next run reads all six again).
redrive failing --reason db_rejected -X message.timeout.ms=1 -X linger.ms=0
fs_assert_eq 1 "$rc" "exit status when deliveries fail"
grep -q '"event":"delivery_failed"' "$FS_TEST_DIR/failing.log" || fs_fail "no delivery_failed logged"
fs_assert_eq "redrive read=0 produced=0 skipped=0 filtered=0 no_source=0 max_redrives=0 no_value=0" \
    "$(summary failing)" "summary of the failed run (nothing committed)"

# 3. The re-drive.
redrive run1 --reason db_rejected
fs_assert_eq 0 "$rc" "re-drive exit status"
fs_assert_eq "redrive read=6 produced=4 skipped=2 filtered=2 no_source=0 max_redrives=0 no_value=0 reason:db_rejected=4 reason:invalid_payment=2" \
    "$(summary run1)" "re-drive summary (all six read: neither the dry run nor the failed run committed)"
fs_wait_for 60 fs_rows_at_least payments "$n"
sleep 2 # a duplicate row or a new dead letter would show by now
fs_assert_eq "$n|$n" "$(fs_psql 'SELECT count(*), count(DISTINCT payment_id) FROM payments')" "payments rows (each once)"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions rows"
expected=$(sed 's/.*"payment_id":"\([^"]*\)".*/\1/' "$FS_TEST_DIR/valid.txt" | sort)
[[ "$expected" == "$(fs_psql 'SELECT payment_id FROM payments ORDER BY 1')" ]] ||
    fs_fail "the stored payment ids differ from the valid ones produced"
echo "ok: every valid payment is stored, the re-driven ones included"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM payments WHERE payment_id::text LIKE '%-8000-9999%'")" "invalid payments stored"
fs_assert_eq $((refused + 2)) "$(fs_topic_count raw_payments.dlq)" "dead letters after the re-drive"

# The re-driven messages on raw_payments: original key, value bytes and headers; no DLQ headers.
fs_topic_dump raw_payments >"$FS_TEST_DIR/raw.tsv"
grep -F 'redrive_count=' "$FS_TEST_DIR/raw.tsv" >"$FS_TEST_DIR/redriven.tsv" || true
# the failed run may have delivered some before failing: distinct values count
fs_assert_eq "$refused" "$(cut -f5 "$FS_TEST_DIR/redriven.tsv" | sort -u | wc -l)" "distinct re-driven messages"
[[ "$(sed 's/^[^:]*://' "$FS_TEST_DIR/refused.txt" | sort)" == "$(cut -f5 "$FS_TEST_DIR/redriven.tsv" | sort -u)" ]] ||
    fs_fail "the re-driven values are not the refused payments' bytes"
echo "ok: the re-driven values are the refused payments, byte for byte"
fs_topic_dump raw_payments.dlq >"$FS_TEST_DIR/dlq.tsv"
while IFS=$'\t' read -r part _ key hdrs value; do
    [[ ",$hdrs," == *",redrive_count=1,"* ]] || fs_fail "re-driven message without redrive_count=1: $hdrs"
    [[ ",$hdrs," == *",redriven_at=20"*"Z,"* ]] || fs_fail "re-driven message without redriven_at: $hdrs"
    [[ ",$hdrs," == *",origin=redrive-test,schema_version=1,"* ]] || fs_fail "original headers lost: $hdrs"
    [[ ",$hdrs," != *",dlq_"* && ",$hdrs," != *",source_"* ]] || fs_fail "DLQ headers left on a re-driven message: $hdrs"
    orig=$(grep -F "$value" "$FS_TEST_DIR/dlq.tsv")
    fs_assert_eq "$(cut -f3 <<<"$orig")" "$key" "re-driven key"
    [[ "$(cut -f4 <<<"$orig")" == *"source_partition=$part,"* ]] ||
        fs_fail "re-driven to partition $part, its original was not there: $(cut -f4 <<<"$orig")"
done <"$FS_TEST_DIR/redriven.tsv"
echo "ok: re-driven messages keep key, partition and headers; redrive_count=1, no dlq_*/source_*"
if grep -q '"amount_minor"' "$FS_TEST_DIR"/run1.log "$FS_TEST_DIR"/dry.log; then
    fs_fail "a message value in the tool's logs"
fi

# 4. A second run: nothing left to do.
raw1=$(raw)
redrive run2 --reason db_rejected
fs_assert_eq 0 "$rc" "second run exit status"
fs_assert_eq "redrive read=0 produced=0 skipped=0 filtered=0 no_source=0 max_redrives=0 no_value=0" "$(summary run2)" "second run summary"
sleep 1
fs_assert_eq "$raw1" "$(raw)" "raw_payments after the second run"

# 5. A poison message (re-driven max-redrives times already) and one without source_topic.
printf 'DE:{"poison":"value-marker-7f3a"}\n' |
    kcat -b "$FS_BROKERS" -P -t raw_payments.dlq -K: -H dlq_reason=db_rejected \
        -H source_topic=raw_payments -H redrive_count=3 -H payment_id=aaaaaaaa-0000-4000-8000-00000000beef
printf 'DE:{"orphan":"value-marker-7f3a"}\n' |
    kcat -b "$FS_BROKERS" -P -t raw_payments.dlq -K: -H dlq_reason=undecodable
redrive run3
fs_assert_eq 0 "$rc" "third run exit status"
fs_assert_eq "redrive read=2 produced=0 skipped=2 filtered=0 no_source=1 max_redrives=1 no_value=0 reason:db_rejected=1 reason:undecodable=1" \
    "$(summary run3)" "poison and source-less dead letters"
grep -q '"event":"redrive_limit".*"payment_id":"aaaaaaaa-0000-4000-8000-00000000beef"' "$FS_TEST_DIR/run3.log" ||
    fs_fail "the poison message was not logged"
grep -q '"event":"redrive_no_source"' "$FS_TEST_DIR/run3.log" || fs_fail "the source-less message was not logged"
if grep -q 'value-marker' "$FS_TEST_DIR/run3.log"; then fs_fail "a message value in the tool's logs"; fi
sleep 1
fs_assert_eq "$raw1" "$(raw)" "raw_payments after the third run"
echo "redrive ok"
