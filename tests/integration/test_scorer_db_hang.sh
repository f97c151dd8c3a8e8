#!/usr/bin/env bash
# Scorer against a PostgreSQL that stops answering mid-stream: its connections stay open but
# nothing comes back (a TCP proxy in front of it is SIGSTOPped: no reset, no error, the kernel still
# acknowledges, so TCP keepalives and tcp_user_timeout cannot tell). Checks:
#   - the statement in flight is abandoned within db-timeout-ms (3 s here): `db_timeout` is logged,
#     fs_scorer_db_timeouts_total counts it, /ready answers 503 and fs_scorer_ready is 0, and
#     fs_scorer_db_last_success_age_seconds grows (the old code: blocked in libpq forever, /ready
#     200, nothing logged)
#   - the consume loop, retrying the batch, does not poll raw_payments (so the lag gauges keep their
#     last value): fs_scorer_consumer_last_poll_age_seconds grows (the old code: no such series)
#   - the batch is retried, never skipped nor dead-lettered: once the proxy answers again (SIGCONT)
#     every payment is in PostgreSQL exactly once, /ready answers 200 again, the loop polls again
#   - a freeze while the stream is idle shows too (the worker asks PostgreSQL every 5 s), and the
#     worker recovers by itself; SIGTERM exits 0
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_db_hang
fs_pg_start
fs_broker_start 3
gen="$REPO/tests/integration/gen_raw_payments.sh"
run=$((RANDOM + 1000))
n=${FS_DB_HANG_N:-2000}

