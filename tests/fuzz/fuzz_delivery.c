/* libFuzzer target for what the alerter makes of bytes it does not control on the delivery side:
 *   - an event's JSON (a fraud_alerts message's body, stored as it came) formatted as an email
 *     (alerter/mail.c mail_format()): NULL exactly when the body is not a JSON object, else a
 *     message whose header block is the ten headers mail.c writes, one per CRLF-terminated line
 *     (no header or line injection from a field), every line break a CRLF, and valid UTF-8 (it is
 *     sent as charset=utf-8, 8bit);
 *   - a subscriber's HTTP answer: a response header line through delivery.c's header callback and
 *     the Retry-After it keeps through retry_parse_after() (0 .. 366 days), and the body through
 *     the body callback (at most SNIPPET_MAX bytes kept, NUL-terminated).
 * delivery.c is included for its static callbacks; nothing is sent.
 *
 * Build: make fuzz; run: build/fuzz/fuzz_delivery -max_total_time=60 corpus/ */
#include "../../alerter/delivery.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mail.h"

#define NOW_MS 1763719200000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void check_mail(const uint8_t *data, size_t size) {
    static const char *const to[] = {"soc@example.com", "oncall@example.com"};
    static const char *const names[] = {"Date: ", "From: ", "To: ", "Subject: ", "Message-ID: ",
                                        "MIME-Version: ", "Content-Type: ",
                                        "Content-Transfer-Encoding: ", "X-FraudShield-Event: ",
                                        "X-FraudShield-Alert: "};
    const char *event = size && (data[0] & 1) ? "alert.resolved" : "alert.created";
    const char *body = size ? (const char *)data + 1 : "";
    size_t body_len = size ? size - 1 : 0, len = 0;
    char *msg = mail_format("alerts@fraudshield.example", to, 2, event,
                            "9c1e4a52-7b3d-5e6f-8a9b-0c1d2e3f4a5b", body, body_len, NOW_MS, &len);
    json_t *o = json_loadb(body, body_len, 0, NULL);
    int is_object = json_is_object(o);
    json_decref(o);
    if (!msg) {
        if (is_object) {
            fprintf(stderr, "mail: a JSON object gave no message\n");
            abort();
        }
        return;
    }
    if (!is_object || len != strlen(msg)) {
        fprintf(stderr, "mail: message for a non-object, or with a NUL\n");
        abort();
    }
    for (size_t i = 0; i < len; i++) {
        if ((msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r')) ||
            (msg[i] == '\r' && (i + 1 == len || msg[i + 1] != '\n'))) {
            fprintf(stderr, "mail: bare CR or LF at %zu\n", i);
            abort();
        }
    }
    const char *end = strstr(msg, "\r\n\r\n"), *line = msg;
    size_t n = 0;
    if (!end) abort();
    while (line < end + 2) {
        const char *eol = strstr(line, "\r\n");
        if (n >= sizeof names / sizeof *names || strncmp(line, names[n], strlen(names[n])) != 0) {
            fprintf(stderr, "mail: header %zu is not %s: %.*s\n", n,
                    n < sizeof names / sizeof *names ? names[n] : "(none)", (int)(eol - line), line);
            abort();
        }
        n++;
        line = eol + 2;
    }
    if (n != sizeof names / sizeof *names) {
        fprintf(stderr, "mail: %zu headers\n", n);
        abort();
    }
    if (!utf8_valid((const unsigned char *)msg, len)) {
        fprintf(stderr, "mail: not valid UTF-8\n");
        abort();
    }
    free(msg);
}

static void check_answer(const uint8_t *data, size_t size) {
    transfer *t = calloc(1, sizeof *t);
    char *line = malloc(size + 1);
    if (!t || !line) abort();
    memcpy(line, data, size);
    line[size] = '\0';
    /* libcurl hands the header callback one line, CRLF included, not NUL-terminated */
    if (on_header(line, 1, size, t) != size) abort();
    if (memchr(t->retry_after, '\0', sizeof t->retry_after) == NULL) abort();
    int64_t ms = -7;
    if (t->retry_after[0] && retry_parse_after(t->retry_after, NOW_MS, &ms) == 0 &&
        (ms < 0 || ms > 366LL * 24 * 3600 * 1000)) {
        fprintf(stderr, "Retry-After '%s': %lld ms\n", t->retry_after, (long long)ms);
        abort();
    }
    /* the body in two chunks, as the network may cut it */
    size_t half = size / 2;
    if (on_body(line, 1, half, t) != half || on_body(line + half, 1, size - half, t) != size - half)
        abort();
    if (t->snippet_len > SNIPPET_MAX || t->snippet[t->snippet_len] != '\0') abort();
    free(line);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_mail(data, size);
    check_answer(data, size);
    return 0;
}
