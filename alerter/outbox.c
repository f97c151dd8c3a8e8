/* outbox: produces the alerter's recorded Kafka messages (see outbox.h). */
#include "outbox.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "fsutil.h"
#include "kafka.h"
#include "log.h"

enum { OB_INFLIGHT = 1, OB_DONE, OB_FAILED };

struct outbox {
    rd_kafka_t *producer;
    char *dlq_topic, *outcomes_topic;
    metric *produced;  /* by kind */
    metric *failures;
};

outbox *outbox_new(rd_kafka_t *producer, const char *dlq_topic, const char *outcomes_topic,
                   metrics *m) {
    outbox *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->producer = producer;
    o->dlq_topic = strdup(dlq_topic);
    o->outcomes_topic = strdup(outcomes_topic);
    if (m) {
        o->produced = metrics_counter(m, "fs_alerter_outbox_produced_total",
                                      "Outbox messages produced (dlq: fraud_alerts.dlq, outcome: "
                                      "payment_outcomes)", "kind");
        o->failures = metrics_counter(m, "fs_alerter_outbox_failures_total",
                                      "Outbox messages whose delivery failed (produced again later)",
                                      NULL);
        /* at 0 from the start: a first failure must be visible to increase() */
        metric_add(o->produced, "dlq", 0);
        metric_add(o->produced, "outcome", 0);
        metric_add(o->failures, NULL, 0);
    }
    if (!o->dlq_topic || !o->outcomes_topic) {
        outbox_destroy(o);
        return NULL;
    }
    return o;
}

void outbox_destroy(outbox *o) {
    if (!o) return;
    free(o->dlq_topic);
    free(o->outcomes_topic);
    free(o);
}

void outbox_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    int8_t *state = m->_private; /* points into the pump's array, which outlives every report */
    if (state) *state = m->err ? OB_FAILED : OB_DONE;
    if (m->err)
        log_fields(LOG_WARN, "outbox_delivery_failed",
                   json_pack("{s:s, s:s}", "topic", rd_kafka_topic_name(m->rkt), "error",
                             rd_kafka_err2str(m->err)),
                   "an outbox message was not delivered; it stays pending");
}

/* One [name, value, "base64"] header (a value that was not text, alerter.c): its bytes. */
static void header_base64(rd_kafka_headers_t *h, const char *k, const char *b64) {
    size_t len = strlen(b64);
    unsigned char *raw = malloc(len / 4 * 3 + 3);
    int n = raw ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)len) : -1;
    if (n >= 0) /* EVP_DecodeBlock counts the padding as zero bytes */
        n -= (len > 0 && b64[len - 1] == '=') + (len > 1 && b64[len - 2] == '=');
    if (n >= 0) rd_kafka_header_add(h, k, -1, raw, n);
    free(raw);
}

/* [[name, value], ...] -> Kafka headers (new; the caller hands them to the message). A third
 * element "base64": the value is base64 of the original bytes. */
static rd_kafka_headers_t *headers_from(const char *json) {
    json_t *a = json_loads(json, 0, NULL);
    rd_kafka_headers_t *h = rd_kafka_headers_new(json_array_size(a) + 1);
    size_t i;
    json_t *pair;
    json_array_foreach(a, i, pair) {
        const char *k = json_string_value(json_array_get(pair, 0));
        const char *v = json_string_value(json_array_get(pair, 1));
        const char *enc = json_string_value(json_array_get(pair, 2));
        if (k && v && enc && strcmp(enc, "base64") == 0) header_base64(h, k, v);
        else if (k && v) kafka_header_str(h, k, v);
        else if (k && json_is_null(json_array_get(pair, 1))) rd_kafka_header_add(h, k, -1, NULL, 0);
    }
    json_decref(a);
    return h;
}

/* Produces row i (bytea columns arrive as hex text). Sets *state. */
static void produce_row(outbox *o, PGresult *res, int i, int8_t *state) {
    size_t klen = 0, vlen = 0;
    const char *kind = PQgetvalue(res, i, 1);
    const char *topic = strcmp(kind, "outcome") == 0 ? o->outcomes_topic : o->dlq_topic;
    unsigned char *key = PQgetisnull(res, i, 2)
                             ? NULL
                             : PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 2), &klen);
    unsigned char *val = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 3), &vlen);
    rd_kafka_headers_t *h = headers_from(PQgetvalue(res, i, 4));
    rd_kafka_resp_err_t err = val ? rd_kafka_producev(o->producer, RD_KAFKA_V_TOPIC(topic),
                                                      RD_KAFKA_V_KEY(key, klen),
                                                      RD_KAFKA_V_VALUE(val, vlen),
                                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                      RD_KAFKA_V_HEADERS(h),
                                                      RD_KAFKA_V_OPAQUE(state), RD_KAFKA_V_END)
                                  : RD_KAFKA_RESP_ERR__FAIL;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        *state = OB_INFLIGHT; /* h belongs to the message now */
    } else {
        *state = OB_FAILED;
        rd_kafka_headers_destroy(h);
        log_fields(LOG_WARN, "outbox_produce_failed",
                   json_pack("{s:s, s:s}", "topic", topic, "error", rd_kafka_err2str(err)),
                   "could not queue an outbox message; it stays pending");
    }
    PQfreemem(key);
    PQfreemem(val);
}

