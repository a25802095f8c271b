#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>

#include "ops/error.h"
#include "stages/slide/png_io.h"
#include "stages/slide/reader.h"
#include "stages/slide/tissue.h"

/* A labelled patch is called tissue when this much of it is in the mask: the partial-tissue
 * patches hold 15% or more and sparse adipose about 3%; glass and ink patches hold 1% or less. */
#define PATCH_TISSUE_FRACTION 0.02

static const char *shared_dir(void)
{
    const char *d = getenv("GS_SHARED_DATA");
    struct stat sb;
    if (!d || stat(d, &sb) < 0) {
        fprintf(stderr, "SKIP: shared data folder %s is absent\n",
                d ? d : "(GS_SHARED_DATA unset)");
        return NULL;
    }
    return d;
}

static void path_in(char *buf, size_t n, const char *dir, const char *rel)
{
    snprintf(buf, n, "%s/%s", dir, rel);
}

/* Reads a patch as RGB: PNG through our reader, the Kather TIFFs (stripped, PackBits, which
 * OpenSlide does not take) through libtiff. */
static uint8_t *read_patch(const char *path, int *w, int *h)
{
    uint8_t *rgb = NULL;
    size_t len = strlen(path);
    if (len > 4 && !strcmp(path + len - 4, ".png")) {
        if (gs_png_read(path, 3, &rgb, w, h) < 0)
            return NULL;
        return rgb;
    }
    TIFF *tif = TIFFOpen(path, "r");
    if (!tif)
        return NULL;
    uint32_t tw, th;
    TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &tw);
    TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &th);
    uint32_t *raster = malloc((size_t)tw * th * sizeof *raster);
    assert_non_null(raster);
    if (TIFFReadRGBAImageOriented(tif, tw, th, raster, ORIENTATION_TOPLEFT, 0)) {
        rgb = malloc((size_t)tw * th * 3);
        assert_non_null(rgb);
        for (size_t i = 0; i < (size_t)tw * th; i++) {
            rgb[3 * i] = (uint8_t)TIFFGetR(raster[i]);
            rgb[3 * i + 1] = (uint8_t)TIFFGetG(raster[i]);
            rgb[3 * i + 2] = (uint8_t)TIFFGetB(raster[i]);
        }
        *w = (int)tw;
        *h = (int)th;
    }
    free(raster);
    TIFFClose(tif);
    return rgb;
}

static void labelled_patches(void **state)
{
    const char *dir = shared_dir();
    if (!dir)
        skip();
    char path[4096];
    path_in(path, sizeof path, dir, "labels.csv");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    int total = 0, correct = 0, unreadable = 0;
    gs_tissue_options o;
    gs_tissue_options_default(&o);
    assert_non_null(fgets(line, sizeof line, f)); /* header */
    while (fgets(line, sizeof line, f)) {
        char *rel = strtok(line, ",");
        char *task = strtok(NULL, ",");
        char *label = strtok(NULL, ",");
        if (!rel || !task || !label)
            continue;
        /* Tissue-task rows are labelled tissue / partial / background / ink; the tumour-task
         * and focus-task rows are all stained tissue (the empty class is in the tissue task). */
        int want = 1;
        if (!strcmp(task, "tissue"))
            want = !strncmp(label, "tissue", 6);
        else if (strcmp(task, "tumor") != 0 && strcmp(task, "focus") != 0)
            fail_msg("labels.csv: unknown task '%s'", task);
        path_in(path, sizeof path, dir, rel);
        int w, h;
        uint8_t *rgb = read_patch(path, &w, &h);
        if (!rgb) {
            fprintf(stderr, "cannot read %s: %s\n", rel, gs_error_get());
            unreadable++;
            continue;
        }
        uint8_t *mask = malloc((size_t)w * h);
        gs_tissue_stats st;
        /* Patches come from levels 0-2 of unknown slides; size the cleanup as for a thumbnail. */
        assert_int_equal(gs_tissue_mask(rgb, w, h, o.mask_mpp, &o, mask, &st), 0);
        int got = st.tissue_fraction >= PATCH_TISSUE_FRACTION;
        total++;
        correct += got == want;
        printf("%-60.60s %-24s tissue %.3f ink %.3f -> %s%s\n", rel, label, st.tissue_fraction,
               st.ink_fraction, got ? "tissue" : "not tissue", got == want ? "" : "   WRONG");
        free(mask);
        free(rgb);
    }
    fclose(f);
    printf("tissue accuracy on labelled patches: %d / %d = %.3f\n", correct, total,
           total ? (double)correct / total : 0.0);
    assert_int_equal(unreadable, 0);
    assert_true(total >= 40);
    assert_int_equal(correct, total);
}

