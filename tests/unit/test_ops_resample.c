#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "ops/resample.h"

/* splitmix64: a seeded, portable PRNG so every run tests the same images. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int rng_int(uint64_t *s, int n)
{
    return (int)(rng_next(s) % (uint64_t)n);
}

typedef struct {
    uint8_t *px;
    int w, h, ch;
    size_t stride;
} image;

/* fill: 0 random, 1 all zero, 2 all 255, 3 random 0/255 (hard edges). Padding bytes get a
 * marker so a kernel that reads them changes the result. */
static image image_new(int w, int h, int ch, int pad, int fill, uint64_t *s)
{
    image im = {NULL, w, h, ch, (size_t)w * ch + (size_t)pad};
    im.px = malloc(im.stride * (size_t)h);
    assert_non_null(im.px);
    for (size_t k = 0; k < im.stride * (size_t)h; k++) {
        size_t x = k % im.stride;
        uint8_t v = fill == 0   ? (uint8_t)rng_next(s)
                    : fill == 1 ? 0
                    : fill == 2 ? 255
                                : (rng_next(s) & 1 ? 255 : 0);
        im.px[k] = x >= (size_t)w * ch ? 0xA5 : v;
    }
    return im;
}

static void image_free(image *im)
{
    free(im->px);
    im->px = NULL;
}

typedef int (*resize_u8_fn)(const uint8_t *, int, int, size_t, int, uint8_t *, int, int, size_t);

/* Runs fast and reference on the same input and asserts identical bytes (padding untouched). */
static void compare_u8(resize_u8_fn fast, resize_u8_fn ref, const image *src, int dw, int dh,
                       int pad)
{
    size_t dstride = (size_t)dw * src->ch + (size_t)pad;
    size_t n = dstride * (size_t)dh;
    uint8_t *a = malloc(n), *b = malloc(n);
    assert_non_null(a);
    assert_non_null(b);
    memset(a, 0x5A, n);
    memset(b, 0x5A, n);
    assert_int_equal(fast(src->px, src->w, src->h, src->stride, src->ch, a, dw, dh, dstride), 0);
    assert_int_equal(ref(src->px, src->w, src->h, src->stride, src->ch, b, dw, dh, dstride), 0);
    for (size_t k = 0; k < n; k++) {
        if (a[k] != b[k])
            fail_msg("%dx%dx%d -> %dx%d: byte %zu fast %u ref %u", src->w, src->h, src->ch, dw, dh,
                     k, a[k], b[k]);
        if (k % dstride >= (size_t)dw * src->ch)
            assert_int_equal(a[k], 0x5A);
    }
    free(a);
    free(b);
}

static const int sizes[][2] = {{1, 1},   {1, 17},  {17, 1},  {2, 2},   {3, 5},    {31, 33},
                               {513, 7}, {7, 513}, {64, 64}, {100, 3}, {257, 255}};
enum { NSIZES = sizeof sizes / sizeof sizes[0] };

static void area_fast_matches_ref(void **state)
{
    uint64_t s = 1;
    for (int si = 0; si < NSIZES; si++) {
        for (int ch = 1; ch <= 4; ch++) {
            for (int fill = 0; fill < 4; fill++) {
                int sw = sizes[si][0], sh = sizes[si][1];
                image src = image_new(sw, sh, ch, rng_int(&s, 5), fill, &s);
                /* Identity, halving, a random smaller size and 1x1. */
                int targets[4][2] = {{sw, sh},
                                     {(sw + 1) / 2, (sh + 1) / 2},
                                     {1 + rng_int(&s, sw), 1 + rng_int(&s, sh)},
                                     {1, 1}};
                for (int t = 0; t < 4; t++)
                    compare_u8(gs_resize_area_u8, gs_resize_area_u8_ref, &src, targets[t][0],
                               targets[t][1], rng_int(&s, 3));
                image_free(&src);
            }
        }
    }
    /* Large enough to take the OpenMP path. */
    image big = image_new(1031, 777, 3, 1, 0, &s);
    compare_u8(gs_resize_area_u8, gs_resize_area_u8_ref, &big, 333, 250, 0);
    compare_u8(gs_resize_area_u8, gs_resize_area_u8_ref, &big, 1000, 700, 2);
    image_free(&big);
}

