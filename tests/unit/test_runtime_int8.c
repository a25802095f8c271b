/*
 * Unit tests of the int8 runtime (model/runtime.h gs_rt_conv_make_int8, gs_rt_plan_set_int8),
 * the calibration hook (gs_rt_plan_set_observe) and the bundle writer calibrate uses
 * (model/weights.h gs_weights_write_with_meta).
 *
 * Each int8 conv is checked twice against a double-precision reference on random and
 * edge-case inputs: (1) exactly, up to float rounding, against an emulation of the integer
 * arithmetic (source round(x * in_scale) saturated to u8/s8, the stored s8 weights, int32
 * sums, then (acc + bias8) * oscale, sum and ReLU), which catches any wrong scale, bias
 * domain, layout or saturation; (2) against the float convolution within the quantisation
 * bound of runtime.h: per output, sum |w| * (step_x / 2) + sum |x| * (step_w[o] / 2), with
 * step_x = 1 / in_scale and step_w[o] = max |w[o]| / 127, for sources inside the calibrated
 * range. A CPU without VNNI still runs them (oneDNN's reference int8 conv), only slower.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/runtime.h"
#include "model/weights.h"
#include "ops/deform_conv.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"
#include "tests/unit/plan_tensors.h"

typedef struct {
    int cin, cout, k, stride, h, w;
    int sum, relu, u8, bias;
    float amax; /* calibrated range */
    float xmin; /* source values in [xmin, xmax] */
    float xmax;
    int zeros; /* source all zeros */
    int bf16;  /* bf16 plan (source and destination bf16) */
} geom;

static uint32_t rng = 12345u;

