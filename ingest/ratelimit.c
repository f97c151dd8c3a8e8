/* ratelimit: per-key token buckets (see ratelimit.h). */
#include "ratelimit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"

#define RL_IDLE_US (3600LL * 1000000) /* buckets unused this long are dropped */
#define RL_SWEEP_EVERY 4096           /* takes between sweeps */

typedef struct rl_node {
    char id[KEYS_ID_MAX + 1];
    ratelimit_bucket b;
    struct rl_node *next;
} rl_node;

struct ratelimit {
    rl_node *head; /* few keys per deployment: a list, most recently created first */
    unsigned takes;
};

bool ratelimit_bucket_take(ratelimit_bucket *b, uint32_t rate, int64_t now_us, int *retry_after_s) {
    double cap = rate;
    if (b->last_us == 0) {
        b->tokens = cap;
    } else if (now_us > b->last_us) {
        b->tokens = fmin(cap, b->tokens + (double)(now_us - b->last_us) * rate / 1e6);
    }
    b->last_us = now_us > b->last_us ? now_us : b->last_us;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return true;
    }
    *retry_after_s = (int)ceil((1.0 - b->tokens) / rate);
    if (*retry_after_s < 1) *retry_after_s = 1;
    return false;
}

ratelimit *ratelimit_new(void) { return calloc(1, sizeof(ratelimit)); }

void ratelimit_destroy(ratelimit *rl) {
    if (!rl) return;
    for (rl_node *n = rl->head, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    free(rl);
}

static void sweep(ratelimit *rl, int64_t now_us) {
    for (rl_node **link = &rl->head; *link;) {
        rl_node *n = *link;
        if (now_us - n->b.last_us > RL_IDLE_US) {
            *link = n->next;
            free(n);
        } else {
            link = &n->next;
        }
    }
}

bool ratelimit_take(ratelimit *rl, const char *id, uint32_t rate, int64_t now_us,
                    int *retry_after_s) {
    rl_node *n;
    if (rate == 0) return true;
    if (++rl->takes % RL_SWEEP_EVERY == 0) sweep(rl, now_us);
    for (n = rl->head; n && strcmp(n->id, id) != 0; n = n->next) {
    }
    if (!n) {
        n = calloc(1, sizeof *n);
        if (!n) return true; /* out of memory: do not refuse traffic for it */
        strncpy(n->id, id, KEYS_ID_MAX);
        n->next = rl->head;
        rl->head = n;
    }
    return ratelimit_bucket_take(&n->b, rate, now_us, retry_after_s);
}
