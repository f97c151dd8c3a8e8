/* Unit tests for ingest/batch.c (JSON array and NDJSON splitting, limits) and ingest/recent.c
 * (the ids that read as "pending"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "batch.h"
#include "fsutil.h"
#include "recent.h"

static void test_format_of(void **state) {
    (void)state;
    batch_format f;
    assert_int_equal(batch_format_of("application/json", &f), 0);
    assert_int_equal(f, BATCH_JSON_ARRAY);
    assert_int_equal(batch_format_of("Application/JSON; charset=utf-8", &f), 0);
    assert_int_equal(batch_format_of("application/x-ndjson", &f), 0);
    assert_int_equal(f, BATCH_NDJSON);
    assert_int_equal(batch_format_of("application/jsonl", &f), 0);
    assert_int_equal(batch_format_of("application/json-seq", &f), -1);
    assert_int_equal(batch_format_of("text/plain", &f), -1);
    assert_int_equal(batch_format_of(NULL, &f), -1);
}

static void test_array(void **state) {
    (void)state;
    batch b;
    char err[256];
    const char *body = "[{\"a\":1}, 2, {\"b\":[1,2]}]";
    assert_int_equal(batch_split(body, strlen(body), BATCH_JSON_ARRAY, 10, &b, err, sizeof err), BATCH_OK);
    assert_int_equal(b.n, 3);
    assert_true(json_is_object(b.items[0].value));
    assert_true(json_is_integer(b.items[1].value)); /* not an object: the validation says so */
    assert_int_equal(json_array_size(json_object_get(b.items[2].value, "b")), 2);
    batch_free(&b);

    static const struct {
        const char *body;
        size_t max;
        batch_error want;
    } bad[] = {
        {"[{\"a\":1},", 10, BATCH_MALFORMED},
        {"{\"a\":1}", 10, BATCH_NOT_ARRAY},
        {"[]", 10, BATCH_EMPTY},
        {"[1,2,3]", 2, BATCH_TOO_MANY},
        {"[{\"a\":1,\"a\":2}]", 10, BATCH_MALFORMED}, /* duplicate keys, as everywhere */
        {"", 10, BATCH_MALFORMED},
        {"null", 10, BATCH_NOT_ARRAY}, /* JSON (RFC 8259), not an array: was BATCH_MALFORMED */
        {" \"x\" ", 10, BATCH_NOT_ARRAY},
        {"1 2", 10, BATCH_MALFORMED},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        batch_error e = batch_split(bad[i].body, strlen(bad[i].body), BATCH_JSON_ARRAY, bad[i].max, &b,
                                    err, sizeof err);
        if (e != bad[i].want) fail_msg("case %zu: got %d want %d", i, e, bad[i].want);
        assert_int_equal(b.n, 0);
        assert_true(err[0] != '\0');
        batch_free(&b);
    }
    assert_string_equal(batch_error_code(BATCH_TOO_MANY), "too_many_items");
}

static void test_ndjson(void **state) {
    (void)state;
    batch b;
    char err[256];
    const char *body = "{\"a\":1}\n\n  \r\n{broken\n[1]\r\n{\"c\":3}"; /* no final newline */
    const char *scalars = "1\r\nnull\n\"x\"\n1 2";
    assert_int_equal(batch_split(body, strlen(body), BATCH_NDJSON, 4, &b, err, sizeof err), BATCH_OK);
    assert_int_equal(b.n, 4); /* blank lines are not items */
    assert_non_null(b.items[0].value);
    assert_null(b.items[1].value); /* only this item fails */
    assert_non_null(strstr(b.items[1].error, "line 4")); /* the body's line: blank ones count */
    assert_null(strstr(b.items[1].error, "broken"));      /* never the input itself */
    assert_true(json_is_array(b.items[2].value));
    assert_int_equal(json_integer_value(json_object_get(b.items[3].value, "c")), 3);
    batch_free(&b);
    assert_int_equal(batch_split(body, strlen(body), BATCH_NDJSON, 3, &b, err, sizeof err), BATCH_TOO_MANY);
    batch_free(&b);
    assert_int_equal(batch_split("\n \n", 3, BATCH_NDJSON, 3, &b, err, sizeof err), BATCH_EMPTY);
    batch_free(&b);
    /* A line that is JSON but no object is an item the validation refuses (invalid_type), as in an
     * array; only a line that is not JSON is malformed (the scalars were malformed_json). */
    assert_int_equal(batch_split(scalars, strlen(scalars), BATCH_NDJSON, 4, &b, err, sizeof err), BATCH_OK);
    assert_int_equal(b.n, 4);
    assert_true(json_is_integer(b.items[0].value));
    assert_true(json_is_null(b.items[1].value));
    assert_string_equal(json_string_value(b.items[2].value), "x");
    assert_null(b.items[3].value);
    assert_non_null(strstr(b.items[3].error, "line 4"));
    batch_free(&b);
}

