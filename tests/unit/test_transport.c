/* transport: options, framing and validation over inproc:// and tcp://127.0.0.1 (a port chosen
 * by the system). Garbage is injected with raw ZeroMQ sockets, so every drop reason is reached
 * exactly as a misbehaving peer would reach it, and after each one a valid message must still
 * come through the same socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "ops/error.h"
#include "stages/runtime/transport.h"

/* Generous: only guards against a hang; a healthy run never waits this long. */
#define WAIT_MS 10000

static const gs_transport_options quiet = {0, NULL, 1};

/* Waits for one message and receives it; the test fails if none comes. */
static gs_recv_status recv_one(gs_transport *t, gs_inbound *in)
{
    zmq_pollitem_t it = {gs_transport_socket(t), 0, ZMQ_POLLIN, 0};
    int n = zmq_poll(&it, 1, WAIT_MS);
    assert_int_equal(n, 1);
    return gs_transport_recv(t, in, GS_RECV_DONTWAIT);
}

static void raw_send(void *sock, const void *data, size_t len, int more)
{
    assert_true(zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) >= 0);
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len + 1);
    protobuf_c_message_pack(m, b);
    return b;
}

static void make_hello(Gastroscreen__V1__WorkMessage *env, Gastroscreen__V1__WorkerHello *h,
                       const char *id)
{
    gastroscreen__v1__work_message__init(env);
    gastroscreen__v1__worker_hello__init(h);
    h->worker_id = (char *)id;
    h->stage = GASTROSCREEN__V1__STAGE__STAGE_TILER;
    env->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    env->body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO;
    env->hello = h;
}

/* ---- work: DEALER <-> ROUTER ---------------------------------------------------------- */

static void work_round_trip(const char *bind_ep)
{
    void *ctx = zmq_ctx_new();
    gs_transport *router =
        gs_transport_new(ctx, GS_CHANNEL_WORK, ZMQ_ROUTER, GS_BIND, bind_ep, &quiet);
    assert_non_null(router);
    const char *ep = gs_transport_endpoint(router);
    if (!strncmp(bind_ep, "tcp://", 6))
        assert_null(strstr(ep, ":*")); /* the system chose a port */
    gs_transport *dealer =
        gs_transport_new(ctx, GS_CHANNEL_WORK, ZMQ_DEALER, GS_CONNECT, ep, &quiet);
    assert_non_null(dealer);

    Gastroscreen__V1__WorkMessage env;
    Gastroscreen__V1__WorkerHello hello;
    make_hello(&env, &hello, "tiler.1@host:42");
    assert_int_equal(gs_transport_send(dealer, NULL, &env.base, 0), 0);
    gs_inbound in;
    assert_int_equal(recv_one(router, &in), GS_RECV_MESSAGE);
    assert_int_equal(in.msg.work->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO);
    assert_string_equal(in.msg.work->hello->worker_id, "tiler.1@host:42");
    assert_true(in.from.len > 0);
    gs_peer peer = in.from;
    gs_inbound_release(&in);

    /* Answer by routing id. */
    Gastroscreen__V1__WorkMessage reply = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__WorkerWelcome welcome = GASTROSCREEN__V1__WORKER_WELCOME__INIT;
    welcome.accepted = 1;
    welcome.coordinator_id = "c0ffee";
    reply.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    reply.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME;
    reply.welcome = &welcome;
    assert_int_equal(gs_transport_send(router, &peer, &reply.base, 0), 0);
    assert_int_equal(recv_one(dealer, &in), GS_RECV_MESSAGE);
    assert_true(in.msg.work->welcome->accepted);
    assert_string_equal(in.msg.work->welcome->coordinator_id, "c0ffee");
    gs_inbound_release(&in);

    /* ROUTER_MANDATORY: a send to a peer that does not exist fails instead of vanishing. */
    gs_peer ghost = {.id = {'n', 'o', 'b', 'o', 'd', 'y'}, .len = 6};
    assert_int_equal(gs_transport_send(router, &ghost, &reply.base, GS_SEND_DONTWAIT), -1);
    assert_int_equal(errno, EHOSTUNREACH);
    assert_int_equal(gs_transport_counters_get(router)->send_failed, 1);
    assert_int_equal(gs_transport_counters_get(router)->sent, 1);
    assert_int_equal(gs_transport_counters_get(router)->received, 1);
    assert_int_equal(gs_transport_counters_get(dealer)->received, 1);

    gs_transport_destroy(&dealer);
    gs_transport_destroy(&router);
    assert_null(router);
    zmq_ctx_term(ctx);
}

