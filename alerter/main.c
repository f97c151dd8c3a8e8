/* fraudshield-alerter: configuration, start-up, signals, shutdown; and the operator commands.
 *
 *   fraudshield-alerter [--option=value ...]           the alerter process
 *   fraudshield-alerter subscriptions|alerts|deliveries ...   operator commands (manage.h)
 *
 * Start-up: the admin endpoint (/health, /ready, /metrics: first, so that it answers however long
 * the rest waits), PostgreSQL (retried until startup-timeout-ms), migrations, the email
 * subscription mirrored from smtp-*, the dispatcher thread (delivery side, dispatch.h), the Kafka
 * clients (consume side, alerter.h). A SIGTERM while it waits: exit 0.
 * SIGTERM/SIGINT: the consumer finishes the batch in hand and leaves the group; meanwhile (its own
 * thread sees the signal too) the dispatcher stops claiming, lets running transfers finish for up
 * to shutdown-timeout-ms, records results and releases the rest for a retry; exit 0. */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "admin.h"
#include "alerter.h"
#include "app.h"
#include "cfg.h"
#include "db.h"
#include "dispatch.h"
#include "fsutil.h"
#include "kafka.h"
#include "log.h"
#include "manage.h"
#include "metrics.h"
#include "netguard.h"
#include "retention.h"
#include "subs.h"

typedef struct alerter_opts {
    char *brokers, *group_id, *topic, *dlq_topic, *outcomes_topic, *database_url, *alerter_id;
    int64_t batch_max, batch_max_ms;
    char *admin_addr;
    int64_t admin_port;
    int64_t http_connect_timeout_ms, http_timeout_ms;
    char *tls_ca_file, *webhook_deny_networks;
    int64_t max_in_flight, max_in_flight_per_subscription;
    int64_t retry_base_ms, retry_max_delay_ms, retry_max_age_ms, retry_max_attempts, retry_jitter_pct;
    int64_t time_compression;
    int64_t breaker_threshold, breaker_cooldown_ms;
    int64_t poll_interval_ms, subscriptions_refresh_ms, outbox_interval_ms;
    char *smtp_url, *smtp_from, *smtp_to, *smtp_user, *smtp_password, *smtp_min_decision;
    int64_t startup_timeout_ms, shutdown_timeout_ms, db_timeout_ms;
    int64_t db_migrate_timeout_ms, db_migrate_lock_timeout_ms;
    int64_t retention_days, retention_interval_s;
    char *log_level;
    bool allow_insecure_http;
} alerter_opts;

