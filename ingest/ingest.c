/* ingest: the HTTP data path, top to bottom.
 *
 *   on_request()            route (404 / 405), authenticate (401 / 403 / 429), call the handler
 *   authenticate()          API key -> cache hit: microseconds; miss: Argon2 on a worker, the
 *                           request waits (auth_done) while the loop serves others
 *   handle_post_payment()   415 / 413 / Idempotency-Key / 400  -> job of one item
 *   handle_post_batch()     array or NDJSON -> job of n items, one reply when all are settled
 *   handle_shopify()        HMAC over the raw body first (401), then the order -> job of one item
 *   handle_post_outcome()   label -> payment_outcomes (202 from its delivery report)
 *   handle_get_payment()    PostgreSQL (asynchronous libpq, pgread.c): decided / pending / 404;
 *                           payments:read sees the key's own payments only (read_owner)
 *
 *   item_start()            422 validation -> pseudonymize: cached digests on the spot, misses on
 *                           a worker (digest_run / digest_done) -> item_produce()
 *   on_delivery()           the delivery report settles the item: accepted or failed
 *   job_settle()            the job's last item settled: reply (202 / 422 / 503, or the batch's
 *                           per-item results) and free the job
 *
 * Everything here runs on the one event-loop thread, so nothing needs a lock; the worker threads
 * only ever see a digest_task or an auth_wait, handed to them whole and handed back by
 * workers.c. A request that waits (for a worker, a delivery report or PostgreSQL) is parked in its
 * connection's slot (conns.c), which tells us if the client goes away meanwhile: we then finish the
 * work silently and free it. Who owns what:
 *   job    from job_new() until job_settle() frees it, once no item is digesting or producing;
 *   item   its Kafka message's opaque from a successful producev until on_delivery();
 *   task   the worker pool's from workers_submit() until digest_done(). */
#include "ingest.h"
#include "geoip.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "batch.h"
#include "conns.h"
#include "fsutil.h"
#include "httpreq.h"
#include "jsonfast.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "pay.h"
#include "pgread.h"
#include "ratelimit.h"
#include "recent.h"
#include "workers.h"

#define INGEST_LOG_PATH_MAX 128
#define INGEST_PATH_ID_MAX 64
/* libevent's own body limit (evhttp_set_max_body_size) sits well above ours so that clients
 * normally get our JSON 413 (with X-Request-Id); past it libevent answers on its own: a 413 with
 * an HTML body and no X-Request-Id, then closes the connection, and on_request() never sees it. */
#define INGEST_HARD_BODY_FACTOR 2
#define INGEST_ALL_METHODS 0x1ff /* every EVHTTP_REQ_*: our JSON 405 for each (a method evhttp does
                                   * not know is its own 501, before on_request()) */
#define INGEST_DRAIN_GRACE_US 100000 /* lets the last replies leave the socket buffers */
#define INGEST_REASON_MAX 500        /* outcome reason, bytes */
#define INGEST_BIG_MAX 16            /* numbers too large for jansson in one body; more: 400 */
#define INGEST_MESSAGE_TIMEOUT_MAX_MS 300000 /* message.timeout.ms: a request waits that long at most */
/* The 503 shutting_down messages of what the drain timeout cut short (drain_answer). */
#define DRAIN_NOT_SENT "this instance shut down before the message was stored; retry with the same " \
                       "Idempotency-Key (or payment_id)"
#define DRAIN_UNKNOWN "this instance shut down before the broker confirmed the message, which may or " \
                      "may not be stored: retry with the same Idempotency-Key (or payment_id; a " \
                      "duplicate is absorbed)"
#define OUTCOME_SCHEMA_VERSION 1 /* payment_outcomes (payment-outcome.v1.json): body and header */
#define STR_(x) #x
#define STR(x) STR_(x)

typedef struct ingest_metrics {
    metrics *reg;
    metric *requests, *latency, *delivery_latency, *in_flight, *queue_depth, *delivery_failures, *auth_failures,
        *rate_limited, *key_verifications, *payments, *connections, *digest_hits, *digest_misses, *digest_ratio,
        *key_hits, *key_misses, *key_ratio, *workers_pending, *read_connections, *ready,
        *pii_key_info, *clients_gone;
    uint64_t last_digest_hits, last_digest_misses, last_key_hits, last_key_misses;
    uint64_t retired_digest_hits, retired_digest_misses; /* of pseudonymizers replaced by SIGHUP */
    uint64_t last_accepted, last_rejected, last_failed;
} ingest_metrics;

/* The pseudonymizer in force. A SIGHUP with a new secret replaces it while digest tasks submitted
 * before still compute with the old one on the workers: each generation lives until its last task
 * is back on the loop, and those payments are produced with the digests and the key id of the
 * generation that made them (never a mix). refs: loop thread only. */
typedef struct pii_gen {
    pii *pii;
    unsigned refs; /* 1 while in force + 1 per digest task in flight */
} pii_gen;

struct ingest {
    struct event_base *base; /* borrowed from main */
    struct evhttp *http, *https, *admin_http;
    struct evhttp_bound_socket *listener, *tls_listener; /* NULL once draining */
    bool ops_apart; /* admin-port set: /health, /ready, /metrics only on admin_http, kept open
                     * while draining (so /ready says 503 until the end) */
    conns *conns;
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt, *outcomes_rkt;
    rd_kafka_queue_t *mainq; /* our reference to rk's main queue (delivery reports, errors, stats) */
    int kafka_pipe[2];       /* librdkafka writes [1] when mainq turns non-empty */
    struct event *kafka_ev;  /* EV_READ on kafka_pipe[0] */
    struct event *drain_timer;
    pii_gen *gen;         /* the pseudonymizer in force (pii_gen) */
    pii_params pii_params; /* for a new secret on SIGHUP */
    unsigned rekey_seq;    /* SIGHUPs with a secret so far (rekey_task) */
    struct auth_wait *auth_pending; /* API key checks running on a worker (auth_submit) */
    int auth_npending;              /* ... how many (leaders only) */
    ratelimit *verify_limit;        /* per key id: checks of unverified secrets (auth_budget) */
    uint32_t auth_verify_rate;
    int auth_max_pending;
    geoip *geo;       /* IP -> country before the IP is digested (issue 4); "" without a database */
    workers *workers;
    keys *keys;
    keys_cache *key_cache;
    ratelimit *ratelimit;
    shopify *shopify;
    pgread *pgread;          /* NULL without database-url */
    recent *recent;
    char *tls_cert_file, *tls_key_file;
    bool auth;
    size_t max_body_bytes, batch_max_items, batch_max_body_bytes;
    int retry_after_seconds;
    int shutdown_timeout_ms;
    bool ready;    /* the producer talks to the brokers (see readiness_set) */
    bool fatal;    /* librdkafka fatal error: draining, then exit 1 (producer_fatal) */
    char fatal_error[512]; /* its text, for the exit (ingest_fatal_error) */
    bool draining; /* SIGTERM: listener closed, waiting for in-flight requests */
    bool finished; /* event_base_loopexit() requested */
    ingest_counters n;
    /* Messages handed to the producer, not yet reported: also those of requests whose client left
     * (the drain waits for them: what a request started still finishes). Not rd_kafka_outq_len(),
     * which also counts statistics and error events waiting to be served: the drain, checked at
     * each report, would miss its end behind one. */
    uint64_t producing;
    uint64_t payments_rejected, payments_failed; /* metrics, added at scrape time */
    ingest_metrics m;
    /* RAND_bytes costs microseconds per call (DRBG locking): ids draw from a buffer of its output. */
    unsigned char rand_buf[4096];
    size_t rand_pos;
};

/* What a parked request waits in (ctx_park): a drain timeout answers each kind its own way. */
typedef enum ctx_wait {
    CTX_WAIT_NONE,
    CTX_WAIT_AUTH, /* an auth_wait: its API key's Argon2 */
    CTX_WAIT_JOB,  /* an ingest_job: digests, delivery reports */
    CTX_WAIT_READ, /* a read_wait: PostgreSQL */
} ctx_wait;

/* One request while we work on it. Copied into whatever waits for something, so it holds copies,
 * not pointers into libevent's request (except req itself). */
typedef struct ingest_ctx {
    struct evhttp_request *req; /* owned by libevent; NULL once answered or the client is gone */
    void **slot;                /* the connection's user slot (conns.c); NULL once it closed */
    const char *method;         /* static string */
    const char *route;          /* route name (metrics label), static */
    char path[INGEST_LOG_PATH_MAX + 1]; /* printable copy, for the log */
    char path_id[INGEST_PATH_ID_MAX + 1]; /* the {id} segment of the path */
    char request_id[INGEST_REQUEST_ID_MAX + 1];
    char payment_id[37]; /* "" until known (single payment or outcome) */
    char caller[PAY_ID_MAX + 1]; /* API key id, "anonymous" with auth off, "shopify:<shop>"
                                  * (payments.source), "" before auth */
    unsigned scopes;     /* the caller's key's keys_scope bits; all of them with auth off */
    int64_t received_ms; /* wall clock, the payment's ingest time */
    int64_t start_us;    /* monotonic, for latency */
    ctx_wait waits;      /* set by ctx_park(): the struct ctx is a member of */
} ingest_ctx;

typedef void (*ingest_handler)(ingest *ing, ingest_ctx *ctx);

typedef struct ingest_route {
    const char *name;    /* metrics label */
    const char *path;    /* may hold one "{id}" segment */
    bool slash_too;      /* also matches path + "/" */
    uint16_t methods;    /* EVHTTP_REQ_* mask */
    unsigned scope;      /* keys_scope bits, any one of which lets in; 0: no API key (public, or a
                          * signature of its own) */
    ingest_handler handler;
    bool ops;            /* /health, /ready, /metrics: on the admin listener when there is one */
} ingest_route;

typedef enum item_state {
    ITEM_NEW,
    ITEM_DIGESTING, /* a worker computes its missing digests */
    ITEM_PRODUCING, /* waiting for its delivery report */
    ITEM_ACCEPTED,  /* durable in Kafka */
    ITEM_REJECTED,  /* invalid: error holds why */
    ITEM_FAILED,    /* valid, but not stored (broker, overload): retry */
    ITEM_SKIPPED,   /* the client left before it was produced: never produced */
} item_state;

typedef enum job_kind { JOB_PAYMENT, JOB_BATCH, JOB_OUTCOME } job_kind;

typedef struct ingest_job ingest_job;

typedef struct ingest_item {
    ingest_job *job;
    uint32_t index;
    item_state state;
    char payment_id[37];
    json_t *error; /* REJECTED / FAILED: {"error", "message", ["fields"]} */
    const char *code; /* REJECTED / FAILED: error's "error", a static string: still there when
                       * error could not be built or written (out of memory, item_result_bare) */
} ingest_item;

struct ingest_job {
    ingest *ing;
    ingest_ctx ctx;
    job_kind kind;
    uint32_t n, waiting; /* items; items digesting or producing */
    char outcome_id[37];
    ingest_item items[];
};

/* A payment whose digests are not all cached: handed to a worker whole. */
typedef struct digest_task {
    ingest *ing;
    pii_gen *gen; /* a reference: the generation the cached digests came from */
    ingest_item *item;
    pay_payment p;
    pay_pii raw;
    bool miss[PII_KIND_COUNT];
    char digest[PII_KIND_COUNT][PAY_DIGEST_HEX + 1];
    int rc;
    char errstr[128];
} digest_task;

/* A request whose API key is not in the cache: Argon2 on a worker. */
typedef struct auth_wait {
    ingest *ing;
    ingest_ctx ctx;
    const ingest_route *route;
    char presented[KEYS_PRESENTED_MAX + 1];
    char hash[KEYS_HASH_MAX + 1];
    unsigned char digest[32];
    bool valid;
    /* Loop thread only: requests with the same key while this one's Argon2 runs wait for its answer
     * instead of running their own (a new key under load would otherwise cost one 19 MiB, 30 ms
     * Argon2 per concurrent request). */
    struct auth_wait *followers, *next; /* next: in ing->auth_pending, or among followers */
} auth_wait;

/* GET /api/v1/payments/{id} waiting for PostgreSQL. */
typedef struct read_wait {
    ingest *ing;
    ingest_ctx ctx;
} read_wait;

static void handle_post_payment(ingest *ing, ingest_ctx *ctx);
static void handle_post_batch(ingest *ing, ingest_ctx *ctx);
static void handle_post_outcome(ingest *ing, ingest_ctx *ctx);
static void handle_get_payment(ingest *ing, ingest_ctx *ctx);
static void handle_shopify(ingest *ing, ingest_ctx *ctx);
static void handle_health(ingest *ing, ingest_ctx *ctx);
static void handle_ready(ingest *ing, ingest_ctx *ctx);
static void handle_metrics(ingest *ing, ingest_ctx *ctx);
static void drain_check(ingest *ing);

/* Every endpoint. Several rows may share a path (one per method set); 405 lists their methods. */
static const ingest_route ROUTES[] = {
    {"payments", "/api/v1/payments", true, EVHTTP_REQ_POST, KEYS_SCOPE_PAYMENTS_WRITE,
     handle_post_payment, false},
    {"payments_batch", "/api/v1/payments/batch", true, EVHTTP_REQ_POST, KEYS_SCOPE_PAYMENTS_WRITE,
     handle_post_batch, false},
    {"payment_outcome", "/api/v1/payments/{id}/outcome", true, EVHTTP_REQ_POST,
     KEYS_SCOPE_OUTCOMES_WRITE, handle_post_outcome, false},
    {"payment_get", "/api/v1/payments/{id}", true, EVHTTP_REQ_GET,
     KEYS_SCOPE_PAYMENTS_READ | KEYS_SCOPE_PAYMENTS_READ_ALL, handle_get_payment, false},
    {"shopify_orders_create", "/webhooks/orders/create", true, EVHTTP_REQ_POST, 0, handle_shopify, false},
    {"health", "/health", false, EVHTTP_REQ_GET, 0, handle_health, true},
    {"ready", "/ready", false, EVHTTP_REQ_GET, 0, handle_ready, true},
    {"metrics", "/metrics", false, EVHTTP_REQ_GET, 0, handle_metrics, true},
    {NULL, NULL, false, 0, 0, NULL, false},
};

/* ---------------------------------------------------------------------------------------------
 * Replies. Every response carries X-Request-Id and is counted, timed and logged (debug level, 5xx
 * always), never with a body or personal data.
 * ------------------------------------------------------------------------------------------- */

static const char *method_name(enum evhttp_cmd_type cmd) {
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "OTHER";
}

static const char *status_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return status >= 500 ? "Internal Server Error" : "Error";
    }
}

