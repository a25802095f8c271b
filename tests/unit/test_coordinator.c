/*
 * test_coordinator: the coordinator library driven in-process over inproc:// with fake workers
 * (tests/unit/coordinator_world: transport DEALERs answering each job) and a test clock, so
 * liveness, loss grace and deadlines are reached by advancing the clock, never by sleeping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <math.h>
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

static void slide_flows_to_done(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.duplicate_results = 1;
    w.stale_results = 1;
    w.blur_method = GASTROSCREEN__V1__METHOD__METHOD_NETWORK; /* a bundle with a trained one */
    w.infer_precision = "bf16";
    start_with_workers(&w);
    char id[GS_SLIDE_ID_LEN + 1], id2[GS_SLIDE_ID_LEN + 1];
    uint64_t seq = 0;
    assert_int_equal(submit(&w, w.slide, id, &seq),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);
    assert_true(seq >= 1);
    /* The same file again is the same slide. */
    assert_int_equal(submit(&w, w.slide, id2, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_DUPLICATE);
    assert_string_equal(id, id2);
    /* Outside the roots: rejected. */
    assert_int_equal(submit(&w, "/etc/passwd", NULL, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED);

    assert_true(run_until(&w, is_terminal, id));
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_DONE);
    assert_int_equal(info.verdict, GS_VERDICT_POSITIVE);
    assert_int_equal(info.tiles.planned, N_TILES);
    assert_int_equal(info.tiles.background, N_TILES - N_INFER);
    assert_int_equal(info.tiles.inferred, N_INFER);
    assert_int_equal(info.tiles.blurry, 0);
    assert_true(w.blur_tile_jobs > 0);
    assert_true(w.infer_tile_jobs > 0);
    assert_int_equal(w.screen_k, N_INFER);
    assert_true(w.screen_sorted);
    assert_int_equal(w.report_class, GS_VERDICT_POSITIVE);
    /* The blur check ran on a sample and found nothing blurry: the reporter must see how many
     * tiles were judged, not only the fraction 0. */
    assert_true(w.report_blur_judged > 0);
    assert_true(w.report_heat_ok);
    assert_true(strstr(info.report_json, "report.json") != NULL);
    /* The methods the workers named reach the record and the reporter. */
    assert_int_equal(info.foreground_method, GS_METHOD_CLASSICAL);
    assert_int_equal(info.blur_method, GS_METHOD_NETWORK);
    assert_int_equal(w.report_fg_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_int_equal(w.report_blur_method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    /* The infer worker's precision reaches the record and the reporter. */
    assert_string_equal(info.precision, "bf16");
    assert_string_equal(w.report_precision, "bf16");
    /* The plan and ledger file left the spool with the verdict. */
    char spool[PATH_MAX + 64];
    snprintf(spool, sizeof spool, "%s/spool/%s", w.dir, id);
    assert_int_not_equal(access(spool, F_OK), 0);

    gs_coordinator_stats s;
    gs_coordinator_stats_get(w.c, &s);
    assert_true(s.duplicates >= N_INFER); /* every infer result came twice */
    assert_true(s.stale >= N_INFER);      /* and once more with another attempt */
    assert_int_equal(s.verdicts[GS_VERDICT_POSITIVE], 1);
    assert_int_equal(s.slides_accepted, 1);
    assert_int_equal(s.intake_duplicates, 1);
    /* The histograms behind /metrics: one slide duration; one round trip per tile outcome or
     * judgement recorded (the duplicated and stale results are not observations). */
    const double *bounds;
    size_t nb = gs_coordinator_slide_bounds(&bounds);
    assert_true(nb > 0 && nb <= GS_METRICS_MAX_BUCKETS);
    assert_int_equal(hist_count(&s.slide_seconds, nb), 1);
    assert_true(s.slide_seconds.sum >= 0);
    nb = gs_coordinator_tile_bounds(&bounds);
    assert_int_equal(hist_count(&s.tile_seconds[1], nb), N_INFER);
    assert_int_equal(hist_count(&s.tile_seconds[0], nb), w.report_blur_judged);
    /* Every inferred tile counted once under its worker's precision. */
    assert_int_equal(s.n_inferred, 1);
    assert_string_equal(s.inferred[0].precision, "bf16");
    assert_int_equal(s.inferred[0].tiles, N_INFER);

    /* Published after it was journalled, exactly once. */
    assert_true(run_until(&w, has_verdict_event, id));
    for (int i = 0; i < 50; i++)
        pump(&w);
    assert_int_equal(w.verdict_events, 1);
    assert_string_equal(w.verdict_topic, "slide.verdict.positive.");
    assert_int_equal(w.verdict_fg_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_int_equal(w.verdict_blur_method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    assert_string_equal(w.verdict_precision, "bf16");
    assert_int_equal(journal_verdicts(&w, id), 1);
    world_free(&w);
}

static void blur_first_unassessable(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.all_blurry = 1;
    start_with_workers(&w);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    assert_true(run_until(&w, is_terminal, id));
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_DONE);
    assert_int_equal(info.verdict, GS_VERDICT_UNASSESSABLE);
    assert_true(info.out_of_focus);
    assert_true(strstr(info.reason, "out of focus") != NULL);
    assert_int_equal(info.tiles.blurry, 32);
    assert_int_equal(info.tiles.inferred, 0);
    assert_true(w.blur_tile_jobs > 0);
    assert_int_equal(w.infer_tile_jobs, 0);
    for (size_t i = 0; i < w.nf; i++)
        if (w.f[i].stage == GASTROSCREEN__V1__STAGE__STAGE_INFER)
            assert_int_equal(w.f[i].tiles_got, 0);
    assert_int_equal(w.report_class, GS_VERDICT_UNASSESSABLE);
    assert_int_equal(w.report_blur_judged, 32);
    assert_int_equal(w.report_fg_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_int_equal(w.report_blur_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_int_equal(w.screen_k, 0);
    assert_int_equal(journal_verdicts(&w, id), 1);
    world_free(&w);
}

/* Every tile's focus is judged by the infer workers (InferJob.judge_focus): a few blurry tiles
 * leave the verdict standing with a warning; blurry tiles beyond blur_slide_fraction make the
 * slide unassessable after inference, without a screener. */
static void blurry_tiles_after_the_sample(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        world w;
        world_init(&w);
        w.infer_blurry_mod = round == 0 ? 7 : 1;
        start_with_workers(&w);
        char id[GS_SLIDE_ID_LEN + 1];
        assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
        assert_true(run_until(&w, is_terminal, id));
        gs_slide_info info = slide_info(&w, id);
        assert_int_equal(info.state, GS_SLIDE_DONE);
        assert_true(w.infer_judge_focus);
        uint32_t tissue = info.tiles.planned - info.tiles.background;
        printf("round %d: %u of %u tissue tiles blurry; %s; %s\n", round, info.tiles.blurry, tissue,
               info.reason, w.report_warning);
        assert_true(info.tiles.blurry > 0);
        assert_int_equal(w.report_blurry_tiles, info.tiles.blurry);
        assert_int_equal(info.tiles.inferred + info.tiles.blurry + info.tiles.error, tissue);
        if (round == 0) {
            assert_true(info.verdict == GS_VERDICT_POSITIVE);
            char want[128];
            snprintf(want, sizeof want,
                     "partially out of focus: %u of %u tissue tiles (%.0f%%) not analysed",
                     info.tiles.blurry, tissue, 100.0 * info.tiles.blurry / tissue);
            assert_string_equal(w.report_warning, want);
            assert_non_null(strstr(info.warnings, want));
            assert_true(w.screen_k > 0);
        } else {
            assert_int_equal(info.verdict, GS_VERDICT_UNASSESSABLE);
            assert_true(info.out_of_focus);
            assert_non_null(strstr(info.reason, "tissue tiles blurry"));
            assert_int_equal(info.tiles.inferred, 0);
            assert_int_equal(w.screen_k, 0);
        }
        assert_int_equal(journal_verdicts(&w, id), 1);
        world_free(&w);
    }
}

/* The blur network's sparse-tissue rule resolved at start goes to every BlurJob and InferJob
 * as it was resolved (the share, or -1 when off: never 0, which a worker reads as its own
 * bundle's rule) and into the verdict with its source and classical threshold. */
static void sparse_rule_reaches_jobs_and_verdict(void **state)
{
    (void)state;
    static const gs_model_thresholds bundle = {
        .topk = 64, .screen = 0.74f, .blur = 0.5f, .blur_slide = 0.5f, .blur_sparse_tissue = 0.5f};
    for (int round = 0; round < 3; round++) {
        world w;
        world_init(&w);
        gs_decision d;
        gs_decision_resolve(&d, &bundle, 0.74, 0, 64, 0);
        /* 0: the bundle's rule; 1: the config turned it off; 2: no decision handed over (no
         * bundle: off, from the default) */
        gs_decision_resolve_focus(&d, &bundle, 1, 0.5, 0, 0, 0, 0, round == 1);
        w.decision = round < 2 ? &d : NULL;
        start_with_workers(&w);
        char id[GS_SLIDE_ID_LEN + 1];
        assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
        assert_true(run_until(&w, is_terminal, id));
        printf("round %d: blur job %g, infer job %g; verdict %g (%s), classical %g\n", round,
               w.blur_job_sparse, w.infer_job_sparse, w.report_sparse, w.report_sparse_source,
               w.report_sparse_classical);
        assert_true(w.blur_tile_jobs > 0 && w.infer_tile_jobs > 0);
        float want = round == 0 ? 0.5f : -1.0f;
        assert_true(w.blur_job_sparse == want);
        assert_true(w.infer_job_sparse == want);
        assert_true(w.report_sparse == (round == 0 ? 0.5f : 0.0f));
        assert_string_equal(w.report_sparse_source, round == 0   ? GS_DECISION_FROM_BUNDLE
                                                    : round == 1 ? GS_DECISION_FROM_CONFIG
                                                                 : GS_DECISION_FROM_DEFAULT);
        assert_true(w.report_sparse_classical == (round == 0 ? 60.0f : 0.0f));
        world_free(&w);
    }
}

static int some_inferred(world *w, const char *id)
{
    (void)id;
    return w->infer_results >= 8;
}

static void lost_worker_tiles_rerequested(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    fake *second = fake_add(&w, GASTROSCREEN__V1__STAGE__STAGE_INFER, "aaaa");
    assert_true(run_until(&w, welcomed, NULL));
    fake *first = NULL;
    for (size_t i = 0; i < w.nf; i++)
        if (w.f[i].stage == GASTROSCREEN__V1__STAGE__STAGE_INFER && &w.f[i] != second)
            first = &w.f[i];
    assert_non_null(first);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    assert_true(run_until(&w, some_inferred, id));
    /* The first infer worker vanishes: no heartbeat, no result; tiles sent to it are lost. */
    first->dead = 1;
    uint32_t second_before = second->tiles_got;
    assert_true(run_until(&w, is_terminal, id));
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_DONE);
    assert_int_equal(info.tiles.inferred, N_INFER);
    assert_int_equal(info.tiles.error, 0);
    assert_true(info.tiles.rerequested > 0);
    assert_true(first->tiles_got > 0);
    assert_true(second->tiles_got > second_before);
    gs_coordinator_stats s;
    gs_coordinator_stats_get(w.c, &s);
    assert_int_equal(s.workers_lost, 1);
    assert_true(s.tiles_rerequested > 0);
    assert_int_equal(journal_verdicts(&w, id), 1);
    world_free(&w);
}

/* Sends raw bytes from a fresh socket, pumps until they are surely read, closes. */
static void raw_send(world *w, int type, const char *endpoint, const char *topic, const void *buf,
                     size_t len)
{
    void *s = zmq_socket(w->ctx, type);
    assert_non_null(s);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, endpoint), 0);
    if (topic)
        zmq_send(s, topic, strlen(topic), ZMQ_SNDMORE);
    assert_true(zmq_send(s, buf, len, 0) >= 0);
    for (int i = 0; i < 20; i++)
        pump(w);
    zmq_close(s);
}

/* REQ with raw bytes; returns 1 when any reply came back. */
static int raw_req(world *w, const char *endpoint, const void *buf, size_t len, int *body_case,
                   int query_socket)
{
    void *s = zmq_socket(w->ctx, ZMQ_REQ);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, endpoint), 0);
    assert_true(zmq_send(s, buf, len, 0) >= 0);
    int got = 0;
    for (int i = 0; i < 100000 && !got; i++) {
        pump(w);
        uint8_t reply[65536];
        int n = zmq_recv(s, reply, sizeof reply, ZMQ_DONTWAIT);
        if (n >= 0) {
            got = 1;
            if (query_socket) {
                Gastroscreen__V1__QueryMessage *q =
                    gastroscreen__v1__query_message__unpack(NULL, (size_t)n, reply);
                assert_non_null(q);
                *body_case = q->body_case;
                gastroscreen__v1__query_message__free_unpacked(q, NULL);
            } else {
                Gastroscreen__V1__SubmitMessage *q =
                    gastroscreen__v1__submit_message__unpack(NULL, (size_t)n, reply);
                assert_non_null(q);
                *body_case = q->reply ? (int)q->reply->status : -1;
                gastroscreen__v1__submit_message__free_unpacked(q, NULL);
            }
        }
    }
    zmq_close(s);
    return got;
}

