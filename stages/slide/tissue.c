#include "stages/slide/tissue.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/colour.h"
#include "ops/components.h"
#include "ops/error.h"
#include "ops/morph.h"
#include "ops/otsu.h"

void gs_tissue_options_default(gs_tissue_options *o)
{
    o->mask_mpp = 4.0;
    o->mask_max_dim = 4096;
    o->tile_size = 512;
    /* Gastric biopsies are fragments a few hundred um wide; a tile is 256 um, so a 50% rule
     * would drop most fragment edges, where the mucosal surface (and early cancer) is. */
    o->min_tissue_fraction = 0.25;
    /* Measured on the labelled patches: glass sits below 0.01, the faintest stroma near 0.02;
     * Otsu alone splits an all-tissue image inside the tissue, hence the band. */
    o->density_floor = 0.015f;
    o->density_ceiling = 0.025f;
    o->min_component_um2 = 50.0 * 50.0;
    o->max_hole_um2 = 100.0 * 100.0;
    o->net_input_size = 512;
    /* 100 Gpx: 2.5 times a 200000 x 200000 px scan (a whole 50 x 50 mm section at 0.25 um/px);
     * what lies beyond is a declared size, not a scan, and its tile grid alone would not fit. */
    o->max_level0_pixels = 100000000000LL;
    /* 1 Gpx: the thumbnail is read whole from the smallest level not smaller than it, which for
     * any scanner's pyramid is under 100 Mpx (a 200000 x 100000 px Aperio slide: 12500 x 6250
     * at level 2); a slide with no small level (a flat TIFF export) is read whole, at about
     * 20-50 Mpx/s, so 1 Gpx keeps a plan under a minute and its intermediate under 400 MB. */
    o->max_thumbnail_source_pixels = 1000000000LL;
}

const char *gs_tissue_status_name(gs_tissue_status st)
{
    switch (st) {
    case GS_TISSUE_OK:
        return "ok";
    case GS_TISSUE_NO_TISSUE:
        return "no-tissue";
    case GS_TISSUE_NOT_BRIGHTFIELD:
        return "not-brightfield";
    }
    return "unknown";
}

/* Brightfield slides are mostly bright glass; a fluorescence scan is mostly black (median grey
 * 5 on the DAPI slide). A view filled edge to edge with dense lymphocytes (a Kather patch)
 * still has median grey 43, so only a near-black image counts as not brightfield. */
enum { BRIGHTFIELD_MIN_MEDIAN_GREY = 25 };

/* Thresholds of the ink classifier (skimage HSV and rgb2hed units, grey levels), measured on
 * the labelled pen, tissue and Kather patches. Colour alone cannot tell ink from tissue: deeply
 * stained eosin is as red and saturated as red marker, and nuclei as dark as black marker. What
 * differs is texture: marker sits on the glass, out of the focal plane, and is smooth, while
 * stained tissue is textured at every scale we look at. So a pixel is ink when its colour is an
 * ink colour (green/blue hues H&E never has, saturated red, very dark, or on the DAB axis H&E
 * never reaches) AND its neighbourhood is smooth, and only solid regions of such pixels count. */
#define INK_DARK_GREY 70
#define INK_HUE_LO 0.10f /* green and blue marker hues; haematoxylin starts near 0.66 */
#define INK_HUE_HI 0.62f
#define INK_HUE_SAT 0.15f
#define INK_RED_SAT 0.5f
#define INK_DAB 0.08f
#define INK_SMOOTH_STD 5.0f /* grey-level std over 7x7: ink ~2, tissue >= 7 at p50 */
enum { INK_STD_RADIUS = 3, INK_OPEN_RADIUS = 2, INK_HALO_PX = 3 };
/* The blurred edge of a marker stroke has tissue colours. A component is such a halo when most
 * of it lies next to ink, or when it touches ink and is as smooth as ink. */
