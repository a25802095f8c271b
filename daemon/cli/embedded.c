#include "daemon/cli/embedded.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "model/network.h"
#include "ops/error.h"
#include "stages/handlers/blur.h"
#include "stages/handlers/foreground.h"
#include "stages/handlers/infer.h"
#include "stages/handlers/reporter.h"
#include "stages/handlers/screener.h"
#include "stages/handlers/tiler.h"
#include "stages/runtime/decision.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/worker.h"

/* The six worker stages, in the order they are started. */
static const Gastroscreen__V1__Stage STAGES[] = {
    GASTROSCREEN__V1__STAGE__STAGE_TILER,    GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND,
    GASTROSCREEN__V1__STAGE__STAGE_BLUR,     GASTROSCREEN__V1__STAGE__STAGE_INFER,
    GASTROSCREEN__V1__STAGE__STAGE_SCREENER, GASTROSCREEN__V1__STAGE__STAGE_REPORTER,
};
#define N_STAGES (sizeof STAGES / sizeof STAGES[0])

/* How long gs_embedded_new waits for the six welcomes: a safety net, not a timing. */
#define WELCOME_WAIT_MS 120000

typedef struct {
    gs_embedded *e;
    Gastroscreen__V1__Stage stage;
    gs_worker *w;
    gs_provenance prov;
    pthread_t thread;
    int started;
    atomic_int ended; /* gs_worker_run returned */
    int rc;
    char error[1024]; /* the thread's error message when rc != 0 */
} stage_worker;

struct gs_embedded {
    gs_config *cfg;
    void *zctx;
    gs_model *model;
    gs_decision decision; /* the screener's threshold and top k, resolved once */
    gs_provenance prov;   /* multitask + screener: what verdicts come from */
    gs_coordinator *coord;
    volatile sig_atomic_t stop_workers;
    stage_worker workers[N_STAGES];
    gs_tiler_stage *tiler;
    gs_blur_stage *blur;
    gs_infer_stage *infer;
    gs_screener_stage *screener;
    gs_foreground_options fg;
    gs_foreground_net *fg_net; /* the network method's state, or NULL (classical) */
    gs_reporter_options rep;
    char tile_inbox[2][128]; /* blur, infer */
};

/* Distinguishes the inproc names of several services in one process (tests). */
static atomic_uint instance_counter;

static void *worker_main(void *arg)
{
    stage_worker *sw = arg;
    sw->rc = gs_worker_run(sw->w);
    if (sw->rc != 0)
        snprintf(sw->error, sizeof sw->error, "%s", gs_error_get());
    atomic_store(&sw->ended, 1);
    return NULL;
}