/* Fingerprints: the same content whatever the whitespace outside strings, the lazy (text) and the
 * tree paths alike; any change inside a string or a member is another fingerprint. */
static void test_fingerprint(void **state) {
    (void)state;
    batch b;
    char err[256];
    unsigned char f[6][32];
    const char *a = "[{\"u\":\"x y\",\"n\":1}, {\"u\":\"x  y\",\"n\":1},\n {\"n\":1,\"u\":\"x y\"}]";
    assert_int_equal(batch_split_lazy(a, strlen(a), BATCH_JSON_ARRAY, 10, &b, err, sizeof err), BATCH_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(batch_item_fingerprint(&b, (size_t)i, f[i]), 0);
    batch_free(&b);
    const char *nd = "  { \"u\" : \"x y\" ,\t\"n\":1 }\r\n{\"u\":\"x \\\" y\",\"n\":1}\n{nope\n";
    assert_int_equal(batch_split_lazy(nd, strlen(nd), BATCH_NDJSON, 10, &b, err, sizeof err), BATCH_OK);
    assert_int_equal(batch_item_fingerprint(&b, 0, f[3]), 0);
    assert_int_equal(batch_item_fingerprint(&b, 1, f[4]), 0);
    batch_free(&b);
    const char *tree = "[{\"u\":\"x y\",\"n\":1}]"; /* batch_split: parsed whole, no text */
    assert_int_equal(batch_split(tree, strlen(tree), BATCH_JSON_ARRAY, 10, &b, err, sizeof err), BATCH_OK);
    assert_null(b.items[0].text);
    assert_int_equal(batch_item_fingerprint(&b, 0, f[5]), 0);
    batch_free(&b);
    assert_memory_equal(f[0], f[3], 32); /* re-indented */
    assert_memory_equal(f[0], f[5], 32); /* text and tree paths */
    assert_memory_not_equal(f[0], f[1], 32); /* a space inside a string counts */
    assert_memory_not_equal(f[0], f[2], 32); /* member order counts */
    assert_memory_not_equal(f[0], f[4], 32); /* an escaped quote is inside the string */

    /* An item spelled with escapes has one fingerprint whichever path split its batch: a real
     * elsewhere in the array sends the whole array down the tree path, whose serialization used to
     * rewrite "\/" as "/" and "\u00e9" as the character (a retry of only this item under the same
     * Idempotency-Key then got another payment_id: a duplicate payment). */
    static const char *const items[] = {"{\"u\":\"x\\/y\"}", "{\"u\":\"\\u00e9\",\"v\":[1, {\"w\":\"]\"}]}",
                                        "{ \"u\" : \"a,b\\\"}\" }"};
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        char alone[128], mixed[160];
        unsigned char fa[32], fm[32];
        snprintf(alone, sizeof alone, "[%s]", items[i]);
        snprintf(mixed, sizeof mixed, "[ {\"n\":1.5} ,\n %s ]", items[i]);
        assert_int_equal(batch_split_lazy(alone, strlen(alone), BATCH_JSON_ARRAY, 10, &b, err, sizeof err), BATCH_OK);
        assert_int_equal(batch_item_fingerprint(&b, 0, fa), 0);
        batch_free(&b);
        assert_int_equal(batch_split_lazy(mixed, strlen(mixed), BATCH_JSON_ARRAY, 10, &b, err, sizeof err), BATCH_OK);
        assert_null(b.items[1].text); /* the tree path */
        assert_int_equal(batch_item_fingerprint(&b, 1, fm), 0);
        batch_free(&b);
        if (memcmp(fa, fm, 32) != 0) fail_msg("item %s: another fingerprint on the tree path", items[i]);
    }
}

