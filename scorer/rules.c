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
#define RULES_CURRENCIES_MAX 48 /* amount predicates: per-currency amounts per rule */
#define RULES_CCY_SET_MAX 255   /* codes listed by all the rules (ISO 4217 has fewer): a byte */
#define RULES_HASH_HEX 12

#define RULES_VALUES_MAX 64      /* value_in: values per rule */
#define RULES_VALUES_POOL 16384  /* bytes of all value_in strings of a file */
#define RULES_RATIO_TEXT_MAX 16

typedef enum pred_kind {
    PRED_AMOUNT_AT_LEAST,
    PRED_COUNTRY_IN,
    PRED_COUNTRY_MISMATCH,
    PRED_COUNT_AT_LEAST,
    PRED_DISTINCT_USERS_AT_LEAST,
    PRED_DISTINCT_AT_LEAST,
    PRED_SUM_AT_LEAST,
    PRED_AVG_AT_LEAST,
    PRED_VALUE_IN,
    PRED_TIME_FLAG,
    PRED_AMOUNT_RATIO,
    PRED_VAULT_SEEN,
    PRED_VAULT_NEW,
    PRED_VAULT_FRAUD,
    PRED_MERCHANT_RISK,
    PRED_MODEL_SCORE,
} pred_kind;

typedef enum country_field { CF_COUNTRY, CF_BILLING, CF_SHIPPING, CF_IP, CF_COUNT } country_field;
typedef enum value_field {
    VF_PAYMENT_METHOD, VF_CARD_TYPE, VF_TRANSACTION_TYPE, VF_CURRENCY, VF_MERCHANT, VF_USER,
    VF_COUNT
} value_field;
typedef enum time_flag { TF_WEEKEND, TF_NIGHT, TF_COUNT } time_flag;

typedef struct rule {
    char code[RULES_CODE_MAX + 1];
    char message[RULES_MESSAGE_MAX + 1];
    const char *severity; /* one of SEVERITIES (static) */
    int weight;
    bool enabled;
    bool model_covered; /* its signal is a model input: with a model score it explains, adds 0 */
    pred_kind kind;
    /* amount_at_least, sum_at_least, avg_at_least: the threshold in minor units for each exponent
     * 0..4, rounded up, so that amount_minor >= min_minor[exp] is the exact decimal comparison
     * amount >= threshold; any_currency: "amount" was given (else only the listed currencies hit).
     * ccy: "currencies", each code's own threshold in its own minor units (before min_minor).
     * ccy_slot: per code of rules.ccy_set, 1 + its index in ccy, or 0 when this rule does not list
     * it (index_currencies(), at load). */
    int64_t min_minor[RULES_AMOUNT_FRAC_MAX + 1];
    bool any_currency;
    size_t nccy;
    struct {
        char code[4];
        int64_t min_minor;
    } ccy[RULES_CURRENCIES_MAX];
    unsigned char ccy_slot[RULES_CCY_SET_MAX];
    country_field field[2];                     /* country_in: field[0]; country_mismatch: both */
    unsigned char countries[(26 * 26 + 7) / 8]; /* country_in: bitmap of AA..ZZ */
    rules_entity entity;                        /* windows and vault: the entity */
    size_t window;                              /* windows: index into rules.window */
    int64_t count;                              /* count/distinct/vault: threshold */
    int64_t ratio_milli;                        /* amount ratio, merchant risk: threshold x 1000 */
    value_field vfield;                         /* value_in */
    size_t values_off, nvalues;                 /* value_in: NUL-separated strings in values */
    time_flag flag;                             /* time_flag */
    bool with_chargebacks;                      /* vault_fraud_at_least */
    size_t risk;                                /* merchant_risk_at_least: index into rules.risk */
    int model_min, model_max;                   /* model_score_between, 0..100 */
} rule;

struct rules {
    char version[RULES_VERSION_MAX + 1 + RULES_HASH_HEX + 1];
    int review, block;
    int model_weight; /* points for a model score of 1.0 (0: rules only) */
    size_t nrules;
    rule rule[RULES_MAX];
    size_t nwindows;
    rules_window window[RULES_MAX_FEATURE_WINDOWS];
    size_t nrisk;
    rules_risk risk[RULES_MAX_RISK];
    size_t values_used;
    char values[RULES_VALUES_POOL];
    /* Every code some rule's "currencies" lists, sorted: a payment's currency is looked up here
     * once (ccy_index()), and each amount rule finds its threshold by that index (rule.ccy_slot)
     * instead of scanning its own list with strcmp for every payment. */
    size_t nccy_set;
    char ccy_set[RULES_CCY_SET_MAX][4];
};

static const char *const ENTITY_NAMES[RULES_ENT_COUNT] = {"user",   "ip",    "card",
                                                          "device", "email", "merchant"};
static const char *const SEVERITIES[] = {"low", "medium", "high", "critical", NULL};
static const char *const FIELD_NAMES[CF_COUNT] = {"country", "billing_country", "shipping_country",
                                                  "ip_country"};
static const char *const VALUE_FIELDS[VF_COUNT] = {"payment_method", "card_type",
                                                   "transaction_type", "currency",
                                                   "merchant_id", "user_id"};
static const char *const TIME_FLAGS[TF_COUNT] = {"weekend", "night"};

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

static int get_amount(const json_t *pred, const char *path, rule *ru, perr *e);

static int parse_amount(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "amount", "currencies", NULL};
    (void)rs;
    if (check_keys(pred, keys, path, e) != 0) return -1;
    return get_amount(pred, path, ru, e);
}

static int get_field(const json_t *v, const char *path, const char *key, country_field *out,
                     perr *e) {
    int i = json_is_string(v) ? name_index(json_string_value(v), FIELD_NAMES, CF_COUNT) : -1;
    if (i < 0)
        return fail(e, path, key,
                    "must be one of country, billing_country, shipping_country, ip_country");
    *out = (country_field)i;
    return 0;
}

