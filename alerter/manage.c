/* manage: operator commands (see manage.h). */
#include "manage.h"

#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "fsutil.h"
#include "subs.h"

#define MAX_FLAGS 8
#define MAX_POS 4

/* A command's parsed arguments: --flags by name, and positional words. */
typedef struct args {
    const char *names[MAX_FLAGS]; /* accepted flags; a trailing '!' marks a boolean one */
    const char *values[MAX_FLAGS];
    const char *pos[MAX_POS];
    int npos;
    manage_urls urls; /* allow-insecure-http, webhook-deny-networks: from the configuration */
    int timeout_ms;   /* each statement's deadline (db-timeout-ms, db_query) */
} args;

typedef struct command {
    const char *group, *verb;
    const char *flags[MAX_FLAGS + 1]; /* NULL-terminated */
    int npos;                         /* positional words required */
    int (*run)(PGconn *conn, const args *a);
} command;

static const char *arg(const args *a, const char *name) {
    for (int i = 0; i < MAX_FLAGS && a->names[i]; i++) {
        size_t n = strcspn(a->names[i], "!");
        if (strlen(name) == n && strncmp(a->names[i], name, n) == 0) return a->values[i];
    }
    return NULL;
}

/* --name value, --name=value, --flag (boolean). Returns 0 or -1 with a message on stderr. */
static int parse(const command *c, int argc, char **argv, args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 0; i < MAX_FLAGS && c->flags[i]; i++) a->names[i] = c->flags[i];
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) {
            if (a->npos == MAX_POS) return fprintf(stderr, "too many arguments\n"), -1;
            a->pos[a->npos++] = argv[i];
            continue;
        }
        const char *name = argv[i] + 2, *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        int k = 0;
        while (k < MAX_FLAGS && a->names[k] &&
               !(strcspn(a->names[k], "!") == n && strncmp(a->names[k], name, n) == 0))
            k++;
        if (k == MAX_FLAGS || !a->names[k])
            return fprintf(stderr, "unknown option --%.*s for %s %s\n", (int)n, name, c->group, c->verb), -1;
        bool boolean = strchr(a->names[k], '!') != NULL;
        if (eq) a->values[k] = eq + 1;
        else if (boolean) a->values[k] = "true";
        else if (i + 1 < argc) a->values[k] = argv[++i];
        else return fprintf(stderr, "--%.*s needs a value\n", (int)n, name), -1;
    }
    if (a->npos != c->npos)
        return fprintf(stderr, "%s %s takes %d argument(s), got %d\n", c->group, c->verb, c->npos,
                       a->npos), -1;
    return 0;
}

/* The server's own words ("no alert ..."), without libpq's ERROR:/CONTEXT: decoration. */
static void print_error(PGconn *conn, const PGresult *res) {
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    if (m) fprintf(stderr, "%s%s%s\n", m, detail ? ": " : "", detail ? detail : "");
    else fprintf(stderr, "%s", PQerrorMessage(conn));
}

/* Runs a query with text parameters within timeout_ms and prints the rows as an aligned table. */
static int print_query(PGconn *conn, int timeout_ms, const char *sql, int nparams,
                       const char *const *params) {
    PGresult *res = db_query(conn, timeout_ms, sql, nparams, params, NULL, NULL);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        print_error(conn, res);
        PQclear(res);
        return 1;
    }
    int nf = PQnfields(res), w[32] = {0};
    for (int c = 0; c < nf && c < 32; c++) {
        w[c] = (int)strlen(PQfname(res, c));
        for (int r = 0; r < PQntuples(res); r++)
            if (PQgetlength(res, r, c) > w[c]) w[c] = PQgetlength(res, r, c);
    }
    for (int c = 0; c < nf && c < 32; c++) printf("%-*s%s", w[c], PQfname(res, c), c + 1 < nf ? "  " : "\n");
    for (int r = 0; r < PQntuples(res); r++)
        for (int c = 0; c < nf && c < 32; c++)
            printf("%-*s%s", w[c], PQgetvalue(res, r, c), c + 1 < nf ? "  " : "\n");
    PQclear(res);
    return 0;
}

/* Runs a statement returning one row within timeout_ms; prints "<what>: <first column>" or the
 * error. */
static int exec_one(PGconn *conn, int timeout_ms, const char *sql, int nparams,
                    const char *const *params, const char *what) {
    PGresult *res = db_query(conn, timeout_ms, sql, nparams, params, NULL, NULL);
    int rc = 1;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        print_error(conn, res);
    } else {
        printf("%s: %s\n", what, PQgetvalue(res, 0, 0));
        rc = 0;
    }
    PQclear(res);
    return rc;
}

/* ---- subscriptions ----------------------------------------------------------------------------- */

