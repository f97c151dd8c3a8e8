/* libFuzzer target for the alerter's decoders of bytes it consumes from Kafka.
 *
 * The same bytes go to:
 *   - the fraud_alerts decode (alerter.c alerter_decode_batch: json_loadb, then alert_record());
 *     an accepted alert gives a row with the fields alerter_record_alerts() reads and the message
 *     bytes unchanged as its body; a refused one gives an error that is not "out of memory";
 *   - the dead-letter header round trip: the bytes are read as a list of Kafka headers (see
 *     read_headers()), encoded as the alerter does for the outbox (alerter.c header_pair(), the
 *     loop of dead_letter_headers()) and decoded as the outbox pump does (outbox.c headers_from());
 *     every header kept must come back with the same name and the same value bytes (a header
 *     without a value comes back without one), in order;
 *   - the outbox's own decoder of a row's headers text (outbox.c headers_from()), which an
 *     operator can also write with a plain UPDATE in psql: it must not crash on any JSON.
 * alerter.c and outbox.c are included for their static functions; nothing connects to a broker or
 * a database.
 *
 * Build: make fuzz; run: build/fuzz/fuzz_alerter -max_total_time=60 corpus/ */
#include "../../alerter/alerter.c"
#include "../../alerter/outbox.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    log_init("fuzz_alerter", LOG_ERROR + 1); /* dead_letter() logs every refused message */
    return 0;
}

static void check_alert(const uint8_t *data, size_t size) {
    rd_kafka_message_t m;
    al_item it;
    char err[256] = "";
    json_error_t je;
    memset(&m, 0, sizeof m);
    memset(&it, 0, sizeof it);
    m.payload = (void *)data;
    m.len = size;
    m.partition = 3;
    m.offset = 42;
    it.msg = &m;
    json_t *o = size ? json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!json_is_object(o)) {
        dead_letter(&it, "undecodable", o ? "not a JSON object" : "not JSON");
    } else if (!(it.rec = alert_record(o, &m, err, sizeof err))) {
        if (strcmp(err, "out of memory") == 0 || !err[0]) {
            fprintf(stderr, "alert refused without a reason: '%s'\n", err);
            abort();
        }
        dead_letter(&it, "invalid_alert", err);
    } else {
        json_t *body = json_object_get(it.rec, "body");
        if (!fs_uuid_valid(json_string_value(json_object_get(it.rec, "alert_id"))) ||
            !fs_uuid_valid(json_string_value(json_object_get(it.rec, "payment_id"))) ||
            !json_is_string(json_object_get(it.rec, "decision")) ||
            !json_is_integer(json_object_get(it.rec, "score")) || !json_is_string(body) ||
            json_string_length(body) != size || memcmp(json_string_value(body), data, size) != 0) {
            fprintf(stderr, "accepted alert gives an incomplete row\n");
            abort();
        }
        char *s = json_dumps(it.rec, JSON_COMPACT); /* what goes to PostgreSQL */
        if (!s) abort();
        free(s);
    }
    json_decref(o);
    json_decref(it.rec);
}

typedef struct hdr {
    char name[64];
    const uint8_t *val; /* NULL: a header without a value */
    size_t size;
} hdr;

/* Input as headers: [name length % 64][flags][value length][name][value] ..., a name up to its
 * first NUL (Kafka header names are C strings for librdkafka's API); flags & 1: NULL value. */
static size_t read_headers(const uint8_t *d, size_t size, hdr *h, size_t max) {
    size_t n = 0, p = 0;
    while (n < max && p + 3 <= size) {
        size_t nl = d[p] % 64, vl = d[p + 2];
        int null_value = d[p + 1] & 1;
        p += 3;
        if (nl > size - p) nl = size - p;
        size_t copy = nl < sizeof h[n].name ? nl : sizeof h[n].name - 1;
        memcpy(h[n].name, d + p, copy);
        h[n].name[copy] = '\0';
        p += nl;
        if (vl > size - p) vl = size - p;
        h[n].val = null_value ? NULL : d + p;
        h[n].size = null_value ? 0 : vl;
        p += vl;
        n++;
    }
    return n;
}

static void check_dlq_headers(const uint8_t *data, size_t size) {
    hdr h[32];
    size_t kept[32], nkept = 0;
    size_t n = read_headers(data, size, h, 32);
    json_t *arr = json_array();
    if (!arr) return;
    for (size_t i = 0; i < n; i++) {
        /* as dead_letter_headers(): librdkafka hands out a valid pointer for an empty value */
        json_t *pair = header_pair(h[i].name, h[i].val ? (const void *)h[i].val : NULL, h[i].size);
        if (!pair) continue;
        json_array_append_new(arr, pair);
        kept[nkept++] = i;
    }
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!text) abort();
    rd_kafka_headers_t *back = headers_from(text);
    const char *name;
    const void *val;
    size_t vsize, i;
    for (i = 0; rd_kafka_header_get_all(back, i, &name, &val, &vsize) == 0; i++) {
        if (i >= nkept) {
            fprintf(stderr, "outbox: more headers than the alerter wrote: %s\n", text);
            abort();
        }
        const hdr *o = &h[kept[i]];
        if (strcmp(name, o->name) != 0 || vsize != o->size || (val == NULL) != (o->val == NULL) ||
            (vsize && (!val || memcmp(val, o->val, vsize) != 0))) {
            fprintf(stderr, "outbox: header %zu (%s) does not come back as written: %s\n", i,
                    o->name, text);
            abort();
        }
    }
    if (i != nkept) {
        fprintf(stderr, "outbox: %zu of %zu headers lost: %s\n", nkept - i, nkept, text);
        abort();
    }
    rd_kafka_headers_destroy(back);
    free(text);
}

static void check_outbox_row(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return;
    memcpy(text, data, size);
    text[size] = '\0';
    rd_kafka_headers_t *h = headers_from(text);
    const char *name;
    const void *val;
    size_t vsize;
    for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &vsize) == 0; i++)
        if (vsize && !val) abort();
    rd_kafka_headers_destroy(h);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_alert(data, size);
    check_dlq_headers(data, size);
    check_outbox_row(data, size);
    return 0;
}