static void count_reply(ingest *ing, const ingest_ctx *ctx, int status) {
    char labels[64];
    ing->n.requests++;
    if (status == 202) ing->n.accepted++;
    else if (status == 503) ing->n.unavailable++;
    else if (status >= 500) ing->n.server_errors++;
    else if (status >= 400) ing->n.client_errors++;
    snprintf(labels, sizeof labels, "%s,%d", ctx->route, status);
    metric_add(ing->m.requests, labels, 1);
    metric_observe(ing->m.latency, ctx->route, (double)(fs_mono_us() - ctx->start_us) / 1e6);
}

/* One line per request: debug level, or warn/error for 5xx so failures are always visible. */
static void log_request(const ingest_ctx *ctx, int status, const char *error_code) {
    log_level level = status == 500 ? LOG_ERROR : status >= 500 ? LOG_WARN : LOG_DEBUG;
    if (!log_enabled(level)) return;
    json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:I, s:s}", "method", ctx->method, "path", ctx->path,
                          "route", ctx->route, "status", status, "latency_us",
                          (json_int_t)(fs_mono_us() - ctx->start_us), "request_id", ctx->request_id);
    if (f && ctx->caller[0]) json_object_set_new(f, "key_id", json_string(ctx->caller));
    if (f && ctx->payment_id[0]) json_object_set_new(f, "payment_id", json_string(ctx->payment_id));
    if (f && error_code) json_object_set_new(f, "error", json_string(error_code));
    log_fields(level, "http_request", f, "%s %s %d", ctx->method, ctx->path, status);
}

/* The request is answered or abandoned: it no longer waits on its connection. */
static void ctx_close(ingest *ing, ingest_ctx *ctx) {
    if (ctx->slot && *ctx->slot == ctx) *ctx->slot = NULL;
    ctx->slot = NULL;
    ctx->req = NULL;
    ing->n.in_flight--;
    drain_check(ing);
}

/* The request waits for something: its connection's closing must reach it (ctx must not move),
 * and so must a drain timeout (drain_answer). waits: the struct ctx is a member of. */
static void ctx_park(ingest_ctx *ctx, ctx_wait waits) {
    ctx->waits = waits;
    if (ctx->slot) *ctx->slot = ctx;
}

/* Sends status with the JSON the request's output buffer holds, and counts and logs it. ctx->req
 * must be alive; libevent owns and frees the request once the reply is written. */
static void reply_send(ingest *ing, ingest_ctx *ctx, int status, const char *error_code) {
    struct evhttp_request *req = ctx->req;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "X-Request-Id", ctx->request_id);
    count_reply(ing, ctx, status);
    log_request(ctx, status, error_code);
    ctx_close(ing, ctx);
    httpreq_send(req, status, status_reason(status)); /* libevent's from here on */
}

static int dump_to_evbuffer(const char *buf, size_t size, void *data) {
    return evbuffer_add(data, buf, size);
}

/* Sends status with body (takes ownership of body). */
static void reply_json(ingest *ing, ingest_ctx *ctx, int status, json_t *body) {
    struct evbuffer *out = evhttp_request_get_output_buffer(ctx->req);
    const char *error_code = json_string_value(json_object_get(body, "error"));
    if (!body || json_dump_callback(body, dump_to_evbuffer, out, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0) {
        evbuffer_drain(out, evbuffer_get_length(out));
        evbuffer_add_printf(out, "{\"error\":\"internal_error\",\"message\":\"out of memory\"}");
        status = 500;
        error_code = "internal_error";
    }
    reply_send(ing, ctx, status, error_code);
    json_decref(body);
}

/* {"error": code, "message": printf(fmt...)} */
static json_t *error_body(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *error_body(const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg); /* NULL when msg is not UTF-8 (a parser message quoting input) */
    return json_pack("{s:s, s:o}", "error", code, "message", m ? m : json_string("(not shown)"));
}

static void reply_error(ingest *ing, ingest_ctx *ctx, int status, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void reply_error(ingest *ing, ingest_ctx *ctx, int status, const char *code,
                        const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    reply_json(ing, ctx, status, error_body(code, "%s", msg));
}

static void add_retry_after(ingest *ing, ingest_ctx *ctx, int seconds) {
    char secs[16];
    snprintf(secs, sizeof secs, "%d", seconds > 0 ? seconds : ing->retry_after_seconds);
    evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Retry-After", secs);
}

/* 503 with Retry-After: the client should retry the same request (same Idempotency-Key). */
static void reply_unavailable(ingest *ing, ingest_ctx *ctx, const char *code, const char *msg) {
    json_t *body = json_pack("{s:s, s:s}", "error", code, "message", msg);
    if (body && ctx->payment_id[0]) /* lets a client without a key retry with the same id */
        json_object_set_new(body, "payment_id", json_string(ctx->payment_id));
    add_retry_after(ing, ctx, 0);
    reply_json(ing, ctx, 503, body);
}

/* ---------------------------------------------------------------------------------------------
 * Routing and authentication
 * ------------------------------------------------------------------------------------------- */

/* A random (v4) UUID from the buffered CSPRNG output. */
static void uuid_v4(ingest *ing, char out[37]) {
    static const char HEX[] = "0123456789abcdef";
    unsigned char b[16];
    if (ing->rand_pos == 0 || ing->rand_pos + 16 > sizeof ing->rand_buf) {
        if (RAND_bytes(ing->rand_buf, sizeof ing->rand_buf) != 1) {
            if (fs_uuid_v4(out) != 0) snprintf(out, 37, "00000000-0000-4000-8000-%012" PRIx64,
                                               (uint64_t)fs_mono_us() & UINT64_C(0xffffffffffff));
            return;
        }
        ing->rand_pos = 0;
    }
    memcpy(b, ing->rand_buf + ing->rand_pos, 16);
    OPENSSL_cleanse(ing->rand_buf + ing->rand_pos, 16); /* used once */
    ing->rand_pos += 16;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    for (int i = 0, o = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = HEX[b[i] >> 4];
        out[o++] = HEX[b[i] & 15];
    }
    out[36] = '\0';
}

/* A client's X-Request-Id is kept when it is a sane token, so ids can be followed across services;
 * anything else is replaced (it ends up in our logs and headers). */
static void request_id_init(ingest *ing, struct evhttp_request *req, char out[INGEST_REQUEST_ID_MAX + 1]) {
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    size_t n = v ? strlen(v) : 0;
    bool ok = n > 0 && n <= INGEST_REQUEST_ID_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == '-';
    }
    if (ok) memcpy(out, v, n + 1);
    else uuid_v4(ing, out);
}

static const char *request_path(struct evhttp_request *req) {
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    return path ? path : "";
}

static void ctx_init(ingest *ing, ingest_ctx *ctx, struct evhttp_request *req) {
    const char *path = request_path(req);
    size_t i;
    memset(ctx, 0, sizeof *ctx);
    ctx->req = req;
    ctx->slot = conns_on_request(ing->conns, req);
    ctx->start_us = fs_mono_us();
    ctx->received_ms = fs_now_ms();
    ctx->method = method_name(evhttp_request_get_command(req));
    ctx->route = "unmatched";
    for (i = 0; path[i] && i < INGEST_LOG_PATH_MAX; i++) /* the log gets printable ASCII only */
        ctx->path[i] = (path[i] >= 0x20 && path[i] < 0x7f) ? path[i] : '?';
    ctx->path[i] = '\0';
    request_id_init(ing, req, ctx->request_id);
    ing->n.in_flight++;
}

/* Matches path against a route pattern; the "{id}" segment (non-empty, no '/') goes to id. */
static bool route_path_match(const ingest_route *r, const char *path, char id[INGEST_PATH_ID_MAX + 1]) {
    const char *pat = r->path, *hole = strstr(pat, "{id}");
    size_t pre = hole ? (size_t)(hole - pat) : strlen(pat);
    if (strncmp(path, pat, pre) != 0) return false;
    path += pre;
    if (hole) {
        size_t n = strcspn(path, "/");
        if (n == 0 || n > INGEST_PATH_ID_MAX) return false;
        memcpy(id, path, n);
        id[n] = '\0';
        path += n;
        pat = hole + 4;
        size_t rest = strlen(pat);
        if (strncmp(path, pat, rest) != 0) return false;
        path += rest;
    }
    return path[0] == '\0' || (r->slash_too && path[0] == '/' && path[1] == '\0');
}

/* The routes a listener serves: with an admin listener, it has the ops routes and the API ports
 * the rest; without one, the API ports have them all. */
static bool route_served(const ingest *ing, const ingest_route *r, bool admin) {
    return admin ? r->ops : !(r->ops && ing->ops_apart);
}

/* The route for path and method; NULL with *allowed = the methods path has (0: unknown path). */
static const ingest_route *route_find(const ingest *ing, ingest_ctx *ctx, const char *path,
                                      enum evhttp_cmd_type cmd, bool admin, uint16_t *allowed) {
    *allowed = 0;
    if (cmd == EVHTTP_REQ_HEAD) cmd = EVHTTP_REQ_GET; /* the same answer, without its body */
    /* Literal paths first, and a path that is one is never an {id}: GET /api/v1/payments/batch is
     * a 405 naming POST, not a payment id that is no UUID. */
    for (int pattern = 0; pattern <= 1 && !*allowed; pattern++) {
        for (const ingest_route *r = ROUTES; r->path; r++) {
            if ((strstr(r->path, "{id}") != NULL) != pattern || !route_served(ing, r, admin) ||
                !route_path_match(r, path, ctx->path_id))
                continue;
            if (r->methods & cmd) return r;
            *allowed |= r->methods;
            if (r->methods & EVHTTP_REQ_GET) *allowed |= EVHTTP_REQ_HEAD;
        }
    }
    return NULL;
}

static void reply_method_not_allowed(ingest *ing, ingest_ctx *ctx, uint16_t allowed) {
    char allow[128] = "";
    for (uint16_t bit = 1; bit && bit <= INGEST_ALL_METHODS; bit = (uint16_t)(bit << 1)) {
        if (!(allowed & bit)) continue;
        if (allow[0]) strcat(allow, ", ");
        strcat(allow, method_name((enum evhttp_cmd_type)bit));
    }
    evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Allow", allow);
    reply_error(ing, ctx, 405, "method_not_allowed", "%s is not allowed here; allowed: %s",
                ctx->method, allow);
}

static void reply_unauthorized(ingest *ing, ingest_ctx *ctx, const char *reason, const char *msg) {
    metric_add(ing->m.auth_failures, reason, 1);
    evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "WWW-Authenticate", "Bearer");
    reply_error(ing, ctx, 401, "unauthorized", "%s", msg);
}

/* The presented key: X-API-Key, or Authorization: Bearer <key>; both only when they agree (else
 * *conflict: which one the caller meant is a guess, and a wrong guess answers 403 or 401 for a
 * request whose other key was right). */
static const char *presented_key(struct evhttp_request *req, bool *conflict) {
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *k = evhttp_find_header(h, "X-API-Key");
    const char *a = evhttp_find_header(h, "Authorization");
    const char *b = a && strncasecmp(a, "Bearer ", 7) == 0 ? a + 7 + strspn(a + 7, " ") : NULL;
    if (k && !k[0]) k = NULL; /* an empty header (a client's default) holds no key to disagree */
    *conflict = k && b && strcmp(k, b) != 0;
    return k ? k : b;
}

/* A verified key: scope, then rate. Returns 0 to go on, -1 after replying 403 / 429. */
static int authorize(ingest *ing, ingest_ctx *ctx, const ingest_route *route, const keys_entry *e) {
    int retry_after = 1;
    snprintf(ctx->caller, sizeof ctx->caller, "%s", e->id);
    ctx->scopes = e->scopes;
    if (!(e->scopes & route->scope)) {
        char need[64];
        keys_scopes_format(route->scope, need, sizeof need);
        metric_add(ing->m.auth_failures, "scope", 1);
        reply_error(ing, ctx, 403, "forbidden", "this API key lacks the scope %s%s", need,
                    strchr(need, ',') ? " (any one of them)" : "");
        return -1;
    }
    if (!ratelimit_take(ing->ratelimit, e->id, e->rate, fs_mono_us(), &retry_after)) {
        metric_add(ing->m.rate_limited, NULL, 1);
        add_retry_after(ing, ctx, retry_after);
        reply_error(ing, ctx, 429, "rate_limited", "more than %u requests per second for this API key",
                    e->rate);
        return -1;
    }
    return 0;
}

static void auth_run(void *arg) {
    auth_wait *aw = arg;
    aw->valid = keys_verify(aw->hash, aw->presented);
}

/* Argon2 has spoken (valid): remember the answer, then carry on with the request as if it had
 * been a hit. */
static void auth_settle(ingest *ing, auth_wait *aw, bool cancelled) {
    if (cancelled) {
        if (aw->ctx.req) ctx_close(ing, &aw->ctx);
        return;
    }
    /* A reload may have replaced the keys meanwhile: the answer holds for the same hash only. */
    const keys_entry *entry = keys_find(ing->keys, aw->ctx.caller);
    bool same = entry && strcmp(entry->hash, aw->hash) == 0;
    if (same) keys_cache_put(ing->key_cache, aw->digest, aw->valid ? entry->id : NULL);
    if (!aw->ctx.req) { /* the client left */
    } else if (!same || !aw->valid) {
        aw->ctx.caller[0] = '\0';
        reply_unauthorized(ing, &aw->ctx, "invalid", "invalid API key");
    } else if (authorize(ing, &aw->ctx, aw->route, entry) == 0) {
        aw->route->handler(ing, &aw->ctx); /* it copies what it keeps of ctx */
    }
}

static void auth_free(auth_wait *aw) {
    OPENSSL_cleanse(aw, sizeof *aw);
    free(aw);
}

/* The worker is done with aw (a leader): it and its followers get the answer. */
static void auth_done(void *arg, bool cancelled) {
    auth_wait *aw = arg, *f;
    ingest *ing = aw->ing;
    OPENSSL_cleanse(aw->presented, sizeof aw->presented);
    for (auth_wait **pp = &ing->auth_pending; *pp; pp = &(*pp)->next) {
        if (*pp == aw) {
            *pp = aw->next;
            ing->auth_npending--;
            break;
        }
    }
    auth_settle(ing, aw, cancelled);
    while ((f = aw->followers)) {
        aw->followers = f->next;
        f->valid = aw->valid;
        auth_settle(ing, f, cancelled);
        auth_free(f);
    }
    auth_free(aw);
}

/* A request for the answer some pending check of the same key will give. Returns 1 when it
 * now waits for it, 0 when no check of this key is running. */
static int auth_follow(ingest *ing, auth_wait *aw) {
    for (auth_wait *l = ing->auth_pending; l; l = l->next) {
        if (memcmp(l->digest, aw->digest, sizeof aw->digest) != 0 || strcmp(l->hash, aw->hash) != 0)
            continue;
        OPENSSL_cleanse(aw->presented, sizeof aw->presented); /* the leader has it */
        aw->next = l->followers; /* ownership: l's, settled in auth_done(l) */
        l->followers = aw;
        ctx_park(&aw->ctx, CTX_WAIT_AUTH);
        return 1;
    }
    return 0;
}

