/* Unit tests for the small common modules: cfg, fsutil, pii, metrics, kafka's poll clock, the
 * retention rounds (sweep). */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "app.h"
#include "cfg.h"
#include "log.h"
#include "fsutil.h"
#include "kafka.h"
#include "metrics.h"
#include "pii.h"
#include "sweep.h"

typedef struct test_conf {
    char *name;
    int64_t port;
    bool flag;
    char *secret;
} test_conf;

static const cfg_opt TEST_OPTS[] = {
    {"name", "FS_TEST_NAME", CFG_STRING, "dflt", 1, 8, offsetof(test_conf, name), "a name", false},
    {"port", "FS_TEST_PORT", CFG_INT, "8000", 1, 65535, offsetof(test_conf, port), "a port", false},
    {"flag", "FS_TEST_FLAG", CFG_BOOL, "false", 0, 0, offsetof(test_conf, flag), "a flag", false},
    {"secret", "FS_TEST_SECRET", CFG_STRING, "", 0, 0, offsetof(test_conf, secret), "s", true},
    {0},
};

static cfg_result parse(test_conf *c, cfg_props *p, char *err, int argc, char **argv) {
    memset(c, 0, sizeof *c);
    memset(p, 0, sizeof *p);
    return cfg_parse(TEST_OPTS, c, p, argc, argv, "t", "test", err, 256);
}

static void test_cfg_precedence(void **state) {
    (void)state;
    test_conf c;
    cfg_props p;
    char err[256];
    setenv("FS_TEST_PORT", "9000", 1);
    setenv("KAFKA_SECURITY_PROTOCOL", "ssl", 1);
    char *argv[] = {"t", "--name=abc", "--flag", "-X", "linger.ms=7", NULL};
    assert_int_equal(parse(&c, &p, err, 5, argv), CFG_OK);
    assert_string_equal(c.name, "abc");
    assert_int_equal(c.port, 9000); /* env over default */
    assert_true(c.flag);
    assert_string_equal(cfg_props_get(&p, "linger.ms"), "7");
    assert_string_equal(cfg_props_get(&p, "security.protocol"), "ssl");
    cfg_free(TEST_OPTS, &c, &p);
    char *argv2[] = {"t", "--port", "1234", NULL};
    assert_int_equal(parse(&c, &p, err, 3, argv2), CFG_OK);
    assert_int_equal(c.port, 1234); /* command line over env */
    cfg_free(TEST_OPTS, &c, &p);
    unsetenv("FS_TEST_PORT");
    unsetenv("KAFKA_SECURITY_PROTOCOL");
}

