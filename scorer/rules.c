/* rules: loading, validation and evaluation of the versioned rule set (contract in rules.h,
 * file format in docs/rules.md, schema in schemas/json/rules.v1.json).
 *
 * The file is strict on purpose: unknown keys, duplicate keys, wrong types and out-of-range values
 * are errors naming the JSON path, because a typo in a fraud rule that is silently ignored costs
 * money. Everything is checked at load time so that evaluation cannot fail. */
#include "rules.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fsutil.h"

#define RULES_FILE_MAX (1024 * 1024) /* a rules file is small; anything bigger is a mistake */
#define RULES_VERSION_MAX 64
#define RULES_CODE_MAX 48
#define RULES_MESSAGE_MAX 200
#define RULES_DESCRIPTION_MAX 500
#define RULES_WINDOW_SECONDS_MAX 2592000 /* 30 days: the longest window the feature store keeps */
#define RULES_COUNT_MAX 1000000
#define RULES_COUNTRIES_MAX 250
#define RULES_AMOUNT_TEXT_MAX 24
#define RULES_AMOUNT_FRAC_MAX 4 /* largest ISO 4217 minor-unit exponent (CLF, UYW) */
#define RULES_HASH_HEX 12

typedef enum pred_kind {
    PRED_AMOUNT_AT_LEAST,
    PRED_COUNTRY_IN,
    PRED_COUNTRY_MISMATCH,
    PRED_COUNT_AT_LEAST,
    PRED_DISTINCT_USERS_AT_LEAST,
} pred_kind;

typedef enum country_field { CF_COUNTRY, CF_BILLING, CF_SHIPPING, CF_COUNT } country_field;

typedef struct rule {
    char code[RULES_CODE_MAX + 1];
    char message[RULES_MESSAGE_MAX + 1];
    const char *severity; /* one of SEVERITIES (static) */
    int weight;
    bool enabled;
    pred_kind kind;
    /* amount_at_least: the threshold in minor units for each exponent 0..4, rounded up, so that
     * amount_minor >= min_minor[exp] is the exact decimal comparison amount >= threshold. */
    int64_t min_minor[RULES_AMOUNT_FRAC_MAX + 1];
    country_field field[2];                     /* country_in: field[0]; country_mismatch: both */
    unsigned char countries[(26 * 26 + 7) / 8]; /* country_in: bitmap of AA..ZZ */
    rules_entity entity;                        /* count/distinct: the window's entity */
    size_t window;                              /* count/distinct: index into rules.window */
    int64_t count;                              /* count/distinct: threshold */
} rule;

struct rules {
    char version[RULES_VERSION_MAX + 1 + RULES_HASH_HEX + 1];
    int review, block;
    size_t nrules;
    rule rule[RULES_MAX];
    size_t nwindows;
    rules_window window[RULES_MAX_WINDOWS];
};

static const char *const ENTITY_NAMES[RULES_ENT_COUNT] = {"user",   "ip",    "card",
                                                          "device", "email", "merchant"};
static const char *const SEVERITIES[] = {"low", "medium", "high", "critical", NULL};
static const char *const FIELD_NAMES[CF_COUNT] = {"country", "billing_country", "shipping_country"};

/* ---- error reporting ------------------------------------------------------------------------ */

typedef struct perr {
    char *buf;
    size_t size;
    const char *origin;
} perr;

/* Writes "<origin>: <path>.<key>: <message>" and returns -1. path and key may be "" or NULL. */
__attribute__((format(printf, 4, 5))) static int fail(perr *e, const char *path, const char *key,
                                                      const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!e->buf || e->size == 0) return -1;
    path = path ? path : "";
    key = key ? key : "";
    if (!*path && !*key)
        snprintf(e->buf, e->size, "%s: %s", e->origin, msg);
    else
        snprintf(e->buf, e->size, "%s: %s%s%s: %s", e->origin, path, (*path && *key) ? "." : "",
                 key, msg);
    return -1;
}

/* ---- typed getters --------------------------------------------------------------------------- */

static int check_keys(const json_t *obj, const char *const *allowed, const char *path, perr *e) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        size_t i = 0;
        (void)v;
        while (allowed[i] && strcmp(allowed[i], key) != 0) i++;
        if (!allowed[i]) return fail(e, path, key, "unknown key");
    }
    return 0;
}