/* Builds the worker of stage sw->stage (handler state, config) without starting it. */
static int make_worker(gs_embedded *e, stage_worker *sw, const char *work, int quiet)
{
    const gs_config *cfg = e->cfg;
    gs_worker_config wc;
    gs_worker_config_default(&wc);
    wc.stage = sw->stage;
    wc.work_endpoint = work;
    wc.instance = "embedded";
    wc.heartbeat_ms = (int)cfg->heartbeat_ms;
    wc.liveness = (int)cfg->liveness;
    wc.stop = &e->stop_workers;
    wc.zmq_ctx = e->zctx;
    wc.quiet = quiet;
    if (sw->stage != GASTROSCREEN__V1__STAGE__STAGE_TILER &&
        sw->stage != GASTROSCREEN__V1__STAGE__STAGE_REPORTER) {
        gs_net_id net = gs_provenance_stage_net(sw->stage);
        /* The same file as e->prov's, hashed once. */
        gs_provenance_init_hashed(&sw->prov, cfg->bundle, e->prov.sha256, e->model, &net, 1);
        wc.model = &sw->prov.msg;
    }
    const char *sha = e->prov.sha256;
    switch (sw->stage) {
    case GASTROSCREEN__V1__STAGE__STAGE_TILER:
        wc.threads = (int)cfg->tiler_threads;
        if (!(e->tiler = gs_tiler_stage_new(e->zctx, wc.threads, (int)cfg->tile_hwm)))
            return -1;
        wc.handler = gs_tiler_handle;
        wc.handler_ud = e->tiler;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND:
        /* The bundle's network when it is trained, else the classical mask. */
        if (gs_foreground_options_for_model(&e->fg, e->model, &e->fg_net) < 0)
            return -1;
        e->fg.tissue.mask_mpp = cfg->mask_mpp;
        e->fg.tissue.mask_max_dim = (int)cfg->mask_max_dim;
        e->fg.tissue.max_level0_pixels = (int64_t)(cfg->max_slide_mpx * 1e6);
        e->fg.tissue.max_thumbnail_source_pixels = (int64_t)(cfg->max_thumbnail_mpx * 1e6);
        e->fg.plan_budget_s = (double)cfg->plan_budget_ms / 1000.0;
        wc.threads = (int)cfg->foreground_threads;
        wc.handler = gs_foreground_handle;
        wc.handler_ud = &e->fg;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_BLUR:
        wc.threads = (int)cfg->blur_threads;
        wc.batch_size = (int)cfg->blur_batch;
        wc.tile_inbox_bind = e->tile_inbox[0];
        /* gs_blur picks the classical method when the bundle's blur network is untrained. */
        if (!(e->blur = gs_blur_stage_new(e->model, wc.threads, sha)))
            return -1;
        wc.handler = gs_blur_handle;
        wc.handler_ud = e->blur;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_INFER:
        wc.threads = (int)cfg->infer_threads;
        wc.batch_size = (int)cfg->infer_batch;
        wc.tile_inbox_bind = e->tile_inbox[1];
        if (!(e->infer = gs_infer_stage_new(e->model, wc.threads, wc.batch_size, sha)))
            return -1;
        wc.handler = gs_infer_handle;
        wc.handler_ud = e->infer;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_SCREENER:
        wc.threads = (int)cfg->screener_threads;
        if (!(e->screener = gs_screener_stage_new(e->model, wc.threads, (int)e->decision.top_k,
                                                  &e->prov.msg)))
            return -1;
        wc.handler = gs_screener_handle;
        wc.handler_ud = e->screener;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_REPORTER:
        gs_reporter_options_default(&e->rep);
        e->rep.report_dir = cfg->report_dir;
        wc.threads = (int)cfg->reporter_threads;
        wc.handler = gs_reporter_handle;
        wc.handler_ud = &e->rep;
        break;
    default:
        GS_ASSERT(0 && "not a worker stage");
    }
    if (wc.threads < 1)
        wc.threads = 1;
    wc.omp_threads = gs_worker_omp_threads(sw->stage, wc.threads);
    if (!(sw->w = gs_worker_new(&wc)))
        return -1;
    return 0;
}

/* Fails with the error of the first worker thread that ended while not asked to stop. */
static int check_workers(gs_embedded *e)
{
    if (e->stop_workers)
        return 0;
    for (size_t i = 0; i < N_STAGES; i++) {
        stage_worker *sw = &e->workers[i];
        if (sw->started && atomic_load(&sw->ended)) {
            gs_error_set("the embedded %s worker stopped: %s", gs_stage_name(sw->stage),
                         sw->rc != 0 && sw->error[0] ? sw->error : "no error given");
            return -1;
        }
    }
    return 0;
}

static int all_welcomed(gs_embedded *e)
{
    gs_coordinator_stats s;
    gs_coordinator_stats_get(e->coord, &s);
    for (size_t i = 0; i < N_STAGES; i++)
        if (s.stage[STAGES[i]].workers < 1)
            return 0;
    return 1;
}

