/* rules: the versioned rule set and its evaluation.
 *
 * A rules file (JSON, schema: schemas/json/rules.v1.json; default: schemas/rules/default.json) lists
 * rules, each a code, description, severity, weight, message and one predicate from a fixed set of
 * typed kinds (no expression language):
 *   amount_at_least          {"amount": "1000"}                       major units, exact decimal
 *   country_in               {"field": "country", "countries": [..]} field: country|billing_country|shipping_country
 *   country_mismatch         {"fields": ["billing_country", "shipping_country"]}  both present and different
 *   count_at_least           {"entity": "user", "window_seconds": 300, "count": 4}
 *   distinct_users_at_least  {"entity": "card", "window_seconds": 1800, "count": 3}
 * plus decision thresholds {"review": 30, "block": 70}. Score = min(100, sum of the weights of the
 * rules that hit); decision = block if score >= block, review if >= review, else allow.
 *
 * A loaded rule set is immutable; its version string is the file's "version" plus a hash of its
 * bytes, recorded with every decision. Reload = load a new one, swap pointers, destroy the old. */
#ifndef FS_RULES_H
#define FS_RULES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "pay.h"

#define RULES_MAX 64          /* rules in one file */
#define RULES_MAX_WINDOWS 32  /* distinct (entity, window) pairs the rules ask for */

typedef enum rules_entity {
    RULES_ENT_USER = 0, /* user_id */
    RULES_ENT_IP,       /* ip_digest */
    RULES_ENT_CARD,     /* card_fingerprint_digest, else "last4:" + card_last_four (the seed's key) */
    RULES_ENT_DEVICE,   /* device_id_digest */
    RULES_ENT_EMAIL,    /* email_digest */
    RULES_ENT_MERCHANT, /* merchant_id */
    RULES_ENT_COUNT
} rules_entity;

/* A velocity feature the rule set needs: payments of one entity in the event-time window
 * (t - window_ms, t], the current payment included. */
typedef struct rules_window {
    rules_entity entity;
    int64_t window_ms;
} rules_window;

/* Everything a rule can look at for one payment. The scorer fills count/distinct_users for each
 * window i in [0, rules_window_count()) before rules_eval(). */
typedef struct rules_features {
    const pay_payment *p;
    int64_t count[RULES_MAX_WINDOWS];
    int64_t distinct_users[RULES_MAX_WINDOWS];
    int64_t sum_minor[RULES_MAX_WINDOWS];
} rules_features;

typedef struct rules_hit {
    const char *code;     /* points into the rule set: valid while it lives */
    const char *severity; /* "low" | "medium" | "high" | "critical" */
    const char *message;
    int weight;
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

size_t rules_window_count(const rules *r);
const rules_window *rules_window_at(const rules *r, size_t i);

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

#endif
