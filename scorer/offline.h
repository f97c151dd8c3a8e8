/* offline: the scorer's feature code over a file of raw_payments events, without Kafka or
 * PostgreSQL (fraudshield-scorer --offline FILE). For replay parity: the features the pipeline
 * stored for a stream (decisions.features) must equal what this prints for the same events.
 *
 * Every event of the file is one payment of a single in-memory batch with no stored state, so each
 * payment sees exactly the other payments with an event time not after its own (and, for the
 * vault, those before it in event order): the same windows the live pipeline computes when the
 * events arrive in event order. Labels (outcomes) are not read: vault fraud counts and merchant
 * risk are 0. */
#ifndef FS_OFFLINE_H
#define FS_OFFLINE_H

#include <stddef.h>
#include <stdio.h>

#include "rules.h"

/* Reads path (one raw_payments JSON event per line; a "KEY:" prefix before the '{' is ignored,
 * blank lines skipped) and writes one line per payment to out, in file order:
 *   {"payment_id":"...","decision":"...","score":N,"features":{...}}
 * Returns 0, or -1 with errstr (unreadable file, invalid event: its line number). */
int offline_run(const char *path, const rules *r, FILE *out, char *errstr, size_t errstr_size);

#endif