static void test_cfg_errors(void **state) {
    (void)state;
    struct { char *arg; const char *expect; } rows[] = {
        {"--port=0", "not an integer in [1, 65535]"},
        {"--port=70000", "not an integer in [1, 65535]"},
        {"--port=12x", "not an integer"},
        {"--flag=maybe", "not a boolean"},
        {"--name=waytoolongname", "longer than 8"},
        {"--name=", "name (--name=): must not be empty"},
        {"--nope=1", "unknown option --nope"},
        {"stray", "unexpected argument"},
        {"-X", "-X needs"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        test_conf c;
        cfg_props p;
        char err[256] = "";
        char *argv[] = {"t", rows[i].arg, NULL};
        assert_int_equal(parse(&c, &p, err, 2, argv), CFG_ERROR);
        if (!strstr(err, rows[i].expect)) fail_msg("row %zu: \"%s\" lacks \"%s\"", i, err, rows[i].expect);
        cfg_free(TEST_OPTS, &c, &p);
    }
}

/* app_configure: the table's log-level option sets the level; a bad level is a config error. */
typedef struct app_conf {
    char *log_level;
    int64_t n;
} app_conf;

static const cfg_opt APP_OPTS[] = {
    {"log-level", "FS_TEST_LOG_LEVEL", CFG_STRING, "info", 1, 16, offsetof(app_conf, log_level),
     "level", false},
    {"n", "FS_TEST_N", CFG_INT, "1", 0, 9, offsetof(app_conf, n), "n", false},
    {0},
};

static void test_app_configure(void **state) {
    (void)state;
    struct { char *arg; cfg_result want; log_level level; } rows[] = {
        {"--log-level=warn", CFG_OK, LOG_WARN},
        {"--log-level=debug", CFG_OK, LOG_DEBUG},
        {"--log-level=loud", CFG_ERROR, LOG_INFO},
        {"--n=10", CFG_ERROR, LOG_INFO},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        app_conf c = {0};
        cfg_props p = {0};
        char *argv[] = {"t", rows[i].arg, NULL};
        cfg_result r = app_configure("test", APP_OPTS, &c, &p, 2, argv, "t", "test");
        if (r != rows[i].want) fail_msg("row %zu: result %d, want %d", i, (int)r, (int)rows[i].want);
        if (r == CFG_OK && !log_enabled(rows[i].level)) fail_msg("row %zu: level not set", i);
        if (r == CFG_OK && rows[i].level == LOG_WARN && log_enabled(LOG_INFO))
            fail_msg("row %zu: info still enabled at warn", i);
        cfg_free(APP_OPTS, &c, &p);
    }
    log_init("test", LOG_INFO);
}

/* The array literal of a $1::uuid[] parameter: NULLs and wrong lengths left out, {} when empty;
 * a set: sorted, each id once (several labels of one payment in a batch of outcomes gave the
 * statements its id once per label). */
static void test_uuid_array_literal(void **state) {
    (void)state;
    const char *a = "6f1c2d3e-4b5a-4c6d-8e7f-000000000001", *b = "6f1c2d3e-4b5a-4c6d-8e7f-000000000002";
    const char *ids[] = {a, NULL, "short", b, a, b, b};
    const char *rev[] = {b, a};
    const struct {
        const char *const *ids;
        size_t n;
        const char *want;
    } cases[] = {
        {ids, 0, "{}"},
        {ids, 1, "{6f1c2d3e-4b5a-4c6d-8e7f-000000000001}"},
        {ids, 3, "{6f1c2d3e-4b5a-4c6d-8e7f-000000000001}"},
        {ids, 4, "{6f1c2d3e-4b5a-4c6d-8e7f-000000000001,6f1c2d3e-4b5a-4c6d-8e7f-000000000002}"},
        {ids, 7, "{6f1c2d3e-4b5a-4c6d-8e7f-000000000001,6f1c2d3e-4b5a-4c6d-8e7f-000000000002}"},
        {rev, 2, "{6f1c2d3e-4b5a-4c6d-8e7f-000000000001,6f1c2d3e-4b5a-4c6d-8e7f-000000000002}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = fs_uuid_array_literal(cases[i].ids, cases[i].n);
        assert_non_null(got);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
}

static void test_uuid(void **state) {
    (void)state;
    char a[37], b[37];
    assert_int_equal(fs_uuid_v4(a), 0);
    assert_true(fs_uuid_valid(a));
    assert_int_equal(a[14], '4');
    /* RFC 4122 appendix: v5 of "www.example.com" in the DNS namespace */
    assert_int_equal(fs_uuid_v5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "www.example.com", 15, b), 0);
    assert_string_equal(b, "2ed6657d-e927-568b-95e1-2665a8aea6a2");
    assert_false(fs_uuid_valid("2ed6657d-e927-568b-95e1-2665a8aea6a"));
    assert_false(fs_uuid_valid("2ed6657d-e927-568b-95e1x2665a8aea6a2"));
    assert_int_equal(fs_uuid_v5("not-a-uuid", "x", 1, b), -1);
}

static void test_time(void **state) {
    (void)state;
    struct { const char *in; int ok; int64_t ms; } rows[] = {
        {"1970-01-01T00:00:00Z", 1, 0},
        {"2018-04-01T00:00:31Z", 1, 1522540831000},
        {"2018-04-01T00:00:31.5Z", 1, 1522540831500},
        {"2018-04-01T02:00:31+02:00", 1, 1522540831000},
        {"2018-04-01 00:00:31Z", 1, 1522540831000},
        {"2024-02-29T12:00:00Z", 1, 1709208000000},
        {"2023-02-29T12:00:00Z", 0, 0},
        {"2018-04-01T00:00:31", 0, 0},
        {"2018-13-01T00:00:31Z", 0, 0},
        {"2018-04-01T24:00:00Z", 0, 0},
        {"garbage", 0, 0},
        {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t ms = -1;
        int rc = fs_time_parse_rfc3339(rows[i].in, &ms);
        if ((rc == 0) != rows[i].ok) fail_msg("row %zu (%s): rc %d", i, rows[i].in, rc);
        if (rows[i].ok) assert_int_equal(ms, rows[i].ms);
    }
    char out[25];
    fs_time_format_rfc3339(1522540831500, out);
    assert_string_equal(out, "2018-04-01T00:00:31.500Z");
}

static pii *make_pii(size_t cache) {
    char err[128];
    pii_params prm = {.t_cost = 1, .m_cost_kib = 64, .cache_entries = cache};
    pii *pi = pii_new("0123456789abcdef0123", 20, &prm, err, sizeof err);
    assert_non_null(pi);
    return pi;
}

static void test_pii_deterministic_and_normalized(void **state) {
    (void)state;
    pii *pi = make_pii(4), *other;
    char a[65], b[65], c[65], err[128];
    assert_int_equal(pii_digest(pi, PII_EMAIL, "Alice@Example.com ", a, err, sizeof err), 0);
    assert_int_equal(pii_digest(pi, PII_EMAIL, "alice@example.com", b, err, sizeof err), 0);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 64);
    assert_null(strstr(a, "alice"));
    assert_int_equal(pii_digest(pi, PII_DEVICE, "alice@example.com", c, err, sizeof err), 0);
    assert_string_not_equal(a, c); /* kinds are salted apart */
    assert_int_equal(pii_digest(pi, PII_IP, "2001:DB8::1", a, err, sizeof err), 0);
    assert_int_equal(pii_digest(pi, PII_IP, "2001:db8:0::1", b, err, sizeof err), 0);
    assert_string_equal(a, b);
    assert_int_equal(pii_digest(pi, PII_IP, "not-an-ip", c, err, sizeof err), -1);
    /* another secret gives another digest: the secret is what makes digests unguessable */
    pii_params prm = {.t_cost = 1, .m_cost_kib = 64, .cache_entries = 0};
    other = pii_new("another secret of 20b", 20, &prm, err, sizeof err);
    assert_int_equal(pii_digest(other, PII_IP, "2001:db8::1", c, err, sizeof err), 0);
    assert_string_not_equal(a, c);
    pii_destroy(other);
    pii_destroy(pi);
}

static void test_pii_cache_lru(void **state) {
    (void)state;
    pii *pi = make_pii(2);
    char d1[65], d1b[65], tmp[65], err[128];
    uint64_t hits, misses;
    assert_int_equal(pii_digest(pi, PII_CARD, "card-1", d1, err, sizeof err), 0);
    assert_int_equal(pii_digest(pi, PII_CARD, "card-1", d1b, err, sizeof err), 0);
    assert_string_equal(d1, d1b);
    pii_stats(pi, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 1);
    pii_digest(pi, PII_CARD, "card-2", tmp, err, sizeof err);
    pii_digest(pi, PII_CARD, "card-3", tmp, err, sizeof err); /* evicts card-1 (capacity 2) */
    pii_digest(pi, PII_CARD, "card-1", d1b, err, sizeof err);
    pii_stats(pi, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 4);
    assert_string_equal(d1, d1b); /* recomputed, same digest */
    pii_digest(pi, PII_CARD, "card-1", d1b, err, sizeof err);
    pii_stats(pi, &hits, &misses);
    assert_int_equal(hits, 2);
    pii_destroy(pi);
}

static void test_pii_apply_wipes_raw(void **state) {
    (void)state;
    pii *pi = make_pii(8);
    pay_pii raw = {0};
    pay_payment p = {0};
    char err[128];
    strcpy(raw.email, "bob@example.org");
    strcpy(raw.ip_address, "192.0.2.1");
    assert_int_equal(pii_apply(pi, &raw, &p, err, sizeof err), 0);
    assert_int_equal(strlen(p.email_digest), 64);
    assert_int_equal(strlen(p.ip_digest), 64);
    assert_string_equal(p.device_id_digest, "");
    assert_string_equal(raw.email, "");
    assert_string_equal(raw.ip_address, "");
    pii_destroy(pi);
}

static void test_metrics_render(void **state) {
    (void)state;
    metrics *m = metrics_new();
    metric *c = metrics_counter(m, "fs_requests_total", "Requests", "route,status");
    metric *g = metrics_gauge(m, "fs_lag", "Lag", NULL);
    const double b[] = {0.1, 1};
    metric *h = metrics_histogram(m, "fs_latency_seconds", "Latency", "route", b, 2);
    metric_add(c, "payments,202", 1);
    metric_add(c, "payments,202", 2);
    metric_add(c, "a\"b,500", 1);
    metric_set(g, NULL, 42);
    metric_observe(h, "payments", 0.05);
    metric_observe(h, "payments", 0.5);
    metric_observe(h, "payments", 5);
    assert_true(metric_value(c, "payments,202") == 3);
    size_t len;
    char *text = metrics_render(m, &len);
    assert_non_null(text);
    const char *want[] = {
        "# TYPE fs_requests_total counter\n",
        "fs_requests_total{route=\"payments\",status=\"202\"} 3\n",
        "fs_requests_total{route=\"a\\\"b\",status=\"500\"} 1\n",
        "fs_lag 42\n",
        "fs_latency_seconds_bucket{route=\"payments\",le=\"0.1\"} 1\n",
        "fs_latency_seconds_bucket{route=\"payments\",le=\"1\"} 2\n",
        "fs_latency_seconds_bucket{route=\"payments\",le=\"+Inf\"} 3\n",
        "fs_latency_seconds_sum{route=\"payments\"} 5.5",
        "fs_latency_seconds_count{route=\"payments\"} 3\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i])) fail_msg("missing %s in:\n%s", want[i], text);
    free(text);
    metrics_destroy(m);
}

/* fs_int_format writes what printf("%" PRId64) writes, at the edges and around every power of 10. */
/* A secret file's mode: group read is fine when the group is one of the process's (Kubernetes'
 * secret volumes: root:<fsGroup> 0440), never group write nor other users' bits. */
static void test_secret_mode_exposure(void **state) {
    (void)state;
    const gid_t mine[] = {10001, 20};
    assert_null(fs_secret_mode_exposure(0600, 0, mine, 2));
    assert_null(fs_secret_mode_exposure(0400, 4242, mine, 2));
    assert_null(fs_secret_mode_exposure(0440, 10001, mine, 2)); /* the k8s mount: was warned */
    assert_null(fs_secret_mode_exposure(0640, 20, mine, 2));    /* a supplementary group */
    assert_string_equal(fs_secret_mode_exposure(0440, 4242, mine, 2),
                        "readable by its group, which is not one of this process's");
    assert_string_equal(fs_secret_mode_exposure(0660, 10001, mine, 2), "writable by its group");
    assert_string_equal(fs_secret_mode_exposure(0420, 10001, mine, 2), "writable by its group");
    assert_string_equal(fs_secret_mode_exposure(0444, 10001, mine, 2), "open to other users");
    assert_string_equal(fs_secret_mode_exposure(0602, 0, mine, 2), "open to other users");
    assert_string_equal(fs_secret_mode_exposure(0440, 10001, NULL, 0),
                        "readable by its group, which is not one of this process's");

    /* A file of ours (its group is our effective one) against the process's real groups. */
    char path[] = "/tmp/fs_test_secret.XXXXXX";
    struct stat st;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(fchown(fd, (uid_t)-1, getegid()), 0);
    assert_int_equal(fchmod(fd, 0440), 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_null(fs_secret_file_exposure(&st));
    assert_int_equal(fchmod(fd, 0460), 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_string_equal(fs_secret_file_exposure(&st), "writable by its group");
    assert_int_equal(fchmod(fd, 0604), 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_string_equal(fs_secret_file_exposure(&st), "open to other users");
    close(fd);
    unlink(path);
}

static void test_int_format(void **state) {
    (void)state;
    int64_t cases[64 + 4];
    size_t n = 0;
    cases[n++] = 0;
    cases[n++] = INT64_MAX;
    cases[n++] = INT64_MIN;
    cases[n++] = INT64_MIN + 1;
    for (int64_t p = 1; p <= INT64_MAX / 10 && n + 4 <= sizeof cases / sizeof cases[0]; p *= 10) {
        cases[n++] = p;
        cases[n++] = p - 1;
        cases[n++] = -p;
        cases[n++] = -(p + 1);
    }
    for (size_t i = 0; i < n; i++) {
        char got[21], want[32];
        size_t len = fs_int_format(cases[i], got);
        snprintf(want, sizeof want, "%" PRId64, cases[i]);
        assert_string_equal(got, want);
        assert_int_equal(len, strlen(want));
    }
}

/* A removed series is no longer rendered, the others stay; removing an absent one is harmless. */
static void test_metrics_remove(void **state) {
    (void)state;
    metrics *m = metrics_new();
    metric *g = metrics_gauge(m, "fs_model_info", "Model", "version");
    metric_set(g, "a", 1);
    metric_set(g, "b", 1);
    metric_set(g, "c", 1);
    metric_remove(g, "b");
    metric_remove(g, "a");
    metric_remove(g, "zz");
    metric_remove(NULL, "a");
    size_t len;
    char *text = metrics_render(m, &len);
    assert_non_null(text);
    assert_null(strstr(text, "version=\"a\""));
    assert_null(strstr(text, "version=\"b\""));
    assert_non_null(strstr(text, "fs_model_info{version=\"c\"} 1\n"));
    free(text);
    metric_set(g, "a", 1); /* a removed series can come back */
    assert_true(metric_value(g, "a") == 1);
    /* info swaps: the old series goes, the new one is 1; commas cannot split a label value */
    metric_info_swap(g, "a", "v1,x");
    assert_true(metric_value(g, "a") == 0 && metric_value(g, "v1_x") == 1);
    metric_info_swap(g, "v1,x", "v1,x"); /* the same version again: still there */
    assert_true(metric_value(g, "v1_x") == 1);
    metric_info_swap(g, NULL, NULL);
    text = metrics_render(m, &len);
    assert_non_null(strstr(text, "fs_model_info{version=\"v1_x\"} 1\n"));
    assert_null(strstr(text, "version=\"a\""));
    free(text);
    metrics_destroy(m);
}

/* The age of a consumer loop's last poll: 0 before the loop starts, then the time since the last
 * stamp, which every kafka_consumer_poll renews (also when it returns no message). */
static void test_kafka_poll_clock(void **state) {
    (void)state;
    kafka_poll_clock c = {0};
    char err[256];
    assert_true(kafka_poll_age_seconds(&c) == 0);
    kafka_poll_clock_start(&c);
    nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL);
    double before = kafka_poll_age_seconds(&c);
    assert_true(before >= 0.2 && before < 10);
    rd_kafka_conf_t *conf = rd_kafka_conf_new(); /* no brokers: polls return nothing */
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", "unit", err, sizeof err), RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    assert_non_null(rk);
    assert_null(kafka_consumer_poll(rk, 0, &c));
    assert_true(kafka_poll_age_seconds(&c) < before);
    assert_null(kafka_consumer_poll(rk, 0, NULL)); /* no clock: a plain poll */
    rd_kafka_destroy(rk);
}

/* A gap in a partition's offsets is reported even when the broker cannot be asked where the log
 * starts: the offset expected next has moved past it, so it would never be reported later. */
static void test_kafka_gaps_unanswered(void **state) {
    (void)state;
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", err, sizeof err); /* nobody */
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    assert_non_null(rk);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, "payment_outcomes", NULL);
    kafka_gaps *g = kafka_gaps_new();
    kafka_loss l;
    rd_kafka_message_t m = {.rkt = t, .partition = 2, .offset = 5};
    assert_false(kafka_gaps_check(g, rk, &m, &l)); /* nothing expected yet */
    m.offset = 6;
    assert_false(kafka_gaps_check(g, rk, &m, &l)); /* the next one */
    m.offset = 9;
    assert_true(kafka_gaps_check(g, rk, &m, &l)); /* 7 and 8 missing; the query times out */
    assert_int_equal(l.from, 7);
    assert_int_equal(l.earliest, -1);
    assert_int_equal(l.lost, 0);
    m.offset = 10;
    assert_false(kafka_gaps_check(g, rk, &m, &l));
    kafka_gaps_destroy(g);
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
}

/* Which consumer errors mean "this message could not be read, and the next commit may pass it"
 * (an error line consumer_message_error, not a warning): only errors about one message at a known
 * offset. Table-driven; the dev broker cannot corrupt a record batch, so no integration test. */
static void test_kafka_err_unreadable(void **state) {
    (void)state;
    static const struct {
        rd_kafka_resp_err_t err;
        int32_t partition;
        int64_t offset;
        bool unreadable;
    } cases[] = {
        {RD_KAFKA_RESP_ERR__BAD_MSG, 3, 17, true},
        {RD_KAFKA_RESP_ERR__BAD_COMPRESSION, 0, 0, true},
        {RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED, 5, 1000, true},
        {RD_KAFKA_RESP_ERR__BAD_MSG, -1, 17, false},   /* not about one partition */
        {RD_KAFKA_RESP_ERR__BAD_MSG, 3, -1001, false}, /* no offset: nothing to skip */
        {RD_KAFKA_RESP_ERR__PARTITION_EOF, 3, 17, false},
        {RD_KAFKA_RESP_ERR__TRANSPORT, 3, 17, false},
        {RD_KAFKA_RESP_ERR__FATAL, 3, 17, false},
        {RD_KAFKA_RESP_ERR_NO_ERROR, 3, 17, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rd_kafka_message_t m = {.err = cases[i].err, .partition = cases[i].partition,
                                .offset = cases[i].offset};
        if (kafka_err_unreadable(&m) != cases[i].unreadable)
            fail_msg("case %zu (%s, partition %d, offset %lld): expected %d", i,
                     rd_kafka_err2name(cases[i].err), (int)cases[i].partition,
                     (long long)cases[i].offset, cases[i].unreadable);
    }
}

/* The lag of one partition of librdkafka's statistics, table-driven. */
static void test_kafka_stats_partition_lag(void **state) {
    (void)state;
    static const struct {
        const char *part;
        int64_t lag;
    } cases[] = {
        {"{\"desired\":true,\"consumer_lag\":42,\"committed_offset\":58,\"lo_offset\":0,\"hi_offset\":100}", 42},
        {"{\"desired\":false,\"consumer_lag\":42,\"committed_offset\":58,\"lo_offset\":0,\"hi_offset\":100}", 0},
        /* nothing committed (a new group, commits failing): everything the broker holds */
        {"{\"desired\":true,\"consumer_lag\":-1,\"committed_offset\":-1001,\"lo_offset\":0,\"hi_offset\":300}", 300},
        {"{\"desired\":true,\"consumer_lag\":-1,\"committed_offset\":-1001,\"lo_offset\":250,\"hi_offset\":300}", 50},
        {"{\"desired\":false,\"consumer_lag\":-1,\"committed_offset\":-1001,\"lo_offset\":0,\"hi_offset\":300}", 0},
        /* offsets not known yet */
        {"{\"desired\":true,\"consumer_lag\":-1,\"committed_offset\":-1001,\"lo_offset\":-1,\"hi_offset\":-1}", 0},
        {"{\"desired\":true,\"consumer_lag\":-1,\"committed_offset\":-1001,\"lo_offset\":0,\"hi_offset\":0}", 0},
        {"{\"desired\":true}", 0},
        {"{\"desired\":true,\"consumer_lag\":0,\"committed_offset\":300,\"lo_offset\":0,\"hi_offset\":300}", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *part = json_loads(cases[i].part, 0, NULL);
        assert_non_null(part);
        assert_int_equal(kafka_stats_partition_lag(part), cases[i].lag);
        json_decref(part);
    }
}

/* A default or a lock sees the operator's value under librdkafka's other name for the property. */
static void test_kafka_conf_aliases(void **state) {
    (void)state;
    cfg_props props = {0};
    char err[512] = "", v[32];
    size_t vs = sizeof v;
    assert_int_equal(cfg_props_set(&props, "delivery.timeout.ms", "7000"), 0);
    assert_int_equal(cfg_props_set(&props, "queue.buffering.max.ms", "9"), 0);
    rd_kafka_conf_t *conf = kafka_conf_new("127.0.0.1:1", &props, err, sizeof err);
    assert_non_null(conf);
    assert_int_equal(kafka_conf_default(conf, &props, "message.timeout.ms", "5000", err, sizeof err), 0);
    assert_int_equal(rd_kafka_conf_get(conf, "message.timeout.ms", v, &vs), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "7000"); /* not overwritten by the default */
    assert_int_equal(kafka_conf_lock(conf, &props, "linger.ms", "1", err, sizeof err), -1);
    assert_non_null(strstr(err, "not allowed"));
    assert_int_equal(kafka_conf_lock(conf, &props, "queue.buffering.max.ms", "9", err, sizeof err), 0);
    /* librdkafka's other spellings of a locked value are that value */
    assert_int_equal(cfg_props_set(&props, "auto.offset.reset", "smallest"), 0);
    assert_int_equal(kafka_conf_lock(conf, &props, "auto.offset.reset", "earliest", err, sizeof err), 0);
    assert_int_equal(cfg_props_set(&props, "auto.offset.reset", "largest"), 0);
    assert_int_equal(kafka_conf_lock(conf, &props, "auto.offset.reset", "earliest", err, sizeof err), -1);
    rd_kafka_conf_destroy(conf);
    cfg_free(NULL, NULL, &props);
}

/* The producers' guarantee (a 202 means durable): acks=all and idempotence, whatever the
 * operator passes through; a weaker value is refused with the property named. */
static void test_kafka_guarantee_props(void **state) {
    (void)state;
    static const struct {
        const char *name, *value;
        bool allowed;
    } cases[] = {
        {"acks", "all", true},           {"acks", "-1", true},
        {"acks", "1", false},            {"acks", "0", false},
        {"request.required.acks", "1", false},
        {"enable.idempotence", "true", true},
        {"enable.idempotence", "false", false},
        {"linger.ms", "5", true},
        /* every delivery report is awaited; produces in a transaction would all fail */
        {"delivery.report.only.error", "false", true},
        {"delivery.report.only.error", "true", false},
        {"transactional.id", "fs-1", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cfg_props props = {0};
        char err[512] = "";
        assert_int_equal(cfg_props_set(&props, cases[i].name, cases[i].value), 0);
        rd_kafka_conf_t *conf = kafka_conf_new("127.0.0.1:1", &props, err, sizeof err);
        if (cases[i].allowed) {
            assert_non_null(conf);
            rd_kafka_conf_destroy(conf);
        } else {
            assert_null(conf);
            assert_non_null(strstr(err, cases[i].name));
            assert_non_null(strstr(err, "not allowed"));
        }
        cfg_free(NULL, NULL, &props);
    }
    /* With nothing passed, the producer itself runs acks=all (-1) and idempotent. */
    char err[512], v[32];
    rd_kafka_conf_t *conf = kafka_conf_new("127.0.0.1:1", NULL, err, sizeof err);
    assert_non_null(conf);
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_t *rk = kafka_producer_new(conf, NULL, err, sizeof err);
    assert_non_null(rk);
    size_t n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(rk), "enable.idempotence", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "true");
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(rk), "acks", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "-1");
    /* murmur2_random in every producer (one key, one partition, whoever produces it) ... */
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(rk), "partitioner", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "murmur2_random");
    rd_kafka_destroy(rk);
    /* ... unless the operator chose another */
    cfg_props props = {0};
    assert_int_equal(cfg_props_set(&props, "partitioner", "consistent_random"), 0);
    conf = kafka_conf_new("127.0.0.1:1", &props, err, sizeof err);
    assert_non_null(conf);
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rk = kafka_producer_new(conf, &props, err, sizeof err);
    assert_non_null(rk);
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(rk), "partitioner", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "consistent_random");
    rd_kafka_destroy(rk);
    cfg_free(NULL, NULL, &props);
}

/* ---- sweep: retention rounds ----------------------------------------------------------------- */

/* Two phases: phase 0 counts tables a and b, phase 1 table b again (sweep.h). */
static const char *const SW_TABLES[] = {"a", "b"};
static const sweep_phase SW_PHASES[] = {{0, 2}, {1, 1}};
static const sweep_spec SW_SPEC = {"fs_test_deleted_total", "test", SW_TABLES, 2, SW_PHASES, 2, 10};

/* A fake database: rows waiting per phase, each slice takes up to the slice (b: 2 per a row in
 * phase 0); fail_at: the call that fails (0: none); sleep_us per call. */
typedef struct sw_fake {
    int64_t left[2];
    int calls, fail_at, phases_seen[2];
    long sleep_us;
} sw_fake;

static int64_t sw_slice(void *arg, int phase, int days, int slice, int64_t *counts, char *err, size_t n) {
    sw_fake *f = arg;
    assert_int_equal(30, days);
    assert_int_equal(10, slice);
    f->calls++;
    f->phases_seen[phase]++;
    if (f->sleep_us) {
        struct timespec ts = {0, f->sleep_us * 1000};
        nanosleep(&ts, NULL);
    }
    if (f->calls == f->fail_at) return snprintf(err, n, "boom"), -1;
    int64_t took = f->left[phase] < slice ? f->left[phase] : slice;
    f->left[phase] -= took;
    counts[0] = took;
    if (phase == 0) counts[1] = 2 * took;
    return took;
}

/* The series fs_test_deleted_total{table="<table>"} of m, as rendered ("" when absent). */
static bool sw_counted(metrics *m, const char *table, const char *value) {
    size_t len;
    char *text = metrics_render(m, &len), want[128];
    snprintf(want, sizeof want, "fs_test_deleted_total{table=\"%s\"} %s\n", table, value);
    bool ok = text && strstr(text, want);
    if (!ok) print_message("missing %s in:\n%s", want, text ? text : "(null)");
    free(text);
    return ok;
}

/* A full slice stays in its phase (more may be waiting), a short one moves on, in order. */
static void test_sweep_phases(void **state) {
    (void)state;
    static const struct { int p; int64_t taken; int want; } cases[] = {
        {0, 10, 0}, {0, 9, 1}, {0, 0, 1}, {1, 10, 1}, {1, 3, 2}, {2, 10, 2}, {5, 0, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_int_equal(cases[i].want, sweep_next_phase(cases[i].p, 2, cases[i].taken, 10));
}

/* A round takes every phase to its end in one call (enough budget), counts per table, and the
 * next one is due an interval after this one started; retention-days 0 never runs. */
static void test_sweep_round(void **state) {
    (void)state;
    metrics *m = metrics_new();
    sweep *off = sweep_new(&SW_SPEC, 0, 300, NULL), *s = sweep_new(&SW_SPEC, 30, 300, m);
    char err[64] = "";
    sw_fake f = {.left = {25, 7}};
    assert_int_equal(INT64_MAX, sweep_due_us(off));
    assert_int_equal(0, sweep_run(off, sw_slice, &f, 1000, err, sizeof err));
    assert_int_equal(0, f.calls);
    assert_true(sw_counted(m, "a", "0") && sw_counted(m, "b", "0")); /* series from the start */
    int64_t t0 = fs_mono_us();
    assert_true(sweep_due_us(s) <= t0);
    assert_int_equal(0, sweep_run(s, sw_slice, &f, 10000, err, sizeof err));
    assert_int_equal(3, f.phases_seen[0]); /* 10, 10, 5 */
    assert_int_equal(1, f.phases_seen[1]); /* 7 */
    assert_true(sw_counted(m, "a", "25"));
    assert_true(sw_counted(m, "b", "57")); /* 2 per a row, and phase 1's */
    int64_t due = sweep_due_us(s);
    assert_true(due >= t0 + 300 * 1000000LL && due <= fs_mono_us() + 300 * 1000000LL);
    assert_int_equal(0, sweep_run(s, sw_slice, &f, 10000, err, sizeof err)); /* not due: nothing */
    assert_int_equal(4, f.calls);
    sweep_destroy(off);
    sweep_destroy(s);
    metrics_destroy(m);
}

/* The budget ends a call between slices; the round resumes (due at once) where it was. */
static void test_sweep_budget(void **state) {
    (void)state;
    sweep *s = sweep_new(&SW_SPEC, 30, 300, NULL);
    char err[64] = "";
    sw_fake f = {.left = {1000000, 0}, .sleep_us = 2000};
    assert_int_equal(0, sweep_run(s, sw_slice, &f, 20, err, sizeof err));
    assert_true(f.calls >= 1 && f.calls <= 15); /* about 10 slices of 2 ms */
    assert_true(sweep_due_us(s) <= fs_mono_us()); /* more to do */
    int before = f.calls;
    f.left[0] = 5; /* the rest of the backlog: the phase ends, then phase 1 (nothing), round done */
    assert_int_equal(0, sweep_run(s, sw_slice, &f, 1000, err, sizeof err));
    assert_int_equal(before + 2, f.calls);
    assert_int_equal(0, f.phases_seen[1] - 1);
    assert_true(sweep_due_us(s) > fs_mono_us());
    sweep_destroy(s);
}

/* A failed slice abandons the round: -1 with the slice's error, what it deleted before is counted,
 * the next round is due an interval later and starts again at the first phase. */
static void test_sweep_failure(void **state) {
    (void)state;
    metrics *m = metrics_new();
    sweep *s = sweep_new(&SW_SPEC, 30, 1, m);
    char err[64] = "";
    sw_fake f = {.left = {25, 0}, .fail_at = 2};
    assert_int_equal(-1, sweep_run(s, sw_slice, &f, 1000, err, sizeof err));
    assert_string_equal("boom", err);
    assert_true(sw_counted(m, "a", "10"));
    assert_true(sweep_due_us(s) > fs_mono_us() + 500000);
    assert_int_equal(2, f.phases_seen[0]);
    sweep_destroy(s);
    metrics_destroy(m);
}

/* A message longer than a log line's 2 KiB buffer is cut between characters, never inside one: the
 * cut used to leave half a character, and the whole message was replaced by a marker. Every cut
 * position of 2- and 3-byte characters. */
static void test_log_long_utf8(void **state) {
    (void)state;
    int fds[2], saved = dup(STDERR_FILENO);
    log_init("test", LOG_INFO);
    for (int width = 2; width <= 3; width++) {
        for (int pad = 2040; pad < 2048; pad++) {
            char msg[2200];
            memset(msg, 'a', (size_t)pad);
            msg[pad] = '\0';
            for (int c = 0; c < 4; c++) strcat(msg, width == 2 ? "\xc3\xa9" : "\xe2\x82\xac");
            assert_int_equal(pipe(fds), 0);
            dup2(fds[1], STDERR_FILENO);
            log_msg(LOG_INFO, "long", "%s", msg);
            dup2(saved, STDERR_FILENO);
            close(fds[1]);
            char line[8192];
            ssize_t n = read(fds[0], line, sizeof line - 1);
            close(fds[0]);
            assert_true(n > 0);
            line[n] = '\0';
            json_t *o = json_loads(line, 0, NULL);
            assert_non_null(o);
            const char *got = json_string_value(json_object_get(o, "msg"));
            if (!got || strncmp(got, "aaaa", 4) != 0 || strlen(got) < 2040)
                fail_msg("pad %d width %d: msg %.60s", pad, width, got ? got : "(none)");
            json_decref(o);
        }
    }
    close(saved);
}

/* A line longer than a pipe holds, written while the reader is slow and a signal without
 * SA_RESTART arrives: write(2) returns short, and the rest of the line must still follow (one
 * write used to drop it, leaving half a JSON object on the log). */
static void on_alarm(int sig) { (void)sig; }

struct pipe_reader { int fd; char *buf; size_t cap, len; };

static void *pipe_read_slowly(void *arg) {
    struct pipe_reader *r = arg;
    usleep(300000); /* past the alarm: the writer is blocked on a full pipe when it fires */
    ssize_t n;
    while (r->len < r->cap && (n = read(r->fd, r->buf + r->len, r->cap - r->len)) > 0)
        r->len += (size_t)n;
    return NULL;
}

static void test_log_short_write(void **state) {
    (void)state;
    enum { BIG = 200000 };
    int fds[2], saved = dup(STDERR_FILENO);
    assert_int_equal(pipe(fds), 0);
    struct pipe_reader r = {fds[0], malloc(BIG * 2), BIG * 2, 0};
    char *big = malloc(BIG + 1);
    memset(big, 'x', BIG);
    big[BIG] = '\0';
    struct sigaction sa = {0}, old;
    sa.sa_handler = on_alarm; /* no SA_RESTART, like the processes' own handlers */
    sigaction(SIGALRM, &sa, &old);
    sigset_t alrm, prev;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alrm, &prev); /* the reader inherits the mask: the alarm is ours */
    pthread_t th;
    pthread_create(&th, NULL, pipe_read_slowly, &r);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    struct itimerval it = {{0, 0}, {0, 100000}};
    setitimer(ITIMER_REAL, &it, NULL);
    log_init("test", LOG_INFO);
    dup2(fds[1], STDERR_FILENO);
    log_fields(LOG_INFO, "big", json_pack("{s:s}", "blob", big), "a long line");
    dup2(saved, STDERR_FILENO);
    close(fds[1]);
    pthread_join(th, NULL);
    sigaction(SIGALRM, &old, NULL);
    close(fds[0]);
    close(saved);
    assert_true(r.len > BIG);
    assert_int_equal('\n', r.buf[r.len - 1]);
    r.buf[r.len - 1] = '\0';
    json_t *o = json_loads(r.buf, 0, NULL);
    assert_non_null(o);
    assert_int_equal(BIG, strlen(json_string_value(json_object_get(o, "blob"))));
    json_decref(o);
    free(big);
    free(r.buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cfg_precedence),
        cmocka_unit_test(test_cfg_errors),
        cmocka_unit_test(test_app_configure),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_uuid_array_literal),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_pii_deterministic_and_normalized),
        cmocka_unit_test(test_pii_cache_lru),
        cmocka_unit_test(test_pii_apply_wipes_raw),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_metrics_remove),
        cmocka_unit_test(test_int_format),
        cmocka_unit_test(test_secret_mode_exposure),
        cmocka_unit_test(test_kafka_poll_clock),
        cmocka_unit_test(test_kafka_stats_partition_lag),
        cmocka_unit_test(test_kafka_conf_aliases),
        cmocka_unit_test(test_kafka_guarantee_props),
        cmocka_unit_test(test_sweep_phases),
        cmocka_unit_test(test_sweep_round),
        cmocka_unit_test(test_kafka_gaps_unanswered),
        cmocka_unit_test(test_kafka_err_unreadable),
        cmocka_unit_test(test_sweep_budget),
        cmocka_unit_test(test_sweep_failure),
        cmocka_unit_test(test_log_long_utf8),
        cmocka_unit_test(test_log_short_write),
    };
    return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
