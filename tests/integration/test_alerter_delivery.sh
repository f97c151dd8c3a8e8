#!/usr/bin/env bash
# Alerter delivery: real HTTP receivers - two that verify signatures (ok, and the C example
# receiver of docs/alerter.md), one that fails 3 times per delivery then succeeds (flaky), one that
# never answers (hang), one that answers 410 (gone) - plus a filtered subscription (block alerts
# from DE only) on the ok receiver.
# N alerts are produced to fraud_alerts, then all of them again (at-least-once upstream), plus two
# invalid messages. Checks:
#   - the ok receiver gets every alert exactly once, signed and fresh, quickly, despite the others;
#     the filtered subscription exactly the matching ones
#   - flaky: every alert delivered once, after 3 retries that follow the schedule (compressed clock)
#   - gone: one attempt each, failed for good (rejected), dead-lettered
#   - hang: timeouts, the circuit breaker opens, exhausted after max attempts, dead-lettered
#   - duplicates create no alert event and no delivery; invalid messages are dead-lettered
#   - /metrics, /ready; SIGTERM exits 0
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_delivery
fs_pg_start
fs_broker_start 3
run=$((RANDOM + 1000))
n=8

al_receiver ok ok
al_receiver flaky fail:3
al_receiver hang hang
al_receiver gone status:410
for r in ok flaky hang gone; do
    al_cli subscriptions add --name "$r" --url "http://127.0.0.1:${AL_PORT[$r]}/hook" --secret "$AL_SECRET" >/dev/null
done
# The example receiver of docs/alerter.md (C, libevent + OpenSSL) verifies signatures too.
cc -std=c11 -D_GNU_SOURCE -Wall -Werror -o "$FS_TEST_DIR/webhook_receiver" "$REPO/docs/examples/webhook_receiver.c" \
    $(pkg-config --cflags --libs libevent libcrypto)
example_port=$(fs_free_port)
fs_bg example env FS_WEBHOOK_SECRET="$AL_SECRET" "$FS_TEST_DIR/webhook_receiver" "$example_port"
al_cli subscriptions add --name example --url "http://127.0.0.1:$example_port/fraud" --secret "$AL_SECRET" >/dev/null
al_cli subscriptions add --name ok-block-de --url "http://127.0.0.1:${AL_PORT[ok]}/block-de" \
    --secret "$AL_SECRET" --min-decision block --countries de >/dev/null
al_cli subscriptions list

# Compressed clock: the default schedule (30 s doubling) 100 times faster: 300 ms, 600 ms, 1.2 s.
# Breaker: opens after 5 consecutive failures, probes after 200 ms (20 s compressed).
al_start alerter FS_TIME_COMPRESSION=100 FS_RETRY_MAX_ATTEMPTS=4 FS_BREAKER_THRESHOLD=5 \
    FS_BREAKER_COOLDOWN_MS=20000 FS_HTTP_TIMEOUT_MS=1000
al_wait_assigned alerter

t0=$(date +%s.%N)
al_gen_alerts "$run" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 20 "(( \$(al_requests ok 'r[\"path\"] == \"/hook\"') >= $n ))"
t1=$(date +%s.%N)
echo "ok receiver had all $n alerts after $(python3 -c "print(round($t1 - $t0, 2))") s"
python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 8 else 1)" ||
    fs_fail "the healthy receiver was slowed down by the others"

# The same alerts again (a redelivering scorer), and two invalid messages.
al_gen_alerts "$run" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
printf 'k1:not json\nk2:{"schema_version":1,"alert_id":"x"}\n' | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
# Three more that are no v1 alert (they were signed and delivered): the amount a JSON number, no
# created_at, an amount that is not amount_minor's
bad=$(al_gen_alerts $((run + 1)) 3)
{ sed -n 1p <<<"$bad" | sed 's/"amount":"1500.00"/"amount":1500.0/'
  sed -n 2p <<<"$bad" | sed 's/,"created_at":"[^"]*"//'
  sed -n 3p <<<"$bad" | sed 's/"amount":"1500.00"/"amount":"15.00"/'; } |
    kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:

# Everything settles: flaky delivered, gone rejected, hang exhausted.
fs_wait_for 90 "(( \$(al_sql_int \"SELECT count(*) FROM deliveries WHERE state IN ('pending', 'in_flight')\") == 0 ))"
fs_wait_for 20 fs_topic_has fraud_alerts.dlq $((2 * n + 2))
sleep 1 # a duplicate delivery would show up now

echo "--- deliveries by subscription and state"
fs_psql "SELECT s.name, d.state, coalesce(d.failure_reason, '-'), d.attempts, count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"

