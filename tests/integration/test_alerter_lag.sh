#!/usr/bin/env bash
# The alerter's consumer lag and readiness metrics:
#   1. Lag: a first batch is committed, then every offset commit fails (the dev broker's commit
#      fault), so the next alerts stay uncommitted and the lag of their partitions stays above 0.
#      A second alerter joins: the partitions it takes are revoked from the first, which must then
#      export 0 for them, not its last lag (librdkafka keeps reporting them): every partition has
#      a non-zero lag on one alerter at most, and the sum over alerters is the real backlog.
#   2. fs_alerter_ready agrees with /ready: 1 while consuming; 0, with /ready 503, while
#      PostgreSQL is down; 1 again once it is back.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_lag
fs_pg_start
fs_broker_start 4
run=$((RANDOM + 1000))
common=(KAFKA_STATISTICS_INTERVAL_MS=300)

metrics() { curl -fsS "http://127.0.0.1:${AL_ADMIN[$1]}/metrics"; }
# lags NAME: "partition lag" per fraud_alerts partition NAME exports
lags() {
    metrics "$1" | sed -n 's/^fs_alerter_consumer_lag{topic="fraud_alerts",partition="\([0-9]*\)"} \([0-9.e+]*\)$/\1 \2/p'
}
lagged() { lags "$1" | awk '$2 > 0' | wc -l; }
events() { al_sql_int 'SELECT count(*) FROM alert_events'; }

al_start alerter1 "${common[@]}"
al_wait_assigned alerter1
al_gen_alerts "$run" 40 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 30 "(( \$(events) == 40 ))"
fs_wait_for 10 "(( \$(lags alerter1 | wc -l) == 4 && \$(lagged alerter1) == 0 ))"
echo "ok: 40 alerts recorded and committed, no lag"

# 1. Uncommitted alerts on every partition, then a second alerter.
fs_commit_fault
al_gen_alerts "$run" 40 40 | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 30 "(( \$(events) == 80 ))"
fs_wait_for 10 "(( \$(lagged alerter1) == 4 ))"
echo "ok: alerter1 has lag on its 4 partitions: $(lags alerter1 | tr '\n' ' ')"
al_start alerter2 "${common[@]}"
al_wait_assigned alerter2
# Cooperative rebalancing: revoked from alerter1 first, assigned to alerter2 by the next round.
fs_wait_for 60 grep -q '"event":"partitions_revoked"' "$FS_TEST_DIR/alerter1.log"
fs_wait_for 60 grep -q '"event":"partitions_assigned","msg":"assigned [1-9]' "$FS_TEST_DIR/alerter2.log"
fs_wait_for 20 "(( \$(lagged alerter2) > 0 ))" # it consumed them again and could not commit
sleep 1                                          # a few more statistics rounds on both
a1=$(lags alerter1 | awk '$2 > 0 { print $1 }' | sort)
a2=$(lags alerter2 | awk '$2 > 0 { print $1 }' | sort)
echo "partitions with lag: alerter1 [$(echo $a1)], alerter2 [$(echo $a2)]"
both=$(comm -12 <(echo "$a1") <(echo "$a2") | grep -c . || true)
fs_assert_eq 0 "$both" "partitions with a lag on both alerters"
fs_assert_eq 4 "$(echo $a1 $a2 | wc -w)" "partitions with a lag on one of them"
fs_commit_fault # commits succeed again

# 2. Readiness: the gauge and /ready, PostgreSQL down and back.
ready_pair() { # "<gauge> <status of /ready>"
    echo "$(metrics alerter1 | awk '$1 == "fs_alerter_ready" { print $2 }')" \
        "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${AL_ADMIN[alerter1]}/ready")"
}
fs_assert_eq "1 200" "$(ready_pair)" "alerter1 ready"
fs_pg_stop fast
fs_wait_for 30 '[[ $(ready_pair) == "0 503" ]]'
echo "ok: fs_alerter_ready 0 and /ready 503 while PostgreSQL is down"
# The outage is counted on both sides (the database-errors alert), and the outbox pump reconnects
# with a backoff: it used to try (and log) every outbox-interval-ms, 5 lines a second for ever.
reconnects() { grep -c '"event":"db_reconnect_failed"' "$FS_TEST_DIR/alerter1.log" || true; }
r0=$(reconnects)
sleep 6
r1=$(reconnects)
(( r1 - r0 <= 8 )) || fs_fail "$((r1 - r0)) db_reconnect_failed lines in 6 s (no backoff)"
for side in outbox dispatch; do
    n=$(al_metric alerter1 "fs_alerter_db_errors_total{side=\"$side\"}")
    (( ${n%.*} > 0 )) || fs_fail "fs_alerter_db_errors_total{side=\"$side\"} is $n during the outage"
done
echo "ok: the outage is counted, reconnects back off"
fs_pg_restart
fs_wait_for 60 '[[ $(ready_pair) == "1 200" ]]'
echo "ok: ready again"
