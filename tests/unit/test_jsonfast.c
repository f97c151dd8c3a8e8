/* Unit tests for common/jsonfast.c: the fast parser must build exactly jansson's tree for what it
 * accepts (else give up), and the writer must print exactly json_dumps(JSON_COMPACT)'s bytes.
 * Differential: every input goes through both, including thousands of random mutations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jsonfast.h"

/* Accepted by the fast parser itself (no fallback), with jansson's exact tree. */
static const char *const FAST[] = {
    "{}",
    "[]",
    " \t\r\n{ } \n",
    "{\"a\":1}",
    "{\"user_id\":\"user-1\",\"amount\":\"12.50\",\"device_info\":{\"os\":\"ios\",\"x\":null}}",
    "[1,-2,0,-0,123456789012345678,-123456789012345678,true,false,null,\"\",[],{}]",
    "{\"s\":\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"}",
    "{\"u\":\"\\u0041\\u00e9\\u20AC\\u001f\\u007F\\uFFFF\"}",
    "{\"\\u00e9t\\u00e9\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\",\"k\\n\":1}",
    "{\"z\":\"\x7f\"}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", /* 30 deep */
    "{\"a\" : [ 1 , 2 ] , \"b\" : { } }",
};

/* Left to jansson: reals, huge integers, NUL and surrogate escapes, too deep, or not JSON. */
static const char *const FALLBACK[] = {
    "",
    "   ",
    "1",
    "\"s\"",
    "null",
    "{\"a\":1.5}",
    "{\"a\":1e3}",
    "{\"a\":-1E-3}",
    "{\"a\":1234567890123456789}",
    "{\"a\":99999999999999999999}",
    "{\"a\":01}",
    "{\"a\":-}",
    "{\"a\":+1}",
    "{\"a\":1,\"a\":2}",
    "{\"a\":1,}",
    "[1,]",
    "[1 2]",
    "{\"a\" 1}",
    "{a:1}",
    "{\"a\":1}x",
    "{\"a\":1}{}",
    "{\"a\":tru}",
    "{\"a\":truex}",
    "{\"a\":nul}",
    "{\"a\":\"\\u0000\"}",
    "{\"a\":\"\\ud83d\\ude00\"}",
    "{\"a\":\"\\ud83d\"}",
    "{\"a\":\"\\ude00\"}",
    "{\"a\":\"\\x\"}",
    "{\"a\":\"\\u12\"}",
    "{\"a\":\"\\u12g4\"}",
    "{\"a\":\"tab\there\"}",
    "{\"a\":\"nl\nhere\"}",
    "{\"a\":\"\xc3\"}",
    "{\"a\":\"\xc0\xaf\"}",
    "{\"a\":\"\xed\xa0\x80\"}",
    "{\"a\":\"\xf4\x90\x80\x80\"}",
    "{\"a\":\"\xff\"}",
    "\xef\xbb\xbf{}",
    "{\"a\":\"unterminated}",
    "{\"a\":[1,2}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", /* 34 deep */
};

static char *dump(const json_t *v) { return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY); }

static void check_dump(const json_t *v);

/* fast is either NULL (fallback) or exactly jansson's tree for the same bytes. */
static void check_same(const char *buf, size_t len, json_t *fast) {
    json_error_t err;
    json_t *ref = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
    if (fast) {
        if (!ref) fail_msg("fast accepted what jansson refuses (%s): %.*s", err.text, (int)len, buf);
        char *a = dump(fast), *b = dump(ref);
        if (strcmp(a, b) != 0) fail_msg("trees differ: %s vs %s", a, b);
        free(a);
        free(b);
    }
    json_decref(ref);
}

static void test_fast_subset(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof FAST / sizeof FAST[0]; i++) {
        json_t *v = jsonfast_parse(FAST[i], strlen(FAST[i]));
        if (!v) fail_msg("not parsed: %s", FAST[i]);
        check_same(FAST[i], strlen(FAST[i]), v);
        json_decref(v);
    }
}

