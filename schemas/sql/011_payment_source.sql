-- FraudShield schema: who posted each payment.
--
-- payments.source: the caller ingest authenticated (the API key id, 'shopify:<shop domain>',
-- 'anonymous' with auth off), carried by the raw_payments event's "source"; NULL for payments of
-- other producers or stored before this migration. For analysts (fraud by client) and for the
-- scorer: a payment_id already stored from another source is a collision, not a retry (logged as
-- payment_id_collision). Adding a nullable column without a default rewrites nothing.
ALTER TABLE payments ADD COLUMN IF NOT EXISTS source text;
COMMENT ON COLUMN payments.source IS
    'who posted it: API key id, shopify:<shop>, anonymous; NULL when unknown';
