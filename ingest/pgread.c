/* pgread: libpq's asynchronous API inside libevent (see pgread.h).
 *
 * Each pooled connection is a small state machine:
 *   DOWN --(retry timer)--> CONNECTING --(PQconnectPoll OK)--> IDLE <--> BUSY
 *   any state --(error, EOF, query timeout)--> DOWN (PQfinish, retry timer with backoff)
 * An IDLE connection keeps a read event on its socket, so a server that goes away is noticed at
 * once, not by the next lookup. Lookups wait in one FIFO queue for an IDLE connection. */
#include "pgread.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"

#define PGREAD_MAX_POOL 16
#define PGREAD_MAX_QUEUED 1024
#define PGREAD_CONNECT_TIMEOUT_MS 5000
#define PGREAD_BACKOFF_MIN_MS 1000
#define PGREAD_BACKOFF_MAX_MS 10000

/* The status of one payment: stored? decided? Times in UTC, RFC 3339 with milliseconds. Its
 * source is compared here, not in the query: a payment stored from another source must not read
 * as "not stored yet", which ingest would answer "pending" to a caller that posted the same id. */
static const char PGREAD_SQL[] =
    "SELECT d.decision, d.score, d.reasons::text, d.rules_version, d.model_version, "
    "to_char(d.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
    "to_char(p.persisted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), p.source "
    "FROM payments p LEFT JOIN decisions d USING (payment_id) WHERE p.payment_id = $1::uuid";
#define PGREAD_COL_SOURCE 7

typedef enum pc_state { PC_DOWN, PC_CONNECTING, PC_IDLE, PC_BUSY } pc_state;

typedef struct pgconn_slot {
    pgread *pr;
    int index;
    pc_state state;
    PGconn *conn;
    struct event *io;       /* on PQsocket(conn); re-created when the socket changes */
    struct event *timer;    /* retry (DOWN), connect timeout (CONNECTING) */
    int backoff_ms;
    pgread_op *op;          /* BUSY: the lookup running here */
    PGresult *res;          /* BUSY: the first result of the lookup */
} pgconn_slot;

struct pgread_op {
    pgread *pr;
    char payment_id[37];
    char *source;           /* whose payments it may see; NULL: everyone's */
    pgread_cb cb;           /* NULL once cancelled */
    void *arg;
    struct event *timeout;
    pgconn_slot *running;   /* NULL while queued */
    pgread_op *next, *prev; /* queue */
};

struct pgread {
    struct event_base *base;
    char *url;
    int npool;
    struct timeval query_timeout;
    pgconn_slot pool[PGREAD_MAX_POOL];
    pgread_op *qhead, *qtail;
    size_t queued;
    struct event *kick; /* starts queued lookups from the loop (pgread_payment) */
};

static void slot_connect(pgconn_slot *s);
static void slot_dispatch(pgread *pr);
static void on_io(evutil_socket_t fd, short what, void *arg);

/* ------------------------------------------------------------------------------ lookups */

static void queue_remove(pgread *pr, pgread_op *op) {
    if (op->prev) op->prev->next = op->next;
    else pr->qhead = op->next;
    if (op->next) op->next->prev = op->prev;
    else pr->qtail = op->prev;
    op->next = op->prev = NULL;
    pr->queued--;
}

/* Calls the callback (unless cancelled) and frees op. Takes result. */
static void op_finish(pgread_op *op, pgread_status st, json_t *result) {
    if (op->cb) op->cb(st, result, op->arg);
    else json_decref(result);
    event_free(op->timeout);
    free(op->source);
    free(op);
}

/* Whether op may see the payment in res. */
static bool op_owns(const pgread_op *op, const PGresult *res) {
    return !op->source || (!PQgetisnull(res, 0, PGREAD_COL_SOURCE) &&
                           strcmp(PQgetvalue(res, 0, PGREAD_COL_SOURCE), op->source) == 0);
}

