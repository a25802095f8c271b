#include "daemon/service/coordinator.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/service/intake.h"
#include "daemon/service/journal.h"
#include "daemon/service/ledger.h"
#include "daemon/service/spool.h"
#include "ops/error.h"
#include "stages/runtime/log.h"

#define FEATURE_DIM 512
#define MAX_HAND 32
#define DRAIN_MAX 1000

typedef Gastroscreen__V1__WorkMessage WorkMessage;

enum { STAGE_N = 8 };

typedef struct {
    int used;
    gs_peer peer;
    char id[256];
    int stage;
    char inbox[512];
    uint32_t batch;
    uint32_t free_slots;
    int64_t last_heard, last_sent, last_used;
    gs_coordinator_stage_stats st;
    struct {
        char slide[GS_SLIDE_ID_LEN + 1];
        uint32_t attempt;
    } hand[MAX_HAND];
    size_t n_hand;
} worker;

typedef struct {
    uint64_t id;
    int kind; /* JobKind */
    char slide[GS_SLIDE_ID_LEN + 1];
    uint32_t attempt;
    int worker;
} job;

enum { PH_PLAN = 1, PH_BLUR, PH_INFER, PH_SCREEN, PH_REPORT, PH_FAIL_REPORT };

typedef struct {
    char id[GS_SLIDE_ID_LEN + 1];
    uint32_t attempt;
    int phase;
    Gastroscreen__V1__PlanResult *plan;
    gs_ledger *ledger;
    uint8_t *is_sample;
    int64_t *sent_ms; /* per tile: when it was last requested (clock_ms), -1 = never */
    uint32_t n_sample;
    gs_slide_method blur_method; /* of the sample's judged tiles (UNKNOWN until one is) */
    int blur_mixed;              /* warned once: the sample was judged by two methods */
    uint8_t *heat;               /* n_tiles x hs^2 */
    gs_spool_heat *heat_file;    /* the heatmaps survive a restart like outcomes */
    uint32_t hs;
    uint64_t job_id; /* the outstanding plan/screen/report job, 0 = none */
    int64_t job_deadline;
    uint32_t sends;
    int need_send;
    gs_verdict_class report_class;
    float score;
    char reason[1024];
    char **warn;
    size_t n_warn;
    int64_t phase_start;
    double stage_sec[STAGE_N];
} slide_rt;

