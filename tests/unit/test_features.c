/* Unit tests for the scorer's features beyond the exact windows: bucket window arithmetic
 * (boundaries, before 1970, delayed windows), bucketed windows over stored buckets plus the batch
 * (event order, late and out-of-order events, distinct caps), the risk vault (event order,
 * labels known at t), merchant risk, and every new predicate kind at its boundary. Table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "buckets.h"
#include "fvec.h"
#include "pgcopy.h"
#include "rules.h"
#include "vault.h"
#include "velocity.h"

#define H 3600000LL
#define D 86400000LL
#define T0 1795000000000LL /* 2026-11-18T09:46:40Z, a Wednesday */

static rules *parse_ok(const char *text) {
    char err[512] = "";
    rules *r = rules_parse(text, strlen(text), "test.json", err, sizeof err);
    if (!r) fail_msg("unexpected parse error: %s", err);
    return r;
}

static void pay_init(pay_payment *p, const char *id, const char *user, int64_t t, int64_t amount) {
    memset(p, 0, sizeof *p);
    snprintf(p->payment_id, sizeof p->payment_id, "%s", id);
    snprintf(p->user_id, sizeof p->user_id, "%s", user);
    snprintf(p->merchant_id, sizeof p->merchant_id, "m1");
    snprintf(p->currency, sizeof p->currency, "EUR");
    p->currency_exp = 2;
    p->amount_minor = amount;
    snprintf(p->payment_method, sizeof p->payment_method, "card");
    p->event_time_ms = p->ingest_time_ms = t;
}

/* ---- bucket arithmetic ------------------------------------------------------------------------ */

static void test_bucket_arithmetic(void **state) {
    static const struct {
        const char *name;
        int64_t window_ms, offset_ms, t;
        int64_t width, first, last;
    } cases[] = {
        {"1 day: 24 hour buckets ending with t's hour", D, 0, 10 * D + 5 * H + 7, H,
         10 * D + 5 * H - 23 * H, 10 * D + 5 * H},
        {"t exactly on a bucket start belongs to that bucket", D, 0, 10 * D, H, 10 * D - 23 * H,
         10 * D},
        {"1 ms before a bucket start: the previous bucket", D, 0, 10 * D - 1, H, 10 * D - 24 * H,
         10 * D - H},
        {"2 h: hour buckets", 2 * H, 0, 3 * H + 1, H, 2 * H, 3 * H},
        {"90 min rounds up to 2 buckets", 90 * 60000, 0, 3 * H, H, 2 * H, 3 * H},
        {"7 days: day buckets", 7 * D, 0, 20 * D + 1, D, 14 * D, 20 * D},
        {"30 days", 30 * D, 0, 40 * D + H, D, 11 * D, 40 * D},
        {"delayed 1 day window, 7 day delay: day buckets", D, 7 * D, 20 * D + H, D, 13 * D,
         13 * D},
        {"delayed 2 h window, 1 h delay: hour buckets", 2 * H, H, 20 * D + H, H, 20 * D - H,
         20 * D},
        {"delayed 7 days, 7 day delay", 7 * D, 7 * D, 20 * D + H, D, 7 * D, 13 * D},
        {"before 1970: floor, not truncation", D, 0, -1, H, -H - 23 * H, -H},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rules_window w = {RULES_ENT_USER, cases[i].window_ms, cases[i].offset_ms};
        int64_t first, last;
        assert_true(buckets_window(&w));
        buckets_span(&w, cases[i].t, &first, &last);
        if (buckets_width_ms(&w) != cases[i].width || first != cases[i].first ||
            last != cases[i].last)
            fail_msg("%s: width %lld first %lld last %lld, want %lld %lld %lld", cases[i].name,
                     (long long)buckets_width_ms(&w), (long long)first, (long long)last,
                     (long long)cases[i].width, (long long)cases[i].first,
                     (long long)cases[i].last);
    }
    rules_window exact = {RULES_ENT_USER, H, 0}, longer = {RULES_ENT_USER, H + 1000, 0};
    assert_false(buckets_window(&exact));
    assert_true(velocity_exact(&exact));
    assert_true(buckets_window(&longer));
    assert_int_equal(buckets_start(-1, H), -H);
    assert_int_equal(buckets_start(0, H), 0);
    assert_true(buckets_cp_hash("") > 0);
    assert_true(buckets_cp_hash("a") != buckets_cp_hash("b"));
}

/* ---- bucketed windows ------------------------------------------------------------------------- */

#define RULES_1D                                                                                   \
    "{\"version\":\"t\",\"thresholds\":{\"review\":30,\"block\":70},\"rules\":["                   \
    "{\"code\":\"U\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"           \
    "{\"kind\":\"count_at_least\",\"entity\":\"user\",\"window_seconds\":86400,\"count\":99}},"     \
    "{\"code\":\"C\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"           \
    "{\"kind\":\"distinct_at_least\",\"entity\":\"card\",\"window_seconds\":604800,\"count\":3}}]}"

