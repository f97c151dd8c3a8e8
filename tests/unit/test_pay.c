/* Unit tests for pay: request validation (every field, every error code), amounts, the event
 * codec (round trip, golden bytes, rejections) and the partition key. Table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fsutil.h"
#include "pay.h"

#define NOW_TEXT "2025-11-21T10:00:00Z"
#define NOW_MS 1763719200000LL

/* Building blocks of request bodies: each required field, and all of them but one. */
#define U "\"user_id\":\"u1\""
#define M "\"merchant_id\":\"m1\""
#define A "\"amount\":\"12.50\""
#define C "\"currency\":\"EUR\""
#define PM "\"payment_method\":\"card\""
#define ALL U "," M "," A "," C "," PM
#define NO_U M "," A "," C "," PM
#define NO_M U "," A "," C "," PM
#define NO_A U "," M "," C "," PM
#define NO_C U "," M "," A "," PM
#define NO_PM U "," M "," A "," C
#define WITH(extra) "{" ALL "," extra "}"

#define S16 "aaaaaaaaaaaaaaaa"
#define S64 S16 S16 S16 S16
#define S128 S64 S64
#define S256 S128 S128

static json_t *load(const char *text) {
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) fail_msg("test JSON does not parse: %s: %s", jerr.text, text);
    return j;
}

/* The text path (pay_from_request_text) declines, or decides exactly as the tree path: same
 * verdict, errors, payment and raw identifiers. With dflt NULL both draw a random id, the only
 * thing allowed to differ. Returns whether the text path took it. */
static bool same_as_tree(const char *text, size_t len, const char *dflt) {
    static const pay_pii zero_pii;
    pay_payment a, b;
    pay_pii pa, pb;
    pay_errors ea, eb;
    int rt = pay_from_request_text(text, len, NOW_MS, dflt, &b, &pb, &eb);
    if (rt == 1) { /* declined: nothing to release */
        assert_null(b.device_info);
        assert_memory_equal(&pb, &zero_pii, sizeof pb);
        return false;
    }
    json_t *body = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    if (!body) fail_msg("the text path read what jansson refuses: %.*s", (int)len, text);
    int rj = pay_from_request(body, NOW_MS, dflt, &a, &pa, &ea);
    if (rj != rt || ea.n != eb.n) fail_msg("verdicts differ (%d/%d, %d/%d errors): %.*s", rj, rt, ea.n, eb.n, (int)len, text);
    for (int i = 0; i < ea.n; i++) {
        assert_string_equal(ea.e[i].field, eb.e[i].field);
        assert_string_equal(ea.e[i].code, eb.e[i].code);
        assert_string_equal(ea.e[i].message, eb.e[i].message);
    }
    assert_memory_equal(&pa, &pb, sizeof pa);
    char *da = a.device_info ? json_dumps(a.device_info, JSON_COMPACT) : NULL;
    char *db = b.device_info ? json_dumps(b.device_info, JSON_COMPACT) : NULL;
    assert_true(da ? db && strcmp(da, db) == 0 : !db);
    free(da);
    free(db);
    assert_true(a.metadata ? json_equal(a.metadata, b.metadata) : !b.metadata);
    const json_t *own = json_object_get(body, "payment_id");
    if (!dflt && rj == 0 && (!own || json_is_null(own))) /* both random */
        memcpy(b.payment_id, a.payment_id, sizeof a.payment_id);
    json_t *ja = a.device_info, *jb = b.device_info, *ma = a.metadata, *mb = b.metadata;
    a.device_info = b.device_info = a.metadata = b.metadata = NULL;
    assert_memory_equal(&a, &b, sizeof a);
    a.device_info = ja, b.device_info = jb, a.metadata = ma, b.metadata = mb;
    pay_payment_clear(&a);
    pay_payment_clear(&b);
    json_decref(body);
    return true;
}

static int request(const char *text, pay_payment *p, pay_pii *pii, pay_errors *errs) {
    json_t *body = load(text);
    int rc = pay_from_request(body, NOW_MS, NULL, p, pii, errs);
    json_decref(body);
    same_as_tree(text, strlen(text), NULL); /* every request of these tests checks both paths */
    same_as_tree(text, strlen(text), "6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f");
    return rc;
}

static bool has_error(const pay_errors *errs, const char *field, const char *code) {
    for (int i = 0; i < errs->n; i++)
        if (strcmp(errs->e[i].field, field) == 0 && strcmp(errs->e[i].code, code) == 0) return true;
    return false;
}

/* ---------------------------------------------------------------- valid requests */

static void test_request_minimal(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    assert_int_equal(request("{" ALL "}", &p, &pii, &errs), 0);
    assert_int_equal(errs.n, 0);
    assert_true(fs_uuid_valid(p.payment_id));
    assert_int_equal(p.payment_id[14], '4'); /* generated v4 */
    assert_string_equal(p.user_id, "u1");
    assert_string_equal(p.merchant_id, "m1");
    assert_int_equal(p.amount_minor, 1250);
    assert_string_equal(p.currency, "EUR");
    assert_int_equal(p.currency_exp, 2);
    assert_string_equal(p.payment_method, "card");
    assert_string_equal(p.transaction_type, "");
    assert_string_equal(p.country, "");
    assert_int_equal(p.event_time_ms, NOW_MS);
    assert_int_equal(p.ingest_time_ms, NOW_MS);
    assert_null(p.device_info);
    assert_null(p.metadata);
    assert_string_equal(pii.email, "");
    pay_payment_clear(&p);
}

static const char FULL_BODY[] =
    "{\"payment_id\":\"6F1C2B1E-8A4D-4C3B-9F5E-1A2B3C4D5E6F\",\"user_id\":\"user-42\","
    "\"merchant_id\":\"shop é 1\",\"amount\":99.9,\"currency\":\"kwd\",\"payment_method\":\"CARD\","
    "\"transaction_type\":\"Purchase\",\"card_type\":\"visa\",\"card_last_four\":\"4242\","
    "\"card_fingerprint\":\"fp_123\",\"ip_address\":\"2001:DB8::1\",\"email\":\"Jo@Example.com\","
    "\"device_info\":{\"device_id\":\"dev-1\",\"os\":\"iOS\",\"type\":\"mobile\",\"browser\":null,"
    "\"user_agent\":\"UA/1.0\"},\"country\":\"de\",\"billing_country\":\"FR\","
    "\"shipping_country\":\"xk\",\"timestamp\":\"2025-11-21T11:00:00.250+02:00\","
    "\"metadata\":{\"order\":\"A-1\",\"items\":[1,2.5,{\"x\":null}]}}";

static void test_request_full(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    assert_int_equal(request(FULL_BODY, &p, &pii, &errs), 0);
    assert_string_equal(p.payment_id, "6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f");
    assert_string_equal(p.user_id, "user-42");
    assert_string_equal(p.merchant_id, "shop é 1");
    assert_int_equal(p.amount_minor, 99900); /* KWD: 3 decimals */
    assert_string_equal(p.currency, "KWD");
    assert_int_equal(p.currency_exp, 3);
    assert_string_equal(p.payment_method, "card");
    assert_string_equal(p.transaction_type, "purchase");
    assert_string_equal(p.card_type, "visa");
    assert_string_equal(p.card_last_four, "4242");
    assert_string_equal(p.country, "DE");
    assert_string_equal(p.billing_country, "FR");
    assert_string_equal(p.shipping_country, "XK");
    assert_int_equal(p.event_time_ms, NOW_MS - 3600 * 1000 + 250);
    assert_int_equal(p.ingest_time_ms, NOW_MS);
    /* raw personal data only in pii, untouched */
    assert_string_equal(pii.card_fingerprint, "fp_123");
    assert_string_equal(pii.ip_address, "2001:DB8::1");
    assert_string_equal(pii.email, "Jo@Example.com");
    assert_string_equal(pii.device_id, "dev-1");
    assert_string_equal(p.card_fingerprint_digest, "");
    json_t *want = load("{\"os\":\"iOS\",\"type\":\"mobile\",\"user_agent\":\"UA/1.0\"}");
    assert_true(json_equal(p.device_info, want));
    json_decref(want);
    want = load("{\"order\":\"A-1\",\"items\":[1,2.5,{\"x\":null}]}");
    assert_true(json_equal(p.metadata, want));
    json_decref(want);
    pay_payment_clear(&p);
}

static void test_request_default_payment_id(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    json_t *body = load("{" ALL "}");
    const char *dflt = "6F1C2B1E-8A4D-5C3B-9F5E-1A2B3C4D5E6F"; /* e.g. from an Idempotency-Key */
    assert_int_equal(pay_from_request(body, NOW_MS, dflt, &p, &pii, &errs), 0);
    assert_string_equal(p.payment_id, "6f1c2b1e-8a4d-5c3b-9f5e-1a2b3c4d5e6f");
    pay_payment_clear(&p);
    json_decref(body);
    /* the body's own payment_id wins over the default */
    body = load(WITH("\"payment_id\":\"11111111-2222-4333-8444-555555555555\""));
    assert_int_equal(pay_from_request(body, NOW_MS, dflt, &p, &pii, &errs), 0);
    assert_string_equal(p.payment_id, "11111111-2222-4333-8444-555555555555");
    pay_payment_clear(&p);
    json_decref(body);
}

