#!/usr/bin/env bash
# Retention of payment data (scorer/expire.h, docs/operations.md "The scorer's retention"):
#   1. a scorer with payment-retention-days=0 (the default; payment-retention-interval-s 1) scores six payments
#      (three flagged: alerts), labels are applied (links and vault), an analyst resolves one
#      alert (alert_history); then three payments are made 40 days old (decided_at), one 29 days,
#      and two labels without a payment are stored (one received 40 days ago, one now): in 4 s
#      that scorer deletes nothing, its counters stay 0;
#   2. a background session holds one old alert locked (an analyst inside a transaction); two
#      scorers with payment-retention-days=30 start (without the outcome consumer, so that nothing
#      applies the old payments' pending labels before retention meets them), and a backlog of 6000
#      old payments (with decisions, 2000 alerts, 1000 alert_history rows, 1200 applied outcomes and
#      857 pending ones) appears: between them they delete exactly the old payments and everything
#      about them (their counters summed equal the rows that were there: each row once), skip the
#      locked one without waiting or failing, and take it once the lock is gone; the pending labels
#      of the deleted payments and the label received 40 days ago without a payment expire
#      (fs_scorer_outcomes_total{result="expired"}), the recent one stays pending; the payments
#      decided 29 days ago and today are untouched, with their alerts and labels; outcome_links and
#      risk_vault are unchanged; retention_pruned lines, no retention_failed;
#   3. scoring goes on (a third scorer consumes the labels): a new payment with the card of a
#      deleted payment labelled confirmed_fraud is still linked to that fraud (the links outlive the
#      payment); a label for a deleted payment waits (pending) without holding up other labels;
#      resolving a deleted alert says "no alert";
#   4. a failure: a session holds the labels row of a payment made 40 days old FOR UPDATE (DELETE
#      is not SKIP LOCKED): the slices fail on their lock timeout, retention_failed is logged (with
#      "lock timeout"), the connection is usable (a new payment is scored meanwhile), and the
#      payment is deleted with its label once the lock is released.
#   5. raw_payments messages ingested more than 30 days ago consumed again: a deleted payment is
#      dead-lettered "expired", not stored and counted again; a stored one is a redelivery.
# Fails without the retention code (no fs_scorer_retention_deleted_total; nothing deleted), and on
# each of these breakages (tried): a slice that keeps alert_history, alerts locked without SKIP
# LOCKED (the slices wait for the analyst and fail on the lock timeout), a cutoff of 28 days.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_retention
fs_pg_start
fs_broker_start 6
ALERTER="$BUILD/bin/fraudshield-alerter"

h() { printf '%064x' "$1"; } # a 64-hex digest
T=$((($(date +%s) - 7200) * 1000)) # two hours ago, in ms
iso() { date -u -d "@$(($1 / 1000))" +%Y-%m-%dT%H:%M:%S.000Z; }
# event ID CARD AMOUNT_MINOR T_MS: a payment of user u-ID's card digest CARD at terminal term-9
event() {
    printf 'DE:{"schema_version":1,"payment_id":"%s","user_id":"u-%s","merchant_id":"term-9","amount_minor":%s,"currency":"EUR","payment_method":"card","card_fingerprint_digest":"%s","email_digest":"%s","device_id_digest":"%s","country":"DE","event_time":"%s","ingest_time":"%s"}\n' \
        "$1" "${1:0:8}" "$3" "$(h "$2")" "$(h $(($2 + 10)))" "$(h $(($2 + 20)))" "$(iso "$4")" "$(iso "$4")"
}
outcome() { # outcome PAYMENT_ID OUTCOME KNOWN_MS
    printf '%s:{"schema_version":1,"payment_id":"%s","outcome":"%s","reason":"test","known_at":"%s","source":"test"}\n' \
        "$1" "$1" "$2" "$(iso "$3")"
}
at_least() { (($(fs_psql "$1") >= $2)); }
# scorer NAME ENV...: a scorer with its own admin port (ADMIN[NAME])
declare -A ADMIN=()
scorer() {
    local name=$1 port
    shift
    port=$(fs_free_port)
    ADMIN[$name]=$port
    fs_bg "$name" env FS_SCORER_ID="$name" FS_ADMIN_PORT="$port" FS_PAYMENT_RETENTION_INTERVAL_S=1 "$@" \
        "$BUILD/bin/fraudshield-scorer"
    fs_wait_for 60 curl -sf "http://127.0.0.1:$port/ready"
}
metric() { # metric NAME SERIES: its value on scorer NAME's /metrics
    curl -fsS "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print "missing" }'
}
deleted() { # the rows of TABLE both retention scorers deleted
    echo $(($(metric r1 "fs_scorer_retention_deleted_total{table=\"$1\"}") + $(metric r2 "fs_scorer_retention_deleted_total{table=\"$1\"}")))
}
TABLES="payments decisions alerts alert_history outcomes"
counts() { fs_psql "SELECT (SELECT count(*) FROM payments) || ' ' || (SELECT count(*) FROM decisions) || ' ' || (SELECT count(*) FROM alerts) || ' ' || (SELECT count(*) FROM alert_history) || ' ' || (SELECT count(*) FROM outcomes)"; }
links_sum() { fs_psql "SELECT count(*) || ':' || md5(coalesce(string_agg(l::text, ',' ORDER BY l::text), '')) FROM outcome_links l"; }
vault_sum() { fs_psql "SELECT count(*) || ':' || md5(coalesce(string_agg(v::text, ',' ORDER BY v::text), '')) FROM risk_vault v"; }

