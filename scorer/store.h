/* store: the scorer's PostgreSQL side: one transaction per batch, idempotent on payment_id.
 *
 * The scorer drives the transaction step by step (scorer.c reads top to bottom):
 *
 *   store_begin
 *   store_lock_payments      (only payments ingested longer ago than the retention: are they there?)
 *   store_insert_payments    INSERT ... ON CONFLICT DO NOTHING RETURNING: marks the rows this
 *                            transaction inserted (is_new); the others were persisted before
 *   store_load_decisions     the decision persisted the first time, for the redelivered ones
 *   store_load_features      ONE read of everything the batch's features need: the exact velocity
 *                            events, the feature buckets, the vault rows and the outcome links
 *   (the scorer decides in memory, in event order)
 *   store_insert_decisions, store_insert_alerts, store_insert_velocity,
 *   store_write_buckets, store_write_vault   (increments of the new payments only, keys sorted)
 *   store_commit             (store_rollback on any failure)
 *
 * Every bulk write that may meet rows other workers write COPYs the batch's rows into a
 * per-connection temporary table (ON COMMIT DELETE ROWS) and moves them with one INSERT ... SELECT
 * ... ORDER BY <primary key> ON CONFLICT, so that concurrent workers lock in the same order and
 * cannot deadlock (BENCHMARKS.md compares this with jsonb_to_recordset and unnest). The decisions
 * of the payments this transaction inserted are COPYed into decisions directly: no other
 * transaction can hold or wait for those keys. The feature read takes its keys by COPY into a
 * temporary table too; the small statements (alerts, outcomes, id lists) pass one parameter.
 *
 * Every step returns STORE_OK, STORE_TRANSIENT (connection lost, server restarting, deadlock, a
 * missing table or grant...: roll back, reconnect, retry the same batch; see db_is_data_error) or
 * STORE_FAILED (data PostgreSQL rejects, SQLSTATE class 22/23: retrying the same rows will fail the
 * same way), with the reason in errstr.
 * Every round trip has a client-side deadline (store_new's timeout_ms, db_query/db_copy_in): a
 * server that does not answer by then (a stopped process, a hung failover, a half-open path) gets
 * its connection dropped and the step returns STORE_TRANSIENT ("did not answer within"), so the
 * caller rolls back, reconnects and retries instead of waiting forever.
 * Blocking libpq calls (each bounded so): the scorer's own thread only; store_db_age_ms and
 * store_db_stuck may be called from any thread. */
#ifndef FS_STORE_H
#define FS_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buckets.h"
#include "pay.h"
#include "prune.h"
#include "vault.h"
#include "velocity.h"

typedef enum store_rc { STORE_OK = 0, STORE_TRANSIENT = 1, STORE_FAILED = -1 } store_rc;

/* The decision of one payment, as stored in decisions (and alerts when flagged). */
typedef struct store_decision {
    char decision[8];        /* "allow" | "review" | "block" */
    int score;               /* 0..100 */
    json_t *reasons;         /* owned: [{code, severity, weight, message}] */
    json_t *features;        /* owned; NULL for a decision loaded back (not needed downstream) */
    char *features_text;     /* owned: the same as JSON text (used instead of features when set) */
    char rules_version[128];
    char model_version[64];  /* "" = rules only (NULL in SQL) */
    int64_t decided_at_ms;
    int64_t scoring_latency_us;
} store_decision;

/* One distinct payment of the batch. */
typedef struct store_row {
    const pay_payment *p;    /* borrowed from the scorer's batch */
    int32_t partition;       /* where it was read (payments.source_partition/offset) */
    int64_t offset;
    bool is_new;             /* out of store_insert_payments: this transaction inserted it */
    bool gone;               /* out of store_lock_payments: not in payments */
    bool labels_pending;     /* ... and labels of it were stored before, still pending (seen
                                from this statement's snapshot) */
    bool has_decision;       /* a decision is in dec (loaded, or made by the scorer) */
    store_decision dec;
    char alert_id[37];       /* store_alert_id() when the decision is review/block */
    /* Out of store_load_decisions for a redelivered payment: the event and ingest times and the
     * country stored the first time (a client's retry under the same Idempotency-Key has its own when the body set
     * none: the outputs carry the first), and conflict, when the stored payment differs from this
     * message in who, where or how much (another payment under a payment_id already used). */
    int64_t stored_event_time_ms, stored_ingest_time_ms;
    char stored_country[3];  /* "" when none was stored */
    char conflict[200];      /* "" or why: the message goes to the DLQ (payment_conflict) */
    /* ... and the stored payment's who, where and how much: another message of the batch under
     * the same payment_id may be the true redelivery (store_row_conflict) */
    char stored_user_id[PAY_ID_MAX + 1], stored_merchant_id[PAY_ID_MAX + 1];
    int64_t stored_amount_minor;
    char stored_currency[4];
    char stored_source[PAY_ID_MAX + 1]; /* payments.source ("" when NULL) */
} store_row;

