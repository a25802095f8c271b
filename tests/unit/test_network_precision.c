/*
 * Unit tests of the bf16 runtime (model/runtime.h gs_rt_plan_set_bf16, gs_rt_conv_make_bf16)
 * and of the precision setting (model/network.h): each bf16 step alone against the same step
 * in float32 on the same bf16-valued inputs (a conv with folded bias and ReLU from the plain
 * network input, a conv summing into its destination, max-pooling, a residual copy, the fused
 * depthwise transposed conv with its skip, a conv writing float32 offsets, a deformable conv
 * with float32 offsets, a conv writing a float32 output), held to a bf16 tolerance (pooling
 * and copies exact); the precision names, parsing and fallback; a bf16 model's states run the
 * multi-task network in bf16 and the small networks in float32 (their outputs bit-identical
 * to an fp32 model's).
 *
 * A CPU without native bf16 never runs these paths (gs_precision_usable falls back to fp32):
 * the test then exits 77 with a message and ctest reports it skipped.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/network.h"
#include "model/runtime.h"
#include "ops/cpu_rate.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"
#include "tests/unit/plan_tensors.h"

/* bf16 vs float32 on the same bf16 input: weights and outputs each rounded once (2^-9
 * relative), sums of up to a few hundred terms: 1% of the output scale. */
#define BF16_TOL 1e-2

static uint32_t rng = 1;

static float uniform(float lo, float hi)
{
    rng = rng * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(rng >> 8) / 16777216.0f;
}

static float *rand_buf(size_t n, float lo, float hi)
{
    float *b = malloc((n ? n : 1) * sizeof *b);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = uniform(lo, hi);
    return b;
}

static void compare_tol(const float *ref, const float *got, size_t n, const char *what, double tol)
{
    double scale = 0, err = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(ref[i]));
        double e = fabs((double)ref[i] - got[i]);
        err = e > err || isnan(e) ? (isnan(e) ? INFINITY : e) : err;
    }
    printf("%s: max |difference| %g of scale %g\n", what, err, scale);
    if (!(scale > 0 && err <= tol * scale))
        fail_msg("%s: max err %g, scale %g", what, err, scale);
}

static void compare(const float *ref, const float *got, size_t n, const char *what)
{
    compare_tol(ref, got, n, what, BF16_TOL);
}

/* Builds the same little program in a float32 and a bf16 plan, runs both on the same
 * bf16-valued input and compares every output. */
typedef struct {
    dnnl_engine_t e;
    gs_rt_conv c1, c2, up, off;
    float *dcn_w, *dcn_b;
    int c; /* channels of every layer but the input's 3 */
} program;

enum { H = 10, W = 12 };

static void program_init(program *g, int C)
{
    g->c = C;
    assert_int_equal(dnnl_engine_create(&g->e, dnnl_cpu, 0), dnnl_success);
    float *w1 = rand_buf(C * 3 * 9, -0.5f, 0.5f), *b1 = rand_buf(C, -0.5f, 0.5f);
    float *w2 = rand_buf(C * C * 9, -0.2f, 0.2f), *b2 = rand_buf(C, -0.5f, 0.5f);
    float *wu = rand_buf(C * 16, -0.5f, 0.5f);
    float *wo = rand_buf(27 * C * 9, -0.1f, 0.1f), *bo = rand_buf(27, -1, 1);
    g->dcn_w = rand_buf(C * C * 9, -0.2f, 0.2f);
    g->dcn_b = rand_buf(C, -0.5f, 0.5f);
    assert_int_equal(gs_rt_conv_init(&g->c1, g->e, 3, C, 3, 1, 1, 0, w1, b1), 0);
    assert_int_equal(gs_rt_conv_init(&g->c2, g->e, C, C, 3, 1, 1, 0, w2, b2), 0);
    assert_int_equal(gs_rt_conv_init(&g->up, g->e, C, C, 4, 2, 1, 1, wu, NULL), 0);
    assert_int_equal(gs_rt_conv_init(&g->off, g->e, C, 27, 3, 1, 1, 0, wo, bo), 0);
    gs_rt_conv *all[4] = {&g->c1, &g->c2, &g->up, &g->off};
    for (int i = 0; i < 4; i++)
        if (gs_rt_conv_make_bf16(all[i], g->e, 0))
            fail_msg("%s", gs_error_get());
    /* Again is a no-op. */
    void *before = g->c1.wr16;
    assert_int_equal(gs_rt_conv_make_bf16(&g->c1, g->e, 0), 0);
    assert_ptr_equal(before, g->c1.wr16);
    free(w1);
    free(b1);
    free(w2);
    free(b2);
    free(wu);
    free(wo);
    free(bo);
}