static void stored(buckets *b, rules_entity e, const char *key, int64_t width, int64_t start,
                   int64_t n, int64_t sum, int64_t cp) {
    buckets_row r = {.entity = e, .key = key, .width_ms = width, .start_ms = start, .count = n,
                     .sum_minor = sum};
    if (cp) r.cps[r.ncps++] = cp;
    assert_int_equal(buckets_load(b, &r), 0);
}

static void test_bucket_windows(void **state) {
    rules *r = parse_ok(RULES_1D);
    buckets *b = buckets_new();
    pay_payment p1, p2, p3;
    rules_features f;
    const int64_t t = 100 * D + 10 * H + 30 * 60000; /* 10:30 on day 100 */
    (void)state;
    assert_int_equal(rules_window_count(r), 2);
    for (int round = 0; round < 2; round++) { /* the second round reuses the memory */
        buckets_reset(b);
        /* stored: u1 at 10:00 (same bucket), 11:00 (a later bucket: out), yesterday 11:00 (the old
         * edge: in, 23.5 h back), yesterday 10:00 (24.5 h: out) */
        stored(b, RULES_ENT_USER, "u1", H, 100 * D + 10 * H, 2, 200, 0);
        stored(b, RULES_ENT_USER, "u1", H, 100 * D + 11 * H, 5, 500, 0);
        stored(b, RULES_ENT_USER, "u1", H, 99 * D + 11 * H, 1, 50, 0);
        stored(b, RULES_ENT_USER, "u1", H, 99 * D + 10 * H, 7, 700, 0);
        stored(b, RULES_ENT_USER, "u2", H, 100 * D + 10 * H, 9, 900, 0);
        stored(b, RULES_ENT_CARD, "fp", D, 95 * D, 1, 1, buckets_cp_hash("x"));
        stored(b, RULES_ENT_CARD, "fp", D, 93 * D, 1, 1, buckets_cp_hash("y")); /* 7 days back: out */
        pay_init(&p1, "11111111-1111-4111-8111-111111111111", "u1", t, 1000);
        pay_init(&p2, "22222222-2222-4222-8222-222222222222", "u1", t + 60000, 3000); /* later */
        pay_init(&p3, "33333333-3333-4333-8333-333333333333", "u3", t - 2 * H, 7); /* late */
        strcpy(p1.card_fingerprint_digest, "fp");
        strcpy(p3.card_fingerprint_digest, "fp");
        /* the batch arrives out of order: p2 first */
        assert_int_equal(buckets_add_payment(b, r, &p2), 0);
        assert_int_equal(buckets_add_payment(b, r, &p1), 0);
        assert_int_equal(buckets_add_payment(b, r, &p3), 0);
        assert_int_equal(buckets_build(b), 0);

        memset(&f, 0, sizeof f);
        buckets_features(b, r, &p1, &f);
        assert_int_equal(f.count[0], 2 + 1 + 1);        /* stored 10:00 + yesterday 11:00 + itself */
        assert_int_equal(f.sum_minor[0], 200 + 50 + 1000);
        assert_int_equal(f.distinct_users[1], 3);        /* x (stored), u1 itself, u3 (earlier) */
        buckets_features(b, r, &p2, &f);
        assert_int_equal(f.count[0], 5);                 /* p1 counts for the later p2 */
        buckets_features(b, r, &p3, &f);                 /* late: its own windows, 08:30 */
        assert_int_equal(f.count[0], 1);
        assert_int_equal(f.distinct_users[1], 2);        /* x and itself; p1 is later */

        const buckets_row *inc;
        ptrdiff_t n = buckets_increments(b, &inc);
        assert_int_equal(n, 3); /* card fp/day 100, user u1/hour 10:00, user u3/hour 08:00 */
        int64_t total = 0;
        for (ptrdiff_t i = 0; i < n; i++) {
            total += inc[i].count;
            if (inc[i].entity == RULES_ENT_USER && strcmp(inc[i].key, "u1") == 0) {
                assert_int_equal(inc[i].start_ms, 100 * D + 10 * H);
                assert_int_equal(inc[i].count, 2);
                assert_int_equal(inc[i].sum_minor, 4000);
            }
            if (inc[i].entity == RULES_ENT_CARD) {
                assert_int_equal(inc[i].count, 2);
                assert_int_equal(inc[i].ncps, 2); /* u1 and u3 */
            }
        }
        assert_int_equal(total, 5);
    }
    buckets_destroy(b);
    rules_destroy(r);
}

/* More distinct counterparts than a bucket keeps: exact up to the cap, a lower bound beyond. */
static void test_distinct_cap(void **state) {
    rules *r = parse_ok(RULES_1D);
    buckets *b = buckets_new();
    pay_payment p;
    char user[16], id[37];
    (void)state;
    for (int i = 0; i < 40; i++) {
        snprintf(user, sizeof user, "u%d", i);
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        pay_init(&p, id, user, 50 * D + i, 1);
        strcpy(p.card_fingerprint_digest, "fp");
        assert_int_equal(buckets_add_payment(b, r, &p), 0);
    }
    assert_int_equal(buckets_build(b), 0);
    const buckets_row *inc;
    ptrdiff_t n = buckets_increments(b, &inc);
    for (ptrdiff_t i = 0; i < n; i++)
        if (inc[i].entity == RULES_ENT_CARD) assert_int_equal(inc[i].ncps, RULES_DISTINCT_CAP);
    rules_features f;
    memset(&f, 0, sizeof f);
    buckets_features(b, r, &p, &f); /* batch events are exact (not yet capped) */
    assert_true(f.distinct_users[1] >= RULES_DISTINCT_CAP);
    buckets_destroy(b);
    rules_destroy(r);
}

