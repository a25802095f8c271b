#include "model/runtime.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <immintrin.h>

#include <oneapi/dnnl/dnnl_debug.h>

#include "ops/dnnl_reorder.h"
#include "ops/error.h"

#define DNNL_TRY(call, what)                                                                       \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            gs_error_set("oneDNN: %s: %s", what, dnnl_status2str(st_));                            \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

int gs_act_parse(const char *spec, gs_act *act)
{
    if (!spec)
        return gs_error_set("metadata activation: missing");
    if (!strcmp(spec, "relu")) {
        act->kind = GS_ACT_RELU;
        act->slope = 0.0f;
        return 0;
    }
    if (!strncmp(spec, "leaky:", 6) && spec[6] != '\0') {
        char *end = NULL;
        errno = 0;
        double s = strtod(spec + 6, &end);
        if (errno == 0 && *end == '\0' && isfinite(s) && s >= 0.0 && s < 1.0) {
            act->kind = GS_ACT_LEAKY;
            act->slope = (float)s;
            return 0;
        }
        return gs_error_set("metadata activation \"%s\": slope must be a number in [0, 1)", spec);
    }
    return gs_error_set("metadata activation \"%s\": expected \"relu\" or \"leaky:<slope>\"", spec);
}

void gs_rt_fold_bn(float *w, float *b, int cout, size_t per_out, const float *gamma,
                   const float *beta, const float *mean, const float *var, float eps)
{
    for (int o = 0; o < cout; o++) {
        /* Same float32 arithmetic order as PyTorch's eval-mode BN: the scale is computed once
           per channel, so the folded conv differs from conv-then-BN only by reassociation. */
        float s = gamma[o] / sqrtf(var[o] + eps);
        for (size_t i = 0; i < per_out; i++)
            w[(size_t)o * per_out + i] *= s;
        b[o] = (b[o] - mean[o]) * s + beta[o];
    }
}

static float *aligned_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    if (bytes == 0)
        bytes = 64;
    float *p = aligned_alloc(64, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

/* Output size of c on an h x w input. */
static void conv_out_size(const gs_rt_conv *c, int h, int w, int *ho, int *wo)
{
    if (c->deconv) {
        *ho = (h - 1) * c->stride - 2 * c->pad + c->kh;
        *wo = (w - 1) * c->stride - 2 * c->pad + c->kw;
    } else {
        *ho = (h + 2 * c->pad - c->kh) / c->stride + 1;
        *wo = (w + 2 * c->pad - c->kw) / c->stride + 1;
    }
}

static void weights_dims(const gs_rt_conv *c, int *ndims, dnnl_dims_t dims)
{
    if (c->deconv) {
        *ndims = 5;
        dims[0] = c->cout;
        dims[1] = 1;
        dims[2] = 1;
        dims[3] = c->kh;
        dims[4] = c->kw;
    } else {
        *ndims = 4;
        dims[0] = c->cout;
        dims[1] = c->cin;
        dims[2] = c->kh;
        dims[3] = c->kw;
    }
}

/* Whether an fp32 conv of c from src runs as oneDNN's Winograd F(4x4, 3x3) (runtime.h says
 * why these): 3 x 3, stride 1, float32 nChw16c source of at least 64 channels and maps of at
 * least 32 x 32. Measured per shape (2 threads, AVX-512): 0.42-0.66 of the direct conv's time
 * for 64..512 channels on 32..128 px maps; 16 channels at 512 px took 3-4x longer, and on
 * 16 x 16 maps the gain (0.86 at batch 1) does not pay for weights four times the size. */
static int use_winograd(const gs_rt_conv *c, const dnnl_memory_desc_t *src)
{
    return !c->deconv && c->kh == 3 && c->kw == 3 && c->stride == 1 && src->data_type == dnnl_f32 &&
           src->format_kind == dnnl_blocked && src->format_desc.blocking.inner_nblks == 1 &&
           c->cin >= 64 && src->dims[2] >= 32 && src->dims[3] >= 32;
}

/* Creates the primitive descriptor of c between src and dst (whose shapes must match) with
 * weights md `wmd` (any or a fixed layout) and attributes attr (may be NULL). With winograd,
 * tries oneDNN's Winograd algorithm first (use_winograd) and falls back to the direct one. */
static int conv_pd(dnnl_engine_t engine, const gs_rt_conv *c, const dnnl_memory_desc_t *src,
                   const dnnl_memory_desc_t *dst, const dnnl_memory_desc_t *wmd,
                   const_dnnl_primitive_attr_t attr, int winograd, dnnl_primitive_desc_t *pd)
{
    dnnl_memory_desc_t bmd;
    int h = (int)src->dims[2], w = (int)src->dims[3], ho = (int)dst->dims[2],
        wo = (int)dst->dims[3];
    dnnl_dims_t strides = {c->stride, c->stride};
    dnnl_dims_t pl = {c->pad, c->pad};
    dnnl_dims_t pr;
    if (c->deconv) {
        pr[0] = c->pad;
        pr[1] = c->pad;
    } else {
        pr[0] = (dnnl_dim_t)(ho - 1) * c->stride + c->kh - h - c->pad;
        pr[1] = (dnnl_dim_t)(wo - 1) * c->stride + c->kw - w - c->pad;
    }
    if (c->has_bias) {
        dnnl_dims_t bd = {c->cout};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a), "bias md");
    }
    if (c->deconv) {
        dnnl_deconvolution_desc_t d;
        DNNL_TRY(dnnl_deconvolution_forward_desc_init(
                     &d, dnnl_forward_inference, dnnl_deconvolution_direct, src, wmd,
                     c->has_bias ? &bmd : NULL, dst, strides, pl, pr),
                 "deconvolution desc");
        DNNL_TRY(dnnl_primitive_desc_create(pd, &d, attr, engine, NULL), "deconvolution pd");
    } else {
        dnnl_convolution_desc_t d;
        if (winograd && use_winograd(c, src) &&
            dnnl_convolution_forward_desc_init(
                &d, dnnl_forward_inference, dnnl_convolution_winograd, src, wmd,
                c->has_bias ? &bmd : NULL, dst, strides, pl, pr) == dnnl_success &&
            dnnl_primitive_desc_create(pd, &d, attr, engine, NULL) == dnnl_success)
            return 0;
        DNNL_TRY(dnnl_convolution_forward_desc_init(
                     &d, dnnl_forward_inference, dnnl_convolution_direct, src, wmd,
                     c->has_bias ? &bmd : NULL, dst, strides, pl, pr),
                 "convolution desc");
        DNNL_TRY(dnnl_primitive_desc_create(pd, &d, attr, engine, NULL), "convolution pd");
    }
    return 0;
fail:
    return gs_error_prefix("conv %dx%d %d->%d stride %d%s", c->kh, c->kw, c->cin, c->cout,
                           c->stride, c->deconv ? " (transposed, depthwise)" : "");
}

/* plain: NCHW; cl: channels-last (acdb); else nChw16c (aBcd16b). */
static void act_md_layout(int n, int c, int h, int w, int plain, int cl, dnnl_data_type_t dt,
                          dnnl_memory_desc_t *md)
{
    dnnl_dims_t dims = {n, c, h, w};
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(md, 4, dims, dt,
                                                    plain ? dnnl_nchw
                                                    : cl  ? dnnl_acdb
                                                          : dnnl_aBcd16b);
    GS_ASSERT(st == dnnl_success);
}

static void act_md(int n, int c, int h, int w, int plain, dnnl_memory_desc_t *md)
{
    act_md_layout(n, c, h, w, plain, 0, dnnl_f32, md);
}

int gs_rt_blocked_native(void)
{
    return gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core);
}

struct gs_rt_relaid {
    pthread_mutex_t mu; /* plans are built from any thread */
    size_t n, cap;
    struct {
        dnnl_memory_desc_t md;
        void *data; /* 64-byte aligned, owned */
    } * v;
};

int gs_rt_conv_init(gs_rt_conv *c, dnnl_engine_t engine, int cin, int cout, int k, int stride,
                    int pad, int deconv, const float *w, const float *bias)
{
    memset(c, 0, sizeof *c);
    c->relaid = calloc(1, sizeof *c->relaid);
    if (!c->relaid || pthread_mutex_init(&c->relaid->mu, NULL) != 0) {
        free(c->relaid);
        c->relaid = NULL;
        return gs_error_set("out of memory for a conv");
    }
    c->cin = cin;
    c->cout = cout;
    c->kh = c->kw = k;
    c->stride = stride;
    c->pad = pad;
    c->deconv = deconv;
    c->has_bias = bias != NULL;
    GS_ASSERT(!deconv || cin == cout);
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t src, dst, any, plain_md;
    int ndims, ho, wo;
    dnnl_dims_t wd;
    weights_dims(c, &ndims, wd);
    conv_out_size(c, 64, 64, &ho, &wo);
    /* The 3-channel network input is the only plain activation (see runtime.h). */
    const int cl = !gs_rt_blocked_native();
    act_md_layout(1, cin, 64, 64, cin == 3, cl, dnnl_f32, &src);
    act_md_layout(1, cout, ho, wo, 0, cl, dnnl_f32, &dst);
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&any, ndims, wd, dnnl_f32, dnnl_format_tag_any),
             "weights md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&plain_md, ndims, wd, dnnl_f32,
                                          ndims == 5 ? dnnl_goihw : dnnl_oihw),
             "weights md");
    if (conv_pd(engine, c, &src, &dst, &any, NULL, 0, &pd) != 0)
        goto fail_noset;
    c->wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    c->wr = aligned_floats(dnnl_memory_desc_get_size(&c->wmd) / sizeof(float));
    if (!c->wr) {
        gs_error_set("out of memory for conv weights");
        goto fail_noset;
    }
    if (gs_dnnl_reorder(engine, &plain_md, (void *)w, &c->wmd, c->wr) != 0)
        goto fail_noset;
    if (deconv) {
        int nb = (cout + 15) / 16;
        c->dwk = aligned_floats((size_t)nb * k * k * 16);
        if (!c->dwk) {
            gs_error_set("out of memory for deconvolution weights");
            goto fail_noset;
        }
        for (int ch = 0; ch < cout; ch++)
            for (int i = 0; i < k * k; i++)
                c->dwk[((size_t)(ch / 16) * k * k + i) * 16 + ch % 16] = w[(size_t)ch * k * k + i];
    }
    if (bias) {
        c->bias = aligned_floats((size_t)cout);
        if (!c->bias) {
            gs_error_set("out of memory for conv bias");
            goto fail_noset;
        }
        memcpy(c->bias, bias, (size_t)cout * sizeof(float));
    }
    dnnl_primitive_desc_destroy(pd);
    return 0;
