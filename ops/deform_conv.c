#include "ops/deform_conv.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "ops/dnnl_reorder.h"
#include "ops/error.h"

/* Bytes of one column tile the fast path aims for: small enough to stay in a core's L2 while
 * the matmul reads it, large enough for the matmul to block well. */
#define GS_DEFORM_TILE_BYTES (384 * 1024)
#define GS_DEFORM_ALIGN 64

/* ------------------------------------------------------------------------------------------ */
/* Shapes                                                                                     */

void gs_deform_conv_desc_3x3(gs_deform_conv_desc *d, int n, int cin, int cout, int h, int w)
{
    memset(d, 0, sizeof *d);
    d->n = n;
    d->cin = cin;
    d->cout = cout;
    d->h = h;
    d->w = w;
    d->kh = d->kw = 3;
    d->stride_h = d->stride_w = 1;
    d->pad_h = d->pad_w = 1;
    d->dil_h = d->dil_w = 1;
    d->offset_format = GS_DEFORM_OFFSET_SPLIT;
}

int gs_deform_conv_out_size(const gs_deform_conv_desc *d, int *ho, int *wo)
{
    if (d->n < 1 || d->cin < 1 || d->cout < 1 || d->h < 1 || d->w < 1)
        return gs_error_set("deform_conv: bad shape n=%d cin=%d cout=%d h=%d w=%d", d->n, d->cin,
                            d->cout, d->h, d->w);
    if (d->kh < 1 || d->kw < 1 || d->stride_h < 1 || d->stride_w < 1 || d->pad_h < 0 ||
        d->pad_w < 0 || d->dil_h < 1 || d->dil_w < 1)
        return gs_error_set("deform_conv: bad kernel %dx%d stride %dx%d pad %dx%d dilation %dx%d",
                            d->kh, d->kw, d->stride_h, d->stride_w, d->pad_h, d->pad_w, d->dil_h,
                            d->dil_w);
    if (d->offset_format < GS_DEFORM_OFFSET_SPLIT || d->offset_format > GS_DEFORM_OFFSET_RAW_NHWC)
        return gs_error_set("deform_conv: unknown offset format %d", (int)d->offset_format);
    long eh = (long)d->h + 2L * d->pad_h - (long)d->dil_h * (d->kh - 1) - 1;
    long ew = (long)d->w + 2L * d->pad_w - (long)d->dil_w * (d->kw - 1) - 1;
    if (eh < 0 || ew < 0)
        return gs_error_set("deform_conv: kernel %dx%d (dilation %dx%d) larger than the padded "
                            "input %dx%d",
                            d->kh, d->kw, d->dil_h, d->dil_w, d->h + 2 * d->pad_h,
                            d->w + 2 * d->pad_w);
    long oh = eh / d->stride_h + 1, ow = ew / d->stride_w + 1;
    /* Plan entries store pixel indices as int32 and offsets multiply by 16. */
    if ((long)d->h * d->w * 16 > INT32_MAX || oh * ow > INT32_MAX / 64)
        return gs_error_set("deform_conv: map %dx%d too large", d->h, d->w);
    *ho = (int)oh;
    *wo = (int)ow;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Reference                                                                                  */

/* Bilinear sample of one channel plane with torchvision's zero rule. */
static float ref_bilinear(const float *plane, int h, int w, float y, float x)
{
    if (y <= -1.0f || y >= (float)h || x <= -1.0f || x >= (float)w)
        return 0.0f;
    float fy = floorf(y), fx = floorf(x);
    int y0 = (int)fy, x0 = (int)fx, y1 = y0 + 1, x1 = x0 + 1;
    float ly = y - fy, lx = x - fx, hy = 1.0f - ly, hx = 1.0f - lx;
    float v00 = (y0 >= 0 && x0 >= 0) ? plane[(size_t)y0 * w + x0] : 0.0f;
    float v01 = (y0 >= 0 && x1 <= w - 1) ? plane[(size_t)y0 * w + x1] : 0.0f;
    float v10 = (y1 <= h - 1 && x0 >= 0) ? plane[(size_t)y1 * w + x0] : 0.0f;
    float v11 = (y1 <= h - 1 && x1 <= w - 1) ? plane[(size_t)y1 * w + x1] : 0.0f;
    return hy * hx * v00 + hy * lx * v01 + ly * hx * v10 + ly * lx * v11;
}

int gs_deform_conv2d_ref(const gs_deform_conv_desc *d, const float *input, const float *offset,
                         const float *mask, const float *weight, const float *bias, float *out)
{
    int ho, wo;
    gs_deform_conv_desc plain = *d;
    plain.offset_format = GS_DEFORM_OFFSET_SPLIT;
    if (gs_deform_conv_out_size(&plain, &ho, &wo) < 0)
        return -1;
    const int taps = d->kh * d->kw;
    const size_t hw = (size_t)d->h * d->w, ohw = (size_t)ho * wo;
    for (int n = 0; n < d->n; n++) {
        const float *in_n = input + (size_t)n * d->cin * hw;
        const float *off_n = offset + (size_t)n * 2 * taps * ohw;
        const float *mask_n = mask ? mask + (size_t)n * taps * ohw : NULL;
        for (int co = 0; co < d->cout; co++) {
            float *out_c = out + ((size_t)n * d->cout + co) * ohw;
            for (int oy = 0; oy < ho; oy++) {
                for (int ox = 0; ox < wo; ox++) {
                    size_t p = (size_t)oy * wo + ox;
                    float acc = bias ? bias[co] : 0.0f;
                    for (int ci = 0; ci < d->cin; ci++) {
                        for (int i = 0; i < d->kh; i++) {
                            for (int j = 0; j < d->kw; j++) {
                                int k = i * d->kw + j;
                                float y = (float)(oy * d->stride_h - d->pad_h + i * d->dil_h) +
                                          off_n[(size_t)(2 * k) * ohw + p];
                                float x = (float)(ox * d->stride_w - d->pad_w + j * d->dil_w) +
                                          off_n[(size_t)(2 * k + 1) * ohw + p];
                                float m = mask_n ? mask_n[(size_t)k * ohw + p] : 1.0f;
                                float v = ref_bilinear(in_n + (size_t)ci * hw, d->h, d->w, y, x);
                                acc +=
                                    weight[(((size_t)co * d->cin + ci) * d->kh + i) * d->kw + j] *
                                    (m * v);
                            }
                        }
                    }
                    out_c[p] = acc;
                }
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Blocked layout helpers                                                                     */

size_t gs_deform_conv_blocked_size(int n, int c, int h, int w)
{
    return (size_t)n * (size_t)((c + 15) / 16) * 16 * (size_t)h * (size_t)w;
}

void gs_deform_conv_pack_nchw16c(const float *src, int n, int c, int h, int w, float *dst)
{
    const size_t hw = (size_t)h * w;
    const int cb = (c + 15) / 16;
    for (int b = 0; b < n; b++)
        for (int blk = 0; blk < cb; blk++) {
            float *d = dst + ((size_t)b * cb + blk) * hw * 16;
            for (size_t p = 0; p < hw; p++)
                for (int l = 0; l < 16; l++) {
                    int ch = blk * 16 + l;
                    d[p * 16 + l] = ch < c ? src[((size_t)b * c + ch) * hw + p] : 0.0f;
                }
        }
}

void gs_deform_conv_unpack_nchw16c(const float *src, int n, int c, int h, int w, float *dst)
{
    const size_t hw = (size_t)h * w;
    const int cb = (c + 15) / 16;
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++) {
            const float *s = src + ((size_t)b * cb + ch / 16) * hw * 16 + ch % 16;
            float *d = dst + ((size_t)b * c + ch) * hw;
            for (size_t p = 0; p < hw; p++)
                d[p] = s[p * 16];
        }
}

/* ------------------------------------------------------------------------------------------ */
/* Fast path                                                                                  */

/* The sampling plan of a tile is stored per tap k as eight arrays of tile_pad entries, one
 * entry per output pixel of the tile: four corner pixel indices into an H*W plane (always
 * valid addresses) and their bilinear weights times the mask (0 for corners outside the map):
 *   idx[(k * 4 + corner) * tile_pad + p], wt[(k * 4 + corner) * tile_pad + p].
 * Struct-of-arrays so that 16 pixels are planned with one vector per quantity. */

enum { MM_FULL = 0, MM_TAIL = 1 };

static int kernels_cap = GS_DEFORM_KERNELS_AVX512;

/* The fastest kernels this CPU has at or below `best`. */
static gs_deform_kernels kernels_for(gs_deform_kernels best)
{
    if (best <= GS_DEFORM_KERNELS_AVX512 && __builtin_cpu_supports("avx512f"))
        return GS_DEFORM_KERNELS_AVX512;
    if (best <= GS_DEFORM_KERNELS_AVX2 && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return GS_DEFORM_KERNELS_AVX2;
    return GS_DEFORM_KERNELS_PORTABLE;
}

gs_deform_kernels gs_deform_conv_cap_kernels(gs_deform_kernels best)
{
    GS_ASSERT(best >= GS_DEFORM_KERNELS_AVX512 && best <= GS_DEFORM_KERNELS_PORTABLE);
    __atomic_store_n(&kernels_cap, (int)best, __ATOMIC_RELAXED);
    return kernels_for(best);
}

struct gs_deform_conv {
    gs_deform_conv_desc d;
    int ho, wo, taps;
    int cb_in, cb_out;
    int kdim; /* cb_in * taps * 16: columns of a column-tile row */
    int ndim; /* cb_out * 16 */
    int tile_p, tiles, tail_p;
    int tile_pad; /* tile_p rounded up to 16 */
    int relu;
    int q;          /* int8 columns: 1 = u8, -1 = s8, 0 = none (gs_deform_conv_new_int8) */
    float in_scale; /* int8: column value = round(sample * in_scale), saturated */
    float *oscale;  /* int8: per output column, 1 / (in_scale * weight scale) */
    dnnl_engine_t engine;
    dnnl_primitive_t mm[2];
    dnnl_memory_desc_t src_md[2], dst_md[2], wei_md[2], bias_md;
    size_t scratchpad_bytes;
    void *wei[2]; /* in the layout (and type) each matmul asked for; wei[1] may alias wei[0] */
    float *bias;  /* [ndim], zero past cout */
};

typedef struct {
    int32_t *idx;
    float *wt;
    float *base_y, *base_x; /* per tile pixel: oy*stride - pad, ox*stride - pad */
    float *dy, *dx, *mask;  /* one tap's offsets and mask, staged contiguously */
    float *col;             /* float32, bf16 (uint16_t) or int8 columns, in the same bytes */
    float *gemm;            /* matmul output [tile_p, ndim]: float32, or bf16 for a bf16 conv */
    void *scratchpad;
    dnnl_stream_t stream;
    dnnl_memory_t src[2], dst[2], wei[2], scr[2], bias;
} deform_thread;

struct gs_deform_conv_scratch {
    const gs_deform_conv *conv;
    int nthr;
    deform_thread *t;
};

/* The column of input block cb, tap k, lane 0 in a row of the column block. A channels-last
 * conv orders columns (tap, channel), so one tap of an input pixel is one contiguous run
 * (the bf16 gather reads and writes 32 channels at a time); nChw16c orders them (block, tap,
 * lane). The weights are laid out to match. */
static size_t col_at(const gs_deform_conv *c, int cb, int k)
{
    return c->d.nhwc ? (size_t)k * c->d.cin + (size_t)cb * 16
                     : ((size_t)cb * c->taps + (size_t)k) * 16;
}

static void *aligned_floats(size_t count)
{
    size_t bytes = count * sizeof(float);
    bytes = (bytes + GS_DEFORM_ALIGN - 1) / GS_DEFORM_ALIGN * GS_DEFORM_ALIGN;
    if (bytes == 0)
        bytes = GS_DEFORM_ALIGN;
    return aligned_alloc(GS_DEFORM_ALIGN, bytes);
}

#define DNNL_CHECK(call, what)                                                                     \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            gs_error_set("deform_conv: %s: %s", what, dnnl_status2str(st_));                       \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Creates the single-threaded matmul [rows, kdim] x [kdim, ndim] + bias (+ ReLU). The weight
 * layout is "any" unless *wei_md already holds a concrete layout, which is then required.
 * Creation runs with one OpenMP thread so oneDNN blocks the work for the one thread that will
 * execute it inside our parallel region. */
static int create_matmul(gs_deform_conv *c, int which, int rows, int fixed_wei)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_matmul_desc_t md;
    int outer_threads = omp_get_max_threads();
    int ok = -1;
    dnnl_dims_t src_dims = {rows, c->kdim}, wei_dims = {c->kdim, c->ndim},
                dst_dims = {rows, c->ndim}, bias_dims = {1, c->ndim};

    const dnnl_data_type_t in_dt = c->d.bf16 ? dnnl_bf16 : dnnl_f32;
    const dnnl_data_type_t col_dt = c->q > 0 ? dnnl_u8 : c->q < 0 ? dnnl_s8 : in_dt;
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&c->src_md[which], 2, src_dims, col_dt, dnnl_ab),
               "src desc");
    /* A bf16 conv's matmul rounds its fp32 accumulator (bias and ReLU applied) to bf16 itself,
     * so the copy into the blocked output is a plain 32-byte move per pixel and block. */
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&c->dst_md[which], 2, dst_dims, in_dt, dnnl_ab),
               "dst desc");
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&c->bias_md, 2, bias_dims, dnnl_f32, dnnl_ab),
               "bias desc");
    if (!fixed_wei)
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(&c->wei_md[which], 2, wei_dims,
                                                c->q ? dnnl_s8 : in_dt, dnnl_format_tag_any),
                   "weights desc");
    DNNL_CHECK(dnnl_matmul_desc_init(&md, &c->src_md[which], &c->wei_md[which], &c->bias_md,
                                     &c->dst_md[which]),
               "matmul desc");
    DNNL_CHECK(dnnl_primitive_attr_create(&attr), "attr");
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
               "scratchpad mode");
    /* int8: dst = oscale[col] * (u8/s8 columns x s8 weights + bias), the bias pre-scaled. */
    if (c->q)
        DNNL_CHECK(dnnl_primitive_attr_set_output_scales(attr, c->ndim, 1 << 1, c->oscale),
                   "output scales");
    if (c->relu) {
        DNNL_CHECK(dnnl_post_ops_create(&ops), "post-ops");
        DNNL_CHECK(dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f),
                   "relu post-op");
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, ops), "set post-ops");
    }
    /* Both the descriptor and the primitive must see the same thread count: the primitive's
     * kernels are generated for the descriptor's blocking (and both are cached by it). */
    omp_set_num_threads(1);
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, c->engine, NULL);
    if (st == dnnl_success)
        st = dnnl_primitive_create(&c->mm[which], pd);
    omp_set_num_threads(outer_threads);
    DNNL_CHECK(st, "matmul primitive");
    c->wei_md[which] = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    size_t spad =
        dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    if (spad > c->scratchpad_bytes)
        c->scratchpad_bytes = spad;
    ok = 0;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (ops)
        dnnl_post_ops_destroy(ops);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    return ok;
}

