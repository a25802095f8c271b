#include "ops/resample.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"

/* The reference and fast bilinear paths must round identically; a fused multiply-add in one and
 * not the other would break that, so contraction stays off (gcc already has it off in ISO C). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Below this many destination samples the thread start-up costs more than it saves. */
enum { GS_RESAMPLE_PARALLEL_MIN = 1 << 16 };

static int check_image(const char *what, const void *p, int w, int h, size_t stride, int channels)
{
    if (!p)
        return gs_error_set("resample: %s buffer is NULL", what);
    if (w <= 0 || h <= 0)
        return gs_error_set("resample: %s size %dx%d is not positive", what, w, h);
    if (channels < 1 || channels > 4)
        return gs_error_set("resample: %d channels (1..4 supported)", channels);
    if (stride < (size_t)w * (size_t)channels)
        return gs_error_set("resample: %s stride %zu is shorter than a row (%d x %d bytes)", what,
                            stride, w, channels);
    return 0;
}

static int check_area(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                      const uint8_t *dst, int dw, int dh, size_t dstride)
{
    if (check_image("source", src, sw, sh, sstride, channels) ||
        check_image("destination", dst, dw, dh, dstride, channels))
        return -1;
    if (dw > sw || dh > sh)
        return gs_error_set("resample: area averaging cannot enlarge %dx%d to %dx%d", sw, sh, dw,
                            dh);
    /* The exact sums reach 255 * sw * sh; keep them inside int64. */
    if ((double)sw * (double)sh * 255.0 > 9.0e18)
        return gs_error_set("resample: source %dx%d too large for exact area sums", sw, sh);
    return 0;
}

/*
 * Area averaging in integer units: scale both grids so that source pixel i spans [i*dw, (i+1)*dw)
 * and destination pixel x spans [x*sw, (x+1)*sw). Overlaps are then integers, a destination pixel's
 * weights sum to sw, and the weighted sum over a 2-D footprint divided by sw*sh is the exact mean.
 */
static int64_t overlap(int64_t i, int64_t x, int64_t sn, int64_t dn)
{
    int64_t lo = i * dn > x * sn ? i * dn : x * sn;
    int64_t hi = (i + 1) * dn < (x + 1) * sn ? (i + 1) * dn : (x + 1) * sn;
    return hi > lo ? hi - lo : 0;
}

/* First and last source index covered by destination index x. */
static void footprint(int64_t x, int64_t sn, int64_t dn, int64_t *first, int64_t *last)
{
    *first = x * sn / dn;
    *last = ((x + 1) * sn - 1) / dn;
}

static uint8_t round_div(uint64_t sum, uint64_t den)
{
    uint64_t q = (sum + den / 2) / den;
    return (uint8_t)(q > 255 ? 255 : q);
}

int gs_resize_area_u8_ref(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                          uint8_t *dst, int dw, int dh, size_t dstride)
{
    if (check_area(src, sw, sh, sstride, channels, dst, dw, dh, dstride))
        return -1;
    const uint64_t den = (uint64_t)sw * (uint64_t)sh;
    for (int y = 0; y < dh; y++) {
        int64_t j0, j1;
        footprint(y, sh, dh, &j0, &j1);
        for (int x = 0; x < dw; x++) {
            int64_t i0, i1;
            footprint(x, sw, dw, &i0, &i1);
            for (int c = 0; c < channels; c++) {
                uint64_t sum = 0;
                for (int64_t j = j0; j <= j1; j++) {
                    uint64_t wy = (uint64_t)overlap(j, y, sh, dh);
                    for (int64_t i = i0; i <= i1; i++) {
                        uint64_t wx = (uint64_t)overlap(i, x, sw, dw);
                        sum += wy * wx * src[(size_t)j * sstride + (size_t)i * channels + c];
                    }
                }
                dst[(size_t)y * dstride + (size_t)x * channels + c] = round_div(sum, den);
            }
        }
    }
    return 0;
}

/* One destination row's or column's footprint: the first and last source pixel carry partial
 * weights, everything between carries the full weight dn, so the middle can be summed
 * unweighted. */
typedef struct {
    int32_t first, last;
    uint32_t wfirst, wlast;
} area_span;