static void garbage_on_every_socket(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    const uint8_t garbage[] = {0xff, 0x13, 0x37, 0x00, 0x42, 0x99, 0xfe, 0x01};
    /* A valid envelope of another type: a QueryMessage request. */
    Gastroscreen__V1__EventsSinceRequest er = GASTROSCREEN__V1__EVENTS_SINCE_REQUEST__INIT;
    Gastroscreen__V1__QueryMessage qm = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    qm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    qm.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE;
    qm.events_since = &er;
    uint8_t wrong[64];
    size_t wrong_len = gastroscreen__v1__query_message__pack(&qm, wrong);
    /* A worker-bound body sent to the coordinator. */
    Gastroscreen__V1__CoordinatorHeartbeat ch = GASTROSCREEN__V1__COORDINATOR_HEARTBEAT__INIT;
    ch.coordinator_id = "x";
    Gastroscreen__V1__WorkMessage wm = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    wm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    wm.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT;
    wm.coordinator_heartbeat = &ch;
    uint8_t backwards[64];
    size_t backwards_len = gastroscreen__v1__work_message__pack(&wm, backwards);
    /* A malformed result: a tile result with no fence. */
    Gastroscreen__V1__TileResult tr = GASTROSCREEN__V1__TILE_RESULT__INIT;
    tr.slide_id = "not-hex";
    Gastroscreen__V1__WorkMessage wm2 = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    wm2.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    wm2.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    wm2.tile_result = &tr;
    uint8_t unfenced[64];
    size_t unfenced_len = gastroscreen__v1__work_message__pack(&wm2, unfenced);

    const char *work = gs_coordinator_endpoint(w.c, GS_CHANNEL_WORK);
    raw_send(&w, ZMQ_DEALER, work, NULL, garbage, sizeof garbage);
    raw_send(&w, ZMQ_DEALER, work, NULL, wrong, wrong_len);
    raw_send(&w, ZMQ_DEALER, work, NULL, backwards, backwards_len);
    raw_send(&w, ZMQ_DEALER, work, NULL, unfenced, unfenced_len);
    int body = -1;
    assert_true(raw_req(&w, gs_coordinator_endpoint(w.c, GS_CHANNEL_SUBMIT), garbage,
                        sizeof garbage, &body, 0));
    assert_int_equal(body, GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED);
    assert_true(
        raw_req(&w, gs_coordinator_endpoint(w.c, GS_CHANNEL_SUBMIT), wrong, wrong_len, &body, 0));
    assert_int_equal(body, GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED);
    assert_true(raw_req(&w, gs_coordinator_endpoint(w.c, GS_CHANNEL_QUERY), garbage, sizeof garbage,
                        &body, 1));
    assert_int_equal(body, GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR);
    assert_true(raw_req(&w, gs_coordinator_endpoint(w.c, GS_CHANNEL_QUERY), backwards,
                        backwards_len, &body, 1));
    assert_int_equal(body, GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR);
    /* Intake: a PUB binds nothing here; the coordinator's SUB is bound, so connect a PUB and
     * repeat until the subscription has reached it (a new PUB drops its first messages). */
    void *pub = zmq_socket(w.ctx, ZMQ_PUB);
    int linger = 0;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(pub, gs_coordinator_endpoint(w.c, GS_CHANNEL_INTAKE)), 0);
    gs_coordinator_stats s;
    for (int i = 0; i < 100000; i++) {
        zmq_send(pub, "slide.arrived.", 14, ZMQ_SNDMORE);
        zmq_send(pub, garbage, sizeof garbage, 0);
        pump(&w);
        gs_coordinator_stats_get(w.c, &s);
        if (s.malformed[GS_COORD_SOCKET_INTAKE] > 0)
            break;
    }
    zmq_close(pub);
    for (int i = 0; i < 20; i++)
        pump(&w);
    w.now += 1000; /* the snapshot is refreshed once a second */
    pump(&w);
    gs_coordinator_stats_get(w.c, &s);
    assert_true(s.malformed[GS_COORD_SOCKET_INTAKE] > 0);
    assert_true(s.malformed[GS_COORD_SOCKET_SUBMIT] + s.malformed[GS_COORD_SOCKET_INTAKE] >= 2);
    assert_true(s.malformed[GS_COORD_SOCKET_QUERY] >= 1);
    assert_true(s.wrong_type[GS_COORD_SOCKET_QUERY] >= 1);
    assert_true(s.malformed[GS_COORD_SOCKET_WORK] >= 2);  /* garbage, and the unfenced result */
    assert_true(s.wrong_type[GS_COORD_SOCKET_WORK] >= 2); /* another envelope, a backwards body */

    /* A worker with another model is refused; the service keeps working. */
    fake *odd = fake_add(&w, GASTROSCREEN__V1__STAGE__STAGE_INFER, "bbbb");
    assert_true(run_until(&w, welcomed, NULL));
    assert_true(odd->refused);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(submit(&w, w.slide, id, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);
    assert_true(run_until(&w, is_terminal, id));
    assert_int_equal(slide_info(&w, id).state, GS_SLIDE_DONE);
    assert_int_equal(odd->tiles_got, 0);
    world_free(&w);
}

