#include "stages/handlers/reporter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/slide/heatmap.h"
#include "stages/slide/report_files.h"
#include "stages/slide/reader.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/transport.h"

#define MAX_WARNINGS 64

void gs_reporter_options_default(gs_reporter_options *o)
{
    memset(o, 0, sizeof *o);
    o->thumbnail_size = 1024;
    o->region_threshold = 0.5;
}

static void fail(gs_report_result *out, const char *msg)
{
    snprintf(out->error, sizeof out->error, "%s", msg);
    out->r.error = out->error;
}

/* The slide heatmap from the INFERRED tiles' maps; NULL (no error) when there is none. */
static gs_heatmap *build_heatmap(const Gastroscreen__V1__ReportJob *job, int *failed)
{
    *failed = 0;
    const Gastroscreen__V1__SlideFacts *f = job->facts;
    const Gastroscreen__V1__TileGrid *g = job->grid;
    uint32_t hs = job->heatmap_size;
    if (!f || !g || f->width <= 0 || f->height <= 0 || g->window_level0 == 0 || hs == 0)
        return NULL;
    gs_heatmap *h = NULL;
    for (size_t i = 0; i < job->n_tiles; i++) {
        const Gastroscreen__V1__TileSummary *t = job->tiles[i];
        if (!t || t->outcome != GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED ||
            t->heatmap.len != (size_t)hs * hs)
            continue;
        if (!h && !(h = gs_heatmap_new(f->width, f->height, (double)g->window_level0 / hs))) {
            *failed = 1;
            return NULL;
        }
        if (gs_heatmap_add_tile(h, t->x0, t->y0, g->window_level0, t->heatmap.data, (int)hs) < 0) {
            gs_heatmap_destroy(&h);
            *failed = 1;
            return NULL;
        }
    }
    return h;
}

static const char *nonempty(const char *s)
{
    return s && s[0] ? s : NULL;
}

/* The entry of a network of the verdict's bundle: its own provenance when the verdict lists
 * the bundle's networks, else the provenance the stages announced together (untrained as
 * given). */
static gs_report_model network_entry(const char *name, const Gastroscreen__V1__ModelProvenance *mp,
                                     int untrained)
{
    gs_report_model m = {.network = name,
                         .method = gs_method_name(GASTROSCREEN__V1__METHOD__METHOD_NETWORK),
                         .untrained = untrained};
    if (mp) {
        m.bundle = nonempty(mp->bundle);
        m.sha256 = nonempty(mp->sha256);
        m.format_version = nonempty(mp->format_version);
        m.trained_on = nonempty(mp->trained_on);
        /* Only the multi-task network has a precision setting (ModelProvenance.precision). */
        if (!strcmp(name, "multitask"))
            m.precision = nonempty(mp->precision);
        for (size_t i = 0; i < mp->n_networks; i++) {
            const Gastroscreen__V1__NetworkProvenance *n = mp->networks[i];
            if (n && n->network && !strcmp(n->network, name)) {
                m.trained_on = nonempty(n->trained_on);
                m.untrained = n->untrained;
            }
        }
    }
    return m;
}

/* The entry of a stage that can run a network or a classical method; ran says the stage did
 * run (so an unspecified method is "unknown" rather than no entry). Returns 1 with *out
 * filled, or 0 when there is nothing to list. */
static int stage_entry(const char *name, Gastroscreen__V1__Method method, const char *algorithm,
                       int ran, const Gastroscreen__V1__ModelProvenance *mp, gs_report_model *out)
{
    switch (method) {
    case GASTROSCREEN__V1__METHOD__METHOD_NETWORK:
        /* A worker runs these networks only when the bundle marks them trained
         * (stages/handlers/blur). */
        *out = network_entry(name, mp, 0);
        return 1;
    case GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL:
        *out = (gs_report_model){.network = name,
                                 .method = gs_method_name(method),
                                 .algorithm = algorithm,
                                 .version = "gastroscreen " GS_VERSION};
        return 1;
    default:
        if (!ran)
            return 0;
        *out = (gs_report_model){.network = name, .method = "unknown"};
        return 1;
    }
}

