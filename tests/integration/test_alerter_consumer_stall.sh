#!/usr/bin/env bash
# A stuck consumer loop shows on /metrics. The alerter's consumer thread records each batch in
# PostgreSQL before it polls fraud_alerts again (deliveries run on the dispatcher's thread: a
# hanging subscriber never holds it up). Here a session holds a SHARE lock on alert_events (as a
# long migration or a manual LOCK TABLE would), so the batch's INSERT waits on it: the loop does
# not poll, librdkafka's statistics are not served, and fs_alerter_consumer_lag keeps its last
# value (0) while alerts pile up; with db-timeout-ms at 60 s, /ready still answers 200. Checks:
#   - fs_alerter_consumer_last_poll_age_seconds exists and stays under 2 s while the alerter
#     consumes (the old code: no such series);
#   - while the INSERT waits on the lock it rises past 5 s and keeps rising;
#   - once the lock is released, the batch and the alerts behind it are recorded, the age is back
#     under 2 s and the lag back to 0.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_consumer_stall
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
al_start alerter FS_DB_TIMEOUT_MS=60000 KAFKA_STATISTICS_INTERVAL_MS=300
al_wait_assigned alerter

scrape() { curl -fsS "http://127.0.0.1:${AL_ADMIN[alerter]}/metrics"; }
age() { al_metric alerter fs_alerter_consumer_last_poll_age_seconds; }
lag() { scrape | awk '/^fs_alerter_consumer_lag\{/ { s += $2 } END { print s + 0 }'; }
events() { al_sql_int 'SELECT count(*) FROM alert_events'; }
below() { python3 -c "import sys; sys.exit(0 if float('$1') < float('$2') else 1)"; }
ready() { curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${AL_ADMIN[alerter]}/ready"; }

# published from the consumer loop: right after the assignment a scrape may precede it (CI flake)
fs_wait_for 10 "scrape | grep -q '^fs_alerter_consumer_last_poll_age_seconds '"
al_gen_alerts "$run" 5 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 30 '(( $(events) == 5 ))'
fs_wait_for 10 '(( $(lag) == 0 ))'
fs_wait_for 5 'below "$(age)" 2'
echo "ok: consuming, last poll $(age)s ago, lag $(lag)"

# The stall: a SHARE lock on alert_events, held until the test terminates its session.
fs_bg locker env PGAPPNAME=stall_lock psql "$FS_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 \
    -c 'BEGIN' -c 'LOCK TABLE alert_events IN SHARE MODE' -c 'SELECT pg_sleep(600)'
fs_wait_for 10 "(( \$(al_sql_int \"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
    WHERE c.relname = 'alert_events' AND l.mode = 'ShareLock' AND l.granted\") == 1 ))"
al_gen_alerts "$run" 5 5 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 20 "(( \$(al_sql_int \"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
    AND application_name = 'fraudshield-alerter consume'\") == 1 ))"
echo "ok: the consumer's batch waits on the lock"
al_gen_alerts "$run" 20 10 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K: # the backlog behind it

fs_wait_for 30 '! below "$(age)" 5' # the old code: no series (0)
a1=$(age)
sleep 2
a2=$(age)
below "$a1" "$a2" || fs_fail "the age of the last poll did not grow: $a1 then $a2"
echo "ok: last poll ${a1}s then ${a2}s ago"
fs_assert_eq 5 "$(events)" "alert events recorded during the stall"
echo "meanwhile: fs_alerter_consumer_lag sums to $(lag) (the last statistics served) with 25 alerts" \
    "unrecorded; /ready answers $(ready)"

fs_psql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stall_lock'" >/dev/null
fs_wait_for 30 '(( $(events) == 30 ))'
fs_wait_for 10 'below "$(age)" 2'
fs_wait_for 10 '(( $(lag) == 0 ))'
echo "ok: after the lock: 30 alert events, last poll $(age)s ago, lag $(lag)"
fs_kill alerter TERM
fs_wait_exit alerter 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status"
echo PASS
