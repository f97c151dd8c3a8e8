#!/usr/bin/env bash
# The default rule set on the seed project's scenarios, end to end: each scenario is posted over
# HTTP to ingest (event times given, so windows are deterministic), decided by a scorer, and its
# reasons checked in PostgreSQL: high value, very high value, high-risk country, country mismatch
# (billing/shipping, and payment/billing), rapid user, IP velocity, card reuse. Then: "why was this
# blocked" answered by one query (decision_explained), the analyst role reads the views and cannot
# write, and the scorer's /health, /ready and /metrics (rule hits, decisions, consumer lag).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_seed_rules
fs_pg_start
fs_broker_start 6

secret="$FS_TEST_DIR/pii.secret"
fs_pii_secret "$secret"
port=$(fs_free_port)
admin=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=seed FS_ADMIN_PORT="$admin" FS_STATS_INTERVAL_MS=1000 FS_LOG_LEVEL=${FS_LOG_LEVEL:-info} \
    "$BUILD/bin/fraudshield-scorer"
# FS_AUTH=false: this test is about the rules, not API keys (ingest ignores it if it has no auth).
fs_bg ingest env FS_LISTEN_PORT="$port" FS_PII_SECRET_FILE="$secret" FS_AUTH=false \
    "$BUILD/bin/fraudshield-ingest"
fs_wait_for 30 curl -sf "http://127.0.0.1:$port/ready"

post() {
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "$1" "http://127.0.0.1:$port/api/v1/payments")
    [[ "$status" == 202 ]] || fs_fail "POST returned $status for $1"
}
# pay USER AMOUNT SECONDS [EXTRA JSON MEMBERS]: event time 2026-11-02T10:00:00Z + SECONDS;
# country DE unless EXTRA names one
pay() {
    local ts country='"country":"DE",'
    ts=$(date -u -d "@$((1793613600 + $3))" +%Y-%m-%dT%H:%M:%SZ)
    [[ "${4:-}" == *'"country"'* ]] && country=
    post "{\"user_id\":\"$1\",\"merchant_id\":\"shop-1\",\"amount\":\"$2\",\"currency\":\"EUR\",\"payment_method\":\"card\",$country\"timestamp\":\"$ts\"${4:+,$4}}"
}

pay hv 1500.00 0
pay vhv 6000 1
pay hrc 20 2 '"country":"NG"'
pay mis 20 3 '"billing_country":"DE","shipping_country":"GB"'
pay misb 20 4 '"billing_country":"FR"'
for i in 0 1 2 3; do pay rapid 10 $((100 + i * 30)); done                          # 4 in 90 s
for u in 1 2 3 4 5; do pay "ipu$u" 10 $((200 + u * 60)) '"ip_address":"203.0.113.9"'; done # 5 in 5 min
for u in 1 2 3; do pay "card$u" 10 $((600 + u * 300)) '"card_fingerprint":"fp-shared-1"'; done
# IP country (ingest resolves it before digesting the IP, when a GeoIP database is installed)
pay geo 10 2000 '"ip_address":"81.2.69.160","billing_country":"DE"'
total=18
decisions_at_least() { (($(fs_psql 'SELECT count(*) FROM decisions') >= $1)); }
fs_wait_for 60 decisions_at_least "$total"

# codes USER: the reasons of the user's latest payment, by weight
codes() {
    fs_psql "SELECT string_agg(r->>'code', ',' ORDER BY ord) FROM (SELECT d.reasons FROM decisions d JOIN payments p USING (payment_id) WHERE p.user_id = '$1' ORDER BY p.event_time DESC LIMIT 1) x, jsonb_array_elements(x.reasons) WITH ORDINALITY AS e(r, ord)"
}
decision() {
    fs_psql "SELECT d.decision || ' ' || d.score FROM decisions d JOIN payments p USING (payment_id) WHERE p.user_id = '$1' ORDER BY p.event_time DESC LIMIT 1"
}
fs_assert_eq HIGH_VALUE "$(codes hv)" "high value"
fs_assert_eq "review 30" "$(decision hv)" "high value decision"
fs_assert_eq VERY_HIGH_VALUE,HIGH_VALUE "$(codes vhv)" "very high value"
fs_assert_eq "block 70" "$(decision vhv)" "very high value decision"
fs_assert_eq HIGH_RISK_COUNTRY "$(codes hrc)" "high-risk country"
fs_assert_eq COUNTRY_MISMATCH "$(codes mis)" "country mismatch (billing vs shipping)"
fs_assert_eq COUNTRY_MISMATCH_BILLING "$(codes misb)" "country mismatch (payment vs billing)"
fs_assert_eq RAPID_USER "$(codes rapid)" "rapid user (4th payment in 5 min)"
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM decisions d JOIN payments p USING (payment_id) WHERE p.user_id = 'rapid' AND d.reasons @> '[{\"code\":\"RAPID_USER\"}]'")" "only the 4th is rapid"
fs_assert_eq IP_VELOCITY "$(codes ipu5)" "IP velocity (5th payment in 10 min)"
fs_assert_eq "" "$(codes ipu4)" "4 payments from one IP: no hit"
fs_assert_eq CARD_REUSE "$(codes card3)" "card reuse (3rd user in 30 min)"
fs_assert_eq "" "$(codes card2)" "2 users on one card: no hit"

