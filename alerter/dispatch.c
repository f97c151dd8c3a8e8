/* dispatch: claim -> deliver -> record, on the dispatcher thread (see dispatch.h).
 *
 * Reading order: the thread's loop (dispatch_tick), claiming, a job's start, its result (outcome,
 * breaker, metrics), recording, then subscriptions, the connection, and set-up/teardown. */
#include "dispatch.h"

#include <limits.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "breaker.h"
#include "db.h"
#include "dbhealth.h"
#include "fsutil.h"
#include "log.h"
#include "mail.h"
#include "retention.h"
#include "subs.h"

/* A claimed row's lease: the transfer timeout plus this margin for recording the result. If the
 * holder is gone (crashed) the row is due again when the lease ends; if it was only slow (its
 * result could not be recorded in time, e.g. PostgreSQL was away), another attempt may go out:
 * at least once, which receivers absorb by alert id / delivery id. */
#define LEASE_MARGIN_MS 5000
#define GAUGES_EVERY_US 2000000
#define RECONNECT_MIN_US 200000
#define RECONNECT_MAX_US 5000000
/* Longest a prune keeps the loop from claiming and recording, per turn (a round goes on at the
 * next turn). */
#define PRUNE_BUDGET_MS 200

/* One claimed delivery, from its claim until its result is recorded. */
typedef struct job {
    char delivery_id[37], alert_id[37], payment_id[37];
    char event_type[32];
    char sub_name[SUBS_NAME_MAX + 1];
    int64_t sub_id;
    int attempt;        /* deliveries.attempts after the claim: the attempt's number */
    int retry_number;   /* attempt number within the current schedule (retry policy's n) */
    int64_t age_ms;     /* delivery age at the claim */
    int64_t claimed_us;
    char *body;
    /* the outcome, once known */
    const char *outcome;        /* "delivered", "retry", "failed" */
    const char *failure_reason; /* failed: "rejected" or "exhausted" */
    int64_t retry_in_ms;
    delivery_result res;
    struct job *next;
} job;

/* A subscription this instance delivers to, with its breaker and its running transfers. */
typedef struct sub_state {
    subs_sub s;
    breaker *b;
    int in_flight;
    bool more_due;  /* its last claim got all it asked for: more rows may be due now */
} sub_state;

/* A subscription that left the active set (disabled, deleted, made insecure) while transfers to it
 * were running: their count, so that it is not forgotten if the subscription comes back before
 * they end (its limit would be exceeded by that many, for good). */
typedef struct gone_sub {
    int64_t id;
    int in_flight;
} gone_sub;

struct dispatch {
    dispatch_config cfg;
    char *database_url, *alerter_id, *smtp_from;
    int64_t cooldown_ms;       /* breaker cool-down, time compression applied */
    PGconn *conn;
    delivery_engine *eng;
    retention *ret;
    sub_state *subs;
    gone_sub *gone;            /* ngone of them, each with in_flight > 0 */
    size_t ngone;
    size_t nsubs, rr;          /* rr: where the next claim starts handing out capacity (fairness) */
    job *unrecorded, *unrecorded_tail;
    bool aborting;             /* results now come from delivery_abort_all() */
    int64_t next_claim_us, next_refresh_us, next_gauges_us, next_connect_us, connect_backoff_us;
    int64_t next_insecure_log_us;  /* subscription_insecure lines: at most one a minute */
    unsigned int seed;
    pthread_t thread;
    bool started;
    atomic_bool stop, wake;
    metric *m_deliveries, *m_latency, *m_breaker, *m_breaker_opened, *m_retries_pending,
        *m_pending, *m_in_flight, *m_db_errors, *m_denied;
};

static void dispatch_tick(dispatch *d);
static int dispatch_caps(dispatch *d, int64_t now, size_t *idx, int *caps);
static bool dispatch_more_due(dispatch *d, int64_t now);
static void dispatch_claim(dispatch *d);
static void dispatch_collect(dispatch *d);
static void dispatch_record_all(dispatch *d);
static void dispatch_refresh_subs(dispatch *d);
static void dispatch_connect(dispatch *d);
static void dispatch_db_failed(dispatch *d, const char *what, const char *err);
static void dispatch_gauges(dispatch *d);
static void dispatch_notifications(dispatch *d);
static void dispatch_prune(dispatch *d);

static int64_t now_ms(void) { return fs_mono_us() / 1000; }

static void dispatch_db_answered(dispatch *d) { dbhealth_answered(d->cfg.db, fs_mono_us()); }

static sub_state *sub_find(dispatch *d, int64_t id) {
    for (size_t i = 0; i < d->nsubs; i++)
        if (d->subs[i].s.id == id) return &d->subs[i];
    return NULL;
}

