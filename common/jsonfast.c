/* jsonfast: the JSON hot path of ingest, in front of jansson (see jsonfast.h).
 *
 * The parser is a plain recursive descent over memory. Whatever it is not sure to read exactly as
 * jansson does makes it give up (return NULL), and jsonfast_loadb() then asks json_loadb(): so a
 * bug here can cost speed, never change a verdict, as long as what it does accept it builds the
 * way jansson would (tests/unit/test_jsonfast.c compares the two on valid and broken inputs). */
#include "jsonfast.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "fsutil.h"

#define JF_MAX_DEPTH 32        /* deeper documents go to jansson (its own limit is 2048) */
#define JF_ESC_MAX 1024        /* decoded bytes of a string with escapes; longer: jansson */
#define JF_KEY_ESC_MAX 256     /* same, for an object key with escapes */
#define JF_CHECK_KEYS_MAX 64   /* members of one object when only checking; more: jansson */
#define JF_INT_DIGITS_MAX 18   /* always fits int64_t; longer integers (overflow?): jansson */
#define JF_DUMP_DEPTH_MAX 2048 /* jsonfast_value() refuses deeper values (cycles cannot occur) */

/* ------------------------------------------------------------------------------------ UTF-8 */

/* Length of the valid UTF-8 sequence at p (p[0] >= 0x80), or 0 when it is not one. The same rules
 * as jansson's utf8_check_full(): no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Bytes that stand for themselves inside a JSON string, both ways: printable ASCII but the quote
 * and the backslash (controls, escapes and UTF-8 sequences take the slow path). */
static const bool PLAIN[256] = {
#define R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
    R16(false), R16(false),                                           /* 0x00..0x1f */
    true, true, false, true, true, true, true, true, true, true, true, true, true, true, true, true,
    R16(true), R16(true),                                             /* 0x30..0x4f */
    true, true, true, true, true, true, true, true, true, true, true, true, false, true, true, true,
    R16(true), R16(true),                                             /* 0x60..0x7f */
    R16(false), R16(false), R16(false), R16(false), R16(false), R16(false), R16(false), R16(false),
#undef R16
};

/* The first byte at or after p (before end) that is not PLAIN. Strings are scanned 16 bytes at a
 * time where SSE2 is there (every x86-64): the byte loop was most of the parsing time. */
static const unsigned char *plain_run(const unsigned char *p, const unsigned char *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* signed compare: the controls (0x00..0x1f) and every byte >= 0x80 are below 0x20 */
        __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                    _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(stop);
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#endif
    while (p < end && PLAIN[*p]) p++;
    return p;
}

/* ------------------------------------------------------------------------------------ parser */

typedef struct jf {
    const unsigned char *p, *end;
    int depth;
    bool build; /* false: only check (jf_value returns json_null() for "fine"), allocate nothing */
    char tmp[JF_ESC_MAX]; /* decoded string values (copied by jansson right away) */
} jf;

static json_t *jf_value(jf *j);

static void jf_ws(jf *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool jf_peek(const jf *j, char c) { return j->p < j->end && *j->p == (unsigned char)c; }

/* \uXXXX at p (after the "\u"), for a code point jansson decodes alone: not NUL (refused without
 * JSON_ALLOW_NUL) and not a surrogate (pairs and lone halves are left to jansson). -1 otherwise. */
static long jf_hex4(const unsigned char *p, const unsigned char *end) {
    long v = 0;
    if (end - p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v += c - '0';
        else if (c >= 'a' && c <= 'f') v += c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v += c - 'A' + 10;
        else return -1;
    }
    return v == 0 || (v >= 0xd800 && v <= 0xdfff) ? -1 : v;
}

/* One escape at p (just after the backslash) decoded into out (room for 3 bytes). Returns the
 * bytes written and advances *pp past the escape, or 0 outside the subset. */
static size_t jf_escape(const unsigned char **pp, const unsigned char *end, char *out) {
    const unsigned char *p = *pp;
    static const char FROM[] = "\"\\/bfnrt", TO[] = "\"\\/\b\f\n\r\t";
    if (p >= end) return 0;
    const char *hit = *p ? strchr(FROM, *p) : NULL;
    if (hit) {
        *out = TO[hit - FROM];
        *pp = p + 1;
        return 1;
    }
    long cp = *p == 'u' ? jf_hex4(p + 1, end) : -1;
    if (cp < 0) return 0;
    *pp = p + 5;
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) return out[0] = (char)(0xc0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3f)), 2;
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

