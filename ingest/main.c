/* fraudshield-ingest: configuration, start-up, signals, shutdown. The data path is in ingest.c.
 *
 * Signals (handled in the event loop by libevent, never in a raw handler):
 *   SIGTERM, SIGINT  graceful: stop accepting connections, let in-flight requests get their delivery
 *                    reports (up to shutdown-timeout-ms; those still waiting then get 503, see
 *                    on_drain_timeout in ingest.c), exit 0. A second one exits at once.
 *   SIGHUP           reloads the API keys file, the Shopify secrets, the TLS certificate and the
 *                    PII secret; a file that does not load is logged and the previous version stays
 *                    in force. A new PII secret changes every digest from then on (a rotation,
 *                    docs/operations.md): it is logged as pii_key_changed with both key ids.
 * Not a signal but the same drain: a fatal producer error (producer_fatal in ingest.c) stops ingest
 * as SIGTERM does, then it exits 1 (fatal_exit_status) to be restarted with a new producer.
 *
 * Subcommand: `fraudshield-ingest keys create --id ID --scopes a,b [--rate N] [--keys-file PATH]`
 * appends a new API key's hashed entry to the keys file and prints the key, once. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "cfg.h"
#include "db.h"
#include "fsutil.h"
#include "ingest.h"
#include "keys.h"
#include "kafka.h"
#include "log.h"
#include "shopify.h"

#define PII_SECRET_MIN 16
#define PII_SECRET_MAX 4096
/* Development only (--dev-insecure-pii-secret=true): anyone can recompute digests made with it. */
#define PII_DEV_SECRET "fraudshield-dev-insecure-pii-secret-do-not-use"

