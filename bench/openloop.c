/* openloop: an open-loop HTTP load generator for latency at a fixed rate (`make bench-ingest`).
 *
 * Requests are scheduled at exactly RATE per second, whatever the server does; a request that finds
 * no idle connection waits in a queue, and its latency counts from its scheduled time, not from when
 * it could be sent (so a stalled server shows up in the percentiles instead of slowing the client
 * down: no coordinated omission).
 *
 *   openloop HOST PORT PATH BODY_FILE RATE SECONDS CONNECTIONS [HEADER: VALUE]...
 *
 * BODY_FILE holds one request body per line, used in turn. Prints one line:
 *   sent=N ok=N errors=N rate=R p50_ms=X p90_ms=X p99_ms=X max_ms=X */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct conn {
    struct evhttp_connection *evcon;
    int busy;
} conn;

static struct {
    struct event_base *base;
    const char *host, *path;
    char **bodies;
    size_t nbodies, next_body;
    char **headers;
    int nheaders;
    double rate, seconds, start;
    conn *conns;
    int nconns;
    double *queue; /* scheduled times of requests waiting for a connection (ring) */
    size_t qcap, qhead, qlen;
    double *lat;
    size_t nlat, cap;
    long sent, ok, errors;
    int done_sending;
} g;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct pending {
    conn *c;
    double scheduled;
} pending;

static void send_on(conn *c, double scheduled);

static void on_done(struct evhttp_request *req, void *arg) {
    pending *p = arg;
    conn *c = p->c;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    if (code >= 200 && code < 300) g.ok++;
    else g.errors++;
    if (g.nlat < g.cap) g.lat[g.nlat++] = now() - p->scheduled;
    free(p);
    c->busy = 0;
    if (g.qlen) { /* the oldest waiting request goes next */
        double s = g.queue[g.qhead];
        g.qhead = (g.qhead + 1) % g.qcap;
        g.qlen--;
        send_on(c, s);
    }
    if (g.done_sending && g.ok + g.errors == g.sent) event_base_loopexit(g.base, NULL);
}

static void send_on(conn *c, double scheduled) {
    pending *p = malloc(sizeof *p);
    p->c = c;
    p->scheduled = scheduled;
    struct evhttp_request *req = evhttp_request_new(on_done, p);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    const char *body = g.bodies[g.next_body++ % g.nbodies];
    evhttp_add_header(h, "Host", g.host);
    for (int i = 0; i < g.nheaders; i++) {
        char name[128];
        const char *colon = strchr(g.headers[i], ':');
        if (!colon || colon - g.headers[i] >= (long)sizeof name) continue;
        memcpy(name, g.headers[i], (size_t)(colon - g.headers[i]));
        name[colon - g.headers[i]] = '\0';
        evhttp_add_header(h, name, colon + 1 + strspn(colon + 1, " "));
    }
    evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    c->busy = 1;
    evhttp_make_request(c->evcon, req, EVHTTP_REQ_POST, g.path);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct event *self = arg;
    double t = now(), elapsed = t - g.start;
    if (elapsed >= g.seconds) {
        g.done_sending = 1;
        event_del(self);
        if (g.ok + g.errors == g.sent) event_base_loopexit(g.base, NULL);
        return;
    }
    long due = (long)(elapsed * g.rate) + 1; /* request k is due from start + k / rate on */
    for (; g.sent < due; g.sent++) {
        double scheduled = g.start + (double)g.sent / g.rate;
        int i;
        for (i = 0; i < g.nconns && g.conns[i].busy; i++) {
        }
        if (i < g.nconns) {
            send_on(&g.conns[i], scheduled);
        } else if (g.qlen < g.qcap) {
            g.queue[(g.qhead + g.qlen++) % g.qcap] = scheduled;
        } else {
            g.errors++; /* the client itself is overwhelmed: counted, not hidden */
        }
    }
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char **read_lines(const char *path, size_t *n) {
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, count = 0, alloc = 64;
    char **out = malloc(alloc * sizeof *out);
    ssize_t len;
    if (!f) return NULL;
    while ((len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        if (count == alloc) out = realloc(out, (alloc *= 2) * sizeof *out);
        out[count++] = strdup(line);
    }
    free(line);
    fclose(f);
    *n = count;
    return count ? out : NULL;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: openloop HOST PORT PATH BODY_FILE RATE SECONDS CONNECTIONS [HEADER: VALUE]...\n");
        return 2;
    }
    g.host = argv[1];
    g.path = argv[3];
    g.bodies = read_lines(argv[4], &g.nbodies);
    g.rate = atof(argv[5]);
    g.seconds = atof(argv[6]);
    g.nconns = atoi(argv[7]);
    g.headers = argv + 8;
    g.nheaders = argc - 8;
    if (!g.bodies || g.rate <= 0 || g.seconds <= 0 || g.nconns < 1) {
        fprintf(stderr, "openloop: bad arguments or empty body file\n");
        return 2;
    }
    /* A precise timer: by default libevent reads a coarse clock (4 ms steps here), so the 1 ms tick
     * below fired every ~4 ms and every request left up to 4 ms after its scheduled time, which
     * the latencies then counted against the server. */
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    g.base = event_base_new_with_config(ec);
    event_config_free(ec);
    g.conns = calloc((size_t)g.nconns, sizeof *g.conns);
    for (int i = 0; i < g.nconns; i++)
        g.conns[i].evcon = evhttp_connection_base_new(g.base, NULL, g.host, (unsigned short)atoi(argv[2]));
    g.cap = (size_t)(g.rate * g.seconds) + 16;
    g.lat = malloc(g.cap * sizeof *g.lat);
    g.qcap = g.cap;
    g.queue = malloc(g.qcap * sizeof *g.queue);
    struct event *tick = event_new(g.base, -1, EV_PERSIST, on_tick, event_self_cbarg());
    struct timeval tick_us = {0, 250}; /* a request leaves at most 0.25 ms after its time */
    event_add(tick, &tick_us);
    g.start = now();
    event_base_dispatch(g.base);
    double took = now() - g.start;
    qsort(g.lat, g.nlat, sizeof *g.lat, cmp);
#define PCT(p) (g.nlat ? g.lat[(size_t)((double)(g.nlat - 1) * (p))] * 1e3 : 0)
    printf("sent=%ld ok=%ld errors=%ld rate=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
           g.sent, g.ok, g.errors, (double)(g.ok + g.errors) / took, PCT(0.5), PCT(0.9), PCT(0.99),
           PCT(1.0));
    return g.errors ? 1 : 0;
}
