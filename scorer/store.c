/* store: the scorer's PostgreSQL batch transaction (see store.h).
 *
 * Times cross the boundary as integer milliseconds since the epoch and are converted in SQL with
 * exact interval arithmetic (timestamptz 'epoch' + ms * interval '1 millisecond'), never through a
 * float. Bulk rows travel as one JSON array parameter expanded by jsonb_to_recordset: one round
 * trip per statement whatever the batch size, and no per-row parameter lists to build. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "fsutil.h"

#define EPOCH_MS(x) "(timestamptz 'epoch' + (" x ") * interval '1 millisecond')"
#define TO_MS(x) "(extract(epoch FROM " x ") * 1000)::bigint"

struct store {
    char *url;
    char *application_name;
    PGconn *conn;
};

void store_decision_clear(store_decision *d) {
    json_decref(d->reasons);
    json_decref(d->features);
    memset(d, 0, sizeof *d);
}

int store_alert_id(const char *payment_id, char out[37]) {
    return fs_uuid_v5(payment_id, "alert", 5, out);
}

store *store_new(const char *url, const char *application_name) {
    store *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->url = strdup(url);
    st->application_name = strdup(application_name);
    if (!st->url || !st->application_name) {
        store_destroy(st);
        return NULL;
    }
    return st;
}

void store_destroy(store *st) {
    if (!st) return;
    if (st->conn) PQfinish(st->conn);
    free(st->url);
    free(st->application_name);
    free(st);
}

bool store_connected(const store *st) { return st->conn && PQstatus(st->conn) == CONNECTION_OK; }

int store_connect(store *st, char *errstr, size_t errstr_size) {
    if (store_connected(st)) return 0;
    if (st->conn) PQfinish(st->conn); /* broken: libpq will not recover it by itself */
    st->conn = db_connect(st->url, st->application_name, errstr, errstr_size);
    return st->conn ? 0 : -1;
}

int store_migrate(store *st, char *errstr, size_t errstr_size) {
    return db_migrate(st->conn, errstr, errstr_size);
}

/* Maps a result onto the three outcomes; errstr gets "what: server message". */
static store_rc result_rc(store *st, const PGresult *res, ExecStatusType want, const char *what,
                          char *errstr, size_t errstr_size) {
    if (res && PQresultStatus(res) == want) return STORE_OK;
    char e[512];
    db_error(st->conn, res, e, sizeof e);
    snprintf(errstr, errstr_size, "%s: %s", what, e);
    /* Only errors about the rows themselves may end in the DLQ; a lost connection, a missing table
     * or a revoked grant pauses the worker instead (retry with backoff, nothing skipped). */
    return db_is_data_error(res) ? STORE_FAILED : STORE_TRANSIENT;
}

/* Runs sql with up to two text parameters. NULL result only when not connected. */
static PGresult *exec2(store *st, const char *sql, const char *p1, const char *p2) {
    const char *params[2] = {p1, p2};
    int n = p2 ? 2 : p1 ? 1 : 0;
    if (!store_connected(st)) return NULL;
    return PQexecParams(st->conn, sql, n, NULL, params, NULL, NULL, 0);
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

static store_rc exec_simple(store *st, const char *sql, char *errstr, size_t errstr_size) {
    PGresult *res = exec2(st, sql, NULL, NULL);
    store_rc rc = result_rc(st, res, PGRES_COMMAND_OK, sql, errstr, errstr_size);
    PQclear(res);
    return rc;
}

store_rc store_begin(store *st, char *errstr, size_t errstr_size) {
    return exec_simple(st, "BEGIN", errstr, errstr_size);
}

store_rc store_commit(store *st, char *errstr, size_t errstr_size) {
    return exec_simple(st, "COMMIT", errstr, errstr_size);
}

void store_rollback(store *st) {
    char e[256];
    if (store_connected(st)) (void)exec_simple(st, "ROLLBACK", e, sizeof e);
}

/* ---- payments ------------------------------------------------------------------------------- */

static void set_str(json_t *o, const char *key, const char *v) {
    if (v && v[0]) json_object_set_new(o, key, json_string(v)); /* absent = NULL column */
}

static json_t *payment_json(const store_row *r) {
    const pay_payment *p = r->p;
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:i, s:s, s:I, s:I, s:i, s:I}",
                          "payment_id", p->payment_id, "user_id", p->user_id, "merchant_id",
                          p->merchant_id, "amount_minor", (json_int_t)p->amount_minor, "currency",
                          p->currency, "currency_exp", p->currency_exp, "payment_method",
                          p->payment_method, "event_time_ms", (json_int_t)p->event_time_ms,
                          "ingest_time_ms", (json_int_t)p->ingest_time_ms, "source_partition",
                          (int)r->partition, "source_offset", (json_int_t)r->offset);
    if (!o) return NULL;
    set_str(o, "transaction_type", p->transaction_type);
    set_str(o, "card_type", p->card_type);
    set_str(o, "card_last_four", p->card_last_four);
    set_str(o, "card_fingerprint_digest", p->card_fingerprint_digest);
    set_str(o, "ip_digest", p->ip_digest);
    set_str(o, "email_digest", p->email_digest);
    set_str(o, "device_id_digest", p->device_id_digest);
    set_str(o, "country", p->country);
    set_str(o, "billing_country", p->billing_country);
    set_str(o, "shipping_country", p->shipping_country);
    if (p->device_info) json_object_set(o, "device_info", p->device_info);
    if (p->metadata) json_object_set(o, "metadata", p->metadata);
    return o;
}

