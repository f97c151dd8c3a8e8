/* dbhealth: how a PostgreSQL connection has been answering, for /ready and the
 * fs_*_db_last_success_age_seconds gauges.
 *
 * The thread that owns the connection records what happens to it; any other thread (the admin
 * endpoint's) reads it: every field is an atomic. A pure record, like breaker.h: the caller passes
 * the time (fs_mono_us()), and decides what counts as an answer: the scorer's store counts any
 * answer on a connection that is still up (an error result too), the alerter only successful
 * round trips.
 *
 *   answered  when the server last answered (the age); at creation: the age counts from then
 *   up        whether the connection worked after the last round trip or connection attempt
 *   busy      when the round trip in flight started, if one is
 *
 *   h = dbhealth_new(fs_mono_us(), true);
 *   t0 = fs_mono_us(); dbhealth_trip_start(h, t0);
 *   res = db_query(...);
 *   dbhealth_trip_end(h, fs_mono_us(), PQstatus(conn) == CONNECTION_OK);
 *   ... on the admin thread: dbhealth_stuck(h, fs_mono_us(), timeout_ms) */
#ifndef FS_DBHEALTH_H
#define FS_DBHEALTH_H

#include <stdbool.h>
#include <stdint.h>

typedef struct dbhealth dbhealth;

/* Answered at now_us (the age counts from there), up as given, nothing in flight. NULL when out
 * of memory. */
dbhealth *dbhealth_new(int64_t now_us, bool up);
void dbhealth_destroy(dbhealth *h); /* accepts NULL */

/* A round trip (or connection attempt) starts: in flight from now_us. */
void dbhealth_trip_start(dbhealth *h, int64_t now_us);

/* The round trip in flight, if any, ended at now_us. answered: the server answered (stamped, up);
 * else the connection is down. */
void dbhealth_trip_end(dbhealth *h, int64_t now_us, bool answered);

/* The server answered at now_us (only the age: up and in flight unchanged). */
void dbhealth_answered(dbhealth *h, int64_t now_us);

/* The connection works, or not (a reconnect, a failure seen without a round trip of ours). */
void dbhealth_set_up(dbhealth *h, bool up);

/* Milliseconds from the last answer to now_us. */
int64_t dbhealth_age_ms(const dbhealth *h, int64_t now_us);

bool dbhealth_up(const dbhealth *h);

/* True when the server has not answered for longer than limit_ms while we wait for it: a round
 * trip in flight for longer than that, or the connection down and no answer for longer than that.
 * Not merely an old answer: an idle connection has one too. */
bool dbhealth_stuck(const dbhealth *h, int64_t now_us, int64_t limit_ms);

#endif
