#include "stages/handlers/screener.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/fileio.h"

#define MAX_K 4096

struct gs_screener {
    const gs_model *m;
    const Gastroscreen__V1__ModelProvenance *prov;
    int k;
    gs_net_state *net;
    float *matrix; /* k x 512 */
};

/* The state and matrix for k rows. */
static int ensure_k(gs_screener *s, int k)
{
    if (s->net && s->k == k)
        return 0;
    gs_net_state_destroy(&s->net);
    free(s->matrix);
    s->matrix = malloc((size_t)k * GS_FEATURE_DIM * sizeof *s->matrix);
    if (!s->matrix)
        return gs_error_set("out of memory for a %d-row screener matrix", k);
    if (!(s->net = gs_net_state_new(s->m, GS_NET_SCREENER, k, 1, 1)))
        return gs_error_prefix("screener: %d rows", k);
    s->k = k;
    return 0;
}

gs_screener *gs_screener_new(const gs_model *m, int k,
                             const Gastroscreen__V1__ModelProvenance *prov)
{
    if (k == 0)
        k = GS_SCREENER_K;
    if (!m || k < 1 || k > MAX_K) {
        gs_error_set("screener: k %d outside 1..%d", k, MAX_K);
        return NULL;
    }
    if (!gs_model_has(m, GS_NET_SCREENER)) {
        gs_error_set("screener: the bundle has no screener network");
        return NULL;
    }
    gs_screener *s = calloc(1, sizeof *s);
    if (!s) {
        gs_error_set("out of memory for a screener");
        return NULL;
    }
    s->m = m;
    s->prov = prov;
    if (ensure_k(s, k) < 0) {
        gs_screener_destroy(&s);
        return NULL;
    }
    return s;
}

void gs_screener_destroy(gs_screener **sp)
{
    if (!sp || !*sp)
        return;
    gs_net_state_destroy(&(*sp)->net);
    free((*sp)->matrix);
    free(*sp);
    *sp = NULL;
}

static void fail(gs_screen_result *out, const char *msg)
{
    snprintf(out->error, sizeof out->error, "%s", msg);
    out->r.error = out->error;
    out->r.score = 0;
}

int gs_screener_score(gs_screener *s, const Gastroscreen__V1__ScreenTask *t, const char *worker_id,
                      gs_screen_result *out)
{
    int64_t t0 = gs_mono_us();
    gastroscreen__v1__screen_result__init(&out->r);
    gastroscreen__v1__stage_timing__init(&out->timing);
    out->error[0] = '\0';
    snprintf(out->worker_id, sizeof out->worker_id, "%s", worker_id ? worker_id : "");
    out->r.worker_id = out->worker_id;
    out->r.timing = &out->timing;
    if (s->prov) {
        out->model = *s->prov;
        out->r.model = &out->model;
    }
    out->r.slide_id = t->slide_id ? t->slide_id : "";
    out->r.attempt = t->attempt;
    out->r.job_id = t->job_id;
    char msg[256];
    if (t->k == 0 || t->n_features == 0) {
        fail(out, "insufficient tissue: no inferred tile");
        return 0;
    }
    if (t->feature_dim != GS_FEATURE_DIM || t->k > MAX_K ||
        t->n_features != (size_t)t->k * GS_FEATURE_DIM) {
        snprintf(msg, sizeof msg, "bad task: k %u, feature_dim %u, %zu feature values", t->k,
                 t->feature_dim, t->n_features);
        fail(out, msg);
        return 0;
    }
    if (s->prov && s->prov->sha256 && s->prov->sha256[0] && t->model_sha256 && t->model_sha256[0] &&
        strcmp(t->model_sha256, s->prov->sha256)) {
        snprintf(msg, sizeof msg, "task is for model %.70s, this worker has another bundle",
                 t->model_sha256);
        fail(out, msg);
        return 0;
    }
    for (size_t i = 0; i < t->n_features; i++)
        if (!isfinite(t->features[i])) {
            snprintf(msg, sizeof msg, "feature value %zu is not finite", i);
            fail(out, msg);
            return 0;
        }
    if ((int)t->k > s->k && ensure_k(s, (int)t->k) < 0)
        return -1;
    for (int row = 0; row < s->k; row++)
        memcpy(s->matrix + (size_t)row * GS_FEATURE_DIM,
               t->features + (size_t)(row % (int)t->k) * GS_FEATURE_DIM,
               GS_FEATURE_DIM * sizeof *s->matrix);
    float logit;
    if (gs_net_run_screener(s->net, s->matrix, &logit) < 0)
        return gs_error_prefix("screener");
    if (!isfinite(logit)) {
        fail(out, "the screener gave a non-finite output");
        return 0;
    }
    out->r.score = (float)gs_sigmoid(logit);
    out->timing.compute_us = (uint64_t)(gs_mono_us() - t0);
    return 0;
}

/* ---- worker stage ------------------------------------------------------------------------ */

struct gs_screener_stage {
    int threads;
    gs_screener **states;
};

gs_screener_stage *gs_screener_stage_new(const gs_model *m, int threads, int k,
                                         const Gastroscreen__V1__ModelProvenance *prov)
{
    if (threads < 1 || threads > 256) {
        gs_error_set("screener: threads %d outside 1..256", threads);
        return NULL;
    }
    gs_screener_stage *st = calloc(1, sizeof *st);
    if (!st || !(st->states = calloc((size_t)threads, sizeof *st->states))) {
        free(st);
        gs_error_set("out of memory for the screener stage");
        return NULL;
    }
    st->threads = threads;
    for (int i = 0; i < threads; i++)
        if (!(st->states[i] = gs_screener_new(m, k, prov))) {
            gs_screener_stage_destroy(&st);
            return NULL;
        }
    return st;
}

void gs_screener_stage_destroy(gs_screener_stage **sp)
{
    if (!sp || !*sp)
        return;
    gs_screener_stage *st = *sp;
    for (int i = 0; i < st->threads && st->states; i++)
        gs_screener_destroy(&st->states[i]);
    free(st->states);
    free(st);
    *sp = NULL;
}

int gs_screener_handle(gs_worker_job *job, void *ud)
{
    gs_screener_stage *st = ud;
    int t = gs_worker_job_thread(job);
    GS_ASSERT(t >= 0 && t < st->threads);
    const Gastroscreen__V1__WorkMessage *m = gs_worker_job_message(job);
    if (!m || m->body_case != GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK || !m->screen_task)
        return gs_error_set("screener: not a ScreenTask");
    gs_screen_result *res = malloc(sizeof *res);
    if (!res)
        return gs_error_set("out of memory for a screen result");
    int rc = gs_screener_score(st->states[t], m->screen_task, gs_worker_job_worker_id(job), res);
    if (rc == 0) {
        Gastroscreen__V1__WorkMessage out = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        out.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        out.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT;
        out.screen_result = &res->r;
        rc = gs_worker_job_emit(job, &out);
    }
    free(res);
    return rc;
}
