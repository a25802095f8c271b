#include "stages/handlers/blur.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "ops/focus.h"
#include "proto/vocab.h"
#include "stages/runtime/fileio.h"

struct gs_blur {
    const gs_model *m;
    int network; /* use the blur network */
    char sha256[65];
    gs_net_state *net; /* network only, made on first use */
    uint8_t crop[GS_BLUR_CROP * GS_BLUR_CROP * 3];
};

gs_blur *gs_blur_new(const gs_model *m, const char *model_sha256)
{
    if (model_sha256 && strlen(model_sha256) > 64) {
        gs_error_set("blur: model sha256 longer than 64 characters");
        return NULL;
    }
    gs_blur *b = calloc(1, sizeof *b);
    if (!b) {
        gs_error_set("out of memory for a blur state");
        return NULL;
    }
    b->m = m;
    b->network = m && gs_model_has(m, GS_NET_BLUR) && !gs_model_untrained(m, GS_NET_BLUR);
    snprintf(b->sha256, sizeof b->sha256, "%s", model_sha256 ? model_sha256 : "");
    return b;
}

void gs_blur_destroy(gs_blur **bp)
{
    if (!bp || !*bp)
        return;
    gs_net_state_destroy(&(*bp)->net);
    free(*bp);
    *bp = NULL;
}

Gastroscreen__V1__Method gs_blur_method(const gs_blur *b)
{
    return b->network ? GASTROSCREEN__V1__METHOD__METHOD_NETWORK
                      : GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
}

static void fail(gs_blur_result *out, const char *fmt, const char *arg)
{
    snprintf(out->error, sizeof out->error, fmt, arg);
    out->r.error = out->error;
    out->r.blurry = 0;
    out->r.focus = 0;
}

int gs_blur_sparse_check(const gs_model *m, const uint8_t *rgb, int w, int h,
                         double focus_threshold, double sparse_tissue, gs_blur_sparse *out)
{
    memset(out, 0, sizeof *out);
    out->threshold = gs_focus_classical_threshold(focus_threshold);
    /* 0 (and NaN or a share above 1 from a garbled sender) keep the bundle's rule: a job that
     * does not say otherwise is judged as the bundle was calibrated. */
    if (sparse_tissue < 0)
        out->below = 0.0;
    else if (sparse_tissue > 0 && sparse_tissue <= 1)
        out->below = sparse_tissue;
    else
        out->below = m ? (double)gs_model_get_thresholds(m).blur_sparse_tissue : 0.0;
    if (!rgb || w < 1 || h < 1)
        return gs_error_set("blur sparse-tissue check: bad crop %dx%d", w, h);
    uint8_t *mask = malloc((size_t)w * (size_t)h);
    if (!mask)
        return gs_error_set("blur sparse-tissue check: out of memory");
    int64_t n = gs_focus_tissue_mask(rgb, w, h, (size_t)w * 3, 3, GS_FOCUS_GLASS_GREY, mask);
    free(mask);
    if (n < 0)
        return gs_error_prefix("blur sparse-tissue check");
    out->tissue_fraction = (double)n / ((double)w * h);
    if (!(out->tissue_fraction < out->below))
        return 0;
    gs_focus f;
    int r = gs_focus_judge_tile(rgb, w, h, (size_t)w * 3, 3, out->threshold, &f);
    if (r < 0) { /* too little tissue to measure: the network's verdict stands */
        gs_error_clear();
        return 0;
    }
    out->ran = 1;
    out->blurry = r == 1;
    out->score = f.score;
    return 0;
}

int gs_blur_network_verdict(const gs_model *m, float logit, double focus_threshold,
                            const gs_blur_sparse *sp, double *focus)
{
    if (!isfinite(logit)) {
        *focus = NAN;
        return 0;
    }
    *focus = 1.0 - gs_sigmoid(logit);
    /* A configured threshold on the network's scale is on focus (1 - P(blurred)); else the
     * bundle's threshold.blur: blurred when P(blurred) > threshold.blur, i.e. focus < 1 - it. */
    double t = gs_focus_is_network_threshold(focus_threshold)
                   ? focus_threshold
                   : 1.0 - (double)gs_model_get_thresholds(m).blur;
    return *focus < t || (sp && sp->ran && sp->blurry);
}