static void test_fallback(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof FALLBACK / sizeof FALLBACK[0]; i++) {
        json_t *v = jsonfast_parse(FALLBACK[i], strlen(FALLBACK[i]));
        if (v) fail_msg("should be left to jansson: %s", FALLBACK[i]);
        /* and jsonfast_loadb() answers as jansson does, error message included */
        json_error_t e1, e2;
        json_t *a = jsonfast_loadb(FALLBACK[i], strlen(FALLBACK[i]), &e1);
        json_t *b = json_loadb(FALLBACK[i], strlen(FALLBACK[i]), JSON_REJECT_DUPLICATES, &e2);
        assert_int_equal(a != NULL, b != NULL);
        if (!a) assert_string_equal(e1.text, e2.text);
        json_decref(a);
        json_decref(b);
    }
    /* a NUL byte inside the buffer (jansson refuses it) */
    static const char nul[] = "{\"a\":\"x\0y\"}";
    assert_null(jsonfast_parse(nul, sizeof nul - 1));
    assert_null(jsonfast_parse("{}\0", 3));
}

/* jsonfast_load_scalar(): a text jsonfast_loadb() refuses that is JSON all the same (a scalar),
 * and nothing else: not objects or arrays, not malformed text, not two values. */
static void test_load_scalar(void **state) {
    (void)state;
    static const char *const SCALARS[] = {"null", " true ", "0", "-1.5e3", "\"x\\u00e9\"", "\r\n\"\"\n"};
    static const char *const NOT[] = {"", " ", "{}", "[1]", "{\"a\":1}", "nul", "1 2", "\"x", "'x'",
                                      "{\"a\":1,\"a\":2}", "\"a\\u0000b\"", "\xef\xbb\xbf" "1"};
    for (size_t i = 0; i < sizeof SCALARS / sizeof SCALARS[0]; i++) {
        assert_null(jsonfast_loadb(SCALARS[i], strlen(SCALARS[i]), NULL));
        json_t *v = jsonfast_load_scalar(SCALARS[i], strlen(SCALARS[i]));
        if (!v || json_is_object(v) || json_is_array(v)) fail_msg("not read as a scalar: %s", SCALARS[i]);
        json_decref(v);
    }
    for (size_t i = 0; i < sizeof NOT / sizeof NOT[0]; i++)
        if (jsonfast_load_scalar(NOT[i], strlen(NOT[i]))) fail_msg("read as a scalar: %s", NOT[i]);
}

/* A member's value as a tree: its text loaded by jansson (inside an array, as a scalar may be). */
static json_t *member_tree(const jsonfast_member *m) {
    char buf[1200];
    if (m->type == JSONFAST_STRING) return json_stringn(m->str, m->len);
    snprintf(buf, sizeof buf, "[%.*s]", (int)m->len, m->str);
    json_t *a = json_loads(buf, JSON_REJECT_DUPLICATES, NULL);
    json_t *v = json_incref(json_array_get(a, 0));
    json_decref(a);
    return v;
}

/* jsonfast_members() gives up, or agrees with jansson member by member. */
static void check_members(const char *buf, size_t len) {
    jsonfast_member m[16];
    char scratch[1024];
    int n = jsonfast_members(buf, len, m, 16, scratch, sizeof scratch);
    if (n < 0) return;
    json_t *ref = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (!ref || !json_is_object(ref) || json_object_size(ref) != (size_t)n)
        fail_msg("members accepted what jansson reads otherwise: %.*s", (int)len, buf);
    for (int i = 0; i < n; i++) {
        assert_int_equal(strlen(m[i].key), m[i].key_len);
        json_t *want = json_object_getn(ref, m[i].key, m[i].key_len), *got = member_tree(&m[i]);
        assert_non_null(want);
        assert_int_equal(m[i].type == JSONFAST_NULL, json_is_null(want));
        assert_int_equal(m[i].type == JSONFAST_OBJECT, json_is_object(want));
        assert_int_equal(m[i].type == JSONFAST_STRING, json_is_string(want));
        if (!got || !json_equal(got, want)) fail_msg("member %s differs in %.*s", m[i].key, (int)len, buf);
        json_decref(got);
    }
    json_decref(ref);
}

