/* fraudshield-eval: the handbook's evaluation of the decisions the pipeline stored (docs/detection.md).
 *
 *   fraudshield-eval --train 2018-07-25:2018-07-31 --test 2018-08-08:2018-08-14 --model model.json
 *
 * Reads every decision from the first training day to the last test day with its final label
 * (tools/trainset.h), removes from each test day the cards already known compromised then (a fraud
 * on a day in [first training day, test day - delay - 1]: the handbook's get_train_test_set), and
 * computes AUC ROC, average precision and card precision@k (tools/evalmetrics.h) for three scores
 * of the test transactions:
 *   rules   the summed weights of the rule hits the scorer stored (decisions.reasons): what a
 *           scorer without a model scores
 *   model   the model's probability, re-scored from the stored features with the scorer's own
 *           inference code (model_row_from_json + model_predict)
 *   blend   what the scorer with that model scores (rules_blend_score): the rules file's
 *           model_covered rules add 0 (their signal is a model input), the other rules' points
 *           plus round(model * model_weight), capped at 100
 *   blend, ties by model: the same, equal scores ordered by the model's probability (a queue
 *           sorted by score, then model_score; most payments share a score of 0..100)
 * and prints them beside the handbook's published rows. The last line is
 *   eval auc=… ap=… cp100=…
 * for the blend as a review queue ranks it: by score, equal scores by the model's probability
 * (the "ties by model" row; for the rules when no model is given). */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "cfg.h"
#include "db.h"
#include "evalmetrics.h"
#include "log.h"
#include "model.h"
#include "rules.h"
#include "trainset.h"

typedef struct eval_opts {
    char *database_url;
    int64_t db_timeout_ms;
    char *input;
    char *train;
    char *test;
    int64_t delay_days;
    char *model;
    int64_t model_weight;
    int64_t top_k;
    char *unlabelled;
    char *dump;
    char *rules_file;
    char *log_level;
} eval_opts;

#define O(field) offsetof(eval_opts, field)
static const cfg_opt eval_options[] = {
    {"database-url", "FS_DATABASE_URL", CFG_STRING,
     "postgresql://postgres@127.0.0.1:5432/fraudshield", 1, 4096, O(database_url),
     "PostgreSQL connection URL (rows are read from there unless input is set)", true},
    {"db-timeout-ms", "FS_DB_TIMEOUT_MS", CFG_INT, "1800000", 1000, 86400000, O(db_timeout_ms),
     "the rows query (every decision from the first training day to the last test day: sent, "
     "every row read) must be done within this: PostgreSQL cancels it then (a server that does "
     "not answer is given up 2 s later) and the run fails (30 min: periods of many millions of "
     "decisions may need more)", false},
    {"input", "FS_INPUT", CFG_STRING, "", 0, 4096, O(input),
     "read the rows from a psql export of fraudshield-train --print-query (with every label) "
     "instead", false},
    {"train", "FS_TRAIN", CFG_STRING, "2018-07-25:2018-07-31", 21, 21, O(train),
     "training period FROM:TO (days inclusive): its first day starts the known-compromised history",
     false},
    {"test", "FS_TEST", CFG_STRING, "2018-08-08:2018-08-14", 21, 21, O(test),
     "test period FROM:TO (days inclusive, UTC)", false},
    {"delay-days", "FS_DELAY_DAYS", CFG_INT, "7", 0, 365, O(delay_days),
     "feedback delay: a card is known compromised on day T after a fraud on or before T - delay - 1",
     false},
    {"model", "FS_MODEL", CFG_STRING, "", 0, 4096, O(model),
     "model file to re-score the test rows with (\"\": rules only)", false},
    {"model-weight", "FS_MODEL_WEIGHT", CFG_INT, "-1", -1, 100, O(model_weight),
     "points a model probability of 1 adds in the blend (-1: the rules file's blend.model_weight)",
     false},
    {"rules-file", "FS_RULES_FILE", CFG_STRING, "schemas/rules/default.json", 1, 4096,
     O(rules_file), "the scorer's rules file: its model_covered rules count in the rules-only "
     "score and add 0 to the blend, as the scorer with a model scores", false},
    {"top-k", "FS_TOP_K", CFG_INT, "100", 1, 100000, O(top_k),
     "k of card precision@k", false},
    {"unlabelled", "FS_UNLABELLED", CFG_STRING, "skip", 4, 5, O(unlabelled),
     "decisions without a label: skip (left out, with a warning), or legit (genuine: for a replay "
     "that posted only the frauds, fraudshield-replay --outcomes fraud)", false},
    {"dump", "FS_DUMP", CFG_STRING, "", 0, 4096, O(dump),
     "write the test rows to this file (TSV: day, card hash, label, rules points, the "
     "model_covered rules' share of them, model probability, blend score) for analysis (\"\": "
     "none)", false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 1, 16, O(log_level),
     "debug, info, warn or error", false},
    {0},
};
#undef O

