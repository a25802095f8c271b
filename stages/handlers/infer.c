#include "stages/handlers/infer.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "ops/focus.h"
#include "proto/vocab.h"
#include "stages/handlers/blur.h"
#include "stages/runtime/fileio.h"

#define MAX_BATCH 256

typedef struct {
    Gastroscreen__V1__TileResult r;
    Gastroscreen__V1__StageTiming timing;
    float feature[GS_FEATURE_DIM];
    uint8_t *heat; /* heat_cap bytes */
    size_t heat_cap;
    char error[512];
    int context; /* InferJob.context of the tile in this slot */
} slot;

struct gs_infer {
    const gs_model *m;
    int batch;
    char sha256[65];
    char worker_id[512];
    gs_net_state *net;  /* for batch side x side tiles, or NULL */
    gs_net_state *net1; /* for one side x side tile (partial batches), made on first use */
    gs_blur *focus;     /* judges each tile's focus when the job asks (InferJob.judge_focus) */
    int side;
    uint8_t *input; /* batch * side * side * 3 */
    float *logit, *feature, *seg;
    slot *slots;
    size_t n_slots;
};

gs_infer *gs_infer_new(const gs_model *m, int batch, const char *model_sha256)
{
    if (!m || batch < 1 || batch > MAX_BATCH) {
        gs_error_set("infer: batch %d outside 1..%d", batch, MAX_BATCH);
        return NULL;
    }
    if (!gs_model_has(m, GS_NET_MULTITASK)) {
        gs_error_set("infer: the bundle has no multi-task network");
        return NULL;
    }
    if (model_sha256 && strlen(model_sha256) > 64) {
        gs_error_set("infer: model sha256 longer than 64 characters");
        return NULL;
    }
    gs_infer *s = calloc(1, sizeof *s);
    if (!s) {
        gs_error_set("out of memory for an infer state");
        return NULL;
    }
    s->m = m;
    s->batch = batch;
    snprintf(s->sha256, sizeof s->sha256, "%s", model_sha256 ? model_sha256 : "");
    if (!(s->focus = gs_blur_new(m, NULL))) {
        free(s);
        return NULL;
    }
    return s;
}

static void free_buffers(gs_infer *s)
{
    gs_net_state_destroy(&s->net);
    gs_net_state_destroy(&s->net1);
    free(s->input);
    free(s->logit);
    free(s->feature);
    free(s->seg);
    s->input = NULL;
    s->logit = s->feature = s->seg = NULL;
    s->side = 0;
}

void gs_infer_destroy(gs_infer **sp)
{
    if (!sp || !*sp)
        return;
    gs_infer *s = *sp;
    free_buffers(s);
    gs_blur_destroy(&s->focus);
    for (size_t i = 0; i < s->n_slots; i++)
        free(s->slots[i].heat);
    free(s->slots);
    free(s);
    *sp = NULL;
}

/* The network state and buffers for side x side tiles. */
static int ensure_side(gs_infer *s, int side)
{
    if (s->net && s->side == side)
        return 0;
    free_buffers(s);
    size_t n = (size_t)s->batch, px = (size_t)side * side, q = (size_t)(side / 4) * (side / 4);
    s->net = gs_net_state_new(s->m, GS_NET_MULTITASK, s->batch, side, side);
    if (!s->net)
        return gs_error_prefix("infer: %dx%d tiles", side, side);
    s->input = malloc(n * px * 3);
    s->logit = malloc(n * sizeof *s->logit);
    s->feature = malloc(n * GS_FEATURE_DIM * sizeof *s->feature);
    s->seg = malloc(n * q * sizeof *s->seg);
    if (!s->input || !s->logit || !s->feature || !s->seg) {
        free_buffers(s);
        return gs_error_set("out of memory for a batch of %d %dx%d tiles", s->batch, side, side);
    }
    s->side = side;
    return 0;
}

static int ensure_slots(gs_infer *s, size_t n)
{
    if (n <= s->n_slots)
        return 0;
    slot *grown = realloc(s->slots, n * sizeof *grown);
    if (!grown)
        return gs_error_set("out of memory for %zu results", n);
    memset(grown + s->n_slots, 0, (n - s->n_slots) * sizeof *grown);
    s->slots = grown;
    s->n_slots = n;
    return 0;
}

/* Copies a tile into RGB8 and counts its tissue pixels (grey below glass, as ops/focus). */
static int64_t to_rgb(const uint8_t *px, int w, int h, int ch, uint8_t *rgb)
{
    int64_t tissue = 0;
    size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = px + i * (size_t)ch;
        uint8_t r = p[0], g = ch == 1 ? p[0] : p[1], b = ch == 1 ? p[0] : p[2];
        rgb[3 * i] = r;
        rgb[3 * i + 1] = g;
        rgb[3 * i + 2] = b;
        uint32_t grey = (19595u * r + 38470u * g + 7471u * b + 32768u) >> 16;
        tissue += grey < GS_FOCUS_GLASS_GREY;
    }
    return tissue;
}

