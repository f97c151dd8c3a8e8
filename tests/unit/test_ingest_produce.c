/* Unit test of ingest.c's produce path (its static functions: the file is included, and this test
 * links against the archive like the fuzz harnesses, so that this copy takes ingest.o's place):
 * each message's schema_version header is the version of its own body's schema. A payment and an
 * outcome both are at version 1 today, so the test moves PAY_SCHEMA_VERSION, as ingest.c sees it,
 * to 9: pay.h is included first, its guard keeps ingest.c's #include from redefining it back. The
 * old item_produce() put the payment's version on every message, the outcomes' included.
 * The requests are driven through the real handlers with connectionless libevent requests (a reply
 * to one frees it), and the messages are read back from their delivery reports: the producer has
 * no broker, and purging its queue reports every message. Also the batch answer's out-of-memory
 * item result (item_result_bare). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pay.h"
#undef PAY_SCHEMA_VERSION
#define PAY_SCHEMA_VERSION 9
#include "../../ingest/ingest.c"

#define TEST_PAYMENT_ID "0b0b0b0b-0000-4000-8000-000000000001"
#define TEST_SECRET "0123456789abcdef0123456789abcdef"

/* What the delivery reports showed: each message's schema_version header and its body's member. */
typedef struct seen {
    int n;
    char topic[2][32], header[2][16];
    json_int_t body[2];
} seen;

static seen g_seen;

static void test_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    rd_kafka_headers_t *hdrs = NULL;
    const void *v = NULL;
    size_t vlen = 0;
    seen *s = &g_seen;
    if (s->n < 2) {
        snprintf(s->topic[s->n], sizeof s->topic[0], "%s", rd_kafka_topic_name(m->rkt));
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(hdrs, "schema_version", &v, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR)
            snprintf(s->header[s->n], sizeof s->header[0], "%.*s", (int)vlen, (const char *)v);
        json_t *body = json_loadb(m->payload, m->len, 0, NULL);
        s->body[s->n] = json_integer_value(json_object_get(body, "schema_version"));
        json_decref(body);
        s->n++;
    }
    on_delivery(rk, m, opaque); /* settles the item: its request gets its 503 */
}

/* An ingest with what the write handlers use, and a producer without a broker. */
static ingest *test_ingest(void) {
    char errstr[256];
    const pii_params params = {1, 8, 16};
    ingest *ing = calloc(1, sizeof *ing);
    assert_non_null(ing);
    ing->max_body_bytes = 65536;
    ing->retry_after_seconds = 1;
    ing->geo = geoip_new("");
    ing->recent = recent_new(16);
    ing->gen = pii_gen_new(pii_new(TEST_SECRET, strlen(TEST_SECRET), &params, errstr, sizeof errstr));
    assert_non_null(ing->gen);
    assert_int_equal(metrics_setup(ing), 0);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof errstr), RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_opaque(conf, ing);
    rd_kafka_conf_set_dr_msg_cb(conf, test_on_delivery);
    ing->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(ing->rk);
    ing->rkt = rd_kafka_topic_new(ing->rk, "raw_payments", NULL);
    ing->outcomes_rkt = rd_kafka_topic_new(ing->rk, "payment_outcomes", NULL);
    return ing;
}

static void test_ingest_free(ingest *ing) {
    rd_kafka_topic_destroy(ing->rkt);
    rd_kafka_topic_destroy(ing->outcomes_rkt);
    rd_kafka_destroy(ing->rk);
    pii_gen_release(ing->gen);
    recent_destroy(ing->recent);
    geoip_destroy(ing->geo);
    metrics_destroy(ing->m.reg);
    free(ing);
}

