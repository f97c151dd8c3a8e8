/* delivery: the alerter's HTTP (webhook) and SMTP (email) client, on libcurl's multi interface.
 *
 * Many transfers run at once on the calling thread: a subscriber that hangs holds one transfer
 * until its timeout and never delays the others. Every transfer has a connect and a total
 * timeout; TLS peers are always verified (the system CA store, or a CA file: the engine's
 * default or the request's own); redirects are never followed (a signed alert goes only where
 * the subscription says); only https (http too with allow_http) for webhooks, smtp/smtps for email.
 * A webhook never connects to an address in deny_networks (netguard.h): each address libcurl is
 * about to connect to is checked (after DNS, so a name that resolves, or rebinds, there is caught;
 * through a proxy it is the proxy's address that is checked); a transfer that had every address
 * refused is reported as address_denied. Email is not checked: its server is the operator's own
 * setting.
 *
 * A webhook request is a POST of the event's JSON with these headers:
 *   X-FraudShield-Event      event type (alert.created, alert.resolved)
 *   X-FraudShield-Delivery   delivery id (one per event and subscription)
 *   X-FraudShield-Alert      alert id: the same on every retry and every event of one alert
 *   X-FraudShield-Attempt    1, 2, ...
 *   X-FraudShield-Timestamp  Unix seconds when this attempt was signed
 *   X-FraudShield-Signature  sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>  (v1)
 *   X-FraudShield-Signature-V2  v2=<hex HMAC-SHA256(secret, timestamp "." delivery "." event "." body)>
 *
 * Not thread-safe except delivery_wakeup(): one thread (the dispatcher) owns the engine.
 * curl_global_init() must have been called (main does, before any thread starts). */
#ifndef FS_DELIVERY_H
#define FS_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "netguard.h"

#define DELIVERY_SIG_LEN (7 + 64)    /* "sha256=" + hex, without the NUL */
#define DELIVERY_SIG_V2_LEN (3 + 64) /* "v2=" + hex, without the NUL */

typedef struct delivery_config {
    long connect_timeout_ms;
    long timeout_ms;           /* whole transfer */
    const char *ca_file;       /* default CA bundle for TLS ("" or NULL: the system store) */
    const char *user_agent;
    const char *smtp_from;     /* email: envelope and From: address */
    const char *smtp_user;     /* email: "" = no authentication */
    const char *smtp_password;
    bool allow_http;           /* webhooks in clear text (allow-insecure-http); else https only */
    const char *deny_networks; /* webhook-deny-networks (netguard.h); NULL or "": none */
} delivery_config;

typedef struct delivery_request {
    bool email;                /* SMTP to email_to; else a webhook POST to url */
    const char *url;
    const char *secret;        /* webhook: the HMAC key */
    const char *ca_file;       /* NULL or "": the engine's default */
    const char *event_type;
    const char *delivery_id;
    const char *alert_id;
    int attempt;
    const char *body;          /* webhook: the JSON; email: the whole RFC 5322 message */
    size_t body_len;
    const char *const *email_to;
    size_t n_email_to;
    void *opaque;              /* handed back with the result */
} delivery_request;

typedef struct delivery_result {
    void *opaque;
    bool answered;             /* a complete response (HTTP status / SMTP reply) arrived */
    long status;               /* HTTP status or last SMTP reply code; 0 when none */
    int64_t retry_after_ms;    /* from a Retry-After header; -1 when none */
    int64_t latency_us;
    bool address_denied;       /* not connected: every address was in deny_networks */
    char denied_address[NETGUARD_ADDR_MAX]; /* address_denied: the first one refused */
    char error[300];           /* "" when delivered; printable ASCII only (goes to PostgreSQL);
                                  address_denied: starts with "address_denied: " */
} delivery_result;

typedef struct delivery_engine delivery_engine;

/* Copies cfg's strings. NULL with errstr (a bad deny_networks entry is named). */
delivery_engine *delivery_new(const delivery_config *cfg, char *errstr, size_t errstr_size);
void delivery_destroy(delivery_engine *e); /* aborts transfers still running; accepts NULL */

/* Starts a transfer (the request's strings are copied). A transfer that cannot even start is
 * reported as a result with its error like any failed one. Returns 0, or -1 out of memory. */
int delivery_start(delivery_engine *e, const delivery_request *req);

/* Drives the transfers: waits up to timeout_ms for network activity, a finished transfer, a
 * wake-up, or extra_fd (>= 0) becoming readable (*extra_ready then true). */
void delivery_wait(delivery_engine *e, int timeout_ms, int extra_fd, bool *extra_ready);

/* Pops one finished transfer's result. Returns true when there was one. */
bool delivery_next(delivery_engine *e, delivery_result *out);

/* Ends every running transfer now; each is reported as a result ("aborted"). */
void delivery_abort_all(delivery_engine *e);

size_t delivery_in_flight(const delivery_engine *e);

/* Interrupts delivery_wait() from any thread. */
void delivery_wakeup(delivery_engine *e);

/* "sha256=<hex>" of HMAC-SHA256(secret, timestamp "." body) into out (DELIVERY_SIG_LEN + 1). */
void delivery_sign(const char *secret, const char *timestamp, const void *body, size_t len,
                   char out[DELIVERY_SIG_LEN + 1]);

/* "v2=<hex>" of HMAC-SHA256(secret, timestamp "." delivery_id "." event_type "." body) into out
 * (DELIVERY_SIG_V2_LEN + 1): also binds the delivery id and the event type, so that a captured
 * request cannot be replayed within the timestamp window as a "new" delivery or another event. */
void delivery_sign_v2(const char *secret, const char *timestamp, const char *delivery_id,
                      const char *event_type, const void *body, size_t len,
                      char out[DELIVERY_SIG_V2_LEN + 1]);

#endif
