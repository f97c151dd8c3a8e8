/* scorer: consume -> decide -> persist -> produce -> commit (see scorer.h).
 *
 * Reading order: scorer_run() and the batch (poll, finish: decode, persist, deliver, commit), then
 * the decision itself, then the consumer's events (rebalances, offset resets), then set-up. */
#include "scorer.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "expire.h"
#include "fvec.h"
#include "fsutil.h"
#include "kafka.h"
#include "jsonfast.h"
#include "log.h"
#include "modelrow.h"
#include "outcome.h"
#include "pay.h"
#include "pending.h"
#include "pii.h"
#include "prune.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define DB_PING_MS 5000      /* an idle worker checks PostgreSQL this often (scorer_db_check) */
#define PERSIST_ATTEMPTS 3   /* non-transient failures of a whole batch before going row by row */
#define PRUNE_LIMIT 50000    /* old feature rows deleted per prune statement */
#define PRUNE_ROUNDS 10      /* prune statements per table and prune */
#define SCORER_MAX_PARTS 1024 /* raw_payments partitions whose progress is tracked (prune_part) */
#define OUTCOMES_MAX 500     /* outcome messages per transaction */
#define OUTCOMES_CLAIM 2000  /* labels applied per transaction */
#define LABELLED_MAX 2000    /* persisted payments with pending labels remembered until applied */
#define PII_KEY_LOG_US 60000000 /* at most one pii_key_changed line a minute (flapping: counted) */

/* Delivery state of one output message; the delivery report callback writes it. */
/* OUT_TOO_BIG: failed because the message is over a size limit (the producer's message.max.bytes,
 * or the broker's): a dead letter is then produced again without its value (scorer_produce_dlq),
 * since the same bytes would fail forever and stall every partition of the worker. */
enum { OUT_NONE = 0, OUT_PENDING, OUT_INFLIGHT, OUT_DONE, OUT_FAILED, OUT_TOO_BIG };
/* Room kept for the dead-letter headers and the record framing under message.max.bytes. */
#define DLQ_HEADROOM 4096

typedef enum item_kind {
    ITEM_VALID,     /* a payment: its row holds it */
    ITEM_DUPLICATE, /* the same payment_id as an earlier message of the batch: that row speaks */
    ITEM_DEAD,      /* dead letter */
    ITEM_CONFLICT,  /* another payment under the payment_id of an earlier message of the batch:
                     * dead-lettered after the batch's transaction, unless that earlier one
                     * differs from the payment stored before and this one is its redelivery
                     * (scorer_settle_conflicts) */
} item_kind;

/* One consumed message. */
typedef struct scorer_item {
    rd_kafka_message_t *msg; /* owned by the batch until it is cleared */
    item_kind kind;
    int row;                 /* ITEM_VALID / ITEM_DUPLICATE / ITEM_CONFLICT */
    const char *dlq_reason;  /* ITEM_DEAD: stable code (static string) */
    char dlq_error[256];
    int8_t out_dlq;
} scorer_item;

/* One distinct payment of the batch. */
typedef struct scorer_row {
    pay_payment p;
    store_row sr;            /* sr.p points at p */
    int item;                /* the first message carrying it */
    bool rejected;           /* PostgreSQL refused it: dead-lettered */
    bool late;               /* its windows may reach below pruned rows (prune.h) when decided */
    bool out_of_order;       /* older than the newest event time this worker persisted */
    int8_t out_processed, out_alert;
    int64_t features_us;     /* computing its features (part of its scoring latency) */
    int64_t tried_decided_ms;/* decided_at of the decision an earlier attempt of this batch sent
                              * COMMIT with (0: none): found stored on a retry, it is this
                              * worker's (the COMMIT's answer was lost), not a redelivery */
    size_t nvev;             /* its velocity events (new payments only) */
    velocity_event vev[RULES_ENT_COUNT];
    char vkeys[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1];
    char vcps[RULES_ENT_COUNT][VELOCITY_KEY_MAX + 1];
} scorer_row;

/* The metric families of a worker (NULL handles when there is no registry: no-ops). */
typedef struct scorer_metrics {
    metric *messages, *payments, *decisions, *rule_hits, *dead_letters, *batch_size,
        *batch_seconds, *batch_phase, *db_seconds, *db_calls, *db_retries, *produce_retries, *delivery_failures,
        *commit_failures, *offsets_lost, *messages_lost, *late, *lag, *lag_total, *rate,
        *outcomes, *outcomes_pending, *reloads, *pruned, *model_seconds, *model_reloads,
        *model_failures, *model_info, *model_unbound, *rules_info, *e2e_seconds, *consumer_errors,
        *outcomes_commit_failures, *pii_key_info, *prune_held_back, *db_timeouts;
} scorer_metrics;

/* An outcome message in hand. */
typedef struct scorer_omsg {
    rd_kafka_message_t *msg;
    int8_t dlq;             /* OUT_NONE: not a dead letter (so far); else its dead letter's state */
    const char *dlq_reason; /* undecodable, invalid_outcome, db_rejected, outcome_conflict */
    char dlq_error[192];
} scorer_omsg;

struct scorer {
    scorer_config cfg;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    size_t max_message_bytes; /* the producer's message.max.bytes */
    store *st;
    rules *rules;             /* active: the file's set with the model's windows added */
    rules *rules_file;        /* with a model: the file's set as loaded (what reloads fit again) */
    model *model;             /* NULL: rules only */
    modelrow *mrow;           /* the model's columns bound to the rules' features (with model) */
    velocity *vel;
    buckets *bk;
    vault *vt;
    expire *exp;              /* retention rounds (payment-retention-days) */
    int64_t turn_batch_us;    /* this loop turn's batch took (0: none), for expire_turn */
    bool turn_full;           /* ... and had batch-max messages: the consumer is behind */
    rd_kafka_t *outcomes;     /* consumer of payment_outcomes (own group), or NULL */
    scorer_omsg *omsgs;         /* outcome messages in hand (kept until stored and committed) */
    size_t nomsgs;
    size_t *orow;               /* per row given to store_insert_outcomes: its message's index */
    store_outcome_conflict *oconf; /* scratch: the conflicts of one store_insert_outcomes */
    kafka_gaps *ogaps;          /* payment_outcomes' offsets expected next (labels lost) */
    int outcome_backoff;      /* batches to wait after an outcome failure */
    pending *pend;            /* re-try rounds of the pending labels (pending.h) */
    char (*labelled)[FS_UUID_STRLEN + 1]; /* payments persisted with pending labels (store.h
                                           * labels_pending), to apply at the next outcome turn */
    size_t nlabelled;
    scorer_metrics m;
    int64_t rate_t0_us;       /* messages/s gauge: start of the current 10 s period */
    uint64_t rate_n0;
    uint64_t db_timeouts_seen; /* store_timeouts() already in fs_scorer_db_timeouts_total */
    const atomic_bool *stop; /* the process's SIGTERM flag (app.h) */
    /* the batch in hand: arrays of cfg.batch_max, reused */
    scorer_item *items;
    size_t nitems;
    scorer_row *rows;
    size_t nrows;
    store_row **todo;        /* scratch: rows of one transaction */
    store_row **old;         /* scratch: rows ingested longer ago than the retention */
    store_row **undecided;   /* scratch: rows the transaction must decide */
    store_row **flagged;     /* scratch: decided review/block */
    const pay_payment **ps;  /* scratch: the undecided rows' payments */
    velocity_event *vevents; /* scratch: velocity events to insert */
    rules_features *feat;    /* scratch: the features of the undecided rows, in their order */
    float *xrows;            /* scratch: the model's input matrix (xcap floats), row-major */
    size_t xcap;
    float *xout;             /* scratch: the model's probabilities, one per undecided row */
    int *dedup;              /* open addressing over rows by payment_id: row + 1, 0 = empty */
    size_t ndedup;
    bool in_batch;           /* re-entrancy guard (the revoke callback finishes batches too) */
    bool abandoned;          /* a batch was dropped unpersisted: consume no further */
    uint64_t commit_attempts; /* failed commits since the last success: > 0 = retried until it works */
    int64_t commit_logged_us; /* when the last commit_failed line was written */
    int64_t commit_retry_us;  /* when the loop retries next (backoff: idle, nothing else commits) */
    bool fatal;
    int64_t watermark_ms;    /* largest event time this worker persisted */
    prune_part parts[SCORER_MAX_PARTS]; /* event-time progress per assigned raw_payments partition */
    size_t nparts;
    int batches_since_prune;
    int64_t pruned_us;       /* when the last prune started (0: never) */
    int batches_since_sync;  /* batches since the watermark was last published */
    int64_t synced_us;       /* when the last sync that published it started (0: never) */
    int64_t horizon_ms[PRUNE_SETS]; /* the shared prune horizons as last read (prune.h) */
    scorer_stats stats;
    char pii_key_id[PII_KEY_ID_HEX + 1]; /* of the last raw_payments message with one ("": none) */
    uint64_t pii_key_changes;            /* changes since the last pii_key_changed line */
    int64_t pii_key_logged_us;           /* when that line was written (0: never) */
};

static void scorer_poll_batch(scorer *s);
static int scorer_finish_batch(scorer *s);
static void scorer_decode_batch(scorer *s);
static int scorer_persist_batch(scorer *s);
static void scorer_settle_conflicts(scorer *s);
static void scorer_log_shared_ids(scorer *s);
static store_rc scorer_persist_rows(scorer *s, store_row **rows, size_t n, char *err, size_t esz);
static store_rc scorer_persist_one_by_one(scorer *s, char *err, size_t esz);
static store_rc scorer_decide(scorer *s, store_row **rows, size_t n, char *err, size_t esz);
static int scorer_deliver_batch(scorer *s);
static bool scorer_producer_fatal(scorer *s, rd_kafka_t *rk);
static bool scorer_fatal_of(scorer *s, rd_kafka_t *rk, const char *event, const char *what);
static void scorer_commit_batch(scorer *s);
static void scorer_clear_batch(scorer *s);
static void scorer_consumer_event(scorer *s, rd_kafka_message_t *m);
static void scorer_report_loss(scorer *s, const char *topic, int32_t partition, int64_t from,
                               int64_t lo, int64_t hi, const char *why);
static void scorer_maybe_prune(scorer *s);
static void scorer_retention(scorer *s);
static void scorer_reload(scorer *s);
static void scorer_close(scorer *s);
/* Where scorer_commit_stored() is called from: REVOKE and CLOSE are this member's last chance to
 * commit for those partitions. */
typedef enum commit_at { COMMIT_LOOP, COMMIT_BATCH, COMMIT_REVOKE, COMMIT_CLOSE } commit_at;
static const char *const COMMIT_AT_NAMES[] = {"loop", "batch", "revoke", "close"};
static void scorer_commit_stored(scorer *s, rd_kafka_t *rk, commit_at where);

/* ---- helpers -------------------------------------------------------------------------------- */

/* {"topic":..,"partition":..,"offset":..} of a message, for log lines (new reference). */
static json_t *msg_ctx(const rd_kafka_message_t *m) {
    return json_pack("{s:s, s:i, s:I}", "topic", m->rkt ? rd_kafka_topic_name(m->rkt) : "",
                     "partition", (int)m->partition, "offset", (json_int_t)m->offset);
}

/* n dead letters delivered, in fs_scorer_dead_letters_total: by reason and by the topic their
 * messages were consumed from (undecodable and db_rejected are reasons of both topics). */
static void scorer_count_dead_letters(scorer *s, const char *reason, const char *topic, double n) {
    char labels[300];
    snprintf(labels, sizeof labels, "%s,%s", reason, topic);
    metric_add(s->m.dead_letters, labels, n);
}

/* Sleeps ms in short slices; returns -1 early when a stop was requested. */
static int scorer_sleep(scorer *s, int ms) {
    for (int slept = 0; slept < ms; slept += 50) {
        if (atomic_load(s->stop)) return -1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return atomic_load(s->stop) ? -1 : 0;
}

static int backoff_next(int ms) { return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2; }

/* The event time from which this worker needs complete windows: the progress of its slowest active
 * partition (prune.h prune_watermark: a backlog on one partition is not pruned away by live traffic
 * on another), capped at the wall clock (one payment dated in the future cannot make the pruner
 * delete what current payments still need; a replay of old history still prunes relative to its
 * own progress), minus the lateness. */
static int64_t scorer_needed_from(const scorer *s) {
    int64_t now = fs_now_ms();
    int64_t wm = prune_watermark(s->parts, s->nparts, now, s->cfg.watermark_liveness_ms,
                                 s->watermark_ms);
    return prune_needed_from(wm, now, s->cfg.velocity_lateness_ms);
}

/* While its published watermark is fresh, no other worker prunes what this one needs. Fresh: the
 * sync that published it started within half the liveness (the other half is a margin for the
 * clocks and for the next batch). Before its first sync and after its row aged out, every batch
 * reads the prune horizons after loading its features instead. */
static bool scorer_protected(const scorer *s) {
    return s->synced_us && fs_mono_us() - s->synced_us < s->cfg.watermark_liveness_ms * 500;
}

/* Payments older than this (by event time) may have windows that reach below rows already pruned
 * (by this worker, or by any worker: the shared horizons), so their features may be incomplete. */
static int64_t scorer_late_cutoff(const scorer *s) {
    int64_t reach[PRUNE_SETS];
    prune_reach(velocity_max_window_ms(s->rules), reach);
    return prune_late_before(scorer_needed_from(s), s->horizon_ms, reach);
}

/* ---- the loop ------------------------------------------------------------------------------- */

static void scorer_outcomes(scorer *s);
static void scorer_rate(scorer *s);
static void scorer_db_check(scorer *s);

int scorer_run(scorer *s, const atomic_bool *stop, atomic_bool *reload) {
    s->stop = stop;
    kafka_poll_clock_start(s->cfg.polled);
    if (s->cfg.consuming) atomic_store(s->cfg.consuming, 1);
    while (!atomic_load(stop) && !s->abandoned && !s->fatal) {
        /* read and cleared in one step: a SIGHUP in between is not lost */
        if (atomic_exchange(reload, false)) scorer_reload(s);
        if (s->commit_attempts && fs_mono_us() >= s->commit_retry_us)
            scorer_commit_stored(s, s->consumer, COMMIT_LOOP);
        s->turn_batch_us = 0;
        s->turn_full = false;
        scorer_poll_batch(s);
        if (s->nitems > 0) scorer_finish_batch(s); /* also when stopping: finish what we hold */
        scorer_maybe_prune(s);
        scorer_retention(s);
        scorer_outcomes(s);
        scorer_rate(s);
        scorer_db_check(s);
    }
    if (s->cfg.consuming) atomic_store(s->cfg.consuming, 0);
    scorer_close(s);
    return s->fatal ? -1 : 0;
}

/* Round trips abandoned at the deadline since the last call, into fs_scorer_db_timeouts_total. */
static void scorer_count_timeouts(scorer *s) {
    uint64_t t = store_timeouts(s->st);
    metric_add(s->m.db_timeouts, NULL, (double)(t - s->db_timeouts_seen));
    s->db_timeouts_seen = t;
}

/* Between batches, a worker that has not talked to PostgreSQL for DB_PING_MS asks it something
 * (reconnecting first when a failure dropped the connection): a server that stopped answering
 * while the stream was quiet shows in /ready (store_db_stuck) before a batch needs it, and the
 * connection is made again ahead of the next batch. Each call is bounded by db-timeout-ms. */
static void scorer_db_check(scorer *s) {
    char err[512];
    scorer_count_timeouts(s); /* also those of outcomes, prunes and syncs */
    if (atomic_load(s->stop) || store_idle_ms(s->st) < DB_PING_MS) return;
    bool was_connected = store_connected(s->st);
    if (store_connect(s->st, err, sizeof err) != 0 || store_ping(s->st, err, sizeof err) != STORE_OK)
        log_fields(LOG_WARN, "db_check_failed", json_pack("{s:s}", "error", err),
                   "PostgreSQL does not answer between batches (checked again in %d ms)", DB_PING_MS);
    else if (!was_connected)
        log_msg(LOG_INFO, "db_reconnected", "PostgreSQL answers again");
}

/* messages/s over the last 10 s (a convenience gauge; rate() over the counter is the same). */
static void scorer_rate(scorer *s) {
    int64_t now = fs_mono_us();
    if (!s->rate_t0_us) s->rate_t0_us = now;
    if (now - s->rate_t0_us < 10000000) return;
    metric_set(s->m.rate, NULL, (double)(s->stats.messages - s->rate_n0) * 1e6 / (double)(now - s->rate_t0_us));
    s->rate_t0_us = now;
    s->rate_n0 = s->stats.messages;
}

/* The pii_key_id header of a raw_payments message: the id of the key ingest made its digests with
 * (pii.h). When it changes, digests of the same email, IP, card or device change with it and the
 * features keyed by them stop matching their history: logged (warn; at most once a minute, with
 * the number of changes since the last line: more than one means instances with different keys),
 * and exported as fs_scorer_pii_key_info. Messages without it (older ingest, re-driven by hand)
 * change nothing. */
static void scorer_pii_key(scorer *s, rd_kafka_message_t *m) {
    rd_kafka_headers_t *h = NULL;
    const void *val = NULL;
    size_t size = 0;
    char id[PII_KEY_ID_HEX + 1];
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, "pii_key_id", &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !val || size != PII_KEY_ID_HEX)
        return;
    memcpy(id, val, size);
    id[size] = '\0';
    if (strspn(id, "0123456789abcdef") != PII_KEY_ID_HEX || strcmp(id, s->pii_key_id) == 0) return;
    int64_t now = fs_mono_us();
    if (!s->pii_key_id[0])
        log_fields(LOG_INFO, "pii_key_seen", json_pack("{s:s}", "pii_key_id", id),
                   "payments pseudonymized with key %s", id);
    else
        s->pii_key_changes++;
    if (s->pii_key_changes > 0 &&
        (s->pii_key_logged_us == 0 || now - s->pii_key_logged_us >= PII_KEY_LOG_US)) {
        log_fields(LOG_WARN, "pii_key_changed",
                   json_pack("{s:s, s:s, s:I}", "old_pii_key_id", s->pii_key_id,
                             "new_pii_key_id", id, "changes", (json_int_t)s->pii_key_changes),
                   "payments pseudonymized with key %s after %s: identifier features restart", id,
                   s->pii_key_id);
        s->pii_key_changes = 0;
        s->pii_key_logged_us = now;
    }
    metric_info_swap(s->m.pii_key_info, s->pii_key_id[0] ? s->pii_key_id : NULL, id);
    memcpy(s->pii_key_id, id, sizeof id);
}

