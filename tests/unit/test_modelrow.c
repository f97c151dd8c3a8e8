/* Unit tests for scorer/modelrow.c: the model row the live scorer builds straight from
 * rules_features equals, bit for bit, the row training and evaluation build from the stored
 * evidence (model_row_from_json(rules_features_json(...))), for every column kind: integers,
 * reals, keys absent for a payment, derived averages (count 0 included), names no key fills.
 * Table-driven cases with expected values, then random feature structs. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "model.h"
#include "modelrow.h"
#include "rules.h"

#define T0 1795000000000LL /* 2026-11-18T09:46:40Z */
#define MAXN 256

/* Windows of every entity, a delayed merchant window and merchant risk (with the scorer's default
 * feature windows added below). */
static const char RULES[] =
    "{\"version\":\"t\",\"thresholds\":{\"review\":30,\"block\":70},\"blend\":{\"model_weight\":50},"
    "\"rules\":["
    "{\"code\":\"A\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"
    "{\"kind\":\"count_at_least\",\"entity\":\"user\",\"window_seconds\":300,\"count\":3}},"
    "{\"code\":\"B\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"
    "{\"kind\":\"distinct_users_at_least\",\"entity\":\"card\",\"window_seconds\":1800,\"count\":3}},"
    "{\"code\":\"C\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"
    "{\"kind\":\"sum_at_least\",\"entity\":\"ip\",\"window_seconds\":600,\"amount\":\"100\"}},"
    "{\"code\":\"D\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"
    "{\"kind\":\"count_at_least\",\"entity\":\"device\",\"window_seconds\":7200,\"count\":3}},"
    "{\"code\":\"E\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"
    "{\"kind\":\"count_at_least\",\"entity\":\"email\",\"window_seconds\":86400,\"count\":3}},"
    "{\"code\":\"F\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"
    "{\"kind\":\"merchant_risk_at_least\",\"window_days\":7,\"delay_days\":7,\"ratio\":\"0.5\"}}]}";

/* Names no key of the rules fills, and string keys: always missing. */
static const char *const EXTRA[] = {"no_such_feature", "ip_avg_minor_999s",
                                    "merchant_avg_minor_86400s_delay_604800s", "_avg_minor_1s",
                                    "currency", "country"};
#define NEXTRA (sizeof EXTRA / sizeof EXTRA[0])

typedef struct fixture {
    rules *r;
    model *m;
    modelrow *x;
    pay_payment p;
    char *names[MAXN];
    size_t n;
} fixture;

/* Every numeric key of a full feature object (all vault entries, ratios, model score), a derived
 * average per sum, the extras; in reverse order (binding must not depend on it). */
static void collect_names(fixture *fx) {
    rules_features f;
    memset(&f, 0, sizeof f);
    f.p = &fx->p;
    for (size_t i = 0; i < RULES_MAX_FEATURE_WINDOWS; i++) f.count[i] = 3, f.sum_minor[i] = 9000;
    for (int e = 0; e < RULES_ENT_COUNT; e++) f.vault[e] = (rules_vault_info){true, 2, T0 - 5000, T0, 1, 0};
    f.has_model = true;
    json_t *o = rules_features_json(fx->r, &f), *v;
    const char *key, *all[MAXN];
    size_t n = 0;
    char avg[MODEL_NAME_MAX];
    json_object_foreach(o, key, v) {
        const char *s = strstr(key, "_sum_minor_");
        if (json_is_number(v)) all[n++] = strdup(key);
        if (!s) continue;
        snprintf(avg, sizeof avg, "%.*s_avg_minor_%s", (int)(s - key), key, s + strlen("_sum_minor_"));
        all[n++] = strdup(avg);
    }
    for (size_t i = 0; i < NEXTRA; i++) all[n++] = strdup(EXTRA[i]);
    assert_true(n < MAXN);
    for (size_t i = 0; i < n; i++) fx->names[i] = (char *)all[n - 1 - i];
    fx->n = n;
    json_decref(o);
}

