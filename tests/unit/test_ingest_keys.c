/* Unit tests for ingest/keys.c (keys file, presented keys, verification cache, creation), plus the
 * split pseudonymization API of common/pii.c that ingest's worker threads use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "keys.h"
#include "pii.h"

#define HASH "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"

static void test_parse_line_table(void **state) {
    (void)state;
    static const struct {
        const char *line;
        int rc;
        const char *id;
        unsigned scopes;
        unsigned rate;
        const char *err; /* substring of the error */
    } cases[] = {
        {"checkout payments:write,payments:read 500 " HASH, 1, "checkout",
         KEYS_SCOPE_PAYMENTS_WRITE | KEYS_SCOPE_PAYMENTS_READ, 500, NULL},
        {"  fraud-team\toutcomes:write\t0\t" HASH "  \r", 1, "fraud-team", KEYS_SCOPE_OUTCOMES_WRITE, 0, NULL},
        {"", 0, NULL, 0, 0, NULL},
        {"   # a comment", 0, NULL, 0, 0, NULL},
        {"k payments:write 5", -1, NULL, 0, 0, "4 or 5 fields"},
        {"k payments:write 5 " HASH " 3fa0", 1, "k", KEYS_SCOPE_PAYMENTS_WRITE, 5, NULL},
        {"k payments:write 5 " HASH " extra", -1, NULL, 0, 0, "check"},
        {"k payments:write 5 " HASH " 3FA0", -1, NULL, 0, 0, "check"},
        {"k payments:write 5 " HASH " 3fa", -1, NULL, 0, 0, "check"},
        {"k payments:write 5 " HASH " 3fa0 more", -1, NULL, 0, 0, "4 or 5 fields"},
        {"k payments:delete 5 " HASH, -1, NULL, 0, 0, "unknown scope"},
        {"k payments:write -1 " HASH, -1, NULL, 0, 0, "rate"},
        {"k payments:write ten " HASH, -1, NULL, 0, 0, "rate"},
        {"k payments:write 1 $argon2i$v=19$m=1,t=1,p=1$x$y", -1, NULL, 0, 0, "Argon2id"},
        {"bad.id payments:write 1 " HASH, -1, NULL, 0, 0, "key id"},
        {"k , 1 " HASH, -1, NULL, 0, 0, "no scope"},
        /* the sources that are not API keys (payments.source, the outcome's source) */
        {"analyst outcomes:write 0 " HASH, -1, NULL, 0, 0, "key id analyst is reserved"},
        {"anonymous payments:write 0 " HASH, -1, NULL, 0, 0, "key id anonymous is reserved"},
        {"Analyst outcomes:write 0 " HASH, -1, NULL, 0, 0, "reserved"},
        {"ANONYMOUS payments:write 0 " HASH, -1, NULL, 0, 0, "reserved"},
        {"analysts outcomes:write 0 " HASH, 1, "analysts", KEYS_SCOPE_OUTCOMES_WRITE, 0, NULL},
        {"shopify payments:write 0 " HASH, 1, "shopify", KEYS_SCOPE_PAYMENTS_WRITE, 0, NULL},
        {"backoffice payments:read_all 0 " HASH, 1, "backoffice", KEYS_SCOPE_PAYMENTS_READ_ALL, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        keys_entry e;
        char err[256] = "";
        int rc = keys_parse_line(cases[i].line, &e, err, sizeof err);
        if (rc != cases[i].rc) fail_msg("case %zu (%s): rc %d, want %d (%s)", i, cases[i].line, rc, cases[i].rc, err);
        if (rc == 1) {
            assert_string_equal(e.id, cases[i].id);
            assert_int_equal(e.scopes, cases[i].scopes);
            assert_int_equal(e.rate, cases[i].rate);
            assert_string_equal(e.hash, HASH);
        }
        if (cases[i].err && !strstr(err, cases[i].err))
            fail_msg("case %zu: error '%s' lacks '%s'", i, err, cases[i].err);
    }
}

static void test_parse_rate(void **state) {
    (void)state;
    static const struct {
        const char *s;
        int rc;
        uint32_t rate;
    } rows[] = {{"0", 0, 0},         {"5", 0, 5},       {"1000000", 0, 1000000}, {"1000001", -1, 0},
                {"4294967297", -1, 0}, {"abc", -1, 0},  {"10x", -1, 0},          {"", -1, 0},
                {" 5", -1, 0},       {"+5", -1, 0},     {"-0", -1, 0},           {"-1", -1, 0}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint32_t r = 77;
        assert_int_equal(keys_parse_rate(rows[i].s, &r), rows[i].rc);
        if (rows[i].rc == 0) assert_int_equal(r, rows[i].rate);
    }
}

