/* pending: the schedule of the re-try rounds of pending labels (see pending.h). */
#include "pending.h"

#include <stdio.h>
#include <stdlib.h>

#define PENDING_START "-infinity" /* below every received_at (one of -infinity itself is never met) */

struct pending {
    int64_t due_us;
    int64_t pause_ms;           /* after the current round (doubled after one that applied nothing) */
    bool in_round;              /* a step ended with more to examine */
    int64_t examined, applied;  /* the current round's */
    char cursor[PENDING_CURSOR_MAX];
};

pending *pending_new(int64_t now_us) {
    pending *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->due_us = now_us;
    p->pause_ms = PENDING_PAUSE_MIN_MS;
    snprintf(p->cursor, sizeof p->cursor, "%s", PENDING_START);
    return p;
}

int64_t pending_due_us(const pending *p) { return p->due_us; }

const char *pending_cursor(const pending *p) { return p->cursor; }

bool pending_step_done(pending *p, int64_t now_us, int64_t step_us, int64_t examined,
                       int64_t applied, const char *cursor, int64_t *left, int64_t *round_applied) {
    p->examined += examined;
    p->applied += applied;
    if (examined >= PENDING_SCAN && cursor && cursor[0]) { /* more may follow: the next step */
        p->in_round = true;
        snprintf(p->cursor, sizeof p->cursor, "%s", cursor);
        if (step_us < 0) step_us = 0;
        p->due_us = now_us + step_us * (100 / PENDING_SHARE_PCT - 1);
        return false;
    }
    p->in_round = false;
    *left = p->examined - p->applied;
    *round_applied = p->applied;
    if (p->applied > 0) p->pause_ms = PENDING_PAUSE_MIN_MS;
    p->due_us = now_us + p->pause_ms * 1000;
    if (p->applied == 0) /* it applied nothing: the round after the next one waits longer */
        p->pause_ms = p->pause_ms * 2 > PENDING_PAUSE_MAX_MS ? PENDING_PAUSE_MAX_MS : p->pause_ms * 2;
    p->examined = p->applied = 0;
    snprintf(p->cursor, sizeof p->cursor, "%s", PENDING_START);
    return true;
}

void pending_kick(pending *p, int64_t now_us) {
    if (p->in_round) return;
    p->pause_ms = PENDING_PAUSE_MIN_MS;
    if (p->due_us > now_us) p->due_us = now_us;
}

void pending_destroy(pending *p) { free(p); }
