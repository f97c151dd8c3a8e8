/* Unit tests of scorer/rules: every predicate kind at its boundary, scoring, decisions, ordering,
 * versioning, the JSON evidence, the default rule set, and a table of invalid files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "rules.h"

/* ---- helpers --------------------------------------------------------------------------------- */

#define TH "{\"review\":30,\"block\":70}"
#define FILE_OF(rules_) "{\"version\":\"2026.11.1\",\"thresholds\":" TH ",\"rules\":[" rules_ "]}"
#define RULE_W(code, weight, pred)                                                                 \
    "{\"code\":\"" code "\",\"severity\":\"high\",\"weight\":" #weight ",\"message\":\"msg " code  \
    "\",\"predicate\":" pred "}"
#define RULE(code, pred) RULE_W(code, 10, pred)
#define P_AMOUNT(a) "{\"kind\":\"amount_at_least\",\"amount\":\"" a "\"}"
/* 1000 in any currency, but 150000 yen and 1400000 won; without "amount": only those two. */
#define P_CCY "{\"kind\":\"amount_at_least\",\"amount\":\"1000\",\"currencies\":{\"JPY\":\"150000\",\"KRW\":\"1400000\"}}"
#define P_CCY_ONLY "{\"kind\":\"amount_at_least\",\"currencies\":{\"JPY\":\"150000\",\"KWD\":\"300.5\"}}"
#define P_CCY_B                                                                                    \
    "{\"kind\":\"amount_at_least\",\"currencies\":{\"KWD\":\"300.5\",\"JPY\":\"100000\","          \
    "\"CHF\":\"5000\"}}"

static void pay_init(pay_payment *p) {
    memset(p, 0, sizeof *p);
    strcpy(p->payment_id, "6f1c1a52-0d7e-4b8e-9a53-3c2b0f6c1d11");
    strcpy(p->user_id, "user-1");
    strcpy(p->merchant_id, "merchant-1");
    p->amount_minor = 1000;
    strcpy(p->currency, "EUR");
    p->currency_exp = 2;
    strcpy(p->payment_method, "card");
    p->event_time_ms = p->ingest_time_ms = 1795000000000;
}

/* pay_init()'s payment, for minor units of currency (exponent exp). */
static void pay_amount(pay_payment *p, const char *currency, int exp, int64_t minor) {
    pay_init(p);
    strcpy(p->currency, currency);
    p->currency_exp = exp;
    p->amount_minor = minor;
}

static rules *parse_ok(const char *text) {
    char err[512] = "";
    rules *r = rules_parse(text, strlen(text), "test.json", err, sizeof err);
    if (!r) fail_msg("unexpected parse error: %s", err);
    return r;
}

static bool hits_code(const rules_result *res, const char *code) {
    for (int i = 0; i < res->nhits; i++)
        if (strcmp(res->hits[i].code, code) == 0) return true;
    return false;
}

/* Evaluates a one-rule file on p (features f, p filled in) and says whether the rule hit. */
static bool one_rule_hits(const char *text, rules_features *f) {
    rules *r = parse_ok(text);
    rules_result res;
    rules_eval(r, f, &res);
    rules_destroy(r);
    return res.nhits == 1;
}

/* Case i of a table: text loads when error is NULL, else fails with an error containing it. */
static void expect_parse(size_t i, const char *text, const char *error) {
    char err[512] = "";
    rules *r = rules_parse(text, strlen(text), "test.json", err, sizeof err);
    if (!error) {
        if (!r) fail_msg("case %zu: unexpected error %s", i, err);
        rules_destroy(r);
        return;
    }
    if (r) {
        rules_destroy(r);
        fail_msg("case %zu loaded, expected error \"%s\"", i, error);
    }
    if (!strstr(err, error)) fail_msg("case %zu: error \"%s\" does not contain \"%s\"", i, err, error);
}

/* ---- predicates ------------------------------------------------------------------------------ */

static void test_amount_at_least(void **state) {
    static const struct {
        const char *file, *currency;
        int exp;
        int64_t minor;
        bool hit;
    } cases[] = {
        {FILE_OF(RULE("A", P_AMOUNT("1000"))), "EUR", 2, 100000, true}, /* exactly 1000.00 */
        {FILE_OF(RULE("A", P_AMOUNT("1000"))), "EUR", 2, 99999, false}, /* 999.99 */
        {FILE_OF(RULE("A", P_AMOUNT("1000"))), "JPY", 0, 1000, true},   /* JPY: no minor unit */
        {FILE_OF(RULE("A", P_AMOUNT("1000"))), "JPY", 0, 999, false},
        {FILE_OF(RULE("A", P_AMOUNT("1000"))), "KWD", 3, 1000000, true},
        {FILE_OF(RULE("A", P_AMOUNT("1000"))), "KWD", 3, 999999, false},
        {FILE_OF(RULE("A", P_AMOUNT("1000"))), "CLF", 4, 10000000, true},
        {FILE_OF(RULE("A", P_AMOUNT("1000"))), "CLF", 4, 9999999, false},
        {FILE_OF(RULE("A", P_AMOUNT("1000.50"))), "EUR", 2, 100050, true},
        {FILE_OF(RULE("A", P_AMOUNT("1000.50"))), "EUR", 2, 100049, false},
        {FILE_OF(RULE("A", P_AMOUNT("1000.50"))), "JPY", 0, 1000, false}, /* 1000 < 1000.50 */
        {FILE_OF(RULE("A", P_AMOUNT("1000.50"))), "JPY", 0, 1001, true},
        {FILE_OF(RULE("A", P_AMOUNT("1000.005"))), "EUR", 2, 100000, false},
        {FILE_OF(RULE("A", P_AMOUNT("1000.005"))), "EUR", 2, 100001, true},
        {FILE_OF(RULE("A", P_AMOUNT("0.5"))), "JPY", 0, 1, true},
        {FILE_OF(RULE("A", P_AMOUNT("0.01"))), "EUR", 2, 1, true},
        {FILE_OF(RULE("A", P_AMOUNT("1"))), "XXX", 5, 100000000, false}, /* exponent beyond ISO */
        /* per-currency amounts: the listed currency's own, the others "amount" */
        {FILE_OF(RULE("A", P_CCY)), "JPY", 0, 149999, false},
        {FILE_OF(RULE("A", P_CCY)), "JPY", 0, 150000, true},
        {FILE_OF(RULE("A", P_CCY)), "KRW", 0, 5000, false}, /* ~3 EUR: "amount" 1000 would hit */
        {FILE_OF(RULE("A", P_CCY)), "KRW", 0, 1400000, true},
        {FILE_OF(RULE("A", P_CCY)), "EUR", 2, 99999, false},
        {FILE_OF(RULE("A", P_CCY)), "EUR", 2, 100000, true},
        {FILE_OF(RULE("A", P_CCY_ONLY)), "EUR", 2, 100000000, false}, /* not listed, no "amount" */
        {FILE_OF(RULE("A", P_CCY_ONLY)), "JPY", 0, 150000, true},
        {FILE_OF(RULE("A", P_CCY_ONLY)), "KWD", 3, 300499, false}, /* 300.499 < 300.5 */
        {FILE_OF(RULE("A", P_CCY_ONLY)), "KWD", 3, 300500, true},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pay_payment p;
        rules_features f = {.p = &p};
        pay_amount(&p, cases[i].currency, cases[i].exp, cases[i].minor);
        if (one_rule_hits(cases[i].file, &f) != cases[i].hit)
            fail_msg("case %zu: %s %lld exp %d: expected %s", i, cases[i].file,
                     (long long)cases[i].minor, cases[i].exp, cases[i].hit ? "hit" : "no hit");
    }
}

/* Several amount rules, each with its own "currencies" (the set looks a payment's currency up once
 * for all of them, rules_eval): each rule's own amount for the codes it lists, its "amount" (or
 * nothing) for the others; the same on a copy of the set. */