static void test_load_text_and_find(void **state) {
    (void)state;
    char err[256];
    keys *k = keys_load_text("# keys\na payments:write 1 " HASH "\n\nb payments:read 0 " HASH "\n", err, sizeof err);
    assert_non_null(k);
    assert_int_equal(keys_count(k), 2);
    assert_non_null(keys_find(k, "a"));
    assert_int_equal(keys_find(k, "b")->scopes, KEYS_SCOPE_PAYMENTS_READ);
    assert_null(keys_find(k, "c"));
    keys_destroy(k);
    /* a bad line anywhere refuses the whole file, naming the line */
    assert_null(keys_load_text("a payments:write 1 " HASH "\nb nope 1 " HASH "\n", err, sizeof err));
    assert_non_null(strstr(err, "line 2"));
    assert_null(keys_load_text("a payments:write 1 " HASH "\na payments:read 1 " HASH "\n", err, sizeof err));
    assert_non_null(strstr(err, "duplicate"));
    assert_null(keys_load_text("# keys\na payments:write 1 " HASH "\nanalyst outcomes:write 0 " HASH "\n",
                               err, sizeof err));
    assert_non_null(strstr(err, "line 3: key id analyst is reserved"));
    keys_destroy(NULL);
}

/* Scopes in, bits, and back out in the table's order (payments:read_all is its own scope:
 * payments:read does not imply it, nor it payments:read). */