typedef struct ingest_opts {
    char *listen_addr;
    int64_t listen_port;
    int64_t tls_port;
    char *admin_addr;
    int64_t admin_port;
    char *tls_cert_file;
    char *tls_key_file;
    char *brokers;
    char *topic;
    char *outcomes_topic;
    int64_t max_body_bytes;
    int64_t batch_max;
    int64_t batch_max_body_bytes;
    int64_t max_header_bytes;
    int64_t max_connections;
    int64_t request_timeout_ms;
    int64_t io_timeout_ms;
    bool client_close_check;
    bool auth;
    char *keys_file;
    int64_t key_cache_slots;
    char *shopify_secrets_file;
    char *shopify_secrets;
    int64_t worker_threads;
    int64_t worker_queue;
    int64_t auth_verify_rate, auth_max_pending;
    char *database_url;
    int64_t read_pool_size;
    int64_t read_timeout_ms;
    int64_t recent_ids;
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
    {"tls-port", "FS_TLS_PORT", CFG_INT, "-1", -1, 65535, O(tls_port),
     "HTTPS listen port on listen-addr (-1: no TLS listener; 0: any free port, logged)", false},
    {"admin-addr", "FS_ADMIN_ADDR", CFG_STRING, "127.0.0.1", 1, 255, O(admin_addr),
     "address of the admin listener (admin-port)", false},
    {"admin-port", "FS_ADMIN_PORT", CFG_INT, "-1", -1, 65535, O(admin_port),
     "port of a separate admin listener for /health, /ready and /metrics, which the API ports then "
     "answer with 404 (-1: served on the API ports; 0: any free port, logged)", false},
    {"tls-cert-file", "FS_TLS_CERT_FILE", CFG_STRING, "", 0, 4096, O(tls_cert_file),
     "PEM certificate chain of the TLS listener (reloaded on SIGHUP)", false},
    {"tls-key-file", "FS_TLS_KEY_FILE", CFG_STRING, "", 0, 4096, O(tls_key_file),
     "PEM private key of the TLS listener (reloaded on SIGHUP)", false},
    {"brokers", "FS_BROKERS", CFG_STRING, "localhost:9092", 1, 4096, O(brokers),
     "Kafka bootstrap servers (host:port,...)", false},
    {"topic", "FS_TOPIC", CFG_STRING, "raw_payments", 1, 249, O(topic),
     "topic the payments are produced to", false},
    {"outcomes-topic", "FS_OUTCOMES_TOPIC", CFG_STRING, "payment_outcomes", 1, 249,
     O(outcomes_topic), "topic the outcome labels are produced to", false},
    {"max-body-bytes", "FS_MAX_BODY_BYTES", CFG_INT, "65536", 1024, 16777216, O(max_body_bytes),
     "largest accepted request body (one payment, an outcome); larger: 413", false},
    {"batch-max", "FS_BATCH_MAX", CFG_INT, "1000", 1, 100000, O(batch_max),
     "payments per batch request; more: 413", false},
    {"batch-max-body-bytes", "FS_BATCH_MAX_BODY_BYTES", CFG_INT, "4194304", 1024, 67108864,
     O(batch_max_body_bytes), "largest batch or webhook body; larger: 413", false},
    {"max-header-bytes", "FS_MAX_HEADER_BYTES", CFG_INT, "16384", 1024, 1048576,
     O(max_header_bytes), "largest request line + headers; larger: the connection is refused",
     false},
    {"max-connections", "FS_MAX_CONNECTIONS", CFG_INT, "1000", 1, 1000000, O(max_connections),
     "open connections; at the limit, accepting pauses until one closes", false},
    {"request-timeout-ms", "FS_REQUEST_TIMEOUT_MS", CFG_INT, "10000", 100, 3600000,
     O(request_timeout_ms),
     "a connection must deliver a complete request (TLS handshake, headers, body) within this, "
     "and the next one within this of the previous answer; else it is closed", false},
    {"io-timeout-ms", "FS_IO_TIMEOUT_MS", CFG_INT, "10000", 100, 3600000, O(io_timeout_ms),
     "a connection that makes no read or write progress for this long is closed", false},
    {"client-close-check", "FS_CLIENT_CLOSE_CHECK", CFG_BOOL, "true", 0, 0, O(client_close_check),
     "every second, close the connections whose client closed them (FIN or RST) while their "
     "request waits (Argon2, the broker, PostgreSQL): fs_ingest_clients_gone_total; what the "
     "request started still finishes. A client that half-closes (shutdown(SHUT_WR)) after its "
     "request and still reads the answer looks the same: false for such clients", false},
    {"auth", "FS_AUTH", CFG_BOOL, "true", 0, 0, O(auth),
     "require API keys (false: development only, logged loudly)", false},
    {"keys-file", "FS_KEYS_FILE", CFG_STRING, "", 0, 4096, O(keys_file),
     "API keys file (key id, scopes, rate, Argon2id hash; reloaded on SIGHUP)", false},
    {"key-cache-slots", "FS_KEY_CACHE_SLOTS", CFG_INT, "4096", 16, 16777216, O(key_cache_slots),
     "verified API key cache size", false},
    {"shopify-secrets-file", "FS_SHOPIFY_SECRETS_FILE", CFG_STRING, "", 0, 4096,
     O(shopify_secrets_file), "Shopify webhook secrets, one '<shop domain> <secret>' per line "
     "(reloaded on SIGHUP)", false},
    {"shopify-secrets", "FS_SHOPIFY_SECRETS", CFG_STRING, "", 0, 65536, O(shopify_secrets),
     "Shopify webhook secrets as domain=secret,domain=secret", true},
    {"worker-threads", "FS_WORKER_THREADS", CFG_INT, "2", 1, 64, O(worker_threads),
     "threads for Argon2 (API keys and identifiers not yet cached)", false},
    {"worker-queue", "FS_WORKER_QUEUE", CFG_INT, "10000", 1, 10000000, O(worker_queue),
     "Argon2 tasks that may wait for a thread; more: 503", false},
    {"auth-verify-rate", "FS_AUTH_VERIFY_RATE", CFG_INT, "2", 0, 1000, O(auth_verify_rate),
     "API key secrets not yet verified that one key id may have checked per second (each costs "
     "an Argon2 run; beyond: 429 without one, so that guessing at a key id cannot queue work "
     "for the workers; 0: unlimited)", false},
    {"auth-max-pending", "FS_AUTH_MAX_PENDING", CFG_INT, "16", 1, 10000, O(auth_max_pending),
     "API key verifications queued or running at once over all key ids; beyond: 503 overloaded "
     "(the workers' queue stays free for pseudonymizing)", false},
    {"database-url", "FS_DATABASE_URL", CFG_STRING, "", 0, 4096, O(database_url),
     "PostgreSQL URL for GET /api/v1/payments/{id} (empty: that route answers 503)", true},
    {"read-pool-size", "FS_READ_POOL_SIZE", CFG_INT, "2", 1, 16, O(read_pool_size),
     "PostgreSQL connections of the read API", false},
    {"read-timeout-ms", "FS_READ_TIMEOUT_MS", CFG_INT, "2000", 100, 600000, O(read_timeout_ms),
     "a payment lookup not answered within this gets 503", false},
    {"recent-ids", "FS_RECENT_IDS", CFG_INT, "65536", 2, 100000000, O(recent_ids),
     "accepted payment ids remembered to answer 'pending' before a scorer stores them", false},
    {"retry-after-seconds", "FS_RETRY_AFTER_SECONDS", CFG_INT, "1", 1, 3600,
     O(retry_after_seconds), "Retry-After of 503 answers", false},
    {"startup-timeout-ms", "FS_STARTUP_TIMEOUT_MS", CFG_INT, "10000", 100, 600000,
     O(startup_timeout_ms), "brokers must answer and the topic exist within this at start-up",
     false},
    {"shutdown-timeout-ms", "FS_SHUTDOWN_TIMEOUT_MS", CFG_INT, "10000", 0, 600000,
     O(shutdown_timeout_ms), "on SIGTERM, how long in-flight requests may wait (Argon2, "
     "PostgreSQL, the broker); those still waiting then get 503",
     false},
    {"pii-secret-file", "FS_PII_SECRET_FILE", CFG_STRING, "", 0, 4096, O(pii_secret_file),
     "file holding the pseudonymization secret (>= 16 bytes; trailing newlines ignored; reloaded "
     "on SIGHUP: a new secret is a rotation, docs/operations.md)", false},
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
    "librdkafka properties pass through with -X name=value or KAFKA_NAME=value.\n"
    "API keys: fraudshield-ingest keys create --id ID --scopes payments:write[,...] [--rate N] "
    "--keys-file FILE";

typedef struct signal_ctx {
    ingest *ing;
    struct event_base *base;
    const ingest_opts *opts;
    int stops; /* SIGTERM/SIGINT seen */
} signal_ctx;

/* Warns when the secret file is open to more than this process (fs_secret_file_exposure: a group
 * that is the process's own may read it, as Kubernetes mounts secrets with fsGroup). */
static void secret_file_check(const char *path, const struct stat *st) {
    char mode[8];
    const char *why = fs_secret_file_exposure(st);
    if (!why) return;
    snprintf(mode, sizeof mode, "%04o", (unsigned)(st->st_mode & 07777));
    log_fields(LOG_WARN, "pii_secret_permissions",
               json_pack("{s:s, s:s, s:I}", "path", path, "mode", mode, "gid", (json_int_t)st->st_gid),
               "%s is %s (mode %s): the PII secret should be readable by this process's user "
               "or group only", path, why, mode);
}

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
    secret_file_check(path, &st);
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

/* The API keys (NULL with errstr on a bad file; an empty keys-file: an empty set). */
static keys *keys_from(const ingest_opts *o, char *errstr, size_t n) {
    if (o->keys_file[0]) return keys_load(o->keys_file, errstr, n);
    return keys_load_text("", errstr, n);
}

/* SIGHUP: the PII secret again (a rotation, when it changed). */
static void reload_pii(signal_ctx *sc) {
    char errstr[512];
    size_t len = 0;
    unsigned char *secret = pii_secret_load(sc->opts, &len, errstr, sizeof errstr);
    if (!secret || ingest_rekey(sc->ing, secret, len, errstr, sizeof errstr) != 0)
        log_msg(LOG_ERROR, "reload_failed", "PII secret not reloaded (the current one stays): %s",
                errstr);
    if (secret) explicit_bzero(secret, len);
    free(secret);
}

/* SIGHUP: everything loads, or the failing part is logged and keeps its current version. */
static void reload(signal_ctx *sc) {
    char errstr[512];
    reload_pii(sc);
    keys *k = keys_from(sc->opts, errstr, sizeof errstr);
    if (!k) log_msg(LOG_ERROR, "reload_failed", "API keys not reloaded: %s", errstr);
    shopify *s = shopify_load(sc->opts->shopify_secrets_file, sc->opts->shopify_secrets, errstr,
                              sizeof errstr);
    if (!s) log_msg(LOG_ERROR, "reload_failed", "Shopify secrets not reloaded: %s", errstr);
    if (ingest_reload(sc->ing, k, s, errstr, sizeof errstr) != 0) /* takes k and s */
        log_msg(LOG_ERROR, "reload_failed", "%s", errstr);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    signal_ctx *sc = arg;
    (void)what;
    if (sig == SIGHUP) {
        log_msg(LOG_INFO, "sighup",
                "reloading the PII secret, API keys, Shopify secrets and TLS files");
        reload(sc);
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
               json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "payments_accepted",
                         (json_int_t)c.payments_accepted, "requests", (json_int_t)c.requests,
                         "accepted", (json_int_t)c.accepted, "client_errors",
                         (json_int_t)c.client_errors, "unavailable", (json_int_t)c.unavailable,
                         "server_errors", (json_int_t)c.server_errors, "delivery_failures",
                         (json_int_t)c.delivery_failures, "in_flight", (json_int_t)c.in_flight),
               "stopped after %" PRIu64 " requests (%" PRIu64 " accepted)", c.requests, c.accepted);
}

