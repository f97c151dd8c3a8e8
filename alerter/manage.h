/* manage: the operator commands of fraudshield-alerter (the same binary, a command first):
 *
 *   subscriptions add --name N --url URL [--secret S] [--events alert.created,alert.resolved]
 *                     [--min-decision review|block] [--countries DE,FR] [--ca-file PEM]
 *   subscriptions list [--all]
 *   subscriptions disable|enable NAME|ID
 *   alerts list [--status new|acknowledged|resolved] [--limit N]
 *   alerts ack ALERT_ID --by ANALYST
 *   alerts resolve ALERT_ID --by ANALYST --resolution confirmed_fraud|false_positive [--reason TEXT]
 *   deliveries list [--alert ALERT_ID] [--state pending|in_flight|delivered|failed] [--limit N]
 *   deliveries redeliver DELIVERY_ID
 *
 * Each connects to PostgreSQL (database-url), applies pending migrations (so they work before the
 * alerter ever ran) and prints its result on stdout, errors on stderr. Every round trip is
 * bounded as in the alerter (db-timeout-ms; db-migrate-timeout-ms and db-migrate-lock-timeout-ms
 * for the migrations): a database that does not answer ends the command with an error. */
#ifndef FS_MANAGE_H
#define FS_MANAGE_H

#include <stdbool.h>
#include <stdio.h>

/* True when arg names a command ("subscriptions", "alerts", "deliveries"). */
bool manage_is_command(const char *arg);

/* How the commands reach PostgreSQL: the alerter's configuration. */
typedef struct manage_db {
    const char *url;
    int timeout_ms;                                  /* each statement (db-timeout-ms, db_query) */
    int migrate_timeout_ms, migrate_lock_timeout_ms; /* db_migrate's bounds (0: none) */
} manage_db;

/* What the configuration says about subscription URLs (subscriptions add checks them). */
typedef struct manage_urls {
    bool allow_http;           /* allow-insecure-http: http:// accepted */
    const char *deny_networks; /* webhook-deny-networks: a literal address host inside is refused */
} manage_urls;

/* argv[0] is the command. Returns the exit status: 0 done, 1 failed, 2 usage error. */
int manage_main(int argc, char **argv, const manage_db *db, const manage_urls *urls);

void manage_usage(FILE *out);

#endif
