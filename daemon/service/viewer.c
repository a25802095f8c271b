#include "daemon/service/viewer.h"

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/log.h"
#include "stages/slide/deepzoom.h"

/* One open slide. refs counts the requests using it; it is closed only at 0. */
typedef struct {
    char id[GS_SLIDE_ID_LEN + 1];
    gs_deepzoom *dz;
    unsigned refs;
    uint64_t used; /* tick of the last request: the smallest is closed first */
    int stale;     /* a read failed or the file changed: reopened once no request uses it */
} open_slide;

struct gs_viewer {
    gs_viewer_lookup_fn *lookup;
    void *user;
    char *web_dir;
    size_t cache_bytes;
    pthread_mutex_t lock;
    open_slide *open;
    unsigned n_open, max_open;
    uint64_t tick;
};

/* The report files a browser may fetch: nothing else in the folder is served. */
static const struct {
    const char *name, *type;
} report_files[] = {
    {"report.json", "application/json"},      {"regions.geojson", "application/geo+json"},
    {"tiles.geojson.gz", "application/gzip"}, {"heatmap.png", "image/png"},
    {"heatmap_overlay.png", "image/png"},     {"background_overlay.png", "image/png"},
};

gs_viewer *gs_viewer_new(const gs_viewer_options *o)
{
    if (!o || !o->lookup || !o->web_dir || !*o->web_dir) {
        gs_error_set("viewer: a lookup function and a web folder are required");
        return NULL;
    }
    gs_viewer *v = calloc(1, sizeof *v);
    if (!v)
        goto fail_oom;
    v->lookup = o->lookup;
    v->user = o->user;
    v->max_open = o->max_open_slides ? o->max_open_slides : 8;
    gs_deepzoom_options d;
    gs_deepzoom_options_default(&d);
    v->cache_bytes = o->tile_cache_bytes ? o->tile_cache_bytes : d.cache_bytes;
    v->web_dir = strdup(o->web_dir);
    v->open = calloc(v->max_open, sizeof *v->open);
    if (!v->web_dir || !v->open)
        goto fail_oom;
    pthread_mutex_init(&v->lock, NULL);
    return v;

fail_oom:
    if (v) {
        free(v->web_dir);
        free(v->open);
        free(v);
    }
    gs_error_set("viewer: out of memory");
    return NULL;
}

void gs_viewer_destroy(gs_viewer **pv)
{
    if (!pv || !*pv)
        return;
    gs_viewer *v = *pv;
    for (unsigned i = 0; i < v->n_open; i++)
        gs_deepzoom_destroy(&v->open[i].dz);
    pthread_mutex_destroy(&v->lock);
    free(v->open);
    free(v->web_dir);
    free(v);
    *pv = NULL;
}

/* Splits "<id>" or "<id>/<rest>" after a route prefix; id must be a slide id. Returns what
 * follows the id ("" or "/<rest>") or NULL. */
static const char *split_id(const char *p, char id[GS_SLIDE_ID_LEN + 1])
{
    size_t n = strcspn(p, "/");
    if (n != GS_SLIDE_ID_LEN)
        return NULL;
    memcpy(id, p, n);
    id[n] = 0;
    return gs_slide_id_ok(id) ? p + n : NULL;
}

static int not_found(gs_http_reply *reply)
{
    return gs_http_reply_text(reply, 404, "not found\n");
}

/* The quickhash report_dir/report.json records for the slide (empty when it has none: an older
 * report, or a slide whose plan gave none). */
static void report_quickhash(const char *report_dir, char *out, size_t cap)
{
    out[0] = '\0';
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/report.json", report_dir);
    json_t *r = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    const char *q = json_string_value(json_object_get(json_object_get(r, "slide"), "quickhash"));
    if (q)
        snprintf(out, cap, "%s", q);
    json_decref(r);
}

/* The open slide of id (opened now when it is not, or reopened when it went stale), with a
 * reference the caller gives back with release(). NULL when it cannot be opened (the error
 * set): also when the file at path is not the one the report was made from. */
