-- FraudShield schema: what the analyst role may read, UTC days in the analyst views, and the
-- reviewer role (docs/analyst.md "Roles", docs/upgrading.md "007").

-- ---- no more automatic grants ------------------------------------------------------------------
-- 003 granted fraudshield_analyst SELECT on every table, and by default on every table created
-- later, so subscriptions.secret (the webhooks' HMAC keys, 002) became readable and anyone with the
-- role could sign alerts. The rule from now on: nothing is granted by default; each migration that
-- creates a table or view grants the analyst what it may read, explicitly (test_db_analyst
-- fails on a relation that is neither granted nor listed as withheld). The default privilege is
-- revoked for every role that holds one (003 set it for the role that ran it, which may not be
-- the one running this).
DO $$
DECLARE
    r regrole;
BEGIN
    FOR r IN SELECT DISTINCT defaclrole::regrole FROM pg_default_acl
             WHERE defaclnamespace = 'public'::regnamespace AND defaclobjtype = 'r'
               AND defaclacl::text LIKE '%fraudshield_analyst=%'
    LOOP
        IF pg_has_role(current_user, r::oid, 'USAGE') THEN
            EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA public '
                           'REVOKE SELECT ON TABLES FROM fraudshield_analyst', r);
        ELSE
            RAISE WARNING 'default privileges of role % still grant fraudshield_analyst SELECT on '
                          'new tables: run ALTER DEFAULT PRIVILEGES FOR ROLE % IN SCHEMA public '
                          'REVOKE SELECT ON TABLES FROM fraudshield_analyst as a superuser', r, r;
        END IF;
    END LOOP;
END
$$;

-- ---- secrets -----------------------------------------------------------------------------------
-- subscriptions: secret is the raw HMAC key, and url may carry credentials (smtp://user:pass@...,
-- a token in the query string): the analyst reads every other column, and subscription_overview
-- shows the url as scheme://host[:port] only. A `SELECT *` on the table is now refused for the
-- analyst (it names the withheld columns).
REVOKE SELECT ON subscriptions FROM fraudshield_analyst;
GRANT SELECT (subscription_id, name, kind, event_types, min_decision, countries, ca_file, email_to,
              active, created_at, updated_at)
    ON subscriptions TO fraudshield_analyst;

CREATE VIEW subscription_overview AS
SELECT s.subscription_id, s.name, s.kind,
       (SELECT m[1] || m[2]
        FROM regexp_match(s.url, '^([A-Za-z][A-Za-z0-9+.-]*://)(?:[^/?#]*@)?([^/?#@]*)') AS r(m))
           AS endpoint,
       s.event_types, s.min_decision, s.countries, s.email_to, s.active, s.created_at, s.updated_at
FROM subscriptions s;
COMMENT ON VIEW subscription_overview IS 'Alert subscribers without their secrets: endpoint is the url''s scheme://host[:port] (user, password, path and query removed).';
GRANT SELECT ON subscription_overview TO fraudshield_analyst;

