/* Unit tests for scorer/expire: the bound of payment-retention-days and when a round is due. The rounds
 * themselves are common/sweep's (test_common), their SQL is exercised against PostgreSQL by
 * tests/integration/test_scorer_retention.sh. */
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expire_days_bounds),
        cmocka_unit_test(test_expire_due),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
