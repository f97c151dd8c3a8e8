/* vault: the risk vault and outcome links of one batch (see vault.h).
 *
 * Three sorted arrays: stored rows by (entity, key), links by (entity, key, payment_id, known_ms,
 * outcome), and the batch's payment occurrences by (entity, key, time, payment_id). Lookups are
 * binary searches. */
#include "vault.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buckets.h"
#include "arena.h"
#include "fsutil.h"

typedef struct vt_event {
    rules_entity entity;
    const char *key;
    int64_t time_ms;
    const char *payment_id;
} vt_event;

struct vault {
    vault_row *rows;
    size_t nrows, caprows;
    vault_link *links;
    size_t nlinks, caplinks;
    vt_event *ev;
    size_t nev, capev;
    vault_row *inc;
    size_t capinc;
    arena *keys; /* every key and payment id string of the batch */
    bool built;
};

vault *vault_new(void) {
    vault *v = calloc(1, sizeof(vault));
    if (v && !(v->keys = arena_new())) {
        free(v);
        return NULL;
    }
    return v;
}

void vault_destroy(vault *v) {
    if (!v) return;
    arena_destroy(v->keys);
    free(v->rows);
    free(v->links);
    free(v->ev);
    free(v->inc);
    free(v);
}

void vault_reset(vault *v) {
    arena_reset(v->keys);
    v->nrows = v->nlinks = v->nev = 0;
    v->built = false;
}

/* ---- keys ------------------------------------------------------------------------------------- */

static int key_cmp(const void *a, const void *b) {
    const vault_key *x = a, *y = b;
    if (x->entity != y->entity) return x->entity < y->entity ? -1 : 1;
    return strcmp(x->key, y->key);
}

vault_key *vault_keys(const pay_payment *const *ps, size_t n, bool with_merchants, size_t *nout) {
    size_t k = 0, out = 0;
    *nout = 0;
    if (n == 0) return NULL;
    vault_key *keys = malloc(n * RULES_ENT_COUNT * sizeof *keys);
    if (!keys) {
        *nout = SIZE_MAX;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        for (int e = 0; e < RULES_ENT_COUNT; e++) {
            const char *key = e == RULES_ENT_MERCHANT ? (with_merchants ? ps[i]->merchant_id : "")
                                                      : rules_vault_key(ps[i], (rules_entity)e);
            if (!key[0]) continue;
            keys[k].entity = (rules_entity)e;
            snprintf(keys[k].key, sizeof keys[k].key, "%s", key);
            k++;
        }
    }
    fs_qsort(keys, k, sizeof *keys, key_cmp);
    for (size_t i = 0; i < k; i++)
        if (out == 0 || key_cmp(&keys[out - 1], &keys[i]) != 0) keys[out++] = keys[i];
    if (out == 0) {
        free(keys);
        return NULL;
    }
    *nout = out;
    return keys;
}

/* ---- input ------------------------------------------------------------------------------------ */

int vault_load_row(vault *v, const vault_row *row) {
    assert(!v->built);
    if (fs_grow((void **)&v->rows, &v->caprows, v->nrows, sizeof *v->rows, 512) != 0) return -1;
    v->rows[v->nrows] = *row;
    if (!(v->rows[v->nrows].key = arena_strdup(v->keys, row->key))) return -1;
    v->nrows++;
    return 0;
}

int vault_load_link(vault *v, const vault_link *link) {
    assert(!v->built);
    assert(link->payment_id);
    if (fs_grow((void **)&v->links, &v->caplinks, v->nlinks, sizeof *v->links, 512) != 0) return -1;
    vault_link *l = &v->links[v->nlinks];
    *l = *link;
    if (!(l->key = arena_strdup(v->keys, link->key)) ||
        !(l->payment_id = arena_strdup(v->keys, link->payment_id)))
        return -1;
    v->nlinks++;
    return 0;
}

int vault_add_payment(vault *v, const pay_payment *p) {
    assert(!v->built);
    for (int e = 0; e < RULES_ENT_COUNT; e++) {
        const char *key = rules_vault_key(p, (rules_entity)e);
        if (!key[0]) continue;
        if (fs_grow((void **)&v->ev, &v->capev, v->nev, sizeof *v->ev, 512) != 0) return -1;
        vt_event *x = &v->ev[v->nev];
        *x = (vt_event){(rules_entity)e, arena_strdup(v->keys, key), p->event_time_ms,
                        arena_strdup(v->keys, p->payment_id)};
        if (!x->key || !x->payment_id) return -1;
        v->nev++;
    }
    return 0;
}