/* Whether this worker has consumed everything its partitions held at their last fetch (each
 * position at or past librdkafka's cached high watermark: no broker round trip). Only then may the
 * linger close a batch early: messages still at the brokers (a backlog the fetches have not brought
 * in yet) must make batches larger, not more frequent. */
static bool scorer_caught_up(scorer *s) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    bool caught_up = true;
    if (rd_kafka_assignment(s->consumer, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR) return true;
    rd_kafka_position(s->consumer, parts);
    for (int i = 0; caught_up && i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t lo, hi;
        if (p->offset < 0 || rd_kafka_get_watermark_offsets(s->consumer, p->topic, p->partition,
                                                            &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR)
            continue; /* nothing consumed or fetched yet: no evidence of a backlog */
        caught_up = hi < 0 || p->offset >= hi;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return caught_up;
}

/* Polls until batch_max messages, or batch_max_ms after the first one, or batch_linger_ms without
 * a new one while caught up (scorer_caught_up), or 100 ms of nothing (back to the loop for reloads
 * and pruning). The linger is what keeps latency low under light load (a lone payment does not
 * wait batch_max_ms for company); under load batches still fill: what arrives while one batch is
 * persisted is queued by librdkafka and taken at once, and what is still at the brokers is waited
 * for. The revoke callback may finish the batch meanwhile. */
static void scorer_poll_batch(scorer *s) {
    int64_t deadline_us = 0, last_us = 0, linger_us = (int64_t)s->cfg.batch_linger_ms * 1000;
    bool lingering = true; /* false: behind, the batch waits for the deadline or the next message */
    while (s->nitems < (size_t)s->cfg.batch_max && !atomic_load(s->stop) && !s->abandoned &&
           !s->fatal) {
        int timeout_ms = 100;
        if (s->nitems > 0) {
            int64_t now = fs_mono_us(), end = lingering ? last_us + linger_us : deadline_us;
            if (now >= deadline_us) break;
            if (end > deadline_us) end = deadline_us;
            timeout_ms = end > now ? (int)((end - now + 999) / 1000) : 0; /* 0: what is queued */
        }
        rd_kafka_message_t *m = kafka_consumer_poll(s->consumer, timeout_ms, s->cfg.polled);
        if (!m) {
            if (s->nitems == 0) break;
            /* a poll can also return early, having served a callback: the quiet time decides */
            if (lingering && fs_mono_us() - last_us >= linger_us) {
                if (scorer_caught_up(s)) break;
                lingering = false;
            }
            continue;
        }
        if (m->err) {
            scorer_consumer_event(s, m);
            rd_kafka_message_destroy(m);
            continue;
        }
        last_us = fs_mono_us();
        lingering = true;
        if (s->nitems == 0) deadline_us = last_us + (int64_t)s->cfg.batch_max_ms * 1000;
        s->items[s->nitems++] = (scorer_item){.msg = m, .row = -1}; /* the batch owns m now */
        s->stats.messages++;
        metric_add(s->m.messages, NULL, 1);
        scorer_pii_key(s, m);
    }
}

/* A payment persisted (committed) with labels stored before it: they are applied at the next
 * outcome turn (scorer_outcomes). More than LABELLED_MAX waiting (outcome failures): the others are
 * left to the next re-try round, brought forward. */
static void scorer_labelled(scorer *s, const char *payment_id) {
    if (!s->outcomes) return; /* labels not consumed here: another worker's rounds apply them */
    if (s->nlabelled == LABELLED_MAX) {
        pending_kick(s->pend, fs_mono_us());
        return;
    }
    memcpy(s->labelled[s->nlabelled++], payment_id, FS_UUID_STRLEN + 1);
}

/* Counters and the event-time watermark, once the batch is committed. A payment stored by an
 * earlier attempt of this batch whose COMMIT went through unanswered counts as new: this worker
 * decided it. */
static void scorer_account_row(scorer *s, const scorer_row *r, int64_t now_ms) {
    prune_part_seen(s->parts, &s->nparts, SCORER_MAX_PARTS, r->sr.partition, r->p.event_time_ms, now_ms);
    bool ours = r->sr.is_new ||
                (r->tried_decided_ms && r->tried_decided_ms == r->sr.dec.decided_at_ms);
    if (!ours) {
        s->stats.payments_redelivered++;
        metric_add(s->m.payments, "redelivered", 1);
        return;
    }
    s->stats.payments_new++;
    metric_add(s->m.payments, "new", 1);
    if (r->sr.labels_pending) scorer_labelled(s, r->p.payment_id);
    if (r->p.ingest_time_ms > 0)
        metric_observe(s->m.e2e_seconds, NULL, (double)(now_ms - r->p.ingest_time_ms) / 1e3);
    metric_add(s->m.decisions, r->sr.dec.decision, 1);
    for (size_t k = 0; k < json_array_size(r->sr.dec.reasons); k++)
        metric_add(s->m.rule_hits,
                   json_string_value(json_object_get(json_array_get(r->sr.dec.reasons, k), "code")), 1);
    if (r->p.event_time_ms > s->watermark_ms) s->watermark_ms = r->p.event_time_ms;
    if (r->out_of_order) {
        s->stats.out_of_order++;
        metric_add(s->m.late, "out_of_order", 1);
    }
    if (!r->late) return;
    s->stats.late_events++;
    metric_add(s->m.late, "too_late", 1);
    log_fields(LOG_DEBUG, "late_event", json_pack("{s:s}", "payment_id", r->p.payment_id),
               "event time older than the features' retention: windows may be incomplete");
}

static void scorer_account_batch(scorer *s, int64_t t0_us) {
    int64_t now_ms = fs_now_ms(); /* wall clock: ingest_ts is another process's wall clock */
    for (size_t i = 0; i < s->nrows; i++)
        if (!s->rows[i].rejected) scorer_account_row(s, &s->rows[i], now_ms);
    s->stats.batches++;
    metric_observe(s->m.batch_size, NULL, (double)s->nitems);
    metric_observe(s->m.batch_seconds, NULL, (double)(fs_mono_us() - t0_us) / 1e6);
}

/* Where a finished batch's time went (decode, persist, deliver, commit: t0..t3 start them), so that
 * an SRE sees whether PostgreSQL or the brokers' acknowledgements make batches slow. */
static void scorer_observe_phases(scorer *s, int64_t t0, int64_t t1, int64_t t2, int64_t t3) {
    metric_observe(s->m.batch_phase, "decode", (double)(t1 - t0) / 1e6);
    metric_observe(s->m.batch_phase, "persist", (double)(t2 - t1) / 1e6);
    metric_observe(s->m.batch_phase, "deliver", (double)(t3 - t2) / 1e6);
    metric_observe(s->m.batch_phase, "commit", (double)(fs_mono_us() - t3) / 1e6);
}

/* decode -> persist (-> settle conflicts) -> deliver -> commit. Returns 0, or -1 when the batch was abandoned (stopping
 * while PostgreSQL or the brokers are unreachable): nothing of it was committed, and this worker
 * consumes no further (its position is past messages that are not persisted). */
static int scorer_finish_batch(scorer *s) {
    int64_t t0 = fs_mono_us();
    int rc = -1;
    assert(!s->in_batch);
    s->in_batch = true;
    scorer_decode_batch(s);
    int64_t t1 = fs_mono_us();
    if (scorer_persist_batch(s) != 0) goto done;
    scorer_settle_conflicts(s);
    scorer_log_shared_ids(s);
    int64_t t2 = fs_mono_us();
    if (scorer_deliver_batch(s) != 0) goto done;
    int64_t t3 = fs_mono_us();
    scorer_commit_batch(s);
    scorer_observe_phases(s, t0, t1, t2, t3);
    scorer_account_batch(s, t0);
    s->turn_batch_us = fs_mono_us() - t0;
    s->turn_full = s->nitems >= (size_t)s->cfg.batch_max;
    s->batches_since_prune++;
    s->batches_since_sync++;
    log_fields(LOG_DEBUG, "batch_done",
               json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "messages", (json_int_t)s->nitems,
                         "payments", (json_int_t)s->nrows, "duration_us",
                         (json_int_t)(fs_mono_us() - t0), "decode_us", (json_int_t)(t1 - t0),
                         "persist_us", (json_int_t)(t2 - t1), "deliver_us", (json_int_t)(t3 - t2),
                         "commit_us", (json_int_t)(fs_mono_us() - t3)),
               "batch of %zu messages done", s->nitems);
    rc = 0;
done:
    if (rc != 0) {
        s->abandoned = true;
        log_fields(LOG_WARN, "batch_abandoned", json_pack("{s:I}", "messages", (json_int_t)s->nitems),
                   "stopping with a batch that could not be finished: not committed, it will be "
                   "consumed again");
    }
    scorer_clear_batch(s);
    s->in_batch = false;
    return rc;
}

/* ---- 1. decode: every message becomes a payment or a dead letter ---------------------------- */

static void scorer_dead_letter(scorer_item *it, const char *reason, const char *error) {
    it->kind = ITEM_DEAD;
    it->dlq_reason = reason;
    snprintf(it->dlq_error, sizeof it->dlq_error, "%s", error);
    it->out_dlq = OUT_PENDING;
    json_t *f = msg_ctx(it->msg);
    json_object_set_new(f, "reason", json_string(reason));
    json_object_set_new(f, "error", json_string(it->dlq_error));
    log_fields(LOG_WARN, "dead_letter", f, "message dead-lettered: %s", reason);
}

/* A payment_id that came from two clients (payments.source): first_source's payment stands, what
 * says what became of source's message. Both clients are named: taking another client's ids first
 * is how one client could keep the other's payments from being scored (docs/ingest.md, "Ids are
 * not secrets"). */
static void scorer_log_sources(const scorer_item *it, log_level level, const char *event,
                               const char *payment_id, const char *source, const char *first_source,
                               const char *what) {
    json_t *f = msg_ctx(it->msg);
    json_object_set_new(f, "payment_id", json_string(payment_id));
    json_object_set_new(f, "source", json_string(source));
    json_object_set_new(f, "first_source", json_string(first_source));
    log_fields(level, event, f, "payment_id %s came from %s after %s had used it: %s", payment_id,
               source, first_source, what);
}

/* The same payment (who, where, how much) from two clients: taken as a redelivery, as a client
 * resending with its own payment_id under a new API key needs; said as a warning, since it is also
 * what a client replaying another's payment under its id looks like. */
static void scorer_log_shared(const scorer_item *it, const char *payment_id, const char *source,
                              const char *first_source) {
    scorer_log_sources(it, LOG_WARN, "payment_id_shared", payment_id, source, first_source,
                       "the same payment, taken as its redelivery (a resend under a new API key "
                       "explains it; otherwise see docs/ingest.md, \"Ids are not secrets\")");
}

/* Another payment under a payment_id another client used: dead-lettered (payment_conflict) like
 * any conflict, never scored, and said as an error. */
static void scorer_log_collision(const scorer_item *it, const char *payment_id, const char *source,
                                 const char *first_source) {
    scorer_log_sources(it, LOG_ERROR, "payment_id_collision", payment_id, source, first_source,
                       "dead-lettered, not scored");
}

/* The client of the payment that stands under row r's payment_id: the stored one, else the
 * batch's first message (stored now). */
static const char *scorer_standing_source(const scorer_row *r) {
    return !r->sr.is_new && r->sr.has_decision ? r->sr.stored_source : r->p.source;
}

/* Message it, a copy under a payment_id whose payment standing's client posted: said when another
 * client sent it, as a collision (dead-lettered) or as a shared id (taken as the redelivery). It
 * decoded before, so it decodes again to read its source: copies are rare (producer retries). */
static void scorer_log_copy_source(const scorer_item *it, const char *standing, bool collision) {
    pay_payment q = {0};
    char err[256];
    if (standing[0] && pay_event_decode(it->msg->payload, it->msg->len, &q, err, sizeof err) == 0 &&
        q.source[0] && strcmp(q.source, standing) != 0)
        (collision ? scorer_log_collision : scorer_log_shared)(it, q.payment_id, q.source, standing);
    pay_payment_clear(&q);
}

/* The earlier row with the same payment_id, or -1; else remembers row. */
static int scorer_dedup(scorer *s, int row) {
    const char *id = s->rows[row].p.payment_id;
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = id; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    for (size_t i = (size_t)h & (s->ndedup - 1);; i = (i + 1) & (s->ndedup - 1)) {
        if (s->dedup[i] == 0) {
            s->dedup[i] = row + 1;
            return -1;
        }
        if (strcmp(s->rows[s->dedup[i] - 1].p.payment_id, id) == 0) return s->dedup[i] - 1;
    }
}

static void scorer_decode_batch(scorer *s) {
    char err[256];
    memset(s->dedup, 0, s->ndedup * sizeof *s->dedup);
    for (size_t i = 0; i < s->nitems; i++) {
        scorer_item *it = &s->items[i];
        scorer_row *r = &s->rows[s->nrows];
        int rc = pay_event_decode(it->msg->payload, it->msg->len, &r->p, err, sizeof err);
        if (rc != 0) {
            pay_payment_clear(&r->p);
            /* pay_event_decode says "not JSON" when the bytes do not even parse; raw personal
             * data is dead-lettered without its value (scorer_produce_dlq) */
            scorer_dead_letter(it, rc == PAY_EVENT_RAW_PII       ? "raw_personal_data"
                                   : strstr(err, "not JSON") ? "undecodable"
                                                             : "invalid_payment",
                               err);
            continue;
        }
        int first = scorer_dedup(s, (int)s->nrows);
        const pay_payment *fp = first >= 0 ? &s->rows[first].p : NULL;
        const char *what = fp ? pay_conflict(&r->p, fp->user_id, fp->merchant_id, fp->amount_minor,
                                             fp->currency) : NULL;
        if (what) { /* another payment under the same payment_id: the first one stands, unless
                     * the stored payment says otherwise (scorer_settle_conflicts) */
            snprintf(it->dlq_error, sizeof it->dlq_error, "payment %s came earlier in the batch "
                     "with another %s: a different payment under a payment_id already used",
                     fp->payment_id, what);
            pay_payment_clear(&r->p);
            it->kind = ITEM_CONFLICT;
            it->row = first;
            continue;
        }
        if (first >= 0) { /* same payment twice in one batch (a producer retry): one row */
            pay_payment_clear(&r->p);
            it->kind = ITEM_DUPLICATE;
            it->row = first;
            continue;
        }
        r->sr = (store_row){.p = &r->p, .partition = it->msg->partition, .offset = it->msg->offset};
        r->item = (int)i;
        it->kind = ITEM_VALID;
        it->row = (int)s->nrows++;
    }
}

/* ---- 2. persist: one transaction; retry while PostgreSQL is away ----------------------------- */

/* Rows still to persist (not rejected) into s->todo. */
static size_t scorer_live_rows(scorer *s) {
    size_t n = 0;
    for (size_t i = 0; i < s->nrows; i++)
        if (!s->rows[i].rejected) s->todo[n++] = &s->rows[i].sr;
    return n;
}

/* The scorer_row a store_row belongs to (store_row is embedded as scorer_row.sr). */
static scorer_row *row_of(store_row *sr) {
    return (scorer_row *)(void *)((char *)sr - offsetof(scorer_row, sr));
}

/* Row i and every message of the batch that carried it go to the dead-letter topic. */
/* The messages that carried row i (its first one and its copies) go to the DLQ. */
static void scorer_dead_letter_row(scorer *s, size_t i, const char *reason, const char *err) {
    for (size_t j = 0; j < s->nitems; j++)
        if ((s->items[j].kind == ITEM_VALID || s->items[j].kind == ITEM_DUPLICATE) &&
            s->items[j].row == (int)i)
            scorer_dead_letter(&s->items[j], reason, err);
}

static void scorer_reject_row(scorer *s, size_t i, const char *reason, const char *err) {
    s->rows[i].rejected = true;
    scorer_dead_letter_row(s, i, reason, err);
}

/* Payments ingested longer ago than payment-retention-days: retention may have deleted them since
 * (expire.h), and such a message consumed again (an offset reset, a new group, a topic that keeps
 * messages longer than the payments are kept) would be stored as a new payment: decided, alerted
 * and counted in the features a second time. In the batch's transaction, those that payments does
 * not hold are dead-lettered ("expired": deleted, or never processed within the retention; the two
 * cannot be told apart, and neither should be scored now) and dropped from rows (*n shrinks);
 * those it holds stay locked until the commit, so retention cannot delete them meanwhile, and are
 * redeliveries as usual. The cutoff is a day later than retention's: ingest_time is ingest's clock,
 * decided_at a scorer's. A batch without such a payment costs no round trip. */
static store_rc scorer_reject_expired(scorer *s, store_row **rows, size_t *n, char *err,
                                      size_t esz) {
    if (s->cfg.retention_days == 0) return STORE_OK;
    int64_t cutoff =
        fs_now_ms() - (int64_t)s->cfg.retention_days * 86400000 + EXPIRE_CLOCK_MARGIN_MS;
    size_t nold = 0, kept = 0;
    for (size_t i = 0; i < *n; i++)
        if (rows[i]->p->ingest_time_ms < cutoff) s->old[nold++] = rows[i];
    if (nold == 0) return STORE_OK;
    store_rc rc = store_lock_payments(s->st, s->old, nold, err, esz);
    if (rc != STORE_OK) return rc;
    for (size_t i = 0; i < *n; i++) {
        if (!rows[i]->gone) {
            rows[kept++] = rows[i];
            continue;
        }
        scorer_reject_row(s, (size_t)(row_of(rows[i]) - s->rows), "expired",
                          "ingested longer ago than payment-retention-days and not in PostgreSQL: "
                          "deleted by retention, or never processed in time; storing it now would "
                          "count it as a new payment");
    }
    *n = kept;
    return STORE_OK;
}

/* Transient failures (connection lost, server restarting, deadlock) retry the same batch forever
 * with backoff: nothing is committed meanwhile, so nothing is lost, and nothing goes to the DLQ.
 * (The consumer is not polled while we wait: an outage longer than max.poll.interval.ms costs us
 * the assignment, which is still safe: the batch was not committed and the new owner redoes it.)
 * Other failures (a bug, or data PostgreSQL refuses) get PERSIST_ATTEMPTS tries, then the batch
 * is persisted row by row and only the rows that still fail are dead-lettered. */
static int scorer_persist_batch(scorer *s) {
    char err[512];
    int failures = 0, backoff = BACKOFF_MIN_MS;
    bool last_try = false;
    for (int attempt = 1;; attempt++) {
        size_t n = scorer_live_rows(s);
        store_rc rc = n ? scorer_persist_rows(s, s->todo, n, err, sizeof err) : STORE_OK;
        if (rc == STORE_FAILED && ++failures >= PERSIST_ATTEMPTS)
            rc = scorer_persist_one_by_one(s, err, sizeof err);
        if (rc == STORE_OK) return 0;
        s->stats.db_retries++;
        metric_add(s->m.db_retries, NULL, 1);
        scorer_count_timeouts(s);
        log_fields(LOG_WARN, "db_retry",
                   json_pack("{s:i, s:i, s:b, s:s}", "attempt", attempt, "backoff_ms", backoff,
                             "transient", rc == STORE_TRANSIENT, "error", err),
                   "persisting the batch failed; retrying");
        if (last_try) return -1; /* stopping and PostgreSQL is still unreachable: abandon */
        if (atomic_load(s->stop)) last_try = true; /* one more attempt right away, then give up */
        else if (scorer_sleep(s, backoff) != 0) last_try = true;
        backoff = backoff_next(backoff);
        if (store_connect(s->st, err, sizeof err) != 0)
            log_fields(LOG_WARN, "db_reconnect_failed", json_pack("{s:s}", "error", err),
                       "cannot reconnect to PostgreSQL yet");
    }
}

/* A redelivered payment's outputs carry its stored times and country (the decision is the
 * stored one already). */
static void scorer_row_stored(scorer_row *r) {
    r->p.event_time_ms = r->sr.stored_event_time_ms;
    r->p.ingest_time_ms = r->sr.stored_ingest_time_ms;
    memcpy(r->p.country, r->sr.stored_country, sizeof r->p.country);
}

/* After the batch's transaction, for its redelivered payments. One whose message conflicts with
 * the stored payment (another payment under a payment_id already used) is left to
 * scorer_settle_conflicts. */
static void scorer_apply_stored(store_row **rows, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!rows[i]->is_new && rows[i]->has_decision && !rows[i]->conflict[0])
            scorer_row_stored(row_of(rows[i]));
}

