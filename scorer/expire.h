/* expire: the scorer's retention of payment data (docs/operations.md "The scorer's retention").
 *
 * With payment-retention-days set, every payment-retention-interval-s a round deletes, in slices of EXPIRE_SLICE
 * rows (store.h store_expire_payments, store_expire_labels; the rounds are common/sweep.h's):
 *   1. payments whose decision was made (decided_at) more than payment-retention-days ago, with their
 *      decision (the evidence), their alert and its alert_history, and their outcomes;
 *   2. labels (outcomes) still not applied, received more than payment-retention-days ago, whose payment is
 *      not there: it was deleted before they arrived, or never reached PostgreSQL. They would wait
 *      (fs_scorer_outcomes_pending) forever; they are counted as outcomes{result="expired"}.
 * outcome_links (per identifier digest or merchant: the labelled payment's id, label, event time)
 * and risk_vault (per identifier digest: counts) are kept: they are the vault's memory of
 * confirmed fraud, hold digests and ids but no payment data, and scoring reads them without the
 * payment row. A label (or a correction) that arrives after its payment was deleted is not applied.
 *
 * Labels of phase 1 still pending when their payment goes are counted as expired too.
 *
 * Every worker prunes (SKIP LOCKED: disjoint slices, nobody waits), between batches, for at most a
 * time budget per loop turn (expire_turn): EXPIRE_BUDGET_MS while the consumer keeps up; while it
 * is behind (its last batch was full: more messages are waiting), at most EXPIRE_SHARE_PCT % of
 * the batches' time, so that a backlog of old rows (the first rounds after retention is enabled on
 * a large database) does not slow scoring down by more than that, and still shrinks under
 * sustained load. A slice is never cut short: one longer than the budget is paid back by the
 * following batches before the next one runs.
 *
 * A deleted payment whose raw_payments message is consumed again (an offset reset; a topic that
 * keeps messages longer than payment-retention-days) is not stored again: the scorer dead-letters
 * messages ingested longer ago than payment-retention-days (less EXPIRE_CLOCK_MARGIN_MS) whose
 * payment is not in PostgreSQL ("expired", scorer.c scorer_reject_expired), and locks those it
 * finds until its transaction commits (the slices skip locked rows).
 *
 * payment-retention-days is 0 (keep forever: the default) or at least EXPIRE_MIN_DAYS: labels
 * arrive weeks after the payment, and the raw_payments backlog of a scorer that was down for days
 * (the topic keeps 7 days by default) must still be scored, not dead-lettered. */
#ifndef FS_EXPIRE_H
#define FS_EXPIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "store.h"

#define EXPIRE_MIN_DAYS 30
#define EXPIRE_SLICE 500
#define EXPIRE_BUDGET_MS 100 /* per loop turn while the consumer keeps up */
#define EXPIRE_SHARE_PCT 10  /* of the batches' time while it is behind */
/* The scorer's "expired" check looks up payments ingested this much less than
 * payment-retention-days ago too: ingest_time is ingest's clock, decided_at a scorer's. */
#define EXPIRE_CLOCK_MARGIN_MS 86400000

/* The phases of a round, in order. */
typedef enum expire_phase {
    EXPIRE_PAYMENTS, /* payments, decisions, alerts, alert_history, outcomes */
    EXPIRE_LABELS,   /* outcomes that never found their payment */
    EXPIRE_DONE,
} expire_phase;

/* payment-retention-days is 0 or at least EXPIRE_MIN_DAYS. Returns 0, or -1 with errstr naming the
 * option and why. */
int expire_check_days(int64_t days, char *errstr, size_t errstr_size);

typedef struct expire expire;

/* days: payment-retention-days (0: never runs; expire_due_us() is then INT64_MAX), interval_s: between
 * the starts of two rounds, the first one at once. Registers
 * fs_scorer_retention_deleted_total{table} at 0 for each table (m may be NULL). NULL: out of
 * memory. */
expire *expire_new(int days, int interval_s, metrics *m);

/* When expire_run() has work (monotonic microseconds). */
int64_t expire_due_us(const expire *e);

/* A turn of the consume loop: its batch took batch_us (0: there was none) and was full (batch-max
 * messages: the consumer is behind). While behind, each batch earns retention EXPIRE_SHARE_PCT %
 * of its time (at most EXPIRE_BUDGET_MS banked); otherwise retention has EXPIRE_BUDGET_MS per turn
 * (and owes nothing). */
void expire_turn(expire *e, int64_t batch_us, bool full);

/* How long expire_run() may run slices now (ms): EXPIRE_BUDGET_MS while the consumer keeps up,
 * else what the batches earned (at least 1: one slice), 0 while that is used up (or in debt). */
int expire_budget_ms(const expire *e);

/* expire_run() took us: while the consumer is behind, taken from what the batches earned. */
void expire_spent(expire *e, int64_t us);

/* Runs slices of the current round on st (connected, no transaction open) for at most
 * expire_budget_ms() (nothing when that is 0), and counts the time spent (expire_spent);
 * *labels_expired gets the pending labels this call deleted (those of deleted payments, and those
 * of phase 2; also on failure). Returns 0, or -1 with errstr: the round is abandoned, the next one
 * is due an interval later. */
int expire_run(expire *e, store *st, int64_t *labels_expired, char *errstr, size_t errstr_size);

void expire_destroy(expire *e); /* accepts NULL */

#endif
