/*
 * Fuzz target for what the stage workers parse: the input's bytes go through the transport a
 * worker receives on (stages/runtime/transport: a WorkMessage on its DEALER, or a TileMessage
 * and its pixel frame on a tile inbox PULL) and whatever passes the transport's checks goes to
 * the stage handler that serves that body, the way the worker loop hands it on:
 *     PlanJob    -> gs_foreground_plan            (classical method)
 *     TileJob    -> gs_tiler_job_new, then up to 4 tiles read
 *     ScreenTask -> gs_screener_score             (when the seeded bundle is built)
 *     ReportJob  -> gs_reporter_write
 *     TileHeader + pixels -> gs_blur_judge (classical), gs_infer_run (seeded bundle)
 * WorkerWelcome and CoordinatorHeartbeat stop at the transport (the worker loop reads two
 * fields of them). A job's slide path is replaced by tests/data/small.svs and its report
 * folder by the scratch folder, so no input reads or writes a file of its own choosing.
 *
 * Input: [0] selects the socket: even = work, odd = tiles; for tiles [1..2] is the header's
 * length (little-endian) and the pixel frame is the rest.
 *
 * Built with -fsanitize=fuzzer when GS_FUZZ is on; otherwise linked with tests/fuzz/
 * standalone_main.c, which replays the seed corpus once in every build.
 */
#include "model/network.h"
#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/handlers/blur.h"
#include "stages/handlers/foreground.h"
#include "stages/handlers/infer.h"
#include "stages/handlers/reporter.h"
#include "stages/handlers/screener.h"
#include "stages/handlers/tiler.h"
#include "stages/runtime/transport.h"
#include "tests/fuzz/fuzz_util.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Largest tile side read from the slide per tile: bigger grids are checked, not read. */
#define MAX_READ_SIDE 128
#define MAX_TILES_READ 4

static struct {
    int ready;
    void *ctx;
    void *router, *push;  /* the coordinator's and the tiler's ends (raw sockets) */
    gs_transport *dealer; /* the worker's ends */
    gs_transport *pull;
    uint8_t dealer_id[256];
    size_t dealer_id_len;
    char slide[PATH_MAX], reports[PATH_MAX];
    gs_model *model; /* the seeded bundle, or NULL */
    gs_blur *blur;
    gs_infer *infer;
    gs_screener *screener;
    gs_foreground_options fg;
    gs_reporter_options rep;
} W;

static void setup(void)
{
    const char *data = getenv("GS_TEST_DATA");
    snprintf(W.slide, sizeof W.slide, "%s/small.svs", data ? data : "tests/data");
    snprintf(W.reports, sizeof W.reports, "%s/reports", fuzz_scratch());
    W.ctx = zmq_ctx_new();
    GS_ASSERT(W.ctx);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://fuzz-work-%d", (int)getpid());
    W.router = zmq_socket(W.ctx, ZMQ_ROUTER);
    GS_ASSERT(W.router && zmq_bind(W.router, ep) == 0);
    gs_transport_options q = {.quiet = 1};
    W.dealer = gs_transport_new(W.ctx, GS_CHANNEL_WORK, ZMQ_DEALER, GS_CONNECT, ep, &q);
    GS_ASSERT(W.dealer);
    /* The ROUTER learns the dealer's routing id from its first message. */
    GS_ASSERT(zmq_send(gs_transport_socket(W.dealer), "hi", 2, 0) == 2);
    int n = zmq_recv(W.router, W.dealer_id, sizeof W.dealer_id, 0);
    GS_ASSERT(n > 0 && (size_t)n <= sizeof W.dealer_id);
    W.dealer_id_len = (size_t)n;
    char hi[8];
    GS_ASSERT(zmq_recv(W.router, hi, sizeof hi, 0) == 2);
    snprintf(ep, sizeof ep, "inproc://fuzz-tiles-%d", (int)getpid());
    W.pull = gs_transport_new(W.ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND, ep, &q);
    GS_ASSERT(W.pull);
    W.push = zmq_socket(W.ctx, ZMQ_PUSH);
    GS_ASSERT(W.push && zmq_connect(W.push, ep) == 0);

    const char *build = getenv("GS_BUILD_DIR");
    char bundle[PATH_MAX];
    snprintf(bundle, sizeof bundle, "%s/tests/seeded/seed1.safetensors", build ? build : ".");
    if (access(bundle, R_OK) == 0) {
        W.model = gs_model_load(bundle);
        GS_ASSERT(W.model);
        W.infer = gs_infer_new(W.model, 1, NULL);
        W.screener = gs_screener_new(W.model, 0, NULL);
        GS_ASSERT(W.infer && W.screener);
    }
    W.blur = gs_blur_new(NULL, NULL);
    GS_ASSERT(W.blur);
    gs_foreground_options_default(&W.fg);
    gs_reporter_options_default(&W.rep);
    W.rep.report_dir = W.reports;
    W.rep.thumbnail_size = 64;
    W.ready = 1;
}

