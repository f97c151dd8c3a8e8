/* alerter: fraud_alerts -> PostgreSQL -> commit (see alerter.h).
 *
 * Reading order: alerter_run() and the batch (poll, finish: decode, persist, commit), then the
 * consumer's events (rebalances, statistics), then set-up. */
#include "alerter.h"

#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "dbhealth.h"
#include "fsutil.h"
#include "kafka.h"
#include "log.h"
#include "outbox.h"
#include "pay.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define OUTBOX_BATCH 200
#define OUTBOX_WAIT_MS 10000

/* One consumed message: a valid alert (rec: its row for alerter_record_alerts) or a dead letter. */
typedef struct al_item {
    rd_kafka_message_t *msg; /* owned by the batch until it is cleared */
    json_t *rec;             /* NULL: dead letter */
    const char *reason;      /* dead letter: undecodable, invalid_alert, db_rejected */
    char error[256];
} al_item;

struct alerter {
    alerter_config cfg;
    PGconn *conn;
    rd_kafka_t *consumer, *producer;
    outbox *ob;
    const atomic_bool *stop;
    al_item *items;
    size_t nitems;
    bool in_batch, abandoned, fatal;
    int64_t next_pump_us;
    int pump_backoff_ms;                    /* PostgreSQL down: the pump's reconnect backoff */
    atomic_bool assigned, consuming;        /* read by alerter_ready() on the admin thread */
    kafka_poll_clock polled;                /* the loop's last poll, ditto (/metrics) */
    kafka_gaps *gaps;    /* the offsets expected next: alerts lost to retention (check_offset) */
    metric *m_messages, *m_lag, *m_db_errors, *m_batches, *m_offsets_lost, *m_messages_lost;
};

static int backoff_next(int ms) { return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2; }

static void alerter_poll_batch(alerter *a);
static int alerter_finish_batch(alerter *a);
static void alerter_decode_batch(alerter *a);
typedef struct persist_counts {
    int events, deliveries; /* created by the batch's transaction */
} persist_counts;

static int alerter_persist_batch(alerter *a, persist_counts *n);
static void alerter_commit_batch(alerter *a);
static void alerter_clear_batch(alerter *a);
static void alerter_consumer_event(alerter *a, rd_kafka_message_t *m);
static void alerter_check_offset(alerter *a, const rd_kafka_message_t *m);
static void alerter_pump(alerter *a);
static int alerter_reconnect(alerter *a, char *err, size_t esz);

static json_t *msg_ctx(const rd_kafka_message_t *m) {
    return json_pack("{s:s, s:i, s:I}", "topic", m->rkt ? rd_kafka_topic_name(m->rkt) : "",
                     "partition", (int)m->partition, "offset", (json_int_t)m->offset);
}

