/* metrics: Prometheus registry and text exposition (see metrics.h). */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum metric_type { M_COUNTER, M_GAUGE, M_HISTOGRAM } metric_type;

typedef struct series {
    char *labels;      /* comma-separated values, "" when unlabelled */
    double value;      /* counter / gauge; histogram: sum */
    double count;      /* histogram: observations */
    double *buckets;   /* histogram: cumulative counts per bound */
    struct series *next;
} series;

struct metric {
    metrics *reg;
    metric_type type;
    char *name, *help, *label_names;
    double *bounds;
    size_t nbounds;
    series *series;
    metric *next;
};

struct metrics {
    pthread_mutex_t lock;
    metric *head, *tail;
};

const double METRICS_LATENCY_BUCKETS[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                          0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                          5,      10};
const size_t METRICS_LATENCY_NBUCKETS = sizeof METRICS_LATENCY_BUCKETS / sizeof(double);

metrics *metrics_new(void) {
    metrics *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->lock, NULL);
    return m;
}

static void metric_free(metric *mt) {
    for (series *s = mt->series, *n; s; s = n) {
        n = s->next;
        free(s->labels);
        free(s->buckets);
        free(s);
    }
    free(mt->name);
    free(mt->help);
    free(mt->label_names);
    free(mt->bounds);
    free(mt);
}

