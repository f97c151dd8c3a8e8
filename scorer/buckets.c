/* buckets: bucketed event-time windows (see buckets.h).
 *
 * Representation: stored buckets and the batch's events are two arrays, each sorted after
 * buckets_build() by (entity, width, key, time); a window is a binary search to its first bucket
 * and a short scan (at most 31 buckets), plus a scan over the batch's events of that key. Keys
 * are copied into an arena so that the caller's buffers (a PGresult) may go away. */
#include "buckets.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "fsutil.h"

typedef struct bk_event { /* one payment of the batch, per (entity, width) */
    rules_entity entity;
    int64_t width_ms;
    const char *key;
    int64_t time_ms;
    int64_t amount_minor;
    int64_t cp; /* counterpart hash, 0 = none */
} bk_event;

struct buckets {
    buckets_row *rows; /* stored */
    size_t nrows, caprows;
    bk_event *ev;      /* the batch's */
    size_t nev, capev;
    buckets_row *inc;  /* increments, built on demand */
    size_t capinc;
    arena *keys;       /* every key string of the batch */
    bool built;
};

/* ---- arithmetic ------------------------------------------------------------------------------- */

bool buckets_window(const rules_window *w) {
    return w->window_ms > RULES_EXACT_WINDOW_MS || w->offset_ms != 0;
}

int64_t buckets_width_ms(const rules_window *w) {
    /* by reach, not length: a delayed window must live as long as day buckets do */
    return w->window_ms + w->offset_ms <= BUCKETS_DAY_MS ? BUCKETS_HOUR_MS : BUCKETS_DAY_MS;
}

int64_t buckets_start(int64_t t_ms, int64_t width_ms) {
    int64_t q = t_ms / width_ms;
    if (t_ms % width_ms != 0 && t_ms < 0) q--; /* floor, not truncation */
    return q * width_ms;
}

void buckets_span(const rules_window *w, int64_t t_ms, int64_t *first_ms, int64_t *last_ms) {
    int64_t width = buckets_width_ms(w), n = (w->window_ms + width - 1) / width;
    *last_ms = buckets_start(t_ms - w->offset_ms, width);
    *first_ms = *last_ms - (n - 1) * width;
}

int64_t buckets_cp_hash(const char *s) { /* FNV-1a, 63 bits: never negative, never 0 for "" */
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    h &= (uint64_t)INT64_MAX;
    return h ? (int64_t)h : 1;
}

int64_t buckets_max_span_ms(const rules *r, int64_t width_ms) {
    int64_t max = 0;
    for (size_t i = 0; i < rules_window_count(r); i++) {
        const rules_window *w = rules_window_at(r, i);
        if (!buckets_window(w) || buckets_width_ms(w) != width_ms) continue;
        if (w->window_ms + w->offset_ms > max) max = w->window_ms + w->offset_ms;
    }
    return max;
}

/* ---- lifecycle -------------------------------------------------------------------------------- */

buckets *buckets_new(void) {
    buckets *b = calloc(1, sizeof(buckets));
    if (b && !(b->keys = arena_new())) {
        free(b);
        return NULL;
    }
    return b;
}

void buckets_destroy(buckets *b) {
    if (!b) return;
    arena_destroy(b->keys);
    free(b->rows);
    free(b->ev);
    free(b->inc);
    free(b);
}

void buckets_reset(buckets *b) {
    arena_reset(b->keys);
    b->nrows = 0;
    b->nev = 0;
    b->built = false;
}

/* ---- input ------------------------------------------------------------------------------------ */

int buckets_load(buckets *b, const buckets_row *row) {
    assert(!b->built);
    if (!row->key[0]) return 0;
    if (fs_grow((void **)&b->rows, &b->caprows, b->nrows, sizeof *b->rows, 1024) != 0) return -1;
    buckets_row *r = &b->rows[b->nrows];
    *r = *row;
    if (r->ncps > RULES_DISTINCT_CAP) r->ncps = RULES_DISTINCT_CAP;
    if (!(r->key = arena_strdup(b->keys, row->key))) return -1;
    b->nrows++;
    return 0;
}

