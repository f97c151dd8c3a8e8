#!/usr/bin/env bash
# Replay parity: a stream of realistic payments (identifiers, cards, terminals, days of event time)
# is replayed through raw_payments at full speed, in event order on one partition, into a scorer
# cutting it into many small batches; the features it stored (decisions.features: exact windows,
# buckets, vault, merchant windows) must equal, payment by payment, what the same feature code
# computes offline over the same events (fraudshield-scorer --offline FILE). Then the same file
# replayed a second time (redelivery) changes nothing: exactly-once feature state.
# With labels: outcomes of a few dozen payments of the first day (confirmed_fraud, chargeback,
# corrections by a later false_positive/legitimate, a re-correction, a tie at one known_at), known
# 14 h after their payment, corrections 5 h later, so inside the 2-day stream: the same lines go to
# payment_outcomes (stored, pending, before any payment is scored) and to --offline-outcomes, and
# the vault fraud/chargeback counts and the merchant risk (1-day window delayed by 1 day: day-2
# payments see the labelled day-1 payments known at their event time) must be equal too.
# Some labels carry an outcome_id that later lines reuse, as the scorer must not store them: another
# outcome of the same payment or a label of another payment under it (outcome_conflict: dead-lettered
# by the scorer, left out and logged offline), and a redelivery under it with a later known_at after
# a correction (absorbed by the scorer: offline its known_at must not count again).
# The stream is replayed in three parts cut at 12 h and 24 h, each at full speed, waiting between
# them until the labels of the persisted payments are applied: a label stored before its payment is
# applied after the batch that persists the payment, not within it (offline.h), and every label is
# known at least at the next cut after its payment.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_replay_parity
fs_pg_start
fs_broker_start 6
n=${FS_PARITY_N:-3000}
# 2 days, 150 customers, 40 terminals: dense enough that every window and the vault see history.
bash "$REPO/scripts/gen-payments.sh" "$n" 42 2 150 40 1767225600 >"$FS_TEST_DIR/stream.txt"
sed 's/^[^:]*://' "$FS_TEST_DIR/stream.txt" >"$FS_TEST_DIR/events.ndjson"
# The same feature configuration online and offline; a 1-day feedback delay fits the 2-day stream.
export FS_RISK_DELAY_DAYS=1 FS_RISK_WINDOWS_DAYS=1 FS_FEATURE_WINDOWS="user:1d,7d card:2h ip:1d merchant:1d"

# Labels of every 40th payment of day 1 (kind by its rank k): known at K = its event time + 14 h,
# corrections at K + 5 h, K + 10 h; and one label of a payment not in the stream (never applied).
# A third member names the label's outcome_id (0c0c0c0<it> + the payment id's rest): kind 0's
# legitimate reuses its fraud label's (a conflict), kind 3's last chargeback its first one's (a
# redelivery after the correction).
jq -r -n --arg d "$(date -u +%FT%TZ)" '[inputs] | to_entries[] | select(.key % 40 == 7 and .value.event_time < "2026-01-02")
    | .value as $p | (.key / 40 | floor) as $k | ($p.event_time | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601 + 14 * 3600) as $t
    | [[["confirmed_fraud", 0, "a"], ["legitimate", 1, "a"]], [["chargeback", 0]], [["confirmed_fraud", 0], ["false_positive", 5]],
       [["chargeback", 0, "b"], ["legitimate", 5], ["chargeback", 10, "b"]], [["confirmed_fraud", 0], ["false_positive", 5], ["confirmed_fraud", 10]],
       [["legitimate", 0], ["confirmed_fraud", 0]]][$k % 6][]
    | $p.payment_id + ":" + ({schema_version: 1, payment_id: $p.payment_id, outcome: .[0],
        known_at: ($t + .[1] * 3600 | todate), received_at: $d, source: "parity", reason: "test"}
        + (if .[2] then {outcome_id: ("0c0c0c0" + .[2] + $p.payment_id[8:])} else {} end) | tojson)' \
    "$FS_TEST_DIR/events.ndjson" >"$FS_TEST_DIR/labels.txt"