static bool is_country_code(const char *s) {
    return strlen(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z';
}

static size_t country_bit(const char *c) {
    return (size_t)(c[0] - 'A') * 26 + (size_t)(c[1] - 'A');
}

/* value_in and country_in compare a payment's field as stored: a value ingest never stores there
 * ("CARD" where it stores "card", "eur", "EURO", the unassigned "UK") would leave the rule silently
 * never firing, so it is refused with the field's own check (pay.h), never a copy of it. */
static int check_stored(const rule *ru, const char *field, const json_t *v, const char *path,
                        const char *key, perr *e) {
    char why[160];
    if (pay_stored_value_check(field, json_string_value(v), json_string_length(v), why,
                               sizeof why) == 0)
        return 0;
    return fail(e, path, key, "rule %s can never match: %s %s", ru->code, field, why);
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
        const json_t *cv = json_array_get(list, i);
        const char *c = json_string_value(cv);
        snprintf(key, sizeof key, "countries[%zu]", i);
        if (!c) return fail(e, path, key, "must be a 2-letter upper-case country code (ISO 3166-1)");
        if (check_stored(ru, FIELD_NAMES[ru->field[0]], cv, path, key, e) != 0) return -1;
        assert(is_country_code(c)); /* what the check lets through: country_bit() relies on it */
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

/* Index of the (entity, window, offset) triple in rs->window, adding it when new; limit: how many
 * windows the set may hold at this point (the rules' own limit, or the extras'). */
static int window_index(rules *rs, rules_entity ent, int64_t window_ms, int64_t offset_ms,
                        size_t limit, size_t *out) {
    for (size_t i = 0; i < rs->nwindows; i++) {
        const rules_window *w = &rs->window[i];
        if (w->entity == ent && w->window_ms == window_ms && w->offset_ms == offset_ms) {
            *out = i;
            return 0;
        }
    }
    if (rs->nwindows >= limit) return -1;
    rs->window[rs->nwindows] = (rules_window){ent, window_ms, offset_ms};
    *out = rs->nwindows++;
    return 0;
}

static int get_entity(const json_t *pred, const char *key, const char *path, bool vault,
                      rules_entity *out, perr *e) {
    const json_t *ent = json_object_get(pred, key);
    int i;
    if (!ent) return fail(e, path, key, "required");
    i = json_is_string(ent) ? name_index(json_string_value(ent), ENTITY_NAMES, RULES_ENT_COUNT)
                            : -1;
    if (vault && (i < 0 || !rules_vault_entity((rules_entity)i)))
        return fail(e, path, key, "must be one of card, ip, device, email");
    if (i < 0)
        return fail(e, path, key, "must be one of user, ip, card, device, email, merchant");
    *out = (rules_entity)i;
    return 0;
}

/* A window longer than the exact log's hour is read from whole buckets, ceil(window / width) of
 * them: 1-hour buckets up to a day, 1-day buckets beyond (buckets.h). A length that is not whole
 * buckets would count up to a bucket more than it says (5400 s: payments up to 2 hours back; 90000
 * s: up to 2 days), so it is refused, naming the two lengths around it. false: why in msg. */
static bool window_aligned(int64_t secs, char *msg, size_t size) {
    const int64_t hour = RULES_EXACT_WINDOW_MS / 1000, day = 86400;
    int64_t width = secs <= day ? hour : day;
    if (secs <= hour || secs % width == 0) return true;
    int64_t below = secs / width * width, above = below + width;
    snprintf(msg, size,
             "%lld is not a whole number of %s: windows over %lld s are counted in 1-%s buckets "
             "and would reach up to %lld s back; use %lld or %lld",
             (long long)secs, width == hour ? "hours" : "days", (long long)width,
             width == hour ? "hour" : "day", (long long)above, (long long)below, (long long)above);
    return false;
}

/* "entity" and "window_seconds" of a window predicate; registers the window (enabled rules only:
 * the scorer should not pay for windows nobody reads; the windows a loaded model reads are added
 * apart, rules_add_model_windows). */
static int get_window(rules *rs, rule *ru, const json_t *pred, const char *path, bool user_only,
                      perr *e) {
    json_int_t secs;
    if (user_only) ru->entity = RULES_ENT_USER;
    else if (get_entity(pred, "entity", path, false, &ru->entity, e) != 0) return -1;
    if (get_int(pred, "window_seconds", path, 1, RULES_WINDOW_SECONDS_MAX, &secs, e) != 0)
        return -1;
    char why[200];
    if (!window_aligned(secs, why, sizeof why))
        return fail(e, path, "window_seconds", "%s (rule %s)", why, ru->code);
    if (ru->enabled &&
        window_index(rs, ru->entity, (int64_t)secs * 1000, 0, RULES_MAX_WINDOWS, &ru->window) != 0)
        return fail(e, path, NULL,
                    "more than %d distinct (entity, window_seconds) pairs in the file",
                    RULES_MAX_WINDOWS);
    return 0;
}

/* A decimal ratio ("2", "0.05", "1.5") with at most 3 fraction digits, as thousandths. */
static int get_ratio(const json_t *pred, const char *key, const char *path, int64_t *milli,
                     perr *e) {
    const json_t *v = json_object_get(pred, key);
    const char *bad = "must be a decimal string with at most 3 fraction digits (\"2\", \"0.05\")";
    if (!v) return fail(e, path, key, "required");
    const char *t = json_string_value(v);
    if (!t || !*t || strlen(t) > RULES_RATIO_TEXT_MAX) return fail(e, path, key, "%s", bad);
    const char *dot = strchr(t, '.');
    size_t ilen = dot ? (size_t)(dot - t) : strlen(t), flen = dot ? strlen(dot + 1) : 0;
    if (ilen == 0 || ilen > 9 || strspn(t, "0123456789") != ilen || (dot && (flen == 0 || flen > 3)) ||
        (dot && strspn(dot + 1, "0123456789") != flen))
        return fail(e, path, key, "%s", bad);
    int64_t m = 0;
    for (size_t i = 0; i < ilen; i++) m = m * 10 + (t[i] - '0');
    m *= 1000;
    for (size_t i = 0, scale = 100; i < flen; i++, scale /= 10) m += (dot[1 + i] - '0') * (int64_t)scale;
    *milli = m;
    return 0;
}

/* count_at_least, distinct_users_at_least, distinct_at_least: same shape, different feature. */
static int parse_velocity(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "entity", "window_seconds", "count", NULL};
    json_int_t count;
    if (check_keys(pred, keys, path, e) != 0) return -1;
    if (get_entity(pred, "entity", path, false, &ru->entity, e) != 0) return -1;
    if (ru->entity == RULES_ENT_USER && ru->kind == PRED_DISTINCT_USERS_AT_LEAST)
        return fail(e, path, "entity", "distinct_users_at_least needs an entity other than user");
    if (get_window(rs, ru, pred, path, false, e) != 0) return -1;
    json_int_t max = ru->kind == PRED_COUNT_AT_LEAST ? RULES_COUNT_MAX : RULES_DISTINCT_CAP;
    if (get_int(pred, "count", path, 1, max, &count, e) != 0) return -1;
    ru->count = count;
    return 0;
}

/* The thresholds of an "amount" parameter for every currency exponent (see amount_threshold). */
static const char AMOUNT_BAD[] = "must be a decimal string of major units > 0 with at most 4 "
                                 "fraction digits (\"1000\", \"1000.50\")";

/* text: digits, optionally '.' and 1..4 digits, no leading zero, not zero. */
static bool amount_text_ok(const char *text) {
    const char *dot = strchr(text, '.');
    size_t ilen = dot ? (size_t)(dot - text) : strlen(text);
    size_t flen = dot ? strlen(dot + 1) : 0;
    return ilen > 0 && strlen(text) <= RULES_AMOUNT_TEXT_MAX &&
           (!dot || (flen > 0 && flen <= RULES_AMOUNT_FRAC_MAX)) && all_in(dot ? dot + 1 : "", "0123456789") &&
           strspn(text, "0123456789") == ilen && !(ilen > 1 && text[0] == '0') && !all_in(text, "0.");
}

/* "currencies": {"JPY": "150000", ...}: ISO 4217 codes (upper case, as ingest stores them) to
 * amounts in that currency's major units. Rules compare amounts without conversion ("amount" is
 * in the payment's own currency): this is how a rule says what "large" is where a unit is worth
 * a hundredth of a euro. */
static int get_currencies(const json_t *obj, const char *path, rule *ru, perr *e) {
    char where[160];
    const char *code;
    const json_t *v;
    if (!json_is_object(obj) || json_object_size(obj) < 1 || json_object_size(obj) > RULES_CURRENCIES_MAX)
        return fail(e, path, "currencies", "must be an object of 1..%d currency codes to amounts",
                    RULES_CURRENCIES_MAX);
    snprintf(where, sizeof where, "%s%scurrencies", path, *path ? "." : "");
    json_object_foreach((json_t *)obj, code, v) {
        int exp = pay_currency_exponent(code);
        if (strlen(code) != 3 || !all_in(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") || exp < 0)
            return fail(e, where, code, "not an ISO 4217 currency code in upper case (\"JPY\")");
        if (exp > RULES_AMOUNT_FRAC_MAX) return fail(e, where, code, "minor-unit exponent above 4");
        if (!json_is_string(v) || !amount_text_ok(json_string_value(v)))
            return fail(e, where, code, "%s", AMOUNT_BAD);
        memcpy(ru->ccy[ru->nccy].code, code, 4);
        if (amount_threshold(json_string_value(v), exp, &ru->ccy[ru->nccy].min_minor) != 0)
            return fail(e, where, code, "too large");
        ru->nccy++;
    }
    return 0;
}

/* "amount" (any currency) and/or "currencies" (per currency, first): at least one of them. */
static int get_amount(const json_t *pred, const char *path, rule *ru, perr *e) {
    const json_t *amount = json_object_get(pred, "amount"), *ccys = json_object_get(pred, "currencies");
    ru->any_currency = amount != NULL;
    if (!amount && !ccys) return fail(e, path, "amount", "required (or currencies)");
    if (amount && (!json_is_string(amount) || !amount_text_ok(json_string_value(amount))))
        return fail(e, path, "amount", "%s", AMOUNT_BAD);
    for (int exp = 0; amount && exp <= RULES_AMOUNT_FRAC_MAX; exp++)
        if (amount_threshold(json_string_value(amount), exp, &ru->min_minor[exp]) != 0)
            return fail(e, path, "amount", "too large");
    return ccys ? get_currencies(ccys, path, ru, e) : 0;
}

/* sum_at_least and avg_at_least {entity, window_seconds, amount}. */
static int parse_window_amount(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "entity", "window_seconds", "amount", "currencies", NULL};
    if (check_keys(pred, keys, path, e) != 0 || get_window(rs, ru, pred, path, false, e) != 0)
        return -1;
    return get_amount(pred, path, ru, e);
}

/* amount_ratio_at_least {window_seconds, ratio, min_history}: the user's own history. */
static int parse_amount_ratio(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "window_seconds", "ratio", "min_history", NULL};
    json_int_t minh = 1;
    if (check_keys(pred, keys, path, e) != 0 || get_window(rs, ru, pred, path, true, e) != 0 ||
        get_ratio(pred, "ratio", path, &ru->ratio_milli, e) != 0)
        return -1;
    if (json_object_get(pred, "min_history") &&
        get_int(pred, "min_history", path, 1, RULES_COUNT_MAX, &minh, e) != 0)
        return -1;
    ru->count = minh;
    return 0;
}

/* value_in {field, values}: the strings go to the set's pool. */
static int parse_value_in(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "field", "values", NULL};
    const json_t *f = json_object_get(pred, "field"), *list = json_object_get(pred, "values");
    char key[32];
    if (check_keys(pred, keys, path, e) != 0) return -1;
    int i = json_is_string(f) ? name_index(json_string_value(f), VALUE_FIELDS, VF_COUNT) : -1;
    if (i < 0)
        return fail(e, path, "field", "must be one of payment_method, card_type, transaction_type, "
                                      "currency, merchant_id, user_id");
    ru->vfield = (value_field)i;
    if (!json_is_array(list) || json_array_size(list) < 1 ||
        json_array_size(list) > RULES_VALUES_MAX)
        return fail(e, path, "values", "must be an array of 1..%d strings", RULES_VALUES_MAX);
    ru->values_off = rs->values_used;
    ru->nvalues = json_array_size(list);
    for (size_t k = 0; k < ru->nvalues; k++) {
        const json_t *vj = json_array_get(list, k);
        const char *v = json_string_value(vj);
        snprintf(key, sizeof key, "values[%zu]", k);
        if (!v || !*v || strlen(v) > PAY_ID_MAX)
            return fail(e, path, key, "must be a string of 1..%d bytes", PAY_ID_MAX);
        if (check_stored(ru, VALUE_FIELDS[ru->vfield], vj, path, key, e) != 0) return -1;
        if (rs->values_used + strlen(v) + 1 > sizeof rs->values)
            return fail(e, path, key, "the file's value lists exceed %d bytes", RULES_VALUES_POOL);
        memcpy(rs->values + rs->values_used, v, strlen(v) + 1);
        rs->values_used += strlen(v) + 1;
    }
    return 0;
}