static int alerter_sleep(alerter *a, int ms) {
    for (int slept = 0; slept < ms; slept += 50) {
        if (atomic_load(a->stop)) return -1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return atomic_load(a->stop) ? -1 : 0;
}

/* ---- the loop ------------------------------------------------------------------------------ */

int alerter_run(alerter *a, const atomic_bool *stop) {
    a->stop = stop;
    kafka_poll_clock_start(&a->polled);
    atomic_store(&a->consuming, true);
    while (!atomic_load(stop) && !a->abandoned && !a->fatal) {
        alerter_poll_batch(a);
        if (a->nitems > 0) alerter_finish_batch(a); /* also when stopping: finish what we hold */
        if (!atomic_load(stop) && fs_mono_us() >= a->next_pump_us) alerter_pump(a);
    }
    atomic_store(&a->consuming, false); /* not ready from here on: shutting down */
    if (a->nitems > 0) alerter_clear_batch(a); /* unfinished: not committed, redelivered */
    kafka_consumer_close(&a->consumer);
    return a->fatal ? -1 : 0;
}

/* Polls until batch_max messages, or batch_max_ms after the first, or 100 ms of nothing. */
static void alerter_poll_batch(alerter *a) {
    int64_t deadline_us = 0;
    while (a->nitems < (size_t)a->cfg.batch_max && !atomic_load(a->stop) && !a->abandoned &&
           !a->fatal) {
        int timeout_ms = 100;
        if (a->nitems > 0) {
            int64_t left_ms = (deadline_us - fs_mono_us()) / 1000;
            if (left_ms <= 0) break;
            timeout_ms = (int)left_ms;
        }
        rd_kafka_message_t *m = kafka_consumer_poll(a->consumer, timeout_ms, &a->polled);
        if (!m) {
            if (a->nitems == 0) break;
            continue;
        }
        if (m->err) {
            alerter_consumer_event(a, m);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (a->nitems == 0) deadline_us = fs_mono_us() + (int64_t)a->cfg.batch_max_ms * 1000;
        alerter_check_offset(a, m);
        a->items[a->nitems++] = (al_item){.msg = m}; /* the batch owns m now */
    }
}

/* decode -> persist -> commit. Returns 0, or -1 when the batch was abandoned (stopping while
 * PostgreSQL is unreachable): nothing of it was committed and this consumer consumes no further. */
static int alerter_finish_batch(alerter *a) {
    persist_counts n = {0};
    a->in_batch = true;
    alerter_decode_batch(a);
    int rc = alerter_persist_batch(a, &n);
    if (rc == 0) {
        alerter_commit_batch(a);
        metric_add(a->m_batches, NULL, 1);
        if (n.deliveries > 0 && a->cfg.dispatch) dispatch_wake(a->cfg.dispatch);
    } else {
        a->abandoned = true;
        log_fields(LOG_WARN, "batch_abandoned", json_pack("{s:I}", "messages", (json_int_t)a->nitems),
                   "stopping with a batch that could not be recorded: not committed, it will be "
                   "consumed again");
    }
    alerter_clear_batch(a);
    a->in_batch = false;
    return rc;
}

/* ---- 1. decode ------------------------------------------------------------------------------- */

static void dead_letter(al_item *it, const char *reason, const char *error) {
    it->reason = reason;
    snprintf(it->error, sizeof it->error, "%s", error);
    json_decref(it->rec);
    it->rec = NULL;
    json_t *f = msg_ctx(it->msg);
    json_object_set_new(f, "reason", json_string(reason));
    json_object_set_new(f, "error", json_string(it->error));
    log_fields(LOG_WARN, "dead_letter", f, "message dead-lettered: %s", reason);
}

static const char *uuid_field(json_t *o, const char *name) {
    const char *s = json_string_value(json_object_get(o, name));
    return s && fs_uuid_valid(s) ? s : NULL;
}

/* 0 when o[name] is a string of 1..max bytes (or null, when nullable), else -1 with err naming it. */
static int text_field(json_t *o, const char *name, size_t max, bool nullable, char *err, size_t esz) {
    json_t *v = json_object_get(o, name);
    if (nullable && json_is_null(v)) return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max)
        return snprintf(err, esz, "%s: a string of 1..%zu bytes%s is required", name, max,
                        nullable ? " (or null)" : ""), -1;
    return 0;
}

static int time_field(json_t *o, const char *name, char *err, size_t esz) {
    int64_t ms;
    const char *t = json_string_value(json_object_get(o, name));
    if (!t || fs_time_parse_rfc3339(t, &ms) != 0)
        return snprintf(err, esz, "%s: an RFC 3339 time is required", name), -1;
    return 0;
}

/* The rest of fraud-alert.v1.json that the alerter passes on, signed, to subscribers: each required
 * field with its type, the amount consistent with amount_minor and currency_exp, reasons as
 * {code, severity, weight, message}. A message that fails is no v1 alert (invalid_alert): never
 * signed and delivered. (alert_id is not checked against its derivation from payment_id: alerts
 * from another producer keep their own ids.) */
static int alert_body_check(json_t *o, char *err, size_t esz) {
    json_t *minor = json_object_get(o, "amount_minor"), *exp = json_object_get(o, "currency_exp");
    json_t *reasons = json_object_get(o, "reasons"), *r;
    const char *cur = json_string_value(json_object_get(o, "currency"));
    const char *amount = json_string_value(json_object_get(o, "amount"));
    char want[40];
    size_t i;
    if (text_field(o, "rules_version", 128, false, err, esz) || text_field(o, "model_version", 64, true, err, esz) ||
        text_field(o, "user_id", 128, false, err, esz) || text_field(o, "merchant_id", 128, false, err, esz) ||
        time_field(o, "event_time", err, esz) || time_field(o, "created_at", err, esz))
        return -1;
    if (!json_is_integer(minor) || json_integer_value(minor) < 1)
        return snprintf(err, esz, "amount_minor: an integer >= 1 is required"), -1;
    if (!json_is_integer(exp) || json_integer_value(exp) < 0 || json_integer_value(exp) > 4)
        return snprintf(err, esz, "currency_exp: an integer 0..4 is required"), -1;
    if (!cur || strlen(cur) != 3 || strspn(cur, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3)
        return snprintf(err, esz, "currency: three upper-case letters are required"), -1;
    pay_amount_format(json_integer_value(minor), (int)json_integer_value(exp), want, sizeof want);
    if (!amount || strcmp(amount, want) != 0)
        return snprintf(err, esz, "amount: the decimal string of amount_minor and currency_exp "
                        "(%s) is required", want), -1;
    if (!json_is_array(reasons)) return snprintf(err, esz, "reasons: an array is required"), -1;
    json_array_foreach(reasons, i, r) {
        if (!json_is_string(json_object_get(r, "code")) || !json_is_string(json_object_get(r, "severity")) ||
            !json_is_integer(json_object_get(r, "weight")) || !json_is_string(json_object_get(r, "message")))
            return snprintf(err, esz, "reasons[%zu]: {code, severity, weight, message} is required", i), -1;
    }
    return 0;
}

/* The fields the alerter needs from a fraud_alerts v1 message (others travel in the body). */
static json_t *alert_record(json_t *o, const rd_kafka_message_t *m, char *err, size_t esz) {
    const char *alert = uuid_field(o, "alert_id"), *payment = uuid_field(o, "payment_id");
    const char *decision = json_string_value(json_object_get(o, "decision"));
    json_t *score = json_object_get(o, "score"), *country = json_object_get(o, "country");
    json_t *created = json_object_get(o, "created_at");
    int64_t ms;
    if (json_integer_value(json_object_get(o, "schema_version")) != 1)
        return snprintf(err, esz, "schema_version: must be 1"), NULL;
    if (!alert) return snprintf(err, esz, "alert_id: a UUID is required"), NULL;
    if (!payment) return snprintf(err, esz, "payment_id: a UUID is required"), NULL;
    if (!decision || (strcmp(decision, "review") != 0 && strcmp(decision, "block") != 0))
        return snprintf(err, esz, "decision: must be review or block"), NULL;
    if (!json_is_integer(score) || json_integer_value(score) < 0 || json_integer_value(score) > 100)
        return snprintf(err, esz, "score: an integer 0..100 is required"), NULL;
    if (!json_is_null(country) && country &&
        (!json_is_string(country) || json_string_length(country) != 2))
        return snprintf(err, esz, "country: two letters or null"), NULL;
    if (alert_body_check(o, err, esz) != 0) return NULL;
    bool has_created = json_is_string(created) && fs_time_parse_rfc3339(json_string_value(created), &ms) == 0;
    json_t *rec = json_pack("{s:s, s:s, s:s, s:O, s:O?, s:O?, s:s%, s:i, s:I}", "alert_id", alert,
                            "payment_id", payment, "decision", decision, "score", score, "country",
                            json_is_string(country) ? country : NULL, "created_at",
                            has_created ? created : NULL, "body", (const char *)m->payload, m->len,
                            "partition", (int)m->partition, "offset", (json_int_t)m->offset);
    if (!rec) snprintf(err, esz, "out of memory");
    return rec;
}

static void alerter_decode_batch(alerter *a) {
    char err[256];
    for (size_t i = 0; i < a->nitems; i++) {
        al_item *it = &a->items[i];
        json_error_t je;
        json_t *o = it->msg->len ? json_loadb(it->msg->payload, it->msg->len, JSON_REJECT_DUPLICATES, &je)
                                 : NULL;
        if (!json_is_object(o)) {
            dead_letter(it, "undecodable", o ? "not a JSON object" : "not JSON");
        } else if (!(it->rec = alert_record(o, it->msg, err, sizeof err))) {
            dead_letter(it, "invalid_alert", err);
        }
        json_decref(o);
    }
}

/* ---- 2. persist: one transaction for the batch ------------------------------------------------- */

typedef enum { P_OK, P_DATA, P_TRANSIENT } persist_rc;

static persist_rc result_rc(PGconn *conn, PGresult *res, ExecStatusType want, char *err, size_t esz) {
    if (PQresultStatus(res) == want) return P_OK;
    db_error(conn, res, err, esz);
    return db_is_data_error(res) ? P_DATA : P_TRANSIENT;
}

/* A header value as a JSON outbox pair: [name, "text"] when it is UTF-8 text without NUL (what
 * jsonb can hold), [name, null] for a header without a value, else [name, "<base64>", "base64"]
 * (outbox.c decodes it: the dead letter carries the original bytes). A name that is not UTF-8
 * gives NULL (the header is dropped, see the note). */
static json_t *header_pair(const char *name, const void *val, size_t size) {
    json_t *v = !val ? json_null() : !memchr(val, '\0', size) ? json_stringn(val, size) : NULL;
    if (v) return json_pack("[s, o]", name, v); /* NULL if name is not UTF-8: v is released */
    char *b64 = malloc(4 * ((size + 2) / 3) + 1);
    if (!b64) return NULL;
    EVP_EncodeBlock((unsigned char *)b64, val, (int)size);
    json_t *pair = json_pack("[s, s, s]", name, b64, "base64");
    free(b64);
    return pair;
}

/* The dead letter's headers: the original ones (with_original), then why and where from. */
static char *dead_letter_headers(const al_item *it, bool with_original) {
    const rd_kafka_message_t *m = it->msg;
    rd_kafka_headers_t *hdrs = NULL;
    json_t *h = json_array();
    char part[16], off[24], now[25];
    const char *name;
    const void *val;
    size_t size, dropped = 0;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++) {
            json_t *pair = with_original ? header_pair(name, val, size) : NULL;
            if (pair) json_array_append_new(h, pair);
            else dropped++;
        }
    snprintf(part, sizeof part, "%" PRId32, m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    fs_time_format_rfc3339(fs_now_ms(), now);
    const char *add[][2] = {{"dlq_reason", it->reason}, {"dlq_error", it->error},
                            {"source_topic", rd_kafka_topic_name(m->rkt)}, {"source_partition", part},
                            {"source_offset", off}, {"dlq_time", now}};
    for (size_t i = 0; i < sizeof add / sizeof *add; i++)
        json_array_append_new(h, json_pack("[s, s]", add[i][0], add[i][1]));
    if (dropped) {
        char note[96];
        snprintf(note, sizeof note, "%zu original header(s) dropped: %s", dropped,
                 with_original ? "name not UTF-8" : "PostgreSQL refused them");
        json_array_append_new(h, json_pack("[s, s]", "dlq_headers_dropped", note));
    }
    char *hs = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    return hs;
}

static persist_rc insert_outbox_dlq(alerter *a, const al_item *it, bool with_original, char *err,
                                    size_t esz) {
    const rd_kafka_message_t *m = it->msg;
    char *hs = dead_letter_headers(it, with_original);
    if (!hs) return snprintf(err, esz, "out of memory"), P_TRANSIENT;
    const char *params[3] = {m->key ? m->key : NULL, m->payload ? m->payload : "", hs};
    int lens[3] = {(int)m->key_len, (int)m->len, 0}, fmts[3] = {1, 1, 0};
    PGresult *res = db_query(a->conn, a->cfg.db_timeout_ms,
                             "INSERT INTO outbox (kind, msg_key, msg_value, headers) "
                             "VALUES ('dlq', $1, $2, $3::jsonb)",
                             3, params, lens, fmts);
    persist_rc rc = result_rc(a->conn, res, PGRES_COMMAND_OK, err, esz);
    PQclear(res);
    free(hs);
    return rc;
}

static persist_rc exec_rc(alerter *a, const char *sql, char *err, size_t esz) {
    PGresult *res = db_query(a->conn, a->cfg.db_timeout_ms, sql, 0, NULL, NULL, NULL);
    persist_rc rc = result_rc(a->conn, res, PGRES_COMMAND_OK, err, esz);
    PQclear(res);
    return rc;
}

/* The original message, key and headers, plus why and where from (docs/alerter.md). A row
 * PostgreSQL refuses as data is never retried as it is (the batch would fail forever and stall
 * its partition): within a savepoint, the dead letter is written again without the original
 * headers; refused even then, it is logged and skipped (its offset is committed with the batch). */
static persist_rc insert_dead_letter(alerter *a, const al_item *it, char *err, size_t esz) {
    char e[512];
    persist_rc rc = exec_rc(a, "SAVEPOINT dead_letter", err, esz);
    if (rc == P_OK) rc = insert_outbox_dlq(a, it, true, err, esz);
    for (int bare = 1; rc == P_DATA && bare >= 0; bare--) {
        json_t *f = msg_ctx(it->msg);
        json_object_set_new(f, "error", json_string(err));
        log_fields(LOG_ERROR, bare ? "dead_letter_headers_refused" : "dead_letter_refused", f,
                   bare ? "PostgreSQL refused a dead letter's headers: stored without them"
                        : "PostgreSQL refused a dead letter even without its headers: skipped, it "
                          "stays only on the source topic");
        if ((rc = exec_rc(a, "ROLLBACK TO SAVEPOINT dead_letter", e, sizeof e)) != P_OK)
            return snprintf(err, esz, "%s", e), P_TRANSIENT;
        rc = bare ? insert_outbox_dlq(a, it, false, err, esz) : P_OK;
    }
    return rc == P_OK ? exec_rc(a, "RELEASE SAVEPOINT dead_letter", err, esz) : rc;
}

/* items[from, to) in one transaction (to - from = 1: isolating a row PostgreSQL refuses). */
static persist_rc persist_range(alerter *a, size_t from, size_t to, persist_counts *n, char *err,
                                size_t esz) {
    char e[256];
    json_t *recs = json_array();
    for (size_t i = from; i < to; i++)
        if (a->items[i].rec) json_array_append(recs, a->items[i].rec);
    char *param = json_dumps(recs, JSON_COMPACT);
    json_decref(recs);
    if (!param) return snprintf(err, esz, "out of memory"), P_TRANSIENT;
    persist_rc rc = exec_rc(a, "BEGIN", err, esz);
    const char *params[1] = {param};
    PGresult *res = rc == P_OK ? db_query(a->conn, a->cfg.db_timeout_ms,
                                          "SELECT * FROM alerter_record_alerts($1::jsonb)", 1,
                                          params, NULL, NULL)
                               : NULL;
    if (rc == P_OK && (rc = result_rc(a->conn, res, PGRES_TUPLES_OK, err, esz)) == P_OK) {
        n->events += atoi(PQgetvalue(res, 0, 0));
        n->deliveries += atoi(PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    for (size_t i = from; rc == P_OK && i < to; i++)
        if (!a->items[i].rec) rc = insert_dead_letter(a, &a->items[i], err, esz);
    if (rc == P_OK) rc = exec_rc(a, "COMMIT", err, esz);
    if (rc != P_OK && PQstatus(a->conn) == CONNECTION_OK)
        db_exec_within(a->conn, a->cfg.db_timeout_ms, "ROLLBACK", e, sizeof e);
    free(param);
    return rc;
}

/* PostgreSQL refused the batch's data: each alert alone, the ones it still refuses become dead
 * letters (db_rejected). The others are recorded now, idempotently, and again with the batch (where
 * they are no longer new: what they created is added to *n here). */
static persist_rc isolate_rejected(alerter *a, persist_counts *n, char *err, size_t esz) {
    char e[512];
    for (size_t i = 0; i < a->nitems; i++) {
        if (!a->items[i].rec) continue;
        persist_rc rc = persist_range(a, i, i + 1, n, e, sizeof e);
        if (rc == P_TRANSIENT) return snprintf(err, esz, "%s", e), rc;
        if (rc == P_DATA) dead_letter(&a->items[i], "db_rejected", e);
    }
    return P_OK;
}

/* Counts the batch's messages by result once it is recorded. */
static void count_messages(alerter *a, int new_events) {
    int valid = 0, dead = 0;
    for (size_t i = 0; i < a->nitems; i++) a->items[i].rec ? valid++ : dead++;
    metric_add(a->m_messages, "new", new_events);
    metric_add(a->m_messages, "duplicate", valid - new_events);
    metric_add(a->m_messages, "dead_letter", dead);
}

/* Retries the same batch with backoff while PostgreSQL is unreachable; never skips. A data error
 * isolates the rejected alerts once; an isolation cut short by a transient error is done again on
 * the next data error (else the batch would fail as data for ever and stall its partition). */
static int alerter_persist_batch(alerter *a, persist_counts *n) {
    char err[512] = "no connection";
    int backoff = BACKOFF_MIN_MS;
    bool isolated = false, last_try = false;
    persist_counts iso = {0}; /* what the isolation's own transactions created */
    for (int attempt = 1;; attempt++) {
        *n = (persist_counts){0};
        persist_rc rc = a->conn ? persist_range(a, 0, a->nitems, n, err, sizeof err) : P_TRANSIENT;
        if (rc == P_OK) {
            dbhealth_trip_end(a->cfg.db, fs_mono_us(), true);
            n->events += iso.events;
            n->deliveries += iso.deliveries;
            count_messages(a, n->events);
            return 0;
        }
        dbhealth_set_up(a->cfg.db, a->conn && PQstatus(a->conn) == CONNECTION_OK);
        if (rc == P_DATA && !isolated) {
            if (isolate_rejected(a, &iso, err, sizeof err) == P_OK) {
                isolated = true;
                continue;
            }
        }
        metric_add(a->m_db_errors, "consume", 1);
        log_fields(LOG_WARN, "db_retry", json_pack("{s:i, s:i, s:s}", "attempt", attempt, "backoff_ms", backoff, "error", err),
                   "recording the batch failed; retrying");
        if (last_try) return -1;
        if (atomic_load(a->stop) || alerter_sleep(a, backoff) != 0) last_try = true;
        backoff = backoff_next(backoff);
        alerter_reconnect(a, err, sizeof err);
    }
}

/* ---- 3. commit --------------------------------------------------------------------------------- */

static void alerter_commit_batch(alerter *a) {
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < a->nitems; i++) kafka_offsets_add(offs, a->items[i].msg);
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(a->consumer, offs);
    if (err)
        log_fields(LOG_WARN, "offsets_store_failed", json_pack("{s:s}", "error", rd_kafka_err2str(err)),
                   "could not store offsets (partition revoked?)");
    err = rd_kafka_commit(a->consumer, NULL, 0 /* synchronous */);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_fields(LOG_WARN, "commit_failed", json_pack("{s:s}", "error", rd_kafka_err2str(err)),
                   "offset commit failed: the batch will be consumed again and absorbed");
    else
        log_fields(LOG_DEBUG, "batch_committed", json_pack("{s:I}", "messages", (json_int_t)a->nitems),
                   "batch recorded and committed");
    rd_kafka_topic_partition_list_destroy(offs);
}

static void alerter_clear_batch(alerter *a) {
    for (size_t i = 0; i < a->nitems; i++) {
        json_decref(a->items[i].rec);
        rd_kafka_message_destroy(a->items[i].msg);
        a->items[i] = (al_item){0};
    }
    a->nitems = 0;
}

/* ---- between batches: the outbox ------------------------------------------------------------- */

/* The outbox producer is idempotent: once fenced or refused (a fatal error) it never produces
 * again, every outbox row would stay pending while /ready said 200. Stop instead (exit 1, as the
 * scorer does): a restart gets a new producer, and the rows are still in the outbox. */
static bool alerter_producer_fatal(alerter *a) {
    char fatal[512];
    if (a->fatal || !rd_kafka_fatal_error(a->producer, fatal, sizeof fatal)) return a->fatal;
    a->fatal = true;
    log_fields(LOG_ERROR, "producer_fatal", json_pack("{s:s}", "error", fatal),
               "fatal producer error: stopping (the outbox keeps what is not produced)");
    return true;
}

/* Served from the outbox's rd_kafka_poll/flush on this thread. */
static void alerter_producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__FATAL && alerter_producer_fatal(opaque)) return;
    log_fields(LOG_WARN, "producer_error",
               json_pack("{s:s, s:s}", "error", rd_kafka_err2name(err), "reason", reason),
               "producer error: %s", reason);
}

static void alerter_pump(alerter *a) {
    char err[512];
    if (alerter_producer_fatal(a)) return;
    a->next_pump_us = fs_mono_us() + (int64_t)a->cfg.outbox_interval_ms * 1000;
    if (!a->conn && alerter_reconnect(a, err, sizeof err) != 0) {
        /* counted (the database-errors alert sees an outage), and tried again with a backoff
         * instead of every outbox-interval-ms: one log line per attempt */
        metric_add(a->m_db_errors, "outbox", 1);
        a->pump_backoff_ms = a->pump_backoff_ms ? backoff_next(a->pump_backoff_ms) : BACKOFF_MIN_MS;
        a->next_pump_us = fs_mono_us() + (int64_t)a->pump_backoff_ms * 1000;
        return;
    }
    a->pump_backoff_ms = 0;
    for (int round = 0; round < 10 && !atomic_load(a->stop); round++) {
        int n = outbox_pump(a->ob, a->conn, a->cfg.db_timeout_ms, OUTBOX_BATCH, OUTBOX_WAIT_MS, err,
                            sizeof err);
        if (alerter_producer_fatal(a)) return;
        if (n < 0) {
            metric_add(a->m_db_errors, "outbox", 1);
            log_fields(LOG_WARN, "outbox_failed", json_pack("{s:s}", "error", err),
                       "outbox pump failed; retried later");
            if (PQstatus(a->conn) != CONNECTION_OK) alerter_reconnect(a, err, sizeof err);
            return;
        }
        dbhealth_answered(a->cfg.db, fs_mono_us());
        if (n < OUTBOX_BATCH) return;
    }
}

void alerter_drain_outbox(alerter *a) {
    static const atomic_bool no_stop = false;
    if (!a) return;
    a->stop = &no_stop; /* the pump checks it between rounds */
    alerter_pump(a);
}

static int alerter_reconnect(alerter *a, char *err, size_t esz) {
    if (a->conn && PQstatus(a->conn) == CONNECTION_OK) return 0;
    if (a->conn) PQfinish(a->conn);
    a->conn = db_connect(a->cfg.database_url, "fraudshield-alerter consume", err, esz);
    dbhealth_set_up(a->cfg.db, a->conn != NULL);
    if (!a->conn)
        log_fields(LOG_WARN, "db_reconnect_failed", json_pack("{s:s}", "error", err),
                   "cannot reconnect to PostgreSQL yet");
    return a->conn ? 0 : -1;
}

/* ---- consumer events -------------------------------------------------------------------------- */

static json_t *partitions_json(const rd_kafka_topic_partition_list_t *parts) {
    json_t *arr = json_array();
    for (int i = 0; i < parts->cnt; i++) json_array_append_new(arr, json_integer(parts->elems[i].partition));
    return arr;
}

static void log_rebalance_error(rd_kafka_error_t *e, const char *what) {
    if (!e) return;
    log_fields(LOG_ERROR, "rebalance_error",
               json_pack("{s:s, s:s}", "call", what, "error", rd_kafka_error_string(e)), "%s failed", what);
    rd_kafka_error_destroy(e);
}

/* ---- alerts lost to retention ---------------------------------------------------------------- */

/* Alerts lost before they were recorded (kafka_gaps_check found l): logged as an error and
 * counted, never skipped silently (as the scorer, scorer_report_loss). */
static void alerter_report_loss(alerter *a, const rd_kafka_message_t *m, const kafka_loss *l) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    metric_add(a->m_offsets_lost, NULL, 1);
    metric_add(a->m_messages_lost, NULL, (double)l->lost);
    log_fields(LOG_ERROR, "offset_out_of_range",
               json_pack("{s:s, s:i, s:I, s:I, s:I, s:I}", "topic", topic, "partition",
                         (int)m->partition, "offset", (json_int_t)l->from, "earliest",
                         (json_int_t)l->earliest, "latest", (json_int_t)l->latest, "lost",
                         (json_int_t)l->lost),
               l->earliest >= 0 ? "offset %" PRId64 " of %s [%" PRId32 "] (the next to record) is no "
               "longer on the broker: %" PRId64 " alert(s) were lost before they were recorded; "
               "resuming at the earliest available offset"
                                : "offset %" PRId64 " of %s [%" PRId32 "] (the next to record) was "
               "skipped and the broker could not say where its log starts: up to %" PRId64 " "
               "alert(s) may have been lost", l->from, topic, m->partition,
               l->earliest >= 0 ? l->lost : m->offset - l->from);
}

