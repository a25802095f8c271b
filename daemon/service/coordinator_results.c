/* Workers' results: each is checked (a malformed one is counted and dropped), fenced (a result
 * of another attempt or a slide no longer active is stale) and recorded, moving its slide on. */
#include "daemon/service/coordinator_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The method a worker named, or UNKNOWN for a value this build does not know. */
static gs_slide_method method_of(Gastroscreen__V1__Method m)
{
    switch (m) {
    case GASTROSCREEN__V1__METHOD__METHOD_NETWORK:
        return GS_METHOD_NETWORK;
    case GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL:
        return GS_METHOD_CLASSICAL;
    default:
        return GS_METHOD_UNKNOWN;
    }
}

gs_slide_method coord_plan_method(const Gastroscreen__V1__PlanResult *p)
{
    return method_of(p->method);
}

/* The fence: 0 and *prt for a result of the current attempt of an active slide; 1 stale. */
static int fence(gs_coordinator *c, const char *slide, uint32_t attempt, slide_rt **prt)
{
    if (gs_slides_fence(c->slides, slide, attempt) != 0) {
        c->st.stale++;
        return 1;
    }
    slide_rt *rt = coord_rt_find(c, slide);
    if (!rt || rt->attempt != attempt) {
        c->st.stale++;
        return 1;
    }
    *prt = rt;
    return 0;
}

/* 1 when the job the result names is open, of that kind and slide attempt, and was sent to w
 * (PROTOCOL.md §9). A job no longer open (answered, or re-sent after its deadline) makes the
 * result stale; a job sent to another worker, or of another kind or slide, is refused. Both
 * are counted; 0 then. */
static int job_ok(gs_coordinator *c, worker *w, const gs_peer *from, uint64_t job_id, int kind,
                  const slide_rt *rt, const char *what)
{
    job *j = coord_job_find(c, job_id);
    if (!j) {
        c->st.stale++;
        return 0;
    }
    if (j->worker != (int)(w - c->workers) || j->kind != kind || strcmp(j->slide, rt->id) != 0 ||
        j->attempt != rt->attempt) {
        coord_refuse_result(c, from, w, what, "the job it names was not sent to it");
        return 0;
    }
    return 1;
}

/* 1 when tile `index` of the slide was requested after w said hello, so the tiler could have
 * sent it to w's inbox (PROTOCOL.md §9), else counts and logs the refusal and returns 0. */
static int tile_sent_to(gs_coordinator *c, worker *w, const slide_rt *rt, uint32_t index,
                        const char *what)
{
    if (rt->sent_ms && rt->sent_ms[index] >= 0 && rt->sent_ms[index] >= w->welcomed_at)
        return 1;
    coord_refuse_result(c, &w->peer, w, what,
                        "the tile was not requested since the worker said hello");
    return 0;
}

/* Which method judged the sample. Workers of one bundle agree; a worker started without the
 * bundle (classical) next to one with a trained blur network would not, and the report must
 * not claim one method for both: the first stays, and the verdict says so in a warning. */
static void note_blur_method(slide_rt *rt, Gastroscreen__V1__Method m)
{
    gs_slide_method bm = method_of(m);
    if (bm == GS_METHOD_UNKNOWN)
        return;
    if (rt->blur_method == GS_METHOD_UNKNOWN)
        rt->blur_method = bm;
    else if (bm != rt->blur_method && !rt->blur_mixed) {
        rt->blur_mixed = 1;
        coord_rt_warn(rt, "blur check: the sample was judged by both the network and the classical "
                          "method (the report names the first)");
    }
}