static void test_amount_currencies_across_rules(void **state) {
    static const char file[] =
        FILE_OF(RULE("A", P_CCY) "," RULE("B", P_CCY_B) "," RULE("C", P_AMOUNT("2000")));
    static const struct {
        const char *currency;
        int exp;
        int64_t minor;
        const char *hits; /* the codes that hit, in file order */
    } cases[] = {
        {"EUR", 2, 100000, "A"},      {"EUR", 2, 200000, "AC"},   {"JPY", 0, 120000, "BC"},
        {"JPY", 0, 150000, "ABC"},    {"KRW", 0, 1400000, "AC"},  {"KRW", 0, 5000, "C"},
        {"KWD", 3, 300500, "B"},      {"KWD", 3, 300499, ""},     {"CHF", 2, 500000, "ABC"},
        {"CHF", 2, 499999, "AC"},     {"USD", 2, 99999, ""},
    };
    (void)state;
    rules *r = parse_ok(file), *copy = rules_copy(r);
    assert_non_null(copy);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pay_payment p;
        rules_features f = {.p = &p};
        pay_amount(&p, cases[i].currency, cases[i].exp, cases[i].minor);
        for (int c = 0; c < 2; c++) {
            rules_result res;
            char got[4] = "";
            size_t n = 0;
            rules_eval(c ? copy : r, &f, &res);
            for (const char *code = "ABC"; *code; code++)
                if (hits_code(&res, (char[]){*code, '\0'})) got[n++] = *code;
            if (strcmp(got, cases[i].hits) != 0)
                fail_msg("%s %lld%s: hits \"%s\", expected \"%s\"", cases[i].currency,
                         (long long)cases[i].minor, c ? " (copy)" : "", got, cases[i].hits);
        }
    }
    rules_destroy(r);
    rules_destroy(copy);
}

#define P_CIN(field)                                                                               \
    "{\"kind\":\"country_in\",\"field\":\"" field "\",\"countries\":[\"NG\",\"KP\"]}"
#define P_MISMATCH(a, b) "{\"kind\":\"country_mismatch\",\"fields\":[\"" a "\",\"" b "\"]}"

static void test_country_predicates(void **state) {
    static const struct {
        const char *file, *country, *billing, *shipping;
        bool hit;
    } cases[] = {
        {FILE_OF(RULE("C", P_CIN("country"))), "NG", "", "", true},
        {FILE_OF(RULE("C", P_CIN("country"))), "KP", "", "", true},
        {FILE_OF(RULE("C", P_CIN("country"))), "US", "", "", false},
        {FILE_OF(RULE("C", P_CIN("country"))), "", "", "", false},     /* absent never hits */
        {FILE_OF(RULE("C", P_CIN("country"))), "ng", "", "", false},   /* not a stored form */
        {FILE_OF(RULE("C", P_CIN("country"))), "", "NG", "NG", false}, /* other fields */
        {FILE_OF(RULE("C", P_CIN("billing_country"))), "US", "NG", "", true},
        {FILE_OF(RULE("C", P_CIN("shipping_country"))), "US", "US", "KP", true},
        {FILE_OF(RULE("M", P_MISMATCH("billing_country", "shipping_country"))), "", "US", "GB",
         true},
        {FILE_OF(RULE("M", P_MISMATCH("billing_country", "shipping_country"))), "", "US", "US",
         false},
        {FILE_OF(RULE("M", P_MISMATCH("billing_country", "shipping_country"))), "", "US", "",
         false},
        {FILE_OF(RULE("M", P_MISMATCH("billing_country", "shipping_country"))), "", "", "GB",
         false},
        {FILE_OF(RULE("M", P_MISMATCH("country", "billing_country"))), "DE", "FR", "", true},
        {FILE_OF(RULE("M", P_MISMATCH("country", "billing_country"))), "DE", "DE", "FR", false},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pay_payment p;
        rules_features f = {.p = &p};
        pay_init(&p);
        strcpy(p.country, cases[i].country);
        strcpy(p.billing_country, cases[i].billing);
        strcpy(p.shipping_country, cases[i].shipping);
        if (one_rule_hits(cases[i].file, &f) != cases[i].hit)
            fail_msg("case %zu: expected %s", i, cases[i].hit ? "hit" : "no hit");
    }
}

#define P_COUNT(ent, secs, n)                                                                      \
    "{\"kind\":\"count_at_least\",\"entity\":\"" ent "\",\"window_seconds\":" #secs                \
    ",\"count\":" #n "}"
#define P_DISTINCT(ent, secs, n)                                                                   \
    "{\"kind\":\"distinct_users_at_least\",\"entity\":\"" ent "\",\"window_seconds\":" #secs       \
    ",\"count\":" #n "}"

static void test_velocity_predicates(void **state) {
    static const struct {
        const char *file;
        const char *ip, *fingerprint, *last4;
        int64_t count, distinct;
        bool hit;
    } cases[] = {
        {FILE_OF(RULE("U", P_COUNT("user", 300, 4))), "", "", "", 4, 0, true}, /* exactly at */
        {FILE_OF(RULE("U", P_COUNT("user", 300, 4))), "", "", "", 3, 0, false},
        {FILE_OF(RULE("U", P_COUNT("user", 300, 4))), "", "", "", 0, 9, false}, /* reads count */
        {FILE_OF(RULE("I", P_COUNT("ip", 600, 5))), "ab12", "", "", 5, 0, true},
        {FILE_OF(RULE("I", P_COUNT("ip", 600, 5))), "ab12", "", "", 4, 0, false},
        {FILE_OF(RULE("I", P_COUNT("ip", 600, 5))), "", "", "", 50, 0, false}, /* no ip: no key */
        {FILE_OF(RULE("K", P_DISTINCT("card", 1800, 3))), "", "fp", "", 0, 3, true},
        {FILE_OF(RULE("K", P_DISTINCT("card", 1800, 3))), "", "fp", "", 9, 2, false},
        {FILE_OF(RULE("K", P_DISTINCT("card", 1800, 3))), "", "", "4242", 0, 3, true},
        {FILE_OF(RULE("K", P_DISTINCT("card", 1800, 3))), "", "", "", 0, 3, false}, /* no card */
        {FILE_OF(RULE("E", P_COUNT("merchant", 60, 1))), "", "", "", 1, 0, true},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pay_payment p;
        rules_features f = {.p = &p};
        pay_init(&p);
        strcpy(p.ip_digest, cases[i].ip);
        strcpy(p.card_fingerprint_digest, cases[i].fingerprint);
        strcpy(p.card_last_four, cases[i].last4);
        f.count[0] = cases[i].count;
        f.distinct_users[0] = cases[i].distinct;
        if (one_rule_hits(cases[i].file, &f) != cases[i].hit)
            fail_msg("case %zu: expected %s", i, cases[i].hit ? "hit" : "no hit");
    }
}

static void test_disabled_rule(void **state) {
    pay_payment p;
    rules_features f = {.p = &p};
    rules_result res;
    rules *r = parse_ok(FILE_OF(
        "{\"code\":\"OFF\",\"severity\":\"low\",\"weight\":50,\"message\":\"m\",\"enabled\":false,"
        "\"predicate\":" P_COUNT("ip", 60, 1) "}," RULE("ON", P_AMOUNT("1"))));
    (void)state;
    pay_init(&p);
    rules_eval(r, &f, &res);
    assert_int_equal(res.nhits, 1);
    assert_string_equal(res.hits[0].code, "ON");
    assert_int_equal(rules_window_count(r), 0); /* a disabled rule asks for no feature */
    rules_destroy(r);
}

/* ---- scoring --------------------------------------------------------------------------------- */

/* model_covered: with a model score the rule is listed but adds 0 points (its signal is a model
 * input); without a model it counts its weight. Table: has_model, expected score, weight listed. */
