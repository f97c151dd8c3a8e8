/* velocity: event-time window features over the events read for one batch (see velocity.h).
 *
 * Representation: every string (entity keys and user ids) is interned once per batch into an id,
 * so events are small fixed records {entity, key id, user id, time, amount}. After
 * velocity_build() they are sorted by (entity, key, time) with prefix sums of the amounts: a window
 * is two binary searches, its sum a subtraction, and its distinct users one pass over the (usually
 * short) range with a generation-stamped "seen" array instead of a hash set per query. */
#include "velocity.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "fsutil.h"

/* The counterpart id of an event without one (ids are indexes of interned strings). */
#define NO_COUNTERPART UINT32_MAX

typedef struct vel_event {
    uint32_t entity;
    uint32_t key;  /* interned id */
    uint32_t user; /* interned id */
    int64_t time_ms;
    int64_t amount_minor;
} vel_event;

struct velocity {
    vel_event *ev;
    size_t n, cap;
    int64_t *prefix; /* prefix[i] = sum of amounts of ev[0..i) after build */
    size_t prefix_cap;
    /* interning: strs[id] -> string in the arena; slots: open addressing, id + 1 (0 = empty) */
    const char **strs;
    size_t nstrs, strs_cap;
    uint32_t *slots;
    size_t nslots;
    arena *keys;
    /* distinct-user counting */
    uint32_t *seen;
    size_t seen_cap;
    uint32_t stamp;
    bool built;
};

velocity *velocity_new(void) {
    velocity *v = calloc(1, sizeof(velocity));
    if (v && !(v->keys = arena_new())) {
        free(v);
        return NULL;
    }
    return v;
}

void velocity_destroy(velocity *v) {
    if (!v) return;
    arena_destroy(v->keys);
    free(v->ev);
    free(v->prefix);
    free(v->strs);
    free(v->slots);
    free(v->seen);
    free(v);
}

void velocity_reset(velocity *v) {
    /* Keep the first chunk (the common case fits in it), drop the rest. */
    arena_reset(v->keys);
    v->n = 0;
    v->nstrs = 0;
    if (v->slots) memset(v->slots, 0, v->nslots * sizeof *v->slots);
    v->built = false;
}

static uint64_t hash_str(const char *s, size_t len) { /* FNV-1a */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* Slot of s: the slot holding it, or the empty slot where it would go. */
static size_t slot_find(const velocity *v, const char *s, size_t len) {
    size_t mask = v->nslots - 1, i = (size_t)hash_str(s, len) & mask;
    while (v->slots[i]) {
        const char *t = v->strs[v->slots[i] - 1];
        if (strncmp(t, s, len) == 0 && t[len] == '\0') return i;
        i = (i + 1) & mask;
    }
    return i;
}

static int slots_grow(velocity *v) {
    size_t n = v->nslots ? v->nslots * 2 : 1024;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots) return -1;
    free(v->slots);
    v->slots = slots;
    v->nslots = n;
    for (size_t id = 0; id < v->nstrs; id++) { /* rehash */
        size_t i = slot_find(v, v->strs[id], strlen(v->strs[id]));
        v->slots[i] = (uint32_t)id + 1;
    }
    return 0;
}

/* The id of s, interning it when new. Returns -1 on allocation failure. */
static int64_t intern(velocity *v, const char *s) {
    size_t len = strlen(s);
    if ((v->nstrs + 1) * 2 > v->nslots && slots_grow(v) != 0) return -1;
    size_t i = slot_find(v, s, len);
    if (v->slots[i]) return v->slots[i] - 1;
    if (fs_grow((void **)&v->strs, &v->strs_cap, v->nstrs, sizeof *v->strs, 1024) != 0) return -1;
    const char *copy = arena_strndup(v->keys, s, len);
    if (!copy) return -1;
    v->strs[v->nstrs] = copy;
    v->slots[i] = (uint32_t)++v->nstrs;
    return (int64_t)v->nstrs - 1;
}

/* The id of s, or -1 when it was never interned. */
static int64_t lookup(const velocity *v, const char *s) {
    if (!v->nslots) return -1;
    size_t i = slot_find(v, s, strlen(s));
    return v->slots[i] ? (int64_t)v->slots[i] - 1 : -1;
}