fail:
fail_noset:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    gs_rt_conv_free(c);
    return -1;
}

int gs_rt_conv_make_bf16(gs_rt_conv *c, dnnl_engine_t engine, int cl)
{
    if (c->wr16)
        return 0;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t src, dst, any;
    int ndims, ho, wo;
    dnnl_dims_t wd;
    weights_dims(c, &ndims, wd);
    conv_out_size(c, 64, 64, &ho, &wo);
    act_md_layout(1, c->cin, 64, 64, !cl && c->cin == 3, cl, dnnl_bf16, &src);
    act_md_layout(1, c->cout, ho, wo, 0, cl, dnnl_bf16, &dst);
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&any, ndims, wd, dnnl_bf16, dnnl_format_tag_any),
             "bf16 weights md");
    if (conv_pd(engine, c, &src, &dst, &any, NULL, 0, &pd) != 0)
        goto fail_noset;
    c->wmd16 = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    c->wr16 = aligned_floats(dnnl_memory_desc_get_size(&c->wmd16) / sizeof(float) + 1);
    if (!c->wr16) {
        gs_error_set("out of memory for bf16 conv weights");
        goto fail_noset;
    }
    /* One rounding, to nearest even, from the folded float32 weights. */
    if (gs_dnnl_reorder(engine, &c->wmd, c->wr, &c->wmd16, c->wr16) != 0)
        goto fail_noset;
    if (c->dwk) {
        size_t nk = (size_t)(c->cout + 15) / 16 * c->kh * c->kw * 16;
        c->dwk16 = aligned_floats(nk);
        if (!c->dwk16) {
            gs_error_set("out of memory for bf16 deconvolution weights");
            goto fail_noset;
        }
        for (size_t i = 0; i < nk; i++)
            c->dwk16[i] = gs_bf16_to_f32(gs_bf16_from_f32(c->dwk[i]));
    }
    dnnl_primitive_desc_destroy(pd);
    return 0;
fail:
fail_noset:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    free(c->wr16);
    free(c->dwk16);
    c->wr16 = NULL;
    c->dwk16 = NULL;
    return gs_error_prefix("bf16 weights");
}

int gs_rt_conv_make_int8(gs_rt_conv *c, dnnl_engine_t engine, float amax, int u8)
{
    size_t per_out = (size_t)c->cin * c->kh * c->kw;
    int8_t *w8 = NULL;
    float *plain = NULL, *oscale = NULL, *bias8 = NULL;
    dnnl_memory_desc_t plain_md;
    dnnl_dims_t wd = {c->cout, c->cin, c->kh, c->kw};
    if (c->deconv)
        return gs_error_set("int8 weights: transposed convs stay in float (not quantised)");
    if (!(amax > 0.0f) || !isfinite(amax))
        return gs_error_set("int8 weights: activation range %g is not a positive number",
                            (double)amax);
    w8 = malloc(per_out * c->cout);
    plain = malloc(per_out * c->cout * sizeof(float));
    oscale = aligned_floats((size_t)c->cout);
    bias8 = c->has_bias ? aligned_floats((size_t)c->cout) : NULL;
    if (!w8 || !plain || !oscale || (c->has_bias && !bias8)) {
        gs_error_set("out of memory for int8 weights");
        goto fail_free;
    }
    /* The folded float32 weights back in plain OIHW: the scales are per output channel. */
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&plain_md, 4, wd, dnnl_f32, dnnl_oihw), "weights md");
    if (gs_dnnl_reorder(engine, &c->wmd, c->wr, &plain_md, plain) != 0)
        goto fail_free;
    float in_scale = (u8 ? 255.0f : 127.0f) / amax;
    for (int o = 0; o < c->cout; o++) {
        const float *wo = plain + (size_t)o * per_out;
        float m = 0.0f;
        for (size_t i = 0; i < per_out; i++)
            m = fmaxf(m, fabsf(wo[i]));
        /* An all-zero (or vanishing) channel gets scale 1: its weights quantise to 0. */
        float ws = m > 1e-30f ? 127.0f / m : 1.0f;
        for (size_t i = 0; i < per_out; i++) {
            float q = nearbyintf(wo[i] * ws);
            w8[(size_t)o * per_out + i] = (int8_t)fminf(127.0f, fmaxf(-127.0f, q));
        }
        oscale[o] = 1.0f / (in_scale * ws);
        /* oneDNN 2.x adds the bias to the int32 accumulator before the output scale. */
        if (bias8)
            bias8[o] = c->bias[o] * in_scale * ws;
        /* A range so small that the scales leave float would make the conv compute 0 * inf. */
        if (!(isfinite(oscale[o]) && oscale[o] > 0.0f && (!bias8 || isfinite(bias8[o])))) {
            gs_error_set("input range %g gives no usable int8 scale for output channel %d", amax,
                         o);
            goto fail_free;
        }
    }
    free(plain);
    free(c->w8);
    free(c->oscale);
    free(c->bias8);
    c->w8 = w8;
    c->oscale = oscale;
    c->bias8 = bias8;
    c->in_scale = in_scale;
    c->in_u8 = u8 != 0;
    return 0;
fail:
fail_free:
    free(w8);
    free(plain);
    free(oscale);
    free(bias8);
    return gs_error_prefix("int8 weights");
}

void gs_rt_conv_free(gs_rt_conv *c)
{
    if (c->relaid) {
        for (size_t i = 0; i < c->relaid->n; i++)
            free(c->relaid->v[i].data);
        free(c->relaid->v);
        pthread_mutex_destroy(&c->relaid->mu);
        free(c->relaid);
        c->relaid = NULL;
    }
    free(c->wr);
    free(c->bias);
    free(c->dwk);
    free(c->wr16);
    free(c->dwk16);
    free(c->w8);
    free(c->oscale);
    free(c->bias8);
    c->w8 = NULL;
    c->oscale = NULL;
    c->bias8 = NULL;
    c->wr = NULL;
    c->bias = NULL;
    c->dwk = NULL;
    c->wr16 = NULL;
    c->dwk16 = NULL;
}

int gs_rt_conv_relaid(const gs_rt_conv *c)
{
    pthread_mutex_lock(&c->relaid->mu);
    int n = (int)c->relaid->n;
    pthread_mutex_unlock(&c->relaid->mu);
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* Plans */

enum { STEP_PRIM, STEP_PRIM_IMAGES, STEP_COPY, STEP_DCN, STEP_ADD, STEP_DWDECONV, STEP_OBSERVE };

typedef struct {
    int kind;
    dnnl_primitive_t prim;
    int nargs;
    dnnl_exec_arg_t args[6];
    const void *src;
    void *dst;
    size_t nelems;          /* STEP_COPY, STEP_ADD */
    int bf16;               /* the step's activations are bf16 */
    const gs_rt_conv *conv; /* STEP_DWDECONV */
    const void *skip;
    int n, cb, h, w, ho, wo;
    int cl; /* STEP_DWDECONV: channels-last tensors */
    gs_deform_conv *dcn;
    gs_deform_conv_scratch *scratch;
    const float *offset;
    int part;    /* profiling bucket (gs_rt_plan_set_part) */
    int obs;     /* STEP_OBSERVE: index into the plan's observations */
    int reorder; /* a oneDNN reorder of activations (gs_rt_plan_reorders counts them) */
    /* STEP_PRIM_IMAGES: a one-image primitive run for each of n images; img_src and img_dst
     * (in args) are one-image views moved along src and dst by these strides. */
    dnnl_memory_t img_src, img_dst;
    size_t src_image_bytes, dst_image_bytes;
    dnnl_memory_t scr; /* STEP_PRIM_IMAGES: its scratchpad, a view of the plan's scratch */
} step;

typedef struct {
    const void *key; /* the conv, or a deformable conv's weight pointer */
    float amax;
} observation;

typedef struct {
    void *data;
    size_t bytes;
    int in_use;
} buffer;

/* A source some int8 conv step quantises into a pooled buffer: later int8 convs reading the
 * same tensor with the same scale and layout reuse it until a step writes the tensor or it is
 * released. */
typedef struct {
    const gs_rt_tensor *src;
    float scale;
    dnnl_memory_desc_t md;
    dnnl_memory_t mem; /* kept in the plan's mems */
    int buf;
} quantised;

struct gs_rt_plan {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int n, dry;
    int bf16;      /* new tensors are bf16 unless asked for float32 */
    int int8;      /* convs with int8 weights run in int8 */
    int cl;        /* new non-plain tensors are channels-last (gs_rt_plan_set_channels_last) */
    quantised *qs; /* live quantised copies of sources (plan_conv_int8) */
    size_t nqs, cap_qs;
    int observe;
    observation *obs;
    size_t nobs, cap_obs;
    gs_rt_tensor **tensors;
    size_t ntensors, cap_tensors;
    buffer *bufs;
    size_t nbufs, cap_bufs;
    step *steps;
    size_t nsteps, cap_steps;
    float **owned; /* buffers of this plan's int8 steps (owned_bytes) */
    size_t nowned, cap_owned;
    dnnl_memory_t *mems; /* weight and bias memories */
    size_t nmems, cap_mems;
    int weight_reorders;
    int winograd; /* convs that run oneDNN's Winograd algorithm (use_winograd) */
    /* One scratchpad for the Winograd steps (they run one after another), made at the first
     * run: oneDNN's own per-thread scratchpad was left allocated at an infer worker's exit
     * (~56 MB, LeakSanitizer) when its job threads had gone. */
    void *scratch;
    size_t scratch_bytes;
    int part;        /* bucket of the steps added next */
    double *profile; /* per-bucket seconds, or NULL when not profiling */
    int nparts;
};

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return gs_error_set("out of memory growing a plan");
    *arr = p;
    *cap = nc;
    return 0;
}

