/*
 * ops/deform_conv int8 form (gs_deform_conv_new_int8) against the float32 reference
 * (gs_deform_conv2d_ref) on random shapes (odd channel counts and sizes, batches, tails of a
 * tile, both layouts) and edge cases: huge offsets, borders, a zero mask, inputs beyond the
 * calibrated range (they saturate) and negative inputs to u8 columns (they become 0). Also:
 * the portable and AVX-512 int8 gathers agree bit for bit, and bad ranges are refused.
 *
 * The reference gets the input already rounded to bf16 and the float32 weights. The int8 path
 * rounds each sample to 1/255 (u8) or 1/127 (s8) of the range and each weight to 1/127 of its
 * channel's largest, then the output to bf16: on sums of a few hundred terms of both signs
 * that is well under INT8_TOL of the output scale (the worst seen is printed), while a wrong
 * index or a missed corner is off by several times more. The network runs this path only on
 * CPUs with VNNI and native bf16 (model/network.c), so elsewhere the test exits 77.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/deform_conv.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"
#include "tests/unit/layouts.h"
#include "tests/unit/testrand.h"

#define INT8_TOL 2e-2

/* rand_buf rounded to bf16 values (what a bf16 activation holds). */
static float *rand_bf16(size_t n, float lo, float hi)
{
    float *b = rand_buf(n, lo, hi);
    for (size_t i = 0; i < n; i++)
        b[i] = gs_bf16_to_f32(gs_bf16_from_f32(b[i]));
    return b;
}

typedef struct {
    int n, cin, cout, h, w;
} shape;

/* The int8 conv on NCHW float buffers (bf16 values) with raw NCHW offsets (27 channels):
 * nChw16c, or channels-last with raw NHWC offsets when cl. out NCHW float; bits (may be NULL)
 * the raw bf16 output in the conv's own layout. */
static void run_int8(const shape *sh, int cl, const float *input, const float *raw,
                     const float *weight, const float *bias, int relu, float amax, int u8,
                     float *out, uint16_t *bits)
{
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, sh->n, sh->cin, sh->cout, sh->h, sh->w);
    d.bf16 = 1;
    d.nhwc = cl;
    d.offset_format = cl ? GS_DEFORM_OFFSET_RAW_NHWC : GS_DEFORM_OFFSET_RAW_NCHW;
    gs_deform_conv *c = gs_deform_conv_new_int8(&d, weight, bias, relu, amax, u8);
    if (!c)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_deform_conv_int8(c), u8 ? 1 : -1);
    gs_deform_conv_scratch *s = gs_deform_conv_scratch_new(c);
    assert_non_null(s);
    size_t hw = (size_t)sh->h * sh->w;
    size_t in_sz = cl ? (size_t)sh->n * sh->cin * hw
                      : gs_deform_conv_blocked_size(sh->n, sh->cin, sh->h, sh->w);
    size_t out_sz = cl ? (size_t)sh->n * sh->cout * hw
                       : gs_deform_conv_blocked_size(sh->n, sh->cout, sh->h, sh->w);
    float *in_f = malloc(in_sz * sizeof *in_f), *out_f = malloc(out_sz * sizeof *out_f);
    float *raw_l = malloc((size_t)sh->n * 27 * hw * sizeof *raw_l);
    uint16_t *in_h = malloc(in_sz * sizeof *in_h), *out_h = malloc(out_sz * sizeof *out_h);
    assert_true(in_f && out_f && raw_l && in_h && out_h);
    if (cl) {
        test_nchw_nhwc(input, sh->n, sh->cin, hw, in_f, 0);
        test_nchw_nhwc(raw, sh->n, 27, hw, raw_l, 0);
    } else {
        gs_deform_conv_pack_nchw16c(input, sh->n, sh->cin, sh->h, sh->w, in_f);
        memcpy(raw_l, raw, (size_t)sh->n * 27 * hw * sizeof *raw_l);
    }
    gs_bf16_from_f32_array(in_f, in_h, in_sz);
    for (size_t i = 0; i < out_sz; i++)
        out_h[i] = 0x7fc0; /* NaN: the run must overwrite everything */
    if (gs_deform_conv_run_bf16(c, s, in_h, raw_l, NULL, out_h) != 0)
        fail_msg("%s", gs_error_get());
    gs_bf16_to_f32_array(out_h, out_f, out_sz);
    if (cl)
        test_nchw_nhwc(out_f, sh->n, sh->cout, hw, out, 1);
    else
        gs_deform_conv_unpack_nchw16c(out_f, sh->n, sh->cout, sh->h, sh->w, out);
    for (size_t i = 0; i < out_sz; i++)
        assert_false(isnan(out_f[i])); /* padding channels included: written, 0 */
    if (bits)
        memcpy(bits, out_h, out_sz * sizeof *bits);
    free(in_f);
    free(out_f);
    free(raw_l);
    free(in_h);
    free(out_h);
    gs_deform_conv_scratch_destroy(&s);
    gs_deform_conv_destroy(&c);
}