/* What of p differs from r's stored payment (pay_conflict: "user_id", "amount", ...), or NULL;
 * r must be a redelivery out of store_load_decisions. */
const char *store_row_conflict(const store_row *r, const pay_payment *p);

/* Whether p came from another client than r's stored payment (both sources known and different):
 * a payment_id collision between clients (an id taken over, or two clients' id schemes meeting),
 * not a client's retry. */
bool store_row_foreign(const store_row *r, const pay_payment *p);

/* Frees what d owns and zeroes it. */
void store_decision_clear(store_decision *d);

/* alert_id = UUIDv5(namespace = payment_id, name = "alert"): stable, so a redelivered payment's
 * alert has the same id on the topic and in the table. out: 37 bytes. Returns 0 or -1. */
int store_alert_id(const char *payment_id, char out[37]);

typedef struct store store;

/* A store for url whose round trips are abandoned after timeout_ms; not connected yet
 * (store_connect). Returns NULL on allocation failure. */
store *store_new(const char *url, const char *application_name, int timeout_ms);
void store_destroy(store *st); /* accepts NULL */

/* Connects unless connected (a broken connection is dropped first). Returns 0 or -1 with errstr. */
int store_connect(store *st, char *errstr, size_t errstr_size);
bool store_connected(const store *st);

/* One round trip (SELECT 1): an idle worker checks that the server still answers. */
store_rc store_ping(store *st, char *errstr, size_t errstr_size);

/* Milliseconds since the server last answered (a statement, an error, a connection). Any thread. */
int64_t store_db_age_ms(const store *st);

/* True when the server has not answered for longer than the deadline while the worker waits for
 * it: the last round trip failed (or one has been in flight that long). It stopped answering, or
 * is unreachable. Any thread. */
bool store_db_stuck(const store *st);

/* Milliseconds since the last round trip or connection attempt ended (the owner's thread). */
int64_t store_idle_ms(const store *st);

/* Round trips abandoned at the deadline since start (for /metrics). */
uint64_t store_timeouts(const store *st);

/* Applies pending migrations (db_migrate, with its timeout_ms and lock_timeout_ms; 0: none).
 * Returns the number applied or -1 with errstr. */
int store_migrate(store *st, int timeout_ms, int lock_timeout_ms, char *errstr,
                  size_t errstr_size);

store_rc store_begin(store *st, char *errstr, size_t errstr_size);
store_rc store_commit(store *st, char *errstr, size_t errstr_size);
/* The same with name in an SQL comment after COMMIT: the batch's commit stands out in PostgreSQL's
 * logs and statistics (and a fault test can hold its answer). name must not end a comment. */
store_rc store_commit_named(store *st, const char *name, char *errstr, size_t errstr_size);
/* Best effort; a lost connection is simply dropped (the server rolls back). */
void store_rollback(store *st);

/* Inserts the payments; sets rows[i]->is_new for those this transaction inserted, and
 * labels_pending for those of them with labels stored before (pending: to be applied by
 * store_apply_outcomes_of once this transaction is committed). payment_ids must be distinct
 * within the call. */
store_rc store_insert_payments(store *st, store_row *const *rows, size_t n, char *errstr,
                               size_t errstr_size);

/* In the batch's transaction, before store_insert_payments: locks the rows' payments that are in
 * payments FOR KEY SHARE until the transaction ends, so that retention (which skips locked rows)
 * cannot delete them before the insert sees them, and sets rows[i]->gone for all the others. */
store_rc store_lock_payments(store *st, store_row *const *rows, size_t n, char *errstr,
                             size_t errstr_size);

/* For rows that are not new: loads their stored decision (has_decision set when one exists). */
store_rc store_load_decisions(store *st, store_row *const *rows, size_t n, char *errstr,
                              size_t errstr_size);

/* What one batch reads: exact-window ranges, bucket ranges, vault/merchant keys (merchant links
 * only with event time > merchant_since_ms). */
