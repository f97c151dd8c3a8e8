#!/usr/bin/env bash
# Migration 008_label_corrections on a database with history: the labels applied under the
# additive rules (a correction stored but never subtracted) are recounted, the vault's
# fraud/chargeback counts then reflect the corrections, and outcome_links is rebuilt as the
# labels' history (fraud labels and the corrections after them).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup db_migration_labels
fs_pg_start

# The schema as it was before 008 (and the migrations recorded without a checksum: adopted).
for f in "$REPO"/schemas/sql/*.sql; do
    name=$(basename "$f" .sql)
    [[ "$name" < 008 ]] || continue
    psql "$FS_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -1 -f "$f" >/dev/null
done
fs_psql "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), sha256 text)"
for f in "$REPO"/schemas/sql/*.sql; do
    name=$(basename "$f" .sql)
    [[ "$name" < 008 ]] && fs_psql "INSERT INTO schema_migrations (name) VALUES ('$name')"
done

# P1 (card c1, email e1): confirmed_fraud, then false_positive. P2 (card c1): confirmed_fraud,
# then chargeback. P3 (card c2): legitimate. P4 (card c3): confirmed_fraud, pending. As the
# additive rules left them: c1 fraud 2 chargeback 1, e1 fraud 1.
fs_psql "
INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
  payment_method, card_fingerprint_digest, email_digest, event_time, ingest_time, source_partition,
  source_offset) VALUES
 ('11111111-0000-4000-8000-000000000001', 'u1', 'm', 100, 'EUR', 2, 'card', 'c1', 'e1', '2026-11-01', '2026-11-01', 0, 1),
 ('11111111-0000-4000-8000-000000000002', 'u2', 'm', 100, 'EUR', 2, 'card', 'c1', NULL, '2026-11-01', '2026-11-01', 0, 2),
 ('11111111-0000-4000-8000-000000000003', 'u3', 'm', 100, 'EUR', 2, 'card', 'c2', NULL, '2026-11-01', '2026-11-01', 0, 3),
 ('11111111-0000-4000-8000-000000000004', 'u4', 'm', 100, 'EUR', 2, 'card', 'c3', NULL, '2026-11-01', '2026-11-01', 0, 4);
INSERT INTO outcomes (payment_id, outcome, known_at, applied_at) VALUES
 ('11111111-0000-4000-8000-000000000001', 'confirmed_fraud', '2026-11-02', now()),
 ('11111111-0000-4000-8000-000000000001', 'false_positive', '2026-11-03', now()),
 ('11111111-0000-4000-8000-000000000002', 'confirmed_fraud', '2026-11-02', now()),
 ('11111111-0000-4000-8000-000000000002', 'chargeback', '2026-11-03', now()),
 ('11111111-0000-4000-8000-000000000003', 'legitimate', '2026-11-02', now()),
 ('11111111-0000-4000-8000-000000000004', 'confirmed_fraud', '2026-11-02', NULL);
INSERT INTO outcome_links (entity_kind, entity_key, payment_id, outcome, event_time, known_at) VALUES
 ('card', 'c1', '11111111-0000-4000-8000-000000000001', 'confirmed_fraud', '2026-11-01', '2026-11-02'),
 ('email', 'e1', '11111111-0000-4000-8000-000000000001', 'confirmed_fraud', '2026-11-01', '2026-11-02'),
 ('merchant', 'm', '11111111-0000-4000-8000-000000000001', 'confirmed_fraud', '2026-11-01', '2026-11-02'),
 ('card', 'c1', '11111111-0000-4000-8000-000000000002', 'confirmed_fraud', '2026-11-01', '2026-11-02'),
 ('merchant', 'm', '11111111-0000-4000-8000-000000000002', 'confirmed_fraud', '2026-11-01', '2026-11-02'),
 ('card', 'c1', '11111111-0000-4000-8000-000000000002', 'chargeback', '2026-11-01', '2026-11-03'),
 ('merchant', 'm', '11111111-0000-4000-8000-000000000002', 'chargeback', '2026-11-01', '2026-11-03');
INSERT INTO risk_vault (entity_kind, digest, first_seen, last_seen, times_seen, fraud_count, chargeback_count) VALUES
 ('card', 'c1', '2026-11-01', '2026-11-01', 2, 2, 1), ('email', 'e1', '2026-11-01', '2026-11-01', 1, 1, 0),
 ('card', 'c2', '2026-11-01', '2026-11-01', 1, 0, 0), ('card', 'c3', '2026-11-01', '2026-11-01', 1, 0, 0);" >/dev/null

# A scorer migrates, then gives up on an unreachable broker.
fs_bg migrate env FS_BROKERS=127.0.0.1:1 FS_STARTUP_TIMEOUT_MS=1500 "$BUILD/bin/fraudshield-scorer"
fs_wait_exit migrate 60
grep -q 'applied migration 008_label_corrections' "$FS_TEST_DIR/migrate.log" ||
    fs_fail "008 not applied: $(tail -3 "$FS_TEST_DIR/migrate.log")"

fs_assert_eq "card/c1=1/1,card/c2=0/0,card/c3=0/0,email/e1=0/0" \
    "$(fs_psql "SELECT string_agg(entity_kind || '/' || digest || '=' || fraud_count || '/' || chargeback_count, ',' ORDER BY entity_kind, digest) FROM risk_vault")" \
    "vault counts recounted from the current labels"
fs_assert_eq "card:c1:1:confirmed_fraud,card:c1:1:false_positive,card:c1:2:chargeback,card:c1:2:confirmed_fraud,email:e1:1:confirmed_fraud,email:e1:1:false_positive,merchant:m:1:confirmed_fraud,merchant:m:1:false_positive,merchant:m:2:chargeback,merchant:m:2:confirmed_fraud" \
    "$(fs_psql "SELECT string_agg(entity_kind || ':' || entity_key || ':' || right(payment_id::text, 1) || ':' || outcome, ',' ORDER BY entity_kind, entity_key, payment_id, outcome) FROM outcome_links")" \
    "outcome links rebuilt as the labels' history (the pending label left for the scorer)"
fs_assert_eq "false_positive" "$(fs_psql "SELECT outcome FROM payment_labels WHERE payment_id = '11111111-0000-4000-8000-000000000001'")" "P1's current label"
fs_assert_eq "outcome_links_pkey:PRIMARY KEY (entity_kind, entity_key, payment_id, known_at, outcome)" \
    "$(fs_psql "SELECT conname || ':' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'outcome_links'::regclass AND contype = 'p'")" \
    "outcome_links' key (built after the links are loaded)"
echo "ok: migration 008 recounted the labels"
