/* delivery: webhook and email transfers on libcurl's multi interface (see delivery.h). */
#include "delivery.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "fsutil.h"
#include "log.h"
#include "retry.h"

#define SNIPPET_MAX 160 /* bytes of a failed answer's body kept for the delivery log */

/* One running transfer: everything libcurl points into lives here until it is finished. */
typedef struct transfer {
    CURL *easy;
    struct curl_slist *headers; /* webhook: request headers; email: recipients */
    char *body;
    size_t len, sent;           /* email: upload position */
    char errbuf[CURL_ERROR_SIZE];
    char retry_after[64];
    char snippet[SNIPPET_MAX + 1];
    size_t snippet_len;
    int64_t start_us;
    const netguard *guard;      /* webhooks: the engine's deny list; NULL: email (not checked) */
    int n_opened, n_denied;     /* sockets made / addresses refused by the guard */
    char denied[NETGUARD_ADDR_MAX]; /* the first address refused */
    char host[256];             /* webhooks: the URL's host, for the address_denied error */
    void *opaque;
    struct transfer *prev, *next;
} transfer;

typedef struct result_node {
    delivery_result r;
    struct result_node *next;
} result_node;

struct delivery_engine {
    CURLM *multi;
    delivery_config cfg;    /* strings owned (copies); deny_networks NULL: parsed into guard */
    netguard *guard;
    transfer *running;      /* doubly linked: finished ones are unlinked in O(1) */
    size_t n_running;
    result_node *done_head, *done_tail;
};

/* ---- signatures ------------------------------------------------------------------------------ */

/* prefix + lower-case hex of HMAC-SHA256(secret, parts joined by "."); an unverifiable all-zero
 * signature when out of memory (the receiver rejects it) rather than a crash. */
static void sign_parts(const char *secret, const char *prefix, const char *const *parts,
                       const size_t *lens, size_t nparts, char *out) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t plen = strlen(prefix), total = 0, at = 0;
    for (size_t i = 0; i < nparts; i++) total += lens[i] + 1;
    unsigned char *msg = malloc(total + 1);
    memcpy(out, prefix, plen + 1);
    if (!msg) {
        memset(out + plen, '0', 64);
        out[plen + 64] = '\0';
        return;
    }
    for (size_t i = 0; i < nparts; i++) {
        if (i) msg[at++] = '.';
        if (lens[i]) memcpy(msg + at, parts[i], lens[i]);
        at += lens[i];
    }
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, at, mac, &mac_len);
    free(msg);
    fs_hex(mac, mac_len, out + plen);
}

void delivery_sign(const char *secret, const char *timestamp, const void *body, size_t len,
                   char out[DELIVERY_SIG_LEN + 1]) {
    const char *parts[] = {timestamp, body};
    size_t lens[] = {strlen(timestamp), len};
    sign_parts(secret, "sha256=", parts, lens, 2, out);
}

void delivery_sign_v2(const char *secret, const char *timestamp, const char *delivery_id,
                      const char *event_type, const void *body, size_t len,
                      char out[DELIVERY_SIG_V2_LEN + 1]) {
    const char *parts[] = {timestamp, delivery_id, event_type, body};
    size_t lens[] = {strlen(timestamp), strlen(delivery_id), strlen(event_type), len};
    sign_parts(secret, "v2=", parts, lens, 4, out);
}

/* ---- the engine -------------------------------------------------------------------------------- */

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

delivery_engine *delivery_new(const delivery_config *cfg, char *errstr, size_t errstr_size) {
    delivery_engine *e = calloc(1, sizeof *e);
    if (!e) goto oom;
    e->cfg = *cfg;
    e->cfg.ca_file = dup_or_empty(cfg->ca_file);
    e->cfg.user_agent = dup_or_empty(cfg->user_agent ? cfg->user_agent : "FraudShield-Alerter/1");
    e->cfg.smtp_from = dup_or_empty(cfg->smtp_from);
    e->cfg.smtp_user = dup_or_empty(cfg->smtp_user);
    e->cfg.smtp_password = dup_or_empty(cfg->smtp_password);
    e->cfg.deny_networks = NULL; /* parsed below: the engine keeps only the list */
    e->multi = curl_multi_init();
    if (!e->multi || !e->cfg.ca_file || !e->cfg.user_agent || !e->cfg.smtp_from ||
        !e->cfg.smtp_user || !e->cfg.smtp_password)
        goto oom;
    if (!(e->guard = netguard_new(cfg->deny_networks ? cfg->deny_networks : "", errstr, errstr_size)))
        goto failed;
    return e;
oom:
    snprintf(errstr, errstr_size, "delivery engine: out of memory");
failed:
    delivery_destroy(e);
    return NULL;
}

