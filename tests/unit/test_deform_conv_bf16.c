/*
 * ops/deform_conv bf16 fast path (gs_deform_conv_run_bf16) against the float32 reference
 * (gs_deform_conv2d_ref) on random shapes (odd channel counts and sizes, batches, tails of a
 * tile) and edge cases: fractional samples at every border, zero offsets, offsets far outside
 * the map, huge offsets, a zero mask. Also: the portable and AVX-512 bf16 kernels agree bit
 * for bit, a bf16 conv refuses the float32 entry point and the other way round, and the bf16
 * rounding helpers round to nearest even.
 *
 * The reference gets the input already rounded to bf16 (what the network feeds) and the
 * float32 weights; the fast path rounds weights, gathered samples and outputs once each, so
 * it is held to BF16_TOL of the output scale. On a CPU without native bf16 the network never
 * runs this path (model/network.h gs_precision_usable), so the test exits 77 with a message
 * and ctest reports it skipped.
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

/* Three roundings of 2^-9 relative each (weights, samples, output) over sums of up to a few
 * hundred terms of both signs: 1% of the output scale is several times the worst seen, and a
 * wrong index or a missed corner is off by far more. */
#define BF16_TOL 1e-2

/* Rounds a buffer to bf16 values in place (what a bf16 activation holds). */
static void round_bf16(float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        a[i] = gs_bf16_to_f32(gs_bf16_from_f32(a[i]));
}

/* The bf16 fast path on NCHW float buffers (input already bf16 values): out NCHW float.
 * Checks the blocked output's padding channels are zero. raw_bits (may be NULL) receives the
 * blocked bf16 output. Returns the run's status. */
static int run_bf16(const gs_deform_conv_desc *d0, const float *input, const float *offset,
                    const float *mask, const float *weight, const float *bias, int relu, float *out,
                    uint16_t *raw_bits)
{
    gs_deform_conv_desc d = *d0;
    d.bf16 = 1;
    int ho, wo;
    assert_int_equal(gs_deform_conv_out_size(&d, &ho, &wo), 0);
    gs_deform_conv *c = gs_deform_conv_new(&d, weight, bias, relu);
    if (!c)
        fail_msg("%s", gs_error_get());
    gs_deform_conv_scratch *s = gs_deform_conv_scratch_new(c);
    assert_non_null(s);
    size_t in_sz = gs_deform_conv_blocked_size(d.n, d.cin, d.h, d.w);
    size_t out_sz = gs_deform_conv_blocked_size(d.n, d.cout, ho, wo);
    float *in_f = malloc(in_sz * sizeof(float)), *out_f = malloc(out_sz * sizeof(float));
    uint16_t *in_h = malloc(in_sz * sizeof(uint16_t)), *out_h = malloc(out_sz * sizeof(uint16_t));
    assert_true(in_f && out_f && in_h && out_h);
    gs_deform_conv_pack_nchw16c(input, d.n, d.cin, d.h, d.w, in_f);
    gs_bf16_from_f32_array(in_f, in_h, in_sz);
    for (size_t i = 0; i < out_sz; i++)
        out_h[i] = 0x7fc0; /* NaN: the run must overwrite everything */
    int rc = gs_deform_conv_run_bf16(c, s, in_h, offset, mask, out_h);
    if (rc == 0) {
        gs_bf16_to_f32_array(out_h, out_f, out_sz);
        gs_deform_conv_unpack_nchw16c(out_f, d.n, d.cout, ho, wo, out);
        int cb = (d.cout + 15) / 16;
        for (int n = 0; n < d.n; n++)
            for (int ch = d.cout; ch < cb * 16; ch++)
                for (size_t p = 0; p < (size_t)ho * wo; p++)
                    assert_int_equal(
                        out_h[((size_t)n * cb + ch / 16) * ho * wo * 16 + p * 16 + ch % 16], 0);
        if (raw_bits)
            memcpy(raw_bits, out_h, out_sz * sizeof(uint16_t));
    }
    free(in_f);
    free(out_f);
    free(in_h);
    free(out_h);
    gs_deform_conv_scratch_destroy(&s);
    gs_deform_conv_destroy(&c);
    return rc;
}

