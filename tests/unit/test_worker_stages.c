/* worker_stages: the tile stages' handlers on a real gs_worker driven by a fake coordinator
 * (tests/unit/fake_coordinator): the tiler reads tiles and pushes them to sinks (a sink that
 * is gone fails the tiles, a blur job keeps queued infer tiles), infer binds its inbox and
 * batches tiles and hands back a batch on stop, and the foreground handler runs without
 * sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/fake_coordinator.h"
#include "ops/error.h"
#include "stages/handlers/foreground.h"
#include "stages/handlers/tiler.h"
#include "stages/runtime/transport.h"
#include "stages/runtime/worker.h"

/* ---- the tiler stage on a worker ------------------------------------------------------- */

typedef struct {
    Gastroscreen__V1__WorkMessage msg;
    Gastroscreen__V1__TileJob job;
    Gastroscreen__V1__TileGrid grid;
    Gastroscreen__V1__InferJob infer;
    Gastroscreen__V1__TileRef refs[20];
    Gastroscreen__V1__TileRef *ptrs[20];
    char *sinks[1];
    char path[4096];
} tile_job_box;

static void make_tile_job(tile_job_box *b, const char *rel, size_t n, const char *sink,
                          uint64_t job_id)
{
    memset(b, 0, sizeof *b);
    snprintf(b->path, sizeof b->path, "%s/%s", getenv("GS_TEST_DATA"), rel);
    gastroscreen__v1__work_message__init(&b->msg);
    gastroscreen__v1__tile_job__init(&b->job);
    gastroscreen__v1__tile_grid__init(&b->grid);
    gastroscreen__v1__infer_job__init(&b->infer);
    b->grid.tile_size = 512;
    b->grid.target_mpp = 0.5;
    b->grid.window_level0 = 513;
    b->grid.stride_level0 = 513;
    b->job.slide_id = "00000000000000f6";
    b->job.attempt = 1;
    b->job.job_id = job_id;
    b->job.path = b->path;
    b->job.grid = &b->grid;
    b->job.request = 1;
    b->job.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_INFER;
    b->job.infer = &b->infer;
    for (size_t i = 0; i < n; i++) {
        gastroscreen__v1__tile_ref__init(&b->refs[i]);
        b->refs[i].index = (uint32_t)i;
        b->refs[i].x0 = (int64_t)(i % 4) * 513;
        b->refs[i].y0 = (int64_t)(i / 4) * 513;
        b->ptrs[i] = &b->refs[i];
    }
    b->job.n_tiles = n;
    b->job.tiles = b->ptrs;
    b->sinks[0] = (char *)sink;
    b->job.n_sink_endpoints = 1;
    b->job.sink_endpoints = b->sinks;
    b->msg.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB;
    b->msg.tile_job = &b->job;
}

/* Receives tiles from the inbox until none comes for `quiet_ms`; marks their indices. */
static int drain_inbox(gs_transport *inbox, int *seen, size_t n, int quiet_ms)
{
    int got = 0;
    for (;;) {
        zmq_pollitem_t it = {gs_transport_socket(inbox), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, quiet_ms) != 1)
            return got;
        gs_inbound in;
        assert_int_equal(gs_transport_recv(inbox, &in, GS_RECV_DONTWAIT), GS_RECV_MESSAGE);
        const Gastroscreen__V1__TileHeader *h = in.msg.tile->tile;
        assert_true(h->tile_index < n);
        assert_int_equal(seen[h->tile_index], 0);
        seen[h->tile_index] = 1;
        assert_int_equal(in.pixels_len, 512 * 512 * 3);
        assert_string_equal(h->slide_id, "00000000000000f6");
        gs_inbound_release(&in);
        got++;
    }
}

/* A job whose only sink is gone (nothing listens at its inbox): after the sink wait the tile
 * being pushed and every later one fail as requests (the coordinator asks again), the job ends
 * with TileJobDone, and the handler is free for the next job instead of waiting forever. */
