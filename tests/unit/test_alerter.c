/* Unit tests for the alerter's pure parts: signatures, the retry schedule, Retry-After, the
 * circuit breaker, result classification, the email form, retention's bounds and phases, the
 * webhook address guard (webhook-deny-networks). */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <cmocka.h>

#include "breaker.h"
#include "delivery.h"
#include "mail.h"
#include "netguard.h"
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

/* ---- the webhook address guard ------------------------------------------------------------------ */

/* Lists that parse, and lists refused with a message naming the option and saying what is wrong. */
static void test_netguard_parse(void **state) {
    (void)state;
    static const struct {
        const char *list, *err; /* err NULL: parses */
    } cases[] = {
        {NETGUARD_DEFAULT, NULL},
        {"", NULL},
        {" \t", NULL},
        {"10.0.0.0/8", NULL},
        {" 127.0.0.0/8 , ::1/128 ", NULL},
        {"0.0.0.0/0", NULL},
        {"::/0", NULL},
        {"192.0.2.1/32,2001:db8::1/128", NULL},
        {"::ffff:10.0.0.0/104", NULL},
        {"10.0.0.0/33", "\"10.0.0.0/33\": the prefix length must be 0..32"},
        {"::/129", "\"::/129\": the prefix length must be 0..128"},
        {"10.0.0.0/", "0..32"},
        {"10.0.0.0/-8", "0..32"},
        {"10.0.0.0/+8", "0..32"},
        {"10.0.0.0/ 8", "0..32"},
        {"10.0.0.0/1000", "0..32"},
        {"10.1.0.0/8", "host bits set after the prefix length (the network is 10.0.0.0/8)"},
        {"169.254.169.254/16", "the network is 169.254.0.0/16"},
        {"fe80::1/10", "the network is fe80::/10"},
        {"10.0.0.0", "\"10.0.0.0\": no /prefix-length"},
        {"fd00:ec2::254", "no /prefix-length"},
        {"10.0.0.0/8,,::1/128", "an empty entry"},
        {"10.0.0.0/8,", "an empty entry"},
        {",10.0.0.0/8", "an empty entry"},
        {"bogus/8", "\"bogus/8\": not an IPv4 or IPv6 address"},
        {"010.0.0.0/8", "not an IPv4 or IPv6 address"}, /* octal or decimal? neither */
        {"10.0/16", "not an IPv4 or IPv6 address"},
        {"fe80::1%eth0/64", "not an IPv4 or IPv6 address"},
        {"[::1]/128", "not an IPv4 or IPv6 address"},
        {"10.0.0.0/8 192.168.0.0/16", "0..32"}, /* blanks do not separate entries */
        {"10.0.0.0/8;192.168.0.0/16", "0..32"},
        {"1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc:dddd:eeee/128", "too long"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[256] = "";
        netguard *g = netguard_new(cases[i].list, err, sizeof err);
        if (!cases[i].err) {
            if (!g) fail_msg("\"%s\" refused: %s", cases[i].list, err);
            netguard_destroy(g);
            continue;
        }
        if (g) fail_msg("\"%s\" accepted", cases[i].list);
        if (strncmp(err, "webhook-deny-networks: ", 23) != 0 || !strstr(err, cases[i].err))
            fail_msg("\"%s\": message \"%s\", expected \"%s\"", cases[i].list, err, cases[i].err);
    }
    netguard_destroy(NULL);
}

/* addr (IPv4 or IPv6 text) as the sockaddr libcurl hands the open-socket callback. */
static socklen_t sockaddr_of(const char *addr, struct sockaddr_storage *ss) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return sizeof *v4;
    }
    assert_int_equal(1, inet_pton(AF_INET6, addr, &v6->sin6_addr));
    v6->sin6_family = AF_INET6;
    return sizeof *v6;
}

