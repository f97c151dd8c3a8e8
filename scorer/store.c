/* store: the scorer's PostgreSQL batch transaction (see store.h).
 *
 * Times cross the boundary as integer milliseconds since the epoch and are converted in SQL with
 * exact interval arithmetic (timestamptz 'epoch' + ms * interval '1 millisecond'), never through a
 * float. Bulk rows travel by COPY (pgcopy.h) into per-connection staging tables, small sets as one
 * JSON array parameter expanded by jsonb_to_recordset: one round trip per statement whatever the
 * batch size, and no per-row parameter lists to build. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "dbhealth.h"
#include "fsutil.h"
#include "jsonfast.h"
#include "pgcopy.h"

#define EPOCH_MS(x) "(timestamptz 'epoch' + (" x ") * interval '1 millisecond')"
#define TO_MS(x) "(extract(epoch FROM " x ") * 1000)::bigint"

struct store {
    char *url;
    char *application_name;
    int timeout_ms;           /* every round trip's deadline (db_query) */
    PGconn *conn;
    pgcopy_buf cb;            /* reused COPY buffer */
    uint64_t calls, total_us; /* round trips, for /metrics */
    uint64_t timeouts;        /* round trips abandoned at the deadline */
    bool timed_out;           /* the last round trip was */
    int64_t last_trip_us;     /* when the last round trip (or connection attempt) ended */
    dbhealth *health;         /* any answer on a connection still up counts; read by
                                 store_db_stuck() and store_db_age_ms() on the admin thread */
};


/* Per-connection staging tables for COPY; emptied at every commit. */
static const char SQL_TEMP_TABLES[] =
    "CREATE TEMP TABLE IF NOT EXISTS tmp_payments (payment_id uuid, user_id text,"
    " merchant_id text, amount_minor bigint, currency text, currency_exp smallint,"
    " payment_method text, transaction_type text, card_type text, card_last_four text,"
    " card_fingerprint_digest text, ip_digest text, email_digest text, device_id_digest text,"
    " country text, billing_country text, shipping_country text, ip_country text, device_info jsonb,"
    " metadata jsonb, event_time_ms bigint, ingest_time_ms bigint, source_partition integer,"
    " source_offset bigint, source text) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tmp_decisions (payment_id uuid, decision text, score smallint,"
    " reasons jsonb, features json, rules_version text, model_version text,"
    " scoring_latency_us integer, decided_at_ms bigint) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tmp_velocity (k text, e text, t bigint, p uuid, u text,"
    " a bigint) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tmp_buckets (k text, e text, w integer, s bigint, n bigint,"
    " a bigint, c bigint[]) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tmp_vault (k text, e text, f bigint, l bigint, n bigint)"
    " ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tmp_outcomes (payment_id uuid, outcome text,"
    " known_at timestamptz) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tmp_feature_keys (s \"char\", k text, e text, w integer,"
    " lo bigint, hi bigint) ON COMMIT DELETE ROWS";

void store_latency(const store *st, uint64_t *calls, uint64_t *total_us) {
    *calls = st->calls;
    *total_us = st->total_us;
}

uint64_t store_timeouts(const store *st) { return st->timeouts; }

int64_t store_db_age_ms(const store *st) { return dbhealth_age_ms(st->health, fs_mono_us()); }

/* A round trip in flight for longer than the deadline (a connection attempt, whose own timeout is
 * libpq's connect_timeout), or failures with no answer for longer than it (the usual case: the
 * deadline fired). Not merely an old answer: an idle worker's check has an old one too. */
bool store_db_stuck(const store *st) { return dbhealth_stuck(st->health, fs_mono_us(), st->timeout_ms); }

int64_t store_idle_ms(const store *st) { return (fs_mono_us() - st->last_trip_us) / 1000; }

/* A round trip starts: in flight from now (for store_db_stuck). Returns the start time. */
static int64_t trip_start(store *st) {
    int64_t t0 = fs_mono_us();
    st->timed_out = false;
    dbhealth_trip_start(st->health, t0);
    return t0;
}

/* A round trip ended: latency counters and health. The server answered when the connection is
 * still up (an error result is an answer too); a connection dropped once the deadline had passed
 * is a timeout (db_query closes it only then). */
static void trip_end(store *st, int64_t t0, int calls) {
    int64_t now = fs_mono_us();
    bool answered = st->conn && PQstatus(st->conn) == CONNECTION_OK;
    st->calls += (uint64_t)calls;
    st->total_us += (uint64_t)(now - t0);
    st->last_trip_us = now;
    dbhealth_trip_end(st->health, now, answered);
    st->timed_out = !answered && now - t0 >= (int64_t)st->timeout_ms * 1000;
    if (st->timed_out) st->timeouts++;
}

void store_decision_clear(store_decision *d) {
    json_decref(d->reasons);
    json_decref(d->features);
    free(d->features_text);
    memset(d, 0, sizeof *d);
}

int store_alert_id(const char *payment_id, char out[37]) {
    return fs_uuid_v5(payment_id, "alert", 5, out);
}

store *store_new(const char *url, const char *application_name, int timeout_ms) {
    store *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->timeout_ms = timeout_ms;
    st->last_trip_us = fs_mono_us();
    st->health = dbhealth_new(st->last_trip_us, true);
    st->url = strdup(url);
    st->application_name = strdup(application_name);
    if (!st->health || !st->url || !st->application_name) {
        store_destroy(st);
        return NULL;
    }
    return st;
}

void store_destroy(store *st) {
    if (!st) return;
    if (st->conn) PQfinish(st->conn);
    pgcopy_free(&st->cb);
    free(st->url);
    free(st->application_name);
    dbhealth_destroy(st->health);
    free(st);
}

bool store_connected(const store *st) { return st->conn && PQstatus(st->conn) == CONNECTION_OK; }

int store_connect(store *st, char *errstr, size_t errstr_size) {
    if (store_connected(st)) return 0;
    if (st->conn) PQfinish(st->conn); /* broken: libpq will not recover it by itself */
    int64_t t0 = trip_start(st);
    st->conn = db_connect(st->url, st->application_name, errstr, errstr_size);
    if (st->conn &&
        db_exec_within(st->conn, st->timeout_ms, SQL_TEMP_TABLES, errstr, errstr_size) != 0) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
    trip_end(st, t0, 0);
    return st->conn ? 0 : -1;
}

int store_migrate(store *st, int timeout_ms, int lock_timeout_ms, char *errstr,
                  size_t errstr_size) {
    return db_migrate(st->conn, timeout_ms, lock_timeout_ms, errstr, errstr_size);
}

/* Maps a result onto the three outcomes; errstr gets "what: server message". */
static store_rc result_rc(store *st, const PGresult *res, ExecStatusType want, const char *what,
                          char *errstr, size_t errstr_size) {
    if (res && PQresultStatus(res) == want) return STORE_OK;
    char e[512];
    if (res && st->timed_out) { /* (no result: not connected, no round trip made) */
        snprintf(errstr, errstr_size,
                 "%s: PostgreSQL did not answer within %d ms (db-timeout-ms): connection dropped",
                 what, st->timeout_ms);
        return STORE_TRANSIENT;
    }
    db_error(st->conn, res, e, sizeof e);
    snprintf(errstr, errstr_size, "%s: %s", what, e);
    /* Only errors about the rows themselves may end in the DLQ; a lost connection, a missing table
     * or a revoked grant pauses the worker instead (retry with backoff, nothing skipped). */
    return db_is_data_error(res) ? STORE_FAILED : STORE_TRANSIENT;
}

/* Runs sql with n text parameters (n 0: PQexec, several statements allowed) within the deadline.
 * NULL result only when not connected. */
static PGresult *execn(store *st, const char *sql, int n, const char *const *params) {
    if (!store_connected(st)) return NULL;
    int64_t t0 = trip_start(st);
    PGresult *res = db_query(st->conn, st->timeout_ms, sql, n, params, NULL, NULL);
    trip_end(st, t0, 1);
    return res;
}

/* Runs sql with up to two text parameters. NULL result only when not connected. */
static PGresult *exec2(store *st, const char *sql, const char *p1, const char *p2) {
    const char *params[2] = {p1, p2};
    return execn(st, sql, p2 ? 2 : p1 ? 1 : 0, params);
}

/* Runs a command whose only parameter is the JSON array rows (and optionally a second text
 * parameter). Takes ownership of rows. */
static store_rc exec_json(store *st, const char *sql, json_t *rows, const char *p2,
                          ExecStatusType want, const char *what, PGresult **out, char *errstr,
                          size_t errstr_size) {
    char *text = rows ? json_dumps(rows, JSON_COMPACT) : NULL;
    json_decref(rows);
    if (!text) {
        snprintf(errstr, errstr_size, "%s: cannot serialize the rows (out of memory?)", what);
        return STORE_FAILED;
    }
    PGresult *res = exec2(st, sql, text, p2);
    free(text);
    store_rc rc = result_rc(st, res, want, what, errstr, errstr_size);
    if (rc == STORE_OK && out) *out = res;
    else PQclear(res);
    return rc;
}

/* COPYs st->cb into a staging table, then runs sql (an INSERT ... SELECT, or a read) with its n
 * text parameters (want: its status; out: its result when wanted). sql NULL: the COPY alone. */
static store_rc exec_copy(store *st, const char *copy_sql, const char *sql, int n,
                          const char *const *params, ExecStatusType want, const char *what,
                          PGresult **out, char *errstr, size_t errstr_size) {
    PGresult *res = NULL;
    if (!store_connected(st)) return result_rc(st, NULL, want, what, errstr, errstr_size);
    int64_t t0 = trip_start(st);
    int rc = pgcopy_send(st->conn, st->timeout_ms, copy_sql, &st->cb, &res, errstr, errstr_size);
    trip_end(st, t0, 1);
    if (rc != 0) {
        store_rc r = res ? result_rc(st, res, PGRES_COMMAND_OK, what, errstr, errstr_size)
                         : STORE_TRANSIENT;
        PQclear(res);
        return r;
    }
    if (!sql) return STORE_OK;
    res = execn(st, sql, n, params);
    store_rc r = result_rc(st, res, want, what, errstr, errstr_size);
    if (r == STORE_OK && out) *out = res;
    else PQclear(res);
    return r;
}

static store_rc exec_simple(store *st, const char *sql, char *errstr, size_t errstr_size) {
    PGresult *res = exec2(st, sql, NULL, NULL);
    store_rc rc = result_rc(st, res, PGRES_COMMAND_OK, sql, errstr, errstr_size);
    PQclear(res);
    return rc;
}