/* The float32 reference of the same conv (input as given, NCHW; raw offsets split). */
static void reference(const shape *sh, const float *input, const float *raw, const float *weight,
                      const float *bias, int relu, float *ref)
{
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, sh->n, sh->cin, sh->cout, sh->h, sh->w);
    size_t hw = (size_t)sh->h * sh->w, n_out = (size_t)sh->n * sh->cout * hw;
    float *off = malloc((size_t)sh->n * 18 * hw * sizeof *off);
    float *mask = malloc((size_t)sh->n * 9 * hw * sizeof *mask);
    assert_true(off && mask);
    test_split_raw_offsets(raw, sh->n, hw, off, mask);
    assert_int_equal(gs_deform_conv2d_ref(&d, input, off, mask, weight, bias, ref), 0);
    if (relu)
        for (size_t i = 0; i < n_out; i++)
            ref[i] = ref[i] > 0 ? ref[i] : 0;
    free(off);
    free(mask);
}

/* Fast int8 vs the float32 reference; amax = the input's largest |x|. Returns err / scale. */
static double check(const shape *sh, int cl, const float *in, const float *raw, int relu, int u8,
                    const char *what)
{
    size_t hw = (size_t)sh->h * sh->w, n_in = (size_t)sh->n * sh->cin * hw;
    size_t n_out = (size_t)sh->n * sh->cout * hw;
    float *wt = rand_bf16((size_t)sh->cout * sh->cin * 9, -0.5f, 0.5f);
    float *bias = rand_bf16((size_t)sh->cout, -1, 1);
    float *ref = malloc(n_out * sizeof *ref), *fast = malloc(n_out * sizeof *fast);
    assert_true(ref && fast);
    reference(sh, in, raw, wt, bias, relu, ref);
    run_int8(sh, cl, in, raw, wt, bias, relu, (float)max_abs(in, n_in), u8, fast, NULL);
    double scale = max_abs(ref, n_out), err = max_diff(ref, fast, n_out);
    if (!(err <= INT8_TOL * scale)) {
        print_error("%s: n=%d cin=%d cout=%d %dx%d cl=%d u8=%d: max err %g, max |ref| %g\n", what,
                    sh->n, sh->cin, sh->cout, sh->h, sh->w, cl, u8, err, scale);
        fail();
    }
    free(wt);
    free(bias);
    free(ref);
    free(fast);
    return err / scale;
}

static void random_shapes(void **state)
{
    (void)state;
    static const shape blocked[] = {
        {1, 16, 16, 8, 8}, {2, 17, 18, 7, 5}, {1, 3, 33, 9, 11},    {1, 64, 64, 24, 24},
        {3, 31, 1, 5, 13}, {1, 1, 1, 1, 1},   {1, 128, 64, 16, 16}, /* several tiles with a tail */
    };
    static const shape cl[] = {{1, 64, 32, 23, 23}, {2, 48, 16, 9, 13}, {1, 32, 64, 12, 12}};
    double worst = 0;
    for (int layout = 0; layout < 2; layout++) {
        const shape *shapes = layout ? cl : blocked;
        size_t count = layout ? sizeof cl / sizeof cl[0] : sizeof blocked / sizeof blocked[0];
        for (size_t i = 0; i < count; i++) {
            rng_seed(10 + i + 100 * (size_t)layout);
            const shape *sh = &shapes[i];
            size_t hw = (size_t)sh->h * sh->w;
            float *raw = rand_bf16((size_t)sh->n * 27 * hw, -3, 3);
            float *in = rand_bf16((size_t)sh->n * sh->cin * hw, -1, 1);
            float *pos = rand_bf16((size_t)sh->n * sh->cin * hw, 0, 2);
            worst = fmax(worst, check(sh, layout, in, raw, 0, 0, "s8"));
            worst = fmax(worst, check(sh, layout, in, raw, 1, 0, "s8 + relu"));
            worst = fmax(worst, check(sh, layout, pos, raw, 1, 1, "u8 + relu"));
            free(raw);
            free(in);
            free(pos);
        }
    }
    printf("int8 vs float32: worst max |error| / max |output| %.4f (tolerance %.3f)\n", worst,
           INT8_TOL);
}