echo "ffffffff-0000-4000-8000-000000000000:{\"schema_version\":1,\"payment_id\":\"ffffffff-0000-4000-8000-000000000000\",\"outcome\":\"confirmed_fraud\",\"known_at\":\"2026-01-01T01:00:00Z\"}" >>"$FS_TEST_DIR/labels.txt"
# The first fraud label's outcome_id reused for the stream's first payment (unlabelled), under the
# first label's key: one partition, so the scorer consumes it after the label it conflicts with.
first=$(grep -m1 '"outcome_id":"0c0c0c0a' "$FS_TEST_DIR/labels.txt")
head -n 1 "$FS_TEST_DIR/events.ndjson" | jq -r -c --arg key "${first%%:*}" --argjson l "${first#*:}" \
    '$key + ":" + ($l + {payment_id} | tojson)' >>"$FS_TEST_DIR/labels.txt"
nlabels=$(wc -l <"$FS_TEST_DIR/labels.txt")
# per outcome_id, the labels after its first: conflicts (another payment_id or outcome), redeliveries
reused() {
    sed 's/^[^:]*://' "$FS_TEST_DIR/labels.txt" | jq -s "[.[] | select(.outcome_id)] | group_by(.outcome_id)
        | map(.[0] as \$f | .[1:][] | select((.payment_id == \$f.payment_id and .outcome == \$f.outcome) == $1)) | length"
}
nconflicts=$(reused false)
nredelivered=$(reused true)
((nconflicts > 1 && nredelivered > 0)) || fs_fail "reused outcome_ids: $nconflicts conflicts, $nredelivered redeliveries"
nstored=$((nlabels - nconflicts - nredelivered))

fs_bg scorer env FS_SCORER_ID=parity FS_BATCH_MAX=37 FS_ADMIN_PORT=-1 FS_VELOCITY_PRUNE_EVERY=0 \
    "$BUILD/bin/fraudshield-scorer"
kcat -b "$FS_BROKERS" -P -t payment_outcomes -K: <"$FS_TEST_DIR/labels.txt"
fs_wait_for 60 fs_rows_at_least outcomes "$nstored"
fs_wait_for 60 fs_topic_has payment_outcomes.dlq "$nconflicts"
sleep 1
fs_assert_eq "$nstored" "$(fs_rows outcomes)" "labels stored (not the reused outcome_ids')"
fs_assert_eq "$nconflicts" "$(fs_topic_dump payment_outcomes.dlq | grep -c dlq_reason=outcome_conflict)" "outcome_conflict dead letters"
fs_assert_eq 0 "$(fs_rows decisions)" "decisions before the replay"
decisions_at_least() { (($(fs_rows decisions) >= $1)); }
applied() { (($(fs_psql 'SELECT count(*) FROM outcomes JOIN payments USING (payment_id) WHERE applied_at IS NULL') == 0)); }
# replay FROM TO: the events with FROM <= event time < TO, then waits for their decisions and for
# the labels of every persisted payment to be applied. One key -> one partition -> the scorer sees
# the events in file (event-time) order.
sent=0
replay() {
    awk -v from="$1" -v to="$2" -F'"event_time":"' '{ t = substr($2, 1, 19) } t >= from && t < to' \
        "$FS_TEST_DIR/stream.txt" | sed 's/^[^:]*:/P:/' >"$FS_TEST_DIR/part.txt"
    kcat -b "$FS_BROKERS" -P -t raw_payments -K: -z lz4 <"$FS_TEST_DIR/part.txt"
    sent=$((sent + $(wc -l <"$FS_TEST_DIR/part.txt")))
    fs_wait_for 120 decisions_at_least "$sent"
    fs_wait_for 60 applied
}
replay 0 2026-01-01T12:00:00
replay 2026-01-01T12:00:00 2026-01-02T00:00:00
replay 2026-01-02T00:00:00 9
fs_assert_eq "$n" "$sent" "payments replayed"

norm() { jq -S -c '{payment_id, features}' | sort; }
fs_psql "SELECT json_build_object('payment_id', payment_id, 'features', features) FROM decisions" |
    norm >"$FS_TEST_DIR/pipeline.txt"
offline() { # offline LABELS: the offline features of the stream with those labels
    "$BUILD/bin/fraudshield-scorer" --offline "$FS_TEST_DIR/events.ndjson" --offline-outcomes "$1" \
        2>>"$FS_TEST_DIR/offline.log" | norm
}
offline "$FS_TEST_DIR/labels.txt" >"$FS_TEST_DIR/offline.txt"
fs_assert_eq "$n" "$(wc -l <"$FS_TEST_DIR/offline.txt")" "offline payments"
if ! cmp -s "$FS_TEST_DIR/pipeline.txt" "$FS_TEST_DIR/offline.txt"; then
    # how many payments differ, and the first one's differing features as [pipeline, offline]
    fs_fail "the pipeline's features differ from the offline computation: $(jq -r -n \
        --slurpfile a "$FS_TEST_DIR/pipeline.txt" --slurpfile b "$FS_TEST_DIR/offline.txt" '
        INDEX($a[]; .payment_id) as $p | INDEX($b[]; .payment_id) as $o
        | [$p | keys[] | select($p[.].features != $o[.].features?)] as $ids
        | ($p[$ids[0]].features) as $x | ($o[$ids[0]].features // {}) as $y
        | "\($ids | length) payments, e.g. \($ids[0]): \([$x + $y | keys[] | select($x[.] != $y[.])
            | {(.): [$x[.], $y[.]]}] | add | tojson)"')"
