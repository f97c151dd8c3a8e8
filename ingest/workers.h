/* workers: a small thread pool for the slow work an event loop must not do itself (Argon2 for
 * API keys and personal identifiers seen for the first time).
 *
 *   workers_submit(w, run, done, arg): run(arg) executes on a worker thread, then done(arg, false)
 *   on the loop thread (a pipe wakes the loop, like librdkafka's queue events). The request that
 *   waits for it stays parked; the loop keeps serving everything else.
 *
 * The queue is bounded: when it is full, submit fails and the caller answers 503 at once rather
 * than letting latency grow without limit. */
#ifndef FS_WORKERS_H
#define FS_WORKERS_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct workers workers;

/* run: on a worker thread; must only touch arg and thread-safe state. */
typedef void (*workers_run_fn)(void *arg);
/* done: on the loop thread, exactly once per accepted task. cancelled is true when the pool is
 * being destroyed (the loop is gone): free arg, reply to nobody. */
typedef void (*workers_done_fn)(void *arg, bool cancelled);

/* nthreads >= 1, max_queued >= 1 (tasks waiting for a thread). Returns NULL with errstr. */
workers *workers_new(struct event_base *base, int nthreads, size_t max_queued, char *errstr,
                     size_t errstr_size);

/* Returns 0 (done will be called), or -1 when the queue is full (nothing will be called). */
int workers_submit(workers *w, workers_run_fn run, workers_done_fn done, void *arg);

/* Tasks queued or running, not yet done on the loop (for drain and metrics). */
size_t workers_pending(const workers *w);

/* Finishes the running tasks, runs nothing else, calls done(arg, true) for every task not yet done,
 * joins the threads and frees. Accepts NULL. */
void workers_destroy(workers *w);

#endif
