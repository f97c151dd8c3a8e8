/* Unit tests for db_query's and db_copy_in's deadlines, against a fake PostgreSQL server on a
 * thread: it speaks just enough of the protocol (startup, then one message) and then answers
 * nothing (hang), or stops reading in the middle of a COPY (the socket buffers fill and a blocking
 * PQputCopyData would wait forever), or takes the COPY and answers it (ok). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "db.h"
#include "fsutil.h"

typedef enum fake_mode { FAKE_HANG, FAKE_COPY_STALL, FAKE_COPY_OK } fake_mode;

typedef struct fake {
    fake_mode mode;
    int listen_fd, port;
    int release[2];     /* written by the test: a stalled server may close now */
    size_t copy_bytes;  /* FAKE_COPY_OK: CopyData payload received */
    pthread_t thread;
} fake;

static int read_full(int fd, void *buf, size_t n) {
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One typed message (type byte, length, body): the type, or -1. The body is read and dropped. */
static int read_message(int fd, size_t *body_len) {
    unsigned char h[5];
    if (read_full(fd, h, 5) != 0) return -1;
    size_t n = be32(h + 1) - 4;
    char *body = malloc(n ? n : 1);
    int rc = body && read_full(fd, body, n) == 0 ? h[0] : -1;
    free(body);
    *body_len = n;
    return rc;
}

/* Startup: SSL/GSS requests refused ('N'), then AuthenticationOk and ReadyForQuery. */
static int fake_startup(int fd) {
    for (;;) {
        unsigned char h[8];
        if (read_full(fd, h, 8) != 0) return -1;
        uint32_t len = be32(h), code = be32(h + 4);
        if (code == 80877103 || code == 80877104) { /* SSLRequest, GSSENCRequest */
            if (write(fd, "N", 1) != 1) return -1;
            continue;
        }
        char *rest = malloc(len - 8 + 1);
        int rc = rest ? read_full(fd, rest, len - 8) : -1;
        free(rest);
        static const unsigned char ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0, 'Z', 0, 0, 0, 5, 'I'};
        return rc == 0 && write(fd, ok, sizeof ok) == (ssize_t)sizeof ok ? 0 : -1;
    }
}

static void *fake_main(void *arg) {
    fake *f = arg;
    char c;
    size_t n;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0 || fake_startup(fd) != 0 || read_message(fd, &n) != 'Q') goto done;
    if (f->mode != FAKE_HANG) {
        static const unsigned char copy_in[] = {'G', 0, 0, 0, 7, 0, 0, 0};
        if (write(fd, copy_in, sizeof copy_in) != (ssize_t)sizeof copy_in) goto done;
    }
    if (f->mode == FAKE_COPY_OK) {
        int t;
        while ((t = read_message(fd, &n)) == 'd') f->copy_bytes += n;
        static const unsigned char done_msg[] = {'C', 0, 0, 0, 11, 'C', 'O', 'P', 'Y', ' ', '1', 0,
                                                 'Z', 0, 0, 0, 5, 'I'};
        if (t == 'c' && write(fd, done_msg, sizeof done_msg) != (ssize_t)sizeof done_msg) goto done;
    }
    (void)!read(f->release[0], &c, 1); /* hang / stall: answer nothing, read nothing more */
done:
    if (fd >= 0) close(fd);
    return NULL;
}

static void fake_start(fake *f, fake_mode mode) {
    memset(f, 0, sizeof *f);
    f->mode = mode;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->listen_fd >= 0);
    assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->listen_fd, 1), 0);
    assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&a, &al), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pipe(f->release), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(fake *f) {
    (void)!write(f->release[1], "x", 1);
    pthread_join(f->thread, NULL);
    close(f->release[0]);
    close(f->release[1]);
    close(f->listen_fd);
}

static PGconn *fake_connect(const fake *f) {
    char url[160], err[256];
    snprintf(url, sizeof url,
             "postgresql://fs@127.0.0.1:%d/fs?sslmode=disable&gssencmode=disable", f->port);
    PGconn *conn = db_connect(url, "test_db", err, sizeof err);
    if (!conn) fail_msg("connect to the fake server: %s", err);
    return conn;
}

/* A statement the server never answers: an error result after about timeout_ms, the connection
 * dropped (the caller reconnects). */
static void test_query_deadline(void **state) {
    (void)state;
    fake f;
    fake_start(&f, FAKE_HANG);
    PGconn *conn = fake_connect(&f);
    int64_t t0 = fs_mono_us();
    PGresult *res = db_query(conn, 300, "SELECT 1", 0, NULL, NULL, NULL);
    int64_t ms = (fs_mono_us() - t0) / 1000;
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_int_equal(PQstatus(conn), CONNECTION_BAD);
    assert_true(ms >= 290 && ms < 3000);
    PQclear(res);
    PQfinish(conn);
    fake_stop(&f);
}

/* A COPY whose server stops reading: more data than the socket buffers hold, so the old blocking
 * PQputCopyData would wait forever; db_copy_in gives up at the deadline. */
static void test_copy_deadline(void **state) {
    (void)state;
    size_t len = 64u << 20;
    char *data = malloc(len);
    assert_non_null(data);
    memset(data, 'x', len);
    for (size_t i = 1023; i < len; i += 1024) data[i] = '\n';
    fake f;
    fake_start(&f, FAKE_COPY_STALL);
    PGconn *conn = fake_connect(&f);
    int64_t t0 = fs_mono_us();
    PGresult *res = db_copy_in(conn, 500, "COPY t FROM STDIN", data, len);
    int64_t ms = (fs_mono_us() - t0) / 1000;
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_int_equal(PQstatus(conn), CONNECTION_BAD);
    assert_true(ms >= 490 && ms < 5000);
    PQclear(res);
    PQfinish(conn);
    fake_stop(&f);
    free(data);
}

/* A COPY the server takes: every byte arrives, COMMAND_OK, and the connection is blocking again
 * (db_query and PQexec work on it as before). */
static void test_copy_ok(void **state) {
    (void)state;
    size_t len = 3u << 20;
    char *data = malloc(len);
    assert_non_null(data);
    memset(data, 'y', len);
    fake f;
    fake_start(&f, FAKE_COPY_OK);
    PGconn *conn = fake_connect(&f);
    PGresult *res = db_copy_in(conn, 5000, "COPY t FROM STDIN", data, len);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    assert_int_equal(PQisnonblocking(conn), 0);
    PQclear(res);
    fake_stop(&f); /* joins: copy_bytes is final */
    assert_int_equal(f.copy_bytes, len);
    PQfinish(conn);
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_deadline),
        cmocka_unit_test(test_copy_deadline),
        cmocka_unit_test(test_copy_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
