/* Unit tests for tools/redrive.c: the --reason / --to / --max-redrives decisions, the header
 * rewriting of a re-driven message, and the summary. Table-driven: each row is a dead letter's
 * headers and what must become of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "redrive.h"

#define NOW_MS 1793613600000LL /* 2026-11-02T10:00:00.000Z */
#define MAXH 12

/* A header; value NULL = a header with a NULL value. The list ends at name NULL. */
typedef struct hv {
    const char *name, *value;
} hv;

/* The six headers the scorer's DLQ code adds (scorer_produce_dlq), around ingest's originals. */
#define INGEST_HEADERS {"schema_version", "1"}, {"payment_id", "aaaaaaaa-0000-4000-8000-000000000001"}, \
                       {"ingest_ts", "1793613600000"}, {"content-type", "application/json"}
#define DLQ_HEADERS(reason, topic) {"dlq_reason", reason}, {"dlq_error", "merchant_id: refused"}, \
                       {"source_topic", topic}, {"source_partition", "2"}, {"source_offset", "17"}, \
                       {"dlq_time", "2026-11-02T09:00:00.000Z"}

static rd_kafka_headers_t *headers_of(const hv *h) {
    rd_kafka_headers_t *out = rd_kafka_headers_new(8);
    for (; h->name; h++) rd_kafka_header_add(out, h->name, -1, h->value, h->value ? -1 : 0);
    return out;
}

/* "name=value,name=(null),..." */
static void headers_text(const rd_kafka_headers_t *h, char *out, size_t n) {
    const char *name;
    const void *v;
    size_t size, used = 0;
    out[0] = '\0';
    for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &v, &size) == 0; i++)
        used += (size_t)snprintf(out + used, n - used, "%s%s=%.*s", i ? "," : "", name,
                                 v ? (int)size : 6, v ? (const char *)v : "(null)");
}

/* ---- plans -------------------------------------------------------------------------------------- */

static void test_plan_options(void **state) {
    (void)state;
    static const struct {
        const char *reasons, *to, *dlq;
        int64_t max;
        const char *error; /* NULL: valid */
    } cases[] = {
        {"", "", "raw_payments.dlq", 3, NULL},
        {"db_rejected", "", "raw_payments.dlq", 3, NULL},
        {" db_rejected , invalid_outcome", "payment_outcomes", "payment_outcomes.dlq", 1, NULL},
        {"outcome_conflict", "", "payment_outcomes.dlq", 3, NULL},
        {"undecodable,invalid_payment,invalid_outcome,db_rejected,invalid_alert,delivery_rejected,"
         "delivery_exhausted", "", "fraud_alerts.dlq", 1000, NULL},
        {"db_rejcted", "", "raw_payments.dlq", 3, "'db_rejcted' is not a dlq_reason"},
        {"db_rejected,", "", "raw_payments.dlq", 3, "'' is not a dlq_reason"},
        {",db_rejected", "", "raw_payments.dlq", 3, "'' is not a dlq_reason"},
        {"DB_REJECTED", "", "raw_payments.dlq", 3, "not a dlq_reason"},
        {"", "raw_payments.dlq", "raw_payments.dlq", 3, "cannot be the target"},
        {"", "raw payments", "raw_payments.dlq", 3, "to: not a valid topic name"},
        {"", "", "", 3, "dlq-topic: not a valid topic name"},
        {"", "", "raw_payments.dlq", 0, "max-redrives"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        redrive_plan *p = redrive_plan_new(cases[i].reasons, cases[i].to, cases[i].dlq,
                                           cases[i].max, err, sizeof err);
        if (!cases[i].error) {
            assert_non_null(p);
        } else {
            assert_null(p);
            if (!strstr(err, cases[i].error)) fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].error);
        }
        redrive_plan_destroy(p);
    }
    redrive_plan_destroy(NULL);
}

/* ---- decisions ---------------------------------------------------------------------------------- */

