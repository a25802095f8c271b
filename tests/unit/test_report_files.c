#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "ops/error.h"
#include "stages/slide/heatmap.h"
#include "stages/slide/png_io.h"
#include "stages/slide/report_files.h"

static char tmp_root[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/gs_test_report.XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    return rmdir(dir);
}

static int teardown(void **state)
{
    (void)state;
    return rm_tree(tmp_root);
}

/* Names in dir, sorted, joined by spaces. */
static void list_dir(const char *dir, char *out, size_t n)
{
    struct dirent **names;
    int k = scandir(dir, &names, NULL, alphasort);
    assert_true(k >= 0);
    out[0] = '\0';
    for (int i = 0; i < k; i++) {
        if (names[i]->d_name[0] != '.') {
            if (out[0])
                strncat(out, " ", n - strlen(out) - 1);
            strncat(out, names[i]->d_name, n - strlen(out) - 1);
        }
        free(names[i]);
    }
    free(names);
}

static json_t *load(const char *path)
{
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j)
        fail_msg("%s: %s (line %d)", path, err.text, err.line);
    return j;
}

/* 1 when s is a UUID string as QuPath's UUID.fromString takes it: 8-4-4-4-12 hex digits. */
static int is_uuid(const char *s)
{
    if (!s || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++)
        if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-'
                                                      : !isxdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

/* The gzip file at path parsed as JSON (NULL when it is not gzip or not JSON). */
static json_t *load_gz(const char *path)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int n;
    while (buf && (n = gzread(f, buf + len, (unsigned)(cap - len))) > 0) {
        len += (size_t)n;
        if (len == cap)
            buf = realloc(buf, cap *= 2);
    }
    int bad = gzclose(f) != Z_OK;
    json_error_t e;
    json_t *j = buf && !bad ? json_loadb(buf, len, 0, &e) : NULL;
    free(buf);
    return j;
}

static double shoelace(json_t *ring)
{
    double s = 0;
    size_t n = json_array_size(ring);
    for (size_t i = 0; i + 1 < n; i++) {
        json_t *a = json_array_get(ring, i), *b = json_array_get(ring, i + 1);
        s += json_real_value(json_array_get(a, 0)) * json_real_value(json_array_get(b, 1)) -
             json_real_value(json_array_get(b, 0)) * json_real_value(json_array_get(a, 1));
    }
    return s / 2;
}

/* Slide of 1024x768 level-0 px, tiles of 256 px with 4x4 maps: cells of 64 px, 16x12 grid.
 * Region A: a 3x3-cell block at cells (1..3, 1..3) whose centre cell is low (a hole);
 * region B: one cell at (10, 8). Everything else inferred as 0.1. */
static gs_heatmap *known_heatmap(void)
{
    gs_heatmap *h = gs_heatmap_new(1024, 768, 64);
    assert_non_null(h);
    for (int ty = 0; ty < 3; ty++)
        for (int tx = 0; tx < 4; tx++) {
            uint8_t map[16];
            for (int v = 0; v < 4; v++)
                for (int u = 0; u < 4; u++) {
                    int cx = tx * 4 + u, cy = ty * 4 + v;
                    int in_a = cx >= 1 && cx <= 3 && cy >= 1 && cy <= 3 && !(cx == 2 && cy == 2);
                    int in_b = cx == 10 && cy == 8;
                    map[v * 4 + u] = in_a ? 204 : in_b ? 255 : 25;
                }
            assert_int_equal(gs_heatmap_add_tile(h, tx * 256, ty * 256, 256, map, 4), 16);
        }
    return h;
}

static void fill_report(gs_report *r, const gs_report_model *models, size_t n_models)
{
    static const gs_report_timing timings[] = {{"plan", 1.5}, {"blur", 0.25}, {"infer", 12.0}};
    static const char *const warnings[] = {"no mpp: used default 0.25"};
    memset(r, 0, sizeof *r);
    r->slide_id = "s-0001";
    r->attempt = 2;
    r->path = "/slides/a.svs";
    r->vendor = "aperio";
    r->width = 1024;
    r->height = 768;
    r->mpp = 0.25;
    r->mpp_defaulted = 1;
    r->verdict = GS_VERDICT_POSITIVE;
    r->score = 0.875;
    r->threshold = 0.74;
    r->reason = "score 0.88 > 0.74";
    r->tiles = (gs_report_tiles){12, 10, 1, 1, 0, 3};
    r->blur_sample_judged = 8;
    r->blurred_fraction = 0.125;
    r->timings = timings;
    r->n_timings = 3;
    r->models = models;
    r->n_models = n_models;
    r->warnings = warnings;
    r->n_warnings = 1;
    r->decided_unix_ms = 1700000000123;
    r->region_threshold = 0.5;
}