#define HALO_NEAR_FRACTION 0.5
#define HALO_SMOOTH_STD (1.5f * INK_SMOOTH_STD)

static int ink_colour(const uint8_t *px, float dab)
{
    int r = px[0], g = px[1], b = px[2];
    int mx = r > g ? (r > b ? r : b) : (g > b ? g : b);
    int mn = r < g ? (r < b ? r : b) : (g < b ? g : b);
    if ((r + g + b) < 3 * INK_DARK_GREY || dab > INK_DAB)
        return 1;
    if (mx == 0 || mx == mn)
        return 0;
    float delta = (float)(mx - mn);
    float sat = delta / (float)mx;
    float hue;
    if (mx == r)
        hue = (float)(g - b) / delta;
    else if (mx == g)
        hue = 2.0f + (float)(b - r) / delta;
    else
        hue = 4.0f + (float)(r - g) / delta;
    hue /= 6.0f;
    if (hue < 0.0f)
        hue += 1.0f;
    if (sat > INK_RED_SAT && (hue > 0.95f || hue < 0.05f))
        return 1;
    return sat > INK_HUE_SAT && hue >= INK_HUE_LO && hue < INK_HUE_HI;
}

static double median_grey(const uint8_t *rgb, size_t n)
{
    size_t hist[256] = {0};
    for (size_t i = 0; i < n; i++)
        hist[(rgb[3 * i] + rgb[3 * i + 1] + rgb[3 * i + 2]) / 3]++;
    size_t acc = 0;
    for (int v = 0; v < 256; v++) {
        acc += hist[v];
        if (2 * acc >= n)
            return v;
    }
    return 255;
}

/* Standard deviation of the grey level over the (2r+1)^2 window around each pixel (the part of
 * it inside the image), from integral images of grey and grey^2. */
static int local_std(const uint8_t *rgb, int w, int h, int r, float *out)
{
    size_t s = (size_t)w + 1;
    double *sum = calloc(s * (size_t)(h + 1), sizeof *sum);
    double *sq = calloc(s * (size_t)(h + 1), sizeof *sq);
    if (!sum || !sq) {
        free(sum);
        free(sq);
        return gs_error_set("out of memory for a %dx%d texture map", w, h);
    }
    for (int y = 0; y < h; y++) {
        double row = 0, row2 = 0;
        for (int x = 0; x < w; x++) {
            const uint8_t *px = rgb + 3 * ((size_t)y * w + x);
            double g = (px[0] + px[1] + px[2]) / 3.0;
            row += g;
            row2 += g * g;
            sum[(y + 1) * s + x + 1] = sum[y * s + x + 1] + row;
            sq[(y + 1) * s + x + 1] = sq[y * s + x + 1] + row2;
        }
    }
    for (int y = 0; y < h; y++) {
        int y0 = y - r < 0 ? 0 : y - r, y1 = y + r + 1 > h ? h : y + r + 1;
        for (int x = 0; x < w; x++) {
            int x0 = x - r < 0 ? 0 : x - r, x1 = x + r + 1 > w ? w : x + r + 1;
            double n = (double)(y1 - y0) * (x1 - x0);
            double m =
                (sum[y1 * s + x1] - sum[y0 * s + x1] - sum[y1 * s + x0] + sum[y0 * s + x0]) / n;
            double m2 = (sq[y1 * s + x1] - sq[y0 * s + x1] - sq[y1 * s + x0] + sq[y0 * s + x0]) / n;
            double v = m2 - m * m;
            out[(size_t)y * w + x] = (float)sqrt(v > 0 ? v : 0);
        }
    }
    free(sum);
    free(sq);
    return 0;
}