/* ---- the vault -------------------------------------------------------------------------------- */

#define RULES_RISK                                                                                 \
    "{\"version\":\"t\",\"thresholds\":{\"review\":30,\"block\":70},\"rules\":["                   \
    "{\"code\":\"R\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\",\"predicate\":"           \
    "{\"kind\":\"merchant_risk_at_least\",\"window_days\":7,\"delay_days\":7,\"ratio\":\"0.5\"}}]}"

static void test_vault(void **state) {
    rules *r = parse_ok(RULES_RISK);
    vault *v = vault_new();
    pay_payment a, b2;
    rules_features f;
    const int64_t t = 200 * D + 12 * H;
    (void)state;
    vault_row row = {RULES_ENT_CARD, "fp", 150 * D, 199 * D, 4};
    assert_int_equal(vault_load_row(v, &row), 0);
    /* labels of earlier payments with this card: one known before t, one known after t */
    vault_link l1 = {RULES_ENT_CARD, "fp", VAULT_FRAUD, 190 * D, t - 1, "p1"};
    vault_link l2 = {RULES_ENT_CARD, "fp", VAULT_FRAUD, 191 * D, t + 1, "p2"};
    vault_link l3 = {RULES_ENT_CARD, "fp", VAULT_CHARGEBACK, 180 * D, t, "p3"};
    /* merchant m1: a fraud in the delayed window (t-14d, t-7d], known; one too recent; one unknown */
    vault_link m1 = {RULES_ENT_MERCHANT, "m1", VAULT_FRAUD, t - 10 * D, t - 2 * D, "p4"};
    vault_link m2 = {RULES_ENT_MERCHANT, "m1", VAULT_FRAUD, t - 3 * D, t - D, "p5"};
    vault_link m3 = {RULES_ENT_MERCHANT, "m1", VAULT_FRAUD, t - 9 * D, t + D, "p6"};
    const vault_link *links[] = {&l1, &l2, &l3, &m1, &m2, &m3};
    for (size_t i = 0; i < 6; i++) assert_int_equal(vault_load_link(v, links[i]), 0);
    pay_init(&a, "aaaaaaaa-1111-4111-8111-111111111111", "u1", t, 100);
    pay_init(&b2, "bbbbbbbb-2222-4222-8222-222222222222", "u2", t, 100); /* a tie: id order */
    strcpy(a.card_fingerprint_digest, "fp");
    strcpy(b2.card_fingerprint_digest, "fp");
    strcpy(b2.email_digest, "new-email");
    assert_int_equal(vault_add_payment(v, &b2), 0);
    assert_int_equal(vault_add_payment(v, &a), 0);
    assert_int_equal(vault_build(v), 0);

    memset(&f, 0, sizeof f);
    f.p = &a;
    vault_features(v, r, &a, &f);
    assert_true(f.vault[RULES_ENT_CARD].present);
    assert_int_equal(f.vault[RULES_ENT_CARD].times_seen, 4);
    assert_int_equal(f.vault[RULES_ENT_CARD].first_seen_ms, 150 * D);
    assert_int_equal(f.vault[RULES_ENT_CARD].fraud, 1);       /* l2 is not known yet */
    assert_int_equal(f.vault[RULES_ENT_CARD].chargebacks, 1); /* known exactly at t: in */
    assert_false(f.vault[RULES_ENT_EMAIL].present);
    assert_int_equal(f.risk_frauds[0], 1);                    /* m1 only */
    vault_features(v, r, &b2, &f);
    assert_int_equal(f.vault[RULES_ENT_CARD].times_seen, 5); /* a comes first (same time, id) */
    assert_true(f.vault[RULES_ENT_EMAIL].present);
    assert_int_equal(f.vault[RULES_ENT_EMAIL].times_seen, 0);

    const vault_row *inc;
    ptrdiff_t n = vault_increments(v, &inc);
    assert_int_equal(n, 2); /* card fp (2 payments), email */
    for (ptrdiff_t i = 0; i < n; i++)
        assert_int_equal(inc[i].times_seen, inc[i].entity == RULES_ENT_CARD ? 2 : 1);

    /* a late payment (event time before every stored one of card fp): the stored row is its
     * future, so the card is new for it, not seen 4 times with a negative age */
    pay_payment late;
    pay_init(&late, "cccccccc-3333-4333-8333-333333333333", "u3", 100 * D, 100);
    strcpy(late.card_fingerprint_digest, "fp");
    vault_features(v, r, &late, &f);
    assert_int_equal(f.vault[RULES_ENT_CARD].times_seen, 0);
    assert_int_equal(f.vault[RULES_ENT_CARD].first_seen_ms, 0);

    size_t nk;
    const pay_payment *ps[] = {&a, &b2};
    vault_key *keys = vault_keys(ps, 2, true, &nk);
    assert_int_equal(nk, 3); /* card fp, email, merchant m1 (deduplicated) */
    free(keys);
    vault_destroy(v);
    rules_destroy(r);
}

