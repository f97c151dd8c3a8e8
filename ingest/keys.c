/* keys: API keys file, Argon2id verification, and the verification cache (see keys.h). */
#include "keys.h"

#include <argon2.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "hmac256.h"

#define KEYS_LINE_MAX 1024
#define KEYS_SECRET_BYTES 32
/* Hashing parameters of new keys (OWASP's Argon2id baseline: 19 MiB, 2 passes). Verification reads
 * them from the stored hash, so changing them here only affects keys created afterwards. */
#define KEYS_T_COST 2
#define KEYS_M_COST_KIB 19456
#define KEYS_SALT_BYTES 16
#define KEYS_HASH_BYTES 32

static const struct {
    const char *name;
    unsigned bit;
} SCOPES[] = {
    {"payments:write", KEYS_SCOPE_PAYMENTS_WRITE},
    {"payments:read", KEYS_SCOPE_PAYMENTS_READ},
    {"payments:read_all", KEYS_SCOPE_PAYMENTS_READ_ALL},
    {"outcomes:write", KEYS_SCOPE_OUTCOMES_WRITE},
};
#define NSCOPES (sizeof SCOPES / sizeof SCOPES[0])

struct keys {
    keys_entry *e;
    size_t n;
};

typedef struct cache_slot {
    unsigned char digest[32];
    char id[KEYS_ID_MAX + 1]; /* "" = a key known to be wrong */
    uint64_t used_at;         /* the cache's clock at the last get or put; 0: empty */
} cache_slot;

/* KEYS_CACHE_WAYS slots per set. When it was direct-mapped, two valid keys whose digests met in one slot (1 in
 * slots for a pair, likely among dozens of keys) evicted each other on every request, each time one
 * more Argon2 run (~30 ms, 19 MiB); and a client sending random wrong keys evicted valid ones. */
#define KEYS_CACHE_WAYS 4

struct keys_cache {
    hmac256 *mac; /* HMAC-SHA256 keyed with a random per-process secret */
    cache_slot *slots;
    size_t set_mask; /* sets - 1 */
    uint64_t clock;
    uint64_t hits, misses;
};

/* ------------------------------------------------------------------------------- parsing */

unsigned keys_scope_bit(const char *name) {
    for (size_t i = 0; i < NSCOPES; i++)
        if (strcmp(SCOPES[i].name, name) == 0) return SCOPES[i].bit;
    return 0;
}

int keys_scopes_parse(const char *s, unsigned *out, char *errstr, size_t errstr_size) {
    char buf[256];
    char *save = NULL;
    *out = 0;
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf) {
        snprintf(errstr, errstr_size, "scopes too long");
        return -1;
    }
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned bit = keys_scope_bit(tok);
        if (!bit) {
            char known[128];
            keys_scopes_format(KEYS_SCOPES_ALL, known, sizeof known);
            snprintf(errstr, errstr_size, "unknown scope '%.64s' (known: %s)", tok, known);
            return -1;
        }
        *out |= bit;
    }
    if (*out == 0) {
        snprintf(errstr, errstr_size, "no scope given");
        return -1;
    }
    return 0;
}

void keys_scopes_format(unsigned scopes, char *out, size_t out_size) {
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NSCOPES; i++) {
        if (!(scopes & SCOPES[i].bit)) continue;
        int n = snprintf(out + used, out_size - used, "%s%s", used ? "," : "", SCOPES[i].name);
        if (n < 0 || (size_t)n >= out_size - used) return;
        used += (size_t)n;
    }
}

/* Sources that are not API keys. A payment's and a label's source (payments.source, the outcome's
 * "source") is the key id of its sender, or one of these: a key named like one would pass its
 * payments and labels off as theirs (its outcomes as an analyst's, say). Compared regardless of
 * case, as a person reading them would. "shopify:<shop>" needs no entry: ':' is not in key ids. */
static const struct {
    const char *id;
    const char *whose;
} RESERVED_IDS[] = {
    {"analyst", "the alerter's analyst resolutions"},
    {"anonymous", "ingest's requests with auth off"},
};

/* Whose source a reserved id is (for the message), or NULL. */
static const char *id_reserved(const char *id) {
    for (size_t i = 0; i < sizeof RESERVED_IDS / sizeof RESERVED_IDS[0]; i++)
        if (strcasecmp(id, RESERVED_IDS[i].id) == 0) return RESERVED_IDS[i].whose;
    return NULL;
}

/* A valid key id that is reserved: -1 with errstr. */
static int id_not_reserved(const char *id, char *errstr, size_t errstr_size) {
    const char *whose = id_reserved(id);
    if (!whose) return 0;
    snprintf(errstr, errstr_size, "key id %s is reserved: as the source of a payment or a label it "
             "names %s, not an API key; pick another id", id, whose);
    return -1;
}

