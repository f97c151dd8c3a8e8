/* batch: JSON array / NDJSON splitting (see batch.h). */
#include "batch.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jsonfast.h"

/* True when ct is type (any case), optionally followed by parameters. */
static bool media_is(const char *ct, const char *type) {
    size_t n = strlen(type);
    ct += strspn(ct, " \t");
    if (strncasecmp(ct, type, n) != 0) return false;
    ct += n;
    ct += strspn(ct, " \t");
    return *ct == '\0' || *ct == ';';
}

int batch_format_of(const char *content_type, batch_format *out) {
    if (!content_type) return -1;
    if (media_is(content_type, "application/json")) *out = BATCH_JSON_ARRAY;
    else if (media_is(content_type, "application/x-ndjson") ||
             media_is(content_type, "application/jsonl") ||
             media_is(content_type, "application/x-jsonlines"))
        *out = BATCH_NDJSON;
    else
        return -1;
    return 0;
}

const char *batch_error_code(batch_error e) {
    switch (e) {
    case BATCH_OK: return "ok";
    case BATCH_MALFORMED: return "malformed_json";
    case BATCH_NOT_ARRAY: return "invalid_body";
    case BATCH_EMPTY: return "empty_batch";
    case BATCH_TOO_MANY: return "too_many_items";
    }
    return "invalid_body";
}

/* By what the client should do: shutting_down, retry on another instance now (this one is going
 * away, whatever else failed); broker_unavailable, back off: Kafka is down for every instance, and
 * a client waiting for it also gives a passing overload time; overloaded, this instance's queues
 * were full: back off here or try another; internal_error, one item's own trouble (a bug, out of
 * memory) that says least about when a retry will work. */
static const char *const FAILURE_ORDER[] = {"shutting_down", "broker_unavailable", "overloaded",
                                            "internal_error"};

static size_t failure_rank(const char *code) {
    size_t n = sizeof FAILURE_ORDER / sizeof FAILURE_ORDER[0], i = 0;
    while (i < n && strcmp(code, FAILURE_ORDER[i]) != 0) i++;
    return i;
}

const char *batch_failure_code(const char *a, const char *b) {
    if (!a || !b) return a ? a : b;
    return failure_rank(b) < failure_rank(a) ? b : a;
}

/* The places of numbers too large for jansson (jsonfast_loadb_big) to the items holding them. */
static int give_big(batch *out, const jsonfast_big *big, size_t nbig) {
    for (size_t k = 0; k < nbig; k++) {
        batch_item *it = big[k].top < out->n ? &out->items[big[k].top] : NULL;
        jsonfast_big *grown = it ? realloc(it->big, (it->nbig + 1) * sizeof *grown) : NULL;
        if (!grown) return -1;
        it->big = grown;
        it->big[it->nbig++] = big[k];
    }
    return 0;
}

/* The texts of the elements of the JSON array in data (valid JSON: jansson read it) into the items'
 * src, so that their fingerprints are those of the fast path (split_array_lazy). */
static void array_sources(const char *data, size_t len, batch *out) {
    size_t i = strspn(data, " \t\r\n");
    if (i >= len || data[i++] != '[') return;
    for (size_t k = 0; k < out->n; k++) {
        while (i < len && strchr(" \t\r\n", data[i])) i++;
        size_t start = i, depth = 0;
        bool in_string = false;
        for (; i < len; i++) {
            char c = data[i];
            if (in_string) {
                if (c == '\\') i++;
                else if (c == '"') in_string = false;
            } else if (c == '"') {
                in_string = true;
            } else if (c == '[' || c == '{') {
                depth++;
            } else if (c == ']' || c == '}' || c == ',') {
                if (depth == 0) break;
                if (c != ',') depth--;
            }
        }
        size_t end = i;
        while (end > start && strchr(" \t\r\n", data[end - 1])) end--;
        out->items[k].src = data + start;
        out->items[k].src_len = end - start;
        i++; /* past the ',' (or the closing ']') */
    }
}

