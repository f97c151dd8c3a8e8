#!/usr/bin/env bash
# Retention: the alerter deletes its history older than retention-days (docs/alerter.md
# "Retention"), and nothing that is still needed.
#   Real deliveries to two subscribers (ok: delivered; gone: 410, failed and dead-lettered through
#   the outbox), then, in one transaction, four alerts' rows are made 40 days old (their
#   deliveries' finished_at, their events' created_at, their dead letters' produced_at), a fifth
#   alert's event too (its deliveries stay recent), and rows are added that must survive: an old
#   event with a pending delivery, one with an in_flight delivery (another instance's lease), an
#   old unproduced outbox row; and a backlog of 1100 old delivered events (more than two slices of
#   500 per table: full slices, rounds over several turns of the dispatcher loop).
#   Two alerters prune at once (retention-interval-s 1, retention-days 30 by default): between them
#   they delete exactly the old finished deliveries with their attempts, the events left without
#   deliveries and the old produced outbox rows; fs_alerter_retention_deleted_total{table} counts
#   them (summed over both instances); one retention_pruned line; no PostgreSQL errors.
# The old code deletes nothing.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/alerter_lib.sh"
fs_setup alerter_retention
fs_pg_start
fs_broker_start 1
run=$((RANDOM + 1000))
n=6

al_receiver ok ok
al_receiver gone status:410
for s in ok gone; do
    al_cli subscriptions add --name "$s" --url "http://127.0.0.1:${AL_PORT[$s]}/hook" --secret "$AL_SECRET" >/dev/null
done
al_start a1 FS_RETENTION_INTERVAL_S=1
al_wait_assigned a1
al_start a2 FS_RETENTION_INTERVAL_S=1
fs_wait_for 30 grep -q '"event":"started"' "$FS_TEST_DIR/a2.log"

al_gen_alerts "$run" "$n" | kcat -b "$FS_BROKERS" -P -t fraud_alerts -K:
fs_wait_for 60 "(( \$(al_sql_int \"SELECT count(*) FROM deliveries WHERE state IN ('delivered', 'failed')\") == 2 * n ))"
fs_wait_for 30 "(( \$(al_sql_int 'SELECT count(*) FROM outbox WHERE produced_at IS NOT NULL') == n ))"
fs_assert_eq $((2 * n)) "$(al_sql_int 'SELECT count(*) FROM delivery_attempts')" "attempts before the prune"

# Alerts 0..3 become 40 days old; alert 4's event too, not its deliveries. Plus rows to keep.
old=()
for i in 0 1 2 3; do old+=("'$(al_alert_id "$run" "$i")'"); done
old_ids="ARRAY[$(IFS=,; echo "${old[*]}")]::uuid[]"
pend=$(al_alert_id "$run" 100) infl=$(al_alert_id "$run" 101) bulk=1100
fs_psql "
UPDATE deliveries SET finished_at = now() - interval '40 days' WHERE alert_id = ANY ($old_ids);
UPDATE alert_events SET created_at = now() - interval '40 days'
 WHERE alert_id = ANY ($old_ids) OR alert_id = '$(al_alert_id "$run" 4)';
UPDATE outbox SET produced_at = now() - interval '40 days'
 WHERE headers @> jsonb_build_array(jsonb_build_array('alert_id', '$(al_alert_id "$run" 0)'))
    OR headers @> jsonb_build_array(jsonb_build_array('alert_id', '$(al_alert_id "$run" 1)'))
    OR headers @> jsonb_build_array(jsonb_build_array('alert_id', '$(al_alert_id "$run" 2)'))
    OR headers @> jsonb_build_array(jsonb_build_array('alert_id', '$(al_alert_id "$run" 3)'));
INSERT INTO alert_events (event_id, alert_id, payment_id, event_type, decision, body, created_at)
VALUES ('$pend', '$pend', '$pend', 'alert.created', 'block', '{}', now() - interval '40 days'),
       ('$infl', '$infl', '$infl', 'alert.created', 'block', '{}', now() - interval '40 days');
INSERT INTO deliveries (event_id, alert_id, subscription_id, state, attempts, next_attempt_at,
                        locked_by, created_at)
SELECT '$pend'::uuid, '$pend'::uuid, subscription_id, 'pending', 3, now() + interval '1 day', NULL,
       now() - interval '40 days' FROM subscriptions WHERE name = 'ok'
UNION ALL
SELECT '$infl'::uuid, '$infl'::uuid, subscription_id, 'in_flight', 1, now() + interval '1 day', 'elsewhere',
       now() - interval '40 days' FROM subscriptions WHERE name = 'ok';
INSERT INTO outbox (kind, msg_key, msg_value, created_at)
VALUES ('dlq', convert_to('unproduced', 'UTF8'), convert_to('{}', 'UTF8'), now() - interval '40 days');
-- a backlog of $bulk more than two slices (500) per table: old events delivered long ago
INSERT INTO alert_events (event_id, alert_id, payment_id, event_type, decision, score, body, created_at)
SELECT g, g, g, 'alert.created', 'review', -1, '{}', now() - interval '40 days'
FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, $bulk)) x;
INSERT INTO deliveries (event_id, alert_id, subscription_id, state, attempts, created_at,
                        delivered_at, finished_at)