/* Adds delta to the running transfers of gone subscription id; an entry at 0 is removed. Returns
 * its count before (0: none). Out of memory: the count is lost (the limit may be exceeded). */
static int gone_add(dispatch *d, int64_t id, int delta) {
    size_t i = 0;
    while (i < d->ngone && d->gone[i].id != id) i++;
    int before = i < d->ngone ? d->gone[i].in_flight : 0;
    if (i == d->ngone) {
        gone_sub *g = delta > 0 ? realloc(d->gone, (d->ngone + 1) * sizeof *g) : NULL;
        if (!g) return before;
        d->gone = g;
        d->gone[d->ngone++] = (gone_sub){id, 0};
    }
    d->gone[i].in_flight += delta;
    if (d->gone[i].in_flight <= 0) d->gone[i] = d->gone[--d->ngone];
    return before;
}

/* The transfers still running of subscription id, which is back in the active set: they are its
 * own again (0: none). */
static int gone_take(dispatch *d, int64_t id) { return gone_add(d, id, -INT_MAX); }

/* ---- the loop -------------------------------------------------------------------------------- */

/* Checked between ticks (a tick waits at most poll-interval-ms), so a signal is seen within that,
 * or once the statement in flight returns (db-timeout-ms at worst: then the connection is dropped
 * and the tick's other statements are skipped). */
static bool dispatch_stopping(const dispatch *d) {
    return atomic_load(&d->stop) || (d->cfg.stop && atomic_load(d->cfg.stop));
}

static void *dispatch_main(void *arg) {
    dispatch *d = arg;
    while (!dispatch_stopping(d)) dispatch_tick(d);
    /* stopping: no new claims; running transfers get shutdown_timeout_ms, then are released */
    int64_t deadline = fs_mono_us() + (int64_t)d->cfg.shutdown_timeout_ms * 1000;
    while (delivery_in_flight(d->eng) > 0 && fs_mono_us() < deadline) {
        delivery_wait(d->eng, 100, -1, NULL);
        dispatch_collect(d);
    }
    dispatch_collect(d);
    d->aborting = true;
    delivery_abort_all(d->eng);
    dispatch_collect(d);
    if (d->unrecorded && !d->conn) dispatch_connect(d);
    if (d->conn) dispatch_record_all(d);
    if (d->unrecorded)
        log_msg(LOG_WARN, "results_unrecorded",
                "PostgreSQL unreachable at exit: some results were not recorded; those deliveries "
                "are attempted again when their lease ends");
    return NULL;
}

static void dispatch_tick(dispatch *d) {
    int64_t now = fs_mono_us();
    bool notified = false;
    if (!d->conn && now >= d->next_connect_us) dispatch_connect(d);
    if (d->conn && now >= d->next_refresh_us) dispatch_refresh_subs(d);
    if (d->conn && d->unrecorded) dispatch_record_all(d);
    bool woken = atomic_exchange(&d->wake, false);
    if (d->conn && (woken || now >= d->next_claim_us || dispatch_more_due(d, now_ms())))
        dispatch_claim(d);
    if (d->conn && now >= d->next_gauges_us) dispatch_gauges(d);
    if (d->conn && fs_mono_us() >= retention_due_us(d->ret)) dispatch_prune(d);
    int64_t wait_ms = (d->next_claim_us - fs_mono_us()) / 1000;
    int64_t prune_ms = (retention_due_us(d->ret) - fs_mono_us()) / 1000;
    if (d->conn && prune_ms < wait_ms) wait_ms = prune_ms;
    if (wait_ms < 0 || (d->conn && dispatch_more_due(d, now_ms()))) wait_ms = 0;
    if (wait_ms > d->cfg.poll_interval_ms) wait_ms = d->cfg.poll_interval_ms;
    if (!d->conn && wait_ms > 100) wait_ms = 100;
    delivery_wait(d->eng, (int)wait_ms, d->conn ? PQsocket(d->conn) : -1, &notified);
    if (notified) dispatch_notifications(d);
    dispatch_collect(d);
    if (d->conn && d->unrecorded) dispatch_record_all(d);
}

/* ---- claiming ------------------------------------------------------------------------------ */

/* Free transfer slots of one subscriber: its own limit, and what its breaker allows. */
static int sub_cap(const dispatch *d, const sub_state *ss, int64_t now) {
    int cap = d->cfg.max_in_flight_per_sub - ss->in_flight;
    int permits = breaker_permits(ss->b, now);
    if (permits >= 0 && cap > permits) cap = permits;
    return cap < 0 ? 0 : cap;
}

/* Capacity per subscriber within the global limit, handed out from a rotating start so that no
 * subscriber always comes last: idx[k] is the subscriber, caps[k] its share. Returns the total. */