/* Optional fields accepted as given (null = absent, normalization, boundaries). */
static const char *const VALID_BODIES[] = {
    WITH("\"payment_id\":null,\"transaction_type\":null,\"card_type\":null,\"email\":null,"
         "\"device_info\":null,\"country\":null,\"timestamp\":null,\"metadata\":null"),
    WITH("\"timestamp\":\"2025-11-22T09:59:59Z\""), /* just under 24 h ahead */
    WITH("\"timestamp\":\"1970-01-01T00:00:00Z\""),
    WITH("\"ip_address\":\"::ffff:1.2.3.4\""),
    WITH("\"ip_address\":\"192.168.0.1\""),
    WITH("\"email\":\"a.b+c@sub.example.co.uk\""),
    WITH("\"email\":\"" S64 "@x.io\""),
    WITH("\"card_fingerprint\":\"" S256 "\""),
    WITH("\"device_info\":{}"),
    WITH("\"device_info\":{\"os\":\"\"}"),
    WITH("\"metadata\":{}"),
    WITH("\"card_type\":\"master_card-2\""),
    WITH("\"country\":\"aq\",\"billing_country\":\"Gb\",\"shipping_country\":\"US\""),
    "{\"user_id\":\"" S128 "\"," NO_U "}",
    "{\"user_id\":\"ユーザー\"," NO_U "}",
    "{\"user_id\":\"user@tenant\"," NO_U "}",                     /* no domain: not an email */
    WITH("\"metadata\":{\"order\":\"4111111111111112\"}"),            /* fails the Luhn check */
    WITH("\"metadata\":{\"order\":\"1234567890123452\"}"),            /* Luhn, no card scheme */
    WITH("\"metadata\":{\"order_id\":\"5123456789010\"}"),            /* 13 digits: an order id */
    WITH("\"metadata\":{\"n\":4111111111111111}"),                  /* numbers are ids */
    "{\"user_id\":\"sdk@1.2.3\"," NO_U "}",                           /* no top-level domain */
    "{\"payment_method\":\"" S16 S16 "\"," NO_PM "}",
};

static void test_request_valid_table(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof VALID_BODIES / sizeof VALID_BODIES[0]; i++) {
        pay_payment p;
        pay_pii pii;
        pay_errors errs;
        int rc = request(VALID_BODIES[i], &p, &pii, &errs);
        if (rc != 0)
            fail_msg("row %zu: %s: unexpected %s/%s", i, VALID_BODIES[i], errs.e[0].field,
                     errs.e[0].code);
        pay_payment_clear(&p);
    }
}

/* ---------------------------------------------------------------- request errors */

typedef struct err_row {
    const char *body;
    const char *field;
    const char *code;
} err_row;

static const err_row ERROR_ROWS[] = {
    /* required */
    {"{" NO_U "}", "user_id", "required"},
    {"{" NO_M "}", "merchant_id", "required"},
    {"{" NO_A "}", "amount", "required"},
    {"{" NO_C "}", "currency", "required"},
    {"{" NO_PM "}", "payment_method", "required"},
    {"{\"user_id\":null," NO_U "}", "user_id", "required"},
    {"{\"amount\":null," NO_A "}", "amount", "required"},
    /* user_id, merchant_id */
    {"{\"user_id\":123," NO_U "}", "user_id", "invalid_type"},
    {"{\"user_id\":\"\"," NO_U "}", "user_id", "empty"},
    {"{\"user_id\":\"" S128 "a\"," NO_U "}", "user_id", "too_long"},
    {"{\"user_id\":\"a\\u0001b\"," NO_U "}", "user_id", "invalid"},
    {"{\"user_id\":\"a\\nb\"," NO_U "}", "user_id", "invalid"},
    {"{\"user_id\":\"a\\u007fb\"," NO_U "}", "user_id", "invalid"},
    {"{\"user_id\":\"a\\u0085b\"," NO_U "}", "user_id", "invalid"},
    {"{\"merchant_id\":[]," NO_M "}", "merchant_id", "invalid_type"},
    {"{\"merchant_id\":\"\"," NO_M "}", "merchant_id", "empty"},
    {"{\"merchant_id\":\"" S128 "a\"," NO_M "}", "merchant_id", "too_long"},
    /* raw personal data where none belongs */
    {"{\"user_id\":\"alice@example.com\"," NO_U "}", "user_id", "personal_data"},
    {"{\"merchant_id\":\"shop@example.org\"," NO_M "}", "merchant_id", "personal_data"},
    {WITH("\"metadata\":{\"customer_email\":\"alice@example.com\"}"), "metadata", "personal_data"},
    {WITH("\"metadata\":{\"card\":\"4111 1111 1111 1111\"}"), "metadata", "personal_data"},
    {WITH("\"metadata\":{\"a\":[{\"pan\":\"5500-0000-0000-0004\"}]}"), "metadata", "personal_data"},

    /* amount (more in the amount table) */
    {"{\"amount\":\"abc\"," NO_A "}", "amount", "invalid"},
    {"{\"amount\":true," NO_A "}", "amount", "invalid_type"},
    {"{\"amount\":\"\"," NO_A "}", "amount", "empty"},
    {"{\"amount\":\"" S64 "1\"," NO_A "}", "amount", "too_long"},
    {"{\"amount\":\"-1\"," NO_A "}", "amount", "not_positive"},
    {"{\"amount\":\"1.005\"," NO_A "}", "amount", "too_precise"},
    {"{\"amount\":\"99999999999999999999\"," NO_A "}", "amount", "out_of_range"},
    /* currency */
    {"{\"currency\":\"EURO\"," NO_C "}", "currency", "invalid"},
    {"{\"currency\":\"E1R\"," NO_C "}", "currency", "invalid"},
    {"{\"currency\":\"\"," NO_C "}", "currency", "empty"},
    {"{\"currency\":978," NO_C "}", "currency", "invalid_type"},
    {"{\"currency\":\"XXX\"," NO_C "}", "currency", "unknown_currency"},
    {"{\"currency\":\"ZZZ\"," NO_C "}", "currency", "unknown_currency"},
    {"{\"currency\":\"hrk\"," NO_C "}", "currency", "unknown_currency"},
    {"{\"currency\":\"XAU\"," NO_C "}", "currency", "unknown_currency"},
    /* payment_method, transaction_type, card_type */
    {"{\"payment_method\":\"\"," NO_PM "}", "payment_method", "empty"},
    {"{\"payment_method\":\"credit card\"," NO_PM "}", "payment_method", "invalid"},
    {"{\"payment_method\":\"c\\u00e4rd\"," NO_PM "}", "payment_method", "invalid"},
    {"{\"payment_method\":\"" S16 S16 "a\"," NO_PM "}", "payment_method", "too_long"},
    {"{\"payment_method\":1," NO_PM "}", "payment_method", "invalid_type"},
    {WITH("\"transaction_type\":\"x y\""), "transaction_type", "invalid"},
    {WITH("\"transaction_type\":\"\""), "transaction_type", "empty"},
    {WITH("\"card_type\":\"visa!\""), "card_type", "invalid"},
    {WITH("\"card_type\":5"), "card_type", "invalid_type"},
    /* card_last_four */
    {WITH("\"card_last_four\":\"123\""), "card_last_four", "invalid"},
    {WITH("\"card_last_four\":\"12345\""), "card_last_four", "invalid"},
    {WITH("\"card_last_four\":\"12a4\""), "card_last_four", "invalid"},
    {WITH("\"card_last_four\":\"\""), "card_last_four", "empty"},
    {WITH("\"card_last_four\":1234"), "card_last_four", "invalid_type"},
    /* card_fingerprint */
    {WITH("\"card_fingerprint\":\"\""), "card_fingerprint", "empty"},
    {WITH("\"card_fingerprint\":\"" S256 "a\""), "card_fingerprint", "too_long"},
    {WITH("\"card_fingerprint\":{}"), "card_fingerprint", "invalid_type"},
    {WITH("\"card_fingerprint\":\"a\\tb\""), "card_fingerprint", "invalid"},
    /* ip_address */
    {WITH("\"ip_address\":\"1.2.3\""), "ip_address", "invalid"},
    {WITH("\"ip_address\":\"256.1.1.1\""), "ip_address", "invalid"},
    {WITH("\"ip_address\":\"1::2::3\""), "ip_address", "invalid"},
    {WITH("\"ip_address\":\"1.2.3.4 \""), "ip_address", "invalid"},
    {WITH("\"ip_address\":\"fe80::1%eth0\""), "ip_address", "invalid"},
    {WITH("\"ip_address\":\"" S64 "\""), "ip_address", "too_long"},
    {WITH("\"ip_address\":\"\""), "ip_address", "empty"},
    {WITH("\"ip_address\":7"), "ip_address", "invalid_type"},
    /* email */
    {WITH("\"email\":\"a\""), "email", "invalid"},
    {WITH("\"email\":\"a@b\""), "email", "invalid"},
    {WITH("\"email\":\"a@@b.com\""), "email", "invalid"},
    {WITH("\"email\":\"a@b@c.com\""), "email", "invalid"},
    {WITH("\"email\":\"@b.com\""), "email", "invalid"},
    {WITH("\"email\":\"a b@c.com\""), "email", "invalid"},
    {WITH("\"email\":\"a@.com\""), "email", "invalid"},
    {WITH("\"email\":\"a@b.com.\""), "email", "invalid"},
    {WITH("\"email\":\"a@b..com\""), "email", "invalid"},
    {WITH("\"email\":\"" S64 "a@x.io\""), "email", "invalid"},
    {WITH("\"email\":\"a@" S256 S64 ".io\""), "email", "too_long"},
    {WITH("\"email\":\"\""), "email", "empty"},
    {WITH("\"email\":1"), "email", "invalid_type"},
    /* device_info */
    {WITH("\"device_info\":\"x\""), "device_info", "invalid_type"},
    {WITH("\"device_info\":[]"), "device_info", "invalid_type"},
    {WITH("\"device_info\":{\"device_id\":\"\"}"), "device_info.device_id", "empty"},
    {WITH("\"device_info\":{\"device_id\":1}"), "device_info.device_id", "invalid_type"},
    {WITH("\"device_info\":{\"device_id\":\"" S256 "a\"}"), "device_info.device_id", "too_long"},
    {WITH("\"device_info\":{\"os\":\"" S256 "a\"}"), "device_info.os", "too_long"},
    {WITH("\"device_info\":{\"type\":5}"), "device_info.type", "invalid_type"},
    {WITH("\"device_info\":{\"browser\":\"a\\u0000b\"}"), "device_info.browser", "invalid"},
    {WITH("\"device_info\":{\"user_agent\":\"a\\rb\"}"), "device_info.user_agent", "invalid"},
    {WITH("\"device_info\":{\"color\":\"red\"}"), "device_info.color", "unknown_field"},
    {WITH("\"device_info\":{\"color\":null}"), "device_info.color", "unknown_field"},
    /* countries */
    {WITH("\"country\":\"XX\""), "country", "invalid"},
    {WITH("\"country\":\"UK\""), "country", "invalid"},
    {WITH("\"country\":\"EU\""), "country", "invalid"},
    {WITH("\"country\":\"D\""), "country", "invalid"},
    {WITH("\"country\":\"DEU\""), "country", "invalid"},
    {WITH("\"country\":\"\""), "country", "empty"},
    {WITH("\"country\":276"), "country", "invalid_type"},
    {WITH("\"billing_country\":\"ZZ\""), "billing_country", "invalid"},
    {WITH("\"shipping_country\":\"1A\""), "shipping_country", "invalid"},
    /* timestamp */
    {WITH("\"timestamp\":\"yesterday\""), "timestamp", "invalid"},
    {WITH("\"timestamp\":\"2025-02-30T00:00:00Z\""), "timestamp", "invalid"},
    {WITH("\"timestamp\":\"2025-11-21T10:00:00\""), "timestamp", "invalid"},
    {WITH("\"timestamp\":1763719200"), "timestamp", "invalid_type"},
    {WITH("\"timestamp\":\"\""), "timestamp", "empty"},
    {WITH("\"timestamp\":\"2025-11-22T10:00:00.001Z\""), "timestamp", "in_future"},
    {WITH("\"timestamp\":\"9999-12-31T23:59:59Z\""), "timestamp", "in_future"},
    {WITH("\"timestamp\":\"1969-12-31T23:59:59Z\""), "timestamp", "out_of_range"},
    /* payment_id */
    {WITH("\"payment_id\":\"not-a-uuid\""), "payment_id", "invalid"},
    {WITH("\"payment_id\":\"{6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f}\""), "payment_id", "invalid"},
    {WITH("\"payment_id\":\"6f1c2b1e8a4d4c3b9f5e1a2b3c4d5e6f\""), "payment_id", "invalid"},
    {WITH("\"payment_id\":\"00000000-0000-0000-0000-000000000000\""), "payment_id", "invalid"},
    {WITH("\"payment_id\":\"\""), "payment_id", "empty"},
    {WITH("\"payment_id\":5"), "payment_id", "invalid_type"},
    /* metadata */
    {WITH("\"metadata\":[]"), "metadata", "invalid_type"},
    {WITH("\"metadata\":\"x\""), "metadata", "invalid_type"},
    /* unknown fields */
    {WITH("\"foo\":1"), "foo", "unknown_field"},
    {WITH("\"User_Id\":\"u\""), "User_Id", "unknown_field"},
    {WITH("\"device_id\":\"d\""), "device_id", "unknown_field"},
    {WITH("\"extra\":null"), "extra", "unknown_field"},
    {WITH("\"\":1"), "", "unknown_field"},
};

