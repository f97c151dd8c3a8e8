/* fraudshield-replay: drives the real pipeline with a handbook transaction file (and is the
 * project's load generator).
 *
 *   fraudshield-replay --input dev.csv.gz --url http://127.0.0.1:8000 --api-key-file .run/api.key
 *       [--period 2018-04-01:2018-08-14] [--rate 5000] [--brokers HOST:PORT]
 *
 * One libevent loop: a pool of HTTP/1.1 keep-alive connections to ingest, each with one request in
 * flight; a 5 ms tick that releases payments on the open-loop schedule (rate per second; 0 = as
 * fast as ingest accepts them), posts the labels whose known_at the event clock has passed, polls
 * the latency consumer and redraws the progress line.
 *
 * Payments go in batches to POST /api/v1/payments/batch (or one by one to /api/v1/payments with
 * batch-size 1); labels one by one to POST /api/v1/payments/{id}/outcome with known_at = event
 * time + delay-days. A request answered 429, 5xx or not at all is sent again after Retry-After
 * (or a backoff); failed items of a batch are sent again on their own; rejected ones (4xx) are
 * counted and logged. A payment waits while an earlier one of its customer is unanswered in
 * another request (customer-order): each customer's payments reach the scorer in event order. The
 * mapping of a row to a payment is in replay.h.
 *
 * End-to-end latency (brokers set): a consumer assigned to every partition of processed_payments
 * at its high watermark (read before the first send) matches each decision's key (payment_id) to
 * the time its payment was sent; percentiles in the summary. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "app.h"
#include "cfg.h"
#include "fsutil.h"
#include "kafka.h"
#include "log.h"
#include "replay.h"
#include "trainset.h"

typedef struct replay_opts {
    char *input;
    char *url;
    char *api_key;
    char *api_key_file;
    int64_t batch_size;
    char *rate;
    int64_t connections;
    char *period;
    int64_t limit;
    int64_t delay_days;
    char *outcomes;
    bool final_outcomes;
    int64_t request_timeout_ms;
    int64_t max_attempts;
    char *brokers;
    char *processed_topic;
    int64_t drain_timeout_s;
    int64_t max_undecided;
    bool customer_order;
    char *progress;
    char *log_level;
} replay_opts;

#define O(field) offsetof(replay_opts, field)
static const cfg_opt replay_options[] = {
    {"input", "FS_INPUT", CFG_STRING, "", 1, 4096, O(input),
     "transaction CSV in the handbook's format, plain or gzip ('-': standard input)", false},
    {"url", "FS_URL", CFG_STRING, "http://127.0.0.1:8000", 1, 1024, O(url),
     "base URL of ingest (http only)", false},
    {"api-key", "FS_API_KEY", CFG_STRING, "", 0, 1024, O(api_key),
     "API key (scopes payments:write, outcomes:write); sent as X-API-Key", true},
    {"api-key-file", "FS_API_KEY_FILE", CFG_STRING, "", 0, 4096, O(api_key_file),
     "file holding the API key (first line), e.g. .run/api.key", false},
    {"batch-size", "FS_BATCH_SIZE", CFG_INT, "100", 1, 100000, O(batch_size),
     "payments per request to /api/v1/payments/batch (1: the single endpoint)", false},
    {"rate", "FS_RATE", CFG_STRING, "0", 1, 32, O(rate),
     "target payments per second, open loop (0: as fast as ingest accepts them)", false},
    {"connections", "FS_CONNECTIONS", CFG_INT, "32", 1, 1024, O(connections),
     "HTTP connections (one request in flight on each; labels are one request each, so most "
     "connections carry labels)", false},
    {"period", "FS_PERIOD", CFG_STRING, "", 0, 21, O(period),
     "replay only rows with TX_DATETIME in FROM:TO (days inclusive, e.g. 2018-04-01:2018-08-14)",
     false},
    {"limit", "FS_LIMIT", CFG_INT, "0", 0, INT64_MAX, O(limit),
     "stop after this many payments (0: the whole file)", false},
    {"delay-days", "FS_DELAY_DAYS", CFG_INT, "7", 0, 365, O(delay_days),
     "a label becomes known this long after its payment (event time)", false},
    {"outcomes", "FS_OUTCOMES", CFG_STRING, "all", 3, 5, O(outcomes),
     "labels to post: all (confirmed_fraud and legitimate), fraud (confirmed_fraud only), none",
     false},
    {"final-outcomes", "FS_FINAL_OUTCOMES", CFG_BOOL, "true", 0, 0, O(final_outcomes),
     "at the end of the file, also post the labels whose known_at lies beyond the last payment",
     false},
    {"request-timeout-ms", "FS_REQUEST_TIMEOUT_MS", CFG_INT, "30000", 100, 3600000,
     O(request_timeout_ms), "an HTTP request not answered within this is retried", false},
    {"max-attempts", "FS_MAX_ATTEMPTS", CFG_INT, "20", 1, 1000, O(max_attempts),
     "attempts per request before its payments or label count as failed", false},
    {"brokers", "FS_BROKERS", CFG_STRING, "", 0, 4096, O(brokers),
     "Kafka bootstrap servers: measure end-to-end latency on processed-topic (\"\": off)", false},
    {"processed-topic", "FS_PROCESSED_TOPIC", CFG_STRING, KAFKA_TOPIC_PROCESSED, 1, 249,
     O(processed_topic), "topic of the decisions", false},
    {"drain-timeout-s", "FS_DRAIN_TIMEOUT_S", CFG_INT, "60", 0, 86400, O(drain_timeout_s),
     "after the last payment, wait at most this long for the remaining decisions", false},
    {"max-undecided", "FS_MAX_UNDECIDED", CFG_INT, "0", 0, 10000000, O(max_undecided),
     "with brokers: hold new payments back while this many sent payments have no decision yet "
     "(closed loop: as fast as the whole pipeline decides; 0: off)", false},
    {"customer-order", "FS_CUSTOMER_ORDER", CFG_BOOL, "true", 0, 0, O(customer_order),
     "send a payment only once the earlier ones of its customer are answered, so that each "
     "customer's payments reach the scorer in event order (false: more requests in flight, and a "
     "customer's later payment may be counted in an earlier one's windows)", false},
    {"progress", "FS_PROGRESS", CFG_STRING, "auto", 2, 4, O(progress),
     "progress line on stderr: auto (when it is a terminal), on, off", false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 1, 16, O(log_level),
     "debug, info, warn or error", false},
    {0},
};
#undef O

static const char SUMMARY[] =
    "FraudShield replay: posts a handbook transaction file to ingest as payments (batch endpoint), "
    "feeds the labels back as outcomes after a delay in event time, paces open loop, and measures "
    "end-to-end latency on processed_payments.";

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* ---- state -------------------------------------------------------------------------------------- */