gs_rt_plan *gs_rt_plan_new(dnnl_engine_t engine, int n, int dry)
{
    gs_rt_plan *p = calloc(1, sizeof *p);
    if (!p) {
        gs_error_set("out of memory for a plan");
        return NULL;
    }
    p->engine = engine;
    p->n = n;
    p->dry = dry;
    p->cl = !gs_rt_blocked_native();
    if (!dry && dnnl_stream_create(&p->stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        gs_error_set("oneDNN: cannot create a stream");
        free(p);
        return NULL;
    }
    return p;
}

int gs_rt_plan_is_dry(const gs_rt_plan *p)
{
    return p->dry;
}

int gs_rt_plan_weight_reorders(const gs_rt_plan *p)
{
    return p->weight_reorders;
}

int gs_rt_plan_winograd_convs(const gs_rt_plan *p)
{
    return p->winograd;
}

void gs_rt_plan_destroy(gs_rt_plan **pp)
{
    if (!pp || !*pp)
        return;
    gs_rt_plan *p = *pp;
    for (size_t i = 0; i < p->nsteps; i++) {
        if (p->steps[i].prim)
            dnnl_primitive_destroy(p->steps[i].prim);
        gs_deform_conv_scratch_destroy(&p->steps[i].scratch);
        gs_deform_conv_destroy(&p->steps[i].dcn);
    }
    free(p->steps);
    for (size_t i = 0; i < p->nmems; i++)
        dnnl_memory_destroy(p->mems[i]);
    free(p->mems);
    for (size_t i = 0; i < p->ntensors; i++) {
        if (p->tensors[i]->mem)
            dnnl_memory_destroy(p->tensors[i]->mem);
        free(p->tensors[i]);
    }
    free(p->tensors);
    for (size_t i = 0; i < p->nbufs; i++)
        free(p->bufs[i].data);
    free(p->bufs);
    for (size_t i = 0; i < p->nowned; i++)
        free(p->owned[i]);
    free(p->owned);
    free(p->obs);
    free(p->qs);
    free(p->scratch);
    if (p->stream)
        dnnl_stream_destroy(p->stream);
    free(p);
    *pp = NULL;
}

void gs_rt_plan_set_bf16(gs_rt_plan *p, int on)
{
    p->bf16 = on != 0;
}

void gs_rt_plan_set_int8(gs_rt_plan *p, int on)
{
    p->int8 = on != 0;
}

void gs_rt_plan_set_channels_last(gs_rt_plan *p, int on)
{
    p->cl = on != 0;
}

int gs_rt_plan_channels_last(const gs_rt_plan *p)
{
    return p->cl;
}

int gs_rt_plan_reorders(const gs_rt_plan *p)
{
    int n = 0;
    for (size_t i = 0; i < p->nsteps; i++)
        n += p->steps[i].reorder;
    return n;
}

void gs_rt_plan_set_observe(gs_rt_plan *p, int on)
{
    p->observe = on != 0;
}

float gs_rt_plan_observed(const gs_rt_plan *p, const void *key)
{
    for (size_t i = 0; i < p->nobs; i++)
        if (p->obs[i].key == key)
            return p->obs[i].amax;
    return -1.0f;
}

static step *new_step(gs_rt_plan *p, int kind);

/* Step: record max |x| of src as the range of the layer `key` stands for. */
static int observe(gs_rt_plan *p, const gs_rt_tensor *src, const void *key)
{
    if (grow((void **)&p->obs, &p->cap_obs, p->nobs + 1, sizeof *p->obs))
        return -1;
    step *o = new_step(p, STEP_OBSERVE);
    if (!o)
        return -1;
    o->src = src->data;
    o->nelems = src->nelems;
    o->bf16 = src->bf16;
    o->obs = (int)p->nobs;
    p->obs[p->nobs++] = (observation){key, 0.0f};
    return 0;
}

static gs_rt_tensor *tensor_new(gs_rt_plan *p, int c, int h, int w, int plain, int cl, int bf16);

gs_rt_tensor *gs_rt_plan_tensor(gs_rt_plan *p, int c, int h, int w, int plain)
{
    return tensor_new(p, c, h, w, plain, !plain && p->cl, p->bf16);
}

gs_rt_tensor *gs_rt_plan_tensor_f32(gs_rt_plan *p, int c, int h, int w, int plain)
{
    return tensor_new(p, c, h, w, plain, !plain && p->cl, 0);
}

/* A pooled buffer of at least `bytes`: the best fit among released ones, else a new zeroed
 * one; marked in use. Returns its index, or -1 (out of memory). */
static int pool_take(gs_rt_plan *p, size_t bytes)
{
    int best = -1;
    for (size_t i = 0; i < p->nbufs; i++)
        if (!p->bufs[i].in_use && p->bufs[i].bytes >= bytes &&
            (best < 0 || p->bufs[i].bytes < p->bufs[best].bytes))
            best = (int)i;
    if (best < 0) {
        if (grow((void **)&p->bufs, &p->cap_bufs, p->nbufs + 1, sizeof *p->bufs))
            return -1;
        float *d = aligned_floats((bytes + sizeof(float) - 1) / sizeof(float));
        if (!d)
            return -1;
        p->bufs[p->nbufs] = (buffer){d, bytes, 0};
        best = (int)p->nbufs++;
    }
    p->bufs[best].in_use = 1;
    return best;
}

static gs_rt_tensor *tensor_new_dt(gs_rt_plan *p, int c, int h, int w, int plain, int cl,
                                   dnnl_data_type_t dt);

static gs_rt_tensor *tensor_new(gs_rt_plan *p, int c, int h, int w, int plain, int cl, int bf16)
{
    return tensor_new_dt(p, c, h, w, plain, cl, bf16 ? dnnl_bf16 : dnnl_f32);
}

/* A new tensor of element type dt (f32, bf16, or u8/s8 for a quantised one). */
static gs_rt_tensor *tensor_new_dt(gs_rt_plan *p, int c, int h, int w, int plain, int cl,
                                   dnnl_data_type_t dt)
{
    if (c <= 0 || h <= 0 || w <= 0) {
        gs_error_set("tensor shape %dx%dx%d is empty", c, h, w);
        return NULL;
    }
    gs_rt_tensor *t = calloc(1, sizeof *t);
    if (!t || grow((void **)&p->tensors, &p->cap_tensors, p->ntensors + 1, sizeof *p->tensors)) {
        free(t);
        gs_error_set("out of memory for a tensor");
        return NULL;
    }
    p->tensors[p->ntensors++] = t;
    t->n = p->n;
    t->c = c;
    t->h = h;
    t->w = w;
    t->plain = plain;
    t->cl = cl;
    t->bf16 = dt == dnnl_bf16;
    t->q = dt == dnnl_u8 ? 1 : dt == dnnl_s8 ? -1 : 0;
    t->buf = -1;
    act_md_layout(p->n, c, h, w, plain, cl, dt, &t->md);
    size_t bytes = dnnl_memory_desc_get_size(&t->md);
    t->nelems = bytes / (t->q ? 1 : t->bf16 ? sizeof(uint16_t) : sizeof(float));
    if (p->dry)
        return t;
    int best = pool_take(p, bytes);
    if (best < 0) {
        gs_error_set("out of memory for a %dx%dx%dx%d activation", p->n, c, h, w);
        return NULL;
    }
    t->buf = best;
    t->data = p->bufs[best].data;
    if (dnnl_memory_create(&t->mem, &t->md, p->engine, t->data) != dnnl_success) {
        gs_error_set("oneDNN: cannot create an activation memory");
        return NULL;
    }
    return t;
}

/* Steps added from now on may change t: its quantised copies are stale, their buffers free. */
static void forget_quantised(gs_rt_plan *p, const gs_rt_tensor *t)
{
    for (size_t i = 0; i < p->nqs;) {
        if (p->qs[i].src == t) {
            p->bufs[p->qs[i].buf].in_use = 0;
            p->qs[i] = p->qs[--p->nqs];
        } else {
            i++;
        }
    }
}

void gs_rt_plan_release(gs_rt_plan *p, gs_rt_tensor *t)
{
    if (!p->dry && t && t->buf >= 0) {
        forget_quantised(p, t);
        p->bufs[t->buf].in_use = 0;
    }
}

static step *new_step(gs_rt_plan *p, int kind)
{
    if (grow((void **)&p->steps, &p->cap_steps, p->nsteps + 1, sizeof *p->steps))
        return NULL;
    step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    /* Residual copies and adds are memory moves wherever they sit in the network. */
    s->part = kind == STEP_COPY || kind == STEP_ADD ? GS_RT_PART_MOVES : p->part;
    return s;
}

static int keep_mem(gs_rt_plan *p, dnnl_memory_t m)
{
    if (grow((void **)&p->mems, &p->cap_mems, p->nmems + 1, sizeof *p->mems)) {
        dnnl_memory_destroy(m);
        return -1;
    }
    p->mems[p->nmems++] = m;
    return 0;
}

static int make_attr(gs_act act, int sum, dnnl_primitive_attr_t *attr)
{
    dnnl_post_ops_t ops = NULL;
    *attr = NULL;
    DNNL_TRY(dnnl_primitive_attr_create(attr), "attr");
    DNNL_TRY(dnnl_post_ops_create(&ops), "post-ops");
    if (sum)
        DNNL_TRY(dnnl_post_ops_append_sum(ops, 1.0f), "sum post-op");
    if (act.kind != GS_ACT_NONE)
        DNNL_TRY(dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_relu,
                                              act.kind == GS_ACT_LEAKY ? act.slope : 0.0f, 0.0f),
                 "eltwise post-op");
    DNNL_TRY(dnnl_primitive_attr_set_post_ops(*attr, ops), "set post-ops");
    dnnl_post_ops_destroy(ops);
    return 0;
fail:
    if (ops)
        dnnl_post_ops_destroy(ops);
    if (*attr)
        dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
    return -1;
}