static void test_model_covered(void **state) {
    static const char text[] =
        "{\"version\":\"1\",\"thresholds\":" TH ",\"blend\":{\"model_weight\":100},\"rules\":["
        "{\"code\":\"COVERED\",\"severity\":\"high\",\"weight\":60,\"message\":\"m\","
        "\"model_covered\":true,\"predicate\":" P_AMOUNT("1") "},"
        RULE_W("PLAIN", 20, P_AMOUNT("1")) "]}";
    struct { bool has_model; double p; int score; int covered_weight; bool flagged; } rows[] = {
        {false, 0, 80, 60, false}, /* rules only: 60 + 20 */
        {true, 0.25, 45, 0, true},  /* 25 from the model + 20; COVERED listed with 0 */
        {true, 0.0, 20, 0, true},
    };
    pay_payment p;
    rules_result res;
    rules *r = parse_ok(text);
    (void)state;
    pay_init(&p);
    p.amount_minor = 10000;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        rules_features f = {.p = &p, .has_model = rows[i].has_model, .model_score = rows[i].p};
        rules_eval(r, &f, &res);
        assert_int_equal(res.score, rows[i].score);
        assert_int_equal(res.nhits, 2);
        const rules_hit *h = &res.hits[res.hits[0].weight == 20 ? 1 : 0];
        if (!rows[i].flagged) h = &res.hits[0]; /* 60 sorts first without a model */
        assert_string_equal(h->code, "COVERED");
        assert_int_equal(h->weight, rows[i].covered_weight);
        assert_int_equal(h->model_covered, rows[i].flagged);
        json_t *reasons = rules_reasons_json(&res);
        json_t *last = json_array_get(reasons, rows[i].flagged ? 1 : 0);
        assert_int_equal(json_is_true(json_object_get(last, "model_covered")), rows[i].flagged);
        json_decref(reasons);
    }
    static const char bad[] = FILE_OF(
        "{\"code\":\"X\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\","
        "\"model_covered\":1,\"predicate\":" P_AMOUNT("1") "}");
    char err[256] = "";
    assert_null(rules_parse(bad, strlen(bad), "t", err, sizeof err));
    if (!strstr(err, "model_covered")) fail_msg("error does not name model_covered: %s", err);
    rules_destroy(r);
    /* model_weight 0: the model has no share of the score, so the covered rule counts in full (it
     * scored 20 and allowed a payment its rule would review, with the model's p = 0.95) */
    static const char zero[] =
        "{\"version\":\"1\",\"thresholds\":" TH ",\"blend\":{\"model_weight\":0},\"rules\":["
        "{\"code\":\"COVERED\",\"severity\":\"high\",\"weight\":60,\"message\":\"m\","
        "\"model_covered\":true,\"predicate\":" P_AMOUNT("1") "},"
        RULE_W("PLAIN", 20, P_AMOUNT("1")) "]}";
    r = parse_ok(zero);
    rules_features fz = {.p = &p, .has_model = true, .model_score = 0.95};
    rules_eval(r, &fz, &res);
    assert_int_equal(res.score, 80);
    assert_string_equal(res.hits[0].code, "COVERED");
    assert_int_equal(res.hits[0].weight, 60);
    assert_false(res.hits[0].model_covered);
    rules_destroy(r);
}

static rules *load_default(void);

/* rules_model_covered lists the codes the scorer with a model counts 0, and the blend re-computed
 * from the other rules' points (what fraudshield-eval does with stored points) is rules_eval's score
 * with a model. Table: model probability, model_weight, rule points, covered points, score. */
