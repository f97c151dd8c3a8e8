/* trainset: labelled decision rows for training and evaluation: the feature object the scorer
 * stored as evidence with each decision (decisions.features), the payment's label as known at a
 * given time (outcomes), its event time, its card (the customer, user_id) and the rules' points.
 *
 * Rows come from PostgreSQL (trs_load_pg, the query below) or from a file that psql exported with
 * the same query (trs_load_file: `\copy (<trs_query_text(...)>) TO 'rows.tsv'`, psql's default
 * text format: tab-separated, backslash escapes, \N for NULL), so a model can be trained away from
 * the database. Columns, in order:
 *   features   decisions.features as JSON text
 *   label      1 (confirmed_fraud or chargeback), 0 (legitimate or false_positive), NULL (none
 *              known at the cut-off)
 *   event_ms   the payment's event time, ms since the epoch
 *   user_id    the customer (the handbook's card: CUSTOMER_ID)
 *   score      the decision's score (rules, plus the model's share when one was configured)
 *   rules_pts  the summed weights of the rule hits (the score without a model's share, uncapped)
 *   hits       the rule hits' points by code, JSON text: {"CARD_LINKED_TO_FRAUD": 60, ...}
 *              (decisions.reasons), so that the points of any set of rules can be told apart
 *              (trs_filter.covered) from the database and from a file alike
 * A file may stop after label (no time filter, no card, scores missing) or before hits (no
 * covered points). */
#ifndef FS_TRAINSET_H
#define FS_TRAINSET_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct trs trs;

/* Which rows to keep. */
typedef struct trs_filter {
    int64_t from_ms;       /* event time >= from_ms (INT64_MIN: no bound) */
    int64_t to_ms;         /* event time < to_ms (INT64_MAX: no bound) */
    int64_t known_by_ms;   /* labels known at or before this count (INT64_MAX: all); PostgreSQL only */
    int unlabelled_legit;  /* 1: rows without a label are genuine; 0: they are skipped */
    /* Rule codes whose points are also counted apart in trs_covered_pts: the rules file's
     * model_covered rules (rules_model_covered()), which a scorer with a model counts 0. The
     * strings stay the caller's; NULL: none. */
    const char *const *covered;
    size_t ncovered;
} trs_filter;

/* "YYYY-MM-DD" (midnight UTC) or an RFC 3339 time, into ms. Returns 0 or -1. */
int trs_parse_time(const char *s, int64_t *ms);

/* "FROM:TO", two days (inclusive, UTC): [FROM 00:00, the day after TO 00:00). Returns 0 or -1. */
int trs_parse_period(const char *s, int64_t *from_ms, int64_t *to_ms);

trs *trs_new(void);
void trs_destroy(trs *t); /* accepts NULL */

/* The points of f's covered rules in hits (the hits column) into *pts: 0 when f has none or hits
 * is NULL. Returns 0, or -1 when hits is not a JSON object. */
int trs_covered_points(const trs_filter *f, const char *hits, double *pts);

/* Appends one row (features is copied; label -1 = unknown, handled per the filter). covered_pts:
 * the part of rules_pts of f's covered rules (trs_covered_points()). */
int trs_add(trs *t, const trs_filter *f, const char *features, size_t len, int label,
            int64_t event_ms, const char *user_id, double score, double rules_pts,
            double covered_pts);

size_t trs_count(const trs *t);
size_t trs_skipped(const trs *t);         /* unlabelled rows skipped */
const char *trs_features(const trs *t, size_t i);
int trs_label(const trs *t, size_t i);    /* 0 or 1 */
int64_t trs_event_ms(const trs *t, size_t i);
uint64_t trs_card(const trs *t, size_t i); /* 64-bit hash of user_id (0 when absent) */
double trs_score(const trs *t, size_t i); /* NAN when absent */
double trs_rules_pts(const trs *t, size_t i);   /* every hit's points (NAN when absent) */
double trs_covered_pts(const trs *t, size_t i); /* the covered rules' share of them */

/* The query with its parameters written in (for psql \copy), into out. Returns 0, or -1 when out
 * is too small. */
int trs_query_text(const trs_filter *f, char *out, size_t out_size);

/* Streams the query's rows into t (single-row mode: memory holds the rows kept, not the result
 * twice), the whole query within timeout_ms: PostgreSQL cancels it then (statement_timeout, set on
 * the session), and a server that does not answer at all is given up 2 s later (db_query_rows: the
 * connection is dropped). errstr then names db-timeout-ms, the option of the tools that read rows.
 * Returns 0 or -1 with errstr. */
int trs_load_pg(trs *t, PGconn *conn, const trs_filter *f, int timeout_ms, char *errstr,
                size_t errstr_size);

/* Reads a psql text-format file of the query's columns. Returns 0 or -1 with errstr (the line). */
int trs_load_file(trs *t, const char *path, const trs_filter *f, char *errstr, size_t errstr_size);

/* The numeric keys found in the rows' feature objects, plus "<e>_avg_minor_<N>s" for every
 * "<e>_sum_minor_<N>s", minus "model_score" and any name starting with one of the
 * comma-separated prefixes in exclude; sorted by name. A column with no value in any row (a
 * derived average whose count is 0 or absent in every row: ip_avg_minor_600s on a replay without
 * IP addresses) gives the trees nothing to split on and the scorer a feature it was never trained
 * with filled: it goes to *empty instead (sorted; the caller says so). *names and *empty are
 * malloc'd arrays of malloc'd strings (NULL when none; free with trs_names_free). Returns 0, or -1
 * with errstr (and nothing to free) when no column or more than MODEL_MAX_FEATURES are left. */
int trs_auto_features(const trs *t, const char *exclude, char ***names, size_t *n, char ***empty,
                      size_t *nempty, char *errstr, size_t errstr_size);
void trs_names_free(char **names, size_t n);

/* Names comma-separated into out (truncated to out_size). */
void trs_names_join(char *const *names, size_t n, char *out, size_t out_size);

/* Checks a feature list given by hand (fraudshield-train --features) against the rows: each name
 * once; not model_score (the scorer's model output, known only after the prediction a column
 * would feed); and each a number or boolean in some row's features, or derivable there
 * ("<e>_avg_minor_<N>s" from numbers "<e>_sum_minor_<N>s" and "<e>_count_<N>s" in one row). A name
 * in no row (a typo) or never a number (currency) is missing in every row: the trees never split
 * on it, and the model silently lacks the feature meant. Returns -1 with errstr naming the first
 * name at fault.
 * Then, in the same pass, each name must have a value in some row (model_feature_value(), what
 * auto checks): a derivable average whose count is never above 0 (a replay without IP addresses:
 * ip_avg_minor_600s) is a column the trees cannot split on, and a model feature never learnt.
 * Those are refused all together (-1, errstr naming each and the number of rows), unless
 * allow_empty (a script using one list for several periods): then they go to *empty (list order,
 * malloc'd, free with trs_names_free; NULL when none) for the caller to warn. Returns 0. */
int trs_check_features(const trs *t, const char *const *names, size_t n, bool allow_empty,
                       char ***empty, size_t *nempty, char *errstr, size_t errstr_size);

/* Rows [begin, end) as a dense matrix in the order of names (model_features_row(): the scorer's
 * own mapping), into a malloc'd *rows, and their labels into a malloc'd *labels. */
int trs_matrix(const trs *t, size_t begin, size_t end, const char *const *names, size_t n,
               float **rows, float **labels, char *errstr, size_t errstr_size);

#endif