static void positive_report_round_trip(void **state)
{
    (void)state;
    const gs_report_model models[] = {
        {.network = "foreground",
         .method = "classical",
         .algorithm = GS_REPORT_CLASSICAL_FOREGROUND,
         .version = "gastroscreen " GS_VERSION},
        {.network = "multitask",
         .method = "network",
         .bundle = "default.safetensors",
         .sha256 = "ab12",
         .format_version = "1",
         .trained_on = "untrained",
         .untrained = 1,
         .precision = "bf16"},
    };
    gs_report r;
    fill_report(&r, models, 2);
    gs_heatmap *h = known_heatmap();
    enum { TW = 128, TH = 96 };
    uint8_t *thumb = malloc(TW * TH * 3);
    assert_non_null(thumb);
    memset(thumb, 230, TW * TH * 3);
    r.heatmap = h;
    r.thumbnail = thumb;
    r.thumb_w = TW;
    r.thumb_h = TH;

    char dir[512];
    snprintf(dir, sizeof dir, "%s/out/s-0001", tmp_root); /* parents are created */
    gs_report_paths paths;
    if (gs_report_write(&r, dir, &paths) != 0)
        fail_msg("%s", gs_error_get());
    assert_int_equal(paths.regions, 2);
    char names[512];
    list_dir(dir, names, sizeof names);
    /* no temp files */
    assert_string_equal(names, "heatmap.png heatmap_overlay.png regions.geojson report.json "
                               "tiles.geojson.gz");
    char want[600];
    snprintf(want, sizeof want, "%s/report.json", dir);
    assert_string_equal(paths.report_json, want);

    json_t *j = load(paths.report_json);
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "positive");
    assert_true(json_real_value(json_object_get(j, "score")) == 0.875);
    assert_true(json_real_value(json_object_get(j, "threshold")) == 0.74);
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "score 0.88 > 0.74");
    assert_true(json_is_true(json_object_get(j, "untrained")));
    assert_string_equal(json_string_value(json_object_get(j, "notice")),
                        "model: untrained \xe2\x80\x94 not a diagnosis");
    json_t *slide = json_object_get(j, "slide");
    assert_string_equal(json_string_value(json_object_get(slide, "id")), "s-0001");
    assert_string_equal(json_string_value(json_object_get(slide, "path")), "/slides/a.svs");
    assert_int_equal(json_integer_value(json_object_get(slide, "attempt")), 2);
    assert_true(json_is_null(json_object_get(slide, "external_id")));
    assert_true(json_is_true(json_object_get(slide, "mpp_defaulted")));
    json_t *tiles = json_object_get(j, "tiles");
    assert_int_equal(json_integer_value(json_object_get(tiles, "planned")), 12);
    assert_int_equal(json_integer_value(json_object_get(tiles, "inferred")), 10);
    assert_int_equal(json_integer_value(json_object_get(tiles, "rerequested")), 3);
    assert_true(json_real_value(json_object_get(j, "blurred_fraction")) == 0.125);
    json_t *t = json_object_get(j, "timings");
    assert_int_equal(json_object_size(t), 3);
    assert_true(json_real_value(json_object_get(t, "infer")) == 12.0);
    assert_string_equal(json_object_iter_key(json_object_iter(t)), "plan"); /* order kept */
    json_t *m = json_object_get(j, "models");
    assert_int_equal(json_array_size(m), 2);
    /* Every entry has every key, in the order given; absent values are null. */
    json_t *fg = json_array_get(m, 0), *mt = json_array_get(m, 1);
    assert_int_equal(json_object_size(fg), 10);
    assert_int_equal(json_object_size(mt), 10);
    assert_string_equal(json_string_value(json_object_get(fg, "network")), "foreground");
    assert_string_equal(json_string_value(json_object_get(fg, "method")), "classical");
    assert_non_null(strstr(json_string_value(json_object_get(fg, "algorithm")), "Otsu"));
    assert_string_equal(json_string_value(json_object_get(fg, "version")),
                        "gastroscreen " GS_VERSION);
    assert_true(json_is_null(json_object_get(fg, "bundle")));
    assert_true(json_is_null(json_object_get(fg, "sha256")));
    assert_true(json_is_false(json_object_get(fg, "untrained")));
    assert_string_equal(json_string_value(json_object_get(mt, "method")), "network");
    assert_true(json_is_null(json_object_get(mt, "algorithm")));
    assert_true(json_is_null(json_object_get(mt, "version")));
    assert_string_equal(json_string_value(json_object_get(mt, "sha256")), "ab12");
    assert_true(json_is_true(json_object_get(mt, "untrained")));
    /* The arithmetic the multi-task network ran in; null for a method without one. */
    assert_string_equal(json_string_value(json_object_get(mt, "precision")), "bf16");
    assert_true(json_is_null(json_object_get(fg, "precision")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "warnings"), 0)),
                        "no mpp: used default 0.25");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "regions"), "count")),
                     2);
    assert_true(json_real_value(json_object_get(json_object_get(j, "heatmap"), "cell_level0")) ==
                64.0);
    json_t *ver = json_object_get(j, "versions");
    assert_string_equal(json_string_value(json_object_get(ver, "gastroscreen")), GS_VERSION);
    assert_non_null(json_string_value(json_object_get(ver, "openslide")));
    assert_int_equal(json_integer_value(json_object_get(j, "decided_unix_ms")), 1700000000123);
    json_decref(j);

    /* regions.geojson: a FeatureCollection of QuPath annotations in level-0 pixels. */
    j = load(paths.regions_geojson);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "FeatureCollection");
    json_t *fs = json_object_get(j, "features");
    assert_int_equal(json_array_size(fs), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *f = json_array_get(fs, i);
        assert_string_equal(json_string_value(json_object_get(f, "type")), "Feature");
        json_t *g = json_object_get(f, "geometry"), *p = json_object_get(f, "properties");
        assert_string_equal(json_string_value(json_object_get(g, "type")), "Polygon");
        assert_string_equal(json_string_value(json_object_get(p, "objectType")), "annotation");
        assert_true(json_is_true(json_object_get(p, "isLocked")));
        assert_true(is_uuid(json_string_value(json_object_get(f, "id"))));
        json_t *ms = json_object_get(p, "measurements");
        assert_true(json_is_object(ms));
        json_t *cls = json_object_get(p, "classification");
        assert_string_equal(json_string_value(json_object_get(cls, "name")), "Suspicious");
        json_t *colour = json_object_get(cls, "color");
        assert_int_equal(json_array_size(colour), 3);
        assert_int_equal(json_integer_value(json_array_get(colour, 0)), 255);
        json_t *rings = json_object_get(g, "coordinates");
        for (size_t k = 0; k < json_array_size(rings); k++) {
            json_t *ring = json_array_get(rings, k);
            size_t n = json_array_size(ring);
            assert_true(n >= 5);
            json_t *a = json_array_get(ring, 0), *b = json_array_get(ring, n - 1);
            assert_true(json_equal(a, b)); /* closed */
            /* Outline positive (counter-clockwise in a y-up reading), holes negative. */
            assert_true(k == 0 ? shoelace(ring) > 0 : shoelace(ring) < 0);
        }
        if (i == 0) {
            /* Region A: outline cells 1..3 -> level-0 64..256, one hole of one cell. */
            assert_int_equal(json_array_size(rings), 2);
            json_t *outer = json_array_get(rings, 0);
            double minx = 1e9, maxx = -1e9, miny = 1e9, maxy = -1e9;
            for (size_t k = 0; k < json_array_size(outer); k++) {
                double x = json_real_value(json_array_get(json_array_get(outer, k), 0));
                double y = json_real_value(json_array_get(json_array_get(outer, k), 1));
                minx = fmin(minx, x), maxx = fmax(maxx, x), miny = fmin(miny, y),
                maxy = fmax(maxy, y);
            }
            assert_true(minx == 64 && maxx == 256 && miny == 64 && maxy == 256);
            assert_true(shoelace(outer) == 192.0 * 192.0);
            assert_true(shoelace(json_array_get(rings, 1)) == -64.0 * 64.0);
            assert_true(json_real_value(json_object_get(ms, GS_REPORT_M_AREA_PX)) == 8 * 64.0 * 64);
            /* mpp 0.25: a level-0 pixel is 1/16 um^2. */
            assert_true(json_real_value(json_object_get(ms, GS_REPORT_M_AREA_UM)) ==
                        8 * 64.0 * 64 / 16);
            assert_true(fabs(json_real_value(json_object_get(ms, GS_REPORT_M_MAX)) - 204 / 255.0) <
                        1e-6);
            assert_true(fabs(json_real_value(json_object_get(ms, GS_REPORT_M_MEAN)) - 204 / 255.0) <
                        1e-6);
        } else {
            /* Region B: the cell (10, 8) = level-0 [640, 704) x [512, 576). */
            assert_int_equal(json_array_size(rings), 1);
            json_t *p0 = json_array_get(json_array_get(rings, 0), 0);
            assert_true(json_real_value(json_array_get(p0, 0)) == 704.0);
            assert_true(json_real_value(json_array_get(p0, 1)) == 512.0);
            assert_true(shoelace(json_array_get(rings, 0)) == 64.0 * 64.0);
            assert_true(json_real_value(json_object_get(ms, GS_REPORT_M_MAX)) == 1.0);
        }
    }
    json_decref(j);

    /* heatmap.png: the thumbnail size; red over region B's cell, the thumbnail shows through. */
    uint8_t *png = NULL;
    int w, hh;
    assert_int_equal(gs_png_read(paths.heatmap_png, 3, &png, &w, &hh), 0);
    assert_int_equal(w, TW);
    assert_int_equal(hh, TH);
    const uint8_t *px = png + ((size_t)(68) * TW + 84) * 3; /* level-0 (676, 548) */
    assert_int_equal(px[0], lround(0.55 * 230 + 0.45 * 255));
    assert_int_equal(px[1], lround(0.55 * 230));
    free(png);

    /* Rewriting replaces the files, still without leftovers. */
    r.verdict = GS_VERDICT_NEGATIVE;
    r.reason = "score 0.10 <= 0.74";
    assert_int_equal(gs_report_write(&r, dir, NULL), 0);
    list_dir(dir, names, sizeof names);
    assert_string_equal(names, "heatmap.png heatmap_overlay.png regions.geojson report.json "
                               "tiles.geojson.gz");
    j = load(paths.report_json);
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "negative");
    json_decref(j);
    free(thumb);
    gs_heatmap_destroy(&h);
}