static void area_spans(area_span *sp, int sn, int dn)
{
    for (int x = 0; x < dn; x++) {
        int64_t a, b;
        footprint(x, sn, dn, &a, &b);
        sp[x].first = (int32_t)a;
        sp[x].last = (int32_t)b;
        sp[x].wfirst = (uint32_t)overlap(a, x, sn, dn);
        sp[x].wlast = (uint32_t)overlap(b, x, sn, dn);
    }
}

/* Horizontal pass over one vertically accumulated row (entries <= 255 * sh) into the output row.
 * `ch` is a compile-time constant at each call site so the channel loop unrolls. */
static inline void area_cols(const uint32_t *acc, const area_span *sp, int dw, int ch, uint64_t den,
                             uint8_t *out)
{
    const uint64_t full = (uint64_t)dw;
    for (int x = 0; x < dw; x++) {
        const area_span s = sp[x];
        const uint32_t *a = acc + (size_t)s.first * ch, *b = acc + (size_t)s.last * ch;
        uint64_t mid[4] = {0, 0, 0, 0};
        for (const uint32_t *p = a + ch; p < b; p += ch)
            for (int c = 0; c < ch; c++)
                mid[c] += p[c];
        for (int c = 0; c < ch; c++) {
            uint64_t sum = s.first == s.last ? (uint64_t)s.wfirst * a[c]
                                             : (uint64_t)s.wfirst * a[c] +
                                                   (uint64_t)s.wlast * b[c] + full * mid[c];
            out[(size_t)x * ch + c] = round_div(sum, den);
        }
    }
}

static void area_cols_any(const uint32_t *acc, const area_span *sp, int dw, int ch, uint64_t den,
                          uint8_t *out)
{
    switch (ch) {
    case 1:
        area_cols(acc, sp, dw, 1, den, out);
        break;
    case 2:
        area_cols(acc, sp, dw, 2, den, out);
        break;
    case 3:
        area_cols(acc, sp, dw, 3, den, out);
        break;
    default:
        area_cols(acc, sp, dw, 4, den, out);
        break;
    }
}

/*
 * Fast area averaging: for each destination row, the source rows it covers are accumulated with
 * their vertical weights into one uint32 row (a contiguous multiply-add the compiler
 * vectorises; the weights of a destination row sum to sh, so entries stay <= 255 * sh), then
 * one horizontal pass applies the column weights and the exact rounding division. Sources
 * taller than UINT32_MAX / 255 rows fall back to the reference.
 */
int gs_resize_area_u8(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                      uint8_t *dst, int dw, int dh, size_t dstride)
{
    if (check_area(src, sw, sh, sstride, channels, dst, dw, dh, dstride))
        return -1;
    if ((uint64_t)sh * 255u > UINT32_MAX)
        return gs_resize_area_u8_ref(src, sw, sh, sstride, channels, dst, dw, dh, dstride);
    int ret = -1;
    const size_t rowlen = (size_t)sw * (size_t)channels;
    const int nthreads =
        (size_t)sw * (size_t)sh * channels >= GS_RESAMPLE_PARALLEL_MIN ? omp_get_max_threads() : 1;
    area_span *xs = malloc(sizeof *xs * (size_t)dw);
    area_span *ys = malloc(sizeof *ys * (size_t)dh);
    uint32_t *work = malloc(sizeof *work * rowlen * (size_t)nthreads);
    if (!xs || !ys || !work) {
        gs_error_set("resample: out of memory for %dx%d area tables", dw, dh);
        goto free_tables;
    }
    area_spans(xs, sw, dw);
    area_spans(ys, sh, dh);
    const uint64_t den = (uint64_t)sw * (uint64_t)sh;

#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int y = 0; y < dh; y++) {
        uint32_t *acc = work + rowlen * (size_t)omp_get_thread_num();
        const area_span s = ys[y];
        for (int32_t j = s.first; j <= s.last; j++) {
            const uint32_t wy = j == s.first ? s.wfirst : j == s.last ? s.wlast : (uint32_t)dh;
            const uint8_t *row = src + (size_t)j * sstride;
            if (j == s.first)
                for (size_t k = 0; k < rowlen; k++)
                    acc[k] = wy * row[k];
            else
                for (size_t k = 0; k < rowlen; k++)
                    acc[k] += wy * row[k];
        }
        area_cols_any(acc, xs, dw, channels, den, dst + (size_t)y * dstride);
    }
    ret = 0;

free_tables:
    free(work);
    free(ys);
    free(xs);
    return ret;
}

