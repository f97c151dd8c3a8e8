/* pgread's promise that a lookup's callback runs later, from the loop, never inside
 * pgread_payment(): the GET handler parks its request after the call returns, and a callback that
 * already ran has freed it. The old code sent the query inside the call, and a send that failed at
 * once (PQsendQueryParams, PQflush, event_add) answered the lookup, and freed the request, before
 * the caller parked it: a use-after-free. (libpq 15 defers a reset connection's send error to the
 * read side, so a reset alone does not reach that path; the test checks the mechanism instead: the
 * query leaves only from the loop.) A fake PostgreSQL (the startup exchange only) accepts pgread's
 * connection; a lookup is made, and the test checks that nothing was sent or answered inside the
 * call, that the loop sends it, and that a reset (SO_LINGER 0: an RST) answers it UNAVAILABLE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "pgread.h"

typedef struct lookup {
    bool returned; /* pgread_payment() has returned */
    bool called, called_early;
    pgread_status status;
} lookup;

static void on_result(pgread_status st, json_t *result, void *arg) {
    lookup *l = arg;
    l->called = true;
    l->called_early = !l->returned;
    l->status = st;
    json_decref(result);
}

static int listen_any(int *port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* Runs the loop until the fake server's side has something to read on fd (or ~5 s). */
static bool loop_until_readable(struct event_base *base, int fd) {
    for (int i = 0; i < 500; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 1) return true;
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(10000);
    }
    return false;
}

/* The server side of libpq's start-up: the startup packet, then AuthenticationOk and
 * ReadyForQuery (idle). */
static void fake_startup(struct event_base *base, int conn) {
    unsigned char buf[4096];
    assert_true(loop_until_readable(base, conn));
    ssize_t n = read(conn, buf, sizeof buf);
    assert_true(n >= 8);
    static const unsigned char ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0, 'Z', 0, 0, 0, 5, 'I'};
    assert_int_equal(write(conn, ok, sizeof ok), (ssize_t)sizeof ok);
}

static void test_callback_never_inside_the_call(void **state) {
    (void)state;
    int port = 0, lfd = listen_any(&port);
    assert_true(lfd >= 0);
    char url[128], err[256];
    snprintf(url, sizeof url,
             "postgresql://fs@127.0.0.1:%d/fs?sslmode=disable&gssencmode=disable", port);
    struct event_base *base = event_base_new();
    pgread *pr = pgread_new(base, url, 1, 5000, err, sizeof err);
    assert_non_null(pr);

    assert_true(loop_until_readable(base, lfd)); /* pgread connects */
    int conn = accept(lfd, NULL, NULL);
    assert_true(conn >= 0);
    fake_startup(base, conn);
    for (int i = 0; i < 500 && pgread_connected(pr) != 1; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(10000);
    }
    assert_int_equal(pgread_connected(pr), 1);

    lookup l = {0};
    pgread_op *op = pgread_payment(pr, "00000000-0000-4000-8000-000000000001", NULL, on_result, &l);
    l.returned = true;
    assert_non_null(op);
    assert_false(l.called);
    struct pollfd p = {.fd = conn, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 100), 0); /* the old code: the query was sent inside the call */
    assert_true(loop_until_readable(base, conn)); /* the loop sends it */
    assert_false(l.called);

    struct linger lg = {1, 0}; /* close with an RST */
    assert_int_equal(setsockopt(conn, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(conn);
    for (int i = 0; i < 500 && !l.called; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(10000);
    }
    assert_true(l.called);
    assert_false(l.called_early);
    assert_int_equal(l.status, PGREAD_UNAVAILABLE);
    pgread_destroy(pr);
    event_base_free(base);
    close(lfd);
}

int main(void) {
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_callback_never_inside_the_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