typedef enum job_kind { JOB_PAYMENTS, JOB_OUTCOME } job_kind;

/* One HTTP request and what it carries; sent again as it is on a retryable failure. */
typedef struct job {
    job_kind kind;
    size_t n;                /* payments (JOB_PAYMENTS) */
    rpl_tx *tx;              /* n rows */
    rpl_label label;         /* JOB_OUTCOME */
    int attempts;
    uint64_t seq;            /* JOB_PAYMENTS: holds its customers in replay.busy */
    int64_t not_before_us;   /* retry backoff */
    struct job *next;        /* retry queue */
} job;

typedef struct replay replay;

typedef struct slot {
    replay *r;
    struct evhttp_connection *conn;
    job *job;                /* NULL: idle */
    int64_t sent_us;
} slot;

typedef struct counters {
    uint64_t read, parse_errors, outside, clamped;
    uint64_t sent, accepted, rejected, failed;     /* payments */
    uint64_t labels_sent, labels_ok, labels_failed;
    uint64_t requests, http_errors, retries;
    uint64_t decisions;                            /* matched on processed_payments */
} counters;

struct replay {
    const replay_opts *o;
    struct event_base *base;
    struct event *tick;
    char host[256], key[1024], base_path[512];
    int port;
    slot *slots;
    size_t nslots, inflight;
    gzFile in;
    rpl_cols cols;
    rpl_tx next;             /* the next row to send (has_next) */
    bool has_next, eof;
    size_t lineno;
    int64_t from_ms, to_ms;
    double rate;
    int outcomes;            /* 0 none, 1 fraud, 2 all */
    rpl_labels labels;
    job *retry_head, *retry_tail;
    int64_t start_us, last_progress_us, end_send_us, last_decision_us;
    int64_t first_event_ms, last_event_ms;
    counters c;
    rd_kafka_t *consumer;
    rpl_idmap pending;       /* payment_id -> send time, until its decision is seen */
    rpl_busy busy;           /* customers with unfinished payments, and the request holding them */
    uint64_t job_seq;
    int64_t *lat;            /* end-to-end latencies, µs */
    size_t nlat, latcap;
    bool progress;
    int logged;              /* rejected/failed answers logged so far (the first few) */
};

/* ---- reading ------------------------------------------------------------------------------------ */

/* Reads rows until one to send (in the period) is in r->next, or the end. Returns 0 or -1 (a
 * malformed header; a malformed row is counted, logged and skipped). */
