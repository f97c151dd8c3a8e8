#!/usr/bin/env bash
# The alerting rules, their runbook and the code cannot drift apart:
#   1. deploy/k8s/prometheus-rule.yaml is what scripts/prometheus-rule.sh generates from
#      deploy/prometheus/fraudshield-rules.yaml;
#   2. the rules file has the expected structure, every alert has severity page|ticket, a summary,
#      a description and a runbook_url whose anchor is a heading of docs/operations.md, and every
#      recorded series an expression uses is recorded;
#   3. after a little traffic through the whole pipeline (ingest, 2 scorers, the alerter; payments,
#      a batch, an outcome, refused credentials, a dead letter on each DLQ, a failing webhook, a
#      rules reload), every fs_* metric an expression uses is a `# TYPE` of some process's
#      /metrics (histograms through _bucket/_sum/_count), and the label names its matchers and
#      `by (...)` use exist on its series;
#   4. the "Metrics reference" of docs/operations.md lists exactly the fs_* families the processes
#      export (every family is rendered from the start, even without series), each under its
#      process, with the scraped type and label names.
# The checks are tests/integration/promrules_check.py. FS_PROM_RULES / FS_RUNBOOK point the test
# at other files (e.g. a copy with a renamed metric, to see it fail).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup prometheus_rules
RULES=${FS_PROM_RULES:-$REPO/deploy/prometheus/fraudshield-rules.yaml}
RUNBOOK=${FS_RUNBOOK:-$REPO/docs/operations.md}
problems=0

# 1. The PrometheusRule is generated, not edited.
if ! bash "$REPO/scripts/prometheus-rule.sh" --stdout "$RULES" >"$FS_TEST_DIR/generated.yaml" ||
    ! diff -u "$REPO/deploy/k8s/prometheus-rule.yaml" "$FS_TEST_DIR/generated.yaml"; then
    echo "PROBLEM: deploy/k8s/prometheus-rule.yaml is not the output of scripts/prometheus-rule.sh (run it)"
    problems=$((problems + 1))
fi

# 2. The pipeline, with lag statistics every second.
fs_pg_start
FS_SCORER_ARGS="--stats-interval-ms=1000" fs_pipeline_start 2 6
dead_port=$(fs_free_port) # nothing listens there: every delivery attempt fails (result retry)
al_cli subscriptions add --name closed --url "http://127.0.0.1:$dead_port/hook" --secret "$AL_SECRET" >/dev/null
al_start alerter KAFKA_STATISTICS_INTERVAL_MS=1000
al_wait_assigned alerter

key=$(cat "$FS_API_KEY_FILE")
# req METHOD PATH KEY [BODY] -> the status code
req() {
    curl -s -o /dev/null -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
        -H "X-API-Key: $3" ${4:+--data-binary "$4"} "$FS_INGEST_URL$2"
}
payment() { # a blocked one (very high value): it makes a fraud alert
    printf '{"user_id":"u-%s","merchant_id":"shop-7","amount":"6000.00","currency":"EUR","payment_method":"card","country":"DE","email":"p%s@example.com","ip_address":"203.0.113.%s","card_last_four":"4242"}' "$1" "$1" "$1"
}
for i in 1 2 3 4 5; do fs_assert_eq 202 "$(req POST /api/v1/payments "$key" "$(payment "$i")")" "payment $i"; done
fs_assert_eq 200 "$(req POST /api/v1/payments/batch "$key" "[$(payment 6),$(payment 7)]")" "batch"
pid=$(curl -s -H 'Content-Type: application/json' -H "X-API-Key: $key" --data-binary "$(payment 8)" \
    "$FS_INGEST_URL/api/v1/payments" | sed -n 's/.*"payment_id": *"\([^"]*\)".*/\1/p')
[[ -n "$pid" ]] || fs_fail "no payment_id in the answer to payment 8"
fs_assert_eq 202 "$(req POST "/api/v1/payments/$pid/outcome" "$key" '{"outcome":"confirmed_fraud"}')" "outcome"
fs_assert_eq 403 "$(req GET "/api/v1/payments/$pid" "$key")" "read without the scope"
fs_assert_eq 401 "$(req POST /api/v1/payments wrong-key "$(payment 9)")" "wrong key"
echo 'not json' | fs_topic_produce raw_payments DE
echo 'not json' | fs_topic_produce payment_outcomes x
echo 'not json' | fs_topic_produce fraud_alerts x
fs_kill scorer-1 HUP # a rules reload

fs_wait_for 60 "(( \$(fs_psql 'SELECT count(*) FROM decisions') >= 8 ))"
fs_wait_for 60 fs_topic_has raw_payments.dlq 1
fs_wait_for 60 fs_topic_has payment_outcomes.dlq 1
fs_wait_for 60 fs_topic_has fraud_alerts.dlq 1
fs_wait_for 60 "(( \$(al_sql_int 'SELECT count(*) FROM delivery_attempts') >= 1 ))"
# Series appear with the statistics (lag) and the results (everything else).
metrics() { curl -fsS "$1/metrics"; }
has() { metrics "$1" | grep -q "^$2"; }
fs_wait_for 30 has "http://127.0.0.1:${FS_SCORER_ADMIN_PORTS[0]}" 'fs_scorer_consumer_lag{'
fs_wait_for 30 has "http://127.0.0.1:${FS_SCORER_ADMIN_PORTS[0]}" 'fs_scorer_rules_reloads_total{'
fs_wait_for 30 has "http://127.0.0.1:${AL_ADMIN[alerter]}" 'fs_alerter_consumer_lag{'
fs_wait_for 30 has "http://127.0.0.1:${AL_ADMIN[alerter]}" 'fs_alerter_deliveries_total{'

# 3. Scrape everything and check.
scrapes=()
metrics "$FS_INGEST_URL" >"$FS_TEST_DIR/ingest.prom"
scrapes+=("$FS_TEST_DIR/ingest.prom")
for i in "${!FS_SCORER_ADMIN_PORTS[@]}"; do
    metrics "http://127.0.0.1:${FS_SCORER_ADMIN_PORTS[$i]}" >"$FS_TEST_DIR/scorer-$i.prom"
    scrapes+=("$FS_TEST_DIR/scorer-$i.prom")
done
metrics "http://127.0.0.1:${AL_ADMIN[alerter]}" >"$FS_TEST_DIR/alerter.prom"
scrapes+=("$FS_TEST_DIR/alerter.prom")
for f in "${scrapes[@]}"; do
    echo "$(basename "$f"): $(grep -c '^# TYPE fs_' "$f") fs_* families"
done

if ! python3 "$REPO/tests/integration/promrules_check.py" "$RULES" "$RUNBOOK" "${scrapes[@]}"; then
    problems=$((problems + 1))
fi
fs_assert_eq 0 "$problems" "failed checks"
