/* tiler: TileJob -> tile headers + pixels (or failed requests) on the fixture slides and on
 * corrupt ones, and the checks that turn a malformed job away. No sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "stages/handlers/foreground.h"
#include "stages/slide/reader.h"
#include "stages/handlers/tiler.h"

#define MAX_REFS 64

typedef struct {
    Gastroscreen__V1__TileJob job;
    Gastroscreen__V1__TileGrid grid;
    Gastroscreen__V1__InferJob infer;
    Gastroscreen__V1__BlurJob blur;
    Gastroscreen__V1__TileRef refs[MAX_REFS];
    Gastroscreen__V1__TileRef *ref_ptrs[MAX_REFS];
    char path[4096];
} job_box;

static void path_of(char *buf, size_t n, const char *rel)
{
    const char *d = getenv("GS_TEST_DATA");
    assert_non_null(d);
    snprintf(buf, n, "%s/%s", d, rel);
}

/* A TileJob for `rel` with the grid of the CMU region (0.499 um/px, 513 px windows). */
static void make_job(job_box *b, const char *rel, size_t n)
{
    memset(b, 0, sizeof *b);
    path_of(b->path, sizeof b->path, rel);
    gastroscreen__v1__tile_job__init(&b->job);
    gastroscreen__v1__tile_grid__init(&b->grid);
    gastroscreen__v1__infer_job__init(&b->infer);
    gastroscreen__v1__blur_job__init(&b->blur);
    b->job.slide_id = "00000000000000b2";
    b->job.attempt = 3;
    b->job.job_id = 9;
    b->job.path = b->path;
    b->job.request = 2;
    b->grid.tile_size = 512;
    b->grid.target_mpp = 0.5;
    b->grid.window_level0 = 513;
    b->grid.stride_level0 = 513;
    b->job.grid = &b->grid;
    b->infer.heatmap_size = 16;
    b->infer.model_sha256 = "ab";
    b->job.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_INFER;
    b->job.infer = &b->infer;
    for (size_t i = 0; i < n; i++) {
        gastroscreen__v1__tile_ref__init(&b->refs[i]);
        b->refs[i].index = (uint32_t)(10 + i);
        b->refs[i].x0 = llround((double)(i % 4) * 512 * 0.5 / 0.499);
        b->refs[i].y0 = llround((double)(i / 4) * 512 * 0.5 / 0.499);
        b->ref_ptrs[i] = &b->refs[i];
    }
    b->job.n_tiles = n;
    b->job.tiles = b->ref_ptrs;
}

static void reads_the_planned_tiles(void **state)
{
    (void)state;
    job_box b;
    make_job(&b, "CMU-1-Small-Region.svs", 5);
    gs_tiler_job *j = gs_tiler_job_new(&b.job, "tiler.1@test:5");
    assert_non_null(j);

    gs_slide *s = gs_slide_open(b.path, NULL);
    assert_non_null(s);
    uint8_t *want = malloc(512 * 512 * 3);
    gs_tiler_item it;
    for (size_t i = 0; i < 5; i++) {
        size_t left;
        gs_tiler_job_unsent(j, &left);
        assert_int_equal(left, 5 - i);
        assert_int_equal(gs_tiler_job_next(j, &it), 1);
        assert_false(it.failed);
        const Gastroscreen__V1__TileHeader *h = it.message.tile;
        assert_ptr_equal(h, &it.header);
        assert_int_equal(it.message.protocol,
                         GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1);
        assert_string_equal(h->slide_id, "00000000000000b2");
        assert_int_equal(h->attempt, 3);
        assert_int_equal(h->tile_index, 10 + i);
        assert_int_equal(h->width, 512);
        assert_int_equal(h->height, 512);
        assert_int_equal(h->channels, 3);
        assert_int_equal(h->pixel_format, GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8);
        assert_int_equal(h->x0, b.refs[i].x0);
        assert_int_equal(h->y0, b.refs[i].y0);
        assert_int_equal(h->window_level0, 513);
        assert_true(h->mpp == 0.5);
        assert_int_equal(h->job_id, 9);
        assert_int_equal(h->request, 2);
        assert_string_equal(h->tiler_id, "tiler.1@test:5");
        assert_int_equal(h->job_case, GASTROSCREEN__V1__TILE_HEADER__JOB_INFER);
        assert_int_equal(h->infer->heatmap_size, 16);
        assert_int_equal(it.pixels_len, 512 * 512 * 3);
        /* The pixels are the target-grid tile at the plan's position. */
        assert_int_equal(
            gs_slide_read_target(s, (int64_t)(i % 4) * 512, (int64_t)(i / 4) * 512, 512, 512, want),
            0);
        assert_memory_equal(it.pixels, want, 512 * 512 * 3);
        /* The header packs into a valid TileMessage. */
        size_t len = protobuf_c_message_get_packed_size(&it.message.base);
        assert_true(len > 20 && len < 512);
        gs_tiler_item_release(&it);
        assert_null(it.pixels);
    }
    assert_int_equal(gs_tiler_job_next(j, &it), 0);
    size_t left;
    gs_tiler_job_unsent(j, &left);
    assert_int_equal(left, 0);
    Gastroscreen__V1__TileJobDone done;
    gs_tiler_job_done(j, &done);
    assert_int_equal(done.sent, 5);
    assert_int_equal(done.failed, 0);
    assert_int_equal(done.job_id, 9);
    assert_int_equal(done.attempt, 3);
    assert_string_equal(done.worker_id, "tiler.1@test:5");
    free(want);
    gs_slide_destroy(&s);
    gs_tiler_job_destroy(&j);
    assert_null(j);
    gs_tiler_job_destroy(&j);
}

