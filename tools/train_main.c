/* fraudshield-train: trains the fraud model (gradient-boosted trees, XGBoost) from the features the
 * scorer stored with its decisions and the outcomes known for those payments, and writes a
 * versioned model file the scorer loads (scorer/model.h; protocol in docs/detection.md).
 *
 *   fraudshield-train --period 2018-07-25:2018-07-31 --output model.json     (from PostgreSQL)
 *   fraudshield-train --input rows.tsv --output model.json                   (from a psql export)
 *   fraudshield-train --period ... --print-query                             (the query, for \copy)
 *
 * Rows are taken in event-time order; the last holdout-pct percent are held out to report how the
 * model does on later payments than it learnt from, then (refit, the default) the written model is
 * trained again on every row. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "cfg.h"
#include "db.h"
#include "evalmetrics.h"
#include "fsutil.h"
#include "log.h"
#include "model.h"
#include "trainset.h"

typedef struct train_opts {
    char *database_url;
    int64_t db_timeout_ms;
    char *input;
    char *period;
    char *labels_known_by;
    char *unlabelled;
    char *output;
    char *version;
    char *features;
    char *exclude;
    bool allow_empty_features;
    int64_t holdout_pct;
    bool refit;
    int64_t rounds;
    int64_t max_depth;
    char *eta;
    char *subsample;
    char *colsample;
    char *min_child_weight;
    char *scale_pos_weight;
    int64_t threads;
    int64_t seed;
    int64_t parallel_trees;
    bool print_query;
    char *log_level;
} train_opts;

#define O(field) offsetof(train_opts, field)
static const cfg_opt train_options[] = {
    {"database-url", "FS_DATABASE_URL", CFG_STRING,
     "postgresql://postgres@127.0.0.1:5432/fraudshield", 1, 4096, O(database_url),
     "PostgreSQL connection URL (rows are read from there unless input is set)", true},
    {"db-timeout-ms", "FS_DB_TIMEOUT_MS", CFG_INT, "1800000", 1000, 86400000, O(db_timeout_ms),
     "the rows query (sent, every row read) must be done within this: PostgreSQL cancels it then "
     "(a server that does not answer is given up 2 s later) and the run fails, so a lock held for "
     "ever or a hung database ends in an error, not a wait (30 min: a period of many millions of "
     "decisions may need more)", false},
    {"input", "FS_INPUT", CFG_STRING, "", 0, 4096, O(input),
     "read the rows from this psql text-format export of the training query instead "
     "(see --print-query)", false},
    {"period", "FS_PERIOD", CFG_STRING, "", 0, 21, O(period),
     "training period FROM:TO, days inclusive, event time UTC (e.g. 2018-07-25:2018-07-31; "
     "\"\": every row)", false},
    {"labels-known-by", "FS_LABELS_KNOWN_BY", CFG_STRING, "", 0, 40, O(labels_known_by),
     "use only labels known at this time (YYYY-MM-DD or RFC 3339; \"\": every stored label); "
     "database only: refused with input (give it to --print-query for the export)", false},
    {"unlabelled", "FS_UNLABELLED", CFG_STRING, "skip", 4, 5, O(unlabelled),
     "rows without a label: skip, or legit (count them as genuine)", false},
    {"output", "FS_OUTPUT", CFG_STRING, "", 0, 4096, O(output),
     "model file to write (XGBoost JSON with the FraudShield header); required unless "
     "--print-query", false},
    {"version", "FS_VERSION", CFG_STRING, "", 0, 50, O(version),
     "version label stored in the model (\"\": gbt-FROM-TO, or gbt-all)", false},
    {"features", "FS_FEATURES", CFG_STRING, "auto", 1, 16384, O(features),
     "comma-separated feature names in model order, each once and with a value in some row (not "
     "model_score; see allow-empty-features), or auto (every numeric feature stored, plus "
     "<entity>_avg_minor_<N>s per sum, sorted; a column with no value in any row is left out, "
     "and named)", false},
    {"exclude", "FS_EXCLUDE", CFG_STRING, "", 0, 4096, O(exclude),
     "with auto features: comma-separated name prefixes to leave out (ablations)", false},
    {"allow-empty-features", "FS_ALLOW_EMPTY_FEATURES", CFG_BOOL, "false", 0, 0,
     O(allow_empty_features),
     "with a features list: keep a listed column that has no value in any row (an average whose "
     "count is 0 in every row), with a warning naming it, instead of refusing it (a script using "
     "one list for several periods)", false},
    {"holdout-pct", "FS_HOLDOUT_PCT", CFG_INT, "20", 0, 90, O(holdout_pct),
     "percent of rows (the latest in event time) held out to report metrics", false},
    {"refit", "FS_REFIT", CFG_BOOL, "true", 0, 0, O(refit),
     "after reporting, train the written model on every row (false: on the non-held-out rows)",
     false},
    {"rounds", "FS_ROUNDS", CFG_INT, "300", 1, 100000, O(rounds), "boosting rounds (trees)", false},
    {"max-depth", "FS_MAX_DEPTH", CFG_INT, "3", 1, 32, O(max_depth),
     "maximum tree depth (3 and 4 parallel trees: chosen on a validation fold, BENCHMARKS.md)", false},
    {"eta", "FS_ETA", CFG_STRING, "0.05", 1, 32, O(eta), "learning rate (0, 1]", false},
    {"subsample", "FS_SUBSAMPLE", CFG_STRING, "0.8", 1, 32, O(subsample),
     "share of rows sampled per tree (0, 1]", false},
    {"colsample", "FS_COLSAMPLE", CFG_STRING, "0.8", 1, 32, O(colsample),
     "share of features sampled per tree (0, 1]", false},
    {"min-child-weight", "FS_MIN_CHILD_WEIGHT", CFG_STRING, "1", 1, 32, O(min_child_weight),
     "minimum hessian weight in a leaf [0, 1e6]", false},
    {"scale-pos-weight", "FS_SCALE_POS_WEIGHT", CFG_STRING, "1", 1, 32, O(scale_pos_weight),
     "weight of the fraud class (0, 1e6]", false},
    {"threads", "FS_THREADS", CFG_INT, "2", 0, 256, O(threads),
     "training threads (0: all cores)", false},
    {"seed", "FS_SEED", CFG_INT, "0", 0, 2147483647, O(seed), "random seed (sampling)", false},
    {"parallel-trees", "FS_PARALLEL_TREES", CFG_INT, "4", 1, 64, O(parallel_trees),
     "trees per round, each grown on its own row and column sample and averaged (XGBoost's "
     "num_parallel_tree: a bagged boosting, less dependent on the seed; N times the training time)",
     false},
    {"print-query", "FS_PRINT_QUERY", CFG_BOOL, "false", 0, 0, O(print_query),
     "print the training query for the period (for psql \\copy ... TO 'rows.tsv') and exit",
     false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 1, 16, O(log_level),
     "debug, info, warn or error", false},
    {0},
};
#undef O

static const char SUMMARY[] =
    "FraudShield model training: XGBoost trees from the features stored with each decision "
    "(decisions.features) and the outcomes known for those payments; writes a versioned model "
    "file for the scorer and prints training metrics.";

/* The parsed options that are not plain cfg values. */
typedef struct train_plan {
    trs_filter filter;
    model_params params;
    char version[64];
} train_plan;