/* Row i conflicts with its stored payment and is about to be dead-lettered: its message, and each
 * copy of it in the batch, from another client than the stored payment's is a collision. */
static void scorer_log_row_collisions(scorer *s, size_t i) {
    const scorer_row *r = &s->rows[i];
    if (store_row_foreign(&r->sr, &r->p))
        scorer_log_collision(&s->items[r->item], r->p.payment_id, r->p.source, r->sr.stored_source);
    for (size_t j = 0; j < s->nitems; j++)
        if (s->items[j].kind == ITEM_DUPLICATE && s->items[j].row == (int)i)
            scorer_log_copy_source(&s->items[j], r->sr.stored_source, true);
}

/* Row i's first message differs from its stored payment: a later message of the batch under the
 * same payment_id (ITEM_CONFLICT) that is the stored payment, i.e. its true redelivery, becomes
 * the row's message, so that its outputs are produced again; the first message and its copies
 * go to the DLQ. Returns whether there was one. Nothing of row i was written: the transaction
 * inserts nothing for a payment_id stored before. */
static bool scorer_adopt_redelivery(scorer *s, size_t i) {
    scorer_row *r = &s->rows[i];
    char err[256];
    pay_payment p;
    size_t j;
    for (j = 0; j < s->nitems; j++) {
        scorer_item *it = &s->items[j];
        if (it->kind != ITEM_CONFLICT || it->row != (int)i) continue;
        if (pay_event_decode(it->msg->payload, it->msg->len, &p, err, sizeof err) != 0) continue;
        if (!store_row_conflict(&r->sr, &p)) break;
        pay_payment_clear(&p);
    }
    if (j == s->nitems) return false;
    scorer_log_row_collisions(s, i);
    scorer_dead_letter_row(s, i, "payment_conflict", r->sr.conflict);
    pay_payment_clear(&r->p);
    r->p = p; /* r->sr.p points at r->p */
    r->item = (int)j;
    r->sr.partition = s->items[j].msg->partition; /* where the row's message is now */
    r->sr.offset = s->items[j].msg->offset;
    s->items[j].kind = ITEM_VALID;
    for (size_t k = j + 1; k < s->nitems; k++) { /* the redelivery's own copies */
        pay_payment q;
        if (s->items[k].kind != ITEM_CONFLICT || s->items[k].row != (int)i ||
            pay_event_decode(s->items[k].msg->payload, s->items[k].msg->len, &q, err, sizeof err) != 0)
            continue;
        if (!store_row_conflict(&r->sr, &q)) s->items[k].kind = ITEM_DUPLICATE;
        pay_payment_clear(&q);
    }
    r->sr.conflict[0] = '\0';
    scorer_row_stored(r);
    return true;
}

/* After the batch's transaction: messages under one payment_id that disagree in who, where or how
 * much. The payment stored before decides which one is its redelivery; without one, the batch's
 * first message stood (and was stored now). Every other one goes to the DLQ (payment_conflict). */
static void scorer_settle_conflicts(scorer *s) {
    for (size_t i = 0; i < s->nrows; i++) {
        scorer_row *r = &s->rows[i];
        if (!r->rejected && !r->sr.is_new && r->sr.has_decision && r->sr.conflict[0] &&
            !scorer_adopt_redelivery(s, i)) {
            scorer_log_row_collisions(s, i);
            scorer_reject_row(s, i, "payment_conflict", r->sr.conflict);
        }
    }
    for (size_t j = 0; j < s->nitems; j++) {
        if (s->items[j].kind != ITEM_CONFLICT) continue;
        scorer_log_copy_source(&s->items[j], scorer_standing_source(&s->rows[s->items[j].row]), true);
        char why[sizeof s->items[j].dlq_error];
        memcpy(why, s->items[j].dlq_error, sizeof why);
        scorer_dead_letter(&s->items[j], "payment_conflict", why);
    }
}

/* Once the batch is settled (after the transaction's retries, so once per batch): each message
 * taken as a payment that stands (the row's own, a redelivery adopted by the settling, their
 * copies in the batch) from another client than that payment's is said (payment_id_shared). */
static void scorer_log_shared_ids(scorer *s) {
    for (size_t j = 0; j < s->nitems; j++) {
        scorer_item *it = &s->items[j];
        if (it->kind != ITEM_VALID && it->kind != ITEM_DUPLICATE) continue;
        const scorer_row *r = &s->rows[it->row];
        const char *standing = scorer_standing_source(r);
        if (r->rejected) continue;
        if (it->kind == ITEM_DUPLICATE) scorer_log_copy_source(it, standing, false);
        else if (standing[0] && r->p.source[0] && strcmp(r->p.source, standing) != 0)
            scorer_log_shared(it, r->p.payment_id, r->p.source, standing);
    }
}

/* The batch's transaction. rows' decisions are (re)made from scratch on every attempt. */
static store_rc scorer_persist_rows(scorer *s, store_row **rows, size_t n, char *err, size_t esz) {
    for (size_t i = 0; i < n; i++) {
        store_decision_clear(&rows[i]->dec);
        rows[i]->has_decision = false;
        rows[i]->alert_id[0] = '\0';
        rows[i]->conflict[0] = '\0';
    }
    int64_t t0 = fs_mono_us();
    uint64_t calls0, us0, calls1, us1;
    store_latency(s->st, &calls0, &us0);
    store_rc rc = store_begin(s->st, err, esz);
    if (rc == STORE_OK) rc = scorer_reject_expired(s, rows, &n, err, esz);
    if (rc == STORE_OK && n) rc = store_insert_payments(s->st, rows, n, err, esz);
    if (rc == STORE_OK && n) rc = store_load_decisions(s->st, rows, n, err, esz);
    if (rc == STORE_OK && n) rc = scorer_decide(s, rows, n, err, esz);
    for (size_t i = 0; rc == STORE_OK && i < n; i++)
        if (rows[i]->is_new && rows[i]->has_decision)
            row_of(rows[i])->tried_decided_ms = rows[i]->dec.decided_at_ms;
    if (rc == STORE_OK) rc = store_commit_named(s->st, "batch", err, esz);
    if (rc == STORE_OK) scorer_apply_stored(rows, n);
    if (rc != STORE_OK) store_rollback(s->st);
    store_latency(s->st, &calls1, &us1);
    metric_observe(s->m.db_seconds, "transaction", (double)(fs_mono_us() - t0) / 1e6);
    metric_observe(s->m.db_seconds, "statements", (double)(us1 - us0) / 1e6);
    metric_add(s->m.db_calls, NULL, (double)(calls1 - calls0));
    return rc;
}

/* Each live row in its own transaction; a row PostgreSQL still refuses is dead-lettered
 * ("db_rejected"), with every message of the batch that carried it. */
static store_rc scorer_persist_one_by_one(scorer *s, char *err, size_t esz) {
    for (size_t i = 0; i < s->nrows; i++) {
        scorer_row *r = &s->rows[i];
        store_row *one = &r->sr;
        if (r->rejected) continue;
        store_rc rc = scorer_persist_rows(s, &one, 1, err, esz);
        if (rc == STORE_TRANSIENT) return rc; /* back to the batch retry loop */
        if (rc == STORE_OK) continue;
        s->stats.db_rejected++;
        scorer_reject_row(s, i, "db_rejected", err);
    }
    return STORE_OK;
}

/* ---- the decision ----------------------------------------------------------------------------- */

/* Decides one payment from its features (the model's score in them when it scored the batch):
 * rules and blend, reasons, evidence, versions; alert id when flagged. model_us: its share of the
 * batch's prediction, counted in its scoring latency with its features. */
static void scorer_decide_row(scorer *s, scorer_row *r, const rules_features *f, int64_t model_us) {
    int64_t t0 = fs_mono_us();
    rules_result res;
    rules_eval(s->rules, f, &res);
    store_decision *d = &r->sr.dec;
    snprintf(d->decision, sizeof d->decision, "%s", res.decision);
    d->score = res.score;
    d->reasons = rules_reasons_json(&res);
    d->features_text = rules_features_text(s->rules, f, NULL); /* model_score included */
    snprintf(d->rules_version, sizeof d->rules_version, "%s", rules_version(s->rules));
    snprintf(d->model_version, sizeof d->model_version, "%s",
             f->has_model ? model_version(s->model) : ""); /* "": NULL in decisions */
    d->decided_at_ms = fs_now_ms();
    d->scoring_latency_us = r->features_us + model_us + (fs_mono_us() - t0);
    r->sr.has_decision = true;
    if (strcmp(d->decision, "allow") != 0) store_alert_id(r->p.payment_id, r->sr.alert_id);
}

/* (a) The features of every row to decide, from the batch's feature state, into s->feat. */
static void scorer_features(scorer *s, store_row **todo, size_t n) {
    for (size_t i = 0; i < n; i++) {
        scorer_row *r = row_of(todo[i]);
        int64_t t0 = fs_mono_us();
        fvec_compute(s->vel, s->bk, s->vt, s->rules, &r->p, &s->feat[i]);
        r->features_us = fs_mono_us() - t0;
    }
}

/* Room for the model's input matrix of the batch. */
static int scorer_grow_rows(scorer *s, size_t need) {
    if (need <= s->xcap) return 0;
    float *x = realloc(s->xrows, need * sizeof *x);
    if (!x) return -1;
    s->xrows = x;
    s->xcap = need;
    return 0;
}

static void scorer_predict_failed(scorer *s, size_t n, const char *err) {
    s->stats.model_failures++;
    metric_add(s->m.model_failures, NULL, 1);
    log_fields(LOG_ERROR, "model_predict_failed",
               json_pack("{s:s, s:s, s:I}", "model", model_version(s->model), "error", err,
                         "payments", (json_int_t)n),
               "the model could not score the batch: it is decided by the rules alone");
}

/* (b, c) One row per payment in the model's column order, straight from its features, then ONE
 * prediction for the whole batch (a call costs far more than a row), whose probabilities go into
 * the features. Without a model nothing changes; when the prediction fails (logged, counted) the
 * batch is decided by the rules alone and recorded without a model version. Returns the
 * prediction time per payment (us). */
static int64_t scorer_predict(scorer *s, size_t n) {
    char err[256] = "out of memory";
    if (!s->model || n == 0) return 0;
    size_t nc = modelrow_ncols(s->mrow);
    int64_t t0 = fs_mono_us();
    if (scorer_grow_rows(s, n * nc) != 0) goto failed;
    for (size_t i = 0; i < n; i++) modelrow_fill(s->mrow, &s->feat[i], s->xrows + i * nc);
    if (model_predict(s->model, s->xrows, n, nc, s->xout, err, sizeof err) != 0) goto failed;
    for (size_t i = 0; i < n; i++) {
        if (s->xout[i] >= 0 && s->xout[i] <= 1) continue; /* NAN included: never blended */
        snprintf(err, sizeof err, "probability %g out of [0, 1]", (double)s->xout[i]);
        goto failed;
    }
    for (size_t i = 0; i < n; i++) {
        s->feat[i].has_model = true;
        s->feat[i].model_score = s->xout[i];
    }
    int64_t us = fs_mono_us() - t0;
    metric_observe(s->m.model_seconds, NULL, (double)us / 1e6);
    return us / (int64_t)n;
failed:
    scorer_predict_failed(s, n, err);
    return 0;
}