/* A secret not yet verified costs an Argon2 run (~30 ms of a worker), so a client guessing at a
 * known key id with made-up secrets (one request each, closed at once) could fill the workers'
 * queue that pseudonymizing shares, and delay every payment with a new identifier. Checks are
 * budgeted per key id (a legitimate client needs one per secret and process: concurrent requests
 * with the same secret share it, auth_follow) and in total. 0 to go on; -1 after replying 429/503.
 * (An unknown key id is refused without Argon2: key ids are names, not secrets.) */
static int auth_budget(ingest *ing, ingest_ctx *ctx, const keys_entry *e) {
    int retry_after;
    if (ing->auth_npending >= ing->auth_max_pending) {
        metric_add(ing->m.auth_failures, "verify_overloaded", 1);
        reply_unavailable(ing, ctx, "overloaded", "too many API key checks at once; retry");
        return -1;
    }
    if (!ratelimit_take(ing->verify_limit, e->id, ing->auth_verify_rate, fs_mono_us(), &retry_after)) {
        metric_add(ing->m.auth_failures, "verify_limited", 1);
        add_retry_after(ing, ctx, retry_after);
        reply_error(ing, ctx, 429, "rate_limited", "more than %u new secrets a second checked for "
                    "this API key id", ing->auth_verify_rate);
        return -1;
    }
    return 0;
}

/* Cache miss: Argon2 on a worker. Returns 1 (the request waits), or -1 after replying. */
static int auth_submit(ingest *ing, ingest_ctx *ctx, const ingest_route *route,
                       const char *presented, const keys_entry *e, const unsigned char digest[32]) {
    auth_wait *aw = calloc(1, sizeof *aw);
    if (!aw) {
        reply_error(ing, ctx, 500, "internal_error", "out of memory");
        return -1;
    }
    aw->ing = ing;
    aw->ctx = *ctx;
    aw->route = route;
    snprintf(aw->presented, sizeof aw->presented, "%s", presented);
    snprintf(aw->hash, sizeof aw->hash, "%s", e->hash);
    snprintf(aw->ctx.caller, sizeof aw->ctx.caller, "%s", e->id); /* the id to re-find */
    memcpy(aw->digest, digest, 32);
    if (auth_follow(ing, aw)) return 1;
    if (auth_budget(ing, ctx, e) != 0) {
        auth_free(aw);
        return -1;
    }
    if (workers_submit(ing->workers, auth_run, auth_done, aw) != 0) {
        auth_free(aw);
        reply_unavailable(ing, ctx, "overloaded", "too much work queued; retry");
        return -1;
    }
    aw->next = ing->auth_pending; /* the worker pool's until auth_done; listed for followers */
    ing->auth_pending = aw;
    ing->auth_npending++;
    metric_add(ing->m.key_verifications, NULL, 1);
    ctx_park(&aw->ctx, CTX_WAIT_AUTH);
    return 1;
}

/* Returns 0 to go on (ctx->caller set), 1 when the request now waits for a worker, -1 after
 * replying 401 / 403 / 429 / 503 itself. */
static int authenticate(ingest *ing, ingest_ctx *ctx, const ingest_route *route) {
    char id[KEYS_ID_MAX + 1];
    unsigned char digest[32];
    if (!route->scope) return 0;
    if (!ing->auth) {
        snprintf(ctx->caller, sizeof ctx->caller, "anonymous");
        ctx->scopes = KEYS_SCOPES_ALL; /* everyone may do and read everything, as with no keys */
        return 0;
    }
    bool conflict;
    const char *presented = presented_key(ctx->req, &conflict);
    if (conflict) {
        reply_unauthorized(ing, ctx, "malformed",
                           "two different API keys (X-API-Key and Authorization: Bearer): give one");
        return -1;
    }
    if (!presented || !presented[0]) {
        reply_unauthorized(ing, ctx, "missing", "an API key is required (X-API-Key or Authorization: Bearer)");
        return -1;
    }
    if (keys_presented_id(presented, id) != 0) {
        reply_unauthorized(ing, ctx, "malformed", "invalid API key");
        return -1;
    }
    keys_cache_digest(ing->key_cache, presented, digest);
    int cached = keys_cache_get(ing->key_cache, digest, id);
    const keys_entry *e = keys_find(ing->keys, id);
    if (cached == 1 && e) return authorize(ing, ctx, route, e);
    if (cached == 0 || !e || !keys_check_matches(e, presented)) {
        /* an unknown id or a key its check tag refuses: no Argon2 needed */
        if (cached != 0) keys_cache_put(ing->key_cache, digest, NULL);
        reply_unauthorized(ing, ctx, "invalid", "invalid API key");
        return -1;
    }
    return auth_submit(ing, ctx, route, presented, e, digest);
}

/* Every request, from either kind of listener: the top of the data path. */
static void route_request(ingest *ing, struct evhttp_request *req, bool admin) {
    static const char *const single[] = {"Idempotency-Key", "X-API-Key", "Authorization",
                                         "Content-Type", "X-Shopify-Hmac-Sha256",
                                         "X-Shopify-Shop-Domain", NULL};
    ingest_ctx ctx;
    uint16_t allowed;
    char why[128];
    ctx_init(ing, &ctx, req);
    if (httpreq_framing_error(req, single, why, sizeof why) != 0) {
        httpreq_close_after(req); /* what follows on the connection cannot be trusted */
        reply_error(ing, &ctx, 400, "malformed_request", "%s", why);
        return;
    }
    const ingest_route *route = route_find(ing, &ctx, request_path(req),
                                           evhttp_request_get_command(req), admin, &allowed);
    if (!route && !allowed) {
        reply_error(ing, &ctx, 404, "not_found", "no endpoint at this path");
        return;
    }
    if (!route) {
        reply_method_not_allowed(ing, &ctx, allowed);
        return;
    }
    ctx.route = route->name;
    if (authenticate(ing, &ctx, route) != 0) return;
    route->handler(ing, &ctx);
}

/* evhttp's callbacks: the API ports (plain and TLS), and the admin listener. */
static void on_request(struct evhttp_request *req, void *arg) { route_request(arg, req, false); }

static void on_admin_request(struct evhttp_request *req, void *arg) { route_request(arg, req, true); }

/* conns.c: a connection closed while one of its requests waited (user = its parked ctx). */
static void on_client_gone(void *user, void *arg) {
    ingest *ing = arg;
    ingest_ctx *ctx = user;
    /* libevent frees the request itself, right after this (or already detached it: then it is
     * ours to free). Either way we never touch it again. */
    if (ctx->req && !evhttp_request_get_connection(ctx->req)) evhttp_request_free(ctx->req);
    metric_add(ing->m.clients_gone, ctx->route, 1);
    log_msg(LOG_INFO, "client_gone", "request %s: connection closed before the answer", ctx->request_id);
    ctx->slot = NULL;
    ctx_close(ing, ctx);
}

/* ---------------------------------------------------------------------------------------------
 * GET /health, /ready, /metrics
 * ------------------------------------------------------------------------------------------- */

static void handle_health(ingest *ing, ingest_ctx *ctx) {
    reply_json(ing, ctx, 200, json_pack("{s:s}", "status", "ok"));
}

/* Why the instance is not ready, or NULL when it is: /ready answers from it and fs_ingest_ready
 * is set from it at every scrape, so the two never disagree. */
static const char *readiness_why(const ingest *ing) {
    if (ing->fatal) return "the Kafka producer hit a fatal error";
    if (ing->draining) return "shutting down";
    if (!ing->ready) return "no connection to the Kafka brokers";
    return NULL;
}

static void handle_ready(ingest *ing, ingest_ctx *ctx) {
    const char *why = readiness_why(ing);
    if (why) reply_error(ing, ctx, 503, "not_ready", "%s", why);
    else reply_json(ing, ctx, 200, json_pack("{s:s}", "status", "ready"));
}

/* Counters kept elsewhere (caches) become Prometheus counters by adding what grew since. */
static void metrics_refresh(ingest *ing) {
    ingest_metrics *m = &ing->m;
    uint64_t dh, dm, kh, km;
    pii_stats(ing->gen->pii, &dh, &dm);
    dh += m->retired_digest_hits;
    dm += m->retired_digest_misses;
    keys_cache_stats(ing->key_cache, &kh, &km);
    metric_add(m->digest_hits, NULL, (double)(dh - m->last_digest_hits));
    metric_add(m->digest_misses, NULL, (double)(dm - m->last_digest_misses));
    metric_add(m->key_hits, NULL, (double)(kh - m->last_key_hits));
    metric_add(m->key_misses, NULL, (double)(km - m->last_key_misses));
    m->last_digest_hits = dh, m->last_digest_misses = dm, m->last_key_hits = kh, m->last_key_misses = km;
    metric_add(m->payments, "accepted", (double)(ing->n.payments_accepted - m->last_accepted));
    metric_add(m->payments, "rejected", (double)(ing->payments_rejected - m->last_rejected));
    metric_add(m->payments, "failed", (double)(ing->payments_failed - m->last_failed));
    m->last_accepted = ing->n.payments_accepted;
    m->last_rejected = ing->payments_rejected;
    m->last_failed = ing->payments_failed;
    metric_set(m->digest_ratio, NULL, dh + dm ? (double)dh / (double)(dh + dm) : 0);
    metric_set(m->key_ratio, NULL, kh + km ? (double)kh / (double)(kh + km) : 0);
    metric_set(m->in_flight, NULL, (double)ing->n.in_flight);
    metric_set(m->queue_depth, NULL, (double)rd_kafka_outq_len(ing->rk));
    metric_set(m->connections, NULL, (double)conns_count(ing->conns));
    metric_set(m->workers_pending, NULL, (double)workers_pending(ing->workers));
    metric_set(m->read_connections, NULL, (double)pgread_connected(ing->pgread));
    metric_set(m->ready, NULL, readiness_why(ing) ? 0 : 1);
}

