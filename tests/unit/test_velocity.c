/* Unit tests for scorer/velocity: event-time window arithmetic, table-driven.
 *
 * The contract under test: a window of length w at time t holds the events with t - w < time <= t
 * (an event exactly w before t is out, ties at t are in, the payment counts itself), and the result
 * depends only on the set of events, not on the order they were added or where they came from
 * (rows read from PostgreSQL or payments of the current batch). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "velocity.h"

#define MIN 60000LL
#define T0 1700000000000LL /* an arbitrary event time, ms */

typedef struct ev_spec {
    rules_entity entity;
    const char *key;
    const char *user;
    int64_t dt_ms; /* relative to T0 */
    int64_t amount;
} ev_spec;

typedef struct window_case {
    const char *name;
    ev_spec events[8];
    int nevents;
    rules_entity entity;
    const char *key;
    int64_t dt_ms;  /* query time relative to T0 */
    int64_t window_ms;
    velocity_agg want;
} window_case;

static const window_case WINDOW_CASES[] = {
    {"event exactly w before t is out", {{RULES_ENT_USER, "u1", "u1", -5 * MIN, 100}}, 1,
     RULES_ENT_USER, "u1", 0, 5 * MIN, {0, 0, 0}},
    {"event 1 ms inside the window is in", {{RULES_ENT_USER, "u1", "u1", -5 * MIN + 1, 100}}, 1,
     RULES_ENT_USER, "u1", 0, 5 * MIN, {1, 100, 1}},
    {"event at t is in (the payment itself)", {{RULES_ENT_USER, "u1", "u1", 0, 7}}, 1,
     RULES_ENT_USER, "u1", 0, 5 * MIN, {1, 7, 1}},
    {"event after t is out (a later payment of the batch)",
     {{RULES_ENT_USER, "u1", "u1", 0, 7}, {RULES_ENT_USER, "u1", "u1", 1, 9}}, 2,
     RULES_ENT_USER, "u1", 0, 5 * MIN, {1, 7, 1}},
    {"ties at t all count",
     {{RULES_ENT_USER, "u1", "u1", 0, 1}, {RULES_ENT_USER, "u1", "u1", 0, 2},
      {RULES_ENT_USER, "u1", "u1", 0, 4}}, 3,
     RULES_ENT_USER, "u1", 0, 5 * MIN, {3, 7, 1}},
    {"late event counts in its own window, out of order",
     {{RULES_ENT_USER, "u1", "u1", 0, 1}, {RULES_ENT_USER, "u1", "u1", -20 * MIN, 2},
      {RULES_ENT_USER, "u1", "u1", -4 * MIN, 4}, {RULES_ENT_USER, "u1", "u1", -6 * MIN, 8}}, 4,
     RULES_ENT_USER, "u1", -3 * MIN, 5 * MIN, {2, 12, 1}},
    {"other keys and other entities with the same key do not count",
     {{RULES_ENT_USER, "u1", "u1", 0, 1}, {RULES_ENT_USER, "u2", "u2", 0, 2},
      {RULES_ENT_MERCHANT, "u1", "u3", 0, 4}, {RULES_ENT_USER, "u10", "u10", 0, 8}}, 4,
     RULES_ENT_USER, "u1", 0, 5 * MIN, {1, 1, 1}},
    {"distinct users per card",
     {{RULES_ENT_CARD, "c1", "a", -1 * MIN, 1}, {RULES_ENT_CARD, "c1", "b", -2 * MIN, 1},
      {RULES_ENT_CARD, "c1", "a", -3 * MIN, 1}, {RULES_ENT_CARD, "c1", "c", 0, 1},
      {RULES_ENT_CARD, "c1", "d", -31 * MIN, 1}, {RULES_ENT_CARD, "c2", "e", 0, 1}}, 6,
     RULES_ENT_CARD, "c1", 0, 30 * MIN, {4, 4, 3}},
    {"no counterpart is not a distinct one (as in the bucket windows)",
     {{RULES_ENT_USER, "u1", "cardX", -1 * MIN, 1}, {RULES_ENT_USER, "u1", "", 0, 1}}, 2,
     RULES_ENT_USER, "u1", 0, 5 * MIN, {2, 2, 1}},
    {"only payments without a counterpart: none distinct",
     {{RULES_ENT_USER, "u1", "", -1 * MIN, 1}, {RULES_ENT_USER, "u1", NULL, 0, 1}}, 2,
     RULES_ENT_USER, "u1", 0, 5 * MIN, {2, 2, 0}},
    {"unknown key", {{RULES_ENT_USER, "u1", "u1", 0, 1}}, 1, RULES_ENT_USER, "nobody", 0, 5 * MIN,
     {0, 0, 0}},
    {"empty key never counts", {{RULES_ENT_USER, "", "u1", 0, 1}}, 1, RULES_ENT_USER, "", 0,
     5 * MIN, {0, 0, 0}},
    {"no events at all", {{0}}, 0, RULES_ENT_USER, "u1", 0, 5 * MIN, {0, 0, 0}},
};

