/*
 * viewer: the slide viewer's routes on an HTTP server (daemon/service/http): the page, the
 * slide as Deep Zoom tiles and the report files of one screened slide, by slide id.
 *
 *   GET /view/<id>                      the viewer page (web/viewer.html; it reads the id from
 *                                       its own URL and fetches the rest)
 *   GET /slides/<id>/slide.dzi          Deep Zoom XML (stages/slide/deepzoom)
 *   GET /slides/<id>/slide_files/<level>/<col>_<row>.jpeg
 *                                       a JPEG tile; 404 out of range
 *   GET /slides/<id>/<report file>      report.json, regions.geojson, tiles.geojson.gz,
 *                                       heatmap.png, heatmap_overlay.png, background_overlay.png
 *                                       (stages/slide/report_files), from the report folder
 *
 * Who owns which slide is not the viewer's business: a gs_viewer_lookup_fn maps an id to the
 * slide's file and its report folder (gastroscreend: a snapshot of its slide table;
 * `gastroscreen view`: OUT_DIR/<id>/report.json). An id is checked with gs_slide_id_ok() before
 * the lookup sees it; anything else is 404. Nothing from the URL reaches the filesystem but
 * the id (checked) and a report file name from the fixed list, opened by gs_http_reply_file()
 * (no symbolic link followed, regular files only); the slide path comes from the lookup and is
 * opened by stages/slide/reader's checked open (canonical path, regular file).
 *
 * Open slides are kept (at most max_open_slides, the least recently used closed first), each
 * with its own byte-bounded tile cache. Handlers may run on any thread, concurrently: the
 * table of open slides has a lock and an open slide is closed only when no request uses it.
 *
 * Use:
 *     gs_viewer_options o = {.lookup = fn, .user = p, .web_dir = dir};
 *     gs_viewer *v = gs_viewer_new(&o);
 *     gs_viewer_routes(v, http);            // before gs_http_start
 *     ... gs_http_destroy(&http); gs_viewer_destroy(&v);
 */
#ifndef GS_DAEMON_SERVICE_VIEWER_H
#define GS_DAEMON_SERVICE_VIEWER_H

#include <stddef.h>

#include "daemon/service/http.h"

typedef struct gs_viewer gs_viewer;

/* Fills slide_path (the slide file, canonical) and report_dir (its report folder) for a slide
 * id that gs_slide_id_ok() accepted. Returns 0 (found, both written), or -1 (unknown: 404).
 * Called from the HTTP server's threads. */
typedef int gs_viewer_lookup_fn(const char *slide_id, char *slide_path, size_t path_len,
                                char *report_dir, size_t dir_len, void *user);

typedef struct {
    gs_viewer_lookup_fn *lookup; /* required */
    void *user;                  /* passed to lookup */
    const char *web_dir;         /* the folder of viewer.html (copied); required */
    unsigned max_open_slides;    /* 0 = 8 */
    size_t tile_cache_bytes;     /* per open slide; 0 = 32 MiB */
} gs_viewer_options;

/* Returns the viewer, or NULL with the error set (no lookup or web folder, out of memory). */
gs_viewer *gs_viewer_new(const gs_viewer_options *o);

/* Closes every open slide and frees; sets *v to NULL. Accepts NULL. Destroy the HTTP server
 * first: no handler may be running. */
void gs_viewer_destroy(gs_viewer **v);

/* Registers "/view/" and "/slides/" on h. Returns 0 or -1 with the error set. */
int gs_viewer_routes(gs_viewer *v, gs_http *h);

#endif
