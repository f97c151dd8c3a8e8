/* offline: features over a file of events (see offline.h). */
#include "offline.h"

#include <stdlib.h>
#include <string.h>

#include "buckets.h"
#include "fvec.h"
#include "vault.h"
#include "velocity.h"

typedef struct offline_state {
    velocity *v;
    buckets *b;
    vault *vt;
    pay_payment *ps;
    size_t n, cap;
} offline_state;

/* Reads and decodes every event of the file into st->ps. */
static int offline_read(const char *path, offline_state *st, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "r");
    char *line = NULL, err[256];
    size_t linecap = 0;
    int rc = -1, lineno = 0;
    if (!f) {
        snprintf(errstr, errstr_size, "%s: cannot open", path);
        return -1;
    }
    while (getline(&line, &linecap, f) >= 0) {
        const char *json = strchr(line, '{');
        lineno++;
        if (!json) continue;
        if (st->n == st->cap) {
            size_t cap = st->cap ? st->cap * 2 : 1024;
            pay_payment *ps = realloc(st->ps, cap * sizeof *ps);
            if (!ps) goto done;
            st->ps = ps;
            st->cap = cap;
        }
        if (pay_event_decode(json, strlen(json), &st->ps[st->n], err, sizeof err) != 0) {
            pay_payment_clear(&st->ps[st->n]);
            snprintf(errstr, errstr_size, "%s:%d: %s", path, lineno, err);
            goto done;
        }
        st->n++;
    }
    rc = 0;
done:
    free(line);
    fclose(f);
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

int offline_run(const char *path, const rules *r, FILE *out, char *errstr, size_t errstr_size) {
    offline_state st = {velocity_new(), buckets_new(), vault_new(), NULL, 0, 0};
    int rc = -1;
    if (!st.v || !st.b || !st.vt) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    if (offline_read(path, &st, errstr, errstr_size) != 0) goto done;
    if (offline_add(r, &st) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    offline_print(r, &st, out);
    rc = 0;
done:
    for (size_t i = 0; i < st.n; i++) pay_payment_clear(&st.ps[i]);
    free(st.ps);
    velocity_destroy(st.v);
    buckets_destroy(st.b);
    vault_destroy(st.vt);
    return rc;
}
