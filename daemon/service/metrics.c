/*
 * metrics: see metrics.h. The collector's samples are gathered into a per-render list, then
 * written family by family so that the HELP/TYPE header precedes all of a family's series
 * whatever order the collector reported them in.
 */
#include "daemon/service/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"

typedef enum { FAMILY_COUNTER, FAMILY_GAUGE, FAMILY_HISTOGRAM } family_type;

typedef struct {
    char *name, *help, *label;
    char *fixed_labels; /* an info family's one constant series: k="v",... (else NULL) */
    family_type type;
    double bounds[GS_METRICS_MAX_BUCKETS];
    size_t n_bounds;
} family;

typedef struct {
    int family;
    char *label_value;
    double value;
    uint64_t counts[GS_METRICS_MAX_BUCKETS + 1];
} sample;

struct gs_metrics_sink {
    const gs_metrics *m;
    sample *samples;
    size_t n, cap;
};

struct gs_metrics {
    pthread_mutex_t lock; /* one render at a time; guards the collector */
    family *families;
    size_t n_families;
    gs_metrics_collect_fn *collect;
    void *user;
    gs_http *http; /* the registry's own server (gs_metrics_new with an address), or NULL */
};

/* A growable text buffer; a failed append sets failed and later appends do nothing. */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} text;

static void text_append(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_append(text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if (t->p && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap <= t->len + (size_t)n)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
}

/* Appends s with the escapes of the text format: backslash and newline always, the double
 * quote too inside label values. */
static void text_escaped(text *t, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            text_append(t, "\\\\");
        else if (*s == '\n')
            text_append(t, "\\n");
        else if (quote && *s == '"')
            text_append(t, "\\\"");
        else
            text_append(t, "%c", *s);
    }
}

/* The shortest of %.15g / %.17g that reads back as v, and the format's spellings of the
 * non-finite values. */