int coord_on_plan_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__PlanResult *p)
{
    slide_rt *rt;
    if (!gs_wire_str_ok(p->error, 1024) || !gs_wire_str_ok(p->unassessable_reason, 1024)) {
        coord_count_malformed(c, "PlanResult", &w->peer);
        return 0;
    }
    if (fence(c, p->slide_id, p->attempt, &rt) != 0)
        return 0;
    if (rt->phase != PH_PLAN) {
        c->st.duplicates++;
        return 0;
    }
    if (!job_ok(c, w, &w->peer, p->job_id, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_PLAN, rt,
                "PlanResult"))
        return 0;
    coord_remove_job(c, p->job_id);
    if (p->error[0]) {
        rt->job_id = 0;
        return coord_fail_slide(c, rt, "plan: %s", p->error);
    }
    int ok =
        p->grid && p->facts && p->grid->tile_size > 0 && gs_wire_str_ok(p->facts->quickhash, 1024);
    for (size_t i = 0; ok && i < p->n_tiles; i++)
        ok = isfinite(p->tiles[i]->tissue_fraction) && p->tiles[i]->tissue_fraction >= 0.f &&
             p->tiles[i]->tissue_fraction <= 1.f;
    for (size_t i = 0; ok && i < p->n_warnings; i++)
        ok = gs_wire_str_ok(p->warnings[i], 1024);
    if (!ok) {
        coord_count_malformed(c, "PlanResult (plan incomplete)", &w->peer);
        return 0;
    }
    /* The plan goes to the spool before PLANNED is journalled: the record references it. */
    if (gs_spool_plan_write(c->spool, rt->id, p, &rt->plan) != 0)
        return -1;
    int folded = 0;
    if (gs_slides_planned(c->slides, rt->id, rt->attempt, p->facts->quickhash, coord_plan_method(p),
                          p->unassessable_reason, gs_unix_ms(), &folded, NULL) < 0)
        return -1;
    coord_publish_pending(c);
    if (folded) {
        coord_rt_drop(c, rt);
        return 0;
    }
    coord_plan_warnings(rt);
    if (coord_make_ledger(c, rt, 0) != 0)
        return -1;
    if (p->unassessable_reason[0]) {
        rt->report_class = GS_VERDICT_UNASSESSABLE;
        snprintf(rt->reason, sizeof rt->reason, "%s", p->unassessable_reason);
        coord_rt_phase(c, rt, PH_REPORT);
    } else
        coord_rt_phase(c, rt, PH_BLUR);
    return 0;
}

/* The stats slot counting precision p, or n_inferred when it has none yet. */
static size_t precision_slot(const gs_coordinator *c, const char *p)
{
    size_t i = 0;
    while (i < c->st.n_inferred && strcmp(c->st.inferred[i].precision, p) != 0)
        i++;
    return i;
}

/* An INFERRED tile recorded from a worker running precision p: p joins the slide's list
 * (once, in the order first seen) and the tile counts for p in the stats. A list that would
 * outgrow the record keeps what it has (the names are short; eight fit). */
static void note_precision(gs_coordinator *c, slide_rt *rt, const char *p)
{
    size_t n = strlen(p), have = strlen(rt->precision);
    int listed = 0;
    for (const char *q = rt->precision; *q && !listed;) {
        size_t k = strcspn(q, "+");
        listed = k == n && strncmp(q, p, n) == 0;
        q += k + (q[k] == '+');
    }
    if (!listed && have + (have ? 1 : 0) + n < sizeof rt->precision)
        snprintf(rt->precision + have, sizeof rt->precision - have, "%s%s", have ? "+" : "", p);
    size_t i = precision_slot(c, p);
    if (i == c->st.n_inferred && i == GS_COORD_PRECISIONS - 1) {
        /* The last slot is "other" for every later name, so no series changes its label. */
        p = "other";
        i = precision_slot(c, p);
    }
    if (i == c->st.n_inferred) {
        snprintf(c->st.inferred[i].precision, sizeof c->st.inferred[i].precision, "%s", p);
        c->st.n_inferred++;
    }
    c->st.inferred[i].tiles++;
}

void coord_note_tile(gs_coordinator *c, int r)
{
    if (r == GS_LEDGER_RECORDED)
        c->st.tiles_recorded++;
    else if (r == GS_LEDGER_DUPLICATE)
        c->st.duplicates++;
    else if (r == GS_LEDGER_STALE)
        c->st.stale++;
}

void coord_on_tile_job_done(gs_coordinator *c, worker *w, const Gastroscreen__V1__TileJobDone *d)
{
    job *j = coord_job_find(c, d->job_id);
    if (!j)
        return; /* answered already, or given up with its worker */
    if (j->worker != (int)(w - c->workers) ||
        j->kind != GASTROSCREEN__V1__JOB_KIND__JOB_KIND_TILES) {
        coord_refuse_result(c, &w->peer, w, "TileJobDone", "the job it names was not sent to it");
        return;
    }
    coord_remove_job(c, d->job_id);
}

/* 1 when the tiler w holds an open tile job of the slide attempt (it reports the tiles of that
 * job it could not read), else counts and logs the refusal and returns 0. */
static int tiler_holds(gs_coordinator *c, worker *w, const slide_rt *rt)
{
    int idx = (int)(w - c->workers);
    for (size_t i = 0; i < c->n_jobs; i++)
        if (c->jobs[i].worker == idx &&
            c->jobs[i].kind == GASTROSCREEN__V1__JOB_KIND__JOB_KIND_TILES &&
            c->jobs[i].attempt == rt->attempt && strcmp(c->jobs[i].slide, rt->id) == 0)
            return 1;
    coord_refuse_result(c, &w->peer, w, "TileResult", "the tiler holds no tile job of the slide");
    return 0;
}

