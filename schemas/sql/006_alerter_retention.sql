-- FraudShield alerter: retention (docs/alerter.md "Retention"). The alerter deletes, in small
-- slices, finished deliveries (with their attempts), alert events left without deliveries and
-- produced outbox rows once they are older than retention-days (alerter/retention.h). These
-- indexes let each slice find its oldest rows without scanning the tables; deliveries already
-- has deliveries_state_idx (state, finished_at).
--
-- Building them locks alert_events and outbox against writes while it runs (migrations run in a
-- transaction, so not CONCURRENTLY): on a large installation, expect the alerters' consumers to
-- wait for that long at the upgrade.
CREATE INDEX alert_events_created_idx ON alert_events (created_at);
CREATE INDEX outbox_produced_idx ON outbox (produced_at) WHERE produced_at IS NOT NULL;