#define O(field) offsetof(alerter_opts, field)
#define H24 "86400000"
static const cfg_opt alerter_options[] = {
    {"brokers", "FS_BROKERS", CFG_STRING, "localhost:9092", 1, 4096, O(brokers),
     "Kafka bootstrap servers (host:port,...)", false},
    {"group-id", "FS_GROUP_ID", CFG_STRING, "fraudshield-alerter", 1, 255, O(group_id),
     "consumer group of the alerters (all instances of one pipeline share it)", false},
    {"topic", "FS_TOPIC", CFG_STRING, KAFKA_TOPIC_ALERTS, 1, 249, O(topic),
     "topic the alerts are consumed from", false},
    {"dlq-topic", "FS_DLQ_TOPIC", CFG_STRING, "fraud_alerts.dlq", 1, 249, O(dlq_topic),
     "dead letters: invalid alerts and deliveries that failed for good", false},
    {"outcomes-topic", "FS_OUTCOMES_TOPIC", CFG_STRING, KAFKA_TOPIC_OUTCOMES, 1, 249,
     O(outcomes_topic), "analyst resolutions are published here as outcomes", false},
    {"database-url", "FS_DATABASE_URL", CFG_STRING,
     "postgresql://postgres@127.0.0.1:5432/fraudshield", 1, 4096, O(database_url),
     "PostgreSQL connection URL", true},
    {"alerter-id", "FS_ALERTER_ID", CFG_STRING, "", 0, 128, O(alerter_id),
     "this instance's name in the delivery log and logs (default: hostname-pid)", false},
    {"batch-max", "FS_BATCH_MAX", CFG_INT, "200", 1, 10000, O(batch_max),
     "alerts per batch (one PostgreSQL transaction, then one offset commit)", false},
    {"batch-max-ms", "FS_BATCH_MAX_MS", CFG_INT, "50", 1, 60000, O(batch_max_ms),
     "a batch closes this long after its first message", false},
    {"admin-addr", "FS_ADMIN_ADDR", CFG_STRING, "0.0.0.0", 1, 255, O(admin_addr),
     "address of the admin endpoint (/health, /ready, /metrics)", false},
    {"admin-port", "FS_ADMIN_PORT", CFG_INT, "9103", -1, 65535, O(admin_port),
     "port of the admin endpoint (0: any free port, logged; -1: no endpoint)", false},
    {"http-connect-timeout-ms", "FS_HTTP_CONNECT_TIMEOUT_MS", CFG_INT, "5000", 100, 600000,
     O(http_connect_timeout_ms), "connect timeout of a delivery (TCP + TLS handshake)", false},
    {"http-timeout-ms", "FS_HTTP_TIMEOUT_MS", CFG_INT, "10000", 100, 600000, O(http_timeout_ms),
     "whole-delivery timeout: a subscriber that has not answered by then is retried", false},
    {"allow-insecure-http", "FS_ALLOW_INSECURE_HTTP", CFG_BOOL, "false", 0, 0, O(allow_insecure_http),
     "accept http:// subscriber URLs and smtp:// servers without STARTTLS (alerts in clear "
     "text: tests and local development only; logged as a warning at start). Off: https:// "
     "only, and STARTTLS required", false},
    {"tls-ca-file", "FS_TLS_CA_FILE", CFG_STRING, "", 0, 4096, O(tls_ca_file),
     "PEM CA bundle to verify subscribers' certificates (default: the system store; a "
     "subscription's own ca_file wins)", false},
    {"webhook-deny-networks", "FS_WEBHOOK_DENY_NETWORKS", CFG_STRING, NETGUARD_DEFAULT, 0, 4096,
     O(webhook_deny_networks),
     "webhooks never connect to an address in these networks (comma-separated CIDRs, IPv4 and "
     "IPv6; ::ffff:a.b.c.d counts as a.b.c.d), checked at each connect, after DNS (through a proxy: "
     "the proxy's address; email is not checked); such an attempt is address_denied, retried like "
     "an outage. Default: 0.0.0.0/8, link-local (cloud metadata), Alibaba's metadata, multicast, "
     "reserved, ::, IPv6 link-local and multicast, AWS's IPv6 metadata. Loopback and private "
     "ranges are allowed: add them when every subscriber is external; \"\" denies nothing "
     "(docs/alerter.md)", false},
    {"max-in-flight", "FS_MAX_IN_FLIGHT", CFG_INT, "64", 1, 10000, O(max_in_flight),
     "deliveries running at once in this instance", false},
    {"max-in-flight-per-subscription", "FS_MAX_IN_FLIGHT_PER_SUBSCRIPTION", CFG_INT, "4", 1, 1000,
     O(max_in_flight_per_subscription),
     "deliveries running at once to one subscriber (a hanging one holds no more)", false},
    {"retry-base-ms", "FS_RETRY_BASE_MS", CFG_INT, "30000", 1, 86400000, O(retry_base_ms),
     "delay after the first failed attempt; doubles after each further one", false},
    {"retry-max-delay-ms", "FS_RETRY_MAX_DELAY_MS", CFG_INT, "7200000", 1, 86400000,
     O(retry_max_delay_ms), "longest delay between two attempts (also caps Retry-After)", false},
    {"retry-max-age-ms", "FS_RETRY_MAX_AGE_MS", CFG_INT, H24, 0, 2592000000LL, O(retry_max_age_ms),
     "no attempt later than this after the delivery was created: then it is exhausted", false},
    {"retry-max-attempts", "FS_RETRY_MAX_ATTEMPTS", CFG_INT, "0", 0, 1000, O(retry_max_attempts),
     "attempts before a delivery is exhausted (0: limited by retry-max-age-ms only)", false},
    {"retry-jitter-pct", "FS_RETRY_JITTER_PCT", CFG_INT, "20", 0, 100, O(retry_jitter_pct),
     "each delay is randomized by up to +- this percentage", false},
    {"time-compression", "FS_TIME_COMPRESSION", CFG_INT, "1", 1, 1000000, O(time_compression),
     "TESTS ONLY: divides the retry schedule and the breaker cool-down (1000: 24 h in 86 s)",
     false},
    {"breaker-threshold", "FS_BREAKER_THRESHOLD", CFG_INT, "5", 1, 1000, O(breaker_threshold),
     "consecutive failed deliveries that open a subscriber's circuit breaker", false},
    {"breaker-cooldown-ms", "FS_BREAKER_COOLDOWN_MS", CFG_INT, "60000", 0, 86400000,
     O(breaker_cooldown_ms), "an open breaker lets one probe through after this", false},
    {"poll-interval-ms", "FS_POLL_INTERVAL_MS", CFG_INT, "1000", 10, 60000, O(poll_interval_ms),
     "due retries are looked for at least this often (new alerts are picked up at once)", false},
    {"subscriptions-refresh-ms", "FS_SUBSCRIPTIONS_REFRESH_MS", CFG_INT, "5000", 10, 3600000,
     O(subscriptions_refresh_ms), "subscriptions are reloaded from PostgreSQL this often", false},
    {"outbox-interval-ms", "FS_OUTBOX_INTERVAL_MS", CFG_INT, "200", 10, 60000,
     O(outbox_interval_ms), "dead letters and outcomes waiting in the outbox are produced this often",
     false},
    {"smtp-url", "FS_SMTP_URL", CFG_STRING, "", 0, 4096, O(smtp_url),
     "email alerts: smtp://host:587 or smtps://host:465 (empty: no email)", false},
    {"smtp-from", "FS_SMTP_FROM", CFG_STRING, "fraudshield@localhost", 0, 254, O(smtp_from),
     "email alerts: sender address", false},
    {"smtp-to", "FS_SMTP_TO", CFG_STRING, "", 0, 4096, O(smtp_to),
     "email alerts: recipients, comma-separated", false},
    {"smtp-user", "FS_SMTP_USER", CFG_STRING, "", 0, 254, O(smtp_user),
     "email alerts: SMTP login (empty: none; with a login STARTTLS is required)", false},
    {"smtp-password", "FS_SMTP_PASSWORD", CFG_STRING, "", 0, 1024, O(smtp_password),
     "email alerts: SMTP password", true},
    {"smtp-min-decision", "FS_SMTP_MIN_DECISION", CFG_STRING, "block", 1, 16, O(smtp_min_decision),
     "email alerts: review (every alert) or block", false},
    {"startup-timeout-ms", "FS_STARTUP_TIMEOUT_MS", CFG_INT, "60000", 100, 3600000,
     O(startup_timeout_ms), "PostgreSQL and the brokers must be reachable within this at start-up",
     false},
    {"db-timeout-ms", "FS_DB_TIMEOUT_MS", CFG_INT, "30000", 1000, 600000, O(db_timeout_ms),
     "a PostgreSQL statement not answered within this drops its connection (reconnected; an "
     "operator command's statement is cancelled by PostgreSQL at this, statement_timeout, and it "
     "exits 1); /ready fails when a side has had no successful round trip for about as long",
     false},
    {"db-migrate-timeout-ms", "FS_DB_MIGRATE_TIMEOUT_MS", CFG_INT, "600000", 0,
     86400000, O(db_migrate_timeout_ms),
     "start-up migrations (and those of the operator commands): each one (its whole text; also "
     "each bookkeeping statement) must finish within this, else it is cancelled and rolled back, "
     "and another process's migration (the migration lock) is waited for at most this long; "
     "longer: start-up error naming the cause (0: no limit)",
     false},
    {"db-migrate-lock-timeout-ms", "FS_DB_MIGRATE_LOCK_TIMEOUT_MS", CFG_INT, "10000", 0,
     86400000, O(db_migrate_lock_timeout_ms),
     "start-up migrations (and those of the operator commands): a lock held by another session "
     "(an open transaction) is waited for at most this long, then start-up error naming the "
     "sessions (0: no limit; while it waits, other writers of that table wait behind it)",
     false},
    {"shutdown-timeout-ms", "FS_SHUTDOWN_TIMEOUT_MS", CFG_INT, "5000", 0, 600000,
     O(shutdown_timeout_ms), "on SIGTERM, how long running deliveries may finish", false},
    {"retention-days", "FS_RETENTION_DAYS", CFG_INT, "30", 0, 3650, O(retention_days),
     "finished deliveries (with their attempts), alert events without deliveries and produced "
     "outbox rows older than this are deleted (0: kept forever; else at least 8: more than the "
     "fraud_alerts topic's retention, see docs/alerter.md)", false},
    {"retention-interval-s", "FS_RETENTION_INTERVAL_S", CFG_INT, "300", 1, 86400,
     O(retention_interval_s), "a retention prune round starts this often (lower in tests)", false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 1, 16, O(log_level),
     "debug, info, warn or error (info: one line per delivery)", false},
    {0},
};
#undef O

