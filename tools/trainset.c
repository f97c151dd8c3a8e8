/* trainset: labelled decision rows from PostgreSQL or a psql export (see trainset.h). */
#include "trainset.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "fsutil.h"
#include "model.h"

typedef struct trs_row {
    size_t off;        /* features text at t->text + off, NUL-terminated */
    int64_t event_ms;
    uint64_t card;
    double score, rules_pts, covered_pts;
    int label;
} trs_row;

struct trs {
    char *text;
    size_t text_len, text_cap;
    trs_row *rows;
    size_t n, cap, skipped;
};

int trs_parse_time(const char *s, int64_t *ms) {
    char buf[40];
    int y, m, d, used = 0;
    if (strlen(s) == 10 && sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &used) == 3 && used == 10) {
        snprintf(buf, sizeof buf, "%sT00:00:00Z", s);
        return fs_time_parse_rfc3339(buf, ms);
    }
    return fs_time_parse_rfc3339(s, ms);
}

int trs_parse_period(const char *s, int64_t *from_ms, int64_t *to_ms) {
    char a[16], b[16];
    const char *colon = strchr(s, ':');
    if (!colon || colon - s != 10 || strlen(colon + 1) != 10) return -1;
    snprintf(a, sizeof a, "%.10s", s);
    snprintf(b, sizeof b, "%s", colon + 1);
    if (trs_parse_time(a, from_ms) != 0 || trs_parse_time(b, to_ms) != 0) return -1;
    *to_ms += 86400000LL;
    return *to_ms > *from_ms ? 0 : -1;
}

trs *trs_new(void) { return calloc(1, sizeof(trs)); }

void trs_destroy(trs *t) {
    if (!t) return;
    free(t->text);
    free(t->rows);
    free(t);
}

size_t trs_count(const trs *t) { return t->n; }
size_t trs_skipped(const trs *t) { return t->skipped; }
const char *trs_features(const trs *t, size_t i) { return t->text + t->rows[i].off; }
int trs_label(const trs *t, size_t i) { return t->rows[i].label; }
int64_t trs_event_ms(const trs *t, size_t i) { return t->rows[i].event_ms; }
uint64_t trs_card(const trs *t, size_t i) { return t->rows[i].card; }
double trs_score(const trs *t, size_t i) { return t->rows[i].score; }
double trs_rules_pts(const trs *t, size_t i) { return t->rows[i].rules_pts; }
double trs_covered_pts(const trs *t, size_t i) { return t->rows[i].covered_pts; }

/* FNV-1a: cards only need to be told apart, and 64 bits make a collision among a few million
 * customers negligible. */
static uint64_t card_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    if (!s || !*s) return 0;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int trs_covered_points(const trs_filter *f, const char *hits, double *pts) {
    *pts = 0;
    if (!hits || f->ncovered == 0) return 0; /* training: nothing to tell apart, nothing parsed */
    json_t *obj = json_loads(hits, 0, NULL);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return -1;
    }
    for (size_t i = 0; i < f->ncovered; i++) {
        json_t *v = json_object_get(obj, f->covered[i]);
        if (json_is_number(v)) *pts += json_number_value(v);
    }
    json_decref(obj);
    return 0;
}

int trs_add(trs *t, const trs_filter *f, const char *features, size_t len, int label,
            int64_t event_ms, const char *user_id, double score, double rules_pts,
            double covered_pts) {
    if (event_ms < f->from_ms || event_ms >= f->to_ms) return 0;
    if (label < 0 && !f->unlabelled_legit) {
        t->skipped++;
        return 0;
    }
    if (grow((void **)&t->text, &t->text_cap, t->text_len + len + 1, 1) != 0 ||
        grow((void **)&t->rows, &t->cap, t->n + 1, sizeof *t->rows) != 0)
        return -1;
    memcpy(t->text + t->text_len, features, len);
    t->text[t->text_len + len] = '\0';
    t->rows[t->n++] = (trs_row){t->text_len, event_ms, card_hash(user_id), score, rules_pts,
                                covered_pts, label > 0};
    t->text_len += len + 1;
    return 0;
}