/* The fingerprints and repeat counts behind the batch ids under an Idempotency-Key, as the code
 * before batch_fingerprints() computed them (a new digest context per item, each item compared with
 * every earlier one): clients' retries depend on the ids, so these values never change. */
static void test_fingerprints_pinned(void **state) {
    (void)state;
    static const char A[] = "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862",
                      B[] = "c12d6459774fd2e83db8fa6c85e80993b21cdec5d6c1dabb8dfb7a0d2bffd2f5",
                      R[] = "3b1cb40b22933d83e9242f8ac724f114d812ddd49909917b365375c24b69a455",
                      NOPE[] = "26b8317cfd9d065b7325a6ff3e6260dc62890ecf626448028a14a23fd6c1e04c",
                      ONE[] = "080a9ed428559ef602668b4c00f114f1a11c3f6b02a435f0bdc154578e4d7f22";
    static const struct {
        const char *body;
        batch_format fmt;
        bool lazy;
        size_t n;
        const char *sha[5];
        int repeat[5];
    } cases[] = {
        {"[{\"a\":1}, {\"b\":\"x y\"},{ \"a\" : 1 },\n{\"a\":1}]", BATCH_JSON_ARRAY, true, 4,
         {A, B, A, A}, {0, 0, 1, 2}},
        /* a real: the array is parsed whole (no text), items hash their serialization */
        {"[{\"a\":1}, {\"b\":\"x y\"},{ \"a\" : 1 },\n{\"a\":1.5}, {\"a\":1}]", BATCH_JSON_ARRAY, true, 5,
         {A, B, A, R, A}, {0, 0, 1, 0, 2}},
        {"{\"a\":1}\n{nope\n {\"a\" :1}\n[1]\n{\"a\":1}", BATCH_NDJSON, true, 5,
         {A, NOPE, A, ONE, A}, {0, 0, 1, 0, 2}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        batch b;
        char err[256], hex[65];
        batch_print pr[5];
        unsigned char one[32];
        const char *body = cases[c].body;
        assert_int_equal(batch_split_lazy(body, strlen(body), cases[c].fmt, 10, &b, err, sizeof err), BATCH_OK);
        assert_int_equal(b.n, cases[c].n);
        assert_int_equal(batch_fingerprints(&b, pr), 0);
        for (size_t i = 0; i < b.n; i++) {
            fs_hex(pr[i].sha, 32, hex);
            if (strcmp(hex, cases[c].sha[i]) || pr[i].repeat != cases[c].repeat[i])
                fail_msg("case %zu item %zu: %s repeat %d", c, i, hex, pr[i].repeat);
            assert_int_equal(batch_item_fingerprint(&b, i, one), 0);
            assert_memory_equal(one, pr[i].sha, 32);
        }
        batch_free(&b);
    }
}

/* A big batch with many repeats: the same counts as comparing each item with all earlier ones. */
static void test_fingerprints_repeats(void **state) {
    (void)state;
    enum { N = 1000 };
    batch b;
    char err[256];
    size_t cap = N * 16 + 2, n = 0;
    char *body = malloc(cap);
    batch_print *pr = malloc(N * sizeof *pr);
    body[n++] = '[';
    for (int i = 0; i < N; i++) n += (size_t)snprintf(body + n, cap - n, "%s{\"i\":%d}", i ? "," : "", (i * 7) % 13);
    body[n++] = ']';
    assert_int_equal(batch_split_lazy(body, n, BATCH_JSON_ARRAY, N, &b, err, sizeof err), BATCH_OK);
    assert_int_equal(batch_fingerprints(&b, pr), 0);
    for (size_t i = 0; i < N; i++) {
        int want = 0;
        for (size_t j = 0; j < i; j++) want += memcmp(pr[j].sha, pr[i].sha, 32) == 0;
        assert_int_equal(pr[i].repeat, want);
    }
    batch_free(&b);
    free(pr);
    free(body);
}

/* Numbers too large for jansson: the item holding one is read (the place noted, for the
 * validation to name), in an array parsed whole and on an NDJSON line alike. */
static void test_big_numbers(void **state) {
    (void)state;
    batch b;
    char err[256];
    const char *arr = "[{\"a\":1},{\"x\":\"y\",\"amount\":1e400},{\"m\":{\"n\":-123456789012345678901234567890}}]";
    assert_int_equal(batch_split_lazy(arr, strlen(arr), BATCH_JSON_ARRAY, 10, &b, err, sizeof err), BATCH_OK);
    assert_int_equal(b.n, 3);
    assert_int_equal(b.items[0].nbig, 0);
    assert_int_equal(b.items[1].nbig, 1);
    assert_string_equal(b.items[1].big[0].path, "amount");
    assert_string_equal(b.items[1].big[0].member, "amount");
    assert_int_equal(b.items[2].nbig, 1);
    assert_string_equal(b.items[2].big[0].path, "m.n");
    assert_true(b.items[2].big[0].negative);
    batch_free(&b);
    const char *nd = "{\"a\":1}\n{\"amount\":123456789012345678901234567890}\n{\"amount\":1e400,}";
    assert_int_equal(batch_split(nd, strlen(nd), BATCH_NDJSON, 10, &b, err, sizeof err), BATCH_OK);
    assert_non_null(b.items[1].value);
    assert_int_equal(b.items[1].nbig, 1);
    assert_string_equal(b.items[1].big[0].path, "amount");
    assert_null(b.items[2].value); /* malformed for another reason: still malformed */
    assert_int_equal(b.items[2].nbig, 0);
    assert_non_null(strstr(b.items[2].error, "line 3"));
    batch_free(&b);
}

/* 1000 items: the default maximum passes, one more does not. */
static void test_limit_exact(void **state) {
    (void)state;
    batch b;
    char err[256];
    size_t cap = 1001 * 12 + 2, n = 0;
    char *body = malloc(cap);
    body[n++] = '[';
    for (int i = 0; i < 1001; i++) n += (size_t)snprintf(body + n, cap - n, "%s{\"i\":%d}", i ? "," : "", i);
    body[n++] = ']';
    assert_int_equal(batch_split(body, n, BATCH_JSON_ARRAY, 1001, &b, err, sizeof err), BATCH_OK);
    assert_int_equal(b.n, 1001);
    assert_int_equal(json_integer_value(json_object_get(b.items[1000].value, "i")), 1000); /* order kept */
    batch_free(&b);
    assert_int_equal(batch_split(body, n, BATCH_JSON_ARRAY, 1000, &b, err, sizeof err), BATCH_TOO_MANY);
    batch_free(&b);
    free(body);
}

static void test_recent(void **state) {
    (void)state;
    char id[37];
    recent *r = recent_new(8); /* two generations of 4 */
    recent_add(r, "0d5f1e3a-8f4b-4c1d-9a2e-7b6c5d4e3f21", "checkout");
    assert_true(recent_has(r, "0D5F1E3A-8F4B-4C1D-9A2E-7B6C5D4E3F21", NULL));
    assert_false(recent_has(r, "1d5f1e3a-8f4b-4c1d-9a2e-7b6c5d4e3f21", NULL));
    assert_false(recent_has(r, "not-a-uuid", NULL));
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", i + 1);
        recent_add(r, id, "checkout");
    }
    /* 9 added into 2 x 4: the oldest generation (the first id among them) is gone */
    assert_false(recent_has(r, "0d5f1e3a-8f4b-4c1d-9a2e-7b6c5d4e3f21", NULL));
    assert_true(recent_has(r, "00000000-0000-4000-8000-000000000008", NULL));
    recent_destroy(r);
}