/* Starts result i from header h: fence, index, request, worker, timing. */
static void begin_result(gs_infer *s, slot *sl, const Gastroscreen__V1__TileHeader *h,
                         uint64_t wait_us)
{
    gastroscreen__v1__tile_result__init(&sl->r);
    gastroscreen__v1__stage_timing__init(&sl->timing);
    sl->error[0] = '\0';
    sl->r.slide_id = h && h->slide_id ? h->slide_id : "";
    sl->r.attempt = h ? h->attempt : 0;
    sl->r.tile_index = h ? h->tile_index : 0;
    sl->r.request = h ? h->request : 0;
    sl->r.worker_id = s->worker_id;
    sl->timing.wait_us = wait_us;
    sl->timing.read_us = h ? h->read_us : 0;
    sl->r.timing = &sl->timing;
}

static void fail_result(slot *sl, const char *fmt, const char *arg)
{
    snprintf(sl->error, sizeof sl->error, fmt, arg);
    sl->r.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR;
    sl->r.error = sl->error;
    sl->r.n_feature = 0;
    sl->r.feature = NULL;
    sl->r.heatmap.len = 0;
    sl->r.heatmap.data = NULL;
    sl->r.heatmap_size = 0;
}

/* Checks tile h: returns its side (> 0) and its heatmap size in *hs, or 0 after failing the
 * slot with the reason. */
static int check_tile(gs_infer *s, slot *sl, const Gastroscreen__V1__TileHeader *h, size_t len,
                      int *hs)
{
    char msg[256];
    if (!h) {
        fail_result(sl, "%s", "no tile header");
        return 0;
    }
    if (h->job_case != GASTROSCREEN__V1__TILE_HEADER__JOB_INFER || !h->infer) {
        fail_result(sl, "%s", "not an infer tile (no InferJob in the header)");
        return 0;
    }
    if (s->sha256[0] && h->infer->model_sha256 && h->infer->model_sha256[0] &&
        strcmp(h->infer->model_sha256, s->sha256)) {
        fail_result(sl, "tile is for model %s, this worker has another bundle",
                    h->infer->model_sha256);
        return 0;
    }
    int ch = gs_pixel_channels(h->pixel_format);
    if (!ch || h->channels != (uint32_t)ch || h->width == 0 || h->width != h->height ||
        h->width > 4096 || (size_t)h->width * h->height * (size_t)ch != len) {
        snprintf(msg, sizeof msg, "bad tile frame: %ux%u, %u channels, format %d, %zu bytes",
                 h->width, h->height, h->channels, (int)h->pixel_format, len);
        fail_result(sl, "%s", msg);
        return 0;
    }
    if (h->width % 32) {
        snprintf(msg, sizeof msg, "tile side %u is not a multiple of 32", h->width);
        fail_result(sl, "%s", msg);
        return 0;
    }
    uint32_t ctx = h->infer->context;
    if (ctx % 16 || 2 * ctx >= h->width) {
        snprintf(msg, sizeof msg, "context %u is not a multiple of 16 under half the %u px frame",
                 ctx, h->width);
        fail_result(sl, "%s", msg);
        return 0;
    }
    uint32_t want = h->infer->heatmap_size ? h->infer->heatmap_size : GS_INFER_HEATMAP_SIZE;
    uint32_t window = h->width - 2 * ctx;
    if (want > window / 4) {
        snprintf(msg, sizeof msg,
                 "heatmap size %u over the segmentation map's side %u on the window", want,
                 window / 4);
        fail_result(sl, "%s", msg);
        return 0;
    }
    sl->context = (int)ctx;
    *hs = (int)want;
    return (int)h->width;
}

/* Area average of the seg sigmoid over the window's part of the map (q x q, the window's
 * qc x qc cells starting at (off, off)) into hs x hs bytes. */
