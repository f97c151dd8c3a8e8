/* Unit tests for tools/evalmetrics.c against small hand-computed cases (ties included). The
 * expected values are those of sklearn's roc_auc_score / average_precision_score and of the
 * handbook's card_precision_top_k() on the same inputs (worked out by hand in the comments). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "evalmetrics.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define EPS 1e-12

static void test_auc_ap_no_ties(void **state) {
    (void)state;
    /* sklearn's documentation example: y = [0,0,1,1], s = [0.1,0.4,0.35,0.8] */
    evm_item it[] = {{0.1, 0, 0, 1}, {0.4, 0, 0, 2}, {0.35, 1, 0, 3}, {0.8, 1, 0, 4}};
    char err[128];
    double v;
    assert_int_equal(evm_auc_roc(it, N(it), &v, err, sizeof err), 0);
    assert_true(fabs(v - 0.75) < EPS);                /* 3 of 4 (fraud, genuine) pairs in order */
    assert_int_equal(evm_average_precision(it, N(it), &v, err, sizeof err), 0);
    assert_true(fabs(v - 5.0 / 6.0) < EPS);           /* 0.5 * 1 + 0.5 * 2/3 */
}

static void test_auc_ap_ties(void **state) {
    (void)state;
    char err[128];
    double v;
    /* a fraud tied with a genuine one counts 1/2: pairs 0.5+1 for each fraud -> 3/4 */
    evm_item a[] = {{0.5, 1, 0, 1}, {0.5, 0, 0, 2}, {0.5, 1, 0, 3}, {0.2, 0, 0, 4}};
    assert_int_equal(evm_auc_roc(a, N(a), &v, err, sizeof err), 0);
    assert_true(fabs(v - 0.75) < EPS);
    /* the three 0.5 enter together: P = 2/3 at R = 1 */
    assert_int_equal(evm_average_precision(a, N(a), &v, err, sizeof err), 0);
    assert_true(fabs(v - 2.0 / 3.0) < EPS);

    /* frauds 0.7, 0.7, 0.3; genuine 0.9, 0.7, 0.3:
     * AUC = (2 * (0 + 0.5 + 1) + (0 + 0 + 0.5)) / 9 = 3.5 / 9
     * AP: threshold 0.9 adds nothing; 0.7: R 2/3, P 2/4 -> 1/3; 0.3: R 1, P 3/6 -> 1/6 */
    evm_item b[] = {{0.9, 0, 0, 1}, {0.7, 1, 0, 2}, {0.7, 0, 0, 3},
                    {0.7, 1, 0, 4}, {0.3, 1, 0, 5}, {0.3, 0, 0, 6}};
    assert_int_equal(evm_auc_roc(b, N(b), &v, err, sizeof err), 0);
    assert_true(fabs(v - 3.5 / 9.0) < EPS);
    assert_int_equal(evm_average_precision(b, N(b), &v, err, sizeof err), 0);
    assert_true(fabs(v - 0.5) < EPS);

    /* all scores equal: AUC 1/2, AP = the fraud rate */
    evm_item c[] = {{1, 1, 0, 1}, {1, 0, 0, 2}, {1, 0, 0, 3}, {1, 0, 0, 4}};
    assert_int_equal(evm_auc_roc(c, N(c), &v, err, sizeof err), 0);
    assert_true(fabs(v - 0.5) < EPS);
    assert_int_equal(evm_average_precision(c, N(c), &v, err, sizeof err), 0);
    assert_true(fabs(v - 0.25) < EPS);
}

static void test_undefined(void **state) {
    (void)state;
    char err[128];
    double v;
    evm_item g[] = {{0.1, 0, 0, 1}, {0.2, 0, 0, 2}};
    assert_int_equal(evm_auc_roc(g, N(g), &v, err, sizeof err), -1);
    assert_int_equal(evm_average_precision(g, N(g), &v, err, sizeof err), -1);
    evm_item f[] = {{0.1, 1, 0, 1}};
    assert_int_equal(evm_auc_roc(f, N(f), &v, err, sizeof err), -1);
    assert_int_equal(evm_auc_roc(f, 0, &v, err, sizeof err), -1);
    assert_int_equal(evm_card_precision_at_k(f, 0, 100, &v, NULL, 0, NULL, err, sizeof err), -1);
    assert_int_equal(evm_card_precision_at_k(f, 1, 0, &v, NULL, 0, NULL, err, sizeof err), -1);
}