/* 0, or 1 after a fatal producer error (the drain it started has ended the loop): exiting 1 gets
 * the process restarted with a new producer, as the scorer and the alerter are on theirs. */
static int fatal_exit_status(const ingest *ing) {
    const char *fatal = ingest_fatal_error(ing);
    if (!fatal) return 0;
    log_fields(LOG_ERROR, "fatal_exit", json_pack("{s:s}", "error", fatal),
               "exit status 1: the Kafka producer hit a fatal error and never delivers again (a "
               "restart gets a new one)");
    return 1;
}

static ingest_config ingest_config_from(const ingest_opts *o, const cfg_props *props,
                                        const unsigned char *secret, size_t secret_len) {
    ingest_config c = {
        .listen_addr = o->listen_addr,
        .listen_port = (int)o->listen_port,
        .tls_port = (int)o->tls_port,
        .admin_addr = o->admin_addr,
        .admin_port = (int)o->admin_port,
        .tls_cert_file = o->tls_cert_file,
        .tls_key_file = o->tls_key_file,
        .brokers = o->brokers,
        .topic = o->topic,
        .outcomes_topic = o->outcomes_topic,
        .props = props,
        .max_body_bytes = (size_t)o->max_body_bytes,
        .batch_max_items = (size_t)o->batch_max,
        .batch_max_body_bytes = (size_t)o->batch_max_body_bytes,
        .max_header_bytes = (size_t)o->max_header_bytes,
        .max_connections = (size_t)o->max_connections,
        .request_timeout_ms = (int)o->request_timeout_ms,
        .io_timeout_ms = (int)o->io_timeout_ms,
        .client_close_check = o->client_close_check,
        .worker_threads = (int)o->worker_threads,
        .worker_queue = (size_t)o->worker_queue,
        .auth_verify_rate = (uint32_t)o->auth_verify_rate,
        .auth_max_pending = (int)o->auth_max_pending,
        .auth = o->auth,
        .key_cache_slots = (size_t)o->key_cache_slots,
        .database_url = o->database_url,
        .read_pool_size = (int)o->read_pool_size,
        .read_timeout_ms = (int)o->read_timeout_ms,
        .recent_ids = (size_t)o->recent_ids,
        .retry_after_seconds = (int)o->retry_after_seconds,
        .startup_timeout_ms = (int)o->startup_timeout_ms,
        .shutdown_timeout_ms = (int)o->shutdown_timeout_ms,
        .pii_secret = secret,
        .pii_secret_len = secret_len,
        .pii = {(uint32_t)o->pii_t_cost, (uint32_t)o->pii_m_cost_kib, (size_t)o->pii_cache_entries},
    };
    return c;
}

