#!/usr/bin/env bash
# A fatal error of the alerter's outbox producer (here: the dev broker answers its InitProducerId
# with INVALID_PRODUCER_EPOCH, "fenced") leaves it unusable: every later produce fails. The old
# alerter went on consuming with /ready 200 while every outbox row (dead letters, analysts'
# outcomes) stayed unproduced for ever, one warning line after another. Now it stops with exit
# status 1 (producer_fatal, as the scorer does), and a restarted alerter (a new producer) produces
# what the outbox holds: the undecodable alert's dead letter reaches fraud_alerts.dlq.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_producer_fatal
fs_pg_start
FS_PID_ERRORS=1 fs_broker_start 1 # only the first producer id request fails: the first alerter's
printf 'k1:not json\n' | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:

al_start alerter1
fs_wait_exit alerter1 60 # the old code: still consuming, and failing every outbox row, after 60 s
fs_assert_eq 1 "$FS_EXIT_STATUS" "exit status after the fatal producer error"
grep -q '"event":"producer_fatal"' "$FS_TEST_DIR/alerter1.log" || fs_fail "no producer_fatal logged"
fs_assert_eq 0 "$(fs_topic_count fraud_alerts.dlq)" "fraud_alerts.dlq before the restart"

al_start alerter2
fs_wait_for 60 fs_topic_has fraud_alerts.dlq 1
fs_wait_for 30 "(( \$(al_sql_int 'SELECT count(*) FROM outbox WHERE produced_at IS NULL') == 0 ))"
fs_assert_eq 1 "$(al_sql_int 'SELECT count(*) FROM outbox')" "outbox rows (the dead letter, once)"
fs_kill alerter2 TERM
fs_wait_exit alerter2 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "second alerter's exit status"
echo "alerter producer fatal ok"
