/*
 * Which file a stage reads, and how much work a plan may take (stages/slide/reader,
 * stages/slide/tissue, stages/handlers/foreground and tiler): FIFOs, devices and folders are
 * refused without being opened; with the coordinator's identity a path that stopped being
 * canonical (a folder swapped for a symbolic link) or a file replaced after intake is refused
 * naming the change, before OpenSlide opens it and after; a slide declaring a huge size with
 * no small level is refused before a pixel is read, and a read past the plan's deadline stops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/handlers/foreground.h"
#include "stages/handlers/reporter.h"
#include "stages/handlers/tiler.h"
#include "stages/runtime/fileio.h"
#include "stages/slide/reader.h"
#include "stages/slide/tissue.h"

/* ---- helpers ---- */

static void data_path(char *out, size_t n, const char *rel)
{
    const char *d = getenv("GS_TEST_DATA");
    assert_non_null(d);
    snprintf(out, n, "%s/%s", d, rel);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    assert_non_null(in);
    FILE *out = fopen(to, "wb");
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* Puts test data file `rel` at `to` by writing a temporary beside it and renaming it over:
 * the way a slide is replaced by another (a new inode at the same path). */
static void replace_with(const char *rel, const char *to)
{
    char src[PATH_MAX], tmp[PATH_MAX + 8];
    data_path(src, sizeof src, rel);
    snprintf(tmp, sizeof tmp, "%s.tmp", to);
    copy_file(src, tmp);
    assert_int_equal(rename(tmp, to), 0);
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

#define assert_error_contains(needle)                                                              \
    do {                                                                                           \
        if (!contains(gs_error_get(), needle))                                                     \
            fail_msg("error \"%s\" lacks \"%s\"", gs_error_get(), needle);                         \
    } while (0)

typedef struct {
    char dir[PATH_MAX]; /* canonical scratch folder */
} scratch;

static void scratch_new(scratch *s)
{
    char tmpl[] = "/tmp/gs_test_identity_XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char *real = realpath(tmpl, NULL);
    assert_non_null(real);
    snprintf(s->dir, sizeof s->dir, "%s", real);
    free(real);
}

static void scratch_free(scratch *s)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    assert_int_equal(system(cmd), 0);
}

static gs_slide_expect expect_of(const char *path, const char *quickhash)
{
    gs_slide_expect e = {.quickhash = quickhash};
    assert_int_equal(gs_file_identify(path, &e.identity), 0);
    return e;
}

/* ---- not a regular file ---- */

static void fifo_device_and_folder_are_refused_unopened(void **state)
{
    (void)state;
    scratch s;
    scratch_new(&s);
    char fifo[PATH_MAX + 16];
    snprintf(fifo, sizeof fifo, "%s/slide.svs", s.dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    /* Opening a FIFO for reading blocks until a writer comes: a stage that opened it would
     * hang here (the test with it). */
    assert_null(gs_slide_open(fifo, NULL));
    assert_error_contains("not a regular file (a FIFO)");
    assert_null(gs_slide_open_checked(fifo, NULL, NULL));
    assert_error_contains("a FIFO");
    gs_file_identity id;
    assert_int_equal(gs_file_identify(fifo, &id), -1);
    assert_error_contains("a FIFO");

    assert_null(gs_slide_open("/dev/null", NULL));
    assert_error_contains("a character device");
    assert_null(gs_slide_open(s.dir, NULL));
    assert_error_contains("a folder");
    assert_null(gs_slide_open_checked(s.dir, NULL, NULL));
    assert_error_contains("a folder");

    /* The plan job of a FIFO is answered with the reason, never hangs the stage. */
    Gastroscreen__V1__PlanJob job = GASTROSCREEN__V1__PLAN_JOB__INIT;
    Gastroscreen__V1__SlideIdentity sid = GASTROSCREEN__V1__SLIDE_IDENTITY__INIT;
    job.slide_id = "0123456789abcdef";
    job.attempt = 1;
    job.path = fifo;
    job.identity = &sid;
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, NULL, "fg.1");
    assert_non_null(r);
    assert_true(contains(r->error, "a FIFO"));
    gs_foreground_result_free(&r);
    scratch_free(&s);
}

/* ---- the file accepted, and no other ---- */

static void symlink_swapped_into_the_path_is_refused(void **state)
{
    (void)state;
    scratch s;
    scratch_new(&s);
    char dir[PATH_MAX + 16], path[PATH_MAX + 32], outside[PATH_MAX + 16], other[PATH_MAX + 32],
        moved[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/roots", s.dir);
    snprintf(outside, sizeof outside, "%s/outside", s.dir);
    snprintf(moved, sizeof moved, "%s/roots.old", s.dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(outside, 0700), 0);
    snprintf(path, sizeof path, "%s/slide.svs", dir);
    snprintf(other, sizeof other, "%s/slide.svs", outside);
    replace_with("small.svs", path);
    replace_with("CMU-1-Small-Region.svs", other);
    /* Accepted: the canonical path and its identity. */
    gs_slide_expect e = expect_of(path, NULL);
    gs_slide *sl = gs_slide_open_checked(path, NULL, &e);
    assert_non_null(sl);
    gs_slide_destroy(&sl);

    /* The folder is swapped for a link out of the roots after intake. */
    assert_int_equal(rename(dir, moved), 0);
    assert_int_equal(symlink(outside, dir), 0);
    assert_null(gs_slide_open_checked(path, NULL, &e));
    assert_error_contains("not a canonical path");
    assert_error_contains(other);
    /* Even with no identity to compare, the service's open refuses a link in the path. */
    assert_null(gs_slide_open_checked(path, NULL, NULL));
    assert_error_contains("not a canonical path");

    /* The tiler fails every tile with the reason instead of reading the other slide. */
    Gastroscreen__V1__TileJob tj = GASTROSCREEN__V1__TILE_JOB__INIT;
    Gastroscreen__V1__TileGrid g = GASTROSCREEN__V1__TILE_GRID__INIT;
    Gastroscreen__V1__BlurJob bj = GASTROSCREEN__V1__BLUR_JOB__INIT;
    Gastroscreen__V1__TileRef ref = GASTROSCREEN__V1__TILE_REF__INIT, *refs[1] = {&ref};
    Gastroscreen__V1__SlideIdentity sid = GASTROSCREEN__V1__SLIDE_IDENTITY__INIT;
    sid.device = e.identity.dev;
    sid.inode = e.identity.ino;
    sid.size = e.identity.size;
    sid.mtime_ns = e.identity.mtime_ns;
    g.level_downsample = 1;
    g.tile_size = 64;
    g.target_mpp = 0.5;
    g.window_level0 = g.stride_level0 = 128;
    tj.slide_id = "0123456789abcdef";
    tj.attempt = 1;
    tj.job_id = 1;
    tj.path = path;
    tj.grid = &g;
    tj.n_tiles = 1;
    tj.tiles = refs;
    tj.request = 1;
    tj.job_case = GASTROSCREEN__V1__TILE_JOB__JOB_BLUR;
    tj.blur = &bj;
    tj.identity = &sid;
    gs_tiler_job *j = gs_tiler_job_new(&tj, "tiler.1");
    assert_non_null(j);
    gs_tiler_item it;
    assert_int_equal(gs_tiler_job_next(j, &it), 1);
    assert_int_equal(it.failed, 1);
    assert_true(contains(it.error, "not a canonical path"));
    gs_tiler_item_release(&it);
    gs_tiler_job_destroy(&j);
    scratch_free(&s);
}

static void file_replaced_after_intake_is_named(void **state)
{
    (void)state;
    scratch s;
    scratch_new(&s);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/slide.svs", s.dir);
    replace_with("small.svs", path);
    gs_slide_expect e = expect_of(path, NULL);
    gs_slide *sl = gs_slide_open_checked(path, NULL, &e);
    assert_non_null(sl);
    char quickhash[256];
    snprintf(quickhash, sizeof quickhash, "%s", gs_slide_quickhash(sl));
    assert_true(quickhash[0] != '\0');
    assert_int_equal(gs_slide_recheck(sl), 0);

    /* Replaced while open (OpenSlide re-opens by path): the re-check says so. */
    replace_with("CMU-1-Small-Region.svs", path);
    assert_int_equal(gs_slide_recheck(sl), -1);
    assert_error_contains("slide file changed after intake: inode");
    gs_slide_destroy(&sl);

    /* Replaced before the stage opens it: refused before OpenSlide sees it. */
    e.quickhash = quickhash;
    assert_null(gs_slide_open_checked(path, NULL, &e));
    assert_error_contains("slide file changed after intake: inode");
    char want[64];
    snprintf(want, sizeof want, "inode %llu -> ", (unsigned long long)e.identity.ino);
    assert_error_contains(want);

    /* The same inode with other content (written in place): size, then the quickhash. */
    gs_slide_expect now = expect_of(path, NULL);
    now.identity.size += 1;
    assert_null(gs_slide_open_checked(path, NULL, &now));
    assert_error_contains("size");
    now = expect_of(path, quickhash);
    assert_null(gs_slide_open_checked(path, NULL, &now));
    assert_error_contains("slide content changed after planning: quickhash");

    /* A plan job with the old identity is answered with the change. */
    Gastroscreen__V1__PlanJob job = GASTROSCREEN__V1__PLAN_JOB__INIT;
    Gastroscreen__V1__SlideIdentity sid = GASTROSCREEN__V1__SLIDE_IDENTITY__INIT;
    sid.device = e.identity.dev;
    sid.inode = e.identity.ino;
    sid.size = e.identity.size;
    sid.mtime_ns = e.identity.mtime_ns;
    job.slide_id = "0123456789abcdef";
    job.attempt = 1;
    job.path = path;
    job.identity = &sid;
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, NULL, "fg.1");
    assert_non_null(r);
    assert_true(contains(r->error, "slide file changed after intake: inode"));
    gs_foreground_result_free(&r);
    /* Its current identity plans. */
    gs_slide_expect cur = expect_of(path, NULL);
    sid.device = cur.identity.dev;
    sid.inode = cur.identity.ino;
    sid.size = cur.identity.size;
    sid.mtime_ns = cur.identity.mtime_ns;
    r = gs_foreground_plan(&job, NULL, "fg.1");
    assert_non_null(r);
    assert_string_equal(r->error, "");
    assert_non_null(r->facts);
    gs_foreground_result_free(&r);

    /* The CLI's plain open follows links and checks nothing more. */
    char link[PATH_MAX + 16];
    snprintf(link, sizeof link, "%s/link.svs", s.dir);
    assert_int_equal(symlink(path, link), 0);
    sl = gs_slide_open(link, NULL);
    assert_non_null(sl);
    gs_slide_destroy(&sl);
    assert_null(gs_slide_open_checked(link, NULL, NULL));
    assert_error_contains("not a canonical path");
    scratch_free(&s);
}

/* The report shows the thumbnail under the verdict: never another slide's. */
static void report_of_a_replaced_file_fails(void **state)
{
    (void)state;
    scratch s;
    scratch_new(&s);
    char path[PATH_MAX + 16], out[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/slide.svs", s.dir);
    snprintf(out, sizeof out, "%s/report", s.dir);
    replace_with("small.svs", path);
    gs_slide_expect e = expect_of(path, NULL);
    Gastroscreen__V1__SlideIdentity sid = GASTROSCREEN__V1__SLIDE_IDENTITY__INIT;
    sid.device = e.identity.dev;
    sid.inode = e.identity.ino;
    sid.size = e.identity.size;
    sid.mtime_ns = e.identity.mtime_ns;
    Gastroscreen__V1__Verdict v = GASTROSCREEN__V1__VERDICT__INIT;
    v.slide_id = "0123456789abcdef";
    v.attempt = 1;
    v.path = path;
    v.verdict_class = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE;
    v.reason = "";
    Gastroscreen__V1__ReportJob job = GASTROSCREEN__V1__REPORT_JOB__INIT;
    job.slide_id = v.slide_id;
    job.attempt = 1;
    job.job_id = 3;
    job.path = path;
    job.out_dir = out;
    job.verdict = &v;
    job.heatmap_size = 16;
    job.identity = &sid;
    gs_reporter_options o;
    gs_reporter_options_default(&o);
    o.thumbnail_size = 16;
    gs_report_result *res = malloc(sizeof *res);
    assert_non_null(res);
    /* The file accepted: the report is written. */
    assert_int_equal(gs_reporter_write(&job, &o, NULL, res), 0);
    if (res->r.error && res->r.error[0])
        fail_msg("reporter: %s", res->r.error);
    /* Replaced: the report fails naming the change. */
    replace_with("CMU-1-Small-Region.svs", path);
    assert_int_equal(gs_reporter_write(&job, &o, NULL, res), 0);
    assert_non_null(res->r.error);
    if (!contains(res->r.error, "slide file changed after intake: inode"))
        fail_msg("reporter error \"%s\"", res->r.error);
    free(res);
    scratch_free(&s);
}

/* ---- work caps ---- */

static void reads_stop_at_the_deadline(void **state)
{
    (void)state;
    char path[PATH_MAX];
    data_path(path, sizeof path, "small.svs");
    gs_slide *sl = gs_slide_open(path, NULL);
    assert_non_null(sl);
    uint8_t px[16 * 16 * 3];
    gs_slide_set_deadline(sl, gs_mono_us() - 1, 7);
    assert_int_equal(gs_slide_read_region(sl, 0, 0, 0, 16, 16, px), -1);
    assert_error_contains("time budget of 7 s exceeded");
    /* Not a failure of the slide: without the deadline it reads again. */
    gs_slide_set_deadline(sl, 0, 0);
    assert_int_equal(gs_slide_read_region(sl, 0, 0, 0, 16, 16, px), 0);
    gs_slide_destroy(&sl);
}

static void thumbnail_source_and_level0_caps(void **state)
{
    (void)state;
    char path[PATH_MAX];
    data_path(path, sizeof path, "small.svs");
    gs_slide *sl = gs_slide_open(path, NULL);
    assert_non_null(sl);
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    assert_int_equal(gs_slide_thumbnail_capped(sl, 64, 100, &rgb, &w, &h), -1);
    assert_null(rgb);
    assert_error_contains("too large to plan");
    assert_int_equal(gs_slide_thumbnail_capped(sl, 64, 0, &rgb, &w, &h), 0);
    free(rgb);
    gs_tissue_options o;
    gs_tissue_options_default(&o);
    assert_int_equal(gs_plan_read_thumbnail(sl, &o, &rgb, &w, &h), 0); /* defaults pass */
    free(rgb);
    o.max_level0_pixels = 100; /* small.svs is 16 x 16 */
    assert_int_equal(gs_plan_read_thumbnail(sl, &o, &rgb, &w, &h), -1);
    assert_error_contains("pixels at level 0");
    gs_slide_destroy(&sl);
}

/* A tiled TIFF declaring side x side pixels with a single level and only its first tile
 * written (the others absent): a few MB on disk. */
static void write_sparse_tiff(const char *path, uint32_t side)
{
    TIFF *t = TIFFOpen(path, "w8"); /* BigTIFF: the tile tables of a huge image */
    assert_non_null(t);
    enum { TS = 256 };
    assert_int_equal(TIFFSetField(t, TIFFTAG_IMAGEWIDTH, side), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_IMAGELENGTH, side), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_NONE), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_TILEWIDTH, (uint32_t)TS), 1);
    assert_int_equal(TIFFSetField(t, TIFFTAG_TILELENGTH, (uint32_t)TS), 1);
    static uint8_t tile[TS * TS * 3];
    memset(tile, 200, sizeof tile);
    assert_true(TIFFWriteTile(t, tile, 0, 0, 0, 0) > 0);
    TIFFClose(t);
}