/* Settings that only make sense together. Returns 0 or -1 with errstr. */
static int opts_check(const ingest_opts *o, char *errstr, size_t n) {
    if (o->auth && !o->keys_file[0]) {
        snprintf(errstr, n, "auth is on but no keys-file is set: create a key with `fraudshield-ingest "
                 "keys create --keys-file FILE --id ID --scopes payments:write`, or set auth=false "
                 "(development only)");
        return -1;
    }
    if (o->tls_port >= 0 && (!o->tls_cert_file[0] || !o->tls_key_file[0])) {
        snprintf(errstr, n, "tls-port needs tls-cert-file and tls-key-file");
        return -1;
    }
    if (o->database_url[0] && db_url_check(o->database_url, errstr, n) != 0) return -1;
    return 0;
}

/* Every connection is a descriptor: lift the soft limit to what max-connections needs. */
static void fd_limit_raise(const ingest_opts *o) {
    struct rlimit rl;
    rlim_t want = (rlim_t)o->max_connections + 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        log_msg(LOG_WARN, "fd_limit", "open files limited to %lu: max-connections %" PRId64
                " may not be reached", (unsigned long)rl.rlim_cur, o->max_connections);
}

/* Runs the server until a signal ends it. Returns the exit status. */
/* The event loop. With epoll's changelist, libevent applies the interest changes of one loop
 * iteration in one epoll_ctl per descriptor: evhttp turns a connection's read and write
 * interest off and on around every request (4 epoll_ctl calls a request without it, 3 with it;
 * ~10 % of the loop's CPU under the single-payment benchmark). Its documented hazard is
 * descriptors cloned with dup(), which ingest never creates; a descriptor closed and reopened
 * under the same number (libpq's reconnects) is handled by libevent (MOD, then ADD on ENOENT). */
