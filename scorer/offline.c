/* offline: features over a file of events (see offline.h). */
#include "offline.h"

#include <stdlib.h>
#include <string.h>

#include "buckets.h"
#include "fsutil.h"
#include "fvec.h"
#include "log.h"
#include "outcome.h"
#include "vault.h"
#include "velocity.h"

/* A label of the outcomes file. */
typedef struct offline_label {
    char payment_id[37];
    char outcome_id[37]; /* "" when the message has none */
    int line;            /* in the outcomes file */
    vault_label l;
    bool loaded;  /* its payment's labels are in the vault (a payment repeated in the file once) */
    bool dropped; /* not stored by the scorer (offline_settle) */
} offline_label;

typedef struct offline_state {
    velocity *v;
    buckets *b;
    vault *vt;
    pay_payment *ps;
    size_t n, cap;
    offline_label *labels;
    size_t nlabels, caplabels;
    size_t redelivered, conflicts; /* labels left out by offline_settle */
    int lineno;                    /* of the line being read */
} offline_state;

/* One line's JSON (from its first '{') into st; 0, or -1 with err. */
typedef int (*offline_line_fn)(const char *json, offline_state *st, char *err, size_t esz);

static int offline_event(const char *json, offline_state *st, char *err, size_t esz) {
    if (fs_grow((void **)&st->ps, &st->cap, st->n, sizeof *st->ps, 1024) != 0)
        return snprintf(err, esz, "out of memory"), -1;
    if (pay_event_decode(json, strlen(json), &st->ps[st->n], err, esz) != 0) {
        pay_payment_clear(&st->ps[st->n]);
        return -1;
    }
    st->n++;
    return 0;
}

/* A payment_outcomes message, checked as the scorer's outcome consumer checks it. */
static int offline_outcome(const char *json, offline_state *st, char *err, size_t esz) {
    const char *code;
    json_t *row = outcome_decode(json, strlen(json), &code, err, esz);
    if (!row) return -1;
    int rc = fs_grow((void **)&st->labels, &st->caplabels, st->nlabels, sizeof *st->labels, 256);
    if (rc == 0) {
        offline_label *x = &st->labels[st->nlabels++];
        const char *oid = json_string_value(json_object_get(row, "outcome_id"));
        snprintf(x->payment_id, sizeof x->payment_id, "%s",
                 json_string_value(json_object_get(row, "payment_id")));
        snprintf(x->outcome_id, sizeof x->outcome_id, "%s", oid ? oid : "");
        x->line = st->lineno;
        x->l.outcome = (vault_outcome)outcome_rank(json_string_value(json_object_get(row, "outcome")));
        x->l.known_ms = json_integer_value(json_object_get(row, "known_at_ms"));
        x->loaded = x->dropped = false;
    } else {
        snprintf(err, esz, "out of memory");
    }
    json_decref(row);
    return rc;
}

/* Every line of path with a '{' through fn; "path:line: why" in errstr on failure. */
static int offline_read(const char *path, offline_line_fn fn, offline_state *st, char *errstr,
                        size_t errstr_size) {
    FILE *f = fopen(path, "r");
    char *line = NULL, err[256];
    size_t linecap = 0;
    int rc = 0, lineno = 0;
    if (!f) {
        snprintf(errstr, errstr_size, "%s: cannot open", path);
        return -1;
    }
    while (rc == 0 && getline(&line, &linecap, f) >= 0) {
        const char *json = strchr(line, '{');
        st->lineno = ++lineno;
        if (json && (rc = fn(json, st, err, sizeof err)) != 0)
            snprintf(errstr, errstr_size, "%s:%d: %s", path, lineno, err);
    }
    free(line);
    fclose(f);
    return rc;
}

/* By outcome_id, then in file order (the labels array's). */
static int label_id_cmp(const void *a, const void *b) {
    const offline_label *x = *(offline_label *const *)a, *y = *(offline_label *const *)b;
    int c = strcmp(x->outcome_id, y->outcome_id);
    return c ? c : (x > y) - (x < y);
}

/* Label x, left out as the outcome_conflict the scorer dead-letters: first stands under its id. */
static void offline_conflict(const offline_label *x, const offline_label *first, const char *path) {
    const char *oc = outcome_name((int)x->l.outcome), *first_oc = outcome_name((int)first->l.outcome);
    log_fields(LOG_WARN, "outcome_conflict",
               json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s}", "file", path, "line", x->line,
                         "outcome_id", x->outcome_id, "payment_id", x->payment_id, "outcome", oc,
                         "first_payment_id", first->payment_id, "first_outcome", first_oc),
               "%s:%d: outcome_id %s names %s for payment %s (line %d); this label, %s for payment "
               "%s, is left out, as the scorer dead-letters it", path, x->line, x->outcome_id,
               first_oc, first->payment_id, first->line, oc, x->payment_id);
}

/* Leaves out the labels the scorer does not store (store_insert_outcomes): under one outcome_id
 * the first label of the file stands; a later one with its payment_id and outcome is a
 * redelivery (absorbed: its known_at would count again here), any other an outcome_conflict
 * (dead-lettered by the scorer; logged and counted here). Returns 0 or -1 (out of memory). */
