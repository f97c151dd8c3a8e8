/* velocity: exact event-time window features (windows up to 1 hour, RULES_EXACT_WINDOW_MS) over
 * the events read for one batch. Longer and delayed windows come from buckets (buckets.h).
 *
 * The scorer reads, once per batch, the velocity_events rows that the batch's windows can reach
 * (velocity_ranges() says which), adds the batch's own new payments, and asks, for each payment,
 * how many events of an entity fall in the event-time window (t - w, t]:
 *
 *   - an event exactly w before t is OUT, one exactly at t is IN (so the payment counts itself,
 *     and ties - several payments at the same instant - all count for each other);
 *   - late and out-of-order events count in the window of their own event time: the result depends
 *     only on the SET of events known when the batch is scored, never on arrival order.
 *
 * Usage per batch: velocity_reset(); velocity_add() every event (DB rows and batch payments);
 * velocity_build(); then velocity_window() / velocity_features() as often as needed.
 * Strings are copied in: the caller's buffers (e.g. a PGresult) may go away after velocity_add(). */
#ifndef FS_VELOCITY_H
#define FS_VELOCITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pay.h"
#include "rules.h"

#define VELOCITY_KEY_MAX 160 /* longest entity key: user_id/merchant_id (128) or "last4:NNNN" */

/* One (entity, payment) occurrence: a velocity_events row. Strings are borrowed by the caller's
 * struct; velocity_add() copies them. */
typedef struct velocity_event {
    rules_entity entity;
    const char *key;        /* entity key (rules_entity_key), never "" */
    const char *user_id;    /* counterpart for distinct features: the user (the card key for
                               the user entity, see rules_counterpart) */
    const char *payment_id; /* may be NULL (not needed for the window arithmetic) */
    int64_t time_ms;        /* event time */
    int64_t amount_minor;
} velocity_event;

/* The span of event time one entity key needs: events with from_ms < time <= to_ms. */
typedef struct velocity_range {
    rules_entity entity;
    char key[VELOCITY_KEY_MAX + 1];
    int64_t from_ms; /* exclusive */
    int64_t to_ms;   /* inclusive */
} velocity_range;

typedef struct velocity_agg {
    int64_t count;
    int64_t sum_minor;
    int64_t distinct_users;
} velocity_agg;

typedef struct velocity velocity;

velocity *velocity_new(void);
void velocity_destroy(velocity *v); /* accepts NULL */

/* Forgets every event (keeps the memory for the next batch). */
void velocity_reset(velocity *v);

/* Adds one event (copies its strings). Events with an empty key are ignored. Returns 0 or -1
 * (out of memory). Not allowed after velocity_build() until the next velocity_reset(). */
int velocity_add(velocity *v, const velocity_event *e);

/* Sorts and indexes the events. Returns 0 or -1 (out of memory). */
int velocity_build(velocity *v);

/* Events of (entity, key) with t_ms - window_ms < time <= t_ms. Requires velocity_build(). */
void velocity_window(velocity *v, rules_entity entity, const char *key, int64_t t_ms,
                     int64_t window_ms, velocity_agg *out);

/* Fills f->count/sum_minor/distinct_users for every window the rule set asks for, for payment p at
 * its event time (f->p is set to p). A payment without the entity's identifier gets zeros. */
void velocity_features(velocity *v, const rules *r, const pay_payment *p, rules_features *f);

/* The ranges of events the windows of r need for payments ps[0..n): one per (entity, key), merged
 * over the payments. Returns a malloc'd array (caller frees) with its length in *nout, or NULL
 * with *nout = 0 when there is nothing to read (or on allocation failure: *nout = SIZE_MAX). */
velocity_range *velocity_ranges(const rules *r, const pay_payment *const *ps, size_t n,
                                size_t *nout);

/* The velocity_events rows of payment p for the entities r uses (one per entity that has exact
 * windows and a non-empty key), into out (room for RULES_ENT_COUNT) with keys in keybuf and
 * counterparts in cpbuf. Returns the count. */
size_t velocity_events_of(const rules *r, const pay_payment *p, velocity_event out[RULES_ENT_COUNT],
                          char keybuf[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1],
                          char cpbuf[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1]);

/* True when window w is computed here (offset 0, at most RULES_EXACT_WINDOW_MS). */
bool velocity_exact(const rules_window *w);

/* Largest exact window of the rule set in ms (0 when it has none). */
int64_t velocity_max_window_ms(const rules *r);

#endif
