/* retention: the alerter's history is bounded (docs/alerter.md "Retention").
 *
 * Every retention-interval-s a prune round deletes what is older than retention-days, in phases,
 * each in slices of at most RETENTION_SLICE rows (one statement each: a short transaction):
 *   1. finished deliveries (state delivered or failed, by finished_at) with their
 *      delivery_attempts, in the same statement;
 *   2. alert_events (by created_at) that have no delivery left;
 *   3. outbox rows produced (produced_at set) longer ago than that.
 * Pending and in_flight deliveries and unproduced outbox rows are never touched. Rows another
 * transaction holds (a claim, a re-drive, the outbox pump) are skipped (FOR UPDATE SKIP LOCKED)
 * and taken by a later round, so any number of alerters may prune at once: their slices are
 * disjoint, and a prune never waits for a delivery. The alerts table and alert_history (the
 * analysts' workflow) are not touched.
 *
 * alert_events also recognises a redelivered fraud_alerts message (event_id = alert_id): once an
 * alert's event is deleted, the same message consumed again would be delivered again. Hence
 * retention-days must exceed the fraud_alerts topic's retention: 0 (keep forever) or at least
 * RETENTION_MIN_DAYS (Kafka's default retention is 7 days).
 *
 * The round runs on the dispatcher thread (dispatch.c), for at most a time budget per call, so
 * claims and results are never held up for long; a round in hand resumes at the next call. The
 * rounds, the log line and the counter are common/sweep.h's (shared with the scorer's retention);
 * this module holds the alerter's tables, statements and bound. */
#ifndef FS_RETENTION_H
#define FS_RETENTION_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

#define RETENTION_MIN_DAYS 8
#define RETENTION_SLICE 500

/* The phases of a round, in order. */
typedef enum retention_phase {
    RETENTION_DELIVERIES,  /* deliveries + delivery_attempts */
    RETENTION_EVENTS,      /* alert_events */
    RETENTION_OUTBOX,      /* outbox */
    RETENTION_DONE,
} retention_phase;

/* retention-days is 0 or at least RETENTION_MIN_DAYS. Returns 0 or -1 with errstr naming the
 * option. */
int retention_check_days(int64_t days, char *errstr, size_t errstr_size);

/* The phase after a slice of phase p deleted `deleted` of at most `slice` rows: a full slice means
 * more may be waiting (same phase), a short one that the phase is done (the next). */
retention_phase retention_next_phase(retention_phase p, int64_t deleted, int64_t slice);

typedef struct retention retention;

/* days: retention-days (0: never prunes; retention_due_us() is then INT64_MAX), interval_s:
 * between the starts of two rounds; the first is due at once. Registers
 * fs_alerter_retention_deleted_total{table} at 0 for each table (m may be NULL). NULL: out of
 * memory. */
retention *retention_new(int days, int interval_s, metrics *m);

/* When retention_run() has work (monotonic microseconds, fs_mono_us()). */
int64_t retention_due_us(const retention *r);

/* Runs slices of the current round (starting one when due) until it is done or budget_ms has
 * passed. At the end of a round that deleted anything, one info line with the counts per table.
 * Returns 0, or -1 with errstr when a statement failed: the round is abandoned and the next one
 * is due an interval later (the rows are still there then). */
int retention_run(retention *r, PGconn *conn, int timeout_ms, int budget_ms, char *errstr,
                  size_t errstr_size);

void retention_destroy(retention *r); /* accepts NULL */

#endif
