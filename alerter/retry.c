/* retry: delivery retry policy (see retry.h). */
#include "retry.h"

#include <ctype.h>
#include <string.h>
#include <time.h>

#define RETRY_AFTER_MAX_S (366LL * 24 * 3600) /* longer instructions are clamped (no overflow) */

static int64_t compress(const retry_policy *p, int64_t ms) {
    return p->time_compression > 1 ? ms / p->time_compression : ms;
}

int64_t retry_nominal_ms(const retry_policy *p, int n) {
    int64_t d = p->base_ms;
    for (int i = 1; i < n && d < p->max_delay_ms; i++) d *= 2; /* stops before it can overflow */
    if (d > p->max_delay_ms) d = p->max_delay_ms;
    return compress(p, d);
}

int64_t retry_next_ms(const retry_policy *p, int n, int64_t age_ms, int64_t retry_after_ms, double u) {
    if (p->max_attempts > 0 && n >= p->max_attempts) return -1;
    int64_t nominal = retry_nominal_ms(p, n), cap = compress(p, p->max_delay_ms);
    double jitter = (double)p->jitter_pct / 100.0 * (2.0 * u - 1.0);
    int64_t delay = (int64_t)((double)nominal * (1.0 + jitter));
    if (retry_after_ms >= 0) {
        int64_t ra = retry_after_ms < cap ? retry_after_ms : cap;
        if (ra > delay) delay = ra;
    }
    if (delay < 0) delay = 0;
    if (age_ms + delay > compress(p, p->max_age_ms)) return -1;
    return delay;
}

retry_class retry_classify(int answered, long status) {
    if (!answered) return RETRY_AGAIN;
    if (status >= 200 && status <= 299) return RETRY_DONE;
    if (status == 408 || status == 429 || (status >= 500 && status <= 599)) return RETRY_AGAIN;
    /* the receiver's credentials (a secret rotation on one side only, an auth proxy being set
     * up): fixed by an operator, not by the alert; retried like an outage (and counted by the
     * breaker), never dead-lettered on the first answer */
    if (status == 401 || status == 403) return RETRY_AGAIN;
    return RETRY_PERMANENT;
}

/* delay-seconds: 1*DIGIT */
static int parse_seconds(const char *s, size_t n, int64_t *out) {
    int64_t v = 0;
    if (n == 0) return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        if (v < RETRY_AFTER_MAX_S) v = v * 10 + (s[i] - '0');
    }
    *out = v < RETRY_AFTER_MAX_S ? v : RETRY_AFTER_MAX_S;
    return 0;
}

/* HTTP-date: IMF-fixdate, and the obsolete RFC 850 and asctime forms recipients must accept. */
static int parse_http_date(const char *s, int64_t *epoch_s) {
    static const char *const FORMATS[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                          "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < sizeof FORMATS / sizeof *FORMATS; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(s, FORMATS[i], &tm);
        if (end && *end == '\0') {
            *epoch_s = (int64_t)timegm(&tm);
            return 0;
        }
    }
    return -1;
}

int retry_parse_after(const char *value, int64_t now_ms, int64_t *ms_out) {
    char buf[128];
    while (*value == ' ' || *value == '\t') value++;
    size_t n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t' || value[n - 1] == '\r' ||
                     value[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, value, n);
    buf[n] = '\0';
    int64_t secs;
    if (parse_seconds(buf, n, &secs) == 0) {
        *ms_out = secs * 1000;
        return 0;
    }
    if (parse_http_date(buf, &secs) != 0) return -1;
    int64_t ms = secs * 1000 - now_ms;
    if (ms < 0) ms = 0;
    if (ms > RETRY_AFTER_MAX_S * 1000) ms = RETRY_AFTER_MAX_S * 1000;
    *ms_out = ms;
    return 0;
}
