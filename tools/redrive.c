/* redrive: see redrive.h. */
#include "redrive.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

#define REDRIVE_MAX_REASONS 16

/* Every dlq_reason the project writes (docs/topics.md, docs/alerter.md). --reason accepts only
 * these: offsets are committed past the messages a filter skips, so a misspelt reason would
 * silently move the group past the whole DLQ. */
static const char *const KNOWN_REASONS[] = {
    "undecodable",     "invalid_payment",   "invalid_outcome",    "db_rejected",
    "invalid_alert",   "delivery_rejected", "delivery_exhausted", "expired",
    "raw_personal_data", "payment_conflict", "outcome_conflict", NULL,
};

/* Skipped unless named: the scorer dead-letters these again as long as payment-retention-days has
 * not been raised above their age (scorer.c scorer_reject_expired), and once it has, it would store
 * the ones retention had deleted as new payments (docs/topics.md). */
#define REASON_EXPIRED "expired"

struct redrive_plan {
    size_t nreasons; /* 0: every reason but expired */
    char reasons[REDRIVE_MAX_REASONS][REDRIVE_REASON_MAX];
    char to[REDRIVE_TOPIC_MAX];
    char dlq_topic[REDRIVE_TOPIC_MAX];
    int64_t max_redrives;
};

const char *redrive_verdict_name(redrive_verdict v) {
    switch (v) {
    case REDRIVE_PRODUCE: return "produce";
    case REDRIVE_FILTERED: return "filtered";
    case REDRIVE_NO_SOURCE: return "no_source";
    case REDRIVE_MAX_REDRIVES: return "max_redrives";
    case REDRIVE_NO_VALUE: return "no_value";
    }
    return "?";
}

/* Kafka's rule for topic names: 1..249 of [A-Za-z0-9._-]. */
static bool topic_valid(const char *s, size_t n) {
    if (n == 0 || n >= REDRIVE_TOPIC_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]) || !s[i])
            return false;
    return true;
}

static bool reason_known(const char *s, size_t n) {
    for (const char *const *k = KNOWN_REASONS; *k; k++)
        if (strlen(*k) == n && memcmp(*k, s, n) == 0) return true;
    return false;
}

/* Splits the comma-separated list into p->reasons; spaces around items are ignored. */
static int parse_reasons(redrive_plan *p, const char *list, char *errstr, size_t errstr_size) {
    const char *s = list;
    if (!*list) return 0;
    for (;;) {
        size_t n = strcspn(s, ",");
        const char *item = s;
        while (n && *item == ' ') item++, n--;
        while (n && item[n - 1] == ' ') n--;
        if (!reason_known(item, n)) {
            char known[512] = ""; /* from the table: the message cannot fall behind it */
            for (const char *const *k = KNOWN_REASONS; *k; k++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s",
                         k == KNOWN_REASONS ? "" : ", ", *k);
            snprintf(errstr, errstr_size, "reason: '%.*s' is not a dlq_reason (%s)",
                     (int)(n < 64 ? n : 64), item, known);
            return -1;
        }
        if (p->nreasons == REDRIVE_MAX_REASONS)
            return snprintf(errstr, errstr_size, "reason: at most %d items", REDRIVE_MAX_REASONS), -1;
        memcpy(p->reasons[p->nreasons], item, n);
        p->reasons[p->nreasons++][n] = '\0';
        s += strcspn(s, ",");
        if (!*s) return 0;
        s++;
    }
}

redrive_plan *redrive_plan_new(const char *reasons, const char *to, const char *dlq_topic,
                               int64_t max_redrives, char *errstr, size_t errstr_size) {
    redrive_plan *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    if (!topic_valid(dlq_topic, strlen(dlq_topic))) {
        snprintf(errstr, errstr_size, "dlq-topic: not a valid topic name");
        goto failed;
    }
    if (*to && (!topic_valid(to, strlen(to)) || strcmp(to, dlq_topic) == 0)) {
        snprintf(errstr, errstr_size, "to: %s", *to && topic_valid(to, strlen(to))
                 ? "the DLQ being read cannot be the target (every message would come back)"
                 : "not a valid topic name");
        goto failed;
    }
    if (max_redrives < 1) {
        snprintf(errstr, errstr_size, "max-redrives: must be >= 1");
        goto failed;
    }
    if (parse_reasons(p, reasons, errstr, errstr_size) != 0) goto failed;
    snprintf(p->to, sizeof p->to, "%s", to);
    snprintf(p->dlq_topic, sizeof p->dlq_topic, "%s", dlq_topic);
    p->max_redrives = max_redrives;
    return p;
failed:
    free(p);
    return NULL;
}

