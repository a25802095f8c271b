#include "ops/colour.h"

#include <math.h>
#include <omp.h>

#include "ops/error.h"

/* skimage.color.colorconv.hed_from_rgb (0.19), i.e. inv([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11],
 * [0.27, 0.57, 0.78]]), printed to 17 digits by tests/tools/skimage_hed_values.py. Row = input
 * channel (R, G, B), column = stain (H, E, DAB): stains = od_row_vector @ matrix. */
static const double hed_from_rgb[3][3] = {
    {1.8779827368521353, -1.0076786862855642, -0.55611581819962452},
    {-0.065908062223563352, 1.1347303724996625, -0.13552179862837113},
    {-0.60190736343928897, -0.48041418849705786, 1.5735880719641924},
};

/* Below this many pixels a parallel region costs more than it saves. */
enum { GS_COLOUR_PARALLEL_MIN = 1 << 15 };

double gs_colour_od(uint8_t v)
{
    double i = (double)v / 255.0;
    if (i < 1e-6)
        i = 1e-6;
    return log(i) / log(1e-6);
}

static int check_args(const uint8_t *rgb, int w, int h, size_t stride, int channels)
{
    if (!rgb)
        return gs_error_set("colour: input image is NULL");
    if (w <= 0 || h <= 0)
        return gs_error_set("colour: image size %dx%d is not positive", w, h);
    if (channels != 3 && channels != 4)
        return gs_error_set("colour: %d channels (RGB or RGBA expected)", channels);
    if (stride < (size_t)w * (size_t)channels)
        return gs_error_set("colour: stride %zu is shorter than a row of %d pixels", stride, w);
    return 0;
}

int gs_rgb_to_hed_ref(const uint8_t *rgb, int w, int h, size_t stride, int channels, float *hema,
                      float *eosin, float *dab)
{
    if (check_args(rgb, w, h, stride, channels))
        return -1;
    float *out[3] = {hema, eosin, dab};
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            const uint8_t *p = rgb + (size_t)y * stride + (size_t)x * channels;
            double od[3];
            for (int c = 0; c < 3; c++)
                od[c] = gs_colour_od(p[c]);
            for (int k = 0; k < 3; k++) {
                double s = od[0] * hed_from_rgb[0][k] + od[1] * hed_from_rgb[1][k] +
                           od[2] * hed_from_rgb[2][k];
                if (out[k])
                    out[k][(size_t)y * w + x] = (float)(s > 0.0 ? s : 0.0);
            }
        }
    }
    return 0;
}

/* One stain from three table lookups: t[c][v] = od(v) * hed_from_rgb[c][stain]. The channel
 * count is a constant at each call site so the pixel step is known to the compiler. */
static inline void stain_row(const uint8_t *p, int w, int ch, const float (*t)[256], float *out)
{
    for (int x = 0; x < w; x++, p += ch) {
        float s = t[0][p[0]] + t[1][p[1]] + t[2][p[2]];
        out[x] = s > 0.0f ? s : 0.0f;
    }
}

int gs_rgb_to_hed(const uint8_t *rgb, int w, int h, size_t stride, int channels, float *hema,
                  float *eosin, float *dab)
{
    if (check_args(rgb, w, h, stride, channels))
        return -1;
    float *out[3] = {hema, eosin, dab};
    float table[3][3][256]; /* [stain][channel][value] */
    for (int v = 0; v < 256; v++) {
        double od = gs_colour_od((uint8_t)v);
        for (int k = 0; k < 3; k++)
            for (int c = 0; c < 3; c++)
                table[k][c][v] = (float)(od * hed_from_rgb[c][k]);
    }
    const int parallel = (size_t)w * (size_t)h >= GS_COLOUR_PARALLEL_MIN;
#pragma omp parallel for schedule(static) if (parallel)
    for (int y = 0; y < h; y++) {
        const uint8_t *row = rgb + (size_t)y * stride;
        for (int k = 0; k < 3; k++) {
            if (!out[k])
                continue;
            float *o = out[k] + (size_t)y * w;
            if (channels == 3)
                stain_row(row, w, 3, (const float(*)[256])table[k], o);
            else
                stain_row(row, w, 4, (const float(*)[256])table[k], o);
        }
    }
    return 0;
}
