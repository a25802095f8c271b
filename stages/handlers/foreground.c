#include "stages/handlers/foreground.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "stages/runtime/config_schema.h"
#include "stages/runtime/fileio.h"
#include "stages/slide/box_resize.h"

#define PATH_MAX_BYTES 4096
#define TILE_MIN 16
#define TILE_MAX 2048

gs_plan *gs_foreground_classical(gs_slide *slide, const gs_tissue_options *o, void *ud)
{
    (void)ud;
    return gs_plan_new(slide, o);
}

void gs_foreground_options_default(gs_foreground_options *o)
{
    gs_tissue_options_default(&o->tissue);
    o->method_fn = gs_foreground_classical;
    o->method_ud = NULL;
    o->method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    /* Under the coordinator's plan_timeout (300 s), so the worker answers with the reason
     * before the job is re-sent; a 1 Gpx thumbnail source reads in under a minute. */
    o->plan_budget_s = 120;
}

/* The network's input side: a multiple of 8 (its three stride-2 convs), at most 4096 (a
 * thumbnail larger than the classical mask's cap says the job is wrong, not the slide). */
#define NET_SIDE_MAX 4096

struct gs_foreground_net {
    const gs_model *model;
    float threshold;
    pthread_mutex_t lock; /* one network state, one run at a time */
    gs_net_state *state;
    int side; /* the state's input side; 0 before the first run */
};

gs_foreground_net *gs_foreground_net_new(const gs_model *m)
{
    if (!gs_model_built(m, GS_NET_FOREGROUND)) {
        gs_error_set("foreground network method: the bundle's foreground network is %s",
                     gs_model_has(m, GS_NET_FOREGROUND) ? "not loaded" : "absent");
        return NULL;
    }
    gs_foreground_net *n = calloc(1, sizeof *n);
    if (!n) {
        gs_error_set("out of memory for the foreground network method");
        return NULL;
    }
    n->model = m;
    n->threshold = gs_model_get_thresholds(m).foreground;
    pthread_mutex_init(&n->lock, NULL);
    /* The state for the usual side now, so a oneDNN failure shows when the stage starts. */
    gs_tissue_options to;
    gs_tissue_options_default(&to);
    if (!(n->state =
              gs_net_state_new(m, GS_NET_FOREGROUND, 1, to.net_input_size, to.net_input_size))) {
        gs_foreground_net_destroy(&n);
        return NULL;
    }
    n->side = to.net_input_size;
    return n;
}

void gs_foreground_net_destroy(gs_foreground_net **np)
{
    if (!np || !*np)
        return;
    gs_foreground_net *n = *np;
    gs_net_state_destroy(&n->state);
    pthread_mutex_destroy(&n->lock);
    free(n);
    *np = NULL;
}

int gs_foreground_net_mask(gs_foreground_net *n, const uint8_t *rgb, int side, uint8_t *mask,
                           float *logit)
{
    if (side < 8 || side > NET_SIDE_MAX || side % 8)
        return gs_error_set("foreground network: input side %d is not a multiple of 8 in 8..%d",
                            side, NET_SIDE_MAX);
    size_t np = (size_t)side * side;
    float *out = logit ? logit : malloc(np * sizeof *out);
    if (!out)
        return gs_error_set("out of memory for a %dx%d foreground logit map", side, side);
    int rc = -1;
    pthread_mutex_lock(&n->lock);
    if (n->side != side) {
        /* Another thumbnail_size than the last job's: rare (a config change), so the state is
         * rebuilt rather than one kept per size. */
        gs_net_state_destroy(&n->state);
        n->side = 0;
        if (!(n->state = gs_net_state_new(n->model, GS_NET_FOREGROUND, 1, side, side)))
            goto unlock;
        n->side = side;
    }
    if (gs_net_run_foreground(n->state, rgb, out, NULL) < 0)
        goto unlock;
    rc = 0;
unlock:
    pthread_mutex_unlock(&n->lock);
    if (rc == 0)
        for (size_t i = 0; i < np; i++)
            mask[i] = 1.0f / (1.0f + expf(-out[i])) > n->threshold;
    if (out != logit)
        free(out);
    return rc;
}

