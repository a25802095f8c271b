/*
 * fuzz_seeds: writes the seed corpora of fuzz_coordinator, fuzz_worker and fuzz_journal into
 * OUT/coordinator, OUT/worker and OUT/journal (folders that must exist), so each fuzzer starts
 * from real packed messages and real journal files that reach every handler:
 *   - coordinator (tests/fuzz/coordinator_ops.h): one file per kind of message the coordinator
 *     reads (every WorkMessage body a worker sends, each submit, query and intake request) and
 *     whole slide flows from hello to report;
 *   - worker (tests/fuzz/fuzz_worker.c): each job a worker receives and a tile of each kind
 *     with its pixel frame;
 *   - journal (tests/fuzz/journal_ops.h): the folder the slide table writes for a slide taken
 *     to a verdict and one failed as poison, record by record and file by file.
 * The committed corpora under tests/fuzz/corpus were made with it (files it does not write,
 * such as crash reproducers, are kept beside them):
 *     fuzz_seeds tests/fuzz/corpus
 */
#include "daemon/service/journal.h"
#include "daemon/service/slide_table.h"
#include "ops/error.h"
#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/recfile.h"
#include "tests/fuzz/coordinator_ops.h"
#include "tests/fuzz/journal_ops.h"

#include <dirent.h>
#include <unistd.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V1 GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1
#define ID COP_SLIDE_ID

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} seed;

static void put(seed *s, const void *p, size_t n)
{
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = realloc(s->buf, s->cap);
        if (!s->buf)
            abort();
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static void op_raw(seed *s, int op, const void *p, size_t n)
{
    uint8_t h[3] = {(uint8_t)op, (uint8_t)(n & 0xff), (uint8_t)(n >> 8)};
    put(s, h, 3);
    put(s, p, n);
}

static void op_msg(seed *s, int op, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        abort();
    protobuf_c_message_pack(m, b);
    op_raw(s, op, b, n);
    free(b);
}

static void op_clock(seed *s, unsigned ten_ms)
{
    uint8_t h[3] = {COP_CLOCK, (uint8_t)(ten_ms & 0xff), (uint8_t)(ten_ms >> 8)};
    put(s, h, 3);
}

/* A work message from the peer that plays stage `stage` (peer = stage - 1). */
static void work(seed *s, int stage, Gastroscreen__V1__WorkMessage *m)
{
    m->protocol = V1;
    op_msg(s, COP_WORK | (stage - 1) << 3, &m->base);
}

static void save(const char *dir, const char *name, seed *s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/coordinator/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s->buf, 1, s->len, f) != s->len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    free(s->buf);
    memset(s, 0, sizeof *s);
}

static const char *worker_name(int stage)
{
    static const char *names[] = {"",
                                  "tiler.1@fuzz:1",
                                  "foreground.1@fuzz:2",
                                  "blur.1@fuzz:3",
                                  "infer.1@fuzz:4",
                                  "screener.1@fuzz:5",
                                  "reporter.1@fuzz:6"};
    return names[stage];
}

static void hello(seed *s, int stage)
{
    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    mp.sha256 = COP_MODEL_SHA;
    mp.bundle = "fuzz.safetensors";
    Gastroscreen__V1__WorkerHello h = GASTROSCREEN__V1__WORKER_HELLO__INIT;
    h.worker_id = (char *)worker_name(stage);
    h.stage = stage;
    h.host = "fuzz";
    h.pid = (uint32_t)stage;
    h.version = "0";
    h.tile_inbox = stage == 3   ? "inproc://fuzz-blur-inbox"
                   : stage == 4 ? "inproc://fuzz-infer"
                                : "";
    h.threads = 1;
    h.batch_size = 4;
    h.model = &mp;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO;
    m.hello = &h;
    work(s, stage, &m);
    Gastroscreen__V1__WorkerReady r = GASTROSCREEN__V1__WORKER_READY__INIT;
    r.worker_id = (char *)worker_name(stage);
    r.free_slots = 2;
    Gastroscreen__V1__WorkMessage m2 = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m2.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY;
    m2.ready = &r;
    work(s, stage, &m2);
}

static void hello_all(seed *s)
{
    for (int st = 1; st <= 6; st++)
        hello(s, st);
}

#define N_TILES 6

