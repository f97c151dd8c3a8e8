/* scorer: the worker's data path: consume -> decide -> persist -> produce -> commit.
 *
 * One thread polls raw_payments (consumer group, manual offsets) into batches. Each batch is:
 *   1. decoded: every message is a valid payment or a dead letter (undecodable, invalid);
 *   2. persisted and decided in ONE PostgreSQL transaction, idempotent on payment_id (store.h):
 *      only payments this transaction inserted are decided and counted in the velocity windows;
 *      a redelivered payment keeps the decision persisted the first time;
 *   3. produced: processed_payments (every payment), fraud_alerts (review/block), raw_payments.dlq
 *      (dead letters, original bytes and headers plus reason headers), and every delivery report
 *      awaited;
 *   4. committed: the offsets past the batch, only now; a failed commit is retried (from the loop,
 *      before revoked partitions are handed over, and at close) until it succeeds.
 * A crash anywhere before 4 redelivers the batch, which 2 absorbs.
 * Deciding (in 2) is per batch too: the features of every payment, then ONE prediction of the
 * model (when one is configured) for all of them, then the rules and the blend per payment. The
 * three outcomes of a message are done, retry (PostgreSQL unreachable: the same batch again, after
 * a backoff) and dead-letter.
 *
 * Message contracts: docs/topics.md and schemas/json/. */
#ifndef FS_SCORER_H
#define FS_SCORER_H

#include <stdatomic.h>
#include <stdint.h>

#include "cfg.h"
#include "kafka.h"
#include "metrics.h"
#include "model.h"
#include "modelrow.h"
#include "rules.h"
#include "store.h"

typedef struct scorer_config {
    const char *brokers;
    const cfg_props *props;       /* librdkafka passthrough */
    const char *group_id;
    const char *topic;            /* raw_payments */
    const char *processed_topic;
    const char *alerts_topic;
    const char *dlq_topic;
    const char *outcomes_dlq_topic; /* invalid payment_outcomes messages */
    const char *rules_file;       /* reloaded on request (SIGHUP) */
    const char *model_file;       /* model (model.h) blended into the score; "" : rules only;
                                     reloaded with the rules */
    const char *feature_windows;  /* extra windows recorded as evidence (rules_add_feature_windows) */
    const char *risk_windows_days;/* merchant-risk windows in days, "" for none */
    int risk_delay_days;          /* the feedback delay of merchant risk */
    const char *outcomes_topic;   /* payment_outcomes ("" : not consumed) */
    const char *outcomes_group_id;/* the scorer's second consumer group */
    metrics *metrics;             /* borrowed: outlives the scorer; NULL: no metrics */
    atomic_int *consuming;        /* borrowed: set to 1 while in the consume loop (/ready), or NULL */
    kafka_poll_clock *polled;     /* borrowed: stamped by each poll of raw_payments (/metrics), or NULL */
    int stats_interval_ms;        /* librdkafka statistics (consumer lag) every this long */
    const char *scorer_id;        /* decisions.scorer_id, client.id */
    int batch_max;                /* messages per batch */
    int batch_max_ms;             /* a batch closes this long after its first message */
    int batch_linger_ms;          /* ... or once no message came for this long (0: none queued) */
    int velocity_prune_every;     /* batches between prunes of old velocity events (0: never) */
    int velocity_prune_min_interval_ms; /* ... and at least this long between two prunes */
    int64_t velocity_lateness_ms; /* how late an event may be and still see complete windows */
    int64_t watermark_liveness_ms;/* other workers' published watermarks older than this no longer
                                     hold pruning back (prune.h) */
    int retention_days;           /* payment data decided longer ago is deleted (expire.h; 0: kept) */
    int retention_interval_s;     /* a retention round starts this often */
    int startup_timeout_ms;       /* brokers must answer and the topics exist within this */
    int shutdown_timeout_ms;      /* on stop: how long the last batch may wait for the brokers */
} scorer_config;

