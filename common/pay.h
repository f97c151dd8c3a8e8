/* pay: the payment model, its validation and its JSON codecs.
 *
 * Two wire forms:
 *  - the HTTP request body (contract v1, see schemas/json/payment-request.v1.json), parsed by
 *    pay_from_request() into a pay_payment plus the raw personal identifiers (pay_pii), which never
 *    leave ingest: pii_apply() turns them into keyed digests;
 *  - the raw_payments event (schemas/json/raw-payment.v1.json), with digests only, written by
 *    pay_event_encode() and read back by pay_event_decode() in the scorer, which re-validates it
 *    (anything on the topic is untrusted input too).
 *
 * Amounts are integer minor units of the currency (never floats). */
#ifndef FS_PAY_H
#define FS_PAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds of every time a client gives (payment timestamp, outcome known_at): 1970 up to
 * 10000-01-01 excluded (RFC 3339 has four-digit years), and at most 24 hours ahead of the clock. */
#define PAY_TIME_MAX_MS 253402300800000LL
#define PAY_FUTURE_SKEW_MS (24 * 3600 * 1000LL)
/* The largest amount in minor units (10^13: 100 billion EUR, 10 trillion JPY). Window sums add up
 * amounts in 64 bits: this bound keeps ~900,000 maximal payments of one entity in one bucket from
 * overflowing, where INT64_MAX per payment overflowed with the second. */
#define PAY_AMOUNT_MAX_MINOR 10000000000000LL
#define PAY_SCHEMA_VERSION 1
#define PAY_ID_MAX 128        /* user_id, merchant_id: bytes */
#define PAY_EMAIL_MAX 320     /* email: bytes */
#define PAY_SHORT_MAX 32      /* payment_method, transaction_type, card_type */
#define PAY_DIGEST_HEX 64     /* keyed digests: 32 bytes as lower-case hex */
#define PAY_METADATA_MAX 4096 /* serialized bytes */
#define PAY_ERRORS_MAX 32

typedef struct pay_payment {
    char payment_id[37];                  /* canonical lower-case UUID */
    char user_id[PAY_ID_MAX + 1];
    char merchant_id[PAY_ID_MAX + 1];
    int64_t amount_minor;                 /* > 0 */
    char currency[4];                     /* ISO 4217, upper case */
    int currency_exp;                     /* minor-unit exponent of currency (EUR 2, JPY 0, KWD 3) */
    char payment_method[PAY_SHORT_MAX + 1];
    char transaction_type[PAY_SHORT_MAX + 1]; /* "" when absent */
    char card_type[PAY_SHORT_MAX + 1];
    char card_last_four[5];
    char card_fingerprint_digest[PAY_DIGEST_HEX + 1]; /* "" when absent */
    char ip_digest[PAY_DIGEST_HEX + 1];
    char email_digest[PAY_DIGEST_HEX + 1];
    char device_id_digest[PAY_DIGEST_HEX + 1];
    char country[3];                      /* ISO 3166-1 alpha-2 upper case, "" when absent */
    char billing_country[3];
    char shipping_country[3];
    char ip_country[3];                   /* country of ip_address, resolved at ingest before the
                                             address is digested; "" when unknown */
    int64_t event_time_ms;                /* the payment's own time (event time) */
    int64_t ingest_time_ms;               /* when ingest received it */
    char source[PAY_ID_MAX + 1];          /* who posted it, as ingest knew the caller: the API key
                                             id, "shopify:<shop>", "anonymous" (auth off); "" when
                                             unknown (events of other producers, or older) */
    json_t *device_info;                  /* owned: device_info without device_id, or NULL */
    json_t *metadata;                     /* owned: small object, or NULL */
} pay_payment;

/* Raw personal identifiers from a request; "" when absent. Only ever in ingest's memory. */
typedef struct pay_pii {
    char email[PAY_EMAIL_MAX + 1];
    char ip_address[46];
    char card_fingerprint[257];
    char device_id[257];
} pay_pii;

typedef struct pay_error {
    char field[64];    /* JSON path of the field, e.g. "amount" or "device_info.device_id" */
    char code[32];     /* stable machine code: "required", "invalid", "too_long", "unknown_field"... */
    char message[160]; /* human-readable reason (never echoes personal data) */
} pay_error;

typedef struct pay_errors {
    int n;
    pay_error e[PAY_ERRORS_MAX];
} pay_errors;

/* Validates a v1 request body (a JSON object) into p and pii. now_ms is the receive time (used as
 * ingest_time and, when "timestamp" is absent, as event time). When the body has no payment_id and
 * default_payment_id is non-NULL it is used (idempotency keys), else a random v4 id is generated.
 * Returns 0 when valid; otherwise -1 with every problem in errs (one entry per bad field).
 * p must be released with pay_payment_clear() in both cases. */
int pay_from_request(const json_t *body, int64_t now_ms, const char *default_payment_id,
                     pay_payment *p, pay_pii *pii, pay_errors *errs);

