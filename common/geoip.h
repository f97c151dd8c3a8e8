/* geoip: the country of an IP address, for ingest, before the address is pseudonymized (the scorer
 * only ever sees a digest, so this is the one place an IP country can come from).
 *
 * Uses the legacy MaxMind format through libGeoIP (Debian: libgeoip1 + geoip-database, or a
 * MaxMind GeoIP.dat / GeoIPv6.dat the operator provides), loaded with dlopen() at start: a host
 * without the library or the database runs unchanged and every lookup answers "unknown". Not
 * thread-safe: one handle per thread (ingest: the event loop). */
#ifndef FS_GEOIP_H
#define FS_GEOIP_H

#include <stdbool.h>

typedef struct geoip geoip;

/* dir: where GeoIP.dat / GeoIPv6.dat are ("" : /usr/share/GeoIP). Never fails: without the
 * library or the files the handle answers "" (geoip_available() false). NULL only when out of
 * memory (geoip_country() accepts NULL). */
geoip *geoip_new(const char *dir);
void geoip_destroy(geoip *g); /* accepts NULL */

bool geoip_available(const geoip *g);

/* ISO 3166-1 alpha-2 country of ip (IPv4 or IPv6 text) into out, "" when unknown. */
void geoip_country(geoip *g, const char *ip, char out[3]);

#endif
