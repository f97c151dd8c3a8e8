/* mail: plain-text email form of an alert event (see mail.h). */
#include "mail.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsutil.h"

/* A field of o as single-line text ("" when absent): strings as they are, other values as JSON;
 * at most size - 1 bytes, cut between characters (the message is sent as charset=utf-8). */
static void field(const json_t *o, const char *name, char *out, size_t size) {
    const json_t *v = json_object_get(o, name);
    int n = 0;
    out[0] = '\0';
    if (json_is_string(v)) {
        n = snprintf(out, size, "%s", json_string_value(v));
    } else if (v && !json_is_null(v)) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s) n = snprintf(out, size, "%s", s);
        free(s);
    }
    if (n > 0 && (size_t)n >= size) fs_utf8_trim(out);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
}

static void put_line(FILE *f, const char *label, const json_t *o, const char *name) {
    char v[512];
    field(o, name, v, sizeof v);
    if (v[0]) fprintf(f, "%-12s %s\r\n", label, v);
}

static void put_reasons(FILE *f, const json_t *o) {
    const json_t *reasons = json_object_get(o, "reasons");
    size_t i;
    const json_t *r;
    if (!json_is_array(reasons) || json_array_size(reasons) == 0) return;
    fprintf(f, "\r\nReasons:\r\n");
    json_array_foreach(reasons, i, r) {
        char code[80], sev[40], weight[24], msg[300];
        field(r, "code", code, sizeof code);
        field(r, "severity", sev, sizeof sev);
        field(r, "weight", weight, sizeof weight);
        field(r, "message", msg, sizeof msg);
        fprintf(f, "  - %s (%s, weight %s): %s\r\n", code, sev, weight, msg);
    }
}

static void put_headers(FILE *f, const char *from, const char *const *to, size_t n_to,
                        const char *delivery_id, const json_t *o, const char *event_type,
                        int64_t now_ms) {
    char date[64], decision[16], score[16], payment[64], alert[64], resolution[40];
    time_t now = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    field(o, "decision", decision, sizeof decision);
    field(o, "score", score, sizeof score);
    field(o, "payment_id", payment, sizeof payment);
    field(o, "alert_id", alert, sizeof alert);
    field(o, "resolution", resolution, sizeof resolution);
    fprintf(f, "Date: %s\r\nFrom: <%s>\r\nTo: ", date, from);
    for (size_t i = 0; i < n_to; i++) fprintf(f, "%s<%s>", i ? ", " : "", to[i]);
    if (strcmp(event_type, "alert.resolved") == 0)
        fprintf(f, "\r\nSubject: [FraudShield] alert resolved as %s: payment %s\r\n", resolution, payment);
    else
        fprintf(f, "\r\nSubject: [FraudShield] %s alert, score %s: payment %s\r\n", decision, score,
                payment);
    fprintf(f, "Message-ID: <%s@fraudshield.alerter>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
               "X-FraudShield-Event: %s\r\nX-FraudShield-Alert: %s\r\n\r\n",
            delivery_id, event_type, alert);
}

char *mail_format(const char *from, const char *const *to, size_t n_to, const char *event_type,
                  const char *delivery_id, const char *body, size_t body_len, int64_t now_ms,
                  size_t *out_len) {
    char *buf = NULL;
    size_t len = 0;
    json_t *o = json_loadb(body, body_len, 0, NULL);
    FILE *f = json_is_object(o) ? open_memstream(&buf, &len) : NULL;
    if (!f) goto failed;
    put_headers(f, from, to, n_to, delivery_id, o, event_type, now_ms);
    fprintf(f, "%s\r\n\r\n", strcmp(event_type, "alert.resolved") == 0
                                 ? "An analyst resolved a FraudShield alert."
                                 : "FraudShield flagged a payment.");
    put_line(f, "Decision:", o, "decision");
    put_line(f, "Score:", o, "score");
    put_line(f, "Resolution:", o, "resolution");
    put_line(f, "Reason:", o, "reason");
    put_line(f, "Payment:", o, "payment_id");
    put_line(f, "Alert:", o, "alert_id");
    put_line(f, "Amount:", o, "amount");
    put_line(f, "Currency:", o, "currency");
    put_line(f, "Country:", o, "country");
    put_line(f, "Merchant:", o, "merchant_id");
    put_line(f, "User:", o, "user_id");
    put_line(f, "Event time:", o, "event_time");
    put_line(f, "Decided at:", o, "created_at");
    put_reasons(f, o);
    int rc = fclose(f); /* buf and len are final only now */
    f = NULL;
    if (rc != 0) goto failed;
    json_decref(o);
    *out_len = len;
    return buf;
failed:
    if (f) fclose(f);
    json_decref(o);
    free(buf);
    return NULL;
}