/* ---- PostgreSQL -------------------------------------------------------------------------------- */

/* The label cut-off, then the event-time period [from, to). The latest label known at the
 * cut-off wins; at equal known_at the higher fs_label_rank (payment_labels' order, migration 008:
 * the fraud label). The hits' points by code are returned whole rather than summed for given
 * codes here: a psql export of the query then serves any covered set. */
#define TRS_QUERY_FMT                                                                              \
    "SELECT d.features::text, "                                                                    \
    "CASE WHEN l.outcome IS NULL THEN NULL "                                                       \
    "WHEN l.outcome IN ('confirmed_fraud', 'chargeback') THEN 1 ELSE 0 END, "                      \
    "(extract(epoch FROM p.event_time) * 1000)::bigint, p.user_id, d.score, h.pts, h.hits::text "  \
    "FROM payments p JOIN decisions d USING (payment_id) "                                         \
    "CROSS JOIN LATERAL (SELECT coalesce(sum((r->>'weight')::int), 0) AS pts, "                    \
    "coalesce(jsonb_object_agg(r->>'code', (r->>'weight')::int) FILTER (WHERE r ? 'code'), "       \
    "'{}') AS hits FROM jsonb_array_elements(d.reasons) r) h "                                     \
    "LEFT JOIN LATERAL (SELECT o.outcome FROM outcomes o WHERE o.payment_id = p.payment_id "       \
    "AND o.known_at <= %s ORDER BY o.known_at DESC, fs_label_rank(o.outcome) DESC LIMIT 1) "       \
    "l ON true "                                                                                   \
    "WHERE p.event_time >= %s AND p.event_time < %s ORDER BY p.event_time, p.payment_id"

/* A bound as a timestamptz literal ('-infinity' / 'infinity' for none). */
static void ts_literal(int64_t ms, char *out, size_t n) {
    char t[25];
    if (ms == INT64_MIN || ms == INT64_MAX) {
        snprintf(out, n, "'%sinfinity'::timestamptz", ms == INT64_MIN ? "-" : "");
        return;
    }
    fs_time_format_rfc3339(ms, t);
    snprintf(out, n, "'%s'::timestamptz", t);
}

int trs_query_text(const trs_filter *f, char *out, size_t out_size) {
    char from[48], to[48], known[48];
    ts_literal(f->from_ms, from, sizeof from);
    ts_literal(f->to_ms, to, sizeof to);
    ts_literal(f->known_by_ms, known, sizeof known);
    int n = snprintf(out, out_size, TRS_QUERY_FMT, known, from, to);
    return n >= 0 && (size_t)n < out_size ? 0 : -1;
}

static double num_or_nan(const char *s, int isnull) { return isnull ? NAN : strtod(s, NULL); }

/* Where the rows of trs_load_pg go. */
typedef struct pg_rows {
    trs *t;
    const trs_filter *f;
} pg_rows;

/* A row of the query (db_row_fn). Returns 0, 1 (a hits column that is not a JSON object) or 2 (out
 * of memory). */
static int add_result_row(void *arg, const PGresult *r, int i) {
    pg_rows *p = arg;
    int label = PQgetisnull(r, i, 1) ? -1 : atoi(PQgetvalue(r, i, 1));
    double covered;
    if (trs_covered_points(p->f, PQgetisnull(r, i, 6) ? NULL : PQgetvalue(r, i, 6), &covered) != 0)
        return 1;
    return trs_add(p->t, p->f, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0), label,
                   strtoll(PQgetvalue(r, i, 2), NULL, 10), PQgetvalue(r, i, 3),
                   num_or_nan(PQgetvalue(r, i, 4), PQgetisnull(r, i, 4)),
                   num_or_nan(PQgetvalue(r, i, 5), PQgetisnull(r, i, 5)), covered) == 0 ? 0 : 2;
}