static const char SUMMARY[] =
    "FraudShield evaluation: the handbook's AUC ROC, average precision and card precision@100 of "
    "the rules, the model and their blend over a test period of stored decisions.";

typedef struct metrics3 {
    double auc, ap, cp;
} metrics3;

#define DAY_MS 86400000LL

static int32_t day_of(int64_t ms) { return (int32_t)(ms >= 0 ? ms / DAY_MS : (ms - DAY_MS + 1) / DAY_MS); }

static int measure(const evm_item *it, size_t n, size_t k, metrics3 *m, char *errstr, size_t len) {
    if (evm_auc_roc(it, n, &m->auc, errstr, len) != 0 ||
        evm_average_precision(it, n, &m->ap, errstr, len) != 0 ||
        evm_card_precision_at_k(it, n, k, &m->cp, NULL, 0, NULL, errstr, len) != 0)
        return -1;
    return 0;
}

/* The test rows of [from, to) that survive the known-compromised filter, as evm items with the
 * rules score; idx[i] = the row of item i. Returns the count, or (size_t)-1 with errstr. */
static size_t test_items(const trs *t, int64_t from, int64_t to, int32_t since, int32_t delay,
                         evm_item *hist, evm_item *it, size_t *idx, char *errstr, size_t len) {
    size_t nh = 0, n = 0;
    for (size_t i = 0; i < trs_count(t); i++) {
        hist[nh++] = (evm_item){0, trs_label(t, i), day_of(trs_event_ms(t, i)), trs_card(t, i)};
        if (trs_event_ms(t, i) < from || trs_event_ms(t, i) >= to) continue;
        /* the row index rides in the score through the filter (exact: far below 2^53) */
        it[n++] = (evm_item){(double)i, trs_label(t, i), day_of(trs_event_ms(t, i)), trs_card(t, i)};
    }
    size_t kept = evm_drop_known_cards(it, n, hist, nh, since, delay, errstr, len);
    for (size_t i = 0; kept != (size_t)-1 && i < kept; i++) {
        idx[i] = (size_t)it[i].score;
        double pts = trs_rules_pts(t, idx[i]);
        it[i].score = isnan(pts) ? 0 : pts;
    }
    return kept;
}

/* The model's probabilities for the rows idx[0..n) from their stored features. */
static int rescore(model *m, const trs *t, const size_t *idx, size_t n, float *p, char *errstr,
                   size_t len) {
    size_t nf = model_feature_count(m);
    float *x = malloc((n ? n : 1) * nf * sizeof *x);
    int rc = -1;
    if (!x) return snprintf(errstr, len, "out of memory"), -1;
    for (size_t i = 0; i < n; i++) {
        json_t *obj = json_loads(trs_features(t, idx[i]), 0, NULL);
        if (!json_is_object(obj)) {
            json_decref(obj);
            snprintf(errstr, len, "a decision's features are not a JSON object");
            goto done;
        }
        model_row_from_json(m, obj, x + i * nf);
        json_decref(obj);
    }
    rc = model_predict(m, x, n, nf, p, errstr, len);
done:
    free(x);
    return rc;
}

static void print_row(const char *name, const metrics3 *m) {
    printf("| %-36s | %7.4f | %17.4f | %18.4f |\n", name, m->auc, m->ap, m->cp);
}

/* Everything run() allocates, freed in one place. */
typedef struct eval_run {
    rules *rules;
    const char *covered[RULES_MAX]; /* its model_covered codes (pointers into rules) */
    size_t ncovered;
    int model_weight; /* the blend's: the option, else the rules file's */
    trs *rows;
    evm_item *hist, *it;
    size_t *idx;
    float *p;
    model *m;
} eval_run;

static void eval_run_free(eval_run *r) {
    rules_destroy(r->rules);
    trs_destroy(r->rows);
    free(r->hist);
    free(r->it);
    free(r->idx);
    free(r->p);
    model_destroy(r->m);
}

