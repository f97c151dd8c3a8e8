/* expire: the scorer's retention rounds (see expire.h); the SQL is in store.c. */
#include "expire.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

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
};

/* What one expire_run() call runs its slices on. */
typedef struct expire_call {
    store *st;
    int64_t labels; /* phase 2's deletions so far */
} expire_call;

int expire_check_days(int64_t days, char *errstr, size_t errstr_size) {
    if (days == 0 || days >= EXPIRE_MIN_DAYS) return 0;
    snprintf(errstr, errstr_size,
             "payment-retention-days: 0 (keep forever) or at least %d, not %" PRId64 ": a deleted payment "
             "whose raw_payments message is consumed again (the topic keeps 7 days by default) "
             "would be stored and counted in the features again, and labels (chargebacks) arrive "
             "weeks after their payment",
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

/* Payments: the rows the slice locked decide whether the phase goes on; labels: those deleted. */
static int64_t expire_slice(void *arg, int phase, int days, int slice, int64_t *counts,
                            char *errstr, size_t n) {
    expire_call *c = arg;
    int64_t taken = 0;
    store_rc rc = phase == EXPIRE_PAYMENTS
                      ? store_expire_payments(c->st, days, slice, counts, &taken, errstr, n)
                      : store_expire_labels(c->st, days, slice, &taken, errstr, n);
    if (rc != STORE_OK) return -1;
    if (phase == EXPIRE_LABELS) {
        counts[0] = taken;
        c->labels += taken;
    }
    return taken;
}

int expire_run(expire *e, store *st, int budget_ms, int64_t *labels_expired, char *errstr,
               size_t errstr_size) {
    expire_call c = {st, 0};
    int rc = sweep_run(e->sw, expire_slice, &c, budget_ms, errstr, errstr_size);
    *labels_expired = c.labels;
    return rc;
}

void expire_destroy(expire *e) {
    if (!e) return;
    sweep_destroy(e->sw);
    free(e);
}