# --- ok: exactly once each, signed, fresh, the right ids
fs_assert_eq "$n" "$(al_requests ok 'r["path"] == "/hook"')" "requests to ok"
fs_assert_eq "$n" "$(python3 - "$FS_TEST_DIR/ok.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["path"] == "/hook"]
print(len({r["alert"] for r in rows}))
EOF
)" "distinct alerts at ok"
fs_assert_eq "$n" "$(al_requests ok 'r["path"] == "/hook" and r["sig_ok"] and r["fresh"] and r["status"] == 200 and r["alert"] == r["body_alert"] and r["event"] == "alert.created" and r["content_type"] == "application/json" and r["attempt"] == "1"')" "valid signed first-attempt deliveries at ok"
expected=$(for ((i = 0; i < n; i++)); do al_alert_id "$run" "$i"; echo; done | sort)
actual=$(python3 -c "
import json
print('\n'.join(sorted({json.loads(l)['alert'] for l in open('$FS_TEST_DIR/ok.jsonl')})))")
[[ "$expected" == "$actual" ]] || fs_fail "alert ids at ok differ from the produced ones"
echo "ok: the ok receiver got exactly the produced alert ids"
# filtered: block alerts (even i) from DE (i % 3 == 0): i = 0, 6
fs_assert_eq 2 "$(al_requests ok 'r["path"] == "/block-de" and r["sig_ok"]')" "requests to ok-block-de"

fs_assert_eq "$n" "$(grep -c '^alert.created alert=' "$FS_TEST_DIR/example.log")" "alerts accepted by the documented example receiver"
fs_assert_eq "$n" "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'example' AND d.state = 'delivered' AND d.attempts = 1")" "example deliveries"