O1=00000001-0000-4000-8000-0000000000a1 # old, flagged, labelled confirmed_fraud (card 1)
O2=00000002-0000-4000-8000-0000000000a2 # old, allowed, labelled legitimate
O3=00000003-0000-4000-8000-0000000000a3 # old, flagged, alert resolved by an analyst (and locked)
N1=00000004-0000-4000-8000-0000000000b1 # today, flagged, labelled chargeback
N2=00000005-0000-4000-8000-0000000000b2 # today, allowed
K29=00000006-0000-4000-8000-0000000000c1 # decided 29 days ago: kept
N3=00000007-0000-4000-8000-0000000000b3 # after the deletion, with O1's card
N4=0000000a-0000-4000-8000-0000000000b4 # scored while retention fails on a lock
OX=00000008-0000-4000-8000-0000000000d1 # a label received 40 days ago, no payment: expires
OY=00000009-0000-4000-8000-0000000000d2 # a label received now, no payment: waits

# 1. Scoring and labels with retention off; then some payments become old.
scorer keep
{ event "$O1" 1 150000 "$T"; event "$O2" 2 2500 "$T"; event "$O3" 4 150000 "$T"
  event "$N1" 3 150000 "$T"; event "$N2" 5 2500 "$T"; event "$K29" 6 2500 "$T"; } |
    kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM decisions" 6
{ outcome "$O1" confirmed_fraud $((T + 3600000)); outcome "$O2" legitimate $((T + 3600000))
  outcome "$N1" chargeback $((T + 3600000)); } | kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE applied_at IS NOT NULL" 3
fs_assert_eq "$O1 $O3 $N1" "$(fs_psql "SELECT string_agg(payment_id::text, ' ' ORDER BY payment_id) FROM alerts")" "alerts of the flagged payments"
a3=$(fs_psql "SELECT alert_id FROM alerts WHERE payment_id = '$O3'")
fs_psql "SELECT alert_resolve('$a3', 'ana', 'false_positive', 'checked')" >/dev/null
fs_psql "
UPDATE decisions SET decided_at = now() - interval '40 days' WHERE payment_id IN ('$O1', '$O2', '$O3');
UPDATE decisions SET decided_at = now() - interval '29 days' WHERE payment_id = '$K29';
INSERT INTO outcomes (payment_id, outcome, known_at, received_at)
VALUES ('$OX', 'chargeback', now() - interval '40 days', now() - interval '40 days'),
       ('$OY', 'chargeback', now(), now());" >/dev/null
before=$(counts) links=$(links_sum) vault=$(vault_sum)
echo "rows (payments decisions alerts alert_history outcomes): $before; links $links; vault $vault"
fs_assert_eq "6 6 3 1 5" "$before" "rows before"
sleep 4 # four rounds' time: payment-retention-days=0 runs none
fs_assert_eq "$before" "$(counts)" "rows after 4 s with payment-retention-days=0"
for t in $TABLES; do
    fs_assert_eq 0 "$(metric keep "fs_scorer_retention_deleted_total{table=\"$t\"}")" "keep: $t deleted"
done
! grep -q '"event":"retention_pruned"' "$FS_TEST_DIR/keep.log" || fs_fail "payment-retention-days=0 pruned"
fs_kill keep TERM
fs_wait_exit keep 30

# 2. An analyst holds O3's alert; two scorers with retention on; a backlog of old payments.
fs_bg lock env PGAPPNAME=retention-test-lock psql "$FS_DATABASE_URL" -X -q -c \
    "BEGIN; SELECT 1 FROM alerts WHERE alert_id = '$a3' FOR UPDATE; SELECT pg_sleep(300); COMMIT;"
