/* Unit tests for tools/trainset.c: psql text-format rows, filters, auto features, the matrix. */
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

#include "trainset.h"

/* 2018-07-25T00:00:00Z */
#define T0 1532476800000LL

static void write_file(char *path, const char *text) {
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Rows from text (psql text format), every one kept: through a temporary file, removed after. */
static trs *rows_of(const char *text) {
    char path[] = "/tmp/fs_test_trs_XXXXXX", err[256];
    trs_filter all = {INT64_MIN, INT64_MAX, INT64_MAX, 0, NULL, 0};
    trs *t = trs_new();
    write_file(path, text);
    int rc = trs_load_file(t, path, &all, err, sizeof err);
    unlink(path);
    if (rc != 0) fail_msg("%s", err);
    return t;
}

static void test_periods(void **state) {
    (void)state;
    int64_t a, b;
    assert_int_equal(trs_parse_period("2018-07-25:2018-07-31", &a, &b), 0);
    assert_int_equal(a, T0);
    assert_int_equal(b, T0 + 7 * 86400000LL);
    assert_int_equal(trs_parse_period("2018-07-31:2018-07-25", &a, &b), -1);
    assert_int_equal(trs_parse_period("2018-07-25", &a, &b), -1);
    assert_int_equal(trs_parse_time("2018-07-25", &a), 0);
    assert_int_equal(a, T0);
    assert_int_equal(trs_parse_time("2018-07-25T01:00:00Z", &a), 0);
    assert_int_equal(a, T0 + 3600000);
    assert_int_equal(trs_parse_time("yesterday", &a), -1);
}

static void test_file_rows(void **state) {
    (void)state;
    char path[] = "/tmp/fs_test_trs_XXXXXX", err[256], text[1024];
    /* a string with a tab and a backslash (psql escapes them), a NULL label, a row outside */
    snprintf(text, sizeof text,
             "{\"amount_minor\": 100, \"note\": \"a\\\\tb\\\\\\\\\", \"user_count_86400s\": 2,"
             " \"user_sum_minor_86400s\": 300}\t1\t%lld\tc1\t80\t75\n"
             "{\"amount_minor\": 50, \"night\": true}\t0\t%lld\tc2\t\\N\t0\n"
             "{\"amount_minor\": 70}\t\\N\t%lld\tc3\t0\t0\n"
             "{\"amount_minor\": 90}\t0\t%lld\tc1\t0\t0\n"
             "\n",
             T0, T0 + 1000, T0 + 2000, T0 + 7 * 86400000LL);
    write_file(path, text);
    trs_filter f = {INT64_MIN, INT64_MAX, INT64_MAX, 0, NULL, 0};
    assert_int_equal(trs_parse_period("2018-07-25:2018-07-31", &f.from_ms, &f.to_ms), 0);
    trs *t = trs_new();
    assert_int_equal(trs_load_file(t, path, &f, err, sizeof err), 0);
    assert_int_equal(trs_count(t), 2);   /* the unlabelled one skipped, the last one outside */
    assert_int_equal(trs_skipped(t), 1);
    assert_non_null(strstr(trs_features(t, 0), "\"a\\tb\\\\\"")); /* JSON escapes restored */
    assert_int_equal(trs_label(t, 0), 1);
    assert_int_equal(trs_event_ms(t, 1), T0 + 1000);
    assert_true(trs_score(t, 0) == 80 && isnan(trs_score(t, 1)));
    assert_true(trs_rules_pts(t, 0) == 75);
    assert_true(trs_card(t, 0) != trs_card(t, 1) && trs_card(t, 0) != 0);

    char **names, **empty;
    size_t n, nempty;
    assert_int_equal(
        trs_auto_features(t, "user_count", &names, &n, &empty, &nempty, err, sizeof err), 0);
    assert_int_equal(nempty, 0);
    assert_null(empty);
    const char *want[] = {"amount_minor", "night", "user_avg_minor_86400s",
                          "user_sum_minor_86400s"};
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) assert_string_equal(names[i], want[i]);
    float *x, *y;
    assert_int_equal(trs_matrix(t, 0, 2, (const char *const *)names, n, &x, &y, err, sizeof err), 0);
    assert_true(x[0] == 100 && isnan(x[1]) && x[2] == 150 && x[3] == 300);
    assert_true(x[4] == 50 && x[5] == 1 && isnan(x[6]) && isnan(x[7]));
    assert_true(y[0] == 1 && y[1] == 0);
    free(x);
    free(y);
    trs_names_free(names, n);
    trs_destroy(t);

    /* unlabelled = legit, no period */
    trs_filter all = {INT64_MIN, INT64_MAX, INT64_MAX, 1, NULL, 0};
    t = trs_new();
    assert_int_equal(trs_load_file(t, path, &all, err, sizeof err), 0);
    assert_int_equal(trs_count(t), 4);
    assert_int_equal(trs_label(t, 2), 0);
    trs_destroy(t);
    unlink(path);
}

