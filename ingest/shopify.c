/* shopify: webhook signatures and the order -> payment mapping (see shopify.h). */
#include "shopify.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fsutil.h"
#include "pay.h"

#define SHOPIFY_SECRET_MAX 512
#define SHOPIFY_LINE_MAX 1024
#define SHOPIFY_UA_MAX 256 /* device_info strings of the payment contract */

typedef struct shop {
    char domain[SHOPIFY_DOMAIN_MAX + 1]; /* lower case */
    char secret[SHOPIFY_SECRET_MAX + 1];
} shop;

struct shopify {
    shop *shops;
    size_t n;
};

/* ------------------------------------------------------------------------------ secrets */

static int shop_add(shopify *s, const char *domain, size_t dlen, const char *secret, size_t slen,
                    char *errstr, size_t errstr_size) {
    if (dlen == 0 || dlen > SHOPIFY_DOMAIN_MAX || slen == 0 || slen > SHOPIFY_SECRET_MAX) {
        snprintf(errstr, errstr_size, "expected '<shop domain> <secret>' (domain <= %d bytes, "
                 "secret 1..%d bytes)", SHOPIFY_DOMAIN_MAX, SHOPIFY_SECRET_MAX);
        return -1;
    }
    shop *grown = realloc(s->shops, (s->n + 1) * sizeof *grown);
    if (!grown) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    s->shops = grown;
    shop *sh = &s->shops[s->n];
    for (size_t i = 0; i < dlen; i++) sh->domain[i] = (char)tolower((unsigned char)domain[i]);
    sh->domain[dlen] = '\0';
    memcpy(sh->secret, secret, slen);
    sh->secret[slen] = '\0';
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->shops[i].domain, sh->domain) == 0) {
            snprintf(errstr, errstr_size, "shop %s listed twice", sh->domain);
            OPENSSL_cleanse(sh, sizeof *sh);
            return -1;
        }
    }
    s->n++;
    return 0;
}

/* One "domain secret" line (blank and # lines skipped). */
static int parse_line(shopify *s, const char *line, char *errstr, size_t errstr_size) {
    const char *p = line + strspn(line, " \t\r");
    if (*p == '\0' || *p == '#') return 0;
    size_t dlen = strcspn(p, " \t\r");
    const char *sec = p + dlen + strspn(p + dlen, " \t\r");
    size_t slen = strcspn(sec, " \t\r");
    if (sec[slen + strspn(sec + slen, " \t\r")] != '\0') slen = 0; /* a third field */
    return shop_add(s, p, dlen, sec, slen, errstr, errstr_size);
}

static int parse_text(shopify *s, const char *text, char *errstr, size_t errstr_size) {
    char line[SHOPIFY_LINE_MAX], why[200];
    int lineno = 0, rc = 0;
    for (const char *p = text; *p && rc == 0;) {
        size_t len = strcspn(p, "\n");
        lineno++;
        if (len >= sizeof line) {
            snprintf(why, sizeof why, "line too long");
            rc = -1;
        } else {
            memcpy(line, p, len);
            line[len] = '\0';
            rc = parse_line(s, line, why, sizeof why);
        }
        if (rc) snprintf(errstr, errstr_size, "line %d: %s", lineno, why);
        p += len + (p[len] == '\n');
    }
    OPENSSL_cleanse(line, sizeof line);
    return rc;
}

