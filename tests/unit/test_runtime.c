/*
 * Unit tests of model/runtime and model/network: BN folding by hand, activation metadata,
 * the depthwise transposed conv against a direct ConvTranspose2d loop (asymmetric kernel, so
 * a spatial flip would show), 3x3 convs against a direct loop with the Winograd choice
 * asserted (runtime.h says which convs run it), and bundle loading: absent networks, missing
 * tensor, wrong shape, NaN, unexpected tensor, bad activation / bn_eps metadata, each naming the
 * culprit; and the same bundles with the blur network skipped (gs_model_load_nets): names and
 * shapes still checked, values (a NaN) not. Bundles are written here by a small safetensors writer
 * holding only the blur network, so no Python is needed.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/network.h"
#include "model/runtime.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"
#include "tests/unit/plan_tensors.h"

static void test_fold_bn_hand(void **state)
{
    (void)state;
    /* Two output channels, two weights each, conv bias (1, -1). */
    float w[4] = {1.0f, 2.0f, -3.0f, 0.5f}, b[2] = {1.0f, -1.0f};
    const float gamma[2] = {2.0f, 0.5f}, beta[2] = {0.25f, -0.5f}, mean[2] = {3.0f, -1.0f},
                var[2] = {3.0f, 0.0f};
    gs_rt_fold_bn(w, b, 2, 2, gamma, beta, mean, var, 1.0f);
    /* s0 = 2 / sqrt(4) = 1; s1 = 0.5 / sqrt(1) = 0.5 */
    assert_float_equal(w[0], 1.0f, 1e-7);
    assert_float_equal(w[1], 2.0f, 1e-7);
    assert_float_equal(w[2], -1.5f, 1e-7);
    assert_float_equal(w[3], 0.25f, 1e-7);
    assert_float_equal(b[0], (1.0f - 3.0f) * 1.0f + 0.25f, 1e-7);
    assert_float_equal(b[1], (-1.0f + 1.0f) * 0.5f - 0.5f, 1e-7);
}

static void test_act_parse(void **state)
{
    (void)state;
    gs_act a;
    assert_int_equal(gs_act_parse("relu", &a), 0);
    assert_int_equal(a.kind, GS_ACT_RELU);
    assert_int_equal(gs_act_parse("leaky:0.01", &a), 0);
    assert_int_equal(a.kind, GS_ACT_LEAKY);
    assert_float_equal(a.slope, 0.01f, 1e-9);
    const char *bad[] = {"gelu", "leaky:", "leaky:x", "leaky:1.5", "leaky:-0.1", "leaky:nan", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(gs_act_parse(bad[i], &a), -1);
        char want[64];
        snprintf(want, sizeof want, "\"%s\"", bad[i]);
        assert_non_null(strstr(gs_error_get(), want));
    }
    assert_int_equal(gs_act_parse(NULL, &a), -1);
    assert_non_null(strstr(gs_error_get(), "activation"));
}

/* Depthwise ConvTranspose2d(k = 2f, stride f, pad f/2) through gs_rt plans, plus a skip
 * tensor added, against the PyTorch index relation
 * out[y] += in[iy] * k[y - iy*f + pad] (no flip). cl: the plan's tensors are channels-last
 * (the AMX decoder) and only our kernel runs. */
