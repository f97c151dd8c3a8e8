/* netguard: the addresses webhooks must never reach (webhook-deny-networks), against server-side
 * request forgery: a subscription URL whose host is, or resolves to, the cloud metadata service
 * (169.254.169.254), this host (0.0.0.0) or another internal-only address.
 *
 * A list of networks in CIDR notation, IPv4 and IPv6, comma-separated ("169.254.0.0/16,fe80::/10").
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d: a dual-stack socket connects to a.b.c.d) is checked
 * as its IPv4 address, and an IPv6 entry inside ::ffff:0:0/96 is read as the IPv4 network it maps;
 * other IPv6 entries match IPv6 addresses only (::/0 does not cover IPv4). An address of NAT64's
 * well-known prefix (64:ff9b::a.b.c.d, RFC 6052: a NAT64 gateway carries it on to a.b.c.d) is
 * denied when either it or a.b.c.d is in the list.
 *
 * The real check is made by the delivery engine at each connect (delivery.c: every address libcurl
 * is about to connect to, after DNS, so a rebinding name is caught too); the CLI refuses a URL
 * whose host is a literal address in the list (netguard_url_host + netguard_host_denied) so the
 * mistake shows early, and the engine does the same before libcurl starts (through a proxy the
 * connect-time check sees only the proxy).
 * Immutable once made: any number of threads may read one. */
#ifndef FS_NETGUARD_H
#define FS_NETGUARD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* The alerter's default: what no webhook receiver should ever be. Loopback and private ranges are
 * not in it (subscribers are often internal services). */
#define NETGUARD_DEFAULT                                                                           \
    "0.0.0.0/8,169.254.0.0/16,100.100.100.200/32,224.0.0.0/4,240.0.0.0/4,255.255.255.255/32,"      \
    "::/128,fe80::/10,ff00::/8,fd00:ec2::254/128"

#define NETGUARD_ADDR_MAX INET6_ADDRSTRLEN /* an address as text, with its NUL */

typedef struct netguard netguard;

/* Parses a list (blanks around entries ignored; "" is the empty list: nothing denied). Each entry
 * is address/prefix-length with no host bits set. NULL with errstr ("webhook-deny-networks: " and
 * the bad entry, or out of memory). */
netguard *netguard_new(const char *networks, char *errstr, size_t errstr_size);
void netguard_destroy(netguard *g); /* accepts NULL */

/* Whether the address lies in a listed network. Only AF_INET and AF_INET6 addresses can (any other
 * family: false; the caller decides). */
bool netguard_denies(const netguard *g, const struct sockaddr *sa, socklen_t len);

/* The address as text into out (NETGUARD_ADDR_MAX): an IPv4-mapped one as IPv4, what the list was
 * checked against; "family N" for another family. */
void netguard_addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t out_size);

/* The host of url as libcurl reads it (an IPv6 literal without its brackets; a numeric IPv4 host
 * such as 0x7f.1 normalized to 127.0.0.1) into host. Returns 0, or -1 when url has none. */
int netguard_url_host(const char *url, char *host, size_t host_size);

/* Whether host (as netguard_url_host() gives it) is a literal IP address inside a listed network
 * (a name is not resolved: false); when denied and addr is not NULL, the address as
 * netguard_addr_text() writes it (an IPv4-mapped one as IPv4) into addr. */
bool netguard_host_denied(const netguard *g, const char *host, char addr[NETGUARD_ADDR_MAX]);

#endif