static int parse_time_flag(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "flag", NULL};
    const json_t *f = json_object_get(pred, "flag");
    (void)rs;
    if (check_keys(pred, keys, path, e) != 0) return -1;
    int i = json_is_string(f) ? name_index(json_string_value(f), TIME_FLAGS, TF_COUNT) : -1;
    if (i < 0) return fail(e, path, "flag", "must be one of weekend, night");
    ru->flag = (time_flag)i;
    return 0;
}

/* vault_seen_at_least {identifier, count}, vault_new {identifier},
 * vault_fraud_at_least {identifier, count, include_chargebacks}. */
static int parse_vault(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "identifier", "count", "include_chargebacks", NULL};
    static const char *const keys_new[] = {"kind", "identifier", NULL};
    const json_t *cb = json_object_get(pred, "include_chargebacks");
    json_int_t count = 1;
    (void)rs;
    if (check_keys(pred, ru->kind == PRED_VAULT_NEW ? keys_new : keys, path, e) != 0 ||
        get_entity(pred, "identifier", path, true, &ru->entity, e) != 0)
        return -1;
    if (ru->kind != PRED_VAULT_NEW &&
        get_int(pred, "count", path, 1, RULES_COUNT_MAX, &count, e) != 0)
        return -1;
    if (cb && (ru->kind != PRED_VAULT_FRAUD || !json_is_boolean(cb)))
        return fail(e, path, "include_chargebacks",
                    ru->kind != PRED_VAULT_FRAUD ? "unknown key" : "must be true or false");
    ru->with_chargebacks = cb && json_is_true(cb);
    ru->count = count;
    return 0;
}

/* Index of the (window, delay) merchant-risk pair, adding it (and its count window) when new. */
static int risk_index(rules *rs, int window_days, int delay_days, size_t limit, size_t risk_limit,
                      size_t *out) {
    for (size_t i = 0; i < rs->nrisk; i++) {
        if (rs->risk[i].window_days == window_days && rs->risk[i].delay_days == delay_days) {
            *out = i;
            return 0;
        }
    }
    if (rs->nrisk >= risk_limit) return -1;
    rules_risk *k = &rs->risk[rs->nrisk];
    k->window_days = window_days;
    k->delay_days = delay_days;
    if (window_index(rs, RULES_ENT_MERCHANT, (int64_t)window_days * 86400000,
                     (int64_t)delay_days * 86400000, limit, &k->window_index) != 0)
        return -1;
    *out = rs->nrisk++;
    return 0;
}

/* merchant_risk_at_least {window_days, delay_days, ratio, min_payments}. */
static int parse_merchant_risk(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "window_days", "delay_days", "ratio",
                                       "min_payments", NULL};
    json_int_t wd, dd, minp = 1;
    if (check_keys(pred, keys, path, e) != 0 ||
        get_int(pred, "window_days", path, 1, 30, &wd, e) != 0 ||
        get_int(pred, "delay_days", path, 0, 30, &dd, e) != 0 ||
        get_ratio(pred, "ratio", path, &ru->ratio_milli, e) != 0)
        return -1;
    if (ru->ratio_milli > 1000) /* a share: "5" meant as 5 % could never hit */
        return fail(e, path, "ratio", "is a share of the merchant's payments: at most \"1\" (\"0.05\": 5 %%)");
    if (json_object_get(pred, "min_payments") &&
        get_int(pred, "min_payments", path, 1, RULES_COUNT_MAX, &minp, e) != 0)
        return -1;
    ru->count = minp;
    ru->entity = RULES_ENT_MERCHANT;
    if (ru->enabled &&
        risk_index(rs, (int)wd, (int)dd, RULES_MAX_WINDOWS, RULES_MAX_RISK_FILE, &ru->risk) != 0)
        return fail(e, path, NULL, "too many distinct windows or merchant-risk pairs in the file");
    return 0;
}