/* Reorders conv c's weights from (have, data) into want at dst. oneDNN reorders into its
 * Winograd weight format only from plain OIHW float32, so that goes through a plain copy. */
static int reorder_weights_to(dnnl_engine_t engine, const gs_rt_conv *c,
                              const dnnl_memory_desc_t *have, const void *data,
                              const dnnl_memory_desc_t *want, void *dst)
{
    if (want->format_kind != dnnl_format_kind_wino)
        return gs_dnnl_reorder(engine, have, (void *)data, want, dst);
    dnnl_memory_desc_t plain_md;
    dnnl_dims_t wd = {c->cout, c->cin, c->kh, c->kw};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&plain_md, 4, wd, dnnl_f32, dnnl_oihw), "weights md");
    float *plain = aligned_floats((size_t)c->cout * c->cin * c->kh * c->kw);
    if (!plain)
        return gs_error_set("out of memory for conv weights");
    int rc = gs_dnnl_reorder(engine, have, (void *)data, &plain_md, plain) != 0 ||
                     gs_dnnl_reorder(engine, &plain_md, plain, want, dst) != 0
                 ? -1
                 : 0;
    free(plain);
    return rc;
fail:
    return -1;
}

/* Conv c's weights (have, data) in layout want: the copy c->relaid holds, made now if this
 * is the first plan to ask. Returns it (owned by c), or NULL with the error set. */
static void *relaid_weights(dnnl_engine_t engine, const gs_rt_conv *c,
                            const dnnl_memory_desc_t *have, const void *data,
                            const dnnl_memory_desc_t *want)
{
    gs_rt_relaid *r = c->relaid;
    GS_ASSERT(r); /* every conv comes from gs_rt_conv_init */
    void *out = NULL;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n && !out; i++)
        if (dnnl_memory_desc_equal(&r->v[i].md, want))
            out = r->v[i].data;
    if (!out) {
        float *copy = aligned_floats(dnnl_memory_desc_get_size(want) / sizeof(float));
        if (!copy || grow((void **)&r->v, &r->cap, r->n + 1, sizeof *r->v)) {
            free(copy);
            gs_error_set("out of memory for reordered weights");
        } else if (reorder_weights_to(engine, c, have, data, want, copy) != 0) {
            free(copy);
        } else {
            r->v[r->n].md = *want;
            r->v[r->n++].data = copy;
            out = copy;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return out;
}

/* Allocates a plan-owned buffer of `bytes` (64-byte aligned, zeroed). */
static void *owned_bytes(gs_rt_plan *p, size_t bytes)
{
    float *b = aligned_floats((bytes + sizeof(float) - 1) / sizeof(float));
    if (!b || grow((void **)&p->owned, &p->cap_owned, p->nowned + 1, sizeof *p->owned)) {
        free(b);
        gs_error_set("out of memory for an int8 buffer");
        return NULL;
    }
    p->owned[p->nowned++] = b;
    return b;
}

/* A reorder step from (md, mem) to (md2, mem2) with attributes attr (may be NULL). */
static int reorder_step(gs_rt_plan *p, const dnnl_memory_desc_t *md, dnnl_memory_t mem,
                        const dnnl_memory_desc_t *md2, dnnl_memory_t mem2,
                        const_dnnl_primitive_attr_t attr)
{
    dnnl_primitive_desc_t pd = NULL;
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&pd, md, p->engine, md2, p->engine, attr),
             "reorder pd");
    step *s = new_step(p, STEP_PRIM);
    if (!s)
        goto fail_noset;
    DNNL_TRY(dnnl_primitive_create(&s->prim, pd), "reorder");
    s->reorder = 1;
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_FROM, mem};
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_TO, mem2};
    dnnl_primitive_desc_destroy(pd);
    return 0;
fail:
fail_noset:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return -1;
}

/* The int8 form of a conv step (gs_rt_plan_set_int8): quantise the source with a reorder
 * into the layout the int8 conv picks, then the conv with per-channel output scales.
 * oneDNN 2.6 has VNNI int8 convs (brgconv) only for channels-last source AND destination;
 * with our nChw16c tensors it falls back to ref_int8, ~100x slower. A channels-last
 * destination (gs_rt_plan_set_channels_last) is written by the conv itself, sum post-op
 * included, so the conv costs one reorder (the quantisation, a same-layout one from a
 * channels-last source). An nChw16c destination is reached through a channels-last float
 * buffer of the plan (pre-filled from the destination when the conv sums into it) and a
 * reorder back: two or three reorders per conv. The weights go from plain OIHW s8 to the
 * conv's layout here, per plan: for an s8 source oneDNN adds a compensation term to the
 * weights' buffer that only a reorder from plain computes. */