static void test_request_error_table(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof ERROR_ROWS / sizeof ERROR_ROWS[0]; i++) {
        const err_row *r = &ERROR_ROWS[i];
        pay_payment p;
        pay_pii pii;
        pay_errors errs;
        json_error_t jerr;
        json_t *body = json_loads(r->body, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (!body) fail_msg("row %zu: test JSON does not parse: %s", i, r->body);
        int rc = pay_from_request(body, NOW_MS, NULL, &p, &pii, &errs);
        same_as_tree(r->body, strlen(r->body), NULL);
        if (rc != -1 || errs.n != 1 || strcmp(errs.e[0].field, r->field) != 0 ||
            strcmp(errs.e[0].code, r->code) != 0)
            fail_msg("row %zu: %s: want %s/%s, got rc %d, %d error(s), first %s/%s", i, r->body,
                     r->field, r->code, rc, errs.n, errs.n ? errs.e[0].field : "-",
                     errs.n ? errs.e[0].code : "-");
        assert_true(errs.e[0].message[0] != '\0');
        assert_string_equal(pii.email, ""); /* wiped on failure */
        pay_payment_clear(&p);
        json_decref(body);
    }
}

/* Messages never echo the client's values (they may be personal data). */
static void test_request_messages_do_not_echo(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    assert_int_equal(request(WITH("\"email\":\"secret@nodot\",\"ip_address\":\"secret-ip\","
                                  "\"card_fingerprint\":\"secret\\u0001\","
                                  "\"device_info\":{\"device_id\":\"secret\\n\"}"),
                             &p, &pii, &errs), -1);
    assert_int_equal(errs.n, 4);
    json_t *j = pay_errors_to_json(&errs);
    char *text = json_dumps(j, 0);
    assert_null(strstr(text, "secret"));
    free(text);
    json_decref(j);
    assert_string_equal(pii.email, "");
    assert_string_equal(pii.device_id, "");
    pay_payment_clear(&p);

    /* valid personal data in an invalid body is wiped: nothing will digest it */
    assert_int_equal(request("{" NO_U ",\"email\":\"jo@example.com\",\"ip_address\":\"1.2.3.4\","
                             "\"card_fingerprint\":\"fp\",\"device_info\":{\"device_id\":\"d\"}}",
                             &p, &pii, &errs), -1);
    static const pay_pii zero;
    assert_memory_equal(&pii, &zero, sizeof pii);
    pay_payment_clear(&p);
}

static void test_request_collects_every_error(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    assert_int_equal(request("{\"user_id\":\"\",\"amount\":\"abc\",\"currency\":\"xxx\","
                             "\"payment_method\":\"a b\",\"card_last_four\":\"12\","
                             "\"country\":\"ZZ\",\"timestamp\":\"2030-01-01T00:00:00Z\","
                             "\"device_info\":{\"color\":1,\"device_id\":\"\"},\"zip\":\"1\"}",
                             &p, &pii, &errs), -1);
    assert_int_equal(errs.n, 11);
    assert_true(has_error(&errs, "user_id", "empty"));
    assert_true(has_error(&errs, "merchant_id", "required"));
    assert_true(has_error(&errs, "currency", "unknown_currency"));
    assert_true(has_error(&errs, "amount", "invalid")); /* checked even with a bad currency */
    assert_true(has_error(&errs, "payment_method", "invalid"));
    assert_true(has_error(&errs, "card_last_four", "invalid"));
    assert_true(has_error(&errs, "country", "invalid"));
    assert_true(has_error(&errs, "timestamp", "in_future"));
    assert_true(has_error(&errs, "device_info.color", "unknown_field"));
    assert_true(has_error(&errs, "device_info.device_id", "empty"));
    assert_true(has_error(&errs, "zip", "unknown_field"));
    pay_payment_clear(&p);

    /* an unknown currency does not hide a negative amount, nor invent a precision problem */
    assert_int_equal(request("{\"amount\":\"-5.12345\",\"currency\":\"QQQ\"," U "," M "," PM "}",
                             &p, &pii, &errs), -1);
    assert_int_equal(errs.n, 2);
    assert_true(has_error(&errs, "amount", "not_positive"));
    pay_payment_clear(&p);
    assert_int_equal(request("{\"amount\":\"5.12345\",\"currency\":\"QQQ\"," U "," M "," PM "}",
                             &p, &pii, &errs), -1);
    assert_int_equal(errs.n, 1);
    pay_payment_clear(&p);
}

