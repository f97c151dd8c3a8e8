/* redrive: the decisions of fraudshield-redrive (tools/redrive_main.c), which produces dead letters
 * back to the topic they came from once their cause is fixed. Kept apart from the Kafka loop so
 * the unit tests need no broker: which messages go where (the reason filter, the target topic, the
 * redrive limit), the headers a re-driven message carries, and the tally of the summary.
 *
 * A dead letter (docs/topics.md) is the original message plus the headers its DLQ added:
 * dlq_reason, dlq_error, dlq_time, source_topic, source_partition, source_offset (the scorer's and
 * the alerter's DLQ code write the same six). A re-driven message is the original again: the same
 * key and value bytes, the original headers in their order, without those six (and any other
 * dlq_* header), plus redrive_count (previous + 1) and redriven_at. */
#ifndef FS_REDRIVE_H
#define FS_REDRIVE_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define REDRIVE_REASON_MAX 64  /* a dlq_reason longer than this is shown truncated */
#define REDRIVE_TOPIC_MAX 250  /* Kafka topic names: at most 249 bytes */

typedef enum redrive_verdict {
    REDRIVE_PRODUCE,      /* produce to decision.target */
    REDRIVE_FILTERED,     /* its dlq_reason is not one of --reason */
    REDRIVE_NO_SOURCE,    /* no --to and no usable source_topic header */
    REDRIVE_MAX_REDRIVES, /* redrive_count reached --max-redrives: a poison message stops here */
    REDRIVE_NO_VALUE,     /* dlq_value_omitted: the dead letter was too large to carry the message */
} redrive_verdict;

/* "produce", "filtered", "no_source", "max_redrives", "no_value": the names of the summary. */
const char *redrive_verdict_name(redrive_verdict v);

typedef struct redrive_decision {
    redrive_verdict verdict;
    char reason[REDRIVE_REASON_MAX]; /* the dlq_reason header, "-" when absent */
    char target[REDRIVE_TOPIC_MAX];  /* the target topic ("" when there is none) */
    int64_t redrive_count;           /* redrive_count so far (0 when absent or not a number) */
} redrive_decision;

/* What to re-drive: reasons is the comma-separated --reason ("" = every reason but expired; each must be a
 * dlq_reason the project writes, so a typo cannot skip the whole DLQ), to the target topic ("" =
 * each message's source_topic), dlq_topic the topic being read (never a target: that would loop),
 * max_redrives >= 1. Returns NULL with errstr. */
typedef struct redrive_plan redrive_plan;
redrive_plan *redrive_plan_new(const char *reasons, const char *to, const char *dlq_topic,
                               int64_t max_redrives, char *errstr, size_t errstr_size);
void redrive_plan_destroy(redrive_plan *p);

/* Decides what happens to a dead letter with these headers (NULL: it has none). Order: the reason
 * filter, then the target, then the limit. */
void redrive_decide(const redrive_plan *p, const rd_kafka_headers_t *hdrs, redrive_decision *d);

/* True for the headers a DLQ adds (dlq_* and source_topic/partition/offset). */
bool redrive_header_is_dlq(const char *name);

/* The headers of the re-driven message: hdrs (may be NULL) minus the DLQ's headers and any earlier
 * redrive_count / redriven_at, in their original order, then redrive_count = redrive_count + 1 and
 * redriven_at = now_ms in RFC 3339 UTC. The caller owns the result (librdkafka takes it over when
 * rd_kafka_producev() accepts the message). */
rd_kafka_headers_t *redrive_headers(const rd_kafka_headers_t *hdrs, int64_t redrive_count,
                                    int64_t now_ms);

/* Counts of decisions by (dlq_reason, target, verdict), for the summary. */
typedef struct redrive_tally redrive_tally;
redrive_tally *redrive_tally_new(void);
void redrive_tally_destroy(redrive_tally *t);
/* Adds n decisions like d. Returns 0 or -1 (out of memory). */
int redrive_tally_add(redrive_tally *t, const redrive_decision *d, uint64_t n);
/* Messages with this verdict (all reasons, all targets). */
uint64_t redrive_tally_count(const redrive_tally *t, redrive_verdict v);

/* The table (dlq_reason, target, action, messages; sorted) and then the summary line
 *   redrive read=N produced=N skipped=N filtered=N no_source=N max_redrives=N [reason:R=N ...]
 * In a dry run, produced=0 and would_produce=N follows skipped (action "would_produce"). */
void redrive_tally_print(const redrive_tally *t, bool dry_run, FILE *out);

#endif