/* pay_from_request() straight from the body's text, without a JSON tree (ingest's hot path): the
 * same verdict, errors and payment, for the bodies it reads itself. Returns 0 or -1 as
 * pay_from_request() (p released with pay_payment_clear() in both cases), or 1 when it leaves the
 * body to the tree path: anything it does not read itself (not a JSON object, malformed, unknown
 * members, metadata, a non-string where a string is due...), and a payment_id member when
 * default_payment_id is given (the caller compares the two on the tree). On 1, p, pii and errs hold
 * nothing: parse the text (jsonfast_loadb) and call pay_from_request(). */
int pay_from_request_text(const char *text, size_t len, int64_t now_ms,
                          const char *default_payment_id, pay_payment *p, pay_pii *pii,
                          pay_errors *errs);

/* Adds a problem to errs (the first PAY_ERRORS_MAX are kept), each string cut to its buffer without
 * cutting a UTF-8 character (field may hold a client's key). Returns -1. */
int pay_error_add(pay_errors *errs, const char *field, const char *code, const char *msg);

/* {"error":"validation_failed","message":"...","fields":[{"field","code","message"},...]} (new ref) */
json_t *pay_errors_to_json(const pay_errors *errs);

/* Serializes the raw_payments event (schema_version 1). Returns a malloc'd NUL-terminated buffer
 * the caller frees, with its length in *len; NULL on allocation failure. */
char *pay_event_encode(const pay_payment *p, size_t *len);

/* Decodes and re-validates a raw_payments event. Returns 0, or PAY_EVENT_RAW_PII when it carries raw
 * personal data (an email, IP address, card fingerprint or number, device id where a digest
 * belongs: not made by ingest; its bytes should not be copied anywhere), or -1, with the reason in
 * errstr (which names the field). p must be released with pay_payment_clear() in every case. */
#define PAY_EVENT_RAW_PII (-2)
int pay_event_decode(const void *buf, size_t len, pay_payment *p, char *errstr, size_t errstr_size);

/* Frees what p owns and zeroes it. */
void pay_payment_clear(pay_payment *p);

/* Whether p is another payment than the one stored under its payment_id (user_id, merchant_id,
 * amount_minor, currency): NULL when the same (a redelivery, whatever its times; the outputs carry
 * the stored times and country), else the first field that differs ("user_id", "merchant_id",
 * "amount", "currency"). */
/* Whether free text (len bytes) holds an email address or a card number (15-19 digits, spaces or
 * dashes between them, of a major scheme with a valid Luhn digit): the checks of metadata, applied
 * word by word. For labels' reasons and similar notes, which must not carry raw personal data. */
bool pay_text_has_personal(const char *s, size_t len);

const char *pay_conflict(const pay_payment *p, const char *user_id, const char *merchant_id,
                         int64_t amount_minor, const char *currency_code);

/* The raw_payments partition key: country upper case, or "UNK" when absent. out: 4 bytes. */
void pay_partition_key(const pay_payment *p, char out[4]);

/* Whether s (len bytes) is a value the scorer can see in the event field named field
 * ("payment_method", "card_type", "transaction_type", "currency", "merchant_id", "user_id",
 * "country", "billing_country", "shipping_country", "ip_country"), exactly as it is stored: the
 * field's own check (the one pay_event_decode() applies; ingest's is the same or stricter) accepts
 * it and stores it unchanged, so tokens are lower case ("card", not "CARD"), currencies active ISO
 * 4217 codes in upper case, countries assigned ISO 3166-1 codes in upper case. For the rules'
 * value lists: any other value can never match. Returns 0, or -1 with why in msg ("must be an
 * assigned ISO 3166-1 alpha-2 code", "is stored as \"card\"": only a token, currency or country
 * code is ever quoted, in its stored form). */
int pay_stored_value_check(const char *field, const char *s, size_t len, char *msg,
                           size_t msg_size);

/* Minor-unit exponent of an ISO 4217 code, or -1 when the code is unknown. */
int pay_currency_exponent(const char *code);

/* Parses a decimal amount ("12", "12.5", "12.50") into minor units for exponent exp. Rejects signs,
 * exponents, more fraction digits than exp, zero, and overflow. Returns 0 or -1. */
int pay_amount_parse(const char *s, int exp, int64_t *minor);

/* Formats minor units as a decimal string with exp fraction digits ("12.50"). */
void pay_amount_format(int64_t minor, int exp, char *out, size_t out_size);

/* A time a client gives (outcome known_at; the payment timestamp is checked the same way inside
 * pay_from_request): RFC 3339, within PAY_TIME_MAX_MS, at most PAY_FUTURE_SKEW_MS after now_ms.
 * Returns 0 with *ms, or -1 with the error's code (a static string) and message in msg. */
int pay_time_check(const char *s, int64_t now_ms, int64_t *ms, const char **code, char *msg,
                   size_t msg_size);

#endif