/* jsonfast_array_items() gives up, or each span loads alone as jansson's element. */
static void check_items(const char *buf, size_t len) {
    jsonfast_span it[40];
    int n = jsonfast_array_items(buf, len, it, 40);
    if (n < 0) return;
    json_t *ref = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (!ref || !json_is_array(ref) || json_array_size(ref) != (size_t)n)
        fail_msg("items accepted what jansson reads otherwise: %.*s", (int)len, buf);
    for (int i = 0; i < n; i++) {
        json_t *one = jsonfast_parse(it[i].text, it[i].len);
        assert_non_null(one);
        char *a = dump(one), *b = dump(json_array_get(ref, (size_t)i));
        assert_string_equal(a, b);
        free(a);
        free(b);
        json_decref(one);
    }
    json_decref(ref);
}

static void test_members(void **state) {
    (void)state;
    jsonfast_member m[4];
    char scratch[256];
    const char *body = " {\"a\":\"x\\u00e9\",\"n\":null,\"o\":{\"k\":[1]},\"b\":true} ";
    assert_int_equal(jsonfast_members(body, strlen(body), m, 4, scratch, sizeof scratch), 4);
    assert_string_equal(m[0].key, "a");
    assert_int_equal(m[0].type, JSONFAST_STRING);
    assert_string_equal(m[0].str, "x\xc3\xa9");
    assert_int_equal(m[1].type, JSONFAST_NULL);
    assert_int_equal(m[2].type, JSONFAST_OBJECT);
    assert_memory_equal(m[2].str, "{\"k\":[1]}", m[2].len);
    assert_int_equal(m[3].type, JSONFAST_OTHER);
    assert_int_equal(jsonfast_members(body, strlen(body), m, 3, scratch, sizeof scratch), -1);
    assert_int_equal(jsonfast_members(body, strlen(body), m, 4, scratch, 8), -1); /* no room */
    assert_int_equal(jsonfast_members("{}", 2, m, 4, scratch, sizeof scratch), 0);
    static const char *const BAD[] = {"[]", "{\"a\":1,}", "{\"a\":1,\"a\":2}", "{\"a\":1} x",
                                      "{\"a\":1.5}", "{\"a\":\"\\u0000\"}", "{\"a\"}", ""};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        assert_int_equal(jsonfast_members(BAD[i], strlen(BAD[i]), m, 4, scratch, sizeof scratch), -1);
    for (size_t i = 0; i < sizeof FAST / sizeof FAST[0]; i++) check_members(FAST[i], strlen(FAST[i]));
}

static void test_array_items(void **state) {
    (void)state;
    jsonfast_span it[3];
    const char *body = " [ {\"a\":1} ,{\"b\":{\"c\":[]}}]\n";
    assert_int_equal(jsonfast_array_items(body, strlen(body), it, 3), 2);
    assert_int_equal(it[0].len, 7);
    assert_memory_equal(it[1].text, "{\"b\":{\"c\":[]}}", it[1].len);
    assert_int_equal(jsonfast_array_items(body, strlen(body), it, 1), -1); /* more than max */
    static const char *const BAD[] = {"[]", "[1]", "[{},]", "[{}", "[{}] x", "{}", "[{\"a\":1,\"a\":1}]",
                                      "[{\"\\u0061\":1}]" /* escaped key: left to the tree */, ""};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        assert_int_equal(jsonfast_array_items(BAD[i], strlen(BAD[i]), it, 3), -1);
}

/* Strings of every length up to 48 with one special byte at every position: the 16-byte scan
 * must stop exactly there, in the parser and in the writer. */
