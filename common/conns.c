/* conns: connection tracking, limit and deadlines for evhttp (see conns.h).
 *
 * How a connection is tracked, given that libevent 2.1 offers no "connection opened" hook:
 *  1. bev_new() (evhttp's bevcb) creates the bufferevent, counts the connection, takes a reference
 *     on the bufferevent and activates the connection's timer event at top priority (0; everything
 *     else runs at 1), so it runs before any I/O of the new connection;
 *  2. conn_setup() finds the evhttp_connection libevent has meanwhile created around the
 *     bufferevent (it is the argument of the callbacks evhttp set on it), indexes it and registers
 *     a close callback, then arms the deadline;
 *  3. the close callback releases it. Should a connection ever be freed without the close callback
 *     (libevent skips it for a connection it considers disconnected), a sweep every second notices
 *     that bufferevent_free() cleared the callbacks of the bufferevent we still hold a reference
 *     on, and releases it then.
 *
 * With conns_set_close_check(), a client that leaves while its request waits (for the broker, say)
 * is noticed by the same sweep: evhttp stops reading a connection while one of its requests is
 * processed, so libevent alone would see the close only when the reply is written, and the socket
 * would sit in CLOSE-WAIT, counted against the limit, until then. poll() with POLLRDHUP reports the
 * peer's FIN or RST even behind bytes nobody read (a pipelined request, a TLS close_notify),
 * without reading them. A FIN is also what a client sends that half-closes (shutdown(SHUT_WR))
 * and still waits for the answer: TCP cannot tell the two apart without writing, hence opt-in. */
#include "conns.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define CONNS_MAX_LISTENERS 4
#define CONNS_SWEEP_US 1000000

typedef struct conn {
    conns *owner;
    struct bufferevent *bev;          /* our reference (bufferevent_incref) */
    struct evhttp_connection *evcon;  /* NULL until conn_setup() */
    struct event *timer;              /* first the setup, then the deadline */
    void *user;                       /* the owner's request waiting on this connection */
    bool set_up;
    struct conn *next_hash, *prev_all, *next_all;
} conn;

typedef struct binding {
    conns *c;
    bool tls;
} binding;

struct conns {
    struct event_base *base;
    size_t max_conns, count;
    struct timeval deadline;
    conns_user_fn on_close;
    void *arg;
    SSL_CTX *tls;
    conn **hash; /* by evcon pointer */
    size_t hash_mask;
    conn *all;   /* every live connection, for the sweep */
    struct evhttp_bound_socket *listeners[CONNS_MAX_LISTENERS];
    size_t nlisteners;
    bool paused;
    bool close_check; /* conns_set_close_check() */
    struct event *sweep;
    binding plain_b, tls_b;
};

static size_t hash_of(const conns *c, const void *evcon) {
    uintptr_t h = (uintptr_t)evcon;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & c->hash_mask;
}

static conn *conn_find(conns *c, const struct evhttp_connection *evcon) {
    conn *k = c->hash[hash_of(c, evcon)];
    while (k && k->evcon != evcon) k = k->next_hash;
    return k;
}

static void hash_remove(conns *c, conn *k) {
    conn **link = &c->hash[hash_of(c, k->evcon)];
    while (*link && *link != k) link = &(*link)->next_hash;
    if (*link) *link = k->next_hash;
}

/* Pauses or resumes accepting, as the count crosses max_conns. */
static void accepting_update(conns *c) {
    bool pause = c->count >= c->max_conns;
    if (pause == c->paused) return;
    c->paused = pause;
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct evconnlistener *l = evhttp_bound_socket_get_listener(c->listeners[i]);
        if (pause) evconnlistener_disable(l);
        else evconnlistener_enable(l);
    }
    log_msg(pause ? LOG_WARN : LOG_INFO, pause ? "connections_full" : "connections_available",
            "%zu connections open (limit %zu): %s accepting", c->count, c->max_conns,
            pause ? "stopped" : "resumed");
}

/* Ownership: frees k, drops our bufferevent reference. */
static void conn_release(conns *c, conn *k) {
    if (k->set_up) hash_remove(c, k);
    if (k->prev_all) k->prev_all->next_all = k->next_all;
    else c->all = k->next_all;
    if (k->next_all) k->next_all->prev_all = k->prev_all;
    if (k->user && c->on_close) c->on_close(k->user, c->arg);
    if (k->timer) event_free(k->timer);
    bufferevent_decref(k->bev);
    free(k);
    c->count--;
    accepting_update(c);
}

static void on_evcon_close(struct evhttp_connection *evcon, void *arg) {
    (void)evcon;
    conn *k = arg;
    conn_release(k->owner, k);
}