store_rc store_ping(store *st, char *errstr, size_t errstr_size) {
    PGresult *res = exec2(st, "SELECT 1", NULL, NULL);
    store_rc rc = result_rc(st, res, PGRES_TUPLES_OK, "ping", errstr, errstr_size);
    PQclear(res);
    return rc;
}

store_rc store_begin(store *st, char *errstr, size_t errstr_size) {
    return exec_simple(st, "BEGIN", errstr, errstr_size);
}

store_rc store_commit(store *st, char *errstr, size_t errstr_size) {
    return exec_simple(st, "COMMIT", errstr, errstr_size);
}

store_rc store_commit_named(store *st, const char *name, char *errstr, size_t errstr_size) {
    char sql[96];
    snprintf(sql, sizeof sql, "COMMIT /* %s */", name);
    return exec_simple(st, sql, errstr, errstr_size);
}

void store_rollback(store *st) {
    char e[256];
    if (!store_connected(st)) return;
    /* only an open transaction: after a failed COMMIT there is none, and a ROLLBACK would draw the
     * WARNING "there is no transaction in progress" (logged as pg_warning) */
    PGTransactionStatusType ts = PQtransactionStatus(st->conn);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) (void)exec_simple(st, "ROLLBACK", e, sizeof e);
}

/* ---- payments ------------------------------------------------------------------------------- */

static int row_id_cmp(const void *a, const void *b) {
    const store_row *const *x = a, *const *y = b;
    return strcmp((*x)->p->payment_id, (*y)->p->payment_id);
}

/* The row of payment_id in rows sorted by id, or NULL. */
static store_row *row_find(store_row **sorted, size_t n, const char *payment_id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(sorted[mid]->p->payment_id, payment_id);
        if (c == 0) return sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Rows sorted by payment_id (a copy of the pointer array; caller frees). */
static store_row **rows_sorted(store_row *const *rows, size_t n) {
    store_row **s = malloc((n ? n : 1) * sizeof *s);
    if (!s) return NULL;
    memcpy(s, rows, n * sizeof *s);
    fs_qsort(s, n, sizeof *s, row_id_cmp);
    return s;
}

/* "{id,id,...}" of the rows (only those that are not new: old_only) for a uuid[] parameter (caller
 * frees); NULL when out of memory. */
static char *rows_ids_literal(store_row *const *rows, size_t n, bool old_only) {
    const char **ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return NULL;
    for (size_t i = 0; i < n; i++)
        ids[i] = old_only && rows[i]->is_new ? NULL : rows[i]->p->payment_id;
    char *s = fs_uuid_array_literal(ids, n);
    free(ids);
    return s;
}

static const char SQL_COPY_PAYMENTS[] =
    "COPY tmp_payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,"
    " payment_method, transaction_type, card_type, card_last_four, card_fingerprint_digest,"
    " ip_digest, email_digest, device_id_digest, country, billing_country, shipping_country,"
    " ip_country, device_info, metadata, event_time_ms, ingest_time_ms, source_partition,"
    " source_offset, source) FROM STDIN";

/* "Not applied yet", where the rows are found by payment_id (the primary key): written so that
 * it does not match outcomes_pending_idx's predicate (applied_at IS NULL), which would let the
 * planner read that whole index too (a BitmapAnd with the primary key, or the index alone when
 * its statistics are from before the pending labels came): every pending label, orphans
 * included, for each probe. */
#define PENDING_ONLY(o) "(" o ".applied_at IS NULL) IS TRUE"

static const char SQL_MOVE_PAYMENTS[] =
    "INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,"
    " payment_method, transaction_type, card_type, card_last_four, card_fingerprint_digest,"
    " ip_digest, email_digest, device_id_digest, country, billing_country, shipping_country,"
    " ip_country, device_info, metadata, event_time, ingest_time, source_partition, source_offset,"
    " source) "
    "SELECT x.payment_id, x.user_id, x.merchant_id, x.amount_minor, x.currency, x.currency_exp,"
    " x.payment_method, x.transaction_type, x.card_type, x.card_last_four,"
    " x.card_fingerprint_digest, x.ip_digest, x.email_digest, x.device_id_digest, x.country,"
    " x.billing_country, x.shipping_country, x.ip_country, x.device_info, x.metadata, "
    EPOCH_MS("x.event_time_ms") ", " EPOCH_MS("x.ingest_time_ms") ", x.source_partition,"
    " x.source_offset, x.source FROM tmp_payments x ORDER BY x.payment_id "
    "ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id, "
    /* labels_pending (store.h): one look at outcomes_pending_idx per statement (ORDER BY
     * received_at LIMIT 1: the index, never a scan of outcomes for its first pending row), and
     * only when a label is pending at all, a probe of the outcomes primary key per new payment
     * (OFFSET 0: a probe, never a hash of every pending label; PENDING_ONLY, above) */
    "(SELECT received_at FROM outcomes WHERE applied_at IS NULL ORDER BY received_at LIMIT 1)"
    " IS NOT NULL AND EXISTS (SELECT 1 FROM outcomes o WHERE o.payment_id = payments.payment_id"
    " AND " PENDING_ONLY("o") " OFFSET 0)";

/* A JSON value as COPY text (NULL: SQL NULL). */
static void copy_json(pgcopy_buf *b, const json_t *v) {
    char *t = v ? json_dumps(v, JSON_COMPACT) : NULL;
    if (v && !t) b->oom = true;
    pgcopy_str(b, t);
    free(t);
}

static void copy_payment(pgcopy_buf *b, const store_row *r) {
    const pay_payment *p = r->p;
    pgcopy_text(b, p->payment_id);
    pgcopy_text(b, p->user_id);
    pgcopy_text(b, p->merchant_id);
    pgcopy_int(b, p->amount_minor);
    pgcopy_text(b, p->currency);
    pgcopy_int(b, p->currency_exp);
    pgcopy_text(b, p->payment_method);
    const char *opt[] = {p->transaction_type, p->card_type, p->card_last_four,
                         p->card_fingerprint_digest, p->ip_digest, p->email_digest,
                         p->device_id_digest, p->country, p->billing_country, p->shipping_country,
                         p->ip_country};
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) pgcopy_str(b, opt[i]);
    copy_json(b, p->device_info);
    copy_json(b, p->metadata);
    pgcopy_int(b, p->event_time_ms);
    pgcopy_int(b, p->ingest_time_ms);
    pgcopy_int(b, r->partition);
    pgcopy_int(b, r->offset);
    pgcopy_str(b, p->source);
    pgcopy_end_row(b);
}

store_rc store_insert_payments(store *st, store_row *const *rows, size_t n, char *errstr,
                               size_t errstr_size) {
    PGresult *res = NULL;
    store_rc rc;
    for (size_t i = 0; i < n; i++) rows[i]->is_new = rows[i]->labels_pending = false;
    pgcopy_reset(&st->cb);
    for (size_t i = 0; i < n; i++) copy_payment(&st->cb, rows[i]);
    rc = exec_copy(st, SQL_COPY_PAYMENTS, SQL_MOVE_PAYMENTS, 0, NULL, PGRES_TUPLES_OK,
                   "insert payments", &res, errstr, errstr_size);
    if (rc != STORE_OK) return rc;
    store_row **sorted = rows_sorted(rows, n);
    if (!sorted) {
        PQclear(res);
        snprintf(errstr, errstr_size, "insert payments: out of memory");
        return STORE_FAILED;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        store_row *r = row_find(sorted, n, PQgetvalue(res, i, 0));
        if (!r) continue;
        r->is_new = true;
        r->labels_pending = PQgetvalue(res, i, 1)[0] == 't';
    }
    free(sorted);
    PQclear(res);
    return STORE_OK;
}

/* The ids of $1 that payments holds, locked FOR KEY SHARE until the transaction ends (retention's
 * FOR UPDATE SKIP LOCKED then leaves them alone; one retention is deleting meanwhile is waited for
 * and not returned). One primary-key probe per id. The comment names the statement in
 * pg_stat_activity (and for test_scorer_retention_race's proxy). */
static const char SQL_LOCK_PAYMENTS[] =
    "/* expired look-up */ SELECT payment_id::text FROM payments"
    " WHERE payment_id = ANY ($1::uuid[]) FOR KEY SHARE";

store_rc store_lock_payments(store *st, store_row *const *rows, size_t n, char *errstr,
                             size_t errstr_size) {
    store_row **sorted = rows_sorted(rows, n);
    char *lit = sorted ? rows_ids_literal(rows, n, false) : NULL;
    for (size_t i = 0; i < n; i++)
        rows[i]->gone = true; /* until found: an id that matched nothing is not stored again */
    if (!lit) {
        free(sorted);
        return snprintf(errstr, errstr_size, "lock payments: out of memory"), STORE_FAILED;
    }
    PGresult *res = exec2(st, SQL_LOCK_PAYMENTS, lit, NULL);
    free(lit);
    store_rc rc = result_rc(st, res, PGRES_TUPLES_OK, "lock payments", errstr, errstr_size);
    for (int i = 0; rc == STORE_OK && i < PQntuples(res); i++) {
        store_row *r = row_find(sorted, n, PQgetvalue(res, i, 0));
        if (r) r->gone = false;
    }
    free(sorted);
    PQclear(res);
    return rc;
}

/* ---- decisions ------------------------------------------------------------------------------ */

/* With the payment's own columns: the outputs of a redelivery carry what was stored the first time
 * (reasons rebuilt in the contract's key order: jsonb keeps its own). */
static const char SQL_LOAD_DECISIONS[] =
    "SELECT d.payment_id, d.decision, d.score, "
    "(SELECT coalesce(json_agg(CASE WHEN r ? 'model_covered' THEN json_build_object('code', "
    "r->'code', 'severity', r->'severity', 'weight', r->'weight', 'message', r->'message', "
    "'model_covered', r->'model_covered') ELSE json_build_object('code', r->'code', 'severity', "
    "r->'severity', 'weight', r->'weight', 'message', r->'message') END ORDER BY n), '[]') "
    "FROM jsonb_array_elements(d.reasons) WITH ORDINALITY e(r, n)), "
    "d.rules_version, coalesce(d.model_version, ''), " TO_MS("d.decided_at") ", d.scoring_latency_us, "
    "p.user_id, p.merchant_id, p.amount_minor, p.currency, " TO_MS("p.event_time") ", "
    TO_MS("p.ingest_time") ", coalesce(p.country, ''), coalesce(p.source, '') "
    "FROM decisions d JOIN payments p USING (payment_id) WHERE d.payment_id = ANY ($1::uuid[])";

