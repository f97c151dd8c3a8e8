/* Unit tests for ingest/ratelimit.c: the token bucket and the per-key table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ratelimit.h"

static void test_token_bucket(void **state) {
    (void)state;
    ratelimit_bucket b = {0};
    int retry = 0;
    int64_t t = 1000000;
    for (int i = 0; i < 5; i++) assert_true(ratelimit_bucket_take(&b, 5, t, &retry)); /* burst */
    assert_false(ratelimit_bucket_take(&b, 5, t, &retry));
    assert_int_equal(retry, 1);
    assert_false(ratelimit_bucket_take(&b, 5, t + 100000, &retry)); /* 0.5 token back */
    assert_true(ratelimit_bucket_take(&b, 5, t + 200000, &retry));  /* one whole token */
    assert_true(ratelimit_bucket_take(&b, 5, t + 10000000, &retry));
    for (int i = 0; i < 4; i++) assert_true(ratelimit_bucket_take(&b, 5, t + 10000000, &retry));
    assert_false(ratelimit_bucket_take(&b, 5, t + 10000000, &retry)); /* never more than the burst */
    /* a slow rate: the Retry-After covers the wait for one token */
    ratelimit_bucket s = {0};
    assert_true(ratelimit_bucket_take(&s, 1, t, &retry));
    assert_false(ratelimit_bucket_take(&s, 1, t + 100000, &retry));
    assert_int_equal(retry, 1);
    /* time going backwards (never with a monotonic clock) must not mint tokens */
    assert_false(ratelimit_bucket_take(&s, 1, t - 5000000, &retry));
}

static void test_ratelimit_per_key(void **state) {
    (void)state;
    ratelimit *rl = ratelimit_new();
    int retry;
    assert_true(ratelimit_take(rl, "a", 2, 1, &retry));
    assert_true(ratelimit_take(rl, "a", 2, 1, &retry));
    assert_false(ratelimit_take(rl, "a", 2, 1, &retry));
    assert_true(ratelimit_take(rl, "b", 2, 1, &retry)); /* its own bucket */
    for (int i = 0; i < 100; i++) assert_true(ratelimit_take(rl, "u", 0, 1, &retry)); /* unlimited */
    ratelimit_destroy(rl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_bucket),
        cmocka_unit_test(test_ratelimit_per_key),
    };
    return cmocka_run_group_tests_name("ingest_ratelimit", tests, NULL, NULL);
}
