#!/usr/bin/env bash
# Replay parity: a stream of realistic payments (identifiers, cards, terminals, days of event time)
# is replayed through raw_payments at full speed, in event order on one partition, into a scorer
# cutting it into many small batches; the features it stored (decisions.features: exact windows,
# buckets, vault, merchant windows) must equal, payment by payment, what the same feature code
# computes offline over the same events (fraudshield-scorer --offline FILE). Then the same file
# replayed a second time (redelivery) changes nothing: exactly-once feature state.
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

fs_bg scorer env FS_SCORER_ID=parity FS_BATCH_MAX=37 FS_ADMIN_PORT=-1 FS_VELOCITY_PRUNE_EVERY=0 \
    "$BUILD/bin/fraudshield-scorer"
# one key -> one partition -> the scorer sees the events in file (event-time) order
sed 's/^[^:]*:/P:/' "$FS_TEST_DIR/stream.txt" | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -z lz4
decisions_at_least() { (($(fs_psql 'SELECT count(*) FROM decisions') >= $1)); }
fs_wait_for 120 decisions_at_least "$n"

norm() { jq -S -c '{payment_id, features}' | sort; }
fs_psql "SELECT json_build_object('payment_id', payment_id, 'features', features) FROM decisions" |
    norm >"$FS_TEST_DIR/pipeline.txt"
"$BUILD/bin/fraudshield-scorer" --offline "$FS_TEST_DIR/events.ndjson" 2>"$FS_TEST_DIR/offline.log" |
    norm >"$FS_TEST_DIR/offline.txt"
fs_assert_eq "$n" "$(wc -l <"$FS_TEST_DIR/offline.txt")" "offline payments"
if ! cmp -s "$FS_TEST_DIR/pipeline.txt" "$FS_TEST_DIR/offline.txt"; then
    diff "$FS_TEST_DIR/pipeline.txt" "$FS_TEST_DIR/offline.txt" | head -4 | cut -c1-600
    fs_fail "the pipeline's features differ from the offline computation"
fi
echo "ok: $n payments, identical features online and offline"
# Sanity: the features are not trivially empty.
fs_assert_eq t "$(fs_psql "SELECT max((features->>'user_count_604800s')::int) > 10 AND max((features->>'vault_card_seen')::int) > 10 AND max((features->>'merchant_count_86400s_delay_86400s')::int) > 0 AND max((features->>'card_count_7200s')::int) > 1 FROM decisions")" "windows, vault and delayed windows have history"

# Redelivery: the same messages again (a crash before the commit, at scale) change no state.
before=$(fs_psql "SELECT sum(n) || '/' || (SELECT sum(times_seen) FROM risk_vault) || '/' || (SELECT count(*) FROM velocity_events) FROM feature_buckets")
sed 's/^[^:]*:/P:/' "$FS_TEST_DIR/stream.txt" | kcat -b "$FS_BROKERS" -P -t raw_payments -K: -z lz4
fs_wait_for 120 "grep -c '\"event\":\"stopped\"' '$FS_TEST_DIR/scorer.log' >/dev/null || (( \$(fs_topic_count processed_payments) >= 2 * $n ))"
fs_assert_eq "$before" "$(fs_psql "SELECT sum(n) || '/' || (SELECT sum(times_seen) FROM risk_vault) || '/' || (SELECT count(*) FROM velocity_events) FROM feature_buckets")" "feature state after a full redelivery"
fs_assert_eq "$n" "$(fs_psql 'SELECT count(*) FROM decisions')" "decisions after redelivery"
