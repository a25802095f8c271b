/*
 * Unit tests of the int8 precision at the network level (model/network.h): names and parsing,
 * the VNNI fallback of gs_precision_usable, a bundle without calibration falling back in
 * gs_model_set_precision, the calibrating state and its ranges (one per quantised layer: the
 * encoder's convs but the first and the decoder's 16 deformable convs, positive), and a model
 * calibrated in memory from those ranges running int8: its outputs differ from fp32 (so int8
 * ran) but stay close, and its deformable convs run int8 only when the bundle has their ranges
 * (a bundle calibrated before them still runs, with them in bf16). The seeded bundle of the
 * seeded_bundle fixture is used; tests/cli/calibrate.sh covers the command.
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

#include <oneapi/dnnl/dnnl.h>

#include "model/network.h"
#include "model/weights.h"
#include "ops/cpu_rate.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"

enum { S = 64 };

static const char *bundle_path(void)
{
    static char p[4096];
    const char *b = getenv("GS_BUILD_DIR");
    assert_non_null(b);
    snprintf(p, sizeof p, "%s/tests/seeded/seed1.safetensors", b);
    return p;
}

static int vnni(void)
{
    return gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_vnni);
}

/* On AMX the bf16 decoder runs channels-last too (model/network.c amx_native), so the four
 * encoder levels it reads need no conversion to nChw16c. */
static int hand_overs(void)
{
    return gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_amx) ? 0 : 4;
}

static void test_names_and_usable(void **state)
{
    (void)state;
    gs_precision p;
    assert_string_equal(gs_precision_name(GS_PRECISION_INT8), "int8");
    assert_int_equal(gs_precision_parse("int8", &p), 0);
    assert_int_equal(p, GS_PRECISION_INT8);
    assert_int_equal(gs_precision_parse("INT8", &p), -1);
    assert_non_null(strstr(gs_error_get(), "\"int8\""));
    char why[200];
    gs_precision u = gs_precision_usable(GS_PRECISION_INT8, why, sizeof why);
    if (vnni()) {
        assert_int_equal(u, GS_PRECISION_INT8);
        assert_string_equal(why, "");
    } else {
        assert_int_equal(u, gs_bf16_pays() ? GS_PRECISION_BF16 : GS_PRECISION_FP32);
        assert_non_null(strstr(why, "no VNNI"));
    }
    assert_int_equal(gs_precision_default(NULL), GS_PRECISION_FP32);
}

/* Writes the seeded bundle with the given precision.budget values (NULL: no key) and returns
 * what gs_precision_default picks for it. */
static gs_precision default_with(const char *bf16, const char *int8)
{
    gs_weights *w = gs_weights_open(bundle_path());
    if (!w)
        fail_msg("%s", gs_error_get());
    const char *keys[2], *vals[2];
    size_t n = 0;
    if (bf16) {
        keys[n] = GS_PRECISION_BUDGET_PREFIX "bf16";
        vals[n++] = bf16;
    }
    if (int8) {
        keys[n] = GS_PRECISION_BUDGET_PREFIX "int8";
        vals[n++] = int8;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/budget-%d.safetensors", getenv("GS_BUILD_DIR"),
             (int)getpid());
    assert_int_equal(gs_weights_write_with_meta(w, path, GS_PRECISION_BUDGET_PREFIX, keys, vals, n),
                     0);
    gs_weights_destroy(&w);
    w = gs_weights_open(path);
    unlink(path);
    if (!w)
        fail_msg("%s", gs_error_get());
    gs_precision p = gs_precision_default(w);
    assert_int_equal(gs_precision_budget_met(w, GS_PRECISION_FP32), 1);
    gs_weights_destroy(&w);
    return p;
}

/* The default is the fastest precision this CPU runs natively among those whose budget the
 * bundle records as met: int8 on VNNI, then bf16 where it pays, else fp32. */