fs_wait_for 20 at_least "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'retention-test-lock' AND wait_event = 'PgSleep'" 1
scorer r1 FS_PAYMENT_RETENTION_DAYS=30 FS_OUTCOMES_TOPIC=
scorer r2 FS_PAYMENT_RETENTION_DAYS=30 FS_OUTCOMES_TOPIC=
bulk=6000
fs_psql "
INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
                      payment_method, event_time, ingest_time, source_partition, source_offset)
SELECT md5('bulk' || g)::uuid, 'u-bulk', 'm-bulk', 100, 'EUR', 2, 'card', now() - interval '41 days',
       now() - interval '41 days', 0, g FROM generate_series(1, $bulk) g;
INSERT INTO decisions (payment_id, decision, score, reasons, features, rules_version, scorer_id,
                       scoring_latency_us, decided_at)
SELECT md5('bulk' || g)::uuid, CASE WHEN g % 3 = 0 THEN 'review' ELSE 'allow' END, 0, '[]', '{}',
       'test', 'test', 1, now() - interval '40 days' FROM generate_series(1, $bulk) g;
INSERT INTO alerts (alert_id, payment_id, decision, score)
SELECT md5('alert' || g)::uuid, md5('bulk' || g)::uuid, 'review', 40
FROM generate_series(1, $bulk) g WHERE g % 3 = 0;
INSERT INTO alert_history (alert_id, status, changed_by)
SELECT md5('alert' || g)::uuid, 'acknowledged', 'ana' FROM generate_series(1, $bulk) g WHERE g % 6 = 0;
INSERT INTO outcomes (payment_id, outcome, known_at, applied_at)
SELECT md5('bulk' || g)::uuid, 'legitimate', now() - interval '39 days', now() - interval '39 days'
FROM generate_series(1, $bulk) g WHERE g % 5 = 0;
INSERT INTO outcomes (payment_id, outcome, known_at)
SELECT md5('bulk' || g)::uuid, 'chargeback', now() - interval '38 days'
FROM generate_series(1, $bulk) g WHERE g % 7 = 0;" >/dev/null
# O1..O3 with O3 locked, and the backlog: everything but O3 and its alert, history and label-less
# rows; OX and the backlog's pending labels expire
want_p=$((2 + bulk)) want_a=$((1 + bulk / 3)) want_h=$((bulk / 6)) want_x=$((1 + bulk / 7))
want_o=$((2 + bulk / 5 + want_x))
fs_wait_for 90 "(( \$(deleted payments) >= want_p && \$(deleted outcomes) >= want_o ))" # the old code: never
sleep 3 # the locked one is skipped round after round, without an error
fs_assert_eq "$want_p" "$(deleted payments)" "payments deleted while O3's alert is locked"
fs_assert_eq "$want_p" "$(deleted decisions)" "decisions deleted"
fs_assert_eq "$want_a" "$(deleted alerts)" "alerts deleted"
fs_assert_eq "$want_h" "$(deleted alert_history)" "alert_history deleted"
fs_assert_eq "$want_o" "$(deleted outcomes)" "outcomes deleted (labels of deleted payments, the expired one)"
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM payments WHERE payment_id = '$O3'")" "O3 kept while its alert is locked"
fs_assert_eq 2 "$(fs_psql "SELECT (SELECT count(*) FROM alerts WHERE payment_id = '$O3') + (SELECT count(*) FROM alert_history WHERE alert_id = '$a3')")" "O3's alert and history"
echo "deleted by r1: $(metric r1 'fs_scorer_retention_deleted_total{table="payments"}') payments, by r2: $(metric r2 'fs_scorer_retention_deleted_total{table="payments"}')"
fs_psql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'retention-test-lock'" >/dev/null
fs_wait_for 30 "(( \$(deleted payments) == want_p + 1 ))"
sleep 2
fs_assert_eq $((want_p + 1)) "$(deleted payments)" "payments deleted (each once)"
fs_assert_eq $((want_p + 1)) "$(deleted decisions)" "decisions deleted (each once)"
fs_assert_eq $((want_a + 1)) "$(deleted alerts)" "alerts deleted (each once)"
fs_assert_eq $((want_h + 1)) "$(deleted alert_history)" "alert_history deleted (each once)"
fs_assert_eq "$want_o" "$(deleted outcomes)" "outcomes deleted (each once)"
expired() { echo $(($(metric r1 'fs_scorer_outcomes_total{result="expired"}') + $(metric r2 'fs_scorer_outcomes_total{result="expired"}'))); }
fs_assert_eq "$want_x" "$(expired)" "labels expired (pending ones of deleted payments, OX)"
fs_assert_eq "3 3 1 0 2" "$(counts)" "rows left: N1, N2, K29 with N1's alert and label, OY"
fs_assert_eq "$N1 $N2 $K29" "$(fs_psql "SELECT string_agg(payment_id::text, ' ' ORDER BY payment_id) FROM payments JOIN decisions USING (payment_id)")" "payments kept"
fs_assert_eq "$N1:chargeback $OY:chargeback" "$(fs_psql "SELECT string_agg(payment_id || ':' || outcome, ' ' ORDER BY payment_id) FROM outcomes")" "labels kept"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM decisions WHERE decided_at < now() - interval '30 days'")" "decisions older than 30 days"
fs_assert_eq "$links" "$(links_sum)" "outcome_links unchanged"
fs_assert_eq "$vault" "$(vault_sum)" "risk_vault unchanged"
grep -h '"event":"retention_pruned"' "$FS_TEST_DIR/r1.log" "$FS_TEST_DIR/r2.log" | head -n 3
line=$(grep -h '"event":"retention_pruned"' "$FS_TEST_DIR/r1.log" "$FS_TEST_DIR/r2.log" | head -n 1)
for f in '"level":"info"' '"payments":' '"decisions":' '"alerts":' '"alert_history":' '"outcomes":' \
    '"retention_days":30' '"duration_ms":'; do
    [[ "$line" == *"$f"* ]] || fs_fail "retention_pruned line without $f: $line"