/* errstr for db_query_rows' failure rc (e: its message, after ms), naming the tools' option. */
static void load_error(int rc, const char *e, int64_t ms, int timeout_ms, char *errstr,
                       size_t errstr_size) {
    if (rc == DB_TIMED_OUT)
        snprintf(errstr, errstr_size, "the rows query: %s (db-timeout-ms + %d ms); is the server "
                 "stopped or overloaded?", e, DB_CANCEL_GRACE_MS);
    else if (rc < 0 && strstr(e, "(SQLSTATE 57014") && ms >= timeout_ms) /* statement_timeout */
        snprintf(errstr, errstr_size, "the rows query ran longer than db-timeout-ms (%d ms) and "
                 "PostgreSQL cancelled it (%s): raise db-timeout-ms if the database is merely "
                 "slow; a lock held on decisions, payments or outcomes shows in pg_locks",
                 timeout_ms, e);
    else if (rc < 0)
        snprintf(errstr, errstr_size, "the rows query: %s", e);
    else
        snprintf(errstr, errstr_size, rc == 1 ? "a decision's rule hits are not a JSON object"
                                              : "out of memory");
}

int trs_load_pg(trs *t, PGconn *conn, const trs_filter *f, int timeout_ms, char *errstr,
                size_t errstr_size) {
    char sql[2048], e[512];
    pg_rows p = {t, f};
    int rc;
    if (trs_query_text(f, sql, sizeof sql) != 0)
        return snprintf(errstr, errstr_size, "the rows query does not fit"), -1;
    /* the server stops the query at the deadline too (db_server_timeout) */
    int64_t t0 = fs_mono_us();
    int client_ms = db_server_timeout(conn, timeout_ms, e, sizeof e);
    rc = client_ms < 0 ? -1 : db_query_rows(conn, client_ms, sql, add_result_row, &p, e, sizeof e);
    if (rc != 0) load_error(rc, e, (fs_mono_us() - t0) / 1000, timeout_ms, errstr, errstr_size);
    return rc ? -1 : 0;
}

/* ---- psql text format ------------------------------------------------------------------------- */

/* Undoes COPY's text escapes in place (\\ \t \n \r \b \f \v; \N = NULL is checked before). */
static void unescape(char *s) {
    char *w = s;
    for (; *s; s++) {
        if (*s != '\\' || !s[1]) {
            *w++ = *s;
            continue;
        }
        s++;
        switch (*s) {
        case 't': *w++ = '\t'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'v': *w++ = '\v'; break;
        default: *w++ = *s; break;
        }
    }
    *w = '\0';
}

#define TRS_COLS 7

/* Splits a line at tabs into at most TRS_COLS fields (NULL for \N). Returns the field count. */
static int split(char *line, char **col) {
    int n = 0;
    for (char *c = line; n < TRS_COLS; n++) {
        size_t len = strcspn(c, "\t");
        int last = c[len] != '\t';
        c[len] = '\0';
        col[n] = strcmp(c, "\\N") == 0 ? NULL : c;
        if (col[n]) unescape(col[n]);
        if (last) return n + 1;
        c += len + 1;
    }
    return n;
}

static int add_line(trs *t, const trs_filter *f, char *line) {
    char *col[TRS_COLS] = {0};
    int n = split(line, col);
    if (n < 2 || !col[0] || (col[1] && strcmp(col[1], "0") && strcmp(col[1], "1"))) return 1;
    int64_t ev = n > 2 && col[2] ? strtoll(col[2], NULL, 10) : 0;
    if (n <= 2 && (f->from_ms != INT64_MIN || f->to_ms != INT64_MAX)) return 1; /* no time */
    double covered;
    if (trs_covered_points(f, n > 6 ? col[6] : NULL, &covered) != 0) return 1;
    return trs_add(t, f, col[0], strlen(col[0]), col[1] ? atoi(col[1]) : -1, ev,
                   n > 3 ? col[3] : NULL, n > 4 ? num_or_nan(col[4], !col[4]) : NAN,
                   n > 5 ? num_or_nan(col[5], !col[5]) : NAN, covered) == 0 ? 0 : -1;
}