/* Earliest event time of the payments, for the merchant links' horizon. */
static int64_t scorer_min_time(const pay_payment *const *ps, size_t n) {
    int64_t t = INT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (ps[i]->event_time_ms < t) t = ps[i]->event_time_ms;
    return t;
}

/* ONE query for everything the batch's features read (exact events, buckets, vault, links). */
static store_rc scorer_load_state(scorer *s, size_t n, char *err, size_t esz) {
    store_feature_query q = {0};
    velocity_range *vr = velocity_ranges(s->rules, s->ps, n, &q.nvr);
    buckets_range *br = buckets_ranges(s->rules, s->ps, n, &q.nbr);
    vault_key *vk = vault_keys(s->ps, n, rules_risk_count(s->rules) > 0, &q.nvk);
    store_rc rc = STORE_OK;
    if (q.nvr == SIZE_MAX || q.nbr == SIZE_MAX || q.nvk == SIZE_MAX) {
        snprintf(err, esz, "feature ranges: out of memory");
        rc = STORE_FAILED;
    } else if (q.nvr || q.nbr || q.nvk) {
        q.vr = vr;
        q.br = br;
        q.vk = vk;
        q.merchant_since_ms = scorer_min_time(s->ps, n) - rules_risk_span_ms(s->rules) - BUCKETS_DAY_MS;
        rc = store_load_features(s->st, &q, s->vel, s->bk, s->vt, err, esz);
    }
    free(vr);
    free(br);
    free(vk);
    return rc;
}

/* The batch's feature state: what PostgreSQL holds plus the batch's new payments (only those this
 * transaction inserted: a redelivered payment never counts twice), whose velocity events are also
 * queued in s->vevents for insertion. */
static store_rc scorer_feature_state(scorer *s, store_row **todo, size_t n, size_t *nev,
                                     char *err, size_t esz) {
    *nev = 0;
    for (size_t i = 0; i < n; i++) s->ps[i] = todo[i]->p;
    velocity_reset(s->vel);
    buckets_reset(s->bk);
    vault_reset(s->vt);
    store_rc rc = scorer_load_state(s, n, err, esz);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        scorer_row *r = row_of(todo[i]);
        if (!todo[i]->is_new) continue;
        r->nvev = velocity_events_of(s->rules, &r->p, r->vev, r->vkeys, r->vcps);
        for (size_t k = 0; k < r->nvev; k++) {
            if (velocity_add(s->vel, &r->vev[k]) != 0) rc = STORE_FAILED;
            s->vevents[(*nev)++] = r->vev[k];
        }
        if (buckets_add_payment(s->bk, s->rules, &r->p) != 0 || vault_add_payment(s->vt, &r->p) != 0)
            rc = STORE_FAILED;
    }
    if (rc == STORE_OK && (velocity_build(s->vel) != 0 || buckets_build(s->bk) != 0 ||
                           vault_build(s->vt) != 0))
        rc = STORE_FAILED;
    if (rc == STORE_FAILED && !err[0]) snprintf(err, esz, "features: out of memory");
    return rc;
}

/* Writes the increments of the batch's new payments: exact events, buckets, vault. */
static store_rc scorer_write_state(scorer *s, size_t nev, char *err, size_t esz) {
    const buckets_row *bi;
    const vault_row *vi;
    ptrdiff_t nb = buckets_increments(s->bk, &bi), nv = vault_increments(s->vt, &vi);
    if (nb < 0 || nv < 0) return snprintf(err, esz, "increments: out of memory"), STORE_FAILED;
    store_rc rc = store_insert_velocity(s->st, s->vevents, nev, err, esz);
    if (rc == STORE_OK) rc = store_write_buckets(s->st, bi, (size_t)nb, err, esz);
    if (rc == STORE_OK) rc = store_write_vault(s->st, vi, (size_t)nv, err, esz);
    return rc;
}

/* Decides every row without a stored decision (the new ones) and writes decisions, alerts and
 * feature increments. In phases over the batch: (a) every row's features, (b, c) one prediction of
 * the model for all of them, (d) rules and blend per row. (A payment stored without a decision
 * cannot happen - both are written in one transaction - but if it did, it is decided now rather
 * than sent on without one.) */
static store_rc scorer_decide(scorer *s, store_row **rows, size_t n, char *err, size_t esz) {
    store_row **todo = s->undecided, **flagged = s->flagged;
    size_t ntodo = 0, nflagged = 0, nev = 0;
    for (size_t i = 0; i < n; i++)
        if (!rows[i]->has_decision) todo[ntodo++] = rows[i];
    if (ntodo == 0) return STORE_OK;
    err[0] = '\0';
    store_rc rc = scorer_feature_state(s, todo, ntodo, &nev, err, esz);
    /* Read after the features: a prune whose deletions they missed recorded its horizon before. */
    if (rc == STORE_OK && !scorer_protected(s))
        rc = store_read_horizons(s->st, s->horizon_ms, err, esz);
    if (rc != STORE_OK) return rc;
    int64_t late_cutoff = scorer_late_cutoff(s);
    scorer_features(s, todo, ntodo);
    int64_t model_us = scorer_predict(s, ntodo);
    for (size_t i = 0; i < ntodo; i++) {
        scorer_row *r = row_of(todo[i]);
        scorer_decide_row(s, r, &s->feat[i], model_us);
        if (r->sr.alert_id[0]) flagged[nflagged++] = todo[i];
        r->late = r->p.event_time_ms < late_cutoff;
        r->out_of_order = r->p.event_time_ms < s->watermark_ms;
    }
    rc = store_insert_decisions(s->st, todo, ntodo, s->cfg.scorer_id, err, esz);
    if (rc == STORE_OK) rc = store_insert_alerts(s->st, flagged, nflagged, err, esz);
    if (rc == STORE_OK) rc = scorer_write_state(s, nev, err, esz);
    return rc;
}

/* ---- 3. deliver: produce every output and wait for every delivery report --------------------- */

static void scorer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    scorer *s = opaque;
    int8_t *state = m->_private; /* points into the batch, which outlives every report */
    (void)rk;
    if (state) *state = !m->err ? OUT_DONE : kafka_err_too_big(m->err) ? OUT_TOO_BIG : OUT_FAILED;
    if (!m->err) return;
    s->stats.delivery_failures++;
    metric_add(s->m.delivery_failures, NULL, 1);
    log_fields(LOG_WARN, "delivery_failed",
               json_pack("{s:s, s:s}", "topic", rd_kafka_topic_name(m->rkt), "error",
                         rd_kafka_err2str(m->err)),
               "delivery failed; the batch's outputs will be produced again");
}

/* Produces one message. Takes ownership of hdrs and, with RD_KAFKA_MSG_F_FREE, of payload. */
static void scorer_produce(scorer *s, const char *topic, const void *key, size_t keylen,
                           void *payload, size_t len, int flags, rd_kafka_headers_t *hdrs,
                           int8_t *state) {
    rd_kafka_resp_err_t err;
    for (;;) {
        err = rd_kafka_producev(s->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
                                RD_KAFKA_V_VALUE(payload, len), RD_KAFKA_V_MSGFLAGS(flags),
                                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(state), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) break;
        rd_kafka_poll(s->producer, 100); /* serve delivery reports to make room */
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) { /* hdrs and payload belong to the message now */
        *state = OUT_INFLIGHT;
        return;
    }
    *state = kafka_err_too_big(err) ? OUT_TOO_BIG : OUT_FAILED; /* librdkafka took nothing */
    rd_kafka_headers_destroy(hdrs);
    if (flags & RD_KAFKA_MSG_F_FREE) free(payload);
    log_fields(LOG_WARN, "produce_failed",
               json_pack("{s:s, s:s}", "topic", topic, "error", rd_kafka_err2str(err)),
               "could not queue a message; it will be produced again");
}

/* Headers of an output: schema_version, payment_id, and ingest_ts: the payment's ingest_time in ms
 * (what ingest put in the consumed message's own ingest_ts; for a redelivery, the stored one, as in
 * its body). */
static rd_kafka_headers_t *output_headers(const scorer_row *r) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    char ts[24];
    kafka_header_str(h, "schema_version", "1");
    kafka_header_str(h, "payment_id", r->p.payment_id);
    snprintf(ts, sizeof ts, "%" PRId64, r->p.ingest_time_ms);
    kafka_header_str(h, "ingest_ts", ts);
    return h;
}

/* The fields processed_payments and fraud_alerts share (new reference). */
static json_t *output_common(const scorer_row *r) {
    const pay_payment *p = &r->p;
    const store_decision *d = &r->sr.dec;
    char amount[40], et[25];
    pay_amount_format(p->amount_minor, p->currency_exp, amount, sizeof amount);
    fs_time_format_rfc3339(p->event_time_ms, et);
    return json_pack("{s:i, s:s, s:s, s:i, s:O, s:s, s:s?, s:s, s:s, s:s, s:I, s:s, s:i, s:s?, s:s}",
                     "schema_version", 1, "payment_id", p->payment_id, "decision", d->decision,
                     "score", d->score, "reasons", d->reasons ? d->reasons : json_null(),
                     "rules_version", d->rules_version, "model_version",
                     d->model_version[0] ? d->model_version : NULL, "user_id", p->user_id,
                     "merchant_id", p->merchant_id, "amount", amount, "amount_minor",
                     (json_int_t)p->amount_minor, "currency", p->currency, "currency_exp",
                     p->currency_exp, "country", p->country[0] ? p->country : NULL, "event_time", et);
}

/* o as compact JSON (malloc'd; NULL on OOM), then o released. jsonfast writes json_dumps()'s
 * bytes without its per-character callbacks: the outputs' encoding was ~15 % of the scorer's CPU. */
static char *output_dump(json_t *o, size_t *len) {
    jsonfast_buf b = {0};
    jsonfast_value(&b, o);
    json_decref(o);
    return jsonfast_finish(&b, len);
}

/* processed_payments v1 (schemas/json/processed-payment.v1.json); malloc'd, NULL on OOM. */
static char *processed_json(const scorer_row *r, size_t *len) {
    char it[25], da[25];
    fs_time_format_rfc3339(r->p.ingest_time_ms, it);
    fs_time_format_rfc3339(r->sr.dec.decided_at_ms, da);
    json_t *o = output_common(r);
    if (!o) return NULL;
    json_object_set_new(o, "ingest_time", json_string(it));
    json_object_set_new(o, "decided_at", json_string(da));
    json_object_set_new(o, "alert_id", r->sr.alert_id[0] ? json_string(r->sr.alert_id) : json_null());
    return output_dump(o, len);
}

/* fraud_alerts v1 (schemas/json/fraud-alert.v1.json); malloc'd, NULL on OOM. */
static char *alert_json(const scorer_row *r, size_t *len) {
    char ca[25];
    fs_time_format_rfc3339(r->sr.dec.decided_at_ms, ca);
    json_t *o = output_common(r);
    if (!o) return NULL;
    json_object_set_new(o, "alert_id", json_string(r->sr.alert_id));
    json_object_set_new(o, "created_at", json_string(ca));
    return output_dump(o, len);
}

static bool out_needed(int8_t state) {
    return state == OUT_PENDING || state == OUT_FAILED || state == OUT_TOO_BIG;
}

static void scorer_produce_row(scorer *s, scorer_row *r) {
    size_t len = 0;
    if (out_needed(r->out_processed)) {
        char *v = processed_json(r, &len);
        if (v) scorer_produce(s, s->cfg.processed_topic, r->p.payment_id, FS_UUID_STRLEN, v, len,
                              RD_KAFKA_MSG_F_FREE, output_headers(r), &r->out_processed);
    }
    if (out_needed(r->out_alert)) {
        char *v = alert_json(r, &len);
        rd_kafka_headers_t *h = output_headers(r);
        kafka_header_str(h, "alert_id", r->sr.alert_id);
        if (v) scorer_produce(s, s->cfg.alerts_topic, r->p.payment_id, FS_UUID_STRLEN, v, len,
                              RD_KAFKA_MSG_F_FREE, h, &r->out_alert);
        else rd_kafka_headers_destroy(h);
    }
}

/* A dead letter of m to topic: the original bytes, key and headers, plus why and where from
 * (docs/topics.md). *state follows its delivery. */