static void query_answers_events_and_state(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.screen_score = 0.2f;
    start_with_workers(&w);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(submit(&w, w.slide, id, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);
    assert_true(run_until(&w, is_terminal, id));

    Gastroscreen__V1__QueryMessage *rep = events_since(&w, 0, 0);
    const Gastroscreen__V1__EventsSinceReply *e = rep->events;
    assert_true(e->n_events >= 7); /* accepted, planned, blur checked, inferring, screened, ... */
    for (size_t i = 0; i < e->n_events; i++)
        assert_int_equal(e->events[i]->seq, i + 1); /* contiguous from 1 */
    assert_int_equal(e->last_seq, e->n_events);
    assert_false(e->truncated);
    assert_int_equal(e->events[0]->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED);
    const Gastroscreen__V1__EventMessage *last = e->events[e->n_events - 1];
    assert_int_equal(last->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
    assert_int_equal(last->verdict->verdict_class,
                     GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE);
    uint64_t total = e->n_events;
    gastroscreen__v1__query_message__free_unpacked(rep, NULL);

    rep = events_since(&w, 2, 3);
    assert_int_equal(rep->events->n_events, 3);
    assert_int_equal(rep->events->events[0]->seq, 3);
    assert_int_equal(rep->events->last_seq, total);
    gastroscreen__v1__query_message__free_unpacked(rep, NULL);

    Gastroscreen__V1__SlideStateRequest sr = GASTROSCREEN__V1__SLIDE_STATE_REQUEST__INIT;
    sr.slide_id = id;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_SLIDE_STATE;
    m.slide_state = &sr;
    rep = query(&w, &m);
    assert_int_equal(rep->body_case, GASTROSCREEN__V1__QUERY_MESSAGE__BODY_STATE);
    assert_int_equal(rep->state->n_slides, 1);
    const Gastroscreen__V1__SlideStatus *st = rep->state->slides[0];
    assert_string_equal(st->slide_id, id);
    assert_int_equal(st->state, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE);
    assert_non_null(st->verdict);
    assert_int_equal(st->verdict->verdict_class,
                     GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE);
    assert_int_equal(st->tiles->inferred, N_INFER);
    assert_int_equal(st->last_seq, total);
    gastroscreen__v1__query_message__free_unpacked(rep, NULL);

    sr.slide_id = "";
    sr.path = w.slide;
    rep = query(&w, &m);
    assert_int_equal(rep->state->n_slides, 1);
    assert_string_equal(rep->state->slides[0]->slide_id, id);
    gastroscreen__v1__query_message__free_unpacked(rep, NULL);

    sr.path = "";
    sr.in_flight = 1;
    rep = query(&w, &m);
    assert_int_equal(rep->state->n_slides, 0);
    gastroscreen__v1__query_message__free_unpacked(rep, NULL);

    sr.in_flight = 0;
    sr.slide_id = "0123456789abcdef";
    rep = query(&w, &m);
    assert_int_equal(rep->body_case, GASTROSCREEN__V1__QUERY_MESSAGE__BODY_STATE);
    assert_int_equal(rep->state->n_slides, 0);
    gastroscreen__v1__query_message__free_unpacked(rep, NULL);
    world_free(&w);
}

static int inferring_with_budget_spent(world *w, const char *id)
{
    gs_slide_info info;
    if (gs_slides_get(gs_coordinator_slides(w->c), id, &info) != 0)
        return 0;
    return info.state == GS_SLIDE_INFERRING && w->infer_results >= (uint32_t)w->infer_budget;
}

static void restart_mid_slide_one_verdict(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.infer_budget = 12;
    start_with_workers(&w);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(submit(&w, w.slide, id, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);
    assert_true(run_until(&w, inferring_with_budget_spent, id));
    for (int i = 0; i < 20; i++)
        pump(&w); /* let the last results land in the ledger */
    assert_int_equal(slide_info(&w, id).attempt, 1);

    /* The coordinator stops mid-slide; a new one starts on the same journal and spool. */
    world_stop(&w);
    uint32_t before = w.infer_results;
    w.infer_budget = -1;
    w.verdict_events = 0;
    w.infer_precision = "bf16"; /* the first attempt's tiles were inferred in fp32 */
    start_with_workers(&w);
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.attempt, 2);
    assert_int_equal(info.state, GS_SLIDE_INFERRING);
    /* The blur check does not run again: the methods come back from the journal. */
    assert_int_equal(info.foreground_method, GS_METHOD_CLASSICAL);
    assert_int_equal(info.blur_method, GS_METHOD_CLASSICAL);
    uint32_t blur_jobs_before = w.blur_tile_jobs;
    w.report_fg_method = w.report_blur_method = -1;
    assert_true(run_until(&w, is_terminal, id));
    info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_DONE);
    assert_int_equal(info.tiles.inferred, N_INFER);
    /* The outcomes of the first attempt were adopted, not inferred again. */
    uint32_t again = 0;
    for (size_t i = 0; i < w.nf; i++)
        if (w.f[i].stage == GASTROSCREEN__V1__STAGE__STAGE_INFER)
            again += w.f[i].tiles_got;
    assert_int_equal(again, N_INFER - before);
    /* The heatmaps of the adopted tiles came back from the spool for the report. */
    assert_true(w.report_heat_ok);
    assert_int_equal(w.blur_tile_jobs, blur_jobs_before);
    assert_int_equal(w.report_fg_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_int_equal(w.report_blur_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    /* The adopted tiles' precision was not journalled: "unknown", not an empty list that
     * would read as fp32, then the precision of the tiles inferred since. */
    assert_string_equal(info.precision, "unknown+bf16");
    assert_string_equal(w.report_precision, "unknown+bf16");
    assert_int_equal(journal_verdicts(&w, id), 1);
    world_free(&w);
}

static void failed_plan_reports_then_fails(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.plan_error = 1;
    start_with_workers(&w);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    assert_true(run_until(&w, is_terminal, id));
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_FAILED);
    assert_int_equal(info.verdict, GS_VERDICT_FAILED);
    assert_string_equal(info.reason, "plan: openslide: cannot open");
    /* report.json says why: the FAILED report job went out before FAILED was journalled. */
    assert_int_equal(w.report_class, GS_VERDICT_FAILED);
    assert_true(strstr(info.report_json, "report.json") != NULL);
    assert_int_equal(w.blur_tile_jobs + w.infer_tile_jobs, 0);
    assert_true(run_until(&w, has_verdict_event, id));
    assert_string_equal(w.verdict_topic, "slide.verdict.failed.");
    assert_int_equal(journal_verdicts(&w, id), 1);
    world_free(&w);
}

static void handed_back_job_is_resent(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.goodbye_plans = 1;
    start_with_workers(&w);
    fake_add(&w, GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND, "aaaa");
    assert_true(run_until(&w, welcomed, NULL));
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    assert_true(run_until(&w, is_terminal, id));
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_DONE);
    assert_int_equal(info.crash_marks, 0); /* a goodbye is not a crash */
    gs_coordinator_stats s;
    gs_coordinator_stats_get(w.c, &s);
    assert_int_equal(s.workers_goodbye, 1);
    assert_int_equal(s.workers_lost, 0);
    assert_int_equal(s.jobs_resent, 1);
    world_free(&w);
}

static void poison_after_three_lost_workers(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.swallow_plans = 1;
    start_with_workers(&w);
    fake_add(&w, GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND, "aaaa");
    fake_add(&w, GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND, "aaaa");
    assert_true(run_until(&w, welcomed, NULL));
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    assert_true(run_until(&w, is_terminal, id));
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_FAILED);
    assert_int_equal(info.crash_marks, 3);
    assert_int_equal(info.poison, 1);
    assert_true(strncmp(info.reason, GS_POISON_REASON, sizeof GS_POISON_REASON - 1) == 0);
    gs_coordinator_stats s;
    gs_coordinator_stats_get(w.c, &s);
    assert_int_equal(s.workers_lost, 3);
    assert_int_equal(s.failed_poison, 1);
    assert_int_equal(journal_verdicts(&w, id), 1);
    world_free(&w);
}