static void trained_model_has_no_notice(void **state)
{
    (void)state;
    const gs_report_model models[] = {{.network = "multitask",
                                       .method = "network",
                                       .bundle = "gastric.safetensors",
                                       .sha256 = "cd34",
                                       .format_version = "1",
                                       .trained_on = "gastric-2026"}};
    gs_report r;
    fill_report(&r, models, 1);
    r.verdict = GS_VERDICT_UNASSESSABLE;
    r.reason = "out of focus: 27 of 32 sample tiles blurry";
    r.blur_sample_judged = 0; /* e.g. no tissue: the blur check never ran */
    uint8_t thumb[4 * 3 * 3];
    memset(thumb, 200, sizeof thumb);
    r.thumbnail = thumb;
    r.thumb_w = 4;
    r.thumb_h = 3;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/trained", tmp_root);
    gs_report_paths paths;
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    assert_int_equal(paths.regions, 0);
    json_t *j = load(paths.report_json);
    assert_true(json_is_false(json_object_get(j, "untrained")));
    assert_true(json_is_null(json_object_get(j, "notice")));
    assert_true(json_is_null(json_object_get(j, "blurred_fraction")));
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "unassessable");
    assert_true(json_is_null(json_object_get(json_object_get(j, "heatmap"), "cell_level0")));
    json_decref(j);
    j = load(paths.regions_geojson);
    assert_int_equal(json_array_size(json_object_get(j, "features")), 0);
    json_decref(j);
    /* Without a heatmap, heatmap.png is the bare thumbnail. */
    uint8_t *png = NULL;
    int w, h;
    assert_int_equal(gs_png_read(paths.heatmap_png, 3, &png, &w, &h), 0);
    assert_memory_equal(png, thumb, sizeof thumb);
    free(png);
}

