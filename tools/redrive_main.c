/* fraudshield-redrive: produces the dead letters of a DLQ back to the topic they came from, once
 * their cause is fixed (docs/topics.md, "Re-driving dead letters").
 *
 *   fraudshield-redrive [--dlq-topic raw_payments.dlq] [--reason db_rejected,...] [--to TOPIC]
 *       [--dry-run] [--max-messages N] [--brokers HOST:PORT] [-X name=value]
 *
 * The DLQ is read with the tool's own consumer group from the group's committed offsets (the
 * earliest for a new group) up to the end of every partition, in batches: each message is decided
 * (tools/redrive.h: reason filter, target, redrive limit), the ones that go are produced with the
 * same key and value bytes and rewritten headers, every delivery report is awaited, and only then
 * are the batch's DLQ offsets committed (skipped messages included: the group moves past what it
 * has decided). A failed delivery stops the run with exit 1 before that commit, so nothing past
 * it is committed and the next run reads the batch again (at-least-once: the pipeline drops
 * duplicates by payment_id / outcome_id). --dry-run reads and decides the same way and produces
 * and commits nothing. The summary goes to stdout; logs never carry message values. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "cfg.h"
#include "fsutil.h"
#include "kafka.h"
#include "log.h"
#include "redrive.h"

typedef struct redrive_opts {
    char *brokers;
    char *dlq_topic;
    char *group_id;
    char *to;
    char *reason;
    int64_t max_redrives;
    bool dry_run;
    int64_t max_messages;
    int64_t batch_size;
    int64_t start_timeout_s;
    char *log_level;
} redrive_opts;

#define O(field) offsetof(redrive_opts, field)
static const cfg_opt redrive_options[] = {
    {"brokers", "FS_BROKERS", CFG_STRING, "localhost:9092", 1, 4096, O(brokers),
     "Kafka bootstrap servers (host:port,...)", false},
    {"dlq-topic", "FS_DLQ_TOPIC", CFG_STRING, KAFKA_TOPIC_DLQ, 1, 249, O(dlq_topic),
     "dead-letter topic to re-drive (raw_payments.dlq, payment_outcomes.dlq)", false},
    {"group-id", "FS_GROUP_ID", CFG_STRING, "fraudshield-redrive", 1, 255, O(group_id),
     "consumer group of the re-drive: its committed offsets say where the next run starts (a "
     "pipeline's own group is refused)", false},
    {"to", "FS_TO", CFG_STRING, "", 0, 249, O(to),
     "target topic (\"\": each message's source_topic header; messages without one are skipped "
     "as no_source)", false},
    {"reason", "FS_REASON", CFG_STRING, "", 0, 1024, O(reason),
     "comma-separated dlq_reason values to re-drive (\"\": all but expired, which the scorer "
     "would dead-letter again, or store twice if payment-retention-days was raised: name it only "
     "for payments never decided); the others are skipped and committed past", false},
    {"max-redrives", "FS_MAX_REDRIVES", CFG_INT, "3", 1, 1000, O(max_redrives),
     "a message whose redrive_count header has reached this is not produced again (a poison "
     "message cannot loop)", false},
    {"dry-run", "FS_DRY_RUN", CFG_BOOL, "false", 0, 0, O(dry_run),
     "read to the end and print the counts by reason and target; produce and commit nothing",
     false},
    {"max-messages", "FS_MAX_MESSAGES", CFG_INT, "0", 0, INT64_MAX, O(max_messages),
     "stop after reading this many dead letters (0: up to the end of every partition)", false},
    {"batch-size", "FS_BATCH_SIZE", CFG_INT, "500", 1, 100000, O(batch_size),
     "dead letters per batch: produced, delivered, then their DLQ offsets committed", false},
    {"start-timeout-s", "FS_START_TIMEOUT_S", CFG_INT, "60", 1, 3600, O(start_timeout_s),
     "how long to wait for the topics and for the group to assign the DLQ's partitions", false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 1, 16, O(log_level),
     "debug, info, warn or error", false},
    {0},
};
#undef O

static const char SUMMARY[] =
    "FraudShield redrive: produces the dead letters of a DLQ back to their source topic (same key "
    "and value, original headers plus redrive_count), committing the DLQ offsets only once every "
    "message of a batch is delivered.";

/* The pipeline's own groups: a re-drive joining one (e.g. run with a scorer's FS_GROUP_ID in the
 * environment) would take partitions away from the workers and commit DLQ offsets in their name. */
