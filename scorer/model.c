/* model: XGBoost trees with FraudShield's header (see model.h). */
#include "model.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xgboost/c_api.h>

#include "fsutil.h"

#define MODEL_FORMAT "fraudshield-model/1"
#define MODEL_FILE_MAX (512L << 20) /* a model file larger than this is not one of ours */
#define VERSION_LABEL_MAX (MODEL_VERSION_MAX - 14) /* room for "+" and 12 hex digits */

struct model {
    BoosterHandle booster;
    size_t nf;
    char **names;          /* nf feature names, owned */
    json_t *attrs;         /* the fs_* attributes (model_attr() returns strings from here) */
    char version[MODEL_VERSION_MAX];
};

/* XGBoost's message without the stack trace it appends. */
static int xgb_fail(char *errstr, size_t errstr_size, const char *what) {
    const char *e = XGBGetLastError();
    snprintf(errstr, errstr_size, "%s: %.*s", what, (int)strcspn(e, "\n"), e);
    return -1;
}

void model_destroy(model *m) {
    if (!m) return;
    if (m->booster) XGBoosterFree(m->booster);
    for (size_t i = 0; m->names && i < m->nf; i++) free(m->names[i]);
    free(m->names);
    json_decref(m->attrs);
    free(m);
}

const char *model_version(const model *m) { return m->version; }
size_t model_feature_count(const model *m) { return m->nf; }
const char *model_feature_name(const model *m, size_t i) { return i < m->nf ? m->names[i] : NULL; }

const char *model_attr(const model *m, const char *key) {
    return json_string_value(json_object_get(m->attrs, key));
}

int model_feature_name_valid(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= MODEL_NAME_MAX) return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

/* ---- feature rows ------------------------------------------------------------------------------ */

static float json_number(const json_t *v) {
    if (json_is_integer(v)) return (float)json_integer_value(v);
    if (json_is_real(v)) return (float)json_real_value(v);
    if (json_is_boolean(v)) return json_is_true(v) ? 1.0f : 0.0f;
    return NAN;
}

int model_feature_derived(const char *name, char *sum, char *count, size_t key_size) {
    static const char avg[] = "_avg_minor_";
    const char *p = strstr(name, avg);
    if (!p || p == name) return 0;
    int ent = (int)(p - name);
    const char *rest = p + strlen(avg);
    int ns = snprintf(sum, key_size, "%.*s_sum_minor_%s", ent, name, rest);
    int nc = snprintf(count, key_size, "%.*s_count_%s", ent, name, rest);
    return ns >= 0 && nc >= 0 && (size_t)ns < key_size && (size_t)nc < key_size;
}

/* A derived average = sum / count of the same window; NAN when name is not one, or when the count
 * is not > 0. */
static float derived(const char *name, const json_t *features) {
    char sum[MODEL_NAME_MAX], count[MODEL_NAME_MAX];
    if (!model_feature_derived(name, sum, count, sizeof sum)) return NAN;
    float s = json_number(json_object_get(features, sum));
    float n = json_number(json_object_get(features, count));
    return n > 0 && !isnan(s) ? s / n : NAN;
}

float model_feature_value(const char *name, const json_t *features) {
    const json_t *v = json_object_get(features, name);
    return v ? json_number(v) : derived(name, features);
}

void model_features_row(const char *const *names, size_t n, const json_t *features, float *row) {
    for (size_t i = 0; i < n; i++) row[i] = model_feature_value(names[i], features);
}

void model_row_from_json(const model *m, const json_t *features, float *row) {
    model_features_row((const char *const *)m->names, m->nf, features, row);
}

/* ---- header ------------------------------------------------------------------------------------ */

