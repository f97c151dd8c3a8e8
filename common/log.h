/* log: one JSON object per line on stderr.
 *
 *   {"ts":"2026-11-21T21:00:00.123Z","level":"info","proc":"scorer","event":"batch_committed",
 *    "msg":"...", ...fields}
 *
 * Never pass personal data (raw email, IP, card, device id) to these functions: the payment path only
 * ever holds digests, and request bodies are never logged. Thread-safe (one write(2) per line). */
#ifndef FS_LOG_H
#define FS_LOG_H

#include <jansson.h>

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* proc names the process in every line; lines below level are dropped. */
void log_init(const char *proc, log_level level);

/* Parses "debug", "info", "warn", "error". Returns 0 or -1. */
int log_level_parse(const char *s, log_level *out);

int log_enabled(log_level level);

/* event is a stable snake_case identifier operators can grep and alert on; msg is printf-formatted. */
void log_msg(log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like log_msg with extra structured fields. Takes ownership of fields (a JSON object, may be NULL). */
void log_fields(log_level level, const char *event, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
