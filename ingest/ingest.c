/* ingest: the HTTP data path, top to bottom.
 *
 *   on_request()              route the request (404 / 405 / auth hook) and call its handler
 *   handle_post_payment()     415 / 413 / Idempotency-Key / 400 malformed JSON
 *   payment_accept()          422 validation, pseudonymization, encoding
 *   payment_produce()         rd_kafka_producev(); the request now waits, no reply yet
 *   on_delivery()             delivery report: 202, or 503 + Retry-After
 *   on_kafka_events()         serves librdkafka's main queue from the loop (the pipe it writes to)
 *
 * Everything runs on the one event-loop thread, so nothing here needs a lock. A request that waits
 * for its delivery report lives in an ingest_pending, owned by the Kafka message (the message's
 * opaque) from a successful producev until on_delivery() frees it, exactly once. */
#include "ingest.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fsutil.h"
#include "kafka.h"
#include "log.h"
#include "pay.h"

#define INGEST_LOG_PATH_MAX 128
#define INGEST_MAX_HEADERS_BYTES (16 * 1024)
/* libevent's own limit (evhttp_set_max_body_size) sits well above ours so that clients normally get
 * our JSON 413 (with X-Request-Id); past it libevent answers on its own: a 413 with an HTML body
 * and no X-Request-Id, then closes the connection, and on_request() never sees the request. */
#define INGEST_HARD_BODY_FACTOR 4
#define INGEST_ALL_METHODS 0x1ff /* every EVHTTP_REQ_*: unknown methods get our JSON 405 */
#define INGEST_DRAIN_GRACE_US 100000 /* lets the last replies leave the socket buffers */
#define STR_(x) #x
#define STR(x) STR_(x)

struct ingest {
    struct event_base *base; /* borrowed from main */
    struct evhttp *http;
    struct evhttp_bound_socket *listener; /* NULL once draining */
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    rd_kafka_queue_t *mainq; /* our reference to rk's main queue (delivery reports, errors, stats) */
    int kafka_pipe[2];       /* librdkafka writes [1] when mainq turns non-empty */
    struct event *kafka_ev;  /* EV_READ on kafka_pipe[0] */
    struct event *drain_timer;
    pii *pii;
    size_t max_body_bytes;
    int retry_after_seconds;
    int shutdown_timeout_ms;
    bool ready;    /* the producer talks to the brokers (see readiness_set) */
    bool fatal;    /* librdkafka fatal error: never ready again, every request 503 */
    bool draining; /* SIGTERM: listener closed, waiting for in-flight deliveries */
    bool finished; /* event_base_loopexit() requested */
    ingest_counters n;
};

/* One request while we work on it. Copied into ingest_pending when it waits for a delivery
 * report, so it holds copies, not pointers into libevent's request (except req itself). */
typedef struct ingest_ctx {
    struct evhttp_request *req; /* owned by libevent; NULL once the client's connection is gone */
    const char *method;         /* static string */
    char path[INGEST_LOG_PATH_MAX + 1]; /* printable copy, for the log */
    char request_id[INGEST_REQUEST_ID_MAX + 1];
    char payment_id[37]; /* "" until known */
    const char *caller;  /* who is calling: "anonymous" until API keys (issue 3) */
    int64_t received_ms; /* wall clock, the payment's ingest time */
    int64_t start_us;    /* monotonic, for latency */
} ingest_ctx;

typedef struct ingest_pending {
    ingest *ing;
    struct evhttp_connection *evcon; /* the client's connection, carrying our close callback */
    ingest_ctx ctx;
} ingest_pending;

typedef void (*ingest_handler)(ingest *ing, ingest_ctx *ctx);

typedef struct ingest_route {
    const char *path;
    bool slash_too;        /* also matches path + "/" */
    uint16_t methods;      /* EVHTTP_REQ_* mask */
    const char *scope;     /* API-key scope it will need (issue 3); not enforced yet */
    ingest_handler handler;
} ingest_route;

static void handle_post_payment(ingest *ing, ingest_ctx *ctx);
static void handle_health(ingest *ing, ingest_ctx *ctx);
static void handle_ready(ingest *ing, ingest_ctx *ctx);
static void on_client_gone(struct evhttp_connection *evcon, void *arg);
static void drain_check(ingest *ing);