/* Drops every component of mask that is the halo of an ink stroke (see HALO_*). */
static int drop_ink_halos(uint8_t *mask, const uint8_t *ink, const float *texture, int w, int h)
{
    int rc = -1;
    size_t n = (size_t)w * h;
    uint8_t *near = malloc(n);
    int32_t *labels = malloc(n * sizeof *labels);
    int64_t *near_area = NULL, *area = NULL;
    double *tex = NULL;
    if (!near || !labels) {
        gs_error_set("out of memory for the ink halo check (%dx%d)", w, h);
        goto free_buffers;
    }
    memcpy(near, ink, n);
    if (gs_morph_dilate(near, w, h, INK_HALO_PX) < 0)
        goto free_buffers;
    int count = gs_components_label(mask, w, h, labels, &area);
    if (count < 0)
        goto free_buffers;
    near_area = calloc((size_t)count + 1, sizeof *near_area);
    tex = calloc((size_t)count + 1, sizeof *tex);
    if (!near_area || !tex) {
        gs_error_set("out of memory for the ink halo check");
        goto free_counts;
    }
    for (size_t i = 0; i < n; i++) {
        if (!labels[i])
            continue;
        near_area[labels[i]] += near[i] != 0;
        tex[labels[i]] += texture[i];
    }
    for (size_t i = 0; i < n; i++) {
        int32_t l = labels[i];
        if (!l || !near_area[l])
            continue;
        if (near_area[l] > HALO_NEAR_FRACTION * (double)area[l] ||
            tex[l] < HALO_SMOOTH_STD * (double)area[l])
            mask[i] = 0;
    }
    rc = 0;
free_counts:
    free(near_area);
    free(tex);
    free(area);
free_buffers:
    free(near);
    free(labels);
    return rc;
}

int gs_tissue_mask(const uint8_t *rgb, int w, int h, double mpp, const gs_tissue_options *o,
                   uint8_t *mask, gs_tissue_stats *stats)
{
    if (w <= 0 || h <= 0 || !(mpp > 0))
        return gs_error_set("tissue mask: bad image size %dx%d or pixel size %g um", w, h, mpp);
    int rc = -1;
    size_t n = (size_t)w * h;
    gs_tissue_stats st = {0};
    float *hema = malloc(n * sizeof *hema);
    float *eosin = malloc(n * sizeof *eosin);
    float *dab = malloc(n * sizeof *dab);
    uint8_t *ink = malloc(n);
    if (!hema || !eosin || !dab || !ink) {
        gs_error_set("tissue mask: out of memory for a %dx%d image", w, h);
        goto free_planes;
    }
    memset(mask, 0, n);
    st.median_grey = median_grey(rgb, n);
    st.brightfield = st.median_grey >= BRIGHTFIELD_MIN_MEDIAN_GREY;
    if (!st.brightfield) {
        rc = 0;
        goto done;
    }
    if (gs_rgb_to_hed(rgb, w, h, (size_t)w * 3, 3, hema, eosin, dab) < 0)
        goto free_planes;
    for (size_t i = 0; i < n; i++)
        hema[i] += eosin[i];
    /* An image of one flat colour has no Otsu threshold: then the floor decides. */
    if (gs_otsu_f32(hema, NULL, n, 256, &st.otsu) < 0)
        st.otsu = o->density_floor;
    st.threshold = st.otsu < o->density_floor     ? o->density_floor
                   : st.otsu > o->density_ceiling ? o->density_ceiling
                                                  : st.otsu;
    /* eosin is free now: it holds the texture map. */
    float *texture = eosin;
    if (local_std(rgb, w, h, INK_STD_RADIUS, texture) < 0)
        goto free_planes;
    for (size_t i = 0; i < n; i++)
        ink[i] = ink_colour(rgb + 3 * i, dab[i]) && texture[i] < INK_SMOOTH_STD;
    if (gs_morph_open(ink, w, h, INK_OPEN_RADIUS) < 0)
        goto free_planes;
    size_t ink_count = 0;
    for (size_t i = 0; i < n; i++) {
        ink_count += ink[i] != 0;
        mask[i] = hema[i] > st.threshold && !ink[i];
    }
    st.ink_fraction = (double)ink_count / (double)n;
    if (gs_morph_open(mask, w, h, 1) < 0 || gs_morph_close(mask, w, h, 2) < 0)
        goto free_planes;
    if (ink_count && drop_ink_halos(mask, ink, texture, w, h) < 0)
        goto free_planes;
    double px_um2 = mpp * mpp;
    if (gs_fill_small_holes(mask, w, h, (int64_t)(o->max_hole_um2 / px_um2)) < 0 ||
        gs_remove_small_components(mask, w, h, (int64_t)ceil(o->min_component_um2 / px_um2)) < 0)
        goto free_planes;
done:;
    size_t tissue = 0;
    for (size_t i = 0; i < n; i++)
        tissue += mask[i] != 0;
    st.tissue_fraction = (double)tissue / (double)n;
    if (stats)
        *stats = st;
    rc = 0;
free_planes:
    free(hema);
    free(eosin);
    free(dab);
    free(ink);
    return rc;
}