static int parse_inline(shopify *s, const char *list, char *errstr, size_t errstr_size) {
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (!eq || shop_add(s, p, (size_t)(eq - p), eq + 1, len - (size_t)(eq - p) - 1, errstr,
                            errstr_size) != 0) {
            if (!eq) snprintf(errstr, errstr_size, "shopify-secrets: expected domain=secret,...");
            return -1;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

shopify *shopify_parse(const char *file_text, const char *inline_list, char *errstr,
                       size_t errstr_size) {
    shopify *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if ((file_text && parse_text(s, file_text, errstr, errstr_size) != 0) ||
        parse_inline(s, inline_list, errstr, errstr_size) != 0) {
        shopify_destroy(s);
        return NULL;
    }
    return s;
}

shopify *shopify_load(const char *path, const char *inline_list, char *errstr, size_t errstr_size) {
    char *text = NULL, why[256];
    shopify *s = NULL;
    if (path && path[0]) {
        FILE *f = fopen(path, "re");
        long size = -1;
        if (f && fseek(f, 0, SEEK_END) == 0) size = ftell(f);
        if (f && size >= 0 && size < (1L << 20) && fseek(f, 0, SEEK_SET) == 0 &&
            (text = calloc(1, (size_t)size + 1)) && fread(text, 1, (size_t)size, f) == (size_t)size) {
        } else {
            snprintf(errstr, errstr_size, "%s: %s", path, f ? "unreadable or too large" : strerror(errno));
            if (f) fclose(f);
            free(text);
            return NULL;
        }
        fclose(f);
    }
    s = shopify_parse(text, inline_list, why, sizeof why);
    if (!s) snprintf(errstr, errstr_size, "%s: %s", path && path[0] ? path : "shopify-secrets", why);
    if (text) OPENSSL_cleanse(text, strlen(text));
    free(text);
    return s;
}

void shopify_destroy(shopify *s) {
    if (!s) return;
    if (s->shops) OPENSSL_cleanse(s->shops, s->n * sizeof *s->shops);
    free(s->shops);
    free(s);
}

size_t shopify_count(const shopify *s) { return s ? s->n : 0; }

/* --------------------------------------------------------------------------- signatures */

void shopify_sign(const char *secret, const void *body, size_t len, char out[45]) {
    unsigned char mac[32];
    unsigned int mlen = sizeof mac;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), body, len, mac, &mlen);
    EVP_EncodeBlock((unsigned char *)out, mac, (int)sizeof mac); /* 44 chars + NUL */
}

int shopify_verify(const shopify *s, const char *shop_domain, const char *hmac_b64,
                   const void *body, size_t len) {
    char expected[45];
    const shop *sh = NULL;
    if (!s || !shop_domain || !hmac_b64 || strlen(hmac_b64) != 44) return -1;
    for (size_t i = 0; i < s->n && !sh; i++)
        if (strcasecmp(s->shops[i].domain, shop_domain) == 0) sh = &s->shops[i];
    if (!sh) return -1;
    shopify_sign(sh->secret, body, len, expected);
    int rc = CRYPTO_memcmp(expected, hmac_b64, 44) == 0 ? 0 : -1;
    OPENSSL_cleanse(expected, sizeof expected);
    return rc;
}

/* ------------------------------------------------------------------------------ mapping */

static const char *str_at(const json_t *o, const char *key) {
    const char *v = json_string_value(json_object_get(o, key));
    return v && v[0] ? v : NULL;
}

/* An id member that Shopify sends as a number (string ids are accepted too). */
static int id_at(const json_t *o, const char *key, char *out, size_t out_size) {
    const json_t *v = json_object_get(o, key);
    if (json_is_integer(v) && json_integer_value(v) > 0)
        snprintf(out, out_size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < out_size)
        snprintf(out, out_size, "%s", json_string_value(v));
    else
        return -1;
    return 0;
}

/* "Shopify Payments" -> "shopify_payments": the contract's token form ([a-z0-9_-], <= 32). */
static void tokenize(const char *in, char out[PAY_SHORT_MAX + 1]) {
    size_t n = 0;
    for (; *in && n < PAY_SHORT_MAX; in++) {
        char c = (char)tolower((unsigned char)*in);
        out[n++] = (isalnum((unsigned char)c) || c == '-') ? c : '_';
    }
    out[n] = '\0';
}

static void set_str(json_t *o, const char *key, const char *v) {
    if (v) json_object_set_new(o, key, json_string(v));
}

/* Shopify writes prices with two decimals whatever the currency ("1000.00" JPY, "12.50" EUR): the
 * zeros past the last significant decimal go, so that the payment validation's "at most the
 * currency's decimals" refuses only amounts that really have more. */
static json_t *price_string(const char *s) {
    char buf[64];
    size_t n = strlen(s);
    if (n >= sizeof buf || !strchr(s, '.')) return json_string(s);
    memcpy(buf, s, n + 1);
    while (n > 0 && buf[n - 1] == '0') buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.') buf[--n] = '\0';
    return json_string(n ? buf : s);
}

bool shopify_request_is_free(const json_t *req) {
    const char *a = json_string_value(json_object_get(req, "amount"));
    return a && a[0] && strspn(a, "0.") == strlen(a) && strchr(a, '0');
}