/* Every method that judged the slide, in pipeline order, into models[4]: the tissue plan and
 * the blur check as the verdict names them, the multi-task network when it inferred a tile,
 * the screener when the verdict is its score. Returns the count. */
static size_t report_models(const Gastroscreen__V1__ReportJob *job, gs_report_model models[4])
{
    const Gastroscreen__V1__Verdict *v = job->verdict;
    const Gastroscreen__V1__ModelProvenance *mp = v->model;
    size_t n = 0;
    n += (size_t)stage_entry("foreground", v->foreground_method, GS_REPORT_CLASSICAL_FOREGROUND,
                             job->grid != NULL, mp, &models[n]);
    n += (size_t)stage_entry("blur", v->blur_method, GS_REPORT_CLASSICAL_BLUR,
                             v->blur_sample_judged > 0, mp, &models[n]);
    int untrained = mp && mp->untrained;
    if (v->tiles && v->tiles->inferred > 0)
        models[n++] = network_entry("multitask", mp, untrained);
    if (v->verdict_class == GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE ||
        v->verdict_class == GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE)
        models[n++] = network_entry("screener", mp, untrained);
    return n;
}

int gs_reporter_write(const Gastroscreen__V1__ReportJob *job, const gs_reporter_options *o,
                      const char *worker_id, gs_report_result *out)
{
    gs_reporter_options defaults;
    if (!o) {
        gs_reporter_options_default(&defaults);
        o = &defaults;
    }
    int64_t t0 = gs_mono_us();
    memset(out, 0, sizeof *out);
    gastroscreen__v1__report_result__init(&out->r);
    gastroscreen__v1__report_paths__init(&out->paths);
    gastroscreen__v1__stage_timing__init(&out->timing);
    snprintf(out->worker_id, sizeof out->worker_id, "%s", worker_id ? worker_id : "");
    out->r.worker_id = out->worker_id;
    out->r.timing = &out->timing;
    out->r.slide_id = job->slide_id ? job->slide_id : "";
    out->r.attempt = job->attempt;
    out->r.job_id = job->job_id;

    const Gastroscreen__V1__Verdict *v = job->verdict;
    char msg[1024];
    if (!gs_slide_id_ok(job->slide_id)) {
        fail(out, "report job without a well-formed slide_id");
        return 0;
    }
    if (!v || !gs_verdict_class_name((gs_verdict_class)v->verdict_class)) {
        fail(out, "report job without a verdict class");
        return 0;
    }
    char dir[4096];
    if (job->out_dir && job->out_dir[0]) {
        if (strlen(job->out_dir) >= sizeof dir) {
            fail(out, "out_dir longer than 4095 bytes");
            return 0;
        }
        snprintf(dir, sizeof dir, "%s", job->out_dir);
    } else if (o->report_dir && o->report_dir[0]) {
        int n = snprintf(dir, sizeof dir, "%s/%s", o->report_dir, job->slide_id);
        if (n < 0 || (size_t)n >= sizeof dir) {
            fail(out, "report folder path too long");
            return 0;
        }
    } else {
        fail(out, "report job without out_dir and no report_dir configured");
        return 0;
    }

    int failed_verdict = v->verdict_class == GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED;
    const char *warnings[MAX_WARNINGS + 2];
    size_t n_warnings = 0;
    for (size_t i = 0; i < v->n_warnings && n_warnings < MAX_WARNINGS; i++)
        warnings[n_warnings++] = v->warnings[i];

    gs_report r;
    memset(&r, 0, sizeof r);
    r.slide_id = job->slide_id;
    r.attempt = job->attempt;
    r.path = job->path && job->path[0] ? job->path : v->path;
    r.external_id = v->external_id && v->external_id[0] ? v->external_id : NULL;
    r.quickhash = job->identity && job->identity->quickhash && job->identity->quickhash[0]
                      ? job->identity->quickhash
                      : NULL;
    if (job->facts) {
        r.vendor = job->facts->vendor && job->facts->vendor[0] ? job->facts->vendor : NULL;
        r.width = job->facts->width;
        r.height = job->facts->height;
        r.mpp = job->facts->mpp_x;
        r.mpp_defaulted = job->facts->mpp_defaulted;
    }
    r.verdict = (gs_verdict_class)v->verdict_class;
    r.score = v->score;
    r.threshold = v->threshold;
    r.threshold_source = v->threshold_source;
    r.reason = v->reason && v->reason[0] ? v->reason : gs_verdict_class_name(r.verdict);
    if (v->tiles) {
        r.tiles.planned = v->tiles->planned;
        r.tiles.inferred = v->tiles->inferred;
        r.tiles.background = v->tiles->background;
        r.tiles.blurry = v->tiles->blurry;
        r.tiles.error = v->tiles->error;
        r.tiles.rerequested = v->tiles->rerequested;
    }
    r.blur_sample_judged = (int)v->blur_sample_judged;
    r.blurred_fraction = v->blurred_fraction;
    r.focus_every_tile = v->focus_every_tile;
    r.focus_threshold = v->focus_threshold;
    r.focus_threshold_source = nonempty(v->focus_threshold_source);
    r.blur_slide_fraction = v->blur_slide_fraction;
    r.blur_slide_source = nonempty(v->blur_slide_source);
    r.sparse_tissue = v->sparse_tissue;
    r.sparse_tissue_source = nonempty(v->sparse_tissue_source);
    r.sparse_classical_threshold = v->sparse_classical_threshold;

    gs_report_timing timings[16];
    size_t n_timings = 0;
    for (size_t i = 0; i < job->n_stage_seconds && n_timings < 16; i++) {
        const Gastroscreen__V1__StageSeconds *s = job->stage_seconds[i];
        const char *name = s ? gs_stage_name(s->stage) : NULL;
        int dup = !name || !isfinite(s->seconds);
        for (size_t k = 0; k < n_timings && !dup; k++)
            dup = !strcmp(timings[k].stage, name);
        if (!dup)
            timings[n_timings++] = (gs_report_timing){name, s->seconds};
    }
    r.timings = timings;
    r.n_timings = n_timings;

    gs_report_model models[4];
    r.models = models;
    r.n_models = report_models(job, models);
    r.untrained_bundle = v->model && v->model->untrained;
    r.decided_unix_ms = v->decided_unix_ms;
    r.region_threshold = o->region_threshold;

    gs_report_box *blurry = NULL;
    if (!failed_verdict && job->grid && job->grid->window_level0 > 0 && v->tiles &&
        v->tiles->blurry > 0) {
        if (!(blurry = calloc(job->n_tiles, sizeof *blurry))) {
            fail(out, "out of memory for the out-of-focus tiles");
            return 0;
        }
        for (size_t i = 0; i < job->n_tiles; i++) {
            const Gastroscreen__V1__TileSummary *t = job->tiles[i];
            if (t && t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY)
                blurry[r.n_blurry++] =
                    (gs_report_box){t->x0, t->y0, (int64_t)job->grid->window_level0};
        }
        r.blurry = blurry;
    }
    /* The plan's tissue tiles: the slide viewer's background layer greys everything else. */
    gs_report_box *tissue = NULL;
    if (!failed_verdict && job->grid && job->grid->window_level0 > 0 && job->n_tiles > 0 &&
        (tissue = calloc(job->n_tiles, sizeof *tissue))) {
        for (size_t i = 0; i < job->n_tiles; i++) {
            const Gastroscreen__V1__TileSummary *t = job->tiles[i];
            if (t && t->outcome != GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND)
                tissue[r.n_tissue++] =
                    (gs_report_box){t->x0, t->y0, (int64_t)job->grid->window_level0};
        }
        r.tissue = tissue;
    }

    gs_heatmap *heat = NULL;
    uint8_t *thumb = NULL;
    char thumb_warn[1100] = "", origin_warn[1100] = "";
    int tw = 0, th = 0;
    int rc = 0;
    if (!failed_verdict) {
        int64_t tr = gs_mono_us();
        int heat_failed = 0;
        heat = build_heatmap(job, &heat_failed);
        if (heat_failed) {
            snprintf(msg, sizeof msg, "heatmap: %s", gs_error_get());
            fail(out, msg);
            goto free_images;
        }
        gs_error_clear();
        gs_slide *s = r.path ? gs_slide_open_for_job(r.path, NULL, job->identity) : NULL;
        int thumb_rc = s ? gs_slide_thumbnail(s, o->thumbnail_size > 0 ? o->thumbnail_size : 1024,
                                              &thumb, &tw, &th)
                         : -1;
        /* The report shows the slide's thumbnail under the verdict of the file accepted: with
         * the coordinator's identity, a file that is not that one any more (or that cannot be
         * opened as it was for the plan) fails the report rather than show another slide. */
        if (job->identity && r.path && (!s || (thumb_rc == 0 && gs_slide_recheck(s) < 0))) {
            snprintf(msg, sizeof msg, "%s", gs_error_get());
            gs_slide_destroy(&s);
            fail(out, msg);
            goto free_images;
        }
        if (thumb_rc < 0) {
            snprintf(thumb_warn, sizeof thumb_warn, "no thumbnail: %s",
                     gs_error_get()[0] ? gs_error_get() : "no slide path");
            thumb = NULL;
            tw = th = 0;
        }
        /* QuPath shows a slide with OpenSlide bounds from the bounds' corner; the GeoJSON files
         * follow it (stages/slide/report_files). */
        if (s && gs_report_slide_origin(s, &r.origin_x, &r.origin_y) < 0)
            snprintf(origin_warn, sizeof origin_warn, "GeoJSON coordinates not offset: %s",
                     gs_error_get());
        gs_slide_destroy(&s);
        out->timing.read_us = (uint64_t)(gs_mono_us() - tr);
        r.heatmap = heat;
        r.thumbnail = thumb;
        r.thumb_w = tw;
        r.thumb_h = th;
    }
    if (!failed_verdict && !thumb && n_warnings < MAX_WARNINGS)
        warnings[n_warnings++] = thumb_warn;
    if (origin_warn[0] && n_warnings < MAX_WARNINGS)
        warnings[n_warnings++] = origin_warn;
    r.warnings = warnings;
    r.n_warnings = n_warnings;

    gs_report_paths paths;
    gs_error_clear();
    if (gs_report_write(&r, dir, &paths) < 0) {
        snprintf(msg, sizeof msg, "report: %s", gs_error_get());
        fail(out, msg);
        goto free_images;
    }
    snprintf(out->json, sizeof out->json, "%s", paths.report_json);
    snprintf(out->png, sizeof out->png, "%s", paths.heatmap_png);
    snprintf(out->geojson, sizeof out->geojson, "%s", paths.regions_geojson);
    out->paths.report_json = out->json;
    out->paths.heatmap_png = out->png;
    out->paths.regions_geojson = out->geojson;
    out->r.paths = &out->paths;
    out->r.regions = (uint32_t)(paths.regions > 0 ? paths.regions : 0);
free_images:
    out->timing.compute_us = (uint64_t)(gs_mono_us() - t0) - out->timing.read_us;
    free(thumb);
    free(blurry);
    free(tissue);
    gs_heatmap_destroy(&heat);
    return rc;
}

int gs_reporter_handle(gs_worker_job *job, void *ud)
{
    const Gastroscreen__V1__WorkMessage *m = gs_worker_job_message(job);
    if (!m || m->body_case != GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB || !m->report_job)
        return gs_error_set("reporter: not a ReportJob");
    gs_report_result *res = malloc(sizeof *res);
    if (!res)
        return gs_error_set("out of memory for a report result");
    int rc = gs_reporter_write(m->report_job, ud, gs_worker_job_worker_id(job), res);
    if (rc == 0) {
        Gastroscreen__V1__WorkMessage o = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        o.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        o.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT;
        o.report_result = &res->r;
        rc = gs_worker_job_emit(job, &o);
    }
    free(res);
    return rc;
}