/* Counters since start (the future /metrics). */
typedef struct scorer_stats {
    uint64_t batches;             /* committed batches */
    uint64_t messages;            /* messages consumed (not counting consumer errors) */
    uint64_t payments_new;        /* decided and persisted by this worker */
    uint64_t payments_redelivered;/* already persisted: stored decision re-sent */
    uint64_t dead_letters;        /* raw_payments messages produced to the DLQ (any reason);
                                   * outcome messages: outcomes_invalid */
    uint64_t db_rejected;         /* dead letters because PostgreSQL refused the row */
    uint64_t consumer_errors;     /* error events from the consumer (not processed) */
    uint64_t offsets_out_of_range;/* committed offset no longer on the broker: data lost */
    uint64_t messages_lost;       /* estimate: earliest available offset - committed offset */
    uint64_t db_retries;          /* batch attempts that failed and were retried */
    uint64_t produce_retries;     /* delivery rounds that had failures */
    uint64_t delivery_failures;   /* delivery reports with an error */
    uint64_t commit_failures;
    uint64_t late_events;         /* too late: windows may reach below pruned rows (prune.h) */
    uint64_t out_of_order;        /* older than this worker's newest event time (counted fine) */
    uint64_t outcomes_stored;     /* distinct outcome labels stored */
    uint64_t outcomes_invalid;    /* outcome messages dead-lettered (undecodable, invalid, refused,
                                   * or conflicting with a stored label) */
    uint64_t outcomes_applied;    /* labels applied to links and the vault */
    uint64_t buckets_pruned;
    uint64_t velocity_pruned;     /* velocity events deleted */
    uint64_t rules_reloads;
    uint64_t rules_reload_failures;
    uint64_t model_reloads;
    uint64_t model_reload_failures;
    uint64_t model_failures;      /* batches the model could not score (decided by the rules) */
} scorer_stats;

/* XGBoost threads per worker: a batch is a few hundred rows, far too little to share out, and the
 * cores are better spent on more workers (scale out with the consumer group). */
#define SCORER_MODEL_THREADS 1

typedef struct scorer scorer;

/* Loads a rules file and adds the configured extra feature windows (also for reloads). */
rules *scorer_rules_load(const scorer_config *cfg, char *errstr, size_t errstr_size);

/* Loads cfg->model_file (which must be set) for prediction (also for reloads). NULL with errstr
 * naming the file when it is missing or not a FraudShield model. */
model *scorer_model_load(const scorer_config *cfg, char *errstr, size_t errstr_size);

/* Adds to r (not shared yet) the windows m reads (rules_add_model_windows; m NULL: nothing), so
 * that m's inputs never depend on which rules are enabled: at start-up, on every reload of either
 * file, and in the offline check. Returns 0, or -1 with errstr naming the column that does not fit
 * (too many windows): the start-up fails, a reload is refused (reload_failed). */
int scorer_rules_fit(rules *r, const model *m, char *errstr, size_t errstr_size);

/* Whether r and m fit together (scorer_rules_fit on a copy: r is left as loaded). At start-up,
 * before anything connects: a misfit is a configuration error, not something to learn after a
 * wait for PostgreSQL or the brokers. Returns 0, or -1 with errstr. */
int scorer_rules_fit_check(const rules *r, const model *m, char *errstr, size_t errstr_size);

/* m's columns that no feature of r fills (always missing: NAN), logged as the warning
 * model_features_missing with their names; returns how many (0 when x is NULL). */
size_t scorer_model_unbound(const model *m, const modelrow *x);

/* Creates the producer and the consumer, waits (blocking, start-up only) for the brokers and
 * topics, and subscribes. Takes ownership of st (connected, migrated), r and m (NULL: rules only),
 * also on failure. cfg's strings and props must outlive the scorer. Returns NULL with errstr. */
scorer *scorer_new(const scorer_config *cfg, store *st, rules *r, model *m, char *errstr,
                   size_t errstr_size);

/* Consumes until *stop is set (from a signal handler, in any thread: app.h), reloading the rules
 * and the model between batches whenever *reload is set (it is cleared; a file that does not load
 * keeps its active version). Then finishes or abandons the batch in hand, leaves the
 * group and flushes the producer. Returns 0, or -1 after a fatal consumer error. */
int scorer_run(scorer *s, const atomic_bool *stop, atomic_bool *reload);

void scorer_stats_get(const scorer *s, scorer_stats *out);

void scorer_destroy(scorer *s); /* accepts NULL */

#endif