# --- flaky: 3 x 503 then 200 for every alert, and the schedule
fs_assert_eq "$n" "$(al_requests flaky 'r["status"] == 200')" "successful deliveries at flaky"
fs_assert_eq $((4 * n)) "$(al_requests flaky 'True')" "requests to flaky (4 per alert)"
fs_assert_eq "$n" "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'flaky' AND d.state = 'delivered' AND d.attempts = 4 AND d.last_status = 200")" "flaky deliveries delivered at attempt 4"
# retry k waits base * 2^(k-1) +- 20 % (base 300 ms); the next attempt never starts before that.
bad=$(fs_psql "
    SELECT count(*) FROM delivery_attempts a JOIN deliveries d USING (delivery_id)
    JOIN subscriptions s USING (subscription_id)
    WHERE s.name = 'flaky' AND a.outcome = 'retry'
      AND a.retry_in_ms NOT BETWEEN 0.8 * 300 * 2 ^ (a.attempt - 1) AND 1.2 * 300 * 2 ^ (a.attempt - 1) + 1")
fs_assert_eq 0 "$bad" "retry delays outside the schedule"
early=$(fs_psql "
    SELECT count(*) FROM delivery_attempts a JOIN delivery_attempts b
      ON b.delivery_id = a.delivery_id AND b.attempt = a.attempt + 1
    JOIN deliveries d ON d.delivery_id = a.delivery_id JOIN subscriptions s USING (subscription_id)
    WHERE s.name = 'flaky' AND b.started_at < a.finished_at + (a.retry_in_ms - 20) * interval '1 ms'")
fs_assert_eq 0 "$early" "attempts that started before their retry time"
fs_psql "SELECT a.attempt, a.outcome, a.status, min(a.retry_in_ms), max(a.retry_in_ms) FROM delivery_attempts a JOIN deliveries d USING (delivery_id) JOIN subscriptions s USING (subscription_id) WHERE s.name = 'flaky' GROUP BY 1, 2, 3 ORDER BY 1"

# --- gone: one attempt each, rejected
fs_assert_eq "$n" "$(al_requests gone 'True')" "requests to gone (one each)"
fs_assert_eq "$n" "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'gone' AND d.state = 'failed' AND d.failure_reason = 'rejected' AND d.attempts = 1 AND d.last_status = 410")" "gone deliveries rejected after one attempt"

# --- hang: timed out, exhausted after 4 attempts, never more than 4 requests per alert
fs_assert_eq "$n" "$(al_sql_int "SELECT count(*) FROM deliveries d JOIN subscriptions s USING (subscription_id) WHERE s.name = 'hang' AND d.state = 'failed' AND d.failure_reason = 'exhausted' AND d.attempts = 4 AND d.last_error LIKE '%timed out%'")" "hang deliveries exhausted after timeouts"
hang_requests=$(al_requests hang 'True')
((hang_requests <= 4 * n)) || fs_fail "hang got $hang_requests requests (more than 4 per alert)"
echo "ok: hang got $hang_requests requests"
grep -q '"event":"breaker_changed".*"subscription":"hang".*"to":"open"' "$FS_TEST_DIR/alerter.log" ||
    fs_fail "the hang subscriber's breaker never opened"
echo "ok: the hang subscriber's circuit breaker opened"

# --- duplicates: nothing new
fs_assert_eq "$n" "$(al_sql_int "SELECT count(*) FROM alert_events")" "alert events (duplicates absorbed)"
fs_assert_eq $((5 * n + 2)) "$(al_sql_int "SELECT count(*) FROM deliveries")" "deliveries (5 per alert + 2 filtered)"

# --- dead letters: 2n failed deliveries + 5 invalid messages, with reasons
dlq=$(fs_topic_dump fraud_alerts.dlq)
fs_assert_eq "$n" "$(grep -c 'dlq_reason=delivery_rejected' <<<"$dlq")" "dead letters: rejected"
fs_assert_eq "$n" "$(grep -c 'dlq_reason=delivery_exhausted' <<<"$dlq")" "dead letters: exhausted"
fs_assert_eq 1 "$(grep -c 'dlq_reason=undecodable' <<<"$dlq")" "dead letters: undecodable"
fs_assert_eq 4 "$(grep -c 'dlq_reason=invalid_alert' <<<"$dlq")" "dead letters: invalid_alert"
for why in "amount: the decimal string" "created_at: an RFC 3339 time" "amount: the decimal string of amount_minor and currency_exp (1500.00)"; do
    grep -q "dlq_error=$why" <<<"$dlq" || fs_fail "no invalid_alert dead letter saying '$why'"
done
rejected=$(grep -m1 'dlq_reason=delivery_rejected' <<<"$dlq")
grep -q "subscription=gone,.*last_status=410" <<<"$rejected" ||
    fs_fail "a rejected delivery's dead letter lacks its subscription/status headers"
fs_assert_eq "$n" "$(grep 'dlq_reason=delivery_exhausted' <<<"$dlq" | grep -c '"alert_id":"')" "exhausted dead letters carry the alert"

# --- admin endpoint
curl -fsS "http://127.0.0.1:${AL_ADMIN[alerter]}/health" >/dev/null || fs_fail "/health"
curl -fsS "http://127.0.0.1:${AL_ADMIN[alerter]}/ready" >/dev/null || fs_fail "/ready"
metrics=$(curl -fsS "http://127.0.0.1:${AL_ADMIN[alerter]}/metrics")
grep -E '^fs_alerter_deliveries_total\{subscription="ok",result="delivered"\} '"$n"'$' <<<"$metrics" >/dev/null ||
    fs_fail "metrics: ok delivered count missing: $(grep deliveries_total <<<"$metrics" | head -20)"
grep -qE '^fs_alerter_deliveries_total\{subscription="gone",result="rejected"\} '"$n"'$' <<<"$metrics" || fs_fail "metrics: rejected"
grep -qE '^fs_alerter_deliveries_total\{subscription="flaky",result="retry"\} '$((3 * n))'$' <<<"$metrics" || fs_fail "metrics: retries"
grep -qE '^fs_alerter_breaker_state\{subscription="ok"\} 0$' <<<"$metrics" || fs_fail "metrics: breaker state"
grep -qE '^fs_alerter_breaker_opened_total\{subscription="hang"\} [1-9]' <<<"$metrics" || fs_fail "metrics: breaker opened"
grep -qE '^fs_alerter_delivery_duration_seconds_count\{subscription="ok"\} '"$n"'$' <<<"$metrics" || fs_fail "metrics: latency histogram"
grep -qE '^fs_alerter_retries_pending 0$' <<<"$metrics" || fs_fail "metrics: retries pending"
grep -qE '^fs_alerter_ready 1$' <<<"$metrics" || fs_fail "metrics: ready"
grep -qE '^fs_alerter_deliveries_total\{subscription="ok",result="exhausted"\} 0$' <<<"$metrics" ||
    fs_fail "metrics: a result that never happened is not at 0"
grep -qE '^fs_alerter_messages_total\{result="duplicate"\} '"$n"'$' <<<"$metrics" || fs_fail "metrics: duplicates"
fs_wait_for 15 "curl -fsS http://127.0.0.1:${AL_ADMIN[alerter]}/metrics | grep -qE '^fs_alerter_consumer_lag\\{topic=\"fraud_alerts\",partition=\"[0-9]+\"\\} 0$'"
echo "ok: metrics"

fs_kill alerter TERM
fs_wait_exit alerter 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "alerter exit status"
echo "alerter delivery ok"
