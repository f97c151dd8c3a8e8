/* sweep: retention rounds, what the alerter's retention (alerter/retention.h) and the scorer's
 * (scorer/expire.h) share. The SQL, the tables and the statement runner are theirs.
 *
 * Every interval a round deletes what is older than retention-days, in phases, each in slices of
 * at most spec->slice rows: one short statement (one transaction) each, run by the caller's slice
 * function. A slice that took a whole slice's worth of rows means more may be waiting (the same
 * phase again), a short one that the phase is done (the next). Rows another
 * transaction holds are the slice function's to skip (FOR UPDATE SKIP LOCKED), so that any number
 * of processes may prune at once.
 *
 * A call runs slices for at most a time budget, so that the caller's loop is never held up for
 * long; a round in hand resumes at the next call (due at once). At the end of a round that deleted
 * anything: one info line, event retention_pruned, with the rows per table, retention_days and
 * duration_ms. Every deleted row is counted in spec->metric{table} (at 0 for each table from the
 * start). A failed slice abandons the round: what it deleted so far is counted, and the next round
 * is due an interval later (the rows are still there then). */
#ifndef FS_SWEEP_H
#define FS_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

#define SWEEP_MAX_TABLES 8

/* A phase's slice returns ncols counts, for tables[first .. first + ncols). Two phases may count
 * into the same table. */
typedef struct sweep_phase {
    int first;
    int ncols;
} sweep_phase;

typedef struct sweep_spec {
    const char *metric;        /* counter with label "table" */
    const char *help;
    const char *const *tables; /* log field names and metric label values */
    int ntables;               /* 1 .. SWEEP_MAX_TABLES */
    const sweep_phase *phases; /* in order */
    int nphases;
    int slice;                 /* rows per statement */
} sweep_spec;

/* Deletes one slice of phase (0 .. nphases-1): at most slice rows older than days (with what
 * belongs to them); counts[0 .. ncols) get the rows deleted per table. Returns the rows the slice
 * took (at most slice: all of them means more may be waiting; usually its main table's count, or
 * the rows it locked when it may leave some of them, see scorer/store.c), or -1 with errstr. */
typedef int64_t (*sweep_slice_fn)(void *arg, int phase, int days, int slice, int64_t *counts,
                                  char *errstr, size_t errstr_size);

/* The phase after a slice of phase took `taken` of at most `slice` rows: the same one when the
 * slice was full, else the next; nphases (done) after the last. */
int sweep_next_phase(int phase, int nphases, int64_t taken, int64_t slice);

typedef struct sweep sweep;

/* spec (borrowed: it must outlive the sweep, normally a static), days: retention-days (0: never
 * runs; sweep_due_us() is then INT64_MAX), interval_s: between the starts of two rounds; the first
 * is due at once. Registers spec->metric at 0 for each table (m may be NULL). NULL: out of memory.
 * An invalid spec (no table or more than SWEEP_MAX_TABLES, no phase, a phase counting tables the
 * spec does not have) is a programming error: an assertion. */
sweep *sweep_new(const sweep_spec *spec, int days, int interval_s, metrics *m);

/* When sweep_run() has work (monotonic microseconds, fs_mono_us()). */
int64_t sweep_due_us(const sweep *s);

/* Runs slices of the current round through fn(arg, ...), starting a round when one is due, until
 * the round is done or budget_ms has passed. Returns 0, or -1 with fn's errstr (round abandoned). */
int sweep_run(sweep *s, sweep_slice_fn fn, void *arg, int budget_ms, char *errstr,
              size_t errstr_size);

void sweep_destroy(sweep *s); /* accepts NULL */

#endif
