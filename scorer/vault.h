/* vault: the risk vault and the outcome links, as one batch sees them.
 *
 * The vault (risk_vault in PostgreSQL) keeps, per identifier digest (card fingerprint, ip, device,
 * email): first seen, last seen (event time) and times seen, over every payment ever persisted,
 * plus the confirmed-fraud and chargeback counts the outcome consumer maintains (outcomes.h).
 * For scoring, the fraud counts are taken from the outcome links instead (outcome_links: per
 * identifier and labelled payment, its fraud labels and the later labels that supersede them, each
 * with its known_at), so that a payment at event time t only sees labels known at t: the
 * delayed-feedback setting, and what makes a replay of history give the same values as live
 * traffic. A labelled payment counts by its labels known at t: as confirmed fraud (chargeback)
 * when such a label comes after its last false_positive/legitimate label, in known_at order (at
 * equal known_at the higher vault_outcome comes last). So a false_positive known at T2 ends the
 * count of a confirmed_fraud for the payments from T2 on, a confirmed_fraud after it counts again
 * (once), and a chargeback after a confirmed_fraud keeps both (docs/topics.md). The same links,
 * for merchants, give the merchant (terminal) risk: confirmed frauds among the merchant's payments
 * of a delayed window.
 *
 * "Times seen" counts the payments before this one: those persisted earlier (any event time) plus
 * those of the batch that come first in event order (time, then payment_id).
 *
 * Usage per batch: vault_reset(); vault_keys() -> one query -> vault_load_row()/vault_load_link();
 * vault_add_payment() for each new payment; vault_build(); vault_features(); vault_increments().
 * Without PostgreSQL (offline.h), vault_load_labels() makes the links of a payment's labels. */
#ifndef FS_VAULT_H
#define FS_VAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pay.h"
#include "rules.h"
#include "velocity.h"

/* The labels, in their precedence at equal known_at (PostgreSQL's fs_label_rank, migration 008). */
typedef enum vault_outcome {
    VAULT_LEGITIMATE = 1,
    VAULT_FALSE_POSITIVE = 2,
    VAULT_FRAUD = 3,     /* confirmed_fraud */
    VAULT_CHARGEBACK = 4
} vault_outcome;

/* A risk_vault row, or the batch's increment of one (times_seen = payments added). */
typedef struct vault_row {
    rules_entity entity;
    const char *key;
    int64_t first_seen_ms;
    int64_t last_seen_ms;
    int64_t times_seen;
} vault_row;

/* An outcome_links row: a label of a payment of this identifier or merchant. */
typedef struct vault_link {
    rules_entity entity;
    const char *key;
    vault_outcome outcome;
    int64_t event_ms;       /* the labelled payment's event time */
    int64_t known_ms;       /* when the label became known */
    const char *payment_id; /* the labelled payment: its links make its label history */
} vault_link;

/* A label of a payment: what vault_load_labels() makes its links of. */
typedef struct vault_label {
    vault_outcome outcome;
    int64_t known_ms;
} vault_label;

typedef struct vault_key {
    rules_entity entity; /* a vault entity, or RULES_ENT_MERCHANT (links only) */
    char key[VELOCITY_KEY_MAX + 1];
} vault_key;

typedef struct vault vault;

vault *vault_new(void);
void vault_destroy(vault *v); /* accepts NULL */
void vault_reset(vault *v);

/* The distinct keys of ps[0..n) to read: every vault identifier, and the merchants when merchant
 * risk is computed (with_merchants). malloc'd (caller frees); NULL with *nout 0 when none,
 * *nout = SIZE_MAX when out of memory. */
vault_key *vault_keys(const pay_payment *const *ps, size_t n, bool with_merchants, size_t *nout);

/* Before vault_build(). Return 0 or -1 (out of memory); strings are copied. */
int vault_load_row(vault *v, const vault_row *row);
int vault_load_link(vault *v, const vault_link *link);
int vault_add_payment(vault *v, const pay_payment *p);

/* The outcome_links rows that the scorer's outcome consumer writes for p's labels (all of them, in
 * any order), loaded as vault_load_link() does (store.c SQL_APPLY_OUTCOMES, migration 008): per
 * identifier (card, ip, device, email) and merchant of p, a link for each confirmed_fraud and
 * chargeback label, and for each false_positive/legitimate label known at or after the first of
 * them. For callers without PostgreSQL (offline.c). Returns 0 or -1 (out of memory). */
int vault_load_labels(vault *v, const pay_payment *p, const vault_label *labels, size_t n);

int vault_build(vault *v);

/* Fills f->vault[] (before counting p itself) and f->risk_frauds[] of r's merchant-risk pairs. */
void vault_features(vault *v, const rules *r, const pay_payment *p, rules_features *f);

/* The batch's increments per identifier, sorted. Owned by v until the next reset; -1 on OOM. */
ptrdiff_t vault_increments(vault *v, const vault_row **out);

#endif