static open_slide *acquire(gs_viewer *v, const char *id, const char *path, const char *report_dir)
{
    pthread_mutex_lock(&v->lock);
    for (unsigned i = 0; i < v->n_open; i++)
        if (!strcmp(v->open[i].id, id)) {
            if (v->open[i].stale && !v->open[i].refs) { /* close it; opened afresh below */
                gs_deepzoom_destroy(&v->open[i].dz);
                v->open[i].id[0] = '\0';
                v->open[i].stale = 0;
                break;
            }
            v->open[i].refs++;
            v->open[i].used = ++v->tick;
            pthread_mutex_unlock(&v->lock);
            return &v->open[i];
        }
    pthread_mutex_unlock(&v->lock);

    /* Opening reads the slide's metadata: done without the lock, so other slides' tiles flow. */
    char quickhash[128];
    report_quickhash(report_dir, quickhash, sizeof quickhash);
    gs_deepzoom_options o;
    gs_deepzoom_options_default(&o);
    o.cache_bytes = v->cache_bytes;
    o.quickhash = quickhash;
    gs_deepzoom *dz = gs_deepzoom_open(path, &o);
    if (!dz)
        return NULL;

    pthread_mutex_lock(&v->lock);
    open_slide *slot = NULL;
    for (unsigned i = 0; i < v->n_open && !slot; i++)
        if (!strcmp(v->open[i].id, id))
            slot = &v->open[i]; /* another request opened it meanwhile */
    if (slot) {
        gs_deepzoom_destroy(&dz);
    } else {
        for (unsigned i = 0; i < v->n_open && !slot; i++) /* a slot closed as stale */
            if (!v->open[i].id[0] && !v->open[i].refs)
                slot = &v->open[i];
        if (!slot && v->n_open < v->max_open)
            slot = &v->open[v->n_open++];
        for (unsigned i = 0; i < v->n_open && !slot; i++) /* the least recently used one */
            if (!v->open[i].refs && (!slot || v->open[i].used < slot->used))
                slot = &v->open[i];
        if (slot)
            gs_deepzoom_destroy(&slot->dz);
    }
    if (!slot) { /* every open slide is in use: the table is full, refuse rather than grow */
        pthread_mutex_unlock(&v->lock);
        gs_deepzoom_destroy(&dz);
        gs_error_set("viewer: %u slides open and in use", v->max_open);
        return NULL;
    }
    if (dz) {
        memcpy(slot->id, id, sizeof slot->id);
        slot->dz = dz;
        slot->refs = 0;
        slot->stale = 0;
    }
    slot->refs++;
    slot->used = ++v->tick;
    pthread_mutex_unlock(&v->lock);
    return slot;
}

/* Gives the reference back; stale: the slide failed a read or a recheck, so the next request
 * opens it afresh (after a storage hiccup, or to refuse a replaced file). */
static void release(gs_viewer *v, open_slide *s, int stale)
{
    pthread_mutex_lock(&v->lock);
    s->refs--;
    s->stale |= stale;
    pthread_mutex_unlock(&v->lock);
}

