/* fraudshield-ingest: configuration, start-up, signals, shutdown. The data path is in ingest.c.
 *
 * Signals (handled in the event loop by libevent, never in a raw handler):
 *   SIGTERM, SIGINT  graceful: stop accepting connections, let in-flight requests get their delivery
 *                    reports (up to shutdown-timeout-ms), exit 0. A second one exits at once.
 *   SIGHUP           logged; reloading is not supported yet (API keys and secrets: issue 3). */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "ingest.h"
#include "log.h"

#define PII_SECRET_MIN 16
#define PII_SECRET_MAX 4096
/* Development only (--dev-insecure-pii-secret=true): anyone can recompute digests made with it. */
#define PII_DEV_SECRET "fraudshield-dev-insecure-pii-secret-do-not-use"

typedef struct ingest_opts {
    char *listen_addr;
    int64_t listen_port;
    char *brokers;
    char *topic;
    int64_t max_body_bytes;
    int64_t retry_after_seconds;
    int64_t startup_timeout_ms;
    int64_t shutdown_timeout_ms;
    char *pii_secret_file;
    char *pii_secret;
    bool dev_insecure_pii_secret;
    int64_t pii_t_cost;
    int64_t pii_m_cost_kib;
    int64_t pii_cache_entries;
    char *log_level;
} ingest_opts;

#define O(field) offsetof(ingest_opts, field)
static const cfg_opt ingest_options[] = {
    {"listen-addr", "FS_LISTEN_ADDR", CFG_STRING, "127.0.0.1", 0, 255, O(listen_addr),
     "HTTP listen address", false},
    {"listen-port", "FS_LISTEN_PORT", CFG_INT, "8000", 0, 65535, O(listen_port),
     "HTTP listen port (0: any free port, logged)", false},
    {"brokers", "FS_BROKERS", CFG_STRING, "localhost:9092", 1, 4096, O(brokers),
     "Kafka bootstrap servers (host:port,...)", false},
    {"topic", "FS_TOPIC", CFG_STRING, "raw_payments", 1, 249, O(topic),
     "topic the payments are produced to", false},
    {"max-body-bytes", "FS_MAX_BODY_BYTES", CFG_INT, "65536", 1024, 16777216, O(max_body_bytes),
     "largest accepted request body; larger: 413", false},
    {"retry-after-seconds", "FS_RETRY_AFTER_SECONDS", CFG_INT, "1", 1, 3600,
     O(retry_after_seconds), "Retry-After of 503 answers", false},
    {"startup-timeout-ms", "FS_STARTUP_TIMEOUT_MS", CFG_INT, "10000", 100, 600000,
     O(startup_timeout_ms), "brokers must answer and the topic exist within this at start-up",
     false},
    {"shutdown-timeout-ms", "FS_SHUTDOWN_TIMEOUT_MS", CFG_INT, "10000", 0, 600000,
     O(shutdown_timeout_ms), "on SIGTERM, how long in-flight requests may wait for the broker",
     false},
    {"pii-secret-file", "FS_PII_SECRET_FILE", CFG_STRING, "", 0, 4096, O(pii_secret_file),
     "file holding the pseudonymization secret (>= 16 bytes; trailing newlines ignored)", false},
    {"pii-secret", "FS_PII_SECRET", CFG_STRING, "", 0, PII_SECRET_MAX, O(pii_secret),
     "pseudonymization secret itself (>= 16 bytes); prefer pii-secret-file", true},
    {"dev-insecure-pii-secret", "FS_DEV_INSECURE_PII_SECRET", CFG_BOOL, "false", 0, 0,
     O(dev_insecure_pii_secret), "development only: use a fixed, public PII secret", false},
    {"pii-t-cost", "FS_PII_T_COST", CFG_INT, "2", 1, 64, O(pii_t_cost), "Argon2id passes", false},
    {"pii-m-cost-kib", "FS_PII_M_COST_KIB", CFG_INT, "4096", 8, 1048576, O(pii_m_cost_kib),
     "Argon2id memory (KiB)", false},
    {"pii-cache-entries", "FS_PII_CACHE_ENTRIES", CFG_INT, "100000", 0, 100000000,
     O(pii_cache_entries), "digest LRU cache capacity (0: no cache)", false},
    {"log-level", "FS_LOG_LEVEL", CFG_STRING, "info", 1, 16, O(log_level),
     "debug, info, warn or error (debug: one line per request)", false},
    {0},
};
#undef O