static void tiler_sink_gone(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    assert_non_null(ctx);
    gs_tiler_stage *stage = gs_tiler_stage_new(ctx, 1, 4);
    assert_non_null(stage);
    gs_tiler_stage_set_sink_wait(stage, 300);
    /* A port that was free a moment ago: bound, its number read, closed. */
    gs_transport *probe = gs_transport_new(ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND,
                                           "tcp://127.0.0.1:*", &fake_quiet);
    assert_non_null(probe);
    char gone[256];
    snprintf(gone, sizeof gone, "%s", gs_transport_endpoint(probe));
    gs_transport_destroy(&probe);
    tile_job_box b;
    make_tile_job(&b, "CMU-1-Small-Region.svs", 5, gone, 9);
    int rc = 99;
    gs_worker_job *j = gs_worker_job_run_local(gs_tiler_handle, stage, &b.msg, "tiler.1@t", &rc);
    assert_non_null(j);
    assert_int_equal(rc, 0);
    assert_int_equal(gs_worker_job_result_count(j), 6);
    for (size_t i = 0; i < 5; i++) {
        const Gastroscreen__V1__WorkMessage *m = gs_worker_job_result(j, i);
        assert_int_equal(m->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT);
        assert_int_equal(m->tile_result->tile_index, i);
        assert_int_equal(m->tile_result->outcome,
                         GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR);
        assert_non_null(strstr(m->tile_result->error, "no tile sink took a tile for 0.3 s"));
    }
    const Gastroscreen__V1__WorkMessage *m = gs_worker_job_result(j, 5);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE);
    assert_int_equal(m->tile_job_done->sent, 0);
    assert_int_equal(m->tile_job_done->failed, 5);
    gs_worker_job_destroy_local(&j);
    gs_tiler_stage_destroy(&stage);
    zmq_ctx_term(ctx);
}

static void tiler_worker(void **state)
{
    (void)state;
    coord c;
    coord_open(&c, "inproc://test-tiler-work");
    gs_transport *inbox = gs_transport_new(c.ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND,
                                           "inproc://test-tiler-inbox", &fake_quiet);
    assert_non_null(inbox);
    gs_tiler_stage *stage = gs_tiler_stage_new(c.ctx, 1, 4);
    assert_non_null(stage);
    runner r;
    pthread_t th;
    gs_worker *w =
        start_stage_worker("inproc://test-tiler-work", c.ctx, GASTROSCREEN__V1__STAGE__STAGE_TILER,
                           gs_tiler_handle, stage, 1, &r, &th);
    assert_int_equal(coord_handshake_stage(&c, "c1", 100, 50, GASTROSCREEN__V1__STAGE__STAGE_TILER),
                     1);

    /* Six tiles pushed to the inbox, then TileJobDone. */
    tile_job_box b;
    make_tile_job(&b, "CMU-1-Small-Region.svs", 6, "inproc://test-tiler-inbox", 1);
    coord_send(&c, &b.msg);
    int seen[20] = {0};
    int got = 0;
    int64_t end = ms_now() + WAIT_MS;
    while (got < 6 && ms_now() < end)
        got += drain_inbox(inbox, seen, 20, 100);
    assert_int_equal(got, 6);
    gs_inbound in;
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE, &in);
    assert_int_equal(m->tile_job_done->sent, 6);
    assert_int_equal(m->tile_job_done->failed, 0);
    assert_int_equal(m->tile_job_done->job_id, 1);
    gs_inbound_release(&in);

    /* A corrupt slide: every tile a failed request, the job still done. */
    make_tile_job(&b, "corrupt/unreadable.svs", 3, "inproc://test-tiler-inbox", 2);
    coord_send(&c, &b.msg);
    for (int i = 0; i < 3; i++) {
        m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT, &in);
        assert_int_equal(m->tile_result->outcome,
                         GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR);
        assert_non_null(strstr(m->tile_result->error, "Bogus marker length"));
        gs_inbound_release(&in);
    }
    m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE, &in);
    assert_int_equal(m->tile_job_done->failed, 3);
    gs_inbound_release(&in);

    /* Twenty tiles into an inbox nobody reads: the pipe fills (HWM), the tiler waits; a stop
     * hands back exactly the tiles not pushed. */
    make_tile_job(&b, "CMU-1-Small-Region.svs", 20, "inproc://test-tiler-inbox", 3);
    coord_send(&c, &b.msg);
    end = ms_now() + WAIT_MS;
    uint64_t before = 6 + 3; /* items of the two jobs above */
    while (c.last_progress < before + 4 && ms_now() < end) {
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT, &in);
        gs_inbound_release(&in);
    }
    assert_true(c.last_progress >= before + 4);
    /* The tiler waits for room in a handler thread; the main loop keeps heartbeating. */
    int hb_before = c.heartbeats;
    for (int i = 0; i < 3; i++) {
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT, &in);
        assert_int_equal(c.last_in_hand_job, 3);
        gs_inbound_release(&in);
    }
    assert_int_equal(c.heartbeats, hb_before + 3);
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE, &in);
    assert_int_equal(m->goodbye->n_handed_back, 1);
    const Gastroscreen__V1__HandedBack *hb = m->goodbye->handed_back[0];
    assert_int_equal(hb->job->job_id, 3);
    assert_int_equal(hb->job->kind, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_TILES);
    assert_true(hb->n_unsent_tiles > 0 && hb->n_unsent_tiles < 20);
    int seen3[20] = {0};
    for (size_t i = 0; i < hb->n_unsent_tiles; i++) {
        assert_true(hb->unsent_tiles[i] < 20);
        seen3[hb->unsent_tiles[i]] = 2;
    }
    size_t unsent = hb->n_unsent_tiles;
    gs_inbound_release(&in);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    /* What was pushed is in the inbox: pushed + handed back = all twenty, no overlap. */
    int seen_pushed[20] = {0};
    int pushed = drain_inbox(inbox, seen_pushed, 20, 500);
    for (int i = 0; i < 20; i++)
        assert_int_equal(seen_pushed[i] + (seen3[i] != 0), 1);
    assert_int_equal((size_t)pushed + unsent, 20);
    gs_worker_destroy(&w);
    gs_tiler_stage_destroy(&stage);
    gs_transport_destroy(&inbox);
    coord_close(&c);
}