static void add_spec(velocity *v, const ev_spec *s) {
    velocity_event e = {s->entity, s->key, s->user, NULL, T0 + s->dt_ms, s->amount};
    assert_int_equal(velocity_add(v, &e), 0);
}

static void check_case(velocity *v, const window_case *c, const char *how) {
    velocity_agg got;
    velocity_window(v, c->entity, c->key, T0 + c->dt_ms, c->window_ms, &got);
    if (got.count != c->want.count || got.sum_minor != c->want.sum_minor ||
        got.distinct_users != c->want.distinct_users)
        fail_msg("%s (%s): got count=%lld sum=%lld distinct=%lld, want %lld/%lld/%lld", c->name, how,
                 (long long)got.count, (long long)got.sum_minor, (long long)got.distinct_users,
                 (long long)c->want.count, (long long)c->want.sum_minor,
                 (long long)c->want.distinct_users);
}

static void test_window_table(void **state) {
    (void)state;
    velocity *v = velocity_new();
    assert_non_null(v);
    for (size_t i = 0; i < sizeof WINDOW_CASES / sizeof WINDOW_CASES[0]; i++) {
        const window_case *c = &WINDOW_CASES[i];
        /* in order */
        velocity_reset(v);
        for (int j = 0; j < c->nevents; j++) add_spec(v, &c->events[j]);
        assert_int_equal(velocity_build(v), 0);
        check_case(v, c, "in order");
        /* reversed: the result must not depend on arrival order (the index is reused) */
        velocity_reset(v);
        for (int j = c->nevents - 1; j >= 0; j--) add_spec(v, &c->events[j]);
        assert_int_equal(velocity_build(v), 0);
        check_case(v, c, "reversed");
    }
    velocity_destroy(v);
}

/* A small rule set: user 5 min, ip 10 min, card distinct users 30 min. */
static const char RULES_JSON[] =
    "{\"version\":\"t1\",\"thresholds\":{\"review\":30,\"block\":70},\"rules\":["
    "{\"code\":\"RAPID_USER\",\"description\":\"d\",\"severity\":\"high\",\"weight\":35,"
    "\"message\":\"m\",\"predicate\":{\"kind\":\"count_at_least\",\"entity\":\"user\","
    "\"window_seconds\":300,\"count\":4}},"
    "{\"code\":\"IP_VELOCITY\",\"description\":\"d\",\"severity\":\"high\",\"weight\":35,"
    "\"message\":\"m\",\"predicate\":{\"kind\":\"count_at_least\",\"entity\":\"ip\","
    "\"window_seconds\":600,\"count\":5}},"
    "{\"code\":\"CARD_REUSE\",\"description\":\"d\",\"severity\":\"high\",\"weight\":45,"
    "\"message\":\"m\",\"predicate\":{\"kind\":\"distinct_users_at_least\",\"entity\":\"card\","
    "\"window_seconds\":1800,\"count\":3}}]}";