static batch_error split_array(const char *data, size_t len, size_t max_items, batch *out,
                               char *errstr, size_t errstr_size) {
    json_error_t jerr;
    jsonfast_big big[BATCH_BIG_MAX];
    size_t nbig = 0;
    json_t *arr = jsonfast_loadb_big(data, len, &jerr, big, BATCH_BIG_MAX, &nbig);
    batch_error rc = BATCH_OK;
    if (!arr) arr = jsonfast_load_scalar(data, len); /* JSON all the same: not an array, below */
    if (!arr) {
        snprintf(errstr, errstr_size, "line %d column %d: %s", jerr.line, jerr.column,
                 jsonfast_error_text(&jerr));
        return BATCH_MALFORMED;
    }
    if (!json_is_array(arr)) {
        snprintf(errstr, errstr_size, "the body must be a JSON array of payments");
        rc = BATCH_NOT_ARRAY;
    } else if (json_array_size(arr) == 0) {
        snprintf(errstr, errstr_size, "the batch has no payment");
        rc = BATCH_EMPTY;
    } else if (json_array_size(arr) > max_items) {
        snprintf(errstr, errstr_size, "at most %zu payments per batch, got %zu", max_items,
                 json_array_size(arr));
        rc = BATCH_TOO_MANY;
    } else if (!(out->items = calloc(json_array_size(arr), sizeof *out->items))) {
        snprintf(errstr, errstr_size, "out of memory");
        rc = BATCH_MALFORMED;
    } else {
        out->n = json_array_size(arr);
        for (size_t i = 0; i < out->n; i++) out->items[i].value = json_incref(json_array_get(arr, i));
        array_sources(data, len, out);
        if (give_big(out, big, nbig) != 0) {
            snprintf(errstr, errstr_size, "out of memory");
            batch_free(out);
            rc = BATCH_MALFORMED;
        }
    }
    json_decref(arr);
    return rc;
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

/* The array's objects as spans, when the fast parser reads the whole array (else -1: the tree
 * path, which also words the errors). */
static int split_array_lazy(const char *data, size_t len, size_t max_items, batch *out) {
    jsonfast_span *spans = malloc((max_items ? max_items : 1) * sizeof *spans);
    int n = spans ? jsonfast_array_items(data, len, spans, max_items) : -1;
    if (n > 0 && (out->items = calloc((size_t)n, sizeof *out->items))) {
        out->n = (size_t)n;
        for (size_t i = 0; i < out->n; i++) {
            out->items[i].text = out->items[i].src = spans[i].text;
            out->items[i].text_len = out->items[i].src_len = spans[i].len;
        }
    }
    free(spans);
    return out->n > 0 ? 0 : -1;
}

/* NDJSON: one item per non-blank line, as text (parsed by batch_item_value). */
static batch_error split_ndjson(const char *data, size_t len, size_t max_items, batch *out,
                                char *errstr, size_t errstr_size) {
    size_t lines = 0;
    const char *end = data + len;
    for (const char *p = data; p < end;) { /* count first: refuse before parsing anything */
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (!blank(p, n)) lines++;
        p += n + 1;
    }
    if (lines == 0 || lines > max_items) {
        snprintf(errstr, errstr_size, lines ? "at most %zu payments per batch, got %zu"
                                            : "the batch has no payment", max_items, lines);
        return lines ? BATCH_TOO_MANY : BATCH_EMPTY;
    }
    if (!(out->items = calloc(lines, sizeof *out->items))) {
        snprintf(errstr, errstr_size, "out of memory");
        return BATCH_MALFORMED;
    }
    unsigned line = 0;
    for (const char *p = data; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line++;
        if (!blank(p, n)) {
            batch_item *it = &out->items[out->n++];
            it->text = it->src = p;
            it->text_len = it->src_len = n;
            it->line = line;
        }
        p += n + 1;
    }
    return BATCH_OK;
}

json_t *batch_item_value(batch *b, size_t i) {
    batch_item *it = &b->items[i];
    json_error_t jerr;
    jsonfast_big big[BATCH_BIG_MAX];
    size_t nbig = 0;
    if (it->value || !it->text) return it->value;
    it->value = jsonfast_loadb_big(it->text, it->text_len, &jerr, big, BATCH_BIG_MAX, &nbig);
    /* A line "1" or "null" is JSON: the payment validation refuses it as an array's element */
    if (!it->value) it->value = jsonfast_load_scalar(it->text, it->text_len);
    if (nbig && (it->big = malloc(nbig * sizeof *it->big))) {
        memcpy(it->big, big, nbig * sizeof *it->big);
        it->nbig = nbig;
    } else if (nbig) { /* out of memory: refused whole rather than taken with a stand-in value */
        json_decref(it->value);
        it->value = NULL;
        snprintf(it->error, sizeof it->error, "line %u: out of memory", it->line);
    } else if (!it->value) { /* only NDJSON lines can fail here: arrays were read whole */
        snprintf(it->error, sizeof it->error, "line %u column %d: %.100s", it->line, jerr.column,
                 jsonfast_error_text(&jerr));
    }
    it->text = NULL; /* parsed once, right or wrong */
    return it->value;
}

batch_error batch_split_lazy(const char *data, size_t len, batch_format fmt, size_t max_items,
                             batch *out, char *errstr, size_t errstr_size) {
    memset(out, 0, sizeof *out);
    if (fmt == BATCH_NDJSON) return split_ndjson(data, len, max_items, out, errstr, errstr_size);
    if (split_array_lazy(data, len, max_items, out) == 0) return BATCH_OK;
    return split_array(data, len, max_items, out, errstr, errstr_size);
}

batch_error batch_split(const char *data, size_t len, batch_format fmt, size_t max_items,
                        batch *out, char *errstr, size_t errstr_size) {
    batch_error rc = batch_split_lazy(data, len, fmt, max_items, out, errstr, errstr_size);
    for (size_t i = 0; rc == BATCH_OK && i < out->n; i++) batch_item_value(out, i);
    return rc;
}

/* SHA-256 of text minus the whitespace outside strings, with c (reset here). 0, or -1. */
static int hash_compact(EVP_MD_CTX *c, const char *text, size_t len, unsigned char out[32]) {
    const char *run = text, *end = text + len;
    bool in_string = false;
    unsigned int n = 0;
    int ok = EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    for (const char *p = text; ok && p < end; p++) {
        if (in_string) {
            if (*p == '\\' && p + 1 < end) p++;
            else if (*p == '"') in_string = false;
        } else if (*p == '"') {
            in_string = true;
        } else if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            ok = EVP_DigestUpdate(c, run, (size_t)(p - run));
            run = p + 1;
        }
    }
    ok = ok && EVP_DigestUpdate(c, run, (size_t)(end - run)) && EVP_DigestFinal_ex(c, out, &n);
    return ok ? 0 : -1;
}