static void scorer_produce_dlq(scorer *s, const char *topic, const rd_kafka_message_t *m,
                               const char *reason, const char *error, int8_t *state) {
    rd_kafka_headers_t *orig = NULL, *h;
    char part[16], off[24], now[25];
    if (rd_kafka_message_headers(m, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR)
        h = rd_kafka_headers_copy(orig);
    else
        h = rd_kafka_headers_new(8);
    snprintf(part, sizeof part, "%" PRId32, m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    fs_time_format_rfc3339(fs_now_ms(), now);
    kafka_header_str(h, "dlq_reason", reason);
    kafka_header_str(h, "dlq_error", error);
    kafka_header_str(h, "source_topic", rd_kafka_topic_name(m->rkt));
    kafka_header_str(h, "source_partition", part);
    kafka_header_str(h, "source_offset", off);
    kafka_header_str(h, "dlq_time", now);
    const void *key = m->key, *value = m->payload;
    size_t key_len = m->key_len, len = m->len;
    bool raw_pii = strcmp(reason, "raw_personal_data") == 0; /* not copied to one more topic */
    if (raw_pii || *state == OUT_TOO_BIG || key_len + len + DLQ_HEADROOM > s->max_message_bytes) {
        /* The original stays readable at source_topic/partition/offset while retained. */
        char n[24];
        snprintf(n, sizeof n, "%zu", len);
        kafka_header_str(h, "dlq_value_omitted", n);
        value = NULL, len = 0;
        if (key_len > DLQ_HEADROOM) {
            snprintf(n, sizeof n, "%zu", key_len);
            kafka_header_str(h, "dlq_key_omitted", n);
            key = NULL, key_len = 0;
        }
        log_fields(LOG_WARN, "dead_letter_value_omitted",
                   json_pack("{s:s, s:s, s:s, s:I}", "topic", topic, "source_partition", part,
                             "source_offset", off, "bytes", (json_int_t)m->len),
                   raw_pii ? "the message carries raw personal data: dead-lettered without its value"
                       : "the dead letter would exceed the message size limit: produced without its value");
    }
    scorer_produce(s, topic, key, key_len, (void *)value, len, RD_KAFKA_MSG_F_COPY, h, state);
}

static void scorer_produce_dead_letter(scorer *s, scorer_item *it) {
    scorer_produce_dlq(s, s->cfg.dlq_topic, it->msg, it->dlq_reason, it->dlq_error, &it->out_dlq);
}

/* Waits until every produced message has its delivery report. When stopping, gives up after
 * shutdown_timeout_ms: the rest is purged (their reports are served before returning). */
static int scorer_wait_deliveries(scorer *s) {
    int64_t give_up_us = 0;
    while (rd_kafka_outq_len(s->producer) > 0) {
        rd_kafka_flush(s->producer, 100); /* serves the delivery reports */
        if (!atomic_load(s->stop)) continue;
        if (!give_up_us) give_up_us = fs_mono_us() + (int64_t)s->cfg.shutdown_timeout_ms * 1000;
        if (fs_mono_us() < give_up_us) continue;
        rd_kafka_purge(s->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(s->producer, 2000);
        return -1;
    }
    return 0;
}

/* Produces every output of the batch still undelivered, until all are delivered; duplicates on the
 * topics are allowed (ids are stable). Returns -1 when stopping before that. */
static int scorer_deliver_batch(scorer *s) {
    int backoff = BACKOFF_MIN_MS;
    for (size_t i = 0; i < s->nrows; i++) {
        scorer_row *r = &s->rows[i];
        r->out_processed = r->rejected ? OUT_NONE : OUT_PENDING;
        r->out_alert = !r->rejected && r->sr.alert_id[0] ? OUT_PENDING : OUT_NONE;
    }
    for (int attempt = 1;; attempt++) {
        for (size_t i = 0; i < s->nrows; i++) scorer_produce_row(s, &s->rows[i]);
        for (size_t i = 0; i < s->nitems; i++)
            if (s->items[i].kind == ITEM_DEAD && out_needed(s->items[i].out_dlq))
                scorer_produce_dead_letter(s, &s->items[i]);
        if (scorer_wait_deliveries(s) != 0 || scorer_producer_fatal(s, s->producer)) return -1;
        size_t missing = 0;
        for (size_t i = 0; i < s->nrows; i++)
            missing += out_needed(s->rows[i].out_processed) + out_needed(s->rows[i].out_alert);
        for (size_t i = 0; i < s->nitems; i++) missing += out_needed(s->items[i].out_dlq);
        if (missing == 0) return 0;
        s->stats.produce_retries++;
        metric_add(s->m.produce_retries, NULL, 1);
        log_fields(LOG_WARN, "produce_retry",
                   json_pack("{s:i, s:I, s:i}", "attempt", attempt, "undelivered",
                             (json_int_t)missing, "backoff_ms", backoff),
                   "some outputs of the batch were not delivered; producing them again");
        if (scorer_sleep(s, backoff) != 0) return -1;
        backoff = backoff_next(backoff);
    }
}

/* ---- 4. commit: the offsets past every message of the batch ---------------------------------- */

static void scorer_commit_batch(scorer *s) {
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < s->nitems; i++) kafka_offsets_add(offs, s->items[i].msg);
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(s->consumer, offs);
    if (err)
        log_fields(LOG_WARN, "offsets_store_failed", json_pack("{s:s}", "error", rd_kafka_err2str(err)),
                   "could not store offsets (partition revoked?)");
    scorer_commit_stored(s, s->consumer, COMMIT_BATCH);
    rd_kafka_topic_partition_list_destroy(offs);
}

/* Commits every stored offset (synchronously); `at` names the caller in the logs. A failed commit
 * (a rebalance in progress, the coordinator moving) is retried by the next batch's commit, from
 * the idle loop with a backoff (1, 2, 4, 8, 16, then every 30 s: no hammering of a coordinator
 * that keeps refusing), and always in the revoke callback and at close, the last moments at which
 * this member can still commit for those partitions, so that persisted work is not redone by
 * their next owner. Offsets of partitions this member lost are dropped by librdkafka: the retry
 * then finds nothing to commit and stops. rk: the consumer, passed in because the revoke callback
 * of the close runs when s->consumer is already NULL (kafka_consumer_close). */
static void scorer_commit_stored(scorer *s, rd_kafka_t *rk, commit_at where) {
    const char *at = COMMIT_AT_NAMES[where];
    rd_kafka_resp_err_t err = rd_kafka_commit(rk, NULL, 0 /* synchronous */);
    bool failed = err && err != RD_KAFKA_RESP_ERR__NO_OFFSET;
    int64_t now = fs_mono_us();
    if (failed) {
        s->stats.commit_failures++;
        metric_add(s->m.commit_failures, NULL, 1);
        s->commit_attempts++;
        s->commit_retry_us = now + (s->commit_attempts > 5 ? 30000000
                                                           : (int64_t)1000000 << (s->commit_attempts - 1));
        /* the first failure, then every 30 s while it lasts: a permanent one (an ACL) must show;
         * and each one at revoke or close, the last chance for those partitions: their next owner
         * consumes the batch again (a rebalance at a time, never a flood) */
        bool last_chance = where == COMMIT_REVOKE || where == COMMIT_CLOSE;
        if (s->commit_attempts == 1 || last_chance || now - s->commit_logged_us >= 30000000) {
            s->commit_logged_us = now;
            log_fields(LOG_WARN, "commit_failed",
                       json_pack("{s:s, s:I, s:s}", "error", rd_kafka_err2str(err), "attempts",
                                 (json_int_t)s->commit_attempts, "at", at),
                       "offset commit failed (%" PRIu64 " attempts): retried; if this member loses "
                       "the partitions first, their next owner consumes the batch again and "
                       "absorbs it", s->commit_attempts);
        }
    } else if (s->commit_attempts) {
        log_fields(LOG_INFO, "commit_retried",
                   json_pack("{s:s, s:I, s:s}", "result", err ? "nothing to commit" : "committed",
                             "attempts", (json_int_t)s->commit_attempts, "at", at),
                   "stored offsets %s after a failed commit", err ? "dropped (partitions lost)"
                                                                   : "committed");
        s->commit_attempts = 0;
    } else if (log_enabled(LOG_DEBUG)) {
        log_msg(LOG_DEBUG, "committed", "offsets committed");
    }
}

static void scorer_clear_batch(scorer *s) {
    for (size_t i = 0; i < s->nitems; i++) {
        if (s->items[i].kind == ITEM_DEAD && s->items[i].out_dlq == OUT_DONE) {
            s->stats.dead_letters++;
            scorer_count_dead_letters(s, s->items[i].dlq_reason, s->cfg.topic, 1);
        }
        rd_kafka_message_destroy(s->items[i].msg);
    }
    for (size_t i = 0; i < s->nrows; i++) {
        scorer_row *r = &s->rows[i];
        store_decision_clear(&r->sr.dec);
        pay_payment_clear(&r->p);
        memset(r, 0, offsetof(scorer_row, vev)); /* the key buffers need no clearing */
    }
    s->nitems = 0;
    s->nrows = 0;
}

/* ---- outcomes: labels from payment_outcomes (the scorer's second consumer group) ---------------- */

/* Produces om's dead letter unless already delivered; its delivery is awaited before the outcome
 * offsets are committed. */
static void scorer_outcome_produce_dlq(scorer *s, scorer_omsg *om) {
    if (out_needed(om->dlq))
        scorer_produce_dlq(s, s->cfg.outcomes_dlq_topic, om->msg, om->dlq_reason, om->dlq_error,
                           &om->dlq);
}

/* The error of an outcome_conflict dead letter. */
static const char *outcome_conflict_why(const store_outcome_conflict *c) {
    return strcmp(c->payment_id, c->first_payment_id) != 0
               ? "outcome_id: already stands for a label of another payment_id"
               : "outcome_id: already stands for another outcome of this payment";
}

/* The log line of om's dead letter. An outcome_conflict (c: the label standing under its
 * outcome_id, store.h) is an error naming both labels (outcomes carry no personal data): a client
 * retrying under one Idempotency-Key with another body, or a producer reusing ids, loses that
 * label unless someone looks. */
static void scorer_outcome_log(const scorer_omsg *om, const store_outcome_conflict *c) {
    json_t *f = msg_ctx(om->msg);
    json_object_set_new(f, "reason", json_string(om->dlq_reason));
    json_object_set_new(f, "error", json_string(om->dlq_error));
    if (!c) {
        log_fields(LOG_WARN, "outcome_invalid", f, "outcome message dead-lettered: %s", om->dlq_error);
        return;
    }
    json_object_set_new(f, "outcome_id", json_string(c->outcome_id));
    json_object_set_new(f, "payment_id", json_string(c->payment_id));
    json_object_set_new(f, "outcome", json_string(c->outcome));
    json_object_set_new(f, "first_payment_id", json_string(c->first_payment_id));
    json_object_set_new(f, "first_outcome", json_string(c->first_outcome));
    log_fields(LOG_ERROR, "outcome_conflict", f,
               "outcome_id %s names %s for payment %s; this message's %s for payment %s is "
               "dead-lettered, not stored (a retry under the same Idempotency-Key with another "
               "body? a correction takes a new key)", c->outcome_id, c->first_outcome,
               c->first_payment_id, c->outcome, c->payment_id);
}

/* Dead-letters outcome message om with reason code (c: the standing label for outcome_conflict,
 * else NULL): marked, counted in fs_scorer_outcomes_total{result="invalid"} and logged once,
 * produced again until delivered (fs_scorer_dead_letters_total counts it then,
 * scorer_count_outcome_dead_letters). */
static void scorer_outcome_dead_letter(scorer *s, scorer_omsg *om, const char *code,
                                       const char *why, const store_outcome_conflict *c) {
    if (om->dlq == OUT_NONE) {
        om->dlq = OUT_PENDING;
        om->dlq_reason = code;
        snprintf(om->dlq_error, sizeof om->dlq_error, "%s", why);
        s->stats.outcomes_invalid++;
        metric_add(s->m.outcomes, "invalid", 1);
        scorer_outcome_log(om, c);
    }
    scorer_outcome_produce_dlq(s, om);
}

/* The rows of the outcome messages in hand that are not dead letters (s->orow maps them back);
 * the undecodable ones are dead-lettered. */
static json_t *scorer_outcome_rows(scorer *s) {
    json_t *rows = json_array();
    char why[160];
    const char *code;
    for (size_t i = 0; i < s->nomsgs; i++) {
        scorer_omsg *om = &s->omsgs[i];
        if (om->dlq != OUT_NONE) { /* refused earlier: only its dead letter may be pending */
            scorer_outcome_dead_letter(s, om, om->dlq_reason, om->dlq_error, NULL);
            continue;
        }
        json_t *row = outcome_decode(om->msg->payload, om->msg->len, &code, why, sizeof why);
        if (!row) {
            scorer_outcome_dead_letter(s, om, code, why, NULL);
            continue;
        }
        s->orow[json_array_size(rows)] = i;
        json_array_append_new(rows, row);
    }
    return rows;
}

/* "{id,...}": the payments of rows and those persisted with pending labels (s->labelled), as a
 * PostgreSQL array literal (caller frees); NULL when out of memory. */
static char *scorer_label_ids(const scorer *s, const json_t *rows) {
    size_t n = json_array_size(rows) + s->nlabelled;
    const char **ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return NULL;
    for (size_t i = 0; i < n; i++) /* (outcome_decode checked the rows' ids) */
        ids[i] = i < s->nlabelled ? s->labelled[i]
                                  : json_string_value(json_object_get(
                                        json_array_get(rows, i - s->nlabelled), "payment_id"));
    char *lit = fs_uuid_array_literal(ids, n);
    free(ids);
    return lit;
}

/* Stores rows (consumed; orow: their messages' indexes) and applies the pending labels of their
 * payments and of the payments persisted with pending labels, in one transaction: probes of those
 * payments' labels only, however many others are pending (those wait for the re-try rounds,
 * scorer_outcomes_retry). The rows whose outcome_id stands for another label are dead-lettered
 * once the transaction is committed: until then the label standing could still change (a rolled
 * back insert, another worker's label committed before the retry). */
static store_rc scorer_store_outcome_rows(scorer *s, json_t *rows, const size_t *orow, char *err,
                                          size_t esz) {
    int64_t inserted = 0, applied = 0;
    size_t nconf = 0;
    char *ids = scorer_label_ids(s, rows);
    if (!ids) {
        json_decref(rows);
        snprintf(err, esz, "outcomes: out of memory");
        return STORE_TRANSIENT; /* (not the rows' fault: never dead-lettered for it) */
    }
    store_rc rc = store_begin(s->st, err, esz);
    if (rc == STORE_OK)
        rc = store_insert_outcomes(s->st, rows, &inserted, s->oconf, &nconf, err, esz);
    else json_decref(rows);
    if (rc == STORE_OK) rc = store_apply_outcomes_of(s->st, ids, OUTCOMES_CLAIM, &applied, err, esz);
    free(ids);
    if (rc == STORE_OK) rc = store_commit(s->st, err, esz);
    if (rc != STORE_OK) {
        store_rollback(s->st);
        return rc;
    }
    s->nlabelled = 0; /* applied (or left to the re-try rounds: their payment row was held) */
    for (size_t k = 0; k < nconf; k++)
        scorer_outcome_dead_letter(s, &s->omsgs[orow[s->oconf[k].row]], "outcome_conflict",
                                   outcome_conflict_why(&s->oconf[k]), &s->oconf[k]);
    s->stats.outcomes_stored += (uint64_t)inserted;
    s->stats.outcomes_applied += (uint64_t)applied;
    metric_add(s->m.outcomes, "stored", (double)inserted);
    metric_add(s->m.outcomes, "applied", (double)applied);
    return STORE_OK;
}

/* PostgreSQL refused the outcomes as data (SQLSTATE 22/23): each row alone, so that only the
 * refused ones are dead-lettered (db_rejected) and the others are stored. */
static store_rc scorer_store_outcomes_one_by_one(scorer *s, json_t *rows, char *err, size_t esz) {
    store_rc rc = STORE_OK;
    for (size_t j = 0; j < json_array_size(rows) && rc != STORE_TRANSIENT; j++) {
        json_t *one = json_array();
        json_array_append(one, json_array_get(rows, j));
        rc = scorer_store_outcome_rows(s, one, &s->orow[j], err, esz);
        if (rc == STORE_FAILED)
            scorer_outcome_dead_letter(s, &s->omsgs[s->orow[j]], "db_rejected", err, NULL);
    }
    return rc == STORE_TRANSIENT ? rc : STORE_OK;
}

/* Stores the outcomes in hand and applies the pending labels of their payments (and of the
 * payments persisted with pending labels); the messages that can never be stored are
 * dead-lettered. */
static store_rc scorer_store_outcomes(scorer *s, char *err, size_t esz) {
    json_t *rows = scorer_outcome_rows(s);
    json_incref(rows); /* kept for a row-by-row retry */
    store_rc rc = scorer_store_outcome_rows(s, rows, s->orow, err, esz);
    if (rc == STORE_FAILED) rc = scorer_store_outcomes_one_by_one(s, rows, err, esz);
    json_decref(rows);
    return rc;
}

/* True when every dead letter of the outcomes in hand is delivered. It waits for the producer's
 * whole queue: called between payment batches, when nothing else is in flight. */
static bool scorer_outcome_dlq_delivered(scorer *s) {
    if (scorer_wait_deliveries(s) != 0) return false;
    for (size_t i = 0; i < s->nomsgs; i++)
        if (s->omsgs[i].dlq != OUT_NONE && s->omsgs[i].dlq != OUT_DONE) return false;
    return true;
}

/* A label lost to retention before it was stored (kafka.h kafka_gaps) is reported like a lost
 * payment. */
static void scorer_outcome_check_offset(scorer *s, const rd_kafka_message_t *m) {
    kafka_loss l;
    if (kafka_gaps_check(s->ogaps, s->outcomes, m, &l))
        scorer_report_loss(s, rd_kafka_topic_name(m->rkt), m->partition, l.from, l.earliest,
                           l.latest, "the next message is beyond the committed offset");
}

static void scorer_outcomes_assign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
    if (e)
        log_msg(LOG_ERROR, "rebalance_error", "outcomes %s: %s", parts ? "assign" : "unassign",
                rd_kafka_err2str(e));
}

/* The outcome consumer's rebalances: the committed offsets of the assigned partitions become the
 * offsets expected next (what scorer_outcome_check_offset compares with). */
static void scorer_outcomes_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    scorer *s = opaque;
    kafka_gaps_revoked(s->ogaps, NULL); /* eager: every rebalance starts afresh */
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        scorer_outcomes_assign(rk, NULL);
        return;
    }
    rd_kafka_resp_err_t e = kafka_gaps_assigned(s->ogaps, rk, parts);
    if (e)
        log_msg(LOG_WARN, "outcomes_committed_unknown",
                "committed offsets of %s not read (%s): a loss to retention goes unnoticed on this "
                "assignment", s->cfg.outcomes_topic, rd_kafka_err2str(e));
    scorer_outcomes_assign(rk, parts);
}

/* Commits the offsets after the outcome messages in hand, named explicitly: the consumer's offset
 * store follows the shared -X properties, which may turn automatic storing off. Only for
 * partitions still assigned: a revoked one's new owner has its own position (committing ours could
 * move it back; its labels are stored again, idempotently, by whoever consumes them next). */
static rd_kafka_resp_err_t scorer_outcomes_commit(scorer *s) {
    rd_kafka_topic_partition_list_t *mine = NULL;
    rd_kafka_resp_err_t e = rd_kafka_assignment(s->outcomes, &mine);
    if (e) return e;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)s->nomsgs);
    for (size_t i = 0; i < s->nomsgs; i++) {
        const rd_kafka_message_t *m = s->omsgs[i].msg;
        const char *topic = rd_kafka_topic_name(m->rkt);
        if (rd_kafka_topic_partition_list_find(mine, topic, m->partition)) kafka_offsets_add(l, m);
    }
    e = l->cnt ? rd_kafka_commit(s->outcomes, l, 0) : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (!e)
        log_fields(LOG_DEBUG, "outcomes_committed",
                   json_pack("{s:I, s:i}", "messages", (json_int_t)s->nomsgs, "partitions", l->cnt),
                   "outcome offsets committed");
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_topic_partition_list_destroy(mine);
    return e;
}

