/* evalmetrics: AUC ROC, average precision, card precision@k (see evalmetrics.h). */
#include "evalmetrics.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_score_desc(const void *a, const void *b) {
    double x = ((const evm_item *)a)->score, y = ((const evm_item *)b)->score;
    return x > y ? -1 : x < y ? 1 : 0;
}

static int fail(char *errstr, size_t errstr_size, const char *msg) {
    snprintf(errstr, errstr_size, "%s", msg);
    return -1;
}

/* A copy sorted by score, highest first (the caller frees it). */
static evm_item *sorted_copy(const evm_item *items, size_t n) {
    evm_item *s = malloc((n ? n : 1) * sizeof *s);
    if (!s) return NULL;
    memcpy(s, items, n * sizeof *s);
    qsort(s, n, sizeof *s, by_score_desc);
    return s;
}

/* Mann-Whitney: AUC = (sum of the positives' ranks - P(P+1)/2) / (P N), ranks ascending by score
 * with ties sharing the average of their ranks. Walking the groups of equal scores from the top,
 * the group occupying ranks (n - end, n - start] (1-based, ascending) has average rank
 * n - (start + end - 1) / 2. */
int evm_auc_roc(const evm_item *items, size_t n, double *out, char *errstr, size_t errstr_size) {
    double pos = 0, rank_sum = 0;
    evm_item *s = sorted_copy(items, n);
    if (!s) return fail(errstr, errstr_size, "out of memory");
    for (size_t start = 0; start < n;) {
        size_t end = start, p = 0;
        while (end < n && s[end].score == s[start].score) p += s[end++].label != 0;
        rank_sum += (double)p * ((double)n - (double)(start + end - 1) / 2.0);
        pos += (double)p;
        start = end;
    }
    free(s);
    double neg = (double)n - pos;
    if (pos == 0 || neg == 0)
        return fail(errstr, errstr_size, "AUC ROC is undefined with only one class");
    *out = (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg);
    return 0;
}

/* sklearn: precision and recall at each distinct threshold (all items scoring >= it are flagged),
 * AP = sum (R_n - R_{n-1}) P_n; thresholds without a new fraud add nothing. */
int evm_average_precision(const evm_item *items, size_t n, double *out, char *errstr,
                          size_t errstr_size) {
    size_t total = 0, tp = 0, prev_tp = 0;
    double ap = 0;
    for (size_t i = 0; i < n; i++) total += items[i].label != 0;
    if (total == 0)
        return fail(errstr, errstr_size, "average precision is undefined without a fraud");
    evm_item *s = sorted_copy(items, n);
    if (!s) return fail(errstr, errstr_size, "out of memory");
    for (size_t start = 0; start < n;) {
        size_t end = start;
        while (end < n && s[end].score == s[start].score) tp += s[end++].label != 0;
        ap += (double)(tp - prev_tp) / (double)total * ((double)tp / (double)end);
        prev_tp = tp;
        start = end;
    }
    free(s);
    *out = ap;
    return 0;
}

/* ---- card precision@k ----------------------------------------------------------------------- */

static int by_day_card(const void *a, const void *b) {
    const evm_item *x = a, *y = b;
    if (x->day != y->day) return x->day < y->day ? -1 : 1;
    if (x->card != y->card) return x->card < y->card ? -1 : 1;
    return 0;
}

/* Cards of one day: highest score first, then the smaller card id. */
static int by_rank(const void *a, const void *b) {
    const evm_item *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->card < y->card ? -1 : x->card > y->card ? 1 : 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

static bool in_set(const uint64_t *set, size_t n, uint64_t card) {
    return n && bsearch(&card, set, n, sizeof *set, cmp_u64) != NULL;
}

/* Collapses the day's items s[0..n) (sorted by card) into one per card, max score and max label,
 * skipping the detected cards. Returns the number of cards written to cards. */
static size_t day_cards(const evm_item *s, size_t n, const uint64_t *detected, size_t ndet,
                        evm_item *cards) {
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_set(detected, ndet, s[i].card)) continue;
        if (nc && cards[nc - 1].card == s[i].card) {
            evm_item *c = &cards[nc - 1];
            if (s[i].score > c->score) c->score = s[i].score;
            if (s[i].label) c->label = 1;
        } else {
            cards[nc] = s[i];
            cards[nc++].label = s[i].label != 0;
        }
    }
    return nc;
}