/* A lost tile (13 tiles to infer, 12 results, the slide finished only by the stall re-request):
 * with one slide in its blur check while another infers, a tiler thread serves infer and blur
 * jobs in turn. Switching one PUSH between the two stages' inboxes disconnected the infer inbox,
 * and ZeroMQ discards what is still queued for a disconnected peer once LINGER (1 s) runs out:
 * tiles counted as pushed but never delivered. Over ipc:// (small kernel buffers, so the tiles
 * wait in the PUSH's queue while the infer worker, RCVHWM 1, reads nothing); inproc:// keeps
 * queued messages on a disconnect and would not show it. */
static void tiler_blur_job_keeps_queued_infer_tiles(void **state)
{
    (void)state;
    coord c;
    coord_open(&c, "inproc://test-tiler-switch-work");
    char infer_ep[128], blur_ep[128];
    snprintf(infer_ep, sizeof infer_ep, "ipc:///tmp/gs-test-tiler-infer-%ld", (long)getpid());
    snprintf(blur_ep, sizeof blur_ep, "ipc:///tmp/gs-test-tiler-blur-%ld", (long)getpid());
    gs_transport_options one = {1, NULL, 1};
    gs_transport *infer_in =
        gs_transport_new(c.ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND, infer_ep, &one);
    gs_transport *blur_in =
        gs_transport_new(c.ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND, blur_ep, &one);
    assert_non_null(infer_in);
    assert_non_null(blur_in);
    gs_tiler_stage *stage = gs_tiler_stage_new(c.ctx, 1, 4);
    assert_non_null(stage);
    runner r;
    pthread_t th;
    gs_worker *w = start_stage_worker("inproc://test-tiler-switch-work", c.ctx,
                                      GASTROSCREEN__V1__STAGE__STAGE_TILER, gs_tiler_handle, stage,
                                      1, &r, &th);
    assert_int_equal(coord_handshake_stage(&c, "c1", 100, 50, GASTROSCREEN__V1__STAGE__STAGE_TILER),
                     1);

    /* Four infer tiles: they fit in the PUSH's queue (HWM 4) with nobody reading. */
    tile_job_box b;
    make_tile_job(&b, "CMU-1-Small-Region.svs", 4, infer_ep, 1);
    coord_send(&c, &b.msg);
    gs_inbound in;
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE, &in);
    assert_int_equal(m->tile_job_done->job_id, 1);
    assert_int_equal(m->tile_job_done->sent, 4);
    gs_inbound_release(&in);

    /* Another slide's blur job on the same thread, to the blur inbox. */
    Gastroscreen__V1__BlurJob bj = GASTROSCREEN__V1__BLUR_JOB__INIT;
    make_tile_job(&b, "CMU-1-Small-Region.svs", 2, blur_ep, 2);
    b.job.slide_id = "00000000000000f7";
    b.job.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_BLUR;
    b.job.blur = &bj;
    coord_send(&c, &b.msg);
    m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE, &in);
    assert_int_equal(m->tile_job_done->job_id, 2);
    assert_int_equal(m->tile_job_done->sent, 2);
    gs_inbound_release(&in);

    /* Past the 1 s linger of a disconnect (the worker keeps heartbeating meanwhile), the busy
     * infer worker starts reading: every tile pushed to it is there. */
    int64_t until = ms_now() + 2500;
    while (ms_now() < until) {
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT, &in);
        gs_inbound_release(&in);
    }
    int seen[20] = {0};
    int got = drain_inbox(infer_in, seen, 20, 1000);
    assert_int_equal(got, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(seen[i], 1);
    int blur_seen[20] = {0};
    int blur_got = 0;
    int64_t end = ms_now() + WAIT_MS;
    while (blur_got < 2 && ms_now() < end) {
        zmq_pollitem_t it = {gs_transport_socket(blur_in), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) != 1)
            continue;
        assert_int_equal(gs_transport_recv(blur_in, &in, GS_RECV_DONTWAIT), GS_RECV_MESSAGE);
        const Gastroscreen__V1__TileHeader *h = in.msg.tile->tile;
        assert_string_equal(h->slide_id, "00000000000000f7");
        assert_int_equal(h->job_case, GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR);
        assert_true(h->tile_index < 2 && !blur_seen[h->tile_index]);
        blur_seen[h->tile_index] = 1;
        gs_inbound_release(&in);
        blur_got++;
    }
    assert_int_equal(blur_got, 2);

    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE, &in);
    assert_int_equal(m->goodbye->n_handed_back, 0);
    gs_inbound_release(&in);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    gs_worker_destroy(&w);
    gs_tiler_stage_destroy(&stage);
    gs_transport_destroy(&infer_in);
    gs_transport_destroy(&blur_in);
    coord_close(&c);
}

