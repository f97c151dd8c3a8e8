/* cfg: one configuration table per process (see cfg.h). */
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

extern char **environ;

#define FIELD(conf, opt) ((char *)(conf) + (opt)->offset)

static int set_bool(const char *v, bool *out) {
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) return *out = true, 0;
        if (strcasecmp(v, no[i]) == 0) return *out = false, 0;
    }
    return -1;
}

/* Stores one textual value into conf after checking its type and bounds. from names the source. */
static int opt_set(const cfg_opt *o, void *conf, const char *v, const char *from, char *errstr,
                   size_t errstr_size) {
    switch (o->type) {
    case CFG_STRING: {
        if (o->max > 0 && (int64_t)strlen(v) > o->max) {
            snprintf(errstr, errstr_size, "%s (%s): longer than %lld bytes", o->name, from,
                     (long long)o->max);
            return -1;
        }
        /* a default may be empty (required: the program says so); a value given may not be
         * shorter than min (an empty --brokers= or --topic= failed late and obscurely) */
        if (strcmp(from, "default") != 0 && (int64_t)strlen(v) < o->min) {
            snprintf(errstr, errstr_size, "%s (%s): %s", o->name, from,
                     o->min == 1 ? "must not be empty" : "too short");
            return -1;
        }
        char **field = (char **)FIELD(conf, o);
        free(*field);
        *field = strdup(v);
        return *field ? 0 : -1;
    }
    case CFG_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end != '\0' || n < o->min || n > o->max) {
            snprintf(errstr, errstr_size, "%s (%s): \"%s\" is not an integer in [%lld, %lld]",
                     o->name, from, o->secret ? "***" : v, (long long)o->min, (long long)o->max);
            return -1;
        }
        *(int64_t *)FIELD(conf, o) = n;
        return 0;
    }
    case CFG_BOOL:
        if (set_bool(v, (bool *)FIELD(conf, o)) != 0) {
            snprintf(errstr, errstr_size, "%s (%s): \"%s\" is not a boolean (true/false)", o->name,
                     from, v);
            return -1;
        }
        return 0;
    }
    return -1;
}

int cfg_props_set(cfg_props *props, const char *name, const char *value) {
    for (size_t i = 0; i < props->n; i++) {
        if (strcmp(props->name[i], name) == 0) {
            free(props->value[i]);
            props->value[i] = strdup(value);
            return props->value[i] ? 0 : -1;
        }
    }
    if (props->n == CFG_MAX_PROPS) return -1;
    props->name[props->n] = strdup(name);
    props->value[props->n] = strdup(value);
    props->n++;
    return 0;
}

const char *cfg_props_get(const cfg_props *props, const char *name) {
    for (size_t i = 0; i < props->n; i++)
        if (strcmp(props->name[i], name) == 0) return props->value[i];
    return NULL;
}

/* "name=value" into props (the -X form). */
static int prop_assign(cfg_props *props, const char *kv, const char *from, char *errstr,
                       size_t errstr_size) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        snprintf(errstr, errstr_size, "%s: expected property=value, got \"%s\"", from, kv);
        return -1;
    }
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(eq - kv), kv);
    if (cfg_props_set(props, name, eq + 1) != 0) {
        snprintf(errstr, errstr_size, "%s: too many properties", from);
        return -1;
    }
    return 0;
}

/* KAFKA_SECURITY_PROTOCOL=ssl -> security.protocol=ssl */
static int props_from_env(cfg_props *props, char *errstr, size_t errstr_size) {
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "KAFKA_", 6) != 0) continue;
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e + 6) continue;
        char name[256];
        size_t n = (size_t)(eq - (*e + 6));
        if (n >= sizeof name) continue;
        for (size_t i = 0; i < n; i++) {
            char c = (*e)[6 + i];
            name[i] = c == '_' ? '.' : (char)tolower((unsigned char)c);
        }
        name[n] = '\0';
        if (cfg_props_set(props, name, eq + 1) != 0) {
            snprintf(errstr, errstr_size, "environment: too many KAFKA_* properties");
            return -1;
        }
    }
    return 0;
}

static const cfg_opt *opt_find(const cfg_opt *table, const char *name, size_t len) {
    for (const cfg_opt *o = table; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

static int apply_defaults_and_env(const cfg_opt *table, void *conf, char *errstr,
                                  size_t errstr_size) {
    for (const cfg_opt *o = table; o->name; o++) {
        if (opt_set(o, conf, o->def ? o->def : "", "default", errstr, errstr_size) != 0) return -1;
        const char *v = o->env ? getenv(o->env) : NULL;
        if (v && opt_set(o, conf, v, o->env, errstr, errstr_size) != 0) return -1;
    }
    return 0;
}

/* One command-line argument (and maybe the next). Returns the number consumed, or -1. */
static int parse_arg(const cfg_opt *table, void *conf, cfg_props *props, int argc, char **argv,
                     int i, char *errstr, size_t errstr_size) {
    const char *a = argv[i];
    if (strcmp(a, "-X") == 0) {
        if (i + 1 >= argc) return snprintf(errstr, errstr_size, "-X needs property=value"), -1;
        return prop_assign(props, argv[i + 1], "-X", errstr, errstr_size) ? -1 : 2;
    }
    if (strncmp(a, "--", 2) != 0) return snprintf(errstr, errstr_size, "unexpected argument \"%s\"", a), -1;
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const cfg_opt *o = opt_find(table, name, len);
    if (!o) return snprintf(errstr, errstr_size, "unknown option --%.*s (see --help)", (int)len, name), -1;
    if (eq) return opt_set(o, conf, eq + 1, a, errstr, errstr_size) ? -1 : 1;
    if (o->type == CFG_BOOL) return opt_set(o, conf, "true", a, errstr, errstr_size) ? -1 : 1;
    if (i + 1 >= argc) return snprintf(errstr, errstr_size, "--%s needs a value", o->name), -1;
    return opt_set(o, conf, argv[i + 1], a, errstr, errstr_size) ? -1 : 2;
}

cfg_result cfg_parse(const cfg_opt *table, void *conf, cfg_props *props, int argc, char **argv,
                     const char *prog, const char *summary, char *errstr, size_t errstr_size) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cfg_usage(stdout, prog, summary, table);
            return CFG_HELP;
        }
        if (strcmp(argv[i], "--help-markdown") == 0) {
            cfg_usage_markdown(stdout, table);
            return CFG_HELP;
        }
    }
    if (apply_defaults_and_env(table, conf, errstr, errstr_size) != 0) return CFG_ERROR;
    if (props_from_env(props, errstr, errstr_size) != 0) return CFG_ERROR;
    for (int i = 1; i < argc;) {
        int used = parse_arg(table, conf, props, argc, argv, i, errstr, errstr_size);
        if (used < 0) return CFG_ERROR;
        i += used;
    }
    return CFG_OK;
}