static const char SUMMARY[] =
    "FraudShield alerter: fraud_alerts -> signed webhooks (and email), retried, with a delivery\n"
    "log in PostgreSQL. Start more instances with the same group-id to scale out. librdkafka\n"
    "properties pass through with -X name=value or KAFKA_NAME=value. Operator commands:\n"
    "`fraudshield-alerter subscriptions|alerts|deliveries ...` (see docs/alerter.md).";

/* Settings that are wrong alone or together, found before anything connects (else they show up
 * late: a CA file at the first delivery, an SMTP scheme as a database constraint error). The
 * message names the option. Returns 0 or -1 with errstr. */
static int opts_check(const alerter_opts *o, char *errstr, size_t n) {
    const char *u = o->smtp_url;
    if (db_url_check(o->database_url, errstr, n) != 0) return -1;
    netguard *deny = netguard_new(o->webhook_deny_networks, errstr, n);
    if (!deny) return -1;
    netguard_destroy(deny);
    if (o->tls_ca_file[0] && access(o->tls_ca_file, R_OK) != 0)
        return snprintf(errstr, n, "tls-ca-file: cannot read %s: %s", o->tls_ca_file, strerror(errno)), -1;
    if (u[0] && strncasecmp(u, "smtp://", 7) != 0 && strncasecmp(u, "smtps://", 8) != 0)
        return snprintf(errstr, n, "smtp-url: smtp://host:587 or smtps://host:465 expected, not %.*s://...",
                        strstr(u, "://") ? (int)(strstr(u, "://") - u) : 0, u), -1;
    /* a login in the URL would be logged with the configuration and sent without the STARTTLS
     * that smtp-user requires */
    const char *host = strstr(u, "://");
    if (host && memchr(host + 3, '@', strcspn(host + 3, "/")))
        return snprintf(errstr, n, "smtp-url: no user or password in the URL: set smtp-user and "
                        "smtp-password (FS_SMTP_PASSWORD) instead"), -1;
    if (u[0] && !o->smtp_to[0])
        return snprintf(errstr, n, "smtp-url is set but smtp-to is empty: no recipient"), -1;
    if (strcmp(o->smtp_min_decision, "review") != 0 && strcmp(o->smtp_min_decision, "block") != 0)
        return snprintf(errstr, n, "smtp-min-decision: review or block, not %s", o->smtp_min_decision), -1;
    if (o->retry_base_ms > o->retry_max_delay_ms)
        return snprintf(errstr, n, "retry-base-ms (%" PRId64 ") is larger than retry-max-delay-ms (%" PRId64
                        "), the longest delay between two attempts", o->retry_base_ms, o->retry_max_delay_ms), -1;
    if (o->http_connect_timeout_ms > o->http_timeout_ms)
        return snprintf(errstr, n, "http-connect-timeout-ms (%" PRId64 ") is larger than http-timeout-ms (%" PRId64
                        "), the whole delivery's timeout", o->http_connect_timeout_ms, o->http_timeout_ms), -1;
    return retention_check_days(o->retention_days, errstr, n);
}