static void test_file_errors(void **state) {
    (void)state;
    char path[] = "/tmp/fs_test_trs_XXXXXX", err[256];
    write_file(path, "{\"a\": 1}\t1\n{\"a\": 1}\tyes\n");
    trs_filter all = {INT64_MIN, INT64_MAX, INT64_MAX, 0, NULL, 0};
    trs *t = trs_new();
    assert_int_equal(trs_load_file(t, path, &all, err, sizeof err), -1);
    assert_non_null(strstr(err, ":2:")); /* the line */
    trs_destroy(t);
    /* two columns are enough without a period, not with one */
    trs_filter period = all;
    assert_int_equal(trs_parse_period("2018-07-25:2018-07-31", &period.from_ms, &period.to_ms), 0);
    t = trs_new();
    assert_int_equal(trs_load_file(t, path, &period, err, sizeof err), -1);
    assert_non_null(strstr(err, ":1:"));
    trs_destroy(t);
    unlink(path);
    t = trs_new();
    assert_int_equal(trs_load_file(t, "/nonexistent/rows.tsv", &all, err, sizeof err), -1);
    char **names, **empty;
    size_t n, nempty;
    assert_int_equal(trs_auto_features(t, "", &names, &n, &empty, &nempty, err, sizeof err), -1);
    assert_non_null(strstr(err, "0 numeric features found")); /* no rows */
    trs_destroy(t);
    trs_destroy(NULL);
    char sql[4096];
    assert_int_equal(trs_query_text(&period, sql, sizeof sql), 0);
    assert_non_null(strstr(sql, "'2018-07-25T00:00:00.000Z'::timestamptz"));
    assert_non_null(strstr(sql, "'infinity'::timestamptz"));
    assert_int_equal(trs_query_text(&period, sql, 10), -1);
}

/* The covered rules' points (fraudshield-eval: the rules file's model_covered rules, which the
 * scorer with a model counts 0) come from the hits column, from a file as from the database. */
static void test_covered_points(void **state) {
    (void)state;
    static const char *const covered[] = {"CARD_LINKED_TO_FRAUD", "EMAIL_LINKED_TO_FRAUD"};
    trs_filter f = {INT64_MIN, INT64_MAX, INT64_MAX, 1, covered, 2};
    double pts = -1;
    assert_int_equal(trs_covered_points(&f, "{\"CARD_LINKED_TO_FRAUD\": 60, \"HIGH_VALUE\": 25}",
                                        &pts), 0);
    assert_true(pts == 60);
    assert_int_equal(trs_covered_points(&f, "{\"CARD_LINKED_TO_FRAUD\": 60, "
                                        "\"EMAIL_LINKED_TO_FRAUD\": 40}", &pts), 0);
    assert_true(pts == 100);
    assert_int_equal(trs_covered_points(&f, "{\"HIGH_VALUE\": 25}", &pts), 0);
    assert_true(pts == 0);
    assert_int_equal(trs_covered_points(&f, NULL, &pts), 0); /* a file without the column */
    assert_true(pts == 0);
    assert_int_equal(trs_covered_points(&f, "[60]", &pts), -1);
    assert_int_equal(trs_covered_points(&f, "{\"CARD", &pts), -1);
    trs_filter none = {INT64_MIN, INT64_MAX, INT64_MAX, 1, NULL, 0};
    assert_int_equal(trs_covered_points(&none, "{\"CARD_LINKED_TO_FRAUD\": 60}", &pts), 0);
    assert_true(pts == 0);

    /* rows: every hit's points in rules_pts, the covered ones' also in covered_pts */
    char path[] = "/tmp/fs_test_trs_XXXXXX", err[256], text[1024];
    snprintf(text, sizeof text,
             "{\"a\": 1}\t1\t%lld\tc1\t100\t85\t{\"CARD_LINKED_TO_FRAUD\": 60, \"HIGH_VALUE\": 25}\n"
             "{\"a\": 2}\t0\t%lld\tc2\t25\t25\t{\"HIGH_VALUE\": 25}\n"
             "{\"a\": 3}\t0\t%lld\tc3\t0\t0\t{}\n"
             "{\"a\": 4}\t0\t%lld\tc4\t60\t60\n", /* an export without the hits column */
             T0, T0 + 1, T0 + 2, T0 + 3);
    write_file(path, text);
    trs *t = trs_new();
    assert_int_equal(trs_load_file(t, path, &f, err, sizeof err), 0);
    assert_int_equal(trs_count(t), 4);
    const double rules_pts[] = {85, 25, 0, 60}, covered_pts[] = {60, 0, 0, 0};
    for (size_t i = 0; i < 4; i++) {
        assert_true(trs_rules_pts(t, i) == rules_pts[i]);
        assert_true(trs_covered_pts(t, i) == covered_pts[i]);
    }
    trs_destroy(t);
    t = trs_new(); /* without covered codes (training) nothing is told apart */
    assert_int_equal(trs_load_file(t, path, &none, err, sizeof err), 0);
    assert_true(trs_rules_pts(t, 0) == 85 && trs_covered_pts(t, 0) == 0);
    trs_destroy(t);
    unlink(path);

    char bad[] = "/tmp/fs_test_trs_XXXXXX";
    write_file(bad, "{\"a\": 1}\t1\t1\tc1\t100\t85\tCARD_LINKED_TO_FRAUD=60\n");
    t = trs_new();
    assert_int_equal(trs_load_file(t, bad, &f, err, sizeof err), -1);
    assert_non_null(strstr(err, ":1:"));
    trs_destroy(t);
    unlink(bad);

    char sql[4096]; /* the query returns the hits whole: one export serves any covered set */
    assert_int_equal(trs_query_text(&f, sql, sizeof sql), 0);
    assert_non_null(strstr(sql, "jsonb_object_agg(r->>'code', (r->>'weight')::int)"));
    assert_null(strstr(sql, "CARD_LINKED_TO_FRAUD"));
}