static int get_object(const json_t *obj, const char *key, const char *path, const json_t **out,
                      perr *e) {
    *out = json_object_get(obj, key);
    if (!*out) return fail(e, path, key, "required");
    if (!json_is_object(*out)) return fail(e, path, key, "must be an object");
    return 0;
}

static int get_int(const json_t *obj, const char *key, const char *path, json_int_t lo,
                   json_int_t hi, json_int_t *out, perr *e) {
    const json_t *v = json_object_get(obj, key);
    if (!v) return fail(e, path, key, "required");
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fail(e, path, key, "must be an integer %lld..%lld", (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return 0;
}

/* Copies a string of minlen..maxlen bytes into out (out_size > maxlen). A missing optional key
 * gives "". */
static int get_str(const json_t *obj, const char *key, const char *path, bool required,
                   size_t minlen, size_t maxlen, char *out, size_t out_size, perr *e) {
    const json_t *v = json_object_get(obj, key);
    assert(out_size > maxlen);
    out[0] = '\0';
    if (!v) return required ? fail(e, path, key, "required") : 0;
    if (!json_is_string(v)) return fail(e, path, key, "must be a string");
    size_t len = json_string_length(v);
    if (len < minlen || len > maxlen)
        return fail(e, path, key, "must be a string of %zu..%zu bytes", minlen, maxlen);
    memcpy(out, json_string_value(v), len + 1);
    return 0;
}

/* Index of s in the NULL-terminated (or n-long) names, or -1. */
static int name_index(const char *s, const char *const *names, size_t n) {
    for (size_t i = 0; i < n && names[i]; i++)
        if (strcmp(s, names[i]) == 0) return (int)i;
    return -1;
}

static bool all_in(const char *s, const char *set) {
    for (; *s; s++)
        if (!strchr(set, *s)) return false;
    return true;
}

/* ---- predicates ------------------------------------------------------------------------------ */

/* Threshold in minor units for exponent exp, rounded up: amount >= "1000.005" with exp 2 means
 * amount_minor >= 100001. text is already checked: digits, optionally '.' and 1..4 digits. */
static int amount_threshold(const char *text, int exp, int64_t *out) {
    char buf[RULES_AMOUNT_TEXT_MAX + 1];
    const char *dot = strchr(text, '.');
    size_t ilen = dot ? (size_t)(dot - text) : strlen(text);
    const char *frac = dot ? dot + 1 : "";
    size_t keep = strlen(frac) < (size_t)exp ? strlen(frac) : (size_t)exp;
    bool round_up = frac[keep] != '\0' && !all_in(frac + keep, "0");

    snprintf(buf, sizeof buf, "%.*s%s%.*s", (int)ilen, text, keep ? "." : "", (int)keep, frac);
    if (all_in(buf, "0.")) {
        *out = 0; /* pay_amount_parse() refuses zero; "0.5" for JPY truncates to it */
    } else if (pay_amount_parse(buf, exp, out) != 0) {
        return -1; /* overflow */
    }
    if (round_up) {
        if (*out == INT64_MAX) return -1;
        (*out)++;
    }
    return 0;
}

static int parse_amount(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "amount", NULL};
    char text[RULES_AMOUNT_TEXT_MAX + 1];
    const char *bad = "must be a decimal string of major units > 0 with at most 4 fraction digits "
                      "(\"1000\", \"1000.50\")";
    (void)rs;
    if (check_keys(pred, keys, path, e) != 0) return -1;
    if (!json_is_string(json_object_get(pred, "amount")) && json_object_get(pred, "amount"))
        return fail(e, path, "amount", "%s", bad);
    if (get_str(pred, "amount", path, true, 1, RULES_AMOUNT_TEXT_MAX, text, sizeof text, e) != 0)
        return -1;
    const char *dot = strchr(text, '.');
    size_t ilen = dot ? (size_t)(dot - text) : strlen(text);
    size_t flen = dot ? strlen(dot + 1) : 0;
    if (ilen == 0 || (dot && (flen == 0 || flen > RULES_AMOUNT_FRAC_MAX)) ||
        !all_in(dot ? dot + 1 : "", "0123456789") || strspn(text, "0123456789") != ilen ||
        (ilen > 1 && text[0] == '0') || all_in(text, "0."))
        return fail(e, path, "amount", "%s", bad);
    for (int exp = 0; exp <= RULES_AMOUNT_FRAC_MAX; exp++)
        if (amount_threshold(text, exp, &ru->min_minor[exp]) != 0)
            return fail(e, path, "amount", "too large");
    return 0;
}

static int get_field(const json_t *v, const char *path, const char *key, country_field *out,
                     perr *e) {
    int i = json_is_string(v) ? name_index(json_string_value(v), FIELD_NAMES, CF_COUNT) : -1;
    if (i < 0)
        return fail(e, path, key, "must be one of country, billing_country, shipping_country");
    *out = (country_field)i;
    return 0;
}

static bool is_country_code(const char *s) {
    return strlen(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z';
}

static size_t country_bit(const char *c) {
    return (size_t)(c[0] - 'A') * 26 + (size_t)(c[1] - 'A');
}

static int parse_country_in(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "field", "countries", NULL};
    const json_t *list = json_object_get(pred, "countries");
    char key[32];
    (void)rs;
    if (check_keys(pred, keys, path, e) != 0) return -1;
    if (!json_object_get(pred, "field")) return fail(e, path, "field", "required");
    if (get_field(json_object_get(pred, "field"), path, "field", &ru->field[0], e) != 0) return -1;
    if (!list) return fail(e, path, "countries", "required");
    if (!json_is_array(list) || json_array_size(list) < 1 ||
        json_array_size(list) > RULES_COUNTRIES_MAX)
        return fail(e, path, "countries", "must be an array of 1..%d country codes",
                    RULES_COUNTRIES_MAX);
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *c = json_string_value(json_array_get(list, i));
        snprintf(key, sizeof key, "countries[%zu]", i);
        if (!c || !is_country_code(c))
            return fail(e, path, key, "must be a 2-letter upper-case country code (ISO 3166-1)");
        size_t bit = country_bit(c);
        if (ru->countries[bit / 8] & (1u << (bit % 8)))
            return fail(e, path, key, "duplicate country %s", c);
        ru->countries[bit / 8] |= (unsigned char)(1u << (bit % 8));
    }
    return 0;
}