/* Corrected labels: a payment counts as confirmed fraud (chargeback) at t when such a label known
 * at t comes after its last false_positive/legitimate label known at t (at equal known_at the
 * fraud label wins), for the vault counts and the merchant risk alike. */
typedef struct label_case {
    const char *name;
    int64_t after;                    /* the scored payment's event time: K + after (ms) */
    int64_t fraud, chargebacks, risk; /* expected card counts and merchant frauds */
} label_case;

/* Scores a payment with card "fp" at merchant m1 at K + c->after against the links loaded into v
 * and checks c's counts; destroys v. */
static void label_case_check(vault *v, const rules *r, int64_t K, const label_case *c) {
    pay_payment p;
    rules_features f;
    pay_init(&p, "ffffffff-1111-4111-8111-111111111111", "u", K + c->after, 100);
    strcpy(p.card_fingerprint_digest, "fp");
    strcpy(p.merchant_id, "m1");
    assert_int_equal(vault_build(v), 0);
    memset(&f, 0, sizeof f);
    f.p = &p;
    vault_features(v, r, &p, &f);
    print_message("case: %s\n", c->name);
    assert_int_equal(f.vault[RULES_ENT_CARD].fraud, c->fraud);
    assert_int_equal(f.vault[RULES_ENT_CARD].chargebacks, c->chargebacks);
    assert_int_equal(f.risk_frauds[0], c->risk);
    vault_destroy(v);
}

static void test_vault_corrections(void **state) {
    rules *r = parse_ok(RULES_RISK);
    const int64_t e = 100 * D + 12 * H; /* the labelled payments' event time */
    const int64_t K = e + 8 * D;        /* labels known from then on: e is in the delayed window */
    (void)state;
    /* pa: confirmed_fraud at +1h, false_positive at +2h, confirmed_fraud again at +3h.
     * pb: chargeback at +1h, legitimate at +4h. pc: legitimate and confirmed_fraud both at +2h
     * (a tie: the fraud label wins). pd: a false_positive at +1h without an earlier fraud label.
     * pe: confirmed_fraud at +5h, then a chargeback at +6h: both count.
     * Loaded out of order: the order is the vault's business. */
    const vault_link links[] = {
        {RULES_ENT_CARD, "fp", VAULT_FALSE_POSITIVE, e, K + 2 * H, "pa"},
        {RULES_ENT_CARD, "fp", VAULT_FRAUD, e, K + 3 * H, "pa"},
        {RULES_ENT_CARD, "fp", VAULT_FRAUD, e, K + 1 * H, "pa"},
        {RULES_ENT_CARD, "fp", VAULT_LEGITIMATE, e, K + 4 * H, "pb"},
        {RULES_ENT_CARD, "fp", VAULT_CHARGEBACK, e, K + 1 * H, "pb"},
        {RULES_ENT_CARD, "fp", VAULT_FRAUD, e, K + 2 * H, "pc"},
        {RULES_ENT_CARD, "fp", VAULT_LEGITIMATE, e, K + 2 * H, "pc"},
        {RULES_ENT_CARD, "fp", VAULT_FALSE_POSITIVE, e, K + 1 * H, "pd"},
        {RULES_ENT_CARD, "fp", VAULT_CHARGEBACK, e, K + 6 * H, "pe"},
        {RULES_ENT_CARD, "fp", VAULT_FRAUD, e, K + 5 * H, "pe"},
        {RULES_ENT_MERCHANT, "m1", VAULT_FRAUD, e, K + 3 * H, "pa"},
        {RULES_ENT_MERCHANT, "m1", VAULT_FALSE_POSITIVE, e, K + 2 * H, "pa"},
        {RULES_ENT_MERCHANT, "m1", VAULT_FRAUD, e, K + 1 * H, "pa"},
    };
    static const label_case cases[] = {
        {"before any label is known", H - 1, 0, 0, 0},
        {"pa fraud, pb chargeback (known exactly at t)", H, 1, 1, 1},
        {"pa corrected to false_positive, pc fraud (a tie)", 2 * H, 1, 1, 0},
        {"just before pa's second correction", 3 * H - 1, 1, 1, 0},
        {"pa fraud again", 3 * H, 2, 1, 1},
        {"pb corrected to legitimate", 4 * H, 2, 0, 1},
        {"pe fraud", 5 * H, 3, 0, 1},
        {"pe charged back: still a confirmed fraud", 6 * H, 3, 1, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        vault *v = vault_new();
        for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
            assert_int_equal(vault_load_link(v, &links[i]), 0);
        label_case_check(v, r, K, &cases[k]);
    }
    rules_destroy(r);
}

/* vault_load_labels (offline: no PostgreSQL) makes the links of each payment's labels that the
 * outcome consumer writes: the same counts as test_vault_corrections, and every labelled payment is
 * at merchant m1, so the merchant frauds equal the card's confirmed frauds. */
static void test_vault_labels(void **state) {
    rules *r = parse_ok(RULES_RISK);
    const int64_t e = 100 * D + 12 * H, K = e + 8 * D;
    (void)state;
    static const char *const ids[] = {"pa", "pb", "pc", "pd", "pe"};
    const vault_label labels[][3] = {
        {{VAULT_FALSE_POSITIVE, K + 2 * H}, {VAULT_FRAUD, K + 3 * H}, {VAULT_FRAUD, K + H}},
        {{VAULT_LEGITIMATE, K + 4 * H}, {VAULT_CHARGEBACK, K + H}},
        {{VAULT_FRAUD, K + 2 * H}, {VAULT_LEGITIMATE, K + 2 * H}},
        {{VAULT_FALSE_POSITIVE, K + H}},
        {{VAULT_CHARGEBACK, K + 6 * H}, {VAULT_FRAUD, K + 5 * H}},
    };
    static const size_t nlabels[] = {3, 2, 2, 1, 2};
    static const label_case cases[] = {
        {"before any label is known", H - 1, 0, 0, 0},
        {"pa fraud, pb chargeback", H, 1, 1, 1},
        {"pa corrected, pc fraud (a tie)", 2 * H, 1, 1, 1},
        {"pa fraud again", 3 * H, 2, 1, 2},
        {"pb corrected to legitimate", 4 * H, 2, 0, 2},
        {"pe fraud, then charged back", 6 * H, 3, 1, 3},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        vault *v = vault_new();
        pay_payment labelled;
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
            pay_init(&labelled, ids[i], "u0", e, 100);
            strcpy(labelled.card_fingerprint_digest, "fp");
            strcpy(labelled.merchant_id, "m1");
            assert_int_equal(vault_load_labels(v, &labelled, labels[i], nlabels[i]), 0);
        }
        label_case_check(v, r, K, &cases[k]);
    }
    rules_destroy(r);
}