static int dispatch_caps(dispatch *d, int64_t now, size_t *idx, int *caps) {
    int left = d->cfg.max_in_flight - (int)delivery_in_flight(d->eng), total = 0;
    for (size_t k = 0; k < d->nsubs; k++) {
        idx[k] = (d->rr + k) % d->nsubs;
        int cap = sub_cap(d, &d->subs[idx[k]], now);
        caps[k] = cap < left ? cap : left;
        left -= caps[k];
        total += caps[k];
    }
    return total;
}

/* A subscriber whose last claim was full can take more now: claim again without waiting for
 * the poll interval (a backlog drains at the speed of the subscriber, not of the polling). */
static bool dispatch_more_due(dispatch *d, int64_t now) {
    if ((int)delivery_in_flight(d->eng) >= d->cfg.max_in_flight) return false;
    for (size_t i = 0; i < d->nsubs; i++)
        if (d->subs[i].more_due && sub_cap(d, &d->subs[i], now) > 0) return true;
    return false;
}

/* "{a,b,c}" PostgreSQL array literal of n integers (malloc'd). */
static char *int_array(const int64_t *v64, const int *v32, size_t n) {
    size_t cap = n * 21 + 3, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%" PRId64, i ? "," : "",
                                v64 ? v64[i] : (int64_t)v32[i]);
    snprintf(s + len, cap - len, "}");
    return s;
}

static job *job_from_row(PGresult *res, int i) {
    job *j = calloc(1, sizeof *j);
    if (!j || !(j->body = strdup(PQgetvalue(res, i, 9)))) {
        free(j);
        return NULL;
    }
    snprintf(j->delivery_id, sizeof j->delivery_id, "%s", PQgetvalue(res, i, 0));
    j->sub_id = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    j->attempt = atoi(PQgetvalue(res, i, 2));
    j->retry_number = atoi(PQgetvalue(res, i, 3));
    j->age_ms = strtoll(PQgetvalue(res, i, 4), NULL, 10);
    snprintf(j->alert_id, sizeof j->alert_id, "%s", PQgetvalue(res, i, 5));
    snprintf(j->payment_id, sizeof j->payment_id, "%s", PQgetvalue(res, i, 6));
    snprintf(j->event_type, sizeof j->event_type, "%s", PQgetvalue(res, i, 7));
    j->claimed_us = fs_mono_us();
    return j;
}

static void job_free(job *j) {
    if (!j) return;
    free(j->body);
    free(j);
}

static void dispatch_start_job(dispatch *d, sub_state *ss, job *j);
static void dispatch_breaker_note(dispatch *d, sub_state *ss, breaker_state before);

/* Runs alerter_claim() with the capacities; starts a transfer per claimed row; got[k] counts
 * them per subscriber. Returns the number of rows, or -1 (database error). */
static int dispatch_claim_rows(dispatch *d, const size_t *idx, const int *caps, int *got) {
    char err[512], lease[24];
    size_t n = d->nsubs;
    int64_t *ids = calloc(n, sizeof *ids);
    for (size_t k = 0; ids && k < n; k++) ids[k] = d->subs[idx[k]].s.id;
    char *ids_s = ids ? int_array(ids, NULL, n) : NULL, *caps_s = int_array(NULL, caps, n);
    int rows = -1;
    PGresult *res = NULL;
    snprintf(lease, sizeof lease, "%ld", d->cfg.http.timeout_ms + LEASE_MARGIN_MS);
    const char *params[4] = {ids_s, caps_s, d->alerter_id, lease};
    if (!ids_s || !caps_s) goto done;
    res = db_query(d->conn, d->cfg.db_timeout_ms,
                   "SELECT * FROM alerter_claim($1::bigint[], $2::int[], $3, $4::bigint)", 4, params,
                   NULL, NULL);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_error(d->conn, res, err, sizeof err);
        dispatch_db_failed(d, "claim", err);
        goto done;
    }
    dispatch_db_answered(d);
    rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        job *j = job_from_row(res, i);
        size_t k = 0;
        while (j && k < n && d->subs[idx[k]].s.id != j->sub_id) k++;
        if (!j || k == n) { /* out of memory (or impossible): the lease brings the row back */
            log_msg(LOG_ERROR, "claim_dropped", "could not start a claimed delivery");
            job_free(j);
            continue;
        }
        got[k]++;
        dispatch_start_job(d, &d->subs[idx[k]], j);
    }
done:
    PQclear(res);
    free(ids);
    free(ids_s);
    free(caps_s);
    return rows;
}

