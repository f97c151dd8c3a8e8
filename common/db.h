/* db: PostgreSQL connection helpers and schema migrations.
 *
 * Migrations are the numbered files of schemas/sql/, embedded into every binary at build time
 * (db_migrations[], generated). db_migrate() applies each one once, in order, in its own
 * transaction, recorded in schema_migrations with the SHA-256 of its text; a session advisory
 * lock makes concurrent starts (two scorers at once) safe: the second waits, then finds nothing
 * left to do. An applied migration whose text changed since is an error (a migration is never
 * edited once released: the change goes into a new one). Every wait of a migration is bounded
 * (db_migrate's timeouts), so a start-up fails with the reason instead of hanging. */
#ifndef FS_DB_H
#define FS_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct db_migration {
    const char *name; /* "001_init" */
    const char *sql;
} db_migration;

extern const db_migration db_migrations[]; /* ends with {0, 0} */

/* Blocking connect (start-up and worker threads only, never an event loop). application_name is
 * shown in pg_stat_activity. Returns NULL with errstr. */
PGconn *db_connect(const char *url, const char *application_name, char *errstr, size_t errstr_size);

/* 0 when libpq can parse url (a URL or key=value connection string), else -1 with errstr. libpq's
 * own message is not passed on: it quotes the offending text, which may be the password. Processes
 * check their database-url at start-up (a malformed one is a configuration error, not an outage to
 * retry); db_connect() checks too. */
int db_url_check(const char *url, char *errstr, size_t errstr_size);

/* Verifies the applied migrations and applies the pending ones. Bounded by (0: no bound)
 *   timeout_ms       each migration round trip (a migration's whole text, each bookkeeping
 *                    statement): one still running then is cancelled (a cancel request; also
 *                    statement_timeout, which times each statement alone) and its transaction
 *                    rolled back; a server that answers not even the cancel within 2 s more is
 *                    given up (the connection dropped, as db_query does). Also the longest wait for
 *                    the advisory lock while another process migrates; the error then names the
 *                    session holding it.
 *   lock_timeout_ms  the longest wait for a lock another session holds (lock_timeout): behind an
 *                    open transaction the migration fails, rolled back, naming the sessions that
 *                    were in a transaction for that long, instead of waiting for ever (and making
 *                    every later writer of the table queue behind it).
 * Both are set on the session for the migration only, then RESET to the session's own values.
 * Returns the number applied, or -1 with errstr (also when an applied migration's text changed
 * since); the errors of the bounds say what to do. */
int db_migrate(PGconn *conn, int timeout_ms, int lock_timeout_ms, char *errstr,
               size_t errstr_size);

/* PQexecParams (nparams > 0; text results) or PQexec (nparams 0: several statements allowed) with
 * a client-side deadline: a server that accepted the connection but does not answer within
 * timeout_ms (a stopped process, a half-open TCP path that still acknowledges) makes the call
 * drop the connection (PQstatus then CONNECTION_BAD: reconnect) and return an error result.
 * Never NULL; PQclear it. Not for connections in COPY or pipeline mode. */
PGresult *db_query(PGconn *conn, int timeout_ms, const char *sql, int nparams,
                   const char *const *params, const int *lens, const int *fmts);

/* COPY ... FROM STDIN (text or csv, as copy_sql says) of data[0..len) with db_query's deadline
 * covering the whole exchange: the statement, the data (sent on a connection made non-blocking
 * for the while: a server that stops reading would otherwise block PQputCopyData), its end and
 * the results. Returns the COPY's result (PGRES_COMMAND_OK) or the first failure (the statement's,
 * e.g. a missing table, or the lost or abandoned connection's). Never NULL; PQclear it. */
PGresult *db_copy_in(PGconn *conn, int timeout_ms, const char *copy_sql, const char *data,
                     size_t len);

/* A row of db_query_rows: row `row` of res (neither kept after the call). Returns 0 to go on, or a
 * positive value to stop taking rows. */
typedef int db_row_fn(void *arg, const PGresult *res, int row);

/* db_query_rows: no answer within the deadline (the connection was dropped, as db_query drops it). */
#define DB_TIMED_OUT (-2)

/* A query (no parameters) whose rows are handed to row_fn one at a time as they arrive (libpq's
 * single-row mode: memory holds one row, not the whole result), with db_query's deadline covering
 * the whole exchange: the query, every row and its end. Returns 0 (every row taken), row_fn's
 * positive value (the rest of the rows were read and dropped), -1 with errstr (the query failed,
 * the connection was lost) or DB_TIMED_OUT with errstr. */
int db_query_rows(PGconn *conn, int timeout_ms, const char *sql, db_row_fn *row_fn, void *arg,
                  char *errstr, size_t errstr_size);

/* How long a client waits beyond a server-side bound (statement_timeout, a cancel request) for the
 * server's own error, before it gives up on a server that does not answer at all. */
#define DB_CANCEL_GRACE_MS 2000

/* Sets statement_timeout = timeout_ms on the session, so that PostgreSQL itself stops a statement
 * the client gives up on: abandoned, it would run on, keep its locks and take effect later (an
 * operator command that "failed", a tool's query). Returns the client-side deadline for the
 * session's statements (timeout_ms + DB_CANCEL_GRACE_MS), or -1 with errstr. */
int db_server_timeout(PGconn *conn, int timeout_ms, char *errstr, size_t errstr_size);

/* db_exec with db_query's deadline. */
int db_exec_within(PGconn *conn, int timeout_ms, const char *sql, char *errstr, size_t errstr_size);

/* True when a failed result is about the data itself (SQLSTATE class 22 data exception or 23
 * integrity constraint violation): retrying the same rows cannot succeed, so they may be
 * dead-lettered. Everything else (connection lost, server restarting, deadlock, but also a missing
 * table or a revoked permission) is an operational problem: pause and retry, never skip data. */
bool db_is_data_error(const PGresult *res);

/* The error on one line into errstr: the connection's, or the statement's severity and primary
 * message with its SQLSTATE, constraint and column; never DETAIL or CONTEXT (they quote rows). */
void db_error(PGconn *conn, const PGresult *res, char *errstr, size_t errstr_size);

#endif