/* k = 2.
 * day 0: card 1 {0.9 genuine, 0.2 fraud} -> (0.9, compromised); card 2 (0.8, -); card 3 (0.8, c);
 *        card 4 (0.1, c). Ranked 1, 2, 3, 4 (the 0.8 tie: smaller id first): top 2 = {1, 2}: 1/2;
 *        card 1 detected (card 3 is compromised but was not in the top k: not detected).
 * day 1: card 1 removed; card 4 (0.6, -), card 3 (0.5, c), card 5 (0.4, c): top {4, 3}: 1/2;
 *        card 3 detected.
 * day 3 (no day 2): card 3 removed; card 6 (0.7, -) alone: 0/2.
 * day 4: card 7 (0.3, c) alone: 1/2 (divided by k, not by the one card there: that would be 1).
 * mean = (0.5 + 0.5 + 0 + 0.5) / 4. */
static void test_card_precision(void **state) {
    (void)state;
    evm_item it[] = {
        {0.9, 0, 0, 1}, {0.2, 1, 0, 1}, {0.8, 0, 0, 2}, {0.8, 1, 0, 3}, {0.1, 1, 0, 4},
        {0.95, 1, 1, 1}, {0.5, 1, 1, 3}, {0.6, 0, 1, 4}, {0.4, 1, 1, 5},
        {0.9, 1, 3, 3}, {0.7, 0, 3, 6}, {0.3, 1, 4, 7},
    };
    char err[128];
    double mean, per_day[5];
    size_t ndays = 0;
    assert_int_equal(evm_card_precision_at_k(it, N(it), 2, &mean, per_day, 5, &ndays, err,
                                             sizeof err), 0);
    assert_int_equal(ndays, 4);
    assert_true(fabs(per_day[0] - 0.5) < EPS);
    assert_true(fabs(per_day[1] - 0.5) < EPS);
    assert_true(fabs(per_day[2] - 0.0) < EPS);
    assert_true(fabs(per_day[3] - 0.5) < EPS);
    assert_true(fabs(mean - 0.375) < EPS);
    /* the input order does not matter, and cap limits what is written */
    evm_item rev[N(it)];
    for (size_t i = 0; i < N(it); i++) rev[i] = it[N(it) - 1 - i];
    double one[1] = {-1};
    assert_int_equal(evm_card_precision_at_k(rev, N(rev), 2, &mean, one, 1, &ndays, err,
                                             sizeof err), 0);
    assert_true(fabs(mean - 0.375) < EPS);
    assert_true(fabs(one[0] - 0.5) < EPS);
    /* k = 1: day 0 card 1 (c) 1/1; day 1 card 4 (-) 0; day 3 card 3 (c, not detected) 1;
     * day 4 card 7 (c) 1 */
    assert_int_equal(evm_card_precision_at_k(it, N(it), 1, &mean, NULL, 0, NULL, err,
                                             sizeof err), 0);
    assert_true(fabs(mean - 0.75) < EPS);
}

/* since_day 3, delay 2: a card is known on day T when it has a fraud on a day in [3, T - 3]. */
static void test_drop_known_cards(void **state) {
    (void)state;
    char err[128];
    evm_item hist[] = {
        {0, 1, 5, 1},  /* card 1: fraud day 5 -> known from day 8 */
        {0, 1, 9, 2},  /* card 2: fraud day 9 -> known from day 12 */
        {0, 1, 2, 3},  /* card 3: fraud before since_day: never known */
        {0, 0, 5, 4},  /* card 4: genuine */
        {0, 1, 7, 1},  /* card 1 again, later: the first one counts */
    };
    evm_item test[] = {
        {0.1, 0, 8, 1}, {0.2, 0, 7, 1}, {0.3, 1, 12, 2}, {0.4, 1, 11, 2},
        {0.5, 0, 20, 3}, {0.6, 0, 20, 4}, {0.7, 1, 20, 9},
    };
    size_t n = evm_drop_known_cards(test, N(test), hist, N(hist), 3, 2, err, sizeof err);
    assert_int_equal(n, 5);
    double want[] = {0.2, 0.4, 0.5, 0.6, 0.7}; /* kept in order */
    for (size_t i = 0; i < n; i++) assert_true(fabs(test[i].score - want[i]) < EPS);

    /* history = the test set itself (the handbook's delay days inside the same array) */
    evm_item self[] = {{0.1, 1, 0, 1}, {0.2, 0, 1, 1}, {0.3, 0, 2, 1}, {0.4, 1, 2, 2}};
    n = evm_drop_known_cards(self, N(self), self, N(self), 0, 1, err, sizeof err);
    assert_int_equal(n, 3); /* card 1: fraud day 0, known from day 2 */
    assert_true(fabs(self[2].score - 0.4) < EPS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auc_ap_no_ties),
        cmocka_unit_test(test_auc_ap_ties),
        cmocka_unit_test(test_undefined),
        cmocka_unit_test(test_card_precision),
        cmocka_unit_test(test_drop_known_cards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