static void test_scopes_format(void **state) {
    (void)state;
    static const struct {
        const char *in;
        int rc;
        unsigned bits;
        const char *out; /* the formatted bits; on error, a substring of the error */
    } rows[] = {
        {"payments:write", 0, KEYS_SCOPE_PAYMENTS_WRITE, "payments:write"},
        {"outcomes:write,payments:write", 0, KEYS_SCOPE_PAYMENTS_WRITE | KEYS_SCOPE_OUTCOMES_WRITE,
         "payments:write,outcomes:write"},
        {"payments:read", 0, KEYS_SCOPE_PAYMENTS_READ, "payments:read"},
        {"payments:read_all", 0, KEYS_SCOPE_PAYMENTS_READ_ALL, "payments:read_all"},
        {"payments:read_all,payments:read", 0, KEYS_SCOPE_PAYMENTS_READ | KEYS_SCOPE_PAYMENTS_READ_ALL,
         "payments:read,payments:read_all"},
        {"outcomes:write,payments:read_all,payments:write,payments:read", 0, KEYS_SCOPES_ALL,
         "payments:write,payments:read,payments:read_all,outcomes:write"},
        {"payments:read_all,payments:read_all", 0, KEYS_SCOPE_PAYMENTS_READ_ALL, "payments:read_all"},
        {"payments:readall", -1, 0, "unknown scope 'payments:readall' (known: payments:write,"
         "payments:read,payments:read_all,outcomes:write)"},
        {"payments:read_all ", -1, 0, "unknown scope"},
        {"Payments:Read_All", -1, 0, "unknown scope"},
        {"payments:read:all", -1, 0, "unknown scope"},
        {",", -1, 0, "no scope"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char out[128] = "", err[256] = "";
        unsigned bits = 77;
        int rc = keys_scopes_parse(rows[i].in, &bits, err, sizeof err);
        if (rc != rows[i].rc) fail_msg("row %zu (%s): rc %d, want %d (%s)", i, rows[i].in, rc, rows[i].rc, err);
        if (rc != 0) {
            if (!strstr(err, rows[i].out)) fail_msg("row %zu: error '%s' lacks '%s'", i, err, rows[i].out);
            continue;
        }
        if (bits != rows[i].bits) fail_msg("row %zu (%s): bits %#x, want %#x", i, rows[i].in, bits, rows[i].bits);
        keys_scopes_format(bits, out, sizeof out);
        if (strcmp(out, rows[i].out) != 0) fail_msg("row %zu: formatted '%s', want '%s'", i, out, rows[i].out);
        assert_int_equal(keys_scopes_parse(out, &bits, err, sizeof err), 0); /* round trip */
        assert_int_equal(bits, rows[i].bits);
    }
    assert_int_equal(keys_scope_bit("payments:read"), KEYS_SCOPE_PAYMENTS_READ);
    assert_int_equal(keys_scope_bit("payments:read_all"), KEYS_SCOPE_PAYMENTS_READ_ALL);
    assert_int_equal(keys_scope_bit("admin"), 0);
}

static void test_presented_id(void **state) {
    (void)state;
    char id[KEYS_ID_MAX + 1];
    assert_int_equal(keys_presented_id("fsk.checkout.abcDEF_-123", id), 0);
    assert_string_equal(id, "checkout");
    assert_int_equal(keys_presented_id("fsk.checkout.", id), -1);
    assert_int_equal(keys_presented_id("fsk..secret", id), -1);
    assert_int_equal(keys_presented_id("xyz.checkout.secret", id), -1);
    assert_int_equal(keys_presented_id("fsk.che ckout.secret", id), -1);
    assert_int_equal(keys_presented_id("fsk.nodot", id), -1);
    assert_int_equal(keys_presented_id(NULL, id), -1);
}

static void test_create_verify_and_cache(void **state) {
    (void)state;
    char path[] = "/tmp/fs-test-keys-XXXXXX", key[KEYS_PRESENTED_MAX + 1], key2[KEYS_PRESENTED_MAX + 1];
    char err[256], id[KEYS_ID_MAX + 1];
    struct stat st;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path); /* keys_create makes it, mode 0600 */
    assert_int_equal(keys_create(path, "svc", KEYS_SCOPE_PAYMENTS_WRITE, 10, key, err, sizeof err), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(keys_create(path, "svc", KEYS_SCOPE_PAYMENTS_READ, 0, key2, err, sizeof err), -1);
    assert_non_null(strstr(err, "already"));
    assert_int_equal(keys_create(path, "other", KEYS_SCOPE_PAYMENTS_READ, 0, key2, err, sizeof err), 0);
    for (size_t i = 0; i < 3; i++) { /* refused, and nothing appended */
        static const char *const reserved[] = {"analyst", "anonymous", "Analyst"};
        assert_int_equal(keys_create(path, reserved[i], KEYS_SCOPE_OUTCOMES_WRITE, 0, key2, err, sizeof err), -1);
        assert_non_null(strstr(err, "is reserved"));
    }
    keys *k = keys_load(path, err, sizeof err);
    assert_non_null(k);
    assert_int_equal(keys_count(k), 2);
    const keys_entry *e = keys_find(k, "svc");
    assert_non_null(e);
    assert_int_equal(e->rate, 10);
    assert_null(strstr(e->hash, key + 8)); /* the file never holds the key */
    assert_int_equal(keys_presented_id(key, id), 0);
    assert_string_equal(id, "svc");
    assert_true(keys_verify(e->hash, key));
    assert_false(keys_verify(e->hash, key2));
    /* the check tag keys create wrote: the key passes it; other secrets nearly all fail it */
    assert_int_equal(strlen(e->check), KEYS_CHECK_HEX);
    assert_true(keys_check_matches(e, key));
    int passed = 0;
    for (int i = 0; i < 1000; i++) {
        char guess[64];
        snprintf(guess, sizeof guess, "fsk.svc.guess-%d", i);
        passed += keys_check_matches(e, guess);
    }
    assert_true(passed <= 2); /* 1 in 65536 each */
    keys_entry old = *e;      /* a line without a tag (before it existed): Argon2 decides */
    old.check[0] = '\0';
    assert_true(keys_check_matches(&old, "fsk.svc.anything"));
    key[strlen(key) - 1] ^= 1;
    assert_false(keys_verify(e->hash, key));

    keys_cache *c = keys_cache_new(64);
    unsigned char d1[32], d2[32];
    uint64_t hits, misses;
    keys_cache_digest(c, "fsk.svc.one", d1);
    keys_cache_digest(c, "fsk.svc.two", d2);
    assert_memory_not_equal(d1, d2, 32);
    assert_int_equal(keys_cache_get(c, d1, id), -1);
    keys_cache_put(c, d1, "svc");
    keys_cache_put(c, d2, NULL);
    assert_int_equal(keys_cache_get(c, d1, id), 1);
    assert_string_equal(id, "svc");
    assert_int_equal(keys_cache_get(c, d2, id), 0); /* known wrong: no Argon2 again */
    keys_cache_stats(c, &hits, &misses);
    assert_int_equal(hits, 2);
    assert_int_equal(misses, 1);
    keys_cache_clear(c);
    assert_int_equal(keys_cache_get(c, d1, id), -1);
    keys_cache_destroy(c);
    keys_destroy(k);
    unlink(path);
}

/* A digest in set `set` of a 64-slot cache (16 sets of 4), told apart by n. */
static void set_digest(unsigned char d[32], unsigned set, unsigned n) {
    memset(d, 0, 32);
    d[0] = (unsigned char)set; /* the low bits of the first word pick the set */
    d[8] = (unsigned char)n;
}

/* The cache's eviction, one set at a time (digests made up: the cache takes any 32 bytes). Each row
 * puts its keys in order ('v' valid, 'w' wrong; one letter per key n = 0, 1, ...), touches (gets)
 * the keys listed, then puts one more key of the kind given, and expects which of the earlier keys
 * are still cached. */
static void test_cache_eviction(void **state) {
    (void)state;
    static const struct {
        const char *keys, *touch;
        char extra;
        const char *kept; /* per earlier key: '1' cached, '0' evicted */
    } rows[] = {
        {"vvvv", "", 'v', "0111"},    /* full of valid keys: the oldest goes */
        {"vvvv", "0", 'v', "1011"},   /* ... the least recently used one */
        {"vvvv", "", 'w', "1111"},    /* a wrong key never evicts a valid one */
        {"vwvv", "", 'v', "1011"},    /* a valid key evicts a wrong one first */
        {"wvvw", "0", 'v', "1110"},   /* ... the least recently used wrong one */
        {"vwvw", "", 'w', "1011"},    /* a wrong key evicts the oldest wrong one */
        {"vvv", "", 'v', "111"},      /* room left: nothing goes */
    };
    char id[KEYS_ID_MAX + 1];
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        keys_cache *c = keys_cache_new(64);
        unsigned char d[32], other[32];
        size_t n = strlen(rows[r].keys);
        set_digest(other, 5, 99); /* another set, never disturbed */
        keys_cache_put(c, other, "x");
        for (size_t i = 0; i < n; i++) {
            set_digest(d, 3, (unsigned)i);
            keys_cache_put(c, d, rows[r].keys[i] == 'v' ? "svc" : NULL);
        }
        for (const char *t = rows[r].touch; *t; t++) {
            set_digest(d, 3, (unsigned)(*t - '0'));
            assert_true(keys_cache_get(c, d, id) >= 0);
        }
        set_digest(d, 3, 50);
        keys_cache_put(c, d, rows[r].extra == 'v' ? "svc" : NULL);
        for (size_t i = 0; i < n; i++) {
            set_digest(d, 3, (unsigned)i);
            int got = keys_cache_get(c, d, id);
            if ((got >= 0) != (rows[r].kept[i] == '1'))
                fail_msg("row %zu key %zu: expected %s, got %d", r, i,
                         rows[r].kept[i] == '1' ? "cached" : "evicted", got);
            if (got >= 0) assert_int_equal(got, rows[r].keys[i] == 'v');
        }
        assert_int_equal(keys_cache_get(c, other, id), 1);
        keys_cache_destroy(c);
    }
}