/* fraud_alerts resets to the earliest offset when its position is gone: an alert lost that way
 * shows as a gap (kafka.h kafka_gaps). */
static void alerter_check_offset(alerter *a, const rd_kafka_message_t *m) {
    kafka_loss l;
    if (kafka_gaps_check(a->gaps, a->consumer, m, &l))
        alerter_report_loss(a, m, &l);
}

/* Newly assigned partitions: their committed offsets become the offsets expected next. */
static void alerter_read_committed(alerter *a, rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_resp_err_t e = kafka_gaps_assigned(a->gaps, rk, parts);
    if (e)
        log_fields(LOG_WARN, "committed_unknown", json_pack("{s:s}", "error", rd_kafka_err2str(e)),
                   "committed offsets of %s not read: a loss to retention goes unnoticed on this "
                   "assignment", a->cfg.topic);
}

/* As the scorer: the batch in hand is recorded and committed before partitions are released. */
static void alerter_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *parts, void *opaque) {
    alerter *a = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    json_t *f = json_pack("{s:o}", "partitions", partitions_json(parts));
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_fields(LOG_INFO, "partitions_assigned", f, "assigned %d partition(s)", parts->cnt);
        alerter_read_committed(a, rk, parts);
        if (coop) log_rebalance_error(rd_kafka_incremental_assign(rk, parts), "incremental_assign");
        else rd_kafka_assign(rk, parts);
        atomic_store(&a->assigned, true);
        return;
    }
    log_fields(err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? LOG_INFO : LOG_ERROR, "partitions_revoked",
               f, "revoking %d partition(s): %s", parts->cnt, rd_kafka_err2str(err));
    if (a->nitems > 0 && !a->in_batch) alerter_finish_batch(a);
    kafka_gaps_revoked(a->gaps, parts); /* no longer ours: no offset expected, no lag to report */
    for (int i = 0; i < parts->cnt; i++) {
        char labels[300];
        snprintf(labels, sizeof labels, "%s,%d", parts->elems[i].topic, (int)parts->elems[i].partition);
        metric_set(a->m_lag, labels, 0);
    }
    /* Out of the group until the next assignment: all partitions revoked at once (eager
     * protocol), lost (session timeout, fenced), or an error. Not ready meanwhile. A cooperative
     * revocation of some partitions keeps the member in the group. */
    if (!coop || err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS || rd_kafka_assignment_lost(rk))
        atomic_store(&a->assigned, false);
    if (coop && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        log_rebalance_error(rd_kafka_incremental_unassign(rk, parts), "incremental_unassign");
    else rd_kafka_assign(rk, NULL);
}