static int plan_conv_int8(gs_rt_plan *p, const gs_rt_conv *c, gs_rt_tensor *src, gs_rt_tensor *d,
                          int sum, gs_act act)
{
    dnnl_primitive_attr_t attr = NULL, qattr = NULL;
    dnnl_primitive_desc_t pd = NULL, qpd = NULL;
    dnnl_memory_desc_t qany, wany, wplain, dany;
    dnnl_memory_t qm = NULL, wm = NULL, wpm = NULL, bm = NULL, tm = NULL;
    int qi = -1, ti = -1;
    dnnl_stream_t rs = NULL;
    dnnl_primitive_t wr = NULL;
    dnnl_dims_t sd = {src->n, src->c, src->h, src->w};
    dnnl_dims_t wd = {c->cout, c->cin, c->kh, c->kw};
    dnnl_data_type_t qdt = c->in_u8 ? dnnl_u8 : dnnl_s8;
    int direct = d->cl;
    float *scales = NULL;
    if (src->plain)
        return gs_error_set("int8 conv: plain (network input) sources stay in float");
    if (src->q && ((src->q > 0) != (c->in_u8 != 0) || src->qscale != c->in_scale))
        return gs_error_set("int8 conv: source quantised with scale %g, the conv wants %g",
                            (double)src->qscale, (double)c->in_scale);
    if (d->q && (!direct || sum))
        return gs_error_set("int8 conv: a quantised destination must be channels-last, no sum");
    if (src->q)
        qany = src->md;
    else
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&qany, 4, sd, qdt, dnnl_format_tag_any),
                 "int8 src md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&wany, 4, wd, dnnl_s8, dnnl_format_tag_any),
             "int8 weights md");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&wplain, 4, wd, dnnl_s8, dnnl_oihw), "int8 weights md");
    if (direct) {
        dany = d->md;
    } else {
        dnnl_dims_t dd = {d->n, d->c, d->h, d->w};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&dany, 4, dd, d->bf16 ? dnnl_bf16 : dnnl_f32,
                                              dnnl_format_tag_any),
                 "int8 dst md");
    }
    if (make_attr(act, sum, &attr) != 0)
        goto fail_noset;
    if (d->q) {
        /* The reader's quantisation folded in: round(conv(x, w) * qscale), saturated. */
        scales = malloc((size_t)c->cout * sizeof *scales);
        if (!scales) {
            gs_error_set("out of memory for int8 output scales");
            goto fail_noset;
        }
        for (int o = 0; o < c->cout; o++)
            scales[o] = c->oscale[o] * d->qscale;
    }
    DNNL_TRY(
        dnnl_primitive_attr_set_output_scales(attr, c->cout, 1 << 1, scales ? scales : c->oscale),
        "output scales");
    {
        /* conv_pd makes an f32 bias md; int8 convs take an f32 bias too. */
        gs_rt_conv shape = *c;
        shape.has_bias = c->bias8 != NULL;
        if (conv_pd(p->engine, &shape, &qany, &dany, &wany, attr, 0, &pd) != 0)
            goto fail_noset;
    }
    const dnnl_memory_desc_t *qmd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *tmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    /* The channels-last output lives only during this conv's steps (a pooled buffer, released
     * below for later tensors: steps run in order); the quantised source is kept for later
     * convs reading the same source until that source is written or released. The weights are
     * the plan's own. */
    void *wbuf = owned_bytes(p, dnnl_memory_desc_get_size(wmd));
    if (!wbuf)
        goto fail_noset;
    /* The source as this conv reads it: already int8, quantised earlier for another conv
     * (same scale and layout, not written since), or to be quantised now. */
    const quantised *have = NULL;
    for (size_t i = 0; i < p->nqs && !src->q; i++)
        if (p->qs[i].src == src && p->qs[i].scale == c->in_scale &&
            dnnl_memory_desc_equal(&p->qs[i].md, qmd))
            have = &p->qs[i];
    if (src->q) {
        qm = src->mem;
    } else if (have) {
        qm = have->mem;
    } else {
        qi = pool_take(p, dnnl_memory_desc_get_size(qmd));
        if (qi < 0) {
            gs_error_set("out of memory for int8 conv buffers");
            goto fail_noset;
        }
        DNNL_TRY(dnnl_memory_create(&qm, qmd, p->engine, p->bufs[qi].data), "int8 source memory");
        if (keep_mem(p, qm))
            goto fail_noset;
    }
    ti = !direct ? pool_take(p, dnnl_memory_desc_get_size(tmd)) : -1;
    if (!direct && ti < 0) {
        gs_error_set("out of memory for int8 conv buffers");
        goto fail_noset;
    }
    if (direct) {
        tm = d->mem;
    } else {
        DNNL_TRY(dnnl_memory_create(&tm, tmd, p->engine, p->bufs[ti].data),
                 "int8 conv output memory");
        if (keep_mem(p, tm))
            goto fail_noset;
    }
    DNNL_TRY(dnnl_memory_create(&wm, wmd, p->engine, wbuf), "int8 weights memory");
    if (keep_mem(p, wm))
        goto fail_noset;
    /* Weights: plain s8 -> the conv's layout (with compensation when it asks for it). */
    DNNL_TRY(dnnl_memory_create(&wpm, &wplain, p->engine, c->w8), "int8 weights memory");
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&qpd, &wplain, p->engine, wmd, p->engine, NULL),
             "int8 weights reorder pd");
    DNNL_TRY(dnnl_primitive_create(&wr, qpd), "int8 weights reorder");
    DNNL_TRY(dnnl_stream_create(&rs, p->engine, dnnl_stream_default_flags), "stream");
    {
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, wpm}, {DNNL_ARG_TO, wm}};
        DNNL_TRY(dnnl_primitive_execute(wr, rs, 2, a), "int8 weights reorder");
        DNNL_TRY(dnnl_stream_wait(rs), "int8 weights reorder");
    }
    dnnl_primitive_destroy(wr);
    wr = NULL;
    dnnl_primitive_desc_destroy(qpd);
    qpd = NULL;
    /* Source: round(x * in_scale), saturated to the u8/s8 range. */
    DNNL_TRY(dnnl_primitive_attr_create(&qattr), "attr");
    DNNL_TRY(dnnl_primitive_attr_set_output_scales(qattr, 1, 0, &c->in_scale), "quantise scale");
    if (sum && !direct && reorder_step(p, &d->md, d->mem, tmd, tm, NULL))
        goto fail_noset;
    if (qi >= 0 && reorder_step(p, &src->md, src->mem, qmd, qm, qattr))
        goto fail_noset;
    step *s = new_step(p, STEP_PRIM);
    if (!s)
        goto fail_noset;
    DNNL_TRY(dnnl_primitive_create(&s->prim, pd), "int8 conv primitive");
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, qm};
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, wm};
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, tm};
    if (c->bias8) {
        DNNL_TRY(dnnl_memory_create(&bm, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1),
                                    p->engine, c->bias8),
                 "bias memory");
        if (keep_mem(p, bm))
            goto fail_noset;
        s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bm};
    }
    if (!direct && reorder_step(p, tmd, tm, &d->md, d->mem, NULL))
        goto fail_noset;
    /* The destination changed: copies of it quantised earlier are stale. A new quantised
     * source stays for later convs reading it (its buffer is freed with the source). */
    forget_quantised(p, d);
    if (qi >= 0 && src != d) {
        if (grow((void **)&p->qs, &p->cap_qs, p->nqs + 1, sizeof *p->qs) == 0) {
            p->qs[p->nqs++] = (quantised){src, c->in_scale, *qmd, qm, qi};
            qi = -1;
        } else {
            gs_error_clear(); /* not kept: a later reader quantises again */
        }
    }
    if (qi >= 0)
        p->bufs[qi].in_use = 0;
    if (ti >= 0)
        p->bufs[ti].in_use = 0;
    free(scales);
    dnnl_memory_destroy(wpm);
    dnnl_stream_destroy(rs);
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(qattr);
    dnnl_primitive_attr_destroy(attr);
    return 0;
fail:
fail_noset:
    free(scales);
    if (qi >= 0)
        p->bufs[qi].in_use = 0;
    if (ti >= 0)
        p->bufs[ti].in_use = 0;
    if (wr)
        dnnl_primitive_destroy(wr);
    if (wpm)
        dnnl_memory_destroy(wpm);
    if (rs)
        dnnl_stream_destroy(rs);
    if (qpd)
        dnnl_primitive_desc_destroy(qpd);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (qattr)
        dnnl_primitive_attr_destroy(qattr);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return gs_error_prefix("int8 conv %dx%d %d->%d", c->kh, c->kw, c->cin, c->cout);
}

int gs_rt_plan_conv(gs_rt_plan *p, const gs_rt_conv *c, gs_rt_tensor *src, gs_rt_tensor **dst,
                    int sum, gs_act act)
{
    int ho, wo;
    if (src->c != c->cin)
        return gs_error_set("conv expects %d input channels, got %d", c->cin, src->c);
    conv_out_size(c, src->h, src->w, &ho, &wo);
    if (ho <= 0 || wo <= 0)
        return gs_error_set("conv input %dx%d too small", src->h, src->w);
    if (!*dst) {
        GS_ASSERT(!sum);
        *dst = gs_rt_plan_tensor(p, c->cout, ho, wo, 0);
        if (!*dst)
            return -1;
    }
    gs_rt_tensor *d = *dst;
    if (d->c != c->cout || d->h != ho || d->w != wo)
        return gs_error_set("conv output %dx%dx%d does not match destination %dx%dx%d", c->cout, ho,
                            wo, d->c, d->h, d->w);
    if (p->dry)
        return 0;
    forget_quantised(p, d);
    if ((src->q || d->q) && !(p->int8 && c->w8))
        return gs_error_set("conv %dx%d %d->%d: int8 tensors are only for int8 convs", c->kh, c->kw,
                            c->cin, c->cout);
    /* Observing reads the source as float to record its range. */
    if (p->observe && src->q)
        return gs_error_set("conv %dx%d %d->%d: a calibrating plan cannot read an int8 source",
                            c->kh, c->kw, c->cin, c->cout);
    if (p->observe && observe(p, src, c) < 0)
        return -1;
    if (p->int8 && c->w8)
        return plan_conv_int8(p, c, src, d, sum, act);
    dnnl_primitive_attr_t attr = NULL, wattr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t any;
    int ndims;
    dnnl_dims_t wd;
    weights_dims(c, &ndims, wd);
    if (src->bf16 && !c->wr16) {
        gs_error_set("conv %dx%d %d->%d has no bf16 weights (gs_rt_conv_make_bf16)", c->kh, c->kw,
                     c->cin, c->cout);
        goto fail_noset;
    }
    /* bf16 source: bf16 weights (rounded once at load), float32 bias and accumulation. */
    const dnnl_memory_desc_t *have = src->bf16 ? &c->wmd16 : &c->wmd;
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&any, ndims, wd, src->bf16 ? dnnl_bf16 : dnnl_f32,
                                          dnnl_format_tag_any),
             "weights md");
    if (make_attr(act, sum, &attr) != 0)
        goto fail_noset;
    /* A Winograd conv is made for one image and run once per image: oneDNN blocks its
     * transforms differently at other batch sizes, which changes the low bits, and a tile must
     * get the same result in a full batch as alone (the infer stage runs partial batches tile
     * by tile). Per image it measured as fast as batched, with a batch-1-sized scratchpad. */
    dnnl_memory_desc_t src1, dst1;
    const int n = (int)src->md.dims[0];
    act_md(1, c->cin, src->h, src->w, 0, &src1);
    act_md(1, c->cout, d->h, d->w, 0, &dst1);
    int winograd = 0;
    if (use_winograd(c, &src->md)) {
        dnnl_memory_desc_t full;
        act_md(n, c->cin, src->h, src->w, 0, &full);
        if (dnnl_memory_desc_equal(&full, &src->md) &&
            (attr ? dnnl_primitive_attr_clone(&wattr, attr) : dnnl_primitive_attr_create(&wattr)) ==
                dnnl_success &&
            dnnl_primitive_attr_set_scratchpad_mode(wattr, dnnl_scratchpad_mode_user) ==
                dnnl_success &&
            conv_pd(p->engine, c, &src1, &dst1, &any, wattr, 1, &pd) == 0) {
            winograd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0)->format_kind ==
                       dnnl_format_kind_wino;
            if (!winograd) {
                dnnl_primitive_desc_destroy(pd);
                pd = NULL;
            }
        }
        gs_error_clear();
    }
    if (!winograd && conv_pd(p->engine, c, &src->md, &d->md, &any, attr, 0, &pd) != 0)
        goto fail_noset;
    const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    void *wdata = src->bf16 ? c->wr16 : c->wr;
    if (!dnnl_memory_desc_equal(want, have)) {
        /* oneDNN picked another layout for these shapes (by design for Winograd): the conv's
         * copy in that layout, made once for every plan. */
        wdata = relaid_weights(p->engine, c, have, wdata, want);
        if (!wdata)
            goto fail_noset;
        /* Only unexpected layout changes count as re-reorders. */
        p->weight_reorders += !winograd;
        p->winograd += winograd;
    }
    step *s = new_step(p, winograd ? STEP_PRIM_IMAGES : STEP_PRIM);
    if (!s)
        goto fail_noset;
    DNNL_TRY(dnnl_primitive_create(&s->prim, pd), "conv primitive");
    dnnl_memory_t wm = NULL, bm = NULL;
    DNNL_TRY(dnnl_memory_create(&wm, want, p->engine, wdata), "weights memory");
    if (keep_mem(p, wm))
        goto fail_noset;
    dnnl_memory_t sm = src->mem, dm = d->mem;
    if (winograd) {
        s->n = n;
        s->src = src->data;
        s->dst = d->data;
        s->src_image_bytes = dnnl_memory_desc_get_size(&src1);
        s->dst_image_bytes = dnnl_memory_desc_get_size(&dst1);
        DNNL_TRY(dnnl_memory_create(&s->img_src, &src1, p->engine, src->data), "image memory");
        if (keep_mem(p, s->img_src))
            goto fail_noset;
        DNNL_TRY(dnnl_memory_create(&s->img_dst, &dst1, p->engine, d->data), "image memory");
        if (keep_mem(p, s->img_dst))
            goto fail_noset;
        sm = s->img_src;
        dm = s->img_dst;
        const dnnl_memory_desc_t *smd =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        size_t sb = dnnl_memory_desc_get_size(smd);
        if (sb > 0) {
            DNNL_TRY(dnnl_memory_create(&s->scr, smd, p->engine, DNNL_MEMORY_NONE),
                     "scratchpad memory");
            if (keep_mem(p, s->scr))
                goto fail_noset;
            if (sb > p->scratch_bytes)
                p->scratch_bytes = sb;
        }
    }
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, sm};
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, wm};
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, dm};
    if (s->scr)
        s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, s->scr};
    if (c->has_bias) {
        DNNL_TRY(dnnl_memory_create(&bm, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1),
                                    p->engine, c->bias),
                 "bias memory");
        if (keep_mem(p, bm))
            goto fail_noset;
        s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bm};
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_attr_destroy(wattr);
    return 0;
