/* kafka: librdkafka client set-up shared by the processes.
 *
 * The project's defaults are applied first, then the operator's passthrough properties (-X / KAFKA_*),
 * so an operator can tune anything, except the properties a guarantee rests on, which are locked
 * (setting them to another value is a start-up error): a producer is always acks=all and idempotent.
 * librdkafka's own log lines are routed into our JSON logger. */
#ifndef FS_KAFKA_H
#define FS_KAFKA_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

/* Topic names (configurable per process, these are the defaults). */
#define KAFKA_TOPIC_RAW "raw_payments"
#define KAFKA_TOPIC_PROCESSED "processed_payments"
#define KAFKA_TOPIC_ALERTS "fraud_alerts"
#define KAFKA_TOPIC_DLQ "raw_payments.dlq"
#define KAFKA_TOPIC_OUTCOMES_DLQ "payment_outcomes.dlq"
#define KAFKA_TOPIC_OUTCOMES "payment_outcomes"

/* A new conf with brokers, the logger, and then props applied (librdkafka rejects unknown names:
 * the error names the property). Returns NULL with errstr. */
rd_kafka_conf_t *kafka_conf_new(const char *brokers, const cfg_props *props, char *errstr,
                                size_t errstr_size);

/* A consumer error about a record batch librdkafka could not read (a CRC mismatch with check.crcs,
 * a compression or message format it cannot decode) at a known partition and offset: the fetch may
 * move past it, and the next commit with it. Other partition errors (authorization, sizes) retry
 * the same offset and lose nothing. */
bool kafka_err_unreadable(const rd_kafka_message_t *m);

/* The operator's librdkafka properties checked as kafka_conf_new would (unknown names, bad values,
 * the ones a guarantee forbids), before anything connects. Returns 0 or -1 with errstr. */
int kafka_props_check(const cfg_props *props, char *errstr, size_t errstr_size);

/* Sets name=value on conf unless the operator set name in props (project defaults that an operator
 * may override). Returns 0 or -1 with errstr. */
int kafka_conf_default(rd_kafka_conf_t *conf, const cfg_props *props, const char *name,
                       const char *value, char *errstr, size_t errstr_size);

/* Sets name=value on conf; if the operator asked for a different value it is an error (a property a
 * guarantee rests on). Returns 0 or -1 with errstr. */
int kafka_conf_lock(rd_kafka_conf_t *conf, const cfg_props *props, const char *name,
                    const char *value, char *errstr, size_t errstr_size);

/* A producer with acks=all and enable.idempotence=true locked, and partitioner=murmur2_random
 * unless props (the operator's passthrough, may be NULL) chose one. Takes ownership of conf (also
 * on failure). Returns NULL with errstr. */
rd_kafka_t *kafka_producer_new(rd_kafka_conf_t *conf, const cfg_props *props, char *errstr,
                               size_t errstr_size);

/* A consumer whose messages, errors and rebalances all come through rd_kafka_consumer_poll() (its
 * main queue redirected). Takes ownership of conf (also on failure). Returns NULL with errstr. */
rd_kafka_t *kafka_consumer_new(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size);

/* How long ago a consumer loop last came back from rd_kafka_consumer_poll, for /metrics.
 * librdkafka serves the statistics callback (the consumer lag gauges) only from that poll, on the
 * loop's own thread: a loop stuck anywhere else (a batch retried while PostgreSQL is down, a
 * statement waiting on a lock, a synchronous commit) keeps exporting its last lag however the
 * backlog grows, while the age of its last poll keeps growing. The loop stamps the clock
 * (kafka_poll_clock_start, kafka_consumer_poll); any thread reads it (an atomic). A zeroed clock
 * is a loop that has not started. */
typedef struct kafka_poll_clock {
    _Atomic int64_t returned_us; /* fs_mono_us() of the last return from poll; 0: not started */
} kafka_poll_clock;

/* The loop starts: its first poll is due now (a loop stuck in its first poll shows too). */
void kafka_poll_clock_start(kafka_poll_clock *clock);

/* rd_kafka_consumer_poll(rk, timeout_ms), then stamps clock (NULL: none). The rebalance and
 * statistics callbacks run inside: a callback that blocks counts as time without a poll. */
rd_kafka_message_t *kafka_consumer_poll(rd_kafka_t *rk, int timeout_ms, kafka_poll_clock *clock);

/* Seconds since the loop last returned from poll (or started); 0 before it started. Any thread. */
double kafka_poll_age_seconds(const kafka_poll_clock *clock);

