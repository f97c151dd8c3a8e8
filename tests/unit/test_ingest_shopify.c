/* Unit tests for ingest/shopify.c: webhook signatures (good, bad, missing, unknown shop) and the
 * mapping of a realistic orders/create payload (tests/data/shopify-order-create.json) to a payment
 * that passes the v1 validation. Run from the repository root (tests/run.sh does). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fsutil.h"
#include "pay.h"
#include "shopify.h"

#define ORDER_FILE "tests/data/shopify-order-create.json"
#define SHOP "example-store.myshopify.com"
#define SECRET "shpss_test_secret_0123456789"

static char *order_text(size_t *len) {
    FILE *f = fopen(ORDER_FILE, "rb");
    if (!f) fail_msg("cannot open %s (run from the repository root)", ORDER_FILE);
    char *buf = calloc(1, 1 << 16);
    *len = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    return buf;
}

static void test_secrets_parse(void **state) {
    (void)state;
    char err[256];
    shopify *s = shopify_parse("# shops\n" SHOP " " SECRET "\n\n  Other-Shop.myshopify.com\tabc \n",
                               "third.myshopify.com=xyz", err, sizeof err);
    assert_non_null(s);
    assert_int_equal(shopify_count(s), 3);
    shopify_destroy(s);
    assert_null(shopify_parse(SHOP "\n", NULL, err, sizeof err)); /* no secret */
    assert_non_null(strstr(err, "line 1"));
    assert_null(shopify_parse(SHOP " a b\n", NULL, err, sizeof err)); /* three fields */
    assert_null(shopify_parse(SHOP " a\n" SHOP " b\n", NULL, err, sizeof err));
    assert_non_null(strstr(err, "twice"));
    assert_null(shopify_parse(NULL, "no-equals-sign", err, sizeof err));
    s = shopify_parse(NULL, "", err, sizeof err); /* none at all: every webhook is refused */
    assert_non_null(s);
    assert_int_equal(shopify_verify(s, SHOP, "x", "", 0), -1);
    shopify_destroy(s);
}

static void test_signature(void **state) {
    (void)state;
    char err[256], sig[45], bad[45];
    size_t len;
    char *body = order_text(&len);
    shopify *s = shopify_parse(SHOP " " SECRET "\n", NULL, err, sizeof err);
    shopify_sign(SECRET, body, len, sig);
    assert_int_equal(strlen(sig), 44);
    /* the same as `openssl dgst -sha256 -hmac SECRET -binary | base64` */
    assert_int_equal(shopify_verify(s, SHOP, sig, body, len), 0);
    assert_int_equal(shopify_verify(s, "EXAMPLE-STORE.myshopify.com", sig, body, len), 0);
    memcpy(bad, sig, sizeof bad);
    bad[10] = bad[10] == 'A' ? 'B' : 'A';
    assert_int_equal(shopify_verify(s, SHOP, bad, body, len), -1);
    assert_int_equal(shopify_verify(s, SHOP, NULL, body, len), -1);          /* missing */
    assert_int_equal(shopify_verify(s, NULL, sig, body, len), -1);           /* no shop */
    assert_int_equal(shopify_verify(s, "evil.myshopify.com", sig, body, len), -1);
    assert_int_equal(shopify_verify(s, SHOP, "c2hvcnQ=", body, len), -1);     /* wrong length */
    body[100] ^= 1; /* one changed byte of the body */
    assert_int_equal(shopify_verify(s, SHOP, sig, body, len), -1);
    shopify_destroy(s);
    free(body);
}

