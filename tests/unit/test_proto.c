/*
 * test_proto: the wire schema (proto/gastroscreen.proto) as protobuf-c generates it.
 *
 * Checks that the messages the pipeline depends on survive pack/unpack unchanged (a tile
 * header, a tile result with its 512 packed floats, a verdict), that garbage and truncated
 * buffers are refused by the unpacker instead of crashing it, and that the disjoint body
 * numbering of the envelopes lets a receiver tell a message of another socket's envelope from a
 * valid one (it parses with no body set), as PROTOCOL.md, "Malformed and wrong messages", says.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proto/gastroscreen.pb-c.h"

enum { FEATURE_DIM = 512, HEATMAP_SIZE = 16 };

/* What a receiver concludes about one frame, in the order it checks. */
enum receiver_verdict {
    RECEIVED_GARBAGE, /* did not unpack */
    RECEIVED_BAD_VERSION,
    RECEIVED_WRONG_TYPE, /* unpacked, but no body this envelope knows */
    RECEIVED_OK,
};

/* The receiver-side check of a `work` frame, as PROTOCOL.md prescribes it. */
static enum receiver_verdict classify_work(const uint8_t *buf, size_t len)
{
    Gastroscreen__V1__WorkMessage *m = gastroscreen__v1__work_message__unpack(NULL, len, buf);
    if (!m)
        return RECEIVED_GARBAGE;
    enum receiver_verdict v = RECEIVED_OK;
    if (m->protocol != GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1)
        v = RECEIVED_BAD_VERSION;
    else if (m->body_case == GASTROSCREEN__V1__WORK_MESSAGE__BODY__NOT_SET)
        v = RECEIVED_WRONG_TYPE;
    gastroscreen__v1__work_message__free_unpacked(m, NULL);
    return v;
}

