/* kafka_headers: binary Kafka headers for the integration tests (kcat cannot produce a header
 * value with a NUL byte, and prints such values cut short).
 *
 *   kafka_headers produce BROKERS TOPIC PARTITION PAYLOAD
 *       one message with headers seq = 00 00 00 01 (e.g. a Java client's putInt(1)),
 *       raw = ff fe 41 (not UTF-8) and note = "plain text"
 *   kafka_headers dump BROKERS TOPIC
 *       every message of TOPIC (all partitions, from the beginning): one line per header,
 *       "PARTITION OFFSET NAME HEX-OF-VALUE" ("-" for a null value)
 */
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int produce(const char *brokers, const char *topic, int partition, const char *payload) {
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (rd_kafka_conf_set(c, "bootstrap.servers", brokers, err, sizeof err) != RD_KAFKA_CONF_OK)
        return fprintf(stderr, "%s\n", err), 1;
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    if (!p) return fprintf(stderr, "%s\n", err), 1;
    static const char seq[] = {0, 0, 0, 1}, raw[] = {(char)0xff, (char)0xfe, 'A'};
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, "seq", -1, seq, sizeof seq);
    rd_kafka_header_add(h, "raw", -1, raw, sizeof raw);
    rd_kafka_header_add(h, "note", -1, "plain text", -1);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_KEY("k-bin", 5),
        RD_KAFKA_V_VALUE((void *)payload, strlen(payload)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(h);
        fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
    }
    int left = rd_kafka_flush(p, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_destroy(p);
    return e || left ? 1 : 0;
}

static void print_headers(const rd_kafka_message_t *m) {
    rd_kafka_headers_t *h = NULL;
    const char *name;
    const void *val;
    size_t size;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
    for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &size) == 0; i++) {
        printf("%d %lld %s ", (int)m->partition, (long long)m->offset, name);
        if (!val) printf("-");
        for (size_t j = 0; val && j < size; j++) printf("%02x", ((const unsigned char *)val)[j]);
        printf("\n");
    }
}

/* The legacy (group-less) consumer: no group coordinator, nothing to leave at the end. */
static int dump(const char *brokers, const char *topic) {
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (rd_kafka_conf_set(c, "bootstrap.servers", brokers, err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(c, "enable.partition.eof", "true", err, sizeof err) != RD_KAFKA_CONF_OK)
        return fprintf(stderr, "%s\n", err), 1;
    rd_kafka_t *k = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
    if (!k) return fprintf(stderr, "%s\n", err), 1;
    rd_kafka_topic_t *t = rd_kafka_topic_new(k, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    if (rd_kafka_metadata(k, 0, t, &md, 10000) || md->topic_cnt != 1)
        return fprintf(stderr, "no metadata for %s\n", topic), 1;
    int parts = md->topics[0].partition_cnt, rc = 0;
    rd_kafka_metadata_destroy(md);
    for (int p = 0; p < parts; p++) {
        if (rd_kafka_consume_start(t, p, RD_KAFKA_OFFSET_BEGINNING) != 0) return 1;
        for (;;) {
            rd_kafka_message_t *m = rd_kafka_consume(t, p, 10000);
            bool eof = !m || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
            if (!m || (m->err && !eof)) rc = 1;
            else if (!m->err) print_headers(m);
            if (m) rd_kafka_message_destroy(m);
            if (eof || rc) break;
        }
        rd_kafka_consume_stop(t, p);
    }
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(k);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "produce") == 0) return produce(argv[2], argv[3], atoi(argv[4]), argv[5]);
    if (argc == 4 && strcmp(argv[1], "dump") == 0) return dump(argv[2], argv[3]);
    fprintf(stderr, "usage: kafka_headers produce BROKERS TOPIC PARTITION PAYLOAD | dump BROKERS TOPIC\n");
    return 2;
}