/* librdkafka statistics (statistics.interval.ms): consumer_lag per assigned partition. The
 * statistics keep reporting a partition after it was revoked, with its last lag: as the scorer,
 * partitions not assigned to this alerter (not "desired") are set to 0, so that only the owner
 * exports a partition's lag. Served by the loop's poll only: while the loop is stuck (a batch that
 * cannot be recorded) the lag keeps its last value; alerter_poll_age_seconds() keeps growing. */
static int alerter_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    alerter *a = opaque;
    (void)rk;
    json_t *root = json_loadb(json, len, 0, NULL), *t, *p;
    const char *tname, *pname;
    json_object_foreach(json_object_get(root, "topics"), tname, t) {
        json_object_foreach(json_object_get(t, "partitions"), pname, p) {
            if (atoi(pname) < 0) continue; /* librdkafka's internal "-1" partition */
            char labels[300];
            snprintf(labels, sizeof labels, "%s,%s", tname, pname);
            metric_set(a->m_lag, labels, (double)kafka_stats_partition_lag(p));
        }
    }
    json_decref(root);
    return 0; /* librdkafka frees json */
}

static void alerter_consumer_event(alerter *a, rd_kafka_message_t *m) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return;
    json_t *f = msg_ctx(m);
    json_object_set_new(f, "error", json_string(rd_kafka_message_errstr(m)));
    if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
        log_fields(LOG_ERROR, "consumer_fatal", f, "fatal consumer error: stopping");
        a->fatal = true;
        return;
    }
    if (kafka_err_unreadable(m)) { /* the next commit may pass it: alerts never delivered */
        log_fields(LOG_ERROR, "consumer_message_error", f, "a message the consumer could not "
                   "read (%s): it may be skipped", rd_kafka_err2str(m->err));
        return;
    }
    log_fields(LOG_WARN, "consumer_error", f, "consumer error: %s", rd_kafka_err2str(m->err));
}

