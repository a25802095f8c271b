/*
 * ops/deform_conv tests. Without arguments: cmocka unit tests (reference semantics on hand-made
 * cases, fast path vs reference on random shapes and edge cases). With `--parity DIR`: compares
 * reference and fast path against torchvision outputs written by
 * tests/parity/deform_conv_torch.py (see there for the file format).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/deform_conv.h"
#include "ops/error.h"
#include "tests/unit/layouts.h"
#include "tests/unit/testrand.h"

/* Fast vs reference: max |fast - ref| <= REL_TOL * max |ref| (plus a tiny floor for all-zero
 * outputs). The two differ only in summation order and in folding the mask into the weights. */
#define REL_TOL 1e-5

static float *const_buf(size_t n, float v)
{
    float *b = malloc((n ? n : 1) * sizeof *b);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = v;
    return b;
}

/* Runs the fast path on NCHW buffers through pack/unpack; out is NCHW [n,cout,ho,wo]. Also
 * checks that the blocked output's padding channels are zero. Returns 0 or -1. */
static int run_fast(const gs_deform_conv_desc *d, const float *input, const float *offset,
                    const float *mask, const float *weight, const float *bias, int relu, float *out)
{
    int ho, wo;
    if (gs_deform_conv_out_size(d, &ho, &wo) < 0)
        return -1;
    gs_deform_conv *c = gs_deform_conv_new(d, weight, bias, relu);
    if (!c)
        return -1;
    gs_deform_conv_scratch *s = gs_deform_conv_scratch_new(c);
    assert_non_null(s);
    float *in_b = malloc(gs_deform_conv_blocked_size(d->n, d->cin, d->h, d->w) * sizeof(float));
    size_t out_sz = gs_deform_conv_blocked_size(d->n, d->cout, ho, wo);
    float *out_b = malloc(out_sz * sizeof(float));
    assert_non_null(in_b);
    assert_non_null(out_b);
    for (size_t i = 0; i < out_sz; i++)
        out_b[i] = NAN; /* the run must overwrite everything */
    gs_deform_conv_pack_nchw16c(input, d->n, d->cin, d->h, d->w, in_b);
    int rc = gs_deform_conv_run(c, s, in_b, offset, mask, out_b);
    if (rc == 0) {
        gs_deform_conv_unpack_nchw16c(out_b, d->n, d->cout, ho, wo, out);
        int cb = (d->cout + 15) / 16;
        for (int n = 0; n < d->n; n++)
            for (int ch = d->cout; ch < cb * 16; ch++)
                for (size_t p = 0; p < (size_t)ho * wo; p++)
                    assert_true(
                        out_b[((size_t)n * cb + ch / 16) * ho * wo * 16 + p * 16 + ch % 16] ==
                        0.0f);
    }
    free(in_b);
    free(out_b);
    gs_deform_conv_scratch_destroy(&s);
    assert_null(s);
    gs_deform_conv_destroy(&c);
    assert_null(c);
    return rc;
}

static void relu_inplace(float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] < 0)
            a[i] = 0;
}

typedef struct {
    int n, cin, cout, h, w, kh, kw, sh, sw, ph, pw, dh, dw;
} shape;

static gs_deform_conv_desc desc_of(const shape *s)
{
    gs_deform_conv_desc d;
    memset(&d, 0, sizeof d);
    d.n = s->n;
    d.cin = s->cin;
    d.cout = s->cout;
    d.h = s->h;
    d.w = s->w;
    d.kh = s->kh;
    d.kw = s->kw;
    d.stride_h = s->sh;
    d.stride_w = s->sw;
    d.pad_h = s->ph;
    d.pad_w = s->pw;
    d.dil_h = s->dh;
    d.dil_w = s->dw;
    d.offset_format = GS_DEFORM_OFFSET_SPLIT;
    return d;
}

/* Random input/weights/bias, offsets uniform in [-off_range, off_range], mask in [0,1];
 * fast (with and without ReLU) must match the reference. */
static void check_random(const shape *sh, float off_range, int with_mask, int with_bias)
{
    gs_deform_conv_desc d = desc_of(sh);
    int ho, wo;
    assert_int_equal(gs_deform_conv_out_size(&d, &ho, &wo), 0);
    int taps = d.kh * d.kw;
    size_t n_in = (size_t)d.n * d.cin * d.h * d.w, n_out = (size_t)d.n * d.cout * ho * wo;
    size_t n_off = (size_t)d.n * 2 * taps * ho * wo, n_mask = (size_t)d.n * taps * ho * wo;
    float *in = rand_buf(n_in, -1, 1);
    float *off = rand_buf(n_off, -off_range, off_range);
    float *mask = with_mask ? rand_buf(n_mask, 0, 1) : NULL;
    float *wt = rand_buf((size_t)d.cout * d.cin * taps, -0.5f, 0.5f);
    float *bias = with_bias ? rand_buf((size_t)d.cout, -1, 1) : NULL;
    float *ref = malloc(n_out * sizeof *ref), *fast = malloc(n_out * sizeof *fast);
    assert_non_null(ref);
    assert_non_null(fast);

    assert_int_equal(gs_deform_conv2d_ref(&d, in, off, mask, wt, bias, ref), 0);
    assert_int_equal(run_fast(&d, in, off, mask, wt, bias, 0, fast), 0);
    double scale = max_abs(ref, n_out), err = max_diff(ref, fast, n_out);
    if (!(err <= REL_TOL * scale + 1e-30)) {
        print_error("n=%d cin=%d cout=%d %dx%d k=%dx%d s=%d p=%d d=%d: max err %g, max |ref| %g\n",
                    d.n, d.cin, d.cout, d.h, d.w, d.kh, d.kw, d.stride_h, d.pad_h, d.dil_h, err,
                    scale);
        fail();
    }
    assert_int_equal(run_fast(&d, in, off, mask, wt, bias, 1, fast), 0);
    relu_inplace(ref, n_out);
    assert_true(max_diff(ref, fast, n_out) <= REL_TOL * scale + 1e-30);

    free(in);
    free(off);
    free(mask);
    free(wt);
    free(bias);
    free(ref);
    free(fast);
}