/* Reorders the plain [kdim, ndim] weight (float32, or int8 for an int8 conv) into the layout
 * matmul `which` asked for. */
static int reorder_weights(gs_deform_conv *c, int which, void *plain)
{
    dnnl_memory_desc_t plain_md;
    dnnl_dims_t dims = {c->kdim, c->ndim};
    int ok = -1;

    c->wei[which] =
        aligned_floats(dnnl_memory_desc_get_size(&c->wei_md[which]) / sizeof(float) + 1);
    if (!c->wei[which]) {
        gs_error_set("deform_conv: out of memory for weights");
        goto fail;
    }
    DNNL_CHECK(dnnl_memory_desc_init_by_tag(&plain_md, 2, dims, c->q ? dnnl_s8 : dnnl_f32, dnnl_ab),
               "plain weights desc");
    if (gs_dnnl_reorder(c->engine, &plain_md, plain, &c->wei_md[which], c->wei[which]) != 0) {
        gs_error_prefix("deform_conv: weights");
        goto fail;
    }
    ok = 0;
fail:
    return ok;
}

/* For an int8 conv: quantises the plain float [kdim, ndim] weight into w8 with a symmetric
 * scale 127 / max|w| per output column, brings c->bias into the accumulator's units and sets
 * c->oscale. Returns 0, or -1 with the error set. */
static int quantise_weights(gs_deform_conv *c, const float *plain, int8_t *w8)
{
    for (int co = 0; co < c->ndim; co++) {
        float m = 0.0f;
        for (int r = 0; r < c->kdim; r++)
            m = fmaxf(m, fabsf(plain[(size_t)r * c->ndim + co]));
        const float ws = m > 0.0f ? 127.0f / m : 1.0f;
        for (int r = 0; r < c->kdim; r++) {
            float q = nearbyintf(plain[(size_t)r * c->ndim + co] * ws);
            w8[(size_t)r * c->ndim + co] = (int8_t)fminf(127.0f, fmaxf(-127.0f, q));
        }
        c->bias[co] *= c->in_scale * ws;
        c->oscale[co] = 1.0f / (c->in_scale * ws);
        /* A range so small that the scales leave float would make the matmul compute 0 * inf. */
        if (!(isfinite(c->oscale[co]) && c->oscale[co] > 0.0f && isfinite(c->bias[co])))
            return gs_error_set("deform_conv: input range %g gives no usable int8 scale for "
                                "output channel %d",
                                (double)((c->q > 0 ? 255.0f : 127.0f) / c->in_scale), co);
    }
    return 0;
}