static void test_request_error_cap_and_long_keys(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    json_t *body = load("{" ALL "}");
    char key[300];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "k%02d", i);
        json_object_set_new(body, key, json_true());
    }
    assert_int_equal(pay_from_request(body, NOW_MS, NULL, &p, &pii, &errs), -1);
    assert_int_equal(errs.n, PAY_ERRORS_MAX);
    pay_payment_clear(&p);
    json_decref(body);

    /* a 200-byte key is truncated; a multi-byte key is never cut inside a character */
    body = load("{" ALL "}");
    memset(key, 'a', 200);
    key[200] = '\0';
    json_object_set_new(body, key, json_true());
    json_object_set_new(body, "éééééééééééééééééééééééééééééééééééééééé", json_true());
    json_t *di = json_object();
    json_object_set_new(di, "ééééééééééééééééééééééééééééééééééééééééé", json_true());
    json_object_set_new(body, "device_info", di);
    assert_int_equal(pay_from_request(body, NOW_MS, NULL, &p, &pii, &errs), -1);
    assert_int_equal(errs.n, 3);
    assert_int_equal(strlen(errs.e[1].field), 63);
    assert_int_equal(strspn(errs.e[1].field, "a"), 63);
    assert_int_equal(strlen(errs.e[2].field), 62);
    assert_string_equal(errs.e[0].code, "unknown_field");
    assert_memory_equal(errs.e[0].field, "device_info.éé", 16);
    json_t *j = pay_errors_to_json(&errs); /* NULL if a field were invalid UTF-8 */
    assert_non_null(j);
    json_decref(j);
    pay_payment_clear(&p);
    json_decref(body);
}

static void test_request_nul_in_key(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    json_t *body = load("{" NO_U "}");
    json_object_setn_new(body, "user_id\0x", 9, json_string("u1"));
    assert_int_equal(pay_from_request(body, NOW_MS, NULL, &p, &pii, &errs), -1);
    assert_true(has_error(&errs, "user_id", "required"));
    assert_true(has_error(&errs, "user_id", "unknown_field"));
    pay_payment_clear(&p);
    json_decref(body);
}

static void test_request_metadata_size(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    char big[PAY_METADATA_MAX + 8];
    for (int extra = 0; extra <= 1; extra++) {
        json_t *body = load("{" ALL "}");
        size_t n = PAY_METADATA_MAX - 8 + (size_t)extra; /* {"k":"..."} is 8 bytes + n */
        memset(big, 'x', n);
        big[n] = '\0';
        json_object_set_new(body, "metadata", json_pack("{s:s}", "k", big));
        int rc = pay_from_request(body, NOW_MS, NULL, &p, &pii, &errs);
        if (extra == 0) {
            assert_int_equal(rc, 0);
            assert_non_null(p.metadata);
        } else {
            assert_int_equal(rc, -1);
            assert_true(has_error(&errs, "metadata", "too_long"));
        }
        pay_payment_clear(&p);
        json_decref(body);
    }
}

static void test_request_not_object(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    const char *bodies[] = {"[]", "\"x\"", "1", "null"};
    for (size_t i = 0; i < 4; i++) {
        json_t *b = json_loads(bodies[i], JSON_DECODE_ANY, NULL);
        assert_int_equal(pay_from_request(b, NOW_MS, NULL, &p, &pii, &errs), -1);
        assert_int_equal(errs.n, 1);
        assert_string_equal(errs.e[0].field, "");
        assert_string_equal(errs.e[0].code, "invalid_type");
        pay_payment_clear(&p);
        json_decref(b);
    }
    assert_int_equal(pay_from_request(NULL, NOW_MS, NULL, &p, &pii, &errs), -1);
    pay_payment_clear(&p);
}

static void test_errors_to_json(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    assert_int_equal(request("{" NO_U ",\"country\":\"ZZ\"}", &p, &pii, &errs), -1);
    json_t *j = pay_errors_to_json(&errs);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "validation_failed");
    assert_string_equal(json_string_value(json_object_get(j, "message")), "2 invalid field(s)");
    json_t *fields = json_object_get(j, "fields");
    assert_int_equal(json_array_size(fields), 2);
    json_t *f0 = json_array_get(fields, 0);
    assert_string_equal(json_string_value(json_object_get(f0, "field")), "user_id");
    assert_string_equal(json_string_value(json_object_get(f0, "code")), "required");
    assert_string_equal(json_string_value(json_object_get(f0, "message")), "is required");
    assert_int_equal(json_object_size(f0), 3);
    json_decref(j);
    pay_payment_clear(&p);
}

/* ---------------------------------------------------------------- amounts */

typedef struct amount_row {
    const char *json;     /* the "amount" value as JSON text */
    const char *currency;
    int64_t minor;        /* expected when code is NULL */
    const char *code;
} amount_row;

static const amount_row AMOUNT_ROWS[] = {
    {"\"12.50\"", "EUR", 1250, NULL},
    {"\"12.5\"", "EUR", 1250, NULL},
    {"\"12\"", "EUR", 1200, NULL},
    {"\"0.1\"", "EUR", 10, NULL},
    {"0.1", "EUR", 10, NULL},
    {"0.01", "EUR", 1, NULL},
    {"12.5", "EUR", 1250, NULL},
    {"100", "EUR", 10000, NULL},
    {"19.99", "USD", 1999, NULL},
    {"1.005", "EUR", 0, "too_precise"},
    {"\"1.005\"", "EUR", 0, "too_precise"},
    {"\"12.500\"", "EUR", 0, "too_precise"}, /* more fraction digits than the currency, even 0s */
    {"\"00012.50\"", "EUR", 1250, NULL},     /* leading zeros: the value is unambiguous */
    {"\"1e3\"", "EUR", 0, "invalid"},
    {"1e3", "EUR", 100000, NULL},            /* a JSON number in exponent form is fine */
    {"1.5E6", "EUR", 150000000, NULL},
    {"1e-5", "EUR", 0, "too_precise"},
    {"1e-2", "EUR", 1, NULL},
    {"1e300", "EUR", 0, "out_of_range"},
    {"5e-324", "EUR", 0, "too_precise"},
    {"\"-1\"", "EUR", 0, "not_positive"},
    {"-1", "EUR", 0, "not_positive"},
    {"-0.5", "EUR", 0, "not_positive"},
    {"\"-0\"", "EUR", 0, "not_positive"},
    {"\"0\"", "EUR", 0, "not_positive"},
    {"\"0.00\"", "EUR", 0, "not_positive"},
    {"0", "EUR", 0, "not_positive"},
    {"0.0", "EUR", 0, "not_positive"},
    {"\"12.\"", "EUR", 0, "invalid"},
    {"\".5\"", "EUR", 0, "invalid"},
    {"\"+1\"", "EUR", 0, "invalid"},
    {"\" 12\"", "EUR", 0, "invalid"},
    {"\"12 \"", "EUR", 0, "invalid"},
    {"\"1,50\"", "EUR", 0, "invalid"},
    {"\"1.2.3\"", "EUR", 0, "invalid"},
    {"\"0x10\"", "EUR", 0, "invalid"},
    {"\"NaN\"", "EUR", 0, "invalid"},
    {"\"Infinity\"", "EUR", 0, "invalid"},
    {"\"-\"", "EUR", 0, "invalid"},
    {"\"\\uff11\\uff12\"", "EUR", 0, "invalid"}, /* full-width digits */
    {"\"\"", "EUR", 0, "empty"},
    {"true", "EUR", 0, "invalid_type"},
    {"{}", "EUR", 0, "invalid_type"},
    {"[1]", "EUR", 0, "invalid_type"},
    /* PAY_AMOUNT_MAX_MINOR = 10^13 minor units: window sums stay far from int64 overflow */
    {"\"100000000000.00\"", "EUR", 10000000000000, NULL},
    {"\"100000000000.01\"", "EUR", 0, "out_of_range"},
    {"\"10000000000000\"", "JPY", 10000000000000, NULL},
    {"\"10000000000001\"", "JPY", 0, "out_of_range"},
    {"\"92233720368547758.07\"", "EUR", 0, "out_of_range"},
    {"\"9223372036854775808\"", "JPY", 0, "out_of_range"},
    {"9223372036854775807", "EUR", 0, "out_of_range"},
    {"92233720368547758", "EUR", 0, "out_of_range"},
    {"100000000000", "EUR", 10000000000000, NULL},
    {"\"99999999999999999999999999\"", "EUR", 0, "out_of_range"},
    {"0.30000000000000004", "EUR", 0, "invalid"}, /* needs 17 significant digits */
    {"123456789012345.6", "EUR", 0, "invalid"},    /* 16 */
    {"1234567890123.45", "EUR", 0, "out_of_range"}, /* 15 digits are read, then over 10^13 */
    {"12345678901.23", "EUR", 1234567890123, NULL},
    {"\"100\"", "JPY", 100, NULL},
    {"100", "JPY", 100, NULL},
    {"100.0", "JPY", 100, NULL},
    {"\"100.5\"", "JPY", 0, "too_precise"},
    {"100.5", "JPY", 0, "too_precise"},
    {"\"1.234\"", "KWD", 1234, NULL},
    {"1.234", "KWD", 1234, NULL},
    {"\"1.2345\"", "KWD", 0, "too_precise"},
    {"\"0.001\"", "BHD", 1, NULL},
    {"\"5000\"", "CLP", 5000, NULL},
    {"\"1.5\"", "ISK", 0, "too_precise"},
    {"\"1.2345\"", "CLF", 12345, NULL},
    {"\"1.5\"", "eur", 150, NULL},
};