fail:
fail_noset:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (wattr)
        dnnl_primitive_attr_destroy(wattr);
    return -1;
}

int gs_rt_plan_conv_feeding(gs_rt_plan *p, const gs_rt_conv *c, gs_rt_tensor *src,
                            gs_rt_tensor **dst, gs_act act, const gs_rt_conv *next)
{
    int ho, wo;
    if (p->dry || p->observe || !p->int8 || !p->cl || !c->w8 || !next || !next->w8 ||
        next->cin != c->cout || *dst || src->c != c->cin)
        return gs_rt_plan_conv(p, c, src, dst, 0, act);
    conv_out_size(c, src->h, src->w, &ho, &wo);
    if (ho <= 0 || wo <= 0)
        return gs_rt_plan_conv(p, c, src, dst, 0, act);
    *dst = tensor_new_dt(p, c->cout, ho, wo, 0, 1, next->in_u8 ? dnnl_u8 : dnnl_s8);
    if (!*dst)
        return -1;
    (*dst)->qscale = next->in_scale;
    return gs_rt_plan_conv(p, c, src, dst, 0, act);
}

int gs_rt_plan_maxpool2(gs_rt_plan *p, gs_rt_tensor *src, gs_rt_tensor **dst)
{
    if (src->h < 2 || src->w < 2 || src->q)
        return gs_error_set("max-pool input %dx%d too small or int8", src->h, src->w);
    *dst = tensor_new(p, src->c, src->h / 2, src->w / 2, 0, src->cl, src->bf16);
    if (!*dst)
        return -1;
    if (p->dry)
        return 0;
    dnnl_pooling_desc_t d;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_dims_t strides = {2, 2}, kernel = {2, 2}, pad = {0, 0};
    DNNL_TRY(dnnl_pooling_forward_desc_init(&d, dnnl_forward_inference, dnnl_pooling_max, &src->md,
                                            &(*dst)->md, strides, kernel, pad, pad),
             "pooling desc");
    DNNL_TRY(dnnl_primitive_desc_create(&pd, &d, NULL, p->engine, NULL), "pooling pd");
    step *s = new_step(p, STEP_PRIM);
    if (!s)
        goto fail_noset;
    DNNL_TRY(dnnl_primitive_create(&s->prim, pd), "pooling");
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, src->mem};
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, (*dst)->mem};
    dnnl_primitive_desc_destroy(pd);
    return 0;
fail:
fail_noset:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return -1;
}

int gs_rt_plan_to_blocked(gs_rt_plan *p, gs_rt_tensor *src, gs_rt_tensor **dst)
{
    if (src->plain || !src->cl || src->q)
        return gs_error_set("to nChw16c: the %dx%dx%d source is not channels-last float", src->c,
                            src->h, src->w);
    *dst = tensor_new(p, src->c, src->h, src->w, 0, 0, src->bf16);
    if (!*dst)
        return -1;
    if (p->dry)
        return 0;
    int before = p->part;
    /* A layout conversion is a memory move wherever it sits (as copies and adds are). */
    p->part = GS_RT_PART_MOVES;
    int rc = reorder_step(p, &src->md, src->mem, &(*dst)->md, (*dst)->mem, NULL);
    p->part = before;
    return rc;
}

int gs_rt_plan_copy(gs_rt_plan *p, gs_rt_tensor *src, gs_rt_tensor **dst)
{
    if (src->q)
        return gs_error_set("copy: int8 tensors are only for int8 convs");
    *dst = tensor_new(p, src->c, src->h, src->w, src->plain, src->cl, src->bf16);
    if (!*dst)
        return -1;
    if (p->dry)
        return 0;
    step *s = new_step(p, STEP_COPY);
    if (!s)
        return -1;
    s->src = src->data;
    s->dst = (*dst)->data;
    s->nelems = src->nelems;
    s->bf16 = src->bf16;
    return 0;
}

int gs_rt_plan_add(gs_rt_plan *p, gs_rt_tensor *dst, gs_rt_tensor *src)
{
    if (dst->c != src->c || dst->h != src->h || dst->w != src->w || dst->plain != src->plain ||
        dst->cl != src->cl || dst->bf16 != src->bf16 || dst->q || src->q)
        return gs_error_set("add: shapes %dx%dx%d and %dx%dx%d differ", dst->c, dst->h, dst->w,
                            src->c, src->h, src->w);
    if (p->dry)
        return 0;
    forget_quantised(p, dst);
    step *s = new_step(p, STEP_ADD);
    if (!s)
        return -1;
    s->src = src->data;
    s->dst = dst->data;
    s->nelems = dst->nelems;
    s->bf16 = dst->bf16;
    return 0;
}

int gs_rt_plan_dwdeconv(gs_rt_plan *p, const gs_rt_conv *c, gs_rt_tensor *src, gs_rt_tensor *skip,
                        gs_rt_tensor **dst)
{
    GS_ASSERT(c->deconv && c->dwk);
    int ho, wo;
    conv_out_size(c, src->h, src->w, &ho, &wo);
    if (src->c != c->cin || src->plain || skip->plain || src->q || skip->q || src->cl != skip->cl ||
        (src->cl && src->c % 16) || skip->c != c->cout || skip->h != ho || skip->w != wo ||
        skip->bf16 != src->bf16)
        return gs_error_set("depthwise deconvolution: input %dx%dx%d, skip %dx%dx%d do not fit",
                            src->c, src->h, src->w, skip->c, skip->h, skip->w);
    if (c->kh / c->stride > 8 || c->kw / c->stride > 8 || c->kh % c->stride || c->kw % c->stride)
        return gs_error_set("depthwise deconvolution: kernel %d with stride %d unsupported", c->kh,
                            c->stride);
    if (src->bf16 && !c->dwk16)
        return gs_error_set("depthwise deconvolution has no bf16 weights");
    *dst = tensor_new(p, c->cout, ho, wo, 0, src->cl, src->bf16);
    if (!*dst)
        return -1;
    if (p->dry)
        return 0;
    step *s = new_step(p, STEP_DWDECONV);
    if (!s)
        return -1;
    s->conv = c;
    s->bf16 = src->bf16;
    s->src = src->data;
    s->skip = skip->data;
    s->dst = (*dst)->data;
    s->n = p->n;
    s->cb = (c->cout + 15) / 16;
    s->cl = src->cl;
    s->h = src->h;
    s->w = src->w;
    s->ho = ho;
    s->wo = wo;
    return 0;
}

