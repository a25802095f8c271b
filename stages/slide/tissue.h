/*
 * tissue: the tissue mask of a slide and the plan of tiles to analyse.
 *
 * The classical foreground method of DESIGN.md §2 (the one that made the paper's training
 * labels): a low-resolution view of the whole slide is split into stains by colour
 * deconvolution (Ruifrok & Johnston H&E-DAB), the haematoxylin + eosin density is thresholded
 * with Otsu's method (clamped to a sane band so an all-tissue or all-glass image is not split
 * in two), marker ink is removed (pen ink is strongly saturated, off the H&E hues, very dark,
 * or projects onto the DAB axis; ink halos are dropped with the component they touch), and the
 * mask is cleaned by opening, closing, hole filling and small-component removal.
 *
 * The plan is the grid of tile_size x tile_size tiles at the target resolution (0.5 um/px by
 * default) whose footprint on the mask is at least min_tissue_fraction tissue. A slide that is
 * not brightfield (a fluorescence scan: dark background) gets status NOT_BRIGHTFIELD and no
 * tiles, instead of a nonsense plan.
 *
 * Use: gs_tissue_options_default(&o); p = gs_plan_new(slide, &o); read the tiles with
 * gs_plan_tile(p, i); gs_plan_destroy(&p). gs_tissue_mask() works on any RGB image and is what
 * the tests call on labelled patches.
 *
 * Another foreground method (the bundle's network) reads the same thumbnail with
 * gs_plan_read_thumbnail(), finds the tissue its own way and hands its mask, of any size, to
 * gs_plan_from_mask(): the grid, the window fractions, the brightfield refusal and the overlay
 * are then the classical plan's.
 */
#ifndef GS_STAGES_SLIDE_TISSUE_H
#define GS_STAGES_SLIDE_TISSUE_H

#include <stddef.h>
#include <stdint.h>

#include "stages/slide/reader.h"

typedef struct {
    double mask_mpp;            /* resolution of the tissue mask, um/px */
    int mask_max_dim;           /* cap on the mask's longer side, px */
    int tile_size;              /* tile side at the target resolution, px */
    double min_tissue_fraction; /* a tile is planned if this much of it is tissue */
    float density_floor;        /* Otsu threshold on H+E density is clamped into */
    float density_ceiling;      /*   [floor, ceiling] (skimage rgb2hed units) */
    double min_component_um2;   /* tissue specks smaller than this are dropped */
    double max_hole_um2;        /* holes smaller than this are filled */
    int net_input_size;         /* side of the foreground network's square input, px
                                   (PlanJob.thumbnail_size); the classical mask ignores it */
    /* Work caps of a plan (0 = none): a slide declaring more level-0 pixels, or whose
     * thumbnail would be read from a level of more pixels, is refused before any read. */
    int64_t max_level0_pixels;
    int64_t max_thumbnail_source_pixels;
} gs_tissue_options;

/* Fills *o with the defaults: 4 um/px mask, at most 4096 px, 512 px tiles, 25% tissue, a
 * 512 px network input; at most 100 Gpx at level 0 and 1 Gpx read for the thumbnail. */
void gs_tissue_options_default(gs_tissue_options *o);

typedef enum {
    GS_TISSUE_OK = 0,              /* a plan with at least one tile */
    GS_TISSUE_NO_TISSUE = 1,       /* brightfield, but no tile reaches the tissue fraction */
    GS_TISSUE_NOT_BRIGHTFIELD = 2, /* dark background: fluorescence or a failed scan */
} gs_tissue_status;

/* Returns "ok", "no-tissue" or "not-brightfield". */
const char *gs_tissue_status_name(gs_tissue_status st);

typedef struct {
    float otsu;             /* Otsu threshold of the H+E density before clamping */
    float threshold;        /* threshold used */
    double median_grey;     /* median of (R+G+B)/3 over the image */
    double ink_fraction;    /* pixels classified as marker ink */
    double tissue_fraction; /* pixels in the final mask */
    int brightfield;        /* 0 if the image looks like a fluorescence scan */
} gs_tissue_stats;