static void transfer_free(transfer *t) {
    if (!t) return;
    if (t->easy) curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    free(t->body);
    free(t);
}

static void push_result(delivery_engine *e, result_node *n) {
    n->next = NULL;
    if (e->done_tail) e->done_tail->next = n;
    else e->done_head = n;
    e->done_tail = n;
}

/* Keeps the error printable ASCII: it goes to logs and to a PostgreSQL text column. */
static void sanitize(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) *s = ' ';
}

/* Every address libcurl tried was refused by the guard: the error says so (and where the URL's host
 * led), rather than libcurl's "Couldn't connect to server". */
static void result_denied(const transfer *t, delivery_result *r) {
    const char *host = t->host[0] ? t->host : "?";
    r->address_denied = true;
    snprintf(r->denied_address, sizeof r->denied_address, "%s", t->denied);
    snprintf(r->error, sizeof r->error, "address_denied: %s (host %.128s%s) is in webhook-deny-networks: not connected",
             t->denied, host, t->n_denied > 1 ? "; its other addresses too" : "");
}

/* The result of a finished (or never started) transfer; unlinks and frees t. */
static void finish(delivery_engine *e, transfer *t, CURLcode rc) {
    result_node *n = calloc(1, sizeof *n);
    delivery_result *r = n ? &n->r : NULL;
    if (r) {
        r->opaque = t->opaque;
        r->latency_us = fs_mono_us() - t->start_us;
        r->retry_after_ms = -1;
        if (t->easy) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r->status);
        r->answered = rc == CURLE_OK;
        if (rc != CURLE_OK && t->n_denied > 0 && t->n_opened == 0) {
            result_denied(t, r);
        } else if (rc != CURLE_OK) {
            snprintf(r->error, sizeof r->error, "%s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
        } else if (retry_classify(1, r->status) != RETRY_DONE) {
            snprintf(r->error, sizeof r->error, "status %ld%s%.*s", r->status,
                     t->snippet_len ? ": " : "", (int)t->snippet_len, t->snippet);
        }
        if (t->retry_after[0]) {
            int64_t ms;
            if (retry_parse_after(t->retry_after, fs_now_ms(), &ms) == 0) r->retry_after_ms = ms;
        }
        sanitize(r->error);
        push_result(e, n);
    } else {
        log_msg(LOG_ERROR, "out_of_memory", "dropping a delivery result (its lease will expire)");
    }
    if (t->prev) t->prev->next = t->next;
    else if (e->running == t) e->running = t->next;
    if (t->next) t->next->prev = t->prev;
    if (t->easy && e->multi) curl_multi_remove_handle(e->multi, t->easy);
    e->n_running--;
    transfer_free(t);
}

/* ---- callbacks ----------------------------------------------------------------------------- */

/* Keeps the start of the answer's body (for the delivery log when it is an error). */
static size_t on_body(char *data, size_t size, size_t nmemb, void *arg) {
    transfer *t = arg;
    size_t n = size * nmemb, room = SNIPPET_MAX - t->snippet_len;
    if (room > 0) {
        size_t k = n < room ? n : room;
        memcpy(t->snippet + t->snippet_len, data, k);
        t->snippet_len += k;
        t->snippet[t->snippet_len] = '\0';
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg) {
    transfer *t = arg;
    size_t n = size * nmemb;
    static const char NAME[] = "Retry-After:";
    if (n > sizeof NAME - 1 && strncasecmp(data, NAME, sizeof NAME - 1) == 0) {
        size_t vlen = n - (sizeof NAME - 1);
        if (vlen >= sizeof t->retry_after) vlen = sizeof t->retry_after - 1;
        memcpy(t->retry_after, data + sizeof NAME - 1, vlen);
        t->retry_after[vlen] = '\0';
    }
    return n;
}

/* Each address libcurl is about to connect to, after DNS (so also one a name resolves, or rebinds,
 * to): one in the deny list gets no socket, and libcurl goes on with the next address, if any.
 * Another family than IPv4/IPv6 is refused too: none is expected, none passes unchecked. */
static curl_socket_t on_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a) {
    transfer *t = arg;
    bool ip = a->family == AF_INET || a->family == AF_INET6;
    if (purpose == CURLSOCKTYPE_IPCXN && (!ip || netguard_denies(t->guard, &a->addr, a->addrlen))) {
        if (t->n_denied++ == 0) netguard_addr_text(&a->addr, a->addrlen, t->denied, sizeof t->denied);
        return CURL_SOCKET_BAD;
    }
    t->n_opened++;
    return socket(a->family, a->socktype, a->protocol); /* what libcurl does without the callback */
}

