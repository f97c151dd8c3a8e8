#!/usr/bin/env bash
# Retention cannot delete a payment between a scorer's "expired" look-up and its insert
# (scorer.c scorer_reject_expired, store.c store_lock_payments): the look-up locks the payments it
# finds FOR KEY SHARE until the batch's transaction ends, and retention's slices skip locked rows.
#   - payment X is stored, decided 29 days ago (inside payment-retention-days=30);
#   - scorer B only runs retention (every second; it consumes an idle topic);
#   - scorer A (retention 30, its PostgreSQL through a proxy) consumes X's raw_payments message
#     again, ingested 40 days ago: its look-up finds X, and the proxy holds back the look-up's reply
#     (once), so A's transaction stays open right after it;
#   - X's decision is made 40 days old, and so is that of a payment Y nobody consumes: B's rounds
#     delete Y (so they ran) but must skip X while A holds it (without the lock they delete it, and
#     A's insert would then store X as a new payment);
#   - A's round trip times out, its transaction is rolled back, it retries: X is then either gone
#     (dead-lettered "expired") or still there (a redelivery); B deletes it; X is never scored as a
#     new payment (no velocity events, no decision of today).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
fs_setup scorer_retention_race
fs_pg_start
FS_TOPICS=raw_payments,processed_payments,fraud_alerts,raw_payments.dlq,idle_payments fs_broker_start 1
X=0000000c-0000-4000-8000-0000000000e1
Y=0000000d-0000-4000-8000-0000000000e2
h() { printf '%064x' "$1"; }
iso() { date -u -d "@$(($1 / 1000))" +%Y-%m-%dT%H:%M:%S.000Z; }
OLD=$((($(date +%s) - 40 * 86400) * 1000))
declare -A ADMIN=()
metric() { # metric NAME SERIES
    curl -fsS "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print "missing" }'
}
scorer() { # scorer NAME ENV...
    local name=$1 port
    shift
    port=$(fs_free_port)
    ADMIN[$name]=$port
    fs_bg "$name" env FS_SCORER_ID="$name" FS_ADMIN_PORT="$port" FS_OUTCOMES_TOPIC= \
        FS_PAYMENT_RETENTION_DAYS=30 "$@" "$BUILD/bin/fraudshield-scorer"
    fs_wait_for 60 curl -sf "http://127.0.0.1:$port/ready"
}

# B: retention only, every second (the schema is migrated by its start)
scorer b FS_TOPIC=idle_payments FS_GROUP_ID=retention-only FS_PAYMENT_RETENTION_INTERVAL_S=1
fs_psql "
INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,
                      payment_method, event_time, ingest_time, source_partition, source_offset)
VALUES ('$X', 'u-x', 'm-x', 2500, 'EUR', 2, 'card', now() - interval '40 days',
        now() - interval '40 days', 0, 0),
       ('$Y', 'u-y', 'm-x', 2500, 'EUR', 2, 'card', now() - interval '40 days',
        now() - interval '40 days', 0, 1);
INSERT INTO decisions (payment_id, decision, score, reasons, features, rules_version, scorer_id,
                       scoring_latency_us, decided_at)
VALUES ('$X', 'allow', 0, '[]', '{}', 'test', 'test', 1, now() - interval '29 days'),
       ('$Y', 'allow', 0, '[]', '{}', 'test', 'test', 1, now() - interval '29 days');" >/dev/null

# A: through a proxy that holds back the reply to the first look-up (named by its comment, with or
# without its lock clause), for 15 s (db-timeout-ms), then lets A's retry through
pport=$(fs_free_port)
fs_bg proxy python3 "$REPO/tests/integration/tcp_proxy.py" "$pport" "$FS_PG_PORT" "expired look-up" 1
fs_wait_for 10 grep -q listening "$FS_TEST_DIR/proxy.log"
scorer a FS_DATABASE_URL="postgresql://postgres@127.0.0.1:$pport/fraudshield" FS_DB_TIMEOUT_MS=15000 \
    FS_PAYMENT_RETENTION_INTERVAL_S=86400
printf 'DE:{"schema_version":1,"payment_id":"%s","user_id":"u-x","merchant_id":"m-x","amount_minor":2500,"currency":"EUR","payment_method":"card","card_fingerprint_digest":"%s","country":"DE","event_time":"%s","ingest_time":"%s"}\n' \
    "$X" "$(h 1)" "$(iso "$OLD")" "$(iso "$OLD")" | kcat -b "$FS_BROKERS" -P -t raw_payments -K:
fs_wait_for 30 grep -q "holding replies" "$FS_TEST_DIR/proxy.log"
# the look-up ran and A's transaction waits after it (the server answered; the proxy kept it)
fs_wait_for 30 '[[ $(fs_psql "SELECT count(*) FROM pg_stat_activity WHERE state = '"'idle in transaction'"' AND query LIKE '"'%expired look-up%'"'") == 1 ]]'

# A holds X (its transaction is open after the look-up): B's rounds delete Y and skip X
fs_psql "UPDATE decisions SET decided_at = now() - interval '40 days' WHERE payment_id IN ('$X', '$Y')" >/dev/null
fs_wait_for 10 '[[ $(fs_psql "SELECT count(*) FROM payments WHERE payment_id = '"'$Y'"'") == 0 ]]'
sleep 2 # two more of B's rounds
fs_assert_eq 1 "$(fs_psql "SELECT count(*) FROM payments WHERE payment_id = '$X'")" "X while A holds it (the old code: deleted)"
fs_assert_eq 1 "$(metric b 'fs_scorer_retention_deleted_total{table="payments"}')" "payments B deleted while A holds X (Y)"

# A gives up on the held round trip, rolls back, retries; B deletes X
fs_wait_for 60 '[[ $(fs_psql "SELECT count(*) FROM payments WHERE payment_id = '"'$X'"'") == 0 ]]'
fs_assert_eq 2 "$(metric b 'fs_scorer_retention_deleted_total{table="payments"}')" "payments B deleted (Y, X)"
grep -q '"event":"db_retry".*did not answer within' "$FS_TEST_DIR/a.log" || fs_fail "A did not retry after the held round trip"
handled() { # X's message handled by A: dead-lettered (X was gone) or its decision produced again
    (($(metric a 'fs_scorer_dead_letters_total{reason="expired",topic="raw_payments"}') + $(metric a 'fs_scorer_payments_total{result="redelivered"}') >= 1))
}
fs_wait_for 60 handled
echo "A: expired $(metric a 'fs_scorer_dead_letters_total{reason="expired",topic="raw_payments"}'), redelivered $(metric a 'fs_scorer_payments_total{result="redelivered"}')"
fs_assert_eq 0 "$(metric a 'fs_scorer_payments_total{result="new"}')" "payments A scored as new"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM velocity_events WHERE payment_id = '$X'")" "X's velocity events"
fs_assert_eq 0 "$(fs_psql "SELECT count(*) FROM payments WHERE payment_id = '$X'")" "X in payments at the end"
for r in a b; do
    fs_kill $r TERM
    fs_wait_exit $r 30
    fs_assert_eq 0 "$FS_EXIT_STATUS" "$r: exit status"
done
echo PASS