static void test_default_follows_recorded_budgets(void **state)
{
    (void)state;
    gs_precision bf16_or_fp32 = gs_bf16_pays() ? GS_PRECISION_BF16 : GS_PRECISION_FP32;
    assert_int_equal(default_with(NULL, NULL), GS_PRECISION_FP32);
    assert_int_equal(default_with("met; 3 tiles", "met; 3 tiles"),
                     vnni() ? GS_PRECISION_INT8 : bf16_or_fp32);
    assert_int_equal(default_with("met", "unmet; score 0.2"), bf16_or_fp32);
    assert_int_equal(default_with(NULL, "met"), vnni() ? GS_PRECISION_INT8 : GS_PRECISION_FP32);
    assert_int_equal(default_with("unmet; seg 0.4", "unmet"), GS_PRECISION_FP32);
    /* Only "met" or "met;" at the start counts. */
    assert_int_equal(default_with("metric", "Met"), GS_PRECISION_FP32);
}

enum { RANGES_MAX = 96 };

typedef struct {
    char keys[RANGES_MAX][160];
    float amax[RANGES_MAX];
    int n;
} ranges;

static void keep(void *ctx, const char *key, float amax)
{
    ranges *r = ctx;
    assert_true(r->n < RANGES_MAX);
    snprintf(r->keys[r->n], sizeof r->keys[r->n], "%s", key);
    r->amax[r->n++] = amax;
}

static void test_uncalibrated_falls_back(void **state)
{
    (void)state;
    gs_model *m = gs_model_load(bundle_path());
    if (!m)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_model_has_int8(m), 0);
    assert_int_equal(gs_model_set_precision(m, GS_PRECISION_INT8), 0);
    assert_int_equal(gs_model_precision(m), gs_bf16_pays() ? GS_PRECISION_BF16 : GS_PRECISION_FP32);
    gs_model_destroy(&m);
}