static const char SQL_INSERT_PAYMENTS[] =
    "INSERT INTO payments (payment_id, user_id, merchant_id, amount_minor, currency, currency_exp,"
    " payment_method, transaction_type, card_type, card_last_four, card_fingerprint_digest,"
    " ip_digest, email_digest, device_id_digest, country, billing_country, shipping_country,"
    " device_info, metadata, event_time, ingest_time, source_partition, source_offset) "
    "SELECT x.payment_id, x.user_id, x.merchant_id, x.amount_minor, x.currency, x.currency_exp,"
    " x.payment_method, x.transaction_type, x.card_type, x.card_last_four,"
    " x.card_fingerprint_digest, x.ip_digest, x.email_digest, x.device_id_digest, x.country,"
    " x.billing_country, x.shipping_country, x.device_info, x.metadata, " EPOCH_MS("x.event_time_ms")
    ", " EPOCH_MS("x.ingest_time_ms") ", x.source_partition, x.source_offset "
    "FROM jsonb_to_recordset($1::jsonb) AS x(payment_id uuid, user_id text, merchant_id text,"
    " amount_minor bigint, currency text, currency_exp smallint, payment_method text,"
    " transaction_type text, card_type text, card_last_four text, card_fingerprint_digest text,"
    " ip_digest text, email_digest text, device_id_digest text, country text,"
    " billing_country text, shipping_country text, device_info jsonb, metadata jsonb,"
    " event_time_ms bigint, ingest_time_ms bigint, source_partition integer, source_offset bigint) "
    "ORDER BY x.payment_id "
    "ON CONFLICT (payment_id) DO NOTHING "
    "RETURNING payment_id";

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
    qsort(s, n, sizeof *s, row_id_cmp);
    return s;
}

store_rc store_insert_payments(store *st, store_row *const *rows, size_t n, char *errstr,
                               size_t errstr_size) {
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        rows[i]->is_new = false;
        json_array_append_new(arr, payment_json(rows[i]));
    }
    PGresult *res = NULL;
    store_rc rc = exec_json(st, SQL_INSERT_PAYMENTS, arr, NULL, PGRES_TUPLES_OK, "insert payments",
                            &res, errstr, errstr_size);
    if (rc != STORE_OK) return rc;
    store_row **sorted = rows_sorted(rows, n);
    if (!sorted) {
        PQclear(res);
        snprintf(errstr, errstr_size, "insert payments: out of memory");
        return STORE_FAILED;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        store_row *r = row_find(sorted, n, PQgetvalue(res, i, 0));
        if (r) r->is_new = true;
    }
    free(sorted);
    PQclear(res);
    return STORE_OK;
}

/* ---- decisions ------------------------------------------------------------------------------ */

static const char SQL_LOAD_DECISIONS[] =
    "SELECT payment_id, decision, score, reasons, rules_version, coalesce(model_version, ''), "
    TO_MS("decided_at") ", scoring_latency_us "
    "FROM decisions WHERE payment_id = ANY ($1::uuid[])";

/* "{id,id,...}" of the rows that are not new (caller frees); NULL when out of memory. */
static char *old_ids_literal(store_row *const *rows, size_t n) {
    size_t len = 3, k = 0;
    for (size_t i = 0; i < n; i++) len += rows[i]->is_new ? 0 : FS_UUID_STRLEN + 1;
    char *s = malloc(len);
    if (!s) return NULL;
    s[k++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (rows[i]->is_new) continue;
        if (k > 1) s[k++] = ',';
        memcpy(s + k, rows[i]->p->payment_id, FS_UUID_STRLEN);
        k += FS_UUID_STRLEN;
    }
    s[k++] = '}';
    s[k] = '\0';
    return s;
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
    char *ids = old_ids_literal(rows, n);
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
        r->has_decision = true;
        /* its alert goes out again with the same id */
        if (strcmp(r->dec.decision, "allow") != 0) store_alert_id(r->p->payment_id, r->alert_id);
    }
    free(sorted);
    PQclear(res);
    return rc;
}

static const char SQL_INSERT_DECISIONS[] =
    "INSERT INTO decisions (payment_id, decision, score, reasons, features, rules_version,"
    " model_version, scorer_id, scoring_latency_us, decided_at) "
    "SELECT x.payment_id, x.decision, x.score, x.reasons, x.features, x.rules_version,"
    " x.model_version, $2, x.scoring_latency_us, " EPOCH_MS("x.decided_at_ms") " "
    "FROM jsonb_to_recordset($1::jsonb) AS x(payment_id uuid, decision text, score smallint,"
    " reasons jsonb, features jsonb, rules_version text, model_version text,"
    " scoring_latency_us integer, decided_at_ms bigint) "
    "ORDER BY x.payment_id "
    "ON CONFLICT (payment_id) DO NOTHING";

