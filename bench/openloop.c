/* openloop: an open-loop HTTP load generator for latency at a fixed rate (`make bench-ingest`).
 *
 *   openloop HOST PORT PATH BODY_FILE RATE SECONDS CONNECTIONS [HEADER: VALUE]...
 *
 * POSTs one body per line of BODY_FILE, in turn, on CONNECTIONS keep-alive connections, and
 * prints one line:
 *   sent=N ok=N errors=N rate=R p50_ms=X p90_ms=X p99_ms=X max_ms=X
 *
 * Request i is due at start + i / RATE, whatever the server does. A due request that finds no idle
 * connection waits in a FIFO, and its latency counts from its due time, not from when it could be
 * sent: a stalled server shows up in the percentiles instead of slowing the client down (no
 * coordinated omission).
 *
 * The client shares a 2-core machine with the server it measures, so it is built to cost little:
 * requests are complete byte strings formatted at start, one send() each; one recv() per readable
 * event; responses are parsed only as far as the status code and the body length; the process
 * sleeps in epoll_pwait2() until the next due time or a socket event (nanosecond timeout; a
 * spinning client would take a core away from the server). The previous client (libevent's evhttp,
 * header lists and buffers built per request) took about twice the CPU at the same rate; most of
 * what is left is the kernel's loopback TCP path inside send() and recv().
 *
 * Counting: sent is the number of requests that fell due. A response with a 2xx status is ok,
 * any other status is an error; both record a latency. A connection that fails (reset, EOF,
 * unparsable response) counts an error for its request in flight, records no latency, and is
 * reconnected after RETRY_NS. A complete response with `Connection: close` counts by its status
 * and its connection is replaced at once. Requests still queued or in flight DRAIN_NS after the
 * last due time are errors. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 8192                   /* response headers longer than this are a failure */
#define RETRY_NS 100000000LL            /* a failed connection waits 100 ms: no reconnect storm */
#define DRAIN_NS 10000000000LL          /* how long answers are awaited after the last due time */
#define CONNECT_NS 5000000000LL         /* start-up: every connection must be up within 5 s */

enum cstate { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };

typedef struct conn {
    int fd, out;                /* out: EPOLLOUT is armed */
    enum cstate state;
    int in_idle;                /* on the idle stack (entries are checked when popped) */
    int64_t retry_at;           /* C_DOWN: when to connect again */
    long req;                   /* C_BUSY: index of the request in flight */
    size_t wrote;               /* bytes of that request sent so far */
    size_t len;                 /* bytes in head, until the blank line is seen */
    long body_left;             /* -1 while the headers are incomplete */
    int status, close_after;
    char head[HEAD_MAX + 1];
} conn;

static struct {
    int ep;
    struct addrinfo *addr;
    char **reqs;                /* complete requests, headers included */
    size_t *reqlen, nreqs;
    double rate;
    int64_t start;
    /* Requests go out in index order, so the FIFO of due requests waiting for a connection is
     * just the range [next, due). */
    long total, due, next;
    long ok, errors, done;
    double *lat;
    long nlat;
    conn *conns;
    int nconns, ndown;
    conn **idle;                /* LIFO: a warm connection goes first */
    int nidle;
} g;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t due_at(long i) { return g.start + (int64_t)((double)i * 1e9 / g.rate); }

static void arm_out(conn *c, int on) {
    if (c->out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->out = on;
}

static void make_idle(conn *c) {
    c->state = C_IDLE;
    if (!c->in_idle) g.idle[g.nidle++] = c;
    c->in_idle = 1;
}

static conn *pop_idle(void) {
    while (g.nidle > 0) {
        conn *c = g.idle[--g.nidle];
        c->in_idle = 0;
        if (c->state == C_IDLE) return c; /* it may have failed while it waited */
    }
    return NULL;
}

static void conn_down(conn *c) {
    if (c->fd >= 0) close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->state = C_DOWN;
    c->retry_at = now_ns() + RETRY_NS;
    g.ndown++;
}

static void conn_open(conn *c) {
    const struct addrinfo *a = g.addr;
    int one = 1;
    c->fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) goto failed;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) goto failed;
    /* Writable means connected (or refused: SO_ERROR says which). */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) goto failed;
    c->out = 1;
    c->state = C_CONNECTING;
    return;
failed:
    conn_down(c);
}

/* The connection cannot be trusted any more: its request in flight is lost. */
static void conn_fail(conn *c) {
    if (c->state == C_BUSY) {
        g.errors++;
        g.done++;
    }
    conn_down(c);
}