static const char SUMMARY[] =
    "FraudShield ingest: HTTP API -> Kafka raw_payments (202 once the broker has the payment).\n"
    "librdkafka properties pass through with -X name=value or KAFKA_NAME=value.";

typedef struct signal_ctx {
    ingest *ing;
    struct event_base *base;
    int stops; /* SIGTERM/SIGINT seen */
} signal_ctx;

/* Reads the secret file: at most PII_SECRET_MAX bytes, trailing CR/LF dropped (so `openssl rand
 * -hex 32 > file` works). Returns a malloc'd buffer the caller wipes and frees, or NULL. */
static unsigned char *secret_file_read(const char *path, size_t *len, char *errstr, size_t n) {
    unsigned char *buf = NULL;
    struct stat st;
    ssize_t got = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(errstr, n, "pii-secret-file %s: %s", path, strerror(errno));
        goto done;
    }
    if (st.st_mode & 077)
        log_msg(LOG_WARN, "pii_secret_permissions", "%s is readable by group or others", path);
    buf = malloc(PII_SECRET_MAX + 1);
    if (buf) got = read(fd, buf, PII_SECRET_MAX + 1);
    if (got < 0 || got > PII_SECRET_MAX) {
        snprintf(errstr, n, "pii-secret-file %s: unreadable or larger than %d bytes", path,
                 PII_SECRET_MAX);
        free(buf);
        buf = NULL;
        goto done;
    }
    while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == '\r')) got--;
    *len = (size_t)got;
done:
    if (fd >= 0) close(fd);
    return buf;
}

/* The pseudonymization secret from the file, the option, or (development only) the fixed one. */
static unsigned char *pii_secret_load(const ingest_opts *o, size_t *len, char *errstr, size_t n) {
    unsigned char *secret = NULL;
    if (o->pii_secret_file[0] && o->pii_secret[0]) {
        snprintf(errstr, n, "give pii-secret-file or pii-secret, not both");
    } else if (o->pii_secret_file[0]) {
        secret = secret_file_read(o->pii_secret_file, len, errstr, n);
    } else if (o->pii_secret[0]) {
        *len = strlen(o->pii_secret);
        secret = (unsigned char *)strdup(o->pii_secret);
    } else if (o->dev_insecure_pii_secret) {
        log_msg(LOG_WARN, "insecure_pii_secret",
                "USING THE PUBLIC DEVELOPMENT PII SECRET: digests of emails, IPs, cards and devices "
                "can be reversed by anyone. Never run like this with real data.");
        *len = strlen(PII_DEV_SECRET);
        secret = (unsigned char *)strdup(PII_DEV_SECRET);
    } else {
        snprintf(errstr, n, "no PII secret: set pii-secret-file (FS_PII_SECRET_FILE) or pii-secret "
                            "(FS_PII_SECRET); --dev-insecure-pii-secret=true for development only");
    }
    if (secret && *len < PII_SECRET_MIN) {
        snprintf(errstr, n, "the PII secret must be at least %d bytes", PII_SECRET_MIN);
        explicit_bzero(secret, *len);
        free(secret);
        secret = NULL;
    }
    return secret;
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    signal_ctx *sc = arg;
    (void)what;
    if (sig == SIGHUP) {
        log_msg(LOG_WARN, "sighup", "reload not yet supported");
        return;
    }
    if (++sc->stops == 1) {
        log_msg(LOG_INFO, "shutdown", "%s: shutting down gracefully", strsignal((int)sig));
        ingest_drain(sc->ing);
    } else {
        log_msg(LOG_WARN, "shutdown_forced", "second signal: exiting without waiting");
        event_base_loopbreak(sc->base);
    }
}

