/* Unit tests for scorer/prune: the arithmetic of pruning shared by several workers, table-driven.
 *
 * The contract under test: a prune deletes only what every live worker still needs (the least
 * needed-from, minus each set's reach), and a payment is too late when its windows reach below
 * what any prune deleted (a recorded horizon) or below its own worker's needed-from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "buckets.h"
#include "prune.h"

#define MIN 60000LL
#define H BUCKETS_HOUR_MS
#define T0 1700000000000LL /* an arbitrary event time, ms */
#define N PRUNE_NONE

static void test_needed_from(void **state) {
    (void)state;
    assert_true(prune_needed_from(0, T0, H) == PRUNE_NONE); /* no batch yet */
    assert_true(prune_needed_from(T0 - 10 * MIN, T0, H) == T0 - 10 * MIN - H);
    assert_true(prune_needed_from(T0 + 5 * H, T0, H) == T0 - H); /* dated in the future: capped */
    assert_true(prune_needed_from(T0, T0, 0) == T0);
}

typedef struct cutoff_case {
    const char *name;
    int64_t own, others;
    int64_t want_from; /* every cutoff is want_from - reach[set] */
} cutoff_case;

static const cutoff_case CUTOFF_CASES[] = {
    {"alone", T0, N, T0},
    {"a lagging live worker holds the prune back", T0, T0 - 3 * H, T0 - 3 * H},
    {"workers ahead change nothing", T0, T0 + 3 * H, T0},
    {"equal", T0, T0, T0},
};

static void test_cutoffs(void **state) {
    (void)state;
    int64_t reach[PRUNE_SETS], cutoff[PRUNE_SETS];
    prune_reach(30 * MIN, reach);
    assert_true(reach[PRUNE_VELOCITY] == 30 * MIN);
    assert_true(reach[PRUNE_HOUR] == 25 * H);
    assert_true(reach[PRUNE_DAY] == 61 * 24 * H);
    for (size_t i = 0; i < sizeof CUTOFF_CASES / sizeof CUTOFF_CASES[0]; i++) {
        const cutoff_case *c = &CUTOFF_CASES[i];
        prune_cutoffs(c->own, c->others, reach, cutoff);
        for (int k = 0; k < PRUNE_SETS; k++)
            if (cutoff[k] != c->want_from - reach[k])
                fail_msg("%s: set %d: cutoff %lld, want %lld", c->name, k, (long long)cutoff[k],
                         (long long)(c->want_from - reach[k]));
    }
}

typedef struct late_case {
    const char *name;
    int64_t own;                   /* needed-from of the worker */
    int64_t horizon[PRUNE_SETS];
    int64_t t;                     /* the payment's event time */
    int want_late;
} late_case;

/* reach: 30 min exact, 25 h hour buckets, 61 d day buckets */
static const late_case LATE_CASES[] = {
    {"nothing pruned anywhere, no watermark", N, {N, N, N}, T0 - 400 * 24 * H, 0},
    {"own cutoff only: at needed-from", T0, {N, N, N}, T0, 0},
    {"own cutoff only: 1 ms before needed-from", T0, {N, N, N}, T0 - 1, 1},
    /* another worker pruned exact events before T0 - 30 min: a payment at T0 - 1 reaches below */
    {"below another worker's exact horizon", T0 - 5 * H, {T0 - 30 * MIN, N, N}, T0 - 1, 1},
    {"at another worker's exact horizon + reach", T0 - 5 * H, {T0 - 30 * MIN, N, N}, T0, 0},
    /* a fresh worker (no watermark) after another pruned: its old payments are late */
    {"fresh worker below the horizon", N, {T0 - 30 * MIN, T0 - 25 * H, T0 - 61 * 24 * H},
     T0 - 2 * H, 1},
    {"fresh worker above the horizon", N, {T0 - 30 * MIN, T0 - 25 * H, T0 - 61 * 24 * H},
     T0 + MIN, 0},
    /* only hour buckets pruned that far (e.g. by a worker with a longer exact window) */
    {"below the hour-bucket horizon", N, {N, T0 - 25 * H, N}, T0 - 1, 1},
    {"below the day-bucket horizon", N, {N, N, T0 - 61 * 24 * H}, T0 - 1, 1},
    {"horizons behind the own cutoff: own wins", T0, {T0 - 5 * H, N, N}, T0 - MIN, 1},
};

static void test_late_before(void **state) {
    (void)state;
    int64_t reach[PRUNE_SETS];
    prune_reach(30 * MIN, reach);
    for (size_t i = 0; i < sizeof LATE_CASES / sizeof LATE_CASES[0]; i++) {
        const late_case *c = &LATE_CASES[i];
        int late = c->t < prune_late_before(c->own, c->horizon, reach);
        if (late != c->want_late) fail_msg("%s: late %d, want %d", c->name, late, c->want_late);
    }
    /* the cutoffs a prune applies become horizons: a payment a worker itself considers on time
     * (at its needed-from) is on time for the horizons too */
    int64_t cutoff[PRUNE_SETS];
    prune_cutoffs(T0, T0 - 3 * H, reach, cutoff);
    assert_true(prune_late_before(T0 - 3 * H, cutoff, reach) == T0 - 3 * H);
    assert_true(prune_late_before(N, cutoff, reach) == T0 - 3 * H);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_needed_from),
        cmocka_unit_test(test_cutoffs),
        cmocka_unit_test(test_late_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
