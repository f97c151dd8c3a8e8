#!/usr/bin/env bash
# The analyst's and the reviewer's PostgreSQL roles (migrations 003, 007; docs/analyst.md "Roles"):
# - an analyst login cannot read subscriptions.secret (the webhooks' HMAC keys) nor the url (it may
#   carry credentials), reads the other columns, subscription_overview and every view;
# - nothing is granted by default any more: a new table is not readable until a migration grants
#   it, and every relation is either granted or deliberately withheld (a new migration must decide);
# - the views' days are UTC days whatever the session's TimeZone (rows at 00:30 and 23:30 UTC on
#   one day, read from New York and Tokyo);
# - a reviewer login acknowledges and resolves alerts through reviewer_acknowledge/_resolve only,
#   recorded under its own login name; an analyst cannot call them, a reviewer cannot UPDATE alerts;
# - on a database created by PostgreSQL 14 or older (every role may CREATE in schema public; granted
#   here before migrating), neither role can create anything (009): a function of theirs could
#   otherwise run as the schema's owner from the alert workflow's trigger; the alerter's read-only
#   commands (alerts list) work for an analyst login all the same.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup db_analyst
fs_pg_start
fs_psql "GRANT CREATE ON SCHEMA public TO PUBLIC" >/dev/null # PostgreSQL 14's default
# A scorer migrates first and then gives up on an unreachable broker: enough to apply the schema.
fs_bg migrate env FS_BROKERS=127.0.0.1:1 FS_STARTUP_TIMEOUT_MS=1500 "$BUILD/bin/fraudshield-scorer"
fs_wait_exit migrate 60
grep -q '"event":"db_ready"' "$FS_TEST_DIR/migrate.log" || fs_fail "the scorer did not migrate"

# as LOGIN SQL: runs SQL as that login (trust authentication in the test cluster).
as() {
    psql "postgresql://$1@127.0.0.1:$FS_PG_PORT/fraudshield" -X -q -At -v ON_ERROR_STOP=1 -c "$2"
}
# denied LOGIN SQL: SQL must fail with "permission denied".
denied() {
    local out
    if out=$(as "$1" "$2" 2>&1); then fs_fail "$1 was allowed: $2 -> $out"; fi
    [[ "$out" == *"permission denied"* ]] || fs_fail "$1: $2 failed, not with permission denied: $out"
    echo "ok: $1 denied: $2"
}

fs_psql "CREATE ROLE alice LOGIN IN ROLE fraudshield_analyst;
         CREATE ROLE rita LOGIN IN ROLE fraudshield_reviewer;" >/dev/null
# Two payments on 2024-03-10 UTC, at 00:30 and 23:30 (in New York the first is on the 9th, in Tokyo
# the second is on the 11th), both flagged by one rule and alerted; a webhook subscription whose url
# carries credentials.
fs_psql "
INSERT INTO subscriptions (name, url, secret, event_types)
VALUES ('soc', 'https://user:pw@hooks.example.com:8443/fraud?token=abc', 'very-secret-hmac-key-0123456789',
        '{alert.created,alert.resolved}');
INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
                      payment_method, country, event_time, ingest_time, source_partition, source_offset)
SELECT md5(i::text)::uuid, 'u1', 'm1', 600000, 'EUR', 2, 'card', 'DE', t, t, 0, i
FROM (VALUES (1, timestamptz '2024-03-10 00:30:00+00'), (2, timestamptz '2024-03-10 23:30:00+00')) v(i, t);
INSERT INTO decisions (payment_id, decision, score, reasons, features, rules_version, scorer_id,
                       scoring_latency_us, decided_at)
SELECT payment_id, 'block', 75, '[{\"code\":\"VERY_HIGH_VALUE\",\"severity\":\"high\",\"weight\":75,\"message\":\"m\"}]',
       json_build_object('model_score', CASE WHEN source_offset = 1 THEN 0.2 ELSE 0.9 END),
       'v1+test', 'scorer-1', 100, event_time FROM payments;