static json_t *result_json(const pgread_op *op, const PGresult *res) {
    json_t *o = json_pack("{s:s}", "payment_id", op->payment_id);
    if (!o) return NULL;
    if (PQgetisnull(res, 0, 0)) {
        json_object_set_new(o, "status", json_string("persisted"));
    } else {
        json_t *reasons = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
        json_object_set_new(o, "status", json_string("decided"));
        json_object_set_new(o, "decision", json_string(PQgetvalue(res, 0, 0)));
        json_object_set_new(o, "score", json_integer(atoi(PQgetvalue(res, 0, 1))));
        json_object_set_new(o, "reasons", reasons ? reasons : json_array());
        json_object_set_new(o, "rules_version", json_string(PQgetvalue(res, 0, 3)));
        json_object_set_new(o, "model_version",
                            PQgetisnull(res, 0, 4) ? json_null() : json_string(PQgetvalue(res, 0, 4)));
        json_object_set_new(o, "decided_at", json_string(PQgetvalue(res, 0, 5)));
    }
    json_object_set_new(o, "persisted_at", json_string(PQgetvalue(res, 0, 6)));
    return o;
}

/* The lookup on s has its whole result. */
static void slot_complete(pgconn_slot *s) {
    pgread_op *op = s->op;
    PGresult *res = s->res;
    s->op = NULL;
    s->res = NULL;
    s->state = PC_IDLE;
    if (!op) { /* timed out meanwhile: nothing to answer */
    } else if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_msg(LOG_WARN, "pgread_query_failed", "payment lookup: %s",
                res ? PQresultErrorMessage(res) : "no result");
        op_finish(op, PGREAD_UNAVAILABLE, NULL);
    } else if (PQntuples(res) == 0) {
        op_finish(op, PGREAD_NOT_FOUND, NULL);
    } else if (!op_owns(op, res)) { /* nothing of it logged: whose it is stays in PostgreSQL */
        op_finish(op, PGREAD_NOT_OWNED, NULL);
    } else {
        json_t *o = result_json(op, res);
        op_finish(op, o ? PGREAD_FOUND : PGREAD_UNAVAILABLE, o);
    }
    PQclear(res);
    slot_dispatch(s->pr);
}

static void on_op_timeout(evutil_socket_t fd, short what, void *arg);

/* ------------------------------------------------------------------------- connections */

/* Watches the connection's socket for what (EV_READ and/or EV_WRITE). */
static int slot_watch(pgconn_slot *s, short what) {
    int fd = PQsocket(s->conn);
    if (fd < 0) return -1;
    if (s->io) { /* the socket may have changed (libpq tries the hosts of a list in turn) */
        event_del(s->io);
        event_assign(s->io, s->pr->base, fd, what | EV_PERSIST, on_io, s);
    } else if (!(s->io = event_new(s->pr->base, fd, what | EV_PERSIST, on_io, s))) {
        return -1;
    }
    return event_add(s->io, NULL);
}

/* The connection is lost (or never came up): fail its lookup, schedule a reconnect. */
static void slot_down(pgconn_slot *s, const char *why) {
    struct timeval tv = {s->backoff_ms / 1000, (s->backoff_ms % 1000) * 1000};
    if (s->state != PC_CONNECTING || s->backoff_ms == PGREAD_BACKOFF_MIN_MS)
        log_msg(LOG_WARN, "pgread_down", "read connection %d: %s", s->index, why);
    if (s->io) event_free(s->io);
    s->io = NULL;
    if (s->conn) PQfinish(s->conn);
    s->conn = NULL;
    PQclear(s->res);
    s->res = NULL;
    if (s->op) {
        pgread_op *op = s->op;
        s->op = NULL;
        op_finish(op, PGREAD_UNAVAILABLE, NULL);
    }
    s->state = PC_DOWN;
    evtimer_add(s->timer, &tv);
    s->backoff_ms = s->backoff_ms * 2 > PGREAD_BACKOFF_MAX_MS ? PGREAD_BACKOFF_MAX_MS : s->backoff_ms * 2;
    /* Queued lookups fail now when nothing can serve them. */
    if (pgread_connected(s->pr) == 0) {
        bool connecting = false;
        for (int i = 0; i < s->pr->npool; i++) connecting |= s->pr->pool[i].state == PC_CONNECTING;
        while (!connecting && s->pr->qhead) {
            pgread_op *op = s->pr->qhead;
            queue_remove(s->pr, op);
            op_finish(op, PGREAD_UNAVAILABLE, NULL);
        }
    }
}