static gs_deform_conv *build(const gs_deform_conv_desc *d, const float *weight, const float *bias,
                             int fuse_relu, float amax, int q)
{
    float *plain = NULL;
    int8_t *w8 = NULL;
    gs_deform_conv *c = calloc(1, sizeof *c);
    if (!c) {
        gs_error_set("deform_conv: out of memory");
        return NULL;
    }
    c->d = *d;
    c->q = q;
    if (gs_deform_conv_out_size(d, &c->ho, &c->wo) < 0)
        goto fail;
    if (q && !d->bf16) {
        gs_error_set("deform_conv: int8 columns go with bf16 input and output only");
        goto fail;
    }
    if (q && !(amax > 0.0f && isfinite(amax))) {
        gs_error_set("deform_conv: int8 input range %g is not a positive number", (double)amax);
        goto fail;
    }
    c->in_scale = q ? (q > 0 ? 255.0f : 127.0f) / amax : 0.0f;
    if (d->nhwc && (d->cin % 16 || d->cout % 16)) {
        gs_error_set("deform_conv: channels-last needs channel counts that are multiples of 16");
        goto fail;
    }
    if ((d->offset_format == GS_DEFORM_OFFSET_RAW_NHWC) != (d->nhwc != 0)) {
        gs_error_set("deform_conv: channels-last offsets go with a channels-last conv only");
        goto fail;
    }
    c->taps = d->kh * d->kw;
    c->cb_in = (d->cin + 15) / 16;
    c->cb_out = (d->cout + 15) / 16;
    c->kdim = c->cb_in * c->taps * 16;
    c->ndim = c->cb_out * 16;
    c->relu = fuse_relu != 0;

    const int ohw = c->ho * c->wo;
    int tile = GS_DEFORM_TILE_BYTES / (c->kdim * (q ? 1 : d->bf16 ? 2 : (int)sizeof(float)));
    tile = tile / 16 * 16;
    if (tile < 32)
        tile = 32;
    if (tile > ohw)
        tile = ohw;
    /* An image's tiles are shared out to the threads in contiguous runs, so with tiles of the
     * largest size that fits, a batch-1 run left threads idle: an int8 256->256@32 had 7
     * tiles (6 x 160 pixels + 64), 640 pixels for one thread and 384 for the other. As many
     * tiles as fit, rounded up to a multiple of the threads this process runs, of equal size
     * keep them equally busy (the matmul takes any row count; the plan pads to 16). A batch
     * that splits into whole images per thread is balanced already and keeps the largest
     * tiles (at batch 4 the smaller ones did not measure faster). */
    const int nthr = omp_get_max_threads();
    if (nthr > 1 && d->n % nthr != 0 && ohw >= 32 * nthr) {
        int ntiles = (ohw + tile - 1) / tile;
        ntiles = (ntiles + nthr - 1) / nthr * nthr;
        const int even = (ohw + ntiles - 1) / ntiles;
        if (even >= 32 && even < tile)
            tile = even;
    }
    c->tile_p = tile;
    c->tiles = (ohw + tile - 1) / tile;
    c->tail_p = ohw - (c->tiles - 1) * tile;
    c->tile_pad = (tile + 15) / 16 * 16;

    DNNL_CHECK(dnnl_engine_create(&c->engine, dnnl_cpu, 0), "engine");

    /* Column index = (input block, tap, lane), channels-last (tap, channel): one gathered
     * vector fills consecutive columns (col_at); padded input channels and output columns
     * get weight 0. */
    plain = aligned_floats((size_t)c->kdim * c->ndim);
    c->bias = aligned_floats((size_t)c->ndim);
    if (q) {
        w8 = malloc((size_t)c->kdim * c->ndim);
        c->oscale = aligned_floats((size_t)c->ndim);
    }
    if (!plain || !c->bias || (q && (!w8 || !c->oscale))) {
        gs_error_set("deform_conv: out of memory for weights");
        goto fail;
    }
    memset(plain, 0, (size_t)c->kdim * c->ndim * sizeof(float));
    for (int co = 0; co < d->cout; co++)
        for (int ci = 0; ci < d->cin; ci++)
            for (int k = 0; k < c->taps; k++) {
                size_t row = col_at(c, ci / 16, k) + (size_t)(ci % 16);
                plain[row * c->ndim + co] = weight[((size_t)co * d->cin + ci) * c->taps + k];
            }
    for (int co = 0; co < c->ndim; co++)
        c->bias[co] = (bias && co < d->cout) ? bias[co] : 0.0f;
    if (q && quantise_weights(c, plain, w8) < 0)
        goto fail;
    void *wplain = q ? (void *)w8 : (void *)plain;

    if (create_matmul(c, MM_FULL, c->tile_p, 0) < 0 || reorder_weights(c, MM_FULL, wplain) < 0)
        goto fail;
    if (c->tail_p != c->tile_p) {
        /* Prefer the full tile's weight layout so one reordered copy serves both. */
        c->wei_md[MM_TAIL] = c->wei_md[MM_FULL];
        if (create_matmul(c, MM_TAIL, c->tail_p, 1) == 0) {
            c->wei[MM_TAIL] = c->wei[MM_FULL];
        } else {
            gs_error_clear();
            if (create_matmul(c, MM_TAIL, c->tail_p, 0) < 0 ||
                reorder_weights(c, MM_TAIL, wplain) < 0)
                goto fail;
        }
    }
    free(w8);
    free(plain);
    return c;
fail:
    gs_error_prefix("deform_conv %d->%d @%dx%d", d->cin, d->cout, d->h, d->w);
    free(w8);
    free(plain);
    gs_deform_conv_destroy(&c);
    return NULL;
}

gs_deform_conv *gs_deform_conv_new(const gs_deform_conv_desc *d, const float *weight,
                                   const float *bias, int fuse_relu)
{
    return build(d, weight, bias, fuse_relu, 0.0f, 0);
}

gs_deform_conv *gs_deform_conv_new_int8(const gs_deform_conv_desc *d, const float *weight,
                                        const float *bias, int fuse_relu, float amax, int u8)
{
    return build(d, weight, bias, fuse_relu, amax, u8 ? 1 : -1);
}

int gs_deform_conv_int8(const gs_deform_conv *c)
{
    return c->q;
}

void gs_deform_conv_destroy(gs_deform_conv **pc)
{
    if (!pc || !*pc)
        return;
    gs_deform_conv *c = *pc;
    for (int i = 0; i < 2; i++)
        if (c->mm[i])
            dnnl_primitive_destroy(c->mm[i]);
    if (c->wei[MM_TAIL] != c->wei[MM_FULL])
        free(c->wei[MM_TAIL]);
    free(c->wei[MM_FULL]);
    free(c->bias);
    free(c->oscale);
    if (c->engine)
        dnnl_engine_destroy(c->engine);
    free(c);
    *pc = NULL;
}

const gs_deform_conv_desc *gs_deform_conv_get_desc(const gs_deform_conv *c)
{
    return &c->d;
}

static void thread_free(deform_thread *t)
{
    for (int i = 0; i < 2; i++) {
        if (t->src[i])
            dnnl_memory_destroy(t->src[i]);
        if (t->dst[i])
            dnnl_memory_destroy(t->dst[i]);
        if (t->wei[i])
            dnnl_memory_destroy(t->wei[i]);
        if (t->scr[i])
            dnnl_memory_destroy(t->scr[i]);
    }
    if (t->bias)
        dnnl_memory_destroy(t->bias);
    if (t->stream)
        dnnl_stream_destroy(t->stream);
    free(t->idx);
    free(t->wt);
    free(t->base_y);
    free(t->base_x);
    free(t->dy);
    free(t->dx);
    free(t->mask);
    free(t->col);
    free(t->gemm);
    free(t->scratchpad);
    memset(t, 0, sizeof *t);
}

static int thread_init(const gs_deform_conv *c, deform_thread *t)
{
    const size_t plan_len = (size_t)c->taps * 4 * c->tile_pad;
    t->idx = aligned_floats(plan_len); /* int32 and float have the same size */
    t->wt = aligned_floats(plan_len);
    t->base_y = aligned_floats((size_t)c->tile_pad);
    t->base_x = aligned_floats((size_t)c->tile_pad);
    t->dy = aligned_floats((size_t)c->tile_pad);
    t->dx = aligned_floats((size_t)c->tile_pad);
    t->mask = aligned_floats((size_t)c->tile_pad);
    if (!t->idx || !t->wt || !t->base_y || !t->base_x || !t->dy || !t->dx || !t->mask)
        return gs_error_set("deform_conv: out of memory for scratch");
    /* A bf16 conv's columns and matmul output take half the bytes; an int8 conv's columns a
     * quarter (its output is bf16). */
    const size_t col_elems = (size_t)c->tile_p * c->kdim, gemm_elems = (size_t)c->tile_p * c->ndim;
    t->col = aligned_floats(c->q        ? (col_elems + 3) / 4
                            : c->d.bf16 ? (col_elems + 1) / 2
                                        : col_elems);
    /* A channels-last conv's matmul writes the output rows in place. */
    if (!c->d.nhwc)
        t->gemm = aligned_floats(c->d.bf16 ? (gemm_elems + 1) / 2 : gemm_elems);
    t->scratchpad = aligned_floats(c->scratchpad_bytes / sizeof(float) + 1);
    if (!t->col || (!t->gemm && !c->d.nhwc) || !t->scratchpad)
        return gs_error_set("deform_conv: out of memory for scratch");
    DNNL_CHECK(dnnl_stream_create(&t->stream, c->engine, dnnl_stream_default_flags), "stream");
    DNNL_CHECK(dnnl_memory_create(&t->bias, &c->bias_md, c->engine, c->bias), "bias memory");
    for (int i = 0; i < 2; i++) {
        if (!c->mm[i])
            continue;
        const_dnnl_primitive_desc_t pd;
        DNNL_CHECK(dnnl_primitive_get_primitive_desc(c->mm[i], &pd), "query matmul");
        const dnnl_memory_desc_t *spad_md =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        DNNL_CHECK(dnnl_memory_create(&t->src[i], &c->src_md[i], c->engine, t->col), "src memory");
        DNNL_CHECK(dnnl_memory_create(&t->dst[i], &c->dst_md[i], c->engine, t->gemm), "dst memory");
        DNNL_CHECK(dnnl_memory_create(&t->wei[i], &c->wei_md[i], c->engine, c->wei[i]),
                   "weights memory");
        DNNL_CHECK(dnnl_memory_create(&t->scr[i], spad_md, c->engine, t->scratchpad),
                   "scratchpad memory");
    }
    return 0;
fail:
    return -1;
}