/* ---- reference semantics on hand-computed cases ---------------------------------------- */

/* 1x1 kernel, one channel, weight 1: out(oy,ox) = mask * bilinear(in, oy + dy, ox + dx). */
static float ref_1x1_sample(const float *in, int h, int w, float dy, float dx, int oy, int ox)
{
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, 1, 1, 1, h, w);
    d.kh = d.kw = 1;
    d.pad_h = d.pad_w = 0;
    size_t hw = (size_t)h * w;
    float *off = const_buf(2 * hw, 0), *out = const_buf(hw, 0), one = 1.0f;
    off[(size_t)oy * w + ox] = dy;
    off[hw + (size_t)oy * w + ox] = dx;
    assert_int_equal(gs_deform_conv2d_ref(&d, in, off, NULL, &one, NULL, out), 0);
    float v = out[(size_t)oy * w + ox];
    free(off);
    free(out);
    return v;
}

static void reference_bilinear_rules(void **state)
{
    /* 3x4 map with distinct values. */
    const int h = 3, w = 4;
    float in[12];
    for (int i = 0; i < 12; i++)
        in[i] = (float)(i + 1);
    /* Integer offset: plain shift. */
    assert_float_equal(ref_1x1_sample(in, h, w, 1.0f, 2.0f, 0, 0), in[1 * 4 + 2], 0);
    /* Interior fractional point: bilinear mix. */
    float e = 0.75f * (0.5f * in[0 * 4 + 1] + 0.5f * in[0 * 4 + 2]) +
              0.25f * (0.5f * in[1 * 4 + 1] + 0.5f * in[1 * 4 + 2]);
    assert_float_equal(ref_1x1_sample(in, h, w, 0.25f, 1.5f, 0, 0), e, 1e-6);
    /* y = -0.5 keeps half of row 0 (zero padding, no clamping). */
    assert_float_equal(ref_1x1_sample(in, h, w, -0.5f, 0.0f, 0, 1), 0.5f * in[1], 1e-6);
    /* x = W - 0.5 keeps half of the last column. */
    assert_float_equal(ref_1x1_sample(in, h, w, 0.0f, 0.5f, 1, 3), 0.5f * in[1 * 4 + 3], 1e-6);
    /* Exactly -1 and exactly H are outside. */
    assert_float_equal(ref_1x1_sample(in, h, w, -1.0f, 0.0f, 0, 0), 0.0f, 0);
    assert_float_equal(ref_1x1_sample(in, h, w, 1.0f, 0.0f, 2, 0), 0.0f, 0);
    /* y = -0.999 still sees 0.001 of row 0: floor, not truncation toward zero. */
    assert_float_equal(ref_1x1_sample(in, h, w, -0.999f, 0.0f, 0, 2), 0.001f * in[2], 1e-5);
    /* A corner of (-0.5, -0.5): quarter of in[0]. */
    assert_float_equal(ref_1x1_sample(in, h, w, -0.5f, -0.5f, 0, 0), 0.25f * in[0], 1e-6);
}

/* Naive direct conv (NCHW, zero padding), the independent check for zero offsets. */
static void direct_conv(const gs_deform_conv_desc *d, int ho, int wo, const float *in,
                        const float *wt, const float *bias, float *out)
{
    for (int n = 0; n < d->n; n++)
        for (int co = 0; co < d->cout; co++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double acc = bias ? bias[co] : 0;
                    for (int ci = 0; ci < d->cin; ci++)
                        for (int i = 0; i < d->kh; i++)
                            for (int j = 0; j < d->kw; j++) {
                                int y = oy * d->stride_h - d->pad_h + i * d->dil_h;
                                int x = ox * d->stride_w - d->pad_w + j * d->dil_w;
                                if (y < 0 || y >= d->h || x < 0 || x >= d->w)
                                    continue;
                                acc += (double)wt[((co * d->cin + ci) * d->kh + i) * d->kw + j] *
                                       in[((size_t)(n * d->cin + ci) * d->h + y) * d->w + x];
                            }
                    out[(((size_t)n * d->cout + co) * ho + oy) * wo + ox] = (float)acc;
                }
}