/* The network's judgement of the central crop: focus = P(sharp), plus the sparse-tissue
 * check (blur.h). */
static int judge_network(gs_blur *b, const uint8_t *px, int w, int hh, int ch,
                         double focus_threshold, double sparse_tissue, gs_focus_judgement *out)
{
    if (w < GS_BLUR_CROP || hh < GS_BLUR_CROP) {
        snprintf(out->error, sizeof out->error, "tile %dx%d smaller than the %d px crop", w, hh,
                 GS_BLUR_CROP);
        return 0;
    }
    if (!b->net && !(b->net = gs_net_state_new(b->m, GS_NET_BLUR, 1, GS_BLUR_CROP, GS_BLUR_CROP)))
        return gs_error_prefix("blur network");
    int x0 = (w - GS_BLUR_CROP) / 2, y0 = (hh - GS_BLUR_CROP) / 2;
    for (int y = 0; y < GS_BLUR_CROP; y++)
        for (int x = 0; x < GS_BLUR_CROP; x++) {
            const uint8_t *p = px + (((size_t)(y0 + y) * w) + (size_t)(x0 + x)) * (size_t)ch;
            uint8_t *q = b->crop + ((size_t)y * GS_BLUR_CROP + x) * 3;
            q[0] = p[0];
            q[1] = ch == 1 ? p[0] : p[1];
            q[2] = ch == 1 ? p[0] : p[2];
        }
    float logit;
    if (gs_net_run_blur(b->net, b->crop, &logit) < 0)
        return gs_error_prefix("blur network");
    if (gs_blur_sparse_check(b->m, b->crop, GS_BLUR_CROP, GS_BLUR_CROP, focus_threshold,
                             sparse_tissue, &out->sparse) < 0)
        return gs_error_prefix("blur sparse-tissue check");
    out->blurry = gs_blur_network_verdict(b->m, logit, focus_threshold, &out->sparse, &out->focus);
    if (!isfinite(out->focus)) {
        out->blurry = 0;
        out->focus = 0;
        snprintf(out->error, sizeof out->error, "the blur network gave a non-finite output");
        return 0;
    }
    out->tissue_fraction = 1.0;
    return 0;
}

int gs_blur_judge_pixels(gs_blur *b, const uint8_t *px, int w, int h, int ch,
                         double focus_threshold, double sparse_tissue, gs_focus_judgement *out)
{
    memset(out, 0, sizeof *out);
    if (b->network)
        return judge_network(b, px, w, h, ch, focus_threshold, sparse_tissue, out);
    double t =
        focus_threshold > 0 && isfinite(focus_threshold) ? focus_threshold : GS_FOCUS_THRESHOLD;
    gs_focus f;
    int r = gs_focus_judge_tile(px, w, h, (size_t)w * (size_t)ch, ch, t, &f);
    if (r < 0) {
        snprintf(out->error, sizeof out->error, "cannot judge focus: %s", gs_error_get());
        gs_error_clear();
        return 0;
    }
    out->blurry = r == 1;
    out->focus = f.score;
    out->tissue_fraction = (double)f.pixels / ((double)w * h);
    return 0;
}

