/* fraudshield-scorer: configuration, start-up, signals, shutdown. The data path is in scorer.c.
 *
 * Start-up: the rules file and, when model-file is set, the model file (either missing or invalid:
 * exit 1 with the error naming the file), PostgreSQL (retried until startup-timeout-ms),
 * migrations, Kafka clients, topics, subscription.
 * Signals (the handlers only set flags; the loop acts between polls and batches):
 *   SIGTERM, SIGINT  stop polling, finish the batch in hand if PostgreSQL is reachable (else
 *                    abandon it uncommitted), leave the group, flush, exit 0
 *   SIGHUP           reload the rules file and the model file between batches (one that is
 *                    invalid: logged and counted, its active version stays) */
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "app.h"
#include "cfg.h"
#include "db.h"
#include "expire.h"
#include "fsutil.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "offline.h"
#include "rules.h"
#include "scorer.h"
#include "store.h"

typedef struct scorer_opts {
    char *brokers;
    char *group_id;
    char *topic;
    char *processed_topic;
    char *alerts_topic;
    char *dlq_topic;
    char *database_url;
    char *rules_file;
    char *model_file;
    char *feature_windows;
    char *risk_windows_days;
    int64_t risk_delay_days;
    char *outcomes_topic;
    char *outcomes_dlq_topic;
    char *outcomes_group_id;
    char *admin_addr;
    int64_t admin_port;
    int64_t stats_interval_ms;
    char *offline;
    char *offline_outcomes;
    int64_t batch_max;
    int64_t batch_max_ms;
    int64_t batch_linger_ms;
    char *scorer_id;
    int64_t velocity_prune_every;
    int64_t velocity_prune_min_interval_ms;
    int64_t velocity_lateness_s;
    int64_t velocity_watermark_liveness_s;
    int64_t retention_days;
    int64_t retention_interval_s;
    int64_t startup_timeout_ms;
    int64_t shutdown_timeout_ms;
    int64_t db_timeout_ms;
    int64_t db_migrate_timeout_ms;
    int64_t db_migrate_lock_timeout_ms;
    char *log_level;
} scorer_opts;