/* An unassessable slide judged only by classical methods: no network entry is untrained, so
 * the notice follows the bundle in use (untrained_bundle), not the entries. */
static void classical_only_notice_follows_bundle(void **state)
{
    (void)state;
    const gs_report_model models[] = {
        {.network = "foreground",
         .method = "classical",
         .algorithm = GS_REPORT_CLASSICAL_FOREGROUND,
         .version = "gastroscreen " GS_VERSION},
        {.network = "blur",
         .method = "classical",
         .algorithm = GS_REPORT_CLASSICAL_BLUR,
         .version = "gastroscreen " GS_VERSION},
    };
    gs_report r;
    fill_report(&r, models, 2);
    r.verdict = GS_VERDICT_UNASSESSABLE;
    r.reason = "out of focus: 27 of 32 sample tiles blurry";
    char dir[512];
    snprintf(dir, sizeof dir, "%s/classical-trained", tmp_root);
    gs_report_paths paths;
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    json_t *j = load(paths.report_json);
    assert_true(json_is_false(json_object_get(j, "untrained")));
    assert_true(json_is_null(json_object_get(j, "notice")));
    json_t *m = json_object_get(j, "models");
    assert_int_equal(json_array_size(m), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "network")),
                        "blur");
    assert_non_null(
        strstr(json_string_value(json_object_get(json_array_get(m, 1), "algorithm")), "Laplacian"));
    json_decref(j);

    r.untrained_bundle = 1;
    snprintf(dir, sizeof dir, "%s/classical-untrained", tmp_root);
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    j = load(paths.report_json);
    assert_true(json_is_true(json_object_get(j, "untrained")));
    assert_string_equal(json_string_value(json_object_get(j, "notice")),
                        "model: untrained \xe2\x80\x94 not a diagnosis");
    json_decref(j);
}

static void failed_writes_only_report_json(void **state)
{
    (void)state;
    gs_report r;
    fill_report(&r, NULL, 0);
    r.verdict = GS_VERDICT_FAILED;
    r.reason = "slide.svs: Bogus marker length";
    gs_heatmap *h = known_heatmap(); /* ignored for a failed slide */
    r.heatmap = h;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/failed", tmp_root);
    gs_report_paths paths;
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    char names[256];
    list_dir(dir, names, sizeof names);
    assert_string_equal(names, "report.json");
    assert_string_equal(paths.heatmap_png, "");
    assert_string_equal(paths.regions_geojson, "");
    json_t *j = load(paths.report_json);
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "failed");
    assert_string_equal(json_string_value(json_object_get(j, "reason")),
                        "slide.svs: Bogus marker length");
    assert_true(json_is_null(json_object_get(j, "heatmap")));
    assert_true(json_is_null(json_object_get(j, "regions")));
    assert_true(json_is_false(json_object_get(j, "untrained")));
    json_decref(j);
    gs_heatmap_destroy(&h);
}

