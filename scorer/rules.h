/* rules: the versioned rule set and its evaluation.
 *
 * A rules file (JSON, schema: schemas/json/rules.v1.json; default: schemas/rules/default.json) lists
 * rules, each a code, description, severity, weight, message and one predicate from a fixed set of
 * typed kinds (no expression language; the full table with parameters is in docs/rules.md):
 *   amount_at_least, country_in, country_mismatch, value_in, time_flag        the payment itself
 *   count_at_least, distinct_users_at_least, distinct_at_least, sum_at_least,
 *   avg_at_least, amount_ratio_at_least                                       event-time windows
 *   vault_seen_at_least, vault_new, vault_fraud_at_least                      the risk vault
 *   merchant_risk_at_least                                                    delayed outcomes
 *   model_score_between                                                       the model (issue 5)
 * plus decision thresholds {"review": 30, "block": 70} and an optional model blend
 * {"model_weight": 0..100}. Score = min(100, round(model_score * model_weight) + sum of the weights
 * of the rules that hit); decision = block if score >= block, review if >= review, else allow.
 * A rule marked "model_covered": true reads a signal the model also takes as input (the vault's
 * fraud links): when the model scored the payment, the rule is still listed as a reason (with
 * "model_covered": true) but adds 0 points, so the signal is not counted twice; without a model it
 * counts its full weight.
 *
 * A loaded rule set is immutable once the scorer starts using it; its version string is the file's
 * "version" plus a hash of its bytes, recorded with every decision. Reload = load a new one (and
 * add the configured extra feature windows and the windows the model reads), swap pointers,
 * destroy the old. */
#ifndef FS_RULES_H
#define FS_RULES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pay.h"

#define RULES_MAX 64          /* rules in one file */
#define RULES_MAX_WINDOWS 32  /* distinct (entity, window) pairs the rules ask for */
#define RULES_MAX_FEATURE_WINDOWS 48 /* rule windows + the configured extra feature windows */
#define RULES_MAX_RISK_FILE 8 /* distinct merchant-risk (window, delay) pairs a rules file asks for */
#define RULES_MAX_RISK 16     /* the file's + the scorer's risk-windows-days (a budget of their own) */
#define RULES_EXACT_WINDOW_MS 3600000LL /* windows up to 1 h: exact event log; longer: buckets */
#define RULES_DISTINCT_CAP 16 /* distinct counterparts are exact up to this per bucket */

typedef enum rules_entity {
    RULES_ENT_USER = 0, /* user_id */
    RULES_ENT_IP,       /* ip_digest */
    RULES_ENT_CARD,     /* card_fingerprint_digest, else "last4:" + card_last_four (the seed's key) */
    RULES_ENT_DEVICE,   /* device_id_digest */
    RULES_ENT_EMAIL,    /* email_digest */
    RULES_ENT_MERCHANT, /* merchant_id (the terminal) */
    RULES_ENT_COUNT
} rules_entity;

/* A window feature the rule set needs: payments of one entity in the event-time window
 * (t - offset - window, t - offset], the current payment included (offset 0). Windows up to
 * RULES_EXACT_WINDOW_MS with offset 0 are exact (velocity.h); the others are read from time
 * buckets (buckets.h: hour buckets up to 1 day, day buckets beyond), so the loader accepts longer
 * windows only in whole buckets: whole hours up to a day, whole days beyond. */
typedef struct rules_window {
    rules_entity entity;
    int64_t window_ms;
    int64_t offset_ms;
} rules_window;

/* Merchant (terminal) risk: share of confirmed fraud among the merchant's payments of the window
 * (t - delay - window, t - delay], counting only outcomes known at t (the delayed-feedback
 * setting). window_index: the (merchant, window, delay) window giving the payment count. */
typedef struct rules_risk {
    int window_days;
    int delay_days;
    size_t window_index;
} rules_risk;

/* The risk vault of one identifier digest, as known when the payment is scored (the payment itself
 * excluded). */
