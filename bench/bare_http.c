/* bare_http: the benchmark baseline. A libevent evhttp server on one thread that answers every
 * request with 202 and a small JSON body, doing nothing else: what ingest costs on top of HTTP is
 * measured against it (`make bench-ingest`).
 *
 *   bare_http PORT */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void on_request(struct evhttp_request *req, void *arg) {
    (void)arg;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evbuffer_add_printf(evhttp_request_get_output_buffer(req),
                        "{\"message\":\"Payment accepted for processing\",\"status\":\"accepted\","
                        "\"payment_id\":\"00000000-0000-4000-8000-000000000000\"}");
    evhttp_send_reply(req, 202, "Accepted", NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)sig;
    (void)what;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bare_http PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    struct event *sig = base ? evsignal_new(base, SIGTERM, on_signal, base) : NULL;
    if (!http || !sig || evsignal_add(sig, NULL) != 0 ||
        evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)atoi(argv[1])) != 0) {
        fprintf(stderr, "bare_http: cannot listen on 127.0.0.1:%s\n", argv[1]);
        return 1;
    }
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    evhttp_set_gencb(http, on_request, NULL);
    event_base_dispatch(base);
    event_free(sig);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