static bool genuine(vault_outcome o) { return o == VAULT_LEGITIMATE || o == VAULT_FALSE_POSITIVE; }

int vault_load_labels(vault *v, const pay_payment *p, const vault_label *labels, size_t n) {
    int64_t first_fraud = INT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (!genuine(labels[i].outcome) && labels[i].known_ms < first_fraud)
            first_fraud = labels[i].known_ms;
    for (size_t i = 0; i < n; i++) {
        if (genuine(labels[i].outcome) && labels[i].known_ms < first_fraud) continue; /* ends nothing */
        for (int e = 0; e < RULES_ENT_COUNT; e++) {
            const char *key = e == RULES_ENT_MERCHANT ? p->merchant_id
                                                      : rules_vault_key(p, (rules_entity)e);
            if (!key[0]) continue;
            vault_link l = {(rules_entity)e, key, labels[i].outcome, p->event_time_ms,
                            labels[i].known_ms, p->payment_id};
            if (vault_load_link(v, &l) != 0) return -1;
        }
    }
    return 0;
}

static int ek_cmp(rules_entity ea, const char *ka, rules_entity eb, const char *kb) {
    if (ea != eb) return ea < eb ? -1 : 1;
    return strcmp(ka, kb);
}

static int row_cmp(const void *a, const void *b) {
    const vault_row *x = a, *y = b;
    return ek_cmp(x->entity, x->key, y->entity, y->key);
}

/* (entity, key, payment_id): one labelled payment of a key. */
static int link_payment_cmp(const vault_link *x, const vault_link *y) {
    int c = ek_cmp(x->entity, x->key, y->entity, y->key);
    return c ? c : strcmp(x->payment_id, y->payment_id);
}

/* (entity, key, payment_id, known_ms, outcome): a payment's labels in the order they supersede
 * each other. */
static int link_cmp(const void *a, const void *b) {
    const vault_link *x = a, *y = b;
    int c = link_payment_cmp(x, y);
    if (c) return c;
    if (x->known_ms != y->known_ms) return x->known_ms < y->known_ms ? -1 : 1;
    return x->outcome < y->outcome ? -1 : x->outcome > y->outcome;
}

/* (entity, key, time, payment_id): event order within a key. */
static int ev_cmp(const void *a, const void *b) {
    const vt_event *x = a, *y = b;
    int c = ek_cmp(x->entity, x->key, y->entity, y->key);
    if (c) return c;
    if (x->time_ms != y->time_ms) return x->time_ms < y->time_ms ? -1 : 1;
    return strcmp(x->payment_id, y->payment_id);
}

int vault_build(vault *v) {
    fs_qsort(v->rows, v->nrows, sizeof *v->rows, row_cmp);
    fs_qsort(v->links, v->nlinks, sizeof *v->links, link_cmp);
    fs_qsort(v->ev, v->nev, sizeof *v->ev, ev_cmp);
    v->built = true;
    return 0;
}

/* ---- features --------------------------------------------------------------------------------- */