/* ---- predicates ------------------------------------------------------------------------------- */

#define FILE1(pred)                                                                                \
    "{\"version\":\"t\",\"thresholds\":{\"review\":30,\"block\":70},\"rules\":["                   \
    "{\"code\":\"X\",\"severity\":\"high\",\"weight\":10,\"message\":\"m\",\"predicate\":" pred "}]}"

typedef struct pred_case {
    const char *name;
    const char *file;
    int64_t count, sum, distinct; /* window 0 */
    rules_entity vent;            /* vault entity set present */
    int64_t seen, fraud, cb;
    int64_t risk_n, risk_frauds;
    int model; /* -1: no model, else score in % */
    int64_t t;
    bool hit;
} pred_case;

#define W_SUM "{\"kind\":\"sum_at_least\",\"entity\":\"user\",\"window_seconds\":86400,\"amount\":\"100\"}"
#define W_AVG "{\"kind\":\"avg_at_least\",\"entity\":\"user\",\"window_seconds\":604800,\"amount\":\"50\"}"
#define W_DIST "{\"kind\":\"distinct_at_least\",\"entity\":\"user\",\"window_seconds\":3600,\"count\":3}"
#define W_RATIO "{\"kind\":\"amount_ratio_at_least\",\"window_seconds\":604800,\"ratio\":\"3\",\"min_history\":2}"
#define V_SEEN "{\"kind\":\"vault_seen_at_least\",\"identifier\":\"device\",\"count\":3}"
#define V_NEW "{\"kind\":\"vault_new\",\"identifier\":\"email\"}"
#define V_FRAUD "{\"kind\":\"vault_fraud_at_least\",\"identifier\":\"card\",\"count\":1}"
#define V_FRAUD_CB "{\"kind\":\"vault_fraud_at_least\",\"identifier\":\"card\",\"count\":2,\"include_chargebacks\":true}"
#define M_RISK "{\"kind\":\"merchant_risk_at_least\",\"window_days\":7,\"delay_days\":7,\"ratio\":\"0.1\",\"min_payments\":10}"
#define MODEL "{\"kind\":\"model_score_between\",\"min\":80,\"max\":100}"
#define V_IN "{\"kind\":\"value_in\",\"field\":\"payment_method\",\"values\":[\"crypto\",\"card\"]}"
#define V_IN2 "{\"kind\":\"value_in\",\"field\":\"card_type\",\"values\":[\"prepaid\"]}"
#define NIGHT "{\"kind\":\"time_flag\",\"flag\":\"night\"}"
#define WEEKEND "{\"kind\":\"time_flag\",\"flag\":\"weekend\"}"
#define IPMIS "{\"kind\":\"country_mismatch\",\"fields\":[\"ip_country\",\"billing_country\"]}"

