/* retry: the delivery retry policy (pure functions, unit-tested).
 *
 * After failed attempt n (1-based, counted since the delivery was created or re-driven) the next
 * one comes after min(base * 2^(n-1), max_delay), jittered uniformly by +-jitter_pct, and never
 * sooner than a Retry-After the subscriber sent (capped at max_delay). The delivery gives up
 * (exhausted) when the next attempt would come later than max_age after its creation, or after
 * max_attempts attempts when that is set. Defaults (docs/alerter.md): 30 s doubling to 2 h, for
 * 24 h: about 20 attempts.
 *
 * time_compression (tests only) divides base, max_delay and max_age: 1000 makes the 24 h schedule
 * run in 86 s. A Retry-After is the subscriber's instruction and stays in real time. */
#ifndef FS_RETRY_H
#define FS_RETRY_H

#include <stdint.h>

typedef struct retry_policy {
    int64_t base_ms;      /* delay after the first failed attempt */
    int64_t max_delay_ms; /* cap on one delay */
    int64_t max_age_ms;   /* no attempt later than this after the delivery was created */
    int max_attempts;     /* 0: limited by max_age only */
    int jitter_pct;       /* 0..100 */
    int time_compression; /* >= 1 */
} retry_policy;

typedef enum retry_class {
    RETRY_DONE,      /* delivered (2xx) */
    RETRY_AGAIN,     /* no answer, timeout, 408, 429, 5xx */
    RETRY_PERMANENT, /* any other answer (3xx are not followed, 4xx): retrying cannot help */
} retry_class;

/* The un-jittered delay after failed attempt n (>= 1), in real milliseconds (compression applied). */
int64_t retry_nominal_ms(const retry_policy *p, int n);

/* The delay before the next attempt after attempt n failed, or -1 when the schedule is exhausted.
 * age_ms: real time since the delivery was created (or re-driven); retry_after_ms: the
 * subscriber's Retry-After in ms, -1 when none; u: uniform random in [0, 1) for the jitter. */
int64_t retry_next_ms(const retry_policy *p, int n, int64_t age_ms, int64_t retry_after_ms, double u);

/* answered: a complete HTTP response arrived (status is its code); otherwise a network error or
 * timeout. */
retry_class retry_classify(int answered, long status);

/* A Retry-After header value (RFC 9110: delay-seconds or an HTTP-date; surrounding blanks allowed)
 * as milliseconds from now_ms (a date in the past gives 0). Returns 0, or -1 when unparseable. */
int retry_parse_after(const char *value, int64_t now_ms, int64_t *ms_out);

#endif