/* Distinct (entity, width) pairs of r's bucket windows; returns how many. */
static size_t entity_widths(const rules *r, rules_entity ent[], int64_t width[], size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < rules_window_count(r); i++) {
        const rules_window *w = rules_window_at(r, i);
        if (!buckets_window(w)) continue;
        size_t j = 0;
        while (j < n && !(ent[j] == w->entity && width[j] == buckets_width_ms(w))) j++;
        if (j < n || n == max) continue;
        ent[n] = w->entity;
        width[n++] = buckets_width_ms(w);
    }
    return n;
}

int buckets_add_payment(buckets *b, const rules *r, const pay_payment *p) {
    rules_entity ent[RULES_MAX_FEATURE_WINDOWS];
    int64_t width[RULES_MAX_FEATURE_WINDOWS];
    char key[VELOCITY_KEY_MAX + 1], cp[VELOCITY_KEY_MAX + 1];
    assert(!b->built);
    size_t n = entity_widths(r, ent, width, RULES_MAX_FEATURE_WINDOWS);
    for (size_t i = 0; i < n; i++) {
        rules_entity_key(p, ent[i], key, sizeof key);
        if (!key[0]) continue;
        rules_counterpart(p, ent[i], cp, sizeof cp);
        if (fs_grow((void **)&b->ev, &b->capev, b->nev, sizeof *b->ev, 1024) != 0) return -1;
        bk_event *e = &b->ev[b->nev];
        *e = (bk_event){ent[i], width[i], arena_strdup(b->keys, key), p->event_time_ms, p->amount_minor,
                        cp[0] ? buckets_cp_hash(cp) : 0};
        if (!e->key) return -1;
        b->nev++;
    }
    return 0;
}

static int cmp4(rules_entity ea, int64_t wa, const char *ka, int64_t ta, rules_entity eb,
                int64_t wb, const char *kb, int64_t tb) {
    if (ea != eb) return ea < eb ? -1 : 1;
    if (wa != wb) return wa < wb ? -1 : 1;
    int c = strcmp(ka, kb);
    if (c) return c;
    return ta < tb ? -1 : ta > tb;
}

static int row_cmp(const void *a, const void *b) {
    const buckets_row *x = a, *y = b;
    return cmp4(x->entity, x->width_ms, x->key, x->start_ms, y->entity, y->width_ms, y->key,
                y->start_ms);
}

static int ev_cmp(const void *a, const void *b) {
    const bk_event *x = a, *y = b;
    return cmp4(x->entity, x->width_ms, x->key, x->time_ms, y->entity, y->width_ms, y->key,
                y->time_ms);
}

int buckets_build(buckets *b) {
    fs_qsort(b->rows, b->nrows, sizeof *b->rows, row_cmp);
    fs_qsort(b->ev, b->nev, sizeof *b->ev, ev_cmp);
    b->built = true;
    return 0;
}

/* ---- windows ---------------------------------------------------------------------------------- */