static void handle_metrics(ingest *ing, ingest_ctx *ctx) {
    size_t len = 0;
    struct evhttp_request *req = ctx->req;
    metrics_refresh(ing);
    char *text = metrics_render(ing->m.reg, &len);
    if (!text) {
        reply_error(ing, ctx, 500, "internal_error", "out of memory");
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Request-Id", ctx->request_id);
    evbuffer_add(evhttp_request_get_output_buffer(req), text, len);
    free(text);
    count_reply(ing, ctx, 200);
    log_request(ctx, 200, NULL);
    ctx_close(ing, ctx);
    httpreq_send(req, 200, "OK");
}

/* ---------------------------------------------------------------------------------------------
 * Jobs: one request's payments (or outcome), from validation to the delivery reports.
 * ------------------------------------------------------------------------------------------- */

static ingest_job *job_new(ingest *ing, const ingest_ctx *ctx, job_kind kind, uint32_t n) {
    ingest_job *job = calloc(1, sizeof *job + n * sizeof job->items[0]);
    if (!job) return NULL;
    job->ing = ing;
    job->ctx = *ctx;
    job->kind = kind;
    job->n = n;
    for (uint32_t i = 0; i < n; i++) {
        job->items[i].job = job;
        job->items[i].index = i;
    }
    return job;
}

static void job_free(ingest_job *job) {
    for (uint32_t i = 0; i < job->n; i++) json_decref(job->items[i].error);
    free(job);
}

static const char *item_state_name(item_state s) {
    switch (s) {
    case ITEM_ACCEPTED: return "accepted";
    case ITEM_REJECTED: return "rejected";
    case ITEM_FAILED: return "failed";
    default: return "skipped";
    }
}

/* {"index", "status", "payment_id"?, + the error members} */
static json_t *item_result(const ingest_item *it) {
    json_t *r = json_pack("{s:i, s:s}", "index", (int)it->index, "status", item_state_name(it->state));
    if (r && it->payment_id[0]) json_object_set_new(r, "payment_id", json_string(it->payment_id));
    if (r && it->error) json_object_update(r, it->error);
    return r;
}

/* Item it's result without building JSON values (they could not be, out of memory): its code and a
 * fixed message, so that the answer still validates (a validation_failed's fields are lost). */
static void item_result_bare(struct evbuffer *out, const ingest_item *it) {
    const char *code = it->code ? it->code : "internal_error";
    evbuffer_add_printf(out, "{\"index\":%u,\"status\":\"%s\"", it->index, item_state_name(it->state));
    if (it->payment_id[0]) evbuffer_add_printf(out, ",\"payment_id\":\"%s\"", it->payment_id);
    evbuffer_add_printf(out, ",\"error\":\"%s\",\"message\":\"out of memory: details lost\"%s}", code,
                        strcmp(code, "validation_failed") ? "" : ",\"fields\":[]");
}

/* v in decimal at out (up to 10 bytes, no NUL); returns the length. */
static size_t format_u32(char *out, uint32_t v) {
    char tmp[10];
    size_t n = 0;
    do tmp[n++] = (char)('0' + v % 10);
    while (v /= 10);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

/* The per-item results, written straight into the reply (accepted items, the common case, without
 * building JSON values: a batch of 1000 answers in microseconds). */
static void reply_batch(ingest *ing, ingest_job *job) {
    const char *unavailable = NULL; /* the code of a whole-batch 503: its failed items' */
    int count[ITEM_SKIPPED + 1] = {0};
    struct evbuffer *out = evhttp_request_get_output_buffer(job->ctx.req);
    for (uint32_t i = 0; i < job->n; i++) {
        count[job->items[i].state]++;
        if (job->items[i].state == ITEM_FAILED)
            unavailable = batch_failure_code(unavailable, job->items[i].code);
    }
    if (!unavailable) unavailable = "internal_error"; /* a failed item without a code: a bug */
    /* Nothing stored, and not only because of the items themselves: the broker (or an overload)
     * failed the others, so the whole batch is a 503 to retry, even next to rejected items. */
    bool nothing_stored = count[ITEM_ACCEPTED] == 0 && count[ITEM_FAILED] > 0;
    evbuffer_add_printf(out, "{\"accepted\":%d,\"rejected\":%d,\"failed\":%d,\"results\":[",
                        count[ITEM_ACCEPTED], count[ITEM_REJECTED], count[ITEM_FAILED]);
    for (uint32_t i = 0; i < job->n; i++) {
        const ingest_item *it = &job->items[i];
        if (i) evbuffer_add(out, ",", 1);
        if (it->state == ITEM_ACCEPTED) { /* by hand: a printf per item was visible at 1000 items */
            char r[96];
            size_t n = 0;
            memcpy(r, "{\"index\":", 9), n = 9;
            n += format_u32(r + n, i);
            memcpy(r + n, ",\"status\":\"accepted\",\"payment_id\":\"", 35), n += 35;
            memcpy(r + n, it->payment_id, 36), n += 36;
            memcpy(r + n, "\"}", 2), n += 2;
            evbuffer_add(out, r, n);
        } else { /* dumped whole first: a dump failing half-way would leave half a result */
            json_t *r = it->error ? item_result(it) : NULL;
            char *s = r ? json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
            if (!s || evbuffer_add(out, s, strlen(s)) != 0) item_result_bare(out, it);
            free(s);
            json_decref(r);
        }
    }
    /* Only when nothing at all could be stored is the whole batch a 503: retry it (the rejected
     * items fixed or left out; the ids stay, see batch_item_id). */
    if (nothing_stored)
        evbuffer_add_printf(out, "],\"error\":\"%s\",\"message\":\"no item was stored: retry the "
                            "failed ones (with the same Idempotency-Key, or their payment_id)\"}",
                            unavailable);
    else evbuffer_add(out, "]}", 2);
    if (nothing_stored) add_retry_after(ing, &job->ctx, 0);
    reply_send(ing, &job->ctx, nothing_stored ? 503 : 200, nothing_stored ? unavailable : NULL);
}

static void reply_single(ingest *ing, ingest_job *job) {
    ingest_item *it = &job->items[0];
    ingest_ctx *ctx = &job->ctx;
    if (it->state == ITEM_REJECTED) {
        reply_json(ing, ctx, 422, json_incref(it->error));
    } else if (it->state == ITEM_FAILED) {
        const char *code = it->code ? it->code : "internal_error";
        const char *msg = json_string_value(json_object_get(it->error, "message"));
        if (!strcmp(code, "internal_error")) reply_json(ing, ctx, 500, json_incref(it->error));
        else reply_unavailable(ing, ctx, code, msg ? msg : "retry");
    } else if (job->kind == JOB_OUTCOME) {
        reply_json(ing, ctx, 202, json_pack("{s:s, s:s, s:s, s:s}", "message", "Outcome accepted",
                                            "status", "accepted", "outcome_id", job->outcome_id,
                                            "payment_id", it->payment_id));
    } else { /* the hot path: no JSON values to build, no printf */
        static const char HEAD[] = "{\"message\":\"Payment accepted for processing\","
                                   "\"status\":\"accepted\",\"payment_id\":\"";
        char body[sizeof HEAD - 1 + 36 + 2];
        memcpy(body, HEAD, sizeof HEAD - 1);
        memcpy(body + sizeof HEAD - 1, it->payment_id, 36); /* a canonical UUID */
        memcpy(body + sizeof HEAD - 1 + 36, "\"}", 2);
        evbuffer_add(evhttp_request_get_output_buffer(ctx->req), body, sizeof body);
        reply_send(ing, ctx, 202, NULL);
    }
}

/* Called whenever an item reaches its final state: the job answers once the last one has. */
static void job_settle(ingest_job *job) {
    ingest *ing = job->ing;
    if (job->waiting > 0) return;
    if (job->ctx.req) {
        if (job->kind == JOB_BATCH) reply_batch(ing, job);
        else reply_single(ing, job);
    }
    job_free(job);
}

/* Final state of an item that was waiting (digesting or producing). */
static void item_finish(ingest_item *it, item_state state, json_t *error) {
    ingest_job *job = it->job;
    it->state = state;
    if (error) {
        json_decref(it->error);
        it->error = error;
    }
    job->waiting--;
    job_settle(job);
}

static json_t *failure(const char *code, const char *msg) {
    return json_pack("{s:s, s:s}", "error", code, "message", msg);
}

/* A waiting item failed with code (a static string) and msg. */
static void item_finish_failed(ingest_item *it, const char *code, const char *msg) {
    it->code = code;
    item_finish(it, ITEM_FAILED, failure(code, msg));
}

/* An item that failed before it reached the producer's queue (or was refused by it): counted in
 * fs_ingest_payments_total{result="failed"} here, as on_delivery() counts the broker's failures (a
 * batch answers 200 around such items: no other metric would show them). */
static void item_fail(ingest *ing, ingest_item *it, const char *code, const char *msg) {
    it->state = ITEM_FAILED;
    it->code = code;
    json_decref(it->error);
    it->error = failure(code, msg);
    ing->payments_failed++;
}

/* Produces value (taken: freed by librdkafka, or here on failure) as the item's message, with the
 * headers every message carries, plus extra_name=extra when extra_name is not NULL. version: the
 * schema_version of value's own schema (a payment's and an outcome's evolve apart), which the
 * header repeats for consumers that route on it before parsing. */
static void item_produce(ingest *ing, ingest_item *it, rd_kafka_topic_t *rkt, const char *version,
                         const char *key, char *value, size_t len, const char *extra_name,
                         const char *extra) {
    char ts[24];
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(5);
    snprintf(ts, sizeof ts, "%" PRId64, it->job->ctx.received_ms);
    rd_kafka_header_add(hdrs, "schema_version", -1, version, -1);
    rd_kafka_header_add(hdrs, "payment_id", -1, it->payment_id, -1);
    rd_kafka_header_add(hdrs, "ingest_ts", -1, ts, -1);
    rd_kafka_header_add(hdrs, "content-type", -1, "application/json", -1);
    if (extra_name) rd_kafka_header_add(hdrs, extra_name, -1, extra, -1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        ing->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(value, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(it),
        RD_KAFKA_V_END);
    if (err) { /* on failure librdkafka took nothing */
        free(value);
        rd_kafka_headers_destroy(hdrs);
        log_msg(LOG_WARN, "produce_failed", "request %s: %s", it->job->ctx.request_id,
                rd_kafka_err2str(err));
        ing->n.delivery_failures++;
        metric_add(ing->m.delivery_failures, NULL, 1);
        item_fail(ing, it, "broker_unavailable", "the payment could not be queued; retry");
        return;
    }
    /* The message owns value and hdrs, and points at it, until on_delivery(). */
    it->state = ITEM_PRODUCING;
    ing->producing++;
}

/* Encodes and produces a pseudonymized payment, whose digests gen made: its key id goes in the
 * pii_key_id header (consumers see which key made the digests, and a skew between instances). */
static void payment_produce(ingest *ing, ingest_item *it, const pay_payment *p, const pii_gen *gen) {
    char key[4];
    size_t len = 0;
    char *event = pay_event_encode(p, &len);
    if (!event) {
        item_fail(ing, it, "internal_error", "could not encode the payment");
        return;
    }
    pay_partition_key(p, key);
    item_produce(ing, it, ing->rkt, STR(PAY_SCHEMA_VERSION), key, event, len, "pii_key_id",
                 pii_key_id(gen->pii));
}

/* The raw identifiers of a payment, by pii_kind. */
static const char *raw_of(const pay_pii *raw, pii_kind kind) {
    switch (kind) {
    case PII_EMAIL: return raw->email;
    case PII_IP: return raw->ip_address;
    case PII_CARD: return raw->card_fingerprint;
    default: return raw->device_id;
    }
}

static char *digest_of(pay_payment *p, pii_kind kind) {
    switch (kind) {
    case PII_EMAIL: return p->email_digest;
    case PII_IP: return p->ip_digest;
    case PII_CARD: return p->card_fingerprint_digest;
    default: return p->device_id_digest;
    }
}

/* A generation in force (refs 1) around a new pii (taken). NULL on allocation failure (pi freed). */
static pii_gen *pii_gen_new(pii *pi) {
    pii_gen *g = calloc(1, sizeof *g);
    if (!g) {
        pii_destroy(pi);
        return NULL;
    }
    g->pii = pi;
    g->refs = 1;
    return g;
}

/* Drops one reference; the last one wipes the secret and frees. Loop thread only. Accepts NULL. */
static void pii_gen_release(pii_gen *g) {
    if (!g || --g->refs > 0) return;
    pii_destroy(g->pii);
    free(g);
}

static void digest_run(void *arg) {
    digest_task *t = arg;
    for (int k = 0; k < PII_KIND_COUNT && t->rc == 0; k++)
        if (t->miss[k])
            t->rc = pii_compute(t->gen->pii, (pii_kind)k, raw_of(&t->raw, (pii_kind)k), t->digest[k],
                                t->errstr, sizeof t->errstr);
}

static void digest_task_free(digest_task *t) {
    pii_gen_release(t->gen);
    pay_payment_clear(&t->p);
    OPENSSL_cleanse(t, sizeof *t); /* raw values end here */
    free(t);
}

/* Back on the loop with the digests the cache lacked. */
static void digest_done(void *arg, bool cancelled) {
    digest_task *t = arg;
    ingest *ing = t->ing;
    ingest_item *it = t->item;
    if (cancelled || !it->job->ctx.req) { /* nobody waits: never produce what nobody was told of */
        digest_task_free(t);
        item_finish(it, ITEM_SKIPPED, NULL);
        return;
    }
    if (t->rc != 0) {
        log_msg(LOG_ERROR, "pii_failed", "request %s: %s", it->job->ctx.request_id, t->errstr);
        digest_task_free(t);
        ing->payments_failed++;
        item_finish_failed(it, "internal_error", "could not pseudonymize the payment");
        return;
    }
    for (int k = 0; k < PII_KIND_COUNT; k++) {
        if (!t->miss[k]) continue;
        if (t->gen == ing->gen) /* a replaced key's digests must not enter the new cache */
            pii_store(ing->gen->pii, (pii_kind)k, raw_of(&t->raw, (pii_kind)k), t->digest[k]);
        memcpy(digest_of(&t->p, (pii_kind)k), t->digest[k], PAY_DIGEST_HEX + 1);
    }
    payment_produce(ing, it, &t->p, t->gen); /* DIGESTING -> PRODUCING: still waiting */
    digest_task_free(t);
    if (it->state != ITEM_PRODUCING) item_finish(it, it->state, NULL);
}

/* Pseudonymizes p: cached digests now; when some are missing, hands p and raw to a worker (the
 * item then waits in ITEM_DIGESTING). Raw values never leave this process, and never this frame
 * unless inside the task. Returns 0 when p is ready to produce, 1 when handed over, -1 on error
 * (item failed). */
static int item_pseudonymize(ingest *ing, ingest_item *it, pay_payment *p, pay_pii *raw) {
    bool miss[PII_KIND_COUNT] = {false};
    int nmiss = 0;
    for (int k = 0; k < PII_KIND_COUNT; k++) {
        const char *v = raw_of(raw, (pii_kind)k);
        if (!v[0]) continue;
        int rc = pii_lookup(ing->gen->pii, (pii_kind)k, v, digest_of(p, (pii_kind)k));
        if (rc < 0) { /* validation accepted it, so this cannot happen; fail loudly if it does */
            item_fail(ing, it, "internal_error", "could not pseudonymize the payment");
            return -1;
        }
        if (rc == 0) miss[k] = true, nmiss++;
    }
    if (nmiss == 0) return 0;
    digest_task *t = calloc(1, sizeof *t);
    if (!t) {
        item_fail(ing, it, "internal_error", "out of memory");
        return -1;
    }
    t->ing = ing;
    t->gen = ing->gen; /* the worker reads it: set before the submit */
    t->item = it;
    t->p = *p; /* ownership of p's json members moves to t */
    memset(p, 0, sizeof *p);
    t->raw = *raw;
    memcpy(t->miss, miss, sizeof miss);
    if (workers_submit(ing->workers, digest_run, digest_done, t) != 0) {
        *p = t->p; /* back to the caller, who clears it */
        OPENSSL_cleanse(t, sizeof *t);
        free(t);
        item_fail(ing, it, "overloaded", "too many new identifiers to pseudonymize; retry");
        return -1;
    }
    t->gen->refs++; /* released by digest_task_free(), on the loop like this */
    it->state = ITEM_DIGESTING;
    return 1;
}

/* A validated payment (rc 0) is pseudonymized and produced, a refused one (rc -1) is REJECTED with
 * every bad field. Shared by both parsers; clears p and raw. */
static void item_continue(ingest *ing, ingest_item *it, int rc, pay_payment *p, pay_pii *raw,
                          const pay_errors *errs) {
    if (rc != 0) {
        it->state = ITEM_REJECTED;
        it->code = "validation_failed";
        it->error = pay_errors_to_json(errs);
        ing->payments_rejected++;
        goto done;
    }
    memcpy(it->payment_id, p->payment_id, sizeof it->payment_id);
    snprintf(p->source, sizeof p->source, "%s", it->job->ctx.caller); /* who: payments.source */
    geoip_country(ing->geo, raw->ip_address, p->ip_country); /* the last moment the raw IP exists */
    if (item_pseudonymize(ing, it, p, raw) == 0) payment_produce(ing, it, p, ing->gen);
    if (it->state == ITEM_DIGESTING || it->state == ITEM_PRODUCING) it->job->waiting++;
done:
    OPENSSL_cleanse(raw, sizeof *raw);
    pay_payment_clear(p);
}

/* Whether an error on field names b's member ("" as member: any error does). */
static bool big_named_by(const jsonfast_big *b, const char *field) {
    size_t n = strlen(b->member);
    return n == 0 || (field && strncmp(field, b->member, n) == 0 &&
                      (field[n] == '\0' || field[n] == '.' || field[n] == '['));
}

/* Numbers too large to read (jsonfast_loadb_big) hold a stand-in value: the payment is refused,
 * and each one's member named (out_of_range) unless its validation already named it (the amount
 * stood in by 1e99 is out of range, or not positive, like any other bad amount). Returns -1 when
 * there were such numbers, else rc. */
static int big_errors(pay_errors *errs, const jsonfast_big *big, size_t nbig, int rc) {
    for (size_t k = 0; k < nbig; k++) {
        bool named = false;
        for (int i = 0; i < errs->n && !named; i++) named = big_named_by(&big[k], errs->e[i].field);
        if (!named) pay_error_add(errs, big[k].path, "out_of_range", "is a number too large to represent");
    }
    return nbig ? -1 : rc;
}

/* One payment object: validated (else REJECTED with every bad field), pseudonymized, produced.
 * idem_id: the id derived from an Idempotency-Key, or NULL (then a random one, unless the body
 * has its own). own_id_wins: a body payment_id other than idem_id is taken as it is (batch items:
 * the documented retry of failed items adds their payment_id), else it is a 422. big[0..nbig):
 * numbers too large to read in body (big_errors). */
static void item_start(ingest *ing, ingest_item *it, const json_t *body, const char *idem_id,
                       bool own_id_wins, const jsonfast_big *big, size_t nbig) {
    pay_payment p;
    pay_pii raw;
    pay_errors errs;
    char random_id[37];
    if (!idem_id) uuid_v4(ing, random_id);
    int rc = pay_from_request(body, it->job->ctx.received_ms, idem_id ? idem_id : random_id, &p,
                              &raw, &errs);
    const char *own_id = json_string_value(json_object_get(body, "payment_id"));
    /* A body's own (valid) payment_id wins over the key's, unless they disagree: then the client is
     * confused about which payment this is, and guessing could merge two payments into one. */
    if (idem_id && !own_id_wins && own_id && fs_uuid_valid(own_id) &&
        strcasecmp(own_id, idem_id) != 0 && errs.n < PAY_ERRORS_MAX) {
        pay_error *e = &errs.e[errs.n++];
        snprintf(e->field, sizeof e->field, "payment_id");
        snprintf(e->code, sizeof e->code, "idempotency_conflict");
        snprintf(e->message, sizeof e->message,
                 "differs from the payment_id derived from the Idempotency-Key header");
        rc = -1;
    }
    rc = big_errors(&errs, big, nbig, rc);
    item_continue(ing, it, rc, &p, &raw, &errs);
}

/* item_start() straight from the item's text, without a JSON tree (pay_from_request_text: the
 * same verdicts). Returns false, having done nothing, for a text only the tree path reads. */
static bool item_start_text(ingest *ing, ingest_item *it, const char *text, size_t len,
                            const char *idem_id) {
    pay_payment p;
    pay_pii raw;
    pay_errors errs;
    char random_id[37];
    if (!idem_id) uuid_v4(ing, random_id);
    /* it declines a body payment_id next to idem_id: the conflict check above needs the tree */
    int rc = pay_from_request_text(text, len, it->job->ctx.received_ms,
                                   idem_id ? idem_id : random_id, &p, &raw, &errs);
    if (rc == 1) return false; /* p and raw hold nothing */
    item_continue(ing, it, rc, &p, &raw, &errs);
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * POST /api/v1/payments, POST /api/v1/payments/batch, POST /webhooks/orders/create
 * ------------------------------------------------------------------------------------------- */

/* "application/json", any case, parameters allowed ("application/json; charset=utf-8"). */
static bool content_type_is_json(const char *ct) {
    batch_format f;
    return batch_format_of(ct, &f) == 0 && f == BATCH_JSON_ARRAY;
}

/* UUIDv5(namespace, caller ":" key [suffix]): the same key from the same caller always names the
 * same payment, so a retry cannot create a second one. Returns -1 for an invalid key. */
static int idempotency_id(const char *caller, const char *key, const char *suffix, char out[37]) {
    char name[KEYS_ID_MAX + 1 + INGEST_IDEMPOTENCY_KEY_MAX + 48];
    size_t n = strlen(key);
    if (n == 0 || n > INGEST_IDEMPOTENCY_KEY_MAX) return -1;
    for (size_t i = 0; i < n; i++)
        if (key[i] < 0x20 || key[i] > 0x7e) return -1;
    int len = snprintf(name, sizeof name, "%s:%s%s", caller, key, suffix ? suffix : "");
    if (len < 0 || (size_t)len >= sizeof name) return -1;
    return fs_uuid_v5(INGEST_IDEMPOTENCY_NS, name, (size_t)len, out);
}

/* A batch item's payment_id under an Idempotency-Key: UUIDv5 of the key and the item's content
 * (batch_item_fingerprint), plus ".k" for the k-th repeat of the same content in the batch. From
 * the content, not the position: a retry of only the failed items, or of the items in another
 * order, gets the ids they had; a position would hand a resent item the id of another, already
 * stored, payment, and the scorer would drop it as that one's duplicate. print: the item's
 * (batch_fingerprints). Existing clients' retries depend on these ids: they never change (but
 * for items of arrays the fast parser declined, which hashed their re-serialization until the
 * texts of such arrays' items were hashed too: batch.h). */
static int batch_item_id(const char *caller, const char *key, const batch_print *print,
                         char out[37]) {
    char suffix[48] = "#";
    if (print->repeat < 0) return -1; /* not JSON: rejected anyway */
    fs_hex(print->sha, 16, suffix + 1);
    if (print->repeat) snprintf(suffix + 33, sizeof suffix - 33, ".%d", print->repeat);
    return idempotency_id(caller, key, suffix, out);
}

/* The checks every write shares: draining, content type, size, Idempotency-Key.
 * Returns 0 to go on (idem_id filled when the header is present), or -1 after replying. */
static int write_precheck(ingest *ing, ingest_ctx *ctx, size_t max_body, const char *suffix,
                          char idem_id[37], bool *has_idem) {
    struct evhttp_request *req = ctx->req;
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    size_t len = evbuffer_get_length(evhttp_request_get_input_buffer(req));
    const char *idem_key = evhttp_find_header(h, "Idempotency-Key");
    *has_idem = idem_key != NULL;
    if (ing->draining) { /* SIGTERM, or a fatal producer error (producer_fatal) */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_unavailable(ing, ctx, "shutting_down", "this instance is shutting down; retry");
    } else if (!httpreq_body_unencoded(req)) { /* RFC 9110 15.5.16: 415, naming what we take */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Accept-Encoding", "identity");
        reply_error(ing, ctx, 415, "unsupported_media_type",
                    "Content-Encoding is not supported: send the body uncompressed");
    } else if (len > max_body) {
        reply_error(ing, ctx, 413, "payload_too_large", "the body exceeds %zu bytes", max_body);
    } else if (idem_key && idempotency_id(ctx->caller, idem_key, suffix, idem_id) != 0) {
        reply_error(ing, ctx, 400, "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to %d printable ASCII characters",
                    INGEST_IDEMPOTENCY_KEY_MAX);
    } else {
        return 0;
    }
    return -1;
}

/* Parses the body as one JSON object; on failure replies 400 and returns NULL. New reference.
 * Numbers too large to read are in big[0..*nbig) (jsonfast_loadb_big): the caller refuses them. */
static json_t *body_object(ingest *ing, ingest_ctx *ctx, jsonfast_big big[INGEST_BIG_MAX],
                           size_t *nbig) {
    json_error_t jerr;
    struct evbuffer *in = evhttp_request_get_input_buffer(ctx->req);
    size_t len = evbuffer_get_length(in);
    const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
    json_t *body = jsonfast_loadb_big(data, len, &jerr, big, INGEST_BIG_MAX, nbig);
    if (!body) body = jsonfast_load_scalar(data, len); /* JSON all the same: not an object, below */
    if (!body) {
        reply_error(ing, ctx, 400, "malformed_json", "line %d column %d: %s", jerr.line,
                    jerr.column, jsonfast_error_text(&jerr));
        return NULL;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        reply_error(ing, ctx, 400, "invalid_body", "the body must be a JSON object");
        return NULL;
    }
    return body;
}

/* A one-payment job whose item has started: it answers the request from now on. */
static void single_started(ingest_ctx *ctx, ingest_job *job) {
    ctx->req = NULL; /* the job's ctx answers from now on */
    memcpy(job->ctx.payment_id, job->items[0].payment_id, sizeof job->ctx.payment_id);
    ctx_park(&job->ctx, CTX_WAIT_JOB);
    job_settle(job);
}

/* Runs a one-payment job for body and parks or answers the request. */
static void single_payment(ingest *ing, ingest_ctx *ctx, const json_t *body, const char *default_id,
                           const jsonfast_big *big, size_t nbig) {
    ingest_job *job = job_new(ing, ctx, JOB_PAYMENT, 1);
    if (!job) {
        reply_error(ing, ctx, 500, "internal_error", "out of memory");
        return;
    }
    item_start(ing, &job->items[0], body, default_id, false, big, nbig);
    single_started(ctx, job);
}

static void handle_post_payment(ingest *ing, ingest_ctx *ctx) {
    char idem_id[37];
    bool has_idem;
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(ctx->req), "Content-Type");
    if (!ing->draining && !content_type_is_json(ct)) {
        reply_error(ing, ctx, 415, "unsupported_media_type", "Content-Type must be application/json");
        return;
    }
    if (write_precheck(ing, ctx, ing->max_body_bytes, NULL, idem_id, &has_idem) != 0) return;
    struct evbuffer *in = evhttp_request_get_input_buffer(ctx->req);
    size_t len = evbuffer_get_length(in);
    const char *text = len ? (const char *)evbuffer_pullup(in, -1) : "";
    ingest_job *job = job_new(ing, ctx, JOB_PAYMENT, 1);
    if (!job) {
        reply_error(ing, ctx, 500, "internal_error", "out of memory");
        return;
    }
    if (item_start_text(ing, &job->items[0], text, len, has_idem ? idem_id : NULL)) {
        single_started(ctx, job);
        return;
    }
    job_free(job); /* nothing started: the tree path, which also answers malformed JSON */
    jsonfast_big big[INGEST_BIG_MAX];
    size_t nbig = 0;
    json_t *body = body_object(ing, ctx, big, &nbig);
    if (body) single_payment(ing, ctx, body, has_idem ? idem_id : NULL, big, nbig);
    json_decref(body);
}

static void handle_post_batch(ingest *ing, ingest_ctx *ctx) {
    char idem_id[37], errstr[256];
    bool has_idem;
    batch b;
    batch_format fmt;
    struct evhttp_request *req = ctx->req;
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (!ing->draining && batch_format_of(ct, &fmt) != 0) {
        reply_error(ing, ctx, 415, "unsupported_media_type",
                    "Content-Type must be application/json (an array) or application/x-ndjson");
        return;
    }
    if (write_precheck(ing, ctx, ing->batch_max_body_bytes, NULL, idem_id, &has_idem) != 0) return;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    batch_error be = batch_split_lazy(len ? (const char *)evbuffer_pullup(in, -1) : "", len, fmt,
                                      ing->batch_max_items, &b, errstr, sizeof errstr);
    ingest_job *job = be == BATCH_OK ? job_new(ing, ctx, JOB_BATCH, (uint32_t)b.n) : NULL;
    if (be != BATCH_OK || !job) {
        if (be == BATCH_OK) reply_error(ing, ctx, 500, "internal_error", "out of memory");
        else reply_error(ing, ctx, be == BATCH_TOO_MANY ? 413 : 400, batch_error_code(be), "%s", errstr);
        batch_free(&b);
        return;
    }
    const char *idem_key = evhttp_find_header(evhttp_request_get_input_headers(req), "Idempotency-Key");
    batch_print *prints = has_idem ? malloc(b.n * sizeof *prints) : NULL;
    if (has_idem && (!prints || batch_fingerprints(&b, prints) != 0)) {
        free(prints);
        job_free(job); /* nothing started */
        batch_free(&b);
        reply_error(ing, ctx, 500, "internal_error", "out of memory");
        return;
    }
    ctx->req = NULL; /* the job's ctx answers from now on */
    job->waiting++;  /* holds the job while the items start (some may settle at once) */
    for (uint32_t i = 0; i < job->n; i++) {
        ingest_item *it = &job->items[i];
        char item_id[37];
        bool derived = has_idem && batch_item_id(job->ctx.caller, idem_key, &prints[i], item_id) == 0;
        const batch_item *bi = &b.items[i];
        if (bi->text && item_start_text(ing, it, bi->text, bi->text_len, derived ? item_id : NULL))
            continue;
        if (!batch_item_value(&b, i)) {
            it->state = ITEM_REJECTED;
            it->code = "malformed_json";
            it->error = failure("malformed_json", bi->error);
        } else {
            item_start(ing, it, bi->value, derived ? item_id : NULL, true, bi->big, bi->nbig);
        }
    }
    free(prints);
    batch_free(&b);
    ctx_park(&job->ctx, CTX_WAIT_JOB);
    job->waiting--;
    job_settle(job);
}

/* A free order: nothing to score, nothing published; logged with its payment id. */
static void shopify_ignore_free(ingest *ing, ingest_ctx *ctx, const json_t *req) {
    const char *pid = json_string_value(json_object_get(req, "payment_id"));
    struct evbuffer *out = evhttp_request_get_output_buffer(ctx->req);
    log_msg(LOG_INFO, "shopify_free_order", "request %s: order of %s with total 0 (payment id %s) "
            "ignored", ctx->request_id, ctx->caller, pid ? pid : "-");
    evbuffer_add_printf(out, "{\"status\":\"ignored\",\"reason\":\"free_order\",\"message\":"
                        "\"an order with a total of 0 is not a payment; nothing was published\"}");
    reply_send(ing, ctx, 200, NULL);
}

static void handle_shopify(ingest *ing, ingest_ctx *ctx) {
    char idem_id[37], errstr[128];
    bool has_idem;
    struct evkeyvalq *h = evhttp_request_get_input_headers(ctx->req);
    struct evbuffer *in = evhttp_request_get_input_buffer(ctx->req);
    const char *shop = evhttp_find_header(h, "X-Shopify-Shop-Domain");
    const char *topic = evhttp_find_header(h, "X-Shopify-Topic");
    char shop_lc[256]; /* a DNS name: case-insensitive, so one spelling for the id and merchant */
    if (shop) {
        size_t i = 0;
        for (; shop[i] && i < sizeof shop_lc - 1; i++) shop_lc[i] = (char)tolower((unsigned char)shop[i]);
        shop_lc[i] = '\0';
        shop = shop_lc;
    }
    if (write_precheck(ing, ctx, ing->batch_max_body_bytes, NULL, idem_id, &has_idem) != 0) return;
    size_t len = evbuffer_get_length(in);
    /* The signature covers the raw bytes: checked before anything parses them. */
    if (shopify_verify(ing->shopify, shop, evhttp_find_header(h, "X-Shopify-Hmac-Sha256"),
                       len ? evbuffer_pullup(in, -1) : (const unsigned char *)"", len) != 0) {
        metric_add(ing->m.auth_failures, "shopify_signature", 1);
        reply_error(ing, ctx, 401, "invalid_signature",
                    "missing or wrong X-Shopify-Hmac-Sha256 for this X-Shopify-Shop-Domain");
        return;
    }
    snprintf(ctx->caller, sizeof ctx->caller, "shopify:%.120s", shop); /* domains: ~20-70 bytes */
    if (topic && strcmp(topic, "orders/create") != 0) {
        reply_error(ing, ctx, 400, "unsupported_topic", "only orders/create is accepted here");
        return;
    }
    jsonfast_big big[INGEST_BIG_MAX];
    size_t nbig = 0;
    json_t *order = body_object(ing, ctx, big, &nbig);
    if (!order) return;
    json_t *body = nbig ? NULL : shopify_order_to_request(order, shop, errstr, sizeof errstr);
    if (nbig) reply_error(ing, ctx, 422, "invalid_order", "%s: a number too large to represent",
                          big[0].path);
    else if (!body) reply_error(ing, ctx, 422, "invalid_order", "%s", errstr);
    else if (shopify_request_is_free(body)) shopify_ignore_free(ing, ctx, body);
    else single_payment(ing, ctx, body, NULL, NULL, 0);
    json_decref(body);
    json_decref(order);
}

/* ---------------------------------------------------------------------------------------------
 * POST /api/v1/payments/{payment_id}/outcome
 * ------------------------------------------------------------------------------------------- */

/* The path's payment id, lower-cased into ctx->payment_id. Returns 0, or -1 after replying 400:
 * not a UUID, or the nil UUID, which no payment has (a body's payment_id cannot be it either). */
static int path_payment_id(ingest *ing, ingest_ctx *ctx) {
    if (!fs_uuid_valid(ctx->path_id) || strspn(ctx->path_id, "0-") == strlen(ctx->path_id)) {
        reply_error(ing, ctx, 400, "invalid_payment_id",
                    "the payment id in the path must be a UUID, not the nil one (no payment has it)");
        return -1;
    }
    fs_uuid_lower(ctx->path_id);
    memcpy(ctx->payment_id, ctx->path_id, sizeof ctx->payment_id); /* a valid UUID: 36 + NUL */
    return 0;
}

static bool outcome_known(const char *s) {
    static const char *const OUTCOMES[] = {"confirmed_fraud", "false_positive", "chargeback",
                                           "legitimate"};
    for (size_t i = 0; s && i < sizeof OUTCOMES / sizeof OUTCOMES[0]; i++)
        if (strcmp(s, OUTCOMES[i]) == 0) return true;
    return false;
}

static void field_error(json_t *fields, const char *field, const char *code, const char *msg) {
    json_array_append_new(fields, json_pack("{s:s, s:s, s:s}", "field", field, "code", code,
                                            "message", msg));
}

/* Validates the outcome body; fills *known_ms. Returns the bad fields (empty array: valid). */
static json_t *outcome_check(const json_t *body, int64_t now_ms, int64_t *known_ms) {
    json_t *fields = json_array();
    const char *key;
    json_t *v;
    const char *outcome = json_string_value(json_object_get(body, "outcome"));
    const json_t *reason = json_object_get(body, "reason"), *known = json_object_get(body, "known_at");
    *known_ms = now_ms;
    if (!json_object_get(body, "outcome")) field_error(fields, "outcome", "required", "is required");
    else if (!outcome) field_error(fields, "outcome", "invalid_type", "must be a string");
    else if (!outcome_known(outcome))
        field_error(fields, "outcome", "invalid", "must be confirmed_fraud, false_positive, "
                    "chargeback or legitimate");
    if (reason && !json_is_null(reason) && !json_is_string(reason))
        field_error(fields, "reason", "invalid_type", "must be a string");
    else if (json_is_string(reason) && json_string_length(reason) > INGEST_REASON_MAX)
        field_error(fields, "reason", "too_long", "must be at most 500 bytes");
    else if (json_is_string(reason) &&
             pay_text_has_personal(json_string_value(reason), json_string_length(reason)))
        field_error(fields, "reason", "personal_data", "must not hold an email address or a card "
                    "number (raw personal data is never stored)");
    const char *code = "invalid"; /* the payment timestamp's bounds: the scorer reads no other */
    char msg[120] = "must be an RFC 3339 timestamp";
    if (known && !json_is_null(known) && !json_is_string(known))
        field_error(fields, "known_at", "invalid_type", "must be a string (an RFC 3339 timestamp)");
    else if (json_is_string(known) &&
             pay_time_check(json_string_value(known), now_ms, known_ms, &code, msg, sizeof msg) != 0)
        field_error(fields, "known_at", code, msg);
    json_object_foreach((json_t *)body, key, v) {
        if (strcmp(key, "outcome") && strcmp(key, "reason") && strcmp(key, "known_at"))
            field_error(fields, key, "unknown_field", "is not a field of the outcome contract");
    }
    return fields;
}

/* As big_errors(), for the outcome's field list: every number too large to read is a bad field
 * (none of the outcome's fields is a number, so the members are mostly named already). */
static void outcome_big_errors(json_t *fields, const jsonfast_big *big, size_t nbig) {
    for (size_t k = 0; k < nbig; k++) {
        size_t i;
        json_t *f;
        bool named = false;
        json_array_foreach(fields, i, f)
            named = named || big_named_by(&big[k], json_string_value(json_object_get(f, "field")));
        if (!named) field_error(fields, big[k].path, "out_of_range", "is a number too large to represent");
    }
}

/* The payment_outcomes message (schemas/json/payment-outcome.v1.json). */
static char *outcome_encode(const ingest_job *job, const json_t *body, int64_t known_ms) {
    char known[25], received[25];
    fs_time_format_rfc3339(known_ms, known);
    fs_time_format_rfc3339(job->ctx.received_ms, received);
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:s}", "schema_version",
                          OUTCOME_SCHEMA_VERSION, "outcome_id", job->outcome_id, "payment_id",
                          job->ctx.path_id, "outcome",
                          json_string_value(json_object_get(body, "outcome")), "known_at", known,
                          "received_at", received, "source", job->ctx.caller);
    const char *reason = json_string_value(json_object_get(body, "reason"));
    if (o && reason) json_object_set_new(o, "reason", json_string(reason));
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return text;
}

static void handle_post_outcome(ingest *ing, ingest_ctx *ctx) {
    char idem_id[37];
    bool has_idem;
    int64_t known_ms;
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(ctx->req), "Content-Type");
    if (path_payment_id(ing, ctx) != 0) return;
    if (!ing->draining && !content_type_is_json(ct)) {
        reply_error(ing, ctx, 415, "unsupported_media_type", "Content-Type must be application/json");
        return;
    }
    /* The payment is part of the outcome's identity: one key reused for labels of two payments
     * must not make the second a duplicate of the first (the scorer stores a label once by id). */
    char suffix[16 + INGEST_PATH_ID_MAX];
    snprintf(suffix, sizeof suffix, ":outcome:%s", ctx->path_id);
    if (write_precheck(ing, ctx, ing->max_body_bytes, suffix, idem_id, &has_idem) != 0) return;
    jsonfast_big big[INGEST_BIG_MAX];
    size_t nbig = 0;
    json_t *body = body_object(ing, ctx, big, &nbig);
    if (!body) return;
    json_t *fields = outcome_check(body, ctx->received_ms, &known_ms);
    outcome_big_errors(fields, big, nbig);
    ingest_job *job = json_array_size(fields) ? NULL : job_new(ing, ctx, JOB_OUTCOME, 1);
    if (!job) {
        if (json_array_size(fields))
            reply_json(ing, ctx, 422, json_pack("{s:s, s:s, s:O}", "error", "validation_failed",
                                                "message", "invalid outcome", "fields", fields));
        else reply_error(ing, ctx, 500, "internal_error", "out of memory");
    } else {
        ctx->req = NULL; /* the job's ctx answers from now on */
        if (has_idem) memcpy(job->outcome_id, idem_id, sizeof idem_id);
        else uuid_v4(ing, job->outcome_id);
        ingest_item *it = &job->items[0];
        memcpy(it->payment_id, job->ctx.path_id, sizeof it->payment_id);
        char *msg = outcome_encode(job, body, known_ms);
        if (msg) {
            item_produce(ing, it, ing->outcomes_rkt, STR(OUTCOME_SCHEMA_VERSION), it->payment_id,
                         msg, strlen(msg), "outcome_id", job->outcome_id);
            if (it->state == ITEM_PRODUCING) job->waiting++;
        } else {
            item_fail(ing, it, "internal_error", "could not encode the outcome");
        }
        ctx_park(&job->ctx, CTX_WAIT_JOB);
        job_settle(job);
    }
    json_decref(fields);
    json_decref(body);
}