gs_deform_conv_scratch *gs_deform_conv_scratch_new(const gs_deform_conv *c)
{
    gs_deform_conv_scratch *s = calloc(1, sizeof *s);
    if (!s) {
        gs_error_set("deform_conv: out of memory");
        return NULL;
    }
    s->conv = c;
    s->nthr = omp_get_max_threads();
    s->t = calloc((size_t)s->nthr, sizeof *s->t);
    if (!s->t) {
        gs_error_set("deform_conv: out of memory");
        goto fail;
    }
    for (int i = 0; i < s->nthr; i++)
        if (thread_init(c, &s->t[i]) < 0)
            goto fail;
    return s;
fail:
    gs_deform_conv_scratch_destroy(&s);
    return NULL;
}

void gs_deform_conv_scratch_destroy(gs_deform_conv_scratch **ps)
{
    if (!ps || !*ps)
        return;
    gs_deform_conv_scratch *s = *ps;
    if (s->t)
        for (int i = 0; i < s->nthr; i++)
            thread_free(&s->t[i]);
    free(s->t);
    free(s);
    *ps = NULL;
}

/* Where offsets and mask of one image live: dy_k at oy_ch[2k] + pix*pix_stride, and so on. */
typedef struct {
    const float *base;
    size_t pix_stride;
    int sigmoid;
    const float *mask_base; /* NULL: mask is 1 */
} offset_view;

static size_t offset_channel(const gs_deform_conv *c, int ch)
{
    size_t ohw = (size_t)c->ho * c->wo;
    if (c->d.offset_format == GS_DEFORM_OFFSET_RAW_BLOCKED)
        return (size_t)(ch / 16) * ohw * 16 + (size_t)(ch % 16);
    if (c->d.offset_format == GS_DEFORM_OFFSET_RAW_NHWC)
        return (size_t)ch;
    return (size_t)ch * ohw;
}

/* Plans one tap for np pixels from staged offsets/mask (mask NULL = 1). by/bx already hold
 * oy*stride - pad + i*dil (and x likewise) as floats: small integers, so exact, and y below
 * equals the reference's (float)(oy*sh - ph + i*dh) + dy bit for bit. */
static void plan_tap_generic(int h, int w, int np, const float *by, const float *bx, float ioff,
                             float joff, const float *dy, const float *dx, const float *m,
                             int32_t *idx, float *wt, int pad)
{
    for (int p = 0; p < np; p++) {
        float y = (by[p] + ioff) + dy[p];
        float x = (bx[p] + joff) + dx[p];
        float mk = m ? m[p] : 1.0f;
        /* The negated form also sends NaN offsets to the all-zero case. */
        if (!(y > -1.0f && y < (float)h && x > -1.0f && x < (float)w)) {
            for (int q = 0; q < 4; q++) {
                idx[q * pad + p] = 0;
                wt[q * pad + p] = 0.0f;
            }
            continue;
        }
        float fy = floorf(y), fx = floorf(x);
        int y0 = (int)fy, x0 = (int)fx, y1 = y0 + 1, x1 = x0 + 1;
        float ly = y - fy, lx = x - fx, hy = 1.0f - ly, hx = 1.0f - lx;
        int vy0 = y0 >= 0, vy1 = y1 <= h - 1, vx0 = x0 >= 0, vx1 = x1 <= w - 1;
        int cy0 = vy0 ? y0 : 0, cy1 = vy1 ? y1 : h - 1;
        int cx0 = vx0 ? x0 : 0, cx1 = vx1 ? x1 : w - 1;
        idx[0 * pad + p] = cy0 * w + cx0;
        idx[1 * pad + p] = cy0 * w + cx1;
        idx[2 * pad + p] = cy1 * w + cx0;
        idx[3 * pad + p] = cy1 * w + cx1;
        wt[0 * pad + p] = (vy0 && vx0) ? hy * hx * mk : 0.0f;
        wt[1 * pad + p] = (vy0 && vx1) ? hy * lx * mk : 0.0f;
        wt[2 * pad + p] = (vy1 && vx0) ? ly * hx * mk : 0.0f;
        wt[3 * pad + p] = (vy1 && vx1) ? ly * lx * mk : 0.0f;
    }
}

/* plan_tap_generic, 16 pixels at a time, with the same arithmetic (so the same bits). */
__attribute__((target("avx512f"))) static void
plan_tap_avx512(int h, int w, int np, const float *by, const float *bx, float ioff, float joff,
                const float *dy, const float *dx, const float *m, int32_t *idx, float *wt, int pad)
{
    const __m512 vio = _mm512_set1_ps(ioff), vjo = _mm512_set1_ps(joff);
    const __m512 minus1 = _mm512_set1_ps(-1.0f), one = _mm512_set1_ps(1.0f);
    const __m512 fh = _mm512_set1_ps((float)h), fw = _mm512_set1_ps((float)w);
    const __m512i zero_i = _mm512_setzero_si512(), one_i = _mm512_set1_epi32(1);
    const __m512i hm1 = _mm512_set1_epi32(h - 1), wm1 = _mm512_set1_epi32(w - 1);
    const __m512i wv = _mm512_set1_epi32(w);
    for (int p = 0; p < np; p += 16) {
        const __mmask16 live = np - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (np - p)) - 1);
        __m512 y = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(live, by + p), vio),
                                 _mm512_maskz_loadu_ps(live, dy + p));
        __m512 x = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(live, bx + p), vjo),
                                 _mm512_maskz_loadu_ps(live, dx + p));
        __m512 mk = m ? _mm512_maskz_loadu_ps(live, m + p) : one;
        /* Ordered compares are false for NaN, as in the scalar version. */
        __mmask16 in =
            _mm512_cmp_ps_mask(y, minus1, _CMP_GT_OQ) & _mm512_cmp_ps_mask(y, fh, _CMP_LT_OQ) &
            _mm512_cmp_ps_mask(x, minus1, _CMP_GT_OQ) & _mm512_cmp_ps_mask(x, fw, _CMP_LT_OQ);
        /* Outside lanes may hold huge values: work on 0 there, their weights are 0 anyway. */
        y = _mm512_maskz_mov_ps(in, y);
        x = _mm512_maskz_mov_ps(in, x);
        __m512 fy = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        __m512 fx = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        __m512i y0 = _mm512_cvttps_epi32(fy), x0 = _mm512_cvttps_epi32(fx);
        __m512i y1 = _mm512_add_epi32(y0, one_i), x1 = _mm512_add_epi32(x0, one_i);
        __m512 ly = _mm512_sub_ps(y, fy), lx = _mm512_sub_ps(x, fx);
        __m512 hy = _mm512_sub_ps(one, ly), hx = _mm512_sub_ps(one, lx);
        __mmask16 vy0 = in & _mm512_cmpge_epi32_mask(y0, zero_i);
        __mmask16 vy1 = in & _mm512_cmple_epi32_mask(y1, hm1);
        __mmask16 vx0 = in & _mm512_cmpge_epi32_mask(x0, zero_i);
        __mmask16 vx1 = in & _mm512_cmple_epi32_mask(x1, wm1);
        __m512i cy0 = _mm512_maskz_mov_epi32(vy0, y0);
        __m512i cy1 = _mm512_mask_mov_epi32(hm1, vy1, y1);
        __m512i cx0 = _mm512_maskz_mov_epi32(vx0, x0);
        __m512i cx1 = _mm512_mask_mov_epi32(wm1, vx1, x1);
        __m512i r0 = _mm512_mullo_epi32(cy0, wv), r1 = _mm512_mullo_epi32(cy1, wv);
        _mm512_mask_storeu_epi32(idx + 0 * pad + p, live, _mm512_add_epi32(r0, cx0));
        _mm512_mask_storeu_epi32(idx + 1 * pad + p, live, _mm512_add_epi32(r0, cx1));
        _mm512_mask_storeu_epi32(idx + 2 * pad + p, live, _mm512_add_epi32(r1, cx0));
        _mm512_mask_storeu_epi32(idx + 3 * pad + p, live, _mm512_add_epi32(r1, cx1));
        _mm512_mask_storeu_ps(wt + 0 * pad + p, live,
                              _mm512_maskz_mul_ps(vy0 & vx0, _mm512_mul_ps(hy, hx), mk));
        _mm512_mask_storeu_ps(wt + 1 * pad + p, live,
                              _mm512_maskz_mul_ps(vy0 & vx1, _mm512_mul_ps(hy, lx), mk));
        _mm512_mask_storeu_ps(wt + 2 * pad + p, live,
                              _mm512_maskz_mul_ps(vy1 & vx0, _mm512_mul_ps(ly, hx), mk));
        _mm512_mask_storeu_ps(wt + 3 * pad + p, live,
                              _mm512_maskz_mul_ps(vy1 & vx1, _mm512_mul_ps(ly, lx), mk));
    }
}

/* plan_tap_generic, 8 pixels at a time, with the same arithmetic (so the same weights; a sample
 * outside the map gets other clamped addresses, at weight 0); the last np % 8 pixels go
 * through plan_tap_generic. */
