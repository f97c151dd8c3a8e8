/* sweep: retention rounds in slices (see sweep.h). */
#include "sweep.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>

#include "fsutil.h"
#include "log.h"

struct sweep {
    const sweep_spec *spec;
    int days;
    int64_t interval_us;
    int64_t due_us;
    bool in_round;
    int phase;
    int64_t round_start_us;
    int64_t counts[SWEEP_MAX_TABLES]; /* this round's */
    metric *m_deleted;
};

int sweep_next_phase(int phase, int nphases, int64_t taken, int64_t slice) {
    if (phase >= nphases) return nphases;
    return taken >= slice ? phase : phase + 1;
}

sweep *sweep_new(const sweep_spec *spec, int days, int interval_s, metrics *m) {
    /* the spec is the caller's static table: an invalid one is a programming error */
    assert(spec->ntables >= 1 && spec->ntables <= SWEEP_MAX_TABLES);
    assert(spec->nphases >= 1 && spec->slice >= 1);
    for (int i = 0; i < spec->nphases; i++)
        assert(spec->phases[i].first >= 0 && spec->phases[i].ncols >= 1 &&
               spec->phases[i].first + spec->phases[i].ncols <= spec->ntables);
    sweep *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->spec = spec;
    s->days = days;
    s->interval_us = (int64_t)interval_s * 1000000;
    s->due_us = days > 0 ? fs_mono_us() : INT64_MAX;
    s->phase = spec->nphases;
    if (m) {
        s->m_deleted = metrics_counter(m, spec->metric, spec->help, "table");
        for (int t = 0; t < spec->ntables; t++) metric_add(s->m_deleted, spec->tables[t], 0);
    }
    return s;
}

int64_t sweep_due_us(const sweep *s) { return s->due_us; }

/* One slice of the current phase: adds to the round's counts and the metric. Returns the rows
 * the slice took, or -1 with errstr. */
static int64_t sweep_slice(sweep *s, sweep_slice_fn fn, void *arg, char *errstr, size_t n) {
    const sweep_phase *p = &s->spec->phases[s->phase];
    int64_t got[SWEEP_MAX_TABLES] = {0};
    int64_t taken = fn(arg, s->phase, s->days, s->spec->slice, got, errstr, n);
    if (taken < 0) return -1;
    for (int c = 0; c < p->ncols; c++) {
        s->counts[p->first + c] += got[c];
        metric_add(s->m_deleted, s->spec->tables[p->first + c], (double)got[c]);
    }
    return taken;
}

static void sweep_round_done(sweep *s) {
    int64_t total = 0;
    for (int t = 0; t < s->spec->ntables; t++) total += s->counts[t];
    s->in_round = false;
    s->due_us = s->round_start_us + s->interval_us;
    if (total == 0) return;
    json_t *f = json_object();
    for (int t = 0; t < s->spec->ntables; t++)
        json_object_set_new(f, s->spec->tables[t], json_integer((json_int_t)s->counts[t]));
    json_object_set_new(f, "retention_days", json_integer(s->days));
    json_object_set_new(f, "duration_ms", json_integer((json_int_t)((fs_mono_us() - s->round_start_us) / 1000)));
    log_fields(LOG_INFO, "retention_pruned", f, "retention: deleted %" PRId64 " row(s) older than %d days",
               total, s->days);
}

int sweep_run(sweep *s, sweep_slice_fn fn, void *arg, int budget_ms, char *errstr,
              size_t errstr_size) {
    int64_t now = fs_mono_us(), until = now + (int64_t)budget_ms * 1000;
    if (s->days <= 0 || now < s->due_us) return 0;
    if (!s->in_round) {
        s->in_round = true;
        s->phase = 0;
        s->round_start_us = now;
        for (int t = 0; t < SWEEP_MAX_TABLES; t++) s->counts[t] = 0;
    }
    while (s->phase < s->spec->nphases && fs_mono_us() < until) {
        int64_t taken = sweep_slice(s, fn, arg, errstr, errstr_size);
        if (taken < 0) { /* abandoned; what it deleted so far is counted */
            s->in_round = false;
            s->due_us = fs_mono_us() + s->interval_us;
            return -1;
        }
        s->phase = sweep_next_phase(s->phase, s->spec->nphases, taken, s->spec->slice);
    }
    if (s->phase >= s->spec->nphases) sweep_round_done(s);
    else s->due_us = fs_mono_us(); /* more to do: at the next call, after the loop's other work */
    return 0;
}

void sweep_destroy(sweep *s) { free(s); }