/* ---------------------------------------------------------------------------------------------
 * GET /api/v1/payments/{payment_id}
 * ------------------------------------------------------------------------------------------- */

/* Whose payments the caller may read (payments.source): its own with payments:read; NULL, every
 * one (Shopify's and those of unknown source too), with payments:read_all or auth off. */
static const char *read_owner(const ingest_ctx *ctx) {
    return ctx->scopes & KEYS_SCOPE_PAYMENTS_READ_ALL ? NULL : ctx->caller;
}

/* Another source's payment answers exactly as an unknown id (OWASP API1): the same 404 and body,
 * and the request's log line (debug) names the caller, never the payment's owner. */
static void on_read(pgread_status st, json_t *result, void *arg) {
    read_wait *rw = arg;
    ingest *ing = rw->ing;
    ingest_ctx *ctx = &rw->ctx;
    if (!ctx->req) { /* the client left */
    } else if (st == PGREAD_FOUND) {
        reply_json(ing, ctx, 200, json_incref(result));
    } else if (st == PGREAD_NOT_FOUND && recent_has(ing->recent, ctx->path_id, read_owner(ctx))) {
        reply_json(ing, ctx, 200, json_pack("{s:s, s:s}", "payment_id", ctx->path_id, "status", "pending"));
    } else if (st == PGREAD_NOT_FOUND || st == PGREAD_NOT_OWNED) {
        reply_error(ing, ctx, 404, "not_found", "no payment with this id (a payment accepted by "
                    "another ingest instance shows up once a scorer has stored it)");
    } else {
        reply_unavailable(ing, ctx, "database_unavailable", "PostgreSQL cannot answer now; retry");
    }
    json_decref(result);
    free(rw);
}

