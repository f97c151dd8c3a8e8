/* Unit tests for common/hmac256.c: the same bytes as OpenSSL's one-shot HMAC(SHA-256), for keys
 * shorter than, equal to and longer than a block, and messages of every length up to 200 bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hmac256.h"

static void test_matches_openssl(void **state) {
    (void)state;
    unsigned char key[100], msg[200], ours[32], ref[32];
    unsigned int ref_len;
    static const size_t KEY_LENS[] = {0, 1, 16, 32, 63, 64, 65, 100};
    for (size_t i = 0; i < sizeof key; i++) key[i] = (unsigned char)(i * 7 + 1);
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (unsigned char)(i * 13 + 5);
    for (size_t k = 0; k < sizeof KEY_LENS / sizeof KEY_LENS[0]; k++) {
        hmac256 *h = hmac256_new(key, KEY_LENS[k]);
        assert_non_null(h);
        for (size_t n = 0; n <= sizeof msg; n++) {
            hmac256_digest(h, msg, n, ours);
            assert_non_null(HMAC(EVP_sha256(), key, (int)KEY_LENS[k], msg, n, ref, &ref_len));
            assert_int_equal(ref_len, 32);
            assert_memory_equal(ours, ref, 32);
        }
        hmac256_destroy(h);
    }
    hmac256_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_openssl),
    };
    return cmocka_run_group_tests_name("hmac256", tests, NULL, NULL);
}
