#include "daemon/cli/bench.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "model/runtime.h"
#include "ops/deform_conv.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"

double gs_bench_now(void)
{
    return 1e-9 * (double)gs_mono_ns();
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double gs_bench_median(double *t, int n)
{
    GS_ASSERT(n >= 1);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

int gs_bench_interleaved(int nvar, const gs_bench_fn *fns, void *const *ctx, int warmup, int repeat,
                         double *medians)
{
    GS_ASSERT(nvar >= 1 && repeat >= 1 && warmup >= 0);
    double *t = malloc(sizeof(double) * (size_t)nvar * (size_t)repeat);
    if (!t)
        return gs_error_set("bench: out of memory");
    int rc = 0;
    for (int r = -warmup; r < repeat && rc == 0; r++) {
        for (int v = 0; v < nvar; v++) {
            double t0 = gs_bench_now();
            if (fns[v](ctx[v]) != 0) {
                rc = gs_error_prefix("variant %d", v);
                break;
            }
            if (r >= 0)
                t[(size_t)v * (size_t)repeat + (size_t)r] = gs_bench_now() - t0;
        }
    }
    for (int v = 0; v < nvar && rc == 0; v++)
        medians[v] = gs_bench_median(t + (size_t)v * (size_t)repeat, repeat);
    free(t);
    return rc;
}

double gs_bench_conv_gflop(int n, int cin, int cout, int ho, int wo, int k)
{
    return 2e-9 * n * (double)cin * cout * ho * wo * k * k;
}

/* The next deterministic uniform float in [lo, hi): the figures must not depend on the data,
 * but denormals or NaNs would, so the data is plain and finite. */
static float rand_float(float lo, float hi, unsigned *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(*seed >> 8) / 16777216.0f;
}

/* n rand_float()s, 64-byte aligned (oneDNN likes it; deform_conv's vector loads need it). */
static float *rand_floats(size_t n, float lo, float hi, unsigned *seed)
{
    float *b = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!b) {
        gs_error_set("bench: out of memory (%zu floats)", n);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        b[i] = rand_float(lo, hi, seed);
    return b;
}

static int dnnl_fail(dnnl_status_t st, const char *what)
{
    return gs_error_set("oneDNN: %s: %s", what, dnnl_status2str(st));
}

#define DNNL_TRY(call, what)                                                                       \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            dnnl_fail(st_, what);                                                                  \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

struct gs_bench_dense {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t conv;
    dnnl_exec_arg_t args[5];
    int nargs;
    void *bufs[5];
    char impl[64];
    const char *src_type;
};

/* Fills a buffer for one tensor of data type dt with plain finite values: rand_float()s in
 * [-1, 1) as f32 or rounded to bf16; any bytes for s8/u8 (every value is finite there). */
static void fill_tensor(void *buf, size_t bytes, dnnl_data_type_t dt, unsigned *seed)
{
    if (dt == dnnl_f32) {
        for (size_t i = 0; i < bytes / sizeof(float); i++)
            ((float *)buf)[i] = rand_float(-1, 1, seed);
    } else if (dt == dnnl_bf16) {
        for (size_t i = 0; i < bytes / sizeof(uint16_t); i++)
            ((uint16_t *)buf)[i] = gs_bf16_from_f32(rand_float(-1, 1, seed));
    } else {
        for (size_t i = 0; i < bytes; i++) {
            *seed = *seed * 1664525u + 1013904223u;
            ((uint8_t *)buf)[i] = (uint8_t)(*seed >> 24);
        }
    }
}

gs_bench_dense *gs_bench_dense_new(int n, int cin, int cout, int h, int w, gs_precision p)
{
    gs_bench_dense *d = calloc(1, sizeof *d);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    float *scales = NULL;
    if (!d) {
        gs_error_set("bench: out of memory");
        return NULL;
    }
    DNNL_TRY(dnnl_engine_create(&d->eng, dnnl_cpu, 0), "engine");
    DNNL_TRY(dnnl_stream_create(&d->stream, d->eng, dnnl_stream_default_flags), "stream");
    dnnl_memory_desc_t src, wei, bias, dst;
    dnnl_dims_t sd = {n, cin, h, w}, wd = {cout, cin, 3, 3}, bd = {cout}, dd = {n, cout, h, w};
    dnnl_dims_t strides = {1, 1}, pad = {1, 1};
    const dnnl_data_type_t act = p == GS_PRECISION_INT8   ? dnnl_u8
                                 : p == GS_PRECISION_BF16 ? dnnl_bf16
                                                          : dnnl_f32;
    const dnnl_data_type_t wdt = p == GS_PRECISION_INT8 ? dnnl_s8 : act;
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&src, 4, sd, act, dnnl_format_tag_any), "src md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&wei, 4, wd, wdt, dnnl_format_tag_any), "wei md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x), "bias md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&dst, 4, dd, act, dnnl_format_tag_any), "dst md");
    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                dnnl_convolution_direct, &src, &wei, &bias, &dst,
                                                strides, pad, pad),
             "conv desc");
    DNNL_TRY(dnnl_primitive_attr_create(&attr), "attr");
    DNNL_TRY(dnnl_post_ops_create(&ops), "post-ops");
    DNNL_TRY(dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f), "relu");
    DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, ops), "set post-ops");
    if (p == GS_PRECISION_INT8) {
        /* Per output channel, as the network's int8 convs: the scale values do not change the
         * speed, only that they are applied. */
        scales = malloc(sizeof(float) * (size_t)cout);
        if (!scales) {
            gs_error_set("bench: out of memory");
            goto fail;
        }
        for (int k = 0; k < cout; k++)
            scales[k] = 1.0f / (64.0f + (float)(k % 7));
        DNNL_TRY(dnnl_primitive_attr_set_output_scales(attr, cout, 1 << 1, scales),
                 "output scales");
    }
    DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, attr, d->eng, NULL), "conv pd");
    const char *impl = "";
    DNNL_TRY(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl), "impl query");
    snprintf(d->impl, sizeof d->impl, "%s", impl);
    DNNL_TRY(dnnl_primitive_create(&d->conv, pd), "conv");
    d->src_type = dnnl_dt2str(dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0)->data_type);
    const dnnl_memory_desc_t *mds[5] = {
        dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0),
        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1),
        dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0),
        dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)};
    const int arg_ids[5] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST,
                            DNNL_ARG_SCRATCHPAD};
    unsigned seed = 7;
    for (int i = 0; i < 5; i++) {
        size_t bytes = mds[i] ? dnnl_memory_desc_get_size(mds[i]) : 0;
        if (bytes == 0)
            continue; /* no scratchpad needed */
        void *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!buf) {
            gs_error_set("bench: out of memory");
            goto fail;
        }
        fill_tensor(buf, bytes, mds[i]->data_type, &seed);
        d->bufs[d->nargs] = buf;
        d->args[d->nargs].arg = arg_ids[i];
        DNNL_TRY(dnnl_memory_create(&d->args[d->nargs].memory, mds[i], d->eng, buf), "memory");
        d->nargs++;
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(ops);
    dnnl_primitive_attr_destroy(attr);
    free(scales);
    return d;
