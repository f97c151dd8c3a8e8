/* db: PostgreSQL connection helpers and embedded schema migrations (see db.h). */
#include "db.h"

#include <errno.h>
#include <limits.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "app.h"
#include "fsutil.h"
#include "log.h"

/* Arbitrary constant: the advisory lock key that serializes migrations across processes. */
#define DB_MIGRATION_LOCK 0x46534D4947LL /* "FSMIG" */

/* A statement's error: its severity and primary message, then SQLSTATE, constraint and column
 * when PostgreSQL names them. Never DETAIL or CONTEXT: they quote the row ("Failing row contains
 * (...)", "Key (...)=(...)"), and these messages go to logs and to dead letters' dlq_error. */
static void db_result_error(const PGresult *res, char *errstr, size_t errstr_size) {
    char *m = PQresultVerboseErrorMessage(res, PQERRORS_TERSE, PQSHOW_CONTEXT_NEVER);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    const char *col = PQresultErrorField(res, PG_DIAG_COLUMN_NAME);
    int n = snprintf(errstr, errstr_size, "%s", m ? m : "unknown error");
    if (m) PQfreemem(m);
    if (n < 0 || (size_t)n >= errstr_size) return;
    while (n > 0 && (errstr[n - 1] == '\n' || errstr[n - 1] == ' ')) errstr[--n] = '\0';
    snprintf(errstr + n, errstr_size - (size_t)n, " (SQLSTATE %s%s%s%s%s)", state ? state : "?",
             cons ? ", constraint " : "", cons ? cons : "", col ? ", column " : "", col ? col : "");
}

void db_error(PGconn *conn, const PGresult *res, char *errstr, size_t errstr_size) {
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    if (m && *m) db_result_error(res, errstr, errstr_size);
    else snprintf(errstr, errstr_size, "%s", conn ? PQerrorMessage(conn) : "no connection");
    for (char *p = errstr; *p; p++) /* one log line per error */
        if (*p == '\n' || *p == '\r') *p = ' ';
    size_t n = strlen(errstr);
    while (n > 0 && errstr[n - 1] == ' ') errstr[--n] = '\0';
}

/* Notices go to our logger, not libpq's stderr print: NOTICE and below ("relation already exists,
 * skipping") at debug, a WARNING (a migration that could not do everything, e.g. create a role)
 * at warn, where an operator sees it. */
static void db_notice(void *arg, const PGresult *res) {
    (void)arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *message = PQresultErrorMessage(res);
    bool warning = severity && strcmp(severity, "WARNING") == 0;
    log_msg(warning ? LOG_WARN : LOG_DEBUG, warning ? "pg_warning" : "pg_notice", "%.*s",
            (int)strcspn(message, "\n"), message);
}

/* TCP defaults, placed BEFORE dbname so that the URL (expanded from dbname) overrides them: a
 * PostgreSQL host that vanishes (crash, partition, failover) without closing the connection would
 * otherwise leave a statement waiting for the kernel's defaults (hours). Keepalives probe an idle
 * connection after 30 s (then every 10 s, 3 probes); tcp_user_timeout bounds unacknowledged data
 * to 30 s. Neither helps when the host's kernel still acknowledges but the server does not answer
 * (a stopped process): db_query()'s deadline covers that. */
int db_url_check(const char *url, char *errstr, size_t errstr_size) {
    char *err = NULL;
    /* neither a URL nor key=value: libpq takes the whole string as a database name */
    if (!strstr(url, "://") && !strchr(url, '=')) return 0;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    if (opts) {
        PQconninfoFree(opts);
        return 0;
    }
    if (err) PQfreemem(err);
    snprintf(errstr, errstr_size, "database-url is not a valid PostgreSQL URL or connection string "
             "(libpq's message is left out: it may quote the password; check percent-encoding and "
             "parameter names)");
    return -1;
}

PGconn *db_connect(const char *url, const char *application_name, char *errstr, size_t errstr_size) {
    if (db_url_check(url, errstr, errstr_size) != 0) return NULL;
    const char *keys[] = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                          "tcp_user_timeout", "dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {"1", "30", "10", "3", "30000", url, application_name, "5", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1 /* expand dbname as a URL */);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        db_error(conn, NULL, errstr, errstr_size);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeReceiver(conn, db_notice, NULL);
    return conn;
}

