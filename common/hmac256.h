/* hmac256: HMAC-SHA256 under one fixed key, for the hot-path cache keys (pii, API keys).
 *
 * OpenSSL 3's EVP_MAC re-initialises its provider context on every message (~580 ns for a short
 * one); here the SHA-256 states after the key's inner and outer pad blocks are computed once and
 * copied per message (~270 ns), with the same result as HMAC(). Thread-safe: the keyed states are
 * only read after hmac256_new(). */
#ifndef FS_HMAC256_H
#define FS_HMAC256_H

#include <stddef.h>

typedef struct hmac256 hmac256;

/* key: any length (longer than 64 bytes is hashed first, as HMAC does). NULL on allocation
 * failure. */
hmac256 *hmac256_new(const void *key, size_t key_len);

/* Wipes the keyed states. Accepts NULL. */
void hmac256_destroy(hmac256 *h);

void hmac256_digest(const hmac256 *h, const void *msg, size_t len, unsigned char out[32]);

#endif
