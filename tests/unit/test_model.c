/* Unit tests for scorer/model.c: train a tiny model on synthetic data, check that it separates
 * the classes, survives a save/load round trip with its header, and maps feature objects. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "evalmetrics.h"
#include "model.h"

#define ROWS 2000
#define COLS 3

static const char *const NAMES[COLS] = {"amount_minor", "night", "noise"};

/* Fraud = a large amount at night; noise carries nothing; some amounts are missing. */
static void synth(float *x, float *y, size_t n, unsigned seed) {
    srand(seed);
    for (size_t i = 0; i < n; i++) {
        float amount = (float)(rand() % 10000), night = (float)(rand() % 2);
        x[i * COLS + 0] = i % 50 == 0 ? NAN : amount;
        x[i * COLS + 1] = night;
        x[i * COLS + 2] = (float)rand() / (float)RAND_MAX;
        y[i] = amount > 7000 && night > 0 ? 1.0f : 0.0f;
    }
}

static double auc_of(const float *pred, const float *y, size_t n) {
    evm_item *it = calloc(n, sizeof *it);
    double auc = 0;
    char err[128];
    for (size_t i = 0; i < n; i++) it[i] = (evm_item){pred[i], y[i] > 0.5f, 0, i};
    assert_int_equal(evm_auc_roc(it, n, &auc, err, sizeof err), 0);
    free(it);
    return auc;
}

static void test_train_save_load_predict(void **state) {
    (void)state;
    static float x[ROWS * COLS], y[ROWS], xt[ROWS * COLS], yt[ROWS], p1[ROWS], p2[ROWS];
    char err[512], path[] = "/tmp/fs_test_model_XXXXXX";
    model_params prm;
    model_params_default(&prm);
    prm.rounds = 20;
    prm.max_depth = 3;
    prm.eta = 0.3;
    prm.threads = 1;
    synth(x, y, ROWS, 1);
    synth(xt, yt, ROWS, 2); /* held out */
    model *m = model_train(x, y, ROWS, COLS, NAMES, "test-synthetic", &prm, err, sizeof err);
    assert_non_null(m);
    assert_string_equal(model_version(m), "test-synthetic+unsaved");
    int prc = model_predict(m, xt, ROWS, COLS, p1, err, sizeof err);
    if (prc) fprintf(stderr, "%s\n", err);
    assert_int_equal(prc, 0);
    assert_true(auc_of(p1, yt, ROWS) > 0.99);
    assert_int_equal(model_predict(m, xt, ROWS, COLS - 1, p1, err, sizeof err), -1); /* shape */
    assert_int_equal(model_set_attr(m, "fs_train_from", "2018-07-25", err, sizeof err), 0);
    assert_int_equal(model_set_attr(m, "bad", "x", err, sizeof err), -1);
    double gain[COLS];
    assert_int_equal(model_importance(m, gain, err, sizeof err), 0);
    assert_true(gain[0] > gain[2] && gain[1] > gain[2]); /* the signal beats the noise */

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(model_save(m, path, err, sizeof err), 0);
    model *l = model_load(path, 1, err, sizeof err);
    assert_non_null(l);
    assert_string_equal(model_version(l), model_version(m)); /* save sets the file's hash */
    assert_int_equal(strncmp(model_version(l), "test-synthetic+", 15), 0);
    assert_int_equal(strlen(model_version(l)), strlen("test-synthetic+") + 12);
    assert_int_equal(model_feature_count(l), COLS);
    assert_string_equal(model_feature_name(l, 2), "noise");
    assert_string_equal(model_attr(l, "fs_train_from"), "2018-07-25");
    assert_null(model_attr(l, "fs_nothing"));
    assert_int_equal(model_predict(l, xt, ROWS, COLS, p2, err, sizeof err), 0);
    for (size_t i = 0; i < ROWS; i++) assert_true(fabsf(p1[i] - p2[i]) < 1e-6f);
    model_destroy(l);
    model_destroy(m);
    unlink(path);
}

static void test_load_errors(void **state) {
    (void)state;
    char err[512], path[] = "/tmp/fs_test_model_XXXXXX";
    assert_null(model_load("/nonexistent/model.json", 1, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/model.json"));
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"not\": \"a model\"}", 18), 18);
    close(fd);
    assert_null(model_load(path, 1, err, sizeof err));
    assert_non_null(strstr(err, path));
    unlink(path);
    float x[4] = {1, 2, 3, 4}, y[2] = {1, 0};
    const char *bad[2] = {"Amount", "x"};
    model_params prm;
    model_params_default(&prm);
    prm.rounds = 1;
    assert_null(model_train(x, y, 2, 2, bad, "v", &prm, err, sizeof err)); /* invalid name */
    assert_non_null(strstr(err, "feature names must be"));
    assert_null(model_train(x, y, 2, 2, bad, "", &prm, err, sizeof err));
    model_destroy(NULL);
}