static int read_next(replay *r) {
    char line[4096], err[256];
    r->has_next = false;
    while (!r->eof && !r->has_next) {
        if (r->o->limit && (int64_t)r->c.read >= r->o->limit) break;
        if (!gzgets(r->in, line, sizeof line)) {
            r->eof = true;
            break;
        }
        if (++r->lineno == 1) {
            if (rpl_header(line, &r->cols, err, sizeof err) == 0) continue;
            log_msg(LOG_ERROR, "input_invalid", "%s: %s", r->o->input, err);
            return -1;
        }
        if (line[strspn(line, "\r\n")] == '\0') continue;
        if (rpl_parse(line, &r->cols, &r->next, err, sizeof err) != 0) {
            if (r->c.parse_errors++ < 5)
                log_msg(LOG_WARN, "row_invalid", "%s:%zu: %s (skipped)", r->o->input, r->lineno, err);
            continue;
        }
        if (r->next.time_ms < r->from_ms || r->next.time_ms >= r->to_ms) {
            r->c.outside++;
            continue;
        }
        r->c.read++;
        r->has_next = true;
    }
    return 0;
}

/* ---- jobs --------------------------------------------------------------------------------------- */

static job *payments_job(replay *r, size_t max) {
    job *j = calloc(1, sizeof *j);
    if (!j || !(j->tx = malloc(max * sizeof *j->tx))) {
        free(j);
        return NULL;
    }
    j->kind = JOB_PAYMENTS;
    j->seq = ++r->job_seq;
    while (j->n < max && r->has_next) {
        /* the customer's earlier payment is still in another request: wait for its answer */
        if (r->o->customer_order && rpl_busy_elsewhere(&r->busy, r->next.customer, j->seq)) break;
        if (rpl_busy_add(&r->busy, r->next.customer, j->seq) != 0) break;
        j->tx[j->n++] = r->next;
        r->c.clamped += r->next.clamped;
        r->last_event_ms = r->next.time_ms;
        if (!r->first_event_ms) r->first_event_ms = r->next.time_ms;
        if (read_next(r) != 0) r->eof = true;
    }
    return j;
}

static void job_free(job *j) {
    if (!j) return;
    free(j->tx);
    free(j);
}

static void retry_push(replay *r, job *j) {
    j->next = NULL;
    if (r->retry_tail) r->retry_tail->next = j;
    else r->retry_head = j;
    r->retry_tail = j;
}

/* The next request to send, or NULL: due retries first, then labels whose time has come (before
 * the payment that moves the event clock past them), then payments the schedule allows. */
static job *next_job(replay *r, int64_t now_us) {
    if (stop_requested) return NULL; /* stopping: only the requests in flight are finished */
    if (r->retry_head && r->retry_head->not_before_us <= now_us) {
        job *j = r->retry_head;
        r->retry_head = j->next;
        if (!r->retry_head) r->retry_tail = NULL;
        return j;
    }
    const rpl_label *l = rpl_labels_peek(&r->labels);
    if (l && ((r->has_next && l->known_ms <= r->next.time_ms) ||
              (!r->has_next && r->o->final_outcomes))) {
        job *j = calloc(1, sizeof *j);
        if (!j) return NULL;
        j->kind = JOB_OUTCOME;
        j->label = *l;
        rpl_labels_pop(&r->labels);
        return j;
    }
    /* a request waiting to be sent again holds newer payments back: the stream stays in event
     * order (up to the requests in flight at once) */
    if (!r->has_next || r->retry_head) return NULL;
    /* closed loop on the decisions: the backlog between ingest and the scorers stays bounded (the
     * dev broker keeps only 5 MiB per partition, so an unbounded one would lose payments) */
    if (r->consumer && r->o->max_undecided > 0 && r->pending.n > 0 &&
        r->pending.n + (size_t)r->o->batch_size > (size_t)r->o->max_undecided)
        return NULL;
    int64_t allowed = rpl_due(r->rate, r->start_us, now_us) - (int64_t)r->c.sent;
    if (allowed <= 0) return NULL;
    size_t max = (size_t)r->o->batch_size;
    if ((int64_t)max > allowed) max = (size_t)allowed;
    job *j = payments_job(r, max);
    if (j && j->n == 0) {
        job_free(j);
        return NULL;
    }
    if (j) r->c.sent += j->n;
    return j;
}

/* ---- HTTP --------------------------------------------------------------------------------------- */

static void on_response(struct evhttp_request *req, void *arg);

/* With batch-size 1, payments go to the single endpoint, one object per request. */
static bool single_endpoint(const replay *r) { return r->o->batch_size == 1; }

