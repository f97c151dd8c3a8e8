/* bulk_insert: the three ways to write a batch idempotently (INSERT ... ON CONFLICT, which COPY
 * cannot do), measured from the client, building the parameters included:
 *   json    one jsonb parameter, jsonb_to_recordset (jansson builds and dumps the array)
 *   unnest  one text-array parameter per column, unnest(...) (array literals built by hand)
 *   copy    COPY into a temporary table (text format built by hand), then INSERT ... SELECT
 * Rows look like the scorer's payments (uuid key, ids, amount, times; 12 columns). Usage:
 *   bulk_insert CONNINFO [ROWS] [BATCH]   -> one line per method: rows/s
 * Built and run by bench/scorer_bench.sh (BENCH_BULK=1); results in BENCHMARKS.md. */
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLS "payment_id uuid, user_id text, merchant_id text, amount_minor bigint, " \
             "currency text, payment_method text, card_digest text, ip_digest text, " \
             "country text, event_ms bigint, ingest_ms bigint, source_offset bigint"
#define TABLE "(" COLS ", PRIMARY KEY (payment_id))"
#define NAMES "payment_id, user_id, merchant_id, amount_minor, currency, payment_method, " \
              "card_digest, ip_digest, country, event_ms, ingest_ms, source_offset"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void must(PGconn *c, PGresult *r, ExecStatusType want) {
    if (PQresultStatus(r) != want) {
        fprintf(stderr, "%s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
}

typedef struct row {
    char id[37], user[16], merchant[16], card[65], ip[65];
    long long amount, t;
} row;

static void make_row(row *r, long i) {
    snprintf(r->id, sizeof r->id, "%08lx-0000-4000-8000-%012lx", i / 100000, i);
    snprintf(r->user, sizeof r->user, "c%ld", i % 50000);
    snprintf(r->merchant, sizeof r->merchant, "t%ld", i % 10000);
    for (int k = 0; k < 64; k++) r->card[k] = "0123456789abcdef"[(i * 7 + k * 13) % 16];
    r->card[64] = '\0';
    memcpy(r->ip, r->card, 65);
    r->ip[0] = 'f';
    r->amount = 500 + i % 15000;
    r->t = 1790000000000LL + i * 5000;
}

static void batch_json(PGconn *c, long from, int n) {
    json_t *a = json_array();
    row r;
    for (long i = from; i < from + n; i++) {
        make_row(&r, i);
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I}",
            "payment_id", r.id, "user_id", r.user, "merchant_id", r.merchant, "amount_minor",
            r.amount, "currency", "EUR", "payment_method", "card", "card_digest", r.card,
            "ip_digest", r.ip, "country", "DE", "event_ms", r.t, "ingest_ms", r.t, "source_offset",
            (json_int_t)i));
    }
    char *text = json_dumps(a, JSON_COMPACT);
    const char *p[1] = {text};
    must(c, PQexecParams(c, "INSERT INTO t_json SELECT * FROM jsonb_to_recordset($1::jsonb) AS x("
                            COLS ") ORDER BY 1 ON CONFLICT DO NOTHING",
                         1, NULL, p, NULL, NULL, 0),
         PGRES_COMMAND_OK);
    free(text);
    json_decref(a);
}

