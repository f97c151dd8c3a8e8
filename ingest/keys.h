/* keys: API keys of ingest's callers.
 *
 * A key looks like "fsk.<key id>.<43 base64url chars>" (256 random bits): the key id inside tells
 * which entry to verify against, so a wrong key costs one Argon2 verification, never one per entry.
 * Keys are stored only as Argon2id hashes, in a keys file (reloaded on SIGHUP), one key per line:
 *
 *   # key-id   scopes                                        rate  argon2id hash of the whole key  check
 *   checkout   payments:write,payments:read                  500   $argon2id$v=19$m=19456,t=2,p=1$...  3fa0
 *
 * check (optional; `keys create` writes it): keys_check_tag() of the key, 16 bits of a hash of it.
 * A presented key whose tag differs is refused without Argon2: someone guessing secrets at a known
 * key id costs the server nothing and cannot use up the id's verification budget (ingest's
 * auth-verify-rate), which would lock the owner out. 16 of the key's 256 random bits are thus
 * told to whoever reads the file, who holds its hashes anyway; 240 stay.
 *
 * scopes: comma-separated, from payments:write, payments:read (the key's own payments: those whose
 * source is its key id), payments:read_all (every payment: back-office keys), outcomes:write.
 * rate: requests per second (token bucket, burst = one second's worth), 0 = unlimited. Blank lines and # comments are
 * ignored; anything else malformed is an error naming the line (a bad file is never half-loaded).
 *
 * Verification is slow on purpose (Argon2id), so its result is cached: keys_cache maps a keyed
 * digest of the presented key (HMAC-SHA256 under a per-process random secret; never the key itself)
 * to the key id, and wrong keys to "invalid", so each distinct presented key pays Argon2 once per
 * process (and again after a reload, which empties the cache: keys may have been revoked). */
#ifndef FS_KEYS_H
#define FS_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYS_ID_MAX 64       /* [A-Za-z0-9_-], 1..64 */
#define KEYS_HASH_MAX 255    /* encoded Argon2id hash */
#define KEYS_PRESENTED_MAX 200
#define KEYS_PREFIX "fsk."
#define KEYS_CHECK_HEX 4     /* the check tag: 16 bits as lower-case hex */

typedef enum keys_scope {
    KEYS_SCOPE_PAYMENTS_WRITE = 1u << 0,
    KEYS_SCOPE_PAYMENTS_READ = 1u << 1,
    KEYS_SCOPE_OUTCOMES_WRITE = 1u << 2,
    KEYS_SCOPE_PAYMENTS_READ_ALL = 1u << 3,
} keys_scope;
#define KEYS_SCOPES_ALL 0xfu /* every keys_scope bit */

typedef struct keys_entry {
    char id[KEYS_ID_MAX + 1];
    unsigned scopes;  /* keys_scope bits */
    uint32_t rate;    /* requests per second, 0 = unlimited */
    char hash[KEYS_HASH_MAX + 1];
    char check[KEYS_CHECK_HEX + 1]; /* "" when the line has none */
} keys_entry;

typedef struct keys keys;             /* the entries of one keys file */
typedef struct keys_cache keys_cache; /* presented key -> key id, across reloads */

/* Parses one line. Returns 1 with *out filled, 0 for a blank or comment line, -1 with errstr (a
 * reserved key id included: "analyst", "anonymous", any case, are sources that are not API keys;
 * keys_create refuses them too). */
int keys_parse_line(const char *line, keys_entry *out, char *errstr, size_t errstr_size);

/* A rate limit as the keys file and `keys create --rate` take it: requests per second,
 * 0..KEYS_RATE_MAX (0: unlimited), digits only. Returns 0, or -1. */
#define KEYS_RATE_MAX 1000000
int keys_parse_rate(const char *s, uint32_t *out);

/* "payments:write,payments:read" -> bits. Returns 0, or -1 naming the unknown scope in errstr. */
int keys_scopes_parse(const char *s, unsigned *out, char *errstr, size_t errstr_size);
/* bits -> "payments:write,payments:read"; KEYS_SCOPES_ALL -> every scope name (for messages) */
void keys_scopes_format(unsigned scopes, char *out, size_t out_size);
/* The scope bit of a name ("payments:write"), or 0 when unknown. */
unsigned keys_scope_bit(const char *name);

/* Reads a keys file (duplicate ids are an error). Returns NULL with errstr ("path:line: why"). */
keys *keys_load(const char *path, char *errstr, size_t errstr_size);
/* From text (tests). */
keys *keys_load_text(const char *text, char *errstr, size_t errstr_size);
void keys_destroy(keys *k); /* accepts NULL */
size_t keys_count(const keys *k);
/* The entry with this id, or NULL. Valid until keys_destroy(k). */
const keys_entry *keys_find(const keys *k, const char *id);

/* The key id inside a presented key ("fsk.<id>.<secret>"). Returns 0, or -1 when malformed. */
int keys_presented_id(const char *presented, char id[KEYS_ID_MAX + 1]);

/* The check tag of a presented key: the first 16 bits of SHA-256("fsk-check:" key), as hex.
 * Returns 0, or -1 when it could not be computed (out of memory). */
int keys_check_tag(const char *presented, char out[KEYS_CHECK_HEX + 1]);

/* Whether presented can be e's key without running Argon2: false only when e has a check tag and
 * presented's differs (a wrong key, for sure); true when the tag cannot be computed (Argon2
 * decides). */
bool keys_check_matches(const keys_entry *e, const char *presented);

/* Argon2id verification of presented against an entry's encoded hash. Slow (tens of ms) and
 * thread-safe: run it on a worker thread. */
bool keys_verify(const char *hash, const char *presented);

/* The verification cache (owned by one thread). slots: rounded up to a power of two, in sets of 4
 * by digest; a full set evicts its least recently used wrong key, else (for a valid key) its least
 * recently used valid one: a wrong key is never cached at the cost of a valid one. */
keys_cache *keys_cache_new(size_t slots);
void keys_cache_destroy(keys_cache *c); /* accepts NULL; wipes the secret */
/* The keyed digest of a presented key (the cache's lookup key). */
void keys_cache_digest(keys_cache *c, const char *presented, unsigned char digest[32]);
/* 1 = known valid (id filled), 0 = known invalid, -1 = not cached. Counts a hit or a miss. */
int keys_cache_get(keys_cache *c, const unsigned char digest[32], char id[KEYS_ID_MAX + 1]);
/* Remembers a verification result (id NULL: invalid). */
void keys_cache_put(keys_cache *c, const unsigned char digest[32], const char *id);
/* Forgets everything (after a reload). */
void keys_cache_clear(keys_cache *c);
void keys_cache_stats(const keys_cache *c, uint64_t *hits, uint64_t *misses);

/* `fraudshield-ingest keys create`: makes a new random key for id, appends its hashed entry to the
 * keys file at path (created with mode 0600 if missing; an existing id is an error), and writes the
 * key itself into key_out: the only time it is ever shown. Returns 0 or -1 with errstr. */
int keys_create(const char *path, const char *id, unsigned scopes, uint32_t rate,
                char key_out[KEYS_PRESENTED_MAX + 1], char *errstr, size_t errstr_size);

#endif
