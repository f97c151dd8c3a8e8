/* fvec: the one function that assembles a payment's feature vector from the batch state, used
 * by the live scorer (scorer.c) and by the offline mode (offline.c), so that replay parity compares
 * the same code. */
#ifndef FS_FVEC_H
#define FS_FVEC_H

#include "buckets.h"
#include "rules.h"
#include "vault.h"
#include "velocity.h"

/* Fills f for p: exact windows, bucket windows, vault, merchant risk, flags; no model score
 * (has_model false: the scorer adds it per batch, after the features of every payment).
 * The three states must be built. */
void fvec_compute(velocity *v, buckets *b, vault *vt, const rules *r, const pay_payment *p,
                      rules_features *f);

#endif