static bool id_valid(const char *id, size_t n) {
    if (n == 0 || n > KEYS_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

int keys_parse_rate(const char *s, uint32_t *out) {
    char *end;
    if (!isdigit((unsigned char)s[0])) return -1; /* strtol would take " 5", "+5", "-0" */
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 0 || v > KEYS_RATE_MAX) return -1;
    *out = (uint32_t)v;
    return 0;
}

int keys_parse_line(const char *line, keys_entry *out, char *errstr, size_t errstr_size) {
    char buf[KEYS_LINE_MAX], *f[6], *save = NULL;
    int n = 0;
    if (snprintf(buf, sizeof buf, "%s", line) >= (int)sizeof buf) {
        snprintf(errstr, errstr_size, "line too long");
        return -1;
    }
    for (char *t = strtok_r(buf, " \t\r\n", &save); t && n < 6; t = strtok_r(NULL, " \t\r\n", &save))
        f[n++] = t;
    if (n == 0 || f[0][0] == '#') return 0;
    memset(out, 0, sizeof *out);
    if (n != 4 && n != 5) {
        snprintf(errstr, errstr_size, "expected 4 or 5 fields (key-id scopes rate hash [check]), "
                 "got %s", n > 5 ? "more" : "fewer");
        return -1;
    }
    if (n == 5 && (strlen(f[4]) != KEYS_CHECK_HEX || strspn(f[4], "0123456789abcdef") != KEYS_CHECK_HEX)) {
        snprintf(errstr, errstr_size, "check must be %d lower-case hex digits", KEYS_CHECK_HEX);
        return -1;
    }
    if (!id_valid(f[0], strlen(f[0]))) {
        snprintf(errstr, errstr_size, "key id must be 1..%d of [A-Za-z0-9_-]", KEYS_ID_MAX);
        return -1;
    }
    if (id_not_reserved(f[0], errstr, errstr_size) != 0) return -1;
    if (keys_scopes_parse(f[1], &out->scopes, errstr, errstr_size) != 0) return -1;
    if (keys_parse_rate(f[2], &out->rate) != 0) {
        snprintf(errstr, errstr_size, "rate must be an integer 0..%d (0 = unlimited)", KEYS_RATE_MAX);
        return -1;
    }
    if (strncmp(f[3], "$argon2id$", 10) != 0 || strlen(f[3]) > KEYS_HASH_MAX) {
        snprintf(errstr, errstr_size, "hash must be an encoded Argon2id hash ($argon2id$...)");
        return -1;
    }
    snprintf(out->id, sizeof out->id, "%s", f[0]);
    snprintf(out->hash, sizeof out->hash, "%s", f[3]);
    if (n == 5) snprintf(out->check, sizeof out->check, "%s", f[4]);
    return 1;
}

int keys_check_tag(const char *presented, char out[KEYS_CHECK_HEX + 1]) {
    char text[sizeof "fsk-check:" + KEYS_PRESENTED_MAX];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int n = snprintf(text, sizeof text, "fsk-check:%s", presented);
    int rc = n > 0 && (size_t)n < sizeof text &&
                     EVP_Digest(text, (size_t)n, md, &mdlen, EVP_sha256(), NULL) == 1 ? 0 : -1;
    if (rc == 0) fs_hex(md, KEYS_CHECK_HEX / 2, out); /* NUL-terminated */
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(md, sizeof md);
    return rc;
}

bool keys_check_matches(const keys_entry *e, const char *presented) {
    char tag[KEYS_CHECK_HEX + 1];
    if (!e->check[0] || keys_check_tag(presented, tag) != 0) return true;
    return CRYPTO_memcmp(tag, e->check, KEYS_CHECK_HEX) == 0;
}

/* Adds one parsed line to k; duplicate ids are refused. */
static int keys_add(keys *k, const keys_entry *e, char *errstr, size_t errstr_size) {
    if (keys_find(k, e->id)) {
        snprintf(errstr, errstr_size, "duplicate key id %s", e->id);
        return -1;
    }
    keys_entry *grown = realloc(k->e, (k->n + 1) * sizeof *grown);
    if (!grown) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    k->e = grown;
    k->e[k->n++] = *e;
    return 0;
}

keys *keys_load_text(const char *text, char *errstr, size_t errstr_size) {
    keys *k = calloc(1, sizeof *k);
    char line[KEYS_LINE_MAX], why[256];
    int lineno = 0;
    if (!k) goto oom;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        lineno++;
        keys_entry e;
        int rc = -1;
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = '\0';
            rc = keys_parse_line(line, &e, why, sizeof why);
        } else {
            snprintf(why, sizeof why, "line too long");
        }
        if (rc == 1 && keys_add(k, &e, why, sizeof why) != 0) rc = -1;
        OPENSSL_cleanse(&e, sizeof e);
        if (rc < 0) {
            snprintf(errstr, errstr_size, "line %d: %s", lineno, why);
            keys_destroy(k);
            return NULL;
        }
        p += len + (p[len] == '\n');
    }
    return k;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
}