/* First stored row >= (entity, width, key, start). */
static size_t rows_lower(const buckets *b, rules_entity e, int64_t w, const char *k, int64_t t) {
    size_t lo = 0, hi = b->nrows;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const buckets_row *r = &b->rows[mid];
        if (cmp4(r->entity, r->width_ms, r->key, r->start_ms, e, w, k, t) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static size_t ev_lower(const buckets *b, rules_entity e, int64_t w, const char *k, int64_t t) {
    size_t lo = 0, hi = b->nev;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const bk_event *x = &b->ev[mid];
        if (cmp4(x->entity, x->width_ms, x->key, x->time_ms, e, w, k, t) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

typedef struct cpset {
    size_t n;
    int64_t v[RULES_DISTINCT_CAP * 8];
} cpset;

static void cpset_add(cpset *s, int64_t h) {
    if (!h) return;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == h) return;
    if (s->n < sizeof s->v / sizeof s->v[0]) s->v[s->n++] = h;
}

/* Window i of r for p (key already computed). */
static void window_of(const buckets *b, const rules_window *w, const char *key, int64_t t,
                      int64_t *count, int64_t *sum, int64_t *distinct) {
    int64_t first, last, width = buckets_width_ms(w);
    cpset cps = {0};
    buckets_span(w, t, &first, &last);
    *count = *sum = 0;
    for (size_t i = rows_lower(b, w->entity, width, key, first); i < b->nrows; i++) {
        const buckets_row *r = &b->rows[i];
        if (r->entity != w->entity || r->width_ms != width || strcmp(r->key, key) != 0 ||
            r->start_ms > last)
            break;
        *count += r->count;
        *sum += r->sum_minor;
        for (size_t k = 0; k < r->ncps; k++) cpset_add(&cps, r->cps[k]);
    }
    /* the batch's events of that key: in the span's buckets and not after t (event order) */
    int64_t end = last + width - 1 < t ? last + width - 1 : t;
    for (size_t i = ev_lower(b, w->entity, width, key, first); i < b->nev; i++) {
        const bk_event *e = &b->ev[i];
        if (e->entity != w->entity || e->width_ms != width || strcmp(e->key, key) != 0 ||
            e->time_ms > end)
            break;
        (*count)++;
        *sum += e->amount_minor;
        cpset_add(&cps, e->cp);
    }
    *distinct = (int64_t)cps.n;
}

void buckets_features(buckets *b, const rules *r, const pay_payment *p, rules_features *f) {
    char key[VELOCITY_KEY_MAX + 1];
    assert(b->built);
    f->p = p;
    for (size_t i = 0; i < rules_window_count(r); i++) {
        const rules_window *w = rules_window_at(r, i);
        if (!buckets_window(w)) continue;
        rules_entity_key(p, w->entity, key, sizeof key);
        if (!key[0]) {
            f->count[i] = f->sum_minor[i] = f->distinct_users[i] = 0;
            continue;
        }
        window_of(b, w, key, p->event_time_ms, &f->count[i], &f->sum_minor[i],
                  &f->distinct_users[i]);
    }
}

/* ---- output ----------------------------------------------------------------------------------- */

static void row_add_cp(buckets_row *r, int64_t h) {
    if (!h) return;
    for (size_t i = 0; i < r->ncps; i++)
        if (r->cps[i] == h) return;
    if (r->ncps < RULES_DISTINCT_CAP) r->cps[r->ncps++] = h;
}

ptrdiff_t buckets_increments(buckets *b, const buckets_row **out) {
    size_t n = 0;
    assert(b->built);
    for (size_t i = 0; i < b->nev; i++) {
        const bk_event *e = &b->ev[i];
        int64_t start = buckets_start(e->time_ms, e->width_ms);
        buckets_row *last = n ? &b->inc[n - 1] : NULL;
        if (!last || last->entity != e->entity || last->width_ms != e->width_ms ||
            strcmp(last->key, e->key) != 0 || last->start_ms != start) {
            if (fs_grow((void **)&b->inc, &b->capinc, n, sizeof *b->inc, 1024) != 0) return -1;
            last = &b->inc[n++];
            *last = (buckets_row){.entity = e->entity, .key = e->key, .width_ms = e->width_ms,
                                  .start_ms = start};
        }
        last->count++;
        last->sum_minor += e->amount_minor;
        row_add_cp(last, e->cp);
    }
    *out = b->inc;
    return (ptrdiff_t)n;
}

/* ---- ranges ----------------------------------------------------------------------------------- */

static int range_cmp(const void *a, const void *b) {
    const buckets_range *x = a, *y = b;
    return cmp4(x->entity, x->width_ms, x->key, 0, y->entity, y->width_ms, y->key, 0);
}

static size_t ranges_merge(buckets_range *rg, size_t n) {
    size_t out = 0;
    fs_qsort(rg, n, sizeof *rg, range_cmp);
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

buckets_range *buckets_ranges(const rules *r, const pay_payment *const *ps, size_t n,
                              size_t *nout) {
    size_t nw = rules_window_count(r), k = 0;
    *nout = 0;
    if (n == 0 || nw == 0) return NULL;
    buckets_range *rg = malloc(n * nw * sizeof *rg);
    if (!rg) {
        *nout = SIZE_MAX;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < nw; j++) {
            const rules_window *w = rules_window_at(r, j);
            if (!buckets_window(w)) continue;
            rules_entity_key(ps[i], w->entity, rg[k].key, sizeof rg[k].key);
            if (!rg[k].key[0]) continue;
            rg[k].entity = w->entity;
            rg[k].width_ms = buckets_width_ms(w);
            buckets_span(w, ps[i]->event_time_ms, &rg[k].from_ms, &rg[k].to_ms);
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
