/* ingest: the HTTP front door. Payments posted over HTTP are validated, pseudonymized and produced
 * to raw_payments; the client gets 202 only once the broker has acknowledged the message (the
 * delivery report), 503 + Retry-After when it could not.
 *
 * One libevent loop thread does everything: HTTP, and librdkafka's delivery reports (served from
 * the loop through a pipe that librdkafka writes to when its main queue has events). The request
 * data path reads top to bottom in ingest.c. */
#ifndef FS_INGEST_H
#define FS_INGEST_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "pii.h"

/* Namespace of the UUIDv5 payment ids derived from Idempotency-Key headers:
 * payment_id = UUIDv5(INGEST_IDEMPOTENCY_NS, "<caller>:<key>"), caller being "anonymous" until API
 * keys exist (then the key id, so two callers' keys never collide). NEVER change this value: a
 * retry sent across a deploy must map to the same payment_id as the original request. */
#define INGEST_IDEMPOTENCY_NS "d462f577-25ca-4684-9881-bbf0f048842f"

#define INGEST_REQUEST_ID_MAX 64   /* X-Request-Id: longer or odd client values are replaced */
#define INGEST_IDEMPOTENCY_KEY_MAX 255

typedef struct ingest ingest;

typedef struct ingest_config {
    const char *listen_addr;
    int listen_port;          /* 0 picks a free port (logged) */
    const char *brokers;
    const char *topic;
    const cfg_props *props;   /* librdkafka passthrough (-X / KAFKA_*) */
    size_t max_body_bytes;    /* larger bodies: our JSON 413 */
    int retry_after_seconds;  /* Retry-After on 503 */
    int startup_timeout_ms;   /* brokers must answer and the topic exist within this */
    int shutdown_timeout_ms;  /* in-flight requests get their delivery reports within this */
    const void *pii_secret;   /* copied by ingest_new() */
    size_t pii_secret_len;
    pii_params pii;
} ingest_config;

typedef struct ingest_counters {
    uint64_t requests;          /* answered, any status */
    uint64_t accepted;          /* 202 */
    uint64_t client_errors;     /* 4xx */
    uint64_t unavailable;       /* 503, any route (/ready included) */
    uint64_t server_errors;     /* other 5xx */
    uint64_t delivery_failures; /* delivery reports with an error */
    uint64_t in_flight;         /* produced, delivery report not yet served */
} ingest_counters;

/* Creates the producer, waits (blocking, start-up only) until the brokers answer and the topic
 * exists, then binds the listener on base. Returns NULL with errstr (nothing left running). */
ingest *ingest_new(struct event_base *base, const ingest_config *cfg, char *errstr,
                   size_t errstr_size);

/* Graceful shutdown: closes the listening socket, answers new requests on open connections with
 * 503, and ends the event loop (event_base_loopexit) once every in-flight request has its answer,
 * or after shutdown_timeout_ms (the remaining messages are purged and their clients get 503).
 * Calling it again is a no-op. */
void ingest_drain(ingest *ing);

void ingest_counters_get(const ingest *ing, ingest_counters *out);

/* Closes every connection, flushes and destroys the producer. Accepts NULL. */
void ingest_destroy(ingest *ing);

#endif