static void heatmap_without_thumbnail(void **state)
{
    (void)state;
    gs_report r;
    fill_report(&r, NULL, 0);
    gs_heatmap *h = known_heatmap();
    r.heatmap = h;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/nothumb", tmp_root);
    gs_report_paths paths;
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    uint8_t *png = NULL;
    int w, hh;
    assert_int_equal(gs_png_read(paths.heatmap_png, 3, &png, &w, &hh), 0);
    assert_int_equal(w, 16); /* one pixel per cell */
    assert_int_equal(hh, 12);
    const uint8_t *b = png + (8 * 16 + 10) * 3; /* region B: red over white */
    assert_int_equal(b[0], 255);
    assert_int_equal(b[1], lround(0.55 * 255));
    free(png);
    gs_heatmap_destroy(&h);
}

/* Every feature of a GeoJSON file as QuPath reads it: a UUID id, a Polygon of closed rings, an
 * objectType QuPath knows, measurements an object of finite numbers. Appends the ids to ids
 * (space-separated) and returns the number of features. */
static size_t check_qupath_features(json_t *fc, const char *type, char *ids, size_t cap)
{
    assert_string_equal(json_string_value(json_object_get(fc, "type")), "FeatureCollection");
    json_t *fs = json_object_get(fc, "features");
    assert_true(json_is_array(fs));
    for (size_t i = 0; i < json_array_size(fs); i++) {
        json_t *f = json_array_get(fs, i), *p = json_object_get(f, "properties");
        const char *id = json_string_value(json_object_get(f, "id"));
        assert_true(is_uuid(id));
        assert_true(strlen(ids) + 38 < cap);
        strcat(ids, id);
        strcat(ids, " ");
        assert_string_equal(json_string_value(json_object_get(p, "objectType")), type);
        if (!strcmp(type, "annotation"))
            assert_true(json_is_true(json_object_get(p, "isLocked")));
        json_t *g = json_object_get(f, "geometry");
        assert_string_equal(json_string_value(json_object_get(g, "type")), "Polygon");
        json_t *rings = json_object_get(g, "coordinates");
        for (size_t k = 0; k < json_array_size(rings); k++) {
            json_t *ring = json_array_get(rings, k);
            assert_true(json_array_size(ring) >= 4);
            assert_true(json_equal(json_array_get(ring, 0),
                                   json_array_get(ring, json_array_size(ring) - 1)));
        }
        /* Out-of-focus tiles carry none; a region and a heat-map cell their scores. */
        json_t *ms = json_object_get(p, "measurements");
        const char *cls =
            json_string_value(json_object_get(json_object_get(p, "classification"), "name"));
        if (!strcmp(type, "tile") || !strcmp(cls, GS_REPORT_REGION_CLASS))
            assert_true(json_is_object(ms) && json_object_size(ms) > 0);
        const char *key;
        json_t *v;
        json_object_foreach(ms, key, v)
        {
            assert_true(json_is_number(v));
            assert_true(isfinite(json_number_value(v)));
        }
    }
    return json_array_size(fs);
}

/* A slide with OpenSlide bounds: the GeoJSON files are offset by the bounds' corner, carry
 * the provenance and the untrained notice, the heat map as "tile" objects, and ids that
 * repeat when the same report is written again but not for another slide id. */