struct gs_plan {
    gs_tissue_status status;
    gs_tissue_stats stats;
    uint8_t *thumb;
    uint8_t *mask;
    int tw, th;
    int64_t target_w, target_h;
    double target_mpp;
    int tile_size;
    float min_fraction;
    int32_t cols, rows;
    gs_tile *tiles;
    size_t ntiles;
};

/* Sum of mask over [x0,x1) x [y0,y1) from the (w+1)-wide integral image. */
static int64_t box_sum(const int64_t *ii, int w, int x0, int y0, int x1, int y1)
{
    size_t s = (size_t)w + 1;
    return ii[(size_t)y1 * s + x1] - ii[(size_t)y0 * s + x1] - ii[(size_t)y1 * s + x0] +
           ii[(size_t)y0 * s + x0];
}

static int clampi(double v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : (int)v;
}

/* Plans the windows from mask (tw x th, any size: it covers the whole slide, scaled per
 * axis). */
static int plan_tiles(gs_plan *p, const uint8_t *mask, int tw, int th, int64_t w0, int64_t h0,
                      double level0_per_target)
{
    int64_t *ii = calloc((size_t)(tw + 1) * (th + 1), sizeof *ii);
    p->tiles = malloc((size_t)p->cols * p->rows * sizeof *p->tiles);
    if (!ii || !p->tiles) {
        free(ii);
        return gs_error_set("out of memory for a %dx%d tile grid", p->cols, p->rows);
    }
    for (int y = 0; y < th; y++) {
        int64_t row = 0;
        for (int x = 0; x < tw; x++) {
            row += mask[(size_t)y * tw + x] != 0;
            ii[(size_t)(y + 1) * (tw + 1) + x + 1] = ii[(size_t)y * (tw + 1) + x + 1] + row;
        }
    }
    double mx = (double)tw / (double)w0, my = (double)th / (double)h0;
    for (int32_t r = 0; r < p->rows; r++) {
        for (int32_t c = 0; c < p->cols; c++) {
            gs_tile t;
            t.col = c;
            t.row = r;
            t.tx = (int64_t)c * p->tile_size;
            t.ty = (int64_t)r * p->tile_size;
            t.x0 = llround((double)t.tx * level0_per_target);
            t.y0 = llround((double)t.ty * level0_per_target);
            t.w0 = llround((double)p->tile_size * level0_per_target);
            t.h0 = t.w0;
            /* Footprint on the mask; what lies beyond the slide counts as background. */
            double fx0 = t.x0 * mx, fx1 = (t.x0 + t.w0) * mx;
            double fy0 = t.y0 * my, fy1 = (t.y0 + t.h0) * my;
            int x0 = clampi(floor(fx0), 0, tw), x1 = clampi(ceil(fx1), 0, tw);
            int y0 = clampi(floor(fy0), 0, th), y1 = clampi(ceil(fy1), 0, th);
            double area = (double)(ceil(fx1) - floor(fx0)) * (double)(ceil(fy1) - floor(fy0));
            double frac = area > 0 ? (double)box_sum(ii, tw, x0, y0, x1, y1) / area : 0.0;
            t.tissue = (float)(frac > 1.0 ? 1.0 : frac);
            if (t.tissue > 0 && t.tissue >= p->min_fraction)
                p->tiles[p->ntiles++] = t;
        }
    }
    free(ii);
    return 0;
}

