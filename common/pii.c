/* pii: keyed Argon2id digests of personal identifiers, with a bounded LRU cache (see pii.h).
 * Not thread-safe (the cache), except pii_compute(): one instance per event-loop thread. */
#include "pii.h"

#include <argon2.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "hmac256.h"

#define PII_SECRET_MIN 16
#define PII_RAW_MAX 512

/* Fixed per-kind salts: deterministic digests (repeats match), different kinds never collide. */
static const char *const PII_SALT[PII_KIND_COUNT] = {
    "fraudshield/email/v1", "fraudshield/ip/v1", "fraudshield/card/v1", "fraudshield/device/v1"};
/* The key id's salt: apart from every kind's, so a key id is never the digest of an identifier. */
static const char PII_KEY_ID_SALT[] = "fraudshield/key-id/v1";

typedef struct pii_entry {
    unsigned char key[32];             /* HMAC-SHA256(secret, kind || value): never the raw value */
    char digest[PAY_DIGEST_HEX + 1];
    int32_t prev, next;                /* LRU list, most recent at head */
    int32_t chain;                     /* next entry in the same hash bucket */
    bool used;
} pii_entry;

struct pii {
    unsigned char secret[256];
    size_t secret_len;
    pii_params params;
    pii_entry *entries;
    int32_t *buckets;
    size_t nbuckets, nused;
    int32_t head, tail;
    uint64_t hits, misses;
    /* HMAC-SHA256 keyed once with the secret (hmac256.h: ~0.27 us a key, where the one-shot HMAC()
     * costs ~3.5 us and a re-initialised EVP_MAC ~0.6 us); the cache keys are on the hot path of
     * every payment, four times. */
    hmac256 *mac;
    char key_id[PII_KEY_ID_HEX + 1]; /* pii_key_id() */
};

static int mac_init(pii *pi) {
    pi->mac = hmac256_new(pi->secret, pi->secret_len);
    return pi->mac ? 0 : -1;
}

/* The bounds on the secret and the Argon2 parameters (pii_new(), pii_key_id_of()). */
static int params_check(size_t secret_len, const pii_params *params, char *errstr,
                        size_t errstr_size) {
    if (secret_len < PII_SECRET_MIN || secret_len > sizeof(((pii *)0)->secret)) {
        snprintf(errstr, errstr_size, "pii secret must be %d..256 bytes", PII_SECRET_MIN);
        return -1;
    }
    if (params->t_cost < 1 || params->m_cost_kib < 8) {
        snprintf(errstr, errstr_size, "argon2 parameters: t_cost >= 1, m_cost >= 8 KiB");
        return -1;
    }
    return 0;
}

pii *pii_new(const void *secret, size_t secret_len, const pii_params *params, char *errstr,
             size_t errstr_size) {
    char key_id[PII_KEY_ID_HEX + 1];
    /* checks the bounds too; one Argon2 run, at start-up or reload only */
    if (pii_key_id_of(secret, secret_len, params, key_id, errstr, errstr_size) != 0) return NULL;
    pii *pi = calloc(1, sizeof *pi);
    if (!pi) goto failed;
    memcpy(pi->secret, secret, secret_len);
    pi->secret_len = secret_len;
    pi->params = *params;
    pi->head = pi->tail = -1;
    memcpy(pi->key_id, key_id, sizeof key_id);
    if (mac_init(pi) != 0) goto failed;
    if (params->cache_entries > 0) {
        for (pi->nbuckets = 16; pi->nbuckets < params->cache_entries * 2; pi->nbuckets *= 2) {}
        pi->entries = calloc(params->cache_entries, sizeof *pi->entries);
        pi->buckets = malloc(pi->nbuckets * sizeof *pi->buckets);
        if (!pi->entries || !pi->buckets) goto failed;
        memset(pi->buckets, 0xff, pi->nbuckets * sizeof *pi->buckets); /* all -1 */
    }
    return pi;
failed:
    snprintf(errstr, errstr_size, "out of memory");
    pii_destroy(pi);
    return NULL;
}

void pii_destroy(pii *pi) {
    if (!pi) return;
    OPENSSL_cleanse(pi->secret, sizeof pi->secret);
    hmac256_destroy(pi->mac);
    free(pi->entries);
    free(pi->buckets);
    free(pi);
}

const char *pii_key_id(const pii *pi) { return pi->key_id; }

void pii_stats(const pii *pi, uint64_t *hits, uint64_t *misses) {
    *hits = pi->hits;
    *misses = pi->misses;
}