/* A start-up that ended early: 0 when a stop was asked for (SIGTERM while waiting for PostgreSQL,
 * the migration lock or the brokers: no failure, logged as such, errstr cleared), else 1. */
static int startup_stopped(char *errstr) {
    if (!atomic_load(&app_stop_requested)) return 1;
    log_msg(LOG_INFO, "stopped_during_startup", "stopped during start-up (%s)", errstr);
    errstr[0] = '\0';
    return 0;
}

/* Connects (retrying every second until the deadline or a stop), migrates, and mirrors the email
 * configuration into its subscription. */
static PGconn *db_open(const alerter_opts *o, char *errstr, size_t n) {
    int64_t deadline = fs_mono_us() + o->startup_timeout_ms * 1000;
    PGconn *conn;
    while (!(conn = db_connect(o->database_url, "fraudshield-alerter consume", errstr, n))) {
        if (atomic_load(&app_stop_requested) || fs_mono_us() > deadline) return NULL;
        log_fields(LOG_WARN, "db_unavailable", json_pack("{s:s}", "error", errstr),
                   "PostgreSQL not reachable yet; retrying");
        sleep(1);
    }
    int applied = db_migrate(conn, (int)o->db_migrate_timeout_ms,
                             (int)o->db_migrate_lock_timeout_ms, errstr, n);
    if (applied < 0 ||
        subs_sync_email(conn, (int)o->db_timeout_ms, o->smtp_url, o->smtp_to, o->smtp_min_decision, errstr, n) != 0) {
        PQfinish(conn);
        return NULL;
    }
    log_msg(LOG_INFO, "db_ready", "PostgreSQL connected, %d migration(s) applied", applied);
    return conn;
}

