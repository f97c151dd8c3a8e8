/* retention: prune rounds over the alerter's tables (see retention.h). */
#include "retention.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "fsutil.h"
#include "log.h"

/* The tables, in the order of fs_alerter_retention_deleted_total's series and of counts[]. */
enum { T_DELIVERIES, T_ATTEMPTS, T_EVENTS, T_OUTBOX, T_COUNT };
static const char *const TABLES[T_COUNT] = {"deliveries", "delivery_attempts", "alert_events", "outbox"};

/* One statement per phase; $1 retention-days, $2 the slice. Each returns the rows it deleted per
 * table, in TABLES order from the phase's first table. No ORDER BY: any old rows will do, and
 * without it an index scan stops at the LIMIT instead of sorting every old row at each slice.
 * FOR UPDATE SKIP LOCKED: rows a claim, a re-drive or the outbox pump holds are left for a later
 * round, and a concurrent prune takes other rows. The state and produced_at conditions are
 * re-checked on the locked row (a delivery re-driven meanwhile is pending again: not taken). */
static const char SQL_DELIVERIES[] =
    "WITH v AS (SELECT delivery_id FROM deliveries "
    "           WHERE state IN ('delivered', 'failed') "
    "             AND finished_at < now() - $1::int * interval '1 day' "
    "           LIMIT $2::int FOR UPDATE SKIP LOCKED), "
    "a AS (DELETE FROM delivery_attempts t USING v WHERE t.delivery_id = v.delivery_id RETURNING 1), "
    "d AS (DELETE FROM deliveries t USING v WHERE t.delivery_id = v.delivery_id RETURNING 1) "
    "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM a)";

/* An event with a delivery left (pending, or finished within retention) stays. OFFSET 0 keeps
 * the NOT EXISTS a per-row index probe (deliveries (event_id, subscription_id)): as an anti join
 * the planner may hash the whole deliveries table at every slice (measured: 0.3 s for 200k rows,
 * growing with the table) where 500 probes of the oldest events are enough (54 ms). Each round's
 * last slice still probes every old event that keeps a delivery: normally few (pending ones). */
static const char SQL_EVENTS[] =
    "WITH v AS (SELECT event_id FROM alert_events e "
    "           WHERE created_at < now() - $1::int * interval '1 day' "
    "             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id OFFSET 0) "
    "           LIMIT $2::int FOR UPDATE SKIP LOCKED), "
    "x AS (DELETE FROM alert_events t USING v WHERE t.event_id = v.event_id RETURNING 1) "
    "SELECT count(*) FROM x";

static const char SQL_OUTBOX[] =
    "WITH v AS (SELECT outbox_id FROM outbox "
    "           WHERE produced_at IS NOT NULL "
    "             AND produced_at < now() - $1::int * interval '1 day' "
    "           LIMIT $2::int FOR UPDATE SKIP LOCKED), "
    "x AS (DELETE FROM outbox t USING v WHERE t.outbox_id = v.outbox_id RETURNING 1) "
    "SELECT count(*) FROM x";

struct retention {
    int days;
    int64_t interval_us;
    int64_t due_us;
    bool in_round;
    retention_phase phase;
    int64_t round_start_us;
    int64_t counts[T_COUNT];  /* this round's */
    metric *m_deleted;
};

int retention_check_days(int64_t days, char *errstr, size_t errstr_size) {
    if (days == 0 || days >= RETENTION_MIN_DAYS) return 0;
    snprintf(errstr, errstr_size,
             "retention-days: 0 (keep forever) or at least %d, not %" PRId64 ": alert_events "
             "recognise a redelivered fraud_alerts message and must outlive the topic's retention "
             "(7 days by default), or an old message consumed again is delivered again",
             RETENTION_MIN_DAYS, days);
    return -1;
}

retention_phase retention_next_phase(retention_phase p, int64_t deleted, int64_t slice) {
    if (p >= RETENTION_DONE) return RETENTION_DONE;
    return deleted >= slice ? p : (retention_phase)(p + 1);
}