/* Every job that opens the slide names the file accepted at intake (device, inode, size,
 * mtime), and once planned its quickhash, so a stage can refuse another file. */
static void jobs_carry_the_slide_identity(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    struct stat st;
    assert_int_equal(stat(w.slide, &st), 0);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.file.ino, (uint64_t)st.st_ino);
    assert_int_equal(info.file.dev, (uint64_t)st.st_dev);
    assert_int_equal(info.file.size, (int64_t)st.st_size);
    assert_true(run_until(&w, is_terminal, id));
    assert_int_equal(w.plan_inode, (uint64_t)st.st_ino);
    assert_int_equal(w.plan_size, (int64_t)st.st_size);
    assert_string_equal(w.plan_quickhash, "");
    assert_int_equal(w.tile_inode, (uint64_t)st.st_ino);
    assert_string_equal(w.tile_quickhash, "quickhash-a");
    /* The identity is journalled: a restart still has it. */
    world_stop(&w);
    world_start(&w);
    info = slide_info(&w, id);
    assert_int_equal(info.file.ino, (uint64_t)st.st_ino);
    world_free(&w);
}

/* A foreground worker stuck on a plan keeps heartbeating and keeps its only slot: the deadline
 * must still end the slide (each deadline without a free worker counts as a send), not leave
 * it, and the queue behind it, waiting for ever. */
