/* pgcopy: COPY text-format rows (see pgcopy.h). */
#include "pgcopy.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "fsutil.h"

static bool reserve(pgcopy_buf *b, size_t more) {
    if (b->oom) return false;
    if (b->len + more + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void sep(pgcopy_buf *b) {
    if (b->row_open && reserve(b, 1)) b->p[b->len++] = '\t';
    b->row_open = true;
}

/* Backslash escapes of the text format: \\, \t, \n, \r (everything else is taken literally). */
void pgcopy_text(pgcopy_buf *b, const char *s) {
    size_t n = strlen(s);
    sep(b);
    if (!reserve(b, 2 * n)) return;
    for (const char *c = s; *c; c++) {
        switch (*c) {
        case '\\': b->p[b->len++] = '\\'; b->p[b->len++] = '\\'; break;
        case '\t': b->p[b->len++] = '\\'; b->p[b->len++] = 't'; break;
        case '\n': b->p[b->len++] = '\\'; b->p[b->len++] = 'n'; break;
        case '\r': b->p[b->len++] = '\\'; b->p[b->len++] = 'r'; break;
        default: b->p[b->len++] = *c;
        }
    }
}

void pgcopy_str(pgcopy_buf *b, const char *s) {
    if (!s || !*s) pgcopy_null(b);
    else pgcopy_text(b, s);
}

void pgcopy_int(pgcopy_buf *b, int64_t v) {
    sep(b);
    if (reserve(b, 24)) b->len += fs_int_format(v, b->p + b->len);
}

void pgcopy_null(pgcopy_buf *b) {
    sep(b);
    if (!reserve(b, 2)) return;
    b->p[b->len++] = '\\';
    b->p[b->len++] = 'N';
}

void pgcopy_end_row(pgcopy_buf *b) {
    if (reserve(b, 1)) b->p[b->len++] = '\n';
    b->row_open = false;
    b->rows++;
}

void pgcopy_reset(pgcopy_buf *b) {
    b->len = 0;
    b->oom = false;
    b->row_open = false;
    b->rows = 0;
}

void pgcopy_free(pgcopy_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

int pgcopy_send(PGconn *conn, int timeout_ms, const char *copy_sql, const pgcopy_buf *b,
                PGresult **res, char *errstr, size_t errstr_size) {
    *res = NULL;
    if (b->oom) {
        snprintf(errstr, errstr_size, "out of memory building COPY rows");
        return -1;
    }
    PGresult *r = db_copy_in(conn, timeout_ms, copy_sql, b->p ? b->p : "", b->len);
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        PQclear(r);
        return 0;
    }
    *res = r; /* the caller maps the failure (connection, timeout, missing table, bad row...) */
    return -1;
}