INSERT INTO alerts (alert_id, payment_id, decision, score, created_at)
SELECT payment_id, payment_id, 'block', 75, event_time FROM payments;" >/dev/null
a1=$(fs_psql "SELECT md5('1')::uuid")
a2=$(fs_psql "SELECT md5('2')::uuid")

# ---- secrets ------------------------------------------------------------------------------------
denied alice "SELECT secret FROM subscriptions"
denied alice "SELECT * FROM subscriptions"
denied alice "SELECT url FROM subscriptions"
fs_assert_eq "soc|webhook|t" "$(as alice "SELECT name, kind, active FROM subscriptions")" "analyst reads the other subscription columns"
fs_assert_eq "soc|https://hooks.example.com:8443" "$(as alice "SELECT name, endpoint FROM subscription_overview")" \
    "subscription_overview: scheme://host:port only"
# an '@' after the host (a query parameter) is not userinfo: the host stays the endpoint
fs_psql "INSERT INTO subscriptions (name, url, secret, event_types)
         VALUES ('q', 'https://hooks.example.com/x?email=a@b.example', 'another-secret-0123456789', '{alert.created}')" >/dev/null
fs_assert_eq "https://hooks.example.com" "$(as alice "SELECT endpoint FROM subscription_overview WHERE name = 'q'")" \
    "subscription_overview with an '@' in the query"
# a password with an unencoded '/' ends the authority early: no endpoint rather than "user:pa" (012)
fs_psql "INSERT INTO subscriptions (name, url, secret, event_types)
         VALUES ('slash', 'https://user:pa/ss@hooks.example.com/x', 'another-secret-0123456789', '{alert.created}')" >/dev/null
fs_assert_eq "" "$(as alice "SELECT endpoint FROM subscription_overview WHERE name = 'slash'")" \
    "subscription_overview of a url whose authority is not host[:port]"
fs_psql "DELETE FROM subscriptions WHERE name IN ('q', 'slash')" >/dev/null
# No column named like a credential is readable by the analyst, in any table or view.
fs_assert_eq "" "$(fs_psql "SELECT string_agg(c.relname || '.' || a.attname, ', ')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname ~* '(secret|password|passwd|token|api_?key|private)'
      AND has_column_privilege('fraudshield_analyst', c.oid, a.attnum, 'SELECT')")" \
    "credential-like columns readable by the analyst"

# ---- nothing of theirs in schema public (009) ----------------------------------------------------
fs_assert_eq f "$(fs_psql "SELECT has_schema_privilege('public', 'public', 'CREATE')")" "PUBLIC may create in public"
denied alice "CREATE TABLE public.loot (k text)"
denied rita "CREATE FUNCTION public.to_json(text) RETURNS json LANGUAGE sql AS 'SELECT NULL::json'"

# ---- the privilege rule: explicit grants only -------------------------------------------------------
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM pg_default_acl WHERE defaclacl::text LIKE '%fraudshield_analyst=%'")" \
    "default privileges granting the analyst"
fs_psql "CREATE TABLE later_secrets (k text)" >/dev/null
denied alice "SELECT k FROM later_secrets"
fs_psql "DROP TABLE later_secrets" >/dev/null
# Every table and view is granted to the analyst, or withheld on purpose (only these: a new
# relation needs a GRANT in its migration, or a line here saying why not).
withheld="subscriptions" # the secret and the url: columns granted, not the table (007)
fs_assert_eq "$withheld" "$(fs_psql "SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class
    WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v', 'm', 'p', 'f')
      AND NOT has_table_privilege('fraudshield_analyst', oid, 'SELECT')")" \
    "relations the analyst cannot SELECT as a whole"