/* The request body of a job into buf. Returns 0 or -1 (out of memory). */
static int job_body(const replay *r, const job *j, struct evbuffer *buf) {
    char text[1024], id[37];
    bool array = !single_endpoint(r);
    if (j->kind == JOB_OUTCOME) {
        int n = rpl_outcome_json(j->label.fraud, j->label.known_ms, text, sizeof text);
        return n > 0 ? evbuffer_add(buf, text, (size_t)n) : -1;
    }
    if (array && evbuffer_add(buf, "[", 1) != 0) return -1;
    for (size_t i = 0; i < j->n; i++) {
        rpl_payment_id(&j->tx[i], id);
        int n = rpl_payment_json(&j->tx[i], id, text, sizeof text);
        if (n < 0 || (i && evbuffer_add(buf, ",", 1) != 0) ||
            evbuffer_add(buf, text, (size_t)n) != 0)
            return -1;
    }
    return array ? evbuffer_add(buf, "]", 1) : 0;
}

static int job_send(slot *s, job *j, int64_t now_us) {
    replay *r = s->r;
    char path[700], id[37];
    struct evhttp_request *req = evhttp_request_new(on_response, s);
    if (!req) return -1;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", r->host);
    evhttp_add_header(h, "Content-Type", "application/json");
    if (r->key[0]) evhttp_add_header(h, "X-API-Key", r->key);
    if (j->kind == JOB_OUTCOME)
        snprintf(path, sizeof path, "%s/api/v1/payments/%s/outcome", r->base_path,
                 j->label.payment_id);
    else
        snprintf(path, sizeof path, "%s/api/v1/payments%s", r->base_path,
                 single_endpoint(r) ? "" : "/batch");
    if (job_body(r, j, evhttp_request_get_output_buffer(req)) != 0 ||
        evhttp_make_request(s->conn, req, EVHTTP_REQ_POST, path) != 0) {
        evhttp_request_free(req); /* not sent: still ours (libevent frees it once made) */
        return -1;
    }
    s->job = j;
    s->sent_us = now_us;
    r->inflight++;
    r->c.requests++;
    for (size_t i = 0; r->consumer && j->kind == JOB_PAYMENTS && i < j->n; i++) {
        rpl_payment_id(&j->tx[i], id);
        rpl_idmap_put(&r->pending, id, now_us); /* before its decision can come back */
    }
    return 0;
}

/* Fills idle connections with work. */
static void pump(replay *r) {
    int64_t now = fs_mono_us();
    for (size_t i = 0; i < r->nslots; i++) {
        if (r->slots[i].job) continue;
        job *j = next_job(r, now);
        if (!j) return;
        if (job_send(&r->slots[i], j, now) != 0) {
            log_msg(LOG_ERROR, "send_failed", "could not send a request (out of memory?)");
            j->not_before_us = now + 1000000;
            retry_push(r, j);
            return;
        }
    }
}

/* ---- answers ------------------------------------------------------------------------------------ */

/* The first few rejected or failed answers (ingest's error bodies never echo personal data). */
static void log_answer(replay *r, const char *event, int status, const char *body) {
    if (r->logged++ >= 10) return;
    log_fields(LOG_WARN, event, json_pack("{s:i, s:s%}", "status", status, "body",
                                          body ? body : "", body ? strnlen(body, 300) : 0),
               "HTTP %d", status);
}

/* A payment that ingest accepted: its label waits for its delay. */
static void accepted(replay *r, const rpl_tx *tx) {
    r->c.accepted++;
    rpl_busy_done(&r->busy, tx->customer);
    if (tx->fraud < 0 || r->outcomes == 0 || (r->outcomes == 1 && !tx->fraud)) return;
    rpl_label l = {.known_ms = tx->time_ms + r->o->delay_days * 86400000LL, .fraud = tx->fraud};
    rpl_payment_id(tx, l.payment_id);
    if (rpl_labels_push(&r->labels, &l) != 0) r->c.labels_failed++;
}

/* A payment that will never be decided (rejected, or given up). */
static void dropped(replay *r, const rpl_tx *tx, bool rejected) {
    char id[37];
    int64_t v;
    if (rejected) r->c.rejected++;
    else r->c.failed++;
    rpl_busy_done(&r->busy, tx->customer);
    rpl_payment_id(tx, id);
    rpl_idmap_take(&r->pending, id, &v);
}

/* Sends j again after a backoff (Retry-After when given), or gives up after max-attempts. */
static void retry_later(replay *r, job *j, const char *retry_after, int64_t now_us) {
    if (++j->attempts >= r->o->max_attempts) {
        for (size_t i = 0; j->kind == JOB_PAYMENTS && i < j->n; i++) dropped(r, &j->tx[i], false);
        if (j->kind == JOB_OUTCOME) r->c.labels_failed++;
        job_free(j);
        return;
    }
    int64_t wait_ms = 100LL << (j->attempts < 6 ? j->attempts : 6);
    if (retry_after && atoi(retry_after) > 0) wait_ms = atoi(retry_after) * 1000LL;
    j->not_before_us = now_us + (wait_ms < 5000 ? wait_ms : 5000) * 1000;
    r->c.retries++;
    retry_push(r, j);
}

