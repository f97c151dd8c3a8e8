/* httpreq: request framing checks and HEAD-aware replies (httpreq.h). */
#include "httpreq.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h> /* TAILQ_FOREACH over libevent's header list */

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>

/* RFC 9110's token characters: a header name is one or more of them. */
static bool token(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s)) return false;
    return true;
}

static bool digits(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

int httpreq_framing_error(struct evhttp_request *req, const char *const *single, char *why,
                          size_t why_size) {
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    int hosts = 0, lengths = 0;
    unsigned seen = 0; /* bit i: single[i] met (at most 32 names) */
    TAILQ_FOREACH(kv, h, next) {
        if (!token(kv->key))
            return snprintf(why, why_size, "malformed header name"), -1;
        for (unsigned i = 0; single && single[i] && i < 32; i++) {
            if (strcasecmp(kv->key, single[i]) != 0) continue;
            if (seen & (1u << i))
                return snprintf(why, why_size, "header %s given more than once", single[i]), -1;
            seen |= 1u << i;
        }
        if (strcasecmp(kv->key, "Host") == 0) hosts++;
        if (strcasecmp(kv->key, "Content-Length") == 0 && (++lengths > 1 || !digits(kv->value)))
            return snprintf(why, why_size, "Content-Length must be one decimal number"), -1;
        if (strcasecmp(kv->key, "Transfer-Encoding") == 0 && strcasecmp(kv->value, "chunked") != 0)
            return snprintf(why, why_size, "Transfer-Encoding: only chunked is supported"), -1;
    }
    if (hosts > 1 || (hosts == 0 && req->major == 1 && req->minor >= 1))
        return snprintf(why, why_size, "HTTP/1.1 needs exactly one Host header"), -1;
    return 0;
}

bool httpreq_body_unencoded(struct evhttp_request *req) {
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next) {
        if (strcasecmp(kv->key, "Content-Encoding") == 0 && kv->value[0] &&
            strcasecmp(kv->value, "identity") != 0)
            return false;
    }
    return true;
}

void httpreq_close_after(struct evhttp_request *req) {
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_remove_header(out, "Connection");
    evhttp_add_header(out, "Connection", "close");
}

void httpreq_send(struct evhttp_request *req, int code, const char *reason) {
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        struct evbuffer *body = evhttp_request_get_output_buffer(req);
        char len[32];
        snprintf(len, sizeof len, "%zu", evbuffer_get_length(body));
        evhttp_remove_header(evhttp_request_get_output_headers(req), "Content-Length");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    evhttp_send_reply(req, code, reason, NULL);
}
