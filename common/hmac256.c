/* hmac256: HMAC-SHA256 under one fixed key (see hmac256.h). */
/* The SHA256_* functions are deprecated in OpenSSL 3 but kept in every 3.x release; they are the
 * only way to copy a keyed SHA-256 state without the EVP layer's per-call provider overhead. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "hmac256.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#define HMAC256_BLOCK 64

struct hmac256 {
    SHA256_CTX inner, outer; /* after (key ^ ipad) and (key ^ opad) */
};

hmac256 *hmac256_new(const void *key, size_t key_len) {
    unsigned char k[HMAC256_BLOCK] = {0}, pad[HMAC256_BLOCK];
    hmac256 *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    if (key_len > HMAC256_BLOCK) SHA256(key, key_len, k); /* RFC 2104: long keys are hashed */
    else memcpy(k, key, key_len);
    for (int i = 0; i < HMAC256_BLOCK; i++) pad[i] = k[i] ^ 0x36;
    SHA256_Init(&h->inner);
    SHA256_Update(&h->inner, pad, sizeof pad);
    for (int i = 0; i < HMAC256_BLOCK; i++) pad[i] = k[i] ^ 0x5c;
    SHA256_Init(&h->outer);
    SHA256_Update(&h->outer, pad, sizeof pad);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
    return h;
}

void hmac256_destroy(hmac256 *h) {
    if (!h) return;
    OPENSSL_cleanse(h, sizeof *h);
    free(h);
}

void hmac256_digest(const hmac256 *h, const void *msg, size_t len, unsigned char out[32]) {
    SHA256_CTX c = h->inner;
    unsigned char inner[32];
    SHA256_Update(&c, msg, len);
    SHA256_Final(inner, &c);
    c = h->outer;
    SHA256_Update(&c, inner, sizeof inner);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
}