static void dispatch_claim(dispatch *d) {
    size_t n = d->nsubs;
    size_t *idx = calloc(n ? n : 1, sizeof *idx);
    int *caps = calloc(n ? n : 1, sizeof *caps), *got = calloc(n ? n : 1, sizeof *got);
    d->next_claim_us = fs_mono_us() + (int64_t)d->cfg.poll_interval_ms * 1000;
    if (idx && caps && got && dispatch_caps(d, now_ms(), idx, caps) > 0) {
        d->rr++;
        if (dispatch_claim_rows(d, idx, caps, got) >= 0)
            for (size_t k = 0; k < n; k++) /* a subscriber without capacity keeps its flag */
                if (caps[k] > 0) d->subs[idx[k]].more_due = got[k] == caps[k];
    }
    free(idx);
    free(caps);
    free(got);
}

/* ---- a job's transfer -------------------------------------------------------------------------- */

static void dispatch_start_job(dispatch *d, sub_state *ss, job *j) {
    char *mail = NULL;
    size_t mail_len = 0;
    snprintf(j->sub_name, sizeof j->sub_name, "%s", ss->s.name);
    delivery_request req = {
        .email = ss->s.email, .url = ss->s.url, .secret = ss->s.secret, .ca_file = ss->s.ca_file,
        .event_type = j->event_type, .delivery_id = j->delivery_id, .alert_id = j->alert_id,
        .attempt = j->attempt, .body = j->body, .body_len = strlen(j->body),
        .email_to = (const char *const *)ss->s.email_to, .n_email_to = ss->s.n_email_to,
        .opaque = j,
    };
    if (ss->s.email) {
        mail = mail_format(d->smtp_from, req.email_to, req.n_email_to, j->event_type,
                           j->delivery_id, j->body, req.body_len, fs_now_ms(), &mail_len);
        req.body = mail;
        req.body_len = mail_len;
        if (!mail) { /* never an empty email: the lease expires and the delivery is tried again */
            log_msg(LOG_ERROR, "delivery_start_failed", "formatting the email failed (out of memory, or the event body is not a JSON object)");
            job_free(j);
            return;
        }
    }
    breaker_state before = breaker_get_state(ss->b);
    breaker_on_start(ss->b, now_ms());
    dispatch_breaker_note(d, ss, before);
    ss->in_flight++;
    if (delivery_start(d->eng, &req) != 0) { /* out of memory: give the slot back; the lease expires */
        ss->in_flight--;
        log_msg(LOG_ERROR, "delivery_start_failed", "out of memory starting a delivery");
        job_free(j);
    }
    free(mail);
}

/* Email: libcurl reports an SMTP 5xx reply (permanent in SMTP) with the reply code.
 * address_denied (webhook-deny-networks refused every address of the URL's host) is, like a 401 or
 * 403, something an operator fixes (the URL, its DNS, the list), not the alert: retried on the
 * schedule and counted by the breaker (which soon stops the attempts), exhausted and dead-lettered
 * after retry-max-age-ms; never dead-lettered at once, so a fix within the day loses nothing. */
static retry_class classify(const sub_state *ss, const delivery_result *r) {
    /* address_denied: never answered, so retry_classify() below says RETRY_AGAIN */
    if (ss && ss->s.email) {
        if (r->answered) return RETRY_DONE;
        return r->status >= 500 && r->status <= 599 ? RETRY_PERMANENT : RETRY_AGAIN;
    }
    return retry_classify(r->answered, r->status);
}

/* The breaker learns from the result. */
static void dispatch_breaker(dispatch *d, sub_state *ss, retry_class c) {
    breaker_state before = breaker_get_state(ss->b);
    if (c == RETRY_AGAIN) breaker_on_failure(ss->b, now_ms());
    else breaker_on_success(ss->b);
    dispatch_breaker_note(d, ss, before);
}

/* The breaker's state goes to the gauge and, when it changed (a result, or a probe that made an open
 * breaker half-open), the log. */
static void dispatch_breaker_note(dispatch *d, sub_state *ss, breaker_state before) {
    breaker_state after = breaker_get_state(ss->b);
    metric_set(d->m_breaker, ss->s.name, (double)after);
    if (after == before) return;
    if (after == BREAKER_OPEN) metric_add(d->m_breaker_opened, ss->s.name, 1);
    log_fields(after == BREAKER_OPEN ? LOG_WARN : LOG_INFO, "breaker_changed",
               json_pack("{s:s, s:s, s:s, s:i}", "subscription", ss->s.name, "from",
                         breaker_state_name(before), "to", breaker_state_name(after),
                         "consecutive_failures", breaker_failures(ss->b)),
               "circuit breaker of %s: %s -> %s", ss->s.name, breaker_state_name(before),
               breaker_state_name(after));
}