static void pool_heatmap(const float *seg, int q, int off, int qc, int hs, uint8_t *out)
{
    for (int i = 0; i < hs; i++) {
        int y0 = off + i * qc / hs, y1 = off + (i + 1) * qc / hs;
        for (int j = 0; j < hs; j++) {
            int x0 = off + j * qc / hs, x1 = off + (j + 1) * qc / hs;
            double sum = 0;
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++)
                    sum += gs_sigmoid(seg[(size_t)y * q + x]);
            double p = sum / ((double)(y1 - y0) * (x1 - x0));
            long v = lround(p * 255.0);
            out[i * hs + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* Runs the network on the queued tiles (already in s->input): a full batch in one call, a
 * partial one tile by tile in a one-tile state. Padding a partial batch instead would spend a
 * whole batch's compute on it (13 tiles in batches of 4 cost 16 tiles' time) while the
 * network's tiles/s is the same at batch 1 and 4. Fills compute_us[b] with the time of the call
 * that ran tile b and returns the tiles per call (k or 1), or -1. */
static int run_network(gs_infer *s, size_t k, uint64_t *compute_us)
{
    if (k == (size_t)s->batch) {
        int64_t t0 = gs_mono_us();
        if (gs_net_run_multitask(s->net, s->input, s->logit, s->feature, s->seg) < 0)
            return gs_error_prefix("infer: multitask");
        uint64_t us = (uint64_t)(gs_mono_us() - t0);
        for (size_t b = 0; b < k; b++)
            compute_us[b] = us;
        return (int)k;
    }
    if (!s->net1 && !(s->net1 = gs_net_state_new(s->m, GS_NET_MULTITASK, 1, s->side, s->side)))
        return gs_error_prefix("infer: %dx%d tiles", s->side, s->side);
    size_t px = (size_t)s->side * s->side * 3, q = (size_t)(s->side / 4) * (s->side / 4);
    for (size_t b = 0; b < k; b++) {
        int64_t t0 = gs_mono_us();
        if (gs_net_run_multitask(s->net1, s->input + b * px, s->logit + b,
                                 s->feature + b * GS_FEATURE_DIM, s->seg + b * q) < 0)
            return gs_error_prefix("infer: multitask");
        compute_us[b] = (uint64_t)(gs_mono_us() - t0);
    }
    return 1;
}

/* Runs the queued tiles idx[0..k) (already in s->input) and fills their slots. */
static int run_batch(gs_infer *s, const size_t *idx, const int *hs, size_t k)
{
    uint64_t compute[MAX_BATCH];
    int per_call = run_network(s, k, compute);
    if (per_call < 0)
        return -1;
    int q = s->side / 4;
    for (size_t b = 0; b < k; b++) {
        slot *sl = &s->slots[idx[b]];
        const float *f = s->feature + b * GS_FEATURE_DIM;
        const float *seg = s->seg + b * (size_t)q * q;
        int finite = isfinite(s->logit[b]);
        for (int i = 0; finite && i < GS_FEATURE_DIM; i++)
            finite = isfinite(f[i]);
        for (size_t i = 0; finite && i < (size_t)q * q; i++)
            finite = isfinite(seg[i]);
        sl->timing.compute_us += compute[b];
        sl->timing.batch_size = (uint32_t)per_call;
        if (!finite) {
            fail_result(sl, "%s", "the network gave a non-finite output");
            continue;
        }
        size_t need = (size_t)hs[b] * hs[b];
        if (sl->heat_cap < need) {
            uint8_t *grown = realloc(sl->heat, need);
            if (!grown)
                return gs_error_set("out of memory for a heatmap");
            sl->heat = grown;
            sl->heat_cap = need;
        }
        pool_heatmap(seg, q, sl->context / 4, q - sl->context / 2, hs[b], sl->heat);
        memcpy(sl->feature, f, sizeof sl->feature);
        sl->r.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED;
        sl->r.score = (float)gs_sigmoid(s->logit[b]);
        sl->r.feature = sl->feature;
        sl->r.n_feature = GS_FEATURE_DIM;
        sl->r.heatmap.data = sl->heat;
        sl->r.heatmap.len = need;
        sl->r.heatmap_size = (uint32_t)hs[b];
    }
    return 0;
}

int gs_infer_run(gs_infer *s, size_t n, const Gastroscreen__V1__TileHeader *const *headers,
                 const uint8_t *const *pixels, const size_t *lens, const char *worker_id,
                 const uint64_t *wait_us)
{
    snprintf(s->worker_id, sizeof s->worker_id, "%s", worker_id ? worker_id : "");
    if (ensure_slots(s, n ? n : 1) < 0)
        return -1;
    size_t idx[MAX_BATCH];
    int hs[MAX_BATCH];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        slot *sl = &s->slots[i];
        const Gastroscreen__V1__TileHeader *h = headers[i];
        begin_result(s, sl, h, wait_us ? wait_us[i] : 0);
        int heat = 0;
        int side = check_tile(s, sl, h, lens[i], &heat);
        if (!side)
            continue;
        if (k > 0 && side != s->side) {
            if (run_batch(s, idx, hs, k) < 0)
                return -1;
            k = 0;
        }
        if (ensure_side(s, side) < 0)
            return -1;
        int ch = (int)h->channels;
        size_t px = (size_t)side * side * 3;
        if (to_rgb(pixels[i], side, side, ch, s->input + k * px) == 0) {
            sl->r.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND;
            continue;
        }
        if (h->infer->judge_focus) {
            int64_t t0 = gs_mono_us();
            gs_focus_judgement j;
            if (gs_blur_judge_pixels(s->focus, pixels[i], side, side, ch, h->infer->focus_threshold,
                                     h->infer->sparse_tissue, &j) < 0)
                return -1;
            sl->timing.compute_us += (uint64_t)(gs_mono_us() - t0);
            /* A tile whose focus cannot be judged is inferred: losing its evidence would be
             * worse than analysing a tile of unknown focus. */
            if (!j.error[0]) {
                sl->r.focus = (float)j.focus;
                sl->r.focus_method = gs_blur_method(s->focus);
                if (j.blurry) {
                    sl->r.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY;
                    continue;
                }
            }
        }
        idx[k] = i;
        hs[k] = heat;
        if (++k == (size_t)s->batch) {
            if (run_batch(s, idx, hs, k) < 0)
                return -1;
            k = 0;
        }
    }
    if (k > 0 && run_batch(s, idx, hs, k) < 0)
        return -1;
    return 0;
}

const Gastroscreen__V1__TileResult *gs_infer_result(const gs_infer *s, size_t i)
{
    GS_ASSERT(i < s->n_slots);
    return &s->slots[i].r;
}

/* ---- worker stage ------------------------------------------------------------------------ */

struct gs_infer_stage {
    const gs_model *m;
    int threads, batch;
    char sha256[65];
    gs_infer **states; /* one per handler thread, made on first use */
};

gs_infer_stage *gs_infer_stage_new(const gs_model *m, int threads, int batch,
                                   const char *model_sha256)
{
    if (threads < 1 || threads > 256) {
        gs_error_set("infer: threads %d outside 1..256", threads);
        return NULL;
    }
    /* Validate once here so a bad bundle or batch fails at start, not on the first tile. */
    gs_infer *probe = gs_infer_new(m, batch, model_sha256);
    if (!probe)
        return NULL;
    gs_infer_stage *st = calloc(1, sizeof *st);
    gs_infer **states = calloc((size_t)threads, sizeof *states);
    if (!st || !states) {
        free(st);
        free(states);
        gs_infer_destroy(&probe);
        gs_error_set("out of memory for the infer stage");
        return NULL;
    }
    st->m = m;
    st->threads = threads;
    st->batch = batch;
    snprintf(st->sha256, sizeof st->sha256, "%s", model_sha256 ? model_sha256 : "");
    st->states = states;
    st->states[0] = probe;
    return st;
}

void gs_infer_stage_destroy(gs_infer_stage **sp)
{
    if (!sp || !*sp)
        return;
    gs_infer_stage *st = *sp;
    for (int i = 0; i < st->threads; i++)
        gs_infer_destroy(&st->states[i]);
    free(st->states);
    free(st);
    *sp = NULL;
}

int gs_infer_handle(gs_worker_job *job, void *ud)
{
    gs_infer_stage *st = ud;
    int t = gs_worker_job_thread(job);
    GS_ASSERT(t >= 0 && t < st->threads);
    if (!st->states[t] && !(st->states[t] = gs_infer_new(st->m, st->batch, st->sha256)))
        return -1;
    size_t n = gs_worker_job_tile_count(job);
    if (n == 0)
        return gs_error_set("infer: a job without tiles");
    const Gastroscreen__V1__TileHeader **h = calloc(n, sizeof *h);
    const uint8_t **px = calloc(n, sizeof *px);
    size_t *len = calloc(n, sizeof *len);
    int rc = -1;
    if (!h || !px || !len) {
        gs_error_set("out of memory for a batch of %zu tiles", n);
        goto free_arrays;
    }
    for (size_t i = 0; i < n; i++)
        h[i] = gs_worker_job_tile(job, i, &px[i], &len[i]);
    if (gs_infer_run(st->states[t], n, h, px, len, gs_worker_job_worker_id(job), NULL) < 0)
        goto free_arrays;
    for (size_t i = 0; i < n; i++) {
        Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
        m.tile_result = (Gastroscreen__V1__TileResult *)gs_infer_result(st->states[t], i);
        if (gs_worker_job_emit(job, &m) < 0)
            goto free_arrays;
    }
    gs_worker_job_progress(job, n);
    rc = 0;
free_arrays:
    free(h);
    free(px);
    free(len);
    return rc;
}