void redrive_plan_destroy(redrive_plan *p) { free(p); }

/* The last header called name with a non-NULL value, or false. */
static bool header_get(const rd_kafka_headers_t *hdrs, const char *name, const char **val,
                       size_t *size) {
    const void *v = NULL;
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &v, size) != RD_KAFKA_RESP_ERR_NO_ERROR || !v)
        return false;
    *val = v;
    return true;
}

/* redrive_count as written by an earlier run: decimal digits. Anything else counts as 0 (we never
 * wrote it; a run that rewrites it as 1 keeps the limit working). */
static int64_t redrive_count_of(const rd_kafka_headers_t *hdrs) {
    const char *v;
    size_t n;
    int64_t c = 0;
    if (!header_get(hdrs, "redrive_count", &v, &n) || n == 0 || n > 18) return 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return 0;
        c = c * 10 + (v[i] - '0');
    }
    return c;
}

static bool reason_selected(const redrive_plan *p, const char *v, size_t n, bool present) {
    if (p->nreasons == 0)
        return !present || n != strlen(REASON_EXPIRED) || memcmp(v, REASON_EXPIRED, n) != 0;
    for (size_t i = 0; present && i < p->nreasons; i++)
        if (strlen(p->reasons[i]) == n && memcmp(p->reasons[i], v, n) == 0) return true;
    return false;
}

/* The reason as printable text (it is printed in the summary and logged). */
static void reason_text(const char *v, size_t n, bool present, char out[REDRIVE_REASON_MAX]) {
    if (!present || n == 0) n = 1, v = "-";
    if (n >= REDRIVE_REASON_MAX) n = REDRIVE_REASON_MAX - 1;
    for (size_t i = 0; i < n; i++) out[i] = v[i] > ' ' && v[i] < 127 ? v[i] : '?';
    out[n] = '\0';
}

void redrive_decide(const redrive_plan *p, const rd_kafka_headers_t *hdrs, redrive_decision *d) {
    const char *v = NULL, *src = NULL, *omitted = NULL;
    size_t n = 0, sn = 0, on = 0;
    bool present = header_get(hdrs, "dlq_reason", &v, &n);
    memset(d, 0, sizeof *d);
    reason_text(v, n, present, d->reason);
    d->redrive_count = redrive_count_of(hdrs);
    if (p->to[0]) {
        snprintf(d->target, sizeof d->target, "%s", p->to);
    } else if (header_get(hdrs, "source_topic", &src, &sn) && topic_valid(src, sn) &&
               !(strlen(p->dlq_topic) == sn && memcmp(p->dlq_topic, src, sn) == 0)) {
        memcpy(d->target, src, sn); /* sn < REDRIVE_TOPIC_MAX: topic_valid */
        d->target[sn] = '\0';
    }
    if (!reason_selected(p, v, n, present)) d->verdict = REDRIVE_FILTERED;
    else if (!d->target[0]) d->verdict = REDRIVE_NO_SOURCE;
    else if (d->redrive_count >= p->max_redrives) d->verdict = REDRIVE_MAX_REDRIVES;
    else if (header_get(hdrs, "dlq_value_omitted", &omitted, &on)) d->verdict = REDRIVE_NO_VALUE;
    else d->verdict = REDRIVE_PRODUCE;
}

bool redrive_header_is_dlq(const char *name) {
    return strncmp(name, "dlq_", 4) == 0 || strcmp(name, "source_topic") == 0 ||
           strcmp(name, "source_partition") == 0 || strcmp(name, "source_offset") == 0;
}

rd_kafka_headers_t *redrive_headers(const rd_kafka_headers_t *hdrs, int64_t redrive_count,
                                    int64_t now_ms) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(hdrs ? rd_kafka_header_cnt(hdrs) + 2 : 2);
    const char *name;
    const void *val;
    size_t size;
    char count[24], at[25];
    for (size_t i = 0; hdrs && rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++) {
        if (redrive_header_is_dlq(name) || strcmp(name, "redrive_count") == 0 ||
            strcmp(name, "redriven_at") == 0)
            continue;
        rd_kafka_header_add(h, name, -1, val, val ? (ssize_t)size : 0); /* a NULL value stays NULL */
    }
    snprintf(count, sizeof count, "%" PRId64, redrive_count + 1);
    fs_time_format_rfc3339(now_ms, at);
    rd_kafka_header_add(h, "redrive_count", -1, count, -1);
    rd_kafka_header_add(h, "redriven_at", -1, at, -1);
    return h;
}