static void stuck_plan_fails_after_its_deadlines(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.hang_plans = 1;
    start_with_workers(&w);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    assert_true(run_until(&w, is_terminal, id));
    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_FAILED);
    assert_string_equal(info.reason, "plan: no result after 3 sends");
    assert_int_equal(info.poison, 0);
    world_free(&w);
}

static int has_slide(world *w, const char *id)
{
    (void)id;
    return gs_slides_count(gs_coordinator_slides(w->c)) > 0;
}

static void announced_slide_is_accepted(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    void *pub = zmq_socket(w.ctx, ZMQ_PUB);
    int linger = 0;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(pub, gs_coordinator_endpoint(w.c, GS_CHANNEL_INTAKE)), 0);
    Gastroscreen__V1__SlideArrived a = GASTROSCREEN__V1__SLIDE_ARRIVED__INIT;
    a.path = w.slide;
    a.announcer = "scanner-3";
    a.external_id = "ACC-1";
    Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED;
    ev.arrived = &a;
    uint8_t buf[1024];
    size_t len = gastroscreen__v1__event_message__pack(&ev, buf);
    /* An announcer repeats until it sees slide.accepted. (a new PUB loses its first sends). */
    for (int i = 0; i < 100000 && w.accepted_events == 0; i++) {
        zmq_send(pub, "slide.arrived.", 14, ZMQ_SNDMORE);
        zmq_send(pub, buf, len, 0);
        pump(&w);
    }
    zmq_close(pub);
    for (int i = 0; i < 20; i++)
        pump(&w);
    assert_true(w.accepted_events >= 1);
    assert_int_equal(gs_slides_count(gs_coordinator_slides(w.c)), 1); /* repeats: duplicates */
    gs_slide_info info;
    assert_int_equal(gs_slides_at(gs_coordinator_slides(w.c), 0, &info), 0);
    assert_int_equal(info.source, GS_INTAKE_ANNOUNCED);
    assert_string_equal(info.external_id, "ACC-1");
    char id[GS_SLIDE_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", info.slide_id);
    assert_true(run_until(&w, is_terminal, id));
    assert_int_equal(slide_info(&w, id).state, GS_SLIDE_DONE);
    world_free(&w);
}

