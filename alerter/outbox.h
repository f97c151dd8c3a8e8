/* outbox: publishes the Kafka messages the alerter's transactions recorded (table outbox,
 * schemas/sql/002_alerter.sql): dead letters to fraud_alerts.dlq and analyst outcomes to
 * payment_outcomes.
 *
 * A message is written to the outbox in the same transaction as the state change that causes it
 * (a delivery failing for good, an alert resolved - also by a plain UPDATE in psql), so it cannot
 * be lost; the pump produces pending rows, waits for their delivery reports and only then marks
 * them produced. At least once: a crash between the two produces a row again (its headers carry
 * stable ids). Rows are taken with FOR UPDATE SKIP LOCKED: several alerters share the work. */
#ifndef FS_OUTBOX_H
#define FS_OUTBOX_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include "metrics.h"

typedef struct outbox outbox;

/* producer: borrowed, its delivery-report callback must be outbox_dr_cb with this outbox's
 * messages' opaque left to the pump. Topic names are copied. m may be NULL. */
outbox *outbox_new(rd_kafka_t *producer, const char *dlq_topic, const char *outcomes_topic,
                   metrics *m);
void outbox_destroy(outbox *o); /* accepts NULL */

/* Produces up to limit pending rows in one transaction on conn, waiting up to wait_ms for their
 * delivery reports. Returns the number produced (and marked), or -1 with errstr (database error:
 * the transaction is rolled back, nothing is marked; a statement not answered within
 * db_timeout_ms drops the connection, see db_query). */
int outbox_pump(outbox *o, PGconn *conn, int db_timeout_ms, int limit, int wait_ms, char *errstr,
                size_t errstr_size);

/* The producer's delivery-report callback (rd_kafka_conf_set_dr_msg_cb). */
void outbox_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

#endif
