/* Unit tests for the key id of common/pii.c (pii_key_id, pii_key_id_of): the public fingerprint
 * of the pseudonymization key that ingest puts on every raw_payments message and in
 * fs_ingest_pii_key_info. It must be stable (same secret and parameters, same id: instances and
 * restarts agree), change with anything that changes the digests (secret, Argon2 parameters) and
 * with nothing else (cache size), and give nothing of the secret away. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <argon2.h>

#include "fsutil.h"
#include "pii.h"

#define SECRET_A "0123456789abcdef0123456789abcdef" /* hex text, like `openssl rand -hex 16` */
#define SECRET_B "0123456789abcdef0123456789abcdeF" /* one byte apart */

static const pii_params PARAMS = {.t_cost = 1, .m_cost_kib = 64, .cache_entries = 16};

static pii *make(const char *secret, const pii_params *prm) {
    char err[128];
    pii *pi = pii_new(secret, strlen(secret), prm, err, sizeof err);
    if (!pi) fail_msg("pii_new: %s", err);
    return pi;
}

static void key_id_of(const char *secret, const pii_params *prm, char out[PII_KEY_ID_HEX + 1]) {
    char err[128];
    if (pii_key_id_of(secret, strlen(secret), prm, out, err, sizeof err) != 0)
        fail_msg("pii_key_id_of: %s", err);
}

static void test_key_id_format_and_stable(void **state) {
    (void)state;
    pii *a = make(SECRET_A, &PARAMS), *a2 = make(SECRET_A, &PARAMS);
    char of[PII_KEY_ID_HEX + 1];
    const char *id = pii_key_id(a);
    assert_int_equal(strlen(id), PII_KEY_ID_HEX);
    assert_int_equal(strspn(id, "0123456789abcdef"), PII_KEY_ID_HEX);
    assert_string_equal(id, pii_key_id(a2)); /* two instances with one secret agree */
    key_id_of(SECRET_A, &PARAMS, of);
    assert_string_equal(id, of); /* what a reload compares with */
    /* digesting does not touch it */
    char d[PAY_DIGEST_HEX + 1], err[128];
    assert_int_equal(pii_digest(a, PII_EMAIL, "a@example.com", d, err, sizeof err), 0);
    assert_string_equal(pii_key_id(a), of);
    pii_destroy(a);
    pii_destroy(a2);
}

/* Pins the derivation: ingest instances of two releases must show the same id for one secret
 * (else every rolling upgrade looks like a key skew). Recomputed here straight with libargon2. */
static void test_key_id_derivation(void **state) {
    (void)state;
    unsigned char hash[32];
    char ref[2 * sizeof hash + 1], of[PII_KEY_ID_HEX + 1];
    pii_params prm = {.t_cost = 2, .m_cost_kib = 4096, .cache_entries = 0}; /* ingest's defaults */
    char secret[] = SECRET_A, pwd[] = "fraudshield pii key id v1", salt[] = "fraudshield/key-id/v1";
    argon2_context ctx = {
        .out = hash, .outlen = sizeof hash, .pwd = (uint8_t *)pwd, .pwdlen = (uint32_t)strlen(pwd),
        .salt = (uint8_t *)salt, .saltlen = (uint32_t)strlen(salt), .secret = (uint8_t *)secret,
        .secretlen = (uint32_t)strlen(secret), .t_cost = 2, .m_cost = 4096, .lanes = 1,
        .threads = 1, .version = ARGON2_VERSION_13, .flags = ARGON2_DEFAULT_FLAGS};
    assert_int_equal(argon2id_ctx(&ctx), ARGON2_OK);
    fs_hex(hash, sizeof hash, ref);
    ref[PII_KEY_ID_HEX] = '\0';
    key_id_of(SECRET_A, &prm, of);
    assert_string_equal(of, ref);
}

/* Anything that changes the digests changes the id; the cache size does not. */
static void test_key_id_changes_with_the_identity_space(void **state) {
    (void)state;
    char a[PII_KEY_ID_HEX + 1], b[PII_KEY_ID_HEX + 1], t[PII_KEY_ID_HEX + 1],
        m[PII_KEY_ID_HEX + 1], c[PII_KEY_ID_HEX + 1], longer[PII_KEY_ID_HEX + 1];
    pii_params more_t = PARAMS, more_m = PARAMS, no_cache = PARAMS;
    more_t.t_cost = 2;
    more_m.m_cost_kib = 128;
    no_cache.cache_entries = 0;
    key_id_of(SECRET_A, &PARAMS, a);
    key_id_of(SECRET_B, &PARAMS, b);
    key_id_of(SECRET_A "\n", &PARAMS, longer); /* a file read without its newline trimmed */
    key_id_of(SECRET_A, &more_t, t);
    key_id_of(SECRET_A, &more_m, m);
    key_id_of(SECRET_A, &no_cache, c);
    assert_string_not_equal(a, b);
    assert_string_not_equal(a, longer);
    assert_string_not_equal(a, t);
    assert_string_not_equal(a, m);
    assert_string_equal(a, c);
}

/* The id gives nothing of the secret away: not a piece of its bytes or of their hex, and not the
 * digest of its own label as an identifier (the salts keep the two apart). */
static void test_key_id_reveals_nothing(void **state) {
    (void)state;
    static const char *const SECRETS[] = {SECRET_A, "a much longer secret, with spaces: 48 bytes!!!!",
                                          "ffffffffffffffffffffffffffffffff"};
    char id[PII_KEY_ID_HEX + 1], hex[2 * 64 + 1], d[PAY_DIGEST_HEX + 1], err[128];
    for (size_t i = 0; i < sizeof SECRETS / sizeof SECRETS[0]; i++) {
        const char *s = SECRETS[i];
        key_id_of(s, &PARAMS, id);
        fs_hex((const unsigned char *)s, strlen(s), hex);
        assert_null(strstr(hex, id));     /* not the secret's hex, nor a prefix of it */
        assert_null(strstr(s, id));       /* not the secret itself (hex secrets are text) */
        assert_int_not_equal(strncmp(id, hex, 4), 0); /* not even its first two bytes */
        pii *pi = make(s, &PARAMS);
        for (int k = 0; k < PII_KIND_COUNT; k++) {
            assert_int_equal(pii_digest(pi, (pii_kind)k, k == PII_IP ? "192.0.2.1" : PII_KEY_ID_LABEL,
                                        d, err, sizeof err), 0);
            assert_int_not_equal(strncmp(d, id, PII_KEY_ID_HEX), 0);
        }
        pii_destroy(pi);
    }
}

static void test_key_id_bounds(void **state) {
    (void)state;
    char id[PII_KEY_ID_HEX + 1], err[128] = "";
    pii_params bad = PARAMS;
    bad.t_cost = 0;
    assert_int_equal(pii_key_id_of("short", 5, &PARAMS, id, err, sizeof err), -1);
    assert_non_null(strstr(err, "16..256"));
    assert_int_equal(pii_key_id_of(SECRET_A, strlen(SECRET_A), &bad, id, err, sizeof err), -1);
    assert_non_null(strstr(err, "t_cost"));
    assert_null(pii_new("short", 5, &PARAMS, err, sizeof err)); /* the same bounds as before */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_id_format_and_stable),
        cmocka_unit_test(test_key_id_derivation),
        cmocka_unit_test(test_key_id_changes_with_the_identity_space),
        cmocka_unit_test(test_key_id_reveals_nothing),
        cmocka_unit_test(test_key_id_bounds),
    };
    return cmocka_run_group_tests_name("pii key id", tests, NULL, NULL);
}