/* The rest of a string with escapes, from p, decoded into buf (cap bytes, o already used). */
static int jf_string_escaped(jf *j, const unsigned char *p, char *buf, size_t cap, size_t o,
                             size_t *n) {
    while (p < j->end) {
        unsigned c = *p;
        size_t k;
        if (c == '"') {
            j->p = p + 1;
            *n = o;
            return 0;
        }
        if (o + 4 > cap || c < 0x20) return -1;
        if (c == '\\') {
            p++;
            if (!(k = jf_escape(&p, j->end, buf + o))) return -1;
        } else if (c < 0x80) {
            buf[o] = (char)c, k = 1, p++;
        } else {
            if (!(k = utf8_seq(p, j->end))) return -1;
            memcpy(buf + o, p, k);
            p += k;
        }
        o += k;
    }
    return -1;
}

/* The string at j->p (its opening quote): *s, *n point into the input when it has no escapes,
 * else into buf (cap bytes) where it was decoded. -1 outside the subset. */
static int jf_string(jf *j, char *buf, size_t cap, const char **s, size_t *n) {
    const unsigned char *start = j->p + 1, *p = start;
    while (p < j->end) {
        if ((p = plain_run(p, j->end)) >= j->end) break;
        unsigned c = *p;
        if (c == '"') {
            *s = (const char *)start;
            *n = (size_t)(p - start);
            j->p = p + 1;
            return 0;
        }
        if (c == '\\') break;
        if (c < 0x20) return -1;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t k = utf8_seq(p, j->end);
        if (!k) return -1;
        p += k;
    }
    size_t o = (size_t)(p - start);
    if (p >= j->end || o > cap) return -1;
    memcpy(buf, start, o);
    *s = buf;
    return jf_string_escaped(j, p, buf, cap, o, n);
}

static json_t *jf_number(jf *j) {
    const unsigned char *p = j->p;
    bool neg = *p == '-';
    int64_t v = 0;
    int digits = 0;
    if (neg) p++;
    if (p >= j->end || *p < '0' || *p > '9') return NULL;
    if (*p == '0') {
        p++;
        if (p < j->end && *p >= '0' && *p <= '9') return NULL; /* leading zero: jansson's error */
    } else {
        for (; p < j->end && *p >= '0' && *p <= '9'; p++) {
            if (++digits > JF_INT_DIGITS_MAX) return NULL;
            v = v * 10 + (*p - '0');
        }
    }
    if (p < j->end && (*p == '.' || *p == 'e' || *p == 'E')) return NULL; /* reals: jansson */
    j->p = p;
    return j->build ? json_integer(neg ? -v : v) : json_null();
}

static json_t *jf_literal(jf *j, const char *word, json_t *v) {
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return NULL;
    j->p += n; /* "truex": the caller finds no separator after it and gives up */
    return v;
}

/* Checking only: is key (a span of the input) already among seen[0..n)? */
static bool jf_seen(const char *const *seen, const size_t *seen_len, size_t n, const char *k,
                    size_t kn) {
    for (size_t i = 0; i < n; i++)
        if (seen_len[i] == kn && memcmp(seen[i], k, kn) == 0) return true;
    return false;
}

/* One "key": value member into o (building), or checked against the keys seen so far (checking:
 * keys with escapes are not handled there, so a duplicate can be found by comparing bytes). */
static int jf_member(jf *j, json_t *o, const char **seen, size_t *seen_len, size_t *nseen) {
    char kbuf[JF_KEY_ESC_MAX];
    const char *k;
    size_t kn;
    json_t *v;
    if (!jf_peek(j, '"') || jf_string(j, kbuf, sizeof kbuf, &k, &kn) != 0) return -1;
    if (j->build ? json_object_getn(o, k, kn) != NULL /* a duplicate: jansson's error */
                 : k == kbuf || *nseen >= JF_CHECK_KEYS_MAX || jf_seen(seen, seen_len, *nseen, k, kn))
        return -1;
    jf_ws(j);
    if (!jf_peek(j, ':')) return -1;
    j->p++;
    jf_ws(j);
    if (!(v = jf_value(j))) return -1;
    if (!j->build) {
        seen[*nseen] = k;
        seen_len[(*nseen)++] = kn;
        return 0;
    }
    return json_object_setn_new_nocheck(o, k, kn, v); /* takes v, also on failure */
}

