/* Unit tests for tools/replay.c: the handbook row -> payment/outcome mapping, pacing, the label
 * queue and percentiles. Expected ids and countries were computed independently (Python's
 * uuid.uuid5 and an FNV-1a of the same key). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "replay.h"

static const char HEADER[] = "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,"
                             "TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO\n";

static void parse_ok(const char *text, rpl_tx *tx) {
    rpl_cols cols;
    char err[128], line[256];
    assert_int_equal(rpl_header(HEADER, &cols, err, sizeof err), 0);
    snprintf(line, sizeof line, "%s", text);
    assert_int_equal(rpl_parse(line, &cols, tx, err, sizeof err), 0);
}

static void test_parse_and_map(void **state) {
    (void)state;
    rpl_tx tx;
    char id[37], body[512];
    parse_ok("0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0\n", &tx);
    assert_string_equal(tx.txid, "0");
    assert_int_equal(tx.time_ms, 1522540831000LL);
    assert_int_equal(tx.fraud, 0);
    rpl_payment_id(&tx, id);
    assert_string_equal(id, "ba2571a1-1915-5ad9-94c7-324d701ed01c");
    assert_true(rpl_payment_json(&tx, id, body, sizeof body) > 0);
    json_error_t je;
    json_t *p = json_loads(body, 0, &je);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "payment_id")), id);
    assert_string_equal(json_string_value(json_object_get(p, "user_id")), "cust-596");
    assert_string_equal(json_string_value(json_object_get(p, "merchant_id")), "term-3156");
    assert_string_equal(json_string_value(json_object_get(p, "amount")), "57.16");
    assert_string_equal(json_string_value(json_object_get(p, "currency")), "EUR");
    assert_string_equal(json_string_value(json_object_get(p, "card_fingerprint")), "hb-card-596");
    assert_string_equal(json_string_value(json_object_get(p, "country")), "DE");
    assert_string_equal(json_string_value(json_object_get(p, "timestamp")),
                        "2018-04-01T00:00:31.000Z");
    /* the label never travels with the payment */
    assert_null(json_object_get(p, "fraud"));
    assert_null(strstr(body, "FRAUD"));
    assert_int_equal(json_object_size(p), 9);
    json_decref(p);

    parse_ok("1466281,2018-08-31 23:59:59,0,12,0.00,0,152,1,1", &tx);
    rpl_payment_id(&tx, id);
    assert_string_equal(id, "6ab4a2dd-f634-540e-98d4-1d84dd15030e");
    assert_true(tx.clamped);
    assert_string_equal(tx.amount, "0.01");
    assert_int_equal(tx.fraud, 1);
    assert_string_equal(rpl_country("0"), "GB");
    parse_ok("2,2018-04-01 00:07:56,2,1365,146.0,476,0,0,0", &tx);
    assert_false(tx.clamped);
    assert_string_equal(tx.amount, "146.0");
}

static void test_parse_errors(void **state) {
    (void)state;
    rpl_cols cols;
    rpl_tx tx;
    char err[128], line[256];
    assert_int_equal(rpl_header("TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TX_AMOUNT", &cols, err,
                                sizeof err), -1);
    assert_non_null(strstr(err, "TERMINAL_ID"));
    /* columns in another order, no label column: fraud unknown */
    assert_int_equal(rpl_header("TX_AMOUNT,TERMINAL_ID,CUSTOMER_ID,TX_DATETIME,TRANSACTION_ID",
                                &cols, err, sizeof err), 0);
    assert_int_equal(cols.fraud, -1);
    snprintf(line, sizeof line, "10.5,7,8,2018-04-01 00:00:00,99");
    assert_int_equal(rpl_parse(line, &cols, &tx, err, sizeof err), 0);
    assert_int_equal(tx.fraud, -1);
    assert_string_equal(tx.terminal, "7");
    const char *bad[][2] = {
        {"10.5,7,8,2018-04-01 00:00:00", "columns"},
        {"10.555,7,8,2018-04-01 00:00:00,99", "TX_AMOUNT"},
        {"-1,7,8,2018-04-01 00:00:00,99", "TX_AMOUNT"},
        {"1,7,x,2018-04-01 00:00:00,99", "CUSTOMER_ID"},
        {"1,7,8,2018-04-01T00:00:00,99", "TX_DATETIME"},
        {"1,7,8,2018-13-01 00:00:00,99", "TX_DATETIME"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(line, sizeof line, "%s", bad[i][0]);
        assert_int_equal(rpl_parse(line, &cols, &tx, err, sizeof err), -1);
        assert_non_null(strstr(err, bad[i][1]));
    }
}

static void test_country_distribution(void **state) {
    (void)state;
    static const char *const cc[] = {"FR", "BE", "DE", "NL", "ES", "IT", "GB", "PT"};
    /* counts over customers 0..4999 (computed independently) */
    static const int want[] = {1256, 994, 745, 498, 505, 495, 248, 259};
    int got[8] = {0};
    char id[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof id, "%d", i);
        const char *c = rpl_country(id);
        assert_string_equal(c, rpl_country(id)); /* stable */
        for (int k = 0; k < 8; k++) got[k] += strcmp(c, cc[k]) == 0;
    }
    for (int k = 0; k < 8; k++) assert_int_equal(got[k], want[k]);
}