static void watched_file_taken_once_settled(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.watch = 1;
    world_start(&w);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/watch/b.svs", w.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("first part", f);
    fflush(f);
    /* Not settled for 4 s: not taken. */
    for (int i = 0; i < 8; i++) {
        w.now += 500;
        for (int k = 0; k < 3; k++)
            pump(&w);
    }
    assert_int_equal(gs_slides_count(gs_coordinator_slides(w.c)), 0);
    /* It grows: the settle time starts again. */
    fputs(" and more", f);
    fclose(f);
    for (int i = 0; i < 8; i++) {
        w.now += 500;
        for (int k = 0; k < 3; k++)
            pump(&w);
    }
    assert_int_equal(gs_slides_count(gs_coordinator_slides(w.c)), 0);
    assert_true(run_until(&w, has_slide, NULL));
    for (int i = 0; i < 40; i++) {
        w.now += 500;
        pump(&w);
    }
    assert_int_equal(gs_slides_count(gs_coordinator_slides(w.c)), 1);
    gs_slide_info info;
    assert_int_equal(gs_slides_at(gs_coordinator_slides(w.c), 0, &info), 0);
    assert_int_equal(info.source, GS_INTAKE_WATCHED);
    gs_coordinator_stats s;
    gs_coordinator_stats_get(w.c, &s);
    assert_int_equal(s.slides_accepted, 1);
    assert_int_equal(s.intake_duplicates, 0);
    world_free(&w);
}

