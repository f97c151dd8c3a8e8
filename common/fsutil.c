/* fsutil: UUIDs, RFC 3339 time, clocks, secret files' modes. */
#include "fsutil.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char HEX[] = "0123456789abcdef";

void fs_hex(const unsigned char *in, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static void uuid_format(const unsigned char b[16], char out[37]) {
    char hex[33];
    fs_hex(b, 16, hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10; /* ASCII only: no locale lookup per digit */
    return -1;
}

bool fs_uuid_valid(const char *s) {
    static const int dash[] = {8, 13, 18, 23};
    if (!s || strlen(s) != FS_UUID_STRLEN) return false;
    for (int i = 0, d = 0; i < FS_UUID_STRLEN; i++) {
        if (d < 4 && i == dash[d]) {
            if (s[i] != '-') return false;
            d++;
        } else if (hexval((unsigned char)s[i]) < 0) {
            return false;
        }
    }
    return true;
}

void fs_uuid_lower(char *s) {
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
}

static int uuid_ptr_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *fs_uuid_array_literal(const char *const *ids, size_t n) {
    const char **v = malloc((n ? n : 1) * sizeof *v);
    char *s = malloc(n * (FS_UUID_STRLEN + 1) + 3);
    size_t m = 0, k = 0;
    if (!v || !s) {
        free(v);
        free(s);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] && strlen(ids[i]) == FS_UUID_STRLEN) v[m++] = ids[i];
    fs_qsort(v, m, sizeof *v, uuid_ptr_cmp); /* duplicates next to each other */
    s[k++] = '{';
    for (size_t i = 0; i < m; i++) {
        if (i > 0 && uuid_ptr_cmp(&v[i], &v[i - 1]) == 0) continue;
        if (k > 1) s[k++] = ',';
        memcpy(s + k, v[i], FS_UUID_STRLEN);
        k += FS_UUID_STRLEN;
    }
    s[k++] = '}';
    s[k] = '\0';
    free(v);
    return s;
}

static int uuid_parse(const char *s, unsigned char out[16]) {
    if (!fs_uuid_valid(s)) return -1;
    int k = 0;
    for (int i = 0; i < FS_UUID_STRLEN; i++) {
        if (s[i] == '-') continue;
        int v = hexval((unsigned char)s[i]);
        if (k % 2 == 0) out[k / 2] = (unsigned char)(v << 4);
        else out[k / 2] |= (unsigned char)v;
        k++;
    }
    return 0;
}

int fs_uuid_v4(char out[37]) {
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    uuid_format(b, out);
    return 0;
}

int fs_uuid_v5(const char *ns, const void *name, size_t name_len, char out[37]) {
    unsigned char nsb[16], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (uuid_parse(ns, nsb) != 0) return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) && EVP_DigestUpdate(ctx, nsb, 16) &&
             EVP_DigestUpdate(ctx, name, name_len) && EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!ok) return -1;
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    uuid_format(md, out);
    return 0;
}

/* Reads exactly n digits. */
static int digits(const char **p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int days_in_month(int y, int m) {
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int fs_time_parse_rfc3339(const char *s, int64_t *ms_out) {
    int y, mo, d, h, mi, se, ms = 0;
    const char *p = s;
    if (!s || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ') return -1;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &se))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60)
        return -1;
    if (*p == '.') {
        p++;
        int n = 0;
        for (; isdigit((unsigned char)*p); p++, n++)
            if (n < 3) ms = ms * 10 + (*p - '0');
        if (n == 0 || n > 9) return -1;
        for (; n < 3; n++) ms *= 10;
    }
    int64_t off_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59) return -1;
        off_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p != '\0') return -1;
    if (se == 60) se = 59; /* leap second: clamp */
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off_min * 60;
    *ms_out = secs * 1000 + ms;
    return 0;
}

void fs_time_format_rfc3339(int64_t ms, char out[25]) {
    /* Every payment formats two times, nearly always in the current second: the date part of the
     * last second is kept per thread (gmtime_r + strftime + snprintf cost ~1 us). */
    static _Thread_local time_t last_secs = -1;
    static _Thread_local char last_date[20];
    static _Thread_local size_t last_len;
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    unsigned frac = (unsigned)(ms - (int64_t)secs * 1000) % 1000u;
    if (secs != last_secs || secs < 0) {
        struct tm tm;
        char date[32];
        gmtime_r(&secs, &tm);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
        last_len = (size_t)snprintf(last_date, sizeof last_date, "%.19s", date);
        last_secs = secs;
    }
    memcpy(out, last_date, last_len); /* 19 bytes but for years before 1000 */
    char *o = out + last_len;
    *o++ = '.';
    *o++ = (char)('0' + frac / 100);
    *o++ = (char)('0' + frac / 10 % 10);
    *o++ = (char)('0' + frac % 10);
    *o++ = 'Z';
    *o = '\0';
}

int64_t fs_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fs_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int fs_grow(void **arr, size_t *cap, size_t n, size_t elem, size_t first) {
    if (n < *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : first;
    if (ncap <= n) ncap = n + 1;
    void *p = realloc(*arr, ncap * elem);
    if (!p) return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

size_t fs_int_format(int64_t v, char out[21]) {
    char buf[20], *q = buf + sizeof buf;
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do *--q = (char)('0' + m % 10);
    while (m /= 10);
    size_t n = (size_t)(buf + sizeof buf - q), k = 0;
    if (v < 0) out[k++] = '-';
    memcpy(out + k, q, n);
    out[k + n] = '\0';
    return k + n;
}

void fs_utf8_trim(char *s) {
    size_t i = strlen(s), cont = 0;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xc0) == 0x80 && cont < 3) i--, cont++;
    if (i == 0) return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : lead >= 0xc0 ? 1 : 0;
    if (lead >= 0xc0 && cont < need) s[i - 1] = '\0';
}

const char *fs_secret_mode_exposure(mode_t mode, gid_t gid, const gid_t *groups, size_t n) {
    bool own = false;
    for (size_t i = 0; i < n && !own; i++) own = groups[i] == gid;
    if (mode & S_IRWXO) return "open to other users";
    if (mode & S_IWGRP) return "writable by its group";
    if ((mode & S_IRWXG) && !own) return "readable by its group, which is not one of this process's";
    return NULL;
}

/* More supplementary groups than this (getgroups fails with EINVAL): judged by the effective group
 * alone, which at worst warns about a file that is fine. */
#define FS_GROUPS_MAX 256

const char *fs_secret_file_exposure(const struct stat *st) {
    gid_t groups[FS_GROUPS_MAX + 1];
    int n = getgroups(FS_GROUPS_MAX, groups + 1);
    groups[0] = getegid();
    return fs_secret_mode_exposure(st->st_mode, st->st_gid, groups, n > 0 ? (size_t)n + 1 : 1);
}