gs_plan *gs_foreground_network(gs_slide *slide, const gs_tissue_options *o, void *ud)
{
    gs_foreground_net *n = ud;
    int side = o->net_input_size;
    uint8_t *thumb = NULL, *input = NULL, *mask = NULL;
    int tw = 0, th = 0;
    gs_plan *p = NULL;
    if (side < 8 || side > NET_SIDE_MAX || side % 8) {
        gs_error_set("%s: thumbnail_size %d is not a multiple of 8 in 8..%d", gs_slide_path(slide),
                     side, NET_SIDE_MAX);
        return NULL;
    }
    if (gs_plan_read_thumbnail(slide, o, &thumb, &tw, &th) < 0)
        return NULL; /* the message names the slide */
    size_t np = (size_t)side * side;
    input = malloc(3 * np);
    mask = malloc(np);
    if (!input || !mask) {
        gs_error_set("%s: out of memory for the foreground network's %dx%d input",
                     gs_slide_path(slide), side, side);
        goto free_buffers;
    }
    if (gs_box_resize_u8(thumb, tw, th, 3, input, side, side) < 0 ||
        gs_foreground_net_mask(n, input, side, mask, NULL) < 0) {
        gs_error_prefix("%s", gs_slide_path(slide));
        goto free_buffers;
    }
    p = gs_plan_from_mask(slide, o, &thumb, tw, th, mask, side, side);
free_buffers:
    free(thumb);
    free(input);
    free(mask);
    return p;
}

int gs_foreground_options_for_model(gs_foreground_options *o, const gs_model *m,
                                    gs_foreground_net **net)
{
    gs_foreground_options_default(o);
    *net = NULL;
    if (!m || !gs_model_has(m, GS_NET_FOREGROUND) || gs_model_untrained(m, GS_NET_FOREGROUND))
        return 0;
    if (!(*net = gs_foreground_net_new(m)))
        return -1;
    o->method_fn = gs_foreground_network;
    o->method_ud = *net;
    o->method = GASTROSCREEN__V1__METHOD__METHOD_NETWORK;
    return 0;
}

/* Every string of a result is malloc'd (never protobuf_c_empty_string) so that one free
 * function releases them all. */
static char *dup_str(const char *s)
{
    return strdup(s ? s : "");
}

static char *fmt_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_str(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return strdup(buf);
}

void gs_foreground_result_free(Gastroscreen__V1__PlanResult **rp)
{
    if (!rp || !*rp)
        return;
    Gastroscreen__V1__PlanResult *r = *rp;
    free(r->slide_id);
    free(r->worker_id);
    free(r->error);
    free(r->unassessable_reason);
    if (r->facts) {
        free(r->facts->vendor);
        free(r->facts->quickhash);
        free(r->facts);
    }
    free(r->grid);
    for (size_t i = 0; i < r->n_tiles; i++)
        free(r->tiles[i]);
    free(r->tiles);
    for (size_t i = 0; i < r->n_warnings; i++)
        free(r->warnings[i]);
    free(r->warnings);
    free(r->timing);
    free(r);
    *rp = NULL;
}

/* Sets r->error (replacing any) to msg; -1 when out of memory. */
static int set_error(Gastroscreen__V1__PlanResult *r, char *msg)
{
    if (!msg)
        return -1;
    free(r->error);
    r->error = msg;
    return 0;
}

static int add_warning(Gastroscreen__V1__PlanResult *r, const char *w)
{
    char **grown = realloc(r->warnings, (r->n_warnings + 1) * sizeof *grown);
    if (!grown)
        return -1;
    r->warnings = grown;
    if (!(r->warnings[r->n_warnings] = strdup(w)))
        return -1;
    r->n_warnings++;
    return 0;
}

static int fill_facts(Gastroscreen__V1__PlanResult *r, gs_slide *s)
{
    Gastroscreen__V1__SlideFacts *f = malloc(sizeof *f);
    if (!f)
        return -1;
    gastroscreen__v1__slide_facts__init(f);
    r->facts = f;
    f->vendor = dup_str(gs_slide_vendor(s));
    f->quickhash = dup_str(gs_slide_quickhash(s));
    if (!f->vendor || !f->quickhash)
        return -1;
    gs_slide_level_size(s, 0, &f->width, &f->height);
    f->level_count = (uint32_t)gs_slide_level_count(s);
    f->mpp_x = f->mpp_y = gs_slide_mpp(s);
    if (gs_slide_mpp_known(s)) {
        /* Keep the two axes apart when the slide gives both; the plan uses their mean. */
        const char *mx = gs_slide_property(s, "openslide.mpp-x");
        const char *my = gs_slide_property(s, "openslide.mpp-y");
        double vx = mx ? strtod(mx, NULL) : 0, vy = my ? strtod(my, NULL) : 0;
        if (vx > 0 && vy > 0 && isfinite(vx) && isfinite(vy)) {
            f->mpp_x = vx;
            f->mpp_y = vy;
        }
    }
    f->mpp_defaulted = !gs_slide_mpp_known(s);
    f->objective_power = gs_slide_objective(s);
    for (size_t i = 0; i < gs_slide_warning_count(s); i++)
        if (add_warning(r, gs_slide_warning(s, i)) < 0)
            return -1;
    return 0;
}

