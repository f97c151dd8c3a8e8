#!/usr/bin/env bash
# Alerter restarts: pending retries are rows in PostgreSQL, so nothing is lost when alerters die.
#   1. Two alerters share the work (FOR UPDATE SKIP LOCKED) against a receiver that fails 4 times
#      per delivery (503 + Retry-After: 1), then succeeds.
#   2. Mid-retry (first attempts failed, nothing delivered yet) alerter-1 is killed with SIGKILL
#      and alerter-2 stopped with SIGTERM. While none runs, more alerts are produced, and the first
#      ones again (duplicates).
#   3. alerter-1 starts again alone: every alert is delivered, each after its 4 failures (the
#      attempt count survived the restart), Retry-After was honoured, duplicates created nothing.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_restart
fs_pg_start
fs_broker_start 3
run=$((RANDOM + 1000))
n=12

al_receiver flaky fail:4:1
al_cli subscriptions add --name flaky --url "http://127.0.0.1:${AL_PORT[flaky]}/hook" --secret "$AL_SECRET" >/dev/null
# Schedule 1000x compressed (30 ms, 60 ms, ...): the receiver's Retry-After (1 s) sets the pace.
common=(FS_TIME_COMPRESSION=1000 FS_BREAKER_THRESHOLD=1000)
al_start alerter1 "${common[@]}"
al_start alerter2 "${common[@]}"
al_wait_assigned alerter1
al_wait_assigned alerter2

al_gen_alerts "$run" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 30 "(( \$(al_sql_int 'SELECT count(*) FROM delivery_attempts') >= $n ))"
delivered=$(al_sql_int "SELECT count(*) FROM deliveries WHERE state = 'delivered'")
fs_assert_eq 0 "$delivered" "delivered before the restart"
both=$(fs_psql "SELECT count(DISTINCT alerter_id) FROM delivery_attempts")
echo "attempts so far made by $both alerter(s): $(fs_psql "SELECT string_agg(alerter_id || '=' || c, ' ') FROM (SELECT alerter_id, count(*) c FROM delivery_attempts GROUP BY 1) x")"

fs_kill alerter1 KILL
fs_wait_exit alerter1 10
fs_kill alerter2 TERM
fs_wait_exit alerter2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "alerter2 exit status"
pending=$(al_sql_int "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'in_flight')")
echo "stopped with $pending deliveries pending: $(fs_psql "SELECT string_agg(state || '/' || attempts, ' ') FROM deliveries")"
fs_assert_eq "$n" "$pending" "deliveries pending across the restart"

# While no alerter runs: n more alerts, and the first n again.
al_gen_alerts "$run" "$n" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
al_gen_alerts "$run" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
sleep 1
al_start alerter1 "${common[@]}"
fs_wait_for 120 "(( \$(al_sql_int \"SELECT count(*) FROM deliveries WHERE state = 'delivered'\") == $((2 * n)) ))"
sleep 1

fs_assert_eq $((2 * n)) "$(al_sql_int 'SELECT count(*) FROM alert_events')" "alert events"
fs_assert_eq $((2 * n)) "$(al_sql_int 'SELECT count(*) FROM deliveries')" "deliveries (duplicates absorbed)"
# Every alert answered 200 once. Attempts cut short by the SIGKILL (no result recorded) may be
# repeated; the receiver's count then exceeds 5 for that delivery, never the successes.
fs_assert_eq $((2 * n)) "$(al_requests flaky 'r["status"] == 200')" "successful deliveries"
fs_assert_eq $((2 * n)) "$(python3 - "$FS_TEST_DIR/flaky.jsonl" <<'EOF'
import json, sys
print(len({json.loads(l)["alert"] for l in open(sys.argv[1]) if json.loads(l)["status"] == 200}))
EOF
)" "distinct alerts delivered"
fs_assert_eq 0 "$(al_sql_int 'SELECT count(*) FROM deliveries WHERE attempts < 5')" "deliveries with fewer than 5 attempts"
# Retry-After: 1 honoured: no retry within a second of the 503 before it. (Unanswered attempts have
# no status and their own schedule: one cut short by alerter2's SIGTERM is released for an
# immediate retry, one that timed out on a loaded machine waits its backoff.)
early=$(fs_psql "
    SELECT count(*) FROM delivery_attempts a JOIN delivery_attempts b
      ON b.delivery_id = a.delivery_id AND b.attempt = a.attempt + 1
    WHERE a.outcome = 'retry' AND a.status = 503
      AND (a.retry_in_ms < 1000 OR b.started_at < a.finished_at + interval '980 ms')")
fs_assert_eq 0 "$early" "retries earlier than Retry-After"
fs_assert_eq 0 "$(fs_topic_count fraud_alerts.dlq)" "dead letters"

fs_kill alerter1 TERM
fs_wait_exit alerter1 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "alerter1 exit status"
echo "alerter restart ok"