# ---- UTC days ---------------------------------------------------------------------------------------
for tz in UTC America/New_York Asia/Tokyo; do
    set_tz="SET TimeZone = '$tz';"
    utc_day="to_char(min(day) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"
    fs_assert_eq "1|2024-03-10 00:00|2|2" "$(as alice "$set_tz
        SELECT count(*), $utc_day, sum(payments), sum(blocked) FROM fraud_rate_by_day_country")" \
        "fraud_rate_by_day_country in $tz: one day (count, day in UTC, payments, blocked)"
    fs_assert_eq "1|2024-03-10 00:00|2|1.000000" "$(as alice "$set_tz
        SELECT count(*), $utc_day, sum(hits), min(hit_rate) FROM rule_hit_rates")" "rule_hit_rates in $tz"
    fs_assert_eq "1|2024-03-10 00:00|2" "$(as alice "$set_tz
        SELECT count(*), $utc_day, sum(decisions) FROM score_distribution")" "score_distribution in $tz"
    fs_assert_eq "1|2024-03-10 00:00|2" "$(as alice "$set_tz
        SELECT count(*), $utc_day, sum(alerts) FROM alert_precision")" "alert_precision in $tz"
    fs_assert_eq "2024-03-10 2024-03-10 2024-03-10 2024-03-10" "$(as alice "$set_tz
        SELECT concat_ws(' ', (SELECT min(utc_date) FROM fraud_rate_by_day_country),
                              (SELECT min(utc_date) FROM rule_hit_rates),
                              (SELECT min(utc_date) FROM score_distribution),
                              (SELECT min(utc_date) FROM alert_precision))")" "utc_date of the four views in $tz"
done
# The review queue (docs/analyst.md): equal scores, the higher model probability first (010).
fs_assert_eq "$a2 $a1" "$(as alice "SELECT string_agg(alert_id::text, ' ' ORDER BY score DESC,
    model_score DESC NULLS LAST, created_at) FROM alert_overview WHERE status = 'new'")" \
    "the queue orders equal scores by model_score"
for v in decision_explained payment_labels alert_overview; do
    as alice "SELECT count(*) FROM $v" >/dev/null || fs_fail "the analyst cannot read $v"
done