static void test_model_covered_blend(void **state) {
    static const char text[] =
        "{\"version\":\"1\",\"thresholds\":" TH ",\"blend\":{\"model_weight\":80},\"rules\":["
        RULE_W("PLAIN", 20, P_AMOUNT("1")) ","
        "{\"code\":\"COVERED_B\",\"severity\":\"high\",\"weight\":60,\"message\":\"m\","
        "\"model_covered\":true,\"predicate\":" P_AMOUNT("1") "},"
        "{\"code\":\"COVERED_A\",\"severity\":\"high\",\"weight\":30,\"message\":\"m\","
        "\"model_covered\":true,\"enabled\":false,\"predicate\":" P_AMOUNT("1") "}]}";
    const char *codes[4] = {NULL, NULL, NULL, NULL};
    rules *r = parse_ok(text);
    (void)state;
    assert_int_equal(rules_model_covered(r, codes, 4), 2); /* file order, disabled included */
    assert_string_equal(codes[0], "COVERED_B");
    assert_string_equal(codes[1], "COVERED_A");
    assert_null(codes[2]);
    codes[0] = NULL;
    assert_int_equal(rules_model_covered(r, codes, 0), 2); /* the count, nothing written */
    assert_null(codes[0]);
    /* the scorer with a model: PLAIN 20 + round(0.5 * 80), COVERED_B listed with 0 */
    pay_payment p;
    rules_result res;
    pay_init(&p);
    p.amount_minor = 10000;
    rules_features f = {.p = &p, .has_model = true, .model_score = 0.5};
    rules_eval(r, &f, &res);
    assert_int_equal(res.score, 60);
    assert_int_equal(rules_blend_score(20 + 60 - 60, 0.5, rules_model_weight(r)), res.score);
    rules_destroy(r);

    struct { double p; int weight, points, score; } rows[] = {
        {0, 100, 25, 25},      {0.004, 100, 0, 0},    {0.006, 100, 0, 1},  {0.994, 100, 5, 100},
        {0.5, 0, 40, 40},      {1, 100, 0, 100},      {0.3, 50, 90, 100},  {0.25, 80, 10, 30},
        {0.126, 100, 200, 100}
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(rules_blend_score(rows[i].points, rows[i].p, rows[i].weight), rows[i].score);

    rules *none = parse_ok(FILE_OF(RULE_W("A", 60, P_AMOUNT("1"))));
    assert_int_equal(rules_model_covered(none, codes, 4), 0);
    rules_destroy(none);
    rules *def = load_default(); /* the vault's fraud links (docs/rules.md) */
    assert_int_equal(rules_model_covered(def, codes, 4), 3);
    assert_string_equal(codes[0], "CARD_LINKED_TO_FRAUD");
    assert_string_equal(codes[1], "DEVICE_LINKED_TO_FRAUD");
    assert_string_equal(codes[2], "EMAIL_LINKED_TO_FRAUD");
    rules_destroy(def);
}

static void test_score_capped(void **state) {
    pay_payment p;
    rules_features f = {.p = &p};
    rules_result res;
    rules *r = parse_ok(FILE_OF(RULE_W("A", 60, P_AMOUNT("1")) "," RULE_W(
        "B", 60, P_AMOUNT("2")) "," RULE_W("C", 0, P_AMOUNT("3"))));
    (void)state;
    pay_init(&p);
    p.amount_minor = 300;
    rules_eval(r, &f, &res);
    assert_int_equal(res.nhits, 3);
    assert_int_equal(res.score, 100);
    assert_string_equal(res.decision, "block");
    p.amount_minor = 99; /* nothing hits */
    rules_eval(r, &f, &res);
    assert_int_equal(res.nhits, 0);
    assert_int_equal(res.score, 0);
    assert_string_equal(res.decision, "allow");
    rules_destroy(r);
}

static void test_decision_thresholds(void **state) {
    static const struct {
        int review, block, weight;
        const char *decision;
    } cases[] = {
        {30, 70, 0, "allow"},   {30, 70, 29, "allow"},  {30, 70, 30, "review"},
        {30, 70, 69, "review"}, {30, 70, 70, "block"},  {30, 70, 100, "block"},
        {50, 50, 49, "allow"},  {50, 50, 50, "block"},  {1, 100, 1, "review"},
        {1, 100, 99, "review"}, {1, 100, 100, "block"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512];
        pay_payment p;
        rules_features f = {.p = &p};
        rules_result res;
        snprintf(
            text, sizeof text,
            "{\"version\":\"t\",\"thresholds\":{\"review\":%d,\"block\":%d},\"rules\":[{\"code\":"
            "\"A\",\"severity\":\"low\",\"weight\":%d,\"message\":\"m\",\"predicate\":" P_AMOUNT(
                "1") "}]}",
            cases[i].review, cases[i].block, cases[i].weight);
        rules *r = parse_ok(text);
        pay_init(&p);
        rules_eval(r, &f, &res);
        assert_int_equal(res.score, cases[i].weight);
        if (strcmp(res.decision, cases[i].decision) != 0)
            fail_msg("case %zu: score %d gave %s, expected %s", i, res.score, res.decision,
                     cases[i].decision);
        rules_destroy(r);
    }
}

static void test_hit_order(void **state) {
    static const char *const expect[] = {"A", "Z", "A2", "B", "C"};
    pay_payment p;
    rules_features f = {.p = &p};
    rules_result res;
    rules *r = parse_ok(
        FILE_OF(RULE_W("B", 10, P_AMOUNT("1")) "," RULE_W("Z", 30, P_AMOUNT("1")) "," RULE_W(
            "C", 10, P_AMOUNT("1")) "," RULE_W("A", 30, P_AMOUNT("1")) "," RULE_W("A2", 10,
                                                                                  P_AMOUNT("1"))));
    (void)state;
    pay_init(&p);
    rules_eval(r, &f, &res);
    assert_int_equal(res.nhits, 5);
    for (int i = 0; i < 5; i++) assert_string_equal(res.hits[i].code, expect[i]);
    assert_string_equal(res.hits[0].severity, "high");
    assert_string_equal(res.hits[0].message, "msg A");
    assert_int_equal(res.hits[0].weight, 30);
    rules_destroy(r);
}

/* ---- versions, windows, keys ----------------------------------------------------------------- */

static void test_version(void **state) {
    const char *a = FILE_OF(RULE("A", P_AMOUNT("1")));
    const char *b = "\n" FILE_OF(RULE("A", P_AMOUNT("1"))); /* same meaning, other bytes */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
    char expect[64];
    rules *r1 = parse_ok(a), *r2 = parse_ok(a), *r3 = parse_ok(b);
    (void)state;
    assert_int_equal(EVP_Digest(a, strlen(a), md, &mdlen, EVP_sha256(), NULL), 1);
    snprintf(expect, sizeof expect, "2026.11.1+%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2],
             md[3], md[4], md[5]);
    assert_string_equal(rules_version(r1), expect);
    assert_string_equal(rules_version(r1), rules_version(r2));
    assert_string_not_equal(rules_version(r1), rules_version(r3));
    assert_int_equal(strncmp(rules_version(r3), "2026.11.1+", 10), 0);
    assert_int_equal(strlen(rules_version(r3)), strlen("2026.11.1+") + 12);
    rules_destroy(r1);
    rules_destroy(r2);
    rules_destroy(r3);
}

static void test_windows(void **state) {
    rules *r = parse_ok(
        FILE_OF(RULE("A", P_COUNT("ip", 600, 5)) "," RULE("B", P_COUNT("user", 300, 4)) "," RULE(
            "C", P_DISTINCT("ip", 600, 3)) "," RULE("D", P_COUNT("ip", 60,
                                                                 2)) "," RULE("E", P_AMOUNT("1"))));
    (void)state;
    assert_int_equal(rules_window_count(r), 3); /* (ip,600) is shared by A and C */
    assert_int_equal(rules_window_at(r, 0)->entity, RULES_ENT_IP);
    assert_int_equal(rules_window_at(r, 0)->window_ms, 600000);
    assert_int_equal(rules_window_at(r, 1)->entity, RULES_ENT_USER);
    assert_int_equal(rules_window_at(r, 1)->window_ms, 300000);
    assert_int_equal(rules_window_at(r, 2)->window_ms, 60000);
    assert_null(rules_window_at(r, 3));
    rules_destroy(r);
}

static void test_window_index_used(void **state) {
    pay_payment p;
    rules_features f = {.p = &p};
    rules_result res;
    rules *r = parse_ok(
        FILE_OF(RULE("A", P_COUNT("user", 60, 2)) "," RULE("B", P_COUNT("user", 3600, 10))));
    (void)state;
    pay_init(&p);
    f.count[0] = 1;  /* (user, 60s) */
    f.count[1] = 10; /* (user, 3600s) */
    rules_eval(r, &f, &res);
    assert_int_equal(res.nhits, 1);
    assert_string_equal(res.hits[0].code, "B");
    rules_destroy(r);
}

static void test_entity_key(void **state) {
    pay_payment p;
    char key[PAY_ID_MAX + 16], tiny[4];
    (void)state;
    pay_init(&p);
    rules_entity_key(&p, RULES_ENT_USER, key, sizeof key);
    assert_string_equal(key, "user-1");
    rules_entity_key(&p, RULES_ENT_MERCHANT, key, sizeof key);
    assert_string_equal(key, "merchant-1");
    rules_entity_key(&p, RULES_ENT_IP, key, sizeof key);
    assert_string_equal(key, "");
    rules_entity_key(&p, RULES_ENT_CARD, key, sizeof key);
    assert_string_equal(key, "");
    strcpy(p.card_last_four, "4242");
    rules_entity_key(&p, RULES_ENT_CARD, key, sizeof key);
    assert_string_equal(key, "last4:4242");
    strcpy(p.card_fingerprint_digest, "0123abcd");
    rules_entity_key(&p, RULES_ENT_CARD, key, sizeof key);
    assert_string_equal(key, "0123abcd");
    strcpy(p.ip_digest, "ffee");
    strcpy(p.email_digest, "ee01");
    strcpy(p.device_id_digest, "dd02");
    rules_entity_key(&p, RULES_ENT_IP, key, sizeof key);
    assert_string_equal(key, "ffee");
    rules_entity_key(&p, RULES_ENT_EMAIL, key, sizeof key);
    assert_string_equal(key, "ee01");
    rules_entity_key(&p, RULES_ENT_DEVICE, key, sizeof key);
    assert_string_equal(key, "dd02");
    rules_entity_key(&p, RULES_ENT_USER, tiny, sizeof tiny); /* never a truncated key */
    assert_string_equal(tiny, "");
    assert_string_equal(rules_entity_name(RULES_ENT_USER), "user");
    assert_string_equal(rules_entity_name(RULES_ENT_CARD), "card");
    assert_string_equal(rules_entity_name(RULES_ENT_MERCHANT), "merchant");
}

/* ---- JSON evidence --------------------------------------------------------------------------- */

static void test_json_evidence(void **state) {
    pay_payment p;
    rules_features f = {.p = &p};
    rules_result res;
    rules *r = parse_ok(FILE_OF(RULE_W("LOW", 5, P_AMOUNT("1")) "," RULE_W(
        "U", 40, P_COUNT("user", 300, 2)) "," RULE("K", P_DISTINCT("card", 1800, 3))));
    (void)state;
    pay_init(&p);
    strcpy(p.country, "DE");
    strcpy(p.shipping_country, "FR");
    f.count[0] = 2;
    f.sum_minor[0] = 2500;
    f.distinct_users[0] = 1;
    f.count[1] = 7;
    f.sum_minor[1] = 9000;
    f.distinct_users[1] = 3;
    rules_eval(r, &f, &res);

    json_t *reasons = rules_reasons_json(&res);
    char *s = json_dumps(reasons, JSON_COMPACT);
    assert_string_equal(
        s, "[{\"code\":\"U\",\"severity\":\"high\",\"weight\":40,\"message\":\"msg U\"},"
           "{\"code\":\"LOW\",\"severity\":\"high\",\"weight\":5,\"message\":\"msg LOW\"}]");
    free(s);
    json_decref(reasons);

    json_t *feat = rules_features_json(r, &f);
    s = json_dumps(feat, JSON_COMPACT);
    assert_string_equal(
        s, "{\"amount_minor\":1000,\"currency\":\"EUR\",\"country\":\"DE\","
           "\"shipping_country\":\"FR\",\"weekend\":0,\"night\":0,\"user_count_300s\":2,"
           "\"user_sum_minor_300s\":2500,\"user_distinct_cards_300s\":1,"
           "\"user_amount_ratio_300s\":0.66666666666666663,\"card_count_1800s\":7,"
           "\"card_sum_minor_1800s\":9000,\"card_distinct_users_1800s\":3}");
    free(s);
    json_decref(feat);

    res.nhits = 0;
    reasons = rules_reasons_json(&res);
    assert_int_equal(json_array_size(reasons), 0);
    json_decref(reasons);
    rules_destroy(r);
}

/* ---- the default rule set -------------------------------------------------------------------- */

static rules *load_default(void) {
    static const char *const candidates[] = {
        "schemas/rules/default.json", "../schemas/rules/default.json",
        "../../schemas/rules/default.json", "../../../schemas/rules/default.json"};
    char err[512] = "";
    const char *env = getenv("FS_RULES_DEFAULT");
    if (env) {
        rules *r = rules_load(env, err, sizeof err);
        if (!r) fail_msg("%s", err);
        return r;
    }
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        rules *r = rules_load(candidates[i], err, sizeof err);
        if (r) return r;
        if (!strstr(err, "cannot open")) fail_msg("%s", err);
    }
    fail_msg("schemas/rules/default.json not found (run from the repository root or set "
             "FS_RULES_DEFAULT)");
    return NULL;
}