bool store_row_foreign(const store_row *r, const pay_payment *p) {
    return r->stored_source[0] && p->source[0] && strcmp(r->stored_source, p->source) != 0;
}

const char *store_row_conflict(const store_row *r, const pay_payment *p) {
    return pay_conflict(p, r->stored_user_id, r->stored_merchant_id, r->stored_amount_minor,
                        r->stored_currency);
}

/* r's message against its stored payment (row i of a SQL_LOAD_DECISIONS result). */
static void stored_from_result(store_row *r, const PGresult *res, int i) {
    snprintf(r->stored_user_id, sizeof r->stored_user_id, "%s", PQgetvalue(res, i, 8));
    snprintf(r->stored_merchant_id, sizeof r->stored_merchant_id, "%s", PQgetvalue(res, i, 9));
    r->stored_amount_minor = strtoll(PQgetvalue(res, i, 10), NULL, 10);
    snprintf(r->stored_currency, sizeof r->stored_currency, "%s", PQgetvalue(res, i, 11));
    snprintf(r->stored_source, sizeof r->stored_source, "%s", PQgetvalue(res, i, 15));
    const char *what = store_row_conflict(r, r->p);
    r->conflict[0] = '\0';
    if (what)
        snprintf(r->conflict, sizeof r->conflict, "payment %s was stored before with another %s: "
                 "a different payment under a payment_id already used%s", r->p->payment_id, what,
                 store_row_foreign(r, r->p) ? ", by another client (source)" : "");
    r->stored_event_time_ms = strtoll(PQgetvalue(res, i, 12), NULL, 10);
    r->stored_ingest_time_ms = strtoll(PQgetvalue(res, i, 13), NULL, 10);
    snprintf(r->stored_country, sizeof r->stored_country, "%s", PQgetvalue(res, i, 14));
}

static void decision_from_result(store_decision *d, const PGresult *res, int i) {
    store_decision_clear(d);
    snprintf(d->decision, sizeof d->decision, "%s", PQgetvalue(res, i, 1));
    d->score = atoi(PQgetvalue(res, i, 2));
    d->reasons = json_loads(PQgetvalue(res, i, 3), 0, NULL);
    if (!d->reasons) d->reasons = json_array();
    snprintf(d->rules_version, sizeof d->rules_version, "%s", PQgetvalue(res, i, 4));
    snprintf(d->model_version, sizeof d->model_version, "%s", PQgetvalue(res, i, 5));
    d->decided_at_ms = strtoll(PQgetvalue(res, i, 6), NULL, 10);
    d->scoring_latency_us = strtoll(PQgetvalue(res, i, 7), NULL, 10);
}

store_rc store_load_decisions(store *st, store_row *const *rows, size_t n, char *errstr,
                              size_t errstr_size) {
    size_t old = 0;
    for (size_t i = 0; i < n; i++) old += !rows[i]->is_new;
    if (old == 0) return STORE_OK;
    char *ids = rows_ids_literal(rows, n, true);
    if (!ids) {
        snprintf(errstr, errstr_size, "load decisions: out of memory");
        return STORE_FAILED;
    }
    PGresult *res = exec2(st, SQL_LOAD_DECISIONS, ids, NULL);
    free(ids);
    store_rc rc = result_rc(st, res, PGRES_TUPLES_OK, "load decisions", errstr, errstr_size);
    store_row **sorted = rc == STORE_OK ? rows_sorted(rows, n) : NULL;
    if (rc == STORE_OK && !sorted) {
        snprintf(errstr, errstr_size, "load decisions: out of memory");
        rc = STORE_FAILED;
    }
    for (int i = 0; sorted && i < PQntuples(res); i++) {
        store_row *r = row_find(sorted, n, PQgetvalue(res, i, 0));
        if (!r || r->is_new) continue;
        decision_from_result(&r->dec, res, i);
        stored_from_result(r, res, i);
        r->has_decision = true;
        /* its alert goes out again with the same id */
        if (strcmp(r->dec.decision, "allow") != 0) store_alert_id(r->p->payment_id, r->alert_id);
    }
    free(sorted);
    PQclear(res);
    return rc;
}

static const char SQL_COPY_DECISIONS[] =
    "COPY tmp_decisions (payment_id, decision, score, reasons, features, rules_version,"
    " model_version, scoring_latency_us, decided_at_ms) FROM STDIN";

static const char SQL_COPY_NEW_DECISIONS[] =
    "COPY decisions (payment_id, decision, score, reasons, features, rules_version, model_version,"
    " scorer_id, scoring_latency_us, decided_at) FROM STDIN";

/* A decision as a COPY row: of tmp_decisions (scorer_id NULL: the move adds it), or of decisions. */
static void copy_decision(pgcopy_buf *b, const store_row *r, const char *scorer_id) {
    const store_decision *d = &r->dec;
    pgcopy_text(b, r->p->payment_id);
    pgcopy_text(b, d->decision);
    pgcopy_int(b, d->score);
    copy_json(b, d->reasons ? d->reasons : json_null());
    if (d->features_text) pgcopy_text(b, d->features_text);
    else copy_json(b, d->features ? d->features : json_null());
    pgcopy_text(b, d->rules_version);
    pgcopy_str(b, d->model_version);
    if (scorer_id) pgcopy_text(b, scorer_id);
    pgcopy_int(b, d->scoring_latency_us > INT32_MAX ? INT32_MAX : d->scoring_latency_us);
    if (scorer_id) {
        char at[25];
        fs_time_format_rfc3339(d->decided_at_ms, at);
        pgcopy_text(b, at);
    } else {
        pgcopy_int(b, d->decided_at_ms);
    }
    pgcopy_end_row(b);
}

/* The others (see store_insert_decisions): staged, then moved with ON CONFLICT DO NOTHING. The
 * scorer id is a literal (escaped by libpq) rather than a parameter: the move is PQexec. */
static store_rc insert_decisions_staged(store *st, store_row *const *rows, size_t n,
                                        const char *scorer_id, char *errstr, size_t errstr_size) {
    char *lit = PQescapeLiteral(st->conn, scorer_id, strlen(scorer_id));
    char sql[1024];
    if (!lit) return snprintf(errstr, errstr_size, "escape: out of memory"), STORE_FAILED;
    snprintf(sql, sizeof sql,
             "INSERT INTO decisions (payment_id, decision, score, reasons, features, rules_version,"
             " model_version, scorer_id, scoring_latency_us, decided_at) "
             "SELECT x.payment_id, x.decision, x.score, x.reasons, x.features, x.rules_version,"
             " x.model_version, %s, x.scoring_latency_us, " EPOCH_MS("x.decided_at_ms") " "
             "FROM tmp_decisions x ORDER BY x.payment_id ON CONFLICT (payment_id) DO NOTHING",
             lit);
    PQfreemem(lit);
    pgcopy_reset(&st->cb);
    for (size_t i = 0; i < n; i++)
        if (!rows[i]->is_new) copy_decision(&st->cb, rows[i], NULL);
    return exec_copy(st, SQL_COPY_DECISIONS, sql, 0, NULL, PGRES_COMMAND_OK, "insert decisions",
                     NULL, errstr, errstr_size);
}

/* The decisions of the payments this transaction inserted are COPYed into decisions directly: no
 * other can exist (its foreign key needs the payment row, which nobody else sees before this
 * commit), so the staging table, its sort and the conflict checks would buy nothing (~30 % of
 * what the statement cost). A row persisted before without a decision (the single transaction
 * rules it out, but it would be decided now) takes the staged path. */
store_rc store_insert_decisions(store *st, store_row *const *rows, size_t n, const char *scorer_id,
                                char *errstr, size_t errstr_size) {
    size_t nnew = 0;
    for (size_t i = 0; i < n; i++) nnew += rows[i]->is_new;
    if (n == 0) return STORE_OK;
    if (!store_connected(st)) /* the staged path escapes the scorer id on the connection */
        return result_rc(st, NULL, PGRES_COMMAND_OK, "insert decisions", errstr, errstr_size);
    if (nnew > 0) {
        pgcopy_reset(&st->cb);
        for (size_t i = 0; i < n; i++)
            if (rows[i]->is_new) copy_decision(&st->cb, rows[i], scorer_id);
        store_rc rc = exec_copy(st, SQL_COPY_NEW_DECISIONS, NULL, 0, NULL, PGRES_COMMAND_OK,
                                "insert decisions", NULL, errstr, errstr_size);
        if (rc != STORE_OK) return rc;
    }
    return nnew < n ? insert_decisions_staged(st, rows, n, scorer_id, errstr, errstr_size) : STORE_OK;
}

static const char SQL_INSERT_ALERTS[] =
    "INSERT INTO alerts (alert_id, payment_id, decision, score, created_at) "
    "SELECT x.alert_id, x.payment_id, x.decision, x.score, " EPOCH_MS("x.created_at_ms") " "
    "FROM jsonb_to_recordset($1::jsonb) AS x(alert_id uuid, payment_id uuid, decision text,"
    " score smallint, created_at_ms bigint) "
    "ORDER BY x.payment_id "
    "ON CONFLICT DO NOTHING";

store_rc store_insert_alerts(store *st, store_row *const *rows, size_t n, char *errstr,
                             size_t errstr_size) {
    if (n == 0) return STORE_OK;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const store_row *r = rows[i];
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:I}", "alert_id", r->alert_id,
                                             "payment_id", r->p->payment_id, "decision",
                                             r->dec.decision, "score", r->dec.score,
                                             "created_at_ms", (json_int_t)r->dec.decided_at_ms));
    }
    return exec_json(st, SQL_INSERT_ALERTS, arr, NULL, PGRES_COMMAND_OK, "insert alerts", NULL,
                     errstr, errstr_size);
}

/* ---- velocity ------------------------------------------------------------------------------- */

