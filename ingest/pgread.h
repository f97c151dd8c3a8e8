/* pgread: the read API's PostgreSQL access, asynchronous inside ingest's event loop.
 *
 * A small pool of libpq connections driven by libevent: connecting with PQconnectStart /
 * PQconnectPoll, querying with PQsendQueryParams, then PQconsumeInput / PQisBusy / PQgetResult when
 * the socket is readable, so the loop never blocks on the database. Lost connections are re-opened
 * in the background (1 s, doubling to 10 s). A lookup is answered "unavailable" at once when no
 * connection is up or connecting, and after query_timeout_ms otherwise (the connection it ran on is
 * then dropped and re-opened: libpq's cancel request would block). Owned by the loop thread. */
#ifndef FS_PGREAD_H
#define FS_PGREAD_H

#include <event2/event.h>
#include <jansson.h>
#include <stddef.h>

typedef struct pgread pgread;
typedef struct pgread_op pgread_op;

typedef enum pgread_status {
    PGREAD_FOUND,       /* the payment is stored; result is its status object */
    PGREAD_NOT_FOUND,   /* no such payment in PostgreSQL (yet) */
    PGREAD_NOT_OWNED,   /* stored, but from another source than the one asked for (or none) */
    PGREAD_UNAVAILABLE, /* PostgreSQL cannot answer now (down, slow, schema missing) */
} pgread_status;

/* result (FOUND only): {"payment_id", "status": "decided", "decision", "score", "reasons",
 * "rules_version", "model_version", "decided_at", "persisted_at"}, or "status": "persisted" when
 * the payment has no decision row. The callback owns result (json_decref it). */
typedef void (*pgread_cb)(pgread_status status, json_t *result, void *arg);

/* url: a libpq connection string or URI. Starts connecting in the background; never blocks. */
pgread *pgread_new(struct event_base *base, const char *url, int pool_size, int query_timeout_ms,
                   char *errstr, size_t errstr_size);
/* Answers every pending lookup PGREAD_UNAVAILABLE (so its owner can free what it holds), closes
 * the connections. Accepts NULL. */
void pgread_destroy(pgread *pr);

/* Looks up payment_id (canonical UUID) as source sees it: a payment whose payments.source is not
 * source (a NULL one included) is PGREAD_NOT_OWNED, without its status; source NULL sees every
 * payment. cb is called exactly once, later, from the loop; or never when the lookup is cancelled.
 * Returns NULL (and never calls cb) when PostgreSQL is unavailable right now, too many lookups
 * wait or memory is short: answer 503 at once. */
pgread_op *pgread_payment(pgread *pr, const char *payment_id, const char *source, pgread_cb cb,
                          void *arg);

/* The requester is gone: cb will not be called. op is invalid after this. */
void pgread_cancel(pgread_op *op);

/* Connections currently usable (idle or busy). */
int pgread_connected(const pgread *pr);

#endif