typedef struct rules_vault_info {
    bool present;          /* the payment has this identifier */
    int64_t times_seen;    /* earlier payments with it */
    int64_t first_seen_ms; /* event time of the first one (0: never seen) */
    int64_t last_seen_ms;
    int64_t fraud;         /* payments with it labelled confirmed_fraud, label known at t */
    int64_t chargebacks;   /* ... labelled chargeback, known at t */
} rules_vault_info;

/* Everything a rule can look at for one payment. The scorer fills the window aggregates for each
 * window i in [0, rules_window_count()), the vault, the merchant risk and the model score before
 * rules_eval() (rules_derive() fills the flags from p). */
typedef struct rules_features {
    const pay_payment *p;
    int64_t count[RULES_MAX_FEATURE_WINDOWS];
    int64_t distinct_users[RULES_MAX_FEATURE_WINDOWS]; /* distinct counterparts: users; for the
                                                          user entity: distinct cards */
    int64_t sum_minor[RULES_MAX_FEATURE_WINDOWS];
    bool weekend;                                  /* Saturday or Sunday, UTC */
    bool night;                                    /* 00:00-06:59 UTC (the handbook's hour <= 6) */
    rules_vault_info vault[RULES_ENT_COUNT];       /* card, ip, device, email */
    int64_t risk_frauds[RULES_MAX_RISK];           /* per rules_risk_at(i) */
    bool has_model;                                /* false: rules only (no model configured) */
    double model_score;                            /* 0..1 when has_model */
} rules_features;

typedef struct rules_hit {
    const char *code;     /* points into the rule set: valid while it lives */
    const char *severity; /* "low" | "medium" | "high" | "critical" */
    const char *message;
    int weight;         /* the points it added to the score */
    bool model_covered; /* a model-covered rule with a model score: listed, 0 points (see below) */
} rules_hit;

typedef struct rules_result {
    int score;            /* 0..100 */
    const char *decision; /* "allow" | "review" | "block" (static strings) */
    int nhits;
    rules_hit hits[RULES_MAX]; /* sorted by weight, descending; ties by code */
} rules_result;

typedef struct rules rules;

/* Loads and validates a rules file. On error returns NULL and errstr names the rule and field
 * ("rules[3].predicate.window_seconds: must be 1..2592000"). */
rules *rules_load(const char *path, char *errstr, size_t errstr_size);

/* Same, from a buffer; origin is used in error messages. */
rules *rules_parse(const char *text, size_t len, const char *origin, char *errstr, size_t errstr_size);

void rules_destroy(rules *r); /* accepts NULL */

/* "<version>+<first 12 hex of sha256 of the file>" */
const char *rules_version(const rules *r);

/* blend.model_weight: the points a model probability of 1.0 adds (0: the model changes nothing). */
int rules_model_weight(const rules *r);

/* The score of rule points and a model probability: min(100, rule_points + round(model_score *
 * model_weight)) (model_score 0: rules only). rules_eval() scores with it; the evaluation
 * (tools/eval_main.c) re-computes the scorer's blend from stored points with it. Pure. */
int rules_blend_score(int rule_points, double model_score, int model_weight);

/* The codes of the rules marked "model_covered" (those that add 0 points when the model scored the
 * payment), in file order: the first max into codes (pointers into r: valid while r lives).
 * Returns how many there are (may exceed max). */
size_t rules_model_covered(const rules *r, const char **codes, size_t max);

/* Windows: those of the rules first (in file order), then the extra ones added below. */
size_t rules_window_count(const rules *r);
const rules_window *rules_window_at(const rules *r, size_t i);

/* Adds extra feature windows computed and recorded as evidence even when no rule reads them (for
 * analysts and model training; scorer option feature-windows), and merchant-risk windows
 * (risk_days: window lengths in days, delay_days: the feedback delay). spec: space- or
 * semicolon-separated "ENTITY:DUR[,DUR...]" with DUR = <n>m | <n>h | <n>d, e.g.
 * "user:1d,7d,30d merchant:1d,7d,30d" (beyond an hour whole hours, beyond a day whole days, as
 * the rules' window_seconds); risk_days: "1,7,30" or "". Call before the set is shared.
 * Returns 0 or -1 with errstr. */