/* A decimal number of at most 9 digits, nothing else. Returns it or -1. */
static long small_number(const char *s, size_t n)
{
    if (n == 0 || n > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "<level>/<col>_<row>.jpeg" into numbers. Returns 0 or -1. */
static int parse_tile(const char *p, long *level, long *col, long *row)
{
    size_t a = strcspn(p, "/");
    if (!p[a])
        return -1;
    const char *q = p + a + 1;
    size_t b = strcspn(q, "_");
    if (!q[b])
        return -1;
    const char *r = q + b + 1;
    size_t c = strcspn(r, ".");
    if (strcmp(r + c, ".jpeg") != 0)
        return -1;
    *level = small_number(p, a);
    *col = small_number(q, b);
    *row = small_number(r, c);
    return *level < 0 || *col < 0 || *row < 0 ? -1 : 0;
}

static int serve_slide(gs_viewer *v, const char *id, const char *slide_path, const char *report_dir,
                       const char *rest, gs_http_reply *reply)
{
    long level = 0, col = 0, row = 0;
    int dzi = !strcmp(rest, "slide.dzi");
    if (!dzi) {
        if (strncmp(rest, "slide_files/", 12) != 0 || parse_tile(rest + 12, &level, &col, &row))
            return not_found(reply);
    }
    open_slide *s = acquire(v, id, slide_path, report_dir);
    if (!s) { /* a slide that is gone, unreadable or replaced: nothing to show */
        gs_log_linef("gastroscreen-viewer", "viewer", id, GS_LOG_WARNING, "slide not shown: %s",
                     gs_error_get());
        return gs_http_reply_text(reply, 404, "slide cannot be opened\n");
    }
    int rc, stale = 0;
    if (dzi && gs_deepzoom_recheck(s->dz) != 0) {
        /* Each page load starts here: a file replaced since it was opened is not shown. */
        gs_log_linef("gastroscreen-viewer", "viewer", id, GS_LOG_WARNING, "slide not shown: %s",
                     gs_error_get());
        release(v, s, 1);
        return gs_http_reply_text(reply, 404, "slide cannot be opened\n");
    }
    if (dzi) {
        char *xml = gs_deepzoom_dzi(s->dz);
        rc = xml ? gs_http_reply_bytes(reply, 200, "application/xml", xml, strlen(xml))
                 : gs_error_set("viewer: out of memory");
        free(xml);
    } else {
        uint8_t *jpeg = NULL;
        size_t len = 0;
        rc = gs_deepzoom_tile_jpeg(s->dz, (int)level, col, row, &jpeg, &len);
        stale = rc < 0 && rc != GS_DEEPZOOM_NO_TILE;
        if (rc == GS_DEEPZOOM_NO_TILE)
            rc = not_found(reply);
        else if (rc == 0) {
            /* A tile of a slide file never changes while the file does not. */
            rc = gs_http_reply_header(reply, "Cache-Control", "private, max-age=3600");
            if (rc == 0)
                rc = gs_http_reply_bytes(reply, 200, "image/jpeg", jpeg, len);
        }
        free(jpeg);
    }
    release(v, s, stale);
    return rc;
}

static int handle_slides(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    gs_viewer *v = user;
    char id[GS_SLIDE_ID_LEN + 1];
    const char *rest = split_id(gs_http_path(rq) + strlen("/slides/"), id);
    if (!rest || rest[0] != '/' || !rest[1])
        return not_found(reply);
    rest++;
    char slide_path[PATH_MAX], report_dir[PATH_MAX];
    if (v->lookup(id, slide_path, sizeof slide_path, report_dir, sizeof report_dir, v->user) != 0)
        return not_found(reply);
    for (size_t i = 0; i < sizeof report_files / sizeof report_files[0]; i++)
        if (!strcmp(rest, report_files[i].name)) {
            /* The report is rewritten when a slide is screened again. */
            if (gs_http_reply_header(reply, "Cache-Control", "no-cache") != 0)
                return -1;
            return gs_http_reply_file(reply, report_dir, report_files[i].name,
                                      report_files[i].type);
        }
    return serve_slide(v, id, slide_path, report_dir, rest, reply);
}

static int handle_view(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    gs_viewer *v = user;
    char id[GS_SLIDE_ID_LEN + 1];
    const char *rest = split_id(gs_http_path(rq) + strlen("/view/"), id);
    if (!rest || *rest)
        return not_found(reply);
    char slide_path[PATH_MAX], report_dir[PATH_MAX];
    if (v->lookup(id, slide_path, sizeof slide_path, report_dir, sizeof report_dir, v->user) != 0)
        return not_found(reply);
    /* As the worklist: the page runs only its own and Leaflet's scripts. Leaflet positions
     * its panes through element styles (CSSOM), which style-src does not govern. */
    if (gs_http_reply_header(reply, "Content-Security-Policy",
                             "default-src 'self'; object-src 'none'; base-uri 'none'; "
                             "frame-ancestors 'none'") != 0)
        return -1;
    return gs_http_reply_file(reply, v->web_dir, "viewer.html", "text/html; charset=utf-8");
}

int gs_viewer_routes(gs_viewer *v, gs_http *h)
{
    if (gs_http_route(h, "/view/", handle_view, v) != 0 ||
        gs_http_route(h, "/slides/", handle_slides, v) != 0)
        return gs_error_prefix("viewer");
    return 0;
}