/* The items of a batch answer that failed (the broker had a problem with those only) go again. */
static void batch_answer(replay *r, job *j, json_t *results, int64_t now_us) {
    job *again = calloc(1, sizeof *again);
    if (again && !(again->tx = malloc(j->n * sizeof *again->tx))) {
        free(again);
        again = NULL;
    }
    for (size_t i = 0; i < j->n; i++) {
        json_t *item = json_array_get(results, i);
        const char *st = json_string_value(json_object_get(item, "status"));
        if (st && strcmp(st, "accepted") == 0) {
            accepted(r, &j->tx[i]);
        } else if (st && strcmp(st, "failed") == 0 && again) {
            again->tx[again->n++] = j->tx[i];
        } else {
            char *text = json_dumps(item, JSON_COMPACT);
            log_answer(r, "payment_rejected", 200, text);
            free(text);
            dropped(r, &j->tx[i], true);
        }
    }
    if (again && again->n) {
        again->kind = JOB_PAYMENTS;
        again->attempts = j->attempts;
        again->seq = j->seq; /* holds the customers j held */
        retry_later(r, again, NULL, now_us);
    } else {
        job_free(again);
    }
}

/* Final answers: 2xx, or a 4xx that sending again cannot fix. */
static void job_answered(replay *r, job *j, int status, const char *body, int64_t now_us) {
    if (j->kind == JOB_OUTCOME) {
        r->c.labels_sent++;
        if (status / 100 == 2) {
            r->c.labels_ok++;
        } else {
            r->c.labels_failed++;
            log_answer(r, "outcome_rejected", status, body);
        }
        return;
    }
    json_t *doc = status == 200 && !single_endpoint(r) ? json_loads(body, 0, NULL) : NULL;
    json_t *results = json_object_get(doc, "results");
    if (json_is_array(results) && json_array_size(results) == j->n) {
        batch_answer(r, j, results, now_us);
    } else if (status / 100 == 2 && single_endpoint(r)) {
        accepted(r, &j->tx[0]);
    } else {
        log_answer(r, "payments_rejected", status, body);
        for (size_t i = 0; i < j->n; i++) dropped(r, &j->tx[i], true);
    }
    json_decref(doc);
}

static void on_response(struct evhttp_request *req, void *arg) {
    slot *s = arg;
    replay *r = s->r;
    job *j = s->job;
    int64_t now = fs_mono_us();
    int status = req ? evhttp_request_get_response_code(req) : 0;
    s->job = NULL;
    r->inflight--;
    if (status == 0 || status == 429 || status >= 500) { /* nothing was stored: send it again */
        r->c.http_errors++;
        const char *ra = req ? evhttp_find_header(evhttp_request_get_input_headers(req),
                                                  "Retry-After") : NULL;
        retry_later(r, j, ra, now);
    } else {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        char *body = malloc(len + 1);
        if (body) {
            evbuffer_copyout(in, body, len);
            body[len] = '\0';
        }
        job_answered(r, j, status, body ? body : "", now);
        free(body);
        job_free(j);
    }
    pump(r);
}

/* ---- latency ------------------------------------------------------------------------------------ */

/* A consumer of every partition of the decisions topic from its current end: only decisions of
 * payments sent from now on are seen. Returns NULL with errstr. */