static void work_round_trip_inproc(void **state)
{
    (void)state;
    work_round_trip("inproc://test-work");
}

static void work_round_trip_tcp(void **state)
{
    (void)state;
    work_round_trip("tcp://127.0.0.1:*");
}

/* Sends `frames` through a raw DEALER and checks the ROUTER drops them for `reason`, then
 * that a valid hello still passes. */
static void expect_work_drop(gs_transport *router, void *raw, const void *const *frames,
                             const size_t *lens, int n, gs_drop_reason reason)
{
    uint64_t before = gs_transport_counters_get(router)->dropped[reason];
    for (int i = 0; i < n; i++)
        raw_send(raw, frames[i], lens[i], i + 1 < n);
    gs_inbound in;
    assert_int_equal(recv_one(router, &in), GS_RECV_DROPPED);
    assert_int_equal(in.drop, reason);
    assert_null(in.msg.base);
    assert_true(in.from.len > 0);
    gs_inbound_release(&in);
    assert_int_equal(gs_transport_counters_get(router)->dropped[reason], before + 1);

    Gastroscreen__V1__WorkMessage env;
    Gastroscreen__V1__WorkerHello hello;
    make_hello(&env, &hello, "after-garbage");
    size_t len;
    uint8_t *b = pack(&env.base, &len);
    raw_send(raw, b, len, 0);
    free(b);
    assert_int_equal(recv_one(router, &in), GS_RECV_MESSAGE);
    assert_string_equal(in.msg.work->hello->worker_id, "after-garbage");
    gs_inbound_release(&in);
}