static void test_default_rules(void **state) {
    static const char *const codes[] = {"HIGH_VALUE",
                                        "VERY_HIGH_VALUE",
                                        "HIGH_RISK_COUNTRY",
                                        "COUNTRY_MISMATCH",
                                        "COUNTRY_MISMATCH_BILLING",
                                        "RAPID_USER",
                                        "IP_VELOCITY",
                                        "CARD_REUSE"};
    pay_payment p;
    rules_features f = {.p = &p};
    rules_result res;
    rules *r = load_default();
    (void)state;
    assert_int_equal(strncmp(rules_version(r), "2026.12.1+", 10), 0);
    assert_int_equal(rules_model_weight(r), 100); /* the model blend when a model is loaded */
    assert_int_equal(rules_window_count(r), 3);
    assert_int_equal(rules_window_at(r, 0)->entity, RULES_ENT_USER);
    assert_int_equal(rules_window_at(r, 0)->window_ms, 300000);
    assert_int_equal(rules_window_at(r, 1)->entity, RULES_ENT_IP);
    assert_int_equal(rules_window_at(r, 1)->window_ms, 600000);
    assert_int_equal(rules_window_at(r, 2)->entity, RULES_ENT_CARD);
    assert_int_equal(rules_window_at(r, 2)->window_ms, 1800000);

    /* A payment that trips every rule: all 8 listed, capped at 100. */
    pay_init(&p);
    p.amount_minor = 500000; /* 5000.00 EUR */
    strcpy(p.country, "NG");
    strcpy(p.billing_country, "US");
    strcpy(p.shipping_country, "GB");
    strcpy(p.ip_digest, "ab");
    strcpy(p.card_last_four, "4242");
    f.count[0] = 4;
    f.count[1] = 5;
    f.distinct_users[2] = 3;
    rules_eval(r, &f, &res);
    assert_int_equal(res.nhits, 8);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (!hits_code(&res, codes[i])) fail_msg("%s did not hit", codes[i]);
    assert_string_equal(res.hits[0].code, "CARD_REUSE");
    assert_int_equal(res.score, 100);
    assert_string_equal(res.decision, "block");

    /* The seed's scores: 1000.00 alone -> review; 5000.00 -> 70 -> block; 999.99 -> allow. */
    pay_init(&p);
    memset(&f, 0, sizeof f);
    f.p = &p;
    p.amount_minor = 100000;
    rules_eval(r, &f, &res);
    assert_int_equal(res.score, 30);
    assert_string_equal(res.decision, "review");
    p.amount_minor = 500000;
    rules_eval(r, &f, &res);
    assert_int_equal(res.score, 70);
    assert_string_equal(res.decision, "block");
    p.amount_minor = 99999;
    rules_eval(r, &f, &res);
    assert_int_equal(res.score, 0);
    assert_string_equal(res.decision, "allow");

    /* Small-unit currencies: their listed equivalents, not 1000 units (5000 won, ~3 EUR, was a
     * block); a currency not listed keeps the seed's 1000 units. */
    static const struct {
        const char *currency;
        int exp;
        int64_t minor;
        int score;
    } small[] = {
        {"KRW", 0, 5000, 0},       {"KRW", 0, 1499999, 0},    {"KRW", 0, 1500000, 30},
        {"KRW", 0, 7500000, 70},   {"JPY", 0, 1000, 0},       {"JPY", 0, 150000, 30},
        {"VND", 0, 50000, 0},      {"IDR", 2, 5000000, 0},    {"USD", 2, 100000, 30},
        {"CHF", 2, 500000, 70},    {"KWD", 3, 1000000, 30},
    };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        strcpy(p.currency, small[i].currency);
        p.currency_exp = small[i].exp;
        p.amount_minor = small[i].minor;
        rules_eval(r, &f, &res);
        if (res.score != small[i].score)
            fail_msg("%s %lld: score %d, expected %d", small[i].currency, (long long)small[i].minor,
                     res.score, small[i].score);
    }
    rules_destroy(r);
}

/* ---- invalid files --------------------------------------------------------------------------- */

#define P_WIN(secs)                                                                                \
    "{\"kind\":\"count_at_least\",\"entity\":\"ip\",\"window_seconds\":" secs ",\"count\":2}"