int rules_add_feature_windows(rules *r, const char *spec, const char *risk_days, int delay_days,
                              char *errstr, size_t errstr_size);

/* Adds the windows (and merchant-risk pairs) a model reads: each of the n column names that is a
 * window key of the evidence ("user_count_300s", "card_distinct_users_1800s",
 * "user_avg_minor_86400s" through its sum and count, "merchant_risk_7d_delay_7d"...) gets its
 * window, so every such column is computed whatever the rules enable: disabling or changing a rule
 * never takes a model input away (scorer.h, scorer_rules_fit). Other names are left alone (bound by
 * name, or never: modelrow_unbound). Call before the set is shared. Returns 0, or -1 with errstr
 * naming the column when the windows exceed RULES_MAX_FEATURE_WINDOWS or the pairs RULES_MAX_RISK
 * (r is then half-extended: destroy it). */
int rules_add_model_windows(rules *r, const char *const *names, size_t n, char *errstr,
                            size_t errstr_size);

/* A copy of r, not shared (extend it, then share it), or NULL when out of memory. */
rules *rules_copy(const rules *r);

size_t rules_risk_count(const rules *r);
const rules_risk *rules_risk_at(const rules *r, size_t i);

/* True for the entities the risk vault keeps (identifier digests: card fingerprint, ip, device,
 * email); the card's "last4:" fallback key is not an identifier and has no vault entry. */
bool rules_vault_entity(rules_entity e);

/* The vault key of p for entity e ("" when absent or not a vault entity). */
const char *rules_vault_key(const pay_payment *p, rules_entity e);

/* Largest merchant-risk span (window + delay) in ms: how far back merchant outcomes are read. */
int64_t rules_risk_span_ms(const rules *r);

/* Fills the flags derived from f->p alone (weekend, night). */
void rules_derive(rules_features *f);

/* The counterpart of entity e for distinct counts: the card key for the user entity, else the
 * user_id. out: "" when absent. */
void rules_counterpart(const pay_payment *p, rules_entity e, char *out, size_t out_size);

/* Entity key of p for entity e into out ("" when p has no such identifier: no window counts). */
void rules_entity_key(const pay_payment *p, rules_entity e, char *out, size_t out_size);
const char *rules_entity_name(rules_entity e); /* "user", "ip", ... (the velocity_events kind) */

/* Evaluates every rule on f. Pure: no I/O, no allocation. */
void rules_eval(const rules *r, const rules_features *f, rules_result *out);

/* [{code, severity, weight, message}, ...] in hit order (new reference). */
json_t *rules_reasons_json(const rules_result *res);

/* The feature values the rules saw, as a flat object: {"amount_minor":..., "user_count_300s":...,
 * "card_distinct_users_1800s":...} (new reference). */
json_t *rules_features_json(const rules *r, const rules_features *f);

/* The same as compact JSON text (malloc'd, caller frees; length in *len when not NULL), written
 * directly: the scorer's hot path. NULL when out of memory. */
char *rules_features_text(const rules *r, const rules_features *f, size_t *len);

/* Single numeric keys of that object, for readers of a few named features (the model's columns,
 * scorer/modelrow.h): the same code writes the object and answers these, so a value read here is
 * the value the object holds. */
typedef enum rules_value {
    RULES_VALUE_ABSENT = 0, /* the object has no such key for this payment */
    RULES_VALUE_INT,        /* an integer (counts, sums, flags, ages) */
    RULES_VALUE_REAL,       /* a real (ratios, model_score) */
} rules_value;

/* A reference to the numeric key name of r's feature object (valid for r only), or -1 when r's
 * features never have a numeric key of that name (string keys such as "currency" included). */
int rules_feature_find(const rules *r, const char *name);

/* The value of a found key for f: *iv (INT) or *dv (REAL), or ABSENT (no such identifier, no
 * earlier payment, no model score...). Pure. */
rules_value rules_feature_get(const rules *r, int ref, const rules_features *f, int64_t *iv,
                              double *dv);

#endif