static rules *test_rules(void) {
    char err[256];
    rules *r = rules_parse(RULES_JSON, sizeof RULES_JSON - 1, "test", err, sizeof err);
    if (!r) fail_msg("rules_parse: %s", err);
    return r;
}

static void make_payment(pay_payment *p, const char *id, const char *user, const char *ip,
                         const char *last4, int64_t dt_ms, int64_t amount) {
    memset(p, 0, sizeof *p);
    snprintf(p->payment_id, sizeof p->payment_id, "%s", id);
    snprintf(p->user_id, sizeof p->user_id, "%s", user);
    snprintf(p->merchant_id, sizeof p->merchant_id, "m1");
    snprintf(p->ip_digest, sizeof p->ip_digest, "%s", ip);
    snprintf(p->card_last_four, sizeof p->card_last_four, "%s", last4);
    snprintf(p->currency, sizeof p->currency, "EUR");
    p->currency_exp = 2;
    p->amount_minor = amount;
    p->event_time_ms = T0 + dt_ms;
    p->ingest_time_ms = T0 + dt_ms;
}

static int window_of(const rules *r, rules_entity e) {
    for (size_t i = 0; i < rules_window_count(r); i++)
        if (rules_window_at(r, i)->entity == e) return (int)i;
    fail_msg("no window for entity %d", (int)e);
    return -1;
}

/* Events split between "already in PostgreSQL" and "new in this batch": the features see both,
 * each payment counts itself, a later payment of the batch does not count for an earlier one. */
static void test_features_db_plus_batch(void **state) {
    (void)state;
    rules *r = test_rules();
    velocity *v = velocity_new();
    /* From the DB: two earlier payments of u1 (one just outside 5 min), card 1234 used by x and y. */
    const velocity_event db[] = {
        {RULES_ENT_USER, "u1", "u1", NULL, T0 - 5 * MIN, 100},
        {RULES_ENT_USER, "u1", "u1", NULL, T0 - 4 * MIN, 200},
        {RULES_ENT_CARD, "last4:1234", "x", NULL, T0 - 10 * MIN, 1},
        {RULES_ENT_CARD, "last4:1234", "y", NULL, T0 - 20 * MIN, 1},
        {RULES_ENT_IP, "ip-a", "x", NULL, T0 - 11 * MIN, 1},
    };
    for (size_t i = 0; i < sizeof db / sizeof db[0]; i++) assert_int_equal(velocity_add(v, &db[i]), 0);
    /* The batch: two new payments of u1 (at T0 and T0 + 1 min), arriving out of order. */
    pay_payment p1, p2;
    make_payment(&p1, "11111111-1111-4111-8111-111111111111", "u1", "ip-a", "1234", 0, 300);
    make_payment(&p2, "22222222-2222-4222-8222-222222222222", "u1", "", "1234", 1 * MIN, 400);
    const pay_payment *batch[] = {&p2, &p1};
    for (size_t i = 0; i < 2; i++) {
        velocity_event evs[RULES_ENT_COUNT];
        char keys[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1], cps[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1];
        size_t n = velocity_events_of(r, batch[i], evs, keys, cps);
        assert_int_equal(n, batch[i] == &p1 ? 3 : 2); /* p2 has no IP: no ip event */
        for (size_t j = 0; j < n; j++) assert_int_equal(velocity_add(v, &evs[j]), 0);
    }
    assert_int_equal(velocity_build(v), 0);

    rules_features f;
    int wu = window_of(r, RULES_ENT_USER), wi = window_of(r, RULES_ENT_IP),
        wc = window_of(r, RULES_ENT_CARD);
    velocity_features(v, r, &p1, &f);
    assert_ptr_equal(f.p, &p1);
    assert_int_equal(f.count[wu], 2);      /* T0-4min and itself; T0-5min is out, p2 is later */
    assert_int_equal(f.sum_minor[wu], 500);
    assert_int_equal(f.count[wi], 1);      /* the DB one at -11 min is outside 10 min */
    assert_int_equal(f.distinct_users[wc], 3); /* x, y, u1 */
    velocity_features(v, r, &p2, &f);
    assert_int_equal(f.count[wu], 2);      /* p1 and itself; -4 min is exactly 5 min before: out */
    assert_int_equal(f.sum_minor[wu], 700);
    assert_int_equal(f.count[wi], 0);      /* no IP on p2 */
    assert_int_equal(f.distinct_users[wc], 3);
    assert_int_equal(f.count[wc], 4);

    velocity_destroy(v);
    rules_destroy(r);
}