/* Email upload: the message, then EOF. */
static size_t on_read(char *buf, size_t size, size_t nmemb, void *arg) {
    transfer *t = arg;
    size_t room = size * nmemb, left = t->len - t->sent, k = left < room ? left : room;
    memcpy(buf, t->body + t->sent, k);
    t->sent += k;
    return k;
}

/* ---- starting transfers ---------------------------------------------------------------------- */

/* Options every transfer shares: timeouts, TLS verification, no redirects, no signals. */
static CURLcode setup_common(delivery_engine *e, transfer *t, const delivery_request *req) {
    CURL *c = t->easy;
    const char *ca = req->ca_file && *req->ca_file ? req->ca_file : e->cfg.ca_file;
    CURLcode rc = curl_easy_setopt(c, CURLOPT_URL, req->url);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_PRIVATE, t);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_ERRORBUFFER, t->errbuf);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM resolver */
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, e->cfg.connect_timeout_ms);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, e->cfg.timeout_ms);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!rc && *ca) rc = curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    if (!rc) rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
    return rc;
}

/* A URL whose host is a literal denied address is refused before libcurl starts: through a proxy
 * (https_proxy in the environment) the connect-time check sees only the proxy's address. */
static CURLcode webhook_precheck(delivery_engine *e, transfer *t, const char *url) {
    if (netguard_url_host(url, t->host, sizeof t->host) != 0 ||
        !netguard_host_denied(e->guard, t->host, t->denied))
        return CURLE_OK;
    t->n_denied = 1;
    return CURLE_COULDNT_CONNECT;
}

static CURLcode setup_webhook(delivery_engine *e, transfer *t, const delivery_request *req) {
    CURLcode pre = webhook_precheck(e, t, req->url);
    if (pre != CURLE_OK) return pre;
    char ts[24], sig[DELIVERY_SIG_LEN + 1], sig2[DELIVERY_SIG_V2_LEN + 1], h[256];
    const char *secret = req->secret ? req->secret : "";
    snprintf(ts, sizeof ts, "%lld", (long long)(fs_now_ms() / 1000));
    delivery_sign(secret, ts, t->body, t->len, sig);
    delivery_sign_v2(secret, ts, req->delivery_id, req->event_type, t->body, t->len, sig2);
    const char *fixed[] = {"Content-Type: application/json", "Expect:", NULL};
    for (const char **f = fixed; *f; f++) t->headers = curl_slist_append(t->headers, *f);
#define HDR(...) (snprintf(h, sizeof h, __VA_ARGS__), t->headers = curl_slist_append(t->headers, h))
    HDR("X-FraudShield-Event: %s", req->event_type);
    HDR("X-FraudShield-Delivery: %s", req->delivery_id);
    HDR("X-FraudShield-Alert: %s", req->alert_id);
    HDR("X-FraudShield-Attempt: %d", req->attempt);
    HDR("X-FraudShield-Timestamp: %s", ts);
    HDR("X-FraudShield-Signature: %s", sig);
    HDR("X-FraudShield-Signature-V2: %s", sig2);
#undef HDR
    if (!t->headers) return CURLE_OUT_OF_MEMORY;
    CURLcode rc = curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, e->cfg.allow_http ? "http,https" : "https");
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_POST, 1L);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->len);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_USERAGENT, e->cfg.user_agent);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, on_header);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
    t->guard = e->guard;
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETDATA, t);
    return rc;
}

/* smtps:// is TLS from the start; smtp:// must upgrade with STARTTLS (only allow-insecure-http
 * lets it go on in clear text when the server offers none, and never with a login). */