done
! grep -h '"event":"retention_failed"\|"level":"error"' "$FS_TEST_DIR/r1.log" "$FS_TEST_DIR/r2.log" ||
    fs_fail "errors while pruning"

# 3. Scoring goes on, the vault remembers O1's fraud, labels of deleted payments wait.
scorer lab
event "$N3" 1 2500 $((T + 5400000)) | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM decisions WHERE payment_id = '$N3'" 1
fs_assert_eq "1|true" "$(fs_psql "SELECT (features->>'vault_card_fraud') || '|' || (reasons @> '[{\"code\":\"CARD_LINKED_TO_FRAUD\"}]') FROM decisions WHERE payment_id = '$N3'")" \
    "N3: its card linked to the deleted payment's fraud"
{ outcome "$O2" chargeback $((T + 7200000)); outcome "$N2" confirmed_fraud $((T + 7200000)); } |
    kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id = '$N2' AND applied_at IS NOT NULL" 1
fs_assert_eq "1|" "$(fs_psql "SELECT count(*) || '|' || coalesce(max(applied_at)::text, '') FROM outcomes WHERE payment_id = '$O2'")" "a label of a deleted payment waits, unapplied"
rc=0
FS_DATABASE_URL="$FS_DATABASE_URL" "$ALERTER" alerts resolve "$a3" --by ana --resolution confirmed_fraud \
    >"$FS_TEST_DIR/resolve.out" 2>&1 || rc=$?
fs_assert_eq 1 "$rc" "resolving a deleted alert: exit status"
grep -q "no alert $a3" "$FS_TEST_DIR/resolve.out" || fs_fail "resolving a deleted alert: $(cat "$FS_TEST_DIR/resolve.out")"
fs_assert_eq "$N1 $N3" "$(fs_psql "SELECT string_agg(payment_id::text, ' ' ORDER BY payment_id) FROM alert_overview")" "alert_overview (N1, and N3 flagged for the linked fraud)"

# 4. A lock retention cannot skip: the slices fail on their lock timeout, and are retried.
fs_psql "INSERT INTO outcomes (payment_id, outcome, known_at, applied_at) VALUES ('$K29', 'legitimate', now(), now())" >/dev/null
fs_bg lock2 env PGAPPNAME=retention-test-lock2 psql "$FS_DATABASE_URL" -X -q -c \
    "BEGIN; SELECT 1 FROM outcomes WHERE payment_id = '$K29' FOR UPDATE; SELECT pg_sleep(300); COMMIT;"
