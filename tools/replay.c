/* replay: CSV rows -> payments and outcomes, pacing, label queue, percentiles (see replay.h). */
#include "replay.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

#define RPL_MAX_COLS 32

static const char *const COL_NAMES[] = {"TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID",
                                        "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"};

/* Splits a CSV line at commas in place (the handbook files have no quoting). */
static int split(char *line, char **f, int max) {
    int n = 0;
    for (char *c = line; n < max;) {
        f[n++] = c;
        c = strchr(c, ',');
        if (!c) break;
        *c++ = '\0';
    }
    for (int i = 0; i < n; i++) f[i][strcspn(f[i], "\r\n")] = '\0';
    return n;
}

int rpl_header(const char *line, rpl_cols *cols, char *errstr, size_t errstr_size) {
    char buf[1024], *f[RPL_MAX_COLS];
    int *pos[] = {&cols->txid, &cols->datetime, &cols->customer, &cols->terminal, &cols->amount,
                  &cols->fraud};
    snprintf(buf, sizeof buf, "%s", line);
    int n = split(buf, f, RPL_MAX_COLS);
    for (size_t k = 0; k < sizeof pos / sizeof pos[0]; k++) {
        *pos[k] = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(f[i], COL_NAMES[k]) == 0) *pos[k] = i;
        if (*pos[k] < 0 && k != 5) {
            snprintf(errstr, errstr_size, "header: no %s column", COL_NAMES[k]);
            return -1;
        }
    }
    return 0;
}

/* Digits (an id), 1..RPL_FIELD_MAX-1 bytes. */
static int copy_id(char *dst, const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= RPL_FIELD_MAX || strspn(s, "0123456789") != n) return -1;
    memcpy(dst, s, n + 1);
    return 0;
}

/* "123", "57.16", "146.0": a decimal with at most 2 decimals; "0.00" becomes "0.01" (clamped). */
static int copy_amount(rpl_tx *tx, const char *s) {
    size_t n = strlen(s), ip = strspn(s, "0123456789");
    const char *dot = s + ip;
    if (n == 0 || n >= RPL_FIELD_MAX || ip == 0) return -1;
    if (*dot && (*dot != '.' || strspn(dot + 1, "0123456789") != strlen(dot + 1) ||
                 strlen(dot + 1) > 2))
        return -1;
    tx->clamped = strtod(s, NULL) <= 0;
    memcpy(tx->amount, tx->clamped ? "0.01" : s, tx->clamped ? 5 : n + 1);
    return 0;
}

/* "YYYY-MM-DD HH:MM:SS" (UTC) */
static int parse_time(const char *s, int64_t *ms) {
    char buf[32];
    if (strlen(s) != 19 || s[10] != ' ') return -1;
    snprintf(buf, sizeof buf, "%.10sT%sZ", s, s + 11);
    return fs_time_parse_rfc3339(buf, ms);
}

int rpl_parse(char *line, const rpl_cols *cols, rpl_tx *tx, char *errstr, size_t errstr_size) {
    char *f[RPL_MAX_COLS];
    int n = split(line, f, RPL_MAX_COLS), need = cols->txid;
    const char *bad = NULL;
    const int idx[] = {cols->datetime, cols->customer, cols->terminal, cols->amount, cols->fraud};
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) need = idx[i] > need ? idx[i] : need;
    if (n <= need) {
        snprintf(errstr, errstr_size, "%d columns, %d expected", n, need + 1);
        return -1;
    }
    if (copy_id(tx->txid, f[cols->txid]) != 0) bad = "TRANSACTION_ID";
    else if (copy_id(tx->customer, f[cols->customer]) != 0) bad = "CUSTOMER_ID";
    else if (copy_id(tx->terminal, f[cols->terminal]) != 0) bad = "TERMINAL_ID";
    else if (copy_amount(tx, f[cols->amount]) != 0) bad = "TX_AMOUNT";
    else if (parse_time(f[cols->datetime], &tx->time_ms) != 0) bad = "TX_DATETIME";
    else if (cols->fraud >= 0 && strcmp(f[cols->fraud], "0") && strcmp(f[cols->fraud], "1"))
        bad = "TX_FRAUD";
    if (bad) {
        snprintf(errstr, errstr_size, "%s: invalid", bad);
        return -1;
    }
    tx->fraud = cols->fraud < 0 ? -1 : f[cols->fraud][0] == '1';
    return 0;
}

void rpl_payment_id(const rpl_tx *tx, char out[37]) {
    char name[RPL_FIELD_MAX + 16];
    int n = snprintf(name, sizeof name, "handbook:%s", tx->txid);
    fs_uuid_v5(RPL_NS, name, (size_t)n, out); /* RPL_NS is a valid UUID: cannot fail */
}

