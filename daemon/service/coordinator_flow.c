/* The slides in flight: activation (new, or resumed from the spool after a restart), the
 * phases, settling the blur sample and the tiles, failure, and the publication of every record
 * the slide table journals. */
#include "daemon/service/coordinator_internal.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops/error.h"

/* ------------------------------------------------------------------------------------------ */
/* publication */

/* A terminal slide's spool folder (plan, ledger file): removed, or for a poisoned slide moved
 * to spool/poison/ for an operator (PROTOCOL.md §12). Best effort: a leftover is harmless. */
void coord_spool_retire(const gs_coordinator *c, const char *slide, int poison)
{
    if (!poison)
        gs_spool_retire(c->spool, slide);
    else if (gs_spool_poison(c->spool, slide) != 0)
        coord_logf(c, "slide %s: cannot keep its spool in poison/: %s", slide, gs_error_get());
}

int coord_send_event(gs_coordinator *c, Gastroscreen__V1__EventMessage *ev)
{
    ev->last_seq = gs_journal_last_seq(c->journal);
    /* PUB never blocks: a slow subscriber loses events and recovers them with a query. */
    if (gs_transport_send(c->events, NULL, &ev->base, GS_SEND_DONTWAIT) == 0) {
        c->st.events_published++;
        return 0;
    }
    return -1;
}

