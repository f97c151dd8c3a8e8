/* Unit tests for the alerter's pure parts: signatures, the retry schedule, Retry-After, the
 * circuit breaker, result classification, the email form, retention's bounds and phases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "breaker.h"
#include "delivery.h"
#include "mail.h"
#include "retention.h"
#include "retry.h"

/* ---- signatures -------------------------------------------------------------------------------- */

/* Vectors computed independently:
 *   printf '%s' "$ts.$body" | openssl dgst -sha256 -hmac "$secret" -hex */
static void test_signature_known_vectors(void **state) {
    (void)state;
    static const struct {
        const char *secret, *ts, *body, *want;
    } cases[] = {
        {"whsec_test_secret_123", "1700000000",
         "{\"alert_id\":\"0b8f6f2e-5a3c-5d7e-9a1b-2c3d4e5f6a7b\",\"score\":70}",
         "sha256=2d0801396ddd139629f4c9d28ead8962bfdbd73369bcb3ee33270c7bc2479e99"},
        {"key", "1", "", "sha256=53123bc365c2fe4bee48bc5cc6cd6c19699147d43513154ed34277c7c063e80f"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char sig[DELIVERY_SIG_LEN + 1];
        delivery_sign(cases[i].secret, cases[i].ts, cases[i].body, strlen(cases[i].body), sig);
        assert_string_equal(cases[i].want, sig);
        assert_int_equal(DELIVERY_SIG_LEN, strlen(sig));
    }
}

static void test_signature_depends_on_every_input(void **state) {
    (void)state;
    char a[DELIVERY_SIG_LEN + 1], b[DELIVERY_SIG_LEN + 1];
    delivery_sign("secret-0123456789", "100", "{}", 2, a);
    delivery_sign("secret-0123456789", "101", "{}", 2, b);
    assert_string_not_equal(a, b); /* the timestamp is signed: no replay with a fresh one */
    delivery_sign("secret-0123456780", "100", "{}", 2, b);
    assert_string_not_equal(a, b);
    delivery_sign("secret-0123456789", "100", "{ }", 3, b);
    assert_string_not_equal(a, b);
}

/* v2 binds the delivery id and the event type too. Vectors computed independently:
 *   printf '%s' "$ts.$delivery.$event.$body" | openssl dgst -sha256 -hmac "$secret" -hex */
static void test_signature_v2_known_vectors(void **state) {
    (void)state;
    static const struct {
        const char *secret, *ts, *delivery, *event, *body, *want;
    } cases[] = {
        {"whsec_test_secret_123", "1700000000", "6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f", "alert.created",
         "{\"alert_id\":\"0b8f6f2e-5a3c-5d7e-9a1b-2c3d4e5f6a7b\",\"score\":70}",
         "v2=13a3cb483d71fd31615e19e12a0c9980a516fb00feb92e4f5d80c0627dcb3f4a"},
        {"key", "1", "d", "alert.resolved", "",
         "v2=c645b6dfc0c236587f8464b8765a71ba082702a828e0f4ecb12e53fc5f62e437"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char sig[DELIVERY_SIG_V2_LEN + 1];
        delivery_sign_v2(cases[i].secret, cases[i].ts, cases[i].delivery, cases[i].event,
                         cases[i].body, strlen(cases[i].body), sig);
        assert_string_equal(cases[i].want, sig);
        assert_int_equal(DELIVERY_SIG_V2_LEN, strlen(sig));
    }
}

/* The replay v1 allows within the timestamp window (same timestamp and body, another delivery id
 * or event type) does not verify under v2. */
static void test_signature_v2_binds_delivery_and_event(void **state) {
    (void)state;
    char a[DELIVERY_SIG_V2_LEN + 1], b[DELIVERY_SIG_V2_LEN + 1];
    delivery_sign_v2("secret-0123456789", "100", "d-1", "alert.created", "{}", 2, a);
    delivery_sign_v2("secret-0123456789", "100", "d-2", "alert.created", "{}", 2, b);
    assert_string_not_equal(a, b);
    delivery_sign_v2("secret-0123456789", "100", "d-1", "alert.resolved", "{}", 2, b);
    assert_string_not_equal(a, b);
    delivery_sign_v2("secret-0123456789", "101", "d-1", "alert.created", "{}", 2, b);
    assert_string_not_equal(a, b);
}

/* ---- the retry schedule ------------------------------------------------------------------------ */

static const retry_policy DEFAULTS = {.base_ms = 30000, .max_delay_ms = 7200000,
                                      .max_age_ms = 86400000, .max_attempts = 0, .jitter_pct = 20,
                                      .time_compression = 1};

static void test_backoff_schedule_table(void **state) {
    (void)state;
    static const struct {
        int n;
        int64_t ms;
    } table[] = {{1, 30000},    {2, 60000},    {3, 120000},   {4, 240000},   {5, 480000},
                 {6, 960000},   {7, 1920000},  {8, 3840000},  {9, 7200000},  {10, 7200000},
                 {20, 7200000}, {100, 7200000}, {1000, 7200000}};
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        assert_int_equal(table[i].ms, retry_nominal_ms(&DEFAULTS, table[i].n));
    /* the same schedule 1000 times faster */
    retry_policy fast = DEFAULTS;
    fast.time_compression = 1000;
    assert_int_equal(30, retry_nominal_ms(&fast, 1));
    assert_int_equal(3840, retry_nominal_ms(&fast, 8));
    assert_int_equal(7200, retry_nominal_ms(&fast, 12));
}

/* Without jitter, the default schedule covers about a day in about 20 attempts. */
static void test_backoff_default_covers_a_day(void **state) {
    (void)state;
    retry_policy p = DEFAULTS;
    p.jitter_pct = 0;
    int64_t age = 0;
    int attempts = 1;
    for (int64_t d; (d = retry_next_ms(&p, attempts, age, -1, 0.5)) >= 0; attempts++) age += d;
    assert_true(age > 22 * 3600 * 1000LL && age <= 24 * 3600 * 1000LL);
    assert_int_equal(19, attempts);
}

static void test_backoff_jitter_bounds(void **state) {
    (void)state;
    for (int n = 1; n <= 12; n++) {
        int64_t nominal = retry_nominal_ms(&DEFAULTS, n);
        assert_int_equal(nominal * 8 / 10, retry_next_ms(&DEFAULTS, n, 0, -1, 0.0));
        assert_int_equal(nominal, retry_next_ms(&DEFAULTS, n, 0, -1, 0.5));
        int64_t hi = retry_next_ms(&DEFAULTS, n, 0, -1, 0.999999);
        assert_true(hi <= nominal * 12 / 10 && hi >= nominal * 119 / 100);
    }
}

static void test_backoff_limits_and_retry_after(void **state) {
    (void)state;
    retry_policy p = DEFAULTS;
    p.jitter_pct = 0;
    /* exhausted by age: the next attempt would come after 24 h */
    assert_int_equal(-1, retry_next_ms(&p, 10, 86400000 - 1000, -1, 0.5));
    assert_int_equal(7200000, retry_next_ms(&p, 10, 86400000 - 7200000, -1, 0.5));
    /* exhausted by attempts */
    p.max_attempts = 3;
    assert_int_equal(60000, retry_next_ms(&p, 2, 0, -1, 0.5));
    assert_int_equal(-1, retry_next_ms(&p, 3, 0, -1, 0.5));
    p.max_attempts = 0;
    /* Retry-After: never sooner than asked, capped at the longest delay */
    assert_int_equal(90000, retry_next_ms(&p, 1, 0, 90000, 0.5));
    assert_int_equal(30000, retry_next_ms(&p, 1, 0, 1000, 0.5));
    assert_int_equal(7200000, retry_next_ms(&p, 1, 0, 48LL * 3600 * 1000, 0.5));
    /* compressed clock: the schedule shrinks, Retry-After stays real time (capped by the
     * compressed maximum) */
    p.time_compression = 100;
    assert_int_equal(300, retry_next_ms(&p, 1, 0, -1, 0.5));
    assert_int_equal(2000, retry_next_ms(&p, 1, 0, 2000, 0.5));
    assert_int_equal(72000, retry_next_ms(&p, 1, 0, 10000000, 0.5));
    assert_int_equal(-1, retry_next_ms(&p, 1, 864000, -1, 0.5));
}

static void test_classify(void **state) {
    (void)state;
    static const struct {
        int answered;
        long status;
        retry_class want;
    } table[] = {
        {0, 0, RETRY_AGAIN},       {1, 200, RETRY_DONE},      {1, 202, RETRY_DONE},
        {1, 204, RETRY_DONE},      {1, 301, RETRY_PERMANENT}, {1, 302, RETRY_PERMANENT},
        {1, 400, RETRY_PERMANENT}, {1, 401, RETRY_AGAIN},     {1, 403, RETRY_AGAIN},
        {1, 404, RETRY_PERMANENT},
        {1, 408, RETRY_AGAIN},     {1, 410, RETRY_PERMANENT}, {1, 413, RETRY_PERMANENT},
        {1, 429, RETRY_AGAIN},     {1, 500, RETRY_AGAIN},     {1, 502, RETRY_AGAIN},
        {1, 503, RETRY_AGAIN},     {1, 599, RETRY_AGAIN},     {0, 503, RETRY_AGAIN},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        assert_int_equal(table[i].want, retry_classify(table[i].answered, table[i].status));
}

/* ---- Retry-After ------------------------------------------------------------------------------- */

static void test_retry_after_parsing(void **state) {
    (void)state;
    const int64_t now = 1445412480000LL; /* Wed, 21 Oct 2015 07:28:00 GMT */
    static const struct {
        const char *value;
        int rc;
        int64_t ms;
    } table[] = {
        {"120", 0, 120000},
        {"  5 \r\n", 0, 5000},
        {"0", 0, 0},
        {"Wed, 21 Oct 2015 07:28:30 GMT", 0, 30000},        /* IMF-fixdate */
        {"Wednesday, 21-Oct-15 07:29:00 GMT", 0, 60000},    /* RFC 850 */
        {"Wed Oct 21 07:28:10 2015", 0, 10000},             /* asctime */
        {"Wed, 21 Oct 2015 07:00:00 GMT", 0, 0},            /* in the past: now */
        {"99999999999999999999", 0, 366LL * 24 * 3600 * 1000}, /* clamped, no overflow */
        {"", -1, 0},
        {"-5", -1, 0},
        {"1.5", -1, 0},
        {"soon", -1, 0},
        {"Wed, 21 Oct 2015 07:28:30 CET", -1, 0},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        int64_t ms = -7;
        int rc = retry_parse_after(table[i].value, now, &ms);
        assert_int_equal(table[i].rc, rc);
        if (rc == 0) assert_int_equal(table[i].ms, ms);
    }
}

/* ---- the circuit breaker ----------------------------------------------------------------------- */

static void test_breaker_state_machine(void **state) {
    (void)state;
    breaker *b = breaker_new(3, 1000);
    assert_non_null(b);
    assert_int_equal(BREAKER_CLOSED, breaker_get_state(b));
    assert_int_equal(-1, breaker_permits(b, 0));
    /* failures below the threshold, then a success: the count starts again */
    breaker_on_failure(b, 10);
    breaker_on_failure(b, 20);
    breaker_on_success(b);
    assert_int_equal(0, breaker_failures(b));
    breaker_on_failure(b, 30);
    breaker_on_failure(b, 40);
    assert_int_equal(BREAKER_CLOSED, breaker_get_state(b));
    breaker_on_failure(b, 50); /* third consecutive: open */
    assert_int_equal(BREAKER_OPEN, breaker_get_state(b));
    assert_int_equal(0, breaker_permits(b, 50));
    assert_int_equal(0, breaker_permits(b, 1049));
    /* a late success of a request started before it opened does not close it */
    breaker_on_success(b);
    assert_int_equal(BREAKER_OPEN, breaker_get_state(b));
    /* cool-down over: one probe */
    assert_int_equal(1, breaker_permits(b, 1050));
    breaker_on_start(b, 1050);
    assert_int_equal(BREAKER_HALF_OPEN, breaker_get_state(b));
    assert_int_equal(0, breaker_permits(b, 1051)); /* nothing else while the probe is out */
    /* the probe fails: open again, for a new cool-down from now */
    breaker_on_failure(b, 1100);
    assert_int_equal(BREAKER_OPEN, breaker_get_state(b));
    assert_int_equal(0, breaker_permits(b, 2099));
    assert_int_equal(1, breaker_permits(b, 2100));
    breaker_on_start(b, 2100);
    breaker_on_success(b); /* the probe succeeds: closed */
    assert_int_equal(BREAKER_CLOSED, breaker_get_state(b));
    assert_int_equal(-1, breaker_permits(b, 2101));
    assert_int_equal(0, breaker_failures(b));
    assert_string_equal("half_open", breaker_state_name(BREAKER_HALF_OPEN));
    breaker_destroy(b);
    breaker_destroy(NULL);
}

static void test_breaker_starts_only_when_permitted(void **state) {
    (void)state;
    breaker *b = breaker_new(1, 500);
    breaker_on_failure(b, 0);
    breaker_on_start(b, 100); /* not yet permitted: stays open, no probe */
    assert_int_equal(BREAKER_OPEN, breaker_get_state(b));
    assert_int_equal(1, breaker_permits(b, 500));
    breaker_destroy(b);
}

/* ---- email ------------------------------------------------------------------------------------- */

static void test_mail_format(void **state) {
    (void)state;
    const char *to[] = {"soc@example.com", "oncall@example.com"};
    const char *body =
        "{\"schema_version\":1,\"payment_id\":\"6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f\","
        "\"decision\":\"block\",\"score\":70,\"reasons\":[{\"code\":\"HIGH_VALUE\",\"severity\":"
        "\"medium\",\"weight\":30,\"message\":\"Amount\\r\\nBcc: evil@example.com\"}],"
        "\"merchant_id\":\"m1\\r\\nX-Injected: 1\",\"amount\":\"6000.00\",\"currency\":\"EUR\","
        "\"alert_id\":\"0b8f6f2e-5a3c-5d7e-9a1b-2c3d4e5f6a7b\"}";
    size_t len = 0;
    char *m = mail_format("fs@example.com", to, 2, "alert.created", "d-1", body, strlen(body),
                          1445412480000LL, &len);
    assert_non_null(m);
    assert_int_equal(strlen(m), len);
    assert_non_null(strstr(m, "Subject: [FraudShield] block alert, score 70: payment "
                              "6f1c2b1e-8a4d-4c3b-9f5e-1a2b3c4d5e6f\r\n"));
    assert_non_null(strstr(m, "To: <soc@example.com>, <oncall@example.com>\r\n"));
    assert_non_null(strstr(m, "Date: Wed, 21 Oct 2015 07:28:00 +0000\r\n"));
    assert_non_null(strstr(m, "\r\n\r\nFraudShield flagged a payment."));
    assert_non_null(strstr(m, "HIGH_VALUE (medium, weight 30)"));
    /* field content can never start a header or a line of its own */
    assert_null(strstr(m, "\nBcc:"));
    assert_null(strstr(m, "\nX-Injected"));
    for (const char *p = m; *p; p++)
        if (*p == '\n') assert_true(p > m && p[-1] == '\r');
    free(m);
    assert_null(mail_format("a@b", to, 1, "alert.created", "d", "[1]", 3, 0, &len));
    assert_null(mail_format("a@b", to, 1, "alert.created", "d", "nope", 4, 0, &len));
    /* a value cut to its field's size is cut at a character boundary (the message is UTF-8):
     * 30 two-byte characters in the 39 bytes of the resolution leave 19 whole ones */
    char resolved[128] = "{\"resolution\":\"", want[128] = "resolved as ";
    for (int i = 0; i < 30; i++) strcat(resolved, "\xc3\xa9");
    strcat(resolved, "\"}");
    for (int i = 0; i < 19; i++) strcat(want, "\xc3\xa9");
    strcat(want, ": payment \r\n");
    m = mail_format("a@b", to, 1, "alert.resolved", "d", resolved, strlen(resolved), 0, &len);
    assert_non_null(m);
    assert_non_null(strstr(m, want));
    free(m);
}

/* ---- retention ------------------------------------------------------------------------------- */

static void test_retention_days_bounds(void **state) {
    (void)state;
    static const struct {
        int64_t days;
        int rc;
    } cases[] = {{0, 0}, {1, -1}, {7, -1}, {RETENTION_MIN_DAYS, 0}, {30, 0}, {3650, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[512] = "";
        assert_int_equal(cases[i].rc, retention_check_days(cases[i].days, err, sizeof err));
        if (cases[i].rc == 0) assert_string_equal("", err);
        else assert_non_null(strstr(err, "retention-days")); /* names the option */
    }
}

/* A full slice stays in its phase (more may be waiting), a short one moves on; in order. */
static void test_retention_phases(void **state) {
    (void)state;
    static const struct {
        retention_phase p;
        int64_t deleted;
        retention_phase want;
    } cases[] = {
        {RETENTION_DELIVERIES, 500, RETENTION_DELIVERIES},
        {RETENTION_DELIVERIES, 499, RETENTION_EVENTS},
        {RETENTION_DELIVERIES, 0, RETENTION_EVENTS},
        {RETENTION_EVENTS, 500, RETENTION_EVENTS},
        {RETENTION_EVENTS, 3, RETENTION_OUTBOX},
        {RETENTION_OUTBOX, 500, RETENTION_OUTBOX},
        {RETENTION_OUTBOX, 0, RETENTION_DONE},
        {RETENTION_DONE, 500, RETENTION_DONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_int_equal(cases[i].want, retention_next_phase(cases[i].p, cases[i].deleted, 500));
}

/* Off (0 days): never due; on: due at once (the first round right after start). */
static void test_retention_due(void **state) {
    (void)state;
    retention *off = retention_new(0, 300, NULL), *on = retention_new(30, 300, NULL);
    assert_non_null(off);
    assert_non_null(on);
    assert_int_equal(INT64_MAX, retention_due_us(off));
    assert_true(retention_due_us(on) < INT64_MAX);
    retention_destroy(off);
    retention_destroy(on);
    retention_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_known_vectors),
        cmocka_unit_test(test_signature_depends_on_every_input),
        cmocka_unit_test(test_signature_v2_known_vectors),
        cmocka_unit_test(test_signature_v2_binds_delivery_and_event),
        cmocka_unit_test(test_backoff_schedule_table),
        cmocka_unit_test(test_backoff_default_covers_a_day),
        cmocka_unit_test(test_backoff_jitter_bounds),
        cmocka_unit_test(test_backoff_limits_and_retry_after),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_retry_after_parsing),
        cmocka_unit_test(test_breaker_state_machine),
        cmocka_unit_test(test_breaker_starts_only_when_permitted),
        cmocka_unit_test(test_mail_format),
        cmocka_unit_test(test_retention_days_bounds),
        cmocka_unit_test(test_retention_phases),
        cmocka_unit_test(test_retention_due),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
