/* ratelimit: token buckets, one per API key id.
 *
 * A key with rate r may send r requests per second on average and bursts of up to r at once: its
 * bucket holds at most r tokens, refills at r tokens per second, and each request takes one. A
 * request finding less than one token is refused (429) with the seconds until one is back
 * (Retry-After, rounded up). A batch counts as one request: the limit protects the server from
 * request floods; payload size is bounded separately (batch-max, body limits).
 *
 * Buckets live as long as the ratelimit (they survive key reloads: a reload never refills a bucket);
 * those of keys unused for an hour are dropped. Owned by one thread. */
#ifndef FS_RATELIMIT_H
#define FS_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ratelimit ratelimit;

/* The bare bucket, for tests and for callers with their own storage. */
typedef struct ratelimit_bucket {
    double tokens;
    int64_t last_us; /* monotonic time of the last refill; 0 = new (full) bucket */
} ratelimit_bucket;

/* Takes one token from b at now_us for a key with the given rate (> 0). Returns true when allowed;
 * false with *retry_after_s (>= 1) when not. */
bool ratelimit_bucket_take(ratelimit_bucket *b, uint32_t rate, int64_t now_us, int *retry_after_s);

ratelimit *ratelimit_new(void);
void ratelimit_destroy(ratelimit *rl); /* accepts NULL */

/* The bucket of key id (created full on first use); rate 0 = unlimited (always true). */
bool ratelimit_take(ratelimit *rl, const char *id, uint32_t rate, int64_t now_us,
                    int *retry_after_s);

#endif