static const pred_case PRED_CASES[] = {
    /* amount 10.00 EUR (1000 minor) in every case */
    {"sum at threshold", FILE1(W_SUM), 2, 10000, 0, 0, 0, 0, 0, 0, 0, -1, T0, true},
    {"sum below", FILE1(W_SUM), 2, 9999, 0, 0, 0, 0, 0, 0, 0, -1, T0, false},
    {"avg at threshold", FILE1(W_AVG), 2, 10000, 0, 0, 0, 0, 0, 0, 0, -1, T0, true},
    {"avg below", FILE1(W_AVG), 3, 14999, 0, 0, 0, 0, 0, 0, 0, -1, T0, false},
    {"avg with no payments", FILE1(W_AVG), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, T0, false},
    {"distinct cards per user", FILE1(W_DIST), 5, 0, 3, 0, 0, 0, 0, 0, 0, -1, T0, true},
    {"distinct below", FILE1(W_DIST), 5, 0, 2, 0, 0, 0, 0, 0, 0, -1, T0, false},
    /* ratio: history = count-1 payments summing sum-amount; 1000 vs avg (1000+1000-1000)/... */
    {"ratio at 3x", FILE1(W_RATIO), 3, 1000 + 667, 0, 0, 0, 0, 0, 0, 0, -1, T0, false},
    {"ratio exactly 3x", FILE1(W_RATIO), 4, 1000 + 1000, 0, 0, 0, 0, 0, 0, 0, -1, T0, true},
    {"ratio too little history", FILE1(W_RATIO), 2, 1000 + 100, 0, 0, 0, 0, 0, 0, 0, -1, T0, false},
    {"seen 3 times", FILE1(V_SEEN), 0, 0, 0, RULES_ENT_DEVICE, 3, 0, 0, 0, 0, -1, T0, true},
    {"seen twice", FILE1(V_SEEN), 0, 0, 0, RULES_ENT_DEVICE, 2, 0, 0, 0, 0, -1, T0, false},
    {"new email", FILE1(V_NEW), 0, 0, 0, RULES_ENT_EMAIL, 0, 0, 0, 0, 0, -1, T0, true},
    {"known email", FILE1(V_NEW), 0, 0, 0, RULES_ENT_EMAIL, 1, 0, 0, 0, 0, -1, T0, false},
    {"no email: not new", FILE1(V_NEW), 0, 0, 0, RULES_ENT_USER, 0, 0, 0, 0, 0, -1, T0, false},
    {"card linked to fraud", FILE1(V_FRAUD), 0, 0, 0, RULES_ENT_CARD, 5, 1, 0, 0, 0, -1, T0, true},
    {"chargeback is not fraud", FILE1(V_FRAUD), 0, 0, 0, RULES_ENT_CARD, 5, 0, 1, 0, 0, -1, T0, false},
    {"fraud + chargeback", FILE1(V_FRAUD_CB), 0, 0, 0, RULES_ENT_CARD, 5, 1, 1, 0, 0, -1, T0, true},
    {"merchant risk 10%", FILE1(M_RISK), 0, 0, 0, 0, 0, 0, 0, 10, 1, -1, T0, true},
    {"merchant risk 9%", FILE1(M_RISK), 0, 0, 0, 0, 0, 0, 0, 11, 1, -1, T0, false},
    {"merchant too few payments", FILE1(M_RISK), 0, 0, 0, 0, 0, 0, 0, 9, 9, -1, T0, false},
    {"model 80", FILE1(MODEL), 0, 0, 0, 0, 0, 0, 0, 0, 0, 80, T0, true},
    {"model 79", FILE1(MODEL), 0, 0, 0, 0, 0, 0, 0, 0, 0, 79, T0, false},
    {"no model never hits", FILE1(MODEL), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, T0, false},
    {"value in list", FILE1(V_IN), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, T0, true},
    {"absent value", FILE1(V_IN2), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, T0, false},
    {"night 06:59", FILE1(NIGHT), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 100 * D + 7 * H - 1, true},
    {"not night 07:00", FILE1(NIGHT), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 100 * D + 7 * H, false},
    {"weekend: Saturday 1970-01-03", FILE1(WEEKEND), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 2 * D, true},
    {"weekend: Sunday 23:59", FILE1(WEEKEND), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 4 * D - 1, true},
    {"not weekend: Monday 00:00", FILE1(WEEKEND), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 4 * D, false},
    {"ip country vs billing", FILE1(IPMIS), 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, T0, true},
};

static void test_predicates(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof PRED_CASES / sizeof PRED_CASES[0]; i++) {
        const pred_case *c = &PRED_CASES[i];
        rules *r = parse_ok(c->file);
        pay_payment p;
        rules_features f;
        rules_result res;
        pay_init(&p, "11111111-1111-4111-8111-111111111111", "u1", c->t, 1000);
        strcpy(p.ip_country, "NG");
        strcpy(p.billing_country, "DE");
        memset(&f, 0, sizeof f);
        f.p = &p;
        f.count[0] = c->count;
        f.sum_minor[0] = c->sum;
        f.distinct_users[0] = c->distinct;
        if (c->vent != RULES_ENT_USER || c->seen) {
            f.vault[c->vent].present = c->vent != RULES_ENT_USER;
            f.vault[c->vent].times_seen = c->seen;
            f.vault[c->vent].fraud = c->fraud;
            f.vault[c->vent].chargebacks = c->cb;
        }
        if (rules_risk_count(r)) {
            f.count[rules_risk_at(r, 0)->window_index] = c->risk_n;
            f.risk_frauds[0] = c->risk_frauds;
        }
        f.has_model = c->model >= 0;
        f.model_score = c->model / 100.0;
        rules_derive(&f);
        rules_eval(r, &f, &res);
        if ((res.nhits == 1) != c->hit)
            fail_msg("%s: expected %s", c->name, c->hit ? "a hit" : "no hit");
        rules_destroy(r);
    }
}