static void qupath_outputs(void **state)
{
    (void)state;
    const gs_report_model models[] = {{.network = "multitask",
                                       .method = "network",
                                       .bundle = "default.safetensors",
                                       .sha256 = "ab12",
                                       .trained_on = "untrained",
                                       .untrained = 1}};
    gs_report r;
    fill_report(&r, models, 1);
    gs_heatmap *h = known_heatmap();
    r.heatmap = h;
    assert_int_equal(gs_report_origin("64", "32", &r.origin_x, &r.origin_y), 0);
    static const gs_report_box blurry[] = {{512, 0, 256}};
    r.blurry = blurry;
    r.n_blurry = 1;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/qupath", tmp_root);
    gs_report_paths paths;
    if (gs_report_write(&r, dir, &paths) != 0)
        fail_msg("%s", gs_error_get());
    assert_int_equal(paths.tiles, 16 * 12); /* every cell of the 4x3 inferred tiles */

    static char ids1[65536], ids2[65536], ids3[65536];
    json_t *g = load(paths.regions_geojson);
    assert_int_equal(check_qupath_features(g, "annotation", ids1, sizeof ids1), 3);
    json_t *md = json_object_get(g, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "notice")),
                        GS_REPORT_UNTRAINED_NOTICE);
    assert_string_equal(json_string_value(json_object_get(md, "slide_id")), "s-0001");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(md, "models"), 0), "sha256")),
                        "ab12");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(md, "origin_level0"), 0)),
                     64);
    /* Region B, level-0 corner (704, 512), less the origin (64, 32). */
    json_t *b = json_array_get(json_object_get(g, "features"), 1);
    json_t *p0 = json_array_get(
        json_array_get(json_object_get(json_object_get(b, "geometry"), "coordinates"), 0), 0);
    assert_true(json_real_value(json_array_get(p0, 0)) == 640.0);
    assert_true(json_real_value(json_array_get(p0, 1)) == 480.0);
    /* The out-of-focus tile at level-0 (512, 0): its first corner offset the same way. */
    json_t *oof = json_array_get(json_object_get(g, "features"), 2);
    p0 = json_array_get(
        json_array_get(json_object_get(json_object_get(oof, "geometry"), "coordinates"), 0), 0);
    assert_int_equal(json_integer_value(json_array_get(p0, 0)), 448);
    assert_int_equal(json_integer_value(json_array_get(p0, 1)), -32);
    json_decref(g);

    json_t *t = load_gz(paths.tiles_geojson);
    assert_non_null(t);
    assert_int_equal(check_qupath_features(t, "tile", ids1, sizeof ids1), 16 * 12);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(t, "metadata"), "notice")),
        GS_REPORT_UNTRAINED_NOTICE);
    /* Row-major: feature 8 * 16 + 10 is region B's cell, score 1, at (576, 480)-(640, 544). */
    json_t *cell = json_array_get(json_object_get(t, "features"), 8 * 16 + 10);
    json_t *m = json_object_get(json_object_get(cell, "properties"), "measurements");
    assert_true(json_number_value(json_object_get(m, GS_REPORT_M_SCORE)) == 1.0);
    json_t *ring =
        json_array_get(json_object_get(json_object_get(cell, "geometry"), "coordinates"), 0);
    assert_true(json_number_value(json_array_get(json_array_get(ring, 0), 0)) == 576.0);
    assert_true(json_number_value(json_array_get(json_array_get(ring, 2), 1)) == 544.0);
    /* A background cell's score: 25 / 255. */
    m = json_object_get(
        json_object_get(json_array_get(json_object_get(t, "features"), 0), "properties"),
        "measurements");
    assert_true(fabs(json_number_value(json_object_get(m, GS_REPORT_M_SCORE)) - 25 / 255.0) < 1e-6);
    json_decref(t);
    json_t *rep = load(paths.report_json);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(rep, "heatmap"), "tiles_file")),
        "tiles.geojson.gz");
    json_decref(rep);

    /* Every id differs from every other. */
    size_t n = 0;
    for (char *a = ids1; *a; a += 37, n++)
        for (char *c = a + 37; *c; c += 37)
            assert_false(!strncmp(a, c, 36));
    assert_int_equal(n, 3 + 16 * 12);

    /* The same report again: the same ids. */
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    g = load(paths.regions_geojson);
    check_qupath_features(g, "annotation", ids2, sizeof ids2);
    json_decref(g);
    t = load_gz(paths.tiles_geojson);
    check_qupath_features(t, "tile", ids2, sizeof ids2);
    json_decref(t);
    assert_string_equal(ids1, ids2);

    /* Another slide id (another screening): no id in common. */
    r.slide_id = "s-0002";
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    g = load(paths.regions_geojson);
    check_qupath_features(g, "annotation", ids3, sizeof ids3);
    json_decref(g);
    t = load_gz(paths.tiles_geojson);
    check_qupath_features(t, "tile", ids3, sizeof ids3);
    json_decref(t);
    for (char *a = ids1; *a; a += 37) {
        char one[37];
        memcpy(one, a, 36);
        one[36] = '\0';
        assert_null(strstr(ids3, one));
    }
    gs_heatmap_destroy(&h);
}

/* A heat map of more cells than GS_REPORT_TILES_MAX: tiles of 2 x 2 cells, scored by their
 * cells' mean and highest value. */