static int offline_settle(offline_state *st, const char *path) {
    offline_label **v = malloc((st->nlabels ? st->nlabels : 1) * sizeof *v);
    size_t m = 0, kept = 0;
    if (!v) return -1;
    for (size_t i = 0; i < st->nlabels; i++)
        if (st->labels[i].outcome_id[0]) v[m++] = &st->labels[i];
    fs_qsort(v, m, sizeof *v, label_id_cmp);
    for (size_t a = 0, b; a < m; a = b)
        for (b = a + 1; b < m && strcmp(v[b]->outcome_id, v[a]->outcome_id) == 0; b++) {
            v[b]->dropped = true;
            if (strcmp(v[b]->payment_id, v[a]->payment_id) == 0 && v[b]->l.outcome == v[a]->l.outcome)
                st->redelivered++;
            else {
                st->conflicts++;
                offline_conflict(v[b], v[a], path);
            }
        }
    free(v);
    for (size_t i = 0; i < st->nlabels; i++)
        if (!st->labels[i].dropped) st->labels[kept++] = st->labels[i];
    st->nlabels = kept;
    return 0;
}

static int label_cmp(const void *a, const void *b) {
    return strcmp(((const offline_label *)a)->payment_id, ((const offline_label *)b)->payment_id);
}

/* The first label of payment_id in the sorted labels (nlabels when it has none). */
static size_t label_lower(const offline_state *st, const char *payment_id) {
    size_t lo = 0, hi = st->nlabels;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(st->labels[mid].payment_id, payment_id) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < st->nlabels && strcmp(st->labels[lo].payment_id, payment_id) == 0 ? lo : st->nlabels;
}

/* The links of each payment's labels, as the outcome consumer writes them once the payment is
 * persisted; labels of payments not in the file stay out (the consumer keeps them pending). */
static int offline_links(offline_state *st) {
    vault_label *ls = NULL;
    size_t capls = 0, used = 0;
    int rc = 0;
    if (st->nlabels == 0) return 0;
    fs_qsort(st->labels, st->nlabels, sizeof *st->labels, label_cmp);
    for (size_t i = 0; i < st->n && rc == 0; i++) {
        size_t lo = label_lower(st, st->ps[i].payment_id), k = 0;
        if (lo == st->nlabels || st->labels[lo].loaded) continue;
        for (; lo + k < st->nlabels && rc == 0; k++) {
            offline_label *x = &st->labels[lo + k];
            if (strcmp(x->payment_id, st->ps[i].payment_id) != 0) break;
            x->loaded = true;
            if ((rc = fs_grow((void **)&ls, &capls, k, sizeof *ls, 8)) == 0) ls[k] = x->l;
        }
        if (rc == 0) rc = vault_load_labels(st->vt, &st->ps[i], ls, k);
        used += k;
    }
    free(ls);
    if (rc == 0)
        log_fields(LOG_INFO, "offline_labels",
                   json_pack("{s:I, s:I, s:I, s:I}", "labels", (json_int_t)st->nlabels, "pending",
                             (json_int_t)(st->nlabels - used), "redelivered",
                             (json_int_t)st->redelivered, "conflicts", (json_int_t)st->conflicts),
                   "%zu labels, %zu of them of payments not in the file (ignored: the scorer keeps "
                   "them pending); left out as the scorer does: %zu redelivered under their "
                   "outcome_id, %zu outcome_conflict", st->nlabels, st->nlabels - used,
                   st->redelivered, st->conflicts);
    return rc;
}

/* The whole file as one batch. */
static int offline_add(const rules *r, offline_state *st) {
    velocity_event ev[RULES_ENT_COUNT];
    char keys[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1], cps[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1];
    for (size_t i = 0; i < st->n; i++) {
        size_t k = velocity_events_of(r, &st->ps[i], ev, keys, cps);
        for (size_t j = 0; j < k; j++)
            if (velocity_add(st->v, &ev[j]) != 0) return -1;
        if (buckets_add_payment(st->b, r, &st->ps[i]) != 0 || vault_add_payment(st->vt, &st->ps[i]) != 0)
            return -1;
    }
    if (offline_links(st) != 0) return -1;
    return velocity_build(st->v) || buckets_build(st->b) || vault_build(st->vt) ? -1 : 0;
}

static void offline_print(const rules *r, offline_state *st, FILE *out) {
    for (size_t i = 0; i < st->n; i++) {
        rules_features f;
        rules_result res;
        fvec_compute(st->v, st->b, st->vt, r, &st->ps[i], &f);
        rules_eval(r, &f, &res);
        json_t *o = json_pack("{s:s, s:s, s:i, s:o}", "payment_id", st->ps[i].payment_id,
                              "decision", res.decision, "score", res.score, "features",
                              rules_features_json(r, &f));
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (text) fprintf(out, "%s\n", text);
        free(text);
        json_decref(o);
    }
}

int offline_run(const char *path, const char *outcomes_path, const rules *r, FILE *out,
                char *errstr, size_t errstr_size) {
    offline_state st = {.v = velocity_new(), .b = buckets_new(), .vt = vault_new()};
    int rc = -1;
    if (!st.v || !st.b || !st.vt) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    if (offline_read(path, offline_event, &st, errstr, errstr_size) != 0) goto done;
    if (outcomes_path && outcomes_path[0] &&
        offline_read(outcomes_path, offline_outcome, &st, errstr, errstr_size) != 0)
        goto done;
    if (offline_settle(&st, outcomes_path) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    if (offline_add(r, &st) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    offline_print(r, &st, out);
    rc = 0;
done:
    for (size_t i = 0; i < st.n; i++) pay_payment_clear(&st.ps[i]);
    free(st.ps);
    free(st.labels);
    velocity_destroy(st.v);
    buckets_destroy(st.b);
    vault_destroy(st.vt);
    return rc;
}