double alerter_poll_age_seconds(alerter *a) { return kafka_poll_age_seconds(&a->polled); }

/* A side whose last successful round trip is older than its longest healthy gap (the statement
 * deadline plus its own interval) is stuck on a PostgreSQL that does not answer: not ready, even
 * while its connection still looks up. */
bool alerter_ready(void *arg, char *why, size_t why_size) {
    alerter *a = arg;
    const alerter_config *c = &a->cfg;
    const dbhealth *dd = c->dispatch_db;
    int64_t stale_ms = c->db_timeout_ms + 1000, now = fs_mono_us();
    const char *no = !atomic_load(&a->consuming)  ? "not consuming (starting or stopping)"
                     : !atomic_load(&a->assigned) ? "consumer has no assignment yet"
                     : !dbhealth_up(c->db)        ? "PostgreSQL unreachable (consumer)"
                     : dd && !dbhealth_up(dd)     ? "PostgreSQL unreachable (dispatcher)"
                     : dbhealth_age_ms(c->db, now) > stale_ms + c->outbox_interval_ms + c->batch_max_ms
                         ? "PostgreSQL not answering (consumer: no successful round trip lately)"
                     : dd && dbhealth_age_ms(dd, now) > stale_ms + c->dispatch_poll_interval_ms + 2000
                         ? "PostgreSQL not answering (dispatcher: no successful round trip lately)"
                         : NULL;
    if (no) snprintf(why, why_size, "%s", no);
    return no == NULL;
}