static CURLcode setup_email(delivery_engine *e, transfer *t, const delivery_request *req) {
    char from[300];
    bool auth = e->cfg.smtp_user[0] != '\0';
    for (size_t i = 0; i < req->n_email_to; i++) {
        char rcpt[300];
        snprintf(rcpt, sizeof rcpt, "<%s>", req->email_to[i]);
        t->headers = curl_slist_append(t->headers, rcpt);
    }
    if (!t->headers) return CURLE_OUT_OF_MEMORY;
    snprintf(from, sizeof from, "<%s>", e->cfg.smtp_from);
    CURLcode rc = curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_MAIL_FROM, from);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_MAIL_RCPT, t->headers);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_UPLOAD, 1L);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_READFUNCTION, on_read);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_READDATA, t);
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)t->len);
    /* STARTTLS required: "when offered" would let anyone on the path strip the offer and read
     * the alert (ids, amounts); clear text only as webhooks get it, with allow-insecure-http */
    long ssl = auth || !e->cfg.allow_http ? (long)CURLUSESSL_ALL : (long)CURLUSESSL_TRY;
    if (!rc) rc = curl_easy_setopt(t->easy, CURLOPT_USE_SSL, ssl);
    if (!rc && auth) rc = curl_easy_setopt(t->easy, CURLOPT_USERNAME, e->cfg.smtp_user);
    if (!rc && auth) rc = curl_easy_setopt(t->easy, CURLOPT_PASSWORD, e->cfg.smtp_password);
    return rc;
}

int delivery_start(delivery_engine *e, const delivery_request *req) {
    transfer *t = calloc(1, sizeof *t);
    if (!t) return -1;
    t->opaque = req->opaque;
    t->start_us = fs_mono_us();
    t->len = req->body_len;
    t->body = malloc(req->body_len + 1); /* libcurl reads it until the transfer ends */
    t->easy = curl_easy_init();
    if (!t->body || !t->easy) {
        transfer_free(t);
        return -1;
    }
    memcpy(t->body, req->body, req->body_len);
    t->body[req->body_len] = '\0';
    t->next = e->running; /* linked first: finish() unlinks it whatever happens below */
    if (e->running) e->running->prev = t;
    e->running = t;
    e->n_running++;
    CURLcode rc = setup_common(e, t, req);
    if (!rc) rc = req->email ? setup_email(e, t, req) : setup_webhook(e, t, req);
    if (rc != CURLE_OK) {
        curl_easy_cleanup(t->easy); /* never added to the multi */
        t->easy = NULL;
        finish(e, t, rc);
        return 0;
    }
    if (curl_multi_add_handle(e->multi, t->easy) != CURLM_OK) {
        snprintf(t->errbuf, sizeof t->errbuf, "cannot add the transfer to the multi handle");
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
        finish(e, t, CURLE_FAILED_INIT);
    }
    return 0;
}

/* ---- running ------------------------------------------------------------------------------- */

static void collect(delivery_engine *e) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(e->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        transfer *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (t) finish(e, t, msg->data.result);
    }
}

void delivery_wait(delivery_engine *e, int timeout_ms, int extra_fd, bool *extra_ready) {
    struct curl_waitfd wfd = {.fd = extra_fd, .events = CURL_WAIT_POLLIN};
    int running = 0;
    if (extra_ready) *extra_ready = false;
    if (e->done_head) timeout_ms = 0; /* results are waiting to be read */
    curl_multi_poll(e->multi, extra_fd >= 0 ? &wfd : NULL, extra_fd >= 0 ? 1 : 0, timeout_ms, NULL);
    if (extra_ready && extra_fd >= 0) *extra_ready = (wfd.revents & CURL_WAIT_POLLIN) != 0;
    curl_multi_perform(e->multi, &running);
    collect(e);
}

bool delivery_next(delivery_engine *e, delivery_result *out) {
    result_node *n = e->done_head;
    if (!n) return false;
    e->done_head = n->next;
    if (!e->done_head) e->done_tail = NULL;
    *out = n->r;
    free(n);
    return true;
}

void delivery_abort_all(delivery_engine *e) {
    while (e->running) {
        snprintf(e->running->errbuf, sizeof e->running->errbuf, "aborted: the alerter is stopping");
        finish(e, e->running, CURLE_ABORTED_BY_CALLBACK);
    }
}

size_t delivery_in_flight(const delivery_engine *e) { return e->n_running; }

void delivery_wakeup(delivery_engine *e) { curl_multi_wakeup(e->multi); }

void delivery_destroy(delivery_engine *e) {
    if (!e) return;
    delivery_result r;
    if (e->multi) delivery_abort_all(e);
    while (delivery_next(e, &r)) continue; /* nobody will read them */
    if (e->multi) curl_multi_cleanup(e->multi);
    free((char *)e->cfg.ca_file);
    free((char *)e->cfg.user_agent);
    free((char *)e->cfg.smtp_from);
    free((char *)e->cfg.smtp_user);
    free((char *)e->cfg.smtp_password);
    netguard_destroy(e->guard);
    free(e);
}
