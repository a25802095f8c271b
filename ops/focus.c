#include "ops/focus.h"

#include <math.h>
#include <stdlib.h>

#include "ops/error.h"

/* Below this many pixels the thread start-up costs more than the rows. */
#define GS_FOCUS_PARALLEL_MIN (1 << 18)

static int check_args(const uint8_t *px, int w, int h, size_t stride, int channels,
                      const gs_focus *out)
{
    if (!px || !out)
        return gs_error_set("focus: NULL image or result");
    if (w <= 0 || h <= 0)
        return gs_error_set("focus: bad size %dx%d", w, h);
    if (channels != 1 && channels != 3 && channels != 4)
        return gs_error_set("focus: %d channels (want 1, 3 or 4)", channels);
    if (stride < (size_t)w * (size_t)channels)
        return gs_error_set("focus: stride %zu shorter than a row of %d pixels", stride, w);
    if ((int64_t)w * h > INT32_MAX)
        return gs_error_set("focus: image of %dx%d pixels is too large", w, h);
    return 0;
}

/* PIL's "L": ITU-R 601-2 luma in 16-bit fixed point, rounded. */
static inline int grey_at(const uint8_t *p, int channels)
{
    if (channels == 1)
        return p[0];
    return (19595 * p[0] + 38470 * p[1] + 7471 * p[2] + 32768) >> 16;
}

static inline int used(const uint8_t *mask, int w, int x, int y)
{
    if (!mask)
        return 1;
    const uint8_t *m = mask + (size_t)y * (size_t)w + (size_t)x;
    return m[0] && m[-1] && m[1] && m[-(ptrdiff_t)w] && m[w];
}

static int finish(double var, double mean, int64_t n, gs_focus *out)
{
    if (n == 0)
        return gs_error_set("focus: no pixel to measure (image under 3x3 or no tissue pixel "
                            "with four tissue neighbours)");
    out->laplacian_var = var;
    out->mean_grey = mean;
    out->pixels = n;
    out->score = mean > 0 ? var * (128.0 / mean) * (128.0 / mean) : 0.0;
    return 0;
}

int gs_focus_measure_ref(const uint8_t *px, int w, int h, size_t stride, int channels,
                         const uint8_t *mask, gs_focus *out)
{
    if (check_args(px, w, h, stride, channels, out) < 0)
        return -1;
    double sum_l = 0, sum_g = 0;
    int64_t n = 0;
#define G(xx, yy) ((double)grey_at(px + (size_t)(yy)*stride + (size_t)(xx)*channels, channels))
    for (int y = 1; y < h - 1; y++)
        for (int x = 1; x < w - 1; x++) {
            if (!used(mask, w, x, y))
                continue;
            sum_l += 4 * G(x, y) - G(x - 1, y) - G(x + 1, y) - G(x, y - 1) - G(x, y + 1);
            sum_g += G(x, y);
            n++;
        }
    if (n == 0)
        return finish(0, 0, 0, out);
    const double mean_l = sum_l / (double)n;
    double ss = 0;
    for (int y = 1; y < h - 1; y++)
        for (int x = 1; x < w - 1; x++) {
            if (!used(mask, w, x, y))
                continue;
            double d = 4 * G(x, y) - G(x - 1, y) - G(x + 1, y) - G(x, y - 1) - G(x, y + 1) - mean_l;
            ss += d * d;
        }
#undef G
    return finish(ss / (double)n, sum_g / (double)n, n, out);
}

/* Converts row y to grey into g (w ints). */
static void grey_row(const uint8_t *px, int w, size_t stride, int channels, int y, int32_t *g)
{
    const uint8_t *p = px + (size_t)y * stride;
    if (channels == 1) {
        for (int x = 0; x < w; x++)
            g[x] = p[x];
        return;
    }
    for (int x = 0; x < w; x++, p += channels)
        g[x] = (19595 * p[0] + 38470 * p[1] + 7471 * p[2] + 32768) >> 16;
}