static void work_garbage(const char *bind_ep)
{
    void *ctx = zmq_ctx_new();
    gs_transport *router =
        gs_transport_new(ctx, GS_CHANNEL_WORK, ZMQ_ROUTER, GS_BIND, bind_ep, &quiet);
    assert_non_null(router);
    void *raw = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(raw, gs_transport_endpoint(router)), 0);

    static const uint8_t garbage[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const void *f1[] = {garbage};
    size_t l1[] = {sizeof garbage};
    expect_work_drop(router, raw, f1, l1, 1, GS_DROP_UNPACK);

    /* Truncated: cut a valid hello inside its worker_id string. */
    Gastroscreen__V1__WorkMessage env;
    Gastroscreen__V1__WorkerHello hello;
    make_hello(&env, &hello, "a-long-worker-id-so-that-the-cut-lands-inside-it@host:1");
    size_t len;
    uint8_t *b = pack(&env.base, &len);
    const void *f2[] = {b};
    size_t l2[] = {len - 10};
    expect_work_drop(router, raw, f2, l2, 1, GS_DROP_UNPACK);

    /* Two frames where the ROUTER expects [id][envelope]. */
    const void *f3[] = {b, b};
    size_t l3[] = {len, len};
    expect_work_drop(router, raw, f3, l3, 2, GS_DROP_FRAMES);
    free(b);

    /* Protocol version not set. */
    env.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_UNSPECIFIED;
    b = pack(&env.base, &len);
    const void *f4[] = {b};
    size_t l4[] = {len};
    expect_work_drop(router, raw, f4, l4, 1, GS_DROP_PROTOCOL);
    free(b);

    /* Another envelope type: a TileMessage on work unpacks with no body. */
    Gastroscreen__V1__TileMessage tm = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    Gastroscreen__V1__TileHeader th = GASTROSCREEN__V1__TILE_HEADER__INIT;
    tm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    tm.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    tm.tile = &th;
    th.slide_id = "0123456789abcdef";
    b = pack(&tm.base, &len);
    const void *f5[] = {b};
    size_t l5[] = {len};
    expect_work_drop(router, raw, f5, l5, 1, GS_DROP_WRONG_TYPE);
    free(b);

    /* A work body of the wrong direction: a job sent to the coordinator. */
    Gastroscreen__V1__WorkMessage job = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__PlanJob pj = GASTROSCREEN__V1__PLAN_JOB__INIT;
    job.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    job.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB;
    job.plan_job = &pj;
    b = pack(&job.base, &len);
    const void *f6[] = {b};
    size_t l6[] = {len};
    expect_work_drop(router, raw, f6, l6, 1, GS_DROP_WRONG_TYPE);
    free(b);

    /* An empty frame unpacks as an empty envelope: protocol 0. */
    const void *f7[] = {""};
    size_t l7[] = {0};
    expect_work_drop(router, raw, f7, l7, 1, GS_DROP_PROTOCOL);

    /* Strings that are not UTF-8 (the coordinator journals them as JSON, which refuses
     * them): a byte that starts no character, deep in a result inside the oneof; an
     * overlong '/' in a repeated string; a surrogate in the hello itself. */
    Gastroscreen__V1__WorkMessage res = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__ReportResult rr = GASTROSCREEN__V1__REPORT_RESULT__INIT;
    Gastroscreen__V1__ReportPaths paths = GASTROSCREEN__V1__REPORT_PATHS__INIT;
    res.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    res.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT;
    res.report_result = &rr;
    rr.slide_id = "0123456789abcdef";
    rr.attempt = 1;
    rr.paths = &paths;
    paths.heatmap_png = "/reports/0123456789abcdef/heat\xe5map.png";
    b = pack(&res.base, &len);
    const void *f8[] = {b};
    size_t l8[] = {len};
    expect_work_drop(router, raw, f8, l8, 1, GS_DROP_UNPACK);
    free(b);
    Gastroscreen__V1__PlanResult pr = GASTROSCREEN__V1__PLAN_RESULT__INIT;
    char *warnings[] = {"fine", "over\xc0\xaflong"};
    res.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT;
    res.plan_result = &pr;
    pr.slide_id = "0123456789abcdef";
    pr.attempt = 1;
    pr.n_warnings = 2;
    pr.warnings = warnings;
    b = pack(&res.base, &len);
    const void *f9[] = {b};
    size_t l9[] = {len};
    expect_work_drop(router, raw, f9, l9, 1, GS_DROP_UNPACK);
    free(b);
    make_hello(&env, &hello, "surrogate-\xed\xa0\x80@host:1");
    b = pack(&env.base, &len);
    const void *f10[] = {b};
    size_t l10[] = {len};
    expect_work_drop(router, raw, f10, l10, 1, GS_DROP_UNPACK);
    free(b);
    /* Real UTF-8 passes: two, three and four bytes. */
    make_hello(&env, &hello, "caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x94\xac@host:1");
    b = pack(&env.base, &len);
    raw_send(raw, b, len, 0);
    free(b);
    gs_inbound in;
    assert_int_equal(recv_one(router, &in), GS_RECV_MESSAGE);
    assert_string_equal(in.msg.work->hello->worker_id,
                        "caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x94\xac@host:1");
    gs_inbound_release(&in);

    const gs_transport_counters *c = gs_transport_counters_get(router);
    assert_int_equal(c->malformed, 8);
    assert_int_equal(c->wrong_type, 2);
    assert_int_equal(c->received, 11);

    zmq_close(raw);
    gs_transport_destroy(&router);
    zmq_ctx_term(ctx);
}

static void work_garbage_inproc(void **state)
{
    (void)state;
    work_garbage("inproc://test-work-garbage");
}

static void work_garbage_tcp(void **state)
{
    (void)state;
    work_garbage("tcp://127.0.0.1:*");
}

/* ---- tiles: PUSH -> PULL with pixels -------------------------------------------------- */

static int freed_count;
static void count_free(void *pixels, void *hint)
{
    (void)hint;
    free(pixels);
    __atomic_add_fetch(&freed_count, 1, __ATOMIC_SEQ_CST);
}