static void test_request_amount_table(void **state) {
    (void)state;
    char text[512];
    for (size_t i = 0; i < sizeof AMOUNT_ROWS / sizeof AMOUNT_ROWS[0]; i++) {
        const amount_row *r = &AMOUNT_ROWS[i];
        pay_payment p;
        pay_pii pii;
        pay_errors errs;
        snprintf(text, sizeof text, "{" U "," M "," PM ",\"currency\":\"%s\",\"amount\":%s}",
                 r->currency, r->json);
        int rc = request(text, &p, &pii, &errs);
        if (r->code && (rc != -1 || errs.n != 1 || strcmp(errs.e[0].code, r->code) != 0 ||
                        strcmp(errs.e[0].field, "amount") != 0))
            fail_msg("row %zu: %s %s: want %s, got rc %d, %s", i, r->json, r->currency, r->code, rc,
                     errs.n ? errs.e[0].code : "-");
        if (!r->code && (rc != 0 || p.amount_minor != r->minor))
            fail_msg("row %zu: %s %s: want %lld, got rc %d, %lld (%s)", i, r->json, r->currency,
                     (long long)r->minor, rc, (long long)p.amount_minor,
                     errs.n ? errs.e[0].code : "-");
        pay_payment_clear(&p);
    }
}

typedef struct parse_row {
    const char *s;
    int exp;
    int rc;
    int64_t minor;
} parse_row;

static const parse_row PARSE_ROWS[] = {
    {"12", 2, 0, 1200},
    {"12.5", 2, 0, 1250},
    {"12.50", 2, 0, 1250},
    {"0.01", 2, 0, 1},
    {"00012.50", 2, 0, 1250},
    {"1", 0, 0, 1},
    {"1.234", 3, 0, 1234},
    {"10000000000000", 0, 0, 10000000000000},
    {"100000000000.00", 2, 0, 10000000000000},
    {"10000000000001", 0, -1, 0},
    {"9223372036854775807", 0, -1, 0},
    {"92233720368547758.07", 2, -1, 0},
    {"0.000000000000000001", 18, 0, 1},
    {"9223372036854775808", 0, -1, 0},
    {"92233720368547758.08", 2, -1, 0},
    {"99999999999999999999999", 0, -1, 0},
    {"-1", 2, -1, 0},
    {"+1", 2, -1, 0},
    {"1e3", 2, -1, 0},
    {"0", 2, -1, 0},
    {"0.00", 2, -1, 0},
    {"1.005", 2, -1, 0},
    {"1.5", 0, -1, 0},
    {"", 2, -1, 0},
    {".", 2, -1, 0},
    {"12.", 2, -1, 0},
    {".5", 2, -1, 0},
    {"1 ", 2, -1, 0},
    {"1", 19, -1, 0},
    {"1", -1, -1, 0},
};

static void test_amount_parse(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof PARSE_ROWS / sizeof PARSE_ROWS[0]; i++) {
        const parse_row *r = &PARSE_ROWS[i];
        int64_t v = -7;
        int rc = pay_amount_parse(r->s, r->exp, &v);
        if (rc != r->rc || (rc == 0 && v != r->minor) || (rc != 0 && v != -7))
            fail_msg("row %zu: \"%s\" exp %d: got rc %d, %lld", i, r->s, r->exp, rc, (long long)v);
    }
    int64_t v;
    assert_int_equal(pay_amount_parse(NULL, 2, &v), -1);
}

static void test_amount_format(void **state) {
    (void)state;
    static const struct {
        int64_t minor;
        int exp;
        const char *want;
    } rows[] = {
        {1250, 2, "12.50"}, {1, 2, "0.01"}, {100, 0, "100"}, {1234, 3, "1.234"},
        {-1250, 2, "-12.50"}, {0, 2, "0.00"}, {5, 4, "0.0005"},
        {INT64_MAX, 2, "92233720368547758.07"}, {INT64_MIN, 0, "-9223372036854775808"},
        {INT64_MIN, 2, "-92233720368547758.08"},
    };
    char out[32];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        pay_amount_format(rows[i].minor, rows[i].exp, out, sizeof out);
        assert_string_equal(out, rows[i].want);
        if (rows[i].minor > 0 && rows[i].minor <= PAY_AMOUNT_MAX_MINOR) { /* inverses */
            int64_t back;
            assert_int_equal(pay_amount_parse(out, rows[i].exp, &back), 0);
            assert_int_equal(back, rows[i].minor);
        }
    }
    pay_amount_format(1250, 2, out, 4); /* truncates safely */
    assert_string_equal(out, "12.");
}

/* Every active code with its exponent (ISO 4217 List One), and codes that must be refused. */
static const char CURRENCY_LIST[] =
    "AED2 AFN2 ALL2 AMD2 ANG2 AOA2 ARS2 AUD2 AWG2 AZN2 BAM2 BBD2 BDT2 BGN2 BHD3 BIF0 BMD2 BND2 "
    "BOB2 BOV2 BRL2 BSD2 BTN2 BWP2 BYN2 BZD2 CAD2 CDF2 CHE2 CHF2 CHW2 CLF4 CLP0 CNY2 COP2 COU2 "
    "CRC2 CUC2 CUP2 CVE2 CZK2 DJF0 DKK2 DOP2 DZD2 EGP2 ERN2 ETB2 EUR2 FJD2 FKP2 GBP2 GEL2 GHS2 "
    "GIP2 GMD2 GNF0 GTQ2 GYD2 HKD2 HNL2 HTG2 HUF2 IDR2 ILS2 INR2 IQD3 IRR2 ISK0 JMD2 JOD3 JPY0 "
    "KES2 KGS2 KHR2 KMF0 KPW2 KRW0 KWD3 KYD2 KZT2 LAK2 LBP2 LKR2 LRD2 LSL2 LYD3 MAD2 MDL2 MGA2 "
    "MKD2 MMK2 MNT2 MOP2 MRU2 MUR2 MVR2 MWK2 MXN2 MXV2 MYR2 MZN2 NAD2 NGN2 NIO2 NOK2 NPR2 NZD2 "
    "OMR3 PAB2 PEN2 PGK2 PHP2 PKR2 PLN2 PYG0 QAR2 RON2 RSD2 RUB2 RWF0 SAR2 SBD2 SCR2 SDG2 SEK2 "
    "SGD2 SHP2 SLE2 SLL2 SOS2 SRD2 SSP2 STN2 SVC2 SYP2 SZL2 THB2 TJS2 TMT2 TND3 TOP2 TRY2 TTD2 "
    "TWD2 TZS2 UAH2 UGX0 USD2 USN2 UYI0 UYU2 UYW4 UZS2 VED2 VES2 VND0 VUV0 WST2 XAF0 XCD2 XCG2 "
    "XOF0 XPF0 YER2 ZAR2 ZMW2 ZWG2 ZWL2 ";