static rd_kafka_t *consumer_open(const replay_opts *o, const cfg_props *props, char *errstr,
                                 size_t n) {
    char group[64];
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    const char *topics[] = {o->processed_topic, NULL};
    snprintf(group, sizeof group, "fraudshield-replay-%ld", (long)getpid());
    rd_kafka_conf_t *conf = kafka_conf_new(o->brokers, props, errstr, n);
    if (!conf || kafka_conf_default(conf, props, "group.id", group, errstr, n) != 0 ||
        kafka_conf_default(conf, props, "enable.auto.commit", "false", errstr, n) != 0) {
        if (conf) rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = kafka_consumer_new(conf, errstr, n);
    if (!rk) return NULL;
    rd_kafka_topic_t *t = NULL;
    if (kafka_wait_topics(rk, topics, 30000, errstr, n) != 0 ||
        !(t = rd_kafka_topic_new(rk, o->processed_topic, NULL)) ||
        rd_kafka_metadata(rk, 0, t, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        md->topic_cnt != 1) {
        if (!errstr[0]) snprintf(errstr, n, "%s: no metadata", o->processed_topic);
        goto failed;
    }
    parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int64_t lo, hi;
        int32_t p = md->topics[0].partitions[i].id;
        if (rd_kafka_query_watermark_offsets(rk, o->processed_topic, p, &lo, &hi, 10000) != 0) {
            snprintf(errstr, n, "%s [%d]: watermarks unavailable", o->processed_topic, (int)p);
            goto failed;
        }
        rd_kafka_topic_partition_list_add(parts, o->processed_topic, p)->offset = hi;
    }
    if (rd_kafka_assign(rk, parts) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, n, "assigning %s failed", o->processed_topic);
        goto failed;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return rk;
failed:
    if (parts) rd_kafka_topic_partition_list_destroy(parts);
    if (md) rd_kafka_metadata_destroy(md);
    if (t) rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
    return NULL;
}

static void latency_add(replay *r, int64_t us) {
    if (r->nlat == r->latcap) {
        size_t cap = r->latcap ? r->latcap * 2 : 65536;
        int64_t *v = realloc(r->lat, cap * sizeof *v);
        if (!v) return;
        r->lat = v;
        r->latcap = cap;
    }
    r->lat[r->nlat++] = us;
}

/* Decisions that arrived: the key is the payment_id (docs/topics.md); duplicates find nothing. */
static void poll_decisions(replay *r, int64_t now_us) {
    char id[37];
    int64_t sent;
    for (int i = 0; i < 100000; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 0);
        if (!m) return;
        if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && r->logged++ < 10)
            log_msg(LOG_WARN, "consumer_error", "%s", rd_kafka_message_errstr(m));
        if (!m->err && m->key && m->key_len == 36) {
            memcpy(id, m->key, 36);
            id[36] = '\0';
            if (rpl_idmap_take(&r->pending, id, &sent)) {
                latency_add(r, now_us - sent);
                r->c.decisions++;
                r->last_decision_us = now_us;
            }
        }
        rd_kafka_message_destroy(m);
    }
}

/* ---- progress, end ------------------------------------------------------------------------------ */

static void progress(replay *r, int64_t now_us, bool final) {
    char day[25] = "-";
    if (!r->progress || (!final && now_us - r->last_progress_us < 1000000)) return;
    r->last_progress_us = now_us;
    double secs = (double)(now_us - r->start_us) / 1e6;
    int64_t due = rpl_due(r->rate, r->start_us, now_us);
    int64_t behind = r->rate > 0 && r->has_next ? due - (int64_t)r->c.sent : 0;
    if (r->last_event_ms) fs_time_format_rfc3339(r->last_event_ms, day);
    day[10] = '\0';
    fprintf(stderr, "\r%6.1fs sent %" PRIu64 " (%.0f/s) accepted %" PRIu64 " errors %" PRIu64
            " | labels %" PRIu64 " | behind %" PRId64 " | undecided %zu | event %s   %s",
            secs, r->c.sent, secs > 0 ? (double)r->c.accepted / secs : 0, r->c.accepted,
            r->c.rejected + r->c.failed + r->c.http_errors + r->c.labels_failed, r->c.labels_sent,
            behind, r->pending.n, day, final ? "\n" : "");
}

/* Nothing left to send or waiting for an answer. */
static bool sending_done(const replay *r) {
    if (r->inflight) return false;
    if (stop_requested) return true;
    return !r->has_next && !r->retry_head &&
           (!r->o->final_outcomes || !rpl_labels_peek(&r->labels));
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    replay *r = arg;
    int64_t now = fs_mono_us();
    if (r->consumer) poll_decisions(r, now);
    pump(r);
    progress(r, now, false);
    if (!sending_done(r)) return;
    if (!r->end_send_us) r->end_send_us = now;
    if (!r->consumer || r->pending.n == 0 || stop_requested ||
        now - r->end_send_us > r->o->drain_timeout_s * 1000000LL)
        event_base_loopbreak(r->base);
}

static double ms(int64_t us) { return (double)us / 1000.0; }

