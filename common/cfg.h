/* cfg: one configuration table per process.
 *
 * Every setting is declared once, in a table of cfg_opt: name, environment variable, type, default,
 * bounds and a description. cfg_parse() fills the process's config struct from (lowest to highest
 * precedence) defaults, environment, command line. Unknown options and out-of-bound values are
 * errors, never silently ignored. `--help` prints the table.
 *
 * librdkafka properties pass through untouched, kcat style: `-X name=value` on the command line or
 * `KAFKA_NAME_WITH_UNDERSCORES=value` in the environment (KAFKA_SECURITY_PROTOCOL=ssl becomes
 * security.protocol=ssl). They are validated by librdkafka itself when the client is created. */
#ifndef FS_CFG_H
#define FS_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum cfg_type {
    CFG_STRING, /* char *, owned by the config struct; freed by cfg_free() */
    CFG_INT,    /* int64_t, checked against [min, max] */
    CFG_BOOL,   /* bool: true/false/1/0/yes/no/on/off */
} cfg_type;

typedef struct cfg_opt {
    const char *name;    /* long option, e.g. "listen-port" -> --listen-port */
    const char *env;     /* environment variable, e.g. "FS_LISTEN_PORT" */
    cfg_type type;
    const char *def;     /* default as text ("" for an empty string) */
    int64_t min, max;    /* CFG_INT: bounds; CFG_STRING: max is the maximum length (0 = none) */
    size_t offset;       /* offsetof(the process's config struct, field) */
    const char *desc;
    bool secret;         /* never printed (values are masked in logs and --help) */
} cfg_opt;

#define CFG_MAX_PROPS 128

/* librdkafka properties collected from -X and KAFKA_* (in the order given; later wins). */
typedef struct cfg_props {
    size_t n;
    char *name[CFG_MAX_PROPS];
    char *value[CFG_MAX_PROPS];
} cfg_props;

typedef enum cfg_result { CFG_OK = 0, CFG_HELP = 1, CFG_ERROR = -1 } cfg_result;

/* Fills conf (the struct the table's offsets point into) and props. On CFG_ERROR errstr names the
 * offending option; on CFG_HELP the usage was printed to stdout. The table ends with a {0} row. */
cfg_result cfg_parse(const cfg_opt *table, void *conf, cfg_props *props, int argc, char **argv,
                     const char *prog, const char *summary, char *errstr, size_t errstr_size);

/* Prints the table: option, environment variable, default, bounds, description. */
void cfg_usage(FILE *out, const char *prog, const char *summary, const cfg_opt *table);

/* The same as a Markdown table (`--help-markdown`), for the README. */
void cfg_usage_markdown(FILE *out, const cfg_opt *table);

/* Logs every effective value (secrets masked) at info level, for the start-up record. */
void cfg_log(const cfg_opt *table, const void *conf, const cfg_props *props);

/* Frees the strings that cfg_parse() allocated into conf, and the props. Accepts a zeroed conf. */
void cfg_free(const cfg_opt *table, void *conf, cfg_props *props);

/* Adds or replaces a property (copies both strings). Returns -1 when the list is full. */
int cfg_props_set(cfg_props *props, const char *name, const char *value);

/* The value of a property, or NULL when it was not given. */
const char *cfg_props_get(const cfg_props *props, const char *name);

#endif