/* One step of a re-try round of the pending labels (pending.h), in its own transaction. */
static void scorer_outcomes_retry(scorer *s) {
    char err[512], next[PENDING_CURSOR_MAX];
    int64_t t0 = fs_mono_us(), examined = 0, applied = 0, left = 0, round_applied = 0;
    store_rc rc = store_begin(s->st, err, sizeof err);
    if (rc == STORE_OK)
        rc = store_retry_outcomes(s->st, pending_cursor(s->pend), PENDING_SCAN, &examined, &applied,
                                  next, sizeof next, err, sizeof err);
    if (rc == STORE_OK) rc = store_commit(s->st, err, sizeof err);
    if (rc != STORE_OK) {
        store_rollback(s->st);
        s->outcome_backoff = 20; /* the round goes on from the same place */
        log_fields(LOG_WARN, "outcomes_retry", json_pack("{s:s}", "error", err),
                   "re-trying pending outcomes failed; retried later");
        return;
    }
    s->stats.outcomes_applied += (uint64_t)applied;
    metric_add(s->m.outcomes, "applied", (double)applied);
    int64_t now = fs_mono_us();
    if (!pending_step_done(s->pend, now, now - t0, examined, applied, next, &left, &round_applied))
        return;
    metric_set(s->m.outcomes_pending, NULL, (double)left);
    log_fields(LOG_DEBUG, "outcomes_round",
               json_pack("{s:I, s:I, s:I}", "applied", (json_int_t)round_applied, "pending",
                         (json_int_t)left, "next_round_ms",
                         (json_int_t)((pending_due_us(s->pend) - now) / 1000)),
               "pending outcomes re-tried: %" PRId64 " applied, %" PRId64 " still pending",
               round_applied, left);
}

/* The outcome messages in hand whose dead letters are delivered, in fs_scorer_dead_letters_total
 * (their topic's series, beside raw_payments'). */
static void scorer_count_outcome_dead_letters(scorer *s) {
    for (size_t i = 0; i < s->nomsgs; i++)
        if (s->omsgs[i].dlq == OUT_DONE)
            scorer_count_dead_letters(s, s->omsgs[i].dlq_reason, s->cfg.outcomes_topic, 1);
}

/* Stores the outcome messages in hand and applies the labels of their payments (and of the
 * payments persisted with pending labels), then commits the outcome offsets. On failure the
 * messages stay in hand and are tried again a few batches later. */
static void scorer_outcomes_store(scorer *s) {
    char err[512];
    if (!store_connected(s->st) || scorer_store_outcomes(s, err, sizeof err) != STORE_OK) {
        s->outcome_backoff = 20;
        log_fields(LOG_WARN, "outcomes_retry", json_pack("{s:s}", "error", store_connected(s->st) ? err : "not connected"),
                   "storing outcomes failed; retried later");
        return;
    }
    if (s->nomsgs == 0) return; /* only labels of persisted payments applied */
    if (!scorer_outcome_dlq_delivered(s)) {
        s->outcome_backoff = 20;
        log_msg(LOG_WARN, "outcomes_retry", "dead letters of invalid outcomes not delivered; retried later");
        return;
    }
    scorer_count_outcome_dead_letters(s);
    rd_kafka_resp_err_t e = scorer_outcomes_commit(s);
    if (e) {
        metric_add(s->m.outcomes_commit_failures, NULL, 1);
        log_msg(LOG_WARN, "outcomes_commit_failed", "%s (they will be stored again: idempotent)",
                rd_kafka_err2str(e));
    }
    for (size_t i = 0; i < s->nomsgs; i++) rd_kafka_message_destroy(s->omsgs[i].msg);
    s->nomsgs = 0;
}

/* Between batches: polls what payment_outcomes has (without waiting) and stores it, applying the
 * labels of its payments and of the payments just persisted with pending labels; then, when one
 * is due, a step of the re-try round of all pending labels (pending.h; also while labels keep
 * coming, so that a steady stream of them cannot hold the rounds off). */
static void scorer_outcomes(scorer *s) {
    if (!s->outcomes || atomic_load(s->stop)) return;
    if (s->outcome_backoff > 0) {
        s->outcome_backoff--;
        return;
    }
    while (s->nomsgs < OUTCOMES_MAX) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->outcomes, 0);
        if (!m) break;
        if (m->err == RD_KAFKA_RESP_ERR__FATAL &&
            scorer_fatal_of(s, s->outcomes, "consumer_fatal", "outcome consumer")) {
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_msg(LOG_WARN, "outcomes_consumer_error", "%s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        scorer_outcome_check_offset(s, m);
        s->omsgs[s->nomsgs++] = (scorer_omsg){.msg = m}; /* kept until stored and committed */
    }
    if (s->nomsgs > 0 || s->nlabelled > 0) scorer_outcomes_store(s);
    if (s->outcome_backoff == 0 && store_connected(s->st) && fs_mono_us() >= pending_due_us(s->pend))
        scorer_outcomes_retry(s);
}

/* ---- between batches: pruning, retention and rule reloads ----------------------------------- */

/* Deletes what is older than cutoff in slices of PRUNE_LIMIT rows (never one long lock), up to
 * PRUNE_ROUNDS slices per call, so that pruning keeps up with a replay at full speed. width 0:
 * velocity_events, else the buckets of that width. Returns the rows deleted, or -1. */
static int64_t scorer_prune(scorer *s, int64_t width, int64_t cutoff) {
    char err[512];
    int64_t total = 0, deleted = PRUNE_LIMIT;
    for (int round = 0; round < PRUNE_ROUNDS && deleted == PRUNE_LIMIT; round++) {
        store_rc rc = width ? store_prune_buckets(s->st, width, cutoff, PRUNE_LIMIT, &deleted, err,
                                                  sizeof err)
                            : store_prune_velocity(s->st, cutoff, PRUNE_LIMIT, &deleted, err,
                                                   sizeof err);
        if (rc != STORE_OK) {
            log_fields(LOG_WARN, "prune_failed", json_pack("{s:s}", "error", err),
                       "pruning old feature rows failed (retried later)");
            return -1;
        }
        total += deleted;
    }
    metric_add(s->m.pruned, width ? "feature_buckets" : "velocity_events", (double)total);
    if (width) s->stats.buckets_pruned += (uint64_t)total;
    else s->stats.velocity_pruned += (uint64_t)total;
    return total;
}

/* One sync, in one transaction (store.h): publishes the watermark, reads the other live workers'
 * needed-from and the horizons; with cutoff (a prune), computes this prune's cutoffs and raises the
 * horizons to them before anything is deleted, and *held_back_ms gets how far the other workers
 * held it back. Returns 0, or -1 (logged; tried after the next batch). */
static int scorer_sync(scorer *s, int64_t cutoff[PRUNE_SETS], int64_t *held_back_ms) {
    char err[512];
    int64_t t0 = fs_mono_us(), now = fs_now_ms(), own = scorer_needed_from(s), others = PRUNE_NONE;
    int64_t wm = s->watermark_ms < now ? s->watermark_ms : now;
    int64_t horizon[PRUNE_SETS], reach[PRUNE_SETS];
    store_rc rc = store_begin(s->st, err, sizeof err);
    if (rc == STORE_OK)
        rc = store_prune_sync(s->st, s->cfg.scorer_id, wm, own, s->cfg.watermark_liveness_ms,
                              &others, horizon, err, sizeof err);
    if (rc == STORE_OK && cutoff) {
        prune_reach(velocity_max_window_ms(s->rules), reach);
        prune_cutoffs(own, others, reach, cutoff);
        *held_back_ms = own - (cutoff[PRUNE_VELOCITY] + reach[PRUNE_VELOCITY]);
        rc = store_prune_record(s->st, cutoff, err, sizeof err);
        for (int i = 0; i < PRUNE_SETS; i++)
            if (cutoff[i] > horizon[i]) horizon[i] = cutoff[i];
    }
    if (rc == STORE_OK) rc = store_commit(s->st, err, sizeof err);
    if (rc != STORE_OK) {
        store_rollback(s->st);
        log_fields(LOG_WARN, "watermark_sync_failed", json_pack("{s:s}", "error", err),
                   "publishing the watermark failed (retried after the next batch)");
        return -1;
    }
    memcpy(s->horizon_ms, horizon, sizeof horizon);
    s->synced_us = t0;
    return 0;
}

/* Every velocity-prune-every batches, but not sooner than velocity-prune-min-interval-ms after the
 * last one (a batch closed by the linger may hold one payment): a sync, then the prune. Also a sync
 * alone right after a batch while this worker is not protected (its first batch, or its row aged
 * out), so that the others stop pruning what it needs. Only after batches: an idle worker's row
 * ages out and stops holding pruning back. */
static void scorer_maybe_prune(scorer *s) {
    int64_t now_us = fs_mono_us();
    bool prune = s->cfg.velocity_prune_every > 0 &&
                 s->batches_since_prune >= s->cfg.velocity_prune_every &&
                 (s->pruned_us == 0 ||
                  now_us - s->pruned_us >= (int64_t)s->cfg.velocity_prune_min_interval_ms * 1000);
    if (s->watermark_ms == 0 || s->batches_since_sync == 0 || !store_connected(s->st) ||
        (!prune && scorer_protected(s)))
        return;
    s->batches_since_sync = 0;
    if (prune) {
        s->batches_since_prune = 0;
        s->pruned_us = now_us;
    }
    int64_t cutoff[PRUNE_SETS], held_back = 0;
    if (scorer_sync(s, prune ? cutoff : NULL, &held_back) != 0 || !prune) return;
    metric_set(s->m.prune_held_back, NULL, (double)held_back / 1000.0);
    int64_t deleted = scorer_prune(s, 0, cutoff[PRUNE_VELOCITY]);
    if (deleted < 0) return;
    log_fields(LOG_DEBUG, "velocity_pruned",
               json_pack("{s:I, s:I, s:I, s:I}", "deleted", (json_int_t)deleted, "before_ms",
                         (json_int_t)cutoff[PRUNE_VELOCITY], "watermark_ms",
                         (json_int_t)s->watermark_ms, "held_back_ms", (json_int_t)held_back),
               "pruned %" PRId64 " velocity events", deleted);
    if (scorer_prune(s, BUCKETS_HOUR_MS, cutoff[PRUNE_HOUR]) < 0) return;
    (void)scorer_prune(s, BUCKETS_DAY_MS, cutoff[PRUNE_DAY]);
}

/* Part of a retention round (expire.h): between batches, on the batches' connection, each slice
 * its own short transaction, for at most EXPIRE_BUDGET_MS per loop turn, or EXPIRE_SHARE_PCT % of
 * the batches' time while the consumer is behind (its batch was full). A failure is logged like a
 * prune's and the round tried again an interval later; a connection it lost is made again by
 * scorer_db_check (or the next batch). */
static void scorer_retention(scorer *s) {
    char err[512];
    int64_t expired = 0;
    expire_turn(s->exp, s->turn_batch_us, s->turn_full);
    if (atomic_load(s->stop) || fs_mono_us() < expire_due_us(s->exp) || !store_connected(s->st))
        return;
    int rc = expire_run(s->exp, s->st, &expired, err, sizeof err);
    metric_add(s->m.outcomes, "expired", (double)expired);
    if (rc != 0)
        log_fields(LOG_WARN, "retention_failed", json_pack("{s:s}", "error", err),
                   "deleting payment data older than payment-retention-days failed (retried at the next "
                   "round)");
}

rules *scorer_rules_load(const scorer_config *cfg, char *errstr, size_t errstr_size) {
    rules *r = rules_load(cfg->rules_file, errstr, errstr_size);
    if (r && rules_add_feature_windows(r, cfg->feature_windows, cfg->risk_windows_days,
                                       cfg->risk_delay_days, errstr, errstr_size) != 0) {
        rules_destroy(r);
        return NULL;
    }
    return r;
}

model *scorer_model_load(const scorer_config *cfg, char *errstr, size_t errstr_size) {
    return model_load(cfg->model_file, SCORER_MODEL_THREADS, errstr, errstr_size);
}

/* Why the model's windows are always computed: a column is bound to a feature by its name
 * (modelrow.h), and a window only the rules asked for vanished with the rule that asked (a disabled
 * rule's window is not computed), leaving the column NAN from the reload on with nothing but a
 * warning. The other way out, refusing such a rules reload, would turn disabling a misfiring rule
 * under a model (when it is urgent) into a restart with other feature-windows. So the model's
 * windows are added to every rule set it is bound to, and rules and model stay independent. */
int scorer_rules_fit(rules *r, const model *m, char *errstr, size_t errstr_size) {
    const char *names[MODEL_MAX_FEATURES];
    size_t n = m ? model_feature_count(m) : 0;
    if (n > MODEL_MAX_FEATURES) n = MODEL_MAX_FEATURES; /* model_load refuses more */
    for (size_t i = 0; i < n; i++) names[i] = model_feature_name(m, i);
    return rules_add_model_windows(r, names, n, errstr, errstr_size);
}

int scorer_rules_fit_check(const rules *r, const model *m, char *errstr, size_t errstr_size) {
    if (!m) return 0;
    rules *c = rules_copy(r);
    if (!c) return snprintf(errstr, errstr_size, "out of memory"), -1;
    int rc = scorer_rules_fit(c, m, errstr, errstr_size);
    rules_destroy(c);
    return rc;
}

size_t scorer_model_unbound(const model *m, const modelrow *x) {
    char names[512];
    size_t k = x ? modelrow_unbound(x, names, sizeof names) : 0;
    if (k)
        log_fields(LOG_WARN, "model_features_missing",
                   json_pack("{s:s, s:I, s:s}", "version", model_version(m), "count",
                             (json_int_t)k, "features", names),
                   "%zu model feature(s) are not computed with these rules and feature windows: "
                   "always missing", k);
    return k;
}

/* The rules file again: the new set, or NULL (logged, counted) when it does not load. Success is
 * counted by scorer_reload() once the set is also bound to the model. */
static rules *scorer_reload_rules(scorer *s) {
    char err[512];
    rules *r = scorer_rules_load(&s->cfg, err, sizeof err);
    if (!r) {
        s->stats.rules_reload_failures++;
        metric_add(s->m.reloads, "failed", 1);
        log_fields(LOG_ERROR, "rules_reload_failed",
                   json_pack("{s:s, s:s, s:s}", "file", s->cfg.rules_file, "error", err, "active",
                             rules_version(s->rules)),
                   "the new rules file is invalid; the active rules stay");
    }
    return r;
}

/* The model file again, like scorer_reload_rules(). */
static model *scorer_reload_model(scorer *s) {
    char err[512];
    model *m = scorer_model_load(&s->cfg, err, sizeof err);
    if (!m) {
        s->stats.model_reload_failures++;
        metric_add(s->m.model_reloads, "failed", 1);
        log_fields(LOG_ERROR, "model_reload_failed",
                   json_pack("{s:s, s:s, s:s?}", "file", s->cfg.model_file, "error", err,
                             "active", s->model ? model_version(s->model) : NULL),
                   "the new model file is invalid; the active model stays");
    }
    return m;
}

/* A reload that loaded r and/or m but could not bind them together counts as failed for both. */
static void scorer_reload_refused(scorer *s, const rules *r, const model *m) {
    if (r) {
        s->stats.rules_reload_failures++;
        metric_add(s->m.reloads, "failed", 1);
    }
    if (m) {
        s->stats.model_reload_failures++;
        metric_add(s->m.model_reloads, "failed", 1);
    }
}

/* Logged and counted just before r and/or m replace the active ones. */
static void scorer_reload_accepted(scorer *s, const rules *r, const model *m) {
    if (r) {
        log_fields(LOG_INFO, "rules_reloaded",
                   json_pack("{s:s, s:s, s:s}", "file", s->cfg.rules_file, "previous",
                             rules_version(s->rules), "version", rules_version(r)),
                   "rules reloaded");
        s->stats.rules_reloads++;
        metric_add(s->m.reloads, "ok", 1);
    }
    if (m) {
        log_fields(LOG_INFO, "model_reloaded",
                   json_pack("{s:s, s:s?, s:s}", "file", s->cfg.model_file, "previous",
                             s->model ? model_version(s->model) : NULL, "version",
                             model_version(m)),
                   "model reloaded");
        s->stats.model_reloads++;
        metric_add(s->m.model_reloads, "ok", 1);
    }
}

/* What an operator must know about the model just bound: columns this scorer never computes
 * (always missing: names that are no feature key, such as a window no rule could have; also a
 * gauge, since a log line is easily missed), and a blend weight of 0. */
static void scorer_model_warnings(scorer *s) {
    metric_set(s->m.model_unbound, NULL, (double)scorer_model_unbound(s->model, s->mrow));
    if (rules_model_weight(s->rules) == 0)
        log_fields(LOG_WARN, "model_not_blended",
                   json_pack("{s:s}", "rules", rules_version(s->rules)),
                   "the rules give the model no weight (blend.model_weight 0): its score is "
                   "recorded but changes no decision");
}

/* SIGHUP, between batches: the rules file, and the model file when one is configured, are read
 * again; one that does not load keeps its active version. The rules to use get the model's windows
 * (scorer_rules_fit): the new file's set, or for a new model alone a copy of the file's set as last
 * loaded (rules_file: the active set also holds the old model's windows, which would pile up). The
 * model's columns are then bound again (the windows decide where each feature is). Rules and model
 * that do not fit together (too many windows) are refused as a whole: both active ones stay. */
