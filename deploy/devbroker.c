/* fraudshield-devbroker: a Kafka cluster for DEVELOPMENT AND TESTS ONLY.
 *
 * librdkafka's mock cluster (rdkafka_mock.h) inside one process: N brokers on 127.0.0.1 with
 * ephemeral ports, our topics created up front, the bootstrap list printed on stdout and written
 * (atomically) to a file where `make run` and the tests find it. It keeps only the newest ~5 MiB of
 * each partition and nothing survives a restart: never point anything real at it. Production uses
 * real Kafka (docker-compose.yml, deploy/k8s).
 *
 * Signals: SIGTERM/SIGINT stop it (exit 0, bootstrap file removed); SIGUSR1 takes every broker down
 * (connections dropped, new ones refused) and SIGUSR2 brings them back; SIGHUP makes every offset
 * commit (with --hup-fault=produce or fatal: every produce request) fail until the next SIGHUP (or
 * commit-fault-ms). All three are for fault-injection tests,
 * like --commit-errors, --pid-errors and --fence-broker. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "app.h"
#include "cfg.h"
#include "fsutil.h"
#include "kafka.h"
#include "log.h"

#define DEFAULT_TOPICS                                                                            \
    "raw_payments,processed_payments,fraud_alerts,raw_payments.dlq,fraud_alerts.dlq,"             \
    "payment_outcomes,payment_outcomes.dlq"

typedef struct devbroker_conf {
    int64_t broker_count;
    int64_t partitions;
    int64_t replication_factor;
    char *topics;
    char *bootstrap_file;
    char *log_level;
    int64_t commit_errors;
    int64_t commit_fault_ms;
    char *hup_fault;
    int64_t pid_errors;
    char *coordinators;
    int64_t fence_broker;
} devbroker_conf;

/* Not "brokers": FS_BROKERS is every process's bootstrap list, and the tests and `make run` export
 * it; a broker count under the same variable would break the next devbroker they start. */
static const cfg_opt devbroker_options[] = {
    {"broker-count", "FS_BROKER_COUNT", CFG_INT, "3", 1, 9,
     offsetof(devbroker_conf, broker_count), "number of mock brokers", false},
    {"partitions", "FS_PARTITIONS", CFG_INT, "6", 1, 256, offsetof(devbroker_conf, partitions),
     "partitions of every topic", false},
    {"replication-factor", "FS_REPLICATION_FACTOR", CFG_INT, "0", 0, 9,
     offsetof(devbroker_conf, replication_factor),
     "replicas of every partition; 0 = min(3, broker-count)", false},
    {"topics", "FS_TOPICS", CFG_STRING, DEFAULT_TOPICS, 0, 4096, offsetof(devbroker_conf, topics),
     "comma-separated topics to create", false},
    {"bootstrap-file", "FS_BOOTSTRAP_FILE", CFG_STRING, ".run/kafka.bootstrap", 0, 4096,
     offsetof(devbroker_conf, bootstrap_file),
     "where the bootstrap list is written (atomically; removed on exit)", false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 0, 16, offsetof(devbroker_conf, log_level),
     "debug, info, warn or error", false},
    {"commit-errors", "FS_COMMIT_ERRORS", CFG_INT, "0", 0, 1000,
     offsetof(devbroker_conf, commit_errors),
     "fault injection: the first N offset commits fail with REBALANCE_IN_PROGRESS", false},
    {"commit-fault-ms", "FS_COMMIT_FAULT_MS", CFG_INT, "60000", 100, 600000,
     offsetof(devbroker_conf, commit_fault_ms),
     "fault injection: SIGHUP makes every request of its hup-fault kind fail until the next "
     "SIGHUP or for this long (then every error of that kind, --commit-errors' too, is cleared)",
     false},
    {"hup-fault", "FS_HUP_FAULT", CFG_STRING, "commit", 1, 16, offsetof(devbroker_conf, hup_fault),
     "what SIGHUP makes fail: commit (offset commits, REBALANCE_IN_PROGRESS), produce (every "
     "produce request, INVALID_RECORD: the messages fail, the producer stays usable) or fatal "
     "(every produce request, OUT_OF_ORDER_SEQUENCE_NUMBER: a fatal error for an idempotent "
     "producer)",
     false},
    {"pid-errors", "FS_PID_ERRORS", CFG_INT, "0", 0, 1000, offsetof(devbroker_conf, pid_errors),
     "fault injection: the first N InitProducerId requests (an idempotent producer's start) fail "
     "with INVALID_PRODUCER_EPOCH, a fatal error for the producer",
     false},
    {"coordinators", "FS_COORDINATORS", CFG_STRING, "", 0, 4096,
     offsetof(devbroker_conf, coordinators),
     "comma-separated GROUP=BROKER pins of consumer group coordinators (else the mock hashes the "
     "group id onto a broker); lets --fence-broker hit one group alone",
     false},
    {"fence-broker", "FS_FENCE_BROKER", CFG_INT, "0", 0, 9, offsetof(devbroker_conf, fence_broker),
     "fault injection: the first Heartbeat sent to broker N (0 = none) is answered "
     "FENCED_INSTANCE_ID, a fatal error for the consumer whose group that broker coordinates",
     false},
    {0},
};

