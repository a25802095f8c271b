/* foreground: PlanJob -> PlanResult on the fixture slides, on corrupt files, on synthetic
 * blank and black tiled TIFFs (no tissue, not brightfield), and on jobs that cannot be served.
 * No sockets: the stage library is called directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/handlers/foreground.h"

static const char *data_dir(void)
{
    const char *d = getenv("GS_TEST_DATA");
    assert_non_null(d);
    return d;
}

static void job_for(Gastroscreen__V1__PlanJob *job, char *path, size_t n, const char *rel)
{
    gastroscreen__v1__plan_job__init(job);
    snprintf(path, n, "%s/%s", data_dir(), rel);
    job->slide_id = "00000000000000a1";
    job->attempt = 2;
    job->job_id = 77;
    job->path = path;
    job->target_mpp = 0.5;
    job->tile_size = 512;
    job->stride = 512;
    job->default_mpp = 0.25;
    job->min_tissue_fraction = 0.1f;
    job->thumbnail_size = 512;
}

/* The result must be a valid message: it packs and unpacks to the same content. */
static void assert_packs(const Gastroscreen__V1__PlanResult *r)
{
    size_t len = protobuf_c_message_get_packed_size(&r->base);
    uint8_t *buf = malloc(len + 1);
    assert_int_equal(protobuf_c_message_pack(&r->base, buf), len);
    Gastroscreen__V1__PlanResult *u = gastroscreen__v1__plan_result__unpack(NULL, len, buf);
    assert_non_null(u);
    assert_int_equal(u->n_tiles, r->n_tiles);
    assert_string_equal(u->error, r->error);
    gastroscreen__v1__plan_result__free_unpacked(u, NULL);
    free(buf);
}

static void plans_the_aperio_region(void **state)
{
    (void)state;
    Gastroscreen__V1__PlanJob job;
    char path[4096];
    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, NULL, "foreground.1@test:1");
    assert_non_null(r);
    assert_string_equal(r->error, "");
    assert_string_equal(r->unassessable_reason, "");
    assert_string_equal(r->slide_id, "00000000000000a1");
    assert_int_equal(r->attempt, 2);
    assert_int_equal(r->job_id, 77);
    assert_string_equal(r->worker_id, "foreground.1@test:1");
    assert_int_equal(r->method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);

    const Gastroscreen__V1__SlideFacts *f = r->facts;
    assert_non_null(f);
    assert_string_equal(f->vendor, "aperio");
    assert_int_equal(f->width, 2220);
    assert_int_equal(f->height, 2967);
    assert_int_equal(f->level_count, 1);
    assert_true(fabs(f->mpp_x - 0.499) < 0.001 && fabs(f->mpp_y - 0.499) < 0.001);
    assert_false(f->mpp_defaulted);
    assert_int_equal(strlen(f->quickhash), 64);
    assert_true(f->objective_power == 20);

    const Gastroscreen__V1__TileGrid *g = r->grid;
    assert_non_null(g);
    assert_int_equal(g->level, 0);
    assert_true(g->level_downsample == 1.0);
    assert_int_equal(g->tile_size, 512);
    assert_true(g->target_mpp == 0.5);
    assert_int_equal(g->window_level0, 513); /* 512 * 0.5 / 0.499, rounded */
    assert_int_equal(g->stride_level0, 513);

    /* A 2220x2967 region at 0.5 um/px is a 5x6 grid of 512 px windows; the tissue of CMU-1's
     * corner covers most of it. Every listed window holds tissue, in row-major order. */
    assert_true(r->n_tiles >= 10 && r->n_tiles <= 30);
    size_t enough = 0;
    for (size_t i = 0; i < r->n_tiles; i++) {
        const Gastroscreen__V1__PlannedTile *t = r->tiles[i];
        assert_true(t->tissue_fraction > 0 && t->tissue_fraction <= 1);
        assert_true(t->x0 >= 0 && t->x0 < f->width && t->y0 >= 0 && t->y0 < f->height);
        if (i > 0) {
            const Gastroscreen__V1__PlannedTile *p = r->tiles[i - 1];
            assert_true(t->y0 > p->y0 || (t->y0 == p->y0 && t->x0 > p->x0));
        }
        enough += t->tissue_fraction >= 0.1f;
    }
    assert_true(enough > 0);
    assert_true(r->timing->read_us + r->timing->compute_us > 0);
    assert_packs(r);

    /* The same plan as stages/slide/tissue gives for this slide. */
    gs_slide *s = gs_slide_open(path, NULL);
    gs_tissue_options to;
    gs_tissue_options_default(&to);
    to.min_tissue_fraction = 0;
    gs_plan *p = gs_plan_new(s, &to);
    assert_non_null(p);
    assert_int_equal(gs_plan_tile_count(p), r->n_tiles);
    for (size_t i = 0; i < r->n_tiles; i++) {
        assert_int_equal(gs_plan_tile(p, i)->x0, r->tiles[i]->x0);
        assert_int_equal(gs_plan_tile(p, i)->y0, r->tiles[i]->y0);
    }
    gs_plan_destroy(&p);
    gs_slide_destroy(&s);

    gs_foreground_result_free(&r);
    assert_null(r);
    gs_foreground_result_free(&r);
}

