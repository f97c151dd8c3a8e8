/* The admin port's limits (common/admin.c), from raw sockets: a scrape or a probe is one small GET,
 * and nothing a client sends may make the process buffer without bound or hold a connection for
 * ever. Before, libevent's defaults applied: any header or body size, a timeout per read only, and
 * no connection limit (the admin thread spun on accept() once descriptors ran out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "metrics.h"

static int connect_to(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Reads what fd answers within ms (until EOF or the time is up) into buf. Returns bytes read, and
 * *closed: the server closed the connection. */
static size_t read_for(int fd, int ms, char *buf, size_t size, bool *closed) {
    size_t n = 0;
    *closed = false;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        int left = ms - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) != 1) break;
        ssize_t r = recv(fd, buf + n, size - 1 - n, 0);
        if (r <= 0) {
            *closed = true;
            break;
        }
        n += (size_t)r;
        if (n + 1 >= size) break;
    }
    buf[n] = '\0';
    return n;
}

static void send_all(int fd, const char *s, size_t len) {
    while (len > 0) {
        ssize_t w = send(fd, s, len, MSG_NOSIGNAL);
        if (w <= 0) return; /* closed by the server: what the caller checks */
        s += w;
        len -= (size_t)w;
    }
}

static void test_admin_limits(void **state) {
    (void)state;
    char err[256], buf[4096];
    bool closed;
    metrics *m = metrics_new();
    admin *a = admin_new("127.0.0.1", 0, m, NULL, NULL, err, sizeof err);
    assert_non_null(a);
    int port = admin_port(a);

    /* a body announced at 400 MB: refused without reading it */
    int fd = connect_to(port);
    const char *big = "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 400000000\r\n\r\n";
    send_all(fd, big, strlen(big));
    char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    send_all(fd, chunk, sizeof chunk);
    read_for(fd, 3000, buf, sizeof buf, &closed);
    if (!closed && !strstr(buf, " 413 ")) fail_msg("a 400 MB body: neither 413 nor closed: %.80s", buf);
    close(fd);

    /* headers past 8 KiB: refused */
    fd = connect_to(port);
    const char *get = "GET /health HTTP/1.1\r\nHost: t\r\nX-A: ";
    send_all(fd, get, strlen(get));
    for (int i = 0; i < 4; i++) send_all(fd, chunk, 4096);
    read_for(fd, 3000, buf, sizeof buf, &closed);
    if (!closed && !strstr(buf, " 4")) fail_msg("16 KiB of headers: neither 4xx nor closed: %.80s", buf);
    assert_null(strstr(buf, " 200 "));
    close(fd);

    /* 64 connections held open: the 65th is not served until one of them closes */
    int held[64];
    for (int i = 0; i < 64; i++) held[i] = connect_to(port);
    usleep(300000);
    fd = connect_to(port); /* the kernel completes it; the server does not accept it yet */
    const char *health = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(fd, health, strlen(health));
    read_for(fd, 1000, buf, sizeof buf, &closed);
    assert_string_equal(buf, "");
    close(held[0]);
    read_for(fd, 3000, buf, sizeof buf, &closed);
    if (!strstr(buf, " 200 ")) fail_msg("once one closed, no answer: %.80s", buf);
    close(fd);
    for (int i = 1; i < 64; i++) close(held[i]);

    /* a slow client (a header line every 2 s): cut off at the 10-second deadline for the request */
    fd = connect_to(port);
    send_all(fd, "GET /health HTTP/1.1\r\n", 22);
    closed = false;
    int lines = 0;
    for (; lines < 8 && !closed; lines++) {
        read_for(fd, 2000, buf, sizeof buf, &closed);
        if (!closed) send_all(fd, "X-Slow: 1\r\n", 11);
    }
    if (!closed) fail_msg("a slow client held its connection for %d s", 2 * lines);
    assert_true(lines >= 4); /* not before the deadline */
    close(fd);

    admin_destroy(a);
    metrics_destroy(m);
}

int main(void) {
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