static void tiles_of_blocks(void **state)
{
    (void)state;
    gs_heatmap *h = known_heatmap(); /* 16 x 12 cells, all with data */
    assert_int_equal(gs_report_tile_cells(h, 192), 1);
    assert_int_equal(gs_report_tile_cells(h, 0), 1);
    assert_int_equal(gs_report_tile_cells(h, 100), 2); /* 8 x 6 blocks */
    assert_int_equal(gs_report_tile_cells(h, 48), 2);
    assert_int_equal(gs_report_tile_cells(h, 47), 3); /* 6 x 4 blocks */
    gs_heatmap_destroy(&h);

    enum { SIDE = 500 }; /* 250 000 one-pixel cells */
    h = gs_heatmap_new(SIDE, SIDE, 1);
    assert_non_null(h);
    uint8_t *map = malloc(SIDE * SIDE);
    assert_non_null(map);
    for (int y = 0; y < SIDE; y++)
        for (int x = 0; x < SIDE; x++)
            map[y * SIDE + x] = x % 2 ? 255 : 0; /* columns: few regions, cheap to trace */
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, SIDE, map, SIDE), SIDE * SIDE);
    free(map);
    assert_int_equal(gs_report_tile_cells(h, GS_REPORT_TILES_MAX), 2);
    gs_report r;
    fill_report(&r, NULL, 0);
    r.width = r.height = SIDE;
    r.heatmap = h;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/blocks", tmp_root);
    gs_report_paths paths;
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    assert_int_equal(paths.tiles, (SIDE / 2) * (SIDE / 2));
    json_t *t = load_gz(paths.tiles_geojson);
    assert_non_null(t);
    assert_true(json_number_value(json_object_get(json_object_get(t, "metadata"), "tile_level0")) ==
                2.0);
    json_t *f = json_array_get(json_object_get(t, "features"), 1); /* block (1, 0) */
    json_t *m = json_object_get(json_object_get(f, "properties"), "measurements");
    assert_true(json_number_value(json_object_get(m, GS_REPORT_M_SCORE)) == 0.5);
    assert_true(json_number_value(json_object_get(m, GS_REPORT_M_MAX)) == 1.0);
    json_t *ring =
        json_array_get(json_object_get(json_object_get(f, "geometry"), "coordinates"), 0);
    assert_true(json_number_value(json_array_get(json_array_get(ring, 0), 0)) == 2.0);
    assert_true(json_number_value(json_array_get(json_array_get(ring, 2), 0)) == 4.0);
    json_decref(t);
    gs_heatmap_destroy(&h);
}

/* The origin QuPath gives a slide from its OpenSlide bounds properties. */
static void origin_from_bounds(void **state)
{
    (void)state;
    int64_t x = -1, y = -1;
    assert_int_equal(gs_report_origin(NULL, NULL, &x, &y), 0);
    assert_true(x == 0 && y == 0);
    assert_int_equal(gs_report_origin("1725", "9042", &x, &y), 0); /* as in a MIRAX file */
    assert_true(x == 1725 && y == 9042);
    assert_int_equal(gs_report_origin("1725", NULL, &x, &y), 0); /* both or neither */
    assert_true(x == 0 && y == 0);
    assert_int_equal(gs_report_origin("0", "0", &x, &y), 0);
    assert_true(x == 0 && y == 0);
    assert_int_equal(gs_report_origin("12.5", "3", &x, &y), -1);
    assert_non_null(strstr(gs_error_get(), "openslide.bounds-x"));
    assert_true(x == 0 && y == 0);
    assert_int_equal(gs_report_origin("3", "-4", &x, &y), -1);
    assert_non_null(strstr(gs_error_get(), "openslide.bounds-y"));
    assert_int_equal(gs_report_origin("", "4", &x, &y), -1);
    assert_int_equal(gs_report_origin("7x", "4", &x, &y), -1);
}

static void bad_reports(void **state)
{
    (void)state;
    gs_report r;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bad", tmp_root);
    fill_report(&r, NULL, 0);
    r.slide_id = NULL;
    assert_int_equal(gs_report_write(&r, dir, NULL), -1);
    fill_report(&r, NULL, 0);
    r.verdict = (gs_verdict_class)9;
    assert_int_equal(gs_report_write(&r, dir, NULL), -1);
    assert_non_null(strstr(gs_error_get(), "verdict"));
    fill_report(&r, NULL, 0);
    r.reason = NULL;
    assert_int_equal(gs_report_write(&r, dir, NULL), -1);
    fill_report(&r, NULL, 0);
    assert_int_equal(gs_report_write(&r, NULL, NULL), -1);
    fill_report(&r, NULL, 0);
    r.n_warnings = 2;
    r.warnings = NULL;
    assert_int_equal(gs_report_write(&r, dir, NULL), -1);
    fill_report(&r, NULL, 0);
    r.reason = "bad \xff utf-8";
    assert_int_equal(gs_report_write(&r, dir, NULL), -1);
    static const gs_report_timing twice[] = {{"infer", 1}, {"infer", 2}};
    fill_report(&r, NULL, 0);
    r.timings = twice;
    r.n_timings = 2;
    assert_int_equal(gs_report_write(&r, dir, NULL), -1);
    /* Nothing half-written was left behind. */
    struct stat st;
    char p[600];
    snprintf(p, sizeof p, "%s/report.json", dir);
    assert_int_equal(stat(p, &st), -1);
    /* A file where the folder should be. */
    snprintf(p, sizeof p, "%s/plainfile", tmp_root);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
    fill_report(&r, NULL, 0);
    assert_int_equal(gs_report_write(&r, p, NULL), -1);
    assert_int_equal(gs_verdict_class_name((gs_verdict_class)0) == NULL, 1);
    assert_string_equal(gs_verdict_class_name(GS_VERDICT_UNASSESSABLE), "unassessable");
}