static int fill_grid(Gastroscreen__V1__PlanResult *r, gs_slide *s, uint32_t tile, double target_mpp)
{
    Gastroscreen__V1__TileGrid *g = malloc(sizeof *g);
    if (!g)
        return -1;
    gastroscreen__v1__tile_grid__init(g);
    r->grid = g;
    int level = gs_slide_target_level(s, target_mpp, NULL);
    g->level = (uint32_t)level;
    g->level_downsample = gs_slide_level_downsample(s, level);
    g->tile_size = tile;
    g->target_mpp = target_mpp;
    /* The same rounding stages/slide/tissue uses for each window's footprint. */
    g->window_level0 = (uint32_t)llround((double)tile * target_mpp / gs_slide_mpp(s));
    g->stride_level0 = g->window_level0;
    return 0;
}

static int fill_tiles(Gastroscreen__V1__PlanResult *r, const gs_plan *p, float min_fraction,
                      size_t *enough)
{
    size_t n = gs_plan_tile_count(p);
    *enough = 0;
    if (n == 0)
        return 0;
    r->tiles = calloc(n, sizeof *r->tiles);
    if (!r->tiles)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const gs_tile *t = gs_plan_tile(p, i);
        Gastroscreen__V1__PlannedTile *pt = malloc(sizeof *pt);
        if (!pt)
            return -1;
        gastroscreen__v1__planned_tile__init(pt);
        pt->x0 = t->x0;
        pt->y0 = t->y0;
        pt->tissue_fraction = t->tissue;
        r->tiles[r->n_tiles++] = pt;
        if (t->tissue >= min_fraction)
            (*enough)++;
    }
    return 0;
}

/* Checks the job and fills in protocol defaults; -1 with the error for a job that cannot be
 * served as asked. */
static int job_parameters(const Gastroscreen__V1__PlanJob *job, double *target, uint32_t *tile,
                          double *default_mpp, float *min_fraction)
{
    if (!job->path || !job->path[0])
        return gs_error_set("plan job without a slide path");
    if (strlen(job->path) >= PATH_MAX_BYTES)
        return gs_error_set("plan job: slide path longer than %d bytes", PATH_MAX_BYTES);
    *target = job->target_mpp != 0 ? job->target_mpp : 0.5;
    *tile = job->tile_size ? job->tile_size : 512;
    *default_mpp = job->default_mpp != 0 ? job->default_mpp : 0.25;
    *min_fraction = job->min_tissue_fraction;
    /* The ranges a lab may configure: 1e-300 um/px is positive and finite, but scales the
     * slide's size past any integer. */
    const gs_config_key_info *kt = gs_config_schema_key(GS_CFG_FOREGROUND_TARGET_MPP);
    const gs_config_key_info *kd = gs_config_schema_key(GS_CFG_FOREGROUND_DEFAULT_MPP);
    if (!(*target >= kt->min && *target <= kt->max))
        return gs_error_set("plan job: target_mpp %g outside %g..%g", *target, kt->min, kt->max);
    if (!(*default_mpp >= kd->min && *default_mpp <= kd->max))
        return gs_error_set("plan job: default_mpp %g outside %g..%g", *default_mpp, kd->min,
                            kd->max);
    if (*tile < TILE_MIN || *tile > TILE_MAX)
        return gs_error_set("plan job: tile_size %u outside %d..%d", *tile, TILE_MIN, TILE_MAX);
    if (job->stride && job->stride != *tile)
        return gs_error_set("plan job: stride %u differs from tile_size %u; overlapping windows "
                            "are not supported",
                            job->stride, *tile);
    if (!isfinite(*min_fraction) || *min_fraction < 0 || *min_fraction > 1)
        return gs_error_set("plan job: min_tissue_fraction %g outside 0..1", (double)*min_fraction);
    return 0;
}

