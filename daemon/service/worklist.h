/*
 * worklist: what the web pages show of the coordinator, as a snapshot another thread may read.
 * The slide table and the coordinator's statistics live in the coordinator's thread and are
 * not thread-safe; the HTTP server runs in its own thread. So the coordinator's thread copies
 * what the pages need (per slide: id, file, state, verdict, score, warnings, reason, times,
 * report folder; per stage: workers, queue depth, tiles/s) into a gs_worklist under its mutex,
 * and the HTTP thread reads only that copy, never the table.
 *
 * The snapshot answers:
 *   GET /api/slides[?verdict=negative|positive|unassessable|failed|pending] -> every slide,
 *       newest first (by acceptance time), filtered by verdict ("pending": no verdict yet);
 *   GET /api/throughput -> tiles/s, workers and queue depth per stage, slides in flight and
 *       waiting for a slot;
 *   gs_worklist_lookup -> a slide's file and report folder, for the slide viewer (the
 *       gs_viewer_lookup_fn shape: the viewer module never sees the table either).
 * gs_worklist_routes() registers those two JSON routes and the pages: "/" (worklist.html),
 * "/static/<name>" (the web folder) and "/static/leaflet/<name>" (Debian's libjs-leaflet).
 *
 * Use, in the coordinator's thread (its on_tick, once a second):
 *     gs_worklist *w = gs_worklist_new(untrained);
 *     gs_worklist_routes(http, w, web_dir);
 *     ... gs_worklist_publish(w, gs_coordinator_slides(c), stats, gs_unix_ms());
 *     gs_worklist_destroy(&w);              // after the HTTP server is destroyed
 * publish copies only when the table changed (its newest journal sequence number or its size).
 *
 * "untrained" is the coordinator's model: every verdict it publishes carries that model's
 * provenance, so the flag holds for every slide in the table.
 */
#ifndef GS_DAEMON_SERVICE_WORKLIST_H
#define GS_DAEMON_SERVICE_WORKLIST_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/service/coordinator.h"
#include "daemon/service/http.h"
#include "daemon/service/slide_table.h"

typedef struct gs_worklist gs_worklist;

/* An empty snapshot. untrained: the coordinator's model has no trained weights (the pages show
 * "model: untrained — not a diagnosis"). Returns it or NULL with the error set. */
gs_worklist *gs_worklist_new(int untrained);

/* Frees the snapshot; sets *w to NULL. Accepts NULL. No reader may be running. */
void gs_worklist_destroy(gs_worklist **w);

/* From the thread that owns the table: copies the slides of t (when they changed since the
 * last call) and the figures of s (may be NULL: kept as they were). Returns 0, or -1 with the
 * error set when out of memory (the previous snapshot stays). */
int gs_worklist_publish(gs_worklist *w, const gs_slides *t, const gs_coordinator_stats *s,
                        int64_t now_unix_ms);

/* The JSON of GET /api/slides (verdict: NULL = all, or a filter named above) and of
 * GET /api/throughput. Any thread. Returns a NUL-terminated text (caller frees), or NULL with
 * the error set (an unknown verdict filter: "worklist: unknown verdict 'x'"; out of memory). */
char *gs_worklist_slides_json(gs_worklist *w, const char *verdict, int64_t now_unix_ms);
char *gs_worklist_throughput_json(gs_worklist *w, int64_t now_unix_ms);

/* The viewer's lookup (user = the gs_worklist): for a slide id (checked with gs_slide_id_ok)
 * of a slide whose report is written, fills its file's path and its report folder. Returns 0,
 * or -1 (not a slide id, unknown, no report yet, or a buffer too small). Any thread. */
int gs_worklist_lookup(const char *slide_id, char *slide_path, size_t path_len, char *report_dir,
                       size_t dir_len, void *user);

/* Registers "/", "/static/", "/static/leaflet/", "/api/slides" and "/api/throughput" on h.
 * web_dir: the folder of worklist.html, worklist.js, style.css (gs_worklist_web_dir); it is
 * copied. Returns 0 or -1 with the error set. */
int gs_worklist_routes(gs_http *h, gs_worklist *w, const char *web_dir);

/* The pages alone, for a server without a slide table (`gastroscreen view`, which answers
 * /api/slides from its reports): "/" (worklist.html), "/static/" (the files of web_dir) and
 * "/static/leaflet/" (GS_LEAFLET_DIR). web_dir is not copied: it must stay valid while h
 * serves. Returns 0 or -1 with the error set. */
int gs_worklist_page_routes(gs_http *h, const char *web_dir);

/* Where the web pages are: configured when not NULL or "", else the source tree's web/ when
 * this program runs from its build tree, else the installed share/gastroscreen/web. Returns a
 * static or the given string (not to be freed). */
const char *gs_worklist_web_dir(const char *configured);

/* Where Debian's libjs-leaflet installs its files. */
#define GS_LEAFLET_DIR "/usr/share/javascript/leaflet"

#endif
