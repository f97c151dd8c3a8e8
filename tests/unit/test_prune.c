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

/* The watermark pruning follows: the slowest partition that is still active. A step is a persisted
 * payment (partition >= 0) or a revocation (partition < 0 forgets -partition - 1). */
typedef struct part_step {
    int32_t partition;
    int64_t event_ms, now_ms;
} part_step;

typedef struct part_case {
    const char *name;
    part_step steps[6];
    size_t nsteps;
    int64_t now_ms, want;
} part_case;

#define IDLE (10 * MIN)
#define FALLBACK (T0 + 99 * H) /* the worker's newest event time */

static const part_case PART_CASES[] = {
    {"no partition yet: the fallback", {{0}}, 0, T0, FALLBACK},
    {"one partition: its newest event", {{0, T0 - H, T0}, {0, T0 - 2 * H, T0}}, 2, T0, T0 - H},
    /* a backlog on partition 1 (a day behind) and live traffic on partition 0 */
    {"the slowest active partition", {{0, T0, T0}, {1, T0 - 24 * H, T0}, {0, T0 + H, T0}}, 3, T0,
     T0 - 24 * H},
    {"an idle partition no longer holds back", {{1, T0 - 24 * H, T0 - IDLE - 1}, {0, T0, T0}}, 2,
     T0, T0},
    {"idle exactly at the bound still counts", {{1, T0 - 24 * H, T0 - IDLE}, {0, T0, T0}}, 2, T0,
     T0 - 24 * H},
    {"a revoked partition is forgotten", {{0, T0, T0}, {1, T0 - 24 * H, T0}, {-2, 0, 0}}, 3, T0, T0},
    {"all idle: the fallback", {{0, T0, T0 - IDLE - 1}, {1, T0 - H, T0 - IDLE - 1}}, 2, T0, FALLBACK},
};

static void test_partition_watermark(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof PART_CASES / sizeof PART_CASES[0]; i++) {
        const part_case *c = &PART_CASES[i];
        prune_part parts[4];
        size_t n = 0;
        for (size_t k = 0; k < c->nsteps; k++) {
            const part_step *st = &c->steps[k];
            if (st->partition < 0) prune_part_forget(parts, &n, -st->partition - 1);
            else prune_part_seen(parts, &n, 4, st->partition, st->event_ms, st->now_ms);
        }
        int64_t got = prune_watermark(parts, n, c->now_ms, IDLE, FALLBACK);
        if (got != c->want) fail_msg("%s: %lld, want %lld", c->name, (long long)got, (long long)c->want);
    }
    /* beyond the capacity a partition is not tracked (the others still are) */
    prune_part parts[1];
    size_t n = 0;
    prune_part_seen(parts, &n, 1, 0, T0, T0);
    prune_part_seen(parts, &n, 1, 1, T0 - H, T0);
    assert_int_equal(n, 1);
    assert_true(prune_watermark(parts, n, T0, IDLE, FALLBACK) == T0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partition_watermark),
        cmocka_unit_test(test_needed_from),
        cmocka_unit_test(test_cutoffs),
        cmocka_unit_test(test_late_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
