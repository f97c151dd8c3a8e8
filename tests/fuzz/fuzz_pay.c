/* libFuzzer target for pay's decoders of untrusted bytes.
 *
 * The bytes go to pay_event_decode() (what the scorer does with a raw_payments message) and, when
 * they parse as JSON, to pay_from_request() (what ingest does with a request body). Beyond "does
 * not crash", it checks two properties: whatever either path accepts encodes to an event that
 * decodes back to the same payment, and a failed request always yields a serializable error body.
 * Ingest's fast paths are checked against jansson's: jsonfast_parse() builds jansson's tree or
 * gives up, and pay_from_request_text() decides as pay_from_request() on that tree or declines.
 *
 * Build: make fuzz; run: build/fuzz/fuzz_pay -max_total_time=60 corpus/ */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonfast.h"
#include "pay.h"

#define NOW_MS 1763719200000LL
#define DEFAULT_ID "6f1c2b1e-8a4d-5c3b-9f5e-1a2b3c4d5e6f" /* no randomness: runs reproduce */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int str_eq(const char *a, const char *b) {
    return strcmp(a, b) == 0;
}

static int json_same(const json_t *a, const json_t *b) {
    return a ? json_equal(a, b) : b == NULL;
}

static int payment_equal(const pay_payment *a, const pay_payment *b) {
    return str_eq(a->payment_id, b->payment_id) && str_eq(a->user_id, b->user_id) &&
           str_eq(a->merchant_id, b->merchant_id) && a->amount_minor == b->amount_minor &&
           str_eq(a->currency, b->currency) && a->currency_exp == b->currency_exp &&
           str_eq(a->payment_method, b->payment_method) &&
           str_eq(a->transaction_type, b->transaction_type) && str_eq(a->card_type, b->card_type) &&
           str_eq(a->card_last_four, b->card_last_four) &&
           str_eq(a->card_fingerprint_digest, b->card_fingerprint_digest) &&
           str_eq(a->ip_digest, b->ip_digest) && str_eq(a->email_digest, b->email_digest) &&
           str_eq(a->device_id_digest, b->device_id_digest) && str_eq(a->country, b->country) &&
           str_eq(a->billing_country, b->billing_country) &&
           str_eq(a->shipping_country, b->shipping_country) &&
           a->event_time_ms == b->event_time_ms && a->ingest_time_ms == b->ingest_time_ms &&
           json_same(a->device_info, b->device_info) && json_same(a->metadata, b->metadata);
}

/* An accepted payment must survive encode -> decode unchanged. */
static void check_roundtrip(const pay_payment *p, const char *path) {
    char err[256];
    size_t len = 0;
    pay_payment back;
    char *buf = pay_event_encode(p, &len);
    if (!buf) {
        fprintf(stderr, "%s: encode failed\n", path);
        abort();
    }
    if (pay_event_decode(buf, len, &back, err, sizeof err) != 0 || !payment_equal(p, &back)) {
        fprintf(stderr, "%s: round trip failed (%s): %s\n", path, err, buf);
        abort();
    }
    pay_payment_clear(&back);
    free(buf);
}

static void fuzz_event(const uint8_t *data, size_t size) {
    pay_payment p;
    char err[256];
    if (pay_event_decode(data, size, &p, err, sizeof err) == 0) check_roundtrip(&p, "event");
    else if (strchr(err, ':') == NULL) abort(); /* errstr always names the field */
    pay_payment_clear(&p);
}

static void fuzz_request(const uint8_t *data, size_t size) {
    /* ingest parses without JSON_ALLOW_NUL; allow it on half the inputs to reach the NUL checks */
    size_t flags = JSON_REJECT_DUPLICATES | (size > 0 && (data[0] & 1) ? JSON_ALLOW_NUL : 0);
    json_t *body = json_loadb((const char *)data, size, flags | JSON_DECODE_ANY, NULL);
    pay_payment p;
    pay_pii pii;
    pay_errors errs;
    if (!body) return;
    if (pay_from_request(body, NOW_MS, DEFAULT_ID, &p, &pii, &errs) == 0) {
        check_roundtrip(&p, "request");
    } else {
        json_t *j = pay_errors_to_json(&errs);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (!text || errs.n < 1 || errs.n > PAY_ERRORS_MAX) abort();
        free(text);
        json_decref(j);
    }
    pay_payment_clear(&p);
    json_decref(body);
}

static int errors_equal(const pay_errors *a, const pay_errors *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (!str_eq(a->e[i].field, b->e[i].field) || !str_eq(a->e[i].code, b->e[i].code) ||
            !str_eq(a->e[i].message, b->e[i].message))
            return 0;
    return 1;
}

/* The fast parser builds exactly jansson's tree, or gives up. */
static void fuzz_jsonfast(const uint8_t *data, size_t size) {
    json_t *fast = jsonfast_parse((const char *)data, size);
    if (!fast) return;
    json_t *ref = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    char *a = json_dumps(fast, JSON_COMPACT), *b = ref ? json_dumps(ref, JSON_COMPACT) : NULL;
    if (!a || !b || !str_eq(a, b)) {
        fprintf(stderr, "jsonfast: trees differ: %s vs %s\n", a ? a : "-", b ? b : "(refused)");
        abort();
    }
    free(a);
    free(b);
    json_decref(ref);
    json_decref(fast);
}

/* Numbers too large for jansson: jsonfast_loadb_big() reads what jansson reads unchanged, and
 * reads more only when jansson refused a number as too large. */
static void fuzz_big(const uint8_t *data, size_t size) {
    json_error_t e1, e2;
    jsonfast_big big[4];
    size_t n = 0;
    json_t *ref = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e1);
    json_t *v = jsonfast_loadb_big((const char *)data, size, &e2, big, 4, &n);
    if (ref ? !v || !json_equal(ref, v) || n != 0
            : v && (n == 0 || json_error_code(&e1) != json_error_numeric_overflow)) {
        fprintf(stderr, "jsonfast_loadb_big: differs from jansson (%zu big)\n", n);
        abort();
    }
    json_decref(ref);
    json_decref(v);
}

/* The text path decides as the tree path, or declines. */
static void fuzz_request_text(const uint8_t *data, size_t size) {
    pay_payment a, b;
    pay_pii pa, pb;
    pay_errors ea, eb;
    int rt = pay_from_request_text((const char *)data, size, NOW_MS, DEFAULT_ID, &b, &pb, &eb);
    if (rt == 1) return; /* declined: holds nothing */
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!body) {
        fprintf(stderr, "request text: accepted what jansson refuses\n");
        abort();
    }
    int rj = pay_from_request(body, NOW_MS, DEFAULT_ID, &a, &pa, &ea);
    if (rj != rt || !errors_equal(&ea, &eb) || memcmp(&pa, &pb, sizeof pa) != 0 ||
        !payment_equal(&a, &b) || !str_eq(a.ip_country, b.ip_country)) {
        fprintf(stderr, "request text: differs from the tree path (%d vs %d)\n", rt, rj);
        abort();
    }
    pay_payment_clear(&a);
    pay_payment_clear(&b);
    json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_event(data, size);
    fuzz_request(data, size);
    fuzz_jsonfast(data, size);
    fuzz_big(data, size);
    fuzz_request_text(data, size);
    return 0;
}