static void test_string_positions(void **state) {
    (void)state;
    static const char *const SPECIAL[] = {"\\\"", "\\n", "\xc3\xa9", "\x01", "\x7f", "\xff", "/"};
    char doc[128], raw[64];
    for (size_t len = 0; len <= 48; len++)
        for (size_t at = 0; at <= len; at++)
            for (size_t k = 0; k < sizeof SPECIAL / sizeof SPECIAL[0]; k++) {
                memset(raw, 'a', len);
                size_t sl = strlen(SPECIAL[k]);
                memcpy(raw + at, SPECIAL[k], sl);
                size_t rl = len + sl;
                int n = snprintf(doc, sizeof doc, "{\"k\":\"%.*s\"}", (int)rl, raw);
                json_t *v = jsonfast_parse(doc, (size_t)n);
                check_same(doc, (size_t)n, v);
                check_members(doc, (size_t)n);
                if (v) check_dump(v);
                json_decref(v);
                json_t *w = json_pack("{s:o}", "k", json_stringn_nocheck(raw, rl));
                check_dump(w); /* raw bytes as a value: escapes, or a failure for bad UTF-8 */
                json_decref(w);
            }
}

static uint32_t rnd_state = 12345;
static uint32_t rnd(uint32_t n) {
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

/* Random edits of valid documents: whatever the fast parser accepts, jansson must read the same. */
static void test_mutations(void **state) {
    (void)state;
    static const char ALPHABET[] = "{}[]:,\"\\/ \t\n0123456789-+.eEtrufalsn\x80\xc3\xa9\xff";
    char buf[512];
    int accepted = 0;
    for (int round = 0; round < 40000; round++) {
        const char *seed = FAST[rnd(sizeof FAST / sizeof FAST[0])];
        size_t len = strlen(seed);
        memcpy(buf, seed, len);
        for (int e = 0, edits = 1 + (int)rnd(3); e < edits; e++) {
            size_t at = len ? rnd((uint32_t)len) : 0;
            char c = ALPHABET[rnd(sizeof ALPHABET - 1)];
            switch (rnd(3)) {
            case 0: if (len) buf[at] = c; break;
            case 1: if (len) memmove(buf + at, buf + at + 1, len - at - 1), len--; break;
            default:
                if (len + 1 < sizeof buf) memmove(buf + at + 1, buf + at, len - at), buf[at] = c, len++;
            }
        }
        json_t *v = jsonfast_parse(buf, len);
        accepted += v != NULL;
        check_same(buf, len, v);
        json_decref(v);
        check_members(buf, len);
        /* and as elements of an array, twice */
        char arr[1100];
        int an = snprintf(arr, sizeof arr, "[%.*s,%.*s]", (int)len, buf, (int)len, buf);
        check_items(arr, (size_t)an);
    }
    assert_true(accepted > 1000); /* the edits do not all break the documents */
}

static void check_dump(const json_t *v) {
    jsonfast_buf b = {0};
    size_t len = 0;
    jsonfast_value(&b, v);
    char *ours = jsonfast_finish(&b, &len), *ref = dump(v);
    if (!ref) {
        assert_null(ours);
        return;
    }
    assert_non_null(ours);
    assert_string_equal(ours, ref);
    assert_int_equal(len, strlen(ref));
    free(ours);
    free(ref);
}

static void test_writer(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof FAST / sizeof FAST[0]; i++) {
        json_t *v = json_loads(FAST[i], 0, NULL);
        check_dump(v);
        json_decref(v);
    }
    json_t *v = json_pack("{s:f, s:f, s:f, s:I, s:I, s:[f]}", "r", 1.5, "big", 1e300, "whole", 3.0,
                          "min", (json_int_t)INT64_MIN, "max", (json_int_t)INT64_MAX, "a", 0.1);
    check_dump(v);
    json_decref(v);
    /* every control character, quotes, backslash, slash, DEL, non-ASCII, an embedded NUL */
    char s[40];
    for (int i = 0; i < 32; i++) s[i] = (char)i;
    memcpy(s + 32, "\"\\/\x7f\xc3\xa9z", 7);
    v = json_object();
    json_object_set_new(v, "s", json_stringn(s, 39));
    json_object_set_new(v, "k\x01\"", json_string("v"));
    check_dump(v);
    json_decref(v);
    /* not UTF-8: json_dumps fails, so must we */
    v = json_pack("{s:o}", "s", json_stringn_nocheck("\xc3(", 2));
    check_dump(v);
    json_decref(v);
}