static void check_deconv(int f, int c, int h, int w, int cl)
{
    dnnl_engine_t e;
    assert_int_equal(dnnl_engine_create(&e, dnnl_cpu, 0), dnnl_success);
    int k = 2 * f, pad = f / 2, ho = h * f, wo = w * f;
    float *wt = malloc(sizeof(float) * c * k * k), *x = malloc(sizeof(float) * c * h * w),
          *prev = malloc(sizeof(float) * c * ho * wo), *out = malloc(sizeof(float) * c * ho * wo);
    for (int i = 0; i < c * k * k; i++)
        wt[i] = (float)((i * 7) % 13) / 13.0f + 0.01f * (float)(i % k); /* asymmetric */
    for (int i = 0; i < c * h * w; i++)
        x[i] = sinf((float)i * 0.37f);
    for (int i = 0; i < c * ho * wo; i++)
        prev[i] = cosf((float)i * 0.11f);
    gs_rt_conv cv;
    assert_int_equal(gs_rt_conv_init(&cv, e, c, c, k, f, pad, 1, wt, NULL), 0);
    gs_rt_plan *p = gs_rt_plan_new(e, 1, 0);
    assert_non_null(p);
    gs_rt_plan_set_channels_last(p, cl);
    gs_rt_tensor *tx = gs_rt_plan_tensor(p, c, h, w, 0), *tp = gs_rt_plan_tensor(p, c, ho, wo, 0),
                 *to = NULL;
    assert_non_null(tx);
    assert_non_null(tp);
    assert_int_equal(tx->cl, cl);
    if (cl) {
        test_nchw_nhwc(x, 1, c, (size_t)(h * w), tx->data, 0);
        test_nchw_nhwc(prev, 1, c, (size_t)(ho * wo), tp->data, 0);
    } else {
        gs_deform_conv_pack_nchw16c(x, 1, c, h, w, tx->data);
        gs_deform_conv_pack_nchw16c(prev, 1, c, ho, wo, tp->data);
    }
    gs_act none = {GS_ACT_NONE, 0.0f};
    /* oneDNN's deconvolution then the add step, and our fused kernel (what the decoder runs). */
    gs_rt_tensor *tk = NULL;
    if (!cl) {
        assert_int_equal(gs_rt_plan_conv(p, &cv, tx, &to, 0, none), 0);
        assert_int_equal(gs_rt_plan_add(p, to, tp), 0);
    }
    assert_int_equal(gs_rt_plan_dwdeconv(p, &cv, tx, tp, &tk), 0);
    assert_int_equal(tk->cl, cl);
    assert_int_equal(gs_rt_plan_run(p), 0);
    float *mine = malloc(sizeof(float) * c * ho * wo);
    if (cl) {
        test_nchw_nhwc(tk->data, 1, c, (size_t)(ho * wo), mine, 1);
    } else {
        gs_deform_conv_unpack_nchw16c(to->data, 1, c, ho, wo, out);
        gs_deform_conv_unpack_nchw16c(tk->data, 1, c, ho, wo, mine);
    }
    double maxdiff = 0.0, maxmine = 0.0;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < ho; y++)
            for (int xx = 0; xx < wo; xx++) {
                double r = prev[(ch * ho + y) * wo + xx];
                for (int iy = 0; iy < h; iy++)
                    for (int ix = 0; ix < w; ix++) {
                        int ky = y - iy * f + pad, kx = xx - ix * f + pad;
                        if (ky >= 0 && ky < k && kx >= 0 && kx < k)
                            r += (double)x[(ch * h + iy) * w + ix] * wt[(ch * k + ky) * k + kx];
                    }
                double d = cl ? 0.0 : fabs(r - out[(ch * ho + y) * wo + xx]);
                maxdiff = d > maxdiff ? d : maxdiff;
                d = fabs(r - mine[(ch * ho + y) * wo + xx]);
                maxmine = d > maxmine ? d : maxmine;
            }
    if (cl) {
        printf("deconv f=%d c=%d %dx%d channels-last: max diff own kernel %g\n", f, c, h, w,
               maxmine);
    } else {
        printf("deconv f=%d c=%d %dx%d: max diff oneDNN %g, own kernel %g\n", f, c, h, w, maxdiff,
               maxmine);
        assert_true(maxdiff < 1e-4);
    }
    assert_true(maxmine < 1e-4);
    free(mine);
    gs_rt_plan_destroy(&p);
    assert_null(p);
    gs_rt_conv_free(&cv);
    dnnl_engine_destroy(e);
    free(wt);
    free(x);
    free(prev);
    free(out);
}