static void program_free(program *g)
{
    gs_rt_conv_free(&g->c1);
    gs_rt_conv_free(&g->c2);
    gs_rt_conv_free(&g->up);
    gs_rt_conv_free(&g->off);
    free(g->dcn_w);
    free(g->dcn_b);
    dnnl_engine_destroy(g->e);
}

enum {
    STEP_CONV_RELU,
    STEP_CONV_SUM,
    STEP_POOL,
    STEP_COPY,
    STEP_DECONV,
    STEP_OFFSETS,
    STEP_DCN,
    STEP_HEAD,
    N_STEPS
};
static const char *const step_names[N_STEPS] = {"conv + relu (plain input)",
                                                "conv summing into its destination",
                                                "max-pool",
                                                "copy",
                                                "transposed conv + skip",
                                                "offset conv (float32 out)",
                                                "deformable conv (float32 offsets)",
                                                "conv to a float32 output"};

/* One step alone in a plan of the given precision, on inputs made from the seed (the same
 * bf16-representable values for both precisions, so only the step's own rounding differs).
 * Returns the output as NCHW floats (caller frees) and its element count. */
static float *run_step(const program *g, int step, int bf16, int cl, uint32_t seed, size_t *count)
{
    const gs_act relu = {GS_ACT_RELU, 0.0f}, none = {GS_ACT_NONE, 0.0f};
    const int C = g->c;
    gs_rt_plan *p = gs_rt_plan_new(g->e, 2, 0);
    assert_non_null(p);
    gs_rt_plan_set_bf16(p, bf16);
    gs_rt_plan_set_channels_last(p, cl);
    rng = seed;
    int plain = step == STEP_CONV_RELU, cin = plain ? 3 : C, h = step == STEP_DECONV ? H : 2 * H,
        w = step == STEP_DECONV ? W : 2 * W;
    gs_rt_tensor *x = gs_rt_plan_tensor(p, cin, h, w, plain), *y = NULL, *aux = NULL;
    assert_non_null(x);
    assert_int_equal(x->bf16, bf16);
    size_t nx = (size_t)2 * cin * h * w, ny = (size_t)2 * C * 2 * H * 2 * W;
    float *vx = rand_buf(nx, -2, 2), *vy = rand_buf(ny, -2, 2);
    for (size_t i = 0; i < nx; i++)
        vx[i] = gs_bf16_to_f32(gs_bf16_from_f32(vx[i]));
    for (size_t i = 0; i < ny; i++)
        vy[i] = gs_bf16_to_f32(gs_bf16_from_f32(vy[i]));
    test_tensor_fill(x, vx);
    int rc = 0;
    switch (step) {
    case STEP_CONV_RELU:
        rc = gs_rt_plan_conv(p, &g->c1, x, &y, 0, relu);
        break;
    case STEP_CONV_SUM:
        y = gs_rt_plan_tensor(p, C, 2 * H, 2 * W, 0);
        test_tensor_fill(y, vy);
        rc = gs_rt_plan_conv(p, &g->c2, x, &y, 1, relu);
        break;
    case STEP_POOL:
        rc = gs_rt_plan_maxpool2(p, x, &y);
        break;
    case STEP_COPY:
        rc = gs_rt_plan_copy(p, x, &y);
        break;
    case STEP_DECONV:
        aux = gs_rt_plan_tensor(p, C, 2 * H, 2 * W, 0);
        test_tensor_fill(aux, vy);
        rc = gs_rt_plan_dwdeconv(p, &g->up, x, aux, &y);
        break;
    case STEP_OFFSETS:
    case STEP_HEAD:
        y = gs_rt_plan_tensor_f32(p, step == STEP_OFFSETS ? 27 : C, 2 * H, 2 * W, 0);
        rc = gs_rt_plan_conv(p, step == STEP_OFFSETS ? &g->off : &g->c2, x, &y, 0, none);
        assert_int_equal(y->bf16, 0);
        break;
    case STEP_DCN: {
        /* Offsets within 3 pixels and mask logits, float32 in both plans. */
        aux = gs_rt_plan_tensor_f32(p, 27, 2 * H, 2 * W, 0);
        float *vo = rand_buf((size_t)2 * 27 * 2 * H * 2 * W, -3, 3);
        test_tensor_fill(aux, vo);
        free(vo);
        rc = gs_rt_plan_dcn(p, g->dcn_w, g->dcn_b, C, x, aux, relu, 0.0f, 0, &y);
        break;
    }
    default:
        fail();
    }
    if (rc || gs_rt_plan_run(p))
        fail_msg("%s: %s", step_names[step], gs_error_get());
    if (step != STEP_OFFSETS && step != STEP_HEAD)
        assert_int_equal(y->bf16, bf16);
    assert_int_equal(y->cl, cl);
    *count = (size_t)y->n * y->c * y->h * y->w;
    float *out = test_tensor_read(y);
    gs_rt_plan_destroy(&p);
    free(vx);
    free(vy);
    return out;
}