int gs_plan_read_thumbnail(gs_slide *slide, const gs_tissue_options *o, uint8_t **rgb, int *w,
                           int *h)
{
    int64_t w0, h0;
    gs_slide_level_size(slide, 0, &w0, &h0);
    *rgb = NULL;
    if (o->max_level0_pixels > 0 && (double)w0 * (double)h0 > (double)o->max_level0_pixels)
        return gs_error_set("%s: too large to plan: %" PRId64 " x %" PRId64 " pixels at level 0 "
                            "(%.0f Gpx; the limit is %.0f Gpx)",
                            gs_slide_path(slide), w0, h0, (double)w0 * (double)h0 / 1e9,
                            (double)o->max_level0_pixels / 1e9);
    int64_t longest = w0 > h0 ? w0 : h0;
    double want = ceil((double)longest * gs_slide_mpp(slide) / o->mask_mpp);
    int max_dim = (int)(want < 1 ? 1 : want > o->mask_max_dim ? o->mask_max_dim : want);
    if (max_dim > longest)
        max_dim = (int)longest;
    return gs_slide_thumbnail_capped(slide, max_dim, o->max_thumbnail_source_pixels, rgb, w, h);
}

/* Most tiles a plan's grid may have: 16.8 million, 4.4 Tpx at 512 px, hundreds of times a
 * large whole-slide scan. A bigger grid means a wrong resolution (a default mpp or a target far
 * off), and would cost gigabytes of tile slots before a single tile is read. */
#define PLAN_GRID_TILES_MAX ((int64_t)1 << 24)

/* The grid of the plan at the job's tile size and target resolution. Returns 0, or -1 with
 * the error set when the grid is over PLAN_GRID_TILES_MAX. */
static int plan_grid(gs_plan *p, gs_slide *slide, const gs_tissue_options *o)
{
    p->tile_size = o->tile_size;
    p->min_fraction = (float)o->min_tissue_fraction;
    p->target_mpp = gs_slide_target_mpp(slide);
    gs_slide_target_size(slide, &p->target_w, &p->target_h);
    int64_t cols = (p->target_w + o->tile_size - 1) / o->tile_size;
    int64_t rows = (p->target_h + o->tile_size - 1) / o->tile_size;
    if (cols > PLAN_GRID_TILES_MAX || rows > PLAN_GRID_TILES_MAX ||
        cols * rows > PLAN_GRID_TILES_MAX)
        return gs_error_set("%s: at %g um/px the slide is %" PRId64 " x %" PRId64
                            " tiles of %d px, over the %" PRId64
                            "-tile limit; is its resolution (%g um/px, %s) right?",
                            gs_slide_path(slide), p->target_mpp, cols, rows, o->tile_size,
                            PLAN_GRID_TILES_MAX, gs_slide_mpp(slide), gs_slide_mpp_source(slide));
    p->cols = (int32_t)cols;
    p->rows = (int32_t)rows;
    return 0;
}