/* The read ranges: per (entity, key), from the earliest payment minus the entity's largest window
 * (exclusive) to the latest payment (inclusive); entities without an identifier are skipped. */
static void test_ranges(void **state) {
    (void)state;
    rules *r = test_rules();
    pay_payment a, b, c;
    make_payment(&a, "11111111-1111-4111-8111-111111111111", "u1", "ip-a", "", 0, 1);
    make_payment(&b, "22222222-2222-4222-8222-222222222222", "u1", "ip-b", "", 2 * MIN, 1);
    make_payment(&c, "33333333-3333-4333-8333-333333333333", "u2", "ip-a", "9999", -1 * MIN, 1);
    const pay_payment *ps[] = {&a, &b, &c};
    size_t n;
    velocity_range *rg = velocity_ranges(r, ps, 3, &n);
    assert_non_null(rg);
    /* user u1, user u2, ip-a, ip-b, card last4:9999 */
    assert_int_equal(n, 5);
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (rg[i].entity == RULES_ENT_USER && strcmp(rg[i].key, "u1") == 0) {
            assert_int_equal(rg[i].from_ms, T0 - 5 * MIN);
            assert_int_equal(rg[i].to_ms, T0 + 2 * MIN);
            seen |= 1;
        } else if (rg[i].entity == RULES_ENT_IP && strcmp(rg[i].key, "ip-a") == 0) {
            assert_int_equal(rg[i].from_ms, T0 - 1 * MIN - 10 * MIN);
            assert_int_equal(rg[i].to_ms, T0);
            seen |= 2;
        } else if (rg[i].entity == RULES_ENT_CARD) {
            assert_string_equal(rg[i].key, "last4:9999");
            assert_int_equal(rg[i].from_ms, T0 - 1 * MIN - 30 * MIN);
            seen |= 4;
        }
    }
    assert_int_equal(seen, 7);
    free(rg);
    assert_null(velocity_ranges(r, ps, 0, &n));
    assert_int_equal(n, 0);
    assert_int_equal(velocity_max_window_ms(r), 30 * MIN);
    rules_destroy(r);
}

/* Many events, many keys: the interning table and the arena grow; results stay exact. */
static void test_many_events(void **state) {
    (void)state;
    velocity *v = velocity_new();
    char key[32], user[32];
    for (int round = 0; round < 2; round++) { /* the second round reuses the memory */
        velocity_reset(v);
        for (int i = 0; i < 20000; i++) {
            snprintf(key, sizeof key, "k%d", i % 500);
            snprintf(user, sizeof user, "u%d", i % 7);
            velocity_event e = {RULES_ENT_USER, key, user, NULL, T0 + i, 1};
            assert_int_equal(velocity_add(v, &e), 0);
        }
        assert_int_equal(velocity_build(v), 0);
        velocity_agg a;
        /* key k0 has events at T0 + 0, 500, 1000, ...; window (T0+10000-5000, T0+10000] */
        velocity_window(v, RULES_ENT_USER, "k0", T0 + 10000, 5000, &a);
        assert_int_equal(a.count, 10); /* 5500 .. 10000 step 500 */
        assert_int_equal(a.sum_minor, 10);
        assert_int_equal(a.distinct_users, 7);
    }
    velocity_destroy(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_table),
        cmocka_unit_test(test_features_db_plus_batch),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_many_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