/* Amount, currency, method, card: what the customer paid with. */
static void map_payment(const json_t *order, json_t *req) {
    char method[PAY_SHORT_MAX + 1] = "shopify", card_type[PAY_SHORT_MAX + 1];
    const json_t *gw = json_array_get(json_object_get(order, "payment_gateway_names"), 0);
    const json_t *pd = json_object_get(order, "payment_details");
    const char *total = str_at(order, "total_price");
    const char *number = str_at(pd, "credit_card_number"); /* "•••• •••• •••• 4242" */
    if (json_string_value(gw) && json_string_value(gw)[0]) tokenize(json_string_value(gw), method);
    if (total) json_object_set_new(req, "amount", price_string(total));
    else json_object_set(req, "amount", json_object_get(order, "total_price")); /* left to validation */
    set_str(req, "currency", str_at(order, "currency"));
    json_object_set_new(req, "payment_method", json_string(method));
    json_object_set_new(req, "transaction_type", json_string("purchase"));
    if (str_at(pd, "credit_card_company")) {
        tokenize(str_at(pd, "credit_card_company"), card_type);
        json_object_set_new(req, "card_type", json_string(card_type));
    }
    size_t n = number ? strlen(number) : 0;
    if (n >= 4 && isdigit((unsigned char)number[n - 1]) && isdigit((unsigned char)number[n - 2]) &&
        isdigit((unsigned char)number[n - 3]) && isdigit((unsigned char)number[n - 4]))
        json_object_set_new(req, "card_last_four", json_string(number + n - 4));
}

/* Email, IP, addresses, device: who paid and from where. */
static void map_customer(const json_t *order, json_t *req, const char *order_id) {
    const json_t *cust = json_object_get(order, "customer");
    const json_t *client = json_object_get(order, "client_details");
    const char *billing = str_at(json_object_get(order, "billing_address"), "country_code");
    const char *shipping = str_at(json_object_get(order, "shipping_address"), "country_code");
    const char *ua = str_at(client, "user_agent");
    const char *ip = str_at(order, "browser_ip");
    const char *email = str_at(order, "email");
    char user[PAY_ID_MAX + 1], cid[32];
    if (id_at(cust, "id", cid, sizeof cid) == 0) snprintf(user, sizeof user, "shopify:%s", cid);
    else snprintf(user, sizeof user, "shopify-guest:%s", order_id); /* no account: one per order */
    json_object_set_new(req, "user_id", json_string(user));
    set_str(req, "email", email ? email : str_at(order, "contact_email") ? str_at(order, "contact_email")
                                                                         : str_at(cust, "email"));
    set_str(req, "ip_address", ip ? ip : str_at(client, "browser_ip"));
    set_str(req, "billing_country", billing);
    set_str(req, "shipping_country", shipping);
    set_str(req, "country", billing ? billing : shipping);
    json_t *dev = json_object();
    if (ua) json_object_set_new(dev, "user_agent", json_stringn(ua, strnlen(ua, SHOPIFY_UA_MAX)));
    if (str_at(client, "session_hash")) /* the storefront session: the closest to a device id */
        json_object_set_new(dev, "device_id", json_string(str_at(client, "session_hash")));
    if (json_object_size(dev)) json_object_set_new(req, "device_info", dev);
    else json_decref(dev);
}

json_t *shopify_order_to_request(const json_t *order, const char *shop_domain, char *errstr,
                                 size_t errstr_size) {
    char order_id[32], name[SHOPIFY_DOMAIN_MAX + 40], pid[37];
    if (!json_is_object(order) || id_at(order, "id", order_id, sizeof order_id) != 0) {
        snprintf(errstr, errstr_size, "the order has no id");
        return NULL;
    }
    int n = snprintf(name, sizeof name, "%s:%s", shop_domain, order_id);
    json_t *req = json_object();
    if (!req || n < 0 || (size_t)n >= sizeof name ||
        fs_uuid_v5(SHOPIFY_NS, name, (size_t)n, pid) != 0) {
        snprintf(errstr, errstr_size, "cannot derive the payment id");
        json_decref(req);
        return NULL;
    }
    json_object_set_new(req, "payment_id", json_string(pid));
    json_object_set_new(req, "merchant_id", json_string(shop_domain));
    map_payment(order, req);
    map_customer(order, req, order_id);
    set_str(req, "timestamp", str_at(order, "created_at"));
    json_t *meta = json_pack("{s:s, s:s, s:s}", "source", "shopify", "shop_domain", shop_domain,
                             "order_id", order_id);
    if (meta && json_object_get(order, "order_number"))
        json_object_set(meta, "order_number", json_object_get(order, "order_number"));
    if (meta && str_at(order, "financial_status"))
        json_object_set_new(meta, "financial_status", json_string(str_at(order, "financial_status")));
    if (meta) json_object_set_new(req, "metadata", meta);
    return req;
}
