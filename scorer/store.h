/* store: the scorer's PostgreSQL side: one transaction per batch, idempotent on payment_id.
 *
 * The scorer drives the transaction step by step (scorer.c reads top to bottom):
 *
 *   store_begin
 *   store_insert_payments    INSERT ... ON CONFLICT DO NOTHING RETURNING: marks the rows this
 *                            transaction inserted (is_new); the others were persisted before
 *   store_load_decisions     the decision persisted the first time, for the redelivered ones
 *   store_load_velocity      ONE read of the velocity events the batch's windows reach
 *   (the scorer decides in memory)
 *   store_insert_decisions, store_insert_alerts, store_insert_velocity
 *   store_commit             (store_rollback on any failure)
 *
 * Every bulk statement takes ONE parameter, a JSON array (jsonb_to_recordset), and sorts its rows
 * by primary key so that concurrent workers lock in the same order and cannot deadlock.
 *
 * Every step returns STORE_OK, STORE_TRANSIENT (connection lost, server restarting, deadlock, a
 * missing table or grant...: roll back, reconnect, retry the same batch; see db_is_data_error) or
 * STORE_FAILED (data PostgreSQL rejects, SQLSTATE class 22/23: retrying the same rows will fail the
 * same way), with the reason in errstr.
 * Blocking libpq calls: the scorer's own thread only. */
#ifndef FS_STORE_H
#define FS_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pay.h"
#include "velocity.h"

typedef enum store_rc { STORE_OK = 0, STORE_TRANSIENT = 1, STORE_FAILED = -1 } store_rc;

/* The decision of one payment, as stored in decisions (and alerts when flagged). */
typedef struct store_decision {
    char decision[8];        /* "allow" | "review" | "block" */
    int score;               /* 0..100 */
    json_t *reasons;         /* owned: [{code, severity, weight, message}] */
    json_t *features;        /* owned; NULL for a decision loaded back (not needed downstream) */
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
    bool has_decision;       /* a decision is in dec (loaded, or made by the scorer) */
    store_decision dec;
    char alert_id[37];       /* store_alert_id() when the decision is review/block */
} store_row;

/* Frees what d owns and zeroes it. */
void store_decision_clear(store_decision *d);

/* alert_id = UUIDv5(namespace = payment_id, name = "alert"): stable, so a redelivered payment's
 * alert has the same id on the topic and in the table. out: 37 bytes. Returns 0 or -1. */
int store_alert_id(const char *payment_id, char out[37]);

typedef struct store store;

/* A store for url; not connected yet (store_connect). Returns NULL on allocation failure. */
store *store_new(const char *url, const char *application_name);
void store_destroy(store *st); /* accepts NULL */

/* Connects unless connected (a broken connection is dropped first). Returns 0 or -1 with errstr. */
int store_connect(store *st, char *errstr, size_t errstr_size);
bool store_connected(const store *st);

/* Applies pending migrations (db_migrate). Returns the number applied or -1 with errstr. */
int store_migrate(store *st, char *errstr, size_t errstr_size);

store_rc store_begin(store *st, char *errstr, size_t errstr_size);
store_rc store_commit(store *st, char *errstr, size_t errstr_size);
/* Best effort; a lost connection is simply dropped (the server rolls back). */
void store_rollback(store *st);

/* Inserts the payments; sets rows[i]->is_new for those this transaction inserted. payment_ids
 * must be distinct within the call. */
store_rc store_insert_payments(store *st, store_row *const *rows, size_t n, char *errstr,
                               size_t errstr_size);

/* For rows that are not new: loads their stored decision (has_decision set when one exists). */
store_rc store_load_decisions(store *st, store_row *const *rows, size_t n, char *errstr,
                              size_t errstr_size);

/* Adds to v every stored velocity event inside the ranges (one query). */
store_rc store_load_velocity(store *st, const velocity_range *rg, size_t n, velocity *v,
                             char *errstr, size_t errstr_size);

/* Inserts the decisions of the rows (ON CONFLICT DO NOTHING). */
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

#endif
