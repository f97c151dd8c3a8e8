/* Unit tests for the deadlines of db_query, db_copy_in, db_query_rows and db_migrate, against a
 * fake PostgreSQL server on a thread: it speaks just enough of the protocol (startup, then one
 * message) and then answers nothing (hang), or stops reading in the middle of a COPY (the socket
 * buffers fill and a blocking PQputCopyData would wait forever), or takes the COPY and answers it
 * (ok), or sends three rows of a query and then nothing more (rows stall) or its end (rows ok). */
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

typedef enum fake_mode { FAKE_HANG, FAKE_COPY_STALL, FAKE_COPY_OK, FAKE_ROWS_STALL, FAKE_ROWS_OK } fake_mode;

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

/* A one-column text result of three rows ("a", "b", "c"); with its end (CommandComplete and
 * ReadyForQuery) when done. Returns 0 or -1. */
static int fake_rows(int fd, bool done) {
    static const unsigned char desc[] = {'T', 0, 0, 0, 26, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0};
    static const unsigned char end[] = {'C', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '3',
                                        0, 'Z', 0, 0, 0, 5, 'I'};
    if (write(fd, desc, sizeof desc) != (ssize_t)sizeof desc) return -1;
    for (char v = 'a'; v <= 'c'; v++) {
        unsigned char row[] = {'D', 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, (unsigned char)v};
        if (write(fd, row, sizeof row) != (ssize_t)sizeof row) return -1;
    }
    return !done || write(fd, end, sizeof end) == (ssize_t)sizeof end ? 0 : -1;
}

static void *fake_main(void *arg) {
    fake *f = arg;
    char c;
    size_t n;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0 || fake_startup(fd) != 0 || read_message(fd, &n) != 'Q') goto done;
    if ((f->mode == FAKE_ROWS_STALL || f->mode == FAKE_ROWS_OK) &&
        fake_rows(fd, f->mode == FAKE_ROWS_OK) != 0)
        goto done;
    if (f->mode == FAKE_COPY_STALL || f->mode == FAKE_COPY_OK) {
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

/* Collects the rows of db_query_rows; stops (returns 7) after stop_after rows when set. */
typedef struct rows_seen {
    char text[8];
    int n, stop_after;
} rows_seen;

static int take_row(void *arg, const PGresult *res, int row) {
    rows_seen *s = arg;
    s->text[s->n++] = PQgetvalue(res, row, 0)[0];
    return s->stop_after && s->n == s->stop_after ? 7 : 0;
}

/* Rows arrive, then nothing more: the rows are taken as they come, and the deadline covers the
 * whole exchange (DB_TIMED_OUT at about timeout_ms, the connection dropped). */
static void test_rows_deadline(void **state) {
    (void)state;
    char err[256];
    rows_seen seen = {0};
    fake f;
    fake_start(&f, FAKE_ROWS_STALL);
    PGconn *conn = fake_connect(&f);
    int64_t t0 = fs_mono_us();
    int rc = db_query_rows(conn, 400, "SELECT x", take_row, &seen, err, sizeof err);
    int64_t ms = (fs_mono_us() - t0) / 1000;
    assert_int_equal(rc, DB_TIMED_OUT);
    assert_string_equal(seen.text, "abc");
    assert_int_equal(PQstatus(conn), CONNECTION_BAD);
    assert_true(ms >= 390 && ms < 3000);
    assert_string_equal(err, "PostgreSQL did not answer within 400 ms: connection dropped");
    PQfinish(conn);
    fake_stop(&f);
}

/* A query answered to its end: every row, 0, the connection idle; a row function that stops gets
 * its value back, the rest is read (the connection still usable). */
static void test_rows_ok(void **state) {
    (void)state;
    char err[256];
    for (int stop = 0; stop <= 1; stop++) {
        rows_seen seen = {.stop_after = stop};
        fake f;
        fake_start(&f, FAKE_ROWS_OK);
        PGconn *conn = fake_connect(&f);
        int rc = db_query_rows(conn, 5000, "SELECT x", take_row, &seen, err, sizeof err);
        assert_int_equal(rc, stop ? 7 : 0);
        assert_string_equal(seen.text, stop ? "a" : "abc");
        assert_int_equal(PQstatus(conn), CONNECTION_OK);
        assert_int_equal(PQtransactionStatus(conn), PQTRANS_IDLE);
        PQfinish(conn);
        fake_stop(&f);
    }
}

/* A server that stops answering during the migrations: db_migrate fails after its timeout plus
 * the 2 s in which the server would have cancelled the statement itself, naming the deadline. */
static void test_migrate_deadline(void **state) {
    (void)state;
    char err[512];
    fake f;
    fake_start(&f, FAKE_HANG);
    PGconn *conn = fake_connect(&f);
    int64_t t0 = fs_mono_us();
    int rc = db_migrate(conn, 300, 1000, err, sizeof err);
    int64_t ms = (fs_mono_us() - t0) / 1000;
    assert_int_equal(rc, -1);
    assert_true(ms >= 2290 && ms < 6000);
    assert_non_null(strstr(err, "PostgreSQL did not answer within 2300 ms (db-migrate-timeout-ms"));
    PQfinish(conn);
    fake_stop(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_deadline),
        cmocka_unit_test(test_copy_deadline),
        cmocka_unit_test(test_copy_ok),
        cmocka_unit_test(test_rows_deadline),
        cmocka_unit_test(test_rows_ok),
        cmocka_unit_test(test_migrate_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
