/* fraudshield-scorer: configuration, start-up, signals, shutdown. The data path is in scorer.c.
 *
 * Start-up: PostgreSQL (retried until startup-timeout-ms), migrations, the rules file (invalid:
 * exit 1 with the error), Kafka clients, topics, subscription.
 * Signals (the handlers only set flags; the loop acts between polls and batches):
 *   SIGTERM, SIGINT  stop polling, finish the batch in hand if PostgreSQL is reachable (else
 *                    abandon it uncommitted), leave the group, flush, exit 0
 *   SIGHUP           reload the rules file between batches (invalid: logged, the old rules stay) */
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "fsutil.h"
#include "kafka.h"
#include "log.h"
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
    int64_t batch_max;
    int64_t batch_max_ms;
    char *scorer_id;
    int64_t velocity_prune_every;
    int64_t velocity_lateness_s;
    int64_t startup_timeout_ms;
    int64_t shutdown_timeout_ms;
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
    {"batch-max", "FS_BATCH_MAX", CFG_INT, "500", 1, 10000, O(batch_max),
     "messages per batch (one PostgreSQL transaction)", false},
    {"batch-max-ms", "FS_BATCH_MAX_MS", CFG_INT, "50", 1, 60000, O(batch_max_ms),
     "a batch closes this long after its first message", false},
    {"scorer-id", "FS_SCORER_ID", CFG_STRING, "", 0, 128, O(scorer_id),
     "this worker's name in decisions and logs (default: hostname-pid)", false},
    {"velocity-prune-every", "FS_VELOCITY_PRUNE_EVERY", CFG_INT, "100", 0, 1000000,
     O(velocity_prune_every), "batches between prunes of old velocity events (0: never)", false},
    {"velocity-lateness-s", "FS_VELOCITY_LATENESS_S", CFG_INT, "3600", 0, 31536000,
     O(velocity_lateness_s),
     "velocity events are kept this long beyond the largest window (event time); payments later "
     "than that are scored with incomplete windows and counted as late",
     false},
    {"startup-timeout-ms", "FS_STARTUP_TIMEOUT_MS", CFG_INT, "60000", 100, 3600000,
     O(startup_timeout_ms), "PostgreSQL and the brokers must be reachable within this at start-up",
     false},
    {"shutdown-timeout-ms", "FS_SHUTDOWN_TIMEOUT_MS", CFG_INT, "5000", 0, 600000,
     O(shutdown_timeout_ms), "on SIGTERM, how long the last batch may wait for the brokers", false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 1, 16, O(log_level),
     "debug, info, warn or error (debug: one line per batch and commit)", false},
    {0},
};
#undef O

static const char SUMMARY[] =
    "FraudShield scorer: raw_payments -> rules -> PostgreSQL + processed_payments/fraud_alerts.\n"
    "Start more workers with the same group-id to scale out. librdkafka properties pass through "
    "with -X name=value or KAFKA_NAME=value.";

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void on_hup(int sig) {
    (void)sig;
    reload_requested = 1;
}

static void signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Connects (retrying every second until the deadline or a stop) and migrates. */
static store *store_open(const scorer_opts *o, const char *app, char *errstr, size_t n) {
    store *st = store_new(o->database_url, app);
    if (!st) return snprintf(errstr, n, "out of memory"), NULL;
    int64_t deadline = fs_mono_us() + o->startup_timeout_ms * 1000;
    while (store_connect(st, errstr, n) != 0) {
        if (stop_requested || fs_mono_us() > deadline) goto failed;
        log_fields(LOG_WARN, "db_unavailable", json_pack("{s:s}", "error", errstr),
                   "PostgreSQL not reachable yet; retrying");
        sleep(1);
    }
    int applied = store_migrate(st, errstr, n);
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
        .scorer_id = o->scorer_id,
        .batch_max = (int)o->batch_max,
        .batch_max_ms = (int)o->batch_max_ms,
        .velocity_prune_every = (int)o->velocity_prune_every,
        .velocity_lateness_ms = o->velocity_lateness_s * 1000,
        .startup_timeout_ms = (int)o->startup_timeout_ms,
        .shutdown_timeout_ms = (int)o->shutdown_timeout_ms,
    };
    return c;
}

/* Start-up, then the loop until a signal. Returns the exit status. */
static int run(const scorer_opts *o, const cfg_props *props) {
    char errstr[1024], app[160];
    int rc = 1;
    scorer *s = NULL;
    snprintf(app, sizeof app, "fraudshield-scorer %s", o->scorer_id);
    rules *r = rules_load(o->rules_file, errstr, sizeof errstr);
    if (!r) goto failed;
    log_msg(LOG_INFO, "rules_loaded", "rules %s from %s", rules_version(r), o->rules_file);
    store *st = store_open(o, app, errstr, sizeof errstr);
    if (!st) goto failed;
    scorer_config cfg = scorer_config_from(o, props);
    s = scorer_new(&cfg, st, r, errstr, sizeof errstr); /* owns st and r now, also on failure */
    r = NULL;
    if (!s) goto failed;
    log_msg(LOG_INFO, "started", "scorer %s consuming %s as group %s", o->scorer_id, o->topic,
            o->group_id);
    rc = scorer_run(s, &stop_requested, &reload_requested) == 0 ? 0 : 1;
    log_stats(s);
    scorer_destroy(s);
    return rc;
failed:
    log_msg(LOG_ERROR, "startup_failed", "%s", errstr);
    rules_destroy(r);
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
    char errstr[512];
    log_level level;
    int rc = 1;
    log_init("scorer", LOG_INFO);
    signals_install();
    cfg_result r = cfg_parse(scorer_options, &o, &props, argc, argv, "fraudshield-scorer", SUMMARY,
                             errstr, sizeof errstr);
    if (r == CFG_HELP) {
        rc = 0;
    } else if (r == CFG_ERROR) {
        log_msg(LOG_ERROR, "config_invalid", "%s", errstr);
    } else if (log_level_parse(o.log_level, &level) != 0) {
        log_msg(LOG_ERROR, "config_invalid", "log-level: unknown level %s", o.log_level);
    } else if (default_scorer_id(&o) != 0) {
        log_msg(LOG_ERROR, "config_invalid", "out of memory");
    } else {
        log_init("scorer", level);
        cfg_log(scorer_options, &o, &props);
        rc = run(&o, &props);
    }
    cfg_free(scorer_options, &o, &props);
    return rc;
}