static void plan_result(seed *s, uint64_t job)
{
    Gastroscreen__V1__SlideFacts f = GASTROSCREEN__V1__SLIDE_FACTS__INIT;
    f.vendor = "aperio";
    f.width = 1536;
    f.height = 1024;
    f.level_count = 1;
    f.mpp_x = f.mpp_y = 0.5;
    f.quickhash = "0123456789abcdef";
    Gastroscreen__V1__TileGrid g = GASTROSCREEN__V1__TILE_GRID__INIT;
    g.level_downsample = 1;
    g.tile_size = 256;
    g.target_mpp = 0.5;
    g.window_level0 = 256;
    g.stride_level0 = 256;
    Gastroscreen__V1__PlannedTile t[N_TILES], *tp[N_TILES];
    for (int i = 0; i < N_TILES; i++) {
        Gastroscreen__V1__PlannedTile z = GASTROSCREEN__V1__PLANNED_TILE__INIT;
        t[i] = z;
        t[i].x0 = 256 * (i % 6);
        t[i].y0 = 256 * (i / 6);
        t[i].tissue_fraction = 0.5f + 0.05f * (float)i;
        tp[i] = &t[i];
    }
    char *warnings[] = {"no mpp: used default 0.5"};
    Gastroscreen__V1__PlanResult r = GASTROSCREEN__V1__PLAN_RESULT__INIT;
    r.slide_id = ID;
    r.attempt = 1;
    r.job_id = job;
    r.worker_id = (char *)worker_name(2);
    r.facts = &f;
    r.grid = &g;
    r.n_tiles = N_TILES;
    r.tiles = tp;
    r.method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    r.n_warnings = 1;
    r.warnings = warnings;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT;
    m.plan_result = &r;
    work(s, 2, &m);
}

static void blur_result(seed *s, uint32_t index, int blurry)
{
    Gastroscreen__V1__BlurResult r = GASTROSCREEN__V1__BLUR_RESULT__INIT;
    r.slide_id = ID;
    r.attempt = 1;
    r.tile_index = index;
    r.worker_id = (char *)worker_name(3);
    r.blurry = blurry;
    r.focus = blurry ? 0.01f : 0.5f;
    r.tissue_fraction = 0.7f;
    r.method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    r.request = 1;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_BLUR_RESULT;
    m.blur_result = &r;
    work(s, 3, &m);
}

static void tile_done(seed *s, uint64_t job, uint32_t sent)
{
    Gastroscreen__V1__TileJobDone d = GASTROSCREEN__V1__TILE_JOB_DONE__INIT;
    d.slide_id = ID;
    d.attempt = 1;
    d.job_id = job;
    d.worker_id = (char *)worker_name(1);
    d.sent = sent;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE;
    m.tile_job_done = &d;
    work(s, 1, &m);
}

static void tile_result(seed *s, uint32_t index, int outcome)
{
    float feature[512];
    for (int i = 0; i < 512; i++)
        feature[i] = (float)((i * 7 + (int)index) % 13) / 13.0f;
    uint8_t heat[16];
    for (int i = 0; i < 16; i++)
        heat[i] = (uint8_t)(i * 16);
    Gastroscreen__V1__TileResult r = GASTROSCREEN__V1__TILE_RESULT__INIT;
    r.slide_id = ID;
    r.attempt = 1;
    r.tile_index = index;
    r.worker_id = (char *)worker_name(4);
    r.outcome = outcome;
    r.request = 1;
    if (outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED) {
        r.score = 0.1f * (float)index;
        r.n_feature = 512;
        r.feature = feature;
        r.heatmap.data = heat;
        r.heatmap.len = sizeof heat;
        r.heatmap_size = 4;
    } else if (outcome == GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR)
        r.error = "openslide: read failed";
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    m.tile_result = &r;
    work(s, 4, &m);
}

static void screen_result(seed *s, uint64_t job, float score)
{
    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    mp.sha256 = COP_MODEL_SHA;
    Gastroscreen__V1__ScreenResult r = GASTROSCREEN__V1__SCREEN_RESULT__INIT;
    r.slide_id = ID;
    r.attempt = 1;
    r.job_id = job;
    r.worker_id = (char *)worker_name(5);
    r.score = score;
    r.model = &mp;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT;
    m.screen_result = &r;
    work(s, 5, &m);
}