/* Offsets of 40 px and of 1e6 px, and sample points on every border. */
static void huge_offsets_and_borders(void **state)
{
    (void)state;
    const shape sh = {2, 20, 24, 9, 10};
    rng_seed(3);
    size_t hw = (size_t)sh.h * sh.w, n_raw = (size_t)sh.n * 27 * hw;
    float *in = rand_bf16((size_t)sh.n * sh.cin * hw, -1, 1);
    float *raw = rand_bf16(n_raw, -40, 40);
    check(&sh, 0, in, raw, 0, 0, "offsets within 40 px");
    for (int n = 0; n < sh.n; n++)
        for (size_t i = 0; i < 18 * hw; i++)
            raw[(size_t)n * 27 * hw + i] = i % 2 ? 1e6f : -3e5f;
    check(&sh, 0, in, raw, 0, 0, "offsets of 1e6 px");
    const float t[] = {-1.0f, -0.999f, -0.5f, 0.0f, 8.0f, 8.5f, 9.0f, -0.25f, 8.75f};
    for (int n = 0; n < sh.n; n++)
        for (int k = 0; k < 9; k++)
            for (size_t p = 0; p < hw; p++) {
                int oy = (int)(p / sh.w), ox = (int)(p % sh.w), i = k / 3, j = k % 3;
                raw[((size_t)n * 27 + 2 * k) * hw + p] = t[(k + p) % 9] - (float)(oy - 1 + i);
                raw[((size_t)n * 27 + 2 * k + 1) * hw + p] =
                    t[(2 * k + p) % 9] - (float)(ox - 1 + j);
            }
    check(&sh, 0, in, raw, 0, 0, "borders");
    free(in);
    free(raw);
}

/* Columns of 0 (a zero mask; negative samples in u8 columns) leave the bias, scaled into the
 * accumulator and back, then rounded to bf16. */
static void zero_columns_give_bias(void **state)
{
    (void)state;
    const shape sh = {1, 16, 5, 4, 4};
    rng_seed(5);
    size_t hw = (size_t)sh.h * sh.w;
    float *raw = rand_bf16(27 * hw, -2, 2);
    float *neg = rand_bf16((size_t)sh.cin * hw, -2, -0.01f);
    float *wt = rand_bf16((size_t)sh.cout * sh.cin * 9, -1, 1);
    float bias[5] = {0.1f, -2.5f, 3.14159f, 0.0f, 1e-3f};
    float *out = malloc((size_t)sh.cout * hw * sizeof *out);
    assert_non_null(out);
    for (int u8 = 0; u8 < 2; u8++) {
        /* s8: a mask logit of -1e4 gives a mask of 0; u8: every sample is negative. */
        for (size_t i = 18 * hw; i < 27 * hw; i++)
            raw[i] = u8 ? 0.0f : -1e4f;
        run_int8(&sh, 0, neg, raw, wt, bias, 0, 2.0f, u8, out, NULL);
        for (int co = 0; co < sh.cout; co++)
            for (size_t p = 0; p < hw; p++) {
                double b = gs_bf16_to_f32(gs_bf16_from_f32(bias[co]));
                if (!(fabs(out[co * hw + p] - b) <= 0x1p-8 * fabs(b)))
                    fail_msg("u8=%d channel %d: %g, bias %g", u8, co, out[co * hw + p], b);
            }
    }
    free(raw);
    free(neg);
    free(wt);
    free(out);
}