/* A POST with a JSON body, as route_request() would hand it to its handler. */
static void test_post(ingest *ing, ingest_handler handler, const char *route, const char *path_id,
                      const char *body) {
    ingest_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.req = evhttp_request_new(NULL, NULL);
    assert_non_null(ctx.req);
    evhttp_add_header(evhttp_request_get_input_headers(ctx.req), "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_input_buffer(ctx.req), body, strlen(body));
    ctx.method = "POST";
    ctx.route = route;
    snprintf(ctx.path, sizeof ctx.path, "/%s", route); /* for the log line only */
    snprintf(ctx.path_id, sizeof ctx.path_id, "%s", path_id);
    snprintf(ctx.request_id, sizeof ctx.request_id, "test-%s", route);
    snprintf(ctx.caller, sizeof ctx.caller, "anonymous");
    ctx.received_ms = fs_now_ms();
    ctx.start_us = fs_mono_us();
    ing->n.in_flight++;
    handler(ing, &ctx);
}

static void test_schema_version_headers(void **state) {
    (void)state;
    ingest *ing = test_ingest();
    test_post(ing, handle_post_payment, "payments", "",
              "{\"user_id\":\"u-1\",\"merchant_id\":\"m-1\",\"amount\":\"1.00\",\"currency\":\"EUR\","
              "\"payment_method\":\"card\"}");
    test_post(ing, handle_post_outcome, "payment_outcome", TEST_PAYMENT_ID,
              "{\"outcome\":\"chargeback\"}");
    assert_int_equal(ing->producing, 2);
    rd_kafka_purge(ing->rk, RD_KAFKA_PURGE_F_QUEUE);
    for (int i = 0; i < 100 && g_seen.n < 2; i++) rd_kafka_poll(ing->rk, 10);
    assert_int_equal(g_seen.n, 2);
    assert_int_equal(ing->producing, 0);
    assert_int_equal(ing->n.in_flight, 0); /* both answered (503: purged) */
    for (int i = 0; i < 2; i++) {
        if (strcmp(g_seen.topic[i], "raw_payments") == 0) {
            assert_string_equal(g_seen.header[i], "9"); /* STR(PAY_SCHEMA_VERSION) as ingest.c sees it */
        } else {
            assert_string_equal(g_seen.topic[i], "payment_outcomes");
            assert_int_equal(g_seen.body[i], OUTCOME_SCHEMA_VERSION);
            assert_string_equal(g_seen.header[i], STR(OUTCOME_SCHEMA_VERSION)); /* was "9" */
        }
    }
    test_ingest_free(ing);
}

/* An item's result written without JSON values (out of memory): its status, payment_id and code
 * as batch-result.v1.json wants them (was {"index", "status": "failed"} for every item). */
static void test_result_bare(void **state) {
    (void)state;
    static const struct {
        item_state st;
        const char *code, *payment_id, *want;
    } rows[] = {
        {ITEM_FAILED, "overloaded", TEST_PAYMENT_ID,
         "{\"index\":3,\"status\":\"failed\",\"payment_id\":\"" TEST_PAYMENT_ID "\",\"error\":\"overloaded\","
         "\"message\":\"out of memory: details lost\"}"},
        {ITEM_FAILED, NULL, TEST_PAYMENT_ID,
         "{\"index\":3,\"status\":\"failed\",\"payment_id\":\"" TEST_PAYMENT_ID "\",\"error\":\"internal_error\","
         "\"message\":\"out of memory: details lost\"}"},
        {ITEM_REJECTED, "validation_failed", "",
         "{\"index\":3,\"status\":\"rejected\",\"error\":\"validation_failed\","
         "\"message\":\"out of memory: details lost\",\"fields\":[]}"},
        {ITEM_REJECTED, "malformed_json", "",
         "{\"index\":3,\"status\":\"rejected\",\"error\":\"malformed_json\","
         "\"message\":\"out of memory: details lost\"}"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        ingest_item it = {.index = 3, .state = rows[i].st, .code = rows[i].code};
        snprintf(it.payment_id, sizeof it.payment_id, "%s", rows[i].payment_id);
        struct evbuffer *out = evbuffer_new();
        assert_non_null(out);
        item_result_bare(out, &it);
        size_t n = evbuffer_get_length(out);
        char *got = (char *)evbuffer_pullup(out, -1);
        if (n != strlen(rows[i].want) || memcmp(got, rows[i].want, n) != 0)
            fail_msg("row %zu: got %.*s", i, (int)n, got);
        evbuffer_free(out);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_version_headers),
        cmocka_unit_test(test_result_bare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