if [[ -f /usr/share/GeoIP/GeoIP.dat ]]; then want=GB; else want=""; fi
fs_assert_eq "$want" "$(fs_psql "SELECT coalesce(p.ip_country, '') || coalesce(d.features->>'ip_country', '') FROM payments p JOIN decisions d USING (payment_id) WHERE p.user_id = 'geo'" | cut -c1-2)" "ip_country (GeoIP database: ${want:-none})"

# Why was it blocked? One query.
why=$(fs_psql "SELECT decision, score, reasons->0->>'code', rules_version, features->>'amount_minor' FROM decision_explained WHERE user_id = 'vhv'")
[[ "$why" == block\|70\|VERY_HIGH_VALUE\|2026.12.1+*\|600000 ]] || fs_fail "decision_explained: $why"
echo "ok: decision_explained: $why"
fs_assert_eq 3 "$(fs_psql "SELECT (features->>'vault_card_seen')::int + 1 FROM decisions d JOIN payments p USING (payment_id) WHERE p.user_id = 'card3'")" "the vault saw the card twice before"

# The analyst role reads the views, cannot write.
fs_assert_eq t "$(fs_psql "SET ROLE fraudshield_analyst; SELECT sum(payments) = $total FROM fraud_rate_by_day_country")" "analyst: fraud rate view"
fs_psql "SET ROLE fraudshield_analyst; SELECT count(*) FROM rule_hit_rates; SELECT count(*) FROM score_distribution; SELECT count(*) FROM alert_precision" >/dev/null
if fs_psql "SET ROLE fraudshield_analyst; DELETE FROM decisions" 2>/dev/null; then fs_fail "the analyst role could delete"; fi
echo "ok: fraudshield_analyst is read-only"

# Operations endpoint.
fs_assert_eq 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/health")" "/health"
fs_assert_eq 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/ready")" "/ready"
fs_wait_for 20 "curl -s http://127.0.0.1:$admin/metrics | grep -q '^fs_scorer_consumer_lag{topic=\"raw_payments\",partition=\"0\"} 0'"
metrics=$(curl -s "http://127.0.0.1:$admin/metrics")
for want in 'fs_scorer_rule_hits_total{code="RAPID_USER"} 1' 'fs_scorer_rule_hits_total{code="CARD_REUSE"} 1' \
    'fs_scorer_decisions_total{decision="block"} 1' "fs_scorer_messages_total $total" \
    'fs_scorer_payments_total{result="new"} 18' 'fs_scorer_consumer_lag_assigned 0'; do
    grep -qF "$want" <<<"$metrics" || fs_fail "metrics: no line '$want'"
done
grep -q '^fs_scorer_batch_seconds_bucket' <<<"$metrics" || fs_fail "no batch latency histogram"
batches=$(awk '$1 == "fs_scorer_batch_seconds_count" {print $2}' <<<"$metrics")
for phase in decode persist deliver commit; do # every batch timed in each phase
    fs_assert_eq "$batches" "$(awk -v n="fs_scorer_batch_phase_seconds_count{phase=\"$phase\"}" '$1 == n {print $2}' <<<"$metrics")" \
        "batches in fs_scorer_batch_phase_seconds{phase=\"$phase\"}"
done
# the phases are the batch's time: a transaction and the brokers' acknowledgements take some of it
for phase in persist deliver; do
    awk -v n="fs_scorer_batch_phase_seconds_sum{phase=\"$phase\"}" '$1 == n && $2 > 0 {f = 1} END {exit !f}' <<<"$metrics" ||
        fs_fail "no time in phase $phase"
done
grep -q '^fs_scorer_db_seconds_bucket' <<<"$metrics" || fs_fail "no PostgreSQL latency histogram"
echo "ok: /metrics"