static void test_bf16_steps_match_fp32(void **state)
{
    (void)state;
    program g;
    rng = 11;
    program_init(&g, 24);
    for (int step = 0; step < N_STEPS; step++) {
        size_t nf, nb;
        float *f = run_step(&g, step, 0, 0, 100 + step, &nf);
        float *b = run_step(&g, step, 1, 0, 100 + step, &nb);
        assert_int_equal(nf, nb);
        compare(f, b, nf, step_names[step]);
        /* Pool and copy move bf16 values: exact. */
        if (step == STEP_POOL || step == STEP_COPY)
            assert_memory_equal(f, b, nf * sizeof *f);
        free(f);
        free(b);
    }
    program_free(&g);
}

/* The same steps channels-last (the AMX layout; every step reads and writes it, batch 2):
 * float32 channels-last against float32 nChw16c to float32 rounding, and bf16 channels-last
 * against float32 nChw16c within the bf16 budget. 32 channels: channels-last deformable and
 * transposed convs take whole 16-channel blocks. */
static void test_steps_channels_last(void **state)
{
    (void)state;
    program g;
    rng = 12;
    program_init(&g, 32);
    for (int step = 0; step < N_STEPS; step++) {
        size_t nf, nc, nb;
        float *f = run_step(&g, step, 0, 0, 200 + step, &nf);
        float *fc = run_step(&g, step, 0, 1, 200 + step, &nc);
        float *bc = run_step(&g, step, 1, 1, 200 + step, &nb);
        assert_int_equal(nf, nc);
        assert_int_equal(nf, nb);
        compare_tol(f, fc, nf, step_names[step], 1e-5);
        compare(f, bc, nf, step_names[step]);
        free(f);
        free(fc);
        free(bc);
    }
    program_free(&g);
}

/* A bf16 source needs bf16 weights. */
static void test_bf16_conv_without_bf16_weights(void **state)
{
    (void)state;
    dnnl_engine_t e;
    assert_int_equal(dnnl_engine_create(&e, dnnl_cpu, 0), dnnl_success);
    float w[16 * 16 * 9] = {0};
    gs_rt_conv c;
    assert_int_equal(gs_rt_conv_init(&c, e, 16, 16, 3, 1, 1, 0, w, NULL), 0);
    gs_rt_plan *p = gs_rt_plan_new(e, 1, 0);
    gs_rt_plan_set_bf16(p, 1);
    gs_rt_tensor *x = gs_rt_plan_tensor(p, 16, 8, 8, 0), *y = NULL;
    const gs_act none = {GS_ACT_NONE, 0.0f};
    assert_int_equal(gs_rt_plan_conv(p, &c, x, &y, 0, none), -1);
    assert_non_null(strstr(gs_error_get(), "bf16 weights"));
    gs_rt_plan_destroy(&p);
    gs_rt_conv_free(&c);
    dnnl_engine_destroy(e);
}

