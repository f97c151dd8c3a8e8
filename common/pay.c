/* pay: the payment model, its validation and its JSON codecs (see pay.h).
 *
 * One set of field checks serves both wire forms: the HTTP request (every problem is collected,
 * so a client can fix its body in one round trip) and the raw_payments event (the first problem
 * is reported, and the message goes to the DLQ). Checks fail with a stable code and a fixed
 * message: they never quote the value, which may be personal data. */
#include "pay.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "jsonfast.h"

#define TEXT_SHORT_MAX 256       /* device_info strings, card fingerprint, device id */
#define AMOUNT_TEXT_MAX 64       /* longer decimal strings are not amounts */

/* ---------------------------------------------------------------- reference tables */

/* ISO 4217 active codes with their minor-unit exponents (List One, 2025), sorted for bsearch.
 * Left out: codes without minor units (funds and metals: XAU, XDR, XSU, XTS, XXX...) and
 * withdrawn ones (HRK since 2023). */
typedef struct currency {
    char code[4];
    int exp;
} currency;

static const currency CURRENCIES[] = {
    {"AED", 2}, {"AFN", 2}, {"ALL", 2}, {"AMD", 2}, {"ANG", 2}, {"AOA", 2}, {"ARS", 2}, {"AUD", 2},
    {"AWG", 2}, {"AZN", 2}, {"BAM", 2}, {"BBD", 2}, {"BDT", 2}, {"BGN", 2}, {"BHD", 3}, {"BIF", 0},
    {"BMD", 2}, {"BND", 2}, {"BOB", 2}, {"BOV", 2}, {"BRL", 2}, {"BSD", 2}, {"BTN", 2}, {"BWP", 2},
    {"BYN", 2}, {"BZD", 2}, {"CAD", 2}, {"CDF", 2}, {"CHE", 2}, {"CHF", 2}, {"CHW", 2}, {"CLF", 4},
    {"CLP", 0}, {"CNY", 2}, {"COP", 2}, {"COU", 2}, {"CRC", 2}, {"CUC", 2}, {"CUP", 2}, {"CVE", 2},
    {"CZK", 2}, {"DJF", 0}, {"DKK", 2}, {"DOP", 2}, {"DZD", 2}, {"EGP", 2}, {"ERN", 2}, {"ETB", 2},
    {"EUR", 2}, {"FJD", 2}, {"FKP", 2}, {"GBP", 2}, {"GEL", 2}, {"GHS", 2}, {"GIP", 2}, {"GMD", 2},
    {"GNF", 0}, {"GTQ", 2}, {"GYD", 2}, {"HKD", 2}, {"HNL", 2}, {"HTG", 2}, {"HUF", 2}, {"IDR", 2},
    {"ILS", 2}, {"INR", 2}, {"IQD", 3}, {"IRR", 2}, {"ISK", 0}, {"JMD", 2}, {"JOD", 3}, {"JPY", 0},
    {"KES", 2}, {"KGS", 2}, {"KHR", 2}, {"KMF", 0}, {"KPW", 2}, {"KRW", 0}, {"KWD", 3}, {"KYD", 2},
    {"KZT", 2}, {"LAK", 2}, {"LBP", 2}, {"LKR", 2}, {"LRD", 2}, {"LSL", 2}, {"LYD", 3}, {"MAD", 2},
    {"MDL", 2}, {"MGA", 2}, {"MKD", 2}, {"MMK", 2}, {"MNT", 2}, {"MOP", 2}, {"MRU", 2}, {"MUR", 2},
    {"MVR", 2}, {"MWK", 2}, {"MXN", 2}, {"MXV", 2}, {"MYR", 2}, {"MZN", 2}, {"NAD", 2}, {"NGN", 2},
    {"NIO", 2}, {"NOK", 2}, {"NPR", 2}, {"NZD", 2}, {"OMR", 3}, {"PAB", 2}, {"PEN", 2}, {"PGK", 2},
    {"PHP", 2}, {"PKR", 2}, {"PLN", 2}, {"PYG", 0}, {"QAR", 2}, {"RON", 2}, {"RSD", 2}, {"RUB", 2},
    {"RWF", 0}, {"SAR", 2}, {"SBD", 2}, {"SCR", 2}, {"SDG", 2}, {"SEK", 2}, {"SGD", 2}, {"SHP", 2},
    {"SLE", 2}, {"SLL", 2}, {"SOS", 2}, {"SRD", 2}, {"SSP", 2}, {"STN", 2}, {"SVC", 2}, {"SYP", 2},
    {"SZL", 2}, {"THB", 2}, {"TJS", 2}, {"TMT", 2}, {"TND", 3}, {"TOP", 2}, {"TRY", 2}, {"TTD", 2},
    {"TWD", 2}, {"TZS", 2}, {"UAH", 2}, {"UGX", 0}, {"USD", 2}, {"USN", 2}, {"UYI", 0}, {"UYU", 2},
    {"UYW", 4}, {"UZS", 2}, {"VED", 2}, {"VES", 2}, {"VND", 0}, {"VUV", 0}, {"WST", 2}, {"XAF", 0},
    {"XCD", 2}, {"XCG", 2}, {"XOF", 0}, {"XPF", 0}, {"YER", 2}, {"ZAR", 2}, {"ZMW", 2}, {"ZWG", 2},
    {"ZWL", 2},
};

/* ISO 3166-1 alpha-2 officially assigned codes (249), sorted, plus XK (Kosovo: user-assigned,
 * but used by the EU and the card networks, so payments from Kosovo carry it). */
static const char COUNTRIES[] =
    "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZCACCCDCFCGCHCICKCL"
    "CMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGLGMGNGPGQGRGSGTGU"
    "GWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULVLYMAMC"
    "MDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPT"
    "PWPYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUA"
    "UGUMUSUYUZVAVCVEVGVIVNVUWFWSXKYEYTZAZMZW";

static int currency_cmp(const void *key, const void *elem) {
    return strcmp(key, ((const currency *)elem)->code);
}

int pay_currency_exponent(const char *code) {
    char up[4];
    if (!code || strlen(code) != 3) return -1;
    for (int i = 0; i < 3; i++) up[i] = (char)toupper((unsigned char)code[i]);
    up[3] = '\0';
    const currency *c = bsearch(up, CURRENCIES, sizeof CURRENCIES / sizeof CURRENCIES[0],
                                sizeof CURRENCIES[0], currency_cmp);
    return c ? c->exp : -1;
}

static int country_cmp(const void *key, const void *elem) {
    return memcmp(key, elem, 2);
}

/* cc: two upper-case letters. */
static bool country_assigned(const char *cc) {
    return bsearch(cc, COUNTRIES, (sizeof COUNTRIES - 1) / 2, 2, country_cmp) != NULL;
}

/* ---------------------------------------------------------------- amounts */

typedef enum amt_rc { AMT_OK, AMT_SYNTAX, AMT_TOO_PRECISE, AMT_NOT_POSITIVE, AMT_RANGE } amt_rc;

/* Scans [0-9]+(\.[0-9]+)? in exact integer arithmetic. A leading '-' is recognized only to say
 * "not positive" rather than "invalid". exp < 0 checks the syntax and the sign only (used when
 * the currency is unknown, so the client still learns what else is wrong with the amount). */
