#!/usr/bin/env bash
# A secret rotated on one side first: the receiver answers 401 (the signature does not verify
# with its secret). The alerter retries, as it would an outage, and the alerts arrive once the
# subscription has the receiver's secret (docs/alerter.md, "Rotating a secret"). The old code took
# the first 401 as a final answer: every alert of the rotation window was dead-lettered.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_rotation
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
n=3
al_receiver rot ok # verifies with $AL_SECRET
al_cli subscriptions add --name rot --url "http://127.0.0.1:${AL_PORT[rot]}/hook" \
    --secret "old-secret-fedcba9876543210" >/dev/null
al_start a FS_RETRY_BASE_MS=200 FS_RETRY_MAX_DELAY_MS=1000 FS_SUBSCRIPTIONS_REFRESH_MS=200 \
    FS_BREAKER_THRESHOLD=100
al_wait_assigned a
al_gen_alerts "$run" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 30 "(( \$(al_requests rot 'r[\"status\"] == 401') >= 2 * $n ))"
fs_assert_eq 0 "$(al_sql_int "SELECT count(*) FROM deliveries WHERE state = 'failed'")" "deliveries failed for good on a 401"
fs_psql "UPDATE subscriptions SET secret = '$AL_SECRET', updated_at = now() WHERE name = 'rot'" >/dev/null
fs_wait_for 30 "(( \$(al_sql_int \"SELECT count(*) FROM deliveries WHERE state = 'delivered'\") == $n ))"
fs_assert_eq "$n" "$(al_requests rot 'r["status"] == 200')" "alerts delivered after the rotation"
fs_assert_eq 0 "$(fs_topic_count fraud_alerts.dlq)" "dead letters"
fs_kill a TERM
fs_wait_exit a 30
echo PASS
