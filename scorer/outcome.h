/* outcome: a payment_outcomes v1 message (docs/topics.md, schemas/json/payment-outcome.v1.json),
 * decoded and checked by one function for the scorer's outcome consumer (scorer.c) and for the
 * labels of the offline mode (offline.c, option offline-outcomes): the lines produced to the topic
 * are the lines given to --offline. */
#ifndef FS_OUTCOME_H
#define FS_OUTCOME_H

#include <jansson.h>
#include <stddef.h>

#include "vault.h"

/* The message value (len bytes, not NUL-terminated; NULL with len 0: an empty value) into a row
 * for store_insert_outcomes (new reference): {payment_id (lower case), outcome, known_at_ms,
 * reason?, source?, outcome_id? (lower case)}. Or NULL with the dead-letter reason code ("undecodable",
 * "invalid_outcome") in *code and the error in err. */
json_t *outcome_decode(const void *payload, size_t len, const char **code, char *err, size_t esz);

/* The vault_outcome (precedence, SQL fs_label_rank) of a label name; 0 when it is none. */
int outcome_rank(const char *name);
/* The label name of a vault_outcome (a static string); NULL when it is none. */
const char *outcome_name(int rank);

#endif
