/* deepzoom: the geometry against openslide-python's DeepZoomGenerator(limit_bounds=True)
 * (tests/unit/deepzoom_reference.py run by /usr/bin/python3) on real slides and on made-up
 * layouts with openslide.bounds-*, the tiles' pixels against the generator's within JPEG
 * noise, out-of-range tiles, the .dzi XML, the byte-bounded LRU cache, and tiles served from
 * several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/slide/deepzoom.h"

static char *read_all(FILE *f)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[len] = 0;
    return buf;
}

/* Output of deepzoom_reference.py MODE ARG, or fails the test. */
static char *reference(const char *mode, const char *arg)
{
    const char *src = getenv("GS_SOURCE_DIR");
    assert_non_null(src);
    char cmd[PATH_MAX * 3];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/unit/deepzoom_reference.py %s '%s'", src,
             mode, arg);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *out = read_all(p);
    int status = pclose(p);
    if (status != 0)
        print_error("%s", out);
    assert_int_equal(status, 0);
    return out;
}

static int chosen(int64_t n, int64_t *v)
{
    if (n <= 20) {
        for (int64_t i = 0; i < n; i++)
            v[i] = i;
        return (int)n;
    }
    int64_t c[5] = {0, 1, n / 2, n - 2, n - 1};
    int k = 0;
    for (int i = 0; i < 5; i++)
        if (k == 0 || c[i] != v[k - 1])
            v[k++] = c[i];
    return k;
}

/* The tiles the reference prints for a level (same rule). */
static int level_tiles(const gs_deepzoom *dz, int level, int64_t *cols_out, int64_t *rows_out)
{
    int64_t cols, rows;
    assert_int_equal(gs_deepzoom_level_tiles(dz, level, &cols, &rows), 0);
    if (cols * rows <= 400) {
        int n = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++, n++) {
                cols_out[n] = c;
                rows_out[n] = r;
            }
        return n;
    }
    int64_t cs[20], rs[20];
    int nc = chosen(cols, cs), nr = chosen(rows, rs), n = 0;
    for (int j = 0; j < nr; j++)
        for (int i = 0; i < nc; i++, n++) {
            cols_out[n] = cs[i];
            rows_out[n] = rs[j];
        }
    return n;
}

/* Our geometry in the reference's text form. */
static char *geometry(const gs_deepzoom *dz)
{
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    int n = gs_deepzoom_level_count(dz);
    len += (size_t)snprintf(out + len, cap - len, "levels %d\n", n);
    for (int k = 0; k < n; k++) {
        int64_t w, h, c, r;
        assert_int_equal(gs_deepzoom_level_size(dz, k, &w, &h), 0);
        assert_int_equal(gs_deepzoom_level_tiles(dz, k, &c, &r), 0);
        len += (size_t)snprintf(out + len, cap - len,
                                "level %d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n", k, w,
                                h, c, r);
    }
    static int64_t cs[400], rs[400];
    for (int k = 0; k < n; k++) {
        int m = level_tiles(dz, k, cs, rs);
        for (int i = 0; i < m; i++) {
            gs_deepzoom_tile_info t;
            assert_int_equal(gs_deepzoom_tile(dz, k, cs[i], rs[i], &t), 0);
            len += (size_t)snprintf(out + len, cap - len,
                                    "tile %d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
                                    " %d %" PRId64 " %" PRId64 " %d %d\n",
                                    k, cs[i], rs[i], t.l0_x, t.l0_y, t.slide_level, t.read_w,
                                    t.read_h, t.w, t.h);
            assert_true(len < cap - 256);
        }
    }
    return out;
}

/* Line-by-line comparison, so a failure names the first line that differs. */
static void same_text(const char *what, const char *ours, const char *ref)
{
    int line = 1;
    while (*ours || *ref) {
        const char *e1 = strchr(ours, '\n'), *e2 = strchr(ref, '\n');
        size_t n1 = e1 ? (size_t)(e1 - ours) : strlen(ours),
               n2 = e2 ? (size_t)(e2 - ref) : strlen(ref);
        if (n1 != n2 || memcmp(ours, ref, n1)) {
            print_error("%s line %d: ours \"%.*s\", openslide-python \"%.*s\"\n", what, line,
                        (int)n1, ours, (int)n2, ref);
            fail();
        }
        ours += n1 + (e1 ? 1 : 0);
        ref += n2 + (e2 ? 1 : 0);
        line++;
    }
}

