-- FraudShield schema: a later label of a payment supersedes its earlier ones (docs/topics.md,
-- "payment_outcomes: the scorer's consumer").
--
-- Labels are ordered by known_at; at equal known_at by precedence (fs_label_rank: chargeback >
-- confirmed_fraud > false_positive > legitimate, the highest last), and the last one is the
-- payment's current label. A payment counts as confirmed fraud (chargeback) when such a label
-- comes after its last false_positive/legitimate label: a false_positive after a confirmed_fraud
-- removes the payment from the vault's counts and the outcome links' counts, a confirmed_fraud
-- after that adds it again (once), and a chargeback after a confirmed_fraud keeps both counts.
--
-- outcome_links becomes the labels' history per identifier and merchant: one row per label
-- (payment, known_at, outcome) instead of one per (payment, outcome). The scorer reads, per
-- labelled payment, the labels known at the scored payment's event time t, so a correction known
-- at T2 changes only the payments with event time >= T2. Rows are written for confirmed_fraud and
-- chargeback labels, and for a false_positive or legitimate label only when a fraud label of the
-- payment is known at or before it (it ends that label's count): a payment labelled only
-- legitimate writes none.
--
-- The upgrade locks outcomes and outcome_links against writes while it rebuilds the links and
-- recounts risk_vault from the applied labels; scorers of the previous version must be stopped
-- first (they would read every link as a fraud or a chargeback).

LOCK TABLE outcomes, outcome_links IN EXCLUSIVE MODE;

-- The precedence of labels with the same known_at (higher wins).
CREATE FUNCTION fs_label_rank(outcome text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE outcome WHEN 'legitimate' THEN 1 WHEN 'false_positive' THEN 2
                        WHEN 'confirmed_fraud' THEN 3 WHEN 'chargeback' THEN 4 END
$$;

-- The analyst views use the same order (it was known_at, then received_at, which a replay or a
-- redelivery does not reproduce).
CREATE OR REPLACE VIEW payment_labels AS
SELECT DISTINCT ON (payment_id) payment_id, outcome, known_at, reason, source
FROM outcomes
ORDER BY payment_id, known_at DESC, fs_label_rank(outcome) DESC;

ALTER TABLE outcome_links DROP CONSTRAINT outcome_links_pkey,
    DROP CONSTRAINT outcome_links_outcome_check;
TRUNCATE outcome_links;
-- The new key is added after the links are loaded (one index build instead of 1.5M insertions
-- into it: a third of the time on 400k labels).
ALTER TABLE outcome_links
    ADD CONSTRAINT outcome_links_outcome_check
        CHECK (outcome IN ('confirmed_fraud', 'false_positive', 'chargeback', 'legitimate'));
COMMENT ON TABLE outcome_links IS 'Per identifier and merchant of a labelled payment: its fraud labels and the later labels that supersede them, with known_at (scorer-owned).';

-- The links of the applied labels (what the scorer writes, store.c SQL_APPLY_OUTCOMES).
CREATE TEMP TABLE fs_labels ON COMMIT DROP AS
SELECT payment_id, outcome, known_at, outcome IN ('false_positive', 'legitimate') AS genuine
FROM outcomes WHERE applied_at IS NOT NULL;

-- Per payment: its last genuine label, its first fraud label.
CREATE TEMP TABLE fs_label_ends ON COMMIT DROP AS
SELECT payment_id, coalesce(max(known_at) FILTER (WHERE genuine), '-infinity') AS last_genuine,
       min(known_at) FILTER (WHERE NOT genuine) AS first_fraud
FROM fs_labels GROUP BY payment_id;

INSERT INTO outcome_links (entity_kind, entity_key, payment_id, outcome, event_time, known_at)
SELECT v.k, v.key, l.payment_id, l.outcome, p.event_time, l.known_at
FROM fs_labels l JOIN fs_label_ends e USING (payment_id) JOIN payments p USING (payment_id)
CROSS JOIN LATERAL (VALUES ('card', p.card_fingerprint_digest), ('ip', p.ip_digest),
    ('device', p.device_id_digest), ('email', p.email_digest), ('merchant', p.merchant_id)) AS v(k, key)
WHERE v.key IS NOT NULL AND (NOT l.genuine OR l.known_at >= e.first_fraud);
ALTER TABLE outcome_links ADD PRIMARY KEY (entity_kind, entity_key, payment_id, known_at, outcome);

-- The vault's counts from the applied labels.
CREATE TEMP TABLE fs_label_counts ON COMMIT DROP AS
WITH cur AS (
    SELECT payment_id, bool_or(outcome = 'confirmed_fraud' AND known_at >= last_genuine) AS fraud,
           bool_or(outcome = 'chargeback' AND known_at >= last_genuine) AS chargeback
    FROM fs_labels JOIN fs_label_ends USING (payment_id) GROUP BY payment_id)
SELECT v.k, v.key, count(*) FILTER (WHERE c.fraud) AS frauds,
       count(*) FILTER (WHERE c.chargeback) AS chargebacks
FROM cur c JOIN payments p USING (payment_id)
CROSS JOIN LATERAL (VALUES ('card', p.card_fingerprint_digest), ('ip', p.ip_digest),
    ('device', p.device_id_digest), ('email', p.email_digest)) AS v(k, key)
WHERE v.key IS NOT NULL AND (c.fraud OR c.chargeback)
GROUP BY 1, 2;

UPDATE risk_vault r SET fraud_count = 0, chargeback_count = 0
WHERE (r.fraud_count <> 0 OR r.chargeback_count <> 0)
  AND NOT EXISTS (SELECT 1 FROM fs_label_counts c WHERE c.k = r.entity_kind AND c.key = r.digest);
INSERT INTO risk_vault AS r (entity_kind, digest, first_seen, last_seen, times_seen, fraud_count,
                             chargeback_count)
SELECT k, key, now(), now(), 0, frauds, chargebacks FROM fs_label_counts
ORDER BY k COLLATE "C", key COLLATE "C"
ON CONFLICT (entity_kind, digest) DO UPDATE
SET fraud_count = excluded.fraud_count, chargeback_count = excluded.chargeback_count
WHERE (r.fraud_count, r.chargeback_count) IS DISTINCT FROM (excluded.fraud_count, excluded.chargeback_count);