static void text_number(text *t, double v)
{
    if (isnan(v)) {
        text_append(t, "NaN");
        return;
    }
    if (isinf(v)) {
        text_append(t, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, sizeof buf, "%.17g", v);
    text_append(t, "%s", buf);
}

static int valid_name(const char *s, int is_label)
{
    if (!s || !*s)
        return 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        int digit = c >= '0' && c <= '9';
        if (!(alpha || (i > 0 && digit) || (!is_label && c == ':')))
            return 0;
    }
    return 1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* A label key the text format accepts that is not reserved (le is the histograms', a leading
 * __ Prometheus'). */
static int valid_label_key(const char *key)
{
    return valid_name(key, 1) && strcmp(key, "le") != 0 && strncmp(key, "__", 2) != 0;
}

static int family_add(gs_metrics *m, family_type type, const char *name, const char *help,
                      const char *label, const double *bounds, size_t n_bounds)
{
    GS_ASSERT(m);
    GS_ASSERT(!m->collect); /* families are fixed before the first render can run */
    if (!valid_name(name, 0) || strncmp(name, "gastroscreen_", 13) != 0)
        return gs_error_set("metrics: bad metric name '%s' (want gastroscreen_[a-z0-9_]...)",
                            name ? name : "(null)");
    if (type == FAMILY_COUNTER && !ends_with(name, "_total"))
        return gs_error_set("metrics: counter '%s' must end in _total", name);
    if (label && !valid_label_key(label))
        return gs_error_set("metrics: bad label key '%s' for %s", label, name);
    for (size_t i = 0; i < m->n_families; i++)
        if (!strcmp(m->families[i].name, name))
            return gs_error_set("metrics: '%s' is registered twice", name);
    if (type == FAMILY_HISTOGRAM) {
        if (!bounds || n_bounds < 1 || n_bounds > GS_METRICS_MAX_BUCKETS)
            return gs_error_set("metrics: histogram %s needs 1..%d bounds, got %zu", name,
                                GS_METRICS_MAX_BUCKETS, n_bounds);
        for (size_t i = 0; i < n_bounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
                return gs_error_set("metrics: histogram %s: bounds must be finite and "
                                    "strictly increasing",
                                    name);
    }
    family *grown = realloc(m->families, (m->n_families + 1) * sizeof *grown);
    if (!grown)
        return gs_error_set("metrics: out of memory");
    m->families = grown;
    family *f = &m->families[m->n_families];
    memset(f, 0, sizeof *f);
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->label = label ? strdup(label) : NULL;
    if (!f->name || !f->help || (label && !f->label)) {
        free(f->name);
        free(f->help);
        free(f->label);
        return gs_error_set("metrics: out of memory");
    }
    if (type == FAMILY_HISTOGRAM) {
        memcpy(f->bounds, bounds, n_bounds * sizeof *bounds);
        f->n_bounds = n_bounds;
    }
    return (int)m->n_families++;
}

int gs_metrics_counter(gs_metrics *m, const char *name, const char *help, const char *label)
{
    return family_add(m, FAMILY_COUNTER, name, help, label, NULL, 0);
}

int gs_metrics_gauge(gs_metrics *m, const char *name, const char *help, const char *label)
{
    return family_add(m, FAMILY_GAUGE, name, help, label, NULL, 0);
}

int gs_metrics_histogram(gs_metrics *m, const char *name, const char *help, const char *label,
                         const double *bounds, size_t n_bounds)
{
    return family_add(m, FAMILY_HISTOGRAM, name, help, label, bounds, n_bounds);
}

int gs_metrics_info(gs_metrics *m, const char *name, const char *help, const char *const *keys,
                    const char *const *values, size_t n)
{
    GS_ASSERT(m);
    if (!name || !ends_with(name, "_info"))
        return gs_error_set("metrics: info family '%s' must end in _info", name ? name : "(null)");
    if (n < 1 || n > GS_METRICS_MAX_INFO_LABELS || !keys || !values)
        return gs_error_set("metrics: info family %s needs 1..%d labels, got %zu", name,
                            GS_METRICS_MAX_INFO_LABELS, n);
    text labels = {0};
    for (size_t i = 0; i < n; i++) {
        int repeated = 0;
        for (size_t j = 0; keys[i] && j < i; j++)
            repeated |= !strcmp(keys[i], keys[j]);
        if (!valid_label_key(keys[i]) || repeated || !values[i]) {
            free(labels.p);
            return gs_error_set("metrics: bad or repeated label key '%s' (or no value) for %s",
                                keys[i] ? keys[i] : "(null)", name);
        }
        text_append(&labels, "%s%s=\"", i ? "," : "", keys[i]);
        text_escaped(&labels, values[i], 1);
        text_append(&labels, "\"");
    }
    if (labels.failed) {
        free(labels.p);
        return gs_error_set("metrics: out of memory");
    }
    int id = family_add(m, FAMILY_GAUGE, name, help, NULL, NULL, 0);
    if (id < 0) {
        free(labels.p);
        return -1;
    }
    m->families[id].fixed_labels = labels.p;
    return id;
}

void gs_metrics_set_collector(gs_metrics *m, gs_metrics_collect_fn *fn, void *user)
{
    GS_ASSERT(m);
    pthread_mutex_lock(&m->lock);
    m->collect = fn;
    m->user = user;
    pthread_mutex_unlock(&m->lock);
}

/* Checks a sample against its family and appends a slot for it. Returns the slot or NULL with
 * the error set. */
static sample *sink_push(gs_metrics_sink *sink, int id, const char *label_value, int histogram)
{
    GS_ASSERT(sink);
    if (id < 0 || (size_t)id >= sink->m->n_families) {
        gs_error_set("metrics: no family %d", id);
        return NULL;
    }
    const family *f = &sink->m->families[id];
    if (f->fixed_labels) {
        gs_error_set("metrics: %s is an info family: its value is fixed", f->name);
        return NULL;
    }
    if ((f->type == FAMILY_HISTOGRAM) != histogram) {
        gs_error_set("metrics: %s is %sa histogram", f->name, histogram ? "not " : "");
        return NULL;
    }
    if (!f->label != !label_value) {
        gs_error_set("metrics: %s %s a label value", f->name, f->label ? "needs" : "takes no");
        return NULL;
    }
    if (sink->n == sink->cap) {
        size_t cap = sink->cap ? 2 * sink->cap : 32;
        sample *grown = realloc(sink->samples, cap * sizeof *grown);
        if (!grown) {
            gs_error_set("metrics: out of memory");
            return NULL;
        }
        sink->samples = grown;
        sink->cap = cap;
    }
    sample *s = &sink->samples[sink->n];
    memset(s, 0, sizeof *s);
    s->family = id;
    if (label_value && !(s->label_value = strdup(label_value))) {
        gs_error_set("metrics: out of memory");
        return NULL;
    }
    sink->n++;
    return s;
}

int gs_metrics_sample(gs_metrics_sink *sink, int family_id, const char *label_value, double value)
{
    GS_ASSERT(sink);
    if (family_id >= 0 && (size_t)family_id < sink->m->n_families &&
        sink->m->families[family_id].type == FAMILY_COUNTER && (isnan(value) || value < 0))
        return gs_error_set("metrics: counter %s cannot be %g", sink->m->families[family_id].name,
                            value);
    sample *s = sink_push(sink, family_id, label_value, 0);
    if (!s)
        return -1;
    s->value = value;
    return 0;
}

int gs_metrics_sample_histogram(gs_metrics_sink *sink, int family_id, const char *label_value,
                                const uint64_t *counts, double sum)
{
    GS_ASSERT(sink && counts);
    sample *s = sink_push(sink, family_id, label_value, 1);
    if (!s)
        return -1;
    const family *f = &sink->m->families[family_id];
    memcpy(s->counts, counts, (f->n_bounds + 1) * sizeof *counts);
    s->value = sum;
    return 0;
}

void gs_metrics_hist_observe(gs_metrics_hist *h, const double *bounds, size_t n_bounds, double v)
{
    GS_ASSERT(h && bounds && n_bounds <= GS_METRICS_MAX_BUCKETS);
    if (isnan(v))
        return;
    size_t i = 0;
    while (i < n_bounds && v > bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
}

/* Writes name{label="value"[,le="bound"]} for one series. */
static void series(text *t, const family *f, const char *suffix, const sample *s, const char *le)
{
    text_append(t, "%s%s", f->name, suffix);
    if (!f->label && !le)
        return;
    text_append(t, "{");
    if (f->label) {
        text_append(t, "%s=\"", f->label);
        text_escaped(t, s->label_value, 1);
        text_append(t, "\"%s", le ? "," : "");
    }
    if (le)
        text_append(t, "le=\"%s\"", le);
    text_append(t, "}");
}

char *gs_metrics_render(gs_metrics *m, size_t *len)
{
    GS_ASSERT(m);
    static const char *type_names[] = {"counter", "gauge", "histogram"};
    gs_metrics_sink sink = {.m = m};
    text t = {0};
    pthread_mutex_lock(&m->lock);
    if (m->collect)
        m->collect(&sink, m->user);
    pthread_mutex_unlock(&m->lock);

    text_append(&t, "%s", ""); /* an empty registry still renders a valid empty text */
    for (size_t fi = 0; fi < m->n_families; fi++) {
        const family *f = &m->families[fi];
        text_append(&t, "# HELP %s ", f->name);
        text_escaped(&t, f->help, 0);
        text_append(&t, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        if (f->fixed_labels)
            text_append(&t, "%s{%s} 1\n", f->name, f->fixed_labels);
        for (size_t si = 0; si < sink.n; si++) {
            const sample *s = &sink.samples[si];
            if (s->family != (int)fi)
                continue;
            if (f->type != FAMILY_HISTOGRAM) {
                series(&t, f, "", s, NULL);
                text_append(&t, " ");
                text_number(&t, s->value);
                text_append(&t, "\n");
                continue;
            }
            uint64_t cumulative = 0;
            for (size_t b = 0; b <= f->n_bounds; b++) {
                text le = {0};
                if (b < f->n_bounds)
                    text_number(&le, f->bounds[b]);
                else
                    text_append(&le, "+Inf");
                cumulative += s->counts[b];
                series(&t, f, "_bucket", s, le.failed ? "" : le.p);
                text_append(&t, " %llu\n", (unsigned long long)cumulative);
                t.failed |= le.failed;
                free(le.p);
            }
            series(&t, f, "_sum", s, NULL);
            text_append(&t, " ");
            text_number(&t, s->value);
            text_append(&t, "\n");
            series(&t, f, "_count", s, NULL);
            text_append(&t, " %llu\n", (unsigned long long)cumulative);
        }
    }
    for (size_t si = 0; si < sink.n; si++)
        free(sink.samples[si].label_value);
    free(sink.samples);
    if (t.failed) {
        free(t.p);
        gs_error_set("metrics: out of memory rendering");
        return NULL;
    }
    if (len)
        *len = t.len;
    return t.p;
}

int gs_metrics_serve(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    gs_metrics *m = user;
    if (strcmp(gs_http_path(rq), "/metrics") != 0)
        return gs_http_reply_text(reply, 404, "not found; try /metrics\n");
    size_t len = 0;
    char *body = gs_metrics_render(m, &len);
    if (!body)
        return -1;
    int rc = gs_http_reply_bytes(reply, 200, GS_METRICS_CONTENT_TYPE, body, len);
    free(body);
    return rc;
}

/* The server of a registry that has its own port: /metrics only. Small limits: one scraper,
 * and a stuck or garbage client must not pin the thread. One address holds at most 4 of the 16
 * connections (a scraper needs one or two), so a slow client cannot keep other hosts out; an
 * idle connection is closed after 5 s (a scrape takes milliseconds). */
static int start_server(gs_metrics *m, const char *listen)
{
    gs_http_options o = {.listen = listen, .max_connections = 16, .max_per_ip = 4, .timeout_s = 5};
    if (!(m->http = gs_http_new(&o)))
        return -1;
    if (gs_http_route(m->http, "/metrics", gs_metrics_serve, m) < 0 || gs_http_start(m->http) < 0) {
        gs_http_destroy(&m->http);
        return -1;
    }
    return 0;
}

gs_metrics *gs_metrics_new(const char *listen)
{
    gs_metrics *m = calloc(1, sizeof *m);
    if (!m) {
        gs_error_set("metrics: out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    if (listen && *listen && start_server(m, listen) < 0)
        goto fail_free;
    return m;

fail_free:
    pthread_mutex_destroy(&m->lock);
    free(m);
    return NULL;
}

void gs_metrics_destroy(gs_metrics **pm)
{
    if (!pm || !*pm)
        return;
    gs_metrics *m = *pm;
    gs_http_destroy(&m->http);
    for (size_t i = 0; i < m->n_families; i++) {
        free(m->families[i].name);
        free(m->families[i].help);
        free(m->families[i].label);
        free(m->families[i].fixed_labels);
    }
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
    *pm = NULL;
}

int gs_metrics_port(const gs_metrics *m)
{
    return m && m->http ? gs_http_port(m->http) : 0;
}