static void test_netguard_match(void **state) {
    (void)state;
    static const struct {
        const char *list, *addr;
        bool denied;
    } cases[] = {
        /* the default: metadata services, this host, link-local, multicast, reserved */
        {NETGUARD_DEFAULT, "169.254.169.254", true},
        {NETGUARD_DEFAULT, "169.254.0.0", true},
        {NETGUARD_DEFAULT, "169.254.255.255", true},
        {NETGUARD_DEFAULT, "169.253.255.255", false},
        {NETGUARD_DEFAULT, "169.255.0.0", false},
        {NETGUARD_DEFAULT, "0.0.0.0", true},
        {NETGUARD_DEFAULT, "0.255.255.255", true},
        {NETGUARD_DEFAULT, "1.0.0.0", false},
        {NETGUARD_DEFAULT, "100.100.100.200", true},
        {NETGUARD_DEFAULT, "100.100.100.201", false},
        {NETGUARD_DEFAULT, "224.0.0.1", true},
        {NETGUARD_DEFAULT, "239.255.255.255", true},
        {NETGUARD_DEFAULT, "240.0.0.1", true},
        {NETGUARD_DEFAULT, "255.255.255.255", true},
        {NETGUARD_DEFAULT, "223.255.255.255", false},
        {NETGUARD_DEFAULT, "127.0.0.1", false}, /* loopback and private ranges: allowed */
        {NETGUARD_DEFAULT, "10.1.2.3", false},
        {NETGUARD_DEFAULT, "192.168.1.1", false},
        {NETGUARD_DEFAULT, "93.184.216.34", false},
        {NETGUARD_DEFAULT, "::", true},
        {NETGUARD_DEFAULT, "::1", false},
        {NETGUARD_DEFAULT, "fe80::1", true},
        {NETGUARD_DEFAULT, "febf:ffff::1", true},
        {NETGUARD_DEFAULT, "fec0::1", false},
        {NETGUARD_DEFAULT, "ff02::1", true},
        {NETGUARD_DEFAULT, "fd00:ec2::254", true},
        {NETGUARD_DEFAULT, "fd00:ec2::253", false},
        {NETGUARD_DEFAULT, "2001:db8::1", false},
        /* IPv4-mapped IPv6: checked as the IPv4 address it reaches */
        {NETGUARD_DEFAULT, "::ffff:169.254.169.254", true},
        {NETGUARD_DEFAULT, "::ffff:0.0.0.0", true},
        {NETGUARD_DEFAULT, "::ffff:127.0.0.1", false},
        {"127.0.0.0/8", "::ffff:127.0.0.1", true},
        {"127.0.0.0/8", "127.255.255.255", true},
        {"127.0.0.0/8", "128.0.0.0", false},
        {"127.0.0.0/8", "::1", false},
        {"::ffff:10.0.0.0/104", "10.1.2.3", true}, /* a mapped entry is the IPv4 network 10/8 */
        {"::ffff:10.0.0.0/104", "::ffff:10.1.2.3", true},
        {"::ffff:10.0.0.0/104", "11.0.0.0", false},
        /* NAT64's well-known prefix: denied as itself or as the IPv4 address it embeds */
        {NETGUARD_DEFAULT, "64:ff9b::169.254.169.254", true},
        {NETGUARD_DEFAULT, "64:ff9b::a9fe:a9fe", true},
        {NETGUARD_DEFAULT, "64:ff9b::8.8.8.8", false},
        {"127.0.0.0/8", "64:ff9b::127.0.0.1", true},
        {"64:ff9b::/96", "64:ff9b::8.8.8.8", true},
        {"127.0.0.0/8", "64:ff9c::127.0.0.1", false},
        {"127.0.0.0/8", "64:ff9b:1::127.0.0.1", false},
        /* prefix 0: everything of its family, nothing of the other */
        {"0.0.0.0/0", "8.8.8.8", true},
        {"0.0.0.0/0", "::ffff:8.8.8.8", true},
        {"0.0.0.0/0", "::1", false},
        {"::/0", "2001:db8::1", true},
        {"::/0", "8.8.8.8", false},
        {"::/0", "::ffff:8.8.8.8", false},
        /* full length: that address only */
        {"192.0.2.1/32", "192.0.2.1", true},
        {"192.0.2.1/32", "192.0.2.0", false},
        {"192.0.2.1/32", "192.0.2.2", false},
        {"2001:db8::1/128", "2001:db8::1", true},
        {"2001:db8::1/128", "2001:db8::", false},
        {"2001:db8::1/128", "2001:db8::2", false},
        /* prefixes that end inside a byte */
        {"10.128.0.0/9", "10.127.255.255", false},
        {"10.128.0.0/9", "10.128.0.0", true},
        {"10.128.0.0/9", "10.255.255.255", true},
        {"2001:db8:8000::/33", "2001:db8:7fff:ffff::1", false},
        {"2001:db8:8000::/33", "2001:db8:8000::1", true},
        {"172.16.0.0/12", "172.31.255.255", true},
        {"172.16.0.0/12", "172.32.0.0", false},
        {"fc00::/7", "fdff::1", true},
        {"fc00::/7", "fe00::1", false},
        /* the empty list denies nothing */
        {"", "169.254.169.254", false},
        {"", "::", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[256];
        struct sockaddr_storage ss;
        socklen_t len = sockaddr_of(cases[i].addr, &ss);
        netguard *g = netguard_new(cases[i].list, err, sizeof err);
        assert_non_null(g);
        if (netguard_denies(g, (struct sockaddr *)&ss, len) != cases[i].denied)
            fail_msg("%s in \"%s\": expected %s", cases[i].addr, cases[i].list,
                     cases[i].denied ? "denied" : "allowed");
        if (len > 8) assert_false(netguard_denies(g, (struct sockaddr *)&ss, len - 1)); /* truncated */
        netguard_destroy(g);
    }
}

/* The text logged is the address checked: a mapped one as IPv4; another family is named. */
static void test_netguard_addr_text(void **state) {
    (void)state;
    static const struct {
        const char *addr, *want;
    } cases[] = {
        {"169.254.169.254", "169.254.169.254"},
        {"::ffff:169.254.169.254", "169.254.169.254"},
        {"fd00:ec2::254", "fd00:ec2::254"},
        {"::", "::"},
    };
    char out[NETGUARD_ADDR_MAX], err[128];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sockaddr_of(cases[i].addr, &ss);
        netguard_addr_text((struct sockaddr *)&ss, len, out, sizeof out);
        assert_string_equal(cases[i].want, out);
    }
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    netguard *all = netguard_new("0.0.0.0/0,::/0", err, sizeof err);
    assert_non_null(all);
    assert_false(netguard_denies(all, (struct sockaddr *)&un, sizeof un)); /* the caller decides */
    netguard_addr_text((struct sockaddr *)&un, sizeof un, out, sizeof out);
    assert_string_equal("family 1", out);
    netguard_destroy(all);
}