/* Waits until conn's socket is ready for events or the deadline (monotonic us). 1 ready, 0 time up,
 * -1 error. */
static int db_wait(PGconn *conn, short events, int64_t deadline_us) {
    for (;;) {
        int64_t left_ms = (deadline_us - fs_mono_us() + 999) / 1000;
        if (left_ms <= 0) return 0;
        struct pollfd p = {.fd = PQsocket(conn), .events = events};
        int n = poll(&p, 1, left_ms > INT_MAX ? INT_MAX : (int)left_ms);
        if (n > 0) return 1;
        if (n < 0 && errno != EINTR) return -1;
    }
}

/* No answer in time: the connection is closed under libpq (it sees end of file and marks the
 * connection bad; callers reconnect). db_query sends no cancel request first: it needs a new
 * connection to the same server that may not answer, and PQcancel has no timeout (migrations do,
 * from a thread: db_await_or_cancel). timeout_ms < 0: poll() failed, no log line. */
static void db_abandon(PGconn *conn, int timeout_ms) {
    if (timeout_ms >= 0) /* else poll() itself failed: dropped too, libpq reports the lost connection */
        log_fields(LOG_ERROR, "db_timeout", json_pack("{s:i}", "timeout_ms", timeout_ms),
                   "PostgreSQL did not answer within %d ms: connection dropped", timeout_ms);
    shutdown(PQsocket(conn), SHUT_RDWR);
    PQconsumeInput(conn);
}

/* Flushes what libpq holds for the server, within the deadline (only a non-blocking connection
 * holds any: a blocking one flushed in the call that queued it); input is consumed meanwhile, as
 * libpq asks (the server may be sending an error). 0 or -1. */
static int db_flush_within(PGconn *conn, int64_t deadline_us, int timeout_ms) {
    for (int f; (f = PQflush(conn)) != 0;) {
        if (f < 0) return -1;
        int w = db_wait(conn, POLLIN | POLLOUT, deadline_us);
        if (w <= 0) return db_abandon(conn, w == 0 ? timeout_ms : -1), -1;
        if (!PQconsumeInput(conn)) return -1;
    }
    return 0;
}

/* Sends the query and flushes it, within the deadline (single_row: libpq's single-row mode, which
 * must be asked for before anything else happens on the connection; refused only when misused, and
 * the rows then come in one result, which callers take the same way). 0, or -1 (time up:
 * abandoned; or error). */
static int db_send(PGconn *conn, int64_t deadline_us, int timeout_ms, const char *sql, int nparams,
                   const char *const *params, const int *lens, const int *fmts, bool single_row) {
    int ok = nparams ? PQsendQueryParams(conn, sql, nparams, NULL, params, lens, fmts, 0)
                     : PQsendQuery(conn, sql);
    if (!ok) return -1;
    if (single_row) (void)PQsetSingleRowMode(conn);
    return db_flush_within(conn, deadline_us, timeout_ms);
}

/* Waits (within the deadline) until a result can be taken without blocking. 0 (also when the
 * connection failed: PQgetResult then reports it), 1 time up, -1 poll() failed. */
static int db_ready_within(PGconn *conn, int64_t deadline_us) {
    while (PQstatus(conn) == CONNECTION_OK && PQisBusy(conn)) {
        int w = db_wait(conn, POLLIN, deadline_us);
        if (w <= 0) return w == 0 ? 1 : -1;
        if (!PQconsumeInput(conn)) return 0;
    }
    return 0;
}

/* db_ready_within, abandoning the connection when the time is up or poll() failed. 0 or -1. */
static int db_await_result(PGconn *conn, int64_t deadline_us, int timeout_ms) {
    int w = db_ready_within(conn, deadline_us);
    if (w != 0) db_abandon(conn, w == 1 ? timeout_ms : -1);
    return w == 0 ? 0 : -1;
}

static void *db_cancel_main(void *arg) {
    char e[256];
    PGcancel *c = arg;
    if (!PQcancel(c, e, sizeof e))
        log_msg(LOG_WARN, "db_cancel_failed", "cancel request not sent: %.*s", (int)strcspn(e, "\n"), e);
    PQfreeCancel(c);
    return NULL;
}