/* Splits "a,b,c" into m->names, checking each name. */
static int parse_features(model *m, const char *list, char *errstr, size_t errstr_size) {
    size_t n = 1;
    for (const char *c = list; *c; c++) n += *c == ',';
    if (!*list || n > MODEL_MAX_FEATURES) {
        snprintf(errstr, errstr_size, "fs_features: 1..%d names expected", MODEL_MAX_FEATURES);
        return -1;
    }
    m->names = calloc(n, sizeof *m->names);
    if (!m->names) return snprintf(errstr, errstr_size, "out of memory"), -1;
    for (const char *c = list; m->nf < n; m->nf++) {
        size_t len = strcspn(c, ",");
        m->names[m->nf] = strndup(c, len);
        if (!m->names[m->nf]) return snprintf(errstr, errstr_size, "out of memory"), -1;
        if (!model_feature_name_valid(m->names[m->nf])) {
            snprintf(errstr, errstr_size, "fs_features: invalid name \"%.64s\"", m->names[m->nf]);
            m->nf++;
            return -1;
        }
        c += len + (c[len] == ',');
    }
    /* a name twice: the scorer would fill both columns with the same value, and at most one of
     * them can be the column the trees learnt under that name */
    for (size_t i = 0; i < m->nf; i++)
        for (size_t j = i + 1; j < m->nf; j++)
            if (strcmp(m->names[i], m->names[j]) == 0) {
                snprintf(errstr, errstr_size, "fs_features: \"%s\" is named twice (columns %zu "
                         "and %zu)", m->names[i], i + 1, j + 1);
                return -1;
            }
    return 0;
}

/* fs_features against XGBoost's own feature names: the columns are fed by fs_features, the trees
 * split on columns by position, so a file whose two lists differ (a header edited or copied from
 * another model) would feed e.g. amount_minor into the column learnt as user_count_300s. A model
 * without XGBoost feature names (written by other tools) has nothing to compare and loads as
 * before: fs_features alone then tells the order. */
static int check_booster_names(model *m, char *errstr, size_t errstr_size) {
    bst_ulong n = 0;
    const char **xn = NULL;
    if (XGBoosterGetStrFeatureInfo(m->booster, "feature_name", &n, &xn) != 0)
        return xgb_fail(errstr, errstr_size, "reading the model's feature names");
    if (n == 0) return 0;
    if (n != m->nf) {
        snprintf(errstr, errstr_size, "fs_features names %zu features, XGBoost's feature_names %"
                 PRIu64, m->nf, (uint64_t)n);
        return -1;
    }
    /* xn lives in XGBoost's thread-local storage until its next call: none is made here */
    for (size_t i = 0; i < m->nf; i++)
        if (strcmp(m->names[i], xn[i]) != 0) {
            snprintf(errstr, errstr_size, "fs_features does not match XGBoost's feature_names: "
                     "column %zu is \"%s\" in fs_features, \"%.64s\" in feature_names", i + 1,
                     m->names[i], xn[i]);
            return -1;
        }
    return 0;
}

/* Copies every fs_* attribute of the booster into m->attrs. */
static int cache_attrs(model *m, char *errstr, size_t errstr_size) {
    bst_ulong n;
    const char **keys;
    if (XGBoosterGetAttrNames(m->booster, &n, &keys) != 0)
        return xgb_fail(errstr, errstr_size, "reading the model's attributes");
    json_t *a = json_object();
    if (!a) return snprintf(errstr, errstr_size, "out of memory"), -1;
    json_decref(m->attrs);
    m->attrs = a;
    /* keys lives in XGBoost's thread-local storage until the next call: copy them first */
    char **copy = calloc(n ? n : 1, sizeof *copy);
    if (!copy) return snprintf(errstr, errstr_size, "out of memory"), -1;
    int rc = 0;
    for (bst_ulong i = 0; i < n; i++) copy[i] = strdup(keys[i]);
    for (bst_ulong i = 0; i < n && rc == 0; i++) {
        const char *v;
        int ok = 0;
        if (!copy[i]) rc = -1;
        else if (strncmp(copy[i], "fs_", 3) != 0) continue;
        else if (XGBoosterGetAttr(m->booster, copy[i], &v, &ok) != 0 || !ok) rc = -1;
        else rc = json_object_set_new(a, copy[i], json_string(v));
    }
    for (bst_ulong i = 0; i < n; i++) free(copy[i]);
    free(copy);
    if (rc != 0) snprintf(errstr, errstr_size, "reading the model's attributes failed");
    return rc;
}

/* "<label>+<first 12 hex digits of sha256(bytes)>" */
static void set_version(model *m, const char *label, const void *bytes, size_t len) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "unsaved";
    if (bytes && EVP_Digest(bytes, len, md, &mdlen, EVP_sha256(), NULL) == 1) {
        fs_hex(md, mdlen, hex);
        hex[12] = '\0';
    }
    snprintf(m->version, sizeof m->version, "%s+%s", label, hex);
}