static void test_invalid_files(void **state) {
    static const struct {
        const char *text, *error;
    } cases[] = {
        {"this is not JSON", "test.json: invalid JSON at line 1"},
        {"", "invalid JSON"},
        {"{\"version\":\"1\",\"version\":\"2\"}", "duplicate object key"},
        {"[1,2]", "test.json: must be a JSON object"},
        {"{\"version\":\"1\",\"thresholds\":" TH
         ",\"rules\":[" RULE("A", P_AMOUNT("1")) "],\"rulez\":[]}",
         "test.json: rulez: unknown key"},
        {"{\"thresholds\":" TH ",\"rules\":[" RULE("A", P_AMOUNT("1")) "]}",
         "test.json: version: required"},
        {"{\"version\":\"2026 11\",\"thresholds\":" TH ",\"rules\":[" RULE("A", P_AMOUNT("1")) "]}",
         "version: must match"},
        {"{\"version\":\"1\",\"rules\":[" RULE("A", P_AMOUNT("1")) "]}", "thresholds: required"},
        {"{\"version\":\"1\",\"thresholds\":{\"review\":70,\"block\":30},\"rules\":[" RULE(
             "A", P_AMOUNT("1")) "]}",
         "test.json: thresholds: must satisfy 0 < review <= block <= 100"},
        {"{\"version\":\"1\",\"thresholds\":{\"review\":0,\"block\":30},\"rules\":[" RULE(
             "A", P_AMOUNT("1")) "]}",
         "thresholds.review: must be an integer 1..100"},
        {"{\"version\":\"1\",\"thresholds\":{\"review\":30,\"block\":101},\"rules\":[" RULE(
             "A", P_AMOUNT("1")) "]}",
         "thresholds.block: must be an integer 1..100"},
        {"{\"version\":\"1\",\"thresholds\":{\"review\":30,\"block\":70,\"alert\":50},\"rules\":"
         "[" RULE("A", P_AMOUNT("1")) "]}",
         "thresholds.alert: unknown key"},
        {FILE_OF(""), "rules: must be an array of 1..64 rules (got 0)"},
        {"{\"version\":\"1\",\"thresholds\":" TH ",\"rules\":{}}", "rules: must be an array"},
        {FILE_OF("42"), "rules[0]: must be an object"},
        {FILE_OF(
             RULE("A", P_AMOUNT("1")) "," RULE("B", P_AMOUNT("1")) "," RULE("A", P_AMOUNT("2"))),
         "test.json: rules[2].code: duplicate code A (also rules[0])"},
        {FILE_OF(RULE("high_value", P_AMOUNT("1"))), "rules[0].code: must match [A-Z0-9_]{1,48}"},
        {FILE_OF(RULE("A123456789012345678901234567890123456789012345678", P_AMOUNT("1"))),
         "rules[0].code: must be a string of 1..48 bytes"},
        {FILE_OF("{\"code\":\"A\",\"severity\":\"low\",\"wieght\":10,\"message\":\"m\","
                 "\"predicate\":" P_AMOUNT("1") "}"),
         "rules[0].wieght: unknown key"},
        {FILE_OF("{\"code\":\"A\",\"severity\":\"severe\",\"weight\":10,\"message\":\"m\","
                 "\"predicate\":" P_AMOUNT("1") "}"),
         "rules[0].severity: must be one of low, medium, high, critical"},
        {FILE_OF(
             "{\"code\":\"A\",\"weight\":10,\"message\":\"m\",\"predicate\":" P_AMOUNT("1") "}"),
         "rules[0].severity: required"},
        {FILE_OF(RULE_W("A", 101, P_AMOUNT("1"))), "rules[0].weight: must be an integer 0..100"},
        {FILE_OF(RULE_W("A", -1, P_AMOUNT("1"))), "rules[0].weight: must be an integer 0..100"},
        {FILE_OF(RULE_W("A", 1.5, P_AMOUNT("1"))), "rules[0].weight: must be an integer 0..100"},
        {FILE_OF(RULE_W("A", "10", P_AMOUNT("1"))), "rules[0].weight: must be an integer 0..100"},
        {FILE_OF(
             "{\"code\":\"A\",\"severity\":\"low\",\"weight\":10,\"predicate\":" P_AMOUNT("1") "}"),
         "rules[0].message: required"},
        {FILE_OF("{\"code\":\"A\",\"severity\":\"low\",\"weight\":10,\"message\":\"m\",\"enabled\":"
                 "\"yes\","
                 "\"predicate\":" P_AMOUNT("1") "}"),
         "rules[0].enabled: must be true or false"},
        {FILE_OF("{\"code\":\"A\",\"severity\":\"low\",\"weight\":10,\"message\":\"m\"}"),
         "rules[0].predicate: required"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_over\",\"amount\":\"1\"}")),
         "rules[0].predicate.kind: must be one of amount_at_least, country_in"},
        {FILE_OF(RULE("A", "{\"amount\":\"1\"}")), "rules[0].predicate.kind: required"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\",\"amout\":\"1\"}")),
         "rules[0].predicate.amout: unknown key"},
        {FILE_OF(RULE("A", P_AMOUNT("1e3"))),
         "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT("-5"))), "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT("0"))), "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT("0.000"))),
         "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT("01000"))),
         "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT("1000."))),
         "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT(".5"))), "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT("1000.12345"))),
         "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\",\"amount\":1000}")),
         "rules[0].predicate.amount: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT("99999999999999999999"))),
         "rules[0].predicate.amount: too large"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\"}")),
         "rules[0].predicate.amount: required (or currencies)"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\",\"currencies\":{}}")),
         "rules[0].predicate.currencies: must be an object of 1..48 currency codes to amounts"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\",\"currencies\":[\"JPY\"]}")),
         "rules[0].predicate.currencies: must be an object of 1..48 currency codes to amounts"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\",\"currencies\":{\"jpy\":\"1\"}}")),
         "rules[0].predicate.currencies.jpy: not an ISO 4217 currency code in upper case"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\",\"currencies\":{\"EURO\":\"1\"}}")),
         "rules[0].predicate.currencies.EURO: not an ISO 4217 currency code in upper case"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\",\"currencies\":{\"XYZ\":\"1\"}}")),
         "rules[0].predicate.currencies.XYZ: not an ISO 4217 currency code in upper case"},
        {FILE_OF(RULE("A", "{\"kind\":\"amount_at_least\",\"currencies\":{\"JPY\":150000}}")),
         "rules[0].predicate.currencies.JPY: must be a decimal string"},
        {FILE_OF(RULE("A", "{\"kind\":\"sum_at_least\",\"entity\":\"user\",\"window_seconds\":600,"
                           "\"currencies\":{\"JPY\":\"0\"}}")),
         "rules[0].predicate.currencies.JPY: must be a decimal string"},
        {FILE_OF(RULE("A", P_AMOUNT("1")) "," RULE("B", P_AMOUNT("1")) "," RULE(
             "C", P_AMOUNT("1")) "," RULE("D", P_WIN("0"))),
         "test.json: rules[3].predicate.window_seconds: must be an integer 1..2592000"},
        {FILE_OF(RULE("M", "{\"kind\":\"merchant_risk_at_least\",\"window_days\":7,"
                           "\"delay_days\":7,\"ratio\":\"5\"}")),
         "rules[0].predicate.ratio: is a share of the merchant's payments: at most \"1\""},
        {FILE_OF(RULE("D", P_WIN("2592001"))),
         "rules[0].predicate.window_seconds: must be an integer 1..2592000"},
        {FILE_OF(RULE("D", P_WIN("\"300\""))),
         "rules[0].predicate.window_seconds: must be an integer 1..2592000"},
        {FILE_OF(RULE("D", "{\"kind\":\"count_at_least\",\"entity\":\"ip\",\"count\":2}")),
         "rules[0].predicate.window_seconds: required"},
        {FILE_OF(RULE("D", P_COUNT("ip", 60, 0))),
         "rules[0].predicate.count: must be an integer 1..1000000"},
        {FILE_OF(RULE("D", P_COUNT("customer", 60, 2))),
         "rules[0].predicate.entity: must be one of user, ip, card, device, email, merchant"},
        {FILE_OF(RULE("D", P_DISTINCT("user", 60, 2))),
         "rules[0].predicate.entity: distinct_users_at_least needs an entity other than user"},
        {FILE_OF(RULE(
             "C", "{\"kind\":\"country_in\",\"field\":\"country\",\"countries\":[\"NG\",\"ng\"]}")),
         "rules[0].predicate.countries[1]: rule C can never match: country is stored as \"NG\""},
        {FILE_OF(
             RULE("C", "{\"kind\":\"country_in\",\"field\":\"country\",\"countries\":[\"NGA\"]}")),
         "rules[0].predicate.countries[0]: rule C can never match: country must be an assigned "
         "ISO 3166-1 alpha-2 code"},
        {FILE_OF(RULE("C", "{\"kind\":\"country_in\",\"field\":\"country\",\"countries\":[7]}")),
         "rules[0].predicate.countries[0]: must be a 2-letter upper-case country code"},
        {FILE_OF(RULE("C", "{\"kind\":\"country_in\",\"field\":\"country\",\"countries\":[\"NG\","
                           "\"KP\",\"NG\"]}")),
         "rules[0].predicate.countries[2]: duplicate country NG"},
        {FILE_OF(RULE("C", "{\"kind\":\"country_in\",\"field\":\"country\",\"countries\":[]}")),
         "rules[0].predicate.countries: must be an array of 1..250 country codes"},
        {FILE_OF(RULE("C",
                      "{\"kind\":\"country_in\",\"field\":\"gps_country\",\"countries\":[\"NG\"]}")),
         "rules[0].predicate.field: must be one of country, billing_country, shipping_country"},
        {FILE_OF(RULE("M", P_MISMATCH("country", "country"))),
         "rules[0].predicate.fields: must be an array of two different fields"},
        {FILE_OF(RULE("M", "{\"kind\":\"country_mismatch\",\"fields\":[\"country\"]}")),
         "rules[0].predicate.fields: must be an array of two different fields"},
        {FILE_OF(RULE("M", P_MISMATCH("country", "billing"))),
         "rules[0].predicate.fields[1]: must be one of country, billing_country, shipping_country"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_parse(i, cases[i].text, cases[i].error); /* every error non-NULL */
}

#define P_VALUES(field, values) "{\"kind\":\"value_in\",\"field\":\"" field "\",\"values\":[" values "]}"
#define P_COUNTRIES(field, values)                                                                 \
    "{\"kind\":\"country_in\",\"field\":\"" field "\",\"countries\":[" values "]}"
#define RULE_OFF(code, pred)                                                                       \
    "{\"code\":\"" code "\",\"severity\":\"low\",\"weight\":10,\"message\":\"m\",\"enabled\":false," \
    "\"predicate\":" pred "}"

/* value_in and country_in accept only what ingest stores in the field (pay_stored_value_check):
 * anything else would never match. error NULL: loads. */