/* Where row y of 16-channel block nc (= image * cb + block) of a transposed conv step starts,
 * in elements: of its input image block (in_at) and of its output and skip rows (out_at), and
 * the elements from one pixel to the next (px): 16 in nChw16c, the channel count
 * channels-last (a multiple of 16 there, so a block of a pixel is still 16 contiguous lanes). */
static void dw_addresses(const step *s, long nc, int y, size_t *px, size_t *in_at, size_t *out_at)
{
    if (!s->cl) {
        *px = 16;
        *in_at = (size_t)nc * s->h * s->w * 16;
        *out_at = ((size_t)nc * s->ho + y) * s->wo * 16;
        return;
    }
    size_t n = (size_t)(nc / s->cb), b = (size_t)(nc % s->cb), c = (size_t)s->cb * 16;
    *px = c;
    *in_at = n * s->h * s->w * c + b * 16;
    *out_at = (n * s->ho + (size_t)y) * s->wo * c + b * 16;
}

/* The input rows/columns (and kernel taps) that reach output index o of a transposed conv:
 * o = i*stride - pad + k. Returns the count (<= k/stride). */
static int dw_taps(int o, int stride, int pad, int k, int in, int *idx, int *tap)
{
    int n = 0;
    for (int kk = (o + pad) % stride; kk < k; kk += stride) {
        int i = (o + pad - kk) / stride;
        if (i >= 0 && i < in) {
            idx[n] = i;
            tap[n] = kk;
            n++;
        }
    }
    return n;
}

/* One output row of the bf16 transposed conv with AVX-512: the scalar loop below converts
 * bf16 lane by lane and measured slower than the fp32 kernel; here each 16-channel pixel is
 * one 256-bit load widened by a shift, and the sum is rounded to nearest even as
 * gs_bf16_from_f32 does (sums of finite values are finite). */
__attribute__((target("avx512f"))) static void
dwdeconv_bf16_row_avx512(const step *s, const uint16_t *in, const float *wk, const uint16_t *sk,
                         uint16_t *out, int y, size_t px)
{
    const gs_rt_conv *c = s->conv;
    int k = c->kh, f = c->stride, pad = c->pad;
    int iy[8], ky[8], ix[8], kx[8];
    int ny = dw_taps(y, f, pad, k, s->h, iy, ky);
    const __m512i round = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    for (int x = 0; x < s->wo; x++) {
        int nx = dw_taps(x, f, pad, k, s->w, ix, kx);
        __m512i raw = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(sk + x * px)));
        __m512 acc = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
        for (int a = 0; a < ny; a++)
            for (int bb = 0; bb < nx; bb++) {
                const uint16_t *v = in + ((size_t)iy[a] * s->w + ix[bb]) * px;
                __m512i vi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)v));
                __m512 vf = _mm512_castsi512_ps(_mm512_slli_epi32(vi, 16));
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(wk + ((size_t)ky[a] * k + kx[bb]) * 16), vf,
                                      acc);
            }
        __m512i u = _mm512_castps_si512(acc);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        u = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, round)), 16);
        _mm256_storeu_si256((__m256i *)(out + (size_t)x * px), _mm512_cvtepi32_epi16(u));
    }
}

/* The bf16 form of run_dwdeconv: bf16 input, skip and output, the bf16-rounded kernel, sums
 * in float32 rounded once per output value. */
static void run_dwdeconv_bf16(const step *s)
{
    const gs_rt_conv *c = s->conv;
    int k = c->kh, f = c->stride, pad = c->pad;
    long rows = (long)s->n * s->cb * s->ho;
    const int use_avx512 = __builtin_cpu_supports("avx512f");
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int y = (int)(r % s->ho);
        long nc = r / s->ho;
        int b = (int)(nc % s->cb);
        size_t px, in_at, out_at;
        dw_addresses(s, nc, y, &px, &in_at, &out_at);
        const uint16_t *in = (const uint16_t *)s->src + in_at;
        const float *wk = c->dwk16 + (size_t)b * k * k * 16;
        const uint16_t *sk = (const uint16_t *)s->skip + out_at;
        uint16_t *out = (uint16_t *)s->dst + out_at;
        if (use_avx512) {
            dwdeconv_bf16_row_avx512(s, in, wk, sk, out, y, px);
            continue;
        }
        int iy[8], ky[8], ix[8], kx[8];
        int ny = dw_taps(y, f, pad, k, s->h, iy, ky);
        for (int x = 0; x < s->wo; x++) {
            int nx = dw_taps(x, f, pad, k, s->w, ix, kx);
            float acc[16];
            for (int l = 0; l < 16; l++)
                acc[l] = gs_bf16_to_f32(sk[(size_t)x * px + l]);
            for (int a = 0; a < ny; a++)
                for (int bb = 0; bb < nx; bb++) {
                    const uint16_t *v = in + ((size_t)iy[a] * s->w + ix[bb]) * px;
                    const float *wv = wk + ((size_t)ky[a] * k + kx[bb]) * 16;
#pragma omp simd
                    for (int l = 0; l < 16; l++)
                        acc[l] += wv[l] * gs_bf16_to_f32(v[l]);
                }
            for (int l = 0; l < 16; l++)
                out[(size_t)x * px + l] = gs_bf16_from_f32(acc[l]);
        }
    }
}

static void run_dwdeconv(const step *s)
{
    const gs_rt_conv *c = s->conv;
    int k = c->kh, f = c->stride, pad = c->pad;
    long rows = (long)s->n * s->cb * s->ho;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int y = (int)(r % s->ho);
        long nc = r / s->ho; /* n * cb + block */
        int b = (int)(nc % s->cb);
        size_t px, in_at, out_at;
        dw_addresses(s, nc, y, &px, &in_at, &out_at);
        const float *in = (const float *)s->src + in_at;
        const float *wk = c->dwk + (size_t)b * k * k * 16;
        const float *sk = (const float *)s->skip + out_at;
        float *out = (float *)s->dst + out_at;
        int iy[8], ky[8], ix[8], kx[8];
        int ny = dw_taps(y, f, pad, k, s->h, iy, ky);
        for (int x = 0; x < s->wo; x++) {
            int nx = dw_taps(x, f, pad, k, s->w, ix, kx);
            float acc[16];
            for (int l = 0; l < 16; l++)
                acc[l] = sk[(size_t)x * px + l];
            for (int a = 0; a < ny; a++)
                for (int bb = 0; bb < nx; bb++) {
                    const float *v = in + ((size_t)iy[a] * s->w + ix[bb]) * px;
                    const float *wv = wk + ((size_t)ky[a] * k + kx[bb]) * 16;
#pragma omp simd
                    for (int l = 0; l < 16; l++)
                        acc[l] += wv[l] * v[l];
                }
            for (int l = 0; l < 16; l++)
                out[(size_t)x * px + l] = acc[l];
        }
    }
}

int gs_rt_plan_act(gs_rt_plan *p, gs_rt_tensor *t, gs_act act)
{
    if (p->dry || act.kind == GS_ACT_NONE)
        return 0;
    if (t->q)
        return gs_error_set("activation: int8 tensors are only for int8 convs");
    forget_quantised(p, t);
    dnnl_eltwise_desc_t d;
    dnnl_primitive_desc_t pd = NULL;
    DNNL_TRY(dnnl_eltwise_forward_desc_init(&d, dnnl_forward_inference, dnnl_eltwise_relu, &t->md,
                                            act.kind == GS_ACT_LEAKY ? act.slope : 0.0f, 0.0f),
             "eltwise desc");
    DNNL_TRY(dnnl_primitive_desc_create(&pd, &d, NULL, p->engine, NULL), "eltwise pd");
    step *s = new_step(p, STEP_PRIM);
    if (!s)
        goto fail_noset;
    DNNL_TRY(dnnl_primitive_create(&s->prim, pd), "eltwise");
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, t->mem};
    s->args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, t->mem};
    dnnl_primitive_desc_destroy(pd);
    return 0;
fail:
fail_noset:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return -1;
}

int gs_rt_plan_dcn(gs_rt_plan *p, const float *weight, const float *bias, int cout,
                   gs_rt_tensor *src, gs_rt_tensor *offset, gs_act act, float int8_amax,
                   int int8_u8, gs_rt_tensor **dst)
{
    if (offset->c != 27 || offset->h != src->h || offset->w != src->w || src->plain ||
        offset->plain || offset->bf16 || src->q || offset->q || src->cl != offset->cl)
        return gs_error_set("deformable conv: offset tensor %dx%dx%d does not fit input %dx%dx%d",
                            offset->c, offset->h, offset->w, src->c, src->h, src->w);
    /* Checked here too so that a dry plan, which builds no ops object, refuses it as well. */
    if (src->cl && (src->c % 16 || cout % 16))
        return gs_error_set("deformable conv %d->%d: channels-last needs multiples of 16 channels",
                            src->c, cout);
    *dst = tensor_new(p, cout, src->h, src->w, 0, src->cl, src->bf16);
    if (!*dst)
        return -1;
    if (p->dry)
        return 0;
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, p->n, src->c, cout, src->h, src->w);
    d.offset_format = src->cl ? GS_DEFORM_OFFSET_RAW_NHWC : GS_DEFORM_OFFSET_RAW_BLOCKED;
    d.nhwc = src->cl;
    d.bf16 = src->bf16;
    if (p->observe && observe(p, src, weight) < 0)
        return -1;
    step *s = new_step(p, STEP_DCN);
    if (!s)
        return -1;
    const int relu = act.kind == GS_ACT_RELU;
    s->dcn = p->int8 && src->bf16 && int8_amax > 0.0f
                 ? gs_deform_conv_new_int8(&d, weight, bias, relu, int8_amax, int8_u8)
                 : gs_deform_conv_new(&d, weight, bias, relu);
    if (!s->dcn)
        return -1;
    s->scratch = gs_deform_conv_scratch_new(s->dcn);
    if (!s->scratch)
        return -1;
    s->bf16 = src->bf16;
    s->src = src->data;
    s->offset = offset->data;
    s->dst = (*dst)->data;
    if (act.kind == GS_ACT_LEAKY)
        return gs_rt_plan_act(p, *dst, act);
    return 0;
}

