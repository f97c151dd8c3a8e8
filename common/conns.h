/* conns: HTTP connections (ingest's API, every process's admin port): plain or TLS bufferevents,
 * the connection limit, and a deadline per request.
 *
 * libevent 2.1's evhttp has neither a connection limit nor a hook when a connection opens, and its
 * timeouts are per read: a client sending one byte every few seconds would hold a connection
 * forever. conns hooks in through evhttp_set_bevcb() (it creates every connection's bufferevent,
 * an OpenSSL one on the TLS listener), so it sees every connection, and then:
 *  - counts them; at max_conns it stops accepting (the listeners are disabled; new connections wait
 *    in the kernel's backlog) until one closes;
 *  - gives each connection deadline_ms to deliver a complete request (TLS handshake, headers and
 *    body), and the same again between requests on a kept-alive connection; past it the connection
 *    is closed. The deadline is off while ingest works on a request (its own timeouts apply);
 *  - tells the owner when a connection closes while it holds a request of it (conns_user).
 *
 * Owned by the loop thread. */
#ifndef FS_CONNS_H
#define FS_CONNS_H

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct conns conns;

/* Called with a connection's user slot value (set: a request waiting): on_close when its
 * connection closes, conns_foreach_user for each. */
typedef void (*conns_user_fn)(void *user, void *arg);

conns *conns_new(struct event_base *base, size_t max_conns, int deadline_ms, conns_user_fn on_close,
                 void *arg, char *errstr, size_t errstr_size);
/* Frees the bookkeeping; call after evhttp_free() of every attached server. Accepts NULL. */
void conns_destroy(conns *c);

/* Makes conns create http's connections (tls: an SSL_CTX for a TLS listener, else NULL; not owned:
 * see conns_set_tls). Call before binding. */
void conns_attach(conns *c, struct evhttp *http, SSL_CTX *tls);
/* Replaces the TLS context of new connections (SIGHUP: renewed certificate). Takes a reference
 * (SSL_CTX_up_ref) and drops the previous one. */
void conns_set_tls(conns *c, SSL_CTX *tls);

/* A listener whose accepting is paused at max_conns. Forget them all before they are freed. */
void conns_add_listener(conns *c, struct evhttp_bound_socket *bound);
void conns_forget_listeners(conns *c);

/* A complete request arrived on req's connection: its deadline stops until the reply is written.
 * Returns the connection's user slot (NULL for an untracked connection). */
void **conns_on_request(conns *c, struct evhttp_request *req);

/* on: once a second, close the connections whose client closed them (FIN or RST) while a request
 * waited; the owner hears of it through on_close (off by default). A client that half-closes
 * after its request and still waits for the answer is taken as gone too. */
void conns_set_close_check(conns *c, bool on);

size_t conns_count(const conns *c);

/* Calls fn(user, arg) for every connection whose user slot is set (a request waiting), from a
 * snapshot taken first: fn may answer the request (clear the slot). Returns -1 when out of memory
 * (nothing called), else 0. */
int conns_foreach_user(conns *c, conns_user_fn fn, void *arg);

/* A TLS server context from PEM files (certificate chain, private key). NULL with errstr. */
SSL_CTX *conns_tls_load(const char *cert_file, const char *key_file, char *errstr,
                        size_t errstr_size);

#endif
