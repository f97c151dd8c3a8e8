/* httpreq: what libevent's evhttp leaves to us about a request's framing and a reply's body.
 *
 * evhttp (2.1) takes the first of two Content-Length headers, reads an unknown Transfer-Encoding as
 * "no body", keeps headers whose names carry spaces, and accepts HTTP/1.1 without Host: each of
 * those lets a request hide another one in its body ("request smuggling" past a proxy that frames
 * it the other way). It also writes a HEAD reply's body, without its length. The API and admin
 * listeners call httpreq_framing_error() first and answer through httpreq_send(). */
#ifndef FS_HTTPREQ_H
#define FS_HTTPREQ_H

#include <stdbool.h>
#include <stddef.h>

struct evhttp_request;

/* 0 when req's headers frame it unambiguously; else -1 with why (for a 400 whose connection is then
 * closed: what follows on it cannot be trusted). Also refuses a repeated header among single (a
 * NULL-terminated list of at most 32 names; NULL: none). */
int httpreq_framing_error(struct evhttp_request *req, const char *const *single, char *why,
                          size_t why_size);

/* Whether req's body comes as it is: every Content-Encoding header empty or "identity". Nothing
 * decodes a gzip (or other) coding: such a body must be refused (415), not read as plain text. */
bool httpreq_body_unencoded(struct evhttp_request *req);

/* Marks the reply to close its connection after it is written. */
void httpreq_close_after(struct evhttp_request *req);

/* evhttp_send_reply() with the body req's output buffer holds; for HEAD the body's length is
 * announced and the body itself left out. */
void httpreq_send(struct evhttp_request *req, int code, const char *reason);

#endif