static void on_deadline(conn *k) {
    log_msg(LOG_DEBUG, "connection_deadline", "closing a connection that sent no complete request "
            "within %ld ms", (long)(k->owner->deadline.tv_sec * 1000 + k->owner->deadline.tv_usec / 1000));
    evhttp_connection_free(k->evcon); /* runs on_evcon_close: k is gone after this */
}

/* The evcon is the argument evhttp gave the bufferevent's callbacks; NULL once it freed it. */
static void conn_setup(conn *k) {
    conns *c = k->owner;
    bufferevent_data_cb rcb;
    bufferevent_data_cb wcb;
    bufferevent_event_cb ecb;
    void *cbarg = NULL;
    bufferevent_getcb(k->bev, &rcb, &wcb, &ecb, &cbarg);
    if (!cbarg) { /* closed before we looked */
        conn_release(c, k);
        return;
    }
    k->evcon = cbarg;
    k->set_up = true;
    size_t h = hash_of(c, k->evcon);
    k->next_hash = c->hash[h];
    c->hash[h] = k;
    evhttp_connection_set_closecb(k->evcon, on_evcon_close, k);
    event_priority_set(k->timer, 1);
    evtimer_add(k->timer, &c->deadline);
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg) {
    conn *k = arg;
    (void)fd;
    (void)what;
    if (!k->set_up) conn_setup(k);
    else if (!k->user) on_deadline(k);
}