/* model_score_between {min, max}: 0..100; never hits without a model. */
static int parse_model_score(rules *rs, rule *ru, const json_t *pred, const char *path, perr *e) {
    static const char *const keys[] = {"kind", "min", "max", NULL};
    json_int_t lo, hi;
    (void)rs;
    if (check_keys(pred, keys, path, e) != 0 || get_int(pred, "min", path, 0, 100, &lo, e) != 0 ||
        get_int(pred, "max", path, 0, 100, &hi, e) != 0)
        return -1;
    if (lo > hi) return fail(e, path, NULL, "must satisfy min <= max");
    ru->model_min = (int)lo;
    ru->model_max = (int)hi;
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
    {"distinct_at_least", PRED_DISTINCT_AT_LEAST, parse_velocity},
    {"sum_at_least", PRED_SUM_AT_LEAST, parse_window_amount},
    {"avg_at_least", PRED_AVG_AT_LEAST, parse_window_amount},
    {"value_in", PRED_VALUE_IN, parse_value_in},
    {"time_flag", PRED_TIME_FLAG, parse_time_flag},
    {"amount_ratio_at_least", PRED_AMOUNT_RATIO, parse_amount_ratio},
    {"vault_seen_at_least", PRED_VAULT_SEEN, parse_vault},
    {"vault_new", PRED_VAULT_NEW, parse_vault},
    {"vault_fraud_at_least", PRED_VAULT_FRAUD, parse_vault},
    {"merchant_risk_at_least", PRED_MERCHANT_RISK, parse_merchant_risk},
    {"model_score_between", PRED_MODEL_SCORE, parse_model_score},
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
                "must be one of amount_at_least, country_in, country_mismatch, value_in, "
                "time_flag, count_at_least, distinct_users_at_least, distinct_at_least, "
                "sum_at_least, avg_at_least, amount_ratio_at_least, vault_seen_at_least, "
                "vault_new, vault_fraud_at_least, merchant_risk_at_least, model_score_between");
}

/* ---- rules and the file ---------------------------------------------------------------------- */

static int parse_rule_head(rule *ru, const json_t *rj, const char *path, perr *e) {
    static const char *const keys[] = {"code",    "description", "severity",  "weight",
                                       "message", "enabled",     "predicate", "model_covered",
                                       NULL};
    char desc[RULES_DESCRIPTION_MAX + 1];
    const json_t *en = json_object_get(rj, "enabled"), *sev = json_object_get(rj, "severity");
    const json_t *mc = json_object_get(rj, "model_covered");
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
    if (mc && !json_is_boolean(mc)) return fail(e, path, "model_covered", "must be true or false");
    ru->model_covered = json_is_true(mc);
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

/* "blend": {"model_weight": 0..100}: points a model score of 1.0 adds (issue 5's model). */
static int parse_blend(rules *rs, const json_t *root, perr *e) {
    static const char *const keys[] = {"model_weight", NULL};
    const json_t *b = json_object_get(root, "blend");
    json_int_t w = 0;
    if (!b) return 0;
    if (!json_is_object(b)) return fail(e, "", "blend", "must be an object");
    if (check_keys(b, keys, "blend", e) != 0 ||
        get_int(b, "model_weight", "blend", 0, 100, &w, e) != 0)
        return -1;
    rs->model_weight = (int)w;
    return 0;
}

static int cmp_code(const void *a, const void *b) { return strcmp(a, b); }

/* code's index in rs->ccy_set, or -1 when no rule lists it. */
static int ccy_index(const rules *rs, const char *code) {
    const char(*c)[4] = bsearch(code, rs->ccy_set, rs->nccy_set, sizeof rs->ccy_set[0], cmp_code);
    return c ? (int)(c - rs->ccy_set) : -1;
}

/* Fills rs->ccy_set and every rule's ccy_slot from the rules' "currencies" (see struct rules). */
static int index_currencies(rules *rs, perr *e) {
    for (size_t i = 0; i < rs->nrules; i++)
        for (size_t j = 0; j < rs->rule[i].nccy; j++) {
            const char *code = rs->rule[i].ccy[j].code;
            bool seen = false;
            for (size_t k = 0; k < rs->nccy_set && !seen; k++)
                seen = strcmp(rs->ccy_set[k], code) == 0;
            if (seen) continue;
            if (rs->nccy_set == RULES_CCY_SET_MAX)
                return fail(e, "", "rules", "more than %d currencies listed", RULES_CCY_SET_MAX);
            memcpy(rs->ccy_set[rs->nccy_set++], code, 4);
        }
    qsort(rs->ccy_set, rs->nccy_set, sizeof rs->ccy_set[0], cmp_code);
    for (size_t i = 0; i < rs->nrules; i++)
        for (size_t j = 0; j < rs->rule[i].nccy; j++)
            rs->rule[i].ccy_slot[ccy_index(rs, rs->rule[i].ccy[j].code)] = (unsigned char)(j + 1);
    return 0;
}

static int parse_root(rules *rs, const json_t *root, perr *e) {
    static const char *const keys[] = {"$schema", "version", "description", "thresholds",
                                       "blend",   "rules",   NULL};
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
        parse_thresholds(rs, root, e) != 0 || parse_blend(rs, root, e) != 0 ||
        parse_rules_array(rs, json_object_get(root, "rules"), e) != 0 ||
        index_currencies(rs, e) != 0)
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

int rules_model_weight(const rules *r) { return r->model_weight; }

size_t rules_model_covered(const rules *r, const char **codes, size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < r->nrules; i++) {
        if (!r->rule[i].model_covered) continue;
        if (n < max) codes[n] = r->rule[i].code;
        n++;
    }
    return n;
}

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
    case CF_IP: return p->ip_country;
    default: return "";
    }
}

static const char *value_of(const pay_payment *p, value_field f) {
    switch (f) {
    case VF_PAYMENT_METHOD: return p->payment_method;
    case VF_CARD_TYPE: return p->card_type;
    case VF_TRANSACTION_TYPE: return p->transaction_type;
    case VF_CURRENCY: return p->currency;
    case VF_MERCHANT: return p->merchant_id;
    case VF_USER: return p->user_id;
    default: return "";
    }
}

static bool value_in(const rules *r, const rule *ru, const char *v) {
    const char *s = r->values + ru->values_off;
    if (!v[0]) return false;
    for (size_t i = 0; i < ru->nvalues; i++, s += strlen(s) + 1)
        if (strcmp(s, v) == 0) return true;
    return false;
}

/* The rule's amount threshold in p's minor units; false when p's exponent is out of range. ci:
 * p's currency in the set's ccy_set (ccy_index(), once per payment), -1 when no rule lists it. */
static bool threshold_of(const rule *ru, const pay_payment *p, int ci, int64_t *out) {
    int slot = ci >= 0 ? ru->ccy_slot[ci] : 0;
    if (slot) {
        *out = ru->ccy[slot - 1].min_minor;
        return true;
    }
    if (!ru->any_currency || p->currency_exp < 0 || p->currency_exp > RULES_AMOUNT_FRAC_MAX)
        return false;
    *out = ru->min_minor[p->currency_exp];
    return true;
}