static void test_outcome_json(void **state) {
    (void)state;
    char body[256];
    assert_true(rpl_outcome_json(1, 1522540831000LL + 7 * 86400000LL, body, sizeof body) > 0);
    assert_string_equal(body, "{\"outcome\":\"confirmed_fraud\",\"known_at\":"
                              "\"2018-04-08T00:00:31.000Z\",\"reason\":\"replay: handbook label\"}");
    assert_true(rpl_outcome_json(0, 0, body, sizeof body) > 0);
    assert_non_null(strstr(body, "\"legitimate\""));
    assert_int_equal(rpl_outcome_json(0, 0, body, 10), -1);
}

static void test_pacing_queue_percentiles(void **state) {
    (void)state;
    assert_int_equal(rpl_due(5000, 1000000, 1000000), 0);
    assert_int_equal(rpl_due(5000, 1000000, 1001000), 5);     /* 1 ms at 5,000/s */
    assert_int_equal(rpl_due(5000, 1000000, 3000000), 10000);
    assert_int_equal(rpl_due(0.5, 0, 3000000), 1);
    assert_true(rpl_due(0, 0, 1) == INT64_MAX);               /* as fast as accepted */
    assert_int_equal(rpl_due(100, 5, 1), 0);                  /* clock before the start */

    rpl_labels q = {0};
    assert_null(rpl_labels_peek(&q));
    for (int i = 0; i < 3000; i++) {
        rpl_label l = {.known_ms = i, .fraud = i % 2};
        assert_int_equal(rpl_labels_push(&q, &l), 0);
        if (i % 3 == 0) { /* interleaved pops make the ring wrap before it grows */
            assert_int_equal(rpl_labels_peek(&q)->known_ms, i / 3);
            rpl_labels_pop(&q);
        }
    }
    for (int i = 1000; i < 3000; i++) {
        assert_int_equal(rpl_labels_peek(&q)->known_ms, i);
        rpl_labels_pop(&q);
    }
    assert_null(rpl_labels_peek(&q));
    rpl_labels_pop(&q); /* empty: nothing */
    rpl_labels_free(&q);
    /* queued out of order (answers from several connections): popped by due time */
    unsigned seed = 7;
    int64_t last = -1;
    for (int i = 0; i < 5000; i++) {
        rpl_label l = {.known_ms = rand_r(&seed) % 100000};
        assert_int_equal(rpl_labels_push(&q, &l), 0);
    }
    for (int i = 0; i < 5000; i++) {
        assert_true(rpl_labels_peek(&q)->known_ms >= last);
        last = rpl_labels_peek(&q)->known_ms;
        rpl_labels_pop(&q);
    }
    assert_null(rpl_labels_peek(&q));
    rpl_labels_free(&q);

    int64_t v[] = {50, 10, 40, 20, 30, 100, 90, 80, 70, 60};
    assert_int_equal(rpl_percentile(v, 10, 50), 50);
    assert_int_equal(rpl_percentile(v, 10, 90), 90);
    assert_int_equal(rpl_percentile(v, 10, 99), 100);
    assert_int_equal(rpl_percentile(v, 10, 100), 100);
    assert_int_equal(rpl_percentile(v, 1, 50), 10);
    assert_int_equal(rpl_percentile(v, 0, 50), 0);
}

