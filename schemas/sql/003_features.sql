-- FraudShield schema: feature buckets for long event-time windows, the risk vault, outcomes
-- (labels) and their links to identifiers and merchants, the analyst views and the read-only
-- analyst role. The scorer writes every table here; docs/analyst.md explains how to read them.

-- The IP address's country, resolved at ingest before the address is digested (raw_payments
-- ip_country; NULL when unknown).
ALTER TABLE payments ADD COLUMN ip_country char(2);

-- velocity_events holds only the last hour or two of event time (pruned by the scorer): pruning
-- scans it instead of maintaining a second index on every insert.
DROP INDEX velocity_events_time_idx;

-- Event-time window aggregates longer than 1 hour (windows up to 1 hour use velocity_events,
-- which is exact). One row per (entity, key, bucket width, bucket start): 1-hour buckets serve
-- windows up to 1 day, 1-day buckets the longer ones (scorer/buckets.h explains the arithmetic and
-- its approximation at the window edges). Increments are written only for payments that the same
-- transaction inserted into payments, so a redelivered payment never counts twice. cps holds up to
-- 16 distinct counterpart hashes (users; cards for the user entity) for distinct counts.
CREATE TABLE feature_buckets (
    entity_kind  text NOT NULL,        -- 'user', 'ip', 'card', 'device', 'email', 'merchant'
    entity_key   text NOT NULL,
    width_s      integer NOT NULL,     -- 3600 or 86400
    bucket_start timestamptz NOT NULL,
    n            bigint NOT NULL,      -- payments
    sum_minor    bigint NOT NULL,      -- sum of amount_minor (mixed currencies are summed as is)
    cps          bigint[] NOT NULL,    -- distinct counterpart hashes, at most 16
    PRIMARY KEY (entity_kind, entity_key, width_s, bucket_start)
) WITH (fillfactor = 70); -- room for HOT updates: increments touch no indexed column
CREATE INDEX feature_buckets_prune_idx ON feature_buckets (width_s, bucket_start);
COMMENT ON TABLE feature_buckets IS 'Bucketed event-time counters per entity for windows longer than 1 h (scorer-owned; pruned).';

-- Union of two counterpart sets, at most cap elements (beyond: a lower bound, see buckets.h).
CREATE FUNCTION fs_cps_merge(a bigint[], b bigint[], cap integer) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a @> b OR cardinality(a) >= cap THEN a
                ELSE (SELECT coalesce(array_agg(x), '{}')
                      FROM (SELECT DISTINCT x FROM unnest(a || b) AS u(x) LIMIT cap) s) END
$$;

-- The risk vault: per identifier digest, when it was first and last seen (event time), how many
-- payments carried it, and how many of those were labelled confirmed fraud or chargeback.
CREATE TABLE risk_vault (
    entity_kind      text NOT NULL,    -- 'card' (fingerprint digest), 'ip', 'device', 'email'
    digest           text NOT NULL,
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    times_seen       bigint NOT NULL,
    fraud_count      bigint NOT NULL DEFAULT 0,
    chargeback_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (entity_kind, digest)
) WITH (fillfactor = 70);
COMMENT ON TABLE risk_vault IS 'Per identifier digest: first/last seen, times seen, confirmed-fraud and chargeback counts.';

-- Labels from payment_outcomes (docs/topics.md), each stored once (by outcome_id, and by
-- payment, label and known_at for messages without an id). applied_at is set when its
-- payment was found and the links and vault counts were updated (an outcome may arrive before its
-- payment is persisted: it is applied later).
CREATE TABLE outcomes (
    outcome_id  uuid UNIQUE,           -- the message's id (ingest: stable per idempotency key)
    payment_id  uuid NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('confirmed_fraud', 'false_positive', 'chargeback', 'legitimate')),
    known_at    timestamptz NOT NULL,  -- when the label became known (delayed feedback)
    reason      text,
    source      text,
    received_at timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz,
    PRIMARY KEY (payment_id, outcome, known_at)
);
CREATE INDEX outcomes_pending_idx ON outcomes (received_at) WHERE applied_at IS NULL;
COMMENT ON TABLE outcomes IS 'Outcome labels (confirmed_fraud, false_positive, chargeback, legitimate), one row per distinct label message.';