/* ONE statement reads what the batch's features need, as rows of one shape:
 *   src 'v' velocity event: a = event time, b = amount, t = counterpart
 *   src 'b' feature bucket: a = width ms, b = start, c = n, d = sum, t = cps as '{...}'
 *   src 'r' vault row:      a = first seen, b = last seen, c = times seen
 *   src 'l' outcome link:   a = event time, b = known at, c = fs_label_rank (vault_outcome),
 *                           t = the labelled payment
 * The keys and ranges arrive by COPY in tmp_feature_keys (s: 'v' exact-window range, 'b' bucket
 * range, 'r' vault key), not as jsonb parameters: ~18,000 of them for 2,000 payments were 1.3 MB of
 * JSON, whose parsing at bind cost PostgreSQL as much as executing the read (~70 ms a batch, against
 * ~11 ms for the COPY). Each part is one probe of its table's primary key per key: READ_PLAN keeps
 * it so, whatever the planner guesses of the staging table (no statistics) or of the state tables
 * (statistics from when they were smaller), and keeps JIT off a statement that runs once a batch. */
static const char SQL_LOAD_FEATURES[] =
    "SELECT 'v', v.entity_kind, v.entity_key, " TO_MS("v.event_time") ", v.amount_minor, 0::bigint,"
    " 0::bigint, v.user_id "
    "FROM tmp_feature_keys r "
    "JOIN velocity_events v ON r.s = 'v' AND v.entity_kind = r.k AND v.entity_key = r.e"
    " AND v.event_time > " EPOCH_MS("r.lo") " AND v.event_time <= " EPOCH_MS("r.hi") " "
    "UNION ALL "
    "SELECT 'b', b.entity_kind, b.entity_key, b.width_s::bigint * 1000, " TO_MS("b.bucket_start")
    ", b.n, b.sum_minor, b.cps::text "
    "FROM tmp_feature_keys r "
    "JOIN feature_buckets b ON r.s = 'b' AND b.entity_kind = r.k AND b.entity_key = r.e"
    " AND b.width_s = r.w"
    " AND b.bucket_start >= " EPOCH_MS("r.lo") " AND b.bucket_start <= " EPOCH_MS("r.hi") " "
    "UNION ALL "
    "SELECT 'r', g.entity_kind, g.digest, " TO_MS("g.first_seen") ", " TO_MS("g.last_seen")
    ", g.times_seen, 0::bigint, NULL "
    "FROM tmp_feature_keys r "
    "JOIN risk_vault g ON r.s = 'r' AND g.entity_kind = r.k AND g.digest = r.e "
    "UNION ALL "
    "SELECT 'l', l.entity_kind, l.entity_key, " TO_MS("l.event_time") ", " TO_MS("l.known_at")
    ", fs_label_rank(l.outcome)::bigint, 0::bigint, l.payment_id::text "
    "FROM tmp_feature_keys r "
    "JOIN outcome_links l ON r.s = 'r' AND l.entity_kind = r.k AND l.entity_key = r.e"
    " AND (r.k <> 'merchant' OR l.event_time > " EPOCH_MS("$1::bigint") ")";

static const char READ_PLAN[] =
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off";
static const char READ_PLAN_END[] = "SET LOCAL enable_hashjoin TO DEFAULT;"
                                    " SET LOCAL enable_mergejoin TO DEFAULT; SET LOCAL jit TO DEFAULT";

static int entity_parse(const char *name, rules_entity *out) {
    for (int e = 0; e < RULES_ENT_COUNT; e++) {
        if (strcmp(rules_entity_name((rules_entity)e), name) == 0) {
            *out = (rules_entity)e;
            return 0;
        }
    }
    return -1;
}

/* '{1,2,3}' -> r->cps */
static void cps_parse(const char *text, buckets_row *r) {
    const char *c = text;
    r->ncps = 0;
    while (*c && r->ncps < RULES_DISTINCT_CAP) {
        while (*c && (*c < '0' || *c > '9') && *c != '-') c++;
        if (!*c) break;
        char *end;
        r->cps[r->ncps++] = strtoll(c, &end, 10);
        c = end;
    }
}

static int64_t ll(const PGresult *res, int i, int col) {
    return strtoll(PQgetvalue(res, i, col), NULL, 10);
}

static int feature_row(const PGresult *res, int i, velocity *v, buckets *b, vault *vt) {
    rules_entity ent;
    const char *src = PQgetvalue(res, i, 0), *key = PQgetvalue(res, i, 2);
    if (entity_parse(PQgetvalue(res, i, 1), &ent) != 0) return 0; /* a kind we dropped */
    switch (src[0]) {
    case 'v': {
        velocity_event e = {ent, key, PQgetvalue(res, i, 7), NULL, ll(res, i, 3), ll(res, i, 4)};
        return velocity_add(v, &e); /* copies the strings out of res */
    }
    case 'b': {
        buckets_row r = {.entity = ent, .key = key, .width_ms = ll(res, i, 3),
                         .start_ms = ll(res, i, 4), .count = ll(res, i, 5),
                         .sum_minor = ll(res, i, 6)};
        cps_parse(PQgetvalue(res, i, 7), &r);
        return buckets_load(b, &r);
    }
    case 'r': {
        vault_row r = {ent, key, ll(res, i, 3), ll(res, i, 4), ll(res, i, 5)};
        return vault_load_row(vt, &r);
    }
    case 'l': {
        vault_link l = {ent, key, (vault_outcome)ll(res, i, 5), ll(res, i, 3), ll(res, i, 4),
                        PQgetvalue(res, i, 7)};
        return vault_load_link(vt, &l);
    }
    }
    return 0;
}

#define NO_VALUE INT64_MIN /* a column the key's kind does not use: NULL */

/* One row of tmp_feature_keys (s, k, e, w, lo, hi). */
static void feature_key(pgcopy_buf *b, const char *src, rules_entity entity, const char *key,
                        int64_t w, int64_t lo, int64_t hi) {
    const int64_t v[3] = {w, lo, hi};
    pgcopy_text(b, src);
    pgcopy_text(b, rules_entity_name(entity));
    pgcopy_text(b, key);
    for (int i = 0; i < 3; i++) {
        if (v[i] == NO_VALUE) pgcopy_null(b);
        else pgcopy_int(b, v[i]);
    }
    pgcopy_end_row(b);
}

/* The batch's keys and ranges: exact-window ranges ('v'), bucket ranges ('b'), vault keys ('r'). */
static void feature_keys_copy(pgcopy_buf *b, const store_feature_query *q) {
    for (size_t i = 0; i < q->nvr; i++)
        feature_key(b, "v", q->vr[i].entity, q->vr[i].key, NO_VALUE, q->vr[i].from_ms,
                    q->vr[i].to_ms);
    for (size_t i = 0; i < q->nbr; i++)
        feature_key(b, "b", q->br[i].entity, q->br[i].key, q->br[i].width_ms / 1000,
                    q->br[i].from_ms, q->br[i].to_ms);
    for (size_t i = 0; i < q->nvk; i++)
        feature_key(b, "r", q->vk[i].entity, q->vk[i].key, NO_VALUE, NO_VALUE, NO_VALUE);
}

store_rc store_load_features(store *st, const store_feature_query *q, velocity *v, buckets *b,
                             vault *vt, char *errstr, size_t errstr_size) {
    PGresult *res = NULL;
    char since[24];
    snprintf(since, sizeof since, "%lld", (long long)q->merchant_since_ms);
    const char *params[1] = {since};
    pgcopy_reset(&st->cb);
    feature_keys_copy(&st->cb, q);
    store_rc rc = exec_simple(st, READ_PLAN, errstr, errstr_size);
    if (rc == STORE_OK)
        rc = exec_copy(st, "COPY tmp_feature_keys (s, k, e, w, lo, hi) FROM STDIN",
                       SQL_LOAD_FEATURES, 1, params, PGRES_TUPLES_OK, "load features", &res,
                       errstr, errstr_size);
    for (int i = 0; rc == STORE_OK && i < PQntuples(res); i++) {
        if (feature_row(res, i, v, b, vt) != 0) {
            snprintf(errstr, errstr_size, "load features: out of memory");
            rc = STORE_FAILED;
        }
    }
    PQclear(res);
    return rc == STORE_OK ? exec_simple(st, READ_PLAN_END, errstr, errstr_size) : rc;
}

static void cps_text(const buckets_row *r, char *out, size_t size) {
    size_t k = (size_t)snprintf(out, size, "{");
    for (size_t i = 0; i < r->ncps && k < size; i++)
        k += (size_t)snprintf(out + k, size - k, "%s%lld", i ? "," : "", (long long)r->cps[i]);
    if (k < size) snprintf(out + k, size - k, "}");
}

static const char SQL_MOVE_BUCKETS[] =
    "INSERT INTO feature_buckets AS b (entity_kind, entity_key, width_s, bucket_start, n,"
    " sum_minor, cps) "
    "SELECT x.k, x.e, x.w, " EPOCH_MS("x.s") ", x.n, x.a, x.c FROM tmp_buckets x "
    "ORDER BY x.k COLLATE \"C\", x.e COLLATE \"C\", x.w, x.s "
    "ON CONFLICT (entity_kind, entity_key, width_s, bucket_start) DO UPDATE SET"
    " n = b.n + excluded.n, sum_minor = b.sum_minor + excluded.sum_minor,"
    " cps = fs_cps_merge(b.cps, excluded.cps, 16)";

static void cps_text(const buckets_row *r, char *out, size_t size);

store_rc store_write_buckets(store *st, const buckets_row *rows, size_t n, char *errstr,
                             size_t errstr_size) {
    char cps[RULES_DISTINCT_CAP * 21 + 4];
    if (n == 0) return STORE_OK;
    pgcopy_reset(&st->cb);
    for (size_t i = 0; i < n; i++) {
        cps_text(&rows[i], cps, sizeof cps);
        pgcopy_text(&st->cb, rules_entity_name(rows[i].entity));
        pgcopy_text(&st->cb, rows[i].key);
        pgcopy_int(&st->cb, rows[i].width_ms / 1000);
        pgcopy_int(&st->cb, rows[i].start_ms);
        pgcopy_int(&st->cb, rows[i].count);
        pgcopy_int(&st->cb, rows[i].sum_minor);
        pgcopy_text(&st->cb, cps);
        pgcopy_end_row(&st->cb);
    }
    return exec_copy(st, "COPY tmp_buckets (k, e, w, s, n, a, c) FROM STDIN", SQL_MOVE_BUCKETS, 0,
                     NULL, PGRES_COMMAND_OK, "write buckets", NULL, errstr, errstr_size);
}