fs_wait_for 20 at_least "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'retention-test-lock2' AND wait_event = 'PgSleep'" 1
before_p=$(deleted payments) before_o=$(deleted outcomes)
fs_psql "UPDATE decisions SET decided_at = now() - interval '40 days' WHERE payment_id = '$K29'" >/dev/null
failed() { grep -h '"event":"retention_failed"' "$FS_TEST_DIR/r1.log" "$FS_TEST_DIR/r2.log" | grep -c 'lock timeout'; }
fs_wait_for 60 "(( \$(failed) >= 2 ))" # each failed round is retried an interval later
grep -h '"event":"retention_failed"' "$FS_TEST_DIR/r1.log" "$FS_TEST_DIR/r2.log" | head -n 1
line=$(grep -h '"event":"retention_failed"' "$FS_TEST_DIR/r1.log" "$FS_TEST_DIR/r2.log" | head -n 1)
[[ "$line" == *'"level":"warn"'* && "$line" == *'retention (payments)'* ]] || fs_fail "retention_failed line: $line"
event "$N4" 7 2500 $((T + 6000000)) | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM decisions WHERE payment_id = '$N4'" 1
fs_assert_eq "1 1" "$(fs_psql "SELECT (SELECT count(*) FROM payments WHERE payment_id = '$K29') || ' ' || (SELECT count(*) FROM outcomes WHERE payment_id = '$K29')")" "K29 and its label while the label is locked"
fs_assert_eq "$before_p" "$(deleted payments)" "payments deleted while the label is locked"
fs_psql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'retention-test-lock2'" >/dev/null
fs_wait_for 60 "(( \$(deleted payments) == before_p + 1 ))"
fs_assert_eq $((before_o + 1)) "$(deleted outcomes)" "K29's label deleted with it"
fs_assert_eq "0 0" "$(fs_psql "SELECT (SELECT count(*) FROM payments WHERE payment_id = '$K29') || ' ' || (SELECT count(*) FROM outcomes WHERE payment_id = '$K29')")" "K29 and its label after the lock"
! grep -h '"level":"error"' "$FS_TEST_DIR/r1.log" "$FS_TEST_DIR/r2.log" || fs_fail "errors while pruning"

# 5. Old raw_payments messages consumed again (an offset reset; a topic keeping more than 30 days):
#    O1 (deleted in 2.) is not stored again but dead-lettered "expired"; N1, ingested as long ago
#    but still stored, is a redelivery (its decision again on processed_payments, no dead letter);
#    N5, ingested 10 days ago, is scored. lab (retention off) leaves first: r1 and r2 get the message.
fs_kill lab TERM
fs_wait_exit lab 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "lab: exit status"
N5=0000000b-0000-4000-8000-0000000000b5
NOW=$(($(date +%s) * 1000))
rows0=$(fs_psql "SELECT count(*) FROM payments") vel0=$(fs_psql "SELECT count(*) FROM velocity_events")
fs_assert_eq "0 0" "$(metric r1 'fs_scorer_dead_letters_total{reason="expired",topic="raw_payments"}') $(metric r2 'fs_scorer_dead_letters_total{reason="expired",topic="raw_payments"}')" "expired dead letters before (the series exists: alert rules need it)"
dlq() { echo $(($(metric r1 'fs_scorer_dead_letters_total{reason="expired",topic="raw_payments"}') + $(metric r2 'fs_scorer_dead_letters_total{reason="expired",topic="raw_payments"}'))); }
n1_out() { timeout 60 kcat -b "$FS_BROKERS" -C -t processed_payments -o beginning -e -q -f '%k\n' | grep -c "^$N1\$"; }
n1_before=$(n1_out)
{ event "$O1" 1 150000 $((NOW - 40 * 86400000)); event "$N1" 3 150000 $((NOW - 40 * 86400000))
  event "$N5" 8 2500 $((NOW - 10 * 86400000)); } | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 60 at_least "SELECT count(*) FROM decisions WHERE payment_id = '$N5'" 1
fs_wait_for 60 "(( \$(dlq) >= 1 && \$(n1_out) > n1_before ))" # the old code: O1 stored again, no dead letter
fs_assert_eq 1 "$(dlq)" "dead letters expired (O1)"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM payments WHERE payment_id = '$O1'")" "O1 not stored again"
fs_assert_eq $((rows0 + 1)) "$(fs_psql "SELECT count(*) FROM payments")" "payments: N5 only"
fs_assert_eq $((vel0 + 2)) "$(fs_psql "SELECT count(*) FROM velocity_events")" "velocity events: N5's user and card only"
fs_topic_dump raw_payments.dlq >"$FS_TEST_DIR/dlq.tsv"
grep -F "$O1" "$FS_TEST_DIR/dlq.tsv" | grep -qF 'dlq_reason=expired,' ||
    fs_fail "O1's dead letter: $(cat "$FS_TEST_DIR/dlq.tsv")"
fs_assert_eq 1 "$(grep -c . "$FS_TEST_DIR/dlq.tsv")" "dead letters on raw_payments.dlq"

for r in r1 r2; do fs_kill $r TERM; done
for r in r1 r2; do
    fs_wait_exit $r 30
    fs_assert_eq 0 "$FS_EXIT_STATUS" "$r: exit status"
done
echo PASS