/* Asks the server to cancel conn's statement, without waiting for it: PQcancel opens a new
 * connection and waits until the server closes it, with no timeout of its own (libpq 15 has no
 * non-blocking cancel), so on a server that does not answer it would never return. It runs on a
 * detached thread, which owns the PGcancel; the caller waits for the statement's answer on conn,
 * within its own deadline. false: no cancel sent (no thread, no memory). */
static bool db_cancel_async(PGconn *conn) {
    PGcancel *c = PQgetCancel(conn);
    pthread_attr_t a;
    pthread_t t;
    bool ok = false;
    if (!c || pthread_attr_init(&a) != 0) goto done;
    if (pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED) == 0 &&
        pthread_create(&t, &a, db_cancel_main, c) == 0) {
        c = NULL; /* the thread's now */
        ok = true;
    }
    pthread_attr_destroy(&a);
done:
    if (c) PQfreeCancel(c);
    return ok;
}

/* db_await_result for a statement PostgreSQL is to stop at the deadline: then a cancel request,
 * and its answer (the statement's error, or its result if it finished meanwhile) is waited for
 * grace_ms more; a server that answers neither is abandoned then (reported as not answering
 * within timeout_ms + grace_ms). *cancelled: whether the cancel was sent. */
static int db_await_or_cancel(PGconn *conn, int64_t deadline_us, int timeout_ms, int grace_ms,
                              bool *cancelled) {
    if (!*cancelled) {
        int w = db_ready_within(conn, deadline_us);
        if (w < 0) db_abandon(conn, -1);
        if (w != 1) return w == 0 ? 0 : -1;
        *cancelled = true; /* also when no cancel could be sent: the grace is waited all the same */
        if (!db_cancel_async(conn))
            log_msg(LOG_WARN, "db_cancel_failed", "could not start the cancel request");
    }
    return db_await_result(conn, deadline_us + (int64_t)grace_ms * 1000, timeout_ms + grace_ms);
}

/* db_query; with cancelled (not NULL), the statement is cancelled at the deadline and its answer
 * waited for grace_ms more (db_await_or_cancel). */
static PGresult *db_query_cancel(PGconn *conn, int timeout_ms, int grace_ms, bool *cancelled,
                                 const char *sql, int nparams, const char *const *params,
                                 const int *lens, const int *fmts) {
    int64_t deadline_us = fs_mono_us() + (int64_t)timeout_ms * 1000;
    PGresult *last = NULL, *r;
    if (!conn || PQstatus(conn) != CONNECTION_OK) return PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
    if (db_send(conn, deadline_us, timeout_ms, sql, nparams, params, lens, fmts, false) != 0)
        return PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
    /* as PQexec: the last result. Each PQgetResult only once it cannot block (several statements
     * give several results); after an abandon, libpq's error for the lost connection. */
    for (;;) {
        if (cancelled) (void)db_await_or_cancel(conn, deadline_us, timeout_ms, grace_ms, cancelled);
        else (void)db_await_result(conn, deadline_us, timeout_ms);
        if (!(r = PQgetResult(conn))) break;
        PQclear(last);
        last = r;
        if (PQstatus(conn) == CONNECTION_BAD) break;
    }
    return last ? last : PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
}

PGresult *db_query(PGconn *conn, int timeout_ms, const char *sql, int nparams,
                   const char *const *params, const int *lens, const int *fmts) {
    return db_query_cancel(conn, timeout_ms, 0, NULL, sql, nparams, params, lens, fmts);
}

/* A connection dropped once the deadline had passed: db_abandon's doing (it drops only then). */
static bool db_timed_out(const PGconn *conn, int64_t deadline_us) {
    return PQstatus(conn) == CONNECTION_BAD && fs_mono_us() >= deadline_us;
}

/* errstr for a failed round trip: DB_TIMED_OUT (abandoned at the deadline) or -1 (res's error, or
 * the connection's). */