/* An id is pending for whoever posted it (or anyone, owner NULL), never for another source; the
 * same id accepted again from someone else keeps its first owner (as payments.source does). */
static void test_recent_owner(void **state) {
    (void)state;
    static const char A[] = "0d5f1e3a-8f4b-4c1d-9a2e-7b6c5d4e3f21", B[] = "5b1c0f2e-9a3d-4e8f-8b7a-6c5d4e3f2a10";
    static const struct {
        const char *id, *owner;
        bool has;
    } rows[] = {
        {A, "checkout", true},       {A, NULL, true},          {A, "checkout2", false},
        {A, "Checkout", false},      {A, "", false},           {A, "shopify:a.myshopify.com", false},
        {B, "shopify:a.myshopify.com", true}, {B, "checkout", false}, {B, NULL, true},
    };
    recent *r = recent_new(16);
    assert_non_null(r);
    recent_add(r, A, "checkout");
    recent_add(r, B, "shopify:a.myshopify.com");
    recent_add(r, A, "other"); /* a second acceptance: the first owner stays */
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (recent_has(r, rows[i].id, rows[i].owner) != rows[i].has)
            fail_msg("row %zu: %s for %s: want %d", i, rows[i].id, rows[i].owner ? rows[i].owner : "(anyone)",
                     rows[i].has);
    assert_false(recent_has(r, A, "other"));
    /* owners alternating and repeating (recent_add remembers the last one's tag), and one too
     * long to remember */
    static const char C[] = "6c2d1a3f-0b4e-4f9a-9c8b-7d6e5f4a3b21", D[] = "7d3e2b4a-1c5f-4a0b-8d9c-8e7f6a5b4c32";
    char long_owner[300];
    memset(long_owner, 'k', sizeof long_owner - 1);
    long_owner[sizeof long_owner - 1] = '\0';
    recent_add(r, C, "checkout");
    recent_add(r, D, long_owner);
    assert_true(recent_has(r, C, "checkout"));
    assert_false(recent_has(r, C, "shopify:a.myshopify.com"));
    assert_true(recent_has(r, D, long_owner));
    assert_false(recent_has(r, D, "checkout"));
    recent_destroy(r);
    /* the empty owner (auth off) remembered like any other, also as the very first one */
    static const char E[] = "8e4f3c5b-2d6a-4b1c-9e0d-9f8a7b6c5d43";
    assert_non_null(r = recent_new(16));
    recent_add(r, E, "");
    recent_add(r, C, "");
    recent_add(r, D, "checkout");
    assert_true(recent_has(r, E, ""));
    assert_true(recent_has(r, C, ""));
    assert_false(recent_has(r, C, "checkout"));
    assert_true(recent_has(r, D, "checkout"));
    assert_false(recent_has(r, D, ""));
    recent_destroy(r);
}