void gs_rt_plan_set_part(gs_rt_plan *p, int part)
{
    p->part = part;
}

void gs_rt_plan_profile(gs_rt_plan *p, double *seconds, int nparts)
{
    p->profile = seconds;
    p->nparts = nparts;
}

double gs_rt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int gs_rt_plan_run(gs_rt_plan *p)
{
    GS_ASSERT(!p->dry);
    double t0 = p->profile ? gs_rt_now() : 0.0;
    for (size_t i = 0; i < p->nsteps; i++) {
        step *s = &p->steps[i];
        if (p->profile && i > 0) {
            /* Profiling only: wait for each step so its time lands in its own bucket. */
            if (dnnl_stream_wait(p->stream) != dnnl_success)
                return gs_error_set("oneDNN: stream wait failed");
            double t1 = gs_rt_now();
            int b = p->steps[i - 1].part;
            if (b >= 0 && b < p->nparts)
                p->profile[b] += t1 - t0;
            t0 = t1;
        }
        switch (s->kind) {
        case STEP_PRIM:
            if (dnnl_primitive_execute(s->prim, p->stream, s->nargs, s->args) != dnnl_success)
                return gs_error_set("oneDNN: step %zu failed", i);
            break;
        case STEP_PRIM_IMAGES:
            if (s->scr && !p->scratch) {
                p->scratch = aligned_floats(p->scratch_bytes / sizeof(float) + 1);
                if (!p->scratch)
                    return gs_error_set("out of memory for a %zu-byte conv scratchpad",
                                        p->scratch_bytes);
                for (size_t j2 = 0; j2 < p->nsteps; j2++)
                    if (p->steps[j2].scr &&
                        dnnl_memory_set_data_handle(p->steps[j2].scr, p->scratch) != dnnl_success)
                        return gs_error_set("oneDNN: scratchpad handle");
            }
            for (int k = 0; k < s->n; k++)
                if (dnnl_memory_set_data_handle(s->img_src,
                                                (char *)s->src + (size_t)k * s->src_image_bytes) !=
                        dnnl_success ||
                    dnnl_memory_set_data_handle(s->img_dst,
                                                (char *)s->dst + (size_t)k * s->dst_image_bytes) !=
                        dnnl_success ||
                    dnnl_primitive_execute(s->prim, p->stream, s->nargs, s->args) != dnnl_success)
                    return gs_error_set("oneDNN: step %zu (image %d) failed", i, k);
            break;
        case STEP_COPY:
            if (dnnl_stream_wait(p->stream) != dnnl_success)
                return gs_error_set("oneDNN: stream wait failed");
            memcpy(s->dst, s->src, s->nelems * (s->bf16 ? sizeof(uint16_t) : sizeof(float)));
            break;
        case STEP_ADD: {
            if (dnnl_stream_wait(p->stream) != dnnl_success)
                return gs_error_set("oneDNN: stream wait failed");
            long nf = (long)s->nelems;
            if (s->bf16) {
                uint16_t *restrict d = s->dst;
                const uint16_t *restrict a = s->src;
#pragma omp parallel for schedule(static)
                for (long k = 0; k < nf; k++)
                    d[k] = gs_bf16_from_f32(gs_bf16_to_f32(d[k]) + gs_bf16_to_f32(a[k]));
                break;
            }
            float *restrict d = s->dst;
            const float *restrict a = s->src;
#pragma omp parallel for simd schedule(static)
            for (long k = 0; k < nf; k++)
                d[k] += a[k];
            break;
        }
        case STEP_OBSERVE: {
            if (dnnl_stream_wait(p->stream) != dnnl_success)
                return gs_error_set("oneDNN: stream wait failed");
            float m = 0.0f;
            if (s->bf16) {
                const uint16_t *x = s->src;
                for (size_t k = 0; k < s->nelems; k++)
                    m = fmaxf(m, fabsf(gs_bf16_to_f32(x[k])));
            } else {
                const float *x = s->src;
                for (size_t k = 0; k < s->nelems; k++)
                    m = fmaxf(m, fabsf(x[k]));
            }
            p->obs[s->obs].amax = fmaxf(p->obs[s->obs].amax, m);
            break;
        }
        case STEP_DWDECONV:
            if (dnnl_stream_wait(p->stream) != dnnl_success)
                return gs_error_set("oneDNN: stream wait failed");
            if (s->bf16)
                run_dwdeconv_bf16(s);
            else
                run_dwdeconv(s);
            break;
        case STEP_DCN:
            if (dnnl_stream_wait(p->stream) != dnnl_success)
                return gs_error_set("oneDNN: stream wait failed");
            if ((s->bf16
                     ? gs_deform_conv_run_bf16(s->dcn, s->scratch, s->src, s->offset, NULL, s->dst)
                     : gs_deform_conv_run(s->dcn, s->scratch, s->src, s->offset, NULL, s->dst)) !=
                0)
                return gs_error_prefix("step %zu", i);
            break;
        default:
            GS_ASSERT(0);
        }
    }
    if (dnnl_stream_wait(p->stream) != dnnl_success)
        return gs_error_set("oneDNN: stream wait failed");
    if (p->profile && p->nsteps > 0) {
        int b = p->steps[p->nsteps - 1].part;
        if (b >= 0 && b < p->nparts)
            p->profile[b] += gs_rt_now() - t0;
    }
    return 0;
}

/* Where channels b*16 .. b*16+15 of image n of a non-plain tensor start, and the elements from
 * one pixel to the next; *lanes is how many of the 16 exist (channels-last has no padding). */
static void block_at(const gs_rt_tensor *t, int n, int b, size_t *at, size_t *px, int *lanes)
{
    size_t hw = (size_t)t->h * t->w;
    int rest = t->c - b * 16;
    *lanes = rest < 16 ? rest : 16;
    if (t->cl) {
        *at = (size_t)n * hw * t->c + (size_t)b * 16;
        *px = (size_t)t->c;
    } else {
        *at = ((size_t)n * ((t->c + 15) / 16) + b) * hw * 16;
        *px = 16;
    }
}

void gs_rt_gap(const gs_rt_tensor *t, float *out)
{
    gs_rt_masked_mean(t, NULL, out);
}

void gs_rt_masked_mean(const gs_rt_tensor *t, const uint8_t *mask, float *out)
{
    GS_ASSERT(!t->plain && !t->q);
    int nb = (t->c + 15) / 16;
    size_t hw = (size_t)t->h * t->w;
    for (int n = 0; n < t->n; n++) {
        const uint8_t *mk = mask ? mask + (size_t)n * hw : NULL;
        size_t count = hw;
        if (mk) {
            count = 0;
            for (size_t i = 0; i < hw; i++)
                count += mk[i] != 0;
            GS_ASSERT(count > 0);
        }
        for (int b = 0; b < nb; b++) {
            size_t at, px;
            int lanes;
            block_at(t, n, b, &at, &px, &lanes);
            double acc[16] = {0};
            if (t->bf16) {
                const uint16_t *base = (const uint16_t *)t->data + at;
                for (size_t i = 0; i < hw; i++) {
                    if (mk && !mk[i])
                        continue;
                    for (int l = 0; l < lanes; l++)
                        acc[l] += gs_bf16_to_f32(base[i * px + l]);
                }
            } else {
                const float *base = (const float *)t->data + at;
                for (size_t i = 0; i < hw; i++) {
                    if (mk && !mk[i])
                        continue;
                    for (int l = 0; l < lanes; l++)
                        acc[l] += base[i * px + l];
                }
            }
            for (int l = 0; l < lanes; l++)
                out[(size_t)n * t->c + b * 16 + l] = (float)(acc[l] / (double)count);
        }
    }
}

void gs_rt_extract_channel(const gs_rt_tensor *t, int ch, float *out)
{
    GS_ASSERT(ch >= 0 && ch < t->c);
    size_t hw = (size_t)t->h * t->w;
    if (t->plain) {
        for (int n = 0; n < t->n; n++) {
            size_t at = ((size_t)n * t->c + ch) * hw;
            if (t->bf16)
                gs_bf16_to_f32_array((const uint16_t *)t->data + at, out + n * hw, hw);
            else
                memcpy(out + n * hw, (const float *)t->data + at, hw * sizeof(float));
        }
        return;
    }
    GS_ASSERT(!t->q);
    int b = ch / 16, l = ch % 16;
    for (int n = 0; n < t->n; n++) {
        size_t at, px;
        int lanes;
        block_at(t, n, b, &at, &px, &lanes);
        if (t->bf16) {
            const uint16_t *base = (const uint16_t *)t->data + at;
            for (size_t i = 0; i < hw; i++)
                out[n * hw + i] = gs_bf16_to_f32(base[i * px + l]);
        } else {
            const float *base = (const float *)t->data + at;
            for (size_t i = 0; i < hw; i++)
                out[n * hw + i] = base[i * px + l];
        }
    }
}