Gastroscreen__V1__PlanResult *gs_foreground_plan(const Gastroscreen__V1__PlanJob *job,
                                                 const gs_foreground_options *o,
                                                 const char *worker_id)
{
    gs_foreground_options defaults;
    if (!o) {
        gs_foreground_options_default(&defaults);
        o = &defaults;
    }
    int64_t t_start = gs_mono_us();
    Gastroscreen__V1__PlanResult *r = malloc(sizeof *r);
    if (!r) {
        gs_error_set("out of memory for a plan result");
        return NULL;
    }
    gastroscreen__v1__plan_result__init(r);
    r->slide_id = dup_str(job->slide_id);
    r->worker_id = dup_str(worker_id);
    r->error = dup_str("");
    r->unassessable_reason = dup_str("");
    r->attempt = job->attempt;
    r->job_id = job->job_id;
    r->method = o->method;
    r->timing = malloc(sizeof *r->timing);
    gs_slide *slide = NULL;
    gs_plan *plan = NULL;
    if (!r->slide_id || !r->worker_id || !r->error || !r->unassessable_reason || !r->timing)
        goto out_of_memory;
    gastroscreen__v1__stage_timing__init(r->timing);

    double target = 0, default_mpp = 0;
    uint32_t tile = 0;
    float min_fraction = 0;
    if (job_parameters(job, &target, &tile, &default_mpp, &min_fraction) < 0) {
        if (set_error(r, strdup(gs_error_get())) < 0)
            goto out_of_memory;
        return r;
    }

    gs_slide_options so;
    gs_slide_options_default(&so);
    so.target_mpp = target;
    so.default_mpp = default_mpp;
    slide = gs_slide_open_for_job(job->path, &so, job->identity);
    int64_t t_open = gs_mono_us();
    r->timing->read_us = (uint64_t)(t_open - t_start);
    if (!slide) {
        if (set_error(r, strdup(gs_error_get())) < 0)
            goto out_of_memory;
        return r;
    }
    if (fill_facts(r, slide) < 0 || fill_grid(r, slide, tile, target) < 0)
        goto out_of_memory;
    if (o->plan_budget_s > 0)
        gs_slide_set_deadline(slide, t_start + (int64_t)(o->plan_budget_s * 1e6), o->plan_budget_s);

    gs_tissue_options to = o->tissue;
    to.tile_size = (int)tile;
    to.min_tissue_fraction = 0; /* every window with any tissue; the coordinator decides */
    to.net_input_size = job->thumbnail_size ? (int)job->thumbnail_size : 512;
    plan = o->method_fn(slide, &to, o->method_ud);
    r->timing->compute_us = (uint64_t)(gs_mono_us() - t_open);
    /* OpenSlide re-opens the file by path while reading: the plan must be of the file
     * accepted, checked once the reads are over. */
    if (!plan || (job->identity && gs_slide_recheck(slide) != 0)) {
        /* An OpenSlide error while reading the thumbnail (the handle is already closed), a cap
         * or the time budget, or the file changed. */
        if (set_error(r, strdup(gs_error_get())) < 0)
            goto out_of_memory;
        goto close_slide;
    }
    if (gs_plan_status(plan) == GS_TISSUE_NOT_BRIGHTFIELD) {
        free(r->unassessable_reason);
        r->unassessable_reason =
            fmt_str("not brightfield: median grey %.0f of 255 (a dark background: fluorescence "
                    "or a failed scan)",
                    gs_plan_stats(plan)->median_grey);
        if (!r->unassessable_reason)
            goto out_of_memory;
        goto close_slide;
    }
    size_t enough;
    if (fill_tiles(r, plan, min_fraction, &enough) < 0)
        goto out_of_memory;
    if (enough == 0) {
        free(r->unassessable_reason);
        r->unassessable_reason = fmt_str("no tissue: no window holds %.0f%% tissue (%zu windows "
                                         "hold some)",
                                         100.0 * min_fraction, r->n_tiles);
        if (!r->unassessable_reason)
            goto out_of_memory;
    }

close_slide:
    gs_plan_destroy(&plan);
    gs_slide_destroy(&slide);
    return r;

out_of_memory:
    gs_plan_destroy(&plan);
    gs_slide_destroy(&slide);
    gs_foreground_result_free(&r);
    gs_error_set("out of memory while planning %s", job->path ? job->path : "(no path)");
    return NULL;
}

int gs_foreground_handle(gs_worker_job *job, void *ud)
{
    const Gastroscreen__V1__WorkMessage *m = gs_worker_job_message(job);
    GS_ASSERT(m->body_case == GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB && m->plan_job);
    Gastroscreen__V1__PlanResult *r =
        gs_foreground_plan(m->plan_job, ud, gs_worker_job_worker_id(job));
    if (!r)
        return -1;
    Gastroscreen__V1__WorkMessage out = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    out.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    out.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT;
    out.plan_result = r;
    int rc = gs_worker_job_emit(job, &out);
    gs_foreground_result_free(&r);
    return rc;
}