static void data_path(const char *name, char *out)
{
    const char *data = getenv("GS_TEST_DATA");
    assert_non_null(data);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", data, name);
    assert_non_null(realpath(p, out)); /* the reader wants canonical paths */
}

static void geometry_of(const char *name, const char *path)
{
    gs_deepzoom *dz = gs_deepzoom_open(path, NULL);
    if (!dz)
        print_error("%s\n", gs_error_get());
    assert_non_null(dz);
    char *ours = geometry(dz), *ref = reference("slide", path);
    same_text(name, ours, ref);
    free(ours);
    free(ref);
    gs_deepzoom_destroy(&dz);
    assert_null(dz);
}

static void slide_geometry(const char *name)
{
    char path[PATH_MAX];
    data_path(name, path);
    geometry_of(name, path);
}

static void geometry_matches_openslide_python(void **state)
{
    (void)state;
    slide_geometry("CMU-1-Small-Region.svs"); /* one level, 12 x 9 tiles at full size */
    slide_geometry("boxes.tiff");             /* 4 levels, downsamples 2, 4.016, 8.086 */
    slide_geometry("small.svs");              /* 16 x 16 */
}

/* A made-up slide through both sides. */
static void layout_case(const char *name, int n, const int64_t *w, const int64_t *h,
                        const double *ds, const char *bx, const char *by, const char *bw,
                        const char *bh)
{
    gs_deepzoom_layout ly = {n, w, h, ds, bx, by, bw, bh};
    gs_deepzoom *dz = gs_deepzoom_new_layout(&ly, NULL);
    if (!dz)
        print_error("%s\n", gs_error_get());
    assert_non_null(dz);

    char spec[] = "/tmp/gs_deepzoom_layout_XXXXXX";
    int fd = mkstemp(spec);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "{\"width\": [");
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%" PRId64, i ? "," : "", w[i]);
    fprintf(f, "], \"height\": [");
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%" PRId64, i ? "," : "", h[i]);
    fprintf(f, "], \"downsample\": [");
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.17g", i ? "," : "", ds[i]);
    fprintf(f, "], \"properties\": {");
    const char *names[4] = {"openslide.bounds-x", "openslide.bounds-y", "openslide.bounds-width",
                            "openslide.bounds-height"};
    const char *values[4] = {bx, by, bw, bh};
    int first = 1;
    for (int i = 0; i < 4; i++)
        if (values[i]) {
            fprintf(f, "%s\"%s\": \"%s\"", first ? "" : ",", names[i], values[i]);
            first = 0;
        }
    fprintf(f, "}}\n");
    fclose(f);
    char *ours = geometry(dz), *ref = reference("layout", spec);
    same_text(name, ours, ref);
    unlink(spec);
    free(ours);
    free(ref);

    /* The bounds are the origin of Deep Zoom space, as in the report's GeoJSON. */
    int64_t ox, oy, sw, sh, lw, lh;
    gs_deepzoom_bounds(dz, &ox, &oy, &sw, &sh);
    assert_int_equal(ox, bx ? atoll(bx) : 0);
    assert_int_equal(oy, by ? atoll(by) : 0);
    assert_int_equal(gs_deepzoom_level_size(dz, gs_deepzoom_level_count(dz) - 1, &lw, &lh), 0);
    assert_int_equal(lw, sw);
    assert_int_equal(lh, sh);
    gs_deepzoom_tile_info t;
    assert_int_equal(gs_deepzoom_tile(dz, gs_deepzoom_level_count(dz) - 1, 0, 0, &t), 0);
    assert_int_equal(t.l0_x, ox);
    assert_int_equal(t.l0_y, oy);
    gs_deepzoom_destroy(&dz);
}