/* ---- tile stages: the worker binds the inbox and batches tiles ------------------------- */

/* Answers each tile of the batch with a TileResult whose score is the mean pixel / 255. */
static int score_handler(gs_worker_job *job, void *ud)
{
    (void)ud;
    size_t n = gs_worker_job_tile_count(job);
    assert_true(n >= 1 && n <= 4);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *px;
        size_t len;
        const Gastroscreen__V1__TileHeader *h = gs_worker_job_tile(job, i, &px, &len);
        uint64_t sum = 0;
        for (size_t k = 0; k < len; k++)
            sum += px[k];
        Gastroscreen__V1__WorkMessage out = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        Gastroscreen__V1__TileResult r = GASTROSCREEN__V1__TILE_RESULT__INIT;
        r.slide_id = h->slide_id;
        r.attempt = h->attempt;
        r.tile_index = h->tile_index;
        r.worker_id = (char *)gs_worker_job_worker_id(job);
        r.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED;
        r.score = (float)((double)sum / (double)len / 255.0);
        r.request = h->request;
        out.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        out.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
        out.tile_result = &r;
        if (gs_worker_job_emit(job, &out) < 0)
            return -1;
    }
    return 0;
}

/* Holds its batch until the worker stops, then hands it back. */
static int holding_handler(gs_worker_job *job, void *ud)
{
    (void)ud;
    int64_t end = ms_now() + 60000;
    while (!gs_worker_job_stopping(job) && ms_now() < end)
        usleep(1000);
    return gs_worker_job_hand_back(job, NULL, 0);
}

static gs_worker *start_infer_worker(void *ctx, const char *ep, gs_worker_handler *h, runner *r,
                                     pthread_t *th)
{
    gs_worker_config cfg;
    gs_worker_config_default(&cfg);
    cfg.stage = GASTROSCREEN__V1__STAGE__STAGE_INFER;
    cfg.work_endpoint = ep;
    cfg.instance = "7";
    cfg.threads = 1;
    cfg.batch_size = 4;
    cfg.handler = h;
    cfg.tile_inbox_bind = "tcp://0.0.0.0:*";
    cfg.advertise_host = "127.0.0.1";
    cfg.stop = &stop_flag;
    cfg.zmq_ctx = ctx;
    cfg.quiet = 1;
    cfg.heartbeat_ms = 100;
    stop_flag = 0;
    gs_worker *w = gs_worker_new(&cfg);
    assert_non_null(w);
    r->w = w;
    r->rc = 99;
    assert_int_equal(pthread_create(th, NULL, run_worker, r), 0);
    return w;
}