static amt_rc amount_scan(const char *s, size_t len, int exp, int64_t *minor) {
    size_t i = 0, int_start, frac_start = 0;
    int frac = 0;
    bool neg = len > 0 && s[0] == '-', overflow = false;
    int64_t v = 0;
    i = int_start = neg ? 1 : 0;
    for (bool in_frac = false; i < len; i++) {
        if (s[i] == '.' && !in_frac && i > int_start) {
            in_frac = true;
            frac_start = i + 1;
            continue;
        }
        if (s[i] < '0' || s[i] > '9') return AMT_SYNTAX;
        frac += in_frac;
        if (v > (INT64_MAX - (s[i] - '0')) / 10) overflow = true;
        else v = v * 10 + (s[i] - '0');
    }
    if (i == int_start || (frac_start && frac == 0)) return AMT_SYNTAX;
    if (neg) return AMT_NOT_POSITIVE;
    if (exp < 0) return v == 0 && !overflow ? AMT_NOT_POSITIVE : AMT_OK;
    if (frac > exp) return AMT_TOO_PRECISE;
    for (int k = frac; k < exp && !overflow; k++) {
        if (v > INT64_MAX / 10) overflow = true;
        else v *= 10;
    }
    if (overflow || v > PAY_AMOUNT_MAX_MINOR) return AMT_RANGE;
    if (v == 0) return AMT_NOT_POSITIVE;
    *minor = v;
    return AMT_OK;
}

int pay_amount_parse(const char *s, int exp, int64_t *minor) {
    int64_t v = 0;
    if (!s || !minor || exp < 0 || exp > 18) return -1;
    if (amount_scan(s, strlen(s), exp, &v) != AMT_OK) return -1;
    *minor = v;
    return 0;
}

void pay_amount_format(int64_t minor, int exp, char *out, size_t out_size) {
    /* by hand, right to left: snprintf was a visible share of encoding every event */
    char buf[48], *q = buf + sizeof buf;
    uint64_t mag = minor < 0 ? (uint64_t)0 - (uint64_t)minor : (uint64_t)minor;
    if (exp < 0) exp = 0;
    if (exp > 18) exp = 18;
    *--q = '\0';
    for (int i = 0; i < exp; i++, mag /= 10) *--q = (char)('0' + mag % 10);
    if (exp > 0) *--q = '.';
    do *--q = (char)('0' + mag % 10);
    while (mag /= 10);
    if (minor < 0) *--q = '-';
    size_t n = strlen(q);
    if (out_size == 0) return;
    if (n >= out_size) n = out_size - 1; /* truncated, as snprintf did */
    memcpy(out, q, n);
    out[n] = '\0';
}

/* Rewrites %g output ("1.5e+06", "1e-05", "12.5") as a plain decimal ("1500000", "0.00001",
 * "12.5") by moving the point: exact text manipulation, no arithmetic on the double. */
static int expand_exponent(const char *g, char *out, size_t out_size) {
    char digs[32];
    int nd = 0, point = -1;
    const char *p = g;
    for (; *p && *p != 'e' && *p != 'E'; p++) {
        if (*p == '.') point = nd;
        else if (isdigit((unsigned char)*p) && nd < (int)sizeof digs) digs[nd++] = *p;
        else return -1;
    }
    if (point < 0) point = nd;
    long e = 0;
    if (*p) {
        char *end;
        e = strtol(p + 1, &end, 10);
        if (*end || e > 400 || e < -400) return -1;
    }
    long pos = point + e;
    size_t o = 0, need = (size_t)(labs(pos) + nd + 3);
    if (need > out_size) return -1;
    if (pos <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (long k = 0; k < -pos; k++) out[o++] = '0';
        pos = 0;
    }
    for (long k = 0; k < nd || k < pos; k++) {
        if (k == pos && k > 0 && k < nd) out[o++] = '.';
        out[o++] = k < nd ? digs[k] : '0';
    }
    out[o] = '\0';
    return 0;
}

/* ---------------------------------------------------------------- field checks */

/* Why a value was refused: a stable code and a message without the value. */
typedef struct fail {
    const char *code;
    char msg[120];
} fail;

static int failed(fail *f, const char *code, const char *msg) {
    f->code = code;
    snprintf(f->msg, sizeof f->msg, "%s", msg);
    return -1;
}

/* The string of v and its length. A NUL inside would cut the C string short and let the rest
 * slip past every later check, so it is refused. */
static int get_str(const json_t *v, const char **s, size_t *len, fail *f) {
    if (!json_is_string(v)) return failed(f, "invalid_type", "must be a string");
    *s = json_string_value(v);
    *len = json_string_length(v);
    if (strlen(*s) != *len) return failed(f, "invalid", "must not contain NUL characters");
    return 0;
}

/* C0 controls, DEL, and C1 controls (U+0080..U+009F, UTF-8 C2 80..C2 9F). */
static bool has_control(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return true;
        if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] <= 0x9f) return true;
    }
    return false;
}

static void copy_out(char *dst, size_t dst_size, const char *s, size_t len) {
    if (!dst) return;
    if (len >= dst_size) len = dst_size - 1;
    memcpy(dst, s, len);
    dst[len] = '\0';
}

/* Free text: min..max bytes, no control characters. */
static int check_text(const char *s, size_t len, size_t min, size_t max, char *dst,
                      size_t dst_size, fail *f) {
    char msg[64];
    if (len == 0 && min > 0) return failed(f, "empty", "must not be empty");
    if (len > max) {
        snprintf(msg, sizeof msg, "must be at most %zu bytes", max);
        return failed(f, "too_long", msg);
    }
    if (has_control(s, len)) return failed(f, "invalid", "must not contain control characters");
    copy_out(dst, dst_size, s, len);
    return 0;
}

/* A short identifier (payment_method, card_type...): 1..32 of [a-z0-9_-], upper case accepted
 * and stored lower case, so "CARD" and "card" count as one method in the features. */
static int check_token(const char *s, size_t len, char *dst, size_t dst_size, fail *f) {
    char buf[PAY_SHORT_MAX + 1];
    if (len == 0) return failed(f, "empty", "must not be empty");
    if (len > PAY_SHORT_MAX) return failed(f, "too_long", "must be at most 32 characters");
    for (size_t i = 0; i < len; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return failed(f, "invalid", "must contain only letters, digits, '_' and '-'");
        buf[i] = c;
    }
    copy_out(dst, dst_size, buf, len);
    return 0;
}

/* n ASCII letters, upper-cased into up (n + 1 bytes). */
static int check_letters(const char *s, size_t len, size_t n, char *up, fail *f,
                         const char *what) {
    if (len == 0) return failed(f, "empty", "must not be empty");
    for (size_t i = 0; i < len; i++)
        if (len != n || !isalpha((unsigned char)s[i]) || (unsigned char)s[i] > 0x7f)
            return failed(f, "invalid", what);
    for (size_t i = 0; i < n; i++) up[i] = (char)toupper((unsigned char)s[i]);
    up[n] = '\0';
    return 0;
}

static int check_currency(const char *s, size_t len, char *dst, fail *f) {
    char up[4];
    if (check_letters(s, len, 3, up, f, "must be a three-letter ISO 4217 code")) return -1;
    if (pay_currency_exponent(up) < 0)
        return failed(f, "unknown_currency", "is not an active ISO 4217 currency");
    memcpy(dst, up, 4);
    return 0;
}

static int check_country(const char *s, size_t len, char *dst, fail *f) {
    char up[3];
    const char *what = "must be an assigned ISO 3166-1 alpha-2 code";
    if (check_letters(s, len, 2, up, f, what)) return -1;
    if (!country_assigned(up)) return failed(f, "invalid", what);
    memcpy(dst, up, 3);
    return 0;
}

static int check_uuid(const char *s, size_t len, char *dst, fail *f) {
    if (len == 0) return failed(f, "empty", "must not be empty");
    if (!fs_uuid_valid(s)) return failed(f, "invalid", "must be a canonical UUID");
    if (strspn(s, "0-") == len) return failed(f, "invalid", "must not be the nil UUID");
    memcpy(dst, s, FS_UUID_STRLEN + 1);
    fs_uuid_lower(dst);
    return 0;
}

