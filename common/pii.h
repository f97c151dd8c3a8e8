/* pii: pseudonymization of personal identifiers at the edge.
 *
 * Each identifier becomes a keyed digest: Argon2id(password = normalized value, salt = a fixed
 * per-kind salt, secret = the server-side key). Deterministic, so repeats of one identifier match
 * across payments (the risk vault and velocity features rely on it), and not reversible or
 * brute-forceable without the secret. Argon2 is slow on purpose, so digests are cached in a bounded
 * LRU keyed by HMAC-SHA256(secret, kind || value): the cost is paid once per distinct identifier
 * and the cache never holds raw values.
 *
 * Normalization before digesting: email trimmed and lower-cased; IP parsed and re-printed in
 * canonical form (so "::ffff:1.2.3.4" and "1.2.3.4" differ, but "2001:DB8::1" and "2001:db8::1"
 * match); card fingerprint and device id used as given. */
#ifndef FS_PII_H
#define FS_PII_H

#include <stddef.h>
#include <stdint.h>

#include "pay.h"

typedef enum pii_kind { PII_EMAIL = 0, PII_IP, PII_CARD, PII_DEVICE, PII_KIND_COUNT } pii_kind;

typedef struct pii pii;

/* Key id: a public fingerprint of the pseudonymization key, to tell which key made a digest
 * without revealing it: the first 8 bytes, in hex, of Argon2id(password = PII_KEY_ID_LABEL, salt =
 * a fixed one of its own, secret = the secret), with the Argon2 parameters of the digests. So it
 * depends on exactly what every digest depends on (the secret and t_cost/m_cost: a pod with another
 * secret or other parameters, whose digests would never match, shows another id), and testing a
 * guess of the secret against it costs an Argon2 run, as against any digest (a plain HMAC would be
 * a fast oracle for a weak secret). Safe to log, to put in message headers and metric labels. */
#define PII_KEY_ID_HEX 16
#define PII_KEY_ID_LABEL "fraudshield pii key id v1"

typedef struct pii_params {
    uint32_t t_cost;      /* Argon2 passes */
    uint32_t m_cost_kib;  /* Argon2 memory, KiB */
    size_t cache_entries; /* LRU capacity (0 disables the cache) */
} pii_params;

/* secret: at least 16 bytes (copied). Returns NULL with errstr on bad parameters. */
pii *pii_new(const void *secret, size_t secret_len, const pii_params *params, char *errstr,
             size_t errstr_size);
void pii_destroy(pii *pi); /* accepts NULL; wipes the secret */

/* The key id of pi (PII_KEY_ID_HEX lower-case hex chars), computed once by pii_new(); valid as
 * long as pi. */
const char *pii_key_id(const pii *pi);

/* The key id of a secret and parameters without making a pii (one Argon2 run; e.g. to see
 * whether a reloaded secret differs). Returns 0, or -1 with errstr (secret or parameters out of
 * pii_new()'s bounds, Argon2 failure). */
int pii_key_id_of(const void *secret, size_t secret_len, const pii_params *params,
                  char out[PII_KEY_ID_HEX + 1], char *errstr, size_t errstr_size);

/* Digest of one raw identifier into out (64 hex chars + NUL). Returns 0, or -1 with errstr. */
int pii_digest(pii *pi, pii_kind kind, const char *raw, char out[PAY_DIGEST_HEX + 1], char *errstr,
               size_t errstr_size);

/* Digests every non-empty field of raw into p's *_digest fields, then wipes raw. Returns 0 or -1. */
int pii_apply(pii *pi, pay_pii *raw, pay_payment *p, char *errstr, size_t errstr_size);

void pii_stats(const pii *pi, uint64_t *hits, uint64_t *misses);

/* The same in three steps, for an event loop that must not run Argon2 itself (ingest): the cache
 * is read and filled on the thread that owns pi, the Argon2 work of a miss runs on another thread.
 *   pii_lookup()  1 = cached (out filled), 0 = not cached, -1 = cannot be normalized. Counts a hit
 *                 or a miss in pii_stats. Owning thread only.
 *   pii_compute() the digest, without the cache. Thread-safe: reads only the secret and the
 *                 parameters, which never change after pii_new(). 0, or -1 with errstr.
 *   pii_store()   caches a digest made by pii_compute(). Owning thread only. */
int pii_lookup(pii *pi, pii_kind kind, const char *raw, char out[PAY_DIGEST_HEX + 1]);
int pii_compute(const pii *pi, pii_kind kind, const char *raw, char out[PAY_DIGEST_HEX + 1],
                char *errstr, size_t errstr_size);
void pii_store(pii *pi, pii_kind kind, const char *raw, const char digest[PAY_DIGEST_HEX + 1]);

#endif