static void connect_step(pgconn_slot *s) {
    switch (PQconnectPoll(s->conn)) {
    case PGRES_POLLING_READING:
        if (slot_watch(s, EV_READ) != 0) slot_down(s, "cannot watch the socket");
        return;
    case PGRES_POLLING_WRITING:
        if (slot_watch(s, EV_WRITE) != 0) slot_down(s, "cannot watch the socket");
        return;
    case PGRES_POLLING_OK:
        evtimer_del(s->timer);
        if (PQsetnonblocking(s->conn, 1) != 0 || slot_watch(s, EV_READ) != 0) {
            slot_down(s, "cannot switch to non-blocking mode");
            return;
        }
        s->state = PC_IDLE;
        s->backoff_ms = PGREAD_BACKOFF_MIN_MS;
        log_msg(LOG_INFO, "pgread_up", "read connection %d is up", s->index);
        slot_dispatch(s->pr);
        return;
    default: {
        char why[256];
        snprintf(why, sizeof why, "%s", PQerrorMessage(s->conn));
        why[strcspn(why, "\n")] = '\0';
        slot_down(s, why);
    }
    }
}

/* Reads what arrived; completes the lookup once libpq has the whole result. */
static void busy_read(pgconn_slot *s) {
    if (!PQconsumeInput(s->conn)) {
        slot_down(s, PQerrorMessage(s->conn));
        return;
    }
    while (!PQisBusy(s->conn)) {
        PGresult *r = PQgetResult(s->conn);
        if (!r) {
            slot_complete(s);
            return;
        }
        if (!s->res) s->res = r; /* one statement: the first result is the answer */
        else PQclear(r);
    }
}

static void on_io(evutil_socket_t fd, short what, void *arg) {
    pgconn_slot *s = arg;
    (void)fd;
    if (s->state == PC_CONNECTING) {
        connect_step(s);
    } else if (s->state == PC_BUSY) {
        if ((what & EV_WRITE) && PQflush(s->conn) == 0) slot_watch(s, EV_READ);
        if (what & EV_READ) busy_read(s);
    } else if (s->state == PC_IDLE) { /* notices, or the server closing the connection */
        if (!PQconsumeInput(s->conn) || PQstatus(s->conn) != CONNECTION_OK)
            slot_down(s, "the server closed the connection");
    }
}

static void on_slot_timer(evutil_socket_t fd, short what, void *arg) {
    pgconn_slot *s = arg;
    (void)fd;
    (void)what;
    if (s->state == PC_DOWN) slot_connect(s);
    else if (s->state == PC_CONNECTING) slot_down(s, "connect timed out");
}

static void slot_connect(pgconn_slot *s) {
    struct timeval tv = {PGREAD_CONNECT_TIMEOUT_MS / 1000, 0};
    s->conn = PQconnectStart(s->pr->url);
    s->state = PC_CONNECTING;
    if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD) {
        slot_down(s, s->conn ? PQerrorMessage(s->conn) : "out of memory");
        return;
    }
    evtimer_add(s->timer, &tv);
    /* libpq: right after PQconnectStart, act as if PQconnectPoll had asked for writability */
    if (slot_watch(s, EV_WRITE) != 0) slot_down(s, "cannot watch the socket");
}

/* Starts queued lookups on idle connections. */
static void slot_dispatch(pgread *pr) {
    for (int i = 0; i < pr->npool && pr->qhead; i++) {
        pgconn_slot *s = &pr->pool[i];
        if (s->state != PC_IDLE) continue;
        pgread_op *op = pr->qhead;
        const char *params[1] = {op->payment_id};
        queue_remove(pr, op);
        if (!PQsendQueryParams(s->conn, PGREAD_SQL, 1, NULL, params, NULL, NULL, 0)) {
            op_finish(op, PGREAD_UNAVAILABLE, NULL);
            slot_down(s, PQerrorMessage(s->conn));
            continue;
        }
        s->state = PC_BUSY;
        s->op = op;
        op->running = s;
        int fl = PQflush(s->conn);
        if (fl < 0 || slot_watch(s, fl == 1 ? EV_READ | EV_WRITE : EV_READ) != 0)
            slot_down(s, "cannot send the query");
    }
}