# The read-only examples of docs/analyst.md (its sql blocks but the roles' creation and the
# reviewer's) run as the analyst.
awk '/^```sql/ { f = 1; b = ""; next }
     /^```/ && f { f = 0; if (b !~ /CREATE ROLE|reviewer_/) printf "%s", b; next }
     f { b = b $0 "\n" }' "$REPO/docs/analyst.md" >"$FS_TEST_DIR/analyst-examples.sql"
(($(grep -c '^SELECT' "$FS_TEST_DIR/analyst-examples.sql") >= 7)) || fs_fail "docs/analyst.md: examples not found"
psql "postgresql://alice@127.0.0.1:$FS_PG_PORT/fraudshield" -X -q -v ON_ERROR_STOP=1 \
    -f "$FS_TEST_DIR/analyst-examples.sql" >/dev/null || fs_fail "an example of docs/analyst.md failed for the analyst"

# The alerter's read-only commands work for an analyst login (they used to try CREATE TABLE IF NOT
# EXISTS schema_migrations, refused without the right to create in the schema).
FS_DATABASE_URL="postgresql://alice@127.0.0.1:$FS_PG_PORT/fraudshield" "$BUILD/bin/fraudshield-alerter" \
    alerts list >"$FS_TEST_DIR/alerts-list.out" 2>&1 || fs_fail "alerts list as the analyst: $(cat "$FS_TEST_DIR/alerts-list.out")"
grep -q "$a1" "$FS_TEST_DIR/alerts-list.out" || fs_fail "alerts list as the analyst: alert $a1 not listed"

# ---- the reviewer -----------------------------------------------------------------------------------
denied alice "SELECT reviewer_acknowledge('$a1')"
denied alice "SELECT alert_acknowledge('$a1', 'alice')"
denied rita "SELECT alert_acknowledge('$a1', 'mallory')"
denied rita "UPDATE alerts SET status = 'acknowledged', status_by = 'mallory' WHERE alert_id = '$a1'"
denied rita "SELECT secret FROM subscriptions"
fs_assert_eq "acknowledged|rita" "$(as rita "SELECT status, status_by FROM reviewer_acknowledge('$a1')")" \
    "reviewer_acknowledge records the login"
fs_assert_eq "resolved|confirmed_fraud|rita" \
    "$(as rita "SELECT status, resolution, status_by FROM reviewer_resolve('$a2', 'confirmed_fraud', 'card reported stolen')")" \
    "reviewer_resolve records the login"
fs_assert_eq "rita" "$(fs_psql "SELECT string_agg(DISTINCT changed_by, ',') FROM alert_history")" "alert_history.changed_by"
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM outbox WHERE kind = 'outcome'")" "the resolution is published (outbox)"
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM deliveries d JOIN alert_events e USING (event_id)
                           WHERE e.event_type = 'alert.resolved'")" "alert.resolved delivery queued"
if out=$(as rita "SELECT reviewer_resolve('$a1', 'maybe')" 2>&1); then fs_fail "a bad resolution was accepted"; fi
[[ "$out" == *"resolution must be confirmed_fraud or false_positive"* ]] || fs_fail "bad resolution: $out"
fs_assert_eq "2" "$(as rita "SELECT sum(alerts) FROM alert_precision")" "the reviewer reads the views"

# ---- corrections (012) --------------------------------------------------------------------------------
# A resolution corrected in the same transaction (a GUI client in manual-commit mode) is published
# with a later known_at: the correction is the current label, whatever the tie rule says.
as rita "BEGIN; SELECT reviewer_resolve('$a1', 'confirmed_fraud', NULL);
         SELECT reviewer_resolve('$a1', 'false_positive', 'customer confirmed'); COMMIT;" >/dev/null
fs_assert_eq "confirmed_fraud false_positive" "$(fs_psql "SELECT string_agg(v->>'outcome', ' ' ORDER BY v->>'known_at')
    FROM (SELECT convert_from(msg_value, 'UTF8')::json AS v FROM outbox WHERE kind = 'outcome') o
    WHERE v->>'payment_id' = '$a1' HAVING count(DISTINCT v->>'known_at') = 2")" \
    "two resolutions in one transaction: distinct known_at, the correction later"
# A resolved alert is not reopened (its label would stay current downstream): corrected instead.
if out=$(fs_psql "UPDATE alerts SET status = 'acknowledged', resolution = NULL WHERE alert_id = '$a2'" 2>&1); then
    fs_fail "a resolved alert was reopened"
fi
[[ "$out" == *"cannot be reopened"* ]] || fs_fail "reopening a resolved alert: $out"
echo "ok: a resolved alert cannot be reopened"
# The note is published as the outcome's reason: at most 500 bytes (250 two-byte characters pass,
# 300 do not).
as rita "SELECT reviewer_resolve('$a2', 'false_positive', repeat('é', 250))" >/dev/null
if as rita "SELECT reviewer_resolve('$a2', 'confirmed_fraud', repeat('é', 300))" >/dev/null 2>&1; then
    fs_fail "a 600-byte note was accepted"
fi
echo "ok: resolution notes are limited to 500 bytes"
# score_distribution: ten bands of ten, 100 in the band 90-100.
fs_psql "INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
                      payment_method, country, event_time, ingest_time, source_partition, source_offset)
         VALUES (md5('3')::uuid, 'u1', 'm1', 900000, 'EUR', 2, 'card', 'DE', '2024-03-12 10:00+00', '2024-03-12 10:00+00', 0, 3);
         INSERT INTO decisions (payment_id, decision, score, reasons, features, rules_version, scorer_id,
                                scoring_latency_us, decided_at)
         VALUES (md5('3')::uuid, 'block', 100, '[]', '{}', 'v1+test', 'scorer-1', 100, '2024-03-12 10:00+00')" >/dev/null
fs_assert_eq "90" "$(as alice "SELECT score_from FROM score_distribution WHERE utc_date = '2024-03-12'")" \
    "score_distribution: the band of a score of 100"
echo "db analyst ok"