/* Item i's fingerprint with c. 0, or -1 (neither text nor value, out of memory). */
static int item_fingerprint(EVP_MD_CTX *c, const batch *b, size_t i, unsigned char out[32]) {
    const batch_item *it = &b->items[i];
    if (it->src) return hash_compact(c, it->src, it->src_len, out);
    if (!it->value) return -1;
    char *s = json_dumps(it->value, JSON_COMPACT | JSON_ENCODE_ANY);
    int rc = s ? hash_compact(c, s, strlen(s), out) : -1;
    free(s);
    return rc;
}

int batch_item_fingerprint(const batch *b, size_t i, unsigned char out[32]) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int rc = c ? item_fingerprint(c, b, i, out) : -1;
    EVP_MD_CTX_free(c);
    return rc;
}

/* qsort order of batch_print pointers: by fingerprint, then by position (the array's order). */
static int print_cmp(const void *a, const void *b) {
    const batch_print *x = *(batch_print *const *)a, *y = *(batch_print *const *)b;
    int d = memcmp(x->sha, y->sha, sizeof x->sha);
    return d ? d : (x > y) - (x < y);
}

int batch_fingerprints(const batch *b, batch_print *out) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    batch_print **order = malloc((b->n ? b->n : 1) * sizeof *order);
    size_t m = 0;
    int rc = c && order ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < b->n; i++) {
        out[i].repeat = item_fingerprint(c, b, i, out[i].sha) == 0 ? 0 : -1;
        if (out[i].repeat == 0) order[m++] = &out[i];
    }
    if (rc == 0) {
        /* equal fingerprints end up side by side, in their order in the batch: O(n log n) */
        qsort(order, m, sizeof *order, print_cmp);
        for (size_t k = 1; k < m; k++)
            if (memcmp(order[k]->sha, order[k - 1]->sha, sizeof order[k]->sha) == 0)
                order[k]->repeat = order[k - 1]->repeat + 1;
    }
    free(order);
    EVP_MD_CTX_free(c);
    return rc;
}

void batch_free(batch *b) {
    for (size_t i = 0; i < b->n; i++) {
        json_decref(b->items[i].value);
        free(b->items[i].big);
    }
    free(b->items);
    memset(b, 0, sizeof *b);
}
