/* mail: the email form of an alert event, a plain-text RFC 5322 message for delivery over SMTP.
 *
 * The subject names the decision, score and payment; the body lists the alert's fields and
 * reasons, one per line. Values come from the event's JSON and are made single-line (no header
 * or line injection from a field's content); lines end in CRLF. */
#ifndef FS_MAIL_H
#define FS_MAIL_H

#include <stddef.h>
#include <stdint.h>

/* The message for event_type with the event's JSON body (alert.created: fraud-alert.v1;
 * alert.resolved: see docs/alerter.md). malloc'd (caller frees), its length in *out_len; NULL
 * when the body is not a JSON object or out of memory. */
char *mail_format(const char *from, const char *const *to, size_t n_to, const char *event_type,
                  const char *delivery_id, const char *body, size_t body_len, int64_t now_ms,
                  size_t *out_len);

#endif