/* amount / (average of the user's EARLIER payments in the window) >= ratio, exactly:
 * amount * (count - 1) * 1000 >= ratio_milli * (sum - amount). */
static bool ratio_hits(const rule *ru, const rules_features *f) {
    int64_t n = f->count[ru->window] - 1, hist = f->sum_minor[ru->window] - f->p->amount_minor;
    if (n < ru->count || hist <= 0) return false;
    return (__int128)f->p->amount_minor * n * 1000 >= (__int128)ru->ratio_milli * hist;
}

static bool window_hits(const rule *ru, const rules_features *f, int ci) {
    const pay_payment *p = f->p;
    int64_t th, n = f->count[ru->window], sum = f->sum_minor[ru->window];
    if (!entity_present(p, ru->entity)) return false;
    switch (ru->kind) {
    case PRED_COUNT_AT_LEAST: return n >= ru->count;
    case PRED_DISTINCT_USERS_AT_LEAST:
    case PRED_DISTINCT_AT_LEAST: return f->distinct_users[ru->window] >= ru->count;
    case PRED_SUM_AT_LEAST: return threshold_of(ru, p, ci, &th) && sum >= th;
    case PRED_AVG_AT_LEAST:
        return n > 0 && threshold_of(ru, p, ci, &th) && (__int128)sum >= (__int128)th * n;
    case PRED_AMOUNT_RATIO: return ratio_hits(ru, f);
    default: return false;
    }
}

static bool vault_hits(const rule *ru, const rules_features *f) {
    const rules_vault_info *v = &f->vault[ru->entity];
    if (!v->present) return false;
    switch (ru->kind) {
    case PRED_VAULT_SEEN: return v->times_seen >= ru->count;
    case PRED_VAULT_NEW: return v->times_seen == 0;
    case PRED_VAULT_FRAUD:
        return v->fraud + (ru->with_chargebacks ? v->chargebacks : 0) >= ru->count;
    default: return false;
    }
}

static bool risk_hits(const rules *r, const rule *ru, const rules_features *f) {
    const rules_risk *k = &r->risk[ru->risk];
    int64_t n = f->count[k->window_index], frauds = f->risk_frauds[ru->risk];
    return n >= ru->count && frauds > 0 && (__int128)frauds * 1000 >= (__int128)ru->ratio_milli * n;
}

/* ci: f->p's currency in r->ccy_set (ccy_index()). */
static bool rule_hits(const rules *r, const rule *ru, const rules_features *f, int ci) {
    const pay_payment *p = f->p;
    const char *a, *b;
    int64_t th;
    switch (ru->kind) {
    case PRED_AMOUNT_AT_LEAST: return threshold_of(ru, p, ci, &th) && p->amount_minor >= th;
    case PRED_COUNTRY_IN:
        a = country_of(p, ru->field[0]);
        if (!is_country_code(a)) return false; /* "" (absent) never hits */
        return ru->countries[country_bit(a) / 8] & (1u << (country_bit(a) % 8));
    case PRED_COUNTRY_MISMATCH:
        a = country_of(p, ru->field[0]);
        b = country_of(p, ru->field[1]);
        return a[0] && b[0] && strcmp(a, b) != 0;
    case PRED_VALUE_IN: return value_in(r, ru, value_of(p, ru->vfield));
    case PRED_TIME_FLAG: return ru->flag == TF_WEEKEND ? f->weekend : f->night;
    case PRED_COUNT_AT_LEAST:
    case PRED_DISTINCT_USERS_AT_LEAST:
    case PRED_DISTINCT_AT_LEAST:
    case PRED_SUM_AT_LEAST:
    case PRED_AVG_AT_LEAST:
    case PRED_AMOUNT_RATIO: return window_hits(ru, f, ci);
    case PRED_VAULT_SEEN:
    case PRED_VAULT_NEW:
    case PRED_VAULT_FRAUD: return vault_hits(ru, f);
    case PRED_MERCHANT_RISK: return risk_hits(r, ru, f);
    case PRED_MODEL_SCORE:
        return f->has_model && f->model_score * 100 >= ru->model_min &&
               f->model_score * 100 <= ru->model_max;
    }
    return false;
}

/* Inserts ru's hit keeping out->hits sorted by weight descending, then code ascending. */
/* Inserts ru's hit with the weight it adds (w), keeping the hits sorted by weight. */
static void hit_insert(rules_result *out, const rule *ru, int w) {
    int i = out->nhits;
    while (i > 0 && (out->hits[i - 1].weight < w ||
                     (out->hits[i - 1].weight == w && strcmp(out->hits[i - 1].code, ru->code) > 0))) {
        out->hits[i] = out->hits[i - 1];
        i--;
    }
    out->hits[i] = (rules_hit){ru->code, ru->severity, ru->message, w, w != ru->weight};
    out->nhits++;
}

int rules_blend_score(int rule_points, double model_score, int model_weight) {
    int sum = rule_points;
    if (model_weight > 0) /* the model's share (issue 5); model_score is 0..1 */
        sum += (int)(model_score * model_weight + 0.5);
    return sum > 100 ? 100 : sum;
}

