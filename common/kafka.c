/* kafka: librdkafka client set-up shared by the processes (see kafka.h). */
#include "kafka.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "fsutil.h"
#include "log.h"

/* librdkafka's syslog levels (0 emerg .. 7 debug) mapped onto ours. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    log_level l = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN : level <= 6 ? LOG_INFO : LOG_DEBUG;
    log_fields(l, "librdkafka", json_pack("{s:s,s:s}", "client", rd_kafka_name(rk), "facility", fac),
               "%s", buf);
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                    size_t errstr_size) {
    if (rd_kafka_conf_set(conf, name, value, errstr, errstr_size) != RD_KAFKA_CONF_OK) return -1;
    return 0;
}

/* Why a property set to value would break a guarantee the processes rest on, or NULL. */
static const char *prop_breaks_guarantee(const char *name, const char *value) {
    if ((strcmp(name, "acks") == 0 || strcmp(name, "request.required.acks") == 0) &&
        strcmp(value, "all") != 0 && strcmp(value, "-1") != 0)
        return "FraudShield's producers are always acks=all and idempotent (a 202 means durable)";
    if (strcmp(name, "enable.idempotence") == 0 && strcmp(value, "true") != 0)
        return "FraudShield's producers are always acks=all and idempotent (a 202 means durable)";
    if (strcmp(name, "delivery.report.only.error") == 0 && strcasecmp(value, "false") != 0 &&
        strcmp(value, "0") != 0 && strcasecmp(value, "f") != 0)
        return "every delivery report is awaited (ingest answers 202 from it, the scorer and the "
               "alerter's outbox commit after it): without the successful ones, nothing completes";
    if (strcmp(name, "transactional.id") == 0 && value[0])
        return "the producers are idempotent, not transactional: every produce would fail";
    return NULL;
}

rd_kafka_conf_t *kafka_conf_new(const char *brokers, const cfg_props *props, char *errstr,
                                size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    if (brokers && *brokers && conf_set(conf, "bootstrap.servers", brokers, errstr, errstr_size))
        goto failed;
    for (size_t i = 0; props && i < props->n; i++) {
        char e[512];
        const char *why = prop_breaks_guarantee(props->name[i], props->value[i]);
        if (why) {
            snprintf(errstr, errstr_size, "kafka property %s=%s is not allowed: %s", props->name[i],
                     props->value[i], why);
            goto failed;
        }
        if (conf_set(conf, props->name[i], props->value[i], e, sizeof e) != 0) {
            snprintf(errstr, errstr_size, "kafka property %s: %s", props->name[i], e);
            goto failed;
        }
    }
    return conf;
failed:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

bool kafka_err_unreadable(const rd_kafka_message_t *m) {
    return (m->err == RD_KAFKA_RESP_ERR__BAD_MSG || m->err == RD_KAFKA_RESP_ERR__BAD_COMPRESSION ||
            m->err == RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED) &&
           m->partition >= 0 && m->offset >= 0;
}

int kafka_props_check(const cfg_props *props, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = kafka_conf_new(NULL, props, errstr, errstr_size);
    if (!conf) return -1;
    rd_kafka_conf_destroy(conf);
    return 0;
}

/* The operator's value of name, also when given under librdkafka's other name for it (an alias sets
 * the same property: a default or a lock must see it). */
static const char *props_get(const cfg_props *props, const char *name) {
    static const char *const ALIASES[][2] = {
        {"message.timeout.ms", "delivery.timeout.ms"},
        {"linger.ms", "queue.buffering.max.ms"},
        {"compression.codec", "compression.type"},
        {"acks", "request.required.acks"},
    };
    const char *v = props ? cfg_props_get(props, name) : NULL;
    for (size_t i = 0; !v && props && i < sizeof ALIASES / sizeof ALIASES[0]; i++) {
        if (strcmp(name, ALIASES[i][0]) == 0) v = cfg_props_get(props, ALIASES[i][1]);
        else if (strcmp(name, ALIASES[i][1]) == 0) v = cfg_props_get(props, ALIASES[i][0]);
    }
    return v;
}

int kafka_conf_default(rd_kafka_conf_t *conf, const cfg_props *props, const char *name,
                       const char *value, char *errstr, size_t errstr_size) {
    if (props_get(props, name)) return 0; /* the operator's choice wins */
    return conf_set(conf, name, value, errstr, errstr_size);
}

/* Whether the operator's value says the same as ours: equal, or one of librdkafka's other
 * spellings of it. */
static bool same_value(const char *name, const char *given, const char *value) {
    static const char *const SYNONYMS[][3] = {
        {"auto.offset.reset", "earliest", "smallest"}, {"auto.offset.reset", "earliest", "beginning"},
        {"auto.offset.reset", "latest", "largest"},    {"auto.offset.reset", "latest", "end"},
        {"acks", "all", "-1"},
    };
    if (strcmp(given, value) == 0) return true;
    for (size_t i = 0; i < sizeof SYNONYMS / sizeof SYNONYMS[0]; i++)
        if (strcmp(name, SYNONYMS[i][0]) == 0 && strcmp(value, SYNONYMS[i][1]) == 0 &&
            strcmp(given, SYNONYMS[i][2]) == 0)
            return true;
    return false;
}

int kafka_conf_lock(rd_kafka_conf_t *conf, const cfg_props *props, const char *name,
                    const char *value, char *errstr, size_t errstr_size) {
    const char *given = props_get(props, name);
    if (given && !same_value(name, given, value)) {
        snprintf(errstr, errstr_size,
                 "kafka property %s=%s is not allowed: FraudShield's delivery guarantees need %s=%s",
                 name, given, name, value);
        return -1;
    }
    return conf_set(conf, name, value, errstr, errstr_size);
}

rd_kafka_t *kafka_producer_new(rd_kafka_conf_t *conf, const cfg_props *props, char *errstr,
                               size_t errstr_size) {
    /* acks=all + idempotence: a delivery report without error means every in-sync replica has the
     * message, exactly once and in order. kafka_conf_new() already refused weaker operator values.
     * murmur2_random (the Java clients' partitioner) in every process: a key lands on one partition
     * whoever produces it (an analyst's label and ingest's for one payment on payment_outcomes,
     * docs/topics.md), and where a Java producer or Kafka Streams would put it. librdkafka's
     * default (CRC32) would split them. */
    if (conf_set(conf, "enable.idempotence", "true", errstr, errstr_size) ||
        conf_set(conf, "acks", "all", errstr, errstr_size) ||
        kafka_conf_default(conf, props, "partitioner", "murmur2_random", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size); /* conf owned by rk now */
}

rd_kafka_t *kafka_consumer_new(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf); /* rd_kafka_new() takes conf only on success */
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk); /* one queue: messages, errors and rebalances */
    return rk;
}

