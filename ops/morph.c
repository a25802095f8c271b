#include "ops/morph.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"

enum { GS_MORPH_PARALLEL_MIN = 1 << 16 };

static int check_args(const uint8_t *mask, int w, int h, int r)
{
    if (!mask)
        return gs_error_set("morph: mask is NULL");
    if (w <= 0 || h <= 0)
        return gs_error_set("morph: mask size %dx%d is not positive", w, h);
    if (r < 0)
        return gs_error_set("morph: radius %d is negative", r);
    return 0;
}

/* A radius beyond the image gives the same result as the image size, and keeps x +- r in int. */
static int clamp_radius(int r, int w, int h)
{
    int m = w > h ? w : h;
    return r > m ? m : r;
}

/* Reference: the structuring element visited position by position. `erode` selects the
 * operation: all in-image neighbours set (outside counts as set) vs any neighbour set. */
static int morph_ref(uint8_t *mask, int w, int h, int r, int erode)
{
    if (check_args(mask, w, h, r))
        return -1;
    r = clamp_radius(r, w, h);
    uint8_t *src = malloc((size_t)w * (size_t)h);
    if (!src)
        return gs_error_set("morph: out of memory for a %dx%d mask", w, h);
    memcpy(src, mask, (size_t)w * (size_t)h);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            /* Element positions outside the image are neutral for both operations, so the
             * window is simply clipped. */
            int all = 1, any = 0;
            for (int yy = y - r < 0 ? 0 : y - r; yy <= y + r && yy < h; yy++) {
                for (int xx = x - r < 0 ? 0 : x - r; xx <= x + r && xx < w; xx++) {
                    if (src[(size_t)yy * w + xx])
                        any = 1;
                    else
                        all = 0;
                }
            }
            mask[(size_t)y * w + x] = (uint8_t)(erode ? all : any);
        }
    }
    free(src);
    return 0;
}

int gs_morph_erode_ref(uint8_t *mask, int w, int h, int r)
{
    return morph_ref(mask, w, h, r, 1);
}

int gs_morph_dilate_ref(uint8_t *mask, int w, int h, int r)
{
    return morph_ref(mask, w, h, r, 0);
}

/*
 * Fast path. A square element is a row segment followed by a column segment, and both
 * operations reduce to counting set pixels in a window clipped to the image: dilation keeps a
 * pixel if the count is positive, erosion if the count equals the clipped window length (the
 * part outside the image counts as set). Rows use a prefix sum; columns keep one running count
 * per column that is updated as the window slides down, so each pass is O(w*h) for any r.
 */
static void row_pass(const uint8_t *in, uint8_t *out, int w, int r, int erode, int32_t *prefix)
{
    prefix[0] = 0;
    for (int x = 0; x < w; x++)
        prefix[x + 1] = prefix[x] + (in[x] != 0);
    for (int x = 0; x < w; x++) {
        int lo = x - r < 0 ? 0 : x - r;
        int hi = x + r >= w ? w - 1 : x + r;
        int32_t n = prefix[hi + 1] - prefix[lo];
        out[x] = (uint8_t)(erode ? n == hi - lo + 1 : n > 0);
    }
}

/* Columns [x0, x1) of the column pass; `in` is the row-pass result, the mask is the output. */
static void column_pass(const uint8_t *in, uint8_t *out, int w, int h, int r, int erode, int x0,
                        int x1, int32_t *count)
{
    const int nx = x1 - x0;
    memset(count, 0, sizeof *count * (size_t)nx);
    /* The window of row 0 covers rows [0, r]. */
    for (int y = 0; y <= r && y < h; y++) {
        const uint8_t *row = in + (size_t)y * w + x0;
        for (int i = 0; i < nx; i++)
            count[i] += row[i];
    }
    for (int y = 0; y < h; y++) {
        int lo = y - r < 0 ? 0 : y - r;
        int hi = y + r >= h ? h - 1 : y + r;
        int32_t full = hi - lo + 1;
        uint8_t *o = out + (size_t)y * w + x0;
        if (erode)
            for (int i = 0; i < nx; i++)
                o[i] = (uint8_t)(count[i] == full);
        else
            for (int i = 0; i < nx; i++)
                o[i] = (uint8_t)(count[i] > 0);
        /* Slide: row y + r + 1 enters, row y - r leaves. */
        if (y + r + 1 < h) {
            const uint8_t *add = in + (size_t)(y + r + 1) * w + x0;
            for (int i = 0; i < nx; i++)
                count[i] += add[i];
        }
        if (y - r >= 0) {
            const uint8_t *sub = in + (size_t)(y - r) * w + x0;
            for (int i = 0; i < nx; i++)
                count[i] -= sub[i];
        }
    }
}

static int morph_fast(uint8_t *mask, int w, int h, int r, int erode)
{
    if (check_args(mask, w, h, r))
        return -1;
    r = clamp_radius(r, w, h);
    const int nthreads = (size_t)w * (size_t)h >= GS_MORPH_PARALLEL_MIN ? omp_get_max_threads() : 1;
    int ret = -1;
    uint8_t *tmp = malloc((size_t)w * (size_t)h);
    /* Per thread: a prefix row (w + 1) for the row pass, a count row (w) for the column pass. */
    int32_t *work = malloc(sizeof *work * ((size_t)w * 2 + 1) * (size_t)nthreads);
    if (!tmp || !work) {
        gs_error_set("morph: out of memory for a %dx%d mask", w, h);
        goto free_scratch;
    }
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int32_t *mine = work + ((size_t)w * 2 + 1) * (size_t)t;
#pragma omp for schedule(static)
        for (int y = 0; y < h; y++)
            row_pass(mask + (size_t)y * w, tmp + (size_t)y * w, w, r, erode, mine);
        /* The implicit barrier above: every row is done before columns start. */
        int x0 = (int)((int64_t)w * t / nt), x1 = (int)((int64_t)w * (t + 1) / nt);
        if (x1 > x0)
            column_pass(tmp, mask, w, h, r, erode, x0, x1, mine + w + 1);
    }
    ret = 0;

free_scratch:
    free(work);
    free(tmp);
    return ret;
}

int gs_morph_erode(uint8_t *mask, int w, int h, int r)
{
    return morph_fast(mask, w, h, r, 1);
}

int gs_morph_dilate(uint8_t *mask, int w, int h, int r)
{
    return morph_fast(mask, w, h, r, 0);
}

int gs_morph_open(uint8_t *mask, int w, int h, int r)
{
    if (gs_morph_erode(mask, w, h, r))
        return -1;
    return gs_morph_dilate(mask, w, h, r);
}

int gs_morph_close(uint8_t *mask, int w, int h, int r)
{
    if (gs_morph_dilate(mask, w, h, r))
        return -1;
    return gs_morph_erode(mask, w, h, r);
}
