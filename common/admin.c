/* admin: /health, /ready, /metrics on a thread of its own (see admin.h). */
#include "admin.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conns.h"
#include "httpreq.h"
#include "log.h"

/* Limits of the admin port: a scrape or a probe is one small GET. */
#define ADMIN_MAX_CONNS 64        /* more wait in the kernel's backlog */
#define ADMIN_DEADLINE_MS 10000   /* for a whole request (a slow client is cut off) */
#define ADMIN_MAX_HEADERS 8192    /* bytes of request line and headers */
#define ADMIN_MAX_BODY 1024

struct admin {
    struct event_base *base;
    struct evhttp *http;
    conns *conns;
    struct event *stop_timer;
    metrics *m;
    admin_ready_fn ready;
    void *arg;
    int port;
    atomic_bool stop;
    pthread_t thread;
    bool started;
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                  const char *body, size_t len) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    httpreq_send(req, code, reason);
}

static void reply_json(struct evhttp_request *req, int code, const char *reason, const char *status,
                       const char *why) {
    char body[300];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\"%s%s%s}", status, why ? ",\"reason\":\"" : "",
                     why ? why : "", why ? "\"" : "");
    reply(req, code, reason, "application/json", body, (size_t)n);
}

static void on_request(struct evhttp_request *req, void *arg) {
    admin *a = arg;
    conns_on_request(a->conns, req); /* complete: its deadline stops */
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    char bad[128];
    if (httpreq_framing_error(req, NULL, bad, sizeof bad) != 0) {
        httpreq_close_after(req);
        reply_json(req, 400, "Bad Request", "malformed_request", bad);
    } else if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        reply_json(req, 405, "Method Not Allowed", "method_not_allowed", NULL);
    } else if (path && strcmp(path, "/health") == 0) {
        reply_json(req, 200, "OK", "ok", NULL);
    } else if (path && strcmp(path, "/ready") == 0) {
        char why[200] = "";
        bool ok = !a->ready || a->ready(a->arg, why, sizeof why);
        for (char *p = why; *p; p++) /* keep the hand-built JSON valid */
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = ' ';
        if (ok) reply_json(req, 200, "OK", "ready", NULL);
        else reply_json(req, 503, "Service Unavailable", "not_ready", why);
    } else if (path && strcmp(path, "/metrics") == 0) {
        char why[200];
        size_t len = 0;
        if (a->ready) a->ready(a->arg, why, sizeof why); /* a readiness gauge it sets is current */
        char *text = metrics_render(a->m, &len);
        if (text) reply(req, 200, "OK", "text/plain; version=0.0.4", text, len);
        else reply_json(req, 500, "Internal Server Error", "out_of_memory", NULL);
        free(text);
    } else {
        reply_json(req, 404, "Not Found", "not_found", NULL);
    }
}

/* libevent calls are not shared across threads here: the owner asks the loop to stop through an
 * atomic flag that a short timer on the admin thread checks. */
static void on_stop_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    admin *a = arg;
    if (atomic_load(&a->stop)) event_base_loopbreak(a->base);
}

static void *admin_main(void *arg) {
    admin *a = arg;
    event_base_dispatch(a->base);
    return NULL;
}

static int admin_bind(admin *a, const char *addr, int port, char *errstr, size_t errstr_size) {
    struct evhttp_bound_socket *sock = evhttp_bind_socket_with_handle(a->http, addr, (uint16_t)port);
    if (!sock) {
        snprintf(errstr, errstr_size, "admin listener: cannot bind %s:%d", addr, port);
        return -1;
    }
    conns_add_listener(a->conns, sock); /* paused at ADMIN_MAX_CONNS */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &sl) == 0)
        a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

admin *admin_new(const char *addr, int port, metrics *m, admin_ready_fn ready, void *arg,
                 char *errstr, size_t errstr_size) {
    admin *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->m = m;
    a->ready = ready;
    a->arg = arg;
    a->base = event_base_new();
    a->http = a->base ? evhttp_new(a->base) : NULL;
    if (!a->http) {
        snprintf(errstr, errstr_size, "admin: cannot create the event loop");
        goto failed;
    }
    /* The port may be reachable from a wider network than the API (0.0.0.0 in compose): without
     * limits one client could make the process buffer an endless body or header, or hold
     * connections (and file descriptors) for ever. */
    a->conns = conns_new(a->base, ADMIN_MAX_CONNS, ADMIN_DEADLINE_MS, NULL, NULL, errstr, errstr_size);
    if (!a->conns) goto failed;
    conns_attach(a->conns, a->http, NULL);
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY);
    evhttp_set_gencb(a->http, on_request, a);
    evhttp_set_timeout(a->http, 10);
    if (admin_bind(a, addr, port, errstr, errstr_size) != 0) goto failed;
    struct timeval tick = {0, 100000};
    a->stop_timer = event_new(a->base, -1, EV_PERSIST, on_stop_timer, a);
    if (!a->stop_timer || event_add(a->stop_timer, &tick) != 0) goto failed;
    if (pthread_create(&a->thread, NULL, admin_main, a) != 0) {
        snprintf(errstr, errstr_size, "admin: cannot start its thread");
        goto failed;
    }
    a->started = true;
    log_fields(LOG_INFO, "admin_listening", json_pack("{s:s, s:i}", "addr", addr, "port", a->port),
               "/health, /ready, /metrics on http://%s:%d", addr, a->port);
    return a;
failed:
    admin_destroy(a);
    return NULL;
}

int admin_port(const admin *a) { return a->port; }

void admin_destroy(admin *a) {
    if (!a) return;
    if (a->started) {
        atomic_store(&a->stop, true);
        pthread_join(a->thread, NULL);
    }
    if (a->stop_timer) event_free(a->stop_timer);
    if (a->conns) conns_forget_listeners(a->conns);
    if (a->http) evhttp_free(a->http);
    conns_destroy(a->conns); /* after evhttp_free: its connections are gone */
    if (a->base) event_base_free(a->base);
    free(a);
}