static void test_decide(void **state) {
    (void)state;
    static const struct {
        const char *reasons, *to;
        int64_t max;
        bool no_headers;      /* the message has no headers at all */
        hv h[MAXH];
        redrive_verdict verdict;
        const char *reason, *target;
        int64_t count;
    } cases[] = {
        /* every reason, back to the source */
        {"", "", 3, false, {INGEST_HEADERS, DLQ_HEADERS("db_rejected", "raw_payments")},
         REDRIVE_PRODUCE, "db_rejected", "raw_payments", 0},
        /* the filter: exact names, any of the list */
        {"db_rejected", "", 3, false, {DLQ_HEADERS("invalid_payment", "raw_payments")},
         REDRIVE_FILTERED, "invalid_payment", "raw_payments", 0},
        {"db_rejected,undecodable", "", 3, false, {DLQ_HEADERS("undecodable", "raw_payments")},
         REDRIVE_PRODUCE, "undecodable", "raw_payments", 0},
        {"db_rejected", "", 3, false, {DLQ_HEADERS("db_rejected_2", "raw_payments")},
         REDRIVE_FILTERED, "db_rejected_2", "raw_payments", 0},
        {"db_rejected", "", 3, false, {DLQ_HEADERS("db_rej", "raw_payments")},
         REDRIVE_FILTERED, "db_rej", "raw_payments", 0},
        {"db_rejected", "", 3, false, {{"source_topic", "raw_payments"}},
         REDRIVE_FILTERED, "-", "raw_payments", 0},
        /* expired: only when named (it would be dead-lettered again) */
        {"", "", 3, false, {DLQ_HEADERS("expired", "raw_payments")},
         REDRIVE_FILTERED, "expired", "raw_payments", 0},
        {"expired", "", 3, false, {DLQ_HEADERS("expired", "raw_payments")},
         REDRIVE_PRODUCE, "expired", "raw_payments", 0},
        {"", "", 3, false, {DLQ_HEADERS("expire", "raw_payments")},
         REDRIVE_PRODUCE, "expire", "raw_payments", 0},
        {"db_rejected", "", 3, false, {{"dlq_reason", NULL}, {"source_topic", "raw_payments"}},
         REDRIVE_FILTERED, "-", "raw_payments", 0},
        /* the target: --to wins; without it source_topic must be a usable topic */
        {"", "payment_outcomes", 3, false, {{"dlq_reason", "invalid_outcome"}},
         REDRIVE_PRODUCE, "invalid_outcome", "payment_outcomes", 0},
        {"", "raw_payments_v2", 3, false, {DLQ_HEADERS("db_rejected", "raw_payments")},
         REDRIVE_PRODUCE, "db_rejected", "raw_payments_v2", 0},
        {"", "", 3, false, {{"dlq_reason", "db_rejected"}}, REDRIVE_NO_SOURCE, "db_rejected", "", 0},
        {"", "", 3, false, {DLQ_HEADERS("db_rejected", "")}, REDRIVE_NO_SOURCE, "db_rejected", "", 0},
        {"", "", 3, false, {DLQ_HEADERS("db_rejected", "raw payments")}, REDRIVE_NO_SOURCE,
         "db_rejected", "", 0},
        {"", "", 3, false, {DLQ_HEADERS("db_rejected", "raw_payments.dlq")}, REDRIVE_NO_SOURCE,
         "db_rejected", "", 0},
        {"", "", 3, false, {{"dlq_reason", "db_rejected"}, {"source_topic", NULL}},
         REDRIVE_NO_SOURCE, "db_rejected", "", 0},
        {"", "", 3, true, {{0}}, REDRIVE_NO_SOURCE, "-", "", 0},
        {"db_rejected", "", 3, true, {{0}}, REDRIVE_FILTERED, "-", "", 0},
        /* the limit: the count so far against max-redrives; the last header wins */
        {"", "", 3, false, {DLQ_HEADERS("db_rejected", "raw_payments"), {"redrive_count", "2"}},
         REDRIVE_PRODUCE, "db_rejected", "raw_payments", 2},
        {"", "", 3, false, {DLQ_HEADERS("db_rejected", "raw_payments"), {"redrive_count", "3"}},
         REDRIVE_MAX_REDRIVES, "db_rejected", "raw_payments", 3},
        {"", "", 1, false, {DLQ_HEADERS("db_rejected", "raw_payments"), {"redrive_count", "1"}},
         REDRIVE_MAX_REDRIVES, "db_rejected", "raw_payments", 1},
        {"", "", 3, false, {{"redrive_count", "5"}, DLQ_HEADERS("db_rejected", "raw_payments"),
                            {"redrive_count", "1"}},
         REDRIVE_PRODUCE, "db_rejected", "raw_payments", 1},
        {"", "", 3, false, {{"redrive_count", "1"}, DLQ_HEADERS("db_rejected", "raw_payments"),
                            {"redrive_count", "4"}},
         REDRIVE_MAX_REDRIVES, "db_rejected", "raw_payments", 4},
        /* a dead letter without its value (it was too large) cannot be re-driven */
        {"", "", 3, false, {DLQ_HEADERS("undecodable", "raw_payments"), {"dlq_value_omitted", "999800"}},
         REDRIVE_NO_VALUE, "undecodable", "raw_payments", 0},
        {"", "", 3, false, {DLQ_HEADERS("db_rejected", "raw_payments"), {"redrive_count", "x9"}},
         REDRIVE_PRODUCE, "db_rejected", "raw_payments", 0},
        {"", "", 3, false, {DLQ_HEADERS("db_rejected", "raw_payments"), {"redrive_count", "-4"}},
         REDRIVE_PRODUCE, "db_rejected", "raw_payments", 0},
        /* the filter comes first: a filtered message is not counted against the limit */
        {"undecodable", "", 3, false, {DLQ_HEADERS("db_rejected", "raw_payments"),
                                       {"redrive_count", "7"}},
         REDRIVE_FILTERED, "db_rejected", "raw_payments", 7},
        /* an unprintable reason is shown with '?' */
        {"", "", 3, false, {DLQ_HEADERS("bad\nreason", "raw_payments")},
         REDRIVE_PRODUCE, "bad?reason", "raw_payments", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256];
        redrive_decision d;
        redrive_plan *p = redrive_plan_new(cases[i].reasons, cases[i].to, "raw_payments.dlq",
                                           cases[i].max, err, sizeof err);
        assert_non_null(p);
        rd_kafka_headers_t *h = cases[i].no_headers ? NULL : headers_of(cases[i].h);
        redrive_decide(p, h, &d);
        if (d.verdict != cases[i].verdict || strcmp(d.reason, cases[i].reason) ||
            strcmp(d.target, cases[i].target) || d.redrive_count != cases[i].count)
            fail_msg("case %zu: got %s reason=%s target=%s count=%lld", i,
                     redrive_verdict_name(d.verdict), d.reason, d.target, (long long)d.redrive_count);
        if (h) rd_kafka_headers_destroy(h);
        redrive_plan_destroy(p);
    }
}