-- ---- UTC days ----------------------------------------------------------------------------------
-- The views grouped by date_trunc('day', <timestamptz>), which cuts days in the session's
-- TimeZone: the same query gave different rows in New York and Tokyo. Days are UTC now. day keeps
-- its name and type (timestamptz, now always 00:00 UTC: psql prints it in the session's TimeZone,
-- e.g. 19:00 or 20:00 the day before in New York), and utc_date (date) is added at the end. Use
-- utc_date to read or compare the day: day::date would convert in the session's TimeZone again.
CREATE OR REPLACE VIEW fraud_rate_by_day_country AS
SELECT (p.event_time AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC' AS day,
       coalesce(p.country, 'UNK') AS country,
       count(*) AS payments,
       count(*) FILTER (WHERE d.decision = 'block') AS blocked,
       count(*) FILTER (WHERE d.decision = 'review') AS reviewed,
       count(*) FILTER (WHERE l.outcome IN ('confirmed_fraud', 'chargeback')) AS fraud,
       round(count(*) FILTER (WHERE l.outcome IN ('confirmed_fraud', 'chargeback'))::numeric / count(*), 6) AS fraud_rate,
       (p.event_time AT TIME ZONE 'UTC')::date AS utc_date
FROM payments p
JOIN decisions d USING (payment_id)
LEFT JOIN payment_labels l USING (payment_id)
GROUP BY (p.event_time AT TIME ZONE 'UTC')::date, 2;

CREATE OR REPLACE VIEW rule_hit_rates AS
SELECT (d.decided_at AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC' AS day,
       r->>'code' AS code,
       count(*) AS hits,
       round(count(*)::numeric / max(t.decisions), 6) AS hit_rate,
       (d.decided_at AT TIME ZONE 'UTC')::date AS utc_date
FROM decisions d
CROSS JOIN LATERAL jsonb_array_elements(d.reasons) r
JOIN (SELECT (decided_at AT TIME ZONE 'UTC')::date AS utc_date, count(*) AS decisions
      FROM decisions GROUP BY 1) t
  ON t.utc_date = (d.decided_at AT TIME ZONE 'UTC')::date
GROUP BY (d.decided_at AT TIME ZONE 'UTC')::date, 2;

CREATE OR REPLACE VIEW score_distribution AS
SELECT (decided_at AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC' AS day,
       (score / 10) * 10 AS score_from, decision,
       count(*) AS decisions,
       (decided_at AT TIME ZONE 'UTC')::date AS utc_date
FROM decisions
GROUP BY (decided_at AT TIME ZONE 'UTC')::date, 2, 3;

CREATE OR REPLACE VIEW alert_precision AS
SELECT (a.created_at AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC' AS day, a.decision,
       count(*) AS alerts,
       count(l.outcome) AS labelled,
       count(*) FILTER (WHERE l.outcome IN ('confirmed_fraud', 'chargeback')) AS confirmed,
       count(*) FILTER (WHERE l.outcome IN ('false_positive', 'legitimate')) AS false_positives,
       round(count(*) FILTER (WHERE l.outcome IN ('confirmed_fraud', 'chargeback'))::numeric
             / nullif(count(l.outcome), 0), 6) AS precision,
       (a.created_at AT TIME ZONE 'UTC')::date AS utc_date
FROM alerts a
LEFT JOIN payment_labels l USING (payment_id)
GROUP BY (a.created_at AT TIME ZONE 'UTC')::date, 2;

-- ---- the reviewer role -------------------------------------------------------------------------
-- Reads what the analyst reads, and acknowledges and resolves alerts through the two functions
-- below only (no UPDATE on alerts, no EXECUTE on anything else that writes). They record the
-- login (session_user) as status_by, not a name the caller types: a reviewer cannot act under
-- another's name. SECURITY DEFINER: they run with their owner's (the migrating role's) privileges,
-- with a fixed search_path; alert_acknowledge / alert_resolve keep their free-text p_by for the
-- service (`fraudshield-alerter alerts ack --by`).
--
-- Roles are an administrator's business where the service login may not create roles (a managed
-- PostgreSQL; deploy/postgres/roles.sql creates them beforehand): without that right this only
-- warns, and the functions are installed anyway, callable by the service alone until an
-- administrator runs roles.sql. A start-up must never fail on it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraudshield_reviewer') THEN
        BEGIN
            CREATE ROLE fraudshield_reviewer NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'role fraudshield_reviewer not created (this login may not create roles): '
                          'run deploy/postgres/roles.sql as an administrator';
            RETURN;
        END;
    END IF;
    IF NOT pg_has_role('fraudshield_reviewer', 'fraudshield_analyst', 'MEMBER') THEN
        BEGIN
            GRANT fraudshield_analyst TO fraudshield_reviewer;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'fraudshield_reviewer is not a member of fraudshield_analyst (this login '
                          'may not grant it): run deploy/postgres/roles.sql as an administrator';
        END;
    END IF;
END
$$;

CREATE FUNCTION reviewer_acknowledge(p_alert uuid) RETURNS alerts
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    RETURN public.alert_acknowledge(p_alert, session_user::text);
END $$;

CREATE FUNCTION reviewer_resolve(p_alert uuid, p_resolution text, p_note text DEFAULT NULL)
RETURNS alerts
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    RETURN public.alert_resolve(p_alert, session_user::text, p_resolution, p_note);
END $$;

REVOKE EXECUTE ON FUNCTION reviewer_acknowledge(uuid), reviewer_resolve(uuid, text, text) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraudshield_reviewer') THEN
        GRANT EXECUTE ON FUNCTION reviewer_acknowledge(uuid), reviewer_resolve(uuid, text, text)
            TO fraudshield_reviewer;
    END IF;
END
$$;
