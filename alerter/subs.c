/* subs: alert subscriptions (see subs.h). */
#include "subs.h"

#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "db.h"
#include "fsutil.h"
#include "netguard.h"

static const char *const EVENT_TYPES[] = {"alert.created", "alert.resolved", NULL};

/* ---- loading (dispatcher) -------------------------------------------------------------------- */

static const char SQL_LOAD[] =
    "SELECT subscription_id, name, kind = 'email', url, secret, ca_file, "
    "       coalesce(array_to_json(email_to), '[]')::text "
    "FROM subscriptions WHERE active ORDER BY subscription_id";

void subs_sub_clear(subs_sub *s) {
    free(s->url);
    free(s->secret);
    free(s->ca_file);
    for (size_t i = 0; i < s->n_email_to; i++) free(s->email_to[i]);
    free(s->email_to);
    memset(s, 0, sizeof *s);
}

void subs_set_clear(subs_set *s) {
    for (size_t i = 0; i < s->n; i++) subs_sub_clear(&s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* email_to arrives as a JSON array of strings. */
static int sub_parse_to(subs_sub *s, const char *json) {
    json_t *a = json_loads(json, 0, NULL);
    size_t n = json_array_size(a);
    int rc = -1;
    s->email_to = calloc(n ? n : 1, sizeof *s->email_to);
    if (!s->email_to) goto done;
    for (size_t i = 0; i < n; i++) {
        const char *v = json_string_value(json_array_get(a, i));
        if (!v || !(s->email_to[s->n_email_to] = strdup(v))) goto done;
        s->n_email_to++;
    }
    rc = 0;
done:
    json_decref(a);
    return rc;
}

static int sub_from_row(subs_sub *s, PGresult *res, int row) {
    s->id = strtoll(PQgetvalue(res, row, 0), NULL, 10);
    snprintf(s->name, sizeof s->name, "%s", PQgetvalue(res, row, 1));
    s->email = PQgetvalue(res, row, 2)[0] == 't';
    s->url = strdup(PQgetvalue(res, row, 3));
    s->secret = strdup(PQgetvalue(res, row, 4));
    s->ca_file = PQgetisnull(res, row, 5) ? NULL : strdup(PQgetvalue(res, row, 5));
    if (!s->url || !s->secret || (!PQgetisnull(res, row, 5) && !s->ca_file)) return -1;
    return sub_parse_to(s, PQgetvalue(res, row, 6));
}

int subs_load(PGconn *conn, int timeout_ms, subs_set *out, char *errstr, size_t errstr_size) {
    subs_set_clear(out);
    PGresult *res = db_query(conn, timeout_ms, SQL_LOAD, 0, NULL, NULL, NULL);
    int rc = -1;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_error(conn, res, errstr, errstr_size);
        goto done;
    }
    int n = PQntuples(res);
    out->v = calloc(n ? (size_t)n : 1, sizeof *out->v);
    if (!out->v) goto oom;
    for (int i = 0; i < n; i++) {
        out->n++; /* counted first: subs_set_clear frees a half-filled entry too */
        if (sub_from_row(&out->v[i], res, i) != 0) goto oom;
    }
    rc = 0;
    goto done;
oom:
    snprintf(errstr, errstr_size, "loading subscriptions: out of memory");
    subs_set_clear(out);
done:
    PQclear(res);
    return rc;
}

/* ---- validation ---------------------------------------------------------------------------- */

bool subs_name_valid(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > SUBS_NAME_MAX) return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') return false;
    return true;
}

int subs_new_secret(char out[65]) {
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return -1;
    fs_hex(raw, sizeof raw, out);
    return 0;
}

/* Splits a comma-separated list into a JSON array, checking each item with ok (NULL: any
 * non-empty item). upper: items are upper-cased. NULL with errstr naming what. */
static json_t *csv_array(const char *csv, const char *what, bool (*ok)(const char *), bool upper,
                         char *errstr, size_t errstr_size) {
    json_t *a = json_array();
    char *copy = strdup(csv), *save = NULL;
    if (!a || !copy) goto failed;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        for (size_t n = strlen(tok); n > 0 && tok[n - 1] == ' ';) tok[--n] = '\0';
        for (char *p = tok; upper && *p; p++) *p = (char)toupper((unsigned char)*p);
        if (!*tok || (ok && !ok(tok))) {
            snprintf(errstr, errstr_size, "%s: invalid item \"%.64s\"", what, tok);
            goto failed;
        }
        json_array_append_new(a, json_string(tok));
    }
    if (json_array_size(a) == 0) {
        snprintf(errstr, errstr_size, "%s: empty list", what);
        goto failed;
    }
    free(copy);
    return a;