static void huge_single_level_slide_fails_its_plan_at_once(void **state)
{
    (void)state;
    scratch s;
    scratch_new(&s);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/huge.tiff", s.dir);
    write_sparse_tiff(path, 200000);
    Gastroscreen__V1__PlanJob job = GASTROSCREEN__V1__PLAN_JOB__INIT;
    job.slide_id = "0123456789abcdef";
    job.attempt = 1;
    job.path = path;
    Gastroscreen__V1__PlanResult *r = gs_foreground_plan(&job, NULL, "fg.1");
    assert_non_null(r);
    /* Refused before any pixel is read (reading it whole took minutes and 400 MB). */
    if (!contains(r->error, "too large to plan"))
        fail_msg("plan error \"%s\"", r->error);
    assert_true(contains(r->error, "200000 x 200000"));
    assert_non_null(r->facts);
    assert_int_equal(r->facts->width, 200000);
    gs_foreground_result_free(&r);
    scratch_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fifo_device_and_folder_are_refused_unopened),
        cmocka_unit_test(symlink_swapped_into_the_path_is_refused),
        cmocka_unit_test(file_replaced_after_intake_is_named),
        cmocka_unit_test(report_of_a_replaced_file_fails),
        cmocka_unit_test(reads_stop_at_the_deadline),
        cmocka_unit_test(thumbnail_source_and_level0_caps),
        cmocka_unit_test(huge_single_level_slide_fails_its_plan_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