static void zero_offsets_equal_dense_conv(void **state)
{
    const shape shapes[] = {
        {2, 17, 33, 7, 13, 3, 3, 1, 1, 1, 1, 1, 1},
        {1, 64, 20, 12, 9, 3, 3, 2, 2, 2, 2, 2, 2},
        {1, 3, 5, 8, 8, 3, 3, 1, 1, 0, 0, 1, 1},
    };
    rng_seed(11);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        gs_deform_conv_desc d = desc_of(&shapes[s]);
        int ho, wo;
        assert_int_equal(gs_deform_conv_out_size(&d, &ho, &wo), 0);
        int taps = d.kh * d.kw;
        size_t n_in = (size_t)d.n * d.cin * d.h * d.w, n_out = (size_t)d.n * d.cout * ho * wo;
        float *in = rand_buf(n_in, -1, 1);
        float *wt = rand_buf((size_t)d.cout * d.cin * taps, -0.5f, 0.5f);
        float *bias = rand_buf((size_t)d.cout, -1, 1);
        float *off = const_buf((size_t)d.n * 2 * taps * ho * wo, 0);
        float *mask = const_buf((size_t)d.n * taps * ho * wo, 1);
        float *dense = malloc(n_out * sizeof *dense), *ref = malloc(n_out * sizeof *ref),
              *fast = malloc(n_out * sizeof *fast);
        direct_conv(&d, ho, wo, in, wt, bias, dense);
        double scale = max_abs(dense, n_out);
        assert_int_equal(gs_deform_conv2d_ref(&d, in, off, mask, wt, bias, ref), 0);
        assert_true(max_diff(dense, ref, n_out) <= REL_TOL * scale);
        assert_int_equal(run_fast(&d, in, off, mask, wt, bias, 0, fast), 0);
        assert_true(max_diff(dense, fast, n_out) <= REL_TOL * scale);
        /* A NULL mask means 1. */
        assert_int_equal(run_fast(&d, in, off, NULL, wt, bias, 0, fast), 0);
        assert_true(max_diff(dense, fast, n_out) <= REL_TOL * scale);
        free(in);
        free(wt);
        free(bias);
        free(off);
        free(mask);
        free(dense);
        free(ref);
        free(fast);
    }
}

static void random_shapes_match_reference(void **state)
{
    const shape shapes[] = {
        {2, 3, 17, 7, 13, 3, 3, 1, 1, 1, 1, 1, 1},   /* odd sizes, batch 2 */
        {1, 17, 3, 13, 7, 3, 3, 1, 1, 1, 1, 1, 1},   /* Cin/Cout not multiples of 16 */
        {2, 64, 64, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1},  /* full blocks */
        {1, 32, 48, 11, 10, 3, 3, 2, 2, 1, 1, 1, 1}, /* stride 2 */
        {1, 17, 20, 9, 9, 3, 3, 1, 1, 0, 0, 1, 1},   /* padding 0 */
        {1, 20, 17, 8, 7, 3, 3, 1, 1, 2, 2, 1, 1},   /* padding 2 */
        {2, 16, 16, 12, 13, 3, 3, 1, 1, 2, 2, 2, 2}, /* dilation 2 */
        {1, 5, 7, 10, 9, 2, 3, 2, 1, 1, 0, 1, 2},    /* non-square everything */
        {1, 33, 40, 48, 45, 3, 3, 1, 1, 1, 1, 1, 1}, /* several tiles and a tail tile */
        {1, 272, 20, 6, 7, 3, 3, 1, 1, 1, 1, 1, 1},  /* 17 input blocks */
    };
    rng_seed(1);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        check_random(&shapes[s], 2.5f, 1, 1);
        check_random(&shapes[s], 0.7f, 0, 0);
    }
}

static void large_offsets_and_masks(void **state)
{
    /* Offsets mostly far outside: many all-zero taps, some in-range ones. */
    const shape sh = {2, 17, 19, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1};
    rng_seed(5);
    check_random(&sh, 15.0f, 1, 1);
}

/* Every sampling point outside the map: output = bias (and ReLU(bias)). */
static void offsets_far_outside_give_bias(void **state)
{
    const shape sh = {2, 17, 19, 7, 13, 3, 3, 1, 1, 1, 1, 1, 1};
    gs_deform_conv_desc d = desc_of(&sh);
    int ho = 7, wo = 13, taps = 9;
    rng_seed(3);
    size_t n_in = (size_t)d.n * d.cin * d.h * d.w, n_out = (size_t)d.n * d.cout * ho * wo;
    size_t n_off = (size_t)d.n * 2 * taps * ho * wo;
    float *in = rand_buf(n_in, -1, 1);
    float *wt = rand_buf((size_t)d.cout * d.cin * taps, -0.5f, 0.5f);
    float *bias = rand_buf((size_t)d.cout, -1, 1);
    float *off = malloc(n_off * sizeof *off);
    float *out = malloc(n_out * sizeof *out), *ref = malloc(n_out * sizeof *ref);
    const float far[] = {1000.0f, -1000.0f, 1e9f, -14.0f};
    for (size_t i = 0; i < n_off; i++)
        off[i] = far[i % 4] * (i % 3 ? 1.0f : -1.0f);
    for (int relu = 0; relu <= 1; relu++) {
        assert_int_equal(run_fast(&d, in, off, NULL, wt, bias, relu, out), 0);
        assert_int_equal(gs_deform_conv2d_ref(&d, in, off, NULL, wt, bias, ref), 0);
        for (size_t i = 0; i < n_out; i++) {
            int co = (int)(i / ((size_t)ho * wo)) % d.cout;
            float e = relu && bias[co] < 0 ? 0.0f : bias[co];
            assert_float_equal(out[i], e, 0);
            if (!relu)
                assert_float_equal(ref[i], e, 0);
        }
    }
    free(in);
    free(wt);
    free(bias);
    free(off);
    free(out);
    free(ref);
}