static void report_result(seed *s, uint64_t job)
{
    Gastroscreen__V1__ReportPaths p = GASTROSCREEN__V1__REPORT_PATHS__INIT;
    p.report_json = "/reports/" ID "/report.json";
    p.heatmap_png = "/reports/" ID "/heatmap.png";
    p.regions_geojson = "/reports/" ID "/regions.geojson";
    Gastroscreen__V1__ReportResult r = GASTROSCREEN__V1__REPORT_RESULT__INIT;
    r.slide_id = ID;
    r.attempt = 1;
    r.job_id = job;
    r.worker_id = (char *)worker_name(6);
    r.paths = &p;
    r.regions = 2;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT;
    m.report_result = &r;
    work(s, 6, &m);
}

static void heartbeat(seed *s, int stage, uint64_t job, int kind)
{
    Gastroscreen__V1__JobRef ref = GASTROSCREEN__V1__JOB_REF__INIT;
    ref.slide_id = ID;
    ref.attempt = 1;
    ref.job_id = job;
    ref.kind = kind;
    Gastroscreen__V1__JobRef *refs[] = {&ref};
    Gastroscreen__V1__StageStats st = GASTROSCREEN__V1__STAGE_STATS__INIT;
    st.stage = stage;
    st.instance_id = (char *)worker_name(stage);
    st.tiles_per_second = 3.5;
    st.busy_fraction = 0.5;
    st.processed = 10;
    st.rss_bytes = 1 << 20;
    Gastroscreen__V1__WorkerHeartbeat h = GASTROSCREEN__V1__WORKER_HEARTBEAT__INIT;
    h.worker_id = (char *)worker_name(stage);
    h.progress = 5;
    h.n_in_hand = 1;
    h.in_hand = refs;
    h.stats = &st;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT;
    m.worker_heartbeat = &h;
    work(s, stage, &m);
}

static void goodbye(seed *s, int stage, uint64_t job, int kind)
{
    Gastroscreen__V1__JobRef ref = GASTROSCREEN__V1__JOB_REF__INIT;
    ref.slide_id = ID;
    ref.attempt = 1;
    ref.job_id = job;
    ref.kind = kind;
    uint32_t unsent[] = {1, 3};
    Gastroscreen__V1__HandedBack hb = GASTROSCREEN__V1__HANDED_BACK__INIT;
    hb.job = &ref;
    hb.n_unsent_tiles = 2;
    hb.unsent_tiles = unsent;
    Gastroscreen__V1__HandedBack *hbs[] = {&hb};
    Gastroscreen__V1__WorkerGoodbye g = GASTROSCREEN__V1__WORKER_GOODBYE__INIT;
    g.worker_id = (char *)worker_name(stage);
    g.n_handed_back = 1;
    g.handed_back = hbs;
    g.reason = "SIGTERM";
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE;
    m.goodbye = &g;
    work(s, stage, &m);
}

static void submit(seed *s, const char *path)
{
    Gastroscreen__V1__SubmitRequest r = GASTROSCREEN__V1__SUBMIT_REQUEST__INIT;
    r.path = (char *)path;
    r.request_id = "req-1";
    r.external_id = "ACC-42";
    Gastroscreen__V1__SubmitMessage m = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    m.protocol = V1;
    m.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST;
    m.request = &r;
    op_msg(s, COP_SUBMIT, &m.base);
}

static void arrived(seed *s, const char *path)
{
    Gastroscreen__V1__SlideArrived a = GASTROSCREEN__V1__SLIDE_ARRIVED__INIT;
    a.path = (char *)path;
    a.announcer = "scanner-3";
    a.external_id = "ACC-43";
    Gastroscreen__V1__EventMessage m = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    m.protocol = V1;
    m.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED;
    m.arrived = &a;
    op_msg(s, COP_INTAKE, &m.base);
}

static void query_events(seed *s, uint64_t after, uint32_t max)
{
    Gastroscreen__V1__EventsSinceRequest r = GASTROSCREEN__V1__EVENTS_SINCE_REQUEST__INIT;
    r.after_seq = after;
    r.max_events = max;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.protocol = V1;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE;
    m.events_since = &r;
    op_msg(s, COP_QUERY, &m.base);
}