int trs_load_file(trs *t, const char *path, const trs_filter *f, char *errstr, size_t errstr_size) {
    FILE *in = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = 0;
    if (!in) return snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno)), -1;
    while (rc == 0 && (len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        int r = add_line(t, f, line);
        if (r > 0)
            snprintf(errstr, errstr_size, "%s:%zu: expected features<TAB>label(0|1|\\N)"
                     "[<TAB>event_ms<TAB>user_id<TAB>score<TAB>rules_pts<TAB>hits]%s", path, lineno,
                     f->from_ms != INT64_MIN || f->to_ms != INT64_MAX ? " (event_ms is needed "
                     "with a period)" : "");
        else if (r < 0)
            snprintf(errstr, errstr_size, "out of memory");
        rc = r ? -1 : 0;
    }
    free(line);
    fclose(in);
    return rc;
}

/* ---- features ---------------------------------------------------------------------------------- */

void trs_names_free(char **names, size_t n) {
    for (size_t i = 0; names && i < n; i++) free(names[i]);
    free(names);
}

static int excluded(const char *name, const char *exclude) {
    if (strcmp(name, "model_score") == 0) return 1; /* never learn from an earlier model */
    for (const char *p = exclude; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len && strncmp(name, p, len) == 0) return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Adds the numeric keys of one feature object and the averages derived from its sums to set,
 * each true once it has a value in some row (model_feature_value(), what the column holds): a
 * derived average whose count is 0 or absent in every row stays false. */
static void collect_keys(json_t *set, json_t *obj, const char *exclude) {
    const char *k;
    json_t *v;
    char avg[MODEL_NAME_MAX + 8];
    json_object_foreach(obj, k, v) {
        if (!json_is_number(v) && !json_is_boolean(v)) continue;
        if (model_feature_name_valid(k) && !excluded(k, exclude))
            json_object_set_new(set, k, json_true());
        const char *s = strstr(k, "_sum_minor_");
        if (!s || strstr(k, "_delay_")) continue;
        snprintf(avg, sizeof avg, "%.*s_avg_minor_%s", (int)(s - k), k, s + strlen("_sum_minor_"));
        if (!model_feature_name_valid(avg) || excluded(avg, exclude)) continue;
        bool filled = json_is_true(json_object_get(set, avg)) ||
                      !isnan(model_feature_value(avg, obj));
        json_object_set_new(set, avg, json_boolean(filled));
    }
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The keys of set whose value is filled (true) or not, sorted, into a malloc'd *out (NULL when
 * none). Returns 0, or -1 when out of memory. */
static int set_names(json_t *set, bool filled, char ***out, size_t *n) {
    size_t count = 0, i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(set, k, v) count += json_is_true(v) == filled;
    if (count == 0) return 0;
    if (!(*out = calloc(count, sizeof **out))) return -1;
    *n = count; /* the names so far are freed with the count: the rest are NULL */
    json_object_foreach(set, k, v) {
        if (json_is_true(v) == filled && !((*out)[i++] = strdup(k))) return -1;
    }
    qsort(*out, count, sizeof **out, cmp_str);
    return 0;
}

void trs_names_join(char *const *names, size_t n, char *out, size_t out_size) {
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && len < out_size; i++) {
        int w = snprintf(out + len, out_size - len, "%s%s", i ? "," : "", names[i]);
        len += w > 0 ? (size_t)w : 0;
    }
}

/* Why the picked names cannot be a model's columns; 0 when they can. */
static int auto_check(const trs *t, size_t n, char *const *empty, size_t nempty, char *errstr,
                      size_t errstr_size) {
    char list[512];
    if (n == 0 && nempty) {
        trs_names_join(empty, nempty, list, sizeof list);
        return snprintf(errstr, errstr_size, "no feature column has a value in any of the %zu rows "
                        "(left out: %s)", t->n, list), -1;
    }
    if (n == 0 || n > MODEL_MAX_FEATURES)
        return snprintf(errstr, errstr_size, "%zu numeric features found (1..%d usable)", n,
                        MODEL_MAX_FEATURES), -1;
    return 0;
}