/* Many ids in, some out, in an order that exercises the backward shift after removals. */
static void test_idmap(void **state) {
    (void)state;
    rpl_idmap m = {0};
    rpl_tx tx = {0};
    char id[37];
    int64_t v;
    assert_int_equal(rpl_idmap_take(&m, "ba2571a1-1915-5ad9-94c7-324d701ed01c", &v), 0);
    assert_int_equal(rpl_idmap_put(&m, "not-a-uuid", 1), -1);
    for (int i = 0; i < 20000; i++) {
        snprintf(tx.txid, sizeof tx.txid, "%d", i);
        rpl_payment_id(&tx, id);
        assert_int_equal(rpl_idmap_put(&m, id, i), 0);
    }
    assert_int_equal(m.n, 20000);
    for (int i = 0; i < 20000; i += 2) { /* every other one */
        snprintf(tx.txid, sizeof tx.txid, "%d", i);
        rpl_payment_id(&tx, id);
        assert_int_equal(rpl_idmap_take(&m, id, &v), 1);
        assert_int_equal(v, i);
        assert_int_equal(rpl_idmap_take(&m, id, &v), 0); /* a duplicate decision: ignored */
    }
    for (int i = 1; i < 20000; i += 2) {
        snprintf(tx.txid, sizeof tx.txid, "%d", i);
        rpl_payment_id(&tx, id);
        assert_int_equal(rpl_idmap_take(&m, id, &v), 1);
        assert_int_equal(v, i);
    }
    assert_int_equal(m.n, 0);
    rpl_idmap_free(&m);
}

/* The customers in flight: a second request may not take a customer the first one holds until all
 * of its payments there are finished; the request holding it may add more. */
static void test_busy(void **state) {
    (void)state;
    rpl_busy b = {0};
    assert_false(rpl_busy_elsewhere(&b, "17", 1)); /* empty */
    assert_int_equal(rpl_busy_add(&b, "17", 1), 0);
    assert_int_equal(rpl_busy_add(&b, "17", 1), 0);
    assert_int_equal(rpl_busy_add(&b, "4", 1), 0);
    assert_false(rpl_busy_elsewhere(&b, "17", 1)); /* its own request */
    assert_true(rpl_busy_elsewhere(&b, "17", 2));
    assert_false(rpl_busy_elsewhere(&b, "171", 2)); /* another customer */
    assert_int_equal(rpl_busy_count(&b), 2);
    rpl_busy_done(&b, "17");
    assert_true(rpl_busy_elsewhere(&b, "17", 2)); /* one of its two is still unanswered */
    rpl_busy_done(&b, "17");
    assert_false(rpl_busy_elsewhere(&b, "17", 2));
    assert_true(rpl_busy_elsewhere(&b, "4", 2));
    assert_int_equal(rpl_busy_add(&b, "17", 2), 0); /* now request 2 takes it */
    assert_true(rpl_busy_elsewhere(&b, "17", 1));
    rpl_busy_done(&b, "4");
    rpl_busy_done(&b, "4"); /* more done than added: ignored */
    assert_int_equal(rpl_busy_count(&b), 1);
    /* many customers: the map grows and removals keep the others findable */
    char id[16];
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "c%d", i);
        assert_int_equal(rpl_busy_add(&b, id, 3), 0);
    }
    for (int i = 0; i < 20000; i += 2) {
        snprintf(id, sizeof id, "c%d", i);
        rpl_busy_done(&b, id);
    }
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "c%d", i);
        assert_int_equal(rpl_busy_elsewhere(&b, id, 4), i % 2 == 1);
    }
    assert_int_equal(rpl_busy_count(&b), 10001);
    rpl_busy_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_map),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_country_distribution),
        cmocka_unit_test(test_outcome_json),
        cmocka_unit_test(test_pacing_queue_percentiles),
        cmocka_unit_test(test_idmap),
        cmocka_unit_test(test_busy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