static void make_tile(Gastroscreen__V1__TileMessage *tm, Gastroscreen__V1__TileHeader *th,
                      uint32_t w, uint32_t h, uint32_t c, Gastroscreen__V1__PixelFormat f)
{
    gastroscreen__v1__tile_message__init(tm);
    gastroscreen__v1__tile_header__init(th);
    tm->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    tm->body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    tm->tile = th;
    th->slide_id = "0123456789abcdef";
    th->attempt = 1;
    th->tile_index = 7;
    th->width = w;
    th->height = h;
    th->channels = c;
    th->pixel_format = f;
}

static void tiles_round_trip(const char *bind_ep)
{
    void *ctx = zmq_ctx_new();
    gs_transport *pull =
        gs_transport_new(ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND, bind_ep, &quiet);
    assert_non_null(pull);
    gs_transport *push = gs_transport_new(ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                          gs_transport_endpoint(pull), &quiet);
    assert_non_null(push);

    Gastroscreen__V1__TileMessage tm;
    Gastroscreen__V1__TileHeader th;
    make_tile(&tm, &th, 32, 16, 3, GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8);
    size_t n = 32 * 16 * 3;
    uint8_t *px = malloc(n);
    for (size_t i = 0; i < n; i++)
        px[i] = (uint8_t)(i * 7);
    /* Copied: the buffer stays ours. */
    assert_int_equal(gs_transport_send_tile(push, &tm, px, n, NULL, NULL, 0), 0);
    gs_inbound in;
    assert_int_equal(recv_one(pull, &in), GS_RECV_MESSAGE);
    assert_int_equal(in.pixels_len, n);
    assert_memory_equal(in.pixels, px, n);
    assert_int_equal(in.msg.tile->tile->tile_index, 7);
    gs_inbound_release(&in);
    gs_inbound_release(&in); /* twice is harmless */

    /* Zero-copy: handed over, freed by ZeroMQ once the receiver is done. */
    freed_count = 0;
    uint8_t *px2 = malloc(n);
    memcpy(px2, px, n);
    assert_int_equal(gs_transport_send_tile(push, &tm, px2, n, count_free, NULL, 0), 0);
    assert_int_equal(recv_one(pull, &in), GS_RECV_MESSAGE);
    assert_memory_equal(in.pixels, px, n);
    gs_inbound_release(&in);

    /* A grey tile. */
    make_tile(&tm, &th, 8, 4, 1, GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8);
    assert_int_equal(gs_transport_send_tile(push, &tm, px, 32, NULL, NULL, 0), 0);
    assert_int_equal(recv_one(pull, &in), GS_RECV_MESSAGE);
    assert_int_equal(in.pixels_len, 32);
    gs_inbound_release(&in);
    free(px);

    gs_transport_destroy(&push);
    gs_transport_destroy(&pull);
    zmq_ctx_term(ctx);
    assert_int_equal(freed_count, 1);
}

static void tiles_round_trip_inproc(void **state)
{
    (void)state;
    tiles_round_trip("inproc://test-tiles");
}

static void tiles_round_trip_tcp(void **state)
{
    (void)state;
    tiles_round_trip("tcp://127.0.0.1:*");
}

/* An inbox that stops reading (its worker busy on a batch: the back-pressure of PROTOCOL.md
 * §10) for longer than a ZMTP heartbeat timeout must lose nothing: the tiles pushed before and
 * during the stall all arrive once it reads again. With ZMTP heartbeats on the tile link the
 * PINGs waited behind the tiles, the link was torn down after ~6 s and the tiles in the
 * kernel's buffers were lost. */