typedef struct store_feature_query {
    const velocity_range *vr;
    size_t nvr;
    const buckets_range *br;
    size_t nbr;
    const vault_key *vk;
    size_t nvk;
    int64_t merchant_since_ms;
} store_feature_query;

/* ONE query; adds every row to v, b and vt. */
store_rc store_load_features(store *st, const store_feature_query *q, velocity *v, buckets *b,
                             vault *vt, char *errstr, size_t errstr_size);

/* Upserts bucket increments (count and sum added, counterpart sets merged), sorted by key. */
store_rc store_write_buckets(store *st, const buckets_row *rows, size_t n, char *errstr,
                             size_t errstr_size);

/* Upserts vault increments (first/last seen widened, times seen added), sorted by key. */
store_rc store_write_vault(store *st, const vault_row *rows, size_t n, char *errstr,
                           size_t errstr_size);

/* Deletes at most limit feature buckets of width_ms starting before before_ms. */
store_rc store_prune_buckets(store *st, int64_t width_ms, int64_t before_ms, int limit,
                             int64_t *deleted, char *errstr, size_t errstr_size);

/* A label not stored because its outcome_id already stands for another one: another payment_id
 * or outcome (a client's retry under the same Idempotency-Key with another body, a producer
 * reusing ids). The caller dead-letters it (outcome_conflict). */
typedef struct store_outcome_conflict {
    size_t row;                /* its index in the outcomes given */
    char outcome_id[37];
    char payment_id[37];       /* the row's */
    char outcome[16];
    char first_payment_id[37]; /* the label standing under outcome_id */
    char first_outcome[16];
} store_outcome_conflict;

/* Outcomes (labels): stores each distinct one once. outcomes: JSON array of
 * {outcome_id?, payment_id, outcome, known_at_ms, reason, source} (ids in lower case, as
 * outcome_decode gives them); takes ownership. *inserted: new rows.
 * An outcome_id names one label, a payment_id and an outcome. The label standing under one is
 * the row stored with it (before; by this call: the first row given with it; or by another worker
 * while the insert waited on that row), else the first row given with it (that row was then the
 * same payment, outcome and known_at as a label stored under another id or none). A row that differs from it in payment_id
 * or outcome is not stored and is written to conflicts (room for one per row given), *nconflicts
 * of them; one that does not is a redelivery, absorbed silently: known_at, reason and source are
 * not compared (docs/topics.md, payment_outcomes.dlq).
 * One statement, and a second one (a lookup of those ids in outcomes' unique index) only when a row
 * with an outcome_id was not inserted. */
store_rc store_insert_outcomes(store *st, json_t *outcomes, int64_t *inserted,
                               store_outcome_conflict *conflicts, size_t *nconflicts, char *errstr,
                               size_t errstr_size);

/* Applying labels (outcomes), inside the caller's transaction (READ COMMITTED; two statements
 * each: a claim of pending labels whose payment is persisted, then the apply): outcome links for
 * the payment's identifiers and merchant, and the vault fraud/chargeback counts of each payment's
 * current label (the latest known_at; a correction moves the payment's count from the old label
 * to the new one). Idempotent: what a label changes is derived from the set of the payment's
 * applied labels, never counted per message. A label whose payment another worker is applying
 * stays pending (SKIP LOCKED). *applied: how many were applied.
 *
 * store_apply_outcomes_of: the pending labels of the payments in ids (a PostgreSQL array literal
 * "{uuid,...}"), at most limit: probes of the outcomes primary key, whatever else is pending.
 *
 * store_retry_outcomes: one step of a re-try round (pending.h): the next pending labels in
 * received_at order (outcomes_pending_idx) after cursor (a received_at as PostgreSQL printed it;
 * "-infinity": from the start), at least scan of them when there are that many (those sharing the
 * last one's received_at too), and applies those whose payment is persisted. *examined gets how
 * many it read, next (PENDING_CURSOR_MAX bytes) the last received_at ("" when none). */
store_rc store_apply_outcomes_of(store *st, const char *ids, int limit, int64_t *applied,
                                 char *errstr, size_t errstr_size);
store_rc store_retry_outcomes(store *st, const char *cursor, int scan, int64_t *examined,
                              int64_t *applied, char *next, size_t next_size, char *errstr,
                              size_t errstr_size);

/* Round trips and their total time since start (for /metrics). */
void store_latency(const store *st, uint64_t *calls, uint64_t *total_us);

/* Inserts the decisions of the rows: COPY for those of payments this transaction inserted
 * (is_new), ON CONFLICT DO NOTHING for any other. */
