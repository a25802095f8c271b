/*
 * box_resize: the resize that makes the foreground network's input, bit for bit what PIL's
 * Image.resize((w, h), Image.BOX) makes of the same RGB image.
 *
 * The foreground network is trained on slide thumbnails resized to 512x512 with PIL's BOX
 * filter, so the C side must feed it the same bytes, not merely a similar box average. PIL
 * resizes in two passes, rows then columns, each rounded to uint8, with 22-bit fixed-point
 * weights. Its BOX weight is all-or-nothing per source pixel: a source pixel counts (weight
 * 1, then normalised) when its centre falls inside the destination pixel's footprint
 * (centre - scale/2, centre + scale/2], widened to one source pixel when enlarging. For an
 * integer shrink factor that is exactly the coverage-weighted mean of the footprint; for
 * other ratios it is not (5 -> 2 px of [0 100 200 40 80] gives [100 60], the coverage mean
 * would be [80 88]), and when enlarging it repeats pixels (nearest neighbour) rather than
 * blending them. ops/resample's gs_resize_area_u8 is the coverage mean; it is not this.
 *
 *     uint8_t in[512 * 512 * 3];
 *     gs_box_resize_u8(thumb, tw, th, 3, in, 512, 512);
 */
#ifndef GS_STAGES_SLIDE_BOX_RESIZE_H
#define GS_STAGES_SLIDE_BOX_RESIZE_H

#include <stdint.h>

/* Resizes the interleaved image src (sw x sh, `channels` bytes per pixel, rows packed) to
 * dst (dw x dh, same channels, caller-owned, must not overlap src), any size up or down.
 * Returns 0, or -1 with the error set for a size < 1, channels outside 1..4, or out of
 * memory. */
int gs_box_resize_u8(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw,
                     int dh);

#endif
