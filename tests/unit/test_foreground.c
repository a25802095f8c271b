/* foreground: PlanJob -> PlanResult on the fixture slides, on corrupt files, on synthetic
 * blank and black tiled TIFFs (no tissue, not brightfield), and on jobs that cannot be served;
 * the network method with a foreground network of hand-set weights whose mask can be predicted
 * (tests/unit/make_crafted_fg_bundle.py: tissue = bright pixels), and the choice between the
 * methods. No sockets: the stage library is called directly. */
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
#include "ops/resample.h"
#include "stages/handlers/foreground.h"
#include "stages/slide/box_resize.h"

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

    /* Positive and finite, but it would scale the slide past any integer. */
    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.target_mpp = 1e-300;
    r = gs_foreground_plan(&job, NULL, NULL);
    assert_non_null(strstr(r->error, "target_mpp 1e-300 outside 0.05..10"));
    gs_foreground_result_free(&r);
    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    job.default_mpp = 1e300;
    r = gs_foreground_plan(&job, NULL, NULL);
    assert_non_null(strstr(r->error, "default_mpp 1e+300 outside 0.05..10"));
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

/* ---- the network method ------------------------------------------------------------------ */

#define NET_SIDE 512
#define LOW_SIDE (NET_SIDE / 8)

static gs_model *crafted_model(const char *name)
{
    const char *b = getenv("GS_BUILD_DIR");
    assert_non_null(b);
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/seeded/%s", b, name);
    const gs_net_id fg = GS_NET_FOREGROUND;
    gs_model *m = gs_model_load_nets(path, &fg, 1);
    if (!m)
        fail_msg("%s", gs_error_get());
    return m;
}

/* What the crafted network answers on a 512x512 input (make_crafted_fg_bundle.py): the
 * low-resolution logit from the grey of pixel (8i, 8j), bilinear x8. */
static void crafted_logits(const uint8_t *in, float *logit)
{
    static float low[LOW_SIDE * LOW_SIDE];
    for (int i = 0; i < LOW_SIDE; i++)
        for (int j = 0; j < LOW_SIDE; j++) {
            const uint8_t *px = in + 3 * ((size_t)(8 * i) * NET_SIDE + 8 * j);
            float g = (px[0] / 3.0f + px[1] / 3.0f + px[2] / 3.0f) / 255.0f;
            float h = g - 220.0f / 255.0f;
            low[i * LOW_SIDE + j] = 100.0f * (h > 0 ? h : 0) - 1.0f;
        }
    assert_int_equal(gs_resize_bilinear_f32(low, LOW_SIDE, LOW_SIDE, logit, NET_SIDE, NET_SIDE), 0);
}

/* The tissue fraction of the window at level-0 (x0, y0), side w0, on a mask covering the
 * slide (W0 x H0): the share of the mask pixels its footprint touches (whole pixels, outside
 * the mask counts as background), as the plan defines it. */
static double window_fraction(const uint8_t *mask, int64_t W0, int64_t H0, int64_t x0, int64_t y0,
                              int64_t w0)
{
    double sx = (double)NET_SIDE / (double)W0, sy = (double)NET_SIDE / (double)H0;
    double fx0 = floor(x0 * sx), fx1 = ceil((x0 + w0) * sx);
    double fy0 = floor(y0 * sy), fy1 = ceil((y0 + w0) * sy);
    long n = 0;
    for (long y = (long)fy0; y < (long)fy1; y++)
        for (long x = (long)fx0; x < (long)fx1; x++)
            if (x < NET_SIDE && y < NET_SIDE)
                n += mask[y * NET_SIDE + x];
    return (double)n / ((fx1 - fx0) * (fy1 - fy0));
}

static const Gastroscreen__V1__PlannedTile *find_tile(const Gastroscreen__V1__PlanResult *r,
                                                      int64_t x0, int64_t y0)
{
    for (size_t i = 0; i < r->n_tiles; i++)
        if (r->tiles[i]->x0 == x0 && r->tiles[i]->y0 == y0)
            return r->tiles[i];
    return NULL;
}

