/* metrics: a small Prometheus registry (counters, gauges, histograms, with labels) and its text
 * exposition format (version 0.0.4).
 *
 *   metrics *m = metrics_new();
 *   metric *req = metrics_counter(m, "fs_ingest_requests_total", "HTTP requests", "route,status");
 *   metric_add(req, "payments,202", 1);
 *   char *text = metrics_render(m, &len);   // GET /metrics
 *
 * Label values are given as one comma-separated string in the order of the family's label names
 * (values must not contain commas; they are escaped for the exposition format). All functions are
 * thread-safe (one mutex per registry: updates cost a lock and a short linear lookup per family,
 * cheap next to the work they count). Metric handles live as long as the registry. */
#ifndef FS_METRICS_H
#define FS_METRICS_H

#include <stddef.h>

typedef struct metrics metrics;
typedef struct metric metric;

metrics *metrics_new(void);
void metrics_destroy(metrics *m); /* accepts NULL */

/* label_names: "a,b" or NULL for an unlabelled metric. Returns NULL on allocation failure. */
metric *metrics_counter(metrics *m, const char *name, const char *help, const char *label_names);
metric *metrics_gauge(metrics *m, const char *name, const char *help, const char *label_names);
/* bounds: ascending upper bounds of the buckets (+Inf is implicit). */
metric *metrics_histogram(metrics *m, const char *name, const char *help, const char *label_names,
                          const double *bounds, size_t nbounds);

/* Counter (v >= 0) or gauge increment. labels: NULL for an unlabelled metric. NULL mt: no-op. */
void metric_add(metric *mt, const char *labels, double v);
/* Gauge value. */
void metric_set(metric *mt, const char *labels, double v);
/* Histogram observation. */
void metric_observe(metric *mt, const char *labels, double v);
/* Removes a series (no-op when absent): an info gauge whose label changed, e.g. a model version
 * replaced, must stop being exported rather than linger at 0 forever. */
void metric_remove(metric *mt, const char *labels);
/* An info gauge of one label (a version, a key id): the series `now` becomes 1 and the series
 * `old` is removed, so the family shows only what is in use. Either may be NULL (nothing to set /
 * to remove); commas in the values become '_' (label values are comma-separated here). */
void metric_info_swap(metric *mt, const char *old, const char *now);
/* Current value of a counter or gauge series (0 when the series does not exist); for tests. */
double metric_value(metric *mt, const char *labels);

/* Default latency buckets in seconds: 100 us .. 10 s. */
extern const double METRICS_LATENCY_BUCKETS[];
extern const size_t METRICS_LATENCY_NBUCKETS;

/* The exposition text (malloc'd, caller frees), its length in *len. NULL on allocation failure. */
char *metrics_render(metrics *m, size_t *len);

#endif
