/* recent: the payment ids this ingest instance accepted lately, so GET /api/v1/payments/{id} can
 * answer "pending" (accepted, durable in Kafka, not yet persisted by a scorer) rather than 404.
 *
 * Bounded: two generations of capacity/2 ids each; when the current one fills up, the older one is
 * dropped. An id is remembered for at least capacity/2 and at most capacity acceptances. Another
 * instance's payments, or ours after a restart, are unknown here: until a scorer persists them
 * (normally well under a second) they read as 404. Owned by one thread. */
#ifndef FS_RECENT_H
#define FS_RECENT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct recent recent;

recent *recent_new(size_t capacity); /* capacity >= 2; NULL on allocation failure */
void recent_destroy(recent *r);      /* accepts NULL */
void recent_add(recent *r, const char *uuid);        /* canonical UUID text */
bool recent_has(const recent *r, const char *uuid);

#endif