failed:
    if (!errstr[0]) snprintf(errstr, errstr_size, "%s: out of memory", what);
    free(copy);
    json_decref(a);
    return NULL;
}

static bool event_ok(const char *s) {
    for (const char *const *e = EVENT_TYPES; *e; e++)
        if (strcmp(s, *e) == 0) return true;
    return false;
}

static bool country_ok(const char *s) {
    return strlen(s) == 2 && isupper((unsigned char)s[0]) && isupper((unsigned char)s[1]);
}

static bool email_ok(const char *s) {
    const char *at = strchr(s, '@');
    if (!at || at == s || !at[1] || strlen(s) > 254) return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == '"' || *p == 0x7f) return false;
    return true;
}

static bool decision_ok(const char *s) { return strcmp(s, "review") == 0 || strcmp(s, "block") == 0; }

bool subs_url_insecure(const char *url) { return url && strncasecmp(url, "http://", 7) == 0; }

/* Whether libcurl, which makes the deliveries, reads a host from url. A password with an unencoded
 * '/' or '#' (https://user:pa/ss@host/) ends the authority early: curl would call "user" on port
 * "pa", and listings would show "user:pa" as the host. Refused here, with the other malformed urls. */
static bool url_parses(const char *url) {
    char host[256];
    return netguard_url_host(url, host, sizeof host) == 0;
}

static bool url_ok(const char *url) {
    if (!subs_url_insecure(url) && strncasecmp(url, "https://", 8) != 0) return false;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) return false;
    return strlen(url) > 8 && url_parses(url);
}

/* A url whose host is a literal address in webhook-deny-networks: refused now, as the alerter would
 * refuse every connection to it (a name is checked only when the alerter connects). */
static int url_deny_check(const char *url, const char *networks, char *errstr, size_t errstr_size) {
    char host[256] = "";
    netguard *g = networks ? netguard_new(networks, errstr, errstr_size) : NULL;
    if (networks && !g) return -1;
    bool denied = g && netguard_url_host(url, host, sizeof host) == 0 && netguard_host_denied(g, host, NULL);
    netguard_destroy(g);
    if (!denied) return 0;
    return snprintf(errstr, errstr_size, "--url: %s is in webhook-deny-networks (addresses no webhook "
                    "may reach, such as the cloud metadata service): the alerter would refuse every "
                    "delivery to it", host), -1;
}

/* A secret given on the command line: long enough, printable without spaces (it travels through
 * shells and configuration files), and not a run of a few characters ("aaaa...", 16 spaces). */
#define SUBS_SECRET_DISTINCT 8
static bool secret_ok(const char *secret) {
    bool seen[256] = {false};
    int distinct = 0;
    if (strlen(secret) < SUBS_SECRET_MIN) return false;
    for (const unsigned char *c = (const unsigned char *)secret; *c; c++) {
        if (*c <= ' ' || *c == 0x7f) return false;
        if (!seen[*c]) seen[*c] = true, distinct++;
    }
    return distinct >= SUBS_SECRET_DISTINCT;
}

/* Field checks with messages naming the field (the database re-checks with its constraints). */
static int spec_check(const subs_spec *s, char *errstr, size_t errstr_size) {
    if (!s->name || !subs_name_valid(s->name))
        return snprintf(errstr, errstr_size, "--name: 1-64 characters of A-Z a-z 0-9 . _ -"), -1;
    if (strcmp(s->name, SUBS_EMAIL_NAME) == 0)
        return snprintf(errstr, errstr_size, "--name: \"%s\" is reserved for the smtp-* settings",
                        SUBS_EMAIL_NAME), -1;
    if (!s->url || !url_ok(s->url))
        return snprintf(errstr, errstr_size, "--url: an https:// URL is required (host[:port] after "
                        "the scheme; percent-encode '/', '#', '?' and '@' in a user or password)"), -1;
    if (subs_url_insecure(s->url) && !s->allow_http)
        return snprintf(errstr, errstr_size, "--url: http:// sends signed alerts in clear text; "
                        "use https://, or set allow-insecure-http (tests and local development only)"), -1;
    if (url_deny_check(s->url, s->deny_networks, errstr, errstr_size) != 0) return -1;
    if (s->secret && !secret_ok(s->secret))
        return snprintf(errstr, errstr_size, "--secret: at least %d printable characters, no spaces, "
                        "at least %d different ones (or leave it out: one is generated)",
                        SUBS_SECRET_MIN, SUBS_SECRET_DISTINCT), -1;
    if (s->min_decision && *s->min_decision && !decision_ok(s->min_decision))
        return snprintf(errstr, errstr_size, "--min-decision: review or block"), -1;
    if (s->ca_file && *s->ca_file && access(s->ca_file, R_OK) != 0)
        return snprintf(errstr, errstr_size, "--ca-file: cannot read %s", s->ca_file), -1;
    return 0;
}