/* The foreground's plan, served by the tiler: windows with tissue come back as tissue. */
/* InferJob.context: the frame is the window with 32 px of slide on each side (white beyond the
 * slide's edge), the header keeps the window's level-0 corner; a context the tiler cannot carry
 * is refused. */
static void infer_tiles_carry_their_context(void **state)
{
    (void)state;
    job_box b;
    make_job(&b, "CMU-1-Small-Region.svs", 2);
    b.infer.context = 32;
    gs_tiler_job *j = gs_tiler_job_new(&b.job, "tiler.1@test:5");
    assert_non_null(j);
    gs_slide *s = gs_slide_open(b.path, NULL);
    assert_non_null(s);
    enum { FRAME = 512 + 64 };
    uint8_t *want = malloc(FRAME * FRAME * 3);
    assert_non_null(want);
    for (size_t i = 0; i < 2; i++) {
        gs_tiler_item it;
        assert_int_equal(gs_tiler_job_next(j, &it), 1);
        assert_false(it.failed);
        const Gastroscreen__V1__TileHeader *h = it.message.tile;
        assert_int_equal(h->width, FRAME);
        assert_int_equal(h->height, FRAME);
        assert_int_equal(h->x0, b.refs[i].x0);
        assert_int_equal(h->infer->context, 32);
        assert_int_equal(it.pixels_len, FRAME * FRAME * 3);
        assert_int_equal(gs_slide_read_target(s, (int64_t)i * 512 - 32, -32, FRAME, FRAME, want),
                         0);
        assert_memory_equal(it.pixels, want, FRAME * FRAME * 3);
        /* The first window sits at the slide's corner: its context above is white. */
        assert_true(it.pixels[0] == 255 && it.pixels[1] == 255 && it.pixels[2] == 255);
        gs_tiler_item_release(&it);
    }
    gs_tiler_job_destroy(&j);
    free(want);
    gs_slide_destroy(&s);
    b.infer.context = 8;
    assert_null(gs_tiler_job_new(&b.job, "tiler.1@test:5"));
    assert_non_null(strstr(gs_error_get(), "context 8 is not a multiple of 16"));
    b.infer.context = 256;
    b.grid.tile_size = 1664;
    assert_null(gs_tiler_job_new(&b.job, "tiler.1@test:5"));
    assert_non_null(strstr(gs_error_get(), "makes a frame over"));
}