/* C11 atomics, not volatile sig_atomic_t: the mock cluster's thread (created by librdkafka without
 * blocking signals) may be the one that runs the handler, and serve() reads the flags on the main
 * thread (see app.h; lock-free, as app.c asserts, so safe in a handler). */
static atomic_bool stop_requested, down_requested, up_requested, fault_requested;

static void on_signal(int sig) {
    if (sig == SIGUSR1) atomic_store(&down_requested, true);
    else if (sig == SIGUSR2) atomic_store(&up_requested, true);
    else if (sig == SIGHUP) atomic_store(&fault_requested, true);
    else atomic_store(&stop_requested, true);
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* Creates the parent directory of path (one level, like the default ".run/"). */
static int ensure_parent_dir(const char *path, char *errstr, size_t errstr_size) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = '\0';
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(errstr, errstr_size, "mkdir %.300s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* tmp file + rename: a reader sees either no file or the whole list, never a partial line. */
static int write_bootstrap(const char *path, const char *bootstraps, char *errstr,
                           size_t errstr_size) {
    char tmp[4200];
    FILE *f = NULL;
    if (ensure_parent_dir(path, errstr, errstr_size) != 0) return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    f = fopen(tmp, "w");
    if (!f) goto failed;
    if (fprintf(f, "%s\n", bootstraps) < 0) goto failed;
    if (fclose(f) != 0) {
        f = NULL;
        goto failed;
    }
    f = NULL;
    if (rename(tmp, path) != 0) goto failed;
    return 0;
failed:
    snprintf(errstr, errstr_size, "writing %.300s: %s", path, strerror(errno));
    if (f) fclose(f);
    unlink(tmp);
    return -1;
}

static int create_topics(rd_kafka_mock_cluster_t *mc, const devbroker_conf *conf, int rf,
                         char *errstr, size_t errstr_size) {
    char *list = strdup(conf->topics), *save = NULL;
    int rc = -1;
    if (!list) return snprintf(errstr, errstr_size, "out of memory"), -1;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(mc, t, (int)conf->partitions, rf);
        if (err) {
            snprintf(errstr, errstr_size, "creating topic %.200s: %s", t, rd_kafka_err2str(err));
            goto done;
        }
        log_fields(LOG_INFO, "topic_created",
                   json_pack("{s:s,s:I,s:i}", "topic", t, "partitions", (json_int_t)conf->partitions,
                             "replication_factor", rf),
                   "created topic %s", t);
    }
    rc = 0;
done:
    free(list);
    return rc;
}

static rd_kafka_resp_err_t set_broker(rd_kafka_mock_cluster_t *mc, int32_t id, int up) {
    return up ? rd_kafka_mock_broker_set_up(mc, id) : rd_kafka_mock_broker_set_down(mc, id);
}

/* Every broker down (connections closed, new ones refused) or up again. Leaders do not move.
 * One request for all (-1): back-to-back requests per broker can leave one waiting for the mock
 * thread's 1 s poll timeout (its wake-up is consumed by the previous request). */
static void set_all_brokers(rd_kafka_mock_cluster_t *mc, int broker_count, int up) {
    if (set_broker(mc, -1, up) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int32_t id = 1; id <= broker_count; id++) {
            rd_kafka_resp_err_t err = set_broker(mc, id, up);
            if (err)
                log_msg(LOG_ERROR, "broker_state_failed", "broker %d: %s", (int)id,
                        rd_kafka_err2str(err));
        }
    }
    log_msg(LOG_WARN, up ? "brokers_up" : "brokers_down",
            up ? "all %d brokers are up again (SIGUSR2)" : "all %d brokers are down (SIGUSR1)",
            broker_count);
}