/* Checks the FraudShield header of a loaded booster and fills names and version. */
static int check_header(model *m, const void *bytes, size_t len, char *errstr, size_t errstr_size) {
    bst_ulong nfeat = 0;
    if (cache_attrs(m, errstr, errstr_size) != 0) return -1;
    const char *fmt = model_attr(m, "fs_format"), *label = model_attr(m, "fs_version");
    const char *features = model_attr(m, "fs_features");
    if (!fmt || strcmp(fmt, MODEL_FORMAT) != 0 || !label || !features) {
        snprintf(errstr, errstr_size, "not a FraudShield model (XGBoost attributes fs_format=\"%s\","
                 " fs_version and fs_features expected)", MODEL_FORMAT);
        return -1;
    }
    if (strlen(label) == 0 || strlen(label) > VERSION_LABEL_MAX) {
        snprintf(errstr, errstr_size, "fs_version: 1..%d bytes expected", VERSION_LABEL_MAX);
        return -1;
    }
    if (parse_features(m, features, errstr, errstr_size) != 0) return -1;
    if (XGBoosterGetNumFeature(m->booster, &nfeat) != 0)
        return xgb_fail(errstr, errstr_size, "reading the number of features");
    if (nfeat != m->nf) {
        snprintf(errstr, errstr_size, "fs_features names %zu features, the trees expect %" PRIu64,
                 m->nf, (uint64_t)nfeat);
        return -1;
    }
    if (check_booster_names(m, errstr, errstr_size) != 0) return -1;
    set_version(m, label, bytes, len);
    return 0;
}

/* ---- load, predict ----------------------------------------------------------------------------- */

/* The whole file into a malloc'd buffer (the caller frees it). */
static char *read_file(const char *path, size_t *len, char *errstr, size_t errstr_size) {
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    long size;
    if (!f) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        snprintf(errstr, errstr_size, "%s: cannot determine the size", path);
        goto done;
    }
    if (size == 0 || size > MODEL_FILE_MAX) {
        snprintf(errstr, errstr_size, "%s: %ld bytes is not a model file", path, size);
        goto done;
    }
    buf = malloc((size_t)size);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        snprintf(errstr, errstr_size, "%s: read failed", path);
        free(buf);
        buf = NULL;
        goto done;
    }
    *len = (size_t)size;
done:
    fclose(f);
    return buf;
}

static int set_threads(model *m, int threads, char *errstr, size_t errstr_size) {
    char v[16];
    snprintf(v, sizeof v, "%d", threads);
    if (threads > 0 && XGBoosterSetParam(m->booster, "nthread", v) != 0)
        return xgb_fail(errstr, errstr_size, "setting nthread");
    return 0;
}

model *model_load(const char *path, int threads, char *errstr, size_t errstr_size) {
    size_t len = 0;
    char sub[256];
    char *buf = read_file(path, &len, errstr, errstr_size);
    model *m = buf ? calloc(1, sizeof *m) : NULL;
    if (!m) {
        if (buf) snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    if (XGBoosterCreate(NULL, 0, &m->booster) != 0) {
        xgb_fail(errstr, errstr_size, "creating a booster");
        goto failed;
    }
    if (XGBoosterLoadModelFromBuffer(m->booster, buf, len) != 0) {
        snprintf(sub, sizeof sub, "%s: not an XGBoost model", path);
        xgb_fail(errstr, errstr_size, sub);
        goto failed;
    }
    if (check_header(m, buf, len, sub, sizeof sub) != 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, sub);
        goto failed;
    }
    if (set_threads(m, threads, errstr, errstr_size) != 0) goto failed;
    free(buf);
    return m;
failed:
    free(buf);
    model_destroy(m);
    return NULL;
}

int model_predict(model *m, const float *rows, size_t nrows, size_t ncols, float *out,
                  char *errstr, size_t errstr_size) {
    char arr[256];
    static const char config[] = "{\"type\": 0, \"training\": false, \"iteration_begin\": 0, "
                                 "\"iteration_end\": 0, \"strict_shape\": false, \"missing\": NaN, "
                                 "\"cache_id\": 0}";
    const bst_ulong *shape;
    bst_ulong dim;
    const float *res;
    if (ncols != m->nf) {
        snprintf(errstr, errstr_size, "%zu columns given, the model has %zu features", ncols, m->nf);
        return -1;
    }
    if (nrows == 0) return 0;
    /* numpy's __array_interface__, the form XGBoost reads a dense matrix from */
    snprintf(arr, sizeof arr, "{\"data\": [%" PRIuPTR ", true], \"shape\": [%zu, %zu], "
             "\"typestr\": \"<f4\", \"version\": 3}", (uintptr_t)rows, nrows, ncols);
    if (XGBoosterPredictFromDense(m->booster, arr, config, NULL, &shape, &dim, &res) != 0)
        return xgb_fail(errstr, errstr_size, "prediction");
    size_t total = 1;
    for (bst_ulong i = 0; i < dim; i++) total *= (size_t)shape[i];
    if (total != nrows) {
        snprintf(errstr, errstr_size, "prediction: %zu values for %zu rows", total, nrows);
        return -1;
    }
    memcpy(out, res, nrows * sizeof *out); /* res belongs to XGBoost until its next call */
    return 0;
}

