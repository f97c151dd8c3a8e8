#!/usr/bin/env bash
# Orphan labels (pending for ever: their payment was deleted by retention before they came, or
# predates FraudShield) do not slow the outcome consumer down (scorer/pending.h, docs/topics.md):
#   1. a scorer scores 30 payments; a label of a payment B not in PostgreSQL is stored (pending);
#      then 20,000 orphan labels, received before it, are inserted by SQL;
#   2. B's payment is inserted by SQL, as by another worker at the same time as the label (neither
#      transaction saw the other: no batch of this scorer meets B): a re-try round, walking the
#      20,000 orphans in bounded steps, applies B's label (links), and then reports 20,000 pending
#      (fs_scorer_outcomes_pending, refreshed at the end of each round);
#   3. 30 labels of scored payments, sent one at a time, are each applied (waited for) while a new
#      payment is scored beside each; meanwhile PostgreSQL's own counters of the rows read from
#      outcomes (pg_stat_user_tables.seq_tup_read + pg_stat_user_indexes.idx_tup_read) grow by far
#      less than 30 x 20,000: a label batch claims only its payments' labels (primary key probes),
#      and only the re-try rounds, backing off while they apply nothing, read the orphans. Rows
#      read, not time: the check does not depend on the machine's speed;
#   4. the orphans are all still pending, untouched.
# Seen failing with the previous consumer (each batch of labels claimed over all pending labels,
# counted them, and its apply read outcomes whole, twice): step 3 read 3.4 million rows (~5.7 x
# 20,000 per label), and with only the claim fixed 1.2 million (the apply's reads); this consumer
# ~31,000 (one re-try round).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_outcome_orphans
fs_pg_start
fs_broker_start 6
admin=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=orphans FS_ADMIN_PORT="$admin" "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 curl -sf "http://127.0.0.1:$admin/ready"

T=1793613600000 # 2026-11-02T10:00:00Z
iso() { date -u -d "@$(($1 / 1000))" +%Y-%m-%dT%H:%M:%S.000Z; }
pid() { printf '%08x-0000-4000-8000-%012x' "$1" "$2"; } # pid KIND N: a payment id
event() { # event ID T_MS
    printf 'DE:{"schema_version":1,"payment_id":"%s","user_id":"u-%s","merchant_id":"term-9","amount_minor":2500,"currency":"EUR","payment_method":"card","country":"DE","event_time":"%s","ingest_time":"%s"}\n' \
        "$1" "${1:0:8}" "$(iso "$2")" "$(iso "$2")"
}
outcome() { # outcome PAYMENT_ID OUTCOME KNOWN_MS
    printf '%s:{"schema_version":1,"payment_id":"%s","outcome":"%s","reason":"test","known_at":"%s","source":"test"}\n' \
        "$1" "$1" "$2" "$(iso "$3")"
}
at_least() { (($(fs_psql "$1") >= $2)); }
metric() { curl -fsS "http://127.0.0.1:$admin/metrics" | awk -v s="$1" '$1 == s { print $2 }'; }
# rows of outcomes read by every session so far (sequential scans and index entries)
reads() { fs_psql "SELECT (SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'outcomes') + (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relname = 'outcomes')"; }
K=30 N=20000
B=$(pid 11 1)

# 1. Payments, a label whose payment is missing, and the orphans (received before it).
for i in $(seq 1 $K); do event "$(pid 1 "$i")" $((T + i * 1000)); done | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 90 at_least "SELECT count(*) FROM decisions" $K
outcome "$B" confirmed_fraud $((T + 60000)) | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id = '$B'" 1
fs_psql "
INSERT INTO outcomes (payment_id, outcome, known_at, received_at)
SELECT md5('orphan' || g)::uuid, 'chargeback', now() - interval '30 days',
       now() - interval '1 hour' + g * interval '1 ms' FROM generate_series(1, $N) g;" >/dev/null

# 2. B's payment appears without a batch of this scorer: only a re-try round can apply its label.
fs_psql "
INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
                      payment_method, event_time, ingest_time, source_partition, source_offset)
VALUES ('$B', 'u-b', 'term-9', 2500, 'EUR', 2, 'card', now(), now(), 0, 0);" >/dev/null
fs_wait_for 300 at_least "SELECT count(*) FROM outcomes WHERE payment_id = '$B' AND applied_at IS NOT NULL" 1
fs_assert_eq "merchant" "$(fs_psql "SELECT string_agg(entity_kind, ',') FROM outcome_links WHERE payment_id = '$B'")" "B's label applied by a re-try round"
fs_wait_for 300 "[[ \$(metric fs_scorer_outcomes_pending) == $N ]]"
echo "ok: a re-try round through $N orphans applied the label; fs_scorer_outcomes_pending $N"

# 3. Labels of scored payments, one at a time, and payments beside them.
r0=$(reads)
for i in $(seq 1 $K); do
    p=$(pid 1 "$i")
    outcome "$p" confirmed_fraud $((T + 3600000)) | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
    event "$(pid 2 "$i")" $((T + 7200000 + i * 1000)) | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
    fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id = '$p' AND applied_at IS NOT NULL" 1
done
fs_wait_for 60 at_least "SELECT count(*) FROM decisions WHERE payment_id::text LIKE '00000002-%'" $K
r1=$(reads)
echo "rows of outcomes read while $K labels were applied beside $N orphans: $((r1 - r0))"
(((r1 - r0) < 10 * N)) ||
    fs_fail "$((r1 - r0)) rows of outcomes read for $K labels: the orphans are read per label batch"
fs_assert_eq $K "$(fs_psql "SELECT count(*) FROM outcomes WHERE payment_id::text LIKE '00000001-%' AND applied_at IS NOT NULL")" "labels applied"
fs_assert_eq 0 "$(grep -c '"event":"outcomes_retry"' "$FS_TEST_DIR/scorer.log" || true)" "outcomes_retry warnings"

# 4. The orphans wait, untouched.
fs_assert_eq $N "$(fs_psql "SELECT count(*) FROM outcomes WHERE applied_at IS NULL")" "pending labels"
fs_kill scorer TERM
fs_wait_exit scorer 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer exit status"
echo PASS
