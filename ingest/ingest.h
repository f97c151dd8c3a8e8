/* ingest: the HTTP front door. Payments posted over HTTP (one, a batch, or a Shopify order) are
 * validated, pseudonymized and produced to raw_payments; outcomes to payment_outcomes. A client
 * gets its 202 only once the broker has acknowledged the message (the delivery report), 503 +
 * Retry-After when it could not. GET /api/v1/payments/{id} reads the decision from PostgreSQL.
 *
 * One libevent loop thread does the HTTP, librdkafka's delivery reports (served from the loop
 * through a pipe that librdkafka writes to when its main queue has events) and the PostgreSQL reads
 * (libpq's asynchronous API). Argon2 (API keys and personal identifiers seen for the first time)
 * runs on a few worker threads, so the loop never waits for it. The request data path reads top to
 * bottom in ingest.c; keys, ratelimit, conns, pgread, shopify, batch, recent and workers are its
 * helpers. */
#ifndef FS_INGEST_H
#define FS_INGEST_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "keys.h"
#include "pii.h"
#include "shopify.h"

/* Namespace of the UUIDv5 ids derived from Idempotency-Key headers:
 *   payment            payment_id = UUIDv5(INGEST_IDEMPOTENCY_NS, "<caller>:<key>")
 *   batch item i       payment_id = UUIDv5(INGEST_IDEMPOTENCY_NS, "<caller>:<key>#<i>")
 *   outcome            outcome_id = UUIDv5(INGEST_IDEMPOTENCY_NS, "<caller>:outcome:<key>")
 * caller being the API key id ("anonymous" with auth off), so two callers' keys never collide.
 * NEVER change this value: a retry sent across a deploy must map to the same id as the original. */
#define INGEST_IDEMPOTENCY_NS "d462f577-25ca-4684-9881-bbf0f048842f"

#define INGEST_REQUEST_ID_MAX 64   /* X-Request-Id: longer or odd client values are replaced */
#define INGEST_IDEMPOTENCY_KEY_MAX 255

typedef struct ingest ingest;

typedef struct ingest_config {
    const char *listen_addr;
    int listen_port;          /* 0 picks a free port (logged) */
    int tls_port;             /* -1: no TLS listener; 0: any free port (logged) */
    const char *admin_addr;   /* the admin listener's address */
    int admin_port;           /* /health, /ready, /metrics only there; -1: on the API ports */
    const char *tls_cert_file, *tls_key_file; /* PEM; required with a TLS listener */
    const char *brokers;
    const char *topic;
    const char *outcomes_topic;
    const cfg_props *props;   /* librdkafka passthrough (-X / KAFKA_*) */
    size_t max_body_bytes;    /* larger bodies: our JSON 413 */
    size_t batch_max_items;   /* payments per batch request */
    size_t batch_max_body_bytes; /* batch and webhook bodies */
    size_t max_header_bytes;
    size_t max_connections;   /* past it, accepting pauses */
    int request_timeout_ms;   /* a connection must deliver a complete request within this */
    int io_timeout_ms;        /* no progress reading or writing for this long: closed */
    bool client_close_check;  /* close a waiting request's connection once its client left */
    int retry_after_seconds;  /* Retry-After on 503 */
    int startup_timeout_ms;   /* brokers must answer and the topics exist within this */
    int shutdown_timeout_ms;  /* in-flight requests get their delivery reports within this */
    const void *pii_secret;   /* copied by ingest_new(); SIGHUP: ingest_rekey() */
    size_t pii_secret_len;
    pii_params pii;
    int worker_threads;       /* Argon2 work (cache misses) */
    size_t worker_queue;      /* tasks waiting for a worker; more: 503 */
    uint32_t auth_verify_rate; /* Argon2 checks of unverified secrets a second per key id (0: any) */
    int auth_max_pending;     /* API key checks queued or running at once; more: 503 */
    bool auth;                /* false: every route is open (development only; logged loudly) */
    keys *keys;               /* taken by ingest_new() (also on failure); NULL = no key yet */
    size_t key_cache_slots;
    shopify *shopify;         /* taken by ingest_new() (also on failure); NULL = webhook refuses all */
    const char *database_url; /* "" or NULL: GET /api/v1/payments/{id} answers 503 */
    int read_pool_size;
    int read_timeout_ms;
    size_t recent_ids;        /* accepted ids remembered for "pending" */
} ingest_config;

typedef struct ingest_counters {
    uint64_t requests;          /* answered, any status */
    uint64_t accepted;          /* 202 */
    uint64_t client_errors;     /* 4xx */
    uint64_t unavailable;       /* 503, any route (/ready included) */
    uint64_t server_errors;     /* other 5xx */
    uint64_t delivery_failures; /* delivery reports with an error */
    uint64_t in_flight;         /* requests received, not yet answered (nor abandoned) */
    uint64_t payments_accepted; /* payments durable in Kafka (single, batch items, webhooks) */
} ingest_counters;

/* Creates the producer, waits (blocking, start-up only) until the brokers answer and the topic
 * exists, then binds the listener on base. Returns NULL with errstr (nothing left running). */
ingest *ingest_new(struct event_base *base, const ingest_config *cfg, char *errstr,
                   size_t errstr_size);

/* SIGHUP: new API keys and Shopify secrets (taken; NULL keeps the current ones), and the TLS
 * certificate and key re-read from their files. The key cache is emptied (keys may have been
 * revoked). Returns 0, or -1 with errstr when the TLS files cannot be loaded (the old ones stay). */
int ingest_reload(ingest *ing, keys *k, shopify *s, char *errstr, size_t errstr_size);

/* SIGHUP: the pseudonymization secret again (copied). Its key id (pii.h) costs one Argon2 run, done
 * on a worker thread; then, on the loop: when it differs from the one in force, a new pseudonymizer
 * (with an empty digest cache) replaces it for every payment from then on, the
 * fs_ingest_pii_key_info series and the pii_key_id header change, and pii_key_changed is logged
 * (warn); the same key changes nothing (pii_key_reloaded, info); a bad secret logs reload_failed
 * and the current key stays. Of several SIGHUPs in a row, the last one's secret wins. Returns 0
 * (submitted), or -1 with errstr (nothing will happen; the current key stays). */
int ingest_rekey(ingest *ing, const void *secret, size_t secret_len, char *errstr,
                 size_t errstr_size);

/* Graceful shutdown: closes the listening socket, answers new requests on open connections with
 * 503, and ends the event loop (event_base_loopexit) once every in-flight request has its answer,
 * or after shutdown_timeout_ms (the remaining messages are purged and their clients get 503).
 * SIGTERM calls it, and so does a fatal producer error (ingest_fatal_error). Calling it again is
 * a no-op. */
void ingest_drain(ingest *ing);

void ingest_counters_get(const ingest *ing, ingest_counters *out);

/* The producer's fatal error, or NULL. Once it came, ingest drained as on SIGTERM (ingest_drain)
 * and the loop ends by itself: the process must then exit 1, so that it is restarted with a new
 * producer (this one never delivers again). */
const char *ingest_fatal_error(const ingest *ing);

/* Closes every connection, flushes and destroys the producer. Accepts NULL. */
void ingest_destroy(ingest *ing);

#endif