static void slide_without_mpp_is_flagged(void **state)
{
    (void)state;
    Gastroscreen__V1__PlanJob job;
    char path[4096];
    job_for(&job, path, sizeof path, "boxes.tiff");
    job.default_mpp = 0.3;
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, NULL, NULL);
    assert_non_null(r);
    assert_string_equal(r->error, "");
    assert_string_equal(r->worker_id, "");
    assert_true(r->facts->mpp_defaulted);
    assert_true(r->facts->mpp_x == 0.3 && r->facts->mpp_y == 0.3);
    assert_string_equal(r->facts->vendor, "generic-tiff");
    assert_true(r->n_warnings >= 1);
    int found = 0;
    for (size_t i = 0; i < r->n_warnings; i++)
        found |= strstr(r->warnings[i], "0.3") != NULL;
    assert_true(found);
    /* 512 * 0.5 / 0.3 = 853.3 level-0 pixels per window. */
    assert_int_equal(r->grid->window_level0, 853);
    assert_packs(r);
    gs_foreground_result_free(&r);
}

static void expect_error(const char *rel, const char *needle, int facts_expected)
{
    Gastroscreen__V1__PlanJob job;
    char path[4096];
    job_for(&job, path, sizeof path, rel);
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, NULL, "fg");
    assert_non_null(r);
    if (!strstr(r->error, needle))
        fail_msg("%s: error '%s' lacks '%s'", rel, r->error, needle);
    assert_non_null(strstr(r->error, path));
    assert_int_equal(r->n_tiles, 0);
    assert_int_equal(r->facts != NULL, facts_expected);
    assert_string_equal(r->slide_id, "00000000000000a1");
    assert_int_equal(r->job_id, 77);
    assert_packs(r);
    gs_foreground_result_free(&r);
}

static void corrupt_slides_fail_with_the_reason(void **state)
{
    (void)state;
    expect_error("corrupt/broken.svs", "not a slide OpenSlide can read", 0);
    expect_error("corrupt/unopenable.tiff", "Unsupported TIFF compression: 52479", 0);
    /* Opens (facts known), then the thumbnail read fails. */
    expect_error("corrupt/unreadable.svs", "Bogus marker length", 1);
    expect_error("no-such-slide.svs", "No such file", 0);
}