int kafka_offsets_add(rd_kafka_topic_partition_list_t *offs, const rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(offs, topic, m->partition);
    if (!p) p = rd_kafka_topic_partition_list_add(offs, topic, m->partition);
    if (!p) return -1;
    if (m->offset + 1 > p->offset) p->offset = m->offset + 1;
    return 0;
}

static int topics_present(const rd_kafka_metadata_t *md, const char *const *topics, char *errstr,
                          size_t errstr_size) {
    for (const char *const *t = topics; *t; t++) {
        int found = 0;
        for (int i = 0; i < md->topic_cnt; i++) {
            if (strcmp(md->topics[i].topic, *t) == 0 && md->topics[i].err == 0 &&
                md->topics[i].partition_cnt > 0)
                found = 1;
        }
        if (!found) {
            snprintf(errstr, errstr_size, "topic %s does not exist on the cluster", *t);
            return -1;
        }
    }
    return 0;
}

int kafka_wait_topics(rd_kafka_t *rk, const char *const *topics, int timeout_ms, char *errstr,
                      size_t errstr_size) {
    int64_t waited = 0;
    snprintf(errstr, errstr_size, "no answer from the brokers");
    while (waited <= timeout_ms) {
        const struct rd_kafka_metadata *md = NULL;
        /* SIGTERM during start-up: stop, do not wait the timeout out */
        if (atomic_load(&app_stop_requested)) {
            snprintf(errstr, errstr_size, "stopped while waiting for the brokers");
            return -1;
        }
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, 2000);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            int rc = topics_present(md, topics, errstr, errstr_size);
            rd_kafka_metadata_destroy(md);
            if (rc == 0) return 0;
        } else { /* name the brokers: librdkafka's own lines say why, this one says where */
            char bs[512] = "?";
            size_t bn = sizeof bs;
            rd_kafka_conf_get(rd_kafka_conf(rk), "bootstrap.servers", bs, &bn);
            snprintf(errstr, errstr_size, "metadata request to %s failed: %s", bs,
                     rd_kafka_err2str(err));
        }
        rd_kafka_poll(rk, 500);
        waited += 2500;
    }
    return -1;
}

