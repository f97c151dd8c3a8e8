#!/usr/bin/env bash
# A subscriber's in-memory state in the alerter's dispatcher:
#   1. Transfers still running when a subscription is disabled and enabled again count against its
#      max-in-flight-per-subscription. The old code started the re-enabled subscription at 0: a
#      hanging subscriber got twice its limit of open requests (more with each disable/enable),
#      each holding a slot of the shared max-in-flight.
#   2. A probe that turns an open breaker half-open shows as fs_alerter_breaker_state 1 and a
#      breaker_changed open -> half_open line while it runs (the old code updated both only when a
#      result came back: the gauge stayed at 2, "open", during the probe).
#   3. A disabled subscription's breaker gauge goes away (it stayed at its last value for ever).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_sub_state
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))

# 1. The limit across a disable and an enable.
al_receiver hang hang
al_cli subscriptions add --name hang --url "http://127.0.0.1:${AL_PORT[hang]}/hook" --secret "$AL_SECRET" >/dev/null
al_start a1 FS_MAX_IN_FLIGHT_PER_SUBSCRIPTION=2 FS_HTTP_TIMEOUT_MS=30000 FS_SUBSCRIPTIONS_REFRESH_MS=200
al_wait_assigned a1
al_gen_alerts "$run" 10 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 30 "(( \$(al_requests hang True) >= 2 ))"
al_cli subscriptions disable hang >/dev/null
sleep 1 # a few refreshes: the subscription leaves the active set, its two transfers still run
al_cli subscriptions enable hang >/dev/null
sleep 2 # the old code: two more requests within one refresh
fs_assert_eq 2 "$(al_requests hang True)" "requests open to the hanging subscriber (limit 2)"
fs_kill a1 TERM
fs_wait_exit a1 30

# 2. The half-open state during a probe: one failure opens the breaker, a probe follows 1 s later
#    and hangs for the 3-second timeout.
al_start a2 FS_MAX_IN_FLIGHT_PER_SUBSCRIPTION=1 FS_HTTP_TIMEOUT_MS=3000 FS_BREAKER_THRESHOLD=1 \
    FS_BREAKER_COOLDOWN_MS=1000 FS_RETRY_BASE_MS=100
al_wait_assigned a2
fs_wait_for 30 grep -q '"event":"breaker_changed".*"to":"open"' "$FS_TEST_DIR/a2.log"
fs_wait_for 10 "[[ \$(al_metric a2 'fs_alerter_breaker_state{subscription=\"hang\"}') == 1 ]]"
grep -q '"event":"breaker_changed".*"from":"open","to":"half_open"' "$FS_TEST_DIR/a2.log" ||
    fs_fail "no breaker_changed open -> half_open line"
# 3. A subscription that leaves the active set takes its breaker gauge along: an open breaker of a
#    disabled subscription kept FraudShieldAlerterBreakerOpen firing until a restart.
breaker_series() { # 1 when a2 exports a breaker state for NAME (hang), else 0 (the page read first)
    local page
    page=$(curl -fsS "http://127.0.0.1:${AL_ADMIN[a2]}/metrics")
    grep -c "^fs_alerter_breaker_state{subscription=\"${1:-hang}\"}" <<<"$page" || true
}
fs_assert_eq 1 "$(breaker_series)" "the breaker's series before the disable"
al_cli subscriptions disable hang >/dev/null
fs_wait_for 10 "[[ \$(breaker_series) == 0 ]]"
curl -fsS "http://127.0.0.1:${AL_ADMIN[a2]}/metrics" >"$FS_TEST_DIR/a2.metrics"
grep -q '^fs_alerter_deliveries_total{subscription="hang",result="retry"}' "$FS_TEST_DIR/a2.metrics" ||
    fs_fail "the disabled subscription's counters are gone too"
al_cli subscriptions enable hang >/dev/null
fs_wait_for 10 "[[ \$(breaker_series) == 1 ]]"
# renamed in SQL: the gauge follows the name
fs_psql "UPDATE subscriptions SET name = 'hang2', updated_at = now() WHERE name = 'hang'" >/dev/null
fs_wait_for 10 "[[ \$(breaker_series hang2) == 1 && \$(breaker_series hang) == 0 ]]"
fs_kill a2 TERM
fs_wait_exit a2 30
echo PASS