static void bounds_match_openslide_python(void **state)
{
    (void)state;
    /* A Leica-like pyramid (steps of 4) with the main image inside a larger collection. */
    const int64_t w1[] = {50000, 12500, 3125}, h1[] = {40000, 10000, 2500};
    const double d1[] = {1, 4, 16};
    layout_case("leica-like", 3, w1, h1, d1, "1234", "567", "30001", "20003");
    /* A MIRAX-like pyramid whose downsamples are not powers of two. */
    const int64_t w2[] = {10001, 5000, 2500, 1250}, h2[] = {7777, 3888, 1944, 972};
    const double d2[] = {1, 2.0002, 4.0004, 8.0008};
    layout_case("mirax-like", 4, w2, h2, d2, "99", "1000", "8000", "5000");
    /* Offsets without sizes (the full level-0 size is kept), and no bounds at all. */
    layout_case("offset-only", 4, w2, h2, d2, "640", "480", NULL, NULL);
    layout_case("no-bounds", 4, w2, h2, d2, NULL, NULL, NULL, NULL);
    const int64_t w3[] = {1}, h3[] = {1};
    const double d3[] = {1};
    layout_case("one-pixel", 1, w3, h3, d3, NULL, NULL, NULL, NULL);

    /* Bounds that OpenSlide never writes are refused, not guessed. */
    gs_deepzoom_layout bad = {4, w2, h2, d2, "1", "2", "-5", "10"};
    assert_null(gs_deepzoom_new_layout(&bad, NULL));
    assert_non_null(strstr(gs_error_get(), "openslide.bounds-width"));
    /* Sizes or offsets beyond level 0 (a damaged file) would overflow the level sizes. */
    const char *huge[][4] = {{"0", "0", "9000000000000000000", "10"},
                             {"0", "0", "10", "7778"},
                             {"10001", "0", "10", "10"},
                             {"0", "9223372036854775807", "10", "10"}};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        gs_deepzoom_layout out = {4, w2, h2, d2, huge[i][0], huge[i][1], huge[i][2], huge[i][3]};
        assert_null(gs_deepzoom_new_layout(&out, NULL));
        assert_non_null(strstr(gs_error_get(), "do not fit the 10001x7777 slide"));
    }
}

/* Writes every chosen tile of every level as DIR/<level>_<col>_<row>.jpeg. */
static int write_tiles(gs_deepzoom *dz, const char *dir)
{
    static int64_t cs[400], rs[400];
    int count = 0;
    for (int k = 0; k < gs_deepzoom_level_count(dz); k++) {
        int m = level_tiles(dz, k, cs, rs);
        for (int i = 0; i < m; i++) {
            uint8_t *jpeg = NULL;
            size_t len = 0;
            int rc = gs_deepzoom_tile_jpeg(dz, k, cs[i], rs[i], &jpeg, &len);
            if (rc != 0)
                print_error("%s\n", gs_error_get());
            assert_int_equal(rc, 0);
            assert_true(len > 100);
            assert_int_equal(jpeg[0], 0xFF);
            assert_int_equal(jpeg[1], 0xD8);
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%d_%" PRId64 "_%" PRId64 ".jpeg", dir, k, cs[i], rs[i]);
            FILE *f = fopen(p, "wb");
            assert_non_null(f);
            assert_int_equal(fwrite(jpeg, 1, len, f), len);
            fclose(f);
            free(jpeg);
            count++;
        }
    }
    return count;
}

/* The slide's chosen tiles as JPEG files, judged by the reference (exit 1 fails the test). */
static void pixels_of(const char *name, const char *path)
{
    gs_deepzoom *dz = gs_deepzoom_open(path, NULL);
    assert_non_null(dz);
    char dir[] = "/tmp/gs_deepzoom_tiles_XXXXXX";
    assert_non_null(mkdtemp(dir));
    int n = write_tiles(dz, dir);
    assert_true(n > 0);
    char arg[PATH_MAX * 2 + 8];
    snprintf(arg, sizeof arg, "%s' '%s", path, dir);
    char *out = reference("compare", arg);
    print_message("%s (%d tiles): %s", name, n, out);
    free(out);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    gs_deepzoom_destroy(&dz);
}

static void pixels_match_openslide_python(void **state)
{
    (void)state;
    const char *names[] = {"CMU-1-Small-Region.svs", "boxes.tiff"};
    for (size_t i = 0; i < 2; i++) {
        char path[PATH_MAX];
        data_path(names[i], path);
        pixels_of(names[i], path);
    }
}

/* A real file with OpenSlide bounds: a Leica SCN made from the sample slide at test time
 * (tests/tools/make_bounds_slide.py: bounds 320, 192 inside a canvas 448 px larger on every
 * side), so the bounds rule is checked on pixels as well as on made-up layouts. */
