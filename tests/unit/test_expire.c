/* Unit tests for scorer/expire: the bound of payment-retention-days, when a round is due, and the
 * share of the loop's time it may take. The rounds themselves are common/sweep's (test_common),
 * their SQL is exercised against PostgreSQL by tests/integration/test_scorer_retention.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "expire.h"
#include "metrics.h"

/* 0 (keep forever) or at least 30 days: the message names the option and says why. */
static void test_expire_days_bounds(void **state) {
    (void)state;
    static const struct {
        int64_t days;
        int rc;
    } cases[] = {{0, 0}, {1, -1}, {7, -1}, {8, -1}, {29, -1}, {EXPIRE_MIN_DAYS, 0}, {30, 0},
                 {400, 0}, {3650, 0}};
    assert_int_equal(30, EXPIRE_MIN_DAYS);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[512] = "";
        assert_int_equal(cases[i].rc, expire_check_days(cases[i].days, err, sizeof err));
        if (cases[i].rc == 0) {
            assert_string_equal("", err);
        } else {
            assert_non_null(strstr(err, "payment-retention-days"));
            assert_non_null(strstr(err, "at least 30"));
            assert_non_null(strstr(err, "raw_payments"));  /* why: redelivery */
            assert_non_null(strstr(err, "chargebacks"));   /* why: late labels */
        }
    }
}

/* Off (0 days): never due; on: due at once. The counter has a series per table from the start,
 * also when off. */
static void test_expire_due(void **state) {
    (void)state;
    metrics *m = metrics_new();
    expire *off = expire_new(0, 300, m), *on = expire_new(30, 300, NULL);
    assert_non_null(off);
    assert_non_null(on);
    assert_int_equal(INT64_MAX, expire_due_us(off));
    assert_true(expire_due_us(on) < INT64_MAX);
    size_t len;
    char *text = metrics_render(m, &len);
    const char *tables[] = {"payments", "decisions", "alerts", "alert_history", "outcomes"};
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
        char want[128];
        snprintf(want, sizeof want, "fs_scorer_retention_deleted_total{table=\"%s\"} 0\n", tables[i]);
        if (!strstr(text, want)) fail_msg("missing %s in:\n%s", want, text);
    }
    free(text);
    expire_destroy(off);
    expire_destroy(on);
    expire_destroy(NULL);
    metrics_destroy(m);
}

/* While the consumer keeps up (its batches are not full, or there are none), each turn may run
 * slices for EXPIRE_BUDGET_MS, and nothing is owed. */
static void test_expire_budget_keeping_up(void **state) {
    (void)state;
    expire *e = expire_new(30, 300, NULL);
    assert_int_equal(EXPIRE_BUDGET_MS, expire_budget_ms(e)); /* before any turn */
    expire_turn(e, 40000, false);
    assert_int_equal(EXPIRE_BUDGET_MS, expire_budget_ms(e));
    expire_spent(e, 250000); /* a slow slice: owed nothing while keeping up */
    expire_turn(e, 0, false); /* a turn without a batch */
    assert_int_equal(EXPIRE_BUDGET_MS, expire_budget_ms(e));
    expire_destroy(e);
}

/* Behind (full batches): a batch earns 10 % of its time, at most EXPIRE_BUDGET_MS banked; a slice
 * longer than that is a debt the following batches pay back before the next one runs; catching up
 * (a batch that is not full) brings the full budget back at once. */
static void test_expire_budget_behind(void **state) {
    (void)state;
    expire *e = expire_new(30, 300, NULL);
    expire_turn(e, 100000, true); /* 100 ms batch: 10 ms */
    assert_int_equal(10, expire_budget_ms(e));
    expire_spent(e, 30000); /* the slice took 30 ms: 20 ms owed */
    expire_turn(e, 100000, true);
    assert_int_equal(0, expire_budget_ms(e));
    expire_turn(e, 100000, true);
    assert_int_equal(0, expire_budget_ms(e)); /* paid back, nothing earned yet */
    expire_turn(e, 5000, true);
    assert_int_equal(1, expire_budget_ms(e)); /* 0.5 ms: one slice at least */
    for (int i = 0; i < 100; i++) expire_turn(e, 1000000, true);
    assert_int_equal(EXPIRE_BUDGET_MS, expire_budget_ms(e)); /* the bank is capped */
    expire_spent(e, 5000000); /* a slice stuck 5 s on a lock */
    expire_turn(e, 100000, true);
    assert_int_equal(0, expire_budget_ms(e));
    expire_turn(e, 100000, false); /* caught up */
    assert_int_equal(EXPIRE_BUDGET_MS, expire_budget_ms(e));
    expire_destroy(e);
}

/* Under sustained load, slices of 25 ms (never cut short) run whenever the budget allows: they
 * take 10 % of the batches' time, give or take a slice, and still run regularly. */
static void test_expire_share_sustained(void **state) {
    (void)state;
    expire *e = expire_new(30, 300, NULL);
    int64_t batches_us = 0, retention_us = 0, runs = 0;
    for (int turn = 0; turn < 2000; turn++) {
        int64_t batch = 60000 + (turn % 7) * 10000; /* 60 .. 120 ms */
        expire_turn(e, batch, true);
        batches_us += batch;
        if (expire_budget_ms(e) > 0) {
            expire_spent(e, 25000);
            retention_us += 25000;
            runs++;
        }
    }
    double share = (double)retention_us / (double)batches_us;
    print_message("retention: %.2f %% of the batches' time, %lld runs\n", 100 * share, (long long)runs);
    assert_true(share > 0.095 && share < 0.105);
    assert_true(runs > 500);
    expire_destroy(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expire_days_bounds),
        cmocka_unit_test(test_expire_due),
        cmocka_unit_test(test_expire_budget_keeping_up),
        cmocka_unit_test(test_expire_budget_behind),
        cmocka_unit_test(test_expire_share_sustained),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