gs_plan *gs_plan_new(gs_slide *slide, const gs_tissue_options *o)
{
    gs_plan *p = calloc(1, sizeof *p);
    if (!p) {
        gs_error_set("out of memory for a tile plan");
        return NULL;
    }
    int64_t w0, h0;
    gs_slide_level_size(slide, 0, &w0, &h0);
    double mpp0 = gs_slide_mpp(slide);
    if (gs_plan_read_thumbnail(slide, o, &p->thumb, &p->tw, &p->th) < 0)
        goto fail;
    p->mask = malloc((size_t)p->tw * p->th);
    if (!p->mask) {
        gs_error_set("%s: out of memory for a %dx%d mask", gs_slide_path(slide), p->tw, p->th);
        goto fail;
    }
    double mask_mpp = mpp0 * (double)w0 / (double)p->tw;
    if (gs_tissue_mask(p->thumb, p->tw, p->th, mask_mpp, o, p->mask, &p->stats) < 0) {
        gs_error_prefix("%s", gs_slide_path(slide));
        goto fail;
    }
    if (plan_grid(p, slide, o) < 0)
        goto fail;
    if (!p->stats.brightfield) {
        p->status = GS_TISSUE_NOT_BRIGHTFIELD;
        return p;
    }
    if (plan_tiles(p, p->mask, p->tw, p->th, w0, h0, p->target_mpp / mpp0) < 0) {
        gs_error_prefix("%s", gs_slide_path(slide));
        goto fail;
    }
    p->status = p->ntiles ? GS_TISSUE_OK : GS_TISSUE_NO_TISSUE;
    return p;
fail:
    gs_plan_destroy(&p);
    return NULL;
}

gs_plan *gs_plan_from_mask(gs_slide *slide, const gs_tissue_options *o, uint8_t **thumb, int tw,
                           int th, const uint8_t *mask, int mw, int mh)
{
    GS_ASSERT(thumb && *thumb && mask);
    gs_plan *p = calloc(1, sizeof *p);
    if (!p || tw < 1 || th < 1 || mw < 1 || mh < 1) {
        if (p)
            gs_error_set("%s: plan from a %dx%d mask on a %dx%d thumbnail: bad size",
                         gs_slide_path(slide), mw, mh, tw, th);
        else
            gs_error_set("out of memory for a tile plan");
        free(*thumb);
        *thumb = NULL;
        free(p);
        return NULL;
    }
    p->thumb = *thumb;
    *thumb = NULL;
    p->tw = tw;
    p->th = th;
    int64_t w0, h0;
    gs_slide_level_size(slide, 0, &w0, &h0);
    size_t n = (size_t)tw * th, nm = (size_t)mw * mh;
    /* The same refusal as the classical mask: whatever found the tissue, a dark background
     * is a fluorescence scan or a failed one, not a slide to screen. */
    p->stats.median_grey = median_grey(p->thumb, n);
    p->stats.brightfield = p->stats.median_grey >= BRIGHTFIELD_MIN_MEDIAN_GREY;
    /* The overlay draws the mask on the thumbnail, so the plan keeps it at the thumbnail's
     * size (nearest mask pixel per axis); the windows are measured on the caller's mask. */
    p->mask = calloc(n, 1);
    if (!p->mask) {
        gs_error_set("%s: out of memory for a %dx%d mask", gs_slide_path(slide), tw, th);
        goto fail;
    }
    size_t tissue = 0;
    for (size_t i = 0; i < nm; i++)
        tissue += mask[i] != 0;
    p->stats.tissue_fraction = (double)tissue / (double)nm;
    if (plan_grid(p, slide, o) < 0)
        goto fail;
    if (!p->stats.brightfield) {
        p->stats.tissue_fraction = 0;
        p->status = GS_TISSUE_NOT_BRIGHTFIELD;
        return p;
    }
    for (int y = 0; y < th; y++) {
        int my = (int)((2 * (int64_t)y + 1) * mh / (2 * (int64_t)th));
        for (int x = 0; x < tw; x++) {
            int mx = (int)((2 * (int64_t)x + 1) * mw / (2 * (int64_t)tw));
            p->mask[(size_t)y * tw + x] = mask[(size_t)my * mw + mx] != 0;
        }
    }
    if (plan_tiles(p, mask, mw, mh, w0, h0, p->target_mpp / gs_slide_mpp(slide)) < 0) {
        gs_error_prefix("%s", gs_slide_path(slide));
        goto fail;
    }
    p->status = p->ntiles ? GS_TISSUE_OK : GS_TISSUE_NO_TISSUE;
    return p;
fail:
    gs_plan_destroy(&p);
    return NULL;
}