typedef struct {
    int n, cin, cout, h, w;
} shape;

/* Fast bf16 vs the float32 reference on the same bf16-valued input; offsets given. */
static void check_against_reference(const shape *sh, const float *off, const float *mask, int relu,
                                    const char *what)
{
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, sh->n, sh->cin, sh->cout, sh->h, sh->w);
    size_t n_in = (size_t)d.n * d.cin * d.h * d.w, n_out = (size_t)d.n * d.cout * d.h * d.w;
    float *in = rand_buf(n_in, -1, 1);
    round_bf16(in, n_in);
    float *wt = rand_buf((size_t)d.cout * d.cin * 9, -0.5f, 0.5f);
    float *bias = rand_buf((size_t)d.cout, -1, 1);
    float *ref = malloc(n_out * sizeof *ref), *fast = malloc(n_out * sizeof *fast);
    assert_true(ref && fast);
    assert_int_equal(gs_deform_conv2d_ref(&d, in, off, mask, wt, bias, ref), 0);
    if (relu)
        for (size_t i = 0; i < n_out; i++)
            ref[i] = ref[i] > 0 ? ref[i] : 0;
    if (run_bf16(&d, in, off, mask, wt, bias, relu, fast, NULL) != 0)
        fail_msg("%s: %s", what, gs_error_get());
    double scale = max_abs(ref, n_out), err = max_diff(ref, fast, n_out);
    if (!(err <= BF16_TOL * scale)) {
        print_error("%s: n=%d cin=%d cout=%d %dx%d: max err %g, max |ref| %g\n", what, d.n, d.cin,
                    d.cout, d.h, d.w, err, scale);
        fail();
    }
    free(in);
    free(wt);
    free(bias);
    free(ref);
    free(fast);
}

static float *random_offsets(const shape *sh, float range)
{
    return rand_buf((size_t)sh->n * 18 * sh->h * sh->w, -range, range);
}

static void random_shapes(void **state)
{
    (void)state;
    static const shape shapes[] = {
        {1, 16, 16, 8, 8}, {2, 17, 18, 7, 5},
        {1, 3, 33, 9, 11}, {1, 64, 64, 24, 24}, /* several tiles with a tail */
        {3, 31, 1, 5, 13}, {1, 1, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        rng_seed(10 + i);
        const shape *sh = &shapes[i];
        float *off = random_offsets(sh, 3.0f);
        float *mask = rand_buf((size_t)sh->n * 9 * sh->h * sh->w, 0, 1);
        check_against_reference(sh, off, mask, 0, "random");
        check_against_reference(sh, off, mask, 1, "random + relu");
        check_against_reference(sh, off, NULL, 0, "random, no mask");
        free(off);
        free(mask);
    }
}

static void zero_and_huge_offsets(void **state)
{
    (void)state;
    const shape sh = {2, 20, 24, 9, 10};
    rng_seed(3);
    size_t n_off = (size_t)sh.n * 18 * sh.h * sh.w;
    float *off = calloc(n_off, sizeof *off);
    assert_non_null(off);
    check_against_reference(&sh, off, NULL, 0, "zero offsets");
    /* Huge: most samples fall outside the map (zero), some far ones land back inside. */
    float *big = random_offsets(&sh, 40.0f);
    check_against_reference(&sh, big, NULL, 0, "offsets within 40 px");
    for (size_t i = 0; i < n_off; i++)
        big[i] = i % 2 ? 1e6f : -3e5f;
    check_against_reference(&sh, big, NULL, 0, "offsets of 1e6 px");
    free(off);
    free(big);
}

/* Sample points at -1, -0.999, -0.5, 0, H-1, H-0.5, H and the like on every border. */
static void fractional_borders(void **state)
{
    (void)state;
    const shape sh = {1, 17, 18, 6, 7};
    rng_seed(4);
    size_t ohw = (size_t)sh.h * sh.w;
    float *off = malloc(18 * ohw * sizeof *off);
    assert_non_null(off);
    const float ty[] = {-1.0f, -0.999f, -0.5f, 0.0f, 5.0f, 5.5f, 6.0f, -0.25f, 5.75f};
    const float tx[] = {6.5f, -0.5f, 7.0f, -1.0f, 0.0f, 6.999f, 6.0f, -0.75f, 3.5f};
    for (int k = 0; k < 9; k++)
        for (size_t p = 0; p < ohw; p++) {
            int oy = (int)(p / sh.w), ox = (int)(p % sh.w), i = k / 3, j = k % 3;
            off[(2 * k) * ohw + p] = ty[(k + p) % 9] - (float)(oy - 1 + i);
            off[(2 * k + 1) * ohw + p] = tx[(k * 2 + p) % 9] - (float)(ox - 1 + j);
        }
    check_against_reference(&sh, off, NULL, 0, "borders");
    free(off);
}

/* A zero mask leaves the bias, rounded once to bf16. */
static void zero_mask_gives_bias(void **state)
{
    (void)state;
    const shape sh = {1, 16, 5, 4, 4};
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, sh.n, sh.cin, sh.cout, sh.h, sh.w);
    rng_seed(5);
    size_t hw = (size_t)sh.h * sh.w;
    float *in = rand_buf(sh.cin * hw, -1, 1);
    float *off = random_offsets(&sh, 2.0f);
    float *mask = calloc(9 * hw, sizeof *mask);
    float *wt = rand_buf((size_t)sh.cout * sh.cin * 9, -1, 1);
    float bias[5] = {0.1f, -2.5f, 3.14159f, 0.0f, 1e-3f};
    float *out = malloc((size_t)sh.cout * hw * sizeof *out);
    assert_true(mask && out);
    round_bf16(in, sh.cin * hw);
    assert_int_equal(run_bf16(&d, in, off, mask, wt, bias, 0, out, NULL), 0);
    for (int co = 0; co < sh.cout; co++)
        for (size_t p = 0; p < hw; p++)
            assert_true(out[co * hw + p] == gs_bf16_to_f32(gs_bf16_from_f32(bias[co])));
    free(in);
    free(off);
    free(mask);
    free(wt);
    free(out);
}