store_rc store_insert_decisions(store *st, store_row *const *rows, size_t n, const char *scorer_id,
                                char *errstr, size_t errstr_size);

/* Inserts an alert for each row (the caller passes the flagged ones). */
store_rc store_insert_alerts(store *st, store_row *const *rows, size_t n, char *errstr,
                             size_t errstr_size);

/* Inserts velocity events (each with its payment_id), sorted by primary key. */
store_rc store_insert_velocity(store *st, const velocity_event *ev, size_t n, char *errstr,
                               size_t errstr_size);

/* Deletes at most limit velocity events with event_time < before_ms (its own statement, outside
 * any batch transaction). *deleted gets the count. */
store_rc store_prune_velocity(store *st, int64_t before_ms, int limit, int64_t *deleted,
                              char *errstr, size_t errstr_size);

/* Shared pruning (prune.h). One transaction, opened by store_begin and ended by store_commit:
 *
 *   store_prune_sync     waits for the other workers' syncs (an advisory transaction lock, so that
 *                        a prune either sees a worker's published watermark or that worker reads
 *                        the horizon the prune recorded), publishes this worker's watermark
 *                        (capped) and needed-from unless watermark_ms is 0, and reads *others (the
 *                        least needed-from of the other workers refreshed within liveness_ms, or
 *                        PRUNE_NONE) and the horizons (PRUNE_NONE: never pruned)
 *   store_prune_record   when pruning: raises the horizons to the cutoffs (never lowers them),
 *                        BEFORE any row is deleted
 *
 * then the deletions, each its own statement (store_prune_velocity, store_prune_buckets). */
store_rc store_prune_sync(store *st, const char *scorer_id, int64_t watermark_ms,
                          int64_t needed_ms, int64_t liveness_ms, int64_t *others,
                          int64_t horizon[PRUNE_SETS], char *errstr, size_t errstr_size);
store_rc store_prune_record(store *st, const int64_t cutoff[PRUNE_SETS], char *errstr,
                            size_t errstr_size);

/* The horizons alone (inside or outside a transaction). */
store_rc store_read_horizons(store *st, int64_t horizon[PRUNE_SETS], char *errstr,
                             size_t errstr_size);

/* Deletes this worker's published watermark (a clean stop: it no longer holds pruning back). */
store_rc store_drop_watermark(store *st, const char *scorer_id, char *errstr, size_t errstr_size);

/* Retention (expire.h): each call deletes one slice in its own short transaction (outside any
 * batch), skipping rows another transaction holds (FOR UPDATE SKIP LOCKED) and waiting at most
 * STORE_EXPIRE_LOCK_TIMEOUT_MS for any other lock (then STORE_TRANSIENT: "lock timeout"). On any
 * failure the transaction is rolled back.
 *
 * store_expire_payments: at most limit payments whose decision was made (decided_at) before
 * cutoff_ms (ms since the epoch, from the scorer's clock, which wrote decided_at), with their
 * decision, their alert and its alert_history (a second statement), and their outcomes; a payment
 * whose alert is locked (an analyst working it) is left for a later slice. counts[] gets the rows
 * deleted per table, in the STORE_EXPIRE_* order, *labels_expired how many of those outcomes were
 * still pending (never applied), *taken the payments the slice locked (those deleted and those
 * left for their alert: limit of them means more may be waiting). outcome_links and risk_vault are
 * not touched.
 *
 * store_expire_labels: at most limit outcomes still not applied, received more than days ago
 * (by the database's clock, which wrote received_at), whose payment is not in payments: labels
 * that never found their payment within the retention (it was deleted before they arrived, or
 * never persisted). *deleted gets the count. */
enum {
    STORE_EXPIRE_PAYMENTS,
    STORE_EXPIRE_DECISIONS,
    STORE_EXPIRE_ALERTS,
    STORE_EXPIRE_ALERT_HISTORY,
    STORE_EXPIRE_OUTCOMES,
    STORE_EXPIRE_TABLES
};
#define STORE_EXPIRE_LOCK_TIMEOUT_MS 1000

store_rc store_expire_payments(store *st, int64_t cutoff_ms, int limit,
                               int64_t counts[STORE_EXPIRE_TABLES], int64_t *labels_expired,
                               int64_t *taken, char *errstr, size_t errstr_size);
store_rc store_expire_labels(store *st, int days, int limit, int64_t *deleted, char *errstr,
                             size_t errstr_size);

#endif