#define O(field) offsetof(scorer_opts, field)
static const cfg_opt scorer_options[] = {
    {"brokers", "FS_BROKERS", CFG_STRING, "localhost:9092", 1, 4096, O(brokers),
     "Kafka bootstrap servers (host:port,...)", false},
    {"group-id", "FS_GROUP_ID", CFG_STRING, "fraudshield-scorer", 1, 255, O(group_id),
     "consumer group of the scorer workers (all workers of one pipeline share it)", false},
    {"topic", "FS_TOPIC", CFG_STRING, KAFKA_TOPIC_RAW, 1, 249, O(topic),
     "topic the payments are consumed from", false},
    {"processed-topic", "FS_PROCESSED_TOPIC", CFG_STRING, KAFKA_TOPIC_PROCESSED, 1, 249,
     O(processed_topic), "topic every decision is produced to", false},
    {"alerts-topic", "FS_ALERTS_TOPIC", CFG_STRING, KAFKA_TOPIC_ALERTS, 1, 249, O(alerts_topic),
     "topic review/block decisions are produced to", false},
    {"dlq-topic", "FS_DLQ_TOPIC", CFG_STRING, KAFKA_TOPIC_DLQ, 1, 249, O(dlq_topic),
     "dead-letter topic for messages that cannot be processed", false},
    {"database-url", "FS_DATABASE_URL", CFG_STRING,
     "postgresql://postgres@127.0.0.1:5432/fraudshield", 1, 4096, O(database_url),
     "PostgreSQL connection URL", true},
    {"rules-file", "FS_RULES_FILE", CFG_STRING, "schemas/rules/default.json", 1, 4096,
     O(rules_file), "rules file (reloaded on SIGHUP)", false},
    {"model-file", "FS_MODEL_FILE", CFG_STRING, "", 0, 4096, O(model_file),
     "model file written by fraudshield-train, scored once per batch and blended into the score "
     "by the rules' blend.model_weight; missing or invalid: start-up error (reloaded on SIGHUP; "
     "\"\": rules only)",
     false},
    {"feature-windows", "FS_FEATURE_WINDOWS", CFG_STRING, "user:1d,7d,30d", 0,
     1024, O(feature_windows),
     "extra event-time windows computed and stored with every decision even when no rule reads "
     "them (ENTITY:DUR,DUR ... with DUR <n>m|h|d, beyond 1h whole hours, beyond 1d whole days; "
     "entities user ip card device email merchant)",
     false},
    {"risk-windows-days", "FS_RISK_WINDOWS_DAYS", CFG_STRING, "1,7,30", 0, 64,
     O(risk_windows_days),
     "merchant (terminal) risk windows in days, delayed by risk-delay-days (\"\": none)", false},
    {"risk-delay-days", "FS_RISK_DELAY_DAYS", CFG_INT, "7", 0, 30, O(risk_delay_days),
     "feedback delay of merchant risk: windows (t - delay - n days, t - delay]", false},
    {"outcomes-topic", "FS_OUTCOMES_TOPIC", CFG_STRING, KAFKA_TOPIC_OUTCOMES, 0, 249,
     O(outcomes_topic), "topic of outcome labels fed back to the vault (\"\": not consumed)", false},
    {"outcomes-dlq-topic", "FS_OUTCOMES_DLQ_TOPIC", CFG_STRING, KAFKA_TOPIC_OUTCOMES_DLQ, 1, 249,
     O(outcomes_dlq_topic), "dead-letter topic for outcome messages that cannot be processed",
     false},
    {"outcomes-group-id", "FS_OUTCOMES_GROUP_ID", CFG_STRING, "fraudshield-outcomes", 1, 255,
     O(outcomes_group_id), "consumer group of the scorer workers on the outcomes topic", false},
    {"admin-addr", "FS_ADMIN_ADDR", CFG_STRING, "127.0.0.1", 1, 255, O(admin_addr),
     "address of the /health, /ready and /metrics endpoint", false},
    {"admin-port", "FS_ADMIN_PORT", CFG_INT, "0", -1, 65535, O(admin_port),
     "port of /health, /ready, /metrics (0: any free port, logged; -1: no endpoint)", false},
    {"stats-interval-ms", "FS_STATS_INTERVAL_MS", CFG_INT, "5000", 0, 600000,
     O(stats_interval_ms), "librdkafka statistics interval (consumer lag metrics; 0: off)", false},
    {"offline", "FS_OFFLINE", CFG_STRING, "", 0, 4096, O(offline),
     "compute the features of a file of raw_payments events (one per line) without Kafka or "
     "PostgreSQL, print one JSON line per payment and exit (replay parity); with model-file, the "
     "rules are fitted to the model as the scorer does (its windows added; no model_score)",
     false},
    {"offline-outcomes", "FS_OFFLINE_OUTCOMES", CFG_STRING, "", 0, 4096, O(offline_outcomes),
     "with offline: a file of labels, payment_outcomes messages as produced to the topic (one "
     "per line, a \"KEY:\" prefix ignored); each payment's vault fraud/chargeback counts and "
     "merchant risk count the labels known at its event time, with corrections, as the scorer "
     "applies them (\"\": no labels, those features 0)",
     false},
    {"batch-max", "FS_BATCH_MAX", CFG_INT, "500", 1, 10000, O(batch_max),
     "messages per batch (one PostgreSQL transaction)", false},
    {"batch-max-ms", "FS_BATCH_MAX_MS", CFG_INT, "50", 1, 60000, O(batch_max_ms),
     "a batch closes this long after its first message", false},
    {"batch-linger-ms", "FS_BATCH_LINGER_MS", CFG_INT, "5", 0, 60000, O(batch_linger_ms),
     "a batch also closes once no message came for this long: under light load a payment is "
     "scored at once instead of waiting batch-max-ms, under a backlog batches still fill up to "
     "batch-max (0: as soon as none is queued; batch-max-ms or more: always wait batch-max-ms)",
     false},
    {"scorer-id", "FS_SCORER_ID", CFG_STRING, "", 0, 128, O(scorer_id),
     "this worker's name in decisions and logs (default: hostname-pid)", false},
    {"velocity-prune-every", "FS_VELOCITY_PRUNE_EVERY", CFG_INT, "20", 0, 1000000,
     O(velocity_prune_every),
     "batches between prunes of old exact events and feature buckets (0: never)", false},
    {"velocity-prune-min-interval-ms", "FS_VELOCITY_PRUNE_MIN_INTERVAL_MS", CFG_INT, "5000", 0,
     3600000, O(velocity_prune_min_interval_ms),
     "and at least this long between two prunes: under light load batches are small (batch-linger-ms) "
     "and velocity-prune-every of them pass in moments, while there is little to delete",
     false},
    {"velocity-lateness-s", "FS_VELOCITY_LATENESS_S", CFG_INT, "3600", 0, 31536000,
     O(velocity_lateness_s),
     "how far behind its slowest active partition's newest event time a worker still needs "
     "complete windows: feature rows are "
     "kept this long beyond the largest window; payments older than that (or whose windows reach "
     "below what any worker pruned) are counted as late (too_late)",
     false},
    {"velocity-watermark-liveness-s", "FS_VELOCITY_WATERMARK_LIVENESS_S", CFG_INT, "600", 10,
     86400, O(velocity_watermark_liveness_s),
     "a worker's published watermark holds back the other workers' pruning while it was refreshed "
     "within this long (workers refresh it with each prune, or sooner when it is about to age "
     "out; a dead or idle one "
     "stops holding pruning back after this); likewise a worker's own partition that delivered "
     "nothing for this long no longer holds its pruning back",
     false},
    {"payment-retention-days", "FS_PAYMENT_RETENTION_DAYS", CFG_INT, "0", 0, 3650, O(retention_days),
     "payments decided longer ago than this are deleted with their decision, alert (open or not, "
     "with its history) and labels, and so are labels that found no payment within it (0: kept "
     "forever; else at least 30; a raw_payments message ingested longer ago whose payment is not "
     "stored (deleted, e.g. consumed again after an offset reset) is dead-lettered as expired, "
     "never stored twice; a label for a payment already deleted is never applied, so set it "
     "above your chargeback window; outcome_links and risk_vault are kept; docs/operations.md)",
     false},
    {"payment-retention-interval-s", "FS_PAYMENT_RETENTION_INTERVAL_S", CFG_INT, "300", 1, 86400,
     O(retention_interval_s), "a retention round starts this often (lower in tests)", false},
    {"startup-timeout-ms", "FS_STARTUP_TIMEOUT_MS", CFG_INT, "60000", 100, 3600000,
     O(startup_timeout_ms), "PostgreSQL and the brokers must be reachable within this at start-up",
     false},
    {"shutdown-timeout-ms", "FS_SHUTDOWN_TIMEOUT_MS", CFG_INT, "5000", 0, 600000,
     O(shutdown_timeout_ms), "on SIGTERM, how long the last batch may wait for the brokers", false},
    {"db-timeout-ms", "FS_DB_TIMEOUT_MS", CFG_INT, "60000", 1000, 600000, O(db_timeout_ms),
     "a PostgreSQL round trip (statement, COPY, commit) not answered within this drops its "
     "connection: the batch is rolled back and retried after reconnecting (never skipped); /ready "
     "fails while PostgreSQL has not answered for longer than this",
     false},
    {"db-migrate-timeout-ms", "FS_DB_MIGRATE_TIMEOUT_MS", CFG_INT, "600000", 0,
     86400000, O(db_migrate_timeout_ms),
     "start-up migrations: each one (its whole text; also each bookkeeping statement) must finish "
     "within this, else it is cancelled and rolled back, and another process's migration (the "
     "migration lock) is waited for at most this long; longer: start-up error naming the cause "
     "(0: no limit)",
     false},
    {"db-migrate-lock-timeout-ms", "FS_DB_MIGRATE_LOCK_TIMEOUT_MS", CFG_INT, "10000", 0,
     86400000, O(db_migrate_lock_timeout_ms),
     "start-up migrations: a lock held by another session (an open transaction) is waited for at "
     "most this long, then start-up error naming the sessions (0: no limit; while it waits, "
     "other writers of that table wait behind it)",
     false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 1, 16, O(log_level),
     "debug, info, warn or error (debug: one line per batch and commit)", false},
    {0},
};
#undef O