static void network_plan_follows_the_network(void **state)
{
    (void)state;
    gs_model *m = crafted_model("crafted-fg.safetensors");
    gs_foreground_net *net = NULL;
    gs_foreground_options o;
    assert_int_equal(gs_foreground_options_for_model(&o, m, &net), 0);
    assert_non_null(net);
    assert_int_equal(o.method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    assert_ptr_equal(o.method_ud, net);

    /* The network's mask on the thumbnail the plan reads, resized as the network expects. */
    Gastroscreen__V1__PlanJob job;
    char path[4096];
    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    gs_slide_options so;
    gs_slide_options_default(&so);
    gs_slide *s = gs_slide_open(path, &so);
    assert_non_null(s);
    int64_t W0, H0;
    gs_slide_level_size(s, 0, &W0, &H0);
    uint8_t *thumb = NULL;
    int tw, th;
    assert_int_equal(gs_plan_read_thumbnail(s, &o.tissue, &thumb, &tw, &th), 0);
    static uint8_t in[NET_SIDE * NET_SIDE * 3], mask[NET_SIDE * NET_SIDE],
        want[NET_SIDE * NET_SIDE];
    static float logit[NET_SIDE * NET_SIDE], expect[NET_SIDE * NET_SIDE];
    assert_int_equal(gs_box_resize_u8(thumb, tw, th, 3, in, NET_SIDE, NET_SIDE), 0);
    assert_int_equal(gs_foreground_net_mask(net, in, NET_SIDE, mask, logit), 0);
    crafted_logits(in, expect);
    size_t tissue = 0, undecided = 0;
    for (size_t i = 0; i < NET_SIDE * NET_SIDE; i++) {
        assert_float_equal(logit[i], expect[i], 1e-3);
        want[i] = expect[i] > 0;
        if (fabsf(expect[i]) < 1e-2f) /* on the threshold: either answer is right */
            undecided++, want[i] = mask[i];
        assert_int_equal(mask[i], want[i]);
        tissue += mask[i];
    }
    /* The crafted net finds glass: most of this biopsy's thumbnail, but not all of it. */
    printf("crafted network: %zu of %d pixels tissue, %zu on the threshold\n", tissue,
           NET_SIDE * NET_SIDE, undecided);
    assert_true(tissue > NET_SIDE * NET_SIDE / 10 && tissue < NET_SIDE * NET_SIDE * 9 / 10);

    /* The plan keeps the thumbnail and the network's mask on it, for the overlay. */
    gs_tissue_options to = o.tissue;
    to.min_tissue_fraction = 0;
    gs_plan *p = gs_foreground_network(s, &to, net);
    assert_non_null(p);
    int pw, ph, mw, mh;
    const uint8_t *pt = gs_plan_thumbnail(p, &pw, &ph);
    const uint8_t *pm = gs_plan_mask(p, &mw, &mh);
    assert_int_equal(pw, tw);
    assert_int_equal(ph, th);
    assert_int_equal(mw, tw);
    assert_int_equal(mh, th);
    assert_memory_equal(pt, thumb, (size_t)tw * th * 3);
    size_t on_thumb = 0;
    for (size_t i = 0; i < (size_t)tw * th; i++)
        on_thumb += pm[i];
    printf("mask on the %dx%d thumbnail: %.4f tissue (network %.4f)\n", tw, th,
           (double)on_thumb / ((double)tw * th), (double)tissue / (NET_SIDE * NET_SIDE));
    assert_float_equal((double)on_thumb / ((double)tw * th), (double)tissue / (NET_SIDE * NET_SIDE),
                       0.02);
    assert_float_equal(gs_plan_stats(p)->tissue_fraction, (double)tissue / (NET_SIDE * NET_SIDE),
                       1e-9);
    uint8_t *overlay = gs_plan_overlay(p);
    assert_non_null(overlay);
    free(overlay);
    gs_plan_destroy(&p);
    free(thumb);
    gs_slide_destroy(&s);

    /* The plan: every window the mask touches, with the mask's fraction, reported NETWORK. */
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, &o, NULL);
    assert_string_equal(r->error, "");
    assert_string_equal(r->unassessable_reason, "");
    assert_int_equal(r->method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    assert_packs(r);
    int64_t w0 = r->grid->window_level0;
    size_t windows = 0;
    for (int64_t y0 = 0; y0 < H0; y0 += w0)
        for (int64_t x0 = 0; x0 < W0; x0 += w0) {
            double f = window_fraction(want, W0, H0, x0, y0, w0);
            const Gastroscreen__V1__PlannedTile *t = find_tile(r, x0, y0);
            if (f > 0) {
                windows++;
                assert_non_null(t);
                assert_float_equal(t->tissue_fraction, f, 1e-6);
            } else {
                assert_null(t);
            }
        }
    assert_int_equal(r->n_tiles, windows);

    /* And it is not the classical plan: where the classical mask is surest of tissue the
     * network sees little, and the network's surest window is mostly glass to the classical. */
    Gastroscreen__V1__PlanResult *c = gs_foreground_plan(&job, NULL, NULL);
    assert_int_equal(c->method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    const Gastroscreen__V1__PlannedTile *cbest = c->tiles[0], *nbest = r->tiles[0];
    for (size_t i = 0; i < c->n_tiles; i++)
        if (c->tiles[i]->tissue_fraction > cbest->tissue_fraction)
            cbest = c->tiles[i];
    for (size_t i = 0; i < r->n_tiles; i++)
        if (r->tiles[i]->tissue_fraction > nbest->tissue_fraction)
            nbest = r->tiles[i];
    const Gastroscreen__V1__PlannedTile *n_at_c = find_tile(r, cbest->x0, cbest->y0);
    const Gastroscreen__V1__PlannedTile *c_at_n = find_tile(c, nbest->x0, nbest->y0);
    printf("classical best %.2f (network %.2f there), network best %.2f (classical %.2f)\n",
           cbest->tissue_fraction, n_at_c ? n_at_c->tissue_fraction : 0.0, nbest->tissue_fraction,
           c_at_n ? c_at_n->tissue_fraction : 0.0);
    assert_true(cbest->tissue_fraction > 0.9f && nbest->tissue_fraction > 0.9f);
    assert_true(!n_at_c || n_at_c->tissue_fraction < 0.5f);
    assert_true(!c_at_n || c_at_n->tissue_fraction < 0.5f);
    gs_foreground_result_free(&c);
    gs_foreground_result_free(&r);
    gs_foreground_net_destroy(&net);
    gs_model_destroy(&m);
}

/* The network method keeps the classical refusals: a dark background is not brightfield even
 * though the crafted net (tissue = bright) would find nothing anyway, and empty glass, which
 * the crafted net calls all tissue, gets every window. */
static void network_plan_keeps_the_brightfield_check(void **state)
{
    (void)state;
    gs_model *m = crafted_model("crafted-fg.safetensors");
    gs_foreground_net *net = NULL;
    gs_foreground_options o;
    assert_int_equal(gs_foreground_options_for_model(&o, m, &net), 0);
    char path[] = "/tmp/gs_test_foreground_net_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    Gastroscreen__V1__PlanJob job;
    char unused[4096];
    job_for(&job, unused, sizeof unused, "x");
    job.path = path;

    write_flat_tiff(path, 2048, 4);
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, &o, NULL);
    assert_string_equal(r->error, "");
    assert_non_null(strstr(r->unassessable_reason, "not brightfield"));
    assert_int_equal(r->n_tiles, 0);
    assert_int_equal(r->method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    gs_foreground_result_free(&r);

    write_flat_tiff(path, 2048, 243);
    r = gs_foreground_plan(&job, &o, NULL);
    assert_string_equal(r->error, "");
    assert_string_equal(r->unassessable_reason, "");
    assert_true(r->n_tiles >= 1);
    assert_float_equal(r->tiles[0]->tissue_fraction, 1.0, 1e-6);
    gs_foreground_result_free(&r);

    job.thumbnail_size = 500; /* not a multiple of 8: the network cannot take it */
    r = gs_foreground_plan(&job, &o, NULL);
    assert_non_null(strstr(r->error, "thumbnail_size 500"));
    gs_foreground_result_free(&r);
    unlink(path);
    gs_foreground_net_destroy(&net);
    gs_model_destroy(&m);
}

/* An untrained foreground network (or no bundle) leaves the classical method in place. */
static void untrained_network_plans_classically(void **state)
{
    (void)state;
    gs_model *m = crafted_model("crafted-fg-untrained.safetensors");
    assert_true(gs_model_has(m, GS_NET_FOREGROUND));
    gs_foreground_net *net = (gs_foreground_net *)&net; /* must be reset */
    gs_foreground_options o;
    assert_int_equal(gs_foreground_options_for_model(&o, m, &net), 0);
    assert_null(net);
    assert_int_equal(o.method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_ptr_equal(o.method_fn, gs_foreground_classical);
    Gastroscreen__V1__PlanJob job;
    char path[4096];
    job_for(&job, path, sizeof path, "CMU-1-Small-Region.svs");
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, &o, NULL);
    Gastroscreen__V1__PlanResult *c = gs_foreground_plan(&job, NULL, NULL);
    assert_int_equal(r->method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    assert_int_equal(r->n_tiles, c->n_tiles);
    for (size_t i = 0; i < r->n_tiles; i++)
        assert_float_equal(r->tiles[i]->tissue_fraction, c->tiles[i]->tissue_fraction, 0);
    gs_foreground_result_free(&r);
    gs_foreground_result_free(&c);
    gs_model_destroy(&m);

    assert_int_equal(gs_foreground_options_for_model(&o, NULL, &net), 0);
    assert_null(net);
    assert_int_equal(o.method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
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
        cmocka_unit_test(network_plan_follows_the_network),
        cmocka_unit_test(network_plan_keeps_the_brightfield_check),
        cmocka_unit_test(untrained_network_plans_classically),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