static void area_constant_and_identity(void **state)
{
    uint64_t s = 2;
    image src = image_new(37, 29, 3, 0, 0, &s);
    uint8_t out[37 * 29 * 3];
    assert_int_equal(gs_resize_area_u8(src.px, 37, 29, src.stride, 3, out, 37, 29, 37 * 3), 0);
    assert_memory_equal(out, src.px, sizeof out);
    image_free(&src);
    for (int v = 0; v < 256; v += 85) {
        uint8_t flat[23 * 19];
        memset(flat, v, sizeof flat);
        uint8_t o[5 * 7];
        assert_int_equal(gs_resize_area_u8(flat, 23, 19, 23, 1, o, 5, 7, 5), 0);
        for (size_t k = 0; k < sizeof o; k++)
            assert_int_equal(o[k], v);
    }
}

static void area_known_values(void **state)
{
    /* 4x4 -> 2x2: means of the 2x2 blocks. */
    const uint8_t a[16] = {0, 2, 10, 20, 4, 6, 30, 40, 100, 100, 255, 255, 100, 101, 255, 254};
    uint8_t o[4];
    assert_int_equal(gs_resize_area_u8_ref(a, 4, 4, 4, 1, o, 2, 2, 2), 0);
    /* (0+2+4+6)/4 = 3; (10+20+30+40)/4 = 25; 401/4 = 100.25 -> 100; 1019/4 = 254.75 -> 255 */
    const uint8_t want[4] = {3, 25, 100, 255};
    assert_memory_equal(o, want, 4);
    assert_int_equal(gs_resize_area_u8(a, 4, 4, 4, 1, o, 2, 2, 2), 0);
    assert_memory_equal(o, want, 4);

    /* 3 -> 2: each output covers 1.5 inputs. [0, 30, 90]: (0 + 0.5*30)/1.5 = 10,
     * (0.5*30 + 90)/1.5 = 70. */
    const uint8_t r[3] = {0, 30, 90};
    uint8_t o2[2];
    assert_int_equal(gs_resize_area_u8(r, 3, 1, 3, 1, o2, 2, 1, 2), 0);
    assert_int_equal(o2[0], 10);
    assert_int_equal(o2[1], 70);
    assert_int_equal(gs_resize_area_u8(r, 1, 3, 1, 1, o2, 1, 2, 1), 0);
    assert_int_equal(o2[0], 10);
    assert_int_equal(o2[1], 70);

    /* 3x3 -> 2x2, corner weights 1, 0.5, 0.25 over an area of 2.25:
     * top-left = (9*1 + 0.5*(3+3) + 0.25*3) / 2.25 ... with pixels below. */
    const uint8_t q[9] = {90, 0, 0, 0, 0, 0, 0, 0, 180};
    uint8_t o3[4];
    assert_int_equal(gs_resize_area_u8(q, 3, 3, 3, 1, o3, 2, 2, 2), 0);
    /* top-left gets 90*1/2.25 = 40; bottom-right 180/2.25 = 80; the others nothing. */
    const uint8_t want3[4] = {40, 0, 0, 80};
    assert_memory_equal(o3, want3, 4);
    const uint8_t c[9] = {0, 90, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(gs_resize_area_u8_ref(c, 3, 3, 3, 1, o3, 2, 2, 2), 0);
    /* the middle of the top row is split half/half: 90*0.5/2.25 = 20 each. */
    const uint8_t want4[4] = {20, 20, 0, 0};
    assert_memory_equal(o3, want4, 4);

    /* Rounding of an exact half goes up: mean(0, 1) = 0.5 -> 1; mean(2, 3, 3) = 2.67 -> 3. */
    const uint8_t h[3] = {0, 1, 0};
    uint8_t o4;
    assert_int_equal(gs_resize_area_u8(h, 2, 1, 2, 1, &o4, 1, 1, 1), 0);
    assert_int_equal(o4, 1);
    const uint8_t t3[3] = {2, 3, 3};
    assert_int_equal(gs_resize_area_u8(t3, 3, 1, 3, 1, &o4, 1, 1, 1), 0);
    assert_int_equal(o4, 3);

    /* Channels stay separate: RGBA 2x1 -> 1x1. */
    const uint8_t rgba[8] = {10, 200, 0, 255, 20, 100, 255, 0};
    uint8_t px[4];
    assert_int_equal(gs_resize_area_u8(rgba, 2, 1, 8, 4, px, 1, 1, 4), 0);
    const uint8_t want5[4] = {15, 150, 128, 128};
    assert_memory_equal(px, want5, 4);
}

static void bilinear_u8_fast_matches_ref(void **state)
{
    uint64_t s = 3;
    for (int si = 0; si < NSIZES; si++) {
        for (int ch = 1; ch <= 4; ch++) {
            for (int fill = 0; fill < 4; fill++) {
                int sw = sizes[si][0], sh = sizes[si][1];
                image src = image_new(sw, sh, ch, rng_int(&s, 5), fill, &s);
                int targets[5][2] = {{sw, sh},
                                     {sw * 2, sh * 2},
                                     {1 + rng_int(&s, 3 * sw), 1 + rng_int(&s, 3 * sh)},
                                     {1, 1},
                                     {1 + rng_int(&s, 40), 1 + rng_int(&s, 40)}};
                for (int t = 0; t < 5; t++)
                    compare_u8(gs_resize_bilinear_u8, gs_resize_bilinear_u8_ref, &src,
                               targets[t][0], targets[t][1], rng_int(&s, 3));
                if (fill == 1 || fill == 2) {
                    /* A constant image stays constant at any size. */
                    uint8_t out[9 * 4 * 4];
                    assert_int_equal(
                        gs_resize_bilinear_u8(src.px, sw, sh, src.stride, ch, out, 9, 4, 9 * ch),
                        0);
                    for (int k = 0; k < 9 * 4 * ch; k++)
                        assert_int_equal(out[k], fill == 1 ? 0 : 255);
                }
                image_free(&src);
            }
        }
    }
    image big = image_new(300, 211, 3, 3, 0, &s);
    compare_u8(gs_resize_bilinear_u8, gs_resize_bilinear_u8_ref, &big, 512, 512, 0);
    compare_u8(gs_resize_bilinear_u8, gs_resize_bilinear_u8_ref, &big, 97, 300, 1);
    image_free(&big);
}

static void bilinear_u8_known_values(void **state)
{
    /* [0, 255] upsampled 2x: torch F.interpolate(size=(1,4), bilinear, align_corners=False) on
     * the float tensor gives 0, 63.75, 191.25, 255 (torch 2.x run once, 2x2 case likewise:
     * rows 0 63.75 191.25 255 / 63.75 95.625 159.375 191.25 / 191.25 159.375 95.625 63.75 /
     * 255 191.25 63.75 0); rounded to nearest. */
    const uint8_t r[2] = {0, 255};
    uint8_t o[4];
    assert_int_equal(gs_resize_bilinear_u8_ref(r, 2, 1, 2, 1, o, 4, 1, 4), 0);
    const uint8_t want[4] = {0, 64, 191, 255};
    assert_memory_equal(o, want, 4);
    assert_int_equal(gs_resize_bilinear_u8(r, 2, 1, 2, 1, o, 4, 1, 4), 0);
    assert_memory_equal(o, want, 4);

    const uint8_t q[4] = {0, 255, 255, 0};
    uint8_t o2[16];
    const uint8_t want2[16] = {0,   64,  191, 255, 64,  96,  159, 191,
                               191, 159, 96,  64,  255, 191, 64,  0};
    assert_int_equal(gs_resize_bilinear_u8(q, 2, 2, 2, 1, o2, 4, 4, 4), 0);
    assert_memory_equal(o2, want2, 16);

    /* Halving without antialiasing samples between pixel pairs: [0,100,200,250] -> 50, 225. */
    const uint8_t d[4] = {0, 100, 200, 250};
    uint8_t o3[2];
    assert_int_equal(gs_resize_bilinear_u8(d, 4, 1, 4, 1, o3, 2, 1, 2), 0);
    assert_int_equal(o3[0], 50);
    assert_int_equal(o3[1], 225);
}

/* Input used for the torch reference values below: v[i][j] = ((7i + 3j) % 11) * 1.5 - 4. */
static void torch_input(float *x)
{
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 7; j++)
            x[i * 7 + j] = (float)((i * 7 + j * 3) % 11) * 1.5f - 4.0f;
}