/* What the result means: delivered, retry (when), or failed (why). */
static void job_outcome(dispatch *d, job *j, retry_class c) {
    j->outcome = "delivered";
    if (d->aborting && !j->res.answered) { /* stopping: released for a retry right away */
        j->outcome = "retry";
        j->retry_in_ms = 0;
    } else if (c == RETRY_PERMANENT) {
        j->outcome = "failed";
        j->failure_reason = "rejected";
    } else if (c == RETRY_AGAIN) {
        double u = (double)rand_r(&d->seed) / ((double)RAND_MAX + 1.0);
        int64_t elapsed = (fs_mono_us() - j->claimed_us) / 1000;
        j->retry_in_ms = retry_next_ms(&d->cfg.retry, j->retry_number, j->age_ms + elapsed,
                                       j->res.retry_after_ms, u);
        j->outcome = j->retry_in_ms >= 0 ? "retry" : "failed";
        j->failure_reason = j->retry_in_ms >= 0 ? NULL : "exhausted";
    }
}

static void log_result(const job *j) {
    bool ok = strcmp(j->outcome, "delivered") == 0;
    json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I}", "delivery_id", j->delivery_id,
                          "alert_id", j->alert_id, "event_type", j->event_type, "subscription",
                          j->sub_name, "attempt", j->attempt, "status", (json_int_t)j->res.status,
                          "latency_ms", (json_int_t)(j->res.latency_us / 1000));
    if (!ok) json_object_set_new(f, "error", json_string(j->res.error));
    if (j->res.address_denied) json_object_set_new(f, "denied_address", json_string(j->res.denied_address));
    if (j->failure_reason) json_object_set_new(f, "reason", json_string(j->failure_reason));
    if (strcmp(j->outcome, "retry") == 0)
        json_object_set_new(f, "retry_in_ms", json_integer(j->retry_in_ms));
    if (ok) log_fields(LOG_INFO, "delivered", f, "delivered to %s", j->sub_name);
    else if (j->failure_reason)
        log_fields(LOG_WARN, "delivery_failed", f, "delivery to %s failed for good (%s): dead-lettered",
                   j->sub_name, j->failure_reason);
    else log_fields(LOG_WARN, "delivery_retry", f, "delivery to %s failed; retrying", j->sub_name);
}

static void dispatch_on_result(dispatch *d, const delivery_result *r) {
    job *j = r->opaque;
    sub_state *ss = sub_find(d, j->sub_id); /* NULL when it was disabled meanwhile */
    j->res = *r;
    retry_class c = classify(ss, r);
    job_outcome(d, j, c);
    if (ss) {
        ss->in_flight--;
        if (!(d->aborting && !r->answered)) dispatch_breaker(d, ss, c);
    } else {
        gone_add(d, j->sub_id, -1);
    }
    char labels[SUBS_NAME_MAX + 16];
    snprintf(labels, sizeof labels, "%s,%s", j->sub_name,
             j->failure_reason ? j->failure_reason : j->outcome);
    metric_add(d->m_deliveries, labels, 1);
    if (r->address_denied) metric_add(d->m_denied, j->sub_name, 1);
    metric_observe(d->m_latency, j->sub_name, (double)r->latency_us / 1e6);
    log_result(j);
    j->next = NULL; /* queued for recording, in order */
    if (d->unrecorded_tail) d->unrecorded_tail->next = j;
    else d->unrecorded = j;
    d->unrecorded_tail = j;
}

static void dispatch_collect(dispatch *d) {
    delivery_result r;
    while (delivery_next(d->eng, &r)) dispatch_on_result(d, &r);
}

/* ---- recording ----------------------------------------------------------------------------- */

/* Returns 0 recorded (or dropped: see below), -1 the database failed (retry later). */
static int dispatch_record(dispatch *d, const job *j) {
    char err[512], attempt[16], status[24], latency[24], retry_in[24];
    snprintf(attempt, sizeof attempt, "%d", j->attempt);
    snprintf(status, sizeof status, "%ld", j->res.status);
    snprintf(latency, sizeof latency, "%" PRId64, j->res.latency_us / 1000);
    snprintf(retry_in, sizeof retry_in, "%" PRId64, j->retry_in_ms);
    const char *params[9] = {j->delivery_id, attempt, j->outcome, j->res.status ? status : NULL,
                             j->res.error[0] ? j->res.error : NULL, latency,
                             strcmp(j->outcome, "retry") == 0 ? retry_in : NULL, j->failure_reason,
                             d->alerter_id};
    PGresult *res = db_query(d->conn, d->cfg.db_timeout_ms,
                             "SELECT alerter_delivery_result($1, $2::int, $3, $4::int, $5, "
                             "$6::int, $7::bigint, $8, $9)",
                             9, params, NULL, NULL);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_error(d->conn, res, err, sizeof err);
        if (!db_is_data_error(res)) rc = -1;
        else log_fields(LOG_ERROR, "result_rejected", json_pack("{s:s, s:s}", "delivery_id", j->delivery_id, "error", err),
                        "PostgreSQL refused a delivery result; the delivery is retried when its lease ends");
        if (rc) dispatch_db_failed(d, "record", err);
    } else if (dispatch_db_answered(d), PQgetvalue(res, 0, 0)[0] != 't') {
        log_fields(LOG_WARN, "lease_lost", json_pack("{s:s, s:i}", "delivery_id", j->delivery_id, "attempt", j->attempt),
                   "the delivery's lease had run out and another attempt owns it: result not recorded");
    }
    PQclear(res);
    return rc;
}