static void serves_a_foreground_plan_for_blur(void **state)
{
    (void)state;
    char path[4096];
    path_of(path, sizeof path, "CMU-1-Small-Region.svs");
    Gastroscreen__V1__PlanJob pj = GASTROSCREEN__V1__PLAN_JOB__INIT;
    pj.slide_id = "00000000000000b3";
    pj.attempt = 1;
    pj.path = path;
    pj.min_tissue_fraction = 0.1f;
    Gastroscreen__V1__PlanResult *plan = gs_foreground_plan(&pj, NULL, NULL);
    assert_non_null(plan);
    assert_string_equal(plan->error, "");
    size_t n = plan->n_tiles < MAX_REFS ? plan->n_tiles : MAX_REFS;

    job_box b;
    make_job(&b, "CMU-1-Small-Region.svs", 0);
    b.grid = *plan->grid;
    b.blur.focus_threshold = 0.5f;
    b.job.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_BLUR;
    b.job.blur = &b.blur;
    for (size_t i = 0; i < n; i++) {
        gastroscreen__v1__tile_ref__init(&b.refs[i]);
        b.refs[i].index = (uint32_t)i;
        b.refs[i].x0 = plan->tiles[i]->x0;
        b.refs[i].y0 = plan->tiles[i]->y0;
        b.ref_ptrs[i] = &b.refs[i];
    }
    b.job.n_tiles = n;
    b.job.tiles = b.ref_ptrs;
    gs_tiler_job *j = gs_tiler_job_new(&b.job, "t");
    assert_non_null(j);
    gs_tiler_item it;
    size_t k = 0;
    while (gs_tiler_job_next(j, &it) == 1) {
        assert_false(it.failed);
        assert_int_equal(it.header.job_case, GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR);
        assert_true(it.header.blur->focus_threshold == 0.5f);
        /* A window with much tissue is not glass: its mean is clearly below white. */
        if (plan->tiles[k]->tissue_fraction > 0.5f) {
            uint64_t sum = 0;
            for (size_t p = 0; p < it.pixels_len; p++)
                sum += it.pixels[p];
            assert_true((double)sum / (double)it.pixels_len < 230);
        }
        gs_tiler_item_release(&it);
        k++;
    }
    assert_int_equal(k, n);
    gs_tiler_job_destroy(&j);
    gs_foreground_result_free(&plan);
}

static void expect_all_fail(const char *rel, const char *needle)
{
    job_box b;
    make_job(&b, rel, 4);
    gs_tiler_job *j = gs_tiler_job_new(&b.job, "tiler.2@test:6");
    assert_non_null(j);
    gs_tiler_item it;
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(gs_tiler_job_next(j, &it), 1);
        assert_true(it.failed);
        assert_null(it.pixels);
        const Gastroscreen__V1__TileResult *r = it.result.tile_result;
        assert_ptr_equal(r, &it.tile_result);
        assert_int_equal(it.result.body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT);
        assert_int_equal(r->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR);
        assert_int_equal(r->tile_index, 10 + i);
        assert_int_equal(r->attempt, 3);
        assert_int_equal(r->request, 2);
        assert_string_equal(r->worker_id, "tiler.2@test:6");
        if (!strstr(r->error, needle))
            fail_msg("%s: '%s' lacks '%s'", rel, r->error, needle);
        gs_tiler_item_release(&it);
    }
    assert_int_equal(gs_tiler_job_next(j, &it), 0);
    uint32_t sent, failed;
    gs_tiler_job_counts(j, &sent, &failed);
    assert_int_equal(sent, 0);
    assert_int_equal(failed, 4);
    gs_tiler_job_destroy(&j);
}

static void corrupt_slides_fail_every_tile(void **state)
{
    (void)state;
    /* Opens, then the first read fails; the handle is closed and the rest fail alike. */
    expect_all_fail("corrupt/unreadable.svs", "Bogus marker length");
    expect_all_fail("corrupt/broken.svs", "not a slide OpenSlide can read");
    expect_all_fail("corrupt/unopenable.tiff", "Unsupported TIFF compression");
    expect_all_fail("missing.svs", "No such file");
}

static void tile_outside_the_slide_fails_alone(void **state)
{
    (void)state;
    job_box b;
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.refs[1].x0 = 1000000;
    gs_tiler_job *j = gs_tiler_job_new(&b.job, "t");
    gs_tiler_item it;
    assert_int_equal(gs_tiler_job_next(j, &it), 1);
    assert_false(it.failed);
    gs_tiler_item_release(&it);
    assert_int_equal(gs_tiler_job_next(j, &it), 1);
    assert_true(it.failed);
    assert_non_null(strstr(it.tile_result.error, "outside the 2220x2967 slide"));
    gs_tiler_item_release(&it);
    assert_int_equal(gs_tiler_job_next(j, &it), 1);
    assert_false(it.failed);
    gs_tiler_item_release(&it);
    gs_tiler_job_destroy(&j);
}