static int db_failed(PGconn *conn, const PGresult *res, int64_t deadline_us, int timeout_ms,
                     char *errstr, size_t errstr_size) {
    if (db_timed_out(conn, deadline_us)) {
        snprintf(errstr, errstr_size, "PostgreSQL did not answer within %d ms: connection dropped",
                 timeout_ms);
        return DB_TIMED_OUT;
    }
    db_error(conn, res, errstr, errstr_size);
    return -1;
}

int db_query_rows(PGconn *conn, int timeout_ms, const char *sql, db_row_fn *row_fn, void *arg,
                  char *errstr, size_t errstr_size) {
    int64_t deadline_us = fs_mono_us() + (int64_t)timeout_ms * 1000;
    int rc = 0;
    PGresult *r;
    if (!conn || PQstatus(conn) != CONNECTION_OK ||
        db_send(conn, deadline_us, timeout_ms, sql, 0, NULL, NULL, NULL, true) != 0)
        return db_failed(conn, NULL, deadline_us, timeout_ms, errstr, errstr_size);
    /* every result, also after an error or a stop (the rest is dropped): the connection ends idle */
    for (;;) {
        (void)db_await_result(conn, deadline_us, timeout_ms);
        if (!(r = PQgetResult(conn))) break;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK)
            for (int i = 0; rc == 0 && i < PQntuples(r); i++) rc = row_fn(arg, r, i);
        else if (rc == 0)
            rc = db_failed(conn, r, deadline_us, timeout_ms, errstr, errstr_size);
        PQclear(r);
        if (PQstatus(conn) == CONNECTION_BAD) break;
    }
    if (rc == 0 && PQstatus(conn) == CONNECTION_BAD) /* lost after the last row it sent */
        rc = db_failed(conn, NULL, deadline_us, timeout_ms, errstr, errstr_size);
    return rc;
}

/* Sends the COPY data and its end on a connection in COPY IN state (non-blocking while it does:
 * a server that stops reading fills the socket buffer, and a blocking PQputCopyData would wait
 * there forever). 0, or -1 (abandoned, or an error libpq reports through PQgetResult). */
static int db_copy_data(PGconn *conn, int64_t deadline_us, int timeout_ms, const char *data,
                        size_t len) {
    if (PQsetnonblocking(conn, 1) != 0) return -1;
    int rc = -1;
    /* a slice at a time (PQputCopyData takes an int length), each flushed before the next: libpq's
     * buffer stays small, as with a blocking connection */
    for (size_t off = 0; off < len;) {
        int n = len - off > (1 << 20) ? (1 << 20) : (int)(len - off);
        int put = PQputCopyData(conn, data + off, n);
        if (put < 0 || db_flush_within(conn, deadline_us, timeout_ms) != 0) goto done;
        if (put == 1) off += (size_t)n;
    }
    for (int end; (end = PQputCopyEnd(conn, NULL)) != 1;)
        if (end < 0 || db_flush_within(conn, deadline_us, timeout_ms) != 0) goto done;
    rc = db_flush_within(conn, deadline_us, timeout_ms);
done:
    if (PQstatus(conn) == CONNECTION_OK) PQsetnonblocking(conn, 0); /* flushed: cannot block */
    return rc;
}

PGresult *db_copy_in(PGconn *conn, int timeout_ms, const char *copy_sql, const char *data,
                     size_t len) {
    int64_t deadline_us = fs_mono_us() + (int64_t)timeout_ms * 1000;
    PGresult *last = NULL, *r;
    if (!conn || PQstatus(conn) != CONNECTION_OK) return PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
    if (db_send(conn, deadline_us, timeout_ms, copy_sql, 0, NULL, NULL, NULL, false) != 0)
        return PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
    bool sent = false;
    /* COPY_IN first (then the data; then the COPY's own result), or an error result at once */
    for (;;) {
        (void)db_await_result(conn, deadline_us, timeout_ms);
        if (!(r = PQgetResult(conn))) break;
        if (PQresultStatus(r) == PGRES_COPY_IN) {
            PQclear(r);
            /* once; data that could not be sent leaves the connection mid-COPY: dropped too */
            if ((sent || db_copy_data(conn, deadline_us, timeout_ms, data, len) != 0) &&
                PQstatus(conn) == CONNECTION_OK)
                db_abandon(conn, -1);
            sent = true;
            continue;
        }
        if (!last || PQresultStatus(last) == PGRES_COMMAND_OK) {
            PQclear(last);
            last = r; /* the first failure wins */
        } else {
            PQclear(r);
        }
        if (PQstatus(conn) == CONNECTION_BAD) break;
    }
    if (PQstatus(conn) == CONNECTION_BAD && last && PQresultStatus(last) == PGRES_COMMAND_OK) {
        PQclear(last); /* the connection failed after the COPY said done: not done for us */
        last = NULL;
    }
    return last ? last : PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
}