/* FNV-1a 32: stable across platforms and runs (the country must never change for a customer). */
static uint32_t fnv1a(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

const char *rpl_country(const char *customer) {
    static const struct { const char *cc; unsigned weight; } dist[] = {
        {"FR", 25}, {"BE", 20}, {"DE", 15}, {"NL", 10}, {"ES", 10}, {"IT", 10}, {"GB", 5}, {"PT", 5},
    }; /* = RPL_COUNTRIES */
    char key[RPL_FIELD_MAX + 16];
    snprintf(key, sizeof key, "country:%s", customer);
    unsigned r = fnv1a(key) % 100, acc = 0;
    for (size_t i = 0; i < sizeof dist / sizeof dist[0]; i++) {
        acc += dist[i].weight;
        if (r < acc) return dist[i].cc;
    }
    return dist[0].cc; /* not reached: the weights sum to 100 */
}

int rpl_payment_json(const rpl_tx *tx, const char *payment_id, char *out, size_t out_size) {
    char ts[25];
    fs_time_format_rfc3339(tx->time_ms, ts);
    int n = snprintf(out, out_size,
                     "{\"payment_id\":\"%s\",\"user_id\":\"cust-%s\",\"merchant_id\":\"term-%s\","
                     "\"amount\":\"%s\",\"currency\":\"EUR\",\"payment_method\":\"card\","
                     "\"card_fingerprint\":\"hb-card-%s\",\"country\":\"%s\",\"timestamp\":\"%s\"}",
                     payment_id, tx->customer, tx->terminal, tx->amount, tx->customer,
                     rpl_country(tx->customer), ts);
    return n >= 0 && (size_t)n < out_size ? n : -1;
}

int rpl_outcome_json(int fraud, int64_t known_ms, char *out, size_t out_size) {
    char ts[25];
    fs_time_format_rfc3339(known_ms, ts);
    int n = snprintf(out, out_size, "{\"outcome\":\"%s\",\"known_at\":\"%s\","
                     "\"reason\":\"replay: handbook label\"}",
                     fraud ? "confirmed_fraud" : "legitimate", ts);
    return n >= 0 && (size_t)n < out_size ? n : -1;
}

int64_t rpl_due(double rate, int64_t start_us, int64_t now_us) {
    if (rate <= 0) return INT64_MAX;
    if (now_us <= start_us) return 0;
    return (int64_t)floor(rate * (double)(now_us - start_us) / 1e6);
}

/* ---- labels by due time (a binary min-heap on known_ms) --------------------------------------- */

static void label_swap(rpl_label *a, rpl_label *b) {
    rpl_label t = *a;
    *a = *b;
    *b = t;
}

int rpl_labels_push(rpl_labels *q, const rpl_label *l) {
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 1024;
        rpl_label *v = realloc(q->v, cap * sizeof *v);
        if (!v) return -1;
        q->v = v;
        q->cap = cap;
    }
    size_t i = q->n++;
    q->v[i] = *l;
    while (i > 0 && q->v[(i - 1) / 2].known_ms > q->v[i].known_ms) {
        label_swap(&q->v[(i - 1) / 2], &q->v[i]);
        i = (i - 1) / 2;
    }
    return 0;
}

const rpl_label *rpl_labels_peek(const rpl_labels *q) { return q->n ? &q->v[0] : NULL; }

void rpl_labels_pop(rpl_labels *q) {
    if (!q->n) return;
    q->v[0] = q->v[--q->n];
    for (size_t i = 0;;) {
        size_t m = i, l = 2 * i + 1, r = l + 1;
        if (l < q->n && q->v[l].known_ms < q->v[m].known_ms) m = l;
        if (r < q->n && q->v[r].known_ms < q->v[m].known_ms) m = r;
        if (m == i) break;
        label_swap(&q->v[m], &q->v[i]);
        i = m;
    }
}

void rpl_labels_free(rpl_labels *q) {
    free(q->v);
    *q = (rpl_labels){0};
}

/* ---- id map ------------------------------------------------------------------------------------ */

static int uuid_bytes(const char *s, unsigned char out[16]) {
    size_t k = 0;
    if (!s || !fs_uuid_valid(s)) return -1;
    for (const char *c = s; *c && k < 16; c++) {
        if (*c == '-') continue;
        unsigned hi, lo;
        if (sscanf(c, "%1x%1x", &hi, &lo) != 2) return -1;
        out[k++] = (unsigned char)(hi << 4 | lo);
        c++;
    }
    return k == 16 ? 0 : -1;
}

/* The ids are SHA-1 based (v5) or random (v4): their first bytes are already uniform. */
static size_t slot_of(const unsigned char key[16], size_t cap) {
    uint64_t h;
    memcpy(&h, key, sizeof h);
    return (size_t)(h * 0x9E3779B97F4A7C15ULL >> 7) & (cap - 1);
}

static int idmap_grow(rpl_idmap *m) {
    rpl_idmap old = *m;
    size_t cap = m->cap ? m->cap * 2 : 4096;
    rpl_idmap_entry *v = calloc(cap, sizeof *v);
    if (!v) return -1;
    m->v = v;
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.v[i].used) continue;
        size_t j = slot_of(old.v[i].key, cap);
        while (v[j].used) j = (j + 1) & (cap - 1);
        v[j] = old.v[i];
        m->n++;
    }
    free(old.v);
    return 0;
}