/* Canonical form of an identifier, so that spellings of one identifier digest alike. */
static int normalize(pii_kind kind, const char *raw, char *out, size_t out_size) {
    size_t n = strlen(raw);
    if (n == 0 || n >= out_size) return -1;
    if (kind == PII_IP) {
        unsigned char bin[16];
        if (inet_pton(AF_INET, raw, bin) == 1) return inet_ntop(AF_INET, bin, out, (socklen_t)out_size) ? 0 : -1;
        if (inet_pton(AF_INET6, raw, bin) == 1) return inet_ntop(AF_INET6, bin, out, (socklen_t)out_size) ? 0 : -1;
        return -1;
    }
    if (kind == PII_EMAIL) {
        while (n > 0 && isspace((unsigned char)raw[n - 1])) n--;
        while (n > 0 && isspace((unsigned char)*raw)) raw++, n--;
        for (size_t i = 0; i < n; i++) out[i] = (char)tolower((unsigned char)raw[i]);
        out[n] = '\0';
        return n > 0 ? 0 : -1;
    }
    memcpy(out, raw, n + 1);
    return 0;
}

static void cache_key(pii *pi, pii_kind kind, const char *norm, unsigned char key[32]) {
    unsigned char buf[PII_RAW_MAX + 1];
    size_t n = strlen(norm);
    buf[0] = (unsigned char)kind;
    memcpy(buf + 1, norm, n);
    hmac256_digest(pi->mac, buf, n + 1, key);
    OPENSSL_cleanse(buf, n + 1);
}

static size_t bucket_of(const pii *pi, const unsigned char key[32]) {
    size_t h;
    memcpy(&h, key, sizeof h); /* the key is already a uniform hash */
    return h & (pi->nbuckets - 1);
}

static void lru_unlink(pii *pi, int32_t i) {
    pii_entry *e = &pi->entries[i];
    if (e->prev >= 0) pi->entries[e->prev].next = e->next; else pi->head = e->next;
    if (e->next >= 0) pi->entries[e->next].prev = e->prev; else pi->tail = e->prev;
}

static void lru_push_front(pii *pi, int32_t i) {
    pii_entry *e = &pi->entries[i];
    e->prev = -1;
    e->next = pi->head;
    if (pi->head >= 0) pi->entries[pi->head].prev = i;
    pi->head = i;
    if (pi->tail < 0) pi->tail = i;
}

static const char *cache_get(pii *pi, const unsigned char key[32]) {
    for (int32_t i = pi->buckets[bucket_of(pi, key)]; i >= 0; i = pi->entries[i].chain) {
        if (memcmp(pi->entries[i].key, key, 32) == 0) {
            lru_unlink(pi, i);
            lru_push_front(pi, i);
            return pi->entries[i].digest;
        }
    }
    return NULL;
}

/* Removes entry i from its bucket chain. */
static void bucket_remove(pii *pi, int32_t i) {
    int32_t *link = &pi->buckets[bucket_of(pi, pi->entries[i].key)];
    while (*link != i) link = &pi->entries[*link].chain;
    *link = pi->entries[i].chain;
}

static void cache_put(pii *pi, const unsigned char key[32], const char *digest) {
    int32_t i;
    if (pi->nused < pi->params.cache_entries) {
        i = (int32_t)pi->nused++;
    } else { /* full: reuse the least recently used entry */
        i = pi->tail;
        lru_unlink(pi, i);
        bucket_remove(pi, i);
    }
    pii_entry *e = &pi->entries[i];
    memcpy(e->key, key, 32);
    memcpy(e->digest, digest, sizeof e->digest);
    size_t b = bucket_of(pi, key);
    e->chain = pi->buckets[b];
    pi->buckets[b] = i;
    lru_push_front(pi, i);
}

/* Argon2id(pwd, salt, secret) with params into hash. Copies the inputs to local buffers (wiped
 * after) because libargon2 takes non-const pointers. 0, or -1 with errstr. */
static int argon2id_run(const unsigned char *secret_in, size_t secret_len, const pii_params *params,
                       const char *salt_in, const char *pwd_in, size_t n, unsigned char hash[32],
                       char *errstr, size_t errstr_size) {
    unsigned char pwd[PII_RAW_MAX], secret[256], salt[64];
    size_t slen = strlen(salt_in);
    memcpy(pwd, pwd_in, n);
    memcpy(secret, secret_in, secret_len);
    memcpy(salt, salt_in, slen);
    argon2_context ctx = {
        .out = hash, .outlen = 32, .pwd = pwd, .pwdlen = (uint32_t)n,
        .salt = salt, .saltlen = (uint32_t)slen, .secret = secret,
        .secretlen = (uint32_t)secret_len, .t_cost = params->t_cost,
        .m_cost = params->m_cost_kib, .lanes = 1, .threads = 1,
        .version = ARGON2_VERSION_13, .flags = ARGON2_DEFAULT_FLAGS};
    int rc = argon2id_ctx(&ctx);
    OPENSSL_cleanse(pwd, sizeof pwd);
    OPENSSL_cleanse(secret, sizeof secret);
    if (rc != ARGON2_OK) {
        snprintf(errstr, errstr_size, "argon2id: %s", argon2_error_message(rc));
        return -1;
    }
    return 0;
}

