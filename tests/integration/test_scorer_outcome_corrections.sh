#!/usr/bin/env bash
# Corrected labels (docs/topics.md, "payment_outcomes: the scorer's consumer"): a later label of a
# payment supersedes the earlier ones in every derived count.
# A (card X) is labelled confirmed_fraud (known T+1h): B, a later payment with card X, hits
# CARD_LINKED_TO_FRAUD. A false_positive for A known at T+3h takes A out of the vault counts (all
# its identifiers back to 0) and out of the links' counts for the payments from T+3h on: C (T+4h)
# no longer hits the rule, while D (T+2.5h, scored after the correction arrived) still does, the
# correction being unknown at its event time. A re-correction to confirmed_fraud (T+5h) counts A
# once again (vault 1, E hits the rule, the terminal's fraud count 1); redelivered labels, with
# and without outcome_id, and an older label change nothing.
# Then two workers apply labels at the same time, of payments sharing cards and (pending labels,
# stored before their payment) of the same payments, corrections among them: the vault counts
# equal the counts recomputed from the labels.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_outcome_corrections
fs_pg_start
fs_broker_start 6
admin1=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=corr-1 FS_ADMIN_PORT="$admin1" "$BUILD/bin/fraudshield-scorer"

h() { printf '%064x' "$1"; } # a 64-hex digest
T=1793613600000              # 2026-11-02T10:00:00Z
H=3600000
iso() { date -u -d "@$(($1 / 1000))" +%Y-%m-%dT%H:%M:%S.000Z; }
# event ID CARD N T_MS [MERCHANT]: email, device and ip digests of their own (N), so that only the
# card links a payment to A
event() {
    printf 'DE:{"schema_version":1,"payment_id":"%s","user_id":"u%s","merchant_id":"%s","amount_minor":2500,"currency":"EUR","payment_method":"card","card_fingerprint_digest":"%s","email_digest":"%s","device_id_digest":"%s","ip_digest":"%s","country":"DE","event_time":"%s","ingest_time":"%s"}\n' \
        "$1" "$3" "${5:-term-5}" "$(h "$2")" "$(h $((1000 + $3)))" "$(h $((2000 + $3)))" "$(h $((3000 + $3)))" "$(iso "$4")" "$(iso "$4")"
}
outcome() { # outcome PAYMENT_ID OUTCOME KNOWN_MS [OUTCOME_ID]
    printf '%s:{"schema_version":1,%s"payment_id":"%s","outcome":"%s","reason":"test","known_at":"%s","source":"test"}\n' \
        "$1" "${4:+\"outcome_id\":\"$4\",}" "$1" "$2" "$(iso "$3")"
}
pay() { kcat -b "$FS_BROKERS" -P -t raw_payments -K:; }
label() { kcat -b "$FS_BROKERS" -P -t payment_outcomes -K:; }
at_least() { (($(fs_psql "$1") >= $2)); }
applied() { fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id = '$1' AND applied_at IS NOT NULL" "$2"; }
decided() { fs_wait_for 60 at_least "SELECT count(*) FROM decisions WHERE payment_id = '$1'" 1; }
reasons() { fs_psql "SELECT decision || ':' || coalesce((SELECT string_agg(r->>'code', ',') FROM jsonb_array_elements(reasons) r), '') || ':' || (features->>'vault_card_fraud') FROM decisions WHERE payment_id = '$1'"; }
card_vault() { fs_psql "SELECT fraud_count || '|' || chargeback_count FROM risk_vault WHERE entity_kind = 'card' AND digest = '$(h 7)'"; }
# the vault counts of A's identifiers: card, device, email, ip
a_vault() { fs_psql "SELECT string_agg(entity_kind || '=' || fraud_count, ',' ORDER BY entity_kind) FROM risk_vault WHERE digest IN ('$(h 7)', '$(h 1001)', '$(h 2001)', '$(h 3001)')"; }
links() { fs_psql "SELECT count(*) FROM outcome_links"; }

A=aaaaaaaa-0000-4000-8000-000000000001
B=bbbbbbbb-0000-4000-8000-000000000002
C=cccccccc-0000-4000-8000-000000000003
D=dddddddd-0000-4000-8000-000000000004
E=eeeeeeee-0000-4000-8000-000000000005
G=99999999-0000-4000-8000-000000000006
O1=0f0f0f0f-0000-4000-8000-000000000001
O2=0f0f0f0f-0000-4000-8000-000000000002
O3=0f0f0f0f-0000-4000-8000-000000000003
O4=0f0f0f0f-0000-4000-8000-000000000004

# 1. A, then confirmed_fraud known at T+1h: the vault counts it, B (T+2h) hits the rule.
event "$A" 7 1 "$T" | pay
decided "$A"
outcome "$A" confirmed_fraud $((T + H)) "$O1" | label
applied "$A" 1
fs_assert_eq "card=1,device=1,email=1,ip=1" "$(a_vault)" "vault after the fraud label"
event "$B" 7 2 $((T + 2 * H)) | pay
decided "$B"
fs_assert_eq "review:CARD_LINKED_TO_FRAUD:1" "$(reasons "$B")" "B: after the fraud label"

# 2. The correction: false_positive known at T+3h. The vault forgets A; D (T+2.5h, before the
#    correction was known) still sees the fraud; C (T+4h) does not.
outcome "$A" false_positive $((T + 3 * H)) "$O2" | label
applied "$A" 2
fs_assert_eq "card=0,device=0,email=0,ip=0" "$(a_vault)" "vault after the correction"
fs_assert_eq "0|0" "$(card_vault)" "card X's counts after the correction"
{ event "$D" 7 4 $((T + 5 * H / 2)); event "$C" 7 3 $((T + 4 * H)); } | pay
decided "$C"
decided "$D"
fs_assert_eq "allow::0" "$(reasons "$C")" "C: after the correction"
fs_assert_eq "review:CARD_LINKED_TO_FRAUD:1" "$(reasons "$D")" "D: event time before the correction was known"
fs_assert_eq "current: false_positive" "current: $(fs_psql "SELECT outcome FROM payment_labels WHERE payment_id = '$A'")" "A's current label"

# 3. Redeliveries of both labels (one without its outcome_id), then the re-correction to
#    confirmed_fraud known at T+5h, in A's partition after them: A counts once again.
{ outcome "$A" confirmed_fraud $((T + H)) "$O1"
  outcome "$A" false_positive $((T + 3 * H))
  outcome "$A" confirmed_fraud $((T + 5 * H)) "$O3"; } | label
applied "$A" 3
fs_assert_eq 3 "$(fs_psql "SELECT count(*) FROM outcomes WHERE payment_id = '$A'")" "A's labels (the redeliveries stored once)"
fs_assert_eq "card=1,device=1,email=1,ip=1" "$(a_vault)" "vault after the re-correction"
fs_assert_eq "1|0" "$(card_vault)" "card X's counts after the re-correction"
# per identifier and merchant: fraud T+1h, false_positive T+3h, fraud T+5h
fs_assert_eq "15" "$(links)" "links of A's three labels"
event "$E" 7 5 $((T + 6 * H)) | pay
decided "$E"
fs_assert_eq "review:CARD_LINKED_TO_FRAUD:1" "$(reasons "$E")" "E: after the re-correction"

# 4. Every label again, and an older legitimate label (known T+30min, before the first fraud
#    label: it supersedes nothing and is not a link). Nothing changes.
links_before=$(links)
{ outcome "$A" confirmed_fraud $((T + H)) "$O1"
  outcome "$A" false_positive $((T + 3 * H)) "$O2"
  outcome "$A" confirmed_fraud $((T + 5 * H)) "$O3"
  outcome "$A" confirmed_fraud $((T + 5 * H))
  outcome "$A" legitimate $((T + H / 2)) "$O4"; } | label
applied "$A" 4
fs_assert_eq 4 "$(fs_psql "SELECT count(*) FROM outcomes WHERE payment_id = '$A'")" "A's labels after the second redelivery"
fs_assert_eq "card=1,device=1,email=1,ip=1" "$(a_vault)" "vault after the second redelivery"
fs_assert_eq "$links_before" "$(links)" "links after the second redelivery"
fs_assert_eq "current: confirmed_fraud" "current: $(fs_psql "SELECT outcome FROM payment_labels WHERE payment_id = '$A'")" "A's current label"

# 5. The terminal 8 days later: A is one fraud (it had two fraud labels) among A..E.
event "$G" 8 6 $((T + 8 * 24 * H)) | pay
decided "$G"
fs_assert_eq "1|5" "$(fs_psql "SELECT (features->>'merchant_frauds_7d_delay_7d') || '|' || (features->>'merchant_count_604800s_delay_604800s') FROM decisions WHERE payment_id = '$G'")" "merchant risk: A counted once"
echo "ok: a corrected label supersedes the earlier one, redeliveries change nothing"

# 6. Two workers. 300 payments sharing 6 cards, at another terminal; each gets 1-4 labels
#    (corrections among them, some at the same known_at). The labels of the first 150 are stored
#    BEFORE their payment (both workers apply pending labels, of the same payments), those of the
#    others after it, on all partitions at once (both workers apply labels of payments sharing
#    cards). Afterwards the vault counts of those cards are those recomputed from the labels (a
#    payment counts as fraud when a confirmed_fraud label is known at or after its last
#    false_positive/legitimate label), and no apply failed (a deadlock would be retried and logged).
admin2=$(fs_free_port)
fs_bg scorer2 env FS_SCORER_ID=corr-2 FS_ADMIN_PORT="$admin2" "$BUILD/bin/fraudshield-scorer"
T9=$((T + 9 * 24 * H)) # after G: no payment of this part is late
N=300
kinds=(confirmed_fraud false_positive chargeback legitimate)
ids=()
for i in $(seq 1 $N); do ids+=("$(printf '77777777-0000-4000-8000-%012d' "$i")"); done
labels_of() { # labels_of FROM TO
    for i in $(seq "$1" "$2"); do
        for j in $(seq 1 $((1 + i % 4))); do
            # known_at: T9 + j hours, except every 7th payment whose labels tie at T9 + 1h
            outcome "${ids[$((i - 1))]}" "${kinds[$(((i * 3 + j * 5) % 4))]}" $((T9 + (i % 7 == 0 ? 1 : j) * H))
        done
    done
}
n_labels() { fs_psql "SELECT count(*) FROM outcomes WHERE payment_id::text LIKE '77777777-%'"; }
labels_of 1 $((N / 2)) | label
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id::text LIKE '77777777-%'" $((N / 2 * 5 / 2))
for i in $(seq 1 $N); do event "${ids[$((i - 1))]}" $((100 + i % 6)) $((100 + i)) "$T9" term-6; done | pay
fs_wait_for 120 at_least "SELECT count(*) FROM decisions d JOIN payments p USING (payment_id) WHERE p.merchant_id = 'term-6'" $N
labels_of $((N / 2 + 1)) $N | label
fs_wait_for 60 at_least "SELECT count(*) FROM outcomes WHERE payment_id::text LIKE '77777777-%'" $((N * 5 / 2))
fs_wait_for 120 at_least "SELECT count(*) FROM outcomes WHERE payment_id::text LIKE '77777777-%' AND applied_at IS NOT NULL" "$(n_labels)"
expected=$(fs_psql "WITH l AS (SELECT payment_id, outcome, known_at FROM outcomes WHERE payment_id::text LIKE '77777777-%'),
  g AS (SELECT payment_id, coalesce(max(known_at) FILTER (WHERE outcome IN ('false_positive', 'legitimate')), '-infinity') AS g FROM l GROUP BY 1),
  c AS (SELECT payment_id, bool_or(outcome = 'confirmed_fraud' AND known_at >= g) AS f, bool_or(outcome = 'chargeback' AND known_at >= g) AS cb FROM l JOIN g USING (payment_id) GROUP BY 1)
  SELECT string_agg(card || '=' || f || '/' || cb, ',' ORDER BY card) FROM (
    SELECT p.card_fingerprint_digest AS card, count(*) FILTER (WHERE c.f) AS f, count(*) FILTER (WHERE c.cb) AS cb
    FROM c JOIN payments p USING (payment_id) GROUP BY 1) s")
actual=$(fs_psql "SELECT string_agg(digest || '=' || fraud_count || '/' || chargeback_count, ',' ORDER BY digest) FROM risk_vault WHERE entity_kind = 'card' AND digest IN (SELECT card_fingerprint_digest FROM payments WHERE payment_id::text LIKE '77777777-%')")
fs_assert_eq "$expected" "$actual" "vault counts of the two workers' cards"
[[ "$actual" == *=[1-9]* ]] || fs_fail "no card counted any fraud: the check proves nothing ($actual)"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM risk_vault WHERE fraud_count < 0 OR chargeback_count < 0")" "negative vault counts"
! grep -q '"event":"outcomes_retry"' "$FS_TEST_DIR"/scorer*.log || fs_fail "a worker failed to apply outcomes: $(grep -h outcomes_retry "$FS_TEST_DIR"/scorer*.log | head -3)"
applied_by() { curl -s "http://127.0.0.1:$1/metrics" | sed -n 's/^fs_scorer_outcomes_total{result="applied"} //p'; }
echo "ok: two workers applying labels concurrently keep the vault counts right (labels applied by worker 1: $(applied_by "$admin1"), worker 2: $(applied_by "$admin2"))"