static void tiles_survive_a_stalled_inbox(void **state)
{
    (void)state;
    enum { SIDE = 512, STALL_MS = 8000 };
    void *ctx = zmq_ctx_new();
    gs_transport *pull =
        gs_transport_new(ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND, "tcp://127.0.0.1:*", &quiet);
    assert_non_null(pull);
    gs_transport *push = gs_transport_new(ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                          gs_transport_endpoint(pull), &quiet);
    assert_non_null(push);
    Gastroscreen__V1__TileMessage tm;
    Gastroscreen__V1__TileHeader th;
    make_tile(&tm, &th, SIDE, SIDE, 3, GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8);
    size_t n = (size_t)SIDE * SIDE * 3;
    uint8_t *px = calloc(n, 1);
    assert_non_null(px);

    /* Push as the tiler does (wait for room, then send) for the whole stall. */
    uint32_t sent = 0;
    for (int waited = 0; waited < STALL_MS;) {
        zmq_pollitem_t it = {gs_transport_socket(push), 0, ZMQ_POLLOUT, 0};
        int r = zmq_poll(&it, 1, 100);
        assert_true(r >= 0);
        if (r == 0) {
            waited += 100;
            continue;
        }
        th.tile_index = sent;
        assert_int_equal(gs_transport_send_tile(push, &tm, px, n, NULL, NULL, GS_SEND_DONTWAIT), 0);
        sent++;
    }
    assert_true(sent > 0);

    for (uint32_t i = 0; i < sent; i++) {
        gs_inbound in;
        assert_int_equal(recv_one(pull, &in), GS_RECV_MESSAGE);
        assert_int_equal(in.msg.tile->tile->tile_index, i); /* none lost, in order */
        gs_inbound_release(&in);
    }
    free(px);
    gs_transport_destroy(&push);
    gs_transport_destroy(&pull);
    zmq_ctx_term(ctx);
}

static void expect_tile_drop(gs_transport *pull, void *raw, const void *const *frames,
                             const size_t *lens, int n, gs_drop_reason reason)
{
    uint64_t before = gs_transport_counters_get(pull)->dropped[reason];
    for (int i = 0; i < n; i++)
        raw_send(raw, frames[i], lens[i], i + 1 < n);
    gs_inbound in;
    assert_int_equal(recv_one(pull, &in), GS_RECV_DROPPED);
    assert_int_equal(in.drop, reason);
    assert_null(in.pixels);
    gs_inbound_release(&in);
    assert_int_equal(gs_transport_counters_get(pull)->dropped[reason], before + 1);

    Gastroscreen__V1__TileMessage tm;
    Gastroscreen__V1__TileHeader th;
    make_tile(&tm, &th, 2, 2, 4, GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGBA8);
    size_t len;
    uint8_t *b = pack(&tm.base, &len);
    raw_send(raw, b, len, 1);
    raw_send(raw, "0123456789abcdef", 16, 0);
    free(b);
    assert_int_equal(recv_one(pull, &in), GS_RECV_MESSAGE);
    assert_int_equal(in.pixels_len, 16);
    gs_inbound_release(&in);
}