static const char SUMMARY[] =
    "FraudShield scorer: raw_payments -> rules -> PostgreSQL + processed_payments/fraud_alerts.\n"
    "Start more workers with the same group-id to scale out. librdkafka properties pass through "
    "with -X name=value or KAFKA_NAME=value.";

/* Connects (retrying every second until the deadline or a stop) and migrates. */
static store *store_open(const scorer_opts *o, const char *app, char *errstr, size_t n) {
    store *st = store_new(o->database_url, app, (int)o->db_timeout_ms);
    if (!st) return snprintf(errstr, n, "out of memory"), NULL;
    int64_t deadline = fs_mono_us() + o->startup_timeout_ms * 1000;
    while (store_connect(st, errstr, n) != 0) {
        if (atomic_load(&app_stop_requested) || fs_mono_us() > deadline) goto failed;
        log_fields(LOG_WARN, "db_unavailable", json_pack("{s:s}", "error", errstr),
                   "PostgreSQL not reachable yet; retrying");
        sleep(1);
    }
    int applied = store_migrate(st, (int)o->db_migrate_timeout_ms,
                                (int)o->db_migrate_lock_timeout_ms, errstr, n);
    if (applied < 0) goto failed;
    log_msg(LOG_INFO, "db_ready", "PostgreSQL connected, %d migration(s) applied", applied);
    return st;
failed:
    store_destroy(st);
    return NULL;
}