int trs_auto_features(const trs *t, const char *exclude, char ***names, size_t *n, char ***empty,
                      size_t *nempty, char *errstr, size_t errstr_size) {
    json_t *set = json_object();
    int rc = set ? 0 : -1;
    *names = *empty = NULL;
    *n = *nempty = 0;
    for (size_t r = 0; set && r < t->n; r++) {
        json_t *obj = json_loads(trs_features(t, r), 0, NULL);
        if (json_is_object(obj)) collect_keys(set, obj, exclude);
        json_decref(obj);
    }
    if (rc == 0) rc = set_names(set, true, names, n);
    if (rc == 0) rc = set_names(set, false, empty, nempty);
    json_decref(set);
    if (rc != 0) snprintf(errstr, errstr_size, "out of memory");
    else rc = auto_check(t, *n, *empty, *nempty, errstr, errstr_size);
    if (rc != 0) {
        trs_names_free(*names, *n);
        trs_names_free(*empty, *nempty);
        *names = *empty = NULL;
        *n = *nempty = 0;
    }
    return rc;
}

/* The names trs_check_features() refuses without looking at the rows. */
static int check_names(const char *const *names, size_t n, char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], "model_score") == 0)
            return snprintf(errstr, errstr_size, "features: model_score is the scorer's model "
                            "output, not a payment feature: a model cannot take it as an input "
                            "(the scorer knows it only after predicting)"), -1;
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[i], names[j]) == 0)
                return snprintf(errstr, errstr_size, "features: \"%s\" is named twice (columns "
                                "%zu and %zu)", names[i], i + 1, j + 1), -1;
    }
    return 0;
}

static int is_num(const json_t *v) { return json_is_number(v) || json_is_boolean(v); }

/* What trs_check_features() learns of one name. The name is read once, here: a derived average's
 * keys are kept, not built again for the message. */
typedef struct fcheck {
    const char *name;
    bool usable;        /* a number in some row, or derivable there */
    bool filled;        /* a value in some row (model_feature_value(), as auto): implies usable */
    bool derived;       /* "<e>_avg_minor_<N>s": sum and count below */
    size_t non_numeric; /* rows where it is present but not a number */
    char sum[MODEL_NAME_MAX], count[MODEL_NAME_MAX];
} fcheck;

/* Marks the names usable and filled in obj, or counts obj against them. Returns how many are
 * filled so far. */
static size_t mark_row(const json_t *obj, fcheck *c, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; k += c[i].filled, i++) {
        if (c[i].filled) continue;
        const json_t *v = json_object_get(obj, c[i].name);
        if (v && !is_num(v)) c[i].non_numeric++;
        else if (v) c[i].usable = true;
        else if (c[i].derived && !c[i].usable)
            c[i].usable = is_num(json_object_get(obj, c[i].sum)) &&
                          is_num(json_object_get(obj, c[i].count));
        c[i].filled = !isnan(model_feature_value(c[i].name, obj));
    }
    return k;
}

/* Why c, usable in none of the rows, cannot be a column. */
static void unusable_msg(const fcheck *c, size_t rows, char *errstr, size_t errstr_size) {
    if (c->non_numeric)
        snprintf(errstr, errstr_size, "features: \"%s\" is never a number in the rows' features "
                 "(present but not a number in %zu of %zu rows): only numbers and booleans can be "
                 "model columns", c->name, c->non_numeric, rows);
    else if (c->derived)
        snprintf(errstr, errstr_size, "features: \"%s\" is derived from %s / %s, which none of "
                 "the %zu rows has (both numbers): a typo?", c->name, c->sum, c->count, rows);
    else
        snprintf(errstr, errstr_size, "features: \"%s\" is in none of the %zu rows' features: "
                 "a typo?", c->name, rows);
}