static void summary(replay *r) {
    int64_t now = fs_mono_us(), end = r->end_send_us ? r->end_send_us : now;
    double secs = (double)(end - r->start_us) / 1e6;
    double pps = secs > 0 ? (double)r->c.accepted / secs : 0;
    double dsecs = (double)(r->last_decision_us - r->start_us) / 1e6;
    char first[25] = "-", last[25] = "-";
    if (r->first_event_ms) fs_time_format_rfc3339(r->first_event_ms, first);
    if (r->last_event_ms) fs_time_format_rfc3339(r->last_event_ms, last);
    int64_t p50 = rpl_percentile(r->lat, r->nlat, 50), p90 = rpl_percentile(r->lat, r->nlat, 90);
    int64_t p99 = rpl_percentile(r->lat, r->nlat, 99), mx = rpl_percentile(r->lat, r->nlat, 100);
    printf("replay of %s\n", r->o->input);
    printf("  rows        read %" PRIu64 ", outside the period %" PRIu64 ", invalid %" PRIu64
           ", amounts 0.00 sent as 0.01: %" PRIu64 "\n", r->c.read, r->c.outside,
           r->c.parse_errors, r->c.clamped);
    printf("  payments    sent %" PRIu64 ", accepted %" PRIu64 ", rejected %" PRIu64
           ", failed %" PRIu64 "\n", r->c.sent, r->c.accepted, r->c.rejected, r->c.failed);
    printf("  labels      posted %" PRIu64 " (ok %" PRIu64 ", failed %" PRIu64 "), not posted %zu,"
           " delay %" PRId64 " days\n", r->c.labels_sent, r->c.labels_ok, r->c.labels_failed,
           r->labels.n, r->o->delay_days);
    printf("  http        requests %" PRIu64 ", errors %" PRIu64 ", retries %" PRIu64 "\n",
           r->c.requests, r->c.http_errors, r->c.retries);
    printf("  event time  %s .. %s\n", first, last);
    printf("  throughput  %.1f s, %.0f payments/s accepted%s\n", secs, pps,
           r->rate > 0 ? " (open loop)" : "");
    if (r->consumer)
        printf("  end-to-end  %" PRIu64 " of %" PRIu64 " decisions seen (%.0f/s); p50 %.1f ms, "
               "p90 %.1f ms, p99 %.1f ms, max %.1f ms\n", r->c.decisions, r->c.accepted,
               dsecs > 0 ? (double)r->c.decisions / dsecs : 0, ms(p50), ms(p90), ms(p99), ms(mx));
    printf("replay sent=%" PRIu64 " accepted=%" PRIu64 " rejected=%" PRIu64 " failed=%" PRIu64
           " labels=%" PRIu64 " labels_failed=%" PRIu64 " seconds=%.1f pps=%.0f decided=%" PRIu64
           " p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", r->c.sent, r->c.accepted,
           r->c.rejected, r->c.failed, r->c.labels_sent, r->c.labels_failed, secs, pps,
           r->c.decisions, ms(p50), ms(p90), ms(p99), ms(mx));
    fflush(stdout);
}

/* ---- set-up ------------------------------------------------------------------------------------- */

static int parse_url(replay *r, char *errstr, size_t n) {
    struct evhttp_uri *u = evhttp_uri_parse(r->o->url);
    int rc = -1;
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL, *host = u ? evhttp_uri_get_host(u) : NULL;
    if (!scheme || strcmp(scheme, "http") != 0 || !host || !*host) {
        snprintf(errstr, n, "url: an http://host[:port][/path] URL expected");
        goto done;
    }
    snprintf(r->host, sizeof r->host, "%s", host);
    r->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
    const char *path = evhttp_uri_get_path(u);
    snprintf(r->base_path, sizeof r->base_path, "%s", path ? path : "");
    size_t len = strlen(r->base_path);
    while (len && r->base_path[len - 1] == '/') r->base_path[--len] = '\0';
    rc = 0;
done:
    if (u) evhttp_uri_free(u);
    return rc;
}

static int read_key(replay *r, char *errstr, size_t n) {
    if (r->o->api_key[0]) {
        snprintf(r->key, sizeof r->key, "%s", r->o->api_key);
        return 0;
    }
    if (!r->o->api_key_file[0]) return 0; /* no key: ingest runs with auth off */
    FILE *f = fopen(r->o->api_key_file, "r");
    if (!f || !fgets(r->key, sizeof r->key, f)) {
        snprintf(errstr, n, "api-key-file %s: cannot read a key", r->o->api_key_file);
        if (f) fclose(f);
        return -1;
    }
    fclose(f);
    r->key[strcspn(r->key, " \t\r\n")] = '\0';
    return 0;
}

static int parse_opts(replay *r, char *errstr, size_t n) {
    const replay_opts *o = r->o;
    char *end;
    r->rate = strtod(o->rate, &end);
    if (*end || end == o->rate || !isfinite(r->rate) || r->rate < 0)
        return snprintf(errstr, n, "rate: a number >= 0 expected"), -1;
    r->outcomes = !strcmp(o->outcomes, "all") ? 2 : !strcmp(o->outcomes, "fraud") ? 1
                : !strcmp(o->outcomes, "none") ? 0 : -1;
    if (r->outcomes < 0) return snprintf(errstr, n, "outcomes: all, fraud or none"), -1;
    if (o->max_undecided > 0 && !o->brokers[0])
        return snprintf(errstr, n, "max-undecided: needs brokers (decisions are seen there)"), -1;
    if (strcmp(o->progress, "auto") && strcmp(o->progress, "on") && strcmp(o->progress, "off"))
        return snprintf(errstr, n, "progress: auto, on or off"), -1;
    r->progress = !strcmp(o->progress, "on") || (!strcmp(o->progress, "auto") && isatty(2));
    r->from_ms = INT64_MIN;
    r->to_ms = INT64_MAX;
    if (o->period[0] && trs_parse_period(o->period, &r->from_ms, &r->to_ms) != 0)
        return snprintf(errstr, n, "period: expected YYYY-MM-DD:YYYY-MM-DD"), -1;
    return parse_url(r, errstr, n) != 0 || read_key(r, errstr, n) != 0 ? -1 : 0;
}