/* ---- CLI operations ---------------------------------------------------------------------------- */


static const char SQL_ADD[] =
    "INSERT INTO subscriptions (name, url, secret, event_types, min_decision, countries, ca_file) "
    "VALUES ($1, $2, $3, ARRAY(SELECT jsonb_array_elements_text($4::jsonb)), $5, "
    "        CASE WHEN $6::jsonb IS NULL THEN NULL "
    "             ELSE ARRAY(SELECT jsonb_array_elements_text($6::jsonb)) END, $7) "
    "RETURNING subscription_id";

static int exec_add(PGconn *conn, int timeout_ms, const subs_spec *s, const char *secret,
                    const char *events, const char *countries, int64_t *id_out, char *errstr,
                    size_t errstr_size) {
    const char *params[7] = {s->name, s->url, secret, events,
                             s->min_decision && *s->min_decision ? s->min_decision : "review",
                             countries, s->ca_file && *s->ca_file ? s->ca_file : NULL};
    PGresult *res = db_query(conn, timeout_ms, SQL_ADD, 7, params, NULL, NULL);
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (ok) *id_out = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else if (state && strcmp(state, "23505") == 0)
        snprintf(errstr, errstr_size, "a subscription named \"%s\" exists already", s->name);
    else db_error(conn, res, errstr, errstr_size);
    PQclear(res);
    return ok ? 0 : -1;
}

int subs_add(PGconn *conn, int timeout_ms, const subs_spec *spec, int64_t *id_out, char *secret_out,
             size_t secret_size, char *errstr, size_t errstr_size) {
    char secret[65];
    char *events = NULL, *countries = NULL;
    json_t *ev = NULL, *cc = NULL;
    int rc = -1;
    errstr[0] = '\0';
    if (spec_check(spec, errstr, errstr_size) != 0) goto done;
    if (spec->secret) snprintf(secret, sizeof secret, "%s", spec->secret);
    else if (subs_new_secret(secret) != 0) {
        snprintf(errstr, errstr_size, "cannot generate a secret (no randomness)");
        goto done;
    }
    ev = csv_array(spec->events && *spec->events ? spec->events : "alert.created", "--events",
                   event_ok, false, errstr, errstr_size);
    if (!ev) goto done;
    if (spec->countries && *spec->countries &&
        !(cc = csv_array(spec->countries, "--countries", country_ok, true, errstr, errstr_size)))
        goto done;
    events = json_dumps(ev, JSON_COMPACT);
    countries = cc ? json_dumps(cc, JSON_COMPACT) : NULL;
    if (!events || (cc && !countries)) {
        snprintf(errstr, errstr_size, "out of memory");
        goto done;
    }
    rc = exec_add(conn, timeout_ms, spec, spec->secret ? spec->secret : secret, events, countries, id_out,
                  errstr, errstr_size);
    if (rc == 0) snprintf(secret_out, secret_size, "%s", spec->secret ? spec->secret : secret);
done:
    free(events);
    free(countries);
    json_decref(ev);
    json_decref(cc);
    return rc;
}