static void hand_back_lists_the_rest(void **state)
{
    (void)state;
    job_box b;
    make_job(&b, "CMU-1-Small-Region.svs", 4);
    gs_tiler_job *j = gs_tiler_job_new(&b.job, "t");
    gs_tiler_item it;
    assert_int_equal(gs_tiler_job_next(j, &it), 1);
    /* The caller may take the pixels (zero-copy send). */
    uint8_t *taken = it.pixels;
    it.pixels = NULL;
    gs_tiler_item_release(&it);
    free(taken);
    size_t n;
    const uint32_t *rest = gs_tiler_job_unsent(j, &n);
    assert_int_equal(n, 3);
    assert_int_equal(rest[0], 11);
    assert_int_equal(rest[1], 12);
    assert_int_equal(rest[2], 13);
    gs_tiler_job_destroy(&j);
}

/* A slide without mpp: the tiler derives the default the plan used from the grid. */
/* A slide without mpp (boxes.tiff, 300x250): the tiler derives the default the plan used
 * from the grid. */
static void slide_without_mpp_uses_the_grid(void **state)
{
    (void)state;
    char path[4096];
    path_of(path, sizeof path, "boxes.tiff");
    Gastroscreen__V1__PlanJob pj = GASTROSCREEN__V1__PLAN_JOB__INIT;
    pj.slide_id = "00000000000000b4";
    pj.attempt = 1;
    pj.path = path;
    pj.default_mpp = 0.25;
    pj.tile_size = 64;
    pj.stride = 64;
    Gastroscreen__V1__PlanResult *plan = gs_foreground_plan(&pj, NULL, NULL);
    assert_string_equal(plan->error, "");
    assert_true(plan->facts->mpp_defaulted);

    job_box b;
    make_job(&b, "boxes.tiff", 2);
    b.grid = *plan->grid;
    assert_int_equal(b.grid.window_level0, 128);
    b.refs[0].x0 = 0;
    b.refs[0].y0 = 0;
    b.refs[1].x0 = 128;
    b.refs[1].y0 = 128;
    gs_tiler_job *j = gs_tiler_job_new(&b.job, "t");
    gs_slide_options so;
    gs_slide_options_default(&so);
    so.default_mpp = 0.25;
    gs_slide *s = gs_slide_open(path, &so);
    uint8_t want[64 * 64 * 3];
    gs_tiler_item it;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gs_tiler_job_next(j, &it), 1);
        assert_false(it.failed);
        assert_int_equal(gs_slide_read_target(s, i * 64, i * 64, 64, 64, want), 0);
        assert_memory_equal(it.pixels, want, sizeof want);
        gs_tiler_item_release(&it);
    }
    gs_slide_destroy(&s);
    gs_tiler_job_destroy(&j);
    gs_foreground_result_free(&plan);
}

static void expect_rejected(job_box *b, const char *needle)
{
    gs_error_clear();
    gs_tiler_job *j = gs_tiler_job_new(&b->job, "t");
    assert_null(j);
    if (!strstr(gs_error_get(), needle))
        fail_msg("'%s' lacks '%s'", gs_error_get(), needle);
}

static void malformed_jobs_are_refused(void **state)
{
    (void)state;
    job_box b;
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.job.slide_id = "00000000000000B2";
    expect_rejected(&b, "slide_id");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.job.slide_id = "";
    expect_rejected(&b, "slide_id");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.job.attempt = 0;
    expect_rejected(&b, "attempt");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.job.grid = NULL;
    expect_rejected(&b, "no grid");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.grid.tile_size = 4096;
    expect_rejected(&b, "tile_size 4096");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.grid.target_mpp = -1;
    expect_rejected(&b, "target_mpp");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.grid.window_level0 = 0;
    expect_rejected(&b, "window_level0");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.job.job_case = GASTROSCREEN__V1__TILE_JOB__JOB__NOT_SET;
    expect_rejected(&b, "neither infer nor blur");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.refs[2].index = 10;
    expect_rejected(&b, "tile 10 listed twice");
    make_job(&b, "CMU-1-Small-Region.svs", 0);
    expect_rejected(&b, "0 tiles");
    make_job(&b, "CMU-1-Small-Region.svs", 3);
    b.job.path = "";
    expect_rejected(&b, "path");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_the_planned_tiles),
        cmocka_unit_test(infer_tiles_carry_their_context),
        cmocka_unit_test(serves_a_foreground_plan_for_blur),
        cmocka_unit_test(corrupt_slides_fail_every_tile),
        cmocka_unit_test(tile_outside_the_slide_fails_alone),
        cmocka_unit_test(hand_back_lists_the_rest),
        cmocka_unit_test(slide_without_mpp_uses_the_grid),
        cmocka_unit_test(malformed_jobs_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
