/* prune: which old feature rows the scorer workers may delete, and which payments may have been
 * scored with incomplete windows. Pure arithmetic on event times (ms since the epoch); the SQL is
 * in store.c (store_prune_sync and friends), the schedule in scorer.c.
 *
 * Workers share velocity_events and feature_buckets but each owns different partitions, so their
 * event times advance at different speeds. Each worker publishes how far back it still needs
 * complete windows (its "needed-from": its watermark capped at the wall clock, minus
 * velocity-lateness-s) in scorer_watermarks; a prune deletes only what NO live worker needs:
 *
 *   cutoff[set] = min(own needed-from, the live workers' needed-from) - reach[set]
 *
 * where reach[set] is how far back the longest window served by that set reaches from a payment's
 * event time. The largest cutoff ever applied per set is kept in prune_horizons; a payment whose
 * windows reach below a horizon, or below its own worker's needed-from, may miss pruned rows and is
 * counted too late:
 *
 *   late iff t < max(own needed-from, max over sets of (horizon[set] + reach[set])) */
#ifndef FS_PRUNE_H
#define FS_PRUNE_H

#include <stddef.h>
#include <stdint.h>

/* The pruned sets: exact events, hour buckets, day buckets. */
typedef enum prune_set { PRUNE_VELOCITY = 0, PRUNE_HOUR, PRUNE_DAY, PRUNE_SETS } prune_set;

#define PRUNE_NONE INT64_MIN /* no horizon recorded, no other live worker */

/* How far back each set's longest window reaches from a payment's event time: the longest exact
 * window of the rules, the longest hour-bucket window (1 day + its bucket), the longest day-bucket
 * window (30 days + 30 days of delay + its bucket). */
void prune_reach(int64_t max_exact_window_ms, int64_t reach[PRUNE_SETS]);

/* The event time from which a worker needs complete windows: its watermark (0: none yet, then
 * PRUNE_NONE), capped at now_ms so that one payment dated in the future cannot make the pruner
 * delete what current payments need, minus lateness_ms. */
int64_t prune_needed_from(int64_t watermark_ms, int64_t now_ms, int64_t lateness_ms);

/* The cutoffs of a prune: rows of a set older than cutoff[set] may go. own: this worker's
 * needed-from (not PRUNE_NONE); others: the least of the other live workers' (PRUNE_NONE: none). */
void prune_cutoffs(int64_t own, int64_t others, const int64_t reach[PRUNE_SETS],
                   int64_t cutoff[PRUNE_SETS]);

/* Payments with an event time before this may have been scored with incomplete windows. own: this
 * worker's needed-from (PRUNE_NONE before its first batch); horizon: the recorded largest cutoffs
 * (PRUNE_NONE: never pruned). PRUNE_NONE only when both are. */
int64_t prune_late_before(int64_t own, const int64_t horizon[PRUNE_SETS],
                          const int64_t reach[PRUNE_SETS]);

/* A worker's event-time progress per assigned partition. raw_payments partitions advance at their
 * own speeds (a backlog on one, live traffic on another): the worker's needed-from must follow its
 * slowest active partition, not its newest event, or a prune driven by the fast partition deletes
 * what the slow one's payments still need. Active: a message persisted within idle_ms (wall
 * clock); an idle partition (a quiet country) does not hold pruning back forever. */
typedef struct prune_part {
    int32_t partition;
    int64_t max_event_ms; /* newest event time persisted from it */
    int64_t seen_ms;      /* wall clock of its last persisted message */
} prune_part;

/* Records a persisted payment of a partition in parts[0..*n) (at most cap entries; a new partition
 * beyond cap is not tracked and then counts only through the fallback of prune_watermark). */
void prune_part_seen(prune_part *parts, size_t *n, size_t cap, int32_t partition,
                     int64_t event_ms, int64_t now_ms);

/* Forgets a partition (revoked). */
void prune_part_forget(prune_part *parts, size_t *n, int32_t partition);

/* The watermark pruning may follow: the least max_event_ms over the partitions active at now_ms,
 * or fallback (the worker's newest event time) when none is. */
int64_t prune_watermark(const prune_part *parts, size_t n, int64_t now_ms, int64_t idle_ms,
                        int64_t fallback);

#endif
