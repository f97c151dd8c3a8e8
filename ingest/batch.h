/* batch: splitting the body of POST /api/v1/payments/batch into its items.
 *
 * Two formats: a JSON array of payment objects (Content-Type application/json), or NDJSON, one
 * payment object per line (application/x-ndjson; blank lines ignored). In an array, malformed JSON
 * fails the whole request (there is no way to tell where items begin); in NDJSON a malformed line
 * fails only its own item, so one bad line does not cost the others. Items that are valid JSON but
 * not objects are returned as they are: the payment validation names the problem per item. */
#ifndef FS_BATCH_H
#define FS_BATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "jsonfast.h"

#define BATCH_BIG_MAX 32 /* numbers too large for jansson in one body (jsonfast_loadb_big) */

typedef enum batch_format { BATCH_JSON_ARRAY, BATCH_NDJSON } batch_format;

typedef enum batch_error {
    BATCH_OK = 0,
    BATCH_MALFORMED, /* array format: not JSON */
    BATCH_NOT_ARRAY, /* array format: JSON, but not an array */
    BATCH_EMPTY,     /* no item */
    BATCH_TOO_MANY,  /* more than max_items */
} batch_error;

typedef struct batch_item {
    json_t *value;     /* owned; NULL when the line did not parse, or not parsed yet (text) */
    const char *text;  /* batch_split_lazy(): the item's JSON text, in the caller's body */
    size_t text_len;
    const char *src;   /* the item's text in the body, kept once parsed: its fingerprint */
    size_t src_len;
    unsigned line;     /* NDJSON: the item's line in the body (blank lines count), from 1 */
    char error[200];   /* value == NULL: "line 1 column 5: ..." (never quotes the input) */
    jsonfast_big *big; /* owned: numbers too large for jansson in value, read as +-1e99 (the
                        * validation must refuse the item: their places need field errors) */
    size_t nbig;
} batch_item;

typedef struct batch {
    batch_item *items;
    size_t n;
} batch;

/* The media types: "application/json" -> array, "application/x-ndjson" (also application/jsonl,
 * application/x-jsonlines) -> NDJSON, parameters allowed. Returns -1 for anything else. */
int batch_format_of(const char *content_type, batch_format *out);

/* Splits data into out->items (in order). Returns BATCH_OK, or an error with errstr (out is then
 * empty). batch_free(out) in both cases. */
batch_error batch_split(const char *data, size_t len, batch_format fmt, size_t max_items,
                        batch *out, char *errstr, size_t errstr_size);

/* As batch_split(), but items are left as text (value NULL, text/text_len set, valid while data
 * is) when that changes no verdict: NDJSON lines, and the objects of an array the fast parser reads
 * whole (jsonfast_array_items). Ingest validates most items straight from their text; the others
 * are parsed by batch_item_value(). Same return values and errstr as batch_split(). */
batch_error batch_split_lazy(const char *data, size_t len, batch_format fmt, size_t max_items,
                             batch *out, char *errstr, size_t errstr_size);

/* Item i's JSON value (owned by b), parsed from its text on first use; NULL when it is not JSON,
 * with the reason in b->items[i].error. */
json_t *batch_item_value(batch *b, size_t i);

/* What item i says, for deriving its payment_id from an Idempotency-Key (ingest.c): SHA-256 of its
 * JSON text with the whitespace outside strings removed, so that a client re-indenting its JSON
 * keeps the ids; another member order, escape or number spelling makes another fingerprint. The
 * same for an item whichever path split the batch (an array the fast parser declines is parsed
 * whole, and its items' texts found in the body); an item's text is hashed even when it is not
 * JSON. Returns 0, or -1 (neither text nor value, or out of memory). */
int batch_item_fingerprint(const batch *b, size_t i, unsigned char out[32]);

/* An item's fingerprint and how many earlier items of the batch have the same one (0 for the
 * first of its content; -1: no fingerprint (batch_item_fingerprint), sha unset). */
typedef struct batch_print {
    unsigned char sha[32];
    int repeat;
} batch_print;

/* Every item's batch_print into out[0..b->n): one digest context for the batch, repeats counted by
 * sorting the fingerprints (O(n log n)); the same values as batch_item_fingerprint() and comparing
 * each item with all the earlier ones. Returns 0, or -1 (out of memory). */
int batch_fingerprints(const batch *b, batch_print *out);

void batch_free(batch *b);

/* The stable error code of a batch_error ("malformed_json", "invalid_body", "empty_batch",
 * "too_many_items"). */
const char *batch_error_code(batch_error e);

/* The more telling of two failed items' codes, for the error of a batch's 503 (nothing stored):
 * shutting_down > broker_unavailable > overloaded > internal_error, then any other code (why:
 * docs/ingest.md, Batches). Either may be NULL (then the other). Returns a or b. */
const char *batch_failure_code(const char *a, const char *b);

#endif