static const char SQL_LIST[] =
    "SELECT s.subscription_id, s.name, s.kind, CASE WHEN s.active THEN 'yes' ELSE 'no' END, "
    "       s.min_decision, array_to_string(s.event_types, ','), "
    "       coalesce(array_to_string(s.countries, ','), '*'), "
    "       count(d.delivery_id) FILTER (WHERE d.state IN ('pending', 'in_flight')), "
    "       count(d.delivery_id) FILTER (WHERE d.state = 'delivered'), "
    "       count(d.delivery_id) FILTER (WHERE d.state = 'failed'), "
    "       regexp_replace(s.url, '//[^/@]*@', '//***@'), coalesce(s.ca_file, '') "
    "FROM subscriptions s LEFT JOIN deliveries d USING (subscription_id) "
    "WHERE $1 OR s.active GROUP BY s.subscription_id ORDER BY s.subscription_id";

int subs_print(PGconn *conn, int timeout_ms, FILE *out, bool all, char *errstr,
               size_t errstr_size) {
    const char *params[1] = {all ? "true" : "false"};
    PGresult *res = db_query(conn, timeout_ms, SQL_LIST, 1, params, NULL, NULL);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_error(conn, res, errstr, errstr_size);
        PQclear(res);
        return -1;
    }
    fprintf(out, "%-4s %-20s %-7s %-6s %-6s %-28s %-9s %7s %9s %6s  %s\n", "ID", "NAME", "KIND",
            "ACTIVE", "MIN", "EVENTS", "COUNTRIES", "PENDING", "DELIVERED", "FAILED", "URL");
    for (int i = 0; i < PQntuples(res); i++) {
#define V(c) PQgetvalue(res, i, c)
        fprintf(out, "%-4s %-20s %-7s %-6s %-6s %-28s %-9s %7s %9s %6s  %s%s%s\n", V(0), V(1), V(2),
                V(3), V(4), V(5), V(6), V(7), V(8), V(9), V(10), V(11)[0] ? "  ca-file=" : "", V(11));
#undef V
    }
    PQclear(res);
    return 0;
}

int subs_set_active(PGconn *conn, int timeout_ms, const char *which, bool active, char *errstr,
                    size_t errstr_size) {
    const char *params[2] = {which, active ? "true" : "false"};
    PGresult *res = db_query(
        conn, timeout_ms,
        "UPDATE subscriptions SET active = $2, updated_at = now() "
        "WHERE (name = $1 OR subscription_id::text = $1) AND name <> '" SUBS_EMAIL_NAME "' "
        "RETURNING subscription_id",
        2, params, NULL, NULL);
    int rc = -1;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) db_error(conn, res, errstr, errstr_size);
    else if (PQntuples(res) == 0)
        snprintf(errstr, errstr_size, "no subscription named or numbered \"%s\"%s", which,
                 strcmp(which, SUBS_EMAIL_NAME) == 0 ? " (the email one follows smtp-url)" : "");
    else rc = 0;
    PQclear(res);
    return rc;
}

static const char SQL_EMAIL_UPSERT[] =
    "INSERT INTO subscriptions (name, kind, url, email_to, min_decision) "
    "VALUES ('" SUBS_EMAIL_NAME "', 'email', $1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), $3) "
    "ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url, email_to = EXCLUDED.email_to, "
    "    min_decision = EXCLUDED.min_decision, active = true, updated_at = now() "
    "WHERE subscriptions.kind = 'email'";

int subs_sync_email(PGconn *conn, int timeout_ms, const char *url, const char *to,
                    const char *min_decision, char *errstr, size_t errstr_size) {
    if (!url || !*url)
        return db_exec_within(conn, timeout_ms,
                       "UPDATE subscriptions SET active = false, updated_at = now() "
                       "WHERE name = '" SUBS_EMAIL_NAME "' AND kind = 'email' AND active",
                       errstr, errstr_size);
    if (!decision_ok(min_decision))
        return snprintf(errstr, errstr_size, "smtp-min-decision: review or block"), -1;
    errstr[0] = '\0';
    json_t *a = csv_array(to ? to : "", "smtp-to", email_ok, false, errstr, errstr_size);
    char *tos = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    if (!tos) return -1;
    const char *params[3] = {url, tos, min_decision};
    PGresult *res = db_query(conn, timeout_ms, SQL_EMAIL_UPSERT, 3, params, NULL, NULL);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) db_error(conn, res, errstr, errstr_size);
    else if (strcmp(PQcmdTuples(res), "0") == 0) {
        snprintf(errstr, errstr_size, "a webhook subscription is named \"%s\": rename it",
                 SUBS_EMAIL_NAME);
        ok = 0;
    }
    PQclear(res);
    free(tos);
    return ok ? 0 : -1;
}
