-- FraudShield schema v1: payments, decisions with evidence, alerts, and the velocity event log.
-- Applied once by db_migrate() (recorded in schema_migrations). Never edit an applied migration:
-- add a new numbered file.

-- One row per accepted payment, written exactly once by the scorer (primary key = payment_id).
-- Personal identifiers are keyed digests made at ingest; raw values never reach this database.
CREATE TABLE payments (
    payment_id              uuid PRIMARY KEY,
    user_id                 text NOT NULL,
    merchant_id             text NOT NULL,
    amount_minor            bigint NOT NULL CHECK (amount_minor > 0),
    currency                char(3) NOT NULL,
    currency_exp            smallint NOT NULL,
    payment_method          text NOT NULL,
    transaction_type        text,
    card_type               text,
    card_last_four          char(4),
    card_fingerprint_digest text,
    ip_digest               text,
    email_digest            text,
    device_id_digest        text,
    country                 char(2),
    billing_country         char(2),
    shipping_country        char(2),
    device_info             jsonb,
    metadata                jsonb,
    event_time              timestamptz NOT NULL,
    ingest_time             timestamptz NOT NULL,
    persisted_at            timestamptz NOT NULL DEFAULT now(),
    source_partition        integer NOT NULL,
    source_offset           bigint NOT NULL
);
CREATE INDEX payments_event_time_idx ON payments (event_time);
CREATE INDEX payments_user_idx ON payments (user_id, event_time);
CREATE INDEX payments_merchant_idx ON payments (merchant_id, event_time);

COMMENT ON TABLE payments IS 'Accepted payments, one row each (idempotent on payment_id). Amounts in minor units: amount = amount_minor / 10^currency_exp.';

-- The decision for each payment, with everything needed to explain it.
CREATE TABLE decisions (
    payment_id         uuid PRIMARY KEY REFERENCES payments (payment_id),
    decision           text NOT NULL CHECK (decision IN ('allow', 'review', 'block')),
    score              smallint NOT NULL CHECK (score BETWEEN 0 AND 100),
    reasons            jsonb NOT NULL,   -- [{code, severity, weight, message}], by weight descending
    features           jsonb NOT NULL,   -- feature values the rules saw
    rules_version      text NOT NULL,    -- rules file version and content hash
    model_version      text,             -- NULL: rules only
    scorer_id          text NOT NULL,
    scoring_latency_us integer NOT NULL,
    decided_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_decided_at_idx ON decisions (decided_at);
CREATE INDEX decisions_decision_idx ON decisions (decision) WHERE decision <> 'allow';

-- One alert per flagged payment (review or block); alert_id is derived from payment_id.
CREATE TABLE alerts (
    alert_id        uuid PRIMARY KEY,
    payment_id      uuid NOT NULL UNIQUE REFERENCES payments (payment_id),
    decision        text NOT NULL CHECK (decision IN ('review', 'block')),
    score           smallint NOT NULL,
    status          text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'acknowledged', 'resolved')),
    status_by       text,
    status_at       timestamptz,
    resolution      text CHECK (resolution IN ('confirmed_fraud', 'false_positive')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_status_idx ON alerts (status, created_at);

-- Velocity event log shared by all scorer workers: one row per (entity, payment), in event time.
-- Window features ("payments of this user in the last 5 minutes") are counted from it, so a replay
-- of history gives the same values as live traffic. Rows are only written for payments that the
-- same transaction inserted into payments (a redelivered payment never counts twice), and the
-- primary key includes payment_id as a second line of defence. Old rows are pruned by the scorer.
CREATE TABLE velocity_events (
    entity_kind  text NOT NULL,        -- 'user', 'ip', 'card', 'device', 'email', 'merchant'
    entity_key   text NOT NULL,        -- user_id, digest, or merchant id
    event_time   timestamptz NOT NULL,
    payment_id   uuid NOT NULL,
    user_id      text NOT NULL,        -- counterpart for distinct-user features
    amount_minor bigint NOT NULL,
    PRIMARY KEY (entity_kind, entity_key, event_time, payment_id)
);
CREATE INDEX velocity_events_time_idx ON velocity_events (event_time);