/* The portable bf16 gather computes exactly what the AVX-512 one does. */
static void portable_matches_avx512(void **state)
{
    (void)state;
    const shape sh = {2, 33, 20, 11, 9};
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, sh.n, sh.cin, sh.cout, sh.h, sh.w);
    rng_seed(6);
    size_t n_in = (size_t)sh.n * sh.cin * sh.h * sh.w, n_out = (size_t)sh.n * sh.cout * sh.h * sh.w;
    size_t blocked = gs_deform_conv_blocked_size(sh.n, sh.cout, sh.h, sh.w);
    float *in = rand_buf(n_in, -2, 2);
    round_bf16(in, n_in);
    float *off = random_offsets(&sh, 4.0f);
    float *mask = rand_buf((size_t)sh.n * 9 * sh.h * sh.w, 0, 1);
    float *wt = rand_buf((size_t)sh.cout * sh.cin * 9, -0.5f, 0.5f);
    float *a = malloc(n_out * sizeof *a), *b = malloc(n_out * sizeof *b);
    uint16_t *ra = malloc(blocked * sizeof *ra), *rb = malloc(blocked * sizeof *rb);
    assert_true(a && b && ra && rb);
    assert_int_equal(run_bf16(&d, in, off, mask, wt, NULL, 1, a, ra), 0);
    gs_deform_conv_cap_kernels(GS_DEFORM_KERNELS_PORTABLE);
    int rc = run_bf16(&d, in, off, mask, wt, NULL, 1, b, rb);
    gs_deform_conv_cap_kernels(GS_DEFORM_KERNELS_AVX512);
    assert_int_equal(rc, 0);
    assert_memory_equal(ra, rb, blocked * sizeof *ra);
    free(in);
    free(off);
    free(mask);
    free(wt);
    free(a);
    free(b);
    free(ra);
    free(rb);
}

/* The channels-last bf16 conv (NHWC input, raw NHWC offsets, NHWC output: what the network
 * runs on AMX) on NCHW float buffers; out NCHW float, bits (may be NULL) the raw bf16 output. */