static void unservable_jobs(void **state)
{
    (void)state;
    Gastroscreen__V1__PlanJob job;
    char path[4096];
    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.stride = 256;
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, NULL, NULL);
    assert_non_null(strstr(r->error, "stride 256"));
    assert_null(r->facts);
    gs_foreground_result_free(&r);

    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.tile_size = 5;
    r = gs_foreground_plan(&job, NULL, NULL);
    assert_non_null(strstr(r->error, "tile_size 5"));
    gs_foreground_result_free(&r);

    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.target_mpp = NAN;
    r = gs_foreground_plan(&job, NULL, NULL);
    assert_non_null(strstr(r->error, "target_mpp"));
    gs_foreground_result_free(&r);

    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.min_tissue_fraction = 2;
    r = gs_foreground_plan(&job, NULL, NULL);
    assert_non_null(strstr(r->error, "min_tissue_fraction"));
    gs_foreground_result_free(&r);

    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.path = "";
    r = gs_foreground_plan(&job, NULL, NULL);
    assert_non_null(strstr(r->error, "without a slide path"));
    assert_packs(r);
    gs_foreground_result_free(&r);

    /* Zero parameters take the protocol defaults. */
    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.target_mpp = 0;
    job.tile_size = 0;
    job.stride = 0;
    job.default_mpp = 0;
    r = gs_foreground_plan(&job, NULL, NULL);
    assert_string_equal(r->error, "");
    assert_int_equal(r->grid->tile_size, 512);
    assert_true(r->grid->target_mpp == 0.5);
    gs_foreground_result_free(&r);
}

/* Writes a tiled RGB TIFF of one flat colour (OpenSlide reads tiled TIFFs as generic-tiff). */
static void write_flat_tiff(const char *path, int size, uint8_t value)
{
    TIFF *t = TIFFOpen(path, "w");
    assert_non_null(t);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, size);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, size);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_NONE);
    TIFFSetField(t, TIFFTAG_TILEWIDTH, 256);
    TIFFSetField(t, TIFFTAG_TILELENGTH, 256);
    size_t n = 256 * 256 * 3;
    uint8_t *tile = malloc(n);
    memset(tile, value, n);
    for (int y = 0; y < size; y += 256)
        for (int x = 0; x < size; x += 256)
            assert_true(TIFFWriteTile(t, tile, (uint32_t)x, (uint32_t)y, 0, 0) >= 0);
    free(tile);
    TIFFClose(t);
}

static void blank_and_black_slides_are_unassessable(void **state)
{
    (void)state;
    char path[] = "/tmp/gs_test_foreground_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    Gastroscreen__V1__PlanJob job;
    char unused[4096];
    job_for(&job, unused, sizeof unused, "x");
    job.path = path;

    write_flat_tiff(path, 2048, 243); /* empty glass */
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, NULL, NULL);
    assert_string_equal(r->error, "");
    assert_non_null(strstr(r->unassessable_reason, "no tissue"));
    assert_int_equal(r->n_tiles, 0);
    assert_non_null(r->facts);
    assert_int_equal(r->facts->width, 2048);
    assert_packs(r);
    gs_foreground_result_free(&r);

    write_flat_tiff(path, 2048, 4); /* a fluorescence background */
    r = gs_foreground_plan(&job, NULL, NULL);
    assert_string_equal(r->error, "");
    assert_non_null(strstr(r->unassessable_reason, "not brightfield"));
    assert_int_equal(r->n_tiles, 0);
    gs_foreground_result_free(&r);
    unlink(path);
}

/* A method other than the classical one is called through the boundary and reported. */
static int method_calls;
static gs_plan *counting_method(gs_slide *slide, const gs_tissue_options *o, void *ud)
{
    method_calls++;
    assert_ptr_equal(ud, &method_calls);
    assert_int_equal(o->tile_size, 256);
    assert_true(o->min_tissue_fraction == 0);
    return gs_plan_new(slide, o);
}

static void method_boundary(void **state)
{
    (void)state;
    Gastroscreen__V1__PlanJob job;
    char path[4096];
    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.tile_size = 256;
    job.stride = 256;
    gs_foreground_options o;
    gs_foreground_options_default(&o);
    o.method_fn = counting_method;
    o.method_ud = &method_calls;
    o.method = GASTROSCREEN__V1__METHOD__METHOD_NETWORK;
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, &o, NULL);
    assert_int_equal(method_calls, 1);
    assert_int_equal(r->method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    assert_int_equal(r->grid->tile_size, 256);
    assert_true(r->n_tiles > 30);
    gs_foreground_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plans_the_aperio_region),
        cmocka_unit_test(slide_without_mpp_is_flagged),
        cmocka_unit_test(corrupt_slides_fail_with_the_reason),
        cmocka_unit_test(unservable_jobs),
        cmocka_unit_test(blank_and_black_slides_are_unassessable),
        cmocka_unit_test(method_boundary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
