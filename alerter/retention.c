/* retention: prune rounds over the alerter's tables (see retention.h); the rounds themselves are
 * common/sweep.c. */
#include "retention.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "sweep.h"

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

/* Phase -> its statement and its counts (sweep.h). */
static const char *const SQL[] = {
    [RETENTION_DELIVERIES] = SQL_DELIVERIES,
    [RETENTION_EVENTS] = SQL_EVENTS,
    [RETENTION_OUTBOX] = SQL_OUTBOX,
};
static const sweep_phase PHASES[] = {
    [RETENTION_DELIVERIES] = {T_DELIVERIES, 2},
    [RETENTION_EVENTS] = {T_EVENTS, 1},
    [RETENTION_OUTBOX] = {T_OUTBOX, 1},
};
static const sweep_spec SPEC = {
    .metric = "fs_alerter_retention_deleted_total",
    .help = "Rows deleted by retention (older than retention-days), by table",
    .tables = TABLES,
    .ntables = T_COUNT,
    .phases = PHASES,
    .nphases = RETENTION_DONE,
    .slice = RETENTION_SLICE,
};

struct retention {
    sweep *sw;
};

/* A slice's statement on the dispatcher's connection. */
typedef struct slice_conn {
    PGconn *conn;
    int timeout_ms;
} slice_conn;

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
    return (retention_phase)sweep_next_phase(p, RETENTION_DONE, deleted, slice);
}

retention *retention_new(int days, int interval_s, metrics *m) {
    retention *r = calloc(1, sizeof *r);
    if (r && !(r->sw = sweep_new(&SPEC, days, interval_s, m))) {
        free(r);
        return NULL;
    }
    return r;
}

int64_t retention_due_us(const retention *r) { return sweep_due_us(r->sw); }

/* The rows of the phase's main table it deleted decide whether it goes on (sweep.h). */
static int64_t retention_slice(void *arg, int phase, int days, int slice, int64_t *counts,
                               char *errstr, size_t n) {
    const slice_conn *c = arg;
    char d[16], l[16];
    snprintf(d, sizeof d, "%d", days);
    snprintf(l, sizeof l, "%d", slice);
    const char *params[2] = {d, l};
    PGresult *res = db_query(c->conn, c->timeout_ms, SQL[phase], 2, params, NULL, NULL);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        db_error(c->conn, res, errstr, n);
        PQclear(res);
        return -1;
    }
    for (int col = 0; col < PHASES[phase].ncols; col++)
        counts[col] = strtoll(PQgetvalue(res, 0, col), NULL, 10);
    PQclear(res);
    return counts[0];
}

int retention_run(retention *r, PGconn *conn, int timeout_ms, int budget_ms, char *errstr,
                  size_t errstr_size) {
    slice_conn c = {conn, timeout_ms};
    return sweep_run(r->sw, retention_slice, &c, budget_ms, errstr, errstr_size);
}

void retention_destroy(retention *r) {
    if (!r) return;
    sweep_destroy(r->sw);
    free(r);
}