static dispatch_config dispatch_config_from(const alerter_opts *o, metrics *m, metric *db_errors,
                                            dbhealth *db) {
    dispatch_config c = {
        .database_url = o->database_url,
        .alerter_id = o->alerter_id,
        .http = {.connect_timeout_ms = (long)o->http_connect_timeout_ms,
                 .timeout_ms = (long)o->http_timeout_ms,
                 .ca_file = o->tls_ca_file,
                 .smtp_from = o->smtp_from,
                 .smtp_user = o->smtp_user,
                 .smtp_password = o->smtp_password,
                 .allow_http = o->allow_insecure_http,
                 .deny_networks = o->webhook_deny_networks},
        .retry = {.base_ms = o->retry_base_ms,
                  .max_delay_ms = o->retry_max_delay_ms,
                  .max_age_ms = o->retry_max_age_ms,
                  .max_attempts = (int)o->retry_max_attempts,
                  .jitter_pct = (int)o->retry_jitter_pct,
                  .time_compression = (int)o->time_compression},
        .breaker_threshold = (int)o->breaker_threshold,
        .breaker_cooldown_ms = o->breaker_cooldown_ms,
        .max_in_flight = (int)o->max_in_flight,
        .max_in_flight_per_sub = (int)o->max_in_flight_per_subscription,
        .poll_interval_ms = (int)o->poll_interval_ms,
        .subs_refresh_ms = (int)o->subscriptions_refresh_ms,
        .shutdown_timeout_ms = (int)o->shutdown_timeout_ms,
        .db_timeout_ms = (int)o->db_timeout_ms,
        .stop = &app_stop_requested,
        .retention_days = (int)o->retention_days,
        .retention_interval_s = (int)o->retention_interval_s,
        .metrics = m,
        .db_errors = db_errors,
        .db = db,
    };
    return c;
}