static const char SQL_MOVE_VAULT[] =
    "INSERT INTO risk_vault AS v (entity_kind, digest, first_seen, last_seen, times_seen) "
    "SELECT x.k, x.e, " EPOCH_MS("x.f") ", " EPOCH_MS("x.l") ", x.n FROM tmp_vault x "
    "ORDER BY x.k COLLATE \"C\", x.e COLLATE \"C\" "
    "ON CONFLICT (entity_kind, digest) DO UPDATE SET"
    " first_seen = least(v.first_seen, excluded.first_seen),"
    " last_seen = greatest(v.last_seen, excluded.last_seen),"
    " times_seen = v.times_seen + excluded.times_seen";

store_rc store_write_vault(store *st, const vault_row *rows, size_t n, char *errstr,
                           size_t errstr_size) {
    if (n == 0) return STORE_OK;
    pgcopy_reset(&st->cb);
    for (size_t i = 0; i < n; i++) {
        pgcopy_text(&st->cb, rules_entity_name(rows[i].entity));
        pgcopy_text(&st->cb, rows[i].key);
        pgcopy_int(&st->cb, rows[i].first_seen_ms);
        pgcopy_int(&st->cb, rows[i].last_seen_ms);
        pgcopy_int(&st->cb, rows[i].times_seen);
        pgcopy_end_row(&st->cb);
    }
    return exec_copy(st, "COPY tmp_vault (k, e, f, l, n) FROM STDIN", SQL_MOVE_VAULT, 0,
                     NULL, PGRES_COMMAND_OK, "write vault", NULL, errstr, errstr_size);
}

static const char SQL_PRUNE_BUCKETS[] =
    "DELETE FROM feature_buckets WHERE ctid = ANY (ARRAY("
    " SELECT ctid FROM feature_buckets WHERE width_s = $3::integer AND bucket_start < "
    EPOCH_MS("$1::bigint") " LIMIT $2::integer))";

store_rc store_prune_buckets(store *st, int64_t width_ms, int64_t before_ms, int limit,
                             int64_t *deleted, char *errstr, size_t errstr_size) {
    char before[32], lim[16], w[16];
    snprintf(before, sizeof before, "%lld", (long long)before_ms);
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(w, sizeof w, "%d", (int)(width_ms / 1000));
    const char *params[3] = {before, lim, w};
    PGresult *res = execn(st, SQL_PRUNE_BUCKETS, 3, params);
    store_rc rc = result_rc(st, res, PGRES_COMMAND_OK, "prune buckets", errstr, errstr_size);
    *deleted = rc == STORE_OK ? strtoll(PQcmdTuples(res), NULL, 10) : 0;
    PQclear(res);
    return rc;
}

/* ---- outcomes --------------------------------------------------------------------------------- */

/* The first row given per outcome_id only (outcome_firsts): ON CONFLICT DO NOTHING keeps one row
 * per id whatever the order, and the insert goes in primary key order (concurrent workers lock in
 * the same order), so which of two rows with one id it kept would depend on their payment and
 * label, not on which came first. */
static const char SQL_INSERT_OUTCOMES[] =
    "INSERT INTO outcomes (outcome_id, payment_id, outcome, known_at, reason, source) "
    "SELECT x.outcome_id, x.payment_id, x.outcome, " EPOCH_MS("x.known_at_ms") ", x.reason, x.source "
    "FROM jsonb_to_recordset($1::jsonb) AS x(outcome_id uuid, payment_id uuid, outcome text,"
    " known_at_ms bigint, reason text, source text) "
    "ORDER BY 2, 3, 4 ON CONFLICT DO NOTHING RETURNING outcome_id";

/* The labels standing under the outcome ids $1 (an array literal). A statement of its own after
 * the insert, in its transaction: READ COMMITTED gives it a new snapshot, which holds the insert's
 * rows and those another worker committed while the insert waited on them (a CTE beside the
 * insert would see neither, and drop those conflicts silently). */
static const char SQL_STANDING_OUTCOMES[] =
    "SELECT outcome_id, payment_id, outcome FROM outcomes WHERE outcome_id = ANY($1::uuid[])";

/* A row of the outcomes given that has an outcome_id. */
typedef struct outcome_ref {
    const char *id;
    size_t row;
} outcome_ref;

/* By id, then in the order given: the rows of an id are a run, its first row first. */
static int outcome_ref_cmp(const void *a, const void *b) {
    const outcome_ref *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->row > y->row) - (x->row < y->row);
}

static const char *outcome_field(const json_t *rows, size_t row, const char *name) {
    return json_string_value(json_object_get(json_array_get(rows, row), name));
}

/* The rows that have an outcome_id, sorted (outcome_ref_cmp); *n of them. NULL when out of
 * memory. */
static outcome_ref *outcome_refs(const json_t *rows, size_t *n) {
    size_t total = json_array_size(rows);
    outcome_ref *refs = malloc((total ? total : 1) * sizeof *refs);
    *n = 0;
    if (!refs) return NULL;
    for (size_t i = 0; i < total; i++) {
        const char *id = outcome_field(rows, i, "outcome_id");
        if (id) refs[(*n)++] = (outcome_ref){id, i};
    }
    qsort(refs, *n, sizeof *refs, outcome_ref_cmp);
    return refs;
}

/* The rows to insert: those without an outcome_id and the first row given per outcome_id (new
 * references). NULL when out of memory. */
static json_t *outcome_firsts(const json_t *rows, const outcome_ref *refs, size_t n) {
    json_t *firsts = json_array();
    int failed = !firsts;
    for (size_t i = 0; !failed && i < json_array_size(rows); i++)
        if (!outcome_field(rows, i, "outcome_id"))
            failed = json_array_append(firsts, json_array_get(rows, i));
    for (size_t k = 0; !failed && k < n; k++)
        if (k == 0 || strcmp(refs[k].id, refs[k - 1].id) != 0)
            failed = json_array_append(firsts, json_array_get(rows, refs[k].row));
    if (!failed) return firsts;
    json_decref(firsts);
    return NULL;
}

/* The end of the run of refs[a]'s outcome_id. */
static size_t outcome_run_end(const outcome_ref *refs, size_t n, size_t a) {
    size_t b = a + 1;
    while (b < n && strcmp(refs[b].id, refs[a].id) == 0) b++;
    return b;
}

/* The start of the run of id in refs, or n. */
static size_t outcome_run_find(const outcome_ref *refs, size_t n, const char *id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(refs[mid].id, id) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && strcmp(refs[lo].id, id) == 0 ? lo : n;
}

/* The rows of the run [a, b) that differ from the standing label (payment_id pid, outcome oc) of
 * their outcome_id, appended to c. Only payment_id and outcome make the label: known_at and
 * received_at differ between a client's identical retries (ingest defaults them to the time of
 * each request), and reason is a free-text note on the same label, which scores nothing (a
 * retry's reworded note is not worth a dead letter; the first one stays). */
static void outcome_conflicts(const json_t *rows, const outcome_ref *refs, size_t a, size_t b,
                              const char *pid, const char *oc, store_outcome_conflict *c,
                              size_t *nc) {
    for (size_t k = a; k < b; k++) {
        const char *p = outcome_field(rows, refs[k].row, "payment_id");
        const char *o = outcome_field(rows, refs[k].row, "outcome");
        if (strcmp(p, pid) == 0 && strcmp(o, oc) == 0) continue;
        store_outcome_conflict *x = &c[(*nc)++];
        x->row = refs[k].row;
        snprintf(x->outcome_id, sizeof x->outcome_id, "%s", refs[k].id);
        snprintf(x->payment_id, sizeof x->payment_id, "%s", p);
        snprintf(x->outcome, sizeof x->outcome, "%s", o);
        snprintf(x->first_payment_id, sizeof x->first_payment_id, "%s", pid);
        snprintf(x->first_outcome, sizeof x->first_outcome, "%s", oc);
    }
}

/* After the insert: each outcome_id of refs against the label standing under it (store.h). */
static store_rc outcome_settle(store *st, const json_t *rows, const outcome_ref *refs, size_t n,
                               store_outcome_conflict *c, size_t *nc, char *errstr,
                               size_t errstr_size) {
    const char **ids = malloc(n * sizeof *ids);
    char *lit = NULL;
    if (ids) {
        for (size_t k = 0; k < n; k++) ids[k] = refs[k].id;
        lit = fs_uuid_array_literal(ids, n);
    }
    bool *stood = calloc(n, sizeof *stood); /* per run start: a stored label was found */
    free(ids);
    if (!lit || !stood) {
        free(lit);
        free(stood);
        snprintf(errstr, errstr_size, "outcomes: out of memory");
        return STORE_TRANSIENT; /* (not the rows' fault: never dead-lettered for it) */
    }
    PGresult *res = exec2(st, SQL_STANDING_OUTCOMES, lit, NULL);
    free(lit);
    store_rc rc = result_rc(st, res, PGRES_TUPLES_OK, "read standing outcomes", errstr, errstr_size);
    for (int i = 0; rc == STORE_OK && i < PQntuples(res); i++) {
        size_t a = outcome_run_find(refs, n, PQgetvalue(res, i, 0));
        if (a == n) continue; /* (cannot be: only the ids asked for) */
        stood[a] = true;
        outcome_conflicts(rows, refs, a, outcome_run_end(refs, n, a), PQgetvalue(res, i, 1),
                          PQgetvalue(res, i, 2), c, nc);
    }
    for (size_t a = 0; rc == STORE_OK && a < n; a = outcome_run_end(refs, n, a))
        if (!stood[a])
            outcome_conflicts(rows, refs, a + 1, outcome_run_end(refs, n, a),
                              outcome_field(rows, refs[a].row, "payment_id"),
                              outcome_field(rows, refs[a].row, "outcome"), c, nc);
    PQclear(res);
    free(stood);
    return rc;
}