/* Publishes every journalled record not yet published, oldest first. */
void coord_publish_pending(gs_coordinator *c)
{
    while (c->published < gs_journal_last_seq(c->journal)) {
        gs_journal_event evs[64];
        size_t n = gs_journal_events_since(c->journal, c->published, evs, 64);
        if (n == 0) {
            /* Compacted or unpublishable: nothing to send below the newest number. */
            c->published = gs_journal_last_seq(c->journal);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            Gastroscreen__V1__EventMessage *ev =
                gastroscreen__v1__event_message__unpack(NULL, evs[i].payload_len, evs[i].payload);
            if (ev) {
                if (ev->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT) {
                    int cls = ev->verdict->verdict_class;
                    /* The slide table's flag, not the event's: an event journalled by a build
                     * without Verdict.poison says false (PROTOCOL.md §12). */
                    gs_slide_info vi;
                    int poison = cls == GS_VERDICT_FAILED &&
                                 gs_slides_get(c->slides, ev->verdict->slide_id, &vi) == 0 &&
                                 vi.poison;
                    if (cls >= GS_VERDICT_NONE && cls <= GS_VERDICT_FAILED) {
                        c->st.verdicts[cls]++;
                        coord_observe_slide(c, ev->verdict);
                    }
                    c->st.failed_poison += poison;
                    if (gs_slide_id_ok(ev->verdict->slide_id))
                        coord_spool_retire(c, ev->verdict->slide_id, poison);
                } else if (ev->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED &&
                           ev->state_changed->to ==
                               GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE &&
                           gs_slide_id_ok(ev->state_changed->slide_id))
                    coord_spool_retire(c, ev->state_changed->slide_id, 0); /* folded */
                coord_send_event(c, ev);
                gastroscreen__v1__event_message__free_unpacked(ev, NULL);
            }
            c->published = evs[i].seq;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* slide runtime */

static void rt_free(slide_rt **prt)
{
    slide_rt *rt = *prt;
    if (!rt)
        return;
    if (rt->plan)
        gastroscreen__v1__plan_result__free_unpacked(rt->plan, NULL);
    gs_ledger_destroy(&rt->ledger);
    free(rt->is_sample);
    free(rt->sent_ms);
    free(rt->heat);
    gs_spool_heat_destroy(&rt->heat_file);
    for (size_t i = 0; i < rt->n_warn; i++)
        free(rt->warn[i]);
    free(rt->warn);
    free(rt);
    *prt = NULL;
}

slide_rt *coord_rt_find(gs_coordinator *c, const char *id)
{
    for (size_t i = 0; i < c->n_active; i++)
        if (strcmp(c->active[i]->id, id) == 0)
            return c->active[i];
    return NULL;
}

void coord_rt_drop(gs_coordinator *c, slide_rt *rt)
{
    for (size_t i = 0; i < c->n_active; i++)
        if (c->active[i] == rt) {
            c->active[i] = c->active[--c->n_active];
            break;
        }
    /* Its jobs are forgotten; results for them are stale by the fence. */
    size_t k = 0;
    for (size_t i = 0; i < c->n_jobs; i++)
        if (strcmp(c->jobs[i].slide, rt->id) != 0)
            c->jobs[k++] = c->jobs[i];
    c->n_jobs = k;
    rt_free(&rt);
}

void coord_rt_warn(slide_rt *rt, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nw = realloc(rt->warn, (rt->n_warn + 1) * sizeof *nw);
    if (!nw)
        return;
    rt->warn = nw;
    if ((rt->warn[rt->n_warn] = strdup(buf)) != NULL)
        rt->n_warn++;
}

int coord_stage_of_phase(int phase)
{
    switch (phase) {
    case PH_PLAN:
        return GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND;
    case PH_BLUR:
        return GASTROSCREEN__V1__STAGE__STAGE_BLUR;
    case PH_INFER:
        return GASTROSCREEN__V1__STAGE__STAGE_INFER;
    case PH_SCREEN:
        return GASTROSCREEN__V1__STAGE__STAGE_SCREENER;
    default:
        return GASTROSCREEN__V1__STAGE__STAGE_REPORTER;
    }
}

void coord_rt_phase(gs_coordinator *c, slide_rt *rt, int phase)
{
    int64_t now = coord_now_ms(c);
    if (rt->phase)
        rt->stage_sec[coord_stage_of_phase(rt->phase)] += (double)(now - rt->phase_start) / 1000.0;
    rt->phase = phase;
    rt->phase_start = now;
    rt->job_id = 0;
    rt->sends = 0;
    rt->need_send =
        (phase == PH_PLAN || phase == PH_SCREEN || phase == PH_REPORT || phase == PH_FAIL_REPORT);
}

void coord_tile_counts(const slide_rt *rt, gs_slide_tiles *t)
{
    memset(t, 0, sizeof *t);
    if (!rt->ledger)
        return;
    gs_ledger_counts lc;
    gs_ledger_counts_get(rt->ledger, &lc);
    t->planned = lc.planned;
    t->inferred = lc.inferred;
    t->background = lc.background;
    t->blurry = lc.blurry;
    t->error = lc.error;
    t->rerequested = lc.rerequested;
}

void coord_tile_counts_msg(const gs_slide_tiles *t, Gastroscreen__V1__TileCounts *tc)
{
    tc->planned = t->planned;
    tc->inferred = t->inferred;
    tc->background = t->background;
    tc->blurry = t->blurry;
    tc->error = t->error;
    tc->rerequested = t->rerequested;
}

void coord_verdict_threshold(const gs_coordinator *c, const gs_slide_info *info,
                             Gastroscreen__V1__Verdict *v)
{
    int judged = info->threshold_source && info->threshold_source[0];
    v->threshold = judged ? info->threshold : (float)c->decision.threshold;
    v->threshold_source = (char *)(judged ? info->threshold_source : c->decision.threshold_source);
    v->focus_threshold = (float)c->decision.focus_threshold;
    v->focus_threshold_source = (char *)c->decision.focus_threshold_source;
    v->blur_slide_fraction = (float)c->decision.blur_slide_fraction;
    v->blur_slide_source = (char *)c->decision.blur_slide_source;
    v->sparse_tissue = (float)c->decision.sparse_tissue;
    v->sparse_tissue_source = (char *)c->decision.sparse_tissue_source;
    v->sparse_classical_threshold = (float)c->decision.sparse_classical_threshold;
    v->focus_every_tile = c->cfg->blur_every_tile != 0;
}

/* ------------------------------------------------------------------------------------------ */
/* failure */

/* Journals FAILED (with whatever report exists) and publishes it. */
int coord_finalize_fail(gs_coordinator *c, slide_rt *rt, const char *json, const char *png,
                        const char *geo)
{
    gs_slide_report rep = {.report_json = json,
                           .heatmap_png = png,
                           .regions_geojson = geo,
                           .warnings = (const char *const *)rt->warn,
                           .n_warnings = rt->n_warn};
    coord_tile_counts(rt, &rep.tiles);
    if (rt->ledger)
        gs_ledger_sync(rt->ledger);
    int r = gs_slides_fail(c->slides, rt->id, rt->attempt, rt->reason, &rep, gs_unix_ms(), NULL);
    coord_logf(c, "slide %s failed: %s", rt->id, rt->reason);
    coord_rt_drop(c, rt);
    coord_publish_pending(c);
    return r < 0 ? -1 : 0;
}

/* The slide fails: a FAILED ReportJob first (once) so report.json says why, then FAILED. */
int coord_fail_slide(gs_coordinator *c, slide_rt *rt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rt->reason, sizeof rt->reason, fmt, ap);
    va_end(ap);
    if (!coord_any_worker(c, GASTROSCREEN__V1__STAGE__STAGE_REPORTER))
        return coord_finalize_fail(c, rt, NULL, NULL, NULL);
    rt->report_class = GS_VERDICT_FAILED;
    coord_rt_phase(c, rt, PH_FAIL_REPORT);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* plan, ledger and heatmaps of a slide */

static int load_plan(gs_coordinator *c, slide_rt *rt)
{
    rt->plan = gs_spool_plan_read(c->spool, rt->id);
    return rt->plan ? 0 : -1;
}

/* heat.bin's records come back only for the tiles whose outcome the ledger file gave back:
 * a heatmap without its outcome would be reported for a tile inferred again. */
static void heat_adopt(void *ud, uint32_t idx, const uint8_t *map)
{
    slide_rt *rt = ud;
    size_t bytes = (size_t)rt->hs * rt->hs;
    if (idx < gs_ledger_tile_count(rt->ledger) &&
        gs_ledger_outcome(rt->ledger, idx) == GS_TILE_INFERRED)
        memcpy(rt->heat + (size_t)idx * bytes, map, bytes);
}

static void heat_file_open(gs_coordinator *c, slide_rt *rt, int adopt)
{
    rt->heat_file =
        gs_spool_heat_open(c->spool, rt->id, (size_t)rt->hs * rt->hs, adopt, heat_adopt, rt);
    if (!rt->heat_file)
        coord_logf(c, "slide %s: %s (heatmaps not saved)", rt->id, gs_error_get());
}

void coord_heat_file_append(slide_rt *rt, uint32_t idx)
{
    if (!rt->heat_file)
        return;
    /* A failed append leaves heat.bin ending with its last intact record (the partial one is
     * cut off), but the next would most likely fail too (a full disk): stop saving. The
     * heatmaps in memory stay complete; only a restart misses those not saved. */
    if (gs_spool_heat_append(rt->heat_file, idx, rt->heat + (size_t)idx * rt->hs * rt->hs) != 0)
        gs_spool_heat_destroy(&rt->heat_file);
}

/* A ledger for the plan: background tiles set, the sample marked; adopt = take the outcomes
 * of the ledger file (restart in INFERRING), else start the file afresh. */
int coord_make_ledger(gs_coordinator *c, slide_rt *rt, int adopt)
{
    const gs_config *cfg = c->cfg;
    uint32_t n = (uint32_t)rt->plan->n_tiles;
    gs_ledger_options lo;
    gs_ledger_options_default(&lo);
    lo.tile_max_requests = cfg->tile_max_requests;
    lo.stall_timeout_ms = cfg->tile_stall_timeout_ms;
    lo.loss_grace_ms = cfg->loss_grace_ms;
    lo.top_k = c->decision.top_k;
    lo.feature_dim = GS_FEATURE_DIM;
    rt->ledger = gs_ledger_new(n, rt->attempt, &lo);
    rt->is_sample = calloc(n ? n : 1, 1);
    free(rt->sent_ms);
    rt->sent_ms = malloc((n ? n : 1) * sizeof *rt->sent_ms);
    rt->hs = cfg->heatmap_size;
    rt->heat = calloc((size_t)(n ? n : 1) * rt->hs * rt->hs, 1);
    if (!rt->ledger || !rt->is_sample || !rt->sent_ms || !rt->heat)
        return gs_error_set("slide %s: out of memory for the ledger", rt->id);
    for (uint32_t i = 0; i < n; i++)
        rt->sent_ms[i] = -1;
    uint32_t n_elig = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (rt->plan->tiles[i]->tissue_fraction < (float)cfg->min_tissue_fraction)
            gs_ledger_set_background(rt->ledger, i);
        else
            n_elig++;
    }
    /* The sample: evenly spaced over the eligible tiles in plan order (PROTOCOL.md §6). */
    uint32_t s = n_elig < cfg->blur_sample ? n_elig : cfg->blur_sample;
    rt->n_sample = s;
    for (uint32_t k = 0; k < s; k++) {
        uint32_t want = (uint32_t)floor((k + 0.5) * n_elig / s), seen = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (rt->plan->tiles[i]->tissue_fraction < (float)cfg->min_tissue_fraction)
                continue;
            if (seen++ == want) {
                rt->is_sample[i] = 1;
                break;
            }
        }
    }
    char path[PATH_MAX];
    if (gs_spool_ledger_path(c->spool, rt->id, path, sizeof path) != 0)
        return -1;
    if (adopt) {
        uint32_t adopted = 0, dropped = 0;
        if (gs_ledger_adopt_file(rt->ledger, path, &adopted, &dropped) != 0)
            coord_logf(c, "slide %s: %s (inferring it again)", rt->id, gs_error_get());
        else if (adopted || dropped)
            coord_logf(c, "slide %s: adopted %u tile outcomes from the ledger file (%u dropped)",
                       rt->id, adopted, dropped);
    } else
        unlink(path);
    if (gs_ledger_attach_file(rt->ledger, path) != 0)
        coord_logf(c, "slide %s: %s (outcomes not saved)", rt->id, gs_error_get());
    heat_file_open(c, rt, adopt);
    return 0;
}

void coord_plan_warnings(slide_rt *rt)
{
    for (size_t i = 0; rt->plan && i < rt->plan->n_warnings; i++)
        coord_rt_warn(rt, "%s", rt->plan->warnings[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* the state machine */

static int start_inference(gs_coordinator *c, slide_rt *rt)
{
    gs_ledger_begin_inference(rt->ledger);
    coord_rt_phase(c, rt, PH_INFER);
    return 0;
}

/* ": <the last error of the first tile that has one>", or "": a slide that fails for its tiles
 * says why they failed (an unreadable file, a file changed after intake), not only how many. */
static void first_tile_error(const slide_rt *rt, char *out, size_t n)
{
    out[0] = '\0';
    for (uint32_t i = 0; rt->ledger && i < gs_ledger_tile_count(rt->ledger); i++) {
        const char *e = gs_ledger_error(rt->ledger, i);
        if (e && e[0]) {
            snprintf(out, n, ": %s", e);
            return;
        }
    }
}

/* The sample is settled: decide the blur check (PROTOCOL.md §6). */
static int blur_settled(gs_coordinator *c, slide_rt *rt)
{
    gs_ledger_counts lc;
    gs_ledger_counts_get(rt->ledger, &lc);
    uint32_t min_valid =
        c->cfg->blur_min_valid < rt->n_sample ? c->cfg->blur_min_valid : rt->n_sample;
    if (lc.blur_judged < min_valid) {
        char why[512];
        first_tile_error(rt, why, sizeof why);
        return coord_fail_slide(c, rt, "blur check: %u of %u sample tiles readable%s",
                                lc.blur_judged, rt->n_sample, why);
    }
    float frac = lc.blur_judged ? (float)lc.blur_blurry / (float)lc.blur_judged : 0.f;
    int out = frac > (float)c->decision.blur_slide_fraction;
    char reason[256];
    snprintf(reason, sizeof reason, "out of focus: %u of %u sample tiles blurry", lc.blur_blurry,
             lc.blur_judged);
    if (gs_slides_blur_checked(c->slides, rt->id, rt->attempt, frac, rt->blur_method, out,
                               out ? reason : "", gs_unix_ms(), NULL) < 0)
        return -1;
    coord_publish_pending(c);
    if (out) {
        rt->report_class = GS_VERDICT_UNASSESSABLE;
        snprintf(rt->reason, sizeof rt->reason, "%s", reason);
        coord_rt_phase(c, rt, PH_REPORT);
        return 0;
    }
    if (gs_slides_inferring(c->slides, rt->id, rt->attempt, gs_unix_ms(), NULL) < 0)
        return -1;
    coord_publish_pending(c);
    return start_inference(c, rt);
}

/* Every tile has an outcome: the top-k go to the screener, or the slide fails. */
static int tiles_settled(gs_coordinator *c, slide_rt *rt)
{
    gs_ledger_counts lc;
    gs_ledger_counts_get(rt->ledger, &lc);
    gs_ledger_sync(rt->ledger);
    uint32_t judged = lc.planned - lc.background;
    /* Every tissue tile's focus is judged (the sample's, then the infer worker's): too much
     * blurry tissue leaves the slide unassessable as the sample would have; some gets a
     * warning, since a lesion in a tile left out is not looked at. */
    if (lc.blurry > 0 && judged > 0) {
        double share = (double)lc.blurry / judged;
        if (share > c->decision.blur_slide_fraction || lc.inferred == 0) {
            char reason[256];
            snprintf(reason, sizeof reason, "out of focus: %u of %u tissue tiles blurry", lc.blurry,
                     judged);
            if (gs_slides_out_of_focus(c->slides, rt->id, rt->attempt, reason, gs_unix_ms(), NULL) <
                0)
                return -1;
            coord_publish_pending(c);
            rt->report_class = GS_VERDICT_UNASSESSABLE;
            snprintf(rt->reason, sizeof rt->reason, "%s", reason);
            coord_rt_phase(c, rt, PH_REPORT);
            return 0;
        }
        coord_rt_warn(rt, "partially out of focus: %u of %u tissue tiles (%.0f%%) not analysed",
                      lc.blurry, judged, 100.0 * share);
    }
    char why[512];
    first_tile_error(rt, why, sizeof why);
    if (lc.inferred == 0)
        return coord_fail_slide(c, rt, "no tile could be inferred (%u of %u tiles failed)%s",
                                lc.error, judged, why);
    if (lc.error > 0) {
        if ((double)lc.error > c->cfg->max_error_fraction * judged)
            return coord_fail_slide(c, rt, "%u of %u tiles failed%s", lc.error, judged, why);
        coord_rt_warn(rt, "%u tiles failed", lc.error);
    }
    coord_rt_phase(c, rt, PH_SCREEN);
    return 0;
}

/* Activates a slide in flight (new, or resumed after a restart). */
static int activate(gs_coordinator *c, const gs_slide_info *info)
{
    slide_rt **na = realloc(c->active, (c->n_active + 1) * sizeof *na);
    if (!na)
        return gs_error_set("coordinator: out of memory");
    c->active = na; /* even if the calloc fails: the old block may be gone */
    slide_rt *rt = calloc(1, sizeof *rt);
    if (!rt)
        return gs_error_set("coordinator: out of memory");
    c->active[c->n_active++] = rt;
    snprintf(rt->id, sizeof rt->id, "%s", info->slide_id);
    rt->attempt = info->attempt;
    rt->phase_start = coord_now_ms(c);
    if (info->state == GS_SLIDE_ACCEPTED) {
        coord_rt_phase(c, rt, PH_PLAN);
        return 0;
    }
    if (load_plan(c, rt) != 0) {
        /* The plan file is gone: plan again is impossible from this state, so fail loudly. */
        return coord_fail_slide(c, rt, "plan file unreadable after restart: %s", gs_error_get());
    }
    coord_plan_warnings(rt);
    int adopt = info->state == GS_SLIDE_INFERRING || info->state == GS_SLIDE_SCREENED ||
                (info->state == GS_SLIDE_BLUR_CHECKED && !info->out_of_focus);
    if (coord_make_ledger(c, rt, adopt) != 0)
        return -1;
    /* Which precision inferred the tiles recorded before the restart is not journalled per
     * tile: say so rather than let an empty list read as fp32. */
    gs_ledger_counts adopted;
    gs_ledger_counts_get(rt->ledger, &adopted);
    if (adopted.inferred > 0)
        snprintf(rt->precision, sizeof rt->precision, "unknown");
    switch (info->state) {
    case GS_SLIDE_PLANNED:
        if (info->unassessable_reason[0]) {
            rt->report_class = GS_VERDICT_UNASSESSABLE;
            snprintf(rt->reason, sizeof rt->reason, "%s", info->unassessable_reason);
            coord_rt_phase(c, rt, PH_REPORT);
        } else
            coord_rt_phase(c, rt, PH_BLUR);
        return 0;
    case GS_SLIDE_BLUR_CHECKED:
        if (info->out_of_focus) {
            rt->report_class = GS_VERDICT_UNASSESSABLE;
            snprintf(rt->reason, sizeof rt->reason, "%s", info->reason);
            coord_rt_phase(c, rt, PH_REPORT);
            return 0;
        }
        if (gs_slides_inferring(c->slides, rt->id, rt->attempt, gs_unix_ms(), NULL) < 0)
            return -1;
        coord_publish_pending(c);
        return start_inference(c, rt);
    case GS_SLIDE_INFERRING:
        return start_inference(c, rt);
    case GS_SLIDE_SCREENED:
        gs_ledger_begin_inference(rt->ledger);
        rt->report_class = info->verdict;
        rt->score = info->score;
        snprintf(rt->reason, sizeof rt->reason, "%s", info->reason);
        coord_rt_phase(c, rt, PH_REPORT);
        return 0;
    case GS_SLIDE_REPORTED:
        if (gs_slides_done(c->slides, rt->id, rt->attempt, gs_unix_ms(), NULL) < 0)
            return -1;
        coord_rt_drop(c, rt);
        coord_publish_pending(c);
        return 0;
    default:
        coord_rt_drop(c, rt);
        return 0;
    }
}

/* Fills active slots with the oldest slides in flight. */
static int activate_waiting(gs_coordinator *c)
{
    while (c->n_active < c->cfg->max_slides_in_flight) {
        gs_slide_info best, info;
        int found = 0;
        size_t n = gs_slides_count(c->slides);
        for (size_t i = 0; i < n; i++) {
            if (gs_slides_at(c->slides, i, &info) != 0)
                continue;
            if (info.state == GS_SLIDE_DONE || info.state == GS_SLIDE_FAILED)
                continue;
            if (coord_rt_find(c, info.slide_id))
                continue;
            if (!found || info.accepted_unix_ms < best.accepted_unix_ms ||
                (info.accepted_unix_ms == best.accepted_unix_ms &&
                 strcmp(info.slide_id, best.slide_id) < 0)) {
                best = info;
                found = 1;
            }
        }
        if (!found)
            return 0;
        /* best's strings are valid until the table changes: copy the id first. */
        char id[GS_SLIDE_ID_LEN + 1];
        snprintf(id, sizeof id, "%s", best.slide_id);
        if (gs_slides_get(c->slides, id, &best) != 0)
            return 0;
        if (activate(c, &best) != 0)
            return -1;
    }
    return 0;
}

int coord_drive(gs_coordinator *c)
{
    /* Degraded (the journal folder cannot be written): no slide is activated and none takes
     * a transition; tiles already planned go on being read and inferred, and each slide
     * waits, its state in memory, at the step that would journal (PROTOCOL.md §12). */
    if (!c->degraded && activate_waiting(c) != 0)
        return -1;
    /* Iterate over a copy: handlers may drop slides. */
    size_t n = c->n_active;
    slide_rt **list = malloc((n ? n : 1) * sizeof *list);
    if (!list)
        return gs_error_set("coordinator: out of memory");
    if (n)
        memcpy(list, c->active, n * sizeof *list);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        slide_rt *rt = list[i];
        int still = 0; /* compared by pointer: a dropped slide's memory is gone */
        for (size_t k = 0; k < c->n_active; k++)
            still |= c->active[k] == rt;
        if (!still)
            continue;
        if (rt->phase == PH_BLUR || rt->phase == PH_INFER) {
            rc = coord_dispatch_tiles(c, rt);
            if (rc != 0)
                break;
            if (rt->phase == PH_BLUR) {
                gs_ledger_counts lc;
                gs_ledger_counts_get(rt->ledger, &lc);
                size_t any_fresh = 0, nt = (size_t)rt->plan->n_tiles;
                uint32_t *tmp = malloc((nt ? nt : 1) * sizeof *tmp);
                if (!tmp) {
                    rc = gs_error_set("coordinator: out of memory");
                    break;
                }
                size_t nf = gs_ledger_unrequested(rt->ledger, tmp, nt);
                for (size_t k = 0; k < nf; k++)
                    if (rt->is_sample[tmp[k]])
                        any_fresh++;
                free(tmp);
                if (any_fresh == 0 && lc.blur_outstanding == 0 && !c->degraded)
                    rc = blur_settled(c, rt);
            } else if (gs_ledger_complete(rt->ledger) && !c->degraded)
                rc = tiles_settled(c, rt);
        } else if (!c->degraded)
            rc = coord_dispatch_job(c, rt);
    }
    free(list);
    return rc;
}