static gs_plan *plan_of(const char *path, gs_slide **s)
{
    gs_slide_options so;
    gs_tissue_options to;
    gs_slide_options_default(&so);
    gs_tissue_options_default(&to);
    *s = gs_slide_open(path, &so);
    if (!*s)
        fail_msg("%s", gs_error_get());
    gs_plan *p = gs_plan_new(*s, &to);
    if (!p)
        fail_msg("%s", gs_error_get());
    return p;
}

static void cmu_plan_is_plausible(void **state)
{
    char path[4096];
    path_in(path, sizeof path, getenv("GS_TEST_DATA"), "CMU-1-Small-Region.svs");
    gs_slide *s;
    gs_plan *p = plan_of(path, &s);
    int32_t cols, rows;
    gs_plan_grid(p, &cols, &rows);
    int64_t tw, th;
    int tile;
    gs_plan_target_size(p, &tw, &th, &tile);
    /* 2220 x 2967 px at 0.499 um/px is 2215 x 2961 at 0.5: 5 x 6 tiles of 512. */
    assert_int_equal(tw, 2215);
    assert_int_equal(th, 2961);
    assert_int_equal(cols, 5);
    assert_int_equal(rows, 6);
    const gs_tissue_stats *st = gs_plan_stats(p);
    printf("CMU: %zu of %d tiles, tissue %.3f, ink %.3f, threshold %.4f (otsu %.4f)\n",
           gs_plan_tile_count(p), cols * rows, st->tissue_fraction, st->ink_fraction,
           (double)st->threshold, (double)st->otsu);
    assert_int_equal(gs_plan_status(p), GS_TISSUE_OK);
    assert_true(st->brightfield);
    /* The region is a skin section over part of the field with glass around it. */
    assert_true(st->tissue_fraction > 0.2 && st->tissue_fraction < 0.9);
    assert_true(gs_plan_tile_count(p) >= 8 && gs_plan_tile_count(p) < (size_t)(cols * rows));
    int64_t prev = -1;
    for (size_t i = 0; i < gs_plan_tile_count(p); i++) {
        const gs_tile *t = gs_plan_tile(p, i);
        int64_t order = (int64_t)t->row * cols + t->col;
        assert_true(order > prev); /* row-major, no duplicates */
        prev = order;
        assert_true(t->tissue >= 0.25f && t->tissue <= 1.0f);
        assert_int_equal(t->tx, (int64_t)t->col * 512);
        assert_int_equal(t->ty, (int64_t)t->row * 512);
        /* 512 px at 0.5 um/px is 513 px at 0.499 um/px. */
        assert_int_equal(t->w0, 513);
    }
    /* Pick a planned tile and an unplanned one and check the pixels agree with the decision:
     * tissue is darker than glass. */
    uint8_t *rgb = malloc(512 * 512 * 3);
    const gs_tile *t = gs_plan_tile(p, 0);
    assert_int_equal(gs_slide_read_target(s, t->tx, t->ty, 512, 512, rgb), 0);
    double mean = 0;
    for (size_t i = 0; i < 512 * 512 * 3; i++)
        mean += rgb[i];
    mean /= 512.0 * 512 * 3;
    assert_true(mean < 225);
    free(rgb);
    gs_plan_destroy(&p);
    assert_null(p);
    gs_slide_destroy(&s);
}

static void fluorescence_is_not_brightfield(void **state)
{
    const char *dir = shared_dir();
    if (!dir)
        skip();
    char path[4096];
    path_in(path, sizeof path, dir, "wsi/slideio-tutorial/test3-DAPI-2-387.ndpi");
    gs_slide *s;
    gs_plan *p = plan_of(path, &s);
    printf("NDPI: median grey %.0f\n", gs_plan_stats(p)->median_grey);
    assert_int_equal(gs_plan_status(p), GS_TISSUE_NOT_BRIGHTFIELD);
    assert_int_equal(gs_plan_tile_count(p), 0);
    assert_string_equal(gs_tissue_status_name(gs_plan_status(p)), "not-brightfield");
    gs_plan_destroy(&p);
    gs_slide_destroy(&s);
}