fi
echo "ok: $n payments and $nlabels labels, identical features online and offline"
# offline leaves out what the scorer did not store: each conflict with a warning, both counted
fs_assert_eq "$nconflicts" "$(grep -c '"event":"outcome_conflict"' "$FS_TEST_DIR/offline.log")" "offline outcome_conflict warnings"
fs_assert_eq "$nconflicts $nredelivered" "$(grep '"event":"offline_labels"' "$FS_TEST_DIR/offline.log" | jq -r '"\(.conflicts) \(.redelivered)"')" "offline labels left out: conflicts, redeliveries"
# Sanity: the features are not trivially empty.
fs_assert_eq t "$(fs_psql "SELECT max((features->>'user_count_604800s')::int) > 10 AND max((features->>'vault_card_seen')::int) > 10 AND max((features->>'merchant_count_86400s_delay_86400s')::int) > 0 AND max((features->>'card_count_7200s')::int) > 1 FROM decisions")" "windows, vault and delayed windows have history"
fs_assert_eq t "$(fs_psql "SELECT bool_and(n > 20) FROM (SELECT count(*) FILTER (WHERE (features->>'vault_card_fraud')::int > 0) AS n FROM decisions UNION ALL SELECT count(*) FILTER (WHERE (features->>'vault_email_chargebacks')::int > 0) FROM decisions UNION ALL SELECT count(*) FILTER (WHERE (features->>'merchant_frauds_1d_delay_1d')::int > 0) FROM decisions) c")" "payments seeing vault frauds, chargebacks and merchant frauds"
# The labels and their corrections change features: offline without the false_positive/legitimate
# labels (or without any label) differs from the pipeline, in the vault and in the merchant risk.
grep -v -e false_positive -e legitimate "$FS_TEST_DIR/labels.txt" >"$FS_TEST_DIR/uncorrected.txt"
offline "$FS_TEST_DIR/uncorrected.txt" >"$FS_TEST_DIR/offline-uncorrected.txt"
offline /dev/null >"$FS_TEST_DIR/offline-unlabelled.txt"
differ() { # differ FILE FEATURE: payments whose FEATURE differs between FILE and the pipeline
    local f
    for f in pipeline.txt "$1"; do jq -r "[.payment_id, .features.$2] | @tsv" "$FS_TEST_DIR/$f" | sort >"$FS_TEST_DIR/$f.$2"; done
    comm -13 "$FS_TEST_DIR/pipeline.txt.$2" "$FS_TEST_DIR/$1.$2" | wc -l
}
for f in vault_card_fraud merchant_frauds_1d_delay_1d; do
    ((d = $(differ offline-uncorrected.txt "$f"))) || fs_fail "no payment's $f changed with the corrections: the check proves nothing"
    ((u = $(differ offline-unlabelled.txt "$f"))) || fs_fail "no payment's $f changed with the labels: the check proves nothing"
    echo "ok: $f differs without the corrections for $d payments, without the labels for $u"
done

# Redelivery: the same messages again (a crash before the commit, at scale) change no state.
before=$(fs_psql "SELECT sum(n) || '/' || (SELECT sum(times_seen) FROM risk_vault) || '/' || (SELECT count(*) FROM velocity_events) FROM feature_buckets")
sed 's/^[^:]*:/P:/' "$FS_TEST_DIR/stream.txt" | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -z lz4
fs_wait_for 120 "grep -c '\"event\":\"stopped\"' '$FS_TEST_DIR/scorer.log' >/dev/null || (( \$(fs_topic_count processed_payments) >= 2 * $n ))"
fs_assert_eq "$before" "$(fs_psql "SELECT sum(n) || '/' || (SELECT sum(times_seen) FROM risk_vault) || '/' || (SELECT count(*) FROM velocity_events) FROM feature_buckets")" "feature state after a full redelivery"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions after redelivery"
