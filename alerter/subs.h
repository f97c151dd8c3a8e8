/* subs: alert subscriptions (table subscriptions, schemas/sql/002_alerter.sql).
 *
 * The dispatcher loads the active ones (with their secrets) periodically; the CLI
 * (`fraudshield-alerter subscriptions ...`) adds, lists, enables and disables them. The email
 * subscription (kind 'email', named "email") is not managed by the CLI but mirrored from the
 * alerter's smtp-* configuration at start-up. All functions are blocking libpq calls. */
#ifndef FS_SUBS_H
#define FS_SUBS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SUBS_NAME_MAX 64
#define SUBS_EMAIL_NAME "email"
#define SUBS_SECRET_MIN 16

/* One active subscription as the dispatcher needs it. */
typedef struct subs_sub {
    int64_t id;
    char name[SUBS_NAME_MAX + 1];
    bool email;      /* kind 'email': SMTP to email_to; else a webhook */
    char *url;
    char *secret;
    char *ca_file;   /* NULL: the default CA store */
    char **email_to;
    size_t n_email_to;
} subs_sub;

typedef struct subs_set {
    subs_sub *v;
    size_t n;
} subs_set;

/* Replaces *out (cleared first) with the active subscriptions, by id. Returns 0 or -1 with errstr
 * (then *out is empty). No answer within timeout_ms drops the connection (db_query). */
int subs_load(PGconn *conn, int timeout_ms, subs_set *out, char *errstr, size_t errstr_size);

/* True for a webhook URL in clear text (http://, any case): refused unless allow-insecure-http. */
bool subs_url_insecure(const char *url);
void subs_set_clear(subs_set *s);
void subs_sub_clear(subs_sub *s); /* frees one entry's strings (not the entry) */

/* What `subscriptions add` takes. Comma-separated lists; NULL or "" = the default. */
typedef struct subs_spec {
    const char *name;
    const char *url;          /* https:// (http:// only with allow_http) */
    const char *secret;       /* NULL: a random one is generated (and returned) */
    const char *events;       /* default "alert.created" */
    const char *min_decision; /* review (default) or block */
    const char *countries;    /* "DE,FR"; default: every country */
    const char *ca_file;      /* PEM CA bundle for this subscriber's certificate */
    bool allow_http;          /* accept an http:// url (allow-insecure-http); else https:// only */
    const char *deny_networks; /* webhook-deny-networks: a url whose host is a literal address
                                  inside is refused (NULL: not checked) */
} subs_spec;

/* The operations below run their statement within timeout_ms (db_query: not answered by then, the
 * connection is dropped and they fail). */

/* Validates and inserts. The secret (given or generated) is copied to secret_out (>= 65 bytes).
 * Returns 0, or -1 with errstr naming the bad field or the database error. */
int subs_add(PGconn *conn, int timeout_ms, const subs_spec *spec, int64_t *id_out,
             char *secret_out, size_t secret_size, char *errstr, size_t errstr_size);

/* Prints the subscriptions (inactive ones too when all) with their delivery counts; never the
 * secrets. Returns 0 or -1 with errstr. */
int subs_print(PGconn *conn, int timeout_ms, FILE *out, bool all, char *errstr,
               size_t errstr_size);

/* Enables or disables the subscription named (or numbered) which. Disabling stops new deliveries
 * and pauses the pending ones (they resume when it is enabled again). Returns 0, or -1 with errstr
 * (also when there is no such subscription). */
int subs_set_active(PGconn *conn, int timeout_ms, const char *which, bool active, char *errstr,
                    size_t errstr_size);

/* Mirrors the email configuration: url "" disables the email subscription (if any); otherwise it
 * is created or updated (recipients: comma-separated to). Returns 0 or -1 with errstr. */
int subs_sync_email(PGconn *conn, int timeout_ms, const char *url, const char *to,
                    const char *min_decision, char *errstr, size_t errstr_size);

/* 32 random bytes as 64 hex digits. Returns 0 or -1. */
int subs_new_secret(char out[65]);

/* Names: 1-64 of [A-Za-z0-9._-] (they label metrics). */
bool subs_name_valid(const char *name);

#endif
