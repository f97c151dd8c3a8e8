/* db: PostgreSQL connection helpers and embedded schema migrations (see db.h). */
#include "db.h"

#include <errno.h>
#include <limits.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

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

/* Notices (e.g. "relation already exists, skipping") go to our logger, not libpq's stderr print. */
static void db_notice(void *arg, const char *message) {
    (void)arg;
    log_msg(LOG_DEBUG, "pg_notice", "%.*s", (int)strcspn(message, "\n"), message);
}

/* TCP defaults, placed BEFORE dbname so that the URL (expanded from dbname) overrides them: a
 * PostgreSQL host that vanishes (crash, partition, failover) without closing the connection would
 * otherwise leave a statement waiting for the kernel's defaults (hours). Keepalives probe an idle
 * connection after 30 s (then every 10 s, 3 probes); tcp_user_timeout bounds unacknowledged data
 * to 30 s. Neither helps when the host's kernel still acknowledges but the server does not answer
 * (a stopped process): db_query()'s deadline covers that. */
PGconn *db_connect(const char *url, const char *application_name, char *errstr, size_t errstr_size) {
    const char *keys[] = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                          "tcp_user_timeout", "dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {"1", "30", "10", "3", "30000", url, application_name, "5", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1 /* expand dbname as a URL */);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        db_error(conn, NULL, errstr, errstr_size);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, db_notice, NULL);
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
 * connection bad; callers reconnect). A cancel request is no use here: it needs a new connection
 * to the same server that does not answer. timeout_ms < 0: poll() failed, no log line. */
static void db_abandon(PGconn *conn, int timeout_ms) {
    if (timeout_ms >= 0) /* else poll() itself failed: dropped too, libpq reports the lost connection */
        log_fields(LOG_ERROR, "db_timeout", json_pack("{s:i}", "timeout_ms", timeout_ms),
                   "PostgreSQL did not answer within %d ms: connection dropped", timeout_ms);
    shutdown(PQsocket(conn), SHUT_RDWR);
    PQconsumeInput(conn);
}

/* Sends the query and flushes it, within the deadline. 0, or -1 (time up: abandoned; or error). */
static int db_send(PGconn *conn, int64_t deadline_us, int timeout_ms, const char *sql, int nparams,
                   const char *const *params, const int *lens, const int *fmts) {
    int ok = nparams ? PQsendQueryParams(conn, sql, nparams, NULL, params, lens, fmts, 0)
                     : PQsendQuery(conn, sql);
    if (!ok) return -1;
    for (int f; (f = PQflush(conn)) != 0;) {
        if (f < 0) return -1;
        int w = db_wait(conn, POLLIN | POLLOUT, deadline_us);
        if (w <= 0) return w == 0 ? db_abandon(conn, timeout_ms), -1 : -1;
        if (!PQconsumeInput(conn)) return -1;
    }
    return 0;
}

/* Waits (within the deadline) until a result can be taken without blocking. 0, or -1 (time up:
 * abandoned; or the connection failed: PQgetResult then reports it). */
static int db_await_result(PGconn *conn, int64_t deadline_us, int timeout_ms) {
    while (PQstatus(conn) == CONNECTION_OK && PQisBusy(conn)) {
        int w = db_wait(conn, POLLIN, deadline_us);
        if (w <= 0) db_abandon(conn, w == 0 ? timeout_ms : -1);
        if (w <= 0 || !PQconsumeInput(conn)) return -1;
    }
    return 0;
}

PGresult *db_query(PGconn *conn, int timeout_ms, const char *sql, int nparams,
                   const char *const *params, const int *lens, const int *fmts) {
    int64_t deadline_us = fs_mono_us() + (int64_t)timeout_ms * 1000;
    PGresult *last = NULL, *r;
    if (!conn || PQstatus(conn) != CONNECTION_OK) return PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
    if (db_send(conn, deadline_us, timeout_ms, sql, nparams, params, lens, fmts) != 0)
        return PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
    /* as PQexec: the last result. Each PQgetResult only once it cannot block (several statements
     * give several results); after an abandon, libpq's error for the lost connection. */
    for (;;) {
        (void)db_await_result(conn, deadline_us, timeout_ms);
        if (!(r = PQgetResult(conn))) break;
        PQclear(last);
        last = r;
        if (PQstatus(conn) == CONNECTION_BAD) break;
    }
    return last ? last : PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
}

/* Flushes what libpq holds for the server (non-blocking connection), within the deadline; input
 * is consumed meanwhile, as libpq asks (the server may be sending an error). 0 or -1. */
static int db_flush_within(PGconn *conn, int64_t deadline_us, int timeout_ms) {
    for (int f; (f = PQflush(conn)) != 0;) {
        if (f < 0) return -1;
        int w = db_wait(conn, POLLIN | POLLOUT, deadline_us);
        if (w <= 0) return db_abandon(conn, w == 0 ? timeout_ms : -1), -1;
        if (!PQconsumeInput(conn)) return -1;
    }
    return 0;
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
    if (db_send(conn, deadline_us, timeout_ms, copy_sql, 0, NULL, NULL, NULL) != 0)
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

int db_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size) {
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok) db_error(conn, res, errstr, errstr_size);
    PQclear(res);
    return ok ? 0 : -1;
}