/* --features auto: a column with no value in any row (a derived average whose count is 0 or
 * absent in every row) is left out and named; nothing left is an error. */
static void test_auto_features(void **state) {
    (void)state;
    static const struct {
        const char *exclude, *names, *empty, *err; /* err NULL: accepted */
    } cases[] = {
        {"", "amount_minor,card_avg_minor_1800s,card_count_1800s,card_sum_minor_1800s,"
             "ip_count_600s,ip_sum_minor_600s,user_count_300s,user_sum_minor_300s",
         "ip_avg_minor_600s,user_avg_minor_300s", NULL},
        {"ip,user", "amount_minor,card_avg_minor_1800s,card_count_1800s,card_sum_minor_1800s", "",
         NULL},
        {"amount,card,ip_count,ip_sum,user_count,user_sum", "", "",
         "no feature column has a value in any of the 3 rows (left out: ip_avg_minor_600s,"
         "user_avg_minor_300s)"},
    };
    char err[512], got[512], gempty[512];
    /* ip: count 0 in every row; user: a sum without its count; card: count 0, then filled */
    trs *t = rows_of("{\"amount_minor\": 100, \"ip_count_600s\": 0, \"ip_sum_minor_600s\": 0,"
                     " \"user_sum_minor_300s\": 100, \"card_count_1800s\": 0,"
                     " \"card_sum_minor_1800s\": 0}\t1\n"
                     "{\"amount_minor\": 50, \"ip_count_600s\": 0, \"ip_sum_minor_600s\": 0,"
                     " \"user_count_300s\": 1, \"card_count_1800s\": 2,"
                     " \"card_sum_minor_1800s\": 90}\t0\n"
                     "{\"amount_minor\": 70, \"model_score\": 0.5}\t0\n");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char **names, **empty;
        size_t n, nempty;
        err[0] = '\0';
        int rc = trs_auto_features(t, cases[i].exclude, &names, &n, &empty, &nempty, err,
                                   sizeof err);
        trs_names_join(names, n, got, sizeof got);
        trs_names_join(empty, nempty, gempty, sizeof gempty);
        if (cases[i].err ? rc != -1 || !strstr(err, cases[i].err) || n || nempty
                         : rc != 0 || strcmp(got, cases[i].names) || strcmp(gempty, cases[i].empty))
            fail_msg("exclude \"%s\": rc %d, names %s, empty %s, %s", cases[i].exclude, rc, got,
                     gempty, err);
        trs_names_free(names, n);
        trs_names_free(empty, nempty);
    }
    trs_destroy(t);
}