int velocity_add(velocity *v, const velocity_event *e) {
    assert(!v->built);
    if (!e->key || !e->key[0]) return 0; /* no identifier: nothing to count */
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        vel_event *ev = realloc(v->ev, cap * sizeof *ev);
        if (!ev) return -1;
        v->ev = ev;
        v->cap = cap;
    }
    /* no counterpart (a payment without a card, say) is not a distinct one: the bucket windows
     * skip it too */
    int64_t key = intern(v, e->key);
    int64_t user = e->user_id && e->user_id[0] ? intern(v, e->user_id) : (int64_t)NO_COUNTERPART;
    if (key < 0 || user < 0) return -1;
    v->ev[v->n++] = (vel_event){(uint32_t)e->entity, (uint32_t)key, (uint32_t)user, e->time_ms,
                                e->amount_minor};
    return 0;
}

static int ev_cmp3(uint32_t ea, uint32_t ka, int64_t ta, uint32_t eb, uint32_t kb, int64_t tb) {
    if (ea != eb) return ea < eb ? -1 : 1;
    if (ka != kb) return ka < kb ? -1 : 1;
    if (ta != tb) return ta < tb ? -1 : 1;
    return 0;
}

static int ev_cmp(const void *a, const void *b) {
    const vel_event *x = a, *y = b;
    return ev_cmp3(x->entity, x->key, x->time_ms, y->entity, y->key, y->time_ms);
}

int velocity_build(velocity *v) {
    fs_qsort(v->ev, v->n, sizeof *v->ev, ev_cmp);
    if (v->prefix_cap < v->n + 1) {
        int64_t *p = realloc(v->prefix, (v->n + 1) * sizeof *p);
        if (!p) return -1;
        v->prefix = p;
        v->prefix_cap = v->n + 1;
    }
    v->prefix[0] = 0;
    for (size_t i = 0; i < v->n; i++) v->prefix[i + 1] = v->prefix[i] + v->ev[i].amount_minor;
    if (v->seen_cap < v->nstrs) {
        uint32_t *seen = calloc(v->nstrs, sizeof *seen);
        if (!seen) return -1;
        free(v->seen);
        v->seen = seen;
        v->seen_cap = v->nstrs;
        v->stamp = 0;
    }
    v->built = true;
    return 0;
}

