-- FraudShield schema: a corrected resolution is always the later label; two view fixes.
--
-- 1. Each status change of an alert gets a strictly later status_at (by at least 1 ms, the
--    precision of the outcome's known_at). status_at was now(), the transaction's start: a
--    reviewer who resolved an alert and corrected it in one transaction (a GUI client in
--    manual-commit mode does that) published two outcomes with the same known_at, and the label
--    tie rule (chargeback > confirmed_fraud > false_positive > legitimate, 008) then kept
--    confirmed_fraud although the alert said false_positive: in payment_labels, the vault's fraud
--    counts and alert_precision.
-- 2. A resolved alert cannot be reopened (a plain UPDATE back to new or acknowledged, which the
--    constraints allowed with resolution = NULL): its label had been published and nothing
--    retracted it, so every consumer kept the resolution the table no longer showed. A resolution
--    is corrected by resolving again with the other one (published as the later label).
-- 3. resolution_note: at most 500 bytes of UTF-8 (was 500 characters, up to 2,000 bytes), the
--    limit of an outcome's reason on payment_outcomes, where the note is published (docs/topics.md).
--    NOT VALID: older notes are kept as they are; new and changed notes are checked.
-- 4. score_distribution: a score of 100 had a band of its own (score_from 100, one point wide);
--    it belongs to the band 90-100 now, so there are ten bands of ten as documented.
-- 5. subscription_overview: a url whose password holds an unencoded '/' or '#'
--    (https://user:pa/ss@host/) showed "https://user:pa". The endpoint is now shown only when the
--    authority parses as host[:port] (port digits), else NULL; the alerter's CLI refuses such urls
--    since this release (alerter/subs.c), a row inserted by hand may still hold one.
CREATE OR REPLACE FUNCTION alerts_workflow_before() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'resolved' AND NEW.status <> 'resolved' THEN
        RAISE EXCEPTION 'alert % is resolved (%): it cannot be reopened; resolve it again with the '
                        'other resolution to correct it', OLD.alert_id, OLD.resolution
            USING ERRCODE = '55000';
    END IF;
    IF OLD.status_at IS NULL THEN
        NEW.status_at := coalesce(NEW.status_at, now());
    ELSIF NEW.status_at IS NULL OR NEW.status_at < OLD.status_at + interval '1 millisecond' THEN
        NEW.status_at := greatest(now(), OLD.status_at + interval '1 millisecond');
    END IF;
    RETURN NEW;
END $$;

ALTER TABLE alerts ADD CONSTRAINT alerts_note_bytes_chk
    CHECK (octet_length(resolution_note) <= 500) NOT VALID;

CREATE OR REPLACE VIEW score_distribution AS
SELECT (decided_at AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC' AS day,
       least(score / 10, 9) * 10 AS score_from, decision,
       count(*) AS decisions,
       (decided_at AT TIME ZONE 'UTC')::date AS utc_date
FROM decisions
GROUP BY (decided_at AT TIME ZONE 'UTC')::date, 2, 3;

CREATE OR REPLACE VIEW subscription_overview AS
SELECT s.subscription_id, s.name, s.kind,
       (SELECT m[1] || m[2] || coalesce(m[3], '')
        FROM regexp_match(s.url, '^([A-Za-z][A-Za-z0-9+.-]*://)(?:[^/?#@]*@)?'
                                 '(\[[0-9A-Fa-f:.]+\]|[^/?#@:\[\]]+)(:[0-9]*)?(?:[/?#]|$)') AS r(m))
           AS endpoint,
       s.event_types, s.min_decision, s.countries, s.email_to, s.active, s.created_at, s.updated_at
FROM subscriptions s;
COMMENT ON VIEW subscription_overview IS 'Alert subscribers without their secrets: endpoint is the url''s scheme://host[:port] (user, password, path and query removed; NULL when the url''s authority is not host[:port]).';