static void test_deconv_no_flip(void **state)
{
    (void)state;
    check_deconv(2, 32, 5, 6, 0);
    check_deconv(4, 16, 3, 4, 0);
    check_deconv(2, 24, 4, 3, 0); /* channels not a multiple of 16 */
    check_deconv(2, 48, 5, 6, 1); /* channels-last: three 16-channel blocks per pixel */
    check_deconv(4, 32, 3, 4, 1);
}

/* A 3x3 stride-1 conv (bias, ReLU) in a float32 plan against a direct double-precision loop
 * (zero padding at every border; odd sizes; 40 output channels, not a multiple of 16), whether
 * the plan ran it as Winograd, the same image within a batch giving the same bits, and one
 * set of transformed weights serving plans of both batch sizes. */
static void check_conv3x3(int cin, int cout, int h, int w, int want_winograd)
{
    dnnl_engine_t e;
    assert_int_equal(dnnl_engine_create(&e, dnnl_cpu, 0), dnnl_success);
    float *wt = malloc(sizeof(float) * cout * cin * 9), *b = malloc(sizeof(float) * cout);
    float *x = malloc(sizeof(float) * cin * h * w);
    assert_true(wt && b && x);
    for (int i = 0; i < cout * cin * 9; i++)
        wt[i] = sinf((float)i * 0.731f) * 0.1f;
    for (int i = 0; i < cout; i++)
        b[i] = cosf((float)i) * 0.5f;
    for (int i = 0; i < cin * h * w; i++)
        x[i] = sinf((float)i * 0.37f) + 0.5f * cosf((float)i * 0.013f);
    gs_rt_conv cv;
    assert_int_equal(gs_rt_conv_init(&cv, e, cin, cout, 3, 1, 1, 0, wt, b), 0);
    gs_rt_plan *p = gs_rt_plan_new(e, 1, 0);
    assert_non_null(p);
    gs_rt_tensor *tx = gs_rt_plan_tensor(p, cin, h, w, 0), *ty = NULL;
    assert_non_null(tx);
    /* The plan's default layout: nChw16c on AVX-512, channels-last below (runtime.h). */
    assert_int_equal(tx->cl, !gs_rt_blocked_native());
    test_tensor_fill(tx, x);
    gs_act relu = {GS_ACT_RELU, 0.0f};
    assert_int_equal(gs_rt_plan_conv(p, &cv, tx, &ty, 0, relu), 0);
    assert_int_equal(gs_rt_plan_run(p), 0);
    float *got = test_tensor_read(ty);
    double err = 0.0, scale = 0.0;
    for (int o = 0; o < cout; o++)
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                double r = b[o];
                for (int i = 0; i < cin; i++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int iy = y + ky - 1, ix = xx + kx - 1;
                            if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                r += (double)x[(i * h + iy) * w + ix] *
                                     wt[((o * cin + i) * 3 + ky) * 3 + kx];
                        }
                r = r > 0 ? r : 0;
                scale = fmax(scale, fabs(r));
                err = fmax(err, fabs(r - got[(o * h + y) * w + xx]));
            }
    printf("conv3x3 %d->%d at %dx%d: %d Winograd, max |difference| %g of scale %g\n", cin, cout, h,
           w, gs_rt_plan_winograd_convs(p), err, scale);
    /* Winograd's transforms add rounding; a wrong tile, border or bias would be O(scale). */
    assert_true(scale > 0.1 && err <= 1e-5 * scale * sqrt((double)cin * 9));
    assert_int_equal(gs_rt_plan_winograd_convs(p), want_winograd);
    assert_int_equal(gs_rt_plan_weight_reorders(p), 0);
    /* The Winograd weights are the conv's, kept past the plan for the next one. */
    assert_int_equal(gs_rt_conv_relaid(&cv), want_winograd);
    gs_rt_plan_destroy(&p);

    /* The same image in the middle of a batch of 3 gives the same bits as alone: the infer
     * stage runs full batches together and partial ones tile by tile. */
    p = gs_rt_plan_new(e, 3, 0);
    assert_non_null(p);
    tx = gs_rt_plan_tensor(p, cin, h, w, 0);
    assert_non_null(tx);
    size_t img = (size_t)cin * h * w;
    float *other = malloc(sizeof(float) * 3 * img);
    assert_non_null(other);
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < img; i++)
            other[k * img + i] = k == 1 ? x[i] : cosf((float)(i + k) * 0.29f);
    test_tensor_fill(tx, other);
    ty = NULL;
    assert_int_equal(gs_rt_plan_conv(p, &cv, tx, &ty, 0, relu), 0);
    assert_int_equal(gs_rt_plan_run(p), 0);
    assert_int_equal(gs_rt_plan_winograd_convs(p), want_winograd);
    float *batched = test_tensor_read(ty);
    assert_memory_equal(batched + (size_t)cout * h * w, got, sizeof(float) * cout * h * w);
    /* ... and the batch-3 plan took the batch-1 plan's transformed weights, not a copy. */
    assert_int_equal(gs_rt_conv_relaid(&cv), want_winograd);
    free(batched);
    free(other);
    gs_rt_plan_destroy(&p);
    gs_rt_conv_free(&cv);
    dnnl_engine_destroy(e);
    free(wt);
    free(b);
    free(x);
    free(got);
}