/* One day: precision among its top k cards; the compromised ones found join detected (which has
 * room for them: at most k per day). */
static double day_precision(const evm_item *s, size_t n, size_t k, uint64_t *detected,
                            size_t *ndet, evm_item *cards) {
    size_t nc = day_cards(s, n, detected, *ndet, cards), hits = 0;
    qsort(cards, nc, sizeof *cards, by_rank);
    for (size_t i = 0; i < nc && i < k; i++) {
        if (!cards[i].label) continue;
        hits++;
        detected[(*ndet)++] = cards[i].card;
    }
    qsort(detected, *ndet, sizeof *detected, cmp_u64);
    return (double)hits / (double)k;
}

int evm_card_precision_at_k(const evm_item *items, size_t n, size_t k, double *mean,
                            double *per_day, size_t cap, size_t *ndays, char *errstr,
                            size_t errstr_size) {
    int rc = -1;
    size_t days = 0, ndet = 0;
    double sum = 0;
    evm_item *s = NULL, *cards = NULL;
    uint64_t *detected = NULL;
    if (n == 0 || k == 0) return fail(errstr, errstr_size, "no test items or k = 0");
    s = malloc(n * sizeof *s);
    cards = malloc(n * sizeof *cards);
    detected = malloc(n * sizeof *detected); /* at most one entry per item */
    if (!s || !cards || !detected) {
        fail(errstr, errstr_size, "out of memory");
        goto done;
    }
    memcpy(s, items, n * sizeof *s);
    qsort(s, n, sizeof *s, by_day_card);
    for (size_t start = 0; start < n;) {
        size_t end = start;
        while (end < n && s[end].day == s[start].day) end++;
        double p = day_precision(s + start, end - start, k, detected, &ndet, cards);
        if (per_day && days < cap) per_day[days] = p;
        sum += p;
        days++;
        start = end;
    }
    *mean = sum / (double)days;
    if (ndays) *ndays = days;
    rc = 0;
done:
    free(s);
    free(cards);
    free(detected);
    return rc;
}

/* ---- the known-compromised filter ------------------------------------------------------------ */

typedef struct card_day {
    uint64_t card;
    int32_t day;
} card_day;

static int by_card_day(const void *a, const void *b) {
    const card_day *x = a, *y = b;
    if (x->card != y->card) return x->card < y->card ? -1 : 1;
    return x->day < y->day ? -1 : x->day > y->day ? 1 : 0;
}

/* The first fraud day >= since_day of each card in history, sorted by card (deduplicated: the
 * first entry of each card is its earliest day). */
static card_day *first_frauds(const evm_item *h, size_t nh, int32_t since_day, size_t *nout) {
    card_day *f = malloc((nh ? nh : 1) * sizeof *f);
    size_t nf = 0, nu = 0;
    if (!f) return NULL;
    for (size_t i = 0; i < nh; i++)
        if (h[i].label && h[i].day >= since_day) f[nf++] = (card_day){h[i].card, h[i].day};
    qsort(f, nf, sizeof *f, by_card_day);
    for (size_t i = 0; i < nf; i++)
        if (nu == 0 || f[nu - 1].card != f[i].card) f[nu++] = f[i];
    *nout = nu;
    return f;
}

size_t evm_drop_known_cards(evm_item *test, size_t n, const evm_item *history, size_t nh,
                            int32_t since_day, int32_t delay_days, char *errstr,
                            size_t errstr_size) {
    size_t nf, kept = 0;
    /* first_frauds() copies what it needs before test is modified, so history may alias test */
    card_day *f = first_frauds(history, nh, since_day, &nf);
    if (!f) {
        fail(errstr, errstr_size, "out of memory");
        return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++) {
        card_day key = {test[i].card, INT32_MIN};
        size_t lo = 0, hi = nf; /* first entry with card >= key.card */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (by_card_day(&f[mid], &key) < 0) lo = mid + 1; else hi = mid;
        }
        bool known = lo < nf && f[lo].card == test[i].card &&
                     (int64_t)f[lo].day <= (int64_t)test[i].day - delay_days - 1;
        if (!known) test[kept++] = test[i];
    }
    free(f);
    return kept;
}
