/* Unit tests for dbhealth (common/dbhealth.h): a table of event sequences, each checked for the
 * age of the last answer, up, and stuck at one moment; and a writer and a reader on two threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dbhealth.h"

#define T0 1000000000LL /* a monotonic clock is far from 0; 0 would read as "nothing in flight" */
#define MS(x) (T0 + (int64_t)(x) * 1000)

typedef enum ev_kind { EV_END = 0, EV_START, EV_ANSWERED, EV_FAILED, EV_STAMP, EV_UP, EV_DOWN } ev_kind;

typedef struct ev {
    ev_kind kind;
    int64_t at_ms; /* since T0 (EV_UP / EV_DOWN: unused) */
} ev;

typedef struct dbhealth_case {
    const char *name;
    bool up_at_start;      /* created at T0 */
    ev evs[6];             /* up to the first EV_END */
    int64_t now_ms, limit_ms;
    int64_t age_ms;
    bool up, stuck;
} dbhealth_case;

static const dbhealth_case CASES[] = {
    {"created: answered then", true, {{0}}, 400, 1000, 400, true, false},
    {"not connected yet: down, not stuck within the limit", false, {{0}}, 1000, 1000, 1000, false, false},
    {"not connected yet: stuck past the limit", false, {{0}}, 1001, 1000, 1001, false, true},
    {"idle, up, an old answer: not stuck", true, {{0}}, 60000, 1000, 60000, true, false},
    {"in flight up to the limit: not stuck", true, {{EV_START, 100}}, 1100, 1000, 1100, true, false},
    {"in flight past the limit: stuck", true, {{EV_START, 100}}, 1101, 1000, 1101, true, true},
    {"in flight past the limit, down: stuck", false, {{EV_START, 5000}}, 6001, 1000, 6001, false, true},
    {"answered: age from its end", true, {{EV_START, 100}, {EV_ANSWERED, 300}}, 800, 1000, 500, true, false},
    {"failed, answered lately: not stuck yet", true, {{EV_START, 100}, {EV_FAILED, 900}},
     1000, 1000, 1000, false, false},
    {"failed, no answer for longer than the limit: stuck", true, {{EV_START, 100}, {EV_FAILED, 900}},
     1001, 1000, 1001, false, true},
    {"failed, then answered: up, not stuck", true,
     {{EV_START, 100}, {EV_FAILED, 2000}, {EV_START, 2100}, {EV_ANSWERED, 2200}},
     3000, 1000, 800, true, false},
    {"answer stamp only: the age restarts, up unchanged", false, {{EV_STAMP, 700}},
     900, 1000, 200, false, false},
    {"answer stamp only: does not end the trip in flight", true, {{EV_START, 100}, {EV_STAMP, 200}},
     1500, 1000, 1300, true, true},
    {"down without a trip (a reconnect failed)", true, {{EV_DOWN, 0}}, 2000, 1000, 2000, false, true},
    {"up again without an answer: the age keeps growing", true, {{EV_DOWN, 0}, {EV_UP, 0}},
     2000, 1000, 2000, true, false},
};

static void replay(dbhealth *h, const ev *evs) {
    for (const ev *e = evs; e->kind != EV_END; e++) {
        switch (e->kind) {
        case EV_START: dbhealth_trip_start(h, MS(e->at_ms)); break;
        case EV_ANSWERED: dbhealth_trip_end(h, MS(e->at_ms), true); break;
        case EV_FAILED: dbhealth_trip_end(h, MS(e->at_ms), false); break;
        case EV_STAMP: dbhealth_answered(h, MS(e->at_ms)); break;
        case EV_UP: dbhealth_set_up(h, true); break;
        case EV_DOWN: dbhealth_set_up(h, false); break;
        case EV_END: break;
        }
    }
}

static void test_dbhealth_table(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const dbhealth_case *c = &CASES[i];
        dbhealth *h = dbhealth_new(T0, c->up_at_start);
        assert_non_null(h);
        replay(h, c->evs);
        int64_t now = MS(c->now_ms);
        print_message("%s\n", c->name);
        assert_int_equal(dbhealth_age_ms(h, now), c->age_ms);
        assert_int_equal(dbhealth_up(h), c->up);
        assert_int_equal(dbhealth_stuck(h, now, c->limit_ms), c->stuck);
        dbhealth_destroy(h);
    }
    dbhealth_destroy(NULL);
}

/* Ages are whole milliseconds, truncated (the old per-process copies divided the same way). */
static void test_dbhealth_age_truncates(void **state) {
    (void)state;
    dbhealth *h = dbhealth_new(T0, true);
    assert_non_null(h);
    assert_int_equal(dbhealth_age_ms(h, T0 + 999), 0);
    assert_int_equal(dbhealth_age_ms(h, T0 + 1999), 1);
    assert_false(dbhealth_stuck(h, T0 + 5000999, 5000)); /* up: an old answer alone is not stuck */
    dbhealth_set_up(h, false);
    assert_false(dbhealth_stuck(h, T0 + 5000999, 5000)); /* 5000 ms: not more than the limit */
    assert_true(dbhealth_stuck(h, T0 + 5001000, 5000));
    dbhealth_destroy(h);
}

/* One thread writes (as the consume or dispatch thread), another reads (as the admin thread):
 * every age the reader sees is one the writer stored (never torn), up and answered move together
 * in trip_end. */
typedef struct race {
    dbhealth *h;
    atomic_bool done;
} race;

static void *writer(void *arg) {
    race *r = arg;
    for (int64_t i = 1; i <= 200000; i++) {
        dbhealth_trip_start(r->h, MS(i));
        dbhealth_trip_end(r->h, MS(i), i % 2 == 0);
    }
    atomic_store(&r->done, true);
    return NULL;
}

static void test_dbhealth_threads(void **state) {
    (void)state;
    race r = {.h = dbhealth_new(T0, true)};
    pthread_t t;
    assert_non_null(r.h);
    assert_int_equal(pthread_create(&t, NULL, writer, &r), 0);
    int64_t now = MS(300000), last = INT64_MAX;
    while (!atomic_load(&r.done)) {
        int64_t age = dbhealth_age_ms(r.h, now);
        assert_true(age >= 100000 && age <= 300000); /* answered at T0 or at an even i */
        assert_true(age <= last);                    /* answers only move forward */
        last = age;
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(dbhealth_age_ms(r.h, now), 100000); /* the last answer: i = 200000 */
    assert_true(dbhealth_up(r.h));
    assert_false(dbhealth_stuck(r.h, now, 1000));
    dbhealth_destroy(r.h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dbhealth_table),
        cmocka_unit_test(test_dbhealth_age_truncates),
        cmocka_unit_test(test_dbhealth_threads),
    };
    return cmocka_run_group_tests_name("dbhealth", tests, NULL, NULL);
}