/* The viewer's overlays: one RGBA pixel per cell, the heat colour where a cell has data and
 * transparent elsewhere; grey over the cells whose centres lie in no tissue tile. */
static void viewer_overlays(void **state)
{
    (void)state;
    gs_report r;
    fill_report(&r, NULL, 0);
    gs_heatmap *h = gs_heatmap_new(1024, 768, 64); /* 16 x 12 cells */
    assert_non_null(h);
    uint8_t map[16];
    for (int i = 0; i < 16; i++)
        map[i] = i == 5 ? 255 : 0;
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, 256, map, 4), 16); /* cells 0..3 x 0..3 */
    const gs_report_box tissue[] = {{512, 256, 256}, {992, 736, 64}};
    r.heatmap = h;
    r.tissue = tissue;
    r.n_tissue = 2;
    r.origin_x = 7;
    r.origin_y = 9;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/overlays", tmp_root);
    gs_report_paths paths;
    if (gs_report_write(&r, dir, &paths) != 0)
        fail_msg("%s", gs_error_get());
    char names[512];
    list_dir(dir, names, sizeof names);
    assert_string_equal(names, "background_overlay.png heatmap.png heatmap_overlay.png "
                               "regions.geojson report.json tiles.geojson.gz");
    uint8_t *px = NULL;
    int w, hh;
    assert_int_equal(gs_png_read(paths.overlay_png, 4, &px, &w, &hh), 0);
    assert_int_equal(w, 16);
    assert_int_equal(hh, 12);
    uint8_t red[3], blue[3];
    gs_heatmap_colour(1.0f, red);
    gs_heatmap_colour(0.0f, blue);
    assert_memory_equal(px + (1 * 16 + 1) * 4, red, 3); /* map value 5 = cell (1, 1) */
    assert_int_equal(px[(1 * 16 + 1) * 4 + 3], 255);
    assert_memory_equal(px + (3 * 16 + 2) * 4, blue, 3);
    assert_int_equal(px[(3 * 16 + 2) * 4 + 3], 255);
    assert_int_equal(px[(0 * 16 + 4) * 4 + 3], 0); /* no data: transparent */
    assert_int_equal(px[(11 * 16 + 15) * 4 + 3], 0);
    free(px);
    assert_int_equal(gs_png_read(paths.background_png, 4, &px, &w, &hh), 0);
    assert_int_equal(w, 16);
    assert_int_equal(hh, 12);
    int grey = 0;
    for (int j = 0; j < 12; j++)
        for (int i = 0; i < 16; i++) {
            int want = !((i >= 8 && i < 12 && j >= 4 && j < 8) || (i == 15 && j == 11));
            assert_int_equal(px[(j * 16 + i) * 4 + 3], want ? 255 : 0);
            grey += want;
        }
    assert_int_equal(grey, 16 * 12 - 17);
    free(px);
    json_t *j = load(paths.report_json);
    json_t *o = json_object_get(j, "overlays");
    assert_true(json_real_value(json_object_get(o, "cell_level0")) == 64.0);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(o, "size"), 0)), 16);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(o, "size"), 1)), 12);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(o, "origin_level0"), 1)), 9);
    assert_string_equal(json_string_value(json_object_get(o, "heatmap")), "heatmap_overlay.png");
    assert_string_equal(json_string_value(json_object_get(o, "background")),
                        "background_overlay.png");
    json_decref(j);

    /* Without tissue tiles there is no background layer; without a heatmap, no overlays. */
    r.n_tissue = 0;
    r.tissue = NULL;
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    assert_string_equal(paths.background_png, "");
    j = load(paths.report_json);
    assert_true(json_is_null(json_object_get(json_object_get(j, "overlays"), "background")));
    json_decref(j);
    r.heatmap = NULL;
    snprintf(dir, sizeof dir, "%s/overlays-none", tmp_root);
    assert_int_equal(gs_report_write(&r, dir, &paths), 0);
    assert_string_equal(paths.overlay_png, "");
    j = load(paths.report_json);
    assert_true(json_is_null(json_object_get(j, "overlays")));
    json_decref(j);
    gs_heatmap_destroy(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(positive_report_round_trip),
        cmocka_unit_test(trained_model_has_no_notice),
        cmocka_unit_test(classical_only_notice_follows_bundle),
        cmocka_unit_test(failed_writes_only_report_json),
        cmocka_unit_test(heatmap_without_thumbnail),
        cmocka_unit_test(bad_reports),
        cmocka_unit_test(qupath_outputs),
        cmocka_unit_test(origin_from_bounds),
        cmocka_unit_test(tiles_of_blocks),
        cmocka_unit_test(viewer_overlays),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