static void dispatch_record_all(dispatch *d) {
    while (d->unrecorded && d->conn) {
        job *j = d->unrecorded;
        if (dispatch_record(d, j) != 0) return; /* kept, in order, for the next try */
        d->unrecorded = j->next;
        if (!d->unrecorded) d->unrecorded_tail = NULL;
        job_free(j);
    }
}

/* ---- subscriptions, gauges, notifications ------------------------------------------------------ */

/* A subscription's counters at 0 for every result (a no-op once they exist), so that its first
 * failure is visible to increase() once a scrape has seen the zeros. */
static void dispatch_metrics_sub(dispatch *d, const char *name) {
    static const char *const results[] = {"delivered", "retry", "rejected", "exhausted"};
    char labels[SUBS_NAME_MAX + 16];
    metric_add(d->m_breaker_opened, name, 0);
    metric_add(d->m_denied, name, 0);
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        snprintf(labels, sizeof labels, "%s,%s", name, results[i]);
        metric_add(d->m_deliveries, labels, 0);
    }
}

/* http:// subscriptions without allow-insecure-http are not delivered to: dropped from the set
 * (their deliveries wait, as a disabled subscription's, until the URL is https:// or the option is
 * set), with an error line at most once a minute. */
static void dispatch_drop_insecure(dispatch *d, subs_set *set) {
    size_t keep = 0, dropped = 0;
    char first[SUBS_NAME_MAX + 1] = "";
    for (size_t i = 0; i < set->n; i++) {
        if (d->cfg.http.allow_http || set->v[i].email || !subs_url_insecure(set->v[i].url)) {
            set->v[keep++] = set->v[i];
            continue;
        }
        if (!dropped++) snprintf(first, sizeof first, "%s", set->v[i].name);
        subs_sub_clear(&set->v[i]);
    }
    set->n = keep;
    if (!dropped || fs_mono_us() < d->next_insecure_log_us) return;
    d->next_insecure_log_us = fs_mono_us() + 60 * 1000000LL;
    log_fields(LOG_ERROR, "subscription_insecure",
               json_pack("{s:s, s:i}", "subscription", first, "count", (int)dropped),
               "%zu subscription(s) (%s...) have an http:// URL: not delivered to (their deliveries "
               "wait) until the URL is https:// or allow-insecure-http is set", dropped, first);
}

/* Reloads the active subscriptions; breakers and transfer counts carry over by id. */
static void dispatch_refresh_subs(dispatch *d) {
    char err[512];
    subs_set set = {0};
    d->next_refresh_us = fs_mono_us() + (int64_t)d->cfg.subs_refresh_ms * 1000;
    if (subs_load(d->conn, d->cfg.db_timeout_ms, &set, err, sizeof err) != 0) {
        dispatch_db_failed(d, "subscriptions", err);
        return;
    }
    dispatch_db_answered(d);
    dispatch_drop_insecure(d, &set);
    sub_state *next = calloc(set.n ? set.n : 1, sizeof *next);
    if (!next) {
        subs_set_clear(&set);
        return;
    }
    for (size_t i = 0; i < set.n; i++) {
        sub_state *old = sub_find(d, set.v[i].id);
        next[i].s = set.v[i]; /* moved: set.v's pointers now belong to next[i] */
        next[i].b = old ? old->b : breaker_new(d->cfg.breaker_threshold, d->cooldown_ms);
        next[i].in_flight = old ? old->in_flight : gone_take(d, set.v[i].id);
        next[i].more_due = old ? old->more_due : true; /* new: look at once */
        if (old) old->b = NULL;
    }
    for (size_t i = 0; i < d->nsubs; i++) {
        /* every old name's breaker gauge goes (one that left the set, disabled, deleted or
         * insecure, has no state to alert on; its counters stay, as counters do) ... */
        metric_remove(d->m_breaker, d->subs[i].s.name);
        if (d->subs[i].b && d->subs[i].in_flight > 0) /* left the set; its transfers still run */
            gone_add(d, d->subs[i].s.id, d->subs[i].in_flight);
        breaker_destroy(d->subs[i].b); /* NULL when it moved to next */
        subs_sub_clear(&d->subs[i].s);
    }
    for (size_t i = 0; i < set.n; i++) { /* ... and every current one's is set, under its name now
                                          * (renamed in SQL, or a name given to another) */
        dispatch_metrics_sub(d, next[i].s.name);
        metric_set(d->m_breaker, next[i].s.name, breaker_get_state(next[i].b));
    }
    free(d->subs);
    free(set.v); /* the entries were moved out */
    d->subs = next;
    d->nsubs = set.n;
}