static void touched_file_folds_into_first_slide(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    char id[GS_SLIDE_ID_LEN + 1], id2[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(submit(&w, w.slide, id, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);
    assert_true(run_until(&w, is_terminal, id));
    /* The file is touched: a new intake by rule 1, the same slide by its quickhash. */
    struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    assert_int_equal(utimensat(AT_FDCWD, w.slide, ts, 0), 0);
    assert_int_equal(submit(&w, w.slide, id2, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);
    assert_string_not_equal(id, id2);
    assert_true(run_until(&w, is_terminal, id2));
    gs_slide_info info = slide_info(&w, id2);
    assert_int_equal(info.state, GS_SLIDE_DONE);
    assert_string_equal(info.duplicate_of, id);
    assert_int_equal(journal_verdicts(&w, id2), 0); /* one slide, one verdict */
    assert_int_equal(journal_verdicts(&w, id), 1);
    /* Asked about the folded record, the coordinator answers the first slide's verdict. */
    Gastroscreen__V1__SlideStateRequest sr = GASTROSCREEN__V1__SLIDE_STATE_REQUEST__INIT;
    sr.slide_id = id2;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_SLIDE_STATE;
    m.slide_state = &sr;
    Gastroscreen__V1__QueryMessage *rep = query(&w, &m);
    assert_int_equal(rep->state->n_slides, 1);
    assert_string_equal(rep->state->slides[0]->duplicate_of, id);
    assert_non_null(rep->state->slides[0]->verdict);
    assert_string_equal(rep->state->slides[0]->verdict->slide_id, id);
    assert_int_equal(rep->state->slides[0]->verdict->verdict_class,
                     GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE);
    gastroscreen__v1__query_message__free_unpacked(rep, NULL);
    world_free(&w);
}

static int all_terminal(world *w, const char *id)
{
    (void)id;
    return gs_slides_count(gs_coordinator_slides(w->c)) == 4 &&
           gs_slides_in_flight(gs_coordinator_slides(w->c)) == 0;
}

static void slides_in_flight_are_limited(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    for (int i = 0; i < 4; i++) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/slides/s%d.svs", w.dir, i);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "slide %d\n", i);
        fclose(f);
        assert_int_equal(gs_coordinator_intake(w.c, path, GS_INTAKE_EMBEDDED, "", NULL, NULL), 0);
    }
    uint32_t most_active = 0;
    int idle = 0;
    for (int round = 0; round < 200000 && !all_terminal(&w, NULL); round++) {
        gs_coordinator_stats s;
        gs_coordinator_stats_get(w.c, &s);
        if (s.slides_active > most_active)
            most_active = s.slides_active;
        if (pump(&w) == 0 && ++idle >= 3) {
            w.now += 500;
            idle = 0;
        }
    }
    assert_true(all_terminal(&w, NULL));
    assert_int_equal(most_active, 2); /* max_slides_in_flight */
    gs_coordinator_stats s;
    gs_coordinator_stats_get(w.c, &s);
    assert_int_equal(s.verdicts[GS_VERDICT_POSITIVE], 4);
    world_free(&w);
}

static int screen_held(world *w, const char *id)
{
    (void)id;
    return w->held_job != 0;
}

/* A ScreenResult for the slide from f's DEALER. */
static void send_screen(fake *f, const char *id, uint32_t attempt, uint64_t job, float score)
{
    Gastroscreen__V1__ScreenResult r = GASTROSCREEN__V1__SCREEN_RESULT__INIT;
    r.slide_id = (char *)id;
    r.attempt = attempt;
    r.job_id = job;
    r.worker_id = f->id;
    r.score = score;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT;
    m.screen_result = &r;
    fake_send(f, &m);
}

/* A forged TileResult (INFERRED, score 0.99) for tile 1 of the slide from f's DEALER. */
static void send_forged_tile(fake *f, const char *id, uint32_t attempt)
{
    float feature[512] = {0};
    uint8_t heat[256] = {0};
    Gastroscreen__V1__TileResult t = GASTROSCREEN__V1__TILE_RESULT__INIT;
    t.slide_id = (char *)id;
    t.attempt = attempt;
    t.tile_index = 1;
    t.worker_id = f->id;
    t.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED;
    t.score = 0.99f;
    t.n_feature = 512;
    t.feature = feature;
    t.heatmap.data = heat;
    t.heatmap.len = sizeof heat;
    t.heatmap_size = 16;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    m.tile_result = &t;
    fake_send(f, &m);
}

static uint64_t refused_now(world *w)
{
    for (int i = 0; i < 20; i++)
        pump(w);
    w->now += 1000; /* the snapshot is refreshed once a second */
    pump(w);
    gs_coordinator_stats s;
    gs_coordinator_stats_get(w->c, &s);
    return s.results_refused;
}

/* Only the worker a job was sent to can answer it: a result from a peer that never said hello,
 * from a worker of another stage, or from a welcomed worker of the right stage that was not
 * given the job changes nothing; the real answer still decides. */
static void forged_results_change_nothing(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.hold_screen = 1;
    w.screen_score = 0.2f;
    start_with_workers(&w);
    fake *second = fake_add(&w, GASTROSCREEN__V1__STAGE__STAGE_SCREENER, "aaaa");
    fake *blur = NULL, *tiler = NULL;
    for (size_t i = 0; i < w.nf; i++) {
        if (w.f[i].stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR)
            blur = &w.f[i];
        if (w.f[i].stage == GASTROSCREEN__V1__STAGE__STAGE_TILER)
            tiler = &w.f[i];
    }
    assert_true(run_until(&w, welcomed, NULL));
    assert_true(second->welcomed);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    assert_true(run_until(&w, screen_held, id));
    uint32_t att = w.held_attempt;
    uint64_t job = w.held_job;
    uint64_t before = refused_now(&w);

    /* A peer that never said hello, with the right slide, attempt and job id. */
    fake stranger;
    memset(&stranger, 0, sizeof stranger);
    snprintf(stranger.id, sizeof stranger.id, "screener.9@evil:1");
    gs_transport_options q = {.quiet = 1};
    stranger.t = gs_transport_new(w.ctx, GS_CHANNEL_WORK, ZMQ_DEALER, GS_CONNECT,
                                  gs_coordinator_endpoint(w.c, GS_CHANNEL_WORK), &q);
    assert_non_null(stranger.t);
    send_screen(&stranger, id, att, job, 0.99f);
    assert_int_equal(refused_now(&w), before + 1);
    /* A welcomed worker of another stage. */
    send_screen(tiler, id, att, job, 0.99f);
    assert_int_equal(refused_now(&w), before + 2);
    /* A welcomed screener that was not sent the job. */
    send_screen(second, id, att, job, 0.99f);
    assert_int_equal(refused_now(&w), before + 3);
    /* Tile results of the slide from a blur worker, the stranger, and the tiler (which reports
     * only failed reads, and holds no tile job of the slide now). */
    send_forged_tile(blur, id, att);
    send_forged_tile(&stranger, id, att);
    send_forged_tile(tiler, id, att);
    assert_int_equal(refused_now(&w), before + 6);
    /* The real screener with a job id it was not given, and with another attempt: stale. */
    gs_coordinator_stats s0, s1;
    gs_coordinator_stats_get(w.c, &s0);
    send_screen(w.held_by, id, att, job + 1000, 0.99f);
    send_screen(w.held_by, id, att + 1, job, 0.99f);
    assert_int_equal(refused_now(&w), before + 6);
    gs_coordinator_stats_get(w.c, &s1);
    assert_int_equal(s1.stale, s0.stale + 2);
    gs_transport_destroy(&stranger.t);

    gs_slide_info info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_INFERRING); /* not screened by a forgery */
    /* The real answer decides. */
    send_screen(w.held_by, id, att, job, 0.2f);
    assert_true(run_until(&w, is_terminal, id));
    info = slide_info(&w, id);
    assert_int_equal(info.state, GS_SLIDE_DONE);
    assert_int_equal(info.verdict, GS_VERDICT_NEGATIVE);
    assert_true(fabsf(info.score - 0.2f) < 1e-6f);
    world_free(&w);
}

static int refused_or_welcomed(world *w, const char *id)
{
    (void)id;
    return welcomed(w, NULL);
}

/* A hello must name the model for a model-using stage, and cannot take over a live worker's
 * id (ids are published in stats events): the real worker keeps its place and its jobs. */
static void hello_checks_model_and_live_ids(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    fake *nomodel = fake_add(&w, GASTROSCREEN__V1__STAGE__STAGE_INFER, "");
    assert_true(run_until(&w, refused_or_welcomed, NULL));
    assert_true(nomodel->refused);
    /* A precision becomes a metrics label and part of a record: a short lower-case name. */
    w.infer_precision = "BF16\"}";
    fake *badprec = fake_add(&w, GASTROSCREEN__V1__STAGE__STAGE_INFER, "aaaa");
    assert_true(run_until(&w, refused_or_welcomed, NULL));
    assert_true(badprec->refused);
    w.infer_precision = NULL;
    fake *reporter = NULL;
    for (size_t i = 0; i < w.nf; i++)
        if (w.f[i].stage == GASTROSCREEN__V1__STAGE__STAGE_REPORTER)
            reporter = &w.f[i];
    assert_non_null(reporter);
    char taken[64];
    snprintf(taken, sizeof taken, "%s", reporter->id);
    fake *thief = fake_add_as(&w, GASTROSCREEN__V1__STAGE__STAGE_REPORTER, "aaaa", taken);
    assert_true(run_until(&w, refused_or_welcomed, NULL));
    assert_true(thief->refused);
    /* A worker id with a newline would forge a log line: malformed, never welcomed. */
    gs_coordinator_stats s;
    w.now += 1000;
    pump(&w);
    gs_coordinator_stats_get(w.c, &s);
    uint64_t malformed = s.malformed[GS_COORD_SOCKET_WORK];
    fake *nl = fake_add_as(&w, GASTROSCREEN__V1__STAGE__STAGE_TILER, "aaaa", "tiler.1\nscore 0.99");
    for (int i = 0; i < 50; i++)
        pump(&w);
    assert_false(nl->welcomed);
    nl->dead = 1;
    w.now += 1000;
    pump(&w);
    gs_coordinator_stats_get(w.c, &s);
    assert_int_equal(s.malformed[GS_COORD_SOCKET_WORK], malformed + 1);
    assert_int_equal(s.workers_lost, 0);
    assert_true(s.workers_refused >= 2);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(gs_coordinator_intake(w.c, w.slide, GS_INTAKE_EMBEDDED, "", id, NULL), 0);
    assert_true(run_until(&w, is_terminal, id));
    assert_int_equal(slide_info(&w, id).state, GS_SLIDE_DONE);
    /* The infer worker that named no precision ran fp32 (builds before the field). */
    assert_string_equal(slide_info(&w, id).precision, "fp32");
    assert_int_equal(nomodel->tiles_got, 0);
    assert_int_equal(badprec->tiles_got, 0);
    world_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slide_flows_to_done),
        cmocka_unit_test(blur_first_unassessable),
        cmocka_unit_test(blurry_tiles_after_the_sample),
        cmocka_unit_test(sparse_rule_reaches_jobs_and_verdict),
        cmocka_unit_test(lost_worker_tiles_rerequested),
        cmocka_unit_test(garbage_on_every_socket),
        cmocka_unit_test(query_answers_events_and_state),
        cmocka_unit_test(restart_mid_slide_one_verdict),
        cmocka_unit_test(failed_plan_reports_then_fails),
        cmocka_unit_test(handed_back_job_is_resent),
        cmocka_unit_test(poison_after_three_lost_workers),
        cmocka_unit_test(jobs_carry_the_slide_identity),
        cmocka_unit_test(stuck_plan_fails_after_its_deadlines),
        cmocka_unit_test(announced_slide_is_accepted),
        cmocka_unit_test(watched_file_taken_once_settled),
        cmocka_unit_test(touched_file_folds_into_first_slide),
        cmocka_unit_test(slides_in_flight_are_limited),
        cmocka_unit_test(forged_results_change_nothing),
        cmocka_unit_test(hello_checks_model_and_live_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