static int check_last_four(const char *s, size_t len, char *dst, fail *f) {
    if (len == 0) return failed(f, "empty", "must not be empty");
    if (len != 4 || strspn(s, "0123456789") != 4)
        return failed(f, "invalid", "must be exactly 4 digits");
    memcpy(dst, s, 5);
    return 0;
}

static int check_digest(const char *s, size_t len, char *dst, fail *f) {
    if (len != PAY_DIGEST_HEX || strspn(s, "0123456789abcdef") != PAY_DIGEST_HEX)
        return failed(f, "invalid", "must be 64 lower-case hex characters");
    memcpy(dst, s, PAY_DIGEST_HEX + 1);
    return 0;
}

static int check_ip(const char *s, size_t len, char *dst, size_t dst_size, fail *f) {
    unsigned char addr[16];
    if (len == 0) return failed(f, "empty", "must not be empty");
    if (len >= dst_size) return failed(f, "too_long", "must be an IPv4 or IPv6 address");
    if (inet_pton(AF_INET, s, addr) != 1 && inet_pton(AF_INET6, s, addr) != 1)
        return failed(f, "invalid", "must be an IPv4 or IPv6 address");
    copy_out(dst, dst_size, s, len);
    return 0;
}

/* Deliberately loose (the full RFC 5322 grammar accepts far more than any mailbox): one '@', a
 * local part of 1..64 bytes, a dotted domain, no whitespace or control characters. */
static int check_email(const char *s, size_t len, char *dst, size_t dst_size, fail *f) {
    if (len == 0) return failed(f, "empty", "must not be empty");
    if (len > PAY_EMAIL_MAX) return failed(f, "too_long", "must be at most 320 bytes");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return failed(f, "invalid", "must not contain spaces or control characters");
    if (has_control(s, len)) return failed(f, "invalid", "must not contain control characters");
    const char *at = strchr(s, '@');
    if (!at || strchr(at + 1, '@')) return failed(f, "invalid", "must contain exactly one '@'");
    size_t local = (size_t)(at - s), dlen = len - local - 1;
    const char *dom = at + 1;
    if (local == 0 || local > 64) return failed(f, "invalid", "local part must be 1 to 64 bytes");
    if (dlen < 3 || !strchr(dom, '.') || dom[0] == '.' || dom[dlen - 1] == '.' || strstr(dom, ".."))
        return failed(f, "invalid", "domain must be a dotted host name");
    copy_out(dst, dst_size, s, len);
    return 0;
}

/* ---- raw personal data where none belongs (ids, metadata) */

/* An address whose domain ends in a top-level domain of letters ("sdk@1.2.3" is a version). */
static bool looks_like_email(const char *s, size_t len) {
    fail ignored;
    if (!memchr(s, '@', len) || check_email(s, len, NULL, 0, &ignored) != 0) return false;
    const char *tld = strrchr(s, '.') + 1; /* check_email saw a dot in the domain */
    size_t n = strlen(tld);
    for (size_t i = 0; i < n; i++)
        if (!isalpha((unsigned char)tld[i])) return false;
    return n >= 2;
}

/* A payment card number as a string: 15..19 digits (spaces and dashes between them allowed) of a
 * major scheme's ranges (Visa 4, Mastercard 51-55 and 22-27, Amex 34/37, Discover 6011/65) with a
 * valid Luhn check digit. Shorter numbers (the rare 13-14 digit cards) pass, and numbers as JSON
 * numbers are not looked at: order ids are (Shopify's are 13 digits). */
static bool looks_like_pan(const char *s, size_t len) {
    char d[20];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            if (n == sizeof d - 1) return false;
            d[n++] = s[i];
        } else if (s[i] != ' ' && s[i] != '-') {
            return false;
        }
    }
    d[n] = '\0';
    if (n < 15) return false;
    int two = (d[0] - '0') * 10 + (d[1] - '0');
    bool scheme = d[0] == '4' || (two >= 51 && two <= 55) || (two >= 22 && two <= 27) || two == 34 ||
                  two == 37 || two == 65 || strncmp(d, "6011", 4) == 0;
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int v = d[n - 1 - i] - '0';
        if (i % 2 == 1) v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        sum += v;
    }
    return scheme && sum % 10 == 0;
}

#define PERSONAL_DATA_CODE "personal_data"

/* An opaque id (user_id, merchant_id): free text, but not an email address, which would be stored
 * and published raw (the email field is pseudonymized). */
static int check_id(const char *s, size_t len, char *dst, size_t dst_size, fail *f) {
    if (check_text(s, len, 1, PAY_ID_MAX, dst, dst_size, f)) return -1;
    if (looks_like_email(s, len))
        return failed(f, PERSONAL_DATA_CODE, "must not be an email address (raw personal data is "
                      "never stored: send it as email, which is pseudonymized)");
    return 0;
}

/* No string in metadata (at any depth) is an email address or a card number. */
static int metadata_personal(const json_t *v, fail *f) {
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_string(v) && (looks_like_email(json_string_value(v), json_string_length(v)) ||
                              looks_like_pan(json_string_value(v), json_string_length(v))))
        return failed(f, PERSONAL_DATA_CODE, "must not hold an email address or a card number "
                      "(raw personal data is never stored)");
    if (json_is_object(v)) json_object_foreach((json_t *)v, k, x) if (metadata_personal(x, f)) return -1;
    if (json_is_array(v)) json_array_foreach(v, i, x) if (metadata_personal(x, f)) return -1;
    return 0;
}

static bool text_delim(char c) {
    return isspace((unsigned char)c) || strchr(",;:()<>[]{}\"'", c);
}

bool pay_text_has_personal(const char *s, size_t len) {
    char tok[PAY_EMAIL_MAX + 1];
    for (size_t i = 0, j; i < len; i = j + 1) { /* words: an email address */
        for (j = i; j < len && !text_delim(s[j]); j++) {}
        size_t n = j - i;
        while (n > 0 && (s[i + n - 1] == '.' || s[i + n - 1] == '!' || s[i + n - 1] == '?')) n--;
        if (n == 0 || n > PAY_EMAIL_MAX || !memchr(s + i, '@', n)) continue;
        memcpy(tok, s + i, n);
        tok[n] = '\0';
        if (looks_like_email(tok, n)) return true;
    }
    /* a card number: 15-19 digits in consecutive groups (digits joined by one space or dash),
     * starting at any group: "card 4111 1111 1111 1111 12/25", "ticket 12 4111111111111111" */
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]) || (i > 0 && isdigit((unsigned char)s[i - 1]))) continue;
        size_t digits = 0, j = i;
        while (j < len && digits <= 19) {
            size_t g = j;
            while (j < len && isdigit((unsigned char)s[j])) j++;
            digits += j - g;
            if (digits >= 15 && digits <= 19 && looks_like_pan(s + i, j - i)) return true;
            if (j + 1 >= len || (s[j] != ' ' && s[j] != '-') || !isdigit((unsigned char)s[j + 1])) break;
            j++; /* the separator */
        }
    }
    return false;
}

static int check_time(const char *s, size_t len, int64_t *dst, fail *f) {
    int64_t ms;
    if (len == 0) return failed(f, "empty", "must not be empty");
    if (len > 40 || fs_time_parse_rfc3339(s, &ms) != 0)
        return failed(f, "invalid", "must be an RFC 3339 timestamp");
    if (ms < 0 || ms >= PAY_TIME_MAX_MS)
        return failed(f, "out_of_range", "must be between 1970 and 9999");
    *dst = ms;
    return 0;
}