fail:
    free(scales);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (ops)
        dnnl_post_ops_destroy(ops);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    gs_error_prefix("dense %s conv %d->%d @%dx%d", gs_precision_name(p), cin, cout, h, w);
    gs_bench_dense_destroy(&d);
    return NULL;
}

void gs_bench_dense_destroy(gs_bench_dense **dp)
{
    if (!dp || !*dp)
        return;
    gs_bench_dense *d = *dp;
    for (int i = 0; i < 5; i++) {
        if (d->args[i].memory)
            dnnl_memory_destroy(d->args[i].memory);
        free(d->bufs[i]);
    }
    if (d->conv)
        dnnl_primitive_destroy(d->conv);
    if (d->stream)
        dnnl_stream_destroy(d->stream);
    if (d->eng)
        dnnl_engine_destroy(d->eng);
    free(d);
    *dp = NULL;
}

int gs_bench_dense_run(void *ctx)
{
    gs_bench_dense *d = ctx;
    dnnl_status_t st = dnnl_primitive_execute(d->conv, d->stream, d->nargs, d->args);
    if (st == dnnl_success)
        st = dnnl_stream_wait(d->stream);
    return st == dnnl_success ? 0 : dnnl_fail(st, "dense conv execute");
}

const char *gs_bench_dense_impl(const gs_bench_dense *d)
{
    return d->impl;
}