static void bounds_slide_matches_openslide_python(void **state)
{
    (void)state;
    const char *src = getenv("GS_SOURCE_DIR");
    assert_non_null(src);
    char sample[PATH_MAX], dir[] = "/tmp/gs_deepzoom_scn_XXXXXX", path[PATH_MAX + 16];
    data_path("CMU-1-Small-Region.svs", sample);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/bounds.scn", dir);
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/tools/make_bounds_slide.py' '%s' '%s' --offset-x 320 "
             "--offset-y 192",
             src, sample, path);
    assert_int_equal(system(cmd), 0);
    gs_deepzoom *dz = gs_deepzoom_open(path, NULL);
    assert_non_null(dz);
    int64_t x, y, w, h;
    gs_deepzoom_bounds(dz, &x, &y, &w, &h);
    assert_true(x == 320 && y == 192 && w == 2220 && h == 2967);
    assert_int_equal(gs_deepzoom_level_size(dz, gs_deepzoom_level_count(dz) - 1, &w, &h), 0);
    assert_true(w == 2220 && h == 2967); /* the bounds, not the 3116 x 3863 canvas */
    gs_deepzoom_destroy(&dz);
    geometry_of("bounds.scn", path);
    pixels_of("bounds.scn", path);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void out_of_range_and_dzi(void **state)
{
    (void)state;
    char path[PATH_MAX];
    data_path("CMU-1-Small-Region.svs", path);
    gs_deepzoom *dz = gs_deepzoom_open(path, NULL);
    assert_non_null(dz);
    int top = gs_deepzoom_level_count(dz) - 1;
    int64_t cols, rows;
    assert_int_equal(gs_deepzoom_level_tiles(dz, top, &cols, &rows), 0);
    assert_int_equal(cols, 9);  /* 2220 / 254 */
    assert_int_equal(rows, 12); /* 2967 / 254 */
    uint8_t *jpeg = (uint8_t *)"x";
    size_t len = 7;
    const int64_t bad[][3] = {{-1, 0, 0},   {top + 1, 0, 0}, {top, cols, 0}, {top, 0, rows},
                              {top, -1, 0}, {top, 0, -1},    {0, 1, 0},      {top, INT64_MAX, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(
            gs_deepzoom_tile_jpeg(dz, (int)bad[i][0], bad[i][1], bad[i][2], &jpeg, &len),
            GS_DEEPZOOM_NO_TILE);
        assert_null(jpeg);
        assert_non_null(strstr(gs_error_get(), "no tile"));
    }
    assert_int_equal(gs_deepzoom_level_size(dz, top + 1, NULL, NULL), GS_DEEPZOOM_NO_TILE);
    char *xml = gs_deepzoom_dzi(dz);
    assert_non_null(xml);
    assert_non_null(strstr(xml, "xmlns=\"http://schemas.microsoft.com/deepzoom/2008\""));
    assert_non_null(strstr(xml, "Format=\"jpeg\" Overlap=\"1\" TileSize=\"254\""));
    assert_non_null(strstr(xml, "<Size Height=\"2967\" Width=\"2220\"/>"));
    free(xml);
    gs_deepzoom_destroy(&dz);

    /* The reader's path checks apply: a symbolic link is not a canonical path. */
    char link[] = "/tmp/gs_deepzoom_link_XXXXXX";
    int fd = mkstemp(link);
    assert_true(fd >= 0);
    close(fd);
    unlink(link);
    assert_int_equal(symlink(path, link), 0);
    assert_null(gs_deepzoom_open(link, NULL));
    assert_non_null(strstr(gs_error_get(), "canonical"));
    unlink(link);
}

static size_t jpeg_len(gs_deepzoom *dz, int level, int64_t c, int64_t r)
{
    uint8_t *jpeg;
    size_t len;
    assert_int_equal(gs_deepzoom_tile_jpeg(dz, level, c, r, &jpeg, &len), 0);
    free(jpeg);
    return len;
}

static void cache_is_lru_and_bounded(void **state)
{
    (void)state;
    char path[PATH_MAX];
    data_path("CMU-1-Small-Region.svs", path);
    gs_deepzoom_options o;
    gs_deepzoom_options_default(&o);
    o.cache_bytes = 0;
    gs_deepzoom *plain = gs_deepzoom_open(path, &o);
    assert_non_null(plain);
    int top = gs_deepzoom_level_count(plain) - 1;
    size_t a = jpeg_len(plain, top, 3, 3), b = jpeg_len(plain, top, 4, 4),
           c = jpeg_len(plain, top, 5, 5);
    size_t bytes, entries;
    uint64_t hits, misses;
    gs_deepzoom_cache_stats(plain, &bytes, &entries, &hits, &misses);
    assert_int_equal(bytes, 0);
    assert_int_equal(entries, 0);
    gs_deepzoom_destroy(&plain);

    /* Room for all three less one byte: adding C evicts exactly one tile, the least recently
     * used one, which is B once A has been asked for again. */
    o.cache_bytes = a + b + c - 1;
    gs_deepzoom *dz = gs_deepzoom_open(path, &o);
    assert_non_null(dz);
    jpeg_len(dz, top, 3, 3);
    jpeg_len(dz, top, 4, 4);
    jpeg_len(dz, top, 3, 3); /* hit; A becomes the newest */
    jpeg_len(dz, top, 5, 5);
    gs_deepzoom_cache_stats(dz, &bytes, &entries, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 3);
    assert_int_equal(entries, 2);
    assert_int_equal(bytes, a + c);
    jpeg_len(dz, top, 3, 3); /* still cached */
    gs_deepzoom_cache_stats(dz, NULL, NULL, &hits, &misses);
    assert_int_equal(hits, 2);
    jpeg_len(dz, top, 4, 4); /* was evicted */
    gs_deepzoom_cache_stats(dz, &bytes, NULL, &hits, &misses);
    assert_int_equal(hits, 2);
    assert_int_equal(misses, 4);
    assert_true(bytes <= o.cache_bytes);

    /* Every tile of the level through a small cache: never above the bound. */
    int64_t cols, rows;
    gs_deepzoom_level_tiles(dz, top, &cols, &rows);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t col = 0; col < cols; col++) {
            jpeg_len(dz, top, col, r);
            gs_deepzoom_cache_stats(dz, &bytes, NULL, NULL, NULL);
            assert_true(bytes <= o.cache_bytes);
        }
    gs_deepzoom_destroy(&dz);
}