-- A labelled (confirmed fraud or chargeback) payment, per identifier and merchant it carried:
-- the scorer counts only links whose known_at <= the scored payment's event time.
CREATE TABLE outcome_links (
    entity_kind text NOT NULL,         -- 'card', 'ip', 'device', 'email', 'merchant'
    entity_key  text NOT NULL,
    payment_id  uuid NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('confirmed_fraud', 'chargeback')),
    event_time  timestamptz NOT NULL,  -- the labelled payment's event time
    known_at    timestamptz NOT NULL,
    PRIMARY KEY (entity_kind, entity_key, payment_id, outcome)
);

-- ---- analyst views ---------------------------------------------------------------------------

-- The latest label of each payment.
CREATE VIEW payment_labels AS
SELECT DISTINCT ON (payment_id) payment_id, outcome, known_at, reason, source
FROM outcomes
ORDER BY payment_id, known_at DESC, received_at DESC;

-- "Why was this payment decided so": one row per payment with the decision and its evidence.
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

CREATE VIEW fraud_rate_by_day_country AS
SELECT date_trunc('day', p.event_time) AS day, coalesce(p.country, 'UNK') AS country,
       count(*) AS payments,
       count(*) FILTER (WHERE d.decision = 'block') AS blocked,
       count(*) FILTER (WHERE d.decision = 'review') AS reviewed,
       count(*) FILTER (WHERE l.outcome IN ('confirmed_fraud', 'chargeback')) AS fraud,
       round(count(*) FILTER (WHERE l.outcome IN ('confirmed_fraud', 'chargeback'))::numeric / count(*), 6) AS fraud_rate
FROM payments p
JOIN decisions d USING (payment_id)
LEFT JOIN payment_labels l USING (payment_id)
GROUP BY 1, 2;

CREATE VIEW rule_hit_rates AS
SELECT date_trunc('day', d.decided_at) AS day, r->>'code' AS code,
       count(*) AS hits,
       round(count(*)::numeric / max(t.decisions), 6) AS hit_rate
FROM decisions d
CROSS JOIN LATERAL jsonb_array_elements(d.reasons) r
JOIN (SELECT date_trunc('day', decided_at) AS day, count(*) AS decisions FROM decisions GROUP BY 1) t
  ON t.day = date_trunc('day', d.decided_at)
GROUP BY 1, 2;

CREATE VIEW score_distribution AS
SELECT date_trunc('day', decided_at) AS day, (score / 10) * 10 AS score_from, decision,
       count(*) AS decisions
FROM decisions
GROUP BY 1, 2, 3;

-- Precision of alerts against the labels known so far: confirmed (fraud or chargeback) among the
-- labelled alerts.
CREATE VIEW alert_precision AS
SELECT date_trunc('day', a.created_at) AS day, a.decision,
       count(*) AS alerts,
       count(l.outcome) AS labelled,
       count(*) FILTER (WHERE l.outcome IN ('confirmed_fraud', 'chargeback')) AS confirmed,
       count(*) FILTER (WHERE l.outcome IN ('false_positive', 'legitimate')) AS false_positives,
       round(count(*) FILTER (WHERE l.outcome IN ('confirmed_fraud', 'chargeback'))::numeric
             / nullif(count(l.outcome), 0), 6) AS precision
FROM alerts a
LEFT JOIN payment_labels l USING (payment_id)
GROUP BY 1, 2;

-- ---- the read-only analyst role --------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraudshield_analyst') THEN
        CREATE ROLE fraudshield_analyst NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO fraudshield_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO fraudshield_analyst;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO fraudshield_analyst;
