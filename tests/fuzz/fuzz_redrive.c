/* libFuzzer target for fraudshield-redrive's reading of dead letters' headers (tools/redrive.c):
 * anything that can write to a DLQ topic chooses them. The bytes are read as a list of Kafka
 * headers ([name length % 64][flags][value length][name][value] ..., flags & 1: a NULL value),
 * decided on under a few plans, and re-driven. Beyond "does not crash":
 *   - the decision's reason is printable and short, its target empty, --to, or a valid topic name
 *     other than the DLQ's; produce only with a target and below the redrive limit;
 *   - the re-driven headers are the original ones minus the DLQ's headers and any earlier
 *     redrive_count / redriven_at, in order, with the same values (a NULL value stays NULL), then
 *     redrive_count = previous + 1 and redriven_at; deciding on them again reads that count back;
 *   - the tally counts every decision once and prints.
 *
 * Build: make fuzz; run: build/fuzz/fuzz_redrive -max_total_time=60 corpus/ */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redrive.h"

#define NOW_MS 1763719200000LL
#define DLQ "raw_payments.dlq"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
    const char *reasons, *to;
    int64_t max;
} PLANS[] = {
    {"", "", 3},
    {"invalid_payment, expired,db_rejected", "", 1},
    {"undecodable", "raw_payments", 1000000000000000000LL},
};

static int printable(const char *s) {
    for (; *s; s++)
        if (*s <= ' ' || *s >= 127) return 0;
    return 1;
}

static int topic_ok(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n < REDRIVE_TOPIC_MAX &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static rd_kafka_headers_t *read_headers(const uint8_t *d, size_t size) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    size_t p = 0;
    while (p + 3 <= size) {
        size_t nl = d[p] % 64, vl = d[p + 2];
        int null_value = d[p + 1] & 1;
        char name[64];
        p += 3;
        if (nl > size - p) nl = size - p;
        memcpy(name, d + p, nl);
        name[nl] = '\0'; /* names are C strings in librdkafka's API: up to the first NUL */
        p += nl;
        if (vl > size - p) vl = size - p;
        rd_kafka_header_add(h, name, -1, null_value ? NULL : d + p, null_value ? 0 : (ssize_t)vl);
        p += vl;
    }
    return h;
}

static int skipped(const char *name) {
    return redrive_header_is_dlq(name) || strcmp(name, "redrive_count") == 0 ||
           strcmp(name, "redriven_at") == 0;
}

static void check_redriven(const redrive_plan *p, const rd_kafka_headers_t *in,
                           const redrive_decision *d) {
    rd_kafka_headers_t *out = redrive_headers(in, d->redrive_count, NOW_MS);
    const char *n1, *n2;
    const void *v1, *v2;
    size_t s1, s2, i = 0, j = 0;
    for (; in && rd_kafka_header_get_all(in, i, &n1, &v1, &s1) == 0; i++) {
        if (skipped(n1)) continue;
        if (rd_kafka_header_get_all(out, j++, &n2, &v2, &s2) != 0 || strcmp(n1, n2) != 0 ||
            (v1 == NULL) != (v2 == NULL) || (v1 && (s1 != s2 || memcmp(v1, v2, s1) != 0))) {
            fprintf(stderr, "redrive: original header %zu (%s) not carried over\n", i, n1);
            abort();
        }
    }
    char want[24];
    snprintf(want, sizeof want, "%lld", (long long)d->redrive_count + 1);
    if (rd_kafka_header_get_all(out, j, &n2, &v2, &s2) != 0 || strcmp(n2, "redrive_count") != 0 ||
        s2 != strlen(want) || memcmp(v2, want, s2) != 0 ||
        rd_kafka_header_get_all(out, j + 1, &n2, &v2, &s2) != 0 || strcmp(n2, "redriven_at") != 0 ||
        s2 != 24 || rd_kafka_header_get_all(out, j + 2, &n2, &v2, &s2) == 0) {
        fprintf(stderr, "redrive: redrive_count / redriven_at not last\n");
        abort();
    }
    redrive_decision again;
    redrive_decide(p, out, &again);
    if (d->redrive_count + 1 < 1000000000000000000LL && again.redrive_count != d->redrive_count + 1) {
        fprintf(stderr, "redrive: count %lld read back as %lld\n", (long long)d->redrive_count + 1,
                (long long)again.redrive_count);
        abort();
    }
    rd_kafka_headers_destroy(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    rd_kafka_headers_t *in = read_headers(data, size);
    redrive_tally *t = redrive_tally_new();
    if (!t) abort();
    uint64_t total = 0;
    for (size_t k = 0; k < sizeof PLANS / sizeof *PLANS; k++) {
        redrive_plan *p = redrive_plan_new(PLANS[k].reasons, PLANS[k].to, DLQ, PLANS[k].max, err,
                                           sizeof err);
        if (!p) {
            fprintf(stderr, "plan %zu: %s\n", k, err);
            abort();
        }
        redrive_decision d;
        redrive_decide(p, in, &d);
        size_t rl = strnlen(d.reason, sizeof d.reason), tl = strnlen(d.target, sizeof d.target);
        if (rl == 0 || rl == sizeof d.reason || !printable(d.reason) || tl == sizeof d.target ||
            (tl && !topic_ok(d.target)) || strcmp(d.target, DLQ) == 0 ||
            (PLANS[k].to[0] && strcmp(d.target, PLANS[k].to) != 0) || d.redrive_count < 0 ||
            (d.verdict == REDRIVE_PRODUCE && (!tl || d.redrive_count >= PLANS[k].max))) {
            fprintf(stderr, "plan %zu: bad decision %s reason '%.*s' target '%.*s' count %lld\n", k,
                    redrive_verdict_name(d.verdict), (int)rl, d.reason, (int)tl, d.target,
                    (long long)d.redrive_count);
            abort();
        }
        check_redriven(p, in, &d);
        check_redriven(p, NULL, &d);
        if (redrive_tally_add(t, &d, k + 1) != 0) abort();
        total += k + 1;
        redrive_plan_destroy(p);
    }
    uint64_t counted = 0;
    for (int v = REDRIVE_PRODUCE; v <= REDRIVE_NO_VALUE; v++)
        counted += redrive_tally_count(t, (redrive_verdict)v);
    if (counted != total) abort();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f) {
        redrive_tally_print(t, size & 1, f);
        fclose(f);
    }
    free(buf);
    redrive_tally_destroy(t);
    rd_kafka_headers_destroy(in);
    return 0;
}