static alerter_config alerter_config_from(const alerter_opts *o, const cfg_props *props,
                                          metrics *m, metric *db_errors, dispatch *d,
                                          dbhealth *db, const dbhealth *dispatch_db) {
    alerter_config c = {
        .brokers = o->brokers,
        .props = props,
        .group_id = o->group_id,
        .topic = o->topic,
        .dlq_topic = o->dlq_topic,
        .outcomes_topic = o->outcomes_topic,
        .database_url = o->database_url,
        .alerter_id = o->alerter_id,
        .batch_max = (int)o->batch_max,
        .batch_max_ms = (int)o->batch_max_ms,
        .outbox_interval_ms = (int)o->outbox_interval_ms,
        .startup_timeout_ms = (int)o->startup_timeout_ms,
        .shutdown_timeout_ms = (int)o->shutdown_timeout_ms,
        .db_timeout_ms = (int)o->db_timeout_ms,
        .dispatch_poll_interval_ms = (int)o->poll_interval_ms,
        .metrics = m,
        .db_errors = db_errors,
        .dispatch = d,
        .db = db,
        .dispatch_db = dispatch_db,
    };
    return c;
}

/* The metrics of the whole process, at 0 from the start (a first error must be visible to
 * increase()): PostgreSQL errors by side (shared by the consume and dispatch sides), readiness,
 * the age of each side's last successful PostgreSQL round trip and of the consumer's last poll. */
static void process_metrics(metrics *m, metric **db_errors, metric **ready, metric **db_age,
                            metric **poll_age) {
    static const char *const sides[] = {"consume", "outbox", "dispatch"};
    *db_errors = m ? metrics_counter(m, "fs_alerter_db_errors_total", "PostgreSQL errors", "side") : NULL;
    *db_age = m ? metrics_gauge(m, "fs_alerter_db_last_success_age_seconds",
                                "Seconds since the last successful PostgreSQL round trip: consume "
                                "(batches, outbox), dispatch", "side") : NULL;
    *ready = m ? metrics_gauge(m, "fs_alerter_ready", "1 while /ready answers 200: consuming, with an "
                               "assignment, both PostgreSQL connections up", NULL) : NULL;
    *poll_age = m ? metrics_gauge(m, "fs_alerter_consumer_last_poll_age_seconds",
                                  "Seconds since the consumer loop last returned from polling "
                                  "fraud_alerts (grows while it is stuck; fs_alerter_consumer_lag is "
                                  "then frozen)", NULL) : NULL;
    for (size_t i = 0; i < sizeof sides / sizeof sides[0]; i++) metric_add(*db_errors, sides[i], 0);
    metric_set(*ready, NULL, 0);
    metric_set(*poll_age, NULL, 0);
}

/* /ready's answer is also fs_alerter_ready: admin asks before each /metrics render too, so the
 * gauge and /ready never disagree, and the ages are computed at each scrape. The endpoint opens
 * before the start-up waits for anything: until the alerter exists (a, published once its
 * threads run; consume_db and dispatch_db are set before) the answer is 503 naming what the
 * start-up waits for (phase), and /metrics serves the series registered so far. */
typedef struct readiness {
    _Atomic(alerter *) a;
    _Atomic(const char *) phase;
    const dbhealth *consume_db, *dispatch_db;
    metric *gauge, *db_age, *poll_age;
} readiness;

static bool ready_exported(void *arg, char *why, size_t why_size) {
    readiness *r = arg;
    alerter *a = atomic_load(&r->a);
    if (!a) {
        snprintf(why, why_size, "starting: waiting for %s", atomic_load(&r->phase));
        metric_set(r->gauge, NULL, 0);
        return false;
    }
    bool ok = alerter_ready(a, why, why_size);
    int64_t now = fs_mono_us();
    metric_set(r->gauge, NULL, ok ? 1 : 0);
    metric_set(r->db_age, "consume", (double)dbhealth_age_ms(r->consume_db, now) / 1000.0);
    metric_set(r->db_age, "dispatch", (double)dbhealth_age_ms(r->dispatch_db, now) / 1000.0);
    metric_set(r->poll_age, NULL, alerter_poll_age_seconds(a));
    return ok;
}