static void print_covered(const eval_run *r) {
    printf("model_covered rules (counted in the rules only, 0 in the blend as with a model):");
    for (size_t i = 0; i < r->ncovered; i++) printf("%s%s", i ? "," : " ", r->covered[i]);
    printf("\n");
}

static void print_table(const metrics3 *rules_only, const metrics3 *mod, const metrics3 *blend,
                        const metrics3 *ties, const eval_opts *o, const eval_run *r, size_t n,
                        size_t frauds) {
    static const struct { const char *name; metrics3 m; } handbook[] = {
        {"handbook: logistic regression", {0.871, 0.606, 0.291}},
        {"handbook: decision tree, depth 2", {0.763, 0.496, 0.241}},
        {"handbook: decision tree, unlimited", {0.788, 0.309, 0.243}},
        {"handbook: random forest", {0.867, 0.658, 0.287}},
        {"handbook: XGBoost", {0.862, 0.639, 0.273}},
        {"handbook: random scores", {0.5, 0.007, 0.017}},
    };
    char name[64];
    printf("test %s: %zu transactions, %zu frauds (known compromised cards removed)\n", o->test, n,
           frauds);
    if (mod && r->ncovered) print_covered(r);
    printf("| %-36s | AUC ROC | average precision | card precision@%-3d |\n", "scores",
           (int)o->top_k);
    printf("|%s|---------|-------------------|--------------------|\n",
           "--------------------------------------");
    print_row("FraudShield rules only", rules_only);
    if (mod) {
        print_row("FraudShield model", mod);
        snprintf(name, sizeof name, "FraudShield blend (model_weight %d)", r->model_weight);
        print_row(name, blend);
        print_row("FraudShield blend, ties by model", ties);
    }
    for (size_t i = 0; i < sizeof handbook / sizeof handbook[0]; i++)
        print_row(handbook[i].name, &handbook[i].m);
}

/* The test rows with their scores (r->hist holds the blend when a model is given). */
static int dump_rows(const char *path, const eval_run *r, size_t n, char *errstr, size_t len) {
    FILE *f = fopen(path, "w");
    if (!f) return snprintf(errstr, len, "dump: %s: cannot write", path), -1;
    fprintf(f, "day\tcard\tlabel\trules\tcovered\tmodel\tblend\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%" PRId32 "\t%016" PRIx64 "\t%d\t%g\t%g\t%.9g\t%g\n", r->it[i].day,
                r->it[i].card, r->it[i].label, r->it[i].score, trs_covered_pts(r->rows, r->idx[i]),
                r->m ? (double)r->p[i] : NAN, r->m ? r->hist[i].score : NAN);
    if (fclose(f) != 0) return snprintf(errstr, len, "dump: %s: write failed", path), -1;
    return 0;
}

static int load(const eval_opts *o, const trs_filter *f, trs *t, char *errstr, size_t len) {
    if (o->input[0]) return trs_load_file(t, o->input, f, errstr, len);
    PGconn *c = db_connect(o->database_url, "fraudshield-eval", errstr, len);
    int rc = c ? trs_load_pg(t, c, f, (int)o->db_timeout_ms, errstr, len) : -1;
    if (c) PQfinish(c);
    return rc;
}

/* The rules file (its model_covered codes, its model weight), the model, the rows of the train
 * and test periods into r; the test period into *test_from, *test_to, the training's first day
 * into *since. */
static int setup(const eval_opts *o, eval_run *r, int64_t *test_from, int64_t *test_to,
                 int32_t *since, char *errstr, size_t len) {
    int64_t train_from, train_to;
    if (trs_parse_period(o->train, &train_from, &train_to) != 0 ||
        trs_parse_period(o->test, test_from, test_to) != 0 || *test_from < train_to)
        return snprintf(errstr, len, "train/test: FROM:TO days expected, the test after the training"), -1;
    if (strcmp(o->unlabelled, "skip") != 0 && strcmp(o->unlabelled, "legit") != 0)
        return snprintf(errstr, len, "unlabelled: skip or legit"), -1;
    if (!(r->rules = rules_load(o->rules_file, errstr, len))) return -1; /* errstr names the file */
    r->ncovered = rules_model_covered(r->rules, r->covered, RULES_MAX);
    r->model_weight = o->model_weight >= 0 ? (int)o->model_weight : rules_model_weight(r->rules);
    trs_filter f = {train_from, *test_to, INT64_MAX, strcmp(o->unlabelled, "legit") == 0,
                    r->covered, r->ncovered};
    if (o->model[0] && !(r->m = model_load(o->model, 0, errstr, len))) return -1;
    if (!(r->rows = trs_new()) || load(o, &f, r->rows, errstr, len) != 0) return -1;
    if (trs_skipped(r->rows))
        log_msg(LOG_WARN, "unlabelled_rows", "%zu decisions without a label left out",
                trs_skipped(r->rows));
    *since = day_of(train_from);
    size_t n = trs_count(r->rows);
    r->hist = malloc((n ? n : 1) * sizeof *r->hist);
    r->it = malloc((n ? n : 1) * sizeof *r->it);
    r->idx = malloc((n ? n : 1) * sizeof *r->idx);
    r->p = malloc((n ? n : 1) * sizeof *r->p);
    if (!r->hist || !r->it || !r->idx || !r->p) return snprintf(errstr, len, "out of memory"), -1;
    return 0;
}