static json_t *jf_object(jf *j) {
    const char *seen[JF_CHECK_KEYS_MAX];
    size_t seen_len[JF_CHECK_KEYS_MAX], nseen = 0;
    json_t *o = j->build ? json_object() : json_null();
    j->p++;
    jf_ws(j);
    if (jf_peek(j, '}')) {
        j->p++;
        return o;
    }
    while (o) {
        if (jf_member(j, o, seen, seen_len, &nseen) != 0) goto failed;
        jf_ws(j);
        if (jf_peek(j, '}')) {
            j->p++;
            return o;
        }
        if (!jf_peek(j, ',')) goto failed;
        j->p++;
        jf_ws(j);
    }
failed:
    json_decref(o);
    return NULL;
}

static json_t *jf_array(jf *j) {
    json_t *a = j->build ? json_array() : json_null(), *v;
    j->p++;
    jf_ws(j);
    if (jf_peek(j, ']')) {
        j->p++;
        return a;
    }
    while (a) {
        if (!(v = jf_value(j)) || (j->build && json_array_append_new(a, v) != 0)) goto failed;
        jf_ws(j);
        if (jf_peek(j, ']')) {
            j->p++;
            return a;
        }
        if (!jf_peek(j, ',')) goto failed;
        j->p++;
        jf_ws(j);
    }
failed:
    json_decref(a);
    return NULL;
}

static json_t *jf_value(jf *j) {
    const char *s;
    size_t n;
    json_t *v = NULL;
    if (j->p >= j->end) return NULL;
    switch (*j->p) {
    case '{':
    case '[':
        if (j->depth >= JF_MAX_DEPTH) return NULL;
        j->depth++;
        v = *j->p == '{' ? jf_object(j) : jf_array(j);
        j->depth--;
        return v;
    case '"':
        if (jf_string(j, j->tmp, sizeof j->tmp, &s, &n) != 0) return NULL;
        return j->build ? json_stringn_nocheck(s, n) : json_null();
    case 't': return jf_literal(j, "true", json_true());
    case 'f': return jf_literal(j, "false", json_false());
    case 'n': return jf_literal(j, "null", json_null());
    default: return jf_number(j);
    }
}

static void jf_init(jf *j, const char *buf, size_t len, bool build) {
    j->p = (const unsigned char *)buf;
    j->end = j->p + len;
    j->depth = 0;
    j->build = build;
}

/* After the top-level value: only whitespace may follow (jansson's end-of-input check). */
static bool jf_at_end(jf *j) {
    jf_ws(j);
    return j->p == j->end;
}