static void log_stats(const scorer *s) {
    scorer_stats t;
    scorer_stats_get(s, &t);
    log_fields(LOG_INFO, "stopped",
               json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "batches",
                         (json_int_t)t.batches, "messages", (json_int_t)t.messages, "payments_new",
                         (json_int_t)t.payments_new, "payments_redelivered",
                         (json_int_t)t.payments_redelivered, "dead_letters",
                         (json_int_t)t.dead_letters, "consumer_errors", (json_int_t)t.consumer_errors,
                         "offsets_out_of_range", (json_int_t)t.offsets_out_of_range,
                         "messages_lost", (json_int_t)t.messages_lost, "db_retries",
                         (json_int_t)t.db_retries, "produce_retries", (json_int_t)t.produce_retries,
                         "late_events", (json_int_t)t.late_events),
               "stopped after %" PRIu64 " messages", t.messages);
}

static scorer_config scorer_config_from(const scorer_opts *o, const cfg_props *props) {
    scorer_config c = {
        .brokers = o->brokers,
        .props = props,
        .group_id = o->group_id,
        .topic = o->topic,
        .processed_topic = o->processed_topic,
        .alerts_topic = o->alerts_topic,
        .dlq_topic = o->dlq_topic,
        .rules_file = o->rules_file,
        .model_file = o->model_file,
        .feature_windows = o->feature_windows,
        .risk_windows_days = o->risk_windows_days,
        .risk_delay_days = (int)o->risk_delay_days,
        .outcomes_topic = o->outcomes_topic,
        .outcomes_dlq_topic = o->outcomes_dlq_topic,
        .outcomes_group_id = o->outcomes_group_id,
        .stats_interval_ms = (int)o->stats_interval_ms,
        .scorer_id = o->scorer_id,
        .batch_max = (int)o->batch_max,
        .batch_max_ms = (int)o->batch_max_ms,
        .batch_linger_ms = (int)o->batch_linger_ms,
        .velocity_prune_every = (int)o->velocity_prune_every,
        .velocity_prune_min_interval_ms = (int)o->velocity_prune_min_interval_ms,
        .velocity_lateness_ms = o->velocity_lateness_s * 1000,
        .watermark_liveness_ms = o->velocity_watermark_liveness_s * 1000,
        .retention_days = (int)o->retention_days,
        .retention_interval_s = (int)o->retention_interval_s,
        .startup_timeout_ms = (int)o->startup_timeout_ms,
        .shutdown_timeout_ms = (int)o->shutdown_timeout_ms,
    };
    return c;
}

/* /ready's answer, also exported as fs_scorer_ready (admin asks before each /metrics render, so the
 * two never disagree): the worker is in its consume loop (the flag the scorer sets) and PostgreSQL
 * answers (store_db_stuck: no answer for longer than db-timeout-ms while the worker waits for one).
 * st is set once the scorer owns it and cleared before the scorer is destroyed. */