const char *gs_bench_dense_src_type(const gs_bench_dense *d)
{
    return d->src_type;
}

struct gs_bench_deform {
    gs_deform_conv *c;
    gs_deform_conv_scratch *sc;
    float *w, *b, *in, *om, *out;
};

gs_bench_deform *gs_bench_deform_new(int n, int cin, int cout, int h, int w)
{
    gs_bench_deform *f = calloc(1, sizeof *f);
    if (!f) {
        gs_error_set("bench: out of memory");
        return NULL;
    }
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, n, cin, cout, h, w);
    d.offset_format = GS_DEFORM_OFFSET_RAW_NCHW;
    if (!gs_rt_blocked_native()) {
        /* The network's layout on this CPU (model/runtime.h); the sizes below still fit. */
        d.nhwc = 1;
        d.offset_format = GS_DEFORM_OFFSET_RAW_NHWC;
    }
    unsigned seed = 11;
    size_t hw = (size_t)h * (size_t)w;
    /* Offsets within +-3 pixels and mask logits within +-3: samples land inside and outside
     * the map as in a trained decoder, so every gather path is exercised. */
    if (!(f->w = rand_floats((size_t)cout * (size_t)cin * 9, -0.1f, 0.1f, &seed)) ||
        !(f->b = rand_floats((size_t)cout, -1, 1, &seed)) ||
        !(f->in = rand_floats(gs_deform_conv_blocked_size(n, cin, h, w), -1, 1, &seed)) ||
        !(f->om = rand_floats((size_t)n * 27 * hw, -3, 3, &seed)) ||
        !(f->out = rand_floats(gs_deform_conv_blocked_size(n, cout, h, w), 0, 0, &seed)))
        goto fail;
    f->c = gs_deform_conv_new(&d, f->w, f->b, 1);
    if (!f->c)
        goto fail;
    f->sc = gs_deform_conv_scratch_new(f->c);
    if (!f->sc)
        goto fail;
    return f;
fail:
    gs_error_prefix("deform conv %d->%d @%dx%d", cin, cout, h, w);
    gs_bench_deform_destroy(&f);
    return NULL;
}

void gs_bench_deform_destroy(gs_bench_deform **fp)
{
    if (!fp || !*fp)
        return;
    gs_bench_deform *f = *fp;
    gs_deform_conv_scratch_destroy(&f->sc);
    gs_deform_conv_destroy(&f->c);
    free(f->w);
    free(f->b);
    free(f->in);
    free(f->om);
    free(f->out);
    free(f);
    *fp = NULL;
}

int gs_bench_deform_run(void *ctx)
{
    gs_bench_deform *f = ctx;
    return gs_deform_conv_run(f->c, f->sc, f->in, f->om, NULL, f->out);
}

static void cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp)
        return;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            continue;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t len = strcspn(v, "\n");
        snprintf(out, cap, "%.*s", (int)len, v);
        break;
    }
    fclose(fp);
}

void gs_bench_machine_get(gs_bench_machine *m)
{
    memset(m, 0, sizeof *m);
    cpu_model(m->cpu, sizeof m->cpu);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    m->cpus = n > 0 ? (int)n : 0;
    const dnnl_version_t *v = dnnl_version();
    snprintf(m->onednn, sizeof m->onednn, "%d.%d.%d", v->major, v->minor, v->patch);
    snprintf(m->isa, sizeof m->isa, "%s", dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa()));
}

/* Output size (square factor of the tile side) of a multitask layer given its key without
 * the "multitask." prefix: returns the divisor of h (and w) at which the layer's output lives,
 * 0 for a layer the runtime does not run, -1 for an unknown key. */