static void dispatch_gauges(dispatch *d) {
    char err[512];
    d->next_gauges_us = fs_mono_us() + GAUGES_EVERY_US;
    metric_set(d->m_in_flight, NULL, (double)delivery_in_flight(d->eng));
    PGresult *res = db_query(d->conn, d->cfg.db_timeout_ms,
                             "SELECT count(*) FILTER (WHERE attempts > attempt_base AND state = 'pending'), "
                             "       count(*) FROM deliveries WHERE state IN ('pending', 'in_flight')",
                             0, NULL, NULL, NULL);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        dispatch_db_answered(d);
        metric_set(d->m_retries_pending, NULL, strtod(PQgetvalue(res, 0, 0), NULL));
        metric_set(d->m_pending, NULL, strtod(PQgetvalue(res, 0, 1), NULL));
    } else {
        db_error(d->conn, res, err, sizeof err);
        dispatch_db_failed(d, "gauges", err);
    }
    PQclear(res);
}

/* NOTIFY fraudshield_deliveries: rows were made (by another process): claim now. */
static void dispatch_notifications(dispatch *d) {
    PGnotify *n;
    if (!PQconsumeInput(d->conn)) {
        dispatch_db_failed(d, "listen", PQerrorMessage(d->conn));
        return;
    }
    while ((n = PQnotifies(d->conn))) {
        atomic_store(&d->wake, true);
        PQfreemem(n);
    }
}

/* Part of a retention round (retention.h): at most PRUNE_BUDGET_MS, then back to the loop. */
static void dispatch_prune(dispatch *d) {
    char err[512];
    if (retention_run(d->ret, d->conn, d->cfg.db_timeout_ms, PRUNE_BUDGET_MS, err, sizeof err) != 0) {
        dispatch_db_failed(d, "retention", err);
        return;
    }
    dispatch_db_answered(d);
}

/* ---- the connection ------------------------------------------------------------------------ */

static void dispatch_connect(dispatch *d) {
    char err[512];
    d->conn = db_connect(d->database_url, "fraudshield-alerter dispatch", err, sizeof err);
    if (d->conn && db_exec_within(d->conn, d->cfg.db_timeout_ms, "LISTEN fraudshield_deliveries", err,
                                  sizeof err) != 0) {
        PQfinish(d->conn);
        d->conn = NULL;
    }
    if (!d->conn) {
        metric_add(d->m_db_errors, "dispatch", 1);
        d->connect_backoff_us = d->connect_backoff_us ? d->connect_backoff_us * 2 : RECONNECT_MIN_US;
        if (d->connect_backoff_us > RECONNECT_MAX_US) d->connect_backoff_us = RECONNECT_MAX_US;
        d->next_connect_us = fs_mono_us() + d->connect_backoff_us;
        log_fields(LOG_WARN, "db_unavailable", json_pack("{s:s, s:s}", "side", "dispatch", "error", err),
                   "dispatcher: PostgreSQL not reachable; retrying");
        return;
    }
    d->connect_backoff_us = 0;
    dbhealth_trip_end(d->cfg.db, fs_mono_us(), true); /* up, and it answered */
    d->next_refresh_us = 0; /* reload subscriptions and claim at once */
    d->next_claim_us = 0;
    log_msg(LOG_INFO, "db_connected", "dispatcher connected to PostgreSQL");
}

/* A failed statement: if the connection is gone, drop it (reconnected by the loop). */
static void dispatch_db_failed(dispatch *d, const char *what, const char *err) {
    metric_add(d->m_db_errors, "dispatch", 1);
    log_fields(LOG_WARN, "db_error", json_pack("{s:s, s:s, s:s}", "side", "dispatch", "during", what, "error", err),
               "dispatcher: PostgreSQL error during %s", what);
    if (PQstatus(d->conn) == CONNECTION_OK) return;
    PQfinish(d->conn);
    d->conn = NULL;
    dbhealth_set_up(d->cfg.db, false);
    d->next_connect_us = fs_mono_us() + RECONNECT_MIN_US;
}