/* lookup / compute / store give what pii_digest gives, and count hits and misses. */
static void test_pii_split_api(void **state) {
    (void)state;
    char err[128], direct[PAY_DIGEST_HEX + 1], out[PAY_DIGEST_HEX + 1];
    pii_params pp = {1, 64, 16};
    pii *a = pii_new("0123456789abcdef0123", 20, &pp, err, sizeof err);
    pii *b = pii_new("0123456789abcdef0123", 20, &pp, err, sizeof err);
    uint64_t hits, misses;
    assert_int_equal(pii_digest(a, PII_EMAIL, " Jane@Example.com", direct, err, sizeof err), 0);
    assert_int_equal(pii_lookup(b, PII_EMAIL, "jane@example.com", out), 0);
    assert_int_equal(pii_compute(b, PII_EMAIL, "jane@example.com", out, err, sizeof err), 0);
    assert_string_equal(out, direct);
    pii_store(b, PII_EMAIL, "jane@example.com", out);
    memset(out, 0, sizeof out);
    assert_int_equal(pii_lookup(b, PII_EMAIL, "JANE@example.com ", out), 1);
    assert_string_equal(out, direct);
    assert_int_equal(pii_lookup(b, PII_IP, "not an ip", out), -1);
    pii_stats(b, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 1);
    pii_destroy(a);
    pii_destroy(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_line_table),
        cmocka_unit_test(test_parse_rate),
        cmocka_unit_test(test_load_text_and_find),
        cmocka_unit_test(test_scopes_format),
        cmocka_unit_test(test_presented_id),
        cmocka_unit_test(test_create_verify_and_cache),
        cmocka_unit_test(test_cache_eviction),
        cmocka_unit_test(test_pii_split_api),
    };
    return cmocka_run_group_tests_name("ingest_keys", tests, NULL, NULL);
}