/* Fractional offsets that put sampling points exactly on the border cases. */
static void fractional_offsets_at_borders(void **state)
{
    const shape sh = {1, 17, 18, 6, 7, 3, 3, 1, 1, 1, 1, 1, 1};
    gs_deform_conv_desc d = desc_of(&sh);
    int ho = 6, wo = 7, taps = 9;
    rng_seed(4);
    size_t n_in = (size_t)d.cin * d.h * d.w, n_out = (size_t)d.cout * ho * wo;
    size_t ohw = (size_t)ho * wo;
    float *in = rand_buf(n_in, -1, 1);
    float *wt = rand_buf((size_t)d.cout * d.cin * taps, -0.5f, 0.5f);
    float *off = malloc(2 * taps * ohw * sizeof *off);
    float *out = malloc(n_out * sizeof *out), *ref = malloc(n_out * sizeof *ref);
    /* Target absolute coordinates around each border: -1, -0.999, -0.5, 0, H-1, H-0.5, H. */
    const float ty[] = {-1.0f, -0.999f, -0.5f, 0.0f, 5.0f, 5.5f, 6.0f, -0.25f, 5.75f};
    const float tx[] = {6.5f, -0.5f, 7.0f, -1.0f, 0.0f, 6.999f, 6.0f, -0.75f, 3.5f};
    for (int k = 0; k < taps; k++)
        for (size_t p = 0; p < ohw; p++) {
            int oy = (int)(p / wo), ox = (int)(p % wo), i = k / 3, j = k % 3;
            float y = ty[(k + p) % 9], x = tx[(k * 2 + p) % 9];
            off[(2 * k) * ohw + p] = y - (float)(oy - 1 + i);
            off[(2 * k + 1) * ohw + p] = x - (float)(ox - 1 + j);
        }
    assert_int_equal(gs_deform_conv2d_ref(&d, in, off, NULL, wt, NULL, ref), 0);
    assert_int_equal(run_fast(&d, in, off, NULL, wt, NULL, 0, out), 0);
    double scale = max_abs(ref, n_out);
    assert_true(scale > 0.1);
    assert_true(max_diff(ref, out, n_out) <= REL_TOL * scale);
    free(in);
    free(wt);
    free(off);
    free(out);
    free(ref);
}

static void zero_mask_gives_bias(void **state)
{
    const shape sh = {1, 20, 21, 5, 9, 3, 3, 1, 1, 1, 1, 1, 1};
    gs_deform_conv_desc d = desc_of(&sh);
    int ho = 5, wo = 9, taps = 9;
    rng_seed(6);
    size_t ohw = (size_t)ho * wo, n_out = (size_t)d.cout * ohw;
    float *in = rand_buf((size_t)d.cin * d.h * d.w, -1, 1);
    float *wt = rand_buf((size_t)d.cout * d.cin * taps, -0.5f, 0.5f);
    float *bias = rand_buf((size_t)d.cout, -1, 1);
    float *off = rand_buf(2 * taps * ohw, -2, 2);
    float *mask = const_buf(taps * ohw, 0);
    float *out = malloc(n_out * sizeof *out);
    assert_int_equal(run_fast(&d, in, off, mask, wt, bias, 0, out), 0);
    for (size_t i = 0; i < n_out; i++)
        assert_float_equal(out[i], bias[i / ohw], 0);
    free(in);
    free(wt);
    free(bias);
    free(off);
    free(mask);
    free(out);
}

/* The raw 27-channel conv_offset_mask output, NCHW and nChw16c: the module applies the
 * sigmoid to the last 9 channels. */