/* Index of the first event after (entity, key, t) in sort order. */
static size_t upper_bound(const velocity *v, uint32_t entity, uint32_t key, int64_t t) {
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const vel_event *e = &v->ev[mid];
        if (ev_cmp3(e->entity, e->key, e->time_ms, entity, key, t) <= 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int64_t distinct_users(velocity *v, size_t lo, size_t hi) {
    if (++v->stamp == 0) { /* wrapped: old stamps could collide */
        memset(v->seen, 0, v->seen_cap * sizeof *v->seen);
        v->stamp = 1;
    }
    int64_t d = 0;
    for (size_t i = lo; i < hi; i++) {
        uint32_t u = v->ev[i].user;
        if (u == NO_COUNTERPART) continue;
        if (v->seen[u] != v->stamp) {
            v->seen[u] = v->stamp;
            d++;
        }
    }
    return d;
}

void velocity_window(velocity *v, rules_entity entity, const char *key, int64_t t_ms,
                     int64_t window_ms, velocity_agg *out) {
    assert(v->built);
    *out = (velocity_agg){0, 0, 0};
    int64_t k = lookup(v, key);
    if (k < 0 || !key[0]) return;
    /* (t - w, t]: everything up to and including t, minus everything up to and including t - w. */
    size_t hi = upper_bound(v, (uint32_t)entity, (uint32_t)k, t_ms);
    size_t lo = upper_bound(v, (uint32_t)entity, (uint32_t)k, t_ms - window_ms);
    if (hi <= lo) return;
    out->count = (int64_t)(hi - lo);
    out->sum_minor = v->prefix[hi] - v->prefix[lo];
    out->distinct_users = distinct_users(v, lo, hi);
}

void velocity_features(velocity *v, const rules *r, const pay_payment *p, rules_features *f) {
    char keys[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1];
    bool have[RULES_ENT_COUNT] = {false};
    f->p = p;
    for (size_t i = 0; i < rules_window_count(r) && i < RULES_MAX_FEATURE_WINDOWS; i++) {
        const rules_window *w = rules_window_at(r, i);
        if (!velocity_exact(w)) continue; /* bucket windows: buckets.h */
        if (!have[w->entity]) {
            rules_entity_key(p, w->entity, keys[w->entity], sizeof keys[w->entity]);
            have[w->entity] = true;
        }
        velocity_agg a;
        velocity_window(v, w->entity, keys[w->entity], p->event_time_ms, w->window_ms, &a);
        f->count[i] = a.count;
        f->sum_minor[i] = a.sum_minor;
        f->distinct_users[i] = a.distinct_users;
    }
}

bool velocity_exact(const rules_window *w) {
    return w->offset_ms == 0 && w->window_ms <= RULES_EXACT_WINDOW_MS;
}

int64_t velocity_max_window_ms(const rules *r) {
    int64_t max = 0;
    for (size_t i = 0; i < rules_window_count(r); i++) {
        const rules_window *w = rules_window_at(r, i);
        if (velocity_exact(w) && w->window_ms > max) max = w->window_ms;
    }
    return max;
}

/* Largest window per entity (0: the entity is not used by any rule). */
static void entity_windows(const rules *r, int64_t maxw[RULES_ENT_COUNT]) {
    for (int e = 0; e < RULES_ENT_COUNT; e++) maxw[e] = 0;
    for (size_t i = 0; i < rules_window_count(r); i++) {
        const rules_window *w = rules_window_at(r, i);
        if (velocity_exact(w) && w->window_ms > maxw[w->entity]) maxw[w->entity] = w->window_ms;
    }
}

static int range_cmp(const void *a, const void *b) {
    const velocity_range *x = a, *y = b;
    if (x->entity != y->entity) return x->entity < y->entity ? -1 : 1;
    return strcmp(x->key, y->key);
}

/* Sorts by (entity, key) and merges equal keys into one span. Returns the new length. */
static size_t ranges_merge(velocity_range *rg, size_t n) {
    fs_qsort(rg, n, sizeof *rg, range_cmp);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (out > 0 && range_cmp(&rg[out - 1], &rg[i]) == 0) {
            if (rg[i].from_ms < rg[out - 1].from_ms) rg[out - 1].from_ms = rg[i].from_ms;
            if (rg[i].to_ms > rg[out - 1].to_ms) rg[out - 1].to_ms = rg[i].to_ms;
        } else {
            if (out != i) rg[out] = rg[i];
            out++;
        }
    }
    return out;
}

velocity_range *velocity_ranges(const rules *r, const pay_payment *const *ps, size_t n,
                                size_t *nout) {
    int64_t maxw[RULES_ENT_COUNT];
    entity_windows(r, maxw);
    *nout = 0;
    if (n == 0 || rules_window_count(r) == 0) return NULL;
    velocity_range *rg = malloc(n * RULES_ENT_COUNT * sizeof *rg);
    if (!rg) {
        *nout = SIZE_MAX;
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        for (int e = 0; e < RULES_ENT_COUNT; e++) {
            if (maxw[e] == 0) continue;
            rules_entity_key(ps[i], (rules_entity)e, rg[k].key, sizeof rg[k].key);
            if (!rg[k].key[0]) continue;
            rg[k].entity = (rules_entity)e;
            rg[k].from_ms = ps[i]->event_time_ms - maxw[e];
            rg[k].to_ms = ps[i]->event_time_ms;
            k++;
        }
    }
    *nout = ranges_merge(rg, k);
    if (*nout == 0) {
        free(rg);
        return NULL;
    }
    return rg;
}

size_t velocity_events_of(const rules *r, const pay_payment *p, velocity_event out[RULES_ENT_COUNT],
                          char keybuf[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1],
                          char cpbuf[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1]) {
    int64_t maxw[RULES_ENT_COUNT];
    entity_windows(r, maxw);
    size_t k = 0;
    for (int e = 0; e < RULES_ENT_COUNT; e++) {
        if (maxw[e] == 0) continue;
        rules_entity_key(p, (rules_entity)e, keybuf[k], VELOCITY_KEY_MAX + 1);
        if (!keybuf[k][0]) continue;
        rules_counterpart(p, (rules_entity)e, cpbuf[k], VELOCITY_KEY_MAX + 1);
        out[k] = (velocity_event){(rules_entity)e, keybuf[k], cpbuf[k], p->payment_id,
                                  p->event_time_ms, p->amount_minor};
        k++;
    }
    return k;
}
