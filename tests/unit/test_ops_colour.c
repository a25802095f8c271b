#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/colour.h"
#include "ops/error.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* skimage.color.rgb2hed (scikit-image 0.19.3, Debian python3-skimage) of single uint8 pixels,
 * printed with %.9g by tests/tools/skimage_hed_values.py. */
static const struct {
    uint8_t rgb[3];
    double hed[3];
} skimage_pixels[] = {
    {{255, 255, 255}, {0, 0, 0}},                       /* white */
    {{0, 0, 0}, {1.21016731, 0, 0.881950455}},          /* black */
    {{60, 50, 140}, {0.162787499, 0.00743025813, 0}},   /* haematoxylin blue */
    {{230, 130, 190}, {0, 0.0375785963, 0.0227515559}}, /* eosin pink */
    {{150, 100, 50}, {0, 0, 0.155028774}},              /* DAB brown */
    {{128, 128, 128}, {0.0603732727, 0, 0.0439990693}}, /* mid grey */
    {{255, 0, 0}, {0, 0.654316184, 1.43806627}},        /* pure red */
};
enum { NPIX = sizeof skimage_pixels / sizeof skimage_pixels[0] };

static void matches_skimage(void **state)
{
    for (int ch = 3; ch <= 4; ch++) {
        uint8_t img[NPIX * 4];
        for (int i = 0; i < NPIX; i++) {
            memcpy(img + i * ch, skimage_pixels[i].rgb, 3);
            if (ch == 4)
                img[i * 4 + 3] = (uint8_t)(i * 37); /* alpha must not matter */
        }
        for (int fast = 0; fast < 2; fast++) {
            float h[NPIX], e[NPIX], d[NPIX];
            int (*fn)(const uint8_t *, int, int, size_t, int, float *, float *, float *) =
                fast ? gs_rgb_to_hed : gs_rgb_to_hed_ref;
            assert_int_equal(fn(img, NPIX, 1, (size_t)NPIX * ch, ch, h, e, d), 0);
            for (int i = 0; i < NPIX; i++) {
                const float got[3] = {h[i], e[i], d[i]};
                for (int k = 0; k < 3; k++)
                    if (fabs(got[k] - skimage_pixels[i].hed[k]) > 1e-5)
                        fail_msg("pixel %d stain %d (%s): got %.9g, skimage %.9g", i, k,
                                 fast ? "fast" : "ref", got[k], skimage_pixels[i].hed[k]);
            }
        }
    }
}

static void white_is_zero_and_haematoxylin_dominates(void **state)
{
    /* Hand check of the convention: white has zero density in every stain; a blue-purple
     * nucleus pixel is mostly haematoxylin, a pink cytoplasm pixel mostly eosin. */
    const uint8_t px[9] = {255, 255, 255, 60, 50, 140, 230, 130, 190};
    float h[3], e[3], d[3];
    assert_int_equal(gs_rgb_to_hed(px, 3, 1, 9, 3, h, e, d), 0);
    assert_true(h[0] == 0.0f && e[0] == 0.0f && d[0] == 0.0f);
    assert_true(h[1] > 10 * e[1]);
    assert_true(e[2] > h[2]);
    /* The optical density runs from 0 (white) to 1 (black, floored at 1e-6 intensity). */
    assert_true(gs_colour_od(255) == 0.0);
    assert_true(fabs(gs_colour_od(0) - 1.0) < 1e-15);
    assert_true(fabs(gs_colour_od(1) - log(1.0 / 255.0) / log(1e-6)) < 1e-15);
}

static void fast_matches_ref(void **state)
{
    static const int sizes[][2] = {{1, 1}, {1, 17}, {17, 1}, {31, 33}, {513, 7}, {300, 200}};
    uint64_t s = 11;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        for (int ch = 3; ch <= 4; ch++) {
            for (int fill = 0; fill < 3; fill++) {
                int w = sizes[si][0], hh = sizes[si][1];
                size_t stride = (size_t)w * ch + (size_t)(rng_next(&s) % 4);
                size_t n = (size_t)w * hh;
                uint8_t *img = malloc(stride * hh);
                float *a = malloc(sizeof(float) * n * 3), *b = malloc(sizeof(float) * n * 3);
                assert_non_null(img);
                assert_non_null(a);
                assert_non_null(b);
                for (size_t k = 0; k < stride * hh; k++)
                    img[k] = fill == 0 ? (uint8_t)rng_next(&s) : fill == 1 ? 0 : 255;
                assert_int_equal(gs_rgb_to_hed(img, w, hh, stride, ch, a, a + n, a + 2 * n), 0);
                assert_int_equal(gs_rgb_to_hed_ref(img, w, hh, stride, ch, b, b + n, b + 2 * n), 0);
                for (size_t k = 0; k < 3 * n; k++) {
                    assert_true(a[k] >= 0.0f);
                    if (fabsf(a[k] - b[k]) > 2e-6f)
                        fail_msg("%dx%dx%d value %zu: fast %.9g ref %.9g", w, hh, ch, k, a[k],
                                 b[k]);
                }
                /* Any output may be skipped; the others are unchanged. */
                float *only_e = malloc(sizeof(float) * n);
                assert_non_null(only_e);
                assert_int_equal(gs_rgb_to_hed(img, w, hh, stride, ch, NULL, only_e, NULL), 0);
                assert_memory_equal(only_e, a + n, sizeof(float) * n);
                assert_int_equal(gs_rgb_to_hed_ref(img, w, hh, stride, ch, NULL, NULL, only_e), 0);
                assert_memory_equal(only_e, b + 2 * n, sizeof(float) * n);
                free(only_e);
                free(img);
                free(a);
                free(b);
            }
        }
    }
}

static void all_256_levels_per_channel(void **state)
{
    /* Every value of every channel, so each table entry is checked against the reference. */
    uint8_t img[256 * 3 * 3];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            for (int k = 0; k < 3; k++)
                img[(c * 256 + v) * 3 + k] = k == c ? (uint8_t)v : 200;
    float a[3][768], b[3][768];
    assert_int_equal(gs_rgb_to_hed(img, 768, 1, sizeof img, 3, a[0], a[1], a[2]), 0);
    assert_int_equal(gs_rgb_to_hed_ref(img, 256, 3, 768, 3, b[0], b[1], b[2]), 0);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 768; i++)
            assert_true(fabsf(a[k][i] - b[k][i]) <= 2e-6f);
}

static void bad_arguments(void **state)
{
    uint8_t px[12] = {0};
    float f[4];
    gs_error_clear();
    assert_int_equal(gs_rgb_to_hed(NULL, 1, 1, 3, 3, f, f, f), -1);
    assert_string_equal(gs_error_get(), "colour: input image is NULL");
    assert_int_equal(gs_rgb_to_hed(px, 0, 1, 3, 3, f, f, f), -1);
    assert_int_equal(gs_rgb_to_hed_ref(px, 1, -1, 3, 3, f, f, f), -1);
    assert_int_equal(gs_rgb_to_hed(px, 1, 1, 3, 1, f, f, f), -1);
    assert_int_equal(gs_rgb_to_hed_ref(px, 1, 1, 3, 5, f, f, f), -1);
    assert_int_equal(gs_rgb_to_hed(px, 2, 1, 5, 3, f, f, f), -1);
    assert_int_equal(gs_rgb_to_hed(px, 2, 1, 7, 4, f, f, f), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_skimage),
        cmocka_unit_test(white_is_zero_and_haematoxylin_dominates),
        cmocka_unit_test(fast_matches_ref),
        cmocka_unit_test(all_256_levels_per_channel),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