int db_exec_within(PGconn *conn, int timeout_ms, const char *sql, char *errstr, size_t errstr_size) {
    PGresult *res = db_query(conn, timeout_ms, sql, 0, NULL, NULL, NULL);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok) db_error(conn, res, errstr, errstr_size);
    PQclear(res);
    return ok ? 0 : -1;
}

int db_server_timeout(PGconn *conn, int timeout_ms, char *errstr, size_t errstr_size) {
    char set[64];
    snprintf(set, sizeof set, "SET statement_timeout = %d", timeout_ms);
    if (db_exec_within(conn, timeout_ms, set, errstr, errstr_size) != 0) return -1;
    return timeout_ms + DB_CANCEL_GRACE_MS;
}

bool db_is_data_error(const PGresult *res) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
}

/* ---- migrations ------------------------------------------------------------------------------ */

/* A migration round trip (a whole migration's text is one) still running at db_migrate's
 * timeout_ms is cancelled by the client (a cancel request: the work stops, is rolled back and its
 * locks go at once). statement_timeout, also set, times each statement alone (PostgreSQL 13+ even
 * within one query string): it stops a single long statement, not a migration of many shorter
 * ones. The cancel's answer is waited for DB_CANCEL_GRACE_MS; a server that does not answer it
 * either is abandoned (the connection dropped). */
/* Between two tries of the advisory lock while another process migrates. */
#define DB_MIGRATE_POLL_NS 200000000L

/* One db_migrate call: its connection, limits and error buffer. */
typedef struct migrate_run {
    PGconn *conn;
    int timeout_ms, lock_timeout_ms; /* db_migrate's (0: none) */
    int cancel_ms, grace_ms;         /* a round trip is cancelled at cancel_ms, dropped grace_ms later */
    int trip_ms;                     /* cancel_ms + grace_ms: the client-side deadline */
    char *errstr;
    size_t errstr_size;
} migrate_run;

/* Sessions of this database other than ours in a transaction opened more than %d ms ago: those
 * that can hold the lock a migration waited for, oldest first. */
static const char SQL_LOCK_SUSPECTS[] =
    "SELECT string_agg(format('pid %%s (%%s, %%s, in a transaction for %%s s)', pid, "
    "coalesce(nullif(application_name, ''), 'no application_name'), coalesce(state, '?'), "
    "extract(epoch FROM now() - xact_start)::bigint), '; ' ORDER BY xact_start) "
    "FROM (SELECT * FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND xact_start < now() - %d * interval '1 millisecond' "
    "ORDER BY xact_start LIMIT 5) s";

/* The session holding the advisory lock %u/%u (a bigint key shows as its high and low halves). */
static const char SQL_LOCK_HOLDER[] =
    "SELECT format('pid %%s (%%s, %%s, connected %%s s ago)', a.pid, "
    "coalesce(nullif(a.application_name, ''), 'no application_name'), coalesce(a.state, '?'), "
    "extract(epoch FROM now() - a.backend_start)::bigint) "
    "FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND "
    "l.granted AND l.classid = %u AND l.objid = %u AND l.objsubid = 1 AND "
    "l.database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/* Rolls back the transaction the migration opened, if it is still open: a second ROLLBACK would
 * draw the WARNING "there is no transaction in progress". */
static void mig_rollback(migrate_run *r) {
    char ignored[256];
    PGTransactionStatusType ts = PQtransactionStatus(r->conn);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
        db_exec_within(r->conn, r->trip_ms, "ROLLBACK", ignored, sizeof ignored);
}