/* ---- set-up and teardown ----------------------------------------------------------------------- */

/* Outbox messages: bounded message timeout, so that the pump always gets its reports. */
static rd_kafka_t *alerter_producer_new(alerter *a, char *errstr, size_t errstr_size) {
    const alerter_config *c = &a->cfg;
    rd_kafka_conf_t *conf = kafka_conf_new(c->brokers, c->props, errstr, errstr_size);
    if (!conf) return NULL;
    if (kafka_conf_default(conf, c->props, "client.id", c->alerter_id, errstr, errstr_size) ||
        kafka_conf_default(conf, c->props, "message.timeout.ms", "10000", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, outbox_dr_cb);
    rd_kafka_conf_set_error_cb(conf, alerter_producer_error_cb);
    rd_kafka_conf_set_opaque(conf, a);
    return kafka_producer_new(conf, c->props, errstr, errstr_size); /* owns conf, also on failure */
}

/* Offsets are stored and committed by alerter_commit_batch() only. A new group starts at the
 * earliest offset: no alert produced before the alerter's first start is left undelivered. */
static rd_kafka_t *alerter_consumer_new(alerter *a, char *errstr, size_t errstr_size) {
    const alerter_config *c = &a->cfg;
    rd_kafka_conf_t *conf = kafka_conf_new(c->brokers, c->props, errstr, errstr_size);
    if (!conf) return NULL;
    if (kafka_conf_lock(conf, c->props, "group.id", c->group_id, errstr, errstr_size) ||
        kafka_conf_lock(conf, c->props, "enable.auto.commit", "false", errstr, errstr_size) ||
        kafka_conf_lock(conf, c->props, "enable.auto.offset.store", "false", errstr, errstr_size) ||
        /* latest would skip every alert already on the topic, unreported (no offset was lost) */
        kafka_conf_lock(conf, c->props, "auto.offset.reset", "earliest", errstr, errstr_size) ||
        kafka_conf_default(conf, c->props, "partition.assignment.strategy", "cooperative-sticky",
                           errstr, errstr_size) ||
        kafka_conf_default(conf, c->props, "statistics.interval.ms", "5000", errstr, errstr_size) ||
        kafka_conf_default(conf, c->props, "client.id", c->alerter_id, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, alerter_rebalance_cb);
    rd_kafka_conf_set_stats_cb(conf, alerter_stats_cb);
    rd_kafka_conf_set_opaque(conf, a);
    return kafka_consumer_new(conf, errstr, errstr_size);
}

static int alerter_subscribe(alerter *a, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, a->cfg.topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(a->consumer, t);
    rd_kafka_topic_partition_list_destroy(t);
    if (err) snprintf(errstr, errstr_size, "subscribe %s: %s", a->cfg.topic, rd_kafka_err2str(err));
    return err ? -1 : 0;
}

/* The counters exist from the start at 0 (every result): a series that appears only at its
 * first increment hides that increment from increase(), e.g. the first dead letter. */
static void alerter_metrics(alerter *a, metrics *m) {
    static const char *const results[] = {"new", "duplicate", "dead_letter"};
    if (!m) return;
    a->m_messages = metrics_counter(m, "fs_alerter_messages_total",
                                    "fraud_alerts messages by result (new alert, duplicate, dead_letter)",
                                    "result");
    a->m_batches = metrics_counter(m, "fs_alerter_batches_total", "Batches recorded and committed", NULL);
    a->m_offsets_lost = metrics_counter(m, "fs_alerter_offsets_out_of_range_total",
                                        "Committed fraud_alerts offsets no longer on the broker "
                                        "(alerts lost to retention)", NULL);
    a->m_messages_lost = metrics_counter(m, "fs_alerter_messages_lost_total",
                                         "fraud_alerts messages lost before they were recorded (estimate)",
                                         NULL);
    a->m_lag = metrics_gauge(m, "fs_alerter_consumer_lag",
                             "Consumer lag per assigned partition, 0 for the others (librdkafka "
                             "statistics, served by the consumer loop's poll: frozen while it is stuck, "
                             "see fs_alerter_consumer_last_poll_age_seconds)",
                             "topic,partition");
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) metric_add(a->m_messages, results[i], 0);
    metric_add(a->m_batches, NULL, 0);
    metric_add(a->m_offsets_lost, NULL, 0);
    metric_add(a->m_messages_lost, NULL, 0);
}

alerter *alerter_new(const alerter_config *cfg, PGconn *conn, char *errstr, size_t errstr_size) {
    alerter *a = calloc(1, sizeof *a);
    if (!a) {
        PQfinish(conn);
        return snprintf(errstr, errstr_size, "out of memory"), NULL;
    }
    a->cfg = *cfg;
    a->conn = conn; /* ours from here on */
    a->m_db_errors = cfg->db_errors;
    alerter_metrics(a, cfg->metrics);
    const char *topics[] = {cfg->topic, cfg->dlq_topic, cfg->outcomes_topic, NULL};
    if (!(a->items = calloc((size_t)cfg->batch_max, sizeof *a->items)) || !(a->gaps = kafka_gaps_new())) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    if (!(a->producer = alerter_producer_new(a, errstr, errstr_size))) goto failed;
    if (!(a->ob = outbox_new(a->producer, cfg->dlq_topic, cfg->outcomes_topic, cfg->metrics))) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    if (!(a->consumer = alerter_consumer_new(a, errstr, errstr_size))) goto failed;
    if (kafka_wait_topics(a->producer, topics, cfg->startup_timeout_ms, errstr, errstr_size) != 0)
        goto failed;
    if (alerter_subscribe(a, errstr, errstr_size) != 0) goto failed;
    return a;
failed:
    alerter_destroy(a);
    return NULL;
}

void alerter_destroy(alerter *a) {
    if (!a) return;
    if (a->items) alerter_clear_batch(a); /* messages go before their consumer */
    if (a->consumer) rd_kafka_destroy(a->consumer);
    if (a->producer) {
        rd_kafka_flush(a->producer, a->cfg.shutdown_timeout_ms);
        rd_kafka_destroy(a->producer);
    }
    outbox_destroy(a->ob);
    if (a->conn) PQfinish(a->conn);
    free(a->items);
    kafka_gaps_destroy(a->gaps);
    free(a);
}