static void query_state(seed *s, const char *id, const char *path, int in_flight)
{
    Gastroscreen__V1__SlideStateRequest r = GASTROSCREEN__V1__SLIDE_STATE_REQUEST__INIT;
    r.slide_id = (char *)id;
    r.path = (char *)path;
    r.in_flight = in_flight;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.protocol = V1;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_SLIDE_STATE;
    m.slide_state = &r;
    op_msg(s, COP_QUERY, &m.base);
}

/* ---- fuzz_worker: [0] even = a WorkMessage for the worker's DEALER; odd = [len16][TileMessage]
 * [pixels] for a tile inbox ------------------------------------------------------------------ */

static void save_worker(const char *dir, const char *name, int tiles, const ProtobufCMessage *m,
                        const uint8_t *px, size_t npx)
{
    seed s = {0};
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        abort();
    protobuf_c_message_pack(m, b);
    uint8_t sel = tiles ? 1 : 0;
    put(&s, &sel, 1);
    if (tiles) {
        uint8_t h[2] = {(uint8_t)(n & 0xff), (uint8_t)(n >> 8)};
        put(&s, h, 2);
    }
    put(&s, b, n);
    if (npx)
        put(&s, px, npx);
    free(b);
    char path[4096];
    snprintf(path, sizeof path, "%s/worker/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s.buf, 1, s.len, f) != s.len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    free(s.buf);
}

static void save_job(const char *dir, const char *name, Gastroscreen__V1__WorkMessage *m)
{
    m->protocol = V1;
    save_worker(dir, name, 0, &m->base, NULL, 0);
}

/* A tile of side x side RGB pixels: tissue-coloured stripes, sharp edges. */
static void tile_seed(const char *dir, const char *name, uint32_t side, int blur)
{
    size_t npx = (size_t)side * side * 3;
    uint8_t *px = malloc(npx);
    if (!px)
        abort();
    for (uint32_t y = 0; y < side; y++)
        for (uint32_t x = 0; x < side; x++) {
            uint8_t *p = px + ((size_t)y * side + x) * 3;
            int dark = ((x / 4) + (y / 4)) % 2;
            p[0] = dark ? 120 : 230;
            p[1] = dark ? 40 : 200;
            p[2] = dark ? 140 : 220;
        }
    Gastroscreen__V1__InferJob ij = GASTROSCREEN__V1__INFER_JOB__INIT;
    ij.heatmap_size = 4;
    ij.judge_focus = 1;
    Gastroscreen__V1__BlurJob bj = GASTROSCREEN__V1__BLUR_JOB__INIT;
    Gastroscreen__V1__TileHeader h = GASTROSCREEN__V1__TILE_HEADER__INIT;
    h.slide_id = "0123456789abcdef";
    h.attempt = 1;
    h.tile_index = 3;
    h.width = h.height = side;
    h.channels = 3;
    h.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    h.window_level0 = side * 2;
    h.mpp = 0.5;
    h.job_id = 2;
    h.tiler_id = "tiler.1@fuzz:1";
    h.request = 1;
    if (blur) {
        h.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR;
        h.blur = &bj;
    } else {
        h.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_INFER;
        h.infer = &ij;
    }
    Gastroscreen__V1__TileMessage m = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    m.protocol = V1;
    m.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    m.tile = &h;
    save_worker(dir, name, 1, &m.base, px, npx);
    free(px);
}

static void worker_seeds(const char *dir)
{
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;

    Gastroscreen__V1__PlanJob pj = GASTROSCREEN__V1__PLAN_JOB__INIT;
    pj.slide_id = "0123456789abcdef";
    pj.attempt = 1;
    pj.job_id = 1;
    pj.path = "/slides/a.svs";
    pj.target_mpp = 0.5;
    pj.tile_size = 64;
    pj.stride = 64;
    pj.default_mpp = 0.25;
    pj.min_tissue_fraction = 0.05f;
    pj.thumbnail_size = 64;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB;
    m.plan_job = &pj;
    save_job(dir, "plan-job", &m);

    Gastroscreen__V1__TileGrid g = GASTROSCREEN__V1__TILE_GRID__INIT;
    g.level_downsample = 1;
    g.tile_size = 32;
    g.target_mpp = 0.5;
    g.window_level0 = 64;
    g.stride_level0 = 64;
    Gastroscreen__V1__TileRef r[3], *rp[3];
    for (int i = 0; i < 3; i++) {
        Gastroscreen__V1__TileRef z = GASTROSCREEN__V1__TILE_REF__INIT;
        r[i] = z;
        r[i].index = (uint32_t)i;
        r[i].x0 = 64 * i;
        r[i].y0 = 32;
        rp[i] = &r[i];
    }
    char *sinks[] = {"inproc://fuzz-blur-inbox"};
    Gastroscreen__V1__BlurJob bj = GASTROSCREEN__V1__BLUR_JOB__INIT;
    Gastroscreen__V1__InferJob ij = GASTROSCREEN__V1__INFER_JOB__INIT;
    ij.heatmap_size = 4;
    Gastroscreen__V1__TileJob tj = GASTROSCREEN__V1__TILE_JOB__INIT;
    tj.slide_id = "0123456789abcdef";
    tj.attempt = 1;
    tj.job_id = 2;
    tj.path = "/slides/a.svs";
    tj.grid = &g;
    tj.n_tiles = 3;
    tj.tiles = rp;
    tj.n_sink_endpoints = 1;
    tj.sink_endpoints = sinks;
    tj.request = 1;
    tj.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_BLUR;
    tj.blur = &bj;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB;
    m.tile_job = &tj;
    save_job(dir, "tile-job-blur", &m);
    tj.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_INFER;
    tj.infer = &ij;
    tj.request = 2;
    save_job(dir, "tile-job-infer", &m);

    float features[2 * 512];
    for (int i = 0; i < 2 * 512; i++)
        features[i] = (float)(i % 17) / 17.0f;
    uint32_t idx[] = {4, 9};
    float scores[] = {0.9f, 0.4f};
    Gastroscreen__V1__ScreenTask st = GASTROSCREEN__V1__SCREEN_TASK__INIT;
    st.slide_id = "0123456789abcdef";
    st.attempt = 1;
    st.job_id = 5;
    st.k = 2;
    st.feature_dim = 512;
    st.n_features = 2 * 512;
    st.features = features;
    st.n_tile_indices = 2;
    st.tile_indices = idx;
    st.n_tile_scores = 2;
    st.tile_scores = scores;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK;
    m.screen_task = &st;
    save_job(dir, "screen-task", &m);

    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    mp.bundle = "seed1.safetensors";
    mp.sha256 = "aaaa";
    mp.untrained = 1;
    mp.notice = "model: untrained - not a diagnosis";
    Gastroscreen__V1__TileCounts tc = GASTROSCREEN__V1__TILE_COUNTS__INIT;
    tc.planned = 3;
    tc.inferred = 2;
    tc.background = 1;
    char *warnings[] = {"no mpp: used default 0.25"};
    Gastroscreen__V1__Verdict v = GASTROSCREEN__V1__VERDICT__INIT;
    v.slide_id = "0123456789abcdef";
    v.attempt = 1;
    v.path = "/slides/a.svs";
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE;
    v.score = 0.9f;
    v.threshold = 0.74f;
    v.reason = "score 0.90 > 0.74";
    v.model = &mp;
    v.n_warnings = 1;
    v.warnings = warnings;
    v.tiles = &tc;
    v.blurred_fraction = 0.25f;
    v.blur_sample_judged = 2;
    v.foreground_method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    v.blur_method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    v.threshold_source = "default";
    Gastroscreen__V1__SlideFacts f = GASTROSCREEN__V1__SLIDE_FACTS__INIT;
    f.vendor = "aperio";
    f.width = 192;
    f.height = 128;
    f.level_count = 1;
    f.mpp_x = f.mpp_y = 0.5;
    uint8_t heat[16];
    for (int i = 0; i < 16; i++)
        heat[i] = (uint8_t)(i * 16);
    Gastroscreen__V1__TileSummary ts[3], *tsp[3];
    for (int i = 0; i < 3; i++) {
        Gastroscreen__V1__TileSummary z = GASTROSCREEN__V1__TILE_SUMMARY__INIT;
        ts[i] = z;
        ts[i].index = (uint32_t)i;
        ts[i].x0 = 64 * i;
        ts[i].y0 = 32;
        ts[i].outcome = i == 2 ? GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND
                               : GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED;
        ts[i].score = 0.3f * (float)i;
        if (i < 2) {
            ts[i].heatmap.data = heat;
            ts[i].heatmap.len = sizeof heat;
        }
        tsp[i] = &ts[i];
    }
    Gastroscreen__V1__StageSeconds ss = GASTROSCREEN__V1__STAGE_SECONDS__INIT;
    ss.stage = GASTROSCREEN__V1__STAGE__STAGE_INFER;
    ss.seconds = 1.5;
    Gastroscreen__V1__StageSeconds *ssp[] = {&ss};
    Gastroscreen__V1__ReportJob rj = GASTROSCREEN__V1__REPORT_JOB__INIT;
    rj.slide_id = "0123456789abcdef";
    rj.attempt = 1;
    rj.job_id = 6;
    rj.path = "/slides/a.svs";
    rj.out_dir = "/reports/0123456789abcdef";
    rj.verdict = &v;
    rj.facts = &f;
    rj.grid = &g;
    rj.n_tiles = 3;
    rj.tiles = tsp;
    rj.heatmap_size = 4;
    rj.n_stage_seconds = 1;
    rj.stage_seconds = ssp;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB;
    m.report_job = &rj;
    save_job(dir, "report-job", &m);
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED;
    v.state = GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_FAILED;
    v.poison = 1;
    v.reason = "poison: 3 workers were lost";
    save_job(dir, "report-job-failed", &m);

    Gastroscreen__V1__WorkerWelcome w = GASTROSCREEN__V1__WORKER_WELCOME__INIT;
    w.accepted = 1;
    w.heartbeat_ms = 1000;
    w.liveness = 3;
    w.coordinator_id = "c0ffee";
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME;
    m.welcome = &w;
    save_job(dir, "welcome", &m);
    Gastroscreen__V1__CoordinatorHeartbeat ch = GASTROSCREEN__V1__COORDINATOR_HEARTBEAT__INIT;
    ch.coordinator_id = "c0ffee";
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT;
    m.coordinator_heartbeat = &ch;
    save_job(dir, "coordinator-heartbeat", &m);

    tile_seed(dir, "tile-blur", 64, 1);
    tile_seed(dir, "tile-infer", 32, 0);
}

/* ---- fuzz_journal ---------------------------------------------------------------------- */

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "fuzz_seeds: %s failed: %s\n", #x, gs_error_get());                    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* The two slides' random ids, replaced by JOP_ID_A / JOP_ID_B in everything written. */
static char id_a[GS_SLIDE_ID_LEN + 1], id_b[GS_SLIDE_ID_LEN + 1];

static void jop(seed *s, int op, const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    if (!c)
        abort();
    memcpy(c, p, n);
    for (size_t i = 0; i + GS_SLIDE_ID_LEN <= n; i++) {
        if (memcmp(c + i, id_a, GS_SLIDE_ID_LEN) == 0)
            memcpy(c + i, JOP_ID_A, GS_SLIDE_ID_LEN);
        else if (memcmp(c + i, id_b, GS_SLIDE_ID_LEN) == 0)
            memcpy(c + i, JOP_ID_B, GS_SLIDE_ID_LEN);
    }
    op_raw(s, op, c, n);
    free(c);
}

static int visit_record(void *ud, const uint8_t *payload, size_t len, uint64_t offset)
{
    (void)offset;
    jop(ud, JOP_RECORD, payload, len);
    return 0;
}

static void file_op(seed *s, int op, const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    uint8_t buf[65535];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    jop(s, op, buf, n);
}

static void journal_seeds(const char *out)
{
    char dir[] = "/tmp/gs-fuzz-seeds-XXXXXX";
    CHECK(mkdtemp(dir));
    char slide[4200];
    snprintf(slide, sizeof slide, "%s/a.svs", dir);
    gs_journal *j = gs_journal_open(dir);
    CHECK(j);
    gs_slides_options o;
    gs_slides_options_default(&o);
    o.model_bundle = "seed1.safetensors";
    o.model_sha256 = "aaaa";
    o.model_untrained = 1;
    gs_slides *t = gs_slides_new(j, &o);
    CHECK(t);
    int64_t now = 1767225600000;
    CHECK(gs_slides_intake(t, slide, 1000, now, GS_INTAKE_SUBMIT, "ACC-1", now, id_a, NULL, NULL) ==
          0);
    CHECK(gs_slides_planned(t, id_a, 1, "0123abcd", GS_METHOD_CLASSICAL, NULL, now + 1, NULL,
                            NULL) == 0);
    CHECK(gs_slides_blur_checked(t, id_a, 1, 0.1f, GS_METHOD_CLASSICAL, 0, NULL, now + 2, NULL) ==
          0);
    CHECK(gs_slides_inferring(t, id_a, 1, now + 3, NULL) == 0);
    CHECK(gs_slides_screened(t, id_a, 1, 0.9f, now + 4, NULL) == 0);
    const char *warnings[] = {"no mpp: used default 0.25"};
    gs_slide_report r = {.report_json = "/reports/r.json",
                         .heatmap_png = "/reports/h.png",
                         .regions_geojson = "/reports/g.geojson",
                         .tiles = {.planned = 6, .inferred = 5, .background = 1},
                         .warnings = warnings,
                         .n_warnings = 1};
    CHECK(gs_slides_reported(t, id_a, 1, &r, now + 5, NULL) == 0);
    CHECK(gs_slides_done(t, id_a, 1, now + 6, NULL) == 0);
    snprintf(slide, sizeof slide, "%s/b.svs", dir);
    CHECK(gs_slides_intake(t, slide, 2000, now, GS_INTAKE_ANNOUNCED, NULL, now + 7, id_b, NULL,
                           NULL) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(gs_slides_crash_mark(t, id_b, 1, now + 8 + i, NULL) == 0);
    gs_slides_destroy(&t);
    gs_journal_destroy(&j);

    seed s = {0};
    char path[4200];
    snprintf(path, sizeof path, "%s/events.log", dir);
    gs_recfile_options ro = {.kind = JOP_LOG_KIND, .version = JOP_LOG_VERSION};
    gs_recfile *f = gs_recfile_open(path, &ro);
    CHECK(f);
    gs_recfile_scan_info info;
    CHECK(gs_recfile_scan(f, visit_record, &s, &info) == 0);
    gs_recfile_destroy(&f);
    seed records = s;
    memset(&s, 0, sizeof s);
    put(&s, records.buf, records.len);
    char name[64];
    snprintf(name, sizeof name, "%s.json", id_a);
    file_op(&s, JOP_SLIDE_A, dir, name);
    snprintf(name, sizeof name, "%s.json", id_b);
    file_op(&s, JOP_SLIDE_B, dir, name);
    file_op(&s, JOP_STATE, dir, "state.json");
    snprintf(path, sizeof path, "%s/journal/verdict-and-poison", out);
    FILE *w = fopen(path, "wb");
    CHECK(w && fwrite(s.buf, 1, s.len, w) == s.len && fclose(w) == 0);
    free(s.buf);
    /* Only the slide files, no log: replay from the records alone. */
    memset(&s, 0, sizeof s);
    snprintf(name, sizeof name, "%s.json", id_a);
    file_op(&s, JOP_SLIDE_A, dir, name);
    snprintf(name, sizeof name, "%s.json", id_b);
    file_op(&s, JOP_SLIDE_B, dir, name);
    snprintf(path, sizeof path, "%s/journal/records-only", out);
    w = fopen(path, "wb");
    CHECK(w && fwrite(s.buf, 1, s.len, w) == s.len && fclose(w) == 0);
    free(s.buf);
    /* The log with a torn last record. */
    memset(&s, 0, sizeof s);
    put(&s, records.buf, records.len);
    const uint8_t torn[] = {0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3};
    op_raw(&s, JOP_RAW, torn, sizeof torn);
    snprintf(path, sizeof path, "%s/journal/torn-tail", out);
    w = fopen(path, "wb");
    CHECK(w && fwrite(s.buf, 1, s.len, w) == s.len && fclose(w) == 0);
    free(s.buf);
    free(records.buf);

    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT_DIR (holding coordinator/, worker/ and journal/)\n",
                argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    seed s = {0};

    hello_all(&s);
    save(dir, "hello-every-stage", &s);

    /* The whole flow of the harness's slide. Jobs: 1 the plan, 2 the blur sample's TileJob,
     * then the infer TileJobs (4 tiles each), the ScreenTask, the ReportJob. */
    hello_all(&s);
    plan_result(&s, 1);
    for (uint32_t i = 0; i < N_TILES; i++)
        blur_result(&s, i, 0);
    tile_done(&s, 2, 2);
    for (uint32_t i = 0; i < N_TILES; i++)
        tile_result(&s, i,
                    i == 5 ? GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND
                           : GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
    tile_done(&s, 3, 4);
    tile_done(&s, 4, 2);
    for (uint64_t j = 4; j <= 6; j++)
        screen_result(&s, j, 0.9f);
    for (uint64_t j = 5; j <= 8; j++)
        report_result(&s, j);
    query_state(&s, ID, "", 0);
    query_events(&s, 0, 0);
    save(dir, "flow", &s);

    /* The blur-first exit: every sample tile blurry. */
    hello_all(&s);
    plan_result(&s, 1);
    for (uint32_t i = 0; i < N_TILES; i++)
        blur_result(&s, i, 1);
    tile_done(&s, 2, 2);
    for (uint64_t j = 3; j <= 5; j++)
        report_result(&s, j);
    save(dir, "flow-blurry", &s);

    /* Workers that go: heartbeats naming jobs, a goodbye handing a job back, silence. */
    hello_all(&s);
    plan_result(&s, 1);
    heartbeat(&s, 1, 2, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_TILES);
    heartbeat(&s, 4, 0, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_INFER_TILES);
    goodbye(&s, 1, 2, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_TILES);
    op_clock(&s, 3000);
    hello(&s, 1);
    for (uint32_t i = 0; i < N_TILES; i++)
        blur_result(&s, i, 0);
    op_clock(&s, 60000);
    save(dir, "workers-go", &s);

    /* Results from a peer that never said hello, and a failed plan. */
    plan_result(&s, 1);
    tile_result(&s, 0, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR);
    screen_result(&s, 1, 0.99f);
    hello(&s, 2);
    {
        Gastroscreen__V1__PlanResult r = GASTROSCREEN__V1__PLAN_RESULT__INIT;
        r.slide_id = ID;
        r.attempt = 1;
        r.job_id = 1;
        r.worker_id = (char *)worker_name(2);
        r.error = "openslide: unsupported format";
        Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT;
        m.plan_result = &r;
        work(&s, 2, &m);
    }
    hello(&s, 6);
    report_result(&s, 2);
    save(dir, "strangers-and-failure", &s);

    submit(&s, COP_ROOT COP_SLIDE_NAME);
    submit(&s, COP_ROOT COP_OTHER_NAME);
    submit(&s, COP_ROOT "../../etc/passwd");
    submit(&s, "/etc/passwd");
    submit(&s, "relative.svs");
    query_state(&s, "", COP_ROOT COP_SLIDE_NAME, 0);
    query_state(&s, "", "", 1);
    save(dir, "submit", &s);

    arrived(&s, COP_ROOT COP_OTHER_NAME);
    arrived(&s, COP_ROOT COP_SLIDE_NAME);
    arrived(&s, COP_ROOT "missing.svs");
    op_clock(&s, 100);
    arrived(&s, "/dev/zero");
    save(dir, "intake", &s);

    query_events(&s, 0, 1);
    query_events(&s, 1, 1000);
    query_events(&s, UINT64_MAX, 0);
    query_state(&s, ID, "", 0);
    query_state(&s, "ffffffffffffffff", "", 0);
    query_state(&s, "not-an-id", "", 0);
    save(dir, "query", &s);

    /* Frames and envelopes the transport refuses. */
    const uint8_t garbage[] = {0xff, 0x13, 0x37, 0x00, 0x42, 0x99, 0xfe, 0x01};
    op_raw(&s, COP_WORK, garbage, sizeof garbage);
    op_raw(&s, COP_SPLIT, garbage, sizeof garbage);
    op_raw(&s, COP_SUBMIT, garbage, sizeof garbage);
    op_raw(&s, COP_QUERY, garbage, sizeof garbage);
    op_raw(&s, COP_INTAKE, garbage, sizeof garbage);
    op_raw(&s, COP_TOPIC, "slide.verdict.\0\x08\x01", 17);
    save(dir, "garbage", &s);
    worker_seeds(dir);
    journal_seeds(dir);
    return 0;
}