store_rc store_insert_outcomes(store *st, json_t *outcomes, int64_t *inserted,
                               store_outcome_conflict *conflicts, size_t *nconflicts, char *errstr,
                               size_t errstr_size) {
    PGresult *res = NULL;
    size_t n = 0;
    *inserted = 0;
    *nconflicts = 0;
    if (json_array_size(outcomes) == 0) {
        json_decref(outcomes);
        return STORE_OK;
    }
    outcome_ref *refs = outcome_refs(outcomes, &n);
    json_t *firsts = refs ? outcome_firsts(outcomes, refs, n) : NULL;
    store_rc rc = STORE_TRANSIENT; /* out of memory: not the rows' fault */
    if (firsts)
        rc = exec_json(st, SQL_INSERT_OUTCOMES, firsts, NULL, PGRES_TUPLES_OK, "insert outcomes",
                       &res, errstr, errstr_size);
    else snprintf(errstr, errstr_size, "outcomes: out of memory");
    if (rc == STORE_OK) {
        size_t ids = 0; /* the outcome ids inserted */
        *inserted = PQntuples(res);
        for (int i = 0; i < PQntuples(res); i++) ids += !PQgetisnull(res, i, 0);
        if (ids < n) /* a row with an id was not inserted (or came after one with its id) */
            rc = outcome_settle(st, outcomes, refs, n, conflicts, nconflicts, errstr, errstr_size);
    }
    PQclear(res);
    free(refs);
    json_decref(outcomes);
    return rc;
}

/* Applying labels takes two statements, so that the second one reads every label of its payments
 * (READ COMMITTED: each statement reads what was committed when it started).
 *
 * 1. Claim: pending outcomes whose payment exists, into tmp_outcomes, each row locked and its
 *    payment row locked too (FOR NO KEY UPDATE: the foreign keys' FOR KEY SHARE of the batches
 *    and their INSERT ... ON CONFLICT DO NOTHING are not held up). SKIP LOCKED: a label whose
 *    payment another worker is applying stays pending for a later round instead of waiting, so
 *    the claim never waits and cannot deadlock. Holding its payments' rows, a worker is the only
 *    one changing their links and vault counts until it commits. Which labels, in two ways (never
 *    all the pending ones at once: most of them may be orphans, whose payment never comes):
 *    - of given payments ($1, an array literal): the outcomes primary key starts with payment_id
 *      (PENDING_ONLY keeps outcomes_pending_idx out of it);
 *    - a re-try step (pending.h): the next labels of outcomes_pending_idx after a received_at
 *      ($1), $2 of them and those tying with the last one (WITH TIES: a whole group of labels
 *      stored by one transaction, so that the cursor moves by received_at alone and no sort is
 *      needed), each with one probe of payments (OFFSET 0: a probe, never a hash of payments);
 *      the step's size, and its last received_at, come back. Its plan must read the index in
 *      order and stop at the limit: with statistics from before the pending labels piled up, the
 *      planner prefers a bitmap scan of all of them and a sort, so both are turned off for the
 *      claim (RETRY_PLAN, SET LOCAL) and back on for the apply (RETRY_PLAN_END). */
static const char SQL_CLAIM_OUTCOMES_OF[] =
    "WITH pend AS ("
    " SELECT o.payment_id, o.outcome, o.known_at FROM outcomes o JOIN payments p USING (payment_id)"
    " WHERE o.payment_id = ANY ($1::uuid[]) AND " PENDING_ONLY("o")
    " ORDER BY o.payment_id, o.outcome, o.known_at LIMIT $2::integer"
    " FOR UPDATE OF o SKIP LOCKED FOR NO KEY UPDATE OF p SKIP LOCKED)"
    "INSERT INTO tmp_outcomes (payment_id, outcome, known_at)"
    " SELECT payment_id, outcome, known_at FROM pend";

static const char RETRY_PLAN[] = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off";
static const char RETRY_PLAN_END[] =
    "SET LOCAL enable_bitmapscan TO DEFAULT; SET LOCAL enable_sort TO DEFAULT";

static const char SQL_CLAIM_OUTCOMES_STEP[] =
    "WITH scan AS MATERIALIZED ("
    " SELECT o.received_at, o.payment_id, o.outcome, o.known_at,"
    " EXISTS (SELECT 1 FROM payments p WHERE p.payment_id = o.payment_id OFFSET 0) AS paid"
    " FROM outcomes o WHERE o.applied_at IS NULL AND o.received_at > $1::timestamptz"
    " ORDER BY o.received_at FETCH FIRST ($2::integer) ROWS WITH TIES),"
    " pend AS ("
    " SELECT o.payment_id, o.outcome, o.known_at FROM scan s"
    " JOIN outcomes o USING (payment_id, outcome, known_at) JOIN payments p USING (payment_id)"
    " WHERE s.paid AND " PENDING_ONLY("o")
    " FOR UPDATE OF o SKIP LOCKED FOR NO KEY UPDATE OF p SKIP LOCKED),"
    " ins AS (INSERT INTO tmp_outcomes (payment_id, outcome, known_at)"
    " SELECT payment_id, outcome, known_at FROM pend RETURNING 1) "
    "SELECT (SELECT count(*) FROM scan), (SELECT count(*) FROM ins),"
    " coalesce((SELECT max(received_at)::text FROM scan), '')";

/* 2. Apply, from a snapshot taken after the claim: every label of the claimed payments that
 *    counts from now on (applied before, or claimed) gives
 *    - the links (outcome_links, migration 008): per identifier and merchant, a row for each
 *      fraud label and for each false_positive/legitimate label known at or after one, inserted
 *      unless present (the set only grows with the labels: a label applied again adds nothing);
 *    - the vault counts: a payment counts as confirmed fraud (chargeback) when such a label is
 *      known at or after its latest false_positive/legitimate label (at equal known_at the fraud
 *      label wins, fs_label_rank). Per payment whose counts changed, the difference (-1, 0, +1)
 *      between before and after, summed per identifier and added in key order (the batches'
 *      vault writes' order: no deadlock);
 *    - applied_at set on the claimed rows.
 *    The labels are read by their payments' ids, as an array (CLAIMED_PAYMENTS): an index scan of
 *    the primary key. Joined with tmp_outcomes instead, which has no statistics (the planner
 *    guesses ~1000 rows), outcomes was read whole, twice, for every apply: a cost growing with
 *    every label ever stored, orphans included.
 *    Result: applied, vault rows changed. (No count of the pending labels: that would read every
 *    one of them; the re-try rounds count them as they go, pending.h.) */
#define CLAIMED_PAYMENTS "ARRAY(SELECT payment_id FROM pay)"
static const char SQL_APPLY_OUTCOMES[] =
    "WITH pay AS (SELECT DISTINCT payment_id FROM tmp_outcomes),"
    " labels AS ("
    " SELECT o.payment_id, o.outcome, o.known_at, o.applied_at IS NOT NULL AS before,"
    " o.outcome IN ('false_positive', 'legitimate') AS genuine"
    " FROM outcomes o LEFT JOIN tmp_outcomes t"
    " ON t.payment_id = o.payment_id AND t.outcome = o.outcome AND t.known_at = o.known_at"
    " WHERE o.payment_id = ANY (" CLAIMED_PAYMENTS ")"
    " AND (o.applied_at IS NOT NULL OR t.payment_id IS NOT NULL)),"
    /* per payment: its last genuine label before and after, its first fraud label */
    " per AS ("
    " SELECT payment_id,"
    " coalesce(max(known_at) FILTER (WHERE genuine AND before), '-infinity') AS g_was,"
    " coalesce(max(known_at) FILTER (WHERE genuine), '-infinity') AS g_now,"
    " min(known_at) FILTER (WHERE NOT genuine) AS first_fraud"
    " FROM labels GROUP BY payment_id),"
    " cur AS ("
    " SELECT payment_id,"
    " bool_or(before AND outcome = 'confirmed_fraud' AND known_at >= g_was) AS f_was,"
    " bool_or(outcome = 'confirmed_fraud' AND known_at >= g_now) AS f_now,"
    " bool_or(before AND outcome = 'chargeback' AND known_at >= g_was) AS c_was,"
    " bool_or(outcome = 'chargeback' AND known_at >= g_now) AS c_now"
    " FROM labels JOIN per USING (payment_id) GROUP BY payment_id),"
    " keep AS ("
    " SELECT l.payment_id, l.outcome, l.known_at FROM labels l JOIN per USING (payment_id)"
    " WHERE NOT l.genuine OR l.known_at >= per.first_fraud),"
    " ins AS ("
    " INSERT INTO outcome_links (entity_kind, entity_key, payment_id, outcome, event_time, known_at)"
    " SELECT v.k, v.key, k.payment_id, k.outcome, p.event_time, k.known_at"
    " FROM keep k JOIN payments p USING (payment_id)"
    " CROSS JOIN LATERAL (VALUES ('card', p.card_fingerprint_digest), ('ip', p.ip_digest),"
    " ('device', p.device_id_digest), ('email', p.email_digest), ('merchant', p.merchant_id)) AS v(k, key)"
    " WHERE v.key IS NOT NULL"
    " ORDER BY v.k COLLATE \"C\", v.key COLLATE \"C\", k.payment_id, k.known_at, k.outcome"
    " ON CONFLICT DO NOTHING),"
    " delta AS ("
    " SELECT v.k, v.key, sum(c.f_now::int - c.f_was::int) AS f, sum(c.c_now::int - c.c_was::int) AS cb"
    " FROM cur c JOIN payments p USING (payment_id)"
    " CROSS JOIN LATERAL (VALUES ('card', p.card_fingerprint_digest), ('ip', p.ip_digest),"
    " ('device', p.device_id_digest), ('email', p.email_digest)) AS v(k, key)"
    " WHERE v.key IS NOT NULL AND (c.f_was, c.c_was) IS DISTINCT FROM (c.f_now, c.c_now)"
    " GROUP BY 1, 2),"
    " vu AS ("
    " INSERT INTO risk_vault AS r (entity_kind, digest, first_seen, last_seen, times_seen,"
    " fraud_count, chargeback_count)"
    " SELECT k, key, now(), now(), 0, f, cb FROM delta WHERE f <> 0 OR cb <> 0"
    " ORDER BY k COLLATE \"C\", key COLLATE \"C\""
    " ON CONFLICT (entity_kind, digest) DO UPDATE SET fraud_count = r.fraud_count + excluded.fraud_count,"
    " chargeback_count = r.chargeback_count + excluded.chargeback_count RETURNING 1),"
    " upd AS ("
    " UPDATE outcomes o SET applied_at = now() FROM tmp_outcomes t"
    " WHERE o.payment_id = ANY (" CLAIMED_PAYMENTS ") AND o.payment_id = t.payment_id"
    " AND o.outcome = t.outcome AND o.known_at = t.known_at RETURNING 1)"
    "SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM vu)";