static int open_reports(const int8_t *states, int n) {
    int open = 0;
    for (int i = 0; i < n; i++) open += states[i] == OB_INFLIGHT;
    return open;
}

/* Waits for the reports of states[0..n) (flush serves them on this thread). After wait_ms the
 * rest is purged (reported as failed: produced again next time). Returns -1 only if reports are
 * still outstanding even then: states must then never be freed (a report would write into it). */
static int await_reports(outbox *o, const int8_t *states, int n, int wait_ms) {
    int64_t deadline = fs_mono_us() + (int64_t)wait_ms * 1000, give_up = 0;
    while (open_reports(states, n) > 0) {
        if (!give_up && fs_mono_us() > deadline) {
            rd_kafka_purge(o->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            give_up = fs_mono_us() + 10 * 1000000LL;
        }
        if (give_up && fs_mono_us() > give_up) return -1;
        rd_kafka_flush(o->producer, 50);
    }
    return 0;
}

/* UPDATE ... produced_at for the rows delivered; "{1,2,3}" array literal of their ids. */
static int mark_produced(outbox *o, PGconn *conn, int timeout_ms, PGresult *rows,
                         const int8_t *states, int n, int *count, char *errstr, size_t errstr_size) {
    size_t cap = (size_t)n * 21 + 3, len = 0;
    char *ids = malloc(cap);
    if (!ids) return snprintf(errstr, errstr_size, "out of memory"), -1;
    ids[len++] = '{';
    *count = 0;
    for (int i = 0; i < n; i++) {
        if (states[i] != OB_DONE) {
            metric_add(o->failures, NULL, 1);
            continue;
        }
        len += (size_t)snprintf(ids + len, cap - len, "%s%s", *count ? "," : "", PQgetvalue(rows, i, 0));
        metric_add(o->produced, PQgetvalue(rows, i, 1), 1);
        (*count)++;
    }
    snprintf(ids + len, cap - len, "}");
    const char *params[1] = {ids};
    PGresult *res = db_query(conn, timeout_ms,
                             "UPDATE outbox SET produced_at = now() WHERE outbox_id = ANY ($1::bigint[])",
                             1, params, NULL, NULL);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc) db_error(conn, res, errstr, errstr_size);
    PQclear(res);
    free(ids);
    return rc;
}

int outbox_pump(outbox *o, PGconn *conn, int db_timeout_ms, int limit, int wait_ms, char *errstr,
                size_t errstr_size) {
    char lim[16], e[256];
    int8_t *states = NULL;
    int produced = -1;
    PGresult *rows = NULL;
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[1] = {lim};
    if (db_exec_within(conn, db_timeout_ms, "BEGIN", errstr, errstr_size) != 0) return -1;
    rows = db_query(conn, db_timeout_ms,
                    "SELECT outbox_id, kind, msg_key, msg_value, headers::text FROM outbox "
                    "WHERE produced_at IS NULL ORDER BY outbox_id LIMIT $1::int "
                    "FOR UPDATE SKIP LOCKED",
                    1, params, NULL, NULL);
    if (PQresultStatus(rows) != PGRES_TUPLES_OK) {
        db_error(conn, rows, errstr, errstr_size);
        goto done;
    }
    int n = PQntuples(rows);
    states = calloc(n ? (size_t)n : 1, sizeof *states);
    if (!states) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) produce_row(o, rows, i, &states[i]);
    if (await_reports(o, states, n, wait_ms) != 0) {
        log_msg(LOG_ERROR, "outbox_reports_lost", "delivery reports never came; rows stay pending");
        states = NULL; /* leaked on purpose: a late report may still write into it */
        snprintf(errstr, errstr_size, "delivery reports did not arrive");
        goto done;
    }
    if (n && mark_produced(o, conn, db_timeout_ms, rows, states, n, &produced, errstr, errstr_size) != 0)
        goto done;
    if (!n) produced = 0;
    if (db_exec_within(conn, db_timeout_ms, "COMMIT", errstr, errstr_size) != 0) produced = -1;
done:
    if (produced < 0 && PQstatus(conn) == CONNECTION_OK)
        db_exec_within(conn, db_timeout_ms, "ROLLBACK", e, sizeof e);
    free(states);
    PQclear(rows);
    return produced;
}
