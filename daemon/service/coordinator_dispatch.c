/* The jobs the coordinator sends: TileJobs for a slide's blur sample and tiles, within its window
 * of outstanding tiles, and the one plan, screen or report job a slide needs at a time, re-sent
 * after its deadline. */
#include "daemon/service/coordinator_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/npy.h"

/* The features go to .npy as "<f4": the host's floats must be little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "features are written as <f4");

/* The file the slide id stands for (PROTOCOL.md §13), for every job that opens the slide: the
 * identity journalled at intake and, once planned, the plan's quickhash. The stage refuses
 * another file, naming the change. Pointers are borrowed from info. */
static void slide_identity(const gs_slide_info *info, Gastroscreen__V1__SlideIdentity *id)
{
    *id = (Gastroscreen__V1__SlideIdentity)GASTROSCREEN__V1__SLIDE_IDENTITY__INIT;
    id->device = info->file.dev;
    id->inode = info->file.ino;
    id->size = info->file.size;
    id->mtime_ns = info->file.mtime_ns;
    id->quickhash = (char *)info->quickhash;
}

/* Sends TileJobs for the slide's due and unrequested tiles, within its window. */
int coord_dispatch_tiles(gs_coordinator *c, slide_rt *rt)
{
    int blur = rt->phase == PH_BLUR;
    int sink_stage =
        blur ? GASTROSCREEN__V1__STAGE__STAGE_BLUR : GASTROSCREEN__V1__STAGE__STAGE_INFER;
    char *eps[64], *keys[64];
    uint32_t batch_sum = 0;
    size_t n_eps = coord_inboxes(c, sink_stage, eps, keys, 64, &batch_sum);
    int64_t now = coord_now_ms(c);
    uint32_t n = (uint32_t)rt->plan->n_tiles;
    uint32_t *due = malloc((n ? n : 1) * sizeof *due);
    uint32_t *fresh = malloc((n ? n : 1) * sizeof *fresh);
    if (!due || !fresh) {
        free(due);
        free(fresh);
        return gs_error_set("coordinator: out of memory");
    }
    /* Called even without sinks, so tiles out of requests become ERROR / unjudged. */
    size_t n_due = gs_ledger_due(rt->ledger, now, due, n);
    size_t n_fresh = gs_ledger_unrequested(rt->ledger, fresh, n);
    if (blur) {
        size_t k = 0;
        for (size_t i = 0; i < n_fresh; i++)
            if (rt->is_sample[fresh[i]])
                fresh[k++] = fresh[i];
        n_fresh = k;
    }
    gs_ledger_counts lc;
    gs_ledger_counts_get(rt->ledger, &lc);
    uint32_t window = 4 * batch_sum;
    if (window < 16)
        window = 16;
    uint32_t room = lc.in_flight < window ? window - lc.in_flight : 0;
    size_t di = 0, fi = 0;
    while (n_eps > 0 && (di < n_due || (fi < n_fresh && room > 0))) {
        worker *w = coord_pick_worker(c, GASTROSCREEN__V1__STAGE__STAGE_TILER);
        if (!w)
            break;
        Gastroscreen__V1__TileRef refs[256], *prefs[256];
        uint32_t per = c->cfg->tiles_per_job < 256 ? c->cfg->tiles_per_job : 256;
        uint32_t k = 0, request = 1;
        /* One round per job: re-requests and first requests go in separate jobs. */
        if (di < n_due) {
            request = 2;
            while (di < n_due && k < per) {
                uint32_t i = due[di++];
                refs[k] = (Gastroscreen__V1__TileRef)GASTROSCREEN__V1__TILE_REF__INIT;
                refs[k].index = i;
                refs[k].x0 = rt->plan->tiles[i]->x0;
                refs[k].y0 = rt->plan->tiles[i]->y0;
                prefs[k] = &refs[k];
                k++;
            }
        } else {
            while (fi < n_fresh && k < per && room > 0) {
                uint32_t i = fresh[fi++];
                refs[k] = (Gastroscreen__V1__TileRef)GASTROSCREEN__V1__TILE_REF__INIT;
                refs[k].index = i;
                refs[k].x0 = rt->plan->tiles[i]->x0;
                refs[k].y0 = rt->plan->tiles[i]->y0;
                prefs[k] = &refs[k];
                k++;
                room--;
            }
        }
        if (k == 0)
            break;
        gs_slide_info info;
        if (gs_slides_get(c->slides, rt->id, &info) != 0)
            break;
        Gastroscreen__V1__TileJob tj = GASTROSCREEN__V1__TILE_JOB__INIT;
        Gastroscreen__V1__InferJob ij = GASTROSCREEN__V1__INFER_JOB__INIT;
        Gastroscreen__V1__BlurJob bj = GASTROSCREEN__V1__BLUR_JOB__INIT;
        /* The resolved rule, never the job's 0 (the worker's own bundle): the verdict records
         * c->decision, so the workers must apply exactly that, off included. */
        float sparse = c->decision.sparse_tissue > 0 ? (float)c->decision.sparse_tissue
                                                     : (float)GS_BLUR_SPARSE_OFF;
        tj.slide_id = rt->id;
        tj.attempt = rt->attempt;
        tj.job_id = ++c->next_job_id;
        tj.path = (char *)info.path;
        Gastroscreen__V1__SlideIdentity sid;
        slide_identity(&info, &sid);
        tj.identity = &sid;
        tj.grid = rt->plan->grid;
        tj.n_tiles = k;
        tj.tiles = prefs;
        tj.n_sink_endpoints = n_eps;
        tj.sink_endpoints = eps;
        tj.n_sink_keys = n_eps;
        tj.sink_keys = keys;
        tj.request = request;
        if (blur) {
            bj.focus_threshold = (float)c->cfg->focus_threshold;
            bj.sparse_tissue = sparse;
            bj.model_sha256 = c->model.sha256;
            tj.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_BLUR;
            tj.blur = &bj;
        } else {
            ij.heatmap_size = c->cfg->heatmap_size;
            ij.model_sha256 = c->model.sha256;
            ij.judge_focus = c->cfg->blur_every_tile != 0;
            ij.context = c->cfg->infer_context;
            ij.focus_threshold = (float)c->cfg->focus_threshold;
            ij.sparse_tissue = sparse;
            tj.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_INFER;
            tj.infer = &ij;
        }
        WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB;
        m.tile_job = &tj;
        if (coord_send_work(c, w, &m) != 0) {
            /* Not sent: the worker is gone or full; its slot is not trusted until it speaks. */
            w->free_slots = 0;
            continue;
        }
        if (coord_job_sent(c, w, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_TILES, rt, tj.job_id) != 0) {
            free(due);
            free(fresh);
            return -1;
        }
        for (uint32_t i = 0; i < k; i++) {
            gs_ledger_requested(rt->ledger, refs[i].index, now);
            rt->sent_ms[refs[i].index] = now;
        }
        if (request > 1)
            c->st.tiles_rerequested += k;
    }
    free(due);
    free(fresh);
    return 0;
}