/* The whole file (at most 16 MiB), NUL-terminated; NULL with errstr. */
static char *file_read(const char *path, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "re");
    char *buf = NULL;
    long size;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || size > (16L << 20) ||
        fseek(f, 0, SEEK_SET) != 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, f ? "unreadable or too large" : strerror(errno));
        goto done;
    }
    buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        snprintf(errstr, errstr_size, "%s: read failed", path);
        free(buf);
        buf = NULL;
        goto done;
    }
    buf[size] = '\0';
done:
    if (f) fclose(f);
    return buf;
}

keys *keys_load(const char *path, char *errstr, size_t errstr_size) {
    char why[300];
    char *text = file_read(path, errstr, errstr_size);
    if (!text) return NULL;
    keys *k = keys_load_text(text, why, sizeof why);
    if (!k) snprintf(errstr, errstr_size, "%s:%s", path, why);
    free(text);
    return k;
}

void keys_destroy(keys *k) {
    if (!k) return;
    if (k->e) OPENSSL_cleanse(k->e, k->n * sizeof *k->e);
    free(k->e);
    free(k);
}

size_t keys_count(const keys *k) { return k ? k->n : 0; }

const keys_entry *keys_find(const keys *k, const char *id) {
    for (size_t i = 0; k && i < k->n; i++)
        if (strcmp(k->e[i].id, id) == 0) return &k->e[i];
    return NULL;
}

/* ------------------------------------------------------------------------ verification */

int keys_presented_id(const char *presented, char id[KEYS_ID_MAX + 1]) {
    size_t plen = sizeof KEYS_PREFIX - 1;
    if (!presented || strlen(presented) > KEYS_PRESENTED_MAX ||
        strncmp(presented, KEYS_PREFIX, plen) != 0)
        return -1;
    const char *start = presented + plen, *dot = strchr(start, '.');
    if (!dot || !id_valid(start, (size_t)(dot - start)) || dot[1] == '\0') return -1;
    memcpy(id, start, (size_t)(dot - start));
    id[dot - start] = '\0';
    return 0;
}

bool keys_verify(const char *hash, const char *presented) {
    return argon2id_verify(hash, presented, strlen(presented)) == ARGON2_OK;
}

keys_cache *keys_cache_new(size_t slots) {
    unsigned char secret[32];
    keys_cache *c = calloc(1, sizeof *c);
    size_t n = 16;
    while (n < slots) n *= 2;
    if (!c || RAND_bytes(secret, sizeof secret) != 1) goto failed;
    c->mac = hmac256_new(secret, sizeof secret);
    c->slots = calloc(n, sizeof *c->slots);
    c->set_mask = n / KEYS_CACHE_WAYS - 1;
    if (!c->mac || !c->slots) goto failed;
    OPENSSL_cleanse(secret, sizeof secret);
    return c;
failed:
    OPENSSL_cleanse(secret, sizeof secret);
    keys_cache_destroy(c);
    return NULL;
}

void keys_cache_destroy(keys_cache *c) {
    if (!c) return;
    hmac256_destroy(c->mac); /* wipes the key */
    free(c->slots);
    free(c);
}

void keys_cache_digest(keys_cache *c, const char *presented, unsigned char digest[32]) {
    hmac256_digest(c->mac, presented, strlen(presented), digest);
}

static cache_slot *set_of(keys_cache *c, const unsigned char digest[32]) {
    size_t h;
    memcpy(&h, digest, sizeof h); /* already uniformly distributed */
    return &c->slots[(h & c->set_mask) * KEYS_CACHE_WAYS];
}

static cache_slot *find_in_set(cache_slot *set, const unsigned char digest[32]) {
    for (int w = 0; w < KEYS_CACHE_WAYS; w++)
        if (set[w].used_at && CRYPTO_memcmp(set[w].digest, digest, 32) == 0) return &set[w];
    return NULL;
}

int keys_cache_get(keys_cache *c, const unsigned char digest[32], char id[KEYS_ID_MAX + 1]) {
    cache_slot *s = find_in_set(set_of(c, digest), digest);
    if (!s) {
        c->misses++;
        return -1;
    }
    c->hits++;
    s->used_at = ++c->clock;
    memcpy(id, s->id, sizeof s->id);
    return id[0] ? 1 : 0;
}