/* Applies the claimed labels in tmp_outcomes (none: no round trip). */
static store_rc apply_claimed(store *st, int64_t claimed, int64_t *applied, char *errstr,
                              size_t errstr_size) {
    if (claimed == 0) return STORE_OK;
    PGresult *res = exec2(st, SQL_APPLY_OUTCOMES, NULL, NULL);
    store_rc rc = result_rc(st, res, PGRES_TUPLES_OK, "apply outcomes", errstr, errstr_size);
    if (rc == STORE_OK) *applied = ll(res, 0, 0);
    PQclear(res);
    return rc;
}

store_rc store_apply_outcomes_of(store *st, const char *ids, int limit, int64_t *applied,
                                 char *errstr, size_t errstr_size) {
    char lim[16];
    *applied = 0;
    snprintf(lim, sizeof lim, "%d", limit);
    PGresult *res = exec2(st, SQL_CLAIM_OUTCOMES_OF, ids, lim);
    store_rc rc = result_rc(st, res, PGRES_COMMAND_OK, "claim outcomes", errstr, errstr_size);
    int64_t claimed = rc == STORE_OK ? strtoll(PQcmdTuples(res), NULL, 10) : 0;
    PQclear(res);
    return rc == STORE_OK ? apply_claimed(st, claimed, applied, errstr, errstr_size) : rc;
}