static void send_rest(conn *c) {
    size_t i = (size_t)c->req % g.nreqs;
    ssize_t n = send(c->fd, g.reqs[i] + c->wrote, g.reqlen[i] - c->wrote, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        conn_fail(c);
        return;
    }
    if (n > 0) c->wrote += (size_t)n;
    arm_out(c, c->wrote < g.reqlen[i]);
}

static void dispatch(conn *c, long req) {
    c->state = C_BUSY;
    c->req = req;
    c->wrote = c->len = 0;
    c->body_left = -1;
    send_rest(c);
}

static void complete(conn *c) {
    g.lat[g.nlat++] = (double)(now_ns() - due_at(c->req)) / 1e9;
    if (c->status >= 200 && c->status < 300) g.ok++;
    else g.errors++;
    g.done++;
    /* A response that arrived before its request was fully sent leaves the stream out of step. */
    if (c->close_after || c->wrote < g.reqlen[(size_t)c->req % g.nreqs]) {
        close(c->fd);
        c->fd = -1;
        conn_open(c);
    } else {
        make_idle(c);
    }
}

/* Status code, body length and Connection: close from the head c->head[0..end), NUL-terminated.
 * A body whose length is not given (no Content-Length, or chunked) is not read: the connection
 * is closed after the head instead, which ingest never needs. */
static int parse_head(conn *c, size_t end) {
    const char *p = c->head;
    long length = -1;
    int closing = 0;
    if (end < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ') return -1;
    c->status = atoi(p + 9);
    /* Every line ends with CRLF up to the blank line at end - 2. */
    for (p = strstr(p, "\r\n") + 2; p < c->head + end - 2; p = strstr(p, "\r\n") + 2) {
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            length = strtol(p + 15, NULL, 10);
        else if (strncasecmp(p, "Connection:", 11) == 0)
            closing = strncasecmp(p + 11 + strspn(p + 11, " \t"), "close", 5) == 0;
    }
    c->body_left = length;
    c->close_after = closing || length < 0;
    return 0;
}

/* Head bytes up to its blank line: 1 when the head is complete (parsed), 0 when more must come,
 * -1 on a response that is no HTTP or whose head does not fit. */
static int take_head(conn *c, size_t n) {
    c->len += n;
    c->head[c->len] = '\0';
    char *blank = strstr(c->head, "\r\n\r\n");
    if (!blank) return c->len < HEAD_MAX ? 0 : -1;
    size_t end = (size_t)(blank - c->head) + 4;
    if (parse_head(c, end) != 0) return -1;
    if (c->body_left < 0) c->body_left = 0; /* unknown length: the body goes with the connection */
    else c->body_left -= (long)(c->len - end); /* body bytes that came with the head */
    return 1;
}

/* One recv() per readable event: the head is kept until its blank line, body bytes are only
 * counted. The response may arrive in any number of pieces. */
static void on_readable(conn *c) {
    char scratch[16384];
    int in_body = c->body_left >= 0;
    char *dst = in_body ? scratch : c->head + c->len;
    size_t room = in_body ? sizeof scratch : HEAD_MAX - c->len;
    ssize_t n = recv(c->fd, dst, room, 0);
    int r = 1;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0 || c->state != C_BUSY) { /* EOF, reset, or bytes nobody asked for */
        conn_fail(c);
        return;
    }
    if (in_body) c->body_left -= n;
    else r = take_head(c, (size_t)n);
    if (r < 0 || (r == 1 && c->body_left < 0)) /* garbage, or more than the response */
        conn_fail(c);
    else if (r == 1 && c->body_left == 0)
        complete(c);
}

static void on_event(conn *c, uint32_t events) {
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_down(c);
        } else {
            arm_out(c, 0);
            make_idle(c);
        }
        return;
    }
    if ((events & EPOLLOUT) && c->state == C_BUSY) send_rest(c);
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(c);
}

/* Connections that failed come back after RETRY_NS; returns the earliest pending retry. */
static int64_t retry_down(int64_t t) {
    int64_t next = INT64_MAX;
    for (int i = 0; i < g.nconns && g.ndown > 0; i++) {
        conn *c = &g.conns[i];
        if (c->state != C_DOWN) continue;
        if (c->retry_at <= t) {
            g.ndown--;
            conn_open(c);
        } else if (c->retry_at < next) {
            next = c->retry_at;
        }
    }
    return next;
}

/* Waits for socket events until `until` at the latest, without spinning. */
static void poll_once(int64_t t, int64_t until) {
    struct epoll_event evs[64];
    int64_t wait = until > t ? until - t : 0;
    struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
    int n = epoll_pwait2(g.ep, evs, 64, &ts, NULL);
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
}