void gs_plan_destroy(gs_plan **pp)
{
    if (!pp || !*pp)
        return;
    gs_plan *p = *pp;
    free(p->thumb);
    free(p->mask);
    free(p->tiles);
    free(p);
    *pp = NULL;
}

gs_tissue_status gs_plan_status(const gs_plan *p)
{
    return p->status;
}

const gs_tissue_stats *gs_plan_stats(const gs_plan *p)
{
    return &p->stats;
}

void gs_plan_grid(const gs_plan *p, int32_t *cols, int32_t *rows)
{
    *cols = p->cols;
    *rows = p->rows;
}

void gs_plan_target_size(const gs_plan *p, int64_t *w, int64_t *h, int *tile_size)
{
    *w = p->target_w;
    *h = p->target_h;
    *tile_size = p->tile_size;
}

double gs_plan_target_mpp(const gs_plan *p)
{
    return p->target_mpp;
}

size_t gs_plan_tile_count(const gs_plan *p)
{
    return p->ntiles;
}

const gs_tile *gs_plan_tile(const gs_plan *p, size_t i)
{
    GS_ASSERT(i < p->ntiles);
    return &p->tiles[i];
}

const uint8_t *gs_plan_thumbnail(const gs_plan *p, int *w, int *h)
{
    *w = p->tw;
    *h = p->th;
    return p->thumb;
}

const uint8_t *gs_plan_mask(const gs_plan *p, int *w, int *h)
{
    *w = p->tw;
    *h = p->th;
    return p->mask;
}

static void put(uint8_t *img, int w, int h, int x, int y, const uint8_t c[3])
{
    if (x < 0 || y < 0 || x >= w || y >= h)
        return;
    memcpy(img + 3 * ((size_t)y * w + x), c, 3);
}

uint8_t *gs_plan_overlay(const gs_plan *p)
{
    size_t n = (size_t)p->tw * p->th;
    uint8_t *img = malloc(3 * n);
    if (!img) {
        gs_error_set("out of memory for a %dx%d overlay", p->tw, p->th);
        return NULL;
    }
    memcpy(img, p->thumb, 3 * n);
    /* Tissue tinted green so the pathologist sees what the mask took. */
    for (size_t i = 0; i < n; i++) {
        if (!p->mask[i])
            continue;
        img[3 * i] = (uint8_t)(img[3 * i] / 2);
        img[3 * i + 1] = (uint8_t)(img[3 * i + 1] / 2 + 110);
        img[3 * i + 2] = (uint8_t)(img[3 * i + 2] / 2);
    }
    static const uint8_t blue[3] = {20, 60, 230};
    double sx = (double)p->tw / (double)p->target_w;
    double sy = (double)p->th / (double)p->target_h;
    for (size_t i = 0; i < p->ntiles; i++) {
        const gs_tile *t = &p->tiles[i];
        int x0 = (int)floor((double)t->tx * sx),
            x1 = (int)floor((double)(t->tx + p->tile_size) * sx);
        int y0 = (int)floor((double)t->ty * sy),
            y1 = (int)floor((double)(t->ty + p->tile_size) * sy);
        for (int x = x0; x <= x1; x++) {
            put(img, p->tw, p->th, x, y0, blue);
            put(img, p->tw, p->th, x, y1, blue);
        }
        for (int y = y0; y <= y1; y++) {
            put(img, p->tw, p->th, x0, y, blue);
            put(img, p->tw, p->th, x1, y, blue);
        }
    }
    return img;
}