retention *retention_new(int days, int interval_s, metrics *m) {
    retention *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->days = days;
    r->interval_us = (int64_t)interval_s * 1000000;
    r->due_us = days > 0 ? fs_mono_us() : INT64_MAX;
    r->phase = RETENTION_DONE;
    if (m) {
        r->m_deleted = metrics_counter(m, "fs_alerter_retention_deleted_total",
                                       "Rows deleted by retention (older than retention-days), by table",
                                       "table");
        for (int t = 0; t < T_COUNT; t++) metric_add(r->m_deleted, TABLES[t], 0);
    }
    return r;
}

int64_t retention_due_us(const retention *r) { return r->due_us; }

/* One slice of the current phase: adds to the round's counts and the metric. Returns the rows
 * deleted from the phase's main table, or -1 with errstr. */
static int64_t retention_slice(retention *r, PGconn *conn, int timeout_ms, char *errstr, size_t n) {
    static const struct { const char *sql; int first, ncols; } phases[] = {
        [RETENTION_DELIVERIES] = {SQL_DELIVERIES, T_DELIVERIES, 2},
        [RETENTION_EVENTS] = {SQL_EVENTS, T_EVENTS, 1},
        [RETENTION_OUTBOX] = {SQL_OUTBOX, T_OUTBOX, 1},
    };
    char days[16], slice[16];
    snprintf(days, sizeof days, "%d", r->days);
    snprintf(slice, sizeof slice, "%d", RETENTION_SLICE);
    const char *params[2] = {days, slice};
    PGresult *res = db_query(conn, timeout_ms, phases[r->phase].sql, 2, params, NULL, NULL);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        db_error(conn, res, errstr, n);
        PQclear(res);
        return -1;
    }
    int64_t main_rows = 0;
    for (int c = 0; c < phases[r->phase].ncols; c++) {
        int t = phases[r->phase].first + c;
        int64_t v = strtoll(PQgetvalue(res, 0, c), NULL, 10);
        if (c == 0) main_rows = v;
        r->counts[t] += v;
        metric_add(r->m_deleted, TABLES[t], (double)v);
    }
    PQclear(res);
    return main_rows;
}

static void retention_round_done(retention *r) {
    int64_t total = 0;
    for (int t = 0; t < T_COUNT; t++) total += r->counts[t];
    r->in_round = false;
    r->due_us = r->round_start_us + r->interval_us;
    if (total == 0) return;
    log_fields(LOG_INFO, "retention_pruned",
               json_pack("{s:I, s:I, s:I, s:I, s:i, s:I}", "deliveries", (json_int_t)r->counts[T_DELIVERIES],
                         "delivery_attempts", (json_int_t)r->counts[T_ATTEMPTS], "alert_events",
                         (json_int_t)r->counts[T_EVENTS], "outbox", (json_int_t)r->counts[T_OUTBOX],
                         "retention_days", r->days,
                         "duration_ms", (json_int_t)((fs_mono_us() - r->round_start_us) / 1000)),
               "retention: deleted %" PRId64 " row(s) older than %d days", total, r->days);
}

int retention_run(retention *r, PGconn *conn, int timeout_ms, int budget_ms, char *errstr,
                  size_t errstr_size) {
    int64_t now = fs_mono_us(), until = now + (int64_t)budget_ms * 1000;
    if (r->days <= 0 || now < r->due_us) return 0;
    if (!r->in_round) {
        r->in_round = true;
        r->phase = RETENTION_DELIVERIES;
        r->round_start_us = now;
        for (int t = 0; t < T_COUNT; t++) r->counts[t] = 0;
    }
    while (r->phase != RETENTION_DONE && fs_mono_us() < until) {
        int64_t deleted = retention_slice(r, conn, timeout_ms, errstr, errstr_size);
        if (deleted < 0) { /* abandoned; what it deleted so far is counted */
            r->in_round = false;
            r->due_us = fs_mono_us() + r->interval_us;
            return -1;
        }
        r->phase = retention_next_phase(r->phase, deleted, RETENTION_SLICE);
    }
    if (r->phase == RETENTION_DONE) retention_round_done(r);
    else r->due_us = fs_mono_us(); /* more to do: at the next call, after the loop's other work */
    return 0;
}

void retention_destroy(retention *r) { free(r); }