void metrics_destroy(metrics *m) {
    if (!m) return;
    for (metric *mt = m->head, *n; mt; mt = n) {
        n = mt->next;
        metric_free(mt);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static metric *family_new(metrics *m, metric_type type, const char *name, const char *help,
                          const char *label_names, const double *bounds, size_t nbounds) {
    metric *mt = calloc(1, sizeof *mt);
    if (!mt) return NULL;
    mt->reg = m;
    mt->type = type;
    mt->name = strdup(name);
    mt->help = strdup(help);
    mt->label_names = strdup(label_names ? label_names : "");
    if (nbounds) {
        mt->bounds = malloc(nbounds * sizeof *bounds);
        if (mt->bounds) memcpy(mt->bounds, bounds, nbounds * sizeof *bounds);
        mt->nbounds = nbounds;
    }
    if (!mt->name || !mt->help || !mt->label_names || (nbounds && !mt->bounds)) {
        metric_free(mt);
        return NULL;
    }
    pthread_mutex_lock(&m->lock);
    if (m->tail) m->tail->next = mt; else m->head = mt;
    m->tail = mt;
    pthread_mutex_unlock(&m->lock);
    return mt;
}

metric *metrics_counter(metrics *m, const char *name, const char *help, const char *label_names) {
    return family_new(m, M_COUNTER, name, help, label_names, NULL, 0);
}

metric *metrics_gauge(metrics *m, const char *name, const char *help, const char *label_names) {
    return family_new(m, M_GAUGE, name, help, label_names, NULL, 0);
}

metric *metrics_histogram(metrics *m, const char *name, const char *help, const char *label_names,
                          const double *bounds, size_t nbounds) {
    return family_new(m, M_HISTOGRAM, name, help, label_names, bounds, nbounds);
}

/* The series for labels, created on first use. Called with the registry locked. */
static series *series_get(metric *mt, const char *labels) {
    if (!labels) labels = "";
    for (series *s = mt->series; s; s = s->next)
        if (strcmp(s->labels, labels) == 0) return s;
    series *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->labels = strdup(labels);
    if (mt->nbounds) s->buckets = calloc(mt->nbounds, sizeof *s->buckets);
    if (!s->labels || (mt->nbounds && !s->buckets)) {
        free(s->labels);
        free(s->buckets);
        free(s);
        return NULL;
    }
    s->next = mt->series;
    mt->series = s;
    return s;
}

static void update(metric *mt, const char *labels, double v, int op) {
    if (!mt) return;
    pthread_mutex_lock(&mt->reg->lock);
    series *s = series_get(mt, labels);
    if (s && op == 0) s->value += v;
    if (s && op == 1) s->value = v;
    if (s && op == 2) {
        s->value += v;
        s->count += 1;
        for (size_t i = 0; i < mt->nbounds; i++)
            if (v <= mt->bounds[i]) s->buckets[i] += 1;
    }
    pthread_mutex_unlock(&mt->reg->lock);
}

void metric_add(metric *mt, const char *labels, double v) { update(mt, labels, v, 0); }
void metric_set(metric *mt, const char *labels, double v) { update(mt, labels, v, 1); }
void metric_observe(metric *mt, const char *labels, double v) { update(mt, labels, v, 2); }

void metric_remove(metric *mt, const char *labels) {
    if (!mt) return;
    pthread_mutex_lock(&mt->reg->lock);
    for (series **p = &mt->series; *p; p = &(*p)->next) {
        series *s = *p;
        if (strcmp(s->labels, labels ? labels : "") != 0) continue;
        *p = s->next;
        free(s->labels);
        free(s->buckets);
        free(s);
        break;
    }
    pthread_mutex_unlock(&mt->reg->lock);
}

/* v with its commas as '_' into out (truncated to size). */
static const char *one_label(const char *v, char *out, size_t size) {
    snprintf(out, size, "%s", v);
    for (char *c = out; *c; c++)
        if (*c == ',') *c = '_';
    return out;
}

void metric_info_swap(metric *mt, const char *old, const char *now) {
    char a[128], b[128];
    if (old && (!now || strcmp(old, now) != 0)) metric_remove(mt, one_label(old, a, sizeof a));
    if (now) metric_set(mt, one_label(now, b, sizeof b), 1);
}

double metric_value(metric *mt, const char *labels) {
    double v = 0;
    pthread_mutex_lock(&mt->reg->lock);
    for (series *s = mt->series; s; s = s->next)
        if (strcmp(s->labels, labels ? labels : "") == 0) v = s->value;
    pthread_mutex_unlock(&mt->reg->lock);
    return v;
}

/* Writes {a="x",b="y"} (plus extra, e.g. le="0.5") for a series into f. */
static void put_labels(FILE *f, const metric *mt, const char *values, const char *extra) {
    if (!*mt->label_names && !extra) return;
    fputc('{', f);
    const char *n = mt->label_names, *v = values;
    int first = 1;
    while (*n) {
        size_t nl = strcspn(n, ","), vl = strcspn(v, ",");
        fprintf(f, "%s%.*s=\"", first ? "" : ",", (int)nl, n);
        for (size_t i = 0; i < vl; i++) {
            char c = v[i];
            if (c == '"' || c == '\\') fputc('\\', f);
            if (c == '\n') fputs("\\n", f); else fputc(c, f);
        }
        fputc('"', f);
        first = 0;
        n += nl + (n[nl] == ',');
        v += vl + (v[vl] == ',');
    }
    if (extra) fprintf(f, "%s%s", first ? "" : ",", extra);
    fputc('}', f);
}

static void render_family(FILE *f, const metric *mt) {
    static const char *const TYPES[] = {"counter", "gauge", "histogram"};
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", mt->name, mt->help, mt->name, TYPES[mt->type]);
    for (const series *s = mt->series; s; s = s->next) {
        if (mt->type != M_HISTOGRAM) {
            fputs(mt->name, f);
            put_labels(f, mt, s->labels, NULL);
            fprintf(f, " %.17g\n", s->value);
            continue;
        }
        char le[64];
        for (size_t i = 0; i <= mt->nbounds; i++) {
            if (i < mt->nbounds) snprintf(le, sizeof le, "le=\"%g\"", mt->bounds[i]);
            else snprintf(le, sizeof le, "le=\"+Inf\"");
            fprintf(f, "%s_bucket", mt->name);
            put_labels(f, mt, s->labels, le);
            fprintf(f, " %.17g\n", i < mt->nbounds ? s->buckets[i] : s->count);
        }
        fprintf(f, "%s_sum", mt->name);
        put_labels(f, mt, s->labels, NULL);
        fprintf(f, " %.17g\n%s_count", s->value, mt->name);
        put_labels(f, mt, s->labels, NULL);
        fprintf(f, " %.17g\n", s->count);
    }
}

char *metrics_render(metrics *m, size_t *len) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f) return NULL;
    pthread_mutex_lock(&m->lock);
    for (const metric *mt = m->head; mt; mt = mt->next) render_family(f, mt);
    pthread_mutex_unlock(&m->lock);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}
