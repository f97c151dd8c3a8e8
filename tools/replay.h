/* replay: the pure parts of fraudshield-replay (tools/replay_main.c): reading a handbook
 * transaction CSV, mapping a row to a payment of the v1 contract and to its outcome, open-loop
 * pacing, the queue of labels waiting for their delay, and latency percentiles.
 *
 * The mapping (docs/detection.md has the rationale):
 *   payment_id        UUIDv5(RPL_NS, "handbook:" + TRANSACTION_ID): deterministic, so outcomes,
 *                     a second replay and the evaluation all name the same payment
 *   user_id           "cust-" + CUSTOMER_ID
 *   card_fingerprint  "hb-card-" + CUSTOMER_ID (the handbook's card is its customer; ingest turns it
 *                     into a keyed digest like any fingerprint)
 *   merchant_id       "term-" + TERMINAL_ID
 *   amount, currency  TX_AMOUNT as the decimal text it is, "EUR"; the 33 rows of the dev set with
 *                     TX_AMOUNT 0.00 (the contract wants > 0) are sent as 0.01 and counted
 *   timestamp         TX_DATETIME (UTC) in RFC 3339
 *   country           stable per customer, drawn from RPL_COUNTRIES by a hash of CUSTOMER_ID (the
 *                     data has none; this spreads the payments over raw_payments' partitions
 *                     without touching the high-risk list of the default rules)
 *   payment_method    "card"
 * TX_FRAUD never travels with the payment: it becomes an outcome (confirmed_fraud / legitimate)
 * with known_at = event time + delay, posted once the replay's event clock passes known_at. */
#ifndef FS_REPLAY_H
#define FS_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Namespace of the replayed payment ids. NEVER change: evaluations join on these ids. */
#define RPL_NS "6f1c7a52-3b0e-5d4c-9a8e-2f6d1b7c4e90"

/* The country distribution, "CC:weight" (weights sum to 100). */
#define RPL_COUNTRIES "FR:25 BE:20 DE:15 NL:10 ES:10 IT:10 GB:5 PT:5"

#define RPL_FIELD_MAX 32

typedef struct rpl_tx {
    char txid[RPL_FIELD_MAX];
    char customer[RPL_FIELD_MAX];
    char terminal[RPL_FIELD_MAX];
    char amount[RPL_FIELD_MAX];   /* decimal text, > 0 (a zero amount was clamped to 0.01) */
    bool clamped;                 /* the amount was 0 */
    int64_t time_ms;              /* event time */
    int fraud;                    /* 1, 0, or -1 when the file has no TX_FRAUD column */
} rpl_tx;

/* Column positions found in the header line. */
typedef struct rpl_cols {
    int txid, datetime, customer, terminal, amount, fraud; /* fraud: -1 when absent */
} rpl_cols;

/* Reads the header line (the handbook's column names, any order, extra columns ignored). Returns 0,
 * or -1 with errstr naming a missing column. */
int rpl_header(const char *line, rpl_cols *cols, char *errstr, size_t errstr_size);

/* Parses one data line (modified in place). Returns 0, or -1 with errstr (the field). */
int rpl_parse(char *line, const rpl_cols *cols, rpl_tx *tx, char *errstr, size_t errstr_size);

/* The payment id of a transaction (37 bytes). */
void rpl_payment_id(const rpl_tx *tx, char out[37]);

/* The customer's country (a static string). */
const char *rpl_country(const char *customer);

/* The payment as a JSON object (compact text) into out. Returns its length, or -1 when out is too
 * small. */
int rpl_payment_json(const rpl_tx *tx, const char *payment_id, char *out, size_t out_size);

/* The outcome body {"outcome", "known_at", "reason"} into out. Returns its length or -1. */
int rpl_outcome_json(int fraud, int64_t known_ms, char *out, size_t out_size);

/* ---- open-loop pacing --------------------------------------------------------------------------- */

/* How many payments may have been sent by now_us at rate per second since start_us (rate 0: no
 * limit, returns INT64_MAX). The schedule never waits for the pipeline: what falls behind it is the
 * lag (due - sent). */
int64_t rpl_due(double rate, int64_t start_us, int64_t now_us);

/* ---- labels waiting for their delay ------------------------------------------------------------- */

typedef struct rpl_label {
    char payment_id[37];
    int64_t known_ms;
    int fraud;
} rpl_label;

/* Ordered by known_ms (a min-heap): labels are queued as ingest accepts their payments, which with
 * several connections (and retries) is not event order; a FIFO held a label due early behind later
 * ones, and payments it should have influenced were scored without it. */
typedef struct rpl_labels {
    rpl_label *v;
    size_t n, cap;
} rpl_labels;

int rpl_labels_push(rpl_labels *q, const rpl_label *l); /* 0, or -1 out of memory */
const rpl_label *rpl_labels_peek(const rpl_labels *q);  /* NULL when empty */
void rpl_labels_pop(rpl_labels *q);
void rpl_labels_free(rpl_labels *q);

/* ---- latency ------------------------------------------------------------------------------------ */

/* payment_id -> send time of the payments whose decision has not been seen yet (open addressing
 * on the UUID's bytes). */
typedef struct rpl_idmap_entry {
    unsigned char key[16];
    int64_t value;
    int used;
} rpl_idmap_entry;

typedef struct rpl_idmap {
    rpl_idmap_entry *v;
    size_t cap, n;
} rpl_idmap;

/* Inserts or replaces. Returns 0, or -1 (not a UUID, out of memory). */
int rpl_idmap_put(rpl_idmap *m, const char *uuid, int64_t value);
/* Removes uuid; 1 with *value when it was there, else 0. */
int rpl_idmap_take(rpl_idmap *m, const char *uuid, int64_t *value);
void rpl_idmap_free(rpl_idmap *m);

/* ---- per-customer order -------------------------------------------------------------------------- */

/* The customers with payments sent but not yet answered for good (accepted, rejected or given up),
 * and which request holds them. The replay sends a payment only when no other request holds an
 * unfinished payment of its customer: each customer's payments then reach ingest, and its Kafka
 * partition (keyed by the customer's country), in event order, as one payment service's would, and
 * the scorer never counts a customer's later payment in an earlier one's windows. All of a
 * customer's unfinished payments are in one request at a time (the one that resends the failed
 * items of a batch takes over its sequence number). */
typedef struct rpl_busy {
    rpl_idmap m;
} rpl_busy;

/* One more unfinished payment of customer, in request job_seq. 0, or -1 (out of memory). */
int rpl_busy_add(rpl_busy *b, const char *customer, uint64_t job_seq);
/* Whether a request other than job_seq holds an unfinished payment of customer. */
bool rpl_busy_elsewhere(const rpl_busy *b, const char *customer, uint64_t job_seq);
/* One payment of customer finished (accepted, rejected or given up). */
void rpl_busy_done(rpl_busy *b, const char *customer);
size_t rpl_busy_count(const rpl_busy *b); /* customers held */
void rpl_busy_free(rpl_busy *b);

/* Nearest-rank percentile p (0 < p <= 100) of v[0..n), which is sorted in place. 0 when n = 0. */
int64_t rpl_percentile(int64_t *v, size_t n, double p);

#endif