static void handle_get_payment(ingest *ing, ingest_ctx *ctx) {
    if (path_payment_id(ing, ctx) != 0) return;
    if (!ing->pgread) {
        reply_unavailable(ing, ctx, "database_unavailable", "no database-url is configured");
        return;
    }
    read_wait *rw = calloc(1, sizeof *rw);
    if (!rw) {
        reply_error(ing, ctx, 500, "internal_error", "out of memory");
        return;
    }
    rw->ing = ing;
    rw->ctx = *ctx;
    if (!pgread_payment(ing->pgread, ctx->path_id, read_owner(ctx), on_read, rw)) {
        free(rw);
        reply_unavailable(ing, ctx, "database_unavailable", "PostgreSQL cannot answer now; retry");
        return;
    }
    ctx_park(&rw->ctx, CTX_WAIT_READ); /* rw is pgread's until on_read */
}

/* ---------------------------------------------------------------------------------------------
 * Delivery reports: the only place a produced payment or outcome gets its answer.
 * ------------------------------------------------------------------------------------------- */

/* The item's outcome from its message's delivery report. */
static void delivery_settle(ingest *ing, ingest_item *it, const rd_kafka_message_t *m) {
    /* produce -> broker acknowledgement (acks=all): the durable write's share of a request's time */
    metric_observe(ing->m.delivery_latency, NULL, (double)rd_kafka_message_latency(m) / 1e6);
    if (m->err) {
        ing->n.delivery_failures++;
        metric_add(ing->m.delivery_failures, NULL, 1);
        ing->payments_failed++;
        log_msg(LOG_WARN, "delivery_failed", "payment %s (request %s): %s", it->payment_id,
                it->job->ctx.request_id, rd_kafka_err2str(m->err));
        if (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE) /* drain timeout, fatal error: never sent */
            item_finish_failed(it, "shutting_down", DRAIN_NOT_SENT);
        else if (m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) /* sent, the answer never read */
            item_finish_failed(it, "shutting_down", DRAIN_UNKNOWN);
        else
            item_finish_failed(it, "broker_unavailable", "the payment could not be stored durably; "
                               "retry with the same Idempotency-Key or payment_id");
        return;
    }
    if (!ing->fatal) ing->ready = true;
    if (it->job->kind != JOB_OUTCOME) {
        ing->n.payments_accepted++;
        recent_add(ing->recent, it->payment_id, it->job->ctx.caller); /* payments.source */
    }
    item_finish(it, ITEM_ACCEPTED, NULL);
}

/* librdkafka's dr_msg_cb, called from rd_kafka_poll() on the loop thread, once per message. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    ingest *ing = opaque;
    (void)rk;
    ing->producing--;
    delivery_settle(ing, m->_private, m); /* the item is ours again: the message is done with it */
    drain_check(ing); /* a request whose client left answers nobody: its report may end the drain */
}

/* ---------------------------------------------------------------------------------------------
 * librdkafka events served on the loop: delivery reports, errors, statistics.
 * ------------------------------------------------------------------------------------------- */

static void readiness_set(ingest *ing, bool ready, const char *why) {
    if (ing->fatal || ing->ready == ready) return;
    ing->ready = ready;
    log_msg(ready ? LOG_INFO : LOG_WARN, ready ? "ready" : "not_ready", "%s", why);
}

/* librdkafka writes kafka_pipe[1] only when its main queue goes from empty to non-empty, so each
 * wake-up drains the pipe and then the whole queue. */
static void on_kafka_events(evutil_socket_t fd, short what, void *arg) {
    ingest *ing = arg;
    char buf[256];
    (void)what;
    while (read(fd, buf, sizeof buf) > 0) {
    }
    while (rd_kafka_poll(ing->rk, 0) > 0) {
    }
}

/* A fatal producer error (the idempotent producer fenced or refused its producer id, or out of
 * step with a broker's sequence numbers): this producer never delivers again. librdkafka fails what
 * it had queued (PURGE_QUEUE reports) and what is in flight ends in its own report. The instance
 * then stops the way SIGTERM stops it (ingest_drain: no new connections, new requests 503
 * shutting_down, every waiting request answered: 202 only for what the broker acknowledged, 503
 * from its delivery report for the rest) and the process exits 1 (main.c, ingest_fatal_error),
 * like the scorer and the alerter on theirs: Kubernetes restarts it with a new producer, and a
 * fault that comes back every time shows as restarts, not as one pod quietly out of the Service.
 * Staying up unready (as before) needed someone to restart it by hand: /health had no reason to
 * fail. Exiting at once would have left the waiting clients without an answer. */
static void producer_fatal(ingest *ing, const char *why) {
    if (ing->fatal) return;
    ing->fatal = true;
    ing->ready = false;
    snprintf(ing->fatal_error, sizeof ing->fatal_error, "%s", why);
    log_fields(LOG_ERROR, "kafka_fatal", json_pack("{s:s}", "error", why),
               "fatal producer error: stopping (the requests in flight get their answers), then "
               "exit 1");
    ingest_drain(ing);
}

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    ingest *ing = opaque;
    char fatal[512];
    if (err == RD_KAFKA_RESP_ERR__FATAL && rd_kafka_fatal_error(rk, fatal, sizeof fatal)) {
        producer_fatal(ing, fatal);
        return;
    }
    log_msg(LOG_WARN, "kafka_error", "%s: %s", rd_kafka_err2name(err), reason);
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) readiness_set(ing, false, reason);
}

/* The value of the string member at p (just past its opening quote) into out. */
static void stats_word(const char *p, const char *end, char *out, size_t size) {
    size_t n = 0;
    while (p + n < end && p[n] != '"' && n + 1 < size) n++;
    memcpy(out, p, n);
    out[n] = '\0';
}

/* Whether a real broker (not librdkafka's internal or logical ones) is UP, read straight from the
 * statistics text: each broker object has "source":"..." followed by "state":"...", and no other
 * object has a "source" member. Parsing the whole document with jansson cost a few ms of the loop
 * every second (2 topics x 24 partitions). Returns -1 when the text does not look like that. */