static void test_stored_values(void **state) {
    static const struct {
        const char *text, *error;
    } cases[] = {
        {FILE_OF(RULE("PM", P_VALUES("payment_method", "\"card\",\"bank_transfer\",\"e-wallet\""))), NULL},
        {FILE_OF(RULE("PM", P_VALUES("payment_method", "\"CARD\""))),
         "test.json: rules[0].predicate.values[0]: rule PM can never match: payment_method is "
         "stored as \"card\""},
        {FILE_OF(RULE("PM", P_VALUES("payment_method", "\"card\",\"Wallet\""))),
         "rules[0].predicate.values[1]: rule PM can never match: payment_method is stored as "
         "\"wallet\""},
        {FILE_OF(RULE("PM", P_VALUES("payment_method", "\"credit card\""))),
         "rules[0].predicate.values[0]: rule PM can never match: payment_method must contain only "
         "letters, digits, '_' and '-'"},
        {FILE_OF(RULE("PM", P_VALUES("payment_method", "\"abcdefghijklmnopqrstuvwxyz0123456\""))),
         "rules[0].predicate.values[0]: rule PM can never match: payment_method must be at most 32"},
        {FILE_OF(RULE("CT", P_VALUES("card_type", "\"visa\",\"debit\""))), NULL},
        {FILE_OF(RULE("CT", P_VALUES("card_type", "\"VISA\""))),
         "rules[0].predicate.values[0]: rule CT can never match: card_type is stored as \"visa\""},
        {FILE_OF(RULE("TT", P_VALUES("transaction_type", "\"Purchase\""))),
         "rules[0].predicate.values[0]: rule TT can never match: transaction_type is stored as "
         "\"purchase\""},
        {FILE_OF(RULE("CU", P_VALUES("currency", "\"EUR\",\"JPY\",\"KWD\""))), NULL},
        {FILE_OF(RULE("CU", P_VALUES("currency", "\"eur\""))),
         "rules[0].predicate.values[0]: rule CU can never match: currency is stored as \"EUR\""},
        {FILE_OF(RULE("CU", P_VALUES("currency", "\"EURO\""))),
         "rules[0].predicate.values[0]: rule CU can never match: currency must be a three-letter "
         "ISO 4217 code"},
        {FILE_OF(RULE("CU", P_VALUES("currency", "\"EUR\",\"XYZ\""))),
         "rules[0].predicate.values[1]: rule CU can never match: currency is not an active ISO "
         "4217 currency"},
        {FILE_OF(RULE("CU", P_VALUES("currency", "\"HRK\""))), /* withdrawn in 2023 */
         "rules[0].predicate.values[0]: rule CU can never match: currency is not an active"},
        /* identifiers are stored as sent: any case, but no control characters */
        {FILE_OF(RULE("MI", P_VALUES("merchant_id", "\"Shop-7\",\"shop 8\""))), NULL},
        {FILE_OF(RULE("UI", P_VALUES("user_id", "\"u\\u0001x\""))),
         "rules[0].predicate.values[0]: rule UI can never match: user_id must not contain control "
         "characters"},
        {FILE_OF(RULE("CO", P_COUNTRIES("country", "\"GB\",\"XK\",\"NG\""))), NULL},
        {FILE_OF(RULE("CO", P_COUNTRIES("country", "\"UK\""))),
         "rules[0].predicate.countries[0]: rule CO can never match: country must be an assigned "
         "ISO 3166-1 alpha-2 code"},
        {FILE_OF(RULE("CO", P_COUNTRIES("billing_country", "\"GB\",\"ZZ\""))),
         "rules[0].predicate.countries[1]: rule CO can never match: billing_country must be an "
         "assigned ISO 3166-1 alpha-2 code"},
        {FILE_OF(RULE("CO", P_COUNTRIES("ip_country", "\"de\""))),
         "rules[0].predicate.countries[0]: rule CO can never match: ip_country is stored as \"DE\""},
        /* a disabled rule is validated all the same: enabling it later must not be a surprise */
        {FILE_OF(RULE("ON", P_AMOUNT("1")) "," RULE_OFF("OFF", P_VALUES("currency", "\"usd\""))),
         "rules[1].predicate.values[0]: rule OFF can never match: currency is stored as \"USD\""},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_parse(i, cases[i].text, cases[i].error);
}

/* Windows over an hour are whole buckets (whole hours up to a day, whole days beyond), in rules
 * and in feature-windows; error NULL: loads. */
static void test_window_lengths(void **state) {
    static const struct {
        const char *text, *error;
    } cases[] = {
        {FILE_OF(RULE("W", P_COUNT("ip", 1, 2))), NULL},
        {FILE_OF(RULE("W", P_COUNT("ip", 3599, 2))), NULL},
        {FILE_OF(RULE("W", P_COUNT("ip", 3600, 2))), NULL},
        {FILE_OF(RULE("W", P_COUNT("ip", 7200, 2))), NULL},
        {FILE_OF(RULE("W", P_COUNT("ip", 82800, 2))), NULL},
        {FILE_OF(RULE("W", P_COUNT("ip", 86400, 2))), NULL},
        {FILE_OF(RULE("W", P_COUNT("ip", 172800, 2))), NULL},
        {FILE_OF(RULE("W", P_COUNT("ip", 2592000, 2))), NULL},
        {FILE_OF(RULE("W", P_COUNT("ip", 3601, 2))),
         "test.json: rules[0].predicate.window_seconds: 3601 is not a whole number of hours: "
         "windows over 3600 s are counted in 1-hour buckets and would reach up to 7200 s back; use "
         "3600 or 7200 (rule W)"},
        {FILE_OF(RULE("W", P_COUNT("ip", 5400, 2))),
         "rules[0].predicate.window_seconds: 5400 is not a whole number of hours: windows over "
         "3600 s are counted in 1-hour buckets and would reach up to 7200 s back; use 3600 or 7200"},
        {FILE_OF(RULE("W", P_COUNT("ip", 86399, 2))), "use 82800 or 86400 (rule W)"},
        {FILE_OF(RULE("W", P_COUNT("ip", 90000, 2))),
         "rules[0].predicate.window_seconds: 90000 is not a whole number of days: windows over "
         "86400 s are counted in 1-day buckets and would reach up to 172800 s back; use 86400 or "
         "172800 (rule W)"},
        {FILE_OF(RULE("W", P_COUNT("ip", 2591999, 2))), "use 2505600 or 2592000"},
        {FILE_OF(RULE("S", "{\"kind\":\"sum_at_least\",\"entity\":\"card\",\"window_seconds\":"
                           "10800,\"amount\":\"1\"}")), NULL},
        {FILE_OF(RULE("S", "{\"kind\":\"sum_at_least\",\"entity\":\"card\",\"window_seconds\":"
                           "10801,\"amount\":\"1\"}")),
         "rules[0].predicate.window_seconds: 10801 is not a whole number of hours"},
        {FILE_OF(RULE("R", "{\"kind\":\"amount_ratio_at_least\",\"window_seconds\":129600,"
                           "\"ratio\":\"3\"}")),
         "rules[0].predicate.window_seconds: 129600 is not a whole number of days"},
        {FILE_OF(RULE("ON", P_AMOUNT("1")) "," RULE_OFF("OFF", P_COUNT("user", 5400, 2))),
         "rules[1].predicate.window_seconds: 5400 is not a whole number of hours"},
    };
    static const struct {
        const char *spec, *error;
    } extra[] = {
        {"user:60m,2h,24h,2d card:1m", NULL},
        {"user:90m", "feature-windows: \"90m\": 5400 is not a whole number of hours"},
        {"ip:1d,25h", "feature-windows: \"25h\": 90000 is not a whole number of days: windows "
                      "over 86400 s are counted in 1-day buckets and would reach up to 172800 s "
                      "back; use 86400 or 172800"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_parse(i, cases[i].text, cases[i].error);
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        char err[512] = "";
        rules *r = parse_ok(FILE_OF(RULE("A", P_AMOUNT("1"))));
        int rc = rules_add_feature_windows(r, extra[i].spec, "", 7, err, sizeof err);
        rules_destroy(r);
        if (!extra[i].error && rc != 0) fail_msg("extra %zu: unexpected error %s", i, err);
        if (extra[i].error && (rc == 0 || !strstr(err, extra[i].error)))
            fail_msg("extra %zu: rc %d, error \"%s\", expected \"%s\"", i, rc, err, extra[i].error);
    }
}

/* The windows a model reads are computed whatever the rules enable: a model column bound to a
 * disabled rule's window stays bound. Table: column, the keys it makes exist (NULL: it adds no
 * window). */
static void test_model_windows(void **state) {
    static const struct {
        const char *column, *key1, *key2;
    } cases[] = {
        {"user_count_300s", "user_count_300s", "user_amount_ratio_300s"},
        {"user_sum_minor_300s", "user_sum_minor_300s", NULL},
        {"user_distinct_cards_600s", "user_distinct_cards_600s", NULL},
        {"card_distinct_users_1800s", "card_distinct_users_1800s", NULL},
        {"ip_sum_minor_600s", "ip_sum_minor_600s", "ip_count_600s"},
        {"device_avg_minor_86400s", "device_sum_minor_86400s", "device_count_86400s"},
        {"user_amount_ratio_604800s", "user_amount_ratio_604800s", NULL},
        {"email_count_7200s", "email_count_7200s", NULL},
        {"merchant_count_604800s_delay_604800s", "merchant_count_604800s_delay_604800s", NULL},
        {"merchant_risk_14d_delay_3d", "merchant_risk_14d_delay_3d", "merchant_frauds_14d_delay_3d"},
        {"merchant_frauds_1d_delay_0d", "merchant_frauds_1d_delay_0d", "merchant_count_86400s"},
        /* names the evidence never holds, or windows no rule could have: nothing added */
        {"user_distinct_users_600s", NULL, NULL},
        {"ip_amount_ratio_60s", NULL, NULL},
        {"user_count_0300s", NULL, NULL},
        {"user_count_+300s", NULL, NULL},
        {"user_count_300", NULL, NULL},
        {"user_count_5400s", NULL, NULL},
        {"user_count_0s", NULL, NULL},
        {"user_count_2678400s", NULL, NULL},
        {"user_count_1234567890123s", NULL, NULL},
        {"merchant_count_5400s_delay_86400s", NULL, NULL},
        {"merchant_count_86400s_delay_0s", NULL, NULL},
        {"merchant_risk_31d_delay_3d", NULL, NULL},
        {"merchant_risk_7d_delay_07d", NULL, NULL},
        {"customer_count_300s", NULL, NULL},
        {"amount_minor", NULL, NULL},
        {"vault_card_fraud", NULL, NULL},
        {"model_score", NULL, NULL},
    };
    /* RAPID_USER (user, 300 s) is disabled: without a model, its window is not computed */
    static const char text[] = FILE_OF(RULE("ON", P_AMOUNT("1")) "," RULE_OFF("RAPID_USER", P_COUNT("user", 300, 4)));
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        rules *r = parse_ok(text);
        const char *names[] = {"amount_minor", cases[i].column};
        assert_int_equal(rules_window_count(r), 0);
        assert_int_equal(rules_feature_find(r, "user_count_300s"), -1);
        if (rules_add_model_windows(r, names, 2, err, sizeof err) != 0)
            fail_msg("case %zu (%s): %s", i, cases[i].column, err);
        if (!cases[i].key1 && (rules_window_count(r) != 0 || rules_risk_count(r) != 0))
            fail_msg("case %zu: %s added a window", i, cases[i].column);
        if (cases[i].key1 && rules_feature_find(r, cases[i].key1) < 0)
            fail_msg("case %zu: %s: no key %s", i, cases[i].column, cases[i].key1);
        if (cases[i].key2 && rules_feature_find(r, cases[i].key2) < 0)
            fail_msg("case %zu: %s: no key %s", i, cases[i].column, cases[i].key2);
        /* once more: nothing new (the windows are shared, not repeated) */
        size_t nw = rules_window_count(r), nk = rules_risk_count(r);
        assert_int_equal(rules_add_model_windows(r, names, 2, err, sizeof err), 0);
        assert_int_equal(rules_window_count(r), nw);
        assert_int_equal(rules_risk_count(r), nk);
        rules_destroy(r);
    }
}

/* A model needing more windows than a set may hold is an error naming the column; a copy of a set
 * is extended without touching the original. */
static void test_model_windows_limit(void **state) {
    char names[RULES_MAX_FEATURE_WINDOWS + 1][32], err[512] = "";
    const char *ptrs[RULES_MAX_FEATURE_WINDOWS + 1];
    rules *r = parse_ok(FILE_OF(RULE("U", P_COUNT("user", 300, 4))));
    (void)state;
    for (int i = 0; i < RULES_MAX_FEATURE_WINDOWS; i++) { /* with the rule's: one too many */
        snprintf(names[i], sizeof names[i], "ip_count_%ds", i + 1);
        ptrs[i] = names[i];
    }
    rules *c = rules_copy(r);
    assert_non_null(c);
    assert_int_equal(rules_add_model_windows(c, ptrs, RULES_MAX_FEATURE_WINDOWS - 1, err, sizeof err), 0);
    assert_int_equal(rules_window_count(c), RULES_MAX_FEATURE_WINDOWS);
    assert_int_equal(rules_window_count(r), 1);
    assert_string_equal(rules_version(c), rules_version(r));
    rules_destroy(c);
    assert_int_equal(rules_add_model_windows(r, ptrs, RULES_MAX_FEATURE_WINDOWS, err, sizeof err), -1);
    if (!strstr(err, "model: column ip_count_48s: more than 48 feature windows"))
        fail_msg("%s", err);
    rules_destroy(r);
}

/* A file with n rules, each with its own window when distinct_windows (else all amount rules). */
static char *many_rules(int n, bool distinct_windows) {
    size_t cap = 128 + (size_t)n * 200, len;
    char *text = malloc(cap);
    assert_non_null(text);
    len = (size_t)snprintf(text, cap, "{\"version\":\"1\",\"thresholds\":" TH ",\"rules\":[");
    for (int i = 0; i < n; i++) {
        if (distinct_windows)
            len += (size_t)snprintf(
                text + len, cap - len,
                "%s{\"code\":\"R%d\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\","
                "\"predicate\":{\"kind\":\"count_at_least\",\"entity\":\"ip\","
                "\"window_seconds\":%d,\"count\":2}}",
                i ? "," : "", i, 60 + i);
        else
            len += (size_t)snprintf(
                text + len, cap - len,
                "%s{\"code\":\"R%d\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\","
                "\"predicate\":{\"kind\":\"amount_at_least\",\"amount\":\"1\"}}",
                i ? "," : "", i);
    }
    snprintf(text + len, cap - len, "]}");
    return text;
}

static void test_limits(void **state) {
    char err[512];
    char *text;
    rules *r;
    (void)state;
    text = many_rules(RULES_MAX, false);
    r = parse_ok(text);
    rules_destroy(r);
    free(text);

    text = many_rules(RULES_MAX + 1, false);
    assert_null(rules_parse(text, strlen(text), "test.json", err, sizeof err));
    assert_non_null(strstr(err, "rules: must be an array of 1..64 rules (got 65)"));
    free(text);

    text = many_rules(RULES_MAX_WINDOWS, true);
    r = parse_ok(text);
    assert_int_equal(rules_window_count(r), RULES_MAX_WINDOWS);
    rules_destroy(r);
    free(text);

    text = many_rules(RULES_MAX_WINDOWS + 1, true);
    assert_null(rules_parse(text, strlen(text), "test.json", err, sizeof err));
    assert_non_null(
        strstr(err, "rules[32].predicate: more than 32 distinct (entity, window_seconds) pairs"));
    free(text);
}

static void test_load_errors(void **state) {
    char err[512] = "";
    char path[] = "/tmp/test_rules_XXXXXX";
    const char *bad = FILE_OF(RULE_W("A", 500, P_AMOUNT("1")));
    (void)state;
    assert_null(rules_load("/nonexistent/rules.json", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/rules.json: cannot open"));

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(bad, f);
    fclose(f);
    assert_null(rules_load(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "rules[0].weight: must be an integer 0..100"));
    unlink(path);

    /* A zero-sized error buffer is allowed. */
    assert_null(rules_parse("x", 1, "t", NULL, 0));
    rules_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amount_at_least),
        cmocka_unit_test(test_amount_currencies_across_rules),
        cmocka_unit_test(test_country_predicates),
        cmocka_unit_test(test_velocity_predicates),
        cmocka_unit_test(test_disabled_rule),
        cmocka_unit_test(test_model_covered),
        cmocka_unit_test(test_model_covered_blend),
        cmocka_unit_test(test_score_capped),
        cmocka_unit_test(test_decision_thresholds),
        cmocka_unit_test(test_hit_order),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_window_index_used),
        cmocka_unit_test(test_entity_key),
        cmocka_unit_test(test_json_evidence),
        cmocka_unit_test(test_default_rules),
        cmocka_unit_test(test_invalid_files),
        cmocka_unit_test(test_stored_values),
        cmocka_unit_test(test_window_lengths),
        cmocka_unit_test(test_model_windows),
        cmocka_unit_test(test_model_windows_limit),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