/* A tiny model with those names (its trees do not matter: only its columns). */
static int setup(void **state) {
    static fixture fx;
    char err[512];
    memset(&fx, 0, sizeof fx);
    fx.r = rules_parse(RULES, strlen(RULES), "t.json", err, sizeof err);
    assert_non_null(fx.r);
    assert_int_equal(rules_add_feature_windows(fx.r, "user:1d,7d,30d merchant:1d", "1,7,30", 7, err,
                                               sizeof err), 0);
    memset(&fx.p, 0, sizeof fx.p);
    strcpy(fx.p.currency, "EUR");
    fx.p.event_time_ms = T0;
    collect_names(&fx);
    enum { ROWS = 8 };
    float *x = calloc(ROWS * fx.n, sizeof *x), y[ROWS];
    for (size_t i = 0; i < ROWS * fx.n; i++) x[i] = (float)(i % 7);
    for (int i = 0; i < ROWS; i++) y[i] = (float)(i % 2);
    model_params prm;
    model_params_default(&prm);
    prm.rounds = 1;
    prm.threads = 1;
    fx.m = model_train(x, y, ROWS, fx.n, (const char *const *)fx.names, "t", &prm, err, sizeof err);
    free(x);
    if (!fx.m) fail_msg("model_train: %s", err);
    fx.x = modelrow_new(fx.m, fx.r, err, sizeof err);
    assert_non_null(fx.x);
    *state = &fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    modelrow_destroy(fx->x);
    model_destroy(fx->m);
    rules_destroy(fx->r);
    for (size_t i = 0; i < fx->n; i++) free(fx->names[i]);
    return 0;
}

static size_t col(const fixture *fx, const char *name) {
    for (size_t i = 0; i < fx->n; i++)
        if (strcmp(fx->names[i], name) == 0) return i;
    fail_msg("no column %s", name);
    return 0;
}

/* The direct row and the row from the evidence JSON, bit for bit (NAN = NAN). */
static void check_parity(const fixture *fx, const rules_features *f, const char *what) {
    float direct[MAXN], via_json[MAXN];
    json_t *o = rules_features_json(fx->r, f);
    assert_non_null(o);
    modelrow_fill(fx->x, f, direct);
    model_row_from_json(fx->m, o, via_json);
    json_decref(o);
    for (size_t i = 0; i < fx->n; i++) {
        if (isnan(direct[i]) && isnan(via_json[i])) continue;
        if (memcmp(&direct[i], &via_json[i], sizeof(float)) != 0)
            fail_msg("%s: column %s: direct %.9g, from the JSON %.9g", what, fx->names[i],
                     (double)direct[i], (double)via_json[i]);
    }
}

/* ---- table ------------------------------------------------------------------------------------- */

typedef struct row_case {
    const char *name;
    int64_t amount, count, sum;   /* every window */
    bool vault, seen;             /* card vault entry present; seen before */
    bool has_model;
    double model_score;
    float avg_1d, ratio_1d, card_age, score; /* expected (NAN: missing) */
} row_case;

static const row_case CASES[] = {
    {"nothing yet: averages missing with count 0, no ratio, no vault", 500, 0, 0, false, false,
     false, 0, NAN, NAN, NAN, NAN},
    {"count 0 with a sum: still missing (never divide by 0)", 500, 0, 700, false, false, false, 0,
     NAN, NAN, NAN, NAN},
    {"the payment alone: average = amount, no earlier payment for a ratio", 500, 1, 500, true,
     false, false, 0, 500, NAN, NAN, NAN},
    {"history: average and ratio", 100, 4, 1000, true, true, false, 0, 250,
     (float)(100.0 * 3 / 900), 5, NAN},
    {"earlier amounts summing to 0: no ratio", 100, 3, 100, true, true, true, 0.5, 100.0f / 3,
     NAN, 5, 0.5f},
    {"model score present", 100, 2, 300, false, false, true, 0.7312345678901234, 150,
     (float)(100.0 * 1 / 200), NAN, (float)0.7312345678901234},
    {"large integers round to float the same way", (1LL << 53) + 1, 3, (1LL << 60) + 12345, true,
     true, false, 0, (float)((1LL << 60) + 12345) / 3.0f,
     (float)((double)((1LL << 53) + 1) * 2.0 / (double)((1LL << 60) + 12345 - (1LL << 53) - 1)), 5,
     NAN},
};

static void fill_case(const fixture *fx, const row_case *c, pay_payment *p, rules_features *f) {
    *p = fx->p;
    p->amount_minor = c->amount;
    memset(f, 0, sizeof *f);
    f->p = p;
    for (size_t i = 0; i < RULES_MAX_FEATURE_WINDOWS; i++) f->count[i] = c->count, f->sum_minor[i] = c->sum;
    if (c->vault)
        f->vault[RULES_ENT_CARD] = (rules_vault_info){true, c->seen ? 2 : 0, c->seen ? T0 - 5000 : 0,
                                                      c->seen ? T0 - 1000 : 0, 0, 0};
    f->has_model = c->has_model;
    f->model_score = c->model_score;
}

static void expect(const fixture *fx, const float *row, const char *name, float want, const char *what) {
    float got = row[col(fx, name)];
    if (isnan(want) ? !isnan(got) : got != want)
        fail_msg("%s: %s = %.9g, expected %.9g", what, name, (double)got, (double)want);
}