static void test_currency_exponent(void **state) {
    (void)state;
    char code[4];
    int n = 0;
    for (const char *s = CURRENCY_LIST; *s; s += 5, n++) {
        memcpy(code, s, 3);
        code[3] = '\0';
        if (pay_currency_exponent(code) != s[3] - '0') fail_msg("%s", code);
    }
    assert_int_equal(n, 169);
    assert_int_equal(pay_currency_exponent("eur"), 2);
    assert_int_equal(pay_currency_exponent("jpy"), 0);
    const char *bad[] = {"XXX", "XAU", "XDR", "HRK", "DEM", "EURO", "EU", "", "E R", "€UR"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(pay_currency_exponent(bad[i]), -1);
    assert_int_equal(pay_currency_exponent(NULL), -1);
}

/* The officially assigned ISO 3166-1 alpha-2 codes (249), plus XK. */
static const char COUNTRY_LIST[] =
    "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZCACCCDCFCGCHCICKCL"
    "CMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGLGMGNGPGQGRGSGTGU"
    "GWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULVLYMAMC"
    "MDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPT"
    "PWPYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUA"
    "UGUMUSUYUZVAVCVEVGVIVNVUWFWSYEYTZAZMZWXK";

static bool country_ok(const char *cc) {
    char text[256];
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    snprintf(text, sizeof text, WITH("\"country\":\"%s\""), cc);
    int rc = request(text, &p, &pii, &errs);
    pay_payment_clear(&p);
    return rc == 0;
}

static void test_countries(void **state) {
    (void)state;
    int accepted = 0;
    char cc[3] = {0};
    for (cc[0] = 'A'; cc[0] <= 'Z'; cc[0]++)
        for (cc[1] = 'A'; cc[1] <= 'Z'; cc[1]++) {
            bool listed = false;
            for (size_t i = 0; i + 1 < sizeof COUNTRY_LIST; i += 2)
                listed |= memcmp(COUNTRY_LIST + i, cc, 2) == 0;
            if (country_ok(cc) != listed) fail_msg("%s: listed %d", cc, listed);
            accepted += listed;
        }
    assert_int_equal(accepted, 250);
}

/* pay_stored_value_check: the event field's own check, then the stored form against the value.
 * why NULL: the value is stored as given. */
static void test_stored_value_check(void **state) {
    static const struct {
        const char *field, *value, *why;
    } cases[] = {
        {"payment_method", "card", NULL},
        {"payment_method", "bank_transfer", NULL},
        {"payment_method", "CARD", "is stored as \"card\""},
        {"payment_method", "", "must not be empty"},
        {"payment_method", "credit card", "must contain only letters, digits, '_' and '-'"},
        {"card_type", "Visa", "is stored as \"visa\""},
        {"transaction_type", "refund", NULL},
        {"currency", "EUR", NULL},
        {"currency", "eur", "is stored as \"EUR\""},
        {"currency", "EURO", "must be a three-letter ISO 4217 code"},
        {"currency", "ABC", "is not an active ISO 4217 currency"},
        {"country", "GB", NULL},
        {"country", "UK", "must be an assigned ISO 3166-1 alpha-2 code"},
        {"shipping_country", "gb", "is stored as \"GB\""},
        {"ip_country", "XK", NULL},
        {"merchant_id", "Shop 7", NULL},
        {"user_id", "a\tb", "must not contain control characters"},
        {"event_time", "2026-01-01T00:00:00Z", "is not a field compared as stored"},
        {"nonsense", "x", "is not a field compared as stored"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[160] = "";
        int rc = pay_stored_value_check(cases[i].field, cases[i].value, strlen(cases[i].value), why,
                                        sizeof why);
        if (rc != (cases[i].why ? -1 : 0) || (cases[i].why && strcmp(why, cases[i].why) != 0))
            fail_msg("case %zu (%s \"%s\"): rc %d, \"%s\"", i, cases[i].field, cases[i].value, rc, why);
    }
    char why[160] = "";
    assert_int_equal(pay_stored_value_check("user_id", "u\0x", 3, why, sizeof why), -1);
    assert_string_equal(why, "must not contain NUL characters");
}

/* ---------------------------------------------------------------- event codec */

static void assert_payment_equal(const pay_payment *a, const pay_payment *b) {
    assert_string_equal(a->payment_id, b->payment_id);
    assert_string_equal(a->user_id, b->user_id);
    assert_string_equal(a->merchant_id, b->merchant_id);
    assert_int_equal(a->amount_minor, b->amount_minor);
    assert_string_equal(a->currency, b->currency);
    assert_int_equal(a->currency_exp, b->currency_exp);
    assert_string_equal(a->payment_method, b->payment_method);
    assert_string_equal(a->transaction_type, b->transaction_type);
    assert_string_equal(a->card_type, b->card_type);
    assert_string_equal(a->card_last_four, b->card_last_four);
    assert_string_equal(a->card_fingerprint_digest, b->card_fingerprint_digest);
    assert_string_equal(a->ip_digest, b->ip_digest);
    assert_string_equal(a->email_digest, b->email_digest);
    assert_string_equal(a->device_id_digest, b->device_id_digest);
    assert_string_equal(a->country, b->country);
    assert_string_equal(a->billing_country, b->billing_country);
    assert_string_equal(a->shipping_country, b->shipping_country);
    assert_int_equal(a->event_time_ms, b->event_time_ms);
    assert_int_equal(a->ingest_time_ms, b->ingest_time_ms);
    assert_true(a->device_info ? json_equal(a->device_info, b->device_info) : !b->device_info);
    assert_true(a->metadata ? json_equal(a->metadata, b->metadata) : !b->metadata);
}

static void fill_digest(char out[PAY_DIGEST_HEX + 1], unsigned char seed) {
    unsigned char b[32];
    for (int i = 0; i < 32; i++) b[i] = (unsigned char)(seed * 31 + i * 7);
    fs_hex(b, 32, out);
}

static void roundtrip(const pay_payment *in) {
    pay_payment out;
    char err[256] = "";
    size_t len = 0;
    char *buf = pay_event_encode(in, &len);
    assert_non_null(buf);
    assert_int_equal(len, strlen(buf));
    if (pay_event_decode(buf, len, &out, err, sizeof err) != 0) fail_msg("%s: %s", err, buf);
    assert_payment_equal(in, &out);
    /* and the bytes are stable: re-encoding gives the same event */
    size_t len2 = 0;
    char *buf2 = pay_event_encode(&out, &len2);
    assert_string_equal(buf, buf2);
    free(buf2);
    free(buf);
    pay_payment_clear(&out);
}

static void test_event_roundtrip(void **state) {
    (void)state;
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    assert_int_equal(request(FULL_BODY, &p, &pii, &errs), 0);
    /* what pii_apply does in ingest */
    fill_digest(p.card_fingerprint_digest, 1);
    fill_digest(p.ip_digest, 2);
    fill_digest(p.email_digest, 3);
    fill_digest(p.device_id_digest, 4);
    roundtrip(&p);
    pay_payment_clear(&p);

    assert_int_equal(request("{" ALL "}", &p, &pii, &errs), 0); /* every optional field absent */
    roundtrip(&p);
    pay_payment_clear(&p);

    const char *currencies[] = {"JPY", "KWD", "CLF", "CLP"};
    for (int i = 0; i < 4; i++) {
        char text[256];
        snprintf(text, sizeof text, "{" U "," M "," PM ",\"amount\":\"7\",\"currency\":\"%s\"}",
                 currencies[i]);
        assert_int_equal(request(text, &p, &pii, &errs), 0);
        roundtrip(&p);
        pay_payment_clear(&p);
    }
}

static void test_event_golden(void **state) {
    (void)state;
    pay_payment p;
    memset(&p, 0, sizeof p);
    strcpy(p.payment_id, "6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f");
    strcpy(p.user_id, "u1");
    strcpy(p.merchant_id, "m1");
    p.amount_minor = 1250;
    strcpy(p.currency, "EUR");
    p.currency_exp = 2;
    strcpy(p.payment_method, "card");
    strcpy(p.country, "DE");
    strcpy(p.card_last_four, "4242");
    p.event_time_ms = NOW_MS;
    p.ingest_time_ms = NOW_MS + 123;
    p.metadata = json_pack("{s:i}", "n", 1);
    size_t len;
    char *buf = pay_event_encode(&p, &len);
    assert_string_equal(buf, "{\"schema_version\":1,"
                             "\"payment_id\":\"6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f\","
                             "\"user_id\":\"u1\",\"merchant_id\":\"m1\",\"amount\":\"12.50\","
                             "\"amount_minor\":1250,\"currency\":\"EUR\",\"currency_exp\":2,"
                             "\"payment_method\":\"card\",\"card_last_four\":\"4242\","
                             "\"country\":\"DE\",\"metadata\":{\"n\":1},"
                             "\"event_time\":\"2025-11-21T10:00:00.000Z\","
                             "\"ingest_time\":\"2025-11-21T10:00:00.123Z\"}");
    free(buf);
    pay_payment_clear(&p);
}

#define EV_ID "\"payment_id\":\"6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f\""
#define EV_AMT "\"amount\":\"12.50\",\"amount_minor\":1250"
#define EV_CUR "\"currency\":\"EUR\",\"currency_exp\":2"
#define EV_TIMES \
    "\"event_time\":\"2025-11-21T10:00:00.000Z\",\"ingest_time\":\"2025-11-21T10:00:00.123Z\""
#define EV_REST U "," M "," PM "," EV_TIMES
#define EV_HEAD "{\"schema_version\":1,"
#define EV_ALL EV_HEAD EV_ID "," EV_AMT "," EV_CUR "," EV_REST
#define EV(extra) EV_ALL "," extra "}"
#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

typedef struct decode_row {
    const char *event;
    const char *err; /* NULL: accepted; else the expected errstr prefix */
} decode_row;

static const decode_row DECODE_ROWS[] = {
    {EV_ALL "}", NULL},
    {EV("\"new_field\":{\"a\":1},\"headers\":[1]"), NULL}, /* unknown fields are ignored */
    {EV_HEAD EV_ID ",\"amount\":\"12.50\"," EV_CUR "," EV_REST "}", NULL},
    {EV_HEAD EV_ID ",\"amount_minor\":1250,\"currency\":\"EUR\"," EV_REST "}", NULL},
    {EV("\"ip_digest\":\"" D64 "\",\"country\":\"DE\",\"device_info\":{\"os\":\"x\",\"v2\":[1]}"),
     NULL},
    {EV("\"transaction_type\":null"), NULL},
    {"", "event: not JSON"},
    {"hello", "event: not JSON"},
    {EV_HEAD EV_ID ",\"amount\":\"12.5", "event: not JSON"}, /* truncated */
    {EV("\"user_id\":\"dup\""), "event: not JSON"},          /* duplicate key */
    {"[]", "event: must be a JSON object"},
    {"{\"payment_id\":1}", "schema_version: required"},
    {"{\"schema_version\":2}", "schema_version: unsupported 2"},
    {"{\"schema_version\":-1}", "schema_version: unsupported -1"},
    {"{\"schema_version\":\"1\"}", "schema_version: must be an integer"},
    {"{\"schema_version\":1.0}", "schema_version: must be an integer"},
    {EV_HEAD EV_AMT "," EV_CUR "," EV_REST "}", "payment_id: required"},
    {EV_HEAD "\"payment_id\":\"xyz\"," EV_AMT "," EV_CUR "," EV_REST "}",
     "payment_id: must be a canonical UUID"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR "," M "," PM "," EV_TIMES "}", "user_id: required"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR "," U "," PM "," EV_TIMES "}", "merchant_id: required"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR "," U "," M "," EV_TIMES "}", "payment_method: required"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_REST "}", "currency: required"},
    {EV_HEAD EV_ID "," EV_CUR "," EV_REST "}", "amount_minor: required"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR "," U "," M "," PM "}", "event_time: required"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR "," U "," M "," PM
     ",\"event_time\":\"2025-11-21T10:00:00Z\"}", "ingest_time: required"},
    {EV_HEAD EV_ID ",\"amount_minor\":0," EV_CUR "," EV_REST "}", "amount_minor: must be > 0"},
    {EV_HEAD EV_ID ",\"amount_minor\":-5," EV_CUR "," EV_REST "}", "amount_minor: must be > 0"},
    {EV_HEAD EV_ID ",\"amount_minor\":10000000000001," EV_CUR "," EV_REST "}",
     "amount_minor: must be at most 10^13"}, /* window sums would overflow */
    {EV_HEAD EV_ID ",\"amount_minor\":\"1250\"," EV_CUR "," EV_REST "}",
     "amount_minor: must be an integer"},
    {EV_HEAD EV_ID ",\"amount_minor\":1250,\"amount\":\"12.51\"," EV_CUR "," EV_REST "}",
     "amount: does not match amount_minor"},
    {EV_HEAD EV_ID ",\"amount\":\"12.505\"," EV_CUR "," EV_REST "}", "amount: must be"},
    {EV_HEAD EV_ID ",\"amount\":1250," EV_CUR "," EV_REST "}", "amount: must be"},
    {EV_HEAD EV_ID "," EV_AMT ",\"currency\":\"EUR\",\"currency_exp\":3," EV_REST "}",
     "currency_exp: does not match the currency"},
    {EV_HEAD EV_ID "," EV_AMT ",\"currency\":\"EUR\",\"currency_exp\":\"2\"," EV_REST "}",
     "currency_exp: does not match the currency"},
    {EV_HEAD EV_ID "," EV_AMT ",\"currency\":\"XXX\"," EV_REST "}",
     "currency: is not an active ISO 4217 currency"},
    {EV("\"ip_digest\":\"" "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\""),
     "ip_digest: must be 64 lower-case hex characters"},
    {EV("\"email_digest\":\"" "123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\""),
     "email_digest: must be 64 lower-case hex characters"},
    {EV("\"device_id_digest\":1"), "device_id_digest: must be a string"},
    {EV("\"card_fingerprint_digest\":\"" D64 "0\""), "card_fingerprint_digest: must be 64"},
    {EV("\"country\":\"XX\""), "country: must be an assigned ISO 3166-1 alpha-2 code"},
    {EV("\"shipping_country\":\"DEU\""), "shipping_country: must be an assigned"},
    {EV("\"card_last_four\":\"12\""), "card_last_four: must be exactly 4 digits"},
    {EV("\"card_type\":\"a b\""), "card_type: must contain only"},
    {EV("\"device_info\":{\"device_id\":\"raw\"}"),
     "device_info.device_id: raw personal data is not allowed in events"},
    {EV("\"email\":\"bob@example.com\""), "email: raw personal data is not allowed in events"},
    {EV("\"ip_address\":\"198.51.100.7\""), "ip_address: raw personal data is not allowed"},
    {EV("\"card_fingerprint\":\"fp-raw\""), "card_fingerprint: raw personal data is not allowed"},
    {EV("\"card_number\":\"4111111111111111\""), "card_number: raw personal data is not allowed"},
    {EV("\"email\":null"), "email: raw personal data is not allowed in events"},
    /* told apart whatever else is wrong: its dead letter goes without the value */
    {"{\"schema_version\":2,\"email\":\"bob@example.com\"}", "email: raw personal data"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR "," M "," PM "," EV_TIMES
     ",\"device_info\":{\"device_id\":\"raw\"}}", "device_info.device_id: raw personal data"},
    /* ids and metadata are not second-guessed in events (ingest did; an older event whose client
     * got a 202 must not be dead-lettered without its value) */
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR ",\"user_id\":\"bob@example.com\"," M "," PM "," EV_TIMES "}", NULL},
    {EV("\"metadata\":{\"c\":\"4111111111111111\"}"), NULL},
    {EV("\"device_info\":\"x\""), "device_info: must be an object"},
    {EV("\"device_info\":{\"os\":7}"), "device_info.os: must be a string"},
    {EV("\"metadata\":[]"), "metadata: must be an object"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR "," U "," M "," PM
     ",\"event_time\":\"nope\",\"ingest_time\":\"2025-11-21T10:00:00Z\"}",
     "event_time: must be an RFC 3339 timestamp"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR ",\"user_id\":\"a\\u0001\"," M "," PM "," EV_TIMES "}",
     "user_id: must not contain control characters"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR ",\"user_id\":\"\"," M "," PM "," EV_TIMES "}",
     "user_id: must not be empty"},
    {EV_HEAD EV_ID "," EV_AMT "," EV_CUR ",\"user_id\":\"a\\u0000b\"," M "," PM "," EV_TIMES "}",
     "event: not JSON"}, /* NUL is refused by the parser already */
};

/* Free text (an outcome's reason): email addresses and card numbers word by word. */
static void test_text_has_personal(void **state) {
    (void)state;
    static const struct {
        const char *text;
        bool personal;
    } rows[] = {
        {"cardholder dispute", false},
        {"", false},
        {"mail from bob@example.com.", true},
        {"<Bob.Smith@Example.COM>", true},
        {"(alice@example.org) called", true},
        {"sdk@1.2.3 crashed", false},          /* a version, not an address */
        {"user @ home", false},
        {"card 4111 1111 1111 1111 reported", true},
        {"card 4111-1111-1111-1111", true},
        {"4111111111111111", true},
        {"4111111111111112 is no card", false}, /* Luhn */
        {"order 5704781545782 refunded", false}, /* 13 digits: Shopify's order ids */
        {"ref 1234567890123456", false},        /* no scheme starts with 1 */
        {"amount 100 - 20 - 5", false},
        /* next to other numbers (an expiry date, a count, a date) */
        {"card 4111111111111111 12/25", true},
        {"4111111111111111 2024-05-01", true},
        {"ticket 12 4111 1111 1111 1111", true},
        {"2 4111111111111111", true},
        {"5555555555554444 3", true},
        {"41111111111111111111 is 20 digits", false},
        {"12 34", false},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (pay_text_has_personal(rows[i].text, strlen(rows[i].text)) != rows[i].personal)
            fail_msg("row %zu (%s): want %d", i, rows[i].text, rows[i].personal);
}

static void test_event_decode_table(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof DECODE_ROWS / sizeof DECODE_ROWS[0]; i++) {
        const decode_row *r = &DECODE_ROWS[i];
        pay_payment p;
        char err[256] = "";
        int rc = pay_event_decode(r->event, strlen(r->event), &p, err, sizeof err);
        if (!r->err && rc != 0) fail_msg("row %zu: want accepted, got %s: %s", i, err, r->event);
        int want = r->err && strstr(r->err, "raw personal data") ? PAY_EVENT_RAW_PII : -1;
        if (r->err && (rc != want || strncmp(err, r->err, strlen(r->err)) != 0))
            fail_msg("row %zu: want \"%s\", got rc %d \"%s\": %s", i, r->err, rc, err, r->event);
        pay_payment_clear(&p);
    }
}

static void test_event_decode_values(void **state) {
    (void)state;
    static const char ev[] = EV("\"device_info\":{\"os\":\"x\",\"v2\":[1]},\"country\":\"de\"");
    pay_payment p;
    char err[256];
    assert_int_equal(pay_event_decode(ev, sizeof ev - 1, &p, err, sizeof err), 0);
    assert_int_equal(p.amount_minor, 1250);
    assert_int_equal(p.currency_exp, 2);
    assert_string_equal(p.country, "DE");
    assert_int_equal(p.ingest_time_ms, NOW_MS + 123);
    assert_int_equal(json_object_size(p.device_info), 2);
    pay_payment_clear(&p);
    /* not NUL-terminated, and no NULL crash */
    char copy[sizeof ev];
    memcpy(copy, ev, sizeof ev);
    copy[sizeof ev - 1] = 'x';
    assert_int_equal(pay_event_decode(copy, sizeof ev - 1, &p, err, sizeof err), 0);
    pay_payment_clear(&p);
    assert_int_equal(pay_event_decode(NULL, 0, &p, err, sizeof err), -1);
    pay_payment_clear(&p);
    /* jansson's "near '<token>'" never reaches errstr */
    assert_int_equal(pay_event_decode("{\"a\":secret}", 12, &p, err, sizeof err), -1);
    assert_null(strstr(err, "secret"));
    pay_payment_clear(&p);
}

static void test_partition_key(void **state) {
    (void)state;
    pay_payment p;
    char key[4];
    memset(&p, 0, sizeof p);
    pay_partition_key(&p, key);
    assert_string_equal(key, "UNK");
    strcpy(p.country, "DE");
    pay_partition_key(&p, key);
    assert_string_equal(key, "DE");

    pay_pii pii;
    pay_errors errs;
    assert_int_equal(request(WITH("\"country\":\"fr\""), &p, &pii, &errs), 0);
    pay_partition_key(&p, key);
    assert_string_equal(key, "FR");
    pay_payment_clear(&p);
    assert_int_equal(request(WITH("\"billing_country\":\"fr\""), &p, &pii, &errs), 0);
    pay_partition_key(&p, key);
    assert_string_equal(key, "UNK");
    pay_payment_clear(&p);
}

static void test_clear_accepts_null(void **state) {
    (void)state;
    pay_payment_clear(NULL);
}

/* The text path on realistic bodies takes them, and on random edits of them never disagrees. */
static void test_request_text_path(void **state) {
    (void)state;
    static const char *const TAKEN[] = {
        "{" ALL "}",
        "{" ALL ",\"transaction_type\":\"purchase\",\"card_type\":\"visa\","
        "\"card_last_four\":\"0035\",\"card_fingerprint\":\"fp_1234abcd\","
        "\"ip_address\":\"198.51.117.120\",\"email\":\"customer17@example.com\","
        "\"device_info\":{\"device_id\":\"dev-000013\",\"os\":\"ios\",\"browser\":\"safari\"},"
        "\"country\":\"DE\",\"billing_country\":\"DE\",\"shipping_country\":\"DE\"}",
        " {" ALL ",\"timestamp\":\"2025-11-21T09:00:00Z\",\"metadata\":null,\"device_info\":{}}\n",
        "{\"user_id\":\"caf\\u00e9 \\\"q\\\"\",\"merchant_id\":\"m\\/1\"," A "," C "," PM "}",
        "{" ALL ",\"device_info\":{\"color\":\"red\",\"os\":\"a\\u0001\"},\"email\":\"x\"}",
        "{\"user_id\":\"\"," A ",\"currency\":\"xxx\"}", /* invalid: the same errors */
        "{" ALL ",\"device_info\":\"x\"}" /* declined below: the tree names the type */,
    };
    for (size_t i = 0; i < sizeof TAKEN / sizeof TAKEN[0]; i++)
        assert_int_equal(same_as_tree(TAKEN[i], strlen(TAKEN[i]), NULL), i + 1 < sizeof TAKEN / sizeof TAKEN[0]);
    /* declined: a number, metadata, an unknown member, malformed, a body id next to a default id */
    assert_false(same_as_tree(FULL_BODY, strlen(FULL_BODY), NULL));
    const char *own_id = "{" ALL ",\"payment_id\":\"6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f\"}";
    assert_true(same_as_tree(own_id, strlen(own_id), NULL));
    assert_false(same_as_tree(own_id, strlen(own_id), "0d5f1e3a-8f4b-4c1d-9a2e-7b6c5d4e3f21"));
    assert_false(same_as_tree("{" ALL ",\"x\":\"1\"}", strlen("{" ALL ",\"x\":\"1\"}"), NULL));
    assert_false(same_as_tree("{" ALL ",}", strlen("{" ALL ",}"), NULL));
    /* random edits of a realistic body */
    static const char ALPHABET[] = "{}[]:,\"\\ 0123456789.-aeuxDE@\x01\xc3\xa9";
    const char *seed = TAKEN[1];
    size_t seed_len = strlen(seed);
    char buf[1024];
    uint32_t r = 7;
    int taken = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len = seed_len;
        memcpy(buf, seed, len);
        for (int e = 0; e < 1 + round % 3; e++) {
            r = r * 1103515245u + 12345u;
            size_t at = (r >> 8) % len;
            char c = ALPHABET[(r >> 20) % (sizeof ALPHABET - 1)];
            if (r & 1) buf[at] = c;
            else if (len + 1 < sizeof buf) memmove(buf + at + 1, buf + at, len - at), buf[at] = c, len++;
        }
        taken += same_as_tree(buf, len, (round & 4) ? "6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f" : NULL);
    }
    assert_true(taken > 2000);
}