static const char *const PIPELINE_GROUPS[] = {"fraudshield-scorer", "fraudshield-outcomes",
                                              "fraudshield-alerter", NULL};

enum { OUT_NONE, OUT_INFLIGHT, OUT_DONE, OUT_FAILED };

typedef struct item {
    rd_kafka_message_t *msg; /* owned until the batch ends */
    redrive_decision d;
    int state;               /* OUT_*: set by the delivery report */
} item;

#define KNOWN_TOPICS 16

typedef struct run {
    const redrive_opts *o;
    redrive_plan *plan;
    redrive_tally *tally;    /* committed batches only (dry run: every batch read) */
    rd_kafka_t *consumer, *producer;
    item *items;             /* the batch: n of batch-size */
    size_t n;
    uint8_t *eof;            /* per partition: at the end, no message since */
    size_t eof_cap;
    bool assigned;           /* the group assigned partitions at least once */
    uint64_t consumed;       /* messages read (for max-messages) */
    char failure[256];       /* the first failed delivery's error */
    uint64_t failures;       /* failed deliveries */
    char known[KNOWN_TOPICS][REDRIVE_TOPIC_MAX]; /* targets seen to exist */
    size_t nknown;
} run;

/* ---- partition ends ----------------------------------------------------------------------------- */

static void eof_set(run *r, int32_t p, bool at_end) {
    if (p < 0) return;
    if ((size_t)p >= r->eof_cap) {
        size_t cap = (size_t)p + 64;
        uint8_t *e = realloc(r->eof, cap);
        if (!e) return; /* the flag stays unset: the run just does not end on this partition yet */
        memset(e + r->eof_cap, 0, cap - r->eof_cap);
        r->eof = e;
        r->eof_cap = cap;
    }
    r->eof[p] = at_end;
}

