/* coordinator_world: see coordinator_world.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "tests/unit/coordinator_world.h"
#include "daemon/service/config.h"
#include "daemon/service/coordinator.h"
#include "daemon/service/slide_table.h"
#include "ops/error.h"
#include "stages/runtime/transport.h"

static int64_t test_clock(void *ud)
{
    return ((world *)ud)->now;
}

/* ------------------------------------------------------------------------------------------ */

static void write_config(world *w)
{
    snprintf(w->conf, sizeof w->conf, "%s/gen%d.conf", w->dir, w->gen);
    FILE *f = fopen(w->conf, "w");
    assert_non_null(f);
    const char *names[] = {"intake", "submit", "query", "events", "work"};
    fprintf(f, "[coordinator]\n");
    for (int i = 0; i < 5; i++)
        fprintf(f, "%s = inproc://t%d-%d-%s\n", names[i], (int)getpid(), w->gen, names[i]);
    fprintf(f, "journal_dir = %s/journal\nspool_dir = %s/spool\nmetrics =\n", w->dir, w->dir);
    fprintf(f, "[intake]\nslide_roots = %s/slides %s/watch\n", w->dir, w->dir);
    if (w->watch)
        fprintf(f, "watch_dir = %s/watch\nwatch_settle = 5s\n", w->dir);
    fprintf(f, "[reporter]\nreport_dir = %s/reports\n", w->dir);
    /* The fake infer workers answer 16 x 16 heatmaps. */
    fprintf(f, "[infer]\nheatmap_size = 16\n");
    fclose(f);
}

void world_start(world *w)
{
    w->gen++;
    write_config(w);
    w->cfg = gs_config_new();
    assert_non_null(w->cfg);
    if (gs_config_load(w->cfg, w->conf) != 0)
        fail_msg("config: %s", gs_error_get());
    gs_coordinator_options o;
    gs_coordinator_options_default(&o);
    o.config = w->cfg;
    o.zmq_ctx = w->ctx;
    o.clock_ms = test_clock;
    o.clock_ud = w;
    o.quiet = 1;
    o.decision = w->decision;
    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    mp.bundle = "test.safetensors";
    mp.sha256 = "aaaa";
    mp.untrained = 1;
    mp.notice = "model: untrained — not a diagnosis";
    o.model = &mp;
    w->c = gs_coordinator_new(&o);
    if (!w->c)
        fail_msg("coordinator: %s", gs_error_get());
    gs_transport_options q = {.quiet = 1};
    w->sub = gs_transport_new(w->ctx, GS_CHANNEL_EVENTS, ZMQ_SUB, GS_CONNECT,
                              gs_coordinator_endpoint(w->c, GS_CHANNEL_EVENTS), &q);
    assert_non_null(w->sub);
    assert_int_equal(gs_transport_subscribe(w->sub, "slide."), 0);
}

static void fakes_destroy(world *w)
{
    for (size_t i = 0; i < w->nf; i++)
        gs_transport_destroy(&w->f[i].t);
    w->nf = 0;
}

void world_stop(world *w)
{
    fakes_destroy(w);
    gs_transport_destroy(&w->sub);
    gs_coordinator_destroy(&w->c);
    gs_config_destroy(&w->cfg);
}

