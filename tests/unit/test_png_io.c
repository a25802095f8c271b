#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/slide/png_io.h"

static char tmpdir[256];

static int make_tmpdir(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gs_test_png_io_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(tmpdir);
}

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static const char *data_path(char *out, size_t n, const char *rel)
{
    const char *d = getenv("GS_TEST_DATA");
    assert_non_null(d);
    snprintf(out, n, "%s/%s", d, rel);
    return out;
}

/* Deterministic pseudo-random bytes so failures reproduce. */
static uint32_t lcg_state = 12345;
static uint8_t next_byte(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return (uint8_t)(lcg_state >> 24);
}

/* Writes a w x h image with `channels` through a padded stride, reads it back as RGBA and as
 * RGB, and checks every sample. */
static void round_trip_one(int w, int h, int channels)
{
    size_t stride = (size_t)w * channels + 5; /* padding must be skipped, never written */
    uint8_t *img = malloc(stride * h);
    assert_non_null(img);
    for (size_t i = 0; i < stride * (size_t)h; i++)
        img[i] = next_byte();
    char path[512];
    tmp_path(path, sizeof path, "rt.png");
    assert_int_equal(gs_png_write(path, img, w, h, stride, channels), 0);

    uint8_t *rgba = NULL, *rgb = NULL;
    int rw = 0, rh = 0;
    assert_int_equal(gs_png_read(path, 4, &rgba, &rw, &rh), 0);
    assert_int_equal(rw, w);
    assert_int_equal(rh, h);
    assert_int_equal(gs_png_read(path, 3, &rgb, &rw, &rh), 0);
    assert_int_equal(rw, w);
    assert_int_equal(rh, h);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            const uint8_t *s = img + (size_t)y * stride + (size_t)x * channels;
            const uint8_t *q = rgba + ((size_t)y * w + x) * 4;
            const uint8_t *t = rgb + ((size_t)y * w + x) * 3;
            unsigned a = channels == 4 ? s[3] : 255;
            for (int c = 0; c < 3; c++) {
                unsigned v = channels == 1 ? s[0] : s[c];
                assert_int_equal(q[c], v);
                assert_int_equal(t[c], (v * a + 255 * (255 - a) + 127) / 255);
            }
            assert_int_equal(q[3], a);
        }
    }
    free(rgba);
    free(rgb);
    free(img);
}

static void round_trip_grey_rgb_rgba_odd_sizes(void **state)
{
    const int sizes[][2] = {{1, 1}, {1, 9}, {7, 1}, {13, 5}, {33, 17}, {301, 3}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        round_trip_one(sizes[i][0], sizes[i][1], 1);
        round_trip_one(sizes[i][0], sizes[i][1], 3);
        round_trip_one(sizes[i][0], sizes[i][1], 4);
    }
}

static void alpha_is_composited_over_white(void **state)
{
    const uint8_t px[4 * 4] = {0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 128, 200, 100, 50, 255};
    char path[512];
    tmp_path(path, sizeof path, "alpha.png");
    assert_int_equal(gs_png_write(path, px, 4, 1, 16, 4), 0);
    uint8_t *rgb = NULL;
    int w, h;
    assert_int_equal(gs_png_read(path, 3, &rgb, &w, &h), 0);
    const uint8_t want[12] = {255, 255, 255, 0, 0, 0, 127, 127, 127, 200, 100, 50};
    assert_memory_equal(rgb, want, sizeof want);
    free(rgb);
}

static void overwrite_is_atomic_and_leaves_no_temp_file(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "over.png");
    uint8_t a[3] = {1, 2, 3}, b[3] = {9, 8, 7};
    assert_int_equal(gs_png_write(path, a, 1, 1, 3, 3), 0);
    assert_int_equal(gs_png_write(path, b, 1, 1, 3, 3), 0);
    uint8_t *rgb = NULL;
    int w, h;
    assert_int_equal(gs_png_read(path, 3, &rgb, &w, &h), 0);
    assert_memory_equal(rgb, b, 3);
    free(rgb);
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        assert_null(strstr(e->d_name, ".tmp."));
    closedir(d);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
}

static void reads_palette_png_with_icc_profile(void **state)
{
    char path[512];
    data_path(path, sizeof path, "boxes.png");
    uint8_t *rgb = NULL, *rgba = NULL;
    int w, h;
    assert_int_equal(gs_png_read(path, 3, &rgb, &w, &h), 0);
    assert_int_equal(w, 300);
    assert_int_equal(h, 250);
    assert_int_equal(gs_png_read(path, 4, &rgba, &w, &h), 0);
    int colours_seen = 0;
    uint32_t seen[8];
    for (int i = 0; i < w * h; i++) {
        assert_int_equal(rgba[i * 4 + 3], 255);
        assert_memory_equal(rgb + i * 3, rgba + i * 4, 3);
        uint32_t c = (uint32_t)rgb[i * 3] << 16 | rgb[i * 3 + 1] << 8 | rgb[i * 3 + 2];
        int known = 0;
        for (int k = 0; k < colours_seen; k++)
            known |= seen[k] == c;
        if (!known) {
            assert_true(colours_seen < 4); /* a 2-bit palette has at most 4 entries */
            seen[colours_seen++] = c;
        }
    }
    assert_true(colours_seen >= 2);
    free(rgb);
    free(rgba);
}