int gs_focus_measure(const uint8_t *px, int w, int h, size_t stride, int channels,
                     const uint8_t *mask, gs_focus *out)
{
    if (check_args(px, w, h, stride, channels, out) < 0)
        return -1;
    if (w < 3 || h < 3)
        return finish(0, 0, 0, out);
    /* Grey values are 0..255, so |L| <= 1020 and L^2 <= 1040400: every sum below stays exact
     * in int64 for images up to INT32_MAX pixels, which makes the result independent of the
     * thread count and of summation order. */
    int64_t s_l = 0, s_ll = 0, s_g = 0, n = 0;
    int failed = 0;
    const int parallel = (int64_t)w * h >= GS_FOCUS_PARALLEL_MIN;
#pragma omp parallel reduction(+ : s_l, s_ll, s_g, n, failed) if (parallel)
    {
        int32_t *rows = malloc(sizeof(int32_t) * 3 * (size_t)w);
        if (!rows)
            failed = 1;
        int32_t *up = rows, *mid = rows ? rows + w : NULL, *down = rows ? rows + 2 * w : NULL;
        int have = -10; /* the row currently held in `mid`, to reuse rows on consecutive y */
#pragma omp for schedule(static)
        for (int y = 1; y < h - 1; y++) {
            if (!rows)
                continue;
            if (have == y - 1) {
                int32_t *t = up;
                up = mid;
                mid = down;
                down = t;
                grey_row(px, w, stride, channels, y + 1, down);
            } else {
                grey_row(px, w, stride, channels, y - 1, up);
                grey_row(px, w, stride, channels, y, mid);
                grey_row(px, w, stride, channels, y + 1, down);
            }
            have = y;
            int64_t rl = 0, rll = 0, rg = 0, rn = 0;
            if (!mask) {
                for (int x = 1; x < w - 1; x++) {
                    int32_t l = 4 * mid[x] - mid[x - 1] - mid[x + 1] - up[x] - down[x];
                    rl += l;
                    rll += (int64_t)l * l;
                    rg += mid[x];
                }
                rn = w - 2;
            } else {
                const uint8_t *m = mask + (size_t)y * (size_t)w;
                const uint8_t *mu = m - w, *md = m + w;
                for (int x = 1; x < w - 1; x++) {
                    if (!(m[x] && m[x - 1] && m[x + 1] && mu[x] && md[x]))
                        continue;
                    int32_t l = 4 * mid[x] - mid[x - 1] - mid[x + 1] - up[x] - down[x];
                    rl += l;
                    rll += (int64_t)l * l;
                    rg += mid[x];
                    rn++;
                }
            }
            s_l += rl;
            s_ll += rll;
            s_g += rg;
            n += rn;
        }
        free(rows);
    }
    if (failed)
        return gs_error_set("focus: out of memory for %d-pixel rows", w);
    if (n == 0)
        return finish(0, 0, 0, out);
    /* n * var = s_ll - s_l^2 / n; n * s_ll - s_l^2 is exact in 128 bits. */
    __int128 num = (__int128)n * s_ll - (__int128)s_l * s_l;
    double var = (double)num / ((double)n * (double)n);
    return finish(var, (double)s_g / (double)n, n, out);
}

int gs_focus_tile_blurry(const gs_focus *f, double threshold)
{
    GS_ASSERT(f);
    return f->score < threshold;
}

int gs_focus_slide_out_of_focus(int blurry, int judged, double slide_fraction)
{
    if (judged <= 0)
        return 0;
    return (double)blurry / (double)judged > slide_fraction;
}

int64_t gs_focus_tissue_mask(const uint8_t *px, int w, int h, size_t stride, int channels,
                             int glass_grey, uint8_t *mask)
{
    gs_focus dummy;
    if (check_args(px, w, h, stride, channels, &dummy) < 0)
        return -1;
    if (!mask)
        return gs_error_set("focus: NULL mask");
    int64_t n = 0;
    for (int y = 0; y < h; y++) {
        const uint8_t *p = px + (size_t)y * stride;
        uint8_t *m = mask + (size_t)y * (size_t)w;
        for (int x = 0; x < w; x++, p += channels) {
            m[x] = grey_at(p, channels) < glass_grey;
            n += m[x];
        }
    }
    return n;
}

int gs_focus_judge_tile(const uint8_t *px, int w, int h, size_t stride, int channels,
                        double threshold, gs_focus *out)
{
    gs_focus local;
    if (!out)
        out = &local;
    if (check_args(px, w, h, stride, channels, out) < 0)
        return -1;
    uint8_t *mask = malloc((size_t)w * (size_t)h);
    if (!mask)
        return gs_error_set("focus: out of memory for a %dx%d mask", w, h);
    int rc = -1;
    if (gs_focus_tissue_mask(px, w, h, stride, channels, GS_FOCUS_GLASS_GREY, mask) >= 0 &&
        gs_focus_measure(px, w, h, stride, channels, mask, out) == 0)
        rc = gs_focus_tile_blurry(out, threshold);
    free(mask);
    return rc;
}

int gs_focus_is_network_threshold(double t)
{
    return t > 0 && t < 1;
}

double gs_focus_classical_threshold(double t)
{
    /* A lab that set the classical threshold keeps it wherever the classical measure judges. */
    return t >= 1 && isfinite(t) ? t : GS_FOCUS_THRESHOLD;
}