static int sub_add(PGconn *conn, const args *a) {
    char err[512], secret[129];
    int64_t id = 0;
    subs_spec s = {.name = arg(a, "name"), .url = arg(a, "url"), .secret = arg(a, "secret"),
                   .events = arg(a, "events"), .min_decision = arg(a, "min-decision"),
                   .countries = arg(a, "countries"), .ca_file = arg(a, "ca-file"),
                   .allow_http = a->urls.allow_http, .deny_networks = a->urls.deny_networks};
    if (subs_add(conn, a->timeout_ms, &s, &id, secret, sizeof secret, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("subscription %lld \"%s\" added\n", (long long)id, s.name);
    if (!s.secret) printf("secret: %s\n", secret); /* generated: the subscriber needs it */
    return 0;
}

static int sub_list(PGconn *conn, const args *a) {
    char err[512];
    if (subs_print(conn, a->timeout_ms, stdout, arg(a, "all") != NULL, err, sizeof err) == 0) return 0;
    fprintf(stderr, "%s\n", err);
    return 1;
}

static int sub_active(PGconn *conn, const args *a, bool active) {
    char err[512];
    if (subs_set_active(conn, a->timeout_ms, a->pos[0], active, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("subscription %s %s%s\n", a->pos[0], active ? "enabled" : "disabled",
           active ? "" : " (its pending deliveries wait; alerts recorded from now on are not "
                         "delivered to it, also after it is enabled again)");
    return 0;
}

static int sub_disable(PGconn *conn, const args *a) { return sub_active(conn, a, false); }
static int sub_enable(PGconn *conn, const args *a) { return sub_active(conn, a, true); }

/* Whether option name's value (absent: fine) is one of the space-separated words of allowed; says
 * which are when not (a filter that matches nothing looked like an empty result). */
static bool arg_one_of(const args *a, const char *name, const char *allowed) {
    const char *v = arg(a, name);
    size_t n = v ? strlen(v) : 0;
    for (const char *w = allowed; v && *w; w += strcspn(w, " "), w += *w == ' ')
        if (strncmp(w, v, n) == 0 && (w[n] == ' ' || w[n] == '\0')) return true;
    if (v) fprintf(stderr, "--%s must be one of: %s\n", name, allowed);
    return !v;
}

/* ---- alerts ------------------------------------------------------------------------------------ */

static int alert_list(PGconn *conn, const args *a) {
    const char *params[2] = {arg(a, "status"), arg(a, "limit") ? arg(a, "limit") : "50"};
    if (!arg_one_of(a, "status", "new acknowledged resolved")) return 2;
    return print_query(conn, a->timeout_ms,
                       "SELECT alert_id, payment_id, decision, score, status, "
                       "       coalesce(status_by, '') AS status_by, "
                       "       coalesce(to_char(status_at, 'YYYY-MM-DD HH24:MI:SS'), '') AS status_at, "
                       "       coalesce(resolution, '') AS resolution, "
                       "       to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') AS created_at, "
                       "       deliveries_ok || '/' || deliveries_pending || '/' || deliveries_failed "
                       "         AS \"delivered/pending/failed\" "
                       "FROM alert_overview WHERE $1::text IS NULL OR status = $1 "
                       "ORDER BY created_at DESC LIMIT $2::int",
                       2, params);
}

static int uuid_arg(const args *a, const char *what) {
    if (fs_uuid_valid(a->pos[0])) return 0;
    fprintf(stderr, "%s: not a UUID: %s\n", what, a->pos[0]);
    return -1;
}

static int alert_ack(PGconn *conn, const args *a) {
    if (uuid_arg(a, "alert id") != 0) return 2;
    if (!arg(a, "by")) return fprintf(stderr, "--by ANALYST is required\n"), 2;
    const char *params[2] = {a->pos[0], arg(a, "by")};
    return exec_one(conn, a->timeout_ms, "SELECT status FROM alert_acknowledge($1::uuid, $2)", 2, params, a->pos[0]);
}

static int alert_resolve(PGconn *conn, const args *a) {
    if (uuid_arg(a, "alert id") != 0) return 2;
    if (!arg(a, "by") || !arg(a, "resolution"))
        return fprintf(stderr, "--by ANALYST and --resolution confirmed_fraud|false_positive are required\n"), 2;
    const char *params[4] = {a->pos[0], arg(a, "by"), arg(a, "resolution"), arg(a, "reason")};
    return exec_one(conn, a->timeout_ms, "SELECT status || ' ' || resolution FROM alert_resolve($1::uuid, $2, $3, $4)",
                    4, params, a->pos[0]);
}

/* ---- deliveries -------------------------------------------------------------------------------- */

static int delivery_list(PGconn *conn, const args *a) {
    const char *params[3] = {arg(a, "alert"), arg(a, "state"), arg(a, "limit") ? arg(a, "limit") : "50"};
    if (params[0] && !fs_uuid_valid(params[0])) return fprintf(stderr, "--alert: not a UUID\n"), 2;
    if (!arg_one_of(a, "state", "pending in_flight delivered failed")) return 2;
    return print_query(conn, a->timeout_ms,
                       "SELECT d.delivery_id, d.alert_id, s.name AS subscription, e.event_type, d.state, "
                       "       d.attempts, coalesce(d.last_status::text, '') AS last_status, "
                       "       CASE WHEN d.state = 'pending' "
                       "            THEN to_char(d.next_attempt_at, 'YYYY-MM-DD HH24:MI:SS') ELSE '' END "
                       "         AS next_attempt, coalesce(d.failure_reason, '') AS failure, "
                       "       left(coalesce(d.last_error, ''), 60) AS last_error "
                       "FROM deliveries d JOIN subscriptions s USING (subscription_id) "
                       "JOIN alert_events e USING (event_id) "
                       "WHERE ($1::uuid IS NULL OR d.alert_id = $1::uuid) AND ($2::text IS NULL OR d.state = $2) "
                       "ORDER BY d.created_at DESC LIMIT $3::int",
                       3, params);
}

static int delivery_redeliver(PGconn *conn, const args *a) {
    if (uuid_arg(a, "delivery id") != 0) return 2;
    const char *params[1] = {a->pos[0]};
    return exec_one(conn, a->timeout_ms,
                    "SELECT CASE WHEN alerter_redeliver($1::uuid) THEN 'pending again' "
                    "ELSE 'not a failed delivery: unchanged' END",
                    1, params, a->pos[0]);
}

/* ---- dispatch ---------------------------------------------------------------------------------- */

static const command COMMANDS[] = {
    {"subscriptions", "add", {"name", "url", "secret", "events", "min-decision", "countries", "ca-file", NULL}, 0, sub_add},
    {"subscriptions", "list", {"all!", NULL}, 0, sub_list},
    {"subscriptions", "disable", {NULL}, 1, sub_disable},
    {"subscriptions", "enable", {NULL}, 1, sub_enable},
    {"alerts", "list", {"status", "limit", NULL}, 0, alert_list},
    {"alerts", "ack", {"by", NULL}, 1, alert_ack},
    {"alerts", "resolve", {"by", "resolution", "reason", NULL}, 1, alert_resolve},
    {"deliveries", "list", {"alert", "state", "limit", NULL}, 0, delivery_list},
    {"deliveries", "redeliver", {NULL}, 1, delivery_redeliver},
};

bool manage_is_command(const char *s) {
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        if (strcmp(s, COMMANDS[i].group) == 0) return true;
    return false;
}

void manage_usage(FILE *out) {
    fprintf(out,
            "Commands (database-url from --database-url or FS_DATABASE_URL):\n"
            "  subscriptions add --name N --url URL [--secret S] [--events alert.created,alert.resolved]\n"
            "                    [--min-decision review|block] [--countries DE,FR] [--ca-file PEM]\n"
            "  subscriptions list [--all]\n"
            "  subscriptions disable|enable NAME|ID\n"
            "  alerts list [--status new|acknowledged|resolved] [--limit N]\n"
            "  alerts ack ALERT_ID --by ANALYST\n"
            "  alerts resolve ALERT_ID --by ANALYST --resolution confirmed_fraud|false_positive [--reason TEXT]\n"
            "  deliveries list [--alert ALERT_ID] [--state pending|in_flight|delivered|failed] [--limit N]\n"
            "  deliveries redeliver DELIVERY_ID\n");
}

int manage_main(int argc, char **argv, const manage_db *db, const manage_urls *urls) {
    char err[512];
    args a;
    const command *c = NULL;
    for (size_t i = 0; argc >= 2 && i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        if (strcmp(argv[0], COMMANDS[i].group) == 0 && strcmp(argv[1], COMMANDS[i].verb) == 0) c = &COMMANDS[i];
    if (!c) {
        manage_usage(stderr);
        return 2;
    }
    if (parse(c, argc - 2, argv + 2, &a) != 0) return 2;
    a.urls = *urls;
    /* a command that gave up must not take effect later, once a lock it waited for goes: the
     * server cancels it at db-timeout-ms (db_server_timeout) */
    PGconn *conn = db_connect(db->url, "fraudshield-alerter cli", err, sizeof err);
    if (!conn ||
        db_migrate(conn, db->migrate_timeout_ms, db->migrate_lock_timeout_ms, err, sizeof err) < 0 ||
        (a.timeout_ms = db_server_timeout(conn, db->timeout_ms, err, sizeof err)) < 0) {
        fprintf(stderr, "PostgreSQL: %s\n", err);
        PQfinish(conn);
        return 1;
    }
    int rc = c->run(conn, &a);
    if (rc != 0 && PQstatus(conn) == CONNECTION_BAD) /* libpq's words for a dropped connection mislead */
        fprintf(stderr, "PostgreSQL: the connection was lost, or dropped after no answer within "
                "db-timeout-ms (%d ms) + %d ms: the command may or may not have taken effect; check "
                "with the matching list command before repeating it\n", db->timeout_ms, DB_CANCEL_GRACE_MS);
    PQfinish(conn);
    return rc;
}
