/* jsonfast: the JSON hot path of ingest, in front of jansson.
 *
 * jansson reads a byte at a time through a callback and a growable token buffer: ~14 us for a
 * 450-byte payment, and json_dumps() ~9 us to write one, more than everything else a payment costs.
 * This module does the same two jobs directly on memory, producing exactly what jansson would:
 *
 *  - jsonfast_loadb(): the same tree as json_loadb(buf, len, JSON_REJECT_DUPLICATES, err). It parses
 *    the common subset itself (objects, arrays, strings, integers, true/false/null, nesting up to
 *    32) and hands anything else (reals, huge integers, \u0000 and surrogate escapes, and every
 *    malformed input) to json_loadb, so jansson alone decides what is an error and how it is worded;
 *  - jsonfast_buf: a byte buffer with writers whose output is byte for byte what
 *    json_dumps(JSON_COMPACT) gives for the same values (same escapes, same key order). */
#ifndef FS_JSONFAST_H
#define FS_JSONFAST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* As json_loadb(buf, len, JSON_REJECT_DUPLICATES, err): a new reference, or NULL with err filled
 * (err may be NULL). */
json_t *jsonfast_loadb(const char *buf, size_t len, json_error_t *err);

/* Numbers jansson cannot hold. RFC 8259 sets no limit on a number's size, but jansson refuses an
 * integer beyond int64 and a real beyond double (json_error_numeric_overflow): such a body is valid
 * JSON whose client deserves a field error (422), not "malformed JSON" (400). */
#define JSONFAST_BIG_DEPTH 8 /* container levels a place is followed down (deeper: cut there) */
typedef struct jsonfast_big {
    size_t top;       /* the root's member (object) or element (array) that holds the number */
    char member[64];  /* the key of the member holding it: of the root (object root), or of the
                       * element top (array root); "" when there is none */
    char path[128];   /* its place, keys joined by '.' and "[i]" for array elements, from the root
                       * (object root) or from element top (array root): "amount", "metadata.n" */
    bool negative;
    size_t at[JSONFAST_BIG_DEPTH]; /* the index in each container from the root down */
    size_t depth;
} jsonfast_big;

/* As jsonfast_loadb(), but numbers too large for jansson do not fail the parse: each is read as
 * 1e99 (-1e99 when negative), a real no field accepts as it is (an amount is then out of range),
 * and its place is reported in big[0..*nbig). The caller must refuse such a body (the value is not
 * the client's): a field error for each place whose member has none yet. More than max such numbers
 * fail as jsonfast_loadb() does. Error positions stay the input's (the text replaced keeps its
 * length). */
json_t *jsonfast_loadb_big(const char *buf, size_t len, json_error_t *err, jsonfast_big *big,
                           size_t max, size_t *nbig);

/* A JSON text whose value is a scalar (string, number, true, false, null): valid JSON (RFC 8259),
 * which jsonfast_loadb() refuses all the same ("'[' or '{' expected", as json_loadb() without
 * JSON_DECODE_ANY). For the error path of a parse: a new reference to that scalar, so that the
 * client hears "JSON, but not an object" rather than "malformed"; NULL for any other text. */
json_t *jsonfast_load_scalar(const char *buf, size_t len);

/* jansson's error message without the input it quotes (" near '...'", which may be a piece of an
 * email or a card fingerprint): cut in place; returns err->text. Use it on untrusted input. */
const char *jsonfast_error_text(json_error_t *err);

/* Only the fast parser: NULL when buf is outside its subset or not JSON (no error details). For
 * tests, which compare it with jansson. */
json_t *jsonfast_parse(const char *buf, size_t len);

/* Reading without building a tree (ingest validates payments straight from the request text). */
typedef struct jsonfast_span {
    const char *text; /* into the caller's buffer */
    size_t len;
} jsonfast_span;

/* The elements of the JSON array in buf, every one an object: fills items (up to max) and returns
 * how many, when buf is a valid non-empty JSON array (as jansson reads it) in the parser's subset;
 * each span then loads alone with jsonfast_loadb() without fail. -1 otherwise (empty, more than
 * max, an element that is not an object, malformed...): load buf with jsonfast_loadb() instead. */
int jsonfast_array_items(const char *buf, size_t len, jsonfast_span *items, size_t max);

typedef enum jsonfast_type {
    JSONFAST_STRING, /* str: the decoded value, NUL-terminated (it holds no NUL itself) */
    JSONFAST_NULL,
    JSONFAST_OBJECT, /* str: the object's text (checked JSON), not NUL-terminated */
    JSONFAST_OTHER,  /* str: the text of a number, true, false or an array */
} jsonfast_type;

typedef struct jsonfast_member {
    const char *key; /* decoded, NUL-terminated */
    size_t key_len;
    jsonfast_type type;
    const char *str;
    size_t len;
} jsonfast_member;

/* The members of the JSON object in buf, in document order, when buf is one valid JSON object (as
 * json_loadb with JSON_REJECT_DUPLICATES reads it) of at most max members within the subset. Keys
 * and string values are decoded into scratch (scratch_size >= len + 1 always suffices), which
 * holds them until the caller reuses it. Returns the number of members, or -1: then load buf with
 * jsonfast_loadb() (which also gives jansson's error for malformed input). */
int jsonfast_members(const char *buf, size_t len, jsonfast_member *m, size_t max, char *scratch,
                     size_t scratch_size);

/* A growable output buffer. Zero-initialize it (jsonfast_buf b = {0}); after a failure (out of
 * memory, a string that is not UTF-8) every later write is ignored and jsonfast_finish() returns
 * NULL. jsonfast_finish() or jsonfast_discard() releases it. */
typedef struct jsonfast_buf {
    char *data;
    size_t len, cap;
    bool failed;
} jsonfast_buf;

/* Raw bytes, as they are (punctuation, pre-escaped text). */
void jsonfast_raw(jsonfast_buf *b, const char *s, size_t n);
/* A JSON string with jansson's escapes; s must be UTF-8 (else the buffer fails, as json_dumps). */
void jsonfast_str(jsonfast_buf *b, const char *s, size_t n);
void jsonfast_int(jsonfast_buf *b, int64_t v);
/* Any value, compact, as json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY). */
void jsonfast_value(jsonfast_buf *b, const json_t *v);

/* The NUL-terminated text (malloc'd: ownership passes to the caller, who frees it) and its length
 * in *len (may be NULL); NULL when a write failed. The buffer is empty again afterwards. */
char *jsonfast_finish(jsonfast_buf *b, size_t *len);
void jsonfast_discard(jsonfast_buf *b);

#endif
