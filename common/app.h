/* app: the start-up every FraudShield program shares, so that each main() says only what is its
 * own: parse the configuration table (defaults < environment < command line), set the log level
 * from its "log-level" option, log the effective configuration, and install the signal handlers.
 *
 * Signals: SIGTERM and SIGINT set app_stop_requested, SIGHUP sets app_reload_requested (handlers
 * only set these flags; the program's loop acts on them), SIGPIPE is ignored (a peer that went
 * away must not kill the process on write).
 *
 * The flags are C11 atomics, read and written with atomic_load / atomic_store (atomic_exchange to
 * take a reload), not volatile sig_atomic_t: a handler runs in whichever thread the signal lands
 * on (the admin thread, the alerter's dispatcher, a worker...), and other threads read the flags
 * (the dispatcher reads app_stop_requested itself), which for a plain sig_atomic_t is a data race.
 * A lock-free atomic is as safe in a handler as sig_atomic_t (app.c asserts lock-freedom). */
#ifndef FS_APP_H
#define FS_APP_H

#include <signal.h>
#include <stdatomic.h>

#include "cfg.h"

extern atomic_bool app_stop_requested;
extern atomic_bool app_reload_requested;

void app_signals_install(void);

/* cfg_parse() into conf and props, then log_init(proc, <log-level option>) and cfg_log().
 * Returns CFG_OK (run), CFG_HELP (usage printed: exit 0) or CFG_ERROR (logged: exit 1). The table
 * must have a "log-level" CFG_STRING option. The caller frees with cfg_free() in every case. */
cfg_result app_configure(const char *proc, const cfg_opt *table, void *conf, cfg_props *props,
                         int argc, char **argv, const char *prog, const char *summary);

#endif