int pay_time_check(const char *s, int64_t now_ms, int64_t *ms, const char **code, char *msg,
                   size_t msg_size) {
    fail f = {0};
    if (check_time(s, strlen(s), ms, &f) == 0 && *ms > now_ms + PAY_FUTURE_SKEW_MS)
        failed(&f, "in_future", "is more than 24 hours in the future");
    else if (f.code == NULL)
        return 0;
    *code = f.code;
    snprintf(msg, msg_size, "%s", f.msg);
    return -1;
}

/* A small object, kept as a deep copy (the caller's tree may change or go away); with personal, one
 * holding an email address or a card number is refused (metadata_personal). */
static int check_metadata(const json_t *v, json_t **dst, bool personal, fail *f) {
    if (!json_is_object(v)) return failed(f, "invalid_type", "must be an object");
    size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT);
    if (n == 0) return failed(f, "invalid", "cannot be serialized");
    if (n > PAY_METADATA_MAX) return failed(f, "too_long", "must serialize to at most 4096 bytes");
    if (json_object_size(v) == 0) return 0; /* {} carries nothing: stored as absent */
    if (personal && metadata_personal(v, f)) return -1;
    *dst = json_deep_copy(v);
    if (!*dst) return failed(f, "internal", "out of memory");
    return 0;
}

/* ---------------------------------------------------------------- field tables */

typedef enum fkind {
    F_UUID, F_ID, F_TOKEN, F_LAST4, F_TEXT256, F_IP, F_EMAIL, F_DIGEST, F_COUNTRY, F_CURRENCY,
    F_TIME, F_METADATA, F_AMOUNT, F_DEVICE_INFO,
    /* in events: as F_ID and F_METADATA without the personal-data heuristics (ingest applied
     * them; an event it made before they existed must not become a dead letter without its
     * value: its client got a 202) */
    F_EVENT_ID, F_EVENT_METADATA
} fkind;

typedef struct field_spec {
    const char *name;
    fkind kind;
    bool required;
    bool in_pii; /* destination is in pay_pii rather than pay_payment */
    size_t off;
    size_t size;
} field_spec;

#define PF(name, kind, req, m) \
    {name, kind, req, false, offsetof(pay_payment, m), sizeof(((pay_payment *)0)->m)}
#define IF(name, kind, m) {name, kind, false, true, offsetof(pay_pii, m), sizeof(((pay_pii *)0)->m)}
#define SPECIAL(name, kind, req) {name, kind, req, false, 0, 0}

/* The request body, in contract order (currency before amount: the amount needs its exponent). */
static const field_spec REQUEST_FIELDS[] = {
    PF("payment_id", F_UUID, false, payment_id),
    PF("user_id", F_ID, true, user_id),
    PF("merchant_id", F_ID, true, merchant_id),
    PF("currency", F_CURRENCY, true, currency),
    SPECIAL("amount", F_AMOUNT, true),
    PF("payment_method", F_TOKEN, true, payment_method),
    PF("transaction_type", F_TOKEN, false, transaction_type),
    PF("card_type", F_TOKEN, false, card_type),
    PF("card_last_four", F_LAST4, false, card_last_four),
    IF("card_fingerprint", F_TEXT256, card_fingerprint),
    IF("ip_address", F_IP, ip_address),
    IF("email", F_EMAIL, email),
    SPECIAL("device_info", F_DEVICE_INFO, false),
    PF("country", F_COUNTRY, false, country),
    PF("billing_country", F_COUNTRY, false, billing_country),
    PF("shipping_country", F_COUNTRY, false, shipping_country),
    PF("timestamp", F_TIME, false, event_time_ms),
    PF("metadata", F_METADATA, false, metadata),
};

/* The raw_payments event; amount, amount_minor and currency_exp are checked together after. */
static const field_spec EVENT_FIELDS[] = {
    PF("payment_id", F_UUID, true, payment_id),
    PF("user_id", F_EVENT_ID, true, user_id),
    PF("merchant_id", F_EVENT_ID, true, merchant_id),
    PF("currency", F_CURRENCY, true, currency),
    PF("payment_method", F_TOKEN, true, payment_method),
    PF("transaction_type", F_TOKEN, false, transaction_type),
    PF("card_type", F_TOKEN, false, card_type),
    PF("card_last_four", F_LAST4, false, card_last_four),
    PF("card_fingerprint_digest", F_DIGEST, false, card_fingerprint_digest),
    PF("ip_digest", F_DIGEST, false, ip_digest),
    PF("email_digest", F_DIGEST, false, email_digest),
    PF("device_id_digest", F_DIGEST, false, device_id_digest),
    PF("country", F_COUNTRY, false, country),
    PF("billing_country", F_COUNTRY, false, billing_country),
    PF("shipping_country", F_COUNTRY, false, shipping_country),
    PF("ip_country", F_COUNTRY, false, ip_country),
    SPECIAL("device_info", F_DEVICE_INFO, false),
    PF("metadata", F_EVENT_METADATA, false, metadata),
    PF("event_time", F_TIME, true, event_time_ms),
    PF("ingest_time", F_TIME, true, ingest_time_ms),
    PF("source", F_EVENT_ID, false, source),
};

#define NFIELDS(t) (sizeof(t) / sizeof((t)[0]))

/* Checks one string value (NUL-terminated, no NUL inside: get_str() or the text parser saw to
 * that) into dst (size bytes); the kinds that need context are handled by their callers. */
static int check_str(fkind kind, const char *s, size_t len, void *dst, size_t size, fail *f) {
    switch (kind) {
    case F_UUID: return check_uuid(s, len, dst, f);
    case F_ID: return check_id(s, len, dst, size, f);
    case F_EVENT_ID: return check_text(s, len, 1, PAY_ID_MAX, dst, size, f);
    case F_TEXT256: return check_text(s, len, 1, TEXT_SHORT_MAX, dst, size, f);
    case F_TOKEN: return check_token(s, len, dst, size, f);
    case F_LAST4: return check_last_four(s, len, dst, f);
    case F_IP: return check_ip(s, len, dst, size, f);
    case F_EMAIL: return check_email(s, len, dst, size, f);
    case F_DIGEST: return check_digest(s, len, dst, f);
    case F_COUNTRY: return check_country(s, len, dst, f);
    case F_CURRENCY: return check_currency(s, len, dst, f);
    case F_TIME: return check_time(s, len, dst, f);
    default: return failed(f, "internal", "unexpected field kind");
    }
}

/* Checks one plain value of a JSON tree into dst (size bytes). */
static int check_value(fkind kind, const json_t *v, void *dst, size_t size, fail *f) {
    const char *s;
    size_t len;
    if (kind == F_METADATA || kind == F_EVENT_METADATA)
        return check_metadata(v, dst, kind == F_METADATA, f);
    if (kind == F_AMOUNT || kind == F_DEVICE_INFO) return failed(f, "internal", "unexpected field kind");
    if (get_str(v, &s, &len, f)) return -1;
    return check_str(kind, s, len, dst, size, f);
}

/* check_text() on a JSON value. */
static int check_text_v(const json_t *v, size_t min, size_t max, char *dst, size_t dst_size,
                        fail *f) {
    const char *s;
    size_t len;
    if (get_str(v, &s, &len, f)) return -1;
    return check_text(s, len, min, max, dst, dst_size, f);
}

/* The four optional device_info strings besides device_id. */
static bool device_key_known(const char *key) {
    static const char *const KEYS[] = {"type", "os", "browser", "user_agent"};
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++)
        if (strcmp(key, KEYS[i]) == 0) return true;
    return false;
}