enum { API_PRODUCE = 0, API_OFFSET_COMMIT = 8, API_HEARTBEAT = 12, API_INIT_PRODUCER_ID = 22 }; /* Kafka API keys */

/* The fault SIGHUP toggles: which requests (what) fail, with what error. */
typedef struct hup_fault {
    const char *name;
    int16_t api;
    rd_kafka_resp_err_t err;
    const char *what;
} hup_fault;

/* fatal: librdkafka's idempotent producer takes an out-of-order sequence on the oldest request in
 * flight of a partition for a desynchronization it cannot repair (a fatal error): the way to make a
 * producer fatal after it has delivered (--pid-errors does it at its start). */
static const hup_fault HUP_FAULTS[] = {
    {"commit", API_OFFSET_COMMIT, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS, "commit"},
    {"produce", API_PRODUCE, RD_KAFKA_RESP_ERR_INVALID_RECORD, "produce"},
    {"fatal", API_PRODUCE, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, "produce"},
};

/* The next n requests of api fail with err. */
static void inject_errors(rd_kafka_mock_cluster_t *mc, int16_t api, rd_kafka_resp_err_t err,
                          size_t n) {
    rd_kafka_resp_err_t *errs = n ? calloc(n, sizeof *errs) : NULL;
    if (!errs) return;
    for (size_t i = 0; i < n; i++) errs[i] = err;
    rd_kafka_mock_push_request_errors_array(mc, api, n, errs);
    free(errs);
}

/* Pins each GROUP=BROKER of list as that group's coordinator. */
static int pin_coordinators(rd_kafka_mock_cluster_t *mc, const char *list, int broker_count,
                            char *errstr, size_t errstr_size) {
    char *copy = strdup(list), *save = NULL;
    int rc = -1;
    if (!copy) return snprintf(errstr, errstr_size, "out of memory"), -1;
    for (char *pin = strtok_r(copy, ",", &save); pin; pin = strtok_r(NULL, ",", &save)) {
        char *eq = strrchr(pin, '='), *end = NULL;
        long id = eq ? strtol(eq + 1, &end, 10) : 0;
        if (!eq || eq == pin || end == eq + 1 || *end || id < 1 || id > broker_count) {
            snprintf(errstr, errstr_size, "coordinators: \"%.200s\" is not GROUP=BROKER (1..%d)", pin,
                     broker_count);
            goto done;
        }
        *eq = '\0';
        rd_kafka_mock_coordinator_set(mc, "group", pin, (int32_t)id);
        log_fields(LOG_INFO, "coordinator_pinned", json_pack("{s:s,s:i}", "group", pin, "broker", (int)id),
                   "group %s is coordinated by broker %ld", pin, id);
    }
    rc = 0;
done:
    free(copy);
    return rc;
}

