/* fvec: assembles a payment's feature vector (see fvec.h). */
#include "fvec.h"

#include <string.h>

void fvec_compute(velocity *v, buckets *b, vault *vt, const rules *r, const pay_payment *p,
                      rules_features *f) {
    memset(f, 0, sizeof *f);
    f->p = p;
    f->has_model = false; /* the live scorer sets the model's score per batch (scorer_predict) */
    velocity_features(v, r, p, f);
    buckets_features(b, r, p, f);
    vault_features(vt, r, p, f);
    rules_derive(f);
}