static void test_invalid_new_kinds(void **state) {
    static const struct {
        const char *pred, *error;
    } cases[] = {
        {"{\"kind\":\"vault_new\",\"identifier\":\"user\"}",
         "rules[0].predicate.identifier: must be one of card, ip, device, email"},
        {"{\"kind\":\"vault_new\",\"identifier\":\"card\",\"count\":1}",
         "rules[0].predicate.count: unknown key"},
        {"{\"kind\":\"distinct_at_least\",\"entity\":\"card\",\"window_seconds\":60,\"count\":17}",
         "rules[0].predicate.count: must be an integer 1..16"},
        {"{\"kind\":\"amount_ratio_at_least\",\"window_seconds\":60,\"ratio\":\"1.2345\"}",
         "rules[0].predicate.ratio: must be a decimal string"},
        {"{\"kind\":\"merchant_risk_at_least\",\"window_days\":31,\"delay_days\":7,\"ratio\":\"1\"}",
         "rules[0].predicate.window_days: must be an integer 1..30"},
        {"{\"kind\":\"model_score_between\",\"min\":90,\"max\":10}",
         "rules[0].predicate: must satisfy min <= max"},
        {"{\"kind\":\"value_in\",\"field\":\"email\",\"values\":[\"x\"]}",
         "rules[0].predicate.field: must be one of payment_method"},
        {"{\"kind\":\"time_flag\",\"flag\":\"holiday\"}",
         "rules[0].predicate.flag: must be one of weekend, night"},
        {"{\"kind\":\"sum_at_least\",\"entity\":\"ip\",\"window_seconds\":60,\"amount\":\"0\"}",
         "rules[0].predicate.amount: must be a decimal string"},
    };
    char text[1024], err[512];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text,
                 "{\"version\":\"t\",\"thresholds\":{\"review\":30,\"block\":70},\"rules\":["
                 "{\"code\":\"X\",\"severity\":\"high\",\"weight\":10,\"message\":\"m\","
                 "\"predicate\":%s}]}",
                 cases[i].pred);
        rules *r = rules_parse(text, strlen(text), "t.json", err, sizeof err);
        if (r) fail_msg("case %zu parsed, expected %s", i, cases[i].error);
        if (!strstr(err, cases[i].error)) fail_msg("case %zu: got \"%s\"", i, err);
    }
}

static void test_feature_windows_option(void **state) {
    rules *r = parse_ok(RULES_1D);
    char err[256];
    (void)state;
    assert_int_equal(rules_add_feature_windows(r, "user:1d,7d;merchant:30d", "1,7", 7, err,
                                               sizeof err), 0);
    /* U (user 1d) is shared; C card 7d; + user 7d, merchant 30d, merchant 1d@7d, 7d@7d */
    assert_int_equal(rules_window_count(r), 6);
    assert_int_equal(rules_risk_count(r), 2);
    assert_int_equal(rules_risk_span_ms(r), 14 * D);
    const rules_window *w = rules_window_at(r, rules_risk_at(r, 1)->window_index);
    assert_int_equal(w->entity, RULES_ENT_MERCHANT);
    assert_int_equal(w->window_ms, 7 * D);
    assert_int_equal(w->offset_ms, 7 * D);
    assert_int_equal(rules_add_feature_windows(r, "user:5x", "", 7, err, sizeof err), -1);
    assert_non_null(strstr(err, "a duration is"));
    assert_int_equal(rules_add_feature_windows(r, "alien:1d", "", 7, err, sizeof err), -1);
    assert_int_equal(rules_add_feature_windows(r, "", "0", 7, err, sizeof err), -1);
    rules_destroy(r);

    /* a file with as many merchant-risk pairs as it may have (8) still takes the scorer's default
     * risk-windows-days: they have a budget of their own (the file loaded, then the scorer
     * refused to start with it) */
    char text[4096];
    int len = snprintf(text, sizeof text, "{\"version\":\"t\",\"thresholds\":{\"review\":30,"
                                          "\"block\":70},\"rules\":[");
    for (int i = 0; i < RULES_MAX_RISK_FILE; i++)
        len += snprintf(text + len, sizeof text - (size_t)len,
                        "%s{\"code\":\"R%d\",\"severity\":\"low\",\"weight\":1,\"message\":\"m\","
                        "\"predicate\":{\"kind\":\"merchant_risk_at_least\",\"window_days\":%d,"
                        "\"delay_days\":3,\"ratio\":\"0.5\"}}",
                        i ? "," : "", i, i + 2);
    snprintf(text + len, sizeof text - (size_t)len, "]}");
    r = parse_ok(text);
    assert_int_equal(rules_risk_count(r), RULES_MAX_RISK_FILE);
    assert_int_equal(rules_add_feature_windows(r, "", "1,7,30", 7, err, sizeof err), 0);
    assert_int_equal(rules_risk_count(r), RULES_MAX_RISK_FILE + 3);
    rules_destroy(r);
}