/* ---------------------------------------------------------------- request */

typedef struct req_ctx {
    const json_t *body;
    pay_payment *p;
    pay_pii *pii;
    pay_errors *errs;
    int64_t now_ms;
} req_ctx;

/* Copies at most dst_size - 1 bytes without cutting a UTF-8 sequence in two (the field path
 * may hold a client's key, and the error body must stay valid UTF-8). */
static void copy_utf8(char *dst, size_t dst_size, const char *src) {
    if (snprintf(dst, dst_size, "%s", src) >= (int)dst_size) fs_utf8_trim(dst);
}

/* Records one problem; returns -1 so that checks can end with `return err_add(...)`. */
static int err_add(pay_errors *errs, const char *field, const char *code, const char *msg) {
    if (errs->n >= PAY_ERRORS_MAX) return -1; /* the first 32 are enough to fix a body */
    pay_error *e = &errs->e[errs->n++];
    copy_utf8(e->field, sizeof e->field, field);
    copy_utf8(e->code, sizeof e->code, code);
    copy_utf8(e->message, sizeof e->message, msg);
    return -1;
}

int pay_error_add(pay_errors *errs, const char *field, const char *code, const char *msg) {
    return err_add(errs, field, code, msg);
}

static int err_fail(pay_errors *errs, const char *field, const fail *f) {
    return err_add(errs, field, f->code, f->msg);
}

/* Key of an object member, or NULL when it holds a NUL (such a key can match no field name). */
static const char *iter_key(void *it) {
    const char *k = json_object_iter_key(it);
    return strlen(k) == json_object_iter_key_len(it) ? k : NULL;
}

/* jansson keeps only the double of a JSON real: recover the decimal the client most likely wrote
 * (the shortest %g text that reads back as the same double), so that it is parsed exactly. */
static int real_to_decimal(double d, char *out, size_t out_size, fail *f) {
    char g[40];
    int prec = 1;
    if (!isfinite(d) || d <= 0) return failed(f, "not_positive", "must be > 0");
    for (; prec <= 17; prec++) {
        snprintf(g, sizeof g, "%.*g", prec, d);
        if (strtod(g, NULL) == d) break;
    }
    if (prec > 15)
        return failed(f, "invalid",
                      "number needs more than 15 significant digits: send a decimal string");
    if (expand_exponent(g, out, out_size) != 0)
        return failed(f, "invalid", "must be a decimal number");
    return 0;
}

/* The amount as decimal text in *s: a string as given, a number through its exact text. */
static int amount_text(const json_t *v, char *buf, size_t buf_size, const char **s, size_t *len,
                       fail *f) {
    *s = buf;
    if (json_is_integer(v)) {
        snprintf(buf, buf_size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        if (real_to_decimal(json_real_value(v), buf, buf_size, f)) return -1;
    } else {
        if (get_str(v, s, len, f)) return -1;
        if (*len == 0) return failed(f, "empty", "must not be empty");
        if (*len > AMOUNT_TEXT_MAX) return failed(f, "too_long", "must be at most 64 characters");
        return 0;
    }
    *len = strlen(buf);
    return 0;
}

/* The amount's decimal text, checked with the currency's exponent. */
static int req_amount_scan(req_ctx *c, const char *s, size_t len) {
    /* unknown currency: still check syntax and sign, so the client learns everything at once */
    int exp = c->p->currency[0] ? pay_currency_exponent(c->p->currency) : -1;
    switch (amount_scan(s, len, exp, &c->p->amount_minor)) {
    case AMT_OK: return 0;
    case AMT_SYNTAX:
        return err_add(c->errs, "amount", "invalid", "must be a decimal like \"12.50\"");
    case AMT_TOO_PRECISE:
        return err_add(c->errs, "amount", "too_precise", "has more decimals than the currency");
    case AMT_NOT_POSITIVE: return err_add(c->errs, "amount", "not_positive", "must be > 0");
    case AMT_RANGE:
        return err_add(c->errs, "amount", "out_of_range", "is too large (at most 10^13 minor units)");
    }
    return -1;
}

static int req_amount(req_ctx *c, const json_t *v) {
    char buf[512];
    const char *s;
    size_t len = 0;
    fail f;
    if (amount_text(v, buf, sizeof buf, &s, &len, &f)) return err_fail(c->errs, "amount", &f);
    return req_amount_scan(c, s, len);
}

/* device_info: device_id is personal data and goes to pii (digested later); the other known
 * strings stay in p->device_info. */
static int req_device_info(req_ctx *c, const json_t *v) {
    json_t *obj = (json_t *)v; /* the iterator API takes non-const; nothing is modified */
    json_t *out = NULL;
    char path[96];
    fail f;
    int rc = 0;
    if (!json_is_object(v))
        return err_add(c->errs, "device_info", "invalid_type", "must be an object");
    out = json_object();
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = iter_key(it);
        const json_t *val = json_object_iter_value(it);
        bool is_id = key && strcmp(key, "device_id") == 0;
        snprintf(path, sizeof path, "device_info.%s", key ? key : json_object_iter_key(it));
        if (!is_id && (!key || !device_key_known(key)))
            rc = err_add(c->errs, path, "unknown_field", "is not a known device_info field");
        else if (json_is_null(val))
            continue; /* null = absent, as at the top level */
        else if (is_id && check_text_v(val, 1, TEXT_SHORT_MAX, c->pii->device_id,
                                       sizeof c->pii->device_id, &f))
            rc = err_fail(c->errs, path, &f);
        else if (!is_id && check_text_v(val, 0, TEXT_SHORT_MAX, NULL, 0, &f))
            rc = err_fail(c->errs, path, &f);
        else if (!is_id && out && json_object_set_new(out, key, json_deep_copy(val)) != 0)
            rc = err_add(c->errs, path, "internal", "out of memory");
    }
    if (out && json_object_size(out) > 0) {
        c->p->device_info = out; /* ownership: now p's */
        out = NULL;
    }
    json_decref(out);
    return rc;
}

static int req_field(req_ctx *c, const field_spec *fs, const json_t *v) {
    fail f;
    if (fs->kind == F_AMOUNT) return req_amount(c, v);
    if (fs->kind == F_DEVICE_INFO) return req_device_info(c, v);
    char *base = fs->in_pii ? (char *)c->pii : (char *)c->p;
    if (check_value(fs->kind, v, base + fs->off, fs->size, &f))
        return err_fail(c->errs, fs->name, &f);
    if (fs->kind == F_TIME && c->p->event_time_ms > c->now_ms + PAY_FUTURE_SKEW_MS)
        return err_add(c->errs, fs->name, "in_future", "is more than 24 hours in the future");
    return 0;
}

static bool request_field_known(const char *key) {
    for (size_t i = 0; i < NFIELDS(REQUEST_FIELDS); i++)
        if (strcmp(key, REQUEST_FIELDS[i].name) == 0) return true;
    return false;
}

static void req_unknown_fields(req_ctx *c) {
    json_t *obj = (json_t *)c->body; /* the iterator API takes non-const; nothing is modified */
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = iter_key(it);
        if (!key || !request_field_known(key))
            err_add(c->errs, key ? key : json_object_iter_key(it), "unknown_field",
                    "is not a field of the payment contract (put extra data in metadata)");
    }
}