/* Hello (with the inbox) and welcome; tile stages announce no job slots. */
static void infer_handshake(coord *c, gs_worker *w)
{
    gs_inbound in;
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO, &in);
    assert_int_equal(m->hello->stage, GASTROSCREEN__V1__STAGE__STAGE_INFER);
    assert_int_equal(m->hello->batch_size, 4);
    assert_string_equal(m->hello->tile_inbox, gs_worker_tile_inbox(w));
    assert_non_null(strstr(m->hello->tile_inbox, "tcp://127.0.0.1:"));
    gs_inbound_release(&in);
    coord_welcome(c, 1, "", "c1", 100, 50);
}

static void push_test_tile(gs_transport *push, const char *slide, uint32_t attempt, uint32_t index,
                           int blur, uint8_t value)
{
    Gastroscreen__V1__TileMessage tm = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    Gastroscreen__V1__TileHeader h = GASTROSCREEN__V1__TILE_HEADER__INIT;
    Gastroscreen__V1__InferJob ij = GASTROSCREEN__V1__INFER_JOB__INIT;
    Gastroscreen__V1__BlurJob bj = GASTROSCREEN__V1__BLUR_JOB__INIT;
    tm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    tm.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    tm.tile = &h;
    h.slide_id = (char *)slide;
    h.attempt = attempt;
    h.tile_index = index;
    h.width = 16;
    h.height = 16;
    h.channels = 3;
    h.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    if (blur) {
        h.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR;
        h.blur = &bj;
    } else {
        h.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_INFER;
        h.infer = &ij;
    }
    uint8_t px[16 * 16 * 3];
    memset(px, value, sizeof px);
    assert_int_equal(gs_transport_send_tile(push, &tm, px, sizeof px, NULL, NULL, 0), 0);
}

static void infer_worker_batches_tiles(void **state)
{
    (void)state;
    coord c;
    coord_open(&c, "inproc://test-infer-work");
    runner r;
    pthread_t th;
    gs_worker *w = start_infer_worker(c.ctx, "inproc://test-infer-work", score_handler, &r, &th);
    infer_handshake(&c, w);
    gs_transport *push = gs_transport_new(c.ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                          gs_worker_tile_inbox(w), &fake_quiet);
    assert_non_null(push);
    /* Ten tiles of two slides, plus a blur tile, a tile with no fence and garbage. */
    for (uint32_t i = 0; i < 10; i++)
        push_test_tile(push, i % 2 ? "00000000000000a1" : "00000000000000a2", 1, i, 0,
                       (uint8_t)(10 * i));
    push_test_tile(push, "00000000000000a1", 1, 99, 1, 0);
    push_test_tile(push, "not-hex", 1, 98, 0, 0);
    void *raw = gs_transport_socket(push);
    assert_true(zmq_send(raw, "\xff\xff\xff", 3, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(raw, "x", 1, 0) >= 0);
    push_test_tile(push, "00000000000000a2", 1, 10, 0, 200);

    int seen[11] = {0};
    gs_inbound in;
    for (int k = 0; k < 11; k++) {
        const Gastroscreen__V1__WorkMessage *m =
            coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT, &in);
        const Gastroscreen__V1__TileResult *tr = m->tile_result;
        assert_true(tr->tile_index <= 10);
        assert_int_equal(seen[tr->tile_index], 0);
        seen[tr->tile_index] = 1;
        uint8_t v = tr->tile_index == 10 ? 200 : (uint8_t)(10 * tr->tile_index);
        assert_float_equal(tr->score, v / 255.0, 1e-6);
        assert_string_equal(tr->slide_id, tr->tile_index % 2 && tr->tile_index != 10
                                              ? "00000000000000a1"
                                              : "00000000000000a2");
        gs_inbound_release(&in);
    }
    int64_t end = ms_now() + WAIT_MS;
    while ((c.last_malformed < 2 || c.last_wrong_type < 1 || c.last_processed < 11) &&
           ms_now() < end) {
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT, &in);
        gs_inbound_release(&in);
    }
    assert_int_equal(c.last_malformed, 2);  /* garbage, no fence */
    assert_int_equal(c.last_wrong_type, 1); /* a blur tile at an infer worker */
    assert_int_equal(c.last_processed, 11);

    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE, &in);
    assert_int_equal(m->goodbye->n_handed_back, 0);
    gs_inbound_release(&in);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    gs_transport_destroy(&push);
    gs_worker_destroy(&w);
    coord_close(&c);
}

