-- FraudShield alerter (docs/alerter.md): subscriptions, the alert events it delivers, the delivery
-- log with its retry state, an outbox for the Kafka messages it publishes (dead letters and analyst
-- outcomes), and the analyst workflow on alerts (acknowledge, resolve -> payment_outcomes).
--
-- The alerter keeps its own copy of every fraud_alerts message (alert_events) instead of relying on
-- the scorer's alerts row: deliveries must not depend on which of the two writes lands first.

-- Who gets alerts. The secret is stored as given: the alerter must have the raw key to compute
-- HMAC signatures (a hash would not do). Restrict SELECT on this table (docs/alerter.md).
CREATE TABLE subscriptions (
    subscription_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    kind            text NOT NULL DEFAULT 'webhook' CHECK (kind IN ('webhook', 'email')),
    url             text NOT NULL,
    secret          text NOT NULL DEFAULT '',
    event_types     text[] NOT NULL DEFAULT '{alert.created}'
                    CHECK (cardinality(event_types) > 0
                           AND event_types <@ '{alert.created,alert.resolved}'::text[]),
    min_decision    text NOT NULL DEFAULT 'review' CHECK (min_decision IN ('review', 'block')),
    countries       text[] CHECK (countries IS NULL
                                  OR array_to_string(countries, ',') ~ '^[A-Z]{2}(,[A-Z]{2})*$'),
    ca_file         text,            -- PEM bundle to verify this subscriber's TLS certificate
    email_to        text[],          -- kind 'email': recipients
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'webhook' AND url ~* '^https?://[^[:space:]]+$' AND length(secret) >= 16)
        OR (kind = 'email' AND url ~* '^smtps?://[^[:space:]]+$' AND cardinality(email_to) > 0))
);
COMMENT ON TABLE subscriptions IS 'Alert subscribers (webhooks, email). Managed with `fraudshield-alerter subscriptions ...` or SQL; secret = HMAC-SHA256 key of the signatures.';