/* After the fields: the exponent and the payment id of a valid payment, and the verdict. */
static int req_finish(req_ctx *c, const char *default_payment_id) {
    pay_payment *p = c->p;
    if (c->errs->n > 0) goto out;
    p->currency_exp = pay_currency_exponent(p->currency);
    if (p->payment_id[0]) goto out;
    if (default_payment_id && fs_uuid_valid(default_payment_id)) {
        memcpy(p->payment_id, default_payment_id, sizeof p->payment_id);
        fs_uuid_lower(p->payment_id);
    } else if (fs_uuid_v4(p->payment_id) != 0) {
        err_add(c->errs, "payment_id", "internal", "could not generate an id");
    }
out:
    if (c->errs->n > 0) explicit_bzero(c->pii, sizeof *c->pii); /* nothing will digest it */
    return c->errs->n > 0 ? -1 : 0;
}

int pay_from_request(const json_t *body, int64_t now_ms, const char *default_payment_id,
                     pay_payment *p, pay_pii *pii, pay_errors *errs) {
    req_ctx c = {body, p, pii, errs, now_ms};
    size_t known = 0; /* members that are fields of the contract */
    memset(p, 0, sizeof *p);
    memset(pii, 0, sizeof *pii);
    memset(errs, 0, sizeof *errs);
    if (!json_is_object(body)) {
        err_add(errs, "", "invalid_type", "the body must be a JSON object");
        goto out;
    }
    p->event_time_ms = now_ms; /* "timestamp" overrides it */
    p->ingest_time_ms = now_ms;
    for (size_t i = 0; i < NFIELDS(REQUEST_FIELDS); i++) {
        const field_spec *fs = &REQUEST_FIELDS[i];
        const json_t *v = json_object_get(body, fs->name);
        known += v != NULL;
        if (v && !json_is_null(v)) req_field(&c, fs, v);
        else if (fs->required) err_add(errs, fs->name, "required", "is required");
    }
    /* A jansson object's keys are unique: when every member was a known field there is no unknown
     * one to name, and the walk (string compares against every field name) is skipped. */
    if (known != json_object_size(body)) req_unknown_fields(&c);
out:
    return req_finish(&c, default_payment_id);
}

/* ---------------------------------------------------------------- request, from its text */

/* The same validation straight from the body's text (jsonfast_members), for the bodies it can
 * read without a JSON tree: building jansson's tree and walking it cost more than the checks. It
 * decides exactly as pay_from_request() would, or declines (1) and leaves it to the tree. */

#define TEXT_NOT_HERE 1
#define TEXT_STACK_SCRATCH 4096 /* bodies up to ~2 KiB decode on the stack */

/* device_info from its text, as req_device_info() does it. */
static int text_device_info(req_ctx *c, const jsonfast_member *v, char *scratch, size_t size) {
    jsonfast_member m[8];
    char path[96];
    fail f;
    int rc = 0, n = -1;
    if (v->type == JSONFAST_OBJECT) n = jsonfast_members(v->str, v->len, m, 8, scratch, size);
    if (n < 0) return TEXT_NOT_HERE; /* not an object, or not one read here */
    for (int i = 0; i < n; i++)
        if (m[i].type != JSONFAST_STRING && m[i].type != JSONFAST_NULL) return TEXT_NOT_HERE;
    json_t *out = json_object();
    for (int i = 0; i < n; i++) {
        const char *key = m[i].key;
        bool is_id = strcmp(key, "device_id") == 0;
#define PATH (snprintf(path, sizeof path, "device_info.%s", key), path) /* only for errors */
        if (!is_id && !device_key_known(key))
            rc = err_add(c->errs, PATH, "unknown_field", "is not a known device_info field");
        else if (m[i].type == JSONFAST_NULL)
            continue; /* null = absent, as at the top level */
        else if (is_id && check_text(m[i].str, m[i].len, 1, TEXT_SHORT_MAX, c->pii->device_id,
                                     sizeof c->pii->device_id, &f))
            rc = err_fail(c->errs, PATH, &f);
        else if (!is_id && check_text(m[i].str, m[i].len, 0, TEXT_SHORT_MAX, NULL, 0, &f))
            rc = err_fail(c->errs, PATH, &f);
        else if (!is_id && out &&
                 json_object_setn_new_nocheck(out, key, m[i].key_len,
                                              json_stringn_nocheck(m[i].str, m[i].len)) != 0)
            rc = err_add(c->errs, PATH, "internal", "out of memory");
#undef PATH
    }
    if (out && json_object_size(out) > 0) {
        c->p->device_info = out; /* ownership: now p's */
        out = NULL;
    }
    json_decref(out);
    return rc;
}

/* One field from its text (a string, or device_info's object): as req_field(). */
static int text_field(req_ctx *c, const field_spec *fs, const jsonfast_member *v, char *scratch,
                      size_t size) {
    fail f;
    if (fs->kind == F_DEVICE_INFO) return text_device_info(c, v, scratch, size);
    if (v->type != JSONFAST_STRING) return TEXT_NOT_HERE; /* the tree names the wrong type */
    if (fs->kind == F_AMOUNT) { /* as amount_text() for a string */
        if (v->len == 0) return err_add(c->errs, "amount", "empty", "must not be empty");
        if (v->len > AMOUNT_TEXT_MAX)
            return err_add(c->errs, "amount", "too_long", "must be at most 64 characters");
        return req_amount_scan(c, v->str, v->len);
    }
    char *base = fs->in_pii ? (char *)c->pii : (char *)c->p;
    if (check_str(fs->kind, v->str, v->len, base + fs->off, fs->size, &f))
        return err_fail(c->errs, fs->name, &f);
    if (fs->kind == F_TIME && c->p->event_time_ms > c->now_ms + PAY_FUTURE_SKEW_MS)
        return err_add(c->errs, fs->name, "in_future", "is more than 24 hours in the future");
    return 0;
}

/* Each member to its field (slot[i] for REQUEST_FIELDS[i]). Declines unknown members (the tree
 * lists them), metadata (kept as a tree anyway), and a body payment_id next to a default id (the
 * caller compares the two on the tree). */
static int text_slots(const jsonfast_member *m, int n, const jsonfast_member **slot,
                      const char *default_payment_id) {
    size_t next = 0; /* bodies mostly follow the contract's order: look there first */
    for (int k = 0; k < n; k++) {
        size_t i = next, tries = 0;
        for (; tries < NFIELDS(REQUEST_FIELDS); tries++, i = (i + 1) % NFIELDS(REQUEST_FIELDS))
            if (m[k].key[0] == REQUEST_FIELDS[i].name[0] && strcmp(m[k].key, REQUEST_FIELDS[i].name) == 0)
                break;
        if (tries == NFIELDS(REQUEST_FIELDS)) return TEXT_NOT_HERE;
        next = (i + 1) % NFIELDS(REQUEST_FIELDS);
        fkind kind = REQUEST_FIELDS[i].kind;
        if (m[k].type != JSONFAST_NULL &&
            (kind == F_METADATA || (kind == F_UUID && default_payment_id)))
            return TEXT_NOT_HERE;
        slot[i] = &m[k];
    }
    return 0;
}

/* The fields in contract order, as pay_from_request() walks them. */
static int text_fields(req_ctx *c, const jsonfast_member **slot, char *scratch, size_t size) {
    for (size_t i = 0; i < NFIELDS(REQUEST_FIELDS); i++) {
        const field_spec *fs = &REQUEST_FIELDS[i];
        if (slot[i] && slot[i]->type != JSONFAST_NULL) {
            if (text_field(c, fs, slot[i], scratch, size) == TEXT_NOT_HERE) return TEXT_NOT_HERE;
        } else if (fs->required) {
            err_add(c->errs, fs->name, "required", "is required");
        }
    }
    return 0;
}