void coord_on_tile_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__TileResult *t)
{
    slide_rt *rt;
    if (!gs_wire_str_ok(t->error, 1024)) {
        coord_count_malformed(c, "TileResult", &w->peer);
        return;
    }
    if (fence(c, t->slide_id, t->attempt, &rt) != 0)
        return;
    if (!rt->ledger || t->tile_index >= gs_ledger_tile_count(rt->ledger)) {
        coord_count_malformed(c, rt->ledger ? "TileResult (index)" : "TileResult (no plan yet)",
                              &w->peer);
        return;
    }
    if (w->stage == GASTROSCREEN__V1__STAGE__STAGE_TILER) {
        if (t->outcome != GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR) {
            coord_refuse_result(c, &w->peer, w, "TileResult", "a tiler reports only failed reads");
            return;
        }
        if (!tiler_holds(c, w, rt))
            return;
    } else if (!tile_sent_to(c, w, rt, t->tile_index, "TileResult"))
        return;
    int64_t now = coord_now_ms(c);
    if (t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR) {
        if (rt->phase != PH_BLUR && rt->phase != PH_INFER) {
            c->st.duplicates++;
            return;
        }
        if (rt->phase == PH_BLUR && !rt->is_sample[t->tile_index]) {
            coord_count_malformed(c, "TileResult (not a sample tile)", &w->peer);
            return;
        }
        coord_note_tile(c, gs_ledger_failed_request(rt->ledger, t->attempt, t->tile_index,
                                                    t->error[0] ? t->error : "tile error", now));
        return;
    }
    if (rt->phase == PH_BLUR || rt->phase == PH_PLAN) {
        coord_count_malformed(c, "TileResult (before inference)", &w->peer);
        return;
    }
    if (rt->phase != PH_INFER) {
        c->st.duplicates++;
        return;
    }
    if (t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED) {
        if (t->n_feature != GS_FEATURE_DIM || !isfinite(t->score) || t->score < 0.f ||
            t->score > 1.f || t->heatmap_size != rt->hs ||
            t->heatmap.len != (size_t)rt->hs * rt->hs) {
            coord_count_malformed(c, "TileResult (feature, score or heatmap)", &w->peer);
            return;
        }
        for (size_t i = 0; i < GS_FEATURE_DIM; i++)
            if (!isfinite(t->feature[i])) {
                coord_count_malformed(c, "TileResult (feature)", &w->peer);
                return;
            }
    } else if (t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY) {
        if (t->focus_method == GASTROSCREEN__V1__METHOD__METHOD_UNSPECIFIED) {
            coord_count_malformed(c, "TileResult (blurry without a focus method)", &w->peer);
            return;
        }
    } else if (t->outcome != GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND) {
        coord_count_malformed(c, "TileResult (outcome)", &w->peer);
        return;
    }
    if (t->focus_method != GASTROSCREEN__V1__METHOD__METHOD_UNSPECIFIED)
        note_blur_method(rt, t->focus_method);
    int r = gs_ledger_record(rt->ledger, t->attempt, t->tile_index, (gs_tile_outcome)t->outcome,
                             t->score, t->feature, now);
    if (r < 0) {
        coord_count_malformed(c, "TileResult", &w->peer);
        return;
    }
    if (r == GS_LEDGER_RECORDED &&
        t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED) {
        note_precision(c, rt, w->precision[0] ? w->precision : "fp32");
        memcpy(rt->heat + (size_t)t->tile_index * rt->hs * rt->hs, t->heatmap.data, t->heatmap.len);
        coord_heat_file_append(rt, t->tile_index);
    }
    coord_observe_tile(c, rt, t->tile_index, 1, r, now);
    coord_note_tile(c, r);
}

void coord_on_blur_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__BlurResult *b)
{
    slide_rt *rt;
    if (!gs_wire_str_ok(b->error, 1024)) {
        coord_count_malformed(c, "BlurResult", &w->peer);
        return;
    }
    if (fence(c, b->slide_id, b->attempt, &rt) != 0)
        return;
    if (rt->phase != PH_BLUR) {
        if (rt->phase == PH_PLAN)
            coord_count_malformed(c, "BlurResult (no plan yet)", &w->peer);
        else
            c->st.duplicates++;
        return;
    }
    if (b->tile_index >= gs_ledger_tile_count(rt->ledger) || !rt->is_sample[b->tile_index]) {
        coord_count_malformed(c, "BlurResult (not a sample tile)", &w->peer);
        return;
    }
    if (!tile_sent_to(c, w, rt, b->tile_index, "BlurResult"))
        return;
    int64_t now = coord_now_ms(c);
    int r = b->error[0]
                ? gs_ledger_failed_request(rt->ledger, b->attempt, b->tile_index, b->error, now)
                : gs_ledger_judge_blur(rt->ledger, b->attempt, b->tile_index, b->blurry, now);
    if (r < 0)
        coord_count_malformed(c, "BlurResult", &w->peer);
    else {
        if (!b->error[0]) {
            note_blur_method(rt, b->method);
            coord_observe_tile(c, rt, b->tile_index, 0, r, now);
        }
        coord_note_tile(c, r);
    }
}