/* A fault switched on and off by SIGHUP rather than counted: the mock only stacks errors, so "on"
 * is a stack larger than any test sends meanwhile and "off" clears it (for commits, --commit-errors'
 * errors included); after window_ms it switches off by itself. A consumer's commit retries (or a
 * producer's outputs) then fail until a moment the test chooses, which lets it pick the code path
 * of the retry that succeeds. */
static void toggle_fault(rd_kafka_mock_cluster_t *mc, const hup_fault *f, int64_t *until_ms,
                         int64_t window_ms) {
    int64_t now = fs_mono_us() / 1000;
    bool toggle = atomic_exchange(&fault_requested, false);
    if (toggle && !*until_ms) {
        inject_errors(mc, f->api, f->err, 100000);
        *until_ms = now + window_ms;
        log_fields(LOG_WARN, "fault_injected",
                   json_pack("{s:s,s:I}", "fault", f->name, "commit_fault_ms", (json_int_t)window_ms),
                   "every %s request fails (%s) until the next SIGHUP (at most %" PRId64 " ms)",
                   f->what, rd_kafka_err2name(f->err), window_ms);
    } else if (*until_ms && (toggle || now >= *until_ms)) {
        *until_ms = 0;
        rd_kafka_mock_clear_request_errors(mc, f->api);
        log_fields(LOG_WARN, "fault_cleared", json_pack("{s:s}", "fault", f->name),
                   "%s requests succeed again (%s)", f->what,
                   toggle ? "SIGHUP" : "commit-fault-ms elapsed");
    }
}

/* Serves until SIGTERM/SIGINT. The mock cluster runs on its own thread; this one only watches flags. */
static void serve(rd_kafka_mock_cluster_t *mc, int broker_count, const hup_fault *fault,
                  int64_t commit_fault_ms) {
    const struct timespec tick = {0, 50 * 1000 * 1000};
    int64_t fault_until_ms = 0;
    while (!atomic_load(&stop_requested)) {
        toggle_fault(mc, fault, &fault_until_ms, commit_fault_ms);
        if (atomic_exchange(&down_requested, false)) set_all_brokers(mc, broker_count, 0);
        if (atomic_exchange(&up_requested, false)) set_all_brokers(mc, broker_count, 1);
        nanosleep(&tick, NULL);
    }
}

/* The rd_kafka_t only hosts the cluster (its threads and bookkeeping); it never connects anywhere,
 * so no bootstrap servers and no passthrough properties. */
static rd_kafka_t *host_new(char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *kc = kafka_conf_new(NULL, NULL, errstr, errstr_size);
    if (!kc) return NULL;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, errstr_size);
    if (!rk) rd_kafka_conf_destroy(kc); /* on success rd_kafka_new owns kc */
    return rk;
}

/* Blocks (how = SIG_BLOCK) or unblocks our signals in the calling thread. Threads inherit the mask:
 * librdkafka's threads are created while they are blocked, so every signal is delivered to the main
 * thread, interrupts its sleep and is acted on at once, and never disturbs a librdkafka thread. */
static void mask_signals(int how) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(how, &set, NULL);
}