/* A feature list given by hand: each name must be able to fill its column in some row (a typo or
 * a string like currency gives a column missing in every row), once, and not model_score; and it
 * must have a value in some row (an average whose count is 0 everywhere: refused, all named
 * together, unless allowed; then returned). */
static void test_check_features(void **state) {
    (void)state;
    static const struct {
        const char *list;
        bool allow;
        const char *err, *empty; /* err NULL: accepted, with these empty columns */
    } cases[] = {
        {"amount_minor,night,user_count_300s", false, NULL, ""},
        {"user_avg_minor_300s", false, NULL, ""},  /* derived: sum and count in one row */
        {"weekend", false, NULL, ""},              /* a boolean in one row, absent in the others */
        {"amount_minor,user_count_300", false, "\"user_count_300\" is in none of the 3 rows' "
         "features", NULL},
        {"amount_minor,currency", false,
         "\"currency\" is never a number in the rows' features (present but not a number in 3 of "
         "3 rows)", NULL},
        {"amount_minor,night,amount_minor", false, "\"amount_minor\" is named twice (columns 1 "
         "and 3)", NULL},
        {"model_score", false, "model_score is the scorer's model output", NULL},
        {"amount_minor,model_score", false, "model_score is the scorer's model output", NULL},
        {"user_avg_minor_300", false, "\"user_avg_minor_300\" is derived from user_sum_minor_300 "
         "/ user_count_300, which none of the 3 rows has", NULL},
        {"card_avg_minor_1800s", false, "\"card_avg_minor_1800s\" is derived from", NULL},
        /* derivable, though every count is 0 (auto leaves it out): refused, each named */
        {"ip_avg_minor_600s", false, "features: no value in any of the 3 rows: ip_avg_minor_600s "
         "(", NULL},
        {"amount_minor,merchant_avg_minor_3600s,user_avg_minor_300s,ip_avg_minor_600s", false,
         "no value in any of the 3 rows: merchant_avg_minor_3600s,ip_avg_minor_600s (", NULL},
        {"amount_minor,merchant_avg_minor_3600s,user_avg_minor_300s,ip_avg_minor_600s", true, NULL,
         "merchant_avg_minor_3600s,ip_avg_minor_600s"},
        /* allowed empty columns do not let a typo through, and it is named first */
        {"ip_avg_minor_600s,user_count_300", true, "\"user_count_300\" is in none", NULL},
        {"ip_avg_minor_600s,user_count_300", false, "\"user_count_300\" is in none", NULL},
    };
    char err[512], list[256], gempty[256];
    trs *t = rows_of("{\"amount_minor\": 100, \"currency\": \"EUR\", \"night\": 0, \"model_score\": 0.5,"
                     " \"user_count_300s\": 1, \"user_sum_minor_300s\": 100, \"ip_count_600s\": 0,"
                     " \"ip_sum_minor_600s\": 0}\t1\n"
                     "{\"amount_minor\": 50, \"currency\": \"GBP\", \"night\": 1, \"weekend\": true,"
                     " \"card_count_1800s\": 2, \"merchant_count_3600s\": 0,"
                     " \"merchant_sum_minor_3600s\": 0}\t0\n"
                     "{\"amount_minor\": 70, \"currency\": \"EUR\", \"ip_count_600s\": 0,"
                     " \"ip_sum_minor_600s\": 0, \"card_sum_minor_1800s\": \"x\"}\t0\n");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *names[8];
        char **empty;
        size_t n = 0, nempty;
        snprintf(list, sizeof list, "%s", cases[i].list);
        for (char *sp, *tok = strtok_r(list, ",", &sp); tok; tok = strtok_r(NULL, ",", &sp))
            names[n++] = tok;
        err[0] = '\0';
        int rc = trs_check_features(t, names, n, cases[i].allow, &empty, &nempty, err, sizeof err);
        trs_names_join(empty, nempty, gempty, sizeof gempty);
        if (cases[i].err ? rc != -1 || !strstr(err, cases[i].err) || empty || nempty
                         : rc != 0 || strcmp(gempty, cases[i].empty))
            fail_msg("%s: rc %d, empty %s, %s", cases[i].list, rc, gempty, err);
        trs_names_free(empty, nempty);
    }
    trs_destroy(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periods),
        cmocka_unit_test(test_file_rows),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_covered_points),
        cmocka_unit_test(test_auto_features),
        cmocka_unit_test(test_check_features),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