typedef struct {
    gs_deepzoom *dz;
    int level;
    int64_t cols, rows;
    uint8_t **want;
    size_t *want_len;
    int bad;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *w = p;
    for (int pass = 0; pass < 3; pass++)
        for (int64_t i = 0; i < w->cols * w->rows; i++) {
            uint8_t *jpeg;
            size_t len;
            if (gs_deepzoom_tile_jpeg(w->dz, w->level, i % w->cols, i / w->cols, &jpeg, &len) !=
                    0 ||
                len != w->want_len[i] || memcmp(jpeg, w->want[i], len))
                w->bad++;
            free(jpeg);
        }
    return NULL;
}

static void threads_get_the_same_tiles(void **state)
{
    (void)state;
    char path[PATH_MAX];
    data_path("CMU-1-Small-Region.svs", path);
    gs_deepzoom_options o;
    gs_deepzoom_options_default(&o);
    o.cache_bytes = 200000; /* smaller than the level: evictions while others read */
    gs_deepzoom *dz = gs_deepzoom_open(path, &o);
    assert_non_null(dz);
    int level = gs_deepzoom_level_count(dz) - 2;
    int64_t cols, rows;
    gs_deepzoom_level_tiles(dz, level, &cols, &rows);
    size_t n = (size_t)(cols * rows);
    uint8_t **want = calloc(n, sizeof *want);
    size_t *want_len = calloc(n, sizeof *want_len);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(gs_deepzoom_tile_jpeg(dz, level, (int64_t)i % cols, (int64_t)i / cols,
                                               &want[i], &want_len[i]),
                         0);
    pthread_t t[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){dz, level, cols, rows, want, want_len, 0};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    for (size_t i = 0; i < n; i++)
        free(want[i]);
    free(want);
    free(want_len);
    gs_deepzoom_destroy(&dz);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(geometry_matches_openslide_python),
        cmocka_unit_test(bounds_match_openslide_python),
        cmocka_unit_test(pixels_match_openslide_python),
        cmocka_unit_test(bounds_slide_matches_openslide_python),
        cmocka_unit_test(out_of_range_and_dzi),
        cmocka_unit_test(cache_is_lru_and_bounded),
        cmocka_unit_test(threads_get_the_same_tiles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