static void tiles_garbage(const char *bind_ep)
{
    void *ctx = zmq_ctx_new();
    gs_transport *pull =
        gs_transport_new(ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND, bind_ep, &quiet);
    assert_non_null(pull);
    void *raw = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 0;
    zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(raw, gs_transport_endpoint(pull)), 0);

    Gastroscreen__V1__TileMessage tm;
    Gastroscreen__V1__TileHeader th;
    make_tile(&tm, &th, 4, 4, 3, GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8);
    size_t len;
    uint8_t *hdr = pack(&tm.base, &len);
    static uint8_t pixels[64];

    const void *one[] = {hdr};
    size_t one_l[] = {len};
    expect_tile_drop(pull, raw, one, one_l, 1, GS_DROP_FRAMES); /* header without pixels */
    const void *three[] = {hdr, pixels, pixels};
    size_t three_l[] = {len, 48, 48};
    expect_tile_drop(pull, raw, three, three_l, 3, GS_DROP_FRAMES);
    const void *short_px[] = {hdr, pixels};
    size_t short_l[] = {len, 47};
    expect_tile_drop(pull, raw, short_px, short_l, 2, GS_DROP_PIXELS);
    size_t long_l[] = {len, 48 + 1};
    expect_tile_drop(pull, raw, short_px, long_l, 2, GS_DROP_PIXELS);
    free(hdr);

    /* channels disagreeing with the format (RGB8 with 4 channels; 4*4*4 = 64 bytes). */
    th.channels = 4;
    hdr = pack(&tm.base, &len);
    static uint8_t px64[64];
    const void *bad_c[] = {hdr, px64};
    size_t bad_c_l[] = {len, 64};
    expect_tile_drop(pull, raw, bad_c, bad_c_l, 2, GS_DROP_PIXELS);
    free(hdr);

    /* Huge dimensions must not overflow into a match. */
    make_tile(&tm, &th, 0x80000000u, 0x80000000u, 4,
              GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGBA8);
    hdr = pack(&tm.base, &len);
    const void *huge[] = {hdr, px64};
    size_t huge_l[] = {len, 0};
    expect_tile_drop(pull, raw, huge, huge_l, 2, GS_DROP_PIXELS);
    free(hdr);

    /* A WorkMessage on the tile socket: no TileMessage body. */
    Gastroscreen__V1__WorkMessage env;
    Gastroscreen__V1__WorkerHello hello;
    make_hello(&env, &hello, "wrong-socket");
    hdr = pack(&env.base, &len);
    const void *wrong[] = {hdr, px64};
    size_t wrong_l[] = {len, 64};
    expect_tile_drop(pull, raw, wrong, wrong_l, 2, GS_DROP_WRONG_TYPE);
    free(hdr);

    static const uint8_t junk[] = {0x0a, 0xff, 0x01, 0x02};
    const void *g[] = {junk, px64};
    size_t g_l[] = {sizeof junk, 64};
    expect_tile_drop(pull, raw, g, g_l, 2, GS_DROP_UNPACK);

    const gs_transport_counters *c = gs_transport_counters_get(pull);
    assert_int_equal(c->dropped[GS_DROP_FRAMES], 2);
    assert_int_equal(c->dropped[GS_DROP_PIXELS], 4);
    assert_int_equal(c->dropped[GS_DROP_UNPACK], 1);
    assert_int_equal(c->wrong_type, 1);
    assert_int_equal(c->received, 8);

    zmq_close(raw);
    gs_transport_destroy(&pull);
    zmq_ctx_term(ctx);
}

static void tiles_garbage_inproc(void **state)
{
    (void)state;
    tiles_garbage("inproc://test-tiles-garbage");
}

static void tiles_garbage_tcp(void **state)
{
    (void)state;
    tiles_garbage("tcp://127.0.0.1:*");
}

/* ---- submit: REQ <-> ROUTER, a malformed request can still be answered ------------------- */

static void submit_answers_garbage(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    gs_transport *router =
        gs_transport_new(ctx, GS_CHANNEL_SUBMIT, ZMQ_ROUTER, GS_BIND, "tcp://127.0.0.1:*", &quiet);
    assert_non_null(router);
    gs_transport *req = gs_transport_new(ctx, GS_CHANNEL_SUBMIT, ZMQ_REQ, GS_CONNECT,
                                         gs_transport_endpoint(router), &quiet);
    assert_non_null(req);

    /* Garbage through the REQ's own socket (it adds the delimiter). */
    assert_true(zmq_send(gs_transport_socket(req), "\xff\xff\xff", 3, 0) == 3);
    gs_inbound in;
    assert_int_equal(recv_one(router, &in), GS_RECV_DROPPED);
    assert_int_equal(in.drop, GS_DROP_UNPACK);
    assert_true(in.from.len > 0);
    gs_peer peer = in.from;
    gs_inbound_release(&in);

    Gastroscreen__V1__SubmitMessage reply = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    Gastroscreen__V1__SubmitReply r = GASTROSCREEN__V1__SUBMIT_REPLY__INIT;
    reply.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    reply.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REPLY;
    reply.reply = &r;
    r.status = GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED;
    r.error = "malformed request";
    assert_int_equal(gs_transport_send(router, &peer, &reply.base, 0), 0);
    assert_int_equal(recv_one(req, &in), GS_RECV_MESSAGE);
    assert_int_equal(in.msg.submit->reply->status,
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED);
    assert_string_equal(in.msg.submit->reply->error, "malformed request");
    gs_inbound_release(&in);

    /* And a valid request after it. */
    Gastroscreen__V1__SubmitMessage sm = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    Gastroscreen__V1__SubmitRequest rq = GASTROSCREEN__V1__SUBMIT_REQUEST__INIT;
    sm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    sm.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST;
    sm.request = &rq;
    rq.path = "/slides/a.svs";
    assert_int_equal(gs_transport_send(req, NULL, &sm.base, 0), 0);
    assert_int_equal(recv_one(router, &in), GS_RECV_MESSAGE);
    assert_string_equal(in.msg.submit->request->path, "/slides/a.svs");
    gs_inbound_release(&in);

    gs_transport_destroy(&req);
    gs_transport_destroy(&router);
    zmq_ctx_term(ctx);
}

