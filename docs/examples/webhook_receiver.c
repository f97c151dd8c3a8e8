/* webhook_receiver.c: a minimal FraudShield webhook receiver that verifies signatures
 * (docs/alerter.md). Build and run:
 *
 *   cc -o webhook_receiver webhook_receiver.c $(pkg-config --cflags --libs libevent libcrypto)
 *   FS_WEBHOOK_SECRET='the subscription secret' ./webhook_receiver 8080
 *
 * Answers 200 to a request with a correct v2 signature and a fresh timestamp (and prints its event,
 * alert id and delivery id), 401 to anything else. A real receiver also remembers the delivery ids it
 * has processed (retries after a lost answer repeat them) before acting on an alert. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOLERANCE_S 300 /* older (or newer) timestamps are refused: no replay of captured requests */

static const char *secret;

/* X-FraudShield-Signature-V2 must be "v2=" + hex HMAC-SHA256(secret, timestamp "." delivery id "."
 * event type "." body): the delivery id and the event type are signed too, so a captured request
 * cannot come back as a "new" delivery within the timestamp window. */
static int signature_ok(const char *ts, const char *delivery, const char *event, const char *sig,
                        const unsigned char *body, size_t len) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    char want[3 + 2 * EVP_MAX_MD_SIZE + 1] = "v2=";
    if (!ts || !delivery || !event || !sig || labs((long)time(NULL) - atol(ts)) > TOLERANCE_S) return 0;
    size_t hlen = strlen(ts) + strlen(delivery) + strlen(event) + 3;
    unsigned char *msg = malloc(hlen + len + 1);
    if (!msg) return 0;
    snprintf((char *)msg, hlen + 1, "%s.%s.%s.", ts, delivery, event);
    memcpy(msg + hlen, body, len);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, hlen + len, mac, &mac_len);
    free(msg);
    for (unsigned int i = 0; i < mac_len; i++) snprintf(want + 3 + 2 * i, 3, "%02x", mac[i]);
    /* constant time: a timing difference would let an attacker guess the signature bytewise */
    return strlen(sig) == strlen(want) && CRYPTO_memcmp(sig, want, strlen(want)) == 0;
}

static void on_request(struct evhttp_request *req, void *arg) {
    (void)arg;
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const unsigned char *body = evbuffer_pullup(in, -1);
    const char *ts = evhttp_find_header(h, "X-FraudShield-Timestamp");
    const char *delivery = evhttp_find_header(h, "X-FraudShield-Delivery");
    const char *event = evhttp_find_header(h, "X-FraudShield-Event");
    const char *sig = evhttp_find_header(h, "X-FraudShield-Signature-V2");
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST ||
        !signature_ok(ts, delivery, event, sig, body ? body : (const unsigned char *)"", len)) {
        evhttp_send_reply(req, 401, "Unauthorized", NULL);
        return;
    }
    printf("%s alert=%s delivery=%s\n", event, evhttp_find_header(h, "X-FraudShield-Alert"), delivery);
    fflush(stdout);
    evhttp_send_reply(req, 200, "OK", NULL); /* answer fast: slow work goes to a queue */
}

int main(int argc, char **argv) {
    secret = getenv("FS_WEBHOOK_SECRET");
    if (argc != 2 || !secret || !*secret) {
        fprintf(stderr, "usage: FS_WEBHOOK_SECRET=... %s PORT\n", argv[0]);
        return 2;
    }
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    if (!base || !http || evhttp_bind_socket(http, "127.0.0.1", (unsigned short)atoi(argv[1])) != 0) {
        fprintf(stderr, "cannot listen on port %s\n", argv[1]);
        return 1;
    }
    evhttp_set_gencb(http, on_request, NULL);
    event_base_dispatch(base);
    return 0;
}