/* The lag to export for one partition of librdkafka's statistics (part: the object at
 * topics.<t>.partitions.<p>): its consumer_lag when this consumer owns the partition ("desired")
 * and the lag is known. For an owned partition whose group has committed nothing
 * (committed_offset -1001: a new group, or commits that keep failing) librdkafka reports -1; the
 * backlog is then everything the broker holds, hi_offset - lo_offset (what
 * auto.offset.reset=earliest reads). 0 for a partition this consumer does not own, so that sums over
 * consumers stay right across rebalances. */
int64_t kafka_stats_partition_lag(const json_t *part);

/* Adds to offs (topic, partition) -> the offset after m, or raises it: the commit that says every
 * message up to m is done. Returns -1 when the list could not grow. */
int kafka_offsets_add(rd_kafka_topic_partition_list_t *offs, const rd_kafka_message_t *m);

/* Waits up to timeout_ms for the brokers to answer a metadata request and for every named topic to
 * exist (NULL-terminated list), or until app_stop_requested (a SIGTERM during start-up). Returns 0
 * or -1 with errstr. Blocking: start-up only. */
int kafka_wait_topics(rd_kafka_t *rk, const char *const *topics, int timeout_ms, char *errstr,
                      size_t errstr_size);

/* Closes a consumer (leaves the group, commits per its rebalance callback) and destroys it; *rkp is
 * NULL afterwards. A consumer that holds no partitions yet is abandoned instead (the process is
 * exiting; the group notices after session.timeout.ms): librdkafka 2.0.2's cooperative-sticky
 * assignor aborts when a member is closed before its first assignment (librdkafka issue #4312,
 * fixed after 2.0.2). Nothing is lost either way: a member without partitions has nothing to commit. */
void kafka_consumer_close(rd_kafka_t **rkp);

/* True for the errors a message gets for its size (the client's message.max.bytes, or the broker's
 * limit): producing the same bytes again can never succeed. */
bool kafka_err_too_big(rd_kafka_resp_err_t err);

/* The producer's message.max.bytes (librdkafka refuses larger messages before sending them). */
size_t kafka_max_message_bytes(rd_kafka_t *rk);

/* Messages lost to retention on a consumer whose auto.offset.reset is earliest (a new group must
 * start there; the error policy would stop fetching the partition): the reset skips them without a
 * word, so the loss shows only as a message beyond the offset expected next. The offsets expected
 * next of one topic's partitions start at the committed ones (read at each assignment) and follow
 * every message; a gap counts as a loss only when the log's start is beyond it too (a transactional
 * producer's markers or compaction leave gaps that lose nothing). */
typedef struct kafka_gaps kafka_gaps;

typedef struct kafka_loss {
    int64_t from;     /* the offset expected next (committed, or after the last message) */
    int64_t earliest; /* the log's start, at most the message in hand (it was not lost); -1:
                         unknown (the broker did not answer) */
    int64_t latest;   /* the log's end */
    int64_t lost;     /* earliest - from */
} kafka_loss;

kafka_gaps *kafka_gaps_new(void); /* NULL when out of memory */
void kafka_gaps_destroy(kafka_gaps *g);

/* Partitions assigned: their committed offsets become the offsets expected next (read with
 * rd_kafka_committed on a copy: parts keeps its own offsets). Blocking (up to 10 s): rebalance
 * callbacks only. Returns the read's error; those partitions are then unchecked until their next
 * assignment. */
rd_kafka_resp_err_t kafka_gaps_assigned(kafka_gaps *g, rd_kafka_t *rk,
                                        const rd_kafka_topic_partition_list_t *parts);

/* Partitions revoked (NULL: all): no offset expected any more. */
void kafka_gaps_revoked(kafka_gaps *g, const rd_kafka_topic_partition_list_t *parts);

/* A message consumed from rk. True when messages before it were lost (*loss says which); a gap
 * costs one watermark query (blocking, up to 2 s), an unbroken sequence nothing. When that query
 * fails, the gap is reported as a possible loss: earliest and latest -1, lost 0 (unknown). */
bool kafka_gaps_check(kafka_gaps *g, rd_kafka_t *rk, const rd_kafka_message_t *m, kafka_loss *loss);

/* Adds a header with a NUL-terminated string value. */
void kafka_header_str(rd_kafka_headers_t *hdrs, const char *name, const char *value);

#endif