/* Builds the verdict of a report job; the caller frees nothing (all pointers borrowed). */
typedef struct {
    Gastroscreen__V1__Verdict v;
    Gastroscreen__V1__ModelProvenance mp;
    Gastroscreen__V1__TileCounts tc;
    Gastroscreen__V1__ReportPaths rp;
} verdict_buf;

static void verdict_for_report(gs_coordinator *c, slide_rt *rt, const gs_slide_info *info,
                               verdict_buf *b)
{
    b->v = (Gastroscreen__V1__Verdict)GASTROSCREEN__V1__VERDICT__INIT;
    b->mp = (Gastroscreen__V1__ModelProvenance)GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    b->tc = (Gastroscreen__V1__TileCounts)GASTROSCREEN__V1__TILE_COUNTS__INIT;
    b->rp = (Gastroscreen__V1__ReportPaths)GASTROSCREEN__V1__REPORT_PATHS__INIT;
    coord_fill_provenance(c, &b->mp);
    gs_slide_tiles t;
    coord_tile_counts(rt, &t);
    coord_tile_counts_msg(&t, &b->tc);
    b->v.slide_id = rt->id;
    b->v.attempt = rt->attempt;
    b->v.path = (char *)info->path;
    b->v.verdict_class = (Gastroscreen__V1__VerdictClass)rt->report_class;
    b->v.score = rt->report_class == GS_VERDICT_NEGATIVE || rt->report_class == GS_VERDICT_POSITIVE
                     ? rt->score
                     : 0.f;
    coord_verdict_threshold(c, info, &b->v);
    b->v.reason = rt->reason;
    b->mp.precision = (char *)(info->precision[0] ? info->precision : rt->precision);
    b->v.model = &b->mp;
    b->v.n_warnings = rt->n_warn;
    b->v.warnings = rt->warn;
    b->v.report = &b->rp;
    b->v.tiles = &b->tc;
    b->v.blurred_fraction = info->blurred_fraction;
    if (rt->ledger) {
        /* The reporter needs the sample size: a fraction of 0 over 32 judged tiles and a check
         * that never ran (no tissue, plan failure) must read differently in the report. */
        gs_ledger_counts lc;
        gs_ledger_counts_get(rt->ledger, &lc);
        b->v.blur_sample_judged = lc.blur_judged;
    }
    b->v.external_id = (char *)info->external_id;
    /* From the slide's record (journalled with PLANNED and BLUR_CHECKED, so a restart keeps
     * them); a plan recorded without its method still has it in the spooled plan file. */
    gs_slide_method fm = info->foreground_method;
    if (fm == GS_METHOD_UNKNOWN && rt->plan)
        fm = coord_plan_method(rt->plan);
    b->v.foreground_method = (Gastroscreen__V1__Method)fm;
    /* A slide failing in its blur check has judged tiles but no BLUR_CHECKED record. */
    b->v.blur_method =
        (Gastroscreen__V1__Method)(info->blur_method != GS_METHOD_UNKNOWN ? info->blur_method
                                                                          : rt->blur_method);
    b->v.decided_unix_ms = gs_unix_ms();
    b->v.state = rt->report_class == GS_VERDICT_FAILED
                     ? GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_FAILED
                     : GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE;
}