/* ---- tally ------------------------------------------------------------------------------------- */

typedef struct tally_row {
    char reason[REDRIVE_REASON_MAX];
    char target[REDRIVE_TOPIC_MAX];
    redrive_verdict verdict;
    uint64_t n;
} tally_row;

struct redrive_tally {
    tally_row *rows;
    size_t n, cap;
};

redrive_tally *redrive_tally_new(void) { return calloc(1, sizeof(redrive_tally)); }

void redrive_tally_destroy(redrive_tally *t) {
    if (!t) return;
    free(t->rows);
    free(t);
}

int redrive_tally_add(redrive_tally *t, const redrive_decision *d, uint64_t n) {
    for (size_t i = 0; i < t->n; i++) { /* a handful of rows: a linear search is enough */
        tally_row *r = &t->rows[i];
        if (r->verdict == d->verdict && !strcmp(r->reason, d->reason) && !strcmp(r->target, d->target)) {
            r->n += n;
            return 0;
        }
    }
    if (fs_grow((void **)&t->rows, &t->cap, t->n, sizeof *t->rows, 8) != 0) return -1;
    tally_row *r = &t->rows[t->n++];
    memcpy(r->reason, d->reason, sizeof r->reason);
    memcpy(r->target, d->target, sizeof r->target);
    r->verdict = d->verdict;
    r->n = n;
    return 0;
}

uint64_t redrive_tally_count(const redrive_tally *t, redrive_verdict v) {
    uint64_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->rows[i].verdict == v) n += t->rows[i].n;
    return n;
}

static int row_cmp(const void *a, const void *b) {
    const tally_row *x = a, *y = b;
    int c = strcmp(x->reason, y->reason);
    if (!c) c = strcmp(x->target, y->target);
    return c ? c : (int)x->verdict - (int)y->verdict;
}

/* Messages read per dlq_reason, rows sorted (same reasons adjacent): " reason:R=N ..." */
static void print_reasons(const tally_row *rows, size_t n, FILE *out) {
    for (size_t i = 0; i < n;) {
        uint64_t sum = 0;
        size_t j = i;
        for (; j < n && !strcmp(rows[j].reason, rows[i].reason); j++) sum += rows[j].n;
        fprintf(out, " reason:%s=%" PRIu64, rows[i].reason, sum);
        i = j;
    }
}

void redrive_tally_print(const redrive_tally *t, bool dry_run, FILE *out) {
    tally_row *rows = t->n ? malloc(t->n * sizeof *rows) : NULL;
    uint64_t produce = redrive_tally_count(t, REDRIVE_PRODUCE), read = 0;
    if (t->n && !rows) return;
    if (t->n) memcpy(rows, t->rows, t->n * sizeof *rows);
    fs_qsort(rows, t->n, sizeof *rows, row_cmp);
    fprintf(out, "%-20s %-24s %-14s %s\n", "dlq_reason", "target", "action", "messages");
    for (size_t i = 0; i < t->n; i++) {
        const char *action = redrive_verdict_name(rows[i].verdict);
        if (rows[i].verdict == REDRIVE_PRODUCE) action = dry_run ? "would_produce" : "produced";
        fprintf(out, "%-20s %-24s %-14s %" PRIu64 "\n", rows[i].reason,
                rows[i].target[0] ? rows[i].target : "-", action, rows[i].n);
        read += rows[i].n;
    }
    fprintf(out, "redrive read=%" PRIu64 " produced=%" PRIu64 " skipped=%" PRIu64, read,
            dry_run ? 0 : produce, read - produce);
    if (dry_run) fprintf(out, " would_produce=%" PRIu64, produce);
    fprintf(out, " filtered=%" PRIu64 " no_source=%" PRIu64 " max_redrives=%" PRIu64
            " no_value=%" PRIu64,
            redrive_tally_count(t, REDRIVE_FILTERED), redrive_tally_count(t, REDRIVE_NO_SOURCE),
            redrive_tally_count(t, REDRIVE_MAX_REDRIVES), redrive_tally_count(t, REDRIVE_NO_VALUE));
    print_reasons(rows, t->n, out);
    fprintf(out, "%s\n", dry_run ? " dry_run=true" : "");
    free(rows);
}