/* {"a","b",...} of n values of one column. */
static char *array_of(long from, int n, int col) {
    size_t cap = (size_t)n * 80 + 16, len = 0;
    char *s = malloc(cap);
    row r;
    s[len++] = '{';
    for (long i = from; i < from + n; i++) {
        make_row(&r, i);
        const char *v = col == 0 ? r.id : col == 1 ? r.user : col == 2 ? r.merchant
                      : col == 3 ? r.card : r.ip;
        len += (size_t)snprintf(s + len, cap - len, "%s\"%s\"", i > from ? "," : "", v);
    }
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

static char *num_array(long from, int n, int which) {
    size_t cap = (size_t)n * 24 + 16, len = 0;
    char *s = malloc(cap);
    row r;
    s[len++] = '{';
    for (long i = from; i < from + n; i++) {
        make_row(&r, i);
        long long v = which == 0 ? r.amount : which == 1 ? r.t : i;
        len += (size_t)snprintf(s + len, cap - len, "%s%lld", i > from ? "," : "", v);
    }
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

static void batch_unnest(PGconn *c, long from, int n) {
    char *p[8] = {array_of(from, n, 0), array_of(from, n, 1), array_of(from, n, 2),
                  num_array(from, n, 0), array_of(from, n, 3), array_of(from, n, 4),
                  num_array(from, n, 1), num_array(from, n, 2)};
    must(c, PQexecParams(c, "INSERT INTO t_unnest SELECT u.id, u.us, u.m, u.a, 'EUR', 'card', u.cd, "
                            "u.ip, 'DE', u.t, u.t, u.o FROM unnest($1::uuid[], $2::text[], "
                            "$3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[], "
                            "$8::bigint[]) AS u(id, us, m, a, cd, ip, t, o) ORDER BY 1 "
                            "ON CONFLICT DO NOTHING",
                         8, NULL, (const char *const *)p, NULL, NULL, 0),
         PGRES_COMMAND_OK);
    for (int i = 0; i < 8; i++) free(p[i]);
}

static void batch_copy(PGconn *c, long from, int n) {
    size_t cap = (size_t)n * 260, len = 0;
    char *buf = malloc(cap);
    row r;
    for (long i = from; i < from + n; i++) {
        make_row(&r, i);
        len += (size_t)snprintf(buf + len, cap - len,
                                "%s\t%s\t%s\t%lld\tEUR\tcard\t%s\t%s\tDE\t%lld\t%lld\t%ld\n", r.id,
                                r.user, r.merchant, r.amount, r.card, r.ip, r.t, r.t, i);
    }
    must(c, PQexec(c, "COPY tmp_copy FROM STDIN"), PGRES_COPY_IN);
    if (PQputCopyData(c, buf, (int)len) != 1 || PQputCopyEnd(c, NULL) != 1) exit(1);
    must(c, PQgetResult(c), PGRES_COMMAND_OK);
    must(c, PQexec(c, "INSERT INTO t_copy SELECT * FROM tmp_copy ORDER BY 1 ON CONFLICT DO NOTHING"),
         PGRES_COMMAND_OK);
    free(buf);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: bulk_insert CONNINFO [ROWS] [BATCH]\n"), 2;
    long rows = argc > 2 ? atol(argv[2]) : 200000;
    int batch = argc > 3 ? atoi(argv[3]) : 2000;
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) return fprintf(stderr, "%s", PQerrorMessage(c)), 1;
    must(c, PQexec(c, "SET client_min_messages = warning; DROP TABLE IF EXISTS t_json, t_unnest, "
                      "t_copy; CREATE TABLE t_json " TABLE "; CREATE TABLE t_unnest " TABLE "; "
                      "CREATE TABLE t_copy " TABLE "; "
                      "CREATE TEMP TABLE tmp_copy (" COLS ") ON COMMIT DELETE ROWS"),
         PGRES_COMMAND_OK);
    static const char *const names[] = {"json", "unnest", "copy"};
    void (*fns[])(PGconn *, long, int) = {batch_json, batch_unnest, batch_copy};
    for (int m = 0; m < 3; m++) {
        double t0 = now_s();
        for (long i = 0; i < rows; i += batch) {
            must(c, PQexec(c, "BEGIN"), PGRES_COMMAND_OK);
            fns[m](c, i, (int)(rows - i < batch ? rows - i : batch));
            must(c, PQexec(c, "COMMIT"), PGRES_COMMAND_OK);
        }
        printf("bulk_insert method=%s rows=%ld batch=%d rows_per_s=%.0f\n", names[m], rows, batch,
               rows / (now_s() - t0));
        fflush(stdout);
    }
    must(c, PQexec(c, "DROP TABLE t_json, t_unnest, t_copy"), PGRES_COMMAND_OK);
    PQfinish(c);
    return 0;
}