/* ---- training ---------------------------------------------------------------------------------- */

void model_params_default(model_params *p) {
    *p = (model_params){.rounds = 300, .max_depth = 3, .eta = 0.05, .subsample = 0.8,
                        .colsample = 0.8, .min_child_weight = 1, .scale_pos_weight = 1,
                        .threads = 0, .seed = 0, .parallel_trees = 4};
}

static int set_params(BoosterHandle b, const model_params *p, char *errstr, size_t errstr_size) {
    char v[10][32];
    snprintf(v[0], sizeof v[0], "%d", p->max_depth);
    snprintf(v[1], sizeof v[1], "%.17g", p->eta);
    snprintf(v[2], sizeof v[2], "%.17g", p->subsample);
    snprintf(v[3], sizeof v[3], "%.17g", p->colsample);
    snprintf(v[4], sizeof v[4], "%.17g", p->min_child_weight);
    snprintf(v[5], sizeof v[5], "%.17g", p->scale_pos_weight);
    snprintf(v[6], sizeof v[6], "%d", p->threads);
    snprintf(v[7], sizeof v[7], "%d", p->seed);
    snprintf(v[8], sizeof v[8], "%d", p->parallel_trees);
    const char *kv[][2] = {
        {"objective", "binary:logistic"}, {"tree_method", "hist"}, {"verbosity", "0"},
        {"max_depth", v[0]}, {"eta", v[1]}, {"subsample", v[2]}, {"colsample_bytree", v[3]},
        {"min_child_weight", v[4]}, {"scale_pos_weight", v[5]}, {"seed", v[7]},
        {"num_parallel_tree", v[8]},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (XGBoosterSetParam(b, kv[i][0], kv[i][1]) != 0) return xgb_fail(errstr, errstr_size, kv[i][0]);
    if (p->threads > 0 && XGBoosterSetParam(b, "nthread", v[6]) != 0)
        return xgb_fail(errstr, errstr_size, "nthread");
    return 0;
}

/* Names joined by commas (the fs_features attribute); NULL when a name is invalid. */
static char *join_names(const char *const *names, size_t n) {
    size_t len = 1;
    for (size_t i = 0; i < n; i++) {
        if (!model_feature_name_valid(names[i])) return NULL;
        len += strlen(names[i]) + 1;
    }
    char *s = malloc(len), *w = s;
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) w += sprintf(w, "%s%s", i ? "," : "", names[i]);
    *w = '\0';
    return s;
}

/* The header of a freshly trained booster: attributes and XGBoost's own feature names. */
static int write_header(model *m, const char *const *names, size_t n, const char *version,
                        char *errstr, size_t errstr_size) {
    char *list = join_names(names, n);
    int rc = -1;
    if (!list) {
        snprintf(errstr, errstr_size, "feature names must be [a-z0-9_], 1..%d bytes",
                 MODEL_NAME_MAX - 1);
        return -1;
    }
    if (XGBoosterSetStrFeatureInfo(m->booster, "feature_name", (const char **)names, n) != 0 ||
        XGBoosterSetAttr(m->booster, "fs_format", MODEL_FORMAT) != 0 ||
        XGBoosterSetAttr(m->booster, "fs_version", version) != 0 ||
        XGBoosterSetAttr(m->booster, "fs_features", list) != 0) {
        xgb_fail(errstr, errstr_size, "writing the model header");
        goto done;
    }
    rc = check_header(m, NULL, 0, errstr, errstr_size);
done:
    free(list);
    return rc;
}

static int boost(BoosterHandle b, DMatrixHandle d, const model_params *p, char *errstr,
                 size_t errstr_size) {
    if (set_params(b, p, errstr, errstr_size) != 0) return -1;
    for (int i = 0; i < p->rounds; i++)
        if (XGBoosterUpdateOneIter(b, i, d) != 0) return xgb_fail(errstr, errstr_size, "training");
    return 0;
}

