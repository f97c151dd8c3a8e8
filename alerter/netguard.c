/* netguard: webhook-deny-networks (see netguard.h). */
#include "netguard.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One network: family AF_INET (4 bytes of net used) or AF_INET6 (16). */
typedef struct net_entry {
    int family;
    unsigned int prefix;
    unsigned char net[16];
} net_entry;

struct netguard {
    net_entry *v;
    size_t n;
};

static const unsigned char V4_MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
static const unsigned char NAT64_WKP[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0}; /* RFC 6052 */

static bool prefix_match(const unsigned char *a, const unsigned char *net, unsigned int prefix) {
    unsigned int full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, net, full) != 0) return false;
    return rest == 0 || ((a[full] ^ net[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* "/N": N in 0..max, digits only. Returns N or -1. */
static int parse_prefix(const char *s, unsigned int max) {
    unsigned int v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 3 || strspn(s, "0123456789") != n) return -1;
    for (size_t i = 0; i < n; i++) v = v * 10 + (unsigned int)(s[i] - '0');
    return v <= max ? (int)v : -1;
}

/* One entry ("169.254.0.0/16"), already trimmed, into *e. Returns 0, or -1 with what is wrong
 * with it in why. */
static int parse_entry(char *s, net_entry *e, char *why, size_t why_size) {
    char *slash = strchr(s, '/'), net[NETGUARD_ADDR_MAX] = "?";
    if (!slash) return snprintf(why, why_size, "no /prefix-length (one address: a.b.c.d/32, x::y/128)"), -1;
    *slash = '\0';
    memset(e, 0, sizeof *e);
    e->family = inet_pton(AF_INET, s, e->net) == 1    ? AF_INET
                : inet_pton(AF_INET6, s, e->net) == 1 ? AF_INET6
                                                      : 0;
    *slash = '/';
    if (!e->family) return snprintf(why, why_size, "not an IPv4 or IPv6 address before the /"), -1;
    unsigned int max = e->family == AF_INET ? 32 : 128;
    int prefix = parse_prefix(slash + 1, max);
    if (prefix < 0) return snprintf(why, why_size, "the prefix length must be 0..%u", max), -1;
    e->prefix = (unsigned int)prefix;
    unsigned char masked[16] = {0};
    for (unsigned int bit = 0; bit < e->prefix; bit++) masked[bit / 8] |= e->net[bit / 8] & (0x80 >> (bit % 8));
    if (memcmp(masked, e->net, max / 8) != 0) {
        inet_ntop(e->family, masked, net, sizeof net);
        return snprintf(why, why_size, "host bits set after the prefix length (the network is %s/%d)", net, prefix), -1;
    }
    if (e->family == AF_INET6 && e->prefix >= 96 && memcmp(e->net, V4_MAPPED, 12) == 0) {
        e->family = AF_INET; /* ::ffff:a.b.c.d/N: the IPv4 network a.b.c.d/(N-96) */
        e->prefix -= 96;
        memmove(e->net, e->net + 12, 4);
        memset(e->net + 4, 0, 12);
    }
    return 0;
}

/* Appends the entry text[0..len) (blanks around it trimmed). Returns 0 or -1 with errstr. */
static int add_entry(netguard *g, const char *text, size_t len, char *errstr, size_t errstr_size) {
    char buf[64];
    while (len && (*text == ' ' || *text == '\t')) text++, len--;
    while (len && (text[len - 1] == ' ' || text[len - 1] == '\t')) len--;
    if (len == 0) return snprintf(errstr, errstr_size, "an empty entry (two commas, or one at an end)"), -1;
    if (len >= sizeof buf) return snprintf(errstr, errstr_size, "\"%.40s...\": too long for a network", text), -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char why[120];
    if (parse_entry(buf, &g->v[g->n], why, sizeof why) != 0)
        return snprintf(errstr, errstr_size, "\"%s\": %s", buf, why), -1;
    g->n++;
    return 0;
}

netguard *netguard_new(const char *networks, char *errstr, size_t errstr_size) {
    size_t cap = 1;
    for (const char *p = networks; *p; p++) cap += *p == ',';
    netguard *g = calloc(1, sizeof *g);
    if (g) g->v = calloc(cap, sizeof *g->v);
    if (!g || !g->v) {
        snprintf(errstr, errstr_size, "out of memory");
        goto failed;
    }
    if (networks[strspn(networks, " \t")] == '\0') return g; /* "": nothing denied */
    for (const char *p = networks;; p++) {
        char why[200];
        size_t len = strcspn(p, ",");
        if (add_entry(g, p, len, why, sizeof why) != 0) {
            snprintf(errstr, errstr_size, "webhook-deny-networks: %s", why);
            goto failed;
        }
        p += len;
        if (!*p) return g;
    }
failed:
    netguard_destroy(g);
    return NULL;
}

void netguard_destroy(netguard *g) {
    if (!g) return;
    free(g->v);
    free(g);
}

/* The address of sa as family and bytes, an IPv4-mapped IPv6 one as IPv4. False for another
 * family (or a truncated address). */
static bool addr_of(const struct sockaddr *sa, socklen_t len, int *family, unsigned char out[16]) {
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        *family = AF_INET;
        memcpy(out, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family != AF_INET6 || len < (socklen_t)sizeof(struct sockaddr_in6)) return false;
    const unsigned char *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    bool mapped = memcmp(a, V4_MAPPED, 12) == 0;
    *family = mapped ? AF_INET : AF_INET6;
    memcpy(out, mapped ? a + 12 : a, mapped ? 4 : 16);
    return true;
}

static bool list_denies(const netguard *g, int family, const unsigned char *a) {
    for (size_t i = 0; i < g->n; i++)
        if (g->v[i].family == family && prefix_match(a, g->v[i].net, g->v[i].prefix)) return true;
    return false;
}

bool netguard_denies(const netguard *g, const struct sockaddr *sa, socklen_t len) {
    int family;
    unsigned char a[16];
    if (!addr_of(sa, len, &family, a)) return false;
    /* 64:ff9b::a.b.c.d: on an IPv6-only network a NAT64 gateway carries it on to a.b.c.d (a DNS64
     * resolver hands out such names for IPv4-only hosts): denied as either address. */
    if (family == AF_INET6 && memcmp(a, NAT64_WKP, sizeof NAT64_WKP) == 0 &&
        list_denies(g, AF_INET, a + sizeof NAT64_WKP))
        return true;
    return list_denies(g, family, a);
}

void netguard_addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t out_size) {
    int family;
    unsigned char a[16];
    if (!addr_of(sa, len, &family, a) || !inet_ntop(family, a, out, (socklen_t)out_size))
        snprintf(out, out_size, "family %d", (int)sa->sa_family);
}

int netguard_url_host(const char *url, char *host, size_t host_size) {
    CURLU *u = curl_url();
    char *h = NULL;
    int rc = -1;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h && *h) {
        size_t n = strlen(h);
        bool bracketed = n >= 2 && h[0] == '[' && h[n - 1] == ']';
        snprintf(host, host_size, "%.*s", (int)(bracketed ? n - 2 : n), bracketed ? h + 1 : h);
        rc = 0;
    }
    curl_free(h);
    curl_url_cleanup(u);
    return rc;
}

bool netguard_host_denied(const netguard *g, const char *host, char addr[NETGUARD_ADDR_MAX]) {
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    const struct sockaddr *sa = (const struct sockaddr *)&v4;
    socklen_t len = sizeof v4;
    if (inet_pton(AF_INET, host, &v4.sin_addr) != 1) {
        if (inet_pton(AF_INET6, host, &v6.sin6_addr) != 1) return false; /* a name */
        sa = (const struct sockaddr *)&v6, len = sizeof v6;
    }
    if (!netguard_denies(g, sa, len)) return false;
    if (addr) netguard_addr_text(sa, len, addr, NETGUARD_ADDR_MAX);
    return true;
}