static int multitask_divisor(const char *key)
{
    int a = 0, b = 0, len = 0;
    if (!strncmp(key, "base.base_layer.", 16) || !strncmp(key, "base.level0.", 12))
        return 1;
    if (!strncmp(key, "base.level1.", 12))
        return 2;
    if (sscanf(key, "base.level%d.%n", &a, &len) == 1 && len > 0 && a >= 2 && a <= 5) {
        /* A levels=2 tree's own projection is computed and thrown away by PyTorch (§2.2). */
        if ((a == 3 || a == 4) && !strncmp(key + len, "project.", 8))
            return 0;
        return 1 << a;
    }
    /* DLAUp ida_i: projections run at the low resolution 2^(5-i), nodes and ups at 2^(4-i). */
    if (sscanf(key, "dla_up.ida_%d.proj_%d.%n", &a, &b, &len) == 2 && len > 0 && a >= 0 && a <= 2)
        return 1 << (5 - a);
    if ((sscanf(key, "dla_up.ida_%d.node_%d.%n", &a, &b, &len) == 2 ||
         sscanf(key, "dla_up.ida_%d.up_%d.%n", &a, &b, &len) == 2) &&
        len > 0 && a >= 0 && a <= 2)
        return 1 << (4 - a);
    /* IDAUp over [P5 @4, N5 @8, M5 @16]: proj_j reads level j (stride 2^(2+j)); output @4. */
    if (sscanf(key, "ida_up.proj_%d.%n", &b, &len) == 1 && len > 0 && b >= 1 && b <= 2)
        return 1 << (2 + b);
    if ((sscanf(key, "ida_up.node_%d.%n", &b, &len) == 1 ||
         sscanf(key, "ida_up.up_%d.%n", &b, &len) == 1) &&
        len > 0)
        return 4;
    if (!strncmp(key, "seg.", 4))
        return 4;
    return -1;
}

static int is_deconv_key(const char *key)
{
    const char *up = strstr(key, ".up_");
    return up && strchr(up + 1, '.') && !strcmp(strchr(up + 1, '.'), ".weight");
}

double gs_bench_multitask_gflop(const gs_weights *w, int h, int wd)
{
    static const char pfx[] = "multitask.";
    if (h <= 0 || wd <= 0 || h % 32 || wd % 32)
        return gs_error_set("multitask FLOPs: tile %dx%d is not a multiple of 32", h, wd);
    double macs = 0;
    size_t seen = 0;
    for (size_t i = 0; i < gs_weights_count(w); i++) {
        const gs_tensor *t = gs_weights_at(w, i);
        if (strncmp(t->name, pfx, sizeof pfx - 1) != 0)
            continue;
        const char *key = t->name + sizeof pfx - 1;
        seen++;
        if (t->ndim == 1)
            continue; /* biases and batch norm: folded, no multiply-adds of their own */
        if (t->ndim == 2 && !strncmp(key, "cls.", 4)) {
            macs += (double)t->shape[0] * (double)t->shape[1];
            continue;
        }
        int div = t->ndim == 4 ? multitask_divisor(key) : -1;
        if (div < 0)
            return gs_error_set("multitask FLOPs: no resolution known for tensor %s", t->name);
        if (div == 0)
            continue;
        double ho = (double)(h / div), wo = (double)(wd / div);
        double kk = (double)t->shape[2] * (double)t->shape[3];
        if (is_deconv_key(key)) {
            /* Depthwise transposed conv [c,1,k,k], stride k/2: every input pixel scatters
             * k*k products; the input has (1/stride)^2 of the output's pixels. */
            double s = (double)t->shape[2] / 2.0;
            macs += (double)t->shape[0] * kk * (ho / s) * (wo / s);
        } else {
            macs += (double)t->shape[0] * (double)t->shape[1] * kk * ho * wo;
        }
    }
    if (seen == 0)
        return gs_error_set("multitask FLOPs: the bundle has no multitask network");
    return 2e-9 * macs;
}