struct gs_coordinator {
    gs_coordinator_options o;
    const gs_config *cfg;
    void *zctx;
    int own_ctx;
    gs_journal *journal;
    gs_slides *slides;
    gs_spool *spool;
    gs_intake *intake;
    gs_transport *work, *query, *events;
    Gastroscreen__V1__ModelProvenance model;
    char *model_strings[6];
    char coordinator_id[33];
    int64_t started_unix_ms;
    uint64_t published;
    atomic_int stop_flag;
    uint64_t next_job_id;
    worker *workers;
    size_t n_workers;
    job *jobs;
    size_t n_jobs, cap_jobs;
    slide_rt **active;
    size_t n_active;
    int64_t next_tick, next_retain;
    uint64_t rate_hist[11];
    int64_t rate_time[11];
    gs_coordinator_stats st; /* loop-owned counters */
    pthread_mutex_t snap_lock;
    gs_coordinator_stats snap;
};

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void *ud)
{
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(const gs_coordinator *c)
{
    return c->o.clock_ms(c->o.clock_ud);
}

static void logf_(const gs_coordinator *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int slide_id_ok(const char *s);

/* One log line (stages/runtime/log). Under journald it carries STAGE=coordinator and, for a line
 * about a slide
 * ("slide <id>..."), SLIDE_ID, so `journalctl SLIDE_ID=...` follows a slide. */
static void logf_(const gs_coordinator *c, const char *fmt, ...)
{
    if (c->o.quiet)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char id[GS_SLIDE_ID_LEN + 1] = "";
    if (strncmp(msg, "slide ", 6) == 0 && strlen(msg) >= 6 + GS_SLIDE_ID_LEN) {
        memcpy(id, msg + 6, GS_SLIDE_ID_LEN);
        if (!slide_id_ok(id))
            id[0] = 0;
    }
    gs_log_line("gastroscreend", "coordinator", id, GS_LOG_INFO, msg);
}

static int str_ok(const char *s, size_t max)
{
    return s && strnlen(s, max + 1) <= max;
}

static int slide_id_ok(const char *s)
{
    if (!s || strlen(s) != GS_SLIDE_ID_LEN)
        return 0;
    for (int i = 0; i < GS_SLIDE_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* A terminal slide's spool folder (plan, ledger file): removed, or for a poisoned slide moved
 * to spool/poison/ for an operator (PROTOCOL.md §12). Best effort: a leftover is harmless. */
static void spool_retire(const gs_coordinator *c, const char *slide, int poison)
{
    if (!poison)
        gs_spool_retire(c->spool, slide);
    else if (gs_spool_poison(c->spool, slide) != 0)
        logf_(c, "slide %s: cannot keep its spool in poison/: %s", slide, gs_error_get());
}

/* ------------------------------------------------------------------------------------------ */
/* publication */

static int send_event(gs_coordinator *c, Gastroscreen__V1__EventMessage *ev)
{
    ev->last_seq = gs_journal_last_seq(c->journal);
    /* PUB never blocks: a slow subscriber loses events and recovers them with a query. */
    if (gs_transport_send(c->events, NULL, &ev->base, GS_SEND_DONTWAIT) == 0) {
        c->st.events_published++;
        return 0;
    }
    return -1;
}

/* Histogram bounds in seconds: a slide takes from seconds (no tissue) to many minutes; a tile
 * round trip from milliseconds (blur) to the stall timeout. */
static const double slide_bounds[] = {1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600};
static const double tile_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,  5,     10,   30,  60,   120};
#define N_SLIDE_BOUNDS (sizeof slide_bounds / sizeof slide_bounds[0])
#define N_TILE_BOUNDS (sizeof tile_bounds / sizeof tile_bounds[0])

/* The slide's time from acceptance to its verdict. A slide unknown to the table (never the
 * case for a verdict just journalled) counts as 0 s so the histogram's count stays the number
 * of verdicts. */
static void observe_slide(gs_coordinator *c, const Gastroscreen__V1__Verdict *v)
{
    gs_slide_info info;
    double secs = 0;
    if (slide_id_ok(v->slide_id) && gs_slides_get(c->slides, v->slide_id, &info) == 0 &&
        info.accepted_unix_ms > 0 && v->decided_unix_ms > info.accepted_unix_ms)
        secs = (double)(v->decided_unix_ms - info.accepted_unix_ms) / 1000.0;
    gs_metrics_hist_observe(&c->st.slide_seconds, slide_bounds, N_SLIDE_BOUNDS, secs);
}

/* Publishes every journalled record not yet published, oldest first. */
static void publish_pending(gs_coordinator *c)
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
                    int poison =
                        cls == GS_VERDICT_FAILED && strncmp(ev->verdict->reason, "poison", 6) == 0;
                    if (cls >= 0 && cls < 5) {
                        c->st.verdicts[cls]++;
                        observe_slide(c, ev->verdict);
                    }
                    c->st.failed_poison += poison;
                    if (slide_id_ok(ev->verdict->slide_id))
                        spool_retire(c, ev->verdict->slide_id, poison);
                } else if (ev->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED &&
                           ev->state_changed->to ==
                               GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE &&
                           slide_id_ok(ev->state_changed->slide_id))
                    spool_retire(c, ev->state_changed->slide_id, 0); /* folded */
                send_event(c, ev);
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

static slide_rt *rt_find(gs_coordinator *c, const char *id)
{
    for (size_t i = 0; i < c->n_active; i++)
        if (strcmp(c->active[i]->id, id) == 0)
            return c->active[i];
    return NULL;
}

static void rt_drop(gs_coordinator *c, slide_rt *rt)
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

static void rt_warn(slide_rt *rt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rt_warn(slide_rt *rt, const char *fmt, ...)
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

static int stage_of_phase(int phase)
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

static void rt_phase(gs_coordinator *c, slide_rt *rt, int phase)
{
    int64_t now = now_ms(c);
    if (rt->phase)
        rt->stage_sec[stage_of_phase(rt->phase)] += (double)(now - rt->phase_start) / 1000.0;
    rt->phase = phase;
    rt->phase_start = now;
    rt->job_id = 0;
    rt->sends = 0;
    rt->need_send =
        (phase == PH_PLAN || phase == PH_SCREEN || phase == PH_REPORT || phase == PH_FAIL_REPORT);
}

static void tile_counts(const slide_rt *rt, gs_slide_tiles *t)
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

static int fail_slide(gs_coordinator *c, slide_rt *rt, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Journals FAILED (with whatever report exists) and publishes it. */
static int finalize_fail(gs_coordinator *c, slide_rt *rt, const char *json, const char *png,
                         const char *geo)
{
    gs_slide_report rep = {.report_json = json,
                           .heatmap_png = png,
                           .regions_geojson = geo,
                           .warnings = (const char *const *)rt->warn,
                           .n_warnings = rt->n_warn};
    tile_counts(rt, &rep.tiles);
    if (rt->ledger)
        gs_ledger_sync(rt->ledger);
    int r = gs_slides_fail(c->slides, rt->id, rt->attempt, rt->reason, &rep, wall_ms(), NULL);
    logf_(c, "slide %s failed: %s", rt->id, rt->reason);
    rt_drop(c, rt);
    publish_pending(c);
    return r < 0 ? -1 : 0;
}

static int any_worker(const gs_coordinator *c, int stage)
{
    for (size_t i = 0; i < c->n_workers; i++)
        if (c->workers[i].used && c->workers[i].stage == stage)
            return 1;
    return 0;
}

/* The slide fails: a FAILED ReportJob first (once) so report.json says why, then FAILED. */
static int fail_slide(gs_coordinator *c, slide_rt *rt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rt->reason, sizeof rt->reason, fmt, ap);
    va_end(ap);
    if (!any_worker(c, GASTROSCREEN__V1__STAGE__STAGE_REPORTER))
        return finalize_fail(c, rt, NULL, NULL, NULL);
    rt->report_class = GS_VERDICT_FAILED;
    rt_phase(c, rt, PH_FAIL_REPORT);
    return 0;
}

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
        logf_(c, "slide %s: %s (heatmaps not saved)", rt->id, gs_error_get());
}

static void heat_file_append(slide_rt *rt, uint32_t idx)
{
    if (!rt->heat_file)
        return;
    /* A short write would misalign the records after it: stop saving. */
    if (gs_spool_heat_append(rt->heat_file, idx, rt->heat + (size_t)idx * rt->hs * rt->hs) != 0)
        gs_spool_heat_destroy(&rt->heat_file);
}

/* A ledger for the plan: background tiles set, the sample marked; adopt = take the outcomes
 * of the ledger file (restart in INFERRING), else start the file afresh. */
static int make_ledger(gs_coordinator *c, slide_rt *rt, int adopt)
{
    const gs_config *cfg = c->cfg;
    uint32_t n = (uint32_t)rt->plan->n_tiles;
    gs_ledger_options lo;
    gs_ledger_options_default(&lo);
    lo.tile_max_requests = cfg->tile_max_requests;
    lo.stall_timeout_ms = cfg->tile_stall_timeout_ms;
    lo.loss_grace_ms = cfg->loss_grace_ms;
    lo.top_k = cfg->top_k;
    lo.feature_dim = FEATURE_DIM;
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
            logf_(c, "slide %s: %s (inferring it again)", rt->id, gs_error_get());
        else if (adopted || dropped)
            logf_(c, "slide %s: adopted %u tile outcomes from the ledger file (%u dropped)", rt->id,
                  adopted, dropped);
    } else
        unlink(path);
    if (gs_ledger_attach_file(rt->ledger, path) != 0)
        logf_(c, "slide %s: %s (outcomes not saved)", rt->id, gs_error_get());
    heat_file_open(c, rt, adopt);
    return 0;
}

static void plan_warnings(slide_rt *rt)
{
    for (size_t i = 0; rt->plan && i < rt->plan->n_warnings; i++)
        rt_warn(rt, "%s", rt->plan->warnings[i]);
}

static int start_inference(gs_coordinator *c, slide_rt *rt)
{
    gs_ledger_begin_inference(rt->ledger);
    rt_phase(c, rt, PH_INFER);
    return 0;
}

/* The sample is settled: decide the blur check (PROTOCOL.md §6). */
static int blur_settled(gs_coordinator *c, slide_rt *rt)
{
    gs_ledger_counts lc;
    gs_ledger_counts_get(rt->ledger, &lc);
    uint32_t min_valid =
        c->cfg->blur_min_valid < rt->n_sample ? c->cfg->blur_min_valid : rt->n_sample;
    if (lc.blur_judged < min_valid)
        return fail_slide(c, rt, "blur check: %u of %u sample tiles readable", lc.blur_judged,
                          rt->n_sample);
    float frac = lc.blur_judged ? (float)lc.blur_blurry / (float)lc.blur_judged : 0.f;
    int out = frac > (float)c->cfg->blur_slide_fraction;
    char reason[256];
    snprintf(reason, sizeof reason, "out of focus: %u of %u sample tiles blurry", lc.blur_blurry,
             lc.blur_judged);
    if (gs_slides_blur_checked(c->slides, rt->id, rt->attempt, frac, rt->blur_method, out,
                               out ? reason : "", wall_ms(), NULL) < 0)
        return -1;
    publish_pending(c);
    if (out) {
        rt->report_class = GS_VERDICT_UNASSESSABLE;
        snprintf(rt->reason, sizeof rt->reason, "%s", reason);
        rt_phase(c, rt, PH_REPORT);
        return 0;
    }
    if (gs_slides_inferring(c->slides, rt->id, rt->attempt, wall_ms(), NULL) < 0)
        return -1;
    publish_pending(c);
    return start_inference(c, rt);
}

/* Every tile has an outcome: the top-k go to the screener, or the slide fails. */
static int tiles_settled(gs_coordinator *c, slide_rt *rt)
{
    gs_ledger_counts lc;
    gs_ledger_counts_get(rt->ledger, &lc);
    gs_ledger_sync(rt->ledger);
    uint32_t judged = lc.planned - lc.background;
    if (lc.inferred == 0)
        return fail_slide(c, rt, "no tile could be inferred (%u of %u tiles failed)", lc.error,
                          judged);
    if (lc.error > 0) {
        if ((double)lc.error > c->cfg->max_error_fraction * judged)
            return fail_slide(c, rt, "%u of %u tiles failed", lc.error, judged);
        rt_warn(rt, "%u tiles failed", lc.error);
    }
    rt_phase(c, rt, PH_SCREEN);
    return 0;
}

/* Activates a slide in flight (new, or resumed after a restart). */
static int activate(gs_coordinator *c, const gs_slide_info *info)
{
    slide_rt *rt = calloc(1, sizeof *rt);
    slide_rt **na = realloc(c->active, (c->n_active + 1) * sizeof *na);
    if (!rt || !na) {
        free(rt);
        return gs_error_set("coordinator: out of memory");
    }
    c->active = na;
    c->active[c->n_active++] = rt;
    snprintf(rt->id, sizeof rt->id, "%s", info->slide_id);
    rt->attempt = info->attempt;
    rt->phase_start = now_ms(c);
    if (info->state == GS_SLIDE_ACCEPTED) {
        rt_phase(c, rt, PH_PLAN);
        return 0;
    }
    if (load_plan(c, rt) != 0) {
        /* The plan file is gone: plan again is impossible from this state, so fail loudly. */
        return fail_slide(c, rt, "plan file unreadable after restart: %s", gs_error_get());
    }
    plan_warnings(rt);
    int adopt = info->state == GS_SLIDE_INFERRING || info->state == GS_SLIDE_SCREENED ||
                (info->state == GS_SLIDE_BLUR_CHECKED && !info->out_of_focus);
    if (make_ledger(c, rt, adopt) != 0)
        return -1;
    switch (info->state) {
    case GS_SLIDE_PLANNED:
        if (info->unassessable_reason[0]) {
            rt->report_class = GS_VERDICT_UNASSESSABLE;
            snprintf(rt->reason, sizeof rt->reason, "%s", info->unassessable_reason);
            rt_phase(c, rt, PH_REPORT);
        } else
            rt_phase(c, rt, PH_BLUR);
        return 0;
    case GS_SLIDE_BLUR_CHECKED:
        if (info->out_of_focus) {
            rt->report_class = GS_VERDICT_UNASSESSABLE;
            snprintf(rt->reason, sizeof rt->reason, "%s", info->reason);
            rt_phase(c, rt, PH_REPORT);
            return 0;
        }
        if (gs_slides_inferring(c->slides, rt->id, rt->attempt, wall_ms(), NULL) < 0)
            return -1;
        publish_pending(c);
        return start_inference(c, rt);
    case GS_SLIDE_INFERRING:
        return start_inference(c, rt);
    case GS_SLIDE_SCREENED:
        gs_ledger_begin_inference(rt->ledger);
        rt->report_class = info->verdict;
        rt->score = info->score;
        snprintf(rt->reason, sizeof rt->reason, "%s", info->reason);
        rt_phase(c, rt, PH_REPORT);
        return 0;
    case GS_SLIDE_REPORTED:
        if (gs_slides_done(c->slides, rt->id, rt->attempt, wall_ms(), NULL) < 0)
            return -1;
        rt_drop(c, rt);
        publish_pending(c);
        return 0;
    default:
        rt_drop(c, rt);
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
            if (rt_find(c, info.slide_id))
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

/* ------------------------------------------------------------------------------------------ */
/* workers and sending */

static worker *worker_by_peer(gs_coordinator *c, const gs_peer *p)
{
    for (size_t i = 0; i < c->n_workers; i++)
        if (c->workers[i].used && c->workers[i].peer.len == p->len &&
            memcmp(c->workers[i].peer.id, p->id, p->len) == 0)
            return &c->workers[i];
    return NULL;
}

static int send_work(gs_coordinator *c, worker *w, WorkMessage *m)
{
    m->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    if (gs_transport_send(c->work, &w->peer, &m->base, GS_SEND_DONTWAIT) != 0)
        return -1;
    w->last_sent = now_ms(c);
    return 0;
}

/* The worker of the stage with a free slot, least recently used first. */
static worker *pick_worker(gs_coordinator *c, int stage)
{
    worker *best = NULL;
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *w = &c->workers[i];
        if (!w->used || w->stage != stage || w->free_slots == 0)
            continue;
        if (!best || w->last_used < best->last_used)
            best = w;
    }
    return best;
}

static int add_job(gs_coordinator *c, uint64_t id, int kind, const char *slide, uint32_t attempt,
                   worker *w)
{
    if (c->n_jobs == c->cap_jobs) {
        size_t cap = c->cap_jobs ? c->cap_jobs * 2 : 64;
        job *nj = realloc(c->jobs, cap * sizeof *nj);
        if (!nj)
            return gs_error_set("coordinator: out of memory");
        c->jobs = nj;
        c->cap_jobs = cap;
    }
    job *j = &c->jobs[c->n_jobs++];
    j->id = id;
    j->kind = kind;
    snprintf(j->slide, sizeof j->slide, "%s", slide);
    j->attempt = attempt;
    j->worker = (int)(w - c->workers);
    return 0;
}

static void remove_job(gs_coordinator *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_jobs; i++)
        if (c->jobs[i].id == id) {
            c->jobs[i] = c->jobs[--c->n_jobs];
            return;
        }
}

static int job_sent(gs_coordinator *c, worker *w, int kind, slide_rt *rt, uint64_t id)
{
    w->free_slots--;
    w->last_used = now_ms(c);
    c->st.jobs_sent++;
    return add_job(c, id, kind, rt->id, rt->attempt, w);
}

/* Collects the tile inboxes of a stage's workers into eps (pointers into the table). */
static size_t inboxes(gs_coordinator *c, int stage, char **eps, size_t max, uint32_t *batch_sum)
{
    size_t n = 0;
    uint32_t b = 0;
    for (size_t i = 0; i < c->n_workers && n < max; i++)
        if (c->workers[i].used && c->workers[i].stage == stage && c->workers[i].inbox[0]) {
            eps[n++] = c->workers[i].inbox;
            b += c->workers[i].batch ? c->workers[i].batch : 1;
        }
    if (batch_sum)
        *batch_sum = b;
    return n;
}

/* Sends TileJobs for the slide's due and unrequested tiles, within its window. */
static int dispatch_tiles(gs_coordinator *c, slide_rt *rt)
{
    int blur = rt->phase == PH_BLUR;
    int sink_stage =
        blur ? GASTROSCREEN__V1__STAGE__STAGE_BLUR : GASTROSCREEN__V1__STAGE__STAGE_INFER;
    char *eps[64];
    uint32_t batch_sum = 0;
    size_t n_eps = inboxes(c, sink_stage, eps, 64, &batch_sum);
    int64_t now = now_ms(c);
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
        worker *w = pick_worker(c, GASTROSCREEN__V1__STAGE__STAGE_TILER);
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
        tj.slide_id = rt->id;
        tj.attempt = rt->attempt;
        tj.job_id = ++c->next_job_id;
        tj.path = (char *)info.path;
        tj.grid = rt->plan->grid;
        tj.n_tiles = k;
        tj.tiles = prefs;
        tj.n_sink_endpoints = n_eps;
        tj.sink_endpoints = eps;
        tj.request = request;
        if (blur) {
            bj.focus_threshold = (float)c->cfg->focus_threshold;
            bj.model_sha256 = c->model.sha256;
            tj.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_BLUR;
            tj.blur = &bj;
        } else {
            ij.heatmap_size = c->cfg->heatmap_size;
            ij.model_sha256 = c->model.sha256;
            tj.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_INFER;
            tj.infer = &ij;
        }
        WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB;
        m.tile_job = &tj;
        if (send_work(c, w, &m) != 0) {
            /* Not sent: the worker is gone or full; its slot is not trusted until it speaks. */
            w->free_slots = 0;
            continue;
        }
        if (job_sent(c, w, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_TILES, rt, tj.job_id) != 0) {
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

static gs_slide_method plan_method(const Gastroscreen__V1__PlanResult *p)
{
    return method_of(p->method);
}

static void fill_provenance(const gs_coordinator *c, Gastroscreen__V1__ModelProvenance *mp)
{
    *mp = c->model;
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
    fill_provenance(c, &b->mp);
    gs_slide_tiles t;
    tile_counts(rt, &t);
    b->tc.planned = t.planned;
    b->tc.inferred = t.inferred;
    b->tc.background = t.background;
    b->tc.blurry = t.blurry;
    b->tc.error = t.error;
    b->tc.rerequested = t.rerequested;
    b->v.slide_id = rt->id;
    b->v.attempt = rt->attempt;
    b->v.path = (char *)info->path;
    b->v.verdict_class = (Gastroscreen__V1__VerdictClass)rt->report_class;
    b->v.score = rt->report_class == GS_VERDICT_NEGATIVE || rt->report_class == GS_VERDICT_POSITIVE
                     ? rt->score
                     : 0.f;
    b->v.threshold = (float)c->cfg->threshold;
    b->v.reason = rt->reason;
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
        fm = plan_method(rt->plan);
    b->v.foreground_method = (Gastroscreen__V1__Method)fm;
    /* A slide failing in its blur check has judged tiles but no BLUR_CHECKED record. */
    b->v.blur_method =
        (Gastroscreen__V1__Method)(info->blur_method != GS_METHOD_UNKNOWN ? info->blur_method
                                                                          : rt->blur_method);
    b->v.decided_unix_ms = wall_ms();
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
    int r = send_work(c, w, &m);
    free(sums);
    free(psums);
    if (r != 0)
        return 1;
    rt->job_id = rj.job_id;
    return job_sent(c, w, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_REPORT, rt, rj.job_id);
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
    pj.target_mpp = c->cfg->target_mpp;
    pj.tile_size = c->cfg->tile_size;
    pj.stride = c->cfg->stride;
    pj.default_mpp = c->cfg->default_mpp;
    pj.min_tissue_fraction = (float)c->cfg->min_tissue_fraction;
    pj.thumbnail_size = c->cfg->thumbnail_size;
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB;
    m.plan_job = &pj;
    if (send_work(c, w, &m) != 0)
        return 1;
    rt->job_id = pj.job_id;
    return job_sent(c, w, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_PLAN, rt, pj.job_id);
}

static int send_screen(gs_coordinator *c, slide_rt *rt, worker *w)
{
    uint32_t k_max = c->cfg->top_k;
    uint32_t *idx = malloc(k_max * sizeof *idx);
    float *score = malloc(k_max * sizeof *score);
    float *feat = malloc((size_t)k_max * FEATURE_DIM * sizeof *feat);
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
    st.feature_dim = FEATURE_DIM;
    st.n_features = (size_t)k * FEATURE_DIM;
    st.features = feat;
    st.n_tile_indices = k;
    st.tile_indices = idx;
    st.n_tile_scores = k;
    st.tile_scores = score;
    st.model_sha256 = c->model.sha256;
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK;
    m.screen_task = &st;
    int r = send_work(c, w, &m);
    free(idx);
    free(score);
    free(feat);
    if (r != 0)
        return 1;
    rt->job_id = st.job_id;
    return job_sent(c, w, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_SCREEN, rt, st.job_id);
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

/* Sends (or re-sends) the slide's plan / screen / report job when one is needed. */
static int dispatch_job(gs_coordinator *c, slide_rt *rt)
{
    int64_t now = now_ms(c);
    if (rt->job_id && now >= rt->job_deadline) {
        rt->need_send = 1;
        logf_(c, "slide %s: %s job %llu past its deadline", rt->id, phase_job_name(rt->phase),
              (unsigned long long)rt->job_id);
        remove_job(c, rt->job_id);
        rt->job_id = 0;
    }
    if (!rt->need_send)
        return 0;
    uint32_t max_sends = rt->phase == PH_FAIL_REPORT ? 1 : c->cfg->job_max_sends;
    if (rt->sends >= max_sends) {
        if (rt->phase == PH_FAIL_REPORT) {
            rt_warn(rt, "report: no result from the reporter");
            return finalize_fail(c, rt, NULL, NULL, NULL);
        }
        return fail_slide(c, rt, "%s: no result after %u sends", phase_job_name(rt->phase),
                          rt->sends);
    }
    int stage = stage_of_phase(rt->phase);
    worker *w = pick_worker(c, stage);
    if (!w)
        return 0;
    int r;
    int64_t timeout;
    switch (rt->phase) {
    case PH_PLAN:
        r = send_plan(c, rt, w);
        timeout = c->cfg->plan_timeout_ms;
        break;
    case PH_SCREEN:
        r = send_screen(c, rt, w);
        timeout = c->cfg->screen_timeout_ms;
        break;
    default:
        r = send_report(c, rt, w);
        timeout = c->cfg->report_timeout_ms;
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

static int drive(gs_coordinator *c)
{
    if (activate_waiting(c) != 0)
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
            rc = dispatch_tiles(c, rt);
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
                if (any_fresh == 0 && lc.blur_outstanding == 0)
                    rc = blur_settled(c, rt);
            } else if (gs_ledger_complete(rt->ledger))
                rc = tiles_settled(c, rt);
        } else
            rc = dispatch_job(c, rt);
    }
    free(list);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* results */

static void count_malformed(gs_coordinator *c, const char *what, const gs_peer *p)
{
    (void)p;
    c->st.malformed[GS_COORD_SOCKET_WORK]++;
    logf_(c, "work: malformed %s dropped", what);
}

/* The fence: 0 and *prt for a result of the current attempt of an active slide; 1 stale. */
static int fence(gs_coordinator *c, const char *slide, uint32_t attempt, slide_rt **prt)
{
    if (gs_slides_fence(c->slides, slide, attempt) != 0) {
        c->st.stale++;
        return 1;
    }
    slide_rt *rt = rt_find(c, slide);
    if (!rt || rt->attempt != attempt) {
        c->st.stale++;
        return 1;
    }
    *prt = rt;
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
        rt_warn(rt, "blur check: the sample was judged by both the network and the classical "
                    "method (the report names the first)");
    }
}

static int on_plan_result(gs_coordinator *c, const Gastroscreen__V1__PlanResult *p)
{
    slide_rt *rt;
    if (!slide_id_ok(p->slide_id) || p->attempt < 1 || !str_ok(p->error, 1024) ||
        !str_ok(p->unassessable_reason, 1024)) {
        count_malformed(c, "PlanResult", NULL);
        return 0;
    }
    if (fence(c, p->slide_id, p->attempt, &rt) != 0)
        return 0;
    if (rt->phase != PH_PLAN) {
        c->st.duplicates++;
        return 0;
    }
    remove_job(c, p->job_id);
    if (p->error[0]) {
        rt->job_id = 0;
        return fail_slide(c, rt, "plan: %s", p->error);
    }
    int ok = p->grid && p->facts && p->grid->tile_size > 0 && str_ok(p->facts->quickhash, 1024);
    for (size_t i = 0; ok && i < p->n_tiles; i++)
        ok = isfinite(p->tiles[i]->tissue_fraction) && p->tiles[i]->tissue_fraction >= 0.f &&
             p->tiles[i]->tissue_fraction <= 1.f;
    for (size_t i = 0; ok && i < p->n_warnings; i++)
        ok = str_ok(p->warnings[i], 1024);
    if (!ok) {
        count_malformed(c, "PlanResult (plan incomplete)", NULL);
        return 0;
    }
    /* The plan goes to the spool before PLANNED is journalled: the record references it. */
    if (gs_spool_plan_write(c->spool, rt->id, p, &rt->plan) != 0)
        return -1;
    int folded = 0;
    if (gs_slides_planned(c->slides, rt->id, rt->attempt, p->facts->quickhash, plan_method(p),
                          p->unassessable_reason, wall_ms(), &folded, NULL) < 0)
        return -1;
    publish_pending(c);
    if (folded) {
        rt_drop(c, rt);
        return 0;
    }
    plan_warnings(rt);
    if (make_ledger(c, rt, 0) != 0)
        return -1;
    if (p->unassessable_reason[0]) {
        rt->report_class = GS_VERDICT_UNASSESSABLE;
        snprintf(rt->reason, sizeof rt->reason, "%s", p->unassessable_reason);
        rt_phase(c, rt, PH_REPORT);
    } else
        rt_phase(c, rt, PH_BLUR);
    return 0;
}

size_t gs_coordinator_slide_bounds(const double **bounds)
{
    *bounds = slide_bounds;
    return N_SLIDE_BOUNDS;
}

size_t gs_coordinator_tile_bounds(const double **bounds)
{
    *bounds = tile_bounds;
    return N_TILE_BOUNDS;
}

/* A tile's round trip (request to the result that recorded its outcome or judgement); which:
 * 0 blur, 1 infer. Results that record nothing (duplicates, stale, errors) are left out. */
static void observe_tile(gs_coordinator *c, const slide_rt *rt, uint32_t index, int which, int r,
                         int64_t now)
{
    if (r != GS_LEDGER_RECORDED || !rt->sent_ms || rt->sent_ms[index] < 0)
        return;
    gs_metrics_hist_observe(&c->st.tile_seconds[which], tile_bounds, N_TILE_BOUNDS,
                            (double)(now - rt->sent_ms[index]) / 1000.0);
}

static void note_tile(gs_coordinator *c, int r)
{
    if (r == GS_LEDGER_RECORDED)
        c->st.tiles_recorded++;
    else if (r == GS_LEDGER_DUPLICATE)
        c->st.duplicates++;
    else if (r == GS_LEDGER_STALE)
        c->st.stale++;
}

static void on_tile_result(gs_coordinator *c, const Gastroscreen__V1__TileResult *t)
{
    slide_rt *rt;
    if (!slide_id_ok(t->slide_id) || t->attempt < 1 || !str_ok(t->error, 1024)) {
        count_malformed(c, "TileResult", NULL);
        return;
    }
    if (fence(c, t->slide_id, t->attempt, &rt) != 0)
        return;
    if (!rt->ledger || t->tile_index >= gs_ledger_tile_count(rt->ledger)) {
        count_malformed(c, rt->ledger ? "TileResult (index)" : "TileResult (no plan yet)", NULL);
        return;
    }
    int64_t now = now_ms(c);
    if (t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR) {
        if (rt->phase != PH_BLUR && rt->phase != PH_INFER) {
            c->st.duplicates++;
            return;
        }
        if (rt->phase == PH_BLUR && !rt->is_sample[t->tile_index]) {
            count_malformed(c, "TileResult (not a sample tile)", NULL);
            return;
        }
        note_tile(c, gs_ledger_failed_request(rt->ledger, t->attempt, t->tile_index,
                                              t->error[0] ? t->error : "tile error", now));
        return;
    }
    if (rt->phase == PH_BLUR || rt->phase == PH_PLAN) {
        count_malformed(c, "TileResult (before inference)", NULL);
        return;
    }
    if (rt->phase != PH_INFER) {
        c->st.duplicates++;
        return;
    }
    if (t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED) {
        if (t->n_feature != FEATURE_DIM || !isfinite(t->score) || t->score < 0.f ||
            t->score > 1.f || t->heatmap_size != rt->hs ||
            t->heatmap.len != (size_t)rt->hs * rt->hs) {
            count_malformed(c, "TileResult (feature, score or heatmap)", NULL);
            return;
        }
        for (size_t i = 0; i < FEATURE_DIM; i++)
            if (!isfinite(t->feature[i])) {
                count_malformed(c, "TileResult (feature)", NULL);
                return;
            }
    } else if (t->outcome != GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND) {
        count_malformed(c, "TileResult (outcome)", NULL);
        return;
    }
    int r = gs_ledger_record(rt->ledger, t->attempt, t->tile_index, (gs_tile_outcome)t->outcome,
                             t->score, t->feature, now);
    if (r < 0) {
        count_malformed(c, "TileResult", NULL);
        return;
    }
    if (r == GS_LEDGER_RECORDED &&
        t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED) {
        memcpy(rt->heat + (size_t)t->tile_index * rt->hs * rt->hs, t->heatmap.data, t->heatmap.len);
        heat_file_append(rt, t->tile_index);
    }
    observe_tile(c, rt, t->tile_index, 1, r, now);
    note_tile(c, r);
}

static void on_blur_result(gs_coordinator *c, const Gastroscreen__V1__BlurResult *b)
{
    slide_rt *rt;
    if (!slide_id_ok(b->slide_id) || b->attempt < 1 || !str_ok(b->error, 1024)) {
        count_malformed(c, "BlurResult", NULL);
        return;
    }
    if (fence(c, b->slide_id, b->attempt, &rt) != 0)
        return;
    if (rt->phase != PH_BLUR) {
        if (rt->phase == PH_PLAN)
            count_malformed(c, "BlurResult (no plan yet)", NULL);
        else
            c->st.duplicates++;
        return;
    }
    if (b->tile_index >= gs_ledger_tile_count(rt->ledger) || !rt->is_sample[b->tile_index]) {
        count_malformed(c, "BlurResult (not a sample tile)", NULL);
        return;
    }
    int64_t now = now_ms(c);
    int r = b->error[0]
                ? gs_ledger_failed_request(rt->ledger, b->attempt, b->tile_index, b->error, now)
                : gs_ledger_judge_blur(rt->ledger, b->attempt, b->tile_index, b->blurry, now);
    if (r < 0)
        count_malformed(c, "BlurResult", NULL);
    else {
        if (!b->error[0]) {
            note_blur_method(rt, b->method);
            observe_tile(c, rt, b->tile_index, 0, r, now);
        }
        note_tile(c, r);
    }
}

static int on_screen_result(gs_coordinator *c, const Gastroscreen__V1__ScreenResult *s)
{
    slide_rt *rt;
    if (!slide_id_ok(s->slide_id) || s->attempt < 1 || !str_ok(s->error, 1024)) {
        count_malformed(c, "ScreenResult", NULL);
        return 0;
    }
    if (fence(c, s->slide_id, s->attempt, &rt) != 0)
        return 0;
    if (rt->phase != PH_SCREEN) {
        c->st.duplicates++;
        return 0;
    }
    if (s->error[0]) {
        remove_job(c, s->job_id);
        logf_(c, "slide %s: screener error: %s", rt->id, s->error);
        rt->job_id = 0;
        rt->need_send = 1;
        return 0;
    }
    if (!isfinite(s->score) || s->score < 0.f || s->score > 1.f) {
        count_malformed(c, "ScreenResult (score)", NULL);
        return 0;
    }
    remove_job(c, s->job_id);
    if (gs_slides_screened(c->slides, rt->id, rt->attempt, s->score, wall_ms(), NULL) < 0)
        return -1;
    publish_pending(c);
    gs_slide_info info;
    if (gs_slides_get(c->slides, rt->id, &info) != 0)
        return -1;
    rt->report_class = info.verdict;
    rt->score = s->score;
    snprintf(rt->reason, sizeof rt->reason, "%s", info.reason);
    rt_phase(c, rt, PH_REPORT);
    return 0;
}

static int on_report_result(gs_coordinator *c, const Gastroscreen__V1__ReportResult *r)
{
    slide_rt *rt;
    if (!slide_id_ok(r->slide_id) || r->attempt < 1 || !str_ok(r->error, 1024) ||
        (r->paths &&
         (!str_ok(r->paths->report_json, 4096) || !str_ok(r->paths->heatmap_png, 4096) ||
          !str_ok(r->paths->regions_geojson, 4096)))) {
        count_malformed(c, "ReportResult", NULL);
        return 0;
    }
    if (fence(c, r->slide_id, r->attempt, &rt) != 0)
        return 0;
    if (rt->phase != PH_REPORT && rt->phase != PH_FAIL_REPORT) {
        c->st.duplicates++;
        return 0;
    }
    remove_job(c, r->job_id);
    const char *json = r->paths ? r->paths->report_json : NULL;
    const char *png = r->paths ? r->paths->heatmap_png : NULL;
    const char *geo = r->paths ? r->paths->regions_geojson : NULL;
    if (rt->phase == PH_FAIL_REPORT) {
        if (r->error[0])
            rt_warn(rt, "report: %s", r->error);
        return finalize_fail(c, rt, json, png, geo);
    }
    if (r->error[0]) {
        rt->job_id = 0;
        return fail_slide(c, rt, "report: %s", r->error);
    }
    rt->stage_sec[GASTROSCREEN__V1__STAGE__STAGE_REPORTER] +=
        (double)(now_ms(c) - rt->phase_start) / 1000.0;
    gs_slide_report rep = {.report_json = json,
                           .heatmap_png = png,
                           .regions_geojson = geo,
                           .warnings = (const char *const *)rt->warn,
                           .n_warnings = rt->n_warn};
    tile_counts(rt, &rep.tiles);
    if (gs_slides_reported(c->slides, rt->id, rt->attempt, &rep, wall_ms(), NULL) < 0)
        return -1;
    /* DONE (the verdict) is journalled and fsynced before it is published. */
    if (gs_slides_done(c->slides, rt->id, rt->attempt, wall_ms(), NULL) < 0)
        return -1;
    logf_(c, "slide %s: %s", rt->id, rt->reason);
    rt_drop(c, rt);
    publish_pending(c);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* worker life cycle */

static void send_welcome(gs_coordinator *c, const gs_peer *to, int accepted, const char *reason)
{
    Gastroscreen__V1__WorkerWelcome w = GASTROSCREEN__V1__WORKER_WELCOME__INIT;
    w.accepted = accepted;
    w.reason = (char *)reason;
    w.heartbeat_ms = c->cfg->heartbeat_ms;
    w.liveness = c->cfg->liveness;
    w.coordinator_id = c->coordinator_id;
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME;
    m.welcome = &w;
    (void)gs_transport_send(c->work, to, &m.base, GS_SEND_DONTWAIT);
}

static void send_coord_heartbeat(gs_coordinator *c, const gs_peer *to)
{
    Gastroscreen__V1__CoordinatorHeartbeat h = GASTROSCREEN__V1__COORDINATOR_HEARTBEAT__INIT;
    h.coordinator_id = c->coordinator_id;
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT;
    m.coordinator_heartbeat = &h;
    (void)gs_transport_send(c->work, to, &m.base, GS_SEND_DONTWAIT);
}

/* The worker is gone (lost = 1: a crash mark for its slides) or said goodbye / hello again.
 * Its jobs are re-sent; tiles it may have held are re-requested after loss_grace. */
static int worker_gone(gs_coordinator *c, worker *w, int lost)
{
    int64_t now = now_ms(c);
    int idx = (int)(w - c->workers);
    char marks[MAX_HAND + 64][GS_SLIDE_ID_LEN + 1];
    uint32_t mark_att[MAX_HAND + 64];
    size_t n_marks = 0;
    for (size_t i = 0; i < c->n_jobs;) {
        job *j = &c->jobs[i];
        if (j->worker != idx) {
            i++;
            continue;
        }
        slide_rt *rt = rt_find(c, j->slide);
        if (rt && rt->job_id == j->id) {
            rt->job_id = 0;
            rt->need_send = 1;
        }
        if (n_marks < MAX_HAND + 64) {
            snprintf(marks[n_marks], sizeof marks[0], "%s", j->slide);
            mark_att[n_marks++] = j->attempt;
        }
        c->jobs[i] = c->jobs[--c->n_jobs];
    }
    for (size_t i = 0; i < w->n_hand && n_marks < MAX_HAND + 64; i++) {
        snprintf(marks[n_marks], sizeof marks[0], "%s", w->hand[i].slide);
        mark_att[n_marks++] = w->hand[i].attempt;
    }
    if (w->stage == GASTROSCREEN__V1__STAGE__STAGE_TILER ||
        w->stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
        w->stage == GASTROSCREEN__V1__STAGE__STAGE_INFER)
        for (size_t i = 0; i < c->n_active; i++)
            if (c->active[i]->ledger)
                gs_ledger_worker_lost(c->active[i]->ledger, now);
    w->used = 0;
    if (!lost)
        return 0;
    c->st.workers_lost++;
    logf_(c, "worker %s lost", w->id);
    for (size_t i = 0; i < n_marks; i++) {
        int dup = 0;
        for (size_t k = 0; k < i; k++)
            if (strcmp(marks[k], marks[i]) == 0)
                dup = 1;
        if (dup)
            continue;
        uint64_t seq = 0;
        int r = gs_slides_crash_mark(c->slides, marks[i], mark_att[i], wall_ms(), &seq);
        if (r < 0)
            return -1;
        if (r == 0 && seq) {
            slide_rt *rt = rt_find(c, marks[i]);
            if (rt)
                rt_drop(c, rt);
            publish_pending(c);
        }
    }
    return 0;
}

static void on_hello(gs_coordinator *c, const gs_peer *from, const Gastroscreen__V1__WorkerHello *h)
{
    if (!str_ok(h->worker_id, 255) || !h->worker_id[0] || !str_ok(h->tile_inbox, 511) ||
        !str_ok(h->host, 1024) || !str_ok(h->version, 1024)) {
        count_malformed(c, "WorkerHello", from);
        return;
    }
    const char *reason = NULL;
    if (h->stage < GASTROSCREEN__V1__STAGE__STAGE_TILER ||
        h->stage > GASTROSCREEN__V1__STAGE__STAGE_REPORTER)
        reason = "unknown stage";
    else if ((h->stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
              h->stage == GASTROSCREEN__V1__STAGE__STAGE_INFER) &&
             !h->tile_inbox[0])
        reason = "a blur or infer worker must announce its tile_inbox";
    else if (c->model.sha256[0] && h->model && h->model->sha256 && h->model->sha256[0] &&
             strcmp(h->model->sha256, c->model.sha256) != 0)
        reason = "model sha256 differs from the coordinator's";
    if (reason) {
        c->st.workers_refused++;
        logf_(c, "worker %s refused: %s", h->worker_id, reason);
        send_welcome(c, from, 0, reason);
        return;
    }
    /* A worker saying hello again abandoned its jobs: they are re-sent (no crash mark). */
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *o = &c->workers[i];
        if (o->used && (strcmp(o->id, h->worker_id) == 0 ||
                        (o->peer.len == from->len && memcmp(o->peer.id, from->id, from->len) == 0)))
            worker_gone(c, o, 0);
    }
    worker *w = NULL;
    for (size_t i = 0; i < c->n_workers; i++)
        if (!c->workers[i].used) {
            w = &c->workers[i];
            break;
        }
    if (!w) {
        worker *nw = realloc(c->workers, (c->n_workers + 1) * sizeof *nw);
        if (!nw) {
            send_welcome(c, from, 0, "coordinator out of memory");
            return;
        }
        c->workers = nw;
        w = &c->workers[c->n_workers++];
    }
    memset(w, 0, sizeof *w);
    w->used = 1;
    w->peer = *from;
    snprintf(w->id, sizeof w->id, "%s", h->worker_id);
    w->stage = h->stage;
    snprintf(w->inbox, sizeof w->inbox, "%s", h->tile_inbox);
    w->batch = h->batch_size;
    int64_t now = now_ms(c);
    w->last_heard = now;
    w->last_used = 0;
    c->st.workers_welcomed++;
    send_welcome(c, from, 1, "");
    w->last_sent = now;
    logf_(c, "worker %s welcomed", w->id);
}

static void on_heartbeat(gs_coordinator *c, worker *w, const Gastroscreen__V1__WorkerHeartbeat *h)
{
    w->n_hand = 0;
    for (size_t i = 0; i < h->n_in_hand && w->n_hand < MAX_HAND; i++) {
        const Gastroscreen__V1__JobRef *r = h->in_hand[i];
        if (!slide_id_ok(r->slide_id))
            continue;
        snprintf(w->hand[w->n_hand].slide, sizeof w->hand[0].slide, "%s", r->slide_id);
        w->hand[w->n_hand].attempt = r->attempt;
        w->n_hand++;
    }
    if (h->stats) {
        const Gastroscreen__V1__StageStats *s = h->stats;
        w->st.workers = 1;
        w->st.tiles_per_second = isfinite(s->tiles_per_second) ? s->tiles_per_second : 0;
        w->st.busy_fraction = isfinite(s->busy_fraction) ? s->busy_fraction : 0;
        w->st.queue_depth = s->queue_depth;
        w->st.processed = s->processed;
        w->st.malformed = s->malformed;
        w->st.wrong_type = s->wrong_type;
        w->st.errors = s->errors;
        w->st.stale = s->stale;
        w->st.duplicates = s->duplicates;
        w->st.rss_bytes = s->rss_bytes;
        w->st.peak_rss_bytes = s->peak_rss_bytes;
        if (str_ok(s->instance_id, 1024) && str_ok(s->host, 1024) &&
            s->stage == (Gastroscreen__V1__Stage)w->stage) {
            Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
            ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
            ev.time_unix_ms = wall_ms();
            ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS;
            ev.stats = (Gastroscreen__V1__StageStats *)s;
            send_event(c, &ev);
        }
    }
}

static int on_goodbye(gs_coordinator *c, worker *w, const Gastroscreen__V1__WorkerGoodbye *g)
{
    int64_t now = now_ms(c);
    c->st.workers_goodbye++;
    for (size_t i = 0; i < g->n_handed_back; i++) {
        const Gastroscreen__V1__HandedBack *hb = g->handed_back[i];
        if (!hb->job || !slide_id_ok(hb->job->slide_id))
            continue;
        slide_rt *rt = rt_find(c, hb->job->slide_id);
        if (!rt || rt->attempt != hb->job->attempt)
            continue;
        if (rt->job_id && rt->job_id == hb->job->job_id) {
            remove_job(c, rt->job_id);
            rt->job_id = 0;
            rt->need_send = 1;
        }
        for (size_t k = 0; rt->ledger && k < hb->n_unsent_tiles; k++)
            note_tile(c, gs_ledger_failed_request(rt->ledger, rt->attempt, hb->unsent_tiles[k],
                                                  "handed back unsent", now));
    }
    logf_(c, "worker %s said goodbye%s%s", w->id, g->reason[0] ? ": " : "", g->reason);
    return worker_gone(c, w, 0);
}

static int on_work(gs_coordinator *c, gs_inbound *in)
{
    const WorkMessage *m = in->msg.work;
    worker *w = worker_by_peer(c, &in->from);
    int64_t now = now_ms(c);
    if (w)
        w->last_heard = now;
    switch (m->body_case) {
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO:
        on_hello(c, &in->from, m->hello);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY:
        if (w)
            w->free_slots = m->ready->free_slots;
        else
            send_coord_heartbeat(c, &in->from); /* unknown: it will say hello again */
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT:
        if (w)
            on_heartbeat(c, w, m->worker_heartbeat);
        else
            send_coord_heartbeat(c, &in->from);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE:
        if (w)
            return on_goodbye(c, w, m->goodbye);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT:
        return on_plan_result(c, m->plan_result);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE:
        remove_job(c, m->tile_job_done->job_id);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT:
        on_tile_result(c, m->tile_result);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_BLUR_RESULT:
        on_blur_result(c, m->blur_result);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT:
        return on_screen_result(c, m->screen_result);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT:
        return on_report_result(c, m->report_result);
    default:
        /* A coordinator-to-worker body sent to the coordinator. */
        c->st.wrong_type[GS_COORD_SOCKET_WORK]++;
        logf_(c, "work: wrong message type dropped");
        return 0;
    }
}

static int check_liveness(gs_coordinator *c)
{
    int64_t now = now_ms(c);
    int64_t hb = c->cfg->heartbeat_ms;
    int64_t dead = hb * c->cfg->liveness;
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *w = &c->workers[i];
        if (!w->used)
            continue;
        if (now - w->last_heard > dead) {
            if (worker_gone(c, w, 1) != 0)
                return -1;
            continue;
        }
        if (now - w->last_sent >= hb) {
            send_coord_heartbeat(c, &w->peer);
            w->last_sent = now;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* query */

static void query_reply(gs_coordinator *c, const gs_peer *to, Gastroscreen__V1__QueryMessage *m)
{
    m->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    if (gs_transport_send(c->query, to, &m->base, GS_SEND_DONTWAIT) == 0)
        c->st.queries_answered++;
}

static void query_error(gs_coordinator *c, const gs_peer *to, const char *msg)
{
    Gastroscreen__V1__QueryError e = GASTROSCREEN__V1__QUERY_ERROR__INIT;
    e.error = (char *)msg;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR;
    m.error = &e;
    query_reply(c, to, &m);
}

static void answer_events_since(gs_coordinator *c, const gs_peer *to,
                                const Gastroscreen__V1__EventsSinceRequest *r)
{
    size_t max = r->max_events && r->max_events < 1000 ? r->max_events : 1000;
    gs_journal_event *evs = calloc(max, sizeof *evs);
    Gastroscreen__V1__EventMessage **out = calloc(max, sizeof *out);
    if (!evs || !out) {
        free(evs);
        free(out);
        query_error(c, to, "coordinator out of memory");
        return;
    }
    size_t n = gs_journal_events_since(c->journal, r->after_seq, evs, max);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        Gastroscreen__V1__EventMessage *ev =
            gastroscreen__v1__event_message__unpack(NULL, evs[i].payload_len, evs[i].payload);
        if (ev)
            out[k++] = ev;
    }
    Gastroscreen__V1__EventsSinceReply rep = GASTROSCREEN__V1__EVENTS_SINCE_REPLY__INIT;
    rep.n_events = k;
    rep.events = out;
    rep.last_seq = gs_journal_last_seq(c->journal);
    rep.oldest_retained_seq = gs_journal_complete_from(c->journal);
    rep.truncated = r->after_seq + 1 < gs_journal_complete_from(c->journal);
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS;
    m.events = &rep;
    query_reply(c, to, &m);
    for (size_t i = 0; i < k; i++)
        gastroscreen__v1__event_message__free_unpacked(out[i], NULL);
    free(out);
    free(evs);
}

/* One SlideStatus, with its verdict when terminal. All pointers into *s and the table. */
typedef struct {
    Gastroscreen__V1__SlideStatus s;
    Gastroscreen__V1__TileCounts tc, vtc;
    Gastroscreen__V1__Verdict v;
    Gastroscreen__V1__ModelProvenance mp;
    Gastroscreen__V1__ReportPaths rp;
    char *warn_copy;
    char **warn;
} status_buf;

static void fill_status(gs_coordinator *c, const gs_slide_info *info, const gs_slide_info *vinfo,
                        status_buf *b)
{
    b->s = (Gastroscreen__V1__SlideStatus)GASTROSCREEN__V1__SLIDE_STATUS__INIT;
    b->tc = (Gastroscreen__V1__TileCounts)GASTROSCREEN__V1__TILE_COUNTS__INIT;
    b->s.slide_id = (char *)info->slide_id;
    b->s.attempt = info->attempt;
    b->s.path = (char *)info->path;
    b->s.state = (Gastroscreen__V1__SlideState)info->state;
    b->tc.planned = info->tiles.planned;
    b->tc.inferred = info->tiles.inferred;
    b->tc.background = info->tiles.background;
    b->tc.blurry = info->tiles.blurry;
    b->tc.error = info->tiles.error;
    b->tc.rerequested = info->tiles.rerequested;
    /* A slide being inferred reports the live ledger, not its last journalled counts. */
    slide_rt *rt = rt_find(c, info->slide_id);
    if (rt && rt->ledger) {
        gs_slide_tiles t;
        tile_counts(rt, &t);
        b->tc.planned = t.planned;
        b->tc.inferred = t.inferred;
        b->tc.background = t.background;
        b->tc.blurry = t.blurry;
        b->tc.error = t.error;
        b->tc.rerequested = t.rerequested;
    }
    b->s.tiles = &b->tc;
    b->s.last_seq = info->last_seq;
    b->s.accepted_unix_ms = info->accepted_unix_ms;
    b->s.duplicate_of = (char *)info->duplicate_of;
    if (!vinfo || (vinfo->state != GS_SLIDE_DONE && vinfo->state != GS_SLIDE_FAILED) ||
        vinfo->verdict == GS_VERDICT_NONE)
        return;
    b->v = (Gastroscreen__V1__Verdict)GASTROSCREEN__V1__VERDICT__INIT;
    b->vtc = (Gastroscreen__V1__TileCounts)GASTROSCREEN__V1__TILE_COUNTS__INIT;
    b->rp = (Gastroscreen__V1__ReportPaths)GASTROSCREEN__V1__REPORT_PATHS__INIT;
    fill_provenance(c, &b->mp);
    b->vtc.planned = vinfo->tiles.planned;
    b->vtc.inferred = vinfo->tiles.inferred;
    b->vtc.background = vinfo->tiles.background;
    b->vtc.blurry = vinfo->tiles.blurry;
    b->vtc.error = vinfo->tiles.error;
    b->vtc.rerequested = vinfo->tiles.rerequested;
    b->rp.report_json = (char *)vinfo->report_json;
    b->rp.heatmap_png = (char *)vinfo->heatmap_png;
    b->rp.regions_geojson = (char *)vinfo->regions_geojson;
    b->v.slide_id = (char *)vinfo->slide_id;
    b->v.attempt = vinfo->attempt;
    b->v.path = (char *)vinfo->path;
    b->v.verdict_class = (Gastroscreen__V1__VerdictClass)vinfo->verdict;
    b->v.score = vinfo->score;
    b->v.threshold = (float)c->cfg->threshold;
    b->v.reason = (char *)vinfo->reason;
    b->v.model = &b->mp;
    b->v.report = &b->rp;
    b->v.tiles = &b->vtc;
    b->v.blurred_fraction = vinfo->blurred_fraction;
    b->v.foreground_method = (Gastroscreen__V1__Method)vinfo->foreground_method;
    b->v.blur_method = (Gastroscreen__V1__Method)vinfo->blur_method;
    b->v.external_id = (char *)vinfo->external_id;
    b->v.decided_unix_ms = vinfo->updated_unix_ms;
    b->v.state = (Gastroscreen__V1__SlideState)vinfo->state;
    if (vinfo->warnings[0] && (b->warn_copy = strdup(vinfo->warnings)) != NULL) {
        size_t n = 1;
        for (const char *p = b->warn_copy; *p; p++)
            n += *p == '\n';
        if ((b->warn = calloc(n, sizeof *b->warn)) != NULL) {
            char *save = NULL;
            size_t k = 0;
            for (char *t = strtok_r(b->warn_copy, "\n", &save); t && k < n;
                 t = strtok_r(NULL, "\n", &save))
                b->warn[k++] = t;
            b->v.n_warnings = k;
            b->v.warnings = b->warn;
        }
    }
    b->s.verdict = &b->v;
}

static void answer_state(gs_coordinator *c, const gs_peer *to,
                         const Gastroscreen__V1__SlideStateRequest *r)
{
    size_t n_all = gs_slides_count(c->slides);
    status_buf *bufs = calloc(n_all ? n_all : 1, sizeof *bufs);
    Gastroscreen__V1__SlideStatus **ps = calloc(n_all ? n_all : 1, sizeof *ps);
    gs_slide_info *infos = calloc(2 * (n_all ? n_all : 1), sizeof *infos);
    if (!bufs || !ps || !infos) {
        free(bufs);
        free(ps);
        free(infos);
        query_error(c, to, "coordinator out of memory");
        return;
    }
    size_t k = 0;
    if (r->in_flight) {
        for (size_t i = 0; i < n_all; i++) {
            if (gs_slides_at(c->slides, i, &infos[2 * k]) != 0)
                continue;
            if (infos[2 * k].state == GS_SLIDE_DONE || infos[2 * k].state == GS_SLIDE_FAILED)
                continue;
            k++;
        }
        for (size_t i = 0; i < k; i++) {
            fill_status(c, &infos[2 * i], NULL, &bufs[i]);
            ps[i] = &bufs[i].s;
        }
    } else if (n_all > 0) {
        int found = -1;
        if (r->slide_id[0])
            found = gs_slides_get(c->slides, r->slide_id, &infos[0]);
        else if (r->path[0]) {
            char canon[PATH_MAX];
            const char *p = realpath(r->path, canon) ? canon : r->path;
            found = gs_slides_get_by_path(c->slides, p, &infos[0]);
        }
        if (found == 0) {
            const gs_slide_info *v = &infos[0];
            /* A folded record answers with the verdict of the slide it is. */
            if (infos[0].duplicate_of[0] &&
                gs_slides_get(c->slides, infos[0].duplicate_of, &infos[1]) == 0)
                v = &infos[1];
            fill_status(c, &infos[0], v, &bufs[0]);
            ps[0] = &bufs[0].s;
            k = 1;
        }
    }
    Gastroscreen__V1__SlideStateReply rep = GASTROSCREEN__V1__SLIDE_STATE_REPLY__INIT;
    rep.n_slides = k;
    rep.slides = ps;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_STATE;
    m.state = &rep;
    query_reply(c, to, &m);
    for (size_t i = 0; i < k; i++) {
        free(bufs[i].warn);
        free(bufs[i].warn_copy);
    }
    free(bufs);
    free(ps);
    free(infos);
}

static void on_query(gs_coordinator *c, gs_inbound *in, gs_recv_status st)
{
    if (st == GS_RECV_DROPPED) {
        if (in->from.len > 0)
            query_error(c, &in->from,
                        in->drop == GS_DROP_WRONG_TYPE ? "wrong message type"
                                                       : "malformed message");
        return;
    }
    const Gastroscreen__V1__QueryMessage *m = in->msg.query;
    if (m->body_case == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE)
        answer_events_since(c, &in->from, m->events_since);
    else if (m->body_case == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_SLIDE_STATE) {
        const Gastroscreen__V1__SlideStateRequest *r = m->slide_state;
        if (!str_ok(r->slide_id, 1024) || !str_ok(r->path, 4096)) {
            c->st.malformed[GS_COORD_SOCKET_QUERY]++;
            query_error(c, &in->from, "malformed request: a string too long");
            return;
        }
        answer_state(c, &in->from, r);
    } else {
        c->st.wrong_type[GS_COORD_SOCKET_QUERY]++;
        query_error(c, &in->from, "wrong message type: only requests are served");
    }
}

/* ------------------------------------------------------------------------------------------ */
/* stats */

static void stats_refresh(gs_coordinator *c)
{
    gs_coordinator_stats s = c->st;
    snprintf(s.coordinator_id, sizeof s.coordinator_id, "%s", c->coordinator_id);
    s.started_unix_ms = c->started_unix_ms;
    s.last_seq = gs_journal_last_seq(c->journal);
    memset(s.stage, 0, sizeof s.stage);
    for (size_t i = 0; i < c->n_workers; i++) {
        const worker *w = &c->workers[i];
        if (!w->used || w->stage < 1 || w->stage >= STAGE_N)
            continue;
        gs_coordinator_stage_stats *a = &s.stage[w->stage];
        a->workers++;
        a->tiles_per_second += w->st.tiles_per_second;
        a->busy_fraction += w->st.busy_fraction;
        a->queue_depth += w->st.queue_depth;
        a->processed += w->st.processed;
        a->malformed += w->st.malformed;
        a->wrong_type += w->st.wrong_type;
        a->errors += w->st.errors;
        a->stale += w->st.stale;
        a->duplicates += w->st.duplicates;
        a->rss_bytes += w->st.rss_bytes;
        if (w->st.peak_rss_bytes > a->peak_rss_bytes)
            a->peak_rss_bytes = w->st.peak_rss_bytes;
    }
    for (int i = 1; i < STAGE_N; i++)
        if (s.stage[i].workers)
            s.stage[i].busy_fraction /= s.stage[i].workers;
    gs_intake_counters ic;
    gs_intake_counters_get(c->intake, &ic);
    s.malformed[GS_COORD_SOCKET_INTAKE] = ic.intake_malformed;
    s.wrong_type[GS_COORD_SOCKET_INTAKE] = ic.intake_wrong_type;
    s.malformed[GS_COORD_SOCKET_SUBMIT] = ic.submit_malformed;
    s.wrong_type[GS_COORD_SOCKET_SUBMIT] = ic.submit_wrong_type;
    const gs_transport_counters *q = gs_transport_counters_get(c->query);
    const gs_transport_counters *wk = gs_transport_counters_get(c->work);
    s.malformed[GS_COORD_SOCKET_QUERY] += q->malformed;
    s.wrong_type[GS_COORD_SOCKET_QUERY] += q->wrong_type;
    s.malformed[GS_COORD_SOCKET_WORK] += wk->malformed;
    s.wrong_type[GS_COORD_SOCKET_WORK] += wk->wrong_type;
    s.slides_in_flight = (uint32_t)gs_slides_in_flight(c->slides);
    s.slides_active = (uint32_t)c->n_active;
    s.intake_rejected = ic.rejected;
    gs_coordinator_stage_stats *me = &s.stage[GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR];
    me->workers = 1;
    me->tiles_per_second = c->st.tiles_per_second;
    me->processed = c->st.tiles_recorded;
    for (int i = 0; i < GS_COORD_SOCKET_COUNT; i++) {
        me->malformed += s.malformed[i];
        me->wrong_type += s.wrong_type[i];
    }
    me->stale = s.stale;
    me->duplicates = s.duplicates;
    pthread_mutex_lock(&c->snap_lock);
    c->snap = s;
    pthread_mutex_unlock(&c->snap_lock);
}

static void tick(gs_coordinator *c)
{
    int64_t now = now_ms(c);
    if (now < c->next_tick)
        return;
    c->next_tick = now + 1000;
    /* tile outcomes per second over the last 10 s */
    memmove(c->rate_hist + 1, c->rate_hist, 10 * sizeof c->rate_hist[0]);
    memmove(c->rate_time + 1, c->rate_time, 10 * sizeof c->rate_time[0]);
    c->rate_hist[0] = c->st.tiles_recorded;
    c->rate_time[0] = now;
    int old = 10;
    while (old > 0 && c->rate_time[old] == 0)
        old--;
    if (old > 0 && c->rate_time[0] > c->rate_time[old])
        c->st.tiles_per_second = (double)(c->rate_hist[0] - c->rate_hist[old]) * 1000.0 /
                                 (double)(c->rate_time[0] - c->rate_time[old]);
    if (now >= c->next_retain) {
        /* Compaction of slides terminal for longer than journal_retention, hourly. */
        c->next_retain = now + 3600 * 1000;
        size_t dropped = 0;
        if (gs_slides_retain(c->slides, wall_ms(), c->cfg->journal_retention_ms, &dropped) != 0)
            logf_(c, "journal retention: %s", gs_error_get());
        else if (dropped)
            logf_(c, "journal retention: %zu slides dropped", dropped);
    }
    stats_refresh(c);
    gs_coordinator_stats s;
    gs_coordinator_stats_get(c, &s);
    const gs_coordinator_stage_stats *me = &s.stage[GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR];
    Gastroscreen__V1__StageStats ss = GASTROSCREEN__V1__STAGE_STATS__INIT;
    ss.stage = GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR;
    ss.instance_id = c->coordinator_id;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    ss.host = host;
    ss.started_unix_ms = c->started_unix_ms;
    ss.tiles_per_second = me->tiles_per_second;
    ss.processed = me->processed;
    ss.malformed = me->malformed;
    ss.wrong_type = me->wrong_type;
    ss.stale = me->stale;
    ss.duplicates = me->duplicates;
    ss.slides_in_flight = s.slides_in_flight;
    Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    ev.time_unix_ms = wall_ms();
    ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS;
    ev.stats = &ss;
    send_event(c, &ev);
    if (c->o.on_tick)
        c->o.on_tick(&s, c->o.tick_ud);
}

/* ------------------------------------------------------------------------------------------ */
/* public */

const char *gs_coord_socket_name(gs_coord_socket s)
{
    static const char *const names[] = {"intake", "submit", "query", "work"};
    return (unsigned)s < GS_COORD_SOCKET_COUNT ? names[s] : "";
}

void gs_coordinator_options_default(gs_coordinator_options *o)
{
    memset(o, 0, sizeof *o);
}

static int accept_cb(void *ud, const char *path, int64_t size, int64_t mtime_ms,
                     gs_intake_source source, const char *external_id,
                     char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate, uint64_t *seq)
{
    gs_coordinator *c = ud;
    if (gs_slides_intake(c->slides, path, size, mtime_ms, source, external_id, wall_ms(), out_id,
                         duplicate, seq) != 0)
        return -1;
    if (*duplicate)
        c->st.intake_duplicates++;
    else
        c->st.slides_accepted++;
    publish_pending(c);
    return 0;
}

static int copy_model(gs_coordinator *c, const Gastroscreen__V1__ModelProvenance *m)
{
    c->model = (Gastroscreen__V1__ModelProvenance)GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    const char *src[6] = {"", "", "", "", "", ""};
    if (m) {
        src[0] = m->bundle ? m->bundle : "";
        src[1] = m->sha256 ? m->sha256 : "";
        src[2] = m->format_version ? m->format_version : "";
        src[3] = m->trained_on ? m->trained_on : "";
        src[4] = m->notice ? m->notice : "";
        c->model.untrained = m->untrained;
    }
    for (int i = 0; i < 5; i++)
        if (!(c->model_strings[i] = strdup(src[i])))
            return gs_error_set("coordinator: out of memory");
    c->model.bundle = c->model_strings[0];
    c->model.sha256 = c->model_strings[1];
    c->model.format_version = c->model_strings[2];
    c->model.trained_on = c->model_strings[3];
    c->model.notice = c->model_strings[4];
    return 0;
}

gs_coordinator *gs_coordinator_new(const gs_coordinator_options *o)
{
    GS_ASSERT(o && o->config);
    gs_coordinator *c = calloc(1, sizeof *c);
    if (!c) {
        gs_error_set("coordinator: out of memory");
        return NULL;
    }
    c->o = *o;
    if (!c->o.clock_ms)
        c->o.clock_ms = mono_ms;
    c->cfg = o->config;
    pthread_mutex_init(&c->snap_lock, NULL);
    atomic_init(&c->stop_flag, 0);
    if (copy_model(c, o->model) != 0)
        goto fail;
    c->started_unix_ms = wall_ms();
    {
        unsigned char rnd[16];
        FILE *f = fopen("/dev/urandom", "rb");
        size_t got = f ? fread(rnd, 1, sizeof rnd, f) : 0;
        if (f)
            fclose(f);
        if (got != sizeof rnd) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            for (size_t i = 0; i < sizeof rnd; i++)
                rnd[i] =
                    (unsigned char)((ts.tv_nsec >> (i % 4 * 8)) ^ (getpid() >> (i % 2 * 8)) ^ i);
        }
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(c->coordinator_id + 2 * i, 3, "%02x", rnd[i]);
    }
    c->spool = gs_spool_new(c->cfg->spool_dir);
    if (!c->spool)
        goto fail;
    c->journal = gs_journal_open(c->cfg->journal_dir);
    if (!c->journal)
        goto fail;
    for (size_t i = 0; i < gs_journal_warning_count(c->journal); i++)
        logf_(c, "journal: %s", gs_journal_warning(c->journal, i));
    gs_slides_options so;
    gs_slides_options_default(&so);
    so.poison_limit = c->cfg->poison_limit;
    so.max_attempts = c->cfg->max_attempts;
    so.threshold = (float)c->cfg->threshold;
    so.model_bundle = c->model.bundle;
    so.model_sha256 = c->model.sha256;
    so.model_format_version = c->model.format_version;
    so.model_trained_on = c->model.trained_on;
    so.model_notice = c->model.notice;
    so.model_untrained = c->model.untrained;
    c->slides = gs_slides_new(c->journal, &so);
    if (!c->slides)
        goto fail;
    /* Records up to here were published by an earlier coordinator (or lost with it; the query
     * socket recovers them). What recovery journals now is published once bound. */
    c->published = gs_journal_last_seq(c->journal);
    if (gs_slides_recover(c->slides, wall_ms()) < 0)
        goto fail;
    if (o->zmq_ctx)
        c->zctx = o->zmq_ctx;
    else {
        c->zctx = zmq_ctx_new();
        c->own_ctx = 1;
        if (!c->zctx) {
            gs_error_set("coordinator: zmq_ctx_new: %s", zmq_strerror(errno));
            goto fail;
        }
    }
    gs_transport_options topt = {.quiet = o->quiet};
    topt.name = "work";
    c->work = gs_transport_new(c->zctx, GS_CHANNEL_WORK, ZMQ_ROUTER, GS_BIND, c->cfg->work, &topt);
    if (!c->work)
        goto fail;
    topt.name = "query";
    c->query =
        gs_transport_new(c->zctx, GS_CHANNEL_QUERY, ZMQ_ROUTER, GS_BIND, c->cfg->query, &topt);
    if (!c->query)
        goto fail;
    topt.name = "events";
    c->events =
        gs_transport_new(c->zctx, GS_CHANNEL_EVENTS, ZMQ_PUB, GS_BIND, c->cfg->events, &topt);
    if (!c->events)
        goto fail;
    gs_intake_options io = {
        .zmq_ctx = c->zctx,
        .intake = c->cfg->intake,
        .intake_connect = c->cfg->intake_connect,
        .submit = c->cfg->submit,
        .roots = (const char *const *)c->cfg->slide_roots,
        .n_roots = c->cfg->n_slide_roots,
        .watch_dir = c->cfg->watch_dir,
        .watch_settle_ms = c->cfg->watch_settle_ms,
        .accept = accept_cb,
        .accept_ud = c,
        .quiet = o->quiet,
    };
    c->intake = gs_intake_new(&io);
    if (!c->intake)
        goto fail;
    publish_pending(c);
    /* Terminal slides whose spool outlived them (a crash before the cleanup, poison found by
     * recovery) are retired once here; afterwards each is retired as its verdict goes out. */
    for (size_t i = 0; i < gs_slides_count(c->slides); i++) {
        gs_slide_info info;
        if (gs_slides_at(c->slides, i, &info) == 0 &&
            (info.state == GS_SLIDE_DONE || info.state == GS_SLIDE_FAILED))
            spool_retire(c, info.slide_id,
                         info.state == GS_SLIDE_FAILED && strncmp(info.reason, "poison", 6) == 0);
    }
    stats_refresh(c);
    return c;

fail:
    gs_error_prefix("coordinator");
    gs_coordinator_destroy(&c);
    return NULL;
}

void gs_coordinator_destroy(gs_coordinator **pc)
{
    if (!pc || !*pc)
        return;
    gs_coordinator *c = *pc;
    while (c->n_active > 0)
        rt_drop(c, c->active[c->n_active - 1]);
    free(c->active);
    free(c->jobs);
    free(c->workers);
    gs_intake_destroy(&c->intake);
    gs_transport_destroy(&c->work);
    gs_transport_destroy(&c->query);
    gs_transport_destroy(&c->events);
    if (c->own_ctx && c->zctx)
        zmq_ctx_term(c->zctx);
    gs_slides_destroy(&c->slides);
    gs_journal_destroy(&c->journal);
    gs_spool_destroy(&c->spool);
    for (int i = 0; i < 6; i++)
        free(c->model_strings[i]);
    pthread_mutex_destroy(&c->snap_lock);
    free(c);
    *pc = NULL;
}

static int drain_work(gs_coordinator *c)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        gs_inbound in;
        memset(&in, 0, sizeof in);
        gs_recv_status st = gs_transport_recv(c->work, &in, GS_RECV_DONTWAIT);
        if (st == GS_RECV_EMPTY || st == GS_RECV_ERROR) {
            gs_inbound_release(&in);
            return 0;
        }
        int r = 0;
        if (st == GS_RECV_MESSAGE)
            r = on_work(c, &in);
        else if (in.from.len > 0) {
            worker *w = worker_by_peer(c, &in.from);
            if (w)
                w->last_heard = now_ms(c);
        }
        gs_inbound_release(&in);
        if (r < 0)
            return -1;
    }
    return 0;
}

static void drain_query(gs_coordinator *c)
{
    for (int i = 0; i < 64; i++) {
        gs_inbound in;
        memset(&in, 0, sizeof in);
        gs_recv_status st = gs_transport_recv(c->query, &in, GS_RECV_DONTWAIT);
        if (st == GS_RECV_EMPTY || st == GS_RECV_ERROR) {
            gs_inbound_release(&in);
            return;
        }
        on_query(c, &in, st);
        gs_inbound_release(&in);
    }
}

int gs_coordinator_step(gs_coordinator *c, int timeout_ms)
{
    zmq_pollitem_t items[8];
    size_t n = 0;
    items[n++] = (zmq_pollitem_t){.socket = gs_transport_socket(c->work), .events = ZMQ_POLLIN};
    items[n++] = (zmq_pollitem_t){.socket = gs_transport_socket(c->query), .events = ZMQ_POLLIN};
    n += gs_intake_poll_items(c->intake, items + n, 8 - n);
    /* Wake for the next heartbeat or tick even when nothing arrives. */
    int cap = (int)(c->cfg->heartbeat_ms / 2);
    if (cap < 10)
        cap = 10;
    if (timeout_ms < 0 || timeout_ms > cap)
        timeout_ms = cap;
    if (zmq_poll(items, (int)n, timeout_ms) < 0 && errno != EINTR)
        return gs_error_set("coordinator: zmq_poll: %s", zmq_strerror(errno));
    /* work first: results unblock workers (PROTOCOL.md §10) */
    if (drain_work(c) != 0)
        return -1;
    drain_query(c);
    if (gs_intake_handle(c->intake, now_ms(c)) < 0)
        return -1;
    if (check_liveness(c) != 0)
        return -1;
    if (drive(c) != 0)
        return -1;
    publish_pending(c);
    tick(c);
    stats_refresh(c);
    return 0;
}

int gs_coordinator_run(gs_coordinator *c)
{
    while (!atomic_load(&c->stop_flag) && !(c->o.stop && *c->o.stop))
        if (gs_coordinator_step(c, 100) != 0)
            return -1;
    return 0;
}

void gs_coordinator_stop(gs_coordinator *c)
{
    atomic_store(&c->stop_flag, 1);
}

int gs_coordinator_intake(gs_coordinator *c, const char *path, gs_intake_source source,
                          const char *external_id, char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate)
{
    char id[GS_SLIDE_ID_LEN + 1];
    int dup = 0;
    if (gs_intake_path(c->intake, path, source, external_id, id, &dup, NULL) != 0)
        return -1;
    if (out_id)
        memcpy(out_id, id, sizeof id);
    if (duplicate)
        *duplicate = dup;
    return 0;
}

const char *gs_coordinator_endpoint(const gs_coordinator *c, gs_channel channel)
{
    switch (channel) {
    case GS_CHANNEL_INTAKE:
        return gs_intake_intake_endpoint(c->intake);
    case GS_CHANNEL_SUBMIT:
        return gs_intake_submit_endpoint(c->intake);
    case GS_CHANNEL_QUERY:
        return gs_transport_endpoint(c->query);
    case GS_CHANNEL_EVENTS:
        return gs_transport_endpoint(c->events);
    case GS_CHANNEL_WORK:
        return gs_transport_endpoint(c->work);
    default:
        return "";
    }
}

void *gs_coordinator_zmq_ctx(gs_coordinator *c)
{
    return c->zctx;
}

const gs_slides *gs_coordinator_slides(const gs_coordinator *c)
{
    return c->slides;
}

void gs_coordinator_stats_get(gs_coordinator *c, gs_coordinator_stats *out)
{
    pthread_mutex_lock(&c->snap_lock);
    *out = c->snap;
    pthread_mutex_unlock(&c->snap_lock);
}
