/* expire: the scorer's retention rounds (see expire.h); the SQL is in store.c. */
#include "expire.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "fsutil.h"
#include "sweep.h"

/* In store.h's STORE_EXPIRE_* order: fs_scorer_retention_deleted_total's series, the log fields. */
static const char *const TABLES[STORE_EXPIRE_TABLES] = {
    [STORE_EXPIRE_PAYMENTS] = "payments",
    [STORE_EXPIRE_DECISIONS] = "decisions",
    [STORE_EXPIRE_ALERTS] = "alerts",
    [STORE_EXPIRE_ALERT_HISTORY] = "alert_history",
    [STORE_EXPIRE_OUTCOMES] = "outcomes",
};
static const sweep_phase PHASES[] = {
    [EXPIRE_PAYMENTS] = {STORE_EXPIRE_PAYMENTS, STORE_EXPIRE_TABLES},
    [EXPIRE_LABELS] = {STORE_EXPIRE_OUTCOMES, 1},
};
static const sweep_spec SPEC = {
    .metric = "fs_scorer_retention_deleted_total",
    .help = "Rows deleted by retention (payments decided more than payment-retention-days ago, with "
            "everything about them; labels that never found their payment), by table",
    .tables = TABLES,
    .ntables = STORE_EXPIRE_TABLES,
    .phases = PHASES,
    .nphases = EXPIRE_DONE,
    .slice = EXPIRE_SLICE,
};

struct expire {
    sweep *sw;
    bool behind;       /* the last turn's batch was full */
    int64_t credit_us; /* while behind: what the batches earned, less what retention took */
};

/* What one expire_run() call runs its slices on. */
typedef struct expire_call {
    store *st;
    int64_t labels; /* pending labels deleted so far (of deleted payments, and phase 2's) */
} expire_call;

int expire_check_days(int64_t days, char *errstr, size_t errstr_size) {
    if (days == 0 || days >= EXPIRE_MIN_DAYS) return 0;
    snprintf(errstr, errstr_size,
             "payment-retention-days: 0 (keep forever) or at least %d, not %" PRId64 ": labels "
             "(chargebacks) arrive weeks after their payment, and raw_payments messages ingested "
             "longer ago than payment-retention-days are dead-lettered (expired) instead of scored",
             EXPIRE_MIN_DAYS, days);
    return -1;
}

expire *expire_new(int days, int interval_s, metrics *m) {
    expire *e = calloc(1, sizeof *e);
    if (e && !(e->sw = sweep_new(&SPEC, days, interval_s, m))) {
        free(e);
        return NULL;
    }
    return e;
}

int64_t expire_due_us(const expire *e) { return sweep_due_us(e->sw); }

void expire_turn(expire *e, int64_t batch_us, bool full) {
    e->behind = full;
    if (!full) {
        e->credit_us = 0;
        return;
    }
    e->credit_us += batch_us * EXPIRE_SHARE_PCT / 100;
    if (e->credit_us > (int64_t)EXPIRE_BUDGET_MS * 1000) e->credit_us = (int64_t)EXPIRE_BUDGET_MS * 1000;
}

int expire_budget_ms(const expire *e) {
    if (!e->behind) return EXPIRE_BUDGET_MS;
    if (e->credit_us <= 0) return 0;
    return e->credit_us < 1000 ? 1 : (int)(e->credit_us / 1000);
}

void expire_spent(expire *e, int64_t us) {
    if (e->behind) e->credit_us -= us;
}

/* Payments: the rows the slice locked decide whether the phase goes on; labels: those deleted.
 * The payments' cutoff is this scorer's clock, like their decided_at (store.c). */
static int64_t expire_slice(void *arg, int phase, int days, int slice, int64_t *counts,
                            char *errstr, size_t n) {
    expire_call *c = arg;
    int64_t taken = 0, expired = 0;
    store_rc rc = phase == EXPIRE_PAYMENTS
                      ? store_expire_payments(c->st, fs_now_ms() - (int64_t)days * 86400000, slice,
                                              counts, &expired, &taken, errstr, n)
                      : store_expire_labels(c->st, days, slice, &taken, errstr, n);
    if (rc != STORE_OK) return -1;
    if (phase == EXPIRE_LABELS) counts[0] = expired = taken;
    c->labels += expired;
    return taken;
}

int expire_run(expire *e, store *st, int64_t *labels_expired, char *errstr, size_t errstr_size) {
    expire_call c = {st, 0};
    int budget = expire_budget_ms(e), rc = 0;
    *labels_expired = 0;
    if (budget == 0 || fs_mono_us() < sweep_due_us(e->sw)) return 0;
    int64_t t0 = fs_mono_us();
    rc = sweep_run(e->sw, expire_slice, &c, budget, errstr, errstr_size);
    expire_spent(e, fs_mono_us() - t0);
    *labels_expired = c.labels;
    return rc;
}

void expire_destroy(expire *e) {
    if (!e) return;
    sweep_destroy(e->sw);
    free(e);
}
