/*
 * The stage handlers of stages/handlers/blur, stages/handlers/infer, stages/handlers/screener and
 * stages/handlers/reporter on real inputs, without sockets: the FQPath focus pair through the
 * classical blur judgement, a CMU-1 tile through the infer stage against a direct run of
 * model/network on a seeded bundle (made by model/pytorch/make_bundle.py --seed 1 at test time, see
 * tests/cmake/handlers.cmake), the screener's row repetition, and the reporter's folder for a
 * positive and a failed verdict.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/network.h"
#include "ops/error.h"
#include "ops/focus.h"
#include "ops/resample.h"
#include "stages/handlers/blur.h"
#include "stages/handlers/infer.h"
#include "stages/slide/png_io.h"
#include "stages/runtime/provenance.h"
#include "stages/handlers/reporter.h"
#include "stages/handlers/screener.h"
#include "stages/slide/reader.h"

#define SLIDE_ID "0123456789abcdef"
#define SIDE 256 /* infer tile side: real pixels, affordable under the sanitizers */

static const char *bundle_path(void)
{
    static char p[4096];
    const char *b = getenv("GS_BUILD_DIR");
    assert_non_null(b);
    snprintf(p, sizeof p, "%s/tests/seeded/seed1.safetensors", b);
    return p;
}

static int shared_path(char *buf, size_t n, const char *rel)
{
    const char *d = getenv("GS_SHARED_DATA");
    if (!d)
        return -1;
    snprintf(buf, n, "%s/%s", d, rel);
    return access(buf, R_OK);
}

static const char *test_data(const char *rel)
{
    static char p[4096];
    const char *d = getenv("GS_TEST_DATA");
    assert_non_null(d);
    snprintf(p, sizeof p, "%s/%s", d, rel);
    return p;
}

static float sigmoidf_(float x)
{
    return (float)(1.0 / (1.0 + exp(-(double)x)));
}

/* ---- blur ------------------------------------------------------------------------------- */

static void blur_header(Gastroscreen__V1__TileHeader *h, Gastroscreen__V1__BlurJob *bj, int w,
                        int hh, uint32_t index)
{
    gastroscreen__v1__tile_header__init(h);
    gastroscreen__v1__blur_job__init(bj);
    h->slide_id = SLIDE_ID;
    h->attempt = 2;
    h->tile_index = index;
    h->request = 1;
    h->width = (uint32_t)w;
    h->height = (uint32_t)hh;
    h->channels = 3;
    h->pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    h->job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR;
    h->blur = bj;
}