/* ---- set-up and teardown ----------------------------------------------------------------------- */

static void dispatch_metrics(dispatch *d, metrics *m) {
    if (!m) return;
    d->m_deliveries = metrics_counter(m, "fs_alerter_deliveries_total",
                                      "Delivery attempts by result (delivered, retry, rejected: "
                                      "permanent failure, exhausted: retries used up)",
                                      "subscription,result");
    d->m_latency = metrics_histogram(m, "fs_alerter_delivery_duration_seconds",
                                     "Duration of one delivery attempt", "subscription",
                                     METRICS_LATENCY_BUCKETS, METRICS_LATENCY_NBUCKETS);
    d->m_breaker = metrics_gauge(m, "fs_alerter_breaker_state",
                                 "Circuit breaker per subscription: 0 closed, 1 half-open, 2 open",
                                 "subscription");
    d->m_breaker_opened = metrics_counter(m, "fs_alerter_breaker_opened_total",
                                          "Times a subscription's circuit breaker opened", "subscription");
    d->m_retries_pending = metrics_gauge(m, "fs_alerter_retries_pending",
                                         "Deliveries waiting for a retry (all alerters)", NULL);
    d->m_pending = metrics_gauge(m, "fs_alerter_deliveries_pending",
                                 "Deliveries not finished yet: pending or in flight (all alerters)", NULL);
    d->m_in_flight = metrics_gauge(m, "fs_alerter_transfers_in_flight",
                                   "Transfers running in this alerter", NULL);
    d->m_denied = metrics_counter(m, "fs_alerter_address_denied_total",
                                  "Delivery attempts not connected: every address of the URL's host "
                                  "is in webhook-deny-networks (also counted as retry or exhausted)",
                                  "subscription");
}

dispatch *dispatch_new(const dispatch_config *cfg, char *errstr, size_t errstr_size) {
    dispatch *d = calloc(1, sizeof *d);
    if (!d) return snprintf(errstr, errstr_size, "out of memory"), NULL;
    d->cfg = *cfg;
    d->database_url = strdup(cfg->database_url);
    d->alerter_id = strdup(cfg->alerter_id);
    d->smtp_from = strdup(cfg->http.smtp_from ? cfg->http.smtp_from : "");
    d->cooldown_ms = cfg->breaker_cooldown_ms /
                     (cfg->retry.time_compression > 1 ? cfg->retry.time_compression : 1);
    d->seed = (unsigned int)(fs_now_ms() ^ ((int64_t)getpid() << 16));
    if (!d->database_url || !d->alerter_id || !d->smtp_from) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    d->cfg.database_url = d->database_url;
    d->cfg.alerter_id = d->alerter_id;
    if (!(d->eng = delivery_new(&cfg->http, errstr, errstr_size))) goto failed; /* copies them */
    /* the caller's strings need not outlive us: the engine and d hold copies */
    d->cfg.http.ca_file = d->cfg.http.user_agent = d->cfg.http.smtp_from = NULL;
    d->cfg.http.smtp_user = d->cfg.http.smtp_password = d->cfg.http.deny_networks = NULL;
    d->m_db_errors = cfg->db_errors;
    dispatch_metrics(d, cfg->metrics);
    if (!(d->ret = retention_new(cfg->retention_days, cfg->retention_interval_s, cfg->metrics))) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    return d;
failed:
    dispatch_destroy(d);
    return NULL;
}

int dispatch_start(dispatch *d, char *errstr, size_t errstr_size) {
    int rc = pthread_create(&d->thread, NULL, dispatch_main, d);
    if (rc != 0) return snprintf(errstr, errstr_size, "cannot start the dispatcher thread"), -1;
    d->started = true;
    return 0;
}

void dispatch_wake(dispatch *d) {
    atomic_store(&d->wake, true);
    delivery_wakeup(d->eng);
}

void dispatch_destroy(dispatch *d) {
    if (!d) return;
    if (d->started) {
        atomic_store(&d->stop, true);
        delivery_wakeup(d->eng);
        pthread_join(d->thread, NULL);
    }
    delivery_destroy(d->eng);
    retention_destroy(d->ret);
    while (d->unrecorded) {
        job *j = d->unrecorded;
        d->unrecorded = j->next;
        job_free(j);
    }
    for (size_t i = 0; i < d->nsubs; i++) {
        breaker_destroy(d->subs[i].b);
        subs_sub_clear(&d->subs[i].s);
    }
    free(d->subs);
    free(d->gone);
    if (d->conn) PQfinish(d->conn);
    free(d->database_url);
    free(d->alerter_id);
    free(d->smtp_from);
    free(d);
}
