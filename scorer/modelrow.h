/* modelrow: a model's feature row straight from the scorer's rules_features, without the JSON
 * text in between.
 *
 * The model's columns are named after keys of the evidence object (model.h); model_row_from_json()
 * reads them from that object, which is how training and evaluation see a payment. The scorer has
 * the same values in a rules_features struct, so it binds each column once per (model, rules)
 * pair to a key reference (rules_feature_find) and fills rows from the struct, with exactly the
 * result model_row_from_json(m, rules_features_json(r, f)) gives: the same float conversions, the
 * derived "<entity>_avg_minor_<N>s" (float sum / float count, missing when the count is not > 0),
 * NAN for a key absent for this payment and for a column no key of r ever fills.
 * tests/unit/test_modelrow.c checks that equality on random feature structs.
 *
 * A binding borrows m and r: it must not outlive either (rebind after a reload of either). */
#ifndef FS_MODELROW_H
#define FS_MODELROW_H

#include <stddef.h>

#include "model.h"
#include "rules.h"

typedef struct modelrow modelrow;

/* Binds m's columns to r's features. NULL with errstr only when out of memory: a column that r
 * never fills is not an error (it is always missing; see modelrow_unbound). */
modelrow *modelrow_new(const model *m, const rules *r, char *errstr, size_t errstr_size);

void modelrow_destroy(modelrow *x); /* accepts NULL */

size_t modelrow_ncols(const modelrow *x);

/* How many columns r never fills, and their names comma-separated into names (truncated to
 * names_size; may be NULL): worth a warning when a model is loaded. */
size_t modelrow_unbound(const modelrow *x, char *names, size_t names_size);

/* Fills row[0..modelrow_ncols()) for f. Pure, no allocation: called for every payment. */
void modelrow_fill(const modelrow *x, const rules_features *f, float *row);

#endif