static int parse_country_mismatch(rules *rs, rule *ru, const json_t *pred, const char *path,
                                  perr *e) {
    static const char *const keys[] = {"kind", "fields", NULL};
    const json_t *fields = json_object_get(pred, "fields");
    (void)rs;
    if (check_keys(pred, keys, path, e) != 0) return -1;
    if (!fields) return fail(e, path, "fields", "required");
    if (!json_is_array(fields) || json_array_size(fields) != 2)
        return fail(e, path, "fields", "must be an array of two different fields");
    if (get_field(json_array_get(fields, 0), path, "fields[0]", &ru->field[0], e) != 0 ||
        get_field(json_array_get(fields, 1), path, "fields[1]", &ru->field[1], e) != 0)
        return -1;
    if (ru->field[0] == ru->field[1])
        return fail(e, path, "fields", "must be an array of two different fields");
    return 0;
}

/* Index of the (entity, window) pair in rs->window, adding it when new. */
static int window_index(rules *rs, rules_entity ent, int64_t window_ms, size_t *out) {
    for (size_t i = 0; i < rs->nwindows; i++) {
        if (rs->window[i].entity == ent && rs->window[i].window_ms == window_ms) {
            *out = i;
            return 0;
        }
    }
    if (rs->nwindows == RULES_MAX_WINDOWS) return -1;
    rs->window[rs->nwindows] = (rules_window){.entity = ent, .window_ms = window_ms};
    *out = rs->nwindows++;
    return 0;
}