/* The model (mm), the blend by score (mb) and by score then model (mt) of the nt test items. */
static int measure_model(const eval_opts *o, eval_run *r, size_t nt, metrics3 *mm, metrics3 *mb,
                         metrics3 *mt, char *errstr, size_t len) {
    size_t k = (size_t)o->top_k;
    if (rescore(r->m, r->rows, r->idx, nt, r->p, errstr, len) != 0) return -1;
    for (size_t i = 0; i < nt; i++) r->hist[i] = r->it[i], r->hist[i].score = r->p[i];
    if (measure(r->hist, nt, k, mm, errstr, len) != 0) return -1;
    for (size_t i = 0; i < nt; i++) { /* the scorer's own blend, model_covered rules adding 0 */
        double covered = r->model_weight > 0 ? trs_covered_pts(r->rows, r->idx[i]) : 0;
        int pts = (int)(r->it[i].score - covered);
        r->hist[i].score = rules_blend_score(pts, r->p[i], r->model_weight);
    }
    if (measure(r->hist, nt, k, mb, errstr, len) != 0) return -1;
    /* the order of a queue sorted by score, then by the model's probability (stored with each
     * decision as model_score): the integer score leaves most payments tied */
    for (size_t i = 0; i < nt; i++) r->hist[i].score += 0.5 * r->p[i];
    if (measure(r->hist, nt, k, mt, errstr, len) != 0) return -1;
    for (size_t i = 0; i < nt; i++) r->hist[i].score -= 0.5 * r->p[i];
    return 0;
}

static int evaluate(const eval_opts *o, eval_run *r, char *errstr, size_t len) {
    int64_t test_from, test_to;
    int32_t since;
    metrics3 mr, mm, mb, mt;
    size_t frauds = 0;
    if (setup(o, r, &test_from, &test_to, &since, errstr, len) != 0) return -1;
    size_t nt = test_items(r->rows, test_from, test_to, since, (int32_t)o->delay_days, r->hist,
                           r->it, r->idx, errstr, len);
    if (nt == (size_t)-1 || measure(r->it, nt, (size_t)o->top_k, &mr, errstr, len) != 0) return -1;
    for (size_t i = 0; i < nt; i++) frauds += r->it[i].label != 0;
    if (r->m && measure_model(o, r, nt, &mm, &mb, &mt, errstr, len) != 0) return -1;
    if (o->dump[0] && dump_rows(o->dump, r, nt, errstr, len) != 0) return -1;
    print_table(&mr, r->m ? &mm : NULL, &mb, &mt, o, r, nt, frauds);
    const metrics3 *last = r->m ? &mt : &mr;
    printf("eval auc=%.4f ap=%.4f cp100=%.4f\n", last->auc, last->ap, last->cp);
    return 0;
}

int main(int argc, char **argv) {
    eval_opts o = {0};
    cfg_props props = {0};
    char errstr[1024];
    eval_run r = {0};
    int rc = 1;
    cfg_result cr = app_configure("eval", eval_options, &o, &props, argc, argv, "fraudshield-eval",
                                  SUMMARY);
    if (cr == CFG_HELP) {
        rc = 0;
    } else if (cr == CFG_OK) {
        rc = evaluate(&o, &r, errstr, sizeof errstr) == 0 ? 0 : 1;
        if (rc) log_msg(LOG_ERROR, "eval_failed", "%s", errstr);
    }
    eval_run_free(&r);
    cfg_free(eval_options, &o, &props);
    return rc;
}