ready() { curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/ready"; }
metric() { curl -s -m 5 "http://127.0.0.1:$admin/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
below() { python3 -c "import sys; sys.exit(0 if float('$1') < float('$2') else 1)"; }

pport=$(fs_free_port)
fs_bg proxy python3 "$REPO/tests/integration/tcp_proxy.py" "$pport" "$FS_PG_PORT"
fs_wait_for 10 grep -q listening "$FS_TEST_DIR/proxy.log"
proxied=${FS_DATABASE_URL/:$FS_PG_PORT\//:$pport/}
[[ "$proxied" != "$FS_DATABASE_URL" ]] || fs_fail "could not point the database URL at the proxy"
admin=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=scorer-hang FS_RULES_FILE="$REPO/schemas/rules/default.json" \
    FS_DATABASE_URL="$proxied" FS_DB_TIMEOUT_MS=3000 FS_ADMIN_PORT="$admin" \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer.log"

bash "$gen" "$run" "$n" 500 >"$FS_TEST_DIR/payments.txt"
(
    split -l 100 "$FS_TEST_DIR/payments.txt" "$FS_TEST_DIR/chunk."
    for f in "$FS_TEST_DIR"/chunk.*; do
        cat "$f"
        sleep 0.3
    done
) | kcat -b "$FS_BROKERS" -P -t raw_payments -K: &
producer=$!
FS_ALL_PIDS+=("$producer") # stopped by the cleanup if the test fails first

fs_wait_for 60 fs_rows_at_least decisions $((n / 5))
fs_assert_eq 200 "$(ready)" "/ready before the freeze"
fs_assert_eq 1 "$(metric fs_scorer_ready)" "fs_scorer_ready before the freeze"

kill -STOP "$(fs_pid proxy)"
stopped=$SECONDS
echo "proxy stopped: PostgreSQL no longer answers"
# within the deadline (3 s) plus the batch in hand's first statement and scheduling slack
fs_wait_for 15 grep -q '"event":"db_timeout"' "$FS_TEST_DIR/scorer.log"
fs_wait_for 15 '[[ $(ready) == 503 ]]' # the old code: 200 for as long as the freeze lasts
echo "db_timeout and /ready 503 after $((SECONDS - stopped)) s: $(curl -s -m 5 "http://127.0.0.1:$admin/ready")"
grep '"event":"db_timeout"' "$FS_TEST_DIR/scorer.log" | head -n 1 | grep -q '"level":"error"' ||
    fs_fail "db_timeout is not logged at error level"
fs_assert_eq 0 "$(metric fs_scorer_ready)" "fs_scorer_ready during the freeze"
timeouts=$(metric fs_scorer_db_timeouts_total)
python3 -c "import sys; sys.exit(0 if float('$timeouts') >= 1 else 1)" ||
    fs_fail "fs_scorer_db_timeouts_total did not count the timeout: $timeouts"
age=$(metric fs_scorer_db_last_success_age_seconds)
echo "last successful round trip ${age}s ago, $timeouts timeout(s)"
python3 -c "import sys; sys.exit(0 if float('$age') >= 3 else 1)" || fs_fail "the age did not grow: $age"
sleep 4 # still frozen: the scorer keeps retrying (reconnects cannot complete either)
fs_alive scorer || fs_fail "the scorer exited while PostgreSQL did not answer"
fs_assert_eq 503 "$(ready)" "/ready while still frozen"
grep -q '"event":"db_retry"' "$FS_TEST_DIR/scorer.log" || fs_fail "the batch was not retried"
poll_age=$(metric fs_scorer_consumer_last_poll_age_seconds)
echo "last poll of raw_payments ${poll_age}s ago"
python3 -c "import sys; sys.exit(0 if float('$poll_age') >= 5 else 1)" ||
    fs_fail "fs_scorer_consumer_last_poll_age_seconds did not grow while the batch was retried: '$poll_age'"

kill -CONT "$(fs_pid proxy)"
echo "proxy continued"
wait "$producer" || fs_fail "producing the stream failed"
fs_wait_for 120 fs_rows_at_least decisions "$n"
fs_wait_for 30 '[[ $(ready) == 200 ]]'
sleep 2

fs_assert_eq "$n" "$(fs_rows payments)" "payments rows"
fs_assert_eq "$n" "$(fs_rows decisions)" "decisions rows"
expected=$(sed 's/.*"payment_id":"\([^"]*\)".*/\1/' "$FS_TEST_DIR/payments.txt" | sort)
[[ "$expected" == "$(fs_psql 'SELECT payment_id FROM payments ORDER BY 1')" ]] ||
    fs_fail "the persisted payment ids differ from the produced ones"
fs_assert_eq $((2 * n)) "$(fs_rows velocity_events)" "velocity events (user + card per payment)"
fs_assert_eq 0 "$(fs_topic_count raw_payments.dlq)" "dead letters"
fs_wait_for 60 fs_topic_has processed_payments "$n"
age=$(metric fs_scorer_db_last_success_age_seconds)
python3 -c "import sys; sys.exit(0 if float('$age') < 10 else 1)" || fs_fail "still stale after the freeze: ${age}s"
fs_wait_for 10 'below "$(metric fs_scorer_consumer_last_poll_age_seconds)" 2' # polling again


# A freeze while no payments arrive: the idle worker's check (every 5 s) notices it too.
checks=$(grep -c '"event":"db_timeout"' "$FS_TEST_DIR/scorer.log")
kill -STOP "$(fs_pid proxy)"
stopped=$SECONDS
fs_wait_for 20 '[[ $(ready) == 503 ]]'
echo "idle: /ready 503 after $((SECONDS - stopped)) s"
fs_wait_for 10 "(( \$(grep -c '\"event\":\"db_timeout\"' '$FS_TEST_DIR/scorer.log') > checks ))"
kill -CONT "$(fs_pid proxy)"
fs_wait_for 30 '[[ $(ready) == 200 ]]'
fs_assert_eq "$n" "$(fs_rows payments)" "payments rows after the idle freeze"

fs_kill scorer TERM
fs_wait_exit scorer 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "scorer exit status"
echo "scorer db hang ok: $n payments exactly once, $timeouts timeout(s) during the freeze"
