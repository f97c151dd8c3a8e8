-- FraudShield schema: pruning shared by the scorer workers (scorer/prune.h, docs/topics.md "Late
-- events and the event-time features").
--
-- Workers share velocity_events and feature_buckets but own different partitions, whose event
-- times advance at different speeds. Each worker publishes here how far back it still needs
-- complete windows; a prune deletes only what no worker refreshed within
-- velocity-watermark-liveness-s still needs. A worker that stops cleanly deletes its row; a dead
-- one ages out (its row stays, ignored, and is deleted by the next sync after 6 liveness periods).
CREATE TABLE scorer_watermarks (
    scorer_id   text PRIMARY KEY,         -- scorer-id (FS_SCORER_ID)
    watermark   timestamptz NOT NULL,     -- the newest event time it persisted, capped at its clock
    needed_from timestamptz NOT NULL,     -- watermark - its velocity-lateness-s
    updated_at  timestamptz NOT NULL      -- when it last published (every velocity-prune-every batches)
);
COMMENT ON TABLE scorer_watermarks IS 'Per scorer worker: the event time from which it needs complete windows (scorer-owned; holds pruning back).';

-- The largest cutoff any prune applied, per pruned set: rows older than this may be gone. A
-- worker counts a payment whose windows reach below it as too late (its windows may be
-- incomplete) instead of scoring it silently with missing rows. Raised (never lowered) before the
-- rows are deleted.
CREATE TABLE prune_horizons (
    pruned     text PRIMARY KEY
               CHECK (pruned IN ('velocity_events', 'feature_buckets_hour', 'feature_buckets_day')),
    horizon    timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
COMMENT ON TABLE prune_horizons IS 'Per pruned set of feature rows: the largest event-time cutoff ever applied (scorer-owned).';