/* Where a new entry goes: an empty slot, else the least recently used wrong key, else (for a valid
 * key only) the least recently used valid one. NULL: a wrong key finds only valid ones, and is not
 * cached (wrong keys never evict valid keys). */
static cache_slot *victim(cache_slot *set, bool valid) {
    cache_slot *wrong = NULL, *any = NULL;
    for (int w = 0; w < KEYS_CACHE_WAYS; w++) {
        cache_slot *s = &set[w];
        if (!s->used_at) return s;
        if (!s->id[0] && (!wrong || s->used_at < wrong->used_at)) wrong = s;
        if (!any || s->used_at < any->used_at) any = s;
    }
    return wrong ? wrong : valid ? any : NULL;
}

void keys_cache_put(keys_cache *c, const unsigned char digest[32], const char *id) {
    cache_slot *set = set_of(c, digest), *s = find_in_set(set, digest);
    if (!s && !(s = victim(set, id != NULL))) return;
    memcpy(s->digest, digest, 32);
    snprintf(s->id, sizeof s->id, "%s", id ? id : "");
    s->used_at = ++c->clock;
}

void keys_cache_clear(keys_cache *c) {
    memset(c->slots, 0, (c->set_mask + 1) * KEYS_CACHE_WAYS * sizeof *c->slots);
}

void keys_cache_stats(const keys_cache *c, uint64_t *hits, uint64_t *misses) {
    *hits = c->hits;
    *misses = c->misses;
}

/* ------------------------------------------------------------------------------ creation */

static void base64url(const unsigned char *in, size_t n, char *out) {
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    for (int i = 0; i < len; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
        else if (out[i] == '=') out[i] = '\0';
    }
}

/* A new key and its encoded hash. */
static int key_generate(const char *id, char key[KEYS_PRESENTED_MAX + 1], char *hash,
                        size_t hash_size, char *errstr, size_t errstr_size) {
    unsigned char secret[KEYS_SECRET_BYTES], salt[KEYS_SALT_BYTES];
    char b64[4 * KEYS_SECRET_BYTES / 3 + 4];
    int rc = -1;
    if (RAND_bytes(secret, sizeof secret) != 1 || RAND_bytes(salt, sizeof salt) != 1) {
        snprintf(errstr, errstr_size, "no randomness available");
        goto done;
    }
    base64url(secret, sizeof secret, b64);
    snprintf(key, KEYS_PRESENTED_MAX + 1, KEYS_PREFIX "%s.%s", id, b64);
    int arc = argon2id_hash_encoded(KEYS_T_COST, KEYS_M_COST_KIB, 1, key, strlen(key), salt,
                                    sizeof salt, KEYS_HASH_BYTES, hash, hash_size);
    if (arc != ARGON2_OK) {
        snprintf(errstr, errstr_size, "argon2id: %s", argon2_error_message(arc));
        goto done;
    }
    rc = 0;
done:
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(b64, sizeof b64);
    return rc;
}

/* Refuses an id the file already has (a missing file has none). */
static int id_unused(const char *path, const char *id, char *errstr, size_t errstr_size) {
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) return 0;
    keys *k = keys_load(path, errstr, errstr_size);
    if (!k) return -1;
    int rc = keys_find(k, id) ? -1 : 0;
    if (rc) snprintf(errstr, errstr_size, "%s already has a key with id %s", path, id);
    keys_destroy(k);
    return rc;
}

int keys_create(const char *path, const char *id, unsigned scopes, uint32_t rate,
                char key_out[KEYS_PRESENTED_MAX + 1], char *errstr, size_t errstr_size) {
    char hash[KEYS_HASH_MAX + 1], scopes_s[128], line[KEYS_LINE_MAX], check[KEYS_CHECK_HEX + 1];
    int fd = -1, rc = -1;
    if (!id_valid(id, strlen(id)) || scopes == 0 || rate > KEYS_RATE_MAX) {
        snprintf(errstr, errstr_size, "key id must be 1..%d of [A-Za-z0-9_-], with a scope",
                 KEYS_ID_MAX);
        return -1;
    }
    if (id_not_reserved(id, errstr, errstr_size) != 0 ||
        id_unused(path, id, errstr, errstr_size) != 0 ||
        key_generate(id, key_out, hash, sizeof hash, errstr, errstr_size) != 0)
        goto done;
    keys_scopes_format(scopes, scopes_s, sizeof scopes_s);
    if (keys_check_tag(key_out, check) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    int n = snprintf(line, sizeof line, "%s %s %u %s %s\n", id, scopes_s, rate, hash, check);
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, line, (size_t)n) != n || fsync(fd) != 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (fd >= 0) close(fd);
    if (rc) OPENSSL_cleanse(key_out, KEYS_PRESENTED_MAX + 1);
    return rc;
}