static void raw_offset_formats(void **state)
{
    const shape sh = {2, 17, 18, 7, 13, 3, 3, 1, 1, 1, 1, 1, 1};
    gs_deform_conv_desc d = desc_of(&sh);
    int ho = 7, wo = 13, taps = 9;
    rng_seed(7);
    size_t ohw = (size_t)ho * wo, n_out = (size_t)d.n * d.cout * ohw;
    float *in = rand_buf((size_t)d.n * d.cin * d.h * d.w, -1, 1);
    float *wt = rand_buf((size_t)d.cout * d.cin * taps, -0.5f, 0.5f);
    float *bias = rand_buf((size_t)d.cout, -1, 1);
    float *raw = rand_buf((size_t)d.n * 27 * ohw, -3, 3);
    float *off = malloc((size_t)d.n * 18 * ohw * sizeof *off);
    float *mask = malloc((size_t)d.n * 9 * ohw * sizeof *mask);
    float *raw_b = malloc(gs_deform_conv_blocked_size(d.n, 27, ho, wo) * sizeof *raw_b);
    float *ref = malloc(n_out * sizeof *ref), *out = malloc(n_out * sizeof *out);
    /* Some mask logits at the extremes, where exp under- or overflows. */
    const float extreme[] = {-200.0f, -88.5f, -87.0f, -20.0f, 0.0f, 17.0f, 87.0f, 88.5f, 1e30f};
    for (size_t e = 0; e < sizeof extreme / sizeof extreme[0]; e++)
        raw[(18 + e) * ohw + 5 * e] = extreme[e];
    test_split_raw_offsets(raw, d.n, ohw, off, mask);
    gs_deform_conv_pack_nchw16c(raw, d.n, 27, ho, wo, raw_b);
    assert_int_equal(gs_deform_conv2d_ref(&d, in, off, mask, wt, bias, ref), 0);
    double scale = max_abs(ref, n_out);

    d.offset_format = GS_DEFORM_OFFSET_RAW_NCHW;
    assert_int_equal(run_fast(&d, in, raw, NULL, wt, bias, 0, out), 0);
    assert_true(max_diff(ref, out, n_out) <= REL_TOL * scale);
    /* A separate mask is refused with a raw format. */
    assert_int_equal(run_fast(&d, in, raw, mask, wt, bias, 0, out), -1);
    assert_non_null(strstr(gs_error_get(), "mask"));

    d.offset_format = GS_DEFORM_OFFSET_RAW_BLOCKED;
    assert_int_equal(run_fast(&d, in, raw_b, NULL, wt, bias, 0, out), 0);
    assert_true(max_diff(ref, out, n_out) <= REL_TOL * scale);
    free(in);
    free(wt);
    free(bias);
    free(raw);
    free(off);
    free(mask);
    free(raw_b);
    free(ref);
    free(out);
}

/* The channels-last form (input, raw offsets and output NHWC) against the reference: batch 2,
 * maps whose pixel counts leave a partial last tile, offsets reaching past the borders. */
static void channels_last_matches_reference(void **state)
{
    const shape shapes[] = {
        {2, 64, 32, 23, 23, 3, 3, 1, 1, 1, 1, 1, 1},
        {1, 16, 48, 9, 31, 3, 3, 1, 1, 1, 1, 1, 1},
        {2, 32, 16, 12, 7, 3, 3, 2, 2, 1, 1, 1, 1},
    };
    rng_seed(21);
    for (int kern = GS_DEFORM_KERNELS_AVX512; kern <= GS_DEFORM_KERNELS_PORTABLE; kern++) {
        if ((int)gs_deform_conv_cap_kernels((gs_deform_kernels)kern) != kern)
            continue; /* this CPU lacks them */
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            gs_deform_conv_desc d = desc_of(&shapes[si]);
            int ho, wo;
            assert_int_equal(gs_deform_conv_out_size(&d, &ho, &wo), 0);
            size_t ohw = (size_t)ho * wo, hw = (size_t)d.h * d.w;
            size_t n_in = (size_t)d.n * d.cin * hw, n_out = (size_t)d.n * d.cout * ohw;
            float *in = rand_buf(n_in, -1, 1);
            float *wt = rand_buf((size_t)d.cout * d.cin * 9, -0.5f, 0.5f);
            float *bias = rand_buf((size_t)d.cout, -1, 1);
            float *raw = rand_buf((size_t)d.n * 27 * ohw, -4, 4);
            float *off = malloc((size_t)d.n * 18 * ohw * sizeof *off);
            float *mask = malloc((size_t)d.n * 9 * ohw * sizeof *mask);
            float *in_cl = malloc(n_in * sizeof *in_cl);
            float *raw_cl = malloc((size_t)d.n * 27 * ohw * sizeof *raw_cl);
            float *out_cl = malloc(n_out * sizeof *out_cl);
            float *ref = malloc(n_out * sizeof *ref), *out = malloc(n_out * sizeof *out);
            test_split_raw_offsets(raw, d.n, ohw, off, mask);
            assert_int_equal(gs_deform_conv2d_ref(&d, in, off, mask, wt, bias, ref), 0);
            relu_inplace(ref, n_out);
            test_nchw_nhwc(in, d.n, d.cin, hw, in_cl, 0);
            test_nchw_nhwc(raw, d.n, 27, ohw, raw_cl, 0);
            for (size_t i = 0; i < n_out; i++)
                out_cl[i] = NAN; /* the run must overwrite everything */
            d.nhwc = 1;
            d.offset_format = GS_DEFORM_OFFSET_RAW_NHWC;
            gs_deform_conv *c = gs_deform_conv_new(&d, wt, bias, 1);
            assert_non_null(c);
            gs_deform_conv_scratch *sc = gs_deform_conv_scratch_new(c);
            assert_non_null(sc);
            assert_int_equal(gs_deform_conv_run(c, sc, in_cl, raw_cl, NULL, out_cl), 0);
            test_nchw_nhwc(out_cl, d.n, d.cout, ohw, out, 1);
            double e = max_diff(ref, out, n_out), scale = max_abs(ref, n_out);
            if (!(e <= REL_TOL * scale)) {
                print_error("shape %zu kernels %d: max error %g of %g\n", si, kern, e, scale);
                fail();
            }
            gs_deform_conv_scratch_destroy(&sc);
            gs_deform_conv_destroy(&c);
            free(in);
            free(wt);
            free(bias);
            free(raw);
            free(off);
            free(mask);
            free(in_cl);
            free(raw_cl);
            free(out_cl);
            free(ref);
            free(out);
        }
    }
    gs_deform_conv_cap_kernels(GS_DEFORM_KERNELS_AVX512);

    /* Channel counts that are not whole 16-channel blocks, and offsets in another layout than
     * the conv's, are refused. */
    float w[17 * 16 * 9] = {0};
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, 1, 17, 16, 8, 8);
    d.nhwc = 1;
    d.offset_format = GS_DEFORM_OFFSET_RAW_NHWC;
    assert_null(gs_deform_conv_new(&d, w, NULL, 0));
    assert_non_null(strstr(gs_error_get(), "multiples of 16"));
    gs_deform_conv_desc_3x3(&d, 1, 16, 16, 8, 8);
    d.nhwc = 1;
    d.offset_format = GS_DEFORM_OFFSET_RAW_BLOCKED;
    assert_null(gs_deform_conv_new(&d, w, NULL, 0));
    assert_non_null(strstr(gs_error_get(), "channels-last offsets"));
    d.nhwc = 0;
    d.offset_format = GS_DEFORM_OFFSET_RAW_NHWC;
    assert_null(gs_deform_conv_new(&d, w, NULL, 0));
    gs_error_clear();
}