static void run_bf16_cl(const shape *sh, const float *input, const float *raw, const float *weight,
                        const float *bias, float *out, uint16_t *bits)
{
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, sh->n, sh->cin, sh->cout, sh->h, sh->w);
    d.bf16 = 1;
    d.nhwc = 1;
    d.offset_format = GS_DEFORM_OFFSET_RAW_NHWC;
    size_t hw = (size_t)sh->h * sh->w, n_in = (size_t)sh->n * sh->cin * hw;
    size_t n_out = (size_t)sh->n * sh->cout * hw;
    gs_deform_conv *c = gs_deform_conv_new(&d, weight, bias, 1);
    if (!c)
        fail_msg("%s", gs_error_get());
    gs_deform_conv_scratch *s = gs_deform_conv_scratch_new(c);
    assert_non_null(s);
    uint16_t *in_h = malloc(n_in * sizeof *in_h), *out_h = malloc(n_out * sizeof *out_h);
    float *raw_cl = malloc((size_t)sh->n * 27 * hw * sizeof *raw_cl);
    assert_true(in_h && out_h && raw_cl);
    for (int n = 0; n < sh->n; n++)
        for (size_t p = 0; p < hw; p++) {
            for (int ch = 0; ch < sh->cin; ch++)
                in_h[((size_t)n * hw + p) * sh->cin + ch] =
                    gs_bf16_from_f32(input[((size_t)n * sh->cin + ch) * hw + p]);
            for (int ch = 0; ch < 27; ch++)
                raw_cl[((size_t)n * hw + p) * 27 + ch] = raw[((size_t)n * 27 + ch) * hw + p];
        }
    for (size_t i = 0; i < n_out; i++)
        out_h[i] = 0x7fc0; /* NaN: the run must overwrite everything */
    if (gs_deform_conv_run_bf16(c, s, in_h, raw_cl, NULL, out_h) != 0)
        fail_msg("%s", gs_error_get());
    for (int n = 0; n < sh->n; n++)
        for (size_t p = 0; p < hw; p++)
            for (int ch = 0; ch < sh->cout; ch++)
                out[((size_t)n * sh->cout + ch) * hw + p] =
                    gs_bf16_to_f32(out_h[((size_t)n * hw + p) * sh->cout + ch]);
    if (bits)
        memcpy(bits, out_h, n_out * sizeof *bits);
    free(in_h);
    free(out_h);
    free(raw_cl);
    gs_deform_conv_scratch_destroy(&s);
    gs_deform_conv_destroy(&c);
}

/* Channels-last bf16 against the float32 reference, and its 32-channel AVX-512 gather against
 * the portable one bit for bit: 48 input channels end with a half step of 16, the 23 x 23 map
 * leaves a partial last tile, offsets reach past every border. */
static void channels_last(void **state)
{
    (void)state;
    static const shape shapes[] = {{1, 64, 32, 23, 23}, {2, 48, 16, 9, 13}, {1, 32, 64, 12, 12}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *sh = &shapes[i];
        rng_seed(40 + i);
        gs_deform_conv_desc d;
        gs_deform_conv_desc_3x3(&d, sh->n, sh->cin, sh->cout, sh->h, sh->w);
        size_t hw = (size_t)sh->h * sh->w, n_in = (size_t)sh->n * sh->cin * hw;
        size_t n_out = (size_t)sh->n * sh->cout * hw;
        float *in = rand_buf(n_in, -1, 1);
        round_bf16(in, n_in);
        float *raw = rand_buf((size_t)sh->n * 27 * hw, -4, 4);
        float *off = malloc((size_t)sh->n * 18 * hw * sizeof *off);
        float *mask = malloc((size_t)sh->n * 9 * hw * sizeof *mask);
        float *wt = rand_buf((size_t)sh->cout * sh->cin * 9, -0.5f, 0.5f);
        float *bias = rand_buf((size_t)sh->cout, -1, 1);
        float *ref = malloc(n_out * sizeof *ref), *fast = malloc(n_out * sizeof *fast);
        uint16_t *ba = malloc(n_out * sizeof *ba), *bb = malloc(n_out * sizeof *bb);
        assert_true(off && mask && ref && fast && ba && bb);
        test_split_raw_offsets(raw, sh->n, hw, off, mask);
        assert_int_equal(gs_deform_conv2d_ref(&d, in, off, mask, wt, bias, ref), 0);
        for (size_t k = 0; k < n_out; k++)
            ref[k] = ref[k] > 0 ? ref[k] : 0;
        run_bf16_cl(sh, in, raw, wt, bias, fast, ba);
        double scale = max_abs(ref, n_out), err = max_diff(ref, fast, n_out);
        if (!(err <= BF16_TOL * scale)) {
            print_error("channels-last %zu: max err %g, max |ref| %g\n", i, err, scale);
            fail();
        }
        gs_deform_conv_cap_kernels(GS_DEFORM_KERNELS_PORTABLE);
        run_bf16_cl(sh, in, raw, wt, bias, fast, bb);
        gs_deform_conv_cap_kernels(GS_DEFORM_KERNELS_AVX512);
        assert_memory_equal(ba, bb, n_out * sizeof *ba);
        free(in);
        free(raw);
        free(off);
        free(mask);
        free(wt);
        free(bias);
        free(ref);
        free(fast);
        free(ba);
        free(bb);
    }
}