static void warn_insecure(const alerter_opts *o) {
    if (o->allow_insecure_http)
        log_msg(LOG_WARN, "insecure_http_allowed",
                "allow-insecure-http is on: http:// subscribers, and an smtp:// server without "
                "STARTTLS, get alerts IN CLEAR TEXT (tests and local development only)");
}

/* Start-up, the consumer loop until a signal, shutdown. Returns the exit status. */
static int run(const alerter_opts *o, const cfg_props *props) {
    char errstr[1024] = "out of memory"; /* the first failures below set no message */
    int rc = 1;
    dispatch *d = NULL;
    alerter *a = NULL;
    admin *adm = NULL;
    PGconn *conn = NULL;
    dbhealth *consume_db = NULL, *dispatch_db = NULL; /* run()'s: they outlive every reader */
    readiness rd = {.phase = "PostgreSQL (connection, migrations)"}; /* outlives adm: both run()'s */
    metrics *m = metrics_new();
    metric *db_errors;
    process_metrics(m, &db_errors, &rd.gauge, &rd.db_age, &rd.poll_age);
    if (!m) goto done;
    warn_insecure(o);
    /* first: the kubelet's liveness probe gets /health while the start-up waits (a PostgreSQL
     * outage, the migration lock, a long migration), /ready answers 503 meanwhile */
    if (o->admin_port >= 0 &&
        !(adm = admin_new(o->admin_addr, (int)o->admin_port, m, ready_exported, &rd, errstr, sizeof errstr)))
        goto done; /* admin_new logs where it listens */
    if (!(conn = db_open(o, errstr, sizeof errstr))) {
        rc = startup_stopped(errstr);
        goto done;
    }
    /* each side's PostgreSQL health; the consume side's conn just answered (the migrations), the
     * dispatcher is not connected yet: its age counts from now */
    rd.consume_db = consume_db = dbhealth_new(fs_mono_us(), true);
    rd.dispatch_db = dispatch_db = dbhealth_new(fs_mono_us(), false);
    if (!consume_db || !dispatch_db) {
        snprintf(errstr, sizeof errstr, "out of memory");
        goto done;
    }
    dispatch_config dc = dispatch_config_from(o, m, db_errors, dispatch_db);
    if (!(d = dispatch_new(&dc, errstr, sizeof errstr))) goto done;
    atomic_store(&rd.phase, "the Kafka brokers and topics");
    alerter_config ac = alerter_config_from(o, props, m, db_errors, d, consume_db, dispatch_db);
    a = alerter_new(&ac, conn, errstr, sizeof errstr); /* owns conn now, also on failure */
    conn = NULL;
    if (!a || dispatch_start(d, errstr, sizeof errstr) != 0) {
        rc = startup_stopped(errstr);
        goto done;
    }
    atomic_store(&rd.a, a); /* /ready asks the alerter from now on */
    log_msg(LOG_INFO, "started", "alerter %s consuming %s as group %s", o->alerter_id, o->topic,
            o->group_id);
    rc = alerter_run(a, &app_stop_requested) == 0 ? 0 : 1;
    errstr[0] = '\0';
done:
    if (conn) PQfinish(conn);
    if (rc != 0 && errstr[0]) log_msg(LOG_ERROR, "startup_failed", "%s", errstr);
    dispatch_destroy(d); /* records the last results ... */
    if (a && rc == 0) alerter_drain_outbox(a); /* ... and their dead letters go out now */
    admin_destroy(adm); /* before what its thread reads */
    alerter_destroy(a);
    dbhealth_destroy(consume_db);
    dbhealth_destroy(dispatch_db);
    metrics_destroy(m);
    log_msg(LOG_INFO, "stopped", "alerter stopped");
    return rc;
}

