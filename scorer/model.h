/* model: the fraud model: gradient-boosted trees (XGBoost's C API) plus what is needed to use
 * them safely: the ordered list of feature names, a version, and the training record. Loading and
 * batch prediction are shared by the scorer and the tools (fraudshield-train, the evaluation), so
 * the numbers an evaluation reports come from the same inference code the scorer runs.
 *
 * File format: XGBoost's own JSON model (readable by any XGBoost >= 1.6, e.g. Python's
 * Booster.load_model), whose learner attributes carry FraudShield's header:
 *   fs_format    "fraudshield-model/1"
 *   fs_version   a label set at training time, e.g. "gbt-20180725-20180731"
 *   fs_features  the feature names, comma-separated, in the model's column order (each once; the
 *                same list as XGBoost's own feature_names, which fraudshield-train also writes)
 *   fs_*         the training record: period, rows, frauds, parameters, metrics (JSON text)
 * The loaded model's version (decisions.model_version) is "<fs_version>+<first 12 hex digits of
 * the file's SHA-256>", so two different files never share a version string.
 *
 * Feature vectors: a model column is named after a key of the feature object the scorer stores as
 * evidence (decisions.features, rules_features_json(): "amount_minor", "night",
 * "user_count_86400s", "merchant_risk_7d_delay_7d", ...). model_row_from_json() maps such an
 * object to a row in the model's order: numbers and booleans as they are, anything absent or not
 * a number as missing (NAN, which the trees route by their learnt default). One derived kind:
 * "<entity>_avg_minor_<N>s" = "<entity>_sum_minor_<N>s" / "<entity>_count_<N>s" (the handbook's
 * average amount; missing when the count is 0 or absent).
 *
 * Thread safety: a loaded model is immutable; model_predict() may be called from several threads
 * (XGBoost's in-place prediction). Replacing a model (SIGHUP) = load a new one, swap, destroy. */
#ifndef FS_MODEL_H
#define FS_MODEL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_MAX_FEATURES 256
#define MODEL_NAME_MAX 64      /* feature name, NUL included */
#define MODEL_VERSION_MAX 64   /* version string, NUL included (decisions.model_version) */

typedef struct model model;

/* Loads a model file (see above). NULL with errstr when the file is missing, unreadable, not an
 * XGBoost model, or lacks the FraudShield header; when fs_features names a feature twice; and when
 * the model has XGBoost feature names (fraudshield-train writes them) that differ from fs_features
 * (errstr names the first column that differs; a model without them is taken as fs_features says).
 * threads: prediction threads (0: XGBoost's default, all cores; the scorer uses 1). */
model *model_load(const char *path, int threads, char *errstr, size_t errstr_size);

void model_destroy(model *m); /* accepts NULL */

const char *model_version(const model *m);
size_t model_feature_count(const model *m);
const char *model_feature_name(const model *m, size_t i);

/* A header attribute ("fs_train_from", "fs_metrics", ...), or NULL. Valid while m lives. */
const char *model_attr(const model *m, const char *key);

/* Fraud probabilities for nrows rows of ncols values (row-major; ncols must equal
 * model_feature_count(); NAN = missing) into out[0..nrows). One call per batch: the cost per call
 * is far above the cost per row. Returns 0, or -1 with errstr. */
int model_predict(model *m, const float *rows, size_t nrows, size_t ncols, float *out,
                  char *errstr, size_t errstr_size);

/* One column's value in a feature object (see above): NAN when missing. */
float model_feature_value(const char *name, const json_t *features);

/* Fills row[0..n) from a feature object for the given names (see above). */
void model_features_row(const char *const *names, size_t n, const json_t *features, float *row);

/* The same with the model's own names and order: row has model_feature_count() values. */
void model_row_from_json(const model *m, const json_t *features, float *row);

/* True when name is a valid feature name ([a-z0-9_], 1..MODEL_NAME_MAX-1 bytes). */
int model_feature_name_valid(const char *name);

/* The one place that reads a derived average's name (model_features_row, the scorer's modelrow,
 * fraudshield-train): when name is "<entity>_avg_minor_<rest>" (the first "_avg_minor_", with text
 * before it), the keys it divides, "<entity>_sum_minor_<rest>" into sum and
 * "<entity>_count_<rest>" into count, each of key_size bytes (MODEL_NAME_MAX holds the keys of any
 * valid name). Returns 1, or 0 when name is not of that form or a key does not fit. */
int model_feature_derived(const char *name, char *sum, char *count, size_t key_size);

/* ---- training (fraudshield-train) ------------------------------------------------------------ */

typedef struct model_params {
    int rounds;              /* boosting rounds (trees) */
    int max_depth;
    double eta;              /* learning rate */
    double subsample;        /* row sampling per tree, (0, 1] */
    double colsample;        /* column sampling per tree, (0, 1] */
    double min_child_weight;
    double scale_pos_weight; /* weight of the fraud class (1: none) */
    int threads;             /* 0: all cores */
    int seed;
    int parallel_trees;      /* trees per round, each on its own sample, averaged (1: plain boosting) */
} model_params;

/* The defaults used by fraudshield-train (documented in docs/detection.md). */
void model_params_default(model_params *p);

/* Trains binary:logistic trees on rows (nrows x ncols, row-major, NAN = missing) and labels (0/1),
 * which must hold both classes. names: the ncols feature names (copied, also as XGBoost's feature
 * names; each once). version: the fs_version label. Returns the model (its
 * version gets the hash when saved and loaded again; until then "<label>+unsaved"), or NULL with
 * errstr. */
model *model_train(const float *rows, const float *labels, size_t nrows, size_t ncols,
                   const char *const *names, const char *version, const model_params *p,
                   char *errstr, size_t errstr_size);

/* Sets a header attribute (key must start with "fs_"). Returns 0 or -1 with errstr. */
int model_set_attr(model *m, const char *key, const char *value, char *errstr, size_t errstr_size);

/* Writes the model file atomically (a temporary file renamed over path: a scorer reloading on
 * SIGHUP never reads half a file). Returns 0 or -1 with errstr. */
int model_save(model *m, const char *path, char *errstr, size_t errstr_size);

/* Gain-based importance of each feature (total gain over all splits), in model order, into
 * gain[0..model_feature_count()) (0 for unused features). Returns 0 or -1 with errstr. */
int model_importance(model *m, double *gain, char *errstr, size_t errstr_size);

#endif