void kafka_consumer_close(rd_kafka_t **rkp) {
    rd_kafka_t *rk = *rkp;
    if (!rk) return;
    *rkp = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    bool empty = rd_kafka_assignment(rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts &&
                 parts->cnt == 0;
    if (parts) rd_kafka_topic_partition_list_destroy(parts);
    if (empty) {
        log_msg(LOG_WARN, "consumer_abandoned",
                "%s holds no partitions: left without closing (librdkafka #4312 workaround)",
                rd_kafka_name(rk));
        return;
    }
    /* A consumer with a fatal error (fenced) cannot leave its group: librdkafka (2.0.2) refuses
     * the close, and a plain destroy would then wait for that close for ever (the process hung
     * instead of exiting; test_kafka_consumer_fatal). */
    bool fatal = rd_kafka_fatal_error(rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_resp_err_t err = fatal ? RD_KAFKA_RESP_ERR__FATAL : rd_kafka_consumer_close(rk);
    if (err) log_msg(LOG_WARN, "consumer_close_failed", "%s: %s", rd_kafka_name(rk), rd_kafka_err2str(err));
    rd_kafka_destroy_flags(rk, fatal ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0);
}

bool kafka_err_too_big(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || err == RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE ||
           err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
}

size_t kafka_max_message_bytes(rd_kafka_t *rk) {
    char buf[32];
    size_t n = sizeof buf;
    if (rd_kafka_conf_get(rd_kafka_conf(rk), "message.max.bytes", buf, &n) != RD_KAFKA_CONF_OK)
        return 1000000; /* librdkafka's default */
    return (size_t)strtoull(buf, NULL, 10);
}

void kafka_header_str(rd_kafka_headers_t *hdrs, const char *name, const char *value) {
    rd_kafka_header_add(hdrs, name, -1, value, -1);
}

/* ---- the age of the last poll ---------------------------------------------------------------- */

int64_t kafka_stats_partition_lag(const json_t *part) {
    json_t *jlag = json_object_get(part, "consumer_lag");
    int64_t lag = json_is_integer(jlag) ? json_integer_value(jlag) : -1;
    int64_t committed = json_integer_value(json_object_get(part, "committed_offset"));
    int64_t lo = json_integer_value(json_object_get(part, "lo_offset"));
    int64_t hi = json_integer_value(json_object_get(part, "hi_offset"));
    if (!json_is_true(json_object_get(part, "desired"))) return 0;
    if (lag >= 0) return lag;
    if (committed < 0 && lo >= 0 && hi > lo) return hi - lo;
    return 0; /* offsets not known yet */
}

void kafka_poll_clock_start(kafka_poll_clock *clock) {
    if (clock) atomic_store(&clock->returned_us, fs_mono_us());
}

rd_kafka_message_t *kafka_consumer_poll(rd_kafka_t *rk, int timeout_ms, kafka_poll_clock *clock) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, timeout_ms);
    kafka_poll_clock_start(clock);
    return m;
}

double kafka_poll_age_seconds(const kafka_poll_clock *clock) {
    int64_t t = atomic_load(&clock->returned_us);
    return t ? (double)(fs_mono_us() - t) / 1e6 : 0;
}

/* ---- messages lost to retention (kafka_gaps) -------------------------------------------------- */

struct kafka_gaps {
    int64_t *next; /* per partition: the offset expected next, -1 unknown */
    size_t n;
};

kafka_gaps *kafka_gaps_new(void) { return calloc(1, sizeof(kafka_gaps)); }

void kafka_gaps_destroy(kafka_gaps *g) {
    if (!g) return;
    free(g->next);
    free(g);
}

/* The offset expected next on partition p (the table grows on first sight); NULL when out of
 * memory (no check then). */
static int64_t *gaps_next(kafka_gaps *g, int32_t p) {
    if (p < 0) return NULL;
    if ((size_t)p >= g->n) {
        int64_t *t = realloc(g->next, ((size_t)p + 1) * sizeof *t);
        if (!t) return NULL;
        for (size_t i = g->n; i <= (size_t)p; i++) t[i] = -1;
        g->next = t;
        g->n = (size_t)p + 1;
    }
    return &g->next[p];
}

rd_kafka_resp_err_t kafka_gaps_assigned(kafka_gaps *g, rd_kafka_t *rk,
                                        const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, c, 10000);
    for (int i = 0; i < c->cnt; i++) {
        int64_t *next = gaps_next(g, c->elems[i].partition);
        if (next) *next = !e && !c->elems[i].err && c->elems[i].offset >= 0 ? c->elems[i].offset : -1;
    }
    rd_kafka_topic_partition_list_destroy(c);
    return e;
}

void kafka_gaps_revoked(kafka_gaps *g, const rd_kafka_topic_partition_list_t *parts) {
    if (!parts) {
        for (size_t i = 0; i < g->n; i++) g->next[i] = -1;
        return;
    }
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && (size_t)p < g->n) g->next[p] = -1;
    }
}

bool kafka_gaps_check(kafka_gaps *g, rd_kafka_t *rk, const rd_kafka_message_t *m, kafka_loss *loss) {
    int64_t *next = gaps_next(g, m->partition);
    if (!next) return false;
    int64_t from = *next, lo = -1, hi = -1;
    *next = m->offset + 1;
    if (from < 0 || m->offset <= from) return false;
    if (rd_kafka_query_watermark_offsets(rk, rd_kafka_topic_name(m->rkt), m->partition, &lo, &hi,
                                         2000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* the expected offset has moved on: unreported now, the gap would never be */
        *loss = (kafka_loss){.from = from, .earliest = -1, .latest = -1, .lost = 0};
        return true;
    }
    if (lo <= from) return false;
    if (lo > m->offset) lo = m->offset; /* retention moved on since the fetch: this one is here */
    *loss = (kafka_loss){.from = from, .earliest = lo, .latest = hi, .lost = lo - from};
    return true;
}
