/*
 * components: connected components of a binary mask, and mask clean-up built on them.
 *
 * The tissue mask is cleaned by dropping small islands (debris, dust) and filling small holes
 * (lumens and cracks inside a biopsy) before tiles are planned. Foreground components are
 * 8-connected (diagonal neighbours join); holes are the 4-connected background components that
 * do not touch the image border, which is the topologically consistent partner of 8-connected
 * foreground (a diagonal gap in a ring does not let the inside leak out). Masks are uint8,
 * w*h, rows contiguous, nonzero = foreground.
 *
 * Labels are numbered 1..n in raster order of each component's first pixel, so the fast
 * labeller (two passes with union-find) and the reference (flood fill with an explicit stack)
 * produce identical label images. No state, no I/O.
 */
#ifndef GS_OPS_COMPONENTS_H
#define GS_OPS_COMPONENTS_H

#include <stdint.h>

/* Labels the 8-connected components of mask into labels (int32, w*h, caller-owned): 0 for
 * background, 1..n for components. If areas is non-NULL, *areas is set to a malloc'd array of
 * n+1 pixel counts (areas[0] counts the background, areas[i] component i) that the caller
 * frees. Returns n >= 0, or -1 with the message set (NULL buffers, non-positive sizes, more
 * than INT32_MAX pixels, out of memory; *areas is then NULL). */
int gs_components_label(const uint8_t *mask, int w, int h, int32_t *labels, int64_t **areas);
int gs_components_label_ref(const uint8_t *mask, int w, int h, int32_t *labels, int64_t **areas);

/* Clears, in place, the 8-connected components with fewer than min_area pixels and rewrites
 * the mask as 0/1. Returns the number of components kept, or -1 with the message set (the mask
 * is then unchanged). */
int gs_remove_small_components(uint8_t *mask, int w, int h, int64_t min_area);

/* Fills, in place, the holes (4-connected background components not touching the border) with
 * fewer than max_hole pixels and rewrites the mask as 0/1. Returns the number of holes filled,
 * or -1 with the message set (the mask is then unchanged). */
int gs_fill_small_holes(uint8_t *mask, int w, int h, int64_t max_hole);

#endif