/* What `subscriptions add` refuses: a literal address host inside the list, however libcurl would
 * read it (brackets, mapped, numeric forms); a name is not resolved there. */
static void test_netguard_url(void **state) {
    (void)state;
    static const struct {
        const char *list, *url, *host; /* host NULL: the url has none */
        bool denied;
    } cases[] = {
        {NETGUARD_DEFAULT, "https://169.254.169.254/latest/meta-data/", "169.254.169.254", true},
        {NETGUARD_DEFAULT, "http://169.254.169.254:80/", "169.254.169.254", true},
        {NETGUARD_DEFAULT, "https://user:pw@169.254.169.254/", "169.254.169.254", true},
        {NETGUARD_DEFAULT, "https://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254", true},
        {NETGUARD_DEFAULT, "https://[::ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe", true},
        {NETGUARD_DEFAULT, "https://[fd00:ec2::254]/", "fd00:ec2::254", true},
        {NETGUARD_DEFAULT, "https://2852039166/", "169.254.169.254", true}, /* one decimal number */
        {NETGUARD_DEFAULT, "https://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254", true},
        {NETGUARD_DEFAULT, "https://0/", "0.0.0.0", true},
        {NETGUARD_DEFAULT, "https://100.100.100.200/", "100.100.100.200", true},
        {NETGUARD_DEFAULT, "https://127.0.0.1:8443/hook", "127.0.0.1", false},
        {NETGUARD_DEFAULT, "https://[::1]:8443/hook", "::1", false},
        {NETGUARD_DEFAULT, "https://soc.example.com/hooks/fraud", "soc.example.com", false},
        {NETGUARD_DEFAULT, "https://metadata.google.internal/", "metadata.google.internal", false},
        {"127.0.0.0/8", "http://127.0.0.1:8443/hook", "127.0.0.1", true},
        {"127.0.0.0/8", "http://[::ffff:127.0.0.1]:8443/hook", "::ffff:127.0.0.1", true},
        {"127.0.0.0/8", "http://0x7f.1:8443/hook", "127.0.0.1", true},
        {"127.0.0.0/8", "http://localhost:8443/hook", "localhost", false},
        {"", "https://169.254.169.254/", "169.254.169.254", false},
        {NETGUARD_DEFAULT, "not a url", NULL, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[256], host[256] = "";
        netguard *g = netguard_new(cases[i].list, err, sizeof err);
        assert_non_null(g);
        int rc = netguard_url_host(cases[i].url, host, sizeof host);
        if (cases[i].host) {
            assert_int_equal(0, rc);
            assert_string_equal(cases[i].host, host);
        } else {
            assert_int_equal(-1, rc);
        }
        if ((rc == 0 && netguard_host_denied(g, host, NULL)) != cases[i].denied)
            fail_msg("%s with \"%s\": expected %s", cases[i].url, cases[i].list,
                     cases[i].denied ? "denied" : "allowed");
        netguard_destroy(g);
    }
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
        cmocka_unit_test(test_netguard_parse),
        cmocka_unit_test(test_netguard_match),
        cmocka_unit_test(test_netguard_addr_text),
        cmocka_unit_test(test_netguard_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