static float frand(void) /* [0, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 16777216.0f;
}

static float round_bf16(float v)
{
    return gs_bf16_to_f32(gs_bf16_from_f32(v));
}

static void run_case(const geom *g)
{
    dnnl_engine_t e;
    assert_int_equal(dnnl_engine_create(&e, dnnl_cpu, 0), dnnl_success);
    int k = g->k, pad = k / 2, s = g->stride;
    int ho = (g->h + 2 * pad - k) / s + 1, wo = (g->w + 2 * pad - k) / s + 1;
    size_t nw = (size_t)g->cout * g->cin * k * k, nx = (size_t)g->cin * g->h * g->w,
           ny = (size_t)g->cout * ho * wo;
    float *wt = malloc(nw * sizeof(float)), *b = malloc(g->cout * sizeof(float));
    float *x = malloc(nx * sizeof(float)), *prev = malloc(ny * sizeof(float));
    for (size_t i = 0; i < nw; i++)
        wt[i] = (frand() - 0.5f) * (1.0f + (float)(i / (nw / g->cout) % 3)); /* scales differ */
    for (int o = 0; o < g->cout; o++)
        b[o] = (frand() - 0.5f) * 2.0f;
    if (g->cout > 1) /* an all-zero output channel: scale 1, weights 0 */
        memset(wt + nw / g->cout, 0, nw / g->cout * sizeof(float));
    for (size_t i = 0; i < nx; i++) {
        x[i] = g->zeros ? 0.0f : g->xmin + (g->xmax - g->xmin) * frand();
        if (g->bf16)
            x[i] = round_bf16(x[i]);
    }
    for (size_t i = 0; i < ny; i++)
        prev[i] = g->bf16 ? round_bf16(frand() - 0.5f) : frand() - 0.5f;
    gs_rt_conv cv;
    assert_int_equal(gs_rt_conv_init(&cv, e, g->cin, g->cout, k, s, pad, 0, wt, g->bias ? b : NULL),
                     0);
    if (g->bf16)
        assert_int_equal(gs_rt_conv_make_bf16(&cv, e, 0), 0);
    assert_int_equal(gs_rt_conv_make_int8(&cv, e, g->amax, g->u8), 0);
    assert_non_null(cv.w8);
    assert_float_equal(cv.in_scale, (g->u8 ? 255.0f : 127.0f) / g->amax, 1e-6 * cv.in_scale);

    gs_rt_plan *p = gs_rt_plan_new(e, 1, 0);
    assert_non_null(p);
    gs_rt_plan_set_bf16(p, g->bf16);
    gs_rt_plan_set_int8(p, 1);
    gs_rt_tensor *tx = gs_rt_plan_tensor(p, g->cin, g->h, g->w, 0), *to = NULL;
    assert_non_null(tx);
    if (g->sum) {
        to = gs_rt_plan_tensor(p, g->cout, ho, wo, 0);
        assert_non_null(to);
    }
    gs_act act = {g->relu ? GS_ACT_RELU : GS_ACT_NONE, 0.0f};
    assert_int_equal(gs_rt_plan_conv(p, &cv, tx, &to, g->sum, act), 0);
    /* Inputs are written after planning: buffers may be shared, never overwritten by it. */
    test_tensor_fill(tx, x);
    if (g->sum)
        test_tensor_fill(to, prev);
    assert_int_equal(gs_rt_plan_run(p), 0);
    float *y = test_tensor_read(to);

    /* Quantised source as the reorder makes it. */
    float lo = g->u8 ? 0.0f : -128.0f, hi = g->u8 ? 255.0f : 127.0f;
    size_t per = (size_t)g->cin * k * k;
    double worst_emu = 0.0, worst_ratio = 0.0;
    for (int o = 0; o < g->cout; o++) {
        double l1 = 0.0, maxw = 0.0;
        for (size_t i = 0; i < per; i++) {
            l1 += fabs(wt[(size_t)o * per + i]);
            maxw = fmax(maxw, fabs(wt[(size_t)o * per + i]));
        }
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                double acc = 0.0, ref = g->bias ? b[o] : 0.0, sumx = 0.0;
                for (int ci = 0; ci < g->cin; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = oy * s - pad + ky, ix = ox * s - pad + kx;
                            if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                                continue;
                            float xv = x[((size_t)ci * g->h + iy) * g->w + ix];
                            size_t wi = (((size_t)o * g->cin + ci) * k + ky) * k + kx;
                            float q = fminf(hi, fmaxf(lo, nearbyintf(xv * cv.in_scale)));
                            acc += (double)q * cv.w8[wi];
                            ref += (double)xv * wt[wi];
                            sumx += fabs(xv);
                        }
                double emu = (acc + (cv.bias8 ? cv.bias8[o] : 0.0)) * cv.oscale[o];
                size_t at = ((size_t)o * ho + oy) * wo + ox;
                if (g->sum) {
                    emu += prev[at];
                    ref += prev[at];
                }
                if (g->relu) {
                    emu = fmax(emu, 0.0);
                    ref = fmax(ref, 0.0);
                }
                /* bf16 destinations round once more (relative 2^-8). */
                double tol = g->bf16 ? 1e-5 + fabs(emu) / 128.0 : 1e-4 * (1.0 + fabs(emu));
                double d = fabs(y[at] - emu);
                if (d > tol)
                    fail_msg("cout %d at (%d,%d): int8 conv %g, emulated %g (|d| %g > %g)", o, oy,
                             ox, (double)y[at], emu, d, tol);
                worst_emu = fmax(worst_emu, d);
                if (g->xmax <= g->amax && g->xmin >= (g->u8 ? 0.0f : -g->amax)) {
                    double bound = l1 * 0.5 / cv.in_scale + sumx * 0.5 * maxw / 127.0 + tol;
                    double dr = fabs(y[at] - ref);
                    if (dr > bound)
                        fail_msg("cout %d at (%d,%d): int8 %g vs fp32 %g: |d| %g above the "
                                 "quantisation bound %g",
                                 o, oy, ox, (double)y[at], ref, dr, bound);
                    worst_ratio = fmax(worst_ratio, dr / bound);
                }
            }
    }
    printf("int8 conv %dx%d s%d %d->%d %dx%d%s%s%s%s: max |d| to emulation %.3g, worst error / "
           "bound %.3f\n",
           k, k, s, g->cin, g->cout, g->h, g->w, g->u8 ? " u8" : " s8", g->sum ? " sum" : "",
           g->relu ? " relu" : "", g->bf16 ? " bf16" : "", worst_emu, worst_ratio);
    gs_rt_plan_destroy(&p);
    gs_rt_conv_free(&cv);
    assert_null(cv.w8);
    dnnl_engine_destroy(e);
    free(wt);
    free(b);
    free(x);
    free(prev);
    free(y);
}

/* oneDNN's int8 convs match the integer emulation with VNNI; on an AVX2 CPU without it they
 * did not (0.18 where the emulation gives 0.34, 6.21 for 6.47). The network runs int8 only on
 * VNNI (gs_precision_usable), and these checks need it too. */
static int vnni_or_skip(void)
{
    if (gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_vnni))
        return 1;
    printf("no VNNI (oneDNN ISA below avx512_core_vnni): the int8 emulation checks do not apply\n");
    return 0;
}

