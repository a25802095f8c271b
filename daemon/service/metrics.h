/*
 * metrics: Prometheus text exposition (format 0.0.4) of the coordinator's numbers, served on
 * GET /metrics: as a route of a process's one HTTP server (daemon/service/http:
 * gs_http_route(h, "/metrics", gs_metrics_serve, m)), or by a server of the registry's own
 * (gs_metrics_new with a listen address).
 *
 * A gs_metrics is a small registry of metric families with fixed names (all starting with
 * "gastroscreen_"), a HELP text, a TYPE (counter, gauge, histogram) and at most one label key
 * (e.g. "stage", "reason", "socket": never a per-slide label, which would make one series per
 * slide). An info family (gs_metrics_info) is the exception: one constant series with several
 * labels and the value 1, Prometheus' convention for identity such as the build and the
 * model (a query joins on it; it never changes while the process runs). The registry holds no
 * values: at every render it calls the collector the owner registered, which reports the
 * current values of its own counters through gs_metrics_sample() /
 * gs_metrics_sample_histogram(). So the coordinator keeps its statistics in its own structures
 * and only hands over a snapshot when Prometheus asks.
 *
 * Use:
 *     gs_metrics *m = gs_metrics_new("");      // or "127.0.0.1:9464": a server of its own
 *     gs_http_route(http, "/metrics", gs_metrics_serve, m);
 *     int done = gs_metrics_counter(m, "gastroscreen_slides_done_total", "Slides ...", "class");
 *     int secs = gs_metrics_histogram(m, "gastroscreen_slide_duration_seconds", "...", NULL,
 *                                     bounds, n_bounds);
 *     gs_metrics_set_collector(m, collect, coordinator);
 *     ... in collect(sink, coordinator):
 *         gs_metrics_sample(sink, done, "positive", (double)c->positive);
 *         gs_metrics_sample_histogram(sink, secs, NULL, c->hist.counts, c->hist.sum);
 *     gs_metrics_destroy(&m);
 *
 * Threads: the HTTP server runs in its own thread, so the collector runs in that
 * thread (one render at a time: the registry serialises them) and must read the owner's
 * numbers safely (atomics, or a lock of the owner's). Register every family before
 * gs_metrics_set_collector(); registering afterwards is a broken invariant.
 */
#ifndef GS_DAEMON_SERVICE_METRICS_H
#define GS_DAEMON_SERVICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/service/http.h"

typedef struct gs_metrics gs_metrics;

/* The collector's handle for reporting values during one render. */
typedef struct gs_metrics_sink gs_metrics_sink;

/* Called at every render; reports values with gs_metrics_sample*(sink, ...). */
typedef void gs_metrics_collect_fn(gs_metrics_sink *sink, void *user);

/* Most buckets a histogram may have (not counting +Inf). */
#define GS_METRICS_MAX_BUCKETS 32

/* Creates a registry and, unless listen is NULL or "", an HTTP server of its own serving
 * /metrics on listen ("host:port", "[v6addr]:port"; port 0 picks a free port; a loopback
 * address only: another needs the token of a gs_http, so route gs_metrics_serve there instead).
 * Returns the registry (caller frees with gs_metrics_destroy) or NULL with the error set
 * (bad address, port in use). */
gs_metrics *gs_metrics_new(const char *listen);

/* Stops the server (waiting for a render in progress) and frees the registry; sets *m to NULL.
 * Accepts NULL. */
void gs_metrics_destroy(gs_metrics **m);

/* The TCP port the server listens on (useful with port 0), or 0 without a server. */
int gs_metrics_port(const gs_metrics *m);

/* Register a family. name must start with "gastroscreen_" and match
 * [a-zA-Z_:][a-zA-Z0-9_:]*; a counter's name must end in "_total"; label is a label key
 * ([a-zA-Z_][a-zA-Z0-9_]*, not "le") or NULL for none. A histogram's bounds are the upper
 * bounds of its buckets, finite and strictly increasing, 1..GS_METRICS_MAX_BUCKETS of them
 * (+Inf is implicit); they are copied. Returns the family's id (>= 0) or -1 with the error set
 * (bad name, duplicate name, bad bounds). */
int gs_metrics_counter(gs_metrics *m, const char *name, const char *help, const char *label);
int gs_metrics_gauge(gs_metrics *m, const char *name, const char *help, const char *label);
int gs_metrics_histogram(gs_metrics *m, const char *name, const char *help, const char *label,
                         const double *bounds, size_t n_bounds);

/* Most labels an info family may have: identity needs a handful, and a bound keeps one
 * registration from growing the text without limit. */
#define GS_METRICS_MAX_INFO_LABELS 16

/* Register an info family: a gauge whose one series is name{keys[0]="values[0]",...} 1, always
 * rendered, never sampled by the collector. name must end in "_info" (and follow the rules
 * above); keys are n (1..GS_METRICS_MAX_INFO_LABELS) distinct label keys as above, values any
 * text (escaped), both copied. Returns the family's id or -1 with the error set. */
int gs_metrics_info(gs_metrics *m, const char *name, const char *help, const char *const *keys,
                    const char *const *values, size_t n);

/* Sets (or, with fn NULL, removes) the collector. */
void gs_metrics_set_collector(gs_metrics *m, gs_metrics_collect_fn *fn, void *user);

/* From inside the collector: one sample of a counter or gauge family. label_value is required
 * when the family has a label (any text; it is escaped) and must be NULL otherwise. Returns 0,
 * or -1 with the error set (unknown family, histogram family, label mismatch, NaN for a
 * counter, out of memory); a failed sample is left out of the output. */
int gs_metrics_sample(gs_metrics_sink *sink, int family, const char *label_value, double value);

/* From inside the collector: one histogram series. counts holds n_bounds + 1 per-bucket
 * (not cumulative) observation counts, the last one for values above the last bound; the
 * renderer makes them cumulative and derives _count. Returns 0 or -1 as gs_metrics_sample. */
int gs_metrics_sample_histogram(gs_metrics_sink *sink, int family, const char *label_value,
                                const uint64_t *counts, double sum);

/* A histogram accumulator for owners that observe values one by one: counts[i] is the
 * number of observations in bucket i (n_bounds + 1 buckets), sum their total. */
typedef struct {
    uint64_t counts[GS_METRICS_MAX_BUCKETS + 1];
    double sum;
} gs_metrics_hist;

/* Adds value v to h over the given bounds (as registered). NaN is ignored. */
void gs_metrics_hist_observe(gs_metrics_hist *h, const double *bounds, size_t n_bounds, double v);

/* Renders every family (HELP, TYPE, then the collector's samples in the order given) as
 * Prometheus text. Returns a NUL-terminated buffer the caller frees (length in *len if len is
 * not NULL), or NULL with the error set when out of memory. Usable without the server. */
char *gs_metrics_render(gs_metrics *m, size_t *len);

/* A gs_http handler (user = the registry) answering GET /metrics with the rendered text
 * (another path under its route: 404). */
int gs_metrics_serve(const gs_http_request *rq, gs_http_reply *reply, void *user);

/* The Content-Type served with the text. */
#define GS_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