/*
 * Bilinear: the coordinate arithmetic is PyTorch's (area_pixel_compute_source_index and
 * compute_source_index_and_lambda in aten/src/ATen/native/UpSample.h), in float like PyTorch's
 * float kernel, so the f32 version reproduces F.interpolate to rounding.
 */
typedef struct {
    int32_t i0, i1;
    float w0, w1;
} lin_tap;

static lin_tap lin_tap_at(int x, int sn, int dn)
{
    lin_tap t;
    if (sn == dn) {
        t.i0 = t.i1 = x;
        t.w0 = 1.0f;
        t.w1 = 0.0f;
        return t;
    }
    const float scale = (float)sn / (float)dn;
    float s = scale * ((float)x + 0.5f) - 0.5f;
    if (s < 0.0f)
        s = 0.0f;
    int32_t i0 = (int32_t)s;
    if (i0 > sn - 1)
        i0 = sn - 1;
    float l1 = s - (float)i0;
    if (l1 < 0.0f)
        l1 = 0.0f;
    if (l1 > 1.0f)
        l1 = 1.0f;
    t.i0 = i0;
    t.i1 = i0 < sn - 1 ? i0 + 1 : i0;
    t.w1 = l1;
    t.w0 = 1.0f - l1;
    return t;
}

static int check_bilinear(const void *src, int sw, int sh, size_t sstride, int channels,
                          const void *dst, int dw, int dh, size_t dstride)
{
    if (check_image("source", src, sw, sh, sstride, channels) ||
        check_image("destination", dst, dw, dh, dstride, channels))
        return -1;
    return 0;
}

static uint8_t round_u8(float v)
{
    v += 0.5f;
    if (v <= 0.0f)
        return 0;
    if (v >= 255.0f)
        return 255;
    return (uint8_t)v;
}

int gs_resize_bilinear_u8_ref(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                              uint8_t *dst, int dw, int dh, size_t dstride)
{
    if (check_bilinear(src, sw, sh, sstride, channels, dst, dw, dh, dstride))
        return -1;
    for (int y = 0; y < dh; y++) {
        lin_tap ty = lin_tap_at(y, sh, dh);
        const uint8_t *r0 = src + (size_t)ty.i0 * sstride;
        const uint8_t *r1 = src + (size_t)ty.i1 * sstride;
        for (int x = 0; x < dw; x++) {
            lin_tap tx = lin_tap_at(x, sw, dw);
            for (int c = 0; c < channels; c++) {
                size_t a = (size_t)tx.i0 * channels + c, b = (size_t)tx.i1 * channels + c;
                float h0 = tx.w0 * (float)r0[a] + tx.w1 * (float)r0[b];
                float h1 = tx.w0 * (float)r1[a] + tx.w1 * (float)r1[b];
                float v = ty.w0 * h0 + ty.w1 * h1;
                dst[(size_t)y * dstride + (size_t)x * channels + c] = round_u8(v);
            }
        }
    }
    return 0;
}

int gs_resize_bilinear_f32_ref(const float *src, int sw, int sh, float *dst, int dw, int dh)
{
    if (check_bilinear(src, sw, sh, (size_t)sw, 1, dst, dw, dh, (size_t)dw))
        return -1;
    for (int y = 0; y < dh; y++) {
        lin_tap ty = lin_tap_at(y, sh, dh);
        for (int x = 0; x < dw; x++) {
            lin_tap tx = lin_tap_at(x, sw, dw);
            const float *r0 = src + (size_t)ty.i0 * sw, *r1 = src + (size_t)ty.i1 * sw;
            float h0 = tx.w0 * r0[tx.i0] + tx.w1 * r0[tx.i1];
            float h1 = tx.w0 * r1[tx.i0] + tx.w1 * r1[tx.i1];
            dst[(size_t)y * dw + x] = ty.w0 * h0 + ty.w1 * h1;
        }
    }
    return 0;
}

/*
 * Fast bilinear: column taps are tabulated once, each source row is interpolated horizontally
 * once per thread (two rows cached, keyed by row index, so consecutive destination rows that
 * share source rows reuse them), and the vertical blend is a straight loop over the row. The
 * arithmetic is the reference's, in the same order, so the outputs are identical.
 */
typedef struct {
    const lin_tap *xs;
    int dw, channels;
} lin_plan;