bool db_is_data_error(const PGresult *res) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
}

/* The SHA-256 (hex) of a migration's text, recorded when it is applied. */
static void migration_sha256(const db_migration *m, char out[2 * SHA256_DIGEST_LENGTH + 1]) {
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)m->sql, strlen(m->sql), md);
    fs_hex(md, sizeof md, out);
}

/* 1 when m was applied (its recorded checksum into sum, "" when recorded before checksums), 0
 * when not, -1 on error. */
static int migration_applied(PGconn *conn, const db_migration *m, char *sum, size_t sum_size,
                             char *errstr, size_t errstr_size) {
    const char *params[] = {m->name};
    PGresult *res = PQexecParams(conn, "SELECT coalesce(sha256, '') FROM schema_migrations WHERE name = $1",
                                 1, NULL, params, NULL, NULL, 0);
    int rc = PQresultStatus(res) != PGRES_TUPLES_OK ? -1 : PQntuples(res) > 0;
    if (rc < 0) db_error(conn, res, errstr, errstr_size);
    if (rc > 0) snprintf(sum, sum_size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

/* An applied migration must be the text this build carries: a migration edited after it was
 * applied leaves databases that ran the old text with a different schema than new ones, which
 * shows up later as errors no retry can fix. Rows from before checksums adopt the current one. */
static int migration_verify(PGconn *conn, const db_migration *m, const char *recorded,
                            char *errstr, size_t errstr_size) {
    char sum[2 * SHA256_DIGEST_LENGTH + 1];
    migration_sha256(m, sum);
    if (recorded[0] && strcmp(recorded, sum) != 0) {
        snprintf(errstr, errstr_size,
                 "migration %s was changed after this database applied it (recorded sha256 %.12s, "
                 "this build %.12s): restore its text and put the change in a new migration "
                 "(a throwaway development database: drop it and start again)",
                 m->name, recorded, sum);
        return -1;
    }
    if (recorded[0]) return 0;
    const char *params[] = {sum, m->name};
    PGresult *res = PQexecParams(conn, "UPDATE schema_migrations SET sha256 = $1 WHERE name = $2",
                                 2, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) db_error(conn, res, errstr, errstr_size);
    PQclear(res);
    return ok ? 0 : -1;
}

static int migration_apply(PGconn *conn, const db_migration *m, char *errstr, size_t errstr_size) {
    char e[512];
    char sum[2 * SHA256_DIGEST_LENGTH + 1];
    migration_sha256(m, sum);
    const char *params[] = {m->name, sum};
    if (db_exec(conn, "BEGIN", errstr, errstr_size) != 0) return -1;
    if (db_exec(conn, m->sql, e, sizeof e) != 0) {
        snprintf(errstr, errstr_size, "migration %s: %s", m->name, e);
        goto failed;
    }
    PGresult *res = PQexecParams(conn, "INSERT INTO schema_migrations (name, sha256) VALUES ($1, $2)",
                                 2, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) db_error(conn, res, errstr, errstr_size);
    PQclear(res);
    if (!ok || db_exec(conn, "COMMIT", errstr, errstr_size) != 0) goto failed;
    log_msg(LOG_INFO, "migration_applied", "applied migration %s", m->name);
    return 0;
failed:
    db_exec(conn, "ROLLBACK", e, sizeof e);
    return -1;
}

int db_migrate(PGconn *conn, char *errstr, size_t errstr_size) {
    char lock[128], unlock[128], e[256];
    int applied = 0;
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%lld)", DB_MIGRATION_LOCK);
    snprintf(unlock, sizeof unlock, "SELECT pg_advisory_unlock(%lld)", DB_MIGRATION_LOCK);
    /* Waits while another process migrates; afterwards it finds the work done. */
    if (db_exec(conn, lock, errstr, errstr_size) != 0) return -1;
    /* The checksum column came later: added once (ALTER needs the table's owner and a lock, so it
     * runs only when the column is missing, not on every start). */
    if (db_exec(conn,
                "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now(), sha256 text);"
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE "
                "table_name = 'schema_migrations' AND column_name = 'sha256' AND table_schema = "
                "current_schema()) THEN ALTER TABLE schema_migrations ADD COLUMN sha256 text; END IF; "
                "END $$",
                errstr, errstr_size) != 0)
        goto failed;
    for (const db_migration *m = db_migrations; m->name; m++) {
        char recorded[2 * SHA256_DIGEST_LENGTH + 1] = "";
        int done = migration_applied(conn, m, recorded, sizeof recorded, errstr, errstr_size);
        if (done < 0) goto failed;
        if (done && migration_verify(conn, m, recorded, errstr, errstr_size) != 0) goto failed;
        if (done) continue;
        if (migration_apply(conn, m, errstr, errstr_size) != 0) goto failed;
        applied++;
    }
    db_exec(conn, unlock, e, sizeof e);
    return applied;
failed:
    db_exec(conn, unlock, e, sizeof e);
    return -1;
}