/* count_at_least and distinct_users_at_least: same shape, different feature. */
static int parse_velocity(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "entity", "window_seconds", "count", NULL};
    const json_t *ent = json_object_get(pred, "entity");
    json_int_t secs, count;
    int i;
    if (check_keys(pred, keys, path, e) != 0) return -1;
    if (!ent) return fail(e, path, "entity", "required");
    i = json_is_string(ent) ? name_index(json_string_value(ent), ENTITY_NAMES, RULES_ENT_COUNT)
                            : -1;
    if (i < 0)
        return fail(e, path, "entity", "must be one of user, ip, card, device, email, merchant");
    if (i == RULES_ENT_USER && ru->kind == PRED_DISTINCT_USERS_AT_LEAST)
        return fail(e, path, "entity", "distinct_users_at_least needs an entity other than user");
    if (get_int(pred, "window_seconds", path, 1, RULES_WINDOW_SECONDS_MAX, &secs, e) != 0 ||
        get_int(pred, "count", path, 1, RULES_COUNT_MAX, &count, e) != 0)
        return -1;
    ru->entity = (rules_entity)i;
    ru->count = count;
    /* Disabled rules ask for no feature: the scorer should not pay for windows nobody reads. */
    if (ru->enabled && window_index(rs, ru->entity, (int64_t)secs * 1000, &ru->window) != 0)
        return fail(e, path, NULL,
                    "more than %d distinct (entity, window_seconds) pairs in the file",
                    RULES_MAX_WINDOWS);
    return 0;
}

typedef int (*pred_parser)(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e);

static const struct {
    const char *name;
    pred_kind kind;
    pred_parser parse;
} KINDS[] = {
    {"amount_at_least", PRED_AMOUNT_AT_LEAST, parse_amount},
    {"country_in", PRED_COUNTRY_IN, parse_country_in},
    {"country_mismatch", PRED_COUNTRY_MISMATCH, parse_country_mismatch},
    {"count_at_least", PRED_COUNT_AT_LEAST, parse_velocity},
    {"distinct_users_at_least", PRED_DISTINCT_USERS_AT_LEAST, parse_velocity},
};

static int parse_predicate(rules *rs, rule *ru, const json_t *rj, const char *rpath, perr *e) {
    char path[48];
    const json_t *pred, *kind;
    if (get_object(rj, "predicate", rpath, &pred, e) != 0) return -1;
    snprintf(path, sizeof path, "%s.predicate", rpath);
    kind = json_object_get(pred, "kind");
    if (!kind) return fail(e, path, "kind", "required");
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++) {
        if (json_is_string(kind) && strcmp(json_string_value(kind), KINDS[i].name) == 0) {
            ru->kind = KINDS[i].kind;
            return KINDS[i].parse(rs, ru, pred, path, e);
        }
    }
    return fail(e, path, "kind",
                "must be one of amount_at_least, country_in, country_mismatch, count_at_least, "
                "distinct_users_at_least");
}

/* ---- rules and the file ---------------------------------------------------------------------- */