static void on_plan(Gastroscreen__V1__PlanJob *j)
{
    char *path = j->path;
    j->path = W.slide;
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(j, &W.fg, "foreground.fuzz");
    GS_ASSERT(r);
    GS_ASSERT(r->error[0] || r->grid || r->unassessable_reason[0]);
    gs_foreground_result_free(&r);
    j->path = path;
}

static void on_tile_job(Gastroscreen__V1__TileJob *j)
{
    char *path = j->path;
    j->path = W.slide;
    gs_tiler_job *t = gs_tiler_job_new(j, "tiler.fuzz");
    if (t && j->grid && j->grid->tile_size <= MAX_READ_SIDE) {
        gs_tiler_item it;
        for (int i = 0; i < MAX_TILES_READ && gs_tiler_job_next(t, &it) == 1; i++) {
            if (!it.failed)
                GS_ASSERT(it.pixels_len == (size_t)it.header.width * it.header.height * 3);
            gs_tiler_item_release(&it);
        }
        Gastroscreen__V1__TileJobDone done;
        gs_tiler_job_done(t, &done);
        size_t n_unsent;
        gs_tiler_job_unsent(t, &n_unsent);
        GS_ASSERT(n_unsent <= j->n_tiles);
    }
    gs_tiler_job_destroy(&t);
    j->path = path;
}

static void on_screen(Gastroscreen__V1__ScreenTask *t)
{
    if (!W.screener)
        return;
    gs_screen_result r;
    if (gs_screener_score(W.screener, t, "screener.fuzz", &r) == 0 && !r.r.error[0])
        GS_ASSERT(r.r.score >= 0 && r.r.score <= 1);
}

static void on_report(Gastroscreen__V1__ReportJob *j)
{
    char *path = j->path, *out = j->out_dir;
    j->path = W.slide;
    j->out_dir = "";
    gs_report_result r;
    GS_ASSERT(gs_reporter_write(j, &W.rep, "reporter.fuzz", &r) == 0);
    j->path = path;
    j->out_dir = out;
}

static void work(const uint8_t *data, size_t size)
{
    zmq_send(W.router, W.dealer_id, W.dealer_id_len, ZMQ_SNDMORE);
    zmq_send(W.router, data, size, 0);
    gs_inbound in;
    gs_recv_status st = gs_transport_recv(W.dealer, &in, 0);
    GS_ASSERT(st == GS_RECV_MESSAGE || st == GS_RECV_DROPPED);
    if (st == GS_RECV_MESSAGE) {
        Gastroscreen__V1__WorkMessage *m = in.msg.work;
        gs_fence f;
        if (gs_fence_of(&m->base, &f) == 0)
            (void)gs_fence_ok(&f);
        switch (m->body_case) {
        case GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB:
            on_plan(m->plan_job);
            break;
        case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB:
            on_tile_job(m->tile_job);
            break;
        case GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK:
            on_screen(m->screen_task);
            break;
        case GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB:
            on_report(m->report_job);
            break;
        default:
            break;
        }
    }
    gs_inbound_release(&in);
}

static void tile(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t hl = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (hl > size)
        hl = size;
    zmq_send(W.push, data, hl, ZMQ_SNDMORE);
    zmq_send(W.push, data + hl, size - hl, 0);
    gs_inbound in;
    gs_recv_status st = gs_transport_recv(W.pull, &in, 0);
    GS_ASSERT(st == GS_RECV_MESSAGE || st == GS_RECV_DROPPED);
    if (st == GS_RECV_MESSAGE) {
        const Gastroscreen__V1__TileHeader *h = in.msg.tile->tile;
        gs_blur_result b;
        if (gs_blur_judge(W.blur, h, in.pixels, in.pixels_len, "blur.fuzz", &b) == 0 &&
            !b.r.error[0])
            GS_ASSERT(b.r.blurry == 0 || b.r.blurry == 1);
        if (W.infer) {
            const Gastroscreen__V1__TileHeader *hs[] = {h};
            const uint8_t *px[] = {in.pixels};
            size_t lens[] = {in.pixels_len};
            if (gs_infer_run(W.infer, 1, hs, px, lens, "infer.fuzz", NULL) == 0) {
                const Gastroscreen__V1__TileResult *r = gs_infer_result(W.infer, 0);
                GS_ASSERT(r);
                if (r->outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED)
                    GS_ASSERT(r->score >= 0 && r->score <= 1 && r->n_feature == GS_FEATURE_DIM);
            }
        }
    }
    gs_inbound_release(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!W.ready)
        setup();
    if (size < 1)
        return 0;
    if (data[0] % 2 == 0)
        work(data + 1, size - 1);
    else
        tile(data + 1, size - 1);
    return 0;
}