int coord_on_screen_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__ScreenResult *s)
{
    slide_rt *rt;
    if (!gs_wire_str_ok(s->error, 1024)) {
        coord_count_malformed(c, "ScreenResult", &w->peer);
        return 0;
    }
    if (fence(c, s->slide_id, s->attempt, &rt) != 0)
        return 0;
    if (rt->phase != PH_SCREEN) {
        c->st.duplicates++;
        return 0;
    }
    if (!job_ok(c, w, &w->peer, s->job_id, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_SCREEN, rt,
                "ScreenResult"))
        return 0;
    if (s->error[0]) {
        coord_remove_job(c, s->job_id);
        coord_logf(c, "slide %s: screener error: %s", rt->id, s->error);
        rt->job_id = 0;
        rt->need_send = 1;
        return 0;
    }
    if (!isfinite(s->score) || s->score < 0.f || s->score > 1.f) {
        coord_count_malformed(c, "ScreenResult (score)", &w->peer);
        return 0;
    }
    coord_remove_job(c, s->job_id);
    if (gs_slides_screened_in(c->slides, rt->id, rt->attempt, s->score, rt->precision, gs_unix_ms(),
                              NULL) < 0)
        return -1;
    coord_publish_pending(c);
    gs_slide_info info;
    if (gs_slides_get(c->slides, rt->id, &info) != 0)
        return -1;
    rt->report_class = info.verdict;
    rt->score = s->score;
    snprintf(rt->reason, sizeof rt->reason, "%s", info.reason);
    coord_rt_phase(c, rt, PH_REPORT);
    return 0;
}

int coord_on_report_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__ReportResult *r)
{
    slide_rt *rt;
    if (!gs_wire_str_ok(r->error, 1024) ||
        (r->paths && (!gs_wire_str_ok(r->paths->report_json, 4096) ||
                      !gs_wire_str_ok(r->paths->heatmap_png, 4096) ||
                      !gs_wire_str_ok(r->paths->regions_geojson, 4096)))) {
        coord_count_malformed(c, "ReportResult", &w->peer);
        return 0;
    }
    if (fence(c, r->slide_id, r->attempt, &rt) != 0)
        return 0;
    if (rt->phase != PH_REPORT && rt->phase != PH_FAIL_REPORT) {
        c->st.duplicates++;
        return 0;
    }
    if (!job_ok(c, w, &w->peer, r->job_id, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_REPORT, rt,
                "ReportResult"))
        return 0;
    coord_remove_job(c, r->job_id);
    const char *json = r->paths ? r->paths->report_json : NULL;
    const char *png = r->paths ? r->paths->heatmap_png : NULL;
    const char *geo = r->paths ? r->paths->regions_geojson : NULL;
    if (rt->phase == PH_FAIL_REPORT) {
        if (r->error[0])
            coord_rt_warn(rt, "report: %s", r->error);
        return coord_finalize_fail(c, rt, json, png, geo);
    }
    if (r->error[0]) {
        rt->job_id = 0;
        return coord_fail_slide(c, rt, "report: %s", r->error);
    }
    rt->stage_sec[GASTROSCREEN__V1__STAGE__STAGE_REPORTER] +=
        (double)(coord_now_ms(c) - rt->phase_start) / 1000.0;
    gs_slide_report rep = {.report_json = json,
                           .heatmap_png = png,
                           .regions_geojson = geo,
                           .warnings = (const char *const *)rt->warn,
                           .n_warnings = rt->n_warn};
    coord_tile_counts(rt, &rep.tiles);
    if (gs_slides_reported(c->slides, rt->id, rt->attempt, &rep, gs_unix_ms(), NULL) < 0)
        return -1;
    /* DONE (the verdict) is journalled and fsynced before it is published. */
    if (gs_slides_done(c->slides, rt->id, rt->attempt, gs_unix_ms(), NULL) < 0)
        return -1;
    coord_logf(c, "slide %s: %s", rt->id, rt->reason);
    coord_rt_drop(c, rt);
    coord_publish_pending(c);
    return 0;
}