/* The first text cell of sql's result into out (unchanged when there is none). */
static void mig_text(migrate_run *r, const char *sql, char *out, size_t out_size) {
    PGresult *res = db_query(r->conn, r->trip_ms, sql, 0, NULL, NULL, NULL);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        snprintf(out, out_size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* A lock another session holds was not granted within lock_timeout: nothing of the transaction
 * stays (rolled back here, so that the sessions can be looked up), and the likely holders are
 * named with what to do. */
static void mig_lock_timeout(migrate_run *r, const char *what, const char *e) {
    char sql[sizeof SQL_LOCK_SUSPECTS + 16], who[512] = "none left (the lock may be free now)";
    mig_rollback(r);
    snprintf(sql, sizeof sql, SQL_LOCK_SUSPECTS, r->lock_timeout_ms);
    mig_text(r, sql, who, sizeof who);
    snprintf(r->errstr, r->errstr_size,
             "%s: waited longer than db-migrate-lock-timeout-ms (%d ms) for a lock another session "
             "holds (%s); nothing of it was applied. Sessions in a transaction for longer than that: "
             "%s. End that transaction (or SELECT pg_terminate_backend(pid)) and start again, or "
             "raise db-migrate-lock-timeout-ms",
             what, r->lock_timeout_ms, e, who);
}

/* errstr for a failed migration round trip that started at t0_us (cancelled: by us, at the
 * deadline): "<what>: <why>", and what to do for the deadlines' failures. */
static void mig_explain(migrate_run *r, const char *what, const PGresult *res, int64_t t0_us,
                        bool cancelled) {
    char e[512];
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int64_t ms = (fs_mono_us() - t0_us) / 1000;
    if (db_timed_out(r->conn, t0_us + (int64_t)r->trip_ms * 1000)) {
        snprintf(r->errstr, r->errstr_size,
                 "%s: PostgreSQL did not answer within %d ms (db-migrate-timeout-ms + %d ms): "
                 "connection dropped; is the server stopped or overloaded?",
                 what, r->trip_ms, DB_CANCEL_GRACE_MS);
        return;
    }
    db_error(r->conn, res, e, sizeof e);
    if (state && strcmp(state, "55P03") == 0)
        mig_lock_timeout(r, what, e);
    else if (state && strcmp(state, "57014") == 0 && r->timeout_ms > 0 &&
             (cancelled || ms >= r->timeout_ms)) /* our cancel, or statement_timeout */
        snprintf(r->errstr, r->errstr_size,
                 "%s ran longer than db-migrate-timeout-ms (%d ms): cancelled and rolled back; "
                 "raise db-migrate-timeout-ms (0: no limit) and start again (%s)",
                 what, r->timeout_ms, e);
    else
        snprintf(r->errstr, r->errstr_size, "%s: %s", what, e);
}

/* Runs sql (nparams text parameters) within the run's deadline (cancelled at cancel_ms). 0 with
 * the result in *out (NULL: cleared), or -1 with errstr (mig_explain). */
static int mig_exec(migrate_run *r, const char *what, const char *sql, int nparams,
                    const char *const *params, PGresult **out) {
    int64_t t0 = fs_mono_us();
    bool cancelled = false;
    PGresult *res = db_query_cancel(r->conn, r->cancel_ms, r->grace_ms, &cancelled, sql, nparams,
                                    params, NULL, NULL);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (out) *out = res;
        else PQclear(res);
        return 0;
    }
    mig_explain(r, what, res, t0, cancelled);
    PQclear(res);
    return -1;
}

/* Who holds the migration lock, into out. */
static void mig_lock_holder(migrate_run *r, char *out, size_t out_size) {
    char sql[sizeof SQL_LOCK_HOLDER + 32];
    snprintf(out, out_size, "unknown (released meanwhile)");
    snprintf(sql, sizeof sql, SQL_LOCK_HOLDER, (unsigned)((uint64_t)DB_MIGRATION_LOCK >> 32),
             (unsigned)((uint64_t)DB_MIGRATION_LOCK & 0xffffffffu));
    mig_text(r, sql, out, out_size);
}

#define MIGRATE_WAIT_WARN_US (10 * 1000000LL)

/* Takes the advisory lock that serializes migrations. While another process holds it (it is
 * migrating, or hangs), tries again every 200 ms for at most timeout_ms (0: for ever), then fails
 * naming the holder. 0 or -1 with errstr. */
static int mig_lock(migrate_run *r) {
    char sql[64], holder[512];
    int64_t t0 = fs_mono_us();
    snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%lld)", DB_MIGRATION_LOCK);
    /* Info at once (processes starting together wait for each other's check, the normal case);
     * a warning when the wait passes MIGRATE_WAIT_WARN_US (a long migration, or a hung holder). */
    for (int logged = 0;;) {
        PGresult *res;
        if (mig_exec(r, "the migration lock", sql, 0, NULL, &res) != 0) return -1;
        bool got = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        if (got) return 0;
        /* SIGTERM while another process migrates: stop now */
        if (atomic_load(&app_stop_requested)) {
            snprintf(r->errstr, r->errstr_size, "stopped while waiting for the migration lock");
            return -1;
        }
        int64_t waited = fs_mono_us() - t0;
        bool late = r->timeout_ms > 0 && waited >= (int64_t)r->timeout_ms * 1000;
        int due = waited >= MIGRATE_WAIT_WARN_US ? 2 : 1;
        if (logged < due || late) mig_lock_holder(r, holder, sizeof holder);
        if (logged < due)
            log_fields(due == 2 ? LOG_WARN : LOG_INFO, "migration_lock_wait",
                       json_pack("{s:s, s:I}", "holder", holder, "waited_ms", (json_int_t)(waited / 1000)),
                       "another process holds the migration lock: waiting for it (at most "
                       "db-migrate-timeout-ms, %d ms; 0: no limit)", r->timeout_ms);
        logged = due;
        if (late) {
            snprintf(r->errstr, r->errstr_size,
                     "another process has held the migration lock for longer than "
                     "db-migrate-timeout-ms (%d ms): %s. If it is migrating (its log names the "
                     "migration), start again once it is done or raise db-migrate-timeout-ms; if "
                     "it hangs, end its session (SELECT pg_terminate_backend(pid))",
                     r->timeout_ms, holder);
            return -1;
        }
        nanosleep(&(struct timespec){0, DB_MIGRATE_POLL_NS}, NULL);
    }
}

