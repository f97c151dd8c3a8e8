/* app: see app.h. */
#include "app.h"

#include <stdbool.h>
#include <string.h>

#include "log.h"

/* Only a lock-free atomic may be written from a signal handler (C11 7.14.1.1). */
_Static_assert(ATOMIC_BOOL_LOCK_FREE == 2, "atomic_bool must be lock-free for the signal handlers");

atomic_bool app_stop_requested;
atomic_bool app_reload_requested;

static void on_stop(int sig) {
    (void)sig;
    atomic_store(&app_stop_requested, true);
}

static void on_reload(int sig) {
    (void)sig;
    atomic_store(&app_reload_requested, true);
}

void app_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_reload;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The value of the table's "log-level" option in conf, or NULL. */
static const char *log_level_of(const cfg_opt *table, const void *conf) {
    for (const cfg_opt *o = table; o->name; o++)
        if (strcmp(o->name, "log-level") == 0 && o->type == CFG_STRING)
            return *(char *const *)(const void *)((const char *)conf + o->offset);
    return NULL;
}

cfg_result app_configure(const char *proc, const cfg_opt *table, void *conf, cfg_props *props,
                         int argc, char **argv, const char *prog, const char *summary) {
    char errstr[512];
    log_level level;
    log_init(proc, LOG_INFO);
    cfg_result r = cfg_parse(table, conf, props, argc, argv, prog, summary, errstr, sizeof errstr);
    if (r != CFG_OK) {
        if (r == CFG_ERROR) log_msg(LOG_ERROR, "config_invalid", "%s", errstr);
        return r;
    }
    const char *name = log_level_of(table, conf);
    if (!name || log_level_parse(name, &level) != 0) {
        log_msg(LOG_ERROR, "config_invalid", "log-level: unknown level %s", name ? name : "(none)");
        return CFG_ERROR;
    }
    log_init(proc, level);
    cfg_log(table, conf, props);
    return CFG_OK;
}