/* pay_time_check: the bounds of every client time (outcome known_at), table-driven. */
static void test_time_check(void **state) {
    (void)state;
    const int64_t now = 1795255200000; /* 2026-11-21T10:00:00Z */
    static const struct {
        const char *s, *code; /* code NULL: accepted */
    } rows[] = {
        {"2026-11-01T10:00:00Z", NULL},
        {"2026-11-21T09:00:00Z", NULL},             /* less than 24 h ahead */
        {"1970-01-01T00:00:00Z", NULL},
        {"2026-11-22T10:00:00Z", NULL},             /* exactly 24 h ahead */
        {"2026-11-22T10:00:01Z", "in_future"},
        {"2999-01-01T00:00:00Z", "in_future"},
        {"0000-01-01T00:00:00Z", "out_of_range"},   /* before 1970 */
        {"9999-12-31T23:59:59-23:59", "out_of_range"}, /* 10000-01-01 in UTC */
        {"yesterday", "invalid"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *code = NULL;
        char msg[120] = "";
        int64_t ms = 0;
        int rc = pay_time_check(rows[i].s, now, &ms, &code, msg, sizeof msg);
        if (rows[i].code ? rc != -1 || strcmp(code, rows[i].code) != 0 : rc != 0)
            fail_msg("%s: rc %d code %s (%s)", rows[i].s, rc, code ? code : "-", msg);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_minimal),
        cmocka_unit_test(test_request_full),
        cmocka_unit_test(test_request_default_payment_id),
        cmocka_unit_test(test_request_valid_table),
        cmocka_unit_test(test_request_error_table),
        cmocka_unit_test(test_request_messages_do_not_echo),
        cmocka_unit_test(test_request_collects_every_error),
        cmocka_unit_test(test_request_error_cap_and_long_keys),
        cmocka_unit_test(test_request_nul_in_key),
        cmocka_unit_test(test_request_metadata_size),
        cmocka_unit_test(test_request_not_object),
        cmocka_unit_test(test_request_text_path),
        cmocka_unit_test(test_errors_to_json),
        cmocka_unit_test(test_request_amount_table),
        cmocka_unit_test(test_amount_parse),
        cmocka_unit_test(test_amount_format),
        cmocka_unit_test(test_currency_exponent),
        cmocka_unit_test(test_countries),
        cmocka_unit_test(test_stored_value_check),
        cmocka_unit_test(test_event_roundtrip),
        cmocka_unit_test(test_event_golden),
        cmocka_unit_test(test_text_has_personal),
        cmocka_unit_test(test_event_decode_table),
        cmocka_unit_test(test_event_decode_values),
        cmocka_unit_test(test_partition_key),
        cmocka_unit_test(test_clear_accepts_null),
        cmocka_unit_test(test_time_check),
    };
    return cmocka_run_group_tests_name("pay", tests, NULL, NULL);
}
