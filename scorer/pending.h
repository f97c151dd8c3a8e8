/* pending: when the outcome consumer re-tries the labels still pending (docs/topics.md,
 * "payment_outcomes: the scorer's consumer").
 *
 * A label is applied by the transaction that stores it when its payment is persisted, and by the
 * first batch that persists its payment when the label came first (store.h: labels_pending, then
 * store_apply_outcomes_of). What neither sees: a label and its payment committed at the same time
 * by two workers, a label whose payment row another transaction held (SKIP LOCKED), a worker
 * stopped between its batch and the apply. For those, rounds re-try every pending label: a round
 * walks outcomes_pending_idx in received_at order, PENDING_SCAN labels per step (one short
 * transaction each, store_retry_outcomes), from a cursor this module keeps.
 *
 * Most pending labels are orphans that no round will ever apply (their payment was deleted by
 * retention before they came, or predates FraudShield), so the rounds must not cost in proportion
 * to them on the scoring thread:
 *   - a step is bounded (PENDING_SCAN labels, plus those sharing the last one's received_at);
 *   - steps are spread so that a round takes at most PENDING_SHARE_PCT % of the loop's time (the
 *     next step is due 100 / PENDING_SHARE_PCT - 1 times the last step's duration after it);
 *   - the next round starts PENDING_PAUSE_MIN_MS after one that applied something; after rounds
 *     that applied nothing the pause doubles each time, up to PENDING_PAUSE_MAX_MS.
 * The first round is due at once (labels stored before this worker started).
 * At the end of a round, the labels it examined and could not apply are the pending count (the
 * gauge fs_scorer_outcomes_pending: refreshed once per round only). */
#ifndef FS_PENDING_H
#define FS_PENDING_H

#include <stdbool.h>
#include <stdint.h>

#define PENDING_SCAN 500
#define PENDING_SHARE_PCT 5
#define PENDING_PAUSE_MIN_MS 1000
#define PENDING_PAUSE_MAX_MS 120000
#define PENDING_CURSOR_MAX 64 /* a timestamptz as PostgreSQL prints it, with room */

typedef struct pending pending;

/* The first round is due at now_us. NULL: out of memory. */
pending *pending_new(int64_t now_us);

/* When the next step is due (monotonic microseconds). */
int64_t pending_due_us(const pending *p);

/* Where the current round goes on: the last received_at it examined, as PostgreSQL printed it
 * ("-infinity" when a round starts). Valid until the next pending_step_done(). */
const char *pending_cursor(const pending *p);

/* A step ended at now_us after step_us: it examined `examined` labels (fewer than PENDING_SCAN:
 * the index is exhausted, the round is over), applied `applied` of them, and cursor is the last
 * received_at it examined (NULL or "" when it examined none). Returns true when the round ended:
 * *left then gets the labels it examined and could not apply, *round_applied those it applied. */
bool pending_step_done(pending *p, int64_t now_us, int64_t step_us, int64_t examined,
                       int64_t applied, const char *cursor, int64_t *left, int64_t *round_applied);

/* Labels are known to wait (more than the caller could remember): unless a round is under way,
 * the next one is due at now_us, and the pause is back to PENDING_PAUSE_MIN_MS. */
void pending_kick(pending *p, int64_t now_us);

void pending_destroy(pending *p); /* accepts NULL */

#endif
