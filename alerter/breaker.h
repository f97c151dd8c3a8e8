/* breaker: a per-subscriber circuit breaker (a pure state machine; the caller passes the time).
 *
 *   closed     requests flow; `threshold` consecutive failures open it
 *   open       no request starts until `cooldown_ms` after it opened; then one probe may start
 *   half_open  the probe is in flight: nothing else starts; its success closes the breaker, its
 *              failure opens it again for another cool-down
 *
 * "Failure" is what the caller counts as one (the alerter: no answer, timeouts, 408, 429, 5xx);
 * a subscriber that answers, even with a permanent 4xx, is reachable and counts as a success.
 * Not thread-safe: one owner (the dispatcher thread). */
#ifndef FS_BREAKER_H
#define FS_BREAKER_H

#include <stdint.h>

typedef enum breaker_state { BREAKER_CLOSED = 0, BREAKER_HALF_OPEN = 1, BREAKER_OPEN = 2 } breaker_state;

typedef struct breaker breaker;

/* threshold >= 1 consecutive failures open it; cooldown_ms >= 0. NULL on allocation failure. */
breaker *breaker_new(int threshold, int64_t cooldown_ms);
void breaker_destroy(breaker *b); /* accepts NULL */

/* How many new requests may start at now_ms: -1 any number (closed), 0 none, 1 one probe. */
int breaker_permits(const breaker *b, int64_t now_ms);

/* A request starts. A permitted probe turns an open breaker half-open. */
void breaker_on_start(breaker *b, int64_t now_ms);
void breaker_on_success(breaker *b);
void breaker_on_failure(breaker *b, int64_t now_ms);

breaker_state breaker_get_state(const breaker *b);
int breaker_failures(const breaker *b); /* consecutive failures so far */
const char *breaker_state_name(breaker_state s); /* "closed", "half_open", "open" */

#endif