/* With a 1x1 kernel, weight 1, zero offsets and an all-ones input, the output is the mask
 * itself, so this measures the module's sigmoid directly: within 4e-7 relative of the
 * double-precision value (a few float ulps) over the whole range of logits. */
static void sigmoid_of_raw_mask_is_accurate(void **state)
{
    const int h = 37, w = 53, n = h * w; /* not a multiple of 16: masked tails too */
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, 1, 1, 1, h, w);
    d.kh = d.kw = 1;
    d.pad_h = d.pad_w = 0;
    float one = 1.0f;
    float *ones = const_buf((size_t)n, 1.0f), *raw = const_buf(3 * (size_t)n, 0.0f);
    float *out = malloc((size_t)n * sizeof *out);
    for (int p = 0; p < n; p++)
        raw[2 * n + p] = -100.0f + 200.0f * (float)p / (float)(n - 1);
    raw[2 * n + 7] = 1e30f;
    raw[2 * n + 8] = -1e30f;
    for (int fmt = GS_DEFORM_OFFSET_RAW_NCHW; fmt <= GS_DEFORM_OFFSET_RAW_BLOCKED; fmt++) {
        d.offset_format = (gs_deform_offset_format)fmt;
        float *arg = raw, *blocked = NULL;
        if (fmt == GS_DEFORM_OFFSET_RAW_BLOCKED) {
            blocked = malloc(gs_deform_conv_blocked_size(1, 3, h, w) * sizeof *blocked);
            gs_deform_conv_pack_nchw16c(raw, 1, 3, h, w, blocked);
            arg = blocked;
        }
        assert_int_equal(run_fast(&d, ones, arg, NULL, &one, NULL, 0, out), 0);
        for (int p = 0; p < n; p++) {
            double e = 1.0 / (1.0 + exp(-(double)raw[2 * n + p]));
            if (!(fabs(out[p] - e) <= 4e-7 * e + 1e-37)) {
                print_error("logit %g: sigmoid %.9g, expected %.9g\n", raw[2 * n + p], out[p], e);
                fail();
            }
        }
        free(blocked);
    }
    free(ones);
    free(raw);
    free(out);
}

static void repeated_runs_reuse_scratch(void **state)
{
    const shape sh = {1, 24, 40, 20, 17, 3, 3, 1, 1, 1, 1, 1, 1};
    gs_deform_conv_desc d = desc_of(&sh);
    int ho = 20, wo = 17, taps = 9;
    rng_seed(8);
    size_t ohw = (size_t)ho * wo;
    float *in = rand_buf((size_t)d.cin * d.h * d.w, -1, 1);
    float *wt = rand_buf((size_t)d.cout * d.cin * taps, -0.5f, 0.5f);
    float *off1 = rand_buf(2 * taps * ohw, -2, 2), *off2 = rand_buf(2 * taps * ohw, -2, 2);
    gs_deform_conv *c = gs_deform_conv_new(&d, wt, NULL, 0);
    assert_non_null(c);
    assert_int_equal(gs_deform_conv_get_desc(c)->cout, 40);
    gs_deform_conv_scratch *s = gs_deform_conv_scratch_new(c);
    assert_non_null(s);
    size_t nin = gs_deform_conv_blocked_size(1, d.cin, d.h, d.w);
    size_t nout = gs_deform_conv_blocked_size(1, d.cout, ho, wo);
    float *in_b = malloc(nin * sizeof *in_b), *a = malloc(nout * sizeof *a),
          *b = malloc(nout * sizeof *b), *a2 = malloc(nout * sizeof *a2);
    gs_deform_conv_pack_nchw16c(in, 1, d.cin, d.h, d.w, in_b);
    assert_int_equal(gs_deform_conv_run(c, s, in_b, off1, NULL, a), 0);
    assert_int_equal(gs_deform_conv_run(c, s, in_b, off2, NULL, b), 0);
    assert_int_equal(gs_deform_conv_run(c, s, in_b, off1, NULL, a2), 0);
    assert_memory_equal(a, a2, nout * sizeof *a);
    assert_true(max_diff(a, b, nout) > 1e-3);
    gs_deform_conv_scratch_destroy(&s);
    gs_deform_conv_destroy(&c);
    free(in);
    free(wt);
    free(off1);
    free(off2);
    free(in_b);
    free(a);
    free(b);
    free(a2);
}