/* Every endpoint. Several rows may share a path (one per method set); 405 lists their methods. */
static const ingest_route ROUTES[] = {
    {"/api/v1/payments", true, EVHTTP_REQ_POST, "payments:write", handle_post_payment},
    {"/health", false, EVHTTP_REQ_GET, NULL, handle_health},
    {"/ready", false, EVHTTP_REQ_GET, NULL, handle_ready},
    {NULL, false, 0, NULL, NULL},
};

/* ---------------------------------------------------------------------------------------------
 * Replies. Every response is JSON and carries X-Request-Id; every reply is logged (debug level,
 * 5xx always), never with a body or personal data.
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

static void count_reply(ingest *ing, int status) {
    ing->n.requests++;
    if (status == 202) ing->n.accepted++;
    else if (status == 503) ing->n.unavailable++;
    else if (status >= 500) ing->n.server_errors++;
    else if (status >= 400) ing->n.client_errors++;
}

/* One line per request: debug level, or warn/error for 5xx so failures are always visible. */
static void log_request(const ingest_ctx *ctx, int status, const char *error_code) {
    log_level level = status == 500 ? LOG_ERROR : status >= 500 ? LOG_WARN : LOG_DEBUG;
    if (!log_enabled(level)) return;
    json_t *f = json_pack("{s:s, s:s, s:i, s:I, s:s}", "method", ctx->method, "path", ctx->path,
                          "status", status, "latency_us", (json_int_t)(fs_mono_us() - ctx->start_us),
                          "request_id", ctx->request_id);
    if (f && ctx->payment_id[0]) json_object_set_new(f, "payment_id", json_string(ctx->payment_id));
    if (f && error_code) json_object_set_new(f, "error", json_string(error_code));
    log_fields(level, "http_request", f, "%s %s %d", ctx->method, ctx->path, status);
}

/* Sends status with body (takes ownership of body) and logs the request. ctx->req must be alive;
 * libevent owns and frees the request once the reply is written. */
static void reply_json(ingest *ing, ingest_ctx *ctx, int status, json_t *body) {
    struct evkeyvalq *h = evhttp_request_get_output_headers(ctx->req);
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    const char *error_code = json_string_value(json_object_get(body, "error"));
    if (!text) status = 500;
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "X-Request-Id", ctx->request_id);
    evbuffer_add_printf(evhttp_request_get_output_buffer(ctx->req), "%s",
                        text ? text : "{\"error\":\"internal_error\",\"message\":\"out of memory\"}");
    evhttp_send_reply(ctx->req, status, status_reason(status), NULL);
    ctx->req = NULL; /* libevent's from here on */
    count_reply(ing, status);
    log_request(ctx, status, text ? error_code : "internal_error");
    free(text);
    json_decref(body);
}

/* {"error": code, "message": printf(fmt...)} */
static void reply_error(ingest *ing, ingest_ctx *ctx, int status, const char *code,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void reply_error(ingest *ing, ingest_ctx *ctx, int status, const char *code,
                        const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg); /* NULL when msg is not UTF-8 (a parser message quoting input) */
    reply_json(ing, ctx, status,
               json_pack("{s:s, s:o}", "error", code, "message", m ? m : json_string("(not shown)")));
}

/* 503 with Retry-After: the client should retry the same request (same Idempotency-Key). */
static void reply_unavailable(ingest *ing, ingest_ctx *ctx, const char *code, const char *msg) {
    char secs[16];
    json_t *body = json_pack("{s:s, s:s}", "error", code, "message", msg);
    if (body && ctx->payment_id[0]) /* lets a client without a key retry with the same id */
        json_object_set_new(body, "payment_id", json_string(ctx->payment_id));
    snprintf(secs, sizeof secs, "%d", ing->retry_after_seconds);
    evhttp_add_header(evhttp_request_get_output_headers(ctx->req), "Retry-After", secs);
    reply_json(ing, ctx, 503, body);
}

/* ---------------------------------------------------------------------------------------------
 * Routing
 * ------------------------------------------------------------------------------------------- */

/* A client's X-Request-Id is kept when it is a sane token, so ids can be followed across services;
 * anything else is replaced (it ends up in our logs and headers). */
static void request_id_init(struct evhttp_request *req, char out[INGEST_REQUEST_ID_MAX + 1]) {
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    size_t n = v ? strlen(v) : 0;
    bool ok = n > 0 && n <= INGEST_REQUEST_ID_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == '-';
    }
    if (ok) memcpy(out, v, n + 1);
    else if (fs_uuid_v4(out) != 0) snprintf(out, INGEST_REQUEST_ID_MAX + 1, "%" PRId64, fs_mono_us());
}