static void check_f32(const float *got, const float *want, int n)
{
    for (int k = 0; k < n; k++)
        if (fabsf(got[k] - want[k]) > 2e-5f * (1.0f + fabsf(want[k])))
            fail_msg("element %d: got %.7g want %.7g", k, got[k], want[k]);
}

static void bilinear_f32_matches_torch(void **state)
{
    /* torch.nn.functional.interpolate(x.reshape(1,1,5,7), size=S, mode="bilinear",
     * align_corners=False), printed with %.7g by /usr/bin/python3 (Debian python3-torch). */
    static const float want_11x3[33] = {
        -1,        9.499999f,  3.499999f,  0.9090909f, 8.40909f,   2.40909f,  5.681818f,
        5.681818f, -0.318183f, 8.954545f,  2.954545f,  -1.545455f, 6.227272f, 0.2272728f,
        3.227273f, 3.5f,       -2.499998f, 7.999999f,  3.272727f,  2.272729f, 5.272726f,
        3.045455f, 7.045455f,  2.545453f,  4.818182f,  5.818181f,  3.818183f, 7.090909f,
        3.090908f, 6.090911f,  8,          2,          7.000002f};
    static const float want_2x3[6] = {6.875f, 5, -1.000001f, 4.25f, 6.499999f, 3.25f};
    static const float want_9x16_row0[16] = {
        -4,     -3.296875f, -1.328125f, 0.640625f,  2.609375f, 4.578125f, 6.546875f, 8.515625f,
        6.875f, 1.625f,     -2.078125f, -0.109375f, 1.859375f, 3.828125f, 5.796875f, 6.5f};
    static const float want_9x16_row8[16] = {
        5,         5.703125f, 7.671875f, 9.125f,    3.875f,    -1.375f, -0.9531249f, 1.015625f,
        2.984375f, 4.953125f, 6.921875f, 8.890625f, 10.85938f, 6.125f,  0.875f,      -1};
    float x[35];
    torch_input(x);
    float o[9 * 16];
    for (int fast = 0; fast < 2; fast++) {
        int (*fn)(const float *, int, int, float *, int, int) =
            fast ? gs_resize_bilinear_f32 : gs_resize_bilinear_f32_ref;
        assert_int_equal(fn(x, 7, 5, o, 3, 11), 0);
        check_f32(o, want_11x3, 33);
        assert_int_equal(fn(x, 7, 5, o, 3, 2), 0);
        check_f32(o, want_2x3, 6);
        assert_int_equal(fn(x, 7, 5, o, 16, 9), 0);
        check_f32(o, want_9x16_row0, 16);
        check_f32(o + 8 * 16, want_9x16_row8, 16);
    }
}