static json_t *decision_json(const store_row *r) {
    const store_decision *d = &r->dec;
    json_t *o = json_pack("{s:s, s:s, s:i, s:O, s:O, s:s, s:I, s:I}", "payment_id",
                          r->p->payment_id, "decision", d->decision, "score", d->score, "reasons",
                          d->reasons ? d->reasons : json_null(), "features",
                          d->features ? d->features : json_null(), "rules_version",
                          d->rules_version, "scoring_latency_us",
                          (json_int_t)(d->scoring_latency_us > INT32_MAX ? INT32_MAX
                                                                         : d->scoring_latency_us),
                          "decided_at_ms", (json_int_t)d->decided_at_ms);
    if (o) set_str(o, "model_version", d->model_version);
    return o;
}

store_rc store_insert_decisions(store *st, store_row *const *rows, size_t n, const char *scorer_id,
                                char *errstr, size_t errstr_size) {
    if (n == 0) return STORE_OK;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, decision_json(rows[i]));
    return exec_json(st, SQL_INSERT_DECISIONS, arr, scorer_id, PGRES_COMMAND_OK,
                     "insert decisions", NULL, errstr, errstr_size);
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

/* The primary key index (entity_kind, entity_key, event_time, payment_id) serves each range. */
static const char SQL_LOAD_VELOCITY[] =
    "SELECT v.entity_kind, v.entity_key, " TO_MS("v.event_time") ", v.user_id, v.amount_minor "
    "FROM jsonb_to_recordset($1::jsonb) AS r(k text, e text, lo bigint, hi bigint) "
    "JOIN velocity_events v ON v.entity_kind = r.k AND v.entity_key = r.e"
    " AND v.event_time > " EPOCH_MS("r.lo") " AND v.event_time <= " EPOCH_MS("r.hi");

static int entity_parse(const char *name, rules_entity *out) {
    for (int e = 0; e < RULES_ENT_COUNT; e++) {
        if (strcmp(rules_entity_name((rules_entity)e), name) == 0) {
            *out = (rules_entity)e;
            return 0;
        }
    }
    return -1;
}

static int velocity_add_rows(velocity *v, const PGresult *res) {
    for (int i = 0; i < PQntuples(res); i++) {
        velocity_event e = {0};
        if (entity_parse(PQgetvalue(res, i, 0), &e.entity) != 0) continue; /* a kind we dropped */
        e.key = PQgetvalue(res, i, 1);
        e.time_ms = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        e.user_id = PQgetvalue(res, i, 3);
        e.amount_minor = strtoll(PQgetvalue(res, i, 4), NULL, 10);
        if (velocity_add(v, &e) != 0) return -1; /* copies the strings out of res */
    }
    return 0;
}

store_rc store_load_velocity(store *st, const velocity_range *rg, size_t n, velocity *v,
                             char *errstr, size_t errstr_size) {
    if (n == 0) return STORE_OK;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I}", "k",
                                             rules_entity_name(rg[i].entity), "e", rg[i].key, "lo",
                                             (json_int_t)rg[i].from_ms, "hi",
                                             (json_int_t)rg[i].to_ms));
    PGresult *res = NULL;
    store_rc rc = exec_json(st, SQL_LOAD_VELOCITY, arr, NULL, PGRES_TUPLES_OK, "load velocity",
                            &res, errstr, errstr_size);
    if (rc != STORE_OK) return rc;
    if (velocity_add_rows(v, res) != 0) {
        snprintf(errstr, errstr_size, "load velocity: out of memory");
        rc = STORE_FAILED;
    }
    PQclear(res);
    return rc;
}

static const char SQL_INSERT_VELOCITY[] =
    "INSERT INTO velocity_events (entity_kind, entity_key, event_time, payment_id, user_id,"
    " amount_minor) "
    "SELECT x.k, x.e, " EPOCH_MS("x.t") ", x.p, x.u, x.a "
    "FROM jsonb_to_recordset($1::jsonb) AS x(k text, e text, t bigint, p uuid, u text, a bigint) "
    "ORDER BY 1, 2, 3, 4 "
    "ON CONFLICT DO NOTHING";

store_rc store_insert_velocity(store *st, const velocity_event *ev, size_t n, char *errstr,
                               size_t errstr_size) {
    if (n == 0) return STORE_OK;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:s, s:s, s:I}", "k",
                                             rules_entity_name(ev[i].entity), "e", ev[i].key, "t",
                                             (json_int_t)ev[i].time_ms, "p", ev[i].payment_id, "u",
                                             ev[i].user_id, "a", (json_int_t)ev[i].amount_minor));
    return exec_json(st, SQL_INSERT_VELOCITY, arr, NULL, PGRES_COMMAND_OK, "insert velocity", NULL,
                     errstr, errstr_size);
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