static struct event_base *loop_new(void) {
    struct event_config *ec = event_config_new();
    if (!ec) return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

static int run(const ingest_opts *o, const cfg_props *props) {
    static const int SIGNALS[] = {SIGTERM, SIGINT, SIGHUP};
    struct event *sigev[3] = {0};
    char errstr[512];
    size_t secret_len = 0;
    int rc = 1;
    signal_ctx sc = {.opts = o};
    unsigned char *secret = NULL;
    if (opts_check(o, errstr, sizeof errstr) != 0 || kafka_props_check(props, errstr, sizeof errstr) != 0)
        goto failed;
    fd_limit_raise(o);
    secret = pii_secret_load(o, &secret_len, errstr, sizeof errstr);
    if (!secret) goto failed;
    ingest_config cfg = ingest_config_from(o, props, secret, secret_len);
    cfg.keys = keys_from(o, errstr, sizeof errstr);
    if (!cfg.keys) goto failed;
    if (o->auth && keys_count(cfg.keys) == 0)
        log_msg(LOG_WARN, "no_api_keys", "%s has no key: every authenticated route answers 401",
                o->keys_file);
    cfg.shopify = shopify_load(o->shopify_secrets_file, o->shopify_secrets, errstr, sizeof errstr);
    if (!cfg.shopify) {
        keys_destroy(cfg.keys);
        goto failed;
    }
    sc.base = loop_new();
    if (!sc.base) {
        snprintf(errstr, sizeof errstr, "event_base_new failed");
        keys_destroy(cfg.keys);
        shopify_destroy(cfg.shopify);
        goto failed;
    }
    /* ingest_new() may wait startup-timeout-ms for the brokers: meanwhile the plain handlers set
     * flags (SIGHUP's default action would end the process; a SIGTERM ends the wait, see
     * kafka_wait_topics), and what arrived is served by the loop's handlers once they are in. */
    app_signals_install();
    sc.ing = ingest_new(sc.base, &cfg, errstr, sizeof errstr); /* copies the secret, takes keys */
    explicit_bzero(secret, secret_len); /* ingest has its copy; after a rotation (SIGHUP) the old */
    free(secret);                       /* secret must not linger here */
    secret = NULL;
    if (!sc.ing && atomic_load(&app_stop_requested)) {
        log_msg(LOG_INFO, "stopped_during_startup", "stopped during start-up (%s)", errstr);
        rc = 0;
        errstr[0] = '\0';
    }
    if (!sc.ing) goto failed;
    for (int i = 0; i < 3; i++) {
        sigev[i] = evsignal_new(sc.base, SIGNALS[i], on_signal, &sc);
        if (!sigev[i] || evsignal_add(sigev[i], NULL) != 0) {
            snprintf(errstr, sizeof errstr, "cannot install signal handlers");
            goto failed;
        }
    }
    /* arrived during start-up: now the loop's to serve */
    if (atomic_load(&app_stop_requested)) raise(SIGTERM);
    if (atomic_load(&app_reload_requested)) raise(SIGHUP);
    event_base_dispatch(sc.base);
    log_counters(sc.ing);
    rc = fatal_exit_status(sc.ing);
    errstr[0] = '\0'; /* not a start-up failure */
failed:
    if (rc && errstr[0]) log_msg(LOG_ERROR, "startup_failed", "%s", errstr);
    for (int i = 0; i < 3; i++)
        if (sigev[i]) event_free(sigev[i]);
    ingest_destroy(sc.ing);
    if (sc.base) event_base_free(sc.base);
    if (secret) explicit_bzero(secret, secret_len);
    free(secret);
    return rc;
}

/* `fraudshield-ingest keys create --id ID --scopes a,b [--rate N] [--keys-file PATH]` */
static int keys_command(int argc, char **argv) {
    const char *id = NULL, *scopes_s = NULL, *path = getenv("FS_KEYS_FILE");
    char key[KEYS_PRESENTED_MAX + 1], errstr[512];
    unsigned scopes = 0;
    uint32_t rate = 0;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--id")) id = argv[i + 1];
        else if (!strcmp(argv[i], "--scopes")) scopes_s = argv[i + 1];
        else if (!strcmp(argv[i], "--rate") && keys_parse_rate(argv[i + 1], &rate) != 0) {
            fprintf(stderr, "--rate: %s is not a whole number of requests per second in 0..%d "
                            "(0 = unlimited)\n", argv[i + 1], KEYS_RATE_MAX);
            return 2;
        } else if (!strcmp(argv[i], "--rate")) continue;
        else if (!strcmp(argv[i], "--keys-file")) path = argv[i + 1];
        else id = NULL, i = argc; /* unknown option: usage */
    }
    if (argc < 3 || strcmp(argv[2], "create") != 0 || argc % 2 == 0 || !id || !scopes_s ||
        !path || !path[0]) {
        char known[128];
        keys_scopes_format(KEYS_SCOPES_ALL, known, sizeof known);
        fprintf(stderr, "usage: fraudshield-ingest keys create --id ID --scopes SCOPE[,SCOPE...] "
                        "[--rate REQUESTS_PER_S (0 = unlimited)] [--keys-file PATH (or FS_KEYS_FILE)]\n"
                        "scopes: %s\n"
                        "  payments:read reads the key's own payments (those it posted); "
                        "payments:read_all reads every payment (back office)\n", known);
        return 2;
    }
    if (keys_scopes_parse(scopes_s, &scopes, errstr, sizeof errstr) != 0 ||
        keys_create(path, id, scopes, rate, key, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "fraudshield-ingest keys create: %s\n", errstr);
        return 1;
    }
    printf("%s\n", key);
    fprintf(stderr, "created API key %s in %s (shown once: store it now; send it as X-API-Key or "
                    "Authorization: Bearer; running ingests pick it up on SIGHUP)\n", id, path);
    explicit_bzero(key, sizeof key);
    return 0;
}

