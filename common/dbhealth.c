/* dbhealth: a PostgreSQL connection's answers, written by one thread, read by any (see dbhealth.h). */
#include "dbhealth.h"

#include <stdatomic.h>
#include <stdlib.h>

struct dbhealth {
    _Atomic int64_t answered_us; /* when the server last answered */
    _Atomic int64_t busy_us;     /* when the round trip in flight started; 0: none */
    atomic_bool up;              /* the connection worked after the last round trip */
};

dbhealth *dbhealth_new(int64_t now_us, bool up) {
    dbhealth *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    atomic_store(&h->answered_us, now_us);
    atomic_store(&h->up, up);
    return h;
}

void dbhealth_destroy(dbhealth *h) { free(h); }

void dbhealth_trip_start(dbhealth *h, int64_t now_us) { atomic_store(&h->busy_us, now_us); }

void dbhealth_trip_end(dbhealth *h, int64_t now_us, bool answered) {
    if (answered) atomic_store(&h->answered_us, now_us);
    atomic_store(&h->up, answered);
    atomic_store(&h->busy_us, 0);
}

void dbhealth_answered(dbhealth *h, int64_t now_us) { atomic_store(&h->answered_us, now_us); }

void dbhealth_set_up(dbhealth *h, bool up) { atomic_store(&h->up, up); }

int64_t dbhealth_age_ms(const dbhealth *h, int64_t now_us) {
    return (now_us - atomic_load(&h->answered_us)) / 1000;
}

bool dbhealth_up(const dbhealth *h) { return atomic_load(&h->up); }

bool dbhealth_stuck(const dbhealth *h, int64_t now_us, int64_t limit_ms) {
    int64_t busy = atomic_load(&h->busy_us);
    if (busy && now_us - busy > limit_ms * 1000) return true;
    return !atomic_load(&h->up) && dbhealth_age_ms(h, now_us) > limit_ms;
}