static void test_table(void **state) {
    const fixture *fx = *state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const row_case *c = &CASES[i];
        pay_payment p;
        rules_features f;
        float row[MAXN];
        fill_case(fx, c, &p, &f);
        check_parity(fx, &f, c->name);
        modelrow_fill(fx->x, &f, row);
        expect(fx, row, "user_avg_minor_86400s", c->avg_1d, c->name);
        expect(fx, row, "user_amount_ratio_86400s", c->ratio_1d, c->name);
        expect(fx, row, "vault_card_age_s", c->card_age, c->name);
        expect(fx, row, "model_score", c->score, c->name);
        expect(fx, row, "amount_minor", (float)c->amount, c->name);
        expect(fx, row, "no_such_feature", NAN, c->name);
        expect(fx, row, "currency", NAN, c->name);
        expect(fx, row, "vault_ip_seen", NAN, c->name); /* no ip on the payment */
    }
}

/* ---- random structs ---------------------------------------------------------------------------- */

static uint64_t rng = 88172645463325252ULL;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Mostly small (0 and 1 often: the edges of averages and ratios), sometimes huge or negative. */
static int64_t rnd_int(void) {
    switch (next() % 6) {
    case 0: return 0;
    case 1: return 1;
    case 2: return (int64_t)(next() % 10);
    case 3: return (int64_t)(next() % 1000000);
    case 4: return (int64_t)(next() >> 12); /* up to 2^52: no overflow in the features' arithmetic */
    default: return -(int64_t)(next() % 1000);
    }
}

static void random_features(const fixture *fx, pay_payment *p, rules_features *f) {
    *p = fx->p;
    p->amount_minor = rnd_int();
    p->event_time_ms = T0 + (int64_t)(next() % 100000000);
    if (next() % 2) strcpy(p->country, "DE");
    memset(f, 0, sizeof *f);
    f->p = p;
    for (size_t i = 0; i < RULES_MAX_FEATURE_WINDOWS; i++) {
        f->count[i] = rnd_int();
        bool consistent = next() % 3 == 0 && f->count[i] < 1000 && p->amount_minor < (1LL << 50);
        f->sum_minor[i] = consistent ? p->amount_minor * f->count[i] : rnd_int();
        f->distinct_users[i] = rnd_int();
    }
    f->weekend = next() % 2;
    f->night = next() % 2;
    for (int e = 0; e < RULES_ENT_COUNT; e++)
        f->vault[e] = (rules_vault_info){next() % 2 == 0, rnd_int(), p->event_time_ms - rnd_int(),
                                         p->event_time_ms, rnd_int(), rnd_int()};
    for (int i = 0; i < RULES_MAX_RISK; i++) f->risk_frauds[i] = rnd_int();
    f->has_model = next() % 2;
    f->model_score = (double)(next() >> 11) / (double)(1ULL << 53);
}

static void test_random(void **state) {
    const fixture *fx = *state;
    char what[64];
    for (int i = 0; i < 3000; i++) {
        pay_payment p;
        rules_features f;
        random_features(fx, &p, &f);
        snprintf(what, sizeof what, "random struct %d", i);
        check_parity(fx, &f, what);
    }
}

/* The columns no payment can fill are reported (the scorer warns about them at load). */
static void test_unbound(void **state) {
    const fixture *fx = *state;
    char names[1024];
    size_t k = modelrow_unbound(fx->x, names, sizeof names);
    assert_int_equal(modelrow_ncols(fx->x), fx->n);
    assert_int_equal(k, NEXTRA + 1); /* + model_score: only known after the prediction */
    for (size_t i = 0; i < NEXTRA; i++) assert_non_null(strstr(names, EXTRA[i]));
    assert_non_null(strstr(names, "model_score"));
    assert_null(strstr(names, "user_avg_minor_86400s"));
    assert_int_equal(modelrow_unbound(fx->x, NULL, 0), k);
}

/* The feature references: numeric keys only; the last of a name wins, as in a JSON parser. */
static void test_find(void **state) {
    const fixture *fx = *state;
    assert_true(rules_feature_find(fx->r, "amount_minor") >= 0);
    assert_true(rules_feature_find(fx->r, "merchant_count_604800s_delay_604800s") >= 0);
    assert_true(rules_feature_find(fx->r, "merchant_risk_30d_delay_7d") >= 0);
    assert_true(rules_feature_find(fx->r, "vault_email_age_s") >= 0);
    assert_int_equal(rules_feature_find(fx->r, "currency"), -1);
    assert_int_equal(rules_feature_find(fx->r, "user_count_1s"), -1);
    assert_int_equal(rules_feature_find(fx->r, ""), -1);
    assert_int_equal(rules_feature_get(fx->r, -1, NULL, NULL, NULL), RULES_VALUE_ABSENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_unbound),
        cmocka_unit_test(test_find),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