static int open_slots(replay *r, char *errstr, size_t n) {
    struct timeval tv = {r->o->request_timeout_ms / 1000, (r->o->request_timeout_ms % 1000) * 1000};
    r->nslots = (size_t)r->o->connections;
    r->slots = calloc(r->nslots, sizeof *r->slots);
    if (!r->slots) return snprintf(errstr, n, "out of memory"), -1;
    for (size_t i = 0; i < r->nslots; i++) {
        r->slots[i].r = r;
        r->slots[i].conn = evhttp_connection_base_new(r->base, NULL, r->host, (unsigned short)r->port);
        if (!r->slots[i].conn) return snprintf(errstr, n, "cannot create a connection"), -1;
        evhttp_connection_set_timeout_tv(r->slots[i].conn, &tv);
        evhttp_connection_set_retries(r->slots[i].conn, 0); /* our retry_later() decides */
    }
    return 0;
}

static int open_input(replay *r, char *errstr, size_t n) {
    r->in = strcmp(r->o->input, "-") == 0 ? gzdopen(0, "rb") : gzopen(r->o->input, "rb");
    if (!r->in) return snprintf(errstr, n, "%s: cannot open", r->o->input), -1;
    gzbuffer(r->in, 1 << 17);
    if (read_next(r) != 0) return snprintf(errstr, n, "%s: invalid header", r->o->input), -1;
    if (r->lineno == 0) return snprintf(errstr, n, "%s: empty", r->o->input), -1;
    return 0;
}

static void replay_free(replay *r) {
    for (size_t i = 0; r->slots && i < r->nslots; i++) {
        if (r->slots[i].conn) evhttp_connection_free(r->slots[i].conn);
        job_free(r->slots[i].job);
    }
    free(r->slots);
    while (r->retry_head) {
        job *j = r->retry_head;
        r->retry_head = j->next;
        job_free(j);
    }
    if (r->tick) event_free(r->tick);
    if (r->base) event_base_free(r->base);
    if (r->in) gzclose(r->in);
    if (r->consumer) {
        rd_kafka_consumer_close(r->consumer);
        rd_kafka_destroy(r->consumer);
    }
    rpl_labels_free(&r->labels);
    rpl_idmap_free(&r->pending);
    rpl_busy_free(&r->busy);
    free(r->lat);
}

static int run(const replay_opts *o, const cfg_props *props) {
    char errstr[1024] = "";
    replay r = {.o = o};
    struct timeval every = {0, 5000};
    int rc = 1;
    if (parse_opts(&r, errstr, sizeof errstr) != 0 || open_input(&r, errstr, sizeof errstr) != 0)
        goto done;
    if (!(r.base = event_base_new()) || open_slots(&r, errstr, sizeof errstr) != 0) goto done;
    if (o->brokers[0] && !(r.consumer = consumer_open(o, props, errstr, sizeof errstr))) goto done;
    errstr[0] = '\0'; /* kafka_wait_topics leaves a message behind even when it succeeds */
    r.tick = event_new(r.base, -1, EV_PERSIST, on_tick, &r);
    if (!r.tick || event_add(r.tick, &every) != 0) goto done;
    r.start_us = r.last_progress_us = fs_mono_us();
    log_msg(LOG_INFO, "replay_started", "replaying %s to %s (%d connections, batches of %d)",
            o->input, o->url, (int)o->connections, (int)o->batch_size);
    pump(&r);
    event_base_dispatch(r.base);
    progress(&r, fs_mono_us(), true);
    summary(&r);
    rc = r.c.rejected || r.c.failed || r.c.labels_failed || r.c.parse_errors || stop_requested;
done:
    if (errstr[0]) log_msg(LOG_ERROR, "replay_failed", "%s", errstr);
    replay_free(&r);
    return rc;
}

int main(int argc, char **argv) {
    replay_opts o = {0};
    cfg_props props = {0};
    int rc = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    cfg_result cr = app_configure("replay", replay_options, &o, &props, argc, argv,
                                  "fraudshield-replay", SUMMARY);
    if (cr == CFG_OK) rc = run(&o, &props);
    else if (cr == CFG_HELP) rc = 0;
    cfg_free(replay_options, &o, &props);
    return rc;
}