static int parse_rule_head(rule *ru, const json_t *rj, const char *path, perr *e) {
    static const char *const keys[] = {"code",    "description", "severity",  "weight",
                                       "message", "enabled",     "predicate", NULL};
    char desc[RULES_DESCRIPTION_MAX + 1];
    const json_t *en = json_object_get(rj, "enabled"), *sev = json_object_get(rj, "severity");
    json_int_t weight;
    int sev_index;
    if (check_keys(rj, keys, path, e) != 0 ||
        get_str(rj, "code", path, true, 1, RULES_CODE_MAX, ru->code, sizeof ru->code, e) != 0)
        return -1;
    if (!all_in(ru->code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"))
        return fail(e, path, "code", "must match [A-Z0-9_]{1,%d}", RULES_CODE_MAX);
    if (get_str(rj, "description", path, false, 0, RULES_DESCRIPTION_MAX, desc, sizeof desc,
                e) != 0)
        return -1;
    if (!sev) return fail(e, path, "severity", "required");
    sev_index = json_is_string(sev) ? name_index(json_string_value(sev), SEVERITIES, SIZE_MAX) : -1;
    if (sev_index < 0)
        return fail(e, path, "severity", "must be one of low, medium, high, critical");
    ru->severity = SEVERITIES[sev_index];
    if (get_int(rj, "weight", path, 0, 100, &weight, e) != 0 ||
        get_str(rj, "message", path, true, 1, RULES_MESSAGE_MAX, ru->message, sizeof ru->message,
                e) != 0)
        return -1;
    ru->weight = (int)weight;
    if (en && !json_is_boolean(en)) return fail(e, path, "enabled", "must be true or false");
    ru->enabled = !en || json_is_true(en);
    return 0;
}

static int parse_rules_array(rules *rs, const json_t *list, perr *e) {
    char path[32];
    if (!list) return fail(e, "", "rules", "required");
    if (!json_is_array(list) || json_array_size(list) < 1 || json_array_size(list) > RULES_MAX)
        return fail(e, "", "rules", "must be an array of 1..%d rules (got %zu)", RULES_MAX,
                    json_is_array(list) ? json_array_size(list) : 0);
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *rj = json_array_get(list, i);
        rule *ru = &rs->rule[i];
        snprintf(path, sizeof path, "rules[%zu]", i);
        if (!json_is_object(rj)) return fail(e, path, NULL, "must be an object");
        if (parse_rule_head(ru, rj, path, e) != 0 || parse_predicate(rs, ru, rj, path, e) != 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(rs->rule[j].code, ru->code) == 0)
                return fail(e, path, "code", "duplicate code %s (also rules[%zu])", ru->code, j);
        rs->nrules = i + 1;
    }
    return 0;
}

static int parse_thresholds(rules *rs, const json_t *root, perr *e) {
    static const char *const keys[] = {"review", "block", NULL};
    const json_t *th;
    json_int_t review, block;
    if (get_object(root, "thresholds", "", &th, e) != 0 ||
        check_keys(th, keys, "thresholds", e) != 0 ||
        get_int(th, "review", "thresholds", 1, 100, &review, e) != 0 ||
        get_int(th, "block", "thresholds", 1, 100, &block, e) != 0)
        return -1;
    if (review > block)
        return fail(e, "thresholds", NULL,
                    "must satisfy 0 < review <= block <= 100 (review %lld, block %lld)",
                    (long long)review, (long long)block);
    rs->review = (int)review;
    rs->block = (int)block;
    return 0;
}

static int parse_root(rules *rs, const json_t *root, perr *e) {
    static const char *const keys[] = {"$schema",    "version", "description",
                                       "thresholds", "rules",   NULL};
    char version[RULES_VERSION_MAX + 1], desc[RULES_DESCRIPTION_MAX + 1], schema[256];
    if (!json_is_object(root)) return fail(e, NULL, NULL, "must be a JSON object");
    if (check_keys(root, keys, "", e) != 0 ||
        get_str(root, "$schema", "", false, 0, sizeof schema - 1, schema, sizeof schema, e) != 0 ||
        get_str(root, "version", "", true, 1, RULES_VERSION_MAX, version, sizeof version, e) != 0)
        return -1;
    /* The version lands in every decision row and in logs: keep it to a plain token. */
    if (!all_in(version, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"))
        return fail(e, "", "version", "must match [A-Za-z0-9._-]{1,%d}", RULES_VERSION_MAX);
    if (get_str(root, "description", "", false, 0, RULES_DESCRIPTION_MAX, desc, sizeof desc, e) !=
            0 ||
        parse_thresholds(rs, root, e) != 0 ||
        parse_rules_array(rs, json_object_get(root, "rules"), e) != 0)
        return -1;
    snprintf(rs->version, sizeof rs->version, "%s", version); /* the hash is appended later */
    return 0;
}

/* Appends "+<first 12 hex of sha256(text)>" to rs->version. */
static int version_hash(rules *rs, const char *text, size_t len, perr *e) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    if (EVP_Digest(text, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < RULES_HASH_HEX / 2)
        return fail(e, NULL, NULL, "SHA-256 failed");
    fs_hex(md, mdlen, hex);
    size_t n = strlen(rs->version);
    snprintf(rs->version + n, sizeof rs->version - n, "+%.*s", RULES_HASH_HEX, hex);
    return 0;
}

rules *rules_parse(const char *text, size_t len, const char *origin, char *errstr,
                   size_t errstr_size) {
    perr e = {errstr, errstr_size, origin ? origin : "rules"};
    json_error_t jerr;
    json_t *root = NULL;
    rules *rs = calloc(1, sizeof *rs);
    if (!rs) {
        fail(&e, NULL, NULL, "out of memory");
        goto failed;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        fail(&e, NULL, NULL, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
             jerr.text);
        goto failed;
    }
    if (parse_root(rs, root, &e) != 0 || version_hash(rs, text, len, &e) != 0) goto failed;
    json_decref(root);
    return rs;
failed:
    json_decref(root);
    free(rs);
    return NULL;
}

/* Reads the whole file (at most RULES_FILE_MAX bytes) into a malloc'd buffer the caller frees. */
static char *read_file(const char *path, size_t *len, perr *e) {
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail(e, NULL, NULL, "cannot open: %s", strerror(errno));
        goto failed;
    }
    buf = malloc(RULES_FILE_MAX + 1);
    if (!buf) {
        fail(e, NULL, NULL, "out of memory");
        goto failed;
    }
    *len = fread(buf, 1, RULES_FILE_MAX + 1, f);
    if (ferror(f)) {
        fail(e, NULL, NULL, "read error: %s", strerror(errno));
        goto failed;
    }
    if (*len > RULES_FILE_MAX) {
        fail(e, NULL, NULL, "larger than %d bytes", RULES_FILE_MAX);
        goto failed;
    }
    fclose(f);
    return buf;
failed:
    free(buf);
    if (f) fclose(f);
    return NULL;
}

rules *rules_load(const char *path, char *errstr, size_t errstr_size) {
    perr e = {errstr, errstr_size, path};
    size_t len = 0;
    char *text = read_file(path, &len, &e);
    if (!text) return NULL;
    rules *rs = rules_parse(text, len, path, errstr, errstr_size);
    free(text);
    return rs;
}

void rules_destroy(rules *r) { free(r); }

const char *rules_version(const rules *r) { return r->version; }

size_t rules_window_count(const rules *r) { return r->nwindows; }

const rules_window *rules_window_at(const rules *r, size_t i) {
    return i < r->nwindows ? &r->window[i] : NULL;
}

const char *rules_entity_name(rules_entity e) {
    return (unsigned)e < RULES_ENT_COUNT ? ENTITY_NAMES[e] : "unknown";
}

/* ---- entity keys ----------------------------------------------------------------------------- */

/* The identifier of p for a non-card entity, "" when absent. */
static const char *entity_field(const pay_payment *p, rules_entity e) {
    switch (e) {
    case RULES_ENT_USER: return p->user_id;
    case RULES_ENT_IP: return p->ip_digest;
    case RULES_ENT_DEVICE: return p->device_id_digest;
    case RULES_ENT_EMAIL: return p->email_digest;
    case RULES_ENT_MERCHANT: return p->merchant_id;
    default: return "";
    }
}

/* The card key prefers the fingerprint digest; without one it falls back to the seed project's
 * key, the last four digits, which is coarse (10,000 values) but what the seed's CARD_REUSE used.
 */
void rules_entity_key(const pay_payment *p, rules_entity e, char *out, size_t out_size) {
    int n;
    if (out_size == 0) return;
    if (e != RULES_ENT_CARD)
        n = snprintf(out, out_size, "%s", entity_field(p, e));
    else if (p->card_fingerprint_digest[0])
        n = snprintf(out, out_size, "%s", p->card_fingerprint_digest);
    else if (p->card_last_four[0])
        n = snprintf(out, out_size, "last4:%s", p->card_last_four);
    else
        n = snprintf(out, out_size, "%s", "");
    /* A truncated key would merge different entities' counts: better no key at all. */
    if (n < 0 || (size_t)n >= out_size) out[0] = '\0';
}

static bool entity_present(const pay_payment *p, rules_entity e) {
    if (e == RULES_ENT_CARD) return p->card_fingerprint_digest[0] || p->card_last_four[0];
    return entity_field(p, e)[0] != '\0';
}

/* ---- evaluation ------------------------------------------------------------------------------ */

static const char *country_of(const pay_payment *p, country_field f) {
    switch (f) {
    case CF_COUNTRY: return p->country;
    case CF_BILLING: return p->billing_country;
    case CF_SHIPPING: return p->shipping_country;
    default: return "";
    }
}

static bool rule_hits(const rule *ru, const rules_features *f) {
    const pay_payment *p = f->p;
    const char *a, *b;
    switch (ru->kind) {
    case PRED_AMOUNT_AT_LEAST:
        return p->currency_exp >= 0 && p->currency_exp <= RULES_AMOUNT_FRAC_MAX &&
               p->amount_minor >= ru->min_minor[p->currency_exp];
    case PRED_COUNTRY_IN:
        a = country_of(p, ru->field[0]);
        if (!is_country_code(a)) return false; /* "" (absent) never hits */
        return ru->countries[country_bit(a) / 8] & (1u << (country_bit(a) % 8));
    case PRED_COUNTRY_MISMATCH:
        a = country_of(p, ru->field[0]);
        b = country_of(p, ru->field[1]);
        return a[0] && b[0] && strcmp(a, b) != 0;
    case PRED_COUNT_AT_LEAST:
        return entity_present(p, ru->entity) && f->count[ru->window] >= ru->count;
    case PRED_DISTINCT_USERS_AT_LEAST:
        return entity_present(p, ru->entity) && f->distinct_users[ru->window] >= ru->count;
    }
    return false;
}

/* Inserts ru's hit keeping out->hits sorted by weight descending, then code ascending. */
static void hit_insert(rules_result *out, const rule *ru) {
    int i = out->nhits;
    while (i > 0 && (out->hits[i - 1].weight < ru->weight ||
                     (out->hits[i - 1].weight == ru->weight &&
                      strcmp(out->hits[i - 1].code, ru->code) > 0))) {
        out->hits[i] = out->hits[i - 1];
        i--;
    }
    out->hits[i] = (rules_hit){ru->code, ru->severity, ru->message, ru->weight};
    out->nhits++;
}

void rules_eval(const rules *r, const rules_features *f, rules_result *out) {
    int sum = 0;
    assert(r && f && f->p && out);
    out->nhits = 0;
    for (size_t i = 0; i < r->nrules; i++) {
        const rule *ru = &r->rule[i];
        if (!ru->enabled || !rule_hits(ru, f)) continue;
        hit_insert(out, ru);
        sum += ru->weight; /* at most RULES_MAX * 100: no overflow */
    }
    out->score = sum > 100 ? 100 : sum;
    out->decision = out->score >= r->block ? "block" : out->score >= r->review ? "review" : "allow";
}

/* ---- JSON evidence --------------------------------------------------------------------------- */

json_t *rules_reasons_json(const rules_result *res) {
    json_t *arr = json_array();
    if (!arr) return NULL;
    for (int i = 0; i < res->nhits; i++) {
        const rules_hit *h = &res->hits[i];
        json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "code", h->code, "severity", h->severity,
                              "weight", h->weight, "message", h->message);
        if (json_array_append_new(arr, o) != 0) { /* steals o, NULL included */
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static int set_int(json_t *o, const char *key, int64_t v) {
    return json_object_set_new(o, key, json_integer((json_int_t)v));
}

static int set_window_features(json_t *o, const rules *r, const rules_features *f) {
    char key[64];
    for (size_t i = 0; i < r->nwindows; i++) {
        const char *ent = rules_entity_name(r->window[i].entity);
        long long secs = (long long)(r->window[i].window_ms / 1000);
        snprintf(key, sizeof key, "%s_count_%llds", ent, secs);
        if (set_int(o, key, f->count[i]) != 0) return -1;
        snprintf(key, sizeof key, "%s_sum_minor_%llds", ent, secs);
        if (set_int(o, key, f->sum_minor[i]) != 0) return -1;
        snprintf(key, sizeof key, "%s_distinct_users_%llds", ent, secs);
        if (set_int(o, key, f->distinct_users[i]) != 0) return -1;
    }
    return 0;
}

/* Keys are inserted in a fixed order (jansson keeps insertion order), so the same inputs always
 * serialize to the same bytes. */
json_t *rules_features_json(const rules *r, const rules_features *f) {
    const pay_payment *p = f->p;
    json_t *o = json_object();
    if (!o) goto failed;
    if (set_int(o, "amount_minor", p->amount_minor) != 0 ||
        json_object_set_new(o, "currency", json_string(p->currency)) != 0)
        goto failed;
    for (country_field c = CF_COUNTRY; c < CF_COUNT; c++) {
        const char *v = country_of(p, c);
        if (v[0] && json_object_set_new(o, FIELD_NAMES[c], json_string(v)) != 0) goto failed;
    }
    if (set_window_features(o, r, f) != 0) goto failed;
    return o;
failed:
    json_decref(o);
    return NULL;
}