model *model_train(const float *rows, const float *labels, size_t nrows, size_t ncols,
                   const char *const *names, const char *version, const model_params *p,
                   char *errstr, size_t errstr_size) {
    DMatrixHandle d = NULL;
    model *m = NULL;
    if (nrows == 0 || ncols == 0 || ncols > MODEL_MAX_FEATURES || !version ||
        !*version || strlen(version) > VERSION_LABEL_MAX) {
        snprintf(errstr, errstr_size, "training needs rows, 1..%d features and a version label of "
                 "1..%d bytes", MODEL_MAX_FEATURES, VERSION_LABEL_MAX);
        return NULL;
    }
    /* one class only: the trees learn nothing and every payment gets that class's rate (all
     * fraud: p 0.95 for everyone, every payment blocked) */
    size_t frauds = 0;
    for (size_t i = 0; i < nrows; i++) frauds += labels[i] > 0.5f;
    if (frauds == 0 || frauds == nrows) {
        snprintf(errstr, errstr_size, "training needs both classes: %zu fraud and %zu legitimate "
                 "labels", frauds, nrows - frauds);
        return NULL;
    }
    if (!(m = calloc(1, sizeof *m))) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (XGDMatrixCreateFromMat(rows, nrows, ncols, NAN, &d) != 0 ||
        XGDMatrixSetFloatInfo(d, "label", labels, nrows) != 0 ||
        XGBoosterCreate(&d, 1, &m->booster) != 0) {
        xgb_fail(errstr, errstr_size, "preparing the training data");
        goto failed;
    }
    if (boost(m->booster, d, p, errstr, errstr_size) != 0 ||
        write_header(m, names, ncols, version, errstr, errstr_size) != 0)
        goto failed;
    XGDMatrixFree(d);
    return m;
failed:
    if (d) XGDMatrixFree(d);
    model_destroy(m);
    return NULL;
}

int model_set_attr(model *m, const char *key, const char *value, char *errstr, size_t errstr_size) {
    if (strncmp(key, "fs_", 3) != 0) {
        snprintf(errstr, errstr_size, "%s: header attributes start with fs_", key);
        return -1;
    }
    if (XGBoosterSetAttr(m->booster, key, value) != 0) return xgb_fail(errstr, errstr_size, key);
    if (json_object_set_new(m->attrs, key, json_string(value)) != 0) {
        snprintf(errstr, errstr_size, "%s: not UTF-8 or out of memory", key);
        return -1;
    }
    return 0;
}

static int write_all(const char *path, const char *bytes, size_t len, char *errstr,
                     size_t errstr_size) {
    FILE *f = fopen(path, "wb");
    if (!f) return snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno)), -1;
    int ok = fwrite(bytes, 1, len, f) == len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok) snprintf(errstr, errstr_size, "%s: write failed: %s", path, strerror(errno));
    return ok ? 0 : -1;
}

int model_save(model *m, const char *path, char *errstr, size_t errstr_size) {
    bst_ulong len;
    const char *bytes;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return snprintf(errstr, errstr_size, "path too long"), -1;
    if (XGBoosterSaveModelToBuffer(m->booster, "{\"format\": \"json\"}", &len, &bytes) != 0)
        return xgb_fail(errstr, errstr_size, "serializing the model");
    /* bytes belongs to XGBoost until its next call: hash and write it before anything else */
    set_version(m, model_attr(m, "fs_version"), bytes, len);
    if (write_all(tmp, bytes, len, errstr, errstr_size) != 0) {
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int model_importance(model *m, double *gain, char *errstr, size_t errstr_size) {
    bst_ulong nf, dim;
    const char **names;
    const bst_ulong *shape;
    const float *scores;
    for (size_t i = 0; i < m->nf; i++) gain[i] = 0;
    if (XGBoosterFeatureScore(m->booster, "{\"importance_type\": \"total_gain\"}", &nf, &names,
                              &dim, &shape, &scores) != 0)
        return xgb_fail(errstr, errstr_size, "feature importance");
    for (bst_ulong i = 0; i < nf; i++)
        for (size_t j = 0; j < m->nf; j++)
            if (strcmp(names[i], m->names[j]) == 0) gain[j] = scores[i];
    return 0;
}