__attribute__((target("avx2,fma"))) static void
plan_tap_avx2(int h, int w, int np, const float *by, const float *bx, float ioff, float joff,
              const float *dy, const float *dx, const float *m, int32_t *idx, float *wt, int pad)
{
    const __m256 vio = _mm256_set1_ps(ioff), vjo = _mm256_set1_ps(joff);
    const __m256 minus1 = _mm256_set1_ps(-1.0f), one = _mm256_set1_ps(1.0f);
    const __m256 fh = _mm256_set1_ps((float)h), fw = _mm256_set1_ps((float)w);
    const __m256i minus1_i = _mm256_set1_epi32(-1), one_i = _mm256_set1_epi32(1);
    const __m256i hi = _mm256_set1_epi32(h), wi = _mm256_set1_epi32(w);
    const __m256i hm1 = _mm256_set1_epi32(h - 1), wm1 = _mm256_set1_epi32(w - 1);
    const int nv = np - np % 8;
    for (int p = 0; p < nv; p += 8) {
        __m256 y =
            _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(by + p), vio), _mm256_loadu_ps(dy + p));
        __m256 x =
            _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(bx + p), vjo), _mm256_loadu_ps(dx + p));
        __m256 mk = m ? _mm256_loadu_ps(m + p) : one;
        /* Ordered compares: NaN offsets land outside, as in the generic kernel. */
        __m256 in = _mm256_and_ps(
            _mm256_and_ps(_mm256_cmp_ps(y, minus1, _CMP_GT_OQ), _mm256_cmp_ps(y, fh, _CMP_LT_OQ)),
            _mm256_and_ps(_mm256_cmp_ps(x, minus1, _CMP_GT_OQ), _mm256_cmp_ps(x, fw, _CMP_LT_OQ)));
        y = _mm256_and_ps(in, y);
        x = _mm256_and_ps(in, x);
        __m256 fy = _mm256_floor_ps(y), fx = _mm256_floor_ps(x);
        __m256i y0 = _mm256_cvttps_epi32(fy), x0 = _mm256_cvttps_epi32(fx);
        __m256i y1 = _mm256_add_epi32(y0, one_i), x1 = _mm256_add_epi32(x0, one_i);
        __m256 ly = _mm256_sub_ps(y, fy), lx = _mm256_sub_ps(x, fx);
        __m256 hy = _mm256_sub_ps(one, ly), hx = _mm256_sub_ps(one, lx);
        __m256i ini = _mm256_castps_si256(in);
        __m256i vy0 = _mm256_and_si256(ini, _mm256_cmpgt_epi32(y0, minus1_i));
        __m256i vy1 = _mm256_and_si256(ini, _mm256_cmpgt_epi32(hi, y1));
        __m256i vx0 = _mm256_and_si256(ini, _mm256_cmpgt_epi32(x0, minus1_i));
        __m256i vx1 = _mm256_and_si256(ini, _mm256_cmpgt_epi32(wi, x1));
        __m256i cy0 = _mm256_and_si256(vy0, y0), cx0 = _mm256_and_si256(vx0, x0);
        __m256i cy1 = _mm256_blendv_epi8(hm1, y1, vy1), cx1 = _mm256_blendv_epi8(wm1, x1, vx1);
        __m256i r0 = _mm256_mullo_epi32(cy0, wi), r1 = _mm256_mullo_epi32(cy1, wi);
        _mm256_storeu_si256((__m256i *)(idx + 0 * pad + p), _mm256_add_epi32(r0, cx0));
        _mm256_storeu_si256((__m256i *)(idx + 1 * pad + p), _mm256_add_epi32(r0, cx1));
        _mm256_storeu_si256((__m256i *)(idx + 2 * pad + p), _mm256_add_epi32(r1, cx0));
        _mm256_storeu_si256((__m256i *)(idx + 3 * pad + p), _mm256_add_epi32(r1, cx1));
        const __m256 v00 = _mm256_castsi256_ps(_mm256_and_si256(vy0, vx0));
        const __m256 v01 = _mm256_castsi256_ps(_mm256_and_si256(vy0, vx1));
        const __m256 v10 = _mm256_castsi256_ps(_mm256_and_si256(vy1, vx0));
        const __m256 v11 = _mm256_castsi256_ps(_mm256_and_si256(vy1, vx1));
        _mm256_storeu_ps(wt + 0 * pad + p,
                         _mm256_and_ps(v00, _mm256_mul_ps(_mm256_mul_ps(hy, hx), mk)));
        _mm256_storeu_ps(wt + 1 * pad + p,
                         _mm256_and_ps(v01, _mm256_mul_ps(_mm256_mul_ps(hy, lx), mk)));
        _mm256_storeu_ps(wt + 2 * pad + p,
                         _mm256_and_ps(v10, _mm256_mul_ps(_mm256_mul_ps(ly, hx), mk)));
        _mm256_storeu_ps(wt + 3 * pad + p,
                         _mm256_and_ps(v11, _mm256_mul_ps(_mm256_mul_ps(ly, lx), mk)));
    }
    if (nv < np)
        plan_tap_generic(h, w, np - nv, by + nv, bx + nv, ioff, joff, dy + nv, dx + nv,
                         m ? m + nv : NULL, idx + nv, wt + nv, pad);
}

/* dst[p] = 1 / (1 + exp(-src[p])) for p < n. exp by range reduction to r in [-ln2/2, ln2/2]
 * and a degree-6 polynomial (the Cephes expf coefficients), within ~2 ulp of expf; the
 * division is exact-rounded. Inputs beyond +-88 saturate to 0 and 1 as expf's do. */
__attribute__((target("avx512f"))) static void sigmoid_avx512(const float *src, float *dst, int n)
{
    const __m512 lo = _mm512_set1_ps(-88.0f), hi = _mm512_set1_ps(88.0f);
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 c0 = _mm512_set1_ps(1.9875691500e-4f), c1 = _mm512_set1_ps(1.3981999507e-3f);
    const __m512 c2 = _mm512_set1_ps(8.3334519073e-3f), c3 = _mm512_set1_ps(4.1665795894e-2f);
    const __m512 c4 = _mm512_set1_ps(1.6666665459e-1f), c5 = _mm512_set1_ps(5.0000001201e-1f);
    for (int p = 0; p < n; p += 16) {
        const __mmask16 live = n - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - p)) - 1);
        __m512 x = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_maskz_loadu_ps(live, src + p));
        x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
        __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(k, ln2_hi, x);
        r = _mm512_fnmadd_ps(k, ln2_lo, r);
        __m512 q = _mm512_fmadd_ps(c0, r, c1);
        q = _mm512_fmadd_ps(q, r, c2);
        q = _mm512_fmadd_ps(q, r, c3);
        q = _mm512_fmadd_ps(q, r, c4);
        q = _mm512_fmadd_ps(q, r, c5);
        __m512 e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(q, r), r, r), one);
        e = _mm512_scalef_ps(e, k);
        _mm512_mask_storeu_ps(dst + p, live, _mm512_div_ps(one, _mm512_add_ps(one, e)));
    }
}

/* sigmoid_avx512's arithmetic on 8 lanes; 2^k from exponent bits with k >= -126 (at k = -127
 * the result is 1 either way: 1 + e rounds to 1 for e < 2^-124). The last n % 8 use expf. */
__attribute__((target("avx2,fma"))) static void sigmoid_avx2(const float *src, float *dst, int n)
{
    const __m256 lo = _mm256_set1_ps(-88.0f), hi = _mm256_set1_ps(88.0f);
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 c0 = _mm256_set1_ps(1.9875691500e-4f), c1 = _mm256_set1_ps(1.3981999507e-3f);
    const __m256 c2 = _mm256_set1_ps(8.3334519073e-3f), c3 = _mm256_set1_ps(4.1665795894e-2f);
    const __m256 c4 = _mm256_set1_ps(1.6666665459e-1f), c5 = _mm256_set1_ps(5.0000001201e-1f);
    const __m256i kmin = _mm256_set1_epi32(-126), bias = _mm256_set1_epi32(127);
    const int nv = n - n % 8;
    for (int p = 0; p < nv; p += 8) {
        __m256 x = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(src + p));
        x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
        __m256 k =
            _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(k, ln2_hi, x);
        r = _mm256_fnmadd_ps(k, ln2_lo, r);
        __m256 q = _mm256_fmadd_ps(c0, r, c1);
        q = _mm256_fmadd_ps(q, r, c2);
        q = _mm256_fmadd_ps(q, r, c3);
        q = _mm256_fmadd_ps(q, r, c4);
        q = _mm256_fmadd_ps(q, r, c5);
        __m256 e = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(q, r), r, r), one);
        __m256i ki = _mm256_max_epi32(_mm256_cvtps_epi32(k), kmin);
        e = _mm256_mul_ps(e,
                          _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ki, bias), 23)));
        _mm256_storeu_ps(dst + p, _mm256_div_ps(one, _mm256_add_ps(one, e)));
    }
    for (int p = nv; p < n; p++)
        dst[p] = 1.0f / (1.0f + expf(-src[p]));
}