void rules_eval(const rules *r, const rules_features *f, rules_result *out) {
    int sum = 0;
    assert(r && f && f->p && out);
    int ci = ccy_index(r, f->p->currency); /* once per payment, for every amount rule */
    out->nhits = 0;
    for (size_t i = 0; i < r->nrules; i++) {
        const rule *ru = &r->rule[i];
        if (!ru->enabled || !rule_hits(r, ru, f, ci)) continue;
        /* A model-covered rule does not count twice: the model's score already weighs its signal
         * (unless the model has no share of the score, model_weight 0: then the rule counts) */
        int w = f->has_model && r->model_weight > 0 && ru->model_covered ? 0 : ru->weight;
        hit_insert(out, ru, w);
        sum += w; /* at most RULES_MAX * 100: no overflow */
    }
    out->score = rules_blend_score(sum, f->has_model ? f->model_score : 0, r->model_weight);
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
        if (o && h->model_covered) json_object_set_new(o, "model_covered", json_true());
        if (json_array_append_new(arr, o) != 0) { /* steals o, NULL included */
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* The features are written as JSON text directly (one buffer, no object per key): this runs for
 * every payment. Same bytes as jansson's compact dump of the same object. */
typedef struct tw {
    char *p;
    size_t len, cap;
    bool oom;
} tw;

static void tw_raw(tw *w, const char *s, size_t n) {
    if (w->oom) return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 2048;
        while (cap < w->len + n + 1) cap *= 2;
        char *p = realloc(w->p, cap);
        if (!p) {
            w->oom = true;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

/* "key": (keys and string values here are plain ASCII: no escaping needed) */
static void tw_key(tw *w, const char *key) {
    if (w->len > 1) tw_raw(w, ",\"", 2);
    else tw_raw(w, "\"", 1);
    tw_raw(w, key, strlen(key));
    tw_raw(w, "\":", 2);
}

static void tw_int(tw *w, const char *key, int64_t v) {
    char buf[21];
    tw_key(w, key);
    tw_raw(w, buf, fs_int_format(v, buf));
}

static void tw_str(tw *w, const char *key, const char *v) {
    tw_key(w, key);
    tw_raw(w, "\"", 1);
    tw_raw(w, v, strlen(v));
    tw_raw(w, "\"", 1);
}

/* As jansson prints a real: %.17g, with ".0" when it would read back as an integer. */
static void tw_real(tw *w, const char *key, double v) {
    char buf[40];
    int n = snprintf(buf, sizeof buf, "%.17g", v);
    if (!strpbrk(buf, ".eE") && !strstr(buf, "inf") && !strstr(buf, "nan"))
        n += snprintf(buf + n, sizeof buf - (size_t)n, ".0");
    tw_key(w, key);
    tw_raw(w, buf, (size_t)n);
}

/* The evidence object, key by key. Every key the features of a rule set can have is a slot: a kind
 * and an index (window, vault entity, risk pair, country field). The same slots write the evidence
 * (rules_features_text) and answer single-key reads (rules_feature_find/get, the model's columns),
 * so a key cannot mean one thing in decisions.features and another thing in a model row.
 *
 * Window keys: "<entity>_count_<secs>s", "_sum_minor_", "_distinct_users_" (user:
 * "_distinct_cards_"); delayed windows "<entity>_count_<secs>s_delay_<secs>s" only; for user
 * windows "user_amount_ratio_<secs>s" (amount / average of the earlier payments, when there are
 * any). Vault keys per entity present; merchant risk per (window, delay) pair. */
typedef enum fkind {
    FK_NONE = 0,
    FK_AMOUNT, FK_CURRENCY, FK_COUNTRY, FK_WEEKEND, FK_NIGHT,          /* the payment */
    FK_COUNT, FK_SUM, FK_DISTINCT, FK_RATIO,                           /* index: window */
    FK_VAULT_SEEN, FK_VAULT_FRAUD, FK_VAULT_CHARGEBACKS, FK_VAULT_AGE, /* index: entity */
    FK_RISK_FRAUDS, FK_RISK,                                           /* index: risk pair */
    FK_MODEL,
    FK_END
} fkind;

typedef struct fslot {
    uint8_t kind;  /* fkind */
    uint8_t index; /* < RULES_MAX_FEATURE_WINDOWS */
} fslot;

#define FSLOTS_MAX (2 + CF_COUNT + 2 + 4 * RULES_MAX_FEATURE_WINDOWS + 4 * RULES_ENT_COUNT + \
                    2 * RULES_MAX_RISK + 1)
#define FREF(kind, index) ((int)(kind) << 8 | (int)(index)) /* a slot as a public reference */

/* r's slots in the order the evidence is written. */
static size_t feature_slots(const rules *r, fslot *out) {
    size_t n = 0;
    out[n++] = (fslot){FK_AMOUNT, 0};
    out[n++] = (fslot){FK_CURRENCY, 0};
    for (int c = CF_COUNTRY; c < CF_COUNT; c++) out[n++] = (fslot){FK_COUNTRY, (uint8_t)c};
    out[n++] = (fslot){FK_WEEKEND, 0};
    out[n++] = (fslot){FK_NIGHT, 0};
    for (size_t i = 0; i < r->nwindows; i++) {
        out[n++] = (fslot){FK_COUNT, (uint8_t)i};
        if (r->window[i].offset_ms) continue;
        out[n++] = (fslot){FK_SUM, (uint8_t)i};
        out[n++] = (fslot){FK_DISTINCT, (uint8_t)i};
        if (r->window[i].entity == RULES_ENT_USER) out[n++] = (fslot){FK_RATIO, (uint8_t)i};
    }
    for (int e = 0; e < RULES_ENT_COUNT; e++)
        for (int k = FK_VAULT_SEEN; k <= FK_VAULT_AGE; k++) out[n++] = (fslot){(uint8_t)k, (uint8_t)e};
    for (size_t i = 0; i < r->nrisk; i++) {
        out[n++] = (fslot){FK_RISK_FRAUDS, (uint8_t)i};
        out[n++] = (fslot){FK_RISK, (uint8_t)i};
    }
    out[n++] = (fslot){FK_MODEL, 0};
    assert(n <= FSLOTS_MAX);
    return n;
}

/* The key of a window slot (FK_COUNT..FK_RATIO) of window win, written into buf. */
static const char *window_key(const rules_window *win, fkind kind, char *buf, size_t size) {
    const char *ent = rules_entity_name(win->entity);
    long long secs = (long long)(win->window_ms / 1000);
    switch (kind) {
    case FK_COUNT:
        if (!win->offset_ms) snprintf(buf, size, "%s_count_%llds", ent, secs);
        else snprintf(buf, size, "%s_count_%llds_delay_%llds", ent, secs, (long long)(win->offset_ms / 1000));
        return buf;
    case FK_SUM: snprintf(buf, size, "%s_sum_minor_%llds", ent, secs); return buf;
    case FK_DISTINCT:
        snprintf(buf, size, "%s_distinct_%s_%llds", ent,
                 win->entity == RULES_ENT_USER ? "cards" : "users", secs);
        return buf;
    case FK_RATIO: snprintf(buf, size, "user_amount_ratio_%llds", secs); return buf;
    default: return "";
    }
}

/* The key of a merchant-risk slot (FK_RISK_FRAUDS, FK_RISK) of pair k, written into buf. */
static const char *risk_key(const rules_risk *k, fkind kind, char *buf, size_t size) {
    snprintf(buf, size, "merchant_%s_%dd_delay_%dd", kind == FK_RISK ? "risk" : "frauds",
             k->window_days, k->delay_days);
    return buf;
}

/* The key of a slot: a static name, or written into buf. */
static const char *slot_key(const rules *r, fslot s, char *buf, size_t size) {
    const char *ent = rules_entity_name((rules_entity)s.index);
    switch ((fkind)s.kind) {
    case FK_AMOUNT: return "amount_minor";
    case FK_CURRENCY: return "currency";
    case FK_COUNTRY: return FIELD_NAMES[s.index];
    case FK_WEEKEND: return "weekend";
    case FK_NIGHT: return "night";
    case FK_MODEL: return "model_score";
    case FK_COUNT: case FK_SUM: case FK_DISTINCT: case FK_RATIO:
        return window_key(&r->window[s.index], (fkind)s.kind, buf, size);
    case FK_VAULT_SEEN: snprintf(buf, size, "vault_%s_seen", ent); return buf;
    case FK_VAULT_FRAUD: snprintf(buf, size, "vault_%s_fraud", ent); return buf;
    case FK_VAULT_CHARGEBACKS: snprintf(buf, size, "vault_%s_chargebacks", ent); return buf;
    case FK_VAULT_AGE: snprintf(buf, size, "vault_%s_age_s", ent); return buf;
    case FK_RISK_FRAUDS: case FK_RISK:
        return risk_key(&r->risk[s.index], (fkind)s.kind, buf, size);
    default: return "";
    }
}

/* A vault slot's value: absent without the identifier (and the age without an earlier payment). */
static rules_value vault_value(fslot s, const rules_features *f, int64_t *iv) {
    const rules_vault_info *v = &f->vault[s.index];
    if (!v->present || (s.kind == FK_VAULT_AGE && !v->times_seen)) return RULES_VALUE_ABSENT;
    *iv = s.kind == FK_VAULT_SEEN    ? v->times_seen
          : s.kind == FK_VAULT_FRAUD ? v->fraud
          : s.kind == FK_VAULT_CHARGEBACKS ? v->chargebacks
                                           : (f->p->event_time_ms - v->first_seen_ms) / 1000;
    return RULES_VALUE_INT;
}

/* A numeric slot's value for f (the string slots are absent here). */
static rules_value slot_value(const rules *r, fslot s, const rules_features *f, int64_t *iv,
                              double *dv) {
    size_t i = s.index;
    int64_t hn, hs, n;
    switch ((fkind)s.kind) {
    case FK_AMOUNT: *iv = f->p->amount_minor; return RULES_VALUE_INT;
    case FK_WEEKEND: *iv = f->weekend; return RULES_VALUE_INT;
    case FK_NIGHT: *iv = f->night; return RULES_VALUE_INT;
    case FK_COUNT: *iv = f->count[i]; return RULES_VALUE_INT;
    case FK_SUM: *iv = f->sum_minor[i]; return RULES_VALUE_INT;
    case FK_DISTINCT: *iv = f->distinct_users[i]; return RULES_VALUE_INT;
    case FK_RATIO: /* the earlier payments of the window: all but this one */
        hn = f->count[i] - 1, hs = f->sum_minor[i] - f->p->amount_minor;
        if (hn <= 0 || hs <= 0) return RULES_VALUE_ABSENT;
        *dv = (double)f->p->amount_minor * (double)hn / (double)hs;
        return RULES_VALUE_REAL;
    case FK_VAULT_SEEN: case FK_VAULT_FRAUD: case FK_VAULT_CHARGEBACKS: case FK_VAULT_AGE:
        return vault_value(s, f, iv);
    case FK_RISK_FRAUDS: *iv = f->risk_frauds[i]; return RULES_VALUE_INT;
    case FK_RISK:
        n = f->count[r->risk[i].window_index];
        *dv = n > 0 ? (double)f->risk_frauds[i] / (double)n : 0.0;
        return RULES_VALUE_REAL;
    case FK_MODEL:
        if (!f->has_model) return RULES_VALUE_ABSENT;
        *dv = f->model_score;
        return RULES_VALUE_REAL;
    default: return RULES_VALUE_ABSENT;
    }
}

static void write_slot(tw *w, const rules *r, fslot s, const rules_features *f) {
    char buf[96];
    int64_t iv = 0;
    double dv = 0;
    if (s.kind == FK_CURRENCY || s.kind == FK_COUNTRY) {
        const char *v = s.kind == FK_CURRENCY ? f->p->currency : country_of(f->p, (country_field)s.index);
        if (v[0] || s.kind == FK_CURRENCY) tw_str(w, slot_key(r, s, buf, sizeof buf), v);
        return;
    }
    rules_value t = slot_value(r, s, f, &iv, &dv);
    if (t == RULES_VALUE_INT) tw_int(w, slot_key(r, s, buf, sizeof buf), iv);
    else if (t == RULES_VALUE_REAL) tw_real(w, slot_key(r, s, buf, sizeof buf), dv);
}

/* Keys in a fixed order, so the same inputs always give the same bytes (replay parity). */
char *rules_features_text(const rules *r, const rules_features *f, size_t *len) {
    fslot slots[FSLOTS_MAX];
    size_t n = feature_slots(r, slots);
    tw w = {0};
    tw_raw(&w, "{", 1);
    for (size_t i = 0; i < n; i++) write_slot(&w, r, slots[i], f);
    tw_raw(&w, "}", 1);
    if (w.oom) {
        free(w.p);
        return NULL;
    }
    if (len) *len = w.len;
    return w.p;
}

json_t *rules_features_json(const rules *r, const rules_features *f) {
    char *text = rules_features_text(r, f, NULL);
    json_t *o = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return o;
}

/* The last numeric slot with that key: a JSON parser keeps the last of duplicate keys (none are
 * expected, but the evidence and the reference must agree even then). */
int rules_feature_find(const rules *r, const char *name) {
    fslot slots[FSLOTS_MAX];
    char buf[96];
    size_t n = feature_slots(r, slots);
    int found = -1;
    for (size_t i = 0; i < n; i++) {
        if (slots[i].kind == FK_CURRENCY || slots[i].kind == FK_COUNTRY) continue;
        if (strcmp(slot_key(r, slots[i], buf, sizeof buf), name) == 0)
            found = FREF(slots[i].kind, slots[i].index);
    }
    return found;
}

rules_value rules_feature_get(const rules *r, int ref, const rules_features *f, int64_t *iv,
                              double *dv) {
    fslot s = {(uint8_t)(ref >> 8), (uint8_t)(ref & 0xff)};
    if (ref < 0 || s.kind <= FK_NONE || s.kind >= FK_END) return RULES_VALUE_ABSENT;
    /* a reference is only ever made by rules_feature_find on this same set */
    assert((s.kind < FK_COUNT || s.kind > FK_RATIO || s.index < r->nwindows) &&
           (s.kind < FK_RISK_FRAUDS || s.kind > FK_RISK || s.index < r->nrisk));
    return slot_value(r, s, f, iv, dv);
}

/* ---- extra feature windows, accessors ---------------------------------------------------------- */

/* "<n>m" | "<n>h" | "<n>d" -> ms; -1 when invalid or out of 1 min .. 30 days. */
static int64_t duration_ms(const char *s, size_t len) {
    char *end;
    char buf[16];
    if (len < 2 || len >= sizeof buf) return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    long long n = strtoll(buf, &end, 10);
    int64_t unit = *end == 'm' ? 60000 : *end == 'h' ? 3600000 : *end == 'd' ? 86400000 : 0;
    if (!unit || end[1] || n < 1 || end == buf) return -1;
    int64_t ms = (int64_t)n * unit;
    return ms <= (int64_t)RULES_WINDOW_SECONDS_MAX * 1000 ? ms : -1;
}

/* One "ENTITY:DUR,DUR" group. */
static int add_group(rules *r, const char *g, size_t len, perr *e) {
    const char *colon = memchr(g, ':', len);
    char ent[16];
    size_t elen = colon ? (size_t)(colon - g) : 0, idx;
    if (!colon || elen == 0 || elen >= sizeof ent)
        return fail(e, NULL, NULL, "\"%.*s\": expected ENTITY:DURATION[,DURATION...]", (int)len, g);
    memcpy(ent, g, elen);
    ent[elen] = '\0';
    int ei = name_index(ent, ENTITY_NAMES, RULES_ENT_COUNT);
    if (ei < 0) return fail(e, NULL, NULL, "unknown entity \"%s\"", ent);
    for (const char *d = colon + 1; d < g + len;) {
        const char *comma = memchr(d, ',', (size_t)(g + len - d));
        size_t dlen = comma ? (size_t)(comma - d) : (size_t)(g + len - d);
        int64_t ms = duration_ms(d, dlen);
        char why[200];
        if (ms < 0)
            return fail(e, NULL, NULL, "\"%.*s\": a duration is <n>m, <n>h or <n>d, 1m..30d",
                        (int)dlen, d);
        if (!window_aligned(ms / 1000, why, sizeof why))
            return fail(e, NULL, NULL, "\"%.*s\": %s", (int)dlen, d, why);
        if (window_index(r, (rules_entity)ei, ms, 0, RULES_MAX_FEATURE_WINDOWS, &idx) != 0)
            return fail(e, NULL, NULL, "more than %d feature windows", RULES_MAX_FEATURE_WINDOWS);
        d += dlen + 1;
    }
    return 0;
}

int rules_add_feature_windows(rules *r, const char *spec, const char *risk_days, int delay_days,
                              char *errstr, size_t errstr_size) {
    perr e = {errstr, errstr_size, "feature-windows"};
    size_t idx;
    for (const char *g = spec; g && *g;) {
        size_t len = strcspn(g, " ;");
        if (len && add_group(r, g, len, &e) != 0) return -1;
        g += len;
        g += strspn(g, " ;");
    }
    e.origin = "risk-windows-days";
    for (const char *d = risk_days; d && *d;) {
        char *end;
        long n = strtol(d, &end, 10);
        if (end == d || n < 1 || n > 30 || (*end && *end != ','))
            return fail(&e, NULL, NULL, "expected day counts 1..30 separated by commas");
        if (delay_days < 0 || delay_days > 30)
            return fail(&e, NULL, NULL, "the delay must be 0..30 days");
        if (risk_index(r, (int)n, delay_days, RULES_MAX_FEATURE_WINDOWS, RULES_MAX_RISK, &idx) != 0)
            return fail(&e, NULL, NULL, "too many feature windows or merchant-risk pairs");
        d = *end ? end + 1 : end;
    }
    return 0;
}

/* ---- the windows a model reads ---------------------------------------------------------------- */

/* The window a model column reads, when its name is a window key of the evidence or the derived
 * average of one (modelrow.h): "<entity>_count_<N>s", "_sum_minor_<N>s", "_avg_minor_<N>s",
 * "_distinct_users_<N>s" ("user_distinct_cards_<N>s"), "user_amount_ratio_<N>s", or a delayed
 * "<entity>_count_<N>s_delay_<D>s" (whole days, as risk-windows-days makes them). The name is
 * written back by the evidence's own code (window_key) and must come out the same, so a name the
 * evidence never holds ("user_distinct_users_60s", "ip_amount_ratio_60s", "user_count_0300s")
 * reads no window; nor does a window a rule could not have (over 30 days, not whole buckets). */
static bool column_window(const char *name, rules_window *out) {
    static const struct {
        const char *prefix;
        fkind kind; /* FK_NONE: the derived average (its sum and count keys) */
    } forms[] = {
        {"count_", FK_COUNT},           {"sum_minor_", FK_SUM},
        {"avg_minor_", FK_NONE},        {"distinct_users_", FK_DISTINCT},
        {"distinct_cards_", FK_DISTINCT}, {"amount_ratio_", FK_RATIO},
    };
    const long long day = 86400, max_days = RULES_WINDOW_SECONDS_MAX / 86400;
    char buf[96], why[200];
    long long secs, delay;
    int end;
    for (int e = 0; e < RULES_ENT_COUNT; e++) {
        size_t n = strlen(ENTITY_NAMES[e]);
        if (strncmp(name, ENTITY_NAMES[e], n) != 0 || name[n] != '_') continue;
        const char *rest = name + n + 1;
        end = 0;
        if (sscanf(rest, "count_%9llds_delay_%9llds%n", &secs, &delay, &end) == 2 && end > 0 &&
            !rest[end]) {
            *out = (rules_window){(rules_entity)e, secs * 1000, delay * 1000};
            return secs % day == 0 && delay % day == 0 && secs >= day && secs <= max_days * day &&
                   delay >= day && delay <= max_days * day &&
                   strcmp(window_key(out, FK_COUNT, buf, sizeof buf), name) == 0;
        }
        for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
            size_t plen = strlen(forms[i].prefix);
            const char *num = rest + plen;
            end = 0;
            if (strncmp(rest, forms[i].prefix, plen) != 0 ||
                sscanf(num, "%9llds%n", &secs, &end) != 1 || end == 0 || num[end])
                continue;
            if (secs < 1 || secs > RULES_WINDOW_SECONDS_MAX || !window_aligned(secs, why, sizeof why))
                return false;
            *out = (rules_window){(rules_entity)e, secs * 1000, 0};
            if (forms[i].kind == FK_NONE)
                snprintf(buf, sizeof buf, "%s_avg_minor_%llds", ENTITY_NAMES[e], secs);
            else
                window_key(out, forms[i].kind, buf, sizeof buf);
            return strcmp(buf, name) == 0;
        }
    }
    return false;
}

/* The merchant-risk pair of a column "merchant_frauds_<W>d_delay_<D>d" or
 * "merchant_risk_<W>d_delay_<D>d" (W 1..30, D 0..30, as merchant_risk_at_least allows), checked
 * the same way by writing the name back. */
static bool column_risk(const char *name, rules_risk *out) {
    static const fkind kinds[] = {FK_RISK_FRAUDS, FK_RISK};
    char buf[96];
    int w, d, end;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *prefix = kinds[i] == FK_RISK ? "merchant_risk_" : "merchant_frauds_";
        const char *num = name + strlen(prefix);
        end = 0;
        if (strncmp(name, prefix, strlen(prefix)) != 0 ||
            sscanf(num, "%2dd_delay_%2dd%n", &w, &d, &end) != 2 || end == 0 || num[end])
            continue;
        *out = (rules_risk){w, d, 0};
        return w >= 1 && w <= 30 && d >= 0 && d <= 30 &&
               strcmp(risk_key(out, kinds[i], buf, sizeof buf), name) == 0;
    }
    return false;
}

int rules_add_model_windows(rules *r, const char *const *names, size_t n, char *errstr,
                            size_t errstr_size) {
    perr e = {errstr, errstr_size, "model"};
    for (size_t i = 0; i < n; i++) {
        rules_window w;
        rules_risk k;
        size_t idx;
        int rc = 0;
        if (column_risk(names[i], &k))
            rc = risk_index(r, k.window_days, k.delay_days, RULES_MAX_FEATURE_WINDOWS,
                            RULES_MAX_RISK, &idx);
        else if (column_window(names[i], &w))
            rc = window_index(r, w.entity, w.window_ms, w.offset_ms, RULES_MAX_FEATURE_WINDOWS,
                              &idx);
        if (rc != 0)
            return fail(&e, NULL, NULL,
                        "column %s: more than %d feature windows or %d merchant-risk pairs with "
                        "the rules' own, feature-windows and risk-windows-days",
                        names[i], RULES_MAX_FEATURE_WINDOWS, RULES_MAX_RISK);
    }
    return 0;
}

/* Everything a set holds is inside the struct (no pointers but to static strings): a byte copy is
 * a set of its own. */
rules *rules_copy(const rules *r) {
    rules *c = malloc(sizeof *c);
    if (c) memcpy(c, r, sizeof *c);
    return c;
}

size_t rules_risk_count(const rules *r) { return r->nrisk; }

const rules_risk *rules_risk_at(const rules *r, size_t i) { return i < r->nrisk ? &r->risk[i] : NULL; }

int64_t rules_risk_span_ms(const rules *r) {
    int64_t max = 0;
    for (size_t i = 0; i < r->nrisk; i++) {
        int64_t span = (int64_t)(r->risk[i].window_days + r->risk[i].delay_days) * 86400000;
        if (span > max) max = span;
    }
    return max;
}

bool rules_vault_entity(rules_entity e) {
    return e == RULES_ENT_CARD || e == RULES_ENT_IP || e == RULES_ENT_DEVICE || e == RULES_ENT_EMAIL;
}

const char *rules_vault_key(const pay_payment *p, rules_entity e) {
    switch (e) {
    case RULES_ENT_CARD: return p->card_fingerprint_digest;
    case RULES_ENT_IP: return p->ip_digest;
    case RULES_ENT_DEVICE: return p->device_id_digest;
    case RULES_ENT_EMAIL: return p->email_digest;
    default: return "";
    }
}

/* Weekend and night in UTC: event times carry no time zone of the payer (documented). */
void rules_derive(rules_features *f) {
    int64_t t = f->p->event_time_ms, day = t >= 0 ? t / 86400000 : (t - 86399999) / 86400000;
    int64_t hour = (t - day * 86400000) / 3600000;
    int wday = (int)(((day % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday (4); 0 = Sunday */
    f->weekend = wday == 0 || wday == 6;
    f->night = hour <= 6;
}

void rules_counterpart(const pay_payment *p, rules_entity e, char *out, size_t out_size) {
    if (e == RULES_ENT_USER) rules_entity_key(p, RULES_ENT_CARD, out, out_size);
    else snprintf(out, out_size, "%s", p->user_id);
}