/* evhttp's bevcb: every accepted connection's bufferevent is made here. */
static struct bufferevent *bev_new(struct event_base *base, void *arg) {
    binding *b = arg;
    conns *c = b->c;
    conn *k = calloc(1, sizeof *k);
    SSL *ssl = NULL;
    if (!k) return NULL; /* libevent then makes a plain bufferevent itself; not tracked */
    if (b->tls && c->tls) {
        ssl = SSL_new(c->tls);
        k->bev = ssl ? bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL; /* takes ssl, also on failure */
    } else {
        k->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    k->timer = k->bev ? evtimer_new(base, on_conn_timer, k) : NULL;
    if (!k->timer) {
        if (k->bev) bufferevent_free(k->bev);
        free(k);
        return NULL;
    }
    k->owner = c;
    bufferevent_incref(k->bev); /* ours: see the sweep */
    k->next_all = c->all;
    if (c->all) c->all->prev_all = k;
    c->all = k;
    c->count++;
    event_priority_set(k->timer, 0);
    event_active(k->timer, EV_TIMEOUT, 0);
    accepting_update(c);
    return k->bev;
}

/* Releases connections that libevent freed without calling their close callback. */
static void sweep_freed(conns *c) {
    for (conn *k = c->all, *next; k; k = next) {
        next = k->next_all;
        bufferevent_data_cb rcb;
        bufferevent_data_cb wcb;
        bufferevent_event_cb ecb;
        void *cbarg = NULL;
        if (!k->set_up) continue;
        bufferevent_getcb(k->bev, &rcb, &wcb, &ecb, &cbarg);
        if (!cbarg) conn_release(c, k);
    }
}

/* The connections with a waiting request whose client has closed: one poll() for them all.
 * Returns their evcons (malloc'ed, *n of them; NULL when none or out of memory). */
static struct evhttp_connection **sweep_find_gone(conns *c, size_t *n) {
    size_t waiting = 0, i = 0;
    *n = 0;
    for (conn *k = c->all; k; k = k->next_all) waiting += k->user != NULL;
    if (waiting == 0) return NULL;
    struct pollfd *fds = calloc(waiting, sizeof *fds);
    struct evhttp_connection **gone = calloc(waiting, sizeof *gone);
    if (fds && gone) {
        for (conn *k = c->all; k && i < waiting; k = k->next_all)
            if (k->user) {
                fds[i] = (struct pollfd){.fd = (int)bufferevent_getfd(k->bev), .events = POLLRDHUP};
                gone[i++] = k->evcon;
            }
        if (poll(fds, (nfds_t)i, 0) > 0)
            for (size_t j = 0; j < i; j++)
                if (fds[j].fd >= 0 && (fds[j].revents & (POLLRDHUP | POLLHUP | POLLERR)))
                    gone[(*n)++] = gone[j];
    }
    free(fds);
    if (*n == 0) {
        free(gone);
        return NULL;
    }
    return gone;
}

/* Closes the connections whose client left. Each is looked up again first: closing one runs the
 * owner's callback, after which only the index says what is still open (no connection is
 * accepted meanwhile, so a freed evcon's address cannot come back). */
static void close_gone(conns *c, struct evhttp_connection **gone, size_t n) {
    for (size_t i = 0; i < n; i++) {
        conn *k = conn_find(c, gone[i]);
        if (!k || !k->user) continue; /* closed or answered meanwhile */
        log_msg(LOG_DEBUG, "connection_peer_closed", "closing a connection whose client left while "
                "its request waited");
        evhttp_connection_free(k->evcon); /* runs on_evcon_close: the owner hears of it */
    }
}

static void on_sweep(evutil_socket_t fd, short what, void *arg) {
    conns *c = arg;
    (void)fd;
    (void)what;
    sweep_freed(c);
    if (!c->close_check) return;
    size_t n;
    struct evhttp_connection **gone = sweep_find_gone(c, &n);
    close_gone(c, gone, n);
    free(gone);
}

conns *conns_new(struct event_base *base, size_t max_conns, int deadline_ms, conns_user_fn on_close,
                 void *arg, char *errstr, size_t errstr_size) {
    struct timeval sweep_tv = {0, CONNS_SWEEP_US};
    conns *c = calloc(1, sizeof *c);
    size_t n = 64;
    while (c && n < max_conns * 2) n *= 2;
    if (!c || !(c->hash = calloc(n, sizeof *c->hash))) goto oom;
    /* Two priorities: the connection set-up events must run before any I/O. Must precede the
     * creation of every other event on base (they take the default priority when created). */
    if (event_base_priority_init(base, 2) != 0) {
        snprintf(errstr, errstr_size, "event_base_priority_init failed");
        goto failed;
    }
    c->base = base;
    c->hash_mask = n - 1;
    c->max_conns = max_conns;
    c->deadline.tv_sec = deadline_ms / 1000;
    c->deadline.tv_usec = (deadline_ms % 1000) * 1000;
    c->on_close = on_close;
    c->arg = arg;
    c->plain_b = (binding){c, false};
    c->tls_b = (binding){c, true};
    c->sweep = event_new(base, -1, EV_PERSIST, on_sweep, c);
    if (!c->sweep || event_add(c->sweep, &sweep_tv) != 0) goto oom;
    return c;
oom:
    snprintf(errstr, errstr_size, "out of memory");
failed:
    conns_destroy(c);
    return NULL;
}

void conns_destroy(conns *c) {
    if (!c) return;
    while (c->all) { /* only left when evhttp_free() skipped close callbacks */
        c->all->user = NULL;
        conn_release(c, c->all);
    }
    if (c->sweep) event_free(c->sweep);
    if (c->tls) SSL_CTX_free(c->tls);
    free(c->hash);
    free(c);
}

void conns_attach(conns *c, struct evhttp *http, SSL_CTX *tls) {
    if (tls) conns_set_tls(c, tls);
    evhttp_set_bevcb(http, bev_new, tls ? &c->tls_b : &c->plain_b);
}

void conns_set_tls(conns *c, SSL_CTX *tls) {
    SSL_CTX_up_ref(tls);
    if (c->tls) SSL_CTX_free(c->tls);
    c->tls = tls;
}

void conns_add_listener(conns *c, struct evhttp_bound_socket *bound) {
    if (c->nlisteners < CONNS_MAX_LISTENERS) c->listeners[c->nlisteners++] = bound;
}

void conns_forget_listeners(conns *c) { c->nlisteners = 0; }

static void on_reply_sent(struct evhttp_request *req, void *arg) {
    conn *k = arg;
    (void)req;
    k->user = NULL;
    evtimer_add(k->timer, &k->owner->deadline);
}

void **conns_on_request(conns *c, struct evhttp_request *req) {
    conn *k = conn_find(c, evhttp_request_get_connection(req));
    if (!k) return NULL;
    evtimer_del(k->timer);
    evhttp_request_set_on_complete_cb(req, on_reply_sent, k);
    return &k->user;
}

void conns_set_close_check(conns *c, bool on) { c->close_check = on; }

size_t conns_count(const conns *c) { return c->count; }

int conns_foreach_user(conns *c, conns_user_fn fn, void *arg) {
    size_t n = 0;
    void **users = malloc((c->count ? c->count : 1) * sizeof *users);
    if (!users) return -1;
    for (conn *k = c->all; k && n < c->count; k = k->next_all)
        if (k->user) users[n++] = k->user;
    for (size_t i = 0; i < n; i++) fn(users[i], arg);
    free(users);
    return 0;
}

SSL_CTX *conns_tls_load(const char *cert_file, const char *key_file, char *errstr,
                        size_t errstr_size) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) goto failed;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        goto failed;
    return ctx;
failed:;
    unsigned long err = ERR_peek_last_error();
    const char *why = err ? ERR_reason_error_string(err) : NULL;
    snprintf(errstr, errstr_size, "TLS certificate %s / key %s: %s", cert_file, key_file,
             why ? why : "cannot load");
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}
