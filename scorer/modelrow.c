/* modelrow: a model's feature row from rules_features (see modelrow.h). Every conversion below
 * mirrors model_features_row() in model.c on the JSON object: keep the two in step. */
#include "modelrow.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mcol {
    int ref;        /* the key of the column's name (rules_feature_find), or -1 */
    bool derived;   /* "<entity>_avg_minor_<N>s": used when the key itself is absent */
    int sum, count; /* derived: keys "<entity>_sum_minor_<N>s", "<entity>_count_<N>s", or -1 */
} mcol;

struct modelrow {
    const rules *r; /* borrowed */
    const model *m; /* borrowed (column names) */
    size_t n;
    mcol cols[];
};

/* A key's value as model.c's json_number() converts the JSON number: integers and reals to float
 * directly (never through a double for integers), absent = NAN. */
static float value_of(const rules *r, int ref, const rules_features *f) {
    int64_t iv = 0;
    double dv = 0;
    switch (ref < 0 ? RULES_VALUE_ABSENT : rules_feature_get(r, ref, f, &iv, &dv)) {
    case RULES_VALUE_INT: return (float)iv;
    case RULES_VALUE_REAL: return (float)dv;
    default: return NAN;
    }
}

/* The keys a derived average divides (model_feature_derived(), as model.c's derived()). */
static void bind_derived(const rules *r, const char *name, mcol *c) {
    char sum[MODEL_NAME_MAX], count[MODEL_NAME_MAX];
    c->derived = model_feature_derived(name, sum, count, sizeof sum);
    c->sum = c->derived ? rules_feature_find(r, sum) : -1;
    c->count = c->derived ? rules_feature_find(r, count) : -1;
}

modelrow *modelrow_new(const model *m, const rules *r, char *errstr, size_t errstr_size) {
    size_t n = model_feature_count(m);
    modelrow *x = calloc(1, sizeof *x + n * sizeof x->cols[0]);
    if (!x) {
        snprintf(errstr, errstr_size, "model columns: out of memory");
        return NULL;
    }
    x->r = r;
    x->m = m;
    x->n = n;
    for (size_t i = 0; i < n; i++) {
        const char *name = model_feature_name(m, i);
        x->cols[i].ref = rules_feature_find(r, name);
        bind_derived(r, name, &x->cols[i]);
    }
    return x;
}

void modelrow_destroy(modelrow *x) { free(x); }

size_t modelrow_ncols(const modelrow *x) { return x->n; }

/* A column no payment can fill: no key of that name and no derivation from two keys; and
 * model_score, which the scorer only knows after the prediction the row is for. */
static bool col_unbound(const modelrow *x, size_t i) {
    const mcol *c = &x->cols[i];
    if (strcmp(model_feature_name(x->m, i), "model_score") == 0) return true;
    return c->ref < 0 && (!c->derived || c->sum < 0 || c->count < 0);
}

size_t modelrow_unbound(const modelrow *x, char *names, size_t names_size) {
    size_t k = 0, len = 0;
    if (names && names_size) names[0] = '\0';
    for (size_t i = 0; i < x->n; i++) {
        if (!col_unbound(x, i)) continue;
        if (names && len < names_size) {
            int w = snprintf(names + len, names_size - len, "%s%s", k ? "," : "",
                             model_feature_name(x->m, i));
            len += w > 0 ? (size_t)w : 0;
        }
        k++;
    }
    return k;
}

void modelrow_fill(const modelrow *x, const rules_features *f, float *row) {
    for (size_t i = 0; i < x->n; i++) {
        const mcol *c = &x->cols[i];
        int64_t iv = 0;
        double dv = 0;
        rules_value t =
            c->ref >= 0 ? rules_feature_get(x->r, c->ref, f, &iv, &dv) : RULES_VALUE_ABSENT;
        if (t == RULES_VALUE_INT) row[i] = (float)iv;
        else if (t == RULES_VALUE_REAL) row[i] = (float)dv;
        else if (c->derived) { /* as model.c's derived(): float division, count > 0 */
            float sum = value_of(x->r, c->sum, f), cnt = value_of(x->r, c->count, f);
            row[i] = cnt > 0 && !isnan(sum) ? sum / cnt : NAN;
        } else row[i] = NAN;
    }
}