int pay_from_request_text(const char *text, size_t len, int64_t now_ms,
                          const char *default_payment_id, pay_payment *p, pay_pii *pii,
                          pay_errors *errs) {
    jsonfast_member m[NFIELDS(REQUEST_FIELDS)];
    const jsonfast_member *slot[NFIELDS(REQUEST_FIELDS)] = {NULL};
    char stack[TEXT_STACK_SCRATCH], *scratch = stack;
    size_t half = len + 1; /* the members, then device_info's members: each fits its text + 1 */
    req_ctx c = {NULL, p, pii, errs, now_ms};
    int rc = TEXT_NOT_HERE, n;
    memset(p, 0, sizeof *p);
    memset(pii, 0, sizeof *pii);
    errs->n = 0; /* only e[0..n) is ever read: the 8 KiB of entries need no clearing */
    if (half > SIZE_MAX / 2 || (2 * half > sizeof stack && !(scratch = malloc(2 * half))))
        return TEXT_NOT_HERE;
    n = jsonfast_members(text, len, m, NFIELDS(REQUEST_FIELDS), scratch, half);
    if (n < 0 || text_slots(m, n, slot, default_payment_id) != 0) goto out;
    p->event_time_ms = now_ms; /* "timestamp" overrides it */
    p->ingest_time_ms = now_ms;
    if (text_fields(&c, slot, scratch + half, half) == TEXT_NOT_HERE) {
        pay_payment_clear(p);
        explicit_bzero(pii, sizeof *pii);
        errs->n = 0;
        goto out;
    }
    rc = req_finish(&c, default_payment_id);
out:
    explicit_bzero(scratch, 2 * half); /* it held the raw identifiers */
    if (scratch != stack) free(scratch);
    return rc;
}

json_t *pay_errors_to_json(const pay_errors *errs) {
    char msg[48];
    json_t *o = json_object(), *fields = json_array();
    bool ok = o && fields;
    snprintf(msg, sizeof msg, "%d invalid field(s)", errs->n);
    for (int i = 0; ok && i < errs->n && i < PAY_ERRORS_MAX; i++) {
        const pay_error *e = &errs->e[i];
        json_t *f = json_object();
        ok = f && json_object_set_new(f, "field", json_string(e->field)) == 0 &&
             json_object_set_new(f, "code", json_string(e->code)) == 0 &&
             json_object_set_new(f, "message", json_string(e->message)) == 0;
        ok = json_array_append_new(fields, f) == 0 && ok; /* append steals f, also on failure */
    }
    ok = ok && json_object_set_new(o, "error", json_string("validation_failed")) == 0 &&
         json_object_set_new(o, "message", json_string(msg)) == 0 &&
         json_object_set(o, "fields", fields) == 0;
    json_decref(fields);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---------------------------------------------------------------- event */

/* The event is written straight into a buffer, in the order and with the escapes json_dumps()
 * used when this built a jansson object first (~20 us a payment, a quarter of ingest's CPU): the
 * bytes are unchanged (tests/unit/test_pay.c pins them). */

/* A fixed-size char member: required ones are always written, optional ones only when set. member
 * is the literal ,"name": */
static void put_str(jsonfast_buf *b, const char *member, const char *s, size_t cap, bool required) {
    size_t len = strnlen(s, cap);
    if (!required && len == 0) return;
    jsonfast_raw(b, member, strlen(member));
    jsonfast_str(b, s, len);
}

#define STR(m) p->m, sizeof p->m
#define M(name) ",\"" name "\":"

char *pay_event_encode(const pay_payment *p, size_t *len) {
    char amount[32], et[25], it[25];
    jsonfast_buf b = {0};
    pay_amount_format(p->amount_minor, p->currency_exp, amount, sizeof amount);
    fs_time_format_rfc3339(p->event_time_ms, et);
    fs_time_format_rfc3339(p->ingest_time_ms, it);
    jsonfast_raw(&b, "{\"schema_version\":", 18);
    jsonfast_int(&b, PAY_SCHEMA_VERSION);
    put_str(&b, M("payment_id"), STR(payment_id), true);
    put_str(&b, M("user_id"), STR(user_id), true);
    put_str(&b, M("merchant_id"), STR(merchant_id), true);
    put_str(&b, M("amount"), amount, sizeof amount, true);
    jsonfast_raw(&b, M("amount_minor"), sizeof M("amount_minor") - 1);
    jsonfast_int(&b, p->amount_minor);
    put_str(&b, M("currency"), STR(currency), true);
    jsonfast_raw(&b, M("currency_exp"), sizeof M("currency_exp") - 1);
    jsonfast_int(&b, p->currency_exp);
    put_str(&b, M("payment_method"), STR(payment_method), true);
    put_str(&b, M("transaction_type"), STR(transaction_type), false);
    put_str(&b, M("card_type"), STR(card_type), false);
    put_str(&b, M("card_last_four"), STR(card_last_four), false);
    put_str(&b, M("card_fingerprint_digest"), STR(card_fingerprint_digest), false);
    put_str(&b, M("ip_digest"), STR(ip_digest), false);
    put_str(&b, M("email_digest"), STR(email_digest), false);
    put_str(&b, M("device_id_digest"), STR(device_id_digest), false);
    put_str(&b, M("country"), STR(country), false);
    put_str(&b, M("billing_country"), STR(billing_country), false);
    put_str(&b, M("shipping_country"), STR(shipping_country), false);
    put_str(&b, M("ip_country"), STR(ip_country), false);
    if (p->device_info) jsonfast_raw(&b, M("device_info"), sizeof M("device_info") - 1);
    if (p->device_info) jsonfast_value(&b, p->device_info);
    if (p->metadata) jsonfast_raw(&b, M("metadata"), sizeof M("metadata") - 1);
    if (p->metadata) jsonfast_value(&b, p->metadata);
    put_str(&b, M("event_time"), et, sizeof et, true);
    put_str(&b, M("ingest_time"), it, sizeof it, true);
    put_str(&b, M("source"), STR(source), false);
    jsonfast_raw(&b, "}", 1);
    return jsonfast_finish(&b, len); /* NULL when a member is not UTF-8, as json_dumps() did */
}

#undef M

static int decode_fail(char *errstr, size_t errstr_size, const char *field, const char *msg) {
    snprintf(errstr, errstr_size, "%s: %s", field, msg);
    return -1;
}

#define RAW_PII_MSG "raw personal data is not allowed in events"

/* decode_fail() for raw personal data: PAY_EVENT_RAW_PII, which pay_event_decode passes on. */
static int raw_pii_fail(char *errstr, size_t errstr_size, const char *field) {
    decode_fail(errstr, errstr_size, field, RAW_PII_MSG);
    return PAY_EVENT_RAW_PII;
}

/* device_info in an event: known strings re-checked, unknown keys kept (additive evolution); a raw
 * device_id was refused before (event_raw_pii). */
static int event_device_info(const json_t *v, pay_payment *p, char *errstr, size_t errstr_size) {
    json_t *obj = (json_t *)v; /* the iterator API takes non-const; nothing is modified */
    fail f;
    if (!json_is_object(v))
        return decode_fail(errstr, errstr_size, "device_info", "must be an object");
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = iter_key(it);
        if (key && device_key_known(key) &&
            check_text_v(json_object_iter_value(it), 0, TEXT_SHORT_MAX, NULL, 0, &f)) {
            snprintf(errstr, errstr_size, "device_info.%s: %s", key, f.msg);
            return -1;
        }
    }
    if (json_object_size(v) > 0) p->device_info = json_deep_copy(v);
    if (json_object_size(v) > 0 && !p->device_info)
        return decode_fail(errstr, errstr_size, "device_info", "out of memory");
    return 0;
}