static void entry_points_check_the_type(void **state)
{
    (void)state;
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, 1, 16, 16, 4, 4);
    float wt[16 * 16 * 9] = {0};
    float fbuf[16 * 16] = {0}, off[18 * 16] = {0};
    uint16_t hbuf[16 * 16] = {0};
    gs_deform_conv *f32 = gs_deform_conv_new(&d, wt, NULL, 0);
    d.bf16 = 1;
    gs_deform_conv *b16 = gs_deform_conv_new(&d, wt, NULL, 0);
    assert_true(f32 && b16);
    gs_deform_conv_scratch *sf = gs_deform_conv_scratch_new(f32);
    gs_deform_conv_scratch *sb = gs_deform_conv_scratch_new(b16);
    assert_true(sf && sb);
    assert_int_equal(gs_deform_conv_run(b16, sb, fbuf, off, NULL, fbuf), -1);
    assert_non_null(strstr(gs_error_get(), "bf16"));
    assert_int_equal(gs_deform_conv_run_bf16(f32, sf, hbuf, off, NULL, hbuf), -1);
    assert_non_null(strstr(gs_error_get(), "float32"));
    assert_int_equal(gs_deform_conv_run_bf16(b16, sb, hbuf, off, NULL, hbuf), 0);
    gs_deform_conv_scratch_destroy(&sf);
    gs_deform_conv_scratch_destroy(&sb);
    gs_deform_conv_destroy(&f32);
    gs_deform_conv_destroy(&b16);
}

static void rounding_is_nearest_even(void **state)
{
    (void)state;
    /* 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties go to the even mantissa (1). */
    assert_int_equal(gs_bf16_from_f32(1.0f + 0x1p-8f), 0x3f80);
    /* 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6. */
    assert_int_equal(gs_bf16_from_f32(1.0f + 3 * 0x1p-8f), 0x3f82);
    assert_int_equal(gs_bf16_from_f32(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    assert_int_equal(gs_bf16_from_f32(-2.0f), 0xc000);
    assert_true(gs_bf16_to_f32(gs_bf16_from_f32(INFINITY)) == INFINITY);
    assert_true(isnan(gs_bf16_to_f32(gs_bf16_from_f32(NAN))));
    assert_true(gs_bf16_to_f32(0x3fc0) == 1.5f);
}

int main(void)
{
    if (!gs_bf16_native()) {
        printf("SKIP: this CPU has no native bf16 (oneDNN's ISA lacks avx512_core_bf16), so "
               "the bf16 path never runs here\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rounding_is_nearest_even),    cmocka_unit_test(random_shapes),
        cmocka_unit_test(zero_and_huge_offsets),       cmocka_unit_test(fractional_borders),
        cmocka_unit_test(zero_mask_gives_bias),        cmocka_unit_test(portable_matches_avx512),
        cmocka_unit_test(entry_points_check_the_type), cmocka_unit_test(channels_last),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