/* A trained model's file with its header rewritten: fs_features, and XGBoost's own
 * learner.feature_names (JSON text; NULL: the key removed, as a model written by another tool). */
static void rewrite_header(const char *src, const char *dst, const char *fs_features,
                           const char *feature_names) {
    json_error_t je;
    json_t *doc = json_load_file(src, 0, &je), *learner = json_object_get(doc, "learner");
    assert_non_null(learner);
    json_object_set_new(json_object_get(learner, "attributes"), "fs_features",
                        json_string(fs_features));
    if (feature_names) {
        json_object_set_new(learner, "feature_names", json_loads(feature_names, 0, &je));
    } else {
        json_object_del(learner, "feature_names");
        json_object_del(learner, "feature_types");
    }
    assert_int_equal(json_dump_file(doc, dst, 0), 0);
    json_decref(doc);
}

/* fs_features feeds the columns, the trees split on positions learnt under XGBoost's names: the
 * two must agree, name for name, when the file has both (issue: a reordered header fed
 * amount_minor into the column learnt as user_count_300s). */
static void test_load_header_names(void **state) {
    (void)state;
    static const struct {
        const char *fs_features, *feature_names, *err; /* err NULL: loads */
    } cases[] = {
        {"amount_minor,night,noise", "[\"amount_minor\", \"night\", \"noise\"]", NULL},
        {"night,amount_minor,noise", "[\"amount_minor\", \"night\", \"noise\"]",
         "column 1 is \"night\" in fs_features, \"amount_minor\" in feature_names"},
        {"amount_minor,night,noise", "[\"amount_minor\", \"noise\", \"night\"]",
         "column 2 is \"night\" in fs_features, \"noise\" in feature_names"},
        {"amount_minor,night,night", "[\"amount_minor\", \"night\", \"night\"]",
         "fs_features: \"night\" is named twice (columns 2 and 3)"},
        {"night,night,noise", NULL, "fs_features: \"night\" is named twice (columns 1 and 2)"},
        {"amount_minor,night,noise", "[\"amount_minor\", \"night\"]",
         "fs_features names 3 features, XGBoost's feature_names 2"},
        {"amount_minor,night,noise", NULL, NULL}, /* no XGBoost names: fs_features is the order */
        {"noise,night,amount_minor", NULL, NULL}, /* nothing to compare it with */
        {"amount_minor,night,noise", "[]", NULL},
    };
    static float x[ROWS * COLS], y[ROWS];
    char err[512], path[] = "/tmp/fs_test_model_XXXXXX", edited[] = "/tmp/fs_test_model_XXXXXX";
    model_params prm;
    model_params_default(&prm);
    prm.rounds = 2;
    prm.threads = 1;
    synth(x, y, ROWS, 1);
    model *m = model_train(x, y, ROWS, COLS, NAMES, "test-names", &prm, err, sizeof err);
    assert_non_null(m);
    int fd = mkstemp(path), fd2 = mkstemp(edited);
    assert_true(fd >= 0 && fd2 >= 0);
    close(fd);
    close(fd2);
    assert_int_equal(model_save(m, path, err, sizeof err), 0);
    model_destroy(m);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rewrite_header(path, edited, cases[i].fs_features, cases[i].feature_names);
        model *l = model_load(edited, 1, err, sizeof err);
        if (!cases[i].err) {
            if (!l) fprintf(stderr, "case %zu: %s\n", i, err);
            assert_non_null(l);
            char first[MODEL_NAME_MAX];
            snprintf(first, sizeof first, "%.*s", (int)strcspn(cases[i].fs_features, ","),
                     cases[i].fs_features);
            assert_string_equal(model_feature_name(l, 0), first); /* fs_features gives the order */
        } else {
            if (l || !strstr(err, cases[i].err)) fprintf(stderr, "case %zu: %s\n", i, err);
            assert_null(l);
            assert_non_null(strstr(err, cases[i].err));
            assert_non_null(strstr(err, edited)); /* the error names the file */
        }
        model_destroy(l);
    }
    unlink(path);
    unlink(edited);
}

/* model_train refuses what can only give a useless model: one class (a constant prediction:
 * all fraud = every payment blocked) and a name twice. */