static void bilinear_f32_fast_matches_ref(void **state)
{
    uint64_t s = 4;
    for (int si = 0; si < NSIZES; si++) {
        int sw = sizes[si][0], sh = sizes[si][1];
        float *src = malloc(sizeof *src * (size_t)sw * sh);
        assert_non_null(src);
        for (int k = 0; k < sw * sh; k++)
            src[k] = (float)((double)(int64_t)rng_next(&s) * 1e-15);
        for (int t = 0; t < 4; t++) {
            int dw = t == 0 ? sw : 1 + rng_int(&s, 3 * sw);
            int dh = t == 0 ? sh : 1 + rng_int(&s, 3 * sh);
            float *a = malloc(sizeof *a * (size_t)dw * dh),
                  *b = malloc(sizeof *b * (size_t)dw * dh);
            assert_non_null(a);
            assert_non_null(b);
            assert_int_equal(gs_resize_bilinear_f32(src, sw, sh, a, dw, dh), 0);
            assert_int_equal(gs_resize_bilinear_f32_ref(src, sw, sh, b, dw, dh), 0);
            assert_memory_equal(a, b, sizeof *a * (size_t)dw * dh);
            if (t == 0)
                assert_memory_equal(a, src, sizeof *a * (size_t)dw * dh);
            free(a);
            free(b);
        }
        free(src);
    }
    /* Huge magnitudes pass through without overflow in the arithmetic itself. */
    float hv[4] = {3e38f, -3e38f, 1e30f, 0};
    float ho[16];
    assert_int_equal(gs_resize_bilinear_f32(hv, 2, 2, ho, 4, 4), 0);
    assert_true(ho[0] == 3e38f);
    for (int k = 0; k < 16; k++)
        assert_true(isfinite(ho[k]));
}

