/* recent: the payment ids this ingest instance accepted lately, and who posted each, so GET
 * /api/v1/payments/{id} can answer "pending" (accepted, durable in Kafka, not yet persisted by a
 * scorer) rather than 404, to the payment's owner only.
 *
 * Bounded: two generations of capacity/2 ids each; when the current one fills up, the older one is
 * dropped. An id is remembered for at least capacity/2 and at most capacity acceptances. Another
 * instance's payments, or ours after a restart, are unknown here: until a scorer persists them
 * (normally well under a second) they read as 404. An id accepted twice keeps its first owner (as
 * payments.source does: the scorer keeps the first source's payment).
 *
 * The owner (payments.source: the API key id, "shopify:<shop>", "anonymous") is kept as a 64-bit
 * tag, HMAC-SHA256 under a random per-process secret, not as text: 8 bytes an id instead of up to
 * 129. Two owners share a tag by chance only (2^-64 a pair), and nobody can pick an owner name to
 * match another's without the secret. Owned by one thread. */
#ifndef FS_RECENT_H
#define FS_RECENT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct recent recent;

recent *recent_new(size_t capacity); /* capacity >= 2; NULL on allocation failure */
void recent_destroy(recent *r);      /* accepts NULL */
/* uuid: canonical UUID text; owner: who posted it (payments.source). */
void recent_add(recent *r, const char *uuid, const char *owner);
/* Whether uuid was accepted lately from owner; from anyone when owner is NULL. */
bool recent_has(const recent *r, const char *uuid, const char *owner);

#endif