/* Deterministic bytes for garbage and feature values (xorshift32). */
static uint32_t next_random(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

/* Packs a WorkMessage into a malloc'ed buffer the caller frees; *len gets its size. */
static uint8_t *pack_work(const Gastroscreen__V1__WorkMessage *m, size_t *len)
{
    *len = gastroscreen__v1__work_message__get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(gastroscreen__v1__work_message__pack(m, buf), *len);
    return buf;
}

/* A TileResult as an infer worker sends it: 512 features, a 16x16 heatmap. Statics keep the
 * arrays alive for the caller; the test is single-threaded. */
static void fill_tile_result(Gastroscreen__V1__TileResult *r, Gastroscreen__V1__StageTiming *t)
{
    static float feature[FEATURE_DIM];
    static uint8_t heatmap[HEATMAP_SIZE * HEATMAP_SIZE];
    uint32_t seed = 12345;
    for (int i = 0; i < FEATURE_DIM; i++)
        feature[i] = (float)(next_random(&seed) % 100000) / 1000.0f - 50.0f;
    feature[7] = -0.0f; /* signed zero and extremes must come back bit for bit */
    feature[8] = 3.4028235e38f;
    feature[9] = 1.17549435e-38f;
    for (int i = 0; i < HEATMAP_SIZE * HEATMAP_SIZE; i++)
        heatmap[i] = (uint8_t)(i * 7);
    gastroscreen__v1__stage_timing__init(t);
    t->read_us = 1500;
    t->compute_us = 987654;
    t->batch_size = 8;
    gastroscreen__v1__tile_result__init(r);
    r->slide_id = "3f2a9c01d4e5b6a7";
    r->attempt = 2;
    r->tile_index = 4097;
    r->worker_id = "infer.1@node2:4242";
    r->outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED;
    r->score = 0.8125f;
    r->n_feature = FEATURE_DIM;
    r->feature = feature;
    r->heatmap.len = sizeof heatmap;
    r->heatmap.data = heatmap;
    r->heatmap_size = HEATMAP_SIZE;
    r->timing = t;
    r->request = 1;
}

static void tile_header_round_trip(void **state)
{
    Gastroscreen__V1__InferJob job = GASTROSCREEN__V1__INFER_JOB__INIT;
    job.heatmap_size = HEATMAP_SIZE;
    job.model_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    Gastroscreen__V1__TileHeader h = GASTROSCREEN__V1__TILE_HEADER__INIT;
    h.slide_id = "3f2a9c01d4e5b6a7";
    h.attempt = 3;
    h.tile_index = 123456;
    h.width = 512;
    h.height = 512;
    h.channels = 3;
    h.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    h.x0 = 98304;
    h.y0 = 5000000000LL; /* beyond 32 bits: coordinates are int64 on the wire */
    h.window_level0 = 1024;
    h.mpp = 0.5;
    h.job_id = 77;
    h.tiler_id = "tiler.1@node1:100";
    h.request = 2;
    h.read_us = 4321;
    h.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_INFER;
    h.infer = &job;
    Gastroscreen__V1__TileMessage m = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    m.tile = &h;

    size_t len = gastroscreen__v1__tile_message__get_packed_size(&m);
    /* The header frame must stay small: pixels travel in their own frame. */
    assert_true(len < 256);
    uint8_t buf[256];
    assert_int_equal(gastroscreen__v1__tile_message__pack(&m, buf), len);

    Gastroscreen__V1__TileMessage *u = gastroscreen__v1__tile_message__unpack(NULL, len, buf);
    assert_non_null(u);
    assert_int_equal(u->protocol, GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1);
    assert_int_equal(u->body_case, GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE);
    const Gastroscreen__V1__TileHeader *g = u->tile;
    assert_string_equal(g->slide_id, h.slide_id);
    assert_int_equal(g->attempt, 3);
    assert_int_equal(g->tile_index, 123456);
    assert_int_equal(g->width, 512);
    assert_int_equal(g->height, 512);
    assert_int_equal(g->channels, 3);
    assert_int_equal(g->pixel_format, GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8);
    assert_true(g->x0 == 98304);
    assert_true(g->y0 == 5000000000LL);
    assert_int_equal(g->window_level0, 1024);
    assert_true(g->mpp == 0.5);
    assert_int_equal(g->job_id, 77);
    assert_string_equal(g->tiler_id, h.tiler_id);
    assert_int_equal(g->request, 2);
    assert_int_equal(g->read_us, 4321);
    assert_int_equal(g->job_case, GASTROSCREEN__V1__TILE_HEADER__JOB_INFER);
    assert_non_null(g->infer);
    assert_int_equal(g->infer->heatmap_size, HEATMAP_SIZE);
    assert_string_equal(g->infer->model_sha256, job.model_sha256);
    assert_int_equal(u->base.n_unknown_fields, 0);
    gastroscreen__v1__tile_message__free_unpacked(u, NULL);
}

static void tile_result_round_trip_keeps_512_packed_floats(void **state)
{
    Gastroscreen__V1__TileResult r;
    Gastroscreen__V1__StageTiming t;
    fill_tile_result(&r, &t);
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    m.tile_result = &r;

    size_t len;
    uint8_t *buf = pack_work(&m, &len);
    /* Packed: one tag and length for the whole array, 4 bytes a float. Unpacked encoding
     * would spend a tag byte per float, 512 more bytes. */
    size_t fixed = FEATURE_DIM * 4 + HEATMAP_SIZE * HEATMAP_SIZE;
    assert_true(len > fixed);
    assert_true(len < fixed + 128);

    Gastroscreen__V1__WorkMessage *u = gastroscreen__v1__work_message__unpack(NULL, len, buf);
    assert_non_null(u);
    assert_int_equal(u->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT);
    const Gastroscreen__V1__TileResult *g = u->tile_result;
    assert_string_equal(g->slide_id, r.slide_id);
    assert_int_equal(g->attempt, 2);
    assert_int_equal(g->tile_index, 4097);
    assert_string_equal(g->worker_id, r.worker_id);
    assert_int_equal(g->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
    assert_true(g->score == 0.8125f);
    assert_int_equal(g->n_feature, FEATURE_DIM);
    assert_memory_equal(g->feature, r.feature, FEATURE_DIM * sizeof(float));
    assert_true(signbit(g->feature[7]));
    assert_int_equal(g->heatmap.len, HEATMAP_SIZE * HEATMAP_SIZE);
    assert_memory_equal(g->heatmap.data, r.heatmap.data, r.heatmap.len);
    assert_int_equal(g->heatmap_size, HEATMAP_SIZE);
    assert_non_null(g->timing);
    assert_int_equal(g->timing->compute_us, 987654);
    assert_int_equal(g->timing->batch_size, 8);
    assert_int_equal(g->request, 1);
    assert_int_equal(classify_work(buf, len), RECEIVED_OK);
    gastroscreen__v1__work_message__free_unpacked(u, NULL);
    free(buf);
}

static void verdict_round_trip(void **state)
{
    Gastroscreen__V1__ModelProvenance model = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    model.bundle = "default.safetensors";
    model.sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    model.format_version = "1";
    model.trained_on = "untrained";
    model.untrained = 1;
    model.notice = "model: untrained — not a diagnosis";
    Gastroscreen__V1__ReportPaths paths = GASTROSCREEN__V1__REPORT_PATHS__INIT;
    paths.report_json = "/var/lib/gastroscreen/reports/s1/report.json";
    paths.heatmap_png = "/var/lib/gastroscreen/reports/s1/heatmap.png";
    paths.regions_geojson = "/var/lib/gastroscreen/reports/s1/regions.geojson";
    Gastroscreen__V1__TileCounts counts = GASTROSCREEN__V1__TILE_COUNTS__INIT;
    counts.planned = 900;
    counts.inferred = 850;
    counts.background = 40;
    counts.blurry = 7;
    counts.error = 3;
    counts.rerequested = 12;
    char *warnings[] = {"no mpp: used default 0.25", "3 tiles failed"};
    Gastroscreen__V1__Verdict v = GASTROSCREEN__V1__VERDICT__INIT;
    v.slide_id = "s1";
    v.attempt = 1;
    v.path = "/srv/slides/a.svs";
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE;
    v.score = 0.91f;
    v.threshold = 0.74f;
    v.reason = "score 0.91 > 0.74";
    v.model = &model;
    v.n_warnings = 2;
    v.warnings = warnings;
    v.report = &paths;
    v.tiles = &counts;
    v.blurred_fraction = 0.125f;
    v.external_id = "B-2024-0001";
    v.decided_unix_ms = 1764000000123LL;
    v.state = GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE;
    Gastroscreen__V1__EventMessage e = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    e.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    e.seq = 4242;
    e.time_unix_ms = 1764000000456LL;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT;
    e.verdict = &v;

    size_t len = gastroscreen__v1__event_message__get_packed_size(&e);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(gastroscreen__v1__event_message__pack(&e, buf), len);
    Gastroscreen__V1__EventMessage *u = gastroscreen__v1__event_message__unpack(NULL, len, buf);
    assert_non_null(u);
    assert_int_equal(u->seq, 4242);
    assert_true(u->time_unix_ms == 1764000000456LL);
    assert_int_equal(u->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
    const Gastroscreen__V1__Verdict *g = u->verdict;
    assert_string_equal(g->slide_id, "s1");
    assert_int_equal(g->attempt, 1);
    assert_string_equal(g->path, v.path);
    assert_int_equal(g->verdict_class, GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE);
    assert_true(g->score == 0.91f);
    assert_true(g->threshold == 0.74f);
    assert_string_equal(g->reason, v.reason);
    assert_non_null(g->model);
    assert_string_equal(g->model->sha256, model.sha256);
    assert_string_equal(g->model->trained_on, "untrained");
    assert_true(g->model->untrained);
    assert_string_equal(g->model->notice, model.notice);
    assert_int_equal(g->n_warnings, 2);
    assert_string_equal(g->warnings[0], warnings[0]);
    assert_string_equal(g->warnings[1], warnings[1]);
    assert_non_null(g->report);
    assert_string_equal(g->report->regions_geojson, paths.regions_geojson);
    assert_non_null(g->tiles);
    assert_int_equal(g->tiles->planned, 900);
    assert_int_equal(g->tiles->inferred + g->tiles->background + g->tiles->blurry + g->tiles->error,
                     g->tiles->planned);
    assert_true(g->blurred_fraction == 0.125f);
    assert_string_equal(g->external_id, v.external_id);
    assert_int_equal(g->state, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE);
    gastroscreen__v1__event_message__free_unpacked(u, NULL);
    free(buf);
}

static void truncated_buffers_do_not_unpack(void **state)
{
    Gastroscreen__V1__TileResult r;
    Gastroscreen__V1__StageTiming t;
    fill_tile_result(&r, &t);
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    m.tile_result = &r;
    size_t len;
    uint8_t *buf = pack_work(&m, &len);

    /* The message is [protocol: 2 bytes][body: one length-delimited field]. Every cut ends
     * inside a field except the one right after protocol, which is a complete message with no
     * body: the receiver must see it as a wrong type, not as a tile result. */
    for (size_t n = 1; n < len; n++) {
        /* A fresh copy of exactly n bytes, so ASan flags any read past the cut. */
        uint8_t *cut = malloc(n);
        assert_non_null(cut);
        memcpy(cut, buf, n);
        Gastroscreen__V1__WorkMessage *u = gastroscreen__v1__work_message__unpack(NULL, n, cut);
        if (n == 2) {
            assert_non_null(u);
            assert_int_equal(u->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY__NOT_SET);
            assert_int_equal(classify_work(cut, n), RECEIVED_WRONG_TYPE);
            gastroscreen__v1__work_message__free_unpacked(u, NULL);
        } else {
            if (u)
                fail_msg("a %zu-byte prefix of a %zu-byte message unpacked", n, len);
            assert_int_equal(classify_work(cut, n), RECEIVED_GARBAGE);
        }
        free(cut);
    }
    free(buf);
}

static void garbage_does_not_unpack(void **state)
{
    /* Hand-made garbage, one per way a protobuf parser can be fooled. */
    static const uint8_t overlong_varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                              0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t bad_wire_type[] = {0x0f, 0x01}; /* wire type 7 does not exist */
    static const uint8_t length_past_end[] = {0xb2, 0x1a, 0x7f, 0x01}; /* field 422, 127 bytes */
    static const uint8_t huge_length[] = {0xb2, 0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    static const uint8_t field_zero[] = {0x00, 0x01}; /* field number 0 is invalid */
    static const uint8_t text[] = "GET /metrics HTTP/1.1\r\n\r\n";
    const struct {
        const uint8_t *buf;
        size_t len;
    } cases[] = {
        {overlong_varint, sizeof overlong_varint}, {bad_wire_type, sizeof bad_wire_type},
        {length_past_end, sizeof length_past_end}, {huge_length, sizeof huge_length},
        {field_zero, sizeof field_zero},           {text, sizeof text - 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *copy = malloc(cases[i].len);
        assert_non_null(copy);
        memcpy(copy, cases[i].buf, cases[i].len);
        if (classify_work(copy, cases[i].len) != RECEIVED_GARBAGE)
            fail_msg("garbage case %zu unpacked", i);
        Gastroscreen__V1__TileMessage *t =
            gastroscreen__v1__tile_message__unpack(NULL, cases[i].len, copy);
        if (t)
            fail_msg("garbage case %zu unpacked as a tile message", i);
        free(copy);
    }

    /* Random bytes: none may crash the unpacker (the sanitize preset watches every read), and
     * none may pass the receiver's checks as a valid work message with a body. */
    uint32_t seed = 0x9e3779b9u;
    int garbage = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = 1 + next_random(&seed) % 96;
        uint8_t *buf = malloc(n);
        assert_non_null(buf);
        for (size_t j = 0; j < n; j++)
            buf[j] = (uint8_t)next_random(&seed);
        enum receiver_verdict v = classify_work(buf, n);
        if (v == RECEIVED_OK)
            fail_msg("random buffer %d (%zu bytes) passed as a work message", i, n);
        garbage += v == RECEIVED_GARBAGE;
        Gastroscreen__V1__EventMessage *e = gastroscreen__v1__event_message__unpack(NULL, n, buf);
        if (e)
            gastroscreen__v1__event_message__free_unpacked(e, NULL);
        free(buf);
    }
    /* Most random buffers break the wire format outright; the rest parse as unknown fields
     * and are caught by the body check. */
    assert_true(garbage > 10000);
}

/* One packed sample of each envelope, for the cross-parsing test. */
struct sample {
    const char *name;
    uint8_t *buf;
    size_t len;
};

static void pack_samples(struct sample s[5])
{
    Gastroscreen__V1__SlideArrived arrived = GASTROSCREEN__V1__SLIDE_ARRIVED__INIT;
    arrived.path = "/srv/slides/a.svs";
    arrived.announcer = "scanner-1";
    Gastroscreen__V1__EventMessage e = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    e.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED;
    e.arrived = &arrived;
    s[0].name = "EventMessage";
    s[0].len = gastroscreen__v1__event_message__get_packed_size(&e);
    s[0].buf = malloc(s[0].len);
    assert_non_null(s[0].buf);
    gastroscreen__v1__event_message__pack(&e, s[0].buf);

    Gastroscreen__V1__SubmitRequest req = GASTROSCREEN__V1__SUBMIT_REQUEST__INIT;
    req.path = "/srv/slides/a.svs";
    req.request_id = "r1";
    Gastroscreen__V1__SubmitMessage sm = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    sm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    sm.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST;
    sm.request = &req;
    s[1].name = "SubmitMessage";
    s[1].len = gastroscreen__v1__submit_message__get_packed_size(&sm);
    s[1].buf = malloc(s[1].len);
    assert_non_null(s[1].buf);
    gastroscreen__v1__submit_message__pack(&sm, s[1].buf);

    Gastroscreen__V1__SlideStateRequest sr = GASTROSCREEN__V1__SLIDE_STATE_REQUEST__INIT;
    sr.slide_id = "s1";
    Gastroscreen__V1__QueryMessage q = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    q.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    q.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_SLIDE_STATE;
    q.slide_state = &sr;
    s[2].name = "QueryMessage";
    s[2].len = gastroscreen__v1__query_message__get_packed_size(&q);
    s[2].buf = malloc(s[2].len);
    assert_non_null(s[2].buf);
    gastroscreen__v1__query_message__pack(&q, s[2].buf);

    Gastroscreen__V1__TileResult r;
    Gastroscreen__V1__StageTiming t;
    fill_tile_result(&r, &t);
    Gastroscreen__V1__WorkMessage w = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    w.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    w.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    w.tile_result = &r;
    s[3].name = "WorkMessage";
    s[3].buf = pack_work(&w, &s[3].len);

    Gastroscreen__V1__TileHeader h = GASTROSCREEN__V1__TILE_HEADER__INIT;
    h.slide_id = "s1";
    h.attempt = 1;
    h.width = 512;
    h.height = 512;
    h.channels = 3;
    h.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    Gastroscreen__V1__TileMessage tm = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    tm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    tm.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    tm.tile = &h;
    s[4].name = "TileMessage";
    s[4].len = gastroscreen__v1__tile_message__get_packed_size(&tm);
    s[4].buf = malloc(s[4].len);
    assert_non_null(s[4].buf);
    gastroscreen__v1__tile_message__pack(&tm, s[4].buf);
}

/* Unpacks buf as envelope `as` (index into the samples) and returns its body case, or -1 when
 * it does not unpack at all. *unknown gets how many fields the parser kept as unknown. */
static int body_case_as(int as, const uint8_t *buf, size_t len, size_t *unknown)
{
    int body = -1;
    switch (as) {
    case 0: {
        Gastroscreen__V1__EventMessage *m = gastroscreen__v1__event_message__unpack(NULL, len, buf);
        if (m) {
            body = (int)m->body_case;
            *unknown = m->base.n_unknown_fields;
            gastroscreen__v1__event_message__free_unpacked(m, NULL);
        }
        break;
    }
    case 1: {
        Gastroscreen__V1__SubmitMessage *m =
            gastroscreen__v1__submit_message__unpack(NULL, len, buf);
        if (m) {
            body = (int)m->body_case;
            *unknown = m->base.n_unknown_fields;
            gastroscreen__v1__submit_message__free_unpacked(m, NULL);
        }
        break;
    }
    case 2: {
        Gastroscreen__V1__QueryMessage *m = gastroscreen__v1__query_message__unpack(NULL, len, buf);
        if (m) {
            body = (int)m->body_case;
            *unknown = m->base.n_unknown_fields;
            gastroscreen__v1__query_message__free_unpacked(m, NULL);
        }
        break;
    }
    case 3: {
        Gastroscreen__V1__WorkMessage *m = gastroscreen__v1__work_message__unpack(NULL, len, buf);
        if (m) {
            body = (int)m->body_case;
            *unknown = m->base.n_unknown_fields;
            gastroscreen__v1__work_message__free_unpacked(m, NULL);
        }
        break;
    }
    case 4: {
        Gastroscreen__V1__TileMessage *m = gastroscreen__v1__tile_message__unpack(NULL, len, buf);
        if (m) {
            body = (int)m->body_case;
            *unknown = m->base.n_unknown_fields;
            gastroscreen__v1__tile_message__free_unpacked(m, NULL);
        }
        break;
    }
    default:
        fail_msg("no envelope %d", as);
    }
    return body;
}

static void wrong_envelope_parses_without_a_body(void **state)
{
    struct sample s[5];
    pack_samples(s);
    for (int from = 0; from < 5; from++) {
        for (int as = 0; as < 5; as++) {
            size_t unknown = 0;
            int body = body_case_as(as, s[from].buf, s[from].len, &unknown);
            if (from == as) {
                /* The right envelope: a body, nothing unknown. */
                assert_true(body > 0);
                assert_int_equal(unknown, 0);
                continue;
            }
            /* Another socket's envelope parses (the protocol field is shared), but its body
             * number is outside this envelope's range: no body, one unknown field. This is the
             * receiver's "wrong message type" signal. */
            if (body != 0)
                fail_msg("%s read as %s gave body %d", s[from].name, s[as].name, body);
            assert_int_equal(unknown, 1);
        }
    }
    for (int i = 0; i < 5; i++)
        free(s[i].buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tile_header_round_trip),
        cmocka_unit_test(tile_result_round_trip_keeps_512_packed_floats),
        cmocka_unit_test(verdict_round_trip),
        cmocka_unit_test(truncated_buffers_do_not_unpack),
        cmocka_unit_test(garbage_does_not_unpack),
        cmocka_unit_test(wrong_envelope_parses_without_a_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