static const vault_row *row_find(const vault *v, rules_entity e, const char *key) {
    size_t lo = 0, hi = v->nrows;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = ek_cmp(v->rows[mid].entity, v->rows[mid].key, e, key);
        if (c == 0) return &v->rows[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static size_t link_lower(const vault *v, rules_entity e, const char *key) {
    size_t lo = 0, hi = v->nlinks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ek_cmp(v->links[mid].entity, v->links[mid].key, e, key) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static size_t ev_lower(const vault *v, rules_entity e, const char *key) {
    size_t lo = 0, hi = v->nev;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ek_cmp(v->ev[mid].entity, v->ev[mid].key, e, key) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The end of the links of the payment whose first link is at i (same entity, key, payment). */
static size_t link_payment_end(const vault *v, size_t i) {
    size_t j = i + 1;
    while (j < v->nlinks && link_payment_cmp(&v->links[i], &v->links[j]) == 0) j++;
    return j;
}

/* What the payment with links [i, end) counts as at t: confirmed fraud (chargeback) when such a
 * label known at t comes after its last false_positive/legitimate label known at t (the links are
 * in superseding order: known_ms, then precedence, so a fraud label wins a tie). */
static void link_counts_at(const vault *v, size_t i, size_t end, int64_t t, bool *fraud,
                           bool *chargeback) {
    *fraud = *chargeback = false;
    for (; i < end && v->links[i].known_ms <= t; i++) {
        switch (v->links[i].outcome) {
        case VAULT_FRAUD: *fraud = true; break;
        case VAULT_CHARGEBACK: *chargeback = true; break;
        case VAULT_LEGITIMATE:
        case VAULT_FALSE_POSITIVE: *fraud = *chargeback = false; break;
        }
    }
}

/* The batch's occurrences of (e, key) before p in event order. */
static void batch_before(const vault *v, rules_entity e, const char *key, const pay_payment *p,
                         rules_vault_info *out) {
    for (size_t i = ev_lower(v, e, key); i < v->nev; i++) {
        const vt_event *x = &v->ev[i];
        if (x->entity != e || strcmp(x->key, key) != 0) break;
        if (x->time_ms > p->event_time_ms ||
            (x->time_ms == p->event_time_ms && strcmp(x->payment_id, p->payment_id) >= 0))
            break;
        if (out->times_seen == 0 || x->time_ms < out->first_seen_ms) out->first_seen_ms = x->time_ms;
        if (x->time_ms > out->last_seen_ms) out->last_seen_ms = x->time_ms;
        out->times_seen++;
    }
}

static void vault_info(const vault *v, rules_entity e, const pay_payment *p, rules_vault_info *out) {
    const char *key = rules_vault_key(p, e);
    memset(out, 0, sizeof *out);
    if (!key[0]) return;
    out->present = true;
    const vault_row *row = row_find(v, e, key);
    /* The stored row keeps counts, not history: a late payment, older than every payment stored
     * for this identifier, was its first (new, age 0), not the (n+1)-th seen "in the future". */
    if (row && row->times_seen > 0 && row->first_seen_ms <= p->event_time_ms) {
        out->times_seen = row->times_seen;
        out->first_seen_ms = row->first_seen_ms;
        out->last_seen_ms = row->last_seen_ms;
    }
    batch_before(v, e, key, p, out);
    for (size_t i = link_lower(v, e, key), end; i < v->nlinks; i = end) {
        if (v->links[i].entity != e || strcmp(v->links[i].key, key) != 0) break;
        end = link_payment_end(v, i);
        bool fraud, chargeback;
        link_counts_at(v, i, end, p->event_time_ms, &fraud, &chargeback);
        out->fraud += fraud;
        out->chargebacks += chargeback;
    }
}

/* Confirmed frauds among p's merchant's payments in the (delayed) window, known at t. */
static int64_t merchant_frauds(const vault *v, const rules_window *w, const pay_payment *p) {
    int64_t first, last, n = 0, width = buckets_width_ms(w);
    buckets_span(w, p->event_time_ms, &first, &last);
    for (size_t i = link_lower(v, RULES_ENT_MERCHANT, p->merchant_id), end; i < v->nlinks; i = end) {
        if (v->links[i].entity != RULES_ENT_MERCHANT || strcmp(v->links[i].key, p->merchant_id) != 0)
            break;
        end = link_payment_end(v, i);
        bool fraud, chargeback;
        link_counts_at(v, i, end, p->event_time_ms, &fraud, &chargeback);
        int64_t b = buckets_start(v->links[i].event_ms, width);
        if (fraud && b >= first && b <= last) n++;
    }
    return n;
}

void vault_features(vault *v, const rules *r, const pay_payment *p, rules_features *f) {
    assert(v->built);
    for (int e = 0; e < RULES_ENT_COUNT; e++) {
        if (rules_vault_entity((rules_entity)e)) vault_info(v, (rules_entity)e, p, &f->vault[e]);
        else memset(&f->vault[e], 0, sizeof f->vault[e]);
    }
    for (size_t i = 0; i < rules_risk_count(r) && i < RULES_MAX_RISK; i++)
        f->risk_frauds[i] = merchant_frauds(v, rules_window_at(r, rules_risk_at(r, i)->window_index), p);
}

ptrdiff_t vault_increments(vault *v, const vault_row **out) {
    size_t n = 0;
    assert(v->built);
    for (size_t i = 0; i < v->nev; i++) {
        const vt_event *x = &v->ev[i];
        vault_row *last = n ? &v->inc[n - 1] : NULL;
        if (!last || last->entity != x->entity || strcmp(last->key, x->key) != 0) {
            if (fs_grow((void **)&v->inc, &v->capinc, n, sizeof *v->inc, 512) != 0) return -1;
            last = &v->inc[n++];
            *last = (vault_row){x->entity, x->key, x->time_ms, x->time_ms, 0};
        }
        if (x->time_ms < last->first_seen_ms) last->first_seen_ms = x->time_ms;
        if (x->time_ms > last->last_seen_ms) last->last_seen_ms = x->time_ms;
        last->times_seen++;
    }
    *out = v->inc;
    return (ptrdiff_t)n;
}