-- One row per event the alerter delivers: 'alert.created' (a fraud_alerts message; event_id =
-- alert_id, so a redelivered message is recognised) and 'alert.resolved' (an analyst resolved it).
-- body is the exact JSON sent to subscribers (for alert.created: the fraud_alerts value bytes).
CREATE TABLE alert_events (
    event_id         uuid PRIMARY KEY,
    alert_id         uuid NOT NULL,
    payment_id       uuid NOT NULL,
    event_type       text NOT NULL CHECK (event_type IN ('alert.created', 'alert.resolved')),
    decision         text NOT NULL CHECK (decision IN ('review', 'block')),
    score            smallint,
    country          text,
    body             text NOT NULL,
    source_partition integer,        -- fraud_alerts partition/offset it came from
    source_offset    bigint,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alert_events_created_uq ON alert_events (alert_id) WHERE event_type = 'alert.created';
CREATE INDEX alert_events_alert_idx ON alert_events (alert_id);

-- The delivery log: one row per (event, subscription), its state and retry schedule. Rows are
-- claimed by any alerter instance with FOR UPDATE SKIP LOCKED; an in_flight row carries a lease
-- (next_attempt_at) after which another instance may take it over (the holder crashed).
CREATE TABLE deliveries (
    delivery_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id        uuid NOT NULL REFERENCES alert_events (event_id),
    alert_id        uuid NOT NULL,
    subscription_id bigint NOT NULL REFERENCES subscriptions (subscription_id),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,  -- attempts started, ever
    attempt_base    integer NOT NULL DEFAULT 0,  -- attempts before the last manual re-drive
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- pending: due; in_flight: lease end
    last_attempt_at timestamptz,
    last_status     integer,         -- HTTP status (SMTP reply code) of the last attempt; NULL: none
    last_error      text,
    last_latency_ms integer,
    failure_reason  text CHECK (failure_reason IN ('rejected', 'exhausted')),
    locked_by       text,            -- alerter instance holding an in_flight row
    created_at      timestamptz NOT NULL DEFAULT now(),
    redriven_at     timestamptz,
    delivered_at    timestamptz,
    finished_at     timestamptz,
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX deliveries_due_idx ON deliveries (subscription_id, next_attempt_at)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX deliveries_alert_idx ON deliveries (alert_id);
CREATE INDEX deliveries_state_idx ON deliveries (state, finished_at);

-- Every attempt, for the record (the schedule actually followed, the answers received).
CREATE TABLE delivery_attempts (
    delivery_id uuid NOT NULL REFERENCES deliveries (delivery_id),
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    status      integer,
    error       text,
    latency_ms  integer,
    retry_in_ms bigint,              -- outcome retry: the delay chosen before the next attempt
    alerter_id  text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Kafka messages the alerter must publish, written in the same transaction as the state change
-- that causes them and produced by the alerter's outbox pump (at least once): dead letters to
-- fraud_alerts.dlq and analyst outcomes to payment_outcomes. headers: [[name, value], ...].
CREATE TABLE outbox (
    outbox_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('dlq', 'outcome')),
    msg_key     bytea,
    msg_value   bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now(),
    produced_at timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (outbox_id) WHERE produced_at IS NULL;

-- ---- analyst workflow on alerts ---------------------------------------------------------------

ALTER TABLE alerts
    ADD COLUMN resolution_note text CHECK (length(resolution_note) <= 500), -- no personal data
    ADD CONSTRAINT alerts_resolution_chk CHECK ((status = 'resolved') = (resolution IS NOT NULL)),
    ADD CONSTRAINT alerts_status_by_chk CHECK (status = 'new' OR status_by IS NOT NULL);

CREATE TABLE alert_history (
    alert_id   uuid NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    status     text NOT NULL,
    resolution text,
    changed_by text,
    note       text
);
CREATE INDEX alert_history_alert_idx ON alert_history (alert_id, changed_at);

-- ---- functions --------------------------------------------------------------------------------

-- Creates the deliveries of the given events for every matching active subscription (event type,
-- minimum decision, country filter). Idempotent. Returns the number created and wakes the alerters.
CREATE FUNCTION alerter_enqueue_deliveries(p_events uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO deliveries (event_id, alert_id, subscription_id)
    SELECT e.event_id, e.alert_id, s.subscription_id
    FROM alert_events e
    JOIN subscriptions s ON s.active
        AND e.event_type = ANY (s.event_types)
        AND (s.min_decision = 'review' OR e.decision = 'block')
        AND (s.countries IS NULL OR e.country = ANY (s.countries))
    WHERE e.event_id = ANY (p_events)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('fraudshield_deliveries', '');
    END IF;
    RETURN n;
END $$;

-- The consumer's batch: records fraud_alerts messages ([{alert_id, payment_id, decision, score,
-- country, created_at, body, partition, offset}]) and creates the deliveries of the NEW ones only:
-- a redelivered message (same alert_id) changes nothing. Also creates the alerts row when the
-- scorer's is missing and the payment is known (the scorer writes it first; this is a safety net).
CREATE FUNCTION alerter_record_alerts(p_alerts jsonb, OUT new_events integer,
                                      OUT new_deliveries integer)
LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
BEGIN
    WITH ins AS (
        INSERT INTO alert_events (event_id, alert_id, payment_id, event_type, decision, score,
                                  country, body, source_partition, source_offset)
        SELECT x.alert_id, x.alert_id, x.payment_id, 'alert.created', x.decision, x.score,
               x.country, x.body, x.partition, x."offset"
        FROM jsonb_to_recordset(p_alerts) AS x(alert_id uuid, payment_id uuid, decision text,
             score smallint, country text, body text, partition integer, "offset" bigint)
        ON CONFLICT DO NOTHING
        RETURNING event_id)
    SELECT coalesce(array_agg(event_id), '{}') INTO ids FROM ins;
    new_events := cardinality(ids);
    new_deliveries := alerter_enqueue_deliveries(ids);
    INSERT INTO alerts (alert_id, payment_id, decision, score, created_at)
    SELECT x.alert_id, x.payment_id, x.decision, coalesce(x.score, 0), coalesce(x.created_at, now())
    FROM jsonb_to_recordset(p_alerts) AS x(alert_id uuid, payment_id uuid, decision text,
         score smallint, created_at timestamptz)
    WHERE x.alert_id = ANY (ids)
      AND EXISTS (SELECT 1 FROM payments p WHERE p.payment_id = x.payment_id)
    ON CONFLICT DO NOTHING;
END $$;

-- Claims due deliveries: for each subscription p_subs[i] at most p_caps[i] (the caller's free
-- capacity and circuit breaker decide), oldest due first, skipping rows other instances hold.
-- Claimed rows become in_flight with a lease of p_lease_ms and one more attempt.
CREATE FUNCTION alerter_claim(p_subs bigint[], p_caps integer[], p_alerter text, p_lease_ms bigint)
RETURNS TABLE (delivery_id uuid, subscription_id bigint, attempt integer, retry_number integer,
               age_ms bigint, alert_id uuid, payment_id uuid, event_type text, decision text,
               body text)
LANGUAGE sql AS $$
    WITH caps AS (
        SELECT * FROM unnest(p_subs, p_caps) AS c(sid, cap) WHERE cap > 0
    ), picked AS (
        SELECT x.delivery_id
        FROM caps CROSS JOIN LATERAL (
            SELECT d.delivery_id FROM deliveries d
            WHERE d.subscription_id = caps.sid AND d.state IN ('pending', 'in_flight')
              AND d.next_attempt_at <= now()
            ORDER BY d.next_attempt_at
            LIMIT caps.cap
            FOR UPDATE SKIP LOCKED) x
    ), claimed AS (
        UPDATE deliveries d
        SET state = 'in_flight', attempts = d.attempts + 1, locked_by = p_alerter,
            last_attempt_at = now(), next_attempt_at = now() + p_lease_ms * interval '1 millisecond'
        FROM picked
        WHERE d.delivery_id = picked.delivery_id
        RETURNING d.*)
    SELECT c.delivery_id, c.subscription_id, c.attempts, c.attempts - c.attempt_base,
           (extract(epoch FROM now() - coalesce(c.redriven_at, c.created_at)) * 1000)::bigint,
           e.alert_id, e.payment_id, e.event_type, e.decision, e.body
    FROM claimed c JOIN alert_events e ON e.event_id = c.event_id
$$;

-- Records the end of one attempt (p_outcome delivered / retry / failed). Applies only while the
-- caller still holds the delivery (same attempt, in_flight): a stale instance whose lease ran out
-- changes nothing (returns false). A failed delivery is dead-lettered through the outbox in the
-- same transaction.
CREATE FUNCTION alerter_delivery_result(p_delivery uuid, p_attempt integer, p_outcome text,
                                        p_status integer, p_error text, p_latency_ms integer,
                                        p_retry_in_ms bigint, p_failure_reason text,
                                        p_alerter text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    d deliveries;
    e alert_events;
    sname text;
BEGIN
    UPDATE deliveries SET
        state = CASE p_outcome WHEN 'retry' THEN 'pending' ELSE p_outcome END,
        last_status = p_status, last_error = p_error, last_latency_ms = p_latency_ms,
        next_attempt_at = CASE p_outcome WHEN 'retry'
                          THEN now() + p_retry_in_ms * interval '1 millisecond'
                          ELSE next_attempt_at END,
        delivered_at = CASE p_outcome WHEN 'delivered' THEN now() END,
        finished_at = CASE WHEN p_outcome <> 'retry' THEN now() END,
        failure_reason = CASE p_outcome WHEN 'failed' THEN p_failure_reason END,
        locked_by = NULL
    WHERE delivery_id = p_delivery AND attempts = p_attempt AND state = 'in_flight'
    RETURNING * INTO d;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO delivery_attempts (delivery_id, attempt, started_at, outcome, status, error,
                                   latency_ms, retry_in_ms, alerter_id)
    VALUES (p_delivery, p_attempt, d.last_attempt_at, p_outcome, p_status, p_error, p_latency_ms,
            CASE p_outcome WHEN 'retry' THEN p_retry_in_ms END, p_alerter)
    ON CONFLICT DO NOTHING;
    IF p_outcome = 'failed' THEN
        SELECT * INTO e FROM alert_events WHERE event_id = d.event_id;
        SELECT name INTO sname FROM subscriptions WHERE subscription_id = d.subscription_id;
        INSERT INTO outbox (kind, msg_key, msg_value, headers)
        VALUES ('dlq', convert_to(e.payment_id::text, 'UTF8'), convert_to(e.body, 'UTF8'),
                jsonb_build_array(
                    jsonb_build_array('dlq_reason', 'delivery_' || p_failure_reason),
                    jsonb_build_array('dlq_error', coalesce(p_error, '')),
                    jsonb_build_array('schema_version', '1'),
                    jsonb_build_array('payment_id', e.payment_id::text),
                    jsonb_build_array('alert_id', e.alert_id::text),
                    jsonb_build_array('event_type', e.event_type),
                    jsonb_build_array('delivery_id', d.delivery_id::text),
                    jsonb_build_array('subscription', sname),
                    jsonb_build_array('attempts', d.attempts::text),
                    jsonb_build_array('last_status', coalesce(p_status::text, '')),
                    jsonb_build_array('dlq_time', to_char(now() AT TIME ZONE 'UTC',
                                                          'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))));
    END IF;
    RETURN true;
END $$;

-- Re-drives a failed delivery (after the subscriber fixed its endpoint): pending again, due now,
-- with a fresh retry schedule. Returns false when it is not failed.
CREATE FUNCTION alerter_redeliver(p_delivery uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE deliveries SET state = 'pending', attempt_base = attempts, redriven_at = now(),
        next_attempt_at = now(), failure_reason = NULL, finished_at = NULL
    WHERE delivery_id = p_delivery AND state = 'failed';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('fraudshield_deliveries', '');
    RETURN true;
END $$;

-- Analyst: acknowledge (new -> acknowledged; already acknowledged: unchanged).
CREATE FUNCTION alert_acknowledge(p_alert uuid, p_by text) RETURNS alerts
LANGUAGE plpgsql AS $$
DECLARE
    a alerts;
BEGIN
    IF coalesce(p_by, '') = '' THEN
        RAISE EXCEPTION 'who acknowledges the alert is required' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO a FROM alerts WHERE alert_id = p_alert FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert %', p_alert USING ERRCODE = 'P0002';
    ELSIF a.status = 'resolved' THEN
        RAISE EXCEPTION 'alert % is already resolved (%)', p_alert, a.resolution
            USING ERRCODE = '55000';
    ELSIF a.status = 'new' THEN
        UPDATE alerts SET status = 'acknowledged', status_by = p_by, status_at = now()
        WHERE alert_id = p_alert RETURNING * INTO a;
    END IF;
    RETURN a;
END $$;

-- Analyst: resolve as confirmed_fraud or false_positive (from new or acknowledged). Resolving
-- again with another resolution corrects it (and publishes the corrected outcome); with the same
-- one it changes nothing.
CREATE FUNCTION alert_resolve(p_alert uuid, p_by text, p_resolution text, p_note text DEFAULT NULL)
RETURNS alerts
LANGUAGE plpgsql AS $$
DECLARE
    a alerts;
BEGIN
    IF coalesce(p_by, '') = '' THEN
        RAISE EXCEPTION 'who resolves the alert is required' USING ERRCODE = '22023';
    END IF;
    IF p_resolution IS NULL OR p_resolution NOT IN ('confirmed_fraud', 'false_positive') THEN
        RAISE EXCEPTION 'resolution must be confirmed_fraud or false_positive, not %', p_resolution
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO a FROM alerts WHERE alert_id = p_alert FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert %', p_alert USING ERRCODE = 'P0002';
    END IF;
    IF a.status = 'resolved' AND a.resolution = p_resolution THEN
        RETURN a;
    END IF;
    UPDATE alerts SET status = 'resolved', resolution = p_resolution, status_by = p_by,
        status_at = now(), resolution_note = p_note
    WHERE alert_id = p_alert RETURNING * INTO a;
    RETURN a;
END $$;

-- Any status change, through the functions above or a plain UPDATE: status_at is set when the
-- statement did not set it.
CREATE FUNCTION alerts_workflow_before() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status_at IS NOT DISTINCT FROM OLD.status_at THEN
        NEW.status_at := now();
    END IF;
    RETURN NEW;
END $$;

-- ... is recorded in alert_history, and a resolution (or a corrected one) publishes the outcome to
-- payment_outcomes (payment-outcome.v1.json, source "analyst", via the outbox, in this
-- transaction) and an alert.resolved event to the subscribers that asked for it. Both bodies are compact JSON in contract key order (built by
-- hand: json_build_object would add spaces).
CREATE FUNCTION alerts_workflow_after() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ev uuid;
    oid uuid;
    known text;
    cc text;
BEGIN
    INSERT INTO alert_history (alert_id, status, resolution, changed_by, note)
    VALUES (NEW.alert_id, NEW.status, NEW.resolution, NEW.status_by, NEW.resolution_note);
    IF NEW.status <> 'resolved'
       OR (OLD.status = 'resolved' AND OLD.resolution IS NOT DISTINCT FROM NEW.resolution) THEN
        RETURN NULL;
    END IF;
    known := to_char(NEW.status_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
    oid := gen_random_uuid(); -- stored in the outbox row: every (re)production carries the same id
    INSERT INTO outbox (kind, msg_key, msg_value, headers)
    VALUES ('outcome', convert_to(NEW.payment_id::text, 'UTF8'),
            convert_to('{"schema_version":1,"outcome_id":' || to_json(oid::text)
                       || ',"payment_id":' || to_json(NEW.payment_id::text)
                       || ',"outcome":' || to_json(NEW.resolution)
                       || ',"known_at":' || to_json(known) || ',"received_at":' || to_json(known)
                       || ',"source":"analyst"'
                       || coalesce(',"reason":' || to_json(NEW.resolution_note)::text, '')
                       || ',"alert_id":' || to_json(NEW.alert_id::text) || '}', 'UTF8'),
            jsonb_build_array(jsonb_build_array('schema_version', '1'),
                              jsonb_build_array('payment_id', NEW.payment_id::text),
                              jsonb_build_array('outcome_id', oid::text),
                              jsonb_build_array('alert_id', NEW.alert_id::text),
                              jsonb_build_array('content-type', 'application/json')));
    SELECT country INTO cc FROM alert_events
    WHERE alert_id = NEW.alert_id AND event_type = 'alert.created';
    IF cc IS NULL THEN
        SELECT country INTO cc FROM payments WHERE payment_id = NEW.payment_id;
    END IF;
    ev := gen_random_uuid();
    INSERT INTO alert_events (event_id, alert_id, payment_id, event_type, decision, score, country,
                              body)
    VALUES (ev, NEW.alert_id, NEW.payment_id, 'alert.resolved', NEW.decision, NEW.score, cc,
            '{"schema_version":1,"event":"alert.resolved","alert_id":' || to_json(NEW.alert_id::text)
            || ',"payment_id":' || to_json(NEW.payment_id::text)
            || ',"decision":' || to_json(NEW.decision) || ',"score":' || NEW.score
            || ',"status":"resolved","resolution":' || to_json(NEW.resolution)
            || ',"reason":' || coalesce(to_json(NEW.resolution_note)::text, 'null')
            || ',"resolved_at":' || to_json(known) || '}');
    PERFORM alerter_enqueue_deliveries(ARRAY[ev]);
    RETURN NULL;
END $$;

CREATE TRIGGER alerts_workflow_before BEFORE UPDATE OF status, resolution ON alerts
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.resolution IS DISTINCT FROM NEW.resolution)
    EXECUTE FUNCTION alerts_workflow_before();
CREATE TRIGGER alerts_workflow_after AFTER UPDATE OF status, resolution ON alerts
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.resolution IS DISTINCT FROM NEW.resolution)
    EXECUTE FUNCTION alerts_workflow_after();

-- Analysts' view: each alert with its payment and how its deliveries went.
CREATE VIEW alert_overview AS
SELECT a.alert_id, a.payment_id, a.decision, a.score, a.status, a.status_by, a.status_at,
       a.resolution, a.resolution_note, a.created_at, p.country, p.amount_minor, p.currency,
       p.currency_exp, p.user_id, p.merchant_id,
       (SELECT count(*) FROM deliveries d WHERE d.alert_id = a.alert_id AND d.state = 'delivered')
           AS deliveries_ok,
       (SELECT count(*) FROM deliveries d WHERE d.alert_id = a.alert_id AND d.state = 'failed')
           AS deliveries_failed,
       (SELECT count(*) FROM deliveries d
        WHERE d.alert_id = a.alert_id AND d.state IN ('pending', 'in_flight')) AS deliveries_pending
FROM alerts a LEFT JOIN payments p USING (payment_id);
