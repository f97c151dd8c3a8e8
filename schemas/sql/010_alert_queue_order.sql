-- FraudShield schema: the review queue orders equal scores by the model's probability.
--
-- The decision score is an integer (rule weights plus round(100 p)), so many alerts share a score;
-- within one, the model's probability p (stored in the evidence as model_score, absent when no
-- model was loaded) ranks them better than their arrival does (BENCHMARKS.md, "The protocol
-- week": ordering ties by arrival instead costs the blend ~0.008 of AUC). alert_overview gains
-- model_score as its last column (CREATE OR REPLACE VIEW keeps the grants); the documented queue is
--   ORDER BY score DESC, model_score DESC NULLS LAST, created_at.
CREATE OR REPLACE VIEW alert_overview AS
SELECT a.alert_id, a.payment_id, a.decision, a.score, a.status, a.status_by, a.status_at,
       a.resolution, a.resolution_note, a.created_at, p.country, p.amount_minor, p.currency,
       p.currency_exp, p.user_id, p.merchant_id,
       (SELECT count(*) FROM deliveries d WHERE d.alert_id = a.alert_id AND d.state = 'delivered')
           AS deliveries_ok,
       (SELECT count(*) FROM deliveries d WHERE d.alert_id = a.alert_id AND d.state = 'failed')
           AS deliveries_failed,
       (SELECT count(*) FROM deliveries d
        WHERE d.alert_id = a.alert_id AND d.state IN ('pending', 'in_flight')) AS deliveries_pending,
       (SELECT (dc.features ->> 'model_score')::double precision
        FROM decisions dc WHERE dc.payment_id = a.payment_id) AS model_score
FROM alerts a LEFT JOIN payments p USING (payment_id);