/* ---- headers ------------------------------------------------------------------------------------ */

static void test_headers(void **state) {
    (void)state;
    static const struct {
        bool no_headers;
        hv in[MAXH];
        int64_t count;
        const char *out;
    } cases[] = {
        /* the originals, in their order; the DLQ's six gone; the redrive pair appended */
        {false, {INGEST_HEADERS, DLQ_HEADERS("db_rejected", "raw_payments")}, 0,
         "schema_version=1,payment_id=aaaaaaaa-0000-4000-8000-000000000001,"
         "ingest_ts=1793613600000,content-type=application/json,redrive_count=1,"
         "redriven_at=2026-11-02T10:00:00.000Z"},
        /* a second re-drive: the earlier pair replaced, not repeated */
        {false, {{"origin", "a"}, {"redrive_count", "1"}, {"redriven_at", "2026-11-01T00:00:00.000Z"},
                 DLQ_HEADERS("db_rejected", "raw_payments"), {"origin", "b"}}, 1,
         "origin=a,origin=b,redrive_count=2,redriven_at=2026-11-02T10:00:00.000Z"},
        /* any dlq_* header (the alerter's too) goes; lookalikes stay; NULL values stay NULL */
        {false, {{"dlq_attempts", "4"}, {"source_region", "eu"}, {"dlq", "x"}, {"empty", NULL},
                 {"source_offset", "9"}, {"xdlq_reason", "y"}}, 2,
         "source_region=eu,dlq=x,empty=(null),xdlq_reason=y,redrive_count=3,"
         "redriven_at=2026-11-02T10:00:00.000Z"},
        {true, {{0}}, 0, "redrive_count=1,redriven_at=2026-11-02T10:00:00.000Z"},
        {false, {{0}}, 41, "redrive_count=42,redriven_at=2026-11-02T10:00:00.000Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        rd_kafka_headers_t *in = cases[i].no_headers ? NULL : headers_of(cases[i].in);
        rd_kafka_headers_t *out = redrive_headers(in, cases[i].count, NOW_MS);
        assert_non_null(out);
        headers_text(out, text, sizeof text);
        if (strcmp(text, cases[i].out)) fail_msg("case %zu:\n got %s\nwant %s", i, text, cases[i].out);
        if (in) { /* the input is left as it was (it belongs to the consumed message) */
            size_t n = 0;
            while (cases[i].in[n].name) n++;
            assert_int_equal(rd_kafka_header_cnt(in), n);
            rd_kafka_headers_destroy(in);
        }
        rd_kafka_headers_destroy(out);
    }
    static const struct {
        const char *name;
        bool dlq;
    } names[] = {{"dlq_reason", true},     {"dlq_error", true},        {"dlq_time", true},
                 {"source_topic", true},   {"source_partition", true}, {"source_offset", true},
                 {"dlq_future", true},     {"source", false},          {"payment_id", false},
                 {"redrive_count", false}, {"dlqreason", false},       {"source_topics", false}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (redrive_header_is_dlq(names[i].name) != names[i].dlq) fail_msg("%s", names[i].name);
}

/* ---- the summary -------------------------------------------------------------------------------- */

static char *print_tally(const redrive_tally *t, bool dry_run) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    redrive_tally_print(t, dry_run, f);
    fclose(f);
    return buf;
}

static void test_tally(void **state) {
    (void)state;
    static const struct {
        redrive_decision d;
        uint64_t n;
    } adds[] = {
        {{REDRIVE_PRODUCE, "db_rejected", "raw_payments", 0}, 2},
        {{REDRIVE_FILTERED, "invalid_payment", "raw_payments", 0}, 1},
        {{REDRIVE_PRODUCE, "db_rejected", "raw_payments", 1}, 1}, /* same row: count not a key */
        {{REDRIVE_MAX_REDRIVES, "db_rejected", "raw_payments", 3}, 1},
        {{REDRIVE_NO_SOURCE, "-", "", 0}, 1},
        {{REDRIVE_PRODUCE, "db_rejected", "payment_outcomes", 0}, 1},
    };
    redrive_tally *t = redrive_tally_new();
    assert_non_null(t);
    char *out = print_tally(t, false);
    assert_string_equal(out, "dlq_reason           target                   action         messages\n"
                             "redrive read=0 produced=0 skipped=0 filtered=0 no_source=0 max_redrives=0 no_value=0\n");
    free(out);
    for (size_t i = 0; i < sizeof adds / sizeof adds[0]; i++)
        assert_int_equal(redrive_tally_add(t, &adds[i].d, adds[i].n), 0);
    assert_int_equal(redrive_tally_count(t, REDRIVE_PRODUCE), 4);
    assert_int_equal(redrive_tally_count(t, REDRIVE_FILTERED), 1);
    assert_int_equal(redrive_tally_count(t, REDRIVE_NO_SOURCE), 1);
    assert_int_equal(redrive_tally_count(t, REDRIVE_MAX_REDRIVES), 1);
    out = print_tally(t, false);
    assert_string_equal(out,
        "dlq_reason           target                   action         messages\n"
        "-                    -                        no_source      1\n"
        "db_rejected          payment_outcomes         produced       1\n"
        "db_rejected          raw_payments             produced       3\n"
        "db_rejected          raw_payments             max_redrives   1\n"
        "invalid_payment      raw_payments             filtered       1\n"
        "redrive read=7 produced=4 skipped=3 filtered=1 no_source=1 max_redrives=1 no_value=0 reason:-=1 "
        "reason:db_rejected=5 reason:invalid_payment=1\n");
    free(out);
    out = print_tally(t, true);
    assert_non_null(strstr(out, "db_rejected          raw_payments             would_produce  3\n"));
    assert_non_null(strstr(out, "redrive read=7 produced=0 skipped=3 would_produce=4 filtered=1 "
                                "no_source=1 max_redrives=1 no_value=0 reason:-=1 reason:db_rejected=5 "
                                "reason:invalid_payment=1 dry_run=true\n"));
    free(out);
    redrive_tally_destroy(t);
    redrive_tally_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_options),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_tally),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