static void test_conv3x3_winograd(void **state)
{
    (void)state;
    /* oneDNN 2.6 has fp32 Winograd on AVX-512 only (runtime.h: which convs use it). */
    int wino = gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core);
    check_conv3x3(64, 40, 37, 33, wino);
    check_conv3x3(80, 64, 32, 35, wino);
    check_conv3x3(16, 16, 40, 40, 0); /* too few channels: direct */
    check_conv3x3(64, 64, 16, 20, 0); /* map too small: direct */
}

/* ---- a tiny safetensors writer for blur-only bundles ---- */

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
} entry;

static const entry blur_entries[] = {
    {"blur.conv1.weight", 4, {16, 3, 5, 5}},
    {"blur.bn1.weight", 1, {16}},
    {"blur.bn1.bias", 1, {16}},
    {"blur.bn1.running_mean", 1, {16}},
    {"blur.bn1.running_var", 1, {16}},
    {"blur.conv2.weight", 4, {32, 16, 5, 5}},
    {"blur.bn2.weight", 1, {32}},
    {"blur.bn2.bias", 1, {32}},
    {"blur.bn2.running_mean", 1, {32}},
    {"blur.bn2.running_var", 1, {32}},
    {"blur.fc.weight", 2, {1, 32}},
    {"blur.fc.bias", 1, {1}},
};
enum { NBLUR = sizeof blur_entries / sizeof *blur_entries };

typedef struct {
    const char *skip;       /* tensor left out */
    const char *reshape;    /* tensor whose first dimension is halved */
    const char *nan;        /* tensor with a NaN */
    const char *extra;      /* extra tensor name */
    const char *activation; /* metadata value */
    const char *bn_eps;
    const char *topk, *screen, *blur; /* decision metadata values (default 64, 0.74, 0.5) */
} variant;

static int64_t count_of(const entry *e)
{
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++)
        n *= e->shape[i];
    return n;
}