static void test_order_mapping(void **state) {
    (void)state;
    size_t len;
    char err[256];
    char *text = order_text(&len);
    json_t *order = json_loadb(text, len, 0, NULL);
    assert_non_null(order);
    json_t *req = shopify_order_to_request(order, SHOP, err, sizeof err);
    assert_non_null(req);
    pay_payment p;
    pay_pii raw;
    pay_errors errs;
    int rc = pay_from_request(req, 1795300000000, NULL, &p, &raw, &errs);
    if (rc != 0) fail_msg("mapped order invalid: %s %s", errs.e[0].field, errs.e[0].message);
    char want_id[37], amount[32];
    fs_uuid_v5(SHOPIFY_NS, SHOP ":5704781545782", strlen(SHOP ":5704781545782"), want_id);
    assert_string_equal(p.payment_id, want_id);
    assert_string_equal(p.user_id, "shopify:7390192844854");
    assert_string_equal(p.merchant_id, SHOP);
    pay_amount_format(p.amount_minor, p.currency_exp, amount, sizeof amount);
    assert_string_equal(amount, "164.80");
    assert_string_equal(p.currency, "EUR");
    assert_string_equal(p.payment_method, "shopify_payments");
    assert_string_equal(p.card_type, "visa");
    assert_string_equal(p.card_last_four, "4242");
    assert_string_equal(p.country, "DE");
    assert_string_equal(p.billing_country, "DE");
    assert_string_equal(p.shipping_country, "DE");
    assert_string_equal(raw.email, "lena.schmidt@example.de");
    assert_string_equal(raw.ip_address, "203.0.113.77");
    assert_string_equal(raw.device_id, "9f0d5c2e7b1a4c3d8e6f");
    int64_t created;
    fs_time_parse_rfc3339("2026-11-21T13:32:09Z", &created);
    assert_int_equal(p.event_time_ms, created); /* +01:00 honoured */
    assert_string_equal(json_string_value(json_object_get(p.metadata, "order_id")), "5704781545782");
    assert_int_equal(json_integer_value(json_object_get(p.metadata, "order_number")), 1042);
    pay_payment_clear(&p);
    json_decref(req);

    /* a guest checkout without customer, card or client details still maps */
    json_object_del(order, "customer");
    json_object_del(order, "payment_details");
    json_object_del(order, "client_details");
    json_object_del(order, "billing_address");
    req = shopify_order_to_request(order, SHOP, err, sizeof err);
    assert_int_equal(pay_from_request(req, 1795300000000, NULL, &p, &raw, &errs), 0);
    assert_string_equal(p.user_id, "shopify-guest:5704781545782");
    assert_string_equal(p.country, "DE"); /* from the shipping address */
    assert_string_equal(p.billing_country, "");
    assert_string_equal(raw.ip_address, "203.0.113.77");
    pay_payment_clear(&p);
    json_decref(req);

    /* Shopify's two decimals whatever the currency: "1000.00" JPY is 1000 yen, not too precise */
    static const struct {
        const char *total, *currency;
        int64_t minor;
        bool free;
    } prices[] = {
        {"1000.00", "JPY", 1000, false}, {"12.50", "EUR", 1250, false}, {"7.000", "KWD", 7000, false},
        {"100", "EUR", 10000, false},     {"0.00", "EUR", 0, true},     {"0", "JPY", 0, true},
    };
    for (size_t i = 0; i < sizeof prices / sizeof prices[0]; i++) {
        json_object_set_new(order, "total_price", json_string(prices[i].total));
        json_object_set_new(order, "currency", json_string(prices[i].currency));
        req = shopify_order_to_request(order, SHOP, err, sizeof err);
        assert_int_equal(shopify_request_is_free(req), prices[i].free);
        if (!prices[i].free) {
            if (pay_from_request(req, 1795300000000, NULL, &p, &raw, &errs) != 0)
                fail_msg("%s %s: %s %s", prices[i].total, prices[i].currency, errs.e[0].field,
                         errs.e[0].message);
            assert_int_equal(p.amount_minor, prices[i].minor);
            pay_payment_clear(&p);
        }
        json_decref(req);
    }
    json_object_set_new(order, "currency", json_string("EUR"));

    /* without an id there is no payment */
    json_object_del(order, "id");
    assert_null(shopify_order_to_request(order, SHOP, err, sizeof err));
    /* a bad currency is left to the payment validation, which names it */
    json_object_set_new(order, "id", json_integer(1));
    json_object_set_new(order, "currency", json_string("XXZ"));
    req = shopify_order_to_request(order, SHOP, err, sizeof err);
    assert_int_equal(pay_from_request(req, 1795300000000, NULL, &p, &raw, &errs), -1);
    assert_string_equal(errs.e[0].field, "currency");
    pay_payment_clear(&p);
    json_decref(req);
    json_decref(order);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secrets_parse),
        cmocka_unit_test(test_signature),
        cmocka_unit_test(test_order_mapping),
    };
    return cmocka_run_group_tests_name("ingest_shopify", tests, NULL, NULL);
}
