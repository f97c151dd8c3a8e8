/* offline: the scorer's feature code over a file of raw_payments events, without Kafka or
 * PostgreSQL (fraudshield-scorer --offline FILE [--offline-outcomes LABELS]). For replay parity:
 * the features the pipeline stored for a stream (decisions.features) must equal what this prints
 * for the same events and labels.
 *
 * Every event of the file is one payment of a single in-memory batch with no stored state, so each
 * payment sees exactly the other payments with an event time not after its own (and, for the
 * vault, those before it in event order): the same windows the live pipeline computes when the
 * events arrive in event order.
 *
 * Labels (outcomes) come from a second file, LABELS: payment_outcomes messages, one per line, in
 * the topic's JSON (docs/topics.md; the lines given to `kcat -P -K:` with their "KEY:" prefix, or
 * without), checked by the scorer's own decoder (outcome.h). The labels of each payment of the
 * events file become the outcome_links rows the scorer's outcome consumer writes for them
 * (vault_load_labels), and the scorer's own counting reads them: for a payment at event time t, the
 * vault fraud/chargeback counts and the merchant risk count only the labels known at t, with the
 * corrections (vault.h). Labels of payments not in the events file are ignored (the scorer keeps
 * them pending). Without LABELS those features are 0. Labels under one outcome_id are settled as
 * the scorer stores them (store_insert_outcomes): the first of the file stands; a later one with
 * its payment_id and outcome is a redelivery, left out (its known_at does not count again); one
 * with another payment_id or outcome is left out too, with a warning `outcome_conflict` (file,
 * line, both labels), where the scorer dead-letters it (outcome_conflict). The "first" is the
 * scorer's when the lines were produced in file order and each outcome_id names one payment's
 * labels (one partition); the `offline_labels` line counts both kinds.
 *
 * Parity holds when every label was applied by the pipeline before it scored the first payment
 * with event time >= the label's known_at. A label that arrives before its payment is applied
 * right after the batch that persists the payment (docs/topics.md), so a replay at full speed with
 * the labels stored beforehand can score payments of that same batch before their labels count. And a label known before its own payment's event time
 * counts here from known_at on, in the pipeline only once the payment is persisted. */
#ifndef FS_OFFLINE_H
#define FS_OFFLINE_H

#include <stddef.h>
#include <stdio.h>

#include "rules.h"

/* Reads path (one raw_payments JSON event per line; a "KEY:" prefix before the '{' is ignored,
 * blank lines skipped) and, unless outcomes_path is NULL or "", outcomes_path (one
 * payment_outcomes message per line, the same way), and writes one line per payment to out, in
 * file order:
 *   {"payment_id":"...","decision":"...","score":N,"features":{...}}
 * Returns 0, or -1 with errstr (unreadable file, invalid event or label: file and line number). */
int offline_run(const char *path, const char *outcomes_path, const rules *r, FILE *out,
                char *errstr, size_t errstr_size);

#endif
