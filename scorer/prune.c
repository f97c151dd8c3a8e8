/* prune: the arithmetic of shared pruning (see prune.h). */
#include "prune.h"

#include "buckets.h"

#define HOUR_TIER_REACH_MS (BUCKETS_DAY_MS + BUCKETS_HOUR_MS) /* longest hour-bucket window */
#define DAY_TIER_REACH_MS (61 * BUCKETS_DAY_MS) /* 30-day window + 30-day delay + its bucket */

void prune_reach(int64_t max_exact_window_ms, int64_t reach[PRUNE_SETS]) {
    reach[PRUNE_VELOCITY] = max_exact_window_ms;
    reach[PRUNE_HOUR] = HOUR_TIER_REACH_MS;
    reach[PRUNE_DAY] = DAY_TIER_REACH_MS;
}

int64_t prune_needed_from(int64_t watermark_ms, int64_t now_ms, int64_t lateness_ms) {
    if (watermark_ms == 0) return PRUNE_NONE;
    return (watermark_ms < now_ms ? watermark_ms : now_ms) - lateness_ms;
}

void prune_cutoffs(int64_t own, int64_t others, const int64_t reach[PRUNE_SETS],
                   int64_t cutoff[PRUNE_SETS]) {
    int64_t from = others != PRUNE_NONE && others < own ? others : own;
    for (int i = 0; i < PRUNE_SETS; i++) cutoff[i] = from - reach[i];
}

int64_t prune_late_before(int64_t own, const int64_t horizon[PRUNE_SETS],
                          const int64_t reach[PRUNE_SETS]) {
    int64_t before = own;
    for (int i = 0; i < PRUNE_SETS; i++)
        if (horizon[i] != PRUNE_NONE && horizon[i] + reach[i] > before)
            before = horizon[i] + reach[i];
    return before;
}

void prune_part_seen(prune_part *parts, size_t *n, size_t cap, int32_t partition,
                     int64_t event_ms, int64_t now_ms) {
    size_t i = 0;
    while (i < *n && parts[i].partition != partition) i++;
    if (i == *n) {
        if (*n == cap) return;
        parts[(*n)++] = (prune_part){.partition = partition, .max_event_ms = event_ms};
    }
    if (event_ms > parts[i].max_event_ms) parts[i].max_event_ms = event_ms;
    parts[i].seen_ms = now_ms;
}

void prune_part_forget(prune_part *parts, size_t *n, int32_t partition) {
    for (size_t i = 0; i < *n; i++)
        if (parts[i].partition == partition) {
            parts[i] = parts[--*n];
            return;
        }
}

int64_t prune_watermark(const prune_part *parts, size_t n, int64_t now_ms, int64_t idle_ms,
                        int64_t fallback) {
    int64_t least = INT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (now_ms - parts[i].seen_ms <= idle_ms && parts[i].max_event_ms < least)
            least = parts[i].max_event_ms;
    return least == INT64_MAX ? fallback : least;
}