int main(int argc, char **argv) {
    ingest_opts o = {0};
    cfg_props props = {0};
    int rc = 1;
    if (argc >= 2 && strcmp(argv[1], "keys") == 0) return keys_command(argc, argv);
    signal(SIGPIPE, SIG_IGN); /* a client that vanished must not kill us on write; SIGTERM and
                               * SIGHUP are the event loop's (run) */
    /* Argon2 allocates its memory on the worker threads: 4 MiB per digest, 19 MiB per API key
     * check. By default glibc raises its mmap threshold to the size of the first such block freed,
     * after which the 19 MiB blocks come from the workers' heaps and stay resident: ~40 MB of RSS
     * held for nothing (BENCHMARKS.md, memory). Fixed thresholds: blocks above 8 MiB are mmap'd
     * and returned at free(); the 4 MiB ones stay in the heaps for the next digest (mmap'ing them
     * each time made every Argon2 run ~35% slower: page faults). */
    mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
    cfg_result r = app_configure("ingest", ingest_options, &o, &props, argc, argv,
                                 "fraudshield-ingest", SUMMARY);
    if (r == CFG_OK) rc = run(&o, &props);
    else if (r == CFG_HELP) rc = 0;
    cfg_free(ingest_options, &o, &props);
    return rc;
}