static const char *request_path(struct evhttp_request *req) {
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    return path ? path : "";
}

static void ctx_init(ingest_ctx *ctx, struct evhttp_request *req) {
    const char *path = request_path(req);
    size_t i;
    memset(ctx, 0, sizeof *ctx);
    ctx->req = req;
    ctx->start_us = fs_mono_us();
    ctx->received_ms = fs_now_ms();
    ctx->method = method_name(evhttp_request_get_command(req));
    ctx->caller = "anonymous";
    for (i = 0; path[i] && i < INGEST_LOG_PATH_MAX; i++) /* the log gets printable ASCII only */
        ctx->path[i] = (path[i] >= 0x20 && path[i] < 0x7f) ? path[i] : '?';
    ctx->path[i] = '\0';
    request_id_init(req, ctx->request_id);
}

static bool route_path_match(const ingest_route *r, const char *path) {
    size_t n = strlen(r->path);
    if (strncmp(path, r->path, n) != 0) return false;
    return path[n] == '\0' || (r->slash_too && path[n] == '/' && path[n + 1] == '\0');
}

/* The route for path and method; NULL with *allowed = the methods path has (0: unknown path). */
static const ingest_route *route_find(const char *path, enum evhttp_cmd_type cmd,
                                      uint16_t *allowed) {
    *allowed = 0;
    for (const ingest_route *r = ROUTES; r->path; r++) {
        if (!route_path_match(r, path)) continue;
        if (r->methods & cmd) return r;
        *allowed |= r->methods;
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

/* The authentication hook (issue 3: API keys, route->scope, rate limits). Returns 0 to go on, with
 * ctx->caller naming the caller, or -1 after replying (401/403/429) itself. Until then every
 * caller is "anonymous". */
static int authenticate(ingest *ing, ingest_ctx *ctx, const ingest_route *route) {
    (void)ing;
    (void)route;
    ctx->caller = "anonymous";
    return 0;
}

/* evhttp's callback for every request: the top of the data path. */
static void on_request(struct evhttp_request *req, void *arg) {
    ingest *ing = arg;
    ingest_ctx ctx;
    uint16_t allowed;
    ctx_init(&ctx, req);
    const ingest_route *route = route_find(request_path(req), evhttp_request_get_command(req), &allowed);
    if (!route && !allowed) {
        reply_error(ing, &ctx, 404, "not_found", "no endpoint at this path");
        return;
    }
    if (!route) {
        reply_method_not_allowed(ing, &ctx, allowed);
        return;
    }
    if (authenticate(ing, &ctx, route) != 0) return;
    route->handler(ing, &ctx);
}

/* ---------------------------------------------------------------------------------------------
 * GET /health and GET /ready
 * ------------------------------------------------------------------------------------------- */

static void handle_health(ingest *ing, ingest_ctx *ctx) {
    reply_json(ing, ctx, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_ready(ingest *ing, ingest_ctx *ctx) {
    if (ing->fatal)
        reply_error(ing, ctx, 503, "not_ready", "the Kafka producer hit a fatal error");
    else if (ing->draining)
        reply_error(ing, ctx, 503, "not_ready", "shutting down");
    else if (!ing->ready)
        reply_error(ing, ctx, 503, "not_ready", "no connection to the Kafka brokers");
    else
        reply_json(ing, ctx, 200, json_pack("{s:s}", "status", "ready"));
}

/* ---------------------------------------------------------------------------------------------
 * POST /api/v1/payments
 * ------------------------------------------------------------------------------------------- */

/* "application/json", any case, parameters allowed ("application/json; charset=utf-8"). */
static bool content_type_is_json(const char *ct) {
    static const char JSON_TYPE[] = "application/json";
    if (!ct) return false;
    ct += strspn(ct, " \t");
    if (strncasecmp(ct, JSON_TYPE, sizeof JSON_TYPE - 1) != 0) return false;
    ct += sizeof JSON_TYPE - 1;
    ct += strspn(ct, " \t");
    return *ct == '\0' || *ct == ';';
}

/* payment_id = UUIDv5(namespace, caller ":" key): the same key from the same caller always names
 * the same payment, so a retry cannot create a second one. Returns -1 for an invalid key. */
static int idempotency_payment_id(const char *caller, const char *key, char out[37]) {
    char name[64 + 1 + INGEST_IDEMPOTENCY_KEY_MAX + 1];
    size_t n = strlen(key);
    if (n == 0 || n > INGEST_IDEMPOTENCY_KEY_MAX) return -1;
    for (size_t i = 0; i < n; i++)
        if (key[i] < 0x20 || key[i] > 0x7e) return -1;
    int len = snprintf(name, sizeof name, "%s:%s", caller, key);
    if (len < 0 || (size_t)len >= sizeof name) return -1;
    return fs_uuid_v5(INGEST_IDEMPOTENCY_NS, name, (size_t)len, out);
}

/* Parses the body; on failure replies 400 and returns NULL. Returns a new reference. */
static json_t *body_parse(ingest *ing, ingest_ctx *ctx, struct evbuffer *in, size_t len) {
    json_error_t jerr;
    const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
    json_t *body = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        reply_error(ing, ctx, 400, "malformed_json", "line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        reply_error(ing, ctx, 400, "invalid_body", "the body must be a JSON object");
        return NULL;
    }
    return body;
}

static void errors_add(pay_errors *errs, const char *field, const char *code, const char *msg) {
    if (errs->n >= PAY_ERRORS_MAX) return;
    pay_error *e = &errs->e[errs->n++];
    snprintf(e->field, sizeof e->field, "%s", field);
    snprintf(e->code, sizeof e->code, "%s", code);
    snprintf(e->message, sizeof e->message, "%s", msg);
}

/* Validates body into p and raw; on any bad field replies 422 naming every one, returns -1. */
static int payment_validate(ingest *ing, ingest_ctx *ctx, const json_t *body, const char *idem_id,
                            pay_payment *p, pay_pii *raw) {
    pay_errors errs = {0};
    int rc = pay_from_request(body, ctx->received_ms, idem_id, p, raw, &errs);
    const char *own_id = json_string_value(json_object_get(body, "payment_id"));
    /* A body's own (valid) payment_id wins over the key's, unless they disagree: then the client is
     * confused about which payment this is, and guessing could merge two payments into one. */
    if (idem_id && own_id && fs_uuid_valid(own_id) && strcasecmp(own_id, idem_id) != 0) {
        errors_add(&errs, "payment_id", "idempotency_conflict",
                   "differs from the payment_id derived from the Idempotency-Key header");
        rc = -1;
    }
    if (rc == 0) return 0;
    reply_json(ing, ctx, 422, pay_errors_to_json(&errs));
    return -1;
}

/* Produces the event. On success the request waits for on_delivery(); on failure replies 503.
 * Takes ownership of event (freed by librdkafka with the message, or here on failure). */
static void payment_produce(ingest *ing, ingest_ctx *ctx, const pay_payment *p, char *event,
                            size_t len) {
    char key[4], ts[24];
    ingest_pending *pd = calloc(1, sizeof *pd);
    if (!pd) {
        free(event);
        reply_error(ing, ctx, 500, "internal_error", "out of memory");
        return;
    }
    pd->ing = ing;
    pd->ctx = *ctx;
    pd->evcon = evhttp_request_get_connection(ctx->req);
    pay_partition_key(p, key);
    snprintf(ts, sizeof ts, "%" PRId64, p->ingest_time_ms);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        ing->rk, RD_KAFKA_V_RKT(ing->rkt), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE(event, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
        RD_KAFKA_V_HEADER("schema_version", STR(PAY_SCHEMA_VERSION), -1),
        RD_KAFKA_V_HEADER("payment_id", p->payment_id, -1), RD_KAFKA_V_HEADER("ingest_ts", ts, -1),
        RD_KAFKA_V_HEADER("content-type", "application/json", -1), RD_KAFKA_V_OPAQUE(pd),
        RD_KAFKA_V_END);
    if (err) { /* on failure librdkafka took nothing: event and pd are still ours */
        free(event);
        free(pd);
        log_msg(LOG_WARN, "produce_failed", "request %s: %s", ctx->request_id, rd_kafka_err2str(err));
        reply_unavailable(ing, ctx, "broker_unavailable", "the payment could not be queued; retry");
        return;
    }
    /* event and pd now belong to the message, until its delivery report. */
    ing->n.in_flight++;
    evhttp_connection_set_closecb(pd->evcon, on_client_gone, pd);
}

/* Validated -> pseudonymized -> encoded -> produced. Raw personal data never leaves this frame. */
static void payment_accept(ingest *ing, ingest_ctx *ctx, const json_t *body, const char *idem_id) {
    pay_payment p = {0};
    pay_pii raw = {0};
    char errstr[256];
    char *event = NULL;
    size_t len = 0;
    if (payment_validate(ing, ctx, body, idem_id, &p, &raw) != 0) goto done;
    memcpy(ctx->payment_id, p.payment_id, sizeof ctx->payment_id);
    if (pii_apply(ing->pii, &raw, &p, errstr, sizeof errstr) != 0) {
        log_msg(LOG_ERROR, "pii_failed", "request %s: %s", ctx->request_id, errstr);
        reply_error(ing, ctx, 500, "internal_error", "could not pseudonymize the payment");
        goto done;
    }
    event = pay_event_encode(&p, &len);
    if (!event) {
        reply_error(ing, ctx, 500, "internal_error", "could not encode the payment");
        goto done;
    }
    payment_produce(ing, ctx, &p, event, len);
    event = NULL; /* payment_produce took it */
done:
    explicit_bzero(&raw, sizeof raw);
    free(event);
    pay_payment_clear(&p);
}

static void handle_post_payment(ingest *ing, ingest_ctx *ctx) {
    struct evhttp_request *req = ctx->req;
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *idem_key = evhttp_find_header(h, "Idempotency-Key");
    char idem_id[37];
    if (ing->draining) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_unavailable(ing, ctx, "shutting_down", "this instance is shutting down; retry");
    } else if (ing->fatal) {
        reply_unavailable(ing, ctx, "broker_unavailable", "the Kafka producer hit a fatal error");
    } else if (!content_type_is_json(evhttp_find_header(h, "Content-Type"))) {
        reply_error(ing, ctx, 415, "unsupported_media_type", "Content-Type must be application/json");
    } else if (len > ing->max_body_bytes) {
        reply_error(ing, ctx, 413, "payload_too_large", "the body exceeds %zu bytes",
                    ing->max_body_bytes);
    } else if (idem_key && idempotency_payment_id(ctx->caller, idem_key, idem_id) != 0) {
        reply_error(ing, ctx, 400, "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to %d printable ASCII characters",
                    INGEST_IDEMPOTENCY_KEY_MAX);
    } else {
        json_t *body = body_parse(ing, ctx, in, len);
        if (body) payment_accept(ing, ctx, body, idem_key ? idem_id : NULL);
        json_decref(body);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Delivery reports: the only place a produced payment gets its answer.
 * ------------------------------------------------------------------------------------------- */

/* librdkafka's dr_msg_cb, called from rd_kafka_poll() on the loop thread, once per message. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    ingest *ing = opaque;
    ingest_pending *pd = m->_private; /* ours again: the message is done with it */
    ingest_ctx ctx = pd->ctx;
    (void)rk;
    ing->n.in_flight--;
    if (m->err) {
        ing->n.delivery_failures++;
        log_msg(LOG_WARN, "delivery_failed", "payment %s (request %s): %s", ctx.payment_id,
                ctx.request_id, rd_kafka_err2str(m->err));
    } else if (!ing->fatal) {
        ing->ready = true;
    }
    if (!ctx.req) {
        log_msg(LOG_INFO, "client_gone", "request %s: connection closed before the delivery report (%s)",
                ctx.request_id, m->err ? "not stored" : "stored");
    } else {
        evhttp_connection_set_closecb(pd->evcon, NULL, NULL); /* replying; no longer our business */
        if (m->err)
            reply_unavailable(ing, &ctx, "broker_unavailable",
                              "the payment could not be stored durably; retry with the same "
                              "Idempotency-Key or payment_id");
        else
            reply_json(ing, &ctx, 202,
                       json_pack("{s:s, s:s, s:s}", "message", "Payment accepted for processing",
                                 "status", "accepted", "payment_id", ctx.payment_id));
    }
    free(pd);
    drain_check(ing);
}

/* libevent is freeing the client's connection while pd waits for its delivery report. */
static void on_client_gone(struct evhttp_connection *evcon, void *arg) {
    ingest_pending *pd = arg;
    (void)evcon;
    /* Two ways to get here: libevent saw the client's EOF and detached the request from the
     * connection (then nobody but us will free it), or the server is being freed (then libevent
     * frees the request right after this callback). Either way, never touch it again.
     * (libevent 2.1 stops reading a connection while its request waits for us, so a client that
     * leaves is usually noticed only when the reply is written; libevent then cleans up alone.) */
    if (pd->ctx.req && !evhttp_request_get_connection(pd->ctx.req))
        evhttp_request_free(pd->ctx.req);
    pd->ctx.req = NULL;
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

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    ingest *ing = opaque;
    char fatal[512];
    if (err == RD_KAFKA_RESP_ERR__FATAL && rd_kafka_fatal_error(rk, fatal, sizeof fatal)) {
        ing->fatal = true;
        ing->ready = false;
        log_msg(LOG_ERROR, "kafka_fatal", "producer fatal error, every request now gets 503: %s",
                fatal);
        return;
    }
    log_msg(LOG_WARN, "kafka_error", "%s: %s", rd_kafka_err2name(err), reason);
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) readiness_set(ing, false, reason);
}

/* Readiness must come back after an outage even without traffic (an instance nobody routes to
 * would never deliver anything): the periodic statistics say whether any broker is UP. */
static int on_kafka_stats(rd_kafka_t *rk, char *stats, size_t len, void *opaque) {
    ingest *ing = opaque;
    json_t *root = json_loadb(stats, len, 0, NULL);
    const char *name, *source;
    json_t *b;
    bool up = false;
    (void)rk;
    json_object_foreach(json_object_get(root, "brokers"), name, b) {
        source = json_string_value(json_object_get(b, "source"));
        if (source && (!strcmp(source, "internal") || !strcmp(source, "logical"))) continue;
        const char *state = json_string_value(json_object_get(b, "state"));
        up = up || (state && !strcmp(state, "UP"));
    }
    if (root) readiness_set(ing, up, up ? "a broker connection is up" : "no broker connection is up");
    json_decref(root);
    return 0; /* librdkafka frees stats */
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
        {"linger.ms", "5"},                    /* batching without hurting latency much */
        {"statistics.interval.ms", "1000"},    /* readiness recovery, see on_kafka_stats */
        {"partitioner", "murmur2_random"},     /* same key -> partition as Java clients */
    };
    for (size_t i = 0; i < sizeof DEFAULTS / sizeof DEFAULTS[0]; i++)
        if (kafka_conf_default(conf, props, DEFAULTS[i][0], DEFAULTS[i][1], errstr, errstr_size))
            return -1;
    return 0;
}

static int kafka_setup(ingest *ing, const ingest_config *cfg, char *errstr, size_t errstr_size) {
    const char *topics[] = {cfg->topic, NULL};
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
    ing->rk = kafka_producer_new(conf, errstr, errstr_size); /* takes conf, also on failure */
    if (!ing->rk) return -1;
    ing->rkt = rd_kafka_topic_new(ing->rk, cfg->topic, NULL);
    if (!ing->rkt) {
        snprintf(errstr, errstr_size, "topic %s: %s", cfg->topic, rd_kafka_err2str(rd_kafka_last_error()));
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

static void log_listening(ingest *ing, const char *addr) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int port = 0;
    if (getsockname(evhttp_bound_socket_get_fd(ing->listener), (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    log_fields(LOG_INFO, "listening", json_pack("{s:s, s:i}", "addr", addr, "port", port),
               "listening on http://%s:%d", addr, port);
}

static int http_setup(ingest *ing, const ingest_config *cfg, char *errstr, size_t errstr_size) {
    ing->http = evhttp_new(ing->base);
    if (!ing->http) {
        snprintf(errstr, errstr_size, "evhttp_new failed");
        return -1;
    }
    evhttp_set_gencb(ing->http, on_request, ing);
    evhttp_set_allowed_methods(ing->http, INGEST_ALL_METHODS);
    evhttp_set_max_headers_size(ing->http, INGEST_MAX_HEADERS_BYTES);
    evhttp_set_max_body_size(ing->http, (ev_ssize_t)(cfg->max_body_bytes * INGEST_HARD_BODY_FACTOR));
    ing->listener = evhttp_bind_socket_with_handle(ing->http, cfg->listen_addr,
                                                   (ev_uint16_t)cfg->listen_port);
    if (!ing->listener) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d: %s", cfg->listen_addr,
                 cfg->listen_port, strerror(errno));
        return -1;
    }
    log_listening(ing, cfg->listen_addr);
    return 0;
}

ingest *ingest_new(struct event_base *base, const ingest_config *cfg, char *errstr,
                   size_t errstr_size) {
    ingest *ing = calloc(1, sizeof *ing);
    if (!ing) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    ing->base = base;
    ing->kafka_pipe[0] = ing->kafka_pipe[1] = -1;
    ing->max_body_bytes = cfg->max_body_bytes;
    ing->retry_after_seconds = cfg->retry_after_seconds;
    ing->shutdown_timeout_ms = cfg->shutdown_timeout_ms;
    ing->pii = pii_new(cfg->pii_secret, cfg->pii_secret_len, &cfg->pii, errstr, errstr_size);
    if (!ing->pii || kafka_setup(ing, cfg, errstr, errstr_size) != 0 ||
        kafka_events_setup(ing, errstr, errstr_size) != 0 ||
        http_setup(ing, cfg, errstr, errstr_size) != 0)
        goto failed;
    return ing;
failed:
    ingest_destroy(ing);
    return NULL;
}

/* Ends the loop after a short grace, so the last replies are written before evhttp_free(). */
static void drain_finish(ingest *ing) {
    struct timeval grace = {0, INGEST_DRAIN_GRACE_US};
    if (ing->finished) return;
    ing->finished = true;
    event_base_loopexit(ing->base, &grace);
}

static void drain_check(ingest *ing) {
    if (ing->draining && ing->n.in_flight == 0) drain_finish(ing);
}

/* shutdown_timeout_ms passed with deliveries outstanding: purge them, so their clients get 503
 * (never a 202 for a message that may be dropped), then finish. */
static void on_drain_timeout(evutil_socket_t fd, short what, void *arg) {
    ingest *ing = arg;
    (void)fd;
    (void)what;
    log_msg(LOG_WARN, "drain_timeout", "%" PRIu64 " deliveries still outstanding; purging them",
            ing->n.in_flight);
    rd_kafka_purge(ing->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    while (rd_kafka_poll(ing->rk, 0) > 0) {
    }
    drain_finish(ing);
}

void ingest_drain(ingest *ing) {
    struct timeval tv = {ing->shutdown_timeout_ms / 1000, (ing->shutdown_timeout_ms % 1000) * 1000};
    if (ing->draining) return;
    ing->draining = true;
    if (ing->listener) evhttp_del_accept_socket(ing->http, ing->listener); /* closes the socket */
    ing->listener = NULL;
    log_msg(LOG_INFO, "draining", "stopped accepting connections; %" PRIu64 " requests in flight",
            ing->n.in_flight);
    if (ing->n.in_flight == 0) {
        drain_finish(ing);
        return;
    }
    ing->drain_timer = evtimer_new(ing->base, on_drain_timeout, ing);
    if (!ing->drain_timer || evtimer_add(ing->drain_timer, &tv) != 0) drain_finish(ing);
}

void ingest_counters_get(const ingest *ing, ingest_counters *out) { *out = ing->n; }

/* Delivers or purges what is left; every remaining delivery report frees its pending struct (their
 * requests are gone by now: evhttp_free() ran on_client_gone for each). */
static void producer_close(ingest *ing) {
    if (ing->n.in_flight) rd_kafka_purge(ing->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    if (rd_kafka_flush(ing->rk, ing->shutdown_timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_msg(LOG_ERROR, "flush_timeout", "%d messages not flushed", rd_kafka_outq_len(ing->rk));
    if (ing->mainq) {
        rd_kafka_queue_io_event_enable(ing->mainq, -1, NULL, 0);
        rd_kafka_queue_destroy(ing->mainq);
    }
    if (ing->rkt) rd_kafka_topic_destroy(ing->rkt);
    rd_kafka_destroy(ing->rk);
}

void ingest_destroy(ingest *ing) {
    if (!ing) return;
    if (ing->drain_timer) event_free(ing->drain_timer);
    if (ing->http) evhttp_free(ing->http); /* closes every connection (and the listener) */
    if (ing->rk) producer_close(ing);
    if (ing->kafka_ev) event_free(ing->kafka_ev);
    for (int i = 0; i < 2; i++)
        if (ing->kafka_pipe[i] >= 0) close(ing->kafka_pipe[i]);
    pii_destroy(ing->pii);
    free(ing);
}
