/* shopify: Shopify's orders/create webhook as a payment source.
 *
 * Shopify signs each webhook: X-Shopify-Hmac-Sha256 = base64(HMAC-SHA256(secret, raw body)), the
 * shop named by X-Shopify-Shop-Domain. shopify_verify() checks it in constant time on the raw
 * bytes, BEFORE anything parses them. Secrets are per shop domain, from a secrets file (reloaded
 * on SIGHUP) and/or the shopify-secrets option:
 *
 *   # shop domain              secret (the app's webhook signing secret for that shop)
 *   example-store.myshopify.com   shpss_0a1b2c...
 *
 * shopify_order_to_request() maps a verified order to a payment request body (contract v1), which
 * then goes through the same validation as POST /api/v1/payments. Shopify retries a webhook until
 * it gets a 2xx and may deliver one twice, so the payment_id is derived from the shop and the order
 * id (UUIDv5): a redelivered order is the same payment. */
#ifndef FS_SHOPIFY_H
#define FS_SHOPIFY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Namespace of the payment ids of Shopify orders: UUIDv5(SHOPIFY_NS, "<shop domain>:<order id>").
 * NEVER change it (a redelivered order must map to the payment it already is). */
#define SHOPIFY_NS "6b1f3c2e-9d4a-5e8b-a7c1-3f2d9e8b4c60"
#define SHOPIFY_DOMAIN_MAX 255

typedef struct shopify shopify;

/* Secrets from text in the file format above (tests, the option). NULL with errstr naming the
 * line. inline_list: "domain=secret,domain=secret" (the option), may be NULL or "". */
shopify *shopify_parse(const char *file_text, const char *inline_list, char *errstr,
                       size_t errstr_size);
/* From the file at path (NULL or "": none) plus inline_list. */
shopify *shopify_load(const char *path, const char *inline_list, char *errstr, size_t errstr_size);
void shopify_destroy(shopify *s); /* accepts NULL; wipes the secrets */
size_t shopify_count(const shopify *s);

/* 0 when hmac_b64 is the signature of body with shop_domain's secret; -1 otherwise (unknown shop,
 * missing or malformed header, wrong signature). Constant time in the signature. */
int shopify_verify(const shopify *s, const char *shop_domain, const char *hmac_b64,
                   const void *body, size_t len);

/* base64(HMAC-SHA256(secret, body)) into out (45 bytes). For tests and tools. */
void shopify_sign(const char *secret, const void *body, size_t len, char out[45]);

/* True when the mapped request's amount is zero: a free order (a gift card redeemed in full, a
 * 100 % discount) is not a payment. Ingest answers it 200 "ignored" rather than 422, which Shopify
 * would retry for hours and count against the webhook subscription. */
bool shopify_request_is_free(const json_t *req);

/* A v1 payment request body (new reference) for a Shopify order. NULL with errstr when the order
 * lacks what every payment needs (its id). Other problems (an odd currency...) are left to the
 * payment validation, which names the field. */
json_t *shopify_order_to_request(const json_t *order, const char *shop_domain, char *errstr,
                                 size_t errstr_size);

#endif