static void test_int8_conv_random(void **state)
{
    (void)state;
    if (!vnni_or_skip())
        skip();
    /* 3x3 stride 1 with ReLU, stride 2, a 1x1 summing into its destination (Root's split and
     * the residual convs), channels not a multiple of 16. */
    const geom g[] = {
        {16, 32, 3, 1, 19, 21, 0, 1, 1, 1, 2.0f, 0.0f, 2.0f, 0, 0},
        {32, 64, 3, 2, 16, 16, 0, 1, 1, 1, 3.0f, 0.0f, 3.0f, 0, 0},
        {64, 24, 1, 1, 12, 10, 1, 1, 1, 0, 1.5f, 0.0f, 1.5f, 0, 0},
        {40, 16, 3, 1, 9, 9, 1, 0, 1, 1, 1.0f, 0.0f, 0.7f, 0, 0},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        run_case(&g[i]);
}

static void test_int8_conv_edges(void **state)
{
    (void)state;
    if (!vnni_or_skip())
        skip();
    const geom g[] = {
        /* All-zero source: the output is the bias. */
        {16, 16, 3, 1, 8, 8, 0, 0, 1, 1, 1.0f, 0.0f, 0.0f, 1, 0},
        /* Source beyond the calibrated range saturates at 255 (emulation only). */
        {16, 16, 3, 1, 8, 8, 0, 1, 1, 1, 0.5f, 0.0f, 2.0f, 0, 0},
        /* Negative values into a u8 conv clip to 0 (emulation only). */
        {16, 16, 3, 1, 8, 8, 0, 0, 1, 1, 1.0f, -1.0f, 1.0f, 0, 0},
        /* s8 source (leaky activations) of both signs, with a residual sum. */
        {32, 16, 3, 1, 10, 10, 1, 0, 0, 1, 2.0f, -2.0f, 2.0f, 0, 0},
        /* A tiny range (large in_scale). */
        {16, 32, 1, 1, 8, 8, 0, 1, 1, 1, 1e-3f, 0.0f, 1e-3f, 0, 0},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        run_case(&g[i]);
}

static void test_int8_conv_bf16_plan(void **state)
{
    (void)state;
    if (!gs_bf16_native()) {
        printf("no native bf16: the bf16 int8 plan is not run here\n");
        return;
    }
    const geom g[] = {
        {32, 32, 3, 1, 12, 12, 1, 1, 1, 1, 2.0f, 0.0f, 2.0f, 0, 1},
        {32, 64, 3, 2, 16, 16, 0, 1, 1, 1, 2.0f, 0.0f, 2.0f, 0, 1},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        run_case(&g[i]);
}

/* Fills x (c x h x w, NCHW values v) in its own layout, float32. */
static void fill(gs_rt_tensor *t, const float *v)
{
    if (!t->cl) {
        gs_deform_conv_pack_nchw16c(v, 1, t->c, t->h, t->w, t->data);
        return;
    }
    float *d = t->data;
    for (int ch = 0; ch < t->c; ch++)
        for (int i = 0; i < t->h * t->w; i++)
            d[(size_t)i * t->c + ch] = v[(size_t)ch * t->h * t->w + i];
}

/* The channels-last int8 path against the nChw16c one on a small graph: A feeds B alone, C
 * reads A's source too. Channels-last, A writes B's source already int8 and C reuses A's
 * quantised source: one quantising reorder for three convs, plus the two hand-overs to
 * nChw16c; nChw16c, each conv quantises (C still reuses A's) and reorders back. A source
 * written between two convs is quantised again. */
static void test_int8_channels_last(void **state)
{
    (void)state;
    dnnl_engine_t e;
    assert_int_equal(dnnl_engine_create(&e, dnnl_cpu, 0), dnnl_success);
    enum { CI = 16, CM = 32, H = 12, W = 10 };
    float *wa = malloc(sizeof(float) * CM * CI * 9), *wb = malloc(sizeof(float) * CI * CM * 9);
    float wc[CI * CI], ba[CM], x[CI * H * W], x2[CI * H * W];
    for (int i = 0; i < CM * CI * 9; i++) {
        wa[i] = (frand() - 0.5f) * 0.5f;
        wb[i] = (frand() - 0.5f) * 0.5f;
    }
    for (int i = 0; i < CI * CI; i++)
        wc[i] = frand() - 0.5f;
    for (int i = 0; i < CM; i++)
        ba[i] = frand() - 0.5f;
    for (int i = 0; i < CI * H * W; i++) {
        x[i] = 2.0f * frand();
        x2[i] = frand();
    }
    gs_rt_conv a, b, c;
    assert_int_equal(gs_rt_conv_init(&a, e, CI, CM, 3, 1, 1, 0, wa, ba), 0);
    assert_int_equal(gs_rt_conv_init(&b, e, CM, CI, 3, 1, 1, 0, wb, NULL), 0);
    assert_int_equal(gs_rt_conv_init(&c, e, CI, CI, 1, 1, 0, 0, wc, NULL), 0);
    assert_int_equal(gs_rt_conv_make_int8(&a, e, 2.0f, 1), 0);
    assert_int_equal(gs_rt_conv_make_int8(&b, e, 4.0f, 1), 0);
    assert_int_equal(gs_rt_conv_make_int8(&c, e, 2.0f, 1), 0);
    gs_act relu = {GS_ACT_RELU, 0.0f};
    gs_rt_tensor *out[2][2];
    gs_rt_plan *p[2];
    for (int cl = 0; cl < 2; cl++) {
        p[cl] = gs_rt_plan_new(e, 1, 0);
        assert_non_null(p[cl]);
        gs_rt_plan_set_int8(p[cl], 1);
        gs_rt_plan_set_channels_last(p[cl], cl);
        gs_rt_tensor *tx = gs_rt_plan_tensor(p[cl], CI, H, W, 0), *y = NULL, *z = NULL, *v = NULL;
        assert_non_null(tx);
        assert_int_equal(tx->cl, cl);
        assert_int_equal(gs_rt_plan_conv_feeding(p[cl], &a, tx, &y, relu, &b), 0);
        assert_int_equal(y->q, cl); /* int8 (u8) only channels-last */
        assert_int_equal(gs_rt_plan_conv(p[cl], &b, y, &z, 0, relu), 0);
        assert_int_equal(gs_rt_plan_conv(p[cl], &c, tx, &v, 0, relu), 0);
        if (cl) {
            /* An int8 tensor is for its int8 conv only. */
            gs_rt_tensor *bad = NULL;
            assert_int_equal(gs_rt_plan_copy(p[cl], y, &bad), -1);
            assert_int_equal(gs_rt_plan_to_blocked(p[cl], z, &out[cl][0]), 0);
            assert_int_equal(gs_rt_plan_to_blocked(p[cl], v, &out[cl][1]), 0);
            assert_int_equal(gs_rt_plan_reorders(p[cl]), 1 + 2);
        } else {
            out[cl][0] = z;
            out[cl][1] = v;
            assert_int_equal(gs_rt_plan_reorders(p[cl]), 2 + 2 + 1);
        }
        fill(tx, x);
        assert_int_equal(gs_rt_plan_run(p[cl]), 0);
    }
    /* C saw the same quantised source both ways: the same output. */
    assert_memory_equal(out[0][1]->data, out[1][1]->data, out[0][1]->nelems * sizeof(float));
    /* B's source: round(acc * oscale * s) in one step instead of via a float tensor; a value
     * may land on the other side of a rounding tie, nothing more. */
    const float *z0 = out[0][0]->data, *z1 = out[1][0]->data;
    double zmax = 0.0, dmax = 0.0;
    for (size_t i = 0; i < out[0][0]->nelems; i++) {
        zmax = fmax(zmax, fabs(z0[i]));
        dmax = fmax(dmax, fabs(z0[i] - z1[i]));
    }
    printf("channels-last int8 chain vs nChw16c: max |d| %.3g of max |z| %.3g\n", dmax, zmax);
    assert_true(zmax > 0.1);
    assert_true(dmax <= 1e-2 * zmax);
    gs_rt_plan_destroy(&p[0]);
    gs_rt_plan_destroy(&p[1]);

    /* A source written between two convs reading it: quantised again. */
    gs_rt_plan *q = gs_rt_plan_new(e, 1, 0);
    gs_rt_plan_set_int8(q, 1);
    gs_rt_plan_set_channels_last(q, 1);
    gs_rt_tensor *tx = gs_rt_plan_tensor(q, CI, H, W, 0), *t2 = gs_rt_plan_tensor(q, CI, H, W, 0);
    gs_rt_tensor *v1 = NULL, *v2 = NULL;
    assert_int_equal(gs_rt_plan_conv(q, &c, tx, &v1, 0, relu), 0);
    assert_int_equal(gs_rt_plan_add(q, tx, t2), 0);
    assert_int_equal(gs_rt_plan_conv(q, &c, tx, &v2, 0, relu), 0);
    assert_int_equal(gs_rt_plan_reorders(q), 2);
    fill(tx, x);
    fill(t2, x2);
    assert_int_equal(gs_rt_plan_run(q), 0);
    assert_true(memcmp(v1->data, v2->data, v1->nelems * sizeof(float)) != 0);
    gs_rt_plan_destroy(&q);
    gs_rt_conv_free(&a);
    gs_rt_conv_free(&b);
    gs_rt_conv_free(&c);
    free(wa);
    free(wb);
    dnnl_engine_destroy(e);
}

static void test_make_int8_errors(void **state)
{
    (void)state;
    dnnl_engine_t e;
    assert_int_equal(dnnl_engine_create(&e, dnnl_cpu, 0), dnnl_success);
    float w[16 * 16 * 9] = {0}, dw[16 * 4] = {0};
    gs_rt_conv c, d;
    assert_int_equal(gs_rt_conv_init(&c, e, 16, 16, 3, 1, 1, 0, w, NULL), 0);
    assert_int_equal(gs_rt_conv_make_int8(&c, e, 0.0f, 1), -1);
    assert_non_null(strstr(gs_error_get(), "not a positive number"));
    assert_int_equal(gs_rt_conv_make_int8(&c, e, NAN, 1), -1);
    assert_int_equal(gs_rt_conv_make_int8(&c, e, INFINITY, 1), -1);
    /* Positive but so small that the scales leave float: an error, not a conv of 0 * inf. */
    assert_int_equal(gs_rt_conv_make_int8(&c, e, 1e-40f, 1), -1);
    assert_non_null(strstr(gs_error_get(), "no usable int8 scale"));
    assert_null(c.w8);
    /* Vanishing (denormal) weights quantise to 0 with finite scales. */
    float tiny[16 * 16 * 9];
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
        tiny[i] = 1e-39f;
    gs_rt_conv t;
    assert_int_equal(gs_rt_conv_init(&t, e, 16, 16, 3, 1, 1, 0, tiny, NULL), 0);
    assert_int_equal(gs_rt_conv_make_int8(&t, e, 1.0f, 1), 0);
    for (int o = 0; o < 16; o++)
        assert_true(isfinite(t.oscale[o]) && t.oscale[o] > 0.0f);
    gs_rt_conv_free(&t);
    /* A transposed conv is never quantised. */
    assert_int_equal(gs_rt_conv_init(&d, e, 16, 16, 2, 2, 0, 1, dw, NULL), 0);
    assert_int_equal(gs_rt_conv_make_int8(&d, e, 1.0f, 1), -1);
    assert_non_null(strstr(gs_error_get(), "transposed"));
    /* Again replaces the scales. */
    assert_int_equal(gs_rt_conv_make_int8(&c, e, 1.0f, 1), 0);
    assert_int_equal(gs_rt_conv_make_int8(&c, e, 2.0f, 0), 0);
    assert_float_equal(c.in_scale, 63.5f, 1e-5);
    assert_int_equal(c.in_u8, 0);
    gs_rt_conv_free(&c);
    gs_rt_conv_free(&d);
    dnnl_engine_destroy(e);
}

static void test_observe(void **state)
{
    (void)state;
    dnnl_engine_t e;
    assert_int_equal(dnnl_engine_create(&e, dnnl_cpu, 0), dnnl_success);
    float w[16 * 16 * 9];
    for (int i = 0; i < 16 * 16 * 9; i++)
        w[i] = frand() - 0.5f;
    gs_rt_conv a, b;
    assert_int_equal(gs_rt_conv_init(&a, e, 16, 16, 3, 1, 1, 0, w, NULL), 0);
    assert_int_equal(gs_rt_conv_init(&b, e, 16, 16, 3, 1, 1, 0, w, NULL), 0);
    gs_rt_plan *p = gs_rt_plan_new(e, 1, 0);
    gs_rt_plan_set_observe(p, 1);
    gs_rt_tensor *x = gs_rt_plan_tensor(p, 16, 8, 8, 0), *y = NULL, *z = NULL;
    gs_act none = {GS_ACT_NONE, 0.0f};
    assert_int_equal(gs_rt_plan_conv(p, &a, x, &y, 0, none), 0);
    assert_int_equal(gs_rt_plan_conv(p, &b, y, &z, 0, none), 0);
    float *xd = x->data;
    for (size_t i = 0; i < x->nelems; i++)
        xd[i] = 0.25f;
    xd[5] = -3.5f; /* the largest |x| is a negative value */
    assert_int_equal(gs_rt_plan_run(p), 0);
    assert_float_equal(gs_rt_plan_observed(p, &a), 3.5f, 0.0f);
    float first_b = gs_rt_plan_observed(p, &b);
    assert_true(first_b > 0.0f);
    /* The maximum over runs: a smaller input later does not lower it. */
    for (size_t i = 0; i < x->nelems; i++)
        xd[i] = 0.1f;
    assert_int_equal(gs_rt_plan_run(p), 0);
    assert_float_equal(gs_rt_plan_observed(p, &a), 3.5f, 0.0f);
    assert_float_equal(gs_rt_plan_observed(p, &b), first_b, 0.0f);
    gs_rt_conv c;
    assert_int_equal(gs_rt_conv_init(&c, e, 16, 16, 3, 1, 1, 0, w, NULL), 0);
    assert_float_equal(gs_rt_plan_observed(p, &c), -1.0f, 0.0f);
    gs_rt_plan_destroy(&p);
    gs_rt_conv_free(&a);
    gs_rt_conv_free(&b);
    gs_rt_conv_free(&c);
    dnnl_engine_destroy(e);
}

/* A two-tensor safetensors file in memory: header JSON then data. */
static uint8_t *tiny_bundle(size_t *len)
{
    static const char hdr[] =
        "{\"__metadata__\":{\"format\":\"x\",\"int8.amax.multitask.old\":\"9\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,3],\"data_offsets\":[8,14]}}";
    size_t h = sizeof hdr - 1;
    *len = 8 + h + 14;
    uint8_t *buf = malloc(*len);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, hdr, h);
    for (int i = 0; i < 14; i++)
        buf[8 + h + i] = (uint8_t)(i * 17 + 1);
    return buf;
}

static void test_write_with_meta(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = tiny_bundle(&len);
    gs_weights *w = gs_weights_open_buffer(buf, len, "tiny");
    free(buf);
    assert_non_null(w);
    char path[64];
    snprintf(path, sizeof path, "test_int8_write_%d.safetensors", (int)getpid());
    const char *keys[] = {"int8.amax.multitask.x", "note"};
    const char *vals[] = {"1.5", "a \"quoted\" value"};
    assert_int_equal(gs_weights_write_with_meta(w, path, "int8.amax.", keys, vals, 2), 0);
    gs_weights *r = gs_weights_open(path);
    assert_non_null(r);
    assert_int_equal(gs_weights_count(r), 2);
    for (size_t i = 0; i < 2; i++) {
        const gs_tensor *t = gs_weights_at(w, i), *u = gs_weights_find(r, t->name);
        assert_non_null(u);
        assert_int_equal(u->dtype, t->dtype);
        assert_int_equal(u->ndim, t->ndim);
        assert_int_equal(u->nbytes, t->nbytes);
        assert_memory_equal(u->data, t->data, t->nbytes);
    }
    assert_string_equal(gs_weights_meta(r, "format"), "x");
    assert_string_equal(gs_weights_meta(r, "int8.amax.multitask.x"), "1.5");
    assert_string_equal(gs_weights_meta(r, "note"), "a \"quoted\" value");
    assert_null(gs_weights_meta(r, "int8.amax.multitask.old")); /* dropped */
    gs_weights_destroy(&r);
    /* A key written twice is refused and leaves no file behind. */
    const char *dup[] = {"format"};
    unlink(path);
    assert_int_equal(gs_weights_write_with_meta(w, path, NULL, dup, vals, 1), -1);
    assert_non_null(strstr(gs_error_get(), "format"));
    assert_int_equal(access(path, F_OK), -1);
    /* An unwritable path names it. */
    assert_int_equal(
        gs_weights_write_with_meta(w, "/nonexistent-dir/x.safetensors", NULL, NULL, NULL, 0), -1);
    assert_non_null(strstr(gs_error_get(), "/nonexistent-dir/x.safetensors"));
    gs_weights_destroy(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8_conv_random),    cmocka_unit_test(test_int8_conv_edges),
        cmocka_unit_test(test_int8_conv_bf16_plan), cmocka_unit_test(test_int8_channels_last),
        cmocka_unit_test(test_make_int8_errors),    cmocka_unit_test(test_observe),
        cmocka_unit_test(test_write_with_meta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
