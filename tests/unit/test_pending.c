/* Unit tests for scorer/pending: the schedule of the re-try rounds of pending labels. A round is
 * steps of PENDING_SCAN labels spread to PENDING_SHARE_PCT % of the time, it ends with a short
 * step, and the pause before the next one doubles while rounds apply nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pending.h"

#define S 1000000LL /* a second in microseconds */
#define T0 (1000 * S)

/* A round of three steps: the cursor follows the steps, the next step is due after 19 times the
 * last one's duration (5 %), the short step ends the round with its totals; the next round starts
 * from the beginning after the shortest pause (the round applied something). */
static void test_pending_round(void **state) {
    (void)state;
    pending *p = pending_new(T0);
    int64_t left = -1, applied = -1;
    assert_non_null(p);
    assert_int_equal(T0, pending_due_us(p));
    assert_string_equal("-infinity", pending_cursor(p));
    assert_false(pending_step_done(p, T0 + 10000, 10000, PENDING_SCAN, 0, "t1", &left, &applied));
    assert_string_equal("t1", pending_cursor(p));
    assert_int_equal(T0 + 10000 + 19 * 10000, pending_due_us(p));
    assert_false(pending_step_done(p, T0 + S, 20000, PENDING_SCAN + 7, 2, "t2", &left, &applied));
    assert_string_equal("t2", pending_cursor(p));
    assert_int_equal(T0 + S + 19 * 20000, pending_due_us(p));
    assert_true(pending_step_done(p, T0 + 2 * S, 5000, 10, 1, "t3", &left, &applied));
    assert_int_equal(2 * PENDING_SCAN + 7 + 10 - 3, left);
    assert_int_equal(3, applied);
    assert_string_equal("-infinity", pending_cursor(p));
    assert_int_equal(T0 + 2 * S + PENDING_PAUSE_MIN_MS * 1000LL, pending_due_us(p));
    /* an empty index: a round of one step, examining nothing */
    assert_true(pending_step_done(p, T0 + 4 * S, 100, 0, 0, "", &left, &applied));
    assert_int_equal(0, left);
    pending_destroy(p);
    pending_destroy(NULL);
}

/* Rounds that apply nothing: 1 s, 2 s, 4 s ... up to PENDING_PAUSE_MAX_MS between them; one that
 * applies something brings the pause back to 1 s. */
static void test_pending_backoff(void **state) {
    (void)state;
    pending *p = pending_new(T0);
    int64_t left, applied, now = T0, want = PENDING_PAUSE_MIN_MS, rounds = 0;
    for (; rounds < 20; rounds++) {
        assert_true(pending_step_done(p, now, 1000, 3, 0, "t", &left, &applied));
        assert_int_equal(3, left);
        assert_int_equal(now + want * 1000, pending_due_us(p));
        now = pending_due_us(p);
        want = want * 2 > PENDING_PAUSE_MAX_MS ? PENDING_PAUSE_MAX_MS : want * 2;
    }
    assert_int_equal(PENDING_PAUSE_MAX_MS, want);
    assert_true(pending_step_done(p, now, 1000, 3, 1, "t", &left, &applied)); /* applied one */
    assert_int_equal(now + PENDING_PAUSE_MIN_MS * 1000LL, pending_due_us(p));
    pending_destroy(p);
}

/* A kick between rounds makes the next round due at once with the shortest pause; during a round
 * it changes nothing (the round goes on from its cursor). */
static void test_pending_kick(void **state) {
    (void)state;
    pending *p = pending_new(T0);
    int64_t left, applied, now = T0;
    for (int i = 0; i < 6; i++) { /* the pause grows to 64 s */
        assert_true(pending_step_done(p, now, 1000, 0, 0, "", &left, &applied));
        now += 1000;
    }
    assert_true(pending_due_us(p) > now + 10 * S);
    pending_kick(p, now);
    assert_int_equal(now, pending_due_us(p));
    assert_true(pending_step_done(p, now, 1000, 0, 0, "", &left, &applied));
    assert_int_equal(now + PENDING_PAUSE_MIN_MS * 1000LL, pending_due_us(p)); /* back to 1 s */
    assert_false(pending_step_done(p, now, 1000, PENDING_SCAN, 0, "t9", &left, &applied));
    int64_t due = pending_due_us(p);
    pending_kick(p, now - 5 * S);
    assert_int_equal(due, pending_due_us(p));
    assert_string_equal("t9", pending_cursor(p));
    pending_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pending_round),
        cmocka_unit_test(test_pending_backoff),
        cmocka_unit_test(test_pending_kick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