static void infer_worker_hands_back_its_batch(void **state)
{
    (void)state;
    coord c;
    coord_open(&c, "inproc://test-infer-stop");
    runner r;
    pthread_t th;
    gs_worker *w = start_infer_worker(c.ctx, "inproc://test-infer-stop", holding_handler, &r, &th);
    infer_handshake(&c, w);
    gs_transport *push = gs_transport_new(c.ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                          gs_worker_tile_inbox(w), &fake_quiet);
    push_test_tile(push, "00000000000000b1", 2, 5, 0, 1);
    push_test_tile(push, "00000000000000b2", 1, 6, 0, 1);
    push_test_tile(push, "00000000000000b1", 2, 7, 0, 1);
    /* Wait until a heartbeat shows both slide attempts in hand. */
    gs_inbound in;
    int64_t end = ms_now() + WAIT_MS;
    while (c.last_in_hand < 2 && ms_now() < end) {
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT, &in);
        gs_inbound_release(&in);
    }
    assert_true(c.last_in_hand >= 1);
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE, &in);
    /* Grouped per slide attempt, each with its tile indices; every tile exactly once. */
    int seen[8] = {0};
    for (size_t i = 0; i < m->goodbye->n_handed_back; i++) {
        const Gastroscreen__V1__HandedBack *hb = m->goodbye->handed_back[i];
        assert_int_equal(hb->job->kind, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_INFER_TILES);
        for (size_t k = 0; k < hb->n_unsent_tiles; k++) {
            uint32_t t = hb->unsent_tiles[k];
            assert_true(t >= 5 && t <= 7);
            seen[t]++;
            assert_string_equal(hb->job->slide_id,
                                t == 6 ? "00000000000000b2" : "00000000000000b1");
            assert_int_equal(hb->job->attempt, t == 6 ? 1 : 2);
        }
    }
    /* The first batch may hold one, two or all three tiles (they arrive as they arrive); the
     * rest wait in the inbox, which stopped being read. Those handed back are listed once. */
    int listed = seen[5] + seen[6] + seen[7];
    assert_true(listed >= 1 && listed <= 3);
    assert_true(seen[5] <= 1 && seen[6] <= 1 && seen[7] <= 1);
    /* One entry per slide attempt of each batch: a running batch [5] (or [5, 6]) and a queued
     * one [6, 7] (or [7]) make three entries. */
    assert_true(m->goodbye->n_handed_back >= 1 && m->goodbye->n_handed_back <= 3);
    gs_inbound_release(&in);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    gs_transport_destroy(&push);
    gs_worker_destroy(&w);
    coord_close(&c);
}

/* The foreground handler, run without sockets. */
static void foreground_handler_without_sockets(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/CMU-1-Small-Region.svs", getenv("GS_TEST_DATA"));
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__PlanJob pj = GASTROSCREEN__V1__PLAN_JOB__INIT;
    pj.slide_id = "00000000000000e5";
    pj.attempt = 1;
    pj.job_id = 3;
    pj.path = path;
    pj.min_tissue_fraction = 0.1f;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB;
    m.plan_job = &pj;
    int rc = 1;
    gs_worker_job *j = gs_worker_job_run_local(gs_foreground_handle, NULL, &m, NULL, &rc);
    assert_non_null(j);
    assert_int_equal(rc, 0);
    assert_int_equal(gs_worker_job_result_count(j), 1);
    const Gastroscreen__V1__WorkMessage *out = gs_worker_job_result(j, 0);
    assert_int_equal(out->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT);
    assert_string_equal(out->plan_result->error, "");
    assert_true(out->plan_result->n_tiles > 0);
    assert_int_equal(out->plan_result->job_id, 3);
    const uint32_t *unsent;
    size_t n;
    assert_false(gs_worker_job_handed_back(j, &unsent, &n));
    gs_worker_job_destroy_local(&j);
    assert_null(j);
}

/* omp_threads = n: the handler's kernels get n OpenMP threads; 0: what any new thread gets. */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tiler_worker),
        cmocka_unit_test(tiler_sink_gone),
        cmocka_unit_test(tiler_blur_job_keeps_queued_infer_tiles),
        cmocka_unit_test(infer_worker_batches_tiles),
        cmocka_unit_test(infer_worker_hands_back_its_batch),
        cmocka_unit_test(foreground_handler_without_sockets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