static const char *type_name(cfg_type t) {
    return t == CFG_INT ? "int" : t == CFG_BOOL ? "bool" : "string";
}

void cfg_usage(FILE *out, const char *prog, const char *summary, const cfg_opt *table) {
    fprintf(out, "Usage: %s [--option=value ...] [-X kafka.property=value ...]\n%s\n\nOptions:\n",
            prog, summary);
    for (const cfg_opt *o = table; o->name; o++) {
        fprintf(out, "  --%-26s %-6s env %s\n", o->name, type_name(o->type), o->env);
        fprintf(out, "      %s\n", o->desc);
        if (o->type == CFG_INT)
            fprintf(out, "      default %s, range [%lld, %lld]\n", o->def, (long long)o->min,
                    (long long)o->max);
        else
            fprintf(out, "      default \"%s\"\n", o->secret ? "" : o->def);
    }
    fprintf(out, "\nlibrdkafka properties: -X name=value or KAFKA_NAME=value "
                 "(KAFKA_SECURITY_PROTOCOL=ssl sets security.protocol=ssl).\n");
}

void cfg_usage_markdown(FILE *out, const cfg_opt *table) {
    fprintf(out, "| option | environment | type | default | range | description |\n"
                 "|---|---|---|---|---|---|\n");
    for (const cfg_opt *o = table; o->name; o++) {
        char range[64] = "";
        if (o->type == CFG_INT)
            snprintf(range, sizeof range, "%lld..%lld", (long long)o->min, (long long)o->max);
        fprintf(out, "| `--%s` | `%s` | %s | %s%s%s | %s | %s |\n", o->name, o->env,
                type_name(o->type), *o->def && !o->secret ? "`" : "", o->secret ? "" : o->def,
                *o->def && !o->secret ? "`" : "", range, o->desc);
    }
}

/* v as a JSON string, a URL's user and password ("scheme://user:pw@host") masked: a login put in a
 * URL option that is not marked secret never reaches the log. */
static json_t *string_masked(const char *v) {
    const char *auth = v ? strstr(v, "://") : NULL, *at = NULL;
    if (!auth) return json_string(v);
    auth += 3;
    /* the authority runs to the first '/'; its userinfo to the last '@' in it (a password may
     * hold '@', '?' or '#': a URL parser that stops at them is not what the option's user meant) */
    for (const char *c = auth; *c && *c != '/'; c++)
        if (*c == '@') at = c;
    if (!at) return json_string(v);
    char *m = NULL;
    json_t *j = asprintf(&m, "%.*s***%s", (int)(auth - v), v, at) < 0 ? NULL : json_string(m);
    free(m);
    return j;
}

void cfg_log(const cfg_opt *table, const void *conf, const cfg_props *props) {
    json_t *f = json_object();
    for (const cfg_opt *o = table; o->name; o++) {
        const char *field = (const char *)conf + o->offset;
        json_t *v;
        if (o->secret) v = json_string(*(char *const *)field && **(char *const *)field ? "***" : "");
        else if (o->type == CFG_STRING) v = string_masked(*(char *const *)field);
        else if (o->type == CFG_INT) v = json_integer(*(const int64_t *)field);
        else v = json_boolean(*(const bool *)field);
        json_object_set_new(f, o->name, v);
    }
    json_t *kp = json_object();
    for (size_t i = 0; i < props->n; i++) {
        bool secret = strstr(props->name[i], "password") || strstr(props->name[i], "secret") ||
                      strstr(props->name[i], "key");
        json_object_set_new(kp, props->name[i], json_string(secret ? "***" : props->value[i]));
    }
    json_object_set_new(f, "kafka", kp);
    log_fields(LOG_INFO, "config", json_pack("{s:o}", "config", f), "effective configuration");
}

void cfg_free(const cfg_opt *table, void *conf, cfg_props *props) {
    for (const cfg_opt *o = table; conf && o->name; o++) {
        if (o->type != CFG_STRING) continue;
        char **field = (char **)FIELD(conf, o);
        free(*field);
        *field = NULL;
    }
    for (size_t i = 0; props && i < props->n; i++) {
        free(props->name[i]);
        free(props->value[i]);
    }
    if (props) props->n = 0;
}