int gs_blur_judge(gs_blur *b, const Gastroscreen__V1__TileHeader *h, const uint8_t *px, size_t len,
                  const char *worker_id, gs_blur_result *out)
{
    int64_t t0 = gs_mono_us();
    gastroscreen__v1__blur_result__init(&out->r);
    gastroscreen__v1__stage_timing__init(&out->timing);
    out->error[0] = '\0';
    snprintf(out->worker_id, sizeof out->worker_id, "%s", worker_id ? worker_id : "");
    out->r.worker_id = out->worker_id;
    out->r.timing = &out->timing;
    out->r.method = gs_blur_method(b);
    out->timing.batch_size = 1;
    if (!h) {
        fail(out, "%s", "no tile header");
        return 0;
    }
    out->r.slide_id = h->slide_id ? h->slide_id : "";
    out->r.attempt = h->attempt;
    out->r.tile_index = h->tile_index;
    out->r.request = h->request;
    out->timing.read_us = h->read_us;
    if (h->job_case != GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR || !h->blur) {
        fail(out, "%s", "not a blur tile (no BlurJob in the header)");
        return 0;
    }
    if (b->sha256[0] && h->blur->model_sha256 && h->blur->model_sha256[0] &&
        strcmp(h->blur->model_sha256, b->sha256)) {
        fail(out, "tile is for model %s, this worker has another bundle", h->blur->model_sha256);
        return 0;
    }
    int ch = gs_pixel_channels(h->pixel_format);
    if (!ch || h->channels != (uint32_t)ch || h->width == 0 || h->height == 0 || h->width > 8192 ||
        h->height > 8192 || (size_t)h->width * h->height * (size_t)ch != len || !px) {
        char msg[256];
        snprintf(msg, sizeof msg, "bad tile frame: %ux%u, %u channels, format %d, %zu bytes",
                 h->width, h->height, h->channels, (int)h->pixel_format, len);
        fail(out, "%s", msg);
        return 0;
    }
    gs_focus_judgement j;
    if (gs_blur_judge_pixels(b, px, (int)h->width, (int)h->height, ch, h->blur->focus_threshold,
                             h->blur->sparse_tissue, &j) < 0)
        return -1;
    if (j.error[0])
        fail(out, "%s", j.error);
    else {
        out->r.blurry = j.blurry;
        out->r.focus = (float)j.focus;
        out->r.tissue_fraction = (float)j.tissue_fraction;
    }
    out->timing.compute_us = (uint64_t)(gs_mono_us() - t0);
    return 0;
}

/* ---- worker stage ------------------------------------------------------------------------ */

struct gs_blur_stage {
    const gs_model *m;
    int threads;
    char sha256[65];
    gs_blur **states;
};

gs_blur_stage *gs_blur_stage_new(const gs_model *m, int threads, const char *model_sha256)
{
    if (threads < 1 || threads > 256) {
        gs_error_set("blur: threads %d outside 1..256", threads);
        return NULL;
    }
    gs_blur_stage *st = calloc(1, sizeof *st);
    if (!st || !(st->states = calloc((size_t)threads, sizeof *st->states))) {
        free(st);
        gs_error_set("out of memory for the blur stage");
        return NULL;
    }
    st->m = m;
    st->threads = threads;
    snprintf(st->sha256, sizeof st->sha256, "%s", model_sha256 ? model_sha256 : "");
    for (int i = 0; i < threads; i++)
        if (!(st->states[i] = gs_blur_new(m, st->sha256))) {
            gs_blur_stage_destroy(&st);
            return NULL;
        }
    return st;
}

void gs_blur_stage_destroy(gs_blur_stage **sp)
{
    if (!sp || !*sp)
        return;
    gs_blur_stage *st = *sp;
    for (int i = 0; i < st->threads && st->states; i++)
        gs_blur_destroy(&st->states[i]);
    free(st->states);
    free(st);
    *sp = NULL;
}

int gs_blur_handle(gs_worker_job *job, void *ud)
{
    gs_blur_stage *st = ud;
    int t = gs_worker_job_thread(job);
    GS_ASSERT(t >= 0 && t < st->threads);
    size_t n = gs_worker_job_tile_count(job);
    if (n == 0)
        return gs_error_set("blur: a job without tiles");
    gs_blur_result *res = malloc(sizeof *res);
    if (!res)
        return gs_error_set("out of memory for a blur result");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const uint8_t *px;
        size_t len;
        const Gastroscreen__V1__TileHeader *h = gs_worker_job_tile(job, i, &px, &len);
        if (gs_blur_judge(st->states[t], h, px, len, gs_worker_job_worker_id(job), res) < 0) {
            rc = -1;
            break;
        }
        res->timing.batch_size = (uint32_t)n;
        Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_BLUR_RESULT;
        m.blur_result = &res->r;
        rc = gs_worker_job_emit(job, &m);
        gs_worker_job_progress(job, 1);
    }
    free(res);
    return rc;
}
