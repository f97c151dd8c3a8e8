/* pgcopy: rows in PostgreSQL's COPY text format, sent with COPY ... FROM STDIN.
 *
 * The scorer's bulk writes go through temporary tables: COPY the batch's rows into a temp table
 * (ON COMMIT DELETE ROWS), then one INSERT ... SELECT ... ORDER BY ... ON CONFLICT moves them into
 * the real table (COPY itself cannot do ON CONFLICT); rows that cannot conflict (the decisions of
 * new payments) are COPYed into their table directly. Building the text directly is much cheaper
 * than building and serializing JSON, and PostgreSQL parses it faster than jsonb (BENCHMARKS.md).
 *
 *   pgcopy_buf b = {0};
 *   pgcopy_str(&b, "user-1"); pgcopy_int(&b, 42); pgcopy_null(&b); pgcopy_end_row(&b);
 *   pgcopy_send(conn, timeout_ms, "COPY tmp (a, b, c) FROM STDIN", &b, &res, errstr, sizeof errstr);
 *   pgcopy_free(&b);
 * Field separators are added automatically. Allocation failures are sticky (b.oom): checked once
 * by pgcopy_send. */
#ifndef FS_PGCOPY_H
#define FS_PGCOPY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pgcopy_buf {
    char *p;
    size_t len, cap;
    bool oom;
    bool row_open; /* a field was written on the current row */
    size_t rows;
} pgcopy_buf;

void pgcopy_str(pgcopy_buf *b, const char *s);    /* escaped; NULL or "" -> \N (SQL NULL) */
void pgcopy_text(pgcopy_buf *b, const char *s);   /* escaped; "" stays an empty string */
void pgcopy_int(pgcopy_buf *b, int64_t v);
void pgcopy_null(pgcopy_buf *b);
void pgcopy_end_row(pgcopy_buf *b);
void pgcopy_reset(pgcopy_buf *b);                 /* keeps the memory */
void pgcopy_free(pgcopy_buf *b);

/* Runs copy_sql (COPY ... FROM STDIN, text format) with b's rows, the whole exchange within
 * timeout_ms (db_copy_in: not answered by then, the connection is dropped). Returns 0, or -1 with
 * either *res, the failed result (the caller maps it and PQclears it), or errstr (the rows could
 * not be built: *res NULL). */
int pgcopy_send(PGconn *conn, int timeout_ms, const char *copy_sql, const pgcopy_buf *b,
                PGresult **res, char *errstr, size_t errstr_size);

#endif