/* The entry of key, or NULL. */
static rpl_idmap_entry *idmap_find(const rpl_idmap *m, const unsigned char key[16]) {
    if (!m->cap) return NULL;
    for (size_t j = slot_of(key, m->cap); m->v[j].used; j = (j + 1) & (m->cap - 1))
        if (memcmp(m->v[j].key, key, 16) == 0) return &m->v[j];
    return NULL;
}

static int idmap_put_key(rpl_idmap *m, const unsigned char key[16], int64_t value) {
    if ((m->n + 1) * 2 > m->cap && idmap_grow(m) != 0) return -1; /* load <= 1/2 */
    size_t j = slot_of(key, m->cap);
    while (m->v[j].used && memcmp(m->v[j].key, key, 16) != 0) j = (j + 1) & (m->cap - 1);
    if (!m->v[j].used) m->n++;
    memcpy(m->v[j].key, key, 16);
    m->v[j].value = value;
    m->v[j].used = 1;
    return 0;
}

int rpl_idmap_put(rpl_idmap *m, const char *uuid, int64_t value) {
    unsigned char key[16];
    if (uuid_bytes(uuid, key) != 0) return -1;
    return idmap_put_key(m, key, value);
}

/* Linear probing without tombstones: after a removal, later entries of the run move back. */
static void idmap_remove_at(rpl_idmap *m, size_t i) {
    size_t mask = m->cap - 1, j = i;
    m->v[i].used = 0;
    m->n--;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->v[j].used) return;
        size_t home = slot_of(m->v[j].key, m->cap);
        /* the entry at j may move to the hole at i unless its home lies in (i, j] (cyclically) */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            m->v[i] = m->v[j];
            m->v[j].used = 0;
            i = j;
        }
    }
}

int rpl_idmap_take(rpl_idmap *m, const char *uuid, int64_t *value) {
    unsigned char key[16];
    if (uuid_bytes(uuid, key) != 0) return 0;
    rpl_idmap_entry *e = idmap_find(m, key);
    if (!e) return 0;
    *value = e->value;
    idmap_remove_at(m, (size_t)(e - m->v));
    return 1;
}

void rpl_idmap_free(rpl_idmap *m) {
    free(m->v);
    *m = (rpl_idmap){0};
}

/* ---- customers in flight ------------------------------------------------------------------------ */

/* Two FNV-1a hashes of the customer (different offset bases) make the map's 16-byte key; the
 * value is the holding request's sequence number (high bits) and the customer's unfinished
 * payments (low BUSY_COUNT_BITS bits: at most one request's worth, batch-size <= 100,000). */
#define BUSY_COUNT_BITS 24
#define BUSY_COUNT_MASK ((INT64_C(1) << BUSY_COUNT_BITS) - 1)

static void busy_key(const char *customer, unsigned char key[16]) {
    uint64_t h[2] = {0xcbf29ce484222325ULL, 0x84222325cbf29ce4ULL};
    for (const unsigned char *c = (const unsigned char *)customer; *c; c++)
        for (int i = 0; i < 2; i++) h[i] = (h[i] ^ *c) * 0x100000001b3ULL;
    memcpy(key, h, 16);
}

int rpl_busy_add(rpl_busy *b, const char *customer, uint64_t job_seq) {
    unsigned char key[16];
    busy_key(customer, key);
    rpl_idmap_entry *e = idmap_find(&b->m, key);
    int64_t count = e ? (e->value & BUSY_COUNT_MASK) : 0;
    if (count >= BUSY_COUNT_MASK) return -1;
    return idmap_put_key(&b->m, key, (int64_t)(job_seq << BUSY_COUNT_BITS) | (count + 1));
}

bool rpl_busy_elsewhere(const rpl_busy *b, const char *customer, uint64_t job_seq) {
    unsigned char key[16];
    busy_key(customer, key);
    const rpl_idmap_entry *e = idmap_find(&b->m, key);
    return e && (uint64_t)e->value >> BUSY_COUNT_BITS != job_seq;
}

void rpl_busy_done(rpl_busy *b, const char *customer) {
    unsigned char key[16];
    busy_key(customer, key);
    rpl_idmap_entry *e = idmap_find(&b->m, key);
    if (!e) return;
    if ((e->value & BUSY_COUNT_MASK) > 1) e->value--;
    else idmap_remove_at(&b->m, (size_t)(e - b->m.v));
}

size_t rpl_busy_count(const rpl_busy *b) { return b->m.n; }

void rpl_busy_free(rpl_busy *b) { rpl_idmap_free(&b->m); }

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int64_t rpl_percentile(int64_t *v, size_t n, double p) {
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, cmp_i64);
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return v[rank ? rank - 1 : 0];
}
