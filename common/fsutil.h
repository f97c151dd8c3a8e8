/* fsutil: small shared helpers: UUIDs, RFC 3339 time, clocks, secret files' modes. */
#ifndef FS_FSUTIL_H
#define FS_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>

#define FS_UUID_STRLEN 36 /* without the terminating NUL */

/* Random (v4) UUID in canonical lower-case form; out must hold 37 bytes. Returns 0 or -1. */
int fs_uuid_v4(char out[37]);

/* Name-based (v5, SHA-1) UUID of name under the namespace UUID ns (canonical text). Deterministic:
 * the same inputs always give the same id. Returns 0, or -1 when ns is not a UUID. */
int fs_uuid_v5(const char *ns, const void *name, size_t name_len, char out[37]);

/* True when s is a canonical UUID (8-4-4-4-12 hex digits, either case). */
bool fs_uuid_valid(const char *s);

/* Lower-cases a UUID in place (stored form). */
void fs_uuid_lower(char *s);

/* "{id,id,...}": the n UUIDs of ids as a PostgreSQL array literal (for a $1::uuid[] parameter of
 * `= ANY`, where only the set counts): sorted, each id once (compared as strings: the stored,
 * lower-case form, as pay_event_decode and outcome_decode give them); NULL entries and strings
 * that are not FS_UUID_STRLEN long are left out. Caller frees; NULL when out of memory. */
char *fs_uuid_array_literal(const char *const *ids, size_t n);

/* Parses an RFC 3339 timestamp ("2026-11-21T10:00:00Z", fractional seconds and numeric offsets
 * allowed) into milliseconds since the epoch. Returns 0 or -1. */
int fs_time_parse_rfc3339(const char *s, int64_t *ms_out);

/* Formats ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ"; out must hold 25 bytes. */
void fs_time_format_rfc3339(int64_t ms, char out[25]);

/* v in decimal, NUL-terminated, into out (21 bytes: INT64_MIN's 20 characters + NUL); returns the
 * length. printf's speed is the format parsing, and hot paths write millions of these. */
size_t fs_int_format(int64_t v, char out[21]);

int64_t fs_now_ms(void);      /* wall clock */
int64_t fs_mono_us(void);     /* monotonic clock, for durations */

/* Lower-case hex of n bytes; out must hold 2n+1 bytes. */
void fs_hex(const unsigned char *in, size_t n, char *out);

/* Makes room for element n in *arr (capacity *cap, elements of elem bytes): doubles the capacity,
 * starting at first. Returns 0, or -1 out of memory (*arr unchanged). */
int fs_grow(void **arr, size_t *cap, size_t n, size_t elem, size_t first);

/* qsort() that accepts (NULL, 0): the C standard leaves qsort(NULL, 0, ...) undefined (UBSan
 * reports it), and empty arrays are often NULL here. */
static inline void fs_qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
    if (n > 1) qsort(base, n, size, cmp);
}

/* Cuts an incomplete UTF-8 sequence off the end of s, as left by a truncation to a fixed buffer
 * (snprintf): text for JSON (an error body, a log line) must stay valid UTF-8. */
void fs_utf8_trim(char *s);

/* Why a secret file of this mode, whose group is gid, is open to more than the process, or NULL.
 * groups[0..n): the process's groups (effective and supplementary). Other users' bits always
 * count, and so does group write; group read only when gid is not one of the process's groups: a
 * Kubernetes secret volume is root:<fsGroup> 0440 (defaultMode), fsGroup being the pod's own. */
const char *fs_secret_mode_exposure(mode_t mode, gid_t gid, const gid_t *groups, size_t n);

/* fs_secret_mode_exposure() of the file st describes, against the calling process's groups
 * (getegid() and getgroups()). */
const char *fs_secret_file_exposure(const struct stat *st);

#endif
