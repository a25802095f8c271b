/* A tile inbox under CURVE (stages/runtime/worker with inbox_curve and the ZAP handler of
 * stages/runtime/keys): the infer worker's hello carries the inbox's public key, a worker key
 * without the tiler role cannot push tiles into it, a tiler key can, and the tile reaches the
 * handler. Waits are hang guards only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "stages/runtime/keys.h"
#include "stages/runtime/transport.h"
#include "stages/runtime/worker.h"
#include "tests/unit/fake_coordinator.h"
#include "tests/unit/key_folder.h"

static int result_handler(gs_worker_job *job, void *ud)
{
    (void)ud;
    for (size_t i = 0; i < gs_worker_job_tile_count(job); i++) {
        const uint8_t *px;
        size_t len;
        const Gastroscreen__V1__TileHeader *h = gs_worker_job_tile(job, i, &px, &len);
        Gastroscreen__V1__WorkMessage out = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        Gastroscreen__V1__TileResult r = GASTROSCREEN__V1__TILE_RESULT__INIT;
        r.slide_id = h->slide_id;
        r.attempt = h->attempt;
        r.tile_index = h->tile_index;
        r.worker_id = (char *)gs_worker_job_worker_id(job);
        r.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED;
        r.score = (float)px[0] / 255.0f;
        r.request = h->request;
        out.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        out.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
        out.tile_result = &r;
        if (gs_worker_job_emit(job, &out) < 0)
            return -1;
    }
    return 0;
}

static void push_tile(gs_transport *push)
{
    Gastroscreen__V1__TileMessage tm = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    Gastroscreen__V1__TileHeader h = GASTROSCREEN__V1__TILE_HEADER__INIT;
    Gastroscreen__V1__InferJob ij = GASTROSCREEN__V1__INFER_JOB__INIT;
    tm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    tm.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    tm.tile = &h;
    h.slide_id = "0123456789abcdef";
    h.attempt = 1;
    h.tile_index = 3;
    h.request = 1;
    h.width = h.height = 16;
    h.channels = 3;
    h.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    h.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_INFER;
    h.infer = &ij;
    uint8_t px[16 * 16 * 3];
    memset(px, 204, sizeof px);
    assert_int_equal(gs_transport_send_tile(push, &tm, px, sizeof px, NULL, NULL, 0), 0);
}

static void test_curve_inbox(void **state)
{
    (void)state;
    keys_folder k;
    make_folder(&k);
    coord c;
    coord_open(&c, "inproc://test-curve-inbox-work");
    gs_zap *zap = gs_zap_new(c.ctx, k.dir, "test");
    assert_non_null(zap);
    /* The infer worker's own pair: blur1's (the role check is the coordinator's, not the
     * inbox's). */
    client_keys own;
    load_client(&own, k.workers, "blur1", k.coord_pub);

    gs_worker_config cfg;
    gs_worker_config_default(&cfg);
    cfg.stage = GASTROSCREEN__V1__STAGE__STAGE_INFER;
    cfg.work_endpoint = "inproc://test-curve-inbox-work";
    cfg.instance = "7";
    cfg.threads = 1;
    cfg.batch_size = 1;
    cfg.handler = result_handler;
    cfg.tile_inbox_bind = "tcp://127.0.0.1:*";
    cfg.stop = &stop_flag;
    cfg.zmq_ctx = c.ctx;
    cfg.quiet = 1;
    cfg.heartbeat_ms = 100;
    cfg.curve = &own.keys;
    cfg.inbox_curve = 1;
    stop_flag = 0;
    runner r = {0};
    r.w = gs_worker_new(&cfg);
    assert_non_null(r.w);
    r.rc = 99;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_worker, &r), 0);

    gs_inbound in;
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO, &in);
    assert_string_equal(m->hello->tile_inbox_key, own.pub);
    char inbox[256], inbox_key[41];
    snprintf(inbox, sizeof inbox, "%s", m->hello->tile_inbox);
    snprintf(inbox_key, sizeof inbox_key, "%s", m->hello->tile_inbox_key);
    gs_inbound_release(&in);
    coord_welcome(&c, 1, "", "c1", 100, 50);

    /* A worker key without the tiler role is refused by the inbox. */
    client_keys blur;
    load_client(&blur, k.workers, "blur1", inbox_key);
    gs_transport *push = gs_transport_new_curve(c.ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                                inbox, &fake_quiet, &blur.keys);
    assert_non_null(push);
    for (int i = 0; i < WAIT_MS / 10 && gs_zap_refused(zap, "tiles") == 0; i++)
        usleep(10 * 1000);
    assert_true(gs_zap_refused(zap, "tiles") >= 1);
    gs_transport_destroy(&push);

    /* A tiler key with the key from the hello gets its tile to the handler. */
    client_keys tiler;
    load_client(&tiler, k.workers, "tiler1", inbox_key);
    push = gs_transport_new_curve(c.ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT, inbox, &fake_quiet,
                                  &tiler.keys);
    assert_non_null(push);
    push_tile(push);
    m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT, &in);
    assert_int_equal(m->tile_result->tile_index, 3);
    gs_inbound_release(&in);
    gs_transport_destroy(&push);

    stop_flag = 1;
    pthread_join(th, NULL);
    gs_worker_destroy(&r.w);
    gs_zap_destroy(&zap);
    coord_close(&c);
    free_folder(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curve_inbox),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