static void scorer_reload(scorer *s) {
    char err[512] = "out of memory";
    rules *r = scorer_reload_rules(s);
    model *m = s->cfg.model_file && s->cfg.model_file[0] ? scorer_reload_model(s) : NULL;
    const model *bm = m ? m : s->model;
    /* the set to use from now on: the file's (new or kept) with the model's windows added; never
     * the active set, which holds the previous model's windows (they would pile up, reload after
     * reload, up to the window limit) */
    rules *nr = NULL;
    modelrow *mr = NULL;
    if (!r && !m) return;
    nr = !bm ? r : rules_copy(r ? r : s->rules_file);
    if (!nr || (bm && (scorer_rules_fit(nr, bm, err, sizeof err) != 0 ||
                       !(mr = modelrow_new(bm, nr, err, sizeof err))))) {
        log_fields(LOG_ERROR, "reload_failed",
                   json_pack("{s:s, s:s, s:s?}", "error", err, "rules",
                             rules_version(r ? r : s->rules), "model",
                             bm ? model_version(bm) : NULL),
                   "%s: the active rules and model stay", err);
        scorer_reload_refused(s, r, m);
        if (nr != r) rules_destroy(nr);
        rules_destroy(r);
        model_destroy(m);
        return;
    }
    scorer_reload_accepted(s, r, m);
    /* between batches: nothing points into the old rules, model or binding any more */
    modelrow_destroy(s->mrow);
    s->mrow = mr;
    if (r) metric_info_swap(s->m.rules_info, rules_version(s->rules), rules_version(r));
    rules_destroy(s->rules);
    s->rules = nr;
    if (r && nr != r) {
        rules_destroy(s->rules_file);
        s->rules_file = r;
    }
    if (m) {
        metric_info_swap(s->m.model_info, s->model ? model_version(s->model) : NULL,
                         model_version(m));
        model_destroy(s->model);
        s->model = m;
    }
    if (s->model) scorer_model_warnings(s);
}

/* ---- consumer events: rebalances, errors, offset resets -------------------------------------- */

static bool cooperative(rd_kafka_t *rk) {
    return strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
}

static json_t *partitions_json(const rd_kafka_topic_partition_list_t *parts) {
    json_t *a = json_array();
    for (int i = 0; i < parts->cnt; i++) json_array_append_new(a, json_integer(parts->elems[i].partition));
    return a;
}

static void log_rebalance_error(rd_kafka_error_t *e, const char *what) {
    if (!e) return;
    log_fields(LOG_ERROR, "rebalance_error", json_pack("{s:s, s:s}", "call", what, "error",
                                                       rd_kafka_error_string(e)),
               "%s failed", what);
    rd_kafka_error_destroy(e);
}

/* Cooperative protocol: incremental assign/unassign; eager: (re)assign the whole set. On
 * revocation the batch in hand is finished (persisted, produced, committed) FIRST: once the
 * partitions are gone its offsets could no longer be committed and the new owner would redo it. */
static void scorer_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                rd_kafka_topic_partition_list_t *parts, void *opaque) {
    scorer *s = opaque;
    bool coop = cooperative(rk);
    json_t *f = json_pack("{s:o, s:s, s:b}", "partitions", partitions_json(parts), "protocol",
                          rd_kafka_rebalance_protocol(rk), "lost", rd_kafka_assignment_lost(rk));
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_fields(LOG_INFO, "partitions_assigned", f, "assigned %d partition(s)", parts->cnt);
        if (coop) log_rebalance_error(rd_kafka_incremental_assign(rk, parts), "incremental_assign");
        else rd_kafka_assign(rk, parts);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        log_fields(LOG_INFO, "partitions_revoked", f, "revoking %d partition(s)", parts->cnt);
        if (s->nitems > 0 && !s->in_batch) scorer_finish_batch(s);
        for (int i = 0; i < parts->cnt; i++) prune_part_forget(s->parts, &s->nparts, parts->elems[i].partition);
        if (s->commit_attempts && !rd_kafka_assignment_lost(rk)) scorer_commit_stored(s, rk, COMMIT_REVOKE);
        if (coop) log_rebalance_error(rd_kafka_incremental_unassign(rk, parts), "incremental_unassign");
        else rd_kafka_assign(rk, NULL);
        return;
    }
    log_fields(LOG_ERROR, "rebalance_failed", f, "rebalance error: %s", rd_kafka_err2str(err));
    if (s->nitems > 0 && !s->in_batch) scorer_finish_batch(s);
    s->nparts = 0;
    rd_kafka_assign(rk, NULL); /* back to a known state; the group will rebalance again */
}

/* Restarts fetching one partition at its earliest available offset. A partition whose offset
 * reset failed stays stopped in librdkafka (seek() is refused in that state), so it is
 * unassigned and assigned again with an explicit start offset. */
static void scorer_restart_partition(scorer *s, const char *topic, int32_t partition) {
    rd_kafka_topic_partition_list_t *cur = NULL, *one = NULL;
    if (rd_kafka_assignment(s->consumer, &cur) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !rd_kafka_topic_partition_list_find(cur, topic, partition))
        goto done; /* revoked meanwhile: the next owner deals with it */
    if (cooperative(s->consumer)) {
        one = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(one, topic, partition)->offset = RD_KAFKA_OFFSET_BEGINNING;
        log_rebalance_error(rd_kafka_incremental_unassign(s->consumer, one), "incremental_unassign");
        log_rebalance_error(rd_kafka_incremental_assign(s->consumer, one), "incremental_assign");
    } else {
        /* eager: the whole assignment again, the others at their current position */
        rd_kafka_position(s->consumer, cur);
        rd_kafka_topic_partition_list_find(cur, topic, partition)->offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(s->consumer, cur);
    }
done:
    if (cur) rd_kafka_topic_partition_list_destroy(cur);
    if (one) rd_kafka_topic_partition_list_destroy(one);
}

/* Data lost before it was processed: offset `from` of topic [partition] was committed (or
 * expected next) but the broker's log now starts at `lo`. Logged as an error and counted, for
 * raw_payments and payment_outcomes alike (BRIEF.md 6: never silently skipped). */
static void scorer_report_loss(scorer *s, const char *topic, int32_t partition, int64_t from,
                               int64_t lo, int64_t hi, const char *why) {
    int64_t lost = lo > from ? lo - from : 0;
    s->stats.offsets_out_of_range++;
    s->stats.messages_lost += (uint64_t)lost;
    metric_add(s->m.offsets_lost, NULL, 1);
    metric_add(s->m.messages_lost, NULL, (double)lost);
    log_fields(LOG_ERROR, "offset_out_of_range",
               json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:s}", "topic", topic, "partition",
                         (int)partition, "offset", (json_int_t)from, "earliest", (json_int_t)lo,
                         "latest", (json_int_t)hi, "lost", (json_int_t)lost, "error", why),
               lo >= 0 ? "offset %" PRId64 " of %s [%" PRId32 "] (the next to process) is no longer "
               "on the broker: %" PRId64 " message(s) were lost before they were processed; "
               "resuming at the earliest available offset"
                       : "offset %" PRId64 " of %s [%" PRId32 "] (the next to process) was skipped "
               "and the broker could not say where its log starts: %" PRId64 " message(s) known "
               "lost, possibly more", from, topic, partition, lost);
}

/* auto.offset.reset=error makes librdkafka report, instead of silently skipping, every partition
 * whose start offset is unusable. offset < 0: the group never committed one (a new group, or a
 * new partition): start at the earliest offset, as the contract says. offset >= 0: the committed
 * offset is no longer on the broker (retention deleted it before we processed it, or the log was
 * truncated): data was lost. Logged as an error and counted; then the earliest offset too. */
static void scorer_offset_reset(scorer *s, const rd_kafka_message_t *m) {
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : s->cfg.topic;
    if (m->offset < 0) {
        log_fields(LOG_INFO, "partition_start_earliest", msg_ctx(m),
                   "no committed offset for this group: starting at the earliest offset");
    } else {
        int64_t lo = -1, hi = -1;
        rd_kafka_query_watermark_offsets(s->consumer, topic, m->partition, &lo, &hi, 2000);
        scorer_report_loss(s, topic, m->partition, m->offset, lo, hi, rd_kafka_message_errstr(m));
    }
    scorer_restart_partition(s, topic, m->partition);
}

static void scorer_consumer_event(scorer *s, rd_kafka_message_t *m) {
    if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
        scorer_offset_reset(s, m);
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return;
    s->stats.consumer_errors++;
    metric_add(s->m.consumer_errors, NULL, 1);
    json_t *f = msg_ctx(m);
    json_object_set_new(f, "error", json_string(rd_kafka_message_errstr(m)));
    if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
        char reason[512];
        rd_kafka_fatal_error(s->consumer, reason, sizeof reason);
        json_object_set_new(f, "fatal", json_string(reason));
        log_fields(LOG_ERROR, "consumer_fatal", f, "fatal consumer error: stopping");
        s->fatal = true;
        return;
    }
    if (kafka_err_unreadable(m)) { /* the next batch's commit may pass it */
        log_fields(LOG_ERROR, "consumer_message_error", f, "a message the consumer could not "
                   "read (%s): it may be skipped", rd_kafka_err2str(m->err));
        return;
    }
    log_fields(LOG_WARN, "consumer_error", f, "consumer error: %s", rd_kafka_err2str(m->err));
}

/* ---- set-up and teardown --------------------------------------------------------------------- */

static int scorer_alloc(scorer *s) {
    size_t n = (size_t)s->cfg.batch_max;
    s->ndedup = 1;
    while (s->ndedup < 2 * n) s->ndedup <<= 1;
    s->items = calloc(n, sizeof *s->items);
    s->rows = calloc(n, sizeof *s->rows);
    s->todo = calloc(n, sizeof *s->todo);
    s->old = calloc(n, sizeof *s->old);
    s->undecided = calloc(n, sizeof *s->undecided);
    s->flagged = calloc(n, sizeof *s->flagged);
    s->ps = calloc(n, sizeof *s->ps);
    s->vevents = calloc(n * RULES_ENT_COUNT, sizeof *s->vevents);
    s->feat = calloc(n, sizeof *s->feat);
    s->xout = calloc(n, sizeof *s->xout);
    s->dedup = calloc(s->ndedup, sizeof *s->dedup);
    s->vel = velocity_new();
    s->bk = buckets_new();
    s->vt = vault_new();
    s->omsgs = calloc(OUTCOMES_MAX, sizeof *s->omsgs);
    s->orow = calloc(OUTCOMES_MAX, sizeof *s->orow);
    s->oconf = calloc(OUTCOMES_MAX, sizeof *s->oconf);
    s->labelled = calloc(LABELLED_MAX, sizeof *s->labelled);
    s->pend = pending_new(fs_mono_us());
    return s->items && s->rows && s->todo && s->old && s->undecided && s->flagged && s->ps &&
                   s->vevents && s->feat && s->xout && s->dedup && s->vel && s->bk && s->vt &&
                   s->omsgs && s->orow && s->oconf && s->labelled && s->pend
               ? 0
               : -1;
}

/* librdkafka statistics (every stats_interval_ms, served by consumer_poll on our thread) of both
 * consumers: the lag per assigned partition of raw_payments and of payment_outcomes, for /metrics;
 * the total is raw_payments' alone. Partitions not assigned to this worker are set to 0 so that a
 * sum over workers stays right after a rebalance. While the loop does not poll (a batch retried
 * until PostgreSQL takes it) none arrive and the lag keeps its last value: cfg.polled shows it. */
static int scorer_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    scorer *s = opaque;
    json_t *root = json_loadb(json, len, 0, NULL), *topic, *part;
    const char *tname, *pname;
    double total = 0;
    bool payments = false; /* the statistics of the raw_payments consumer */
    char labels[300];
    (void)rk;
    json_object_foreach(json_object_get(root, "topics"), tname, topic) {
        bool main_topic = strcmp(tname, s->cfg.topic) == 0;
        payments |= main_topic;
        json_object_foreach(json_object_get(topic, "partitions"), pname, part) {
            if (strcmp(pname, "-1") == 0) continue;
            int64_t lag = kafka_stats_partition_lag(part);
            snprintf(labels, sizeof labels, "%s,%s", tname, pname);
            metric_set(s->m.lag, labels, (double)lag);
            if (main_topic) total += (double)lag;
        }
    }
    if (payments) metric_set(s->m.lag_total, NULL, total);
    json_decref(root);
    return 0; /* librdkafka frees json */
}

/* Every series whose labels are known up front exists from the start at 0: a counter that
 * appears only at its first increment hides that increment from rate() and increase(), which is
 * exactly the first data loss or dead letter an alert must see. */
static void scorer_metrics_zero(scorer *s) {
    scorer_metrics *x = &s->m;
    metric *plain[] = {x->messages, x->db_calls, x->db_retries, x->produce_retries,
                       x->delivery_failures, x->commit_failures, x->offsets_lost,
                       x->messages_lost, x->model_failures, x->consumer_errors,
                       x->outcomes_commit_failures, x->db_timeouts};
    static const char *const dlq[] = {"undecodable", "invalid_payment", "raw_personal_data",
                                      "db_rejected", "expired", "payment_conflict"};
    static const char *const odlq[] = {"undecodable", "invalid_outcome", "db_rejected",
                                       "outcome_conflict"};
    static const char *const results[] = {"ok", "failed"};
    static const char *const decisions[] = {"allow", "review", "block"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) metric_add(plain[i], NULL, 0);
    for (size_t i = 0; i < sizeof dlq / sizeof dlq[0]; i++)
        scorer_count_dead_letters(s, dlq[i], s->cfg.topic, 0);
    bool outcomes = s->cfg.outcomes_topic && s->cfg.outcomes_topic[0];
    for (size_t i = 0; outcomes && i < sizeof odlq / sizeof odlq[0]; i++)
        scorer_count_dead_letters(s, odlq[i], s->cfg.outcomes_topic, 0);
    for (size_t i = 0; i < 2; i++) metric_add(x->reloads, results[i], 0);
    for (size_t i = 0; i < 2; i++) metric_add(x->model_reloads, results[i], 0);
    for (size_t i = 0; i < 3; i++) metric_add(x->decisions, decisions[i], 0);
    metric_add(x->payments, "new", 0);
    metric_add(x->payments, "redelivered", 0);
    metric_add(x->late, "out_of_order", 0);
    metric_add(x->late, "too_late", 0);
    metric_add(x->outcomes, "stored", 0);
    metric_add(x->outcomes, "applied", 0);
    metric_add(x->outcomes, "invalid", 0);
    metric_add(x->outcomes, "expired", 0);
    metric_set(x->model_unbound, NULL, 0);
}