static void test_calibrate_and_run(void **state)
{
    (void)state;
    gs_model *m = gs_model_load(bundle_path());
    if (!m)
        fail_msg("%s", gs_error_get());
    uint8_t *rgb = malloc(S * S * 3);
    assert_non_null(rgb);
    for (int y = 0; y < S; y++) /* smooth pinkish texture, not noise */
        for (int x = 0; x < S; x++)
            for (int c = 0; c < 3; c++)
                rgb[(y * S + x) * 3 + c] =
                    (uint8_t)(160 + 60 * sinf(0.3f * x + 0.2f * y + c) * cosf(0.17f * y));
    /* A plain state has no ranges. */
    ranges r = {0};
    gs_net_state *plain = gs_net_state_new(m, GS_NET_MULTITASK, 1, S, S);
    assert_non_null(plain);
    /* fp32 (and bf16) plans have no activation reorders at all. */
    assert_int_equal(gs_net_state_reorders(plain), 0);
    assert_int_equal(gs_net_state_calibration(plain, keep, &r), -1);
    /* A calibrating state that has not run has none either. */
    gs_net_state *cal = gs_net_state_new_calibrating(m, 1, S, S);
    assert_non_null(cal);
    float lf, f32[512], seg32[(S / 4) * (S / 4)];
    assert_int_equal(gs_net_run_multitask(plain, rgb, &lf, f32, seg32), 0);
    float lc, fc[512], segc[(S / 4) * (S / 4)];
    assert_int_equal(gs_net_run_multitask(cal, rgb, &lc, fc, segc), 0);
    /* Observing changes nothing: the calibrating state runs fp32. */
    assert_memory_equal(f32, fc, sizeof f32);
    int n = gs_net_state_calibration(cal, keep, &r);
    assert_int_equal(n, 49 + 16);
    assert_int_equal(r.n, 49 + 16);
    assert_string_equal(r.keys[0], "int8.amax.multitask.base.base_layer.3");
    int roots = 0, proj = 0, node = 0;
    for (int i = 0; i < r.n; i++) {
        assert_true(r.amax[i] > 0.0f && isfinite(r.amax[i]));
        if (i < 49) {
            assert_non_null(strstr(r.keys[i], "int8.amax.multitask.base."));
            roots += strstr(r.keys[i], ".root.conv[") != NULL;
        } else {
            /* The deformable convs, named as their weights ("<prefix>.conv.weight"). */
            assert_true(!strncmp(r.keys[i], "int8.amax.multitask.dla_up.", 27) ||
                        !strncmp(r.keys[i], "int8.amax.multitask.ida_up.", 27));
            assert_string_equal(r.keys[i] + strlen(r.keys[i]) - 5, ".conv");
            proj += strstr(r.keys[i], ".proj_") != NULL;
            node += strstr(r.keys[i], ".node_") != NULL;
        }
    }
    assert_true(roots > 0);
    assert_int_equal(proj, 8);
    assert_int_equal(node, 8);
    gs_net_state_destroy(&cal);

    /* Those ranges written into a bundle: the model runs int8. Also a bundle with the
       encoder's ranges only, as calibrated before the deformable convs had theirs. */
    char path[64], path_old[64];
    snprintf(path, sizeof path, "test_network_int8_%d.safetensors", (int)getpid());
    snprintf(path_old, sizeof path_old, "test_network_int8_old_%d.safetensors", (int)getpid());
    const char *keys[RANGES_MAX], *vals[RANGES_MAX];
    char vbuf[RANGES_MAX][32];
    for (int i = 0; i < r.n; i++) {
        keys[i] = r.keys[i];
        snprintf(vbuf[i], sizeof vbuf[i], "%.9g", (double)r.amax[i]);
        vals[i] = vbuf[i];
    }
    assert_int_equal(
        gs_weights_write_with_meta(gs_model_weights(m), path, "int8.amax.", keys, vals, r.n), 0);
    assert_int_equal(
        gs_weights_write_with_meta(gs_model_weights(m), path_old, "int8.amax.", keys, vals, 49), 0);
    gs_model *m8 = gs_model_load(path), *m8old = gs_model_load(path_old);
    unlink(path);
    unlink(path_old);
    if (!m8 || !m8old)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_model_has_int8(m8), 1);
    assert_int_equal(gs_model_has_int8(m8old), 1);
    if (!vnni()) {
        printf("no VNNI: the int8 run is not checked here\n");
    } else {
        assert_int_equal(gs_model_set_precision(m8, GS_PRECISION_INT8), 0);
        assert_int_equal(gs_model_precision(m8), GS_PRECISION_INT8);
        gs_net_state *s8 = gs_net_state_new(m8, GS_NET_MULTITASK, 1, S, S);
        assert_non_null(s8);
        /* The encoder runs channels-last: of its 49 int8 convs, the 15 whose source another
           int8 conv wrote int8 for them (each BasicBlock's conv2, the stem chain) and the 11
           reading a source some earlier int8 conv quantised need no reorder; 23 quantise,
           and (without AMX) the four levels the decoder reads are converted to nChw16c once
           each. With the float nChw16c encoder it was 49 quantising reorders, 49 back and 23
           sum pre-fills. */
        printf("int8 state: %d activation reorders per forward\n", gs_net_state_reorders(s8));
        assert_int_equal(gs_net_state_reorders(s8), 23 + hand_overs());
        float l8, f8[512], seg8[(S / 4) * (S / 4)];
        assert_int_equal(gs_net_run_multitask(s8, rgb, &l8, f8, seg8), 0);
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < 512; i++) {
            dot += (double)f32[i] * f8[i];
            na += (double)f32[i] * f32[i];
            nb += (double)f8[i] * f8[i];
        }
        double cos = dot / sqrt(na * nb);
        printf("int8 vs fp32 on a 64x64 tile: feature cosine %.5f, logit %g vs %g\n", cos,
               (double)l8, (double)lf);
        assert_true(cos > 0.95);
        assert_true(memcmp(f32, f8, sizeof f32) != 0);

        /* Batch 2 (the tile and its mirror image) gives each tile what batch 1 gives it: the
           channels-last tensors, the shared quantised copies and the int8 hand-offs index
           the batch right. Kernels may block a batch differently, hence a tolerance. */
        uint8_t *rgb2 = malloc(2 * S * S * 3);
        assert_non_null(rgb2);
        memcpy(rgb2, rgb, S * S * 3);
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                memcpy(rgb2 + ((size_t)S * S + (size_t)y * S + x) * 3,
                       rgb + ((size_t)y * S + (S - 1 - x)) * 3, 3);
        gs_net_state *s8b = gs_net_state_new(m8, GS_NET_MULTITASK, 2, S, S);
        assert_non_null(s8b);
        assert_int_equal(gs_net_state_reorders(s8b), 23 + hand_overs());
        float lb[2], fb[2 * 512], segb[2 * (S / 4) * (S / 4)];
        assert_int_equal(gs_net_run_multitask(s8b, rgb2, lb, fb, segb), 0);
        float lm, fm[512], segm[(S / 4) * (S / 4)];
        assert_int_equal(gs_net_run_multitask(s8, rgb2 + (size_t)S * S * 3, &lm, fm, segm), 0);
        const float *one[2][3] = {{&l8, f8, seg8}, {&lm, fm, segm}};
        const size_t len[3] = {1, 512, (S / 4) * (S / 4)};
        const float *two[3] = {lb, fb, segb};
        for (int t = 0; t < 2; t++)
            for (int o = 0; o < 3; o++)
                for (size_t i = 0; i < len[o]; i++)
                    assert_float_equal(two[o][t * len[o] + i], one[t][o][i],
                                       1e-3 * (1 + fabsf(one[t][o][i])));
        /* The mirror image is another input: a batch that repeated tile 0 would fail above. */
        assert_true(memcmp(f8, fm, sizeof fm) != 0);
        gs_net_state_destroy(&s8b);
        free(rgb2);
        gs_net_state_destroy(&s8);

        /* Without the deformable convs' ranges the encoder still runs int8 (the same feature,
           which the decoder does not reach) and the deformable convs run as before: the
           segmentation differs from the int8 one, by about what int8 costs there. */
        assert_int_equal(gs_model_set_precision(m8old, GS_PRECISION_INT8), 0);
        assert_int_equal(gs_model_precision(m8old), GS_PRECISION_INT8);
        gs_net_state *so = gs_net_state_new(m8old, GS_NET_MULTITASK, 1, S, S);
        assert_non_null(so);
        float lo, fo[512], sego[(S / 4) * (S / 4)];
        assert_int_equal(gs_net_run_multitask(so, rgb, &lo, fo, sego), 0);
        assert_memory_equal(fo, f8, sizeof fo);
        assert_true(memcmp(sego, seg8, sizeof sego) != 0);
        /* The seeded decoder is random and amplifies any rounding (the int8 encoder alone
           moves its logits by most of their range), so what is checked is that int8
           deformable convs add little to that: mean |error| against fp32 at most 1.5x. */
        double e_old = 0, e_new = 0;
        for (size_t i = 0; i < len[2]; i++) {
            e_old += fabs((double)sego[i] - seg32[i]) / (double)len[2];
            e_new += fabs((double)seg8[i] - seg32[i]) / (double)len[2];
        }
        printf("segmentation logits against fp32, mean |error|: deformable convs bf16 %g, "
               "int8 %g\n",
               e_old, e_new);
        assert_true(e_new <= 1.5 * e_old);
        gs_net_state_destroy(&so);
    }
    gs_model_destroy(&m8old);
    gs_model_destroy(&m8);
    gs_net_state_destroy(&plain);
    gs_model_destroy(&m);
    free(rgb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_usable),
        cmocka_unit_test(test_default_follows_recorded_budgets),
        cmocka_unit_test(test_uncalibrated_falls_back),
        cmocka_unit_test(test_calibrate_and_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