static int send_report(gs_coordinator *c, slide_rt *rt, worker *w)
{
    gs_slide_info info;
    if (gs_slides_get(c->slides, rt->id, &info) != 0)
        return -1;
    verdict_buf vb;
    verdict_for_report(c, rt, &info, &vb);
    char out_dir[PATH_MAX];
    snprintf(out_dir, sizeof out_dir, "%s/%s", c->cfg->report_dir, rt->id);
    Gastroscreen__V1__ReportJob rj = GASTROSCREEN__V1__REPORT_JOB__INIT;
    rj.slide_id = rt->id;
    rj.attempt = rt->attempt;
    rj.job_id = ++c->next_job_id;
    rj.path = (char *)info.path;
    Gastroscreen__V1__SlideIdentity sid;
    slide_identity(&info, &sid);
    rj.identity = &sid;
    rj.out_dir = out_dir;
    rj.verdict = &vb.v;
    rj.heatmap_size = rt->hs;
    Gastroscreen__V1__TileSummary *sums = NULL, **psums = NULL;
    Gastroscreen__V1__StageSeconds secs[STAGE_N], *psecs[STAGE_N];
    size_t n_secs = 0;
    for (int s = 1; s <= 6; s++)
        if (rt->stage_sec[s] > 0) {
            secs[n_secs] = (Gastroscreen__V1__StageSeconds)GASTROSCREEN__V1__STAGE_SECONDS__INIT;
            secs[n_secs].stage = (Gastroscreen__V1__Stage)s;
            secs[n_secs].seconds = rt->stage_sec[s];
            psecs[n_secs] = &secs[n_secs];
            n_secs++;
        }
    rj.n_stage_seconds = n_secs;
    rj.stage_seconds = psecs;
    /* A FAILED report is written without opening the slide: no plan data needed. */
    if (rt->plan && rt->ledger && rt->report_class != GS_VERDICT_FAILED) {
        rj.facts = rt->plan->facts;
        rj.grid = rt->plan->grid;
        size_t n = rt->plan->n_tiles;
        sums = calloc(n ? n : 1, sizeof *sums);
        psums = calloc(n ? n : 1, sizeof *psums);
        if (!sums || !psums) {
            free(sums);
            free(psums);
            return gs_error_set("coordinator: out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            Gastroscreen__V1__TileSummary *s = &sums[i];
            *s = (Gastroscreen__V1__TileSummary)GASTROSCREEN__V1__TILE_SUMMARY__INIT;
            s->index = (uint32_t)i;
            s->x0 = rt->plan->tiles[i]->x0;
            s->y0 = rt->plan->tiles[i]->y0;
            s->outcome = (Gastroscreen__V1__TileOutcome)gs_ledger_outcome(rt->ledger, (uint32_t)i);
            s->score = gs_ledger_score(rt->ledger, (uint32_t)i);
            if (s->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED) {
                s->heatmap.data = rt->heat + i * rt->hs * rt->hs;
                s->heatmap.len = (size_t)rt->hs * rt->hs;
            }
            psums[i] = s;
        }
        rj.n_tiles = n;
        rj.tiles = psums;
    } else if (rt->plan && rt->report_class == GS_VERDICT_FAILED) {
        rj.facts = rt->plan->facts;
    }
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB;
    m.report_job = &rj;
    int r = coord_send_work(c, w, &m);
    free(sums);
    free(psums);
    if (r != 0)
        return 1;
    rt->job_id = rj.job_id;
    return coord_job_sent(c, w, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_REPORT, rt, rj.job_id);
}

static int send_plan(gs_coordinator *c, slide_rt *rt, worker *w)
{
    gs_slide_info info;
    if (gs_slides_get(c->slides, rt->id, &info) != 0)
        return -1;
    Gastroscreen__V1__PlanJob pj = GASTROSCREEN__V1__PLAN_JOB__INIT;
    pj.slide_id = rt->id;
    pj.attempt = rt->attempt;
    pj.job_id = ++c->next_job_id;
    pj.path = (char *)info.path;
    Gastroscreen__V1__SlideIdentity sid;
    slide_identity(&info, &sid);
    sid.quickhash = ""; /* the plan is what finds it */
    pj.identity = &sid;
    pj.target_mpp = c->cfg->target_mpp;
    pj.tile_size = c->cfg->tile_size;
    pj.stride = c->cfg->stride;
    pj.default_mpp = c->cfg->default_mpp;
    pj.min_tissue_fraction = (float)c->cfg->min_tissue_fraction;
    pj.thumbnail_size = c->cfg->thumbnail_size;
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB;
    m.plan_job = &pj;
    if (coord_send_work(c, w, &m) != 0)
        return 1;
    rt->job_id = pj.job_id;
    return coord_job_sent(c, w, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_PLAN, rt, pj.job_id);
}

static int send_screen(gs_coordinator *c, slide_rt *rt, worker *w)
{
    uint32_t k_max = c->decision.top_k;
    uint32_t *idx = malloc(k_max * sizeof *idx);
    float *score = malloc(k_max * sizeof *score);
    float *feat = malloc((size_t)k_max * GS_FEATURE_DIM * sizeof *feat);
    if (!idx || !score || !feat) {
        free(idx);
        free(score);
        free(feat);
        return gs_error_set("coordinator: out of memory");
    }
    uint32_t k = gs_ledger_top(rt->ledger, idx, score, feat);
    Gastroscreen__V1__ScreenTask st = GASTROSCREEN__V1__SCREEN_TASK__INIT;
    st.slide_id = rt->id;
    st.attempt = rt->attempt;
    st.job_id = ++c->next_job_id;
    st.k = k;
    st.feature_dim = GS_FEATURE_DIM;
    st.n_features = (size_t)k * GS_FEATURE_DIM;
    st.features = feat;
    st.n_tile_indices = k;
    st.tile_indices = idx;
    st.n_tile_scores = k;
    st.tile_scores = score;
    st.model_sha256 = c->model.sha256;
    if (c->o.features_dir && rt->sends == 0) {
        char path[PATH_MAX];
        long shape[2] = {(long)k, GS_FEATURE_DIM};
        snprintf(path, sizeof path, "%s/%s.npy", c->o.features_dir, rt->id);
        if (gs_npy_write(path, "<f4", feat, sizeof *feat, 2, shape) != 0)
            coord_logf(c, "features of %s not written: %s", rt->id, gs_error_get());
    }
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK;
    m.screen_task = &st;
    int r = coord_send_work(c, w, &m);
    free(idx);
    free(score);
    free(feat);
    if (r != 0)
        return 1;
    rt->job_id = st.job_id;
    return coord_job_sent(c, w, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_SCREEN, rt, st.job_id);
}

static const char *phase_job_name(int phase)
{
    switch (phase) {
    case PH_PLAN:
        return "plan";
    case PH_SCREEN:
        return "screen";
    default:
        return "report";
    }
}

static int64_t phase_timeout_ms(const gs_coordinator *c, int phase)
{
    switch (phase) {
    case PH_PLAN:
        return c->cfg->plan_timeout_ms;
    case PH_SCREEN:
        return c->cfg->screen_timeout_ms;
    default:
        return c->cfg->report_timeout_ms;
    }
}

/* Sends (or re-sends) the slide's plan / screen / report job when one is needed. */
int coord_dispatch_job(gs_coordinator *c, slide_rt *rt)
{
    int64_t now = coord_now_ms(c);
    int64_t timeout = phase_timeout_ms(c, rt->phase);
    if (rt->job_id && now >= rt->job_deadline) {
        rt->need_send = 1;
        coord_logf(c, "slide %s: %s job %llu past its deadline", rt->id, phase_job_name(rt->phase),
                   (unsigned long long)rt->job_id);
        coord_remove_job(c, rt->job_id);
        rt->job_id = 0;
        /* The wait for a worker to re-send to is bounded as a send is (below). */
        rt->job_deadline = now + timeout;
    }
    if (!rt->need_send)
        return 0;
    uint32_t max_sends = rt->phase == PH_FAIL_REPORT ? 1 : c->cfg->job_max_sends;
    if (rt->sends >= max_sends) {
        if (rt->phase == PH_FAIL_REPORT) {
            coord_rt_warn(rt, "report: no result from the reporter");
            return coord_finalize_fail(c, rt, NULL, NULL, NULL);
        }
        return coord_fail_slide(c, rt, "%s: no result after %u sends", phase_job_name(rt->phase),
                                rt->sends);
    }
    int stage = coord_stage_of_phase(rt->phase);
    worker *w = coord_pick_worker(c, stage);
    if (!w) {
        /* No worker of the stage is free: the one that missed the deadline may still be stuck
         * on this very slide (its slot stays taken while it heartbeats), and a re-send would
         * wait for ever. So each further deadline without a free worker counts as a send: the
         * slide fails after job_max_sends deadlines instead of holding its place (and the
         * queue behind it) with no end. */
        if (rt->sends > 0 && now >= rt->job_deadline) {
            rt->sends++;
            rt->job_deadline = now + timeout;
            coord_logf(c, "slide %s: %s job: no worker free to re-send to (%u of %u)", rt->id,
                       phase_job_name(rt->phase), rt->sends, max_sends);
        }
        return 0;
    }
    int r;
    switch (rt->phase) {
    case PH_PLAN:
        r = send_plan(c, rt, w);
        break;
    case PH_SCREEN:
        r = send_screen(c, rt, w);
        break;
    default:
        r = send_report(c, rt, w);
        break;
    }
    if (r < 0)
        return -1;
    if (r > 0) {
        w->free_slots = 0; /* not sent: gone or full */
        return 0;
    }
    if (rt->sends > 0)
        c->st.jobs_resent++;
    rt->sends++;
    rt->need_send = 0;
    rt->job_deadline = now + timeout;
    return 0;
}