SELECT e.event_id, e.alert_id, s.subscription_id, 'delivered', 1, e.created_at, e.created_at, e.created_at
FROM alert_events e, subscriptions s WHERE e.score = -1 AND s.name = 'ok';
INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, outcome, status)
SELECT d.delivery_id, 1, d.created_at, d.created_at, 'delivered', 200
FROM deliveries d JOIN alert_events e USING (event_id) WHERE e.score = -1;
INSERT INTO outbox (kind, msg_value, created_at, produced_at)
SELECT 'dlq', convert_to('{}', 'UTF8'), now() - interval '41 days', now() - interval '40 days'
FROM generate_series(1, $bulk);
-- checked in the same transaction: once it commits, the alerters (every second) prune them
DO \$\$ BEGIN
  IF (SELECT count(*) FROM outbox WHERE produced_at < now() - interval '30 days') <> 4 + $bulk THEN
    RAISE EXCEPTION 'the test did not age 4 dead letters';
  END IF;
END \$\$;
" >/dev/null || fs_fail "ageing the rows failed (see the error above)"

deleted() { echo $(($(al_metric a1 "fs_alerter_retention_deleted_total{table=\"$1\"}") + $(al_metric a2 "fs_alerter_retention_deleted_total{table=\"$1\"}"))); }
fs_wait_for 60 "(( \$(deleted outbox) >= 4 + bulk && \$(deleted alert_events) >= 4 + bulk ))" # the old code: never
sleep 3 # further rounds must find nothing more
fs_psql "SELECT 'left: ' || e.alert_id || ' ' || coalesce(string_agg(d.state, ','), '-') FROM alert_events e LEFT JOIN deliveries d USING (event_id) GROUP BY e.alert_id ORDER BY 1"

fs_assert_eq $((8 + bulk)) "$(deleted deliveries)" "deliveries deleted (metric)"
fs_assert_eq $((8 + bulk)) "$(deleted delivery_attempts)" "attempts deleted (metric)"
fs_assert_eq $((4 + bulk)) "$(deleted alert_events)" "alert events deleted (metric)"
fs_assert_eq $((4 + bulk)) "$(deleted outbox)" "outbox rows deleted (metric)"
fs_assert_eq 0 "$(al_sql_int "SELECT count(*) FROM deliveries WHERE alert_id = ANY ($old_ids)")" "old deliveries left"
fs_assert_eq 0 "$(al_sql_int "SELECT count(*) FROM alert_events WHERE alert_id = ANY ($old_ids)")" "old events left"
fs_assert_eq $((2 * (n - 4) + 2)) "$(al_sql_int 'SELECT count(*) FROM deliveries')" "deliveries kept (recent + pending + in_flight)"
fs_assert_eq 1 "$(al_sql_int "SELECT count(*) FROM deliveries WHERE alert_id = '$pend' AND state = 'pending'")" "the old pending delivery"
fs_assert_eq 1 "$(al_sql_int "SELECT count(*) FROM deliveries WHERE alert_id = '$infl' AND state = 'in_flight'")" "the old in_flight delivery"
fs_assert_eq $((2 * (n - 4))) "$(al_sql_int 'SELECT count(*) FROM delivery_attempts')" "attempts kept"
fs_assert_eq $((n - 4 + 2)) "$(al_sql_int 'SELECT count(*) FROM alert_events')" "events kept (recent, old with recent or unfinished deliveries)"
fs_assert_eq 1 "$(al_sql_int "SELECT count(*) FROM alert_events WHERE alert_id = '$(al_alert_id "$run" 4)'")" "the old event with recent deliveries"
fs_assert_eq $((n - 4 + 1)) "$(al_sql_int 'SELECT count(*) FROM outbox')" "outbox rows kept (recent + the unproduced one)"
fs_assert_eq 1 "$(al_sql_int "SELECT count(*) FROM outbox WHERE msg_key = convert_to('unproduced', 'UTF8')")" "the old unproduced outbox row"
grep -h '"event":"retention_pruned"' "$FS_TEST_DIR/a1.log" "$FS_TEST_DIR/a2.log" | head -n 3
[[ $(grep -h '"event":"retention_pruned"' "$FS_TEST_DIR/a1.log" "$FS_TEST_DIR/a2.log" | grep -c '"level":"info"') -ge 1 ]] ||
    fs_fail "no retention_pruned info line"
for a in a1 a2; do
    fs_assert_eq 0 "$(al_metric $a 'fs_alerter_db_errors_total{side="dispatch"}')" "$a: dispatch-side db errors"
done

for a in a1 a2; do fs_kill $a TERM; done
for a in a1 a2; do
    fs_wait_exit $a 30
    fs_assert_eq 0 "$FS_EXIT_STATUS" "$a: exit status"
done
echo "PASS"