typedef struct readiness {
    atomic_int consuming;
    _Atomic(store *) st;
    kafka_poll_clock polled; /* the consume loop's last poll of raw_payments */
    metric *gauge, *db_age, *poll_age;
} readiness;

static bool scorer_ready(void *arg, char *why, size_t why_size) {
    readiness *r = arg;
    store *st = atomic_load(&r->st);
    const char *no = !atomic_load(&r->consuming) || !st ? "not consuming (starting or stopping)"
                     : store_db_stuck(st) ? "PostgreSQL not answering (no successful round trip "
                                            "for longer than db-timeout-ms)"
                                          : NULL;
    if (st) metric_set(r->db_age, NULL, (double)store_db_age_ms(st) / 1000.0);
    metric_set(r->poll_age, NULL, kafka_poll_age_seconds(&r->polled));
    metric_set(r->gauge, NULL, no ? 0 : 1);
    if (no) snprintf(why, why_size, "%s", no);
    return no == NULL;
}

/* The admin endpoint, unless admin-port is -1. *m gets the registry (also without endpoint), r
 * its readiness gauges. */
static admin *admin_open(const scorer_opts *o, metrics **m, readiness *r, char *errstr, size_t n) {
    *m = metrics_new();
    if (!*m) return snprintf(errstr, n, "out of memory"), NULL;
    r->gauge = metrics_gauge(*m, "fs_scorer_ready",
                             "1 while /ready answers 200: consuming, PostgreSQL answering", NULL);
    r->db_age = metrics_gauge(*m, "fs_scorer_db_last_success_age_seconds",
                              "Seconds since PostgreSQL last answered this worker", NULL);
    r->poll_age = metrics_gauge(*m, "fs_scorer_consumer_last_poll_age_seconds",
                                "Seconds since the consume loop last returned from polling "
                                "raw_payments (grows while it is stuck; fs_scorer_consumer_lag is "
                                "then frozen)", NULL);
    metric_set(r->gauge, NULL, 0); /* a series from the start: a worker stuck starting shows as 0 */
    metric_set(r->poll_age, NULL, 0);
    if (o->admin_port < 0) return NULL;
    return admin_new(o->admin_addr, (int)o->admin_port, *m, scorer_ready, r, errstr, n); /* logs */
}

/* The configured model, or NULL with "model-file: <path>: <why>" in errstr. */
static model *model_open(const scorer_config *cfg, char *errstr, size_t n) {
    char why[768];
    model *m = scorer_model_load(cfg, why, sizeof why);
    if (!m) snprintf(errstr, n, "model-file: %s", why);
    return m;
}

/* With model-file set, the offline run loads the model too and fits the rules to it as the scorer
 * does (scorer_rules_fit: its windows join the features), so `--offline /dev/null` checks what a
 * start-up or a reload would refuse, and the features printed are the live scorer's with that
 * model (replay parity). The model does not score here: no model_score. */
static int run_offline(const scorer_opts *o, const cfg_props *props) {
    char errstr[1024];
    scorer_config cfg = scorer_config_from(o, props);
    rules *r = scorer_rules_load(&cfg, errstr, sizeof errstr);
    model *m = NULL;
    modelrow *mr = NULL;
    int rc = 1;
    if (!r || (o->model_file[0] && (!(m = model_open(&cfg, errstr, sizeof errstr)) ||
                                    scorer_rules_fit(r, m, errstr, sizeof errstr) != 0 ||
                                    !(mr = modelrow_new(m, r, errstr, sizeof errstr)))))
        goto done;
    scorer_model_unbound(m, mr); /* a warning, as at start-up: such columns are the model's */
    if (offline_run(o->offline, o->offline_outcomes, r, stdout, errstr, sizeof errstr) == 0) rc = 0;
done:
    if (rc) log_msg(LOG_ERROR, "offline_failed", "%s", errstr);
    modelrow_destroy(mr);
    model_destroy(m);
    rules_destroy(r);
    return rc;
}