static void scorer_metrics_init(scorer *s) {
    static const double sizes[] = {1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
    /* end to end: a healthy pipeline is in the first buckets; a backlog shows in the last ones */
    static const double e2e[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                 2.5,   5,    10,    30,   60,  300, 900};
    metrics *m = s->cfg.metrics;
    scorer_metrics *x = &s->m;
    if (!m) return;
    x->messages = metrics_counter(m, "fs_scorer_messages_total", "raw_payments messages consumed", NULL);
    x->payments = metrics_counter(m, "fs_scorer_payments_total", "payments persisted (new) or found persisted (redelivered)", "result");
    x->decisions = metrics_counter(m, "fs_scorer_decisions_total", "decisions made, by outcome", "decision");
    x->rule_hits = metrics_counter(m, "fs_scorer_rule_hits_total", "rule hits, by rule code", "code");
    x->dead_letters = metrics_counter(m, "fs_scorer_dead_letters_total", "messages dead-lettered (delivered to dlq-topic or outcomes-dlq-topic), by reason and by the topic they were consumed from (raw_payments, payment_outcomes)", "reason,topic");
    x->batch_size = metrics_histogram(m, "fs_scorer_batch_size", "messages per batch", NULL, sizes, sizeof sizes / sizeof sizes[0]);
    x->batch_seconds = metrics_histogram(m, "fs_scorer_batch_seconds", "batch duration: decode, persist, produce, commit", NULL, METRICS_LATENCY_BUCKETS, METRICS_LATENCY_NBUCKETS);
    x->batch_phase = metrics_histogram(m, "fs_scorer_batch_phase_seconds", "batch duration by phase: decode, persist (the PostgreSQL transaction and the scoring inside it), deliver (producing the outputs until the brokers acknowledged them, retries included), commit (the offsets)", "phase", METRICS_LATENCY_BUCKETS, METRICS_LATENCY_NBUCKETS);
    x->db_seconds = metrics_histogram(m, "fs_scorer_db_seconds", "PostgreSQL time per batch transaction (kind=transaction: wall, statements: round trips)", "kind", METRICS_LATENCY_BUCKETS, METRICS_LATENCY_NBUCKETS);
    x->db_calls = metrics_counter(m, "fs_scorer_db_statements_total", "PostgreSQL round trips of batch transactions", NULL);
    x->db_retries = metrics_counter(m, "fs_scorer_db_retries_total", "batch transactions that failed and were retried", NULL);
    x->db_timeouts = metrics_counter(m, "fs_scorer_db_timeouts_total", "PostgreSQL round trips not answered within db-timeout-ms (connection dropped, work retried)", NULL);
    x->produce_retries = metrics_counter(m, "fs_scorer_produce_retries_total", "delivery rounds with failures", NULL);
    x->delivery_failures = metrics_counter(m, "fs_scorer_delivery_failures_total", "delivery reports with an error", NULL);
    x->commit_failures = metrics_counter(m, "fs_scorer_commit_failures_total", "failed offset commit attempts (a failed commit is retried until it succeeds)", NULL);
    x->offsets_lost = metrics_counter(m, "fs_scorer_offsets_out_of_range_total", "committed offsets no longer on the broker (data lost)", NULL);
    x->messages_lost = metrics_counter(m, "fs_scorer_messages_lost_total", "messages lost before they were processed (estimate)", NULL);
    x->late = metrics_counter(m, "fs_scorer_late_events_total", "payments older than the newest event time seen (out_of_order) or than the features' retention (too_late)", "kind");
    x->lag = metrics_gauge(m, "fs_scorer_consumer_lag", "consumer lag in messages per assigned partition of raw_payments and payment_outcomes (librdkafka statistics, served by the consume loop's poll: frozen while it is stuck, see fs_scorer_consumer_last_poll_age_seconds)", "topic,partition");
    x->lag_total = metrics_gauge(m, "fs_scorer_consumer_lag_assigned", "sum of this worker's consumer lag on raw_payments", NULL);
    x->consumer_errors = metrics_counter(m, "fs_scorer_consumer_errors_total", "errors the raw_payments consumer reported (logged as consumer_error; librdkafka retries them)", NULL);
    x->outcomes_commit_failures = metrics_counter(m, "fs_scorer_outcomes_commit_failures_total", "failed offset commits of the payment_outcomes consumer (its labels are stored again: idempotent)", NULL);
    x->rate = metrics_gauge(m, "fs_scorer_messages_per_second", "messages consumed per second over the last 10 s", NULL);
    x->outcomes = metrics_counter(m, "fs_scorer_outcomes_total", "outcome labels stored, applied, invalid, or expired (deleted by retention without being applied: no payment within payment-retention-days, or still pending when their payment was deleted)", "result");
    x->outcomes_pending = metrics_gauge(m, "fs_scorer_outcomes_pending", "stored outcomes not applied yet: their payment is not persisted (yet), was deleted by retention (then they expire payment-retention-days after they arrived), or never comes; counted by this worker's re-try rounds of the pending labels, refreshed at the end of each (0 until the first one ends)", NULL);
    x->reloads = metrics_counter(m, "fs_scorer_rules_reloads_total", "rules reloads (SIGHUP), by result", "result");
    x->pruned = metrics_counter(m, "fs_scorer_pruned_total", "old feature rows deleted", "table");
    x->prune_held_back = metrics_gauge(m, "fs_scorer_prune_held_back_seconds", "event time by which other workers' watermarks held this worker's last prune back (a lagging worker keeps old feature rows for everyone)", NULL);
    x->model_seconds = metrics_histogram(m, "fs_scorer_model_seconds", "model prediction per batch (one call for all its payments)", NULL, METRICS_LATENCY_BUCKETS, METRICS_LATENCY_NBUCKETS);
    x->model_reloads = metrics_counter(m, "fs_scorer_model_reloads_total", "model reloads (SIGHUP), by result", "result");
    x->model_failures = metrics_counter(m, "fs_scorer_model_failures_total", "batches the model could not score (decided by the rules alone)", NULL);
    x->model_info = metrics_gauge(m, "fs_scorer_model_info", "the model in use: one series, 1, labelled with its version (none: rules only)", "version");
    x->rules_info = metrics_gauge(m, "fs_scorer_rules_info", "the rules in use: one series, 1, labelled with their version", "version");
    x->model_unbound = metrics_gauge(m, "fs_scorer_model_features_unbound", "columns of the model in use that no feature of the scorer fills (always missing: NAN; model_features_missing names them); 0 without a model", NULL);
    x->pii_key_info = metrics_gauge(m, "fs_scorer_pii_key_info", "the pii_key_id of the last raw_payments message that had one: one series, 1", "key_id");
    x->e2e_seconds = metrics_histogram(m, "fs_scorer_e2e_latency_seconds", "from ingest accepting a payment (its ingest_ts) to its decision persisted and produced by this worker; includes the clock skew between their hosts", NULL, e2e, sizeof e2e / sizeof e2e[0]);
    scorer_metrics_zero(s);
}

/* Statistics every stats_interval_ms into scorer_stats_cb (the lag metrics); also sets s as the
 * opaque of the handle. Returns 0 or -1 (errstr). */
static int scorer_conf_stats(scorer *s, rd_kafka_conf_t *conf, char *errstr, size_t errstr_size) {
    char interval[16];
    snprintf(interval, sizeof interval, "%d", s->cfg.stats_interval_ms);
    if (s->cfg.stats_interval_ms > 0 &&
        kafka_conf_default(conf, s->cfg.props, "statistics.interval.ms", interval, errstr,
                           errstr_size))
        return -1;
    rd_kafka_conf_set_stats_cb(conf, scorer_stats_cb);
    rd_kafka_conf_set_opaque(conf, s);
    return 0;
}

/* The outcome consumer: its own group, so every label reaches exactly one worker; offsets
 * committed after the labels are stored. */
static rd_kafka_t *scorer_outcomes_new(scorer *s, char *errstr, size_t errstr_size) {
    const scorer_config *c = &s->cfg;
    rd_kafka_conf_t *conf = kafka_conf_new(c->brokers, c->props, errstr, errstr_size);
    if (!conf) return NULL;
    char cid[160];
    snprintf(cid, sizeof cid, "%s-outcomes", c->scorer_id);
    /* earliest over the shared -X properties (the raw consumer's "error" would stop a new group's
     * partitions); a loss is reported by scorer_outcome_check_offset instead */
    if (kafka_conf_lock(conf, c->props, "enable.auto.commit", "false", errstr, errstr_size) ||
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) ||
        rd_kafka_conf_set(conf, "group.id", c->outcomes_group_id, errstr, errstr_size) ||
        rd_kafka_conf_set(conf, "client.id", cid, errstr, errstr_size) ||
        rd_kafka_conf_set(conf, "partition.assignment.strategy", "range,roundrobin", errstr,
                          errstr_size) ||
        scorer_conf_stats(s, conf, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, scorer_outcomes_rebalance_cb);
    rd_kafka_t *rk = kafka_consumer_new(conf, errstr, errstr_size);
    if (!rk) return NULL;
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, c->outcomes_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, t);
    rd_kafka_topic_partition_list_destroy(t);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe %s: %s", c->outcomes_topic, rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

/* Whether client rk (named by what) had a fatal error: the worker then stops (exit 1, nothing of
 * the batch in hand committed) and is restarted with new clients; logged once as event. A fenced
 * producer fails every later produce (the batch's outputs would be retried for ever while the
 * consumer stops polling); a fenced outcome consumer would stop the labels with /ready up. */
static bool scorer_fatal_of(scorer *s, rd_kafka_t *rk, const char *event, const char *what) {
    char fatal[512];
    if (s->fatal || !rd_kafka_fatal_error(rk, fatal, sizeof fatal)) return s->fatal;
    s->fatal = true;
    log_fields(LOG_ERROR, event, json_pack("{s:s}", "error", fatal),
               "fatal %s error: stopping (the batch in hand is not committed)", what);
    return true;
}

static bool scorer_producer_fatal(scorer *s, rd_kafka_t *rk) {
    return scorer_fatal_of(s, rk, "producer_fatal", "producer");
}

/* Served from rd_kafka_flush/poll on the loop thread. */
static void scorer_producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    if (err == RD_KAFKA_RESP_ERR__FATAL && scorer_producer_fatal(opaque, rk)) return;
    log_fields(LOG_WARN, "producer_error",
               json_pack("{s:s, s:s}", "error", rd_kafka_err2name(err), "reason", reason),
               "producer error: %s", reason);
}

static rd_kafka_t *scorer_producer_new(scorer *s, char *errstr, size_t errstr_size) {
    const scorer_config *c = &s->cfg;
    rd_kafka_conf_t *conf = kafka_conf_new(c->brokers, c->props, errstr, errstr_size);
    if (!conf) return NULL;
    /* lz4: the outputs are JSON; the dev broker keeps only 5 MiB per partition (BRIEF.md 6) */
    if (kafka_conf_default(conf, c->props, "client.id", c->scorer_id, errstr, errstr_size) ||
        kafka_conf_default(conf, c->props, "compression.type", "lz4", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, scorer_dr_cb);
    rd_kafka_conf_set_error_cb(conf, scorer_producer_error_cb);
    rd_kafka_conf_set_opaque(conf, s);
    return kafka_producer_new(conf, c->props, errstr, errstr_size); /* owns conf, also on failure */
}

/* The consumer's guarantees rest on the locked properties: offsets are stored and committed by
 * scorer_commit_batch() only, and an unusable start offset is reported, never skipped. */
static rd_kafka_t *scorer_consumer_new(scorer *s, char *errstr, size_t errstr_size) {
    const scorer_config *c = &s->cfg;
    rd_kafka_conf_t *conf = kafka_conf_new(c->brokers, c->props, errstr, errstr_size);
    if (!conf) return NULL;
    if (kafka_conf_lock(conf, c->props, "group.id", c->group_id, errstr, errstr_size) ||
        kafka_conf_lock(conf, c->props, "enable.auto.commit", "false", errstr, errstr_size) ||
        kafka_conf_lock(conf, c->props, "enable.auto.offset.store", "false", errstr, errstr_size) ||
        kafka_conf_lock(conf, c->props, "auto.offset.reset", "error", errstr, errstr_size) ||
        kafka_conf_default(conf, c->props, "partition.assignment.strategy", "cooperative-sticky",
                           errstr, errstr_size) ||
        kafka_conf_default(conf, c->props, "client.id", c->scorer_id, errstr, errstr_size) ||
        /* the prefetch queue is the scorer's largest memory user (64 MB by default): a batch needs
         * far less, and a backlog waits on the broker just as well */
        kafka_conf_default(conf, c->props, "queued.max.messages.kbytes", "16384", errstr,
                           errstr_size) ||
        scorer_conf_stats(s, conf, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, scorer_rebalance_cb);
    return kafka_consumer_new(conf, errstr, errstr_size);
}

static int scorer_subscribe(scorer *s, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, s->cfg.topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(s->consumer, t);
    rd_kafka_topic_partition_list_destroy(t);
    if (err) snprintf(errstr, errstr_size, "subscribe %s: %s", s->cfg.topic, rd_kafka_err2str(err));
    return err ? -1 : 0;
}

/* The model's columns bound to the rules' features, its info metric, and the start-up record. */
static int scorer_model_start(scorer *s, char *errstr, size_t errstr_size) {
    if (!s->model) return 0;
    if (!(s->rules_file = rules_copy(s->rules))) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (scorer_rules_fit(s->rules, s->model, errstr, errstr_size) != 0 ||
        !(s->mrow = modelrow_new(s->model, s->rules, errstr, errstr_size)))
        return -1;
    metric_info_swap(s->m.model_info, NULL, model_version(s->model));
    log_fields(LOG_INFO, "model_loaded",
               json_pack("{s:s, s:s, s:I, s:i}", "file", s->cfg.model_file ? s->cfg.model_file : "",
                         "version", model_version(s->model), "features",
                         (json_int_t)model_feature_count(s->model), "model_weight",
                         rules_model_weight(s->rules)),
               "model %s (%zu features, blend.model_weight %d)", model_version(s->model),
               model_feature_count(s->model), rules_model_weight(s->rules));
    scorer_model_warnings(s);
    return 0;
}

scorer *scorer_new(const scorer_config *cfg, store *st, rules *r, model *m, char *errstr,
                   size_t errstr_size) {
    scorer *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        store_destroy(st);
        rules_destroy(r);
        model_destroy(m);
        return NULL;
    }
    s->cfg = *cfg;
    for (int i = 0; i < PRUNE_SETS; i++) s->horizon_ms[i] = PRUNE_NONE;
    s->st = st; /* st, r and m belong to s from here on */
    s->rules = r;
    s->model = m;
    const char *topics[] = {cfg->topic, cfg->processed_topic, cfg->alerts_topic, cfg->dlq_topic, NULL};
    if (scorer_alloc(s) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    if (!(s->producer = scorer_producer_new(s, errstr, errstr_size))) goto failed;
    s->max_message_bytes = kafka_max_message_bytes(s->producer);
    scorer_metrics_init(s);
    if (!(s->exp = expire_new(cfg->retention_days, cfg->retention_interval_s, cfg->metrics))) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    metric_info_swap(s->m.rules_info, NULL, rules_version(s->rules));
    if (scorer_model_start(s, errstr, errstr_size) != 0) goto failed;
    if (!(s->consumer = scorer_consumer_new(s, errstr, errstr_size))) goto failed;
    if (kafka_wait_topics(s->producer, topics, cfg->startup_timeout_ms, errstr, errstr_size) != 0)
        goto failed;
    if (scorer_subscribe(s, errstr, errstr_size) != 0) goto failed;
    if (cfg->outcomes_topic && cfg->outcomes_topic[0]) {
        const char *ot[] = {cfg->outcomes_topic, cfg->outcomes_dlq_topic, NULL};
        if (!(s->ogaps = kafka_gaps_new())) {
            snprintf(errstr, errstr_size, "out of memory");
            goto failed;
        }
        if (kafka_wait_topics(s->producer, ot, cfg->startup_timeout_ms, errstr, errstr_size) != 0 ||
            !(s->outcomes = scorer_outcomes_new(s, errstr, errstr_size)))
            goto failed;
    }
    return s;
failed:
    scorer_destroy(s);
    return NULL;
}

/* Leaves the group (the revoke callback finishes nothing: the last batch is done or abandoned)
 * and flushes whatever the producer still holds. */
static void scorer_close(scorer *s) {
    if (s->outcomes) {
        for (size_t i = 0; i < s->nomsgs; i++) rd_kafka_message_destroy(s->omsgs[i].msg);
        s->nomsgs = 0; /* not committed: consumed again by whoever owns them next */
        kafka_consumer_close(&s->outcomes);
    }
    if (s->items) scorer_clear_batch(s); /* messages go before their consumer */
    if (s->commit_attempts && s->consumer) scorer_commit_stored(s, s->consumer, COMMIT_CLOSE);
    kafka_consumer_close(&s->consumer);
    char err[512]; /* best effort: a dead worker's row ages out */
    if (store_connected(s->st) &&
        store_drop_watermark(s->st, s->cfg.scorer_id, err, sizeof err) != STORE_OK)
        log_fields(LOG_WARN, "watermark_drop_failed", json_pack("{s:s}", "error", err),
                   "this worker's watermark holds pruning back until it ages out");
    if (rd_kafka_flush(s->producer, s->cfg.shutdown_timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_msg(LOG_WARN, "producer_flush_timeout", "%d message(s) not delivered at exit",
                rd_kafka_outq_len(s->producer));
}

void scorer_stats_get(const scorer *s, scorer_stats *out) { *out = s->stats; }

void scorer_destroy(scorer *s) {
    if (!s) return;
    if (s->items) scorer_clear_batch(s); /* messages go before their consumer */
    for (size_t i = 0; s->omsgs && i < s->nomsgs; i++) rd_kafka_message_destroy(s->omsgs[i].msg);
    if (s->outcomes) rd_kafka_destroy(s->outcomes);
    if (s->consumer) rd_kafka_destroy(s->consumer);
    if (s->producer) rd_kafka_destroy(s->producer); /* before the batch arrays its reports point into */
    store_destroy(s->st);
    modelrow_destroy(s->mrow); /* before the rules and model it borrows */
    rules_destroy(s->rules);
    rules_destroy(s->rules_file);
    model_destroy(s->model);
    velocity_destroy(s->vel);
    buckets_destroy(s->bk);
    vault_destroy(s->vt);
    expire_destroy(s->exp);
    free(s->omsgs);
    free(s->orow);
    free(s->oconf);
    free(s->labelled);
    pending_destroy(s->pend);
    kafka_gaps_destroy(s->ogaps);
    free(s->items);
    free(s->rows);
    free(s->todo);
    free(s->old);
    free(s->undecided);
    free(s->flagged);
    free(s->ps);
    free(s->vevents);
    free(s->feat);
    free(s->xrows);
    free(s->xout);
    free(s->dedup);
    free(s);
}