static void blur_fqpath_pair_classical(void **state)
{
    (void)state;
    char pin[4096], pout[4096];
    if (shared_path(pin, sizeof pin, "blur/fqpath/sample_in_focus.png") < 0 ||
        shared_path(pout, sizeof pout, "blur/fqpath/sample_out_of_focus.png") < 0) {
        printf("SKIP: GS_SHARED_DATA/blur/fqpath not available\n");
        skip();
    }
    uint8_t *img[2] = {NULL, NULL};
    int w[2], h[2];
    assert_int_equal(gs_png_read(pin, 3, &img[0], &w[0], &h[0]), 0);
    assert_int_equal(gs_png_read(pout, 3, &img[1], &w[1], &h[1]), 0);
    /* The blur stage sees tiles at 0.5 um/px; the pair is at ~0.25 um/px. */
    gs_model *m = gs_model_load(bundle_path());
    assert_non_null(m);
    /* The seeded bundle's blur network is untrained: the stage must use the classical method
     * with or without the bundle. */
    gs_blur *with_model = gs_blur_new(m, NULL), *without = gs_blur_new(NULL, NULL);
    assert_non_null(with_model);
    assert_non_null(without);
    assert_int_equal(gs_blur_method(with_model), GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    gs_blur_result res;
    for (int i = 0; i < 2; i++) {
        int w2 = w[i] / 2, h2 = h[i] / 2;
        uint8_t *small = malloc((size_t)w2 * h2 * 3);
        assert_non_null(small);
        assert_int_equal(gs_resize_area_u8(img[i], w[i], h[i], (size_t)w[i] * 3, 3, small, w2, h2,
                                           (size_t)w2 * 3),
                         0);
        Gastroscreen__V1__TileHeader hd;
        Gastroscreen__V1__BlurJob bj;
        blur_header(&hd, &bj, w2, h2, 7 + (uint32_t)i);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(gs_blur_judge(k ? with_model : without, &hd, small,
                                           (size_t)w2 * h2 * 3, "blur.1@test:1", &res),
                             0);
            printf("%s: focus %.1f, tissue %.2f, blurry %d\n", i ? "out of focus" : "in focus",
                   res.r.focus, res.r.tissue_fraction, res.r.blurry);
            assert_string_equal(res.r.error, "");
            assert_int_equal(res.r.blurry, i == 1);
            assert_int_equal(res.r.method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
            assert_string_equal(res.r.slide_id, SLIDE_ID);
            assert_int_equal(res.r.attempt, 2);
            assert_int_equal(res.r.tile_index, 7 + i);
            assert_string_equal(res.r.worker_id, "blur.1@test:1");
            assert_true(res.r.tissue_fraction > 0.1f && res.r.tissue_fraction <= 1.0f);
        }
        /* A threshold in the job moves the decision: above the in-focus score, both blurry. */
        bj.focus_threshold = 1e6f;
        assert_int_equal(gs_blur_judge(without, &hd, small, (size_t)w2 * h2 * 3, NULL, &res), 0);
        assert_true(res.r.blurry);
        bj.focus_threshold = 0;
        /* Another model's tile, a frame of the wrong size, an infer header: failed requests. */
        bj.model_sha256 = "00ff";
        gs_blur *pinned = gs_blur_new(NULL, "abcd");
        assert_int_equal(gs_blur_judge(pinned, &hd, small, (size_t)w2 * h2 * 3, NULL, &res), 0);
        assert_non_null(strstr(res.r.error, "00ff"));
        gs_blur_destroy(&pinned);
        bj.model_sha256 = NULL;
        assert_int_equal(gs_blur_judge(without, &hd, small, (size_t)w2 * h2 * 3 - 1, NULL, &res),
                         0);
        assert_non_null(strstr(res.r.error, "bad tile frame"));
        hd.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_INFER;
        assert_int_equal(gs_blur_judge(without, &hd, small, (size_t)w2 * h2 * 3, NULL, &res), 0);
        assert_non_null(strstr(res.r.error, "not a blur tile"));
        free(small);
    }
    /* Glass only: nothing to measure, so the tile cannot be judged. */
    uint8_t *glass = malloc(64 * 64 * 3);
    memset(glass, 240, 64 * 64 * 3);
    Gastroscreen__V1__TileHeader hd;
    Gastroscreen__V1__BlurJob bj;
    blur_header(&hd, &bj, 64, 64, 0);
    assert_int_equal(gs_blur_judge(without, &hd, glass, 64 * 64 * 3, NULL, &res), 0);
    assert_non_null(strstr(res.r.error, "cannot judge focus"));
    free(glass);
    gs_blur_destroy(&with_model);
    gs_blur_destroy(&without);
    assert_null(without);
    gs_model_destroy(&m);
    free(img[0]);
    free(img[1]);
}

/* ---- infer ------------------------------------------------------------------------------ */

static void infer_header(Gastroscreen__V1__TileHeader *h, Gastroscreen__V1__InferJob *ij,
                         uint32_t index, const char *sha)
{
    gastroscreen__v1__tile_header__init(h);
    gastroscreen__v1__infer_job__init(ij);
    h->slide_id = SLIDE_ID;
    h->attempt = 1;
    h->tile_index = index;
    h->request = 2;
    h->width = h->height = SIDE;
    h->channels = 3;
    h->pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    h->read_us = 1234;
    ij->heatmap_size = 16;
    ij->model_sha256 = (char *)sha;
    h->job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_INFER;
    h->infer = ij;
}

static void infer_cmu_tile_matches_the_network(void **state)
{
    (void)state;
    gs_model *m = gs_model_load(bundle_path());
    assert_non_null(m);
    gs_provenance prov;
    static const gs_net_id nets[] = {GS_NET_MULTITASK};
    assert_int_equal(gs_provenance_init(&prov, bundle_path(), m, nets, 1), 0);
    assert_int_equal(strlen(prov.sha256), 64);
    assert_true(prov.msg.untrained);
    assert_string_equal(prov.msg.notice, "model: untrained — not a diagnosis");

    gs_slide *s = gs_slide_open(test_data("CMU-1-Small-Region.svs"), NULL);
    assert_non_null(s);
    size_t px = (size_t)SIDE * SIDE * 3;
    uint8_t *a = malloc(px), *b = malloc(px), *white = malloc(px);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(white);
    /* The two tiles of a coarse grid with the most tissue. */
    int64_t best[2] = {-1, -1}, tw, th;
    gs_slide_target_size(s, &tw, &th);
    for (int64_t ty = 0; ty + SIDE <= th; ty += SIDE)
        for (int64_t tx = 0; tx + SIDE <= tw; tx += SIDE) {
            assert_int_equal(gs_slide_read_target(s, tx, ty, SIDE, SIDE, white), 0);
            int64_t tissue = 0;
            for (size_t i = 0; i < px; i += 3)
                tissue += (white[i] + white[i + 1] + white[i + 2]) < 3 * 200;
            if (tissue > best[0]) {
                best[1] = best[0];
                memcpy(b, a, px);
                best[0] = tissue;
                memcpy(a, white, px);
            } else if (tissue > best[1]) {
                best[1] = tissue;
                memcpy(b, white, px);
            }
        }
    printf("tissue pixels in the chosen tiles: %lld, %lld of %d\n", (long long)best[0],
           (long long)best[1], SIDE * SIDE);
    assert_true(best[1] > SIDE * SIDE / 2);
    memset(white, 255, px);
    gs_slide_destroy(&s);

    /* Four tiles, batch 2: a, glass, another model's b, b. */
    Gastroscreen__V1__TileHeader h[4];
    Gastroscreen__V1__InferJob ij[4];
    infer_header(&h[0], &ij[0], 10, prov.sha256);
    infer_header(&h[1], &ij[1], 11, "");
    infer_header(&h[2], &ij[2], 12, "deadbeef");
    infer_header(&h[3], &ij[3], 13, NULL);
    ij[3].heatmap_size = 0; /* the default, 16 */
    const Gastroscreen__V1__TileHeader *hp[4] = {&h[0], &h[1], &h[2], &h[3]};
    const uint8_t *pp[4] = {a, white, b, b};
    size_t lens[4] = {px, px, px, px};
    uint64_t waits[4] = {1, 2, 3, 4};
    gs_infer *inf = gs_infer_new(m, 2, prov.sha256);
    assert_non_null(inf);
    assert_int_equal(gs_infer_run(inf, 4, hp, pp, lens, "infer.1@test:1", waits), 0);

    const Gastroscreen__V1__TileResult *r0 = gs_infer_result(inf, 0);
    const Gastroscreen__V1__TileResult *r1 = gs_infer_result(inf, 1);
    const Gastroscreen__V1__TileResult *r2 = gs_infer_result(inf, 2);
    const Gastroscreen__V1__TileResult *r3 = gs_infer_result(inf, 3);
    assert_int_equal(r0->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
    assert_int_equal(r1->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND);
    assert_int_equal(r2->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR);
    assert_non_null(strstr(r2->error, "deadbeef"));
    assert_int_equal(r3->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
    assert_string_equal(r0->slide_id, SLIDE_ID);
    assert_int_equal(r0->attempt, 1);
    assert_int_equal(r0->tile_index, 10);
    assert_int_equal(r3->tile_index, 13);
    assert_int_equal(r0->request, 2);
    assert_string_equal(r0->worker_id, "infer.1@test:1");
    assert_int_equal(r0->timing->read_us, 1234);
    assert_int_equal(r0->timing->wait_us, 1);
    assert_int_equal(r0->timing->batch_size, 2); /* a and b ran together */

    /* The direct network run, batch 1, on the same pixels. */
    gs_net_state *ns = gs_net_state_new(m, GS_NET_MULTITASK, 1, SIDE, SIDE);
    assert_non_null(ns);
    const Gastroscreen__V1__TileResult *rs[2] = {r0, r3};
    const uint8_t *tiles[2] = {a, b};
    float direct[2];
    for (int t = 0; t < 2; t++) {
        const Gastroscreen__V1__TileResult *r = rs[t];
        float logit, feature[512], *seg = malloc(sizeof(float) * (SIDE / 4) * (SIDE / 4));
        assert_non_null(seg);
        assert_int_equal(gs_net_run_multitask(ns, tiles[t], &logit, feature, seg), 0);
        assert_true(isfinite(r->score) && r->score >= 0 && r->score <= 1);
        printf("tile %d: score %.6f (direct %.6f)\n", t, r->score, sigmoidf_(logit));
        assert_true(fabsf(r->score - sigmoidf_(logit)) < 1e-4f);
        direct[t] = sigmoidf_(logit);
        assert_int_equal(r->n_feature, 512);
        double maxdiff = 0, maxabs = 0;
        for (int i = 0; i < 512; i++) {
            assert_true(isfinite(r->feature[i]));
            double d = fabs((double)r->feature[i] - feature[i]);
            maxdiff = d > maxdiff ? d : maxdiff;
            maxabs = fabs(feature[i]) > maxabs ? fabs(feature[i]) : maxabs;
        }
        printf("tile %d: feature max |diff| %.3g of max |value| %.3g\n", t, maxdiff, maxabs);
        assert_true(maxabs > 0);
        assert_true(maxdiff <= 1e-4 * (1 + maxabs));
        /* Heatmap: 16 x 16 cells, each the mean seg sigmoid of its 4 x 4 block, x 255. */
        assert_int_equal(r->heatmap_size, 16);
        assert_int_equal(r->heatmap.len, 256);
        int q = SIDE / 4, cellpx = q / 16;
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) {
                double sum = 0;
                for (int y = 0; y < cellpx; y++)
                    for (int x = 0; x < cellpx; x++)
                        sum += sigmoidf_(seg[(size_t)(i * cellpx + y) * q + j * cellpx + x]);
                double want = sum / (cellpx * cellpx) * 255;
                assert_true(fabs(r->heatmap.data[i * 16 + j] - want) <= 1.0);
            }
        free(seg);
    }
    /* Three tiles at batch 2: a full batch (b, a), then a partial one (b) that runs alone in
     * the one-tile state, not padded: same score as the direct run, batch_size 1. */
    const Gastroscreen__V1__TileHeader *hp3[3] = {&h[0], &h[0], &h[0]};
    const uint8_t *pp3[3] = {b, a, b};
    assert_int_equal(gs_infer_run(inf, 3, hp3, pp3, lens, NULL, NULL), 0);
    for (int i = 0; i < 3; i++) {
        const Gastroscreen__V1__TileResult *r = gs_infer_result(inf, (size_t)i);
        assert_int_equal(r->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
        assert_int_equal(r->timing->batch_size, i < 2 ? 2 : 1);
        assert_true(r->timing->compute_us > 0);
        printf("partial batch, tile %d: score %.6f (direct %.6f)\n", i, r->score,
               direct[i == 1 ? 0 : 1]);
        assert_true(fabsf(r->score - direct[i == 1 ? 0 : 1]) < 1e-4f);
    }

    /* Tiles a worker must refuse, each a failed request: wrong size, not a multiple of 32,
     * a heatmap larger than the seg map, no InferJob. */
    Gastroscreen__V1__TileHeader bad;
    Gastroscreen__V1__InferJob bij;
    const Gastroscreen__V1__TileHeader *bp[1] = {&bad};
    const uint8_t *bpx[1] = {a};
    size_t blen[1] = {px - 3};
    infer_header(&bad, &bij, 0, NULL);
    assert_int_equal(gs_infer_run(inf, 1, bp, bpx, blen, NULL, NULL), 0);
    assert_non_null(strstr(gs_infer_result(inf, 0)->error, "bad tile frame"));
    bad.width = bad.height = 100;
    blen[0] = 100 * 100 * 3;
    assert_int_equal(gs_infer_run(inf, 1, bp, bpx, blen, NULL, NULL), 0);
    assert_non_null(strstr(gs_infer_result(inf, 0)->error, "multiple of 32"));
    infer_header(&bad, &bij, 0, NULL);
    bij.heatmap_size = SIDE;
    blen[0] = px;
    assert_int_equal(gs_infer_run(inf, 1, bp, bpx, blen, NULL, NULL), 0);
    assert_non_null(strstr(gs_infer_result(inf, 0)->error, "heatmap size"));
    bad.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR;
    assert_int_equal(gs_infer_run(inf, 1, bp, bpx, blen, NULL, NULL), 0);
    assert_int_equal(gs_infer_result(inf, 0)->outcome,
                     GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR);

    gs_net_state_destroy(&ns);
    gs_infer_destroy(&inf);
    assert_null(inf);
    gs_model_destroy(&m);
    free(a);
    free(b);
    free(white);
}

/* InferJob.context: a frame of the window plus 32 px on each side runs whole through the
 * network, and the heatmap is pooled from the window's part of the map only (checked against a
 * direct run of the network on the same frame); a context the frame cannot hold is refused. */
static void infer_context_keeps_the_windows_map(void **state)
{
    (void)state;
    enum { CTX = 32, FRAME = SIDE + 2 * CTX, HS = 16 };
    gs_model *m = gs_model_load(bundle_path());
    assert_non_null(m);
    gs_slide *s = gs_slide_open(test_data("CMU-1-Small-Region.svs"), NULL);
    assert_non_null(s);
    size_t px = (size_t)FRAME * FRAME * 3;
    uint8_t *frame = malloc(px);
    assert_non_null(frame);
    assert_int_equal(gs_slide_read_target(s, 1024 - CTX, 1536 - CTX, FRAME, FRAME, frame), 0);
    gs_slide_destroy(&s);
    Gastroscreen__V1__TileHeader h;
    Gastroscreen__V1__InferJob ij;
    infer_header(&h, &ij, 5, NULL);
    h.width = h.height = FRAME;
    ij.context = CTX;
    ij.heatmap_size = HS;
    const Gastroscreen__V1__TileHeader *hp[1] = {&h};
    const uint8_t *pp[1] = {frame};
    size_t lens[1] = {px};
    gs_infer *inf = gs_infer_new(m, 1, NULL);
    assert_non_null(inf);
    assert_int_equal(gs_infer_run(inf, 1, hp, pp, lens, NULL, NULL), 0);
    const Gastroscreen__V1__TileResult *r = gs_infer_result(inf, 0);
    assert_int_equal(r->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
    assert_int_equal(r->heatmap_size, HS);

    gs_net_state *ns = gs_net_state_new(m, GS_NET_MULTITASK, 1, FRAME, FRAME);
    assert_non_null(ns);
    int q = FRAME / 4, off = CTX / 4, cellpx = (SIDE / 4) / HS;
    float logit, feature[512], *seg = malloc(sizeof(float) * (size_t)q * q);
    assert_non_null(seg);
    assert_int_equal(gs_net_run_multitask(ns, frame, &logit, feature, seg), 0);
    assert_true(fabsf(r->score - sigmoidf_(logit)) < 1e-4f);
    for (int i = 0; i < HS; i++)
        for (int j = 0; j < HS; j++) {
            double sum = 0;
            for (int y = 0; y < cellpx; y++)
                for (int x = 0; x < cellpx; x++)
                    sum +=
                        sigmoidf_(seg[(size_t)(off + i * cellpx + y) * q + off + j * cellpx + x]);
            assert_true(fabs(r->heatmap.data[i * HS + j] - sum / (cellpx * cellpx) * 255) <= 1.0);
        }
    /* Half the frame or more is context: refused. */
    ij.context = FRAME / 2;
    assert_int_equal(gs_infer_run(inf, 1, hp, pp, lens, NULL, NULL), 0);
    assert_non_null(strstr(gs_infer_result(inf, 0)->error, "context"));
    ij.context = 8;
    assert_int_equal(gs_infer_run(inf, 1, hp, pp, lens, NULL, NULL), 0);
    assert_non_null(strstr(gs_infer_result(inf, 0)->error, "multiple of 16"));
    free(seg);
    gs_net_state_destroy(&ns);
    gs_infer_destroy(&inf);
    free(frame);
    gs_model_destroy(&m);
}

/* Three passes of a (2r+1) box blur per channel: close to a Gaussian of sigma ~ r. */
static void box_blur(uint8_t *px, int side, int r)
{
    uint8_t *tmp = malloc((size_t)side * side * 3);
    assert_non_null(tmp);
    for (int pass = 0; pass < 6; pass++) {
        int vertical = pass % 2;
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++)
                for (int c = 0; c < 3; c++) {
                    int sum = 0, n = 0;
                    for (int k = -r; k <= r; k++) {
                        int xx = vertical ? x : x + k, yy = vertical ? y + k : y;
                        if (xx < 0 || yy < 0 || xx >= side || yy >= side)
                            continue;
                        sum += px[((size_t)yy * side + xx) * 3 + c];
                        n++;
                    }
                    tmp[((size_t)y * side + x) * 3 + c] = (uint8_t)((sum + n / 2) / n);
                }
        memcpy(px, tmp, (size_t)side * side * 3);
    }
    free(tmp);
}

/* InferJob.judge_focus: the infer worker judges each tissue tile's focus before the network (the
 * seeded bundle's blur network is untrained: the classical measure), answers a defocused tile
 * BLURRY without inferring it, and records the focus of the tiles it infers; without the flag
 * the same defocused tile is inferred. */
static void infer_judges_every_tiles_focus(void **state)
{
    (void)state;
    gs_model *m = gs_model_load(bundle_path());
    assert_non_null(m);
    gs_slide *s = gs_slide_open(test_data("CMU-1-Small-Region.svs"), NULL);
    assert_non_null(s);
    size_t px = (size_t)SIDE * SIDE * 3;
    uint8_t *sharp = malloc(px), *soft = malloc(px);
    assert_non_null(sharp);
    assert_non_null(soft);
    /* A tile of dense tissue in the middle of the sample's tissue (x 1024, y 1536 at 0.5 um/px). */
    assert_int_equal(gs_slide_read_target(s, 1024, 1536, SIDE, SIDE, sharp), 0);
    gs_slide_destroy(&s);
    memcpy(soft, sharp, px);
    box_blur(soft, SIDE, 4);

    Gastroscreen__V1__TileHeader h[2];
    Gastroscreen__V1__InferJob ij[2];
    for (int i = 0; i < 2; i++) {
        infer_header(&h[i], &ij[i], 20 + (uint32_t)i, NULL);
        ij[i].judge_focus = 1;
    }
    const Gastroscreen__V1__TileHeader *hp[2] = {&h[0], &h[1]};
    const uint8_t *pp[2] = {sharp, soft};
    size_t lens[2] = {px, px};
    gs_infer *inf = gs_infer_new(m, 2, NULL);
    assert_non_null(inf);
    assert_int_equal(gs_infer_run(inf, 2, hp, pp, lens, "infer.1@test:1", NULL), 0);
    const Gastroscreen__V1__TileResult *r0 = gs_infer_result(inf, 0), *r1 = gs_infer_result(inf, 1);
    printf("sharp: outcome %d focus %.1f; defocused: outcome %d focus %.1f\n", r0->outcome,
           r0->focus, r1->outcome, r1->focus);
    assert_int_equal(r0->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
    assert_int_equal(r0->focus_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_true(r0->focus >= GS_FOCUS_THRESHOLD);
    assert_int_equal(r0->n_feature, 512);
    assert_int_equal(r1->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY);
    assert_int_equal(r1->focus_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_true(r1->focus < GS_FOCUS_THRESHOLD);
    assert_int_equal(r1->n_feature, 0);
    assert_int_equal(r1->heatmap.len, 0);
    assert_int_equal(r1->tile_index, 21);

    /* A job's threshold moves the decision (focus_threshold as in BlurJob). */
    ij[0].focus_threshold = r0->focus + 1.0f;
    assert_int_equal(gs_infer_run(inf, 1, hp, pp, lens, NULL, NULL), 0);
    assert_int_equal(gs_infer_result(inf, 0)->outcome,
                     GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY);

    /* Without judge_focus the defocused tile is inferred and carries no focus. */
    ij[1].judge_focus = 0;
    assert_int_equal(gs_infer_run(inf, 1, &hp[1], &pp[1], lens, NULL, NULL), 0);
    r0 = gs_infer_result(inf, 0);
    assert_int_equal(r0->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
    assert_int_equal(r0->focus_method, GASTROSCREEN__V1__METHOD__METHOD_UNSPECIFIED);
    gs_infer_destroy(&inf);
    free(sharp);
    free(soft);
    gs_model_destroy(&m);
}

/* ---- screener --------------------------------------------------------------------------- */

static void screener_rows_repeated(void **state)
{
    (void)state;
    gs_model *m = gs_model_load(bundle_path());
    assert_non_null(m);
    enum { ROWS = 5 };
    float few[ROWS * 512], full[64 * 512];
    uint32_t x = 12345;
    for (int i = 0; i < ROWS * 512; i++) {
        x = x * 1664525u + 1013904223u;
        few[i] = (float)((x >> 8) & 0xffff) / 65536.0f * 2.0f; /* like ReLU'd features */
    }
    for (int r = 0; r < 64; r++)
        memcpy(full + r * 512, few + (r % ROWS) * 512, 512 * sizeof(float));
    Gastroscreen__V1__ScreenTask t = GASTROSCREEN__V1__SCREEN_TASK__INIT;
    t.slide_id = SLIDE_ID;
    t.attempt = 1;
    t.job_id = 9;
    t.feature_dim = 512;
    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    mp.sha256 = "abc";
    mp.untrained = 1;
    gs_screener *s = gs_screener_new(m, 64, &mp);
    assert_non_null(s);
    gs_screen_result a, b;
    t.k = ROWS;
    t.n_features = ROWS * 512;
    t.features = few;
    assert_int_equal(gs_screener_score(s, &t, "screener.1@test:1", &a), 0);
    assert_string_equal(a.r.error, "");
    t.k = 64;
    t.n_features = 64 * 512;
    t.features = full;
    assert_int_equal(gs_screener_score(s, &t, NULL, &b), 0);
    printf("5 rows: %.7f, the same repeated to 64: %.7f\n", a.r.score, b.r.score);
    assert_true(isfinite(a.r.score) && a.r.score > 0 && a.r.score < 1);
    assert_true(a.r.score == b.r.score);
    assert_string_equal(a.r.slide_id, SLIDE_ID);
    assert_int_equal(a.r.job_id, 9);
    assert_string_equal(a.r.worker_id, "screener.1@test:1");
    assert_non_null(a.r.model);
    assert_string_equal(a.r.model->sha256, "abc");
    assert_true(a.r.model->untrained);
    /* A different set of rows gives a different score (the test can fail). */
    few[3] += 5.0f;
    t.k = ROWS;
    t.n_features = ROWS * 512;
    t.features = few;
    assert_int_equal(gs_screener_score(s, &t, NULL, &b), 0);
    assert_true(b.r.score != a.r.score);
    /* No rows: insufficient tissue; bad sizes and another model: errors. */
    t.k = 0;
    t.n_features = 0;
    assert_int_equal(gs_screener_score(s, &t, NULL, &b), 0);
    assert_non_null(strstr(b.r.error, "insufficient tissue"));
    t.k = 2;
    t.n_features = ROWS * 512;
    assert_int_equal(gs_screener_score(s, &t, NULL, &b), 0);
    assert_non_null(strstr(b.r.error, "bad task"));
    t.k = ROWS;
    t.model_sha256 = "def";
    assert_int_equal(gs_screener_score(s, &t, NULL, &b), 0);
    assert_non_null(strstr(b.r.error, "another bundle"));
    gs_screener_destroy(&s);

    /* The worker handler on a local job: one ScreenResult, same score as the direct call. */
    gs_screener_stage *st = gs_screener_stage_new(m, 1, 64, &mp);
    assert_non_null(st);
    few[3] -= 5.0f;
    t.k = ROWS;
    t.n_features = ROWS * 512;
    t.features = few;
    t.model_sha256 = "abc";
    Gastroscreen__V1__WorkMessage wm = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    wm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    wm.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK;
    wm.screen_task = &t;
    int rc = -1;
    gs_worker_job *j = gs_worker_job_run_local(gs_screener_handle, st, &wm, NULL, &rc);
    assert_non_null(j);
    assert_int_equal(rc, 0);
    assert_int_equal(gs_worker_job_result_count(j), 1);
    const Gastroscreen__V1__WorkMessage *out = gs_worker_job_result(j, 0);
    assert_int_equal(out->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT);
    assert_true(out->screen_result->score == a.r.score);
    assert_string_equal(out->screen_result->model->sha256, "abc");
    gs_worker_job_destroy_local(&j);
    gs_screener_stage_destroy(&st);
    assert_null(st);
    gs_model_destroy(&m);
}

/* ---- reporter --------------------------------------------------------------------------- */

static void make_dir(char *buf, size_t n, const char *name)
{
    const char *b = getenv("GS_BUILD_DIR");
    assert_non_null(b);
    snprintf(buf, n, "%s/tests/seeded/%s-%ld", b, name, (long)getpid());
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

static void reporter_positive_writes_three_files(void **state)
{
    (void)state;
    const char *path = test_data("CMU-1-Small-Region.svs");
    gs_slide *s = gs_slide_open(path, NULL);
    assert_non_null(s);
    int64_t w0, h0;
    gs_slide_level_size(s, 0, &w0, &h0);
    gs_slide_destroy(&s);

    enum { NT = 4, HS = 16 };
    Gastroscreen__V1__TileSummary ts[NT], *tsp[NT];
    uint8_t maps[NT][HS * HS];
    for (int i = 0; i < NT; i++) {
        gastroscreen__v1__tile_summary__init(&ts[i]);
        ts[i].index = (uint32_t)i;
        ts[i].x0 = (i % 2) * 1026;
        ts[i].y0 = (i / 2) * 1026;
        ts[i].outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED;
        ts[i].score = i == 0 ? 0.95f : 0.1f;
        for (int k = 0; k < HS * HS; k++)
            maps[i][k] = i == 0 && (k / HS) >= 4 && (k / HS) < 12 && (k % HS) >= 4 && (k % HS) < 12
                             ? 240
                             : 10;
        ts[i].heatmap.data = maps[i];
        ts[i].heatmap.len = HS * HS;
        tsp[i] = &ts[i];
    }
    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    mp.bundle = "seed1.safetensors";
    mp.sha256 = "0000000000000000000000000000000000000000000000000000000000000001";
    mp.format_version = "1";
    mp.trained_on = "untrained";
    mp.untrained = 1;
    mp.notice = "model: untrained — not a diagnosis";
    Gastroscreen__V1__TileCounts tc = GASTROSCREEN__V1__TILE_COUNTS__INIT;
    tc.planned = 6;
    tc.inferred = 4;
    tc.background = 1;
    tc.blurry = 1;
    char *warn[1] = {"no mpp: used default 0.25"};
    Gastroscreen__V1__Verdict v = GASTROSCREEN__V1__VERDICT__INIT;
    v.slide_id = SLIDE_ID;
    v.attempt = 1;
    v.path = (char *)path;
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE;
    v.score = 0.91f;
    v.threshold = 0.74f;
    v.reason = "score 0.91 > 0.74";
    v.model = &mp;
    v.tiles = &tc;
    v.blurred_fraction = 0.0f; /* the check ran and found nothing blurry */
    v.blur_sample_judged = 32;
    v.n_warnings = 1;
    v.warnings = warn;
    Gastroscreen__V1__SlideFacts f = GASTROSCREEN__V1__SLIDE_FACTS__INIT;
    f.vendor = "aperio";
    f.width = w0;
    f.height = h0;
    f.mpp_x = f.mpp_y = 0.499;
    Gastroscreen__V1__TileGrid g = GASTROSCREEN__V1__TILE_GRID__INIT;
    g.tile_size = 512;
    g.target_mpp = 0.5;
    g.window_level0 = 1026;
    g.stride_level0 = 1026;
    Gastroscreen__V1__StageSeconds ss[2] = {GASTROSCREEN__V1__STAGE_SECONDS__INIT,
                                            GASTROSCREEN__V1__STAGE_SECONDS__INIT};
    ss[0].stage = GASTROSCREEN__V1__STAGE__STAGE_INFER;
    ss[0].seconds = 3.5;
    ss[1].stage = GASTROSCREEN__V1__STAGE__STAGE_SCREENER;
    ss[1].seconds = 0.01;
    Gastroscreen__V1__StageSeconds *ssp[2] = {&ss[0], &ss[1]};
    char dir[4096];
    make_dir(dir, sizeof dir, "positive");
    Gastroscreen__V1__ReportJob job = GASTROSCREEN__V1__REPORT_JOB__INIT;
    job.slide_id = SLIDE_ID;
    job.attempt = 1;
    job.job_id = 77;
    job.path = (char *)path;
    job.out_dir = dir;
    job.verdict = &v;
    job.facts = &f;
    job.grid = &g;
    job.n_tiles = NT;
    job.tiles = tsp;
    job.heatmap_size = HS;
    job.n_stage_seconds = 2;
    job.stage_seconds = ssp;

    gs_report_result *res = malloc(sizeof *res);
    assert_non_null(res);
    assert_int_equal(gs_reporter_write(&job, NULL, "reporter.1@test:1", res), 0);
    assert_string_equal(res->r.error, "");
    assert_int_equal(res->r.job_id, 77);
    assert_non_null(res->r.paths);
    assert_true(file_exists(res->r.paths->report_json));
    assert_true(file_exists(res->r.paths->heatmap_png));
    assert_true(file_exists(res->r.paths->regions_geojson));
    assert_true(res->r.regions >= 1);
    json_error_t je;
    json_t *root = json_load_file(res->r.paths->report_json, 0, &je);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "verdict")), "positive");
    assert_true(json_is_true(json_object_get(root, "untrained")));
    assert_string_equal(json_string_value(json_object_get(root, "notice")),
                        "model: untrained — not a diagnosis");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(root, "tiles"), "inferred")), 4);
    assert_true(json_array_size(json_object_get(root, "warnings")) >= 1);
    assert_true(json_is_real(json_object_get(root, "blurred_fraction")));
    assert_true(json_real_value(json_object_get(root, "blurred_fraction")) == 0.0);
    assert_int_equal(json_integer_value(json_object_get(root, "blur_sample_judged")), 32);
    assert_non_null(json_object_get(json_object_get(root, "timings"), "infer"));
    json_decref(root);
    /* heatmap.png is the thumbnail size (longer side 1024 or the slide's). */
    uint8_t *png = NULL;
    int pw, ph;
    assert_int_equal(gs_png_read(res->r.paths->heatmap_png, 3, &png, &pw, &ph), 0);
    assert_true(pw > 16 && ph > 16);
    free(png);

    /* A failed verdict: only report.json, and the (missing) slide is never opened. */
    make_dir(dir, sizeof dir, "failed");
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED;
    v.reason = "poison: 3 workers were lost while holding this slide";
    job.path = "/nonexistent/slide.svs";
    v.path = job.path;
    assert_int_equal(gs_reporter_write(&job, NULL, NULL, res), 0);
    assert_string_equal(res->r.error, "");
    assert_true(file_exists(res->r.paths->report_json));
    assert_string_equal(res->r.paths->heatmap_png, "");
    assert_string_equal(res->r.paths->regions_geojson, "");

    /* The worker handler on a local job: one ReportResult with the paths. */
    Gastroscreen__V1__WorkMessage wm = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    wm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    wm.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB;
    wm.report_job = &job;
    int rc = -1;
    gs_worker_job *j = gs_worker_job_run_local(gs_reporter_handle, NULL, &wm, NULL, &rc);
    assert_non_null(j);
    assert_int_equal(rc, 0);
    assert_int_equal(gs_worker_job_result_count(j), 1);
    const Gastroscreen__V1__WorkMessage *out = gs_worker_job_result(j, 0);
    assert_int_equal(out->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT);
    assert_string_equal(out->report_result->error, "");
    assert_true(file_exists(out->report_result->paths->report_json));
    gs_worker_job_destroy_local(&j);

    /* No folder to write to, and a malformed slide id: answered with error. */
    job.out_dir = "";
    assert_int_equal(gs_reporter_write(&job, NULL, NULL, res), 0);
    assert_non_null(strstr(res->r.error, "out_dir"));
    job.out_dir = dir;
    job.slide_id = "../../etc";
    assert_int_equal(gs_reporter_write(&job, NULL, NULL, res), 0);
    assert_non_null(strstr(res->r.error, "slide_id"));
    free(res);
}

/* ---- provenance ------------------------------------------------------------------------- */

static void sha256_known_vectors(void **state)
{
    (void)state;
    uint8_t d[32];
    char hex[65];
    gs_sha256("abc", 3, d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    gs_sha256("", 0, d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    gs_sha256(m, strlen(m), d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    assert_int_equal(gs_sha256_file("/nonexistent/bundle", hex), -1);
    assert_non_null(strstr(gs_error_get(), "/nonexistent/bundle"));
}

int main(void)
{
    char dir[4096];
    const char *b = getenv("GS_BUILD_DIR");
    if (b) {
        snprintf(dir, sizeof dir, "%s/tests/seeded", b);
        mkdir(dir, 0755);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sha256_known_vectors),
        cmocka_unit_test(blur_fqpath_pair_classical),
        cmocka_unit_test(infer_cmu_tile_matches_the_network),
        cmocka_unit_test(infer_judges_every_tiles_focus),
        cmocka_unit_test(infer_context_keeps_the_windows_map),
        cmocka_unit_test(screener_rows_repeated),
        cmocka_unit_test(reporter_positive_writes_three_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