/* The AVX2 and portable C kernels (used on machines without AVX-512, or without AVX2) against
 * the reference. */
static void slower_kernels_match_reference(void **state)
{
    const shape shapes[] = {
        {2, 3, 17, 7, 13, 3, 3, 1, 1, 1, 1, 1, 1},
        {1, 32, 48, 11, 10, 3, 3, 2, 2, 1, 1, 1, 1},
        {2, 16, 16, 12, 13, 3, 3, 1, 1, 2, 2, 2, 2},
    };
    for (int kern = GS_DEFORM_KERNELS_AVX2; kern <= GS_DEFORM_KERNELS_PORTABLE; kern++) {
        if ((int)gs_deform_conv_cap_kernels((gs_deform_kernels)kern) != kern)
            continue; /* this CPU lacks them */
        rng_seed(12);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            check_random(&shapes[s], 2.5f, 1, 1);
            check_random(&shapes[s], 20.0f, 0, 1);
        }
        fractional_offsets_at_borders(state);
        raw_offset_formats(state);
    }
    gs_deform_conv_cap_kernels(GS_DEFORM_KERNELS_AVX512);
}

/* Convs built under different OpenMP thread counts coexist (oneDNN caches primitives by the
 * thread count they were made for) and run under either count. */
static void thread_count_changes(void **state)
{
    const shape sh = {1, 40, 24, 30, 31, 3, 3, 1, 1, 1, 1, 1, 1};
    int before = omp_get_max_threads();
    rng_seed(13);
    omp_set_num_threads(1);
    check_random(&sh, 2.0f, 1, 1);
    omp_set_num_threads(2);
    check_random(&sh, 2.0f, 1, 1);
    omp_set_num_threads(1);
    check_random(&sh, 2.0f, 1, 1);
    omp_set_num_threads(before);
}

static void bad_arguments_are_errors(void **state)
{
    gs_deform_conv_desc d;
    int ho, wo;
    float w[9] = {0}, in[4] = {0}, off[72] = {0}, out[4];
    gs_deform_conv_desc_3x3(&d, 1, 1, 1, 2, 2);
    assert_int_equal(gs_deform_conv_out_size(&d, &ho, &wo), 0);
    assert_int_equal(ho, 2);
    assert_int_equal(wo, 2);

    d.pad_h = d.pad_w = 0; /* 3x3 kernel on a 2x2 map without padding */
    assert_int_equal(gs_deform_conv_out_size(&d, &ho, &wo), -1);
    assert_non_null(strstr(gs_error_get(), "larger"));
    assert_int_equal(gs_deform_conv2d_ref(&d, in, off, NULL, w, NULL, out), -1);
    assert_null(gs_deform_conv_new(&d, w, NULL, 0));

    gs_deform_conv_desc_3x3(&d, 1, 0, 1, 2, 2);
    assert_null(gs_deform_conv_new(&d, w, NULL, 0));
    assert_non_null(strstr(gs_error_get(), "bad shape"));
    gs_deform_conv_desc_3x3(&d, 1, 1, 1, 2, 2);
    d.stride_h = 0;
    assert_int_equal(gs_deform_conv_out_size(&d, &ho, &wo), -1);
    gs_deform_conv_desc_3x3(&d, 1, 1, 1, 2, 2);
    d.offset_format = (gs_deform_offset_format)7;
    assert_int_equal(gs_deform_conv_out_size(&d, &ho, &wo), -1);

    /* A scratch belongs to the conv it was made for. */
    gs_deform_conv_desc_3x3(&d, 1, 1, 1, 2, 2);
    gs_deform_conv *c1 = gs_deform_conv_new(&d, w, NULL, 0),
                   *c2 = gs_deform_conv_new(&d, w, NULL, 0);
    assert_non_null(c1);
    assert_non_null(c2);
    gs_deform_conv_scratch *s1 = gs_deform_conv_scratch_new(c1);
    float in_b[64] = {0}, out_b[64];
    assert_int_equal(gs_deform_conv_run(c2, s1, in_b, off, NULL, out_b), -1);
    assert_int_equal(gs_deform_conv_run(c1, s1, in_b, off, NULL, out_b), 0);
    gs_deform_conv_scratch_destroy(&s1);
    gs_deform_conv_destroy(&c1);
    gs_deform_conv_destroy(&c2);
    gs_deform_conv_destroy(&c2); /* NULL is fine */
}

static void pack_unpack_round_trip(void **state)
{
    rng_seed(9);
    const int n = 2, c = 19, h = 3, w = 5;
    size_t plain = (size_t)n * c * h * w, blocked = gs_deform_conv_blocked_size(n, c, h, w);
    assert_int_equal(blocked, (size_t)n * 32 * h * w);
    float *a = rand_buf(plain, -1, 1), *b = const_buf(blocked, NAN), *back = malloc(plain * 4);
    gs_deform_conv_pack_nchw16c(a, n, c, h, w, b);
    /* channel 17 of image 1 at pixel (2,4) */
    assert_float_equal(b[((size_t)(1 * 2 + 1) * h * w + 2 * w + 4) * 16 + 1],
                       a[((size_t)(1 * c + 17) * h + 2) * w + 4], 0);
    for (int img = 0; img < n; img++)
        for (size_t p = 0; p < (size_t)h * w; p++)
            for (int l = c - 16; l < 16; l++)
                assert_float_equal(b[((size_t)(img * 2 + 1) * h * w + p) * 16 + l], 0.0f, 0);
    gs_deform_conv_unpack_nchw16c(b, n, c, h, w, back);
    assert_memory_equal(a, back, plain * sizeof(float));
    free(a);
    free(b);
    free(back);
}