/* hostname-pid when alerter-id is empty. */
static int default_alerter_id(alerter_opts *o) {
    char host[64] = "alerter", id[96];
    if (o->alerter_id[0]) return 0;
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(id, sizeof id, "%s-%ld", host, (long)getpid());
    free(o->alerter_id);
    o->alerter_id = strdup(id);
    return o->alerter_id ? 0 : -1;
}

/* Operator commands: options of the table (and -X) go to cfg_parse, the rest to the command. */
static int run_command(int argc, char **argv) {
    alerter_opts o = {0};
    cfg_props props = {0};
    char errstr[512];
    char **cfg_argv = calloc((size_t)argc + 1, sizeof *cfg_argv), **cmd_argv = calloc((size_t)argc + 1, sizeof *cmd_argv);
    int ncfg = 1, ncmd = 0, rc = 2;
    if (!cfg_argv || !cmd_argv) goto done;
    cfg_argv[0] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *name = strncmp(argv[i], "--", 2) == 0 ? argv[i] + 2 : NULL;
        const cfg_opt *opt = NULL;
        for (const cfg_opt *t = alerter_options; name && t->name; t++)
            if (strncmp(name, t->name, strlen(t->name)) == 0 &&
                (name[strlen(t->name)] == '\0' || name[strlen(t->name)] == '='))
                opt = t;
        bool takes_next = (opt && !strchr(name, '=') && opt->type != CFG_BOOL) || strcmp(argv[i], "-X") == 0;
        char **dst = opt || strcmp(argv[i], "-X") == 0 ? cfg_argv : cmd_argv;
        int *n = dst == cfg_argv ? &ncfg : &ncmd;
        dst[(*n)++] = argv[i];
        if (takes_next && i + 1 < argc) dst[(*n)++] = argv[++i];
    }
    cfg_result r = cfg_parse(alerter_options, &o, &props, ncfg, cfg_argv, "fraudshield-alerter",
                             SUMMARY, errstr, sizeof errstr);
    if (r == CFG_ERROR) fprintf(stderr, "%s\n", errstr);
    else if (r == CFG_OK) {
        manage_db db = {o.database_url, (int)o.db_timeout_ms, (int)o.db_migrate_timeout_ms,
                        (int)o.db_migrate_lock_timeout_ms};
        manage_urls urls = {o.allow_insecure_http, o.webhook_deny_networks};
        rc = manage_main(ncmd, cmd_argv, &db, &urls);
    }
    else rc = 0;
done:
    cfg_free(alerter_options, &o, &props);
    free(cfg_argv);
    free(cmd_argv);
    return rc;
}

int main(int argc, char **argv) {
    alerter_opts o = {0};
    cfg_props props = {0};
    char errstr[512];
    int rc = 1;
    log_init("alerter", LOG_INFO);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) { /* before any thread */
        log_msg(LOG_ERROR, "startup_failed", "libcurl initialisation failed");
        return 1;
    }
    if (argc > 1 && manage_is_command(argv[1])) {
        log_init("alerter", LOG_WARN); /* a command's output is its own */
        rc = run_command(argc, argv);
        curl_global_cleanup();
        return rc;
    }
    app_signals_install(); /* SIGHUP: nothing to reload (subscriptions refresh from PostgreSQL) */
    cfg_result r = app_configure("alerter", alerter_options, &o, &props, argc, argv,
                                 "fraudshield-alerter", SUMMARY);
    if (r == CFG_HELP) {
        if (argc > 1 && strcmp(argv[1], "--help-markdown") != 0) manage_usage(stdout);
        rc = 0;
    } else if (r == CFG_OK && default_alerter_id(&o) != 0) {
        log_msg(LOG_ERROR, "config_invalid", "out of memory");
    } else if (r == CFG_OK && (opts_check(&o, errstr, sizeof errstr) != 0 ||
                               kafka_props_check(&props, errstr, sizeof errstr) != 0)) {
        log_msg(LOG_ERROR, "config_invalid", "%s", errstr);
    } else if (r == CFG_OK) {
        rc = run(&o, &props);
    }
    cfg_free(alerter_options, &o, &props);
    curl_global_cleanup();
    return rc;
}
