#!/usr/bin/env bash
# The batch's COMMIT reaches PostgreSQL and commits, but its answer never comes back (a TCP proxy
# swallows it; db-timeout-ms drops the connection). The retry finds the payments stored: the rows
# stay exactly once, and the worker counts them as its own decisions (payments_total{new},
# decisions_total, rule hits), not as redelivered; the old code counted them redelivered, so
# decisions_total no longer matched the decisions table.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_commit_lost
fs_pg_start
fs_broker_start 1
n=10
metric() { curl -s -m 5 "http://127.0.0.1:$admin/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
decisions_metric() {
    curl -s -m 5 "http://127.0.0.1:$admin/metrics" |
        awk '$1 ~ /^fs_scorer_decisions_total\{/ { s += $2 } END { print s + 0 }'
}

pport=$(fs_free_port)
fs_bg proxy python3 "$REPO/tests/integration/tcp_proxy.py" "$pport" "$FS_PG_PORT" 'COMMIT /* batch */' 1
fs_wait_for 10 grep -q listening "$FS_TEST_DIR/proxy.log"
proxied=${FS_DATABASE_URL/:$FS_PG_PORT\//:$pport/}
admin=$(fs_free_port)
fs_bg scorer env FS_SCORER_ID=scorer-lost FS_RULES_FILE="$REPO/schemas/rules/default.json" \
    FS_DATABASE_URL="$proxied" FS_DB_TIMEOUT_MS=2000 FS_ADMIN_PORT="$admin" \
    "$BUILD/bin/fraudshield-scorer"
fs_wait_for 60 grep -q '"event":"partitions_assigned"' "$FS_TEST_DIR/scorer.log"
bash "$REPO/tests/integration/gen_raw_payments.sh" $((RANDOM + 1000)) "$n" | kcat -b "$FS_BROKERS" -P -t raw_payments -p 0 -K:

fs_wait_for 60 fs_topic_has processed_payments "$n"
grep -q "holding replies" "$FS_TEST_DIR/proxy.log" || fs_fail "the batch's COMMIT was not held"
grep -q '"event":"db_retry"' "$FS_TEST_DIR/scorer.log" || fs_fail "no retry after the lost answer"
fs_assert_eq "$n|$n" "$(fs_psql 'SELECT count(*), count(DISTINCT payment_id) FROM decisions')" "decisions (each once)"
fs_assert_eq "$n" "$(metric 'fs_scorer_payments_total{result="new"}')" "payments counted new"
fs_assert_eq 0 "$(metric 'fs_scorer_payments_total{result="redelivered"}')" "payments counted redelivered"
fs_assert_eq "$n" "$(decisions_metric)" "decisions_total (all outcomes)"
fs_kill scorer TERM
fs_wait_exit scorer 30
fs_assert_eq 0 "$FS_EXIT_STATUS" "exit status"
echo "scorer commit lost ok"
