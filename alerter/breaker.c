/* breaker: per-subscriber circuit breaker (see breaker.h). */
#include "breaker.h"

#include <stdlib.h>

struct breaker {
    int threshold;
    int64_t cooldown_ms;
    breaker_state state;
    int failures;       /* consecutive */
    int64_t opened_at;  /* when it last opened */
};

breaker *breaker_new(int threshold, int64_t cooldown_ms) {
    breaker *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->threshold = threshold < 1 ? 1 : threshold;
    b->cooldown_ms = cooldown_ms < 0 ? 0 : cooldown_ms;
    b->state = BREAKER_CLOSED;
    return b;
}

void breaker_destroy(breaker *b) { free(b); }

int breaker_permits(const breaker *b, int64_t now_ms) {
    switch (b->state) {
    case BREAKER_CLOSED: return -1;
    case BREAKER_HALF_OPEN: return 0; /* the probe is out */
    case BREAKER_OPEN: return now_ms - b->opened_at >= b->cooldown_ms ? 1 : 0;
    }
    return 0;
}

void breaker_on_start(breaker *b, int64_t now_ms) {
    if (b->state == BREAKER_OPEN && breaker_permits(b, now_ms) == 1) b->state = BREAKER_HALF_OPEN;
}

/* Requests started before the breaker opened may still answer: a success then proves the
 * subscriber reachable too, except while open (wait for the probe: it is the test). */
void breaker_on_success(breaker *b) {
    if (b->state == BREAKER_OPEN) return;
    b->state = BREAKER_CLOSED;
    b->failures = 0;
}

void breaker_on_failure(breaker *b, int64_t now_ms) {
    b->failures++;
    if (b->state == BREAKER_HALF_OPEN ||
        (b->state == BREAKER_CLOSED && b->failures >= b->threshold)) {
        b->state = BREAKER_OPEN;
        b->opened_at = now_ms;
    }
}

breaker_state breaker_get_state(const breaker *b) { return b->state; }

int breaker_failures(const breaker *b) { return b->failures; }

const char *breaker_state_name(breaker_state s) {
    return s == BREAKER_CLOSED ? "closed" : s == BREAKER_HALF_OPEN ? "half_open" : "open";
}