static int stats_broker_up(const char *stats, size_t len, bool *up) {
    static const char SOURCE[] = "\"source\":\"", STATE[] = "\"state\":\"";
    const char *end = stats + len, *p = stats, *src, *st;
    char source[32], state[32];
    int brokers = 0;
    *up = false;
    while ((src = memmem(p, (size_t)(end - p), SOURCE, sizeof SOURCE - 1))) {
        src += sizeof SOURCE - 1;
        st = memmem(src, (size_t)(end - src), STATE, sizeof STATE - 1);
        const char *next = memmem(src, (size_t)(end - src), SOURCE, sizeof SOURCE - 1);
        if (!st || (next && next < st)) return -1;
        st += sizeof STATE - 1;
        stats_word(src, end, source, sizeof source);
        stats_word(st, end, state, sizeof state);
        if (strcmp(source, "internal") && strcmp(source, "logical") && !strcmp(state, "UP")) *up = true;
        brokers++;
        p = st;
    }
    return brokers > 0 ? 0 : -1;
}

/* Readiness must come back after an outage even without traffic (an instance nobody routes to
 * would never deliver anything): the periodic statistics say whether any broker is UP. */
static int on_kafka_stats(rd_kafka_t *rk, char *stats, size_t len, void *opaque) {
    ingest *ing = opaque;
    const char *name, *source;
    json_t *b, *root = NULL;
    bool up = false;
    (void)rk;
    if (stats_broker_up(stats, len, &up) == 0) {
        readiness_set(ing, up, up ? "a broker connection is up" : "no broker connection is up");
        return 0; /* librdkafka frees stats */
    }
    root = json_loadb(stats, len, 0, NULL); /* an unexpected layout: the slow, sure way */
    json_object_foreach(json_object_get(root, "brokers"), name, b) {
        source = json_string_value(json_object_get(b, "source"));
        if (source && (!strcmp(source, "internal") || !strcmp(source, "logical"))) continue;
        const char *state = json_string_value(json_object_get(b, "state"));
        up = up || (state && !strcmp(state, "UP"));
    }
    if (root) readiness_set(ing, up, up ? "a broker connection is up" : "no broker connection is up");
    json_decref(root);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------------------------- */

static int kafka_conf_defaults(rd_kafka_conf_t *conf, const cfg_props *props, char *errstr,
                               size_t errstr_size) {
    static const char *const DEFAULTS[][2] = {
        {"message.timeout.ms", "5000"},        /* a dead broker becomes a 503 within ~5 s */
        /* librdkafka 2.0 notices a timed-out message only when the broker thread wakes up, which a
         * down broker does at its reconnect backoff (up to 10 s by default): cap it, so the 503
         * comes within message.timeout.ms + 1 s, and recovery is as quick. */
        {"reconnect.backoff.max.ms", "1000"},
        /* Batching without hurting latency: measured on the dev broker, 5 ms doubled the p50 of a
         * single payment at half load; under load batches still form (see BENCHMARKS.md). */
        {"linger.ms", "1"},
        {"compression.codec", "lz4"},          /* JSON compresses ~4x: less broker memory and I/O */
        {"statistics.interval.ms", "1000"},    /* readiness recovery, see on_kafka_stats */
    };
    for (size_t i = 0; i < sizeof DEFAULTS / sizeof DEFAULTS[0]; i++)
        if (kafka_conf_default(conf, props, DEFAULTS[i][0], DEFAULTS[i][1], errstr, errstr_size))
            return -1;
    /* A request waits for its delivery report: 0 (librdkafka: no limit) would hold it for ever
     * while the brokers are down, where the contract is a 503 with Retry-After. */
    char v[32];
    size_t vs = sizeof v;
    long ms = rd_kafka_conf_get(conf, "message.timeout.ms", v, &vs) == RD_KAFKA_CONF_OK ? atol(v) : 0;
    if (ms < 1 || ms > INGEST_MESSAGE_TIMEOUT_MAX_MS) {
        snprintf(errstr, errstr_size, "kafka property message.timeout.ms (delivery.timeout.ms) must be "
                 "1..%d: a request waits for its delivery report (0 would wait for ever with the "
                 "brokers down, instead of answering 503)", INGEST_MESSAGE_TIMEOUT_MAX_MS);
        return -1;
    }
    vs = sizeof v;
    if (rd_kafka_conf_get(conf, "statistics.interval.ms", v, &vs) == RD_KAFKA_CONF_OK && atol(v) < 1) {
        snprintf(errstr, errstr_size, "kafka property statistics.interval.ms must be at least 1: "
                 "after the brokers were down, ingest turns ready again from the statistics (with "
                 "no traffic while not ready, no delivery report would)");
        return -1;
    }
    return 0;
}

static int kafka_setup(ingest *ing, const ingest_config *cfg, char *errstr, size_t errstr_size) {
    const char *topics[] = {cfg->topic, cfg->outcomes_topic, NULL};
    rd_kafka_conf_t *conf = kafka_conf_new(cfg->brokers, cfg->props, errstr, errstr_size);
    if (!conf) return -1;
    if (kafka_conf_defaults(conf, cfg->props, errstr, errstr_size) != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_opaque(conf, ing);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_kafka_error);
    rd_kafka_conf_set_stats_cb(conf, on_kafka_stats);
    ing->rk = kafka_producer_new(conf, cfg->props, errstr, errstr_size); /* takes conf, also on failure */
    if (!ing->rk) return -1;
    ing->rkt = rd_kafka_topic_new(ing->rk, cfg->topic, NULL);
    ing->outcomes_rkt = rd_kafka_topic_new(ing->rk, cfg->outcomes_topic, NULL);
    if (!ing->rkt || !ing->outcomes_rkt) {
        snprintf(errstr, errstr_size, "topics: %s", rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    if (kafka_wait_topics(ing->rk, topics, cfg->startup_timeout_ms, errstr, errstr_size) != 0)
        return -1;
    ing->ready = true; /* the brokers just answered */
    return 0;
}

/* Routes librdkafka's main queue into the loop: no timer, no polling thread. */
static int kafka_events_setup(ingest *ing, char *errstr, size_t errstr_size) {
    if (pipe2(ing->kafka_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errstr, errstr_size, "pipe: %s", strerror(errno));
        return -1;
    }
    ing->kafka_ev = event_new(ing->base, ing->kafka_pipe[0], EV_READ | EV_PERSIST, on_kafka_events, ing);
    if (!ing->kafka_ev || event_add(ing->kafka_ev, NULL) != 0) {
        snprintf(errstr, errstr_size, "cannot watch the Kafka event pipe");
        return -1;
    }
    ing->mainq = rd_kafka_queue_get_main(ing->rk);
    rd_kafka_queue_io_event_enable(ing->mainq, ing->kafka_pipe[1], "1", 1);
    /* Events queued before the fd was attached never wrote it: serve them once now. */
    event_active(ing->kafka_ev, EV_READ, 0);
    return 0;
}

/* Every counter series whose labels are known up front exists from the start at 0: a series
 * that appears only at its first increment hides that increment from rate() and increase() (the
 * first delivery failure, refused key or 429 an alert must see). Routes x statuses stay lazy:
 * which ones occur depends on the traffic. */
static void metrics_zero(ingest_metrics *m) {
    metric *plain[] = {m->delivery_failures, m->rate_limited, m->digest_hits, m->digest_misses,
                       m->key_hits, m->key_misses};
    static const char *const auth[] = {"missing", "malformed", "invalid", "scope",
                                       "shopify_signature"};
    static const char *const results[] = {"accepted", "rejected", "failed"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) metric_add(plain[i], NULL, 0);
    for (size_t i = 0; i < sizeof auth / sizeof auth[0]; i++) metric_add(m->auth_failures, auth[i], 0);
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) metric_add(m->payments, results[i], 0);
    /* The 5xx an alert fires on exist from the start: increase() over a series whose first sample
     * is already 1 sees no increase, so a route's first 500 would go unnoticed. */
    static const int server_errors[] = {500, 503};
    for (const ingest_route *r = ROUTES; r->path; r++) {
        metric_add(m->clients_gone, r->name, 0);
        for (size_t i = 0; i < sizeof server_errors / sizeof server_errors[0]; i++) {
            char labels[64];
            snprintf(labels, sizeof labels, "%s,%d", r->name, server_errors[i]);
            metric_add(m->requests, labels, 0);
        }
    }
}

static int metrics_setup(ingest *ing) {
    ingest_metrics *m = &ing->m;
    const double *lat = METRICS_LATENCY_BUCKETS;
    size_t nlat = METRICS_LATENCY_NBUCKETS;
    if (!(m->reg = metrics_new())) return -1;
#define C(field, name, help, labels) (m->field = metrics_counter(m->reg, name, help, labels))
#define G(field, name, help) (m->field = metrics_gauge(m->reg, name, help, NULL))
    bool ok = C(requests, "fs_ingest_requests_total", "HTTP requests answered", "route,status") &&
        (m->latency = metrics_histogram(m->reg, "fs_ingest_request_duration_seconds",
                                        "time from a complete request to its answer", "route", lat, nlat)) &&
        (m->delivery_latency = metrics_histogram(m->reg, "fs_ingest_delivery_duration_seconds",
                                                 "time from producing a message to the broker's "
                                                 "acknowledgement (or its failure)", NULL, lat, nlat)) &&
        G(in_flight, "fs_ingest_requests_in_flight", "requests received and not yet answered") &&
        G(queue_depth, "fs_ingest_producer_queue_depth", "messages in the producer not yet delivered") &&
        C(delivery_failures, "fs_ingest_delivery_failures_total",
          "messages not stored: refused by the producer queue or not acknowledged by the broker",
          NULL) &&
        C(auth_failures, "fs_ingest_auth_failures_total", "refused credentials", "reason") &&
        C(rate_limited, "fs_ingest_rate_limited_total", "requests refused with 429", NULL) &&
        C(clients_gone, "fs_ingest_clients_gone_total", "requests whose connection closed before "
          "their answer (the client gave up, or shutdown's drain ended); what they started still "
          "finishes", "route") &&
        C(key_verifications, "fs_ingest_key_verifications_total",
          "API key secrets verified with Argon2 (not cached, not refused by a check tag)", NULL) &&
        C(payments, "fs_ingest_payments_total", "payments by outcome of their delivery", "result") &&
        G(connections, "fs_ingest_connections", "open HTTP connections") &&
        C(digest_hits, "fs_ingest_digest_cache_hits_total", "pseudonymization cache hits", NULL) &&
        C(digest_misses, "fs_ingest_digest_cache_misses_total", "pseudonymization cache misses (Argon2)", NULL) &&
        G(digest_ratio, "fs_ingest_digest_cache_hit_ratio", "hits / lookups of the digest cache since start") &&
        C(key_hits, "fs_ingest_key_cache_hits_total", "API key cache hits", NULL) &&
        C(key_misses, "fs_ingest_key_cache_misses_total", "API key cache misses (Argon2)", NULL) &&
        G(key_ratio, "fs_ingest_key_cache_hit_ratio", "hits / lookups of the API key cache since start") &&
        G(workers_pending, "fs_ingest_argon2_tasks_pending", "Argon2 tasks queued or running") &&
        G(read_connections, "fs_ingest_read_connections_up", "PostgreSQL read connections up") &&
        G(ready, "fs_ingest_ready", "1 while /ready answers 200: a broker connection is up, no "
                                    "fatal producer error, not shutting down") &&
        (m->pii_key_info = metrics_gauge(m->reg, "fs_ingest_pii_key_info", "the pseudonymization "
                                         "key in use: one series, 1, labelled with its key id "
                                         "(the pii_key_id header of raw_payments)", "key_id"));
#undef C
#undef G
    if (ok) metrics_zero(m);
    return ok ? 0 : -1;
}

static void log_listening(struct evhttp_bound_socket *bound, const char *addr, const char *scheme,
                          bool admin) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int port = 0;
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    log_fields(LOG_INFO, "listening", json_pack("{s:s, s:i, s:s, s:s}", "addr", addr, "port", port,
                                                "scheme", scheme, "serves", admin ? "admin" : "api"),
               "listening on %s://%s:%d (%s)", scheme, addr, port,
               admin ? "admin: /health, /ready, /metrics" : "API");
}

/* One evhttp (plain or TLS) with the limits, bound to addr:port, requests to cb. */
static struct evhttp *http_server(ingest *ing, const ingest_config *cfg, SSL_CTX *tls,
                                  const char *addr, int port, void (*cb)(struct evhttp_request *, void *),
                                  struct evhttp_bound_socket **bound, char *errstr, size_t errstr_size) {
    struct timeval io = {cfg->io_timeout_ms / 1000, (cfg->io_timeout_ms % 1000) * 1000};
    size_t biggest = cfg->max_body_bytes > cfg->batch_max_body_bytes ? cfg->max_body_bytes
                                                                     : cfg->batch_max_body_bytes;
    struct evhttp *http = evhttp_new(ing->base);
    if (!http) {
        snprintf(errstr, errstr_size, "evhttp_new failed");
        return NULL;
    }
    conns_attach(ing->conns, http, tls);
    evhttp_set_gencb(http, cb, ing);
    evhttp_set_allowed_methods(http, INGEST_ALL_METHODS);
    evhttp_set_max_headers_size(http, (ev_ssize_t)cfg->max_header_bytes);
    evhttp_set_max_body_size(http, (ev_ssize_t)(biggest * INGEST_HARD_BODY_FACTOR));
    evhttp_set_timeout_tv(http, &io);
    *bound = evhttp_bind_socket_with_handle(http, addr, (ev_uint16_t)port);
    if (!*bound) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d: %s", addr, port, strerror(errno));
        return http;
    }
    log_listening(*bound, addr, tls ? "https" : "http", cb == on_admin_request);
    return http;
}

/* The admin listener is not paused with the API ports at max-connections: a scrape or a probe
 * still gets through a flood (its few connections do count towards the limit). */
static int http_setup(ingest *ing, const ingest_config *cfg, char *errstr, size_t errstr_size) {
    struct evhttp_bound_socket *admin = NULL;
    ing->http = http_server(ing, cfg, NULL, cfg->listen_addr, cfg->listen_port, on_request,
                            &ing->listener, errstr, errstr_size);
    if (!ing->listener) return -1;
    conns_add_listener(ing->conns, ing->listener);
    if (cfg->admin_port >= 0) {
        ing->ops_apart = true;
        ing->admin_http = http_server(ing, cfg, NULL, cfg->admin_addr, cfg->admin_port,
                                      on_admin_request, &admin, errstr, errstr_size);
        if (!admin) return -1;
    }
    if (cfg->tls_port < 0) return 0;
    SSL_CTX *tls = conns_tls_load(cfg->tls_cert_file, cfg->tls_key_file, errstr, errstr_size);
    if (!tls) return -1;
    ing->https = http_server(ing, cfg, tls, cfg->listen_addr, cfg->tls_port, on_request,
                             &ing->tls_listener, errstr, errstr_size);
    SSL_CTX_free(tls); /* conns holds its own reference */
    if (!ing->tls_listener) return -1;
    conns_add_listener(ing->conns, ing->tls_listener);
    return 0;
}