void world_init(world *w)
{
    memset(w, 0, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/gs-coord-XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/slides", w->dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/watch", w->dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(w->slide, sizeof w->slide, "%s/slides/a.svs", w->dir);
    FILE *f = fopen(w->slide, "w");
    assert_non_null(f);
    fputs("not really a slide: the fake foreground plans it\n", f);
    fclose(f);
    w->ctx = zmq_ctx_new();
    assert_non_null(w->ctx);
    w->infer_budget = -1;
    w->screen_score = 0.9f;
    w->blur_method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    w->report_class = -1;
    w->now = 1000000;
}

void world_free(world *w)
{
    world_stop(w);
    zmq_ctx_term(w->ctx);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", w->dir);
    assert_int_equal(system(cmd), 0);
}

/* ------------------------------------------------------------------------------------------ */
/* fake workers */

void fake_send(fake *f, Gastroscreen__V1__WorkMessage *m)
{
    m->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    assert_int_equal(gs_transport_send(f->t, NULL, &m->base, 0), 0);
}

static void fake_ready(fake *f)
{
    Gastroscreen__V1__WorkerReady r = GASTROSCREEN__V1__WORKER_READY__INIT;
    r.worker_id = f->id;
    r.free_slots = 1;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY;
    m.ready = &r;
    fake_send(f, &m);
}

fake *fake_add(world *w, int stage, const char *sha256)
{
    return fake_add_as(w, stage, sha256, NULL);
}

fake *fake_add_as(world *w, int stage, const char *sha256, const char *id)
{
    assert_true(w->nf < MAX_FAKES);
    fake *f = &w->f[w->nf++];
    memset(f, 0, sizeof *f);
    f->stage = stage;
    if (id)
        snprintf(f->id, sizeof f->id, "%s", id);
    else
        snprintf(f->id, sizeof f->id, "%s.%zu@test:%d", gs_stage_name(stage), w->nf, (int)getpid());
    if (stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
        stage == GASTROSCREEN__V1__STAGE__STAGE_INFER)
        snprintf(f->inbox, sizeof f->inbox, "inproc://fake-inbox-%d-%zu", w->gen, w->nf);
    gs_transport_options q = {.quiet = 1};
    f->t = gs_transport_new(w->ctx, GS_CHANNEL_WORK, ZMQ_DEALER, GS_CONNECT,
                            gs_coordinator_endpoint(w->c, GS_CHANNEL_WORK), &q);
    assert_non_null(f->t);
    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    mp.sha256 = (char *)sha256;
    if (stage == GASTROSCREEN__V1__STAGE__STAGE_INFER && w->infer_precision)
        mp.precision = (char *)w->infer_precision;
    Gastroscreen__V1__WorkerHello h = GASTROSCREEN__V1__WORKER_HELLO__INIT;
    h.worker_id = f->id;
    h.stage = stage;
    h.host = "test";
    h.pid = (uint32_t)getpid();
    h.tile_inbox = f->inbox;
    h.threads = 1;
    h.batch_size = 4;
    h.model = &mp;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO;
    m.hello = &h;
    fake_send(f, &m);
    f->last_hb = w->now;
    return f;
}

static void fakes_all(world *w)
{
    for (int s = GASTROSCREEN__V1__STAGE__STAGE_TILER; s <= GASTROSCREEN__V1__STAGE__STAGE_REPORTER;
         s++)
        fake_add(w, s, "aaaa");
}

static fake *fake_by_inbox(world *w, const char *inbox)
{
    for (size_t i = 0; i < w->nf; i++)
        if (w->f[i].inbox[0] && strcmp(w->f[i].inbox, inbox) == 0)
            return &w->f[i];
    return NULL;
}

/* A graceful stop with the plan job in hand: it is handed back. */
static void fake_goodbye(fake *f, const Gastroscreen__V1__PlanJob *j)
{
    Gastroscreen__V1__JobRef ref = GASTROSCREEN__V1__JOB_REF__INIT;
    ref.slide_id = j->slide_id;
    ref.attempt = j->attempt;
    ref.job_id = j->job_id;
    ref.kind = GASTROSCREEN__V1__JOB_KIND__JOB_KIND_PLAN;
    Gastroscreen__V1__HandedBack hb = GASTROSCREEN__V1__HANDED_BACK__INIT, *phb = &hb;
    hb.job = &ref;
    Gastroscreen__V1__WorkerGoodbye g = GASTROSCREEN__V1__WORKER_GOODBYE__INIT;
    g.worker_id = f->id;
    g.n_handed_back = 1;
    g.handed_back = &phb;
    g.reason = "stopping (SIGTERM)";
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE;
    m.goodbye = &g;
    fake_send(f, &m);
}

static void answer_plan(world *w, fake *f, const Gastroscreen__V1__PlanJob *j)
{
    w->plan_inode = j->identity ? j->identity->inode : 0;
    w->plan_size = j->identity ? j->identity->size : 0;
    snprintf(w->plan_quickhash, sizeof w->plan_quickhash, "%s",
             j->identity && j->identity->quickhash ? j->identity->quickhash : "");
    Gastroscreen__V1__SlideFacts facts = GASTROSCREEN__V1__SLIDE_FACTS__INIT;
    facts.vendor = "generic-tiff";
    facts.width = 10240;
    facts.height = 4096;
    facts.level_count = 1;
    facts.mpp_x = facts.mpp_y = 0.25;
    facts.quickhash = "quickhash-a";
    Gastroscreen__V1__TileGrid grid = GASTROSCREEN__V1__TILE_GRID__INIT;
    grid.level_downsample = 1;
    grid.tile_size = 512;
    grid.target_mpp = 0.5;
    grid.window_level0 = grid.stride_level0 = 1024;
    Gastroscreen__V1__PlannedTile tiles[N_TILES], *pt[N_TILES];
    for (int i = 0; i < N_TILES; i++) {
        tiles[i] = (Gastroscreen__V1__PlannedTile)GASTROSCREEN__V1__PLANNED_TILE__INIT;
        tiles[i].x0 = (i % 10) * 1024;
        tiles[i].y0 = (i / 10) * 1024;
        tiles[i].tissue_fraction = i % 10 == 9 ? 0.1f : 0.8f;
        pt[i] = &tiles[i];
    }
    Gastroscreen__V1__PlanResult r = GASTROSCREEN__V1__PLAN_RESULT__INIT;
    r.slide_id = j->slide_id;
    r.attempt = j->attempt;
    r.job_id = j->job_id;
    r.worker_id = f->id;
    if (w->plan_error)
        r.error = "openslide: cannot open";
    else {
        r.facts = &facts;
        r.grid = &grid;
        r.n_tiles = N_TILES;
        r.tiles = pt;
        r.method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    }
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT;
    m.plan_result = &r;
    fake_send(f, &m);
}

static void sink_result(world *w, fake *sink, const Gastroscreen__V1__TileJob *j, uint32_t index,
                        uint32_t attempt)
{
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__BlurResult b = GASTROSCREEN__V1__BLUR_RESULT__INIT;
    Gastroscreen__V1__TileResult t = GASTROSCREEN__V1__TILE_RESULT__INIT;
    float feature[512];
    uint8_t heat[256];
    if (j->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_BLUR) {
        b.slide_id = j->slide_id;
        b.attempt = attempt;
        b.tile_index = index;
        b.worker_id = sink->id;
        b.blurry = w->all_blurry;
        b.focus = w->all_blurry ? 0.01f : 0.5f;
        b.method = (Gastroscreen__V1__Method)w->blur_method;
        b.request = j->request;
        m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_BLUR_RESULT;
        m.blur_result = &b;
    } else {
        for (int k = 0; k < 512; k++)
            feature[k] = (float)index * 0.001f + (float)k * 1e-6f;
        memset(heat, (int)(index & 0xff), sizeof heat);
        t.slide_id = j->slide_id;
        t.attempt = attempt;
        t.tile_index = index;
        t.worker_id = sink->id;
        t.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED;
        t.score = (float)index / 100.f;
        t.n_feature = 512;
        t.feature = feature;
        t.heatmap.data = heat;
        t.heatmap.len = sizeof heat;
        t.heatmap_size = 16;
        w->infer_judge_focus = j->infer->judge_focus;
        t.focus_method = j->infer->judge_focus ? GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL
                                               : GASTROSCREEN__V1__METHOD__METHOD_UNSPECIFIED;
        t.focus = 500.f;
        if (w->infer_blurry_mod > 0 && index % (uint32_t)w->infer_blurry_mod == 0) {
            t.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY;
            t.focus = 5.f;
            t.n_feature = 0;
            t.feature = NULL;
            t.heatmap.len = 0;
            t.heatmap_size = 0;
        }
        t.request = j->request;
        m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
        m.tile_result = &t;
    }
    fake_send(sink, &m);
}

static void answer_tiles(world *w, fake *f, const Gastroscreen__V1__TileJob *j)
{
    w->tile_inode = j->identity ? j->identity->inode : 0;
    snprintf(w->tile_quickhash, sizeof w->tile_quickhash, "%s",
             j->identity && j->identity->quickhash ? j->identity->quickhash : "");
    int blur = j->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_BLUR;
    if (blur) {
        w->blur_tile_jobs++;
        w->blur_job_sparse = j->blur->sparse_tissue;
    } else {
        w->infer_tile_jobs++;
        w->infer_job_sparse = j->infer->sparse_tissue;
    }
    assert_true(j->n_sink_endpoints > 0);
    for (size_t i = 0; i < j->n_tiles; i++) {
        fake *sink = fake_by_inbox(w, j->sink_endpoints[w->rr++ % j->n_sink_endpoints]);
        assert_non_null(sink);
        assert_int_equal(sink->stage, blur ? GASTROSCREEN__V1__STAGE__STAGE_BLUR
                                           : GASTROSCREEN__V1__STAGE__STAGE_INFER);
        sink->tiles_got++;
        if (sink->dead)
            continue;
        if (!blur) {
            if (w->infer_budget >= 0 && w->infer_results >= (uint32_t)w->infer_budget)
                continue;
            w->infer_results++;
        }
        sink_result(w, sink, j, j->tiles[i]->index, j->attempt);
        if (w->duplicate_results)
            sink_result(w, sink, j, j->tiles[i]->index, j->attempt);
        if (w->stale_results)
            sink_result(w, sink, j, j->tiles[i]->index, j->attempt + 1);
    }
    Gastroscreen__V1__TileJobDone d = GASTROSCREEN__V1__TILE_JOB_DONE__INIT;
    d.slide_id = j->slide_id;
    d.attempt = j->attempt;
    d.job_id = j->job_id;
    d.worker_id = f->id;
    d.sent = (uint32_t)j->n_tiles;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE;
    m.tile_job_done = &d;
    fake_send(f, &m);
}

static void answer_screen(world *w, fake *f, const Gastroscreen__V1__ScreenTask *s)
{
    w->screen_k = s->k;
    w->screen_sorted = s->n_tile_scores == s->k && s->n_features == (size_t)s->k * 512;
    for (size_t i = 1; i < s->n_tile_scores; i++)
        if (s->tile_scores[i] > s->tile_scores[i - 1])
            w->screen_sorted = 0;
    Gastroscreen__V1__ScreenResult r = GASTROSCREEN__V1__SCREEN_RESULT__INIT;
    r.slide_id = s->slide_id;
    r.attempt = s->attempt;
    r.job_id = s->job_id;
    r.worker_id = f->id;
    r.score = w->screen_score;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT;
    m.screen_result = &r;
    fake_send(f, &m);
}

static void answer_report(world *w, fake *f, const Gastroscreen__V1__ReportJob *j)
{
    assert_non_null(j->verdict);
    w->report_class = j->verdict->verdict_class;
    w->report_blur_judged = j->verdict->blur_sample_judged;
    w->report_fg_method = j->verdict->foreground_method;
    snprintf(w->report_precision, sizeof w->report_precision, "%s",
             j->verdict->model ? j->verdict->model->precision : "(no model)");
    w->report_blur_method = j->verdict->blur_method;
    w->report_sparse = j->verdict->sparse_tissue;
    w->report_sparse_classical = j->verdict->sparse_classical_threshold;
    snprintf(w->report_sparse_source, sizeof w->report_sparse_source, "%s",
             j->verdict->sparse_tissue_source ? j->verdict->sparse_tissue_source : "(null)");
    w->report_n_warnings = j->verdict->n_warnings;
    snprintf(w->report_warning, sizeof w->report_warning, "%s",
             j->verdict->n_warnings ? j->verdict->warnings[0] : "");
    w->report_blurry_tiles = 0;
    w->report_heat_ok = j->n_tiles > 0;
    for (size_t i = 0; i < j->n_tiles; i++) {
        const Gastroscreen__V1__TileSummary *t = j->tiles[i];
        w->report_blurry_tiles += t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY;
        if (t->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED &&
            (t->heatmap.len != 256 || t->heatmap.data[0] != (uint8_t)(t->index & 0xff) ||
             t->heatmap.data[255] != (uint8_t)(t->index & 0xff)))
            w->report_heat_ok = 0;
    }
    char json[PATH_MAX + 32];
    snprintf(json, sizeof json, "%s/report.json", j->out_dir);
    Gastroscreen__V1__ReportPaths p = GASTROSCREEN__V1__REPORT_PATHS__INIT;
    p.report_json = json;
    Gastroscreen__V1__ReportResult r = GASTROSCREEN__V1__REPORT_RESULT__INIT;
    r.slide_id = j->slide_id;
    r.attempt = j->attempt;
    r.job_id = j->job_id;
    r.worker_id = f->id;
    r.paths = &p;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT;
    m.report_result = &r;
    fake_send(f, &m);
}

/* One round: the coordinator steps, every fake answers what it got. Returns messages handled. */
int pump(world *w)
{
    int n = 0;
    if (gs_coordinator_step(w->c, 0) != 0)
        fail_msg("step: %s", gs_error_get());
    for (size_t i = 0; i < w->nf; i++) {
        fake *f = &w->f[i];
        for (;;) {
            gs_inbound in;
            memset(&in, 0, sizeof in);
            gs_recv_status st = gs_transport_recv(f->t, &in, GS_RECV_DONTWAIT);
            if (st != GS_RECV_MESSAGE) {
                gs_inbound_release(&in);
                if (st == GS_RECV_EMPTY || st == GS_RECV_ERROR)
                    break;
                continue;
            }
            const Gastroscreen__V1__WorkMessage *m = in.msg.work;
            if (!f->dead) {
                n++;
                switch (m->body_case) {
                case GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME:
                    if (m->welcome->accepted) {
                        f->welcomed = 1;
                        if (!f->inbox[0])
                            fake_ready(f);
                    } else
                        f->refused = 1;
                    break;
                case GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB:
                    if (w->hang_plans)
                        break; /* stuck on it: no result, no ready, heartbeats go on */
                    if (w->swallow_plans) {
                        f->dead = 1;
                        break;
                    }
                    if (w->goodbye_plans) {
                        w->goodbye_plans = 0;
                        fake_goodbye(f, m->plan_job);
                        f->dead = 1;
                        break;
                    }
                    answer_plan(w, f, m->plan_job);
                    fake_ready(f);
                    break;
                case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB:
                    answer_tiles(w, f, m->tile_job);
                    fake_ready(f);
                    break;
                case GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK:
                    if (w->hold_screen) {
                        w->held_job = m->screen_task->job_id;
                        w->held_attempt = m->screen_task->attempt;
                        w->held_by = f;
                        break;
                    }
                    answer_screen(w, f, m->screen_task);
                    fake_ready(f);
                    break;
                case GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB:
                    answer_report(w, f, m->report_job);
                    fake_ready(f);
                    break;
                default:
                    n--;
                    break;
                }
            }
            gs_inbound_release(&in);
        }
        if (!f->dead && w->now - f->last_hb >= 1000) {
            f->last_hb = w->now;
            Gastroscreen__V1__WorkerHeartbeat h = GASTROSCREEN__V1__WORKER_HEARTBEAT__INIT;
            h.worker_id = f->id;
            Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
            m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT;
            m.worker_heartbeat = &h;
            fake_send(f, &m);
        }
    }
    for (;;) {
        gs_inbound in;
        memset(&in, 0, sizeof in);
        gs_recv_status st = gs_transport_recv(w->sub, &in, GS_RECV_DONTWAIT);
        if (st == GS_RECV_MESSAGE && strcmp(in.topic, "slide.accepted.") == 0)
            w->accepted_events++;
        if (st == GS_RECV_MESSAGE && strncmp(in.topic, "slide.verdict.", 14) == 0) {
            w->verdict_events++;
            snprintf(w->verdict_topic, sizeof w->verdict_topic, "%s", in.topic);
            const Gastroscreen__V1__EventMessage *ev = in.msg.event;
            if (ev && ev->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT) {
                w->verdict_fg_method = ev->verdict->foreground_method;
                snprintf(w->verdict_precision, sizeof w->verdict_precision, "%s",
                         ev->verdict->model ? ev->verdict->model->precision : "(no model)");
                w->verdict_blur_method = ev->verdict->blur_method;
            }
        }
        gs_inbound_release(&in);
        if (st == GS_RECV_EMPTY || st == GS_RECV_ERROR)
            break;
    }
    return n;
}

/* Pumps until pred holds; when nothing moves, the test clock advances half a second. */
int run_until(world *w, predicate *pred, const char *id)
{
    int idle = 0;
    for (int round = 0; round < 200000; round++) {
        if (pred(w, id))
            return 1;
        if (pump(w) == 0) {
            if (++idle >= 3) {
                w->now += 500;
                idle = 0;
            }
        } else
            idle = 0;
    }
    return pred(w, id);
}

int is_terminal(world *w, const char *id)
{
    gs_slide_info info;
    if (gs_slides_get(gs_coordinator_slides(w->c), id, &info) != 0)
        return 0;
    return info.state == GS_SLIDE_DONE || info.state == GS_SLIDE_FAILED;
}

int welcomed(world *w, const char *id)
{
    (void)id;
    for (size_t i = 0; i < w->nf; i++)
        if (!w->f[i].welcomed && !w->f[i].refused)
            return 0;
    return 1;
}

int has_verdict_event(world *w, const char *id)
{
    (void)id;
    return w->verdict_events > 0;
}

gs_slide_info slide_info(world *w, const char *id)
{
    gs_slide_info info;
    assert_int_equal(gs_slides_get(gs_coordinator_slides(w->c), id, &info), 0);
    return info;
}

/* Submits a path over the submit socket (REQ) and returns the reply's status. */
int submit(world *w, const char *path, char id[GS_SLIDE_ID_LEN + 1], uint64_t *seq)
{
    gs_transport_options q = {.quiet = 1};
    gs_transport *req = gs_transport_new(w->ctx, GS_CHANNEL_SUBMIT, ZMQ_REQ, GS_CONNECT,
                                         gs_coordinator_endpoint(w->c, GS_CHANNEL_SUBMIT), &q);
    assert_non_null(req);
    Gastroscreen__V1__SubmitRequest r = GASTROSCREEN__V1__SUBMIT_REQUEST__INIT;
    r.path = (char *)path;
    r.request_id = "rq-1";
    Gastroscreen__V1__SubmitMessage m = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST;
    m.request = &r;
    assert_int_equal(gs_transport_send(req, NULL, &m.base, 0), 0);
    int status = -1;
    for (int i = 0; i < 100000 && status < 0; i++) {
        pump(w);
        gs_inbound in;
        memset(&in, 0, sizeof in);
        if (gs_transport_recv(req, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE) {
            assert_int_equal(in.msg.submit->body_case,
                             GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REPLY);
            const Gastroscreen__V1__SubmitReply *rep = in.msg.submit->reply;
            assert_string_equal(rep->request_id, "rq-1");
            status = rep->status;
            if (id)
                snprintf(id, GS_SLIDE_ID_LEN + 1, "%s", rep->slide_id);
            if (seq)
                *seq = rep->seq;
        }
        gs_inbound_release(&in);
    }
    gs_transport_destroy(&req);
    return status;
}

/* One query over a REQ; the reply is returned unpacked (caller frees). */
Gastroscreen__V1__QueryMessage *query(world *w, Gastroscreen__V1__QueryMessage *m)
{
    gs_transport_options q = {.quiet = 1};
    gs_transport *req = gs_transport_new(w->ctx, GS_CHANNEL_QUERY, ZMQ_REQ, GS_CONNECT,
                                         gs_coordinator_endpoint(w->c, GS_CHANNEL_QUERY), &q);
    assert_non_null(req);
    m->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    assert_int_equal(gs_transport_send(req, NULL, &m->base, 0), 0);
    Gastroscreen__V1__QueryMessage *out = NULL;
    for (int i = 0; i < 100000 && !out; i++) {
        pump(w);
        gs_inbound in;
        memset(&in, 0, sizeof in);
        if (gs_transport_recv(req, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE) {
            out = in.msg.query;
            in.msg.query = NULL; /* keep it past the release */
        }
        gs_inbound_release(&in);
    }
    gs_transport_destroy(&req);
    assert_non_null(out);
    return out;
}

Gastroscreen__V1__QueryMessage *events_since(world *w, uint64_t after, uint32_t max)
{
    Gastroscreen__V1__EventsSinceRequest r = GASTROSCREEN__V1__EVENTS_SINCE_REQUEST__INIT;
    r.after_seq = after;
    r.max_events = max;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE;
    m.events_since = &r;
    Gastroscreen__V1__QueryMessage *rep = query(w, &m);
    assert_int_equal(rep->body_case, GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS);
    return rep;
}

/* Verdict events of slide id in the journal (via the query socket). */
int journal_verdicts(world *w, const char *id)
{
    Gastroscreen__V1__QueryMessage *rep = events_since(w, 0, 1000);
    int n = 0;
    for (size_t i = 0; i < rep->events->n_events; i++) {
        const Gastroscreen__V1__EventMessage *ev = rep->events->events[i];
        if (ev->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT &&
            strcmp(ev->verdict->slide_id, id) == 0)
            n++;
    }
    gastroscreen__v1__query_message__free_unpacked(rep, NULL);
    return n;
}

void start_with_workers(world *w)
{
    world_start(w);
    fakes_all(w);
    assert_true(run_until(w, welcomed, NULL));
}

/* Observations in a histogram of the stats (n_bounds + 1 buckets). */
uint64_t hist_count(const gs_metrics_hist *h, size_t n_bounds)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= n_bounds; i++)
        n += h->counts[i];
    return n;
}

/* ------------------------------------------------------------------------------------------ */
