/* geoip: IP -> country via libGeoIP, loaded at run time (see geoip.h). */
#include "geoip.h"

#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEOIP_MEMORY_CACHE 1 /* libGeoIP's flag: the database in memory, lookups without I/O */

typedef void *(*open_fn)(const char *file, int flags);
typedef const char *(*lookup_fn)(void *gi, const char *addr);
typedef void (*delete_fn)(void *gi);

struct geoip {
    void *lib;
    void *v4, *v6;
    lookup_fn by_addr, by_addr_v6;
    delete_fn del;
};

static void *open_db(struct geoip *g, open_fn op, const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/GeoIP", name);
    FILE *f = fopen(path, "rb"); /* libGeoIP prints to stderr on a missing file: check first */
    if (!f) return NULL;
    fclose(f);
    (void)g;
    return op(path, GEOIP_MEMORY_CACHE);
}

geoip *geoip_new(const char *dir) {
    struct geoip *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->lib = dlopen("libGeoIP.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!g->lib) return g; /* no library: every lookup is "unknown" */
    open_fn op = (open_fn)dlsym(g->lib, "GeoIP_open");
    g->by_addr = (lookup_fn)dlsym(g->lib, "GeoIP_country_code_by_addr");
    g->by_addr_v6 = (lookup_fn)dlsym(g->lib, "GeoIP_country_code_by_addr_v6");
    g->del = (delete_fn)dlsym(g->lib, "GeoIP_delete");
    if (!op || !g->by_addr || !g->del) return g;
    g->v4 = open_db(g, op, dir, "GeoIP.dat");
    if (g->by_addr_v6) g->v6 = open_db(g, op, dir, "GeoIPv6.dat");
    return g;
}

void geoip_destroy(geoip *g) {
    if (!g) return;
    if (g->v4) g->del(g->v4);
    if (g->v6) g->del(g->v6);
    if (g->lib) dlclose(g->lib);
    free(g);
}

bool geoip_available(const geoip *g) { return g && (g->v4 || g->v6); }

void geoip_country(geoip *g, const char *ip, char out[3]) {
    out[0] = '\0';
    if (!g || !ip || !*ip) return;
    bool v6 = strchr(ip, ':') != NULL;
    void *db = v6 ? g->v6 : g->v4;
    const char *cc = db ? (v6 ? g->by_addr_v6 : g->by_addr)(db, ip) : NULL;
    /* only real country codes: the database also knows "A1" (anonymous proxy), "EU", "--" */
    if (cc && isupper((unsigned char)cc[0]) && isupper((unsigned char)cc[1]) && !cc[2] &&
        strcmp(cc, "A1") != 0 && strcmp(cc, "A2") != 0 && strcmp(cc, "EU") != 0 &&
        strcmp(cc, "AP") != 0 && strcmp(cc, "O1") != 0) {
        out[0] = cc[0];
        out[1] = cc[1];
        out[2] = '\0';
    }
}
