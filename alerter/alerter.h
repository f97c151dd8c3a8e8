/* alerter: the consume path: fraud_alerts -> PostgreSQL (alert events + their deliveries) -> commit.
 *
 * One thread polls fraud_alerts (its own consumer group, manual offsets) into batches. Each batch
 * is recorded in ONE PostgreSQL transaction (alerter_record_alerts(), schemas/sql/002_alerter.sql):
 * every valid alert once (keyed by alert_id: a redelivered or duplicated message creates nothing),
 * with one delivery row per matching subscription; a message that is not a valid fraud_alerts v1
 * alert becomes an outbox row for fraud_alerts.dlq in the same transaction. Only then are the
 * offsets committed. Delivery itself happens later, on the dispatcher thread (dispatch.h): a slow
 * subscriber never holds up the partition. PostgreSQL unreachable: the same batch is retried with
 * backoff, uncommitted, for as long as it takes.
 *
 * Between batches the same thread runs the outbox pump (outbox.h), and serves librdkafka's
 * statistics (consumer lag per partition -> /metrics) in its polls: while it is stuck (a batch
 * retried until PostgreSQL records it, a statement waiting on a lock) no statistics arrive and the
 * lag keeps its last value; the age of its last poll (alerter_poll_age_seconds) shows the stall. */
#ifndef FS_ALERTER_H
#define FS_ALERTER_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "dbhealth.h"
#include "dispatch.h"
#include "metrics.h"

typedef struct alerter_config {
    const char *brokers;
    const cfg_props *props;      /* librdkafka passthrough */
    const char *group_id;
    const char *topic;           /* fraud_alerts */
    const char *dlq_topic;       /* fraud_alerts.dlq */
    const char *outcomes_topic;  /* payment_outcomes */
    const char *database_url;
    const char *alerter_id;      /* client.id */
    int batch_max;
    int batch_max_ms;
    int outbox_interval_ms;
    int startup_timeout_ms;
    int shutdown_timeout_ms;
    int db_timeout_ms;           /* a statement not answered by then drops the connection */
    int dispatch_poll_interval_ms; /* the dispatcher's longest healthy gap between round trips */
    metrics *metrics;            /* borrowed, may be NULL */
    metric *db_errors;           /* fs_alerter_db_errors_total{side}, shared with the dispatcher */
    dispatch *dispatch;          /* borrowed, may be NULL: woken when deliveries were created */
    dbhealth *db;                /* borrowed, outlives the alerter and every alerter_ready() call:
                                    the consume side's connection (up; last successful round trip:
                                    a batch recorded, an outbox round, at least every
                                    outbox_interval_ms when healthy), written by alerter_run() */
    const dbhealth *dispatch_db; /* borrowed, may be NULL: the dispatcher's, for alerter_ready() */
} alerter_config;

typedef struct alerter alerter;

/* Creates the consumer and the producer, waits (blocking: start-up only) for the brokers and the
 * topics, and subscribes. Takes ownership of conn (connected, migrated), also on failure. cfg's
 * strings must outlive the alerter. NULL with errstr. */
alerter *alerter_new(const alerter_config *cfg, PGconn *conn, char *errstr, size_t errstr_size);

/* Consumes until *stop is set (the process's SIGTERM flag: app.h); then finishes (or abandons, if
 * PostgreSQL is away) the batch in hand and leaves the group. Returns 0, or -1 after a fatal consumer error. */
int alerter_run(alerter *a, const atomic_bool *stop);

/* One last outbox round at shutdown (after the dispatcher stopped: its final dead letters go out
 * now rather than at the next start). Stops at the first error. */
void alerter_drain_outbox(alerter *a);

/* admin_ready_fn (arg: the alerter): alerter_run() is in its loop (not starting, not stopping),
 * the consumer has joined the group and got its assignment, and both PostgreSQL connections work
 * and answered lately (a server that stops answering leaves connections that look up). Any thread. */
bool alerter_ready(void *arg, char *why, size_t why_size);

/* Seconds since the consumer loop last returned from polling fraud_alerts (0 before
 * alerter_run()): below a second while it consumes, growing while it is stuck. Any thread. */
double alerter_poll_age_seconds(alerter *a);

void alerter_destroy(alerter *a); /* accepts NULL */

#endif