static int run(const devbroker_conf *conf, char *errstr, size_t errstr_size) {
    int n = (int)conf->broker_count, rc = -1;
    int rf = conf->replication_factor ? (int)conf->replication_factor : (n < 3 ? n : 3);
    rd_kafka_mock_cluster_t *mc = NULL;
    rd_kafka_t *rk = NULL;
    const hup_fault *fault = NULL;
    for (size_t i = 0; i < sizeof HUP_FAULTS / sizeof *HUP_FAULTS; i++)
        if (strcmp(conf->hup_fault, HUP_FAULTS[i].name) == 0) fault = &HUP_FAULTS[i];
    if (!fault) {
        snprintf(errstr, errstr_size, "hup-fault must be commit, produce or fatal, not %.100s",
                 conf->hup_fault);
        goto done;
    }
    if (rf > n) {
        snprintf(errstr, errstr_size, "replication-factor %d exceeds broker-count %d", rf, n);
        goto done;
    }
    mask_signals(SIG_BLOCK);
    rk = host_new(errstr, errstr_size);
    mc = rk ? rd_kafka_mock_cluster_new(rk, n) : NULL;
    mask_signals(SIG_UNBLOCK); /* a signal that came meanwhile is delivered now */
    if (!rk) goto done;
    if (!mc) {
        snprintf(errstr, errstr_size, "rd_kafka_mock_cluster_new failed");
        goto done;
    }
    if (create_topics(mc, conf, rf, errstr, errstr_size) != 0) goto done;
    if (conf->commit_errors) {
        inject_errors(mc, API_OFFSET_COMMIT, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
                      (size_t)conf->commit_errors);
        log_fields(LOG_WARN, "fault_injected",
                   json_pack("{s:I}", "commit_errors", (json_int_t)conf->commit_errors),
                   "the next %" PRId64 " offset commits will fail", conf->commit_errors);
    }
    if (conf->pid_errors) {
        inject_errors(mc, API_INIT_PRODUCER_ID, RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH,
                      (size_t)conf->pid_errors);
        log_fields(LOG_WARN, "fault_injected",
                   json_pack("{s:I}", "pid_errors", (json_int_t)conf->pid_errors),
                   "the next %" PRId64 " producer id requests will fail (fatal)", conf->pid_errors);
    }
    if (pin_coordinators(mc, conf->coordinators, n, errstr, errstr_size) != 0) goto done;
    if (conf->fence_broker > n) {
        snprintf(errstr, errstr_size, "fence-broker %" PRId64 " exceeds broker-count %d",
                 conf->fence_broker, n);
        goto done;
    }
    if (conf->fence_broker) {
        /* Stacked on that broker until a consumer's first Heartbeat there, i.e. after it joined. */
        rd_kafka_mock_broker_push_request_error_rtts(mc, (int32_t)conf->fence_broker, API_HEARTBEAT,
                                                     1, RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID, 0);
        log_fields(LOG_WARN, "fault_injected",
                   json_pack("{s:I}", "fence_broker", (json_int_t)conf->fence_broker),
                   "the first heartbeat to broker %" PRId64 " will be fenced (fatal)",
                   conf->fence_broker);
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (write_bootstrap(conf->bootstrap_file, bootstraps, errstr, errstr_size) != 0) goto done;
    printf("%s\n", bootstraps);
    fflush(stdout);
    log_fields(LOG_INFO, "devbroker_ready",
               json_pack("{s:s,s:s,s:i}", "bootstrap", bootstraps, "bootstrap_file",
                         conf->bootstrap_file, "brokers", n),
               "dev broker (development/tests only; keeps ~5 MiB per partition) at %s", bootstraps);
    serve(mc, n, fault, conf->commit_fault_ms);
    unlink(conf->bootstrap_file);
    log_msg(LOG_INFO, "devbroker_stopping", "stopping");
    rc = 0;
done:
    if (mc) rd_kafka_mock_cluster_destroy(mc);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}

int main(int argc, char **argv) {
    devbroker_conf conf;
    cfg_props props;
    char errstr[512];
    int rc = 1;
    memset(&conf, 0, sizeof conf);
    memset(&props, 0, sizeof props);
    install_signals();
    cfg_result r = app_configure("devbroker", devbroker_options, &conf, &props, argc, argv,
                                 "fraudshield-devbroker",
                                 "Kafka mock cluster for development and tests only (librdkafka mock).");
    if (r == CFG_HELP) rc = 0;
    if (r != CFG_OK) goto done;
    if (run(&conf, errstr, sizeof errstr) != 0) {
        log_msg(LOG_ERROR, "devbroker_failed", "%s", errstr);
        goto done;
    }
    rc = 0;
done:
    cfg_free(devbroker_options, &conf, &props);
    return rc;
}