/* True when partitions are assigned and every one has reported its end since its last message. */
static bool at_end(run *r) {
    rd_kafka_topic_partition_list_t *a = NULL;
    bool end = false;
    if (rd_kafka_assignment(r->consumer, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a->cnt > 0) {
        end = true;
        for (int i = 0; i < a->cnt; i++) {
            int32_t p = a->elems[i].partition;
            if (p < 0 || (size_t)p >= r->eof_cap || !r->eof[p]) end = false;
        }
    }
    if (a) rd_kafka_topic_partition_list_destroy(a);
    return end;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    run *r = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* an end seen before a revocation says nothing about the offsets fetched from now on */
        for (int i = 0; i < parts->cnt; i++) eof_set(r, parts->elems[i].partition, false);
        r->assigned = true;
        log_msg(LOG_INFO, "partitions_assigned", "assigned %d partition(s)", parts->cnt);
        if (coop) e = rd_kafka_incremental_assign(rk, parts);
        else rd_kafka_assign(rk, parts);
    } else {
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            log_msg(LOG_INFO, "partitions_revoked", "revoking %d partition(s)", parts->cnt);
        else
            log_msg(LOG_ERROR, "rebalance_failed", "%s: unassigning", rd_kafka_err2str(err));
        if (coop) e = rd_kafka_incremental_unassign(rk, parts);
        else rd_kafka_assign(rk, NULL);
    }
    if (e) {
        log_msg(LOG_ERROR, "rebalance_error", "%s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

/* ---- reading ------------------------------------------------------------------------------------ */

/* Consumer errors that waiting will not cure; the others are logged and librdkafka retries. */
static bool consumer_error_fatal(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR__FATAL || err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
           err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
           err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
           err == RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED;
}

/* Fills the batch: up to batch-size messages, fewer when every partition is at its end, when
 * max-messages is reached or when a stop is requested (*end is then set). Returns 0 or -1. */
static int read_batch(run *r, bool *end, char *errstr, size_t len) {
    int64_t deadline = fs_mono_us() + r->o->start_timeout_s * 1000000;
    bool check_end = false;
    while (r->n < (size_t)r->o->batch_size) {
        if (atomic_load(&app_stop_requested) ||
            (r->o->max_messages && r->consumed >= (uint64_t)r->o->max_messages) ||
            (check_end && at_end(r)))
            return *end = true, 0;
        if (!r->assigned && fs_mono_us() > deadline)
            return snprintf(errstr, len, "group %s was assigned no partition of %s within %" PRId64
                            " s (another fraudshield-redrive with this group running?)",
                            r->o->group_id, r->o->dlq_topic, r->o->start_timeout_s), -1;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 200);
        check_end = !m || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eof_set(r, m->partition, true);
        } else if (m->err) {
            snprintf(errstr, len, "consuming %s: %s", r->o->dlq_topic, rd_kafka_message_errstr(m));
            if (consumer_error_fatal(m->err)) return rd_kafka_message_destroy(m), -1;
            log_msg(LOG_WARN, "consumer_error", "%s", errstr);
            errstr[0] = '\0';
        } else {
            eof_set(r, m->partition, false);
            r->items[r->n++] = (item){.msg = m}; /* the batch owns m now */
            r->consumed++;
            continue;
        }
        rd_kafka_message_destroy(m);
    }
    return 0;
}

/* ---- deciding ----------------------------------------------------------------------------------- */

/* Where a skipped message is, so an operator can find it; never its value or personal data (the
 * payment_id header only when it is a UUID). */
static void log_skipped(const item *it, log_level level, const char *event, const char *why) {
    const rd_kafka_message_t *m = it->msg;
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0;
    char id[37] = "";
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(h, "payment_id", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR && v &&
        n == 36) {
        memcpy(id, v, 36);
        if (!fs_uuid_valid(id)) id[0] = '\0';
    }
    log_fields(level, event,
               json_pack("{s:s, s:i, s:I, s:s, s:I, s:s?}", "topic", rd_kafka_topic_name(m->rkt),
                         "partition", (int)m->partition, "offset", (json_int_t)m->offset,
                         "dlq_reason", it->d.reason, "redrive_count", (json_int_t)it->d.redrive_count,
                         "payment_id", id[0] ? id : NULL),
               "%s", why);
}

static void decide_batch(run *r) {
    for (size_t i = 0; i < r->n; i++) {
        item *it = &r->items[i];
        rd_kafka_headers_t *h = NULL;
        if (rd_kafka_message_headers(it->msg, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) h = NULL;
        redrive_decide(r->plan, h, &it->d); /* h stays the message's */
        if (it->d.verdict == REDRIVE_MAX_REDRIVES)
            log_skipped(it, LOG_WARN, "redrive_limit", "re-driven too often already: not produced "
                        "again (max-redrives)");
        else if (it->d.verdict == REDRIVE_NO_SOURCE)
            log_skipped(it, LOG_WARN, "redrive_no_source",
                        "no usable source_topic header and no --to: skipped");
        else if (it->d.verdict == REDRIVE_NO_VALUE)
            log_skipped(it, LOG_WARN, "redrive_no_value", "the dead letter does not carry the "
                        "message (dlq_value_omitted: it was too large); read it from source_topic "
                        "at source_offset while retained: skipped");
        else if (it->d.verdict == REDRIVE_FILTERED)
            log_skipped(it, LOG_DEBUG, "redrive_filtered", "dlq_reason not selected: skipped");
    }
}

/* True when the cluster has topic (with partitions). Asks for every topic's metadata rather than
 * this one's: a request naming a missing topic may create it on brokers that auto-create. */
static bool topic_exists(rd_kafka_t *rk, const char *topic, int timeout_ms) {
    const struct rd_kafka_metadata *md = NULL;
    bool found = false;
    if (rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, topic) && !md->topics[i].err && md->topics[i].partition_cnt > 0)
            found = true;
    rd_kafka_metadata_destroy(md);
    return found;
}

/* Every target of the batch exists, checked before anything of it is produced: librdkafka would
 * otherwise hold the messages for message.timeout.ms and fail them one by one. */
static int check_targets(run *r, char *errstr, size_t len) {
    for (size_t i = 0; i < r->n; i++) {
        const char *t = r->items[i].d.target;
        bool known = r->items[i].d.verdict != REDRIVE_PRODUCE;
        for (size_t k = 0; !known && k < r->nknown; k++) known = !strcmp(r->known[k], t);
        if (known) continue;
        if (!topic_exists(r->consumer, t, 10000))
            return snprintf(errstr, len, "target topic %s does not exist (or no metadata within "
                            "10 s); use --to to name another", t), -1;
        if (r->nknown < KNOWN_TOPICS) snprintf(r->known[r->nknown++], REDRIVE_TOPIC_MAX, "%s", t);
    }
    return 0;
}

/* ---- producing and committing ------------------------------------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    run *r = opaque;
    item *it = m->_private;
    (void)rk;
    it->state = m->err ? OUT_FAILED : OUT_DONE;
    if (!m->err || r->failures++ >= 5) return; /* the first few are enough to see the cause */
    if (!r->failure[0])
        snprintf(r->failure, sizeof r->failure, "delivery to %s failed: %s",
                 rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
    log_fields(LOG_ERROR, "delivery_failed",
               json_pack("{s:s, s:s, s:i, s:I}", "topic", rd_kafka_topic_name(m->rkt), "error",
                         rd_kafka_err2str(m->err), "dlq_partition", (int)it->msg->partition,
                         "dlq_offset", (json_int_t)it->msg->offset),
               "a re-driven message was not delivered: stopping, its batch is not committed");
}

/* Queues one message: the dead letter's key and value bytes (copied) with the rewritten headers. */
static int produce_one(run *r, item *it, char *errstr, size_t len) {
    const rd_kafka_message_t *m = it->msg;
    rd_kafka_headers_t *orig = NULL, *h;
    rd_kafka_resp_err_t err;
    if (rd_kafka_message_headers(m, &orig) != RD_KAFKA_RESP_ERR_NO_ERROR) orig = NULL;
    h = redrive_headers(orig, it->d.redrive_count, fs_now_ms());
    for (;;) {
        err = rd_kafka_producev(r->producer, RD_KAFKA_V_TOPIC(it->d.target),
                                RD_KAFKA_V_KEY(m->key, m->key_len),
                                RD_KAFKA_V_VALUE(m->payload, m->len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                                RD_KAFKA_V_OPAQUE(it), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) break;
        rd_kafka_poll(r->producer, 100); /* serve delivery reports to make room */
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) { /* h belongs to the message now */
        it->state = OUT_INFLIGHT;
        return 0;
    }
    rd_kafka_headers_destroy(h); /* refused: librdkafka took nothing */
    snprintf(errstr, len, "producing to %s: %s", it->d.target, rd_kafka_err2str(err));
    return -1;
}

/* Produces the batch's messages and waits for every delivery report. A stop request waits 10 s
 * more, then purges: purged messages report failure, so the batch is not committed. */
static int produce_batch(run *r, char *errstr, size_t len) {
    int64_t give_up_us = 0;
    int rc = 0;
    for (size_t i = 0; i < r->n && rc == 0; i++)
        if (r->items[i].d.verdict == REDRIVE_PRODUCE) rc = produce_one(r, &r->items[i], errstr, len);
    while (rd_kafka_outq_len(r->producer) > 0) { /* also when queuing failed: reports still come */
        rd_kafka_flush(r->producer, 100);
        if (!atomic_load(&app_stop_requested)) continue;
        if (!give_up_us) give_up_us = fs_mono_us() + 10000000;
        if (fs_mono_us() < give_up_us) continue;
        rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(r->producer, 2000);
        break;
    }
    for (size_t i = 0; i < r->n && rc == 0; i++)
        if (r->items[i].d.verdict == REDRIVE_PRODUCE && r->items[i].state != OUT_DONE) {
            snprintf(errstr, len, "%" PRIu64 " deliveries failed; the first: %s", r->failures,
                     r->failure[0] ? r->failure : "not confirmed");
            rc = -1;
        }
    return rc;
}

/* Commits, per partition, the offset after the batch's last message. Retried a few times: the
 * messages are delivered, and an uncommitted batch would only be re-driven again next run. */
static int commit_batch(run *r, char *errstr, size_t len) {
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (size_t i = 0; i < r->n; i++) kafka_offsets_add(offs, r->items[i].msg);
    for (int attempt = 1; attempt <= 3; attempt++) {
        if (!(err = rd_kafka_commit(r->consumer, offs, 0 /* synchronous */))) break;
        log_msg(LOG_WARN, "commit_failed", "attempt %d: %s", attempt, rd_kafka_err2str(err));
        if (attempt < 3) nanosleep(&(struct timespec){1, 0}, NULL);
    }
    if (err)
        snprintf(errstr, len, "committing the DLQ offsets failed (%s): the next run re-drives this "
                 "batch again (duplicates are dropped downstream by id)", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(offs);
    return err ? -1 : 0;
}

/* Decides, produces, awaits, commits (not in a dry run), then counts and frees the batch. */
static int process_batch(run *r, char *errstr, size_t len) {
    int rc = 0;
    size_t produced = 0;
    if (r->n == 0) return 0; /* nothing to commit (an empty commit is an error in librdkafka) */
    decide_batch(r);
    rc = check_targets(r, errstr, len);
    if (rc == 0 && !r->o->dry_run)
        rc = produce_batch(r, errstr, len) != 0 || commit_batch(r, errstr, len) != 0 ? -1 : 0;
    for (size_t i = 0; i < r->n; i++) {
        if (rc == 0 && redrive_tally_add(r->tally, &r->items[i].d, 1) != 0) {
            snprintf(errstr, len, "out of memory");
            rc = -1;
        }
        produced += r->items[i].d.verdict == REDRIVE_PRODUCE;
        rd_kafka_message_destroy(r->items[i].msg);
    }
    if (rc == 0)
        log_msg(LOG_INFO, r->o->dry_run ? "batch_read" : "batch_committed",
                "%zu dead letter(s): %zu %s, %zu skipped", r->n, produced,
                r->o->dry_run ? "would be produced" : "produced", r->n - produced);
    r->n = 0;
    return rc;
}

/* ---- set-up ------------------------------------------------------------------------------------- */

static rd_kafka_t *consumer_new(run *r, const cfg_props *props, char *errstr, size_t len) {
    const redrive_opts *o = r->o;
    rd_kafka_conf_t *conf = kafka_conf_new(o->brokers, props, errstr, len);
    if (!conf) return NULL;
    /* offsets move only in commit_batch(), after the deliveries; the run ends on partition EOF */
    if (kafka_conf_lock(conf, props, "group.id", o->group_id, errstr, len) ||
        kafka_conf_lock(conf, props, "enable.auto.commit", "false", errstr, len) ||
        kafka_conf_lock(conf, props, "enable.auto.offset.store", "false", errstr, len) ||
        kafka_conf_lock(conf, props, "enable.partition.eof", "true", errstr, len) ||
        kafka_conf_default(conf, props, "auto.offset.reset", "earliest", errstr, len) ||
        kafka_conf_default(conf, props, "partition.assignment.strategy", "range,roundrobin",
                           errstr, len) ||
        kafka_conf_default(conf, props, "client.id", "fraudshield-redrive", errstr, len)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_opaque(conf, r);
    return kafka_consumer_new(conf, errstr, len);
}

static rd_kafka_t *producer_new(run *r, const cfg_props *props, char *errstr, size_t len) {
    rd_kafka_conf_t *conf = kafka_conf_new(r->o->brokers, props, errstr, len);
    if (!conf) return NULL;
    if (kafka_conf_default(conf, props, "compression.type", "lz4", errstr, len) ||
        kafka_conf_default(conf, props, "client.id", "fraudshield-redrive", errstr, len)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, r);
    return kafka_producer_new(conf, props, errstr, len); /* owns conf, also on failure */
}

static int subscribe(run *r, char *errstr, size_t len) {
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, r->o->dlq_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(r->consumer, t);
    rd_kafka_topic_partition_list_destroy(t);
    if (err) snprintf(errstr, len, "subscribe %s: %s", r->o->dlq_topic, rd_kafka_err2str(err));
    return err ? -1 : 0;
}

/* The DLQ (and --to) exist. Metadata requests only: rd_kafka_poll() is not allowed on a consumer
 * whose queue was redirected (rd_kafka_poll_set_consumer), so kafka_wait_topics() is not used. */
static int wait_topics(run *r, char *errstr, size_t len) {
    int64_t deadline = fs_mono_us() + r->o->start_timeout_s * 1000000;
    const char *missing = NULL;
    do {
        missing = !topic_exists(r->consumer, r->o->dlq_topic, 5000) ? r->o->dlq_topic
                  : r->o->to[0] && !topic_exists(r->consumer, r->o->to, 5000) ? r->o->to : NULL;
        if (!missing) return 0;
        nanosleep(&(struct timespec){0, 500000000}, NULL);
    } while (fs_mono_us() < deadline);
    snprintf(errstr, len, "topic %s does not exist on the cluster (or no metadata within %" PRId64
             " s)", missing, r->o->start_timeout_s);
    return -1;
}

static int setup(run *r, const cfg_props *props, char *errstr, size_t len) {
    for (const char *const *g = PIPELINE_GROUPS; *g; g++)
        if (!strcmp(r->o->group_id, *g))
            return snprintf(errstr, len, "group-id: %s is a pipeline's own group; the re-drive needs "
                            "its own (FS_GROUP_ID from a worker's environment?)", *g), -1;
    r->plan = redrive_plan_new(r->o->reason, r->o->to, r->o->dlq_topic, r->o->max_redrives,
                               errstr, len);
    r->tally = redrive_tally_new();
    r->items = calloc((size_t)r->o->batch_size, sizeof *r->items);
    if (!r->plan) return -1;
    if (!r->tally || !r->items) return snprintf(errstr, len, "out of memory"), -1;
    if (!(r->consumer = consumer_new(r, props, errstr, len))) return -1;
    if (!r->o->dry_run && !(r->producer = producer_new(r, props, errstr, len))) return -1;
    if (wait_topics(r, errstr, len) != 0) return -1;
    return subscribe(r, errstr, len);
}

static void run_free(run *r) {
    for (size_t i = 0; i < r->n; i++) rd_kafka_message_destroy(r->items[i].msg);
    if (r->consumer) kafka_consumer_close(&r->consumer); /* nothing to commit: auto-commit off */
    if (r->producer) {
        rd_kafka_flush(r->producer, 10000); /* empty unless a failure stopped the run */
        rd_kafka_destroy(r->producer);
    }
    redrive_plan_destroy(r->plan);
    redrive_tally_destroy(r->tally);
    free(r->items);
    free(r->eof);
}

static int redrive(const redrive_opts *o, const cfg_props *props) {
    char errstr[1024] = "";
    run r = {.o = o};
    bool end = false, started = false;
    int rc = 1;
    if (setup(&r, props, errstr, sizeof errstr) != 0) goto done;
    started = true;
    log_msg(LOG_INFO, "redrive_started", "%s %s (group %s) to %s%s", o->dry_run ? "dry run of" :
            "re-driving", o->dlq_topic, o->group_id, o->to[0] ? o->to : "each source_topic",
            o->reason[0] ? ", reasons filtered" : "");
    while (!end) {
        if (read_batch(&r, &end, errstr, sizeof errstr) != 0 ||
            process_batch(&r, errstr, sizeof errstr) != 0)
            goto done;
    }
    if (atomic_load(&app_stop_requested))
        snprintf(errstr, sizeof errstr, "stopped by a signal before the end");
    else rc = 0;
done:
    if (started) redrive_tally_print(r.tally, o->dry_run, stdout);
    fflush(stdout);
    if (rc) log_msg(LOG_ERROR, "redrive_failed", "%s", errstr[0] ? errstr : "failed");
    run_free(&r);
    return rc;
}

int main(int argc, char **argv) {
    redrive_opts o = {0};
    cfg_props props = {0};
    int rc = 1;
    app_signals_install();
    cfg_result cr = app_configure("redrive", redrive_options, &o, &props, argc, argv,
                                  "fraudshield-redrive", SUMMARY);
    if (cr == CFG_OK) rc = redrive(&o, &props);
    else if (cr == CFG_HELP) rc = 0;
    cfg_free(redrive_options, &o, &props);
    return rc;
}