/* Inputs beyond amax saturate: the result is the reference's on inputs clamped to amax. */
static void inputs_beyond_the_range_saturate(void **state)
{
    (void)state;
    const shape sh = {1, 32, 16, 8, 8};
    rng_seed(7);
    size_t hw = (size_t)sh.h * sh.w, n_in = (size_t)sh.cin * hw, n_out = (size_t)sh.cout * hw;
    float *in = rand_bf16(n_in, -2, 2), *clamped = malloc(n_in * sizeof *clamped);
    float *raw = rand_bf16(27 * hw, -0.01f, 0.01f);
    float *wt = rand_bf16((size_t)sh.cout * sh.cin * 9, -0.5f, 0.5f);
    float *ref = malloc(n_out * sizeof *ref), *fast = malloc(n_out * sizeof *fast);
    float *unclamped = malloc(n_out * sizeof *unclamped);
    assert_true(clamped && ref && fast && unclamped);
    /* Integer offsets (0) and a mask of 1: each sample is one input value, clamped alone. */
    for (size_t i = 0; i < 18 * hw; i++)
        raw[i] = 0.0f;
    for (size_t i = 18 * hw; i < 27 * hw; i++)
        raw[i] = 30.0f;
    for (size_t i = 0; i < n_in; i++)
        clamped[i] = fminf(1.0f, fmaxf(-1.0f, in[i]));
    reference(&sh, clamped, raw, wt, NULL, 0, ref);
    reference(&sh, in, raw, wt, NULL, 0, unclamped);
    run_int8(&sh, 0, in, raw, wt, NULL, 0, 1.0f, 0, fast, NULL);
    double scale = max_abs(ref, n_out);
    assert_true(max_diff(ref, fast, n_out) <= INT8_TOL * scale);
    /* ... and not the unclamped one. */
    assert_true(max_diff(unclamped, fast, n_out) > 5 * INT8_TOL * scale);
    free(in);
    free(clamped);
    free(raw);
    free(wt);
    free(ref);
    free(fast);
    free(unclamped);
}

/* The portable int8 gather computes exactly what the AVX-512 one does, in both layouts. */
static void portable_matches_avx512(void **state)
{
    (void)state;
    const shape shapes[] = {{2, 33, 20, 11, 9}, {1, 48, 32, 13, 7}};
    for (int cl = 0; cl < 2; cl++) {
        const shape *sh = &shapes[cl];
        rng_seed(6 + (uint64_t)cl);
        size_t hw = (size_t)sh->h * sh->w, n_out = (size_t)sh->n * sh->cout * hw;
        size_t bits = cl ? n_out : gs_deform_conv_blocked_size(sh->n, sh->cout, sh->h, sh->w);
        float *in = rand_bf16((size_t)sh->n * sh->cin * hw, -2, 2);
        float *raw = rand_bf16((size_t)sh->n * 27 * hw, -4, 4);
        float *wt = rand_bf16((size_t)sh->cout * sh->cin * 9, -0.5f, 0.5f);
        float *a = malloc(n_out * sizeof *a);
        uint16_t *ra = malloc(bits * sizeof *ra), *rb = malloc(bits * sizeof *rb);
        assert_true(a && ra && rb);
        for (int u8 = 0; u8 < 2; u8++) {
            /* amax below the input's largest: saturation is compared too. */
            run_int8(sh, cl, in, raw, wt, NULL, 1, 1.5f, u8, a, ra);
            gs_deform_conv_cap_kernels(GS_DEFORM_KERNELS_PORTABLE);
            run_int8(sh, cl, in, raw, wt, NULL, 1, 1.5f, u8, a, rb);
            gs_deform_conv_cap_kernels(GS_DEFORM_KERNELS_AVX512);
            assert_memory_equal(ra, rb, bits * sizeof *ra);
        }
        free(in);
        free(raw);
        free(wt);
        free(a);
        free(ra);
        free(rb);
    }
}

static void bad_ranges_and_types_are_refused(void **state)
{
    (void)state;
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, 1, 16, 16, 4, 4);
    float wt[16 * 16 * 9] = {0};
    assert_null(gs_deform_conv_new_int8(&d, wt, NULL, 0, 1.0f, 1));
    assert_non_null(strstr(gs_error_get(), "bf16"));
    d.bf16 = 1;
    const float bad[] = {0.0f, -1.0f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(gs_deform_conv_new_int8(&d, wt, NULL, 0, bad[i], 0));
        assert_non_null(strstr(gs_error_get(), "range"));
    }
    gs_deform_conv *c = gs_deform_conv_new(&d, wt, NULL, 0);
    assert_non_null(c);
    assert_int_equal(gs_deform_conv_int8(c), 0);
    gs_deform_conv_destroy(&c);
}

int main(void)
{
    if (!gs_bf16_native() || !gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_vnni)) {
        printf("SKIP: the int8 deformable conv runs only where oneDNN has VNNI and native bf16, "
               "which this CPU lacks\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(random_shapes),
        cmocka_unit_test(huge_offsets_and_borders),
        cmocka_unit_test(zero_columns_give_bias),
        cmocka_unit_test(inputs_beyond_the_range_saturate),
        cmocka_unit_test(portable_matches_avx512),
        cmocka_unit_test(bad_ranges_and_types_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