/* amount_minor and/or amount (at least one; equal when both), and currency_exp when present. */
static int event_amount(const json_t *root, pay_payment *p, char *errstr, size_t errstr_size) {
    const json_t *minor = json_object_get(root, "amount_minor");
    const json_t *amount = json_object_get(root, "amount");
    const json_t *exp = json_object_get(root, "currency_exp");
    int64_t v = 0;
    p->currency_exp = pay_currency_exponent(p->currency);
    if (exp && !json_is_null(exp) &&
        (!json_is_integer(exp) || json_integer_value(exp) != p->currency_exp))
        return decode_fail(errstr, errstr_size, "currency_exp", "does not match the currency");
    if (minor && !json_is_null(minor)) {
        if (!json_is_integer(minor))
            return decode_fail(errstr, errstr_size, "amount_minor", "must be an integer");
        if (json_integer_value(minor) <= 0)
            return decode_fail(errstr, errstr_size, "amount_minor", "must be > 0");
        if (json_integer_value(minor) > PAY_AMOUNT_MAX_MINOR)
            return decode_fail(errstr, errstr_size, "amount_minor", "must be at most 10^13");
        p->amount_minor = json_integer_value(minor);
    }
    if (amount && !json_is_null(amount)) {
        const char *s = json_string_value(amount);
        if (!s || strlen(s) != json_string_length(amount) ||
            pay_amount_parse(s, p->currency_exp, &v) != 0)
            return decode_fail(errstr, errstr_size, "amount",
                               "must be a positive decimal with the currency's decimals");
        if (p->amount_minor && p->amount_minor != v)
            return decode_fail(errstr, errstr_size, "amount", "does not match amount_minor");
        p->amount_minor = v;
    }
    if (p->amount_minor <= 0) return decode_fail(errstr, errstr_size, "amount_minor", "required");
    return 0;
}

static int event_schema_version(const json_t *root, char *errstr, size_t errstr_size) {
    const json_t *v = json_object_get(root, "schema_version");
    char msg[48];
    if (!v || json_is_null(v))
        return decode_fail(errstr, errstr_size, "schema_version", "required");
    if (!json_is_integer(v))
        return decode_fail(errstr, errstr_size, "schema_version", "must be an integer");
    if (json_integer_value(v) != PAY_SCHEMA_VERSION) {
        snprintf(msg, sizeof msg, "unsupported %" JSON_INTEGER_FORMAT, json_integer_value(v));
        return decode_fail(errstr, errstr_size, "schema_version", msg);
    }
    return 0;
}

/* The request's personal fields (and a card number) never travel raw: an event carrying one was
 * not made by ingest, and must not be stored or passed on. */
static const char *const EVENT_RAW_PII[] = {"email", "ip_address", "card_fingerprint", "card_number"};

/* Checked before anything else: whatever else is wrong with the event, its dead letter must be
 * told apart (PAY_EVENT_RAW_PII), since it is produced without the value. */
static int event_raw_pii(const json_t *root, char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < NFIELDS(EVENT_RAW_PII); i++)
        if (json_object_get(root, EVENT_RAW_PII[i]))
            return raw_pii_fail(errstr, errstr_size, EVENT_RAW_PII[i]);
    const json_t *dev = json_object_get(root, "device_info");
    if (json_is_object(dev) && json_object_get(dev, "device_id"))
        return raw_pii_fail(errstr, errstr_size, "device_info.device_id");
    return 0;
}

static int event_fields(const json_t *root, pay_payment *p, char *errstr, size_t errstr_size) {
    fail f;
    for (size_t i = 0; i < NFIELDS(EVENT_FIELDS); i++) {
        const field_spec *fs = &EVENT_FIELDS[i];
        const json_t *v = json_object_get(root, fs->name);
        if (!v || json_is_null(v)) {
            if (fs->required) return decode_fail(errstr, errstr_size, fs->name, "required");
        } else if (fs->kind == F_DEVICE_INFO) {
            int rc = event_device_info(v, p, errstr, errstr_size);
            if (rc) return rc;
        } else if (check_value(fs->kind, v, (char *)p + fs->off, fs->size, &f)) {
            return decode_fail(errstr, errstr_size, fs->name, f.msg);
        }
    }
    return 0;
}

int pay_event_decode(const void *buf, size_t len, pay_payment *p, char *errstr,
                     size_t errstr_size) {
    json_error_t jerr;
    json_t *root = NULL;
    int rc = -1;
    memset(p, 0, sizeof *p);
    if (!buf || len == 0) {
        decode_fail(errstr, errstr_size, "event", "not JSON: empty message");
        goto out;
    }
    root = jsonfast_loadb(buf, len, &jerr); /* = json_loadb(.., JSON_REJECT_DUPLICATES, ..), faster */
    if (!root) {
        snprintf(errstr, errstr_size, "event: not JSON: %s at byte %d", jsonfast_error_text(&jerr),
                 jerr.position); /* events are untrusted: no quoted input */
        goto out;
    }
    if (!json_is_object(root)) {
        decode_fail(errstr, errstr_size, "event", "must be a JSON object");
        goto out;
    }
    rc = event_raw_pii(root, errstr, errstr_size);
    if (rc) goto out;
    rc = -1;
    if (event_schema_version(root, errstr, errstr_size)) goto out;
    rc = event_fields(root, p, errstr, errstr_size);
    if (rc == 0 && event_amount(root, p, errstr, errstr_size)) rc = -1;
out:
    json_decref(root);
    return rc;
}

/* The event's own check of the field (EVENT_FIELDS: what the scorer reads and stores), then the
 * stored form against the value: a check that would accept it in another form (a lower-cased
 * token, an upper-cased currency) still stores something else. */
int pay_stored_value_check(const char *field, const char *s, size_t len, char *msg,
                           size_t msg_size) {
    char stored[PAY_ID_MAX + 1];
    fail f;
    const field_spec *fs = NULL;
    for (size_t i = 0; i < NFIELDS(EVENT_FIELDS) && !fs; i++)
        if (strcmp(EVENT_FIELDS[i].name, field) == 0) fs = &EVENT_FIELDS[i];
    /* only the plain string fields: a time, metadata or device_info is not compared as stored */
    if (!fs || !(fs->kind == F_TOKEN || fs->kind == F_CURRENCY || fs->kind == F_COUNTRY ||
                 fs->kind == F_EVENT_ID) || fs->size > sizeof stored) {
        snprintf(msg, msg_size, "is not a field compared as stored");
        return -1;
    }
    if (strlen(s) != len) {
        snprintf(msg, msg_size, "must not contain NUL characters");
        return -1;
    }
    if (check_str(fs->kind, s, len, stored, fs->size, &f) != 0) {
        snprintf(msg, msg_size, "%s", f.msg);
        return -1;
    }
    if (strcmp(stored, s) != 0) {
        snprintf(msg, msg_size, "is stored as \"%s\"", stored);
        return -1;
    }
    return 0;
}

const char *pay_conflict(const pay_payment *p, const char *user_id, const char *merchant_id,
                         int64_t amount_minor, const char *currency_code) {
    if (strcmp(p->user_id, user_id) != 0) return "user_id";
    if (strcmp(p->merchant_id, merchant_id) != 0) return "merchant_id";
    if (p->amount_minor != amount_minor) return "amount";
    if (strcmp(p->currency, currency_code) != 0) return "currency";
    return NULL;
}

void pay_payment_clear(pay_payment *p) {
    if (!p) return;
    json_decref(p->device_info);
    json_decref(p->metadata);
    memset(p, 0, sizeof *p);
}

void pay_partition_key(const pay_payment *p, char out[4]) {
    bool ok = isupper((unsigned char)p->country[0]) && isupper((unsigned char)p->country[1]) &&
              p->country[2] == '\0';
    snprintf(out, 4, "%s", ok ? p->country : "UNK");
}
