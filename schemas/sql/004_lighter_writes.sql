-- FraudShield schema: cheaper writes on the scorer's hot path (BENCHMARKS.md, scorer).

-- The evidence (decisions.features, ~50 keys, ~1.5 KB a decision) is stored as json, validated
-- text, instead of jsonb: loading it was the costliest statement of a batch, and jsonb's input
-- function costs ~5x json's (measured: 60 us against 12 us a document). The evidence is written
-- once per decision and read rarely (one decision explained, model training), where json's
-- operators (->, ->>, json_each) serve; cast to jsonb for jsonb-only ones (?, @>).
-- decision_explained selects the column, so it is recreated around the change.
DROP VIEW decision_explained;
ALTER TABLE decisions ALTER COLUMN features TYPE json USING features::json;
CREATE VIEW decision_explained AS
SELECT p.payment_id, p.event_time, p.user_id, p.merchant_id,
       p.amount_minor, p.currency, p.currency_exp, p.country, p.billing_country, p.shipping_country,
       d.decision, d.score, d.reasons, d.features, d.rules_version, d.model_version,
       d.scorer_id, d.scoring_latency_us, d.decided_at,
       a.alert_id, a.status AS alert_status,
       l.outcome AS label, l.known_at AS label_known_at
FROM payments p
JOIN decisions d USING (payment_id)
LEFT JOIN alerts a USING (payment_id)
LEFT JOIN payment_labels l USING (payment_id);
GRANT SELECT ON decision_explained TO fraudshield_analyst;

-- velocity_events: only payments that the same transaction inserted into payments add events, so
-- an event is never written twice and the primary key's uniqueness check (and its payment_id
-- column) buys nothing. A plain index on what the reads use is smaller and cheaper to maintain.
ALTER TABLE velocity_events DROP CONSTRAINT velocity_events_pkey;
CREATE INDEX velocity_events_key_idx ON velocity_events (entity_kind, entity_key, event_time);