static void run(void) {
    int64_t deadline = due_at(g.total) + DRAIN_NS;
    for (;;) {
        int64_t t = now_ns(), wake = deadline;
        while (g.due < g.total && due_at(g.due) <= t) g.due++;
        conn *c;
        while (g.next < g.due && (c = pop_idle()) != NULL) dispatch(c, g.next++);
        if (g.done == g.total || t >= deadline) break;
        if (g.ndown > 0) {
            int64_t r = retry_down(t);
            if (r < wake) wake = r;
        }
        if (g.due < g.total && due_at(g.due) < wake) wake = due_at(g.due);
        poll_once(t, wake);
    }
    g.errors += g.total - g.done; /* never answered, or never sent */
}

/* Every connection up before the clock starts, so no request pays for a TCP handshake. */
static int connect_all(void) {
    int64_t give_up = now_ns() + CONNECT_NS;
    for (int i = 0; i < g.nconns; i++) {
        g.conns[i].fd = -1;
        conn_open(&g.conns[i]);
    }
    while (g.nidle < g.nconns && now_ns() < give_up) poll_once(now_ns(), now_ns() + 10000000);
    return g.nidle == g.nconns ? 0 : -1;
}

/* One complete request per non-empty line of the body file. */
static int load_requests(const char *path, const char *host, const char *target, char **hdrs,
                         int nhdrs) {
    FILE *f = fopen(path, "r");
    char *line = NULL, *extra = NULL, *req;
    size_t cap = 0, alloc = 0, extra_len = 0;
    ssize_t len;
    FILE *m = f ? open_memstream(&extra, &extra_len) : NULL;
    if (!m) {
        if (f) fclose(f);
        return -1;
    }
    for (int i = 0; i < nhdrs; i++)
        if (strchr(hdrs[i], ':')) fprintf(m, "%s\r\n", hdrs[i]);
    fclose(m);
    while ((len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        int n = asprintf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %zd\r\n\r\n%s",
                         target, host, extra, len, line);
        if (n < 0) break;
        if (g.nreqs == alloc) {
            alloc = alloc ? alloc * 2 : 1024;
            g.reqs = realloc(g.reqs, alloc * sizeof *g.reqs);
            g.reqlen = realloc(g.reqlen, alloc * sizeof *g.reqlen);
        }
        g.reqs[g.nreqs] = req;
        g.reqlen[g.nreqs++] = (size_t)n;
    }
    free(line);
    free(extra);
    fclose(f);
    return g.nreqs ? 0 : -1;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: openloop HOST PORT PATH BODY_FILE RATE SECONDS CONNECTIONS "
                        "[HEADER: VALUE]...\n");
        return 2;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    g.rate = atof(argv[5]);
    g.total = (long)(g.rate * atof(argv[6]));
    g.nconns = atoi(argv[7]);
    if (g.rate <= 0 || g.total < 1 || g.nconns < 1 ||
        load_requests(argv[4], argv[1], argv[3], argv + 8, argc - 8) != 0 ||
        getaddrinfo(argv[1], argv[2], &hints, &g.addr) != 0) {
        fprintf(stderr, "openloop: bad arguments, unknown host or empty body file\n");
        return 2;
    }
    /* Every microsecond a wake-up is late is counted as server latency (default slack: 50 us). */
    prctl(PR_SET_TIMERSLACK, 5000UL);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    g.conns = calloc((size_t)g.nconns, sizeof *g.conns);
    g.idle = calloc((size_t)g.nconns, sizeof *g.idle);
    g.lat = malloc((size_t)g.total * sizeof *g.lat);
    if (g.ep < 0 || !g.conns || !g.idle || !g.lat || connect_all() != 0) {
        fprintf(stderr, "openloop: cannot open %d connections to %s:%s\n", g.nconns, argv[1],
                argv[2]);
        return 1;
    }
    g.start = now_ns();
    run();
    double took = (double)(now_ns() - g.start) / 1e9;
    qsort(g.lat, (size_t)g.nlat, sizeof *g.lat, cmp);
#define PCT(p) (g.nlat ? g.lat[(size_t)((double)(g.nlat - 1) * (p))] * 1e3 : 0)
    printf("sent=%ld ok=%ld errors=%ld rate=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
           g.due, g.ok, g.errors, (double)(g.ok + g.errors) / took, PCT(0.5), PCT(0.9), PCT(0.99),
           PCT(1.0));
    return g.errors ? 1 : 0;
}
