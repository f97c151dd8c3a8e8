/* recent: two-generation set of recently accepted payment ids and their owners (see recent.h). */
#include "recent.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmac256.h"

#define RECENT_SECRET_BYTES 32
#define RECENT_OWNER_MEMO 160 /* longer owners are tagged each time */

typedef struct slot {
    unsigned char id[16]; /* all-zero = empty (the nil UUID is never stored) */
    uint64_t owner;       /* owner_tag() of who posted it */
} slot;

typedef struct gen {
    slot *slots; /* open addressing */
    size_t mask, used, limit;
} gen;

struct recent {
    gen g[2]; /* g[cur] takes new ids */
    int cur;
    hmac256 *mac; /* owner tags, under a random per-process secret */
    /* The last owner recent_add() tagged, and its tag: a batch's items, and most consecutive
     * payments, have one owner, so the HMAC runs once for them, not once a payment. */
    char last_owner[RECENT_OWNER_MEMO];
    uint64_t last_tag;
    bool memo; /* last_owner and last_tag hold one (the empty owner, auth off, included) */
};

/* 32 hex digits of a canonical UUID -> 16 bytes. Returns -1 when malformed or nil. */
static int uuid_bin(const char *s, unsigned char out[16]) {
    int n = 0, nonzero = 0;
    for (const char *p = s; *p && n < 32; p++) {
        int v;
        if (*p == '-') continue;
        if (*p >= '0' && *p <= '9') v = *p - '0';
        else if (*p >= 'a' && *p <= 'f') v = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F') v = *p - 'A' + 10;
        else return -1;
        if (n % 2 == 0) out[n / 2] = (unsigned char)(v << 4);
        else out[n / 2] |= (unsigned char)v;
        nonzero |= v;
        n++;
    }
    return n == 32 && nonzero ? 0 : -1;
}

static size_t slot_of(const gen *g, const unsigned char id[16]) {
    uint64_t h;
    memcpy(&h, id + 8, sizeof h); /* random bits in v4 and v5 ids */
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 16) & g->mask;
}

static uint64_t owner_tag(const recent *r, const char *owner) {
    unsigned char md[32];
    uint64_t tag;
    hmac256_digest(r->mac, owner, strlen(owner), md);
    memcpy(&tag, md, sizeof tag);
    return tag;
}

/* owner_tag(), remembered for the last owner (see struct recent). */
static uint64_t owner_tag_memo(recent *r, const char *owner) {
    size_t n = strlen(owner);
    if (n >= sizeof r->last_owner) return owner_tag(r, owner);
    if (!r->memo || strcmp(r->last_owner, owner) != 0) {
        memcpy(r->last_owner, owner, n + 1);
        r->last_tag = owner_tag(r, owner);
        r->memo = true;
    }
    return r->last_tag;
}

/* id's slot in g, or NULL. */
static const slot *gen_find(const gen *g, const unsigned char id[16]) {
    static const unsigned char ZERO[16];
    for (size_t i = slot_of(g, id);; i = (i + 1) & g->mask) {
        if (memcmp(g->slots[i].id, id, 16) == 0) return &g->slots[i];
        if (memcmp(g->slots[i].id, ZERO, 16) == 0) return NULL;
    }
}

static const slot *recent_find(const recent *r, const unsigned char id[16]) {
    const slot *s = gen_find(&r->g[0], id);
    return s ? s : gen_find(&r->g[1], id);
}

static int gen_init(gen *g, size_t limit) {
    size_t n = 16;
    while (n < limit * 2) n *= 2; /* load factor <= 1/2 */
    g->slots = calloc(n, sizeof *g->slots);
    g->mask = n - 1;
    g->used = 0;
    g->limit = limit;
    return g->slots ? 0 : -1;
}

recent *recent_new(size_t capacity) {
    unsigned char secret[RECENT_SECRET_BYTES];
    recent *r = calloc(1, sizeof *r);
    size_t half = capacity / 2 ? capacity / 2 : 1;
    bool ok = r && gen_init(&r->g[0], half) == 0 && gen_init(&r->g[1], half) == 0 &&
              RAND_bytes(secret, sizeof secret) == 1 && (r->mac = hmac256_new(secret, sizeof secret));
    OPENSSL_cleanse(secret, sizeof secret);
    if (!ok) {
        recent_destroy(r);
        return NULL;
    }
    return r;
}

void recent_destroy(recent *r) {
    if (!r) return;
    hmac256_destroy(r->mac);
    free(r->g[0].slots);
    free(r->g[1].slots);
    free(r);
}

void recent_add(recent *r, const char *uuid, const char *owner) {
    static const unsigned char ZERO[16];
    unsigned char id[16];
    if (uuid_bin(uuid, id) != 0 || recent_find(r, id)) return; /* the first owner stays */
    gen *g = &r->g[r->cur];
    if (g->used >= g->limit) { /* current full: the older generation goes */
        r->cur ^= 1;
        g = &r->g[r->cur];
        memset(g->slots, 0, (g->mask + 1) * sizeof *g->slots);
        g->used = 0;
    }
    size_t i = slot_of(g, id);
    while (memcmp(g->slots[i].id, ZERO, 16) != 0) i = (i + 1) & g->mask;
    memcpy(g->slots[i].id, id, 16);
    g->slots[i].owner = owner_tag_memo(r, owner);
    g->used++;
}

bool recent_has(const recent *r, const char *uuid, const char *owner) {
    unsigned char id[16];
    if (uuid_bin(uuid, id) != 0) return false;
    const slot *s = recent_find(r, id);
    return s && (!owner || s->owner == owner_tag(r, owner));
}