static void test_train_refuses(void **state) {
    (void)state;
    static float x[ROWS * COLS], y[ROWS], ones[ROWS], zeros[ROWS];
    char err[512];
    const char *dup[COLS] = {"amount_minor", "night", "amount_minor"};
    model_params prm;
    model_params_default(&prm);
    prm.rounds = 2;
    prm.threads = 1;
    synth(x, y, ROWS, 1);
    for (size_t i = 0; i < ROWS; i++) ones[i] = 1;
    assert_null(model_train(x, ones, ROWS, COLS, NAMES, "v", &prm, err, sizeof err));
    assert_non_null(strstr(err, "both classes: 2000 fraud and 0 legitimate"));
    assert_null(model_train(x, zeros, ROWS, COLS, NAMES, "v", &prm, err, sizeof err));
    assert_non_null(strstr(err, "both classes: 0 fraud and 2000 legitimate"));
    assert_null(model_train(x, y, ROWS, COLS, dup, "v", &prm, err, sizeof err));
    assert_non_null(strstr(err, "\"amount_minor\" is named twice (columns 1 and 3)"));
}

static void test_features_row(void **state) {
    (void)state;
    json_error_t je;
    json_t *f = json_loads("{\"amount_minor\": 1250, \"night\": 1, \"weekend\": false,"
                           " \"currency\": \"EUR\", \"user_count_86400s\": 4,"
                           " \"user_sum_minor_86400s\": 1000, \"merchant_risk_7d_delay_7d\": 0.25,"
                           " \"user_count_604800s\": 0, \"user_sum_minor_604800s\": 0}", 0, &je);
    assert_non_null(f);
    const char *names[] = {"amount_minor", "night", "weekend", "currency", "absent",
                           "user_avg_minor_86400s", "merchant_risk_7d_delay_7d",
                           "user_avg_minor_604800s", "card_avg_minor_86400s"};
    float row[9];
    model_features_row(names, 9, f, row);
    assert_true(row[0] == 1250.0f && row[1] == 1.0f && row[2] == 0.0f);
    assert_true(isnan(row[3]) && isnan(row[4]));
    assert_true(row[5] == 250.0f);
    assert_true(row[6] == 0.25f);
    assert_true(isnan(row[7]) && isnan(row[8])); /* count 0; window absent */
    json_decref(f);
    assert_true(model_feature_name_valid("user_count_300s"));
    assert_false(model_feature_name_valid("User"));
    assert_false(model_feature_name_valid(""));
    assert_false(model_feature_name_valid("a,b"));
}

/* model_feature_derived(): the one reading of "<entity>_avg_minor_<rest>" that the JSON rows, the
 * scorer's bound rows and fraudshield-train share. sum NULL: not a derived average. */
static void test_feature_derived(void **state) {
    (void)state;
    static const struct {
        const char *name, *sum, *count;
        size_t size;
    } cases[] = {
        {"user_avg_minor_86400s", "user_sum_minor_86400s", "user_count_86400s", MODEL_NAME_MAX},
        {"ip_avg_minor_600s", "ip_sum_minor_600s", "ip_count_600s", MODEL_NAME_MAX},
        /* whatever follows the marker is the window, as written */
        {"merchant_avg_minor_86400s_delay_604800s", "merchant_sum_minor_86400s_delay_604800s",
         "merchant_count_86400s_delay_604800s", MODEL_NAME_MAX},
        {"user_avg_minor_300", "user_sum_minor_300", "user_count_300", MODEL_NAME_MAX},
        {"a_avg_minor_1s_avg_minor_2s", "a_sum_minor_1s_avg_minor_2s", "a_count_1s_avg_minor_2s",
         MODEL_NAME_MAX}, /* the first marker */
        {"_avg_minor_1s", NULL, NULL, MODEL_NAME_MAX},            /* no entity */
        {"amount_minor", NULL, NULL, MODEL_NAME_MAX},
        {"user_sum_minor_300s", NULL, NULL, MODEL_NAME_MAX},
        {"user_avg_minor_86400s", NULL, NULL, 21},                 /* the sum key does not fit */
        {"user_avg_minor_86400s", "user_sum_minor_86400s", "user_count_86400s", 22}, /* just fits */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char sum[MODEL_NAME_MAX], count[MODEL_NAME_MAX];
        int got = model_feature_derived(cases[i].name, sum, count, cases[i].size);
        if (got != (cases[i].sum != NULL))
            fail_msg("%s (size %zu): returned %d", cases[i].name, cases[i].size, got);
        if (got && (strcmp(sum, cases[i].sum) != 0 || strcmp(count, cases[i].count) != 0))
            fail_msg("%s: %s / %s", cases[i].name, sum, count);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_save_load_predict),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_header_names),
        cmocka_unit_test(test_train_refuses),
        cmocka_unit_test(test_features_row),
        cmocka_unit_test(test_feature_derived),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
