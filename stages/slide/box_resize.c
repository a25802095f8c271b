#include "stages/slide/box_resize.h"

#include <math.h>
#include <stdlib.h>

#include "ops/error.h"

/* PIL's fixed point for 8-bit images: 32 bits minus 8 for the pixel minus 2 for the sign and
 * the sum of weights slightly above 1 after rounding. */
#define PRECISION_BITS (32 - 8 - 2)

/* One axis' weights: for destination pixel i, the source pixels first[i] .. first[i]+count[i]
 * with weights k[i * ksize + j]. */
typedef struct {
    int ksize;
    int *first, *count;
    int32_t *k;
} axis_weights;

static void axis_free(axis_weights *a)
{
    free(a->first);
    free(a->count);
    free(a->k);
}

/* PIL's precompute_coeffs + normalize_coeffs_8bpc for the BOX filter (support 0.5, weight 1
 * on (-0.5, 0.5]). The scale is a float quotient as in PIL (its box bounds are floats), so
 * centres land on the same side of each footprint edge as there. */
static int axis_new(axis_weights *a, int in, int out)
{
    double scale = (float)in / (float)out;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 0.5 * filterscale;
    a->ksize = (int)ceil(support) * 2 + 1;
    a->first = malloc((size_t)out * sizeof *a->first);
    a->count = malloc((size_t)out * sizeof *a->count);
    a->k = calloc((size_t)out * (size_t)a->ksize, sizeof *a->k);
    double *w = malloc((size_t)a->ksize * sizeof *w);
    if (!a->first || !a->count || !a->k || !w) {
        free(w);
        axis_free(a);
        return gs_error_set("box resize: out of memory for %d -> %d weights", in, out);
    }
    for (int i = 0; i < out; i++) {
        double centre = (i + 0.5) * scale;
        int lo = (int)(centre - support + 0.5);
        int hi = (int)(centre + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > in)
            hi = in;
        int n = hi - lo;
        double sum = 0;
        for (int j = 0; j < n; j++) {
            double x = (j + lo - centre + 0.5) / filterscale;
            w[j] = x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
            sum += w[j];
        }
        for (int j = 0; j < n; j++) {
            double v = sum != 0.0 ? w[j] / sum : w[j];
            a->k[(size_t)i * a->ksize + j] = (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        a->first[i] = lo;
        a->count[i] = n;
    }
    free(w);
    return 0;
}

static uint8_t clip8(int64_t v)
{
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

int gs_box_resize_u8(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh)
{
    if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || channels < 1 || channels > 4)
        return gs_error_set("box resize: bad sizes %dx%d -> %dx%d or %d channels", sw, sh, dw, dh,
                            channels);
    int rc = -1;
    axis_weights ax = {0}, ay = {0};
    uint8_t *rows = NULL;
    if (axis_new(&ax, sw, dw) < 0)
        return -1;
    if (axis_new(&ay, sh, dh) < 0)
        goto free_x;
    /* Rows first, rounded to bytes, then columns: PIL's order, which the bytes depend on. */
    rows = malloc((size_t)dw * sh * channels);
    if (!rows) {
        gs_error_set("box resize: out of memory for a %dx%d pass", dw, sh);
        goto free_y;
    }
    for (int y = 0; y < sh; y++) {
        const uint8_t *in = src + (size_t)y * sw * channels;
        uint8_t *out = rows + (size_t)y * dw * channels;
        for (int x = 0; x < dw; x++) {
            const int32_t *k = ax.k + (size_t)x * ax.ksize;
            for (int c = 0; c < channels; c++) {
                int64_t s = 1 << (PRECISION_BITS - 1);
                for (int j = 0; j < ax.count[x]; j++)
                    s += (int64_t)in[(size_t)(ax.first[x] + j) * channels + c] * k[j];
                out[(size_t)x * channels + c] = clip8(s);
            }
        }
    }
    for (int y = 0; y < dh; y++) {
        const int32_t *k = ay.k + (size_t)y * ay.ksize;
        uint8_t *out = dst + (size_t)y * dw * channels;
        for (int x = 0; x < dw * channels; x++) {
            int64_t s = 1 << (PRECISION_BITS - 1);
            for (int j = 0; j < ay.count[y]; j++)
                s += (int64_t)rows[(size_t)(ay.first[y] + j) * dw * channels + x] * k[j];
            out[x] = clip8(s);
        }
    }
    rc = 0;
    free(rows);
free_y:
    axis_free(&ay);
free_x:
    axis_free(&ax);
    return rc;
}