/* The SHA-256 (hex) of a migration's text, recorded when it is applied. */
static void migration_sha256(const db_migration *m, char out[2 * SHA256_DIGEST_LENGTH + 1]) {
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)m->sql, strlen(m->sql), md);
    fs_hex(md, sizeof md, out);
}

/* 1 when m was applied (its recorded checksum into sum, "" when recorded before checksums), 0
 * when not, -1 on error. */
static int migration_applied(migrate_run *r, const db_migration *m, char *sum, size_t sum_size) {
    const char *params[] = {m->name};
    PGresult *res;
    if (mig_exec(r, "schema_migrations",
                 "SELECT coalesce(sha256, '') FROM schema_migrations WHERE name = $1", 1, params,
                 &res) != 0)
        return -1;
    int rc = PQntuples(res) > 0;
    if (rc) snprintf(sum, sum_size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

/* An applied migration must be the text this build carries: a migration edited after it was
 * applied leaves databases that ran the old text with a different schema than new ones, which
 * shows up later as errors no retry can fix. Rows from before checksums adopt the current one. */
static int migration_verify(migrate_run *r, const db_migration *m, const char *recorded) {
    char sum[2 * SHA256_DIGEST_LENGTH + 1];
    migration_sha256(m, sum);
    if (recorded[0] && strcmp(recorded, sum) != 0) {
        snprintf(r->errstr, r->errstr_size,
                 "migration %s was changed after this database applied it (recorded sha256 %.12s, "
                 "this build %.12s): restore its text and put the change in a new migration "
                 "(a throwaway development database: drop it and start again)",
                 m->name, recorded, sum);
        return -1;
    }
    if (recorded[0]) return 0;
    const char *params[] = {sum, m->name};
    return mig_exec(r, "schema_migrations", "UPDATE schema_migrations SET sha256 = $1 WHERE name = $2",
                    2, params, NULL);
}

/* m's text and its schema_migrations row, in one transaction. */
static int migration_apply(migrate_run *r, const db_migration *m) {
    char what[96];
    char sum[2 * SHA256_DIGEST_LENGTH + 1];
    int64_t t0 = fs_mono_us();
    migration_sha256(m, sum);
    const char *params[] = {m->name, sum};
    snprintf(what, sizeof what, "migration %s", m->name);
    if (mig_exec(r, what, "BEGIN", 0, NULL, NULL) != 0) return -1;
    if (mig_exec(r, what, m->sql, 0, NULL, NULL) != 0 ||
        mig_exec(r, what, "INSERT INTO schema_migrations (name, sha256) VALUES ($1, $2)", 2, params,
                 NULL) != 0 ||
        mig_exec(r, what, "COMMIT", 0, NULL, NULL) != 0) {
        mig_rollback(r); /* unless done already (mig_lock_timeout), or the connection is lost */
        return -1;
    }
    log_msg(LOG_INFO, "migration_applied", "applied migration %s in %.1f s", m->name,
            (double)(fs_mono_us() - t0) / 1e6);
    return 0;
}

/* Creates schema_migrations, or adds its checksum column (it came later), where missing. Only then:
 * even CREATE TABLE IF NOT EXISTS needs the right to create in the schema, which a read-only login
 * (an analyst running `fraudshield-alerter alerts list`) rightly lacks (migration 009); ALTER
 * needs the table's owner and a lock. */
static int migrations_table(migrate_run *r) {
    PGresult *res;
    if (mig_exec(r, "schema_migrations",
                 "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('schema_migrations') "
                 "AND attname = 'sha256' AND NOT attisdropped", /* information_schema hides it from
                                                                    roles without a grant on it */
                 0, NULL, &res) != 0)
        return -1;
    bool ready = PQntuples(res) > 0;
    PQclear(res);
    if (ready) return 0;
    return mig_exec(r, "schema_migrations",
                    "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now(), sha256 text);"
                    "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS sha256 text",
                    0, NULL, NULL);
}

/* Under the migration lock: verifies the applied migrations, applies the others. The number
 * applied, or -1 with errstr. */
static int migrate_pending(migrate_run *r) {
    int applied = 0;
    if (migrations_table(r) != 0) return -1;
    for (const db_migration *m = db_migrations; m->name; m++) {
        char recorded[2 * SHA256_DIGEST_LENGTH + 1] = "";
        int done = migration_applied(r, m, recorded, sizeof recorded);
        if (done < 0) return -1;
        if (done && migration_verify(r, m, recorded) != 0) return -1;
        if (done) continue;
        if (migration_apply(r, m) != 0) return -1;
        applied++;
    }
    return applied;
}

int db_migrate(PGconn *conn, int timeout_ms, int lock_timeout_ms, char *errstr,
               size_t errstr_size) {
    bool limited = timeout_ms > 0 && timeout_ms <= INT_MAX - DB_CANCEL_GRACE_MS;
    migrate_run r = {conn, timeout_ms, lock_timeout_ms,
                     limited ? timeout_ms : INT_MAX, /* about 24 days: no deadline */
                     limited ? DB_CANCEL_GRACE_MS : 0,
                     limited ? timeout_ms + DB_CANCEL_GRACE_MS : INT_MAX,
                     errstr, errstr_size};
    char sql[128], e[256];
    int applied = -1;
    snprintf(sql, sizeof sql, "SET statement_timeout = %d; SET lock_timeout = %d", timeout_ms,
             lock_timeout_ms);
    if (mig_exec(&r, "migration settings", sql, 0, NULL, NULL) == 0 && mig_lock(&r) == 0) {
        applied = migrate_pending(&r);
        snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%lld)", DB_MIGRATION_LOCK);
        db_exec_within(conn, r.trip_ms, sql, e, sizeof e);
    }
    /* the session's own values again: the scorer and the alerter go on with this connection */
    if (db_exec_within(conn, r.trip_ms, "RESET statement_timeout; RESET lock_timeout", e,
                       sizeof e) != 0 && applied >= 0) {
        snprintf(errstr, errstr_size, "migration settings: %s", e);
        applied = -1;
    }
    return applied;
}