static void log_counters(const ingest *ing) {
    ingest_counters c;
    ingest_counters_get(ing, &c);
    log_fields(LOG_INFO, "stopped",
               json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "requests", (json_int_t)c.requests,
                         "accepted", (json_int_t)c.accepted, "client_errors",
                         (json_int_t)c.client_errors, "unavailable", (json_int_t)c.unavailable,
                         "server_errors", (json_int_t)c.server_errors, "delivery_failures",
                         (json_int_t)c.delivery_failures, "in_flight", (json_int_t)c.in_flight),
               "stopped after %" PRIu64 " requests (%" PRIu64 " accepted)", c.requests, c.accepted);
}

static ingest_config ingest_config_from(const ingest_opts *o, const cfg_props *props,
                                        const unsigned char *secret, size_t secret_len) {
    ingest_config c = {
        .listen_addr = o->listen_addr,
        .listen_port = (int)o->listen_port,
        .brokers = o->brokers,
        .topic = o->topic,
        .props = props,
        .max_body_bytes = (size_t)o->max_body_bytes,
        .retry_after_seconds = (int)o->retry_after_seconds,
        .startup_timeout_ms = (int)o->startup_timeout_ms,
        .shutdown_timeout_ms = (int)o->shutdown_timeout_ms,
        .pii_secret = secret,
        .pii_secret_len = secret_len,
        .pii = {(uint32_t)o->pii_t_cost, (uint32_t)o->pii_m_cost_kib, (size_t)o->pii_cache_entries},
    };
    return c;
}

/* Runs the server until a signal ends it. Returns the exit status. */
static int run(const ingest_opts *o, const cfg_props *props) {
    static const int SIGNALS[] = {SIGTERM, SIGINT, SIGHUP};
    struct event *sigev[3] = {0};
    char errstr[512];
    size_t secret_len = 0;
    int rc = 1;
    signal_ctx sc = {0};
    unsigned char *secret = pii_secret_load(o, &secret_len, errstr, sizeof errstr);
    if (!secret) goto failed;
    ingest_config cfg = ingest_config_from(o, props, secret, secret_len);
    sc.base = event_base_new();
    if (!sc.base) {
        snprintf(errstr, sizeof errstr, "event_base_new failed");
        goto failed;
    }
    sc.ing = ingest_new(sc.base, &cfg, errstr, sizeof errstr); /* copies the secret */
    if (!sc.ing) goto failed;
    for (int i = 0; i < 3; i++) {
        sigev[i] = evsignal_new(sc.base, SIGNALS[i], on_signal, &sc);
        if (!sigev[i] || evsignal_add(sigev[i], NULL) != 0) {
            snprintf(errstr, sizeof errstr, "cannot install signal handlers");
            goto failed;
        }
    }
    event_base_dispatch(sc.base);
    log_counters(sc.ing);
    rc = 0;
failed:
    if (rc) log_msg(LOG_ERROR, "startup_failed", "%s", errstr);
    for (int i = 0; i < 3; i++)
        if (sigev[i]) event_free(sigev[i]);
    ingest_destroy(sc.ing);
    if (sc.base) event_base_free(sc.base);
    if (secret) explicit_bzero(secret, secret_len);
    free(secret);
    return rc;
}

int main(int argc, char **argv) {
    ingest_opts o = {0};
    cfg_props props = {0};
    char errstr[512];
    log_level level;
    int rc = 1;
    log_init("ingest", LOG_INFO);
    signal(SIGPIPE, SIG_IGN); /* a client that vanished must not kill us on write */
    cfg_result r = cfg_parse(ingest_options, &o, &props, argc, argv, "fraudshield-ingest", SUMMARY,
                             errstr, sizeof errstr);
    if (r == CFG_HELP) {
        rc = 0;
    } else if (r == CFG_ERROR) {
        log_msg(LOG_ERROR, "config_invalid", "%s", errstr);
    } else if (log_level_parse(o.log_level, &level) != 0) {
        log_msg(LOG_ERROR, "config_invalid", "log-level: unknown level %s", o.log_level);
    } else {
        log_init("ingest", level);
        cfg_log(ingest_options, &o, &props);
        rc = run(&o, &props);
    }
    cfg_free(ingest_options, &o, &props);
    return rc;
}
