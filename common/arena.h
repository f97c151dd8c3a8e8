/* arena: a string arena for per-batch state (scorer/velocity, buckets, vault): copies strings
 * into large chunks so that keys outlive the buffers they came from (a PGresult, a payment) and
 * are freed all at once. arena_reset() keeps the first chunk, so a steady stream of batches of
 * the usual size allocates nothing. */
#ifndef FS_ARENA_H
#define FS_ARENA_H

#include <stddef.h>

typedef struct arena arena;

arena *arena_new(void);          /* NULL when out of memory */
void arena_destroy(arena *a);    /* accepts NULL */
void arena_reset(arena *a);      /* forgets every string; keeps one chunk */

/* A copy of s[0..len) plus a NUL, owned by the arena until the next reset. NULL: out of memory. */
const char *arena_strndup(arena *a, const char *s, size_t len);
const char *arena_strdup(arena *a, const char *s);

#endif