gs_embedded *gs_embedded_new(const gs_embedded_options *o)
{
    GS_ASSERT(o && o->config);
    if (!o->model_path || !o->model_path[0]) {
        gs_error_set("embedded: no model bundle given");
        return NULL;
    }
    gs_embedded *e = calloc(1, sizeof *e);
    if (!e) {
        gs_error_set("out of memory");
        return NULL;
    }
    e->cfg = o->config;
    unsigned n = atomic_fetch_add(&instance_counter, 1);
    char ep[5][128];
    static const char *const names[] = {"query", "events", "work", "tiles-blur", "tiles-infer"};
    for (int i = 0; i < 5; i++)
        snprintf(ep[i], sizeof ep[i], "inproc://gs-embedded-%ld-%u-%s", (long)getpid(), n,
                 names[i]);
    snprintf(e->tile_inbox[0], sizeof e->tile_inbox[0], "%s", ep[3]);
    snprintf(e->tile_inbox[1], sizeof e->tile_inbox[1], "%s", ep[4]);
    if (gs_config_set_string(&e->cfg->intake, "") ||
        gs_config_set_string(&e->cfg->intake_connect, "") ||
        gs_config_set_string(&e->cfg->submit, "") || gs_config_set_string(&e->cfg->query, ep[0]) ||
        gs_config_set_string(&e->cfg->events, ep[1]) ||
        gs_config_set_string(&e->cfg->work, ep[2]) ||
        gs_config_set_string(&e->cfg->bundle, o->model_path) ||
        gs_config_set_string(&e->cfg->metrics, ""))
        goto fail;

    if (!(e->model = gs_model_load(o->model_path)) ||
        gs_model_set_precision(e->model, o->precision))
        goto fail;
    gs_config_decision(e->cfg, e->model, &e->decision);
    const gs_net_id nets[] = {GS_NET_MULTITASK, GS_NET_SCREENER};
    if (gs_provenance_init(&e->prov, o->model_path, e->model, nets, 2) != 0)
        goto fail;
    if (!(e->zctx = zmq_ctx_new())) {
        gs_error_set("zmq_ctx_new failed");
        goto fail;
    }

    gs_coordinator_options co;
    gs_coordinator_options_default(&co);
    co.config = e->cfg;
    co.zmq_ctx = e->zctx;
    co.model = &e->prov.msg;
    co.decision = &e->decision;
    co.quiet = o->quiet;
    co.features_dir = o->features_dir;
    if (!(e->coord = gs_coordinator_new(&co)))
        goto fail;

    for (size_t i = 0; i < N_STAGES; i++) {
        stage_worker *sw = &e->workers[i];
        sw->e = e;
        sw->stage = STAGES[i];
        if (make_worker(e, sw, ep[2], o->quiet) != 0) {
            gs_error_prefix("embedded %s worker", gs_stage_name(sw->stage));
            goto fail;
        }
    }
    for (size_t i = 0; i < N_STAGES; i++) {
        stage_worker *sw = &e->workers[i];
        int err = pthread_create(&sw->thread, NULL, worker_main, sw);
        if (err != 0) {
            gs_error_set("embedded %s worker: pthread_create: %s", gs_stage_name(sw->stage),
                         strerror(err));
            goto fail;
        }
        sw->started = 1;
    }
    int64_t until = gs_mono_ms() + WELCOME_WAIT_MS;
    while (!all_welcomed(e)) {
        if (gs_embedded_step(e, 50) != 0)
            goto fail;
        if (gs_mono_ms() > until) {
            gs_error_set("embedded: the workers were not welcomed within %d s",
                         WELCOME_WAIT_MS / 1000);
            goto fail;
        }
    }
    return e;

fail:
    gs_embedded_destroy(&e);
    return NULL;
}

void gs_embedded_destroy(gs_embedded **ep)
{
    if (!ep || !*ep)
        return;
    gs_embedded *e = *ep;
    e->stop_workers = 1;
    for (size_t i = 0; i < N_STAGES; i++) {
        stage_worker *sw = &e->workers[i];
        if (sw->started)
            pthread_join(sw->thread, NULL);
        gs_worker_destroy(&sw->w);
    }
    /* The stages' sockets and states go after their workers' handler threads. */
    gs_tiler_stage_destroy(&e->tiler);
    gs_blur_stage_destroy(&e->blur);
    gs_infer_stage_destroy(&e->infer);
    gs_screener_stage_destroy(&e->screener);
    gs_foreground_net_destroy(&e->fg_net);
    gs_coordinator_destroy(&e->coord);
    if (e->zctx)
        zmq_ctx_term(e->zctx);
    gs_model_destroy(&e->model);
    free(e);
    *ep = NULL;
}

int gs_embedded_submit(gs_embedded *e, const char *path, char out_id[GS_SLIDE_ID_LEN + 1],
                       int *duplicate)
{
    return gs_coordinator_intake(e->coord, path, GS_INTAKE_EMBEDDED, NULL, out_id, duplicate);
}

int gs_embedded_step(gs_embedded *e, int timeout_ms)
{
    if (gs_coordinator_step(e->coord, timeout_ms) != 0)
        return -1;
    return check_workers(e);
}

const gs_slides *gs_embedded_slides(const gs_embedded *e)
{
    return gs_coordinator_slides(e->coord);
}

gs_coordinator *gs_embedded_coordinator(gs_embedded *e)
{
    return e->coord;
}

const gs_provenance *gs_embedded_provenance(const gs_embedded *e)
{
    return &e->prov;
}

const gs_decision *gs_embedded_decision(const gs_embedded *e)
{
    return &e->decision;
}
