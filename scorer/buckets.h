/* buckets: event-time windows longer than 1 hour (and delayed windows), from time buckets shared
 * by all workers through PostgreSQL (feature_buckets).
 *
 * Windows up to 1 h are exact (velocity.h: one row per event). Longer ones would need too many
 * event rows, so they are counted in buckets: 1-hour buckets for windows up to 1 day, 1-day buckets
 * beyond. A bucket row (entity, key, width, start) holds count, sum of amounts and up to
 * RULES_DISTINCT_CAP distinct counterpart hashes (users; cards for the user entity).
 *
 * Window arithmetic: a window of length w with offset o at event time t is the ceil(w / width)
 * buckets ending with the bucket that contains t - o. So a 1-day window is "this hour and the 23
 * before it": it reaches back between 23 h and 24 h (the approximation at the old edge, at most
 * one bucket), and a 7-day window is "today (UTC) and the 6 days before". At the new edge the
 * stored buckets may hold events later than t inside t's own bucket (only when they arrived
 * earlier: late or out-of-order events); payments of the same batch count only when their event
 * time is <= t (event order within the batch, ties included).
 *
 * Distinct counts: the union of the buckets' counterpart sets. Each bucket keeps at most
 * RULES_DISTINCT_CAP of them, so a distinct count is exact up to RULES_DISTINCT_CAP and a lower
 * bound beyond (rules cannot ask for more).
 *
 * Usage per batch: buckets_reset(); buckets_ranges() -> one query -> buckets_load() per row;
 * buckets_add_payment() for each NEW payment; buckets_build(); buckets_features() per payment;
 * buckets_increments() -> one upsert. Strings are copied in. */
#ifndef FS_BUCKETS_H
#define FS_BUCKETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pay.h"
#include "rules.h"
#include "velocity.h"

#define BUCKETS_HOUR_MS 3600000LL
#define BUCKETS_DAY_MS 86400000LL

/* True when window w is served by buckets (longer than 1 h, or delayed). */
bool buckets_window(const rules_window *w);

/* Bucket width of a bucket window: 1 h when window + offset reach back at most 1 day, else 1 day
 * (so a 1-day window delayed by 7 days is "the day 7 days before t's day"). */
int64_t buckets_width_ms(const rules_window *w);

/* Start of the bucket of width width_ms that contains t_ms (floor, also before 1970). */
int64_t buckets_start(int64_t t_ms, int64_t width_ms);

/* The first and last bucket starts of window w at event time t_ms. */
void buckets_span(const rules_window *w, int64_t t_ms, int64_t *first_ms, int64_t *last_ms);

/* 63-bit hash of a counterpart (stored as a PostgreSQL bigint). */
int64_t buckets_cp_hash(const char *s);

/* One feature_buckets row (or an increment of one). */
typedef struct buckets_row {
    rules_entity entity;
    const char *key;
    int64_t width_ms;
    int64_t start_ms;
    int64_t count;
    int64_t sum_minor;
    size_t ncps;
    int64_t cps[RULES_DISTINCT_CAP];
} buckets_row;

/* The buckets one (entity, key, width) needs: starts from_ms..to_ms inclusive. */
typedef struct buckets_range {
    rules_entity entity;
    char key[VELOCITY_KEY_MAX + 1];
    int64_t width_ms;
    int64_t from_ms;
    int64_t to_ms;
} buckets_range;

typedef struct buckets buckets;

buckets *buckets_new(void);
void buckets_destroy(buckets *b); /* accepts NULL */
void buckets_reset(buckets *b);

/* The ranges the bucket windows of r need for ps[0..n), merged per (entity, key, width). Returns
 * a malloc'd array (caller frees), NULL with *nout = 0 when none, *nout = SIZE_MAX when out of
 * memory. */
buckets_range *buckets_ranges(const rules *r, const pay_payment *const *ps, size_t n,
                              size_t *nout);

/* Adds a stored bucket. Returns 0 or -1 (out of memory). Before buckets_build(). */
int buckets_load(buckets *b, const buckets_row *row);

/* Adds the increments of a payment this transaction inserted, for every bucket window entity of r
 * (one per entity and width). Returns 0 or -1. Before buckets_build(). */
int buckets_add_payment(buckets *b, const rules *r, const pay_payment *p);

/* Indexes what was added. Returns 0 or -1. */
int buckets_build(buckets *b);

/* Fills count/sum_minor/distinct_users of every bucket window of r for p. */
void buckets_features(buckets *b, const rules *r, const pay_payment *p, rules_features *f);

/* The batch's increments merged per bucket, sorted by (entity, key, width, start). The array
 * belongs to b (valid until the next reset). Returns the count; -1 when out of memory. */
ptrdiff_t buckets_increments(buckets *b, const buckets_row **out);

/* Largest span (window + offset) of r's bucket windows of the given width, in ms (0: none). */
int64_t buckets_max_span_ms(const rules *r, int64_t width_ms);

#endif