/* Builds the plan of output pixels p0 .. p0+np-1 of one image into t->idx / t->wt. */
static void build_plan(const gs_deform_conv *c, deform_thread *t, const offset_view *v, int p0,
                       int np, gs_deform_kernels kern)
{
    const gs_deform_conv_desc *d = &c->d;
    const int taps = c->taps, pad = c->tile_pad;
    const size_t ohw = (size_t)c->ho * c->wo;
    int oy = p0 / c->wo, ox = p0 % c->wo;
    for (int p = 0; p < np; p++) {
        t->base_y[p] = (float)(oy * d->stride_h - d->pad_h);
        t->base_x[p] = (float)(ox * d->stride_w - d->pad_w);
        if (++ox == c->wo) {
            ox = 0;
            oy++;
        }
    }
    for (int k = 0; k < taps; k++) {
        const int i = k / d->kw, j = k % d->kw;
        const float *dy = v->base + offset_channel(c, 2 * k) + (size_t)p0 * v->pix_stride;
        const float *dx = v->base + offset_channel(c, 2 * k + 1) + (size_t)p0 * v->pix_stride;
        const float *m = NULL;
        if (v->mask_base) {
            m = v->mask_base + (size_t)k * ohw + p0;
        } else if (v->sigmoid) {
            const float *raw =
                v->base + offset_channel(c, 2 * taps + k) + (size_t)p0 * v->pix_stride;
            if (kern != GS_DEFORM_KERNELS_PORTABLE) {
                /* Strided logits (the network's formats): stage them contiguously and use the
                 * vector sigmoid in place; scalar expf cost ~4% of the 64->64@128 run. */
                if (v->pix_stride != 1)
                    for (int p = 0; p < np; p++)
                        t->mask[p] = raw[(size_t)p * v->pix_stride];
                const float *logits = v->pix_stride == 1 ? raw : t->mask;
                if (kern == GS_DEFORM_KERNELS_AVX512)
                    sigmoid_avx512(logits, t->mask, np);
                else
                    sigmoid_avx2(logits, t->mask, np);
            } else {
                for (int p = 0; p < np; p++)
                    t->mask[p] = 1.0f / (1.0f + expf(-raw[(size_t)p * v->pix_stride]));
            }
            m = t->mask;
        }
        if (v->pix_stride != 1) {
            for (int p = 0; p < np; p++) {
                t->dy[p] = dy[(size_t)p * v->pix_stride];
                t->dx[p] = dx[(size_t)p * v->pix_stride];
            }
            dy = t->dy;
            dx = t->dx;
        }
        int32_t *idx = t->idx + (size_t)k * 4 * pad;
        float *wt = t->wt + (size_t)k * 4 * pad;
        const float ioff = (float)(i * d->dil_h), joff = (float)(j * d->dil_w);
        if (kern == GS_DEFORM_KERNELS_AVX512)
            plan_tap_avx512(d->h, d->w, np, t->base_y, t->base_x, ioff, joff, dy, dx, m, idx, wt,
                            pad);
        else if (kern == GS_DEFORM_KERNELS_AVX2)
            plan_tap_avx2(d->h, d->w, np, t->base_y, t->base_x, ioff, joff, dy, dx, m, idx, wt,
                          pad);
        else
            plan_tap_generic(d->h, d->w, np, t->base_y, t->base_x, ioff, joff, dy, dx, m, idx, wt,
                             pad);
    }
}

/* Elements from one input pixel to the next, and from one 16-channel block to the next. */
static size_t in_pixel_step(const gs_deform_conv *c)
{
    return c->d.nhwc ? (size_t)c->d.cin : 16;
}

static size_t in_block_step(const gs_deform_conv *c)
{
    return c->d.nhwc ? 16 : (size_t)c->d.h * c->d.w * 16;
}

/* col[p][col_at(cb, k) + l] = sum over corners of wt * in[cb][idx][l]. Tap-outer so that
 * consecutive pixels sample neighbouring input pixels. */
__attribute__((target("avx512f"))) static void
gather_avx512(const gs_deform_conv *c, const deform_thread *t, int np, const float *in, float *col)
{
    const int taps = c->taps, cb_in = c->cb_in, kdim = c->kdim, pad = c->tile_pad;
    const size_t px = in_pixel_step(c), plane = in_block_step(c);
    for (int k = 0; k < taps; k++) {
        const int32_t *i0 = t->idx + (size_t)k * 4 * pad, *i1 = i0 + pad, *i2 = i1 + pad,
                      *i3 = i2 + pad;
        const float *w0 = t->wt + (size_t)k * 4 * pad, *w1 = w0 + pad, *w2 = w1 + pad,
                    *w3 = w2 + pad;
        for (int p = 0; p < np; p++) {
            const __m512 b0 = _mm512_set1_ps(w0[p]), b1 = _mm512_set1_ps(w1[p]);
            const __m512 b2 = _mm512_set1_ps(w2[p]), b3 = _mm512_set1_ps(w3[p]);
            const float *a0 = in + (size_t)i0[p] * px, *a1 = in + (size_t)i1[p] * px;
            const float *a2 = in + (size_t)i2[p] * px, *a3 = in + (size_t)i3[p] * px;
            float *dst = col + (size_t)p * kdim;
            for (int cb = 0; cb < cb_in; cb++) {
                const size_t o = (size_t)cb * plane;
                __m512 v = _mm512_mul_ps(b0, _mm512_loadu_ps(a0 + o));
                v = _mm512_fmadd_ps(b1, _mm512_loadu_ps(a1 + o), v);
                v = _mm512_fmadd_ps(b2, _mm512_loadu_ps(a2 + o), v);
                v = _mm512_fmadd_ps(b3, _mm512_loadu_ps(a3 + o), v);
                _mm512_store_ps(dst + col_at(c, cb, k), v);
            }
        }
    }
}

/* gather_avx512 on two 8-float halves of each 16-channel block (same arithmetic). */
__attribute__((target("avx2,fma"))) static void
gather_avx2(const gs_deform_conv *c, const deform_thread *t, int np, const float *in, float *col)
{
    const int taps = c->taps, cb_in = c->cb_in, kdim = c->kdim, pad = c->tile_pad;
    const size_t px = in_pixel_step(c), plane = in_block_step(c);
    for (int k = 0; k < taps; k++) {
        const int32_t *i0 = t->idx + (size_t)k * 4 * pad, *i1 = i0 + pad, *i2 = i1 + pad,
                      *i3 = i2 + pad;
        const float *w0 = t->wt + (size_t)k * 4 * pad, *w1 = w0 + pad, *w2 = w1 + pad,
                    *w3 = w2 + pad;
        for (int p = 0; p < np; p++) {
            const __m256 b0 = _mm256_set1_ps(w0[p]), b1 = _mm256_set1_ps(w1[p]);
            const __m256 b2 = _mm256_set1_ps(w2[p]), b3 = _mm256_set1_ps(w3[p]);
            const float *a0 = in + (size_t)i0[p] * px, *a1 = in + (size_t)i1[p] * px;
            const float *a2 = in + (size_t)i2[p] * px, *a3 = in + (size_t)i3[p] * px;
            float *dst = col + (size_t)p * kdim;
            for (int cb = 0; cb < cb_in; cb++)
                for (int half = 0; half < 16; half += 8) {
                    const size_t o = (size_t)cb * plane + (size_t)half;
                    __m256 v = _mm256_mul_ps(b0, _mm256_loadu_ps(a0 + o));
                    v = _mm256_fmadd_ps(b1, _mm256_loadu_ps(a1 + o), v);
                    v = _mm256_fmadd_ps(b2, _mm256_loadu_ps(a2 + o), v);
                    v = _mm256_fmadd_ps(b3, _mm256_loadu_ps(a3 + o), v);
                    _mm256_store_ps(dst + col_at(c, cb, k) + half, v);
                }
        }
    }
}

static void gather_generic(const gs_deform_conv *c, const deform_thread *t, int np, const float *in,
                           float *col)
{
    const int taps = c->taps, cb_in = c->cb_in, kdim = c->kdim, pad = c->tile_pad;
    const size_t px = in_pixel_step(c), plane = in_block_step(c);
    for (int k = 0; k < taps; k++) {
        const int32_t *idx = t->idx + (size_t)k * 4 * pad;
        const float *wt = t->wt + (size_t)k * 4 * pad;
        for (int p = 0; p < np; p++)
            for (int cb = 0; cb < cb_in; cb++) {
                const float *b = in + (size_t)cb * plane;
                float *dst = col + (size_t)p * kdim + col_at(c, cb, k);
                for (int l = 0; l < 16; l++)
                    dst[l] = wt[p] * b[(size_t)idx[p] * px + l] +
                             wt[pad + p] * b[(size_t)idx[pad + p] * px + l] +
                             wt[2 * pad + p] * b[(size_t)idx[2 * pad + p] * px + l] +
                             wt[3 * pad + p] * b[(size_t)idx[3 * pad + p] * px + l];
            }
    }
}

/* bf16 gathers: the same sums in float32 from bf16 corners, each rounded once to bf16. */
__attribute__((target("avx512f"))) static inline __m512 load_bf16x16(const uint16_t *p)
{
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

/* Round to nearest even, as gs_bf16_from_f32 (finite values: a gathered sample is). */
__attribute__((target("avx512f"))) static inline __m256i to_bf16x16(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16));
}

