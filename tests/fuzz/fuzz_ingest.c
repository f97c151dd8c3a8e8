/* libFuzzer target for the other decoders of untrusted bytes: a batch body (ingest/batch.c), a
 * Shopify order (ingest/shopify.c, after its signature: a shop's own bug or a leaked secret) and a
 * payment_outcomes message (scorer/outcome.c). Beyond "does not crash":
 *   - batch_split_lazy() and batch_split() give the same verdict, the same number of items, and
 *     the same value for every item (the lazy path leaves items as text, parsed on first use), in
 *     both formats; the fingerprints of the two splits are equal (Idempotency-Key ids must not
 *     depend on the path);
 *   - a mapped Shopify order is a request pay_from_request() decides on without crashing, and
 *     whose error list (if any) serializes;
 *   - outcome_decode() either gives a row with payment_id, outcome and known_at_ms (and an
 *     outcome_id, when there is one, as a lower-case UUID: store_insert_outcomes compares it with
 *     the ids PostgreSQL prints), or a dead-letter code.
 * Build: make fuzz; run: build/fuzz/fuzz_ingest -max_total_time=60 corpus/ */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "fsutil.h"
#include "jsonfast.h"
#include "outcome.h"
#include "pay.h"
#include "shopify.h"

#define NOW_MS 1763719200000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_batch(const char *text, size_t len, batch_format fmt) {
    batch full = {0}, lazy = {0};
    char e1[256], e2[256];
    batch_error r1 = batch_split(text, len, fmt, 50, &full, e1, sizeof e1);
    batch_error r2 = batch_split_lazy(text, len, fmt, 50, &lazy, e2, sizeof e2);
    if (r1 != r2 || full.n != lazy.n) {
        fprintf(stderr, "batch verdicts differ: %d/%zu items vs %d/%zu\n", r1, full.n, r2, lazy.n);
        abort();
    }
    batch_print *p1 = calloc(full.n + 1, sizeof *p1), *p2 = calloc(lazy.n + 1, sizeof *p2);
    if (!p1 || !p2) abort();
    for (size_t i = 0; i < full.n; i++) {
        json_t *a = batch_item_value(&full, i), *b = batch_item_value(&lazy, i);
        if ((a == NULL) != (b == NULL) || (a && !json_equal(a, b))) {
            fprintf(stderr, "batch item %zu differs between the paths\n", i);
            abort();
        }
    }
    if (batch_fingerprints(&full, p1) == 0 && batch_fingerprints(&lazy, p2) == 0 &&
        memcmp(p1, p2, full.n * sizeof *p1) != 0) {
        fprintf(stderr, "batch fingerprints differ between the paths\n");
        abort();
    }
    free(p1);
    free(p2);
    batch_free(&full);
    batch_free(&lazy);
}

static void check_shopify(const char *text, size_t len) {
    json_error_t je;
    json_t *order = json_loadb(text, len, 0, &je);
    if (!order) return;
    char err[256];
    json_t *req = shopify_order_to_request(order, "example-store.myshopify.com", err, sizeof err);
    if (req) {
        pay_payment p;
        pay_pii pii;
        pay_errors errs;
        (void)shopify_request_is_free(req);
        if (pay_from_request(req, NOW_MS, "6f1c2b1e-8a4d-5c3b-9f5e-1a2b3c4d5e6f", &p, &pii, &errs) != 0) {
            json_t *body = pay_errors_to_json(&errs);
            char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
            if (!s || errs.n < 1) abort();
            free(s);
            json_decref(body);
        }
        pay_payment_clear(&p);
        json_decref(req);
    }
    json_decref(order);
}

static void check_outcome(const uint8_t *data, size_t size) {
    const char *code = NULL;
    char err[256];
    json_t *row = outcome_decode(data, size, &code, err, sizeof err);
    if (row) {
        const char *oid = json_string_value(json_object_get(row, "outcome_id"));
        if (!json_is_string(json_object_get(row, "payment_id")) ||
            !json_is_string(json_object_get(row, "outcome")) ||
            !json_is_integer(json_object_get(row, "known_at_ms")) ||
            (oid && (!fs_uuid_valid(oid) || strpbrk(oid, "ABCDEF"))))
            abort();
        json_decref(row);
    } else if (!code) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    check_batch(text, size, BATCH_JSON_ARRAY);
    check_batch(text, size, BATCH_NDJSON);
    check_shopify(text, size);
    check_outcome(data, size);
    free(text);
    return 0;
}