/* Computes the tissue mask of an interleaved RGB image (w x h, rows of w*3 bytes) whose pixels
 * are mpp um wide (used to size the cleanup). mask (w*h bytes, caller-owned) gets 1 for
 * tissue, 0 otherwise; stats may be NULL. A non-brightfield image gets an all-zero mask and
 * stats->brightfield = 0. Returns 0, or -1 on bad arguments or allocation failure. */
int gs_tissue_mask(const uint8_t *rgb, int w, int h, double mpp, const gs_tissue_options *o,
                   uint8_t *mask, gs_tissue_stats *stats);

typedef struct {
    int32_t col, row; /* grid position */
    int64_t tx, ty;   /* top-left at the target resolution, px */
    int64_t x0, y0;   /* top-left in level-0 px */
    int64_t w0, h0;   /* footprint in level-0 px */
    float tissue;     /* fraction of the footprint that is tissue */
} gs_tile;

typedef struct gs_plan gs_plan;

/* Reads the slide's thumbnail, computes the mask and the tile grid. Returns a plan owned by
 * the caller (gs_plan_destroy), or NULL with the error (e.g. the slide's read error). */
gs_plan *gs_plan_new(gs_slide *slide, const gs_tissue_options *o);
void gs_plan_destroy(gs_plan **p);

/* Reads the thumbnail gs_plan_new() computes its mask on: the whole slide at o->mask_mpp, its
 * longer side capped at o->mask_max_dim. *rgb is malloc'd (caller frees); returns 0, or -1 with
 * the slide's read error, or "<path>: too large to plan: ..." when the slide exceeds
 * o->max_level0_pixels or o->max_thumbnail_source_pixels (then *rgb is NULL). */
int gs_plan_read_thumbnail(gs_slide *slide, const gs_tissue_options *o, uint8_t **rgb, int *w,
                           int *h);

/* The plan from a mask the caller computed: mask (mw x mh, nonzero = tissue) covers the whole
 * slide, scaled per axis, and each window's tissue fraction is measured on it as gs_plan_new()
 * measures on its own. thumb (tw x th RGB, from gs_plan_read_thumbnail) is taken over (*thumb
 * set to NULL, on failure too): it decides the brightfield check (a dark background gives
 * GS_TISSUE_NOT_BRIGHTFIELD and no tiles) and is what gs_plan_overlay() draws on, with the mask
 * resampled to its size (nearest). The stats have median_grey, brightfield and tissue_fraction
 * (of mask); the classical-only fields are 0. Returns a plan (caller destroys) or NULL with the
 * error. */
gs_plan *gs_plan_from_mask(gs_slide *slide, const gs_tissue_options *o, uint8_t **thumb, int tw,
                           int th, const uint8_t *mask, int mw, int mh);

gs_tissue_status gs_plan_status(const gs_plan *p);
const gs_tissue_stats *gs_plan_stats(const gs_plan *p);
/* Grid of the whole slide at the target resolution (every tile, planned or not). */
void gs_plan_grid(const gs_plan *p, int32_t *cols, int32_t *rows);
/* Target-resolution size of the slide and the tile side. */
void gs_plan_target_size(const gs_plan *p, int64_t *w, int64_t *h, int *tile_size);
double gs_plan_target_mpp(const gs_plan *p);
size_t gs_plan_tile_count(const gs_plan *p);
/* The i-th planned tile, in row-major grid order; owned by the plan. */
const gs_tile *gs_plan_tile(const gs_plan *p, size_t i);
/* The thumbnail (RGB) and the mask (0/1) on it, same size; owned by the plan. */
const uint8_t *gs_plan_thumbnail(const gs_plan *p, int *w, int *h);
const uint8_t *gs_plan_mask(const gs_plan *p, int *w, int *h);

/* Draws the plan over a copy of the thumbnail: tissue tinted, planned tiles outlined.
 * Returns a malloc'd RGB image of the thumbnail's size (caller frees), or NULL. */
uint8_t *gs_plan_overlay(const gs_plan *p);

#endif