/* Writes the bundle and returns its path (static buffer). */
static const char *write_bundle(const variant *v)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/gs_test_runtime_%d.safetensors", (int)getpid());
    entry es[NBLUR + 1];
    int n = 0;
    for (int i = 0; i < NBLUR; i++) {
        if (v->skip && !strcmp(v->skip, blur_entries[i].name))
            continue;
        es[n] = blur_entries[i];
        if (v->reshape && !strcmp(v->reshape, es[n].name))
            es[n].shape[0] = es[n].shape[0] > 1 ? es[n].shape[0] / 2 : 2;
        n++;
    }
    if (v->extra)
        es[n++] = (entry){v->extra, 1, {4}};
    char *hdr = malloc(1 << 16);
    assert_non_null(hdr);
    int len = snprintf(hdr, 1 << 16,
                       "{\"__metadata__\":{\"format\":\"gastroscreen-bundle\",\"format_version\":"
                       "\"1\",\"input_colour\":\"RGB\",\"input_mean\":\"0.485,0.456,0.406\","
                       "\"input_std\":\"0.229,0.224,0.225\",\"target_mpp\":\"0.5\","
                       "\"tile_size\":\"512\",\"topk\":\"%s\",\"threshold.screen\":\"%s\","
                       "\"threshold.blur\":\"%s\",\"threshold.foreground\":\"0.5\","
                       "\"activation\":\"%s\",\"bn_eps\":\"%s\",\"provenance.multitask\":"
                       "\"untrained\",\"provenance.foreground\":\"untrained\","
                       "\"provenance.blur\":\"unit test data\",\"provenance.screener\":"
                       "\"untrained\",\"created\":\"2024-01-01T00:00:00Z\",\"creator\":\"test\"}",
                       v->topk ? v->topk : "64", v->screen ? v->screen : "0.74",
                       v->blur ? v->blur : "0.5", v->activation ? v->activation : "relu",
                       v->bn_eps ? v->bn_eps : "1e-5");
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t bytes = count_of(&es[i]) * 4;
        len += snprintf(hdr + len, (size_t)(1 << 16) - (size_t)len,
                        ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", es[i].name);
        for (int d = 0; d < es[i].ndim; d++)
            len += snprintf(hdr + len, (size_t)(1 << 16) - (size_t)len, "%s%lld", d ? "," : "",
                            (long long)es[i].shape[d]);
        len +=
            snprintf(hdr + len, (size_t)(1 << 16) - (size_t)len, "],\"data_offsets\":[%lld,%lld]}",
                     (long long)off, (long long)(off + bytes));
        off += bytes;
    }
    len += snprintf(hdr + len, (size_t)(1 << 16) - (size_t)len, "}");
    while (len % 8)
        hdr[len++] = ' ';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hl = (uint64_t)len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hl >> (8 * i));
    assert_int_equal(fwrite(le, 1, 8, f), 8);
    assert_int_equal(fwrite(hdr, 1, (size_t)len, f), (size_t)len);
    for (int i = 0; i < n; i++) {
        int64_t cnt = count_of(&es[i]);
        int is_var = strstr(es[i].name, "running_var") != NULL;
        for (int64_t j = 0; j < cnt; j++) {
            int is_gamma = strstr(es[i].name, ".bn") && strstr(es[i].name, ".weight");
            float x = is_var     ? 1.0f + 0.01f * (float)j
                      : is_gamma ? 1.0f + 0.1f * sinf((float)j)
                                 : 0.3f * sinf(0.9f * (float)j + 1.0f);
            if (v->nan && !strcmp(v->nan, es[i].name) && j == cnt / 2)
                x = NAN;
            assert_int_equal(fwrite(&x, 4, 1, f), 1); /* little-endian host (x86-64) */
        }
    }
    fclose(f);
    free(hdr);
    return path;
}

static void expect_load_error(const variant *v, const char *needle1, const char *needle2)
{
    const char *path = write_bundle(v);
    gs_model *m = gs_model_load(path);
    const char *msg = gs_error_get();
    printf("expected error: %s\n", msg);
    assert_null(m);
    assert_non_null(strstr(msg, path));
    assert_non_null(strstr(msg, needle1));
    if (needle2)
        assert_non_null(strstr(msg, needle2));
    unlink(path);
}