/* Start-up, then the loop until a signal. Returns the exit status. */
static int run(const scorer_opts *o, const cfg_props *props) {
    char errstr[1024], app[160];
    int rc = 1;
    scorer *s = NULL;
    metrics *m = NULL;
    admin *a = NULL;
    static readiness ready; /* read by the admin thread until admin_destroy */
    scorer_config cfg = scorer_config_from(o, props);
    snprintf(app, sizeof app, "fraudshield-scorer %s", o->scorer_id);
    model *mdl = NULL;
    rules *r = scorer_rules_load(&cfg, errstr, sizeof errstr);
    if (!r) goto failed;
    log_msg(LOG_INFO, "rules_loaded", "rules %s from %s", rules_version(r), o->rules_file);
    if (o->model_file[0] && !(mdl = model_open(&cfg, errstr, sizeof errstr))) goto failed;
    if (scorer_rules_fit_check(r, mdl, errstr, sizeof errstr) != 0) goto failed;
    a = admin_open(o, &m, &ready, errstr, sizeof errstr);
    cfg.consuming = &ready.consuming;
    cfg.polled = &ready.polled;
    if (!m || (!a && o->admin_port >= 0)) goto failed;
    cfg.metrics = m;
    store *st = store_open(o, app, errstr, sizeof errstr);
    if (!st) goto failed;
    s = scorer_new(&cfg, st, r, mdl, errstr, sizeof errstr); /* owns st, r, mdl now, also on failure */
    r = NULL;
    mdl = NULL;
    if (!s) goto failed;
    atomic_store(&ready.st, st); /* the scorer's now: valid until scorer_destroy */
    log_msg(LOG_INFO, "started", "scorer %s consuming %s as group %s", o->scorer_id, o->topic,
            o->group_id);
    rc = scorer_run(s, &app_stop_requested, &app_reload_requested) == 0 ? 0 : 1;
    log_stats(s);
    /* the admin thread reads the store (readiness) and the registry: it goes first */
    atomic_store(&ready.st, NULL);
    admin_destroy(a);
    scorer_destroy(s);
    metrics_destroy(m);
    return rc;
failed:
    if (atomic_load(&app_stop_requested)) { /* a stop asked for during start-up is no failure */
        log_msg(LOG_INFO, "stopped_during_startup", "stopped during start-up (%s)", errstr);
        rc = 0;
    } else {
        log_msg(LOG_ERROR, "startup_failed", "%s", errstr);
    }
    rules_destroy(r);
    model_destroy(mdl);
    admin_destroy(a);
    metrics_destroy(m);
    return rc;
}

/* hostname-pid when scorer-id is empty. */
static int default_scorer_id(scorer_opts *o) {
    char host[64] = "scorer", id[96];
    if (o->scorer_id[0]) return 0;
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(id, sizeof id, "%s-%ld", host, (long)getpid());
    free(o->scorer_id);
    o->scorer_id = strdup(id);
    return o->scorer_id ? 0 : -1;
}

int main(int argc, char **argv) {
    scorer_opts o = {0};
    cfg_props props = {0};
    int rc = 1;
    char errstr[512];
    app_signals_install();
    cfg_result r = app_configure("scorer", scorer_options, &o, &props, argc, argv,
                                 "fraudshield-scorer", SUMMARY);
    if (r == CFG_HELP) {
        rc = 0;
    } else if (r == CFG_OK && default_scorer_id(&o) != 0) {
        log_msg(LOG_ERROR, "config_invalid", "out of memory");
    } else if (r == CFG_OK && o.offline_outcomes[0] && !o.offline[0]) {
        log_msg(LOG_ERROR, "config_invalid", "offline-outcomes is only read with offline");
    } else if (r == CFG_OK && strcmp(o.group_id, o.outcomes_group_id) == 0) {
        /* one group, two protocols (cooperative payments, eager outcomes): the broker refuses one */
        log_msg(LOG_ERROR, "config_invalid", "group-id and outcomes-group-id must differ (both %s): "
                "the payments and the outcomes consumers are separate groups", o.group_id);
    } else if (r == CFG_OK && (expire_check_days(o.retention_days, errstr, sizeof errstr) != 0 ||
                               db_url_check(o.database_url, errstr, sizeof errstr) != 0 ||
                               kafka_props_check(&props, errstr, sizeof errstr) != 0)) {
        log_msg(LOG_ERROR, "config_invalid", "%s", errstr);
    } else if (r == CFG_OK) {
        rc = o.offline[0] ? run_offline(&o, &props) : run(&o, &props);
    }
    cfg_free(scorer_options, &o, &props);
    return rc;
}
