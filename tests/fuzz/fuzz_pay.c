/* libFuzzer target for pay's decoders of untrusted bytes.
 *
 * The bytes go to pay_event_decode() (what the scorer does with a raw_payments message) and, when
 * they parse as JSON, to pay_from_request() (what ingest does with a request body). Beyond "does
 * not crash", it checks two properties: whatever either path accepts encodes to an event that
 * decodes back to the same payment, and a failed request always yields a serializable error body.
 *
 * Build: make fuzz; run: build/fuzz/fuzz_pay -max_total_time=60 corpus/ */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_event(data, size);
    fuzz_request(data, size);
    return 0;
}
