/* admin: the operations HTTP endpoint of a worker process (scorer, alerter): GET /health,
 * GET /ready and GET /metrics (Prometheus), served by libevent on a thread of its own so that a
 * worker blocked in PostgreSQL or Kafka still answers probes and scrapes.
 *
 * ready_fn is called on the admin thread: it must only read state that is safe to read from
 * another thread (atomics, or a metrics gauge). It is called for /ready and also before each
 * /metrics render, so a process may export its answer as a gauge set there: one function then
 * decides both, and a scrape never disagrees with /ready. */
#ifndef FS_ADMIN_H
#define FS_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics.h"

typedef struct admin admin;

/* Returns true when the process is ready; fills why (a short reason) when it is not. */
typedef bool (*admin_ready_fn)(void *arg, char *why, size_t why_size);

/* Binds addr:port (port 0: any free port, see admin_port) and starts the thread. m and arg are
 * borrowed: they must outlive the admin. Returns NULL with errstr. */
admin *admin_new(const char *addr, int port, metrics *m, admin_ready_fn ready, void *arg,
                 char *errstr, size_t errstr_size);

int admin_port(const admin *a);

/* Stops the thread and frees. Accepts NULL. */
void admin_destroy(admin *a);

#endif