static void test_precision_names(void **state)
{
    (void)state;
    gs_precision p;
    assert_string_equal(gs_precision_name(GS_PRECISION_FP32), "fp32");
    assert_string_equal(gs_precision_name(GS_PRECISION_BF16), "bf16");
    assert_int_equal(gs_precision_parse("bf16", &p), 0);
    assert_int_equal(p, GS_PRECISION_BF16);
    assert_int_equal(gs_precision_parse("fp32", &p), 0);
    assert_int_equal(p, GS_PRECISION_FP32);
    assert_int_equal(gs_precision_parse("int4", &p), -1);
    assert_non_null(strstr(gs_error_get(), "\"int8\""));
    assert_int_equal(gs_precision_parse("BF16", &p), -1);
    assert_int_equal(gs_precision_parse(NULL, &p), -1);
    /* This test only runs on a native-bf16 CPU: bf16 is usable, with a warning where it is
       slower than fp32 (ops/cpu_rate.h); with no bundle (no recorded budget) the default is
       fp32 (model/network.h; test_network_int8 covers recorded budgets). */
    char why[200] = "x";
    assert_int_equal(gs_precision_usable(GS_PRECISION_BF16, why, sizeof why), GS_PRECISION_BF16);
    if (gs_bf16_pays())
        assert_string_equal(why, "");
    else
        assert_non_null(strstr(why, "slower than fp32"));
    assert_int_equal(gs_precision_usable(GS_PRECISION_FP32, why, sizeof why), GS_PRECISION_FP32);
    assert_int_equal(gs_precision_default(NULL), GS_PRECISION_FP32);
}

static const char *bundle_path(void)
{
    static char p[4096];
    const char *b = getenv("GS_BUILD_DIR");
    assert_non_null(b);
    snprintf(p, sizeof p, "%s/tests/seeded/seed1.safetensors", b);
    return p;
}

/* The small networks run in float32 whatever the model's precision; the multi-task network
 * changes (so it did run in bf16) but stays within a bf16 distance on a random tile. */
static void test_model_precision(void **state)
{
    (void)state;
    gs_model *f = gs_model_load(bundle_path()), *b = gs_model_load(bundle_path());
    if (!f || !b)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_model_precision(b), GS_PRECISION_FP32);
    if (gs_model_set_precision(b, GS_PRECISION_BF16))
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_model_precision(b), GS_PRECISION_BF16);
    enum { S = 64 };
    uint8_t *rgb = malloc(S * S * 3);
    assert_non_null(rgb);
    for (size_t i = 0; i < S * S * 3; i++)
        rgb[i] = (uint8_t)(uniform(0, 256));
    float lf, lb;
    gs_net_state *sf = gs_net_state_new(f, GS_NET_BLUR, 1, S, S);
    gs_net_state *sb = gs_net_state_new(b, GS_NET_BLUR, 1, S, S);
    assert_true(sf && sb);
    assert_int_equal(gs_net_run_blur(sf, rgb, &lf), 0);
    assert_int_equal(gs_net_run_blur(sb, rgb, &lb), 0);
    assert_memory_equal(&lf, &lb, sizeof lf);
    gs_net_state_destroy(&sf);
    gs_net_state_destroy(&sb);

    float feat[2][512], seg[2][S / 4 * S / 4];
    gs_net_state *mf = gs_net_state_new(f, GS_NET_MULTITASK, 1, S, S);
    gs_net_state *mb = gs_net_state_new(b, GS_NET_MULTITASK, 1, S, S);
    if (!mf || !mb)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_net_run_multitask(mf, rgb, &lf, feat[0], seg[0]), 0);
    assert_int_equal(gs_net_run_multitask(mb, rgb, &lb, feat[1], seg[1]), 0);
    assert_memory_not_equal(feat[0], feat[1], sizeof feat[0]);
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < 512; i++) {
        dot += (double)feat[0][i] * feat[1][i];
        na += (double)feat[0][i] * feat[0][i];
        nb += (double)feat[1][i] * feat[1][i];
    }
    printf("multitask 64x64: feature cosine %.6f, logit %g vs %g\n", dot / sqrt(na * nb), lf, lb);
    assert_true(dot / sqrt(na * nb) >= 0.999);
    gs_net_state_destroy(&mf);
    gs_net_state_destroy(&mb);
    free(rgb);
    gs_model_destroy(&f);
    gs_model_destroy(&b);
}

int main(void)
{
    if (!gs_bf16_native()) {
        printf("SKIP: this CPU has no native bf16 (oneDNN's ISA lacks avx512_core_bf16), so "
               "the bf16 runtime never runs here\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precision_names),
        cmocka_unit_test(test_bf16_steps_match_fp32),
        cmocka_unit_test(test_steps_channels_last),
        cmocka_unit_test(test_bf16_conv_without_bf16_weights),
        cmocka_unit_test(test_model_precision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
