/* dispatch: the alerter's delivery side, on a thread of its own.
 *
 * Loop: claim due deliveries from PostgreSQL (alerter_claim(): FOR UPDATE SKIP LOCKED, so any
 * number of alerters share the work; claimed rows are leased, and a crashed holder's rows come
 * back when the lease ends) -> run them concurrently (delivery.h: a slow or hanging subscriber
 * holds only its own transfers) -> record each result (alerter_delivery_result(): delivered,
 * retry at a time from the retry policy, or failed -> dead letter through the outbox).
 *
 * Isolation between subscribers: at most max_in_flight_per_sub transfers per subscriber, and a
 * circuit breaker per subscriber (breaker.h): while it is open none of its deliveries are claimed
 * (they keep their place, their attempts are not used up), then a single probe tests it.
 *
 * The same thread prunes the history older than retention_days (retention.h), a slice at a time
 * between claims.
 *
 * New deliveries are noticed at once (dispatch_wake() from the consumer in this process, LISTEN
 * fraudshield_deliveries for rows made elsewhere, e.g. an analyst's resolve in psql), and due
 * retries within poll_interval_ms. */
#ifndef FS_DISPATCH_H
#define FS_DISPATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dbhealth.h"
#include "delivery.h"
#include "metrics.h"
#include "retry.h"

typedef struct dispatch_config {
    const char *database_url;
    const char *alerter_id;        /* deliveries.locked_by, delivery_attempts.alerter_id */
    delivery_config http;          /* strings are copied by the engine */
    retry_policy retry;
    int breaker_threshold;         /* consecutive failures that open a subscriber's breaker */
    int64_t breaker_cooldown_ms;   /* before the probe (divided by retry.time_compression) */
    int max_in_flight;             /* transfers at once, all subscribers */
    int max_in_flight_per_sub;
    int poll_interval_ms;          /* look for due deliveries at least this often */
    int subs_refresh_ms;           /* reload subscriptions this often */
    int shutdown_timeout_ms;       /* on stop: how long running transfers may finish */
    int db_timeout_ms;             /* a statement not answered by then drops the connection */
    const atomic_bool *stop;       /* may be NULL: once set (the process's SIGTERM flag), the
                                      thread stops as dispatch_destroy() would make it, without
                                      waiting for the caller to get there (the consumer may still
                                      be finishing a batch): both drains run at once */
    int retention_days;            /* prune history older than this (retention.h); 0: never */
    int retention_interval_s;      /* between the starts of two prune rounds */
    metrics *metrics;              /* borrowed, may be NULL */
    metric *db_errors;             /* fs_alerter_db_errors_total{side}, shared with the consumer */
    dbhealth *db;                  /* borrowed, outlives the dispatcher: its connection (up; last
                                      successful round trip: claims, gauges, at least every
                                      poll_interval_ms + 2 s when healthy), for /ready */
} dispatch_config;

typedef struct dispatch dispatch;

/* Copies cfg (strings too). Does not connect yet. NULL with errstr. */
dispatch *dispatch_new(const dispatch_config *cfg, char *errstr, size_t errstr_size);

/* Starts the thread. Returns 0 or -1 with errstr. */
int dispatch_start(dispatch *d, char *errstr, size_t errstr_size);

/* New deliveries may be due: claim now (any thread). */
void dispatch_wake(dispatch *d);

/* Stops claiming, lets running transfers finish up to shutdown_timeout_ms, records their results
 * (the rest are released for a retry), joins the thread and frees; a thread that saw cfg.stop has
 * done that already, or is at it. Accepts NULL. */
void dispatch_destroy(dispatch *d);

#endif