static void slide_without_mpp_still_plans(void **state)
{
    const char *dir = shared_dir();
    if (!dir)
        skip();
    char path[4096];
    path_in(path, sizeof path, dir, "wsi/histolab/tcga-cr-7395-01a-01-ts1.svs");
    gs_slide *s;
    gs_plan *p = plan_of(path, &s);
    assert_false(gs_slide_mpp_known(s));
    assert_true(gs_slide_warning_count(s) >= 1);
    const gs_tissue_stats *st = gs_plan_stats(p);
    printf("TCGA: %zu tiles, tissue %.3f, ink %.3f\n", gs_plan_tile_count(p), st->tissue_fraction,
           st->ink_fraction);
    assert_int_equal(gs_plan_status(p), GS_TISSUE_OK);
    assert_true(gs_plan_tile_count(p) > 0);
    gs_plan_destroy(&p);
    gs_slide_destroy(&s);
}

/* A wrong resolution (here a default mpp of a metre per pixel for a slide without its own)
 * makes a grid of about 10^12 tiles: the plan is refused with a message naming the resolution
 * and where it came from, instead of trying to allocate a slot per tile. */
static void absurd_grid_is_refused(void **state)
{
    char path[4096];
    path_in(path, sizeof path, getenv("GS_TEST_DATA"), "boxes.tiff");
    gs_slide_options so;
    gs_tissue_options to;
    gs_slide_options_default(&so);
    gs_tissue_options_default(&to);
    so.default_mpp = 1e6;
    gs_slide *s = gs_slide_open(path, &so);
    assert_non_null(s);
    assert_null(gs_plan_new(s, &to));
    assert_non_null(strstr(gs_error_get(), "tile limit"));
    assert_non_null(strstr(gs_error_get(), "default"));
    gs_slide_destroy(&s);
    /* At its real scale the same slide plans. */
    so.default_mpp = 0.5;
    s = gs_slide_open(path, &so);
    assert_non_null(s);
    gs_plan *p = gs_plan_new(s, &to);
    assert_non_null(p);
    gs_plan_destroy(&p);
    gs_slide_destroy(&s);
}

static void blank_and_flat_images(void **state)
{
    gs_tissue_options o;
    gs_tissue_options_default(&o);
    enum { W = 64, H = 48 };
    static uint8_t rgb[W * H * 3];
    uint8_t mask[W * H];
    gs_tissue_stats st;
    memset(rgb, 242, sizeof rgb); /* bare glass */
    assert_int_equal(gs_tissue_mask(rgb, W, H, 4.0, &o, mask, &st), 0);
    assert_true(st.brightfield);
    assert_true(st.tissue_fraction == 0.0);
    /* A pink-purple block on glass is tissue; a green marker stroke beside it is not. Both are
     * flat; ink is told by colour and smoothness, and the stroke's edge (textured where it meets
     * the glass) must go with it. */
    for (int y = 8; y < 40; y++)
        for (int x = 4; x < 28; x++) {
            uint8_t *px = rgb + 3 * (y * W + x);
            px[0] = 190, px[1] = 120, px[2] = 180;
        }
    for (int y = 4; y < 44; y++)
        for (int x = 36; x < 60; x++) {
            uint8_t *px = rgb + 3 * (y * W + x);
            px[0] = 60, px[1] = 160, px[2] = 120;
        }
    assert_int_equal(gs_tissue_mask(rgb, W, H, 4.0, &o, mask, &st), 0);
    assert_int_equal(mask[20 * W + 15], 1);
    assert_int_equal(mask[2 * W + 2], 0);
    for (int y = 0; y < H; y++)
        for (int x = 32; x < W; x++)
            assert_int_equal(mask[y * W + x], 0);
    assert_true(st.ink_fraction > 0.05);
    memset(rgb, 5, sizeof rgb); /* black: a fluorescence background */
    assert_int_equal(gs_tissue_mask(rgb, W, H, 4.0, &o, mask, &st), 0);
    assert_false(st.brightfield);
    assert_int_equal(gs_tissue_mask(rgb, 0, H, 4.0, &o, mask, &st), -1);
    assert_non_null(strstr(gs_error_get(), "bad image size"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blank_and_flat_images),
        cmocka_unit_test(cmu_plan_is_plausible),
        cmocka_unit_test(labelled_patches),
        cmocka_unit_test(fluorescence_is_not_brightfield),
        cmocka_unit_test(slide_without_mpp_still_plans),
        cmocka_unit_test(absurd_grid_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