static void invalid_sizes_are_errors(void **state)
{
    uint8_t b[64] = {0};
    float f[16] = {0};
    gs_error_clear();
    assert_int_equal(gs_resize_area_u8(b, 2, 2, 2, 1, b + 32, 3, 2, 3), -1);
    assert_true(strlen(gs_error_get()) > 0);
    assert_int_equal(gs_resize_area_u8_ref(b, 2, 2, 2, 1, b + 32, 2, 3, 2), -1);
    assert_int_equal(gs_resize_area_u8(b, 0, 2, 2, 1, b + 32, 1, 1, 1), -1);
    assert_int_equal(gs_resize_area_u8(b, 2, 2, 2, 1, b + 32, 0, 1, 1), -1);
    assert_int_equal(gs_resize_area_u8(b, 2, 2, 2, 5, b + 32, 1, 1, 5), -1);
    assert_int_equal(gs_resize_area_u8(b, 2, 2, 2, 0, b + 32, 1, 1, 1), -1);
    assert_int_equal(gs_resize_area_u8(b, 4, 2, 3, 1, b + 32, 1, 1, 1), -1); /* short stride */
    assert_int_equal(gs_resize_area_u8(NULL, 2, 2, 2, 1, b + 32, 1, 1, 1), -1);
    assert_int_equal(gs_resize_area_u8(b, 2, 2, 2, 1, NULL, 1, 1, 1), -1);
    assert_int_equal(gs_resize_bilinear_u8(b, 2, 2, 2, 1, b + 32, -1, 2, 2), -1);
    assert_int_equal(gs_resize_bilinear_u8_ref(b, 2, -2, 2, 1, b + 32, 1, 2, 2), -1);
    assert_int_equal(gs_resize_bilinear_u8(b, 2, 2, 2, 1, b + 32, 4, 2, 3), -1);
    assert_int_equal(gs_resize_bilinear_f32(f, 0, 2, f + 8, 2, 2), -1);
    assert_int_equal(gs_resize_bilinear_f32_ref(f, 2, 2, NULL, 2, 2), -1);
    assert_string_equal(gs_error_get(), "resample: destination buffer is NULL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(area_fast_matches_ref),
        cmocka_unit_test(area_constant_and_identity),
        cmocka_unit_test(area_known_values),
        cmocka_unit_test(bilinear_u8_fast_matches_ref),
        cmocka_unit_test(bilinear_u8_known_values),
        cmocka_unit_test(bilinear_f32_matches_torch),
        cmocka_unit_test(bilinear_f32_fast_matches_ref),
        cmocka_unit_test(invalid_sizes_are_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