static int argon2_digest(const pii *pi, pii_kind kind, const char *norm, char *out, char *errstr,
                         size_t errstr_size) {
    unsigned char hash[32];
    if (argon2id_run(pi->secret, pi->secret_len, &pi->params, PII_SALT[kind], norm, strlen(norm),
                    hash, errstr, errstr_size) != 0)
        return -1;
    fs_hex(hash, sizeof hash, out);
    return 0;
}

int pii_key_id_of(const void *secret, size_t secret_len, const pii_params *params,
                  char out[PII_KEY_ID_HEX + 1], char *errstr, size_t errstr_size) {
    unsigned char hash[32];
    if (params_check(secret_len, params, errstr, errstr_size) != 0 ||
        argon2id_run(secret, secret_len, params, PII_KEY_ID_SALT, PII_KEY_ID_LABEL,
                    strlen(PII_KEY_ID_LABEL), hash, errstr, errstr_size) != 0)
        return -1;
    fs_hex(hash, PII_KEY_ID_HEX / 2, out); /* fs_hex writes the NUL */
    return 0;
}

int pii_digest(pii *pi, pii_kind kind, const char *raw, char out[PAY_DIGEST_HEX + 1], char *errstr,
               size_t errstr_size) {
    char norm[PII_RAW_MAX];
    unsigned char key[32];
    int rc = -1;
    if (kind < 0 || kind >= PII_KIND_COUNT || normalize(kind, raw, norm, sizeof norm) != 0) {
        snprintf(errstr, errstr_size, "identifier cannot be normalized");
        goto done;
    }
    if (pi->entries) {
        cache_key(pi, kind, norm, key);
        const char *hit = cache_get(pi, key);
        if (hit) {
            memcpy(out, hit, PAY_DIGEST_HEX + 1);
            pi->hits++;
            rc = 0;
            goto done;
        }
    }
    pi->misses++;
    if (argon2_digest(pi, kind, norm, out, errstr, errstr_size) != 0) goto done;
    if (pi->entries) cache_put(pi, key, out);
    rc = 0;
done:
    explicit_bzero(norm, sizeof norm); /* glibc's: a plain memset that is never optimized away */
    return rc;
}

int pii_apply(pii *pi, pay_pii *raw, pay_payment *p, char *errstr, size_t errstr_size) {
    struct { pii_kind kind; char *raw; char *out; } map[] = {
        {PII_EMAIL, raw->email, p->email_digest},
        {PII_IP, raw->ip_address, p->ip_digest},
        {PII_CARD, raw->card_fingerprint, p->card_fingerprint_digest},
        {PII_DEVICE, raw->device_id, p->device_id_digest},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (map[i].raw[0] == '\0') continue;
        if (pii_digest(pi, map[i].kind, map[i].raw, map[i].out, errstr, errstr_size) != 0) rc = -1;
    }
    OPENSSL_cleanse(raw, sizeof *raw); /* raw values end here */
    return rc;
}

int pii_lookup(pii *pi, pii_kind kind, const char *raw, char out[PAY_DIGEST_HEX + 1]) {
    char norm[PII_RAW_MAX];
    unsigned char key[32];
    int rc = -1;
    if (kind < 0 || kind >= PII_KIND_COUNT || normalize(kind, raw, norm, sizeof norm) != 0) goto done;
    rc = 0;
    if (pi->entries) {
        cache_key(pi, kind, norm, key);
        const char *hit = cache_get(pi, key);
        if (hit) {
            memcpy(out, hit, PAY_DIGEST_HEX + 1);
            rc = 1;
        }
    }
    if (rc == 1) pi->hits++;
    else pi->misses++;
done:
    OPENSSL_cleanse(norm, sizeof norm);
    return rc;
}

int pii_compute(const pii *pi, pii_kind kind, const char *raw, char out[PAY_DIGEST_HEX + 1],
                char *errstr, size_t errstr_size) {
    char norm[PII_RAW_MAX];
    int rc = -1;
    if (kind < 0 || kind >= PII_KIND_COUNT || normalize(kind, raw, norm, sizeof norm) != 0)
        snprintf(errstr, errstr_size, "identifier cannot be normalized");
    else
        rc = argon2_digest(pi, kind, norm, out, errstr, errstr_size);
    OPENSSL_cleanse(norm, sizeof norm);
    return rc;
}

void pii_store(pii *pi, pii_kind kind, const char *raw, const char digest[PAY_DIGEST_HEX + 1]) {
    char norm[PII_RAW_MAX];
    unsigned char key[32];
    if (!pi->entries || kind < 0 || kind >= PII_KIND_COUNT ||
        normalize(kind, raw, norm, sizeof norm) != 0)
        return;
    cache_key(pi, kind, norm, key);
    if (!cache_get(pi, key)) cache_put(pi, key, digest); /* another request may have stored it */
    OPENSSL_cleanse(norm, sizeof norm);
}
