/* log: one JSON object per line on stderr. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"

static const char *log_proc = "fraudshield";
static log_level log_min = LOG_INFO;
static const char *const LEVEL_NAMES[] = {"debug", "info", "warn", "error"};

void log_init(const char *proc, log_level level) {
    log_proc = proc;
    log_min = level;
}

int log_level_parse(const char *s, log_level *out) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, LEVEL_NAMES[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -1;
}

int log_enabled(log_level level) { return level >= log_min; }

/* Lines from threads never interleave: one lock around the writes of one line. A signal (the
 * handlers are installed without SA_RESTART) or a full pipe can cut a write(2) short; the rest
 * follows, so a long line is never truncated or mixed with the next. */
static pthread_mutex_t log_write_lock = PTHREAD_MUTEX_INITIALIZER;

static void log_write_all(const char *p, size_t n) {
    pthread_mutex_lock(&log_write_lock);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break; /* stderr gone or non-blocking and full: nowhere else to report it */
        p += w;
        n -= (size_t)w;
    }
    pthread_mutex_unlock(&log_write_lock);
}

/* Builds the line as one JSON object and writes it whole. */
static void log_emit(log_level level, const char *event, json_t *fields, const char *fmt,
                     va_list ap) {
    int saved_errno = errno; /* a caller may log, then report errno */
    char msg[2048], ts[25];
    if (vsnprintf(msg, sizeof msg, fmt, ap) >= (int)sizeof msg) fs_utf8_trim(msg); /* cut whole */
    fs_time_format_rfc3339(fs_now_ms(), ts);
    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(LEVEL_NAMES[level]));
    json_object_set_new(line, "proc", json_string(log_proc));
    json_object_set_new(line, "event", json_string(event));
    /* json_string rejects invalid UTF-8: fall back to a lossless-enough marker, never drop the line */
    json_t *m = json_string(msg);
    json_object_set_new(line, "msg", m ? m : json_string("(message was not valid UTF-8)"));
    if (fields) json_object_update_missing(line, fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text) {
        errno = saved_errno;
        return;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* replaces the NUL: write n+1 bytes, never read as a string again */
    log_write_all(text, n + 1);
    free(text);
    errno = saved_errno;
}

void log_msg(log_level level, const char *event, const char *fmt, ...) {
    if (level < log_min) return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, event, NULL, fmt, ap);
    va_end(ap);
}

void log_fields(log_level level, const char *event, json_t *fields, const char *fmt, ...) {
    if (level >= log_min) {
        va_list ap;
        va_start(ap, fmt);
        log_emit(level, event, fields, fmt, ap);
        va_end(ap);
    }
    json_decref(fields);
}