static void test_writer_parts(void **state) {
    (void)state;
    jsonfast_buf b = {0};
    size_t len;
    jsonfast_raw(&b, "{", 1);
    jsonfast_str(&b, "k", 1);
    jsonfast_raw(&b, ":", 1);
    jsonfast_int(&b, -42);
    for (int i = 0; i < 300; i++) jsonfast_raw(&b, ",1", 2); /* grows past the first block */
    jsonfast_raw(&b, "}", 1);
    char *out = jsonfast_finish(&b, &len);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    assert_int_equal(len, 2 + 4 + 3 + 600);
    assert_memory_equal(out, "{\"k\":-42,1,1", 12);
    free(out);
    assert_null(b.data);
    char *empty = jsonfast_finish(&b, &len); /* nothing written: "" */
    assert_non_null(empty);
    assert_int_equal(len, 0);
    free(empty);
    jsonfast_str(&b, "\xff", 1); /* failed: the rest is ignored */
    jsonfast_raw(&b, "x", 1);
    assert_null(jsonfast_finish(&b, NULL));
    jsonfast_discard(&b); /* harmless twice */
}

/* Numbers too large for jansson: read as +-1e99, their places named; everything else exactly as
 * jsonfast_loadb() (and so json_loadb) decides. */
static void test_big_numbers(void **state) {
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *path[2], *member[2];
        size_t top[2];
        bool negative[2];
    } ok[] = {
        {"{\"user_id\":\"u\",\"amount\": 123456789012345678901234567890}", 1, {"amount"}, {"amount"}, {1}, {false}},
        {"{\"z\":0,\"amount\":1e400 }", 1, {"amount"}, {"amount"}, {1}, {false}},
        {"{\"amount\":-1E+400,\"s\":\"1e400\"}", 1, {"amount"}, {"amount"}, {0}, {true}},
        {"{\"m\":{\"a\":[1,2,{\"b\":9e999}]},\"k\":-99999999999999999999}", 2, {"m.a[2].b", "k"},
         {"m", "k"}, {0, 1}, {false, true}},
        {"[{\"a\":1},{\"x\":1,\"amount\":1e400}]", 1, {"amount"}, {"amount"}, {1}, {false}},
        {"[1,[2,1e309]]", 1, {"[1]"}, {""}, {1}, {false}},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        jsonfast_big big[4];
        size_t n = 99;
        json_error_t err;
        json_t *v = jsonfast_loadb_big(ok[i].in, strlen(ok[i].in), &err, big, 4, &n);
        if (!v) fail_msg("case %zu: %s", i, err.text);
        assert_int_equal(n, ok[i].n);
        for (size_t k = 0; k < n; k++) {
            assert_string_equal(big[k].path, ok[i].path[k]);
            assert_string_equal(big[k].member, ok[i].member[k]);
            assert_int_equal(big[k].top, ok[i].top[k]);
            assert_int_equal(big[k].negative, ok[i].negative[k]);
        }
        json_decref(v);
    }
    /* the value read in its place */
    jsonfast_big big[2];
    size_t n;
    json_error_t err;
    json_t *v = jsonfast_loadb_big("{\"a\":-123456789012345678901234567890,\"b\":\"x\"}", 45, &err, big, 2, &n);
    assert_non_null(v);
    assert_true(json_is_real(json_object_get(v, "a")));
    assert_true(json_real_value(json_object_get(v, "a")) == -1e99);
    assert_string_equal(json_string_value(json_object_get(v, "b")), "x");
    json_decref(v);
    /* what jansson reads, or refuses for another reason, is unchanged */
    static const char *const same[] = {
        "{\"a\":1e-400}", "{\"a\":9223372036854775807}", "{\"a\":-9223372036854775808}",
        "{\"a\":1.5e308}", "{\"a\":123456789012345678901234567890", "{\"a\":1e400,}",
        "{\"a\":1e400,\"a\":1}", "{\"a\":01e400}", "1e400", "{\"a\":\"1e400\"}", "{\"a\":1e400x}",
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        json_error_t e1;
        size_t len = strlen(same[i]);
        json_t *want = json_loadb(same[i], len, JSON_REJECT_DUPLICATES, &e1);
        n = 99;
        v = jsonfast_loadb_big(same[i], len, &err, big, 2, &n);
        if (want && !(v && json_equal(v, want) && n == 0)) fail_msg("case %s: changed", same[i]);
        if (!want && !v && json_error_code(&e1) != json_error_numeric_overflow &&
            (err.position != e1.position || strcmp(err.text, e1.text) != 0))
            fail_msg("case %s: error %s at %d, jansson %s at %d", same[i], err.text, err.position,
                     e1.text, e1.position);
        if (!want && v) {
            /* only a too large number may turn into a value, and nothing else in the text */
            if (json_error_code(&e1) != json_error_numeric_overflow) fail_msg("case %s: accepted", same[i]);
        }
        json_decref(want);
        json_decref(v);
    }
    /* the positions of a later error are the input's */
    json_error_t e2;
    assert_null(json_loadb("{\"a\":12345, \"b\":tru}", 20, JSON_REJECT_DUPLICATES, &e2));
    v = jsonfast_loadb_big("{\"a\":1e400, \"b\":tru}", 20, &err, big, 2, &n);
    assert_null(v);
    assert_int_equal(err.column, e2.column);
    assert_int_equal(err.position, e2.position);
    /* more than max: refused as jansson refuses it */
    v = jsonfast_loadb_big("[1e400,2e400,3e400]", 19, &err, big, 2, &n);
    assert_null(v);
    assert_int_equal(json_error_code(&err), json_error_numeric_overflow);
    /* a name cut to its buffer (member 64, path 128 bytes) is cut between characters: at every
     * length of a non-ASCII key ("\u00e9" is 2 bytes, "\u20ac" 3), both stay valid UTF-8 */
    for (size_t chars = 20; chars < 70; chars++) {
        for (int three = 0; three < 4; three++) { /* 0/1: nested, 2/3: a root member */
            char doc[512], key[300] = "a";
            for (size_t c = 0; c < chars; c++) strcat(key, three % 2 ? "\xe2\x82\xac" : "\xc3\xa9");
            int len = three < 2 ? snprintf(doc, sizeof doc, "{\"m\":{\"%s\":1e400}}", key)
                                : snprintf(doc, sizeof doc, "{\"%s\":1e400}", key);
            v = jsonfast_loadb_big(doc, (size_t)len, &err, big, 2, &n);
            assert_non_null(v);
            assert_int_equal(n, 1);
            json_t *s1 = json_string(big[0].member), *s2 = json_string(big[0].path);
            if (!s1 || !s2) fail_msg("%zu characters: a name cut inside a character", chars);
            json_decref(s1);
            json_decref(s2);
            json_decref(v);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_subset),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_load_scalar),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_array_items),
        cmocka_unit_test(test_string_positions),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_writer),
        cmocka_unit_test(test_writer_parts),
        cmocka_unit_test(test_big_numbers),
    };
    return cmocka_run_group_tests_name("jsonfast", tests, NULL, NULL);
}