static void lin_row_u8(const lin_plan *p, const uint8_t *row, float *out)
{
    const int ch = p->channels;
    for (int x = 0; x < p->dw; x++) {
        const lin_tap t = p->xs[x];
        const uint8_t *a = row + (size_t)t.i0 * ch, *b = row + (size_t)t.i1 * ch;
        for (int c = 0; c < ch; c++)
            out[(size_t)x * ch + c] = t.w0 * (float)a[c] + t.w1 * (float)b[c];
    }
}

static void lin_row_f32(const lin_plan *p, const float *row, float *out)
{
    for (int x = 0; x < p->dw; x++) {
        const lin_tap t = p->xs[x];
        out[x] = t.w0 * row[t.i0] + t.w1 * row[t.i1];
    }
}

/* Returns the cached horizontal row for source row r, computing it into the older slot. */
typedef struct {
    float *buf[2];
    int row[2];
} row_cache;

static const float *cached_row(row_cache *rc, int r, const lin_plan *p, const void *src,
                               size_t sstride, int is_u8)
{
    for (int k = 0; k < 2; k++)
        if (rc->row[k] == r)
            return rc->buf[k];
    /* Rows are visited in increasing order, so the smaller cached index is the stale one. */
    int k = rc->row[0] < rc->row[1] ? 0 : 1;
    rc->row[k] = r;
    if (is_u8)
        lin_row_u8(p, (const uint8_t *)src + (size_t)r * sstride, rc->buf[k]);
    else
        lin_row_f32(p, (const float *)((const char *)src + (size_t)r * sstride), rc->buf[k]);
    return rc->buf[k];
}

static int bilinear_fast(const void *src, int sw, int sh, size_t sstride, int channels, void *dst,
                         int dw, int dh, size_t dstride, int is_u8)
{
    int ret = -1;
    const size_t rowlen = (size_t)dw * (size_t)channels;
    const int nthreads =
        rowlen * (size_t)dh >= GS_RESAMPLE_PARALLEL_MIN ? omp_get_max_threads() : 1;
    lin_tap *xs = malloc(sizeof *xs * (size_t)dw);
    float *work = malloc(sizeof *work * rowlen * 2 * (size_t)nthreads);
    if (!xs || !work) {
        gs_error_set("resample: out of memory for a %dx%d bilinear plan", dw, dh);
        goto free_plan;
    }
    for (int x = 0; x < dw; x++)
        xs[x] = lin_tap_at(x, sw, dw);
    const lin_plan plan = {xs, dw, channels};

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float *mine = work + rowlen * 2 * (size_t)omp_get_thread_num();
        row_cache rc = {{mine, mine + rowlen}, {-1, -1}};
#pragma omp for schedule(static)
        for (int y = 0; y < dh; y++) {
            const lin_tap ty = lin_tap_at(y, sh, dh);
            const float *h0 = cached_row(&rc, ty.i0, &plan, src, sstride, is_u8);
            const float *h1 = cached_row(&rc, ty.i1, &plan, src, sstride, is_u8);
            if (is_u8) {
                uint8_t *out = (uint8_t *)dst + (size_t)y * dstride;
                for (size_t k = 0; k < rowlen; k++)
                    out[k] = round_u8(ty.w0 * h0[k] + ty.w1 * h1[k]);
            } else {
                float *out = (float *)((char *)dst + (size_t)y * dstride);
                for (size_t k = 0; k < rowlen; k++)
                    out[k] = ty.w0 * h0[k] + ty.w1 * h1[k];
            }
        }
    }
    ret = 0;

free_plan:
    free(work);
    free(xs);
    return ret;
}

int gs_resize_bilinear_u8(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                          uint8_t *dst, int dw, int dh, size_t dstride)
{
    if (check_bilinear(src, sw, sh, sstride, channels, dst, dw, dh, dstride))
        return -1;
    return bilinear_fast(src, sw, sh, sstride, channels, dst, dw, dh, dstride, 1);
}

int gs_resize_bilinear_f32(const float *src, int sw, int sh, float *dst, int dw, int dh)
{
    if (check_bilinear(src, sw, sh, (size_t)sw, 1, dst, dw, dh, (size_t)dw))
        return -1;
    return bilinear_fast(src, sw, sh, (size_t)sw * sizeof(float), 1, dst, dw, dh,
                         (size_t)dw * sizeof(float), 0);
}