/* ---- parity against torchvision ------------------------------------------------------- */

#define PARITY_TOL 1e-4

static float *read_f32(const char *dir, const char *name, const char *what, size_t count)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s.f32", dir, name, what);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "parity: cannot open %s\n", path);
        return NULL;
    }
    float *b = malloc((count ? count : 1) * sizeof *b);
    size_t got = b ? fread(b, sizeof *b, count, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != count || extra) {
        fprintf(stderr, "parity: %s: expected %zu floats\n", path, count);
        free(b);
        return NULL;
    }
    return b;
}

/* DIR/cases.txt: one case a line, "name n cin cout h w kh kw sh sw ph pw dh dw has_mask
 * has_bias"; files DIR/name.{input,offset,mask,weight,bias,out}.f32 hold float32 arrays in
 * torchvision's NCHW order. Returns the process exit code. */
static int parity_main(const char *dir)
{
    char path[4096], name[256];
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "parity: cannot open %s\n", path);
        return 2;
    }
    int failures = 0, cases = 0;
    shape s;
    int has_mask, has_bias;
    while (fscanf(f, "%255s %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d", name, &s.n, &s.cin,
                  &s.cout, &s.h, &s.w, &s.kh, &s.kw, &s.sh, &s.sw, &s.ph, &s.pw, &s.dh, &s.dw,
                  &has_mask, &has_bias) == 16) {
        gs_deform_conv_desc d = desc_of(&s);
        int ho, wo;
        if (gs_deform_conv_out_size(&d, &ho, &wo) < 0) {
            fprintf(stderr, "parity: %s: %s\n", name, gs_error_get());
            failures++;
            continue;
        }
        int taps = d.kh * d.kw;
        size_t ohw = (size_t)ho * wo, n_out = (size_t)d.n * d.cout * ohw;
        float *in = read_f32(dir, name, "input", (size_t)d.n * d.cin * d.h * d.w);
        float *off = read_f32(dir, name, "offset", (size_t)d.n * 2 * taps * ohw);
        float *mask = has_mask ? read_f32(dir, name, "mask", (size_t)d.n * taps * ohw) : NULL;
        float *wt = read_f32(dir, name, "weight", (size_t)d.cout * d.cin * taps);
        float *bias = has_bias ? read_f32(dir, name, "bias", (size_t)d.cout) : NULL;
        float *tv = read_f32(dir, name, "out", n_out);
        float *ref = malloc(n_out * sizeof *ref), *fast = malloc(n_out * sizeof *fast);
        if (!in || !off || (has_mask && !mask) || !wt || (has_bias && !bias) || !tv || !ref ||
            !fast) {
            failures++;
        } else if (gs_deform_conv2d_ref(&d, in, off, mask, wt, bias, ref) < 0 ||
                   run_fast(&d, in, off, mask, wt, bias, 0, fast) < 0) {
            fprintf(stderr, "parity: %s: %s\n", name, gs_error_get());
            failures++;
        } else {
            double scale = max_abs(tv, n_out);
            double e_ref = max_diff(tv, ref, n_out) / scale,
                   e_fast = max_diff(tv, fast, n_out) / scale;
            int ok = e_ref <= PARITY_TOL && e_fast <= PARITY_TOL;
            printf("parity %-14s max|tv| %-10.4g rel err ref %.3g fast %.3g (tol %g) %s\n", name,
                   scale, e_ref, e_fast, PARITY_TOL, ok ? "ok" : "FAIL");
            failures += !ok;
        }
        cases++;
        free(in);
        free(off);
        free(mask);
        free(wt);
        free(bias);
        free(tv);
        free(ref);
        free(fast);
    }
    fclose(f);
    if (cases == 0) {
        fprintf(stderr, "parity: no cases in %s\n", path);
        return 2;
    }
    printf("parity: %d cases, %d failed\n", cases, failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--parity") == 0)
        return parity_main(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reference_bilinear_rules),
        cmocka_unit_test(zero_offsets_equal_dense_conv),
        cmocka_unit_test(random_shapes_match_reference),
        cmocka_unit_test(large_offsets_and_masks),
        cmocka_unit_test(offsets_far_outside_give_bias),
        cmocka_unit_test(fractional_offsets_at_borders),
        cmocka_unit_test(zero_mask_gives_bias),
        cmocka_unit_test(raw_offset_formats),
        cmocka_unit_test(channels_last_matches_reference),
        cmocka_unit_test(sigmoid_of_raw_mask_is_accurate),
        cmocka_unit_test(repeated_runs_reuse_scratch),
        cmocka_unit_test(slower_kernels_match_reference),
        cmocka_unit_test(thread_count_changes),
        cmocka_unit_test(bad_arguments_are_errors),
        cmocka_unit_test(pack_unpack_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