/* The names usable but filled in no row, in list order, into a malloc'd *out (NULL when none).
 * Returns 0, or -1 when out of memory (nothing to free). */
static int empty_names(const fcheck *c, size_t n, char ***out, size_t *nout) {
    size_t count = 0, k = 0;
    for (size_t i = 0; i < n; i++) count += !c[i].filled;
    if (count == 0) return 0;
    if (!(*out = calloc(count, sizeof **out))) return -1;
    for (size_t i = 0; i < n; i++) {
        if (c[i].filled) continue;
        if (!((*out)[k++] = strdup(c[i].name))) {
            trs_names_free(*out, k);
            *out = NULL;
            return -1;
        }
    }
    *nout = count;
    return 0;
}

/* After the pass: the first name usable in no row is refused; then the empty ones, named all
 * together, unless allowed (they go to *empty). */
static int check_result(const trs *t, const fcheck *c, size_t n, bool allow_empty, char ***empty,
                        size_t *nempty, char *errstr, size_t errstr_size) {
    char list[512];
    for (size_t i = 0; i < n; i++)
        if (!c[i].usable) return unusable_msg(&c[i], t->n, errstr, errstr_size), -1;
    if (empty_names(c, n, empty, nempty) != 0)
        return snprintf(errstr, errstr_size, "out of memory"), -1;
    if (*nempty == 0 || allow_empty) return 0;
    trs_names_join(*empty, *nempty, list, sizeof list);
    snprintf(errstr, errstr_size, "features: no value in any of the %zu rows: %s (a derived "
             "average whose count is never above 0: the trees cannot split on such a column, and "
             "auto leaves it out); --allow-empty-features keeps it, with a warning", t->n, list);
    trs_names_free(*empty, *nempty);
    *empty = NULL;
    *nempty = 0;
    return -1;
}

int trs_check_features(const trs *t, const char *const *names, size_t n, bool allow_empty,
                       char ***empty, size_t *nempty, char *errstr, size_t errstr_size) {
    *empty = NULL;
    *nempty = 0;
    if (check_names(names, n, errstr, errstr_size) != 0) return -1;
    fcheck *c = calloc(n ? n : 1, sizeof *c);
    size_t k = 0;
    if (!c) return snprintf(errstr, errstr_size, "out of memory"), -1;
    for (size_t i = 0; i < n; i++) {
        c[i].name = names[i];
        c[i].derived = model_feature_derived(names[i], c[i].sum, c[i].count, sizeof c[i].sum);
    }
    /* stops at the first rows that fill every name: a valid list costs a row or two */
    for (size_t r = 0; r < t->n && k < n; r++) {
        json_t *obj = json_loads(trs_features(t, r), 0, NULL);
        if (json_is_object(obj)) k = mark_row(obj, c, n);
        json_decref(obj);
    }
    int rc = check_result(t, c, n, allow_empty, empty, nempty, errstr, errstr_size);
    free(c);
    return rc;
}

int trs_matrix(const trs *t, size_t begin, size_t end, const char *const *names, size_t n,
               float **rows, float **labels, char *errstr, size_t errstr_size) {
    size_t nr = end > begin ? end - begin : 0;
    *rows = malloc((nr ? nr : 1) * n * sizeof **rows);
    *labels = malloc((nr ? nr : 1) * sizeof **labels);
    if (!*rows || !*labels) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    for (size_t i = 0; i < nr; i++) {
        json_error_t je;
        json_t *obj = json_loads(trs_features(t, begin + i), 0, &je);
        if (!json_is_object(obj)) {
            json_decref(obj);
            snprintf(errstr, errstr_size, "row %zu: features are not a JSON object", begin + i);
            goto failed;
        }
        model_features_row(names, n, obj, *rows + i * n);
        (*labels)[i] = (float)trs_label(t, begin + i);
        json_decref(obj);
    }
    return 0;
failed:
    free(*rows);
    free(*labels);
    *rows = *labels = NULL;
    return -1;
}