json_t *jsonfast_parse(const char *buf, size_t len) {
    jf j;
    json_t *v = NULL;
    jf_init(&j, buf, len, true);
    jf_ws(&j);
    if (jf_peek(&j, '{') || jf_peek(&j, '[')) v = jf_value(&j); /* no JSON_DECODE_ANY */
    if (v && !jf_at_end(&j)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

json_t *jsonfast_loadb(const char *buf, size_t len, json_error_t *err) {
    json_t *v = jsonfast_parse(buf, len);
    return v ? v : json_loadb(buf, len, JSON_REJECT_DUPLICATES, err);
}

/* --------------------------------------------------------------------- numbers beyond jansson */

static bool jf_digit(char c) { return c >= '0' && c <= '9'; }

static bool jf_number_char(char c) {
    return jf_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* Whether s[0..n) is a JSON number (RFC 8259 grammar) that jansson refuses as too large: an integer
 * strtoll cannot hold, a real strtod overflows (jansson's own tests: underflow is accepted). */
static bool jf_number_overflows(const char *s, size_t n) {
    size_t i = s[0] == '-';
    bool real = false;
    if (i >= n || !jf_digit(s[i])) return false;
    if (s[i] == '0') i++;
    else
        while (i < n && jf_digit(s[i])) i++;
    if (i < n && s[i] == '.') {
        real = true;
        if (++i >= n || !jf_digit(s[i])) return false;
        while (i < n && jf_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        real = true;
        if (++i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !jf_digit(s[i])) return false;
        while (i < n && jf_digit(s[i])) i++;
    }
    char *t = i == n ? strndup(s, n) : NULL;
    bool over = false;
    if (t) {
        errno = 0;
        if (real) {
            double d = strtod(t, NULL);
            over = errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL);
        } else {
            (void)strtoll(t, NULL, 10);
            over = errno == ERANGE;
        }
    }
    free(t);
    return over;
}

/* Replaces, in the JSON text s, every number jansson refuses by 1e99 or -1e99 padded with spaces
 * (a too large number is at least 5 characters: "1e309"), noting the first max places. Returns how
 * many were replaced. The text is only scanned (strings skipped, containers counted): jansson
 * decides afterwards whether it is JSON. */
static size_t jf_big_replace(char *s, size_t len, jsonfast_big *big, size_t max) {
    size_t at[JSONFAST_BIG_DEPTH], depth = 0, n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '"') { /* a string: to its closing quote */
            for (i++; i < len && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
        } else if (c == '{' || c == '[') {
            if (depth < JSONFAST_BIG_DEPTH) at[depth] = 0;
            depth++;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        } else if (c == ',' && depth > 0 && depth <= JSONFAST_BIG_DEPTH) {
            at[depth - 1]++;
        } else if (c == '-' || jf_digit(c)) {
            size_t e = i;
            while (e < len && jf_number_char(s[e])) e++;
            const char *repl = c == '-' ? "-1e99" : "1e99";
            size_t rn = strlen(repl);
            if (e - i >= rn && jf_number_overflows(s + i, e - i)) {
                if (n < max) {
                    jsonfast_big *b = &big[n];
                    memset(b, 0, sizeof *b);
                    b->negative = c == '-';
                    b->depth = depth < JSONFAST_BIG_DEPTH ? depth : JSONFAST_BIG_DEPTH;
                    memcpy(b->at, at, b->depth * sizeof at[0]);
                }
                n++;
                memcpy(s + i, repl, rn);
                memset(s + i + rn, ' ', e - i - rn);
            }
            i = e - 1;
        }
    }
    return n;
}

/* Appends to out (size bytes, used *o) printf-style, cutting at the end. */
static void jf_append(char *out, size_t size, size_t *o, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void jf_append(char *out, size_t size, size_t *o, const char *fmt, ...) {
    va_list ap;
    if (*o + 1 >= size) return;
    va_start(ap, fmt);
    int w = vsnprintf(out + *o, size - *o, fmt, ap);
    va_end(ap);
    if (w > 0) *o = *o + (size_t)w < size ? *o + (size_t)w : size - 1;
}

/* b's member and path, by following its indexes down the parsed tree (jansson keeps an object's
 * members in document order); both may be cut to their buffers, never inside a character. */
static void jf_big_name(const json_t *root, jsonfast_big *b) {
    const json_t *v = root;
    size_t o = 0, member_level = json_is_array(root) ? 1 : 0;
    b->top = b->depth ? b->at[0] : 0;
    for (size_t k = 0; k < b->depth && v; k++) {
        if (json_is_object(v)) {
            void *it = json_object_iter((json_t *)v); /* not modified */
            for (size_t i = 0; it && i < b->at[k]; i++) it = json_object_iter_next((json_t *)v, it);
            if (!it) break;
            const char *key = json_object_iter_key(it);
            if (k == member_level) snprintf(b->member, sizeof b->member, "%s", key);
            jf_append(b->path, sizeof b->path, &o, "%s%s", o ? "." : "", key);
            v = json_object_iter_value(it);
        } else if (json_is_array(v)) {
            if (k > 0 || !json_is_array(root)) jf_append(b->path, sizeof b->path, &o, "[%zu]", b->at[k]);
            v = json_array_get(v, b->at[k]);
        } else {
            break;
        }
    }
    fs_utf8_trim(b->member);
    fs_utf8_trim(b->path);
}

json_t *jsonfast_loadb_big(const char *buf, size_t len, json_error_t *err, jsonfast_big *big,
                           size_t max, size_t *nbig) {
    json_error_t again;
    *nbig = 0;
    json_t *v = jsonfast_loadb(buf, len, err);
    if (v || !err || json_error_code(err) != json_error_numeric_overflow) return v;
    char *copy = malloc(len ? len : 1);
    if (!copy) return NULL; /* err: the overflow */
    memcpy(copy, buf, len);
    size_t n = jf_big_replace(copy, len, big, max);
    if (n > 0 && n <= max) {
        v = json_loadb(copy, len, JSON_REJECT_DUPLICATES, &again);
        if (!v) *err = again; /* a later error: the same positions (lengths kept) */
    }
    for (size_t i = 0; v && i < n; i++) jf_big_name(v, &big[i]);
    if (v) *nbig = n;
    free(copy);
    return v;
}

json_t *jsonfast_load_scalar(const char *buf, size_t len) {
    size_t i = 0;
    while (i < len && buf[i] && strchr(" \t\r\n", buf[i])) i++; /* RFC 8259 whitespace */
    if (i < len && (buf[i] == '{' || buf[i] == '[')) return NULL; /* malformed: no second parse */
    return json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
}

const char *jsonfast_error_text(json_error_t *err) {
    char *near = strstr(err->text, " near ");
    if (near) *near = '\0';
    return err->text;
}

int jsonfast_array_items(const char *buf, size_t len, jsonfast_span *items, size_t max) {
    jf j;
    size_t n = 0;
    jf_init(&j, buf, len, false);
    jf_ws(&j);
    if (!jf_peek(&j, '[')) return -1;
    j.p++;
    j.depth = 1;
    jf_ws(&j);
    while (!jf_peek(&j, ']')) {
        if (n >= max || !jf_peek(&j, '{')) return -1; /* only objects: each item loads alone */
        items[n].text = (const char *)j.p;
        if (!jf_value(&j)) return -1;
        items[n].len = (size_t)((const char *)j.p - items[n].text);
        n++;
        jf_ws(&j);
        if (jf_peek(&j, ']')) break;
        if (!jf_peek(&j, ',')) return -1;
        j.p++;
        jf_ws(&j);
        if (jf_peek(&j, ']')) return -1; /* a trailing comma */
    }
    j.p++;
    return n > 0 && jf_at_end(&j) ? (int)n : -1;
}

/* A string (at its opening quote) decoded into scratch at *used, NUL-terminated there. */
static int jf_string_into(jf *j, char *scratch, size_t size, size_t *used, const char **s,
                          size_t *n) {
    const char *v;
    size_t vn;
    if (*used >= size || jf_string(j, scratch + *used, size - *used - 1, &v, &vn) != 0) return -1;
    if (*used + vn + 1 > size) return -1;
    memmove(scratch + *used, v, vn); /* v is in the input, or already there */
    scratch[*used + vn] = '\0';
    *s = scratch + *used;
    *n = vn;
    *used += vn + 1;
    return 0;
}

/* One member of jsonfast_members(): key and value. */
static int jf_flat_member(jf *j, jsonfast_member *m, char *scratch, size_t size, size_t *used) {
    const unsigned char *start;
    if (!jf_peek(j, '"') || jf_string_into(j, scratch, size, used, &m->key, &m->key_len) != 0)
        return -1;
    jf_ws(j);
    if (!jf_peek(j, ':')) return -1;
    j->p++;
    jf_ws(j);
    start = j->p;
    if (jf_peek(j, '"')) {
        m->type = JSONFAST_STRING;
        return jf_string_into(j, scratch, size, used, &m->str, &m->len);
    }
    if (!jf_value(j)) return -1; /* checked, not built */
    m->type = *start == 'n' ? JSONFAST_NULL : *start == '{' ? JSONFAST_OBJECT : JSONFAST_OTHER;
    m->str = (const char *)start;
    m->len = (size_t)(j->p - start);
    return 0;
}

int jsonfast_members(const char *buf, size_t len, jsonfast_member *m, size_t max, char *scratch,
                     size_t scratch_size) {
    jf j;
    size_t n = 0, used = 0;
    jf_init(&j, buf, len, false);
    jf_ws(&j);
    if (!jf_peek(&j, '{')) return -1;
    j.p++;
    j.depth = 1;
    jf_ws(&j);
    while (!jf_peek(&j, '}')) {
        if (n >= max || jf_flat_member(&j, &m[n], scratch, scratch_size, &used) != 0) return -1;
        for (size_t i = 0; i < n; i++) /* a duplicate key: jansson's error */
            if (m[i].key_len == m[n].key_len && memcmp(m[i].key, m[n].key, m[n].key_len) == 0)
                return -1;
        n++;
        jf_ws(&j);
        if (jf_peek(&j, '}')) break;
        if (!jf_peek(&j, ',')) return -1;
        j.p++;
        jf_ws(&j);
        if (jf_peek(&j, '}')) return -1; /* a trailing comma */
    }
    j.p++;
    return jf_at_end(&j) ? (int)n : -1;
}

/* ------------------------------------------------------------------------------------ writer */

static bool jb_reserve(jsonfast_buf *b, size_t n) {
    if (b->failed) return false;
    if (b->len + n + 1 <= b->cap) return true; /* + 1: room for the final NUL */
    /* ~1 KB holds a payment event. glibc treats 1 KiB and more as a "large" request, which first
     * consolidates the fast free lists (visible in profiles): stay just under. */
    size_t cap = b->cap ? b->cap : 1000;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void jsonfast_raw(jsonfast_buf *b, const char *s, size_t n) {
    if (!jb_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* jansson's escapes: \" \\ and the C0 controls (\b \f \n \r \t, else \u00XX); '/' and non-ASCII
 * as they are (no JSON_ESCAPE_SLASH, no JSON_ENSURE_ASCII). */
static void jb_escape(jsonfast_buf *b, unsigned char c) {
    static const char HEX[] = "0123456789ABCDEF";
    char seq[6] = {'\\', (char)c, 0, 0, 0, 0};
    size_t n = 2;
    switch (c) {
    case '"': case '\\': break;
    case '\b': seq[1] = 'b'; break;
    case '\f': seq[1] = 'f'; break;
    case '\n': seq[1] = 'n'; break;
    case '\r': seq[1] = 'r'; break;
    case '\t': seq[1] = 't'; break;
    default:
        memcpy(seq + 1, "u00", 3);
        seq[4] = HEX[c >> 4];
        seq[5] = HEX[c & 15];
        n = 6;
    }
    jsonfast_raw(b, seq, n);
}

void jsonfast_str(jsonfast_buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
    if (!jb_reserve(b, n + 2)) return;
    b->data[b->len++] = '"';
    while (p < end) {
        if ((p = plain_run(p, end)) >= end) break;
        unsigned c = *p;
        if (c >= 0x80) {
            size_t k = utf8_seq(p, end);
            if (!k) { /* json_dumps fails on it too */
                b->failed = true;
                return;
            }
            p += k;
        } else if (c >= 0x20 && c != '"' && c != '\\') {
            p++;
        } else {
            jsonfast_raw(b, (const char *)run, (size_t)(p - run));
            jb_escape(b, (unsigned char)c);
            run = ++p;
        }
    }
    jsonfast_raw(b, (const char *)run, (size_t)(p - run));
    jsonfast_raw(b, "\"", 1);
}

void jsonfast_int(jsonfast_buf *b, int64_t v) {
    char buf[21];
    jsonfast_raw(b, buf, fs_int_format(v, buf));
}

static void jb_value(jsonfast_buf *b, const json_t *v, int depth) {
    char num[64];
    size_t n, i = 0;
    if (!v || depth > JF_DUMP_DEPTH_MAX) {
        b->failed = true;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        jsonfast_raw(b, "{", 1);
        for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it)) {
            if (i++) jsonfast_raw(b, ",", 1);
            jsonfast_str(b, json_object_iter_key(it), json_object_iter_key_len(it));
            jsonfast_raw(b, ":", 1);
            jb_value(b, json_object_iter_value(it), depth + 1);
        }
        jsonfast_raw(b, "}", 1);
        break;
    case JSON_ARRAY:
        jsonfast_raw(b, "[", 1);
        for (; i < json_array_size(v); i++) {
            if (i) jsonfast_raw(b, ",", 1);
            jb_value(b, json_array_get(v, i), depth + 1);
        }
        jsonfast_raw(b, "]", 1);
        break;
    case JSON_STRING: jsonfast_str(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: jsonfast_int(b, json_integer_value(v)); break;
    case JSON_REAL: /* jansson's own double formatting (precision, ".0", locale) */
        n = json_dumpb(v, num, sizeof num, JSON_COMPACT | JSON_ENCODE_ANY);
        if (n == 0 || n > sizeof num) b->failed = true;
        else jsonfast_raw(b, num, n);
        break;
    case JSON_TRUE: jsonfast_raw(b, "true", 4); break;
    case JSON_FALSE: jsonfast_raw(b, "false", 5); break;
    case JSON_NULL: jsonfast_raw(b, "null", 4); break;
    }
}

void jsonfast_value(jsonfast_buf *b, const json_t *v) { jb_value(b, v, 0); }

char *jsonfast_finish(jsonfast_buf *b, size_t *len) {
    char *out = NULL;
    if (jb_reserve(b, 0)) {
        b->data[b->len] = '\0';
        out = b->data; /* ownership: the caller's */
        if (len) *len = b->len;
        b->data = NULL;
    }
    jsonfast_discard(b);
    return out;
}

void jsonfast_discard(jsonfast_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}