/* ---- events: topics ------------------------------------------------------------------- */

static void event_topics(void **state)
{
    (void)state;
    char buf[128];
    Gastroscreen__V1__EventMessage e = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    assert_int_equal(gs_event_topic(&e, buf, sizeof buf), -1);

    Gastroscreen__V1__Verdict v = GASTROSCREEN__V1__VERDICT__INIT;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT;
    e.verdict = &v;
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE;
    assert_int_equal(gs_event_topic(&e, buf, sizeof buf), 0);
    assert_string_equal(buf, "slide.verdict.positive.");
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNSPECIFIED;
    assert_int_equal(gs_event_topic(&e, buf, sizeof buf), -1);
    v.verdict_class = (Gastroscreen__V1__VerdictClass)99;
    assert_int_equal(gs_event_topic(&e, buf, sizeof buf), -1);

    Gastroscreen__V1__SlideStateChanged sc = GASTROSCREEN__V1__SLIDE_STATE_CHANGED__INIT;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED;
    e.state_changed = &sc;
    sc.to = GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_BLUR_CHECKED;
    assert_int_equal(gs_event_topic(&e, buf, sizeof buf), 0);
    assert_string_equal(buf, "slide.state.blur_checked.");
    assert_int_equal(gs_event_topic(&e, buf, 10), -1);

    Gastroscreen__V1__StageStats st = GASTROSCREEN__V1__STAGE_STATS__INIT;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS;
    e.stats = &st;
    st.stage = GASTROSCREEN__V1__STAGE__STAGE_INFER;
    assert_int_equal(gs_event_topic(&e, buf, sizeof buf), 0);
    assert_string_equal(buf, "stats.infer.");

    Gastroscreen__V1__SlideArrived a = GASTROSCREEN__V1__SLIDE_ARRIVED__INIT;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED;
    e.arrived = &a;
    assert_int_equal(gs_event_topic(&e, buf, sizeof buf), 0);
    assert_string_equal(buf, "slide.arrived.");
    assert_string_equal(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND), "foreground");
}