static void on_op_timeout(evutil_socket_t fd, short what, void *arg) {
    pgread_op *op = arg;
    (void)fd;
    (void)what;
    if (op->running) { /* the connection may be stuck: drop it (cancelling would block) */
        pgconn_slot *s = op->running;
        s->op = NULL;
        op_finish(op, PGREAD_UNAVAILABLE, NULL);
        slot_down(s, "lookup timed out");
    } else {
        queue_remove(op->pr, op);
        op_finish(op, PGREAD_UNAVAILABLE, NULL);
    }
}

/* --------------------------------------------------------------------------------- API */

static void on_kick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    slot_dispatch(arg);
}

pgread *pgread_new(struct event_base *base, const char *url, int pool_size, int query_timeout_ms,
                   char *errstr, size_t errstr_size) {
    pgread *pr = calloc(1, sizeof *pr);
    if (!pr || pool_size < 1 || pool_size > PGREAD_MAX_POOL || !(pr->url = strdup(url))) {
        snprintf(errstr, errstr_size, pr ? "read pool: 1..%d connections" : "out of memory",
                 PGREAD_MAX_POOL);
        pgread_destroy(pr);
        return NULL;
    }
    if (db_url_check(url, errstr, errstr_size) != 0) {
        pgread_destroy(pr);
        return NULL;
    }
    pr->base = base;
    pr->npool = pool_size;
    if (!(pr->kick = event_new(base, -1, 0, on_kick, pr))) {
        snprintf(errstr, errstr_size, "out of memory");
        pgread_destroy(pr);
        return NULL;
    }
    pr->query_timeout.tv_sec = query_timeout_ms / 1000;
    pr->query_timeout.tv_usec = (query_timeout_ms % 1000) * 1000;
    for (int i = 0; i < pool_size; i++) {
        pgconn_slot *s = &pr->pool[i];
        s->pr = pr;
        s->index = i;
        s->backoff_ms = PGREAD_BACKOFF_MIN_MS;
        s->timer = evtimer_new(base, on_slot_timer, s);
        if (!s->timer) {
            snprintf(errstr, errstr_size, "out of memory");
            pgread_destroy(pr);
            return NULL;
        }
        slot_connect(s);
    }
    return pr;
}

void pgread_destroy(pgread *pr) {
    if (!pr) return;
    while (pr->qhead) {
        pgread_op *op = pr->qhead;
        queue_remove(pr, op);
        op_finish(op, PGREAD_UNAVAILABLE, NULL);
    }
    for (int i = 0; i < PGREAD_MAX_POOL; i++) {
        pgconn_slot *s = &pr->pool[i];
        if (s->op) op_finish(s->op, PGREAD_UNAVAILABLE, NULL);
        if (s->io) event_free(s->io);
        if (s->timer) event_free(s->timer);
        PQclear(s->res);
        if (s->conn) PQfinish(s->conn);
    }
    if (pr->kick) event_free(pr->kick);
    free(pr->url);
    free(pr);
}

int pgread_connected(const pgread *pr) {
    int n = 0;
    for (int i = 0; pr && i < pr->npool; i++)
        n += pr->pool[i].state == PC_IDLE || pr->pool[i].state == PC_BUSY;
    return n;
}

pgread_op *pgread_payment(pgread *pr, const char *payment_id, const char *source, pgread_cb cb,
                          void *arg) {
    bool usable = false;
    for (int i = 0; i < pr->npool; i++) usable |= pr->pool[i].state != PC_DOWN;
    if (!usable || pr->queued >= PGREAD_MAX_QUEUED) return NULL;
    pgread_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->pr = pr;
    snprintf(op->payment_id, sizeof op->payment_id, "%s", payment_id);
    op->cb = cb;
    op->arg = arg;
    op->timeout = evtimer_new(pr->base, on_op_timeout, op);
    if ((source && !(op->source = strdup(source))) || !op->timeout ||
        evtimer_add(op->timeout, &pr->query_timeout) != 0) {
        if (op->timeout) event_free(op->timeout);
        free(op->source);
        free(op);
        return NULL;
    }
    op->prev = pr->qtail;
    if (pr->qtail) pr->qtail->next = op;
    else pr->qhead = op;
    pr->qtail = op;
    pr->queued++;
    /* Not slot_dispatch() here: a send that fails at once would call cb (which may free what the
     * caller still uses) before this returns; the loop starts it on its next turn instead. */
    event_active(pr->kick, 0, 0);
    return op;
}

void pgread_cancel(pgread_op *op) { op->cb = NULL; }
