/* model_predict: what the scorer's model costs per payment. Loads a model file with the scorer's
 * own code (scorer/model.c, one XGBoost thread as in the scorer), predicts batches of random
 * feature rows and prints microseconds per row. Usage: model_predict MODEL [ROWS] [BATCHES].
 * The rows are random: tree traversal costs the same whatever the values (every tree is walked to
 * one leaf), so the figure is the scorer's. */
#include "model.h"
#include "scorer.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    char err[256];
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [ROWS] [BATCHES]\n", argv[0]);
        return 2;
    }
    size_t rows = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000;
    int batches = argc > 3 ? atoi(argv[3]) : 50;
    if (rows == 0 || batches <= 0) return 2;
    model *m = model_load(argv[1], SCORER_MODEL_THREADS, err, sizeof err);
    if (!m) {
        fprintf(stderr, "%s: %s\n", argv[1], err);
        return 1;
    }
    size_t nf = model_feature_count(m);
    float *in = malloc(rows * nf * sizeof *in), *out = malloc(rows * sizeof *out);
    if (!in || !out) return 1;
    srand(1);
    for (size_t i = 0; i < rows * nf; i++) in[i] = (float)(rand() % 100000) / 100.0f;
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) /* warm-up, not timed */
        rc = model_predict(m, in, rows, nf, out, err, sizeof err);
    double t0 = now_s();
    for (int i = 0; i < batches && rc == 0; i++)
        rc = model_predict(m, in, rows, nf, out, err, sizeof err);
    double s = now_s() - t0;
    if (rc == 0)
        printf("model_predict model=%s features=%zu rows=%zu us_per_row=%.2f ms_per_batch=%.2f\n",
               model_version(m), nf, rows, s / batches / (double)rows * 1e6, s / batches * 1e3);
    if (rc != 0) fprintf(stderr, "prediction: %s\n", err);
    free(in);
    free(out);
    model_destroy(m);
    return rc == 0 ? 0 : 1;
}