static void test_load_blur_only(void **state)
{
    (void)state;
    variant v = {0};
    const char *path = write_bundle(&v);
    gs_model *m = gs_model_load(path);
    if (!m)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_model_has(m, GS_NET_BLUR), 1);
    assert_string_equal(gs_model_provenance(m, GS_NET_BLUR), "unit test data");
    assert_int_equal(gs_model_untrained(m, GS_NET_BLUR), 0);
    for (int id = 0; id < GS_NET_COUNT; id++) {
        if (id == GS_NET_BLUR)
            continue;
        assert_int_equal(gs_model_has(m, (gs_net_id)id), 0);
        assert_int_equal(gs_model_untrained(m, (gs_net_id)id), 1);
        assert_string_equal(gs_model_provenance(m, (gs_net_id)id), "untrained");
        assert_null(gs_net_state_new(m, (gs_net_id)id, 1, 256, 256));
        assert_non_null(strstr(gs_error_get(), "absent"));
        assert_non_null(strstr(gs_error_get(), gs_net_name((gs_net_id)id)));
    }
    /* A blur run on a flat grey crop is finite and the same for both batch items. */
    gs_net_state *s = gs_net_state_new(m, GS_NET_BLUR, 2, 64, 64);
    assert_non_null(s);
    uint8_t *rgb = malloc(2 * 64 * 64 * 3);
    memset(rgb, 128, 2 * 64 * 64 * 3);
    float logit[2];
    assert_int_equal(gs_net_run_blur(s, rgb, logit), 0);
    assert_true(isfinite(logit[0]));
    assert_float_equal(logit[0], logit[1], 1e-6);
    assert_null(gs_net_state_new(m, GS_NET_BLUR, 1, 30, 64));
    assert_non_null(strstr(gs_error_get(), "multiples"));
    free(rgb);
    gs_net_state_destroy(&s);
    assert_null(s);
    gs_model_destroy(&m);
    assert_null(m);
    unlink(path);
}

typedef struct {
    const gs_model *m;
    uint8_t grey;
    float logit;
    int rc;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    a->rc = -1;
    gs_net_state *s = gs_net_state_new(a->m, GS_NET_BLUR, 1, 64, 64);
    uint8_t *rgb = malloc(64 * 64 * 3);
    if (s && rgb) {
        for (int i = 0; i < 64 * 64 * 3; i++)
            rgb[i] = (uint8_t)(a->grey + (((uint32_t)i * 2654435761u) >> 28));
        a->rc = 0;
        for (int r = 0; r < 5 && a->rc == 0; r++)
            a->rc = gs_net_run_blur(s, rgb, &a->logit);
    }
    free(rgb);
    gs_net_state_destroy(&s);
    return NULL;
}

/* One immutable model, a state per thread: results equal the single-threaded ones. */
static void test_threads_share_model(void **state)
{
    (void)state;
    variant v = {0};
    const char *path = write_bundle(&v);
    gs_model *m = gs_model_load(path);
    assert_non_null(m);
    worker_arg solo[2] = {{m, 10, 0, -1}, {m, 230, 0, -1}},
               par[2] = {{m, 10, 0, -1}, {m, 230, 0, -1}};
    worker(&solo[0]);
    worker(&solo[1]);
    assert_int_equal(solo[0].rc, 0);
    assert_int_equal(solo[1].rc, 0);
    printf("blur logits %.9g %.9g\n", solo[0].logit, solo[1].logit);
    assert_true(fabsf(solo[0].logit - solo[1].logit) > 1e-6f);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &par[i]), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(par[i].rc, 0);
        assert_float_equal(par[i].logit, solo[i].logit, 1e-6);
    }
    gs_model_destroy(&m);
    unlink(path);
}

static void test_load_errors(void **state)
{
    (void)state;
    variant v = {.skip = "blur.bn2.running_var"};
    expect_load_error(&v, "blur.bn2.running_var", "missing");
    v = (variant){.reshape = "blur.conv2.weight"};
    expect_load_error(&v, "blur.conv2.weight", "expected [32,16,5,5]");
    v = (variant){.nan = "blur.fc.weight"};
    expect_load_error(&v, "blur.fc.weight", "not finite");
    v = (variant){.extra = "blur.conv3.weight"};
    expect_load_error(&v, "blur.conv3.weight", "not part of the blur network");
    v = (variant){.activation = "swish"};
    expect_load_error(&v, "activation", "\"swish\"");
    v = (variant){.activation = "leaky:2"};
    expect_load_error(&v, "activation", "\"leaky:2\"");
    v = (variant){.bn_eps = "-1"};
    expect_load_error(&v, "bn_eps", "\"-1\"");
    v = (variant){.topk = "0"};
    expect_load_error(&v, "topk", "\"0\"");
    v = (variant){.topk = "64.5"};
    expect_load_error(&v, "topk", "a whole number");
    v = (variant){.screen = "1.5"};
    expect_load_error(&v, "threshold.screen", "\"1.5\"");
    v = (variant){.blur = "half"};
    expect_load_error(&v, "threshold.blur", "\"half\"");
}

