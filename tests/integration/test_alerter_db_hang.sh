#!/usr/bin/env bash
# Alerter against a PostgreSQL that stops answering: its connections stay open but nothing comes
# back (a TCP proxy in front of it is SIGSTOPped: no reset, no error, the kernel still
# acknowledges, so TCP keepalives and tcp_user_timeout cannot tell). Checks:
#   - a statement not answered within db-timeout-ms drops its connection (db_timeout), /ready
#     answers 503 and fs_alerter_ready is 0 (the old code: 200 and 1 forever, every database call
#     blocked), fs_alerter_db_last_success_age_seconds grows
#   - once it answers again (SIGCONT), the alerter reconnects by itself, is ready again, and the
#     alerts produced during the freeze are delivered
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_db_hang
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
al_receiver ok ok
al_cli subscriptions add --name ok --url "http://127.0.0.1:${AL_PORT[ok]}/hook" --secret "$AL_SECRET" >/dev/null
pport=$(fs_free_port)
fs_bg proxy python3 "$REPO/tests/integration/tcp_proxy.py" "$pport" "$FS_PG_PORT"
fs_wait_for 10 grep -q listening "$FS_TEST_DIR/proxy.log"
proxied=${FS_DATABASE_URL/:$FS_PG_PORT\//:$pport/}
al_start alerter FS_DATABASE_URL="$proxied" FS_DB_TIMEOUT_MS=3000
al_wait_assigned alerter
ready() { curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${AL_ADMIN[alerter]}/ready"; }
al_gen_alerts "$run" 1 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 20 "(( \$(al_requests ok True) >= 1 ))"
fs_assert_eq 200 "$(ready)" "/ready before the freeze"

kill -STOP "$(fs_pid proxy)"
al_gen_alerts "$run" 3 1 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 20 '[[ $(ready) == 503 ]]' # the old code: 200 for as long as the freeze lasts
curl -s -m 5 "http://127.0.0.1:${AL_ADMIN[alerter]}/ready"; echo
fs_assert_eq 0 "$(al_metric alerter fs_alerter_ready)" "fs_alerter_ready during the freeze"
fs_wait_for 20 grep -q '"event":"db_timeout"' "$FS_TEST_DIR/alerter.log"
age=$(al_metric alerter 'fs_alerter_db_last_success_age_seconds{side="consume"}')
echo "consume side: last successful round trip ${age}s ago"
python3 -c "import sys; sys.exit(0 if float('$age') >= 3 else 1)" || fs_fail "the consume side's age did not grow"

kill -CONT "$(fs_pid proxy)"
fs_wait_for 60 '[[ $(ready) == 200 ]]'
fs_wait_for 60 "(( \$(al_requests ok True) >= 4 ))"
fs_assert_eq 4 "$(al_sql_int 'SELECT count(*) FROM alert_events')" "alert events"
age=$(al_metric alerter 'fs_alerter_db_last_success_age_seconds{side="dispatch"}')
python3 -c "import sys; sys.exit(0 if float('$age') < 5 else 1)" || fs_fail "dispatch side still stale: ${age}s"
fs_kill alerter TERM
fs_wait_exit alerter 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status"
echo PASS