/* The whole vector through fvec_compute with empty stored state (the offline path). */
static void test_fvec(void **state) {
    rules *r = parse_ok(RULES_1D);
    velocity *v = velocity_new();
    buckets *b = buckets_new();
    vault *vt = vault_new();
    pay_payment p;
    rules_features f;
    (void)state;
    pay_init(&p, "11111111-1111-4111-8111-111111111111", "u1", 2 * D + 3 * H, 500);
    strcpy(p.device_id_digest, "dev");
    assert_int_equal(buckets_add_payment(b, r, &p), 0);
    assert_int_equal(vault_add_payment(vt, &p), 0);
    assert_int_equal(velocity_build(v) || buckets_build(b) || vault_build(vt), 0);
    fvec_compute(v, b, vt, r, &p, &f);
    assert_int_equal(f.count[0], 1);
    assert_true(f.weekend);
    assert_true(f.night);
    assert_false(f.has_model);
    assert_true(f.vault[RULES_ENT_DEVICE].present);
    assert_int_equal(f.vault[RULES_ENT_DEVICE].times_seen, 0);
    json_t *j = rules_features_json(r, &f);
    assert_int_equal(json_integer_value(json_object_get(j, "vault_device_seen")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "user_count_86400s")), 1);
    json_decref(j);
    velocity_destroy(v);
    buckets_destroy(b);
    vault_destroy(vt);
    rules_destroy(r);
}

/* COPY text format: separators, NULLs, escapes of the characters that would break a row. */
static void test_pgcopy(void **state) {
    pgcopy_buf b = {0};
    (void)state;
    pgcopy_text(&b, "a\tb\\c\nd\re");
    pgcopy_str(&b, "");
    pgcopy_str(&b, NULL);
    pgcopy_text(&b, "");
    pgcopy_int(&b, -42);
    pgcopy_end_row(&b);
    pgcopy_int(&b, 7);
    pgcopy_end_row(&b);
    assert_false(b.oom);
    assert_int_equal(b.rows, 2);
    assert_int_equal(b.len, strlen("a\\tb\\\\c\\nd\\re\t\\N\t\\N\t\t-42\n7\n"));
    assert_memory_equal(b.p, "a\\tb\\\\c\\nd\\re\t\\N\t\\N\t\t-42\n7\n", b.len);
    pgcopy_reset(&b);
    assert_int_equal(b.len, 0);
    pgcopy_free(&b);
}

/* The features as text are the features as JSON, byte for byte (jansson's compact form). */
static void test_features_text(void **state) {
    rules *r = parse_ok(RULES_RISK);
    pay_payment p;
    rules_features f;
    (void)state;
    pay_init(&p, "11111111-1111-4111-8111-111111111111", "u1", T0, 1234);
    strcpy(p.country, "DE");
    strcpy(p.ip_country, "FR");
    memset(&f, 0, sizeof f);
    f.p = &p;
    f.count[0] = 3;
    f.risk_frauds[0] = 1;
    f.vault[RULES_ENT_CARD].present = true;
    f.vault[RULES_ENT_CARD].times_seen = 2;
    f.vault[RULES_ENT_CARD].first_seen_ms = T0 - 86400000;
    f.has_model = true;
    f.model_score = 0.25;
    char *text = rules_features_text(r, &f, NULL);
    json_t *j = rules_features_json(r, &f);
    char *dumped = json_dumps(j, JSON_COMPACT);
    assert_string_equal(text, dumped);
    assert_string_equal(text, "{\"amount_minor\":1234,\"currency\":\"EUR\",\"country\":\"DE\","
                              "\"ip_country\":\"FR\",\"weekend\":0,\"night\":0,"
                              "\"merchant_count_604800s_delay_604800s\":3,\"vault_card_seen\":2,"
                              "\"vault_card_fraud\":0,\"vault_card_chargebacks\":0,"
                              "\"vault_card_age_s\":86400,\"merchant_frauds_7d_delay_7d\":1,"
                              "\"merchant_risk_7d_delay_7d\":0.33333333333333331,"
                              "\"model_score\":0.25}");
    free(text);
    free(dumped);
    json_decref(j);
    rules_destroy(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_arithmetic), cmocka_unit_test(test_bucket_windows),
        cmocka_unit_test(test_distinct_cap),      cmocka_unit_test(test_vault),
        cmocka_unit_test(test_vault_corrections), cmocka_unit_test(test_vault_labels),
        cmocka_unit_test(test_predicates),        cmocka_unit_test(test_invalid_new_kinds),
        cmocka_unit_test(test_feature_windows_option), cmocka_unit_test(test_fvec),
        cmocka_unit_test(test_pgcopy),            cmocka_unit_test(test_features_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