/* The decision metadata comes back as the bundle wrote it. */
static void test_thresholds_read(void **state)
{
    (void)state;
    variant v = {.topk = "12", .screen = "0.3125", .blur = "0.25"};
    gs_model *m = gs_model_load(write_bundle(&v));
    if (!m)
        fail_msg("%s", gs_error_get());
    gs_model_thresholds t = gs_model_get_thresholds(m);
    assert_int_equal(t.topk, 12);
    assert_float_equal(t.screen, 0.3125, 1e-7);
    assert_float_equal(t.blur, 0.25, 1e-7);
    assert_float_equal(t.foreground, 0.5, 1e-7);
    gs_model_destroy(&m);
}

/* The blur network skipped (only multitask asked for, which this bundle lacks): its names and
 * shapes are still checked, its values are not read (documented in model/network.h). */
static void test_load_nets_skipped_blur(void **state)
{
    (void)state;
    const gs_net_id mt = GS_NET_MULTITASK;
    variant v = {0};
    const char *path = write_bundle(&v);
    gs_model *m = gs_model_load_nets(path, &mt, 1);
    if (!m)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_model_has(m, GS_NET_MULTITASK), 0);
    assert_int_equal(gs_model_built(m, GS_NET_MULTITASK), 0);
    assert_int_equal(gs_model_has(m, GS_NET_BLUR), 1);
    assert_int_equal(gs_model_built(m, GS_NET_BLUR), 0);
    assert_int_equal(gs_model_untrained(m, GS_NET_BLUR), 0);
    assert_string_equal(gs_model_provenance(m, GS_NET_BLUR), "unit test data");
    assert_null(gs_net_state_new(m, GS_NET_MULTITASK, 1, 64, 64));
    assert_non_null(strstr(gs_error_get(), "absent"));
    assert_null(gs_net_state_new(m, GS_NET_BLUR, 1, 64, 64));
    assert_non_null(strstr(gs_error_get(), "blur was not loaded"));
    gs_model_destroy(&m);
    unlink(path);

    struct {
        variant v;
        const char *needle1, *needle2;
    } bad[] = {
        {{.skip = "blur.bn2.running_var"}, "blur.bn2.running_var", "missing"},
        {{.reshape = "blur.conv2.weight"}, "blur.conv2.weight", "expected [32,16,5,5]"},
        {{.extra = "blur.conv3.weight"}, "blur.conv3.weight", "not part of the blur network"},
        {{.bn_eps = "-1"}, "bn_eps", "\"-1\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        path = write_bundle(&bad[i].v);
        m = gs_model_load_nets(path, &mt, 1);
        const char *msg = gs_error_get();
        printf("expected error: %s\n", msg);
        assert_null(m);
        assert_non_null(strstr(msg, path));
        assert_non_null(strstr(msg, bad[i].needle1));
        assert_non_null(strstr(msg, bad[i].needle2));
        unlink(path);
    }
    /* A NaN is a value: found when blur is built, not when it is skipped. */
    v = (variant){.nan = "blur.fc.weight"};
    path = write_bundle(&v);
    const gs_net_id blur = GS_NET_BLUR;
    assert_null(gs_model_load_nets(path, &blur, 1));
    assert_non_null(strstr(gs_error_get(), "not finite"));
    m = gs_model_load_nets(path, &mt, 1);
    assert_non_null(m);
    gs_model_destroy(&m);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_bn_hand),           cmocka_unit_test(test_act_parse),
        cmocka_unit_test(test_conv3x3_winograd),       cmocka_unit_test(test_deconv_no_flip),
        cmocka_unit_test(test_load_blur_only),         cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_thresholds_read),        cmocka_unit_test(test_threads_share_model),
        cmocka_unit_test(test_load_nets_skipped_blur),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
