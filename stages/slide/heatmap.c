#include "stages/slide/heatmap.h"

#include <math.h>
#include <stdlib.h>

#include "ops/error.h"

struct gs_heatmap {
    int64_t w0, h0;
    double cell;
    int cols, rows;
    float *sum;      /* sum of the tile values (0..1) seen by each cell */
    uint32_t *count; /* number of tiles that covered each cell */
};

gs_heatmap *gs_heatmap_new(int64_t w0, int64_t h0, double cell)
{
    if (w0 <= 0 || h0 <= 0 || !(cell >= 1.0) || !isfinite(cell)) {
        gs_error_set("heatmap: bad size %lldx%lld with cell %g", (long long)w0, (long long)h0,
                     cell);
        return NULL;
    }
    double cols = ceil((double)w0 / cell), rows = ceil((double)h0 / cell);
    if (cols * rows > (double)(1 << 26)) {
        gs_error_set("heatmap: %.0fx%.0f cells is too many (cell %g)", cols, rows, cell);
        return NULL;
    }
    gs_heatmap *h = calloc(1, sizeof *h);
    if (!h)
        goto fail_oom;
    h->w0 = w0;
    h->h0 = h0;
    h->cell = cell;
    h->cols = (int)cols;
    h->rows = (int)rows;
    h->sum = calloc((size_t)h->cols * h->rows, sizeof *h->sum);
    h->count = calloc((size_t)h->cols * h->rows, sizeof *h->count);
    if (!h->sum || !h->count)
        goto fail_free_heatmap;
    return h;

fail_free_heatmap:
    gs_heatmap_destroy(&h);
fail_oom:
    gs_error_set("heatmap: out of memory for %.0fx%.0f cells", cols, rows);
    return NULL;
}

void gs_heatmap_destroy(gs_heatmap **h)
{
    if (!h || !*h)
        return;
    free((*h)->sum);
    free((*h)->count);
    free(*h);
    *h = NULL;
}

void gs_heatmap_size(const gs_heatmap *h, int *cols, int *rows)
{
    GS_ASSERT(h);
    if (cols)
        *cols = h->cols;
    if (rows)
        *rows = h->rows;
}

double gs_heatmap_cell(const gs_heatmap *h)
{
    GS_ASSERT(h);
    return h->cell;
}

/* Range of cells whose centre (i + 0.5) * cell lies in [a, b), clipped to [0, n). */
static void cell_range(double cell, int64_t a, int64_t b, int n, int *lo, int *hi)
{
    double l = ceil((double)a / cell - 0.5), u = ceil((double)b / cell - 0.5);
    *lo = l < 0 ? 0 : l > n ? n : (int)l;
    *hi = u < 0 ? 0 : u > n ? n : (int)u;
}

int gs_heatmap_add_tile(gs_heatmap *h, int64_t x0, int64_t y0, int64_t window, const uint8_t *map,
                        int map_size)
{
    GS_ASSERT(h);
    if (!map || map_size < 1 || window < 1)
        return gs_error_set("heatmap: bad tile map (%p, %d values, window %lld)", (const void *)map,
                            map_size, (long long)window);
    int cx0, cx1, cy0, cy1;
    cell_range(h->cell, x0, x0 + window, h->cols, &cx0, &cx1);
    cell_range(h->cell, y0, y0 + window, h->rows, &cy0, &cy1);
    int n = 0;
    for (int j = cy0; j < cy1; j++) {
        double cy = (j + 0.5) * h->cell;
        int v = (int)floor((cy - (double)y0) * map_size / (double)window);
        v = v < 0 ? 0 : v >= map_size ? map_size - 1 : v;
        for (int i = cx0; i < cx1; i++) {
            double cx = (i + 0.5) * h->cell;
            int u = (int)floor((cx - (double)x0) * map_size / (double)window);
            u = u < 0 ? 0 : u >= map_size ? map_size - 1 : u;
            size_t k = (size_t)j * h->cols + i;
            h->sum[k] += map[(size_t)v * map_size + u] / 255.0f;
            h->count[k]++;
            n++;
        }
    }
    return n;
}

float gs_heatmap_value(const gs_heatmap *h, int col, int row)
{
    GS_ASSERT(h);
    if (col < 0 || row < 0 || col >= h->cols || row >= h->rows)
        return NAN;
    size_t k = (size_t)row * h->cols + col;
    return h->count[k] ? h->sum[k] / (float)h->count[k] : NAN;
}

int64_t gs_heatmap_cells_with_data(const gs_heatmap *h)
{
    GS_ASSERT(h);
    int64_t n = 0;
    for (size_t k = 0; k < (size_t)h->cols * h->rows; k++)
        n += h->count[k] > 0;
    return n;
}

int64_t gs_heatmap_threshold(const gs_heatmap *h, float threshold, uint8_t *mask)
{
    GS_ASSERT(h && mask);
    int64_t n = 0;
    for (int j = 0; j < h->rows; j++)
        for (int i = 0; i < h->cols; i++) {
            float v = gs_heatmap_value(h, i, j);
            uint8_t on = !isnan(v) && v >= threshold;
            mask[(size_t)j * h->cols + i] = on;
            n += on;
        }
    return n;
}

void gs_heatmap_colour(float v, uint8_t rgb[3])
{
    static const float stops[5][3] = {
        {0, 0, 255}, {0, 255, 255}, {0, 255, 0}, {255, 255, 0}, {255, 0, 0}};
    if (!(v > 0))
        v = 0; /* also NaN */
    if (v > 1)
        v = 1;
    float t = v * 4;
    int s = (int)t;
    if (s > 3)
        s = 3;
    float f = t - (float)s;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)lroundf(stops[s][c] + f * (stops[s + 1][c] - stops[s][c]));
}

uint8_t *gs_heatmap_render(const gs_heatmap *h, const uint8_t *thumb, int tw, int th, double alpha)
{
    GS_ASSERT(h);
    if (!thumb || tw <= 0 || th <= 0 || !(alpha >= 0 && alpha <= 1)) {
        gs_error_set("heatmap: bad thumbnail %p of %dx%d or alpha %g", (const void *)thumb, tw, th,
                     alpha);
        return NULL;
    }
    uint8_t *out = malloc((size_t)tw * th * 3);
    if (!out) {
        gs_error_set("heatmap: out of memory for a %dx%d overlay", tw, th);
        return NULL;
    }
    const double sx = (double)h->w0 / tw, sy = (double)h->h0 / th;
    for (int y = 0; y < th; y++) {
        int row = (int)floor((y + 0.5) * sy / h->cell);
        for (int x = 0; x < tw; x++) {
            const uint8_t *p = thumb + ((size_t)y * tw + x) * 3;
            uint8_t *o = out + ((size_t)y * tw + x) * 3;
            float v = gs_heatmap_value(h, (int)floor((x + 0.5) * sx / h->cell), row);
            if (isnan(v)) {
                o[0] = p[0];
                o[1] = p[1];
                o[2] = p[2];
                continue;
            }
            uint8_t c[3];
            gs_heatmap_colour(v, c);
            for (int k = 0; k < 3; k++)
                o[k] = (uint8_t)lround((1 - alpha) * p[k] + alpha * c[k]);
        }
    }
    return out;
}