__attribute__((target("avx512f"))) static void gather_avx512_bf16(const gs_deform_conv *c,
                                                                  const deform_thread *t, int np,
                                                                  const uint16_t *in, uint16_t *col)
{
    const int taps = c->taps, cb_in = c->cb_in, kdim = c->kdim, pad = c->tile_pad;
    const size_t px = in_pixel_step(c), plane = in_block_step(c);
    for (int k = 0; k < taps; k++) {
        const int32_t *i0 = t->idx + (size_t)k * 4 * pad, *i1 = i0 + pad, *i2 = i1 + pad,
                      *i3 = i2 + pad;
        const float *w0 = t->wt + (size_t)k * 4 * pad, *w1 = w0 + pad, *w2 = w1 + pad,
                    *w3 = w2 + pad;
        for (int p = 0; p < np; p++) {
            const __m512 b0 = _mm512_set1_ps(w0[p]), b1 = _mm512_set1_ps(w1[p]);
            const __m512 b2 = _mm512_set1_ps(w2[p]), b3 = _mm512_set1_ps(w3[p]);
            const uint16_t *a0 = in + (size_t)i0[p] * px, *a1 = in + (size_t)i1[p] * px;
            const uint16_t *a2 = in + (size_t)i2[p] * px, *a3 = in + (size_t)i3[p] * px;
            uint16_t *dst = col + (size_t)p * kdim;
            for (int cb = 0; cb < cb_in; cb++) {
                const size_t o = (size_t)cb * plane;
                __m512 v = _mm512_mul_ps(b0, load_bf16x16(a0 + o));
                v = _mm512_fmadd_ps(b1, load_bf16x16(a1 + o), v);
                v = _mm512_fmadd_ps(b2, load_bf16x16(a2 + o), v);
                v = _mm512_fmadd_ps(b3, load_bf16x16(a3 + o), v);
                _mm256_store_si256((__m256i *)(dst + col_at(c, cb, k)), to_bf16x16(v));
            }
        }
    }
}

/* The bf16 gather of a channels-last conv, 32 channels per step instead of 16: one 64-byte
 * load holds 32 bf16 values, and shifting each 32-bit lane left by 16 gives the even channels
 * as float32 while masking off its low half gives the odd ones, so nothing is permuted. Each
 * sum is rounded to nearest even in the integer domain (as to_bf16x16), and the two halves
 * merge back into one 64-byte store. The arithmetic per value is gather_avx512_bf16's, so the
 * results are the same bits; a Cin that is an odd multiple of 16 ends with a masked half step.
 * It has about half the instructions of the 16-channel kernel per value, but the gather is
 * bound more by its loads than by instructions: on 64->64@128 it measured 10-15% fewer cycles. */
__attribute__((target("avx512f,avx512bw"))) static void
gather_avx512_bf16_cl(const gs_deform_conv *c, const deform_thread *t, int np, const uint16_t *in,
                      uint16_t *col)
{
    const int taps = c->taps, cin = c->d.cin, kdim = c->kdim, pad = c->tile_pad;
    const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u), one = _mm512_set1_epi32(1);
    const __m512i half = _mm512_set1_epi32(0x7fff);
    for (int k = 0; k < taps; k++) {
        const int32_t *i0 = t->idx + (size_t)k * 4 * pad, *i1 = i0 + pad, *i2 = i1 + pad,
                      *i3 = i2 + pad;
        const float *w0 = t->wt + (size_t)k * 4 * pad, *w1 = w0 + pad, *w2 = w1 + pad,
                    *w3 = w2 + pad;
        for (int p = 0; p < np; p++) {
            const __m512 b0 = _mm512_set1_ps(w0[p]), b1 = _mm512_set1_ps(w1[p]);
            const __m512 b2 = _mm512_set1_ps(w2[p]), b3 = _mm512_set1_ps(w3[p]);
            const uint16_t *a0 = in + (size_t)i0[p] * cin, *a1 = in + (size_t)i1[p] * cin;
            const uint16_t *a2 = in + (size_t)i2[p] * cin, *a3 = in + (size_t)i3[p] * cin;
            uint16_t *dst = col + (size_t)p * kdim + col_at(c, 0, k);
            for (int ch = 0; ch < cin; ch += 32) {
                const __mmask32 m = cin - ch >= 32 ? 0xFFFFFFFFu : 0xFFFFu;
                __m512i v = _mm512_maskz_loadu_epi16(m, a0 + ch);
                __m512 e = _mm512_mul_ps(b0, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
                __m512 o = _mm512_mul_ps(b0, _mm512_castsi512_ps(_mm512_and_si512(v, hi)));
                v = _mm512_maskz_loadu_epi16(m, a1 + ch);
                e = _mm512_fmadd_ps(b1, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), e);
                o = _mm512_fmadd_ps(b1, _mm512_castsi512_ps(_mm512_and_si512(v, hi)), o);
                v = _mm512_maskz_loadu_epi16(m, a2 + ch);
                e = _mm512_fmadd_ps(b2, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), e);
                o = _mm512_fmadd_ps(b2, _mm512_castsi512_ps(_mm512_and_si512(v, hi)), o);
                v = _mm512_maskz_loadu_epi16(m, a3 + ch);
                e = _mm512_fmadd_ps(b3, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), e);
                o = _mm512_fmadd_ps(b3, _mm512_castsi512_ps(_mm512_and_si512(v, hi)), o);
                __m512i ei = _mm512_castps_si512(e), oi = _mm512_castps_si512(o);
                ei = _mm512_add_epi32(
                    ei, _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(ei, 16), one), half));
                oi = _mm512_add_epi32(
                    oi, _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(oi, 16), one), half));
                _mm512_mask_storeu_epi16(
                    dst + ch, m,
                    _mm512_or_si512(_mm512_and_si512(oi, hi), _mm512_srli_epi32(ei, 16)));
            }
        }
    }
}

static void gather_generic_bf16(const gs_deform_conv *c, const deform_thread *t, int np,
                                const uint16_t *in, uint16_t *col)
{
    const int taps = c->taps, cb_in = c->cb_in, kdim = c->kdim, pad = c->tile_pad;
    const size_t px = in_pixel_step(c), plane = in_block_step(c);
    for (int k = 0; k < taps; k++) {
        const int32_t *idx = t->idx + (size_t)k * 4 * pad;
        const float *wt = t->wt + (size_t)k * 4 * pad;
        for (int p = 0; p < np; p++)
            for (int cb = 0; cb < cb_in; cb++) {
                const uint16_t *b = in + (size_t)cb * plane;
                uint16_t *dst = col + (size_t)p * kdim + col_at(c, cb, k);
                for (int l = 0; l < 16; l++) {
                    /* Same operation order as the vector kernel (mul, then three FMAs). */
                    float v = wt[p] * gs_bf16_to_f32(b[(size_t)idx[p] * px + l]);
                    v = fmaf(wt[pad + p], gs_bf16_to_f32(b[(size_t)idx[pad + p] * px + l]), v);
                    v = fmaf(wt[2 * pad + p], gs_bf16_to_f32(b[(size_t)idx[2 * pad + p] * px + l]),
                             v);
                    v = fmaf(wt[3 * pad + p], gs_bf16_to_f32(b[(size_t)idx[3 * pad + p] * px + l]),
                             v);
                    dst[l] = gs_bf16_from_f32(v);
                }
            }
    }
}

/* int8 gathers (gs_deform_conv_new_int8): gather_generic_bf16's sums with the input scale
 * folded into the four bilinear weights, clamped in float to the column type's range (0..255,
 * or -127..127) and rounded to nearest even into one byte. Same operation order in both, so
 * they agree bit for bit. */
__attribute__((target("avx512f"))) static void gather_avx512_int8(const gs_deform_conv *c,
                                                                  const deform_thread *t, int np,
                                                                  const uint16_t *in, uint8_t *col)
{
    const int taps = c->taps, cb_in = c->cb_in, kdim = c->kdim, pad = c->tile_pad;
    const size_t px = in_pixel_step(c), plane = in_block_step(c);
    const float sc = c->in_scale;
    const __m512 lo = _mm512_set1_ps(c->q > 0 ? 0.0f : -127.0f);
    const __m512 hi = _mm512_set1_ps(c->q > 0 ? 255.0f : 127.0f);
    for (int k = 0; k < taps; k++) {
        const int32_t *i0 = t->idx + (size_t)k * 4 * pad, *i1 = i0 + pad, *i2 = i1 + pad,
                      *i3 = i2 + pad;
        const float *w0 = t->wt + (size_t)k * 4 * pad, *w1 = w0 + pad, *w2 = w1 + pad,
                    *w3 = w2 + pad;
        for (int p = 0; p < np; p++) {
            const __m512 b0 = _mm512_set1_ps(w0[p] * sc), b1 = _mm512_set1_ps(w1[p] * sc);
            const __m512 b2 = _mm512_set1_ps(w2[p] * sc), b3 = _mm512_set1_ps(w3[p] * sc);
            const uint16_t *a0 = in + (size_t)i0[p] * px, *a1 = in + (size_t)i1[p] * px;
            const uint16_t *a2 = in + (size_t)i2[p] * px, *a3 = in + (size_t)i3[p] * px;
            uint8_t *dst = col + (size_t)p * kdim;
            for (int cb = 0; cb < cb_in; cb++) {
                const size_t o = (size_t)cb * plane;
                __m512 v = _mm512_mul_ps(b0, load_bf16x16(a0 + o));
                v = _mm512_fmadd_ps(b1, load_bf16x16(a1 + o), v);
                v = _mm512_fmadd_ps(b2, load_bf16x16(a2 + o), v);
                v = _mm512_fmadd_ps(b3, load_bf16x16(a3 + o), v);
                const __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
                const __m128i bytes =
                    c->q > 0 ? _mm512_cvtusepi32_epi8(q) : _mm512_cvtsepi32_epi8(q);
                _mm_storeu_si128((__m128i *)(dst + col_at(c, cb, k)), bytes);
            }
        }
    }
}