/* The helpers: workers, caches, the read pool. */
static int helpers_setup(ingest *ing, const ingest_config *cfg, char *errstr, size_t errstr_size) {
    pii *pi = pii_new(cfg->pii_secret, cfg->pii_secret_len, &cfg->pii, errstr, errstr_size);
    if (!pi) return -1;
    ing->pii_params = cfg->pii;
    ing->gen = pii_gen_new(pi); /* takes pi */
    ing->workers = workers_new(ing->base, cfg->worker_threads, cfg->worker_queue, errstr, errstr_size);
    ing->key_cache = keys_cache_new(cfg->key_cache_slots);
    ing->ratelimit = ratelimit_new();
    ing->verify_limit = ratelimit_new();
    ing->auth_verify_rate = cfg->auth_verify_rate;
    ing->auth_max_pending = cfg->auth_max_pending > 0 ? cfg->auth_max_pending : 16;
    ing->recent = recent_new(cfg->recent_ids);
    if (!ing->workers) return -1;
    if (!ing->gen || !ing->key_cache || !ing->ratelimit || !ing->verify_limit || !ing->recent ||
        metrics_setup(ing) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    const char *id = pii_key_id(ing->gen->pii);
    metric_info_swap(ing->m.pii_key_info, NULL, id);
    log_fields(LOG_INFO, "pii_key_loaded", json_pack("{s:s}", "pii_key_id", id),
               "pseudonymization key %s (its id, not the secret)", id);
    if (cfg->database_url && cfg->database_url[0]) {
        ing->pgread = pgread_new(ing->base, cfg->database_url, cfg->read_pool_size,
                                 cfg->read_timeout_ms, errstr, errstr_size);
        if (!ing->pgread) return -1;
    }
    return 0;
}

ingest *ingest_new(struct event_base *base, const ingest_config *cfg, char *errstr,
                   size_t errstr_size) {
    ingest *ing = calloc(1, sizeof *ing);
    if (!ing) {
        snprintf(errstr, errstr_size, "out of memory");
        keys_destroy(cfg->keys);
        shopify_destroy(cfg->shopify);
        return NULL;
    }
    ing->base = base;
    ing->geo = geoip_new(""); /* never fails for a missing database: lookups answer "" */
    ing->keys = cfg->keys; /* ownership: ours now (also on failure) */
    ing->shopify = cfg->shopify;
    ing->kafka_pipe[0] = ing->kafka_pipe[1] = -1;
    ing->auth = cfg->auth;
    ing->max_body_bytes = cfg->max_body_bytes;
    ing->batch_max_items = cfg->batch_max_items;
    ing->batch_max_body_bytes = cfg->batch_max_body_bytes;
    ing->retry_after_seconds = cfg->retry_after_seconds;
    ing->shutdown_timeout_ms = cfg->shutdown_timeout_ms;
    ing->tls_cert_file = cfg->tls_cert_file ? strdup(cfg->tls_cert_file) : NULL;
    ing->tls_key_file = cfg->tls_key_file ? strdup(cfg->tls_key_file) : NULL;
    /* conns first: it sets the event priorities, which must precede every other event. */
    ing->conns = conns_new(base, cfg->max_connections, cfg->request_timeout_ms, on_client_gone, ing,
                           errstr, errstr_size);
    if (ing->conns) conns_set_close_check(ing->conns, cfg->client_close_check);
    if (!ing->conns || helpers_setup(ing, cfg, errstr, errstr_size) != 0 ||
        kafka_setup(ing, cfg, errstr, errstr_size) != 0 ||
        kafka_events_setup(ing, errstr, errstr_size) != 0 ||
        http_setup(ing, cfg, errstr, errstr_size) != 0)
        goto failed;
    if (!ing->auth)
        log_msg(LOG_WARN, "auth_disabled", "API KEY AUTHENTICATION IS OFF (auth=false): anyone who "
                "can reach this port can post and read payments. Development only.");
    return ing;
failed:
    ingest_destroy(ing);
    return NULL;
}

int ingest_reload(ingest *ing, keys *k, shopify *s, char *errstr, size_t errstr_size) {
    int rc = 0;
    if (k) {
        keys_destroy(ing->keys);
        ing->keys = k; /* ownership: ours */
        keys_cache_clear(ing->key_cache);
    }
    if (s) {
        shopify_destroy(ing->shopify);
        ing->shopify = s;
    }
    if (ing->https && ing->tls_cert_file) {
        SSL_CTX *tls = conns_tls_load(ing->tls_cert_file, ing->tls_key_file, errstr, errstr_size);
        if (tls) conns_set_tls(ing->conns, tls);
        else rc = -1;
        SSL_CTX_free(tls);
    }
    log_msg(LOG_INFO, "reloaded", "%zu API keys, %zu Shopify shops%s", keys_count(ing->keys),
            shopify_count(ing->shopify), rc ? " (TLS files NOT reloaded)" : "");
    return rc;
}

/* A SIGHUP's secret on its way to a pseudonymizer: pii_new() runs Argon2 once (the key id), tens
 * to hundreds of milliseconds the loop must not stall for, so it runs on a worker. seq: the
 * rekey_seq of its SIGHUP; a newer SIGHUP's result wins whatever order the workers finish in. */
typedef struct rekey_task {
    ingest *ing;
    unsigned seq;
    pii_params params;
    unsigned char *secret; /* a copy, wiped and freed with the task */
    size_t secret_len;
    pii *pi; /* run's result, or NULL with errstr */
    char errstr[256];
} rekey_task;

static void rekey_free(rekey_task *t) {
    if (t->secret) OPENSSL_cleanse(t->secret, t->secret_len);
    free(t->secret);
    free(t);
}

static void rekey_run(void *arg) {
    rekey_task *t = arg;
    t->pi = pii_new(t->secret, t->secret_len, &t->params, t->errstr, sizeof t->errstr);
}

/* Replaces the pseudonymizer in force by pi (taken). */
static void rekey_apply(ingest *ing, pii *pi) {
    char old[PII_KEY_ID_HEX + 1];
    snprintf(old, sizeof old, "%s", pii_key_id(ing->gen->pii));
    if (strcmp(old, pii_key_id(pi)) == 0) { /* the same secret: keep the warm cache */
        pii_destroy(pi);
        log_msg(LOG_INFO, "pii_key_reloaded", "pseudonymization key %s unchanged", old);
        return;
    }
    pii_gen *g = pii_gen_new(pi); /* takes pi */
    if (!g) {
        log_msg(LOG_ERROR, "reload_failed", "PII secret not reloaded (the current one stays): out "
                "of memory");
        return;
    }
    ingest_metrics *m = &ing->m;
    uint64_t hits, misses;
    pii_stats(ing->gen->pii, &hits, &misses); /* the counters go on from the old one's totals */
    m->retired_digest_hits += hits;
    m->retired_digest_misses += misses;
    pii_gen_release(ing->gen); /* tasks in flight keep the old one until they are done */
    ing->gen = g;
    const char *id = pii_key_id(g->pii);
    metric_info_swap(m->pii_key_info, old, id);
    log_fields(LOG_WARN, "pii_key_changed", json_pack("{s:s, s:s}", "old_pii_key_id", old,
                                                      "new_pii_key_id", id),
               "pseudonymization key %s replaced by %s: digests of the same email, IP, card or "
               "device differ from now on (every ingest instance must use the same key)", old, id);
}

static void rekey_done(void *arg, bool cancelled) {
    rekey_task *t = arg;
    ingest *ing = t->ing;
    if (cancelled) { /* shutting down; a run that finished meanwhile leaves a pii (and its secret) */
        pii_destroy(t->pi);
    } else if (!t->pi) {
        log_msg(LOG_ERROR, "reload_failed", "PII secret not reloaded (the current one stays): %s",
                t->errstr);
    } else if (t->seq != ing->rekey_seq) { /* a later SIGHUP's secret is on its way */
        pii_destroy(t->pi);
    } else {
        rekey_apply(ing, t->pi);
    }
    rekey_free(t);
}

int ingest_rekey(ingest *ing, const void *secret, size_t secret_len, char *errstr,
                 size_t errstr_size) {
    rekey_task *t = calloc(1, sizeof *t);
    if (!t || !(t->secret = malloc(secret_len ? secret_len : 1))) {
        free(t);
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    t->ing = ing;
    t->seq = ing->rekey_seq + 1; /* counted once submitted: a refused one supersedes nothing */
    t->params = ing->pii_params;
    memcpy(t->secret, secret, secret_len);
    t->secret_len = secret_len;
    if (workers_submit(ing->workers, rekey_run, rekey_done, t) != 0) { /* t stays ours */
        rekey_free(t);
        snprintf(errstr, errstr_size, "the Argon2 workers are saturated; send SIGHUP again later");
        return -1;
    }
    ing->rekey_seq = t->seq; /* rekey_done runs on this thread, never before this line */
    return 0;
}

/* Ends the loop after a short grace, so the last replies are written before evhttp_free(). */
static void drain_finish(ingest *ing) {
    struct timeval grace = {0, INGEST_DRAIN_GRACE_US};
    if (ing->finished) return;
    ing->finished = true;
    event_base_loopexit(ing->base, &grace);
}

static void drain_check(ingest *ing) {
    if (ing->draining && ing->n.in_flight == 0 && ing->producing == 0) drain_finish(ing);
}

/* A job cut short by the drain timeout: its items still digesting (never produced: digest_done
 * skips them once the request is answered) or producing (outcome unknown: the delivery report, if
 * it ever comes, finds nobody to tell) fail with shutting_down, and the request is answered now.
 * The job lives on until those items are back (job_settle frees it). */
static void job_cut_short(ingest *ing, ingest_job *job) {
    for (uint32_t i = 0; i < job->n; i++) {
        ingest_item *it = &job->items[i];
        if (it->state != ITEM_DIGESTING && it->state != ITEM_PRODUCING) continue;
        json_decref(it->error);
        bool digesting = it->state == ITEM_DIGESTING;
        it->error = failure("shutting_down", digesting ? DRAIN_NOT_SENT : DRAIN_UNKNOWN);
        it->code = "shutting_down";
        if (digesting) ing->payments_failed++; /* a producing one: its late report counts it */
        it->state = ITEM_FAILED;
    }
    if (job->kind == JOB_BATCH) reply_batch(ing, job);
    else reply_single(ing, job);
}

/* conns_foreach_user(): a request still waiting when the drain timeout ran out gets its 503 now,
 * before the process exits (closing it without an answer would leave the client guessing). */
static void drain_answer(void *user, void *arg) {
    ingest *ing = arg;
    ingest_ctx *ctx = user;
    if (!ctx->req) return;
    evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Connection", "close");
    if (ctx->waits == CTX_WAIT_JOB)
        job_cut_short(ing, (ingest_job *)((char *)ctx - offsetof(ingest_job, ctx)));
    else /* an API key check or a read: nothing was stored */
        reply_unavailable(ing, ctx, "shutting_down", "this instance shut down before answering; retry");
}

/* shutdown_timeout_ms passed with requests outstanding: purge the deliveries, so their clients get
 * 503 (never a 202 for a message that may be dropped), answer every other waiting request 503,
 * then finish. */
static void on_drain_timeout(evutil_socket_t fd, short what, void *arg) {
    ingest *ing = arg;
    (void)fd;
    (void)what;
    log_msg(LOG_WARN, "drain_timeout", "%" PRIu64 " requests and %" PRIu64 " messages still "
            "outstanding; purging deliveries and answering 503", ing->n.in_flight, ing->producing);
    rd_kafka_purge(ing->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    while (rd_kafka_poll(ing->rk, 0) > 0) {
    }
    if (conns_foreach_user(ing->conns, drain_answer, ing) != 0)
        log_msg(LOG_ERROR, "drain_timeout", "out of memory: waiting requests closed unanswered");
    drain_finish(ing);
}

void ingest_drain(ingest *ing) {
    struct timeval tv = {ing->shutdown_timeout_ms / 1000, (ing->shutdown_timeout_ms % 1000) * 1000};
    if (ing->draining) return;
    ing->draining = true;
    conns_forget_listeners(ing->conns);
    if (ing->listener) evhttp_del_accept_socket(ing->http, ing->listener); /* closes the socket */
    if (ing->tls_listener) evhttp_del_accept_socket(ing->https, ing->tls_listener);
    ing->listener = ing->tls_listener = NULL;
    log_msg(LOG_INFO, "draining", "stopped accepting connections; %" PRIu64 " requests in flight, "
            "%" PRIu64 " messages awaiting the broker", ing->n.in_flight, ing->producing);
    drain_check(ing); /* nothing outstanding: done now */
    if (ing->finished) return;
    ing->drain_timer = evtimer_new(ing->base, on_drain_timeout, ing);
    if (!ing->drain_timer || evtimer_add(ing->drain_timer, &tv) != 0) drain_finish(ing);
}

void ingest_counters_get(const ingest *ing, ingest_counters *out) { *out = ing->n; }

const char *ingest_fatal_error(const ingest *ing) { return ing->fatal ? ing->fatal_error : NULL; }

/* Delivers or purges what is left; every remaining delivery report settles its item (no request
 * is alive any more: evhttp_free() closed them all). */
static void producer_close(ingest *ing) {
    if (rd_kafka_outq_len(ing->rk) > 0)
        rd_kafka_purge(ing->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    if (rd_kafka_flush(ing->rk, ing->shutdown_timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_msg(LOG_ERROR, "flush_timeout", "%d messages not flushed", rd_kafka_outq_len(ing->rk));
    if (ing->mainq) {
        rd_kafka_queue_io_event_enable(ing->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(ing->mainq);
    }
    if (ing->rkt) rd_kafka_topic_destroy(ing->rkt);
    if (ing->outcomes_rkt) rd_kafka_topic_destroy(ing->outcomes_rkt);
    rd_kafka_destroy(ing->rk);
}

void ingest_destroy(ingest *ing) {
    if (!ing) return;
    if (ing->drain_timer) event_free(ing->drain_timer);
    /* The servers first: every waiting request learns its client is gone, so what still finishes
     * below (Argon2 tasks, reads, deliveries) frees its work without replying. */
    if (ing->http) evhttp_free(ing->http);
    if (ing->https) evhttp_free(ing->https);
    if (ing->admin_http) evhttp_free(ing->admin_http);
    workers_destroy(ing->workers);
    pgread_destroy(ing->pgread);
    if (ing->rk) producer_close(ing);
    conns_destroy(ing->conns);
    if (ing->kafka_ev) event_free(ing->kafka_ev);
    for (int i = 0; i < 2; i++)
        if (ing->kafka_pipe[i] >= 0) close(ing->kafka_pipe[i]);
    pii_gen_release(ing->gen); /* the tasks released theirs in workers_destroy() */
    geoip_destroy(ing->geo);
    keys_destroy(ing->keys);
    keys_cache_destroy(ing->key_cache);
    ratelimit_destroy(ing->ratelimit);
    ratelimit_destroy(ing->verify_limit);
    shopify_destroy(ing->shopify);
    recent_destroy(ing->recent);
    metrics_destroy(ing->m.reg);
    free(ing->tls_cert_file);
    free(ing->tls_key_file);
    free(ing);
}