/* A 16-bit grey PNG written with libpng directly (the module only writes 8-bit). */
static void reads_16bit_grey_scaled_to_8bit(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "grey16.png");
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    assert_int_equal(setjmp(png_jmpbuf(png)), 0);
    png_init_io(png, fp);
    png_set_IHDR(png, info, 4, 1, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    /* Big-endian samples: 0, 65535, 128*257, 1000. */
    uint8_t row[8] = {0x00, 0x00, 0xff, 0xff, 0x80, 0x80, 0x03, 0xe8};
    png_write_row(png, row);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(fp);

    uint8_t *rgb = NULL;
    int w, h;
    assert_int_equal(gs_png_read(path, 3, &rgb, &w, &h), 0);
    assert_int_equal(w, 4);
    const uint8_t want[12] = {0, 0, 0, 255, 255, 255, 128, 128, 128, 4, 4, 4};
    assert_memory_equal(rgb, want, sizeof want);
    free(rgb);
}

static void non_png_fails_naming_the_path(void **state)
{
    char path[512];
    data_path(path, sizeof path, "corrupt/broken.svs");
    uint8_t *px = (uint8_t *)&px;
    int w, h;
    assert_int_equal(gs_png_read(path, 3, &px, &w, &h), -1);
    assert_null(px);
    assert_non_null(strstr(gs_error_get(), path));
    assert_non_null(strstr(gs_error_get(), "not a PNG"));

    data_path(path, sizeof path, "no-such-file.png");
    assert_int_equal(gs_png_read(path, 3, &px, &w, &h), -1);
    assert_non_null(strstr(gs_error_get(), path));
    assert_non_null(strstr(gs_error_get(), "No such file"));
}

static void truncated_png_fails_with_libpng_message(void **state)
{
    enum { W = 64, H = 64 };
    static uint8_t img[W * H * 3];
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = next_byte(); /* noise does not compress, so the file is long */
    char path[512];
    tmp_path(path, sizeof path, "trunc.png");
    assert_int_equal(gs_png_write(path, img, W, H, W * 3, 3), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    const off_t cuts[] = {9, 33, 100, st.st_size / 2, st.st_size - 13};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        assert_int_equal(gs_png_write(path, img, W, H, W * 3, 3), 0);
        assert_int_equal(truncate(path, cuts[i]), 0);
        uint8_t *px = NULL;
        int w, h;
        assert_int_equal(gs_png_read(path, 4, &px, &w, &h), -1);
        assert_null(px);
        assert_non_null(strstr(gs_error_get(), path));
        assert_non_null(strstr(gs_error_get(), "cannot read PNG"));
    }
}

static void write_into_missing_folder_fails(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "no/such/folder/x.png");
    uint8_t px[3] = {0};
    assert_int_equal(gs_png_write(path, px, 1, 1, 3, 3), -1);
    assert_non_null(strstr(gs_error_get(), path));
    assert_non_null(strstr(gs_error_get(), "No such file or directory"));
}

static void bad_arguments_are_errors(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "bad.png");
    uint8_t px[16] = {0};
    assert_int_equal(gs_png_write(path, px, 0, 1, 3, 3), -1);
    assert_int_equal(gs_png_write(path, px, 2, 1, 3, 2), -1);
    assert_int_equal(gs_png_write(path, px, 2, 1, 5, 3), -1); /* stride < row */
    assert_int_equal(access(path, F_OK), -1);
    uint8_t *out = NULL;
    int w, h;
    assert_int_equal(gs_png_read(path, 1, &out, &w, &h), -1);
    assert_non_null(strstr(gs_error_get(), "channels"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_grey_rgb_rgba_odd_sizes),
        cmocka_unit_test(alpha_is_composited_over_white),
        cmocka_unit_test(overwrite_is_atomic_and_leaves_no_temp_file),
        cmocka_unit_test(reads_palette_png_with_icc_profile),
        cmocka_unit_test(reads_16bit_grey_scaled_to_8bit),
        cmocka_unit_test(non_png_fails_naming_the_path),
        cmocka_unit_test(truncated_png_fails_with_libpng_message),
        cmocka_unit_test(write_into_missing_folder_fails),
        cmocka_unit_test(bad_arguments_are_errors),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
