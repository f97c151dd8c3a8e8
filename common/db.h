/* db: PostgreSQL connection helpers and schema migrations.
 *
 * Migrations are the numbered files of schemas/sql/, embedded into every binary at build time
 * (db_migrations[], generated). db_migrate() applies each one once, in order, in its own
 * transaction, recorded in schema_migrations with the SHA-256 of its text; a session advisory
 * lock makes concurrent starts (two scorers at once) safe: the second waits, then finds nothing
 * left to do. An applied migration whose text changed since is an error (a migration is never
 * edited once released: the change goes into a new one). */
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

/* Verifies the applied migrations and applies the pending ones. Returns the number applied, or -1
 * with errstr (also when an applied migration's text changed since). */
int db_migrate(PGconn *conn, char *errstr, size_t errstr_size);

/* Runs a command that returns no rows. Returns 0 or -1 with errstr. */
int db_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size);

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