/* The error of a batch's 503: one code when all failed items agree, else the most telling. */
static void test_failure_code(void **state) {
    (void)state;
    static const struct {
        const char *a, *b, *want;
    } rows[] = {
        {NULL, "overloaded", "overloaded"},
        {"internal_error", NULL, "internal_error"},
        {"overloaded", "overloaded", "overloaded"},
        {"internal_error", "overloaded", "overloaded"},
        {"overloaded", "internal_error", "overloaded"},
        {"overloaded", "broker_unavailable", "broker_unavailable"},
        {"broker_unavailable", "overloaded", "broker_unavailable"},
        {"internal_error", "broker_unavailable", "broker_unavailable"},
        {"broker_unavailable", "shutting_down", "shutting_down"},
        {"shutting_down", "overloaded", "shutting_down"},
        {"internal_error", "shutting_down", "shutting_down"},
        {"some_new_code", "internal_error", "internal_error"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *got = batch_failure_code(rows[i].a, rows[i].b);
        if (!got || strcmp(got, rows[i].want) != 0)
            fail_msg("row %zu: %s, %s: got %s, want %s", i, rows[i].a ? rows[i].a : "NULL",
                     rows[i].b ? rows[i].b : "NULL", got ? got : "NULL", rows[i].want);
    }
    /* a batch's items folded in order: the order of the items does not matter */
    const char *codes[] = {"internal_error", "overloaded", "internal_error", "broker_unavailable", "overloaded"};
    const char *code = NULL;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) code = batch_failure_code(code, codes[i]);
    assert_string_equal("broker_unavailable", code);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_of),
        cmocka_unit_test(test_fingerprints_pinned),
        cmocka_unit_test(test_fingerprints_repeats),
        cmocka_unit_test(test_big_numbers),
        cmocka_unit_test(test_array),
        cmocka_unit_test(test_ndjson),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_limit_exact),
        cmocka_unit_test(test_recent),
        cmocka_unit_test(test_recent_owner),
        cmocka_unit_test(test_failure_code),
    };
    return cmocka_run_group_tests_name("ingest_batch", tests, NULL, NULL);
}