/* PUB -> SUB, then a raw PUB sends a topic that disagrees with its body. */
static void events_topic_checked(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    gs_transport *pub =
        gs_transport_new(ctx, GS_CHANNEL_EVENTS, ZMQ_PUB, GS_BIND, "inproc://test-events", &quiet);
    assert_non_null(pub);
    gs_transport *sub = gs_transport_new(ctx, GS_CHANNEL_EVENTS, ZMQ_SUB, GS_CONNECT,
                                         "inproc://test-events", &quiet);
    assert_non_null(sub);
    assert_int_equal(gs_transport_subscribe(sub, "slide."), 0);

    Gastroscreen__V1__EventMessage e = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    Gastroscreen__V1__Verdict v = GASTROSCREEN__V1__VERDICT__INIT;
    e.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT;
    e.verdict = &v;
    e.seq = 5;
    v.slide_id = "0123456789abcdef";
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE;
    /* The subscription travels asynchronously: publish until the first one arrives. */
    gs_inbound in;
    int got = 0;
    for (int i = 0; i < 200 && !got; i++) {
        assert_int_equal(gs_transport_send(pub, NULL, &e.base, 0), 0);
        zmq_pollitem_t it = {gs_transport_socket(sub), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) == 1) {
            assert_int_equal(gs_transport_recv(sub, &in, GS_RECV_DONTWAIT), GS_RECV_MESSAGE);
            assert_string_equal(in.topic, "slide.verdict.negative.");
            assert_int_equal(in.msg.event->seq, 5);
            gs_inbound_release(&in);
            got = 1;
        }
    }
    assert_true(got);
    /* Drain repeats of the probe. */
    while (gs_transport_recv(sub, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE)
        gs_inbound_release(&in);
    gs_inbound_release(&in);

    size_t len;
    uint8_t *b = pack(&e.base, &len);
    void *raw = zmq_socket(ctx, ZMQ_PUB);
    int linger = 0;
    zmq_setsockopt(raw, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_bind(raw, "inproc://test-events-raw"), 0);
    assert_int_equal(gs_transport_connect(sub, "inproc://test-events-raw"), 0);
    /* Wait until the raw publisher has the subscription: probe with a valid frame pair. */
    got = 0;
    for (int i = 0; i < 200 && !got; i++) {
        raw_send(raw, "slide.verdict.negative.", 23, 1);
        raw_send(raw, b, len, 0);
        zmq_pollitem_t it = {gs_transport_socket(sub), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 50) == 1)
            got = 1;
    }
    assert_true(got);
    while (gs_transport_recv(sub, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE)
        gs_inbound_release(&in);
    gs_inbound_release(&in);

    raw_send(raw, "slide.verdict.positive.", 23, 1);
    raw_send(raw, b, len, 0);
    assert_int_equal(recv_one(sub, &in), GS_RECV_DROPPED);
    assert_int_equal(in.drop, GS_DROP_TOPIC);
    gs_inbound_release(&in);
    raw_send(raw, "slide.verdict.negative.", 23, 0); /* topic alone */
    assert_int_equal(recv_one(sub, &in), GS_RECV_DROPPED);
    assert_int_equal(in.drop, GS_DROP_FRAMES);
    gs_inbound_release(&in);
    raw_send(raw, "slide.verdict.negative.", 23, 1);
    raw_send(raw, b, len, 0);
    assert_int_equal(recv_one(sub, &in), GS_RECV_MESSAGE);
    gs_inbound_release(&in);
    free(b);
    assert_int_equal(gs_transport_counters_get(sub)->dropped[GS_DROP_TOPIC], 1);
    assert_int_equal(gs_transport_counters_get(sub)->dropped[GS_DROP_FRAMES], 1);

    zmq_close(raw);
    gs_transport_destroy(&sub);
    gs_transport_destroy(&pub);
    zmq_ctx_term(ctx);
}

static void bad_arguments(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    assert_null(gs_transport_new(ctx, GS_CHANNEL_WORK, ZMQ_PUSH, GS_BIND, "inproc://x", &quiet));
    assert_non_null(strstr(gs_error_get(), "not used on this channel"));
    assert_null(gs_transport_new(ctx, GS_CHANNEL_WORK, ZMQ_ROUTER, GS_BIND, "bogus://x", &quiet));
    assert_non_null(strstr(gs_error_get(), "cannot bind bogus://x"));
    gs_transport *a =
        gs_transport_new(ctx, GS_CHANNEL_QUERY, ZMQ_ROUTER, GS_BIND, "inproc://dup", &quiet);
    assert_non_null(a);
    assert_null(
        gs_transport_new(ctx, GS_CHANNEL_QUERY, ZMQ_ROUTER, GS_BIND, "inproc://dup", &quiet));
    assert_int_equal(gs_transport_subscribe(a, "x"), -1);
    gs_transport_destroy(&a);
    gs_transport_destroy(&a);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(work_round_trip_inproc),
        cmocka_unit_test(work_round_trip_tcp),
        cmocka_unit_test(work_garbage_inproc),
        cmocka_unit_test(work_garbage_tcp),
        cmocka_unit_test(tiles_round_trip_inproc),
        cmocka_unit_test(tiles_round_trip_tcp),
        cmocka_unit_test(tiles_garbage_inproc),
        cmocka_unit_test(tiles_garbage_tcp),
        cmocka_unit_test(tiles_survive_a_stalled_inbox),
        cmocka_unit_test(submit_answers_garbage),
        cmocka_unit_test(event_topics),
        cmocka_unit_test(events_topic_checked),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