static int parse_real(const char *name, const char *s, double lo, double hi, int lo_open,
                      double *out, char *errstr, size_t n) {
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s || !isfinite(v) || v > hi || v < lo || (lo_open && v == lo)) {
        snprintf(errstr, n, "%s: %s is not a number in %s%g, %g]", name, s, lo_open ? "(" : "[",
                 lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int plan_params(const train_opts *o, model_params *p, char *errstr, size_t n) {
    model_params_default(p);
    p->rounds = (int)o->rounds;
    p->max_depth = (int)o->max_depth;
    p->threads = (int)o->threads;
    p->seed = (int)o->seed;
    p->parallel_trees = (int)o->parallel_trees;
    if (parse_real("eta", o->eta, 0, 1, 1, &p->eta, errstr, n) != 0 ||
        parse_real("subsample", o->subsample, 0, 1, 1, &p->subsample, errstr, n) != 0 ||
        parse_real("colsample", o->colsample, 0, 1, 1, &p->colsample, errstr, n) != 0 ||
        parse_real("min-child-weight", o->min_child_weight, 0, 1e6, 0, &p->min_child_weight,
                   errstr, n) != 0 ||
        parse_real("scale-pos-weight", o->scale_pos_weight, 0, 1e6, 1, &p->scale_pos_weight,
                   errstr, n) != 0)
        return -1;
    return 0;
}

static int plan_make(const train_opts *o, train_plan *pl, char *errstr, size_t n) {
    trs_filter *f = &pl->filter;
    *f = (trs_filter){INT64_MIN, INT64_MAX, INT64_MAX, 0, NULL, 0};
    if (o->period[0] && trs_parse_period(o->period, &f->from_ms, &f->to_ms) != 0)
        return snprintf(errstr, n, "period: expected YYYY-MM-DD:YYYY-MM-DD, got %s", o->period), -1;
    if (o->labels_known_by[0] && trs_parse_time(o->labels_known_by, &f->known_by_ms) != 0)
        return snprintf(errstr, n, "labels-known-by: not a date or RFC 3339 time"), -1;
    /* a file holds the labels its export query chose: a cut-off given here would not be applied,
     * yet recorded in the model as if it had been */
    if (o->labels_known_by[0] && o->input[0] && !o->print_query)
        return snprintf(errstr, n, "labels-known-by applies to the database query, not to --input "
                        "(a file holds the labels its export chose): give it with --print-query "
                        "when exporting, and leave it out when training from the file"), -1;
    if (strcmp(o->unlabelled, "skip") != 0 && strcmp(o->unlabelled, "legit") != 0)
        return snprintf(errstr, n, "unlabelled: skip or legit"), -1;
    f->unlabelled_legit = strcmp(o->unlabelled, "legit") == 0;
    if (!o->print_query && !o->output[0])
        return snprintf(errstr, n, "output: the model file to write is required"), -1;
    if (o->version[0])
        snprintf(pl->version, sizeof pl->version, "%s", o->version);
    else if (o->period[0])
        snprintf(pl->version, sizeof pl->version, "gbt-%.4s%.2s%.2s-%.4s%.2s%.2s", o->period,
                 o->period + 5, o->period + 8, o->period + 11, o->period + 16, o->period + 19);
    else
        snprintf(pl->version, sizeof pl->version, "gbt-all");
    return plan_params(o, &pl->params, errstr, n);
}

static int load_rows(const train_opts *o, const train_plan *pl, trs *t, char *errstr, size_t n) {
    if (o->input[0]) return trs_load_file(t, o->input, &pl->filter, errstr, n);
    PGconn *c = db_connect(o->database_url, "fraudshield-train", errstr, n);
    if (!c) return -1;
    int rc = trs_load_pg(t, c, &pl->filter, (int)o->db_timeout_ms, errstr, n);
    PQfinish(c);
    return rc;
}

/* Room for any list of feature names, comma-separated. */
#define NAMES_TEXT_MAX (MODEL_MAX_FEATURES * MODEL_NAME_MAX)

/* auto: the columns with a value in some row; the ones left out are named in the output. */
static int auto_features(const train_opts *o, const trs *t, char ***names, size_t *nf,
                         char *errstr, size_t n) {
    char **empty;
    size_t nempty;
    char list[NAMES_TEXT_MAX];
    if (trs_auto_features(t, o->exclude, names, nf, &empty, &nempty, errstr, n) != 0) return -1;
    if (nempty) {
        trs_names_join(empty, nempty, list, sizeof list);
        printf("features left out (no value in any of the %zu rows): %s\n", trs_count(t), list);
    }
    trs_names_free(empty, nempty);
    return 0;
}

/* A list: checked against the rows; the empty columns kept by --allow-empty-features are named
 * in a warning. */
static int list_check(const train_opts *o, const trs *t, char **names, size_t nf, char *errstr,
                      size_t n) {
    char **empty;
    size_t nempty;
    char list[NAMES_TEXT_MAX];
    if (trs_check_features(t, (const char *const *)names, nf, o->allow_empty_features, &empty,
                           &nempty, errstr, n) != 0)
        return -1;
    if (nempty) {
        trs_names_join(empty, nempty, list, sizeof list);
        log_msg(LOG_WARN, "features_empty", "kept with --allow-empty-features, though no value "
                "in any of the %zu rows (the trees cannot split on them): %s", trs_count(t),
                list);
    }
    trs_names_free(empty, nempty);
    return 0;
}

/* The feature names: the given list, or auto. */
static int pick_features(const train_opts *o, const trs *t, char ***names, size_t *nf,
                         char *errstr, size_t n) {
    if (strcmp(o->features, "auto") == 0) return auto_features(o, t, names, nf, errstr, n);
    size_t count = 1, i = 0;
    for (const char *c = o->features; *c; c++) count += *c == ',';
    *names = calloc(count, sizeof **names);
    if (!*names) return snprintf(errstr, n, "out of memory"), -1;
    for (const char *c = o->features; i < count; i++) {
        size_t len = strcspn(c, ",");
        (*names)[i] = strndup(c, len);
        if (!(*names)[i] || !model_feature_name_valid((*names)[i])) {
            snprintf(errstr, n, "features: \"%.*s\" is not a feature name", (int)len, c);
            trs_names_free(*names, i + 1);
            *names = NULL;
            return -1;
        }
        c += len + (c[len] == ',');
    }
    *nf = count;
    return list_check(o, t, *names, count, errstr, n);
}

typedef struct split_metrics {
    size_t rows, frauds;
    double auc, ap; /* NAN when undefined (one class) */
} split_metrics;

static void metrics_of(const float *pred, const float *y, size_t nr, split_metrics *m) {
    char err[128];
    evm_item *it = malloc((nr ? nr : 1) * sizeof *it);
    *m = (split_metrics){nr, 0, NAN, NAN};
    if (!it) return;
    for (size_t i = 0; i < nr; i++) {
        it[i] = (evm_item){pred[i], y[i] > 0.5f, 0, i};
        m->frauds += y[i] > 0.5f;
    }
    if (evm_auc_roc(it, nr, &m->auc, err, sizeof err) != 0) m->auc = NAN;
    if (evm_average_precision(it, nr, &m->ap, err, sizeof err) != 0) m->ap = NAN;
    free(it);
}

/* Fraud and legitimate labels among rows [begin, end). */
static void count_classes(const trs *t, size_t begin, size_t end, size_t *fraud, size_t *legit) {
    *fraud = 0;
    for (size_t i = begin; i < end; i++) *fraud += trs_label(t, i) == 1;
    *legit = end - begin - *fraud;
}

/* What to do about labelled rows that are all of one class. */
static const char *one_class_hint(const train_opts *o, const trs *t, size_t fraud) {
    if (fraud && !strcmp(o->unlabelled, "skip") && trs_skipped(t))
        return "the unlabelled rows were skipped (--unlabelled skip): a replay that posted only "
               "fraud outcomes (fraudshield-replay --outcomes fraud) labels no payment "
               "legitimate; train with --unlabelled legit to count the unlabelled rows as "
               "genuine, or once legitimate outcomes are recorded";
    if (fraud)
        return "record legitimate outcomes too (the model learns fraud against genuine payments)";
    return "no fraud is known for these payments: widen --period, or take labels known later "
           "(--labels-known-by, of the export with --input; labels arrive days after the "
           "payments)";
}

/* Every set of rows a model is fitted or measured on must hold both classes: one class only gives
 * trees that predict the same probability for every payment (all fraud: 0.95, every payment
 * blocked at the default model_weight) and an undefined AUC. Checked before any training:
 * the rows (what the refit learns from), the older part the first fit learns from, the holdout. */
static int check_classes(const train_opts *o, const trs *t, size_t ntr, char *errstr, size_t n) {
    size_t nr = trs_count(t), fraud, legit;
    count_classes(t, 0, nr, &fraud, &legit);
    if (fraud == 0 || legit == 0)
        return snprintf(errstr, n, "a model needs both classes: the %zu labelled rows have %zu "
                        "fraud and %zu legitimate (%zu unlabelled skipped); %s", nr, fraud, legit,
                        trs_skipped(t), one_class_hint(o, t, fraud)), -1;
    count_classes(t, 0, ntr, &fraud, &legit);
    if (fraud == 0 || legit == 0)
        return snprintf(errstr, n, "the training rows (the first %zu of %zu in event time, before "
                        "the --holdout-pct %" PRId64 " holdout) have %zu fraud and %zu legitimate: "
                        "both classes are needed; lower --holdout-pct or widen --period", ntr, nr,
                        o->holdout_pct, fraud, legit), -1;
    count_classes(t, ntr, nr, &fraud, &legit);
    if (ntr < nr && (fraud == 0 || legit == 0))
        return snprintf(errstr, n, "the holdout rows (the latest %zu of %zu in event time, "
                        "--holdout-pct %" PRId64 ") have %zu fraud and %zu legitimate: its AUC "
                        "and AP need both classes; change --holdout-pct (0: no holdout) or widen "
                        "--period", nr - ntr, nr, o->holdout_pct, fraud, legit), -1;
    return 0;
}

/* Trains on rows [0, end) of the matrix. */
static model *fit(const float *x, const float *y, size_t end, size_t nf, const char *const *names,
                  const train_plan *pl, char *errstr, size_t n) {
    int64_t t0 = fs_mono_us();
    model *m = model_train(x, y, end, nf, names, pl->version, &pl->params, errstr, n);
    if (m)
        log_msg(LOG_INFO, "trained", "%zu rows x %zu features, %d rounds in %.1f s", end, nf,
                pl->params.rounds, (double)(fs_mono_us() - t0) / 1e6);
    return m;
}

static int measure(model *m, const float *x, const float *y, size_t begin, size_t end,
                   size_t nf, split_metrics *out, char *errstr, size_t n) {
    size_t nr = end - begin;
    float *pred = malloc((nr ? nr : 1) * sizeof *pred);
    int rc = -1;
    *out = (split_metrics){nr, 0, NAN, NAN};
    if (!pred) return snprintf(errstr, n, "out of memory"), -1;
    if (nr == 0 || model_predict(m, x + begin * nf, nr, nf, pred, errstr, n) == 0) {
        metrics_of(pred, y + begin, nr, out);
        rc = 0;
    }
    free(pred);
    return rc;
}

static void print_split(const char *name, const split_metrics *s) {
    printf("%-8s rows=%zu frauds=%zu auc=%.4f ap=%.4f\n", name, s->rows, s->frauds, s->auc, s->ap);
}

/* A metric for the header: null when undefined (NaN is not JSON). */
static json_t *jnum(double v) { return isnan(v) ? json_null() : json_real(v); }

static int set_json_attr(model *m, const char *key, json_t *v, char *errstr, size_t n) {
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    int rc = text ? model_set_attr(m, key, text, errstr, n) : -1;
    if (!text) snprintf(errstr, n, "out of memory");
    free(text);
    json_decref(v);
    return rc;
}

/* The training record in the model header. */
static int record(model *m, const train_opts *o, const train_plan *pl, const split_metrics *tr,
                  const split_metrics *ho, char *errstr, size_t n) {
    char now[25];
    const model_params *p = &pl->params;
    fs_time_format_rfc3339(fs_now_ms(), now);
    if (model_set_attr(m, "fs_created", now, errstr, n) != 0 ||
        model_set_attr(m, "fs_period", o->period[0] ? o->period : "all", errstr, n) != 0 ||
        model_set_attr(m, "fs_labels_known_by", o->input[0] ? "file" : o->labels_known_by[0] ?
                       o->labels_known_by : "all", errstr, n) != 0 ||
        model_set_attr(m, "fs_source", o->input[0] ? "file" : "postgresql", errstr, n) != 0)
        return -1;
    json_t *data = json_pack("{s:I, s:I, s:s}", "rows", (json_int_t)(tr->rows + ho->rows),
                             "frauds", (json_int_t)(tr->frauds + ho->frauds), "unlabelled",
                             o->unlabelled);
    json_t *params = json_pack("{s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:i, s:i}", "rounds", p->rounds,
                               "max_depth", p->max_depth, "eta", p->eta, "subsample",
                               p->subsample, "colsample_bytree", p->colsample, "min_child_weight",
                               p->min_child_weight, "scale_pos_weight", p->scale_pos_weight,
                               "seed", p->seed, "parallel_trees", p->parallel_trees);
    json_t *metrics = json_pack("{s:o, s:o, s:I, s:o, s:o, s:b}", "train_auc", jnum(tr->auc),
                                "train_ap", jnum(tr->ap), "holdout_rows", (json_int_t)ho->rows,
                                "holdout_auc", jnum(ho->auc), "holdout_ap", jnum(ho->ap),
                                "refit", o->refit && ho->rows > 0);
    int rc = set_json_attr(m, "fs_data", data, errstr, n);
    rc |= set_json_attr(m, "fs_params", params, errstr, n);
    rc |= set_json_attr(m, "fs_metrics", metrics, errstr, n);
    return rc ? -1 : 0;
}

static int by_gain_desc(const void *a, const void *b) {
    double x = ((const double *)a)[0], y = ((const double *)b)[0];
    return x > y ? -1 : x < y ? 1 : 0;
}

/* The features that carry the model, by total gain. */
static void print_importance(model *m, size_t top) {
    char err[256];
    size_t nf = model_feature_count(m);
    double *g = malloc(nf * sizeof *g), (*pairs)[2] = malloc(nf * sizeof *pairs);
    double total = 0;
    if (g && pairs && model_importance(m, g, err, sizeof err) == 0) {
        for (size_t i = 0; i < nf; i++) {
            pairs[i][0] = g[i];
            pairs[i][1] = (double)i;
            total += g[i];
        }
        qsort(pairs, nf, sizeof *pairs, by_gain_desc);
        printf("importance (share of total gain):\n");
        for (size_t i = 0; i < nf && i < top && total > 0; i++)
            printf("  %-40s %.3f\n", model_feature_name(m, (size_t)pairs[i][1]),
                   pairs[i][0] / total);
    }
    free(g);
    free(pairs);
}

/* Holds everything run() allocates, so that one cleanup frees it. */
typedef struct train_run {
    trs *rows;
    char **names;
    size_t nf;
    float *x, *y;
    model *m;
} train_run;

static void train_run_free(train_run *r) {
    trs_destroy(r->rows);
    trs_names_free(r->names, r->nf);
    free(r->x);
    free(r->y);
    model_destroy(r->m);
}

/* Rows -> matrix -> fit on the older part -> metrics -> refit -> header -> file. */
static int train(const train_opts *o, const train_plan *pl, train_run *r, char *errstr, size_t n) {
    split_metrics tr, ho;
    if (!(r->rows = trs_new())) return snprintf(errstr, n, "out of memory"), -1;
    if (load_rows(o, pl, r->rows, errstr, n) != 0) return -1;
    size_t nr = trs_count(r->rows), hold = nr * (size_t)o->holdout_pct / 100, ntr = nr - hold;
    log_msg(LOG_INFO, "rows_loaded", "%zu labelled rows (%zu unlabelled skipped)", nr,
            trs_skipped(r->rows));
    if (ntr == 0) return snprintf(errstr, n, "no labelled rows to train on"), -1;
    if (check_classes(o, r->rows, ntr, errstr, n) != 0) return -1;
    if (pick_features(o, r->rows, &r->names, &r->nf, errstr, n) != 0 ||
        trs_matrix(r->rows, 0, nr, (const char *const *)r->names, r->nf, &r->x, &r->y, errstr,
                   n) != 0)
        return -1;
    const char *const *names = (const char *const *)r->names;
    if (!(r->m = fit(r->x, r->y, ntr, r->nf, names, pl, errstr, n)) ||
        measure(r->m, r->x, r->y, 0, ntr, r->nf, &tr, errstr, n) != 0 ||
        measure(r->m, r->x, r->y, ntr, nr, r->nf, &ho, errstr, n) != 0)
        return -1;
    print_split("train", &tr);
    if (hold) print_split("holdout", &ho);
    if (o->refit && hold) {
        model_destroy(r->m);
        if (!(r->m = fit(r->x, r->y, nr, r->nf, names, pl, errstr, n))) return -1;
    }
    if (record(r->m, o, pl, &tr, &ho, errstr, n) != 0 || model_save(r->m, o->output, errstr, n))
        return -1;
    print_importance(r->m, 20);
    printf("train rows=%zu frauds=%zu features=%zu train_auc=%.4f train_ap=%.4f holdout_auc=%.4f "
           "holdout_ap=%.4f model=%s version=%s\n", nr, tr.frauds + ho.frauds, r->nf, tr.auc,
           tr.ap, ho.auc, ho.ap, o->output, model_version(r->m));
    return 0;
}

static int run(const train_opts *o) {
    char errstr[1024], sql[2048];
    train_plan pl;
    train_run r = {0};
    int rc = 1;
    if (plan_make(o, &pl, errstr, sizeof errstr) != 0) goto done;
    if (o->print_query) {
        if (trs_query_text(&pl.filter, sql, sizeof sql) != 0) goto done;
        printf("%s\n", sql);
        return 0;
    }
    rc = train(o, &pl, &r, errstr, sizeof errstr) == 0 ? 0 : 1;
done:
    if (rc) log_msg(LOG_ERROR, "train_failed", "%s", errstr);
    train_run_free(&r);
    return rc;
}

int main(int argc, char **argv) {
    train_opts o = {0};
    cfg_props props = {0};
    int rc = 1;
    cfg_result r = app_configure("train", train_options, &o, &props, argc, argv,
                                 "fraudshield-train", SUMMARY);
    if (r == CFG_OK) rc = run(&o);
    else if (r == CFG_HELP) rc = 0;
    cfg_free(train_options, &o, &props);
    return rc;
}
