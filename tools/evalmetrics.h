/* evalmetrics: the three detection-quality metrics of the fraud-detection handbook (Le Borgne et
 * al., "Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook",
 * chapters 3-4), computed exactly as the handbook's reference code computes them:
 *
 *   AUC ROC            = sklearn.metrics.roc_auc_score: the Mann-Whitney statistic, tied scores
 *                        get the average of their ranks (a tie between a fraud and a genuine
 *                        transaction counts one half);
 *   average precision  = sklearn.metrics.average_precision_score: sum over the distinct score
 *                        thresholds, highest first, of (R_n - R_{n-1}) * P_n, where all
 *                        transactions with the same score enter together;
 *   card precision@k   = the handbook's card_precision_top_k(): for each test day in increasing
 *                        order, every card's highest score and label (max over its transactions of
 *                        that day), cards ranked by that score, and the share of compromised cards
 *                        among the top k (divided by k even when fewer cards remain); compromised
 *                        cards found in a day's top k are removed from the following days; the
 *                        mean over the test days that have transactions.
 * Ranking ties for card precision: pandas' sort leaves them unspecified; here a higher score
 * comes first, then the smaller card id, so results are deterministic. That order is as arbitrary
 * as pandas': fraudshield-eval's card ids are hashes of CUSTOMER_ID (trainset.h), and on the
 * protocol week another tie order moves the blend's card precision@100 by ~0.001.
 *
 * The handbook also removes from each test day the cards already known to be compromised at that
 * time (evm_drop_known_cards), before all three metrics. */
#ifndef FS_EVALMETRICS_H
#define FS_EVALMETRICS_H

#include <stddef.h>
#include <stdint.h>

/* One scored transaction. */
typedef struct evm_item {
    double score;   /* higher = more suspicious */
    int label;      /* 1: fraud, 0: genuine */
    int32_t day;    /* day number (e.g. TX_TIME_DAYS or days since the epoch) */
    uint64_t card;  /* card (the handbook: CUSTOMER_ID) */
} evm_item;

/* AUC ROC into *out. -1 with errstr when n is 0 or only one class is present (undefined). */
int evm_auc_roc(const evm_item *items, size_t n, double *out, char *errstr, size_t errstr_size);

/* Average precision into *out. -1 with errstr when there is no fraud (undefined). */
int evm_average_precision(const evm_item *items, size_t n, double *out, char *errstr,
                          size_t errstr_size);

/* Card precision@k: the mean into *mean; when per_day is not NULL, each day's value in day order
 * into per_day[0..*ndays) (at most cap values are written; *ndays is the number of days). -1 with
 * errstr when there are no items or k is 0. */
int evm_card_precision_at_k(const evm_item *items, size_t n, size_t k, double *mean,
                            double *per_day, size_t cap, size_t *ndays, char *errstr,
                            size_t errstr_size);

/* The handbook's test-set filter (get_train_test_set): a card is known compromised on day T when
 * it has a fraud in history on a day in [since_day, T - delay_days - 1]. Removes the test items of
 * known compromised cards, in place, keeping the order of the others; returns the new count, or
 * (size_t)-1 with errstr (out of memory). history may be the same array as test (a separate copy
 * is made first) and may contain any days. The handbook's protocol: since_day = the first day of
 * training, delay_days = 7. */
size_t evm_drop_known_cards(evm_item *test, size_t n, const evm_item *history, size_t nh,
                            int32_t since_day, int32_t delay_days, char *errstr,
                            size_t errstr_size);

#endif
