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
    trs_filter f = {INT64_MIN, INT64_MAX, INT64_MAX, 0, NULL};
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

    char **names;
    size_t n;
    assert_int_equal(trs_auto_features(t, "user_count", &names, &n, err, sizeof err), 0);
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
    trs_filter all = {INT64_MIN, INT64_MAX, INT64_MAX, 1, NULL};
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
    trs_filter all = {INT64_MIN, INT64_MAX, INT64_MAX, 0, NULL};
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
    char **names;
    size_t n;
    assert_int_equal(trs_auto_features(t, "", &names, &n, err, sizeof err), -1); /* no rows */
    trs_destroy(t);
    trs_destroy(NULL);
    char sql[4096];
    assert_int_equal(trs_query_text(&period, sql, sizeof sql), 0);
    assert_non_null(strstr(sql, "'2018-07-25T00:00:00.000Z'::timestamptz"));
    assert_non_null(strstr(sql, "'infinity'::timestamptz"));
    assert_int_equal(trs_query_text(&period, sql, 10), -1);
}

/* --skip-rules of fraudshield-eval: codes written into the query as a text[] literal, so only
 * [A-Za-z0-9_] lists are accepted (nothing else can reach the SQL). */
static void test_skip_rules(void **state) {
    (void)state;
    char sql[4096];
    trs_filter f = {INT64_MIN, INT64_MAX, INT64_MAX, 0, NULL};
    assert_int_equal(trs_query_text(&f, sql, sizeof sql), 0);
    assert_non_null(strstr(sql, "r->>'code' <> ALL ('{}'::text[])"));
    f.skip_rules = "CARD_LINKED_TO_FRAUD,HIGH_VALUE";
    assert_int_equal(trs_query_text(&f, sql, sizeof sql), 0);
    assert_non_null(strstr(sql, "'{CARD_LINKED_TO_FRAUD,HIGH_VALUE}'::text[]"));
    assert_true(trs_rule_codes_valid(""));
    assert_true(trs_rule_codes_valid("A_1"));
    assert_false(trs_rule_codes_valid("A,"));
    assert_false(trs_rule_codes_valid(",A"));
    assert_false(trs_rule_codes_valid("A,,B"));
    assert_false(trs_rule_codes_valid("A'}') OR true --"));
    f.skip_rules = "X'";
    assert_int_equal(trs_query_text(&f, sql, sizeof sql), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periods),
        cmocka_unit_test(test_file_rows),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_skip_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