store_rc store_retry_outcomes(store *st, const char *cursor, int scan, int64_t *examined,
                              int64_t *applied, char *next, size_t next_size, char *errstr,
                              size_t errstr_size) {
    char n[16];
    *examined = *applied = 0;
    next[0] = '\0';
    snprintf(n, sizeof n, "%d", scan);
    store_rc rc = exec_simple(st, RETRY_PLAN, errstr, errstr_size);
    if (rc != STORE_OK) return rc;
    PGresult *res = exec2(st, SQL_CLAIM_OUTCOMES_STEP, cursor, n);
    rc = result_rc(st, res, PGRES_TUPLES_OK, "claim pending outcomes", errstr, errstr_size);
    int64_t claimed = 0;
    if (rc == STORE_OK) {
        *examined = ll(res, 0, 0);
        claimed = ll(res, 0, 1);
        snprintf(next, next_size, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    /* the apply plans as usual (its sorts, disabled, would cost so much that JIT compiles it) */
    if (rc == STORE_OK && claimed > 0) rc = exec_simple(st, RETRY_PLAN_END, errstr, errstr_size);
    return rc == STORE_OK ? apply_claimed(st, claimed, applied, errstr, errstr_size) : rc;
}

static const char SQL_MOVE_VELOCITY[] =
    "INSERT INTO velocity_events (entity_kind, entity_key, event_time, payment_id, user_id,"
    " amount_minor) "
    "SELECT x.k, x.e, " EPOCH_MS("x.t") ", x.p, x.u, x.a FROM tmp_velocity x "
    "ORDER BY x.k COLLATE \"C\", x.e COLLATE \"C\", x.t"; /* new payments only: no conflicts */

store_rc store_insert_velocity(store *st, const velocity_event *ev, size_t n, char *errstr,
                               size_t errstr_size) {
    if (n == 0) return STORE_OK;
    pgcopy_reset(&st->cb);
    for (size_t i = 0; i < n; i++) {
        pgcopy_text(&st->cb, rules_entity_name(ev[i].entity));
        pgcopy_text(&st->cb, ev[i].key);
        pgcopy_int(&st->cb, ev[i].time_ms);
        pgcopy_text(&st->cb, ev[i].payment_id);
        pgcopy_text(&st->cb, ev[i].user_id);
        pgcopy_int(&st->cb, ev[i].amount_minor);
        pgcopy_end_row(&st->cb);
    }
    return exec_copy(st, "COPY tmp_velocity (k, e, t, p, u, a) FROM STDIN", SQL_MOVE_VELOCITY, 0,
                     NULL, PGRES_COMMAND_OK, "insert velocity", NULL, errstr, errstr_size);
}

/* Bounded: a huge backlog of old rows is deleted a slice at a time, never in one long lock. */
static const char SQL_PRUNE_VELOCITY[] =
    "DELETE FROM velocity_events WHERE ctid = ANY (ARRAY("
    " SELECT ctid FROM velocity_events WHERE event_time < " EPOCH_MS("$1::bigint")
    " LIMIT $2::integer))";

store_rc store_prune_velocity(store *st, int64_t before_ms, int limit, int64_t *deleted,
                              char *errstr, size_t errstr_size) {
    char before[32], lim[16];
    snprintf(before, sizeof before, "%lld", (long long)before_ms);
    snprintf(lim, sizeof lim, "%d", limit);
    PGresult *res = exec2(st, SQL_PRUNE_VELOCITY, before, lim);
    store_rc rc = result_rc(st, res, PGRES_COMMAND_OK, "prune velocity", errstr, errstr_size);
    *deleted = rc == STORE_OK ? strtoll(PQcmdTuples(res), NULL, 10) : 0;
    PQclear(res);
    return rc;
}

/* ---- shared pruning (prune.h) ----------------------------------------------------------------- */

/* Arbitrary constant: the advisory lock key that serializes the workers' prune syncs. */
#define STORE_PRUNE_LOCK 0x4653505255LL /* "FSPRU" */

/* The rows of prune_horizons, in prune_set order. */
#define HORIZONS_SELECT                                                                           \
    " (SELECT " TO_MS("horizon") " FROM prune_horizons WHERE pruned = 'velocity_events'),"       \
    " (SELECT " TO_MS("horizon") " FROM prune_horizons WHERE pruned = 'feature_buckets_hour'),"  \
    " (SELECT " TO_MS("horizon") " FROM prune_horizons WHERE pruned = 'feature_buckets_day')"

/* Upserts this worker's row (unless $2 is 0: no watermark yet); the least needed-from of the OTHER
 * workers refreshed within the liveness ($4 ms; this statement's snapshot does not see its own
 * upsert, and the caller knows its own value), and the horizons. */
static const char SQL_PRUNE_SYNC[] =
    "WITH me AS ("
    " INSERT INTO scorer_watermarks AS w (scorer_id, watermark, needed_from, updated_at)"
    " SELECT $1::text, " EPOCH_MS("$2::bigint") ", " EPOCH_MS("$3::bigint") ", now()"
    " WHERE $2::bigint <> 0"
    " ON CONFLICT (scorer_id) DO UPDATE SET watermark = excluded.watermark,"
    " needed_from = excluded.needed_from, updated_at = excluded.updated_at RETURNING 1), "
    /* rows of workers gone for 6 liveness periods (killed ones; the default id is host-pid, so
     * nobody overwrites them): ignored long since, kept that long for an operator to see */
    "gone AS (DELETE FROM scorer_watermarks WHERE scorer_id <> $1::text"
    " AND updated_at < now() - 6 * $4::bigint * interval '1 millisecond') "
    "SELECT (SELECT " TO_MS("min(needed_from)") " FROM scorer_watermarks WHERE scorer_id <> $1::text"
    " AND updated_at > now() - $4::bigint * interval '1 millisecond'),"
    HORIZONS_SELECT;

static const char SQL_READ_HORIZONS[] = "SELECT" HORIZONS_SELECT;

/* Never lowers a horizon: a worker held back by a lagging one prunes below what was pruned before. */
static const char SQL_RECORD_HORIZONS[] =
    "INSERT INTO prune_horizons AS h (pruned, horizon, updated_at) VALUES"
    " ('velocity_events', " EPOCH_MS("$1::bigint") ", now()),"
    " ('feature_buckets_hour', " EPOCH_MS("$2::bigint") ", now()),"
    " ('feature_buckets_day', " EPOCH_MS("$3::bigint") ", now())"
    " ON CONFLICT (pruned) DO UPDATE SET horizon = excluded.horizon, updated_at = now()"
    " WHERE excluded.horizon > h.horizon";

static const char SQL_DROP_WATERMARK[] = "DELETE FROM scorer_watermarks WHERE scorer_id = $1::text";

static int64_t ll_or_none(const PGresult *res, int col) {
    return PQgetisnull(res, 0, col) ? PRUNE_NONE : ll(res, 0, col);
}

store_rc store_prune_sync(store *st, const char *scorer_id, int64_t watermark_ms,
                          int64_t needed_ms, int64_t liveness_ms, int64_t *others,
                          int64_t horizon[PRUNE_SETS], char *errstr, size_t errstr_size) {
    char lock[128], wm[32], needed[32], live[32];
    /* lock_timeout: a worker stalled inside its sync (a paused VM, a partition) holds the lock
     * until PostgreSQL notices; the others give up this sync (retried after their next batch)
     * instead of blocking their main loop and dropping out of the consumer group */
    snprintf(lock, sizeof lock,
             "SELECT set_config('lock_timeout', '5s', true), pg_advisory_xact_lock(%lld)",
             (long long)STORE_PRUNE_LOCK);
    snprintf(wm, sizeof wm, "%lld", (long long)watermark_ms);
    snprintf(needed, sizeof needed, "%lld", (long long)(watermark_ms ? needed_ms : 0));
    snprintf(live, sizeof live, "%lld", (long long)liveness_ms);
    PGresult *res = exec2(st, lock, NULL, NULL);
    store_rc rc = result_rc(st, res, PGRES_TUPLES_OK, "prune lock", errstr, errstr_size);
    PQclear(res);
    if (rc != STORE_OK) return rc;
    const char *params[4] = {scorer_id, wm, needed, live};
    res = execn(st, SQL_PRUNE_SYNC, 4, params);
    rc = result_rc(st, res, PGRES_TUPLES_OK, "publish watermark", errstr, errstr_size);
    if (rc == STORE_OK) {
        *others = ll_or_none(res, 0);
        for (int i = 0; i < PRUNE_SETS; i++) horizon[i] = ll_or_none(res, 1 + i);
    }
    PQclear(res);
    return rc;
}

store_rc store_prune_record(store *st, const int64_t cutoff[PRUNE_SETS], char *errstr,
                            size_t errstr_size) {
    char c[PRUNE_SETS][32];
    const char *params[PRUNE_SETS];
    for (int i = 0; i < PRUNE_SETS; i++) {
        snprintf(c[i], sizeof c[i], "%lld", (long long)cutoff[i]);
        params[i] = c[i];
    }
    PGresult *res = execn(st, SQL_RECORD_HORIZONS, PRUNE_SETS, params);
    store_rc rc = result_rc(st, res, PGRES_COMMAND_OK, "record prune horizons", errstr, errstr_size);
    PQclear(res);
    return rc;
}

store_rc store_read_horizons(store *st, int64_t horizon[PRUNE_SETS], char *errstr,
                             size_t errstr_size) {
    PGresult *res = exec2(st, SQL_READ_HORIZONS, NULL, NULL);
    store_rc rc = result_rc(st, res, PGRES_TUPLES_OK, "read prune horizons", errstr, errstr_size);
    if (rc == STORE_OK)
        for (int i = 0; i < PRUNE_SETS; i++) horizon[i] = ll_or_none(res, i);
    PQclear(res);
    return rc;
}

store_rc store_drop_watermark(store *st, const char *scorer_id, char *errstr, size_t errstr_size) {
    PGresult *res = exec2(st, SQL_DROP_WATERMARK, scorer_id, NULL);
    store_rc rc = result_rc(st, res, PGRES_COMMAND_OK, "drop watermark", errstr, errstr_size);
    PQclear(res);
    return rc;
}

/* ---- retention (expire.h) --------------------------------------------------------------------- */

/* Why deleting never races with scoring: a payment is scored once, in the batch transaction that
 * inserts it, and only a redelivery of its raw_payments message could make a batch touch its rows
 * again (ON CONFLICT DO NOTHING, then its stored decision read back). Only payments decided more
 * than payment-retention-days (at least EXPIRE_MIN_DAYS, 30) ago are deleted, far beyond the topic's
 * retention (7 days by default): their message is gone, no batch can meet them again. What may
 * still meet an old payment is a late label (outcome apply, which locks the payment row: then it
 * is skipped here, and the label applied first) and an analyst working its alert (the alert row
 * locked: skipped too). A deleted payment's velocity events are long pruned (feature windows reach
 * back hours; the day buckets hold no payment ids).
 *
 * The cutoff ($1, ms since the epoch) comes from the scorer: decided_at is written from the
 * scorers' clocks (fs_now_ms when the decision is made), not the database's, so comparing it with
 * the database's now() would move every deletion by the difference between the two clocks. The
 * scorers' hosts differ from each other by what NTP leaves (far below the days this is counted in).
 *
 * c: the oldest decided payments (decisions_decided_at_idx), decision and payment locked;
 * la: their alerts, locked; a payment whose alert another transaction holds drops out of v.
 * The NOT EXISTS is a per-row probe of the alerts' payment_id index (OFFSET 0 keeps it one
 * instead of an anti join that may hash the whole table). Every DELETE joins a CTE of at most
 * $2 rows through an index. The foreign keys (decisions, alerts -> payments) are checked at the
 * end of the statement, when all four deletions are done. No ORDER BY: any old rows will do.
 * Results: the rows deleted per table; of the outcomes those still pending (labels that never
 * found their payment before it went: counted as expired); c's size, which tells whether more may
 * be waiting (a payment left for its locked alert, the oldest, met first by every slice, must not
 * make each slice look like the last one); the deleted alerts' ids, for SQL_EXPIRE_ALERT_HISTORY. */
static const char SQL_EXPIRE_PAYMENTS[] =
    "WITH c AS (SELECT d.payment_id FROM decisions d JOIN payments p USING (payment_id)"
    " WHERE d.decided_at < " EPOCH_MS("$1::bigint")
    " LIMIT $2::int FOR UPDATE OF d, p SKIP LOCKED),"
    " la AS (SELECT a.alert_id, a.payment_id FROM c JOIN alerts a USING (payment_id)"
    " FOR UPDATE OF a SKIP LOCKED),"
    " v AS (SELECT c.payment_id FROM c WHERE NOT EXISTS"
    " (SELECT 1 FROM alerts a WHERE a.payment_id = c.payment_id OFFSET 0)"
    " UNION ALL SELECT payment_id FROM la),"
    " a AS (DELETE FROM alerts t USING la WHERE t.alert_id = la.alert_id RETURNING t.alert_id),"
    " o AS (DELETE FROM outcomes t USING v WHERE t.payment_id = v.payment_id"
    " RETURNING t.applied_at IS NULL AS pending),"
    " d AS (DELETE FROM decisions t USING v WHERE t.payment_id = v.payment_id RETURNING 1),"
    " p AS (DELETE FROM payments t USING v WHERE t.payment_id = v.payment_id RETURNING 1) "
    "SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM d), (SELECT count(*) FROM a),"
    " (SELECT count(*) FROM o), (SELECT count(*) FROM o WHERE pending), (SELECT count(*) FROM c),"
    " (SELECT coalesce(array_agg(alert_id), '{}') FROM a)::text";

/* The history of the alerts the slice deleted, by a second statement in the same transaction:
 * its snapshot is taken after the first one's, so it also sees a history row an analyst committed
 * after the first statement started but before it locked the alert (the first statement's
 * snapshot does not: the row would stay, an orphan). The alerts are deleted and stay locked until
 * the commit: no history can be added to them any more. alert_history (alert_id, changed_at). */
static const char SQL_EXPIRE_ALERT_HISTORY[] =
    "WITH h AS (DELETE FROM alert_history WHERE alert_id = ANY ($1::uuid[]) RETURNING 1) "
    "SELECT count(*) FROM h";

/* Pending labels older than the retention without a payment: outcomes_pending_idx (received_at,
 * applied_at IS NULL) finds them; the payment probe is per row (OFFSET 0, as above). A label
 * whose payment exists is left to the outcome consumer, which applies it. received_at is written
 * by the database (DEFAULT now()), so its cutoff is the database's clock too. */
static const char SQL_EXPIRE_LABELS[] =
    "WITH v AS (SELECT o.payment_id, o.outcome, o.known_at FROM outcomes o"
    " WHERE o.applied_at IS NULL AND o.received_at < now() - $1::int * interval '1 day'"
    " AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.payment_id = o.payment_id OFFSET 0)"
    " LIMIT $2::int FOR UPDATE OF o SKIP LOCKED),"
    " x AS (DELETE FROM outcomes t USING v WHERE t.payment_id = v.payment_id"
    " AND t.outcome = v.outcome AND t.known_at = v.known_at RETURNING 1) "
    "SELECT count(*) FROM x";

/* A retention slice is its own transaction, waiting at most STORE_EXPIRE_LOCK_TIMEOUT_MS for a
 * lock SKIP LOCKED does not cover (a label being applied, a hand-made lock): the scorer's loop is
 * never held up behind someone else's transaction. */
static store_rc expire_begin(store *st, char *errstr, size_t errstr_size) {
    char sql[96];
    snprintf(sql, sizeof sql, "BEGIN; SET LOCAL lock_timeout = %d", STORE_EXPIRE_LOCK_TIMEOUT_MS);
    return exec_simple(st, sql, errstr, errstr_size);
}

/* Ends a slice's transaction: committed when rc is STORE_OK, else rolled back (also when
 * expire_begin failed after its BEGIN: the connection is never left in an aborted transaction). */
static store_rc expire_end(store *st, store_rc rc, char *errstr, size_t errstr_size) {
    if (rc == STORE_OK) rc = store_commit(st, errstr, errstr_size);
    if (rc != STORE_OK) store_rollback(st);
    return rc;
}

/* Runs sql (parameters p1, p2) and reads counts[0 .. ncols) from its one row; *text, when not
 * NULL, gets a copy of column ncols (caller frees). */
static store_rc expire_exec(store *st, const char *sql, const char *what, const char *p1,
                            const char *p2, int64_t *counts, int ncols, char **text,
                            char *errstr, size_t errstr_size) {
    PGresult *res = exec2(st, sql, p1, p2);
    store_rc rc = result_rc(st, res, PGRES_TUPLES_OK, what, errstr, errstr_size);
    for (int c = 0; rc == STORE_OK && c < ncols; c++) counts[c] = ll(res, 0, c);
    if (rc == STORE_OK && text && !(*text = strdup(PQgetvalue(res, 0, ncols)))) {
        snprintf(errstr, errstr_size, "%s: out of memory", what);
        rc = STORE_TRANSIENT;
    }
    PQclear(res);
    return rc;
}

/* The columns of SQL_EXPIRE_PAYMENTS before the alert ids. */
enum { XP_PAYMENTS, XP_DECISIONS, XP_ALERTS, XP_OUTCOMES, XP_PENDING, XP_LOCKED, XP_COLS };

store_rc store_expire_payments(store *st, int64_t cutoff_ms, int limit,
                               int64_t counts[STORE_EXPIRE_TABLES], int64_t *labels_expired,
                               int64_t *taken, char *errstr, size_t errstr_size) {
    char cut[32], lim[16], *alert_ids = NULL;
    int64_t c[XP_COLS], history = 0;
    snprintf(cut, sizeof cut, "%lld", (long long)cutoff_ms);
    snprintf(lim, sizeof lim, "%d", limit);
    store_rc rc = expire_begin(st, errstr, errstr_size);
    if (rc == STORE_OK)
        rc = expire_exec(st, SQL_EXPIRE_PAYMENTS, "retention (payments)", cut, lim, c, XP_COLS,
                         &alert_ids, errstr, errstr_size);
    if (rc == STORE_OK)
        rc = expire_exec(st, SQL_EXPIRE_ALERT_HISTORY, "retention (alert_history)", alert_ids,
                         NULL, &history, 1, NULL, errstr, errstr_size);
    free(alert_ids);
    rc = expire_end(st, rc, errstr, errstr_size);
    if (rc != STORE_OK) return rc;
    counts[STORE_EXPIRE_PAYMENTS] = c[XP_PAYMENTS];
    counts[STORE_EXPIRE_DECISIONS] = c[XP_DECISIONS];
    counts[STORE_EXPIRE_ALERTS] = c[XP_ALERTS];
    counts[STORE_EXPIRE_ALERT_HISTORY] = history;
    counts[STORE_EXPIRE_OUTCOMES] = c[XP_OUTCOMES];
    *labels_expired = c[XP_PENDING];
    *taken = c[XP_LOCKED];
    return STORE_OK;
}

store_rc store_expire_labels(store *st, int days, int limit, int64_t *deleted, char *errstr,
                             size_t errstr_size) {
    char d[16], lim[16];
    snprintf(d, sizeof d, "%d", days);
    snprintf(lim, sizeof lim, "%d", limit);
    store_rc rc = expire_begin(st, errstr, errstr_size);
    if (rc == STORE_OK)
        rc = expire_exec(st, SQL_EXPIRE_LABELS, "retention (labels)", d, lim, deleted, 1, NULL,
                         errstr, errstr_size);
    return expire_end(st, rc, errstr, errstr_size);
}
