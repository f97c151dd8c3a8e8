#!/usr/bin/env bash
# A batch that PostgreSQL refuses as data is split: each alert alone, the refused one dead-lettered
# (db_rejected), the rest recorded. Here the isolation itself is cut short by a transient error
# (the good alert's own statement gets no answer: db-timeout-ms). The old code had already marked
# the batch isolated, so every retry failed as data again, never isolated again, and the partition
# stalled for good (db_retry for ever, nothing delivered, nothing dead-lettered). Now the isolation
# is done again on the next try: the good alert is delivered, the refused one dead-lettered, and
# the messages are counted once each (new 1, dead_letter 1; the old code counted the alert the
# isolation recorded as a duplicate).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_isolation_retry
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
al_receiver ok ok
al_cli subscriptions add --name ok --url "http://127.0.0.1:${AL_PORT[ok]}/hook" --secret "$AL_SECRET" >/dev/null
fs_psql "ALTER TABLE alert_events ADD CONSTRAINT test_refuse CHECK (alert_id <> '$(al_alert_id "$run" 1)')"

# Alert 0 (offset 0) is good, alert 1 (offset 1) refused; both wait on the topic, so the
# alerter's first batch holds both. The records' last member is their offset: '"offset":0}]' ends
# only the statement that records alert 0 alone (the batch's ends with offset 1), and its reply is
# held on the first connection that sends it.
al_gen_alerts "$run" 2 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -p 0 -K:
pport=$(fs_free_port)
fs_bg proxy python3 "$REPO/tests/integration/tcp_proxy.py" "$pport" "$FS_PG_PORT" '"offset":0}]' 1
fs_wait_for 10 grep -q listening "$FS_TEST_DIR/proxy.log"
proxied=${FS_DATABASE_URL/:$FS_PG_PORT\//:$pport/}
al_start alerter FS_DATABASE_URL="$proxied" FS_DB_TIMEOUT_MS=1000
al_wait_assigned alerter

fs_wait_for 30 fs_topic_has fraud_alerts.dlq 1 # the old code: never
fs_wait_for 30 "(( \$(al_requests ok True) >= 1 ))"
grep -q "holding replies" "$FS_TEST_DIR/proxy.log" || fs_fail "the isolation was never cut short"
grep -q '"event":"db_retry"' "$FS_TEST_DIR/alerter.log" || fs_fail "no db_retry after the held statement"
fs_assert_eq 1 "$(fs_topic_dump fraud_alerts.dlq | grep -c 'dlq_reason=db_rejected,')" "db_rejected dead letters"
fs_assert_eq "$(al_alert_id "$run" 0)" "$(al_sql_int 'SELECT alert_id FROM alert_events')" "the recorded alert"
fs_assert_eq 1 "$(al_metric alerter fs_alerter_batches_total)" "batches (both alerts in one)"
fs_assert_eq 1 "$(al_metric alerter 'fs_alerter_messages_total{result="new"}')" "new alerts counted"
fs_assert_eq 0 "$(al_metric alerter 'fs_alerter_messages_total{result="duplicate"}')" "duplicates counted"
fs_assert_eq 1 "$(al_metric alerter 'fs_alerter_messages_total{result="dead_letter"}')" "dead letters counted"
fs_kill alerter TERM
fs_wait_exit alerter 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status"
echo PASS
