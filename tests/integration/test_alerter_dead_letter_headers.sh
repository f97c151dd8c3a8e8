#!/usr/bin/env bash
# Alerter dead letters that PostgreSQL could refuse must never stall a partition.
#   1. An undecodable fraud_alerts message whose headers are binary (a NUL byte, bytes that are not
#      UTF-8), then a valid alert on the same partition: the alert is delivered, and the dead letter
#      reaches fraud_alerts.dlq with the original header bytes (jsonb cannot hold \u0000: the old
#      code retried the batch forever, also across restarts).
#   2. PostgreSQL refuses the dead letter's headers as data (a CHECK constraint added by the test):
#      it is stored without the original headers, noted in dlq_headers_dropped.
#   3. PostgreSQL refuses the dead letter whatever its headers: logged and skipped, not retried.
# In every phase the valid alert behind the bad message is delivered.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_dead_letter_headers
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
cc -std=c11 -D_GNU_SOURCE -Wall -Werror -o "$FS_TEST_DIR/kafka_headers" \
    "$REPO/tests/integration/kafka_headers.c" $(pkg-config --cflags --libs rdkafka)
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
dlq_headers() { timeout 60 "$FS_TEST_DIR/kafka_headers" dump "$FS_BROKERS" fraud_alerts.dlq; }

al_receiver ok ok
al_cli subscriptions add --name ok --url "http://127.0.0.1:${AL_PORT[ok]}/hook" --secret "$AL_SECRET" >/dev/null
al_start alerter
al_wait_assigned alerter

# 1. Binary headers, then a valid alert behind them.
timeout 60 "$FS_TEST_DIR/kafka_headers" produce "$FS_BROKERS" fraud_alerts 0 'not json'
al_gen_alerts "$run" 1 0 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -p 0 -K:
fs_wait_for 30 "(( \$(al_requests ok True) >= 1 ))" # the old code: never (partition stalled)
fs_wait_for 20 fs_topic_has fraud_alerts.dlq 1
h=$(dlq_headers)
echo "$h"
grep -qx "0 0 seq 00000001" <<<"$h" || fs_fail "the NUL-bearing header did not keep its bytes"
grep -qx "0 0 raw fffe41" <<<"$h" || fs_fail "the non-UTF-8 header did not keep its bytes"
grep -qx "0 0 note $(hex 'plain text')" <<<"$h" || fs_fail "the text header was not kept"
grep -qx "0 0 dlq_reason $(hex undecodable)" <<<"$h" || fs_fail "dlq_reason missing"
fs_assert_eq 1 "$(al_metric alerter 'fs_alerter_messages_total{result="dead_letter"}')" "dead letters counted"
fs_assert_eq 0 "$(al_metric alerter 'fs_alerter_db_errors_total{side="consume"}')" "no consume-side db errors"

# 2. Headers refused as data: the dead letter is stored without them.
fs_psql "ALTER TABLE outbox ADD CONSTRAINT test_refuse_note CHECK (NOT headers @> '[[\"note\", \"plain text\"]]') NOT VALID"
timeout 60 "$FS_TEST_DIR/kafka_headers" produce "$FS_BROKERS" fraud_alerts 0 'still not json'
al_gen_alerts "$run" 1 1 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -p 0 -K:
fs_wait_for 30 "(( \$(al_requests ok True) >= 2 ))"
fs_wait_for 20 fs_topic_has fraud_alerts.dlq 2
h=$(dlq_headers)
grep -q "^0 1 dlq_reason $(hex undecodable)$" <<<"$h" || fs_fail "second dead letter missing"
grep -q "^0 1 note " <<<"$h" && fs_fail "the refused headers were kept"
grep -q "^0 1 dlq_headers_dropped " <<<"$h" || fs_fail "the dropped headers are not noted"
grep -q '"event":"dead_letter_headers_refused"' "$FS_TEST_DIR/alerter.log" || fs_fail "no dead_letter_headers_refused log line"

# 3. The dead letter refused whatever its headers: skipped (logged), the partition moves on.
fs_psql "ALTER TABLE outbox ADD CONSTRAINT test_refuse_key CHECK (msg_key IS DISTINCT FROM convert_to('k-skip', 'UTF8')) NOT VALID"
printf 'k-skip:not json either\n' | kcat -b "$FS_BROKERS" -P -t fraud_alerts -p 0 -K:
al_gen_alerts "$run" 1 2 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -p 0 -K:
fs_wait_for 30 "(( \$(al_requests ok True) >= 3 ))"
fs_wait_for 10 grep -q '"event":"dead_letter_refused"' "$FS_TEST_DIR/alerter.log"
fs_assert_eq 2 "$(fs_topic_count fraud_alerts.dlq)" "dead letters on fraud_alerts.dlq"
fs_assert_eq 3 "$(al_sql_int 'SELECT count(*) FROM alert_events')" "alert events"

fs_kill alerter TERM
fs_wait_exit alerter 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status"
echo "PASS"