static void gather_generic_int8(const gs_deform_conv *c, const deform_thread *t, int np,
                                const uint16_t *in, uint8_t *col)
{
    const int taps = c->taps, cb_in = c->cb_in, kdim = c->kdim, pad = c->tile_pad;
    const size_t px = in_pixel_step(c), plane = in_block_step(c);
    const float sc = c->in_scale, lo = c->q > 0 ? 0.0f : -127.0f, hi = c->q > 0 ? 255.0f : 127.0f;
    for (int k = 0; k < taps; k++) {
        const int32_t *idx = t->idx + (size_t)k * 4 * pad;
        const float *wt = t->wt + (size_t)k * 4 * pad;
        for (int p = 0; p < np; p++) {
            const float b0 = wt[p] * sc, b1 = wt[pad + p] * sc, b2 = wt[2 * pad + p] * sc,
                        b3 = wt[3 * pad + p] * sc;
            for (int cb = 0; cb < cb_in; cb++) {
                const uint16_t *b = in + (size_t)cb * plane;
                uint8_t *dst = col + (size_t)p * kdim + col_at(c, cb, k);
                for (int l = 0; l < 16; l++) {
                    float v = b0 * gs_bf16_to_f32(b[(size_t)idx[p] * px + l]);
                    v = fmaf(b1, gs_bf16_to_f32(b[(size_t)idx[pad + p] * px + l]), v);
                    v = fmaf(b2, gs_bf16_to_f32(b[(size_t)idx[2 * pad + p] * px + l]), v);
                    v = fmaf(b3, gs_bf16_to_f32(b[(size_t)idx[3 * pad + p] * px + l]), v);
                    const long q = lrintf(fminf(fmaxf(v, lo), hi));
                    dst[l] = c->q > 0 ? (uint8_t)q : (uint8_t)(int8_t)q;
                }
            }
        }
    }
}

/* Does one tile; returns a oneDNN status. */
static dnnl_status_t run_tile(const gs_deform_conv *c, deform_thread *t, gs_deform_kernels kern,
                              int n, int tile, const void *input, const offset_view *v, void *out)
{
    const size_t ohw = (size_t)c->ho * c->wo;
    const int p0 = tile * c->tile_p;
    const int np = tile == c->tiles - 1 ? c->tail_p : c->tile_p;
    const int which = np == c->tile_p ? MM_FULL : MM_TAIL;
    const size_t in_off = (size_t)n * c->cb_in * 16 * c->d.h * c->d.w;

    const int use_avx512 = kern == GS_DEFORM_KERNELS_AVX512;
    build_plan(c, t, v, p0, np, kern);
    if (c->q && use_avx512)
        gather_avx512_int8(c, t, np, (const uint16_t *)input + in_off, (uint8_t *)t->col);
    else if (c->q)
        gather_generic_int8(c, t, np, (const uint16_t *)input + in_off, (uint8_t *)t->col);
    else if (c->d.bf16 && c->d.nhwc && use_avx512 && __builtin_cpu_supports("avx512bw"))
        gather_avx512_bf16_cl(c, t, np, (const uint16_t *)input + in_off, (uint16_t *)t->col);
    else if (c->d.bf16 && use_avx512)
        gather_avx512_bf16(c, t, np, (const uint16_t *)input + in_off, (uint16_t *)t->col);
    else if (c->d.bf16)
        gather_generic_bf16(c, t, np, (const uint16_t *)input + in_off, (uint16_t *)t->col);
    else if (use_avx512)
        gather_avx512(c, t, np, (const float *)input + in_off, t->col);
    else if (kern == GS_DEFORM_KERNELS_AVX2)
        gather_avx2(c, t, np, (const float *)input + in_off, t->col);
    else
        gather_generic(c, t, np, (const float *)input + in_off, t->col);

    if (c->d.nhwc) {
        const size_t row0 = (size_t)n * ohw + (size_t)p0;
        void *rows = c->d.bf16 ? (void *)((uint16_t *)out + row0 * c->ndim)
                               : (void *)((float *)out + row0 * c->ndim);
        dnnl_status_t st = dnnl_memory_set_data_handle(t->dst[which], rows);
        if (st != dnnl_success)
            return st;
    }
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, t->src[which]},
                               {DNNL_ARG_WEIGHTS, t->wei[which]},
                               {DNNL_ARG_BIAS, t->bias},
                               {DNNL_ARG_DST, t->dst[which]},
                               {DNNL_ARG_SCRATCHPAD, t->scr[which]}};
    dnnl_status_t st = dnnl_primitive_execute(c->mm[which], t->stream, 5, args);
    if (st == dnnl_success)
        st = dnnl_stream_wait(t->stream);
    if (st != dnnl_success || c->d.nhwc)
        return st;

    /* [np, ndim] rows -> nChw16c: each 16-channel chunk of a row is one pixel of a block. */
    if (c->d.bf16) {
        uint16_t *out_n = (uint16_t *)out + (size_t)n * c->cb_out * 16 * ohw;
        for (int cb = 0; cb < c->cb_out; cb++) {
            uint16_t *dst = out_n + ((size_t)cb * ohw + p0) * 16;
            const uint16_t *src = (const uint16_t *)t->gemm + (size_t)cb * 16;
            for (int p = 0; p < np; p++)
                memcpy(dst + (size_t)p * 16, src + (size_t)p * c->ndim, 16 * sizeof(uint16_t));
        }
        return dnnl_success;
    }
    float *out_n = (float *)out + (size_t)n * c->cb_out * 16 * ohw;
    for (int cb = 0; cb < c->cb_out; cb++) {
        float *dst = out_n + ((size_t)cb * ohw + p0) * 16;
        const float *src = t->gemm + (size_t)cb * 16;
        for (int p = 0; p < np; p++)
            memcpy(dst + (size_t)p * 16, src + (size_t)p * c->ndim, 16 * sizeof(float));
    }
    return dnnl_success;
}

static int run_any(const gs_deform_conv *c, gs_deform_conv_scratch *s, const void *input,
                   const float *offset, const float *mask, void *out);

int gs_deform_conv_run(const gs_deform_conv *c, gs_deform_conv_scratch *s, const float *input,
                       const float *offset, const float *mask, float *out)
{
    if (c->d.bf16)
        return gs_error_set("deform_conv: built for bf16; use gs_deform_conv_run_bf16");
    return run_any(c, s, input, offset, mask, out);
}

int gs_deform_conv_run_bf16(const gs_deform_conv *c, gs_deform_conv_scratch *s,
                            const uint16_t *input, const float *offset, const float *mask,
                            uint16_t *out)
{
    if (!c->d.bf16)
        return gs_error_set("deform_conv: built for float32; use gs_deform_conv_run");
    return run_any(c, s, input, offset, mask, out);
}

static int run_any(const gs_deform_conv *c, gs_deform_conv_scratch *s, const void *input,
                   const float *offset, const float *mask, void *out)
{
    if (!s || s->conv != c)
        return gs_error_set("deform_conv: scratch was made for another conv");
    if (!input || !offset || !out)
        return gs_error_set("deform_conv: NULL input, offset or output");
    if (c->d.offset_format != GS_DEFORM_OFFSET_SPLIT && mask)
        return gs_error_set("deform_conv: a separate mask needs GS_DEFORM_OFFSET_SPLIT");

    const size_t ohw = (size_t)c->ho * c->wo;
    const int taps = c->taps;
    size_t off_image;
    switch (c->d.offset_format) {
    case GS_DEFORM_OFFSET_SPLIT:
        off_image = 2 * (size_t)taps * ohw;
        break;
    case GS_DEFORM_OFFSET_RAW_NCHW:
    case GS_DEFORM_OFFSET_RAW_NHWC:
        off_image = 3 * (size_t)taps * ohw;
        break;
    default:
        off_image = (size_t)((3 * taps + 15) / 16) * 16 * ohw;
        break;
    }
    const gs_deform_kernels kern =
        kernels_for((gs_deform_kernels)__atomic_load_n(&kernels_cap, __ATOMIC_RELAXED));
    int nthr = omp_get_max_threads();
    if (nthr > s->nthr)
        nthr = s->nthr;
    const int jobs = c->d.n * c->tiles;
    if (nthr > jobs)
        nthr = jobs;
    dnnl_status_t failed = dnnl_success;

#pragma omp parallel num_threads(nthr)
    {
        /* oneDNN sees one thread per worker: the matmul runs inside our parallel region. */
        omp_set_num_threads(1);
        deform_thread *t = &s->t[omp_get_thread_num()];
#pragma omp for schedule(static)
        for (int job = 0; job < jobs; job++) {
            const int n = job / c->tiles, tile = job % c->tiles;
            offset_view v;
            v.base = offset + (size_t)n * off_image;
            v.pix_stride = c->d.offset_format == GS_DEFORM_OFFSET_RAW_BLOCKED ? 16
                           : c->d.offset_format == GS_DEFORM_OFFSET_RAW_NHWC  ? 3 * (size_t)taps
                                                                              : 1;
            v.sigmoid = c->d.offset_format != GS_DEFORM_OFFSET_SPLIT;
            v.mask_base = mask ? mask + (size_t)n * taps * ohw : NULL;
            dnnl_status_t st = run_tile(c, t, kern, n, tile, input, &v, out);
            if (st != dnnl_success) {
#pragma omp critical(gs_deform_conv_fail)
                failed = st;
            }
        }
    }
    if (failed != dnnl_success)
        return gs_error_set("deform_conv: matmul failed: %s", dnnl_status2str(failed));
    /* Output padding channels are exact zeros: their weights and bias are 0 (and ReLU(0)=0). */
    return 0;
}
